//! Small response helpers shared by the handlers.

use serde::Serialize;
use worker::{Headers, Request, Response};

/// A JSON response with `status`. Serialising our own wire types cannot fail; if it
/// ever did, the client still gets a well-formed 500 body.
pub fn json<T: Serialize>(value: &T, status: u16) -> Response {
    let body = serde_json::to_vec(value).unwrap_or_else(|_| {
        br#"{"error":"Internal error; please retry","code":"internal"}"#.to_vec()
    });
    let headers = Headers::new();
    let _ = headers.set("content-type", "application/json; charset=utf-8");
    let _ = headers.set("cache-control", "no-store");
    let _ = headers.set("x-content-type-options", "nosniff");
    Response::builder()
        .with_status(status)
        .with_headers(headers)
        .fixed(body)
}

/// This deployment's public origin (`scheme://host[:port]`), for absolute URLs:
/// `PUBLIC_BASE_URL` when set, else the request's own origin.
pub fn origin(req: &Request, configured: Option<&str>) -> String {
    if let Some(base) = configured.filter(|b| !b.is_empty()) {
        return base.trim_end_matches('/').to_owned();
    }
    match req.url() {
        Ok(url) => url.origin().ascii_serialization(),
        Err(_) => String::new(),
    }
}

/// A request to a Durable Object's internal routes (`path`, with `body` as JSON: a
/// POST). Durable Objects are reached by stub only, so the host is a placeholder.
pub fn internal_request<T: Serialize>(path: &str, body: Option<&T>) -> worker::Result<Request> {
    let mut init = worker::RequestInit::new();
    if let Some(body) = body {
        let text =
            serde_json::to_string(body).map_err(|e| worker::Error::RustError(e.to_string()))?;
        init.with_method(worker::Method::Post)
            .with_body(Some(text.into()));
    }
    Request::new_with_init(&format!("https://runner{path}"), &init)
}
