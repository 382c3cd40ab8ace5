//! Section 7 (issue 18): how soon after the upstream finishes a job the gateway knows
//! it and a client is told, and what that costs in requests.
//!
//! One stack per sim provider (the model's route is that provider alone), jobs of 1,
//! 3, 10 and 30 s (`[sim:process=S]`) submitted at once (after two such rounds the
//! gateway learns from), each followed by one client:
//! an SDK-like client polling the status every second, and — where the Worker offers
//! it — a waiting client holding `status?wait=25` reads. For every job:
//! - the sim's own finish time (`/debug/jobs` `finished_ms`, Unix ms);
//! - the moment the runner's record turned COMPLETED (the Worker's
//!   `parallax-completed` meter line, `OPS_METER=on`);
//! - the moment the client saw COMPLETED (its own clock; all three on this machine);
//! - upstream requests (the sim's `/debug/requests`) and client requests.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use reqwest::blocking::Client;
use serde_json::{Value, json};

use super::flows::{self, Endpoint, field};
use super::report::{Report, Target};
use crate::cmd::{Result, root};
use crate::stack::Options;

/// Each sim provider, the model routed to it, whether it is asked to call back when a
/// job ends (Replicate, fal and BFL; Segmind, ComfyUI and another Parallax, whose v2
/// API takes no callback URL, are polled: `edge/src/hooks.rs`), and the polling
/// budget's requests besides `t / 2` (`edge/src/providers.rs` `Kind::poll_budget`:
/// 4 — the look at once and the quick look besides `2 + t/2` — or 3 where status
/// reads count against a per-minute limit).
const UPSTREAMS: [Upstream; 6] = [
    ("segmind", "flux-depth-pro", false, 3.0),
    ("replicate", "flux-depth-pro", true, 4.0),
    ("bfl", "flux-depth-pro", true, 4.0),
    ("parallax", "flux-depth-pro", false, 3.0),
    ("comfyui", "flux-depth-dev", false, 4.0),
    ("fal", "flux-depth-dev", true, 4.0),
];
type Upstream = (&'static str, &'static str, bool, f64);
/// How often the SDK-like client reads the status.
const SDK_INTERVAL_MS: f64 = 1_000.0;
/// Upstream processing time of the jobs, seconds.
const SECS: [f64; 4] = [1.0, 3.0, 10.0, 30.0];
/// How long a waiting client asks the Worker to hold each status read.
const WAIT_SECS: u32 = 25;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Polls the status every second, as the Segmind SDK does.
    Sdk,
    /// Holds `status?wait=25` reads, as the studio does.
    Waiting,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Sdk => "SDK client (1 s polls)",
            Kind::Waiting => "waiting client",
        }
    }
}

