//! `Ledger`: one Durable Object per account (an API key, or an anonymous client's
//! address block). It is the only place balances live (KV is eventually consistent
//! and would allow double spending): it applies credit grants, reserves credits at
//! submit, refunds a job once, binds idempotency keys to their request, lists the
//! account's jobs, and rate-limits. Every job's end is recorded on its charge (a
//! settlement: the refund, possibly 0, and why), so the account's credit history
//! (`GET /v2/credits`, [`Op::History`]) shows where every credit went, deleted jobs
//! included, until the charge row is pruned.
//!
//! Everything is kept as rows in the object's SQLite database (`ctx.storage.sql`), so
//! an operation reads and writes only the rows it needs: a submit costs the same for
//! an account with no past jobs and one with 100 000 (`cargo xtask bench ledger`).
//! Charge rows (which are also the job list) are pruned once their job is past
//! retention, expired idempotency keys as they lapse, a few rows per write. The
//! decisions are pure functions over rows (tested natively below); [`Ledger::fetch`]
//! reads the rows, decides, and applies the writes in one `transactionSync`.
//!
//! A start under an idempotency key is also a `starts` row until its Confirm or Release;
//! the object's alarm reaps those whose pending key lapsed (a lost Confirm or Release)
//! by asking the job's runner whether the job exists (see [`reap`]).
//!
//! Internal protocol: `POST /op` with a [`LedgerRequest`] → [`LedgerReply`].

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};
use worker::{
    DurableObject, Env, Request, Response, SqlStorage, SqlStorageValue, State, durable_object,
};

use parallax_api::{CreditEntry, Model, Settlement};

use crate::config::Config;
use crate::http;

/// A credit grant issued by the operator (stored with the key in KV, applied once).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub id: String,
    pub credits: u64,
}

/// Where an account's credits come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Funding {
    /// An API key: the operator's grants.
    Grants { grants: Vec<Grant> },
    /// An anonymous client: a fresh allowance every UTC day, by the Ledger's own
    /// clock (see [`fund`]).
    Daily { allowance: u64 },
}

/// What to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// Before a submit's body is read: counts the submit against the rate limit and
    /// checks that the account can pay for the cheapest job (`amount`).
    /// A retry under a known `idempotency_key` is not refused for the balance: its job
    /// is already paid for, and the reservation replays it.
    Precheck {
        amount: u64,
        #[serde(default)]
        idempotency_key: Option<String>,
    },
    /// Reserves `amount` credits for a new job. With an idempotency key the key is
    /// stored "pending", bound to the request's `fingerprint`, until [`Op::Confirm`].
    Reserve {
        job_id: String,
        amount: u64,
        idempotency_key: Option<String>,
        #[serde(default)]
        fingerprint: String,
        /// The model asked for, for the credit history.
        #[serde(default)]
        model: Option<Model>,
    },
    /// The job exists (its runner accepted `/start`): the key now replays it.
    Confirm {
        job_id: String,
        idempotency_key: String,
    },
    /// The job could not be started: refund it in full and drop its pending key, in
    /// one step.
    Release {
        job_id: String,
        idempotency_key: Option<String>,
    },
    /// Gives a job's credits back, once per job: the first refund returns
    /// `min(credits.unwrap_or(charged), charged)`, every later one is a no-op.
    Refund {
        job_id: String,
        #[serde(default)]
        credits: Option<u64>,
    },
    /// A job's charge (for `metrics.credits`).
    Charge { job_id: String },
    /// Just count a request and report the balance.
    Touch,
    /// A held read or stream ended: give its lease back (see [`LedgerRequest::hold`]).
    Unhold { id: String },
    /// A page of the account's jobs, newest first, after `cursor` (a job id).
    List {
        cursor: Option<String>,
        limit: usize,
    },
    /// Drop a deleted job from the account's list.
    Forget { job_id: String },
    /// A job's end, sent by its runner once its refund is decided (whatever it is, 0
    /// included) and retried until acknowledged. The first settlement records `reason`
    /// and refunds `min(credits, charged)`; a later one with more credits (a confirmed
    /// upstream stop that arrived after a "requested" answer) tops the refund up to
    /// that, never past the charge; any other is a no-op. See [`plan_settle`].
    Settle {
        job_id: String,
        credits: u64,
        reason: Settlement,
    },
    /// A page of the account's credit history (jobs, deleted ones included, and
    /// grants), newest first, after `cursor` (an [`EntryKey`] as text).
    History {
        cursor: Option<String>,
        limit: usize,
    },
    /// Dev/bench stacks only (`LEDGER_DEV_OPS=on`): adds `jobs` past charges.
    DevSeed { jobs: u64 },
    /// Dev/bench stacks only: replaces the account by a pre-rows (single value)
    /// state, as accounts created before the rows were, to test their migration.
    DevLegacy { state: LegacyState },
    /// Dev/bench stacks only: row counts and the database's size.
    DevStats,
    /// Dev/test stacks only: a [`Op::Reserve`] whose pending key lapses after
    /// `pending_ms` and whose job is never started (a start whose Confirm or Release
    /// was lost), for the reaper's test.
    DevReserve {
        job_id: String,
        amount: u64,
        idempotency_key: String,
        pending_ms: u64,
        /// How old the charge is made (its `created_ms` is now minus this), for the
        /// pruning test.
        #[serde(default)]
        age_ms: u64,
    },
}

/// A request-rate limit: at most `per_minute` in each minute, per bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limit {
    pub bucket: String,
    pub per_minute: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerRequest {
    pub funding: Funding,
    pub op: Op,
    pub limit: Option<Limit>,
    pub now_ms: u64,
    /// A read to be held: a lease on one of the account's held reads
    /// (`crate::holds`), taken only if the request passed its rate limit.
    #[serde(default)]
    pub hold: Option<Hold>,
}

/// A lease asked for by a held read or an event stream's hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    pub id: String,
    /// When the lease lapses if it is not given back (Unix ms).
    pub until_ms: u64,
    /// Most leases the account may hold at once.
    pub max: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    Ok,
    /// The idempotency key was seen with the same request: this is the job it made.
    Replay {
        job_id: String,
    },
    /// The idempotency key belongs to a request with another body.
    KeyReused,
    /// The idempotency key's first request is still starting its job.
    InProgress {
        retry_after_secs: u64,
    },
    Insufficient {
        needed: u64,
    },
    RateLimited {
        retry_after_secs: u64,
    },
}

/// A job's credits as the ledger knows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChargeInfo {
    pub charged: u64,
    /// `None` until the job's refund (possibly of 0 credits) was recorded.
    pub refunded: Option<u64>,
}

/// What a dev stack can see of an account's storage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    pub size_bytes: u64,
    pub charges: u64,
    pub keys: u64,
    /// The pre-rows single value is still stored (it should not be after any op).
    pub legacy_stored: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerReply {
    #[serde(flatten)]
    pub outcome: Outcome,
    pub balance: u64,
    /// For [`Op::List`]: job ids, newest first, and the cursor of the next page.
    #[serde(default)]
    pub jobs: Vec<String>,
    #[serde(default)]
    pub next_cursor: Option<String>,
    /// For [`Op::Charge`].
    #[serde(default)]
    pub charge: Option<ChargeInfo>,
    /// For [`Op::DevStats`].
    #[serde(default)]
    pub stats: Option<Stats>,
    /// For [`Op::History`]: the entries, newest first (`next_cursor` as for List).
    #[serde(default)]
    pub entries: Vec<CreditEntry>,
    /// For a request with a [`LedgerRequest::hold`]: the lease was taken.
    #[serde(default)]
    pub held: bool,
    /// For [`Op::Precheck`] with a live idempotency key: the fingerprint it is bound
    /// to (none for keys from before fingerprints, which replay any body).
    #[serde(default)]
    pub key_fingerprint: Option<String>,
}

