//! The waiting status read, `GET /v2/requests/{id}/status?wait=N&seen=S`: its query,
//! validated here once (the edge parses it, the app builds it), and when it answers.
//!
//! The read is held until the job's `status` is no longer the one the client last saw
//! (`seen`, else the status when the read arrived), or `N` seconds pass; then it is
//! answered exactly like a plain status read. A finished job answers at once. Only
//! `status` counts as a change: the rest of the body (`metrics`) changes only with it,
//! and a job's status only moves forward (QUEUED → PROCESSING → COMPLETED or FAILED),
//! so a client waits at most one read per step, and one passing `seen` never misses a
//! step that happened between its reads.

use crate::error::FieldError;
use crate::wire::JobStatus;

/// The longest hold, in seconds: it bounds what one read costs the server.
pub const MAX_WAIT_SECS: u32 = 30;

/// A validated `wait` (and optional `seen`) of a status read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusWait {
    /// Seconds to hold at most, `1..=MAX_WAIT_SECS`.
    pub secs: u32,
    /// The status the client last saw; `None`: the status when the read arrives.
    pub seen: Option<JobStatus>,
}

impl StatusWait {
    /// From the raw query values. `Ok(None)`: no `wait`, a plain read (a `seen`
    /// without `wait` is still checked, then has no effect).
    pub fn parse(wait: Option<&str>, seen: Option<&str>) -> Result<Option<Self>, FieldError> {
        let seen = match seen {
            None => None,
            Some(s) => Some(JobStatus::parse(s).ok_or_else(|| {
                FieldError::new("seen", "must be QUEUED, PROCESSING, COMPLETED or FAILED")
            })?),
        };
        let Some(wait) = wait else {
            return Ok(None);
        };
        let secs = Some(wait)
            .filter(|w| w.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|w| w.parse::<u32>().ok())
            .filter(|s| (1..=MAX_WAIT_SECS).contains(s))
            .ok_or_else(|| {
                FieldError::new(
                    "wait",
                    format!("must be a whole number of seconds from 1 to {MAX_WAIT_SECS}"),
                )
            })?;
        Ok(Some(Self { secs, seen }))
    }

    /// The query string (`wait=25&seen=PROCESSING`), without `?`.
    pub fn query(&self) -> String {
        match self.seen {
            Some(seen) => format!("wait={}&seen={}", self.secs, seen.as_str()),
            None => format!("wait={}", self.secs),
        }
    }

    /// Whether a job now at `status` answers the read, `at_arrival` being its status
    /// when the read arrived.
    pub fn answers(&self, status: JobStatus, at_arrival: JobStatus) -> bool {
        status.is_terminal() || status != self.seen.unwrap_or(at_arrival)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_is_a_whole_number_of_seconds_from_1_to_30() {
        assert_eq!(StatusWait::parse(None, None), Ok(None));
        for ok in ["1", "25", "30"] {
            let w = StatusWait::parse(Some(ok), None).unwrap().unwrap();
            assert_eq!(w.secs.to_string(), ok);
        }
        for bad in ["0", "31", "abc", "", "-1", "+5", "1.5", " 5", "99999999999"] {
            let e = StatusWait::parse(Some(bad), None).unwrap_err();
            assert_eq!(e.field, "wait", "{bad:?}");
        }
    }

    #[test]
    fn seen_names_a_status_and_is_checked_even_without_wait() {
        let w = StatusWait::parse(Some("5"), Some("PROCESSING")).unwrap();
        assert_eq!(w.and_then(|w| w.seen), Some(JobStatus::Processing));
        assert_eq!(
            StatusWait::parse(Some("5"), Some("IN_PROGRESS"))
                .unwrap_err()
                .field,
            "seen"
        );
        assert_eq!(
            StatusWait::parse(None, Some("nope")).unwrap_err().field,
            "seen"
        );
        assert_eq!(StatusWait::parse(None, Some("QUEUED")), Ok(None));
    }

    #[test]
    fn the_query_round_trips() {
        for w in [
            StatusWait {
                secs: 25,
                seen: Some(JobStatus::Queued),
            },
            StatusWait {
                secs: 3,
                seen: None,
            },
        ] {
            let q = w.query();
            let mut wait = None;
            let mut seen = None;
            for (k, v) in q.split('&').filter_map(|kv| kv.split_once('=')) {
                match k {
                    "wait" => wait = Some(v),
                    "seen" => seen = Some(v),
                    _ => panic!("{k}"),
                }
            }
            assert_eq!(StatusWait::parse(wait, seen), Ok(Some(w)));
        }
    }

    #[test]
    fn a_finished_job_or_a_step_past_seen_answers_at_once() {
        use JobStatus::*;
        let since = |seen| StatusWait { secs: 5, seen };
        assert!(since(None).answers(Completed, Completed), "finished");
        assert!(since(None).answers(Failed, Processing));
        assert!(!since(None).answers(Processing, Processing), "held");
        assert!(
            since(None).answers(Processing, Queued),
            "moved on while held"
        );
        assert!(
            since(Some(Queued)).answers(Processing, Processing),
            "moved on before the read arrived"
        );
        assert!(!since(Some(Processing)).answers(Processing, Processing));
        assert!(since(Some(Completed)).answers(Completed, Completed));
    }
}
