//! ComfyUI (the usual self-hosted GPU server): `POST /upload/image` (multipart
//! `image`, into a per-job subfolder), then `POST /prompt` with the FLUX.1 Depth [dev]
//! workflow (`comfyui_flux_depth_dev.json`, the parameters filled in) under our own
//! `prompt_id`, poll `/history/{prompt_id}` (`{}` until done) and `/queue` (running or
//! pending), and fetch the outputs from `/view` with the same auth header as every
//! other call. Cancel is `POST /queue {"delete": [id]}` while pending, else
//! `POST /interrupt {"prompt_id": id}` while it is the one running.
//!
//! Checked against the real source (line numbers at these commits):
//!
//! | what | source |
//! |---|---|
//! | `ImageScaleToTotalPixels`: `megapixels` FLOAT 0.01..16 in units of 1024² px; **required** `resolution_steps` INT 1..256 (since ~Dec 2025), size `round(w·s/steps)·steps` | Comfy-Org/ComfyUI `comfy_extras/nodes_post_processing.py` @ffe7a0e4 (older: @a125cd84 l.211-241, no `resolution_steps`, `round(w·s)`) |
//! | `DepthAnythingV2Preprocessor`: depth map rescaled so its **short side = `resolution`** | Fannovel16/comfyui_controlnet_aux @e8b689a5 `node_wrappers/depth_anything_v2.py`, `src/custom_controlnet_aux/util.py` `resize_image_with_pad` |
//! | `InstructPixToPixConditioning`: latent size = `pixels` cropped to a multiple of 8 | ComfyUI @a125cd84 `comfy_extras/nodes_ip2p.py:28-34` |
//! | `SaveAnimatedWEBP` writes a whole batch as ONE animated file; `RebatchImages` (list output) makes the save run once per image | ComfyUI @a125cd84 `comfy_extras/nodes_images.py:98-162`, `comfy_extras/nodes_rebatch.py:110-140` |
//! | `/prompt` 400 `{"error": {type, message, details, extra_info}, "node_errors": {id: {errors, dependent_outputs, class_type}}}`; our `prompt_id` honoured (canonical UUID); a duplicate id is 409 on the newest server | ComfyUI `server.py` @5e14d797 `post_prompt`, `execution.py` @cb707e9c `validate_prompt` |
//! | `POST /queue {"delete"}` removes a pending item; `POST /interrupt {"prompt_id"}` interrupts only if that prompt runs (older servers ignore the body and interrupt whatever runs, so we only call it when ours is the one running) | ComfyUI `server.py` @5e14d797 `post_queue`, `post_interrupt` |
//!
//! Output size: the depth preprocessor fixes the short side at its `resolution`, so the
//! requested size is applied by a second `ImageScaleToTotalPixels` (node 15) *after*
//! the depth map; node 5 only bounds the depth estimator's work. A control image more
//! elongated than [`MAX_ASPECT`] is refused at submit (the depth model keeps a 518 px
//! short side, so a 16:4096 strip runs the GPU out of memory after minutes).

use parallax_api::{FieldError, Model, Params};
use serde_json::{Value, json};

use super::Order;
use super::Provider;
use super::contract::{Adapter, Prepared, Step};
use super::{
    CancelOutcome, ControlImage, HttpMethod, Submitted, UpstreamError, UpstreamRequest,
    UpstreamResponse, UpstreamState, error_detail, inline_bytes, send,
};
use crate::hooks::Callback;
use crate::input::image::ImageInfo;

const WORKFLOW: &str = include_str!("comfyui_flux_depth_dev.json");
const SAVE_NODE: &str = "14";
/// The post-depth resize that sets the output size.
const SIZE_NODE: &str = "15";
/// Longest side over shortest side this provider accepts.
pub const MAX_ASPECT: u32 = 4;
/// `ImageScaleToTotalPixels.megapixels` range (nodes_post_processing.py).
const MIN_MEGAPIXELS: f64 = 0.01;
/// `match_input` is capped at 1440×1440, like Replicate's flux-depth-dev, in ComfyUI's
/// unit (1 "megapixel" = 1024² px).
const MAX_MATCH_MEGAPIXELS: f64 = 1440.0 * 1440.0 / (1024.0 * 1024.0);

