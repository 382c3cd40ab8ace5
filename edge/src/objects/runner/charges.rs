//! What a job costs its owner: cancels, refunds (decided once), the settlement the
//! Ledger records, and the upstream cancels owed before a purge.

use parallax_api::{JobStatus, Settlement};

use super::record::*;
use crate::providers::{CancelOutcome, Submitted, UpstreamError};

impl JobRecord {
    /// The owner's cancel. Refunded in full at once if nothing was sent upstream;
    /// after an upstream cancel that the provider confirms as a stop; otherwise not.
    pub fn cancel(&mut self, now_ms: u64) -> CancelVerdict {
        if self.status.is_terminal() {
            return CancelVerdict::AlreadyFinished;
        }
        self.fail(FailureKind::Canceled, "Canceled by its owner", now_ms);
        if self.upstream.is_none() && self.submitting.is_none() {
            self.decide_refund(self.ownership.charged, now_ms);
        }
        CancelVerdict::Canceled
    }

    /// What a cancel sent now would refund (only while the job runs).
    pub fn refund_on_cancel(&self) -> Option<u64> {
        if self.status.is_terminal() {
            None
        } else if self.upstream.is_none() && self.submitting.is_none() {
            Some(self.ownership.charged)
        } else {
            Some(0)
        }
    }

    /// Sets the refund once (later decisions are ignored) and queues its settlement
    /// with the Ledger, whatever the amount (0 too: the Ledger records every job's end).
    pub(super) fn decide_refund(&mut self, credits: u64, now_ms: u64) {
        if self.refund.is_some() {
            return;
        }
        let credits = credits.min(self.ownership.charged);
        self.refund = Some(credits);
        self.outbox.refund = Some(Retry::now(now_ms));
    }

    /// What a decision still under way may refund on top of `refund`: the whole charge
    /// while a finished job's refund is undecided (an upstream cancel or a submit whose
    /// answer decides it is out), else nothing. So an answer never says "refunded: 0"
    /// for a refund that is still to come.
    pub fn refund_pending(&self) -> Option<u64> {
        (self.status.is_terminal() && self.refund.is_none()).then_some(self.ownership.charged)
    }

    /// Why the job ended, as its settlement tells the Ledger.
    pub fn settlement(&self) -> Settlement {
        match (self.status, self.failure) {
            (JobStatus::Completed, _) if self.refund.unwrap_or(0) > 0 => Settlement::ShortOfOutputs,
            (JobStatus::Completed, _) => Settlement::Completed,
            (_, Some(FailureKind::Canceled)) => Settlement::Canceled,
            _ => Settlement::Failed,
        }
    }

    pub(super) fn order_cancel(&mut self, sub: Submitted, refund_if_stopped: bool, now_ms: u64) {
        if self
            .outbox
            .cancels
            .iter()
            .any(|c| c.sub.upstream_id == sub.upstream_id)
        {
            return;
        }
        self.outbox.cancels.push(CancelOrder {
            provider: self.provider.clone(),
            sub,
            refund_if_stopped,
            retry: Retry::now(now_ms),
        });
    }

    /// Whether the purge may run: it is due, and nothing else is owed — the refund is
    /// decided and given, no upstream cancel is pending, and no submit attempt is out
    /// (its outcome decides the refund and may need a cancel; neither may be lost
    /// with the record).
    pub fn purge_ready(&self, now_ms: u64) -> bool {
        self.outbox.purge.is_some_and(|p| p.is_due(now_ms)) && self.nothing_owed()
    }

    /// Nothing the purge would lose: the refund decided and acknowledged, no upstream
    /// cancel pending, no submit attempt out.
    pub(super) fn nothing_owed(&self) -> bool {
        self.refund.is_some()
            && self.outbox.refund.is_none()
            && self.outbox.cancels.is_empty()
            && self.submitting.is_none()
    }

    /// An upstream cancel was answered (or given up): dropped from the outbox; for the
    /// owner's cancel, a confirmed stop refunds in full and anything else refunds
    /// nothing.
    pub fn cancel_outcome(
        &mut self,
        upstream_id: &str,
        outcome: Result<CancelOutcome, UpstreamError>,
        now_ms: u64,
        jitter: f64,
    ) {
        let Some(i) = self
            .outbox
            .cancels
            .iter()
            .position(|c| c.sub.upstream_id == upstream_id)
        else {
            // Already settled by another send of the same cancel. Merged monotonically:
            // a confirmed stop beats the "requested" answer that settled it (the 409
            // of a second send can arrive first).
            if outcome == Ok(CancelOutcome::Stopped)
                && self.refund_withheld_for.as_deref() == Some(upstream_id)
                && self.refund == Some(0)
            {
                self.refund_withheld_for = None;
                self.refund = None;
                self.decide_refund(self.ownership.charged, now_ms);
            }
            return;
        };
        let outcome = match outcome {
            Ok(o) => o,
            Err(_) if self.outbox.cancels[i].retry.tries + 1 < CANCEL_MAX_TRIES => {
                self.outbox.cancels[i].retry.failed(now_ms, jitter);
                return;
            }
            // Given up: the upstream ends the job on its own, and it may have run.
            Err(_) => CancelOutcome::Requested,
        };
        let order = self.outbox.cancels.remove(i);
        if order.refund_if_stopped {
            let stopped = outcome == CancelOutcome::Stopped;
            if !stopped && self.refund.is_none() {
                self.refund_withheld_for = Some(upstream_id.to_owned());
            }
            self.decide_refund(if stopped { self.ownership.charged } else { 0 }, now_ms);
        }
    }
}
