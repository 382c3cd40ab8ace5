//! fal.ai's queue API for `fal-ai/flux-lora-depth`, from fal's docs
//! (https://docs.fal.ai/documentation/model-apis/inference/queue,
//! https://fal.ai/docs/inference-api/queue/cancel) and the shapes fal's own clients
//! parse (fal_client 1.0.3 `client.py` `_BaseRequestHandle._parse_status`,
//! `SyncClient.submit`; fal-js `queue.ts`):
//!
//! - `POST /{owner}/{app}` with `Authorization: Key …` and the input as JSON answers
//!   `{request_id, response_url, status_url, cancel_url, queue_position}`, the URLs on
//!   the owner/app root.
//! - `GET …/requests/{id}/status` answers `{"status": "IN_QUEUE", "queue_position"}`,
//!   `{"status": "IN_PROGRESS", "logs"}` or `{"status": "COMPLETED", "logs", "metrics"}`
//!   (with `error` and `error_type` when it failed).
//! - `GET …/requests/{id}` answers `{images: [{url, width, height, content_type}],
//!   seed, has_nsfw_concepts, timings, prompt}`.
//! - `PUT …/requests/{id}/cancel` answers 202 `{"status": "CANCELLATION_REQUESTED"}`, 400
//!   `{"status": "ALREADY_COMPLETED"}` or 404 `{"status": "NOT_FOUND"}`.
//!
//! - The depth preview, `POST /fal-ai/image-preprocessors/depth-anything/v2` with
//!   `{image_url}` (fal-js `endpoints.ts`: `ImagePreprocessorsDepthAnythingV2Input =
//!   ZoeInput`), answers the same queue shapes on the owner/alias root
//!   `fal-ai/image-preprocessors` (fal-js `queue.ts` drops the endpoint's path), and
//!   its result is `{image: {url, width, height, content_type}}` (`…Output =
//!   HEDOutput`): the sim's pseudo-depth map, the control image's size.
//!
//! A `fal_webhook=<url>` query parameter on the submit gets the outcome POSTed there,
//! signed (`hooks`); `GET /.well-known/jwks.json` serves the signing key.
//!
//! Not documented, so the sim's own choice (UNVERIFIED): a 422 body for a missing
//! field in FastAPI's `{"detail": [{loc, msg, type}]}` form; the result of a request
//! that failed or is not done answering 400 `{"detail": …}`; a canceled request
//! reporting COMPLETED with `error_type: "RequestCancelled"`.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde_json::{Map, Value, json};

use crate::common::{Ask, control_image, create_job_as, num, output_urls, preview_ask, text};
use crate::hooks::{self, Target};
use crate::jobs::{Job, Phase};
use crate::state::Shared;
use parallax_sim::render::Format;

const APP: &str = "fal-ai/flux-lora-depth";
const PREVIEW_ROOT: &str = "fal-ai/image-preprocessors";

/// The owner/alias root of `job`'s queue URLs.
fn root_of(job: &Job) -> &'static str {
    if job.model == "depth-anything-v2" {
        PREVIEW_ROOT
    } else {
        APP
    }
}

pub fn router() -> Router<Shared> {
    Router::new()
        .route("/.well-known/jwks.json", get(hooks::fal_jwks))
        .route(
            "/fal-ai/image-preprocessors/depth-anything/v2",
            post(submit_preview),
        )
        .route("/{owner}/{app}", post(submit))
        .route("/{owner}/{app}/requests/{id}/status", get(status))
        .route("/{owner}/{app}/requests/{id}", get(result))
        .route("/{owner}/{app}/requests/{id}/cancel", put(cancel))
}

fn authorized(headers: &HeaderMap) -> bool {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Key "))
        .is_some_and(|k| !k.trim().is_empty())
}

fn detail(status: StatusCode, detail: Value) -> Response {
    (status, Json(json!({"detail": detail}))).into_response()
}

fn unauthorized() -> Response {
    detail(
        StatusCode::UNAUTHORIZED,
        json!("Authentication is required to perform this action"),
    )
}