/// What ComfyUI can do for these parameters and this control image: PNG or WebP only
/// (core has no JPEG writer; the depth preview is always a PNG), and an aspect ratio
/// the depth model can hold in memory. `control_type: depth` is taken: the workflow
/// then leaves the estimator out ([`preview::without_estimator`]).
pub fn check(model: Model, params: &Params, input: &ImageInfo) -> Result<(), FieldError> {
    if !model.is_preview() && params.output_format() == "jpg" {
        return Err(FieldError::new(
            "output_format",
            "jpg is not available from the self-hosted ComfyUI server; use png or webp",
        ));
    }
    let (long, short) = (
        input.width.max(input.height),
        input.width.min(input.height).max(1),
    );
    if long > short.saturating_mul(MAX_ASPECT) {
        return Err(FieldError::new(
            "control_image",
            format!(
                "the self-hosted ComfyUI server takes images up to {MAX_ASPECT}:1; this one is {}x{}",
                input.width, input.height
            ),
        ));
    }
    Ok(())
}

/// The auth header for a proxy in front of ComfyUI (it has no auth of its own); sent
/// on every request, `/view` downloads included.
pub fn headers(cfg: &Provider) -> Vec<(&'static str, String)> {
    cfg.api_key
        .iter()
        .map(|k| ("authorization", format!("Bearer {}", k.expose())))
        .collect()
}

/// Where a job's control image goes under ComfyUI's `input/` (and its outputs under
/// `output/`): one folder per job, so `LoadImage`'s listing of `input/` stays small and
/// an operator can prune old jobs by folder.
pub fn job_folder(job: &Order<'_>) -> String {
    format!("parallax/{}", job.id)
}

pub fn build_upload(
    cfg: &Provider,
    subfolder: &str,
    file: &str,
    image: &[u8],
    media_type: &str,
) -> UpstreamRequest {
    let boundary = "parallax-form-boundary-6f1c2e";
    let mut body = Vec::with_capacity(image.len() + 640);
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{file}\"\r\nContent-Type: {media_type}\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(image);
    for (name, value) in [("overwrite", "true"), ("subfolder", subfolder)] {
        body.extend_from_slice(
            format!(
                "\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}"
            )
            .as_bytes(),
        );
    }
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let mut h = headers(cfg);
    h.push((
        "content-type",
        format!("multipart/form-data; boundary={boundary}"),
    ));
    UpstreamRequest {
        method: HttpMethod::Post,
        url: format!("{}/upload/image", cfg.base_url),
        headers: h,
        body: Some(body),
    }
}

/// The useful part of a `/prompt` refusal: the error type, its details, and each
/// failing node's class and errors (execution.py `validate_prompt`). The generic
/// message alone ("Prompt outputs failed validation") says nothing.
pub fn refusal_detail(v: &Value) -> String {
    let error = &v["error"];
    let Some(kind) = error["type"].as_str() else {
        return error
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| error_detail(v.to_string().as_bytes()));
    };
    let mut parts = vec![format!(
        "{kind}: {}",
        error["message"].as_str().unwrap_or_default()
    )];
    if let Some(d) = error["details"].as_str().filter(|d| !d.is_empty()) {
        parts.push(d.replace('\n', "; "));
    }
    for (id, node) in v["node_errors"].as_object().into_iter().flatten() {
        let errors: Vec<String> = node["errors"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| {
                format!(
                    "{} ({}: {})",
                    e["message"].as_str().unwrap_or_default(),
                    e["type"].as_str().unwrap_or_default(),
                    e["details"].as_str().unwrap_or_default()
                )
            })
            .collect();
        parts.push(format!(
            "node {id} {}: {}",
            node["class_type"].as_str().unwrap_or("?"),
            errors.join(", ")
        ));
    }
    parts.join(" | ").chars().take(600).collect()
}

fn checked(resp: &UpstreamResponse) -> Result<Value, UpstreamError> {
    if !(200..300).contains(&resp.status) {
        let detail = serde_json::from_slice::<Value>(&resp.body)
            .map(|v| refusal_detail(&v))
            .unwrap_or_else(|_| error_detail(&resp.body));
        return Err(UpstreamError::from_status(
            "comfyui",
            resp.status,
            resp.retry_after,
            &detail,
        ));
    }
    serde_json::from_slice(&resp.body).map_err(|_| UpstreamError::Transient {
        reason: "comfyui answered with malformed JSON".into(),
        retry_after: None,
    })
}

