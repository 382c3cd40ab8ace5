//! Black Forest Labs direct: `POST /v1/flux-pro-1.0-depth` (`x-key`) → `{id,
//! polling_url}`; GET the `polling_url` verbatim: `Pending` → `Ready` with
//! `result.sample` (valid ~10 minutes), or `Error`, `Request/Content Moderated`,
//! `Task not found`. BFL took this endpoint out of its public API, so it stays
//! behind configuration, and a 404/410 is a clear error rather than a hang.

use base64::Engine;
use parallax_api::{Model, Params, RequestId};
use serde_json::{Map, Value};

use super::Order;
use super::Provider;
use super::contract::{Adapter, HookCheck, HookError, Step};
use super::{
    ControlImage, Submitted, UpstreamError, UpstreamRequest, UpstreamResponse, UpstreamState,
    inline_bytes, send,
};
use crate::hooks::{self, Callback, Hooks};

fn headers(cfg: &Provider) -> Vec<(&'static str, String)> {
    let mut h = vec![("accept", "application/json".to_owned())];
    if let Some(key) = &cfg.api_key {
        h.push(("x-key", key.expose().to_owned()));
    }
    h
}

/// BFL takes every pro parameter; `jpg` is spelled `jpeg` there. With `callback`, BFL
/// POSTs the finished task to `webhook_url` with `webhook_secret` echoed in
/// `X-Webhook-Secret` (providers-2026.md §1.2, §1.5): the job's callback secret.
pub fn build_submit(
    cfg: &Provider,
    params: &Params,
    image: &[u8],
    callback: Option<&Callback>,
) -> UpstreamRequest {
    let mut body = Map::new();
    for name in [
        "prompt",
        "seed",
        "steps",
        "guidance",
        "safety_tolerance",
        "prompt_upsampling",
    ] {
        if let Some(v) = params.get(name) {
            body.insert(name.into(), v.clone());
        }
    }
    let format = match params.output_format() {
        "jpg" => "jpeg",
        other => other,
    };
    body.insert("output_format".into(), Value::from(format));
    // `preprocessed_image` "bypasses the control preprocessing step": the caller's own
    // depth map; one of it and `control_image` must be given (providers-2026.md §1.2,
    // black-forest-labs/blackforest `src/blackforest/types/inputs/flux_pro_depth.py`).
    let field = if params.control_is_depth() {
        "preprocessed_image"
    } else {
        "control_image"
    };
    body.insert(
        field.into(),
        Value::from(base64::engine::general_purpose::STANDARD.encode(image)),
    );
    if let Some(cb) = callback {
        body.insert("webhook_url".into(), Value::from(cb.url.clone()));
        body.insert("webhook_secret".into(), Value::from(cb.secret.clone()));
    }
    UpstreamRequest::post_json(
        format!("{}/v1/flux-pro-1.0-depth", cfg.base_url),
        headers(cfg),
        &Value::Object(body),
    )
}

pub fn build_get(cfg: &Provider, url: &str) -> UpstreamRequest {
    UpstreamRequest::get(url, headers(cfg))
}

fn json(resp: &UpstreamResponse) -> Result<Value, UpstreamError> {
    if resp.status == 404 || resp.status == 410 {
        return Err(UpstreamError::Permanent(format!(
            "bfl answered HTTP {}: the flux-pro-1.0-depth endpoint is not available (BFL retired it from its public API)",
            resp.status
        )));
    }
    super::success_json("bfl", resp)
}

pub fn parse_submit(resp: &UpstreamResponse) -> Result<Submitted, UpstreamError> {
    let v = json(resp)?;
    match (v["id"].as_str(), v["polling_url"].as_str()) {
        (Some(id), Some(url)) => Ok(Submitted {
            upstream_id: id.to_owned(),
            status_url: url.to_owned(),
            result_url: url.to_owned(),
            cancel_url: None,
            backstop_ms: None,
        }),
        _ => Err(UpstreamError::Permanent(
            "bfl answered without id and polling_url".into(),
        )),
    }
}

pub fn parse_state(resp: &UpstreamResponse) -> Result<UpstreamState, UpstreamError> {
    let v = json(resp)?;
    match v["status"].as_str() {
        Some("Pending") => {
            let progress = v["progress"].as_f64().unwrap_or(0.0);
            Ok(if progress > 0.0 {
                UpstreamState::Processing
            } else {
                UpstreamState::Queued
            })
        }
        Some("Ready") => match v["result"]["sample"].as_str() {
            Some(url) => Ok(UpstreamState::Completed(vec![url.to_owned()])),
            None => Ok(UpstreamState::Failed(
                "bfl was Ready without a sample".into(),
            )),
        },
        Some(s @ ("Request Moderated" | "Content Moderated")) => Ok(UpstreamState::Failed(
            format!("{s}: the provider's safety filter blocked this job"),
        )),
        Some("Task not found") => Err(UpstreamError::Permanent(
            "bfl no longer knows this task".into(),
        )),
        Some(other) => Ok(UpstreamState::Failed(format!(
            "bfl reported `{}`",
            other.chars().take(40).collect::<String>()
        ))),
        None => Err(UpstreamError::Transient {
            reason: "bfl answered without a status".into(),
            retry_after: None,
        }),
    }
}

