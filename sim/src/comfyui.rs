//! ComfyUI's HTTP API (the usual self-hosted GPU server): `POST /upload/image`
//! (multipart field `image`) stores the control image; `POST /prompt` with an
//! API-format graph queues it (`prompt_id`); `GET /queue` lists running/pending;
//! `GET /history/{prompt_id}` is `{}` until done, then carries `outputs` and
//! `status.status_str`; `GET /view?filename=…&type=output` serves the files.
//!
//! The sim interprets the graph like ComfyUI would read it: the image of `LoadImage`,
//! the text of `CLIPTextEncode`, `KSampler.seed`, `RepeatLatentBatch.amount`,
//! `ImageScaleToTotalPixels.megapixels`, and `SaveImage` (PNG) or `SaveAnimatedWEBP`.

use std::collections::HashMap;

use axum::extract::{Multipart, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Map, Value, json};

use crate::common::{Ask, Shared, create_job, error};
use crate::jobs::Phase;
use parallax_sim::render::Format;

pub fn router() -> Router<Shared> {
    Router::new()
        .route("/upload/image", post(upload))
        .route("/prompt", post(queue_prompt))
        .route("/queue", get(queue))
        .route("/history/{id}", get(history))
        .route("/view", get(view))
}

async fn upload(State(sim): State<Shared>, mut mp: Multipart) -> Response {
    let mut name = None;
    let mut data = None;
    while let Ok(Some(field)) = mp.next_field().await {
        if field.name() == Some("image") {
            name = field.file_name().map(str::to_owned);
            data = field.bytes().await.ok();
        }
    }
    let (Some(name), Some(data)) = (name, data) else {
        return (StatusCode::BAD_REQUEST, "no image").into_response();
    };
    sim.uploads
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(name.clone(), data.to_vec());
    Json(json!({"name": name, "subfolder": "", "type": "input"})).into_response()
}

fn node_input<'a>(graph: &'a Map<String, Value>, class: &str, input: &str) -> Option<&'a Value> {
    graph
        .values()
        .find(|n| n["class_type"] == class)
        .and_then(|n| n["inputs"].get(input))
}

fn validation_error(message: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({
            "error": {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation", "details": message, "extra_info": {}},
            "node_errors": {}
        })),
    )
        .into_response()
}

async fn queue_prompt(State(sim): State<Shared>, Json(body): Json<Value>) -> Response {
    let Some(graph) = body.get("prompt").and_then(Value::as_object) else {
        return validation_error("no prompt graph");
    };
    let text = node_input(graph, "CLIPTextEncode", "text")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    if let Some(fault) = sim.submit_fault("comfyui", &text).await {
        return fault;
    }
    let Some(image_name) = node_input(graph, "LoadImage", "image").and_then(Value::as_str) else {
        return validation_error("LoadImage: image missing");
    };
    let Some(bytes) = sim
        .uploads
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(image_name)
        .cloned()
    else {
        return validation_error(&format!("LoadImage: Invalid image file: {image_name}"));
    };
    let format = if graph
        .values()
        .any(|n| n["class_type"] == "SaveAnimatedWEBP")
    {
        Format::Webp
    } else if graph.values().any(|n| n["class_type"] == "SaveImage") {
        Format::Png
    } else {
        return validation_error("Prompt has no outputs");
    };
    let ask = Ask {
        model: "flux-depth-dev",
        seed: node_input(graph, "KSampler", "seed")
            .and_then(Value::as_u64)
            .unwrap_or(0),
        count: node_input(graph, "RepeatLatentBatch", "amount")
            .and_then(Value::as_u64)
            .unwrap_or(1)
            .clamp(1, 4) as usize,
        format,
        quality: node_input(graph, "SaveAnimatedWEBP", "quality")
            .and_then(Value::as_u64)
            .unwrap_or(90)
            .clamp(1, 100) as u8,
        megapixels: node_input(graph, "ImageScaleToTotalPixels", "megapixels")
            .and_then(Value::as_f64),
        image: Ok(bytes),
        prompt: text,
    };
    let job = create_job(&sim, ask);
    Json(json!({"prompt_id": job.id, "number": 1, "node_errors": {}})).into_response()
}

async fn queue(State(sim): State<Shared>) -> Response {
    let (running, pending) = sim.jobs.partition(|job| match sim.jobs.phase(job) {
        Phase::Queued => Some(false),
        Phase::Processing => Some(true),
        _ => None,
    });
    let entry = |id: &String| json!([1, id, {}, {}, []]);
    Json(json!({
        "queue_running": running.iter().map(entry).collect::<Vec<_>>(),
        "queue_pending": pending.iter().map(entry).collect::<Vec<_>>()
    }))
    .into_response()
}

fn file_name(id: &str, n: usize, format: Format) -> String {
    format!("parallax_{id}_{n:05}_.{}", format.ext())
}

async fn history(State(sim): State<Shared>, Path(id): Path<String>) -> Response {
    let Some(job) = sim.jobs.get(&id) else {
        return Json(json!({})).into_response();
    };
    let entry = match sim.jobs.phase(&job) {
        Phase::Queued | Phase::Processing => return Json(json!({})).into_response(),
        Phase::Completed => {
            let images: Vec<Value> = (0..job.spec.count)
                .map(|n| json!({"filename": file_name(&id, n, job.spec.format), "subfolder": "", "type": "output"}))
                .collect();
            json!({
                "prompt": [1, id, {}, {}, ["14"]],
                "outputs": {"14": {"images": images}},
                "status": {"status_str": "success", "completed": true,
                           "messages": [["execution_start", {"prompt_id": id}], ["execution_success", {"prompt_id": id}]]}
            })
        }
        Phase::Failed(reason) => json!({
            "prompt": [1, id, {}, {}, ["14"]],
            "outputs": {},
            "status": {"status_str": "error", "completed": false,
                       "messages": [["execution_start", {"prompt_id": id}],
                                    ["execution_error", {"prompt_id": id, "node_id": "12", "node_type": "KSampler",
                                                         "exception_type": "RuntimeError", "exception_message": reason, "traceback": []}]]}
        }),
    };
    let mut map = Map::new();
    map.insert(id, entry);
    Json(Value::Object(map)).into_response()
}

async fn view(State(sim): State<Shared>, Query(q): Query<HashMap<String, String>>) -> Response {
    let name = q.get("filename").cloned().unwrap_or_default();
    // parallax_{id}_{n:05}_.{ext}
    let parsed = name
        .strip_prefix("parallax_")
        .and_then(|rest| rest.rsplit_once('_'))
        .and_then(|(head, _)| head.rsplit_once('_'))
        .and_then(|(id, n)| Some((id.to_owned(), n.parse::<usize>().ok()?)));
    let Some((id, n)) = parsed else {
        return error(StatusCode::NOT_FOUND, "not found");
    };
    let Some(job) = sim.jobs.get(&id) else {
        return error(StatusCode::NOT_FOUND, "not found");
    };
    if sim.jobs.phase(&job) != Phase::Completed || job.spec.prompt.contains("[sim:output404]") {
        return error(StatusCode::NOT_FOUND, "not found");
    }
    match job.outputs().get(n) {
        Some(o) => (
            [(header::CONTENT_TYPE, o.format.content_type())],
            o.bytes.clone(),
        )
            .into_response(),
        None => error(StatusCode::NOT_FOUND, "not found"),
    }
}
