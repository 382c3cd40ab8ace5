//! The Ledger as rows and idempotency done right (issue 15): a key is bound to its
//! request, visible once the job exists, charged once under concurrency; accounts
//! stored before rows still work; truncated control images are refused at submit.
//! `limits_phase_*` run on a second stack with production's anonymous settings
//! (`cargo xtask test` starts it): keyless reads are limited per address.

use std::time::Duration;

use parallax_e2e::{Answer, balance_of, base, client, credits, sample, sample_png, test_key};
use reqwest::blocking::RequestBuilder;
use reqwest::blocking::multipart::{Form, Part};
use serde_json::{Value, json};

fn submit(key: &str, idem: Option<&str>, form: Form) -> Answer {
    let mut b = client()
        .post(format!("{}/v2/flux-depth-pro", base()))
        .header("x-api-key", key);
    if let Some(k) = idem {
        b = b.header("idempotency-key", k);
    }
    send(b.multipart(form))
}

fn send(b: RequestBuilder) -> Answer {
    Answer::from(b.send().expect("request"))
}

fn form_with(prompt: &str, image: Vec<u8>, name: &str, mime: &str) -> Form {
    Form::new().text("prompt", prompt.to_owned()).part(
        "control_image",
        Part::bytes(image)
            .file_name(name.to_owned())
            .mime_str(mime)
            .unwrap(),
    )
}

fn form(prompt: &str) -> Form {
    form_with(prompt, sample("chelsea.jpg"), "chelsea.jpg", "image/jpeg")
}

fn unique(label: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{label}-{nanos:x}")
}

#[test]
#[ignore = "needs the running stack: cargo xtask test"]
fn the_same_key_and_request_replay_the_job_even_sent_another_way() {
    let key = test_key("ledger_replay");
    let idem = unique("replay");
    let first = submit(&key, Some(&idem), form("replayed"));
    assert_eq!(first.status, 200, "{}", first.text);
    let id = first.json()["request_id"].clone();
    // The same request as JSON with the image as base64: the same job, not charged.
    use base64::Engine as _;
    let again = send(
        client()
            .post(format!("{}/v2/flux-depth-pro", base()))
            .header("x-api-key", &key)
            .header("idempotency-key", &idem)
            .json(&json!({
                "prompt": "replayed",
                "control_image": base64::engine::general_purpose::STANDARD
                    .encode(sample("chelsea.jpg")),
            })),
    );
    assert_eq!(again.status, 200, "{}", again.text);
    assert_eq!(again.json()["request_id"], id);
    assert_eq!(credits(&again), credits(&first), "charged once");
}

#[test]
#[ignore = "needs the running stack: cargo xtask test"]
fn the_same_key_with_another_request_is_a_422_naming_the_header() {
    let key = test_key("ledger");
    let idem = unique("reused");
    let first = submit(&key, Some(&idem), form("the first request"));
    assert_eq!(first.status, 200, "{}", first.text);
    let before = credits(&first);
    for other in [
        form("another prompt"),
        form_with(
            "the first request",
            sample("coffee.jpg"),
            "coffee.jpg",
            "image/jpeg",
        ),
    ] {
        let a = submit(&key, Some(&idem), other);
        assert_eq!(a.status, 422, "{}", a.text);
        let body = a.json();
        assert_eq!(body["code"], "idempotency_key_reused");
        assert_eq!(body["fields"][0]["field"], "Idempotency-Key");
        assert_eq!(credits(&a), before, "nothing charged");
    }
}

#[test]
#[ignore = "needs the running stack: cargo xtask test"]
fn a_known_key_with_another_request_is_refused_before_its_image_is_fetched() {
    let key = test_key("ledger");
    let idem = unique("cheap");
    let first = submit(&key, Some(&idem), form("bound first"));
    assert_eq!(first.status, 200, "{}", first.text);
    // The test stack fetches no URL (`REMOTE_IMAGES=off`: such a submit is a 400 naming
    // control_image where the fetch would be). Under a key bound to another request
    // the 422 comes first: nothing was about to be fetched.
    let a = send(
        client()
            .post(format!("{}/v2/flux-depth-pro", base()))
            .header("x-api-key", &key)
            .header("idempotency-key", &idem)
            .json(&json!({
                "prompt": "bound first",
                "control_image": "https://images.example.com/elsewhere.jpg",
            })),
    );
    assert_eq!(a.status, 422, "{}", a.text);
    assert_eq!(a.json()["code"], "idempotency_key_reused");
}

