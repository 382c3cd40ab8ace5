//! Load with no loss (issue 7): many jobs submitted concurrently through the Worker
//! (mixed models, some with four outputs) all complete; every stored image is byte
//! for byte what sim rendered; the key's balance is exact. Figures go to
//! `target/e2e/reliability.json` (printed by `cargo xtask test`; timings are never
//! asserted).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use parallax_e2e::{balance_of, base, client, sample, test_key};
use parallax_sim::render::{self, Format, RenderSpec};
use reqwest::blocking::multipart::{Form, Part};
use serde_json::{Value, json};

const SAMPLES: [&str; 4] = ["astronaut.jpg", "chelsea.jpg", "coffee.jpg", "rocket.jpg"];
const CLIENTS: usize = 24;

struct Plan {
    dev: bool,
    outputs: usize,
    sample: &'static str,
    prompt: String,
    seed: u32,
}

fn plan(i: usize, run: u128) -> Plan {
    let dev = i % 2 == 1;
    Plan {
        dev,
        outputs: if dev && i % 6 == 1 { 4 } else { 1 },
        sample: SAMPLES[i % SAMPLES.len()],
        prompt: format!("load {run} job {i}"),
        seed: i as u32 * 7919,
    }
}

/// What sim renders for this job, given the parameters the edge sends it.
fn expected(p: &Plan) -> Vec<Vec<u8>> {
    let bytes = sample(p.sample);
    let spec = RenderSpec {
        prompt: p.prompt.clone(),
        seed: u64::from(p.seed),
        count: p.outputs,
        format: Format::Jpg,
        // pro sends no output_quality (every sim protocol then uses 90); dev sends 80
        quality: if p.dev { 80 } else { 90 },
        megapixels: Some(if p.dev { 0.25 } else { 1.0 }),
        size: None,
        control: Some(image::load_from_memory(&bytes).unwrap()),
        control_hash: render::fnv1a(&[&bytes]),
        depth: false,
    };
    render::render_all(&spec)
        .into_iter()
        .map(|r| r.bytes)
        .collect()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[derive(Default)]
struct Tally {
    submit_ms: Vec<f64>,
    complete_s: Vec<f64>,
    problems: Vec<String>,
    cost: u64,
    images: usize,
    five_xx: usize,
    /// Every accepted job, for the audit.
    tracked: Vec<parallax_e2e::audit::Tracked>,
}

#[test]
#[ignore = "needs the running stack: cargo xtask test"]
fn many_concurrent_jobs_complete_with_every_image_intact_and_exact_credits() {
    let jobs: usize = std::env::var("PARALLAX_LOAD_JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let key = test_key("load");
    let balance = || balance_of(&key);
    let before = balance();
    let next = Arc::new(AtomicUsize::new(0));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let started = Instant::now();
    let workers: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (next, tally, key) = (next.clone(), tally.clone(), key.clone());
            std::thread::spawn(move || {
                let http = client();
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= jobs {
                        break;
                    }
                    let p = plan(i, run);
                    let form = || {
                        let mut form = Form::new()
                            .text("prompt", p.prompt.clone())
                            .text("seed", p.seed.to_string())
                            .part(
                                "control_image",
                                Part::bytes(sample(p.sample)).file_name(p.sample),
                            );
                        if p.dev {
                            form = form
                                .text("num_outputs", p.outputs.to_string())
                                .text("megapixels", "0.25");
                        }
                        form
                    };
                    let model = if p.dev {
                        "flux-depth-dev"
                    } else {
                        "flux-depth-pro"
                    };
                    // As a careful client does: every submit carries an Idempotency-Key,
                    // so one lost in transport (or by `wrangler dev`'s proxy: a 503
                    // "restarted mid-request", workers-sdk#14641) is sent again safely.
                    let idempotency = format!("load-{run}-{i}");
                    let send = || {
                        http.post(format!("{}/v2/{model}", base()))
                            .header("x-api-key", &key)
                            .header("idempotency-key", &idempotency)
                            .multipart(form())
                            .send()
                    };
                    let t0 = Instant::now();
                    // (status, body) of an answer; `None` when the request was lost (in
                    // transport, or by the dev proxy).
                    let answer = || match send() {
                        Ok(r) => {
                            let status = r.status().as_u16();
                            let body = r.text().unwrap_or_default();
                            if parallax_e2e::lost_by_dev_proxy(status, &body) {
                                None
                            } else {
                                Some((status, body))
                            }
                        }
                        Err(_) => None,
                    };
                    let sub = answer().or_else(|| {
                        std::thread::sleep(Duration::from_millis(200));
                        answer()
                    });
                    let submit_ms = t0.elapsed().as_secs_f64() * 1000.0;
                    let problem = |t: &Mutex<Tally>, what: String| {
                        t.lock().unwrap().problems.push(format!("job {i}: {what}"))
                    };
                    let sub: Value = match sub {
                        Some((status, body)) if (200..300).contains(&status) => {
                            serde_json::from_str(&body).unwrap()
                        }
                        Some((status, body)) => {
                            if status >= 500 {
                                tally.lock().unwrap().five_xx += 1;
                            }
                            problem(&tally, format!("submit {status}: {body}"));
                            continue;
                        }
                        None => {
                            problem(&tally, "submit lost twice in transport".to_owned());
                            continue;
                        }
                    };
                    {
                        let mut t = tally.lock().unwrap();
                        t.submit_ms.push(submit_ms);
                        t.tracked.push(parallax_e2e::audit::Tracked {
                            id: sub["request_id"].as_str().unwrap_or_default().to_owned(),
                            prompt: p.prompt.clone(),
                            ..Default::default()
                        });
                    }
                    let status_url = sub["status_url"].as_str().unwrap().to_owned();
                    let status = loop {
                        std::thread::sleep(Duration::from_millis(400));
                        match http.get(&status_url).header("x-api-key", &key).send() {
                            Ok(r) => {
                                if r.status().is_server_error() {
                                    tally.lock().unwrap().five_xx += 1;
                                }
                                let body: Value = r.json().unwrap_or_default();
                                match body["status"].as_str() {
                                    Some(s @ ("COMPLETED" | "FAILED")) => break s.to_owned(),
                                    _ if t0.elapsed() > Duration::from_secs(600) => {
                                        break "STUCK".to_owned();
                                    }
                                    _ => {}
                                }
                            }
                            Err(_) if t0.elapsed() > Duration::from_secs(600) => {
                                break "STUCK".to_owned();
                            }
                            Err(_) => {}
                        }
                    };
                    let complete_s = t0.elapsed().as_secs_f64();
                    if status != "COMPLETED" {
                        problem(&tally, format!("ended {status}"));
                        continue;
                    }
                    let result: Value = http
                        .get(sub["response_url"].as_str().unwrap())
                        .send()
                        .unwrap()
                        .json()
                        .unwrap();
                    let want = expected(&p);
                    let urls: Vec<Value> = result["images"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|i| i["url"].clone())
                        .collect();
                    if urls.len() != want.len() {
                        problem(
                            &tally,
                            format!("{} outputs, expected {}", urls.len(), want.len()),
                        );
                        continue;
                    }
                    for (n, (url, bytes)) in urls.iter().zip(&want).enumerate() {
                        // A transport error on loopback under load is retried, as any
                        // client would; what is checked is the bytes served.
                        let fetch = || {
                            http.get(url.as_str().unwrap())
                                .send()
                                .and_then(|r| r.bytes())
                        };
                        let got = fetch().or_else(|_| fetch()).or_else(|_| fetch());
                        match got {
                            Ok(b) if b.as_ref() == bytes.as_slice() => {}
                            Ok(b) => problem(
                                &tally,
                                format!(
                                    "output {n} differs ({} vs {} bytes)",
                                    b.len(),
                                    bytes.len()
                                ),
                            ),
                            Err(e) => problem(&tally, format!("output {n}: {e}")),
                        }
                    }
                    let mut t = tally.lock().unwrap();
                    // What the server says this job cost, for the audit (the job may be
                    // purged by then: the test stack keeps results for seconds).
                    let id = sub["request_id"].as_str().unwrap_or_default();
                    let credits = &result["metrics"]["credits"];
                    if let Some(tracked) = t.tracked.iter_mut().find(|tr| tr.id == id) {
                        tracked.charged = credits["charged"].as_u64().unwrap_or(0);
                        tracked.refunded = credits["refunded"].as_u64().unwrap_or(0);
                    }
                    t.complete_s.push(complete_s);
                    t.cost += if p.dev { 2 } else { 5 } * p.outputs as u64;
                    t.images += want.len();
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let mut t = Arc::try_unwrap(tally).ok().unwrap().into_inner().unwrap();
    let after = balance();
    t.submit_ms.sort_by(f64::total_cmp);
    t.complete_s.sort_by(f64::total_cmp);
    let completed = t.complete_s.len();
    let summary = json!({
        "jobs": jobs,
        "completed": completed,
        "images_verified": t.images,
        "lost": jobs - completed,
        "server_errors": t.five_xx,
        "jobs_per_second": completed as f64 / elapsed,
        "submit_ms_p50": percentile(&t.submit_ms, 0.5),
        "submit_ms_p99": percentile(&t.submit_ms, 0.99),
        "complete_s_p50": percentile(&t.complete_s, 0.5),
        "complete_s_p99": percentile(&t.complete_s, 0.99),
        "credits_charged": before - after,
        "credits_expected": t.cost,
        "clients": CLIENTS,
    });
    let out = format!(
        "{}/../target/e2e/reliability.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let _ = std::fs::write(&out, serde_json::to_string_pretty(&summary).unwrap());
    eprintln!("load summary: {summary}");
    assert!(
        t.problems.is_empty(),
        "{} problems:\n{}",
        t.problems.len(),
        t.problems.join("\n")
    );
    assert_eq!(completed, jobs, "no job lost");
    assert_eq!(t.five_xx, 0);
    assert_eq!(before - after, t.cost, "credits exact");
    // The global invariants after the load.
    let mut accounts = [parallax_e2e::audit::Account {
        key: key.clone(),
        before,
        jobs: std::mem::take(&mut t.tracked),
    }];
    let violations = parallax_e2e::audit::run(&mut accounts, parallax_e2e::state_dir().as_deref());
    eprintln!(
        "audit after load: {} jobs, invariant violations = {}",
        accounts[0].jobs.len(),
        violations.len()
    );
    assert!(violations.is_empty(), "{violations:#?}");
}
