//! Segmind's v2 queue API: `POST /v2/{model}` with `x-api-key` → `request_id` and
//! absolute `status_url` / `response_url`; status `QUEUED|PROCESSING|COMPLETED|FAILED`
//! (FAILED is HTTP 422 with `error`); the result's `output` is the image's URL and
//! `images` lists every image (`e2e/contracts/segmind-v2.json`);
//! records expire after an hour (then 404). A self-hosted Parallax speaks the same
//! protocol: `parallax.rs` builds on these functions.

use parallax_api::{Model, Params};
use serde_json::{Map, Value};

use super::Order;
use super::contract::{Adapter, Step};
use super::{
    ControlImage, Submitted, UpstreamError, UpstreamRequest, UpstreamResponse, UpstreamState,
    error_detail, send,
};
use crate::hooks::Callback;

use super::Provider;

fn headers(cfg: &Provider) -> Vec<(&'static str, String)> {
    let mut h = vec![("accept", "application/json".to_owned())];
    if let Some(key) = &cfg.api_key {
        h.push(("x-api-key", key.expose().to_owned()));
    }
    h
}

/// The submit request. Our parameter names are Segmind's own; each is copied by name
/// from the catalog; the control image is a link where the deployment has one (both
/// Segmind and Parallax fetch an image URL), else base64.
///
/// `control_type` is not Segmind's (its flux-depth models always estimate the depth,
/// https://segmind.com/models/flux-depth-pro/api lists no such input): it is sent only
/// to a Parallax upstream, and there only when it is `depth`, so an upstream that
/// predates it still takes every other job.
pub fn build_submit(
    cfg: &Provider,
    model: Model,
    params: &Params,
    control: &ControlImage,
) -> UpstreamRequest {
    let mut body = Map::new();
    for spec in model.params() {
        if spec.name == "control_image" {
            body.insert(spec.name.into(), Value::from(control.url_or_base64()));
        } else if spec.name == "control_type" {
            if cfg.kind.takes_depth_maps(model) && params.control_is_depth() {
                body.insert(spec.name.into(), Value::from("depth"));
            }
        } else if let Some(v) = params.get(spec.name) {
            body.insert(spec.name.into(), v.clone());
        }
    }
    UpstreamRequest::post_json(
        format!("{}/v2/{}", cfg.base_url, model.slug()),
        headers(cfg),
        &Value::Object(body),
    )
}

fn json(body: &[u8]) -> Option<Value> {
    serde_json::from_slice(body).ok()
}

pub fn parse_submit(cfg: &Provider, resp: &UpstreamResponse) -> Result<Submitted, UpstreamError> {
    let name = cfg.kind.name();
    if resp.status != 200 && resp.status != 201 && resp.status != 202 {
        return Err(UpstreamError::from_status(
            name,
            resp.status,
            resp.retry_after,
            &error_detail(&resp.body),
        ));
    }
    let v = json(&resp.body).ok_or_else(|| UpstreamError::Transient {
        reason: format!("{name} answered submit with malformed JSON"),
        retry_after: None,
    })?;
    let id = v
        .get("request_id")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            UpstreamError::Permanent(format!("{name} answered submit without a request_id"))
        })?;
    // A URL off the provider's own hosts is never called with its key: the
    // documented path on the configured base is used instead.
    let url = |k: &str, fallback: String| {
        v.get(k)
            .and_then(Value::as_str)
            .filter(|u| super::trusts(cfg, u))
            .map_or(fallback, str::to_owned)
    };
    Ok(Submitted {
        upstream_id: id.to_owned(),
        status_url: url(
            "status_url",
            format!("{}/v2/requests/{id}/status", cfg.base_url),
        ),
        result_url: url("response_url", format!("{}/v2/requests/{id}", cfg.base_url)),
        cancel_url: None,
        backstop_ms: None,
    })
}

pub fn build_get(cfg: &Provider, url: &str) -> UpstreamRequest {
    UpstreamRequest::get(url, headers(cfg))
}

