//! Turning a submit request into validated parameters and control-image bytes:
//! body parsing (JSON or multipart), the control image's sources, and its checks.

pub mod body;
pub mod image;
pub mod multipart;
pub mod remote;

/// Largest request body accepted (a 10 MB image as base64 JSON, plus the fields).
pub const MAX_BODY_BYTES: usize = 15 * 1024 * 1024;
