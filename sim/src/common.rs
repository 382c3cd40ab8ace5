//! What every protocol of the sim shares: reading bodies, the control image, turning
//! parameters into a job ([`Ask`], [`create_job`]), the output URLs, and the output
//! "CDN" that serves generated images (with the download faults of `faults`).

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, Multipart, Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::{Map, Value, json};

use crate::jobs::{Job, Jobs, Phase, requested_secs};
use crate::state::{Shared, Sim};
use parallax_sim::render::{self, Format, RenderSpec};

pub fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(json!({ "error": msg.into() }))).into_response()
}

/// The submit body as a flat field map; a multipart file part is base64-encoded into it.
pub async fn read_fields(req: Request) -> Result<Map<String, Value>, Response> {
    let is_multipart = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"));
    if is_multipart {
        let mut mp = Multipart::from_request(req, &())
            .await
            .map_err(|e| error(StatusCode::BAD_REQUEST, e.body_text()))?;
        let mut fields = Map::new();
        while let Some(field) = mp
            .next_field()
            .await
            .map_err(|e| error(StatusCode::BAD_REQUEST, e.body_text()))?
        {
            let name = field.name().unwrap_or_default().to_owned();
            let is_file = field.file_name().is_some();
            let data = field
                .bytes()
                .await
                .map_err(|e| error(StatusCode::BAD_REQUEST, e.body_text()))?;
            let value = if is_file {
                base64::engine::general_purpose::STANDARD.encode(&data)
            } else {
                String::from_utf8_lossy(&data).into_owned()
            };
            fields.insert(name, Value::String(value));
        }
        Ok(fields)
    } else {
        let body = Bytes::from_request(req, &())
            .await
            .map_err(|e| error(StatusCode::BAD_REQUEST, e.body_text()))?;
        match serde_json::from_slice::<Value>(&body) {
            Ok(Value::Object(map)) => Ok(map),
            _ => Err(error(StatusCode::BAD_REQUEST, "Body must be a JSON object")),
        }
    }
}

