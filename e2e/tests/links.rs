//! Upstream payloads that scale (issue 17, item 6): with `PUBLIC_BASE_URL` and
//! `CONTROL_LINK_SECRET` set (`cargo xtask test`'s links phase runs these on the hooks
//! stack, which has both; the main stack's HTTP run skips them with `--skip
//! links_phase`), providers that fetch URLs get the control image as a signed link to
//! this edge, which the sim fetches the way the provider would; the others keep it
//! inline. A link opens one job's control image until its deadline: a forged,
//! altered, expired or borrowed one is refused.

use std::time::Duration;

use base64::Engine;
use hmac::{Hmac, Mac};
use parallax_e2e::{
    Answer, base, client, eventually, get, image_urls, output_bytes, sample, sim_url,
    submit_sample, unique, wait_terminal,
};
use serde_json::Value;
use sha2::Sha256;

fn submit(model: &str, prompt: &str) -> Value {
    submit_sample(model, prompt, "coffee.jpg", None).json()
}

/// Runs a job to its end: (its request id, its result).
fn run(model: &str, prompt: &str) -> (String, Value) {
    let sub = submit(model, prompt);
    wait_terminal(sub["status_url"].as_str().unwrap(), Duration::from_secs(90));
    let result = get(sub["response_url"].as_str().unwrap()).json();
    (sub["request_id"].as_str().unwrap().to_owned(), result)
}

/// How the sim received this prompt's control images.
fn controls(prompt: &str) -> Vec<Value> {
    let all: Value = client()
        .get(format!("{}/debug/controls", sim_url()))
        .send()
        .expect("sim")
        .json()
        .expect("JSON");
    all[prompt].as_array().cloned().unwrap_or_default()
}

fn assert_completed_by(result: &Value, provider: &str) {
    assert_eq!(result["status"], "COMPLETED", "{result}");
    assert_eq!(result["metrics"]["provider"], provider, "{result}");
    for url in &image_urls(result) {
        let bytes = output_bytes(url);
        image::load_from_memory(&bytes).expect("an output image");
    }
}

const SKIP_SEGMIND: &str = "[sim:segmind:503!]";
const SKIP_REPLICATE: &str = "[sim:replicate:503!]";
const SKIP_COMFYUI: &str = "[sim:comfyui:503!]";
const SKIP_PARALLAX: &str = "[sim:parallax:503!]";

/// The job's signed link as the sim fetched it.
fn fetched_link(prompt: &str, scope: &str) -> String {
    let seen = controls(prompt);
    let got = seen
        .iter()
        .find(|c| c["scope"] == scope)
        .unwrap_or_else(|| panic!("{scope} got no control image: {seen:?}"));
    assert_eq!(got["via"], "url", "{got}");
    assert_eq!(got["status"], 200, "{got}");
    assert_eq!(got["bytes"], sample("coffee.jpg").len(), "{got}");
    got["url"].as_str().unwrap().to_owned()
}

#[test]
#[ignore = "needs the hooks stack: cargo xtask test (phase links)"]
fn links_phase_providers_that_fetch_urls_get_a_signed_link_and_complete_from_it() {
    for (model, skips, provider) in [
        ("flux-depth-pro", "", "segmind"),
        ("flux-depth-dev", SKIP_SEGMIND, "replicate"),
        (
            "flux-depth-dev",
            &*format!("{SKIP_SEGMIND} {SKIP_REPLICATE} {SKIP_COMFYUI} {SKIP_PARALLAX}"),
            "fal",
        ),
    ] {
        let prompt = unique(&format!("linked {provider} {skips}"));
        let (id, result) = run(model, &prompt);
        assert_completed_by(&result, provider);
        let link = fetched_link(&prompt, provider);
        let prefix = format!("{}/results/{id}/control?exp=", base());
        assert!(link.starts_with(&prefix), "{link}");
        assert!(link.contains("&sig="), "{link}");
    }
}

