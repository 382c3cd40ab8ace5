//! `JobRunner`: one Durable Object per job. It holds the job's live record, submits to
//! the upstream and polls it from alarms (so a job finishes with no client watching),
//! copies every output into R2, and only then says COMPLETED.
//!
//! **Every effect follows from the stored record.** The record (`JobRecord`, one
//! storage value) is the only source of truth. Handlers and the alarm interleave at
//! every network await (the input gate opens), so nothing is written from a copy read
//! before an await: after each one the record is read again and the result applied to
//! it by a pure transition of `job.rs`, which ignores results nobody waits for any more
//! (a cancel landed, the attempt was superseded). Effects that must happen — the
//! refund, an upstream cancel, dropping outputs, the purge — are entries of the
//! record's outbox, decided in the same write as the state that needs them, and tried
//! from the alarm (and inline by the handler that decided them) with backoff until
//! acknowledged. The alarm is always set to the earliest of: the next upstream step,
//! the next outbox retry, the next webhook attempt, the purge.
//!
//! A job given a webhook has its [`Delivery`] stored beside the record (written with it
//! at start); when the job ends (completed or failed, not canceled) the alarm delivers
//! it, retrying with backoff.
//!
//! A job whose provider was asked to call back (`hooks.rs`) is polled only as a
//! backstop; a verified callback (`POST /hook`) makes the alarm poll now.
//!
//! Internal protocol (only the Worker reaches it): `POST /start` with a [`Start`],
//! `GET /state` (`?wait=N&seen=S`: held, see [`parallax_api::wait`]), `POST /cancel`
//! (409 on a finished job), `POST /delete`, `POST /hook` with a `hooks::Wake`.
//!
//! A held `/state` waits in [`Waiters`], woken by every write of the record
//! ([`JobRunner::update`]), raced against a `Delay`. It awaits no storage meanwhile, so
//! the input gate stays open: the alarm and other requests run while reads are held.

use std::cell::RefCell;
use std::collections::HashSet;

use parallax_api::StatusWait;
use worker::{DurableObject, Env, Method, Request, Response, State, durable_object};

use super::protocol::route;
use super::{CancelVerdict, HookVerdict, JobRecord, Start};
use crate::bindings;
use crate::config::Config;
use crate::hooks;
use crate::http;
use crate::meter;
use crate::storage::keys;
use crate::waiters::Waiters;
use crate::webhook::Delivery;

pub(super) const RECORD: &str = "job";
pub(super) const WEBHOOK: &str = "webhook";
/// The upstream callback deliveries taken so far (`hooks::Wake::delivery`), newest
/// last, at most `hooks::SEEN_CAP`.
pub(super) const HOOKS_SEEN: &str = "hooks_seen";
/// Set by `/abandon` on an object that never got its job: a late `/start` refuses.
pub(super) const ABANDONED: &str = "abandoned";

/// What `/start` writes, at the keys [`RECORD`] and [`WEBHOOK`].
#[derive(serde::Serialize)]
pub(super) struct Started<'a> {
    job: &'a JobRecord,
    #[serde(skip_serializing_if = "Option::is_none")]
    webhook: Option<Delivery>,
}
pub(super) const DOWNLOAD_TIMEOUT_MS: u32 = 60_000;
pub(super) const CANCEL_TIMEOUT_MS: u32 = 10_000;
/// How soon the alarm looks again while a cancel is being sent by another handler.
pub(super) const CANCEL_IN_FLIGHT_RECHECK_MS: u64 = 1_000;

#[durable_object(alarm)]
pub struct JobRunner {
    pub(super) state: State,
    pub(super) env: Env,
    /// Upstream cancels being sent now. A handler's `settle` and the alarm's can run
    /// at once; each cancel is sent by one of them at a time (single flight), so a
    /// second send's answer (a 409 "already finished") cannot settle it before the
    /// first's confirmed stop. In memory: after a reset nothing is in flight.
    pub(super) cancels_in_flight: RefCell<HashSet<String>>,
    /// Held status reads, woken by each write of the record.
    pub(super) waiters: Waiters,
    /// An upstream step (submit or poll, with its downloads) is under way in this
    /// object. Storing four outputs can outlast the sweeper's patience under load;
    /// a second alarm must then not poll and store the same outputs at once. In
    /// memory: after a reset nothing is under way. The value is when it began: a step
    /// older than [`STEP_STALE_MS`] is taken as abandoned (its future never ended).
    pub(super) stepping: std::cell::Cell<Option<u64>>,
}

