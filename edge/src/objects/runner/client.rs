//! The way in to a job's `JobRunner` from the Worker: its stub, and the internal
//! requests whose answer is the job's record.

use parallax_api::RequestId;
use worker::{Env, Stub};

use super::JobRecord;
use super::protocol::RunnerCall;
use crate::bindings;
use crate::error::{EdgeError, EdgeResult};

pub fn runner_stub(env: &Env, id: &RequestId) -> EdgeResult<Stub> {
    Ok(env
        .durable_object(bindings::JOB_RUNNER)?
        .id_from_name(id.as_str())?
        .get_stub()?)
}

pub fn not_found() -> EdgeError {
    EdgeError::NotFound("No such request (unknown or expired id)".into())
}

/// Sends an internal request to a job's runner and decodes its record, or 404.
pub async fn runner_call(env: &Env, id: &RequestId, call: RunnerCall<'_>) -> EdgeResult<JobRecord> {
    match runner_answer(env, id, call).await? {
        (200, job) => Ok(job),
        (other, _) => Err(EdgeError::Internal(format!("runner answered {other}"))),
    }
}

/// The runner's status and record (200, or 409 for a cancel of a finished job).
pub async fn runner_answer(
    env: &Env,
    id: &RequestId,
    call: RunnerCall<'_>,
) -> EdgeResult<(u16, JobRecord)> {
    let mut resp = runner_stub(env, id)?
        .fetch_with_request(call.request()?)
        .await?;
    match resp.status_code() {
        code @ (200 | 409) => Ok((code, resp.json::<JobRecord>().await?)),
        404 => Err(not_found()),
        other => Err(EdgeError::Internal(format!("runner answered {other}"))),
    }
}

/// After a lost `/start` answer: the job's record if the runner has it, else 404 —
/// and then the runner refuses any late `/start` of it, so the 404 is final.
pub async fn abandon_unless_started(env: &Env, id: &RequestId) -> EdgeResult<JobRecord> {
    runner_call(env, id, RunnerCall::Abandon).await
}

/// Loads a job's live record, or 404 (unknown, malformed or expired id).
pub async fn load(env: &Env, raw_id: &str) -> EdgeResult<JobRecord> {
    let id = RequestId::parse(raw_id).ok_or_else(not_found)?;
    runner_call(env, &id, RunnerCall::State(None)).await
}
