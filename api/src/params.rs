//! Validation of a submission's fields against the catalog. Values may arrive typed
//! (JSON) or as strings (multipart forms: `"False"`, `"7"`, `"0.25"`); both parse to the
//! same typed [`Params`]. Every problem is reported per field, all at once.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Number, Value};

use crate::control::ControlImage;
use crate::error::FieldError;
use crate::models::{Model, ParamKind, ParamSpec};

/// A job's validated parameters, defaults filled in (the control image excluded).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Params(pub BTreeMap<String, Value>);

impl Params {
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.0.get(name)
    }

    pub fn prompt(&self) -> &str {
        self.get("prompt")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    pub fn seed(&self) -> Option<u32> {
        self.get("seed")
            .and_then(Value::as_u64)
            .and_then(|s| u32::try_from(s).ok())
    }

    pub fn set_seed(&mut self, seed: u32) {
        self.0.insert("seed".into(), Value::from(seed));
    }

    pub fn str(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(Value::as_str)
    }

    pub fn int(&self, name: &str) -> Option<i64> {
        self.get(name).and_then(Value::as_i64)
    }

    /// The output file extension (`jpg`, `png` or `webp`). A depth preview's params
    /// have no `output_format`: see [`crate::Model::output_format`].
    pub fn output_format(&self) -> &str {
        self.str("output_format").unwrap_or("jpg")
    }

    /// Whether the control image already is a depth map (`control_type: depth`).
    pub fn control_is_depth(&self) -> bool {
        self.str("control_type") == Some("depth")
    }

    /// How many images the job produces.
    pub fn num_outputs(&self) -> usize {
        self.int("num_outputs")
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(1)
    }
}

/// A submission that passed validation.
#[derive(Debug, Clone, PartialEq)]
pub struct Validated {
    pub params: Params,
    pub control_image: ControlImage,
}

/// Validates a submission's fields for `model`. `has_upload` tells whether the
/// control image came as a multipart file part (then `fields` must not also carry it).
pub fn validate(
    model: Model,
    fields: &Map<String, Value>,
    has_upload: bool,
) -> Result<Validated, Vec<FieldError>> {
    let mut errors = Vec::new();
    let mut params = Params::default();
    let mut control_image = has_upload.then_some(ControlImage::Upload);

    for name in fields.keys() {
        if model.param(name).is_none() {
            let allowed: Vec<&str> = model.params().iter().map(|p| p.name).collect();
            errors.push(FieldError::new(
                name.chars().take(64).collect::<String>(),
                format!(
                    "unknown field for {}; allowed: {}",
                    model.slug(),
                    allowed.join(", ")
                ),
            ));
        }
    }

    for spec in model.params() {
        let value = fields.get(spec.name).filter(|v| !is_blank(v));
        if let ParamKind::Image = spec.kind {
            match (value, has_upload) {
                (Some(_), true) => errors.push(FieldError::new(
                    spec.name,
                    "sent twice: as a file and as a value; send one",
                )),
                (Some(Value::String(s)), false) => match ControlImage::parse(s) {
                    Ok(c) => control_image = Some(c),
                    Err(e) => errors.push(FieldError::new(spec.name, e)),
                },
                (Some(_), false) => errors.push(FieldError::new(
                    spec.name,
                    "must be an image file, an https URL, a data URL or base64",
                )),
                (None, true) => {}
                (None, false) => errors.push(FieldError::new(spec.name, "is required")),
            }
            continue;
        }
        match value {
            None if spec.required => errors.push(FieldError::new(spec.name, "is required")),
            None => {
                if let Some(default) = default_value(spec) {
                    params.0.insert(spec.name.into(), default);
                }
            }
            Some(v) => match validate_value(spec, v) {
                Ok(v) => {
                    params.0.insert(spec.name.into(), v);
                }
                Err(e) => errors.push(FieldError::new(spec.name, e)),
            },
        }
    }

    match control_image {
        Some(control_image) if errors.is_empty() => Ok(Validated {
            params,
            control_image,
        }),
        _ => Err(errors),
    }
}

fn is_blank(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.trim().is_empty(),
        _ => false,
    }
}