/// The stored name of the uploaded image (ComfyUI may rename it).
pub fn parse_upload(resp: &UpstreamResponse) -> Result<String, UpstreamError> {
    let v = checked(resp)?;
    let name = v["name"]
        .as_str()
        .ok_or_else(|| UpstreamError::Permanent("comfyui upload answered without a name".into()))?;
    Ok(match v["subfolder"].as_str().filter(|s| !s.is_empty()) {
        Some(sub) => format!("{sub}/{name}"),
        None => name.to_owned(),
    })
}

/// The output size asked for, in ComfyUI's unit (1 megapixel = 1024² px), within
/// `ImageScaleToTotalPixels`' range.
pub fn megapixels(params: &Params, input: &ImageInfo) -> f64 {
    match params.str("megapixels") {
        Some("0.25") => 0.25,
        Some("match_input") => {
            let px = f64::from(input.width) * f64::from(input.height);
            (px / (1024.0 * 1024.0)).clamp(MIN_MEGAPIXELS, MAX_MATCH_MEGAPIXELS)
        }
        _ => 1.0,
    }
}

/// The workflow graph with the job's parameters filled in: the depth preview's own
/// graph for `depth-anything-v2`, else FLUX.1 Depth [dev]'s.
pub fn workflow(job: &Order<'_>, image_name: &str) -> Value {
    if job.model.is_preview() {
        return preview::workflow(job, image_name);
    }
    let mut g: Value = serde_json::from_str(WORKFLOW).unwrap_or_default();
    let p = &job.params;
    g["4"]["inputs"]["image"] = json!(image_name);
    g["7"]["inputs"]["text"] = json!(p.prompt());
    g["8"]["inputs"]["guidance"] = p.get("guidance").cloned().unwrap_or(json!(10.0));
    g["11"]["inputs"]["amount"] = json!(p.num_outputs());
    g["12"]["inputs"]["seed"] = json!(p.seed().unwrap_or(0));
    g["12"]["inputs"]["steps"] = p.get("num_inference_steps").cloned().unwrap_or(json!(28));
    g[SIZE_NODE]["inputs"]["megapixels"] = json!(megapixels(p, &job.input));
    let prefix = format!("{}/img", job_folder(job));
    g[SAVE_NODE]["inputs"]["filename_prefix"] = json!(prefix);
    if p.output_format() == "webp" {
        // SaveAnimatedWEBP writes its whole batch as one animated file; fed a list of
        // one-image batches it runs once per image: N stills for N outputs.
        g["16"] = json!({"class_type": "RebatchImages", "inputs": {"images": ["13", 0], "batch_size": 1}});
        g[SAVE_NODE] = json!({"class_type": "SaveAnimatedWEBP", "inputs": {
            "images": ["16", 0], "filename_prefix": prefix, "fps": 6.0, "lossless": false,
            "quality": p.int("output_quality").unwrap_or(80), "method": "default"}});
    }
    if p.control_is_depth() {
        preview::without_estimator(&mut g);
    }
    g
}

pub fn build_prompt(cfg: &Provider, job: &Order<'_>, image_name: &str) -> UpstreamRequest {
    UpstreamRequest::post_json(
        format!("{}/prompt", cfg.base_url),
        headers(cfg),
        &json!({"prompt": workflow(job, image_name), "client_id": "parallax", "prompt_id": job.id.as_str()}),
    )
}

/// The handle on prompt `id` at this server.
pub fn submitted(cfg: &Provider, id: &str) -> Submitted {
    Submitted {
        upstream_id: id.to_owned(),
        status_url: format!("{}/history/{id}", cfg.base_url),
        result_url: format!("{}/queue", cfg.base_url),
        cancel_url: None,
        backstop_ms: None,
    }
}

/// The queued prompt; `ours` is the id we sent. ComfyUI v0.3.64 and v0.8.0 take a
/// repeated id and run it again (`server.py` `post_prompt` has no duplicate check), so
/// we never send one we could look up first ([`ComfyUi::prepare`]); a 409 for a repeat,
/// should a server ever answer one, still means ours is there. Older servers ignore
/// our id and mint their own, which is then the one to follow.
pub fn parse_prompt(
    cfg: &Provider,
    ours: &str,
    resp: &UpstreamResponse,
) -> Result<Submitted, UpstreamError> {
    if resp.status == 409 {
        return Ok(submitted(cfg, ours));
    }
    let v = checked(resp)?;
    let id = v["prompt_id"]
        .as_str()
        .ok_or_else(|| UpstreamError::Permanent("comfyui answered without a prompt_id".into()))?;
    Ok(submitted(cfg, id))
}