/// Longer than any step can take (a poll, four downloads and four writes, each with
/// its time-out): a step marked under way for this long was abandoned.
pub(super) const STEP_STALE_MS: u64 = 10 * 60 * 1000;

/// Marks a step under way until dropped (on every return path).
pub(super) struct Stepping<'a>(&'a std::cell::Cell<Option<u64>>);

impl<'a> Stepping<'a> {
    /// `None` if a step is already under way (and not stale).
    fn begin(flag: &'a std::cell::Cell<Option<u64>>) -> Option<Self> {
        let now = now_ms();
        match flag.get() {
            Some(began) if now.saturating_sub(began) < STEP_STALE_MS => None,
            _ => {
                flag.set(Some(now));
                Some(Self(flag))
            }
        }
    }

    fn under_way(flag: &std::cell::Cell<Option<u64>>) -> bool {
        flag.get()
            .is_some_and(|began| now_ms().saturating_sub(began) < STEP_STALE_MS)
    }
}

impl Drop for Stepping<'_> {
    fn drop(&mut self) {
        self.0.set(None);
    }
}

impl std::fmt::Debug for JobRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JobRunner")
    }
}

pub(super) fn now_ms() -> u64 {
    worker::Date::now().as_millis()
}

pub(super) fn jitter() -> f64 {
    js_sys::Math::random()
}

impl DurableObject for JobRunner {
    fn new(state: State, env: Env) -> Self {
        meter::init(&env);
        Self {
            state,
            env,
            cancels_in_flight: RefCell::new(HashSet::new()),
            waiters: Waiters::default(),
            stepping: std::cell::Cell::new(None),
        }
    }

