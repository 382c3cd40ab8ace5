//! Per-provider circuit breaker: one small Durable Object per provider name (state in
//! its storage, not KV, so every isolate sees the same count at once).
//!
//! `BREAKER_FAILURES` (default [`BREAKER_THRESHOLD`]; 0 turns the breaker off)
//! consecutive failures (5xx, time-outs, connection failures at submit) open it for
//! `BREAKER_COOL_DOWN_SECS` (default [`COOL_DOWN_MS`]); when the run that opens it is
//! of answers saying the endpoint is retired (404/410 at submit, BFL's
//! `flux-pro-1.0-depth` since 2025-10-31) it stays open for [`RETIRED_COOL_DOWN_MS`]. While open, the runner skips the provider and fails over
//! to the next one. After the cool-down one job may try again (half-open): a success
//! closes it, a failure reopens it at once. A rate limit (429) or a refusal of one job
//! (400) is not the provider dying and does not count.
//!
//! Internal protocol: `GET /state`, `POST /record` with a [`Record`]. The same object
//! keeps the provider's learned finish times ([`crate::finish_times`]):
//! `GET /finishes/{model}`, `POST /finished`.

use serde::{Deserialize, Serialize};
use worker::{DurableObject, Env, Method, Request, Response, State, durable_object};

use crate::bindings;
use crate::finish_times;
use crate::http;
use crate::providers::UpstreamError;

pub const BREAKER_THRESHOLD: u32 = 5;
pub const COOL_DOWN_MS: u64 = 60_000;
pub const RETIRED_COOL_DOWN_MS: u64 = 3_600_000;
const STATE: &str = "breaker";

/// What one upstream call said about the provider's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Signal {
    Ok,
    Failed,
    Retired,
    /// Says nothing about the provider (a refused job, a rate limit).
    Neutral,
}

impl Signal {
    /// The health signal of a submit's outcome.
    pub fn of(outcome: &Result<(), &UpstreamError>) -> Self {
        match outcome {
            Ok(()) => Self::Ok,
            Err(UpstreamError::Transient { reason, .. }) if reason.contains("HTTP 429") => {
                Self::Neutral
            }
            Err(UpstreamError::Transient { .. }) => Self::Failed,
            // It did not answer in time, or its answer broke off.
            Err(UpstreamError::Ambiguous { .. }) => Self::Failed,
            Err(UpstreamError::Permanent(reason))
                if reason.contains("HTTP 404") || reason.contains("HTTP 410") =>
            {
                Self::Retired
            }
            Err(UpstreamError::Permanent(_)) => Self::Neutral,
            // The upstream is busy starting this very job: it is alive.
            Err(UpstreamError::InProgress { .. }) => Self::Neutral,
        }
    }
}

/// The deployment's breaker settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// Consecutive failures that open it; 0: never.
    pub failures: u32,
    pub cool_down_ms: u64,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            failures: BREAKER_THRESHOLD,
            cool_down_ms: COOL_DOWN_MS,
        }
    }
}

/// One outcome to record, with the policy to apply.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Record {
    pub signal: Signal,
    pub policy: Policy,
}

/// The breaker's state (pure; the Durable Object stores it).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BreakerState {
    pub consecutive_failures: u32,
    /// Open until then (ms since the epoch); 0 = closed.
    pub open_until_ms: u64,
    pub retired: bool,
}

impl BreakerState {
    pub fn allows(&self, now_ms: u64) -> bool {
        now_ms >= self.open_until_ms
    }

