//! The v2 API's response bodies, as Segmind's clients (and its Python SDK) expect them.

use serde::{Deserialize, Serialize};

use crate::error::ErrorCode;
use crate::id::RequestId;
use crate::params::Params;

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JobStatus {
    Queued,
    Processing,
    Completed,
    Failed,
}

impl JobStatus {
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Failed)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "QUEUED",
            Self::Processing => "PROCESSING",
            Self::Completed => "COMPLETED",
            Self::Failed => "FAILED",
        }
    }

    /// The status named as on the wire (`PROCESSING`), or `None`.
    pub fn parse(name: &str) -> Option<Self> {
        [
            Self::Queued,
            Self::Processing,
            Self::Completed,
            Self::Failed,
        ]
        .into_iter()
        .find(|s| s.as_str() == name)
    }
}

/// `POST /v2/{model}`: the job was accepted. Every URL is absolute.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubmitResponse {
    pub request_id: RequestId,
    pub status: JobStatus,
    pub poll_url: String,
    pub status_url: String,
    pub response_url: String,
    /// An anonymous submit's proof of ownership: `x-owner-token` on a cancel, a delete
    /// or a read of the job's control image link. Anyone behind the same address
    /// (a NAT, a shared /56) is another person; only this token is the owner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_token: Option<String>,
}

/// Timings of a job, in seconds, and which upstream served it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Metrics {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_time: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inference_time: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_time: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// The model that made the images, when an operator fallback served the job with a
    /// model other than the one asked for (e.g. `flux-depth-dev` for a pro request).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// What the job cost the caller, and what a cancel would give back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credits: Option<Credits>,
    /// Segmind's name for what a finished job cost, in this deployment's credits
    /// (`credits.charged - credits.refunded`); only once COMPLETED.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<u64>,
}

/// A job's credits: charged at submit, refunded on failure, on a cancel before anything
/// was spent upstream, or for outputs that were not delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Credits {
    pub charged: u64,
    pub refunded: u64,
    /// Only while the job runs: the credits a cancel sent now would refund (the whole
    /// charge while nothing was spent upstream, else 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refund_on_cancel: Option<u64>,
    /// Only while a decision is still under way (an upstream cancel or submit whose
    /// answer decides the refund): the credits it may still give back, on top of
    /// `refunded`. Absent once the refund is settled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refund_pending: Option<u64>,
}

/// `GET /v2/requests/{id}/status`. A FAILED job is served as 422 with `error` and
/// `code: job_failed`, so the body is both a status and an error body. Like
/// Segmind's, it carries the job's `status_url` and `response_url` (absolute), so a
/// client holding only this body knows where to look next.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusResponse {
    pub request_id: RequestId,
    pub status: JobStatus,
    pub status_url: String,
    pub response_url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<ErrorCode>,
    pub metrics: Metrics,
}

/// One generated image of a finished job, as Segmind lists them in `images`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputImage {
    /// Absolute, on this edge, kept for the retention period.
    pub url: String,
    /// `image/jpeg`, `image/png` or `image/webp`.
    pub content_type: String,
    /// The URL's last segment (`0.jpg`).
    pub file_name: String,
    /// The image's size in bytes: exactly what `url` serves.
    pub file_size: u64,
}

/// `GET /v2/requests/{id}`: the job with its images (on this edge, non-expiring for
/// the retention period). As Segmind's, `output` is the (first) image's URL as a
/// string, `null` until COMPLETED; `images` lists every image. `error` is always
/// present, `null` unless FAILED.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobResult {
    pub request_id: RequestId,
    pub model: crate::models::Model,
    pub status: JobStatus,
    pub output: Option<String>,
    pub images: Vec<OutputImage>,
    pub seed: Option<u32>,
    pub params: Params,
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<ErrorCode>,
    pub metrics: Metrics,
    /// Unix seconds.
    pub created_at: u64,
    /// Unix seconds after which the job and its images are gone (`null` while running).
    pub expires_at: Option<u64>,
    /// The control image the job was submitted with: a short-lived signed link on
    /// this edge, given only to the job's owner, or to anyone when the owner chose to
    /// show it on the share page (absent otherwise, and where the deployment signs no
    /// links). The photo is private unless shared; the outputs are not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_image: Option<String>,
    /// What the share page shows beside the result (its owner's choice).
    #[serde(default, skip_serializing_if = "crate::ShareControl::is_none")]
    pub share_control: crate::ShareControl,
    /// The depth map a generation job was made from, an absolute URL on this edge
    /// (a greyscale PNG, near = bright); absent for a depth preview (its output is
    /// the depth map) and where none is known. With `control_type: depth` it is the
    /// control image itself (a short-lived signed link, as `control_image`); with
    /// `control_type: image` it is the output of the same account's depth preview of
    /// the same control image bytes, when one was made before the job was submitted
    /// (`/results/{preview id}/0.png`). Given to the owner, and to anyone
    /// when the owner chose `share_control` `depth` or `photo`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub depth_image: Option<String>,
}
