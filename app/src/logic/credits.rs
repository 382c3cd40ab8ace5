//! The credit history in words (Settings' credits panel): one line per entry of
//! `GET /v2/credits`, kept out of `view!` and tested natively.

use parallax_api::{CreditEntry, Model, Settlement};

/// How one entry reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryLine {
    /// What moved the credits: a model's job, or a grant.
    pub title: String,
    /// The net change to the balance so far ("−5", "+1000", "0").
    pub amount: String,
    /// How it came about: charged, refunded, why it ended, deleted.
    pub detail: String,
    /// A refund may still come (shown as pending, never as 0).
    pub pending: Option<String>,
    /// Unix seconds, for the date.
    pub at: Option<u64>,
}

fn reason_text(reason: Option<Settlement>) -> &'static str {
    match reason {
        Some(Settlement::Completed) => "completed",
        Some(Settlement::ShortOfOutputs) => "fewer images than asked, the rest refunded",
        Some(Settlement::Failed) => "failed, refunded",
        Some(Settlement::Canceled) => "canceled",
        Some(Settlement::NotStarted) => "could not start, refunded",
        None => "running",
    }
}

pub fn line(entry: &CreditEntry) -> EntryLine {
    match entry {
        CreditEntry::Grant {
            credits,
            created_at,
            ..
        } => EntryLine {
            title: "Credits added".into(),
            amount: format!("+{credits}"),
            detail: "granted to this key".into(),
            pending: None,
            at: *created_at,
        },
        CreditEntry::Job {
            model,
            charged,
            refunded,
            pending,
            created_at,
            reason,
            deleted,
            ..
        } => {
            let net = charged.saturating_sub(*refunded);
            let mut detail = format!("{charged} charged");
            if *refunded > 0 {
                detail.push_str(&format!(", {refunded} refunded"));
            }
            detail.push_str(" · ");
            detail.push_str(reason_text(*reason));
            if *deleted {
                detail.push_str(" · deleted");
            }
            EntryLine {
                title: model.map_or("A job", Model::title).to_owned(),
                amount: if net == 0 {
                    "0".into()
                } else {
                    format!("\u{2212}{net}")
                },
                detail,
                pending: (*pending > 0).then(|| format!("refund of up to {pending} pending")),
                at: Some(*created_at),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(refunded: u64, pending: u64, reason: Option<Settlement>, deleted: bool) -> CreditEntry {
        CreditEntry::Job {
            request_id: "r".into(),
            model: Some(Model::FluxDepthPro),
            charged: 5,
            refunded,
            pending,
            created_at: 10,
            settled_at: None,
            reason,
            deleted,
        }
    }

    #[test]
    fn a_pending_refund_reads_as_pending_and_a_deleted_job_stays_listed() {
        let l = line(&job(0, 5, None, true));
        assert_eq!(l.amount, "\u{2212}5");
        assert_eq!(l.detail, "5 charged · running · deleted");
        assert_eq!(l.pending.as_deref(), Some("refund of up to 5 pending"));
        let l = line(&job(5, 0, Some(Settlement::Canceled), true));
        assert_eq!(
            (l.amount.as_str(), l.detail.as_str(), l.pending),
            ("0", "5 charged, 5 refunded · canceled · deleted", None)
        );
        assert_eq!(l.title, "FLUX.1 Depth [pro]");
    }

    #[test]
    fn a_grant_adds_credits() {
        let l = line(&CreditEntry::Grant {
            grant_id: "g1".into(),
            credits: 1000,
            created_at: None,
        });
        assert_eq!(
            (l.title.as_str(), l.amount.as_str()),
            ("Credits added", "+1000")
        );
        assert_eq!(l.at, None);
    }
}
