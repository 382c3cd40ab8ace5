//! Replicate's predictions API for the official FLUX depth models:
//! `POST /v1/models/black-forest-labs/{model}/predictions` (`Authorization: Bearer`)
//! with `{"input": {...}}` answers a prediction (`status: starting`, `urls.get`,
//! `urls.cancel`); `GET /v1/predictions/{id}` moves through `processing` to
//! `succeeded` (pro: `output` is one URL; dev: a list) or `failed`/`canceled`;
//! `POST /v1/predictions/{id}/cancel` cancels. A `webhook` on the create call gets the
//! prediction POSTed when it ends (`hooks`); `GET /v1/webhooks/default/secret` answers
//! the account's signing secret.
//!
//! The depth preview is the community model chenxwh/depth-anything-v2, created by
//! version: `POST /v1/predictions {"version", "input": {"image", "model_size"}}`
//! (https://replicate.com/docs/reference/http#predictions.create; its cog
//! `predict.py`: `model_size` Small|Base|Large). It succeeds with `output: {color_depth,
//! grey_depth}`; the sim renders only the grey map and names it for both (it has no
//! colour map to draw; Parallax keeps `grey_depth`). An unknown version is 422, as
//! Replicate answers "Invalid version or not permitted".

use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Map, Value, json};

use crate::common::{
    Ask, control_image, create_job, num, output_urls, preview_ask, read_fields, text,
};
use crate::hooks::{self, Target};
use crate::jobs::{Job, Phase};
use crate::state::Shared;
use parallax_sim::render::Format;

pub fn router() -> Router<Shared> {
    Router::new()
        .route(
            "/v1/models/black-forest-labs/{model}/predictions",
            post(create),
        )
        .route("/v1/predictions", post(create_preview))
        .route("/v1/predictions/{id}", get(get_prediction))
        .route("/v1/predictions/{id}/cancel", post(cancel))
        .route(
            "/v1/webhooks/default/secret",
            get(|headers: HeaderMap| async move {
                if authorized(&headers) {
                    hooks::replicate_secret().await
                } else {
                    unauthenticated()
                }
            }),
        )
}

fn problem(status: StatusCode, title: &str, detail: &str) -> Response {
    (
        status,
        Json(json!({"title": title, "detail": detail, "status": status.as_u16()})),
    )
        .into_response()
}

fn authorized(headers: &HeaderMap) -> bool {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| !t.trim().is_empty())
}

fn unauthenticated() -> Response {
    problem(
        StatusCode::UNAUTHORIZED,
        "Unauthenticated",
        "You did not pass a valid authentication token",
    )
}

async fn create(State(sim): State<Shared>, Path(model): Path<String>, req: Request) -> Response {
    if !authorized(req.headers()) {
        return unauthenticated();
    }
    let dev = match model.as_str() {
        "flux-depth-pro" => false,
        "flux-depth-dev" => true,
        _ => {
            return problem(
                StatusCode::NOT_FOUND,
                "Not found",
                "The requested resource could not be found.",
            );
        }
    };
    let body = match read_fields(req).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let Some(Value::Object(input)) = body.get("input").cloned() else {
        return problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Input validation failed",
            "- input: input is required",
        );
    };
    let prompt = text(&input, "prompt").unwrap_or_default();
    if let Some(fault) = sim.submit_fault("replicate", &prompt).await {
        return fault;
    }
    let format =
        text(&input, "output_format").unwrap_or_else(|| if dev { "webp" } else { "jpg" }.into());
    let allowed: &[&str] = if dev {
        &["webp", "jpg", "png"]
    } else {
        &["jpg", "png"]
    };
    if !allowed.contains(&format.as_str()) {
        return problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Input validation failed",
            &format!(
                "- input.output_format: output_format must be one of the following: {}",
                allowed.join(", ")
            ),
        );
    }
    let steps_key = if dev { "num_inference_steps" } else { "steps" };
    if num(&input, steps_key).is_some_and(|s| !(1.0..=50.0).contains(&s)) {
        return problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Input validation failed",
            &format!("- input.{steps_key}: out of range"),
        );
    }
    let ask = Ask {
        model: if dev {
            "flux-depth-dev"
        } else {
            "flux-depth-pro"
        },
        seed: num(&input, "seed").map_or(42, |s| s as u64),
        count: if dev {
            num(&input, "num_outputs").unwrap_or(1.0).clamp(1.0, 4.0) as usize
        } else {
            1
        },
        format: Format::parse(&format).unwrap_or(Format::Jpg),
        quality: num(&input, "output_quality")
            .unwrap_or(90.0)
            .clamp(1.0, 100.0) as u8,
        megapixels: match text(&input, "megapixels").as_deref() {
            Some("match_input") if dev => None,
            Some("0.25") if dev => Some(0.25),
            _ => Some(1.0),
        },
        image: control_image(&sim, "replicate", &prompt, text(&input, "control_image")).await,
        prompt,
    };
    created(&sim, create_job(&sim, ask), &body, &input).await
}

/// chenxwh/depth-anything-v2's version (the one public clients pin).
const PREVIEW_VERSION: &str = "b239ea33cff32bb7abb5db39ffe9a09c14cbc2894331d1ef66fe096eed88ebd4";

