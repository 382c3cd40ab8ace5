//! Deployment configuration read from wrangler vars and secrets. Provider keys are held
//! in [`Secret`], whose `Debug` prints `***`, so they cannot slip into a log line.

use std::fmt;

use worker::Env;

/// A secret string (a provider API key). Never printed, never serialised.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The raw value, for the one header that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Where the Segmind adapter sends jobs.
#[derive(Debug, Clone)]
pub struct SegmindConfig {
    /// e.g. `https://api.segmind.com`, or `sim` on loopback in development.
    pub base_url: String,
    pub api_key: Option<Secret>,
}

/// Everything the edge reads from its environment.
#[derive(Debug, Clone)]
pub struct Config {
    pub segmind: SegmindConfig,
    /// Overrides the request's origin in absolute URLs (set behind a proxy).
    pub public_base_url: Option<String>,
    /// A job not finished by then is FAILED.
    pub job_deadline_secs: u64,
    /// How long results and records are kept.
    pub retention_days: u64,
}

/// Binding names, in one place.
pub mod bindings {
    pub const JOB_RUNNER: &str = "JOB_RUNNER";
    pub const JOBS_KV: &str = "JOBS";
    pub const MEDIA: &str = "MEDIA";
    pub const ASSETS: &str = "ASSETS";
}

fn text(env: &Env, name: &str) -> Option<String> {
    env.var(name)
        .map(|v| v.to_string())
        .or_else(|_| env.secret(name).map(|s| s.to_string()))
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

fn number(env: &Env, name: &str, default: u64) -> u64 {
    text(env, name)
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

impl Config {
    pub fn from_env(env: &Env) -> Self {
        Self {
            segmind: SegmindConfig {
                base_url: text(env, "SEGMIND_BASE_URL")
                    .unwrap_or_else(|| "https://api.segmind.com".into())
                    .trim_end_matches('/')
                    .to_owned(),
                api_key: text(env, "SEGMIND_API_KEY").map(Secret::new),
            },
            public_base_url: text(env, "PUBLIC_BASE_URL"),
            job_deadline_secs: number(env, "JOB_DEADLINE_SECS", 900),
            retention_days: number(env, "RETENTION_DAYS", 7),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_do_not_debug_print() {
        let cfg = SegmindConfig {
            base_url: "https://api.segmind.com".into(),
            api_key: Some(Secret::new("SG_live_123")),
        };
        let shown = format!("{cfg:?}");
        assert!(!shown.contains("SG_live_123"), "{shown}");
        assert!(shown.contains("***"));
    }
}
