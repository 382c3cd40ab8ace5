//! Preparing a control image in the browser before upload: decode with the EXIF
//! orientation applied (phone photos come out upright), downscale to what the chosen
//! size needs, and re-encode as JPEG, so a 12 MP phone photo uploads as a few
//! hundred KB instead of 5 MB.

use wasm_bindgen::{JsCast, JsValue, closure::Closure};
use wasm_bindgen_futures::JsFuture;
use web_sys::{Blob, HtmlCanvasElement, ImageBitmap, ImageBitmapOptions, ImageOrientation};

/// Longest side ever uploaded.
pub const MAX_SIDE: u32 = 2048;
/// JPEG quality of the re-encoded upload.
pub const QUALITY: f64 = 0.9;
/// Largest file accepted from the user before processing.
pub const MAX_INPUT_BYTES: f64 = 40.0 * 1024.0 * 1024.0;
pub const ACCEPT: &str = "image/jpeg,image/png,image/webp";

/// `x` rounded to a whole number, for messages (integer formatting: no float
/// formatting code in the first load, `parallax_api::num`).
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
pub fn whole(x: f64) -> u64 {
    x.round().max(0.0) as u64
}

/// The size to upload: never larger than the source, at most `megapixels` and
/// [`MAX_SIDE`], aspect ratio kept.
pub fn target_size(width: u32, height: u32, megapixels: f64) -> (u32, u32) {
    let (w, h) = (f64::from(width.max(1)), f64::from(height.max(1)));
    let by_area = (megapixels * 1e6 / (w * h)).sqrt();
    let by_side = f64::from(MAX_SIDE) / w.max(h);
    let scale = by_area.min(by_side).min(1.0);
    (
        ((w * scale).round() as u32).max(1),
        ((h * scale).round() as u32).max(1),
    )
}

/// A user-facing reason a file cannot be used, before any decoding.
pub fn precheck(media_type: &str, size: f64) -> Result<(), String> {
    let t = media_type.to_ascii_lowercase();
    if !t.is_empty() && !ACCEPT.split(',').any(|a| a == t) {
        return Err(format!(
            "{} files are not supported; choose a JPEG, PNG or WebP image",
            if t.is_empty() { "These" } else { &t }
        ));
    }
    if size > MAX_INPUT_BYTES {
        return Err(format!(
            "This file is {} MB; the limit is 40 MB",
            whole(size / 1_048_576.0)
        ));
    }
    Ok(())
}

/// The prepared upload.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub blob: Blob,
    pub width: u32,
    pub height: u32,
    pub bytes: f64,
}

fn js_err(e: JsValue) -> String {
    e.as_string()
        .unwrap_or_else(|| "the image could not be read".into())
}

/// The User Timing names around [`prepare`], read by `cargo xtask bench`.
const MARK: &str = "parallax:prepare:start";
const MEASURE: &str = "parallax:prepare";

/// Decodes `blob` upright, scales it to `megapixels`, and encodes it as JPEG; the time
/// it takes is recorded as the `parallax:prepare` measure.
pub async fn prepare(blob: &Blob, megapixels: f64) -> Result<Prepared, String> {
    let window = web_sys::window().ok_or("no window")?;
    let perf = window.performance();
    if let Some(p) = &perf {
        let _ = p.mark(MARK);
    }
    let prepared = encode(&window, blob, megapixels).await;
    if let Some(p) = &perf {
        let _ = p.measure_with_start_mark(MEASURE, MARK);
    }
    prepared
}

async fn encode(
    window: &web_sys::Window,
    blob: &Blob,
    megapixels: f64,
) -> Result<Prepared, String> {
    let opts = ImageBitmapOptions::new();
    opts.set_image_orientation(ImageOrientation::FromImage);
    let bitmap: ImageBitmap = JsFuture::from(
        window
            .create_image_bitmap_with_blob_and_image_bitmap_options(blob, &opts)
            .map_err(js_err)?,
    )
    .await
    .map_err(|_| "This image could not be decoded; try a JPEG or PNG".to_string())?
    .unchecked_into();
    let (w, h) = target_size(bitmap.width(), bitmap.height(), megapixels);
    let document = window.document().ok_or("no document")?;
    let canvas: HtmlCanvasElement = document
        .create_element("canvas")
        .map_err(js_err)?
        .unchecked_into();
    canvas.set_width(w);
    canvas.set_height(h);
    let ctx: web_sys::CanvasRenderingContext2d = canvas
        .get_context("2d")
        .map_err(js_err)?
        .ok_or("no 2d canvas")?
        .unchecked_into();
    ctx.draw_image_with_image_bitmap_and_dw_and_dh(&bitmap, 0.0, 0.0, f64::from(w), f64::from(h))
        .map_err(js_err)?;
    bitmap.close();
    let encoded = js_sys::Promise::new(&mut |resolve, reject| {
        let on_null = reject.clone();
        let done = Closure::once_into_js(move |b: JsValue| {
            if b.is_null() {
                let _ = on_null.call1(&JsValue::NULL, &"encoding failed".into());
            } else {
                let _ = resolve.call1(&JsValue::NULL, &b);
            }
        });
        if let Err(e) = canvas.to_blob_with_type_and_encoder_options(
            done.unchecked_ref(),
            "image/jpeg",
            &QUALITY.into(),
        ) {
            let _ = reject.call1(&JsValue::NULL, &e);
        }
    });
    let blob: Blob = JsFuture::from(encoded)
        .await
        .map_err(js_err)?
        .unchecked_into();
    Ok(Prepared {
        bytes: blob.size(),
        blob,
        width: w,
        height: h,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_12_mp_phone_photo_is_scaled_to_the_models_size() {
        assert_eq!(target_size(4032, 3024, 1.0), (1155, 866));
        assert_eq!(target_size(3024, 4032, 0.25), (433, 577));
        assert_eq!(target_size(640, 427, 1.0), (640, 427), "never upscaled");
        let (w, h) = target_size(8000, 1000, 2.07);
        assert_eq!(w, MAX_SIDE);
        assert_eq!(h, 256);
    }

    #[test]
    fn unsupported_and_huge_files_are_explained() {
        assert!(precheck("image/jpeg", 1e6).is_ok());
        assert!(precheck("", 1e6).is_ok(), "some pickers give no type");
        assert!(
            precheck("image/heic", 1e6)
                .unwrap_err()
                .contains("image/heic")
        );
        assert!(precheck("image/png", 50e6).unwrap_err().contains("40 MB"));
    }
}
