//! What every protocol of the sim shares: the server state (jobs, fault counters, base
//! URL), reading bodies, turning parameters into a render, fault injection, and the
//! output "CDN" that serves generated images.
//!
//! Fault injection is driven by the prompt, so each test controls its own job:
//! - `[sim:fail]` the job ends FAILED as a moderation/content block;
//! - `[sim:reject]` the submit is refused with HTTP 400;
//! - `[sim:slow]` processing takes ten times longer; `[sim:process=8.5]` takes 8.5 s;
//!   `[sim:queue=60]` keeps the job queued for 60 s;
//! - `[sim:FAULT]` or `[sim:PROTOCOL:FAULT]` (PROTOCOL = segmind, replicate, comfyui,
//!   bfl, parallax, fal) with FAULT one of `429` (with Retry-After), `500`, `502`, `503`,
//!   `404`, `410` (a retired endpoint), `hang` (no answer for two minutes), `badjson`:
//!   the first two submits fail that way, then it works; a trailing `!` (e.g.
//!   `[sim:segmind:503!]`) makes it permanent;
//! - `[sim:output404]`, `[sim:slowdownload]` (3 s per output), `[sim:truncate]` (the
//!   first two downloads are cut short), `[sim:extra]` (one output more than asked).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, Multipart, Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::{Map, Value, json};

use crate::jobs::{Job, Jobs, Phase};
use parallax_sim::render::{self, Format, RenderSpec};

/// The sim's shared state.
#[derive(Debug)]
pub struct Sim {
    pub jobs: Jobs,
    /// This server's base URL (no trailing slash).
    pub base: String,
    /// (prompt, scope, fault) → times served.
    faults: Mutex<HashMap<(String, String, String), u32>>,
    /// ComfyUI output files: `subfolder/filename` → (job id, output index).
    pub comfy_files: Mutex<HashMap<String, (String, usize)>>,
    /// ComfyUI: the files each prompt's graph writes, per prompt id.
    pub comfy_saved: Mutex<HashMap<String, Vec<crate::comfyui::graph::SavedFile>>>,
    /// ComfyUI uploads: name → bytes.
    pub uploads: Mutex<HashMap<String, Vec<u8>>>,
    /// Accepted submissions per prompt (to detect duplicate upstream submits).
    submissions: Mutex<HashMap<String, u32>>,
    /// Later requests naming a job, per prompt: (polls and other API calls, downloads).
    requests: Mutex<HashMap<String, (u32, u32)>>,
    /// Gates that hold provider calls for interleaving tests.
    pub gates: crate::gates::Gates,
    /// Idempotency keys seen by the Parallax protocol: key → job id.
    pub idempotency: Mutex<HashMap<String, String>>,
    /// How each submit's control image arrived, per prompt (see [`control_image`]).
    controls: Mutex<HashMap<String, Vec<Value>>>,
    /// Callbacks delivered so far (`hooks`).
    pub hooks: crate::hooks::Log,
    /// Render each job's outputs while it runs (`--render-ahead`).
    pub render_ahead: bool,
    /// Fetches control images given as URLs, and delivers callbacks.
    pub http: reqwest::Client,
    /// Another origin, where `[sim:redirect]` sends polls.
    pub elsewhere: crate::elsewhere::Elsewhere,
}

pub type Shared = Arc<Sim>;

impl Sim {
    pub fn new(jobs: Jobs, base: String) -> Self {
        Self {
            jobs,
            base,
            faults: Mutex::new(HashMap::new()),
            uploads: Mutex::new(HashMap::new()),
            comfy_files: Mutex::new(HashMap::new()),
            comfy_saved: Mutex::new(HashMap::new()),
            submissions: Mutex::new(HashMap::new()),
            requests: Mutex::new(HashMap::new()),
            gates: crate::gates::Gates::default(),
            idempotency: Mutex::new(HashMap::new()),
            controls: Mutex::new(HashMap::new()),
            hooks: crate::hooks::Log::default(),
            render_ahead: false,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap_or_default(),
            elsewhere: crate::elsewhere::Elsewhere::default(),
        }
    }

