//! This browser's job history: what is kept for each job, merging updates (from
//! polling or from the server's list), filtering, and the JSON export.

use parallax_api::{JobResult, JobStatus, Params};
use serde::{Deserialize, Serialize};

/// Most jobs kept in this browser.
pub const MAX_ENTRIES: usize = 300;

/// One job in the history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub id: String,
    pub model: String,
    pub prompt: String,
    pub status: JobStatus,
    /// Browser clock at submit (ms), or the server's `created_at`.
    pub created_ms: f64,
    #[serde(default)]
    pub outputs: Vec<String>,
    #[serde(default)]
    pub control_image: Option<String>,
    #[serde(default)]
    pub expires_at: Option<u64>,
    #[serde(default)]
    pub error: Option<String>,
    pub response_url: String,
    #[serde(default)]
    pub params: Params,
}

impl Entry {
    pub fn status_url(&self) -> String {
        format!("{}/status", self.response_url)
    }

    /// The entry a (finished or running) server result describes.
    pub fn from_result(r: &JobResult, response_url: &str) -> Self {
        Self {
            id: r.request_id.to_string(),
            model: r.model.slug().to_owned(),
            prompt: r.params.prompt().to_owned(),
            status: r.status,
            created_ms: r.created_at as f64 * 1000.0,
            outputs: r.output.clone(),
            control_image: Some(r.control_image.clone()),
            expires_at: r.expires_at,
            error: r.error.clone(),
            response_url: response_url.to_owned(),
            params: r.params.clone(),
        }
    }
}

/// Inserts or updates `entry` (by id), newest first, capped at [`MAX_ENTRIES`].
pub fn upsert(list: &mut Vec<Entry>, entry: Entry) {
    match list.iter_mut().find(|e| e.id == entry.id) {
        Some(existing) => {
            let created = existing.created_ms.min(entry.created_ms);
            *existing = entry;
            existing.created_ms = created;
        }
        None => list.push(entry),
    }
    list.sort_by(|a, b| b.created_ms.total_cmp(&a.created_ms));
    list.truncate(MAX_ENTRIES);
}

pub fn remove(list: &mut Vec<Entry>, id: &str) {
    list.retain(|e| e.id != id);
}

/// Entries matching a model slug and a status ("" matches all).
pub fn filter<'a>(list: &'a [Entry], model: &str, status: &str) -> Vec<&'a Entry> {
    list.iter()
        .filter(|e| model.is_empty() || e.model == model)
        .filter(|e| status.is_empty() || e.status.as_str() == status)
        .collect()
}

/// Drops entries whose retention is over (their images are gone).
pub fn prune_expired(list: &mut Vec<Entry>, now_secs: u64) {
    list.retain(|e| e.expires_at.is_none_or(|t| t > now_secs));
}

/// "expires in 29 days", "expires in 5 hours", "expired".
pub fn expiry_text(expires_at: Option<u64>, now_secs: u64) -> Option<String> {
    let left = expires_at?.checked_sub(now_secs).filter(|l| *l > 0);
    Some(match left {
        None => "expired".into(),
        Some(l) if l >= 2 * 86_400 => format!("kept {} more days", l / 86_400),
        Some(l) if l >= 2 * 3600 => format!("kept {} more hours", l / 3600),
        Some(l) if l >= 120 => format!("kept {} more minutes", l / 60),
        Some(_) => "expires in a minute".into(),
    })
}

/// The export: the whole history as pretty JSON.
pub fn export(list: &[Entry]) -> String {
    serde_json::to_string_pretty(list).unwrap_or_else(|_| "[]".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, created: f64, status: JobStatus) -> Entry {
        Entry {
            id: id.into(),
            model: "flux-depth-pro".into(),
            prompt: format!("p{id}"),
            status,
            created_ms: created,
            outputs: vec![],
            control_image: None,
            expires_at: None,
            error: None,
            response_url: format!("http://x/v2/requests/{id}"),
            params: Params::default(),
        }
    }

    #[test]
    fn upsert_updates_in_place_and_keeps_newest_first() {
        let mut l = Vec::new();
        upsert(&mut l, entry("a", 1.0, JobStatus::Queued));
        upsert(&mut l, entry("b", 2.0, JobStatus::Queued));
        upsert(&mut l, entry("a", 5.0, JobStatus::Completed));
        assert_eq!(
            l.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
            ["b", "a"]
        );
        assert_eq!(l[1].status, JobStatus::Completed);
        assert_eq!(l[1].created_ms, 1.0, "first sighting wins");
        assert_eq!(l[1].status_url(), "http://x/v2/requests/a/status");
    }

    #[test]
    fn filters_export_and_expiry() {
        let mut l = vec![
            entry("a", 2.0, JobStatus::Completed),
            entry("b", 1.0, JobStatus::Failed),
        ];
        l[1].model = "flux-depth-dev".into();
        assert_eq!(filter(&l, "flux-depth-dev", "").len(), 1);
        assert_eq!(filter(&l, "", "COMPLETED")[0].id, "a");
        assert_eq!(filter(&l, "", "").len(), 2);
        let json = export(&l);
        let back: Vec<Entry> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, l);
        l[0].expires_at = Some(100);
        prune_expired(&mut l, 100);
        assert_eq!(l.len(), 1);
        assert_eq!(
            expiry_text(Some(100 + 30 * 86_400), 100).as_deref(),
            Some("kept 30 more days")
        );
        assert_eq!(expiry_text(Some(100), 200).as_deref(), Some("expired"));
        assert_eq!(expiry_text(None, 0), None);
    }
}
