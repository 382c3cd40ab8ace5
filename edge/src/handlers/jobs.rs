//! `GET /v2/requests/{id}/status` (`?wait=N&seen=S`: held until the status changes, see
//! [`parallax_api::wait`]), `GET /v2/requests/{id}/events` (the same, as server-sent
//! events), `GET /v2/requests/{id}`, `POST /v2/requests/{id}/cancel` and
//! `DELETE /v2/requests/{id}`: answered by the job's `JobRunner` (strongly consistent),
//! never by the upstream.

use parallax_api::{JobStatus, RequestId, StatusWait};
use serde_json::json;
use worker::{Env, Request, Response};

use crate::accounts::{Caller, Reader};
use crate::config::Config;
use crate::error::{EdgeError, EdgeResult};
use crate::http;
use crate::objects::runner::JobRecord;
use crate::objects::runner::client::{load, not_found, runner_answer, runner_call, runner_stub};
use crate::objects::runner::protocol::RunnerCall;

fn status_code(job: &JobRecord) -> u16 {
    if job.status == JobStatus::Failed {
        422
    } else {
        200
    }
}

/// The `wait` and `seen` of a status read (`None`: a plain read), or a 400 naming the
/// field.
pub fn status_wait(req: &Request) -> EdgeResult<Option<StatusWait>> {
    StatusWait::from_pairs(req.url()?.query_pairs()).map_err(|f| EdgeError::fields(vec![f]))
}

/// The origin absolute URLs in answers are built on.
fn origin(req: &Request, env: &Env) -> String {
    http::origin(req, Config::from_env(env).public_base_url.as_deref())
}

/// `GET /v2/requests/{id}/status` (a plain read; the caller counted it).
pub async fn get_status(req: &Request, env: &Env, id: &str) -> EdgeResult<Response> {
    let job = load(env, id).await?;
    Ok(http::json(
        &job.status_response(&origin(req, env)),
        status_code(&job),
    ))
}

/// A lease id for one hold (`holds.rs`).
fn lease_id() -> EdgeResult<String> {
    Ok(crate::handlers::submit::random_bytes()?
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// A read held at the job's runner: the record, and whether it was held (`false`:
/// the job already had its most holds, and the runner answered at once).
async fn held_state(env: &Env, id: &RequestId, wait: StatusWait) -> EdgeResult<(JobRecord, bool)> {
    let req = RunnerCall::State(Some(wait)).request()?;
    let mut resp = runner_stub(env, id)?.fetch_with_request(req).await?;
    match resp.status_code() {
        200 => {
            let held = resp.headers().get(crate::holds::NOT_HELD_HEADER)?.is_none();
            Ok((resp.json::<JobRecord>().await?, held))
        }
        404 => Err(not_found()),
        other => Err(EdgeError::Internal(format!("runner answered {other}"))),
    }
}

/// A held read of job `id`, counted against `reader`'s read limit and, while held,
/// its account's cap: the record, and whether it was held. Beyond the account's or
/// the job's cap it is the record as it is now, at once.
async fn hold_read(
    env: &Env,
    reader: &Reader,
    id: &RequestId,
    wait: StatusWait,
) -> EdgeResult<(JobRecord, bool)> {
    let lease = lease_id()?;
    if !reader.hold(env, &lease, wait.secs).await? {
        return Ok((runner_call(env, id, RunnerCall::State(None)).await?, false));
    }
    let answer = held_state(env, id, wait).await;
    reader.give_back(env, &lease).await;
    answer
}

/// `GET /v2/requests/{id}/status?wait=N`: held by the runner until the status changes
/// or the wait is over, then answered as a plain read. Counted against `reader`'s read
/// limit; beyond a cap on held reads (`holds.rs`) it is answered at once, marked
/// `x-parallax-held: no` with a `retry-after` for when to read again.
pub async fn get_held_status(
    req: &Request,
    env: &Env,
    reader: &Reader,
    id: &str,
    wait: StatusWait,
) -> EdgeResult<Response> {
    let id = RequestId::parse(id).ok_or_else(not_found)?;
    let (job, held) = hold_read(env, reader, &id, wait).await?;
    let mut resp = http::json(&job.status_response(&origin(req, env)), status_code(&job));
    if !held && !wait.answers(job.status, job.status) {
        let headers = resp.headers_mut();
        headers.set(crate::holds::NOT_HELD_HEADER, "no")?;
        headers.set(
            "retry-after",
            &(crate::holds::STREAM_RETRY_MS / 1000).to_string(),
        )?;
    }
    Ok(resp)
}

/// The `x-owner-token` of a request (an anonymous job's proof of ownership).
pub fn owner_token(req: &Request) -> EdgeResult<Option<String>> {
    Ok(req.headers().get(OWNER_TOKEN)?.map(|t| t.trim().to_owned()))
}

/// The header that carries an anonymous job's owner token.
pub const OWNER_TOKEN: &str = "x-owner-token";

/// Who may act on a job as its owner: the key that submitted it, or for an anonymous
/// job the holder of its owner token. A client address is no owner: everyone behind
/// the same NAT (or /56) shares it.
pub struct Claim<'a> {
    /// Who is calling (`None`: a public read without a key).
    pub caller: Option<&'a Caller>,
    /// The request's `x-owner-token`, if any.
    pub token: Option<&'a str>,
}

impl std::fmt::Debug for Claim<'_> {
    /// The token is a credential: never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Claim")
            .field("caller", &self.caller)
            .field("token", &self.token.map(|_| "***"))
            .finish()
    }
}

