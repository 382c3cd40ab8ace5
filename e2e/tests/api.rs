//! The public API's contract (issue 3): sync v1, keys and credits, rate limits,
//! idempotency, cancel/delete, retention, and every error code with a real request.

use std::time::Duration;

use parallax_e2e::{
    Answer, base, client, credits, get, image_urls, sample, test_key, wait_terminal,
};
use reqwest::blocking::RequestBuilder;
use reqwest::blocking::multipart::{Form, Part};
use serde_json::{Value, json};

fn form(prompt: &str) -> Form {
    Form::new().text("prompt", prompt.to_owned()).part(
        "control_image",
        Part::bytes(sample("chelsea.jpg"))
            .file_name("chelsea.jpg")
            .mime_str("image/jpeg")
            .unwrap(),
    )
}

fn post(path: &str) -> RequestBuilder {
    client().post(format!("{}{path}", base()))
}

fn send(b: RequestBuilder) -> Answer {
    Answer::from(b.send().expect("request"))
}

fn with_key(b: RequestBuilder, name: &str) -> RequestBuilder {
    b.header("x-api-key", test_key(name))
}

fn submit_keyed(key: &str, prompt: &str) -> Answer {
    send(with_key(post("/v2/flux-depth-pro"), key).multipart(form(prompt)))
}

#[test]
#[ignore = "needs the running stack: cargo xtask test"]
fn v1_sync_answers_the_image_bytes_or_json() {
    let resp = with_key(post("/v1/flux-depth-pro"), "rich")
        .multipart(
            form("sync please")
                .text("output_format", "png")
                .text("seed", "7"),
        )
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "image/png");
    assert_eq!(resp.headers()["x-seed-value"], "7");
    assert!(resp.headers().contains_key("x-remaining-credits"));
    let id = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    let bytes = resp.bytes().unwrap();
    assert_eq!(
        image::guess_format(&bytes).unwrap(),
        image::ImageFormat::Png
    );
    image::load_from_memory(&bytes).expect("decodes");
    // The same bytes stay available from R2.
    let stored = client()
        .get(format!("{}/results/{id}/0.png", base()))
        .send()
        .unwrap()
        .bytes()
        .unwrap();
    assert_eq!(stored, bytes);

    let a = send(
        with_key(post("/v1/flux-depth-dev"), "rich")
            .header("accept", "application/json")
            .json(
                &json!({"prompt": "json please", "num_outputs": 3, "megapixels": "0.25",
                          "control_image": base64_of("coffee.jpg")}),
            ),
    );
    assert_eq!(a.status, 200, "{}", a.text);
    let r = a.json();
    assert_eq!(r["status"], "COMPLETED");
    assert_eq!(image_urls(&r).len(), 3);
}

fn base64_of(name: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(sample(name))
}

#[test]
#[ignore = "needs the running stack: cargo xtask test"]
fn credits_are_reserved_at_submit_and_refunded_on_failure() {
    let before = credits(&send(with_key(
        client().get(format!(
            "{}/v2/requests/00000000-0000-4000-8000-000000000000/status",
            base()
        )),
        "other",
    )));
    let ok = submit_keyed("other", "paid job");
    assert_eq!(ok.status, 200);
    assert_eq!(credits(&ok), before - 5, "a pro image costs 5");
    let failing = submit_keyed("other", "refund me [sim:fail]");
    assert_eq!(credits(&failing), before - 10);
    let status_url = failing.json()["status_url"].as_str().unwrap().to_owned();
    wait_terminal(&status_url, Duration::from_secs(60));
    wait_terminal(
        ok.json()["status_url"].as_str().unwrap(),
        Duration::from_secs(60),
    );
    let after = send(with_key(client().get(&status_url), "other"));
    assert_eq!(after.status, 422);
    assert_eq!(
        credits(&after),
        before - 5,
        "the failed job was refunded, once"
    );
}

#[test]
#[ignore = "needs the running stack: cargo xtask test"]
fn an_idempotency_key_returns_the_same_job_and_charges_once() {
    let go = || {
        send(
            with_key(post("/v2/flux-depth-pro"), "idem")
                .header("idempotency-key", "order-42-retry-safe")
                .multipart(form("idempotent")),
        )
    };
    let first = go();
    let second = go();
    assert_eq!(first.status, 200, "{}", first.text);
    assert_eq!(first.json()["request_id"], second.json()["request_id"]);
    assert_eq!(credits(&first), credits(&second), "charged once");
}

#[test]
#[ignore = "needs the running stack: cargo xtask test"]
fn cancel_refunds_and_only_the_owner_may() {
    let job = submit_keyed("canceler", "a long one [sim:slow]");
    let id = job.json()["request_id"].as_str().unwrap().to_owned();
    let url = format!("{}/v2/requests/{id}", base());
    let cancel_url = format!("{url}/cancel");
    let stranger = send(with_key(client().post(&cancel_url), "other"));
    assert_eq!(stranger.status, 403);
    assert_eq!(stranger.json()["code"], "forbidden");
    let anonymous = send(client().delete(&url));
    assert_eq!(anonymous.status, 403);

    let canceled = send(with_key(client().post(&cancel_url), "canceler"));
    assert_eq!(canceled.status, 200, "{}", canceled.text);
    let body = canceled.json();
    assert_eq!(body["status"], "FAILED");
    assert_eq!(body["error"], "Canceled by its owner");
    // Segmind has no cancel: once submitted, the generation is spent and kept.
    let c = &body["metrics"]["credits"];
    assert_eq!(c["charged"], 5);
    assert_eq!(
        credits(&canceled),
        credits(&job) + c["refunded"].as_u64().unwrap(),
        "refunded what the body says"
    );
    let status = get(&format!("{url}/status"));
    assert_eq!(status.status, 422);
    assert!(
        status.json()["error"]
            .as_str()
            .unwrap()
            .contains("Canceled")
    );
    // A second cancel finds it finished.
    let again = send(with_key(client().post(&cancel_url), "canceler"));
    assert_eq!(again.status, 409, "{}", again.text);
    assert_eq!(again.json()["code"], "conflict");
}

