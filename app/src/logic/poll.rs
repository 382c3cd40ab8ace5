//! The polling policy, as data: how often a running job is read, how failures back
//! off (one backoff shared by every job, since they share the connection and the
//! server), what `Retry-After` does, and which answers are final. Only the server
//! decides a job failed: a FAILED status or a 404; anything else that goes wrong
//! (5xx, 429, a timeout, being offline) is "connection lost", and polling goes on.
//!
//! A running job is read with a *held* read (`status?wait=25&seen=…`): the server
//! answers when its status changes, so a finished job shows with no poll loop. At most
//! [`MAX_HELD`] are held at once (over HTTP/1.1 a browser has 6 connections per origin,
//! and the app's other requests need theirs); the other running jobs are polled on
//! [`interval_ms`] until a slot is free. While reads fail, nothing is held: plain
//! reads probe on the shared backoff.

/// What one read of a job's status or result came to.
#[derive(Debug, Clone, PartialEq)]
pub enum Read {
    /// An answer (running, done, or failed as decided by the server).
    Answer,
    /// The server says the job does not exist (404): final.
    Gone,
    /// No usable answer: retry later, no sooner than `retry_after_ms` if given.
    Transient { retry_after_ms: Option<f64> },
}

/// Whether an HTTP status means "try again later" rather than a verdict on the job.
/// 408, 425, 429 and every 5xx are transient; so is any other code except 404, for
/// a status read (e.g. a 401 after the key changed must not mark a paid job failed).
pub fn classify(http_status: u16, retry_after_ms: Option<f64>) -> Read {
    match http_status {
        200..=299 | 422 => Read::Answer,
        404 | 410 => Read::Gone,
        _ => Read::Transient { retry_after_ms },
    }
}

/// `Retry-After` in ms: delta-seconds only (dates are not sent by this API).
pub fn retry_after_ms(header: Option<&str>) -> Option<f64> {
    let secs = parallax_api::num::parse(header?.trim())?;
    (secs.is_finite() && secs >= 0.0).then(|| (secs * 1000.0).min(MAX_BACKOFF_MS * 4.0))
}

/// Time between reads of a running job, by its age: quick at first, then every 3 s
/// so a long job costs few requests.
pub fn interval_ms(age_ms: f64) -> f64 {
    if age_ms < 5_000.0 {
        1_000.0
    } else if age_ms < 30_000.0 {
        2_000.0
    } else {
        3_000.0
    }
}

/// The longest wait between retries after failures.
pub const MAX_BACKOFF_MS: f64 = 15_000.0;

/// The shared backoff: failures in a row, and no read before `not_before_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Backoff {
    pub failures: u32,
    pub not_before_ms: f64,
}

impl Backoff {
    /// Wait after `failures` failures in a row: 1 s, 2 s, 4 s, 8 s, then 15 s.
    pub fn delay_ms(failures: u32) -> f64 {
        if failures == 0 {
            0.0
        } else {
            (1_000.0 * 2f64.powi(failures.min(8) as i32 - 1)).min(MAX_BACKOFF_MS)
        }
    }

    /// A read answered: back to the normal cadence.
    pub fn succeeded(&mut self) {
        self.failures = 0;
        self.not_before_ms = 0.0;
    }

    /// A read failed at `now_ms`; the server's `Retry-After`, when longer, wins.
    pub fn failed(&mut self, now_ms: f64, retry_after_ms: Option<f64>) {
        self.failures = self.failures.saturating_add(1);
        let wait = Self::delay_ms(self.failures).max(retry_after_ms.unwrap_or(0.0));
        self.not_before_ms = self.not_before_ms.max(now_ms + wait);
    }

    /// The network is back (`online`, the tab shown again): try at once, keeping the
    /// failure count so a still-broken server keeps backing off. A server's
    /// `Retry-After` is still honoured.
    pub fn wake(&mut self, now_ms: f64, retry_after_until_ms: f64) {
        self.not_before_ms = retry_after_until_ms.max(now_ms.min(self.not_before_ms));
    }

    pub fn ready(&self, now_ms: f64) -> bool {
        now_ms >= self.not_before_ms
    }

    /// Whether reads are failing now (cards show "Connection lost — retrying").
    pub fn lost(&self) -> bool {
        self.failures > 0
    }
}

/// When a job should next be read: `interval_ms` after its last read, and never
/// before the shared backoff allows.
pub fn next_read_ms(last_read_ms: f64, age_ms: f64, backoff: &Backoff) -> f64 {
    (last_read_ms + interval_ms(age_ms)).max(backoff.not_before_ms)
}

/// How long the server holds a read (`wait`, seconds).
pub const WAIT_SECS: u32 = 25;

/// Held reads at once, at most (the rest of the running jobs are polled).
pub const MAX_HELD: usize = 2;

/// How long a held read may take before it counts as lost: the hold, plus the
/// normal allowance for an answer.
pub const HELD_TIMEOUT_MS: i32 = WAIT_SECS as i32 * 1000 + 15_000;

/// The last read of a job.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LastRead {
    /// When it was sent.
    pub started_ms: f64,
    /// It was held and answered a status other than the one it had seen: the job
    /// moved on, and the next held read waits for the step after.
    pub moved_on: bool,
}