/// How long a confirmed idempotency key is remembered.
pub const IDEMPOTENCY_TTL_MS: u64 = 24 * 3600 * 1000;
/// How long a pending key (a job being started) blocks its key. A start takes an R2
/// write and one Durable Object call; if the handler dies before confirming or
/// releasing, the key is free again after this, not after a day.
pub const PENDING_TTL_MS: u64 = 60 * 1000;
/// How long a concurrent duplicate is told to wait.
pub const IN_PROGRESS_RETRY_SECS: u64 = 1;
/// Rows pruned per write at most: the table shrinks faster than one row per job, and
/// no single operation does unbounded work.
pub const PRUNE_BATCH: u64 = 32;
/// Charge rows outlive their job's retention by this much (a late refund still finds
/// its charge; the job record itself is gone by then).
pub const CHARGE_MARGIN_MS: u64 = 3600 * 1000;

// ---------------------------------------------------------------------------
// Rows and the pure rules over them.

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
    fn as_str(self) -> &'static str {
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

// ---------------------------------------------------------------------------
// SQL.

/// One statement and its bindings.
#[derive(Debug, Clone)]
struct Write {
    query: &'static str,
    args: Vec<SqlStorageValue>,
}

fn int(n: u64) -> SqlStorageValue {
    // Credits and milliseconds stay far below 2^53.
    SqlStorageValue::Integer(i64::try_from(n).unwrap_or(i64::MAX))
}

fn text(s: &str) -> SqlStorageValue {
    SqlStorageValue::String(s.to_owned())
}

const SCHEMA: [&str; 8] = [
    "CREATE TABLE IF NOT EXISTS account (
        id INTEGER PRIMARY KEY CHECK (id = 0),
        balance INTEGER NOT NULL,
        day TEXT,
        day_started_ms INTEGER NOT NULL DEFAULT 0)",
    "CREATE TABLE IF NOT EXISTS grants (
        id TEXT PRIMARY KEY,
        credits INTEGER NOT NULL,
        applied_ms INTEGER)",
    // `seq` orders the job list; `listed = 0` once the job was deleted (the row stays
    // so a refund still finds it, a cursor naming it still resolves, and the credit
    // history still shows it). `reason` and `settled_ms`: the job's end, once its
    // runner settled it.
    "CREATE TABLE IF NOT EXISTS charges (
        seq INTEGER PRIMARY KEY,
        job_id TEXT NOT NULL UNIQUE,
        credits INTEGER NOT NULL,
        refunded INTEGER,
        created_ms INTEGER NOT NULL,
        listed INTEGER NOT NULL DEFAULT 1,
        model TEXT,
        reason TEXT,
        settled_ms INTEGER)",
    "CREATE INDEX IF NOT EXISTS charges_by_age ON charges (created_ms)",
    "CREATE TABLE IF NOT EXISTS idempotency (
        idem_key TEXT PRIMARY KEY,
        fingerprint TEXT NOT NULL,
        job_id TEXT NOT NULL,
        state TEXT NOT NULL,
        expires_ms INTEGER NOT NULL)",
    "CREATE INDEX IF NOT EXISTS idempotency_by_expiry ON idempotency (expires_ms)",
    // Starts under an idempotency key not yet confirmed or released: the alarm reaps
    // those whose pending key lapsed (a lost Confirm or Release).
    "CREATE TABLE IF NOT EXISTS starts (
        job_id TEXT PRIMARY KEY,
        idem_key TEXT NOT NULL,
        expires_ms INTEGER NOT NULL)",
    "CREATE INDEX IF NOT EXISTS starts_by_expiry ON starts (expires_ms)",
];

/// Columns added after the first release, for databases created before them: (table,
/// column, its `ALTER TABLE`, what to write into the rows that existed then). Each is
/// applied only when a probe finds the column missing, in one transaction with its
/// back-fill.
const MIGRATIONS: [(&str, &str, &str, Option<&str>); 4] = [
    (
        "grants",
        "applied_ms",
        "ALTER TABLE grants ADD COLUMN applied_ms INTEGER",
        None,
    ),
    (
        "charges",
        "model",
        "ALTER TABLE charges ADD COLUMN model TEXT",
        None,
    ),
    (
        "charges",
        "reason",
        "ALTER TABLE charges ADD COLUMN reason TEXT",
        // Their jobs' ends were never recorded (see `job_entry`).
        Some("UPDATE charges SET reason = 'legacy'"),
    ),
    (
        "charges",
        "settled_ms",
        "ALTER TABLE charges ADD COLUMN settled_ms INTEGER",
        None,
    ),
];

const SET_ACCOUNT: &str =
    "INSERT INTO account (id, balance, day, day_started_ms) VALUES (0, ?, ?, ?)
     ON CONFLICT (id) DO UPDATE SET balance = excluded.balance, day = excluded.day,
     day_started_ms = excluded.day_started_ms";
const ADD_GRANT: &str = "INSERT OR IGNORE INTO grants (id, credits, applied_ms) VALUES (?, ?, ?)";
const ADD_CHARGE: &str =
    "INSERT INTO charges (job_id, credits, refunded, created_ms, listed, model, reason)
     VALUES (?, ?, ?, ?, ?, ?, ?)";
const SET_REFUNDED: &str = "UPDATE charges SET refunded = ? WHERE job_id = ? AND refunded IS NULL";
/// A settlement: the refund (as planned by `plan_settle`), and the first real reason.
const SETTLE: &str = "UPDATE charges SET refunded = ?,
     reason = CASE WHEN reason IS NULL OR reason = 'legacy' THEN ? ELSE reason END,
     settled_ms = COALESCE(settled_ms, ?) WHERE job_id = ?";
/// A settlement that changes no credits still records the first real reason.
const SETTLE_REASON: &str = "UPDATE charges SET reason = ?, settled_ms = COALESCE(settled_ms, ?)
     WHERE job_id = ? AND (reason IS NULL OR reason = 'legacy')";
const UNLIST: &str = "UPDATE charges SET listed = 0 WHERE job_id = ?";
const PUT_KEY: &str =
    "INSERT OR REPLACE INTO idempotency (idem_key, fingerprint, job_id, state, expires_ms)
     VALUES (?, ?, ?, ?, ?)";
const CONFIRM_KEY: &str = "UPDATE idempotency SET state = 'confirmed', expires_ms = ?
     WHERE idem_key = ? AND job_id = ? AND state = 'pending'";
const DROP_KEY: &str =
    "DELETE FROM idempotency WHERE idem_key = ? AND job_id = ? AND state = 'pending'";
const ADD_START: &str =
    "INSERT OR REPLACE INTO starts (job_id, idem_key, expires_ms) VALUES (?, ?, ?)";
const DROP_START: &str = "DELETE FROM starts WHERE job_id = ?";
/// A job's own runner spoke of it (a refund, a delete): it exists, so its start is
/// settled and a key still pending for it replays it.
const CONFIRM_KEY_OF_JOB: &str = "UPDATE idempotency SET state = 'confirmed', expires_ms = ?
     WHERE job_id = ? AND state = 'pending'";
/// How many lapsed starts one alarm reaps (each asks a runner); the rest next time.
pub const REAP_BATCH: u64 = 16;
/// The reaper tries again this long after a runner could not be asked.
pub const REAP_RETRY_MS: u64 = 30_000;
/// Expired keys, except a pending one whose start the reaper has not decided yet.
const PRUNE_KEYS: &str = "DELETE FROM idempotency WHERE idem_key IN
     (SELECT idem_key FROM idempotency WHERE expires_ms <= ?
        AND NOT (state = 'pending' AND job_id IN (SELECT job_id FROM starts))
      ORDER BY expires_ms LIMIT ?)";
