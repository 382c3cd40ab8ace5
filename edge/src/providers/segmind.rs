//! Segmind's v2 queue API: `POST /v2/{model}` with `x-api-key` → `request_id` and
//! absolute `status_url` / `response_url`; status `QUEUED|PROCESSING|COMPLETED|FAILED`
//! (FAILED is HTTP 422 with `error`); the result's `output` is the image's URL and
//! `images` lists every image (`e2e/contracts/segmind-v2.json`);
//! records expire after an hour (then 404). A self-hosted Parallax speaks the same
//! protocol, so the `parallax` provider uses this adapter too.

use parallax_api::{Model, Params};
use serde_json::{Map, Value};

use super::{
    ControlImage, Submitted, UpstreamError, UpstreamRequest, UpstreamResponse, UpstreamState,
    error_detail,
};

use crate::config::Provider;

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
    // A Parallax upstream answers 409 + `Retry-After` while the first request under
    // the same `Idempotency-Key` (our job id) is still starting its job: a resubmit
    // that came too soon, worth retrying (the answer then replays that job).
    if cfg.kind == super::Kind::Parallax && resp.status == 409 {
        return Err(UpstreamError::InProgress {
            reason: format!(
                "{name} is still starting this job (409: {})",
                error_detail(&resp.body)
            ),
            retry_after: resp.retry_after.unwrap_or(1),
        });
    }
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::config::Secret;
    use crate::providers::{HttpMethod, Kind};

    fn cfg() -> Provider {
        Provider {
            kind: Kind::Segmind,
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
    fn a_parallax_upstreams_idempotency_409_is_retried_after_its_retry_after() {
        let parallax = Provider {
            kind: Kind::Parallax,
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
            parse_submit(&parallax, &pending),
            Err(UpstreamError::InProgress { retry_after: 1, .. })
        ));
        let no_header = UpstreamResponse {
            retry_after: None,
            ..pending.clone()
        };
        assert!(matches!(
            parse_submit(&parallax, &no_header),
            Err(UpstreamError::InProgress { retry_after: 1, .. })
        ));
        assert!(
            matches!(
                parse_submit(&cfg(), &pending),
                Err(UpstreamError::Permanent(_))
            ),
            "Segmind has no idempotency: its 409 is a refusal"
        );
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
