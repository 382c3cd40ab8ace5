//! `GET /openapi.json`: the OpenAPI 3.1 document, generated from the `api` catalog.

use worker::{Env, Request, Response};

use crate::config::Config;
use crate::http;

pub fn get_openapi(req: &Request, env: &Env) -> Response {
    let origin = http::origin(req, Config::from_env(env).public_base_url.as_deref());
    let mut resp = http::json(&parallax_api::openapi::document(&origin), 200);
    let _ = resp
        .headers_mut()
        .set("cache-control", "public, max-age=300");
    resp
}