/// Only settled charges (a recorded end, or a refund recorded before settlements
/// were): a charge whose settlement has not arrived yet is kept until it does, so a
/// late settlement still finds it.
const PRUNE_CHARGES: &str = "DELETE FROM charges WHERE seq IN
     (SELECT seq FROM charges WHERE created_ms < ?
        AND (reason IS NOT NULL OR refunded IS NOT NULL)
      ORDER BY created_ms LIMIT ?)";
const SEED: &str = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?)
     INSERT OR IGNORE INTO charges (job_id, credits, refunded, created_ms, listed, reason)
     SELECT printf('seed-%d-%08d', ?, i), 2, CASE WHEN i % 10 = 0 THEN 2 ELSE 0 END, ?, 1,
            CASE WHEN i % 10 = 0 THEN 'failed' ELSE 'completed' END FROM n";
const SEED_KEYS: &str =
    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?)
     INSERT OR IGNORE INTO idempotency (idem_key, fingerprint, job_id, state, expires_ms)
     SELECT printf('seed-key-%d-%08d', ?, i), 'f', printf('seed-%d-%08d', ?, i), 'confirmed', ?
     FROM n";

#[derive(Debug, Deserialize)]
struct JobIdRow {
    job_id: String,
}

#[derive(Debug, Deserialize)]
struct SeqRow {
    seq: u64,
}

#[derive(Debug, Deserialize)]
struct CountRow {
    n: u64,
}

/// Counts a finished cursor's rows for the bench's operations meter.
fn metered(cursor: &worker::SqlCursor) {
    crate::meter::count(crate::meter::Op::RowsRead, cursor.rows_read());
    crate::meter::count(crate::meter::Op::RowsWritten, cursor.rows_written());
}

/// The account's database: synchronous reads, and writes applied atomically.
struct Db {
    sql: SqlStorage,
    storage: worker::Storage,
}

impl Db {
    fn rows<T: serde::de::DeserializeOwned>(
        &self,
        query: &str,
        args: Vec<SqlStorageValue>,
    ) -> worker::Result<Vec<T>> {
        let cursor = self.sql.exec(query, args)?;
        let rows = cursor.to_array();
        metered(&cursor);
        rows
    }

    fn account(&self) -> worker::Result<Option<AccountRow>> {
        Ok(self
            .rows(
                "SELECT balance, day, day_started_ms FROM account WHERE id = 0",
                vec![],
            )?
            .into_iter()
            .next())
    }

    fn charge(&self, job_id: &str) -> worker::Result<Option<ChargeRow>> {
        Ok(self
            .rows(
                "SELECT job_id, credits, refunded, created_ms FROM charges WHERE job_id = ?",
                vec![text(job_id)],
            )?
            .into_iter()
            .next())
    }

    fn key(&self, key: &str) -> worker::Result<Option<KeyRow>> {
        Ok(self
            .rows(
                "SELECT idem_key, fingerprint, job_id, state, expires_ms FROM idempotency
                 WHERE idem_key = ?",
                vec![text(key)],
            )?
            .into_iter()
            .next())
    }

    /// Whether a start is still waiting for its Confirm, Release or the reaper.
    fn start_exists(&self, job_id: &str) -> worker::Result<bool> {
        Ok(self
            .rows::<CountRow>(
                "SELECT COUNT(*) AS n FROM starts WHERE job_id = ?",
                vec![text(job_id)],
            )?
            .first()
            .is_some_and(|c| c.n > 0))
    }

    fn grant_applied(&self, id: &str) -> bool {
        self.rows::<CountRow>(
            "SELECT COUNT(*) AS n FROM grants WHERE id = ?",
            vec![text(id)],
        )
        .ok()
        .and_then(|r| r.first().map(|c| c.n > 0))
        .unwrap_or(false)
    }

    fn count(&self, table: &str) -> worker::Result<u64> {
        let query = match table {
            "charges" => "SELECT COUNT(*) AS n FROM charges",
            _ => "SELECT COUNT(*) AS n FROM idempotency",
        };
        Ok(self
            .rows::<CountRow>(query, vec![])?
            .first()
            .map_or(0, |c| c.n))
    }

    /// Up to `limit` listed job ids after `cursor`, newest first, and the next cursor.
    fn page(
        &self,
        cursor: Option<&str>,
        limit: usize,
    ) -> worker::Result<(Vec<String>, Option<String>)> {
        let before = match cursor {
            None => i64::MAX as u64,
            Some(c) => match self
                .rows::<SeqRow>("SELECT seq FROM charges WHERE job_id = ?", vec![text(c)])?
                .first()
            {
                Some(row) => row.seq,
                None => return Ok((Vec::new(), None)),
            },
        };
        let rows: Vec<JobIdRow> = self.rows(
            "SELECT job_id FROM charges WHERE listed = 1 AND seq < ? ORDER BY seq DESC LIMIT ?",
            vec![int(before), int(limit as u64 + 1)],
        )?;
        let mut ids: Vec<String> = rows.into_iter().map(|r| r.job_id).collect();
        let more = ids.len() > limit;
        ids.truncate(limit);
        let next = if more { ids.last().cloned() } else { None };
        Ok((ids, next))
    }

    /// Adds the columns of [`MIGRATIONS`] a database created before them lacks, each
    /// with its back-fill in one transaction. A column is probed by selecting it (an
    /// error: it is missing), which needs no access to SQLite's own tables.
    fn migrate(&self) -> worker::Result<()> {
        for (table, column, alter, fill) in MIGRATIONS {
            if self
                .sql
                .exec(&format!("SELECT {column} FROM {table} LIMIT 0"), None)
                .is_ok()
            {
                continue;
            }
            let mut writes = vec![Write {
                query: alter,
                args: vec![],
            }];
            writes.extend(fill.map(|query| Write {
                query,
                args: vec![],
            }));
            self.apply(writes)?;
        }
        Ok(())
    }

    /// Up to `limit + 1` charges before `cursor`, newest first (by the `charges_by_age`
    /// index, whose entries end with the row id `seq`).
    fn history_charges(
        &self,
        cursor: Option<EntryKey>,
        limit: usize,
    ) -> worker::Result<Vec<HistoryCharge>> {
        let (at, rank, row) = match cursor {
            Some(c) => (c.at_ms, c.rank, c.row),
            None => (i64::MAX as u64, 1, i64::MAX as u64),
        };
        // A job (rank 1) sorts before a grant (rank 0) of the same millisecond: after
        // a grant's cursor, that millisecond's jobs are all on earlier pages.
        let row = if rank == 0 { 0 } else { row };
        self.rows(
            "SELECT seq, job_id, credits, refunded, created_ms, listed, model, reason, settled_ms
             FROM charges WHERE (created_ms, seq) < (?, ?)
             ORDER BY created_ms DESC, seq DESC LIMIT ?",
            vec![int(at), int(row), int(limit as u64 + 1)],
        )
    }

    /// The account's grants (a few rows: the operator's), without those imported with
    /// no amount.
    fn history_grants(&self) -> worker::Result<Vec<HistoryGrant>> {
        self.rows(
            "SELECT rowid AS row, id, credits, applied_ms FROM grants WHERE credits > 0",
            vec![],
        )
    }

    /// Runs the writes in one `transactionSync`: all of them or none.
    fn apply(&self, writes: Vec<Write>) -> worker::Result<()> {
        use worker::wasm_bindgen::JsCast;
        use worker::wasm_bindgen::JsValue;
        use worker::wasm_bindgen::closure::Closure;
        if writes.is_empty() {
            return Ok(());
        }
        let sql = self.sql.clone();
        let run = move || -> Result<JsValue, JsValue> {
            for w in writes {
                let cursor = sql
                    .exec(w.query, w.args)
                    .map_err(|e| JsValue::from_str(&e.to_string()))?;
                for row in cursor.raw() {
                    row.map_err(|e| JsValue::from_str(&e.to_string()))?;
                }
                metered(&cursor);
            }
            Ok(JsValue::UNDEFINED)
        };
        let raw: &JsValue = self.storage.as_raw();
        let transaction = js_sys::Reflect::get(raw, &JsValue::from_str("transactionSync"))
            .ok()
            .and_then(|f| f.dyn_into::<js_sys::Function>().ok())
            .ok_or_else(|| worker::Error::RustError("no storage.transactionSync".into()))?;
        transaction
            .call1(raw, &Closure::once_into_js(run))
            .map(|_| ())
            .map_err(worker::Error::from)
    }
}

