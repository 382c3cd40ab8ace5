//! Upstreams (issue 4): every provider completes jobs for the models it serves,
//! submit fails over in order, and every fault ends COMPLETED or FAILED with a reason
//! (refunded) within the deadline. The test stack routes
//! pro → segmind, replicate, bfl, parallax and dev → segmind, replicate, comfyui,
//! parallax, fal; a `[sim:PROVIDER:503!]` in the prompt makes that provider refuse, which
//! is how a test steers a job to the provider it wants.

use std::time::{Duration, Instant};

use parallax_e2e::{
    Answer, balance_of, base, client, credits, eventually, get, image_urls, output_bytes, sample,
    sim_submissions, test_key, unique, wait_terminal,
};
use reqwest::blocking::multipart::{Form, Part};
use serde_json::Value;

fn submit(model: &str, prompt: &str, extra: &[(&str, &str)]) -> Answer {
    let mut form = Form::new().text("prompt", prompt.to_owned()).part(
        "control_image",
        Part::bytes(sample("coffee.jpg"))
            .file_name("coffee.jpg")
            .mime_str("image/jpeg")
            .unwrap(),
    );
    for (k, v) in extra {
        form = form.text((*k).to_owned(), (*v).to_owned());
    }
    let a = Answer::from(
        client()
            .post(format!("{}/v2/{model}", base()))
            .multipart(form)
            .send()
            .unwrap(),
    );
    assert_eq!(a.status, 200, "{}", a.text);
    a
}

/// Follows a job to its end and returns its result body.
fn finish(sub: &Answer) -> Value {
    let body = sub.json();
    wait_terminal(
        body["status_url"].as_str().unwrap(),
        Duration::from_secs(90),
    );
    get(body["response_url"].as_str().unwrap()).json()
}

/// Every output is in R2 and decodes in the expected format.
fn assert_outputs(result: &Value, count: usize, format: image::ImageFormat) {
    assert_eq!(result["status"], "COMPLETED", "{result}");
    let outputs = image_urls(result);
    assert_eq!(outputs.len(), count, "{result}");
    for url in &outputs {
        let bytes = output_bytes(url);
        assert_eq!(image::guess_format(&bytes).unwrap(), format, "{url}");
        image::load_from_memory(&bytes).unwrap();
    }
}

const SKIP_SEGMIND: &str = "[sim:segmind:503!]";
const SKIP_REPLICATE: &str = "[sim:replicate:503!]";
const SKIP_BFL: &str = "[sim:bfl:503!]";
const SKIP_COMFYUI: &str = "[sim:comfyui:503!]";
const SKIP_PARALLAX: &str = "[sim:parallax:503!]";

#[test]
#[ignore = "needs the running stack: cargo xtask test"]
fn segmind_serves_both_models() {
    let r = finish(&submit("flux-depth-pro", "on segmind", &[]));
    assert_eq!(r["metrics"]["provider"], "segmind");
    assert_outputs(&r, 1, image::ImageFormat::Jpeg);
    let r = finish(&submit(
        "flux-depth-dev",
        "on segmind",
        &[("num_outputs", "2"), ("output_format", "png")],
    ));
    assert_eq!(r["metrics"]["provider"], "segmind");
    assert_outputs(&r, 2, image::ImageFormat::Png);
}

#[test]
#[ignore = "needs the running stack: cargo xtask test"]
fn replicate_serves_both_models_after_failover_from_a_503() {
    let r = finish(&submit(
        "flux-depth-pro",
        &format!("on replicate {SKIP_SEGMIND}"),
        &[("output_format", "png")],
    ));
    assert_eq!(
        r["metrics"]["provider"], "replicate",
        "failover named in metrics"
    );
    assert_outputs(&r, 1, image::ImageFormat::Png);
    let r = finish(&submit(
        "flux-depth-dev",
        &format!("on replicate {SKIP_SEGMIND}"),
        &[("num_outputs", "3"), ("output_format", "webp")],
    ));
    assert_eq!(r["metrics"]["provider"], "replicate");
    assert_outputs(&r, 3, image::ImageFormat::WebP);
}

