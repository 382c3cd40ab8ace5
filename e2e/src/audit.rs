//! The audit of issue 15: global invariants checked after a run (load, crash, chaos)
//! through the API, sim's debug view and the local R2 store of `wrangler dev`:
//!
//! 1. each account's balance = its grants − charges + refunds (charges and refunds as
//!    every job's `metrics.credits` reports them, and for a job that is gone as its
//!    charge row in the Ledger says), and no refund exceeds its charge;
//! 2. every job is terminal or inside its deadline;
//! 3. every R2 object (`inputs/{id}`, `results/{id}/…`) belongs to a live job's record,
//!    and every output object is one that record lists;
//! 4. an `Idempotency-Key` replays to a job that exists;
//! 5. no sim job still runs for a finished job on a provider that can cancel.
//!
//! It returns the violations (a run is good when there are none) so the caller prints
//! its figures with them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::{balance_of, base, client, get, sim_jobs};

/// What the run knows about one job it submitted.
#[derive(Debug, Clone, Default)]
pub struct Tracked {
    pub id: String,
    pub prompt: String,
    /// Credits as last seen (`charged`, `refunded`); kept for jobs that are then
    /// deleted or expire.
    pub charged: u64,
    pub refunded: u64,
    /// Deleted on purpose by the run.
    pub deleted: bool,
    /// The submit's `Idempotency-Key`, with the request to replay it.
    pub idempotency: Option<String>,
}

/// One account's part of a run.
#[derive(Debug, Clone)]
pub struct Account {
    pub key: String,
    /// Its balance before the run.
    pub before: u64,
    pub jobs: Vec<Tracked>,
}

/// Providers whose protocol can stop a job (a finished Parallax job must leave none
/// running there).
const CANCELABLE: [&str; 2] = ["replicate", "parallax"];

/// Re-reads a job's credits while it exists; `None` once gone (deleted or expired).
fn refresh(t: &mut Tracked) -> Option<Value> {
    let a = get(&format!("{}/v2/requests/{}", base(), t.id));
    if a.status == 404 {
        return None;
    }
    let body = a.json();
    let c = &body["metrics"]["credits"];
    t.charged = c["charged"].as_u64().unwrap_or(t.charged);
    t.refunded = c["refunded"].as_u64().unwrap_or(t.refunded);
    Some(body)
}

/// R2 keys in the local store of `wrangler dev --persist-to <state>` (miniflare keeps
/// each bucket's index in SQLite, table `_mf_objects`).
pub fn r2_keys(state: &Path) -> Vec<String> {
    let mut files = Vec::new();
    collect_sqlite(&state.join("v3/r2"), &mut files);
    let mut keys = Vec::new();
    for f in files {
        let out = Command::new("sqlite3")
            .arg(&f)
            .arg("SELECT key FROM _mf_objects")
            .output()
            .expect("sqlite3 (the audit reads the local R2 index)");
        keys.extend(
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(str::to_owned),
        );
    }
    keys
}

fn collect_sqlite(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            collect_sqlite(&p, out);
        } else if p.extension().is_some_and(|x| x == "sqlite") {
            out.push(p);
        }
    }
}

