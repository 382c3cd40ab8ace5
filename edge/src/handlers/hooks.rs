//! `POST /hooks/{provider}/{id}?token=…`: a provider's callback for a job (see
//! `hooks.rs`). Checked here, before anything is woken: the job's token, then the
//! provider's own signature and timestamp. A refused callback is a 4xx JSON error and
//! reaches no runner and no upstream. A verified one wakes the job's runner, which
//! acknowledges a delivery it took before and changes nothing (200: a provider's own
//! retry carries the same delivery id, and anything but a 2xx makes it retry again),
//! leaves a finished job as it is (200), and otherwise polls the upstream at once to
//! confirm (202). The answer comes before
//! that poll, so providers (which retry slow answers) get it fast.

use futures_util::StreamExt;
use parallax_api::RequestId;
use worker::{Env, Request, Response};

use crate::config::Config;
use crate::error::{EdgeError, EdgeResult};
use crate::hooks::{self, Hooks, Refusal, Verified, Wake};
use crate::objects::runner::client::runner_stub;
use crate::objects::runner::protocol::RunnerCall;
use crate::providers::{HookError, Kind};

fn not_found() -> EdgeError {
    EdgeError::NotFound("No such callback route".into())
}

fn refused(r: Refusal) -> EdgeError {
    // Logged (no secret is in a refusal), within the refusal log's budget: a rotated
    // secret or a proxy in the way would otherwise only show as every pushing
    // provider's jobs ending on the slow backstop.
    crate::refusal_log::warn(&format!("upstream callback: {r:?}"));
    match r {
        Refusal::Missing(name) => EdgeError::field(name, "is required"),
        Refusal::Malformed(name) => EdgeError::field(name, "is not in the provider's format"),
        Refusal::Stale(name) => EdgeError::field(
            name,
            "is more than 5 minutes away from now (stale or replayed)",
        ),
        Refusal::WrongToken => {
            EdgeError::Forbidden("This callback URL is not valid for this job".into())
        }
        Refusal::Forged => EdgeError::Forbidden("The callback's signature does not verify".into()),
    }
}

fn header(req: &Request, name: &str) -> EdgeResult<Option<String>> {
    Ok(req.headers().get(name)?)
}

fn now_ms() -> u64 {
    worker::Date::now().as_millis()
}

/// The provider's own check of one delivery (`Adapter::verify_hook`).
async fn verify(
    hooks: &Hooks,
    kind: Kind,
    id: &RequestId,
    req: &Request,
    body: &[u8],
) -> EdgeResult<Verified> {
    let header = |name: &str| req.headers().get(name).ok().flatten();
    kind.verify_hook(hooks, id, &header, body, now_ms() / 1000)
        .await
        .map_err(|e| match e {
            HookError::NoRoute => not_found(),
            HookError::Refused(r) => refused(r),
            HookError::Unavailable(why) => {
                worker::console_warn!("{} webhook keys: {why}", kind.name());
                EdgeError::UpstreamFailed(format!(
                    "{}'s webhook keys could not be fetched; retry later",
                    kind.name()
                ))
            }
        })
}

/// `POST /hooks/{provider}/{id}`.
pub async fn receive(
    mut req: Request,
    env: &Env,
    provider: &str,
    id: &str,
) -> EdgeResult<Response> {
    let cfg = Config::from_env(env);
    let hooks = cfg.hooks.as_ref().ok_or_else(not_found)?;
    let kind = Kind::from_name(provider)
        .filter(|k| k.pushes(hooks))
        .ok_or_else(not_found)?;
    let id = RequestId::parse(id).ok_or_else(not_found)?;
    let token = req
        .url()?
        .query_pairs()
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.into_owned());
    hooks
        .check_token(kind.name(), &id, token.as_deref())
        .map_err(refused)?;
    let too_large = || EdgeError::PayloadTooLarge("A callback body is at most 1 MB".into());
    if header(&req, "content-length")?
        .and_then(|l| l.trim().parse::<usize>().ok())
        .is_some_and(|l| l > hooks::MAX_BODY_BYTES)
    {
        return Err(too_large());
    }
    // A chunked body declares no length: read it as it streams, and stop at the cap.
    let mut stream = req
        .stream()
        .map_err(|_| EdgeError::bad_request("callback body could not be read"))?;
    let mut body = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|_| EdgeError::bad_request("callback body could not be read"))?;
        crate::input::remote::append_capped(&mut body, &chunk, hooks::MAX_BODY_BYTES)
            .map_err(|_| too_large())?;
    }
    let verified = verify(hooks, kind, &id, &req, &body).await?;
    let wake = Wake {
        provider: kind.name().to_owned(),
        delivery: verified.delivery,
        upstream_id: kind.hook_upstream_id(&body),
    };
    let mut resp = runner_stub(env, &id)?
        .fetch_with_request(RunnerCall::Hook(&wake).request()?)
        .await?;
    let status = resp.status_code();
    match status {
        200 | 202 => {
            let answer: serde_json::Value = resp.json().await?;
            Ok(crate::http::json(&answer, status))
        }
        // The token is an HMAC of the provider and this id, so a verified callback
        // for a job that is not there is for one deleted or expired: acknowledged, or
        // the provider retries it for hours.
        404 => Ok(crate::http::json(
            &serde_json::json!({"taken": false, "why": "gone"}),
            200,
        )),
        other => Err(EdgeError::Internal(format!("runner answered {other}"))),
    }
}
