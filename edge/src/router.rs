//! The route table, and nothing else: path + method → handler. API routes identify
//! the caller first and carry `x-remaining-credits`; unknown API paths get a JSON 404,
//! known paths with the wrong method a 405 with `Allow`; everything else is the
//! playground's static files.

use futures_util::future::join;
use worker::{Env, Request, Response};

use crate::accounts::{self, Caller};
use crate::config::{Config, bindings};
use crate::error::{EdgeError, EdgeResult};
use crate::handlers::{eachlabs, health, jobs, onemin, openapi, results, share, submit, sync};

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
    Status(String),
    Result(String),
    Delete(String),
    List,
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
            return results::get_output(&req, env, id, file).await;
        }
        ["r", id] => {
            allow(method, &["GET"], "GET")?;
            return share::get_share_page(&req, env, id).await;
        }
        ["v2", "requests"] => {
            allow(method, &["GET"], "GET")?;
            Api::List
        }
        ["v2", "requests", id, "status"] => {
            allow(method, &["GET"], "GET")?;
            Api::Status((*id).to_owned())
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
        ["v1" | "v2" | "api" | "results" | "r", ..] => return Err(not_found(method, &path)),
        _ => return static_file(req, env).await,
    };
    let cfg = Config::from_env(env);
    let caller = match &api {
        Api::Status(_) | Api::Result(_) | Api::Prediction(_) => {
            accounts::identify_for_read(&req, env, &cfg).await?
        }
        _ => Some(accounts::identify(&req, env, &cfg).await?),
    };
    let Some(caller) = caller else {
        // A public read by id (a share link opened by anyone).
        return match &api {
            Api::Status(id) => jobs::get_status(env, id).await,
            Api::Result(id) => jobs::get_result(&req, env, id).await,
            Api::Prediction(id) => eachlabs::get_prediction(&req, env, id).await,
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
        Api::Status(id) => {
            let (touched, status) = join(caller.touch(env), jobs::get_status(env, &id)).await;
            touched?;
            status
        }
        Api::Result(id) => {
            let (touched, result) = join(caller.touch(env), jobs::get_result(&req, env, &id)).await;
            touched?;
            result
        }
        Api::Prediction(id) => {
            let (touched, prediction) =
                join(caller.touch(env), eachlabs::get_prediction(&req, env, &id)).await;
            touched?;
            prediction
        }
        Api::CreatePrediction => eachlabs::create_prediction(req, env, caller).await,
        Api::Feature => onemin::run_feature(req, env, caller).await,
        Api::UploadAsset => onemin::upload_asset(req, env, caller).await,
        Api::Delete(id) => {
            caller.touch(env).await?;
            jobs::delete_job(env, caller, &id).await
        }
        Api::List => jobs::list_jobs(&req, env, caller).await,
    }
}

/// The playground's files; HTML gets the security headers.
async fn static_file(req: Request, env: &Env) -> EdgeResult<Response> {
    let mut resp = env.assets(bindings::ASSETS)?.fetch_request(req).await?;
    let is_html = resp
        .headers()
        .get("content-type")?
        .is_some_and(|t| t.starts_with("text/html"));
    if !is_html {
        return Ok(resp);
    }
    let status = resp.status_code();
    let headers = resp.headers().clone();
    let html = resp.text().await?;
    crate::security::set_html_headers(&headers, &html)?;
    Ok(Response::builder()
        .with_status(status)
        .with_headers(headers)
        .fixed(html.into_bytes()))
}
