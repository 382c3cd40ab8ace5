//! Submit attempts and their outcomes: failover, retries, ambiguous answers, lost
//! attempts, and what a poll's answer does to the record.

use super::record::*;
use super::schedule::*;
use crate::providers::{Submitted, UpstreamError, UpstreamState};

impl JobRecord {
    /// The upstream accepted the job.
    pub fn submitted(&mut self, sub: Submitted, now_ms: u64) {
        self.submitting = None;
        // A provider that calls back is polled only as a backstop; any other is
        // looked at at once.
        let first = sub.backstop_ms.unwrap_or(0);
        self.upstream = Some(sub);
        self.submitted_ms = Some(now_ms);
        self.polls = 0;
        self.last_running_ms = None;
        self.next_step_ms = Some(now_ms + first);
        self.round_failures.clear();
        self.round_transient = false;
    }

    /// The provider's recent finish times for this model, learned before the submit
    /// the upstream just accepted: the first look moves to the first of them (or to
    /// the budget's idle look when they are all far off).
    pub fn expect_finishes(&mut self, expected: Vec<u32>, now_ms: u64, budget: PollBudget) {
        // A provider that calls back is polled on the backstop only.
        let backstop = self
            .upstream
            .as_ref()
            .is_none_or(|u| u.backstop_ms.is_some());
        if backstop || self.polls > 0 || expected.is_empty() {
            return;
        }
        self.expected_ms = expected;
        self.next_step_ms = Some(now_ms + self.poll_delay_ms(now_ms, budget));
    }

    /// Starts submit attempt `n + 1` to the current candidate (persist before sending).
    pub fn begin_submit(&mut self, now_ms: u64) -> Attempt {
        self.attempts = self.attempts.saturating_add(1);
        let attempt = Attempt {
            n: self.attempts,
            provider: self.provider.clone(),
            started_ms: now_ms,
            ambiguous: false,
        };
        self.submitting = Some(attempt.clone());
        attempt
    }

    /// Applies the outcome of submit `attempt` to the record as it is now (it may have
    /// been canceled, or the attempt superseded, while the POST was under way). An
    /// upstream job nobody wants any more is ordered canceled.
    pub fn submit_outcome(
        &mut self,
        attempt: &Attempt,
        outcome: Result<Submitted, UpstreamError>,
        now_ms: u64,
        jitter: f64,
    ) -> FailoverStep {
        if self.submitting.as_ref().map(|a| a.n) != Some(attempt.n) {
            // Superseded: this record no longer waits for that attempt.
            if let Ok(sub) = outcome {
                let provider = std::mem::replace(&mut self.provider, attempt.provider.clone());
                self.order_cancel(sub, false, now_ms);
                self.provider = provider;
            }
            return FailoverStep::Failed;
        }
        if let Err(UpstreamError::Ambiguous { reason }) = &outcome {
            return self.submit_ambiguous(attempt, reason.clone(), now_ms);
        }
        self.submitting = None;
        self.outbox.resolve_submit = None;
        if self.status.is_terminal() {
            // Canceled while the POST was under way.
            match outcome {
                Ok(sub) => {
                    self.upstream = Some(sub.clone());
                    self.submitted_ms = Some(now_ms);
                    let refund_if_stopped = self.failure == Some(FailureKind::Canceled);
                    self.order_cancel(sub, refund_if_stopped, now_ms);
                    self.outbox.drop_outputs = Some(Retry::now(now_ms));
                }
                // The upstream is still starting it: it may run, and without its id
                // it cannot be stopped from here, so nothing comes back.
                Err(UpstreamError::InProgress { .. }) => self.decide_refund(0, now_ms),
                // Nothing was accepted upstream: nothing spent.
                Err(_) => self.decide_refund(self.ownership.charged, now_ms),
            }
            return FailoverStep::Failed;
        }
        match outcome {
            Ok(sub) => {
                self.submitted(sub, now_ms);
                FailoverStep::Now
            }
            Err(e) => self.submit_failed(e, now_ms, jitter),
        }
    }

