//! The Ledger's rows and the pure rules over them: idempotency keys, reaping lost
//! starts, refunds and settlements, the credit history, funding and rate windows.
//! Tested natively (`tests.rs`).

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use parallax_api::{CreditEntry, Model, Settlement};

use super::protocol::*;

/// The account's one row.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AccountRow {
    pub balance: u64,
    /// For a daily allowance: the UTC day it is for, and when that day's allowance
    /// was granted (refunds of charges from before then are not credited again).
    pub day: Option<String>,
    pub day_started_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChargeRow {
    pub job_id: String,
    pub credits: u64,
    pub refunded: Option<u64>,
    pub created_ms: u64,
    /// Why the job ended ([`Settlement`] as text); `None` until its runner settled it;
    /// [`LEGACY_REASON`] for rows from before reasons were recorded.
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyState {
    Pending,
    Confirmed,
}

impl KeyState {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Confirmed => "confirmed",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRow {
    #[serde(rename = "idem_key")]
    pub key: String,
    /// Empty for keys imported from before fingerprints: they replay any body.
    pub fingerprint: String,
    pub job_id: String,
    pub state: KeyState,
    pub expires_ms: u64,
}

/// What an idempotency key says about a new request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyCheck {
    /// Unknown or expired: go ahead.
    Fresh,
    Replay(String),
    InProgress,
    Reused,
}

///
/// `unsettled`: the key's start still has its `starts` row (neither confirmed nor
/// released, the reaper has not decided it). Such a pending key stays in progress past
/// its expiry: the job may be running, and a retry must not start a second one.
pub fn check_key(
    row: Option<&KeyRow>,
    fingerprint: &str,
    now_ms: u64,
    unsettled: bool,
) -> KeyCheck {
    let Some(row) =
        row.filter(|r| r.expires_ms > now_ms || (unsettled && r.state == KeyState::Pending))
    else {
        return KeyCheck::Fresh;
    };
    if !row.fingerprint.is_empty() && row.fingerprint != fingerprint {
        return KeyCheck::Reused;
    }
    match row.state {
        KeyState::Pending => KeyCheck::InProgress,
        KeyState::Confirmed => KeyCheck::Replay(row.job_id.clone()),
    }
}

/// What the job's runner says of a job whose start was never confirmed nor released.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Started {
    /// It has a record (running, finished, deleted or expired): the job exists.
    Yes,
    /// It has none: never started, or already purged.
    No,
}

/// What the reaper does with a start whose pending key lapsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reap {
    /// The job runs: its Confirm was lost. The key replays it.
    Confirm,
    /// The job never existed: its Release was lost. Refund it and drop the key.
    Release,
    /// It may have existed and been purged already (its own runner settled it): drop
    /// the key, refund nothing.
    Forget,
}

/// The reaper's decision for the start of `charge`. A runner without a record means
/// "never started" only while the job could not have been purged yet: before its
/// retention could have run out, and not deleted by its owner (`listed`).
pub fn reap(
    started: Started,
    charge: Option<&ChargeRow>,
    listed: bool,
    now_ms: u64,
    retention_ms: u64,
) -> Reap {
    match (started, charge) {
        (Started::Yes, _) => Reap::Confirm,
        (Started::No, Some(c)) if listed && now_ms < c.created_ms.saturating_add(retention_ms) => {
            Reap::Release
        }
        (Started::No, _) => Reap::Forget,
    }
}

/// A refund to record: `recorded` goes on the charge, `credited` on the balance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefundPlan {
    pub recorded: u64,
    pub credited: u64,
}

/// The first refund of a charge; `None` once one was recorded. A daily allowance
/// that was renewed since the charge already gave the credits back, so they are
/// recorded but not credited again.
pub fn plan_refund(
    charge: &ChargeRow,
    credits: Option<u64>,
    account: &AccountRow,
) -> Option<RefundPlan> {
    if charge.refunded.is_some() {
        return None;
    }
    let recorded = credits.unwrap_or(charge.credits).min(charge.credits);
    let renewed = account.day.is_some() && charge.created_ms < account.day_started_ms;
    Some(RefundPlan {
        recorded,
        credited: if renewed { 0 } else { recorded },
    })
}

