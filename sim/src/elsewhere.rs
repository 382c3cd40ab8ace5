//! Another origin on loopback (a second listener on a port of its own), where the
//! `[sim:redirect]` fault sends a provider's poll (`302 Location: <elsewhere>/…`). It
//! records every request that reaches it and whether that request carried a
//! provider's credential header (names only, never values), so a test can check that
//! no key follows a redirect off the provider's host. `GET /debug/elsewhere` on the
//! main listener lists the record.

use std::sync::{Arc, Mutex, OnceLock};

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde_json::{Value, json};

/// The headers that carry a provider's key: Segmind's and a Parallax upstream's
/// `x-api-key`, BFL's `x-key`, Replicate's and fal's `authorization`.
const CREDENTIALS: [&str; 3] = ["x-api-key", "x-key", "authorization"];

/// The second listener's address and what reached it.
#[derive(Debug, Default)]
pub struct Elsewhere {
    base: OnceLock<String>,
    log: Mutex<Vec<Value>>,
}

impl Elsewhere {
    /// Its base URL (`http://127.0.0.1:<port>`), once it listens.
    pub fn base(&self) -> Option<&str> {
        self.base.get().map(String::as_str)
    }
}

/// Binds the second listener on an ephemeral loopback port and serves it.
pub async fn start(elsewhere: Arc<Elsewhere>) -> Result<(), String> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .map_err(|e| format!("cannot listen elsewhere: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let _ = elsewhere.base.set(format!("http://{addr}"));
    let app = Router::new().fallback(catch).with_state(elsewhere);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            eprintln!("parallax-sim elsewhere: {e}");
        }
    });
    Ok(())
}

/// Any request elsewhere: recorded, and answered as a job still running.
async fn catch(State(elsewhere): State<Arc<Elsewhere>>, req: Request) -> Response {
    let keyed: Vec<&str> = CREDENTIALS
        .into_iter()
        .filter(|h| req.headers().contains_key(*h))
        .collect();
    elsewhere
        .log
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(json!({"method": req.method().as_str(), "path": req.uri().path(), "credentials": keyed}));
    Json(json!({"status": "PROCESSING"})).into_response()
}

/// `GET /debug/elsewhere`: every request that reached the other origin.
pub async fn log(State(elsewhere): State<Arc<Elsewhere>>) -> Response {
    let log = elsewhere
        .log
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    Json(Value::from(log)).into_response()
}
