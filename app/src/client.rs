//! All HTTP the app does, through `gloo-net`, in one place: it adds the access key
//! (same-origin requests only), reads `x-remaining-credits`, times requests out,
//! decodes the API's `ErrorBody`, and retries what is safe to retry (reads, and a
//! submit carrying an `Idempotency-Key`). Whether a failure is final for a *job* is
//! the polling policy's call (`logic::poll`), not this module's.

use gloo_net::http::{Request, RequestBuilder, Response};
use parallax_api::{
    ErrorBody, ErrorCode, JobResult, Model, StatusResponse, StatusWait, SubmitResponse,
};
use serde::de::DeserializeOwned;
use wasm_bindgen::JsValue;
use wasm_bindgen_futures::JsFuture;
use web_sys::FormData;

use crate::logic::poll;

/// Why a call failed, in a form the UI can show.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientError {
    /// The API answered with an error body.
    Api {
        status: u16,
        body: ErrorBody,
        retry_after_ms: Option<f64>,
    },
    /// An HTTP error without an API body (a proxy's 502 page, say).
    Http {
        status: u16,
        retry_after_ms: Option<f64>,
    },
    /// No answer (offline, server down, timed out).
    Network(String),
    /// An answer we could not read.
    Decode(String),
}

impl ClientError {
    /// The HTTP status, 0 when there was no answer.
    pub fn status(&self) -> u16 {
        match self {
            Self::Api { status, .. } | Self::Http { status, .. } => *status,
            Self::Network(_) | Self::Decode(_) => 0,
        }
    }

    pub fn retry_after_ms(&self) -> Option<f64> {
        match self {
            Self::Api { retry_after_ms, .. } | Self::Http { retry_after_ms, .. } => *retry_after_ms,
            _ => None,
        }
    }

    /// Whether repeating the same request may succeed: no answer, a timeout, 429, 5xx.
    pub fn retryable(&self) -> bool {
        match self {
            Self::Network(_) => true,
            Self::Decode(_) => false,
            _ => matches!(self.status(), 408 | 429 | 500..=599),
        }
    }

    /// What this error means for a status or result read.
    pub fn read(&self) -> poll::Read {
        poll::classify(self.status(), self.retry_after_ms())
    }

    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Self::Api { body, .. } => Some(body.code),
            _ => None,
        }
    }

    /// One readable line for the user.
    pub fn message(&self) -> String {
        match self {
            Self::Api { body, .. } if body.code == ErrorCode::Unauthorized => {
                format!("{} — add a valid access key in Settings.", body.error)
            }
            Self::Api { body, .. } if body.code == ErrorCode::InsufficientCredits => {
                format!(
                    "{} Add credits to your key, or use fewer images.",
                    body.error
                )
            }
            Self::Api { body, .. } if body.code == ErrorCode::RateLimited => {
                "Too many requests right now; wait a moment and try again.".into()
            }
            Self::Api { body, .. } => match &body.fields {
                Some(fields) if !fields.is_empty() => fields
                    .iter()
                    .map(|f| format!("{}: {}", f.field, f.message))
                    .collect::<Vec<_>>()
                    .join("; "),
                _ => body.error.clone(),
            },
            Self::Http { status, .. } => format!("The server answered HTTP {status}; try again."),
            Self::Network(_) => {
                "Cannot reach the server. Check your connection and try again.".into()
            }
            Self::Decode(what) => format!("Unexpected answer from the server ({what})."),
        }
    }
}

/// Longest wait for an answer before a request counts as lost.
const TIMEOUT_MS: i32 = 20_000;
/// Attempts of a request that is safe to repeat, when the failure is transient.
const ATTEMPTS: u32 = 3;

/// Whether `url` goes to this page's origin (the only place the key may go).
fn same_origin(url: &str) -> bool {
    if url.starts_with('/') && !url.starts_with("//") {
        return true;
    }
    let origin = web_sys::window()
        .and_then(|w| w.location().origin().ok())
        .unwrap_or_default();
    !origin.is_empty() && url.starts_with(&format!("{origin}/"))
}

type Signal<'a> = Option<&'a web_sys::AbortSignal>;

fn prepare(builder: RequestBuilder, url: &str, signal: Signal) -> RequestBuilder {
    let builder = builder
        .header("accept", "application/json")
        .abort_signal(signal);
    match crate::session::api_key() {
        Some(key) if same_origin(url) => builder.header("x-api-key", &key),
        _ => builder,
    }
}

