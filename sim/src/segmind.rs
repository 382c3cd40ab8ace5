//! Segmind's v2 queue protocol, as documented: `POST /v2/{model}` answers
//! `{request_id, status: QUEUED, poll_url, status_url, response_url}`;
//! `GET /v2/requests/{id}/status` answers the status (FAILED as HTTP 422 with `error`);
//! `GET /v2/requests/{id}` answers the result with `output`; unknown or expired ids
//! answer 404 `{"error": "Request <id> not found"}`. Requests need `x-api-key`.
//!
//! Fault injection, by prompt: `[sim:fail]` (or an `x-sim-fail: <reason>` header on
//! submit) ends the job FAILED like a content block; `[sim:reject]` refuses the submit
//! with HTTP 400; `[sim:slow]` makes processing ten times longer.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, Multipart, Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use serde_json::{Map, Value, json};

use crate::jobs::{Job, Jobs, Phase};
use crate::render::{self, Format, RenderSpec};

pub fn router(jobs: Arc<Jobs>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/v2/{model}", post(submit))
        .route("/v2/requests/{id}/status", get(status))
        .route("/v2/requests/{id}", get(result))
        .route("/outputs/{id}/{file}", get(output))
        .with_state(jobs)
        // Generous: base64 control images of a few MB.
        .layer(axum::extract::DefaultBodyLimit::max(40 * 1024 * 1024))
}

fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(json!({ "error": msg.into() }))).into_response()
}

fn authorized(headers: &HeaderMap) -> bool {
    headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| !v.trim().is_empty())
}

/// The submit body as a flat field map; a multipart file part is base64-encoded into it.
async fn read_fields(req: Request) -> Result<Map<String, Value>, Response> {
    let is_multipart = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"));
    if is_multipart {
        let mut mp = Multipart::from_request(req, &())
            .await
            .map_err(|e| error(StatusCode::BAD_REQUEST, e.body_text()))?;
        let mut fields = Map::new();
        while let Some(field) = mp
            .next_field()
            .await
            .map_err(|e| error(StatusCode::BAD_REQUEST, e.body_text()))?
        {
            let name = field.name().unwrap_or_default().to_owned();
            let is_file = field.file_name().is_some();
            let data = field
                .bytes()
                .await
                .map_err(|e| error(StatusCode::BAD_REQUEST, e.body_text()))?;
            let value = if is_file {
                base64::engine::general_purpose::STANDARD.encode(&data)
            } else {
                String::from_utf8_lossy(&data).into_owned()
            };
            fields.insert(name, Value::String(value));
        }
        Ok(fields)
    } else {
        let body = Bytes::from_request(req, &())
            .await
            .map_err(|e| error(StatusCode::BAD_REQUEST, e.body_text()))?;
        match serde_json::from_slice::<Value>(&body) {
            Ok(Value::Object(map)) => Ok(map),
            _ => Err(error(StatusCode::BAD_REQUEST, "Body must be a JSON object")),
        }
    }
}

