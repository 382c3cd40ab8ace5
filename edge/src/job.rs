//! A job's record, owned by its `JobRunner` Durable Object, and the pure rules of its
//! life: state changes, backoff, deadline, and how it looks on the wire.

use parallax_api::{
    ErrorCode, JobResult, JobStatus, Metrics, Model, Params, RequestId, StatusResponse,
};
use serde::{Deserialize, Serialize};

use crate::input::image::ImageInfo;
use crate::providers::{Submitted, UpstreamError};
use crate::storage::keys;

/// One stored output image.
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
    /// The model the client asked for, when an operator fallback serves the job with
    /// `model` instead (`fallback.rs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asked_model: Option<Model>,
}

/// The runner's `/start` body: the job, and where to deliver it when it ends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Start {
    pub job: JobRecord,
    #[serde(default)]
    pub webhook: Option<crate::webhook::Target>,
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

/// The first poll comes this soon after the upstream accepted a job, so a fast
/// upstream (a warm self-hosted GPU, a cached result) finishes as fast as it can.
pub const FIRST_POLL_MS: u64 = 0;
/// The longest gap between polls (long jobs are polled every eighth of their age).
pub const POLL_MAX_MS: u64 = 10_000;

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
            asked_model: None,
        }
    }

    pub fn mark_processing(&mut self, now_ms: u64) {
        if self.status == JobStatus::Queued {
            self.status = JobStatus::Processing;
        }
        self.started_ms.get_or_insert(now_ms);
    }

    pub fn complete(&mut self, outputs: Vec<StoredOutput>, now_ms: u64) {
        self.started_ms.get_or_insert(now_ms);
        self.outputs = outputs;
        self.status = JobStatus::Completed;
        self.error = None;
        self.finish(now_ms);
    }

    pub fn fail(&mut self, kind: FailureKind, reason: impl Into<String>, now_ms: u64) {
        self.status = JobStatus::Failed;
        self.error = Some(reason.into());
        self.failure = Some(kind);
        self.finish(now_ms);
    }

    fn finish(&mut self, now_ms: u64) {
        self.finished_ms = Some(now_ms);
        self.expires_ms = Some(now_ms + self.ownership.retention_secs * 1000);
    }

    /// Whether the retention period is over.
    pub fn is_expired(&self, now_ms: u64) -> bool {
        self.expires_ms.is_some_and(|e| now_ms >= e)
    }

    /// The upstream accepted the job.
    pub fn submitted(&mut self, sub: Submitted, now_ms: u64) {
        self.upstream = Some(sub);
        self.submitted_ms = Some(now_ms);
        self.polls = 0;
        self.round_failures.clear();
        self.round_transient = false;
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
        };
        self.round_failures
            .push(format!("{}: {reason}", self.provider));
        self.round_transient |= transient;
        self.last_problem = Some(reason);
        if self.candidate + 1 < self.candidates.len() {
            self.candidate += 1;
            self.provider = self.candidates[self.candidate].clone();
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
        FailoverStep::After(delay)
    }

    /// Delay before the next poll while the upstream works: one quick look after
    /// [`FIRST_POLL_MS`]; then poll `n` waits until `(n + 1) × every_ms` into the
    /// upstream job (with the submit and the result fetch Segmind needs after
    /// COMPLETED, a job seen finished at `t` costs at most `1 + t / every` upstream
    /// requests); and never more often than every eighth of the job's age (capped at
    /// [`POLL_MAX_MS`]), so long jobs cost little.
    pub fn poll_delay_ms(&self, now_ms: u64, every_ms: u64) -> u64 {
        let since = self.submitted_ms.unwrap_or(self.created_ms);
        let age = now_ms.saturating_sub(since);
        if self.polls == 0 {
            return FIRST_POLL_MS.saturating_sub(age);
        }
        let budget = (u64::from(self.polls) + 2) * every_ms;
        let gap = (age / 8).min(POLL_MAX_MS);
        budget.saturating_sub(age).max(gap)
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
            credits: None,
        }
    }

    fn failure_code(&self) -> Option<ErrorCode> {
        (self.status == JobStatus::Failed).then_some(ErrorCode::JobFailed)
    }

    pub fn status_response(&self) -> StatusResponse {
        StatusResponse {
            request_id: self.id.clone(),
            status: self.status,
            error: self.error.clone(),
            code: self.failure_code(),
            metrics: self.metrics(),
        }
    }

    /// The result body, with output URLs on `origin`.
    pub fn result(&self, origin: &str) -> JobResult {
        JobResult {
            request_id: self.id.clone(),
            model: self.asked_model.unwrap_or(self.model),
            status: self.status,
            output: self
                .outputs
                .iter()
                .enumerate()
                .map(|(n, o)| format!("{origin}{}", keys::output_path(&self.id, n, &o.ext)))
                .collect(),
            seed: self.params.seed(),
            params: self.params.clone(),
            error: self.error.clone(),
            code: self.failure_code(),
            metrics: self.metrics(),
            created_at: self.created_ms / 1000,
            expires_at: self.expires_ms.map(|e| e / 1000),
            control_image: format!("{origin}{}", keys::control_path(&self.id)),
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
        assert_eq!(
            r.output,
            vec!["http://127.0.0.1:8787/results/2c7f59ea-13f1-402c-9353-915a2b5a2124/0.jpg"]
        );
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
        let s = j.status_response();
        assert_eq!(s.status, JobStatus::Failed);
        assert_eq!(s.error.as_deref(), Some("Content moderated"));
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
        let e = k.error.unwrap();
        assert!(
            e.contains("segmind: HTTP 400: bad") && e.contains("replicate: HTTP 404"),
            "{e}"
        );
    }

    #[test]
    fn polling_looks_once_quickly_then_keeps_within_one_request_per_two_seconds() {
        let mut j = job();
        let t0 = 2_000_000;
        j.submitted(
            Submitted {
                upstream_id: "u".into(),
                status_url: "s".into(),
                result_url: "r".into(),
                cancel_url: None,
            },
            t0,
        );
        assert_eq!(j.poll_delay_ms(t0, 2_000), FIRST_POLL_MS);
        // Simulate the schedule: every poll lands when the previous delay says.
        let mut now = t0 + FIRST_POLL_MS;
        let mut ages = Vec::new();
        for _ in 0..12 {
            j.polled();
            ages.push(now - t0);
            now += j.poll_delay_ms(now, 2_000);
        }
        assert_eq!(&ages[..5], &[0, 6_000, 8_000, 10_000, 12_000]);
        for (n, age) in ages.iter().enumerate().skip(1) {
            // The submit, n + 1 polls, and a result fetch after the last.
            let requests = 1 + (n as u64 + 1) + 1;
            assert!(
                requests * 2_000 <= 2_000 + age,
                "poll {n} at {age} ms makes {requests} requests"
            );
        }
        // A long job is polled every eighth of its age, at most every 10 s.
        assert_eq!(j.poll_delay_ms(t0 + 48_000, 2_000), 6_000);
        assert_eq!(j.poll_delay_ms(t0 + 3_600_000, 2_000), POLL_MAX_MS);
        assert_eq!(j.retry_delay_ms(None, 0.0), 1000);
        j.retries = 3;
        assert_eq!(j.retry_delay_ms(None, 0.0), 8000);
        assert_eq!(j.retry_delay_ms(None, 1.0), 10_000);
        assert_eq!(j.retry_delay_ms(Some(30), 0.0), 30_000);
        j.retries = 40;
        assert_eq!(j.retry_delay_ms(None, 0.0), 60_000);
    }
}
