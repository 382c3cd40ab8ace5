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