/// Sends one request, failing with `Network` after [`TIMEOUT_MS`].
async fn send_once(
    make: impl FnOnce(Signal) -> Result<Request, ClientError>,
) -> Result<Response, ClientError> {
    send_within(TIMEOUT_MS, make).await
}

/// Sends one request, failing with `Network` after `timeout_ms`.
async fn send_within(
    timeout_ms: i32,
    make: impl FnOnce(Signal) -> Result<Request, ClientError>,
) -> Result<Response, ClientError> {
    let abort = web_sys::AbortController::new().ok();
    let signal = abort.as_ref().map(web_sys::AbortController::signal);
    let request = make(signal.as_ref())?;
    let timer = abort.as_ref().and_then(|a| {
        let a = a.clone();
        gloo_timeout(timeout_ms, move || a.abort())
    });
    let sent = request.send().await;
    if let (Some(w), Some(t)) = (web_sys::window(), timer) {
        w.clear_timeout_with_handle(t);
    }
    let resp = sent.map_err(|e| ClientError::Network(e.to_string()))?;
    if let Some(n) = resp
        .headers()
        .get("x-remaining-credits")
        .and_then(|v| v.parse().ok())
    {
        crate::session::saw_credits(n);
    }
    Ok(resp)
}

/// Runs `f` after `ms`; returns the timer's handle.
fn gloo_timeout(ms: i32, f: impl FnOnce() + 'static) -> Option<i32> {
    let cb = wasm_bindgen::closure::Closure::once_into_js(f);
    web_sys::window()?
        .set_timeout_with_callback_and_timeout_and_arguments_0(
            wasm_bindgen::JsCast::unchecked_ref(&cb),
            ms,
        )
        .ok()
}

/// Decodes a success body of type `T`, or the error body.
/// `accept_failed` lets a 422 (FAILED job) through as a normal answer.
async fn decode<T: DeserializeOwned>(
    resp: Response,
    accept_failed: bool,
) -> Result<T, ClientError> {
    let status = resp.status();
    let retry_after_ms = poll::retry_after_ms(resp.headers().get("retry-after").as_deref());
    let text = resp
        .text()
        .await
        .map_err(|e| ClientError::Network(e.to_string()))?;
    decode_text(status, &text, accept_failed, retry_after_ms)
}

fn decode_text<T: DeserializeOwned>(
    status: u16,
    text: &str,
    accept_failed: bool,
    retry_after_ms: Option<f64>,
) -> Result<T, ClientError> {
    if (200..300).contains(&status) || (accept_failed && status == 422) {
        crate::json::parse(text).map_err(ClientError::Decode)
    } else {
        match crate::json::parse::<ErrorBody>(text) {
            Ok(body) => Err(ClientError::Api {
                status,
                body,
                retry_after_ms,
            }),
            Err(_) => Err(ClientError::Http {
                status,
                retry_after_ms,
            }),
        }
    }
}

/// A safe request (a read, or an idempotent submit), retried a few times on
/// transient failures with a short pause.
async fn with_retries<T: DeserializeOwned>(
    make: impl Fn(Signal) -> Result<Request, ClientError>,
    accept_failed: bool,
) -> Result<T, ClientError> {
    let mut last = ClientError::Network("not sent".into());
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            let wait = last
                .retry_after_ms()
                .unwrap_or(500.0 * f64::from(attempt))
                .min(5_000.0);
            sleep(wait as i32).await;
        }
        let result = match send_once(&make).await {
            Ok(resp) => decode(resp, accept_failed).await,
            Err(e) => Err(e),
        };
        match result {
            Err(e) if e.retryable() => last = e,
            other => return other,
        }
    }
    Err(last)
}

fn built(r: Result<Request, gloo_net::Error>) -> Result<Request, ClientError> {
    r.map_err(|e| ClientError::Network(e.to_string()))
}

fn get(url: &str, signal: Signal) -> Result<Request, ClientError> {
    built(prepare(Request::get(url), url, signal).build())
}

/// With an anonymous job's owner token (`x-owner-token`), to this origin only.
fn owned(builder: RequestBuilder, url: &str, owner_token: Option<&str>) -> RequestBuilder {
    match owner_token {
        Some(token) if same_origin(url) => builder.header("x-owner-token", token),
        _ => builder,
    }
}