/// The writes that store an imported legacy state.
fn import_writes(import: &Import) -> Vec<Write> {
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

/// A pending key and its start, reaped if neither confirmed nor released by `expires_ms`.
fn pending_writes(key: &str, fingerprint: &str, job_id: &str, expires_ms: u64) -> Vec<Write> {
    vec![
        put_key(&KeyRow {
            key: key.to_owned(),
            fingerprint: fingerprint.to_owned(),
            job_id: job_id.to_owned(),
            state: KeyState::Pending,
            expires_ms,
        }),
        Write {
            query: ADD_START,
            args: vec![text(job_id), text(key), int(expires_ms)],
        },
    ]
}

/// The job exists: its key replays it from now on.
/// The runner of `job_id` reported on it (refund, delete): a start still waiting for
/// its Confirm is settled as started, so the reaper never takes a later "no record"
/// (the job purged) for "never started" and refunds a job that ran.
fn settled_start_writes(job_id: &str, now_ms: u64) -> Vec<Write> {
    vec![
        Write {
            query: CONFIRM_KEY_OF_JOB,
            args: vec![int(now_ms + IDEMPOTENCY_TTL_MS), text(job_id)],
        },
        Write {
            query: DROP_START,
            args: vec![text(job_id)],
        },
    ]
}

fn confirm_writes(job_id: &str, key: &str, now_ms: u64) -> Vec<Write> {
    vec![
        Write {
            query: CONFIRM_KEY,
            args: vec![int(now_ms + IDEMPOTENCY_TTL_MS), text(key), text(job_id)],
        },
        Write {
            query: DROP_START,
            args: vec![text(job_id)],
        },
    ]
}

/// The job was never started: refunded in full (once), settled as such, unlisted, its
/// key dropped.
fn release_writes(
    db: &Db,
    account: &mut AccountRow,
    job_id: &str,
    key: Option<&str>,
    now_ms: u64,
) -> worker::Result<Vec<Write>> {
    let mut writes = Vec::new();
    if let Some(charge) = db.charge(job_id)?
        && let Some(plan) = plan_refund(&charge, None, account)
    {
        account.balance = account.balance.saturating_add(plan.credited);
        writes.push(Write {
            query: SET_REFUNDED,
            args: vec![int(plan.recorded), text(job_id)],
        });
    }
    writes.push(Write {
        query: SETTLE_REASON,
        args: vec![
            text(Settlement::NotStarted.as_str()),
            int(now_ms),
            text(job_id),
        ],
    });
    writes.push(Write {
        query: UNLIST,
        args: vec![text(job_id)],
    });
    if let Some(key) = key {
        writes.push(Write {
            query: DROP_KEY,
            args: vec![text(key), text(job_id)],
        });
    }
    writes.push(Write {
        query: DROP_START,
        args: vec![text(job_id)],
    });
    Ok(writes)
}

fn put_key(k: &KeyRow) -> Write {
    Write {
        query: PUT_KEY,
        args: vec![
            text(&k.key),
            text(&k.fingerprint),
            text(&k.job_id),
            text(k.state.as_str()),
            int(k.expires_ms),
        ],
    }
}

fn set_account(a: &AccountRow) -> Write {
    Write {
        query: SET_ACCOUNT,
        args: vec![
            int(a.balance),
            a.day.as_deref().map(text).unwrap_or(SqlStorageValue::Null),
            int(a.day_started_ms),
        ],
    }
}

// ---------------------------------------------------------------------------
// The Durable Object.

#[durable_object(alarm)]
pub struct Ledger {
    state: State,
    env: Env,
    /// A job's retention: a runner without a record for a younger job never had one.
    retention_ms: u64,
    windows: RefCell<RateWindows>,
    /// Leases of held reads (`crate::holds`): in memory, as the rate windows.
    leases: RefCell<crate::holds::Leases>,
    /// The schema exists and any legacy value was imported (checked once per
    /// instance).
    ready: Cell<bool>,
    /// How long a charge row is kept: the job's deadline and retention, plus a margin.
    keep_charges_ms: u64,
    /// How long after its charge a job may still be settled: its deadline, plus a
    /// margin for the runner's outbox (see [`job_entry`]).
    open_ms: u64,
    dev_ops: bool,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ledger")
    }
}

fn reply(outcome: Outcome, balance: u64) -> LedgerReply {
    LedgerReply {
        outcome,
        balance,
        jobs: Vec::new(),
        next_cursor: None,
        charge: None,
        stats: None,
        entries: Vec::new(),
        held: false,
        key_fingerprint: None,
    }
}

impl DurableObject for Ledger {
    fn new(state: State, env: Env) -> Self {
        crate::meter::init(&env);
        let cfg = Config::from_env(&env);
        let dev_ops = env
            .var("LEDGER_DEV_OPS")
            .map(|v| v.to_string() == "on")
            .unwrap_or(false);
        Self {
            state,
            env,
            retention_ms: cfg.retention_secs * 1000,
            windows: RefCell::new(RateWindows::default()),
            leases: RefCell::new(crate::holds::Leases::default()),
            ready: Cell::new(false),
            keep_charges_ms: (cfg.retention_secs + cfg.job_deadline_secs) * 1000 + CHARGE_MARGIN_MS,
            open_ms: cfg.job_deadline_secs * 1000 + CHARGE_MARGIN_MS,
            dev_ops,
        }
    }

    async fn fetch(&self, mut req: Request) -> worker::Result<Response> {
        let _request = crate::meter::DoRequest::start();
        let request: LedgerRequest = req.json().await?;
        let storage = self.state.storage();
        let db = Db {
            sql: storage.sql(),
            storage,
        };
        if matches!(
            request.op,
            Op::DevSeed { .. } | Op::DevLegacy { .. } | Op::DevStats | Op::DevReserve { .. }
        ) {
            if !self.dev_ops {
                return Ok(http::json(&serde_json::json!({"error": "no dev ops"}), 404));
            }
            return self.dev(&db, request).await;
        }
        // Memory only: no row is read or written for it.
        if let Op::Unhold { id } = &request.op {
            self.leases.borrow_mut().give_back(id);
            return Ok(http::json(&reply(Outcome::Ok, 0), 200));
        }
        if !self.ready.get() {
            self.prepare(&db, request.now_ms).await?;
        }
        let reply = self.run(&db, &request)?;
        if let Op::Reserve {
            idempotency_key: Some(_),
            ..
        } = &request.op
            && reply.outcome == Outcome::Ok
        {
            self.arm_reaper(request.now_ms + PENDING_TTL_MS).await?;
        }
        Ok(http::json(&reply, 200))
    }

