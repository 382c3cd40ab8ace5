//! Builds the SPA into `dist/` with trunk (`Trunk.toml`) and the Worker into
//! `edge/build/` with worker-build, each with the local wasm-bindgen, wasm-opt and
//! esbuild (nothing is downloaded).

use crate::cmd::{Result, cargo_bin, command, exec, node_bin, root};
use crate::tools;

pub fn all() -> Result {
    spa()?;
    worker()
}

/// `trunk build --release --offline`: cargo, wasm-bindgen, wasm-opt (the level is
/// `app/index.html`'s `data-wasm-opt`), the stylesheet and `public/`, named by their
/// content hash, into `dist/`. Trunk takes wasm-bindgen and wasm-opt from PATH
/// (cargo's bin, `node_modules/.bin`) at the versions `Trunk.toml` names.
pub fn spa() -> Result {
    tools::check_trunk_toml()?;
    exec(command("trunk").args(["build", "--release", "--offline"]))
}

pub fn worker() -> Result {
    exec(
        command("worker-build")
            .arg("--release")
            .current_dir(root().join("edge"))
            .env("WASM_BINDGEN_BIN", cargo_bin().join("wasm-bindgen"))
            .env("ESBUILD_BIN", node_bin().join("esbuild"))
            .env("WASM_OPT_BIN", node_bin().join("wasm-opt")),
    )
}