/// `POST /v2/{model}` with a multipart form. The `Idempotency-Key` makes a retry after
/// a lost answer safe: the server returns the job the first attempt created.
pub async fn submit(
    model: Model,
    form: &FormData,
    idempotency_key: &str,
) -> Result<SubmitResponse, ClientError> {
    let url = format!("/v2/{}", model.slug());
    with_retries(
        |signal| {
            built(
                prepare(Request::post(&url), &url, signal)
                    .header("idempotency-key", idempotency_key)
                    .body(JsValue::from(form.clone())),
            )
        },
        false,
    )
    .await
}

/// A page of the key's jobs from `GET /v2/requests`.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct ListPage {
    pub requests: Vec<JobResult>,
    pub next_cursor: Option<String>,
}

pub async fn list(cursor: Option<&str>) -> Result<ListPage, ClientError> {
    let url = match cursor {
        Some(c) => format!("/v2/requests?limit=50&cursor={c}"),
        None => "/v2/requests?limit=50".to_owned(),
    };
    with_retries(|s| get(&url, s), false).await
}

/// A page of the key's credit history from `GET /v2/credits` (a 401 without a key;
/// its `x-remaining-credits` still tells the anonymous allowance).
pub async fn credits(cursor: Option<&str>) -> Result<parallax_api::CreditsPage, ClientError> {
    let url = match cursor {
        Some(c) => format!("/v2/credits?limit=20&cursor={c}"),
        None => "/v2/credits?limit=20".to_owned(),
    };
    with_retries(|s| get(&url, s), false).await
}

/// `DELETE /v2/requests/{id}` of a *finished* job: deletes it and its images. An
/// anonymous job needs its `owner_token`.
pub async fn delete(response_url: &str, owner_token: Option<&str>) -> Result<(), ClientError> {
    let resp = send_once(|s| {
        let builder = prepare(Request::delete(response_url), response_url, s);
        built(owned(builder, response_url, owner_token).build())
    })
    .await?;
    decode::<serde::de::IgnoredAny>(resp, false)
        .await
        .map(|_| ())
}

/// `POST /v2/requests/{id}/cancel`: cancels a running job. A 409 `conflict` means it
/// had already finished (and nothing changed). Not retried: the caller refreshes. An
/// anonymous job needs its `owner_token`.
pub async fn cancel(
    cancel_url: &str,
    owner_token: Option<&str>,
) -> Result<StatusResponse, ClientError> {
    let resp = send_once(|s| {
        let builder = prepare(Request::post(cancel_url), cancel_url, s);
        built(owned(builder, cancel_url, owner_token).build())
    })
    .await?;
    decode(resp, true).await
}

/// `POST /v2/requests/{id}/share`: what the job's share page shows beside the result
/// (its owner only; an anonymous job needs its `owner_token`). Not retried: the
/// caller shows the error and the toggle stays as the server has it.
pub async fn share(
    share_url: &str,
    choice: parallax_api::ShareControl,
    owner_token: Option<&str>,
) -> Result<parallax_api::ShareResponse, ClientError> {
    let body = parallax_api::ShareRequest {
        share_control: choice,
    };
    let resp = send_once(|s| {
        let builder = prepare(Request::post(share_url), share_url, s);
        built(owned(builder, share_url, owner_token).json(&body))
    })
    .await?;
    decode(resp, false).await
}

/// One status read (not retried here: the scheduler owns retries and backoff).
pub async fn status(url: &str) -> Result<StatusResponse, ClientError> {
    decode(send_once(|s| get(url, s)).await?, true).await
}

/// One held status read (`?wait=…&seen=…`): answered when the job's status is no
/// longer `wait.seen`, or when the server's hold runs out (not retried here either).
pub async fn status_held(url: &str, wait: &StatusWait) -> Result<StatusResponse, ClientError> {
    let url = format!("{url}?{}", wait.query());
    decode(
        send_within(poll::HELD_TIMEOUT_MS, |s| get(&url, s)).await?,
        true,
    )
    .await
}

/// One result read (not retried here: the scheduler owns retries and backoff). With
/// an anonymous job's `owner_token`, it carries the owner's link to the control image.
pub async fn result(url: &str, owner_token: Option<&str>) -> Result<JobResult, ClientError> {
    let resp =
        send_once(|s| built(owned(prepare(Request::get(url), url, s), url, owner_token).build()));
    decode(resp.await?, true).await
}

/// A result read retried on transient failures (share page, Remix).
pub async fn result_retried(url: &str) -> Result<JobResult, ClientError> {
    with_retries(|s| get(url, s), true).await
}