pub fn num(fields: &Map<String, Value>, name: &str) -> Option<f64> {
    match fields.get(name)? {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

pub fn text(fields: &Map<String, Value>, name: &str) -> Option<String> {
    match fields.get(name)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Decodes raw base64 or a data URL.
pub fn decode_control(value: Option<String>) -> Result<Vec<u8>, String> {
    let value = value.ok_or("control_image is required")?;
    let data = match value.split_once(";base64,") {
        Some((head, data)) if head.starts_with("data:") => data.to_owned(),
        _ if value.contains("://") => {
            return Err("control_image must be base64 here, not a URL".into());
        }
        _ => value,
    };
    let data: String = data.split_ascii_whitespace().collect();
    base64::engine::general_purpose::STANDARD
        .decode(data.as_bytes())
        .map_err(|_| "control_image is not valid base64".to_string())
}

/// The control image of a submit to `scope` for `prompt`, as that provider gets it:
/// base64 or a data URL decoded, or an `http(s)` URL fetched with a plain GET (no
/// credentials), whose failure fails the job. Each is recorded for
/// `GET /debug/controls`.
///
/// When the real providers fetch: Replicate's models run on cog, which downloads a
/// URL file input before `predict` runs and fails the prediction when it cannot (cog
/// `python/cog/types.py`, `URLPath`/`File.validate`); fal's apps download `image_url`
/// when the request runs and fail it likewise (fal's `download_file` in
/// `fal.toolkit`). Segmind's docs say only that `control_image` may be an image URL:
/// when and how it fetches, and what a failed fetch gives, is UNVERIFIED; the sim fails
/// the job. The sim fetches at submit, earlier than any of them: the edge's link lives
/// until the job's deadline, which covers both.
pub async fn control_image(
    sim: &Sim,
    scope: &str,
    prompt: &str,
    value: Option<String>,
) -> Result<Vec<u8>, String> {
    let link = value
        .as_deref()
        .filter(|v| v.starts_with("http://") || v.starts_with("https://"))
        .map(str::to_owned);
    let (record, bytes) = match link {
        None => {
            let bytes = decode_control(value);
            let n = bytes.as_ref().map_or(0, Vec::len);
            (json!({"scope": scope, "via": "inline", "bytes": n}), bytes)
        }
        Some(url) => {
            let fetched = fetch(sim, &url).await;
            let (status, bytes) = match fetched {
                Ok((status, body)) if status == 200 => (status, Ok(body)),
                Ok((status, _)) => (
                    status,
                    Err(format!(
                        "Failed to download control_image from {url}: HTTP {status}"
                    )),
                ),
                Err(e) => (0, Err(format!("Failed to download control_image: {e}"))),
            };
            let n = bytes.as_ref().map_or(0, Vec::len);
            (
                json!({"scope": scope, "via": "url", "url": url, "status": status, "bytes": n}),
                bytes,
            )
        }
    };
    sim.record_control(prompt, record);
    bytes
}

async fn fetch(sim: &Sim, url: &str) -> Result<(u16, Vec<u8>), String> {
    let resp = sim
        .http
        .get(url)
        .send()
        .await
        .map_err(|e| e.without_url().to_string())?;
    let status = resp.status().as_u16();
    let body = resp
        .bytes()
        .await
        .map_err(|e| e.without_url().to_string())?;
    Ok((status, body.to_vec()))
}

/// A depth preview's ask from its image URL (fal's and Replicate's previews): the
/// image fetched, counted under [`preview_label`], its fault markers applied (`Err`:
/// the fault's answer).
pub async fn preview_ask(sim: &Sim, scope: &str, url: String) -> Result<Ask, Response> {
    let image = control_image(sim, scope, "", Some(url)).await;
    let label = image.as_ref().map(|b| preview_label(b)).unwrap_or_default();
    if let Some(fault) = sim.submit_fault(scope, &label).await {
        return Err(fault);
    }
    Ok(Ask {
        model: "depth-anything-v2",
        seed: 0,
        count: 1,
        format: Format::Png,
        quality: 90,
        megapixels: None,
        image,
        prompt: label,
    })
}

/// What the sim counts a depth preview under (it has no prompt): the model and the
/// SHA-256 of the control image's bytes, so a test can ask how often the same image
/// was previewed upstream (`GET /debug/submissions`). A PNG's `tEXt` chunk keyed
/// `sim` is appended: with no prompt to carry them, that is where a preview's fault
/// markers (`[sim:comfyui:503!]`) ride.
pub fn preview_label(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let label = format!("depth-anything-v2:{}", hex::encode(Sha256::digest(bytes)));
    match png_text(bytes, b"sim") {
        Some(markers) => format!("{label} {markers}"),
        None => label,
    }
}

/// The text of a PNG's first `tEXt` chunk with `keyword`.
fn png_text(bytes: &[u8], keyword: &[u8]) -> Option<String> {
    let mut at = 8;
    if bytes.get(..8)? != b"\x89PNG\r\n\x1a\n" {
        return None;
    }
    while at + 8 <= bytes.len() {
        let len = u32::from_be_bytes(bytes[at..at + 4].try_into().ok()?) as usize;
        let kind = &bytes[at + 4..at + 8];
        let data = bytes.get(at + 8..at + 8 + len)?;
        if kind == b"tEXt"
            && let Some(text) = data
                .strip_prefix(keyword)
                .and_then(|d| d.strip_prefix(b"\0"))
        {
            return Some(String::from_utf8_lossy(text).into_owned());
        }
        at += 12 + len;
    }
    None
}

/// What a submit asks for, protocol-neutral.
#[derive(Debug)]
pub struct Ask {
    pub model: &'static str,
    pub prompt: String,
    pub seed: u64,
    pub count: usize,
    pub format: Format,
    pub quality: u8,
    pub megapixels: Option<f64>,
    pub image: Result<Vec<u8>, String>,
}

/// Registers a job for `ask`; it will fail if the image is unusable or the prompt
/// asks for a content block.
pub fn create_job(sim: &Sim, ask: Ask) -> Arc<Job> {
    create_job_as(sim, ask, None, None)
}

/// [`create_job`] under the client's own id (ComfyUI's `prompt_id`) and with an exact
/// output size computed from the protocol's graph.
pub fn create_job_as(
    sim: &Sim,
    ask: Ask,
    id: Option<String>,
    size: Option<(u32, u32)>,
) -> Arc<Job> {
    sim.count_submission(&ask.prompt);
    let mut failure = None;
    let (control, control_hash) = match ask.image {
        Ok(bytes) => match image::load_from_memory(&bytes) {
            Ok(img) => (Some(img), render::fnv1a(&[&bytes])),
            Err(e) => {
                failure = Some(format!("control_image could not be decoded: {e}"));
                (None, 0)
            }
        },
        Err(e) => {
            failure = Some(e);
            (None, 0)
        }
    };
    if ask.prompt.contains("[sim:fail]") {
        failure.get_or_insert(
            "Content moderated: the prompt was flagged by the safety filter".to_string(),
        );
    }
    let process = if ask.prompt.contains("[sim:slow]") {
        Some(sim.jobs.timing.process * 10)
    } else {
        requested_secs(&ask.prompt, "process")
    };
    let model = ask.model;
    let spec = RenderSpec {
        prompt: ask.prompt,
        seed: ask.seed,
        count: ask.count,
        format: ask.format,
        quality: ask.quality,
        megapixels: ask.megapixels,
        size,
        control,
        control_hash,
        depth: model == "depth-anything-v2",
    };
    let job = sim.jobs.insert(model, failure.clone(), spec, process, id);
    // With `--render-ahead` (benchmarks): a provider's outputs exist when its job
    // ends, so render them meanwhile, and the first look after the end (a poll or a
    // callback) does not wait for the render. Off by default: the test stacks keep
    // the load they were sized for.
    if sim.render_ahead
        && failure.is_none()
        && let Ok(rt) = tokio::runtime::Handle::try_current()
    {
        let ahead = job.clone();
        rt.spawn_blocking(move || {
            ahead.outputs();
        });
    }
    job
}

/// Output URLs of a completed job, on this server's CDN route.
pub fn output_urls(sim: &Sim, job: &Job) -> Vec<String> {
    job.outputs()
        .iter()
        .enumerate()
        .map(|(n, o)| format!("{}/outputs/{}/{n}.{}", sim.base, job.id, o.format.ext()))
        .collect()
}

/// Timings in Segmind's metric names.
pub fn metrics(jobs: &Jobs) -> Value {
    let q = jobs.timing.queue.as_secs_f64();
    let p = jobs.timing.process.as_secs_f64();
    json!({"queue_time": q, "inference_time": p, "total_time": q + p})
}

/// Whether the caller sent some credentials in `header` (any non-empty value).
pub fn has_header(headers: &HeaderMap, name: &str) -> bool {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| !v.trim().is_empty())
}

/// `GET /outputs/{id}/{n}.{ext}`: the CDN, with the download faults.
pub async fn output(
    State(sim): State<Shared>,
    Path((id, file)): Path<(String, String)>,
) -> Response {
    let not_found = || error(StatusCode::NOT_FOUND, "No such output");
    let Some(job) = sim.jobs.get(&id) else {
        return not_found();
    };
    if sim.jobs.phase(&job) != Phase::Completed || job.spec.prompt.contains("[sim:output404]") {
        return not_found();
    }
    let outputs = job.outputs();
    let found = file
        .split_once('.')
        .and_then(|(n, ext)| Some((n.parse::<usize>().ok()?, ext)))
        .and_then(|(n, ext)| outputs.get(n).filter(|o| o.format.ext() == ext));
    let Some(o) = found else {
        return not_found();
    };
    // Each output can be held on its own: a gate matching `<prompt>#1` holds the
    // second download only.
    let nth = format!(
        "{}#{}",
        job.spec.prompt,
        file.split('.').next().unwrap_or("")
    );
    crate::gates::hold(&sim.gates, "cdn", "download", &[&nth, &job.id]).await;
    if job.spec.prompt.contains("[sim:slowdownload]") {
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    let mut bytes = o.bytes.clone();
    if job.spec.prompt.contains("[sim:truncate]")
        && sim.fires(&job.spec.prompt, "cdn", &file, false)
    {
        bytes.truncate(bytes.len() / 2);
    }
    ([(header::CONTENT_TYPE, o.format.content_type())], bytes).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_control_image_link_that_cannot_be_fetched_fails_the_job() {
        let sim = Sim::new(
            Jobs::new(crate::jobs::Timing {
                queue: Duration::ZERO,
                process: Duration::ZERO,
                expiry: Duration::from_secs(60),
            }),
            "http://127.0.0.1:1".into(),
        );
        // Nothing listens on port 1: the fetch fails, as a dead link would.
        let got = control_image(&sim, "replicate", "p", Some("http://127.0.0.1:1/x".into())).await;
        assert!(
            got.unwrap_err()
                .starts_with("Failed to download control_image")
        );
        let inline = control_image(&sim, "segmind", "p", Some("QUJD".into())).await;
        assert_eq!(inline.unwrap(), b"ABC");
        let seen = sim.controls()["p"].clone();
        assert_eq!(seen[0]["via"], "url");
        assert_eq!(seen[0]["status"], 0);
        assert_eq!(seen[1]["via"], "inline");
    }
}
