//! ComfyUI's HTTP API (the usual self-hosted GPU server), held to the contract of
//! the servers Parallax was run against, v0.3.64 (Comfy-Org/ComfyUI @a125cd84
//! `server.py`, `execution.py`) and v0.8.0 (issue 25: both accept every variant
//! Parallax sends, and v0.8.0's output sizes match the sim's):
//!
//! - `POST /upload/image` (multipart `image`, `subfolder`, `overwrite`) stores the
//!   control image under `subfolder/name`; 400 with an empty body without `image`.
//! - `POST /prompt` takes any `prompt_id` (`post_prompt`: `str(json_data.get(
//!   "prompt_id", uuid.uuid4()))`), validates the graph against the real node schemas
//!   ([`validate`]) and answers the real refusal shapes (`no_prompt`,
//!   `invalid_prompt`, `prompt_no_outputs`, `prompt_outputs_failed_validation` with
//!   filled `node_errors`). A `prompt_id` already known is queued and run again, as
//!   there: nothing in `post_prompt` or `PromptQueue.put` looks for it, the history
//!   keeps the run that finished last (`task_done`), and the new run's files take
//!   the next counter. The job runs under the client's `prompt_id`, and its files are
//!   what the graph really writes ([`graph`]): sizes through every resize, one file
//!   per image for `SaveImage`, one (animated) file per batch for `SaveAnimatedWEBP`.
//! - `GET /queue`, `POST /queue {"delete"|"clear"}`, `POST /interrupt {"prompt_id"}`
//!   (only the running prompt; none given: whatever runs), `GET /history/{id}` (`{}`
//!   until a run is done; its messages `execution_start`, `execution_cached`, then
//!   `execution_success`, `_error` or `_interrupted`), `GET /view`,
//!   `GET /object_info[/{class}]` (built from the same vendored schemas). The queue
//!   and interrupt see only this server's prompts.
//!
//! Mounted twice: `/comfyui` as the bare server (no auth, like the real one) and
//! `/comfyui-proxy` as ComfyUI behind the API-key proxy the README describes: every
//! request there, `/view` included, needs `Authorization: Bearer …` or gets 401.
//!
//! Simplifications: the sim caches no node, so `execution_cached` lists none (a real
//! server lists the nodes whose inputs it ran before); an animated WebP is served as a still of its first frame (the
//! `image` crate writes no animation); its history entry says `animated: [true]` and
//! it is one file, as on the real server.

pub mod graph;
pub mod validate;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::{Multipart, Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Map, Value, json};

use crate::common::{Ask, create_job_as, error, preview_label};
use crate::jobs::{Job, Phase};
use crate::state::Shared;
use parallax_sim::render::Format;

/// The server's own state beside the sim's: its inputs and the files each prompt
/// writes. One for both mounts, as they play one server.
#[derive(Debug)]
pub struct Comfy {
    sim: Shared,
    /// Uploads: `subfolder/name` → bytes.
    uploads: Mutex<HashMap<String, Vec<u8>>>,
    /// Output files: `subfolder/filename` → (the run that wrote it, output index).
    files: Mutex<HashMap<String, (Arc<Job>, usize)>>,
    /// Every run of each prompt id, oldest first: the real server queues a repeated
    /// id again and runs it again.
    runs: Mutex<HashMap<String, Vec<Run>>>,
}

/// One accepted prompt: its queue entry, its job, and the files its graph writes.
#[derive(Debug, Clone)]
struct Run {
    number: u64,
    outputs: Vec<String>,
    job: Arc<Job>,
    written: Vec<Written>,
}

/// One file a run writes, as its history entry names it.
#[derive(Debug, Clone)]
struct Written {
    node: String,
    subfolder: String,
    filename: String,
    /// For a WebP: whether it is animated (`SaveAnimatedWEBP`'s `animated` list).
    animated: Option<bool>,
}

