//! fal.ai's queue API for FLUX.1 Depth [dev]: `fal-ai/flux-lora-depth` (FLUX.1-dev with
//! BFL's depth LoRA; the depth map is computed from `image_url`). fal removed
//! `flux-pro/v1/depth` (fal-js `endpoints.ts`, commit edd6d93, 2025-12-15), so fal
//! serves dev only.
//!
//! Protocol (fal docs https://docs.fal.ai/documentation/model-apis/inference/queue,
//! https://fal.ai/docs/inference-api/queue/cancel; fal-js `libs/client/src/queue.ts`;
//! fal_client 1.0.3 `client.py`): `POST {base}/fal-ai/flux-lora-depth` with the input
//! as JSON and `Authorization: Key …` answers `{request_id, status_url, response_url,
//! cancel_url, queue_position}` (absolute URLs, on the owner/app root); `GET
//! status_url` answers `IN_QUEUE` (with `queue_position`), `IN_PROGRESS`, `COMPLETED`
//! (with `error`/`error_type` when it failed); `GET response_url` answers the output
//! `{images: [{url, width, height, content_type}], seed, has_nsfw_concepts, timings}`;
//! `PUT cancel_url` answers 202 `CANCELLATION_REQUESTED` or 400 `ALREADY_COMPLETED`.
//!
//! Parameter mapping (our dev parameters → `FluxLoraDepthInput`, fal-js `endpoints.ts`):
//! `prompt` → `prompt`; `control_image` → `image_url` (our signed link where the
//! deployment has one, else a data URL: fal accepts data URIs for file inputs); `num_outputs` → `num_images`; `num_inference_steps` →
//! `num_inference_steps`; `guidance` → `guidance_scale` (the same distilled guidance
//! FluxGuidance sets; fal's own default is 3.5, ours 10); `seed` → `seed`;
//! `output_format` png/jpg → `png`/`jpeg` (fal writes no WebP here: refused at
//! submit); `disable_safety_checker` → `enable_safety_checker` negated; `megapixels` →
//! `image_size {width, height}` at the control image's aspect ratio (multiples of 16,
//! match_input capped at 1440×1440); `output_quality` has no fal equivalent: a job
//! asking for another than the default is refused (`check`) and routed elsewhere.
//! UNVERIFIED: fal's accepted range of `guidance_scale` for this endpoint, and the
//! exact body of a failed request's result (treated as an error status).
//! `control_type: depth` is refused (the default of [`Adapter::takes_depth_maps`]):
//! flux-lora-depth estimates the depth of `image_url` itself and has no switch to skip
//! it (fal-js @381105e `libs/client/src/types/endpoints.ts`: `FluxLoraDepthInput =
//! FluxLoraCannyInput`, whose fields are prompt, image_url, image_size, loras,
//! num_images, num_inference_steps, guidance_scale, seed, output_format,
//! enable_safety_checker, acceleration, sync_mode).
//!
//! The depth preview (`depth-anything-v2`) is `fal-ai/image-preprocessors/depth-anything/v2`
//! on the same queue (same file: `ImagePreprocessorsDepthAnythingV2Input = ZoeInput`,
//! `{image_url}`; `…Output = HEDOutput`, `{image: Image}`, one image). Its status,
//! result and cancel URLs are on the endpoint's owner/alias, `fal-ai/image-preprocessors`
//! (fal-js `queue.ts` builds them from `parseEndpointId`'s owner and alias, the path
//! dropped). UNVERIFIED: the map's exact encoding (fal's preprocessors are documented
//! as returning the processed image; assumed greyscale, near = bright, as Depth
//! Anything V2's relative depth is).

use parallax_api::{FieldError, Model, Params, RequestId};
use serde_json::{Value, json};

use super::Order;
use super::Provider;
use std::cell::RefCell;

use ed25519_dalek::VerifyingKey;

use super::contract::{Adapter, HookCheck, HookError, Step};
use super::{
    CancelOutcome, ControlImage, HttpMethod, Submitted, UpstreamError, UpstreamRequest,
    UpstreamResponse, UpstreamState, send, success_json,
};
use crate::hooks::{self, Callback, FalHeaders, Hooks};
use crate::input::image::ImageInfo;

/// The endpoint (owner/app) on fal's queue.
pub const APP: &str = "fal-ai/flux-lora-depth";
/// The depth preview's endpoint, and the owner/alias its queue URLs are on.
pub const PREVIEW_APP: &str = "fal-ai/image-preprocessors/depth-anything/v2";
const PREVIEW_ROOT: &str = "fal-ai/image-preprocessors";

