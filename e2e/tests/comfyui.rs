//! ComfyUI as the real server behaves (issue 17), through the Worker to the sim's
//! ComfyUI behind its API-key proxy (`/comfyui-proxy`: every call, `/view` included,
//! needs the key), whose validation and output sizes come from the real node source:
//! the shipped workflow passes; `megapixels` sets the output size the way the real
//! graph computes it; N WebP outputs are N files; cancel takes the prompt off the GPU;
//! and a workflow the real server would refuse is refused with the real body.

use std::time::{Duration, Instant};

use parallax_e2e::{
    Answer, base, client, get, image_urls, output_bytes, sample, test_key, wait_terminal,
};
use reqwest::blocking::multipart::{Form, Part};
use serde_json::{Value, json};

const ONLY_COMFYUI: &str = "[sim:segmind:503!] [sim:replicate:503!]";

fn sim() -> String {
    std::env::var("PARALLAX_SIM_URL").expect("PARALLAX_SIM_URL (set by cargo xtask test)")
}

fn submit(prompt: &str, extra: &[(&str, &str)], key: Option<&str>) -> Answer {
    let mut form = Form::new()
        .text("prompt", format!("{prompt} {ONLY_COMFYUI}"))
        .part(
            "control_image",
            // 600×400.
            Part::bytes(sample("coffee.jpg"))
                .file_name("coffee.jpg")
                .mime_str("image/jpeg")
                .unwrap(),
        );
    for (k, v) in extra {
        form = form.text((*k).to_owned(), (*v).to_owned());
    }
    let mut req = client()
        .post(format!("{}/v2/flux-depth-dev", base()))
        .multipart(form);
    if let Some(key) = key {
        req = req.header("x-api-key", test_key(key));
    }
    let a = Answer::from(req.send().unwrap());
    assert_eq!(a.status, 200, "{}", a.text);
    a
}

fn finish(sub: &Answer) -> Value {
    let body = sub.json();
    wait_terminal(
        body["status_url"].as_str().unwrap(),
        Duration::from_secs(90),
    );
    get(body["response_url"].as_str().unwrap()).json()
}

fn decoded(result: &Value) -> Vec<(image::ImageFormat, u32, u32)> {
    assert_eq!(result["status"], "COMPLETED", "{result}");
    assert_eq!(result["metrics"]["provider"], "comfyui", "{result}");
    image_urls(result)
        .iter()
        .map(|url| {
            let bytes = output_bytes(url);
            let img = image::load_from_memory(&bytes).unwrap();
            (
                image::guess_format(&bytes).unwrap(),
                img.width(),
                img.height(),
            )
        })
        .collect()
}

#[test]
#[ignore = "needs the running stack: cargo xtask test"]
fn megapixels_give_the_real_graphs_sizes() {
    // ImageScaleToTotalPixels(1 MP, steps 16) → DepthAnythingV2(short side 1024) →
    // ImageScaleToTotalPixels(requested, steps 16) → InstructPixToPix (/8), worked
    // through for 600×400 with ComfyUI's formulas (1 MP = 1024² px).
    for (megapixels, size) in [
        ("1", (1248, 832)),
        ("0.25", (624, 416)),
        ("match_input", (608, 400)),
    ] {
        let r = finish(&submit(
            &format!("size {megapixels}"),
            &[("output_format", "png"), ("megapixels", megapixels)],
            None,
        ));
        assert_eq!(
            decoded(&r),
            vec![(image::ImageFormat::Png, size.0, size.1)],
            "megapixels {megapixels}"
        );
    }
}

#[test]
#[ignore = "needs the running stack: cargo xtask test"]
fn n_webp_outputs_are_n_files() {
    let r = finish(&submit(
        "three stills",
        &[("output_format", "webp"), ("num_outputs", "3")],
        None,
    ));
    let files = decoded(&r);
    assert_eq!(files.len(), 3, "{r}");
    assert!(files.iter().all(|f| f.0 == image::ImageFormat::WebP));
}

#[test]
#[ignore = "needs the running stack: cargo xtask test"]
fn cancel_interrupts_the_running_prompt() {
    let job = submit(
        "a long render [sim:process=30]",
        &[("output_format", "png")],
        Some("canceler"),
    );
    let id = job.json()["request_id"].as_str().unwrap().to_owned();
    let url = format!("{}/v2/requests/{id}", base());
    let start = Instant::now();
    while get(&format!("{url}/status")).json()["status"] != "PROCESSING" {
        assert!(start.elapsed() < Duration::from_secs(20), "never started");
        std::thread::sleep(Duration::from_millis(200));
    }
    let canceled = Answer::from(
        client()
            .delete(&url)
            .header("x-api-key", test_key("canceler"))
            .send()
            .unwrap(),
    );
    assert_eq!(canceled.status, 200, "{}", canceled.text);
    // Our request id is the prompt_id: the sim's (unkeyed) ComfyUI shows it interrupted.
    let history = get(&format!("{}/comfyui/history/{id}", sim())).json();
    let messages = history[&id]["status"]["messages"].as_array().unwrap();
    assert!(
        messages.iter().any(|m| m[0] == "execution_interrupted"),
        "{history}"
    );
}

