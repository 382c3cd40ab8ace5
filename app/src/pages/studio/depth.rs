//! The control image's depth preview: as soon as an image is ready, a preview job
//! (`POST /v2/depth-anything-v2` with the control image, submitted like a generation)
//! is read until it ends (plain status reads, twice a second while young: held reads
//! are the jobs'), and its depth map shown beside the image. It never blocks
//! Generate. An answer for an older pick is dropped ([`Picks`]); the stale job itself
//! is left to finish, not canceled: its map is remembered by the image's hash in this
//! tab ([`Seen`], with the job's owner token, so an anonymous preview can still be
//! deleted), so picking that image again shows it with no request at all (the API
//! also keeps a keyed account's previews by hash; an anonymous caller's it does not).
//! The same image prepared again for another size keeps its preview.

use leptos::prelude::*;
use leptos::task::spawn_local;
use parallax_api::{JobStatus, Model};
use web_sys::FormData;

use super::state::{Control, idempotency_key};
use crate::client::{self, ClientError};
use crate::logic::depth::{
    DepthShown, Picks, PreviewJob, Seen, failed_reason, image_key, read_interval_ms, refused_reason,
};
use crate::logic::poll::Read;

/// The User Timing names of pick → depth shown, read by `cargo xtask bench`.
pub const PICK_MARK: &str = "parallax:pick";
pub const DEPTH_MEASURE: &str = "parallax:depth";

/// Failed reads in a row before a preview is given up ("could not be reached").
const MAX_FAILURES: u32 = 5;

/// The depth preview beside the control image.
#[derive(Debug, Clone, Copy)]
pub struct DepthPreview {
    pub shown: RwSignal<DepthShown>,
    picks: StoredValue<Picks>,
    seen: StoredValue<Seen>,
    /// The pick being previewed and its image's key: its map is remembered once it
    /// has loaded.
    keyed: StoredValue<Option<(u64, u64)>>,
    /// The pick's preview job, remembered with its map (an anonymous job's owner token
    /// is what deletes it).
    job: StoredValue<Option<(u64, PreviewJob)>>,
}

impl DepthPreview {
    pub fn new() -> Self {
        Self {
            shown: RwSignal::new(DepthShown::Off),
            picks: StoredValue::new(Picks::default()),
            seen: StoredValue::new(Seen::default()),
            keyed: StoredValue::new(None),
            job: StoredValue::new(None),
        }
    }

    /// A new image is being chosen: any preview under way is for the old one.
    pub fn new_pick(self) {
        self.picks.update_value(|p| {
            p.new_pick();
        });
        if let Some(perf) = window().performance() {
            perf.clear_marks_with_mark_name(PICK_MARK);
            let _ = perf.mark(PICK_MARK);
        }
        self.shown.set(DepthShown::Off);
    }

    /// The current pick, for naming its download.
    pub fn pick(self) -> u64 {
        self.picks.with_value(Picks::current)
    }

    /// The image needs no preview (it is itself a depth map, or there is none).
    pub fn off(self) {
        self.picks.update_value(Picks::drop_preview);
        self.shown.set(DepthShown::Off);
    }

    /// Previews `control` unless this pick already has one shown or under way.
    pub fn preview(self, control: &Control) {
        if self.picks.with_value(Picks::has_preview) {
            return;
        }
        let pick = self
            .picks
            .try_update_value(Picks::start)
            .unwrap_or_default();
        self.shown.set(DepthShown::Computing);
        let data = FormData::new().and_then(|data| {
            match control {
                Control::Prepared(p) => {
                    data.append_with_blob_and_filename("control_image", &p.blob, "control.jpg")?
                }
                Control::Url(u) => data.append_with_str("control_image", u)?,
            }
            Ok(data)
        });
        let control = control.clone();
        spawn_local(async move {
            let key = key_of(&control).await;
            if let Some(k) = key {
                self.keyed.set_value(Some((pick, k)));
            }
            let known = key.and_then(|k| self.seen.with_value(|s| s.get(k).map(str::to_owned)));
            let shown = match (known, data) {
                (Some(url), _) => Some(DepthShown::Ready(url)),
                (None, Ok(data)) => compute(data, self, pick).await,
                (None, Err(_)) => Some(DepthShown::Unavailable(
                    "No depth preview: this browser could not send the image.".into(),
                )),
            };
            if let Some(shown) = shown
                && self.picks.try_with_value(|p| p.is_current(pick)) == Some(true)
            {
                self.shown.set(shown);
            }
        });
    }

