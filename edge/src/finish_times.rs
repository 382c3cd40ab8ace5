//! When a provider's jobs finish, learned from its recent jobs (issue 18, item 3), so a
//! provider that pushes nothing is polled around the moments its jobs usually end
//! rather than on a fixed cadence.
//!
//! Each provider's [`crate::objects::breaker::Breaker`] object (one per provider already, so
//! every isolate sees the same figures) keeps, per model, the last [`KEEP`] jobs'
//! *finish windows*: the job ended after the last look that found it running and by
//! the look that found it done (milliseconds after the upstream accepted it). Windows
//! of jobs that end alike overlap; their intersection is where such a job ends, and it
//! narrows with every job: a look in its middle splits it (a bisection spread over
//! jobs). The runner asks for the points to look at before a submit ([`expected`]) and
//! keeps them in the job's record; the poll schedule (`JobRecord::poll_delay_ms`)
//! looks at and just after each of them within its request budget. A model's jobs can
//! differ (megapixels, steps): windows that do not overlap make clusters of their own.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use worker::{Env, Method, Request, RequestInit};

use crate::bindings;

/// Finish windows kept per model.
pub const KEEP: usize = 16;
/// A window this narrow is looked at at its end: one look sees such a job done, at
/// most this late.
const NARROW_MS: u32 = 250;
/// At most this many expected finishes are handed to a job.
const MAX_EXPECTED: usize = 6;

/// A job ended after `lo` and by `hi`, in ms after the upstream accepted it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    pub lo: u32,
    pub hi: u32,
}

/// What the breaker object stores under [`STORE_KEY`]: per model, the recent finish
/// windows, oldest first.
pub type Store = BTreeMap<String, Vec<Window>>;
pub const STORE_KEY: &str = "finish_windows";

/// A learned finish, as posted by a runner.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Finished {
    pub model: String,
    pub window: Window,
}

/// Adds one finish window for `model`, forgetting the oldest beyond [`KEEP`].
pub fn learn(store: &mut Store, model: &str, window: Window) {
    let windows = store.entry(model.to_owned()).or_default();
    windows.push(window);
    if windows.len() > KEEP {
        let extra = windows.len() - KEEP;
        windows.drain(..extra);
    }
}

/// The moments to look at for `model`, ascending: for each cluster of overlapping
/// windows (narrowest first, each joining the first cluster it overlaps), the middle
/// of their intersection, or its end once that is narrower than [`NARROW_MS`]; the
/// clusters with the most jobs first when there are too many.
pub fn expected(store: &Store, model: &str) -> Vec<u32> {
    let Some(windows) = store.get(model) else {
        return Vec::new();
    };
    let mut by_width = windows.clone();
    by_width.sort_by_key(|w| w.hi.saturating_sub(w.lo));
    // (intersection, jobs in it)
    let mut clusters: Vec<(Window, usize)> = Vec::new();
    for w in by_width {
        let joined = clusters
            .iter_mut()
            .find(|(c, _)| w.lo < c.hi && c.lo < w.hi);
        match joined {
            Some((c, n)) => {
                c.lo = c.lo.max(w.lo);
                c.hi = c.hi.min(w.hi);
                *n += 1;
            }
            None => clusters.push((w, 1)),
        }
    }
    clusters.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
    clusters.truncate(MAX_EXPECTED);
    let mut out: Vec<u32> = clusters
        .iter()
        .map(|(c, _)| match c.hi - c.lo {
            w if w <= NARROW_MS => c.hi,
            w => c.lo + w / 2,
        })
        .collect();
    out.sort_unstable();
    out
}

/// The window a job's looks show: after the last look that found it running (or its
/// submit), by the look that found it done; `None` if the looks are out of order.
pub fn window(
    submitted_ms: u64,
    last_running_ms: Option<u64>,
    seen_done_ms: u64,
) -> Option<Window> {
    let after = |t: u64| u32::try_from(t.saturating_sub(submitted_ms)).ok();
    let lo = after(last_running_ms.unwrap_or(submitted_ms))?;
    let hi = after(seen_done_ms)?;
    (lo < hi).then_some(Window { lo, hi })
}

fn stub(env: &Env, provider: &str) -> worker::Result<worker::Stub> {
    env.durable_object(bindings::BREAKER)?
        .id_from_name(provider)?
        .get_stub()
}

