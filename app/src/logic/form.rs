//! The form's state: one text value per catalog parameter (what the inputs hold),
//! validated with the same rules as the edge, and turned into request fields; and
//! what of it this browser keeps across reloads ([`encode`] / [`decode`]).

use std::collections::BTreeMap;

use parallax_api::{Model, ParamKind, ParamSpec, Params, validate_value};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The localStorage key of the saved form (next to the job store's `parallax.jobs`).
pub const SAVED_KEY: &str = "parallax.studio";
/// The saved form's schema; a saved form of another version is ignored.
pub const SAVED_VERSION: u32 = 1;
/// Image URLs longer than this (data URLs) are not saved: the bytes are not kept.
const MAX_SAVED_URL: usize = 2048;

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
        // Not `Value`'s Display: in the app that would link serde_json's writer.
        other => crate::json::stringify(other),
    }
}

/// What an empty input means: the default as text ("" for prompt and seed).
pub fn default_text(spec: &ParamSpec) -> String {
    parallax_api::params::default_value(spec)
        .map(|v| value_text(&v))
        .unwrap_or_default()
}

/// The model the studio starts with.
pub const DEFAULT_MODEL: Model = Model::FluxDepthPro;

/// `model` if the studio can generate with it, else [`DEFAULT_MODEL`]: the depth
/// preview's model (or any other non-generator) is never the form's, from a URL, a
/// remix or a saved form.
pub fn generator(model: Model) -> Model {
    if Model::GENERATORS.contains(&model) {
        model
    } else {
        DEFAULT_MODEL
    }
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

    /// Switches model, keeping what both models share (prompt, seed, guidance…); a
    /// model the studio cannot generate with is [`DEFAULT_MODEL`] instead.
    pub fn switch_model(&mut self, model: Model) {
        let model = generator(model);
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

/// Where the control image came from, when it can be had again after a reload
/// (a picked file's bytes are not kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageSource {
    /// Fetched by the browser and prepared: a sample photo, an output, a job's input.
    Fetched(String),
    /// An https URL the server fetches.
    Remote(String),
}

impl ImageSource {
    fn url(&self) -> &str {
        match self {
            Self::Fetched(u) | Self::Remote(u) => u,
        }
    }
}

/// The form as saved in localStorage. (Plain fields, no tagged enum: serde's
/// buffering of tagged enums costs the playground kilobytes of wasm.)
#[derive(Debug, Serialize, Deserialize)]
struct SavedForm {
    version: u32,
    model: String,
    values: BTreeMap<String, String>,
    seed_locked: bool,
    /// The image's URL, if it can be had again.
    image: Option<String>,
    /// Whether the server fetches it ([`ImageSource::Remote`]).
    image_remote: bool,
}

/// The form (and where its image came from) as the text to save.
pub fn encode(form: &FormState, image: Option<&ImageSource>) -> String {
    let saved = SavedForm {
        version: SAVED_VERSION,
        model: form.model.slug().to_owned(),
        values: form
            .values
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect(),
        seed_locked: form.seed_locked,
        image: image
            .map(|i| i.url().to_owned())
            .filter(|u| u.len() <= MAX_SAVED_URL),
        image_remote: matches!(image, Some(ImageSource::Remote(_))),
    };
    crate::json::stringify(&saved)
}

/// A saved form back: its model's form with the saved values it has (text as typed,
/// checked as usual when shown), and its image source. `None` for anything else
/// (another version, an unknown model, not JSON).
pub fn decode(text: &str) -> Option<(FormState, Option<ImageSource>)> {
    let saved: SavedForm = crate::json::parse(text).ok()?;
    if saved.version != SAVED_VERSION {
        return None;
    }
    let mut form = FormState::new(generator(Model::from_slug(&saved.model)?));
    for (name, value) in saved.values {
        form.set(&name, value);
    }
    form.seed_locked = saved.seed_locked;
    let image = saved.image.map(|u| {
        if saved.image_remote {
            ImageSource::Remote(u)
        } else {
            ImageSource::Fetched(u)
        }
    });
    Some((form, image))
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
    fn the_preview_model_is_never_the_forms() {
        let mut f = FormState::new(Model::FluxDepthDev);
        f.switch_model(Model::DepthAnythingV2);
        assert_eq!(f.model, DEFAULT_MODEL);
        f.load(Model::DepthAnythingV2, &Params::default());
        assert_eq!(f.model, DEFAULT_MODEL);
        assert_eq!(generator(Model::FluxDepthDev), Model::FluxDepthDev);
    }

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

    #[test]
    fn a_saved_form_comes_back_as_typed_with_its_image() {
        let mut f = FormState::new(Model::FluxDepthDev);
        f.set("prompt", "a red door".into());
        f.set("guidance", "7.".into());
        f.seed_locked = true;
        let image = ImageSource::Fetched("/samples/coffee.jpg".into());
        let (back, img) = decode(&encode(&f, Some(&image))).unwrap();
        assert_eq!(back, f);
        assert_eq!(img, Some(image));
    }

    #[test]
    fn a_saved_form_keeps_only_what_its_model_has() {
        let text = json!({
            "version": SAVED_VERSION, "model": "flux-depth-pro", "seed_locked": false,
            "values": {"prompt": "a fox", "steps": "20", "num_outputs": "3"},
            "image": null, "image_remote": false,
        });
        let (f, img) = decode(&text.to_string()).unwrap();
        assert_eq!(f.model, Model::FluxDepthPro);
        assert_eq!(f.get("prompt"), "a fox");
        assert_eq!(f.get("steps"), "20");
        assert_eq!(f.get("guidance"), "7.0", "unsaved values are the defaults");
        assert!(!f.values.contains_key("num_outputs"));
        assert_eq!(img, None);
    }

    #[test]
    fn other_versions_unknown_models_and_junk_are_ignored() {
        let f = FormState::new(Model::FluxDepthPro);
        let mut v: Value = serde_json::from_str(&encode(&f, None)).unwrap();
        v["version"] = json!(SAVED_VERSION + 1);
        assert!(decode(&v.to_string()).is_none());
        v["version"] = json!(SAVED_VERSION);
        v["model"] = json!("flux-depth-max");
        assert!(decode(&v.to_string()).is_none());
        assert!(decode("not json").is_none());
    }

    #[test]
    fn long_image_urls_are_not_saved() {
        let f = FormState::new(Model::FluxDepthPro);
        let data = ImageSource::Fetched(format!("data:image/jpeg;base64,{}", "A".repeat(4000)));
        assert_eq!(decode(&encode(&f, Some(&data))).unwrap().1, None);
        let remote = ImageSource::Remote("https://example.com/a.jpg".into());
        assert_eq!(decode(&encode(&f, Some(&remote))).unwrap().1, Some(remote));
    }
}
