//! The route table, and nothing else: path + method → handler. API routes identify
//! the caller first and carry `x-remaining-credits`; unknown API paths get a JSON 404,
//! known paths with the wrong method a 405 with `Allow`; everything else is the
//! playground's static files.

use futures_util::future::join;
use worker::{Env, Request, Response};

use crate::accounts::{self, Caller};
use crate::bindings;
use crate::config::Config;
use crate::error::{EdgeError, EdgeResult};
use crate::handlers::{
    credits, eachlabs, health, hooks, jobs, onemin, openapi, results, share, submit, sync,
};

pub async fn handle(req: Request, env: Env) -> worker::Result<Response> {
    match route(req, &env).await {
        Ok(resp) => Ok(resp),
        Err(e) => Ok(e.into_response()),
    }
}

/// An API route that needs a caller.
enum Api {
    Submit(String),
    Sync(String),
    /// With the `wait` of a held read.
    Status(String, Option<parallax_api::StatusWait>),
    /// Server-sent status events.
    Events(String),
    Result(String),
    Delete(String),
    Cancel(String),
    /// What the share page shows (owner only).
    Share(String),
    List,
    /// The key's balance and credit history.
    Credits,
    /// Eachlabs: `POST /v1/prediction/`, `GET /v1/prediction/{id}`.
    CreatePrediction,
    Prediction(String),
    /// 1min.ai: `POST /api/features`, `POST /api/assets`.
    Feature,
    UploadAsset,
}

fn allow(method: &str, allowed: &[&str], header: &'static str) -> EdgeResult<()> {
    let head_ok = method == "HEAD" && allowed.contains(&"GET");
    if allowed.contains(&method) || head_ok {
        Ok(())
    } else {
        Err(EdgeError::MethodNotAllowed { allow: header })
    }
}

fn not_found(method: &str, path: &str) -> EdgeError {
    EdgeError::NotFound(format!(
        "No route for {method} {}",
        path.chars().take(200).collect::<String>()
    ))
}

async fn route(req: Request, env: &Env) -> EdgeResult<Response> {
    let path = req.path();
    // The raw method: worker's `Method` maps unknown verbs (e.g. QUERY) to GET.
    let method = req.inner().method().to_ascii_uppercase();
    let method = method.as_str();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let api = match segments.as_slice() {
        ["healthz"] => {
            allow(method, &["GET"], "GET")?;
            return Ok(health::get_health(env).await);
        }
        ["openapi.json"] => {
            allow(method, &["GET"], "GET")?;
            return Ok(openapi::get_openapi(&req, env));
        }
        ["results", id, file] => {
            allow(method, &["GET"], "GET")?;
            crate::media_limit::check(&req, env).await?;
            return results::get_output(&req, env, id, file).await;
        }
        // Providers' callbacks: no caller (they carry the job's token and their own
        // signature instead, checked before anything is woken).
        ["hooks", provider, id] => {
            allow(method, &["POST"], "POST")?;
            return hooks::receive(req, env, provider, id).await;
        }
        ["r", id] => {
            allow(method, &["GET"], "GET")?;
            // Opened without a key by anyone: limited per client address first, so a
            // refused client wakes no runner.
            accounts::touch_public(&req, env, &Config::from_env(env)).await?;
            return share::get_share_page(&req, env, id).await;
        }
        ["v2", "requests"] => {
            allow(method, &["GET"], "GET")?;
            Api::List
        }
        ["v2", "credits"] => {
            allow(method, &["GET"], "GET")?;
            Api::Credits
        }
        ["v2", "requests", id, "status"] => {
            allow(method, &["GET"], "GET")?;
            Api::Status((*id).to_owned(), jobs::status_wait(&req)?)
        }
        ["v2", "requests", id, "events"] => {
            allow(method, &["GET"], "GET")?;
            Api::Events((*id).to_owned())
        }
        ["v2", "requests", id, "cancel"] => {
            allow(method, &["POST"], "POST")?;
            Api::Cancel((*id).to_owned())
        }
        ["v2", "requests", id, "share"] => {
            allow(method, &["POST"], "POST")?;
            Api::Share((*id).to_owned())
        }
        ["v2", "requests", id] => {
            allow(method, &["GET", "DELETE"], "GET, DELETE")?;
            if method == "DELETE" {
                Api::Delete((*id).to_owned())
            } else {
                Api::Result((*id).to_owned())
            }
        }
        ["v1", "prediction"] | ["v1", "prediction", ""] => {
            allow(method, &["POST"], "POST")?;
            Api::CreatePrediction
        }
        ["v1", "prediction", id] | ["v1", "prediction", id, ""] => {
            allow(method, &["GET"], "GET")?;
            Api::Prediction((*id).to_owned())
        }
        ["api", "features"] => {
            allow(method, &["POST"], "POST")?;
            Api::Feature
        }
        ["api", "assets"] => {
            allow(method, &["POST"], "POST")?;
            Api::UploadAsset
        }
        ["api", "assets", file] => {
            allow(method, &["GET"], "GET")?;
            crate::media_limit::check(&req, env).await?;
            return onemin::get_asset(&req, env, file).await;
        }
        ["v2", model] => {
            allow(method, &["POST"], "POST")?;
            Api::Submit((*model).to_owned())
        }
        ["v1", model] => {
            allow(method, &["POST"], "POST")?;
            Api::Sync((*model).to_owned())
        }
        ["__dev", "ledger"] if dev_ops(env) => {
            allow(method, &["POST"], "POST")?;
            return dev_ledger(req, env).await;
        }
        ["v1" | "v2" | "api" | "results" | "r" | "hooks", ..] => {
            return Err(not_found(method, &path));
        }
        _ => return static_file(req, env).await,
    };
    let cfg = Config::from_env(env);
    let caller = match &api {
        Api::Status(..) | Api::Events(_) | Api::Result(_) | Api::Prediction(_) => {
            accounts::identify_for_read(&req, env, &cfg).await?
        }
        _ => Some(accounts::identify(&req, env, &cfg).await?),
    };
    let Some(caller) = caller else {
        // A public read by id (a share link opened by anyone), limited per client
        // address (IPv6: per /56) first, so a refused client wakes no runner. A held
        // read is counted by its hold, which also takes the address's lease.
        if let Api::Status(id, Some(wait)) = &api {
            let reader = accounts::public_reader(&req, &cfg)?;
            return jobs::get_held_status(&req, env, &reader, id, *wait).await;
        }
        accounts::touch_public(&req, env, &cfg).await?;
        return match &api {
            Api::Status(id, _) => jobs::get_status(&req, env, id).await,
            Api::Events(id) => {
                let reader = accounts::public_reader(&req, &cfg)?;
                jobs::stream_status(&req, env, reader, id).await
            }
            Api::Result(id) => jobs::get_result(&req, env, None, id).await,
            Api::Prediction(id) => eachlabs::get_prediction(&req, env, None, id).await,
            _ => Err(EdgeError::Internal(
                "public read of a non-read route".into(),
            )),
        };
    };
    let mut resp = match dispatch(api, req, env, &caller).await {
        Ok(resp) => resp,
        Err(e) => e.into_response(),
    };
    caller.stamp(&mut resp);
    Ok(resp)
}