#[test]
#[ignore = "needs the hooks stack: cargo xtask test (phase links)"]
fn links_phase_providers_that_need_the_bytes_keep_them_inline() {
    // BFL documents base64 only; another Parallax fetches https links only, and this
    // stack's link is http.
    for (model, skips, provider) in [
        (
            "flux-depth-pro",
            format!("{SKIP_SEGMIND} {SKIP_REPLICATE}"),
            "bfl",
        ),
        (
            "flux-depth-dev",
            format!("{SKIP_SEGMIND} {SKIP_REPLICATE} {SKIP_COMFYUI}"),
            "parallax",
        ),
    ] {
        let prompt = unique(&format!("inline {provider} {skips}"));
        let (_, result) = run(model, &prompt);
        assert_completed_by(&result, provider);
        if provider == "parallax" {
            let seen = controls(&prompt);
            assert!(
                seen.iter()
                    .any(|c| c["scope"] == "parallax" && c["via"] == "inline"),
                "{seen:?}"
            );
            assert!(seen.iter().all(|c| c["via"] == "inline"), "{seen:?}");
        }
    }
}

/// `exp` and `sig` for job `id`, signed with the stack's secret (the probe key).
fn sign(id: &str, exp: u64) -> String {
    let secret = std::env::var("PARALLAX_SECRET_PROBE").expect("PARALLAX_SECRET_PROBE");
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("control\n{id}\n{exp}").as_bytes());
    let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("exp={exp}&sig={sig}")
}

fn refused(url: &str) {
    let a = Answer::from(client().get(url).send().unwrap());
    assert_eq!(a.status, 403, "{url}: {}", a.text);
    assert_eq!(a.json()["code"], "forbidden", "{}", a.text);
}

#[test]
#[ignore = "needs the hooks stack: cargo xtask test (phase links)"]
fn links_phase_a_forged_altered_expired_or_borrowed_link_is_refused() {
    let prompt = unique("link checks");
    let (id, result) = run("flux-depth-pro", &prompt);
    assert_eq!(result["status"], "COMPLETED", "{result}");
    let link = fetched_link(&prompt, "segmind");
    let query = link.split_once('?').unwrap().1.to_owned();
    let exp: u64 = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("exp="))
        .unwrap()
        .parse()
        .unwrap();

    // The link itself still opens the control image, uncached.
    let resp = client().get(&link).send().unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(
        resp.headers()["cache-control"].to_str().unwrap(),
        "private, no-store"
    );
    assert_eq!(resp.bytes().unwrap().to_vec(), sample("coffee.jpg"));

    let control = format!("{}/results/{id}/control", base());
    // A forged signature, an altered expiry, missing parts.
    refused(&format!("{control}?exp={exp}&sig=AAAA"));
    refused(&format!(
        "{control}?{}",
        query.replace(&format!("exp={exp}"), &format!("exp={}", exp + 3600))
    ));
    refused(&format!("{control}?exp={exp}"));
    refused(&format!("{control}?{}", query.split('&').nth(1).unwrap()));
    // Signed with the right secret but over: expired.
    refused(&format!("{control}?{}", sign(&id, 1_000_000)));
    // This job's link does not open another job's image.
    let other_prompt = unique("link checks other");
    let (other, _) = run("flux-depth-pro", &other_prompt);
    refused(&format!("{}/results/{other}/control?{query}", base()));
    // A valid signature for a job that does not exist: nothing to serve.
    let nobody = "00000000-0000-4000-8000-000000000000";
    let a = Answer::from(
        client()
            .get(format!(
                "{}/results/{nobody}/control?{}",
                base(),
                sign(nobody, exp)
            ))
            .send()
            .unwrap(),
    );
    assert_eq!(a.status, 404, "{}", a.text);
    // The sim saw the link once per submit, and every fetch succeeded.
    let seen = eventually("the sim's record", Duration::from_secs(5), || {
        let c = controls(&prompt);
        (!c.is_empty()).then_some(c)
    });
    assert!(seen.iter().all(|c| c["status"] == 200), "{seen:?}");
}

/// The main test stack has the secret but no `PUBLIC_BASE_URL`: no link can be made,
/// so the image goes inline, as on any deployment that has not said where it is.
#[test]
#[ignore = "needs the running stack: cargo xtask test"]
fn without_a_public_base_url_the_image_goes_inline() {
    let prompt = unique("inline without a public base url");
    let (_, result) = run("flux-depth-dev", &prompt);
    assert_completed_by(&result, "segmind");
    let seen = controls(&prompt);
    assert!(!seen.is_empty(), "the sim saw no control image");
    for c in &seen {
        assert_eq!(c["via"], "inline", "{seen:?}");
        assert_eq!(c["bytes"], sample("coffee.jpg").len(), "{seen:?}");
    }
}