#[test]
#[ignore = "needs the running stack: cargo xtask test"]
fn bfl_serves_pro() {
    let r = finish(&submit(
        "flux-depth-pro",
        &format!("on bfl {SKIP_SEGMIND} {SKIP_REPLICATE}"),
        &[],
    ));
    assert_eq!(r["metrics"]["provider"], "bfl");
    assert_outputs(&r, 1, image::ImageFormat::Jpeg);
}

#[test]
#[ignore = "needs the running stack: cargo xtask test"]
fn comfyui_serves_dev_with_the_workflow_template() {
    let r = finish(&submit(
        "flux-depth-dev",
        &format!("on my gpu {SKIP_SEGMIND} {SKIP_REPLICATE}"),
        &[
            ("num_outputs", "2"),
            ("output_format", "png"),
            ("megapixels", "0.25"),
        ],
    ));
    assert_eq!(r["metrics"]["provider"], "comfyui");
    assert_outputs(&r, 2, image::ImageFormat::Png);
    let r = finish(&submit(
        "flux-depth-dev",
        &format!("webp on my gpu {SKIP_SEGMIND} {SKIP_REPLICATE}"),
        &[("output_format", "webp")],
    ));
    assert_eq!(r["metrics"]["provider"], "comfyui");
    assert_outputs(&r, 1, image::ImageFormat::WebP);
}

#[test]
#[ignore = "needs the running stack: cargo xtask test"]
fn fal_serves_dev_last_in_line() {
    let r = finish(&submit(
        "flux-depth-dev",
        &format!("on fal {SKIP_SEGMIND} {SKIP_REPLICATE} {SKIP_COMFYUI} {SKIP_PARALLAX}"),
        &[("num_outputs", "2"), ("output_format", "png")],
    ));
    assert_eq!(r["metrics"]["provider"], "fal");
    assert_outputs(&r, 2, image::ImageFormat::Png);
}

#[test]
#[ignore = "needs the running stack: cargo xtask test"]
fn a_parallax_server_serves_both_models() {
    let r = finish(&submit(
        "flux-depth-pro",
        &format!("on parallax {SKIP_SEGMIND} {SKIP_REPLICATE} {SKIP_BFL}"),
        &[],
    ));
    assert_eq!(r["metrics"]["provider"], "parallax");
    assert_outputs(&r, 1, image::ImageFormat::Jpeg);
    let r = finish(&submit(
        "flux-depth-dev",
        &format!("on parallax {SKIP_SEGMIND} {SKIP_REPLICATE} {SKIP_COMFYUI}"),
        &[("num_outputs", "2")],
    ));
    assert_eq!(r["metrics"]["provider"], "parallax");
    assert_outputs(&r, 2, image::ImageFormat::Jpeg);
}

#[test]
#[ignore = "needs the running stack: cargo xtask test"]
fn a_provider_that_cannot_honour_a_parameter_is_skipped() {
    // Replicate's pro writes no webp: with segmind refusing, the job goes to bfl.
    let r = finish(&submit(
        "flux-depth-pro",
        &format!("webp pro {SKIP_SEGMIND}"),
        &[("output_format", "webp")],
    ));
    assert_eq!(r["metrics"]["provider"], "bfl", "{r}");
    assert_outputs(&r, 1, image::ImageFormat::WebP);
}

/// Transient faults are retried (or failed over) and the job completes.
#[test]
#[ignore = "needs the running stack: cargo xtask test"]
fn transient_faults_end_completed() {
    // (`badjson`, a 200 whose body breaks off, is a submit whose fate is unknown:
    // `a_submit_whose_answer_is_lost_is_not_failed_over_and_ends_refunded`.)
    for fault in ["429", "500", "502", "truncate", "slowdownload"] {
        let started = Instant::now();
        let r = finish(&submit(
            "flux-depth-pro",
            &format!("fault [sim:{fault}]"),
            &[],
        ));
        assert_eq!(r["status"], "COMPLETED", "{fault}: {r}");
        assert_outputs(&r, 1, image::ImageFormat::Jpeg);
        assert!(started.elapsed() < Duration::from_secs(60), "{fault}");
    }
}

