//! `JobRunner`: one Durable Object per job. It holds the job's live record, submits to
//! the upstream and polls it from alarms (so a job finishes with no client watching),
//! copies every output into R2, and only then says COMPLETED.
//!
//! When the retention period is over, an alarm purges everything: the record, its KV
//! copy and its R2 images.
//!
//! A job given a webhook has its [`Delivery`] stored beside the record; when the job
//! ends (completed or failed, not canceled) the alarm delivers it, retrying with
//! backoff, before it sleeps until the purge.
//!
//! Internal protocol (only the Worker reaches it): `POST /start` with a [`Start`],
//! `GET /state`, `POST /cancel`, `POST /delete`.

use worker::{DurableObject, Env, Method, Request, Response, State, durable_object};

use crate::accounts;
use crate::breaker;
use crate::compat;
use crate::config::{Config, bindings};
use crate::http;
use crate::input::image::{ImageFormat, is_complete};
use crate::job::{FailoverStep, FailureKind, JobRecord, Start, StoredOutput};
use crate::providers::{self, Kind, UpstreamError, UpstreamState};
use crate::storage::{self, keys};
use crate::webhook::{self, Delivery};

const RECORD: &str = "job";
const WEBHOOK: &str = "webhook";
const DOWNLOAD_TIMEOUT_MS: u32 = 60_000;

#[durable_object(alarm)]
pub struct JobRunner {
    state: State,
    env: Env,
}

impl std::fmt::Debug for JobRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JobRunner")
    }
}

fn now_ms() -> u64 {
    worker::Date::now().as_millis()
}

/// What a step decided about the next alarm.
enum Next {
    In(u64),
    Done,
}

impl DurableObject for JobRunner {
    fn new(state: State, env: Env) -> Self {
        Self { state, env }
    }

    async fn fetch(&self, mut req: Request) -> worker::Result<Response> {
        let storage = self.state.storage();
        match (req.method(), req.path().as_str()) {
            (Method::Post, "/start") => {
                if storage.get::<JobRecord>(RECORD).await?.is_some() {
                    return Ok(http::json(&"already started", 409));
                }
                let start: Start = req.json().await?;
                if let Some(target) = start.webhook {
                    storage.put(WEBHOOK, &Delivery::new(target)).await?;
                }
                storage.put(RECORD, &start.job).await?;
                storage.set_alarm(0).await?;
                Ok(http::json(&start.job, 201))
            }
            (method, path) => {
                let Some(mut job) = storage.get::<JobRecord>(RECORD).await? else {
                    return Ok(http::json(&"no such job", 404));
                };
                if job.is_expired(now_ms()) {
                    self.purge(&job).await?;
                    return Ok(http::json(&"expired", 404));
                }
                match (method, path) {
                    (Method::Get, "/state") => Ok(http::json(&job, 200)),
                    (Method::Post, "/cancel") => {
                        if let (Some(sub), Ok(provider)) =
                            (&job.upstream, provider(&self.config(), &job.provider))
                        {
                            let _ = providers::cancel(&provider, sub, 10_000).await;
                        }
                        if !job.status.is_terminal() {
                            job.fail(FailureKind::Canceled, "Canceled by its owner", now_ms());
                            storage.put(RECORD, &job).await?;
                            self.finish(&job).await?;
                        }
                        Ok(http::json(&job, 200))
                    }
                    (Method::Post, "/delete") => {
                        self.purge(&job).await?;
                        Ok(http::json(&job, 200))
                    }
                    _ => Ok(http::json(&"unknown runner route", 404)),
                }
            }
        }
    }

    async fn alarm(&self) -> worker::Result<Response> {
        let storage = self.state.storage();
        let Some(mut job) = storage.get::<JobRecord>(RECORD).await? else {
            return Response::ok("no job");
        };
        if job.status.is_terminal() {
            if job.is_expired(now_ms()) {
                self.purge(&job).await?;
            } else {
                self.deliver_webhook(&job).await?;
                self.sleep_until_due(&job).await?;
            }
            return Response::ok("finished");
        }
        let next = self.step(&mut job).await;
        // The step awaited the network, so a cancel or delete may have landed
        // meanwhile: the stored record then wins over this stale copy.
        match storage.get::<JobRecord>(RECORD).await? {
            Some(current) if !current.status.is_terminal() => {}
            _ => return Response::ok("superseded"),
        }
        storage.put(RECORD, &job).await?;
        if job.status.is_terminal() {
            self.finish(&job).await?;
        } else if let Next::In(ms) = next {
            let until_deadline = job.deadline_ms.saturating_sub(now_ms());
            storage
                .set_alarm(i64::try_from(ms.min(until_deadline)).unwrap_or(i64::MAX))
                .await?;
        }
        Response::ok("stepped")
    }
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

/// Milliseconds from now until `at_ms`, as an alarm offset.
fn offset_until(at_ms: u64) -> i64 {
    i64::try_from(at_ms.saturating_sub(now_ms())).unwrap_or(i64::MAX)
}

impl JobRunner {
    /// Advances the job by one upstream call and says when to come back.
    async fn step(&self, job: &mut JobRecord) -> Next {
        let now = now_ms();
        if now >= job.deadline_ms {
            let why = job
                .last_problem
                .clone()
                .map(|p| format!(" (last problem: {p})"))
                .unwrap_or_default();
            job.fail(
                FailureKind::Timeout,
                format!("The job did not finish before its deadline{why}"),
                now,
            );
            return Next::Done;
        }
        // The deployment's settings, read once per step.
        let cfg = self.config();
        let outcome = match job.upstream {
            None => self.submit(&cfg, job).await,
            Some(_) => self.poll(&cfg, job).await,
        };
        match outcome {
            Ok(next) => {
                job.retries = 0;
                next
            }
            Err(UpstreamError::Transient {
                reason,
                retry_after,
            }) => {
                worker::console_warn!("job {}: transient upstream problem: {reason}", job.id);
                let delay = job.retry_delay_ms(retry_after, js_sys::Math::random());
                job.retries += 1;
                job.last_problem = Some(reason);
                Next::In(delay)
            }
            Err(UpstreamError::Permanent(reason)) => {
                job.fail(
                    FailureKind::Upstream,
                    format!("{}: {reason}", job.provider),
                    now_ms(),
                );
                Next::Done
            }
        }
    }

