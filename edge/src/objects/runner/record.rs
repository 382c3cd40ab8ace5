//! A job's record, owned by its `JobRunner` Durable Object: what it holds, and the
//! rules of its life that are not submits, charges, polling or the wire view (those
//! are their own files beside this one).

use parallax_api::{JobStatus, Model, Params, RequestId};
use serde::{Deserialize, Serialize};

pub use super::effects::*;
use crate::input::image::ImageInfo;
use crate::providers::Submitted;

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
    /// A generation job's depth map, when the same account previewed the same control
    /// image first: its output path (`preview_cache.rs`) until the job completes, then
    /// the job's own copy (`depth.rs`; `None` if none). `JobResult::depth_image`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub depth_from: Option<String>,
}

/// One upstream submit, recorded before it is sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    pub n: u32,
    pub provider: String,
    pub started_ms: u64,
    /// Its POST was sent but no answer came whole (`UpstreamError::Ambiguous`) and the
    /// provider cannot be asked: the job waits for its deadline to decide it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ambiguous: bool,
}

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

impl JobRecord {
    /// What a provider's adapter sees of this job.
    pub fn order(&self) -> crate::providers::Order<'_> {
        crate::providers::Order {
            id: &self.id,
            model: self.model,
            params: &self.params,
            input: self.input,
        }
    }

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
            depth_from: None,
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
            // Looked up (or replayed) soon; an ambiguous one that cannot be is then
            // left for the deadline (`lost_submit_after_cancel`).
            self.outbox.resolve_submit = Some(Retry {
                tries: 0,
                next_ms: now_ms + RESOLVE_SUBMIT_AFTER_MS,
            });
        }
        self.finish(now_ms);
    }

    pub(super) fn finish(&mut self, now_ms: u64) {
        self.finished_ms = Some(now_ms);
        self.next_step_ms = None;
        self.expires_ms = Some(now_ms + self.ownership.retention_secs * 1000);
        if self.model.is_preview() {
            self.outbox.drop_input.get_or_insert(Retry::now(now_ms));
        }
    }

    /// Whether nothing can need the control image again: the job has ended and no
    /// submit attempt is out or being resolved (a lookup may replay the submit).
    fn input_unneeded(&self) -> bool {
        self.status.is_terminal()
            && self.submitting.is_none()
            && self.outbox.resolve_submit.is_none()
    }

    /// Whether a preview's control image may be deleted now (`Outbox::drop_input`).
    pub fn input_drop_ready(&self, now_ms: u64) -> bool {
        self.outbox.drop_input.is_some_and(|r| r.is_due(now_ms)) && self.input_unneeded()
    }

    /// Whether the retention period is over.
    pub fn is_expired(&self, now_ms: u64) -> bool {
        self.expires_ms.is_some_and(|e| now_ms >= e)
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
        // Like the purge, the input's deletion counts only once nothing needs it.
        let drop_input = self
            .outbox
            .drop_input
            .filter(|_| self.input_unneeded())
            .map(|r| r.next_ms);
        // A lost submit of a record from before `resolve_submit`: at once.
        let lost = (self.status.is_terminal()
            && self.submitting.is_some()
            && self.outbox.resolve_submit.is_none())
        .then_some(self.finished_ms.unwrap_or(0));
        // Retention's end counts until the purge is ordered (then the purge does).
        let expiry = self.expires_ms.filter(|_| self.outbox.purge.is_none());
        [
            step,
            self.outbox.next_due_ms(),
            purge,
            drop_input,
            lost,
            expiry,
        ]
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
}
