//! The runner's steps with the upstream: submit (with the attempt recorded first),
//! decide a submit whose answer was lost, poll, and copy outputs into R2.

use super::{Attempt, FailoverStep, JobRecord, PollBudget, StoredOutput};
use crate::config::Config;
use crate::finish_times;
use crate::input::image::{ImageFormat, is_complete};
use crate::meter;
use crate::objects::breaker;
use crate::providers::{
    self, ControlImage, Kind, Lookup, Provider, Submitted, UpstreamError, UpstreamState,
};
use crate::storage::{self, keys};

use super::object::*;

/// How soon an ambiguous submit is replayed where that is safe.
pub(super) const REPLAY_AFTER_MS: u64 = 2_000;

/// Decides a submit that failed after the POST may have reached `provider`: where it
/// can look the job up by our id (`Adapter::lookup`), found is accepted and absent is
/// an ordinary failure; otherwise an ambiguous answer stays ambiguous
/// (`JobRecord::submit_outcome` keeps the attempt: it is sent again only where that
/// replays it, [`JobRunner::replay`], else the deadline decides it).
pub(super) async fn decide_submit(
    provider: &Provider,
    job: &JobRecord,
    error: UpstreamError,
    timeout_ms: u32,
) -> Result<Submitted, UpstreamError> {
    match providers::lookup(provider, &job.order(), timeout_ms).await {
        Ok(Lookup::Found(sub)) => Ok(sub),
        Ok(Lookup::Absent) => match error {
            UpstreamError::Ambiguous { reason } => Err(UpstreamError::Transient {
                reason: format!("{reason}; it was not"),
                retry_after: None,
            }),
            other => Err(other),
        },
        _ => Err(error),
    }
}

/// The configured provider named `name`.
pub(super) fn provider(cfg: &Config, name: &str) -> Result<Provider, UpstreamError> {
    Kind::from_name(name)
        .and_then(|k| cfg.provider(k).cloned())
        .ok_or_else(|| UpstreamError::Permanent(format!("provider {name} is no longer configured")))
}

pub(super) fn timeout_ms(cfg: &Config) -> u32 {
    u32::try_from(cfg.upstream_timeout_secs * 1000).unwrap_or(u32::MAX)
}

pub(super) fn transient(reason: impl Into<String>) -> UpstreamError {
    UpstreamError::Transient {
        reason: reason.into(),
        retry_after: None,
    }
}

