//! Interleavings (issue 15): sim holds a provider call at a gate while the test places
//! a cancel or a delete exactly between two steps of a job, then opens the gate. The
//! job's record must stay the single truth: a canceled job never completes, keeps no
//! image, and is refunded exactly what its body says (in full only when the provider
//! confirms nothing was spent).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;
use std::time::Duration;

use base64::Engine;
use parallax_e2e::{
    Answer, Gate, audit, balance_of, base, client, eventually, get, sample, sim_jobs,
    sim_submissions, sim_url, state_dir, test_key, unique, wait_terminal,
};
use reqwest::blocking::multipart::{Form, Part};
use serde_json::Value;

/// Tests that check a balance have a key of their own (tests run side by side).
const KEY: &str = "rich";
const OWN_KEY: &str = "interleave";
const DELETE_KEY: &str = "interleave_delete";
const UNSENT_KEY: &str = "interleave_unsent";

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

fn delete_as(key: &str, id: &str) -> Answer {
    Answer::from(
        client()
            .delete(format!("{}/v2/requests/{id}", base()))
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
fn a_cancel_before_the_submit_is_sent_sends_nothing_and_refunds_in_full() {
    // dev in PNG goes to ComfyUI when Segmind and Replicate refuse (the ComfyUI
    // workflow saves no JPEG). Between the attempt's start and its POST the runner
    // awaits the breaker, the finish times, the image and (for ComfyUI) the upload;
    // the cancel lands while the upload is held. No other test here uses ComfyUI, so
    // the gate holds every upload and this job's is the one parked.
    // Every provider after ComfyUI refuses too: however long the upload is held, the
    // job cannot move on to one that would accept it.
    let prompt = unique(
        "cancel before the send [sim:segmind:503!] [sim:replicate:503!] [sim:parallax:503!] [sim:fal:503!]",
    );
    let gate = Gate::close(Some("comfyui"), "upload", "");
    let job = submit_as(
        UNSENT_KEY,
        "flux-depth-dev",
        &prompt,
        &[("output_format", "png")],
    );
    let id = job["request_id"].as_str().unwrap().to_owned();
    gate.wait_parked();
    // The upload parked is this job's: its attempt to ComfyUI is out.
    let status = get(&format!("{}/v2/requests/{id}/status", base())).json();
    assert_eq!(status["metrics"]["provider"], "comfyui", "{status}");
    assert_eq!(
        status["metrics"]["credits"]["refund_on_cancel"], 0,
        "{status}"
    );
    let before = balance_of(&test_key(UNSENT_KEY));
    let canceled = cancel_as(UNSENT_KEY, &id);
    assert_eq!(canceled.status, 200, "{}", canceled.text);
    assert_eq!(canceled.json()["status"], "FAILED");
    // The attempt is out: nothing is promised yet.
    assert_eq!(canceled.json()["metrics"]["credits"]["refunded"], 0);
    gate.open();
    // The runner sees the cancel before the POST: the job is never sent, so nothing
    // was spent and it is refunded in full.
    let refunded = eventually(
        "the refund of a job never sent",
        Duration::from_secs(60),
        || {
            let r = result(&id);
            let c = &r["metrics"]["credits"];
            (c["refunded"].as_u64().is_some_and(|n| n > 0)).then(|| c.clone())
        },
    );
    let charged = refunded["charged"].as_u64().unwrap();
    assert_eq!(refunded["refunded"], charged, "{refunded}");
    eventually("the balance", Duration::from_secs(30), || {
        (balance_of(&test_key(UNSENT_KEY)) == before + charged).then_some(())
    });
    let accepted = get(&format!("{}/debug/submissions", sim_url())).json();
    assert!(accepted.get(&prompt).is_none(), "sent to {accepted}");
    assert_eq!(result(&id)["status"], "FAILED", "the cancel stands");
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
    assert_eq!(r["output"], Value::Null);
    assert_eq!(r["images"], serde_json::json!([]));
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
    let image = get(after["output"].as_str().unwrap());
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

#[test]
#[ignore = "needs the running stack: cargo xtask test"]
fn a_delete_during_the_submit_stops_the_upstream_and_refunds_before_the_purge() {
    // As the cancel above, but a DELETE: the record must outlive the submit's answer
    // (it decides the upstream cancel and the refund) and only then be purged.
    let prompt = unique("delete in submit [sim:segmind:503!] [sim:queue=60]");
    let gate = Gate::close(Some("replicate"), "submit", &prompt);
    let job = submit_as(DELETE_KEY, "flux-depth-pro", &prompt, &[]);
    let id = job["request_id"].as_str().unwrap().to_owned();
    gate.wait_parked();
    let before = balance_of(&test_key(DELETE_KEY));
    let deleted = delete_as(DELETE_KEY, &id);
    assert_eq!(deleted.status, 200, "{}", deleted.text);
    assert_eq!(deleted.json()["deleted"], true);
    let status = format!("{}/v2/requests/{id}/status", base());
    assert_eq!(get(&status).status, 404, "deleted: served as unknown");
    gate.open();
    // Replicate accepted it after the delete: the edge stops it there (before it
    // started, so nothing was spent) and refunds in full, then purges.
    eventually(
        "the upstream cancel after the delete",
        Duration::from_secs(60),
        || sim_job(&prompt).filter(|j| j["canceled"] == true),
    );
    eventually("the refund", Duration::from_secs(60), || {
        (balance_of(&test_key(DELETE_KEY)) == before + 5).then_some(())
    });
    if let Some(state) = state_dir() {
        eventually("the purge", Duration::from_secs(60), || {
            (!audit::r2_keys(&state).iter().any(|k| k.contains(&id))).then_some(())
        });
    }
    assert_eq!(get(&status).status, 404);
}

/// A webhook endpoint on loopback that holds the first delivery until the test
/// answers it, and refuses every later one at once.
struct HeldReceiver {
    url: String,
    /// The first delivery's body, once it arrived.
    first: mpsc::Receiver<Vec<u8>>,
    /// The status to answer the first delivery with.
    answer: mpsc::Sender<u16>,
    /// Deliveries after the first.
    later: mpsc::Receiver<()>,
}

fn held_receiver() -> HeldReceiver {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (first_tx, first) = mpsc::channel();
    let (answer, answer_rx) = mpsc::channel::<u16>();
    let (later_tx, later) = mpsc::channel();
    std::thread::spawn(move || {
        for (n, stream) in listener.incoming().enumerate() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut length = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some((k, v)) = line.split_once(':')
                    && k.eq_ignore_ascii_case("content-length")
                {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            let status = if n == 0 {
                let _ = first_tx.send(body);
                answer_rx
                    .recv_timeout(Duration::from_secs(120))
                    .unwrap_or(500)
            } else {
                let _ = later_tx.send(());
                500
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            );
        }
    });
    HeldReceiver {
        url: format!("http://127.0.0.1:{port}/hooks/eachlabs"),
        first,
        answer,
        later,
    }
}

#[test]
#[ignore = "needs the running stack: cargo xtask test"]
fn a_delete_during_a_webhook_attempt_purges_the_job_and_stops_the_deliveries() {
    let hook = held_receiver();
    let data_url = format!(
        "data:image/jpeg;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(sample("rocket.jpg"))
    );
    let created = Answer::from(
        client()
            .post(format!("{}/v1/prediction/", base()))
            .header("x-api-key", test_key(KEY))
            .json(&serde_json::json!({
                "model": "flux-depth-dev",
                "version": "0.0.1",
                "input": {"prompt": unique("delete in webhook"), "control_image": data_url},
                "webhook_url": hook.url,
                "webhook_secret": "whsec_interleave",
            }))
            .send()
            .unwrap(),
    );
    assert_eq!(created.status, 200, "{}", created.text);
    let id = created.json()["predictionID"].as_str().unwrap().to_owned();
    // The job completed and its webhook attempt is out, held by the receiver.
    let body = hook
        .first
        .recv_timeout(Duration::from_secs(90))
        .expect("the webhook attempt");
    let payload: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(payload["status"], "succeeded", "{payload}");
    let image = payload["output"].as_str().unwrap().to_owned();
    assert_eq!(get(&image).status, 200, "completed: its image is served");
    let deleted = delete_as(KEY, &id);
    assert_eq!(deleted.status, 200, "{}", deleted.text);
    assert_eq!(deleted.json()["status"], "COMPLETED", "deleted as it ended");
    assert_eq!(
        get(&format!("{}/v2/requests/{id}/status", base())).status,
        404
    );
    // The attempt now fails: a job that still existed would be delivered again
    // (after 2 s); a deleted one must not be, and must leave nothing behind.
    hook.answer.send(500).unwrap();
    assert!(
        hook.later.recv_timeout(Duration::from_secs(10)).is_err(),
        "a deleted job's webhook was attempted again"
    );
    assert_eq!(get(&image).status, 404, "the image went with the job");
    if let Some(state) = state_dir() {
        let left: Vec<String> = audit::r2_keys(&state)
            .into_iter()
            .filter(|k| k.contains(&id))
            .collect();
        assert!(left.is_empty(), "left in R2: {left:?}");
    }
}

#[test]
#[ignore = "needs the running stack: cargo xtask test"]
fn a_submit_whose_answer_is_lost_is_not_failed_over_and_is_decided_at_the_deadline() {
    // Segmind accepts both jobs, and sim holds its answers past the Worker's upstream
    // timeout (8 s on the test stack): their fate is unknown. Segmind has no lookup
    // by our id, so neither job may go to Replicate (it could run twice), and a cancel
    // refunds nothing yet; the deadline (30 s on the test stack) decides both.
    let tag = unique("lost answer");
    let kept = format!("{tag} kept [sim:queue=0]");
    let canceled = format!("{tag} canceled [sim:queue=0]");
    let gate = Gate::close(Some("segmind"), "submit", &tag);
    let a = submit_as(OWN_KEY, "flux-depth-pro", &kept, &[]);
    let b = submit_as(OWN_KEY, "flux-depth-pro", &canceled, &[]);
    gate.wait_parked();
    // Past the Worker's upstream timeout: the POSTs are given up on.
    std::thread::sleep(Duration::from_secs(10));
    let id = |j: &Value| j["request_id"].as_str().unwrap().to_owned();
    let (a, b) = (id(&a), id(&b));
    for (id, prompt) in [(&a, &kept), (&b, &canceled)] {
        let r = result(id);
        assert!(
            matches!(r["status"].as_str(), Some("QUEUED" | "PROCESSING")),
            "waits for its deadline: {r}"
        );
        assert_eq!(r["metrics"]["provider"], "segmind", "not failed over: {r}");
        assert_eq!(
            sim_submissions()[prompt.as_str()],
            1,
            "one submit, to Segmind only"
        );
    }
    let c = cancel_as(OWN_KEY, &b);
    assert_eq!(c.status, 200, "{}", c.text);
    assert_eq!(
        c.json()["metrics"]["credits"]["refunded"],
        0,
        "not refunded in full while it may run: {}",
        c.text
    );
    // The deadline decides: the owners got nothing, so both charges come back.
    for (id, why) in [(&a, "timed out"), (&b, "canceled")] {
        let r = eventually(why, Duration::from_secs(90), || {
            let r = result(id);
            (r["metrics"]["credits"]["refunded"] == 5).then_some(r)
        });
        assert_eq!(r["status"], "FAILED", "{r}");
    }
    assert_eq!(result(&b)["error"], "Canceled by its owner");
    for prompt in [&kept, &canceled] {
        assert_eq!(sim_submissions()[prompt.as_str()], 1, "never sent again");
    }
    gate.open();
}

#[test]
#[ignore = "needs the running stack: cargo xtask test"]
fn a_lost_answer_from_another_parallax_is_replayed_under_the_same_key_never_failed_over() {
    // Pro reaches the Parallax upstream when the providers before it refuse. Its answer
    // is held past the Worker's upstream timeout (8 s): the submit is ambiguous, and
    // another Parallax replays a submit under the same `Idempotency-Key`, so the same
    // attempt is sent again (no second job there, and no other provider).
    let prompt =
        unique("lost parallax answer [sim:segmind:503!] [sim:replicate:503!] [sim:bfl:503!]");
    let gate = Gate::close(Some("parallax"), "submit", &prompt);
    let job = submit_as(OWN_KEY, "flux-depth-pro", &prompt, &[]);
    gate.wait_parked();
    let id = job["request_id"].as_str().unwrap().to_owned();
    let done = eventually("the job on its replay", Duration::from_secs(60), || {
        let r = result(&id);
        matches!(r["status"].as_str(), Some("COMPLETED" | "FAILED")).then_some(r)
    });
    gate.open();
    assert_eq!(done["status"], "COMPLETED", "{done}");
    assert_eq!(done["metrics"]["provider"], "parallax", "{done}");
    assert_eq!(sim_submissions()[prompt.as_str()], 1, "one job upstream");
}