/// Whether `claim` owns `job`. An anonymous job made where no tokens are signed
/// (`CONTROL_LINK_SECRET` unset) falls back to its account, as before tokens.
pub fn owns(cfg: &Config, claim: &Claim<'_>, job: &JobRecord) -> bool {
    if !job.ownership.owner.starts_with("anon:") {
        return claim
            .caller
            .is_some_and(|c| c.keyed && c.account == job.ownership.owner);
    }
    match &cfg.control_link_secret {
        Some(secret) => claim
            .token
            .is_some_and(|t| crate::control_link::is_owner_token(secret, &job.id, t)),
        None => claim
            .caller
            .is_some_and(|c| c.account == job.ownership.owner),
    }
}

/// The owner's signed link to `job`'s control image on `origin`, if `claim` owns it
/// and this deployment signs links (`CONTROL_LINK_SECRET`); `None` for anyone else.
pub fn owner_control_link(
    cfg: &Config,
    claim: &Claim<'_>,
    job: &JobRecord,
    origin: &str,
) -> Option<String> {
    let secret = cfg.control_link_secret.as_ref()?;
    owns(cfg, claim, job).then(|| {
        let now = worker::Date::now().as_millis() / 1000;
        crate::control_link::owner_link(secret, origin, &job.id, now)
    })
}