impl Comfy {
    pub fn new(sim: Shared) -> Arc<Self> {
        Arc::new(Self {
            sim,
            uploads: Mutex::default(),
            files: Mutex::default(),
            runs: Mutex::default(),
        })
    }

    fn uploads(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<u8>>> {
        self.uploads.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn runs(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<Run>>> {
        self.runs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `job` is still within the sim's expiry (the sim forgets old jobs).
    fn live(&self, job: &Job) -> bool {
        job.submitted.elapsed() <= self.sim.jobs.timing.expiry
    }

    /// The runs running and the runs pending, each in queue order.
    fn queued(&self) -> (Vec<Run>, Vec<Run>) {
        let mut running = Vec::new();
        let mut pending = Vec::new();
        for run in self.runs().values().flatten() {
            match self.sim.jobs.phase(&run.job) {
                Phase::Processing if self.live(&run.job) => running.push(run.clone()),
                Phase::Queued if self.live(&run.job) => pending.push(run.clone()),
                _ => {}
            }
        }
        running.sort_by_key(|r| r.number);
        pending.sort_by_key(|r| r.number);
        (running, pending)
    }

    /// Registers the files `saved` of `job` under the names they get on disk
    /// (folder_paths.get_save_image_path: the counter goes on from the highest one
    /// already in the folder for that prefix, so a repeated prompt writes `_00002_`
    /// beside the first run's `_00001_`), and answers them as the history lists them.
    fn write(&self, job: &Arc<Job>, saved: &[graph::SavedFile]) -> Vec<Written> {
        let mut registry = self.files.lock().unwrap_or_else(|e| e.into_inner());
        let mut counters: HashMap<String, usize> = HashMap::new();
        let mut written = Vec::new();
        for (n, f) in saved.iter().enumerate() {
            let (sub, stem) = f.prefix.rsplit_once('/').unwrap_or(("", f.prefix.as_str()));
            let counter = counters.entry(f.prefix.clone()).or_insert_with(|| {
                let taken = format!("{sub}/{stem}_");
                registry
                    .keys()
                    .filter_map(|k| k.strip_prefix(&taken)?.get(..5)?.parse::<usize>().ok())
                    .max()
                    .unwrap_or(0)
            });
            *counter += 1;
            let ext = if f.webp { "webp" } else { "png" };
            let filename = format!("{stem}_{:05}_.{ext}", *counter);
            registry.insert(format!("{sub}/{filename}"), (job.clone(), n));
            written.push(Written {
                node: f.node.clone(),
                subfolder: sub.to_owned(),
                filename,
                animated: f.webp.then_some(f.frames != 1),
            });
        }
        written
    }

    /// Drops the runs and files of jobs past the sim's expiry (as the job table does).
    fn forget_expired(&self) {
        let mut runs = self.runs();
        for list in runs.values_mut() {
            list.retain(|run| self.live(&run.job));
        }
        runs.retain(|_, list| !list.is_empty());
        drop(runs);
        self.files
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, (job, _)| self.live(job));
    }

    /// Takes the pending runs `which` picks off the queue (they never run, and no
    /// history keeps them).
    fn delete_pending(&self, which: impl Fn(&str) -> bool) {
        let mut runs = self.runs();
        for (id, list) in runs.iter_mut() {
            if !which(id) {
                continue;
            }
            list.retain(|run| {
                let pending = self.sim.jobs.phase(&run.job) == Phase::Queued;
                if pending
                    && self
                        .sim
                        .jobs
                        .get(id)
                        .is_some_and(|j| Arc::ptr_eq(&j, &run.job))
                {
                    self.sim.jobs.remove(id);
                }
                !pending
            });
        }
        runs.retain(|_, list| !list.is_empty());
    }
}

pub fn router(keyed: bool) -> Router<Arc<Comfy>> {
    let r = Router::new()
        .route("/upload/image", post(upload))
        .route("/prompt", post(queue_prompt))
        .route("/queue", get(queue).post(edit_queue))
        .route("/interrupt", post(interrupt))
        .route("/history/{id}", get(history))
        .route("/view", get(view))
        .route("/object_info", get(object_info))
        .route("/object_info/{class}", get(object_info_class));
    if keyed {
        r.layer(axum::middleware::from_fn(require_key))
    } else {
        r
    }
}

/// The API-key proxy in front of ComfyUI.
async fn require_key(req: Request, next: Next) -> Response {
    let ok = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|k| !k.trim().is_empty());
    if ok {
        next.run(req).await
    } else {
        (
            StatusCode::UNAUTHORIZED,
            "missing or bad API key (sim proxy)",
        )
            .into_response()
    }
}

async fn upload(State(comfy): State<Arc<Comfy>>, mut mp: Multipart) -> Response {
    let sim = &comfy.sim;
    let mut name = None;
    let mut data = None;
    let mut subfolder = String::new();
    let mut overwrite = false;
    while let Ok(Some(field)) = mp.next_field().await {
        match field.name() {
            Some("image") => {
                name = field.file_name().map(str::to_owned);
                data = field.bytes().await.ok();
            }
            Some("subfolder") => subfolder = field.text().await.unwrap_or_default(),
            Some("overwrite") => {
                overwrite = matches!(field.text().await.as_deref(), Ok("true" | "1"));
            }
            _ => {}
        }
    }
    let (Some(mut name), Some(data)) = (name, data) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    // server.py: the subfolder must stay inside input/.
    if subfolder.starts_with('/') || subfolder.split('/').any(|p| p == "..") {
        return StatusCode::BAD_REQUEST.into_response();
    }
    let subfolder = subfolder.trim_matches('/').to_owned();
    // A test can hold the upload (the Worker names the file after the job id).
    crate::gates::hold(&sim.gates, "comfyui", "upload", &[&name, &subfolder]).await;
    let key = |n: &str| {
        if subfolder.is_empty() {
            n.to_owned()
        } else {
            format!("{subfolder}/{n}")
        }
    };
    let mut files = comfy.uploads();
    if !overwrite && files.contains_key(&key(&name)) {
        // server.py: a taken name becomes "name (1).ext", "name (2).ext", …
        let (stem, ext) = name.rsplit_once('.').unwrap_or((&name, ""));
        let (stem, ext) = (stem.to_owned(), ext.to_owned());
        let mut i = 1;
        while files.contains_key(&key(&format!("{stem} ({i}).{ext}"))) {
            i += 1;
        }
        name = format!("{stem} ({i}).{ext}");
    }
    files.insert(key(&name), data.to_vec());
    Json(json!({"name": name, "subfolder": subfolder, "type": "input"})).into_response()
}

fn refusal(error: Value, node_errors: Map<String, Value>) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"error": error, "node_errors": node_errors})),
    )
        .into_response()
}