/// The default a parameter takes when absent (`None` for seed, prompt and image).
pub fn default_value(spec: &ParamSpec) -> Option<Value> {
    match spec.kind {
        ParamKind::Integer { default, .. } => Some(Value::from(default)),
        ParamKind::Number { default, .. } => Number::from_f64(default).map(Value::Number),
        ParamKind::Boolean { default } => Some(Value::Bool(default)),
        ParamKind::Choice { default, .. } => Some(Value::from(default)),
        ParamKind::Prompt { .. } | ParamKind::Image | ParamKind::Seed => None,
    }
}

/// Validates one value (typed, or a string from a form) against its spec and returns
/// it in its canonical type. The message says what is wrong in words a person reads.
pub fn validate_value(spec: &ParamSpec, value: &Value) -> Result<Value, String> {
    match spec.kind {
        ParamKind::Prompt { max_chars } => {
            let s = value.as_str().ok_or("must be a string")?.trim();
            let n = s.chars().count();
            if n == 0 {
                Err("is required".into())
            } else if n > max_chars {
                Err(format!("is {n} characters long; the limit is {max_chars}"))
            } else {
                Ok(Value::from(s))
            }
        }
        ParamKind::Image => Err("must be sent as an image".into()),
        ParamKind::Seed => {
            let n = as_integer(value)?;
            if (0..=i64::from(u32::MAX)).contains(&n) {
                Ok(Value::from(n))
            } else {
                Err(format!("must be between 0 and {}", u32::MAX))
            }
        }
        ParamKind::Integer { min, max, .. } => {
            let n = as_integer(value)?;
            if (min..=max).contains(&n) {
                Ok(Value::from(n))
            } else {
                Err(format!("must be between {min} and {max}"))
            }
        }
        ParamKind::Number { min, max, .. } => {
            let x = as_number(value)?;
            if (min..=max).contains(&x) {
                Number::from_f64(x)
                    .map(Value::Number)
                    .ok_or_else(|| "must be a finite number".into())
            } else {
                Err(format!(
                    "must be between {} and {}",
                    crate::num::text(min),
                    crate::num::text(max)
                ))
            }
        }
        ParamKind::Boolean { .. } => match value {
            Value::Bool(b) => Ok(Value::Bool(*b)),
            Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => Ok(Value::Bool(true)),
                "false" | "0" | "no" | "off" => Ok(Value::Bool(false)),
                _ => Err("must be true or false".into()),
            },
            Value::Number(n) if n.as_u64() == Some(0) => Ok(Value::Bool(false)),
            Value::Number(n) if n.as_u64() == Some(1) => Ok(Value::Bool(true)),
            _ => Err("must be true or false".into()),
        },
        ParamKind::Choice { options, .. } => {
            let s = match value {
                Value::String(s) => s.trim().to_owned(),
                // `"megapixels": 1` is a common way to write "1".
                Value::Number(n) => n.to_string(),
                _ => return Err(format!("must be one of: {}", options.join(", "))),
            };
            let s = if s == "jpeg" && options.contains(&"jpg") {
                "jpg".to_owned()
            } else {
                s
            };
            if options.contains(&s.as_str()) {
                Ok(Value::from(s))
            } else {
                Err(format!("must be one of: {}", options.join(", ")))
            }
        }
    }
}

fn as_integer(value: &Value) -> Result<i64, String> {
    let x = match value {
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                return Ok(i);
            }
            n.as_f64().ok_or("must be a whole number")?
        }
        Value::String(s) => {
            let s = s.trim();
            if let Ok(i) = s.parse::<i64>() {
                return Ok(i);
            }
            crate::num::parse(s).ok_or("must be a whole number")?
        }
        _ => return Err("must be a whole number".into()),
    };
    if x.is_finite() && x.fract() == 0.0 && x.abs() < 9.0e15 {
        // A whole number written as 7.0 is still 7.
        #[allow(clippy::cast_possible_truncation)]
        Ok(x as i64)
    } else {
        Err("must be a whole number".into())
    }
}

