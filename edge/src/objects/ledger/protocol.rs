//! The Ledger's protocol: what the Worker asks it (`POST /op` with a
//! [`LedgerRequest`]) and what it answers ([`LedgerReply`]), and the limits both sides
//! share.

use serde::{Deserialize, Serialize};

use parallax_api::{CreditEntry, Model, Settlement};

use super::legacy::*;

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

/// A reply with `outcome` and `balance` and nothing else.
pub(super) fn reply(outcome: Outcome, balance: u64) -> LedgerReply {
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
