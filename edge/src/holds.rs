//! Caps on held reads (`status?wait=N`) and event streams, so no job, key or client
//! address can pin an unbounded number of requests open.
//!
//! Two places count, each where the thing it caps is already seen whole:
//! - **per job**, the job's `JobRunner` (every hold of a job waits in that one object,
//!   so its own [`crate::waiters::Waiters`] are the exact count; nothing to persist);
//! - **per account** (an API key, or a client address without one), the account's
//!   `Ledger`, which every read already calls to be counted against the read rate
//!   limit: a hold is a lease taken in that same call ([`Leases`]), in memory like the
//!   rate windows, and given back when the hold ends. A lease also lapses by itself at
//!   the end of its hold plus a margin, so a Worker that dies mid-hold (its give-back
//!   lost) blocks nothing for long. An evicted Ledger forgets its leases, which only
//!   errs towards letting a hold through, as for the rate windows.
//!
//! A read beyond either cap is not refused: it is answered at once with the job as it
//! is, marked [`NOT_HELD_HEADER`]; a stream beyond a cap ends, and its client
//! reconnects after [`STREAM_RETRY_MS`].

use std::collections::HashMap;

/// Most reads held at once on one job (its runner's waiters).
pub const PER_JOB: usize = 8;
/// Most reads held at once per account, unless `HELD_READS_PER_ACCOUNT` says otherwise.
/// The studio holds at most a few per tab (`app/src/logic/poll.rs`).
pub const PER_ACCOUNT: u32 = 16;
/// How long past its hold a lease lives when it is not given back.
pub const LEASE_MARGIN_MS: u64 = 5_000;
/// Set (to `no`) on a read that asked to be held and was answered at once instead.
pub const NOT_HELD_HEADER: &str = "x-parallax-held";
/// The `retry:` an ended stream gives its `EventSource` (milliseconds).
pub const STREAM_RETRY_MS: u64 = 3_000;
/// Longest life of one event stream unless `STREAM_MAX_SECS` says otherwise: then it
/// ends, and its client reconnects (an `EventSource` does by itself).
pub const STREAM_MAX_SECS: u64 = 300;

/// The live leases of one account: lease id → when it lapses (Unix ms).
#[derive(Debug, Default)]
pub struct Leases(HashMap<String, u64>);

impl Leases {
    /// Takes a lease `id` until `until_ms`, unless `max` are live at `now_ms`.
    pub fn take(&mut self, id: &str, until_ms: u64, max: u32, now_ms: u64) -> bool {
        self.0.retain(|_, until| *until > now_ms);
        let live = u32::try_from(self.0.len()).unwrap_or(u32::MAX);
        if live >= max && !self.0.contains_key(id) {
            return false;
        }
        self.0.insert(id.to_owned(), until_ms);
        true
    }

    /// Gives a lease back (its hold ended).
    pub fn give_back(&mut self, id: &str) {
        self.0.remove(id);
    }
}

/// How long the next hold of a stream opened at `opened_ms` may last at `now_ms`
/// (seconds, at most `max_wait`): `None` once its life (`max_secs`) is over.
pub fn stream_hold_secs(opened_ms: u64, now_ms: u64, max_secs: u64, max_wait: u32) -> Option<u32> {
    let left_ms = (opened_ms + max_secs * 1000).saturating_sub(now_ms);
    let left = u32::try_from(left_ms / 1000).unwrap_or(u32::MAX);
    (left > 0).then(|| left.min(max_wait))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_cap_concurrent_holds_and_free_on_give_back_or_lapse() {
        let mut l = Leases::default();
        assert!(l.take("a", 10_000, 2, 0));
        assert!(l.take("b", 20_000, 2, 0));
        assert!(!l.take("c", 30_000, 2, 0), "two live: a third is not held");
        l.give_back("a");
        assert!(l.take("c", 30_000, 2, 1), "a was given back");
        assert!(!l.take("d", 30_000, 2, 1));
        assert!(l.take("d", 30_000, 2, 20_000), "b lapsed at its end");
    }

    #[test]
    fn a_streams_holds_shrink_to_its_remaining_life() {
        assert_eq!(stream_hold_secs(0, 0, 300, 30), Some(30));
        assert_eq!(stream_hold_secs(0, 290_000, 300, 30), Some(10));
        assert_eq!(stream_hold_secs(0, 299_500, 300, 30), None);
        assert_eq!(stream_hold_secs(0, 400_000, 300, 30), None);
    }
}