    async fn fetch(&self, mut req: Request) -> worker::Result<Response> {
        let _request = meter::DoRequest::start();
        let storage = self.state.storage();
        match (req.method(), req.path().as_str()) {
            (Method::Post, route::START) => {
                // The body first: from the check to the write only storage is awaited
                // (the input gate stays closed), so no `/abandon` can run in between.
                let start: Start = req.json().await?;
                if self.load().await?.is_some() {
                    return Ok(http::json(&"already started", 409));
                }
                meter::count(meter::Op::RowsRead, 1);
                if storage.get::<bool>(ABANDONED).await?.is_some() {
                    return Ok(http::json(&"abandoned by its submit", 410));
                }
                // The record and its webhook in one write (a struct: its fields become
                // the storage keys `job` and `webhook`).
                meter::count(meter::Op::RowsWritten, 2);
                storage
                    .put_multiple(Started {
                        job: &start.job,
                        webhook: start.webhook.map(Delivery::new),
                    })
                    .await?;
                storage.set_alarm(0).await?;
                Ok(http::json(&start.job, 201))
            }
            // The submit lost `/start`'s answer and gives the job up unless it exists:
            // without a record a tombstone makes a late `/start` refuse, so "not found"
            // here is final and the submit may refund.
            (Method::Post, route::ABANDON) => match self.load().await? {
                Some(job) => Ok(http::json(&job, 200)),
                None => {
                    meter::count(meter::Op::RowsWritten, 1);
                    storage.put(ABANDONED, &true).await?;
                    Ok(http::json(&"no such job", 404))
                }
            },
            (method, path) => {
                let Some(job) = self.load().await? else {
                    return Ok(http::json(&"no such job", 404));
                };
                let now = now_ms();
                if job.deleted || job.is_expired(now) {
                    if job.is_expired(now) && job.outbox.purge.is_none() {
                        self.update(|j| j.expire(now)).await?;
                        storage.set_alarm(0).await?;
                    } else if job.is_stuck(now) && !Stepping::under_way(&self.stepping) {
                        // A refund or cancel still owed by a gone job whose alarm chain
                        // broke: any read of it re-arms the alarm, as `/state` does.
                        worker::console_warn!("job {}: stuck after its end; re-arming", job.id);
                        storage.set_alarm(0).await?;
                    }
                    return Ok(http::json(&"expired or deleted", 404));
                }
                match (method, path) {
                    (Method::Get, route::STATE) => {
                        // The sweeper: a read of a job whose alarm chain broke re-arms it.
                        if job.is_stuck(now) && !Stepping::under_way(&self.stepping) {
                            worker::console_warn!("job {}: stuck; re-arming its alarm", job.id);
                            storage.set_alarm(0).await?;
                        }
                        match held(&req) {
                            // Beyond the job's cap (`holds.rs`): answered at once, as it
                            // is. Its waiters are the exact count: every hold of this job
                            // waits here.
                            Some(wait)
                                if self.waiters.len() >= crate::holds::PER_JOB
                                    && !wait.answers(job.status, job.status) =>
                            {
                                let mut resp = http::json(&job, 200);
                                resp.headers_mut()
                                    .set(crate::holds::NOT_HELD_HEADER, "no")?;
                                Ok(resp)
                            }
                            Some(wait) => match self.hold(job, wait).await? {
                                Some(job) => Ok(http::json(&job, 200)),
                                None => Ok(http::json(&"expired or deleted", 404)),
                            },
                            None => Ok(http::json(&job, 200)),
                        }
                    }
                    (Method::Post, route::CANCEL) => {
                        let verdict = self.update(|j| j.cancel(now_ms())).await?;
                        if verdict == Some(CancelVerdict::AlreadyFinished) {
                            return Ok(http::json(&job, 409));
                        }
                        self.settle().await?;
                        match self.load().await? {
                            Some(job) => Ok(http::json(&job, 200)),
                            None => Ok(http::json(&"no such job", 404)),
                        }
                    }
                    (Method::Post, route::DELETE) => {
                        // The answer tells what the delete decided (a running job's
                        // cancel and refund), as far as it is known once settled.
                        let decided = self
                            .update(|j| {
                                j.delete(now_ms());
                                j.clone()
                            })
                            .await?;
                        // The photo goes at once: a signed link (the owner's or a
                        // provider's) must not serve it once the delete has answered,
                        // while the purge waits for what is still owed. The purge
                        // deletes it again (a failure here is retried there).
                        let photo = async {
                            self.env
                                .bucket(bindings::MEDIA)?
                                .delete(keys::input(&job.id))
                                .await
                        };
                        if let Err(e) = photo.await {
                            worker::console_warn!(
                                "job {}: deleting its control image failed (the purge retries): {e}",
                                job.id
                            );
                        }
                        self.settle().await?;
                        let latest = self.load().await?.or(decided).unwrap_or(job);
                        Ok(http::json(&latest, 200))
                    }
                    (Method::Post, route::HOOK) => self.hook(req).await,
                    // The owner's choice of what the share page shows (the Worker
                    // checked ownership).
                    (Method::Post, route::SHARE) => {
                        let choice: parallax_api::ShareControl = req.json().await?;
                        match self.update(|j| j.share_control = choice).await? {
                            Some(()) => Ok(http::json(&choice, 200)),
                            None => Ok(http::json(&"no such job", 404)),
                        }
                    }
                    _ => Ok(http::json(&"unknown runner route", 404)),
                }
            }
        }
    }

    async fn alarm(&self) -> worker::Result<Response> {
        let _request = meter::DoRequest::start();
        let Some(job) = self.load().await? else {
            return Response::ok("no job");
        };
        let now = now_ms();
        if job.is_expired(now) && job.outbox.purge.is_none() {
            self.update(|j| j.expire(now)).await?;
        }
        // Past the deadline a step is due whatever its backoff said: it polls once
        // more, then times the job out (else the alarm, clamped to the deadline, would
        // fire again and again until the backoff ends).
        if !job.status.is_terminal()
            && (job.next_step_ms.is_none_or(|t| t <= now) || now >= job.deadline_ms)
        {
            // One step at a time: the one under way schedules what comes next.
            if let Some(_stepping) = Stepping::begin(&self.stepping) {
                self.step().await?;
            }
        } else if job.lost_submit_due(now) {
            // Not beside a submit that may still be out (its answer decides).
            if let Some(_stepping) = Stepping::begin(&self.stepping) {
                self.resolve_lost_submit().await?;
            }
        }
        // The owner's Ledger first: whoever the webhook tells (or a v1 caller, who reads
        // the balance once the job is settled) then sees the refund in the balance.
        self.settle().await?;
        self.deliver_webhook().await?;
        self.schedule().await?;
        Response::ok("done")
    }
}

