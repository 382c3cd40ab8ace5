//! Parallax's shared vocabulary: the model catalog, parameter validation and the wire
//! types of the public API. Serde only, no I/O: the edge validates with it, the app
//! renders its form from it, and both agree on every byte of JSON.

pub mod control;
pub mod credits;
pub mod error;
pub mod id;
pub mod models;
pub mod num;
pub mod openapi;
pub mod params;
pub mod share;
pub mod wait;
pub mod wire;

pub use control::ControlImage;
pub use credits::{CreditEntry, CreditsPage, Settlement};
pub use error::{ErrorBody, ErrorCode, FieldError};
pub use id::RequestId;
pub use models::{Model, ParamKind, ParamSpec};
pub use params::{Params, Validated, validate, validate_value};
pub use share::{ShareControl, ShareRequest, ShareResponse};
pub use wait::StatusWait;
pub use wire::{
    Credits, JobResult, JobStatus, Metrics, OutputImage, StatusResponse, SubmitResponse,
};