impl JobRunner {
    /// Advances a running job by one upstream call (submit or poll).
    pub(super) async fn step(&self) -> worker::Result<()> {
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
    pub(super) async fn submit(&self, cfg: &Config, job: JobRecord) -> worker::Result<()> {
        // An ambiguous attempt is sent again only where that replays it (the same
        // attempt: no new one, no breaker, never another provider); elsewhere only
        // the deadline decides it.
        if let Some(attempt) = job.submitting.clone().filter(|a| a.ambiguous) {
            let replays = provider(cfg, &attempt.provider)
                .ok()
                .filter(|p| p.kind.resubmit_replays());
            let Some(p) = replays else {
                let deadline = job.deadline_ms;
                self.update(|j| j.next_step_ms = Some(deadline)).await?;
                return Ok(());
            };
            let outcome = self.replay(cfg, &job, &p).await;
            self.submitted(&attempt, outcome, job.hooks, Vec::new())
                .await?;
            return self.replay_soon().await;
        }
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
                match providers::lookup(p, &job.order(), timeout_ms(cfg)).await {
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
            Ok(p) if providers::callback(cfg.hooks.as_ref(), p.kind, &job.id).is_none() => {
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
                    let callback = providers::callback(hooks, p.kind, &job.id);
                    let sent = providers::submit(
                        &p,
                        &job.order(),
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
                        // A failure after which the provider may hold the job: ask
                        // before moving on where it can be asked.
                        Err(e) if e.is_transient() => {
                            decide_submit(&p, &job, e, timeout_ms(cfg)).await
                        }
                        // "Still starting this job": it may run there, so the attempt
                        // is kept and replayed, never failed over.
                        Err(UpstreamError::InProgress { reason, .. }) => {
                            Err(UpstreamError::Ambiguous { reason })
                        }
                        other => other,
                    }
                }
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        self.submitted(&attempt, outcome, job.hooks, expected)
            .await?;
        self.replay_soon().await
    }

    /// Sends the job again under the same key to a provider whose resubmit replays it
    /// (`Adapter::resubmit_replays`): its answer is the first submit's job. A definite
    /// refusal is one (nothing was accepted); anything else leaves it unknown.
    pub(super) async fn replay(
        &self,
        cfg: &Config,
        job: &JobRecord,
        p: &Provider,
    ) -> Result<Submitted, UpstreamError> {
        let sent = match self.control_image(cfg, p, job).await {
            Ok(control) => {
                providers::submit(
                    p,
                    &job.order(),
                    &control,
                    None,
                    timeout_ms(cfg),
                    async || Ok(()),
                )
                .await
            }
            Err(e) => Err(e),
        };
        match sent {
            Ok(sub) => Ok(sub),
            Err(UpstreamError::Permanent(reason)) => Err(UpstreamError::Permanent(reason)),
            Err(e) => Err(UpstreamError::Ambiguous {
                reason: format!("{e:?}"),
            }),
        }
    }

    /// After an outcome that left an attempt ambiguous at a provider that replays: the
    /// next replay in [`REPLAY_AFTER_MS`], not at the deadline.
    async fn replay_soon(&self) -> worker::Result<()> {
        let cfg = self.config();
        let replays = |name: &str| provider(&cfg, name).is_ok_and(|p| p.kind.resubmit_replays());
        let now = now_ms();
        self.update(|j| {
            if !j.status.is_terminal()
                && j.submitting
                    .as_ref()
                    .is_some_and(|a| a.ambiguous && replays(&a.provider))
            {
                j.next_step_ms = Some((now + REPLAY_AFTER_MS).min(j.deadline_ms));
            }
        })
        .await?;
        Ok(())
    }

    /// Whether submit `attempt` is still the one the record waits for, read right
    /// before its POST. The breaker, the finish times, the control image (and ComfyUI's
    /// upload) are awaited after the attempt began, and each lets a cancel or a delete
    /// in: a job that ended meanwhile is not sent, and the outcome (nothing accepted
    /// upstream) refunds it in full. Only this storage read lies between the check and
    /// the POST; a cancel during the POST is the outcome's to settle. A failed read
    /// sends, as before the check existed.
    pub(super) async fn still_wanted(&self, attempt: &Attempt) -> Result<(), UpstreamError> {
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
    pub(super) async fn submitted(
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
                PollBudget::of(k, self.config().poll_every_ms)
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
    pub(super) async fn resolve_lost_submit(&self) -> worker::Result<()> {
        let Some(job) = self.load().await? else {
            return Ok(());
        };
        let Some(attempt) = job.submitting.clone() else {
            return Ok(());
        };
        let cfg = self.config();
        let found = match provider(&cfg, &attempt.provider) {
            // Where a resend replays it, the replay finds it (or its refusal says it
            // was never accepted); then it is stopped there like any canceled job.
            Ok(p) if attempt.ambiguous && p.kind.resubmit_replays() => {
                match self.replay(&cfg, &job, &p).await {
                    Ok(sub) => Ok(Lookup::Found(sub)),
                    Err(UpstreamError::Permanent(_)) => Ok(Lookup::Absent),
                    Err(e) => Err(e),
                }
            }
            Ok(p) => providers::lookup(&p, &job.order(), timeout_ms(&cfg)).await,
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
    pub(super) async fn control_image(
        &self,
        cfg: &Config,
        provider: &Provider,
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

    pub(super) async fn input_image(&self, job: &JobRecord) -> Result<Vec<u8>, UpstreamError> {
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
    pub(super) async fn poll(
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
            Ok(p) => PollBudget::of(p.kind, cfg.poll_every_ms),
            Err(_) => PollBudget::tight(cfg.poll_every_ms),
        };
        let id = sub.upstream_id.clone();
        let outcome = match (state, &upstream) {
            (Ok(UpstreamState::Completed(urls)), Ok(p)) if !urls.is_empty() => {
                match self.store_outputs(p, job, &id, &urls).await? {
                    Some(Ok(outputs)) => {
                        // Before COMPLETED: the job's own copy of its depth map.
                        let depth = self.copy_depth_map(job, &id).await?;
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
                                    if let Some(copied) = depth {
                                        j.depth_from = super::depth::own_depth(&j.id, copied);
                                    }
                                    j.complete(outputs, now_ms());
                                    Ok(finish)
                                } else {
                                    // Canceled or superseded meanwhile: what we wrote
                                    // must not survive.
                                    j.outbox.drop_outputs.get_or_insert(
                                        crate::objects::runner::Retry::now(now_ms()),
                                    );
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
    pub(super) async fn store_outputs(
        &self,
        provider: &Provider,
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
                                .get_or_insert(crate::objects::runner::Retry::now(now_ms()));
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
}