/// `POST /v1/predictions` by version: only the depth preview's is known here.
async fn create_preview(State(sim): State<Shared>, req: Request) -> Response {
    if !authorized(req.headers()) {
        return unauthenticated();
    }
    let body = match read_fields(req).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let version = body.get("version").and_then(Value::as_str).unwrap_or("");
    if version.rsplit(':').next() != Some(PREVIEW_VERSION) {
        return problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid version or not permitted",
            "The specified version does not exist (or perhaps you don't have permission to use it?)",
        );
    }
    let Some(Value::Object(input)) = body.get("input").cloned() else {
        return problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Input validation failed",
            "- input: input is required",
        );
    };
    if text(&input, "model_size").is_some_and(|m| !["Small", "Base", "Large"].contains(&m.as_str()))
    {
        return problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Input validation failed",
            "- input.model_size: model_size must be one of the following: \"Small\", \"Base\", \"Large\"",
        );
    }
    let Some(url) = text(&input, "image") else {
        return problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Input validation failed",
            "- input: image is required",
        );
    };
    let ask = match preview_ask(&sim, "replicate", url).await {
        Ok(ask) => ask,
        Err(fault) => return fault,
    };
    created(&sim, create_job(&sim, ask), &body, &input).await
}

/// A created prediction's answer (201), its webhook scheduled.
async fn created(
    sim: &Shared,
    job: std::sync::Arc<Job>,
    body: &Map<String, Value>,
    input: &Map<String, Value>,
) -> Response {
    let sim = sim.clone();
    // `webhook` (+ `webhook_events_filter`): the prediction is POSTed there when it
    // ends, unless the filter leaves `completed` out.
    let completed = body
        .get("webhook_events_filter")
        .and_then(Value::as_array)
        .is_none_or(|f| f.iter().any(|e| e == "completed"));
    if let Some(url) = body.get("webhook").and_then(Value::as_str)
        && completed
    {
        let shown = sim.clone();
        hooks::schedule(
            &sim.hooks,
            job.clone(),
            Target::Replicate {
                url: url.to_owned(),
            },
            move |job| prediction(&shown, job, &Map::new()),
        );
    }
    crate::gates::hold_job(&sim.gates, "replicate", "submit", &job).await;
    (StatusCode::CREATED, Json(prediction(&sim, &job, input))).into_response()
}

/// The prediction object, as `GET` answers it (and the webhook carries it).
fn prediction(sim: &Shared, job: &Job, input: &Map<String, Value>) -> Value {
    let dev = job.model == "flux-depth-dev";
    let preview = job.model == "depth-anything-v2";
    let base = format!("{}/replicate/v1/predictions/{}", sim.base, job.id);
    let phase = sim.jobs.phase(job);
    let never_started =
        phase == Phase::Queued || job.never_started.load(std::sync::atomic::Ordering::Relaxed);
    let started_at = if never_started {
        Value::Null
    } else {
        json!("2026-01-01T00:00:01.000000Z")
    };
    let (status, output, error) = match phase {
        Phase::Queued => ("starting", Value::Null, Value::Null),
        Phase::Processing => ("processing", Value::Null, Value::Null),
        Phase::Completed => {
            let urls = output_urls(sim, job);
            let output = if preview {
                json!({"color_depth": urls.first(), "grey_depth": urls.first()})
            } else if dev {
                json!(urls)
            } else {
                json!(urls.first())
            };
            ("succeeded", output, Value::Null)
        }
        Phase::Failed(reason) if reason.contains("canceled") => {
            ("canceled", Value::Null, Value::Null)
        }
        Phase::Failed(reason) if reason.contains("moderated") => (
            "failed",
            Value::Null,
            json!(
                "All generated images contained NSFW content. Try running it again with a different prompt."
            ),
        ),
        Phase::Failed(reason) => ("failed", Value::Null, json!(reason)),
    };
    json!({
        "id": job.id,
        "model": if preview { "chenxwh/depth-anything-v2".to_owned() } else { format!("black-forest-labs/{}", job.model) },
        "version": if preview { PREVIEW_VERSION } else { "hidden" },
        "input": input,
        "output": output,
        "error": error,
        "logs": "",
        "status": status,
        // https://replicate.com/docs/reference/http#predictions.get: null until the
        // prediction starts running.
        "started_at": started_at,
        "data_removed": false,
        "urls": {"get": base, "cancel": format!("{base}/cancel"), "stream": format!("{base}/stream")},
        "metrics": {"predict_time": sim.jobs.timing.process.as_secs_f64(), "image_count": job.spec.count}
    })
}

async fn get_prediction(
    State(sim): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if !authorized(&headers) {
        return unauthenticated();
    }
    match sim.jobs.get(&id) {
        Some(job) => {
            crate::gates::hold_job(&sim.gates, "replicate", "poll", &job).await;
            Json(prediction(&sim, &job, &Map::new())).into_response()
        }
        None => problem(
            StatusCode::NOT_FOUND,
            "Not found",
            "The requested resource could not be found.",
        ),
    }
}

async fn cancel(State(sim): State<Shared>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    if !authorized(&headers) {
        return unauthenticated();
    }
    match sim.jobs.get(&id) {
        Some(job) => {
            let phase = sim.jobs.phase(&job);
            if !matches!(phase, Phase::Completed | Phase::Failed(_)) {
                job.canceled
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                // Replicate's prediction keeps `started_at` null if it never started.
                job.never_started
                    .store(phase == Phase::Queued, std::sync::atomic::Ordering::Relaxed);
            }
            // Applied on arrival; a gate holds only the answer.
            crate::gates::hold_job(&sim.gates, "replicate", "cancel", &job).await;
            Json(prediction(&sim, &job, &Map::new())).into_response()
        }
        None => problem(
            StatusCode::NOT_FOUND,
            "Not found",
            "The requested resource could not be found.",
        ),
    }
}
