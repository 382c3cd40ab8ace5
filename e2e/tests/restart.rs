//! Restart survival (issue 7), in two phases run by `cargo xtask test` around a
//! crash of `wrangler dev` (SIGKILL) and a restart on the same state directory:
//! `restart_phase_submit` starts jobs and waits until sim has accepted every one;
//! `restart_phase_verify` (after the restart) checks that every job completes from
//! the Durable Objects' alarms, nothing is charged twice, and no job was submitted
//! upstream twice.
//!
//! Two jobs are also held at sim gates across the crash (issue 15): one accepted by the
//! Parallax upstream whose answer never reached the edge (killed between the
//! provider's 200 and our write: the resubmit after the restart carries the same
//! `Idempotency-Key`, so it is a replay, not a second job), and one canceled whose
//! upstream cancel was out when the Worker died (killed between FAILED and the
//! refund: the outbox entry is retried from the alarm, and the refund lands once).

use std::time::{Duration, Instant};

use parallax_e2e::{
    Gate, balance_of, base, client, eventually, get, sample, send_repeatable, test_key,
};
use reqwest::blocking::multipart::{Form, Part};
use serde_json::{Value, json};

const JOBS: usize = 16;

fn state_file() -> String {
    format!("{}/../target/e2e/restart.json", env!("CARGO_MANIFEST_DIR"))
}

fn sim_submissions() -> Value {
    let sim = std::env::var("PARALLAX_SIM_URL").expect("PARALLAX_SIM_URL");
    client()
        .get(format!("{sim}/debug/submissions"))
        .send()
        .unwrap()
        .json()
        .unwrap()
}

#[test]
#[ignore = "run by cargo xtask test around a Worker restart"]
fn restart_phase_submit() {
    let key = test_key("restart");
    let before = balance_of(&key);
    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let mut jobs = Vec::new();
    for i in 0..JOBS {
        // Half take long at the provider, so they are mid-flight when the Worker dies.
        let prompt = if i % 2 == 0 {
            format!("restart {run} {i} [sim:slow]")
        } else {
            format!("restart {run} {i}")
        };
        let id = submit(&key, &prompt);
        jobs.push(json!({"id": id, "prompt": prompt}));
    }
    // Wait until the provider has every job, so the crash hits them in flight.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let seen = sim_submissions();
        if jobs
            .iter()
            .all(|j| seen.get(j["prompt"].as_str().unwrap()).is_some())
        {
            break;
        }
        assert!(Instant::now() < deadline, "sim never got every job");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    let unfinished = jobs
        .iter()
        .filter(|j| {
            let s = get(&format!(
                "{}/v2/requests/{}/status",
                base(),
                j["id"].as_str().unwrap()
            ));
            s.json()["status"] != "COMPLETED"
        })
        .count();
    assert!(
        unfinished >= JOBS / 2,
        "the slow half is still running before the crash"
    );
    // Killed between the Parallax upstream's 200 and our write.
    let replay_prompt =
        format!("restart {run} replay [sim:segmind:503!] [sim:replicate:503!] [sim:bfl:503!]");
    let replay_gate = Gate::close(Some("parallax"), "submit", &replay_prompt);
    let replay = submit(&key, &replay_prompt);
    replay_gate.wait_parked();
    // Killed between FAILED (canceled) and the refund: the upstream cancel is out.
    let cancel_prompt = format!("restart {run} cancel [sim:segmind:503!] [sim:queue=120]");
    let cancel_gate = Gate::close(Some("replicate"), "cancel", &cancel_prompt);
    let canceled = submit(&key, &cancel_prompt);
    eventually(
        "the job reaching Replicate",
        Duration::from_secs(60),
        || {
            let s = get(&format!("{}/v2/requests/{canceled}/status", base())).json();
            (s["metrics"]["provider"] == "replicate"
                && s["metrics"]["credits"]["refund_on_cancel"] == 0)
                .then_some(())
        },
    );
    let (url, k) = (
        format!("{}/v2/requests/{canceled}/cancel", base()),
        key.clone(),
    );
    // Its answer never comes: the Worker dies while the cancel is held upstream.
    std::thread::spawn(move || client().post(url).header("x-api-key", k).send());
    cancel_gate.wait_parked();
    std::fs::write(
        state_file(),
        json!({"jobs": jobs, "before": before,
               "replay": {"id": replay, "prompt": replay_prompt, "gate": replay_gate.0},
               "canceled": {"id": canceled, "prompt": cancel_prompt, "gate": cancel_gate.0}})
        .to_string(),
    )
    .unwrap();
}