    /// `closed`, `open` or `half_open` (cool-down over, next try decides).
    pub fn health(&self, now_ms: u64) -> &'static str {
        if !self.allows(now_ms) {
            "open"
        } else if self.open_until_ms > 0 {
            "half_open"
        } else {
            "closed"
        }
    }

    pub fn record(&mut self, signal: Signal, policy: Policy, now_ms: u64) {
        if policy.failures == 0 {
            *self = Self::default();
            return;
        }
        match signal {
            Signal::Ok => *self = Self::default(),
            Signal::Neutral => {}
            // One 404 can be a load balancer's hiccup or a bad deploy of one node: a
            // retired endpoint is believed only after the usual run of failures, then
            // kept open for the long cool-down.
            Signal::Retired => {
                self.consecutive_failures += 1;
                if self.consecutive_failures >= policy.failures {
                    self.retired = true;
                    self.open_until_ms = now_ms + RETIRED_COOL_DOWN_MS;
                }
            }
            Signal::Failed => {
                self.consecutive_failures += 1;
                if self.consecutive_failures >= policy.failures {
                    self.open_until_ms = now_ms + policy.cool_down_ms;
                }
            }
        }
    }
}

#[durable_object]
pub struct Breaker {
    state: State,
}

impl std::fmt::Debug for Breaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Breaker")
    }
}

fn now_ms() -> u64 {
    worker::Date::now().as_millis()
}

impl DurableObject for Breaker {
    fn new(state: State, env: Env) -> Self {
        crate::meter::init(&env);
        Self { state }
    }

    async fn fetch(&self, mut req: Request) -> worker::Result<Response> {
        let _request = crate::meter::DoRequest::start();
        let storage = self.state.storage();
        let (method, path) = (req.method(), req.path());
        if path.starts_with("/finish") {
            // The body before the read: no await between the read and the write, so
            // two finishes at once cannot both write over the same old store.
            let finished = match (&method, path.as_str()) {
                (Method::Post, "/finished") => Some(req.json::<finish_times::Finished>().await?),
                _ => None,
            };
            crate::meter::count(crate::meter::Op::RowsRead, 1);
            let mut store = storage
                .get::<finish_times::Store>(finish_times::STORE_KEY)
                .await?
                .unwrap_or_default();
            return match (method, path.strip_prefix("/finishes/"), finished) {
                (Method::Get, Some(model), _) => {
                    Ok(http::json(&finish_times::expected(&store, model), 200))
                }
                (Method::Post, None, Some(finished)) => {
                    finish_times::learn(&mut store, &finished.model, finished.window);
                    crate::meter::count(crate::meter::Op::RowsWritten, 1);
                    storage.put(finish_times::STORE_KEY, &store).await?;
                    Ok(http::json(&"learned", 200))
                }
                _ => Ok(http::json(&"unknown breaker route", 404)),
            };
        }
        crate::meter::count(crate::meter::Op::RowsRead, 1);
        let mut state = storage
            .get::<BreakerState>(STATE)
            .await?
            .unwrap_or_default();
        match (method, path.as_str()) {
            (Method::Get, "/state") => Ok(http::json(&state, 200)),
            (Method::Post, "/record") => {
                let record: Record = req.json().await?;
                let before = state.clone();
                state.record(record.signal, record.policy, now_ms());
                if state != before {
                    crate::meter::count(crate::meter::Op::RowsWritten, 1);
                    storage.put(STATE, &state).await?;
                }
                Ok(http::json(&state, 200))
            }
            _ => Ok(http::json(&"unknown breaker route", 404)),
        }
    }
}

async fn call(env: &Env, provider: &str, record: Option<Record>) -> worker::Result<BreakerState> {
    let stub = env
        .durable_object(bindings::BREAKER)?
        .id_from_name(provider)?
        .get_stub()?;
    let mut init = worker::RequestInit::new();
    let url = match record {
        Some(s) => {
            init.with_method(Method::Post)
                .with_body(Some(serde_json::to_string(&s)?.into()));
            "https://breaker/record"
        }
        None => "https://breaker/state",
    };
    let mut resp = stub
        .fetch_with_request(Request::new_with_init(url, &init)?)
        .await?;
    resp.json::<BreakerState>().await
}

/// Whether `provider` may be tried now. A breaker that cannot be reached allows (the
/// breaker only ever saves work; it must not stop traffic by itself failing).
pub async fn allow(env: &Env, provider: &str) -> bool {
    match call(env, provider, None).await {
        Ok(state) => state.allows(now_ms()),
        Err(e) => {
            worker::console_warn!("breaker {provider}: {e}");
            true
        }
    }
}

