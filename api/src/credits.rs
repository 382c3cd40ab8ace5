//! `GET /v2/credits`: an API key's balance and where its credits went — one entry per
//! job (charged, refunded, still pending, and why it ended) and one per grant, newest
//! first, paginated like `GET /v2/requests`.

use serde::{Deserialize, Serialize};

use crate::models::Model;

/// How a job's charge was settled: the reason its refund (possibly 0) was decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Settlement {
    /// Every image delivered: nothing refunded.
    Completed,
    /// Completed with fewer images than asked for: the missing ones refunded.
    ShortOfOutputs,
    /// The job failed (provider error, timeout, safety filter): refunded in full.
    Failed,
    /// Its owner canceled it (or deleted it while it ran): refunded in full when
    /// nothing was spent upstream, else nothing.
    Canceled,
    /// The job could not be started at all: refunded in full.
    NotStarted,
}

impl Settlement {
    /// The snake_case name (as on the wire and in the Ledger's rows).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::ShortOfOutputs => "short_of_outputs",
            Self::Failed => "failed",
            Self::Canceled => "canceled",
            Self::NotStarted => "not_started",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Completed,
            Self::ShortOfOutputs,
            Self::Failed,
            Self::Canceled,
            Self::NotStarted,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
    }
}

/// One movement of an account's credits. Times are Unix seconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CreditEntry {
    /// A job: `charged` at submit, `refunded` so far, and `pending` — what a decision
    /// still under way may give back (the whole charge until the job's end is recorded,
    /// then 0). The entry stays after the job is deleted, for the retention period.
    Job {
        request_id: String,
        /// The model asked for (`None` for jobs from before models were recorded).
        model: Option<Model>,
        charged: u64,
        refunded: u64,
        pending: u64,
        created_at: u64,
        /// When its end was recorded; `None` while it runs.
        settled_at: Option<u64>,
        /// Why it ended; `None` while it runs (or for jobs from before reasons were
        /// recorded).
        reason: Option<Settlement>,
        /// Deleted by its owner (its result is gone; its credits are still here).
        deleted: bool,
    },
    /// Credits granted by the operator.
    Grant {
        grant_id: String,
        credits: u64,
        /// `None` for grants applied before their time was recorded.
        created_at: Option<u64>,
    },
}

/// The body of `GET /v2/credits`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreditsPage {
    pub balance: u64,
    pub entries: Vec<CreditEntry>,
    /// Pass as `cursor` for the next (older) page; `None` on the last one.
    pub next_cursor: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_tagged_by_kind_in_snake_case() {
        let page = CreditsPage {
            balance: 7,
            entries: vec![
                CreditEntry::Job {
                    request_id: "r".into(),
                    model: Some(Model::FluxDepthPro),
                    charged: 5,
                    refunded: 0,
                    pending: 5,
                    created_at: 1,
                    settled_at: None,
                    reason: None,
                    deleted: true,
                },
                CreditEntry::Grant {
                    grant_id: "g1".into(),
                    credits: 12,
                    created_at: None,
                },
            ],
            next_cursor: None,
        };
        let v = serde_json::to_value(&page).unwrap();
        assert_eq!(v["entries"][0]["kind"], "job");
        assert_eq!(v["entries"][0]["model"], "flux-depth-pro");
        assert_eq!(v["entries"][1]["kind"], "grant");
        assert_eq!(
            serde_json::from_value::<CreditsPage>(v).unwrap(),
            page,
            "round trip"
        );
        for r in [
            Settlement::Completed,
            Settlement::ShortOfOutputs,
            Settlement::Failed,
            Settlement::Canceled,
            Settlement::NotStarted,
        ] {
            assert_eq!(
                serde_json::to_value(r).unwrap(),
                serde_json::Value::from(r.as_str())
            );
            assert_eq!(Settlement::parse(r.as_str()), Some(r));
        }
    }
}
