//! The waiting status read, `GET /v2/requests/{id}/status?wait=N&seen=S`: its query,
//! validated here once (the edge parses it, the app builds it), and when it answers.
//!
//! The read is held until the job's `status` is no longer the one the client last saw
//! (`seen`, else the status when the read arrived), or `N` seconds pass; then it is
//! answered exactly like a plain status read. A finished job answers at once. Only
//! `status` counts as a change: the rest of the body (`metrics`) changes only with it,
//! and a job's status only moves forward (QUEUED → PROCESSING → COMPLETED or FAILED),
//! so a client waits at most one read per step, and one passing `seen` never misses a
//! step that happened between its reads. `seen` may list several statuses
//! (`seen=QUEUED,PROCESSING`): a client that wants only the end (an image, or the
//! reason it failed) then makes one read per `N` seconds of the job, whatever its
//! steps.

use crate::error::FieldError;
use crate::wire::JobStatus;

/// The longest hold, in seconds: it bounds what one read costs the server.
pub const MAX_WAIT_SECS: u32 = 30;

/// Statuses a client has seen: a status among them does not answer a held read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen(u8);

const STATUSES: [JobStatus; 4] = [
    JobStatus::Queued,
    JobStatus::Processing,
    JobStatus::Completed,
    JobStatus::Failed,
];

impl Seen {
    fn bit(status: JobStatus) -> u8 {
        match status {
            JobStatus::Queued => 1,
            JobStatus::Processing => 2,
            JobStatus::Completed => 4,
            JobStatus::Failed => 8,
        }
    }

    pub fn one(status: JobStatus) -> Self {
        Self(Self::bit(status))
    }

    /// `QUEUED`, or a comma-separated list (`QUEUED,PROCESSING`); `None` if empty or
    /// any name is unknown.
    pub fn parse(list: &str) -> Option<Self> {
        list.split(',').try_fold(Self(0), |set, name| {
            JobStatus::parse(name).map(|s| Self(set.0 | Self::bit(s)))
        })
    }

    pub fn contains(self, status: JobStatus) -> bool {
        self.0 & Self::bit(status) != 0
    }

    /// As on the wire, in the statuses' order (`QUEUED,PROCESSING`).
    pub fn as_query(self) -> String {
        STATUSES
            .into_iter()
            .filter(|s| self.contains(*s))
            .map(JobStatus::as_str)
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// A validated `wait` (and optional `seen`) of a status read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusWait {
    /// Seconds to hold at most, `1..=MAX_WAIT_SECS`.
    pub secs: u32,
    /// The statuses the client has seen; `None`: the status when the read arrives.
    pub seen: Option<Seen>,
}

impl StatusWait {
    /// From the raw query values. `Ok(None)`: no `wait`, a plain read (a `seen`
    /// without `wait` is still checked, then has no effect).
    pub fn parse(wait: Option<&str>, seen: Option<&str>) -> Result<Option<Self>, FieldError> {
        let seen = match seen {
            None => None,
            Some(s) => Some(Seen::parse(s).ok_or_else(|| {
                FieldError::new(
                    "seen",
                    "must be QUEUED, PROCESSING, COMPLETED or FAILED, or a comma-separated list of them",
                )
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

    /// From a query's decoded pairs (the last `wait` and `seen` count; other names are
    /// ignored).
    pub fn from_pairs<K: AsRef<str>, V: AsRef<str>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Option<Self>, FieldError> {
        let (mut wait, mut seen) = (None, None);
        for (k, v) in pairs {
            match k.as_ref() {
                "wait" => wait = Some(v.as_ref().to_owned()),
                "seen" => seen = Some(v.as_ref().to_owned()),
                _ => {}
            }
        }
        Self::parse(wait.as_deref(), seen.as_deref())
    }

    /// The query string (`wait=25&seen=PROCESSING`), without `?`.
    pub fn query(&self) -> String {
        match self.seen {
            Some(seen) => format!("wait={}&seen={}", self.secs, seen.as_query()),
            None => format!("wait={}", self.secs),
        }
    }

    /// Whether a job now at `status` answers the read, `at_arrival` being its status
    /// when the read arrived.
    pub fn answers(&self, status: JobStatus, at_arrival: JobStatus) -> bool {
        status.is_terminal() || !self.seen.unwrap_or(Seen::one(at_arrival)).contains(status)
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
        assert_eq!(
            w.and_then(|w| w.seen),
            Some(Seen::one(JobStatus::Processing))
        );
        let both = StatusWait::parse(Some("5"), Some("QUEUED,PROCESSING")).unwrap();
        let both = both.and_then(|w| w.seen).unwrap();
        assert!(both.contains(JobStatus::Queued) && both.contains(JobStatus::Processing));
        assert!(!both.contains(JobStatus::Completed));
        for bad in ["", "QUEUED,", ",QUEUED", "QUEUED,nope"] {
            assert_eq!(
                StatusWait::parse(Some("5"), Some(bad)).unwrap_err().field,
                "seen",
                "{bad:?}"
            );
        }
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
                seen: Some(Seen::one(JobStatus::Queued)),
            },
            StatusWait {
                secs: 30,
                seen: Seen::parse("PROCESSING,QUEUED"),
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
        let seen = |s| Some(Seen::one(s));
        assert!(
            since(seen(Queued)).answers(Processing, Processing),
            "moved on before the read arrived"
        );
        assert!(!since(seen(Processing)).answers(Processing, Processing));
        assert!(since(seen(Completed)).answers(Completed, Completed));
        // Only the end is wanted: held through QUEUED → PROCESSING.
        let until_done = since(Seen::parse("QUEUED,PROCESSING"));
        assert!(!until_done.answers(Processing, Queued));
        assert!(until_done.answers(Completed, Queued));
        assert!(until_done.answers(Failed, Processing));
    }
}
