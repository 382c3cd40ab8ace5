//! Replicate's predictions API: `POST /v1/models/black-forest-labs/{model}/predictions`
//! (`Authorization: Bearer`) with `{"input": {...}}`; poll the prediction's
//! `urls.get`; `starting | processing | succeeded | failed | canceled | aborted`;
//! cancel via `urls.cancel`. Outputs are deleted after an hour: download at once.
//! `control_type: depth` is refused (the default of [`Adapter::takes_depth_maps`]):
//! black-forest-labs/flux-depth-dev and -pro take only `control_image` and estimate
//! its depth themselves (https://replicate.com/black-forest-labs/flux-depth-dev/api).
//! The depth preview runs the community model chenxwh/depth-anything-v2, which, being a
//! community model, is created by its version id: `POST /v1/predictions {"version",
//! "input"}` (https://replicate.com/docs/reference/http#predictions.create). Its cog
//! source (chenxwh/Depth-Anything-V2 @1e31a20 `predict.py`): input `image`,
//! `model_size` Small|Base|Large (default Large); output `{color_depth, grey_depth}`,
//! `grey_depth` a one-channel PNG of the min-max normalised relative depth, near =
//! bright — the one Parallax keeps. The version is [`PREVIEW_VERSION`], the one public
//! clients pin (e.g. `replicate.run("chenxwh/depth-anything-v2:b239ea33…", {input:
//! {image, model_size: "Large"}})`, found in several public repositories).
//! UNVERIFIED: that this version still runs (no live call is possible here).

use parallax_api::{FieldError, Model, Params, RequestId};
use serde_json::{Map, Value, json};

use super::Order;
use super::Provider;
use super::contract::{Adapter, HookCheck, HookError, Step};
use super::{
    CancelOutcome, ControlImage, Submitted, UpstreamError, UpstreamRequest, UpstreamResponse,
    UpstreamState, send, success_json,
};
use crate::hooks::{self, Callback, Hooks};
use crate::input::image::ImageInfo;

/// chenxwh/depth-anything-v2's version (see the module's notes).
pub const PREVIEW_VERSION: &str =
    "b239ea33cff32bb7abb5db39ffe9a09c14cbc2894331d1ef66fe096eed88ebd4";

/// Input names per model; ours are Replicate's own for both models.
const PRO_INPUTS: &[&str] = &[
    "prompt",
    "seed",
    "steps",
    "guidance",
    "safety_tolerance",
    "prompt_upsampling",
    "output_format",
];
const DEV_INPUTS: &[&str] = &[
    "prompt",
    "seed",
    "guidance",
    "megapixels",
    "num_outputs",
    "num_inference_steps",
    "output_format",
    "output_quality",
    "disable_safety_checker",
];

/// Replicate's flux-depth-pro writes only JPEG and PNG.
pub fn check(model: Model, params: &Params) -> Result<(), FieldError> {
    if model == Model::FluxDepthPro && params.output_format() == "webp" {
        return Err(FieldError::new(
            "output_format",
            "webp is not available from replicate for flux-depth-pro; use jpg or png",
        ));
    }
    Ok(())
}

fn headers(cfg: &Provider) -> Vec<(&'static str, String)> {
    let mut h = vec![("accept", "application/json".to_owned())];
    if let Some(key) = &cfg.api_key {
        h.push(("authorization", format!("Bearer {}", key.expose())));
    }
    h
}

/// The create call. With `callback`, Replicate POSTs the prediction there when it
/// ends (`webhook` + `webhook_events_filter: ["completed"]`: succeeded, failed or
/// canceled; https://replicate.com/docs/topics/webhooks/receive-webhook).
pub fn build_submit(
    cfg: &Provider,
    model: Model,
    params: &Params,
    control: &ControlImage,
    media_type: &str,
    callback: Option<&Callback>,
) -> UpstreamRequest {
    let names = match model {
        Model::FluxDepthPro => PRO_INPUTS,
        Model::FluxDepthDev => DEV_INPUTS,
        Model::DepthAnythingV2 => return build_preview(cfg, control, media_type, callback),
    };
    let mut input = Map::new();
    for name in names {
        if let Some(v) = params.get(name) {
            input.insert((*name).to_owned(), v.clone());
        }
    }
    // A link where the deployment has one (data URLs are meant for small files), else
    // a data URL.
    input.insert(
        "control_image".into(),
        Value::from(control.url_or_data_url(media_type)),
    );
    let mut body = json!({"input": input});
    if let Some(cb) = callback {
        body["webhook"] = json!(cb.url);
        body["webhook_events_filter"] = json!(["completed"]);
    }
    UpstreamRequest::post_json(
        format!(
            "{}/v1/models/black-forest-labs/{}/predictions",
            cfg.base_url,
            model.slug()
        ),
        headers(cfg),
        &body,
    )
}

