//! When a provider's jobs finish, learned from its recent jobs (issue 18, item 3), so a
//! provider that pushes nothing is polled around the moments its jobs usually end
//! rather than on a fixed cadence.
//!
//! Each provider's [`crate::breaker::Breaker`] object (one per provider already, so
//! every isolate sees the same figures) keeps, per model, the last [`KEEP`] finish
//! times: milliseconds from the upstream accepting a job to the job's end, estimated
//! as the middle of the last look that found it running and the look that found it
//! done. The runner asks for them before a submit ([`expected`]) and keeps them in
//! the job's record; the poll schedule (`JobRecord::poll_delay_ms`) looks just before,
//! at and after each of them, and half as often as the budget allows in between, so
//! the looks it saves are there to spend near the expected end. A model's jobs can
//! differ (megapixels, steps): several clusters are kept, not one mean.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use worker::{Env, Method, Request, RequestInit};

use crate::config::bindings;

/// Finish times kept per model.
pub const KEEP: usize = 16;
/// Finish times closer than this are one cluster (its median is looked at).
const CLUSTER_MS: u32 = 500;
/// At most this many expected finishes are handed to a job.
const MAX_EXPECTED: usize = 6;

/// What the breaker object stores under [`STORE_KEY`]: per model, the recent finish
/// times, oldest first.
pub type Store = BTreeMap<String, Vec<u32>>;
pub const STORE_KEY: &str = "finishes";

/// A learned finish, as posted by a runner.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Finished {
    pub model: String,
    pub ms: u32,
}

/// Adds one finish time for `model`, forgetting the oldest beyond [`KEEP`].
pub fn learn(store: &mut Store, model: &str, ms: u32) {
    let times = store.entry(model.to_owned()).or_default();
    times.push(ms);
    if times.len() > KEEP {
        let extra = times.len() - KEEP;
        times.drain(..extra);
    }
}

/// The finish times to expect for `model`, ascending: the median of each cluster of
/// nearby times, the clusters seen most often first when there are too many.
pub fn expected(store: &Store, model: &str) -> Vec<u32> {
    let Some(times) = store.get(model) else {
        return Vec::new();
    };
    let mut sorted = times.clone();
    sorted.sort_unstable();
    let mut clusters: Vec<Vec<u32>> = Vec::new();
    for t in sorted {
        match clusters.last_mut() {
            Some(c) if c.last().is_some_and(|&last| t - last <= CLUSTER_MS) => c.push(t),
            _ => clusters.push(vec![t]),
        }
    }
    clusters.sort_by_key(|c| std::cmp::Reverse(c.len()));
    clusters.truncate(MAX_EXPECTED);
    let mut out: Vec<u32> = clusters.iter().map(|c| c[c.len() / 2]).collect();
    out.sort_unstable();
    out
}

/// Looks further apart than this (or than a quarter of the job's age, if more) tell
/// too little of when a job ended to learn from.
pub const PRECISE_MS: u64 = 2_000;

/// The finish time a job shows, after its submit: the middle of the last look that
/// found it running (or the submit) and the look that found it done, when those are
/// close (see [`PRECISE_MS`]); `None` when they are further apart (a short job seen
/// only when the budget allowed its second look says little of when it ended). A
/// rough estimate of a long job is refined by the next ones: the schedule looks
/// closely around what was learned, and the looks that see the end are close.
pub fn estimate(submitted_ms: u64, last_running_ms: Option<u64>, seen_done_ms: u64) -> Option<u32> {
    let lower = last_running_ms.unwrap_or(submitted_ms).max(submitted_ms);
    let gap = seen_done_ms.saturating_sub(lower);
    let age = seen_done_ms.saturating_sub(submitted_ms);
    if gap > PRECISE_MS.max(age / 4) {
        return None;
    }
    u32::try_from((lower + gap / 2).saturating_sub(submitted_ms)).ok()
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

/// Records one finish time (best effort: a lost one only makes the next schedule a
/// little less sure).
pub async fn record(env: &Env, provider: &str, model: &str, ms: u32) {
    let send = async {
        let body = serde_json::to_string(&Finished {
            model: model.to_owned(),
            ms,
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

    #[test]
    fn keeps_the_last_sixteen_per_model() {
        let mut s = Store::new();
        for ms in 0..20 {
            learn(&mut s, "m", ms * 1000);
        }
        learn(&mut s, "other", 5);
        assert_eq!(s["m"].len(), KEEP);
        assert_eq!(s["m"][0], 4000);
        assert_eq!(s["other"], vec![5]);
    }

    #[test]
    fn expected_finishes_are_cluster_medians() {
        let mut s = Store::new();
        for ms in [3100, 1000, 2900, 1100, 3000, 30_000, 10_050, 9_900, 1050] {
            learn(&mut s, "m", ms);
        }
        assert_eq!(expected(&s, "m"), vec![1050, 3000, 10_050, 30_000]);
        assert!(expected(&s, "unknown").is_empty());
    }

    #[test]
    fn too_many_clusters_keep_the_most_frequent() {
        let mut s = Store::new();
        for i in 0..10 {
            learn(&mut s, "m", i * 5_000);
        }
        for _ in 0..6 {
            learn(&mut s, "m", 7_000);
        }
        let e = expected(&s, "m");
        assert_eq!(e.len(), MAX_EXPECTED);
        assert!(e.contains(&7_000));
    }

    #[test]
    fn the_estimate_is_the_middle_of_the_last_two_looks_when_they_are_close() {
        assert_eq!(estimate(1_000, Some(3_000), 4_000), Some(2_500));
        // Done at the first look: between the submit and that look.
        assert_eq!(estimate(1_000, None, 2_000), Some(500));
        // A stale look from before the submit does not count.
        assert_eq!(estimate(1_000, Some(10), 2_000), Some(500));
        // Looks 5 s apart at 5 s: nothing learned; 4 s apart at 30 s: roughly.
        assert_eq!(estimate(1_000, Some(1_000), 6_000), None);
        assert_eq!(estimate(0, Some(26_000), 30_000), Some(28_000));
    }
}
