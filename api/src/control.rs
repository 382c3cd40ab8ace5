//! Where a job's control image comes from, parsed from the string forms the API accepts.
//! Fetching and decoding happen in the edge; this only classifies the input.

/// The control image as the client gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlImage {
    /// Sent as a multipart file part.
    Upload,
    /// An `https` URL the edge fetches.
    Url(String),
    /// Base64 bytes, from a data URL (with its declared media type) or raw.
    Base64 {
        media_type: Option<String>,
        data: String,
    },
}

/// Media types the models accept.
pub const ACCEPTED_MEDIA_TYPES: [&str; 3] = ["image/jpeg", "image/png", "image/webp"];

impl ControlImage {
    /// Classifies a string value of `control_image`.
    pub fn parse(value: &str) -> Result<Self, String> {
        let value = value.trim();
        if value.is_empty() {
            return Err("is empty".into());
        }
        let lower = value.get(..12).unwrap_or(value).to_ascii_lowercase();
        if lower.starts_with("https://") {
            return Ok(Self::Url(value.to_owned()));
        }
        if lower.starts_with("data:") {
            return parse_data_url(value);
        }
        if let Some((scheme, _)) = value.split_once("://") {
            return Err(format!(
                "URL scheme `{}` is not allowed; use an https URL",
                scheme.chars().take(16).collect::<String>()
            ));
        }
        let data: String = value.split_ascii_whitespace().collect();
        if data.len() >= 16 && data.bytes().all(is_base64_byte) {
            Ok(Self::Base64 {
                media_type: None,
                data,
            })
        } else {
            Err("must be an image file, an https URL, a data URL or base64".into())
        }
    }
}

fn parse_data_url(value: &str) -> Result<ControlImage, String> {
    let (head, data) = value
        .split_once(',')
        .ok_or_else(|| "data URL has no `,` before its data".to_string())?;
    let meta = &head["data:".len()..];
    let mut parts = meta.split(';');
    let media_type = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
    if !parts.any(|p| p.trim().eq_ignore_ascii_case("base64")) {
        return Err("data URL must be base64-encoded (`;base64,`)".into());
    }
    if !ACCEPTED_MEDIA_TYPES.contains(&media_type.as_str()) {
        return Err(format!(
            "data URL media type `{}` is not one of image/jpeg, image/png, image/webp",
            media_type.chars().take(40).collect::<String>()
        ));
    }
    let data: String = data.split_ascii_whitespace().collect();
    if data.is_empty() || !data.bytes().all(is_base64_byte) {
        return Err("data URL does not carry valid base64".into());
    }
    Ok(ControlImage::Base64 {
        media_type: Some(media_type),
        data,
    })
}

fn is_base64_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=' | b'-' | b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_urls_data_urls_and_raw_base64_are_recognised() {
        assert_eq!(
            ControlImage::parse("https://example.com/a.png"),
            Ok(ControlImage::Url("https://example.com/a.png".into()))
        );
        assert_eq!(
            ControlImage::parse("data:image/png;base64,iVBORw0KGgo="),
            Ok(ControlImage::Base64 {
                media_type: Some("image/png".into()),
                data: "iVBORw0KGgo=".into()
            })
        );
        assert_eq!(
            ControlImage::parse("iVBORw0KGgoAAAANSUhEUg=="),
            Ok(ControlImage::Base64 {
                media_type: None,
                data: "iVBORw0KGgoAAAANSUhEUg==".into()
            })
        );
    }

    #[test]
    fn other_schemes_and_garbage_are_refused_with_a_reason() {
        for bad in [
            "http://127.0.0.1/a.png",
            "file:///etc/passwd",
            "ftp://x/y",
            "data:text/plain;base64,aGVsbG8=",
            "data:image/png,rawbytes",
            "not an image",
            "",
        ] {
            let err = ControlImage::parse(bad).unwrap_err();
            assert!(!err.is_empty(), "{bad:?}");
        }
    }
}
