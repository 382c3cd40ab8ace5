//! What a validated graph produces, computed the way the real nodes compute it: image
//! sizes through every resize, batch sizes, and the files each save node writes.
//!
//! - `ImageScaleToTotalPixels`: `total = megapixels·1024²`, `s = √(total/(w·h))`,
//!   `w' = round(w·s/steps)·steps` (Python's round: half to even). Comfy-Org/ComfyUI
//!   `comfy_extras/nodes_post_processing.py` @ffe7a0e4.
//! - `DepthAnythingV2Preprocessor`: the map is rescaled so its short side is
//!   `resolution` (`k = res/min(h,w)`, `np.round`), the pad to 64 cut off again;
//!   `resolution` below 64 or absent means 512. Fannovel16/comfyui_controlnet_aux
//!   @e8b689a5 `utils.py` `common_annotator_call`, `src/custom_controlnet_aux/util.py`
//!   `resize_image_with_pad`.
//! - `InstructPixToPixConditioning`: the latent is the pixels cropped to a multiple of 8
//!   (ComfyUI @a125cd84 `comfy_extras/nodes_ip2p.py:28-34`); `VAEDecode` gives back
//!   that size; `RepeatLatentBatch` multiplies the batch.
//! - `RebatchImages` outputs a list of batches (`nodes_rebatch.py:110-140`); a node that
//!   is not list-input runs once per item and its UI lists are concatenated
//!   (`execution.py` `merge_result_data`).
//! - `SaveImage` writes one file per image; `SaveAnimatedWEBP` writes one file per call
//!   holding the whole batch as frames, `animated` when it has more than one
//!   (`comfy_extras/nodes_images.py:98-162`).

use std::collections::HashMap;

use serde_json::{Map, Value};

/// A value flowing along a link.
#[derive(Debug, Clone, PartialEq)]
enum Flow {
    /// Images as a list of batches `(count, width, height)`; a plain tensor is a
    /// list of one.
    Images(Vec<(u32, u32, u32)>),
    Latent(u32, u32, u32),
    Other,
}

/// One file a save node writes.
#[derive(Debug, Clone, PartialEq)]
pub struct SavedFile {
    pub node: String,
    pub width: u32,
    pub height: u32,
    /// Frames in it (more than one: an animated WebP).
    pub frames: u32,
    pub webp: bool,
    pub prefix: String,
}

type Nodes = HashMap<String, (String, Map<String, Value>)>;

/// Python's `round()` / `np.round`: half to even.
fn py_round(x: f64) -> f64 {
    x.round_ties_even()
}

