//! `GET /results/{id}/{n}.{ext}`: output bytes from R2, immutable, with an ETag; and
//! `GET /results/{id}/control`, the control image, which providers fetch through a
//! signed link (`?exp=…&sig=…`, see `control_link.rs`).

use parallax_api::RequestId;
use worker::{Env, Headers, Request, Response};

use crate::config::Config;
use crate::control_link;
use crate::error::{EdgeError, EdgeResult};
use crate::input::image::ImageFormat;
use crate::storage::{self, keys};

fn not_found() -> EdgeError {
    EdgeError::NotFound("No such result (unknown or expired)".into())
}

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
/// control image it was made from). A control image request that carries a link's
/// `exp` or `sig` must verify; a refused one is 403 and reads nothing.
pub async fn get_output(req: &Request, env: &Env, id: &str, file: &str) -> EdgeResult<Response> {
    let id = RequestId::parse(id).ok_or_else(not_found)?;
    let (key, download_name) = if file == "control" {
        let name = format!("parallax-{id}-control");
        if signed_link(req, env, &id)? {
            let resp = serve_image(req, env, &keys::input(&id), &name).await?;
            // A link expires: no cache may keep serving it.
            resp.headers().set("cache-control", "private, no-store")?;
            return Ok(resp);
        }
        (keys::input(&id), name)
    } else {
        let (n, format) = parse_file(file).ok_or_else(not_found)?;
        (
            keys::output(&id, n, format.ext()),
            format!("parallax-{id}-{n}.{}", format.ext()),
        )
    };
    serve_image(req, env, &key, &download_name).await
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
    let signer = Config::from_env(env).control_links.ok_or_else(refused)?;
    let now = worker::Date::now().as_millis() / 1000;
    control_link::verify(&signer.secret, id, exp.as_deref(), sig.as_deref(), now)
        .map_err(|_| refused())?;
    Ok(true)
}

/// Serves the image stored at R2 `key`, immutable, with an ETag; 404 when absent.
pub async fn serve_image(
    req: &Request,
    env: &Env,
    key: &str,
    download_name: &str,
) -> EdgeResult<Response> {
    crate::meter::count(crate::meter::Op::R2ClassB, 1);
    let object = storage::media(env)?
        .get(key)
        .execute()
        .await?
        .ok_or_else(not_found)?;
    let content_type = object
        .http_metadata()
        .content_type
        .filter(|t| t.starts_with("image/"))
        .ok_or_else(not_found)?;
    let etag = object.http_etag();
    let headers = Headers::new();
    headers.set("content-type", &content_type)?;
    headers.set("cache-control", "public, max-age=31536000, immutable")?;
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
