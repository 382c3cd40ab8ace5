//! The 1min.ai features API for Flux Depth Pro (`../shared/reference/004_…`):
//! `POST /api/features` with `{"type": "IMAGE_EDITOR", "model":
//! "black-forest-labs/flux-depth-pro", "promptObject": {…}}`, answered synchronously
//! with `{"aiRecord": {…, "status": "SUCCESS", "aiRecordDetail": {"promptObject",
//! "resultObject": [path], "responseObject": {}}, "temporaryUrl"}}`.
//!
//! 1min.ai's ranges are checked first, so errors speak its names and ranges
//! (`promptObject.guidance` 1.0–20.0); then its parameters become flux-depth-pro's:
//! `format` → `output_format`, `imageUrl` → the control image, and `steps` below the
//! model's minimum of 15 run at 15 (1min.ai accepts 1–50). Its defaults (28 steps,
//! guidance 3.5) are applied, not ours. An absent seed is a random one, returned in
//! the echoed `promptObject`.
//!
//! `imageUrl` is an https URL, a data URL, or the path of an image this API stored
//! before: one uploaded with `POST /api/assets` (`assets/…`, as 1min.ai's asset API
//! answers it) or an earlier result (`results/…`, from a `resultObject`).

use parallax_api::{FieldError, Model, ParamKind, ParamSpec, RequestId, validate_value};
use serde_json::{Map, Value, json};

use super::{choice_field, object_field, unknown_fields};
use crate::input::image::ImageFormat;
use crate::objects::runner::JobRecord;
use crate::storage::keys;

pub const TYPE: &str = "IMAGE_EDITOR";
pub const MODEL: &str = "black-forest-labs/flux-depth-pro";
const FIELDS: [&str; 3] = ["type", "model", "promptObject"];
const PROMPT_OBJECT: &str = "promptObject.";
/// flux-depth-pro's fewest steps; 1min.ai's lower values run at this.
const PRO_MIN_STEPS: i64 = 15;

/// 1min.ai's parameters, with its ranges and defaults, in its names.
const PARAMS: [ParamSpec; 6] = [
    spec("seed", ParamKind::Seed),
    spec(
        "steps",
        ParamKind::Integer {
            min: 1,
            max: 50,
            default: 28,
        },
    ),
    spec(
        "guidance",
        ParamKind::Number {
            min: 1.0,
            max: 20.0,
            default: 3.5,
            step: 0.1,
        },
    ),
    spec(
        "safety_tolerance",
        ParamKind::Integer {
            min: 1,
            max: 6,
            default: 2,
        },
    ),
    spec("prompt_upsampling", ParamKind::Boolean { default: false }),
    spec(
        "format",
        ParamKind::Choice {
            options: &["jpg", "png", "webp"],
            default: "jpg",
        },
    ),
];

const fn spec(name: &'static str, kind: ParamKind) -> ParamSpec {
    ParamSpec {
        name,
        label: name,
        help: "1min.ai parameter",
        kind,
        required: false,
        advanced: false,
    }
}

/// Where the control image comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageSource {
    /// An https URL or a data URL, resolved like any `control_image`.
    Inline(String),
    /// An R2 key this edge wrote: an uploaded asset or an earlier output.
    Stored(String),
}

/// A validated `POST /api/features` body.
#[derive(Debug, Clone, PartialEq)]
pub struct Feature {
    /// flux-depth-pro's fields, without the control image.
    pub fields: Map<String, Value>,
    pub image: ImageSource,
    /// What the caller sent, with 1min.ai's defaults filled in: echoed back.
    pub prompt_object: Map<String, Value>,
}

/// Checks the envelope and 1min.ai's parameter ranges, and maps them to the model's.
pub fn parse_feature(body: &Map<String, Value>) -> Result<Feature, Vec<FieldError>> {
    let mut errors = unknown_fields(body, "", &FIELDS);
    for (name, allowed) in [("type", TYPE), ("model", MODEL)] {
        if let Err(e) = choice_field(body, name, &[allowed], true) {
            errors.push(e);
        }
    }
    let prompt_object = match object_field(body, "promptObject") {
        Ok(Some(o)) => o,
        Ok(None) => {
            errors.push(FieldError::new("promptObject", "is required"));
            return Err(errors);
        }
        Err(e) => {
            errors.push(e);
            return Err(errors);
        }
    };
    let known: Vec<&str> = ["imageUrl", "prompt"]
        .into_iter()
        .chain(PARAMS.iter().map(|p| p.name))
        .collect();
    errors.extend(unknown_fields(prompt_object, PROMPT_OBJECT, &known));

    let mut echo = prompt_object.clone();
    let mut fields = Map::new();
    match prompt_object.get("prompt") {
        Some(p) => {
            fields.insert("prompt".into(), p.clone());
        }
        None => errors.push(FieldError::new("promptObject.prompt", "is required")),
    }
    for spec in &PARAMS {
        let value = match prompt_object.get(spec.name).filter(|v| !v.is_null()) {
            Some(v) => match validate_value(spec, v) {
                Ok(v) => v,
                Err(e) => {
                    errors.push(FieldError::new(format!("{PROMPT_OBJECT}{}", spec.name), e));
                    continue;
                }
            },
            None => match parallax_api::params::default_value(spec) {
                Some(d) => d,
                None => continue,
            },
        };
        echo.insert(spec.name.into(), value.clone());
        let (name, value) = match spec.name {
            "format" => ("output_format", value),
            "steps" => (
                "steps",
                Value::from(value.as_i64().unwrap_or(PRO_MIN_STEPS).max(PRO_MIN_STEPS)),
            ),
            other => (other, value),
        };
        fields.insert(name.into(), value);
    }
    let image = match prompt_object.get("imageUrl") {
        Some(Value::String(s)) => image_source(s)
            .map_err(|e| errors.push(FieldError::new("promptObject.imageUrl", e)))
            .ok(),
        Some(_) => {
            errors.push(FieldError::new("promptObject.imageUrl", "must be a string"));
            None
        }
        None => {
            errors.push(FieldError::new("promptObject.imageUrl", "is required"));
            None
        }
    };
    match image {
        Some(image) if errors.is_empty() => Ok(Feature {
            fields,
            image,
            prompt_object: echo,
        }),
        _ => Err(errors),
    }
}

