//! Pinned tool versions, in one place. wasm-bindgen's version is not pinned here: it
//! must equal the `wasm-bindgen` crate in Cargo.lock. `Trunk.toml`'s `[tools]` names
//! the wasm-bindgen and wasm-opt trunk may use; [`check_trunk_toml`] holds it to these.

use std::fs;

use crate::cmd::{Result, root};

pub const WORKER_BUILD: &str = "0.8.7";
/// Builds the playground (`Trunk.toml`). 0.22 needs a newer rustc than ours.
pub const TRUNK: &str = "0.21.14";
/// wasm-opt as trunk names its version: binaryen's, from npm (`package.json`).
pub const WASM_OPT: &str = "version_132";
pub const WASM32: &str = "wasm32-unknown-unknown";

/// The `wasm-bindgen` version locked in Cargo.lock.
pub fn wasm_bindgen_version() -> Result<String> {
    let lock = fs::read_to_string(root().join("Cargo.lock"))
        .map_err(|e| format!("reading Cargo.lock: {e}"))?;
    locked_version(&lock, "wasm-bindgen").ok_or_else(|| "wasm-bindgen is not in Cargo.lock".into())
}

/// The version of `package` in a Cargo.lock text.
pub fn locked_version(lock: &str, package: &str) -> Option<String> {
    let needle = format!("name = \"{package}\"\nversion = \"");
    let start = lock.find(&needle)? + needle.len();
    let end = lock[start..].find('"')? + start;
    Some(lock[start..end].to_owned())
}

/// Whether `Trunk.toml`'s `[tools]` asks for exactly the wasm-bindgen in Cargo.lock
/// and [`WASM_OPT`]: trunk uses a tool from PATH only at the version it is told, and
/// offline it cannot download another.
pub fn check_trunk_toml() -> Result {
    let text = fs::read_to_string(root().join("Trunk.toml"))
        .map_err(|e| format!("reading Trunk.toml: {e}"))?;
    trunk_tools_agree(&text, &wasm_bindgen_version()?)
}

fn trunk_tools_agree(trunk_toml: &str, wasm_bindgen: &str) -> Result {
    for (tool, want) in [("wasm_bindgen", wasm_bindgen), ("wasm_opt", WASM_OPT)] {
        let line = format!("{tool} = \"{want}\"");
        if !trunk_toml.lines().any(|l| l.trim() == line) {
            return Err(format!(
                "Trunk.toml's [tools] must say `{line}` (Cargo.lock and xtask/src/tools.rs)"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trunk_toml_is_held_to_the_pinned_tools() {
        let toml = "[tools]\nwasm_bindgen = \"0.2.130\"\nwasm_opt = \"version_132\"\n";
        assert!(trunk_tools_agree(toml, "0.2.130").is_ok());
        assert!(trunk_tools_agree(toml, "0.2.131").is_err());
        assert!(trunk_tools_agree("[tools]\nwasm_bindgen = \"0.2.130\"\n", "0.2.130").is_err());
    }

    #[test]
    fn the_committed_trunk_toml_agrees() {
        check_trunk_toml().unwrap();
    }

    #[test]
    fn locked_versions_are_read_from_cargo_lock_text() {
        let lock = "[[package]]\nname = \"wasm-bindgen\"\nversion = \"0.2.130\"\nsource = \"x\"\n\n[[package]]\nname = \"wasm-bindgen-futures\"\nversion = \"0.4.1\"\n";
        assert_eq!(
            locked_version(lock, "wasm-bindgen").as_deref(),
            Some("0.2.130")
        );
        assert_eq!(
            locked_version(lock, "wasm-bindgen-futures").as_deref(),
            Some("0.4.1")
        );
        assert_eq!(locked_version(lock, "worker-build"), None);
    }
}