    /// The reaper: starts whose pending key lapsed without a Confirm or Release (the
    /// submit handler's inline tries all failed, or it died) are settled by asking the
    /// job's runner whether the job exists (see [`reap`]).
    async fn alarm(&self) -> worker::Result<Response> {
        let _request = crate::meter::DoRequest::start();
        let storage = self.state.storage();
        let db = Db {
            sql: storage.sql(),
            storage,
        };
        let now = worker::Date::now().as_millis();
        if !self.ready.get() {
            self.prepare(&db, now).await?;
        }
        let due: Vec<StartRow> = db.rows(
            "SELECT job_id, idem_key, expires_ms FROM starts WHERE expires_ms <= ?
             ORDER BY expires_ms LIMIT ?",
            vec![int(now), int(REAP_BATCH)],
        )?;
        for start in due {
            let started = match self.runner_has(&start.job_id).await {
                Ok(started) => started,
                Err(e) => {
                    worker::console_warn!(
                        "ledger: reaping {}: runner not reached: {e}",
                        start.job_id
                    );
                    // Asked again later, not at once.
                    db.apply(vec![Write {
                        query: "UPDATE starts SET expires_ms = ? WHERE job_id = ?",
                        args: vec![int(now + REAP_RETRY_MS), text(&start.job_id)],
                    }])?;
                    continue;
                }
            };
            // No await from here to the writes: the rows read are the rows changed.
            let listed = db
                .rows::<ListedRow>(
                    "SELECT listed FROM charges WHERE job_id = ?",
                    vec![text(&start.job_id)],
                )?
                .first()
                .is_some_and(|r| r.listed == 1);
            let charge = db.charge(&start.job_id)?;
            let decision = reap(started, charge.as_ref(), listed, now, self.retention_ms);
            worker::console_warn!(
                "ledger: start of {} neither confirmed nor released: {decision:?}",
                start.job_id
            );
            let stored = db.account()?.unwrap_or_default();
            let mut account = stored.clone();
            let mut writes = match decision {
                Reap::Confirm => confirm_writes(&start.job_id, &start.idem_key, now),
                Reap::Release => {
                    release_writes(&db, &mut account, &start.job_id, Some(&start.idem_key), now)?
                }
                Reap::Forget => vec![
                    Write {
                        query: DROP_KEY,
                        args: vec![text(&start.idem_key), text(&start.job_id)],
                    },
                    Write {
                        query: DROP_START,
                        args: vec![text(&start.job_id)],
                    },
                ],
            };
            if account != stored {
                writes.insert(0, set_account(&account));
            }
            db.apply(writes)?;
        }
        let next = db
            .rows::<NextRow>("SELECT MIN(expires_ms) AS next FROM starts", vec![])?
            .first()
            .and_then(|r| r.next);
        if let Some(next) = next {
            self.state
                .storage()
                .set_alarm(alarm_offset(next.max(now), now))
                .await?;
        }
        Response::ok("reaped")
    }
}

fn alarm_offset(at_ms: u64, now_ms: u64) -> i64 {
    i64::try_from(at_ms.saturating_sub(now_ms)).unwrap_or(i64::MAX)
}

#[derive(Debug, Deserialize)]
struct StartRow {
    job_id: String,
    idem_key: String,
    #[allow(dead_code)]
    expires_ms: u64,
}

#[derive(Debug, Deserialize)]
struct ListedRow {
    listed: u64,
}

#[derive(Debug, Deserialize)]
struct NextRow {
    next: Option<u64>,
}

impl Ledger {
    /// Sets the alarm to `at_ms` unless it is set earlier already.
    async fn arm_reaper(&self, at_ms: u64) -> worker::Result<()> {
        let storage = self.state.storage();
        let now = worker::Date::now().as_millis();
        if let Some(set) = storage.get_alarm().await?
            && (set as u64) <= at_ms
        {
            return Ok(());
        }
        storage.set_alarm(alarm_offset(at_ms, now)).await
    }

    /// Whether job `job_id`'s runner has a record (`Err`: it could not be asked).
    async fn runner_has(&self, job_id: &str) -> worker::Result<Started> {
        // `/abandon`, not `/state`: without a record the runner also refuses a late
        // `/start` from then on, so its "no such job" stays true.
        let req = crate::handlers::submit::internal_request("/abandon", Some(&()))
            .map_err(|e| worker::Error::RustError(e.to_string()))?;
        let mut resp = self
            .env
            .durable_object(crate::config::bindings::JOB_RUNNER)?
            .id_from_name(job_id)?
            .get_stub()?
            .fetch_with_request(req)
            .await?;
        match resp.status_code() {
            200 => Ok(Started::Yes),
            // The runner's 404: "no such job" (no record; now tombstoned).
            404 => Ok(match resp.json::<String>().await?.as_str() {
                "no such job" => Started::No,
                _ => Started::Yes,
            }),
            other => Err(worker::Error::RustError(format!("runner answered {other}"))),
        }
    }

    /// Creates the tables, and imports a pre-rows account once (then deletes its
    /// value). The import's writes are one transaction; its check runs after the
    /// only await, so two first requests cannot both import.
    async fn prepare(&self, db: &Db, now_ms: u64) -> worker::Result<()> {
        for statement in SCHEMA {
            metered(&db.sql.exec(statement, None)?);
        }
        db.migrate()?;
        if db.account()?.is_some() {
            self.ready.set(true);
            return Ok(());
        }
        crate::meter::count(crate::meter::Op::RowsRead, 1);
        let legacy = db.storage.get::<LegacyState>(LEGACY_KEY).await?;
        if db.account()?.is_none() {
            let import = import(legacy.clone().unwrap_or_default(), now_ms);
            db.apply(import_writes(&import))?;
        }
        if legacy.is_some() {
            db.storage.delete(LEGACY_KEY).await?;
        }
        self.ready.set(true);
        Ok(())
    }

