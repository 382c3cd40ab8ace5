//! ETA from this device's recent jobs: the median duration of the last few finished
//! jobs of the same model, and the progress a running job has made against it.

/// How many recent durations to keep per model.
pub const KEEP: usize = 10;

/// Remembers a finished job's duration (seconds), newest last, at most [`KEEP`].
pub fn record(history: &mut Vec<f64>, seconds: f64) {
    if seconds.is_finite() && seconds > 0.0 {
        history.push(seconds);
        if history.len() > KEEP {
            history.remove(0);
        }
    }
}

/// The expected duration: the median of the history, or `fallback` without one.
pub fn expected(history: &[f64], fallback: f64) -> f64 {
    if history.is_empty() {
        return fallback;
    }
    let mut sorted = history.to_vec();
    sorted.sort_unstable_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    if sorted.len().is_multiple_of(2) {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    } else {
        sorted[mid]
    }
}

/// Progress in 0..=0.95 (never "done" before the server says so) after `elapsed`.
pub fn progress(elapsed: f64, expected: f64) -> f64 {
    if expected <= 0.0 {
        return 0.0;
    }
    (elapsed / expected).clamp(0.0, 0.95)
}

/// "about 12 s left", "a few seconds left", or "taking longer than usual".
pub fn remaining_text(elapsed: f64, expected: f64) -> String {
    let left = expected - elapsed;
    if left > 90.0 {
        format!("about {} min left", (left / 60.0).round() as u64)
    } else if left > 5.0 {
        format!("about {} s left", left.round() as u64)
    } else if left > -10.0 {
        "a few seconds left".into()
    } else {
        "taking longer than usual".into()
    }
}

/// "4 s", "1 min 05 s".
pub fn elapsed_text(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    if s < 60 {
        format!("{s} s")
    } else {
        format!("{} min {:02} s", s / 60, s % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_of_recent_jobs_is_the_estimate() {
        let mut h = Vec::new();
        assert_eq!(expected(&h, 20.0), 20.0);
        for s in [10.0, 30.0, 12.0] {
            record(&mut h, s);
        }
        assert_eq!(expected(&h, 20.0), 12.0);
        record(&mut h, 14.0);
        assert_eq!(expected(&h, 20.0), 13.0);
        for _ in 0..20 {
            record(&mut h, 5.0);
        }
        assert_eq!(h.len(), KEEP);
        record(&mut h, f64::NAN);
        assert_eq!(h.len(), KEEP);
    }

    #[test]
    fn progress_never_claims_done_and_text_reads_naturally() {
        assert_eq!(progress(5.0, 10.0), 0.5);
        assert_eq!(progress(50.0, 10.0), 0.95);
        assert_eq!(remaining_text(2.0, 14.0), "about 12 s left");
        assert_eq!(remaining_text(0.0, 300.0), "about 5 min left");
        assert_eq!(remaining_text(12.0, 14.0), "a few seconds left");
        assert_eq!(remaining_text(60.0, 14.0), "taking longer than usual");
        assert_eq!(elapsed_text(65.4), "1 min 05 s");
        assert_eq!(elapsed_text(4.2), "4 s");
    }
}