async fn dispatch(api: Api, req: Request, env: &Env, caller: &Caller) -> EdgeResult<Response> {
    match api {
        Api::Submit(model) => submit::submit_job(req, env, caller, &model).await,
        Api::Sync(model) => sync::run_sync(req, env, caller, &model).await,
        // Reads count against the rate limit (the account's Ledger) and are answered
        // by the job's runner: two Durable Objects, asked at once. A refused read is
        // still refused.
        Api::Status(id, None) => {
            let (touched, status) = join(caller.touch(env), jobs::get_status(&req, env, &id)).await;
            touched?;
            status
        }
        // A held read is counted (and maybe refused) before it is held, in the same
        // Ledger call that takes its lease on one of the account's held reads.
        Api::Status(id, Some(wait)) => {
            jobs::get_held_status(&req, env, &caller.reader(), &id, wait).await
        }
        Api::Result(id) => {
            let (touched, result) = join(
                caller.touch(env),
                jobs::get_result(&req, env, Some(caller), &id),
            )
            .await;
            touched?;
            result
        }
        Api::Prediction(id) => {
            let (touched, prediction) = join(
                caller.touch(env),
                eachlabs::get_prediction(&req, env, Some(caller), &id),
            )
            .await;
            touched?;
            prediction
        }
        Api::Events(id) => {
            caller.touch(env).await?;
            jobs::stream_status(&req, env, caller.reader(), &id).await
        }
        Api::CreatePrediction => eachlabs::create_prediction(req, env, caller).await,
        Api::Feature => onemin::run_feature(req, env, caller).await,
        Api::UploadAsset => onemin::upload_asset(req, env, caller).await,
        Api::Delete(id) => {
            caller.touch(env).await?;
            jobs::delete_job(&req, env, caller, &id).await
        }
        Api::Cancel(id) => {
            caller.touch(env).await?;
            jobs::cancel_job(&req, env, caller, &id).await
        }
        Api::Share(id) => {
            caller.touch(env).await?;
            jobs::share_job(req, env, caller, &id).await
        }
        Api::List => jobs::list_jobs(&req, env, caller).await,
        Api::Credits => credits::get_credits(&req, env, caller).await,
    }
}

/// Whether this stack serves `/__dev/ledger`: only `cargo xtask test` and `bench`
/// set `LEDGER_DEV_OPS=on` (wrangler.toml sets it nowhere, so a deployment never
/// has it, and the Ledger refuses dev operations without it too).
fn dev_ops(env: &Env) -> bool {
    env.var("LEDGER_DEV_OPS")
        .is_ok_and(|v| v.to_string() == "on")
}

