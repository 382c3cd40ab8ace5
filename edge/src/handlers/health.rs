//! `GET /healthz`: liveness, and per model which providers are configured, in
//! failover order, by name only: never their keys, and never their hosts (a
//! self-hosted ComfyUI has no authentication of its own).

use serde_json::{Map, Value, json};
use worker::{Env, Response};

use crate::config::Config;
use crate::http;

pub async fn get_health(env: &Env) -> Response {
    let cfg = Config::from_env(env);
    let mut models = Map::new();
    for (model, route) in &cfg.routes {
        let mut providers: Vec<Value> = Vec::new();
        for kind in route {
            let provider = cfg.provider(*kind);
            // No host: a self-hosted GPU box must not be advertised.
            providers.push(json!({
                "name": kind.name(),
                "configured": provider.is_some_and(|p| p.is_ready()),
                // The circuit breaker: closed, open, half_open (or unknown).
                "health": crate::objects::breaker::health(env, kind.name()).await,
            }));
        }
        models.insert(model.slug().to_owned(), Value::from(providers));
    }
    http::json(
        &json!({"ok": true, "version": env!("CARGO_PKG_VERSION"), "models": models}),
        200,
    )
}