/// One measured job.
#[derive(Debug)]
struct Job {
    secs: f64,
    kind: Kind,
    prompt: String,
    request_id: String,
    /// Unix ms when the client saw COMPLETED.
    seen_ms: u64,
    client_requests: u32,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Follows one job to COMPLETED the way `kind` of client does; answers the client's
/// status reads and the moment it was told.
fn follow(edge: &Endpoint, http: &Client, sub: &Value, kind: Kind) -> Result<(u32, u64)> {
    let url = field(sub, "status_url")?;
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut reads = 0;
    loop {
        let target = match kind {
            Kind::Sdk => url.clone(),
            // Only the end is wanted: held through QUEUED and PROCESSING.
            Kind::Waiting => format!("{url}?wait={WAIT_SECS}&seen=QUEUED,PROCESSING"),
        };
        let (code, body) = edge.get(http, &target)?;
        reads += 1;
        match body["status"].as_str() {
            Some("COMPLETED") => return Ok((reads, unix_ms())),
            Some("QUEUED" | "PROCESSING") if Instant::now() < deadline => {
                if kind == Kind::Sdk {
                    thread::sleep(Duration::from_millis(SDK_INTERVAL_MS as u64));
                }
            }
            _ => return Err(format!("{} job ended {code}: {body}", edge.label)),
        }
    }
}

/// Whether the Worker holds status reads: it refuses a malformed `wait` only if it
/// knows the parameter.
fn offers_wait(edge: &Endpoint, http: &Client, sub: &Value) -> Result<bool> {
    let url = field(sub, "status_url")?;
    Ok(edge.get(http, &format!("{url}?wait=never"))?.0 == 400)
}

/// `parallax-completed <job> <ms>` lines of the Worker's log after byte `from`.
fn completed_at(log: &Path, from: usize) -> Result<BTreeMap<String, u64>> {
    Ok(super::ops::log_since(log, from)?
        .lines()
        .filter_map(|l| {
            let rest = &l[l.find("parallax-completed ")? + "parallax-completed ".len()..];
            let mut parts = rest.split_whitespace();
            Some((parts.next()?.to_owned(), parts.next()?.parse().ok()?))
        })
        .collect())
}

/// The `p` quantile with linear interpolation between the closest ranks (numpy's
/// default): the median of an even count is the mean of the middle two.
fn percentile(mut xs: Vec<f64>, p: f64) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    xs.sort_by(f64::total_cmp);
    let h = (xs.len() - 1) as f64 * p;
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let (lo, hi) = (h.floor() as usize, h.ceil() as usize);
    xs[lo] + (h - h.floor()) * (xs[hi] - xs[lo])
}

/// One job of each length per client kind, all at once; answers them measured.
fn run_round(
    edge: &Endpoint,
    http: &Client,
    model: &str,
    fields: &[(&str, &str)],
    jpeg: &[u8],
    kinds: &[Kind],
    label: &str,
) -> Result<Vec<Job>> {
    thread::scope(|scope| {
        let mut handles = Vec::new();
        for &kind in kinds {
            for secs in SECS {
                handles.push(scope.spawn(move || -> Result<Job> {
                    let prompt = format!("bench completion {label} {kind:?} [sim:process={secs}]");
                    let sub = edge.submit_to(http, model, &prompt, jpeg, fields)?;
                    let (client_requests, seen_ms) = follow(edge, http, &sub, kind)?;
                    Ok(Job {
                        secs,
                        kind,
                        prompt,
                        request_id: field(&sub, "request_id")?,
                        seen_ms,
                        client_requests,
                    })
                }));
            }
        }
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("a client panicked".into())))
            .collect::<Result<Vec<Job>>>()
    })
}