/// The id a given `prompt_id` becomes: server.py `post_prompt` (v0.3.64 @a125cd84
/// l.692, and v0.8.0) takes `str(json_data.get("prompt_id", uuid.uuid4()))`, so any
/// value is accepted as Python prints it (`null` is `"None"`, `7` is `"7"`); only
/// the newest servers insist on a UUID (`validate_job_id`, @002c3fb9).
fn given_id(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => validate::py_repr(other, true),
    }
}

static NUMBER: AtomicU64 = AtomicU64::new(0);

async fn queue_prompt(State(comfy): State<Arc<Comfy>>, Json(body): Json<Value>) -> Response {
    let sim = &comfy.sim;
    // server.py takes the queue number first, whatever becomes of the prompt.
    let number = NUMBER.fetch_add(1, Ordering::Relaxed);
    let Some(prompt) = body.get("prompt") else {
        return refusal(
            json!({"type": "no_prompt", "message": "No prompt provided", "details": "No prompt provided", "extra_info": {}}),
            Map::new(),
        );
    };
    let id = body.get("prompt_id").map(given_id);
    let Some(graph) = prompt.as_object() else {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "prompt is not an object");
    };
    let nodes = validate::index(graph);
    let text = nodes
        .values()
        .find(|(class, _)| class == "CLIPTextEncode")
        .and_then(|(_, i)| i.get("text").and_then(Value::as_str))
        .unwrap_or_default()
        .to_owned();
    let files = comfy.uploads().clone();
    let (load_name, bytes) = nodes
        .values()
        .find(|(class, _)| class == "LoadImage")
        .and_then(|(_, i)| i.get("image").and_then(Value::as_str))
        .and_then(|n| Some((n.to_owned(), files.get(n)?.clone())))
        .unwrap_or_default();
    // A graph that estimates depth and samples nothing is the depth preview: its
    // output is the map itself ([`preview_label`] names the job).
    let preview = nodes.values().all(|(class, _)| class != "KSampler")
        && nodes
            .values()
            .any(|(class, _)| class == "DepthAnythingV2Preprocessor");
    let text = if preview { preview_label(&bytes) } else { text };
    if let Some(fault) = sim.submit_fault("comfyui", &text).await {
        return fault;
    }
    let names: HashSet<String> = files.keys().cloned().collect();
    let outputs = match validate::validate_prompt(graph, &names) {
        Ok(outputs) => outputs,
        Err(r) => return refusal(r.error, r.node_errors),
    };
    if text.contains("[sim:reject]") {
        // A refusal of the real shape, on the prompt node.
        let (node, _) = nodes
            .iter()
            .find(|(_, (class, _))| class == "CLIPTextEncode")
            .map(|(id, n)| (id.clone(), n.clone()))
            .unwrap_or_default();
        let mut node_errors = Map::new();
        node_errors.insert(node, json!({"errors": [{"type": "custom_validation_failed", "message": "Custom validation failed for node",
            "details": "text - rejected by the provider (sim)", "extra_info": {"input_name": "text"}}],
            "dependent_outputs": outputs, "class_type": "CLIPTextEncode"}));
        return refusal(
            json!({"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation", "details": "", "extra_info": {}}),
            node_errors,
        );
    }
    // A repeated id is queued and run again, as on the real server (its queue holds
    // `(number, prompt_id, …)` tuples and nothing checks the id is new). A minted id
    // is unique: it carries the number.
    let id = id.unwrap_or_else(|| format!("00000000-0000-4000-8000-{number:012x}"));
    let loaded = image::load_from_memory(&bytes)
        .map(|i| (i.width(), i.height()))
        .unwrap_or((0, 0));
    let saved = graph::saved_files(&nodes, &outputs, loaded);
    let first = saved.first();
    let quality = nodes
        .values()
        .find(|(class, _)| class == "SaveAnimatedWEBP")
        .and_then(|(_, i)| i.get("quality").and_then(Value::as_u64))
        .unwrap_or(80);
    let ask = Ask {
        model: if preview {
            "depth-anything-v2"
        } else {
            "flux-depth-dev"
        },
        seed: nodes
            .values()
            .find(|(class, _)| class == "KSampler")
            .and_then(|(_, i)| i.get("seed").and_then(Value::as_u64))
            .unwrap_or(0),
        count: saved.len().max(1),
        format: if first.is_some_and(|f| f.webp) {
            Format::Webp
        } else {
            Format::Png
        },
        quality: quality.clamp(1, 100) as u8,
        megapixels: None,
        image: if load_name.is_empty() {
            Err("LoadImage has no image".into())
        } else {
            Ok(bytes)
        },
        prompt: text,
    };
    let job = create_job_as(sim, ask, Some(id), first.map(|f| (f.width, f.height)));
    comfy.forget_expired();
    let written = comfy.write(&job, &saved);
    comfy.runs().entry(job.id.clone()).or_default().push(Run {
        number,
        outputs: outputs.clone(),
        job: job.clone(),
        written,
    });
    crate::gates::hold_job(&sim.gates, "comfyui", "submit", &job).await;
    if let Some(lost) = sim.lost_answer("comfyui", &job.spec.prompt) {
        return lost;
    }
    Json(json!({"prompt_id": job.id, "number": number, "node_errors": {}})).into_response()
}

