//! The job store at run time: the single source of truth for the studio and History.
//!
//! - Persisted in localStorage (`logic::store::Stored`, versioned), read-merge-written
//!   on every change, so a write never drops what another tab stored meanwhile.
//! - Shared across tabs: the `storage` event brings another tab's writes, merged by
//!   job id, newest state winning.
//! - Restored on load, every running job resumed by the one polling scheduler, which
//!   reads due jobs on the policy in `logic::poll` (shared backoff, `Retry-After`),
//!   sleeps while the tab is hidden, and wakes on `online`, `visibilitychange` and
//!   `pageshow`. Running jobs are read *held* (the server answers when the status
//!   changes), a few at a time, each held read a task of its own so the loop goes on;
//!   the rest are polled.

use std::collections::HashMap;

use leptos::ev;
use leptos::prelude::*;
use leptos::task::spawn_local;
use parallax_api::{ErrorCode, JobStatus, Model, StatusWait};

use crate::client::{self, ClientError};
use crate::logic::poll::{self, Backoff, LastRead, Read};
use crate::logic::store::{Job, LEGACY_KEY, STORAGE_KEY, Stored};
use crate::session;

/// A submit still waiting for the server's answer (only in this tab's memory: until
/// the server answers there is no job to poll).
#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    pub key: u64,
    pub model: Model,
    pub prompt: String,
    pub started_ms: f64,
    pub error: Option<String>,
}

/// What a click on Cancel came to.
#[derive(Debug, Clone, PartialEq)]
pub enum Canceled {
    /// Canceled; this many credits came back.
    Refunded(u64),
    /// Canceled; up to this many credits may still come back (the provider is asked
    /// whether the job ran).
    RefundPending(u64),
    /// It had already finished: the result is kept and now shown.
    AlreadyFinished,
}

#[derive(Debug, Clone, Copy)]
pub struct JobStore {
    pub state: RwSignal<Stored>,
    /// Reads are failing (offline, 5xx, 429): cards say "Connection lost — retrying".
    pub lost: RwSignal<bool>,
    pub pending: RwSignal<Vec<Pending>>,
    backoff: StoredValue<Backoff>,
    /// When each job was last read (browser clock, ms), and how that went.
    last_read: StoredValue<HashMap<String, LastRead>>,
    /// Jobs with a held read out now (at most `poll::MAX_HELD`).
    held: StoredValue<Vec<String>>,
    /// Until when the server's `Retry-After` holds, even across wake-ups.
    retry_until: StoredValue<f64>,
}

pub fn now_ms() -> f64 {
    js_sys::Date::now()
}

fn storage() -> Option<web_sys::Storage> {
    web_sys::window()?.local_storage().ok().flatten()
}

/// What storage holds now (this version, or version 1 migrated; an unreadable copy
/// reads as empty).
fn load() -> Stored {
    let Some(s) = storage() else {
        return Stored::new();
    };
    match s.get_item(STORAGE_KEY).ok().flatten() {
        Some(text) => Stored::decode(&text),
        None => s
            .get_item(LEGACY_KEY)
            .ok()
            .flatten()
            .map_or_else(Stored::new, |t| Stored::from_legacy(&t)),
    }
}

fn hidden() -> bool {
    document().hidden()
}

pub fn use_store() -> JobStore {
    expect_context::<JobStore>()
}

/// Creates the store from storage, starts the scheduler and the listeners.
pub fn provide() -> JobStore {
    let store = JobStore {
        state: RwSignal::new(load()),
        lost: RwSignal::new(false),
        pending: RwSignal::new(Vec::new()),
        backoff: StoredValue::new(Backoff::default()),
        last_read: StoredValue::new(HashMap::new()),
        held: StoredValue::new(Vec::new()),
        retry_until: StoredValue::new(0.0),
    };
    store.persist();
    // Another tab wrote: merge its copy (never overwrite ours).
    let on_storage = window_event_listener(ev::storage, move |e: web_sys::StorageEvent| {
        if e.key().as_deref() == Some(STORAGE_KEY) {
            let other = Stored::decode(&e.new_value().unwrap_or_default());
            store.state.maybe_update(|s| s.merge(&other));
            client::wake_all();
        }
    });
    let wake = move || store.wake();
    let on_online = window_event_listener(ev::online, move |_| wake());
    let on_visible = window_event_listener(ev::visibilitychange, move |_| wake());
    // Back from the back-forward cache: storage events were missed while frozen.
    let on_show = window_event_listener(ev::pageshow, move |e: web_sys::PageTransitionEvent| {
        if e.persisted() {
            store.persist();
        }
        wake();
    });
    on_cleanup(move || {
        on_storage.remove();
        on_online.remove();
        on_visible.remove();
        on_show.remove();
    });
    provide_context(store);
    spawn_local(scheduler(store));
    store
}

impl JobStore {
    /// Adds or updates a job, here and in storage (so in every tab).
    pub fn put(&self, job: Job) {
        let mut changed = false;
        self.state.maybe_update(|s| {
            changed = s.put(job);
            changed
        });
        if changed {
            self.persist();
        }
    }