#[test]
#[ignore = "needs the running stack: cargo xtask test"]
fn deleting_a_running_job_cancels_then_removes_it() {
    let job = submit_keyed("rich", "delete me while running [sim:slow]");
    let id = job.json()["request_id"].as_str().unwrap().to_owned();
    let url = format!("{}/v2/requests/{id}", base());
    let deleted = send(with_key(client().delete(&url), "rich"));
    assert_eq!(deleted.status, 200, "{}", deleted.text);
    assert_eq!(deleted.json()["status"], "FAILED");
    assert_eq!(deleted.json()["deleted"], true);
    assert_eq!(get(&format!("{url}/status")).status, 404);
}

#[test]
#[ignore = "needs the running stack: cargo xtask test"]
fn deleting_a_finished_job_removes_its_images() {
    let job = submit_keyed("rich", "delete me afterwards");
    let body = job.json();
    wait_terminal(
        body["status_url"].as_str().unwrap(),
        Duration::from_secs(60),
    );
    let id = body["request_id"].as_str().unwrap();
    let image = format!("{}/results/{id}/0.jpg", base());
    assert_eq!(get(&image).status, 200);
    let deleted = send(with_key(
        client().delete(body["response_url"].as_str().unwrap()),
        "rich",
    ));
    assert_eq!(deleted.status, 200, "{}", deleted.text);
    assert_eq!(deleted.json()["deleted"], true);
    assert_eq!(get(&image).status, 404);
    assert_eq!(get(body["response_url"].as_str().unwrap()).status, 404);
}

#[test]
#[ignore = "needs the running stack: cargo xtask test"]
fn after_the_retention_period_everything_is_gone() {
    let job = submit_keyed("rich", "short-lived");
    let body = job.json();
    let done = wait_terminal(
        body["status_url"].as_str().unwrap(),
        Duration::from_secs(60),
    );
    assert_eq!(done.json()["status"], "COMPLETED");
    let result = get(body["response_url"].as_str().unwrap()).json();
    let expires = result["expires_at"].as_u64().expect("expires_at");
    assert!(expires > result["created_at"].as_u64().unwrap());
    let image = result["output"].as_str().unwrap().to_owned();
    assert_eq!(get(&image).status, 200);
    // The test stack keeps results 25 s; the purge alarm runs on its own.
    std::thread::sleep(Duration::from_secs(32));
    assert_eq!(
        get(&image).status,
        404,
        "image purged from R2 without any request"
    );
    assert_eq!(get(body["status_url"].as_str().unwrap()).status, 404);
    assert_eq!(get(body["response_url"].as_str().unwrap()).status, 404);
}

/// One real request per error code of the contract.
#[test]
#[ignore = "needs the running stack: cargo xtask test"]
fn every_error_code_has_its_status_and_json_body() {
    let unknown = "00000000-0000-4000-8000-000000000000";
    let big = vec![b'a'; 16 * 1024 * 1024];
    let cases: Vec<(u16, &str, Answer)> = vec![
        (
            400,
            "bad_request",
            send(post("/v2/flux-depth-pro").json(&json!({"prompt": ""}))),
        ),
        (
            401,
            "unauthorized",
            send(
                post("/v2/flux-depth-pro")
                    .header("x-api-key", "px_not_a_key")
                    .multipart(form("x")),
            ),
        ),
        (403, "forbidden", {
            let mine = submit_keyed("rich", "mine");
            let url = mine.json()["response_url"].as_str().unwrap().to_owned();
            send(with_key(client().delete(url), "other"))
        }),
        (
            404,
            "not_found",
            get(&format!("{}/v2/requests/{unknown}", base())),
        ),
        (
            405,
            "method_not_allowed",
            send(client().put(format!("{}/v2/flux-depth-dev", base()))),
        ),
        (
            406,
            "insufficient_credits",
            send(
                with_key(post("/v2/flux-depth-dev"), "poor")
                    .multipart(form("4 images cost 8").text("num_outputs", "4")),
            ),
        ),
        (
            413,
            "payload_too_large",
            send(
                post("/v2/flux-depth-pro")
                    .header("content-type", "application/json")
                    .body(big),
            ),
        ),
        (
            422,
            "job_failed",
            send(post("/v1/flux-depth-pro").multipart(form("sync failure [sim:fail]"))),
        ),
        (429, "rate_limited", {
            let mut last = submit_keyed("limited", "1");
            for _ in 0..3 {
                last = submit_keyed("limited", "again");
            }
            last
        }),
        (
            502,
            "upstream_failed",
            send(post("/v1/flux-depth-pro").multipart(form("provider refuses [sim:reject]"))),
        ),
        (
            504,
            "upstream_timeout",
            send(post("/v1/flux-depth-pro").multipart(form("too slow for sync [sim:slow]"))),
        ),
    ];
    for (status, code, a) in cases {
        assert_eq!(a.status, status, "{code}: {}", a.text);
        let body: Value = a.json();
        assert_eq!(body["code"], code, "{}", a.text);
        assert!(
            body["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{code}"
        );
        match status {
            405 => assert_eq!(a.header("allow"), Some("POST")),
            429 => assert!(
                a.header("retry-after")
                    .and_then(|v| v.parse::<u64>().ok())
                    .is_some()
            ),
            400 => assert!(body["fields"].as_array().is_some_and(|f| !f.is_empty())),
            _ => {}
        }
    }
}