/// When a job should next be read: at once if never read or if a held read saw it
/// move on; else [`next_read_ms`] from when its last read was *sent*, so a held read
/// that ran out is followed at once by the next, while a server that answers at once
/// (no hold) is polled on the normal cadence, never in a loop.
pub fn due_ms(last: Option<LastRead>, age_ms: f64, backoff: &Backoff) -> f64 {
    match last {
        Some(l) if !l.moved_on => next_read_ms(l.started_ms, age_ms, backoff),
        _ => backoff.not_before_ms,
    }
}

/// Whether a due running job is read held, with `held_now` reads held already.
pub fn may_hold(held_now: usize, backoff: &Backoff) -> bool {
    held_now < MAX_HELD && !backoff.lost()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_404_or_an_answer_is_a_verdict() {
        assert_eq!(classify(200, None), Read::Answer);
        assert_eq!(classify(422, None), Read::Answer, "FAILED status body");
        assert_eq!(classify(404, None), Read::Gone);
        for code in [500, 502, 503, 504, 429, 408, 401, 0] {
            assert!(
                matches!(classify(code, None), Read::Transient { .. }),
                "{code}"
            );
        }
    }

    #[test]
    fn failures_back_off_exponentially_to_a_cap_and_reset_on_success() {
        let mut b = Backoff::default();
        assert!(b.ready(0.0) && !b.lost());
        b.failed(1_000.0, None);
        assert_eq!(b.not_before_ms, 2_000.0);
        assert!(b.lost() && !b.ready(1_999.0) && b.ready(2_000.0));
        b.failed(2_000.0, None);
        assert_eq!(b.not_before_ms, 4_000.0);
        for _ in 0..10 {
            b.failed(4_000.0, None);
        }
        assert_eq!(b.not_before_ms, 4_000.0 + MAX_BACKOFF_MS);
        b.succeeded();
        assert_eq!(b, Backoff::default());
    }

    #[test]
    fn retry_after_is_honoured_when_longer_and_survives_a_wake() {
        let mut b = Backoff::default();
        let ra = retry_after_ms(Some("30"));
        assert_eq!(ra, Some(30_000.0));
        b.failed(0.0, ra);
        assert_eq!(b.not_before_ms, 30_000.0);
        b.wake(1_000.0, 30_000.0);
        assert!(!b.ready(1_000.0), "Retry-After still holds");
        let mut b = Backoff::default();
        b.failed(0.0, Some(100.0));
        assert_eq!(b.not_before_ms, 1_000.0, "our own backoff is longer");
        assert_eq!(retry_after_ms(Some("soon")), None);
        assert_eq!(retry_after_ms(None), None);
    }

    #[test]
    fn coming_back_online_retries_at_once_but_keeps_counting() {
        let mut b = Backoff::default();
        for _ in 0..4 {
            b.failed(0.0, None);
        }
        assert!(!b.ready(100.0));
        b.wake(100.0, 0.0);
        assert!(b.ready(100.0));
        b.failed(100.0, None);
        assert_eq!(
            b.not_before_ms,
            100.0 + 15_000.0,
            "still failing: long wait"
        );
    }

    #[test]
    fn a_held_read_is_followed_at_once_by_the_next_but_a_quick_answer_is_not() {
        let b = Backoff::default();
        assert_eq!(due_ms(None, 0.0, &b), 0.0, "never read: at once");
        let held = |started_ms, moved_on| {
            Some(LastRead {
                started_ms,
                moved_on,
            })
        };
        // Held 25 s and ran out: the next held read is due already.
        assert!(due_ms(held(1_000.0, false), 26_000.0, &b) <= 26_000.0);
        // It saw QUEUED become PROCESSING: read again at once for the next step.
        assert_eq!(due_ms(held(1_000.0, true), 1_200.0, &b), 0.0);
        // A server that ignores `wait` answers at once, unchanged: normal cadence.
        assert_eq!(due_ms(held(1_000.0, false), 1_000.0, &b), 2_000.0);
        // The shared backoff still rules.
        let mut lost = Backoff::default();
        lost.failed(1_000.0, Some(30_000.0));
        assert_eq!(due_ms(held(1_000.0, true), 1_200.0, &lost), 31_000.0);
        assert_eq!(due_ms(None, 0.0, &lost), 31_000.0);
    }

    #[test]
    fn only_a_few_reads_are_held_and_none_while_reads_fail() {
        let b = Backoff::default();
        assert!(may_hold(0, &b));
        assert!(may_hold(MAX_HELD - 1, &b));
        assert!(!may_hold(MAX_HELD, &b), "the rest are polled");
        // Leaves most of the browser's 6 connections per origin to everything else.
        const { assert!(MAX_HELD <= 3) };
        let mut lost = Backoff::default();
        lost.failed(0.0, None);
        assert!(!may_hold(0, &lost), "plain reads probe a failing server");
        // A full hold is not a timeout.
        const { assert!(HELD_TIMEOUT_MS > WAIT_SECS as i32 * 1000) };
    }

    #[test]
    fn running_jobs_are_read_quickly_at_first_then_every_3_s() {
        let b = Backoff::default();
        assert_eq!(next_read_ms(10_000.0, 1_000.0, &b), 11_000.0);
        assert_eq!(next_read_ms(10_000.0, 10_000.0, &b), 12_000.0);
        assert_eq!(next_read_ms(10_000.0, 100_000.0, &b), 13_000.0);
        let mut b = Backoff::default();
        b.failed(10_000.0, Some(20_000.0));
        assert_eq!(next_read_ms(10_000.0, 1_000.0, &b), 30_000.0);
    }
}