    /// Counts a request against the job its path or query names, if any: a download
    /// when it fetches an output, else a poll (or another API call about the job).
    pub fn count_request(&self, path: &str, query: &str) {
        let named = path
            .split('/')
            .chain(
                query
                    .split('&')
                    .filter_map(|kv| kv.split_once('=').map(|(_, v)| v))
                    .flat_map(|v| v.split("%2F")),
            )
            .find_map(|part| self.jobs.get(part));
        let Some(job) = named else { return };
        let download = path.starts_with("/outputs/") || path.ends_with("/view");
        let mut map = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        let entry = map.entry(job.spec.prompt.clone()).or_insert((0, 0));
        if download {
            entry.1 += 1;
        } else {
            entry.0 += 1;
        }
    }

    /// Accepted submissions per prompt so far.
    pub fn submissions(&self) -> HashMap<String, u32> {
        self.submissions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Counts one occurrence of `fault` for this prompt and scope; true while it should
    /// still fire (twice, or always with `!`).
    fn fires(&self, prompt: &str, scope: &str, fault: &str, always: bool) -> bool {
        let mut map = self.faults.lock().unwrap_or_else(|e| e.into_inner());
        let n = map
            .entry((prompt.to_owned(), scope.to_owned(), fault.to_owned()))
            .or_insert(0);
        *n += 1;
        always || *n <= 2
    }

    /// `[sim:redirect]`: the first two polls of a job are answered `302 Found` to the
    /// same path on another origin ([`crate::elsewhere`]), as a compromised or
    /// misconfigured host might; a client that follows it hands that origin its key.
    pub fn poll_redirect(&self, scope: &str, prompt: &str, path: &str) -> Option<Response> {
        let elsewhere = self.elsewhere.base()?;
        (prompt.contains("[sim:redirect]") && self.fires(prompt, scope, "redirect", false)).then(
            || {
                (
                    StatusCode::FOUND,
                    [(header::LOCATION, format!("{elsewhere}{path}"))],
                )
                    .into_response()
            },
        )
    }

    /// The fault response a submit to `scope` gets for this prompt, if any.
    pub async fn submit_fault(&self, scope: &str, prompt: &str) -> Option<Response> {
        if prompt.contains("[sim:reject]") {
            return Some(error(
                StatusCode::BAD_REQUEST,
                "Invalid request: rejected by the provider (sim)",
            ));
        }
        for (fault, always) in requested_faults(prompt, scope) {
            let status = match fault.as_str() {
                "429" => StatusCode::TOO_MANY_REQUESTS,
                "500" => StatusCode::INTERNAL_SERVER_ERROR,
                "502" => StatusCode::BAD_GATEWAY,
                "503" => StatusCode::SERVICE_UNAVAILABLE,
                "404" => StatusCode::NOT_FOUND,
                "410" => StatusCode::GONE,
                "hang" | "badjson" => StatusCode::OK,
                _ => continue,
            };
            if !self.fires(prompt, scope, &fault, always) {
                continue;
            }
            return Some(match fault.as_str() {
                "hang" => {
                    tokio::time::sleep(Duration::from_secs(120)).await;
                    error(StatusCode::GATEWAY_TIMEOUT, "hung")
                }
                "badjson" => (
                    [(header::CONTENT_TYPE, "application/json")],
                    "{\"status\": \"QUEUED\", \"request_id\": ",
                )
                    .into_response(),
                "429" => (
                    status,
                    [(header::RETRY_AFTER, "1")],
                    Json(json!({"error": "Too many requests (sim)", "detail": "Request was throttled. Your rate limit resets in ~1s."})),
                )
                    .into_response(),
                _ => error(status, format!("Upstream error {} (sim)", status.as_u16())),
            });
        }
        None
    }
}

/// `[sim:FAULT]` and `[sim:SCOPE:FAULT]` tokens for `scope`, with their `!` flag.
fn requested_faults(prompt: &str, scope: &str) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    let mut rest = prompt;
    while let Some(start) = rest.find("[sim:") {
        let after = &rest[start + 5..];
        let Some(end) = after.find(']') else { break };
        let token = &after[..end];
        let (token_scope, fault) = match token.split_once(':') {
            Some((s, f)) => (Some(s), f),
            None => (None, token),
        };
        if token_scope.is_none_or(|s| s == scope) {
            let always = fault.ends_with('!');
            out.push((fault.trim_end_matches('!').to_owned(), always));
        }
        rest = &after[end..];
    }
    out
}

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
    sim.controls
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(prompt.to_owned())
        .or_default()
        .push(record);
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

