//! parallax-edge: the Cloudflare Worker. It keeps provider keys secret, speaks the
//! Segmind-compatible API, runs every job in a [`runner::JobRunner`] Durable Object
//! that submits to and polls an upstream, copies results into R2 before it reports
//! COMPLETED, and serves the playground's static files.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod accounts;
pub mod asset_refs;
pub mod bindings;
pub mod compat;
pub mod config;
pub mod control_link;
pub mod error;
pub mod fallback;
pub mod finish_times;
pub mod handlers;
pub mod holds;
pub mod hooks;
pub mod http;
pub mod input;
pub mod media_limit;
pub mod meter;
pub mod objects;
pub mod preview_cache;
pub mod providers;
pub mod refusal_log;
pub mod router;
pub mod secret;
pub mod security;
pub mod storage;
pub mod waiters;
pub mod webhook;

pub use objects::ledger::Ledger;
pub use objects::runner::JobRunner;

#[worker::event(start)]
fn start() {
    console_error_panic_hook::set_once();
}

#[worker::event(fetch)]
async fn fetch(
    req: worker::Request,
    env: worker::Env,
    _ctx: worker::Context,
) -> worker::Result<worker::Response> {
    meter::init(&env);
    meter::count(meter::Op::WorkerRequest, 1);
    router::handle(req, env).await
}