/// BFL direct: flux-depth-pro only, called back (`webhook_url`), no cancel.
#[derive(Debug)]
pub struct Bfl;

impl Adapter for Bfl {
    fn name(&self) -> &'static str {
        "bfl"
    }

    fn env_prefix(&self) -> &'static str {
        "BFL"
    }

    fn default_base_url(&self) -> Option<&'static str> {
        Some("https://api.bfl.ai")
    }

    /// `api.bfl.ai`, its regional `api.eu.bfl.ai`/`api.us.bfl.ai`, the legacy
    /// `api.eu1`/`api.us1.bfl.ai` and `api.bfl.ml` (BFL's integration guidelines; see
    /// ../shared/reference/providers-2026.md).
    fn documented_hosts(&self) -> &'static [&'static str] {
        &[
            "api.bfl.ai",
            "api.eu.bfl.ai",
            "api.us.bfl.ai",
            "api.eu1.bfl.ai",
            "api.us1.bfl.ai",
            "api.bfl.ml",
        ]
    }

    /// Its depth endpoint documents base64 only.
    fn fetches(&self, _link: &str) -> bool {
        false
    }

    fn serves(&self, model: Model) -> bool {
        model == Model::FluxDepthPro
    }

    /// As `preprocessed_image` ([`build_submit`]).
    fn takes_depth_maps(&self, _model: Model) -> bool {
        true
    }

    fn build_submit(
        &self,
        provider: &Provider,
        job: &Order<'_>,
        control: &ControlImage,
        callback: Option<&Callback>,
        _prepared: &str,
    ) -> Result<UpstreamRequest, UpstreamError> {
        Ok(build_submit(
            provider,
            job.params,
            inline_bytes(provider, control)?,
            callback,
        ))
    }

    fn parse_submit(
        &self,
        _provider: &Provider,
        _job_id: &str,
        resp: &UpstreamResponse,
    ) -> Result<Submitted, UpstreamError> {
        parse_submit(resp)
    }

    fn documented_urls(
        &self,
        _model: Model,
        base: &str,
        id: &str,
    ) -> Option<(String, String, Option<String>)> {
        let poll = format!("{base}/v1/get_result?id={id}");
        Some((poll.clone(), poll, None))
    }

    fn poll<'a>(
        &'a self,
        provider: &'a Provider,
        sub: &'a Submitted,
        timeout_ms: u32,
    ) -> Step<'a, UpstreamState> {
        Box::pin(async move {
            let resp = send(
                self.name(),
                &build_get(provider, &sub.status_url),
                timeout_ms,
            )
            .await?;
            parse_state(&resp)
        })
    }

    fn pushes(&self, _hooks: &Hooks) -> bool {
        true
    }

    /// `X-Webhook-Secret` must be the job's callback secret (`hooks::check_bfl`).
    fn verify_hook<'a>(
        &'a self,
        hooks: &'a Hooks,
        id: &'a RequestId,
        header: &'a dyn Fn(&str) -> Option<String>,
        body: &'a [u8],
        _now_secs: u64,
    ) -> HookCheck<'a> {
        Box::pin(async move {
            hooks::check_bfl(hooks, id, header("x-webhook-secret").as_deref(), body)
                .map_err(HookError::Refused)
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    use crate::providers::test_response as resp;

    #[test]
    fn results_from_the_openapi_map_to_ours() {
        let s = parse_submit(&resp(200, json!({"id": "t1", "polling_url": "https://api.bfl.ai/v1/get_result?id=t1", "cost": 2.5}))).unwrap();
        assert_eq!(s.status_url, "https://api.bfl.ai/v1/get_result?id=t1");
        assert_eq!(
            parse_state(&resp(
                200,
                json!({"id": "t1", "status": "Pending", "progress": null})
            )),
            Ok(UpstreamState::Queued)
        );
        assert_eq!(
            parse_state(&resp(
                200,
                json!({"id": "t1", "status": "Pending", "progress": 0.4})
            )),
            Ok(UpstreamState::Processing)
        );
        assert_eq!(
            parse_state(&resp(
                200,
                json!({"id": "t1", "status": "Ready", "result": {"sample": "https://bfldeliveryprod.blob.core.windows.net/x.jpg"}})
            )),
            Ok(UpstreamState::Completed(vec![
                "https://bfldeliveryprod.blob.core.windows.net/x.jpg".into()
            ]))
        );
        assert!(
            matches!(parse_state(&resp(200, json!({"status": "Content Moderated"}))), Ok(UpstreamState::Failed(m)) if m.contains("Moderated"))
        );
    }

    #[test]
    fn a_retired_endpoint_is_a_clear_permanent_error() {
        for status in [404, 410] {
            assert!(
                matches!(parse_submit(&resp(status, json!({"detail": "Not Found"}))), Err(UpstreamError::Permanent(m)) if m.contains("retired"))
            );
        }
    }
}