/// Classifies `imageUrl`.
pub fn image_source(value: &str) -> Result<ImageSource, String> {
    let value = value.trim();
    let lower = value.get(..8).unwrap_or(value).to_ascii_lowercase();
    if lower.starts_with("https://") || lower.starts_with("data:") {
        return Ok(ImageSource::Inline(value.to_owned()));
    }
    let path = value.trim_start_matches('/');
    let stored = match path.split('/').collect::<Vec<_>>().as_slice() {
        ["assets", file] => file
            .split_once('.')
            .filter(|(id, ext)| is_asset_id(id) && ImageFormat::from_ext(ext).is_some())
            .is_some(),
        ["results", id, file] => {
            RequestId::parse(id).is_some()
                && file.split_once('.').is_some_and(|(n, ext)| {
                    n.parse::<u8>().is_ok_and(|n| n < 4) && ImageFormat::from_ext(ext).is_some()
                })
        }
        _ => false,
    };
    if stored {
        Ok(ImageSource::Stored(path.to_owned()))
    } else {
        Err("must be an https URL, a data URL, or the path of an image uploaded with POST /api/assets (or of an earlier result)".into())
    }
}

/// Asset ids are 32 lowercase hex digits (128 random bits).
pub fn is_asset_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Validation errors of the model's parameters, named as 1min.ai names them.
pub fn prompt_object_errors(errors: Vec<FieldError>) -> Vec<FieldError> {
    super::rename_fields(errors, PROMPT_OBJECT, |ours| match ours {
        "output_format" => Some("format"),
        "control_image" => Some("imageUrl"),
        _ => None,
    })
}

/// `POST /api/assets`' answer for a stored upload, in the shape of 1min.ai's asset API
/// (`fileContent.path` is what `imageUrl` takes).
pub fn asset(key: &str, format: ImageFormat, size: usize, origin: &str) -> Value {
    json!({
        "asset": {
            "key": key,
            "location": format!("{origin}/api/{key}"),
            "mimeType": format.media_type(),
            "size": size,
        },
        "fileContent": {
            "path": key,
            "url": format!("{origin}/api/{key}"),
        },
    })
}

/// The `aiRecord` answer for a completed job.
pub fn ai_record(job: &JobRecord, prompt_object: &Map<String, Value>, origin: &str) -> Value {
    let paths: Vec<String> = job
        .outputs
        .iter()
        .enumerate()
        .map(|(n, o)| keys::output(&job.id, n, &o.ext))
        .collect();
    let mut echo = prompt_object.clone();
    if let Some(seed) = job.params.seed() {
        echo.insert("seed".into(), Value::from(seed));
    }
    let user = super::account_uuid(&job.ownership.owner);
    json!({
        "aiRecord": {
            "uuid": job.id,
            "userId": user,
            "teamId": user,
            "model": MODEL,
            "type": TYPE,
            "metadata": null,
            "rating": null,
            "feedback": null,
            "conversationId": null,
            "status": "SUCCESS",
            "createdAt": super::iso8601(job.created_ms),
            "aiRecordDetail": {
                "promptObject": echo,
                "resultObject": paths,
                "responseObject": {},
            },
            "additionalData": null,
            "temporaryUrl": paths.first().map(|p| format!("{origin}/{p}")),
        }
    })
}

