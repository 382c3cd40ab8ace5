//! `EdgeError`, the one error type of every handler, and the one place it becomes the
//! JSON error body. 5xx bodies never carry internals: the log gets the detail.

use parallax_api::{ErrorBody, ErrorCode, FieldError};
use worker::Response;

use crate::http;

/// Everything a request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    #[error("{message}")]
    BadRequest {
        message: String,
        fields: Vec<FieldError>,
    },
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    InsufficientCredits(String),
    #[error("Too many requests; retry in {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },
    #[error("method not allowed")]
    MethodNotAllowed { allow: &'static str },
    #[error("{0}")]
    PayloadTooLarge(String),
    /// 409: the request conflicts with the resource's state (e.g. a request with the
    /// same `Idempotency-Key` is still in progress: retry after `retry_after_secs`).
    #[error("{message}")]
    Conflict {
        message: String,
        retry_after_secs: Option<u64>,
    },
    /// 422: the `Idempotency-Key` was used with a different request.
    #[error(
        "This Idempotency-Key was already used with a different request; use a new key for a new request"
    )]
    IdempotencyKeyReused,
    #[error("{0}")]
    UpstreamFailed(String),
    #[error("{0}")]
    UpstreamTimeout(String),
    /// Logged in full, answered as a bare 500.
    #[error("internal error: {0}")]
    Internal(String),
}

impl EdgeError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::BadRequest {
            message: message.into(),
            fields: Vec::new(),
        }
    }

    /// A 400 naming one field.
    pub fn field(field: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        Self::BadRequest {
            message: format!("{field} {message}"),
            fields: vec![FieldError::new(field, message)],
        }
    }

    /// A 400 listing every invalid field.
    pub fn fields(fields: Vec<FieldError>) -> Self {
        let message = match fields.as_slice() {
            [one] => format!("{} {}", one.field, one.message),
            many => format!("{} fields are invalid", many.len()),
        };
        Self::BadRequest { message, fields }
    }

    /// Renames the fields of a 400 (for an API that names its parameters differently);
    /// any other error is unchanged.
    pub fn map_fields(self, rename: impl FnOnce(Vec<FieldError>) -> Vec<FieldError>) -> Self {
        match self {
            Self::BadRequest { fields, .. } if !fields.is_empty() => Self::fields(rename(fields)),
            other => other,
        }
    }

    pub fn code(&self) -> ErrorCode {
        match self {
            Self::BadRequest { .. } => ErrorCode::BadRequest,
            Self::Unauthorized(_) => ErrorCode::Unauthorized,
            Self::Forbidden(_) => ErrorCode::Forbidden,
            Self::NotFound(_) => ErrorCode::NotFound,
            Self::InsufficientCredits(_) => ErrorCode::InsufficientCredits,
            Self::RateLimited { .. } => ErrorCode::RateLimited,
            Self::MethodNotAllowed { .. } => ErrorCode::MethodNotAllowed,
            Self::PayloadTooLarge(_) => ErrorCode::PayloadTooLarge,
            Self::Conflict { .. } => ErrorCode::Conflict,
            Self::IdempotencyKeyReused => ErrorCode::IdempotencyKeyReused,
            Self::UpstreamFailed(_) => ErrorCode::UpstreamFailed,
            Self::UpstreamTimeout(_) => ErrorCode::UpstreamTimeout,
            Self::Internal(_) => ErrorCode::Internal,
        }
    }

    /// The wire body: what a client may see.
    pub fn body(&self) -> ErrorBody {
        let (error, fields) = match self {
            Self::BadRequest { message, fields } => (
                message.clone(),
                (!fields.is_empty()).then(|| fields.clone()),
            ),
            Self::MethodNotAllowed { allow } => (format!("Method not allowed; use {allow}"), None),
            Self::Internal(_) => ("Internal error; please retry".to_string(), None),
            Self::IdempotencyKeyReused => (
                self.to_string(),
                Some(vec![FieldError::new(
                    "Idempotency-Key",
                    "was already used with a different request",
                )]),
            ),
            other => (other.to_string(), None),
        };
        ErrorBody {
            error,
            code: self.code(),
            fields,
        }
    }

    pub fn into_response(self) -> Response {
        if let Self::Internal(detail) = &self {
            worker::console_error!("internal error: {detail}");
        }
        let status = self.code().http_status();
        if matches!(status, 401 | 403 | 429) {
            // The message names no secret (the key is never in it).
            crate::refusal_log::warn(&format!("{status}: {self}"));
        }
        let mut resp = http::json(&self.body(), status);
        match self {
            Self::MethodNotAllowed { allow } => {
                let _ = resp.headers_mut().set("allow", allow);
            }
            Self::RateLimited { retry_after_secs }
            | Self::Conflict {
                retry_after_secs: Some(retry_after_secs),
                ..
            } => {
                let _ = resp
                    .headers_mut()
                    .set("retry-after", &retry_after_secs.to_string());
            }
            _ => {}
        }
        resp
    }
}

impl From<worker::Error> for EdgeError {
    fn from(e: worker::Error) -> Self {
        Self::Internal(e.to_string())
    }
}

impl From<worker::KvError> for EdgeError {
    fn from(e: worker::KvError) -> Self {
        Self::Internal(format!("kv: {e}"))
    }
}

pub type EdgeResult<T> = Result<T, EdgeError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_errors_never_show_their_detail() {
        let body = EdgeError::Internal("SEGMIND_API_KEY=sk-secret at line 3".into()).body();
        assert_eq!(body.error, "Internal error; please retry");
        assert_eq!(body.code, ErrorCode::Internal);
    }

    #[test]
    fn field_errors_are_listed_and_summarised() {
        let body = EdgeError::fields(vec![
            FieldError::new("steps", "must be between 15 and 50"),
            FieldError::new("prompt", "is required"),
        ])
        .body();
        assert_eq!(body.error, "2 fields are invalid");
        assert_eq!(body.fields.map(|f| f.len()), Some(2));
        let one = EdgeError::field("prompt", "is required").body();
        assert_eq!(one.error, "prompt is required");
    }

    #[test]
    fn a_reused_idempotency_key_is_a_422_naming_the_header() {
        let e = EdgeError::IdempotencyKeyReused;
        assert_eq!(e.code().http_status(), 422);
        let body = e.body();
        assert_eq!(body.code, ErrorCode::IdempotencyKeyReused);
        assert_eq!(body.fields.unwrap()[0].field, "Idempotency-Key");
    }
}