fn num(inputs: &Map<String, Value>, name: &str) -> Option<f64> {
    match inputs.get(name)? {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// `ImageScaleToTotalPixels` on one `w×h` image.
pub fn scale_to_total_pixels(w: u32, h: u32, megapixels: f64, steps: u32) -> (u32, u32) {
    let (wf, hf) = (f64::from(w.max(1)), f64::from(h.max(1)));
    let total = megapixels * 1024.0 * 1024.0;
    let scale = (total / (wf * hf)).sqrt();
    let steps = f64::from(steps.max(1));
    let side = |x: f64| (py_round(x * scale / steps) * steps).max(1.0) as u32;
    (side(wf), side(hf))
}

/// `DepthAnythingV2Preprocessor`'s output size for a `w×h` input.
pub fn depth_map_size(w: u32, h: u32, resolution: Option<f64>) -> (u32, u32) {
    let res = resolution
        .filter(|r| *r >= 64.0 && r.fract() == 0.0)
        .unwrap_or(512.0);
    let k = res / f64::from(w.min(h).max(1));
    (
        py_round(f64::from(w) * k) as u32,
        py_round(f64::from(h) * k) as u32,
    )
}

struct Eval<'a> {
    nodes: &'a Nodes,
    /// The uploaded control image's size, for `LoadImage`.
    loaded: (u32, u32),
    memo: HashMap<(String, u64), Flow>,
}

impl Eval<'_> {
    fn input(&mut self, inputs: &Map<String, Value>, name: &str) -> Flow {
        match inputs.get(name).and_then(Value::as_array) {
            Some(link) if link.len() == 2 => match (link[0].as_str(), link[1].as_u64()) {
                (Some(id), Some(slot)) => self.output(id, slot),
                _ => Flow::Other,
            },
            _ => Flow::Other,
        }
    }

    fn output(&mut self, id: &str, slot: u64) -> Flow {
        if let Some(f) = self.memo.get(&(id.to_owned(), slot)) {
            return f.clone();
        }
        let flow = self.compute(id, slot);
        self.memo.insert((id.to_owned(), slot), flow.clone());
        flow
    }

    fn compute(&mut self, id: &str, slot: u64) -> Flow {
        let Some((class, inputs)) = self.nodes.get(id) else {
            return Flow::Other;
        };
        let per_image = |flow: Flow, f: &dyn Fn(u32, u32) -> (u32, u32)| match flow {
            Flow::Images(batches) => Flow::Images(
                batches
                    .into_iter()
                    .map(|(n, w, h)| {
                        let (w, h) = f(w, h);
                        (n, w, h)
                    })
                    .collect(),
            ),
            other => other,
        };
        match (class.as_str(), slot) {
            ("LoadImage", 0) => Flow::Images(vec![(1, self.loaded.0, self.loaded.1)]),
            ("ImageScaleToTotalPixels", 0) => {
                let mp = num(inputs, "megapixels").unwrap_or(1.0);
                let steps = num(inputs, "resolution_steps").unwrap_or(1.0) as u32;
                let image = self.input(inputs, "image");
                per_image(image, &|w, h| scale_to_total_pixels(w, h, mp, steps))
            }
            ("DepthAnythingV2Preprocessor", 0) => {
                let res = num(inputs, "resolution");
                let image = self.input(inputs, "image");
                per_image(image, &|w, h| depth_map_size(w, h, res))
            }
            ("InstructPixToPixConditioning", 2) => match self.input(inputs, "pixels") {
                Flow::Images(b) => b.first().map_or(Flow::Other, |&(n, w, h)| {
                    Flow::Latent(n, w / 8 * 8, h / 8 * 8)
                }),
                _ => Flow::Other,
            },
            ("RepeatLatentBatch", 0) => match self.input(inputs, "samples") {
                Flow::Latent(n, w, h) => {
                    let amount = num(inputs, "amount").unwrap_or(1.0) as u32;
                    Flow::Latent(n * amount.max(1), w, h)
                }
                other => other,
            },
            ("KSampler", 0) => self.input(inputs, "latent_image"),
            ("VAEDecode", 0) => match self.input(inputs, "samples") {
                Flow::Latent(n, w, h) => Flow::Images(vec![(n, w, h)]),
                _ => Flow::Other,
            },
            ("RebatchImages", 0) => match self.input(inputs, "images") {
                Flow::Images(batches) => {
                    let size = num(inputs, "batch_size").unwrap_or(1.0).max(1.0) as u32;
                    let singles: Vec<(u32, u32)> = batches
                        .iter()
                        .flat_map(|&(n, w, h)| (0..n).map(move |_| (w, h)))
                        .collect();
                    Flow::Images(
                        singles
                            .chunks(size as usize)
                            .map(|c| (c.len() as u32, c[0].0, c[0].1))
                            .collect(),
                    )
                }
                other => other,
            },
            _ => Flow::Other,
        }
    }
}

