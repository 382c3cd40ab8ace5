//! Reading a submit body: JSON, or a multipart form whose values are strings and whose
//! `control_image` may be a file part. The result is a flat field map for
//! `parallax_api::validate` plus the uploaded file, if any.

use base64::Engine;
use futures_util::StreamExt;
use parallax_api::{ControlImage, Model, Params};
use serde_json::{Map, Value};
use worker::Request;

use super::image::{self, ImageInfo};
use super::{MAX_BODY_BYTES, multipart, remote};
use crate::error::{EdgeError, EdgeResult};

/// A parsed, not yet validated, submit body.
#[derive(Debug, Default)]
pub struct RawSubmission {
    pub fields: Map<String, Value>,
    pub upload: Option<Vec<u8>>,
}

/// The control image as the request gave it: its bytes (an upload, base64 or a data
/// URL, decoded), or a URL not fetched yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Given {
    Bytes(Vec<u8>),
    Url(String),
}

/// A validated submission whose control image may still have to be fetched: what an
/// `Idempotency-Key` is checked against before anything is fetched.
#[derive(Debug)]
pub struct Validated {
    pub params: Params,
    pub image: Given,
}

/// A validated submission with its control image's bytes in hand.
#[derive(Debug)]
pub struct Submission {
    pub params: Params,
    pub image: Vec<u8>,
    pub info: ImageInfo,
}

/// Reads a submit body: JSON or a multipart form.
pub async fn read(req: &mut Request) -> EdgeResult<RawSubmission> {
    let (content_type, bytes) = read_bytes(req).await?;
    parse(&content_type, &bytes)
}

/// Reads a JSON-only body (the Eachlabs and 1min.ai APIs take no forms).
pub async fn read_json(req: &mut Request) -> EdgeResult<RawSubmission> {
    let (content_type, bytes) = read_bytes(req).await?;
    match mime(&content_type).as_str() {
        "application/json" | "" => parse_json(&bytes),
        _ => Err(EdgeError::bad_request(
            "Send a JSON body (Content-Type: application/json)",
        )),
    }
}

/// Reads a body and its content type, refusing oversized ones before reading them
/// when the client declares their length.
pub async fn read_bytes(req: &mut Request) -> EdgeResult<(String, Vec<u8>)> {
    let declared = req
        .headers()
        .get("content-length")?
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES) {
        return Err(too_large());
    }
    let content_type = req.headers().get("content-type")?.unwrap_or_default();
    // Without a declared length (chunked), stop reading as soon as it is too big.
    let mut stream = req
        .stream()
        .map_err(|_| EdgeError::bad_request("request body could not be read"))?;
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|_| EdgeError::bad_request("request body could not be read"))?;
        if bytes.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(too_large());
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok((content_type, bytes))
}

fn too_large() -> EdgeError {
    EdgeError::PayloadTooLarge(format!(
        "Request body is larger than {} MB",
        MAX_BODY_BYTES / 1_048_576
    ))
}

/// Parses a body given its content type. Pure, tested natively.
pub fn parse(content_type: &str, bytes: &[u8]) -> EdgeResult<RawSubmission> {
    match mime(content_type).as_str() {
        "application/json" | "" => parse_json(bytes),
        "multipart/form-data" => {
            let boundary = multipart::boundary(content_type)
                .ok_or_else(|| EdgeError::bad_request("multipart body without a boundary"))?;
            parse_form(bytes, &boundary)
        }
        other => Err(EdgeError::bad_request(format!(
            "Content-Type `{}` is not supported; send application/json or multipart/form-data",
            other.chars().take(60).collect::<String>()
        ))),
    }
}

/// The media type of a Content-Type header, lowercased, without parameters.
fn mime(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

fn parse_json(bytes: &[u8]) -> EdgeResult<RawSubmission> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(EdgeError::bad_request(
            "Request body is empty; send a JSON object with prompt and control_image",
        ));
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(fields)) => Ok(RawSubmission {
            fields,
            upload: None,
        }),
        Ok(_) => Err(EdgeError::bad_request("Request body must be a JSON object")),
        Err(e) => Err(EdgeError::bad_request(format!(
            "Request body is not valid JSON: {e}"
        ))),
    }
}

