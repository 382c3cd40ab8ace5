//! The browser's job store, as data: what is kept for each job, how two copies of the
//! store (this tab's and another tab's, or the server's list) merge, and the versioned
//! form it is persisted in. The runtime around it (signals, storage events, polling)
//! is `crate::store`; everything here is plain data and tested natively.
//!
//! Merging never overwrites blindly: for each job id the *newest* state wins, where a
//! later phase always beats an earlier one (a job never goes back from FAILED to
//! PROCESSING, whatever clock says), and within a phase the state learned last wins.

use parallax_api::{JobResult, JobStatus, Metrics, Model, Params, ShareControl, StatusResponse};
use serde::{Deserialize, Serialize};

/// The persisted schema's version; bump it when [`Job`] changes incompatibly.
pub const SCHEMA_VERSION: u32 = 2;
/// Where the store lives in localStorage.
pub const STORAGE_KEY: &str = "parallax.jobs";
/// Version 1's key: a bare list of history entries.
pub const LEGACY_KEY: &str = "parallax.history";
/// Most jobs kept in this browser.
pub const MAX_JOBS: usize = 300;
/// Ids remembered as deleted, so another tab's copy does not bring them back.
const MAX_REMOVED: usize = 300;

/// One job, as this browser knows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub id: String,
    pub model: Model,
    pub prompt: String,
    pub status: JobStatus,
    /// True once the result (outputs, or the final error) has been read; a COMPLETED
    /// status without it still needs a result fetch.
    #[serde(default)]
    pub has_result: bool,
    /// Browser clock at submit (ms), or the server's `created_at`.
    pub created_ms: f64,
    /// Browser clock when this state was learned: the tie-break of a merge.
    #[serde(default)]
    pub updated_ms: f64,
    /// Browser clock when this browser saw it end.
    #[serde(default)]
    pub finished_ms: Option<f64>,
    /// The images' URLs. The result answers `output` (the first URL) and `images`
    /// (all of them); the store keeps this list, in the shape every version of the
    /// studio wrote, so jobs stored before that change load and show unchanged.
    #[serde(default)]
    pub outputs: Vec<String>,
    #[serde(default)]
    pub control_image: Option<String>,
    /// The depth map the job was made from, when the server knows it (see
    /// `JobResult::depth_image`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub depth_image: Option<String>,
    /// The depth map this browser previewed for the job's control image before
    /// submitting it (the server knows it only for keyed accounts): what the card
    /// compares with when the server gives no `depth_image`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview_depth: Option<String>,
    #[serde(default)]
    pub expires_at: Option<u64>,
    #[serde(default)]
    pub error: Option<String>,
    /// `GET` the result here; `/status` and `/cancel` hang below it.
    pub response_url: String,
    #[serde(default)]
    pub params: Params,
    #[serde(default)]
    pub seed: Option<u32>,
    #[serde(default)]
    pub metrics: Metrics,
    /// Expected duration (s) at submit, from this device's recent jobs.
    #[serde(default)]
    pub expected_secs: Option<f64>,
    /// An anonymous job's owner token from the submit's answer: what cancels or
    /// deletes it, and gets its control image link (the server keeps no copy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_token: Option<String>,
    /// What its share page shows beside the result (the owner's choice, stored with
    /// the job on the server).
    #[serde(default, skip_serializing_if = "ShareControl::is_none")]
    pub share_control: ShareControl,
}

impl Job {
    /// A job just accepted by the server.
    pub fn submitted(
        id: &str,
        model: Model,
        prompt: &str,
        response_url: &str,
        params: Params,
        now_ms: f64,
        expected_secs: f64,
    ) -> Self {
        Self {
            id: id.to_owned(),
            model,
            prompt: prompt.to_owned(),
            status: JobStatus::Queued,
            has_result: false,
            created_ms: now_ms,
            updated_ms: now_ms,
            finished_ms: None,
            outputs: Vec::new(),
            control_image: None,
            depth_image: None,
            preview_depth: None,
            expires_at: None,
            error: None,
            response_url: response_url.to_owned(),
            params,
            seed: None,
            metrics: Metrics::default(),
            expected_secs: Some(expected_secs),
            owner_token: None,
            share_control: ShareControl::None,
        }
    }