async fn submit(
    State(sim): State<Shared>,
    Path((owner, app)): Path<(String, String)>,
    Query(query): Query<std::collections::HashMap<String, String>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if !authorized(&headers) {
        return unauthorized();
    }
    if format!("{owner}/{app}") != APP {
        return detail(StatusCode::NOT_FOUND, json!("Application not found"));
    }
    let Ok(Value::Object(input)) = serde_json::from_slice::<Value>(&body) else {
        return detail(
            StatusCode::UNPROCESSABLE_ENTITY,
            json!("Body must be a JSON object"),
        );
    };
    let missing: Vec<Value> = ["prompt", "image_url"]
        .iter()
        .filter(|k| !input.get(**k).is_some_and(Value::is_string))
        .map(
            |k| json!({"loc": ["body", k], "msg": "field required", "type": "value_error.missing"}),
        )
        .collect();
    if !missing.is_empty() {
        return detail(StatusCode::UNPROCESSABLE_ENTITY, Value::Array(missing));
    }
    let prompt = text(&input, "prompt").unwrap_or_default();
    if let Some(fault) = sim.submit_fault("fal", &prompt).await {
        return fault;
    }
    let format = match input.get("output_format").and_then(Value::as_str) {
        None | Some("jpeg") => Format::Jpg,
        Some("png") => Format::Png,
        Some(other) => {
            return detail(
                StatusCode::UNPROCESSABLE_ENTITY,
                json!([{"loc": ["body", "output_format"], "msg": format!("unexpected value '{other}'; permitted: 'jpeg', 'png'"), "type": "value_error.const"}]),
            );
        }
    };
    let size = input.get("image_size").and_then(|s| {
        Some((
            u32::try_from(s.get("width")?.as_u64()?).ok()?,
            u32::try_from(s.get("height")?.as_u64()?).ok()?,
        ))
    });
    let ask = Ask {
        model: "flux-depth-dev",
        seed: num(&input, "seed").map_or(0, |s| s as u64),
        count: num(&input, "num_images").unwrap_or(1.0).clamp(1.0, 4.0) as usize,
        format,
        quality: 90,
        megapixels: None,
        image: control_image(&sim, "fal", &prompt, text(&input, "image_url")).await,
        prompt,
    };
    let job = create_job_as(&sim, ask, None, size);
    if let Some(url) = query.get("fal_webhook") {
        let shown = sim.clone();
        hooks::schedule(
            &sim.hooks,
            job.clone(),
            Target::Fal { url: url.clone() },
            move |job| webhook_body(&shown, job),
        );
    }
    let root = format!("{}/fal/{APP}/requests/{}", sim.base, job.id);
    Json(json!({
        "status": "IN_QUEUE", "request_id": job.id, "queue_position": 0,
        "response_url": root, "status_url": format!("{root}/status"), "cancel_url": format!("{root}/cancel")
    }))
    .into_response()
}

/// The depth preview: `image_url` in, one map out.
async fn submit_preview(
    State(sim): State<Shared>,
    Query(query): Query<std::collections::HashMap<String, String>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if !authorized(&headers) {
        return unauthorized();
    }
    let Ok(Value::Object(input)) = serde_json::from_slice::<Value>(&body) else {
        return detail(
            StatusCode::UNPROCESSABLE_ENTITY,
            json!("Body must be a JSON object"),
        );
    };
    let Some(url) = text(&input, "image_url") else {
        return detail(
            StatusCode::UNPROCESSABLE_ENTITY,
            json!([{"loc": ["body", "image_url"], "msg": "field required", "type": "value_error.missing"}]),
        );
    };
    let ask = match preview_ask(&sim, "fal", url).await {
        Ok(ask) => ask,
        Err(fault) => return fault,
    };
    let job = create_job_as(&sim, ask, None, None);
    if let Some(url) = query.get("fal_webhook") {
        let shown = sim.clone();
        hooks::schedule(
            &sim.hooks,
            job.clone(),
            Target::Fal { url: url.clone() },
            move |job| webhook_body(&shown, job),
        );
    }
    let root = format!("{}/fal/{PREVIEW_ROOT}/requests/{}", sim.base, job.id);
    Json(json!({
        "status": "IN_QUEUE", "request_id": job.id, "queue_position": 0,
        "response_url": root, "status_url": format!("{root}/status"), "cancel_url": format!("{root}/cancel")
    }))
    .into_response()
}

fn job_or_404(
    sim: &Shared,
    headers: &HeaderMap,
    id: &str,
) -> Result<std::sync::Arc<Job>, Response> {
    if !authorized(headers) {
        return Err(unauthorized());
    }
    sim.jobs.get(id).ok_or_else(|| {
        detail(
            StatusCode::NOT_FOUND,
            json!(format!("Request {id} not found")),
        )
    })
}