/// A submit that hangs past the upstream timeout, or whose 200 breaks off, may have
/// been accepted (issue 24): Segmind has no lookup by our id, so the job is neither
/// failed over to Replicate nor sent again, and its deadline (30 s on the test stack)
/// ends it, refunded in full.
#[test]
#[ignore = "needs the running stack: cargo xtask test"]
fn a_submit_whose_answer_is_lost_is_not_failed_over_and_ends_refunded() {
    std::thread::scope(|scope| {
        for fault in ["hang!", "badjson"] {
            scope.spawn(move || {
                let prompt = unique(&format!("lost answer [sim:segmind:{fault}]"));
                let sub = submit("flux-depth-pro", &prompt, &[]);
                let r = finish(&sub);
                assert_eq!(r["status"], "FAILED", "{fault}: {r}");
                assert_eq!(r["metrics"]["provider"], "segmind", "not failed over: {r}");
                let url = sub.json()["status_url"].as_str().unwrap().to_owned();
                eventually("the full refund", Duration::from_secs(30), || {
                    let c = &get(&url).json()["metrics"]["credits"];
                    (c["refunded"] == c["charged"] && c["charged"].as_u64() > Some(0)).then_some(())
                });
                assert_eq!(
                    sim_submissions()[prompt.as_str()],
                    Value::Null,
                    "no provider accepted it: it was never sent elsewhere"
                );
            });
        }
    });
}

/// Faults that cannot succeed end FAILED with a readable reason, refunded.
#[test]
#[ignore = "needs the running stack: cargo xtask test"]
fn permanent_faults_end_failed_with_a_reason_and_a_refund() {
    let key = test_key("faults");
    let balance = || balance_of(&key);
    let start = balance();
    let cases = [
        ("moderated [sim:fail]", "moderated"),
        // Users see a stable category; the provider's own text stays in the logs.
        ("gone [sim:output404]", "failed to generate"),
        (
            "retired everywhere [sim:segmind:404!] [sim:replicate:404!] [sim:parallax:404!] [sim:bfl:410!]",
            "No provider accepted",
        ),
        ("never answers [sim:500!]", "deadline"),
    ];
    let subs: Vec<(Answer, &str)> = cases
        .iter()
        .map(|(prompt, why)| {
            let form = Form::new().text("prompt", (*prompt).to_owned()).part(
                "control_image",
                Part::bytes(sample("chelsea.jpg"))
                    .file_name("c.jpg")
                    .mime_str("image/jpeg")
                    .unwrap(),
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
            (a, *why)
        })
        .collect();
    // The first submit's answer shows its reservation (nothing can be refunded yet).
    assert_eq!(credits(&subs[0].0), start - 5, "reserved at submit");
    for (sub, why) in subs {
        let done = wait_terminal(
            sub.json()["status_url"].as_str().unwrap(),
            Duration::from_secs(60),
        );
        assert_eq!(done.status, 422, "{why}: {}", done.text);
        let error = done.json()["error"].as_str().unwrap().to_owned();
        assert!(error.contains(why), "expected {why:?} in {error:?}");
    }
    assert_eq!(balance(), start, "every failed job was refunded");
}

/// Issue 26: a provider's host answering a poll with `302 Location: <another
/// origin>` (sim's `[sim:redirect]`, twice) does not get that origin the provider's
/// key: redirects are not followed, the poll is an upstream error, and the job goes on
/// at the provider's own host.
#[test]
#[ignore = "needs the running stack: cargo xtask test"]
fn a_redirect_off_the_providers_host_gets_no_key() {
    let prompt = unique("redirected poll [sim:redirect]");
    let r = finish(&submit("flux-depth-pro", &prompt, &[]));
    assert_eq!(r["metrics"]["provider"], "segmind", "{r}");
    assert_outputs(&r, 1, image::ImageFormat::Jpeg);
    let polls = get(&format!("{}/debug/requests", parallax_e2e::sim_url())).json();
    assert!(
        polls[prompt.as_str()]["polls"].as_u64().unwrap_or(0) >= 3,
        "the redirects were served: {polls}"
    );
    let elsewhere = get(&format!("{}/debug/elsewhere", parallax_e2e::sim_url())).json();
    let arrived: Vec<&Value> = elsewhere
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["path"].as_str().is_some_and(|p| p.contains("/segmind/")))
        .collect();
    assert!(
        arrived.is_empty(),
        "nothing followed the redirect: {arrived:?}"
    );
}
