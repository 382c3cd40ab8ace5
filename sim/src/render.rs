//! The sim's "model": a deterministic image derived from the control image, the prompt,
//! the seed and the output index. Its luminance stands in for depth and is recoloured
//! with a palette hashed from the prompt and seed, so the layout is visibly kept and
//! every input change shows in the output. A depth preview (`depth-anything-v2`) is a
//! pseudo-depth map instead ([`render_depth`]): greyscale, near = bright.

use std::io::Cursor;

use image::codecs::jpeg::JpegEncoder;
use image::codecs::png::PngEncoder;
use image::codecs::webp::WebPEncoder;
use image::imageops::FilterType;
use image::{DynamicImage, ImageEncoder, RgbImage};

/// Output file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Jpg,
    Png,
    Webp,
}

impl Format {
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "jpg" | "jpeg" => Some(Self::Jpg),
            "png" => Some(Self::Png),
            "webp" => Some(Self::Webp),
            _ => None,
        }
    }

    pub fn ext(self) -> &'static str {
        match self {
            Self::Jpg => "jpg",
            Self::Png => "png",
            Self::Webp => "webp",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Self::Jpg => "image/jpeg",
            Self::Png => "image/png",
            Self::Webp => "image/webp",
        }
    }
}

/// Everything the output depends on.
#[derive(Debug, Clone)]
pub struct RenderSpec {
    pub prompt: String,
    pub seed: u64,
    pub count: usize,
    pub format: Format,
    pub quality: u8,
    /// Target megapixels; `None` keeps the control image's size (capped at 1440×1440).
    pub megapixels: Option<f64>,
    /// An exact output size, when the protocol's own graph computed it (ComfyUI).
    pub size: Option<(u32, u32)>,
    pub control: Option<DynamicImage>,
    /// Hash of the control image's bytes.
    pub control_hash: u64,
    /// A depth preview: one greyscale pseudo-depth map of the control image.
    pub depth: bool,
}

/// One encoded output.
#[derive(Debug)]
pub struct Rendered {
    pub bytes: Vec<u8>,
    pub format: Format,
}