/// The result body as `claim` may read it: its owner's carries a signed link to the
/// control image, anyone else's only when the owner chose to show the photo on the
/// share page; likewise the depth map (`depth_image`), shown to anyone when the owner
/// chose the photo or the depth map.
pub fn result_view(
    cfg: &Config,
    claim: &Claim<'_>,
    job: &JobRecord,
    origin: &str,
) -> parallax_api::JobResult {
    use parallax_api::ShareControl;
    let mut result = job.result(origin);
    // A preview shares nothing ([`share_refusal`]), whatever a record says.
    let share_control = match job.model.is_preview() {
        true => ShareControl::None,
        false => job.share_control,
    };
    result.share_control = share_control;
    let public_depth = matches!(share_control, ShareControl::Depth | ShareControl::Photo);
    result.depth_image = if job.model.is_preview() {
        None
    } else if job.params.control_is_depth() {
        // The control image is the depth map: its signed link.
        match public_depth {
            true => cfg.control_link_secret.as_ref().map(|secret| {
                let now = worker::Date::now().as_millis() / 1000;
                crate::control_link::owner_link(secret, origin, &job.id, now)
            }),
            false => owner_control_link(cfg, claim, job, origin),
        }
    } else {
        // Only its own copy (`objects/runner/depth.rs`), never the preview's; the
        // owner's own view, unshared, is a signed link (`handlers/results.rs`).
        let own = crate::storage::keys::depth_path(&job.id);
        let mine = || owns(cfg, claim, job);
        let now = worker::Date::now().as_millis() / 1000;
        let link = |s| crate::control_link::owner_depth_link(s, origin, &job.id, now);
        match job.depth_from.as_deref() == Some(own.as_str()) {
            true if public_depth || (mine() && cfg.control_link_secret.is_none()) => {
                Some(format!("{origin}{own}"))
            }
            true if mine() => cfg.control_link_secret.as_ref().map(link),
            _ => None,
        }
    };
    // A preview's control image is deleted once it has ended (`Outbox::drop_input`).
    if job.model.is_preview() && job.status.is_terminal() {
        return result;
    }
    result.control_image = match share_control {
        ShareControl::Photo => cfg.control_link_secret.as_ref().map(|secret| {
            let now = worker::Date::now().as_millis() / 1000;
            crate::control_link::owner_link(secret, origin, &job.id, now)
        }),
        ShareControl::None | ShareControl::Depth => owner_control_link(cfg, claim, job, origin),
    };
    result
}

/// Why a share choice on a depth preview is refused: a preview has no share page of its
/// own (else a free preview of any uploaded image, shared as `photo`, would be a signed
/// public link to it for the whole retention). Its map is shared through the job made
/// from it (`share_control: depth` there).
pub const PREVIEW_NOT_SHARED: &str = "a depth preview has no share page of its own: its depth map is shared through the job made from it (share_control \"depth\" on that job)";

/// The refusal of any share choice on a job of `model` ([`PREVIEW_NOT_SHARED`]).
pub fn share_refusal(model: parallax_api::Model) -> Option<EdgeError> {
    model
        .is_preview()
        .then(|| EdgeError::field("share_control", PREVIEW_NOT_SHARED))
}

/// `POST /v2/requests/{id}/share` (`{"share_control": "none" | "photo" | "depth"}`): what the
/// job's share page shows beside the result, stored with the job. Only its owner may
/// ([`owns`]); a depth preview's is refused ([`share_refusal`]).
pub async fn share_job(
    mut req: Request,
    env: &Env,
    caller: &Caller,
    raw_id: &str,
) -> EdgeResult<Response> {
    let job = owned(&req, env, caller, raw_id).await?;
    if let Some(refused) = share_refusal(job.model) {
        return Err(refused);
    }
    // Not `req.json()`: workers-rs reads it through serde-wasm-bindgen, which looks up a
    // struct's fields by name and so never sees an unknown one (`deny_unknown_fields`
    // would not hold); serde_json over the bytes refuses them, as the schema says.
    let (_, bytes) = crate::input::body::read_bytes(&mut req).await?;
    let body: parallax_api::ShareRequest = serde_json::from_slice(&bytes).map_err(|e| {
        EdgeError::field(
            "share_control",
            format!("must be {{\"share_control\": \"none\" | \"photo\" | \"depth\"}} ({e})"),
        )
    })?;
    let choice = body.share_control;
    let stored = runner_stub(env, &job.id)?
        .fetch_with_request(RunnerCall::Share(choice).request()?)
        .await?;
    match stored.status_code() {
        200 => Ok(http::json(
            &parallax_api::ShareResponse {
                request_id: job.id,
                share_control: choice,
            },
            200,
        )),
        404 => Err(not_found()),
        other => Err(EdgeError::Internal(format!("runner answered {other}"))),
    }
}

