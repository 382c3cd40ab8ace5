//! Helpers for the HTTP tests in `tests/`, which run against the built Worker in
//! `wrangler dev` with `sim` (started by `cargo xtask test`, which sets
//! `PARALLAX_BASE_URL`). Without the stack they are `#[ignore]`d, so a plain
//! `cargo test` skips them visibly rather than failing.

use std::time::{Duration, Instant};

use serde_json::Value;

/// Where the stack listens.
pub fn base() -> String {
    std::env::var("PARALLAX_BASE_URL").unwrap_or_else(|_| "http://127.0.0.1:8787".into())
}

pub fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("http client")
}

/// A sample photo from `public/samples`.
pub fn sample(name: &str) -> Vec<u8> {
    let path = format!("{}/../public/samples/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The sample re-encoded as a real PNG.
pub fn sample_png(name: &str) -> Vec<u8> {
    let img = image::load_from_memory(&sample(name)).expect("decode sample");
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png)
        .expect("encode png");
    out.into_inner()
}

/// A response's status, headers (lowercased names) and JSON body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub text: String,
}

impl Answer {
    pub fn from(resp: reqwest::blocking::Response) -> Self {
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
            .collect();
        let text = resp.text().unwrap_or_default();
        let answer = Self {
            status,
            headers,
            text,
        };
        answer.assert_no_secret();
        answer
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The provider key the stack was started with must never reach a client.
    fn assert_no_secret(&self) {
        if let Ok(key) = std::env::var("PARALLAX_SECRET_PROBE") {
            assert!(!self.text.contains(&key), "provider key in a response body");
            assert!(
                !self.headers.iter().any(|(_, v)| v.contains(&key)),
                "provider key in a response header"
            );
        }
    }
}

pub fn get(url: &str) -> Answer {
    Answer::from(client().get(url).send().expect("GET"))
}

/// Submits `sample` (a JPEG of `public/samples/`) with `prompt` to `POST /v2/{model}`,
/// with `key` if given; asserts the 200 and answers it. It carries an Idempotency-Key
/// of its own, so a submit `wrangler dev`'s proxy lost is sent again safely
/// ([`send_repeatable`]).
pub fn submit_sample(model: &str, prompt: &str, sample_name: &str, key: Option<&str>) -> Answer {
    let bytes = sample(sample_name);
    let idempotency = unique("submit-sample").replace(' ', "-");
    let a = send_repeatable(|| {
        let form = reqwest::blocking::multipart::Form::new()
            .text("prompt", prompt.to_owned())
            .part(
                "control_image",
                reqwest::blocking::multipart::Part::bytes(bytes.clone())
                    .file_name(sample_name.to_owned())
                    .mime_str("image/jpeg")
                    .expect("mime"),
            );
        let req = client()
            .post(format!("{}/v2/{model}", base()))
            .header("idempotency-key", &idempotency)
            .multipart(form);
        match key {
            Some(key) => req.header("x-api-key", key),
            None => req,
        }
    });
    assert_eq!(a.status, 200, "{}", a.text);
    a
}

/// A job's charge row in its account's Ledger, `(charged, refunded)`, through the test
/// stack's `/__dev/ledger` (served only where `LEDGER_DEV_OPS=on`); `None` if the
/// Ledger has no row for it.
pub fn ledger_charge(key: &str, job_id: &str) -> Option<(u64, u64)> {
    let a = Answer::from(
        client()
            .post(format!("{}/__dev/ledger", base()))
            .header("x-api-key", key)
            .json(&serde_json::json!({"op": "charge", "job_id": job_id}))
            .send()
            .expect("POST /__dev/ledger"),
    );
    assert_eq!(a.status, 200, "/__dev/ledger charge: {}", a.text);
    let charge = &a.json()["charge"];
    let charged = charge["charged"].as_u64()?;
    Some((charged, charge["refunded"].as_u64().unwrap_or(0)))
}

/// Whether an answer is `wrangler dev`'s proxy losing the request (see
/// [`send_repeatable`]), not the Worker's.
pub fn lost_by_dev_proxy(status: u16, body: &str) -> bool {
    status == 503 && body.contains("restarted mid-request")
}

/// A result's image URLs, in order: `images[].url`, each checked to be what Segmind's
/// clients read (`output` is the first one; `null` without images).
pub fn image_urls(result: &Value) -> Vec<Value> {
    let urls: Vec<Value> = result["images"]
        .as_array()
        .unwrap_or_else(|| panic!("no images in {result}"))
        .iter()
        .map(|i| i["url"].clone())
        .collect();
    assert_eq!(
        result["output"],
        urls.first().cloned().unwrap_or(Value::Null),
        "output is the first image's URL: {result}"
    );
    urls
}

/// The bytes at an output URL (a JSON string of a result's `output`).
pub fn output_bytes(url: &Value) -> Vec<u8> {
    client()
        .get(url.as_str().expect("an output URL"))
        .send()
        .expect("GET output")
        .bytes()
        .expect("output bytes")
        .to_vec()
}

/// Sends a request that is safe to repeat (a cancel, a delete, a submit with an
/// `Idempotency-Key`), once more if `wrangler dev`'s proxy lost it: under load its
/// proxy sometimes drops a non-GET
/// request on a kept-alive connection and answers 503 "Your worker restarted
/// mid-request" although the Worker never restarted (cloudflare/workers-sdk#14641; it
/// retries only GET and HEAD itself). Production has no such proxy, so this is the
/// test stack's artefact, not a Parallax answer to hide.
///
/// The lost request may have reached the Worker: a submit's resend is then answered
/// 409 "still being processed" (with `Retry-After`) until the first one is settled,
/// and is sent again after that wait, for up to 90 s (the key's pending window).
pub fn send_repeatable(request: impl Fn() -> reqwest::blocking::RequestBuilder) -> Answer {
    let lost = |a: &Answer| lost_by_dev_proxy(a.status, &a.text);
    let first = Answer::from(request().send().expect("request"));
    if !lost(&first) {
        return first;
    }
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut wait = Duration::from_millis(200);
    loop {
        std::thread::sleep(wait);
        let again = Answer::from(request().send().expect("request"));
        let in_progress = again.status == 409 && again.text.contains("still being processed");
        if !(in_progress && Instant::now() < deadline) {
            return again;
        }
        wait = again
            .header("retry-after")
            .and_then(|s| s.parse().ok())
            .map_or(Duration::from_secs(1), Duration::from_secs);
    }
}

/// Polls a status URL until COMPLETED or FAILED (or panics after `limit`).
pub fn wait_terminal(status_url: &str, limit: Duration) -> Answer {
    let start = Instant::now();
    loop {
        let a = get(status_url);
        let status = a.json()["status"].as_str().unwrap_or("").to_owned();
        if status == "COMPLETED" || status == "FAILED" {
            return a;
        }
        assert!(
            matches!(status.as_str(), "QUEUED" | "PROCESSING"),
            "unexpected status body: {}",
            a.text
        );
        assert!(start.elapsed() < limit, "still {status} after {limit:?}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// A test API key created by `cargo xtask test` (`rich`, `other`, `poor`, `limited`).
pub fn test_key(name: &str) -> String {
    let all = std::env::var("PARALLAX_TEST_KEYS").unwrap_or_default();
    all.split(',')
        .find_map(|pair| pair.strip_prefix(&format!("{name}=")))
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("PARALLAX_TEST_KEYS has no key {name:?}"))
}

/// The `x-remaining-credits` of an answer.
pub fn credits(a: &Answer) -> u64 {
    a.header("x-remaining-credits")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no x-remaining-credits on {} {}", a.status, a.text))
}

/// The balance of the account behind `key`, as `x-remaining-credits` reports it on a
/// read (of an id that does not exist, so nothing else happens).
pub fn balance_of(key: &str) -> u64 {
    credits(&Answer::from(
        client()
            .get(format!(
                "{}/v2/requests/00000000-0000-4000-8000-000000000000",
                base()
            ))
            .header("x-api-key", key)
            .send()
            .expect("GET"),
    ))
}

/// The stack's `wrangler dev --persist-to` directory (set by `cargo xtask test`), for
/// the audit's look at the local R2 store.
pub fn state_dir() -> Option<std::path::PathBuf> {
    std::env::var_os("PARALLAX_STATE_DIR").map(Into::into)
}

/// Where `sim` listens (set by `cargo xtask test`).
pub fn sim_url() -> String {
    std::env::var("PARALLAX_SIM_URL").expect("PARALLAX_SIM_URL")
}

/// A prompt no other test or run uses, so sim's per-prompt counters and gates are ours.
pub fn unique(label: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{label} {nanos:x}")
}

/// A gate in sim holding one kind of provider call (see `sim/src/gates.rs`).
#[derive(Debug, Clone, Copy)]
pub struct Gate(pub u64);

impl Gate {
    /// Closes a gate for `step` calls of `provider` (any if `None`) about jobs whose
    /// prompt or id contains `matcher`.
    pub fn close(provider: Option<&str>, step: &str, matcher: &str) -> Self {
        let a = Answer::from(
            client()
                .post(format!("{}/debug/gates", sim_url()))
                .json(&serde_json::json!({"provider": provider, "step": step, "match": matcher}))
                .send()
                .expect("sim"),
        );
        assert_eq!(a.status, 200, "{}", a.text);
        Self(a.json()["id"].as_u64().expect("gate id"))
    }

    /// Waits until a call is parked at the gate (panics after a minute).
    pub fn wait_parked(self) {
        let a = self.parked_within(60_000);
        assert!(a, "nothing reached gate {} within a minute", self.0);
    }

    /// Whether a call reaches the gate within `ms`.
    pub fn parked_within(self, ms: u64) -> bool {
        let resp = client()
            .get(format!("{}/debug/gates/{}/wait?ms={ms}", sim_url(), self.0))
            .timeout(Duration::from_millis(ms + 30_000))
            .send()
            .expect("sim");
        resp.status().as_u16() == 200
    }

    pub fn open(self) {
        let a = Answer::from(
            client()
                .post(format!("{}/debug/gates/{}/open", sim_url(), self.0))
                .send()
                .expect("sim"),
        );
        assert_eq!(a.status, 200, "{}", a.text);
    }
}

/// sim's jobs: `{id, prompt, phase, canceled}`.
pub fn sim_jobs() -> Vec<Value> {
    client()
        .get(format!("{}/debug/jobs", sim_url()))
        .send()
        .expect("sim")
        .json::<Value>()
        .expect("JSON")
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Accepted submissions per prompt.
pub fn sim_submissions() -> Value {
    client()
        .get(format!("{}/debug/submissions", sim_url()))
        .send()
        .expect("sim")
        .json()
        .expect("JSON")
}

/// Polls `f` until it answers `Some` (panics after `limit`).
pub fn eventually<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub mod audit;