/// A queue item as server.py lists it: `[number, prompt_id, prompt, extra_data,
/// outputs_to_execute]` (the sim keeps no copy of the graph).
fn queue_item(run: &Run) -> Value {
    json!([run.number, run.job.id, {}, {"client_id": "parallax"}, run.outputs])
}

async fn queue(State(comfy): State<Arc<Comfy>>) -> Response {
    let (running, pending) = comfy.queued();
    Json(json!({
        "queue_running": running.iter().map(queue_item).collect::<Vec<_>>(),
        "queue_pending": pending.iter().map(queue_item).collect::<Vec<_>>()
    }))
    .into_response()
}

/// `POST /queue`: `{"delete": [ids]}` takes pending prompts off the queue (a running
/// or finished one is untouched), `{"clear": true}` empties it. 200, empty body.
async fn edit_queue(State(comfy): State<Arc<Comfy>>, Json(body): Json<Value>) -> Response {
    if body["clear"] == true {
        comfy.delete_pending(|_| true);
    }
    let delete: Vec<&str> = body["delete"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if !delete.is_empty() {
        comfy.delete_pending(|id| delete.contains(&id));
    }
    StatusCode::OK.into_response()
}

/// `POST /interrupt`: with a `prompt_id`, only if that prompt is the one running;
/// without, whatever runs. 200, empty body.
async fn interrupt(State(comfy): State<Arc<Comfy>>, body: axum::body::Bytes) -> Response {
    let target = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v["prompt_id"].as_str().map(str::to_owned));
    let (running, _) = comfy.queued();
    for run in running {
        if target.as_ref().is_none_or(|t| *t == run.job.id) {
            run.job.canceled.store(true, Ordering::Relaxed);
        }
    }
    StatusCode::OK.into_response()
}