/// `GET /v2/requests/{id}`: the result, by id, to anyone (`caller` is `None` for a
/// public read).
pub async fn get_result(
    req: &Request,
    env: &Env,
    caller: Option<&Caller>,
    id: &str,
) -> EdgeResult<Response> {
    let job = load(env, id).await?;
    let cfg = Config::from_env(env);
    let origin = http::origin(req, cfg.public_base_url.as_deref());
    let token = owner_token(req)?;
    let claim = Claim {
        caller,
        token: token.as_deref(),
    };
    Ok(http::json(
        &result_view(&cfg, &claim, &job, &origin),
        status_code(&job),
    ))
}

/// What the event stream does next.
enum Next {
    /// Send this status (then wait for the next, unless it is final).
    Send(Box<JobRecord>),
    /// Hold a read until the status is no longer this one.
    Wait(JobStatus),
    Done,
}

/// What an event stream is: its job, who it is counted against, and its life.
#[derive(Clone)]
struct Stream {
    env: Env,
    id: RequestId,
    origin: String,
    reader: Reader,
    opened_ms: u64,
    max_secs: u64,
}

/// The stream's last words when it ends before its job: how long its `EventSource`
/// waits before it reconnects (with `Last-Event-ID`, answered at once).
fn reconnect_later() -> Vec<u8> {
    format!("retry: {}\n: reconnect\n\n", crate::holds::STREAM_RETRY_MS).into_bytes()
}

/// One server-sent event.
fn event(name: &str, data: &impl serde::Serialize) -> Vec<u8> {
    let data = serde_json::to_string(data).unwrap_or_else(|_| "null".into());
    format!("event: {name}\ndata: {data}\n\n").into_bytes()
}

/// A `status` event, with the status as its id: a browser's `EventSource` reconnects
/// after the stream ends and sends it back as `Last-Event-ID`.
fn status_event(job: &JobRecord, origin: &str) -> Vec<u8> {
    let mut chunk = format!("id: {}\n", job.status.as_str()).into_bytes();
    chunk.extend(event("status", &job.status_response(origin)));
    chunk
}

/// One step of the event stream: the bytes to send and what comes next.
async fn events_step(stream: &Stream, next: Next) -> Option<(Vec<u8>, Next)> {
    let (env, id, origin) = (&stream.env, &stream.id, stream.origin.as_str());
    match next {
        Next::Done => None,
        Next::Send(job) => {
            let after = if job.status.is_terminal() {
                Next::Done
            } else {
                Next::Wait(job.status)
            };
            Some((status_event(&job, origin), after))
        }
        Next::Wait(seen) => {
            // Each hold is counted and capped as a held read is; a stream past its
            // life, or one not held, ends, and its client reconnects.
            let Some(secs) = crate::holds::stream_hold_secs(
                stream.opened_ms,
                worker::Date::now().as_millis(),
                stream.max_secs,
                parallax_api::wait::MAX_WAIT_SECS,
            ) else {
                return Some((reconnect_later(), Next::Done));
            };
            let wait = StatusWait {
                secs,
                seen: Some(parallax_api::wait::Seen::one(seen)),
            };
            match hold_read(env, &stream.reader, id, wait).await {
                Ok((job, false)) if job.status == seen => Some((reconnect_later(), Next::Done)),
                // The hold ran out: a comment line, so proxies see the stream alive.
                Ok((job, _)) if job.status == seen => {
                    Some((b": waiting\n\n".to_vec(), Next::Wait(seen)))
                }
                Ok((job, _)) => Box::pin(events_step(stream, Next::Send(Box::new(job)))).await,
                Err(e) => {
                    if let EdgeError::Internal(detail) = &e {
                        worker::console_error!("events of {id}: {detail}");
                    }
                    Some((event("error", &e.body()), Next::Done))
                }
            }
        }
    }
}

