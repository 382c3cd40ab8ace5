//! A job's outbox as its record holds it: the effects decided in the same write as the
//! state that needs them (settle, cancels, dropping outputs or the preview's photo,
//! the purge, resolving a lost submit), each with its retry state and backoff. The
//! object works them off in `outbox.rs`.

use serde::{Deserialize, Serialize};

use crate::providers::Submitted;

/// Retry state of an outbox entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Retry {
    pub tries: u32,
    /// When the next try is due (Unix ms).
    pub next_ms: u64,
}

impl Retry {
    pub fn now(now_ms: u64) -> Self {
        Self {
            tries: 0,
            next_ms: now_ms,
        }
    }

    pub fn is_due(&self, now_ms: u64) -> bool {
        now_ms >= self.next_ms
    }

    /// One more failed try: back off exponentially from 1 s, capped at 5 min, with
    /// jitter in 0..=25 %.
    pub fn failed(&mut self, now_ms: u64, jitter: f64) {
        self.tries = self.tries.saturating_add(1);
        let exp = 1000u64
            .saturating_mul(1 << self.tries.min(9))
            .min(OUTBOX_MAX_BACKOFF_MS);
        self.next_ms = now_ms + exp + (exp as f64 * 0.25 * jitter.clamp(0.0, 1.0)) as u64;
    }
}

/// An upstream job to stop.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CancelOrder {
    pub provider: String,
    pub sub: Submitted,
    /// The owner canceled: a confirmed stop (nothing spent) refunds the job in full.
    pub refund_if_stopped: bool,
    pub retry: Retry,
}

/// Effects decided in the same write as the state that needs them, retried from the
/// alarm with backoff until acknowledged (see `runner`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Outbox {
    /// Settle the job with its owner's Ledger: the decided refund
    /// (`JobRecord::refund`, 0 included) and why the job ended
    /// (`JobRecord::settlement`), so every job's end is in the credit history.
    #[serde(default)]
    pub refund: Option<Retry>,
    /// Stop upstream jobs (canceled, timed out, superseded).
    #[serde(default)]
    pub cancels: Vec<CancelOrder>,
    /// Delete every R2 object under `results/{id}/` (a failed or canceled job keeps no
    /// output, even one written by a step that lost a race).
    #[serde(default)]
    pub drop_outputs: Option<Retry>,
    /// Delete everything (R2 and this object's storage): deleted, or retention over.
    #[serde(default)]
    pub purge: Option<Retry>,
    /// Delete the control image (`keys::input`) of a depth preview once it has ended
    /// ([`JobRecord::input_drop_ready`]): the picked photo is not kept for the
    /// retention under a preview the user may never generate from; its map stays.
    #[serde(default)]
    pub drop_input: Option<Retry>,
    /// A job that ended while a submit attempt was out (`JobRecord::submitting`): if
    /// that attempt's outcome is not recorded by then, it was lost with the object,
    /// and the alarm looks it up (or decides it as spent) at this time, with backoff.
    #[serde(default)]
    pub resolve_submit: Option<Retry>,
}

impl Outbox {
    /// When the earliest entry is due.
    pub fn next_due_ms(&self) -> Option<u64> {
        self.refund
            .iter()
            .chain(self.cancels.iter().map(|c| &c.retry))
            .chain(self.drop_outputs.iter())
            .chain(self.resolve_submit.iter())
            .map(|r| r.next_ms)
            .min()
    }
}

/// Outbox entries back off to at most this.
pub const OUTBOX_MAX_BACKOFF_MS: u64 = 300_000;
/// An upstream cancel is given up after this many failed tries (the upstream job ends
/// on its own; the refund is then decided as "spent").
pub const CANCEL_MAX_TRIES: u32 = 8;
/// A lost submit attempt is resolved this long after the job ended while it was out
/// (the attempt's own POST, if still running, records its outcome before then: it is
/// bounded by the upstream timeout, and the alarm never runs beside itself).
pub const RESOLVE_SUBMIT_AFTER_MS: u64 = 1_000;
/// A lost submit whose lookup keeps failing is decided as spent after this many tries.
pub const RESOLVE_SUBMIT_MAX_TRIES: u32 = 8;
/// A provider's "not found" this soon after it accepted a job is a registration lag,
/// not an answer.
pub const NOT_FOUND_GRACE_MS: u64 = 10_000;
