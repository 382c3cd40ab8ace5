//! `cargo xtask comfyui-check --url http://gpu-box:8188 [--key KEY]`: asks a running
//! ComfyUI's `GET /object_info` whether every node class and model file Parallax's
//! FLUX.1 Depth [dev] workflow needs is there (both save variants: PNG and WebP) —
//! and the depth preview's (`comfyui_depth_preview.json`, its nodes as `preview/<id>`) —, and
//! says what to install where. It also catches a server whose nodes changed under the
//! workflow (a newly required input, a combo value no longer offered), which is how a
//! ComfyUI update broke every job in Dec 2025 (`resolution_steps`).
//!
//! `/object_info` lists, per class, `input.required` / `input.optional` as
//! `name: [type, options]`, a combo's type being the list of values (or `"COMBO"`
//! with `options.options` on newer servers) and model loaders' combos being the files
//! found in their model folders (Comfy-Org/ComfyUI `server.py` `node_info`).

use serde_json::{Value, json};

use crate::cmd::{Result, root};

/// Where a class comes from, to say what to install.
fn origin(class: &str) -> &'static str {
    match class {
        "DepthAnythingV2Preprocessor" => {
            "the comfyui_controlnet_aux node pack (git clone https://github.com/Fannovel16/comfyui_controlnet_aux into ComfyUI/custom_nodes/, then pip install -r its requirements.txt and restart ComfyUI)"
        }
        _ => "ComfyUI core (update ComfyUI)",
    }
}

/// Where a model input's files go.
fn model_folder(class: &str, input: &str) -> Option<&'static str> {
    match (class, input) {
        ("UNETLoader", "unet_name") => Some("ComfyUI/models/diffusion_models/"),
        ("DualCLIPLoader", "clip_name1" | "clip_name2") => Some("ComfyUI/models/text_encoders/"),
        ("VAELoader", "vae_name") => Some("ComfyUI/models/vae/"),
        _ => None,
    }
}

fn read_graph(name: &str) -> Result<Value> {
    let path = root().join("edge/src/providers").join(name);
    let text =
        std::fs::read_to_string(&path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| e.to_string())
}

/// The workflows as the edge sends them, merged: the PNG graph plus the WebP save
/// (`RebatchImages` → `SaveAnimatedWEBP`) under extra ids, and the depth preview's
/// graph with its ids (and links) prefixed `preview/`.
pub fn workflow() -> Result<Value> {
    let mut g = read_graph("comfyui_flux_depth_dev.json")?;
    g["16"] =
        json!({"class_type": "RebatchImages", "inputs": {"images": ["13", 0], "batch_size": 1}});
    g["17"] = json!({"class_type": "SaveAnimatedWEBP", "inputs": {"images": ["16", 0],
        "filename_prefix": "parallax", "fps": 6.0, "lossless": false, "quality": 80, "method": "default"}});
    let preview = read_graph("comfyui_depth_preview.json")?;
    for (id, node) in preview.as_object().into_iter().flatten() {
        let mut node = node.clone();
        for input in node["inputs"].as_object_mut().into_iter().flatten() {
            if let Some([Value::String(from), slot]) = input.1.as_array().map(Vec::as_slice) {
                *input.1 = json!([format!("preview/{from}"), slot]);
            }
        }
        g[format!("preview/{id}")] = node;
    }
    Ok(g)
}

fn options(spec: &Value) -> Option<Vec<Value>> {
    match &spec[0] {
        Value::Array(values) => Some(values.clone()),
        Value::String(t) if t == "COMBO" => spec[1]["options"].as_array().cloned(),
        _ => None,
    }
}

/// What is missing or different on a server whose `/object_info` is `info`, each a line
/// saying what to do. Empty: the server can run every job.
pub fn problems(info: &Value, workflow: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let mut nodes: Vec<(&String, &Value)> = workflow.as_object().into_iter().flatten().collect();
    nodes.sort_by_key(|(id, _)| id.parse::<u32>().unwrap_or(u32::MAX));
    for (id, node) in nodes {
        let class = node["class_type"].as_str().unwrap_or_default();
        let Some(schema) = info.get(class) else {
            out.push(format!(
                "node {id}: class {class} is not installed; it comes from {}",
                origin(class)
            ));
            continue;
        };
        let inputs = node["inputs"].as_object().cloned().unwrap_or_default();
        for (category, required) in [("required", true), ("optional", false)] {
            for (name, spec) in schema["input"][category].as_object().into_iter().flatten() {
                let Some(value) = inputs.get(name) else {
                    if required {
                        out.push(format!(
                            "node {id} ({class}): this server requires input `{name}`, which Parallax's workflow does not send; update Parallax or pin ComfyUI to an older release"
                        ));
                    }
                    continue;
                };
                if value.is_array() || class == "LoadImage" {
                    continue;
                }
                let Some(values) = options(spec) else {
                    continue;
                };
                if values.contains(value) {
                    continue;
                }
                let line = match model_folder(class, name) {
                    Some(folder) => format!(
                        "node {id} ({class}): model file {value} is missing: put it in {folder} (this server has {})",
                        Value::Array(values)
                    ),
                    None => format!(
                        "node {id} ({class}): `{name}` = {value} is not offered by this server ({})",
                        Value::Array(values)
                    ),
                };
                out.push(line);
            }
        }
    }
    out
}

