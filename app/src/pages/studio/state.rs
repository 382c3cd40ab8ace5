//! The studio's form and control image ([`Studio`]), provided by the app so going to
//! History and back keeps them, and saved in localStorage so a reload does too.

use leptos::prelude::*;
use leptos::task::spawn_local;
use parallax_api::{Model, Params};
use web_sys::Blob;

use super::depth::DepthPreview;
use crate::client;
use crate::image::{self, Prepared};
use crate::logic::form::{self, FormState, ImageSource, target_megapixels};
use crate::session;

/// The control image, ready to send.
#[derive(Debug, Clone)]
pub enum Control {
    Prepared(Prepared),
    Url(String),
}

/// The studio's form and image, kept across page changes.
#[derive(Debug, Clone, Copy)]
pub struct Studio {
    pub(super) form: RwSignal<FormState>,
    pub(super) control: RwSignal<Option<Control>>,
    /// The picked image as it came, re-prepared when the size to ask for changes.
    pub(super) source: RwSignal<Option<Blob>>,
    /// Where the control image came from, if it can be had again after a reload.
    pub(super) origin: RwSignal<Option<ImageSource>>,
    pub(super) preview: RwSignal<Option<String>>,
    pub(super) preparing: RwSignal<bool>,
    /// Bumped by each prepare; only the newest one's answer is used.
    pub(super) prep_token: StoredValue<u64>,
    pub(super) image_error: RwSignal<Option<String>>,
    pub(super) form_error: RwSignal<Option<String>>,
    pub(super) show_errors: RwSignal<bool>,
    pub(super) next_key: StoredValue<u64>,
    /// The `?remix=` id already loaded.
    pub(super) remixed: StoredValue<Option<String>>,
    /// The control image's depth map, beside it.
    pub(super) depth: DepthPreview,
    /// Whether `control_type: depth` was set by "Use as control" or a remix's depth
    /// map (a new pick then sets it back), not ticked by the user.
    pub(super) auto_depth: StoredValue<bool>,
    /// Whether `source` is a depth map ("Use as control", a remix's): marked
    /// `control_type: depth` once it is the control image, not before (until then the
    /// control image is still the one before, a photo).
    source_is_depth: StoredValue<bool>,
}

impl Studio {
    /// Creates the studio from the saved form (the URL's `?model=` still wins, see
    /// [`super::StudioPage`]) and saves the form on every change.
    pub fn provide() {
        let (saved, image) = session::load(form::SAVED_KEY)
            .and_then(|text| form::decode(&text))
            .unwrap_or_else(|| (FormState::new(form::DEFAULT_MODEL), None));
        let studio = Self {
            form: RwSignal::new(saved),
            control: RwSignal::new(None),
            source: RwSignal::new(None),
            origin: RwSignal::new(None),
            preview: RwSignal::new(None),
            preparing: RwSignal::new(false),
            prep_token: StoredValue::new(0),
            image_error: RwSignal::new(None),
            form_error: RwSignal::new(None),
            show_errors: RwSignal::new(false),
            next_key: StoredValue::new(0),
            remixed: StoredValue::new(None),
            depth: DepthPreview::new(),
            auto_depth: StoredValue::new(false),
            source_is_depth: StoredValue::new(false),
        };
        provide_context(studio);
        // A remix link brings its own image; otherwise the saved one comes back.
        let remixing = window()
            .location()
            .search()
            .is_ok_and(|q| q.contains("remix="));
        match image {
            Some(ImageSource::Remote(u)) if !remixing => studio.use_remote(u),
            Some(ImageSource::Fetched(u)) if !remixing => studio.fetch(u, false),
            _ => {}
        }
        Effect::new(move || {
            let text = studio
                .form
                .with(|f| studio.origin.with(|o| form::encode(f, o.as_ref())));
            session::save(form::SAVED_KEY, &text);
        });
    }

    pub(super) fn set_preview(&self, url: Option<String>) {
        if let Some(old) = self.preview.get_untracked()
            && old.starts_with("blob:")
        {
            let _ = web_sys::Url::revoke_object_url(&old);
        }
        self.preview.set(url);
    }

    /// Picks a file: its bytes are not kept, so a reload does not bring it back.
    pub(super) fn pick_file(self, file: web_sys::File) {
        self.begin_pick();
        self.origin.set(None);
        self.prepare(file.into());
    }

    /// Uses an https URL the server fetches.
    pub(super) fn use_remote(self, url: String) {
        self.begin_pick();
        self.image_error.set(None);
        self.prep_token.update_value(|t| *t += 1);
        self.preparing.set(false);
        self.source.set(None);
        self.set_preview(Some(url.clone()));
        self.origin.set(Some(ImageSource::Remote(url.clone())));
        self.control.set(Some(Control::Url(url)));
        self.refresh_depth();
    }

    /// Prepares `blob` (upright, downscaled, JPEG) for the size the form asks for now.
    pub(super) fn prepare(self, blob: Blob) {
        self.prepare_as(blob, false);
    }

    /// Prepares the picked image again (for another size), a depth map still one.
    pub(super) fn prepare_again(self) {
        if let Some(blob) = self.source.get_untracked() {
            self.prepare_as(blob, self.source_is_depth.get_value());
        }
    }

