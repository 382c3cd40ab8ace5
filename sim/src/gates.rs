//! Gates: a test holds any provider call at a chosen step until it opens the gate, so
//! it can place a cancel, a delete, a second submit or a Worker kill exactly between
//! two steps of a job (the deterministic interleaving harness of issue 15).
//!
//! - `POST /debug/gates {"provider": "segmind", "step": "poll", "match": "<text>"}`
//!   closes a gate; `provider` and `match` are optional (any). `step` is one of
//!   `submit` (held after the provider accepted the job, before it answers: "between
//!   the provider's 200 and the edge's write"), `poll`, `result`, `download` (provider
//!   `cdn`; `match: "<prompt>#1"` holds only the second output), `cancel` (applied on
//!   arrival, only the answer is held), `upload` (ComfyUI's `/upload/image`, before
//!   the file is stored; matched by the file name and subfolder, which name the job
//!   id). A call matches when its job's prompt or id contains `match`. Answers
//!   `{"id": n}`.
//! - `GET /debug/gates/{id}/wait?ms=10000` answers once a call is parked there
//!   (`{"parked": n}`), or 408 after `ms`.
//! - `POST /debug/gates/{id}/open` lets every parked and later call through.
//!
//! Protocol modules call [`hold`] at each step; it returns at once when no gate is
//! closed for the call.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::watch;

use crate::jobs::Job;

#[derive(Debug)]
struct Gate {
    id: u64,
    provider: Option<String>,
    step: String,
    matcher: Option<String>,
    /// Calls parked here so far.
    parked: watch::Sender<u32>,
    open: watch::Sender<bool>,
}

#[derive(Debug, Default)]
pub struct Gates {
    gates: Mutex<Vec<Gate>>,
    next: Mutex<u64>,
}

impl Gates {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Gate>> {
        self.gates.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// [`hold`] for a call about `job`.
pub async fn hold_job(gates: &Gates, provider: &str, step: &str, job: &Job) {
    hold(gates, provider, step, &[&job.spec.prompt, &job.id]).await;
}

/// Parks the calling handler while a closed gate matches this call. `keys` are what
/// identifies the job (its prompt, its id).
pub async fn hold(gates: &Gates, provider: &str, step: &str, keys: &[&str]) {
    let waiting = {
        let gates = gates.lock();
        gates
            .iter()
            .filter(|g| !*g.open.borrow())
            .filter(|g| g.step == step)
            .filter(|g| g.provider.as_deref().is_none_or(|p| p == provider))
            .filter(|g| {
                g.matcher
                    .as_deref()
                    .is_none_or(|m| keys.iter().any(|k| k.contains(m)))
            })
            .map(|g| {
                g.parked.send_modify(|n| *n += 1);
                g.open.subscribe()
            })
            .collect::<Vec<_>>()
    };
    for mut open in waiting {
        let _ = open.wait_for(|o| *o).await;
    }
}

#[derive(Debug, Deserialize)]
pub struct NewGate {
    provider: Option<String>,
    step: String,
    #[serde(rename = "match")]
    matcher: Option<String>,
}

/// `POST /debug/gates`.
pub async fn create(State(gates): State<Arc<Gates>>, Json(new): Json<NewGate>) -> Response {
    let steps = ["submit", "poll", "result", "download", "cancel", "upload"];
    if !steps.contains(&new.step.as_str()) {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": format!("step must be one of {steps:?}")})),
        )
            .into_response();
    }
    let id = {
        let mut n = gates.next.lock().unwrap_or_else(|e| e.into_inner());
        *n += 1;
        *n
    };
    gates.lock().push(Gate {
        id,
        provider: new.provider,
        step: new.step,
        matcher: new.matcher,
        parked: watch::Sender::new(0),
        open: watch::Sender::new(false),
    });
    Json(json!({"id": id})).into_response()
}

#[derive(Debug, Deserialize)]
pub struct WaitQuery {
    ms: Option<u64>,
}

/// `GET /debug/gates/{id}/wait?ms=`.
pub async fn wait(
    State(gates): State<Arc<Gates>>,
    Path(id): Path<u64>,
    Query(q): Query<WaitQuery>,
) -> Response {
    let parked = gates
        .lock()
        .iter()
        .find(|g| g.id == id)
        .map(|g| g.parked.subscribe());
    let Some(mut parked) = parked else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error": "no such gate"})),
        )
            .into_response();
    };
    let limit = Duration::from_millis(q.ms.unwrap_or(10_000).min(120_000));
    match tokio::time::timeout(limit, parked.wait_for(|n| *n > 0)).await {
        Ok(Ok(n)) => Json(json!({"parked": *n})).into_response(),
        _ => (
            StatusCode::REQUEST_TIMEOUT,
            Json(json!({"error": "nothing parked at the gate yet"})),
        )
            .into_response(),
    }
}

/// `POST /debug/gates/{id}/open`.
pub async fn open(State(gates): State<Arc<Gates>>, Path(id): Path<u64>) -> Response {
    let gates = gates.lock();
    match gates.iter().find(|g| g.id == id) {
        Some(g) => {
            g.open.send_replace(true);
            Json(json!({"id": id, "parked": *g.parked.borrow()})).into_response()
        }
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({"error": "no such gate"})),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_matching_call_parks_until_the_gate_opens_and_others_pass() {
        let gates = Arc::new(Gates::default());
        let made = create(
            State(gates.clone()),
            Json(NewGate {
                provider: Some("segmind".into()),
                step: "poll".into(),
                matcher: Some("cat".into()),
            }),
        )
        .await;
        assert_eq!(made.status(), StatusCode::OK);
        // Other providers, steps and jobs are not held.
        hold(&gates, "replicate", "poll", &["a cat"]).await;
        hold(&gates, "segmind", "submit", &["a cat"]).await;
        hold(&gates, "segmind", "poll", &["a dog"]).await;

        let held = tokio::spawn({
            let gates = gates.clone();
            async move { hold(&gates, "segmind", "poll", &["a cat"]).await }
        });
        let parked = wait(
            State(gates.clone()),
            Path(1),
            Query(WaitQuery { ms: Some(5_000) }),
        )
        .await;
        assert_eq!(parked.status(), StatusCode::OK);
        assert!(!held.is_finished(), "still parked before the gate opens");
        assert_eq!(
            open(State(gates.clone()), Path(1)).await.status(),
            StatusCode::OK
        );
        held.await.unwrap();
        // Open for good: later calls pass.
        hold(&gates, "segmind", "poll", &["a cat"]).await;
        assert_eq!(
            open(State(gates), Path(9)).await.status(),
            StatusCode::NOT_FOUND
        );
    }
}