pub fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &b in *part {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Output size: the control image's aspect ratio at the target area, multiples of 16.
pub fn output_size(w: u32, h: u32, megapixels: Option<f64>) -> (u32, u32) {
    let (w, h) = (f64::from(w.max(1)), f64::from(h.max(1)));
    let scale = match megapixels {
        Some(mp) => (mp * 1_000_000.0 / (w * h)).sqrt(),
        None => (1440.0 / w).min(1440.0 / h).min(1.0),
    };
    let round = |x: f64| ((x * scale / 16.0).round().max(1.0) as u32) * 16;
    (round(w).min(1440), round(h).min(1440))
}

pub fn render_all(spec: &RenderSpec) -> Vec<Rendered> {
    // `[sim:extra]`: one output more than asked, as a provider answering more images
    // than were charged for.
    let count = spec.count + usize::from(spec.prompt.contains("[sim:extra]"));
    (0..count).map(|i| render_one(spec, i)).collect()
}

fn render_one(spec: &RenderSpec, index: usize) -> Rendered {
    let control = spec
        .control
        .clone()
        .unwrap_or_else(|| DynamicImage::new_rgb8(64, 64));
    let (w, h) = spec
        .size
        .unwrap_or_else(|| output_size(control.width(), control.height(), spec.megapixels));
    if spec.depth {
        return Rendered {
            bytes: encode(&render_depth(&control, w, h), spec.format, spec.quality),
            format: spec.format,
        };
    }
    let luma = control.resize_exact(w, h, FilterType::Triangle).to_luma8();
    let key = fnv1a(&[
        &spec.control_hash.to_le_bytes(),
        spec.prompt.as_bytes(),
        &spec.seed.to_le_bytes(),
        &(index as u64).to_le_bytes(),
    ]);
    let palette = [
        color(key),
        color(key.rotate_left(21)),
        color(key.rotate_left(42)),
    ];
    let stripe = 6 + (key % 20) as u32;
    let mut out = RgbImage::new(w, h);
    for (x, y, px) in out.enumerate_pixels_mut() {
        let depth = f32::from(luma.get_pixel(x, y)[0]) / 255.0;
        let (a, b, t) = if depth < 0.5 {
            (palette[0], palette[1], depth * 2.0)
        } else {
            (palette[1], palette[2], depth * 2.0 - 1.0)
        };
        // Faint diagonal bands make seeds distinguishable even on flat regions.
        let band = if ((x + y) / stripe).is_multiple_of(2) {
            1.0
        } else {
            0.92
        };
        for c in 0..3 {
            let v = (f32::from(a[c]) * (1.0 - t) + f32::from(b[c]) * t) * band;
            px[c] = v.clamp(0.0, 255.0) as u8;
        }
    }
    Rendered {
        bytes: encode(&out, spec.format, spec.quality),
        format: spec.format,
    }
}

/// A deterministic pseudo-depth map of `control` at `w×h`: its luminance, blurred
/// (a depth estimator sees shapes, not texture), blended half and half with a vertical
/// gradient (the ground near the bottom of a photo is usually nearest), near = bright,
/// in three equal channels as ComfyUI's `SaveImage` writes a depth map.
pub fn render_depth(control: &DynamicImage, w: u32, h: u32) -> RgbImage {
    let (w, h) = (w.max(1), h.max(1));
    let luma = control.resize_exact(w, h, FilterType::Triangle).to_luma8();
    let sigma = (w.max(h) as f32 / 120.0).max(1.0);
    let blurred = image::imageops::fast_blur(&luma, sigma);
    RgbImage::from_fn(w, h, |x, y| {
        let lum = f32::from(blurred.get_pixel(x, y)[0]);
        let ground = 255.0 * (y as f32 + 0.5) / h as f32;
        let v = (0.5 * lum + 0.5 * ground).round().clamp(0.0, 255.0) as u8;
        image::Rgb([v, v, v])
    })
}

fn color(h: u64) -> [u8; 3] {
    [
        (h & 0xff) as u8,
        ((h >> 8) & 0xff) as u8,
        ((h >> 16) & 0xff) as u8,
    ]
}

fn encode(img: &RgbImage, format: Format, quality: u8) -> Vec<u8> {
    let mut buf = Cursor::new(Vec::new());
    let (w, h) = img.dimensions();
    let result =
        match format {
            Format::Jpg => JpegEncoder::new_with_quality(&mut buf, quality.clamp(1, 100))
                .write_image(img.as_raw(), w, h, image::ExtendedColorType::Rgb8),
            Format::Png => PngEncoder::new(&mut buf).write_image(
                img.as_raw(),
                w,
                h,
                image::ExtendedColorType::Rgb8,
            ),
            Format::Webp => WebPEncoder::new_lossless(&mut buf).write_image(
                img.as_raw(),
                w,
                h,
                image::ExtendedColorType::Rgb8,
            ),
        };
    // Encoding an in-memory RGB buffer cannot fail for these sizes; an empty body
    // would surface downstream as a corrupt image, which tests catch.
    if let Err(e) = result {
        eprintln!("parallax-sim: encode failed: {e}");
    }
    buf.into_inner()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(prompt: &str, seed: u64, format: Format) -> RenderSpec {
        RenderSpec {
            prompt: prompt.into(),
            seed,
            count: 1,
            format,
            quality: 90,
            megapixels: Some(0.25),
            size: None,
            control: Some(DynamicImage::ImageRgb8(RgbImage::from_fn(
                120,
                80,
                |x, _| image::Rgb([(x * 2) as u8, 0, 0]),
            ))),
            control_hash: 7,
            depth: false,
        }
    }

    #[test]
    fn a_depth_preview_is_greyscale_deterministic_and_brighter_below() {
        let mut s = spec("", 0, Format::Png);
        s.depth = true;
        s.size = Some((90, 60));
        let a = render_all(&s);
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].bytes, render_all(&s)[0].bytes);
        let img = image::load_from_memory(&a[0].bytes).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), (90, 60));
        assert!(img.pixels().all(|p| p[0] == p[1] && p[1] == p[2]));
        let row = |y| {
            (0..90)
                .map(|x| u32::from(img.get_pixel(x, y)[0]))
                .sum::<u32>()
        };
        assert!(row(59) > row(0), "near (bottom) is brighter");
    }

    #[test]
    fn output_is_deterministic_and_changes_with_prompt_and_seed() {
        let a = render_all(&spec("a", 1, Format::Png));
        let b = render_all(&spec("a", 1, Format::Png));
        let c = render_all(&spec("a", 2, Format::Png));
        let d = render_all(&spec("b", 1, Format::Png));
        assert_eq!(a[0].bytes, b[0].bytes);
        assert_ne!(a[0].bytes, c[0].bytes);
        assert_ne!(a[0].bytes, d[0].bytes);
    }

    #[test]
    fn every_format_decodes_at_the_requested_area_and_aspect() {
        for f in [Format::Jpg, Format::Png, Format::Webp] {
            let out = render_all(&spec("x", 3, f));
            let img = image::load_from_memory(&out[0].bytes).unwrap();
            let expected = match f {
                Format::Jpg => image::ImageFormat::Jpeg,
                Format::Png => image::ImageFormat::Png,
                Format::Webp => image::ImageFormat::WebP,
            };
            assert_eq!(image::guess_format(&out[0].bytes).unwrap(), expected);
            assert_eq!((img.width(), img.height()), (608, 416));
        }
    }

    #[test]
    fn match_input_keeps_size_but_caps_at_1440() {
        assert_eq!(output_size(640, 427, None), (640, 432));
        assert_eq!(output_size(4000, 3000, None), (1440, 1088));
        assert_eq!(output_size(512, 512, Some(1.0)), (1008, 1008));
    }
}