/// `GET /history/{id}`: the last finished run of that id (a repeat replaces the entry
/// when it ends, as `PromptQueue.task_done` does), `{}` while none has.
async fn history(State(comfy): State<Arc<Comfy>>, Path(id): Path<String>) -> Response {
    let sim = &comfy.sim;
    let finished = comfy.runs().get(&id).and_then(|runs| {
        runs.iter()
            .filter(|r| comfy.live(&r.job))
            .filter(|r| !matches!(sim.jobs.phase(&r.job), Phase::Queued | Phase::Processing))
            .max_by_key(|r| r.job.finished_unix_ms())
            .cloned()
    });
    let Some(run) = finished else {
        return Json(json!({})).into_response();
    };
    let job = &run.job;
    let prompt = queue_item(&run);
    let started = json!(["execution_start", {"prompt_id": id, "timestamp": 0}]);
    // execution.py `execute_async` (@a125cd84 l.677) records which nodes it took
    // from its cache before it runs; the sim caches nothing, as a first run.
    let cached = json!(["execution_cached", {"nodes": [], "prompt_id": id, "timestamp": 0}]);
    let status = |ok: bool, last: Value| json!({"status_str": if ok { "success" } else { "error" }, "completed": ok, "messages": [started, cached, last]});
    let entry = match sim.jobs.phase(job) {
        Phase::Queued | Phase::Processing => return Json(json!({})).into_response(),
        Phase::Completed => {
            let mut outputs = Map::new();
            for f in &run.written {
                let node = outputs
                    .entry(f.node.clone())
                    .or_insert_with(|| json!({"images": []}));
                if let Some(images) = node["images"].as_array_mut() {
                    images.push(
                        json!({"filename": f.filename, "subfolder": f.subfolder, "type": "output"}),
                    );
                }
                if let Some(animated) = f.animated {
                    if node.get("animated").is_none() {
                        node["animated"] = json!([]);
                    }
                    if let Some(a) = node["animated"].as_array_mut() {
                        a.push(json!(animated));
                    }
                }
            }
            json!({
                "prompt": prompt,
                "outputs": outputs,
                "status": status(true, json!(["execution_success", {"prompt_id": id, "timestamp": 0}])),
                "meta": {}
            })
        }
        Phase::Failed(_) if job.canceled.load(Ordering::Relaxed) => json!({
            "prompt": prompt,
            "outputs": {},
            "status": status(false, json!(["execution_interrupted",
                {"prompt_id": id, "node_id": "12", "node_type": "KSampler", "executed": [], "timestamp": 0}])),
            "meta": {}
        }),
        Phase::Failed(reason) => json!({
            "prompt": prompt,
            "outputs": {},
            "status": status(false, json!(["execution_error", {"prompt_id": id, "node_id": "12", "node_type": "KSampler",
                "executed": [], "exception_type": "RuntimeError", "exception_message": format!("{reason}\n"),
                "traceback": [], "current_inputs": {}, "current_outputs": {}, "timestamp": 0}])),
            "meta": {}
        }),
    };
    let mut map = Map::new();
    map.insert(id, entry);
    Json(Value::Object(map)).into_response()
}

