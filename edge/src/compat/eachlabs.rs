//! The Eachlabs prediction API (`../shared/reference/003_…`, docs.eachlabs.ai):
//! `POST /v1/prediction/` with `{"model", "version", "input", "webhook_url",
//! "webhook_secret"}` answers `{"status": "success", "message", "predictionID"}`;
//! `GET /v1/prediction/{id}` answers `{"id", "input", "status", "output", "logs",
//! "metrics", "urls"}` with status `starting | processing | success | failed |
//! cancelled` (docs.eachlabs.ai, API reference → Get Model Prediction); a failed
//! prediction has `output: null` and its reason in `logs` (the docs' webhook payload
//! reference, "Prediction Failed"); the webhook payload is `{"exec_id", "flow_id",
//! "status": "succeeded" | "failed", "output", "error"}`. The shapes are checked
//! against `e2e/contracts/eachlabs.json`.
//!
//! `input` takes the model's own parameter names, which for `flux-depth-dev` are
//! exactly Parallax's (and Replicate's); Eachlabs' defaults differ from ours only in
//! `output_format` (webp).

use parallax_api::{FieldError, Model};
use serde_json::{Map, Value, json};

use super::{choice_field, object_field, string_field, unknown_fields};
pub use crate::objects::runner::eachlabs::{VERSION, prediction, status, webhook_body};

/// The models this API serves, by Eachlabs slug (the same as ours).
pub const MODELS: [&str; 2] = ["flux-depth-dev", "flux-depth-pro"];
const FIELDS: [&str; 5] = ["model", "version", "input", "webhook_url", "webhook_secret"];

/// A validated `POST /v1/prediction/` body (its `input` is validated with the job).
#[derive(Debug, Clone, PartialEq)]
pub struct CreatePrediction {
    pub model: Model,
    /// The model's parameters, in Parallax's (= Eachlabs') names, Eachlabs' defaults
    /// filled in where they differ from ours.
    pub input: Map<String, Value>,
    pub webhook_url: Option<String>,
    pub webhook_secret: Option<String>,
}

/// Checks the envelope: `model` and `version` must be ones this API serves (the error
/// names them), `input` an object.
pub fn parse_create(body: &Map<String, Value>) -> Result<CreatePrediction, Vec<FieldError>> {
    let mut errors = unknown_fields(body, "", &FIELDS);
    let model = choice_field(body, "model", &MODELS, true)
        .map_err(|e| errors.push(e))
        .ok()
        .flatten()
        .and_then(|m| Model::from_slug(&m));
    if let Err(e) = choice_field(body, "version", &[VERSION], false) {
        errors.push(e);
    }
    let input = match object_field(body, "input") {
        Ok(Some(input)) => Some(input.clone()),
        Ok(None) => {
            errors.push(FieldError::new(
                "input",
                "is required (the model's parameters)",
            ));
            None
        }
        Err(e) => {
            errors.push(e);
            None
        }
    };
    let mut text = |name| {
        string_field(body, name)
            .map_err(|e| errors.push(e))
            .ok()
            .flatten()
    };
    let webhook_url = text("webhook_url");
    let webhook_secret = text("webhook_secret");
    match (model, input) {
        (Some(model), Some(mut input)) if errors.is_empty() => {
            if model == Model::FluxDepthDev && !input.contains_key("output_format") {
                input.insert("output_format".into(), Value::from("webp"));
            }
            Ok(CreatePrediction {
                model,
                input,
                webhook_url,
                webhook_secret,
            })
        }
        _ => Err(errors),
    }
}

/// Validation errors of `input`'s parameters, named as the caller wrote them.
pub fn input_errors(errors: Vec<FieldError>) -> Vec<FieldError> {
    super::rename_fields(errors, "input.", |_| None)
}

