//! Generate: the form and the image checked, the request put together (every field,
//! or nothing is sent), a pending card shown at once, and the submit answered into the
//! store.

use leptos::prelude::*;
use leptos::task::spawn_local;
use parallax_api::Params;
use web_sys::FormData;

use super::state::{CONTROL_TYPE, Control, Studio, idempotency_key};
use super::{DEFAULT_EXPECTED_SECS, focus, scroll_to_newest_job};
use crate::client;
use crate::logic::depth::DepthShown;
use crate::logic::eta;
use crate::logic::store::Job;
use crate::session;
use crate::store::{JobStore, Pending, now_ms};

impl Studio {
    /// Submits what the form and the control image say, or says why not.
    pub(super) fn generate(self, store: JobStore) {
        let Studio {
            form,
            control,
            preparing,
            form_error,
            show_errors,
            ..
        } = self;
        show_errors.set(true);
        if preparing.get_untracked() {
            form_error.set(Some("The image is still being prepared.".into()));
            return;
        }
        let Some(ctl) = control.get_untracked() else {
            form_error.set(Some("Choose a control image first.".into()));
            return;
        };
        let state = form.get_untracked();
        if let Some((name, e)) = state.errors().into_iter().next() {
            let label = state.model.param(name).map_or(name, |p| p.label);
            form_error.set(Some(format!("{label} {e}")));
            focus(&format!("param-{name}"));
            return;
        }
        // Every field goes in, or nothing is sent: a dropped field would make another
        // job than the one on screen.
        let mut params = Params::default();
        let built = FormData::new().and_then(|data| {
            for (name, value) in state.fields() {
                data.append_with_str(name, &value)?;
                params.0.insert(name.to_owned(), value.into());
            }
            match &ctl {
                Control::Prepared(p) => {
                    data.append_with_blob_and_filename("control_image", &p.blob, "control.jpg")?
                }
                Control::Url(u) => data.append_with_str("control_image", u)?,
            }
            Ok(data)
        });
        let Ok(data) = built else {
            form_error.set(Some(
            "This browser could not put the request together; nothing was sent. Please try again."
                .into(),
        ));
            return;
        };
        form_error.set(None);
        if !state.seed_locked {
            form.update(|f| f.set("seed", String::new()));
        }
        let key = self.next_key.get_value();
        self.next_key.set_value(key + 1);
        let prompt = state.get("prompt").trim().to_owned();
        let model = state.model;
        store.pending.update(|p| {
            p.insert(
                0,
                Pending {
                    key,
                    model,
                    prompt: prompt.clone(),
                    started_ms: now_ms(),
                    error: None,
                },
            )
        });
        scroll_to_newest_job();
        let expected = eta::expected(&session::durations(model), DEFAULT_EXPECTED_SECS);
        // The depth map beside the photo now (none when the photo is itself one).
        let preview_depth = match self.depth.shown.get_untracked() {
            DepthShown::Ready(url) if state.get(CONTROL_TYPE) != "depth" => Some(url),
            _ => None,
        };
        let idem = idempotency_key();
        spawn_local(async move {
            match client::submit(model, &data, &idem).await {
                Ok(s) => {
                    let started = store
                        .pending
                        .with_untracked(|p| p.iter().find(|p| p.key == key).map(|p| p.started_ms))
                        .unwrap_or_else(now_ms);
                    let mut job = Job::submitted(
                        &s.request_id.to_string(),
                        model,
                        &prompt,
                        &s.response_url,
                        params,
                        started,
                        expected,
                    );
                    job.owner_token = s.owner_token;
                    job.preview_depth = preview_depth;
                    store.submitted(job);
                    store.pending.update(|p| p.retain(|p| p.key != key));
                }
                Err(e) => store.pending.update(|p| {
                    if let Some(p) = p.iter_mut().find(|p| p.key == key) {
                        p.error = Some(e.message());
                    }
                }),
            }
        });
    }
}