/// The depth preview's create call: the version, the `image` and the largest model.
fn build_preview(
    cfg: &Provider,
    control: &ControlImage,
    media_type: &str,
    callback: Option<&Callback>,
) -> UpstreamRequest {
    let mut body = json!({
        "version": PREVIEW_VERSION,
        "input": {"image": control.url_or_data_url(media_type), "model_size": "Large"},
    });
    if let Some(cb) = callback {
        body["webhook"] = json!(cb.url);
        body["webhook_events_filter"] = json!(["completed"]);
    }
    UpstreamRequest::post_json(
        format!("{}/v1/predictions", cfg.base_url),
        headers(cfg),
        &body,
    )
}

pub fn build_get(cfg: &Provider, url: &str) -> UpstreamRequest {
    UpstreamRequest::get(url, headers(cfg))
}

pub fn build_cancel(cfg: &Provider, url: &str) -> UpstreamRequest {
    let mut req = UpstreamRequest::post_json(url, headers(cfg), &json!({}));
    req.body = None;
    req
}

fn prediction(resp: &UpstreamResponse) -> Result<Value, UpstreamError> {
    success_json("replicate", resp)
}

pub fn parse_prediction_urls(resp: &UpstreamResponse) -> Result<Submitted, UpstreamError> {
    let p = prediction(resp)?;
    let id = p["id"].as_str().unwrap_or_default().to_owned();
    let get = p["urls"]["get"].as_str().map(str::to_owned);
    match (id.is_empty(), get) {
        (false, Some(get)) => Ok(Submitted {
            upstream_id: id,
            status_url: get.clone(),
            result_url: get,
            cancel_url: p["urls"]["cancel"].as_str().map(str::to_owned),
            backstop_ms: None,
        }),
        _ => Err(UpstreamError::Permanent(
            "replicate answered without a prediction id and urls.get".into(),
        )),
    }
}

pub fn parse_state(resp: &UpstreamResponse) -> Result<UpstreamState, UpstreamError> {
    if resp.status == 404 {
        return Err(UpstreamError::Permanent(
            "replicate no longer knows this prediction".into(),
        ));
    }
    let p = prediction(resp)?;
    match p["status"].as_str() {
        Some("starting") => Ok(UpstreamState::Queued),
        Some("processing") => Ok(UpstreamState::Processing),
        Some("succeeded") => {
            let outputs: Vec<String> = match &p["output"] {
                Value::String(s) => vec![s.clone()],
                Value::Array(items) => items
                    .iter()
                    .filter_map(|i| i.as_str().map(str::to_owned))
                    .collect(),
                // The depth preview's `{color_depth, grey_depth}`: the grey map.
                Value::Object(o) => o
                    .get("grey_depth")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .into_iter()
                    .collect(),
                _ => Vec::new(),
            };
            if outputs.is_empty() {
                Ok(UpstreamState::Failed(
                    "replicate succeeded without any output".into(),
                ))
            } else {
                Ok(UpstreamState::Completed(outputs))
            }
        }
        Some(status @ ("failed" | "canceled" | "aborted")) => Ok(UpstreamState::Failed(
            p["error"]
                .as_str()
                .map_or_else(|| format!("the prediction was {status}"), str::to_owned),
        )),
        other => Err(UpstreamError::Transient {
            reason: format!("replicate answered an unknown status {other:?}"),
            retry_after: None,
        }),
    }
}

/// Replicate: polled, or called back where the deployment has its webhook secret.
#[derive(Debug)]
pub struct Replicate;