    /// [`Self::prepare`]; `as_depth`: `blob` is a depth map.
    fn prepare_as(self, blob: Blob, as_depth: bool) {
        self.image_error.set(None);
        self.preparing.set(true);
        self.source.set(Some(blob.clone()));
        self.source_is_depth.set_value(as_depth);
        let token = self.prep_token.get_value() + 1;
        self.prep_token.set_value(token);
        let megapixels = self.form.with_untracked(target_megapixels);
        spawn_local(async move {
            let prepared = image::prepare(&blob, megapixels).await;
            if self.prep_token.get_value() != token {
                return; // a newer pick (or size) took over
            }
            match prepared {
                Ok(p) => {
                    self.set_preview(web_sys::Url::create_object_url_with_blob(&p.blob).ok());
                    self.control.set(Some(Control::Prepared(p)));
                    if as_depth {
                        self.auto_depth.set_value(true);
                        self.form.update(|f| f.set(CONTROL_TYPE, "depth".into()));
                    }
                    self.refresh_depth();
                }
                Err(e) if as_depth => self.depth_map_failed(&e),
                Err(e) => self.image_error.set(Some(e)),
            }
            self.preparing.set(false);
        });
    }

    /// Loads an image URL (a sample, an output, a job's control image) as the control
    /// image; says so when it cannot be fetched.
    pub(super) fn load_url(self, url: String) {
        self.fetch(url, true);
    }

    /// Fetches and prepares `url`; a failure is shown when `loud` (a restored image
    /// that is gone, e.g. a purged output, is just not restored).
    pub(super) fn fetch(self, url: String, loud: bool) {
        self.fetch_as(url, loud, false);
    }

    /// [`Self::fetch`]; `as_depth`: the image is a depth map, marked `control_type:
    /// depth` once it has become the control image. Should it fail, the control image
    /// stays what it was, a photo (`control_type: image`), and the user is told why.
    pub(super) fn fetch_as(self, url: String, loud: bool, as_depth: bool) {
        self.begin_pick();
        self.image_error.set(None);
        self.preparing.set(true);
        let pick = self.depth.pick();
        spawn_local(async move {
            let fetched = client::blob(&url).await;
            if self.depth.pick() != pick {
                return; // a newer pick took over
            }
            match fetched {
                Ok(blob) => {
                    self.origin.set(Some(ImageSource::Fetched(url)));
                    self.prepare_as(blob, as_depth);
                }
                Err(e) if as_depth => {
                    self.preparing.set(false);
                    self.depth_map_failed(&e.message());
                }
                Err(e) => {
                    self.preparing.set(false);
                    if loud {
                        self.image_error
                            .set(Some(format!("Could not load that image: {}", e.message())));
                    } else {
                        self.origin.set(None);
                    }
                }
            }
        });
    }
}

impl Studio {
    /// A new image is being chosen: its preview starts once it is ready, and a depth
    /// map marked by "Use as control" is no longer the control image.
    fn begin_pick(self) {
        self.depth.new_pick();
        if self.auto_depth.get_value() {
            self.auto_depth.set_value(false);
            self.form.update(|f| f.set(CONTROL_TYPE, "image".into()));
        }
    }

    /// Whether the control image is marked as a depth map (`control_type: depth`).
    pub(super) fn is_depth_map(self) -> Signal<bool> {
        let form = self.form;
        Signal::derive(move || form.with(|f| f.get(CONTROL_TYPE) == "depth"))
    }

    /// Previews the control image's depth, or not when it is itself a depth map.
    pub(super) fn refresh_depth(self) {
        if self.form.with_untracked(|f| f.get(CONTROL_TYPE) == "depth") {
            self.depth.off();
        } else if let Some(c) = self.control.get_untracked() {
            self.depth.preview(&c);
        }
    }

    /// The toggle "This image is already a depth map".
    pub(super) fn mark_depth_map(self, on: bool) {
        self.auto_depth.set_value(false);
        self.source_is_depth.set_value(on);
        let value = if on { "depth" } else { "image" };
        self.form.update(|f| f.set(CONTROL_TYPE, value.into()));
        self.refresh_depth();
    }

    /// "Use as control": the depth map becomes the next job's control image, marked
    /// as a depth map.
    pub(super) fn use_depth_map(self, url: String) {
        self.fetch_as(url, true, true);
    }

    /// A depth map could not become the control image: the photo stays, sent as a
    /// photo, with its own preview again.
    fn depth_map_failed(self, why: &str) {
        self.auto_depth.set_value(false);
        self.form.update(|f| f.set(CONTROL_TYPE, "image".into()));
        self.image_error.set(Some(format!(
            "Could not use the depth map as the control image ({why}); the photo stays, sent as a photo."
        )));
        self.refresh_depth();
    }

    /// Remix: the job's model (a generator; another is the default model) and
    /// parameters, and its control image when it comes with the job. A depth map is
    /// marked `control_type: depth` only once it is the control image; without one (a
    /// stranger's remix) the image already here is a photo, and is previewed.
    pub(super) fn remix(self, model: Model, params: &Params, control_image: Option<String>) {
        self.form.update(|f| f.load(model, params));
        let depth = self.form.with_untracked(|f| f.get(CONTROL_TYPE) == "depth");
        self.auto_depth.set_value(false);
        self.form.update(|f| f.set(CONTROL_TYPE, "image".into()));
        match control_image {
            Some(url) => self.fetch_as(url, true, depth),
            None => self.refresh_depth(),
        }
    }
}

/// The parameter that says whether the control image is a photo or a depth map.
pub(super) const CONTROL_TYPE: &str = "control_type";

/// A random Idempotency-Key for one submit.
pub(super) fn idempotency_key() -> String {
    let r = || (js_sys::Math::random() * f64::from(u32::MAX)) as u32;
    format!(
        "px-{:08x}{:08x}{:08x}",
        r(),
        r(),
        js_sys::Date::now() as u64 as u32
    )
}
