//! ComfyUI (the usual self-hosted GPU server): `POST /upload/image` (multipart
//! `image`), then `POST /prompt` with the FLUX.1 Depth [dev] workflow
//! (`comfyui_flux_depth_dev.json`, the parameters filled in), poll
//! `/history/{prompt_id}` (`{}` until done) and `/queue` (running or pending), and
//! fetch the outputs from `/view`. The graph needs `flux1-depth-dev.safetensors`,
//! the FLUX text encoders and VAE, and comfyui_controlnet_aux's
//! `DepthAnythingV2Preprocessor`.

use parallax_api::{FieldError, Params};
use serde_json::{Value, json};

use super::{
    HttpMethod, Submitted, UpstreamError, UpstreamRequest, UpstreamResponse, UpstreamState,
    error_detail,
};
use crate::config::Provider;
use crate::job::JobRecord;

const WORKFLOW: &str = include_str!("comfyui_flux_depth_dev.json");
const SAVE_NODE: &str = "14";

/// ComfyUI saves PNG (SaveImage) or WebP (SaveAnimatedWEBP); it has no JPEG writer.
pub fn check(params: &Params) -> Result<(), FieldError> {
    if params.output_format() == "jpg" {
        return Err(FieldError::new(
            "output_format",
            "jpg is not available from the self-hosted ComfyUI server; use png or webp",
        ));
    }
    Ok(())
}

fn headers(cfg: &Provider) -> Vec<(&'static str, String)> {
    // ComfyUI has no auth of its own; a key is for a proxy in front of it.
    cfg.api_key
        .iter()
        .map(|k| ("authorization", format!("Bearer {}", k.expose())))
        .collect()
}

pub fn build_upload(cfg: &Provider, file: &str, image: &[u8], media_type: &str) -> UpstreamRequest {
    let boundary = "parallax-form-boundary-6f1c2e";
    let mut body = Vec::with_capacity(image.len() + 512);
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{file}\"\r\nContent-Type: {media_type}\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(image);
    body.extend_from_slice(
        format!("\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"overwrite\"\r\n\r\ntrue\r\n--{boundary}--\r\n")
            .as_bytes(),
    );
    let mut h = headers(cfg);
    h.push((
        "content-type",
        format!("multipart/form-data; boundary={boundary}"),
    ));
    UpstreamRequest {
        method: HttpMethod::Post,
        url: format!("{}/upload/image", cfg.base_url),
        headers: h,
        body: Some(body),
    }
}

fn checked(resp: &UpstreamResponse) -> Result<Value, UpstreamError> {
    if !(200..300).contains(&resp.status) {
        let detail = serde_json::from_slice::<Value>(&resp.body)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
            .unwrap_or_else(|| error_detail(&resp.body));
        return Err(UpstreamError::from_status(
            "comfyui",
            resp.status,
            resp.retry_after,
            &detail,
        ));
    }
    serde_json::from_slice(&resp.body).map_err(|_| UpstreamError::Transient {
        reason: "comfyui answered with malformed JSON".into(),
        retry_after: None,
    })
}

/// The stored name of the uploaded image (ComfyUI may rename it).
pub fn parse_upload(resp: &UpstreamResponse) -> Result<String, UpstreamError> {
    let v = checked(resp)?;
    let name = v["name"]
        .as_str()
        .ok_or_else(|| UpstreamError::Permanent("comfyui upload answered without a name".into()))?;
    Ok(match v["subfolder"].as_str().filter(|s| !s.is_empty()) {
        Some(sub) => format!("{sub}/{name}"),
        None => name.to_owned(),
    })
}

