//! Checks on a control image's bytes before anything decodes it: the format by magic
//! bytes (not by what the client claims), and the pixel size from the header, so a
//! small file claiming 60 000×60 000 pixels is refused before it can explode.

/// Largest control image, in bytes.
pub const MAX_IMAGE_BYTES: usize = 10 * 1024 * 1024;
/// Longest side and largest area accepted.
pub const MAX_SIDE: u32 = 8192;
pub const MAX_PIXELS: u64 = 40_000_000;
pub const MIN_SIDE: u32 = 16;

/// An accepted image format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageFormat {
    Jpeg,
    Png,
    Webp,
}

impl ImageFormat {
    pub fn sniff(bytes: &[u8]) -> Option<Self> {
        if bytes.starts_with(&[0xff, 0xd8, 0xff]) {
            Some(Self::Jpeg)
        } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
            Some(Self::Png)
        } else if bytes.len() >= 12 && &bytes[0..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
            Some(Self::Webp)
        } else {
            None
        }
    }

    pub fn media_type(self) -> &'static str {
        match self {
            Self::Jpeg => "image/jpeg",
            Self::Png => "image/png",
            Self::Webp => "image/webp",
        }
    }

    /// The file extension used in output URLs (`jpg`, as in the API's `output_format`).
    pub fn ext(self) -> &'static str {
        match self {
            Self::Jpeg => "jpg",
            Self::Png => "png",
            Self::Webp => "webp",
        }
    }

    pub fn from_ext(ext: &str) -> Option<Self> {
        match ext {
            "jpg" | "jpeg" => Some(Self::Jpeg),
            "png" => Some(Self::Png),
            "webp" => Some(Self::Webp),
            _ => None,
        }
    }
}

/// What we know about an accepted image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ImageInfo {
    pub format: ImageFormat,
    pub width: u32,
    pub height: u32,
}

/// Checks size, format and dimensions; the message is for the `control_image` field.
pub fn inspect(bytes: &[u8]) -> Result<ImageInfo, String> {
    if bytes.is_empty() {
        return Err("is empty".into());
    }
    if bytes.len() > MAX_IMAGE_BYTES {
        return Err(format!(
            "is {:.1} MB; the limit is {} MB",
            bytes.len() as f64 / 1_048_576.0,
            MAX_IMAGE_BYTES / 1_048_576
        ));
    }
    let format = ImageFormat::sniff(bytes).ok_or("is not a JPEG, PNG or WebP image")?;
    let size = imagesize::blob_size(bytes)
        .map_err(|_| format!("is a truncated or corrupt {} file", format.ext()))?;
    let (w, h) = (
        u32::try_from(size.width).unwrap_or(u32::MAX),
        u32::try_from(size.height).unwrap_or(u32::MAX),
    );
    if w < MIN_SIDE || h < MIN_SIDE {
        return Err(format!(
            "is {w}×{h} pixels; each side must be at least {MIN_SIDE}"
        ));
    }
    if w > MAX_SIDE || h > MAX_SIDE || u64::from(w) * u64::from(h) > MAX_PIXELS {
        return Err(format!(
            "is {w}×{h} pixels; the limit is {MAX_SIDE} per side and {} megapixels",
            MAX_PIXELS / 1_000_000
        ));
    }
    // A valid header with cut-off data would be charged and fail later: refuse it
    // here, from its structure, without decoding it.
    if !is_complete(bytes, format) {
        return Err(format!(
            "is a truncated {} file ({})",
            format.ext(),
            match format {
                ImageFormat::Jpeg => "no end-of-image marker",
                ImageFormat::Png => "no IEND chunk",
                ImageFormat::Webp => "its RIFF size does not match its length",
            }
        ));
    }
    Ok(ImageInfo {
        format,
        width: w,
        height: h,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png_header(w: u32, h: u32) -> Vec<u8> {
        let mut b = b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR".to_vec();
        b.extend_from_slice(&w.to_be_bytes());
        b.extend_from_slice(&h.to_be_bytes());
        b.extend_from_slice(&[8, 2, 0, 0, 0, 0, 0, 0, 0]);
        b
    }

    /// A structurally whole PNG (header, then the IEND chunk).
    fn png(w: u32, h: u32) -> Vec<u8> {
        let mut b = png_header(w, h);
        b.extend_from_slice(b"\x00\x00\x00\x00IEND\xae\x42\x60\x82");
        b
    }

    /// A minimal lossy WebP: RIFF size, VP8 chunk with a keyframe header of w×h.
    fn webp(w: u16, h: u16) -> Vec<u8> {
        let mut vp8 = vec![0x9d, 0x01, 0x2a];
        vp8.splice(0..0, [0x10, 0x02, 0x00]);
        vp8.extend_from_slice(&w.to_le_bytes());
        vp8.extend_from_slice(&h.to_le_bytes());
        vp8.extend_from_slice(&[0; 6]);
        let mut chunk = b"VP8 ".to_vec();
        chunk.extend_from_slice(&(vp8.len() as u32).to_le_bytes());
        chunk.extend_from_slice(&vp8);
        let mut b = b"RIFF".to_vec();
        b.extend_from_slice(&((chunk.len() + 4) as u32).to_le_bytes());
        b.extend_from_slice(b"WEBP");
        b.extend_from_slice(&chunk);
        b
    }

    #[test]
    fn truncated_images_are_refused_without_decoding() {
        let jpg = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../public/samples/chelsea.jpg"
        ))
        .unwrap();
        let cut = inspect(&jpg[..jpg.len() - 200]).unwrap_err();
        assert!(cut.contains("truncated jpg"), "{cut}");
        let mut padded = jpg.clone();
        padded.extend_from_slice(&[0, 0]);
        assert!(inspect(&padded).is_ok(), "zero padding after EOI is fine");

        assert_eq!(inspect(&png(64, 64)).map(|i| i.width), Ok(64));
        let cut = inspect(&png_header(64, 64)).unwrap_err();
        assert!(cut.contains("no IEND"), "{cut}");

        let whole = webp(64, 48);
        assert_eq!(
            inspect(&whole).map(|i| (i.format, i.width, i.height)),
            Ok((ImageFormat::Webp, 64, 48))
        );
        let cut = inspect(&whole[..whole.len() - 2]).unwrap_err();
        assert!(cut.contains("RIFF size"), "{cut}");
    }

    #[test]
    fn real_samples_are_accepted_with_their_dimensions() {
        let jpg = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../public/samples/chelsea.jpg"
        ))
        .unwrap();
        assert_eq!(
            inspect(&jpg),
            Ok(ImageInfo {
                format: ImageFormat::Jpeg,
                width: 451,
                height: 300
            })
        );
        assert_eq!(
            inspect(&png(640, 480)).map(|i| i.format),
            Ok(ImageFormat::Png)
        );
    }

    #[test]
    fn decompression_bombs_are_refused_from_the_header() {
        let err = inspect(&png_header(60_000, 60_000)).unwrap_err();
        assert!(err.contains("60000×60000"), "{err}");
        assert!(inspect(&png_header(8, 8)).is_err());
    }

    #[test]
    fn non_images_and_truncated_files_are_refused() {
        assert_eq!(
            inspect(b"GIF89a....").unwrap_err(),
            "is not a JPEG, PNG or WebP image"
        );
        assert!(
            inspect(b"\x89PNG\r\n\x1a\n\x00")
                .unwrap_err()
                .contains("truncated")
        );
        assert_eq!(inspect(b"").unwrap_err(), "is empty");
    }
}

