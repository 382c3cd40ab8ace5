//! Segmind's v2 queue protocol, as documented (also what a self-hosted Parallax v2
//! speaks, mounted under another prefix): `POST /v2/{model}` answers `{request_id,
//! status: QUEUED, poll_url, status_url, response_url}`; `GET
//! /v2/requests/{id}/status` answers the status (with `status_url` and `response_url`
//! while it waits; FAILED as HTTP 422 with `error`); `GET /v2/requests/{id}` answers
//! the result: `output` the image's URL, `images` every image as `{url, content_type,
//! file_name, file_size}`; unknown or expired ids answer 404 `{"error": "Request <id>
//! not found"}`. Requests need `x-api-key`. Every field is in
//! `e2e/contracts/segmind-v2.json`, with its public source.

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::common::{
    Ask, control_image, create_job, error, has_header, metrics, num, output_urls, preview_label,
    read_fields, text,
};
use crate::gates;
use crate::jobs::{Job, Phase};
use crate::state::Shared;
use parallax_sim::render::Format;

/// The protocol under `/{scope}` (`segmind` or `parallax`).
pub fn router(scope: &'static str) -> Router<Shared> {
    Router::new()
        .route(
            "/v2/{model}",
            post(move |s: State<Shared>, p: Path<String>, r: Request| submit(scope, s, p, r)),
        )
        .route(
            "/v2/requests/{id}/status",
            get(move |s: State<Shared>, p: Path<String>, h: HeaderMap| status(scope, s, p, h)),
        )
        .route(
            "/v2/requests/{id}",
            get(move |s: State<Shared>, p: Path<String>, h: HeaderMap| result(scope, s, p, h)),
        )
        .route(
            "/v2/requests/{id}/cancel",
            post(move |s: State<Shared>, p: Path<String>, h: HeaderMap| cancel(scope, s, p, h)),
        )
}

fn unauthorized() -> Response {
    error(
        StatusCode::UNAUTHORIZED,
        "Missing Authorization or x-api-key in header",
    )
}

async fn submit(
    scope: &'static str,
    State(sim): State<Shared>,
    Path(model): Path<String>,
    req: Request,
) -> Response {
    if !has_header(req.headers(), "x-api-key") {
        return unauthorized();
    }
    // A Parallax upstream replays a submit with a known `Idempotency-Key` (Segmind has
    // no such header).
    let key = (scope == "parallax")
        .then(|| req.headers().get("idempotency-key"))
        .flatten()
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let replayed = key.as_ref().and_then(|k| {
        let known = sim.idempotency.lock().unwrap_or_else(|e| e.into_inner());
        known.get(k).and_then(|id| sim.jobs.get(id))
    });
    if let Some(job) = replayed {
        return accepted(&sim, scope, &job.id);
    }
    // A Parallax upstream also serves the depth preview (no prompt, one PNG map).
    let preview = scope == "parallax" && model == "depth-anything-v2";
    let dev = match model.as_str() {
        "flux-depth-pro" => false,
        "flux-depth-dev" => true,
        _ if preview => false,
        _ => return error(StatusCode::NOT_FOUND, format!("Model {model} not found")),
    };
    let fields = match read_fields(req).await {
        Ok(f) => f,
        Err(resp) => return resp,
    };
    let prompt = text(&fields, "prompt").unwrap_or_default();
    if prompt.trim().is_empty() && !preview {
        return error(StatusCode::BAD_REQUEST, "prompt is required");
    }
    // A preview is named (and its faults read) by its image (`preview_label`).
    let early = match preview {
        true => Some(control_image(&sim, scope, &prompt, text(&fields, "control_image")).await),
        false => None,
    };
    let prompt = match &early {
        Some(Ok(bytes)) => preview_label(bytes),
        _ => prompt,
    };
    if let Some(fault) = sim.submit_fault(scope, &prompt).await {
        return fault;
    }
    // A Parallax fetches only https URLs on public hosts, and refuses others at
    // submit (`edge/src/input/remote.rs`).
    if scope == "parallax"
        && text(&fields, "control_image").is_some_and(|v| v.starts_with("http://"))
    {
        return error(
            StatusCode::BAD_REQUEST,
            "control_image: only https URLs are fetched",
        );
    }
    let megapixels = match (dev, text(&fields, "megapixels").as_deref()) {
        (true, Some("match_input")) => None,
        (true, Some("0.25")) => Some(0.25),
        _ => Some(1.0),
    };
    let image = match early {
        Some(image) => image,
        None => control_image(&sim, scope, &prompt, text(&fields, "control_image")).await,
    };
    let ask = Ask {
        model: if preview {
            "depth-anything-v2"
        } else if dev {
            "flux-depth-dev"
        } else {
            "flux-depth-pro"
        },
        seed: num(&fields, "seed").map_or(96522, |s| s as u64),
        count: if dev {
            num(&fields, "num_outputs").unwrap_or(1.0).clamp(1.0, 4.0) as usize
        } else {
            1
        },
        format: match text(&fields, "output_format").and_then(|f| Format::parse(&f)) {
            _ if preview => Format::Png,
            Some(f) => f,
            None if dev => Format::Webp,
            None => Format::Jpg,
        },
        quality: num(&fields, "output_quality")
            .unwrap_or(90.0)
            .clamp(1.0, 100.0) as u8,
        megapixels,
        image,
        prompt,
    };
    // Like Segmind, a well-formed but unusable body is accepted and fails later.
    let job = create_job(&sim, ask);
    if let Some(k) = key {
        sim.idempotency
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(k, job.id.clone());
    }
    gates::hold_job(&sim.gates, scope, "submit", &job).await;
    accepted(&sim, scope, &job.id)
}

