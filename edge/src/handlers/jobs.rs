//! `GET /v2/requests/{id}/status` (`?wait=N&seen=S`: held until the status changes, see
//! [`parallax_api::wait`]), `GET /v2/requests/{id}/events` (the same, as server-sent
//! events), `GET /v2/requests/{id}`, `POST /v2/requests/{id}/cancel` and
//! `DELETE /v2/requests/{id}`: answered by the job's `JobRunner` (strongly consistent),
//! never by the upstream.

use parallax_api::{JobStatus, RequestId, StatusWait};
use serde_json::json;
use worker::{Env, Request, Response};

use crate::accounts::Caller;
use crate::config::Config;
use crate::error::{EdgeError, EdgeResult};
use crate::http;
use crate::objects::runner::JobRecord;
use crate::objects::runner::client::{load, not_found, runner_answer, runner_call};

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

/// `GET /v2/requests/{id}/status`; with `wait`, held by the runner until the status
/// changes or the wait is over, then answered the same way.
pub async fn get_status(
    req: &Request,
    env: &Env,
    id: &str,
    wait: Option<StatusWait>,
) -> EdgeResult<Response> {
    let job = match wait {
        None => load(env, id).await?,
        Some(wait) => {
            let id = RequestId::parse(id).ok_or_else(not_found)?;
            runner_call(env, &id, &format!("/state?{}", wait.query()), false).await?
        }
    };
    Ok(http::json(
        &job.status_response(&origin(req, env)),
        status_code(&job),
    ))
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
/// control image, anyone else's none.
pub fn result_view(
    cfg: &Config,
    claim: &Claim<'_>,
    job: &JobRecord,
    origin: &str,
) -> parallax_api::JobResult {
    let mut result = job.result(origin);
    result.control_image = owner_control_link(cfg, claim, job, origin);
    result
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
async fn events_step(
    env: &Env,
    id: &RequestId,
    origin: &str,
    next: Next,
) -> Option<(Vec<u8>, Next)> {
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
            let wait = StatusWait {
                secs: parallax_api::wait::MAX_WAIT_SECS,
                seen: Some(parallax_api::wait::Seen::one(seen)),
            };
            match runner_call(env, id, &format!("/state?{}", wait.query()), false).await {
                // The hold ran out: a comment line, so proxies see the stream alive.
                Ok(job) if job.status == seen => {
                    Some((b": waiting\n\n".to_vec(), Next::Wait(seen)))
                }
                Ok(job) => Box::pin(events_step(env, id, origin, Next::Send(Box::new(job)))).await,
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
/// body) ends it early (the job expired or was deleted, or the runner failed). Between
/// changes the Worker holds reads at the runner (`status?wait=30`), so the stream
/// costs what held reads cost. An unknown id is a plain 404, before any stream.
pub async fn stream_status(req: &Request, env: &Env, raw_id: &str) -> EdgeResult<Response> {
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
    let origin = origin(req, env);
    let env = env.clone();
    let id = job.id.clone();
    let events = futures_util::stream::unfold(Next::Send(Box::new(job)), move |next| {
        let env = env.clone();
        let id = id.clone();
        let origin = origin.clone();
        async move {
            events_step(&env, &id, &origin, next)
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
    match runner_answer(env, &job.id, "/cancel", true).await? {
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
        match runner_answer(env, &job.id, "/cancel", true).await? {
            (200, canceled) => Some(canceled),
            // It finished meanwhile: delete it as a finished job.
            _ => None,
        }
    };
    let removed = runner_call(env, &job.id, "/delete", true).await?;
    caller.forget(env, job.id.as_str()).await?;
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
        if let Ok(job) = runner_call(env, &id, "/state", false).await {
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