/// Where `model`'s queue URLs are (owner/alias).
fn queue_root(model: Model) -> &'static str {
    if model.is_preview() {
        PREVIEW_ROOT
    } else {
        APP
    }
}

fn headers(cfg: &Provider) -> Vec<(&'static str, String)> {
    cfg.api_key
        .iter()
        .map(|k| ("authorization", format!("Key {}", k.expose())))
        .collect()
}

/// fal writes PNG or JPEG for this endpoint, at a JPEG quality of its own: a job that
/// asks for another quality than the catalog's default goes to a provider that can
/// honour it (fal-js `endpoints.ts` `FluxLoraDepthInput` has no quality field).
pub fn check(params: &Params) -> Result<(), FieldError> {
    if params.output_format() == "webp" {
        return Err(FieldError::new(
            "output_format",
            "webp is not available from fal's flux-lora-depth; use jpg or png",
        ));
    }
    let default = Model::FluxDepthDev
        .param("output_quality")
        .and_then(parallax_api::params::default_value);
    if params.output_format() == "jpg"
        && params
            .get("output_quality")
            .is_some_and(|q| Some(q) != default.as_ref())
    {
        return Err(FieldError::new(
            "output_quality",
            "fal's flux-lora-depth sets its own JPEG quality; leave output_quality at its default",
        ));
    }
    Ok(())
}

/// The output size for `megapixels` at the control image's aspect ratio, in multiples
/// of 16 (10^6 px per megapixel, like Replicate's flux-depth-dev).
pub fn image_size(params: &Params, input: &ImageInfo) -> (u32, u32) {
    let (w, h) = (
        f64::from(input.width.max(1)),
        f64::from(input.height.max(1)),
    );
    let scale = match params.str("megapixels") {
        Some("0.25") => (250_000.0 / (w * h)).sqrt(),
        Some("match_input") => (1440.0 / w).min(1440.0 / h).min(1.0),
        _ => (1_000_000.0 / (w * h)).sqrt(),
    };
    let side = |x: f64| (((x * scale) / 16.0).round().max(1.0) as u32) * 16;
    (side(w), side(h))
}

/// The request body for fal-ai/flux-lora-depth.
pub fn input(params: &Params, info: &ImageInfo, control: &ControlImage, media_type: &str) -> Value {
    let (width, height) = image_size(params, info);
    let mut body = json!({
        "prompt": params.prompt(),
        "image_url": control.url_or_data_url(media_type),
        "num_images": params.num_outputs(),
        "image_size": {"width": width, "height": height},
        "output_format": if params.output_format() == "png" { "png" } else { "jpeg" },
        "enable_safety_checker": params.get("disable_safety_checker") != Some(&json!(true)),
    });
    if let Some(seed) = params.seed() {
        body["seed"] = json!(seed);
    }
    for (ours, theirs) in [
        ("num_inference_steps", "num_inference_steps"),
        ("guidance", "guidance_scale"),
    ] {
        if let Some(v) = params.get(ours) {
            body[theirs] = v.clone();
        }
    }
    body
}

/// The queue submit. With `callback`, fal POSTs the outcome there when the request
/// ends: the `fal_webhook` query parameter (https://docs.fal.ai/model-endpoints/webhooks).
pub fn build_submit(
    cfg: &Provider,
    params: &Params,
    info: &ImageInfo,
    control: &ControlImage,
    media_type: &str,
    callback: Option<&Callback>,
) -> UpstreamRequest {
    let query = callback
        .map(|cb| {
            let url: String = form_urlencoded(&cb.url);
            format!("?fal_webhook={url}")
        })
        .unwrap_or_default();
    UpstreamRequest::post_json(
        format!("{}/{APP}{query}", cfg.base_url),
        headers(cfg),
        &input(params, info, control, media_type),
    )
}

/// The depth preview's submit: `{image_url}` alone, to [`PREVIEW_APP`].
pub fn build_preview(
    cfg: &Provider,
    control: &ControlImage,
    media_type: &str,
    callback: Option<&Callback>,
) -> UpstreamRequest {
    let query = callback
        .map(|cb| format!("?fal_webhook={}", form_urlencoded(&cb.url)))
        .unwrap_or_default();
    UpstreamRequest::post_json(
        format!("{}/{PREVIEW_APP}{query}", cfg.base_url),
        headers(cfg),
        &json!({"image_url": control.url_or_data_url(media_type)}),
    )
}