    /// The job a server result describes (a poll's end, or a row of the key's list).
    pub fn from_result(r: &JobResult, response_url: &str, now_ms: f64) -> Self {
        let ended = r.status.is_terminal();
        Self {
            id: r.request_id.to_string(),
            model: r.model,
            prompt: r.params.prompt().to_owned(),
            status: r.status,
            has_result: ended,
            created_ms: r.created_at as f64 * 1000.0,
            updated_ms: now_ms,
            finished_ms: ended.then_some(now_ms),
            outputs: r.images.iter().map(|i| i.url.clone()).collect(),
            control_image: r.control_image.clone(),
            depth_image: r.depth_image.clone(),
            preview_depth: None,
            expires_at: r.expires_at,
            error: r.error.clone(),
            response_url: response_url.to_owned(),
            params: r.params.clone(),
            seed: r.seed,
            metrics: r.metrics.clone(),
            expected_secs: None,
            owner_token: None,
            share_control: r.share_control,
        }
    }

    /// This job after a status read (or a cancel's answer) at `now_ms`.
    pub fn with_status(&self, s: &StatusResponse, now_ms: f64) -> Self {
        if s.status == self.status && s.metrics == self.metrics && s.error == self.error {
            // Nothing new: the same state (so no write, no event for other tabs).
            return self.clone();
        }
        let mut next = self.clone();
        next.status = s.status;
        next.updated_ms = now_ms;
        next.metrics = s.metrics.clone();
        if s.status == JobStatus::Failed {
            // A failure's status body carries everything the card shows.
            next.error = s.error.clone().or(next.error);
            next.has_result = true;
        }
        if s.status.is_terminal() && next.finished_ms.is_none() {
            next.finished_ms = Some(now_ms);
        }
        next
    }

    /// This job marked gone on the server (a 404): final, with the reason.
    pub fn gone(&self, now_ms: f64) -> Self {
        let mut next = self.clone();
        next.status = JobStatus::Failed;
        next.has_result = true;
        next.error = Some("This job no longer exists on the server.".into());
        // Nothing more can be read of it (its credits are in the key's history).
        if let Some(c) = next.metrics.credits.as_mut() {
            c.refund_pending = None;
        }
        next.updated_ms = now_ms;
        next.finished_ms.get_or_insert(now_ms);
        next
    }

    /// Whether the scheduler still has to read something for it: its result, or how a
    /// refund still pending (a cancel's upstream answer) was decided.
    pub fn needs_poll(&self) -> bool {
        !self.has_result || self.refund_pending() > 0
    }

    /// What a decision under way may still refund (0: nothing pending).
    pub fn refund_pending(&self) -> u64 {
        self.metrics
            .credits
            .and_then(|c| c.refund_pending)
            .unwrap_or(0)
    }

    /// Whether the signed link to its control image (the owner's, short-lived: see
    /// the edge's `control_link.rs`) is over at `now_ms`, so the result must be read
    /// again for a fresh one. A link without an `exp` never is.
    pub fn control_link_over(&self, now_ms: f64) -> bool {
        let exp = self.control_image.as_deref().and_then(|url| {
            let query = url.split_once('?')?.1;
            query
                .split('&')
                .find_map(|kv| kv.strip_prefix("exp="))?
                .parse::<f64>()
                .ok()
        });
        // A minute early: the image must still load once the card shows it.
        exp.is_some_and(|exp| exp * 1000.0 - 60_000.0 <= now_ms)
    }

    pub fn status_url(&self) -> String {
        format!("{}/status", self.response_url)
    }

    pub fn cancel_url(&self) -> String {
        format!("{}/cancel", self.response_url)
    }

    pub fn share_url(&self) -> String {
        format!("{}/share", self.response_url)
    }

    /// How far along it is, for merging: a later phase always wins.
    fn rank(&self) -> u8 {
        match (self.status, self.has_result) {
            (JobStatus::Queued, _) => 0,
            (JobStatus::Processing, _) => 1,
            (_, false) => 2,
            (_, true) => 3,
        }
    }