    /// The depth map shown does not load: one remembered from earlier has expired, so
    /// the image is previewed again; a fresh one (never remembered) is not retried.
    pub fn failed_to_load(self, url: &str, control: Option<Control>) {
        let remembered = self.seen.try_update_value(|s| s.forget(url)) == Some(true);
        match control {
            Some(c) if remembered => {
                self.picks.update_value(Picks::drop_preview);
                self.preview(&c);
            }
            _ => self.shown.set(DepthShown::Unavailable(
                "No depth preview: the depth map could not be loaded.".into(),
            )),
        }
    }

    fn stale(self, pick: u64) -> bool {
        self.picks.try_with_value(|p| p.is_current(pick)) != Some(true)
    }

    /// The depth map's image has loaded: remembered for its image, and pick → depth
    /// shown recorded.
    pub fn loaded(self, url: &str) {
        if let Some(Some((pick, key))) = self.keyed.try_get_value()
            && !self.stale(pick)
        {
            let job = self
                .job
                .try_with_value(|j| {
                    j.as_ref()
                        .filter(|(p, _)| *p == pick)
                        .map(|(_, j)| j.clone())
                })
                .flatten();
            self.seen.update_value(|s| s.put(key, url.to_owned(), job));
        }
        if let Some(perf) = window().performance() {
            perf.clear_measures_with_measure_name(DEPTH_MEASURE);
            let _ = perf.measure_with_start_mark(DEPTH_MEASURE, PICK_MARK);
        }
    }
}

/// Submits the preview and reads it until it ends; `None` once it is stale.
async fn compute(data: FormData, depth: DepthPreview, pick: u64) -> Option<DepthShown> {
    let submitted = client::submit(Model::DepthAnythingV2, &data, &idempotency_key()).await;
    let s = match submitted {
        Ok(s) => s,
        Err(e) => return Some(DepthShown::Unavailable(refused(&e))),
    };
    depth.job.set_value(Some((
        pick,
        PreviewJob {
            response_url: s.response_url.clone(),
            owner_token: s.owner_token.clone(),
        },
    )));
    let started = js_sys::Date::now();
    let mut status = s.status;
    let mut failures = 0;
    // The first read at once: a preview the API already had (a keyed account's, of the
    // same bytes) is answered with its finished job. After a failed read: the server's
    // Retry-After, else a second.
    let mut backoff_ms: Option<f64> = Some(0.0);
    while !status.is_terminal() {
        let wait = backoff_ms
            .take()
            .unwrap_or_else(|| read_interval_ms(js_sys::Date::now() - started));
        if wait > 0.0 {
            client::sleep(wait as i32).await;
        }
        if depth.stale(pick) {
            return None;
        }
        match client::status(&s.status_url).await {
            Ok(answer) => {
                failures = 0;
                status = answer.status;
            }
            Err(e) => match e.read() {
                Read::Gone => {
                    return Some(DepthShown::Unavailable(failed_reason(
                        JobStatus::Failed,
                        None,
                    )));
                }
                _ if failures >= MAX_FAILURES => return Some(DepthShown::Unavailable(refused(&e))),
                _ => {
                    failures += 1;
                    backoff_ms = Some(e.retry_after_ms().unwrap_or(1_000.0).min(5_000.0));
                }
            },
        }
    }
    if depth.stale(pick) {
        return None;
    }
    match client::result_retried(&s.response_url).await {
        Ok(r) => Some(
            r.output
                .clone()
                .or_else(|| r.images.first().map(|i| i.url.clone()))
                .filter(|_| r.status == JobStatus::Completed)
                .map_or_else(
                    || DepthShown::Unavailable(failed_reason(r.status, r.error.as_deref())),
                    DepthShown::Ready,
                ),
        ),
        Err(e) => Some(DepthShown::Unavailable(refused(&e))),
    }
}

/// The image's key in [`Seen`]: its bytes' hash (the URL's, for one the server fetches).
async fn key_of(control: &Control) -> Option<u64> {
    match control {
        Control::Url(u) => Some(image_key(u.as_bytes())),
        Control::Prepared(p) => {
            let buffer = wasm_bindgen_futures::JsFuture::from(p.blob.array_buffer())
                .await
                .ok()?;
            Some(image_key(&js_sys::Uint8Array::new(&buffer).to_vec()))
        }
    }
}

fn refused(e: &ClientError) -> String {
    refused_reason(e.status(), e.code(), &e.message())
}