/// Runs every check; `state` is the stack's persist directory. Waits (bounded) for
/// effects still in flight — refunds and upstream cancels are retried from alarms.
pub fn run(accounts: &mut [Account], state: Option<&Path>) -> Vec<String> {
    let mut violations = Vec::new();
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    };
    // 2: terminal or inside the deadline (the test stack's JOB_DEADLINE_SECS is 30,
    // plus the last poll).
    let mut live: HashMap<String, Value> = HashMap::new();
    for acc in accounts.iter_mut() {
        for t in &mut acc.jobs {
            if let Some(body) = refresh(t) {
                let status = body["status"].as_str().unwrap_or("").to_owned();
                let created = body["created_at"].as_u64().unwrap_or(0);
                if !matches!(status.as_str(), "COMPLETED" | "FAILED") && now() > created + 60 {
                    violations.push(format!("{} still {status} past its deadline", t.id));
                }
                if t.deleted {
                    violations.push(format!("{} was deleted but still answers", t.id));
                }
                live.insert(t.id.clone(), body);
            }
        }
    }
    // 1: balances, once refunds in flight have landed.
    for acc in accounts.iter_mut() {
        let mut last = (0, 0);
        let settled = (0..40).any(|_| {
            for t in &mut acc.jobs {
                if refresh(t).is_none()
                    && let Some((charged, refunded)) = crate::ledger_charge(&acc.key, &t.id)
                {
                    // Gone (deleted, or purged past retention): the Ledger's own row
                    // says what it was charged and refunded, including a refund
                    // decided after the delete answered.
                    t.charged = charged;
                    t.refunded = refunded;
                }
            }
            let charged: u64 = acc.jobs.iter().map(|t| t.charged).sum();
            let refunded: u64 = acc.jobs.iter().map(|t| t.refunded).sum();
            let expected = acc.before - charged + refunded;
            let balance = balance_of(&acc.key);
            last = (balance, expected);
            if balance == expected {
                return true;
            }
            std::thread::sleep(Duration::from_millis(500));
            false
        });
        if !settled {
            violations.push(format!(
                "balance {} but grants − charges + refunds = {}",
                last.0, last.1
            ));
        }
        for t in acc.jobs.iter().filter(|t| t.refunded > t.charged) {
            violations.push(format!(
                "{} refunded {} of a charge of {}",
                t.id, t.refunded, t.charged
            ));
        }
    }
    // 3: R2 objects belong to live records. A purge runs from the alarm at expiry, so
    // an orphan counts only if it is still there after a few seconds.
    if let Some(state) = state {
        let mut orphans = orphans(state, &live);
        for _ in 0..20 {
            if orphans.is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(500));
            orphans = orphans_of(state, &live, Some(&orphans));
        }
        violations.extend(orphans);
    }
    // 4: idempotency keys replay to jobs that exist.
    for acc in accounts.iter() {
        for t in acc.jobs.iter().filter(|t| !t.deleted) {
            if let Some(k) = &t.idempotency
                && live.contains_key(&t.id)
            {
                let replay = crate::send_repeatable(|| {
                    client()
                        .post(format!("{}/v2/flux-depth-pro", base()))
                        .header("x-api-key", &acc.key)
                        .header("idempotency-key", k)
                        .multipart(
                            reqwest::blocking::multipart::Form::new()
                                .text("prompt", t.prompt.clone())
                                .part(
                                    "control_image",
                                    reqwest::blocking::multipart::Part::bytes(crate::sample(
                                        "rocket.jpg",
                                    ))
                                    .file_name("r.jpg"),
                                ),
                        )
                });
                if replay.json()["request_id"] != t.id.as_str() {
                    violations.push(format!(
                        "Idempotency-Key {k} replays to {} instead of {}",
                        replay.text, t.id
                    ));
                }
            }
        }
    }
    // 5: nothing left running upstream for a finished job where it can be stopped.
    let finished: HashMap<String, (String, String)> = accounts
        .iter()
        .flat_map(|a| a.jobs.iter())
        .filter_map(|t| {
            let body = live.get(&t.id)?;
            let provider = body["metrics"]["provider"].as_str()?.to_owned();
            (body["status"] == "FAILED").then(|| (t.prompt.clone(), (t.id.clone(), provider)))
        })
        .collect();
    let stopped = (0..100).any(|_| {
        let running: Vec<String> = sim_jobs()
            .iter()
            .filter(|j| matches!(j["phase"].as_str(), Some("queued" | "processing")))
            .filter_map(|j| {
                let (id, provider) = finished.get(j["prompt"].as_str()?)?;
                CANCELABLE
                    .contains(&provider.as_str())
                    .then(|| format!("{id} ({provider})"))
            })
            .collect();
        if running.is_empty() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(300));
        false
    });
    if !stopped {
        violations.push("a finished job still runs upstream where it can be stopped".into());
    }
    violations
}

fn orphans(state: &Path, live: &HashMap<String, Value>) -> Vec<String> {
    orphans_of(state, live, None)
}

/// R2 objects no live record owns (among `only`, if given), as violation lines.
fn orphans_of(state: &Path, live: &HashMap<String, Value>, only: Option<&[String]>) -> Vec<String> {
    let mut out = Vec::new();
    for key in r2_keys(state) {
        if only.is_some_and(|o| !o.iter().any(|v| v.starts_with(&format!("R2 {key}:")))) {
            continue;
        }
        let mut parts = key.split('/');
        let (kind, id, file) = (parts.next(), parts.next(), parts.next());
        let Some(id) = id else { continue };
        if kind != Some("inputs") && kind != Some("results") {
            continue;
        }
        let body = match live.get(id).filter(|_| only.is_none()) {
            Some(b) => b.clone(),
            None => {
                let a = get(&format!("{}/v2/requests/{id}", base()));
                if a.status == 404 {
                    out.push(format!("R2 {key}: no live job owns it"));
                    continue;
                }
                a.json()
            }
        };
        // A running job writes its outputs before its record lists them.
        let running = matches!(body["status"].as_str(), Some("QUEUED" | "PROCESSING"));
        if let (Some("results"), Some(file), false) = (kind, file, running) {
            let listed = body["images"].as_array().into_iter().flatten().any(|i| {
                i["url"]
                    .as_str()
                    .is_some_and(|u| u.ends_with(&format!("/{id}/{file}")))
            });
            if !listed {
                out.push(format!("R2 {key}: not an output of its job's record"));
            }
        }
    }
    out
}