fn num(fields: &Map<String, Value>, name: &str) -> Option<f64> {
    match fields.get(name)? {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn text(fields: &Map<String, Value>, name: &str) -> Option<String> {
    match fields.get(name)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Decodes `control_image` (raw base64 or a data URL). URLs cannot be fetched here:
/// the sim has no network, and the edge always sends the bytes.
fn decode_control(value: Option<String>) -> Result<Vec<u8>, String> {
    let value = value.ok_or("control_image is required")?;
    let data = match value.split_once(";base64,") {
        Some((head, data)) if head.starts_with("data:") => data.to_owned(),
        _ if value.contains("://") => {
            return Err("Failed to fetch control_image from URL (sim has no network)".into());
        }
        _ => value,
    };
    let data: String = data.split_ascii_whitespace().collect();
    base64::engine::general_purpose::STANDARD
        .decode(data.as_bytes())
        .map_err(|_| "control_image is not valid base64".to_string())
}

async fn submit(
    State(jobs): State<Arc<Jobs>>,
    Path(model): Path<String>,
    req: Request,
) -> Response {
    if !authorized(req.headers()) {
        return error(
            StatusCode::UNAUTHORIZED,
            "Missing Authorization or x-api-key in header",
        );
    }
    let dev = match model.as_str() {
        "flux-depth-pro" => false,
        "flux-depth-dev" => true,
        _ => return error(StatusCode::NOT_FOUND, format!("Model {model} not found")),
    };
    let injected = req
        .headers()
        .get("x-sim-fail")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let fields = match read_fields(req).await {
        Ok(f) => f,
        Err(resp) => return resp,
    };
    let prompt = text(&fields, "prompt").unwrap_or_default();
    if prompt.trim().is_empty() {
        return error(StatusCode::BAD_REQUEST, "prompt is required");
    }
    if prompt.contains("[sim:reject]") {
        return error(
            StatusCode::BAD_REQUEST,
            "Invalid request: rejected by the provider (sim)",
        );
    }
    let slow = prompt.contains("[sim:slow]");
    let format = text(&fields, "output_format")
        .and_then(|f| Format::parse(&f))
        .unwrap_or(if dev { Format::Webp } else { Format::Jpg });
    let megapixels = if dev {
        match text(&fields, "megapixels").as_deref() {
            Some("match_input") => None,
            Some("0.25") => Some(0.25),
            _ => Some(1.0),
        }
    } else {
        Some(1.0)
    };
    let count = if dev {
        num(&fields, "num_outputs").unwrap_or(1.0).clamp(1.0, 4.0) as usize
    } else {
        1
    };
    let seed = num(&fields, "seed").map_or(96522, |s| s as u64);
    let quality = num(&fields, "output_quality")
        .unwrap_or(90.0)
        .clamp(1.0, 100.0) as u8;

    // Like Segmind, a body that is well-formed but unusable is accepted and fails later.
    let mut failure = injected;
    let (control, control_hash) = match decode_control(text(&fields, "control_image")) {
        Ok(bytes) => match image::load_from_memory(&bytes) {
            Ok(img) => (Some(img), render::fnv1a(&[&bytes])),
            Err(e) => {
                failure.get_or_insert(format!("control_image could not be decoded: {e}"));
                (None, 0)
            }
        },
        Err(e) => {
            failure.get_or_insert(e);
            (None, 0)
        }
    };
    if prompt.contains("[sim:fail]") {
        failure.get_or_insert(
            "Content moderated: the prompt was flagged by the safety filter".to_string(),
        );
    }
    let spec = RenderSpec {
        prompt,
        seed,
        count,
        format,
        quality,
        megapixels,
        control,
        control_hash,
    };
    let job = jobs.insert(failure, spec, slow);
    let id = &job.id;
    let base = &jobs.base;
    Json(json!({
        "request_id": id,
        "status": "QUEUED",
        "poll_url": format!("{base}/v1/requests/{id}"),
        "status_url": format!("{base}/v2/requests/{id}/status"),
        "response_url": format!("{base}/v2/requests/{id}"),
    }))
    .into_response()
}

fn not_found(id: &str) -> Response {
    error(StatusCode::NOT_FOUND, format!("Request {id} not found"))
}

fn metrics(jobs: &Jobs) -> Value {
    let q = jobs.timing.queue.as_secs_f64();
    let p = jobs.timing.process.as_secs_f64();
    json!({"queue_time": q, "inference_time": p, "total_time": q + p})
}

/// The job a status or result request names, or the error answer (401, 404).
fn find_job(jobs: &Jobs, headers: &HeaderMap, id: &str) -> Result<Arc<Job>, Response> {
    if !authorized(headers) {
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "Missing Authorization or x-api-key in header",
        ));
    }
    jobs.get(id).ok_or_else(|| not_found(id))
}

async fn status(
    State(jobs): State<Arc<Jobs>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let job = match find_job(&jobs, &headers, &id) {
        Ok(job) => job,
        Err(resp) => return resp,
    };
    match jobs.phase(&job) {
        Phase::Queued => {
            Json(json!({"status": "QUEUED", "request_id": id, "metrics": {}})).into_response()
        }
        Phase::Processing => {
            Json(json!({"status": "PROCESSING", "request_id": id, "metrics": {}})).into_response()
        }
        Phase::Completed => {
            Json(json!({"status": "COMPLETED", "request_id": id, "metrics": metrics(&jobs)}))
                .into_response()
        }
        Phase::Failed(reason) => failed(&jobs, &id, &reason),
    }
}

fn failed(jobs: &Jobs, id: &str, reason: &str) -> Response {
    (
        StatusCode::UNPROCESSABLE_ENTITY,
        Json(json!({"status": "FAILED", "error": reason, "request_id": id, "metrics": metrics(jobs)})),
    )
        .into_response()
}

async fn result(
    State(jobs): State<Arc<Jobs>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let job = match find_job(&jobs, &headers, &id) {
        Ok(job) => job,
        Err(resp) => return resp,
    };
    match jobs.phase(&job) {
        Phase::Queued | Phase::Processing => {
            let status = if jobs.phase(&job) == Phase::Queued {
                "QUEUED"
            } else {
                "PROCESSING"
            };
            Json(json!({"status": status, "request_id": id, "error": null, "output": null, "metrics": {}}))
                .into_response()
        }
        Phase::Failed(reason) => failed(&jobs, &id, &reason),
        Phase::Completed => {
            let outputs = job.outputs();
            let urls: Vec<String> = outputs
                .iter()
                .enumerate()
                .map(|(n, o)| format!("{}/outputs/{id}/{n}.{}", jobs.base, o.format.ext()))
                .collect();
            // One image is a plain URL string (as in Segmind's docs); several are a list.
            let output = match urls.as_slice() {
                [one] => Value::from(one.clone()),
                _ => Value::from(urls),
            };
            Json(
                json!({"status": "COMPLETED", "request_id": id, "error": null,
                        "output": output, "metrics": metrics(&jobs)}),
            )
            .into_response()
        }
    }
}

async fn output(
    State(jobs): State<Arc<Jobs>>,
    Path((id, file)): Path<(String, String)>,
) -> Response {
    let Some(job) = jobs.get(&id) else {
        return not_found(&id);
    };
    if jobs.phase(&job) != Phase::Completed {
        return not_found(&id);
    }
    let outputs = job.outputs();
    let found = file
        .split_once('.')
        .and_then(|(n, ext)| Some((n.parse::<usize>().ok()?, ext)))
        .and_then(|(n, ext)| outputs.get(n).filter(|o| o.format.ext() == ext));
    match found {
        Some(o) => (
            [(header::CONTENT_TYPE, o.format.content_type())],
            o.bytes.clone(),
        )
            .into_response(),
        None => error(StatusCode::NOT_FOUND, "No such output"),
    }
}
