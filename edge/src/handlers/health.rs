//! `GET /healthz`: liveness, and per model which providers are configured, in
//! failover order (never their keys).

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
            let host = provider
                .and_then(|p| worker::Url::parse(&p.base_url).ok())
                .and_then(|u| u.host_str().map(str::to_owned));
            providers.push(json!({
                "name": kind.name(),
                "configured": provider.is_some_and(|p| p.is_ready()),
                "host": host,
                // The circuit breaker: closed, open, half_open (or unknown).
                "health": crate::breaker::health(env, kind.name()).await,
            }));
        }
        models.insert(model.slug().to_owned(), Value::from(providers));
    }
    http::json(
        &json!({"ok": true, "version": env!("CARGO_PKG_VERSION"), "models": models}),
        200,
    )
}