/// The `wait` of a held `GET /state` (the Worker validated it; anything else is a
/// plain read).
pub(super) fn held(req: &Request) -> Option<StatusWait> {
    StatusWait::from_pairs(req.url().ok()?.query_pairs())
        .ok()
        .flatten()
}

impl JobRunner {
    pub(super) fn config(&self) -> Config {
        Config::from_env(&self.env)
    }

    pub(super) async fn load(&self) -> worker::Result<Option<JobRecord>> {
        meter::count(meter::Op::RowsRead, 1);
        self.state.storage().get::<JobRecord>(RECORD).await
    }

    /// Reads the record, applies `f` and writes it back, with no network await in
    /// between (storage operations keep the input gate closed). `None`: no record.
    pub(super) async fn update<R>(
        &self,
        f: impl FnOnce(&mut JobRecord) -> R,
    ) -> worker::Result<Option<R>> {
        let Some(mut job) = self.load().await? else {
            return Ok(None);
        };
        let out = f(&mut job);
        meter::count(meter::Op::RowsWritten, 1);
        self.state.storage().put(RECORD, &job).await?;
        self.waiters.notify();
        Ok(Some(out))
    }

    /// Holds a status read until `wait` is answered (the status moved past the one
    /// seen, or the job finished) or its time is up; then the record as it is now, or
    /// `None` once it is deleted or expired.
    pub(super) async fn hold(
        &self,
        mut job: JobRecord,
        wait: StatusWait,
    ) -> worker::Result<Option<JobRecord>> {
        let at_arrival = job.status;
        let until = now_ms() + u64::from(wait.secs) * 1000;
        loop {
            if wait.answers(job.status, at_arrival) {
                return Ok(Some(job));
            }
            let left = until.saturating_sub(now_ms());
            let woken = left > 0
                && self
                    .waiters
                    .next(worker::Delay::from(std::time::Duration::from_millis(left)))
                    .await;
            // Woken or timed out, the record as it is now (a write may race the timer).
            match self.load().await? {
                Some(j) if !j.deleted && !j.is_expired(now_ms()) => job = j,
                _ => return Ok(None),
            }
            if !woken {
                return Ok(Some(job));
            }
        }
    }

    /// `POST /hook`: a callback the Worker verified. A delivery taken before changes
    /// nothing, whatever the job's state, and is acknowledged (200, `why: replayed`): it
    /// cannot be told from the provider's own retry of a delivery whose answer it did
    /// not get (the same `webhook-id`), and a provider retries anything but a 2xx (and
    /// may disable an endpoint that keeps failing). A finished job or another upstream
    /// job is left as it is (200); otherwise the job is polled now, by the alarm (202): the alarm survives
    /// an eviction, is retried by the platform if it fails, and never runs beside
    /// another step, so the confirming poll is one poll.
    pub(super) async fn hook(&self, mut req: Request) -> worker::Result<Response> {
        let wake: hooks::Wake = req.json().await?;
        let storage = self.state.storage();
        // The body read let other requests in (a delete may have purged the record
        // since the dispatch read it): read it again before anything is written.
        let gone = || Ok(http::json(&"expired or deleted", 404));
        let Some(job) = self.load().await? else {
            return gone();
        };
        if job.deleted || job.is_expired(now_ms()) {
            return gone();
        }
        // From here to the writes only storage is awaited: no second delivery of the
        // same key can slip in between.
        meter::count(meter::Op::RowsRead, 1);
        let mut seen: Vec<String> = storage.get(HOOKS_SEEN).await?.unwrap_or_default();
        if seen.contains(&wake.delivery) {
            return Ok(http::json(
                &serde_json::json!({"taken": false, "why": "replayed"}),
                200,
            ));
        }
        if job.status.is_terminal() {
            return Ok(http::json(
                &serde_json::json!({"taken": false, "why": "finished"}),
                200,
            ));
        }
        seen.push(wake.delivery.clone());
        let over = seen.len().saturating_sub(hooks::SEEN_CAP);
        seen.drain(..over);
        meter::count(meter::Op::RowsWritten, 1);
        storage.put(HOOKS_SEEN, &seen).await?;
        let verdict = self
            .update(|j| j.take_hook(&wake.provider, wake.upstream_id.as_deref(), now_ms()))
            .await?;
        let (status, why) = match verdict {
            Some(HookVerdict::Poll) => {
                storage.set_alarm(0).await?;
                (202, "polling")
            }
            Some(HookVerdict::Noted) => match self.adopt(&wake).await? {
                true => (202, "submit confirmed by the callback"),
                false => (202, "submit pending"),
            },
            Some(HookVerdict::Finished) => (200, "finished"),
            Some(HookVerdict::Ignored) => (200, "another upstream job"),
            None => return Ok(http::json(&"no such job", 404)),
        };
        Ok(http::json(
            &serde_json::json!({"taken": status == 202, "why": why}),
            status,
        ))
    }