pub fn build_get(cfg: &Provider, url: &str) -> UpstreamRequest {
    UpstreamRequest::get(url, headers(cfg))
}

/// `POST /queue {"delete": [id]}`: takes a pending prompt off the queue (a no-op for a
/// running or finished one).
pub fn build_queue_delete(cfg: &Provider, id: &str) -> UpstreamRequest {
    UpstreamRequest::post_json(
        format!("{}/queue", cfg.base_url),
        headers(cfg),
        &json!({"delete": [id]}),
    )
}

/// `POST /interrupt {"prompt_id": id}`.
pub fn build_interrupt(cfg: &Provider, id: &str) -> UpstreamRequest {
    UpstreamRequest::post_json(
        format!("{}/interrupt", cfg.base_url),
        headers(cfg),
        &json!({"prompt_id": id}),
    )
}

mod preview;
mod queue;

pub use queue::{Lookup, Probe, build_probe, lookup_at, lookup_with, parse_history, parse_queue};

/// A self-hosted ComfyUI: flux-depth-dev and the depth preview, polled (its progress goes to a websocket,
/// not a callback URL), canceled by taking the prompt off the queue or interrupting it,
/// and looked up by the `prompt_id` we choose (our job id).
#[derive(Debug)]
pub struct ComfyUi;