/// `value` percent-encoded for a query string (everything but unreserved characters).
fn form_urlencoded(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

pub fn parse_submit(resp: &UpstreamResponse) -> Result<Submitted, UpstreamError> {
    let v = success_json("fal", resp)?;
    let field = |k: &str| {
        v[k].as_str()
            .map(str::to_owned)
            .ok_or_else(|| UpstreamError::Permanent(format!("fal answered without {k}")))
    };
    Ok(Submitted {
        upstream_id: field("request_id")?,
        status_url: field("status_url")?,
        result_url: field("response_url")?,
        cancel_url: Some(field("cancel_url")?),
        backstop_ms: None,
    })
}

pub fn build_get(cfg: &Provider, url: &str) -> UpstreamRequest {
    UpstreamRequest::get(url, headers(cfg))
}

pub fn build_cancel(cfg: &Provider, url: &str) -> UpstreamRequest {
    UpstreamRequest {
        method: HttpMethod::Put,
        url: url.to_owned(),
        headers: headers(cfg),
        body: None,
    }
}

/// The status; `Completed(vec![])` means "done: fetch the result".
pub fn parse_status(resp: &UpstreamResponse) -> Result<UpstreamState, UpstreamError> {
    let v = success_json("fal", resp)?;
    match v["status"].as_str() {
        Some("IN_QUEUE") => Ok(UpstreamState::Queued),
        Some("IN_PROGRESS") => Ok(UpstreamState::Processing),
        Some("COMPLETED") => match v["error"].as_str() {
            Some(error) => Ok(UpstreamState::Failed(error.chars().take(300).collect())),
            None => Ok(UpstreamState::Completed(Vec::new())),
        },
        other => Err(UpstreamError::Transient {
            reason: format!("fal answered an unknown status {other:?}"),
            retry_after: None,
        }),
    }
}

/// The output's image URLs: `images` (flux-lora-depth), or the preprocessor's one
/// `image`.
pub fn parse_result(resp: &UpstreamResponse) -> Result<UpstreamState, UpstreamError> {
    let v = success_json("fal", resp)?;
    let urls: Vec<String> = v["images"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(v.get("image"))
        .filter_map(|i| i["url"].as_str().map(str::to_owned))
        .collect();
    if urls.is_empty() {
        return Ok(UpstreamState::Failed("fal finished without images".into()));
    }
    Ok(UpstreamState::Completed(urls))
}

/// 202 `CANCELLATION_REQUESTED`: asked (the app decides; it may have run). 400
/// `ALREADY_COMPLETED`: it ran. Either way the work may be spent.
pub fn parse_cancel(resp: &UpstreamResponse) -> Result<(), UpstreamError> {
    match resp.status {
        200..=299 | 400 => Ok(()),
        s => Err(UpstreamError::from_status("fal", s, resp.retry_after, "")),
    }
}

/// fal's keys are fetched at most this often per isolate (fal suggests caching them).
const JWKS_TTL_MS: u64 = 3_600_000;
const JWKS_TIMEOUT_MS: u32 = 10_000;
/// After a failed fetch of fal's keys, deliveries are refused without another fetch
/// for this long: a flood of well-formed deliveries while fal's endpoint is down (or
/// slow) costs one 10-second fetch per isolate per this much time, not one each.
/// fal retries its deliveries, and the backstop polls the job anyway.
const JWKS_FAILURE_TTL_MS: u64 = 30_000;

thread_local! {
    /// (JWKS URL, fetched at, keys) of the last fetch in this isolate.
    static JWKS: RefCell<Option<(String, u64, Vec<VerifyingKey>)>> = const { RefCell::new(None) };
    /// (JWKS URL, when) of the last failed fetch in this isolate.
    static JWKS_FAILED: RefCell<Option<(String, u64)>> = const { RefCell::new(None) };
}

/// Whether a failed fetch of `failed_url` at `failed_at` still stands for `url` at
/// `now`: no new fetch is made until it lapses.
fn failed_lately(failed_url: &str, failed_at: u64, url: &str, now: u64) -> bool {
    failed_url == url && now.saturating_sub(failed_at) < JWKS_FAILURE_TTL_MS
}

/// fal's public keys, from this isolate's cache or fetched.
pub async fn webhook_keys(url: &str) -> Result<Vec<VerifyingKey>, String> {
    let now = worker::Date::now().as_millis();
    let cached = JWKS.with(|c| {
        c.borrow()
            .as_ref()
            .filter(|(u, at, _)| u == url && now.saturating_sub(*at) < JWKS_TTL_MS)
            .map(|(_, _, keys)| keys.clone())
    });
    if let Some(keys) = cached {
        return Ok(keys);
    }
    let failed_lately = JWKS_FAILED.with(|f| {
        f.borrow()
            .as_ref()
            .is_some_and(|(u, at)| failed_lately(u, *at, url, now))
    });
    if failed_lately {
        return Err("the last fetch failed less than 30 s ago".into());
    }
    let req = UpstreamRequest {
        method: HttpMethod::Get,
        url: url.to_owned(),
        headers: vec![("accept", "application/json".to_owned())],
        body: None,
    };
    let unavailable = |why: String| {
        JWKS_FAILED.with(|f| *f.borrow_mut() = Some((url.to_owned(), now)));
        why
    };
    let resp = send("fal jwks", &req, JWKS_TIMEOUT_MS)
        .await
        .map_err(|e| unavailable(format!("{e:?}")))?;
    if resp.status != 200 {
        return Err(unavailable(format!("HTTP {}", resp.status)));
    }
    let keys = hooks::parse_jwks(&resp.body);
    if keys.is_empty() {
        return Err(unavailable("no Ed25519 key in the JWKS".into()));
    }
    JWKS.with(|c| *c.borrow_mut() = Some((url.to_owned(), now, keys.clone())));
    Ok(keys)
}

/// fal's queue: flux-depth-dev only, called back (`fal_webhook`), canceled by
/// `cancel_url`.
#[derive(Debug)]
pub struct Fal;

impl Adapter for Fal {
    fn name(&self) -> &'static str {
        "fal"
    }

    fn env_prefix(&self) -> &'static str {
        "FAL"
    }

    fn default_base_url(&self) -> Option<&'static str> {
        Some("https://queue.fal.run")
    }

    /// `queue.fal.run` and its backup `queue.falrun.com` (fal's queue docs).
    fn documented_hosts(&self) -> &'static [&'static str] {
        &["queue.fal.run", "queue.falrun.com"]
    }

    /// `image_url` is a URL fal downloads, data URIs also accepted (fal-js
    /// `endpoints.ts`, `FluxLoraDepthInput`).
    fn fetches(&self, link: &str) -> bool {
        link.starts_with("https://") || link.starts_with("http://")
    }

    fn serves(&self, model: Model) -> bool {
        matches!(model, Model::FluxDepthDev | Model::DepthAnythingV2)
    }

    fn check(&self, model: Model, params: &Params, _input: &ImageInfo) -> Result<(), FieldError> {
        match model.is_preview() {
            true => Ok(()),
            false => check(params),
        }
    }

    fn build_submit(
        &self,
        provider: &Provider,
        job: &Order<'_>,
        control: &ControlImage,
        callback: Option<&Callback>,
        _prepared: &str,
    ) -> Result<UpstreamRequest, UpstreamError> {
        if job.model.is_preview() {
            return Ok(build_preview(
                provider,
                control,
                job.input.format.media_type(),
                callback,
            ));
        }
        Ok(build_submit(
            provider,
            job.params,
            &job.input,
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
        parse_submit(resp)
    }

    fn documented_urls(
        &self,
        model: Model,
        base: &str,
        id: &str,
    ) -> Option<(String, String, Option<String>)> {
        let root = queue_root(model);
        Some((
            format!("{base}/{root}/requests/{id}/status"),
            format!("{base}/{root}/requests/{id}"),
            Some(format!("{base}/{root}/requests/{id}/cancel")),
        ))
    }

    /// The status, then the result once it says COMPLETED.
    fn poll<'a>(
        &'a self,
        provider: &'a Provider,
        sub: &'a Submitted,
        timeout_ms: u32,
    ) -> Step<'a, UpstreamState> {
        Box::pin(async move {
            let name = self.name();
            let resp = send(name, &build_get(provider, &sub.status_url), timeout_ms).await?;
            let state = parse_status(&resp)?;
            if state != UpstreamState::Completed(Vec::new()) {
                return Ok(state);
            }
            let resp = send(name, &build_get(provider, &sub.result_url), timeout_ms).await?;
            parse_result(&resp)
        })
    }

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
            parse_cancel(&send(self.name(), &build_cancel(provider, url), timeout_ms).await?)?;
            Ok(CancelOutcome::Requested)
        })
    }

    fn pushes(&self, _hooks: &Hooks) -> bool {
        true
    }

    /// ED25519 over the delivery, against fal's published keys (`hooks::check_fal`);
    /// the headers' form and the account first, so a bare request fetches no keys.
    fn verify_hook<'a>(
        &'a self,
        hooks: &'a Hooks,
        _id: &'a RequestId,
        header: &'a dyn Fn(&str) -> Option<String>,
        body: &'a [u8],
        now_secs: u64,
    ) -> HookCheck<'a> {
        Box::pin(async move {
            let (request_id, user_id, timestamp, signature) = (
                header("x-fal-webhook-request-id"),
                header("x-fal-webhook-user-id"),
                header("x-fal-webhook-timestamp"),
                header("x-fal-webhook-signature"),
            );
            let h = FalHeaders {
                request_id: request_id.as_deref(),
                user_id: user_id.as_deref(),
                timestamp: timestamp.as_deref(),
                signature: signature.as_deref(),
            };
            hooks::check_fal_headers(h, hooks.fal_user_id.as_deref())
                .map_err(HookError::Refused)?;
            let keys = webhook_keys(&hooks.fal_jwks_url)
                .await
                .map_err(HookError::Unavailable)?;
            hooks::check_fal(&keys, h, body, now_secs).map_err(HookError::Refused)
        })
    }

    fn hook_upstream_id(&self, body: &[u8]) -> Option<String> {
        let v: Value = serde_json::from_slice(body).ok()?;
        v.get("request_id")?.as_str().map(str::to_owned)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_failed_jwks_fetch_is_remembered_for_its_url_for_30_s() {
        use super::{JWKS_FAILURE_TTL_MS, failed_lately};
        let url = "https://rest.alpha.fal.ai/.well-known/jwks.json";
        assert!(failed_lately(url, 1_000, url, 1_000));
        assert!(failed_lately(
            url,
            1_000,
            url,
            1_000 + JWKS_FAILURE_TTL_MS - 1
        ));
        assert!(!failed_lately(url, 1_000, url, 1_000 + JWKS_FAILURE_TTL_MS));
        assert!(!failed_lately("https://other/jwks", 1_000, url, 1_001));
        assert_eq!(JWKS_FAILURE_TTL_MS, 30_000);
    }

    use super::*;
    use crate::input::image::ImageFormat;
    use crate::providers::test_response;
    use parallax_api::Model;

    fn params(fields: Value) -> Params {
        let mut p = parallax_api::validate(Model::FluxDepthDev, fields.as_object().unwrap(), true)
            .unwrap()
            .params;
        p.set_seed(42);
        p
    }

    const INFO: ImageInfo = ImageInfo {
        format: ImageFormat::Png,
        width: 800,
        height: 600,
    };

    fn cfg() -> Provider {
        Provider {
            kind: crate::providers::Kind::named("fal"),
            base_url: "https://queue.fal.run".into(),
            api_key: Some(crate::secret::Secret::new("fal-key")),
        }
    }

    #[test]
    fn the_preview_sends_the_image_alone_and_takes_the_one_image_back() {
        let req = build_preview(
            &cfg(),
            &ControlImage::Link("https://px.example/results/x/control?sig=s".into()),
            "image/png",
            None,
        );
        assert_eq!(
            req.url,
            "https://queue.fal.run/fal-ai/image-preprocessors/depth-anything/v2"
        );
        let body: Value = serde_json::from_slice(req.body.as_deref().unwrap()).unwrap();
        assert_eq!(
            body,
            json!({"image_url": "https://px.example/results/x/control?sig=s"})
        );
        assert_eq!(
            parse_result(&test_response(
                200,
                json!({"image": {"url": "https://v3.fal.media/d.png", "content_type": "image/png"}})
            ))
            .unwrap(),
            UpstreamState::Completed(vec!["https://v3.fal.media/d.png".into()])
        );
        let (status, result, cancel) = Fal
            .documented_urls(Model::DepthAnythingV2, "https://queue.fal.run", "r1")
            .unwrap();
        assert_eq!(
            status,
            "https://queue.fal.run/fal-ai/image-preprocessors/requests/r1/status"
        );
        assert_eq!(
            result,
            "https://queue.fal.run/fal-ai/image-preprocessors/requests/r1"
        );
        assert_eq!(
            cancel.unwrap(),
            "https://queue.fal.run/fal-ai/image-preprocessors/requests/r1/cancel"
        );
    }

    #[test]
    fn submit_maps_every_parameter_explicitly() {
        let p = params(
            json!({"prompt": "a barn", "num_outputs": 2, "guidance": 12, "num_inference_steps": 30,
                              "output_format": "png", "megapixels": "0.25", "disable_safety_checker": true}),
        );
        let req = build_submit(
            &cfg(),
            &p,
            &INFO,
            &ControlImage::Inline(b"PNG".to_vec()),
            "image/png",
            None,
        );
        assert_eq!(req.url, "https://queue.fal.run/fal-ai/flux-lora-depth");
        let cb = Callback {
            url: "https://px.example/hooks/fal/x?token=a-b_c".into(),
            token: "a-b_c".into(),
            secret: "s".into(),
        };
        let hooked = build_submit(
            &cfg(),
            &p,
            &INFO,
            &ControlImage::Inline(b"PNG".to_vec()),
            "image/png",
            Some(&cb),
        );
        assert_eq!(
            hooked.url,
            "https://queue.fal.run/fal-ai/flux-lora-depth?fal_webhook=https%3A%2F%2Fpx.example%2Fhooks%2Ffal%2Fx%3Ftoken%3Da-b_c"
        );
        assert_eq!(hooked.body, req.body, "the input is the same");
        assert!(
            req.headers
                .contains(&("authorization", "Key fal-key".to_owned()))
        );
        let body: Value = serde_json::from_slice(req.body.as_deref().unwrap()).unwrap();
        assert_eq!(
            body,
            json!({"prompt": "a barn", "image_url": "data:image/png;base64,UE5H", "num_images": 2,
                   "image_size": {"width": 576, "height": 432}, "output_format": "png",
                   "enable_safety_checker": false, "seed": 42, "num_inference_steps": 30,
                   "guidance_scale": 12.0})
        );
        let link = "https://parallax.example.com/results/x/control?exp=1&sig=s";
        let body = input(&p, &INFO, &ControlImage::Link(link.into()), "image/png");
        assert_eq!(body["image_url"], link);
        assert_eq!(
            check(&params(json!({"prompt": "x", "output_format": "webp"})))
                .unwrap_err()
                .field,
            "output_format"
        );
    }

    #[test]
    fn queue_answers_from_the_docs_map_to_ours() {
        let sub = parse_submit(&test_response(
            200,
            json!({
            "request_id": "r1", "queue_position": 0,
            "status_url": "https://queue.fal.run/fal-ai/flux-lora-depth/requests/r1/status",
            "response_url": "https://queue.fal.run/fal-ai/flux-lora-depth/requests/r1",
            "cancel_url": "https://queue.fal.run/fal-ai/flux-lora-depth/requests/r1/cancel"}),
        ))
        .unwrap();
        assert_eq!(sub.upstream_id, "r1");
        assert!(sub.cancel_url.unwrap().ends_with("/r1/cancel"));
        let s = |v| parse_status(&test_response(200, v));
        assert_eq!(
            s(json!({"status": "IN_QUEUE", "queue_position": 3})),
            Ok(UpstreamState::Queued)
        );
        assert_eq!(
            s(json!({"status": "IN_PROGRESS", "logs": []})),
            Ok(UpstreamState::Processing)
        );
        assert_eq!(
            s(json!({"status": "COMPLETED", "logs": null, "metrics": {}})),
            Ok(UpstreamState::Completed(vec![]))
        );
        assert_eq!(
            s(json!({"status": "COMPLETED", "error": "NSFW", "error_type": "x"})),
            Ok(UpstreamState::Failed("NSFW".into()))
        );
        assert_eq!(
            parse_result(&test_response(
                200,
                json!({"images": [{"url": "https://v3.fal.media/a.png",
                "width": 1024, "height": 768, "content_type": "image/png"}], "seed": 42})
            )),
            Ok(UpstreamState::Completed(vec![
                "https://v3.fal.media/a.png".into()
            ]))
        );
        assert!(
            parse_cancel(&test_response(
                202,
                json!({"status": "CANCELLATION_REQUESTED"})
            ))
            .is_ok()
        );
        assert!(parse_cancel(&test_response(400, json!({"status": "ALREADY_COMPLETED"}))).is_ok());
        assert_eq!(
            build_cancel(&cfg(), "https://x/cancel").method,
            HttpMethod::Put
        );
    }
}