    /// A verified callback naming the upstream job of a submit whose answer was lost
    /// (`Attempt::ambiguous`): the provider did accept it, so the job follows that
    /// upstream job (at the provider's documented URLs) instead of waiting for its
    /// deadline. Whether it was adopted.
    pub(super) async fn adopt(&self, wake: &hooks::Wake) -> worker::Result<bool> {
        let Some(job) = self.load().await? else {
            return Ok(false);
        };
        let (Some(attempt), Some(upstream_id)) = (job.submitting.clone(), &wake.upstream_id) else {
            return Ok(false);
        };
        if !attempt.ambiguous || attempt.provider != wake.provider || job.status.is_terminal() {
            return Ok(false);
        }
        let cfg = self.config();
        let Ok(p) = super::steps::provider(&cfg, &attempt.provider) else {
            return Ok(false);
        };
        let Some((status_url, result_url, cancel_url)) =
            p.kind.documented_urls(job.model, &p.base_url, upstream_id)
        else {
            return Ok(false);
        };
        let sub = crate::providers::Submitted {
            upstream_id: upstream_id.clone(),
            status_url,
            result_url,
            cancel_url,
            backstop_ms: cfg.hooks.as_ref().map(|h| h.backstop_ms),
        };
        worker::console_log!(
            "job {}: a callback names {upstream_id} at {}: its lost submit was accepted",
            job.id,
            attempt.provider
        );
        self.submitted(&attempt, Ok(sub), job.hooks, Vec::new())
            .await?;
        Ok(true)
    }

    /// Sets the alarm to the earliest thing due (record, outbox, webhook).
    pub(super) async fn schedule(&self) -> worker::Result<()> {
        let storage = self.state.storage();
        let Some(job) = self.load().await? else {
            return Ok(());
        };
        let mut at = job.next_due_ms();
        if job.status.is_terminal()
            && !job.deleted
            && let Some(d) = {
                meter::count(meter::Op::RowsRead, 1);
                storage.get::<Delivery>(WEBHOOK).await?
            }
            && !d.done
        {
            at = Some(at.map_or(d.next_ms, |a| a.min(d.next_ms)));
        }
        // A cancel another handler is sending is still "due" in the record; without a
        // floor the alarm would re-arm at once, again and again, until that send ends
        // (up to CANCEL_TIMEOUT_MS). The sender schedules again when it is done.
        // Likewise a step under way (its own schedule comes when it ends).
        if !self.cancels_in_flight.borrow().is_empty() || Stepping::under_way(&self.stepping) {
            at = at.map(|a| a.max(now_ms() + CANCEL_IN_FLIGHT_RECHECK_MS));
        }
        match at {
            Some(at) => {
                let offset = i64::try_from(at.saturating_sub(now_ms())).unwrap_or(i64::MAX);
                storage.set_alarm(offset).await
            }
            None => storage.delete_alarm().await,
        }
    }
}
