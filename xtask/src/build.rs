//! Builds the SPA into `dist/` and the Worker into `edge/build/`, with the local
//! wasm-bindgen, wasm-opt and esbuild (nothing is downloaded).

use crate::cmd::{Result, cargo_bin, command, exec, node_bin, root};

pub fn all() -> Result {
    spa()?;
    worker()
}

pub fn spa() -> Result {
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