/// The shipped workflow, with an uploaded image.
fn shipped_workflow() -> Value {
    let form = Form::new()
        .part(
            "image",
            Part::bytes(sample("coffee.jpg"))
                .file_name("contract.jpg")
                .mime_str("image/jpeg")
                .unwrap(),
        )
        .text("subfolder", "contract");
    let up = Answer::from(
        client()
            .post(format!("{}/comfyui/upload/image", sim()))
            .multipart(form)
            .send()
            .unwrap(),
    );
    assert_eq!(up.status, 200, "{}", up.text);
    assert_eq!(up.json()["subfolder"], "contract");
    let mut g: Value = serde_json::from_str(include_str!(
        "../../edge/src/providers/comfyui_flux_depth_dev.json"
    ))
    .unwrap();
    g["4"]["inputs"]["image"] = json!(format!("contract/{}", up.json()["name"].as_str().unwrap()));
    g["7"]["inputs"]["text"] = json!("contract");
    g
}

fn post_prompt(body: &Value) -> Answer {
    Answer::from(
        client()
            .post(format!("{}/comfyui/prompt", sim()))
            .json(body)
            .send()
            .unwrap(),
    )
}

#[test]
#[ignore = "needs the running stack: cargo xtask test"]
fn the_sim_refuses_what_the_real_server_refuses() {
    let g = shipped_workflow();
    let id = "6f9f5a4e-2b1c-4c3d-9e8f-0a1b2c3d4e5f";
    let ok = post_prompt(&json!({"prompt": g, "prompt_id": id}));
    assert_eq!(ok.status, 200, "{}", ok.text);
    assert_eq!(ok.json()["prompt_id"], id, "our prompt_id is honoured");
    // A repeated id is queued and run again, as v0.3.64 and v0.8.0 do.
    let again = post_prompt(&json!({"prompt": g, "prompt_id": id}));
    assert_eq!(again.status, 200, "{}", again.text);
    assert_eq!(again.json()["prompt_id"], id);
    assert!(again.json()["number"].as_u64() > ok.json()["number"].as_u64());

    // The workflow as shipped before Dec 2025: no resolution_steps.
    let mut old = g.clone();
    old["5"]["inputs"]
        .as_object_mut()
        .unwrap()
        .remove("resolution_steps");
    let refused = post_prompt(&json!({"prompt": old}));
    assert_eq!(refused.status, 400);
    assert_eq!(
        refused.json(),
        json!({
            "error": {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation",
                      "details": "", "extra_info": {}},
            "node_errors": {"5": {"errors": [{"type": "required_input_missing", "message": "Required input is missing",
                                               "details": "resolution_steps", "extra_info": {"input_name": "resolution_steps"}}],
                                  "dependent_outputs": ["14"], "class_type": "ImageScaleToTotalPixels"}}
        })
    );
    let none = post_prompt(&json!({"client_id": "x"}));
    assert_eq!(none.status, 400);
    assert_eq!(none.json()["error"]["type"], "no_prompt");
    // Any prompt_id is taken as given (only the newest servers insist on a UUID).
    let any_id = post_prompt(&json!({"prompt": g, "prompt_id": "NOT-A-UUID"}));
    assert_eq!(any_id.status, 200, "{}", any_id.text);
    assert_eq!(any_id.json()["prompt_id"], "NOT-A-UUID");
    // An unknown node class: invalid_prompt, with an empty extra_info.
    let mut unknown = g.clone();
    unknown["6"]["class_type"] = json!("NoSuchNode");
    let refused = post_prompt(&json!({"prompt": unknown}));
    assert_eq!(refused.status, 400, "{}", refused.text);
    assert_eq!(
        refused.json()["error"],
        json!({"type": "invalid_prompt", "message": "Cannot execute because node NoSuchNode does not exist.",
               "details": "Node ID '#6'", "extra_info": {}})
    );
    // Behind the proxy, no key: 401 on every route.
    let keyless = client()
        .get(format!("{}/comfyui-proxy/object_info", sim()))
        .send()
        .unwrap();
    assert_eq!(keyless.status(), 401);
}

#[test]
#[ignore = "needs the running stack: cargo xtask test"]
fn a_lost_answer_is_looked_up_not_submitted_again() {
    // ComfyUI runs a repeated prompt_id again, so a second POST would start a second
    // render: the sim accepts the prompt and loses the answer (502); the Worker must
    // find its prompt in the queue instead of posting it again.
    let marker = format!(
        "lost answer {}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let r = finish(&submit(
        &format!("{marker} [sim:comfyui:lost]"),
        &[("output_format", "png")],
        None,
    ));
    assert_eq!(decoded(&r).len(), 1, "{r}");
    let seen = parallax_e2e::sim_submissions();
    let counts: Vec<&Value> = seen
        .as_object()
        .unwrap()
        .iter()
        .filter(|(prompt, _)| prompt.contains(&marker))
        .map(|(_, n)| n)
        .collect();
    assert_eq!(counts, [&json!(1)], "submitted upstream once: {seen}");
}
