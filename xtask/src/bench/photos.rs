//! Test photos for the bench, made from a real sample: upscaled, with a camera's
//! fine sensor noise (deterministic) so they compress like real photos, not like
//! smooth gradients.

use std::io::Cursor;

use image::codecs::jpeg::JpegEncoder;
use image::imageops::FilterType;
use image::{DynamicImage, RgbImage};

use crate::cmd::{Result, root};

fn sample() -> Result<DynamicImage> {
    let path = root().join("public/samples/astronaut.jpg");
    image::open(&path).map_err(|e| format!("{}: {e}", path.display()))
}

/// The sample at `width`×`height` with ±`noise` levels of per-pixel noise, as JPEG.
fn photo(base: &DynamicImage, width: u32, height: u32, noise: u8, quality: u8) -> Result<Vec<u8>> {
    let mut img: RgbImage = base
        .resize_exact(width, height, FilterType::Triangle)
        .to_rgb8();
    let mut state: u32 = 0x9e37_79b9;
    let span = u32::from(noise) * 2 + 1;
    for px in img.pixels_mut() {
        for c in &mut px.0 {
            // xorshift32: cheap, deterministic noise.
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            let delta = (state % span) as i32 - i32::from(noise);
            *c = (i32::from(*c) + delta).clamp(0, 255) as u8;
        }
    }
    let mut out = Cursor::new(Vec::new());
    JpegEncoder::new_with_quality(&mut out, quality)
        .encode_image(&img)
        .map_err(|e| format!("encoding a bench photo: {e}"))?;
    Ok(out.into_inner())
}

/// A JPEG of about `target` bytes (within 10 %), at 4:3.
pub fn jpeg_of_size(target: usize) -> Result<Vec<u8>> {
    let base = sample()?;
    let mut width = 1200u32;
    for _ in 0..12 {
        let bytes = photo(&base, width, width * 3 / 4, 6, 90)?;
        let ratio = target as f64 / bytes.len() as f64;
        if (0.9..=1.1).contains(&ratio) {
            return Ok(bytes);
        }
        // Size grows with the pixel count: scale the side by the square root.
        width = ((f64::from(width) * ratio.sqrt()) as u32).clamp(64, 8000);
    }
    Err(format!("could not make a JPEG of about {target} bytes"))
}

/// A 12 MP (4000×3000) phone-like JPEG.
pub fn twelve_megapixels() -> Result<Vec<u8>> {
    photo(&sample()?, 4000, 3000, 4, 92)
}
