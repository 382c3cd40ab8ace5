//! The sim's shared state: the job table, the base URL, the counters tests read at
//! `/debug/…` (submissions, later requests, control images, faults served), and the
//! parts other rooms own (gates, callbacks, the other origin), each held behind its
//! own `Arc` so those rooms never need this one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use crate::elsewhere::Elsewhere;
use crate::gates::Gates;
use crate::hooks::Hooks;
use crate::jobs::Jobs;

/// The sim's shared state.
#[derive(Debug)]
pub struct Sim {
    pub jobs: Jobs,
    /// This server's base URL (no trailing slash).
    pub base: String,
    /// (prompt, scope, fault) → times served.
    faults: Mutex<HashMap<(String, String, String), u32>>,
    /// Accepted submissions per prompt (to detect duplicate upstream submits).
    submissions: Mutex<HashMap<String, u32>>,
    /// Later requests naming a job, per prompt: (polls and other API calls, downloads).
    requests: Mutex<HashMap<String, (u32, u32)>>,
    /// Gates that hold provider calls for interleaving tests.
    pub gates: Arc<Gates>,
    /// Idempotency keys seen by the Parallax protocol: key → job id.
    pub idempotency: Mutex<HashMap<String, String>>,
    /// How each submit's control image arrived, per prompt (see
    /// [`crate::common::control_image`]).
    controls: Mutex<HashMap<String, Vec<Value>>>,
    /// Callbacks: their delivery and the log of those delivered (`hooks`).
    pub hooks: Arc<Hooks>,
    /// Render each job's outputs while it runs (`--render-ahead`).
    pub render_ahead: bool,
    /// Fetches control images given as URLs (and, through `hooks`, delivers callbacks).
    pub http: reqwest::Client,
    /// Another origin, where `[sim:redirect]` sends polls.
    pub elsewhere: Arc<Elsewhere>,
}

pub type Shared = Arc<Sim>;

impl Sim {
    pub fn new(jobs: Jobs, base: String) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_default();
        Self {
            jobs,
            base,
            faults: Mutex::new(HashMap::new()),
            submissions: Mutex::new(HashMap::new()),
            requests: Mutex::new(HashMap::new()),
            gates: Arc::default(),
            idempotency: Mutex::new(HashMap::new()),
            controls: Mutex::new(HashMap::new()),
            hooks: Arc::new(Hooks::new(http.clone())),
            render_ahead: false,
            http,
            elsewhere: Arc::default(),
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
        let mut map = lock(&self.requests);
        let entry = map.entry(job.spec.prompt.clone()).or_insert((0, 0));
        if download {
            entry.1 += 1;
        } else {
            entry.0 += 1;
        }
    }

    /// Counts one accepted submission for `prompt`.
    pub fn count_submission(&self, prompt: &str) {
        *lock(&self.submissions)
            .entry(prompt.to_owned())
            .or_insert(0) += 1;
    }

    /// Accepted submissions per prompt so far.
    pub fn submissions(&self) -> HashMap<String, u32> {
        lock(&self.submissions).clone()
    }

    /// Later requests per prompt so far: (polls and other API calls, downloads).
    pub fn requests(&self) -> HashMap<String, (u32, u32)> {
        lock(&self.requests).clone()
    }

    /// Records how a submit's control image arrived for `prompt`.
    pub fn record_control(&self, prompt: &str, record: Value) {
        lock(&self.controls)
            .entry(prompt.to_owned())
            .or_default()
            .push(record);
    }

    /// How each submit's control image arrived, per prompt.
    pub fn controls(&self) -> HashMap<String, Vec<Value>> {
        lock(&self.controls).clone()
    }

    /// Counts one occurrence of `fault` for this prompt and scope; true while it should
    /// still fire (twice, or always with `always`).
    pub fn fires(&self, prompt: &str, scope: &str, fault: &str, always: bool) -> bool {
        let mut map = lock(&self.faults);
        let n = map
            .entry((prompt.to_owned(), scope.to_owned(), fault.to_owned()))
            .or_insert(0);
        *n += 1;
        always || *n <= 2
    }
}

/// The map behind `m`, even if a panicking holder poisoned it (the counters stay
/// usable).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
