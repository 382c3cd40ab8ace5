//! The operator's model fallback: `FALLBACK_FLUX_DEPTH_PRO = "flux-depth-dev"` (off by
//! default) serves a pro request with dev when no pro provider is healthy (none ready
//! and able, or every one's circuit breaker open). BFL retired `flux-pro-1.0-depth` on
//! 2025-10-31, and Segmind's and Replicate's pro are BFL-backed, so a deployment may
//! prefer dev to a refusal.
//!
//! The job then runs as dev with these parameters, charged dev's price; its result keeps
//! `model: flux-depth-pro` (what was asked) and says `metrics.model: flux-depth-dev`,
//! and the share page names the model that made the image.
//!
//! | pro | dev | why |
//! |---|---|---|
//! | `prompt`, `seed` | same | |
//! | `steps` 15..50 | `num_inference_steps` | dev's range 1..50 holds pro's |
//! | `guidance` 1..50 | `guidance` | the same FLUX guidance; dev's range 0..100 holds it |
//! | `output_format` | same | dev writes jpg, png and webp |
//! | `control_type` | same | a depth map sent as the control image stays one: dev is routed only to providers that take it, or the request is the 400 naming `control_type` |
//! | `safety_tolerance` 1..6 | `disable_safety_checker: false` | dev has only an on/off checker: always on, the strictest reading |
//! | `prompt_upsampling` | dropped | dev has no equivalent |
//! | | `num_outputs: 1`, `megapixels: "1"` | what pro gives |

use parallax_api::{Model, Params};
use serde_json::{Map, Value, json};

/// The dev parameters for a pro job's, mapped as the table above says.
pub fn dev_params(pro: &Params) -> Option<Params> {
    let mut fields = Map::new();
    fields.insert("prompt".into(), json!(pro.prompt()));
    for (from, to) in [
        ("seed", "seed"),
        ("steps", "num_inference_steps"),
        ("guidance", "guidance"),
        ("output_format", "output_format"),
        ("control_type", "control_type"),
    ] {
        if let Some(v) = pro.get(from) {
            fields.insert(to.into(), v.clone());
        }
    }
    fields.insert("num_outputs".into(), json!(1));
    fields.insert("megapixels".into(), json!("1"));
    fields.insert("disable_safety_checker".into(), Value::Bool(false));
    parallax_api::validate(Model::FluxDepthDev, &fields, true)
        .ok()
        .map(|v| v.params)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pro_parameters_map_explicitly_onto_dev() {
        let mut pro = parallax_api::validate(
            Model::FluxDepthPro,
            json!({"prompt": "a barn", "steps": 30, "guidance": 25, "output_format": "png",
                   "safety_tolerance": 6, "prompt_upsampling": true})
            .as_object()
            .unwrap(),
            true,
        )
        .unwrap()
        .params;
        pro.set_seed(9);
        let dev = dev_params(&pro).unwrap();
        assert_eq!(dev.prompt(), "a barn");
        assert_eq!(dev.get("num_inference_steps"), Some(&json!(30)));
        assert_eq!(dev.get("guidance").and_then(Value::as_f64), Some(25.0));
        assert_eq!(dev.output_format(), "png");
        assert_eq!(dev.seed(), Some(9));
        assert_eq!(dev.num_outputs(), 1);
        assert_eq!(dev.get("disable_safety_checker"), Some(&json!(false)));
        assert_eq!(dev.get("prompt_upsampling"), None);
        assert_eq!(dev.get("safety_tolerance"), None);
        assert!(!dev.control_is_depth());
    }

    #[test]
    fn a_depth_map_control_stays_a_depth_map_on_dev() {
        let pro = parallax_api::validate(
            Model::FluxDepthPro,
            json!({"prompt": "a barn", "control_type": "depth"})
                .as_object()
                .unwrap(),
            true,
        )
        .unwrap()
        .params;
        assert!(dev_params(&pro).unwrap().control_is_depth());
    }

    #[test]
    fn every_pro_parameter_is_mapped_or_named_as_dropped() {
        // A new pro parameter must be decided on here (and in the table above).
        let decided = [
            "prompt",
            "control_image",
            "control_type",
            "steps",
            "guidance",
            "output_format",
            "safety_tolerance",
            "prompt_upsampling",
            "seed",
        ];
        for spec in Model::FluxDepthPro.params() {
            assert!(decided.contains(&spec.name), "{} is not mapped", spec.name);
        }
    }
}
