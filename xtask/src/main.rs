//! Project automation. `cargo xtask <command>`:
//!
//! - `setup`: install what is missing (wasm32 target, worker-build,
//!   wasm-bindgen-cli, trunk, npm packages, Chromium with `--browser`), skipping what
//!   is already there at the pinned version.
//! - `build`: the SPA (trunk, `Trunk.toml`) into `dist/` and the Worker (worker-build).
//! - `dev`: setup + build, then `sim` and `wrangler dev` on http://127.0.0.1:8787.
//! - `bench`: setup + build, then measures the gateway's overhead, polling cost, the
//!   playground's weight and the Worker's size against their targets (`bench.rs`).
//! - `keys create --credits N`: issue an API key (see `keys.rs`).
//! - `comfyui-check --url http://gpu-box:8188 [--key KEY]`: whether a ComfyUI server
//!   has every node and model file the workflow needs, and what to install where.
//! - `test`: setup + fmt, clippy (host and wasm32), native tests, then the HTTP and
//!   browser tests against the built Worker in `wrangler dev` with `sim`, and a
//!   `wrangler deploy --dry-run` of the production bundle.

mod bench;
mod build;
mod cmd;
mod comfyui_check;
mod dev;
mod keys;
#[cfg(test)]
mod rooms;
mod setup;
mod stack;
mod test;
mod tools;

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("setup") => setup::run(args.iter().any(|a| a == "--browser")),
        Some("build") => setup::run(false).and_then(|()| build::all()),
        Some("dev") => dev::run(),
        Some("test") => test::run(),
        Some("bench") => bench::run(args.get(1).map(String::as_str)),
        Some("comfyui-check") => comfyui_check::run(&args[1..]),
        Some("keys") => setup::run(false).and_then(|()| keys::run(&args[1..])),
        _ => {
            eprintln!(
                "usage: cargo xtask <setup [--browser] | build | dev | test | bench [gateway | polling | playground | worker | ledger] | keys create --credits N | comfyui-check --url URL [--key KEY]>"
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("\nxtask: {e}");
            ExitCode::FAILURE
        }
    }
}