    /// A submit whose answer never came whole, at a provider that cannot be asked
    /// about it (the runner asked where it can: `Adapter::lookup`, or a Parallax
    /// upstream's idempotent resubmit). It may run there: the job is not failed over
    /// (that could pay for it twice) and waits, the attempt kept, until its deadline
    /// decides it; a cancel meanwhile leaves the refund undecided until then.
    pub(super) fn submit_ambiguous(
        &mut self,
        attempt: &Attempt,
        reason: String,
        now_ms: u64,
    ) -> FailoverStep {
        self.submitting = Some(Attempt {
            ambiguous: true,
            ..attempt.clone()
        });
        if self.status.is_terminal() {
            // Canceled while the POST was out: resolved by a lookup or a replay where
            // the provider allows one, else at the deadline (`lost_submit_after_cancel`).
            self.outbox.resolve_submit = Some(Retry {
                tries: 0,
                next_ms: now_ms + RESOLVE_SUBMIT_AFTER_MS,
            });
            return FailoverStep::Failed;
        }
        self.mark_processing(now_ms);
        self.last_problem = Some(format!(
            "{}: {reason}; the job waits for its deadline to tell",
            attempt.provider
        ));
        let wait = self.deadline_ms.saturating_sub(now_ms);
        self.next_step_ms = Some(now_ms + wait);
        FailoverStep::After(wait)
    }

    /// A finished job whose submit outcome was lost (the object was reset mid-POST)
    /// and cannot be looked up: it may be running upstream, so nothing is refunded.
    /// One whose submit was ambiguous is decided at the job's deadline: the owner got
    /// nothing, so the whole charge comes back (the upstream run it may have cost is
    /// ours: `docs/reliability.md`).
    pub fn lost_submit_after_cancel(&mut self, now_ms: u64) {
        if self.submitting.as_ref().is_some_and(|a| a.ambiguous) && now_ms < self.deadline_ms {
            self.outbox.resolve_submit = Some(Retry {
                tries: 0,
                next_ms: self.deadline_ms,
            });
            return;
        }
        if self.status.is_terminal()
            && let Some(attempt) = self.submitting.take()
        {
            self.outbox.resolve_submit = None;
            let refund = if attempt.ambiguous {
                self.ownership.charged
            } else {
                0
            };
            self.decide_refund(refund, now_ms);
        }
    }

    /// Whether a lost submit attempt of a finished job is due to be resolved (looked
    /// up, or decided as spent). Records from before `resolve_submit` existed are due
    /// at once.
    pub fn lost_submit_due(&self, now_ms: u64) -> bool {
        self.status.is_terminal()
            && self.submitting.is_some()
            && self.outbox.resolve_submit.is_none_or(|r| r.is_due(now_ms))
    }

    /// The lookup of a lost submit attempt failed: try again later, and after
    /// [`RESOLVE_SUBMIT_MAX_TRIES`] decide it as spent (it may have run).
    pub fn lost_submit_lookup_failed(&mut self, now_ms: u64, jitter: f64) {
        if !self.status.is_terminal() || self.submitting.is_none() {
            return;
        }
        let retry = self.outbox.resolve_submit.get_or_insert(Retry::now(now_ms));
        retry.failed(now_ms, jitter);
        if retry.tries >= RESOLVE_SUBMIT_MAX_TRIES {
            self.lost_submit_after_cancel(now_ms);
        }
    }

    /// Applies a poll's answer to the record as it is now; ignored unless the job still
    /// runs on the same upstream job. `past_deadline`: this was the last look.
    pub fn poll_outcome(
        &mut self,
        upstream_id: &str,
        outcome: Result<UpstreamState, UpstreamError>,
        now_ms: u64,
        budget: PollBudget,
        jitter: f64,
        past_deadline: bool,
    ) {
        if !self.runs_on(upstream_id) {
            return;
        }
        self.polled();
        let young = self
            .submitted_ms
            .is_some_and(|s| now_ms.saturating_sub(s) < NOT_FOUND_GRACE_MS);
        let outcome = match outcome {
            Err(UpstreamError::Permanent(reason)) if young => Err(UpstreamError::Transient {
                reason: format!("{reason} (just after submit: treated as a lag)"),
                retry_after: None,
            }),
            other => other,
        };
        match outcome {
            Ok(UpstreamState::Queued) => {
                self.retries = 0;
                self.next_step_ms = Some(now_ms + self.poll_gap_ms(now_ms, budget));
            }
            Ok(UpstreamState::Processing) => {
                self.retries = 0;
                self.mark_processing(now_ms);
                self.next_step_ms = Some(now_ms + self.poll_gap_ms(now_ms, budget));
            }
            Ok(UpstreamState::Failed(reason)) => {
                self.fail(FailureKind::Rejected, reason, now_ms);
            }
            Ok(UpstreamState::Completed(_)) => {
                // Completed with outputs is applied by `complete` after the downloads;
                // without outputs it is a provider glitch worth another look.
                self.transient(
                    format!("{} reported COMPLETED without outputs", self.provider),
                    None,
                    now_ms,
                    jitter,
                );
            }
            Err(UpstreamError::Transient {
                reason,
                retry_after,
            }) => self.transient(reason, retry_after, now_ms, jitter),
            Err(UpstreamError::InProgress {
                reason,
                retry_after,
            }) => self.transient(reason, Some(retry_after), now_ms, jitter),
            Err(UpstreamError::Ambiguous { reason }) => {
                self.transient(reason, None, now_ms, jitter)
            }
            Err(UpstreamError::Permanent(reason)) => {
                let reason = format!("{}: {reason}", self.provider);
                self.fail(FailureKind::Upstream, reason, now_ms);
            }
        }
        // A retry after a transient answer keeps to the budget too: its backoff alone
        // would look again at 1, 2 and 4 s just after the submit.
        if !self.status.is_terminal()
            && let (Some(next), Some(since)) = (self.next_step_ms, self.submitted_ms)
        {
            self.next_step_ms = Some(next.max(since + budget.earliest_ms(self.polls)));
        }
        if past_deadline {
            self.time_out(now_ms);
        }
    }