#[test]
#[ignore = "needs the running stack: cargo xtask test"]
fn an_account_without_credits_is_refused_before_its_body_is_read() {
    // Not even JSON: a 400 if it were read; a 406 because it is not.
    let a = send(
        client()
            .post(format!("{}/v2/flux-depth-pro", base()))
            .header("x-api-key", test_key("broke"))
            .header("content-type", "application/json")
            .body("{ this is not read"),
    );
    assert_eq!(a.status, 406, "{}", a.text);
    assert_eq!(a.json()["code"], "insufficient_credits");
}

#[test]
#[ignore = "needs the running stack: cargo xtask test"]
fn concurrent_submits_with_one_key_make_one_job_charged_once() {
    let key = test_key("ledger_concurrent");
    let idem = unique("concurrent");
    let before = balance_of(&key);
    let answers: Vec<Answer> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..6)
            .map(|_| s.spawn(|| submit(&key, Some(&idem), form("at once"))))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut ids = Vec::new();
    for a in &answers {
        match a.status {
            200 => ids.push(a.json()["request_id"].clone()),
            // Another of them was still starting the job: retry after a second.
            409 => {
                assert_eq!(a.json()["code"], "conflict", "{}", a.text);
                assert_eq!(a.header("retry-after"), Some("1"));
            }
            other => panic!("unexpected {other}: {}", a.text),
        }
    }
    assert!(!ids.is_empty(), "one of them made the job");
    assert!(ids.iter().all(|i| *i == ids[0]), "one job: {ids:?}");
    // A retry once the first is confirmed replays it.
    std::thread::sleep(Duration::from_millis(300));
    let retry = submit(&key, Some(&idem), form("at once"));
    assert_eq!(retry.status, 200, "{}", retry.text);
    assert_eq!(retry.json()["request_id"], ids[0]);
    assert_eq!(balance_of(&key), before - 5, "charged once");
}

fn dev_ledger(key: &str, op: Value) -> Value {
    let a = send(
        client()
            .post(format!("{}/__dev/ledger", base()))
            .header("x-api-key", key)
            .json(&op),
    );
    assert_eq!(a.status, 200, "{}", a.text);
    a.json()
}