/// `GET /debug/controls`: per prompt, how each submit's control image arrived
/// (`via` inline or url, the URL, the fetch's status, the bytes).
pub async fn controls(State(sim): State<Shared>) -> Response {
    let map = sim
        .controls
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    Json(json!(map)).into_response()
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
    *sim.submissions
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(ask.prompt.clone())
        .or_insert(0) += 1;
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

/// The time a `[sim:NAME=SECONDS]` token asks for (`process`, `queue`).
pub fn requested_secs(prompt: &str, name: &str) -> Option<Duration> {
    let token = format!("[sim:{name}=");
    let start = prompt.find(&token)? + token.len();
    let end = prompt[start..].find(']')? + start;
    let secs: f64 = prompt[start..end].trim().parse().ok()?;
    Duration::try_from_secs_f64(secs).ok()
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

/// `GET /debug/submissions`: accepted submissions per prompt (tests only; the sim
/// is never deployed).
pub async fn submissions(State(sim): State<Shared>) -> Response {
    Json(json!(sim.submissions())).into_response()
}

/// Middleware: counts every request that names a job (see [`Sim::count_request`]).
pub async fn count_requests(
    State(sim): State<Shared>,
    req: Request,
    next: axum::middleware::Next,
) -> Response {
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or_default().to_owned();
    let resp = next.run(req).await;
    sim.count_request(&path, &query);
    resp
}

/// `GET /debug/jobs`: every live job with its prompt, phase, whether it was canceled
/// (the audit checks no job still runs for a finished Parallax job) and
/// `finished_ms`, when it finished (Unix ms; null while it runs, or if canceled).
pub async fn jobs(State(sim): State<Shared>) -> Response {
    let (all, _) = sim.jobs.partition(|_| Some(true));
    let out: Vec<Value> = all
        .iter()
        .filter_map(|id| sim.jobs.get(id))
        .map(|job| {
            let phase = match sim.jobs.phase(&job) {
                Phase::Queued => "queued".to_owned(),
                Phase::Processing => "processing".to_owned(),
                Phase::Completed => "completed".to_owned(),
                Phase::Failed(_) => "failed".to_owned(),
            };
            let canceled = job.canceled.load(std::sync::atomic::Ordering::Relaxed);
            // When the job's GPU work ended (Unix ms), once it has.
            let finished_ms = (matches!(phase.as_str(), "completed" | "failed") && !canceled)
                .then(|| job.finished_unix_ms());
            json!({"id": job.id, "prompt": job.spec.prompt, "phase": phase,
                   "canceled": canceled, "finished_ms": finished_ms})
        })
        .collect();
    Json(Value::from(out)).into_response()
}

/// `GET /debug/requests`: per prompt, upstream requests the sim served for it
/// (`submits`, `polls`, `downloads`), so tests and benchmarks can count the edge's
/// polling cost.
pub async fn requests(State(sim): State<Shared>) -> Response {
    let submits = sim.submissions();
    let polls = sim
        .requests
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let out: Map<String, Value> = submits
        .iter()
        .map(|(prompt, n)| {
            let (p, d) = polls.get(prompt).copied().unwrap_or((0, 0));
            (
                prompt.clone(),
                json!({"submits": n, "polls": p, "downloads": d}),
            )
        })
        .collect();
    Json(Value::Object(out)).into_response()
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
    crate::gates::hold(&sim, "cdn", "download", &[&nth, &job.id]).await;
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
        let seen = sim.controls.lock().unwrap()["p"].clone();
        assert_eq!(seen[0]["via"], "url");
        assert_eq!(seen[0]["status"], 0);
        assert_eq!(seen[1]["via"], "inline");
    }

    #[test]
    fn fault_tokens_are_scoped_by_protocol() {
        let p = "a cat [sim:segmind:503!] [sim:429] [sim:replicate:hang]";
        assert_eq!(
            requested_faults(p, "segmind"),
            vec![("503".to_string(), true), ("429".to_string(), false)]
        );
        assert_eq!(
            requested_faults(p, "replicate"),
            vec![("429".to_string(), false), ("hang".to_string(), false)]
        );
        assert!(requested_faults("plain", "bfl").is_empty());
    }
}