/// The `reason` of charge rows that existed before reasons were recorded: their end
/// is unknown (a job that ended then with no refund never told the Ledger).
pub const LEGACY_REASON: &str = "legacy";

/// A settlement of a charge: the refund it records and what it credits now.
/// `None`: nothing changes (a repeat, or a lower amount than already refunded).
///
/// The first settlement refunds `min(credits, charged)`; a later one only tops the
/// refund up to `min(credits, charged)` when that is more than recorded (the runner's
/// refund only ever grows: "requested" then "confirmed stopped"), so the owner gets
/// each credit back at most once and never more than was charged. A daily allowance
/// renewed since the charge already gave the credits back: recorded, not credited.
pub fn plan_settle(charge: &ChargeRow, credits: u64, account: &AccountRow) -> Option<RefundPlan> {
    let target = credits.min(charge.credits);
    let before = charge.refunded.unwrap_or(0);
    let settled = charge.reason.as_deref().is_some_and(|r| r != LEGACY_REASON);
    if (settled || charge.refunded.is_some()) && target <= before {
        return None;
    }
    let recorded = target.max(before);
    let renewed = account.day.is_some() && charge.created_ms < account.day_started_ms;
    Some(RefundPlan {
        recorded,
        credited: if renewed { 0 } else { recorded - before },
    })
}

/// Where an entry sits in the credit history: newest first by time, then jobs before
/// grants of the same millisecond, then by row. Its text form (`at.rank.row`) is the
/// history's cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct EntryKey {
    pub at_ms: u64,
    /// 1 for a job, 0 for a grant.
    pub rank: u8,
    pub row: u64,
}

impl EntryKey {
    pub fn parse(s: &str) -> Option<Self> {
        let mut parts = s.split('.');
        let key = Self {
            at_ms: parts.next()?.parse().ok()?,
            rank: parts.next()?.parse().ok().filter(|r| *r <= 1)?,
            row: parts.next()?.parse().ok()?,
        };
        parts.next().is_none().then_some(key)
    }
}

impl std::fmt::Display for EntryKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.at_ms, self.rank, self.row)
    }
}

/// A charge row as the credit history reads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryCharge {
    pub seq: u64,
    pub job_id: String,
    pub credits: u64,
    pub refunded: Option<u64>,
    pub created_ms: u64,
    pub listed: u64,
    pub model: Option<String>,
    pub reason: Option<String>,
    pub settled_ms: Option<u64>,
}

/// A grant row as the credit history reads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryGrant {
    pub row: u64,
    pub id: String,
    pub credits: u64,
    pub applied_ms: Option<u64>,
}

/// A job's entry. `open_ms`: how long after its charge a legacy row's job may still
/// be settled (its deadline plus the outbox's patience): until then its pending
/// amount is the whole charge, so an unknown end never under-reports.
pub fn job_entry(c: &HistoryCharge, now_ms: u64, open_ms: u64) -> CreditEntry {
    let refunded = c.refunded.unwrap_or(0).min(c.credits);
    let legacy = c.reason.as_deref() == Some(LEGACY_REASON);
    let reason = c.reason.as_deref().and_then(Settlement::parse);
    let pending = match (&c.reason, legacy) {
        (None, _) => c.credits - refunded,
        (Some(_), true)
            if c.refunded.is_none() && now_ms < c.created_ms.saturating_add(open_ms) =>
        {
            c.credits
        }
        _ => 0,
    };
    CreditEntry::Job {
        request_id: c.job_id.clone(),
        model: c.model.as_deref().and_then(Model::from_slug),
        charged: c.credits,
        refunded,
        pending,
        created_at: c.created_ms / 1000,
        settled_at: c
            .settled_ms
            .filter(|_| reason.is_some())
            .map(|ms| ms / 1000),
        reason,
        // A job that never started is unlisted by its release, not deleted.
        deleted: c.listed == 0 && reason != Some(Settlement::NotStarted),
    }
}