    /// Whether `self` is a newer state of the job than `other`.
    fn newer_than(&self, other: &Self) -> bool {
        (self.rank(), self.updated_ms) > (other.rank(), other.updated_ms)
    }
}

/// Puts `incoming` into `list`: added if new, replacing the stored state only if it is
/// newer. Keeps the list newest-first and capped. Returns whether anything changed.
pub fn upsert(list: &mut Vec<Job>, incoming: Job) -> bool {
    let changed = match list.iter_mut().find(|j| j.id == incoming.id) {
        Some(existing) => {
            let created = existing.created_ms.min(incoming.created_ms);
            let expected = existing.expected_secs.or(incoming.expected_secs);
            // Only the submitting tab learned it; no later state may drop it.
            let token = existing.owner_token.take().or(incoming.owner_token.clone());
            let depth = existing
                .preview_depth
                .take()
                .or(incoming.preview_depth.clone());
            let mut changed = false;
            if incoming.newer_than(existing) {
                *existing = incoming;
                changed = true;
            }
            existing.expected_secs = expected;
            existing.owner_token = token;
            existing.preview_depth = depth;
            if existing.created_ms != created {
                existing.created_ms = created;
                changed = true;
            }
            changed
        }
        None => {
            list.push(incoming);
            true
        }
    };
    if changed {
        // Unstable sort (smaller code), made total by the id.
        list.sort_unstable_by(|a, b| {
            b.created_ms
                .total_cmp(&a.created_ms)
                .then_with(|| a.id.cmp(&b.id))
        });
        list.truncate(MAX_JOBS);
    }
    changed
}

/// The store as persisted.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Stored {
    pub version: u32,
    pub jobs: Vec<Job>,
    /// Ids deleted or removed here: never merged back in.
    #[serde(default)]
    pub removed: Vec<String>,
}

impl Stored {
    pub fn new() -> Self {
        Self {
            version: SCHEMA_VERSION,
            jobs: Vec::new(),
            removed: Vec::new(),
        }
    }

    /// Merges another copy (another tab's, or what storage holds) into this one.
    /// Returns whether this copy changed.
    pub fn merge(&mut self, other: &Stored) -> bool {
        let mut changed = false;
        for id in &other.removed {
            changed |= self.remove(id);
        }
        for job in &other.jobs {
            if !self.removed.contains(&job.id) {
                changed |= upsert(&mut self.jobs, job.clone());
            }
        }
        changed
    }

    /// Adds or updates one job (unless it was removed). Returns whether it changed.
    pub fn put(&mut self, job: Job) -> bool {
        !self.removed.contains(&job.id) && upsert(&mut self.jobs, job)
    }

    /// Forgets a job for good (here and, through storage, in every tab).
    pub fn remove(&mut self, id: &str) -> bool {
        let had = self.jobs.iter().any(|j| j.id == id);
        self.jobs.retain(|j| j.id != id);
        if !self.removed.iter().any(|r| r == id) {
            self.removed.push(id.to_owned());
            if self.removed.len() > MAX_REMOVED {
                self.removed.remove(0);
            }
            return true;
        }
        had
    }

    pub fn get(&self, id: &str) -> Option<&Job> {
        self.jobs.iter().find(|j| j.id == id)
    }

    pub fn encode(&self) -> String {
        crate::json::stringify(self)
    }

    /// Reads the stored text: this version, or nothing (an unknown or broken version is
    /// dropped rather than misread).
    pub fn decode(text: &str) -> Self {
        match crate::json::parse::<Stored>(text) {
            Ok(s) if s.version == SCHEMA_VERSION => s,
            _ => Self::new(),
        }
    }

    /// Reads version 1 (a list of history entries, each `{id, model, prompt, status,
    /// created_ms, outputs, …, response_url}`) into this version.
    pub fn from_legacy(text: &str) -> Self {
        let mut stored = Self::new();
        let Ok(entries) = crate::json::parse::<Vec<serde_json::Value>>(text) else {
            return stored;
        };
        for e in entries {
            let mut job = e.clone();
            if let Some(o) = job.as_object_mut() {
                let ended = o
                    .get("status")
                    .and_then(|s| s.as_str())
                    .is_some_and(|s| s == "COMPLETED" || s == "FAILED");
                o.insert("has_result".into(), ended.into());
            }
            if let Ok(job) = serde_json::from_value::<Job>(job) {
                stored.put(job);
            }
        }
        stored
    }
}

