//! How a job looks on the wire: its status, result, images and metrics.

use parallax_api::{
    Credits, ErrorCode, JobResult, JobStatus, Metrics, OutputImage, StatusResponse,
};

use super::record::*;
use crate::storage::keys;

impl JobRecord {
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

    pub(super) fn failure_code(&self) -> Option<ErrorCode> {
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
            // Added per reader, as the control link (`handlers::jobs::result_view`).
            depth_image: None,
        }
    }
}