/// One page of the credit history: `charges` (newest first, at most `limit + 1`, all
/// before `cursor`) merged with the account's `grants` (any order), newest first, and
/// the cursor of the next page.
pub fn history_page(
    charges: &[HistoryCharge],
    grants: &[HistoryGrant],
    cursor: Option<EntryKey>,
    limit: usize,
    now_ms: u64,
    open_ms: u64,
) -> (Vec<CreditEntry>, Option<String>) {
    let mut keyed: Vec<(EntryKey, CreditEntry)> = charges
        .iter()
        .map(|c| {
            let key = EntryKey {
                at_ms: c.created_ms,
                rank: 1,
                row: c.seq,
            };
            (key, job_entry(c, now_ms, open_ms))
        })
        .chain(grants.iter().map(|g| {
            let key = EntryKey {
                at_ms: g.applied_ms.unwrap_or(0),
                rank: 0,
                row: g.row,
            };
            let entry = CreditEntry::Grant {
                grant_id: g.id.clone(),
                credits: g.credits,
                created_at: g.applied_ms.map(|ms| ms / 1000),
            };
            (key, entry)
        }))
        .filter(|(key, _)| cursor.is_none_or(|c| *key < c))
        .collect();
    keyed.sort_by_key(|(key, _)| std::cmp::Reverse(*key));
    let more = keyed.len() > limit;
    keyed.truncate(limit);
    let next = if more {
        keyed.last().map(|(key, _)| key.to_string())
    } else {
        None
    };
    (keyed.into_iter().map(|(_, e)| e).collect(), next)
}

/// The UTC calendar day (`YYYY-MM-DD`, as `Date.toISOString` writes it) of `ms`
/// since the Unix epoch: Howard Hinnant's `civil_from_days`
/// (https://howardhinnant.github.io/date_algorithms.html#civil_from_days), ten lines
/// of arithmetic instead of a date library in the Worker for one conversion.
pub fn utc_day(ms: u64) -> String {
    let z = i64::try_from(ms / 86_400_000).unwrap_or(i64::MAX / 2) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// The account after funding: new grants added, or a new day's allowance. The day is
/// the Ledger's (`now_ms` is its own clock), not one a request carries, and it only
/// moves forward: an older day (a clock stepping back) never renews the allowance.
pub fn fund(
    account: &AccountRow,
    funding: &Funding,
    applied: &dyn Fn(&str) -> bool,
    now_ms: u64,
) -> (AccountRow, Vec<Grant>) {
    match funding {
        Funding::Grants { grants } => {
            let mut seen = HashSet::new();
            let new: Vec<Grant> = grants
                .iter()
                .filter(|g| !applied(&g.id) && seen.insert(g.id.clone()))
                .cloned()
                .collect();
            let added: u64 = new.iter().map(|g| g.credits).sum();
            (
                AccountRow {
                    balance: account.balance.saturating_add(added),
                    ..account.clone()
                },
                new,
            )
        }
        Funding::Daily { allowance } => {
            let day = utc_day(now_ms);
            // ISO dates order as strings.
            if account.day.as_deref().is_some_and(|d| d >= day.as_str()) {
                return (account.clone(), Vec::new());
            }
            (
                AccountRow {
                    balance: *allowance,
                    day: Some(day),
                    day_started_ms: now_ms,
                },
                Vec::new(),
            )
        }
    }
}

/// Fixed one-minute windows per bucket. Kept in memory, not in rows: a persisted
/// counter would cost a row write (billed, and awaited by the response) on every
/// read. An object that is being hammered stays in memory; if it is evicted the
/// window restarts, which only ever errs towards letting a request through.
#[derive(Debug, Default)]
pub struct RateWindows {
    windows: HashMap<String, (u64, u32)>,
}

impl RateWindows {
    /// Counts a request; `Err(retry_after_secs)` when over the limit.
    pub fn check(&mut self, limit: &Limit, now_ms: u64) -> Result<(), u64> {
        let minute = now_ms / 60_000;
        let entry = self
            .windows
            .entry(limit.bucket.clone())
            .or_insert((minute, 0));
        if entry.0 != minute {
            *entry = (minute, 0);
        }
        if entry.1 >= limit.per_minute {
            let retry = 60 - (now_ms % 60_000) / 1000;
            return Err(retry.max(1));
        }
        entry.1 += 1;
        Ok(())
    }
}