/// Jobs matching a model slug and a status ("" matches all).
pub fn filter<'a>(list: &'a [Job], model: &str, status: &str) -> Vec<&'a Job> {
    list.iter()
        .filter(|j| model.is_empty() || j.model.slug() == model)
        .filter(|j| status.is_empty() || j.status.as_str() == status)
        .collect()
}

/// Drops jobs whose retention is over (their images are gone).
pub fn prune_expired(list: &mut Vec<Job>, now_secs: u64) {
    list.retain(|j| j.expires_at.is_none_or(|t| t > now_secs));
}

/// "kept 29 more days", "kept 5 more hours", "expired".
pub fn expiry_text(expires_at: Option<u64>, now_secs: u64) -> Option<String> {
    let left = expires_at?.checked_sub(now_secs).filter(|l| *l > 0);
    Some(match left {
        None => "expired".into(),
        Some(l) if l >= 2 * 86_400 => format!("kept {} more days", l / 86_400),
        Some(l) if l >= 2 * 3600 => format!("kept {} more hours", l / 3600),
        Some(l) if l >= 120 => format!("kept {} more minutes", l / 60),
        Some(_) => "expires in a minute".into(),
    })
}

/// The export: every job as pretty JSON.
pub fn export(list: &[Job]) -> String {
    match crate::json::pretty(list) {
        t if t.is_empty() => "[]".into(),
        t => t,
    }
}

/// Unicode lowercasing by the browser's `toLowerCase` in the app: Rust's own
/// (`str::to_lowercase`) links Unicode's case tables, 8 KB gzip of wasm for a file name.
fn lowercase(word: &str) -> String {
    #[cfg(target_arch = "wasm32")]
    return js_sys::JsString::from(word).to_lower_case().into();
    #[cfg(not(target_arch = "wasm32"))]
    word.to_lowercase()
}

/// A file name for output `n` of a job: the prompt's first words and the seed,
/// e.g. `a-red-door-seed-42-2.jpg`.
pub fn download_name(prompt: &str, seed: Option<u32>, n: usize, url: &str) -> String {
    let words: Vec<String> = prompt
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .take(6)
        .map(lowercase)
        .collect();
    let stem = if words.is_empty() {
        "parallax".to_owned()
    } else {
        words.join("-")
    };
    let ext = url
        .rsplit('/')
        .next()
        .and_then(|f| f.rsplit_once('.'))
        .map_or("jpg", |(_, e)| e);
    let seed = seed.map(|s| format!("-seed-{s}")).unwrap_or_default();
    format!("{stem}{seed}-{}.{ext}", n + 1)
}

#[cfg(test)]
mod tests {
    use parallax_api::{Credits, RequestId};

    use super::*;

    const ID: &str = "2c7f59ea-13f1-402c-9353-915a2b5a2124";

    fn job(id: &str, created: f64) -> Job {
        Job::submitted(
            id,
            Model::FluxDepthPro,
            &format!("p{id}"),
            &format!("http://x/v2/requests/{id}"),
            Params::default(),
            created,
            20.0,
        )
    }

    fn status(s: JobStatus, error: Option<&str>) -> StatusResponse {
        StatusResponse {
            request_id: RequestId::parse(ID).unwrap(),
            status: s,
            status_url: format!("http://x/v2/requests/{ID}/status"),
            response_url: format!("http://x/v2/requests/{ID}"),
            error: error.map(str::to_owned),
            code: None,
            metrics: Metrics {
                credits: Some(Credits {
                    charged: 5,
                    refunded: 0,
                    refund_on_cancel: Some(5),
                    refund_pending: None,
                }),
                ..Metrics::default()
            },
        }
    }