    fn config(&self) -> Config {
        Config::from_env(&self.env)
    }

    /// Submits to the current candidate; on refusal, fails over (see
    /// [`JobRecord::submit_failed`]).
    async fn submit(&self, cfg: &Config, job: &mut JobRecord) -> Result<Next, UpstreamError> {
        let internal = |e: worker::Error| UpstreamError::Transient {
            reason: format!("storage: {e}"),
            retry_after: None,
        };
        let bucket = storage::media(&self.env).map_err(|e| UpstreamError::Transient {
            reason: e.to_string(),
            retry_after: None,
        })?;
        let object = bucket
            .get(keys::input(&job.id))
            .execute()
            .await
            .map_err(internal)?
            .ok_or_else(|| UpstreamError::Permanent("the control image is missing".into()))?;
        let body = object
            .body()
            .ok_or_else(|| UpstreamError::Permanent("the control image is empty".into()))?;
        let bytes = body.bytes().await.map_err(internal)?;
        let attempt = match provider(cfg, &job.provider) {
            // An open circuit breaker fails over at once, like a refusal.
            Ok(_)
                if cfg.breaker.failures > 0 && !breaker::allow(&self.env, &job.provider).await =>
            {
                Err(UpstreamError::Transient {
                    reason: format!("{}: circuit breaker open", job.provider),
                    retry_after: None,
                })
            }
            Ok(provider) => {
                let attempt = providers::submit(&provider, job, &bytes, timeout_ms(cfg)).await;
                let signal = breaker::Signal::of(&attempt.as_ref().map(|_| ()));
                breaker::record(&self.env, &job.provider, signal, cfg.breaker).await;
                attempt
            }
            Err(e) => Err(e),
        };
        match attempt {
            Ok(submitted) => {
                job.submitted(submitted, now_ms());
                Ok(Next::In(job.poll_delay_ms(now_ms(), cfg.poll_every_ms)))
            }
            Err(e) => {
                worker::console_warn!("job {}: submit to {} failed: {e:?}", job.id, job.provider);
                Ok(
                    match job.submit_failed(e, now_ms(), js_sys::Math::random()) {
                        FailoverStep::Now => Next::In(0),
                        FailoverStep::After(ms) => Next::In(ms),
                        FailoverStep::Failed => Next::Done,
                    },
                )
            }
        }
    }

    async fn poll(&self, cfg: &Config, job: &mut JobRecord) -> Result<Next, UpstreamError> {
        let provider = provider(cfg, &job.provider)?;
        let Some(sub) = job.upstream.clone() else {
            return Ok(Next::In(0));
        };
        job.polled();
        let state = providers::poll(&provider, &sub, timeout_ms(cfg)).await?;
        let now = now_ms();
        match state {
            UpstreamState::Queued => Ok(Next::In(job.poll_delay_ms(now, cfg.poll_every_ms))),
            UpstreamState::Processing => {
                job.mark_processing(now);
                Ok(Next::In(job.poll_delay_ms(now, cfg.poll_every_ms)))
            }
            UpstreamState::Failed(reason) => {
                job.fail(FailureKind::Rejected, reason, now);
                Ok(Next::Done)
            }
            UpstreamState::Completed(urls) if urls.is_empty() => Err(UpstreamError::Transient {
                reason: format!("{} reported COMPLETED without outputs", job.provider),
                retry_after: None,
            }),
            UpstreamState::Completed(urls) => {
                let outputs = self.store_outputs(&provider, job, &urls).await?;
                job.complete(outputs, now_ms());
                Ok(Next::Done)
            }
        }
    }

