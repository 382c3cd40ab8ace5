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

use crate::accounts;
use crate::breaker;
use crate::compat;
use crate::config::{Config, bindings};
use crate::finish_times;
use crate::hooks;
use crate::http;
use crate::input::image::{ImageFormat, is_complete};
use crate::job::{
    Attempt, CancelVerdict, FailoverStep, HookVerdict, JobRecord, PollBudget, Start, StoredOutput,
};
use crate::meter;
use crate::providers::{self, ControlImage, Kind, Lookup, Submitted, UpstreamError, UpstreamState};
use crate::storage::{self, keys};
use crate::waiters::Waiters;
use crate::webhook::{self, Delivery};

const RECORD: &str = "job";
const WEBHOOK: &str = "webhook";
/// The upstream callback deliveries taken so far (`hooks::Wake::delivery`), newest
/// last, at most `hooks::SEEN_CAP`.
const HOOKS_SEEN: &str = "hooks_seen";
/// Set by `/abandon` on an object that never got its job: a late `/start` refuses.
const ABANDONED: &str = "abandoned";

/// What `/start` writes, at the keys [`RECORD`] and [`WEBHOOK`].
#[derive(serde::Serialize)]
struct Started<'a> {
    job: &'a JobRecord,
    #[serde(skip_serializing_if = "Option::is_none")]
    webhook: Option<Delivery>,
}
const DOWNLOAD_TIMEOUT_MS: u32 = 60_000;
const CANCEL_TIMEOUT_MS: u32 = 10_000;
/// How soon the alarm looks again while a cancel is being sent by another handler.
const CANCEL_IN_FLIGHT_RECHECK_MS: u64 = 1_000;

#[durable_object(alarm)]
pub struct JobRunner {
    state: State,
    env: Env,
    /// Upstream cancels being sent now. A handler's `settle` and the alarm's can run
    /// at once; each cancel is sent by one of them at a time (single flight), so a
    /// second send's answer (a 409 "already finished") cannot settle it before the
    /// first's confirmed stop. In memory: after a reset nothing is in flight.
    cancels_in_flight: RefCell<HashSet<String>>,
    /// Held status reads, woken by each write of the record.
    waiters: Waiters,
    /// An upstream step (submit or poll, with its downloads) is under way in this
    /// object. Storing four outputs can outlast the sweeper's patience under load;
    /// a second alarm must then not poll and store the same outputs at once. In
    /// memory: after a reset nothing is under way. The value is when it began: a step
    /// older than [`STEP_STALE_MS`] is taken as abandoned (its future never ended).
    stepping: std::cell::Cell<Option<u64>>,
}

/// Longer than any step can take (a poll, four downloads and four writes, each with
/// its time-out): a step marked under way for this long was abandoned.
const STEP_STALE_MS: u64 = 10 * 60 * 1000;

/// Marks a step under way until dropped (on every return path).
struct Stepping<'a>(&'a std::cell::Cell<Option<u64>>);

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

fn now_ms() -> u64 {
    worker::Date::now().as_millis()
}