    /// One operation: reads, the rules, and its writes in one transaction. No await.
    fn run(&self, db: &Db, request: &LedgerRequest) -> worker::Result<LedgerReply> {
        let now = request.now_ms;
        let stored = db.account()?.unwrap_or_default();
        // The day of a daily allowance is this object's, from its own clock: a request
        // may have waited (a slow body) since the Worker read its clock.
        let own_now = worker::Date::now().as_millis();
        let (account, new_grants) = fund(
            &stored,
            &request.funding,
            &|id| db.grant_applied(id),
            own_now,
        );
        let mut writes = Vec::new();
        for g in &new_grants {
            writes.push(Write {
                query: ADD_GRANT,
                args: vec![text(&g.id), int(g.credits), int(now)],
            });
        }
        let mut account = account;
        let limited = request
            .limit
            .as_ref()
            .and_then(|limit| self.windows.borrow_mut().check(limit, now).err());
        let mut out = reply(Outcome::Ok, 0);
        if let Some(retry_after_secs) = limited {
            out.outcome = Outcome::RateLimited { retry_after_secs };
        } else {
            if let Some(hold) = &request.hold {
                out.held = self
                    .leases
                    .borrow_mut()
                    .take(&hold.id, hold.until_ms, hold.max, now);
            }
            match &request.op {
                Op::Touch | Op::Unhold { .. } => {}
                Op::Precheck {
                    amount,
                    idempotency_key,
                } => {
                    let live = match idempotency_key {
                        Some(key) => db.key(key)?.filter(|row| row.expires_ms > now),
                        None => None,
                    };
                    let known = live.is_some();
                    out.key_fingerprint = live.map(|row| row.fingerprint).filter(|f| !f.is_empty());
                    if !known && account.balance < *amount {
                        out.outcome = Outcome::Insufficient { needed: *amount };
                    }
                }
                Op::Reserve {
                    job_id,
                    amount,
                    idempotency_key,
                    fingerprint,
                    model,
                } => {
                    let check = match idempotency_key {
                        Some(key) => {
                            let row = db.key(key)?;
                            let unsettled = match &row {
                                Some(r) if r.state == KeyState::Pending => {
                                    db.start_exists(&r.job_id)?
                                }
                                _ => false,
                            };
                            check_key(row.as_ref(), fingerprint, now, unsettled)
                        }
                        None => KeyCheck::Fresh,
                    };
                    match check {
                        KeyCheck::Reused => out.outcome = Outcome::KeyReused,
                        KeyCheck::InProgress => {
                            out.outcome = Outcome::InProgress {
                                retry_after_secs: IN_PROGRESS_RETRY_SECS,
                            }
                        }
                        KeyCheck::Replay(job_id) => out.outcome = Outcome::Replay { job_id },
                        KeyCheck::Fresh if db.charge(job_id)?.is_some() => {}
                        KeyCheck::Fresh if account.balance < *amount => {
                            out.outcome = Outcome::Insufficient { needed: *amount };
                        }
                        KeyCheck::Fresh => {
                            account.balance -= amount;
                            writes.push(Write {
                                query: ADD_CHARGE,
                                args: vec![
                                    text(job_id),
                                    int(*amount),
                                    SqlStorageValue::Null,
                                    // The allowance's day is renewed on this clock, so
                                    // the charge is dated on it too (`plan_settle`
                                    // compares the two).
                                    int(own_now),
                                    int(1),
                                    model
                                        .map(|m| text(m.slug()))
                                        .unwrap_or(SqlStorageValue::Null),
                                    SqlStorageValue::Null,
                                ],
                            });
                            if let Some(key) = idempotency_key {
                                writes.extend(pending_writes(
                                    key,
                                    fingerprint,
                                    job_id,
                                    now + PENDING_TTL_MS,
                                ));
                            }
                            writes.push(Write {
                                query: PRUNE_KEYS,
                                args: vec![int(now), int(PRUNE_BATCH)],
                            });
                            writes.push(Write {
                                query: PRUNE_CHARGES,
                                args: vec![
                                    int(now.saturating_sub(self.keep_charges_ms)),
                                    int(PRUNE_BATCH),
                                ],
                            });
                        }
                    }
                }
                Op::Confirm {
                    job_id,
                    idempotency_key,
                } => writes.extend(confirm_writes(job_id, idempotency_key, now)),
                Op::Release {
                    job_id,
                    idempotency_key,
                } => writes.extend(release_writes(
                    db,
                    &mut account,
                    job_id,
                    idempotency_key.as_deref(),
                    now,
                )?),
                Op::Refund { job_id, credits } => {
                    if let Some(charge) = db.charge(job_id)?
                        && let Some(plan) = plan_refund(&charge, *credits, &account)
                    {
                        account.balance = account.balance.saturating_add(plan.credited);
                        writes.push(Write {
                            query: SET_REFUNDED,
                            args: vec![int(plan.recorded), text(job_id)],
                        });
                    }
                    writes.extend(settled_start_writes(job_id, now));
                }
                Op::Settle {
                    job_id,
                    credits,
                    reason,
                } => {
                    let charge = db.charge(job_id)?;
                    if charge.is_none() {
                        // Nothing to settle against: refused (no credit is given for a
                        // charge this Ledger does not hold), and logged.
                        worker::console_error!(
                            "ledger: settle of job {job_id} ({credits} credits, {}) without a charge row: refused",
                            reason.as_str()
                        );
                    }
                    if let Some(charge) = charge {
                        match plan_settle(&charge, *credits, &account) {
                            Some(plan) => {
                                account.balance = account.balance.saturating_add(plan.credited);
                                writes.push(Write {
                                    query: SETTLE,
                                    args: vec![
                                        int(plan.recorded),
                                        text(reason.as_str()),
                                        int(now),
                                        text(job_id),
                                    ],
                                });
                            }
                            None => writes.push(Write {
                                query: SETTLE_REASON,
                                args: vec![text(reason.as_str()), int(now), text(job_id)],
                            }),
                        }
                    }
                    writes.extend(settled_start_writes(job_id, now));
                }
                Op::History { cursor, limit } => {
                    let cursor = cursor.as_deref().and_then(EntryKey::parse);
                    let charges = db.history_charges(cursor, *limit)?;
                    let grants = db.history_grants()?;
                    let (entries, next) =
                        history_page(&charges, &grants, cursor, *limit, now, self.open_ms);
                    out.entries = entries;
                    out.next_cursor = next;
                }
                Op::Charge { job_id } => {
                    out.charge = db.charge(job_id)?.map(|c| ChargeInfo {
                        charged: c.credits,
                        refunded: c.refunded,
                    });
                }
                Op::List { cursor, limit } => {
                    let (jobs, next) = db.page(cursor.as_deref(), *limit)?;
                    out.jobs = jobs;
                    out.next_cursor = next;
                }
                Op::Forget { job_id } => {
                    writes.push(Write {
                        query: UNLIST,
                        args: vec![text(job_id)],
                    });
                    writes.extend(settled_start_writes(job_id, now));
                }
                Op::DevSeed { .. }
                | Op::DevLegacy { .. }
                | Op::DevStats
                | Op::DevReserve { .. } => {}
            }
        }
        if account != stored || db.account()?.is_none() {
            writes.insert(0, set_account(&account));
        }
        db.apply(writes)?;
        out.balance = account.balance;
        Ok(out)
    }

