//! Upstream adapters. Each is pure request building and response parsing (tested on
//! fixtures shaped like the provider's documented examples) plus this module's thin
//! [`send`]. Status and errors are normalised into [`UpstreamState`] and
//! [`UpstreamError`] so the job runner is provider-agnostic.

pub mod segmind;

use serde::{Deserialize, Serialize};
use worker::{Fetch, Headers, Method, Request, RequestInit};

/// An HTTP request to an upstream, built by a pure function.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamRequest {
    pub method: HttpMethod,
    pub url: String,
    /// Header values may hold secrets: never log this struct's headers.
    pub headers: Vec<(&'static str, String)>,
    pub body: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpMethod {
    Get,
    Post,
}

/// What an upstream answered, as the pure parsers see it.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamResponse {
    pub status: u16,
    /// Seconds, from a `Retry-After` header.
    pub retry_after: Option<u64>,
    pub body: Vec<u8>,
}

/// The upstream's handle on a submitted job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Submitted {
    pub upstream_id: String,
    pub status_url: String,
    pub result_url: String,
}

/// A job's state at the upstream.
#[derive(Debug, Clone, PartialEq)]
pub enum UpstreamState {
    Queued,
    Processing,
    /// Output URLs, to download at once (they expire).
    Completed(Vec<String>),
    Failed(String),
}

/// Why an upstream call did not give an answer.
#[derive(Debug, Clone, PartialEq)]
pub enum UpstreamError {
    /// Worth retrying later (429, 5xx, connection failure, timeout).
    Transient {
        reason: String,
        retry_after: Option<u64>,
    },
    /// Retrying cannot help (the upstream refused the job, or it is gone).
    Permanent(String),
}

impl UpstreamError {
    /// The usual classification of a non-success HTTP status.
    pub fn from_status(
        provider: &str,
        status: u16,
        retry_after: Option<u64>,
        detail: &str,
    ) -> Self {
        let detail = if detail.is_empty() {
            String::new()
        } else {
            format!(": {detail}")
        };
        let reason = format!("{provider} answered HTTP {status}{detail}");
        if status == 429 || status == 408 || status >= 500 {
            Self::Transient {
                reason,
                retry_after,
            }
        } else {
            Self::Permanent(reason)
        }
    }
}

/// `Retry-After` in seconds (the HTTP-date form is treated as absent).
pub fn parse_retry_after(value: Option<&str>) -> Option<u64> {
    value?.trim().parse::<u64>().ok().map(|s| s.min(3600))
}

/// The `error` or `detail` text of an upstream's JSON error body, shortened.
pub fn error_detail(body: &[u8]) -> String {
    let text = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            ["error", "detail", "message"]
                .iter()
                .find_map(|k| v.get(*k).and_then(|e| e.as_str()).map(str::to_owned))
        })
        .unwrap_or_default();
    text.chars().take(300).collect()
}

/// Sends a request with a timeout. Connection failures and timeouts are transient.
pub async fn send(
    provider: &str,
    req: &UpstreamRequest,
    timeout_ms: u32,
) -> Result<UpstreamResponse, UpstreamError> {
    let transient = |what: &str| UpstreamError::Transient {
        reason: format!("{provider} {what}"),
        retry_after: None,
    };
    let headers = Headers::new();
    for (name, value) in &req.headers {
        headers
            .set(name, value)
            .map_err(|_| UpstreamError::Permanent(format!("{provider}: invalid header {name}")))?;
    }
    let mut init = RequestInit::new();
    init.with_method(match req.method {
        HttpMethod::Get => Method::Get,
        HttpMethod::Post => Method::Post,
    })
    .with_headers(headers);
    if let Some(body) = &req.body {
        init.with_body(Some(body.clone().into()));
    }
    let request = Request::new_with_init(&req.url, &init)
        .map_err(|_| UpstreamError::Permanent(format!("{provider}: invalid URL")))?;
    let signal =
        worker::AbortSignal::from(worker::web_sys::AbortSignal::timeout_with_u32(timeout_ms));
    let mut resp = Fetch::Request(request)
        .send_with_signal(&signal)
        .await
        .map_err(|_| transient("could not be reached (connection failed or timed out)"))?;
    let retry_after =
        parse_retry_after(resp.headers().get("retry-after").ok().flatten().as_deref());
    let body = resp
        .bytes()
        .await
        .map_err(|_| transient("response was interrupted"))?;
    Ok(UpstreamResponse {
        status: resp.status_code(),
        retry_after,
        body,
    })
}

/// Downloads one output file.
pub async fn download(url: &str, timeout_ms: u32) -> Result<Vec<u8>, UpstreamError> {
    let req = UpstreamRequest {
        method: HttpMethod::Get,
        url: url.to_owned(),
        headers: Vec::new(),
        body: None,
    };
    let resp = send("output download", &req, timeout_ms).await?;
    if resp.status == 200 {
        Ok(resp.body)
    } else {
        Err(UpstreamError::from_status(
            "output download",
            resp.status,
            resp.retry_after,
            "",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_classified_for_retry() {
        assert!(matches!(
            UpstreamError::from_status("x", 429, Some(3), ""),
            UpstreamError::Transient {
                retry_after: Some(3),
                ..
            }
        ));
        assert!(matches!(
            UpstreamError::from_status("x", 503, None, ""),
            UpstreamError::Transient { .. }
        ));
        assert_eq!(
            UpstreamError::from_status("segmind", 401, None, "bad key"),
            UpstreamError::Permanent("segmind answered HTTP 401: bad key".into())
        );
    }

    #[test]
    fn retry_after_is_seconds_and_capped() {
        assert_eq!(parse_retry_after(Some(" 7 ")), Some(7));
        assert_eq!(parse_retry_after(Some("999999")), Some(3600));
        assert_eq!(
            parse_retry_after(Some("Wed, 21 Oct 2015 07:28:00 GMT")),
            None
        );
        assert_eq!(parse_retry_after(None), None);
    }
}