/// Records what a call to `provider` said about its health (best effort).
pub async fn record(env: &Env, provider: &str, signal: Signal, policy: Policy) {
    if signal == Signal::Neutral || policy.failures == 0 {
        return;
    }
    if let Err(e) = call(env, provider, Some(Record { signal, policy })).await {
        worker::console_warn!("breaker {provider}: {e}");
    }
}

/// `closed`, `open`, `half_open` or `unknown`, for `/healthz`.
pub async fn health(env: &Env, provider: &str) -> &'static str {
    match call(env, provider, None).await {
        Ok(state) => state.health(now_ms()),
        Err(_) => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: Policy = Policy {
        failures: BREAKER_THRESHOLD,
        cool_down_ms: COOL_DOWN_MS,
    };

    #[test]
    fn zero_failures_turns_it_off() {
        let off = Policy {
            failures: 0,
            cool_down_ms: 1,
        };
        let mut b = BreakerState::default();
        for _ in 0..20 {
            b.record(Signal::Failed, off, 0);
        }
        b.record(Signal::Retired, off, 0);
        assert!(b.allows(0));
    }

    #[test]
    fn consecutive_failures_open_it_for_a_cool_down_then_one_try_decides() {
        let mut b = BreakerState::default();
        for _ in 0..BREAKER_THRESHOLD - 1 {
            b.record(Signal::Failed, P, 1_000);
        }
        assert!(b.allows(1_000));
        assert_eq!(b.health(1_000), "closed");
        b.record(Signal::Failed, P, 1_000);
        assert!(!b.allows(1_000 + COOL_DOWN_MS - 1));
        assert_eq!(b.health(1_000), "open");
        assert!(b.allows(1_000 + COOL_DOWN_MS));
        assert_eq!(b.health(1_000 + COOL_DOWN_MS), "half_open");
        // The trial fails: open again at once.
        b.record(Signal::Failed, P, 2_000 + COOL_DOWN_MS);
        assert!(!b.allows(2_000 + COOL_DOWN_MS));
        // A success closes it.
        b.record(Signal::Ok, P, 3_000 + 2 * COOL_DOWN_MS);
        assert_eq!(b, BreakerState::default());
    }

    #[test]
    fn a_success_in_between_resets_the_count_and_neutral_answers_do_nothing() {
        let mut b = BreakerState::default();
        for _ in 0..10 {
            b.record(Signal::Failed, P, 0);
            b.record(Signal::Neutral, P, 0);
            b.record(Signal::Failed, P, 0);
            b.record(Signal::Ok, P, 0);
        }
        assert!(b.allows(0));
    }

    #[test]
    fn a_retired_endpoint_opens_it_for_an_hour() {
        let mut b = BreakerState::default();
        for _ in 0..BREAKER_THRESHOLD - 1 {
            b.record(Signal::Retired, P, 0);
        }
        // One stray 404 (or a few) does not take a provider out for an hour.
        assert!(b.allows(0));
        b.record(Signal::Retired, P, 0);
        assert!(!b.allows(RETIRED_COOL_DOWN_MS - 1));
        assert!(b.retired);
    }

    #[test]
    fn signals_from_upstream_errors() {
        let e = |s, r| UpstreamError::from_status("x", s, r, "");
        assert_eq!(Signal::of(&Err(&e(503, None))), Signal::Failed);
        assert_eq!(Signal::of(&Err(&e(429, Some(1)))), Signal::Neutral);
        assert_eq!(Signal::of(&Err(&e(410, None))), Signal::Retired);
        assert_eq!(Signal::of(&Err(&e(404, None))), Signal::Retired);
        assert_eq!(Signal::of(&Err(&e(400, None))), Signal::Neutral);
        assert_eq!(
            Signal::of(&Err(&UpstreamError::Transient {
                reason: "x could not be reached".into(),
                retry_after: None
            })),
            Signal::Failed
        );
        assert_eq!(Signal::of(&Ok(())), Signal::Ok);
    }
}
