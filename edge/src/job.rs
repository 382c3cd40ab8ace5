//! A job's record, owned by its `JobRunner` Durable Object, and the pure rules of its
//! life: state changes, backoff, deadline, and how it looks on the wire.

use parallax_api::{
    Credits, ErrorCode, JobResult, JobStatus, Metrics, Model, OutputImage, Params, RequestId,
    Settlement, StatusResponse,
};
use serde::{Deserialize, Serialize};

use crate::input::image::ImageInfo;
use crate::providers::{CancelOutcome, Submitted, UpstreamError, UpstreamState};
use crate::storage::keys;

/// One stored output image: its format and exact size, recorded when the runner
/// copied it into R2 (every record since the first carries `content_type` and
/// `bytes`, so a result's `images` never needs R2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredOutput {
    pub ext: String,
    pub content_type: String,
    pub bytes: u64,
    #[serde(default)]
    pub width: u32,
    #[serde(default)]
    pub height: u32,
}

/// Why a job failed; decides how the sync API answers (422, 502 or 504).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The model refused or failed the job (moderation, unusable input).
    Rejected,
    /// The provider could not be used (misconfigured, gone, answered nonsense).
    Upstream,
    /// The deadline passed.
    Timeout,
    /// Its owner canceled it.
    Canceled,
}

/// Who submitted a job, what it was charged, and when it is purged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ownership {
    /// The account's name (see `accounts::AccountName`).
    pub owner: String,
    /// Credits reserved at submit (refunded if the job fails).
    pub charged: u64,
    /// How long after finishing the job and its images are kept.
    pub retention_secs: u64,
}

/// Everything the runner knows about a job. Times are Unix milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    pub id: RequestId,
    pub model: Model,
    pub params: Params,
    pub input: ImageInfo,
    pub ownership: Ownership,
    pub status: JobStatus,
    pub error: Option<String>,
    pub failure: Option<FailureKind>,
    /// When a finished job is purged; `None` while it runs.
    pub expires_ms: Option<u64>,
    pub created_ms: u64,
    pub started_ms: Option<u64>,
    pub finished_ms: Option<u64>,
    pub deadline_ms: u64,
    /// The provider serving the job (the one it was submitted to), or the one being
    /// tried.
    pub provider: String,
    /// Providers to try, in order (those of the model's route that can honour the job).
    pub candidates: Vec<String>,
    /// Index into `candidates` of the one being tried.
    pub candidate: usize,
    /// Why each provider of the current round refused the submit.
    pub round_failures: Vec<String>,
    /// Whether any refusal of this round is worth retrying.
    pub round_transient: bool,
    pub upstream: Option<Submitted>,
    /// Consecutive transient failures, for backoff.
    pub retries: u32,
    /// The last transient problem, reported if the deadline passes.
    pub last_problem: Option<String>,
    pub outputs: Vec<StoredOutput>,
    /// When the current upstream accepted the job, and how often it was polled since:
    /// the poll schedule's budget.
    #[serde(default)]
    pub submitted_ms: Option<u64>,
    #[serde(default)]
    pub polls: u32,
    /// When the current provider's jobs of this model finished lately (ms after its
    /// submit, ascending; [`crate::finish_times`]): the poll schedule looks around them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expected_ms: Vec<u32>,
    /// When the last poll that found the current upstream job still running was sent
    /// (the provider saw it running after that).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_running_ms: Option<u64>,
    /// The upstream submit under way: persisted before the POST, cleared in the same
    /// write that records its outcome. Found set at the start of a step, it is a submit
    /// whose outcome was lost (the object was reset between the POST and our write).
    #[serde(default)]
    pub submitting: Option<Attempt>,
    /// Submits started so far (numbers the attempts).
    #[serde(default)]
    pub attempts: u32,
    /// When the next upstream step (submit or poll) is due; `None` once finished.
    #[serde(default)]
    pub next_step_ms: Option<u64>,
    /// The refund decided for this job (`Some(0)`: none is owed); `None` while it cannot
    /// be known yet (running, or canceled while the upstream's answer is pending).
    #[serde(default)]
    pub refund: Option<u64>,
    /// Effects this record has decided and that are not yet acknowledged.
    #[serde(default)]
    pub outbox: Outbox,
    /// `DELETE`d: served as unknown, purged as soon as the outbox allows.
    #[serde(default)]
    pub deleted: bool,
    /// The provider's own words on a failure: for logs and operators, never served.
    #[serde(default)]
    pub detail: Option<String>,
    /// The upstream job whose cancel answer (not a confirmed stop) decided the owner's
    /// cancel refunds nothing. A confirmed stop answered later for it (two sends of
    /// the same cancel raced) still refunds: `Stopped` wins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refund_withheld_for: Option<String>,
    /// The model the client asked for, when an operator fallback serves the job with
    /// `model` instead (`fallback.rs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asked_model: Option<Model>,
    /// Upstream callbacks accepted so far (`hooks.rs`). A step that began before one
    /// arrived looks again when it ends, so no callback is lost to a racing poll.
    #[serde(default)]
    pub hooks: u32,
    /// What its share page shows beside the result (its owner's choice).
    #[serde(default)]
    pub share_control: parallax_api::ShareControl,
}

/// What a verified upstream callback does to a job (`JobRecord::take_hook`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookVerdict {
    /// It runs on that upstream job: poll it now, to confirm.
    Poll,
    /// Its submit's outcome is not recorded yet: the poll after it comes at once.
    Noted,
    /// Already finished: a late callback changes nothing.
    Finished,
    /// About an upstream job this one no longer runs on (failed over, superseded).
    Ignored,
}

/// One upstream submit, recorded before it is sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    pub n: u32,
    pub provider: String,
    pub started_ms: u64,
}

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

/// What the cancel verb found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelVerdict {
    /// The job was running and is now FAILED (canceled).
    Canceled,
    /// The job had already finished; nothing changed.
    AlreadyFinished,
}

/// The runner's `/start` body: the job, and where to deliver it when it ends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Start {
    pub job: JobRecord,
    #[serde(default)]
    pub webhook: Option<crate::webhook::Target>,
}

/// A job whose next due effect is this late has lost its alarm.
pub const STUCK_AFTER_MS: u64 = 30_000;

/// The stable category users see for a failure; the provider's text goes to logs.
pub fn public_error(kind: FailureKind, detail: &str) -> &'static str {
    let d = detail.to_ascii_lowercase();
    match kind {
        FailureKind::Canceled => "Canceled by its owner",
        FailureKind::Timeout => "Timed out: the job did not finish before its deadline",
        FailureKind::Rejected
            if ["moderat", "safety", "nsfw", "flagged"]
                .iter()
                .any(|w| d.contains(w)) =>
        {
            "Rejected by the provider's safety filter (content moderated)"
        }
        FailureKind::Rejected => "The provider could not use the input image or parameters",
        FailureKind::Upstream if d.starts_with("every provider refused") => {
            "No provider accepted the job"
        }
        FailureKind::Upstream => "The provider failed to generate the image",
    }
}

/// What to do after a refused submit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailoverStep {
    /// Try the next provider right away.
    Now,
    /// Start a new round after this many milliseconds.
    After(u64),
    /// Every provider refused for good; the job is FAILED.
    Failed,
}

/// The quick look: the first poll comes this soon after the upstream accepted a job
/// (or at an earlier learned finish), whatever the provider's recent jobs took, so
/// work done at once — a warm self-hosted GPU, a cached result, a small preview — is
/// told at once. Tuned on the bench (`docs/performance.md` § "Short jobs").
pub const QUICK_LOOK_MS: u64 = 250;
/// The longest gap between polls (long jobs are polled every eighth of their age).
pub const POLL_MAX_MS: u64 = 10_000;
/// Looks around expected finishes are at least this far apart.
pub const MIN_LOOK_GAP_MS: u64 = 200;
/// Callbacks that may wake a job's runner for a look; later ones are ignored.
pub const MAX_HOOK_WAKES: u32 = 3;
/// Where the poll schedule looks around each expected finish time, relative to it:
/// at it, then less and less often after it. None before it: an expected finish is
/// learned from the looks just before and after the end, so it sits a little after
/// the usual end, and a look spent early is missing when the job ends.
pub const AROUND_EXPECTED_MS: [u64; 5] = [0, 250, 600, 1_200, 2_500];

/// How many upstream requests polling may spend on a job: one seen finished at `t`
/// costs at most `base + t / every_ms` of them (the submit, every look and a result
/// fetch counted), the quick look aside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PollBudget {
    pub every_ms: u64,
    pub base: u64,
}