fn parse_form(bytes: &[u8], boundary: &str) -> EdgeResult<RawSubmission> {
    let parts = multipart::parse(bytes, boundary).map_err(EdgeError::bad_request)?;
    let mut out = RawSubmission::default();
    for part in parts {
        if out.fields.contains_key(&part.name)
            || (part.name == "control_image" && out.upload.is_some())
        {
            return Err(EdgeError::field(
                &part.name.chars().take(64).collect::<String>(),
                "is given more than once",
            ));
        }
        if part.filename.is_some() && part.name == "control_image" {
            out.upload = Some(part.data);
        } else {
            let text = String::from_utf8(part.data).map_err(|_| {
                EdgeError::field(
                    &part.name.chars().take(64).collect::<String>(),
                    "is not UTF-8 text",
                )
            })?;
            out.fields.insert(part.name, Value::String(text));
        }
    }
    Ok(out)
}

/// Validates the fields and decodes an inline control image; a URL is not fetched.
pub fn validate(model: Model, raw: RawSubmission) -> EdgeResult<Validated> {
    let validated = parallax_api::validate(model, &raw.fields, raw.upload.is_some())
        .map_err(EdgeError::fields)?;
    // The body's copy of a base64 image is no longer needed: free it before decoding
    // (a 15 MB body would otherwise be held three times at once).
    drop(raw.fields);
    let image = match validated.control_image {
        ControlImage::Upload => Given::Bytes(raw.upload.unwrap_or_default()),
        ControlImage::Base64 { data, .. } => Given::Bytes(
            decode_base64(&data)
                .ok_or_else(|| EdgeError::field("control_image", "is not valid base64"))?,
        ),
        ControlImage::Url(url) => Given::Url(url),
    };
    Ok(Validated {
        params: validated.params,
        image,
    })
}

/// Validates the fields and obtains the control image's bytes from wherever it is.
pub async fn resolve(
    model: Model,
    raw: RawSubmission,
    remote_images: bool,
) -> EdgeResult<Submission> {
    obtain(validate(model, raw)?, remote_images).await
}

/// The control image's bytes (fetched if it was given as a URL), checked.
pub async fn obtain(validated: Validated, remote_images: bool) -> EdgeResult<Submission> {
    let image = match validated.image {
        Given::Bytes(bytes) => bytes,
        Given::Url(url) if !remote_images => {
            // The address rules first, so a refused address says why.
            remote::check_url(&url).map_err(|e| EdgeError::field("control_image", e))?;
            return Err(EdgeError::field(
                "control_image",
                "URLs are not fetched on this deployment; send the image as a file, data URL or base64",
            ));
        }
        Given::Url(url) => remote::fetch_image(&url)
            .await
            .map_err(|e| EdgeError::field("control_image", e))?,
    };
    let info = image::inspect(&image).map_err(|e| EdgeError::field("control_image", e))?;
    Ok(Submission {
        params: validated.params,
        image,
        info,
    })
}

/// Standard or URL-safe base64, padded or not.
pub fn decode_base64(data: &str) -> Option<Vec<u8>> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
        .iter()
        .find_map(|engine| engine.decode(data).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multipart_values_arrive_as_strings_and_the_file_separately() {
        let body = b"--b\r\nContent-Disposition: form-data; name=\"prompt\"\r\n\r\nx\r\n\
--b\r\nContent-Disposition: form-data; name=\"steps\"\r\n\r\n20\r\n\
--b\r\nContent-Disposition: form-data; name=\"control_image\"; filename=\"a.jpg\"\r\n\r\n\xff\xd8\xff\r\n--b--\r\n";
        let raw = parse("multipart/form-data; boundary=b", body).unwrap();
        assert_eq!(raw.fields.get("steps"), Some(&Value::from("20")));
        assert_eq!(raw.upload.as_deref(), Some(&b"\xff\xd8\xff"[..]));
    }

    #[test]
    fn malformed_and_unsupported_bodies_are_400() {
        for (ct, body) in [
            ("application/json", &b"{\"prompt\": "[..]),
            ("application/json", b"[1,2]"),
            ("application/json", b"  "),
            ("text/plain", b"prompt=x"),
            ("multipart/form-data", b"--b--"),
        ] {
            let err = parse(ct, body).unwrap_err();
            assert_eq!(err.code().http_status(), 400, "{ct} {err}");
        }
    }

    #[test]
    fn base64_in_any_common_alphabet_decodes() {
        assert_eq!(decode_base64("aGk+Pz8="), Some(b"hi>??".to_vec()));
        assert_eq!(decode_base64("aGk-Pz8"), Some(b"hi>??".to_vec()));
        assert_eq!(decode_base64("!!"), None);
    }
}