#[test]
#[ignore = "needs the running stack: cargo xtask test"]
fn an_account_stored_before_rows_still_submits_replays_and_refunds() {
    let key = test_key("legacy");
    let old_job = "0b6c1e39-5d2f-4c5e-9a41-3f0d2a7c9e11";
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    // The single stored value accounts had before rows (its grants already applied).
    let stats = dev_ledger(
        &key,
        json!({"op": "dev_legacy", "state": {
            "balance": 42,
            "applied_grants": [],
            "day": null,
            "charges": {old_job: {"amount": 5, "refunded": false}},
            "idempotency": {"legacy-order-1": [old_job, now_ms]},
            "jobs": [old_job]
        }}),
    );
    assert_eq!(stats["stats"]["legacy_stored"], true);
    assert_eq!(stats["stats"]["charges"], 0);

    assert_eq!(balance_of(&key), 42, "imported, grants not applied again");
    let stats = dev_ledger(&key, json!({"op": "dev_stats"}));
    assert_eq!(
        stats["stats"]["legacy_stored"], false,
        "the old value is gone"
    );
    assert_eq!(stats["stats"]["charges"], 1);
    assert_eq!(stats["stats"]["keys"], 1);

    // Its idempotency key still replays its job (keys from before fingerprints
    // replay any body).
    let replay = submit(&key, Some("legacy-order-1"), form("anything"));
    assert_eq!(replay.status, 200, "{}", replay.text);
    assert_eq!(replay.json()["request_id"], old_job);
    assert_eq!(credits(&replay), 42);

    // New jobs are charged, and a failed one refunded.
    let failing = submit(&key, None, form("refund me [sim:fail]"));
    assert_eq!(failing.status, 200, "{}", failing.text);
    assert_eq!(credits(&failing), 37);
    parallax_e2e::wait_terminal(
        failing.json()["status_url"].as_str().unwrap(),
        Duration::from_secs(60),
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while balance_of(&key) != 42 {
        assert!(std::time::Instant::now() < deadline, "not refunded");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A minimal whole lossy WebP of `w`×`h` (RIFF size = its length − 8).
fn webp(w: u16, h: u16) -> Vec<u8> {
    let mut vp8 = vec![0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a];
    vp8.extend_from_slice(&w.to_le_bytes());
    vp8.extend_from_slice(&h.to_le_bytes());
    vp8.extend_from_slice(&[0; 6]);
    let mut chunk = b"VP8 ".to_vec();
    chunk.extend_from_slice(&(vp8.len() as u32).to_le_bytes());
    chunk.extend_from_slice(&vp8);
    let mut b = b"RIFF".to_vec();
    b.extend_from_slice(&((chunk.len() + 4) as u32).to_le_bytes());
    b.extend_from_slice(b"WEBP");
    b.extend_from_slice(&chunk);
    b
}

#[test]
#[ignore = "needs the running stack: cargo xtask test"]
fn a_truncated_control_image_is_a_400_naming_it_and_costs_nothing() {
    let key = test_key("ledger_truncated");
    let jpg = sample("chelsea.jpg");
    let png = sample_png("chelsea.jpg");
    let webp = webp(64, 48);
    for (name, bytes, mime) in [
        ("cut.jpg", jpg[..jpg.len() - 300].to_vec(), "image/jpeg"),
        ("cut.png", png[..png.len() - 20].to_vec(), "image/png"),
        ("cut.webp", webp[..webp.len() - 3].to_vec(), "image/webp"),
    ] {
        let before = balance_of(&key);
        let a = submit(&key, None, form_with("truncated", bytes, name, mime));
        assert_eq!(a.status, 400, "{name}: {}", a.text);
        let body = a.json();
        assert_eq!(body["fields"][0]["field"], "control_image", "{name}");
        assert!(
            body["error"].as_str().unwrap().contains("truncated"),
            "{name}: {}",
            a.text
        );
        assert_eq!(balance_of(&key), before, "{name}: nothing charged");
    }
}

#[test]
#[ignore = "needs the running stack: cargo xtask test"]
fn healthz_names_providers_and_never_their_hosts() {
    let a = parallax_e2e::get(&format!("{}/healthz", base()));
    assert_eq!(a.status, 200);
    assert!(!a.text.contains("127.0.0.1"), "{}", a.text);
    assert!(!a.text.contains("host"), "{}", a.text);
    let providers = a.json()["models"]["flux-depth-dev"].clone();
    assert!(
        providers
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "comfyui" && p["configured"] == true),
        "{providers}"
    );
}

// ---------------------------------------------------------------------------
// Run by `cargo xtask test` on a stack with production's anonymous settings
// (`ANON_DAILY_CREDITS=0`) and `RATE_LIMIT_KEYLESS_READS_PER_MIN=20`.

/// The keyless read limit of the limits stack.
const KEYLESS_PER_MIN: usize = 20;

#[test]
#[ignore = "run by cargo xtask test on the limits stack"]
fn limits_phase_keyless_reads_are_limited_per_address() {
    let key = test_key("limits");
    let job = submit(&key, None, form("read me without a key"));
    assert_eq!(job.status, 200, "{}", job.text);
    let id = job.json()["request_id"].as_str().unwrap().to_owned();
    let status = format!("{}/v2/requests/{id}/status", base());
    let mut refused = None;
    // The minute may roll over once meanwhile: allow two windows' worth.
    for n in 0..=2 * KEYLESS_PER_MIN + 1 {
        let a = parallax_e2e::get(&status);
        if a.status == 429 {
            refused = Some((n, a));
            break;
        }
        assert_eq!(a.status, 200, "{}", a.text);
    }
    let (n, a) = refused.expect("keyless reads were never limited");
    assert!(n >= KEYLESS_PER_MIN, "limited after {n} reads");
    assert_eq!(a.json()["code"], "rate_limited");
    assert!(a.header("retry-after").is_some());
    // Every keyless read route shares the address's bucket.
    for path in [
        format!("/v2/requests/{id}"),
        format!("/v1/prediction/{id}"),
        "/v2/requests/00000000-0000-4000-8000-000000000000/status".to_owned(),
    ] {
        let a = parallax_e2e::get(&format!("{}{path}", base()));
        assert_eq!(a.status, 429, "{path}: {}", a.text);
    }
    // A key's reads are its own.
    let keyed = send(client().get(&status).header("x-api-key", &key));
    assert_eq!(keyed.status, 200, "{}", keyed.text);
    // IPv6 clients share one bucket per /56 (`wrangler dev` passes the client's
    // CF-Connecting-IP through, as Cloudflare's edge sets it).
    let from = |ip: &str| {
        send(
            client()
                .get(format!("{}/v2/requests/{id}/status", base()))
                .header("cf-connecting-ip", ip),
        )
        .status
    };
    let mut n = 0;
    while from(&format!("2001:db8:77:1:{:x}::1", n + 1)) == 200 {
        n += 1;
        assert!(
            n <= 2 * KEYLESS_PER_MIN + 1,
            "one /56, many addresses: never limited"
        );
    }
    assert_eq!(
        from("2001:db8:77:ff:ffff::9"),
        429,
        "another /64 of the same /56"
    );
    assert_eq!(from("2001:db8:77:100::1"), 200, "another /56");
    // Without a key nothing can be submitted here.
    let anonymous = send(
        client()
            .post(format!("{}/v2/flux-depth-pro", base()))
            .multipart(form("anonymous")),
    );
    assert_eq!(anonymous.status, 401, "{}", anonymous.text);
}

#[test]
#[ignore = "needs the running stack: cargo xtask test"]
fn a_start_never_confirmed_nor_released_is_reaped_by_the_ledgers_alarm() {
    // A reservation under a key whose job never started, and whose Release was lost
    // (the handler died): the key would block and the credits stay reserved.
    let key = test_key("ledger_reaper");
    let before = balance_of(&key);
    let idem = unique("reaped");
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let job_id = format!("7d3f0c4e-2b1a-4c6d-8e9f-{:012x}", nanos & 0xffff_ffff_ffff);
    let reserved = dev_ledger(
        &key,
        json!({"op": "dev_reserve", "job_id": job_id, "amount": 5,
               "idempotency_key": idem, "pending_ms": 1000}),
    );
    assert_eq!(reserved["balance"], before - 5, "{reserved}");
    // The Ledger's alarm finds no runner record for it: refunded, key released.
    let start = std::time::Instant::now();
    while balance_of(&key) != before {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the lapsed start was not reaped"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    // The key is free: a submit under it makes a job (not a 409, not a replay).
    let a = submit(&key, Some(&idem), form(&unique("after the reaper")));
    assert_eq!(a.status, 200, "{}", a.text);
    assert_ne!(a.json()["request_id"], job_id);
}

#[test]
#[ignore = "needs the running stack: cargo xtask test"]
fn a_charge_is_never_pruned_before_its_settlement() {
    let key = test_key("ledger_prune");
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let job_id = format!("5e1a0b2c-3d4e-4f5a-8b6c-{:012x}", nanos & 0xffff_ffff_ffff);
    // A charge far past retention whose job never settled (its start pending an hour).
    dev_ledger(
        &key,
        json!({"op": "dev_reserve", "job_id": job_id, "amount": 5,
               "idempotency_key": unique("unsettled"), "pending_ms": 3_600_000,
               "age_ms": 10 * 3_600_000u64}),
    );
    // A submit prunes old charges as it reserves.
    let a = submit(&key, None, form(&unique("prunes")));
    assert_eq!(a.status, 200, "{}", a.text);
    let charge = dev_ledger(&key, json!({"op": "charge", "job_id": job_id}));
    assert_eq!(
        charge["charge"]["charged"], 5,
        "kept until settled: {charge}"
    );
}

#[test]
#[ignore = "needs the running stack: cargo xtask test"]
fn a_sync_answer_counts_its_refund_in_the_remaining_credits() {
    let key = test_key("ledger_sync");
    let before = balance_of(&key);
    let a = send(
        client()
            .post(format!("{}/v1/flux-depth-pro", base()))
            .header("x-api-key", &key)
            .multipart(form(&unique("refunded at once [sim:fail]"))),
    );
    assert_eq!(a.status, 422, "{}", a.text);
    assert_eq!(credits(&a), before, "the refund is in the answer's balance");
}
