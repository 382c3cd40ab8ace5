//! `parallax-sim`: stands in for the upstream providers' servers on loopback, speaking
//! their documented wire protocols, so development and tests run the edge's real
//! adapters without internet. Never deployed.
//!
//! Each protocol lives under its own prefix, as if on its own host.
//!
//! `/debug/submissions` and `/debug/requests` count what the edge asked, per prompt;
//! `/debug/jobs` lists the sim's jobs (with `finished_ms`); `/debug/controls` how control
//! images arrived; `/debug/gates` holds calls (see `gates`); `/debug/hooks` lists the
//! callbacks delivered (see `hooks`); `/debug/elsewhere` what reached the other origin
//! a `[sim:redirect]` poll is sent to (see `elsewhere`).
//!
//! Usage: `parallax-sim [--port 8790] [--queue-ms 400] [--process-ms 1800] [--expiry-s 3600]
//! [--render-ahead]` (`--render-ahead`: outputs are rendered while a job runs, so the
//! first look after its end does not wait for them; for benchmarks of detection delay).

// Handlers pass ready-made error responses around; boxing them buys nothing here.
#![allow(clippy::result_large_err)]

mod bfl;
mod comfyui;
mod common;
mod debug;
mod elsewhere;
mod fal;
mod faults;
mod gates;
mod hooks;
mod jobs;
mod replicate;
mod segmind;
mod state;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::routing::{get, post};
use jobs::{Jobs, Timing};

#[derive(Debug)]
struct Args {
    port: u16,
    timing: Timing,
    render_ahead: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        port: 8790,
        timing: Timing {
            queue: Duration::from_millis(400),
            process: Duration::from_millis(1800),
            expiry: Duration::from_secs(3600),
        },
        render_ahead: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .ok_or_else(|| format!("{flag} needs a value"))
                .and_then(|v| v.parse::<u64>().map_err(|e| format!("{flag}: {e}")))
        };
        match flag.as_str() {
            "--port" => args.port = u16::try_from(value()?).map_err(|e| e.to_string())?,
            "--queue-ms" => args.timing.queue = Duration::from_millis(value()?),
            "--process-ms" => args.timing.process = Duration::from_millis(value()?),
            "--expiry-s" => args.timing.expiry = Duration::from_secs(value()?),
            "--render-ahead" => args.render_ahead = true,
            "-h" | "--help" => {
                println!(
                    "parallax-sim [--port 8790] [--queue-ms 400] [--process-ms 1800] [--expiry-s 3600] [--render-ahead]"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(args)
}

#[tokio::main]
async fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("parallax-sim: {e}");
            std::process::exit(2);
        }
    };
    // Loopback only: this server exists for local development and tests.
    let addr = SocketAddr::from(([127, 0, 0, 1], args.port));
    let base = format!("http://{addr}");
    let mut sim = state::Sim::new(Jobs::new(args.timing), base.clone());
    sim.render_ahead = args.render_ahead;
    let sim = Arc::new(sim);
    if let Err(e) = elsewhere::start(sim.elsewhere.clone()).await {
        eprintln!("parallax-sim: {e}");
        std::process::exit(1);
    }
    let comfy = comfyui::Comfy::new(sim.clone());
    let app = axum::Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/outputs/{id}/{file}", get(common::output))
        .route("/debug/submissions", get(debug::submissions))
        .route("/debug/requests", get(debug::requests))
        .route("/debug/jobs", get(debug::jobs))
        .route("/debug/controls", get(debug::controls))
        .route(
            "/debug/hooks",
            get(hooks::log).with_state(sim.hooks.clone()),
        )
        .route(
            "/debug/elsewhere",
            get(elsewhere::log).with_state(sim.elsewhere.clone()),
        )
        .route(
            "/debug/gates",
            post(gates::create).with_state(sim.gates.clone()),
        )
        .route(
            "/debug/gates/{id}/wait",
            get(gates::wait).with_state(sim.gates.clone()),
        )
        .route(
            "/debug/gates/{id}/open",
            post(gates::open).with_state(sim.gates.clone()),
        )
        .nest("/segmind", segmind::router("segmind"))
        .nest("/parallax", segmind::router("parallax"))
        .nest("/replicate", replicate::router())
        .nest("/comfyui", comfyui::router(false).with_state(comfy.clone()))
        .nest("/comfyui-proxy", comfyui::router(true).with_state(comfy))
        .nest("/bfl", bfl::router())
        .nest("/fal", fal::router())
        .layer(axum::middleware::from_fn_with_state(
            sim.clone(),
            debug::count_requests,
        ))
        .with_state(sim)
        // Generous: base64 control images of a few MB.
        .layer(axum::extract::DefaultBodyLimit::max(40 * 1024 * 1024));
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("parallax-sim: cannot listen on {addr}: {e}");
            std::process::exit(1);
        }
    };
    println!(
        "parallax-sim on {base}: /segmind and /parallax (Segmind v2), /replicate, /comfyui (and /comfyui-proxy, keyed), /bfl, /fal"
    );
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
    {
        eprintln!("parallax-sim: {e}");
        std::process::exit(1);
    }
}