/// `GET /v2/requests/{id}/events`: the job's status as server-sent events: a `status`
/// event at once and one at each change (each the body of a plain status read), the
/// last one COMPLETED or FAILED, and then the stream ends; an `error` event (the error
/// body) ends it early (the job expired or was deleted, the runner failed, or the
/// read limit was reached). Between changes the Worker holds reads at the runner
/// (`status?wait=30`), each counted and capped as a held read (`holds.rs`), so the
/// stream costs what held reads cost. A stream ends after `STREAM_MAX_SECS`, or when a
/// cap leaves its hold unheld, with a `retry:` for its `EventSource`, which reconnects
/// and is told the status at once. An unknown id is a plain 404, before any stream.
pub async fn stream_status(
    req: &Request,
    env: &Env,
    reader: Reader,
    raw_id: &str,
) -> EdgeResult<Response> {
    let job = load(env, raw_id).await?;
    // An `EventSource` reconnecting after the last event (it always does when a
    // stream ends): 204 is what makes it stop, instead of a new stream every 3 s.
    let last = req.headers().get("last-event-id")?;
    if job.status.is_terminal()
        && last
            .as_deref()
            .and_then(JobStatus::parse)
            .is_some_and(JobStatus::is_terminal)
    {
        return Ok(Response::empty()?.with_status(204));
    }
    let stream = Stream {
        env: env.clone(),
        id: job.id.clone(),
        origin: origin(req, env),
        reader,
        opened_ms: worker::Date::now().as_millis(),
        max_secs: Config::from_env(env).limits.stream_max_secs,
    };
    let events = futures_util::stream::unfold(Next::Send(Box::new(job)), move |next| {
        let stream = stream.clone();
        async move {
            events_step(&stream, next)
                .await
                .map(|(chunk, next)| (Ok::<_, worker::Error>(chunk), next))
        }
    });
    let headers = worker::Headers::new();
    headers.set("content-type", "text/event-stream")?;
    headers.set("cache-control", "no-store")?;
    Ok(Response::from_stream(events)?.with_headers(headers))
}

/// The job, if `caller` submitted it, or for an anonymous job if the request carries
/// its owner token (403 otherwise).
async fn owned(req: &Request, env: &Env, caller: &Caller, raw_id: &str) -> EdgeResult<JobRecord> {
    let job = load(env, raw_id).await?;
    let token = owner_token(req)?;
    let claim = Claim {
        caller: Some(caller),
        token: token.as_deref(),
    };
    if !owns(&Config::from_env(env), &claim, &job) {
        return Err(EdgeError::Forbidden(
            if job.ownership.owner.starts_with("anon:") {
                "This request belongs to whoever submitted it: send its owner token (x-owner-token)"
            } else {
                "This request belongs to another API key"
            }
            .into(),
        ));
    }
    Ok(job)
}

/// `POST /v2/requests/{id}/cancel`: stops a QUEUED or PROCESSING job and answers its
/// status (FAILED, canceled, with `metrics.credits` saying what was refunded); a
/// finished job answers 409 and is left as it is. Only its owner may ([`owns`]).
pub async fn cancel_job(
    req: &Request,
    env: &Env,
    caller: &Caller,
    raw_id: &str,
) -> EdgeResult<Response> {
    let job = owned(req, env, caller, raw_id).await?;
    match runner_answer(env, &job.id, RunnerCall::Cancel).await? {
        (409, finished) => Err(EdgeError::Conflict {
            message: format!(
                "This request already finished ({}); there is nothing to cancel",
                finished.status.as_str()
            ),
            retry_after_secs: None,
        }),
        (_, canceled) => {
            caller.refresh(env).await?;
            Ok(http::json(
                &canceled.status_response(&origin(req, env)),
                200,
            ))
        }
    }
}

