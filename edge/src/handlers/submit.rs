//! `POST /v2/{model}`: validate, store the control image, hand the job to its
//! `JobRunner`, answer with absolute poll URLs.

use parallax_api::{JobStatus, Model, RequestId, SubmitResponse};
use worker::{Env, Request, Response};

use crate::config::Config;
use crate::error::{EdgeError, EdgeResult};
use crate::handlers::jobs::runner_stub;
use crate::http;
use crate::input::body;
use crate::job::JobRecord;
use crate::providers::segmind;
use crate::storage::{self, keys};

/// Fills 16 bytes from the platform's CSPRNG (`crypto.getRandomValues`).
fn random_bytes() -> EdgeResult<[u8; 16]> {
    use worker::wasm_bindgen::JsCast;
    let global = js_sys::global();
    let crypto = js_sys::Reflect::get(&global, &"crypto".into())
        .map_err(|_| EdgeError::Internal("no crypto global".into()))?;
    let get = js_sys::Reflect::get(&crypto, &"getRandomValues".into())
        .ok()
        .and_then(|f| f.dyn_into::<js_sys::Function>().ok())
        .ok_or_else(|| EdgeError::Internal("no crypto.getRandomValues".into()))?;
    let array = js_sys::Uint8Array::new_with_length(16);
    get.call1(&crypto, &array)
        .map_err(|_| EdgeError::Internal("crypto.getRandomValues failed".into()))?;
    let mut out = [0u8; 16];
    array.copy_to(&mut out);
    Ok(out)
}

pub fn find_model(slug: &str) -> EdgeResult<Model> {
    Model::from_slug(slug).ok_or_else(|| {
        let known: Vec<&str> = Model::ALL.iter().map(|m| m.slug()).collect();
        EdgeError::NotFound(format!(
            "Unknown model `{}`; available: {}",
            slug.chars().take(64).collect::<String>(),
            known.join(", ")
        ))
    })
}

pub async fn submit_job(mut req: Request, env: &Env, slug: &str) -> EdgeResult<Response> {
    let model = find_model(slug)?;
    let cfg = Config::from_env(env);
    let raw = body::read(&mut req).await?;
    let mut submission = body::resolve(model, raw).await?;

    let random = random_bytes()?;
    if submission.params.seed().is_none() {
        let seed = u32::from_le_bytes([random[0], random[5], random[10], random[15]]);
        submission.params.set_seed(seed);
    }
    let id = RequestId::from_random(random_bytes()?);

    storage::put_image(
        &storage::media(env)?,
        &keys::input(&id),
        submission.image,
        submission.info.format.media_type(),
        id.as_str(),
    )
    .await?;

    let record = JobRecord::new(
        id.clone(),
        model,
        submission.params,
        submission.info,
        worker::Date::now().as_millis(),
        cfg.job_deadline_secs,
        segmind::NAME,
    );
    let resp = runner_stub(env, &id)?
        .fetch_with_request(internal_request("/start", Some(&record))?)
        .await?;
    if resp.status_code() != 201 {
        return Err(EdgeError::Internal(format!(
            "runner refused start: {}",
            resp.status_code()
        )));
    }

    let origin = http::origin(&req, cfg.public_base_url.as_deref());
    let status_url = format!("{origin}/v2/requests/{id}/status");
    let response_url = format!("{origin}/v2/requests/{id}");
    Ok(http::json(
        &SubmitResponse {
            request_id: id,
            status: JobStatus::Queued,
            poll_url: response_url.clone(),
            status_url,
            response_url,
        },
        200,
    ))
}

/// A request to a `JobRunner`'s internal routes.
pub fn internal_request<T: serde::Serialize>(path: &str, body: Option<&T>) -> EdgeResult<Request> {
    let mut init = worker::RequestInit::new();
    if let Some(body) = body {
        let text = serde_json::to_string(body).map_err(|e| EdgeError::Internal(e.to_string()))?;
        init.with_method(worker::Method::Post)
            .with_body(Some(text.into()));
    }
    Ok(Request::new_with_init(
        &format!("https://runner{path}"),
        &init,
    )?)
}