fn as_number(value: &Value) -> Result<f64, String> {
    let x = match value {
        Value::Number(n) => n.as_f64().ok_or("must be a number")?,
        Value::String(s) => crate::num::parse(s.trim()).ok_or("must be a number")?,
        _ => return Err("must be a number".into()),
    };
    if x.is_finite() {
        Ok(x)
    } else {
        Err("must be a finite number".into())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn fields(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    fn errors_of(model: Model, v: Value) -> Vec<(String, String)> {
        validate(model, &fields(v), false)
            .unwrap_err()
            .into_iter()
            .map(|e| (e.field, e.message))
            .collect()
    }

    #[test]
    fn defaults_are_filled_and_seed_is_left_to_the_edge() {
        let v = validate(
            Model::FluxDepthPro,
            &fields(json!({"prompt": " a cat ", "control_image": "https://x.test/a.jpg"})),
            false,
        )
        .unwrap();
        assert_eq!(
            serde_json::to_value(&v.params).unwrap(),
            json!({"prompt": "a cat", "steps": 40, "guidance": 7.0, "output_format": "jpg", "control_type": "image",
                   "safety_tolerance": 2, "prompt_upsampling": false})
        );
        assert_eq!(v.params.seed(), None);
    }

    #[test]
    fn multipart_strings_parse_as_their_typed_values() {
        let v = validate(
            Model::FluxDepthDev,
            &fields(json!({"prompt": "x", "seed": "85412", "guidance": "7.5",
                           "num_outputs": "4", "disable_safety_checker": "False",
                           "megapixels": "0.25", "output_quality": "90"})),
            true,
        )
        .unwrap();
        assert_eq!(v.control_image, ControlImage::Upload);
        assert_eq!(v.params.seed(), Some(85412));
        assert_eq!(v.params.get("guidance"), Some(&json!(7.5)));
        assert_eq!(v.params.num_outputs(), 4);
        assert_eq!(v.params.get("disable_safety_checker"), Some(&json!(false)));
        assert_eq!(v.params.str("megapixels"), Some("0.25"));
    }

    #[test]
    fn every_problem_is_reported_per_field() {
        let errs = errors_of(
            Model::FluxDepthPro,
            json!({"steps": 5, "guidance": "lots", "output_format": "gif",
                   "seed": -1, "prompt_upsampling": "maybe", "width": 512}),
        );
        let fields: Vec<&str> = errs.iter().map(|(f, _)| f.as_str()).collect();
        for f in [
            "width",
            "prompt",
            "control_image",
            "steps",
            "guidance",
            "output_format",
            "prompt_upsampling",
            "seed",
        ] {
            assert!(fields.contains(&f), "{f} missing from {errs:?}");
        }
        assert!(errs.contains(&("steps".into(), "must be between 15 and 50".into())));
        assert!(
            errs.iter()
                .any(|(f, m)| f == "width" && m.contains("unknown field"))
        );
    }

    #[test]
    fn fractional_integers_and_overlong_prompts_are_refused() {
        let long = "a".repeat(2_001);
        let errs = errors_of(
            Model::FluxDepthDev,
            json!({"prompt": long, "control_image": "https://x.test/a.png", "num_outputs": 2.5}),
        );
        assert_eq!(
            errs,
            vec![
                (
                    "prompt".into(),
                    "is 2001 characters long; the limit is 2000".into()
                ),
                ("num_outputs".into(), "must be a whole number".into()),
            ]
        );
    }

    #[test]
    fn control_image_may_not_come_twice() {
        let errs = validate(
            Model::FluxDepthPro,
            &fields(json!({"prompt": "x", "control_image": "https://x.test/a.png"})),
            true,
        )
        .unwrap_err();
        assert_eq!(errs[0].field, "control_image");
    }

    #[test]
    fn jpeg_is_accepted_as_jpg_and_numbers_as_choice_strings() {
        let spec = Model::FluxDepthDev.param("output_format").unwrap();
        assert_eq!(validate_value(spec, &json!("jpeg")), Ok(json!("jpg")));
        let spec = Model::FluxDepthDev.param("megapixels").unwrap();
        assert_eq!(validate_value(spec, &json!(1)), Ok(json!("1")));
    }
}
