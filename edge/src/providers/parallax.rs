//! Another Parallax as an upstream (a self-hosted GPU behind this same edge): the
//! Segmind-compatible v2 API of `segmind.rs`, plus what our own API adds — an
//! `Idempotency-Key` on the submit (our job id), so a resubmit after an ambiguous
//! failure replays the job instead of starting a second; a 409 while the first
//! request under that key is still starting it; and `POST /v2/requests/{id}/cancel`.

use parallax_api::Model;

use super::Order;
use super::Provider;
use super::contract::{Adapter, Step};
use super::{
    CancelOutcome, ControlImage, HttpMethod, Submitted, UpstreamError, UpstreamRequest,
    UpstreamResponse, UpstreamState, error_detail, segmind, send, success_json,
};
use crate::hooks::Callback;

/// A Parallax upstream: polled (its v2 API takes no callback URL).
#[derive(Debug)]
pub struct ParallaxUpstream;

impl Adapter for ParallaxUpstream {
    fn name(&self) -> &'static str {
        "parallax"
    }

    fn env_prefix(&self) -> &'static str {
        "PARALLAX_UPSTREAM"
    }

    /// Its keyed reads count against its `RATE_LIMIT_READS_PER_MIN`.
    fn reads_limited(&self) -> bool {
        true
    }

    /// It fetches an `https` URL on a public host only (`input/remote.rs`), so it gets
    /// links on such deployments only.
    fn fetches(&self, link: &str) -> bool {
        link.starts_with("https://")
    }

    fn serves(&self, _model: Model) -> bool {
        true
    }

    /// It is Parallax: it routes `control_type: depth` to a provider of its own that
    /// takes it, or refuses it by name (a 400, which fails the job here).
    fn takes_depth_maps(&self, _model: Model) -> bool {
        true
    }

    fn build_submit(
        &self,
        provider: &Provider,
        job: &Order<'_>,
        control: &ControlImage,
        _callback: Option<&Callback>,
        _prepared: &str,
    ) -> Result<UpstreamRequest, UpstreamError> {
        let mut req = segmind::build_submit(provider, job.model, job.params, control);
        req.headers
            .push(("idempotency-key", job.id.as_str().to_owned()));
        Ok(req)
    }

    /// A 409 + `Retry-After` comes while the first request under the same
    /// `Idempotency-Key` (our job id) is still starting its job: a resubmit that came
    /// too soon, worth retrying (the answer then replays that job).
    fn parse_submit(
        &self,
        provider: &Provider,
        _job_id: &str,
        resp: &UpstreamResponse,
    ) -> Result<Submitted, UpstreamError> {
        if resp.status == 409 {
            return Err(UpstreamError::InProgress {
                reason: format!(
                    "{} is still starting this job (409: {})",
                    self.name(),
                    error_detail(&resp.body)
                ),
                retry_after: resp.retry_after.unwrap_or(1),
            });
        }
        segmind::parse_submit(provider, resp)
    }

    /// Our own API replays a submit under the same `Idempotency-Key`.
    fn resubmit_replays(&self) -> bool {
        true
    }

    fn documented_urls(
        &self,
        _model: Model,
        base: &str,
        id: &str,
    ) -> Option<(String, String, Option<String>)> {
        Some(segmind::documented_urls(base, id))
    }

    fn poll<'a>(
        &'a self,
        provider: &'a Provider,
        sub: &'a Submitted,
        timeout_ms: u32,
    ) -> Step<'a, UpstreamState> {
        Box::pin(segmind::poll(provider, sub, timeout_ms))
    }

    /// `POST /v2/requests/{id}/cancel` answers the status with `metrics.credits`; a
    /// full refund there means nothing was spent. A finished job answers 409 (it ran).
    fn cancel<'a>(
        &'a self,
        provider: &'a Provider,
        sub: &'a Submitted,
        timeout_ms: u32,
    ) -> Step<'a, CancelOutcome> {
        Box::pin(async move {
            let url = format!(
                "{}/v2/requests/{}/cancel",
                provider.base_url, sub.upstream_id
            );
            let mut req = segmind::build_get(provider, &url);
            req.method = HttpMethod::Post;
            let resp = send(self.name(), &req, timeout_ms).await?;
            if resp.status == 409 || resp.status == 404 {
                return Ok(CancelOutcome::Requested);
            }
            let v = success_json(self.name(), &resp)?;
            let credits = &v["metrics"]["credits"];
            let stopped = credits["charged"].as_u64().is_some_and(|c| c > 0)
                && credits["refunded"] == credits["charged"];
            Ok(if stopped {
                CancelOutcome::Stopped
            } else {
                CancelOutcome::Requested
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::providers::Kind;
    use crate::secret::Secret;

    #[test]
    fn a_parallax_upstreams_idempotency_409_is_retried_after_its_retry_after() {
        let segmind = Provider {
            kind: Kind::named("segmind"),
            base_url: "https://api.segmind.com".into(),
            api_key: Some(Secret::new("sg_test")),
        };
        let parallax = Provider {
            kind: Kind::named("parallax"),
            base_url: "https://gpu.example.com".into(),
            api_key: Some(Secret::new("px_test")),
        };
        // What our own edge answers (`accounts.rs`, `Outcome::InProgress`).
        let pending = UpstreamResponse {
            status: 409,
            retry_after: Some(1),
            body: json!({"error": "A request with this Idempotency-Key is still being processed; retry shortly", "code": "conflict"})
                .to_string()
                .into_bytes(),
        };
        assert!(matches!(
            ParallaxUpstream.parse_submit(&parallax, "j", &pending),
            Err(UpstreamError::InProgress { retry_after: 1, .. })
        ));
        let no_header = UpstreamResponse {
            retry_after: None,
            ..pending.clone()
        };
        assert!(matches!(
            ParallaxUpstream.parse_submit(&parallax, "j", &no_header),
            Err(UpstreamError::InProgress { retry_after: 1, .. })
        ));
        assert!(
            matches!(
                segmind::parse_submit(&segmind, &pending),
                Err(UpstreamError::Permanent(_))
            ),
            "Segmind has no idempotency: its 409 is a refusal"
        );
    }
}