/// Submits a pro job with an `Idempotency-Key` (the prompt is unique per run), so a
/// submit `wrangler dev`'s proxy loses is sent again safely (see `send_repeatable`).
fn submit(key: &str, prompt: &str) -> String {
    let idempotency = format!("restart-{prompt}");
    let a = send_repeatable(|| {
        let form = Form::new().text("prompt", prompt.to_owned()).part(
            "control_image",
            Part::bytes(sample("rocket.jpg")).file_name("r.jpg"),
        );
        client()
            .post(format!("{}/v2/flux-depth-pro", base()))
            .header("x-api-key", key)
            .header("idempotency-key", &idempotency)
            .multipart(form)
    });
    assert_eq!(a.status, 200, "{}", a.text);
    a.json()["request_id"].as_str().unwrap().to_owned()
}

#[test]
#[ignore = "run by cargo xtask test around a Worker restart"]
fn restart_phase_verify() {
    let key = test_key("restart");
    let state: Value =
        serde_json::from_str(&std::fs::read_to_string(state_file()).unwrap()).unwrap();
    let jobs = state["jobs"].as_array().unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    for job in jobs {
        let url = format!(
            "{}/v2/requests/{}/status",
            base(),
            job["id"].as_str().unwrap()
        );
        loop {
            let s = get(&url);
            if s.json()["status"] == "COMPLETED" {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not complete after the restart: {}",
                job["id"],
                s.text
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }
    // Release the calls held across the crash.
    for held in ["replay", "canceled"] {
        Gate(state[held]["gate"].as_u64().unwrap()).open();
    }
    let replay = state["replay"]["id"].as_str().unwrap();
    let done = parallax_e2e::wait_terminal(
        &format!("{}/v2/requests/{replay}/status", base()),
        Duration::from_secs(90),
    );
    // It completes from the replay, unless the restart outlasted its deadline (then
    // it fails, refunded); either way the upstream has exactly one job (below).
    let replayed = get(&format!("{}/v2/requests/{replay}", base())).json();
    let replay_refund = replayed["metrics"]["credits"]["refunded"].as_u64().unwrap();
    match replayed["status"].as_str() {
        Some("COMPLETED") => assert_eq!(replayed["metrics"]["provider"], "parallax"),
        _ => assert_eq!(replay_refund, 5, "{replayed}"),
    }
    eprintln!("replayed job after the crash: {}", done.text);
    let canceled = state["canceled"]["id"].as_str().unwrap();
    let c = eventually("the canceled job's refund", Duration::from_secs(90), || {
        let r = get(&format!("{}/v2/requests/{canceled}", base())).json();
        (r["metrics"]["credits"]["refunded"] == 5).then_some(r)
    });
    assert_eq!(c["status"], "FAILED", "{c}");
    let before = state["before"].as_u64().unwrap();
    // Every job charged once; the canceled one (stopped before it ran) refunded once,
    // and the replayed one if it timed out.
    let expected = before - 5 * (jobs.len() as u64 + 1) + replay_refund;
    eventually("the balance", Duration::from_secs(30), || {
        (balance_of(&key) == expected).then_some(())
    });
    assert_eq!(
        sim_submissions()[state["replay"]["prompt"].as_str().unwrap()],
        1,
        "the resubmit after the crash was a replay"
    );
    let seen = sim_submissions();
    for job in jobs {
        let prompt = job["prompt"].as_str().unwrap();
        assert_eq!(
            seen[prompt], 1,
            "{prompt} was submitted upstream {} times",
            seen[prompt]
        );
    }
}
