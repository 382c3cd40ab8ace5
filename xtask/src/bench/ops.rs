//! What one job costs in billable Cloudflare operations, and that at Cloudflare's
//! published prices, beside what the provider charges for the image.
//!
//! A stack of its own runs the Worker with `OPS_METER=on`: every billable operation
//! the edge makes logs a `parallax-meter <op> <n>` line (`edge/src/meter.rs`). The
//! bench runs [`JOBS`] jobs the way an SDK client does (submit, poll the status every
//! second, fetch the result, download each image once), waits until each job is past
//! its (short) retention and purged, and divides the log's sums by the number of jobs:
//! the whole life of a job, from its submit to its purge.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::flows::{self, Endpoint, field};
use super::report::Report;
use crate::cmd::{Result, root};
use crate::keys;
use crate::stack::Stack;

const JOBS: usize = 10;
/// Each job's upstream time: long enough for a few polls on both sides.
const JOB_SECS: u32 = 3;
/// The ops stack's retention, so the purge is part of the measured life.
const RETENTION_SECS: u64 = 6;

/// Cloudflare's prices (Workers Paid, beyond the included amounts), USD per million
/// operations, as published in 2026:
/// - Workers: $0.30 / million requests (<https://developers.cloudflare.com/workers/platform/pricing/>);
/// - Durable Objects: $0.15 / million requests, $12.50 / million GB-s of duration,
///   SQLite storage $0.001 / million rows read and $1.00 / million rows written
///   (<https://developers.cloudflare.com/durable-objects/platform/pricing/>);
/// - KV: $0.50 / million reads, $5.00 / million writes (<https://developers.cloudflare.com/kv/platform/pricing/>);
/// - R2: $4.50 / million Class A, $0.36 / million Class B operations, $0.015 / GB-month
///   stored (<https://developers.cloudflare.com/r2/pricing/>).
const PRICES: [(&str, &str, f64); 8] = [
    ("worker_request", "Worker requests", 0.30),
    (
        "do_request",
        "Durable Object requests (fetch + alarm)",
        0.15,
    ),
    ("do_rows_read", "Durable Object rows read", 0.001),
    ("do_rows_written", "Durable Object rows written", 1.00),
    ("kv_read", "KV reads", 0.50),
    ("kv_write", "KV writes", 5.00),
    ("r2_class_a", "R2 Class A (put, list)", 4.50),
    ("r2_class_b", "R2 Class B (get)", 0.36),
];
/// $ per GB-s of Durable Object duration, and the memory it is billed at.
const DO_GB_SECOND: f64 = 12.50 / 1e6;
const DO_GB: f64 = 0.128;
const R2_GB_MONTH: f64 = 0.015;
/// Replicate's published per-image prices (`../shared/reference/providers-2026.md`
/// §2.1, §2.2): flux-depth-pro $0.05, flux-depth-dev $0.025.
const PROVIDER_PER_IMAGE: [(&str, f64); 2] = [("flux-depth-pro", 0.05), ("flux-depth-dev", 0.025)];

/// The `(op, n)` of a `parallax-meter` log line.
pub fn parse_line(line: &str) -> Option<(&str, u64)> {
    let rest = &line[line.find("parallax-meter ")? + "parallax-meter ".len()..];
    let mut parts = rest.split_whitespace();
    let op = parts.next()?;
    let n = parts.next()?.parse().ok()?;
    Some((op, n))
}

/// The text of `log` after byte `from` (what a run of jobs made the Worker print).
pub fn log_since(log: &Path, from: usize) -> Result<String> {
    let text = fs::read(log).map_err(|e| format!("reading {}: {e}", log.display()))?;
    Ok(String::from_utf8_lossy(text.get(from..).unwrap_or_default()).into_owned())
}

/// The bytes `log` has now: where the next run's lines start.
pub fn log_end(log: &Path) -> usize {
    fs::metadata(log).map_or(0, |m| m.len() as usize)
}

/// A stack of its own for a bench section (`options.log` set: the section reads the
/// Worker's lines), with a key of `name` and the Worker's endpoint.
pub fn start_stack(options: &crate::stack::Options, name: &str) -> Result<(Stack, Endpoint)> {
    let log = options
        .log
        .clone()
        .ok_or("a bench stack needs a log to read")?;
    let key = keys::create(
        &keys::Target::Local(&options.state_dir),
        name,
        1_000_000,
        None,
    )?;
    let stack = Stack::start(options).map_err(|e| format!("{e} (see {})", log.display()))?;
    let edge = Endpoint {
        label: "worker",
        base: stack.base_url.clone(),
        key,
    };
    Ok((stack, edge))
}

/// Sums the meter lines of `log` after byte `from`.
fn sums(log: &Path, from: usize) -> Result<std::collections::BTreeMap<String, u64>> {
    let text = log_since(log, from)?;
    let mut out = std::collections::BTreeMap::new();
    for (op, n) in text.lines().filter_map(parse_line) {
        *out.entry(op.to_owned()).or_insert(0) += n;
    }
    Ok(out)
}

