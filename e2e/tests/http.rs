//! The slice end to end over HTTP: client → Worker → JobRunner DO → sim (Segmind
//! protocol) → R2 → client. Run by `cargo xtask test` against `wrangler dev`.

use std::time::Duration;

use parallax_e2e::{Answer, base, client, get, image_urls, sample, sample_png, wait_terminal};
use reqwest::blocking::multipart::{Form, Part};
use serde_json::{Value, json};

const STACK: &str = "needs the running stack: cargo xtask test";

fn submit_form(model: &str, form: Form) -> Answer {
    Answer::from(
        client()
            .post(format!("{}/v2/{model}", base()))
            .multipart(form)
            .send()
            .expect("POST"),
    )
}

fn submit_json(model: &str, body: &Value) -> Answer {
    Answer::from(
        client()
            .post(format!("{}/v2/{model}", base()))
            .json(body)
            .send()
            .expect("POST"),
    )
}

fn png_form(prompt: &str) -> Form {
    Form::new().text("prompt", prompt.to_owned()).part(
        "control_image",
        Part::bytes(sample_png("chelsea.jpg"))
            .file_name("chelsea.png")
            .mime_str("image/png")
            .unwrap(),
    )
}

#[test]
#[ignore = "needs the running stack: cargo xtask test"]
fn png_upload_completes_and_its_output_is_served_from_r2() {
    let _ = STACK;
    let sub = submit_form(
        "flux-depth-pro",
        png_form("a watercolor fox")
            .text("output_format", "png")
            .text("seed", "96522"),
    );
    assert_eq!(sub.status, 200, "{}", sub.text);
    let body = sub.json();
    let id = body["request_id"].as_str().unwrap().to_owned();
    assert_eq!(body["status"], "QUEUED");
    for key in ["status_url", "response_url", "poll_url"] {
        assert!(
            body[key].as_str().unwrap().starts_with(&base()),
            "{key} must be absolute: {}",
            body[key]
        );
    }
    assert_eq!(
        body["status_url"],
        format!("{}/v2/requests/{id}/status", base())
    );

    let done = wait_terminal(
        body["status_url"].as_str().unwrap(),
        Duration::from_secs(60),
    );
    assert_eq!(done.status, 200);
    assert_eq!(done.json()["status"], "COMPLETED");

    let result = get(body["response_url"].as_str().unwrap());
    assert_eq!(result.status, 200);
    let r = result.json();
    assert_eq!(r["seed"], 96522);
    assert_eq!(r["params"]["output_format"], "png");
    assert_eq!(r["metrics"]["provider"], "segmind");
    let outputs = image_urls(&r);
    assert_eq!(outputs.len(), 1);
    let url = outputs[0].as_str().unwrap();
    assert_eq!(url, format!("{}/results/{id}/0.png", base()));

    let resp = client().get(url).send().unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "image/png");
    assert!(
        resp.headers()["cache-control"]
            .to_str()
            .unwrap()
            .contains("immutable")
    );
    let etag = resp.headers()["etag"].to_str().unwrap().to_owned();
    let bytes = resp.bytes().unwrap();
    assert_eq!(
        image::guess_format(&bytes).unwrap(),
        image::ImageFormat::Png
    );
    let img = image::load_from_memory(&bytes).expect("output decodes");
    assert!(img.width() >= 256 && img.height() >= 256);

    let again = client()
        .get(url)
        .header("if-none-match", &etag)
        .send()
        .unwrap();
    assert_eq!(again.status(), 304);
}

#[test]
#[ignore = "needs the running stack: cargo xtask test"]
fn json_with_a_data_url_gives_several_webp_outputs() {
    use base64::Engine as _;
    let data = base64::engine::general_purpose::STANDARD.encode(sample("coffee.jpg"));
    let sub = submit_json(
        "flux-depth-dev",
        &json!({"prompt": "a ceramic cup on marble", "control_image": format!("data:image/jpeg;base64,{data}"),
                "num_outputs": 2, "output_format": "webp", "megapixels": "0.25"}),
    );
    assert_eq!(sub.status, 200, "{}", sub.text);
    let body = sub.json();
    let done = wait_terminal(
        body["status_url"].as_str().unwrap(),
        Duration::from_secs(60),
    );
    assert_eq!(done.json()["status"], "COMPLETED", "{}", done.text);
    let r = get(body["response_url"].as_str().unwrap()).json();
    let urls = image_urls(&r);
    let outputs: Vec<&str> = urls.iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(outputs.len(), 2);
    let mut decoded = Vec::new();
    for url in &outputs {
        assert!(url.ends_with(".webp"), "{url}");
        let bytes = client().get(*url).send().unwrap().bytes().unwrap();
        assert_eq!(
            image::guess_format(&bytes).unwrap(),
            image::ImageFormat::WebP
        );
        decoded.push(image::load_from_memory(&bytes).unwrap());
    }
    assert_ne!(
        decoded[0].as_bytes(),
        decoded[1].as_bytes(),
        "two outputs must differ"
    );
}

