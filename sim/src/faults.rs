//! Fault injection, driven by the prompt so each test controls its own job:
//! - `[sim:fail]` the job ends FAILED as a moderation/content block;
//! - `[sim:reject]` the submit is refused with HTTP 400;
//! - `[sim:slow]` processing takes ten times longer; `[sim:process=8.5]` takes 8.5 s;
//!   `[sim:queue=60]` keeps the job queued for 60 s;
//! - `[sim:FAULT]` or `[sim:PROTOCOL:FAULT]` (PROTOCOL = segmind, replicate, comfyui,
//!   bfl, parallax, fal) with FAULT one of `429` (with Retry-After), `500`, `502`, `503`,
//!   `404`, `410` (a retired endpoint), `hang` (no answer for two minutes), `badjson`:
//!   the first two submits fail that way, then it works; a trailing `!` (e.g.
//!   `[sim:segmind:503!]`) makes it permanent;
//! - `[sim:redirect]` the first two polls are sent to another origin;
//! - `[sim:lost]` (ComfyUI only) the first two submits are accepted and run, but
//!   answered `502` as when a proxy loses the server's answer: a client that submits
//!   again without looking first starts the prompt twice;
//! - `[sim:output404]`, `[sim:slowdownload]` (3 s per output), `[sim:truncate]` (the
//!   first two downloads are cut short), `[sim:extra]` (one output more than asked).
//!
//! This module answers the submit and poll faults; the job faults are applied where
//! the job is made (`common::create_job_as`, `jobs`), the download faults by the CDN
//! (`common::output`).

use std::time::Duration;

use axum::Json;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::common::error;
use crate::state::Sim;

impl Sim {
    /// `[sim:redirect]`: the first two polls of a job are answered `302 Found` to the
    /// same path on another origin ([`crate::elsewhere`]), as a compromised or
    /// misconfigured host might; a client that follows it hands that origin its key.
    pub fn poll_redirect(&self, scope: &str, prompt: &str, path: &str) -> Option<Response> {
        let elsewhere = self.elsewhere.base()?;
        (prompt.contains("[sim:redirect]") && self.fires(prompt, scope, "redirect", false)).then(
            || {
                (
                    StatusCode::FOUND,
                    [(header::LOCATION, format!("{elsewhere}{path}"))],
                )
                    .into_response()
            },
        )
    }

    /// `[sim:lost]`: the answer to a submit the provider accepted, when the prompt
    /// asks for it to be lost on the way back.
    pub fn lost_answer(&self, scope: &str, prompt: &str) -> Option<Response> {
        requested_faults(prompt, scope)
            .into_iter()
            .find(|(fault, _)| fault == "lost")
            .filter(|(fault, always)| self.fires(prompt, scope, fault, *always))
            .map(|_| {
                error(
                    StatusCode::BAD_GATEWAY,
                    "Bad Gateway (sim: the answer was lost)",
                )
            })
    }

    /// The fault response a submit to `scope` gets for this prompt, if any.
    pub async fn submit_fault(&self, scope: &str, prompt: &str) -> Option<Response> {
        if prompt.contains("[sim:reject]") {
            return Some(error(
                StatusCode::BAD_REQUEST,
                "Invalid request: rejected by the provider (sim)",
            ));
        }
        for (fault, always) in requested_faults(prompt, scope) {
            let status = match fault.as_str() {
                "429" => StatusCode::TOO_MANY_REQUESTS,
                "500" => StatusCode::INTERNAL_SERVER_ERROR,
                "502" => StatusCode::BAD_GATEWAY,
                "503" => StatusCode::SERVICE_UNAVAILABLE,
                "404" => StatusCode::NOT_FOUND,
                "410" => StatusCode::GONE,
                "hang" | "badjson" => StatusCode::OK,
                _ => continue,
            };
            if !self.fires(prompt, scope, &fault, always) {
                continue;
            }
            return Some(match fault.as_str() {
                "hang" => {
                    tokio::time::sleep(Duration::from_secs(120)).await;
                    error(StatusCode::GATEWAY_TIMEOUT, "hung")
                }
                "badjson" => (
                    [(header::CONTENT_TYPE, "application/json")],
                    "{\"status\": \"QUEUED\", \"request_id\": ",
                )
                    .into_response(),
                "429" => (
                    status,
                    [(header::RETRY_AFTER, "1")],
                    Json(json!({"error": "Too many requests (sim)", "detail": "Request was throttled. Your rate limit resets in ~1s."})),
                )
                    .into_response(),
                _ => error(status, format!("Upstream error {} (sim)", status.as_u16())),
            });
        }
        None
    }
}

/// `[sim:FAULT]` and `[sim:SCOPE:FAULT]` tokens for `scope`, with their `!` flag.
fn requested_faults(prompt: &str, scope: &str) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    let mut rest = prompt;
    while let Some(start) = rest.find("[sim:") {
        let after = &rest[start + 5..];
        let Some(end) = after.find(']') else { break };
        let token = &after[..end];
        let (token_scope, fault) = match token.split_once(':') {
            Some((s, f)) => (Some(s), f),
            None => (None, token),
        };
        if token_scope.is_none_or(|s| s == scope) {
            let always = fault.ends_with('!');
            out.push((fault.trim_end_matches('!').to_owned(), always));
        }
        rest = &after[end..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_tokens_are_scoped_by_protocol() {
        let p = "a cat [sim:segmind:503!] [sim:429] [sim:replicate:hang]";
        assert_eq!(
            requested_faults(p, "segmind"),
            vec![("503".to_string(), true), ("429".to_string(), false)]
        );
        assert_eq!(
            requested_faults(p, "replicate"),
            vec![("429".to_string(), false), ("hang".to_string(), false)]
        );
        assert!(requested_faults("plain", "bfl").is_empty());
    }
}
