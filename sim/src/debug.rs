//! What tests and benchmarks read of the sim (never deployed): `GET /debug/submissions`,
//! `/debug/requests`, `/debug/jobs` and `/debug/controls`, and the middleware that
//! counts every request naming a job.

use axum::Json;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use crate::jobs::Phase;
use crate::state::Shared;

/// `GET /debug/controls`: per prompt, how each submit's control image arrived
/// (`via` inline or url, the URL, the fetch's status, the bytes).
pub async fn controls(State(sim): State<Shared>) -> Response {
    Json(json!(sim.controls())).into_response()
}

/// `GET /debug/submissions`: accepted submissions per prompt (tests only; the sim
/// is never deployed).
pub async fn submissions(State(sim): State<Shared>) -> Response {
    Json(json!(sim.submissions())).into_response()
}

/// Middleware: counts every request that names a job (see [`crate::state::Sim::count_request`]).
pub async fn count_requests(
    State(sim): State<Shared>,
    req: Request,
    next: axum::middleware::Next,
) -> Response {
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or_default().to_owned();
    let resp = next.run(req).await;
    sim.count_request(&path, &query);
    resp
}

/// `GET /debug/jobs`: every live job with its prompt, phase, whether it was canceled
/// (the audit checks no job still runs for a finished Parallax job) and
/// `finished_ms`, when it finished (Unix ms; null while it runs, or if canceled).
pub async fn jobs(State(sim): State<Shared>) -> Response {
    let (all, _) = sim.jobs.partition(|_| Some(true));
    let out: Vec<Value> = all
        .iter()
        .filter_map(|id| sim.jobs.get(id))
        .map(|job| {
            let phase = match sim.jobs.phase(&job) {
                Phase::Queued => "queued".to_owned(),
                Phase::Processing => "processing".to_owned(),
                Phase::Completed => "completed".to_owned(),
                Phase::Failed(_) => "failed".to_owned(),
            };
            let canceled = job.canceled.load(std::sync::atomic::Ordering::Relaxed);
            // When the job's GPU work ended (Unix ms), once it has.
            let finished_ms = (matches!(phase.as_str(), "completed" | "failed") && !canceled)
                .then(|| job.finished_unix_ms());
            json!({"id": job.id, "prompt": job.spec.prompt, "phase": phase,
                   "canceled": canceled, "finished_ms": finished_ms})
        })
        .collect();
    Json(Value::from(out)).into_response()
}

/// `GET /debug/requests`: per prompt, upstream requests the sim served for it
/// (`submits`, `polls`, `downloads`), so tests and benchmarks can count the edge's
/// polling cost.
pub async fn requests(State(sim): State<Shared>) -> Response {
    let submits = sim.submissions();
    let polls = sim.requests();
    let out: Map<String, Value> = submits
        .iter()
        .map(|(prompt, n)| {
            let (p, d) = polls.get(prompt).copied().unwrap_or((0, 0));
            (
                prompt.clone(),
                json!({"submits": n, "polls": p, "downloads": d}),
            )
        })
        .collect();
    Json(Value::Object(out)).into_response()
}
