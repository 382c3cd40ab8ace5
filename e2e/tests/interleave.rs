//! Interleavings (issue 15): sim holds a provider call at a gate while the test places
//! a cancel or a delete exactly between two steps of a job, then opens the gate. The
//! job's record must stay the single truth: a canceled job never completes, keeps no
//! image, and is refunded exactly what its body says (in full only when the provider
//! confirms nothing was spent).

use std::time::Duration;

use parallax_e2e::{
    Answer, Gate, balance_of, base, client, eventually, get, sample, sim_jobs, sim_url, test_key,
    unique, wait_terminal,
};
use reqwest::blocking::multipart::{Form, Part};
use serde_json::Value;

/// Tests that check a balance have a key of their own (tests run side by side).
const KEY: &str = "rich";
const OWN_KEY: &str = "interleave";

fn submit(model: &str, prompt: &str, extra: &[(&str, &str)]) -> Value {
    submit_as(KEY, model, prompt, extra)
}

fn submit_as(key: &str, model: &str, prompt: &str, extra: &[(&str, &str)]) -> Value {
    let mut form = Form::new().text("prompt", prompt.to_owned()).part(
        "control_image",
        Part::bytes(sample("rocket.jpg")).file_name("r.jpg"),
    );
    for (k, v) in extra {
        form = form.text((*k).to_owned(), (*v).to_owned());
    }
    let a = Answer::from(
        client()
            .post(format!("{}/v2/{model}", base()))
            .header("x-api-key", test_key(key))
            .multipart(form)
            .send()
            .unwrap(),
    );
    assert_eq!(a.status, 200, "{}", a.text);
    a.json()
}

fn cancel(id: &str) -> Answer {
    cancel_as(KEY, id)
}

fn cancel_as(key: &str, id: &str) -> Answer {
    Answer::from(
        client()
            .post(format!("{}/v2/requests/{id}/cancel", base()))
            .header("x-api-key", test_key(key))
            .send()
            .unwrap(),
    )
}

fn result(id: &str) -> Value {
    get(&format!("{}/v2/requests/{id}", base())).json()
}

fn sim_job(prompt: &str) -> Option<Value> {
    sim_jobs().into_iter().find(|j| j["prompt"] == prompt)
}

/// The job's output paths `0..n` answer 404.
fn assert_no_outputs(id: &str, ext: &str, n: usize) {
    for k in 0..n {
        let url = format!("{}/results/{id}/{k}.{ext}", base());
        assert_eq!(get(&url).status, 404, "{url} survived the cancel");
    }
}

#[test]
#[ignore = "needs the running stack: cargo xtask test"]
fn a_cancel_during_the_submit_stops_the_upstream_and_refunds_what_it_confirms() {
    // pro goes to Replicate when Segmind refuses; the job stays queued there.
    let prompt = unique("cancel in submit [sim:segmind:503!] [sim:queue=60]");
    let gate = Gate::close(Some("replicate"), "submit", &prompt);
    let job = submit_as(OWN_KEY, "flux-depth-pro", &prompt, &[]);
    let id = job["request_id"].as_str().unwrap().to_owned();
    gate.wait_parked();
    let before = balance_of(&test_key(OWN_KEY));
    let canceled = cancel_as(OWN_KEY, &id);
    assert_eq!(canceled.status, 200, "{}", canceled.text);
    assert_eq!(canceled.json()["status"], "FAILED");
    assert_eq!(canceled.json()["error"], "Canceled by its owner");
    // The provider's answer is still out: nothing is promised yet.
    assert_eq!(canceled.json()["metrics"]["credits"]["refunded"], 0);
    gate.open();
    // Replicate then accepts it; the edge cancels it there before it started, so
    // nothing was spent and the job is refunded in full.
    let refunded = eventually(
        "the refund after the upstream stop",
        Duration::from_secs(60),
        || {
            let r = result(&id);
            (r["metrics"]["credits"]["refunded"] == 5).then_some(r)
        },
    );
    assert_eq!(refunded["status"], "FAILED", "the cancel stands");
    eventually("the balance", Duration::from_secs(30), || {
        (balance_of(&test_key(OWN_KEY)) == before + 5).then_some(())
    });
    let upstream = sim_job(&prompt).expect("sim has it");
    assert_eq!(upstream["canceled"], true, "{upstream}");
}

