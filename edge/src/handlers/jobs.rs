//! `GET /v2/requests/{id}/status` and `GET /v2/requests/{id}`: answered from the job's
//! `JobRunner` (strongly consistent), never from the upstream.

use parallax_api::{JobStatus, RequestId};
use worker::{Env, Request, Response, Stub};

use crate::config::{Config, bindings};
use crate::error::{EdgeError, EdgeResult};
use crate::handlers::submit::internal_request;
use crate::http;
use crate::job::JobRecord;

pub fn runner_stub(env: &Env, id: &RequestId) -> EdgeResult<Stub> {
    Ok(env
        .durable_object(bindings::JOB_RUNNER)?
        .id_from_name(id.as_str())?
        .get_stub()?)
}

fn not_found() -> EdgeError {
    EdgeError::NotFound("No such request (unknown or expired id)".into())
}

/// Loads a job's live record, or 404.
pub async fn load(env: &Env, raw_id: &str) -> EdgeResult<JobRecord> {
    let id = RequestId::parse(raw_id).ok_or_else(not_found)?;
    let mut resp = runner_stub(env, &id)?
        .fetch_with_request(internal_request::<()>("/state", None)?)
        .await?;
    match resp.status_code() {
        200 => Ok(resp.json::<JobRecord>().await?),
        404 => Err(not_found()),
        other => Err(EdgeError::Internal(format!("runner answered {other}"))),
    }
}

fn status_code(job: &JobRecord) -> u16 {
    if job.status == JobStatus::Failed {
        422
    } else {
        200
    }
}

pub async fn get_status(env: &Env, id: &str) -> EdgeResult<Response> {
    let job = load(env, id).await?;
    Ok(http::json(&job.status_response(), status_code(&job)))
}

pub async fn get_result(req: &Request, env: &Env, id: &str) -> EdgeResult<Response> {
    let job = load(env, id).await?;
    let origin = http::origin(req, Config::from_env(env).public_base_url.as_deref());
    Ok(http::json(&job.result(&origin), status_code(&job)))
}
