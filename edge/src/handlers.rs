//! Request handlers, one file per resource. Each returns `EdgeResult<Response>`.

pub mod credits;
pub mod eachlabs;
pub mod health;
pub mod hooks;
pub mod jobs;
pub mod onemin;
pub mod openapi;
pub mod results;
pub mod share;
pub mod submit;
pub mod sync;
