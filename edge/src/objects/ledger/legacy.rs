//! Accounts from before rows: one stored value (`"ledger"`), imported into rows once.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};
use worker::SqlStorageValue;

use super::protocol::*;
use super::rules::*;
use super::sql::*;

/// The state accounts had before rows: one stored value (`"ledger"`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LegacyState {
    #[serde(default)]
    pub balance: u64,
    #[serde(default)]
    pub applied_grants: Vec<String>,
    #[serde(default)]
    pub day: Option<String>,
    #[serde(default)]
    pub charges: BTreeMap<String, LegacyCharge>,
    /// idempotency key → (job id, when)
    #[serde(default)]
    pub idempotency: BTreeMap<String, (String, u64)>,
    /// The account's listed jobs, oldest first.
    #[serde(default)]
    pub jobs: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LegacyCharge {
    pub amount: u64,
    pub refunded: bool,
}

/// The key under which pre-rows accounts kept their [`LegacyState`].
pub const LEGACY_KEY: &str = "ledger";

/// A legacy state as rows: (account, applied grant ids, charges oldest first with
/// whether they are listed, idempotency keys).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Import {
    pub account: AccountRow,
    pub grants: Vec<String>,
    pub charges: Vec<(ChargeRow, bool)>,
    pub keys: Vec<KeyRow>,
}

/// Converts a legacy state. Its charges carry no time: they count as made `now_ms`
/// (so they are pruned one retention period after the migration). Listed jobs keep
/// their order; charges no longer listed come first, unlisted.
pub fn import(legacy: LegacyState, now_ms: u64) -> Import {
    let listed: HashSet<&String> = legacy.jobs.iter().collect();
    let charge = |job_id: &str, c: &LegacyCharge| ChargeRow {
        job_id: job_id.to_owned(),
        credits: c.amount,
        refunded: c.refunded.then_some(c.amount),
        created_ms: now_ms,
        reason: Some(LEGACY_REASON.to_owned()),
    };
    let mut charges: Vec<(ChargeRow, bool)> = legacy
        .charges
        .iter()
        .filter(|(id, _)| !listed.contains(id))
        .map(|(id, c)| (charge(id, c), false))
        .collect();
    for id in &legacy.jobs {
        if let Some(c) = legacy.charges.get(id) {
            charges.push((charge(id, c), true));
        }
    }
    let keys = legacy
        .idempotency
        .iter()
        .map(|(key, (job_id, at))| KeyRow {
            key: key.clone(),
            fingerprint: String::new(),
            job_id: job_id.clone(),
            state: KeyState::Confirmed,
            expires_ms: at.saturating_add(IDEMPOTENCY_TTL_MS),
        })
        .filter(|k| k.expires_ms > now_ms)
        .collect();
    Import {
        account: AccountRow {
            balance: legacy.balance,
            day_started_ms: if legacy.day.is_some() { now_ms } else { 0 },
            day: legacy.day,
        },
        grants: legacy.applied_grants,
        charges,
        keys,
    }
}

/// The writes that store an imported legacy state.
pub(super) fn import_writes(import: &Import) -> Vec<Write> {
    let mut w = vec![Write {
        query: SET_ACCOUNT,
        args: vec![
            int(import.account.balance),
            import
                .account
                .day
                .as_deref()
                .map(text)
                .unwrap_or(SqlStorageValue::Null),
            int(import.account.day_started_ms),
        ],
    }];
    for g in &import.grants {
        w.push(Write {
            query: ADD_GRANT,
            args: vec![text(g), int(0), SqlStorageValue::Null],
        });
    }
    for (c, listed) in &import.charges {
        w.push(Write {
            query: ADD_CHARGE,
            args: vec![
                text(&c.job_id),
                int(c.credits),
                c.refunded.map(int).unwrap_or(SqlStorageValue::Null),
                int(c.created_ms),
                int(u64::from(*listed)),
                SqlStorageValue::Null,
                c.reason
                    .as_deref()
                    .map(text)
                    .unwrap_or(SqlStorageValue::Null),
            ],
        });
    }
    for k in &import.keys {
        w.push(put_key(k));
    }
    w
}