/// `DELETE /v2/requests/{id}`: removes a job and its images; a running job is canceled
/// first (as by the cancel verb). Answers the job's last status with `deleted: true`.
/// Only its owner may.
pub async fn delete_job(
    req: &Request,
    env: &Env,
    caller: &Caller,
    raw_id: &str,
) -> EdgeResult<Response> {
    let job = owned(req, env, caller, raw_id).await?;
    let finished = job.status.is_terminal();
    let canceled = if finished {
        None
    } else {
        match runner_answer(env, &job.id, RunnerCall::Cancel).await? {
            (200, canceled) => Some(canceled),
            // It finished meanwhile: delete it as a finished job.
            _ => None,
        }
    };
    let removed = runner_call(env, &job.id, RunnerCall::Delete).await?;
    caller.forget(env, job.id.as_str()).await?;
    // An uploaded asset goes with the last job made from it (`asset_refs.rs`).
    if let Err(e) = crate::asset_refs::release(env, &job.id).await {
        worker::console_warn!("job {}: its asset was not released: {e}", job.id);
    }
    if canceled.is_some() {
        caller.refresh(env).await?;
    }
    // The job as the delete left it (after the cancel's settlement, so later than the
    // cancel's answer): what it was charged, refunded, and what may still come back
    // (`refund_pending`), now deleted.
    let mut body = serde_json::to_value(removed.status_response(&origin(req, env)))
        .map_err(|e| EdgeError::Internal(e.to_string()))?;
    body["deleted"] = json!(true);
    Ok(http::json(&body, 200))
}

/// Query of `GET /v2/requests`.
#[derive(Debug, Default, serde::Deserialize)]
pub struct ListQuery {
    limit: Option<String>,
    cursor: Option<String>,
}

/// A page's `limit` (20 when absent), or a 400 naming it.
pub fn page_limit(raw: Option<&str>) -> EdgeResult<usize> {
    // `limit=` with nothing is not a number: a 400 like any other (schemathesis).
    match raw {
        None => Ok(20),
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=100).contains(n))
            .ok_or_else(|| EdgeError::field("limit", "must be a whole number from 1 to 100")),
    }
}

/// `GET /v2/requests?limit=&cursor=`: the calling key's jobs, newest first. Only
/// keys have a list (an IP is no identity), and only their own jobs are in it.
pub async fn list_jobs(req: &Request, env: &Env, caller: &Caller) -> EdgeResult<Response> {
    if !caller.keyed {
        return Err(EdgeError::Unauthorized(
            "Listing requests needs an API key (x-api-key)".into(),
        ));
    }
    let query: ListQuery = req
        .query()
        .map_err(|_| EdgeError::bad_request("Invalid query string"))?;
    let limit = page_limit(query.limit.as_deref())?;
    let cursor = match query.cursor.filter(|c| !c.is_empty()) {
        Some(c) => Some(
            RequestId::parse(&c)
                .ok_or_else(|| EdgeError::field("cursor", "is not a cursor this API gave out"))?
                .to_string(),
        ),
        None => None,
    };
    let (ids, next_cursor) = caller.list(env, cursor, limit).await?;
    let cfg = Config::from_env(env);
    let origin = http::origin(req, cfg.public_base_url.as_deref());
    let mut requests = Vec::with_capacity(ids.len());
    for id in ids.iter().filter_map(|i| RequestId::parse(i)) {
        // Deleted or expired jobs are simply not listed.
        if let Ok(job) = runner_call(env, &id, RunnerCall::State(None)).await {
            let claim = Claim {
                caller: Some(caller),
                token: None,
            };
            requests.push(result_view(&cfg, &claim, &job, &origin));
        }
    }
    Ok(http::json(
        &json!({"requests": requests, "next_cursor": next_cursor}),
        200,
    ))
}

#[cfg(test)]
mod tests {
    use parallax_api::Model;

    use super::*;

    #[test]
    fn a_share_choice_on_a_preview_is_a_400_naming_share_control_and_why() {
        let refused = share_refusal(Model::DepthAnythingV2).expect("refused");
        assert_eq!(refused.code(), parallax_api::ErrorCode::BadRequest);
        let fields = refused.body().fields.unwrap();
        assert_eq!(fields[0].field, "share_control");
        assert!(
            fields[0].message.contains("preview"),
            "{}",
            fields[0].message
        );
        for m in Model::GENERATORS {
            assert!(share_refusal(m).is_none(), "{m:?}");
        }
    }
}