async fn view(
    State(comfy): State<Arc<Comfy>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let sim = &comfy.sim;
    let name = q.get("filename").cloned().unwrap_or_default();
    let sub = q.get("subfolder").cloned().unwrap_or_default();
    if name.is_empty() || sub.split('/').any(|p| p == "..") || name.contains('/') {
        return StatusCode::BAD_REQUEST.into_response();
    }
    let found = comfy
        .files
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&format!("{sub}/{name}"))
        .cloned();
    let Some((job, n)) = found.filter(|(job, _)| comfy.live(job)) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if sim.jobs.phase(&job) != Phase::Completed || job.spec.prompt.contains("[sim:output404]") {
        return StatusCode::NOT_FOUND.into_response();
    }
    match job.outputs().get(n) {
        Some(o) => (
            [(header::CONTENT_TYPE, o.format.content_type())],
            o.bytes.clone(),
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn object_info(State(comfy): State<Arc<Comfy>>) -> Response {
    let names: Vec<String> = comfy.uploads().keys().cloned().collect();
    Json(Value::Object(validate::object_info(&names))).into_response()
}

async fn object_info_class(State(comfy): State<Arc<Comfy>>, Path(class): Path<String>) -> Response {
    let names: Vec<String> = comfy.uploads().keys().cloned().collect();
    let mut out = Map::new();
    if let Some(info) = validate::object_info(&names).remove(&class) {
        out.insert(class, info);
    }
    Json(Value::Object(out)).into_response()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::jobs::{Jobs, Timing};

    /// A server whose prompts finish at once, with one upload.
    fn server() -> Arc<Comfy> {
        let timing = Timing {
            queue: Duration::ZERO,
            process: Duration::ZERO,
            expiry: Duration::from_secs(60),
        };
        let sim = crate::state::Sim::new(Jobs::new(timing), "http://sim".into());
        let comfy = Comfy::new(Arc::new(sim));
        let mut png = Vec::new();
        image::RgbImage::new(64, 48)
            .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        comfy.uploads().insert("t/in.png".into(), png);
        comfy
    }

    fn workflow(text: &str) -> Value {
        let mut g: Value = serde_json::from_str(include_str!(
            "../../../edge/src/providers/comfyui_flux_depth_dev.json"
        ))
        .unwrap();
        g["4"]["inputs"]["image"] = json!("t/in.png");
        g["7"]["inputs"]["text"] = json!(text);
        g
    }

    async fn answer(resp: Response) -> (StatusCode, Value) {
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    async fn post(comfy: &Arc<Comfy>, body: Value) -> (StatusCode, Value) {
        answer(queue_prompt(State(comfy.clone()), Json(body)).await).await
    }

    async fn files(comfy: &Arc<Comfy>, id: &str) -> Vec<String> {
        let (_, h) = answer(history(State(comfy.clone()), Path(id.to_owned())).await).await;
        let messages: Vec<&str> = h[id]["status"]["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m[0].as_str().unwrap())
            .collect();
        assert_eq!(
            messages,
            ["execution_start", "execution_cached", "execution_success"]
        );
        h[id]["outputs"]
            .as_object()
            .unwrap()
            .values()
            .flat_map(|o| o["images"].as_array().unwrap().clone())
            .map(|i| i["filename"].as_str().unwrap().to_owned())
            .collect()
    }

    #[tokio::test]
    async fn the_shipped_preview_graph_validates_and_writes_one_depth_map() {
        let comfy = server();
        let mut g: Value = serde_json::from_str(include_str!(
            "../../../edge/src/providers/comfyui_depth_preview.json"
        ))
        .unwrap();
        g["4"]["inputs"]["image"] = json!("t/in.png");
        let (status, body) = post(&comfy, json!({"prompt": g, "prompt_id": "dp"})).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let written = files(&comfy, "dp").await;
        assert_eq!(written.len(), 1, "{written:?}");
        let job = comfy.sim.jobs.get("dp").unwrap();
        assert_eq!(job.model, "depth-anything-v2");
        // The node's short side is `resolution` (512): 64×48 becomes 683×512.
        assert_eq!(job.spec.size, Some((683, 512)));
        let label = preview_label(&comfy.uploads()["t/in.png"]);
        assert_eq!(comfy.sim.submissions()[&label], 1);

        // A misspelt checkpoint is refused as the real node's choice list refuses it.
        g["6"]["inputs"]["ckpt_name"] = json!("depth_anything_v3.pth");
        let (status, body) = post(&comfy, json!({"prompt": g})).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(body["node_errors"]["6"].is_object(), "{body}");
    }

    #[tokio::test]
    async fn a_repeated_prompt_id_runs_again_and_its_history_is_the_last_run() {
        let comfy = server();
        let (status, first) = post(
            &comfy,
            json!({"prompt": workflow("again"), "prompt_id": "same"}),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{first}");
        assert_eq!(first["prompt_id"], "same");
        let before = files(&comfy, "same").await;
        assert!(before.iter().all(|f| f.contains("_00001_")), "{before:?}");

        let (status, again) = post(
            &comfy,
            json!({"prompt": workflow("again"), "prompt_id": "same"}),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{again}");
        assert!(again["number"].as_u64() > first["number"].as_u64());
        let after = files(&comfy, "same").await;
        assert!(after.iter().all(|f| f.contains("_00002_")), "{after:?}");
        assert_eq!(comfy.sim.submissions()["again"], 2);

        // Any id is taken as Python prints it; none given, one is minted.
        let (_, null) = post(
            &comfy,
            json!({"prompt": workflow("null id"), "prompt_id": null}),
        )
        .await;
        assert_eq!(null["prompt_id"], "None");
        let (_, number) = post(
            &comfy,
            json!({"prompt": workflow("number id"), "prompt_id": 7}),
        )
        .await;
        assert_eq!(number["prompt_id"], "7");
        let (_, minted) = post(&comfy, json!({"prompt": workflow("minted")})).await;
        let (_, other) = post(&comfy, json!({"prompt": workflow("minted")})).await;
        assert_ne!(minted["prompt_id"], other["prompt_id"]);
    }

    #[tokio::test]
    async fn a_lost_answer_still_queues_the_prompt() {
        let comfy = server();
        let body = json!({"prompt": workflow("lost [sim:comfyui:lost]"), "prompt_id": "p"});
        let (status, _) = post(&comfy, body).await;
        assert_eq!(status, StatusCode::BAD_GATEWAY);
        assert_eq!(files(&comfy, "p").await.len(), 1);
    }
}
