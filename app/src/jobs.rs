//! How a job reads on a card: its label, badge style, the facts line, and the Cancel
//! button's words. Pure, tested natively.

use parallax_api::{Credits, JobStatus};

use crate::logic::eta;
use crate::logic::form::value_text;
use crate::logic::store::Job;

/// The badge text. A COMPLETED status whose result is still being read stays
/// "Generating…" until the images are there.
pub fn label(job: &Job) -> &'static str {
    match (job.status, job.has_result) {
        (JobStatus::Queued, _) => "Queued",
        (JobStatus::Processing, _) | (JobStatus::Completed, false) => "Generating…",
        (JobStatus::Completed, true) => "Done",
        (JobStatus::Failed, _) => "Failed",
    }
}

/// A CSS modifier for the badge.
pub fn class(job: &Job) -> &'static str {
    match (job.status, job.has_result) {
        (JobStatus::Queued, _) => "queued",
        (JobStatus::Processing, _) | (JobStatus::Completed, false) => "processing",
        (JobStatus::Completed, true) => "completed",
        (JobStatus::Failed, _) => "failed",
    }
}

pub fn running(job: &Job) -> bool {
    !job.status.is_terminal()
}

/// The Cancel button's words, from what the server says a cancel would refund now.
pub fn cancel_label(job: &Job) -> String {
    match job.metrics.credits.and_then(|c| c.refund_on_cancel) {
        Some(0) => "Cancel (no refund: the provider already started)".into(),
        Some(n) => format!("Cancel (refunds {n} credits)"),
        None => "Cancel".into(),
    }
}

/// The facts a finished card shows: the seed, every other parameter the job ran with
/// (named and ordered as the model's catalog has them, so a parameter the catalog
/// gains shows up here too), provider, duration, credits.
pub fn facts(job: &Job) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    if let Some(seed) = job
        .seed
        .map(|s| s.to_string())
        .or_else(|| job.params.get("seed").map(value_text))
    {
        out.push(("Seed", seed));
    }
    for spec in job.model.params() {
        if matches!(spec.name, "prompt" | "control_image" | "seed") {
            continue;
        }
        if let Some(v) = job.params.get(spec.name) {
            let text = match v {
                serde_json::Value::Bool(true) => "yes".to_owned(),
                serde_json::Value::Bool(false) => "no".to_owned(),
                other => value_text(other),
            };
            out.push((spec.label, text));
        }
    }
    if let Some(p) = &job.metrics.provider {
        out.push(("Provider", p.clone()));
    }
    if let Some(t) = job.metrics.total_time {
        out.push(("Took", eta::elapsed_text(t)));
    }
    if let Some(c) = job.metrics.credits {
        out.push(("Credits", credits_text(&c)));
    }
    out
}

/// A finished job's refund still to come, in words (a card and History show it).
pub fn pending_text(job: &Job) -> Option<String> {
    match job.refund_pending() {
        0 => None,
        n => Some(format!(
            "Refund of up to {n} credits pending (the provider is asked whether it ran)"
        )),
    }
}

/// A job's credits in words: what was charged and refunded, and a refund that a
/// decision under way may still give (`refund_pending`) as pending, never as 0.
pub fn credits_text(c: &Credits) -> String {
    match (c.refunded, c.refund_pending.filter(|n| *n > 0)) {
        (0, None) => c.charged.to_string(),
        (r, None) => format!("{} charged, {r} refunded", c.charged),
        (0, Some(p)) => format!("{} charged, refund of up to {p} pending", c.charged),
        (r, Some(p)) => format!(
            "{} charged, {r} refunded, up to {p} more pending",
            c.charged
        ),
    }
}

#[cfg(test)]
mod tests {
    use parallax_api::{Metrics, Model, Params};

    use super::*;

    fn job() -> Job {
        Job::submitted(
            "a",
            Model::FluxDepthPro,
            "a red door",
            "http://x/v2/requests/a",
            Params::default(),
            0.0,
            20.0,
        )
    }

    #[test]
    fn completed_is_done_only_with_its_result() {
        let mut j = job();
        assert_eq!(label(&j), "Queued");
        j.status = JobStatus::Completed;
        assert_eq!(label(&j), "Generating…");
        j.has_result = true;
        assert_eq!((label(&j), class(&j)), ("Done", "completed"));
    }

    #[test]
    fn cancel_says_whether_credits_come_back() {
        let mut j = job();
        assert_eq!(cancel_label(&j), "Cancel");
        j.metrics.credits = Some(Credits {
            charged: 5,
            refunded: 0,
            refund_on_cancel: Some(5),
            refund_pending: None,
        });
        assert_eq!(cancel_label(&j), "Cancel (refunds 5 credits)");
        j.metrics.credits = Some(Credits {
            charged: 5,
            refunded: 0,
            refund_on_cancel: Some(0),
            refund_pending: None,
        });
        assert!(cancel_label(&j).contains("no refund"));
    }

    #[test]
    fn facts_show_seed_params_provider_time_and_credits() {
        let mut j = job();
        j.params =
            serde_json::from_value(serde_json::json!({"prompt":"x","steps":40,"guidance":7.5}))
                .unwrap();
        j.seed = Some(42);
        j.metrics = Metrics {
            total_time: Some(12.0),
            provider: Some("segmind".into()),
            credits: Some(Credits {
                charged: 5,
                refunded: 5,
                refund_on_cancel: None,
                refund_pending: None,
            }),
            ..Metrics::default()
        };
        let f = facts(&j);
        assert_eq!(f[0], ("Seed", "42".to_owned()));
        assert!(f.contains(&("Steps", "40".to_owned())));
        assert!(f.contains(&("Guidance", "7.5".to_owned())));
        assert!(f.contains(&("Provider", "segmind".to_owned())));
        assert!(f.contains(&("Credits", "5 charged, 5 refunded".to_owned())));
        assert!(f.iter().any(|(k, _)| *k == "Took"));
        // Every parameter of the catalog the job ran with, under the catalog's label:
        // a dev job's steps are `num_inference_steps`.
        let mut dev = job();
        dev.model = Model::FluxDepthDev;
        dev.params = serde_json::from_value(serde_json::json!({
            "prompt": "x", "num_inference_steps": 28, "megapixels": "0.25", "num_outputs": 2,
            "output_quality": 80, "disable_safety_checker": false, "output_format": "webp"
        }))
        .unwrap();
        let f = facts(&dev);
        for want in [
            ("Steps", "28"),
            ("Size", "0.25"),
            ("Images", "2"),
            ("Quality", "80"),
            ("Disable safety checker", "no"),
            ("Format", "webp"),
        ] {
            assert!(
                f.contains(&(want.0, want.1.to_owned())),
                "{want:?} in {f:?}"
            );
        }
        assert!(!f.iter().any(|(k, _)| *k == "Prompt"));
        let pending = Credits {
            charged: 5,
            refund_pending: Some(5),
            ..Credits::default()
        };
        assert_eq!(
            credits_text(&pending),
            "5 charged, refund of up to 5 pending"
        );
        assert_eq!(
            credits_text(&Credits {
                refunded: 2,
                refund_pending: Some(3),
                ..pending
            }),
            "5 charged, 2 refunded, up to 3 more pending"
        );
    }
}