impl Adapter for Replicate {
    fn name(&self) -> &'static str {
        "replicate"
    }

    fn env_prefix(&self) -> &'static str {
        "REPLICATE"
    }

    fn default_base_url(&self) -> Option<&'static str> {
        Some("https://api.replicate.com")
    }

    /// `urls.get` and `urls.cancel`.
    fn documented_hosts(&self) -> &'static [&'static str] {
        &["api.replicate.com"]
    }

    /// File inputs take an HTTP(S) URL or a data URL, and data URLs are only
    /// recommended up to 256 KB
    /// (https://replicate.com/docs/topics/predictions/create-a-prediction).
    fn fetches(&self, link: &str) -> bool {
        link.starts_with("https://") || link.starts_with("http://")
    }

    fn serves(&self, _model: Model) -> bool {
        true
    }

    fn check(&self, model: Model, params: &Params, _input: &ImageInfo) -> Result<(), FieldError> {
        check(model, params)
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
            job.model,
            job.params,
            control,
            job.input.format.media_type(),
            callback,
        ))
    }

    fn parse_submit(
        &self,
        _provider: &Provider,
        _job_id: &str,
        resp: &UpstreamResponse,
    ) -> Result<Submitted, UpstreamError> {
        parse_prediction_urls(resp)
    }

    fn documented_urls(
        &self,
        _model: Model,
        base: &str,
        id: &str,
    ) -> Option<(String, String, Option<String>)> {
        let get = format!("{base}/v1/predictions/{id}");
        Some((
            get.clone(),
            get,
            Some(format!("{base}/v1/predictions/{id}/cancel")),
        ))
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

    /// `POST urls.cancel` answers the prediction; one canceled before it started
    /// (`started_at` null) never ran.
    /// https://replicate.com/docs/reference/http#predictions.cancel
    fn cancel<'a>(
        &'a self,
        provider: &'a Provider,
        sub: &'a Submitted,
        timeout_ms: u32,
    ) -> Step<'a, CancelOutcome> {
        Box::pin(async move {
            let Some(url) = &sub.cancel_url else {
                return Ok(CancelOutcome::Unsupported);
            };
            let resp = send(self.name(), &build_cancel(provider, url), timeout_ms).await?;
            let v = success_json(self.name(), &resp)?;
            let never_started = v["status"] == "canceled" && v["started_at"].is_null();
            Ok(if never_started {
                CancelOutcome::Stopped
            } else {
                CancelOutcome::Requested
            })
        })
    }

    /// Only with the account's webhook secret, to verify deliveries by.
    fn pushes(&self, hooks: &Hooks) -> bool {
        hooks.replicate_secret.is_some()
    }

    /// Standard Webhooks, keyed with the account's secret (`hooks::check_standard`).
    fn verify_hook<'a>(
        &'a self,
        hooks: &'a Hooks,
        _id: &'a RequestId,
        header: &'a dyn Fn(&str) -> Option<String>,
        body: &'a [u8],
        now_secs: u64,
    ) -> HookCheck<'a> {
        Box::pin(async move {
            let secret = hooks.replicate_secret.as_ref().ok_or(HookError::NoRoute)?;
            hooks::check_standard(
                secret,
                header("webhook-id").as_deref(),
                header("webhook-timestamp").as_deref(),
                header("webhook-signature").as_deref(),
                body,
                now_secs,
            )
            .map_err(HookError::Refused)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::Kind;
    use crate::secret::Secret;

    fn cfg() -> Provider {
        Provider {
            kind: Kind::named("replicate"),
            base_url: "https://api.replicate.com".into(),
            api_key: Some(Secret::new("r8_test")),
        }
    }

    use crate::providers::test_response as resp;

    #[test]
    fn submit_uses_the_official_model_route_bearer_auth_and_a_data_url() {
        let fields =
            json!({"prompt": "a house", "control_image": "https://x.test/a.jpg", "num_outputs": 2});
        let v = parallax_api::validate(Model::FluxDepthDev, fields.as_object().unwrap(), false)
            .unwrap();
        let req = build_submit(
            &cfg(),
            Model::FluxDepthDev,
            &v.params,
            &ControlImage::Inline(b"\\xff\\xd8".to_vec()),
            "image/jpeg",
            None,
        );
        assert_eq!(
            req.url,
            "https://api.replicate.com/v1/models/black-forest-labs/flux-depth-dev/predictions"
        );
        assert!(
            req.headers
                .contains(&("authorization", "Bearer r8_test".into()))
        );
        let body: Value = serde_json::from_slice(req.body.as_deref().unwrap()).unwrap();
        assert_eq!(body["input"]["num_outputs"], 2);
        assert_eq!(body["input"]["num_inference_steps"], 28);
        assert!(
            body["input"]["control_image"]
                .as_str()
                .unwrap()
                .starts_with("data:image/jpeg;base64,")
        );
        assert!(body["input"].get("steps").is_none());
        // With a link, the file input is that URL.
        let link = "https://parallax.example.com/results/x/control?exp=1&sig=s";
        let req = build_submit(
            &cfg(),
            Model::FluxDepthDev,
            &v.params,
            &ControlImage::Link(link.into()),
            "image/jpeg",
            None,
        );
        let body: Value = serde_json::from_slice(req.body.as_deref().unwrap()).unwrap();
        assert_eq!(body["input"]["control_image"], link);
        assert!(body.get("webhook").is_none());
        // With a callback: Replicate's webhook, for the end of the prediction only.
        let cb = Callback {
            url: "https://px.example/hooks/replicate/x?token=t".into(),
            token: "t".into(),
            secret: "s".into(),
        };
        let req = build_submit(
            &cfg(),
            Model::FluxDepthDev,
            &v.params,
            &ControlImage::Link(link.into()),
            "image/jpeg",
            Some(&cb),
        );
        let body: Value = serde_json::from_slice(req.body.as_deref().unwrap()).unwrap();
        assert_eq!(body["webhook"], cb.url);
        assert_eq!(body["webhook_events_filter"], json!(["completed"]));
    }

    #[test]
    fn the_preview_runs_the_pinned_community_version_and_keeps_the_grey_map() {
        let req = build_submit(
            &cfg(),
            Model::DepthAnythingV2,
            &Params::default(),
            &ControlImage::Link("https://px.example/results/x/control?sig=s".into()),
            "image/jpeg",
            None,
        );
        assert_eq!(req.url, "https://api.replicate.com/v1/predictions");
        let body: Value = serde_json::from_slice(req.body.as_deref().unwrap()).unwrap();
        assert_eq!(body["version"], PREVIEW_VERSION);
        assert_eq!(
            body["input"],
            json!({"image": "https://px.example/results/x/control?sig=s", "model_size": "Large"})
        );
        let done = resp(
            200,
            json!({"id": "p", "status": "succeeded", "output": {
                "color_depth": "https://replicate.delivery/c.png",
                "grey_depth": "https://replicate.delivery/g.png"}}),
        );
        assert_eq!(
            parse_state(&done).unwrap(),
            UpstreamState::Completed(vec!["https://replicate.delivery/g.png".into()])
        );
    }

    #[test]
    fn prediction_states_from_the_docs_map_to_ours() {
        let created = resp(
            201,
            json!({"id": "abc", "status": "starting", "urls": {"get": "https://api.replicate.com/v1/predictions/abc", "cancel": "https://api.replicate.com/v1/predictions/abc/cancel"}}),
        );
        let s = parse_prediction_urls(&created).unwrap();
        assert_eq!(s.status_url, "https://api.replicate.com/v1/predictions/abc");
        assert_eq!(
            s.cancel_url.as_deref(),
            Some("https://api.replicate.com/v1/predictions/abc/cancel")
        );
        assert_eq!(parse_state(&created), Ok(UpstreamState::Queued));
        assert_eq!(
            parse_state(&resp(200, json!({"status": "processing"}))),
            Ok(UpstreamState::Processing)
        );
        assert_eq!(
            parse_state(&resp(
                200,
                json!({"status": "succeeded", "output": "https://replicate.delivery/x/out.jpg"})
            )),
            Ok(UpstreamState::Completed(vec![
                "https://replicate.delivery/x/out.jpg".into()
            ]))
        );
        assert_eq!(
            parse_state(&resp(
                200,
                json!({"status": "failed", "error": "All generated images contained NSFW content."})
            )),
            Ok(UpstreamState::Failed(
                "All generated images contained NSFW content.".into()
            ))
        );
        assert!(matches!(
            parse_state(&resp(200, json!({"status": "canceled"}))),
            Ok(UpstreamState::Failed(_))
        ));
    }

    #[test]
    fn throttling_is_transient_and_billing_is_permanent() {
        let throttled = UpstreamResponse {
            status: 429,
            retry_after: Some(30),
            body: br#"{"detail":"Request was throttled. Your rate limit resets in ~30s."}"#
                .to_vec(),
        };
        assert!(matches!(
            parse_prediction_urls(&throttled),
            Err(UpstreamError::Transient {
                retry_after: Some(30),
                ..
            })
        ));
        let billing = resp(
            402,
            json!({"title": "Billing required", "detail": "You need to set up billing", "status": 402}),
        );
        assert!(
            matches!(parse_prediction_urls(&billing), Err(UpstreamError::Permanent(m)) if m.contains("billing"))
        );
    }

    #[test]
    fn pro_cannot_write_webp_here() {
        let fields = json!({"prompt": "x", "control_image": "https://x.test/a.jpg", "output_format": "webp"});
        let v = parallax_api::validate(Model::FluxDepthPro, fields.as_object().unwrap(), false)
            .unwrap();
        assert_eq!(
            check(Model::FluxDepthPro, &v.params).unwrap_err().field,
            "output_format"
        );
    }
}
