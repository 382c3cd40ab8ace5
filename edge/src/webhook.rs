//! Webhooks: POSTing a finished job to the URL its caller gave (the Eachlabs API's
//! `webhook_url`). Only `https` to a public host; the body is signed with HMAC-SHA256
//! the way Eachlabs signs (`X-Webhook-Signature: sha256=<hex>` over
//! `<X-Webhook-Timestamp>.<body>`); a refused or failed delivery is retried with
//! backoff, every attempt carrying the same body, timestamp and signature.
//!
//! The runner owns the delivery state ([`Delivery`], next to the job's record) and
//! drives it from its alarm; this module is the pure part plus the one send.

use std::fmt;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use worker::{Fetch, Headers, Method, Request, RequestInit, RequestRedirect, Url};

use crate::input::remote;

/// Attempts per delivery, the first included.
pub const MAX_ATTEMPTS: u32 = 5;
/// The first retry comes this long after a failed attempt; each next one 4× later
/// (2 s, 8 s, 32 s, 128 s).
pub const FIRST_RETRY_MS: u64 = 2_000;
/// How long one attempt may take.
const TIMEOUT_MS: u32 = 10_000;

/// Where and how to deliver one job's webhook. The secret is the HMAC key.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    pub url: String,
    pub secret: String,
    /// This deployment's origin at submit time, for absolute URLs in the payload.
    pub origin: String,
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Target")
            .field("host", &host_of(&self.url))
            .field("secret", &"***")
            .finish()
    }
}

/// A webhook's progress, stored by the job's runner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    pub target: Target,
    pub attempts: u32,
    /// When the next attempt is due (Unix ms).
    pub next_ms: u64,
    /// The signed body and its timestamp, fixed at the first attempt.
    pub body: Option<String>,
    pub timestamp: Option<u64>,
    /// Delivered, given up, or not to be sent (a canceled job).
    pub done: bool,
}

impl Delivery {
    pub fn new(target: Target) -> Self {
        Self {
            target,
            attempts: 0,
            next_ms: 0,
            body: None,
            timestamp: None,
            done: false,
        }
    }

    /// Whether an attempt is owed at or before `now_ms`.
    pub fn is_due(&self, now_ms: u64) -> bool {
        !self.done && now_ms >= self.next_ms
    }

    /// Records one attempt's outcome and schedules the next, if any.
    pub fn attempted(&mut self, delivered: bool, now_ms: u64) {
        self.attempts += 1;
        if delivered || self.attempts >= MAX_ATTEMPTS {
            self.done = true;
        } else {
            self.next_ms = now_ms + retry_delay_ms(self.attempts);
        }
    }
}

/// Delay after failed attempt number `attempts` (1-based).
pub fn retry_delay_ms(attempts: u32) -> u64 {
    FIRST_RETRY_MS.saturating_mul(4u64.saturating_pow(attempts.saturating_sub(1)))
}

/// `sha256=<lowercase hex HMAC-SHA256 of "<timestamp>.<body>">`.
pub fn signature(secret: &str, timestamp: u64, body: &str) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256={hex}")
}

/// Refuses webhook URLs the edge must never call: the rules of remote images (https,
/// public host, default port, no credentials). `allow_loopback` (the test stack's
/// `WEBHOOK_LOOPBACK=on`) also lets `http://127.0.0.1:<port>` through.
pub fn check_url(raw: &str, allow_loopback: bool) -> Result<Url, String> {
    if allow_loopback
        && let Ok(url) = Url::parse(raw)
        && url.scheme() == "http"
        && url.host_str() == Some("127.0.0.1")
    {
        return Ok(url);
    }
    remote::check_url(raw)
}

fn host_of(url: &str) -> String {
    Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_default()
}

/// One attempt: POSTs the signed body; `Ok` on any 2xx. Redirects are not followed
/// (one could point at a private host).
pub async fn send(
    target: &Target,
    allow_loopback: bool,
    timestamp: u64,
    body: &str,
) -> Result<(), String> {
    let url = check_url(&target.url, allow_loopback)?;
    let headers = Headers::new();
    let set = |name: &str, value: &str| {
        headers
            .set(name, value)
            .map_err(|_| format!("header {name} could not be set"))
    };
    set("content-type", "application/json")?;
    set("user-agent", "Parallax-Webhook/1")?;
    set("x-webhook-timestamp", &timestamp.to_string())?;
    set(
        "x-webhook-signature",
        &signature(&target.secret, timestamp, body),
    )?;
    let mut init = RequestInit::new();
    init.with_method(Method::Post)
        .with_headers(headers)
        .with_redirect(RequestRedirect::Manual)
        .with_body(Some(body.into()));
    let req = Request::new_with_init(url.as_str(), &init)
        .map_err(|_| "could not build the request".to_string())?;
    let signal =
        worker::AbortSignal::from(worker::web_sys::AbortSignal::timeout_with_u32(TIMEOUT_MS));
    let resp = Fetch::Request(req)
        .send_with_signal(&signal)
        .await
        .map_err(|_| format!("{}: connection failed or timed out", host_of(&target.url)))?;
    match resp.status_code() {
        200..=299 => Ok(()),
        status => Err(format!("{} answered HTTP {status}", host_of(&target.url))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_match_the_documented_recipe() {
        // HMAC-SHA256("secret", "1789994667.{}"), as `hmac.new(...).hexdigest()` gives.
        assert_eq!(
            signature("secret", 1_789_994_667, "{}"),
            "sha256=4d9e0fb48a264b3b73db818d2d5c911a3d25d843da013a79e03a96cc21423733"
        );
    }

    #[test]
    fn deliveries_retry_with_growing_gaps_then_give_up() {
        let mut d = Delivery::new(Target {
            url: "https://example.com/hook".into(),
            secret: "s".into(),
            origin: "https://px.example".into(),
        });
        assert!(d.is_due(0));
        let mut now = 1_000;
        let mut gaps = Vec::new();
        while !d.done {
            d.attempted(false, now);
            if !d.done {
                gaps.push(d.next_ms - now);
                now = d.next_ms;
            }
        }
        assert_eq!(gaps, [2_000, 8_000, 32_000, 128_000]);
        assert_eq!(d.attempts, MAX_ATTEMPTS);

        let mut ok = Delivery::new(d.target.clone());
        ok.attempted(true, 5);
        assert!(ok.done && !ok.is_due(10));
    }

    #[test]
    fn only_public_https_targets_unless_the_test_stack_allows_loopback() {
        assert!(check_url("https://hooks.example.com/x", false).is_ok());
        for bad in [
            "http://hooks.example.com/x",
            "https://127.0.0.1/x",
            "https://10.0.0.2/x",
            "https://localhost/x",
            "http://127.0.0.1:9000/x",
        ] {
            assert!(check_url(bad, false).is_err(), "{bad}");
        }
        assert!(check_url("http://127.0.0.1:9000/x", true).is_ok());
        assert!(check_url("http://10.0.0.2:9000/x", true).is_err());
    }

    #[test]
    fn the_secret_never_debug_prints() {
        let t = Target {
            url: "https://hooks.example.com/x?token=abc".into(),
            secret: "whsec_123".into(),
            origin: String::new(),
        };
        let shown = format!("{t:?}");
        assert!(
            !shown.contains("whsec_123") && !shown.contains("token=abc"),
            "{shown}"
        );
    }
}
