//! The model catalog: which models exist and every parameter each one takes, with its
//! type, range, default and a one-line help text. This is the single source of truth
//! for the edge's validation, the app's form and the OpenAPI document.

use serde::Serialize;

/// Longest prompt accepted, in characters.
pub const MAX_PROMPT_CHARS: usize = 2_000;

/// A model served by Parallax: the two FLUX.1 Depth generators, and the depth preview
/// (a control image's depth map, without diffusion).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
pub enum Model {
    #[serde(rename = "flux-depth-pro")]
    FluxDepthPro,
    #[serde(rename = "flux-depth-dev")]
    FluxDepthDev,
    /// Depth Anything V2's depth map of the control image: one greyscale PNG, near =
    /// bright. No prompt, no seed; priced on its own (`PREVIEW_CREDITS`, 0 by default).
    #[serde(rename = "depth-anything-v2")]
    DepthAnythingV2,
}

impl Model {
    /// Every model, the preview included (routes, the catalog, the OpenAPI document).
    pub const ALL: [Model; 3] = [
        Model::FluxDepthPro,
        Model::FluxDepthDev,
        Model::DepthAnythingV2,
    ];

    /// The models that generate an image from a prompt (a studio's model picker).
    pub const GENERATORS: [Model; 2] = [Model::FluxDepthPro, Model::FluxDepthDev];

    /// Whether this is the depth preview: no prompt, no seed, a greyscale PNG out.
    pub fn is_preview(self) -> bool {
        matches!(self, Self::DepthAnythingV2)
    }

    /// The URL path segment, e.g. `flux-depth-pro`.
    pub fn slug(self) -> &'static str {
        match self {
            Self::FluxDepthPro => "flux-depth-pro",
            Self::FluxDepthDev => "flux-depth-dev",
            Self::DepthAnythingV2 => "depth-anything-v2",
        }
    }

    pub fn from_slug(slug: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.slug() == slug)
    }

    pub fn title(self) -> &'static str {
        match self {
            Self::FluxDepthPro => "FLUX.1 Depth [pro]",
            Self::FluxDepthDev => "FLUX.1 Depth [dev]",
            Self::DepthAnythingV2 => "Depth Anything V2 (depth preview)",
        }
    }

    pub fn summary(self) -> &'static str {
        match self {
            Self::FluxDepthPro => {
                "Black Forest Labs' professional depth-guided model: highest fidelity, one image per job."
            }
            Self::FluxDepthDev => {
                "The open-weight depth-guided model: up to four images per job, size and quality controls."
            }
            Self::DepthAnythingV2 => {
                "The depth map the FLUX models keep of a control image (greyscale PNG, near = bright), to see before spending on a generation."
            }
        }
    }

    /// Every parameter the model takes, in form order.
    pub fn params(self) -> &'static [ParamSpec] {
        match self {
            Self::FluxDepthPro => PRO_PARAMS,
            Self::FluxDepthDev => DEV_PARAMS,
            Self::DepthAnythingV2 => PREVIEW_PARAMS,
        }
    }

    pub fn param(self, name: &str) -> Option<&'static ParamSpec> {
        self.params().iter().find(|p| p.name == name)
    }
}

/// What kind of value a parameter takes, with its range and default.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ParamKind {
    /// Free text, non-empty, at most `max_chars` characters.
    Prompt {
        max_chars: usize,
    },
    /// The control image: a file, an https URL, a data URL or raw base64.
    Image,
    /// 0..=4294967295; a random one is chosen (and returned) when absent.
    Seed,
    Integer {
        min: i64,
        max: i64,
        default: i64,
    },
    Number {
        min: f64,
        max: f64,
        default: f64,
        step: f64,
    },
    Boolean {
        default: bool,
    },
    Choice {
        options: &'static [&'static str],
        default: &'static str,
    },
}

/// One parameter of a model.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ParamSpec {
    /// The wire name, as in Segmind's API.
    pub name: &'static str,
    /// A short human label for forms.
    pub label: &'static str,
    /// One line of help text.
    pub help: &'static str,
    pub kind: ParamKind,
    pub required: bool,
    /// Folded away under "Advanced" in the playground.
    pub advanced: bool,
}

const PROMPT: ParamSpec = ParamSpec {
    name: "prompt",
    label: "Prompt",
    help: "What the new image should show; the control image's layout is kept.",
    kind: ParamKind::Prompt {
        max_chars: MAX_PROMPT_CHARS,
    },
    required: true,
    advanced: false,
};

const CONTROL_IMAGE: ParamSpec = ParamSpec {
    name: "control_image",
    label: "Control image",
    help: "The image whose depth (spatial layout) is kept. JPEG, PNG or WebP.",
    kind: ParamKind::Image,
    required: true,
    advanced: false,
};

const SEED: ParamSpec = ParamSpec {
    name: "seed",
    label: "Seed",
    help: "Same seed and inputs give the same image. Leave empty for a random one.",
    kind: ParamKind::Seed,
    required: false,
    advanced: true,
};

/// `control_type`'s values.
pub const CONTROL_TYPES: &[&str] = &["image", "depth"];

/// Whether the control image is a photo whose depth is estimated, or already a depth map.
const CONTROL_TYPE: ParamSpec = ParamSpec {
    name: "control_type",
    label: "Control type",
    help: "image: Parallax estimates the depth; depth: the control image already is a depth map (near = bright)",
    kind: ParamKind::Choice {
        options: CONTROL_TYPES,
        default: "image",
    },
    required: false,
    advanced: false,
};

const OUTPUT_FORMATS: &[&str] = &["jpg", "png", "webp"];

