//! `GET /healthz`: liveness, and per model which providers are configured, in
//! failover order, by name only: never their keys, and never their hosts (a
//! self-hosted ComfyUI has no authentication of its own).

use serde_json::{Map, Value, json};
use worker::{Env, Response};

use crate::config::Config;
use crate::http;

pub fn get_health(env: &Env) -> Response {
    let cfg = Config::from_env(env);
    let mut models = Map::new();
    for (model, route) in &cfg.routes {
        let providers: Vec<Value> = route
            .iter()
            .map(|kind| {
                let provider = cfg.provider(*kind);
                json!({
                    "name": kind.name(),
                    "configured": provider.is_some_and(|p| p.is_ready()),
                })
            })
            .collect();
        models.insert(model.slug().to_owned(), Value::from(providers));
    }
    http::json(
        &json!({"ok": true, "version": env!("CARGO_PKG_VERSION"), "models": models}),
        200,
    )
}