/// `POST /__dev/ledger` (dev and bench stacks only): one dev operation on the calling
/// key's Ledger (`{"op": "dev_seed", "jobs": 100000}`, `dev_legacy`, `dev_stats`).
async fn dev_ledger(mut req: Request, env: &Env) -> EdgeResult<Response> {
    let cfg = Config::from_env(env);
    let caller = accounts::identify(&req, env, &cfg).await?;
    let op: crate::objects::ledger::Op = req
        .json()
        .await
        .map_err(|e| EdgeError::bad_request(format!("not a ledger op: {e}")))?;
    if !matches!(
        op,
        crate::objects::ledger::Op::DevSeed { .. }
            | crate::objects::ledger::Op::DevLegacy { .. }
            | crate::objects::ledger::Op::DevStats
            | crate::objects::ledger::Op::DevReserve { .. }
            // Read-only: the audit's look at a gone job's charge row.
            | crate::objects::ledger::Op::Charge { .. }
    ) {
        return Err(EdgeError::bad_request("only dev_* and charge operations"));
    }
    let reply = caller.dev_op(env, op).await?;
    Ok(crate::http::json(&reply, 200))
}

/// The playground's files; HTML gets the security headers.
///
/// Revalidation is answered here, not by the assets binding: its `304` to a conditional
/// request has no body, so a CSP computed from it would lack the inline bootstrap's
/// hash, and the browser, which merges a 304's headers into its cached copy, would then
/// block that script (a blank page on every return visit). So the assets are always
/// asked unconditionally, the CSP comes from the full HTML, and a matching
/// `If-None-Match` gets a 304 carrying that same CSP.
async fn static_file(req: Request, env: &Env) -> EdgeResult<Response> {
    let build_file = is_build_file(&req.path());
    let if_none_match = req.headers().get("if-none-match")?;
    let headers = req.headers().clone();
    headers.delete("if-none-match")?;
    headers.delete("if-modified-since")?;
    let mut init = worker::RequestInit::new();
    init.with_method(req.method()).with_headers(headers);
    let unconditional = Request::new_with_init(req.url()?.as_ref(), &init)?;
    let mut resp = env
        .assets(bindings::ASSETS)?
        .fetch_request(unconditional)
        .await?;
    let status = resp.status_code();
    let headers = resp.headers().clone();
    let is_html = headers
        .get("content-type")?
        .is_some_and(|t| t.starts_with("text/html"));
    let fresh = status == 200
        && matches!(
            (&if_none_match, headers.get("etag")?),
            (Some(inm), Some(etag)) if crate::security::etag_matches(inm, &etag)
        );
    if !is_html {
        if status == 200 && build_file {
            // Named by their content hash: never revalidated (a missing one is the
            // SPA's HTML fallback, handled below, never cached this way).
            headers.set("cache-control", "public, max-age=31536000, immutable")?;
        }
        if fresh {
            return Ok(not_modified(&headers)?);
        }
        return Ok(resp.with_headers(headers));
    }
    let html = resp.text().await?;
    crate::security::set_html_headers(&headers, &html)?;
    if fresh {
        return Ok(not_modified(&headers)?);
    }
    Ok(Response::builder()
        .with_status(status)
        .with_headers(headers)
        .fixed(html.into_bytes()))
}

/// A file of the playground's build named by its content hash (trunk's `filehash`:
/// `/parallax-app-<hash>.js`, `/parallax-app-<hash>_bg.wasm`, `/style-<hash>.css`,
/// the hash a `u64` in lowercase hex). `public/` has no script, style or wasm.
fn is_build_file(path: &str) -> bool {
    let Some(name) = path.strip_prefix('/').filter(|n| !n.contains('/')) else {
        return false;
    };
    let Some(stem) = [".css", "_bg.wasm", ".js"]
        .iter()
        .find_map(|ext| name.strip_suffix(ext))
    else {
        return false;
    };
    stem.rsplit_once('-').is_some_and(|(_, hash)| {
        (1..=16).contains(&hash.len())
            && hash
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// A `304 Not Modified` with the full response's headers (ETag, caching, and for HTML
/// the CSP of the full page), minus those describing a body.
fn not_modified(headers: &worker::Headers) -> worker::Result<Response> {
    for h in ["content-length", "content-encoding"] {
        headers.delete(h)?;
    }
    Ok(Response::builder()
        .with_status(304)
        .with_headers(headers.clone())
        .empty())
}

#[cfg(test)]
mod tests {
    use super::is_build_file;

    #[test]
    fn only_trunks_hashed_files_count_as_build_files() {
        for path in [
            "/parallax-app-3f2a9c0d1e4b5a67.js",
            "/parallax-app-3f2a9c0d1e4b5a67_bg.wasm",
            "/style-9e1f00aa.css",
        ] {
            assert!(is_build_file(path), "{path}");
        }
        for path in [
            "/",
            "/index.html",
            "/icon-192.png",
            "/samples/rocket.jpg",
            "/parallax-app.js",
            "/parallax-app-XYZ.js",
            "/parallax-app-3f2a9c0d1e4b5a67aa.js",
            "/sub/style-9e1f.css",
            "/r/parallax-app-3f2a.js",
        ] {
            assert!(!is_build_file(path), "{path}");
        }
    }
}