/// Parses a status or result body. Both carry `status`; a COMPLETED result carries
/// `output`. A COMPLETED status without outputs answers `Completed(vec![])`, meaning
/// "fetch the result".
pub fn parse_state(resp: &UpstreamResponse) -> Result<UpstreamState, UpstreamError> {
    let v = json(&resp.body);
    let status = v
        .as_ref()
        .and_then(|v| v.get("status"))
        .and_then(Value::as_str)
        .map(str::to_ascii_uppercase);
    if resp.status == 404 {
        return Err(UpstreamError::Permanent(
            "segmind no longer knows this job (expired or lost)".into(),
        ));
    }
    // FAILED comes as 422, but a FAILED body is accepted whatever the code.
    if status.as_deref() == Some("FAILED") {
        let reason = v
            .as_ref()
            .and_then(|v| v.get("error"))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .unwrap_or("the provider reported the job as failed");
        return Ok(UpstreamState::Failed(reason.chars().take(500).collect()));
    }
    if !(200..300).contains(&resp.status) {
        return Err(UpstreamError::from_status(
            "the provider",
            resp.status,
            resp.retry_after,
            &error_detail(&resp.body),
        ));
    }
    let Some(v) = v else {
        return Err(UpstreamError::Transient {
            reason: "segmind answered with malformed JSON".into(),
            retry_after: None,
        });
    };
    match status.as_deref() {
        Some("QUEUED") => Ok(UpstreamState::Queued),
        Some("PROCESSING") => Ok(UpstreamState::Processing),
        Some("COMPLETED") => Ok(UpstreamState::Completed(outputs(&v))),
        Some(other) => Err(UpstreamError::Transient {
            reason: format!(
                "segmind answered an unknown status `{}`",
                other.chars().take(40).collect::<String>()
            ),
            retry_after: None,
        }),
        None => Err(UpstreamError::Transient {
            reason: "segmind answered without a status".into(),
            retry_after: None,
        }),
    }
}

/// The result's images: every `images[].url` when the body lists them (Segmind, and a
/// Parallax since `output` became one URL), else `output`: one URL, or a list of URLs
/// or of objects with `url` (a Parallax from before, some Segmind models).
fn outputs(body: &Value) -> Vec<String> {
    let one = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("url").and_then(Value::as_str).map(str::to_owned),
        _ => None,
    };
    let all = |v: Option<&Value>| match v {
        Some(Value::Array(items)) => items.iter().filter_map(one).collect(),
        Some(v) => one(v).into_iter().collect(),
        None => Vec::new(),
    };
    match all(body.get("images")) {
        images if images.is_empty() => all(body.get("output")),
        images => images,
    }
}

/// Its documented URLs for a request `id` on `base`: status and result, no cancel.
pub fn documented_urls(base: &str, id: &str) -> (String, String, Option<String>) {
    (
        format!("{base}/v2/requests/{id}/status"),
        format!("{base}/v2/requests/{id}"),
        None,
    )
}

/// A poll: the status, then the result once it says COMPLETED.
pub async fn poll(
    cfg: &Provider,
    sub: &Submitted,
    timeout_ms: u32,
) -> Result<UpstreamState, UpstreamError> {
    let name = cfg.kind.name();
    let resp = send(name, &build_get(cfg, &sub.status_url), timeout_ms).await?;
    let state = parse_state(&resp)?;
    if state != UpstreamState::Completed(Vec::new()) {
        return Ok(state);
    }
    let resp = send(name, &build_get(cfg, &sub.result_url), timeout_ms).await?;
    parse_state(&resp)
}

/// Segmind: polled (its v2 async API names no webhook), no cancel.
#[derive(Debug)]
pub struct Segmind;