/// Whether a downloaded image is whole: a JPEG has an EOI after its first scan, a PNG
/// ends with its IEND chunk, a WebP's RIFF size matches its length. Catches truncated
/// downloads that a header-only check would pass.
pub fn is_complete(bytes: &[u8], format: ImageFormat) -> bool {
    match format {
        ImageFormat::Jpeg => jpeg_has_end(bytes),
        ImageFormat::Png => {
            bytes.len() >= 12 && bytes[bytes.len() - 8..bytes.len() - 4] == *b"IEND"
        }
        ImageFormat::Webp => {
            bytes.len() >= 12
                && u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]) as usize + 8
                    == bytes.len()
        }
    }
}

/// A JPEG's EOI (`FF D9`) after its first start-of-scan. The segments before the scan
/// are walked by their lengths, so an EXIF thumbnail's own EOI does not count; inside
/// entropy-coded data a `0xFF` byte is always stuffed (`FF 00`) or a restart marker,
/// so the first `FF D9` after SOS is the image's end. Data after it is allowed: phones
/// append trailers (Motion Photo video, vendor data) after EOI.
fn jpeg_has_end(bytes: &[u8]) -> bool {
    let mut i = 2; // after SOI
    while i + 4 <= bytes.len() {
        if bytes[i] != 0xff {
            return false;
        }
        let marker = bytes[i + 1];
        if marker == 0xff {
            // Fill byte before a marker.
            i += 1;
            continue;
        }
        let len = usize::from(u16::from_be_bytes([bytes[i + 2], bytes[i + 3]]));
        if marker == 0xda {
            let scan = i + 2 + len;
            return scan <= bytes.len() && bytes[scan..].windows(2).any(|w| w == [0xff, 0xd9]);
        }
        i += 2 + len;
    }
    false
}

#[cfg(test)]
mod completeness_tests {
    use super::*;

    #[test]
    fn truncated_downloads_are_detected() {
        let jpg = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../public/samples/coffee.jpg"
        ))
        .unwrap();
        assert!(is_complete(&jpg, ImageFormat::Jpeg));
        assert!(!is_complete(&jpg[..jpg.len() / 2], ImageFormat::Jpeg));
        // Cut right before its EOI: still refused.
        let end = jpg.iter().rposition(|&b| b == 0xd9).unwrap();
        assert!(!is_complete(&jpg[..end - 1], ImageFormat::Jpeg));
        // A trailer after EOI (a Motion Photo's video, vendor data) is not a truncation.
        let mut motion = jpg.clone();
        motion.extend_from_slice(b"\x00\x00\x00\x18ftypmp42 trailing video");
        assert!(is_complete(&motion, ImageFormat::Jpeg));
        let mut webp = b"RIFF\x04\x00\x00\x00WEBP".to_vec();
        assert!(is_complete(&webp, ImageFormat::Webp));
        webp.push(0);
        assert!(!is_complete(&webp, ImageFormat::Webp));
    }
}