/// The model this API runs.
pub const fn model() -> Model {
    Model::FluxDepthPro
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects::runner::tests::completed;

    fn body(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    fn docs_example(prompt_object: Value) -> Map<String, Value> {
        body(json!({
            "type": "IMAGE_EDITOR",
            "model": "black-forest-labs/flux-depth-pro",
            "promptObject": prompt_object,
        }))
    }

    #[test]
    fn the_docs_example_maps_to_flux_depth_pro() {
        let f = parse_feature(&docs_example(json!({
            "imageUrl": "https://example.com/human.jpg",
            "prompt": "Add realistic depth blur to background while keeping subject sharp",
            "seed": 42,
            "steps": 28,
            "prompt_upsampling": true,
            "guidance": 3.5,
            "safety_tolerance": 2,
            "format": "jpg"
        })))
        .unwrap();
        assert_eq!(
            f.image,
            ImageSource::Inline("https://example.com/human.jpg".into())
        );
        assert_eq!(f.fields["output_format"], "jpg");
        assert_eq!(f.fields["steps"], 28);
        assert_eq!(f.fields["guidance"], 3.5);
        assert_eq!(f.fields["prompt_upsampling"], true);
        assert!(!f.fields.contains_key("format") && !f.fields.contains_key("imageUrl"));
        // And the model takes them as they are.
        parallax_api::validate(model(), &f.fields, true).unwrap();
    }

    #[test]
    fn onemin_defaults_apply_and_few_steps_run_at_the_models_minimum() {
        let f = parse_feature(&docs_example(json!({
            "imageUrl": "assets/0123456789abcdef0123456789abcdef.png",
            "prompt": "x",
            "steps": 4
        })))
        .unwrap();
        assert_eq!(f.fields["steps"], 15);
        assert_eq!(f.prompt_object["steps"], 4, "the echo keeps what was asked");
        assert_eq!(f.fields["guidance"], 3.5);
        assert_eq!(f.fields["safety_tolerance"], 2);
        assert_eq!(f.prompt_object["format"], "jpg");
        assert!(!f.fields.contains_key("seed"));
        assert_eq!(
            f.image,
            ImageSource::Stored("assets/0123456789abcdef0123456789abcdef.png".into())
        );
    }

    #[test]
    fn ranges_and_names_are_onemins() {
        let errors = parse_feature(&docs_example(json!({
            "imageUrl": "development/images/2025_02_16_15_42_40_711_human.jpg",
            "prompt": "x",
            "guidance": 25,
            "steps": 0,
            "seed": 4_294_967_296_u64,
            "format": "gif",
            "negative_prompt": "y"
        })))
        .unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        for f in [
            "promptObject.guidance",
            "promptObject.steps",
            "promptObject.seed",
            "promptObject.format",
            "promptObject.negative_prompt",
            "promptObject.imageUrl",
        ] {
            assert!(fields.contains(&f), "{f} in {fields:?}");
        }
        let guidance = errors
            .iter()
            .find(|e| e.field == "promptObject.guidance")
            .unwrap();
        assert_eq!(guidance.message, "must be between 1 and 20");
        assert!(
            parse_feature(&docs_example(
                json!({"imageUrl": "https://e.com/a.jpg", "prompt": "x", "seed": 4_294_967_295_u64})
            ))
            .is_ok()
        );
    }

    #[test]
    fn wrong_type_or_model_names_the_allowed_value() {
        let errors = parse_feature(&body(json!({
            "type": "IMAGE_GENERATOR",
            "model": "black-forest-labs/flux-pro",
            "promptObject": {"imageUrl": "https://e.com/a.jpg", "prompt": "x"}
        })))
        .unwrap_err();
        assert_eq!(errors[0].field, "type");
        assert_eq!(errors[0].message, "must be IMAGE_EDITOR");
        assert_eq!(errors[1].field, "model");
        assert_eq!(
            errors[1].message,
            "must be black-forest-labs/flux-depth-pro"
        );
    }

    #[test]
    fn stored_paths_are_assets_or_earlier_results_only() {
        let id = "2c7f59ea-13f1-402c-9353-915a2b5a2124";
        assert!(
            matches!(image_source(&format!("/results/{id}/0.jpg")), Ok(ImageSource::Stored(p)) if p == format!("results/{id}/0.jpg"))
        );
        for bad in [
            "inputs/2c7f59ea-13f1-402c-9353-915a2b5a2124",
            "assets/../inputs/x.jpg",
            "assets/XYZ.jpg",
            "results/not-an-id/0.jpg",
            "http://example.com/a.jpg",
        ] {
            assert!(image_source(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_record_points_at_the_image_in_r2_and_echoes_the_seed() {
        let done = completed(1);
        let po = body(json!({"prompt": "x", "steps": 28}));
        let r = ai_record(&done, &po, "https://px.example");
        let rec = &r["aiRecord"];
        assert_eq!(rec["status"], "SUCCESS");
        assert_eq!(rec["uuid"], done.id.as_str());
        let path = format!("results/{}/0.jpg", done.id);
        assert_eq!(rec["aiRecordDetail"]["resultObject"], json!([path]));
        assert_eq!(rec["temporaryUrl"], format!("https://px.example/{path}"));
        assert_eq!(rec["aiRecordDetail"]["promptObject"]["seed"], 42);
        assert_eq!(rec["aiRecordDetail"]["responseObject"], json!({}));
    }
}