#[test]
#[ignore = "needs the running stack: cargo xtask test"]
fn a_cancel_during_a_poll_is_not_undone_by_the_poll() {
    let prompt = unique("cancel in poll");
    let poll = Gate::close(Some("segmind"), "poll", &prompt);
    let job = submit("flux-depth-pro", &prompt, &[]);
    let id = job["request_id"].as_str().unwrap().to_owned();
    poll.wait_parked();
    let canceled = cancel(&id);
    assert_eq!(canceled.status, 200, "{}", canceled.text);
    let body = canceled.json();
    // Segmind cannot stop a job: once submitted it is spent, so nothing is refunded.
    assert_eq!(body["metrics"]["credits"]["refunded"], 0, "{body}");
    // Let the upstream finish, then release the poll: its COMPLETED must be ignored.
    eventually("sim finishing", Duration::from_secs(30), || {
        sim_job(&prompt).filter(|j| j["phase"] == "completed")
    });
    let download = Gate::close(Some("cdn"), "download", &prompt);
    poll.open();
    assert!(
        !download.parked_within(3_000),
        "the edge downloaded the outputs of a canceled job"
    );
    download.open();
    let r = result(&id);
    assert_eq!(r["status"], "FAILED", "{r}");
    assert_eq!(r["output"], serde_json::json!([]));
    assert_no_outputs(&id, "jpg", 1);
}

#[test]
#[ignore = "needs the running stack: cargo xtask test"]
fn a_cancel_between_two_output_writes_leaves_no_image() {
    // Two outputs: the first is downloaded and written to R2, the second is held.
    let prompt = unique("cancel in download");
    let second = Gate::close(Some("cdn"), "download", &format!("{prompt}#1"));
    let job = submit(
        "flux-depth-dev",
        &prompt,
        &[("num_outputs", "2"), ("output_format", "png")],
    );
    let id = job["request_id"].as_str().unwrap().to_owned();
    second.wait_parked();
    let canceled = cancel(&id);
    assert_eq!(canceled.status, 200, "{}", canceled.text);
    assert_eq!(canceled.json()["status"], "FAILED");
    // The first output, already in R2 but in no record, is gone with the cancel.
    assert_no_outputs(&id, "png", 2);
    second.open();
    let r = wait_terminal(
        &format!("{}/v2/requests/{id}/status", base()),
        Duration::from_secs(30),
    );
    assert_eq!(r.json()["status"], "FAILED");
    // The held download finishes; the edge must not write it.
    eventually(
        "sim serving the held download",
        Duration::from_secs(30),
        || {
            let served = client()
                .get(format!("{}/debug/requests", sim_url()))
                .send()
                .ok()?
                .json::<Value>()
                .ok()?;
            (served[&prompt]["downloads"].as_u64()? >= 2).then_some(())
        },
    );
    let r = result(&id);
    assert_eq!(r["status"], "FAILED", "{r}");
    assert_no_outputs(&id, "png", 2);
}

#[test]
#[ignore = "needs the running stack: cargo xtask test"]
fn a_cancel_of_a_finished_job_is_a_conflict_and_changes_nothing() {
    let job = submit("flux-depth-pro", &unique("finished first"), &[]);
    let id = job["request_id"].as_str().unwrap().to_owned();
    let done = wait_terminal(job["status_url"].as_str().unwrap(), Duration::from_secs(60));
    assert_eq!(done.json()["status"], "COMPLETED");
    assert_eq!(done.json()["metrics"]["credits"]["refunded"], 0);
    let before = result(&id);
    let late = cancel(&id);
    assert_eq!(late.status, 409, "{}", late.text);
    assert_eq!(late.json()["code"], "conflict");
    let after = result(&id);
    assert_eq!(after, before, "nothing changed");
    let image = get(after["output"][0].as_str().unwrap());
    assert_eq!(image.status, 200, "the result is intact");
}

#[test]
#[ignore = "needs the running stack: cargo xtask test"]
fn a_running_job_tells_what_a_cancel_would_refund() {
    // Held before the provider answers the submit, then accepted: from then on a
    // cancel would refund nothing on Segmind.
    let prompt = unique("refund preview");
    let gate = Gate::close(Some("segmind"), "poll", &prompt);
    let job = submit("flux-depth-pro", &prompt, &[]);
    let id = job["request_id"].as_str().unwrap().to_owned();
    gate.wait_parked();
    let s = get(&format!("{}/v2/requests/{id}/status", base())).json();
    assert_eq!(s["metrics"]["credits"]["charged"], 5, "{s}");
    assert_eq!(s["metrics"]["credits"]["refund_on_cancel"], 0, "{s}");
    gate.open();
    let done = wait_terminal(job["status_url"].as_str().unwrap(), Duration::from_secs(60));
    assert!(
        done.json()["metrics"]["credits"]
            .get("refund_on_cancel")
            .is_none(),
        "only while it runs"
    );
}
