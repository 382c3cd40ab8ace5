//! `cargo xtask keys create --credits N [--name NAME] [--submits-per-minute N] [--production]`
//! `cargo xtask keys grant --key KEY --credits N [--production]`
//!
//! Issues API keys: the key is printed once and only its SHA-256 is stored, in the
//! `JOBS` KV namespace under `apikey:<sha256>`, with the credit grants the account's
//! ledger applies (each grant once). Local by default (`.wrangler/state`, what
//! `cargo xtask dev` uses); `--production` writes the deployed namespace.

use std::fs;
use std::io::Read;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use crate::cmd::{Result, command, exec, node_bin, output, root};

/// Where a key record is written.
#[derive(Debug, Clone)]
pub enum Target<'a> {
    Local(&'a Path),
    Production,
}

fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

pub fn run(args: &[String]) -> Result {
    let local = root().join(".wrangler/state");
    let target = if args.iter().any(|a| a == "--production") {
        Target::Production
    } else {
        Target::Local(&local)
    };
    let credits: u64 = flag(args, "--credits")
        .ok_or("--credits N is required")?
        .parse()
        .map_err(|_| "--credits must be a whole number")?;
    match args.first().map(String::as_str) {
        Some("create") => {
            let per_minute = flag(args, "--submits-per-minute")
                .map(|v| {
                    v.parse::<u32>()
                        .map_err(|_| "--submits-per-minute must be a number")
                })
                .transpose()?;
            let key = create(
                &target,
                flag(args, "--name").unwrap_or("api key"),
                credits,
                per_minute,
            )?;
            println!("\n  API key (shown once; only its hash is stored):\n\n  {key}\n");
            Ok(())
        }
        Some("grant") => {
            let key = flag(args, "--key").ok_or("--key KEY is required")?;
            grant(&target, key, credits)?;
            println!("granted {credits} credits");
            Ok(())
        }
        _ => Err("usage: cargo xtask keys <create|grant> --credits N …".into()),
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn random_hex(bytes: usize) -> Result<String> {
    let mut buf = vec![0u8; bytes];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .map_err(|e| format!("reading /dev/urandom: {e}"))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// Lowercase hex SHA-256, as the edge computes it (`accounts::key_hash`).
pub fn key_hash(key: &str) -> String {
    Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn grant_json(credits: u64) -> Result<String> {
    Ok(format!(
        r#"{{"id":"g-{}-{}","credits":{credits}}}"#,
        now_secs(),
        random_hex(4)?
    ))
}

fn wrangler_kv(target: &Target<'_>, args: &[&str]) -> std::process::Command {
    let mut c = command(&node_bin().join("wrangler").display().to_string());
    c.args(["kv", "key"]).args(args).args(["--binding", "JOBS"]);
    with_target(&mut c, target);
    c
}

fn with_target(c: &mut std::process::Command, target: &Target<'_>) {
    match target {
        Target::Local(dir) => {
            c.arg("--local").arg("--persist-to").arg(dir);
        }
        Target::Production => {
            c.args(["--remote", "--env", "production"]);
        }
    }
}

/// A new key's record: (the key, its KV key, its KV value).
fn record(
    name: &str,
    credits: u64,
    submits_per_minute: Option<u32>,
) -> Result<(String, String, String)> {
    let key = format!("px_{}", random_hex(20)?);
    let limit =
        submits_per_minute.map_or(String::new(), |n| format!(r#","submits_per_minute":{n}"#));
    let name = name.replace(['"', '\\'], "");
    let record = format!(
        r#"{{"name":"{name}","created_at":{},"grants":[{}]{limit}}}"#,
        now_secs(),
        grant_json(credits)?
    );
    let kv_key = format!("apikey:{}", key_hash(&key));
    Ok((key, kv_key, record))
}

/// Creates a key with `credits` and returns it.
pub fn create(
    target: &Target<'_>,
    name: &str,
    credits: u64,
    submits_per_minute: Option<u32>,
) -> Result<String> {
    let (key, kv_key, record) = record(name, credits, submits_per_minute)?;
    exec(&mut wrangler_kv(target, &["put", &kv_key, &record]))?;
    Ok(key)
}

/// Creates one key per `(name, credits, submits per minute)` in a single `wrangler kv
/// bulk put` (one wrangler start instead of one per key) and returns them in order.
pub fn create_many(target: &Target<'_>, specs: &[(&str, u64, Option<u32>)]) -> Result<Vec<String>> {
    let mut keys = Vec::new();
    let mut pairs = Vec::new();
    for &(name, credits, per_minute) in specs {
        let (key, kv_key, record) = record(name, credits, per_minute)?;
        keys.push(key);
        pairs.push(serde_json::json!({"key": kv_key, "value": record}));
    }
    let file = std::env::temp_dir().join(format!(
        "parallax-keys-{}-{}.json",
        std::process::id(),
        random_hex(4)?
    ));
    fs::write(&file, serde_json::Value::Array(pairs).to_string())
        .map_err(|e| format!("writing {}: {e}", file.display()))?;
    let mut c = command(&node_bin().join("wrangler").display().to_string());
    c.args(["kv", "bulk", "put"])
        .arg(&file)
        .args(["--binding", "JOBS"]);
    with_target(&mut c, target);
    let written = exec(&mut c);
    // The file holds key hashes only, but it is not needed once written.
    let _ = fs::remove_file(&file);
    written?;
    Ok(keys)
}

/// Adds a grant of `credits` to an existing key.
pub fn grant(target: &Target<'_>, key: &str, credits: u64) -> Result {
    let kv_key = format!("apikey:{}", key_hash(key));
    let current = output(&mut wrangler_kv(target, &["get", &kv_key, "--text"]))
        .filter(|t| t.trim_start().starts_with('{'))
        .ok_or("no such key")?;
    let current = current.trim();
    let grants_at = current
        .find(r#""grants":["#)
        .ok_or("key record has no grants list")?
        + 10;
    let record = format!(
        "{}{},{}",
        &current[..grants_at],
        grant_json(credits)?,
        &current[grants_at..]
    );
    exec(&mut wrangler_kv(target, &["put", &kv_key, &record]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_match_the_edges() {
        assert_eq!(
            key_hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