    /// The dev/bench stacks' operations (`LEDGER_DEV_OPS=on` only).
    async fn dev(&self, db: &Db, request: LedgerRequest) -> worker::Result<Response> {
        for statement in SCHEMA {
            db.sql.exec(statement, None)?;
        }
        db.migrate()?;
        let now = request.now_ms;
        match request.op {
            Op::DevSeed { jobs } => {
                // A distinct id range per call, so seeding twice adds twice.
                let batch = now % 1_000_000;
                db.apply(vec![
                    Write {
                        query: SEED,
                        args: vec![int(jobs), int(batch), int(now)],
                    },
                    Write {
                        query: SEED_KEYS,
                        args: vec![
                            int(jobs),
                            int(batch),
                            int(batch),
                            int(now + IDEMPOTENCY_TTL_MS),
                        ],
                    },
                ])?;
            }
            Op::DevReserve {
                job_id,
                amount,
                idempotency_key,
                pending_ms,
                age_ms,
            } => {
                if !self.ready.get() {
                    self.prepare(db, now).await?;
                }
                let mut account = db.account()?.unwrap_or_default();
                account.balance = account.balance.saturating_sub(amount);
                let mut writes = vec![
                    set_account(&account),
                    Write {
                        query: ADD_CHARGE,
                        args: vec![
                            text(&job_id),
                            int(amount),
                            SqlStorageValue::Null,
                            int(now.saturating_sub(age_ms)),
                            int(1),
                            SqlStorageValue::Null,
                            SqlStorageValue::Null,
                        ],
                    },
                ];
                writes.extend(pending_writes(
                    &idempotency_key,
                    "dev",
                    &job_id,
                    now + pending_ms,
                ));
                db.apply(writes)?;
                self.arm_reaper(now + pending_ms).await?;
            }
            Op::DevLegacy { mut state } => {
                if let Funding::Grants { grants } = &request.funding {
                    state.applied_grants = grants.iter().map(|g| g.id.clone()).collect();
                }
                db.apply(vec![
                    Write {
                        query: "DELETE FROM account",
                        args: vec![],
                    },
                    Write {
                        query: "DELETE FROM grants",
                        args: vec![],
                    },
                    Write {
                        query: "DELETE FROM charges",
                        args: vec![],
                    },
                    Write {
                        query: "DELETE FROM idempotency",
                        args: vec![],
                    },
                ])?;
                db.storage.put(LEGACY_KEY, &state).await?;
                self.ready.set(false);
            }
            _ => {}
        }
        let legacy_stored = db.storage.get::<LegacyState>(LEGACY_KEY).await?.is_some();
        let mut out = reply(Outcome::Ok, db.account()?.map_or(0, |a| a.balance));
        out.stats = Some(Stats {
            size_bytes: db.sql.database_size() as u64,
            charges: db.count("charges")?,
            keys: db.count("idempotency")?,
            legacy_stored,
        });
        Ok(http::json(&out, 200))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grants(list: &[(&str, u64)]) -> Funding {
        Funding::Grants {
            grants: list
                .iter()
                .map(|(id, credits)| Grant {
                    id: (*id).into(),
                    credits: *credits,
                })
                .collect(),
        }
    }

    fn charge(credits: u64, refunded: Option<u64>, created_ms: u64) -> ChargeRow {
        ChargeRow {
            job_id: "j".into(),
            credits,
            refunded,
            created_ms,
            reason: None,
        }
    }

    fn key(fingerprint: &str, state: KeyState, expires_ms: u64) -> KeyRow {
        KeyRow {
            key: "k".into(),
            fingerprint: fingerprint.into(),
            job_id: "job-1".into(),
            state,
            expires_ms,
        }
    }

    #[test]
    fn grants_apply_once_each() {
        let applied = |id: &str| id == "g1";
        let (a, new) = fund(
            &AccountRow {
                balance: 10,
                ..AccountRow::default()
            },
            &grants(&[("g1", 10), ("g2", 5), ("g2", 5)]),
            &applied,
            0,
        );
        assert_eq!(a.balance, 15, "only g2, once");
        assert_eq!(new.len(), 1);
        let (same, none) = fund(&a, &grants(&[("g1", 10)]), &applied, 0);
        assert_eq!((same, none), (a, vec![]));
    }

    #[test]
    fn the_daily_allowance_resets_each_day_and_remembers_when() {
        let daily = Funding::Daily { allowance: 10 };
        // 2026-11-21T00:00:05Z and the next day, by the Ledger's clock.
        let nov21 = 1_795_219_200_000;
        let (a, _) = fund(&AccountRow::default(), &daily, &|_| false, nov21 + 5);
        assert_eq!(
            a,
            AccountRow {
                balance: 10,
                day: Some("2026-11-21".into()),
                day_started_ms: nov21 + 5
            }
        );
        let spent = AccountRow { balance: 2, ..a };
        assert_eq!(fund(&spent, &daily, &|_| false, nov21 + 9).0, spent);
        let next = fund(&spent, &daily, &|_| false, nov21 + 86_400_000).0;
        assert_eq!(
            (next.balance, next.day_started_ms),
            (10, nov21 + 86_400_000)
        );
    }

    /// Issue 26: a day computed before a slow body (or a clock stepping back) must not
    /// hand a spent account yesterday's allowance again.
    #[test]
    fn the_anonymous_day_only_moves_forward() {
        let daily = Funding::Daily { allowance: 10 };
        let nov22 = 1_795_305_600_000;
        let spent = AccountRow {
            balance: 0,
            day: Some("2026-11-22".into()),
            day_started_ms: nov22,
        };
        for earlier in [nov22 - 1, nov22 - 86_400_000 * 3] {
            assert_eq!(
                fund(&spent, &daily, &|_| false, earlier).0,
                spent,
                "{earlier}"
            );
        }
    }

    #[test]
    fn utc_days_are_iso_dates() {
        assert_eq!(utc_day(0), "1970-01-01");
        assert_eq!(utc_day(86_399_999), "1970-01-01");
        assert_eq!(utc_day(951_782_400_000), "2000-02-29");
        assert_eq!(utc_day(1_795_219_200_000), "2026-11-21");
        assert_eq!(utc_day(1_795_219_199_999), "2026-11-20");
        assert_eq!(utc_day(4_107_542_400_000), "2100-03-01");
    }

    #[test]
    fn a_refund_is_capped_at_the_charge_and_happens_once() {
        let keyed = AccountRow::default();
        assert_eq!(
            plan_refund(&charge(5, None, 0), None, &keyed),
            Some(RefundPlan {
                recorded: 5,
                credited: 5
            })
        );
        assert_eq!(
            plan_refund(&charge(5, None, 0), Some(2), &keyed).map(|p| p.recorded),
            Some(2)
        );
        assert_eq!(
            plan_refund(&charge(5, None, 0), Some(50), &keyed).map(|p| p.recorded),
            Some(5),
            "never more than charged"
        );
        assert_eq!(
            plan_refund(&charge(5, Some(0), 0), None, &keyed),
            None,
            "a refund of 0 still counts as the job's refund"
        );
    }

    #[test]
    fn a_refund_after_the_allowance_was_renewed_is_not_credited_twice() {
        let today = AccountRow {
            balance: 10,
            day: Some("2026-11-22".into()),
            day_started_ms: 1_000,
        };
        assert_eq!(
            plan_refund(&charge(4, None, 999), None, &today),
            Some(RefundPlan {
                recorded: 4,
                credited: 0
            })
        );
        assert_eq!(
            plan_refund(&charge(4, None, 1_000), None, &today).map(|p| p.credited),
            Some(4)
        );
    }

    #[test]
    fn an_idempotency_key_is_bound_to_its_request_and_visible_once_confirmed() {
        let now = 1_000;
        assert_eq!(check_key(None, "f", now, false), KeyCheck::Fresh);
        assert_eq!(
            check_key(Some(&key("f", KeyState::Pending, now + 1)), "f", now, false),
            KeyCheck::InProgress
        );
        assert_eq!(
            check_key(
                Some(&key("f", KeyState::Confirmed, now + 1)),
                "f",
                now,
                false
            ),
            KeyCheck::Replay("job-1".into())
        );
        assert_eq!(
            check_key(
                Some(&key("f", KeyState::Confirmed, now + 1)),
                "g",
                now,
                false
            ),
            KeyCheck::Reused
        );
        assert_eq!(
            check_key(Some(&key("f", KeyState::Pending, now + 1)), "g", now, false),
            KeyCheck::Reused,
            "another body is refused even while the first is starting"
        );
        assert_eq!(
            check_key(Some(&key("f", KeyState::Pending, now)), "g", now, false),
            KeyCheck::Fresh,
            "an expired (e.g. abandoned pending) key is free again"
        );
        assert_eq!(
            check_key(Some(&key("f", KeyState::Pending, now)), "f", now, true),
            KeyCheck::InProgress,
            "a lapsed pending key whose start the reaper has not decided stays in progress"
        );
        assert_eq!(
            check_key(Some(&key("f", KeyState::Pending, now)), "g", now, true),
            KeyCheck::Reused
        );
        assert_eq!(
            check_key(
                Some(&key("", KeyState::Confirmed, now + 1)),
                "g",
                now,
                false
            ),
            KeyCheck::Replay("job-1".into()),
            "keys imported from before fingerprints replay any body"
        );
    }

    #[test]
    fn a_legacy_state_becomes_rows_in_order() {
        let legacy: LegacyState = serde_json::from_value(serde_json::json!({
            "balance": 7,
            "applied_grants": ["g1"],
            "day": null,
            "charges": {
                "a": {"amount": 5, "refunded": false},
                "b": {"amount": 2, "refunded": true},
                "gone": {"amount": 1, "refunded": false}
            },
            "idempotency": {"k": ["a", 1_000], "old": ["b", 0]},
            "jobs": ["b", "a"]
        }))
        .unwrap();
        let now = IDEMPOTENCY_TTL_MS + 10;
        let rows = import(legacy, now);
        assert_eq!(rows.account.balance, 7);
        assert_eq!(rows.grants, vec!["g1".to_string()]);
        let order: Vec<(&str, bool, Option<u64>)> = rows
            .charges
            .iter()
            .map(|(c, listed)| (c.job_id.as_str(), *listed, c.refunded))
            .collect();
        assert_eq!(
            order,
            vec![
                ("gone", false, None),
                ("b", true, Some(2)),
                ("a", true, None)
            ]
        );
        assert!(rows.charges.iter().all(|(c, _)| c.created_ms == now));
        assert_eq!(rows.keys.len(), 1, "the expired key is dropped");
        assert_eq!(rows.keys[0].key, "k");
        assert_eq!(rows.keys[0].state, KeyState::Confirmed);
        assert_eq!(rows.keys[0].expires_ms, 1_000 + IDEMPOTENCY_TTL_MS);
    }

    #[test]
    fn old_clients_requests_still_parse() {
        let op: Op = serde_json::from_str(r#"{"op":"refund","job_id":"a"}"#).unwrap();
        assert_eq!(
            op,
            Op::Refund {
                job_id: "a".into(),
                credits: None
            }
        );
        let op: Op = serde_json::from_str(
            r#"{"op":"reserve","job_id":"a","amount":2,"idempotency_key":null}"#,
        )
        .unwrap();
        assert!(matches!(op, Op::Reserve { fingerprint, .. } if fingerprint.is_empty()));
    }

    #[test]
    fn rate_windows_limit_per_minute_and_say_when_to_retry() {
        let mut w = RateWindows::default();
        let limit = Limit {
            bucket: "submit".into(),
            per_minute: 2,
        };
        let t = 120_000 + 15_000;
        assert_eq!(w.check(&limit, t), Ok(()));
        assert_eq!(w.check(&limit, t), Ok(()));
        assert_eq!(w.check(&limit, t), Err(45));
        assert_eq!(w.check(&limit, 180_000), Ok(()), "next minute");
    }

    #[test]
    fn a_lapsed_start_is_confirmed_if_its_job_exists_else_released_while_it_cannot_be_purged() {
        let retention = 60_000;
        let c = charge(5, None, 1_000);
        let young = 1_000 + 61_000 - retention;
        assert_eq!(
            reap(Started::Yes, Some(&c), true, 62_000, retention),
            Reap::Confirm,
            "a lost Confirm"
        );
        assert_eq!(
            reap(Started::No, Some(&c), true, young, retention),
            Reap::Release,
            "a lost Release: refund it"
        );
        assert_eq!(
            reap(Started::No, Some(&c), true, 1_000 + retention, retention),
            Reap::Forget,
            "old enough to have been purged: its runner settled it"
        );
        assert_eq!(
            reap(Started::No, Some(&c), false, young, retention),
            Reap::Forget,
            "deleted by its owner: it existed"
        );
        assert_eq!(
            reap(Started::No, None, true, young, retention),
            Reap::Forget
        );
    }

    fn settled(credits: u64, refunded: Option<u64>, reason: Option<&str>) -> ChargeRow {
        ChargeRow {
            reason: reason.map(str::to_owned),
            ..charge(credits, refunded, 0)
        }
    }

    #[test]
    fn a_settlement_refunds_once_and_only_tops_up_to_the_charge() {
        let keyed = AccountRow::default();
        let plan = |c: &ChargeRow, credits| plan_settle(c, credits, &keyed);
        assert_eq!(
            plan(&settled(5, None, None), 0),
            Some(RefundPlan {
                recorded: 0,
                credited: 0
            }),
            "a job that refunds nothing is still settled"
        );
        assert_eq!(
            plan(&settled(5, None, None), 50).map(|p| p.recorded),
            Some(5),
            "never more than charged"
        );
        assert_eq!(
            plan(&settled(5, Some(5), Some("failed")), 5),
            None,
            "a repeat changes nothing"
        );
        assert_eq!(
            plan(&settled(5, Some(0), Some("canceled")), 5),
            Some(RefundPlan {
                recorded: 5,
                credited: 5
            }),
            "a confirmed stop after 'requested' tops the refund up"
        );
        assert_eq!(
            plan(&settled(5, Some(5), Some("canceled")), 0),
            None,
            "a refund never shrinks"
        );
        assert_eq!(
            plan(&settled(5, Some(2), None), 2),
            None,
            "a refund recorded by the older Refund op is not paid again"
        );
        assert_eq!(
            plan(&settled(5, None, Some(LEGACY_REASON)), 5).map(|p| p.credited),
            Some(5),
            "a job from before settlements still gets its refund"
        );
        let renewed = AccountRow {
            day: Some("2026-11-22".into()),
            day_started_ms: 1,
            ..AccountRow::default()
        };
        assert_eq!(
            plan_settle(&settled(5, None, None), 5, &renewed),
            Some(RefundPlan {
                recorded: 5,
                credited: 0
            })
        );
    }

    fn history_charge(seq: u64, created_ms: u64) -> HistoryCharge {
        HistoryCharge {
            seq,
            job_id: format!("job-{seq}"),
            credits: 5,
            refunded: None,
            created_ms,
            listed: 1,
            model: Some("flux-depth-pro".into()),
            reason: None,
            settled_ms: None,
        }
    }

    #[test]
    fn a_job_entry_is_pending_until_settled_and_stays_after_a_delete() {
        let open = 1_000;
        let running = job_entry(&history_charge(1, 10_000), 10_500, open);
        assert!(matches!(
            running,
            CreditEntry::Job {
                pending: 5,
                refunded: 0,
                reason: None,
                deleted: false,
                model: Some(Model::FluxDepthPro),
                ..
            }
        ));
        let canceled = HistoryCharge {
            refunded: Some(0),
            reason: Some("canceled".into()),
            settled_ms: Some(12_000),
            listed: 0,
            ..history_charge(1, 10_000)
        };
        assert_eq!(
            job_entry(&canceled, 13_000, open),
            CreditEntry::Job {
                request_id: "job-1".into(),
                model: Some(Model::FluxDepthPro),
                charged: 5,
                refunded: 0,
                pending: 0,
                created_at: 10,
                settled_at: Some(12),
                reason: Some(Settlement::Canceled),
                deleted: true,
            }
        );
        let never = HistoryCharge {
            refunded: Some(5),
            reason: Some("not_started".into()),
            listed: 0,
            ..history_charge(1, 10_000)
        };
        assert!(matches!(
            job_entry(&never, 13_000, open),
            CreditEntry::Job {
                deleted: false,
                pending: 0,
                refunded: 5,
                ..
            }
        ));
        let legacy = HistoryCharge {
            reason: Some(LEGACY_REASON.into()),
            ..history_charge(1, 10_000)
        };
        assert!(
            matches!(
                job_entry(&legacy, 10_500, open),
                CreditEntry::Job {
                    pending: 5,
                    reason: None,
                    ..
                }
            ),
            "a legacy job that may still run may still refund"
        );
        assert!(matches!(
            job_entry(&legacy, 11_000, open),
            CreditEntry::Job { pending: 0, .. }
        ));
    }

    #[test]
    fn the_history_merges_jobs_and_grants_newest_first_page_by_page() {
        let charges: Vec<HistoryCharge> = (1..=5)
            .rev()
            .map(|seq| history_charge(seq, seq * 1_000))
            .collect();
        let grants = vec![
            HistoryGrant {
                row: 1,
                id: "g1".into(),
                credits: 100,
                applied_ms: Some(3_000),
            },
            HistoryGrant {
                row: 2,
                id: "old".into(),
                credits: 7,
                applied_ms: None,
            },
        ];
        let name = |e: &CreditEntry| match e {
            CreditEntry::Job { request_id, .. } => request_id.clone(),
            CreditEntry::Grant { grant_id, .. } => grant_id.clone(),
        };
        let mut seen = Vec::new();
        let mut cursor = None;
        loop {
            // As the Ledger reads them: the charges before the cursor, limit + 1.
            let before: Vec<HistoryCharge> = charges
                .iter()
                .filter(|c| {
                    cursor.is_none_or(|k: EntryKey| {
                        (c.created_ms, c.seq) < (k.at_ms, if k.rank == 0 { 0 } else { k.row })
                    })
                })
                .take(3)
                .cloned()
                .collect();
            let (page, next) = history_page(&before, &grants, cursor, 2, 0, 0);
            assert!(page.len() <= 2);
            seen.extend(page.iter().map(name));
            match next {
                Some(n) => cursor = Some(EntryKey::parse(&n).expect("a cursor it gave out")),
                None => break,
            }
        }
        assert_eq!(
            seen,
            ["job-5", "job-4", "job-3", "g1", "job-2", "job-1", "old"],
            "a job before a grant of the same millisecond; grants of unknown time last"
        );
        assert_eq!(EntryKey::parse("1.2.3"), None, "rank is 0 or 1");
        assert_eq!(EntryKey::parse("1.1"), None);
        assert_eq!(EntryKey::parse("1.1.3.4"), None);
        assert_eq!(EntryKey::parse("x.1.3"), None);
    }
}
