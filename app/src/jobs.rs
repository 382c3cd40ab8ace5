//! A job as the playground shows it, and the pure rules for showing and polling it.

use parallax_api::{JobResult, JobStatus, Model, StatusResponse};

/// Whether the phase is final.
pub fn is_final(phase: &Phase) -> bool {
    matches!(phase, Phase::Completed { .. } | Phase::Failed { .. })
}

/// Where a job is, from the browser's point of view.
#[derive(Debug, Clone, PartialEq)]
pub enum Phase {
    /// Uploading and waiting for the submit answer.
    Submitting,
    Queued,
    Processing,
    Completed {
        outputs: Vec<String>,
    },
    Failed {
        message: String,
    },
}

impl Phase {
    pub fn label(&self) -> &'static str {
        match self {
            Self::Submitting => "Uploading…",
            Self::Queued => "Queued",
            Self::Processing => "Generating…",
            Self::Completed { .. } => "Done",
            Self::Failed { .. } => "Failed",
        }
    }

    /// A CSS modifier for the status badge.
    pub fn class(&self) -> &'static str {
        match self {
            Self::Submitting | Self::Queued => "queued",
            Self::Processing => "processing",
            Self::Completed { .. } => "completed",
            Self::Failed { .. } => "failed",
        }
    }

    /// The phase a status poll reports. COMPLETED needs the result for its outputs,
    /// so it stays Processing until [`Phase::from_result`].
    pub fn from_status(s: &StatusResponse) -> Self {
        match s.status {
            JobStatus::Queued => Self::Queued,
            JobStatus::Processing | JobStatus::Completed => Self::Processing,
            JobStatus::Failed => Self::Failed {
                message: s.error.clone().unwrap_or_else(|| "The job failed.".into()),
            },
        }
    }

    pub fn from_result(r: &JobResult) -> Self {
        match r.status {
            JobStatus::Completed => Self::Completed {
                outputs: r.output.clone(),
            },
            JobStatus::Failed => Self::Failed {
                message: r.error.clone().unwrap_or_else(|| "The job failed.".into()),
            },
            JobStatus::Queued => Self::Queued,
            JobStatus::Processing => Self::Processing,
        }
    }
}

/// One job card's data.
#[derive(Debug, Clone, PartialEq)]
pub struct JobView {
    /// Local key, unique on this page.
    pub key: u64,
    pub model: Model,
    pub prompt: String,
    pub request_id: Option<String>,
    /// Where to GET the result and DELETE (cancel) the job.
    pub response_url: Option<String>,
    pub phase: Phase,
    /// Browser clock (ms) at submit and at the end.
    pub started_ms: f64,
    pub finished_ms: Option<f64>,
    /// Expected duration in seconds, from this device's recent jobs.
    pub expected_secs: f64,
    /// The control image as uploaded (an object URL), for the compare slider.
    pub control_url: Option<String>,
    /// The finished job, for Remix.
    pub result: Option<JobResult>,
}

/// Milliseconds before status poll number `attempt` (0-based): quick at first, then
/// backing off to 3 s so a long job costs few requests.
pub fn poll_delay_ms(attempt: u32) -> i32 {
    match attempt {
        0..=4 => 1000,
        5..=14 => 2000,
        _ => 3000,
    }
}

#[cfg(test)]
mod tests {
    use parallax_api::{ErrorCode, Metrics, RequestId};

    use super::*;

    fn status(s: JobStatus, error: Option<&str>) -> StatusResponse {
        StatusResponse {
            request_id: RequestId::parse("2c7f59ea-13f1-402c-9353-915a2b5a2124").unwrap(),
            status: s,
            error: error.map(str::to_owned),
            code: error.map(|_| ErrorCode::JobFailed),
            metrics: Metrics::default(),
        }
    }

    #[test]
    fn completed_status_waits_for_the_result_before_showing_done() {
        assert_eq!(
            Phase::from_status(&status(JobStatus::Completed, None)),
            Phase::Processing
        );
        assert_eq!(
            Phase::from_status(&status(JobStatus::Queued, None)),
            Phase::Queued
        );
    }

    #[test]
    fn failure_shows_the_servers_reason() {
        let p = Phase::from_status(&status(JobStatus::Failed, Some("Content moderated")));
        assert_eq!(
            p,
            Phase::Failed {
                message: "Content moderated".into()
            }
        );
        assert_eq!(p.label(), "Failed");
    }

    #[test]
    fn polling_backs_off() {
        assert_eq!(poll_delay_ms(0), 1000);
        assert_eq!(poll_delay_ms(10), 2000);
        assert_eq!(poll_delay_ms(100), 3000);
    }
}