impl Adapter for Segmind {
    fn name(&self) -> &'static str {
        "segmind"
    }

    fn env_prefix(&self) -> &'static str {
        "SEGMIND"
    }

    fn default_base_url(&self) -> Option<&'static str> {
        Some("https://api.segmind.com")
    }

    fn documented_hosts(&self) -> &'static [&'static str] {
        &["api.segmind.com"]
    }

    /// "Free 5 RPM, Pro 50 RPM, Enterprise custom" per account, status reads not
    /// exempted (https://docs.segmind.com/api-reference/rate-limits).
    fn reads_limited(&self) -> bool {
        true
    }

    /// flux-depth-pro/dev's `control_image` is "an image URL or base64"
    /// (https://segmind.com/models/flux-depth-pro/api).
    fn fetches(&self, link: &str) -> bool {
        link.starts_with("https://") || link.starts_with("http://")
    }

    /// The FLUX models; Segmind has no depth preview operation Parallax maps to.
    fn serves(&self, model: Model) -> bool {
        !model.is_preview()
    }

    fn build_submit(
        &self,
        provider: &Provider,
        job: &Order<'_>,
        control: &ControlImage,
        _callback: Option<&Callback>,
        _prepared: &str,
    ) -> Result<UpstreamRequest, UpstreamError> {
        Ok(build_submit(provider, job.model, job.params, control))
    }

    fn parse_submit(
        &self,
        provider: &Provider,
        _job_id: &str,
        resp: &UpstreamResponse,
    ) -> Result<Submitted, UpstreamError> {
        parse_submit(provider, resp)
    }

    fn documented_urls(
        &self,
        _model: Model,
        base: &str,
        id: &str,
    ) -> Option<(String, String, Option<String>)> {
        Some(documented_urls(base, id))
    }

    fn poll<'a>(
        &'a self,
        provider: &'a Provider,
        sub: &'a Submitted,
        timeout_ms: u32,
    ) -> Step<'a, UpstreamState> {
        Box::pin(poll(provider, sub, timeout_ms))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::providers::{HttpMethod, Kind};
    use crate::secret::Secret;

    fn cfg() -> Provider {
        Provider {
            kind: Kind::named("segmind"),
            base_url: "https://api.segmind.com".into(),
            api_key: Some(Secret::new("SG_test")),
        }
    }

    use crate::providers::test_response as resp;

    #[test]
    fn submit_sends_the_documented_body_with_the_key_header() {
        let fields =
            json!({"prompt": "a house", "control_image": "https://x.test/a.jpg", "seed": 96522});
        let v = parallax_api::validate(Model::FluxDepthPro, fields.as_object().unwrap(), false)
            .unwrap();
        let req = build_submit(
            &cfg(),
            Model::FluxDepthPro,
            &v.params,
            &ControlImage::Inline(b"ABC".to_vec()),
        );
        assert_eq!(req.url, "https://api.segmind.com/v2/flux-depth-pro");
        assert_eq!(req.method, HttpMethod::Post);
        assert!(req.headers.contains(&("x-api-key", "SG_test".into())));
        let body: Value = serde_json::from_slice(req.body.as_deref().unwrap()).unwrap();
        assert_eq!(
            body,
            json!({"prompt": "a house", "control_image": "QUJD", "seed": 96522, "steps": 40,
                   "guidance": 7.0, "output_format": "jpg", "safety_tolerance": 2,
                   "prompt_upsampling": false})
        );
        let link = "https://parallax.example.com/results/x/control?exp=1&sig=s";
        let req = build_submit(
            &cfg(),
            Model::FluxDepthPro,
            &v.params,
            &ControlImage::Link(link.into()),
        );
        let body: Value = serde_json::from_slice(req.body.as_deref().unwrap()).unwrap();
        assert_eq!(body["control_image"], link);
    }

    #[test]
    fn submit_response_from_the_docs_gives_absolute_poll_urls() {
        let r = resp(
            200,
            json!({"request_id":"2c7f59ea-13f1-402c-9353-915a2b5a2124","status":"QUEUED",
                   "poll_url":"https://api.segmind.com/v1/requests/2c7f59ea-13f1-402c-9353-915a2b5a2124",
                   "status_url":"https://api.segmind.com/v2/requests/2c7f59ea-13f1-402c-9353-915a2b5a2124/status",
                   "response_url":"https://api.segmind.com/v2/requests/2c7f59ea-13f1-402c-9353-915a2b5a2124"}),
        );
        let s = parse_submit(&cfg(), &r).unwrap();
        assert_eq!(s.upstream_id, "2c7f59ea-13f1-402c-9353-915a2b5a2124");
        assert!(s.status_url.ends_with("/status"));
        let no_urls = resp(200, json!({"request_id": "abc"}));
        assert_eq!(
            parse_submit(&cfg(), &no_urls).unwrap().result_url,
            "https://api.segmind.com/v2/requests/abc"
        );
        // URLs off Segmind's hosts (or in clear text) would get the key: the
        // documented paths on the configured base are used instead.
        let elsewhere = resp(
            200,
            json!({"request_id": "abc", "status_url": "https://evil.example/s",
                   "response_url": "http://api.segmind.com/v2/requests/abc"}),
        );
        let s = parse_submit(&cfg(), &elsewhere).unwrap();
        assert_eq!(
            s.status_url,
            "https://api.segmind.com/v2/requests/abc/status"
        );
        assert_eq!(s.result_url, "https://api.segmind.com/v2/requests/abc");
    }

    #[test]
    fn submit_errors_are_classified() {
        let unauthorized = resp(401, json!({"error": "Unauthorized. API key is invalid"}));
        assert!(
            matches!(parse_submit(&cfg(), &unauthorized), Err(UpstreamError::Permanent(m)) if m.contains("API key is invalid"))
        );
        let limited = UpstreamResponse {
            status: 429,
            retry_after: Some(12),
            body: Vec::new(),
        };
        assert!(matches!(
            parse_submit(&cfg(), &limited),
            Err(UpstreamError::Transient {
                retry_after: Some(12),
                ..
            })
        ));
    }

    #[test]
    fn statuses_from_the_docs_map_to_ours() {
        assert_eq!(
            parse_state(&resp(
                200,
                json!({"status":"QUEUED","request_id":"a","metrics":{}})
            )),
            Ok(UpstreamState::Queued)
        );
        assert_eq!(
            parse_state(&resp(200, json!({"status":"PROCESSING","request_id":"a"}))),
            Ok(UpstreamState::Processing)
        );
        assert_eq!(
            parse_state(&resp(
                422,
                json!({"status":"FAILED","error":"Validation error in prompt","metrics":{"inference_time":0.008},"request_id":"a"})
            )),
            Ok(UpstreamState::Failed("Validation error in prompt".into()))
        );
        assert_eq!(
            parse_state(&resp(
                200,
                json!({"status":"COMPLETED","error":null,"metrics":{"inference_time":2.0,"cost":0.05},"output":"https://images.segmind.com/generations/x.jpeg"})
            )),
            Ok(UpstreamState::Completed(vec![
                "https://images.segmind.com/generations/x.jpeg".into()
            ]))
        );
        assert_eq!(
            parse_state(&resp(
                200,
                json!({"status":"COMPLETED","output":["https://a/0.webp", {"url": "https://a/1.webp"}]})
            )),
            Ok(UpstreamState::Completed(vec![
                "https://a/0.webp".into(),
                "https://a/1.webp".into()
            ]))
        );
        // Several images: `output` is the first, `images` has them all.
        let image = |n: u8| json!({"url": format!("https://a/{n}.jpg"), "content_type": "image/jpeg", "file_name": format!("{n}.jpg"), "file_size": 10});
        assert_eq!(
            parse_state(&resp(
                200,
                json!({"status":"COMPLETED","output":"https://a/0.jpg","images":[image(0), image(1)]})
            )),
            Ok(UpstreamState::Completed(vec![
                "https://a/0.jpg".into(),
                "https://a/1.jpg".into()
            ]))
        );
    }

    #[test]
    fn expiry_and_garbage_are_not_hangs() {
        assert!(matches!(
            parse_state(&resp(404, json!({"error":"Request a not found"}))),
            Err(UpstreamError::Permanent(_))
        ));
        let garbage = UpstreamResponse {
            status: 200,
            retry_after: None,
            body: b"<html>".to_vec(),
        };
        assert!(matches!(
            parse_state(&garbage),
            Err(UpstreamError::Transient { .. })
        ));
        assert!(matches!(
            parse_state(&resp(502, json!({"error":"bad gateway"}))),
            Err(UpstreamError::Transient { .. })
        ));
    }
}
