//! The route table, and nothing else: path + method → handler. Unknown API paths get
//! a JSON 404, known paths with the wrong method a 405 with `Allow`; everything else
//! is the playground's static files.

use worker::{Env, Method, Request, Response};

use crate::config::bindings;
use crate::error::{EdgeError, EdgeResult};
use crate::handlers::{health, jobs, results, submit};

pub async fn handle(req: Request, env: Env) -> worker::Result<Response> {
    match route(req, &env).await {
        Ok(resp) => Ok(resp),
        Err(e) => Ok(e.into_response()),
    }
}

fn only(method: &Method, allowed: Method, allow: &'static str) -> EdgeResult<()> {
    if *method == allowed || (allowed == Method::Get && *method == Method::Head) {
        Ok(())
    } else {
        Err(EdgeError::MethodNotAllowed { allow })
    }
}

async fn route(req: Request, env: &Env) -> EdgeResult<Response> {
    let path = req.path();
    let method = req.method();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match segments.as_slice() {
        ["healthz"] => {
            only(&method, Method::Get, "GET")?;
            Ok(health::get_health(env))
        }
        ["v2", "requests", id, "status"] => {
            only(&method, Method::Get, "GET")?;
            jobs::get_status(env, id).await
        }
        ["v2", "requests", id] => {
            only(&method, Method::Get, "GET")?;
            jobs::get_result(&req, env, id).await
        }
        ["v2", model] => {
            only(&method, Method::Post, "POST")?;
            let model = (*model).to_owned();
            submit::submit_job(req, env, &model).await
        }
        ["results", id, file] => {
            only(&method, Method::Get, "GET")?;
            results::get_output(&req, env, id, file).await
        }
        ["v1" | "v2" | "results" | "r", ..] | ["openapi.json"] => {
            Err(EdgeError::NotFound(format!(
                "No route for {} {}",
                method,
                path.chars().take(200).collect::<String>()
            )))
        }
        _ => Ok(env.assets(bindings::ASSETS)?.fetch_request(req).await?),
    }
}
