//! All HTTP the app does: submit a job, read its status and result. Errors become a
//! [`ClientError`] carrying the API's error body when there is one.

use parallax_api::{ErrorBody, ErrorCode, JobResult, Model, StatusResponse, SubmitResponse};
use serde::de::DeserializeOwned;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{FormData, RequestInit, Response};

/// Why a call failed, in a form the UI can show.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientError {
    /// The API answered with an error body.
    Api { status: u16, body: ErrorBody },
    /// No answer (offline, server down).
    Network(String),
    /// An answer we could not read.
    Decode(String),
}

impl ClientError {
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
            Self::Network(_) => {
                "Cannot reach the server. Check your connection and try again.".into()
            }
            Self::Decode(what) => format!("Unexpected answer from the server ({what})."),
        }
    }
}

fn js_error(e: JsValue) -> ClientError {
    ClientError::Network(e.as_string().unwrap_or_else(|| format!("{e:?}")))
}

async fn fetch(
    method: &str,
    url: &str,
    body: Option<&JsValue>,
) -> Result<(u16, String), ClientError> {
    let window = web_sys::window().ok_or_else(|| ClientError::Network("no window".into()))?;
    let init = RequestInit::new();
    init.set_method(method);
    if let Some(body) = body {
        init.set_body(body);
    }
    let req = web_sys::Request::new_with_str_and_init(url, &init).map_err(js_error)?;
    req.headers()
        .set("accept", "application/json")
        .map_err(js_error)?;
    if let Some(key) = crate::session::api_key() {
        req.headers().set("x-api-key", &key).map_err(js_error)?;
    }
    let resp: Response = JsFuture::from(window.fetch_with_request(&req))
        .await
        .map_err(js_error)?
        .dyn_into()
        .map_err(js_error)?;
    if let Some(n) = resp
        .headers()
        .get("x-remaining-credits")
        .ok()
        .flatten()
        .and_then(|v| v.parse().ok())
    {
        crate::session::saw_credits(n);
    }
    let text = JsFuture::from(resp.text().map_err(js_error)?)
        .await
        .map_err(js_error)?
        .as_string()
        .unwrap_or_default();
    Ok((resp.status(), text))
}

/// Decodes a success body of type `T`, or the error body.
/// `accept_failed` lets a 422 (FAILED job) through as a normal answer.
fn decode<T: DeserializeOwned>(
    status: u16,
    text: &str,
    accept_failed: bool,
) -> Result<T, ClientError> {
    if (200..300).contains(&status) || (accept_failed && status == 422) {
        serde_json::from_str(text).map_err(|e| ClientError::Decode(e.to_string()))
    } else {
        match serde_json::from_str::<ErrorBody>(text) {
            Ok(body) => Err(ClientError::Api { status, body }),
            Err(_) => Err(ClientError::Decode(format!("HTTP {status}"))),
        }
    }
}

/// `POST /v2/{model}` with a multipart form.
pub async fn submit(model: Model, form: &FormData) -> Result<SubmitResponse, ClientError> {
    let (status, text) = fetch(
        "POST",
        &format!("/v2/{}", model.slug()),
        Some(form.as_ref()),
    )
    .await?;
    decode(status, &text, false)
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
    let (status, text) = fetch("GET", &url, None).await?;
    decode(status, &text, false)
}

/// `DELETE /v2/requests/{id}` of a finished job: deletes it and its images.
pub async fn delete(response_url: &str) -> Result<(), ClientError> {
    let (status, text) = fetch("DELETE", response_url, None).await?;
    decode::<serde_json::Value>(status, &text, false).map(|_| ())
}

/// Polls a job until it ends and returns its result; `on_status` sees every status.
pub async fn follow(
    status_url: &str,
    response_url: &str,
    on_status: impl Fn(&StatusResponse),
) -> Result<JobResult, ClientError> {
    let mut errors = 0;
    for attempt in 0.. {
        sleep(crate::jobs::poll_delay_ms(attempt)).await;
        match status(status_url).await {
            Ok(s) if s.status.is_terminal() => break,
            Ok(s) => {
                errors = 0;
                on_status(&s);
            }
            Err(e) if matches!(e, ClientError::Api { .. }) || errors >= MAX_POLL_ERRORS => {
                return Err(e);
            }
            Err(_) => errors += 1,
        }
    }
    result(response_url).await
}

/// Status polls that may fail in a row (network blips) before giving up.
const MAX_POLL_ERRORS: u32 = 5;

/// `DELETE /v2/requests/{id}`: cancels a running job (refunded).
pub async fn cancel(response_url: &str) -> Result<StatusResponse, ClientError> {
    let (status, text) = fetch("DELETE", response_url, None).await?;
    decode(status, &text, true)
}

pub async fn status(url: &str) -> Result<StatusResponse, ClientError> {
    let (status, text) = fetch("GET", url, None).await?;
    decode(status, &text, true)
}

pub async fn result(url: &str) -> Result<JobResult, ClientError> {
    let (status, text) = fetch("GET", url, None).await?;
    decode(status, &text, true)
}

thread_local! {
    /// Resolvers of pending [`sleep`]s, woken early by [`wake_all`].
    static SLEEPERS: std::cell::RefCell<Vec<js_sys::Function>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Resolves after `ms` milliseconds, or earlier on [`wake_all`] (a phone bringing the
/// tab back), so polling resumes at once instead of after a throttled timer.
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
        };
        assert_eq!(
            e.message(),
            "prompt: is required; control_image: is not a JPEG, PNG or WebP image"
        );
    }

    #[test]
    fn key_credit_and_rate_problems_say_what_to_do() {
        let e = |code, error: &str| ClientError::Api {
            status: code_status(code),
            body: ErrorBody {
                error: error.into(),
                code,
                fields: None,
            },
        };
        assert!(
            e(ErrorCode::Unauthorized, "API key is invalid")
                .message()
                .contains("Settings")
        );
        assert!(
            e(ErrorCode::InsufficientCredits, "Not enough credits")
                .message()
                .contains("Add credits")
        );
        assert!(
            e(ErrorCode::RateLimited, "x")
                .message()
                .contains("wait a moment")
        );
    }

    fn code_status(code: ErrorCode) -> u16 {
        code.http_status()
    }

    #[test]
    fn error_bodies_decode_into_api_errors() {
        let r = decode::<StatusResponse>(
            404,
            r#"{"error":"No such request","code":"not_found"}"#,
            true,
        );
        assert!(matches!(r, Err(ClientError::Api { status: 404, .. })));
        let r = decode::<StatusResponse>(502, "<html>", false);
        assert_eq!(r, Err(ClientError::Decode("HTTP 502".into())));
    }
}