/// A same-origin image (a sample, an output) as a blob.
pub async fn blob(url: &str) -> Result<web_sys::Blob, ClientError> {
    let resp = send_once(|s| built(Request::get(url).abort_signal(s).build())).await?;
    if !resp.ok() {
        return Err(ClientError::Http {
            status: resp.status(),
            retry_after_ms: None,
        });
    }
    let media_type = resp
        .headers()
        .get("content-type")
        .unwrap_or_else(|| "image/jpeg".into());
    let bytes = resp
        .binary()
        .await
        .map_err(|e| ClientError::Network(e.to_string()))?;
    let parts = js_sys::Array::of1(&js_sys::Uint8Array::from(bytes.as_slice()));
    let options = web_sys::BlobPropertyBag::new();
    options.set_type(&media_type);
    web_sys::Blob::new_with_u8_array_sequence_and_options(&parts, &options)
        .map_err(|_| ClientError::Decode("image".into()))
}

thread_local! {
    /// Resolvers of pending [`sleep`]s, woken early by [`wake_all`].
    static SLEEPERS: std::cell::RefCell<Vec<js_sys::Function>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Resolves after `ms` milliseconds, or earlier on [`wake_all`] (the network back, a
/// phone bringing the tab back), so polling resumes at once.
pub async fn sleep(ms: i32) {
    let promise = js_sys::Promise::new(&mut |resolve, _| {
        if let Some(w) = web_sys::window() {
            let _ = w.set_timeout_with_callback_and_timeout_and_arguments_0(&resolve, ms);
        }
        SLEEPERS.with(|s| s.borrow_mut().push(resolve));
    });
    let _ = JsFuture::from(promise).await;
}

/// Wakes every pending [`sleep`].
pub fn wake_all() {
    for resolve in SLEEPERS.with(|s| std::mem::take(&mut *s.borrow_mut())) {
        let _ = resolve.call0(&JsValue::NULL);
    }
}

#[cfg(test)]
mod tests {
    use parallax_api::FieldError;

    use super::*;

    fn api(code: ErrorCode, error: &str) -> ClientError {
        ClientError::Api {
            status: code.http_status(),
            body: ErrorBody {
                error: error.into(),
                code,
                fields: None,
            },
            retry_after_ms: None,
        }
    }

    #[test]
    fn field_errors_read_as_one_line() {
        let e = ClientError::Api {
            status: 400,
            body: ErrorBody {
                error: "2 fields are invalid".into(),
                code: ErrorCode::BadRequest,
                fields: Some(vec![
                    FieldError::new("prompt", "is required"),
                    FieldError::new("control_image", "is not a JPEG, PNG or WebP image"),
                ]),
            },
            retry_after_ms: None,
        };
        assert_eq!(
            e.message(),
            "prompt: is required; control_image: is not a JPEG, PNG or WebP image"
        );
    }

    #[test]
    fn key_credit_and_rate_problems_say_what_to_do() {
        assert!(
            api(ErrorCode::Unauthorized, "API key is invalid")
                .message()
                .contains("Settings")
        );
        assert!(
            api(ErrorCode::InsufficientCredits, "Not enough credits")
                .message()
                .contains("Add credits")
        );
        assert!(
            api(ErrorCode::RateLimited, "x")
                .message()
                .contains("wait a moment")
        );
    }

    #[test]
    fn error_bodies_decode_into_api_errors_and_others_keep_their_status() {
        let r = decode_text::<StatusResponse>(
            404,
            r#"{"error":"No such request","code":"not_found"}"#,
            true,
            None,
        );
        assert!(matches!(r, Err(ClientError::Api { status: 404, .. })));
        assert_eq!(r.unwrap_err().read(), poll::Read::Gone);
        let r = decode_text::<StatusResponse>(503, "<html>", false, Some(2_000.0));
        let e = r.unwrap_err();
        assert_eq!(
            e,
            ClientError::Http {
                status: 503,
                retry_after_ms: Some(2_000.0)
            }
        );
        assert_eq!(
            e.read(),
            poll::Read::Transient {
                retry_after_ms: Some(2_000.0)
            }
        );
        assert!(matches!(
            ClientError::Network("offline".into()).read(),
            poll::Read::Transient { .. }
        ));
        assert_eq!(
            api(ErrorCode::Conflict, "finished").code(),
            Some(ErrorCode::Conflict)
        );
    }
}