/// The submit's answer for job `id`.
fn accepted(sim: &Shared, scope: &str, id: &str) -> Response {
    let base = format!("{}/{scope}", sim.base);
    Json(json!({
        "request_id": id,
        "status": "QUEUED",
        "poll_url": format!("{base}/v1/requests/{id}"),
        "status_url": format!("{base}/v2/requests/{id}/status"),
        "response_url": format!("{base}/v2/requests/{id}"),
    }))
    .into_response()
}

/// The job a status or result request names, or the error answer (401, 404).
fn find_job(sim: &Shared, headers: &HeaderMap, id: &str) -> Result<Arc<Job>, Response> {
    if !has_header(headers, "x-api-key") {
        return Err(unauthorized());
    }
    sim.jobs
        .get(id)
        .ok_or_else(|| error(StatusCode::NOT_FOUND, format!("Request {id} not found")))
}

fn failed(sim: &Shared, id: &str, reason: &str) -> Response {
    (
        StatusCode::UNPROCESSABLE_ENTITY,
        Json(json!({"status": "FAILED", "error": reason, "request_id": id, "metrics": metrics(&sim.jobs)})),
    )
        .into_response()
}

async fn status(
    scope: &'static str,
    State(sim): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let job = match find_job(&sim, &headers, &id) {
        Ok(job) => job,
        Err(resp) => return resp,
    };
    if let Some(redirect) = sim.poll_redirect(
        scope,
        &job.spec.prompt,
        &format!("/{scope}/v2/requests/{id}/status"),
    ) {
        return redirect;
    }
    gates::hold_job(&sim.gates, scope, "poll", &job).await;
    let waiting = |status: &str| {
        let base = format!("{}/{scope}/v2/requests/{id}", sim.base);
        json!({"status": status, "request_id": id, "status_url": format!("{base}/status"),
               "response_url": base, "metrics": {}})
    };
    let body = match sim.jobs.phase(&job) {
        Phase::Queued => waiting("QUEUED"),
        Phase::Processing => waiting("PROCESSING"),
        Phase::Completed => {
            json!({"status": "COMPLETED", "request_id": id, "metrics": metrics(&sim.jobs)})
        }
        Phase::Failed(reason) => return failed(&sim, &id, &reason),
    };
    Json(body).into_response()
}

async fn result(
    scope: &'static str,
    State(sim): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let job = match find_job(&sim, &headers, &id) {
        Ok(job) => job,
        Err(resp) => return resp,
    };
    gates::hold_job(&sim.gates, scope, "result", &job).await;
    let (status, output, images) = match sim.jobs.phase(&job) {
        Phase::Queued => ("QUEUED", Value::Null, Vec::new()),
        Phase::Processing => ("PROCESSING", Value::Null, Vec::new()),
        Phase::Failed(reason) => return failed(&sim, &id, &reason),
        Phase::Completed => {
            let images: Vec<Value> = output_urls(&sim, &job)
                .into_iter()
                .zip(job.outputs().iter())
                .map(|(url, image)| {
                    json!({
                        "file_name": url.rsplit('/').next().unwrap_or_default(),
                        "url": url,
                        "content_type": image.format.content_type(),
                        "file_size": image.bytes.len(),
                    })
                })
                .collect();
            // `output` is one URL string, the first image's (Segmind's docs and SDK).
            let output = images.first().map_or(Value::Null, |i| i["url"].clone());
            ("COMPLETED", output, images)
        }
    };
    Json(
        json!({"status": status, "request_id": id, "error": null, "output": output,
                "images": images, "seed": job.spec.seed, "metrics": metrics(&sim.jobs)}),
    )
    .into_response()
}

/// `POST /v2/requests/{id}/cancel` (the Parallax protocol only; Segmind has no cancel):
/// a running job is stopped and answered as our API answers it, with `metrics.credits`
/// refunded in full when it had not started; a finished one answers 409.
async fn cancel(
    scope: &'static str,
    State(sim): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if scope != "parallax" {
        return error(StatusCode::NOT_FOUND, "Not found");
    }
    let job = match find_job(&sim, &headers, &id) {
        Ok(job) => job,
        Err(resp) => return resp,
    };
    let phase = sim.jobs.phase(&job);
    if matches!(phase, Phase::Completed | Phase::Failed(_)) {
        return error(StatusCode::CONFLICT, "This request already finished");
    }
    job.canceled
        .store(true, std::sync::atomic::Ordering::Relaxed);
    // Applied on arrival; a gate holds only the answer.
    gates::hold_job(&sim.gates, scope, "cancel", &job).await;
    let refunded = if phase == Phase::Queued { 5 } else { 0 };
    (
        StatusCode::OK,
        Json(
            json!({"request_id": id, "status": "FAILED", "error": "Canceled by its owner",
            "metrics": {"credits": {"charged": 5, "refunded": refunded}}}),
        ),
    )
        .into_response()
}