    #[test]
    fn a_canceled_job_is_read_again_until_its_pending_refund_is_decided() {
        let mut pending = status(JobStatus::Failed, Some("Canceled by its owner"));
        pending.metrics.credits = Some(Credits {
            charged: 5,
            refunded: 0,
            refund_on_cancel: None,
            refund_pending: Some(5),
        });
        let canceled = job(ID, 1.0).with_status(&pending, 2.0);
        assert!(canceled.has_result);
        assert_eq!(canceled.refund_pending(), 5);
        assert!(canceled.needs_poll(), "pending: read again");
        let mut settled = pending.clone();
        settled.metrics.credits = Some(Credits {
            refunded: 5,
            refund_pending: None,
            ..settled.metrics.credits.unwrap()
        });
        let done = canceled.with_status(&settled, 3.0);
        assert!(!done.needs_poll(), "decided: nothing more to read");
        assert!(
            !canceled.gone(4.0).needs_poll(),
            "gone: nothing more to read"
        );
        assert_eq!(done.metrics.credits.map(|c| c.refunded), Some(5));
    }

    #[test]
    fn a_later_phase_wins_whatever_the_clocks_say() {
        let queued = job(ID, 1.0);
        let processing = queued.with_status(&status(JobStatus::Processing, None), 10.0);
        let failed = queued.with_status(&status(JobStatus::Failed, Some("Canceled")), 5.0);
        let mut list = vec![failed.clone()];
        assert!(!upsert(&mut list, processing.clone()), "stale tab");
        assert_eq!(list[0].status, JobStatus::Failed);
        let mut list = vec![processing];
        assert!(upsert(&mut list, failed));
        assert_eq!(list[0].error.as_deref(), Some("Canceled"));
        assert_eq!(list[0].finished_ms, Some(5.0));
    }

    #[test]
    fn within_a_phase_the_state_learned_last_wins_and_first_sighting_is_kept() {
        let a = job(ID, 100.0);
        let mut b = a.with_status(&status(JobStatus::Processing, None), 20.0);
        b.created_ms = 200.0;
        let mut c = b.clone();
        c.updated_ms = 30.0;
        c.metrics.provider = Some("bfl".into());
        let mut list = vec![a];
        upsert(&mut list, c.clone());
        upsert(&mut list, b);
        assert_eq!(list[0].metrics.provider.as_deref(), Some("bfl"));
        assert_eq!(list[0].created_ms, 100.0, "first sighting wins");
        assert_eq!(list[0].expected_secs, Some(20.0));
    }

    #[test]
    fn merging_two_tabs_keeps_every_job_newest_first_and_is_order_independent() {
        let mut tab_a = Stored::new();
        tab_a.put(job("a", 1.0));
        tab_a.put(job("shared", 2.0));
        let mut tab_b = Stored::new();
        tab_b.put(job("b", 3.0));
        let done = job("shared", 2.0).with_status(&status(JobStatus::Completed, None), 9.0);
        tab_b.put(done.clone());
        let mut ab = tab_a.clone();
        assert!(ab.merge(&tab_b));
        let mut ba = tab_b.clone();
        ba.merge(&tab_a);
        assert_eq!(ab, ba);
        let ids: Vec<_> = ab.jobs.iter().map(|j| j.id.as_str()).collect();
        assert_eq!(ids, ["b", "shared", "a"]);
        assert_eq!(ab.get("shared").unwrap().status, JobStatus::Completed);
        assert!(!ab.clone().merge(&tab_b), "merging again changes nothing");
    }

    #[test]
    fn a_removed_job_stays_removed_when_a_stale_tab_merges() {
        let mut here = Stored::new();
        here.put(job("a", 1.0));
        let stale = here.clone();
        assert!(here.remove("a"));
        here.merge(&stale);
        assert!(here.get("a").is_none());
        let mut other = stale;
        other.merge(&here);
        assert!(
            other.get("a").is_none(),
            "the removal travels to other tabs"
        );
        assert!(!other.put(job("a", 1.0)));
    }