#[test]
#[ignore = "needs the running stack: cargo xtask test"]
fn failed_job_is_served_as_422_with_error() {
    let sub = submit_form("flux-depth-pro", png_form("blocked content [sim:fail]"));
    assert_eq!(sub.status, 200, "{}", sub.text);
    let body = sub.json();
    let done = wait_terminal(
        body["status_url"].as_str().unwrap(),
        Duration::from_secs(60),
    );
    assert_eq!(done.status, 422);
    let s = done.json();
    assert_eq!(s["status"], "FAILED");
    assert_eq!(s["code"], "job_failed");
    assert!(s["error"].as_str().unwrap().contains("moderated"), "{s}");

    let result = get(body["response_url"].as_str().unwrap());
    assert_eq!(result.status, 422);
    assert_eq!(result.json()["status"], "FAILED");
    assert!(result.json()["error"].is_string());
    assert_eq!(result.json()["output"], json!(null));
    assert_eq!(result.json()["images"], json!([]));
}

#[test]
#[ignore = "needs the running stack: cargo xtask test"]
fn a_job_finishes_with_nobody_polling() {
    let sub = submit_form("flux-depth-pro", png_form("nobody is watching"));
    assert_eq!(sub.status, 200, "{}", sub.text);
    let id = sub.json()["request_id"].as_str().unwrap().to_owned();
    // sim takes 1.5 s here; the DO's alarms must do all the work meanwhile.
    std::thread::sleep(Duration::from_secs(6));
    let direct = client()
        .get(format!("{}/results/{id}/0.jpg", base()))
        .send()
        .unwrap();
    assert_eq!(direct.status(), 200, "the output must already be in R2");
    let bytes = direct.bytes().unwrap();
    assert_eq!(
        image::guess_format(&bytes).unwrap(),
        image::ImageFormat::Jpeg
    );
}

#[test]
#[ignore = "needs the running stack: cargo xtask test"]
fn unknown_ids_models_and_routes_are_404_json() {
    let unknown = "00000000-0000-4000-8000-000000000000";
    for url in [
        format!("{}/v2/requests/{unknown}/status", base()),
        format!("{}/v2/requests/{unknown}", base()),
        format!("{}/v2/requests/not-an-id/status", base()),
        format!("{}/results/{unknown}/0.jpg", base()),
        format!("{}/results/..%2F..%2Fetc/0.jpg", base()),
        format!("{}/v2/requests/{unknown}/status/extra", base()),
    ] {
        let a = get(&url);
        assert_eq!(a.status, 404, "{url}: {}", a.text);
        assert_eq!(a.json()["code"], "not_found", "{url}");
        assert!(a.json()["error"].is_string());
    }
    let model = submit_form("flux-depth-max", png_form("x"));
    assert_eq!(model.status, 404);
    assert!(
        model.json()["error"]
            .as_str()
            .unwrap()
            .contains("flux-depth-pro")
    );
}

#[test]
#[ignore = "needs the running stack: cargo xtask test"]
fn wrong_methods_are_405_with_allow() {
    let a = Answer::from(
        client()
            .get(format!("{}/v2/flux-depth-pro", base()))
            .send()
            .unwrap(),
    );
    assert_eq!(a.status, 405);
    assert_eq!(a.header("allow"), Some("POST"));
    assert_eq!(a.json()["code"], "method_not_allowed");
    let b = Answer::from(
        client()
            .post(format!(
                "{}/v2/requests/00000000-0000-4000-8000-000000000000/status",
                base()
            ))
            .send()
            .unwrap(),
    );
    assert_eq!(b.status, 405);
    assert_eq!(b.header("allow"), Some("GET"));
}

