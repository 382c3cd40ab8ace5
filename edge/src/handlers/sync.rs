//! `POST /v1/{model}`: Segmind's synchronous API. The job runs exactly like a v2 job
//! (so it survives a dropped connection); this request waits for it and answers the
//! first image's bytes, or with `Accept: application/json` the JSON result. Both carry
//! Segmind's accounting headers: `x-request-id`, `x-seed-value`, `x-generation-time`,
//! `x-cost` (the job's credits) and, from the router, `x-remaining-credits`.

use std::time::Duration;

use parallax_api::{ErrorBody, ErrorCode, JobStatus, RequestId};
use worker::{Delay, Env, Headers, Request, Response};

use crate::accounts::Caller;
use crate::config::Config;
use crate::error::{EdgeError, EdgeResult};
use crate::handlers::submit::{create_job_from, find_model};
use crate::http;
use crate::objects::runner::client::load;
use crate::objects::runner::{FailureKind, JobRecord};
use crate::storage::{self, keys};

const POLL_MS: u64 = 400;

pub async fn run_sync(
    mut req: Request,
    env: &Env,
    caller: &Caller,
    slug: &str,
) -> EdgeResult<Response> {
    let model = find_model(slug)?;
    let cfg = Config::from_env(env);
    let wants_json = req
        .headers()
        .get("accept")?
        .is_some_and(|a| a.contains("application/json"));
    let id = create_job_from(&mut req, env, &cfg, caller, model).await?;
    let origin = http::origin(&req, cfg.public_base_url.as_deref());
    let job = wait_for_end(env, &cfg, &id, &origin).await?;
    if job.refund.unwrap_or(0) > 0 {
        // A failure or a short delivery gave credits back since the submit's charge:
        // `x-remaining-credits` says the balance after it.
        caller.refresh(env).await?;
    }
    if job.status == JobStatus::Failed {
        return Ok(failed(&job));
    }
    let mut resp = if wants_json {
        // The caller made it just now: theirs, anonymous or not.
        let owner_token = crate::handlers::submit::anonymous_owner_token(&cfg, caller, &id);
        http::json(
            &crate::handlers::jobs::result_view(
                &cfg,
                &crate::handlers::jobs::Claim {
                    caller: Some(caller),
                    token: owner_token.as_deref(),
                },
                &job,
                &origin,
            ),
            200,
        )
    } else {
        first_image(env, &job).await?
    };
    let headers = resp.headers_mut();
    headers.set("x-request-id", id.as_str())?;
    if let Some(seed) = job.params.seed() {
        headers.set("x-seed-value", &seed.to_string())?;
    }
    if let Some(t) = job.metrics().inference_time {
        headers.set("x-generation-time", &format!("{t:.3}"))?;
    }
    headers.set("x-cost", &job.cost().to_string())?;
    Ok(resp)
}

/// Waits up to `SYNC_WAIT_SECS` for a job to end and its end to be settled with its
/// owner's Ledger (so `x-remaining-credits`, read next, counts its refund); still
/// running then is a 504 that says where to follow it (the job goes on). An ended job
/// whose settlement is still owed then is answered as it is.
pub async fn wait_for_end(
    env: &Env,
    cfg: &Config,
    id: &RequestId,
    origin: &str,
) -> EdgeResult<JobRecord> {
    let waited = Duration::from_secs(cfg.sync_wait_secs);
    let started = worker::Date::now().as_millis();
    loop {
        let job = load(env, id.as_str()).await?;
        let over = worker::Date::now().as_millis() - started > waited.as_millis() as u64;
        if job.status.is_terminal() && (job.outbox.refund.is_none() || over) {
            return Ok(job);
        }
        if over {
            return Err(EdgeError::UpstreamTimeout(format!(
                "The job is still running after {} s; follow it at {origin}/v2/requests/{id}/status",
                waited.as_secs()
            )));
        }
        Delay::from(Duration::from_millis(POLL_MS)).await;
    }
}

async fn first_image(env: &Env, job: &JobRecord) -> EdgeResult<Response> {
    let out = job
        .outputs
        .first()
        .ok_or_else(|| EdgeError::Internal("completed job without outputs".into()))?;
    crate::meter::count(crate::meter::Op::R2ClassB, 1);
    let object = storage::media(env)?
        .get(keys::output(&job.id, 0, &out.ext))
        .execute()
        .await?
        .ok_or_else(|| EdgeError::Internal("output missing from R2".into()))?;
    let body = object
        .body()
        .ok_or_else(|| EdgeError::Internal("output without body".into()))?;
    let headers = Headers::new();
    headers.set("content-type", &out.content_type)?;
    headers.set("cache-control", "no-store")?;
    Ok(Response::from_body(body.response_body()?)?.with_headers(headers))
}

/// A FAILED job: 422 when the model refused it, 502 when the provider failed, 504 when
/// it ran out of time. The body is the error shape plus the request id.
pub fn failed(job: &JobRecord) -> Response {
    let code = match job.failure {
        Some(FailureKind::Upstream) => ErrorCode::UpstreamFailed,
        Some(FailureKind::Timeout) => ErrorCode::UpstreamTimeout,
        _ => ErrorCode::JobFailed,
    };
    let body = ErrorBody {
        error: job.error.clone().unwrap_or_else(|| "The job failed".into()),
        code,
        fields: None,
    };
    let mut resp = http::json(&body, code.http_status());
    let _ = resp.headers_mut().set("x-request-id", job.id.as_str());
    resp
}