    #[test]
    fn the_schema_is_versioned_and_version_1_is_migrated() {
        let mut s = Stored::new();
        s.put(job("a", 1.0));
        assert_eq!(Stored::decode(&s.encode()), s);
        assert_eq!(Stored::decode(r#"{"version":99,"jobs":[]}"#), Stored::new());
        assert_eq!(Stored::decode("not json"), Stored::new());
        let v1 = r#"[{"id":"a","model":"flux-depth-dev","prompt":"a fox","status":"COMPLETED","created_ms":5,
            "outputs":["http://x/results/a/0.jpg"],"response_url":"http://x/v2/requests/a"},
            {"id":"b","model":"flux-depth-pro","prompt":"b","status":"QUEUED","created_ms":6,"response_url":"http://x/v2/requests/b"}]"#;
        let m = Stored::from_legacy(v1);
        assert_eq!(m.jobs.len(), 2);
        let a = m.get("a").unwrap();
        assert!(a.has_result && !a.needs_poll());
        assert_eq!(a.model, Model::FluxDepthDev);
        assert!(m.get("b").unwrap().needs_poll(), "running jobs are resumed");
    }

    /// A returning visitor's store, as the studio wrote it before results answered
    /// `output` as one URL (and `images`): a finished job with two images, and one
    /// still running when the tab closed.
    const STORED_BEFORE_IMAGES: &str = r#"{"version":2,"jobs":[
        {"id":"2c7f59ea-13f1-402c-9353-915a2b5a2124","model":"flux-depth-dev","prompt":"a fox",
         "status":"COMPLETED","has_result":true,"created_ms":1700000000000.0,"updated_ms":1700000009000.0,
         "finished_ms":1700000009000.0,
         "outputs":["http://x/results/2c7f59ea-13f1-402c-9353-915a2b5a2124/0.webp","http://x/results/2c7f59ea-13f1-402c-9353-915a2b5a2124/1.webp"],
         "control_image":"http://x/results/2c7f59ea-13f1-402c-9353-915a2b5a2124/control","expires_at":1702592000,
         "error":null,"response_url":"http://x/v2/requests/2c7f59ea-13f1-402c-9353-915a2b5a2124",
         "params":{"prompt":"a fox","num_outputs":2,"seed":7},"seed":7,
         "metrics":{"queue_time":0.3,"inference_time":1.2,"total_time":1.5,"provider":"segmind","credits":{"charged":4,"refunded":0}},
         "expected_secs":null},
        {"id":"3c7f59ea-13f1-402c-9353-915a2b5a2124","model":"flux-depth-pro","prompt":"a owl",
         "status":"PROCESSING","has_result":false,"created_ms":1700000001000.0,"updated_ms":1700000002000.0,
         "finished_ms":null,"outputs":[],"control_image":null,"expires_at":null,"error":null,
         "response_url":"http://x/v2/requests/3c7f59ea-13f1-402c-9353-915a2b5a2124",
         "params":{"prompt":"a owl"},"seed":null,"metrics":{},"expected_secs":12.0}],"removed":[]}"#;

    #[test]
    fn a_store_written_before_images_loads_with_its_images_and_resumes() {
        let stored = Stored::decode(STORED_BEFORE_IMAGES);
        assert_eq!(stored.jobs.len(), 2, "not dropped as a broken version");
        let done = stored.get(ID).unwrap();
        assert!(done.has_result && !done.needs_poll());
        assert_eq!(done.outputs.len(), 2);
        assert!(done.outputs[1].ends_with("/1.webp"));
        let running = stored.get("3c7f59ea-13f1-402c-9353-915a2b5a2124").unwrap();
        assert!(running.needs_poll(), "the running job is resumed");

        // Its result now comes in the new shape: every image is kept, from `images`.
        let id = "3c7f59ea-13f1-402c-9353-915a2b5a2124";
        let result: JobResult = serde_json::from_value(serde_json::json!({
            "request_id": id, "model": "flux-depth-pro", "status": "COMPLETED",
            "output": format!("http://x/results/{id}/0.jpg"),
            "images": [{"url": format!("http://x/results/{id}/0.jpg"), "content_type": "image/jpeg",
                        "file_name": "0.jpg", "file_size": 1234}],
            "seed": 3, "params": {"prompt": "a owl", "seed": 3}, "error": null,
            "metrics": {"cost": 5}, "created_at": 1_700_000_001, "expires_at": 1_702_592_001,
            "control_image": format!("http://x/results/{id}/control")
        }))
        .unwrap();
        let finished = Job::from_result(&result, &running.response_url, 3.0);
        assert_eq!(
            finished.outputs,
            vec![format!("http://x/results/{id}/0.jpg")]
        );
        let mut list = stored.jobs.clone();
        assert!(upsert(&mut list, finished));
        let merged = list.iter().find(|j| j.id == id).unwrap();
        assert!(merged.has_result && merged.outputs.len() == 1);
        assert_eq!(list.iter().find(|j| j.id == ID).unwrap().outputs.len(), 2);
    }

    #[test]
    fn an_unchanged_status_is_not_a_new_state() {
        let j = job(ID, 1.0).with_status(&status(JobStatus::Processing, None), 2.0);
        let again = j.with_status(&status(JobStatus::Processing, None), 3.0);
        let mut list = vec![j.clone()];
        assert!(
            !upsert(&mut list, again),
            "polling without news writes nothing"
        );
    }

    #[test]
    fn a_completed_status_still_needs_its_result_but_a_failed_one_does_not() {
        let j = job(ID, 1.0);
        let completed = j.with_status(&status(JobStatus::Completed, None), 2.0);
        assert!(completed.needs_poll());
        let failed = j.with_status(&status(JobStatus::Failed, Some("x")), 2.0);
        assert!(!failed.needs_poll());
        let gone = j.gone(3.0);
        assert_eq!(gone.status, JobStatus::Failed);
        assert!(!gone.needs_poll());
        assert_eq!(j.cancel_url(), format!("http://x/v2/requests/{ID}/cancel"));
    }

    #[test]
    fn downloads_are_named_after_the_prompt_and_seed() {
        assert_eq!(
            download_name(
                "A red door, at dusk!",
                Some(42),
                1,
                "http://x/results/i/1.png"
            ),
            "a-red-door-at-dusk-seed-42-2.png"
        );
        assert_eq!(download_name("", None, 0, "/x"), "parallax-1.jpg");
    }

    #[test]
    fn filters_and_expiry() {
        let mut l = vec![job("a", 2.0), job("b", 1.0)];
        l[1].model = Model::FluxDepthDev;
        l[0].status = JobStatus::Completed;
        assert_eq!(filter(&l, "flux-depth-dev", "").len(), 1);
        assert_eq!(filter(&l, "", "COMPLETED")[0].id, "a");
        l[0].expires_at = Some(100);
        prune_expired(&mut l, 100);
        assert_eq!(l.len(), 1);
        assert_eq!(
            expiry_text(Some(100 + 30 * 86_400), 100).as_deref(),
            Some("kept 30 more days")
        );
        assert_eq!(expiry_text(Some(100), 200).as_deref(), Some("expired"));
        let back: Vec<Job> = serde_json::from_str(&export(&l)).unwrap();
        assert_eq!(back, l);
    }

    #[test]
    fn an_owner_token_survives_newer_states_that_lack_it() {
        let mut mine = Job::submitted(
            "a",
            Model::FluxDepthDev,
            "p",
            "/v2/requests/a",
            Params::default(),
            0.0,
            1.0,
        );
        mine.owner_token = Some("t".into());
        mine.preview_depth = Some("/results/p/0.png".into());
        let mut list = vec![mine.clone()];
        let mut done = mine.clone();
        done.owner_token = None;
        done.preview_depth = None;
        done.status = JobStatus::Completed;
        done.has_result = true;
        done.updated_ms = 5.0;
        assert!(upsert(&mut list, done));
        assert_eq!(list[0].status, JobStatus::Completed);
        assert_eq!(list[0].owner_token.as_deref(), Some("t"));
        assert_eq!(list[0].preview_depth.as_deref(), Some("/results/p/0.png"));
    }

    #[test]
    fn a_control_link_is_over_a_minute_before_its_expiry() {
        let mut j = Job::submitted(
            "a",
            Model::FluxDepthDev,
            "p",
            "/v2/requests/a",
            Params::default(),
            0.0,
            1.0,
        );
        assert!(!j.control_link_over(1e15), "no link");
        j.control_image = Some("https://px.example/results/a/control?exp=1000&sig=x".into());
        assert!(!j.control_link_over(900_000.0));
        assert!(j.control_link_over(940_000.0));
        j.control_image = Some("https://px.example/results/a/control".into());
        assert!(!j.control_link_over(1e15), "no expiry");
    }
}