#[test]
#[ignore = "needs the running stack: cargo xtask test"]
fn bad_input_gets_400_naming_each_field() {
    let a = submit_json(
        "flux-depth-pro",
        &json!({"control_image": "https://127.0.0.1/x.png", "steps": 5, "colour": "red"}),
    );
    assert_eq!(a.status, 400, "{}", a.text);
    let fields: Vec<String> = a.json()["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["field"].as_str().unwrap().to_owned())
        .collect();
    for f in ["prompt", "steps", "colour"] {
        assert!(fields.contains(&f.to_owned()), "{f} not in {fields:?}");
    }

    let ssrf = submit_json(
        "flux-depth-pro",
        &json!({"prompt": "x", "control_image": "https://169.254.169.254/latest/meta-data"}),
    );
    assert_eq!(ssrf.status, 400);
    assert_eq!(ssrf.json()["fields"][0]["field"], "control_image");

    let not_image = submit_form(
        "flux-depth-pro",
        Form::new().text("prompt", "x").part(
            "control_image",
            Part::bytes(b"GIF89a not really".to_vec()).file_name("a.gif"),
        ),
    );
    assert_eq!(not_image.status, 400);
    assert!(
        not_image.json()["error"]
            .as_str()
            .unwrap()
            .contains("JPEG, PNG or WebP")
    );

    let malformed = Answer::from(
        client()
            .post(format!("{}/v2/flux-depth-pro", base()))
            .header("content-type", "application/json")
            .body("{\"prompt\": ")
            .send()
            .unwrap(),
    );
    assert_eq!(malformed.status, 400);
    assert_eq!(malformed.json()["code"], "bad_request");
}

#[test]
#[ignore = "needs the running stack: cargo xtask test"]
fn health_reports_providers_without_keys_and_the_spa_is_served() {
    let h = get(&format!("{}/healthz", base()));
    assert_eq!(h.status, 200);
    assert_eq!(h.json()["ok"], true);
    let pro = &h.json()["models"]["flux-depth-pro"];
    assert_eq!(pro[0]["name"], "segmind");
    assert_eq!(pro[0]["configured"], true);
    // The circuit breaker's state, read from its Durable Object.
    assert!(
        matches!(
            pro[0]["health"].as_str(),
            Some("closed" | "half_open" | "open")
        ),
        "{pro}"
    );

    for path in ["/", "/history", "/some/deep/link"] {
        let page = get(&format!("{}{path}", base()));
        assert_eq!(page.status, 200, "{path}");
        assert!(
            page.text.contains("<title>Parallax"),
            "{path} must be the SPA"
        );
    }
}

/// Issue 16: a returning visitor's revalidation must not blank the page. Whatever the
/// Worker answers to `If-None-Match` (200 or 304), its CSP must allow the page's inline
/// bootstrap, i.e. equal the CSP of the full page (the browser merges a 304's headers
/// into its cached copy).
#[test]
#[ignore = "needs the running stack: cargo xtask test"]
fn html_revalidation_keeps_the_pages_csp() {
    for path in ["/", "/history", "/some/deep/link"] {
        let first = get(&format!("{}{path}", base()));
        assert_eq!(first.status, 200, "{path}");
        let csp = first
            .header("content-security-policy")
            .expect("CSP")
            .to_owned();
        assert!(csp.contains("'sha256-"), "{path}: {csp}");
        let Some(etag) = first.header("etag") else {
            continue; // not revalidated by ETag at all: nothing can go wrong
        };
        let again = Answer::from(
            client()
                .get(format!("{}{path}", base()))
                .header("if-none-match", etag)
                .send()
                .expect("GET"),
        );
        assert!(
            matches!(again.status, 200 | 304),
            "{path}: {}",
            again.status
        );
        assert_eq!(
            again.header("content-security-policy"),
            Some(csp.as_str()),
            "{path}: the revalidation's CSP must be the page's"
        );
        if again.status == 304 {
            assert_eq!(again.header("etag"), Some(etag), "{path}");
            assert!(again.text.is_empty());
        }
    }
}

/// The playground's build files are named by their content hash, so they are cached
/// for good (no revalidation round trip); everything else, and a build file
/// that does not exist (the SPA's HTML fallback), is not.
#[test]
#[ignore = "needs the running stack: cargo xtask test"]
fn hashed_build_files_are_immutable_and_nothing_else_is() {
    let page = get(&format!("{}/", base()));
    let href = |rel: &str| {
        let needle = format!("rel=\"{rel}\" href=\"");
        let start = page.text.find(&needle)? + needle.len();
        let end = page.text[start..].find('"')? + start;
        Some(page.text[start..end].to_owned())
    };
    let module = href("modulepreload").expect("the main module is preloaded");
    let wasm = href("preload").expect("the wasm is preloaded");
    let css = href("stylesheet").expect("the stylesheet is linked");
    assert!(module.starts_with("/parallax-app-"), "{module}");
    assert!(wasm.ends_with("_bg.wasm"), "{wasm}");
    for path in [module.as_str(), wasm.as_str(), css.as_str()] {
        let file = get(&format!("{}{path}", base()));
        assert_eq!(file.status, 200, "{path}");
        assert_eq!(
            file.header("cache-control"),
            Some("public, max-age=31536000, immutable"),
            "{path}"
        );
    }
    for path in ["/parallax-app-0000000000000000.js", "/robots.txt", "/"] {
        let other = get(&format!("{}{path}", base()));
        assert!(
            !other
                .header("cache-control")
                .unwrap_or_default()
                .contains("immutable"),
            "{path}: {:?}",
            other.header("cache-control")
        );
    }
}

/// Lines the Worker wrote for refused requests so far (`refusal_log.rs`), from the
/// stack's log (beside its state directory).
fn refusal_lines() -> usize {
    let dir = parallax_e2e::state_dir().expect("PARALLAX_STATE_DIR");
    let log = std::fs::read_to_string(dir.with_file_name("stack.log")).unwrap_or_default();
    log.lines()
        .filter(|l| l.contains("parallax-refused "))
        .count()
}

#[test]
#[ignore = "needs the running stack: cargo xtask test"]
fn refusals_are_logged_but_a_flood_of_them_is_not() {
    let before = refusal_lines();
    let flood = 300;
    for _ in 0..flood {
        let a = Answer::from(
            client()
                .get(format!("{}/v2/requests", base()))
                .header("x-api-key", "px_not_a_key_of_this_stack")
                .send()
                .expect("request"),
        );
        assert_eq!(a.status, 401, "{}", a.text);
    }
    // The log is written as it comes: wait for the first line.
    let written = parallax_e2e::eventually("a refusal logged", Duration::from_secs(20), || {
        let n = refusal_lines() - before;
        (n > 0).then_some(n)
    });
    // A few lines per 10 s window at most (other tests' refusals share the budget).
    assert!(written <= 50, "{written} lines for {flood} refusals");
}

#[test]
#[ignore = "needs the running stack: cargo xtask test"]
fn only_the_outputs_charged_for_are_stored() {
    let submit = |prompt: &str| {
        let form = Form::new().text("prompt", prompt.to_owned()).part(
            "control_image",
            Part::bytes(sample("chelsea.jpg"))
                .file_name("c.jpg")
                .mime_str("image/jpeg")
                .unwrap(),
        );
        let a = submit_form("flux-depth-pro", form);
        assert_eq!(a.status, 200, "{}", a.text);
        let sub = a.json();
        let done = wait_terminal(sub["status_url"].as_str().unwrap(), Duration::from_secs(90));
        (sub["request_id"].as_str().unwrap().to_owned(), done)
    };
    // The provider answers two images for a one-image job: one is stored.
    let (id, done) = submit("one charged, two answered [sim:extra]");
    assert_eq!(done.json()["status"], "COMPLETED", "{}", done.text);
    let result = get(&format!("{}/v2/requests/{id}", base())).json();
    assert_eq!(image_urls(&result).len(), 1, "{result}");
    // The provider did have a second image (its CDN serves it).
    let upstream = parallax_e2e::sim_jobs()
        .into_iter()
        .find(|j| {
            j["prompt"]
                .as_str()
                .is_some_and(|p| p.starts_with("one charged, two answered"))
        })
        .expect("the sim's job");
    let second = client()
        .get(format!(
            "{}/outputs/{}/1.jpg",
            parallax_e2e::sim_url(),
            upstream["id"].as_str().unwrap()
        ))
        .send()
        .unwrap();
    assert_eq!(second.status().as_u16(), 200, "two were answered");
}
