//! The one error body every non-2xx response carries: `{"error", "code", "fields"?}`.

use serde::{Deserialize, Serialize};

/// Closed set of machine-readable error codes; clients branch on these, never on text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadRequest,
    Unauthorized,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    InsufficientCredits,
    PayloadTooLarge,
    JobFailed,
    /// The job already finished: a cancel changes nothing.
    Conflict,
    /// An `Idempotency-Key` sent again with a different request.
    IdempotencyKeyReused,
    RateLimited,
    Internal,
    UpstreamFailed,
    UpstreamTimeout,
}

impl ErrorCode {
    /// Every code (the OpenAPI document lists them all).
    pub const ALL: [Self; 14] = [
        Self::BadRequest,
        Self::Unauthorized,
        Self::Forbidden,
        Self::NotFound,
        Self::MethodNotAllowed,
        Self::InsufficientCredits,
        Self::PayloadTooLarge,
        Self::JobFailed,
        Self::Conflict,
        Self::IdempotencyKeyReused,
        Self::RateLimited,
        Self::Internal,
        Self::UpstreamFailed,
        Self::UpstreamTimeout,
    ];

    /// The HTTP status this code is served with.
    pub fn http_status(self) -> u16 {
        match self {
            Self::BadRequest => 400,
            Self::Unauthorized => 401,
            Self::Forbidden => 403,
            Self::NotFound => 404,
            Self::MethodNotAllowed => 405,
            Self::InsufficientCredits => 406,
            Self::PayloadTooLarge => 413,
            Self::JobFailed => 422,
            Self::Conflict => 409,
            Self::IdempotencyKeyReused => 422,
            Self::RateLimited => 429,
            Self::Internal => 500,
            Self::UpstreamFailed => 502,
            Self::UpstreamTimeout => 504,
        }
    }
}

/// One invalid input field and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// The JSON body of every error response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    pub code: ErrorCode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields: Option<Vec<FieldError>>,
}
