//! Callbacks: a job submitted with a webhook gets it POSTed when it finishes, the way
//! its provider documents it, from a background task (the job's life is otherwise a
//! function of time, see `jobs`).
//!
//! - Replicate: the prediction object (as `GET` answers it), signed as Standard
//!   Webhooks with the account secret [`REPLICATE_SECRET`] (served, as Replicate does,
//!   at `GET /replicate/v1/webhooks/default/secret`): `webhook-id` (the same on a
//!   retry), `webhook-timestamp`, `webhook-signature: v1,<base64>`, signed by the
//!   `standardwebhooks` crate of the Standard Webhooks authors
//!   (https://replicate.com/docs/topics/webhooks/verify-webhook).
//! - fal: `{request_id, gateway_request_id, status: OK|ERROR, payload, error?}` with
//!   `X-Fal-Webhook-Request-Id`, `-User-Id`, `-Timestamp` and `-Signature` (hex
//!   ED25519 of `{request id}\n{user id}\n{timestamp}\n{hex SHA-256 of the body}`); the
//!   public key is served as a JWKS at `GET /fal/.well-known/jwks.json` (fal's is at
//!   `rest.alpha.fal.ai`; https://docs.fal.ai/model-endpoints/webhooks).
//! - BFL: the finished task (as `get_result` answers it), with the submit's
//!   `webhook_secret` echoed in `X-Webhook-Secret` (black-forest-labs/blackforest
//!   `src/bfl/_webhooks.py`).
//!
//! The provider's module builds each body (when the delivery is made, as the job then
//! stands) and hands the builder to [`schedule`]; this module signs and sends it.
//!
//! The prompt picks how: `[sim:hook=dup]` delivers twice (the very same delivery, as a
//! provider's retry after a lost answer), `[sim:hook=late]` delivers, then once more
//! three seconds later (a fresh delivery, after the job is done), `[sim:hook=none]`
//! never delivers; anything else delivers once. A delivery whose POST fails (no
//! connection, or any answer but a 2xx: "respond with a 2xx within a few seconds or
//! the delivery may be retried", https://replicate.com/docs/topics/webhooks/receive-webhook;
//! Standard Webhooks and fal retry failed deliveries likewise) is retried a few times,
//! the same delivery each time. Every
//! delivery is listed at `GET /debug/hooks` (prompt, provider, URL, headers, body, the
//! last status answered).

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use ed25519_dalek::{Signer, SigningKey};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::jobs::Job;

/// The sim account's Replicate webhook secret.
pub const REPLICATE_SECRET: &str = "whsec_cGFyYWxsYXgtc2ltLXJlcGxpY2F0ZS1zZWNyZXQ=";
/// fal's `X-Fal-Webhook-User-Id` for the sim account.
const FAL_USER: &str = "sim-user";
/// How long after the first a `late` delivery comes.
const LATE: Duration = Duration::from_secs(3);

/// The sim's fal signing key (fixed, so the JWKS is the same across restarts).
fn fal_key() -> SigningKey {
    SigningKey::from_bytes(&[0x5a; 32])
}

/// Where a job's callback goes, per protocol.
#[derive(Debug, Clone)]
pub enum Target {
    Replicate { url: String },
    Fal { url: String },
    Bfl { url: String, secret: Option<String> },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Once,
    Duplicate,
    Late,
    Never,
}

fn mode(prompt: &str) -> Mode {
    if prompt.contains("[sim:hook=dup]") {
        Mode::Duplicate
    } else if prompt.contains("[sim:hook=late]") {
        Mode::Late
    } else if prompt.contains("[sim:hook=none]") {
        Mode::Never
    } else {
        Mode::Once
    }
}

/// What delivers callbacks, and the deliveries made so far.
#[derive(Debug)]
pub struct Hooks {
    http: reqwest::Client,
    log: Mutex<Vec<Value>>,
}

impl Hooks {
    /// Deliveries go out through `http`.
    pub fn new(http: reqwest::Client) -> Self {
        Self {
            http,
            log: Mutex::new(Vec::new()),
        }
    }

