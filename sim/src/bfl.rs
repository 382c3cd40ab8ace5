//! Black Forest Labs' API for `flux-pro-1.0-depth`: `POST /v1/flux-pro-1.0-depth`
//! (`x-key`) with the inputs as JSON answers `{id, polling_url}`; `GET
//! /v1/get_result?id=` answers `Pending` (with `progress`), then `Ready` with
//! `result.sample` (a short-lived URL), or `Error` / `Content Moderated` /
//! `Task not found`. A `[sim:bfl:410!]` prompt plays the retired endpoint. A
//! `webhook_url` (+ `webhook_secret`) gets the finished task POSTed (`hooks`).
//! `preprocessed_image` (a depth map of the caller's own) stands in for
//! `control_image`.

use std::collections::HashMap;

use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::common::{
    Ask, create_job, decode_control, has_header, num, output_urls, read_fields, text,
};
use crate::hooks::{self, Target};
use crate::jobs::{Job, Phase};
use crate::state::Shared;
use parallax_sim::render::Format;

pub fn router() -> Router<Shared> {
    Router::new()
        .route("/v1/flux-pro-1.0-depth", post(submit))
        .route("/v1/get_result", get(get_result))
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        Json(json!({"detail": "Not authenticated"})),
    )
        .into_response()
}

async fn submit(State(sim): State<Shared>, req: Request) -> Response {
    if !has_header(req.headers(), "x-key") {
        return unauthorized();
    }
    let body = match read_fields(req).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let prompt = text(&body, "prompt").unwrap_or_default();
    if let Some(fault) = sim.submit_fault("bfl", &prompt).await {
        return fault;
    }
    let format = text(&body, "output_format").unwrap_or_else(|| "jpeg".into());
    let Some(format) = Format::parse(&format) else {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({"detail": [{"loc": ["body", "output_format"], "msg": "Input should be 'jpeg', 'png' or 'webp'", "type": "enum"}]})),
        )
            .into_response();
    };
    let ask = Ask {
        model: "flux-depth-pro",
        seed: num(&body, "seed").map_or(0, |s| s as u64),
        count: 1,
        format,
        quality: 90,
        megapixels: Some(1.0),
        // One of the two must be given; `preprocessed_image` is the caller's own depth
        // map (providers-2026.md §1.2).
        image: decode_control(
            text(&body, "control_image").or_else(|| text(&body, "preprocessed_image")),
        ),
        prompt,
    };
    let job = create_job(&sim, ask);
    if let Some(url) = text(&body, "webhook_url") {
        let shown = sim.clone();
        hooks::schedule(
            &sim.hooks,
            job.clone(),
            Target::Bfl {
                url,
                secret: text(&body, "webhook_secret"),
            },
            move |job| result_body(&shown, job),
        );
    }
    crate::gates::hold_job(&sim.gates, "bfl", "submit", &job).await;
    Json(json!({
        "id": job.id,
        "polling_url": format!("{}/bfl/v1/get_result?id={}", sim.base, job.id),
        "cost": 2.5, "input_mp": 1.0, "output_mp": 1.0
    }))
    .into_response()
}

async fn get_result(
    State(sim): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if !has_header(&headers, "x-key") {
        return unauthorized();
    }
    let id = q.get("id").cloned().unwrap_or_default();
    let Some(job) = sim.jobs.get(&id) else {
        return Json(json!({"id": id, "status": "Task not found", "result": null, "progress": null, "details": null})).into_response();
    };
    crate::gates::hold_job(&sim.gates, "bfl", "poll", &job).await;
    let body = result_body(&sim, &job);
    Json::<Value>(body).into_response()
}

/// The task as `get_result` answers it (and the webhook carries it).
fn result_body(sim: &Shared, job: &Job) -> Value {
    let id = &job.id;
    match sim.jobs.phase(job) {
        Phase::Queued => {
            json!({"id": id, "status": "Pending", "result": null, "progress": 0.0, "details": null})
        }
        Phase::Processing => {
            json!({"id": id, "status": "Pending", "result": null, "progress": 0.5, "details": null})
        }
        Phase::Completed => {
            let sample = output_urls(sim, job).into_iter().next();
            json!({"id": id, "status": "Ready", "result": {"sample": sample, "prompt": job.spec.prompt, "seed": job.spec.seed}, "progress": 1.0, "details": null})
        }
        Phase::Failed(reason) if reason.contains("moderated") => {
            json!({"id": id, "status": "Content Moderated", "result": null, "progress": null, "details": {"moderation_reasons": ["sim"]}})
        }
        Phase::Failed(reason) => {
            json!({"id": id, "status": "Error", "result": null, "progress": null, "details": {"error": reason}})
        }
    }
}
