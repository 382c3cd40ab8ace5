//! The form's state: one text value per catalog parameter (what the inputs hold),
//! validated with the same rules as the edge, and turned into request fields.

use std::collections::BTreeMap;

use parallax_api::{Model, ParamKind, ParamSpec, Params, validate_value};
use serde_json::Value;

/// Every parameter's current text, for one model.
#[derive(Debug, Clone, PartialEq)]
pub struct FormState {
    pub model: Model,
    pub values: BTreeMap<&'static str, String>,
    /// Keep the seed between jobs (otherwise a new random one each time).
    pub seed_locked: bool,
}

/// The text an input shows for a value.
pub fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// What an empty input means: the default as text ("" for prompt and seed).
pub fn default_text(spec: &ParamSpec) -> String {
    parallax_api::params::default_value(spec)
        .map(|v| value_text(&v))
        .unwrap_or_default()
}

impl FormState {
    pub fn new(model: Model) -> Self {
        let values = model
            .params()
            .iter()
            .filter(|p| !matches!(p.kind, ParamKind::Image))
            .map(|p| (p.name, default_text(p)))
            .collect();
        Self {
            model,
            values,
            seed_locked: false,
        }
    }

    /// Switches model, keeping what both models share (prompt, seed, guidance…).
    pub fn switch_model(&mut self, model: Model) {
        let mut next = Self::new(model);
        for (name, value) in &mut next.values {
            if let Some(old) = self.values.get(name) {
                let spec = model.param(name);
                let fits = spec.is_some_and(|s| {
                    old.is_empty() || validate_value(s, &Value::from(old.clone())).is_ok()
                });
                if fits {
                    value.clone_from(old);
                }
            }
        }
        next.seed_locked = self.seed_locked;
        *self = next;
    }

    pub fn get(&self, name: &str) -> &str {
        self.values.get(name).map_or("", String::as_str)
    }

    pub fn set(&mut self, name: &str, value: String) {
        if let Some(v) = self.values.get_mut(name) {
            *v = value;
        }
    }

    /// The problem with one field, if any (an empty optional field is fine).
    pub fn error(&self, name: &str) -> Option<String> {
        let spec = self.model.param(name)?;
        let text = self.get(name).trim();
        if text.is_empty() {
            return spec.required.then(|| "is required".to_owned());
        }
        validate_value(spec, &Value::from(text.to_owned())).err()
    }

    /// Every field with a problem.
    pub fn errors(&self) -> Vec<(&'static str, String)> {
        self.values
            .keys()
            .filter_map(|name| self.error(name).map(|e| (*name, e)))
            .collect()
    }

    /// The fields to send: non-empty values, as the form strings the API accepts.
    pub fn fields(&self) -> Vec<(&'static str, String)> {
        self.values
            .iter()
            .filter(|(_, v)| !v.trim().is_empty())
            .map(|(k, v)| (*k, v.trim().to_owned()))
            .collect()
    }

    /// Loads a finished job's parameters (Remix). Unknown names are ignored.
    pub fn load(&mut self, model: Model, params: &Params) {
        self.switch_model(model);
        for (name, value) in &params.0 {
            self.set(name, value_text(value));
        }
        self.seed_locked = true;
    }
}

/// The megapixels the edge will produce for these values, to downscale uploads to.
pub fn target_megapixels(state: &FormState) -> f64 {
    match (state.model, state.get("megapixels")) {
        (Model::FluxDepthDev, "0.25") => 0.25,
        (Model::FluxDepthDev, "match_input") => 1440.0 * 1440.0 / 1e6,
        _ => 1.0,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_new_form_holds_the_catalog_defaults() {
        let f = FormState::new(Model::FluxDepthPro);
        assert_eq!(f.get("steps"), "40");
        assert_eq!(f.get("guidance"), "7.0");
        assert_eq!(f.get("output_format"), "jpg");
        assert_eq!(f.get("seed"), "");
        assert_eq!(f.get("prompt"), "");
        assert!(!f.values.contains_key("control_image"));
    }

    #[test]
    fn validation_as_you_type_uses_the_edges_rules() {
        let mut f = FormState::new(Model::FluxDepthPro);
        assert_eq!(f.error("prompt").as_deref(), Some("is required"));
        f.set("steps", "5".into());
        assert_eq!(
            f.error("steps").as_deref(),
            Some("must be between 15 and 50")
        );
        f.set("seed", "abc".into());
        assert_eq!(f.error("seed").as_deref(), Some("must be a whole number"));
        f.set("seed", String::new());
        assert_eq!(f.error("seed"), None);
        f.set("prompt", "a barn".into());
        assert_eq!(f.errors().len(), 1);
    }

    #[test]
    fn switching_models_keeps_what_fits() {
        let mut f = FormState::new(Model::FluxDepthPro);
        f.set("prompt", "a barn".into());
        f.set("guidance", "40".into());
        f.set("seed", "7".into());
        f.switch_model(Model::FluxDepthDev);
        assert_eq!(f.get("prompt"), "a barn");
        assert_eq!(f.get("guidance"), "40");
        assert_eq!(f.get("seed"), "7");
        assert_eq!(f.get("num_outputs"), "1");
        assert!(!f.values.contains_key("steps"));
        f.set("guidance", "90".into());
        f.switch_model(Model::FluxDepthPro);
        assert_eq!(f.get("guidance"), "7.0", "90 is out of pro's range");
    }

    #[test]
    fn remix_loads_a_jobs_parameters_and_locks_the_seed() {
        let mut f = FormState::new(Model::FluxDepthPro);
        let params: Params = serde_json::from_value(
            json!({"prompt": "a fox", "seed": 42, "num_outputs": 3, "megapixels": "0.25"}),
        )
        .unwrap();
        f.load(Model::FluxDepthDev, &params);
        assert_eq!(f.model, Model::FluxDepthDev);
        assert_eq!(f.get("prompt"), "a fox");
        assert_eq!(f.get("seed"), "42");
        assert_eq!(f.get("num_outputs"), "3");
        assert!(f.seed_locked);
        assert_eq!(target_megapixels(&f), 0.25);
    }
}
