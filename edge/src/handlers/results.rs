//! `GET /results/{id}/{n}.{ext}`: output bytes from R2, immutable, with an ETag; and
//! `GET /results/{id}/control`, the control image: a person's photo, private to the
//! job's owner. It opens through a signed link (`?exp=…&sig=…`, see
//! `control_link.rs`: the owner's reads and the providers get one) or with the owner's
//! API key, never cached by anyone but that browser, and is gone with the job; and
//! `GET /results/{id}/depth.png`, the job's own depth map ([`get_depth`]).

use parallax_api::RequestId;
use worker::{Env, Headers, Request, Response};

use crate::accounts;
use crate::config::Config;
use crate::control_link;
use crate::error::{EdgeError, EdgeResult};
use crate::handlers::jobs;
use crate::input::image::ImageFormat;
use crate::storage::{self, keys};

fn not_found() -> EdgeError {
    EdgeError::NotFound("No such result (unknown or expired)".into())
}

/// Outputs (and 1min.ai assets): public for the retention period, the same bytes
/// forever.
pub const PUBLIC: &str = "public, max-age=31536000, immutable";
/// The control image: only the asking browser may keep it, and not beyond this view
/// (a link expires; a deleted job's photo must not be served from any cache).
const PRIVATE: &str = "private, no-store";

/// Parses `{n}.{ext}` with n in 0..4 and a known image extension.
pub fn parse_file(file: &str) -> Option<(usize, ImageFormat)> {
    let (digits, ext) = file.split_once('.')?;
    let n: usize = digits.parse().ok()?;
    if n >= 4 || n.to_string() != digits {
        return None;
    }
    let format = ImageFormat::from_ext(ext).filter(|f| f.ext() == ext)?;
    Some((n, format))
}

/// `GET /results/{id}/{n}.{ext}` (an output) or `GET /results/{id}/control` (the
/// control image it was made from, see [`get_control`]).
pub async fn get_output(req: &Request, env: &Env, id: &str, file: &str) -> EdgeResult<Response> {
    let id = RequestId::parse(id).ok_or_else(not_found)?;
    if file == "control" {
        return get_control(req, env, &id).await;
    }
    if file == "depth.png" {
        return get_depth(req, env, &id).await;
    }
    let (n, format) = parse_file(file).ok_or_else(not_found)?;
    let key = keys::output(&id, n, format.ext());
    let name = format!("parallax-{id}-{n}.{}", format.ext());
    serve_image(req, env, &key, &name, PUBLIC).await
}

/// The control image, to a signed link that verifies for this job now, or to a
/// request with the owner's API key; 403 to anyone else (a link that does not verify
/// reads nothing), 404 once the job is gone.
async fn get_control(req: &Request, env: &Env, id: &RequestId) -> EdgeResult<Response> {
    let name = format!("parallax-{id}-control");
    if !signed_link(req, env, id)? {
        let cfg = Config::from_env(env);
        // Only a key proves ownership here (an anonymous owner opens it through the
        // link its token's reads carry).
        let caller = accounts::identify_for_read(req, env, &cfg)
            .await?
            .filter(|c| c.keyed);
        let job = crate::objects::runner::client::load(env, id.as_str()).await?;
        let claim = jobs::Claim {
            caller: caller.as_ref(),
            token: None,
        };
        if !jobs::owns(&cfg, &claim, &job) {
            return Err(EdgeError::Forbidden(
                "The control image is private: it opens through its owner's signed link or with the owner's API key".into(),
            ));
        }
    }
    serve_image(req, env, &keys::input(id), &name, PRIVATE).await
}