fn jitter() -> f64 {
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
            (Method::Post, "/start") => {
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
            (Method::Post, "/abandon") => match self.load().await? {
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
                    (Method::Get, "/state") => {
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
                    (Method::Post, "/cancel") => {
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
                    (Method::Post, "/delete") => {
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
                    (Method::Post, "/hook") => self.hook(req).await,
                    // The owner's choice of what the share page shows (the Worker
                    // checked ownership).
                    (Method::Post, "/share") => {
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
fn held(req: &Request) -> Option<StatusWait> {
    StatusWait::from_pairs(req.url().ok()?.query_pairs())
        .ok()
        .flatten()
}

/// The configured provider named `name`.
fn provider(cfg: &Config, name: &str) -> Result<crate::config::Provider, UpstreamError> {
    Kind::from_name(name)
        .and_then(|k| cfg.provider(k).cloned())
        .ok_or_else(|| UpstreamError::Permanent(format!("provider {name} is no longer configured")))
}

fn timeout_ms(cfg: &Config) -> u32 {
    u32::try_from(cfg.upstream_timeout_secs * 1000).unwrap_or(u32::MAX)
}

fn transient(reason: impl Into<String>) -> UpstreamError {
    UpstreamError::Transient {
        reason: reason.into(),
        retry_after: None,
    }
}

impl JobRunner {
    fn config(&self) -> Config {
        Config::from_env(&self.env)
    }

    async fn load(&self) -> worker::Result<Option<JobRecord>> {
        meter::count(meter::Op::RowsRead, 1);
        self.state.storage().get::<JobRecord>(RECORD).await
    }

    /// Reads the record, applies `f` and writes it back, with no network await in
    /// between (storage operations keep the input gate closed). `None`: no record.
    async fn update<R>(&self, f: impl FnOnce(&mut JobRecord) -> R) -> worker::Result<Option<R>> {
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
    async fn hold(
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

    /// Works off every outbox entry that is due, purges if the record allows it, and
    /// sets the alarm for what is due next. Safe to run from a handler and the alarm
    /// at once: every effect is idempotent and acknowledged on the current record.
    async fn settle(&self) -> worker::Result<()> {
        // An acknowledged cancel can decide a refund that is due at once: go round
        // again (bounded).
        for _ in 0..3 {
            let Some(job) = self.load().await? else {
                return Ok(());
            };
            let now = now_ms();
            if job.purge_ready(now) {
                return self.purge(&job).await;
            }
            let mut acted = false;
            if job.outbox.refund.is_some_and(|r| r.is_due(now)) {
                self.refund(&job).await?;
                acted = true;
            }
            for order in job.outbox.cancels.iter().filter(|c| c.retry.is_due(now)) {
                let id = order.sub.upstream_id.clone();
                if !self.cancels_in_flight.borrow_mut().insert(id.clone()) {
                    // The other settle is sending it; its answer settles it.
                    continue;
                }
                let outcome = match provider(&self.config(), &order.provider) {
                    Ok(p) => providers::cancel(&p, &order.sub, CANCEL_TIMEOUT_MS).await,
                    Err(_) => Ok(providers::CancelOutcome::Unsupported),
                };
                self.cancels_in_flight.borrow_mut().remove(&id);
                match &outcome {
                    Ok(o) => worker::console_log!(
                        "job {}: upstream cancel at {}: {o:?}",
                        job.id,
                        order.provider
                    ),
                    Err(e) => worker::console_warn!(
                        "job {}: upstream cancel at {} failed: {e:?}",
                        job.id,
                        order.provider
                    ),
                }
                self.update(|j| j.cancel_outcome(&id, outcome, now_ms(), jitter()))
                    .await?;
                acted = true;
            }
            if job.outbox.drop_outputs.is_some_and(|r| r.is_due(now)) {
                let dropped = self.drop_outputs(&job.id).await;
                if let Err(e) = &dropped {
                    worker::console_warn!("job {}: dropping outputs failed: {e}", job.id);
                }
                self.update(|j| match (&dropped, j.outbox.drop_outputs.as_mut()) {
                    (Ok(()), _) => j.outbox.drop_outputs = None,
                    (Err(_), Some(r)) => r.failed(now_ms(), jitter()),
                    (Err(_), None) => {}
                })
                .await?;
                acted = true;
            }
            if !acted {
                break;
            }
        }
        self.schedule().await
    }

    /// Settles the job with its owner's Ledger: the decided refund (0 included) and
    /// why it ended (idempotent per job in the Ledger).
    async fn refund(&self, job: &JobRecord) -> worker::Result<()> {
        let credits = job.refund.unwrap_or(0);
        let done = accounts::settle_owner(
            &self.env,
            &job.ownership.owner,
            job.id.as_str(),
            credits,
            job.settlement(),
        )
        .await;
        if let Err(e) = &done {
            worker::console_warn!("job {}: refund of {credits} not acknowledged: {e}", job.id);
        }
        self.update(|j| match (&done, j.outbox.refund.as_mut()) {
            // Acknowledged for what it sent: a refund raised meanwhile (a confirmed
            // stop after a "requested" answer) is still owed, and sent next.
            (Ok(()), Some(_)) if j.refund == Some(credits) => j.outbox.refund = None,
            (Ok(()), _) => {}
            (Err(_), Some(r)) => r.failed(now_ms(), jitter()),
            (Err(_), None) => {}
        })
        .await?;
        Ok(())
    }

    /// `POST /hook`: a callback the Worker verified. A delivery taken before changes
    /// nothing, whatever the job's state, and is acknowledged (200, `why: replayed`): it
    /// cannot be told from the provider's own retry of a delivery whose answer it did
    /// not get (the same `webhook-id`), and a provider retries anything but a 2xx (and
    /// may disable an endpoint that keeps failing). A finished job or another upstream
    /// job is left as it is (200); otherwise the job is polled now, by the alarm (202): the alarm survives
    /// an eviction, is retried by the platform if it fails, and never runs beside
    /// another step, so the confirming poll is one poll.
    async fn hook(&self, mut req: Request) -> worker::Result<Response> {
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
        seen.push(wake.delivery);
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
            Some(HookVerdict::Noted) => (202, "submit pending"),
            Some(HookVerdict::Finished) => (200, "finished"),
            Some(HookVerdict::Ignored) => (200, "another upstream job"),
            None => return Ok(http::json(&"no such job", 404)),
        };
        Ok(http::json(
            &serde_json::json!({"taken": status == 202, "why": why}),
            status,
        ))
    }

    /// Sets the alarm to the earliest thing due (record, outbox, webhook).
    async fn schedule(&self) -> worker::Result<()> {
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

    /// Advances a running job by one upstream call (submit or poll).
    async fn step(&self) -> worker::Result<()> {
        let Some(job) = self.load().await? else {
            return Ok(());
        };
        let cfg = self.config();
        let now = now_ms();
        let past_deadline = now >= job.deadline_ms;
        match job.upstream.clone() {
            Some(sub) => self.poll(&cfg, &job, sub, past_deadline).await,
            None if past_deadline => {
                self.update(|j| j.time_out(now_ms())).await?;
                Ok(())
            }
            None => self.submit(&cfg, job).await,
        }
    }

    /// Submits to the current candidate, with the attempt recorded first. A submit
    /// found recorded but unresolved was lost after the POST: where the provider can be
    /// asked, it is looked up instead of sent again.
    async fn submit(&self, cfg: &Config, job: JobRecord) -> worker::Result<()> {
        let lost = job.submitting.clone();
        let Some(attempt) = self.update(|j| j.begin_submit(now_ms())).await? else {
            return Ok(());
        };
        let upstream = provider(cfg, &attempt.provider);
        if let (Some(lost), Ok(p)) = (&lost, &upstream) {
            worker::console_warn!(
                "job {}: submit attempt {} to {} has no recorded outcome",
                job.id,
                lost.n,
                lost.provider
            );
            if lost.provider == attempt.provider {
                match providers::lookup(p, &job, timeout_ms(cfg)).await {
                    Ok(Lookup::Found(sub)) => {
                        return self
                            .submitted(&attempt, Ok(sub), job.hooks, Vec::new())
                            .await;
                    }
                    Ok(Lookup::Absent | Lookup::Unsupported) => {}
                    Err(e) => {
                        return self
                            .submitted(&attempt, Err(e), job.hooks, Vec::new())
                            .await;
                    }
                }
            }
        }
        // When this provider's jobs of this model finished lately: the poll schedule
        // looks around those moments (not for a provider asked to call back, which is
        // polled only as a backstop).
        let expected = match &upstream {
            Ok(p)
                if cfg
                    .hooks
                    .as_ref()
                    .and_then(|h| h.callback(p.kind, &job.id))
                    .is_none() =>
            {
                finish_times::fetch_expected(&self.env, &attempt.provider, job.model.slug()).await
            }
            _ => Vec::new(),
        };
        let outcome = match upstream {
            // An open circuit breaker fails over at once, like a refusal.
            Ok(_)
                if cfg.breaker.failures > 0
                    && !breaker::allow(&self.env, &attempt.provider).await =>
            {
                Err(transient(format!(
                    "{}: circuit breaker open",
                    attempt.provider
                )))
            }
            Ok(p) => match self.control_image(cfg, &p, &job).await {
                Ok(control) => {
                    let hooks = cfg.hooks.as_ref();
                    let callback = hooks.and_then(|h| h.callback(p.kind, &job.id));
                    let sent = providers::submit(
                        &p,
                        &job,
                        &control,
                        callback.as_ref(),
                        timeout_ms(cfg),
                        async || self.still_wanted(&attempt).await,
                    )
                    .await
                    .map(|mut sub| {
                        // Asked to call back: polls are only the backstop.
                        sub.backstop_ms =
                            hooks.filter(|_| callback.is_some()).map(|h| h.backstop_ms);
                        sub
                    });
                    let signal = breaker::Signal::of(&sent.as_ref().map(|_| ()));
                    breaker::record(&self.env, &attempt.provider, signal, cfg.breaker).await;
                    match sent {
                        // An ambiguous failure: the provider may have accepted it. Ask
                        // before moving on where it can be asked.
                        Err(UpstreamError::Transient { .. }) if p.kind == Kind::ComfyUi => {
                            match providers::lookup(&p, &job, timeout_ms(cfg)).await {
                                Ok(Lookup::Found(sub)) => Ok(sub),
                                _ => sent,
                            }
                        }
                        other => other,
                    }
                }
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        self.submitted(&attempt, outcome, job.hooks, expected).await
    }

    /// Whether submit `attempt` is still the one the record waits for, read right
    /// before its POST. The breaker, the finish times, the control image (and ComfyUI's
    /// upload) are awaited after the attempt began, and each lets a cancel or a delete
    /// in: a job that ended meanwhile is not sent, and the outcome (nothing accepted
    /// upstream) refunds it in full. Only this storage read lies between the check and
    /// the POST; a cancel during the POST is the outcome's to settle. A failed read
    /// sends, as before the check existed.
    async fn still_wanted(&self, attempt: &Attempt) -> Result<(), UpstreamError> {
        match self.load().await {
            Ok(Some(j))
                if !j.status.is_terminal()
                    && j.submitting.as_ref().map(|a| a.n) == Some(attempt.n) =>
            {
                Ok(())
            }
            Ok(_) => Err(UpstreamError::Permanent(
                "not sent: the job ended (or the attempt was superseded) before its POST".into(),
            )),
            Err(e) => {
                worker::console_warn!("job record unreadable before a submit: {e}");
                Ok(())
            }
        }
    }

    /// Records submit `attempt`'s outcome; `hooks_before`: the callbacks the record had
    /// taken when the attempt began; `expected`: the provider's learned finish times.
    async fn submitted(
        &self,
        attempt: &Attempt,
        outcome: Result<Submitted, UpstreamError>,
        hooks_before: u32,
        expected: Vec<u32>,
    ) -> worker::Result<()> {
        if let Err(e) = &outcome {
            worker::console_warn!(
                "submit attempt {} to {} failed: {e:?}",
                attempt.n,
                attempt.provider
            );
        }
        if !expected.is_empty() && outcome.is_ok() {
            worker::console_log!(
                "{} accepted submit attempt {}; its recent jobs of this model ended after {expected:?} ms",
                attempt.provider,
                attempt.n
            );
        }
        let budget = Kind::from_name(&attempt.provider)
            .map_or(PollBudget::tight(self.config().poll_every_ms), |k| {
                k.poll_budget(self.config().poll_every_ms)
            });
        self.update(|j| {
            if j.submit_outcome(attempt, outcome, now_ms(), jitter()) == FailoverStep::Now {
                j.expect_finishes(expected, now_ms(), budget);
            }
            // A callback that came while the POST was out is confirmed at once.
            j.recheck_if_hooked(hooks_before, now_ms());
        })
        .await?;
        Ok(())
    }

    /// A canceled job whose submit outcome was lost: look it up where possible (then
    /// cancel it upstream), else it may have run and nothing is refunded.
    async fn resolve_lost_submit(&self) -> worker::Result<()> {
        let Some(job) = self.load().await? else {
            return Ok(());
        };
        let Some(attempt) = job.submitting.clone() else {
            return Ok(());
        };
        let cfg = self.config();
        let found = match provider(&cfg, &attempt.provider) {
            Ok(p) => providers::lookup(&p, &job, timeout_ms(&cfg)).await,
            Err(_) => Ok(Lookup::Unsupported),
        };
        match found {
            Ok(Lookup::Found(sub)) => {
                self.submitted(&attempt, Ok(sub), job.hooks, Vec::new())
                    .await
            }
            Ok(Lookup::Absent) => {
                self.submitted(
                    &attempt,
                    Err(UpstreamError::Permanent("absent".into())),
                    job.hooks,
                    Vec::new(),
                )
                .await
            }
            Ok(Lookup::Unsupported) => {
                self.update(|j| j.lost_submit_after_cancel(now_ms()))
                    .await?;
                Ok(())
            }
            // Retried with backoff (then decided as spent).
            Err(e) => {
                worker::console_warn!("job {}: lookup of a lost submit failed: {e:?}", job.id);
                self.update(|j| j.lost_submit_lookup_failed(now_ms(), jitter()))
                    .await?;
                Ok(())
            }
        }
    }

    /// The control image as `provider` gets it: a signed link valid until the job's
    /// deadline where the deployment has links and the provider fetches URLs, else
    /// the bytes from R2.
    async fn control_image(
        &self,
        cfg: &Config,
        provider: &crate::config::Provider,
        job: &JobRecord,
    ) -> Result<ControlImage, UpstreamError> {
        if let Some(signer) = &cfg.control_links {
            let link = signer.link(&job.id, job.deadline_ms.div_ceil(1000));
            if provider.kind.fetches(&link) {
                return Ok(ControlImage::Link(link));
            }
        }
        self.input_image(job).await.map(ControlImage::Inline)
    }

    async fn input_image(&self, job: &JobRecord) -> Result<Vec<u8>, UpstreamError> {
        let internal = |e: worker::Error| transient(format!("storage: {e}"));
        let bucket = storage::media(&self.env).map_err(|e| transient(e.to_string()))?;
        meter::count(meter::Op::R2ClassB, 1);
        let object = bucket
            .get(keys::input(&job.id))
            .execute()
            .await
            .map_err(internal)?
            .ok_or_else(|| UpstreamError::Permanent("the control image is missing".into()))?;
        let body = object
            .body()
            .ok_or_else(|| UpstreamError::Permanent("the control image is empty".into()))?;
        body.bytes().await.map_err(internal)
    }

    /// One look at the upstream; on COMPLETED, the outputs are stored and only then is
    /// the job completed, if it still runs on that upstream job.
    async fn poll(
        &self,
        cfg: &Config,
        job: &JobRecord,
        sub: Submitted,
        past_deadline: bool,
    ) -> worker::Result<()> {
        let upstream = provider(cfg, &job.provider);
        // The provider sees the job's state after this: a job found running ended
        // later (the learned finish windows, `finish_times.rs`).
        let sent = now_ms();
        let state = match &upstream {
            Ok(p) => providers::poll(p, &sub, timeout_ms(cfg)).await,
            Err(e) => Err(e.clone()),
        };
        // When the provider was seen done (the downloads below take a while).
        let looked = now_ms();
        let budget = match &upstream {
            Ok(p) => p.kind.poll_budget(cfg.poll_every_ms),
            Err(_) => PollBudget::tight(cfg.poll_every_ms),
        };
        let id = sub.upstream_id.clone();
        let outcome = match (state, &upstream) {
            (Ok(UpstreamState::Completed(urls)), Ok(p)) if !urls.is_empty() => {
                match self.store_outputs(p, job, &id, &urls).await? {
                    Some(Ok(outputs)) => {
                        let applied = self
                            .update(|j| {
                                if j.owns_outputs_of(&id) && !j.runs_on(&id) {
                                    // Completed from this very upstream job by another
                                    // look meanwhile: the objects just written are the
                                    // same outputs; nothing to do.
                                    Err(false)
                                } else if j.runs_on(&id) {
                                    let finish = j.submitted_ms.and_then(|s| {
                                        finish_times::window(s, j.last_running_ms, looked)
                                    });
                                    j.complete(outputs, now_ms());
                                    Ok(finish)
                                } else {
                                    // Canceled or superseded meanwhile: what we wrote
                                    // must not survive.
                                    j.outbox
                                        .drop_outputs
                                        .get_or_insert(crate::job::Retry::now(now_ms()));
                                    Err(true)
                                }
                            })
                            .await?;
                        match applied {
                            Some(Ok(finish)) => {
                                meter::completed(job.id.as_str());
                                // Learned only where it is used: a provider that
                                // calls back is not polled on a schedule.
                                if let Some(window) = finish.filter(|_| sub.backstop_ms.is_none()) {
                                    finish_times::record(
                                        &self.env,
                                        &job.provider,
                                        job.model.slug(),
                                        window,
                                    )
                                    .await;
                                }
                            }
                            Some(Err(true)) => worker::console_log!(
                                "job {}: outputs stored too late; dropped",
                                job.id
                            ),
                            Some(Err(false)) => {}
                            None => {}
                        }
                        return Ok(());
                    }
                    Some(Err(e)) => Err(e),
                    // Stopped before writing: the record moved on.
                    None => return Ok(()),
                }
            }
            (other, _) => other,
        };
        if let Err(e) = &outcome {
            worker::console_warn!("job {}: poll of {} failed: {e:?}", job.id, job.provider);
        }
        if let Ok(UpstreamState::Failed(reason)) = &outcome {
            worker::console_warn!("job {}: {} failed it: {reason}", job.id, job.provider);
        }
        let running = matches!(
            outcome,
            Ok(UpstreamState::Queued | UpstreamState::Processing)
        );
        self.update(|j| {
            if running && j.runs_on(&id) {
                j.last_running_ms = Some(sent);
            }
            j.poll_outcome(&id, outcome, now_ms(), budget, jitter(), past_deadline);
            // A callback that came while this poll was out is confirmed by another.
            j.recheck_if_hooked(job.hooks, now_ms());
        })
        .await?;
        Ok(())
    }

    /// Downloads every output (provider URLs expire) and writes it to R2, checking
    /// before each download and each write that the job still runs on `upstream_id`
    /// (`None`: it does not, stop).
    async fn store_outputs(
        &self,
        provider: &crate::config::Provider,
        job: &JobRecord,
        upstream_id: &str,
        urls: &[String],
    ) -> worker::Result<Option<Result<Vec<StoredOutput>, UpstreamError>>> {
        let bucket =
            storage::media(&self.env).map_err(|e| worker::Error::RustError(e.to_string()))?;
        let mut stored = Vec::with_capacity(urls.len());
        // As many as were charged for: a provider answering more stores no more.
        let charged = job.params.num_outputs().clamp(1, 4);
        for (n, url) in urls.iter().enumerate().take(charged) {
            // Canceled while the poll (or the previous output) was out: stop here.
            if !self.load().await?.is_some_and(|j| j.runs_on(upstream_id)) {
                return Ok(None);
            }
            let bytes = match providers::download(provider, url, DOWNLOAD_TIMEOUT_MS).await {
                Ok(b) => b,
                Err(e) => return Ok(Some(Err(e))),
            };
            let Some(format) = ImageFormat::sniff(&bytes) else {
                return Ok(Some(Err(transient(format!("output {n} is not an image")))));
            };
            if !is_complete(&bytes, format) {
                return Ok(Some(Err(transient(format!("output {n} was truncated")))));
            }
            if !self.load().await?.is_some_and(|j| j.runs_on(upstream_id)) {
                return Ok(None);
            }
            let size = bytes.len() as u64;
            let (width, height) = imagesize::blob_size(&bytes)
                .map(|s| {
                    (
                        u32::try_from(s.width).unwrap_or(0),
                        u32::try_from(s.height).unwrap_or(0),
                    )
                })
                .unwrap_or((0, 0));
            let put = storage::put_image(
                &bucket,
                &keys::output(&job.id, n, format.ext()),
                bytes,
                format.media_type(),
                job.id.as_str(),
            )
            .await;
            if let Err(e) = put {
                return Ok(Some(Err(transient(format!("storing output {n}: {e}")))));
            }
            // A cancel or delete may have landed (and dropped or purged the outputs by
            // prefix) while the put was out: this object would then outlive its
            // record. Delete it here; the drop by prefix stays the backstop.
            let after = self.load().await?;
            if !after
                .as_ref()
                .is_some_and(|j| j.owns_outputs_of(upstream_id))
            {
                let key = keys::output(&job.id, n, format.ext());
                // Tried a few times: once the record is purged nothing else would.
                let mut deleted = bucket.delete(&key).await;
                for pause in [200, 800] {
                    if deleted.is_ok() {
                        break;
                    }
                    worker::Delay::from(std::time::Duration::from_millis(pause)).await;
                    deleted = bucket.delete(&key).await;
                }
                if let Err(e) = deleted {
                    worker::console_warn!("job {}: deleting late output {n} failed: {e}", job.id);
                    if after.is_some() {
                        self.update(|j| {
                            j.outbox
                                .drop_outputs
                                .get_or_insert(crate::job::Retry::now(now_ms()));
                        })
                        .await?;
                    }
                }
                return Ok(None);
            }
            stored.push(StoredOutput {
                ext: format.ext().to_owned(),
                content_type: format.media_type().to_owned(),
                bytes: size,
                width,
                height,
            });
        }
        Ok(Some(Ok(stored)))
    }

    /// Makes the webhook attempt that is due, if any, and records its outcome unless
    /// the job was deleted meanwhile.
    async fn deliver_webhook(&self) -> worker::Result<()> {
        let storage = self.state.storage();
        let Some(job) = self.load().await? else {
            return Ok(());
        };
        // Not before the job's settlement is acknowledged by its owner's Ledger (the
        // alarm retries that first).
        if !job.status.is_terminal() || job.deleted || job.outbox.refund.is_some() {
            return Ok(());
        }
        meter::count(meter::Op::RowsRead, 1);
        let Some(mut delivery) = storage.get::<Delivery>(WEBHOOK).await? else {
            return Ok(());
        };
        if job.failure == Some(crate::job::FailureKind::Canceled) {
            // Like Eachlabs: a canceled prediction sends no webhook.
            if !delivery.done {
                delivery.done = true;
                meter::count(meter::Op::RowsWritten, 1);
                storage.put(WEBHOOK, &delivery).await?;
            }
            return Ok(());
        }
        if !delivery.is_due(now_ms()) {
            return Ok(());
        }
        let body = match delivery.body.clone() {
            Some(body) => body,
            None => {
                let body = compat::eachlabs::webhook_body(&job, &delivery.target.origin);
                delivery.body = Some(body.clone());
                body
            }
        };
        let timestamp = *delivery.timestamp.get_or_insert(now_ms() / 1000);
        let loopback = self.config().webhook_loopback;
        let sent = webhook::send(&delivery.target, loopback, timestamp, &body).await;
        if let Err(why) = &sent {
            worker::console_warn!(
                "job {}: webhook attempt {} failed: {why}",
                job.id,
                delivery.attempts + 1
            );
        }
        // A delete may have purged everything while the attempt was out.
        if self.load().await?.is_none_or(|j| j.deleted) {
            return Ok(());
        }
        delivery.attempted(sent.is_ok(), now_ms());
        meter::count(meter::Op::RowsWritten, 1);
        storage.put(WEBHOOK, &delivery).await
    }

    /// Deletes every R2 object under `results/{id}/`.
    async fn drop_outputs(&self, id: &parallax_api::RequestId) -> worker::Result<()> {
        let bucket = self.env.bucket(bindings::MEDIA)?;
        loop {
            meter::count(meter::Op::R2ClassA, 1);
            let listed = bucket
                .list()
                .prefix(keys::outputs_prefix(id))
                .execute()
                .await?;
            let objects: Vec<String> = listed.objects().iter().map(|o| o.key()).collect();
            if objects.is_empty() {
                return Ok(());
            }
            bucket.delete_multiple(objects).await?;
            if !listed.truncated() {
                return Ok(());
            }
        }
    }

    /// Deletes everything the job left: its R2 images (by prefix, so an output no
    /// record lists goes too) and this object's state.
    async fn purge(&self, job: &JobRecord) -> worker::Result<()> {
        let done = async {
            self.env
                .bucket(bindings::MEDIA)?
                .delete(keys::input(&job.id))
                .await?;
            self.drop_outputs(&job.id).await
        }
        .await;
        if let Err(e) = done {
            worker::console_warn!("job {}: purge failed: {e}", job.id);
            self.update(|j| {
                if let Some(p) = j.outbox.purge.as_mut() {
                    p.failed(now_ms(), jitter());
                }
            })
            .await?;
            return self.schedule().await;
        }
        let storage = self.state.storage();
        storage.delete_alarm().await?;
        // The record and the webhook delivery (`delete_all` removes every key).
        meter::count(meter::Op::RowsWritten, 2);
        storage.delete_all().await?;
        Ok(())
    }
}