/// The finish times `provider` showed for `model` lately (empty when none, or when
/// they cannot be read: the schedule then falls back to its fixed cadence).
pub async fn fetch_expected(env: &Env, provider: &str, model: &str) -> Vec<u32> {
    let read = async {
        // Model slugs are URL-safe (`flux-depth-pro`).
        let url = format!("https://breaker/finishes/{model}");
        let mut resp = stub(env, provider)?.fetch_with_str(&url).await?;
        resp.json::<Vec<u32>>().await
    };
    read.await.unwrap_or_else(|e| {
        worker::console_warn!("finish times of {provider}: {e}");
        Vec::new()
    })
}

/// Records one finish window (best effort: a lost one only makes the next schedule a
/// little less sure).
pub async fn record(env: &Env, provider: &str, model: &str, window: Window) {
    let send = async {
        let body = serde_json::to_string(&Finished {
            model: model.to_owned(),
            window,
        })?;
        let mut init = RequestInit::new();
        init.with_method(Method::Post).with_body(Some(body.into()));
        stub(env, provider)?
            .fetch_with_request(Request::new_with_init("https://breaker/finished", &init)?)
            .await
    };
    if let Err(e) = send.await {
        worker::console_warn!("finish time of {provider}: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(lo: u32, hi: u32) -> Window {
        Window { lo, hi }
    }

    #[test]
    fn keeps_the_last_sixteen_per_model() {
        let mut s = Store::new();
        for ms in 0..20 {
            learn(&mut s, "m", w(ms * 1000, ms * 1000 + 10));
        }
        learn(&mut s, "other", w(5, 6));
        assert_eq!(s["m"].len(), KEEP);
        assert_eq!(s["m"][0], w(4000, 4010));
        assert_eq!(s["other"], vec![w(5, 6)]);
    }

    #[test]
    fn overlapping_windows_narrow_to_where_such_jobs_end() {
        let mut s = Store::new();
        // A 10 s job seen at the fixed cadence's looks at 8 and 10 s, one of the same
        // length looked at in that window's middle (9 s: running; 10.2 s: done), a
        // 30 s job seen roughly.
        learn(&mut s, "m", w(8_000, 10_000));
        assert_eq!(expected(&s, "m"), vec![9_000]);
        learn(&mut s, "m", w(9_000, 10_200));
        assert_eq!(expected(&s, "m"), vec![9_500]);
        learn(&mut s, "m", w(9_500, 9_900));
        assert_eq!(expected(&s, "m"), vec![9_700]);
        learn(&mut s, "m", w(9_700, 9_950));
        // Narrow: looked at at its end, where one look sees the job done.
        assert_eq!(expected(&s, "m"), vec![9_900]);
        learn(&mut s, "m", w(26_000, 32_000));
        assert_eq!(expected(&s, "m"), vec![9_900, 29_000]);
        assert!(expected(&s, "unknown").is_empty());
    }

    #[test]
    fn a_wide_window_does_not_blur_a_narrow_one_and_clusters_are_capped() {
        let mut s = Store::new();
        learn(&mut s, "m", w(900, 1_100));
        learn(&mut s, "m", w(2_900, 3_100));
        // A short job seen only at the budget's second look (0–6 s) contains both.
        learn(&mut s, "m", w(0, 6_000));
        assert_eq!(expected(&s, "m"), vec![1_100, 3_100]);
        for i in 0..10 {
            learn(&mut s, "m", w(20_000 + i * 5_000, 20_100 + i * 5_000));
        }
        let e = expected(&s, "m");
        assert_eq!(e.len(), MAX_EXPECTED);
        // The cluster with two jobs is kept.
        assert!(e.contains(&1_100), "{e:?}");
    }

    #[test]
    fn a_window_is_between_the_last_two_looks() {
        assert_eq!(window(1_000, Some(3_000), 4_000), Some(w(2_000, 3_000)));
        // Done at the first look: between the submit and that look.
        assert_eq!(window(1_000, None, 2_000), Some(w(0, 1_000)));
        // A stale look from before the submit counts as the submit.
        assert_eq!(window(1_000, Some(10), 2_000), Some(w(0, 1_000)));
        assert_eq!(window(1_000, Some(2_000), 2_000), None);
    }
}