    /// A transient problem: retry after backoff.
    pub fn transient(
        &mut self,
        reason: String,
        retry_after: Option<u64>,
        now_ms: u64,
        jitter: f64,
    ) {
        let delay = self.retry_delay_ms(retry_after, jitter);
        self.retries += 1;
        self.last_problem = Some(reason);
        self.next_step_ms = Some(now_ms + delay);
    }

    /// A provider refused (or could not take) the submit: fail over to the next
    /// candidate at once; after a full round, retry later if any refusal was
    /// transient, else fail with every provider's reason.
    pub fn submit_failed(
        &mut self,
        error: UpstreamError,
        now_ms: u64,
        jitter: f64,
    ) -> FailoverStep {
        let (reason, transient, retry_after) = match error {
            UpstreamError::Transient {
                reason,
                retry_after,
            } => (reason, true, retry_after),
            UpstreamError::Permanent(reason) => (reason, false, None),
            // Only through `submit_outcome`, which keeps such an attempt; a caller that
            // comes here directly has decided it was not accepted.
            UpstreamError::Ambiguous { reason } => (reason, true, None),
            // Not a failure, and never a reason to go elsewhere (the job may run
            // there): the same upstream again after its Retry-After.
            UpstreamError::InProgress {
                reason,
                retry_after,
            } => {
                self.last_problem = Some(reason);
                let delay = retry_after.saturating_mul(1000).max(250);
                self.next_step_ms = Some(now_ms + delay);
                return FailoverStep::After(delay);
            }
        };
        self.round_failures
            .push(format!("{}: {reason}", self.provider));
        self.round_transient |= transient;
        self.last_problem = Some(reason);
        if self.candidate + 1 < self.candidates.len() {
            self.candidate += 1;
            self.provider = self.candidates[self.candidate].clone();
            self.next_step_ms = Some(now_ms);
            return FailoverStep::Now;
        }
        if !self.round_transient {
            let reason = format!(
                "Every provider refused the job ({})",
                self.round_failures.join("; ")
            );
            self.fail(FailureKind::Upstream, reason, now_ms);
            return FailoverStep::Failed;
        }
        let delay = self.retry_delay_ms(retry_after, jitter);
        self.retries += 1;
        self.candidate = 0;
        self.provider = self.candidates.first().cloned().unwrap_or_default();
        self.round_failures.clear();
        self.round_transient = false;
        self.next_step_ms = Some(now_ms + delay);
        FailoverStep::After(delay)
    }

    /// Delay after a transient failure: exponential from 1 s, capped at 60 s, with
    /// jitter in 0..=25 %; an upstream's `Retry-After` wins when longer.
    pub fn retry_delay_ms(&self, retry_after_secs: Option<u64>, jitter: f64) -> u64 {
        let exp = 1000u64.saturating_mul(1 << self.retries.min(6)).min(60_000);
        let jittered = exp + (exp as f64 * 0.25 * jitter.clamp(0.0, 1.0)) as u64;
        jittered.max(retry_after_secs.unwrap_or(0) * 1000)
    }
}
