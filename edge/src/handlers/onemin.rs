//! The 1min.ai features API over the job core (shapes in `compat::onemin`):
//! `POST /api/features` runs a Flux Depth Pro job and waits for it like the sync API;
//! `POST /api/assets` stores an image whose path `imageUrl` can name later, and
//! `GET /api/assets/{file}` serves it back.

use std::collections::HashMap;

use worker::{Env, HttpMetadata, Request, Response};

use crate::accounts::Caller;
use crate::compat::onemin::{self, ImageSource};
use crate::config::Config;
use crate::error::{EdgeError, EdgeResult};
use crate::handlers::results::{PUBLIC, fetch_image, respond_image};
use crate::handlers::submit::{
    JobRequest, cheapest_for, create_job, idempotency_key, random_bytes,
};
use crate::handlers::sync::{failed, wait_for_end};
use crate::http;
use crate::input::image::{self, ImageFormat, MAX_IMAGE_BYTES};
use crate::input::{body, multipart};
use crate::storage::{self, keys};

/// `POST /api/features`: answers the `aiRecord` once the image is in R2; a failed
/// job answers like the sync API (422 / 502 / 504 with `error` and `code`).
pub async fn run_feature(mut req: Request, env: &Env, caller: &Caller) -> EdgeResult<Response> {
    let cfg = Config::from_env(env);
    let idempotency_key = idempotency_key(&req)?;
    let bound_to = caller
        .precheck(
            env,
            cheapest_for(&cfg, onemin::model()),
            idempotency_key.as_deref(),
        )
        .await?;
    let raw = body::read_json(&mut req).await?;
    let feature = onemin::parse_feature(&raw.fields).map_err(EdgeError::fields)?;
    let mut raw = body::RawSubmission {
        fields: feature.fields,
        upload: None,
    };
    let mut asset = None;
    match feature.image {
        ImageSource::Inline(value) => {
            raw.fields.insert("control_image".into(), value.into());
        }
        ImageSource::Stored(key) => {
            raw.upload = Some(stored_image(env, &key).await?);
            asset = key.starts_with("assets/").then_some(key);
        }
    }
    let request = JobRequest {
        raw,
        idempotency_key,
        webhook: None,
        bound_to,
    };
    let id = create_job(env, &cfg, caller, onemin::model(), request)
        .await
        .map_err(|e| e.map_fields(onemin::prompt_object_errors))?;
    if let Some(key) = asset {
        // The asset now lives as long as a job made from it (`asset_refs.rs`). Unmarked,
        // it only goes sooner; the job has its own copy either way.
        if let Err(e) = crate::asset_refs::mark(env, &key, &id).await {
            worker::console_warn!("job {id}: its asset was not marked: {e}");
        }
    }
    let origin = http::origin(&req, cfg.public_base_url.as_deref());
    let job = wait_for_end(env, &cfg, &id, &origin).await?;
    if job.refund.unwrap_or(0) > 0 {
        // `x-remaining-credits` says the balance after the refund, not the charge.
        caller.refresh(env).await?;
    }
    if job.status == parallax_api::JobStatus::Failed {
        return Ok(failed(&job));
    }
    let mut resp = http::json(
        &onemin::ai_record(&job, &feature.prompt_object, &origin),
        200,
    );
    resp.headers_mut().set("x-request-id", id.as_str())?;
    Ok(resp)
}

/// The bytes of an image this edge stored (an asset or an earlier output).
async fn stored_image(env: &Env, key: &str) -> EdgeResult<Vec<u8>> {
    let gone = || {
        EdgeError::field(
            "promptObject.imageUrl",
            "names no stored image (it expired, was deleted or was never uploaded)",
        )
    };
    crate::meter::count(crate::meter::Op::R2ClassB, 1);
    let object = storage::media(env)?
        .get(key)
        .execute()
        .await?
        .ok_or_else(gone)?;
    if key.starts_with("assets/")
        && !crate::asset_refs::alive(env, key, object.uploaded().as_millis()).await?
    {
        return Err(gone());
    }
    let body = object.body().ok_or_else(gone)?;
    Ok(body.bytes().await?)
}

/// `POST /api/assets`: a multipart form whose `asset` part is a JPEG, PNG or WebP.
/// An upload counts against the submit rate limit (it stores up to 10 MB publicly),
/// before its body is read.
pub async fn upload_asset(mut req: Request, env: &Env, caller: &Caller) -> EdgeResult<Response> {
    caller.count_upload(env).await?;
    let (content_type, bytes) = body::read_bytes(&mut req).await?;
    let boundary = multipart::boundary(&content_type).ok_or_else(|| {
        EdgeError::bad_request("Send a multipart/form-data body with the image as the `asset` part")
    })?;
    let parts = multipart::parse(&bytes, &boundary).map_err(EdgeError::bad_request)?;
    let data = parts
        .into_iter()
        .find(|p| p.name == "asset" && p.filename.is_some())
        .map(|p| p.data)
        .ok_or_else(|| EdgeError::field("asset", "is required (a file part)"))?;
    if data.len() > MAX_IMAGE_BYTES {
        return Err(EdgeError::field(
            "asset",
            format!("is larger than {} MB", MAX_IMAGE_BYTES / 1_048_576),
        ));
    }
    let info = image::inspect(&data).map_err(|e| EdgeError::field("asset", e))?;
    let id: String = random_bytes()?.iter().map(|b| format!("{b:02x}")).collect();
    let key = keys::asset(&id, info.format.ext());
    let size = data.len();
    let meta = HttpMetadata {
        content_type: Some(info.format.media_type().to_owned()),
        cache_control: Some("private, max-age=86400".to_owned()),
        ..HttpMetadata::default()
    };
    let custom = HashMap::from([("owner".to_owned(), caller.account.clone())]);
    crate::meter::count(crate::meter::Op::R2ClassA, 1);
    storage::media(env)?
        .put(&key, data)
        .http_metadata(meta)
        .custom_metadata(custom)
        .execute()
        .await?;
    let origin = http::origin(&req, Config::from_env(env).public_base_url.as_deref());
    Ok(http::json(
        &onemin::asset(&key, info.format, size, &origin),
        200,
    ))
}

/// `GET /api/assets/{id}.{ext}`: an uploaded image (the random id is the capability).
pub async fn get_asset(req: &Request, env: &Env, file: &str) -> EdgeResult<Response> {
    let not_found = || EdgeError::NotFound("No such asset (unknown or expired)".into());
    let (id, ext) = file.split_once('.').ok_or_else(not_found)?;
    let format = ImageFormat::from_ext(ext)
        .filter(|f| f.ext() == ext && onemin::is_asset_id(id))
        .ok_or_else(not_found)?;
    let key = keys::asset(id, format.ext());
    let object = fetch_image(env, &key).await?;
    if !crate::asset_refs::alive(env, &key, object.uploaded().as_millis()).await? {
        return Err(not_found());
    }
    respond_image(req, object, file, PUBLIC)
}
