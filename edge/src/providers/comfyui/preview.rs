//! The depth preview on ComfyUI (`depth-anything-v2`): `LoadImage` →
//! `DepthAnythingV2Preprocessor` → `SaveImage`, no diffusion
//! (`comfyui_depth_preview.json`). The same upload, queue, history and `/view` as the
//! main workflow; only the graph differs.
//!
//! `DepthAnythingV2Preprocessor` (Fannovel16/comfyui_controlnet_aux @e8b689a5
//! `node_wrappers/depth_anything_v2.py`): inputs `image`, `ckpt_name` (one of
//! `depth_anything_v2_vit{g,l,b,s}.pth`, default `vitl`) and `resolution` (INT, 64..
//! 16384 step 64, default 512, `utils.py` `INPUT.RESOLUTION`); it returns one IMAGE,
//! the map greyscale in three channels, near = bright (the model's relative inverse
//! depth, min-max normalised), its short side = `resolution`. `SaveImage` writes it as
//! an RGB PNG (ComfyUI `nodes.py` `SaveImage`).

use serde_json::{Value, json};

use super::{Order, job_folder};

const PREVIEW: &str = include_str!("../comfyui_depth_preview.json");

/// The short side of the map, in pixels: the node's default, enough to judge a layout
/// beside the photo and cheap on the GPU.
pub const RESOLUTION: u32 = 512;

/// The preview graph for `job`, reading the uploaded `image_name`.
pub fn workflow(job: &Order<'_>, image_name: &str) -> Value {
    let mut g: Value = serde_json::from_str(PREVIEW).unwrap_or_default();
    g["4"]["inputs"]["image"] = json!(image_name);
    g["6"]["inputs"]["resolution"] = json!(RESOLUTION);
    g["14"]["inputs"]["filename_prefix"] = json!(format!("{}/depth", job_folder(job)));
    g
}

/// The main workflow for a control image that already is a depth map
/// (`control_type: depth`): the estimator (node 6) is left out, and the output size
/// (node 15) reads the bounded image (node 5) itself.
pub fn without_estimator(g: &mut Value) {
    if let Some(nodes) = g.as_object_mut() {
        nodes.remove("6");
    }
    g["15"]["inputs"]["image"] = json!(["5", 0]);
}
