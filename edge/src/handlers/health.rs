//! `GET /healthz`: liveness, and which providers are configured (never their keys).

use serde_json::json;
use worker::{Env, Response};

use crate::config::Config;
use crate::http;

pub fn get_health(env: &Env) -> Response {
    let cfg = Config::from_env(env);
    let host = worker::Url::parse(&cfg.segmind.base_url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned));
    http::json(
        &json!({
            "ok": true,
            "version": env!("CARGO_PKG_VERSION"),
            "providers": {
                "segmind": {"configured": cfg.segmind.api_key.is_some(), "host": host}
            }
        }),
        200,
    )
}
