//! The runner's outbox: what must happen after a write decided it — the Ledger's
//! settlement and refund, the owner's webhook, dropping outputs, the purge — tried
//! from the alarm with backoff until acknowledged.

use super::JobRecord;
use crate::accounts;
use crate::bindings;
use crate::meter;
use crate::providers::{self};
use crate::storage::keys;
use crate::webhook::{self, Delivery};

use super::object::*;
use super::steps::*;

impl JobRunner {
    /// Works off every outbox entry that is due, purges if the record allows it, and
    /// sets the alarm for what is due next. Safe to run from a handler and the alarm
    /// at once: every effect is idempotent and acknowledged on the current record.
    pub(super) async fn settle(&self) -> worker::Result<()> {
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
            if job.input_drop_ready(now) {
                // Idempotent: deleting a missing key succeeds; a crash before the
                // acknowledgement deletes it again.
                let dropped = match self.env.bucket(bindings::MEDIA) {
                    Ok(bucket) => bucket.delete(keys::input(&job.id)).await,
                    Err(e) => Err(e),
                };
                if let Err(e) = &dropped {
                    worker::console_warn!("job {}: dropping its control image failed: {e}", job.id);
                }
                self.update(|j| match (&dropped, j.outbox.drop_input.as_mut()) {
                    (Ok(()), _) => j.outbox.drop_input = None,
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
    pub(super) async fn refund(&self, job: &JobRecord) -> worker::Result<()> {
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

    /// Makes the webhook attempt that is due, if any, and records its outcome unless
    /// the job was deleted meanwhile.
    pub(super) async fn deliver_webhook(&self) -> worker::Result<()> {
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
        if job.failure == Some(crate::objects::runner::FailureKind::Canceled) {
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
                let body = super::eachlabs::webhook_body(&job, &delivery.target.origin);
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
    pub(super) async fn drop_outputs(&self, id: &parallax_api::RequestId) -> worker::Result<()> {
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
    pub(super) async fn purge(&self, job: &JobRecord) -> worker::Result<()> {
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