impl PollBudget {
    /// `2 + t / every` besides the quick look (so `3 + t / every` in all): two early
    /// looks are cheap (one Durable Object alarm and one provider GET each), so a
    /// short job is seen soon after it ends.
    pub const fn new(every_ms: u64) -> Self {
        Self { every_ms, base: 2 }
    }

    /// `1 + t / every` besides the quick look, for providers whose status reads count
    /// against a per-minute request limit (`docs/performance.md` § "Short jobs").
    pub const fn tight(every_ms: u64) -> Self {
        Self { every_ms, base: 1 }
    }

    /// The earliest age of the next look after `polls` looks: without the quick look,
    /// `polls - 1` looks so far, this one, the submit and a result fetch make
    /// `polls + 2` requests, which `base + age / every` must cover.
    pub fn earliest_ms(self, polls: u32) -> u64 {
        (u64::from(polls) + 2).saturating_sub(self.base) * self.every_ms
    }
}

impl JobRecord {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: RequestId,
        model: Model,
        params: Params,
        input: ImageInfo,
        ownership: Ownership,
        now_ms: u64,
        deadline_secs: u64,
        candidates: Vec<String>,
    ) -> Self {
        Self {
            id,
            model,
            params,
            input,
            ownership,
            status: JobStatus::Queued,
            error: None,
            failure: None,
            expires_ms: None,
            created_ms: now_ms,
            started_ms: None,
            finished_ms: None,
            deadline_ms: now_ms + deadline_secs * 1000,
            provider: candidates.first().cloned().unwrap_or_default(),
            candidates,
            candidate: 0,
            round_failures: Vec::new(),
            round_transient: false,
            upstream: None,
            retries: 0,
            last_problem: None,
            outputs: Vec::new(),
            submitted_ms: None,
            polls: 0,
            expected_ms: Vec::new(),
            last_running_ms: None,
            submitting: None,
            attempts: 0,
            next_step_ms: Some(now_ms),
            refund: None,
            outbox: Outbox::default(),
            deleted: false,
            detail: None,
            refund_withheld_for: None,
            asked_model: None,
            hooks: 0,
            share_control: parallax_api::ShareControl::None,
        }
    }

    pub fn mark_processing(&mut self, now_ms: u64) {
        if self.status == JobStatus::Queued {
            self.status = JobStatus::Processing;
        }
        self.started_ms.get_or_insert(now_ms);
    }

    /// The job ends with `outputs` stored; what was asked for and not delivered is
    /// refunded at the per-image price.
    pub fn complete(&mut self, outputs: Vec<StoredOutput>, now_ms: u64) {
        self.started_ms.get_or_insert(now_ms);
        let requested = self.requested_outputs();
        let short = requested.saturating_sub(outputs.len()) as u64;
        let per_image = self.ownership.charged / requested.max(1) as u64;
        self.outputs = outputs;
        self.status = JobStatus::Completed;
        self.error = None;
        self.decide_refund(short * per_image, now_ms);
        self.finish(now_ms);
    }

    /// How many images the job asked for.
    pub fn requested_outputs(&self) -> usize {
        self.params.num_outputs().max(1)
    }

    /// The job fails for `kind`; `detail` (the provider's words) is kept for logs,
    /// users see a stable category. Anything but the owner's cancel is refunded in
    /// full; an upstream that may still be working is stopped.
    pub fn fail(&mut self, kind: FailureKind, detail: impl Into<String>, now_ms: u64) {
        let detail = detail.into();
        self.status = JobStatus::Failed;
        self.error = Some(public_error(kind, &detail).to_owned());
        self.detail = Some(detail);
        self.failure = Some(kind);
        self.outputs.clear();
        if kind != FailureKind::Canceled {
            self.decide_refund(self.ownership.charged, now_ms);
        }
        if matches!(
            kind,
            FailureKind::Timeout | FailureKind::Upstream | FailureKind::Canceled
        ) && let Some(sub) = self.upstream.clone()
        {
            self.order_cancel(sub, kind == FailureKind::Canceled, now_ms);
        }
        if self.upstream.is_some() {
            self.outbox.drop_outputs = Some(Retry::now(now_ms));
        }
        if self.submitting.is_some() {
            self.outbox.resolve_submit = Some(Retry {
                tries: 0,
                next_ms: now_ms + RESOLVE_SUBMIT_AFTER_MS,
            });
        }
        self.finish(now_ms);
    }

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
    fn decide_refund(&mut self, credits: u64, now_ms: u64) {
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

    fn order_cancel(&mut self, sub: Submitted, refund_if_stopped: bool, now_ms: u64) {
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

    fn finish(&mut self, now_ms: u64) {
        self.finished_ms = Some(now_ms);
        self.next_step_ms = None;
        self.expires_ms = Some(now_ms + self.ownership.retention_secs * 1000);
    }

    /// Whether the retention period is over.
    pub fn is_expired(&self, now_ms: u64) -> bool {
        self.expires_ms.is_some_and(|e| now_ms >= e)
    }

    /// The upstream accepted the job.
    pub fn submitted(&mut self, sub: Submitted, now_ms: u64) {
        self.submitting = None;
        // A provider that calls back is polled only as a backstop.
        let first = sub.backstop_ms.unwrap_or(QUICK_LOOK_MS);
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

    /// A canceled job whose submit outcome was lost (the object was reset mid-POST)
    /// and cannot be looked up: it may be running upstream, so nothing is refunded.
    pub fn lost_submit_after_cancel(&mut self, now_ms: u64) {
        if self.status.is_terminal() && self.submitting.take().is_some() {
            self.outbox.resolve_submit = None;
            self.decide_refund(0, now_ms);
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

    /// Whether the purge may run: it is due, and nothing else is owed — the refund is
    /// decided and given, no upstream cancel is pending, and no submit attempt is out
    /// (its outcome decides the refund and may need a cancel; neither may be lost
    /// with the record).
    pub fn purge_ready(&self, now_ms: u64) -> bool {
        self.outbox.purge.is_some_and(|p| p.is_due(now_ms)) && self.nothing_owed()
    }

    /// Nothing the purge would lose: the refund decided and acknowledged, no upstream
    /// cancel pending, no submit attempt out.
    fn nothing_owed(&self) -> bool {
        self.refund.is_some()
            && self.outbox.refund.is_none()
            && self.outbox.cancels.is_empty()
            && self.submitting.is_none()
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

    /// Whether the job still runs on upstream job `upstream_id`.
    pub fn runs_on(&self, upstream_id: &str) -> bool {
        !self.status.is_terminal()
            && self
                .upstream
                .as_ref()
                .is_some_and(|u| u.upstream_id == upstream_id)
    }

    /// Whether an output of upstream job `upstream_id` just written to R2 may stay:
    /// the job still runs on it, or completed from it (another look stored the same
    /// outputs first) — not canceled, failed, deleted, superseded or purged.
    pub fn owns_outputs_of(&self, upstream_id: &str) -> bool {
        !self.deleted
            && self
                .upstream
                .as_ref()
                .is_some_and(|u| u.upstream_id == upstream_id)
            && (!self.status.is_terminal() || self.status == JobStatus::Completed)
            // A purge under way deletes by prefix: a write that lands now must go too.
            && self.outbox.purge.is_none()
    }

    /// Fails the job at its deadline (after the last poll), unless it just ended.
    pub fn time_out(&mut self, now_ms: u64) {
        if self.status.is_terminal() {
            return;
        }
        let why = self
            .last_problem
            .clone()
            .map(|p| format!(" (last problem: {p})"))
            .unwrap_or_default();
        self.fail(
            FailureKind::Timeout,
            format!("The job did not finish before its deadline{why}"),
            now_ms,
        );
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

    /// The owner deletes the job: canceled first if it runs, then purged as soon as
    /// its refund and upstream cancels are done.
    pub fn delete(&mut self, now_ms: u64) {
        self.cancel(now_ms);
        self.deleted = true;
        self.outbox.purge.get_or_insert(Retry::now(now_ms));
    }

    /// Retention is over: purge (after anything still owed).
    pub fn expire(&mut self, now_ms: u64) {
        if self.is_expired(now_ms) {
            self.outbox.purge.get_or_insert(Retry::now(now_ms));
        }
    }

    /// When this record next needs the alarm: a step, an outbox entry, the purge.
    pub fn next_due_ms(&self) -> Option<u64> {
        let step = if self.status.is_terminal() {
            None
        } else {
            // Never later than the deadline.
            Some(self.next_step_ms.unwrap_or(0).min(self.deadline_ms))
        };
        // The purge counts only once nothing is owed: until then the entries that
        // block it are due on their own backoff (a due purge that is not ready would
        // otherwise re-arm the alarm at once, again and again).
        let purge = self
            .outbox
            .purge
            .filter(|_| self.nothing_owed())
            .map(|p| p.next_ms);
        // A lost submit of a record from before `resolve_submit`: at once.
        let lost = (self.status.is_terminal()
            && self.submitting.is_some()
            && self.outbox.resolve_submit.is_none())
        .then_some(self.finished_ms.unwrap_or(0));
        // Retention's end counts until the purge is ordered (then the purge does).
        let expiry = self.expires_ms.filter(|_| self.outbox.purge.is_none());
        [step, self.outbox.next_due_ms(), purge, lost, expiry]
            .into_iter()
            .flatten()
            .min()
    }

    /// Whether the alarm chain looks broken: something was due long ago.
    pub fn is_stuck(&self, now_ms: u64) -> bool {
        (!self.status.is_terminal() && now_ms > self.deadline_ms)
            || self
                .next_due_ms()
                .is_some_and(|d| now_ms > d.saturating_add(STUCK_AFTER_MS))
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

    /// Delay before the next poll while the upstream works.
    ///
    /// The first look is the quick look ([`QUICK_LOOK_MS`] after the submit, or the
    /// first learned finish if that is sooner). After it, each look keeps to the
    /// [`PollBudget`]. Without learned finish times ([`Self::expected_ms`]): as often
    /// as the budget allows, and never more often than every eighth of the job's age
    /// (capped at [`POLL_MAX_MS`]), so long jobs cost little. With them: each look
    /// goes to the next moment at or after an expected finish
    /// ([`AROUND_EXPECTED_MS`]), or the first the budget allows once one has passed,
    /// with a look at 1.5 × the age when none is nearer (so a job unlike the learned
    /// ones is seen at most half its age late); past the last expected finish, the
    /// cadence without them.
    pub fn poll_delay_ms(&self, now_ms: u64, budget: PollBudget) -> u64 {
        let since = self.submitted_ms.unwrap_or(self.created_ms);
        let age = now_ms.saturating_sub(since);
        if self.polls == 0 {
            let quick = self
                .expected_ms
                .first()
                .map_or(QUICK_LOOK_MS, |&e| u64::from(e).min(QUICK_LOOK_MS));
            return quick.saturating_sub(age);
        }
        let earliest = budget.earliest_ms(self.polls);
        let fixed = || {
            let gap = (age / 8).min(POLL_MAX_MS);
            earliest.saturating_sub(age).max(gap)
        };
        let next_expected = self
            .expected_ms
            .iter()
            .flat_map(|&e| AROUND_EXPECTED_MS.iter().map(move |&d| u64::from(e) + d))
            // Not back to back: expected finishes a few ms apart are one look.
            .filter(|&t| t >= age + MIN_LOOK_GAP_MS)
            // One the budget does not allow yet is looked at as soon as it does.
            .map(|t| t.max(earliest))
            .min();
        let Some(next_expected) = next_expected else {
            return fixed();
        };
        // Between expected finishes, a look at one and a half times the age: a job
        // unlike the learned ones is still seen, and most of the budget is saved for
        // the looks that matter.
        let idle = (age + (age / 2).max(2 * budget.every_ms)).max(earliest);
        // An expected finish a little after the idle look replaces it.
        let at = if next_expected <= idle + budget.every_ms {
            next_expected
        } else {
            idle
        };
        at - age
    }

    /// The gap before the next poll of a running upstream job: the backstop when the
    /// provider was asked to call back, else the polling schedule.
    fn poll_gap_ms(&self, now_ms: u64, budget: PollBudget) -> u64 {
        match self.upstream.as_ref().and_then(|u| u.backstop_ms) {
            // A callback came but the confirming look still saw the job running (a
            // provider's read lagging its webhook): the ordinary schedule, not the
            // slow backstop.
            Some(_) if self.hooks > 0 => self.poll_delay_ms(now_ms, budget),
            Some(backstop_ms) => self.backstop_delay_ms(now_ms, backstop_ms),
            None => self.poll_delay_ms(now_ms, budget),
        }
    }

    /// The backstop for an upstream that calls back (kept apart from
    /// [`Self::poll_delay_ms`]): the first poll `backstop_ms` after the submit, then
    /// each one waits as long as the job's age, so a job whose callback never comes
    /// still finishes, at about twice its length, while one whose callback works
    /// costs the submit and the confirming poll whatever its length.
    pub fn backstop_delay_ms(&self, now_ms: u64, backstop_ms: u64) -> u64 {
        let age = now_ms.saturating_sub(self.submitted_ms.unwrap_or(self.created_ms));
        age.max(backstop_ms)
    }

    /// A verified upstream callback from `provider` about `upstream_id` (when its body
    /// names one). It is never trusted as a result: a job running on that upstream job
    /// is polled now (the runner confirms, then proceeds as its alarm would).
    pub fn take_hook(
        &mut self,
        provider: &str,
        upstream_id: Option<&str>,
        now_ms: u64,
    ) -> HookVerdict {
        if self.status.is_terminal() {
            return HookVerdict::Finished;
        }
        if provider != self.provider {
            return HookVerdict::Ignored;
        }
        // Callbacks beyond a few make no more looks: a provider sends one (plus
        // retries, which are replays), and whoever could forge more must not be able
        // to make us poll the upstream at will.
        if self.hooks >= MAX_HOOK_WAKES {
            return HookVerdict::Ignored;
        }
        match &self.upstream {
            Some(sub) if upstream_id.is_some_and(|u| u != sub.upstream_id) => HookVerdict::Ignored,
            Some(_) => {
                self.hooks = self.hooks.saturating_add(1);
                self.next_step_ms = Some(self.next_step_ms.map_or(now_ms, |t| t.min(now_ms)));
                HookVerdict::Poll
            }
            // Never step now: that would send the submit again.
            None => {
                self.hooks = self.hooks.saturating_add(1);
                HookVerdict::Noted
            }
        }
    }

    /// After a step that began when `hooks_before` callbacks had been taken: if one
    /// came meanwhile (its wake may have been overwritten by the step's own
    /// schedule), a running job looks again now.
    pub fn recheck_if_hooked(&mut self, hooks_before: u32, now_ms: u64) {
        if self.hooks > hooks_before && !self.status.is_terminal() && self.upstream.is_some() {
            self.next_step_ms = Some(now_ms);
        }
    }

    /// One more upstream poll was made.
    pub fn polled(&mut self) {
        self.polls = self.polls.saturating_add(1);
    }

    /// Delay after a transient failure: exponential from 1 s, capped at 60 s, with
    /// jitter in 0..=25 %; an upstream's `Retry-After` wins when longer.
    pub fn retry_delay_ms(&self, retry_after_secs: Option<u64>, jitter: f64) -> u64 {
        let exp = 1000u64.saturating_mul(1 << self.retries.min(6)).min(60_000);
        let jittered = exp + (exp as f64 * 0.25 * jitter.clamp(0.0, 1.0)) as u64;
        jittered.max(retry_after_secs.unwrap_or(0) * 1000)
    }

    pub fn metrics(&self) -> Metrics {
        let secs = |a: u64, b: u64| Some(b.saturating_sub(a) as f64 / 1000.0);
        let started = self.started_ms;
        let finished = self.finished_ms;
        Metrics {
            queue_time: started.and_then(|s| secs(self.created_ms, s)),
            inference_time: match (started, finished) {
                (Some(s), Some(f)) => secs(s, f),
                _ => None,
            },
            total_time: finished.and_then(|f| secs(self.created_ms, f)),
            provider: Some(self.provider.clone()),
            model: self.asked_model.map(|_| self.model.slug().to_owned()),
            credits: Some(Credits {
                charged: self.ownership.charged,
                refunded: self.refund.unwrap_or(0),
                refund_on_cancel: self.refund_on_cancel(),
                refund_pending: self.refund_pending(),
            }),
            cost: (self.status == JobStatus::Completed).then(|| self.cost()),
        }
    }

    /// The credits this job costs its caller: the charge less what was refunded.
    pub fn cost(&self) -> u64 {
        self.ownership
            .charged
            .saturating_sub(self.refund.unwrap_or(0))
    }

    fn failure_code(&self) -> Option<ErrorCode> {
        (self.status == JobStatus::Failed).then_some(ErrorCode::JobFailed)
    }

    /// The status body, with the job's URLs on `origin`.
    pub fn status_response(&self, origin: &str) -> StatusResponse {
        StatusResponse {
            request_id: self.id.clone(),
            status: self.status,
            status_url: format!("{origin}/v2/requests/{}/status", self.id),
            response_url: format!("{origin}/v2/requests/{}", self.id),
            error: self.error.clone(),
            code: self.failure_code(),
            metrics: self.metrics(),
        }
    }

    /// The stored images, with their URLs on `origin`.
    pub fn images(&self, origin: &str) -> Vec<OutputImage> {
        self.outputs
            .iter()
            .enumerate()
            .map(|(n, o)| {
                let path = keys::output_path(&self.id, n, &o.ext);
                OutputImage {
                    file_name: path.rsplit('/').next().unwrap_or_default().to_owned(),
                    url: format!("{origin}{path}"),
                    content_type: o.content_type.clone(),
                    file_size: o.bytes,
                }
            })
            .collect()
    }

    /// The result body, with image URLs on `origin`: `output` is the first image's
    /// URL (Segmind's shape), `images` all of them; as anyone may read it (no link to
    /// the control image).
    pub fn result(&self, origin: &str) -> JobResult {
        let images = self.images(origin);
        JobResult {
            request_id: self.id.clone(),
            model: self.asked_model.unwrap_or(self.model),
            status: self.status,
            output: images.first().map(|i| i.url.clone()),
            images,
            seed: self.params.seed(),
            params: self.params.clone(),
            error: self.error.clone(),
            code: self.failure_code(),
            metrics: self.metrics(),
            created_at: self.created_ms / 1000,
            expires_at: self.expires_ms.map(|e| e / 1000),
            // The owner's reads add a signed link (`handlers::jobs::result_view`).
            control_image: None,
            share_control: self.share_control,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::input::image::ImageFormat;

    /// A queued pro job with seed 42, as tests of the API shapes start from.
    pub fn job() -> JobRecord {
        let mut params = Params::default();
        params.set_seed(42);
        JobRecord::new(
            RequestId::parse("2c7f59ea-13f1-402c-9353-915a2b5a2124").unwrap(),
            Model::FluxDepthPro,
            params,
            ImageInfo {
                format: ImageFormat::Jpeg,
                width: 640,
                height: 480,
            },
            Ownership {
                owner: "key:abc".into(),
                charged: 5,
                retention_secs: 60,
            },
            1_000_000,
            900,
            vec!["segmind".into(), "replicate".into()],
        )
    }

    /// A job completed with `n` JPEG outputs.
    pub fn completed(n: usize) -> JobRecord {
        let mut j = job();
        j.mark_processing(1_000_500);
        let out = StoredOutput {
            ext: "jpg".into(),
            content_type: "image/jpeg".into(),
            bytes: 10,
            width: 64,
            height: 48,
        };
        j.complete(vec![out; n], 1_002_500);
        j
    }

    #[test]
    fn a_completed_job_reports_timings_and_absolute_output_urls() {
        let mut j = job();
        j.mark_processing(1_000_500);
        j.complete(
            vec![StoredOutput {
                ext: "jpg".into(),
                content_type: "image/jpeg".into(),
                bytes: 10,
                width: 64,
                height: 48,
            }],
            1_002_500,
        );
        let r = j.result("http://127.0.0.1:8787");
        assert_eq!(r.status, JobStatus::Completed);
        let url = "http://127.0.0.1:8787/results/2c7f59ea-13f1-402c-9353-915a2b5a2124/0.jpg";
        assert_eq!(r.output.as_deref(), Some(url));
        assert_eq!(
            r.images,
            vec![OutputImage {
                url: url.into(),
                content_type: "image/jpeg".into(),
                file_name: "0.jpg".into(),
                file_size: 10,
            }]
        );
        assert_eq!(r.metrics.cost, Some(5));
        assert_eq!(r.seed, Some(42));
        assert_eq!(r.metrics.queue_time, Some(0.5));
        assert_eq!(r.metrics.inference_time, Some(2.0));
        assert_eq!(r.metrics.total_time, Some(2.5));
        assert_eq!(r.code, None);
        assert_eq!(r.expires_at, Some(1_062));
        assert!(!j.is_expired(1_061_999));
        assert!(j.is_expired(1_062_500));
    }

    #[test]
    fn a_failed_job_carries_its_reason_and_code() {
        let mut j = job();
        j.fail(FailureKind::Rejected, "Content moderated", 1_001_000);
        let s = j.status_response("https://px.example");
        assert_eq!(s.status, JobStatus::Failed);
        assert_eq!(
            s.response_url,
            "https://px.example/v2/requests/2c7f59ea-13f1-402c-9353-915a2b5a2124"
        );
        assert_eq!(s.status_url, format!("{}/status", s.response_url));
        let r = j.result("https://px.example");
        assert_eq!(
            (r.output, r.images.len()),
            (None, 0),
            "a failure has no image"
        );
        assert_eq!(r.metrics.cost, None, "only a COMPLETED job has a cost");
        assert_eq!(
            s.error.as_deref(),
            Some("Rejected by the provider's safety filter (content moderated)")
        );
        assert_eq!(j.detail.as_deref(), Some("Content moderated"));
        assert_eq!(s.code, Some(ErrorCode::JobFailed));
    }

    #[test]
    fn submit_fails_over_in_order_then_retries_or_gives_up() {
        let transient = || UpstreamError::Transient {
            reason: "HTTP 503".into(),
            retry_after: None,
        };
        let mut j = job();
        assert_eq!(j.provider, "segmind");
        assert_eq!(j.submit_failed(transient(), 0, 0.0), FailoverStep::Now);
        assert_eq!(j.provider, "replicate");
        assert_eq!(
            j.submit_failed(UpstreamError::Permanent("HTTP 401".into()), 0, 0.0),
            FailoverStep::After(1000)
        );
        assert_eq!(j.provider, "segmind", "a new round starts from the first");
        assert_eq!(j.status, JobStatus::Queued);

        let mut k = job();
        k.submit_failed(UpstreamError::Permanent("HTTP 400: bad".into()), 0, 0.0);
        assert_eq!(
            k.submit_failed(UpstreamError::Permanent("HTTP 404".into()), 5, 0.0),
            FailoverStep::Failed
        );
        assert_eq!(k.status, JobStatus::Failed);
        assert_eq!(k.failure, Some(FailureKind::Upstream));
        assert_eq!(k.error.as_deref(), Some("No provider accepted the job"));
        let e = k.detail.unwrap();
        assert!(
            e.contains("segmind: HTTP 400: bad") && e.contains("replicate: HTTP 404"),
            "{e}"
        );
    }

    #[test]
    fn an_upstream_still_starting_the_job_is_asked_again_never_failed_over() {
        let in_progress = || UpstreamError::InProgress {
            reason: "parallax is still starting this job (409)".into(),
            retry_after: 2,
        };
        let mut j = job();
        assert_eq!(
            j.submit_failed(in_progress(), 0, 0.0),
            FailoverStep::After(2000)
        );
        assert_eq!(j.provider, "segmind", "the same upstream, not the next one");
        assert_eq!(j.next_step_ms, Some(2000));
        assert!(j.round_failures.is_empty(), "not counted as a failure");

        // Canceled while that POST was out: the job may run there, nothing comes back.
        let mut k = job();
        let attempt = k.begin_submit(0);
        k.cancel(1);
        k.submit_outcome(&attempt, Err(in_progress()), 2, 0.0);
        assert_eq!(k.refund, Some(0));
    }

    /// The ages at which the schedule looks at a job that ends `finish` ms after its
    /// submit, up to the first look that finds it done, with `expected` learned;
    /// every look after the quick one is checked against the budget.
    fn looks(budget: PollBudget, expected: &[u32], finish: u64) -> Vec<u64> {
        let mut j = job();
        let t0 = 2_000_000;
        j.submitted(sub("u"), t0);
        j.expect_finishes(expected.to_vec(), t0, budget);
        let mut now = j.next_step_ms.expect("a first look");
        let mut ages = Vec::new();
        loop {
            j.polled();
            let age = now - t0;
            ages.push(age);
            // Besides the quick look: the looks so far, the submit and a result fetch.
            let requests = u64::from(j.polls) + 1;
            assert!(
                j.polls == 1 || requests * budget.every_ms <= budget.base * budget.every_ms + age,
                "look {} at {age} ms (expected {expected:?}) makes {requests} requests",
                j.polls
            );
            if age >= finish {
                return ages;
            }
            let delay = j.poll_delay_ms(now, budget);
            assert!(delay > 0, "a zero delay at {age} ms");
            now += delay;
        }
    }

    /// When the schedule first sees done a job that ends `finish` ms after its submit.
    fn seen_done_at(budget: PollBudget, expected: &[u32], finish: u64) -> u64 {
        *looks(budget, expected, finish).last().expect("a look")
    }

    const EVERY: PollBudget = PollBudget::new(2_000);
    const TIGHT: PollBudget = PollBudget::tight(2_000);
    /// A provider whose jobs lately took 1, 3, 10 and 30 s.
    const LEARNED: [u32; 4] = [1_050, 3_050, 10_050, 30_050];

    #[test]
    fn the_quick_look_stays_whatever_was_learned() {
        let first_look = |expected: &[u32]| looks(EVERY, expected, 0)[0];
        assert_eq!(first_look(&[]), QUICK_LOOK_MS);
        assert_eq!(first_look(&LEARNED), QUICK_LOOK_MS);
        assert_eq!(first_look(&[10_000]), QUICK_LOOK_MS);
        // A provider whose jobs end sooner than that is looked at when they end.
        assert_eq!(first_look(&[100, 10_000]), 100);
        assert_eq!(looks(TIGHT, &LEARNED, 0), [QUICK_LOOK_MS]);
    }

    #[test]
    fn an_instant_job_is_seen_at_the_quick_look() {
        for expected in [&[][..], &LEARNED, &[40]] {
            assert!(seen_done_at(EVERY, expected, 30) <= QUICK_LOOK_MS);
            assert!(seen_done_at(TIGHT, expected, 30) <= QUICK_LOOK_MS);
        }
    }

    #[test]
    fn a_one_second_job_is_seen_at_the_first_look_the_budget_allows() {
        // Look by look: the quick one, then 2 s (the submit, two looks and a result
        // fetch: 4 requests ≤ 3 + 2/2).
        assert_eq!(looks(EVERY, &[], 1_000), [250, 2_000]);
        assert_eq!(looks(EVERY, &LEARNED, 1_000), [250, 2_000]);
        // Where status reads are rate-limited, at 4 s (1 + 4/2 besides the quick look).
        assert_eq!(looks(TIGHT, &LEARNED, 1_000), [250, 4_000]);
    }

    #[test]
    fn learned_ten_and_thirty_second_jobs_are_seen_within_a_quarter_second() {
        assert_eq!(
            looks(EVERY, &LEARNED, 10_000),
            [250, 2_000, 4_000, 6_000, 10_050]
        );
        for budget in [EVERY, TIGHT] {
            for finish in [9_990, 10_100, 29_800, 30_200] {
                let seen = seen_done_at(budget, &LEARNED, finish);
                assert!(
                    seen - finish <= 250,
                    "a job done at {finish} ms seen at {seen} ms ({budget:?})"
                );
            }
        }
    }

    #[test]
    fn an_unexpected_sixty_second_job_is_seen_at_most_half_its_age_late() {
        let ages = looks(EVERY, &LEARNED, 60_000);
        let seen = *ages.last().expect("a look");
        assert!(seen - 60_000 <= 10_000, "seen at {seen} ms: {ages:?}");
        for finish in [17_000, 45_000, 60_000, 200_000] {
            for budget in [EVERY, TIGHT] {
                let seen = seen_done_at(budget, &LEARNED, finish);
                assert!(
                    seen - finish <= (finish / 2).max(4_000),
                    "an unexpected job done at {finish} ms seen at {seen} ms"
                );
            }
        }
    }

    #[test]
    fn without_learned_times_polling_keeps_the_budget_then_an_eighth_of_the_age() {
        // The quick look, then every 2 s as the budget allows, then an eighth of the
        // job's age once that is longer.
        let ages = looks(EVERY, &[], 30_000);
        assert_eq!(&ages[..6], &[250, 2_000, 4_000, 6_000, 8_000, 10_000]);
        assert_eq!(looks(TIGHT, &[], 9_990), [250, 4_000, 6_000, 8_000, 10_000]);
        let mut j = job();
        j.submitted(sub("u"), 2_000_000);
        j.polls = 5;
        // A long job is polled every eighth of its age, at most every 10 s.
        assert_eq!(j.poll_delay_ms(2_000_000 + 48_000, EVERY), 6_000);
        assert_eq!(j.poll_delay_ms(2_000_000 + 3_600_000, EVERY), POLL_MAX_MS);
    }

    #[test]
    fn a_transient_answer_is_retried_within_the_budget() {
        let t0 = 2_000_000;
        let transient = |retry_after| {
            Err(UpstreamError::Transient {
                reason: "503".into(),
                retry_after,
            })
        };
        // A lag just after the submit: the backoff says 1 s, the tight budget 4 s.
        let mut j = job();
        j.submitted(sub("u"), t0);
        j.poll_outcome("u", transient(None), t0 + 250, TIGHT, 0.0, false);
        assert_eq!(j.next_step_ms, Some(t0 + 4_000));
        // A longer backoff or `Retry-After` still wins.
        let mut k = job();
        k.submitted(sub("u"), t0);
        k.poll_outcome("u", transient(Some(30)), t0 + 250, EVERY, 0.0, false);
        assert_eq!(k.next_step_ms, Some(t0 + 250 + 30_000));
    }

    #[test]
    fn transient_failures_back_off_exponentially_with_jitter_and_retry_after() {
        let mut j = job();
        assert_eq!(j.retry_delay_ms(None, 0.0), 1000);
        j.retries = 3;
        assert_eq!(j.retry_delay_ms(None, 0.0), 8000);
        assert_eq!(j.retry_delay_ms(None, 1.0), 10_000);
        assert_eq!(j.retry_delay_ms(Some(30), 0.0), 30_000);
        j.retries = 40;
        assert_eq!(j.retry_delay_ms(None, 0.0), 60_000);
    }

    fn sub(id: &str) -> Submitted {
        Submitted {
            upstream_id: id.into(),
            status_url: format!("s/{id}"),
            result_url: format!("r/{id}"),
            cancel_url: None,
            backstop_ms: None,
        }
    }

    fn jpg() -> StoredOutput {
        StoredOutput {
            ext: "jpg".into(),
            content_type: "image/jpeg".into(),
            bytes: 10,
            width: 64,
            height: 48,
        }
    }

    /// A job accepted upstream as `u1`.
    fn running() -> JobRecord {
        let mut j = job();
        let a = j.begin_submit(1_000_100);
        assert_eq!(
            j.submit_outcome(&a, Ok(sub("u1")), 1_000_200, 0.0),
            FailoverStep::Now
        );
        j
    }

    /// A job running on upstream job `u1` at segmind, which was asked to call back.
    fn hooked() -> JobRecord {
        let mut j = job();
        let a = j.begin_submit(1_000_100);
        let mut s = sub("u1");
        s.backstop_ms = Some(60_000);
        j.submit_outcome(&a, Ok(s), 1_000_200, 0.0);
        j
    }

    #[test]
    fn callbacks_wake_a_few_looks_at_most_and_a_lagging_provider_is_polled_as_usual() {
        let mut j = hooked();
        for n in 0..MAX_HOOK_WAKES {
            assert_eq!(
                j.take_hook("segmind", None, 1_001_000),
                HookVerdict::Poll,
                "callback {n}"
            );
        }
        // A flood (forged, or a provider gone wrong) makes no more upstream requests.
        assert_eq!(
            j.take_hook("segmind", None, 1_002_000),
            HookVerdict::Ignored
        );
        // The confirming look still saw it running: the ordinary schedule now, not
        // the 60 s backstop.
        j.poll_outcome(
            "u1",
            Ok(UpstreamState::Processing),
            1_003_000,
            PollBudget::new(250),
            0.0,
            false,
        );
        assert!(j.next_step_ms.unwrap() < 1_003_000 + 60_000);
    }

    #[test]
    fn a_job_that_expects_a_callback_is_polled_only_as_a_slow_backstop() {
        let mut j = hooked();
        assert_eq!(
            j.next_step_ms,
            Some(1_000_200 + 60_000),
            "no quick first look"
        );
        let mut now = 1_000_200 + 60_000;
        let mut polls = 0;
        while now < 1_000_200 + 600_000 {
            j.poll_outcome(
                "u1",
                Ok(UpstreamState::Processing),
                now,
                PollBudget::new(250),
                0.0,
                false,
            );
            polls += 1;
            now = j.next_step_ms.unwrap();
        }
        assert_eq!(polls, 4, "60 s, 2 min, 4 min, 8 min into a 10-minute job");
        // Without a callback the schedule is the polling one (much denser).
        let mut k = running();
        k.poll_outcome(
            "u1",
            Ok(UpstreamState::Processing),
            1_000_200,
            PollBudget::new(250),
            0.0,
            false,
        );
        assert!(k.next_step_ms.unwrap() < 1_000_200 + 60_000);
    }

    #[test]
    fn a_callback_polls_a_running_job_now_and_leaves_others_as_they_are() {
        let mut j = hooked();
        assert_eq!(
            j.take_hook("segmind", Some("u1"), 1_005_000),
            HookVerdict::Poll
        );
        assert_eq!(j.next_step_ms, Some(1_005_000));
        assert_eq!(j.hooks, 1);
        // Another provider's or another upstream job's callback changes nothing.
        let before = j.clone();
        assert_eq!(
            j.take_hook("replicate", Some("u1"), 1_006_000),
            HookVerdict::Ignored
        );
        assert_eq!(
            j.take_hook("segmind", Some("old"), 1_006_000),
            HookVerdict::Ignored
        );
        assert_eq!(j, before);
        // A finished job: a late callback changes nothing either.
        let mut done = completed(1);
        let before = done.clone();
        assert_eq!(
            done.take_hook("segmind", None, 1_009_000),
            HookVerdict::Finished
        );
        assert_eq!(done, before);
        // Before the submit's outcome is recorded: noted, never a second submit.
        let mut early = job();
        early.begin_submit(1_000_100);
        let step = early.next_step_ms;
        assert_eq!(
            early.take_hook("segmind", None, 1_000_150),
            HookVerdict::Noted
        );
        assert_eq!(early.next_step_ms, step);
    }

    #[test]
    fn a_callback_that_lands_during_a_step_is_confirmed_after_it() {
        // The poll began with no callback taken; one came while it was out.
        let mut j = hooked();
        let before = j.hooks;
        j.take_hook("segmind", Some("u1"), 1_003_000);
        j.poll_outcome(
            "u1",
            Ok(UpstreamState::Processing),
            1_003_100,
            PollBudget::new(250),
            0.0,
            false,
        );
        assert!(j.next_step_ms > Some(1_003_100), "the poll's own schedule");
        j.recheck_if_hooked(before, 1_003_100);
        assert_eq!(j.next_step_ms, Some(1_003_100), "looked at again now");
        // None came: the schedule stands.
        let mut k = hooked();
        k.poll_outcome(
            "u1",
            Ok(UpstreamState::Processing),
            1_003_100,
            PollBudget::new(250),
            0.0,
            false,
        );
        let next = k.next_step_ms;
        k.recheck_if_hooked(k.hooks, 1_003_100);
        assert_eq!(k.next_step_ms, next);
        // A callback noted before the submit's outcome: the first poll comes at once.
        let mut e = job();
        let a = e.begin_submit(1_000_100);
        e.take_hook("segmind", None, 1_000_150);
        let mut s = sub("u1");
        s.backstop_ms = Some(60_000);
        e.submit_outcome(&a, Ok(s), 1_000_200, 0.0);
        e.recheck_if_hooked(0, 1_000_200);
        assert_eq!(e.next_step_ms, Some(1_000_200));
    }

    #[test]
    fn a_cancel_before_anything_was_sent_refunds_in_full_at_once() {
        let mut j = job();
        assert_eq!(
            j.refund_on_cancel(),
            Some(5),
            "the client is told before the click"
        );
        assert_eq!(j.cancel(1_000_050), CancelVerdict::Canceled);
        assert_eq!(j.status, JobStatus::Failed);
        assert_eq!(j.error.as_deref(), Some("Canceled by its owner"));
        assert_eq!(j.refund, Some(5));
        assert!(j.outbox.refund.is_some(), "the refund is an outbox entry");
        assert!(j.outbox.cancels.is_empty(), "nothing to stop upstream");
        let c = j.metrics().credits.unwrap();
        assert_eq!((c.charged, c.refunded, c.refund_on_cancel), (5, 5, None));
    }

    #[test]
    fn a_cancel_of_a_finished_job_changes_nothing() {
        let mut j = completed(1);
        let before = j.clone();
        assert_eq!(j.cancel(1_005_000), CancelVerdict::AlreadyFinished);
        assert_eq!(j, before);
        let mut f = job();
        f.fail(FailureKind::Rejected, "Content moderated", 1_001_000);
        let before = f.clone();
        assert_eq!(f.cancel(1_005_000), CancelVerdict::AlreadyFinished);
        assert_eq!(f, before);
    }

    #[test]
    fn a_cancel_after_submit_refunds_only_what_the_provider_confirms_unspent() {
        for (outcome, refund) in [
            (CancelOutcome::Stopped, 5),
            (CancelOutcome::Requested, 0),
            (CancelOutcome::Unsupported, 0),
        ] {
            let mut j = running();
            assert_eq!(
                j.refund_on_cancel(),
                Some(0),
                "submitted: a cancel may refund nothing"
            );
            j.cancel(1_000_300);
            assert_eq!(j.refund, None, "undecided until the provider answers");
            assert_eq!(j.outbox.cancels.len(), 1);
            assert!(j.outbox.cancels[0].refund_if_stopped);
            assert!(
                j.outbox.drop_outputs.is_some(),
                "no output of it may survive"
            );
            j.cancel_outcome("u1", Ok(outcome), 1_000_400, 0.0);
            assert!(j.outbox.cancels.is_empty());
            assert_eq!(j.refund, Some(refund), "{outcome:?}");
            assert!(
                j.outbox.refund.is_some(),
                "settled with the Ledger whatever the amount"
            );
            assert_eq!(j.settlement(), Settlement::Canceled);
        }
    }

    #[test]
    fn a_failing_upstream_cancel_is_retried_with_backoff_then_counts_as_spent() {
        let mut j = running();
        j.cancel(1_000_300);
        let err = || {
            Err(UpstreamError::Transient {
                reason: "503".into(),
                retry_after: None,
            })
        };
        let mut now = 1_000_400;
        let mut gaps = Vec::new();
        while !j.outbox.cancels.is_empty() {
            j.cancel_outcome("u1", err(), now, 0.0);
            if let Some(c) = j.outbox.cancels.first() {
                gaps.push(c.retry.next_ms - now);
                now = c.retry.next_ms;
            }
        }
        assert_eq!(gaps.len() as u32, CANCEL_MAX_TRIES - 1);
        assert!(gaps.windows(2).all(|w| w[0] <= w[1]), "{gaps:?}");
        assert_eq!(j.refund, Some(0));
    }

    #[test]
    fn a_cancel_during_the_submit_is_settled_by_the_submit_outcome() {
        // Accepted upstream after the cancel: stopped there, refund per its answer.
        let mut j = job();
        let a = j.begin_submit(1_000_100);
        assert_eq!(j.refund_on_cancel(), Some(0), "a submit is under way");
        j.cancel(1_000_150);
        assert_eq!(j.refund, None);
        assert_eq!(
            j.submit_outcome(&a, Ok(sub("u1")), 1_000_200, 0.0),
            FailoverStep::Failed
        );
        assert_eq!(j.status, JobStatus::Failed, "the cancel stands");
        assert_eq!(j.outbox.cancels.len(), 1);
        assert_eq!(j.outbox.cancels[0].sub.upstream_id, "u1");
        j.cancel_outcome("u1", Ok(CancelOutcome::Stopped), 1_000_300, 0.0);
        assert_eq!(j.refund, Some(5));

        // Refused upstream after the cancel: nothing was spent.
        let mut k = job();
        let a = k.begin_submit(1_000_100);
        k.cancel(1_000_150);
        k.submit_outcome(
            &a,
            Err(UpstreamError::Permanent("400".into())),
            1_000_200,
            0.0,
        );
        assert_eq!(k.refund, Some(5));
        assert!(k.outbox.cancels.is_empty());

        // Lost (the object was reset mid-POST) and not lookupable: it may have run.
        let mut l = job();
        l.begin_submit(1_000_100);
        l.cancel(1_000_150);
        l.lost_submit_after_cancel(1_000_200);
        assert_eq!(l.refund, Some(0));
        assert!(l.submitting.is_none());
    }

    #[test]
    fn a_superseded_submit_is_canceled_upstream() {
        let mut j = job();
        let first = j.begin_submit(1_000_100);
        let second = j.begin_submit(1_000_200);
        assert_eq!(
            j.submit_outcome(&first, Ok(sub("old")), 1_000_300, 0.0),
            FailoverStep::Failed
        );
        assert_eq!(j.outbox.cancels.len(), 1);
        assert!(!j.outbox.cancels[0].refund_if_stopped);
        assert!(
            j.upstream.is_none(),
            "the record still waits for the second"
        );
        j.submit_outcome(&second, Ok(sub("new")), 1_000_400, 0.0);
        assert_eq!(j.upstream.as_ref().unwrap().upstream_id, "new");
        assert_eq!(j.status, JobStatus::Queued);
    }

    #[test]
    fn a_poll_answer_for_a_job_that_moved_on_is_ignored() {
        let mut j = running();
        j.cancel(1_000_300);
        let before = j.clone();
        j.poll_outcome(
            "u1",
            Ok(UpstreamState::Failed("moderated".into())),
            1_000_400,
            PollBudget::new(250),
            0.0,
            false,
        );
        assert_eq!(j, before, "a canceled job stays canceled");
        let mut k = running();
        let before = k.clone();
        k.poll_outcome(
            "other",
            Ok(UpstreamState::Processing),
            1_000_400,
            PollBudget::new(250),
            0.0,
            false,
        );
        assert_eq!(k, before);
    }

    #[test]
    fn not_found_right_after_submit_is_a_lag_and_later_a_failure() {
        let mut j = running();
        let gone = || Err(UpstreamError::Permanent("segmind answered HTTP 404".into()));
        j.poll_outcome(
            "u1",
            gone(),
            1_000_200 + 2_000,
            PollBudget::new(250),
            0.0,
            false,
        );
        assert_eq!(j.status, JobStatus::Queued, "retried");
        assert!(j.next_step_ms.is_some());
        j.poll_outcome(
            "u1",
            gone(),
            1_000_200 + NOT_FOUND_GRACE_MS,
            PollBudget::new(250),
            0.0,
            false,
        );
        assert_eq!(j.status, JobStatus::Failed);
        assert_eq!(j.failure, Some(FailureKind::Upstream));
        assert_eq!(j.refund, Some(5), "a failure is refunded in full");
    }

    #[test]
    fn the_deadline_comes_after_the_last_poll_and_stops_the_upstream() {
        let mut j = running();
        j.poll_outcome(
            "u1",
            Ok(UpstreamState::Processing),
            j.deadline_ms,
            PollBudget::new(250),
            0.0,
            true,
        );
        assert_eq!(j.failure, Some(FailureKind::Timeout));
        assert_eq!(
            j.error.as_deref(),
            Some("Timed out: the job did not finish before its deadline")
        );
        assert_eq!(j.refund, Some(5));
        assert_eq!(j.outbox.cancels.len(), 1, "the upstream is told to stop");
        assert!(!j.outbox.cancels[0].refund_if_stopped);

        // A job seen finished at the deadline is completed, not thrown away.
        let mut k = running();
        k.complete(vec![jpg()], k.deadline_ms);
        k.time_out(k.deadline_ms);
        assert_eq!(k.status, JobStatus::Completed);
    }

    #[test]
    fn a_short_delivery_refunds_the_missing_images() {
        let mut j = job();
        j.model = Model::FluxDepthDev;
        j.params
            .0
            .insert("num_outputs".into(), serde_json::json!(4));
        j.ownership.charged = 12;
        j.complete(vec![jpg()], 1_002_000);
        assert_eq!(j.refund, Some(9), "3 of 4 images missing at 3 credits each");
        assert!(j.outbox.refund.is_some());
        assert_eq!(j.settlement(), Settlement::ShortOfOutputs);
        let mut again = job();
        again.complete(vec![jpg()], 1_002_000);
        assert_eq!(again.refund, Some(0));
        assert!(
            again.outbox.refund.is_some(),
            "a job with nothing to refund still tells the Ledger it ended"
        );
        assert_eq!(again.settlement(), Settlement::Completed);
    }

    #[test]
    fn a_refund_is_decided_once() {
        let mut j = job();
        j.fail(FailureKind::Upstream, "x", 1_001_000);
        assert_eq!(j.refund, Some(5));
        j.decide_refund(0, 1_002_000);
        assert_eq!(j.refund, Some(5));
    }

    #[test]
    fn users_see_categories_and_logs_keep_the_provider_text() {
        let mut j = running();
        j.poll_outcome(
            "u1",
            Ok(UpstreamState::Failed(
                "CUDA out of memory at /models/flux.safetensors".into(),
            )),
            1_000_500,
            PollBudget::new(250),
            0.0,
            false,
        );
        assert_eq!(
            j.error.as_deref(),
            Some("The provider could not use the input image or parameters")
        );
        assert!(j.detail.as_deref().unwrap().contains("CUDA"));
        let s = serde_json::to_string(&j.status_response("")).unwrap();
        assert!(!s.contains("CUDA") && !s.contains("/models"), "{s}");
        assert_eq!(
            public_error(FailureKind::Rejected, "Content moderated: flagged"),
            "Rejected by the provider's safety filter (content moderated)"
        );
        assert_eq!(
            public_error(
                FailureKind::Upstream,
                "replicate answered HTTP 402: set up billing"
            ),
            "The provider failed to generate the image"
        );
    }

    #[test]
    fn delete_waits_for_the_refund_and_the_upstream_cancel() {
        let mut j = running();
        j.delete(1_000_500);
        assert!(j.deleted && j.status == JobStatus::Failed);
        assert!(!j.purge_ready(1_000_500), "a cancel is owed first");
        j.cancel_outcome("u1", Ok(CancelOutcome::Stopped), 1_000_600, 0.0);
        assert!(!j.purge_ready(1_000_600), "then the refund");
        j.outbox.refund = None;
        assert!(j.purge_ready(1_000_700));
    }

    #[test]
    fn the_alarm_is_due_at_the_earliest_of_step_outbox_and_purge() {
        let mut j = running();
        assert_eq!(j.next_due_ms(), Some(1_000_200 + QUICK_LOOK_MS));
        j.next_step_ms = Some(j.deadline_ms + 50_000);
        assert_eq!(
            j.next_due_ms(),
            Some(j.deadline_ms),
            "never past the deadline"
        );
        assert!(!j.is_stuck(j.deadline_ms));
        assert!(
            j.is_stuck(j.deadline_ms + 1),
            "a running job past its deadline"
        );
        j.cancel(1_000_300);
        assert_eq!(
            j.next_due_ms(),
            Some(1_000_300),
            "the upstream cancel is due"
        );
        j.cancel_outcome("u1", Ok(CancelOutcome::Requested), 1_000_400, 0.0);
        j.outbox.drop_outputs = None;
        assert_eq!(j.next_due_ms(), Some(1_000_400), "then its settlement");
        j.outbox.refund = None;
        assert_eq!(j.next_due_ms(), j.expires_ms, "then only the purge");
        let mut r = Retry::now(0);
        r.failed(10, 0.0);
        assert_eq!(r.next_ms, 2_010);
        for _ in 0..20 {
            r.failed(10, 0.0);
        }
        assert_eq!(r.next_ms, 10 + OUTBOX_MAX_BACKOFF_MS);
    }

    #[test]
    fn a_delete_during_the_submit_purges_only_after_its_outcome_and_without_spinning() {
        let mut j = job();
        let a = j.begin_submit(1_000_100);
        j.delete(1_000_150);
        assert!(j.deleted && j.status == JobStatus::Failed);
        assert!(
            !j.purge_ready(1_000_150),
            "the submit is out: its outcome decides the refund and the cancel"
        );
        assert_eq!(
            j.next_due_ms(),
            Some(1_000_150 + RESOLVE_SUBMIT_AFTER_MS),
            "a due purge that is not ready does not re-arm the alarm at once"
        );
        assert_eq!(
            j.submit_outcome(&a, Ok(sub("u1")), 1_000_200, 0.0),
            FailoverStep::Failed
        );
        assert!(j.outbox.resolve_submit.is_none());
        assert!(!j.purge_ready(1_000_200), "the upstream cancel is owed");
        assert_eq!(j.next_due_ms(), Some(1_000_200), "the cancel is due");
        j.cancel_outcome("u1", Ok(CancelOutcome::Stopped), 1_000_300, 0.0);
        assert_eq!(j.refund, Some(5));
        assert!(!j.purge_ready(1_000_300), "the refund is owed");
        j.outbox.refund = None;
        assert!(j.purge_ready(1_000_400));

        // Refused upstream: nothing spent, refunded, then purged.
        let mut k = job();
        let a = k.begin_submit(1_000_100);
        k.delete(1_000_150);
        k.submit_outcome(
            &a,
            Err(UpstreamError::Permanent("400".into())),
            1_000_200,
            0.0,
        );
        assert_eq!(k.refund, Some(5));
        assert!(!k.purge_ready(1_000_200));
        k.outbox.refund = None;
        assert!(k.purge_ready(1_000_200));
    }

    #[test]
    fn a_lost_submit_of_a_canceled_job_is_resolved_soon_then_with_backoff() {
        let mut j = job();
        j.begin_submit(1_000_100);
        j.cancel(1_000_150);
        let due = 1_000_150 + RESOLVE_SUBMIT_AFTER_MS;
        assert_eq!(
            j.next_due_ms(),
            Some(due),
            "resolved on the next alarm, not at the end of retention"
        );
        assert!(!j.lost_submit_due(due - 1));
        assert!(j.lost_submit_due(due));
        let mut now = due;
        let mut gaps = Vec::new();
        while j.submitting.is_some() {
            j.lost_submit_lookup_failed(now, 0.0);
            if let Some(r) = j.outbox.resolve_submit {
                assert!(
                    j.next_due_ms() <= Some(r.next_ms),
                    "the alarm is set for it"
                );
                gaps.push(r.next_ms - now);
                now = r.next_ms;
            }
        }
        assert_eq!(gaps.len() as u32, RESOLVE_SUBMIT_MAX_TRIES - 1);
        assert!(gaps.windows(2).all(|w| w[0] < w[1]), "{gaps:?}");
        assert_eq!(j.refund, Some(0), "it may have run: spent");
        assert!(j.outbox.resolve_submit.is_none());
        j.delete(now);
        assert!(!j.purge_ready(now), "its settlement first");
        j.outbox.refund = None;
        assert!(j.purge_ready(now));

        // A record from before `resolve_submit` is due at once.
        let mut old = job();
        old.begin_submit(1_000_100);
        old.cancel(1_000_150);
        old.outbox.resolve_submit = None;
        assert!(old.lost_submit_due(1_000_150));
        assert_eq!(old.next_due_ms(), Some(1_000_150));
    }

    #[test]
    fn a_confirmed_stop_wins_over_a_second_sends_answer_that_arrived_first() {
        let mut j = running();
        j.cancel(1_000_300);
        // Two sends of the same cancel: the second's 409 ("finished") lands first.
        j.cancel_outcome("u1", Ok(CancelOutcome::Requested), 1_000_400, 0.0);
        assert_eq!(j.refund, Some(0));
        j.cancel_outcome("u1", Ok(CancelOutcome::Stopped), 1_000_450, 0.0);
        assert_eq!(j.refund, Some(5), "Stopped wins");
        assert!(j.outbox.refund.is_some());
        // Only once, and never for another upstream job or a non-owner cancel.
        j.cancel_outcome("u1", Ok(CancelOutcome::Stopped), 1_000_500, 0.0);
        assert_eq!(j.refund, Some(5));
        let mut t = running();
        t.time_out(t.deadline_ms);
        t.cancel_outcome("u1", Ok(CancelOutcome::Requested), t.deadline_ms, 0.0);
        let before = t.refund;
        t.cancel_outcome("u1", Ok(CancelOutcome::Stopped), t.deadline_ms, 0.0);
        assert_eq!(t.refund, before);
        let mut k = running();
        k.cancel(1_000_300);
        k.cancel_outcome("u1", Ok(CancelOutcome::Requested), 1_000_400, 0.0);
        k.cancel_outcome("other", Ok(CancelOutcome::Stopped), 1_000_450, 0.0);
        assert_eq!(k.refund, Some(0));
    }

    #[test]
    fn an_expired_job_whose_purge_waits_does_not_re_arm_at_once() {
        let mut j = running();
        j.cancel(1_000_300);
        let expiry = j.expires_ms.unwrap();
        j.expire(expiry);
        assert!(j.outbox.purge.is_some());
        let mut c = j.outbox.cancels[0].retry;
        c.failed(expiry, 0.0);
        j.outbox.cancels[0].retry = c;
        j.outbox.drop_outputs = None;
        assert_eq!(j.next_due_ms(), Some(c.next_ms), "the cancel's backoff");
    }

    #[test]
    fn an_output_written_after_a_cancel_or_delete_may_not_stay() {
        let j = running();
        assert!(j.owns_outputs_of("u1"));
        assert!(!j.owns_outputs_of("other"));
        let mut c = running();
        c.cancel(1_000_300);
        assert!(!c.owns_outputs_of("u1"));
        let mut d = running();
        d.delete(1_000_300);
        assert!(!d.owns_outputs_of("u1"));
        // Completed from that upstream job by another look (two alarms overlapping:
        // the second look's write must not delete what the first completed with):
        // the same outputs, they stay; deleted afterwards, they do not.
        let mut done = running();
        done.complete(Vec::new(), 1_000_300);
        assert!(done.owns_outputs_of("u1"));
        assert!(!done.owns_outputs_of("other"));
        done.delete(1_000_400);
        assert!(!done.owns_outputs_of("u1"));
    }

    #[test]
    fn an_answer_says_what_may_still_be_refunded_while_the_refund_is_undecided() {
        // Canceled after the submit: the upstream's answer to the cancel decides.
        let mut j = running();
        assert_eq!(
            j.refund_pending(),
            None,
            "running: refund_on_cancel says it"
        );
        j.cancel(1_000_300);
        let c = j.metrics().credits.unwrap();
        assert_eq!(
            (c.refunded, c.refund_pending, c.refund_on_cancel),
            (0, Some(5), None),
            "never 'refunded: 0' alone while a refund may come"
        );
        j.cancel_outcome("u1", Ok(CancelOutcome::Stopped), 1_000_400, 0.0);
        let c = j.metrics().credits.unwrap();
        assert_eq!((c.refunded, c.refund_pending), (5, None));

        // Canceled while the submit is out: its outcome decides.
        let mut k = job();
        let attempt = k.begin_submit(1_000_100);
        k.delete(1_000_150);
        assert_eq!(k.metrics().credits.unwrap().refund_pending, Some(5));
        k.submit_outcome(
            &attempt,
            Err(UpstreamError::Permanent("refused".into())),
            1_000_200,
            0.0,
        );
        let c = k.metrics().credits.unwrap();
        assert_eq!((c.refunded, c.refund_pending), (5, None));

        // Decided at once: nothing pending.
        let mut l = job();
        l.cancel(1_000_100);
        assert_eq!(l.metrics().credits.unwrap().refund_pending, None);
        let mut m = job();
        m.complete(vec![jpg()], 1_002_000);
        assert_eq!(m.metrics().credits.unwrap().refund_pending, None);
        let v = serde_json::to_value(m.metrics().credits.unwrap()).unwrap();
        assert!(v.get("refund_pending").is_none(), "absent once settled");
    }

    #[test]
    fn a_refund_raised_by_a_late_confirmed_stop_is_settled_again() {
        let mut j = running();
        j.cancel(1_000_300);
        j.cancel_outcome("u1", Ok(CancelOutcome::Requested), 1_000_400, 0.0);
        assert_eq!(j.refund, Some(0));
        assert!(j.outbox.refund.is_some(), "the settlement of 0 is owed");
        j.outbox.refund = None;
        j.cancel_outcome("u1", Ok(CancelOutcome::Stopped), 1_000_500, 0.0);
        assert_eq!(j.refund, Some(5));
        assert!(
            j.outbox.refund.is_some(),
            "the raised refund is sent too (the Ledger tops the first one up)"
        );
    }

    #[test]
    fn every_end_has_its_settlement_reason() {
        let mut failed = job();
        failed.fail(FailureKind::Timeout, "deadline", 1_001_000);
        assert_eq!(failed.settlement(), Settlement::Failed);
        let mut rejected = job();
        rejected.fail(FailureKind::Rejected, "nsfw", 1_001_000);
        assert_eq!(rejected.settlement(), Settlement::Failed);
        let mut canceled = job();
        canceled.cancel(1_001_000);
        assert_eq!(canceled.settlement(), Settlement::Canceled);
    }
}
