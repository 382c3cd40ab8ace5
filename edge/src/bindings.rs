//! The names of the Worker's bindings in `wrangler.toml` (Durable Object
//! namespaces, KV, R2), in one small module every room may use.

pub const JOB_RUNNER: &str = "JOB_RUNNER";
pub const JOBS_KV: &str = "JOBS";
pub const MEDIA: &str = "MEDIA";
pub const ASSETS: &str = "ASSETS";
pub const LEDGER: &str = "LEDGER";
pub const BREAKER: &str = "BREAKER";
/// The Rate Limiting binding of the public media routes (`media_limit.rs`).
pub const MEDIA_LIMIT: &str = "MEDIA_LIMIT";