/// The workflow graph with the job's parameters filled in.
pub fn workflow(job: &JobRecord, image_name: &str) -> Value {
    let mut g: Value = serde_json::from_str(WORKFLOW).unwrap_or_default();
    let p = &job.params;
    g["4"]["inputs"]["image"] = json!(image_name);
    g["7"]["inputs"]["text"] = json!(p.prompt());
    g["8"]["inputs"]["guidance"] = p.get("guidance").cloned().unwrap_or(json!(10.0));
    g["11"]["inputs"]["amount"] = json!(p.num_outputs());
    g["12"]["inputs"]["seed"] = json!(p.seed().unwrap_or(0));
    g["12"]["inputs"]["steps"] = p.get("num_inference_steps").cloned().unwrap_or(json!(28));
    let megapixels = match p.str("megapixels") {
        Some("0.25") => 0.25,
        // match_input: the control image's own size, capped at 1440×1440.
        Some("match_input") => {
            let input = f64::from(job.input.width) * f64::from(job.input.height) / 1e6;
            input.min(1440.0 * 1440.0 / 1e6)
        }
        _ => 1.0,
    };
    g["5"]["inputs"]["megapixels"] = json!(megapixels);
    if p.output_format() == "webp" {
        g[SAVE_NODE] = json!({"class_type": "SaveAnimatedWEBP", "inputs": {
            "images": ["13", 0], "filename_prefix": "parallax", "fps": 6.0, "lossless": false,
            "quality": p.int("output_quality").unwrap_or(80), "method": "default"}});
    }
    g
}

pub fn build_prompt(cfg: &Provider, job: &JobRecord, image_name: &str) -> UpstreamRequest {
    UpstreamRequest::post_json(
        format!("{}/prompt", cfg.base_url),
        headers(cfg),
        &json!({"prompt": workflow(job, image_name), "client_id": "parallax", "prompt_id": job.id.as_str()}),
    )
}

pub fn parse_prompt(cfg: &Provider, resp: &UpstreamResponse) -> Result<Submitted, UpstreamError> {
    let v = checked(resp)?;
    let id = v["prompt_id"]
        .as_str()
        .ok_or_else(|| UpstreamError::Permanent("comfyui answered without a prompt_id".into()))?;
    Ok(Submitted {
        upstream_id: id.to_owned(),
        status_url: format!("{}/history/{id}", cfg.base_url),
        result_url: format!("{}/queue", cfg.base_url),
        cancel_url: None,
    })
}

pub fn build_get(cfg: &Provider, url: &str) -> UpstreamRequest {
    UpstreamRequest::get(url, headers(cfg))
}

/// `Some(state)` once the history has the prompt; `None` while it is not there yet.
pub fn parse_history(
    cfg: &Provider,
    prompt_id: &str,
    resp: &UpstreamResponse,
) -> Result<Option<UpstreamState>, UpstreamError> {
    let v = checked(resp)?;
    let Some(entry) = v.get(prompt_id) else {
        return Ok(None);
    };
    let status = entry["status"]["status_str"].as_str().unwrap_or_default();
    if status == "error" {
        let message = entry["status"]["messages"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| m[0] == "execution_error")
            .and_then(|m| m[1]["exception_message"].as_str())
            .unwrap_or("the workflow failed");
        return Ok(Some(UpstreamState::Failed(
            message.chars().take(500).collect(),
        )));
    }
    let urls: Vec<String> = entry["outputs"]
        .as_object()
        .into_iter()
        .flat_map(|outputs| outputs.values())
        .flat_map(|node| node["images"].as_array().into_iter().flatten())
        .filter(|img| img["type"] == "output")
        .filter_map(|img| {
            let name = img["filename"].as_str()?;
            let sub = img["subfolder"].as_str().unwrap_or_default();
            Some(format!(
                "{}/view?filename={}&subfolder={}&type=output",
                cfg.base_url,
                encode(name),
                encode(sub)
            ))
        })
        .collect();
    if urls.is_empty() {
        return Ok(Some(UpstreamState::Failed(
            "the workflow finished without images".into(),
        )));
    }
    Ok(Some(UpstreamState::Completed(urls)))
}

