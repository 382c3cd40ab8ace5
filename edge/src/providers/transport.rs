//! Sending an adapter's request: a timeout, redirects not followed where a key goes
//! with it, an answer read up to a cap, and failures classified for retry.

use futures_util::StreamExt;
use worker::{Fetch, Headers, Method, Request, RequestInit, RequestRedirect};

use super::{HttpMethod, UpstreamError, UpstreamRequest, UpstreamResponse, parse_retry_after};

/// The error for a provider's redirect (`None` if `status` is not one). Requests that
/// carry a provider's key are never redirected: fetch would send the key on to the
/// `Location`, which nobody checked against [`trusts`] (a compromised host, a proxy
/// misconfigured). So a 3xx is a transient upstream error naming where it pointed.
pub fn redirect_error(
    provider: &str,
    status: u16,
    location: Option<&str>,
) -> Option<UpstreamError> {
    if !(300..400).contains(&status) {
        return None;
    }
    // The origin only: a location's path and query may carry tokens.
    let target = location
        .and_then(|l| worker::Url::parse(l).ok())
        .map_or_else(
            || "elsewhere".to_owned(),
            |u| u.origin().ascii_serialization(),
        );
    Some(UpstreamError::Transient {
        reason: format!(
            "{provider} answered HTTP {status} redirecting to {target}; not followed, so its key stays with it"
        ),
        retry_after: None,
    })
}

/// Sends a request with a timeout, without following redirects ([`redirect_error`]).
/// A connection that could not be made is transient; a timeout or a lost answer is
/// transient for a read and ambiguous for anything else ([`UpstreamError::Ambiguous`]).
pub async fn send(
    provider: &str,
    req: &UpstreamRequest,
    timeout_ms: u32,
) -> Result<UpstreamResponse, UpstreamError> {
    send_with(provider, req, timeout_ms, false, None).await
}

/// [`send`], following redirects only if `follow` (a request that carries no key),
/// and reading at most `cap` bytes of the answer (if given; more is a permanent
/// error, stopped as the body streams).
pub(crate) async fn send_with(
    provider: &str,
    req: &UpstreamRequest,
    timeout_ms: u32,
    follow: bool,
    cap: Option<usize>,
) -> Result<UpstreamResponse, UpstreamError> {
    let transient = |what: &str| UpstreamError::Transient {
        reason: format!("{provider} {what}"),
        retry_after: None,
    };
    // Once a request that changes something upstream is out, a missing or cut-off
    // answer leaves its fate unknown.
    let changes = req.method != HttpMethod::Get;
    let unanswered = |what: &str| {
        if changes {
            UpstreamError::Ambiguous {
                reason: format!("{provider} {what}; it may have been accepted"),
            }
        } else {
            transient(what)
        }
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
        HttpMethod::Put => Method::Put,
    })
    .with_headers(headers)
    .with_redirect(if follow {
        RequestRedirect::Follow
    } else {
        RequestRedirect::Manual
    });
    if let Some(body) = &req.body {
        let array =
            js_sys::Uint8Array::new_with_length(u32::try_from(body.len()).unwrap_or(u32::MAX));
        array.copy_from(body);
        init.with_body(Some(array.into()));
    }
    let request = Request::new_with_init(&req.url, &init)
        .map_err(|_| UpstreamError::Permanent(format!("{provider}: invalid URL")))?;
    let signal =
        worker::AbortSignal::from(worker::web_sys::AbortSignal::timeout_with_u32(timeout_ms));
    let mut resp = Fetch::Request(request)
        .send_with_signal(&signal)
        .await
        .map_err(|e| {
            // workerd says "Network connection lost" when a connection broke after the
            // request went out: like a timeout, its fate is unknown.
            let text: String = e.to_string().chars().take(80).collect();
            if signal.aborted() {
                unanswered("did not answer in time")
            } else if text.contains("connection lost") || text.contains("reset") {
                unanswered(&format!("lost the connection ({text})"))
            } else {
                transient(&format!("could not be reached ({text})"))
            }
        })?;
    let location = resp.headers().get("location").ok().flatten();
    if let Some(e) = redirect_error(provider, resp.status_code(), location.as_deref()) {
        return Err(e);
    }
    let retry_after =
        parse_retry_after(resp.headers().get("retry-after").ok().flatten().as_deref());
    let status = resp.status_code();
    // An answer that broke off after a refusal's status is a refusal all the same.
    let cut = |what: &str| {
        if (200..300).contains(&status) {
            unanswered(what)
        } else {
            transient(what)
        }
    };
    let body = match cap {
        None => resp
            .bytes()
            .await
            .map_err(|_| cut("response was interrupted"))?,
        Some(cap) => {
            let mut stream = resp
                .stream()
                .map_err(|_| transient("response could not be read"))?;
            let mut body = Vec::new();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|_| transient("response was interrupted"))?;
                crate::input::remote::append_capped(&mut body, &chunk, cap)
                    .map_err(|e| UpstreamError::Permanent(format!("{provider}: the answer {e}")))?;
            }
            body
        }
    };
    Ok(UpstreamResponse {
        status: resp.status_code(),
        retry_after,
        body,
    })
}