    /// Forgets a job here and in every tab.
    pub fn remove(&self, id: &str) {
        self.state.update(|s| {
            s.remove(id);
        });
        self.persist();
    }

    pub fn get(&self, id: &str) -> Option<Job> {
        self.state.with_untracked(|s| s.get(id).cloned())
    }

    /// Reads storage, merges ours in, writes it back, and takes in what other tabs
    /// added. The read-merge-write is synchronous: no other write comes between its
    /// read and its write.
    fn persist(&self) {
        let mut on_disk = load();
        self.state.with_untracked(|s| on_disk.merge(s));
        // Storage may refuse (full, or blocked): the jobs then stay in this tab's
        // memory (and on the server for their retention); the console says so.
        let written = storage().map(|st| st.set_item(STORAGE_KEY, &on_disk.encode()));
        if !matches!(written, Some(Ok(()))) {
            web_sys::console::warn_1(
                &"Parallax: this browser's storage refused the job list; it is kept in this tab"
                    .into(),
            );
        }
        self.state.maybe_update(|s| s.merge(&on_disk));
    }

    /// A just-submitted job: stored, and read at once (held, it answers when the
    /// job moves on).
    pub fn submitted(&self, job: Job) {
        self.put(job);
        client::wake_all();
    }

    /// The network or the tab is back: read at once.
    pub fn wake(&self) {
        let until = self.retry_until.get_value();
        self.backoff.update_value(|b| b.wake(now_ms(), until));
        client::wake_all();
    }

    fn next_read(&self, job: &Job, backoff: &Backoff) -> f64 {
        let last = self.last_read.with_value(|m| m.get(&job.id).copied());
        poll::due_ms(last, now_ms() - job.created_ms, backoff)
    }

    fn is_held(&self, id: &str) -> bool {
        self.held.with_value(|h| h.iter().any(|i| i == id))
    }

    /// Reads one job once: its status, and its result when it has ended.
    async fn read(&self, job: Job) {
        self.read_status(job, false).await;
    }

    /// Reads one running job held, in a task of its own: the server answers when its
    /// status changes (or after [`poll::WAIT_SECS`]); then the scheduler plans again.
    fn hold(&self, job: Job) {
        let store = *self;
        self.held.update_value(|h| h.push(job.id.clone()));
        spawn_local(async move {
            let id = job.id.clone();
            store.read_status(job, true).await;
            // The store may be gone with its page (a disposed value is not an error).
            let _ = store.held.try_update_value(|h| h.retain(|i| *i != id));
            client::wake_all();
        });
    }

    /// One read of `job` (held or not): its status, and its result once it ended.
    async fn read_status(&self, job: Job, held: bool) {
        let started = now_ms();
        self.last_read.update_value(|m| {
            m.insert(
                job.id.clone(),
                LastRead {
                    started_ms: started,
                    moved_on: false,
                },
            );
        });
        let outcome = if job.status.is_terminal() {
            self.fetch_result(&job).await
        } else {
            let answer = if held {
                let wait = StatusWait {
                    secs: poll::WAIT_SECS,
                    seen: Some(parallax_api::wait::Seen::one(job.status)),
                };
                client::status_held(&job.status_url(), &wait).await
            } else {
                client::status(&job.status_url()).await
            };
            match answer {
                Ok(s) => {
                    // The job as stored now (a hold is long: another tab, a cancel).
                    let current = self.get(&job.id).unwrap_or_else(|| job.clone());
                    if held && s.status != job.status {
                        self.last_read.update_value(|m| {
                            m.insert(
                                job.id.clone(),
                                LastRead {
                                    started_ms: started,
                                    moved_on: true,
                                },
                            );
                        });
                    }
                    let next = current.with_status(&s, now_ms());
                    let ended = s.status.is_terminal() && next.needs_poll();
                    self.put(next.clone());
                    if ended {
                        self.fetch_result(&next).await
                    } else {
                        Ok(())
                    }
                }
                Err(e) => Err(e),
            }
        };
        self.settle(&job, outcome);
    }

    /// Applies a read's outcome to the shared backoff (and a 404 to the job).
    fn settle(&self, job: &Job, outcome: Result<(), ClientError>) {
        let now = now_ms();
        match outcome.map_err(|e| (e.read(), e)) {
            Ok(()) => self.answered(),
            Err((Read::Gone, _)) => {
                if let Some(current) = self.get(&job.id) {
                    self.put(current.gone(now));
                }
                self.answered();
            }
            Err((Read::Transient { retry_after_ms }, _)) => {
                if let Some(ra) = retry_after_ms {
                    self.retry_until.update_value(|u| *u = u.max(now + ra));
                }
                self.backoff.update_value(|b| b.failed(now, retry_after_ms));
                self.lost.set(self.backoff.get_value().lost());
            }
            // A 2xx we could not read: keep trying, slowly.
            Err((Read::Answer, _)) => {
                self.backoff.update_value(|b| b.failed(now, None));
                self.lost.set(true);
            }
        }
    }

    fn answered(&self) {
        self.backoff.update_value(Backoff::succeeded);
        if self.lost.get_untracked() {
            self.lost.set(false);
        }
    }