pub fn run(report: &mut Report, options: &crate::stack::Options) -> Result {
    const S: &str = "Cloudflare operations per job";
    let (stack, edge) = start_stack(options, "ops")?;
    let log = options.log.clone().unwrap_or_default();
    let http = flows::client()?;
    let jpeg = fs::read(root().join("public/samples/chelsea.jpg")).map_err(|e| e.to_string())?;
    // The stack's own start-up requests are not a job's.
    std::thread::sleep(Duration::from_secs(1));
    let from = log_end(&log);
    let run = std::process::id();
    let mut stored_bytes = 0u64;
    let mut ids = Vec::new();
    for i in 0..JOBS {
        let prompt = format!("bench ops {run} {i} [sim:process={JOB_SECS}]");
        let sub = edge.submit(&http, &prompt, &jpeg)?;
        edge.wait(&http, &sub, Duration::from_secs(1))?;
        let (_, result) = edge.get(&http, &field(&sub, "response_url")?)?;
        let outputs: Vec<String> = result["images"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|i| i["url"].as_str())
            .map(str::to_owned)
            .collect();
        if outputs.is_empty() {
            return Err(format!("no images in {result}"));
        }
        for url in outputs {
            let bytes = http
                .get(&url)
                .send()
                .and_then(reqwest::blocking::Response::bytes)
                .map_err(|e| format!("download {url}: {e}"))?;
            stored_bytes += bytes.len() as u64;
        }
        stored_bytes += jpeg.len() as u64;
        ids.push(field(&sub, "status_url")?);
    }
    // Past retention, each job's alarm purges it; wait until the last one is gone
    // (reads after that are not part of a job's cost: the log is cut before them).
    let settle = Instant::now();
    std::thread::sleep(Duration::from_secs(RETENTION_SECS + 4));
    let totals = sums(&log, from)?;
    let mut purged = 0;
    for url in &ids {
        if edge.get(&http, url)?.0 == 404 {
            purged += 1;
        }
    }
    drop(stack);
    println!(
        "  ({JOBS} jobs of {JOB_SECS} s, polled every second, each purged after {RETENTION_SECS} s: {purged}/{JOBS} purged {:.0?} after the last)",
        settle.elapsed()
    );
    let jobs = JOBS as f64;
    let mut per_thousand = 0.0;
    let mut details = serde_json::Map::new();
    for (op, label, price) in PRICES {
        let n = totals.get(op).copied().unwrap_or(0) as f64 / jobs;
        let usd = n * 1000.0 * price / 1e6;
        per_thousand += usd;
        report.push(
            S,
            label.to_owned(),
            n,
            "per job",
            None,
            &format!("${usd:.5} per 1 000 jobs"),
        );
        details.insert(
            op.to_owned(),
            json!({"per_job": n, "usd_per_1000_jobs": usd}),
        );
    }
    let active_ms = totals.get("do_active_ms").copied().unwrap_or(0) as f64 / jobs;
    let duration_usd = active_ms / 1000.0 * DO_GB * DO_GB_SECOND * 1000.0;
    per_thousand += duration_usd;
    report.push(
        S,
        "Durable Object duration (awaits included)",
        active_ms,
        "ms per job",
        None,
        &format!("${duration_usd:.5} per 1 000 jobs at 128 MB"),
    );
    let gb_month = stored_bytes as f64 / jobs / 1e9;
    let storage_usd = gb_month * R2_GB_MONTH * 1000.0;
    per_thousand += storage_usd;
    report.push(
        S,
        "R2 storage, input + outputs kept 30 days",
        stored_bytes as f64 / jobs / 1024.0,
        "KiB per job",
        None,
        &format!("${storage_usd:.5} per 1 000 jobs"),
    );
    report.push(
        S,
        "Cloudflare, all of the above",
        per_thousand * 1000.0,
        "$ per million jobs",
        None,
        &format!("${per_thousand:.4} per 1 000 jobs"),
    );
    for (model, price) in PROVIDER_PER_IMAGE {
        report.push(
            S,
            format!("provider (Replicate) {model}, for comparison"),
            price * 1000.0,
            "$ per 1 000 images",
            None,
            &format!(
                "Cloudflare adds {:.2} % to one image",
                per_thousand / (price * 1000.0) * 100.0
            ),
        );
    }
    details.insert("do_active_ms_per_job".into(), json!(active_ms));
    details.insert(
        "stored_bytes_per_job".into(),
        json!(stored_bytes as f64 / jobs),
    );
    details.insert("usd_per_1000_jobs".into(), json!(per_thousand));
    details.insert("jobs".into(), json!(JOBS));
    details.insert("purged".into(), json!(purged));
    report.detail("ops", Value::Object(details));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meter_lines_are_read_back() {
        assert_eq!(
            parse_line("[wrangler:info] parallax-meter r2_class_a 2"),
            Some(("r2_class_a", 2))
        );
        assert_eq!(parse_line("parallax-meter do_rows_read x"), None);
        assert_eq!(parse_line("GET /v2/requests 200"), None);
    }
}