    fn log(&self) -> std::sync::MutexGuard<'_, Vec<Value>> {
        self.log.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// `GET /debug/hooks`.
pub async fn log(State(hooks): State<Arc<Hooks>>) -> Response {
    let all = hooks.log().clone();
    Json(Value::from(all)).into_response()
}

/// `GET /fal/.well-known/jwks.json`: the sim's fal key as fal publishes its own.
pub async fn fal_jwks() -> Response {
    let x = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(fal_key().verifying_key().as_bytes());
    Json(json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": x, "kid": "sim", "use": "sig", "alg": "EdDSA"}]}))
        .into_response()
}

/// `GET /replicate/v1/webhooks/default/secret`: the account's signing secret.
pub async fn replicate_secret() -> Response {
    Json(json!({"key": REPLICATE_SECRET})).into_response()
}

fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// One delivery: headers and body, signed now.
struct Delivery {
    url: String,
    headers: Vec<(String, String)>,
    body: String,
}

/// The `n`th delivery of `body` (the job as its provider shows it) to `target`.
fn build(job: &Job, target: &Target, n: u32, body: &Value) -> Delivery {
    let ts = unix_secs();
    let body = body.to_string();
    match target {
        Target::Replicate { url } => {
            let id = format!("msg_{}_{n}", job.id.replace('-', ""));
            let signature = standardwebhooks::Webhook::new(REPLICATE_SECRET)
                .and_then(|w| w.sign(&id, i64::try_from(ts).unwrap_or(0), body.as_bytes()))
                .unwrap_or_default();
            Delivery {
                url: url.clone(),
                headers: vec![
                    ("webhook-id".into(), id),
                    ("webhook-timestamp".into(), ts.to_string()),
                    ("webhook-signature".into(), signature),
                ],
                body,
            }
        }
        Target::Fal { url } => {
            let digest: String = hex::encode(Sha256::digest(body.as_bytes()));
            let message = format!("{}\n{FAL_USER}\n{ts}\n{digest}", job.id);
            let signature = hex::encode(fal_key().sign(message.as_bytes()).to_bytes());
            Delivery {
                url: url.clone(),
                headers: vec![
                    ("x-fal-webhook-request-id".into(), job.id.clone()),
                    ("x-fal-webhook-user-id".into(), FAL_USER.into()),
                    ("x-fal-webhook-timestamp".into(), ts.to_string()),
                    ("x-fal-webhook-signature".into(), signature),
                ],
                body,
            }
        }
        Target::Bfl { url, secret } => Delivery {
            url: url.clone(),
            headers: secret
                .iter()
                .map(|s| ("x-webhook-secret".to_owned(), s.clone()))
                .collect(),
            body,
        },
    }
}

fn provider(target: &Target) -> &'static str {
    match target {
        Target::Replicate { .. } => "replicate",
        Target::Fal { .. } => "fal",
        Target::Bfl { .. } => "bfl",
    }
}

/// Attempts per delivery: a connection failure or an answer other than 2xx is retried with the same
/// delivery (same id, timestamp and signature), as the providers retry theirs (fal:
/// 10 times over 2 hours; Replicate and Standard Webhooks: with backoff), shortened.
const ATTEMPTS: u32 = 4;

async fn send(hooks: &Hooks, job: &Job, target: &Target, d: &Delivery) {
    let mut status = Value::Null;
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(250 << attempt)).await;
        }
        let mut req = hooks
            .http
            .post(&d.url)
            .header("content-type", "application/json")
            .body(d.body.clone());
        for (k, v) in &d.headers {
            req = req.header(k, v);
        }
        let (answered, retry) = match req.send().await {
            Ok(resp) => (json!(resp.status().as_u16()), !resp.status().is_success()),
            Err(e) => (json!(e.without_url().to_string()), true),
        };
        status = answered;
        if !retry {
            break;
        }
    }
    let headers: serde_json::Map<String, Value> = d
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    hooks.log().push(json!({
        "prompt": job.spec.prompt, "job": job.id, "provider": provider(target),
        "url": d.url, "headers": headers, "body": d.body, "status": status,
        "at_ms": crate::jobs::unix_ms(),
    }));
}

/// Delivers `job`'s callback to `target` when the job finishes, as its prompt asks;
/// `body` gives the job as its provider shows it at the time of each delivery.
pub fn schedule(
    hooks: &Arc<Hooks>,
    job: Arc<Job>,
    target: Target,
    body: impl Fn(&Job) -> Value + Send + 'static,
) {
    let hooks = hooks.clone();
    tokio::spawn(async move {
        let mode = mode(&job.spec.prompt);
        if mode == Mode::Never {
            return;
        }
        let done = job.queue + job.process;
        tokio::time::sleep(done.saturating_sub(job.submitted.elapsed())).await;
        let first = build(&job, &target, 1, &body(&job));
        send(&hooks, &job, &target, &first).await;
        match mode {
            Mode::Duplicate => send(&hooks, &job, &target, &first).await,
            Mode::Late => {
                tokio::time::sleep(LATE).await;
                let again = build(&job, &target, 2, &body(&job));
                send(&hooks, &job, &target, &again).await;
            }
            Mode::Once | Mode::Never => {}
        }
    });
}