/// The files the given output nodes write, in node order, for a control image of
/// `loaded` size.
pub fn saved_files(nodes: &Nodes, outputs: &[String], loaded: (u32, u32)) -> Vec<SavedFile> {
    let mut eval = Eval {
        nodes,
        loaded,
        memo: HashMap::new(),
    };
    let mut sorted = outputs.to_vec();
    sorted.sort_by_key(|id| id.parse::<u64>().unwrap_or(u64::MAX));
    let mut files = Vec::new();
    for id in sorted {
        let Some((class, inputs)) = nodes.get(&id) else {
            continue;
        };
        let prefix = inputs
            .get("filename_prefix")
            .and_then(Value::as_str)
            .unwrap_or("ComfyUI")
            .to_owned();
        let Flow::Images(batches) = eval.input(inputs, "images") else {
            continue;
        };
        for (n, w, h) in batches {
            let file = |frames| SavedFile {
                node: id.clone(),
                width: w,
                height: h,
                frames,
                webp: class == "SaveAnimatedWEBP",
                prefix: prefix.clone(),
            };
            match class.as_str() {
                "SaveImage" => files.extend((0..n).map(|_| file(1))),
                "SaveAnimatedWEBP" => files.push(file(n)),
                _ => {}
            }
        }
    }
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped(megapixels: f64, webp: bool, amount: u32) -> Nodes {
        let mut g: Value = serde_json::from_str(include_str!(
            "../../../edge/src/providers/comfyui_flux_depth_dev.json"
        ))
        .unwrap();
        g["15"]["inputs"]["megapixels"] = megapixels.into();
        g["11"]["inputs"]["amount"] = amount.into();
        if webp {
            g["16"] = serde_json::json!({"class_type": "RebatchImages", "inputs": {"images": ["13", 0], "batch_size": 1}});
            g["14"] = serde_json::json!({"class_type": "SaveAnimatedWEBP", "inputs": {"images": ["16", 0], "filename_prefix": "p"}});
        }
        super::super::validate::index(g.as_object().unwrap())
    }

    fn sizes(files: &[SavedFile]) -> Vec<(u32, u32, u32)> {
        files
            .iter()
            .map(|f| (f.width, f.height, f.frames))
            .collect()
    }

    #[test]
    fn the_review_table_sizes_without_the_post_depth_resize() {
        // The old graph (no node 15): short side 1024 whatever megapixels said.
        let mut nodes = shipped(1.0, false, 1);
        nodes.get_mut("10").unwrap().1["pixels"] = serde_json::json!(["6", 0]);
        nodes.remove("15");
        let out = saved_files(&nodes, &["14".into()], (3000, 1000));
        assert_eq!(sizes(&out), vec![(3072, 1024, 1)]);
    }

    #[test]
    fn megapixels_now_set_the_output_size() {
        let at = |mp, w, h| sizes(&saved_files(&shipped(mp, false, 1), &["14".into()], (w, h)));
        assert_eq!(at(1.0, 800, 600), vec![(1184, 880, 1)]);
        assert_eq!(at(0.25, 800, 600), vec![(592, 448, 1)]);
        assert_eq!(at(1.0, 1920, 1080), vec![(1360, 768, 1)]);
        // match_input for 800×600 in ComfyUI's unit gives back about 800×600.
        assert_eq!(at(0.457763671875, 800, 600), vec![(800, 592, 1)]);
    }

    #[test]
    fn webp_batches_are_one_animated_file_unless_rebatched() {
        let mut nodes = shipped(1.0, true, 3);
        let out = saved_files(&nodes, &["14".into()], (800, 600));
        assert_eq!(out.len(), 3);
        assert!(out.iter().all(|f| f.frames == 1 && f.webp));
        nodes.get_mut("14").unwrap().1["images"] = serde_json::json!(["13", 0]);
        let out = saved_files(&nodes, &["14".into()], (800, 600));
        assert_eq!(sizes(&out), vec![(1184, 880, 3)]);
        let png = saved_files(&shipped(1.0, false, 3), &["14".into()], (800, 600));
        assert_eq!(png.len(), 3);
    }

    #[test]
    fn python_rounding_is_half_to_even() {
        assert_eq!(py_round(2.5), 2.0);
        assert_eq!(py_round(3.5), 4.0);
        assert_eq!(depth_map_size(1000, 500, Some(1024.0)), (2048, 1024));
        assert_eq!(depth_map_size(600, 800, None), (512, 683));
    }
}