/// Queued or running, from `/queue`; absent from both (and from history) means lost.
pub fn parse_queue(
    prompt_id: &str,
    resp: &UpstreamResponse,
) -> Result<UpstreamState, UpstreamError> {
    let v = checked(resp)?;
    let has = |key: &str| {
        v[key]
            .as_array()
            .into_iter()
            .flatten()
            .any(|item| item[1] == prompt_id)
    };
    if has("queue_running") {
        Ok(UpstreamState::Processing)
    } else if has("queue_pending") {
        Ok(UpstreamState::Queued)
    } else {
        // It may have finished between the two calls: look again next time, but
        // never forever (the job's deadline ends it).
        Err(UpstreamError::Transient {
            reason: "comfyui has the prompt neither queued nor in its history".into(),
            retry_after: None,
        })
    }
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::image::{ImageFormat, ImageInfo};
    use crate::job::Ownership;
    use parallax_api::{Model, RequestId};

    fn job(fields: Value) -> JobRecord {
        let v =
            parallax_api::validate(Model::FluxDepthDev, fields.as_object().unwrap(), true).unwrap();
        let mut params = v.params;
        params.set_seed(1234);
        JobRecord::new(
            RequestId::parse("2c7f59ea-13f1-402c-9353-915a2b5a2124").unwrap(),
            Model::FluxDepthDev,
            params,
            ImageInfo {
                format: ImageFormat::Png,
                width: 800,
                height: 600,
            },
            Ownership {
                owner: "anon:x".into(),
                charged: 2,
                retention_secs: 60,
            },
            0,
            900,
            vec!["comfyui".into()],
        )
    }

    fn cfg() -> Provider {
        Provider {
            kind: crate::providers::Kind::ComfyUi,
            base_url: "http://gpu:8188".into(),
            api_key: None,
        }
    }

    #[test]
    fn the_workflow_carries_every_parameter() {
        let j = job(
            json!({"prompt": "a red barn", "num_outputs": 3, "guidance": 12.5, "num_inference_steps": 30,
                           "megapixels": "0.25", "output_format": "webp", "output_quality": 70}),
        );
        let g = workflow(&j, "parallax-x.png");
        assert_eq!(g["4"]["inputs"]["image"], "parallax-x.png");
        assert_eq!(g["7"]["inputs"]["text"], "a red barn");
        assert_eq!(g["8"]["inputs"]["guidance"], 12.5);
        assert_eq!(g["11"]["inputs"]["amount"], 3);
        assert_eq!(g["12"]["inputs"]["seed"], 1234);
        assert_eq!(g["12"]["inputs"]["steps"], 30);
        assert_eq!(g["5"]["inputs"]["megapixels"], 0.25);
        assert_eq!(g["14"]["class_type"], "SaveAnimatedWEBP");
        assert_eq!(g["14"]["inputs"]["quality"], 70);
        let png = workflow(
            &job(json!({"prompt": "x", "output_format": "png", "megapixels": "match_input"})),
            "a.png",
        );
        assert_eq!(png["14"]["class_type"], "SaveImage");
        assert_eq!(png["5"]["inputs"]["megapixels"], 0.48);
    }

    #[test]
    fn history_and_queue_from_the_docs_map_to_ours() {
        let r = |v: Value| UpstreamResponse {
            status: 200,
            retry_after: None,
            body: v.to_string().into_bytes(),
        };
        assert_eq!(parse_history(&cfg(), "p1", &r(json!({}))), Ok(None));
        let done = json!({"p1": {"outputs": {"14": {"images": [{"filename": "ComfyUI_00001_.png", "subfolder": "", "type": "output"}]}},
                                 "status": {"status_str": "success", "completed": true, "messages": []}}});
        assert_eq!(
            parse_history(&cfg(), "p1", &r(done)),
            Ok(Some(UpstreamState::Completed(vec![
                "http://gpu:8188/view?filename=ComfyUI_00001_.png&subfolder=&type=output".into()
            ])))
        );
        let failed = json!({"p1": {"outputs": {}, "status": {"status_str": "error", "messages": [["execution_error", {"exception_message": "CUDA out of memory"}]]}}});
        assert_eq!(
            parse_history(&cfg(), "p1", &r(failed)),
            Ok(Some(UpstreamState::Failed("CUDA out of memory".into())))
        );
        let queue = json!({"queue_running": [[1, "p1", {}, {}, []]], "queue_pending": [[2, "p2", {}, {}, []]]});
        assert_eq!(
            parse_queue("p1", &r(queue.clone())),
            Ok(UpstreamState::Processing)
        );
        assert_eq!(parse_queue("p2", &r(queue)), Ok(UpstreamState::Queued));
    }

    #[test]
    fn jpeg_is_refused_up_front() {
        assert_eq!(
            check(&job(json!({"prompt": "x"})).params)
                .unwrap_err()
                .field,
            "output_format"
        );
    }
}