    /// Downloads every output at once (provider URLs expire) and writes it to R2.
    async fn store_outputs(
        &self,
        provider: &crate::config::Provider,
        job: &JobRecord,
        urls: &[String],
    ) -> Result<Vec<StoredOutput>, UpstreamError> {
        let bucket = storage::media(&self.env).map_err(|e| UpstreamError::Transient {
            reason: e.to_string(),
            retry_after: None,
        })?;
        let mut stored = Vec::with_capacity(urls.len());
        for (n, url) in urls.iter().enumerate().take(4) {
            let bytes = providers::download(provider, url, DOWNLOAD_TIMEOUT_MS).await?;
            let format = ImageFormat::sniff(&bytes).ok_or_else(|| UpstreamError::Transient {
                reason: format!("output {n} is not an image"),
                retry_after: None,
            })?;
            if !is_complete(&bytes, format) {
                return Err(UpstreamError::Transient {
                    reason: format!("output {n} was truncated"),
                    retry_after: None,
                });
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
            storage::put_image(
                &bucket,
                &keys::output(&job.id, n, format.ext()),
                bytes,
                format.media_type(),
                job.id.as_str(),
            )
            .await
            .map_err(|e| UpstreamError::Transient {
                reason: format!("storing output {n}: {e}"),
                retry_after: None,
            })?;
            stored.push(StoredOutput {
                ext: format.ext().to_owned(),
                content_type: format.media_type().to_owned(),
                bytes: size,
                width,
                height,
            });
        }
        Ok(stored)
    }

    /// After a job ends: refund a failure, write the finished record to KV (for
    /// history and share pages), and set the alarm that purges it all later.
    async fn finish(&self, job: &JobRecord) -> worker::Result<()> {
        if job.status == parallax_api::JobStatus::Failed && job.ownership.charged > 0 {
            let mut refunded = false;
            for _ in 0..3 {
                if accounts::refund_owner(&self.env, &job.ownership.owner, job.id.as_str())
                    .await
                    .is_ok()
                {
                    refunded = true;
                    break;
                }
            }
            if !refunded {
                worker::console_error!("job {}: refund failed after 3 tries", job.id);
            }
        }
        // KV needs at least 60 s of TTL; the purge alarm is what enforces retention.
        let ttl = job.ownership.retention_secs.max(60);
        let stored = async {
            self.env
                .kv(bindings::JOBS_KV)?
                .put(&keys::job_record(&job.id), job)?
                .expiration_ttl(ttl)
                .execute()
                .await?;
            Ok::<(), worker::Error>(())
        }
        .await;
        if let Err(e) = stored {
            worker::console_error!("job {}: writing the finished record failed: {e}", job.id);
        }
        self.sleep_until_due(job).await
    }

    /// Sets the alarm for what is due next on a finished job: a webhook attempt, else
    /// the purge.
    async fn sleep_until_due(&self, job: &JobRecord) -> worker::Result<()> {
        let storage = self.state.storage();
        let mut delivery = storage.get::<Delivery>(WEBHOOK).await?;
        if job.failure == Some(FailureKind::Canceled)
            && let Some(d) = delivery.as_mut().filter(|d| !d.done)
        {
            // Like Eachlabs: a canceled prediction sends no webhook.
            d.done = true;
            storage.put(WEBHOOK, &*d).await?;
        }
        let webhook_at = delivery.filter(|d| !d.done).map(|d| d.next_ms);
        let at = match (webhook_at, job.expires_ms) {
            (Some(w), Some(e)) => Some(w.min(e)),
            (w, e) => w.or(e),
        };
        if let Some(at) = at {
            storage.set_alarm(offset_until(at)).await?;
        }
        Ok(())
    }

    /// Makes the webhook attempt that is due, if any, and records its outcome.
    async fn deliver_webhook(&self, job: &JobRecord) -> worker::Result<()> {
        let storage = self.state.storage();
        let Some(mut delivery) = storage.get::<Delivery>(WEBHOOK).await? else {
            return Ok(());
        };
        if !delivery.is_due(now_ms()) {
            return Ok(());
        }
        let body = match delivery.body.clone() {
            Some(body) => body,
            None => {
                let body = compat::eachlabs::webhook_body(job, &delivery.target.origin);
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
        delivery.attempted(sent.is_ok(), now_ms());
        storage.put(WEBHOOK, &delivery).await
    }

    /// Deletes everything the job left: R2 images, the KV record, this object's state.
    async fn purge(&self, job: &JobRecord) -> worker::Result<()> {
        let mut objects = vec![keys::input(&job.id)];
        objects.extend(
            job.outputs
                .iter()
                .enumerate()
                .map(|(n, o)| keys::output(&job.id, n, &o.ext)),
        );
        self.env
            .bucket(bindings::MEDIA)?
            .delete_multiple(objects)
            .await?;
        self.env
            .kv(bindings::JOBS_KV)?
            .delete(&keys::job_record(&job.id))
            .await?;
        let storage = self.state.storage();
        storage.delete_alarm().await?;
        storage.delete_all().await?;
        Ok(())
    }
}