/// `POST /v1/prediction/`'s answer.
pub fn created(id: &str) -> Value {
    json!({
        "status": "success",
        "message": "Prediction created successfully",
        "predictionID": id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects::runner::FailureKind;
    use crate::objects::runner::tests::{completed, job};

    fn body(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn the_docs_example_parses_with_its_input_untouched() {
        let p = parse_create(&body(json!({
            "model": "flux-depth-dev",
            "version": "0.0.1",
            "input": {
                "prompt": "A tropical beach",
                "guidance": 10,
                "megapixels": "1",
                "num_outputs": 1,
                "control_image": "https://storage.googleapis.com/magicpoint/inputs/flux-depth-dev-input.webp",
                "output_format": "webp",
                "output_quality": 80,
                "num_inference_steps": 28
            },
            "webhook_url": ""
        })))
        .unwrap();
        assert_eq!(p.model, Model::FluxDepthDev);
        assert_eq!(p.input.len(), 8);
        assert_eq!(p.webhook_url, None, "an empty webhook_url means none");
        let defaults = parse_create(&body(
            json!({"model": "flux-depth-dev", "input": {"prompt": "x"}}),
        ))
        .unwrap();
        assert_eq!(defaults.input["output_format"], "webp");
    }

    #[test]
    fn wrong_model_or_version_names_the_allowed_values() {
        let errors = parse_create(&body(json!({
            "model": "flux-1-1-pro", "version": "1.0.0", "input": [], "fallback_selector": "q"
        })))
        .unwrap_err();
        let by_field = |f: &str| {
            errors
                .iter()
                .find(|e| e.field == f)
                .map(|e| e.message.clone())
        };
        assert_eq!(
            by_field("model").unwrap(),
            "must be one of: flux-depth-dev, flux-depth-pro"
        );
        assert_eq!(by_field("version").unwrap(), "must be 0.0.1");
        assert_eq!(by_field("input").unwrap(), "must be a JSON object");
        assert!(
            by_field("fallback_selector")
                .unwrap()
                .contains("allowed: model, version")
        );
    }

    #[test]
    fn predictions_use_eachlabs_status_words_and_output_shapes() {
        let running = job();
        let p = prediction(&running, "https://px.example", None);
        assert_eq!(p["status"], "starting");
        assert_eq!(p["output"], Value::Null);
        assert_eq!(p["input"]["seed"], 42);
        assert_eq!(p["input"]["control_image"], Value::Null, "private");
        let link = "https://px.example/results/x/control?exp=1&sig=s".to_owned();
        let p = prediction(&running, "https://px.example", Some(link.clone()));
        assert_eq!(
            p["input"]["control_image"],
            link.as_str(),
            "the owner's link"
        );

        let done = completed(1);
        let p = prediction(&done, "https://px.example", None);
        assert_eq!(p["status"], "success");
        assert_eq!(
            p["output"],
            format!("https://px.example/results/{}/0.jpg", done.id)
        );
        assert_eq!(
            p["urls"]["get"],
            format!("https://px.example/v1/prediction/{}", done.id)
        );
        assert_eq!(
            prediction(&completed(2), "o", None)["output"]
                .as_array()
                .map(Vec::len),
            Some(2)
        );

        let mut failed = job();
        failed.fail(FailureKind::Rejected, "Content moderated", 1_001_000);
        let p = prediction(&failed, "o", None);
        assert_eq!(p["status"], "failed");
        assert_eq!(p["output"], Value::Null);
        assert_eq!(
            p["logs"],
            "PROVIDER_REJECTED: Rejected by the provider's safety filter (content moderated)"
        );
        let mut canceled = job();
        canceled.fail(FailureKind::Canceled, "Canceled by its owner", 1_001_000);
        assert_eq!(status(&canceled), "cancelled");
    }

    #[test]
    fn webhooks_carry_the_documented_payload() {
        let done = completed(1);
        let v: Value = serde_json::from_str(&webhook_body(&done, "https://px.example")).unwrap();
        assert_eq!(v["exec_id"], done.id.as_str());
        assert_eq!(v["status"], "succeeded");
        assert_eq!(v["error"], "");
        assert_eq!(v["output"], v["prediction"]["output"]);
        let mut failed = job();
        failed.fail(FailureKind::Timeout, "too slow", 1_001_000);
        let v: Value = serde_json::from_str(&webhook_body(&failed, "o")).unwrap();
        assert_eq!(v["status"], "failed");
        assert_eq!(v["output"][0]["error"]["error_code"], "EXECUTION_TIMEOUT");
    }
}