impl Adapter for ComfyUi {
    fn name(&self) -> &'static str {
        "comfyui"
    }

    fn env_prefix(&self) -> &'static str {
        "COMFYUI"
    }

    /// An operator's own server, perhaps behind a proxy with a key.
    fn needs_key(&self) -> bool {
        false
    }

    /// It takes the file through `/upload/image`.
    fn fetches(&self, _link: &str) -> bool {
        false
    }

    fn serves(&self, model: Model) -> bool {
        matches!(model, Model::FluxDepthDev | Model::DepthAnythingV2)
    }

    /// The main workflow without its estimator ([`preview::without_estimator`]).
    fn takes_depth_maps(&self, model: Model) -> bool {
        model == Model::FluxDepthDev
    }

    fn check(&self, model: Model, params: &Params, input: &ImageInfo) -> Result<(), FieldError> {
        check(model, params, input)
    }

    /// ComfyUI runs a repeated prompt again: if an earlier attempt of this job reached
    /// the server (an answer lost on the way back), follow that one; else upload the
    /// control image.
    fn prepare<'a>(
        &'a self,
        provider: &'a Provider,
        job: &'a Order<'a>,
        control: &'a ControlImage,
        timeout_ms: u32,
    ) -> Step<'a, Prepared> {
        Box::pin(async move {
            let id = job.id.as_str();
            if lookup_at(provider, id, timeout_ms).await? != Lookup::Unknown {
                return Ok(Prepared::Already(submitted(provider, id)));
            }
            let file = format!("parallax-{}.{}", job.id, job.input.format.ext());
            let upload = build_upload(
                provider,
                &job_folder(job),
                &file,
                inline_bytes(provider, control)?,
                job.input.format.media_type(),
            );
            // An upload starts nothing: a lost answer to it is an ordinary failure.
            let answer = send(self.name(), &upload, timeout_ms)
                .await
                .map_err(|e| match e {
                    UpstreamError::Ambiguous { reason } => UpstreamError::Transient {
                        reason,
                        retry_after: None,
                    },
                    e => e,
                })?;
            let uploaded = parse_upload(&answer)?;
            Ok(Prepared::Fresh(uploaded))
        })
    }

    fn build_submit(
        &self,
        provider: &Provider,
        job: &Order<'_>,
        _control: &ControlImage,
        _callback: Option<&Callback>,
        prepared: &str,
    ) -> Result<UpstreamRequest, UpstreamError> {
        Ok(build_prompt(provider, job, prepared))
    }

    fn parse_submit(
        &self,
        provider: &Provider,
        job_id: &str,
        resp: &UpstreamResponse,
    ) -> Result<Submitted, UpstreamError> {
        parse_prompt(provider, job_id, resp)
    }

    /// Built from the base already ([`submitted`]).
    fn documented_urls(
        &self,
        _model: Model,
        _base: &str,
        _id: &str,
    ) -> Option<(String, String, Option<String>)> {
        None
    }

    fn poll<'a>(
        &'a self,
        provider: &'a Provider,
        sub: &'a Submitted,
        timeout_ms: u32,
    ) -> Step<'a, UpstreamState> {
        Box::pin(async move {
            match lookup_at(provider, &sub.upstream_id, timeout_ms).await? {
                Lookup::Done(state) => Ok(state),
                Lookup::Running => Ok(UpstreamState::Processing),
                Lookup::Queued => Ok(UpstreamState::Queued),
                // It may have finished between the two calls: look again next time, but
                // never forever (the job's deadline ends it).
                Lookup::Unknown => Err(UpstreamError::Transient {
                    reason: "comfyui has the prompt neither queued nor in its history".into(),
                    retry_after: None,
                }),
            }
        })
    }

    fn cancel<'a>(
        &'a self,
        provider: &'a Provider,
        sub: &'a Submitted,
        timeout_ms: u32,
    ) -> Step<'a, CancelOutcome> {
        Box::pin(async move {
            let (name, id) = (self.name(), sub.upstream_id.as_str());
            match lookup_at(provider, id, timeout_ms).await? {
                Lookup::Queued => {
                    send(name, &build_queue_delete(provider, id), timeout_ms).await?;
                    // Gone from the queue and not in the history: it never ran.
                    Ok(match lookup_at(provider, id, timeout_ms).await? {
                        Lookup::Unknown => CancelOutcome::Stopped,
                        Lookup::Running => {
                            send(name, &build_interrupt(provider, id), timeout_ms).await?;
                            CancelOutcome::Requested
                        }
                        _ => CancelOutcome::Requested,
                    })
                }
                Lookup::Running => {
                    // Only when ours is the one running: older servers ignore the
                    // body and interrupt whatever runs.
                    send(name, &build_interrupt(provider, id), timeout_ms).await?;
                    Ok(CancelOutcome::Requested)
                }
                Lookup::Done(_) => Ok(CancelOutcome::Requested),
                Lookup::Unknown => Ok(CancelOutcome::Stopped),
            }
        })
    }

    /// It keeps the job under the `prompt_id` we chose, in `/history/{id}` once done
    /// or in `/queue` before.
    fn lookup<'a>(
        &'a self,
        provider: &'a Provider,
        job: &'a Order<'a>,
        timeout_ms: u32,
    ) -> Step<'a, super::Lookup> {
        Box::pin(async move {
            let id = job.id.as_str();
            Ok(match lookup_at(provider, id, timeout_ms).await? {
                Lookup::Unknown => super::Lookup::Absent,
                _ => super::Lookup::Found(submitted(provider, id)),
            })
        })
    }

    /// `/view` on its own host gets its auth (a server behind an API-key proxy).
    fn download_headers(&self, provider: &Provider, _url: &str) -> Vec<(&'static str, String)> {
        headers(provider)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::image::ImageFormat;
    use crate::objects::runner::{JobRecord, Ownership};
    use parallax_api::{Model, RequestId};

    fn job_sized(fields: Value, width: u32, height: u32) -> JobRecord {
        let v =
            parallax_api::validate(Model::FluxDepthDev, fields.as_object().unwrap(), true).unwrap();
        let mut params = v.params;
        params.set_seed(1234);
        JobRecord::new(
            RequestId::parse("2c7f59ea-13f1-402c-9353-915a2b5a2124").unwrap(),
            Model::FluxDepthDev,
            params,
            ImageInfo {
                format: ImageFormat::Png,
                width,
                height,
            },
            Ownership {
                owner: "anon:x".into(),
                charged: 2,
                retention_secs: 60,
            },
            0,
            900,
            vec!["comfyui".into()],
        )
    }

    fn job(fields: Value) -> JobRecord {
        job_sized(fields, 800, 600)
    }

    fn cfg() -> Provider {
        Provider {
            kind: crate::providers::Kind::named("comfyui"),
            base_url: "http://gpu:8188".into(),
            api_key: None,
        }
    }

    fn r(status: u16, v: Value) -> UpstreamResponse {
        UpstreamResponse {
            status,
            retry_after: None,
            body: v.to_string().into_bytes(),
        }
    }

    #[test]
    fn the_workflow_carries_every_parameter() {
        let j = job(
            json!({"prompt": "a red barn", "num_outputs": 3, "guidance": 12.5, "num_inference_steps": 30,
                           "megapixels": "0.25", "output_format": "webp", "output_quality": 70}),
        );
        let g = workflow(&j.order(), "parallax/x/parallax-x.png");
        assert_eq!(g["4"]["inputs"]["image"], "parallax/x/parallax-x.png");
        assert_eq!(g["7"]["inputs"]["text"], "a red barn");
        assert_eq!(g["8"]["inputs"]["guidance"], 12.5);
        assert_eq!(g["11"]["inputs"]["amount"], 3);
        assert_eq!(g["12"]["inputs"]["seed"], 1234);
        assert_eq!(g["12"]["inputs"]["steps"], 30);
        // The size is set after the depth map; the pre-scale stays fixed.
        assert_eq!(g["15"]["inputs"]["megapixels"], 0.25);
        assert_eq!(g["15"]["inputs"]["image"], json!(["6", 0]));
        assert_eq!(g["10"]["inputs"]["pixels"], json!(["15", 0]));
        assert_eq!(g["5"]["inputs"]["megapixels"], 1.0);
        // Required by ComfyUI since ~Dec 2025, ignored by older servers.
        assert_eq!(g["5"]["inputs"]["resolution_steps"], 16);
        assert_eq!(g["15"]["inputs"]["resolution_steps"], 16);
        // WebP: one still per image, not one animated file.
        assert_eq!(g["14"]["class_type"], "SaveAnimatedWEBP");
        assert_eq!(g["14"]["inputs"]["images"], json!(["16", 0]));
        assert_eq!(g["16"]["class_type"], "RebatchImages");
        assert_eq!(g["16"]["inputs"]["batch_size"], 1);
        assert_eq!(g["14"]["inputs"]["quality"], 70);
        assert_eq!(
            g["14"]["inputs"]["filename_prefix"],
            "parallax/2c7f59ea-13f1-402c-9353-915a2b5a2124/img"
        );
        let png = workflow(
            &job(json!({"prompt": "x", "output_format": "png", "megapixels": "match_input"}))
                .order(),
            "a.png",
        );
        assert_eq!(png["14"]["class_type"], "SaveImage");
        assert!(png.get("16").is_none());
        // 800×600 in ComfyUI's unit (1024² px), not 10^6.
        assert_eq!(png["15"]["inputs"]["megapixels"], 0.457763671875);
    }

    #[test]
    fn the_preview_is_load_depth_save_and_depth_controls_skip_the_estimator() {
        let info = |width, height| ImageInfo {
            format: ImageFormat::Png,
            width,
            height,
        };
        let mut p = job(json!({"prompt": "x", "output_format": "png"}));
        p.model = Model::DepthAnythingV2;
        p.params = Params::default();
        assert!(check(p.model, &p.params, &info(800, 600)).is_ok());
        let g = workflow(&p.order(), "a.png");
        let classes: Vec<&str> = g
            .as_object()
            .unwrap()
            .values()
            .map(|n| n["class_type"].as_str().unwrap())
            .collect();
        assert_eq!(classes.len(), 3, "{g}");
        assert_eq!(g["4"]["inputs"]["image"], "a.png");
        assert_eq!(g["6"]["class_type"], "DepthAnythingV2Preprocessor");
        assert_eq!(g["6"]["inputs"]["image"], json!(["4", 0]));
        assert_eq!(g["6"]["inputs"]["ckpt_name"], "depth_anything_v2_vitl.pth");
        assert_eq!(g["6"]["inputs"]["resolution"], 512);
        assert_eq!(g["14"]["class_type"], "SaveImage");
        assert_eq!(g["14"]["inputs"]["images"], json!(["6", 0]));

        let given = workflow(
            &job(json!({"prompt": "x", "output_format": "png", "control_type": "depth"})).order(),
            "d.png",
        );
        assert!(given.get("6").is_none(), "{given}");
        assert_eq!(given["15"]["inputs"]["image"], json!(["5", 0]));
        assert_eq!(given["10"]["inputs"]["pixels"], json!(["15", 0]));
        let estimated = workflow(
            &job(json!({"prompt": "x", "output_format": "png"})).order(),
            "d.png",
        );
        assert_eq!(estimated["15"]["inputs"]["image"], json!(["6", 0]));
    }

    #[test]
    fn match_input_stays_inside_the_node_range() {
        let p = |w, h| {
            let j = job_sized(
                json!({"prompt": "x", "output_format": "png", "megapixels": "match_input"}),
                w,
                h,
            );
            megapixels(&j.params, &j.input)
        };
        assert_eq!(
            p(64, 64),
            MIN_MEGAPIXELS,
            "4096 px is below the node's 0.01 minimum"
        );
        assert_eq!(p(4000, 3000), MAX_MATCH_MEGAPIXELS);
        assert!((MAX_MATCH_MEGAPIXELS - 1.977_539_062_5).abs() < 1e-12);
    }

    #[test]
    fn jpeg_and_extreme_aspect_ratios_are_refused_up_front() {
        let png = json!({"prompt": "x", "output_format": "png"});
        let info = |width, height| ImageInfo {
            format: ImageFormat::Png,
            width,
            height,
        };
        assert_eq!(
            check(
                Model::FluxDepthDev,
                &job(json!({"prompt": "x"})).params,
                &info(800, 600)
            )
            .unwrap_err()
            .field,
            "output_format"
        );
        let params = job(png).params;
        assert!(check(Model::FluxDepthDev, &params, &info(4000, 1000)).is_ok());
        assert!(check(Model::FluxDepthDev, &params, &info(1000, 4000)).is_ok());
        let err = check(Model::FluxDepthDev, &params, &info(4001, 1000)).unwrap_err();
        assert_eq!(err.field, "control_image");
        assert!(err.message.contains("4:1"), "{}", err.message);
        assert_eq!(
            check(Model::FluxDepthDev, &params, &info(8192, 16))
                .unwrap_err()
                .field,
            "control_image"
        );
    }

    #[test]
    fn uploads_go_to_the_job_folder_with_auth() {
        let mut c = cfg();
        c.api_key = Some(crate::secret::Secret::new("proxy-key"));
        let j = job(json!({"prompt": "x", "output_format": "png"}));
        let req = build_upload(
            &c,
            &job_folder(&j.order()),
            "in.png",
            b"PNGDATA",
            "image/png",
        );
        let body = String::from_utf8_lossy(req.body.as_deref().unwrap()).into_owned();
        assert!(body.contains(
            "name=\"subfolder\"\r\n\r\nparallax/2c7f59ea-13f1-402c-9353-915a2b5a2124\r\n"
        ));
        assert!(body.contains("name=\"overwrite\"\r\n\r\ntrue\r\n"));
        assert!(body.ends_with("--\r\n"));
        assert!(
            req.headers
                .iter()
                .any(|(k, v)| *k == "authorization" && v == "Bearer proxy-key")
        );
        for req in [build_queue_delete(&c, "p1"), build_interrupt(&c, "p1")] {
            assert!(req.headers.iter().any(|(k, _)| *k == "authorization"));
        }
        assert_eq!(
            parse_upload(&r(
                200,
                json!({"name": "in.png", "subfolder": "parallax/abc", "type": "input"})
            )),
            Ok("parallax/abc/in.png".into())
        );
    }

    #[test]
    fn a_refusal_names_the_failing_node_and_input() {
        // The body ComfyUI (execution.py validate_prompt) sends when a required input
        // is missing deep in the graph: the output node carries no reason of its own.
        let body = json!({
            "error": {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation",
                      "details": "", "extra_info": {}},
            "node_errors": {"5": {"errors": [{"type": "required_input_missing", "message": "Required input is missing",
                                               "details": "resolution_steps", "extra_info": {"input_name": "resolution_steps"}}],
                                  "dependent_outputs": ["14"], "class_type": "ImageScaleToTotalPixels"}}
        });
        let err = parse_prompt(&cfg(), "p1", &r(400, body)).unwrap_err();
        let UpstreamError::Permanent(reason) = err else {
            panic!("a refusal is permanent: {err:?}")
        };
        assert!(
            reason.contains("prompt_outputs_failed_validation"),
            "{reason}"
        );
        assert!(
            reason.contains("node 5 ImageScaleToTotalPixels: Required input is missing (required_input_missing: resolution_steps)"),
            "{reason}"
        );
        let missing = json!({"error": {"type": "missing_node_type", "message": "Node 'DepthAnythingV2Preprocessor' not found. The custom node may not be installed.",
                                       "details": "Node ID '#6'", "extra_info": {}}, "node_errors": {}});
        let UpstreamError::Permanent(reason) =
            parse_prompt(&cfg(), "p1", &r(400, missing)).unwrap_err()
        else {
            panic!()
        };
        assert!(reason.contains("DepthAnythingV2Preprocessor"), "{reason}");
        assert!(reason.contains("#6"), "{reason}");
    }

    #[test]
    fn a_repeated_prompt_id_is_the_job_already_queued() {
        let sub = parse_prompt(
            &cfg(),
            "p1",
            &r(409, json!({"error": "prompt_id already exists"})),
        )
        .unwrap();
        assert_eq!(sub.upstream_id, "p1");
        assert_eq!(sub.status_url, "http://gpu:8188/history/p1");
        // An older server mints its own id: that one is followed.
        let sub = parse_prompt(
            &cfg(),
            "p1",
            &r(
                200,
                json!({"prompt_id": "minted", "number": 3, "node_errors": {}}),
            ),
        )
        .unwrap();
        assert_eq!(sub.upstream_id, "minted");
    }

    #[test]
    fn history_and_queue_from_the_docs_map_to_ours() {
        let ok = |v| r(200, v);
        assert_eq!(parse_history(&cfg(), "p1", &ok(json!({}))), Ok(None));
        let done = json!({"p1": {"outputs": {"14": {"images": [
                                    {"filename": "img_00001_.webp", "subfolder": "parallax/p1", "type": "output"}]},
                                             "9": {"images": [{"filename": "x.png", "subfolder": "", "type": "temp"}]}},
                                 "status": {"status_str": "success", "completed": true, "messages": []}}});
        assert_eq!(
            parse_history(&cfg(), "p1", &ok(done)),
            Ok(Some(UpstreamState::Completed(vec![
                "http://gpu:8188/view?filename=img_00001_.webp&subfolder=parallax%2Fp1&type=output"
                    .into()
            ])))
        );
        let failed = json!({"p1": {"outputs": {}, "status": {"status_str": "error", "messages": [
            ["execution_start", {"prompt_id": "p1"}],
            ["execution_error", {"node_type": "KSampler", "exception_message": "CUDA out of memory\n"}]]}}});
        assert_eq!(
            parse_history(&cfg(), "p1", &ok(failed)),
            Ok(Some(UpstreamState::Failed(
                "the workflow failed in KSampler: CUDA out of memory".into()
            )))
        );
        let interrupted = json!({"p1": {"outputs": {}, "status": {"status_str": "error", "messages": [
            ["execution_interrupted", {"prompt_id": "p1", "node_id": "12"}]]}}});
        assert_eq!(
            parse_history(&cfg(), "p1", &ok(interrupted)),
            Ok(Some(UpstreamState::Failed(
                "the workflow was interrupted".into()
            )))
        );
        let queue = json!({"queue_running": [[1, "p1", {}, {}, []]], "queue_pending": [[2, "p2", {}, {}, []]]});
        assert_eq!(parse_queue("p1", &ok(queue.clone())), Ok(Lookup::Running));
        assert_eq!(parse_queue("p2", &ok(queue.clone())), Ok(Lookup::Queued));
        assert_eq!(parse_queue("p3", &ok(queue)), Ok(Lookup::Unknown));
    }

    /// Runs a future that never waits (the fake server below answers at once).
    fn now<F: Future>(f: F) -> F::Output {
        let mut f = std::pin::pin!(f);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match f.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(out) => out,
            std::task::Poll::Pending => panic!("the lookup waited"),
        }
    }

    #[test]
    fn a_prompt_finishing_between_the_two_reads_is_found_done() {
        // A server whose prompt p1 runs until the first read, and is in the history
        // (and gone from the queue) for every read after it, whichever comes first.
        let reads = std::cell::Cell::new(0);
        let server = |probe: Probe| {
            let n = reads.get();
            reads.set(n + 1);
            let finished = n > 0;
            let body = match (probe, finished) {
                (Probe::Queue, false) => {
                    json!({"queue_running": [[1, "p1", {}, {}, []]], "queue_pending": []})
                }
                (Probe::Queue, true) => json!({"queue_running": [], "queue_pending": []}),
                (Probe::History, false) => json!({}),
                (Probe::History, true) => json!({"p1": {"outputs": {"14": {"images": [
                    {"filename": "img_00001_.png", "subfolder": "parallax/p1", "type": "output"}]}},
                    "status": {"status_str": "success", "completed": true, "messages": []}}}),
            };
            std::future::ready(Ok(r(200, body)))
        };
        let found = now(lookup_with(&cfg(), "p1", server)).unwrap();
        assert!(
            matches!(found, Lookup::Done(UpstreamState::Completed(_))),
            "{found:?}"
        );
        assert_eq!(reads.get(), 2);
        assert_eq!(
            build_probe(&cfg(), "p1", Probe::History).url,
            "http://gpu:8188/history/p1"
        );
        assert_eq!(
            build_probe(&cfg(), "p1", Probe::Queue).url,
            "http://gpu:8188/queue"
        );
    }
}
