//! Installs what is missing and skips what is already there at the pinned version.
//! Installing the cargo tools from source takes ~20 minutes on two cores, so the
//! version checks matter.

use std::fs;
use std::path::Path;

use crate::cmd::{Result, command, exec, output, root};
use crate::tools;

pub fn run(browser: bool) -> Result {
    ensure_target()?;
    let wasm_bindgen = tools::wasm_bindgen_version()?;
    ensure_cargo_tool("worker-build", "worker-build", tools::WORKER_BUILD)?;
    ensure_cargo_tool("wasm-bindgen", "wasm-bindgen-cli", &wasm_bindgen)?;
    ensure_cargo_tool("trunk", "trunk", tools::TRUNK)?;
    ensure_npm()?;
    if browser {
        ensure_chromium()?;
        // The compatibility tests run the APIs' documented curl examples as written.
        ensure_apt("curl", "/usr/bin/curl")?;
        ensure_python()?;
    }
    Ok(())
}

/// The Python virtualenv for the client tests (Segmind SDK, requests, pytest,
/// schemathesis), at `target/py`, from the pinned `e2e/python/requirements.txt`.
pub fn ensure_python() -> Result {
    let root = root();
    let reqs = fs::read(root.join("e2e/python/requirements.txt"))
        .map_err(|e| format!("reading requirements.txt: {e}"))?;
    let venv = root.join("target/py");
    let stamp = venv.join(".parallax-requirements.txt");
    if fs::read(&stamp).is_ok_and(|s| s == reqs) && venv.join("bin/pytest").exists() {
        println!("✓ python test tools");
        return Ok(());
    }
    exec(command("python3").args(["-m", "venv"]).arg(&venv))?;
    exec(command(&venv.join("bin/pip").display().to_string()).args([
        "install",
        "--quiet",
        "-r",
        "e2e/python/requirements.txt",
    ]))?;
    fs::write(&stamp, reqs).map_err(|e| format!("writing {}: {e}", stamp.display()))
}

fn ensure_target() -> Result {
    let installed =
        output(command("rustup").args(["target", "list", "--installed"])).unwrap_or_default();
    if installed.lines().any(|l| l.trim() == tools::WASM32) {
        return Ok(());
    }
    exec(command("rustup").args(["target", "add", tools::WASM32]))
}

/// Whether `bin --version` prints exactly `version` as one of its words.
pub fn has_version(version_output: &str, version: &str) -> bool {
    version_output
        .split_whitespace()
        .any(|w| w.trim_start_matches('v') == version)
}

fn ensure_cargo_tool(bin: &str, krate: &str, version: &str) -> Result {
    if output(command(bin).arg("--version")).is_some_and(|out| has_version(&out, version)) {
        println!("✓ {bin} {version}");
        return Ok(());
    }
    println!("installing {krate} {version} from crates.io (this takes a while)…");
    let locked = exec(command("cargo").args(["install", "--locked", krate, "--version", version]));
    match locked {
        Ok(()) => Ok(()),
        // A yanked or missing locked dependency: retry resolving fresh.
        Err(_) => exec(command("cargo").args(["install", krate, "--version", version])),
    }
}

/// `npm ci` when node_modules does not match package-lock.json.
fn ensure_npm() -> Result {
    let root = root();
    let lock = fs::read(root.join("package-lock.json"))
        .map_err(|e| format!("reading package-lock.json: {e}"))?;
    let stamp = root
        .join("node_modules")
        .join(".parallax-package-lock.json");
    if fs::read(&stamp).is_ok_and(|s| s == lock) && root.join("node_modules/.bin/wrangler").exists()
    {
        println!("✓ npm packages");
        return Ok(());
    }
    exec(command("npm").args(["ci", "--no-audit", "--no-fund"]))?;
    fs::write(&stamp, lock).map_err(|e| format!("writing {}: {e}", stamp.display()))
}

fn ensure_chromium() -> Result {
    ensure_apt("chromium", "/usr/bin/chromium")
}

/// Installs a Debian package unless `binary` is already there.
pub fn ensure_apt(package: &str, binary: &str) -> Result {
    if Path::new(binary).exists() {
        println!("✓ {package}");
        return Ok(());
    }
    exec(command("apt-get").arg("update"))?;
    exec(command("apt-get").args(["install", "-y", "--no-install-recommends", package]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_matched_as_whole_words() {
        assert!(has_version("worker-build 0.8.7\n", "0.8.7"));
        assert!(has_version("0.8.7\n", "0.8.7"));
        assert!(has_version("wasm-bindgen 0.2.130", "0.2.130"));
        assert!(!has_version("wasm-bindgen 0.2.1301", "0.2.130"));
        assert!(!has_version("worker-build 0.8.70", "0.8.7"));
    }
}