/// Runs one provider's jobs on a stack of its own; pushes its figures.
fn one_upstream(
    report: &mut Report,
    base: &Options,
    (provider, model, webhooks, budget): Upstream,
    details: &mut serde_json::Map<String, Value>,
) -> Result {
    const S: &str = "Completion";
    let mut options = base.clone();
    options.state_dir = base.state_dir.join(provider);
    let log = base.state_dir.join(format!("{provider}.log"));
    options.log = Some(log.clone());
    for var in ["PROVIDERS_FLUX_DEPTH_PRO", "PROVIDERS_FLUX_DEPTH_DEV"] {
        options.vars.retain(|(k, _)| k != var);
        options.vars.push((var.to_owned(), provider.to_owned()));
    }
    let (stack, edge) = super::ops::start_stack(&options, "completion")?;
    let http = flows::client()?;
    let jpeg = fs::read(root().join("public/samples/chelsea.jpg")).map_err(|e| e.to_string())?;
    let from = super::ops::log_end(&log);
    let run = std::process::id();
    // ComfyUI's SaveImage writes PNG (or WebP), never JPEG.
    let fields: &[(&str, &str)] = match provider {
        "comfyui" => &[("output_format", "png")],
        _ => &[],
    };
    // As long as the longest measured job: an instant one would teach the gateway that
    // this provider ends jobs at once.
    let probe = edge.submit_to(
        &http,
        model,
        &format!("bench probe {run} [sim:process=30]"),
        &jpeg,
        fields,
    )?;
    let mut kinds = vec![Kind::Sdk];
    if offers_wait(&edge, &http, &probe)? {
        kinds.push(Kind::Waiting);
    }
    // Two rounds of the same jobs first: the gateway learns when this provider's
    // jobs end (issue 18's item 3), as it would from a deployment's recent traffic.
    let rounds: [(&str, &[Kind]); 3] = [
        ("warm-up 1", &[Kind::Sdk]),
        ("warm-up 2", &[Kind::Sdk]),
        ("measured", &kinds),
    ];
    let mut jobs = Vec::new();
    for (round, kinds) in rounds {
        jobs = run_round(
            &edge,
            &http,
            model,
            fields,
            &jpeg,
            kinds,
            &format!("{run} {provider} {round}"),
        )?;
    }
    let sim = format!("http://127.0.0.1:{}", options.sim_port);
    let get = |path: &str| -> Result<Value> {
        http.get(format!("{sim}{path}"))
            .send()
            .and_then(reqwest::blocking::Response::json)
            .map_err(|e| format!("sim {path}: {e}"))
    };
    let sim_jobs = get("/debug/jobs")?;
    let requests = get("/debug/requests")?;
    // The Worker logs through wrangler; give the last lines a moment to land.
    thread::sleep(Duration::from_millis(500));
    let completed = completed_at(&log, from)?;
    drop(stack);

    let finished = |prompt: &str| {
        sim_jobs
            .as_array()
            .into_iter()
            .flatten()
            .find(|j| j["prompt"] == prompt)
            .and_then(|j| j["finished_ms"].as_u64())
    };
    let mut record_ms = Vec::new();
    let mut one_second = Vec::new();
    let mut sdk_after_record = Vec::new();
    let mut told: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut rows = Vec::new();
    let (mut upstream_max, mut upstream_over_budget) = (0.0f64, 0.0f64);
    let mut waiting_over_budget = 0.0f64;
    for job in &jobs {
        let done = finished(&job.prompt).ok_or_else(|| format!("sim lost {}", job.prompt))?;
        let record = completed.get(&job.request_id).copied();
        let gap = |t: u64| t as f64 - done as f64;
        if let Some(r) = record {
            record_ms.push(gap(r));
            if job.secs <= 1.0 && job.kind == Kind::Sdk {
                one_second.push(gap(r));
            }
            if job.kind == Kind::Sdk {
                sdk_after_record.push(job.seen_ms as f64 - r as f64);
            }
        }
        told.entry(job.kind.name())
            .or_default()
            .push(gap(job.seen_ms));
        let c = &requests[job.prompt.as_str()];
        let upstream = c["submits"].as_f64().unwrap_or(0.0) + c["polls"].as_f64().unwrap_or(0.0);
        upstream_max = upstream_max.max(upstream);
        // The budget counts `t` as the job's age when the gateway saw it end
        // (the sim started it at its submit: no queue on the bench's sim).
        let seen_secs = record.map_or(job.secs, |r| {
            (r as f64 - (done as f64 - job.secs * 1000.0)) / 1000.0
        });
        upstream_over_budget = upstream_over_budget.max(upstream - (budget + seen_secs / 2.0));
        if job.kind == Kind::Waiting {
            waiting_over_budget = waiting_over_budget
                .max(f64::from(job.client_requests) - (1.0 + job.secs / f64::from(30)));
        }
        println!(
            "    {:>4} s job, {:<22}: record +{:>5} ms, told +{:>5} ms, {} upstream requests, {} status reads",
            job.secs,
            job.kind.name(),
            record.map_or(f64::NAN, gap),
            gap(job.seen_ms),
            upstream,
            job.client_requests
        );
        rows.push(json!({
            "secs": job.secs, "client": job.kind.name(), "sim_finished_ms": done,
            "record_completed_ms": record, "client_told_ms": job.seen_ms,
            "upstream_requests": upstream, "client_status_reads": job.client_requests,
        }));
    }
    let hooks = if webhooks { "webhook" } else { "polled" };
    let (p50_target, max_target) = if webhooks {
        (Target::AtMost(250.0), Some(Target::AtMost(1000.0)))
    } else {
        (Target::AtMost(1000.0), None)
    };
    let mut latency = |what: &str, xs: Vec<f64>| {
        let (p50, max) = (percentile(xs.clone(), 0.5), percentile(xs, 1.0));
        report.target(
            S,
            format!("{provider} ({hooks}): {what}, p50"),
            p50,
            "ms",
            p50_target,
        );
        match max_target {
            Some(t) => report.target(
                S,
                format!("{provider} ({hooks}): {what}, max"),
                max,
                "ms",
                t,
            ),
            None => report.add(S, format!("{provider} ({hooks}): {what}, max"), max, "ms"),
        }
    };
    latency("record COMPLETED after the upstream finished", record_ms);
    if let Some(waiting) = told.remove(Kind::Waiting.name()) {
        latency(&format!("{} told", Kind::Waiting.name()), waiting);
    }
    // A client that looks once a second is told up to a second after the record by
    // its own cadence: its target is that interval, not an absolute latency.
    let sdk = format!("{provider} ({hooks}): SDK client (1 s polls) told after the record");
    report.target(
        S,
        format!("{sdk}, p50"),
        percentile(sdk_after_record.clone(), 0.5),
        "ms",
        Target::AtMost(SDK_INTERVAL_MS),
    );
    report.add(
        S,
        format!("{sdk}, max"),
        percentile(sdk_after_record, 1.0),
        "ms",
    );
    // A 1 s job is seen within a second of its end where the budget allows a look at
    // 2 s; where status reads are rate-limited the first is at 4 s (the figure is
    // printed, bound by the provider's budget, not by the gateway).
    let one = format!("{provider} ({hooks}): 1 s job, record COMPLETED after it finished");
    match budget >= 4.0 || webhooks {
        true => report.target(
            S,
            one,
            percentile(one_second, 0.5),
            "ms",
            Target::AtMost(1_000.0),
        ),
        false => report.add(S, one, percentile(one_second, 0.5), "ms"),
    }
    match webhooks {
        true => report.target(
            S,
            format!("{provider} ({hooks}): upstream requests per job, most (1–30 s jobs)"),
            upstream_max,
            "req",
            Target::AtMost(3.0),
        ),
        false => report.target(
            S,
            format!("{provider} ({hooks}): upstream requests beyond {budget} + t/2, worst job"),
            upstream_over_budget,
            "req",
            Target::AtMost(0.0),
        ),
    }
    if kinds.contains(&Kind::Waiting) {
        report.target(
            S,
            format!("{provider} ({hooks}): waiting client's reads beyond 1 + t/30, worst job"),
            waiting_over_budget,
            "req",
            Target::AtMost(0.0),
        );
    }
    details.insert(provider.to_owned(), Value::from(rows));
    Ok(())
}

pub fn run(report: &mut Report, base: &Options) -> Result {
    let mut details = serde_json::Map::new();
    // `PARALLAX_BENCH_UPSTREAMS=segmind,fal` measures only those (for iterating).
    let only = std::env::var("PARALLAX_BENCH_UPSTREAMS").ok();
    for upstream in UPSTREAMS.into_iter().filter(|u| {
        only.as_deref()
            .is_none_or(|o| o.split(',').any(|n| n.trim() == u.0))
    }) {
        println!("  {} …", upstream.0);
        one_upstream(report, base, upstream, &mut details)?;
    }
    report.detail("completion", Value::Object(details));
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn percentiles_interpolate_between_ranks() {
        let xs = vec![4.0, 1.0, 3.0, 2.0];
        assert!((super::percentile(xs.clone(), 0.5) - 2.5).abs() < 1e-9);
        assert!((super::percentile(xs.clone(), 1.0) - 4.0).abs() < 1e-9);
        assert!((super::percentile(xs, 0.0) - 1.0).abs() < 1e-9);
        assert!(super::percentile(Vec::new(), 0.5).is_nan());
    }
}
