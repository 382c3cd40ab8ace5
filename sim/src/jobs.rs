//! The sim's job table: each job's life is a function of the time since submission
//! (QUEUED, then PROCESSING, then COMPLETED or FAILED, then gone after expiry), so
//! behaviour is realistic without background tasks.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use parallax_sim::render::{self, RenderSpec, Rendered};

/// How long each phase lasts.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub queue: Duration,
    pub process: Duration,
    pub expiry: Duration,
}

/// A job's phase at some instant.
#[derive(Debug, Clone, PartialEq)]
pub enum Phase {
    Queued,
    Processing,
    Completed,
    Failed(String),
}

#[derive(Debug)]
pub struct Job {
    pub id: String,
    pub submitted: Instant,
    /// The same instant in Unix milliseconds (for `/debug/jobs`' `finished_ms`).
    pub submitted_unix_ms: u64,
    /// Set when the job will fail (bad input, or a fault requested by the prompt).
    pub failure: Option<String>,
    /// The model slug the job was submitted for.
    pub model: String,
    /// How long processing takes (the server's default, or what the prompt asked).
    pub process: Duration,
    /// How long it stays queued (likewise).
    pub queue: Duration,
    pub spec: RenderSpec,
    /// Canceled by the client (Replicate's cancel).
    pub canceled: std::sync::atomic::AtomicBool,
    /// Canceled while still queued (it never ran).
    pub never_started: std::sync::atomic::AtomicBool,
    outputs: OnceLock<Arc<Vec<Rendered>>>,
}

impl Job {
    /// When the job ends (or ended) by its timing, in Unix milliseconds: the instant
    /// the provider's GPU is done, which a benchmark compares with when the edge saw
    /// it. A canceled job ends when canceled, which this does not know.
    pub fn finished_unix_ms(&self) -> u64 {
        let run = self.queue + self.process;
        self.submitted_unix_ms + u64::try_from(run.as_millis()).unwrap_or(u64::MAX)
    }

    pub fn outputs(&self) -> Arc<Vec<Rendered>> {
        self.outputs
            .get_or_init(|| Arc::new(render::render_all(&self.spec)))
            .clone()
    }
}

#[derive(Debug)]
pub struct Jobs {
    pub timing: Timing,
    table: Mutex<HashMap<String, Arc<Job>>>,
    counter: Mutex<u64>,
}

impl Jobs {
    pub fn new(timing: Timing) -> Self {
        Self {
            timing,
            table: Mutex::new(HashMap::new()),
            counter: Mutex::new(0),
        }
    }

    pub fn insert(
        &self,
        model: &str,
        failure: Option<String>,
        spec: RenderSpec,
        process: Option<Duration>,
        id: Option<String>,
    ) -> Arc<Job> {
        let n = {
            let mut c = self.counter.lock().unwrap_or_else(|e| e.into_inner());
            *c += 1;
            *c
        };
        let id = id.unwrap_or_else(|| uuid_like(n, &spec));
        let job = Arc::new(Job {
            id: id.clone(),
            submitted: Instant::now(),
            submitted_unix_ms: unix_ms(),
            failure,
            model: model.to_owned(),
            process: process.unwrap_or(self.timing.process),
            queue: requested_secs(&spec.prompt, "queue").unwrap_or(self.timing.queue),
            spec,
            canceled: std::sync::atomic::AtomicBool::new(false),
            never_started: std::sync::atomic::AtomicBool::new(false),
            outputs: OnceLock::new(),
        });
        self.lock().insert(id, job.clone());
        job
    }

    /// The job, unless unknown or expired (expired jobs are dropped).
    pub fn get(&self, id: &str) -> Option<Arc<Job>> {
        let mut table = self.lock();
        let job = table.get(id)?.clone();
        if job.submitted.elapsed() > self.timing.expiry {
            table.remove(id);
            return None;
        }
        Some(job)
    }

    /// Forgets a job (ComfyUI's queue delete: never ran, not in the history).
    pub fn remove(&self, id: &str) {
        self.lock().remove(id);
    }

    /// Ids of live jobs split by `f`: `Some(true)` first list, `Some(false)` second.
    pub fn partition(&self, f: impl Fn(&Job) -> Option<bool>) -> (Vec<String>, Vec<String>) {
        let table = self.lock();
        let mut yes = Vec::new();
        let mut no = Vec::new();
        for job in table.values() {
            match f(job) {
                Some(true) => yes.push(job.id.clone()),
                Some(false) => no.push(job.id.clone()),
                None => {}
            }
        }
        (yes, no)
    }

    pub fn phase(&self, job: &Job) -> Phase {
        if job.canceled.load(std::sync::atomic::Ordering::Relaxed) {
            return Phase::Failed("Prediction was canceled".into());
        }
        let t = job.submitted.elapsed();
        let process = job.process;
        if t < job.queue {
            Phase::Queued
        } else if t < job.queue + process {
            Phase::Processing
        } else if let Some(reason) = &job.failure {
            Phase::Failed(reason.clone())
        } else {
            Phase::Completed
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Job>>> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The time a `[sim:NAME=SECONDS]` token asks for (`process`, `queue`).
pub fn requested_secs(prompt: &str, name: &str) -> Option<Duration> {
    let token = format!("[sim:{name}=");
    let start = prompt.find(&token)? + token.len();
    let end = prompt[start..].find(']')? + start;
    let secs: f64 = prompt[start..end].trim().parse().ok()?;
    Duration::try_from_secs_f64(secs).ok()
}

/// Now, in Unix milliseconds.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A request id shaped like Segmind's (a UUID), unique per sim process.
fn uuid_like(n: u64, spec: &RenderSpec) -> String {
    let h = render::fnv1a(&[&n.to_le_bytes(), spec.prompt.as_bytes()]);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let hex = format!("{h:016x}{:016x}", nanos ^ n.rotate_left(32));
    format!(
        "{}-{}-4{}-8{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[13..16],
        &hex[17..20],
        &hex[20..32]
    )
}
