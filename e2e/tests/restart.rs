//! Restart survival (issue 7), in two phases run by `cargo xtask test` around a
//! crash of `wrangler dev` (SIGKILL) and a restart on the same state directory:
//! `restart_phase_submit` starts jobs and waits until sim has accepted every one;
//! `restart_phase_verify` (after the restart) checks that every job completes from
//! the Durable Objects' alarms, nothing is charged twice, and no job was submitted
//! upstream twice.

use std::time::{Duration, Instant};

use parallax_e2e::{Answer, balance_of, base, client, get, sample, test_key};
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
        let form = Form::new().text("prompt", prompt.clone()).part(
            "control_image",
            Part::bytes(sample("rocket.jpg")).file_name("r.jpg"),
        );
        let a = Answer::from(
            client()
                .post(format!("{}/v2/flux-depth-pro", base()))
                .header("x-api-key", &key)
                .multipart(form)
                .send()
                .unwrap(),
        );
        assert_eq!(a.status, 200, "{}", a.text);
        jobs.push(json!({"id": a.json()["request_id"], "prompt": prompt}));
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
    std::fs::write(
        state_file(),
        json!({"jobs": jobs, "before": before}).to_string(),
    )
    .unwrap();
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
    let before = state["before"].as_u64().unwrap();
    assert_eq!(
        balance_of(&key),
        before - 5 * jobs.len() as u64,
        "each job charged exactly once"
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
