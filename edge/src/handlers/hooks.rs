//! `POST /hooks/{provider}/{id}?token=…`: a provider's callback for a job (see
//! `hooks.rs`). Checked here, before anything is woken: the job's token, then the
//! provider's own signature and timestamp. A refused callback is a 4xx JSON error and
//! reaches no runner and no upstream. A verified one wakes the job's runner, which
//! acknowledges a delivery it took before and changes nothing (200: a provider's own
//! retry carries the same delivery id, and anything but a 2xx makes it retry again),
//! leaves a finished job as it is (200), and otherwise polls the upstream at once to
//! confirm (202). The answer comes before
//! that poll, so providers (which retry slow answers) get it fast.

use std::cell::RefCell;

use ed25519_dalek::VerifyingKey;
use futures_util::StreamExt;
use parallax_api::RequestId;
use worker::{Env, Request, Response};

use crate::config::Config;
use crate::error::{EdgeError, EdgeResult};
use crate::handlers::jobs::runner_stub;
use crate::handlers::submit::internal_request;
use crate::hooks::{self, FalHeaders, Hooks, Refusal, Verified, Wake};
use crate::providers::{self, HttpMethod, Kind, UpstreamRequest};

/// fal's keys are fetched at most this often per isolate (fal suggests caching them).
const JWKS_TTL_MS: u64 = 3_600_000;
const JWKS_TIMEOUT_MS: u32 = 10_000;
/// After a failed fetch of fal's keys, deliveries are refused without another fetch
/// for this long: a flood of well-formed deliveries while fal's endpoint is down (or
/// slow) costs one 10-second fetch per isolate per this much time, not one each.
/// fal retries its deliveries, and the backstop polls the job anyway.
const JWKS_FAILURE_TTL_MS: u64 = 30_000;

thread_local! {
    /// (JWKS URL, fetched at, keys) of the last fetch in this isolate.
    static JWKS: RefCell<Option<(String, u64, Vec<VerifyingKey>)>> = const { RefCell::new(None) };
    /// (JWKS URL, when) of the last failed fetch in this isolate.
    static JWKS_FAILED: RefCell<Option<(String, u64)>> = const { RefCell::new(None) };
}

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

/// Whether a failed fetch of `failed_url` at `failed_at` still stands for `url` at
/// `now`: no new fetch is made until it lapses.
fn failed_lately(failed_url: &str, failed_at: u64, url: &str, now: u64) -> bool {
    failed_url == url && now.saturating_sub(failed_at) < JWKS_FAILURE_TTL_MS
}

/// fal's public keys, from this isolate's cache or fetched.
async fn fal_keys(url: &str) -> EdgeResult<Vec<VerifyingKey>> {
    let now = now_ms();
    let cached = JWKS.with(|c| {
        c.borrow()
            .as_ref()
            .filter(|(u, at, _)| u == url && now.saturating_sub(*at) < JWKS_TTL_MS)
            .map(|(_, _, keys)| keys.clone())
    });
    if let Some(keys) = cached {
        return Ok(keys);
    }
    let failed_lately = JWKS_FAILED.with(|f| {
        f.borrow()
            .as_ref()
            .is_some_and(|(u, at)| failed_lately(u, *at, url, now))
    });
    if failed_lately {
        return Err(EdgeError::UpstreamFailed(
            "fal's webhook keys could not be fetched; retry later".into(),
        ));
    }
    let req = UpstreamRequest {
        method: HttpMethod::Get,
        url: url.to_owned(),
        headers: vec![("accept", "application/json".to_owned())],
        body: None,
    };
    let unavailable = |why: String| {
        worker::console_warn!("fal webhook keys: {why}");
        JWKS_FAILED.with(|f| *f.borrow_mut() = Some((url.to_owned(), now)));
        EdgeError::UpstreamFailed("fal's webhook keys could not be fetched; retry later".into())
    };
    let resp = providers::send("fal jwks", &req, JWKS_TIMEOUT_MS)
        .await
        .map_err(|e| unavailable(format!("{e:?}")))?;
    if resp.status != 200 {
        return Err(unavailable(format!("HTTP {}", resp.status)));
    }
    let keys = hooks::parse_jwks(&resp.body);
    if keys.is_empty() {
        return Err(unavailable("no Ed25519 key in the JWKS".into()));
    }
    JWKS.with(|c| *c.borrow_mut() = Some((url.to_owned(), now, keys.clone())));
    Ok(keys)
}

/// The provider's own check of one delivery.
async fn verify(
    hooks: &Hooks,
    kind: Kind,
    id: &RequestId,
    req: &Request,
    body: &[u8],
) -> EdgeResult<Verified> {
    let now_secs = now_ms() / 1000;
    match kind {
        Kind::Replicate => {
            let secret = hooks.replicate_secret.as_ref().ok_or_else(not_found)?;
            hooks::check_standard(
                secret,
                header(req, "webhook-id")?.as_deref(),
                header(req, "webhook-timestamp")?.as_deref(),
                header(req, "webhook-signature")?.as_deref(),
                body,
                now_secs,
            )
            .map_err(refused)
        }
        Kind::Fal => {
            let (request_id, user_id, timestamp, signature) = (
                header(req, "x-fal-webhook-request-id")?,
                header(req, "x-fal-webhook-user-id")?,
                header(req, "x-fal-webhook-timestamp")?,
                header(req, "x-fal-webhook-signature")?,
            );
            let h = FalHeaders {
                request_id: request_id.as_deref(),
                user_id: user_id.as_deref(),
                timestamp: timestamp.as_deref(),
                signature: signature.as_deref(),
            };
            // The headers' form first: a bare request fetches no keys.
            hooks::check_fal_headers(h, hooks.fal_user_id.as_deref()).map_err(refused)?;
            let keys = fal_keys(&hooks.fal_jwks_url).await?;
            hooks::check_fal(&keys, h, body, now_secs).map_err(refused)
        }
        Kind::Bfl => hooks::check_bfl(hooks, id, header(req, "x-webhook-secret")?.as_deref(), body)
            .map_err(refused),
        Kind::Segmind | Kind::Parallax | Kind::ComfyUi => Err(not_found()),
    }
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
        .filter(|k| hooks.pushes(*k))
        .ok_or_else(not_found)?;
    let id = RequestId::parse(id).ok_or_else(not_found)?;
    let token = req
        .url()?
        .query_pairs()
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.into_owned());
    hooks
        .check_token(kind, &id, token.as_deref())
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
        upstream_id: hooks::upstream_id(kind, &body),
    };
    let mut resp = runner_stub(env, &id)?
        .fetch_with_request(internal_request("/hook", Some(&wake))?)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_jwks_fetch_is_remembered_for_its_url_for_30_s() {
        let url = "https://rest.alpha.fal.ai/.well-known/jwks.json";
        assert!(failed_lately(url, 1_000, url, 1_000));
        assert!(failed_lately(
            url,
            1_000,
            url,
            1_000 + JWKS_FAILURE_TTL_MS - 1
        ));
        assert!(!failed_lately(url, 1_000, url, 1_000 + JWKS_FAILURE_TTL_MS));
        assert!(!failed_lately("https://other/jwks", 1_000, url, 1_001));
        assert_eq!(JWKS_FAILURE_TTL_MS, 30_000);
    }
}