    async fn fetch_result(&self, job: &Job) -> Result<(), ClientError> {
        let r = client::result(&job.response_url, job.owner_token.as_deref()).await?;
        let now = now_ms();
        let mut next = Job::from_result(&r, &job.response_url, now);
        next.expected_secs = job.expected_secs;
        next.owner_token = job.owner_token.clone();
        next.preview_depth = job.preview_depth.clone();
        if let Some(current) = self.get(&job.id) {
            next.finished_ms = current.finished_ms.or(next.finished_ms);
        }
        // A job submitted here teaches this device's ETA.
        if r.status == JobStatus::Completed && job.expected_secs.is_some() && !job.has_result {
            session::record_duration(r.model, (now - job.created_ms) / 1000.0);
        }
        self.put(next);
        Ok(())
    }

    /// Re-reads a job now (Cancel does this first; a 409 does it after).
    pub async fn refresh(&self, id: &str) {
        if let Some(job) = self.get(id)
            && job.needs_poll()
        {
            self.read(job).await;
        }
    }

    /// Sets what the job's share page shows beside the result; the job keeps the
    /// server's answer.
    pub async fn set_share_control(
        &self,
        id: &str,
        choice: parallax_api::ShareControl,
    ) -> Result<(), String> {
        let Some(job) = self.get(id) else {
            return Err("This job is no longer in this browser.".into());
        };
        match client::share(&job.share_url(), choice, job.owner_token.as_deref()).await {
            Ok(answer) => {
                if let Some(mut job) = self.get(id) {
                    job.share_control = answer.share_control;
                    self.put(job);
                }
                Ok(())
            }
            Err(e) => Err(format!("Could not change the share page: {}", e.message())),
        }
    }

    /// Cancels a running job: refreshes it first (it may have finished meanwhile, and
    /// then nothing is sent), then `POST …/cancel`. A 409 means it finished first: the
    /// result is kept and read.
    pub async fn cancel(&self, id: &str) -> Result<Canceled, String> {
        self.refresh(id).await;
        let Some(job) = self.get(id) else {
            return Err("This job is no longer in this browser.".into());
        };
        if job.status.is_terminal() {
            return Ok(Canceled::AlreadyFinished);
        }
        match client::cancel(&job.cancel_url(), job.owner_token.as_deref()).await {
            Ok(s) => {
                let next = job.with_status(&s, now_ms());
                let refunded = next.metrics.credits.map_or(0, |c| c.refunded);
                let pending = next.refund_pending();
                let ended = next.status.is_terminal();
                self.put(next);
                if ended {
                    // The outputs/error as the result has them.
                    self.refresh(id).await;
                    Ok(if refunded == 0 && pending > 0 {
                        Canceled::RefundPending(pending)
                    } else {
                        Canceled::Refunded(refunded)
                    })
                } else {
                    Err("The server did not cancel this job.".into())
                }
            }
            Err(e) if e.status() == 409 || e.code() == Some(ErrorCode::Conflict) => {
                self.refresh(id).await;
                Ok(Canceled::AlreadyFinished)
            }
            Err(e) => {
                self.refresh(id).await;
                match e.status() {
                    404 | 405 if self.get(id).is_some_and(|j| !j.status.is_terminal()) => {
                        Err("This server cannot cancel jobs.".into())
                    }
                    _ => Err(format!("Could not cancel: {}", e.message())),
                }
            }
        }
    }
}

/// The one polling loop for every job in the store.
async fn scheduler(store: JobStore) {
    loop {
        if hidden() {
            // Woken by `visibilitychange`.
            client::sleep(60_000).await;
            continue;
        }
        let now = now_ms();
        let backoff = store.backoff.get_value();
        if !backoff.ready(now) {
            client::sleep(((backoff.not_before_ms - now) as i32).max(50)).await;
            continue;
        }
        let Some(running) = store.state.try_with_untracked(|s| {
            s.jobs
                .iter()
                // An ended job whose control image link is over: its result again,
                // for a fresh link.
                .filter(|j| j.needs_poll() || j.control_link_over(now))
                .cloned()
                .collect::<Vec<_>>()
        }) else {
            return;
        };
        // Newest first: the job on screen gets a held read before older ones.
        for job in running {
            if store.is_held(&job.id) || store.next_read(&job, &backoff) > now {
                continue;
            }
            let held_now = store.held.with_value(Vec::len);
            if !job.status.is_terminal() && poll::may_hold(held_now, &store.backoff.get_value()) {
                store.hold(job);
                continue;
            }
            store.read(job).await;
            if !store.backoff.get_value().ready(now_ms()) {
                break;
            }
        }
        // Woken early when a held read ends.
        let backoff = store.backoff.get_value();
        let next_due = store.state.with_untracked(|s| {
            s.jobs
                .iter()
                .filter(|j| (j.needs_poll() || j.control_link_over(now)) && !store.is_held(&j.id))
                .map(|j| store.next_read(j, &backoff))
                .fold(now_ms() + 60_000.0, f64::min)
        });
        let wait = (next_due - now_ms()).clamp(50.0, 60_000.0);
        client::sleep(wait as i32).await;
    }
}