async fn status(
    State(sim): State<Shared>,
    Path((_, _, id)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    let job = match job_or_404(&sim, &headers, &id) {
        Ok(j) => j,
        Err(r) => return r,
    };
    let root = format!("{}/fal/{}/requests/{id}", sim.base, root_of(&job));
    let canceled = job.canceled.load(std::sync::atomic::Ordering::Relaxed);
    let body = match sim.jobs.phase(&job) {
        Phase::Queued => json!({"status": "IN_QUEUE", "queue_position": 0, "response_url": root}),
        Phase::Processing => json!({"status": "IN_PROGRESS", "logs": [], "response_url": root}),
        Phase::Completed => json!({"status": "COMPLETED", "logs": [], "response_url": root,
                                    "metrics": {"inference_time": sim.jobs.timing.process.as_secs_f64()}}),
        Phase::Failed(_) if canceled => {
            json!({"status": "COMPLETED", "logs": [], "response_url": root, "metrics": {},
                                                "error": "Request was cancelled", "error_type": "RequestCancelled"})
        }
        Phase::Failed(reason) => {
            json!({"status": "COMPLETED", "logs": [], "response_url": root, "metrics": {},
                                         "error": reason, "error_type": "InferenceError"})
        }
    };
    Json(body).into_response()
}

async fn result(
    State(sim): State<Shared>,
    Path((_, _, id)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    let job = match job_or_404(&sim, &headers, &id) {
        Ok(j) => j,
        Err(r) => return r,
    };
    match sim.jobs.phase(&job) {
        Phase::Completed => Json(output(&sim, &job)).into_response(),
        Phase::Failed(reason) => detail(StatusCode::BAD_REQUEST, json!(reason)),
        _ => detail(
            StatusCode::BAD_REQUEST,
            json!("Request is still in progress"),
        ),
    }
}

/// A completed request's output, as the result (and the webhook's `payload`) carries it.
fn output(sim: &Shared, job: &Job) -> Value {
    let outputs = job.outputs();
    let images: Vec<Value> = output_urls(sim, job)
        .into_iter()
        .zip(outputs.iter())
        .map(|(url, o)| {
            let (w, h) = image::load_from_memory(&o.bytes)
                .map(|i| (i.width(), i.height()))
                .unwrap_or((0, 0));
            json!({"url": url, "width": w, "height": h, "content_type": o.format.content_type()})
        })
        .collect();
    if job.model == "depth-anything-v2" {
        return json!({"image": images.first().cloned().unwrap_or(Value::Null)});
    }
    let mut body = Map::new();
    body.insert("has_nsfw_concepts".into(), json!(vec![false; images.len()]));
    body.insert("images".into(), Value::Array(images));
    body.insert("seed".into(), json!(job.spec.seed));
    body.insert("prompt".into(), json!(job.spec.prompt));
    body.insert(
        "timings".into(),
        json!({"inference": sim.jobs.timing.process.as_secs_f64()}),
    );
    Value::Object(body)
}

/// The webhook body (https://docs.fal.ai/model-endpoints/webhooks): `status` OK with
/// the output as `payload`, or ERROR with `error` and the error's `payload`.
fn webhook_body(sim: &Shared, job: &Job) -> Value {
    match sim.jobs.phase(job) {
        Phase::Completed => json!({"request_id": job.id, "gateway_request_id": job.id,
                                   "status": "OK", "payload": output(sim, job)}),
        Phase::Failed(reason) => json!({"request_id": job.id, "gateway_request_id": job.id,
                                        "status": "ERROR", "error": reason,
                                        "payload": {"detail": reason}}),
        // Not sent before the end; described as fal would mid-way.
        _ => json!({"request_id": job.id, "gateway_request_id": job.id, "status": "ERROR",
                    "error": "Request is still in progress", "payload": null}),
    }
}

async fn cancel(
    State(sim): State<Shared>,
    Path((_, _, id)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    if !authorized(&headers) {
        return unauthorized();
    }
    let Some(job) = sim.jobs.get(&id) else {
        return (StatusCode::NOT_FOUND, Json(json!({"status": "NOT_FOUND"}))).into_response();
    };
    match sim.jobs.phase(&job) {
        Phase::Queued | Phase::Processing => {
            job.canceled
                .store(true, std::sync::atomic::Ordering::Relaxed);
            (
                StatusCode::ACCEPTED,
                Json(json!({"status": "CANCELLATION_REQUESTED"})),
            )
                .into_response()
        }
        _ => (
            StatusCode::BAD_REQUEST,
            Json(json!({"status": "ALREADY_COMPLETED"})),
        )
            .into_response(),
    }
}