fn flag(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

pub fn run(args: &[String]) -> Result {
    let url = flag(args, "--url")
        .ok_or("usage: cargo xtask comfyui-check --url http://gpu-box:8188 [--key KEY]")?;
    let key = flag(args, "--key").or_else(|| std::env::var("COMFYUI_API_KEY").ok());
    let client = reqwest::blocking::Client::builder()
        .timeout(std::time::Duration::from_secs(60))
        .build()
        .map_err(|e| e.to_string())?;
    let mut req = client.get(format!("{}/object_info", url.trim_end_matches('/')));
    if let Some(key) = &key {
        req = req.bearer_auth(key);
    }
    let resp = req
        .send()
        .map_err(|e| format!("GET {url}/object_info: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!(
            "GET {url}/object_info answered {}{}",
            resp.status(),
            if resp.status() == 401 {
                " (pass the proxy's key with --key or COMFYUI_API_KEY)"
            } else {
                ""
            }
        ));
    }
    let info: Value = resp.json().map_err(|e| format!("object_info: {e}"))?;
    let found = problems(&info, &workflow()?);
    if found.is_empty() {
        println!(
            "✓ {url} has every node and model file the FLUX.1 Depth [dev] workflow needs.\n  \
             Note: DepthAnythingV2Preprocessor downloads depth_anything_v2_vitl.pth from Hugging Face on first use \
             into custom_nodes/comfyui_controlnet_aux/ckpts/ (pre-place it there on a box without internet)."
        );
        return Ok(());
    }
    for line in &found {
        eprintln!("✗ {line}");
    }
    Err(format!(
        "{url} cannot run Parallax's workflow: {} problem(s) above",
        found.len()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sim's `/object_info`, built from the same real schemas.
    fn sim_info() -> Value {
        let catalog: Value =
            serde_json::from_str(include_str!("../../sim/src/comfyui/nodes.json")).unwrap();
        catalog["object_info"].clone()
    }

    #[test]
    fn the_sims_server_has_everything() {
        assert_eq!(
            problems(&sim_info(), &workflow().unwrap()),
            Vec::<String>::new()
        );
    }

    #[test]
    fn missing_packs_models_and_new_inputs_say_what_to_do() {
        let mut info = sim_info();
        info.as_object_mut()
            .unwrap()
            .remove("DepthAnythingV2Preprocessor");
        info["UNETLoader"]["input"]["required"]["unet_name"][0] = json!(["flux1-dev.safetensors"]);
        info["KSampler"]["input"]["required"]["sigma_shift"] = json!(["FLOAT", {"min": 0.0}]);
        let found = problems(&info, &workflow().unwrap());
        assert_eq!(found.len(), 4, "{found:#?}");
        assert!(found[0].contains("UNETLoader") && found[0].contains("models/diffusion_models/"));
        assert!(
            found[1].contains("DepthAnythingV2Preprocessor")
                && found[1].contains("comfyui_controlnet_aux")
        );
        assert!(found[2].contains("sigma_shift"));
        // The depth preview needs the same pack.
        assert!(
            found[3].starts_with("node preview/6: class DepthAnythingV2Preprocessor"),
            "{found:#?}"
        );
    }

    #[test]
    fn the_preview_graph_is_checked_with_its_own_links() {
        let g = workflow().unwrap();
        assert_eq!(g["preview/6"]["inputs"]["image"], json!(["preview/4", 0]));
        assert_eq!(g["preview/14"]["inputs"]["images"], json!(["preview/6", 0]));
        let mut info = sim_info();
        info["DepthAnythingV2Preprocessor"]["input"]["optional"]["ckpt_name"][0] =
            json!(["depth_anything_v2_vits.pth"]);
        let found = problems(&info, &g);
        assert_eq!(found.len(), 2, "main and preview: {found:#?}");
    }

    #[test]
    fn newer_combo_form_is_understood() {
        let mut info = sim_info();
        info["KSampler"]["input"]["required"]["scheduler"] =
            json!(["COMBO", {"options": ["normal", "karras"]}]);
        let found = problems(&info, &workflow().unwrap());
        assert_eq!(found.len(), 1);
        assert!(found[0].contains("`scheduler` = \"simple\""), "{found:?}");
    }
}