const PREVIEW_PARAMS: &[ParamSpec] = &[ParamSpec {
    name: "control_image",
    label: "Control image",
    help: "The image whose depth map to estimate. JPEG, PNG or WebP.",
    kind: ParamKind::Image,
    required: true,
    advanced: false,
}];

const PRO_PARAMS: &[ParamSpec] = &[
    PROMPT,
    CONTROL_IMAGE,
    CONTROL_TYPE,
    ParamSpec {
        name: "steps",
        label: "Steps",
        help: "Diffusion steps: more gives finer detail but takes longer.",
        kind: ParamKind::Integer {
            min: 15,
            max: 50,
            default: 40,
        },
        required: false,
        advanced: true,
    },
    ParamSpec {
        name: "guidance",
        label: "Guidance",
        help: "How closely to follow the prompt; lower is freer, higher is more literal.",
        kind: ParamKind::Number {
            min: 1.0,
            max: 50.0,
            default: 7.0,
            step: 0.5,
        },
        required: false,
        advanced: false,
    },
    ParamSpec {
        name: "output_format",
        label: "Format",
        help: "File format of the generated image.",
        kind: ParamKind::Choice {
            options: OUTPUT_FORMATS,
            default: "jpg",
        },
        required: false,
        advanced: false,
    },
    ParamSpec {
        name: "safety_tolerance",
        label: "Safety tolerance",
        help: "1 is the strictest moderation, 6 the most permissive.",
        kind: ParamKind::Integer {
            min: 1,
            max: 6,
            default: 2,
        },
        required: false,
        advanced: true,
    },
    ParamSpec {
        name: "prompt_upsampling",
        label: "Prompt upsampling",
        help: "Let the model rewrite the prompt for a more creative result.",
        kind: ParamKind::Boolean { default: false },
        required: false,
        advanced: true,
    },
    SEED,
];

const DEV_PARAMS: &[ParamSpec] = &[
    PROMPT,
    CONTROL_IMAGE,
    CONTROL_TYPE,
    ParamSpec {
        name: "guidance",
        label: "Guidance",
        help: "How closely to follow the prompt; lower is freer, higher is more literal.",
        kind: ParamKind::Number {
            min: 0.0,
            max: 100.0,
            default: 10.0,
            step: 0.5,
        },
        required: false,
        advanced: false,
    },
    ParamSpec {
        name: "num_outputs",
        label: "Images",
        help: "How many images to generate from the same inputs (1 to 4).",
        kind: ParamKind::Integer {
            min: 1,
            max: 4,
            default: 1,
        },
        required: false,
        advanced: false,
    },
    ParamSpec {
        name: "megapixels",
        label: "Size",
        help: "Approximate output size; match_input follows the control image (up to 1440×1440).",
        kind: ParamKind::Choice {
            options: &["1", "0.25", "match_input"],
            default: "1",
        },
        required: false,
        advanced: false,
    },
    ParamSpec {
        name: "output_format",
        label: "Format",
        help: "File format of the generated images.",
        kind: ParamKind::Choice {
            options: &["webp", "jpg", "png"],
            default: "jpg",
        },
        required: false,
        advanced: false,
    },
    ParamSpec {
        name: "num_inference_steps",
        label: "Steps",
        help: "Denoising steps: 28 to 50 is recommended; fewer is faster but rougher.",
        kind: ParamKind::Integer {
            min: 1,
            max: 50,
            default: 28,
        },
        required: false,
        advanced: true,
    },
    ParamSpec {
        name: "output_quality",
        label: "Quality",
        help: "JPEG/WebP quality from 0 to 100; ignored for PNG.",
        kind: ParamKind::Integer {
            min: 0,
            max: 100,
            default: 80,
        },
        required: false,
        advanced: true,
    },
    ParamSpec {
        name: "disable_safety_checker",
        label: "Disable safety checker",
        help: "Skip the NSFW filter on generated images.",
        kind: ParamKind::Boolean { default: false },
        required: false,
        advanced: true,
    },
    SEED,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_round_trip() {
        for m in Model::ALL {
            assert_eq!(Model::from_slug(m.slug()), Some(m));
        }
        assert_eq!(Model::from_slug("flux-depth"), None);
    }

    #[test]
    fn the_preview_takes_only_an_image_and_the_generators_take_a_control_type() {
        let preview = Model::DepthAnythingV2;
        assert!(preview.is_preview() && !Model::GENERATORS.contains(&preview));
        let names: Vec<&str> = preview.params().iter().map(|p| p.name).collect();
        assert_eq!(names, ["control_image"]);
        for m in Model::GENERATORS {
            assert!(!m.is_preview());
            assert!(m.param("prompt").is_some());
            let ct = m.param("control_type").unwrap();
            assert_eq!(
                ct.kind,
                ParamKind::Choice {
                    options: &["image", "depth"],
                    default: "image"
                }
            );
        }
        assert_eq!(
            serde_json::to_value(preview).unwrap(),
            serde_json::json!("depth-anything-v2")
        );
    }

    #[test]
    fn every_parameter_has_help_and_a_default_inside_its_range() {
        for m in Model::ALL {
            for p in m.params() {
                assert!(!p.help.is_empty() && !p.label.is_empty(), "{}", p.name);
                match p.kind {
                    ParamKind::Integer { min, max, default } => {
                        assert!((min..=max).contains(&default), "{}", p.name)
                    }
                    ParamKind::Number {
                        min, max, default, ..
                    } => assert!((min..=max).contains(&default), "{}", p.name),
                    ParamKind::Choice { options, default } => {
                        assert!(options.contains(&default), "{}", p.name)
                    }
                    _ => {}
                }
            }
        }
    }
}