/// A generation job's own depth map (`objects/runner/depth.rs`): to anyone while its
/// owner shares it (`share_control` `depth` or `photo`, as `depth_image` in the result
/// view), otherwise only to its owner, through a signed link (the control image's:
/// one job, one expiry; both are the owner's) or with the owner's API key; 403 to
/// anyone else, 404 once the job is gone. Since the owner may stop sharing it, no
/// cache may keep it without asking again (`private, no-cache`, revalidated by ETag).
async fn get_depth(req: &Request, env: &Env, id: &RequestId) -> EdgeResult<Response> {
    let name = format!("parallax-{id}-depth.png");
    if !signed_link(req, env, id)? {
        use parallax_api::ShareControl;
        let cfg = Config::from_env(env);
        let job = crate::objects::runner::client::load(env, id.as_str()).await?;
        let shared = !job.model.is_preview()
            && matches!(job.share_control, ShareControl::Depth | ShareControl::Photo);
        if !shared {
            let caller = accounts::identify_for_read(req, env, &cfg)
                .await?
                .filter(|c| c.keyed);
            let claim = jobs::Claim {
                caller: caller.as_ref(),
                token: None,
            };
            if !jobs::owns(&cfg, &claim, &job) {
                return Err(EdgeError::Forbidden(
                    "This depth map is not shared: it opens through its owner's signed link or with the owner's API key".into(),
                ));
            }
        }
    }
    serve_image(req, env, &keys::depth_map(id), &name, "private, no-cache").await
}

/// Whether this control image request comes through a signed link: `false` without
/// `exp` and `sig`, `true` when they verify for this job now, 403 otherwise (forged,
/// another job's, expired, or links not enabled here).
fn signed_link(req: &Request, env: &Env, id: &RequestId) -> EdgeResult<bool> {
    let url = req.url()?;
    let (mut exp, mut sig) = (None, None);
    for (k, v) in url.query_pairs() {
        match k.as_ref() {
            "exp" => exp = Some(v.into_owned()),
            "sig" => sig = Some(v.into_owned()),
            _ => {}
        }
    }
    if exp.is_none() && sig.is_none() {
        return Ok(false);
    }
    let refused = || EdgeError::Forbidden("This control image link is invalid or expired".into());
    let secret = Config::from_env(env)
        .control_link_secret
        .ok_or_else(refused)?;
    let now = worker::Date::now().as_millis() / 1000;
    control_link::verify(&secret, id, exp.as_deref(), sig.as_deref(), now)
        .map_err(|_| refused())?;
    Ok(true)
}

/// Serves the image stored at R2 `key` with an ETag and `cache_control`; 404 when
/// absent.
pub async fn serve_image(
    req: &Request,
    env: &Env,
    key: &str,
    download_name: &str,
    cache_control: &str,
) -> EdgeResult<Response> {
    let object = fetch_image(env, key).await?;
    respond_image(req, object, download_name, cache_control)
}

/// The object at R2 `key`, 404 when absent.
pub async fn fetch_image(env: &Env, key: &str) -> EdgeResult<worker::Object> {
    crate::meter::count(crate::meter::Op::R2ClassB, 1);
    storage::media(env)?
        .get(key)
        .execute()
        .await?
        .ok_or_else(not_found)
}

/// An image object as the answer, with an ETag and `cache_control`.
pub fn respond_image(
    req: &Request,
    object: worker::Object,
    download_name: &str,
    cache_control: &str,
) -> EdgeResult<Response> {
    let content_type = object
        .http_metadata()
        .content_type
        .filter(|t| t.starts_with("image/"))
        .ok_or_else(not_found)?;
    let etag = object.http_etag();
    let headers = Headers::new();
    headers.set("content-type", &content_type)?;
    headers.set("cache-control", cache_control)?;
    headers.set("etag", &etag)?;
    headers.set("x-content-type-options", "nosniff")?;
    headers.set(
        "content-disposition",
        &format!("inline; filename=\"{download_name}\""),
    )?;
    if req.headers().get("if-none-match")?.as_deref() == Some(etag.as_str()) {
        return Ok(Response::builder()
            .with_status(304)
            .with_headers(headers)
            .empty());
    }
    let body = object.body().ok_or_else(not_found)?;
    Ok(Response::from_body(body.response_body()?)?.with_headers(headers))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_canonical_output_names_are_accepted() {
        assert_eq!(parse_file("0.jpg"), Some((0, ImageFormat::Jpeg)));
        assert_eq!(parse_file("3.webp"), Some((3, ImageFormat::Webp)));
        for bad in [
            "4.jpg",
            "00.jpg",
            "0.jpeg",
            "0.gif",
            "../0.jpg",
            "0",
            "-1.png",
            "0.png.png",
        ] {
            assert_eq!(parse_file(bad), None, "{bad}");
        }
    }
}
