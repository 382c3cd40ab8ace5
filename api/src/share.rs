//! What a job's share page (`/r/{id}`) shows besides the result: its owner's choice,
//! set with `POST /v2/requests/{id}/share` and stored with the job. By default the
//! result alone; the photo the job was made from, or only its depth map, when its owner
//! chose to show it.

use serde::{Deserialize, Serialize};

/// What the share page shows beside the result. An enum rather than a flag: a depth
/// map is the next thing a page may show instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShareControl {
    /// The result alone (the default).
    #[default]
    None,
    /// The control photo too, in a before/after view.
    Photo,
    /// The depth map the job was made from instead of the photo (`JobResult::depth_image`):
    /// what a result kept of a person's photo, without the photo.
    Depth,
}

impl ShareControl {
    pub fn is_none(&self) -> bool {
        *self == Self::None
    }
}

/// `POST /v2/requests/{id}/share`'s body (owner only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShareRequest {
    pub share_control: ShareControl,
}

/// Its answer: the choice as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareResponse {
    pub request_id: crate::RequestId,
    pub share_control: ShareControl,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_choice_is_a_word_and_defaults_to_the_result_alone() {
        let r: ShareRequest = serde_json::from_str(r#"{"share_control":"photo"}"#).unwrap();
        assert_eq!(r.share_control, ShareControl::Photo);
        assert!(serde_json::from_str::<ShareRequest>(r#"{"share_control":true}"#).is_err());
        let r: ShareRequest = serde_json::from_str(r#"{"share_control":"depth"}"#).unwrap();
        assert_eq!(r.share_control, ShareControl::Depth);
        assert!(serde_json::from_str::<ShareRequest>(r#"{"share_control":"map"}"#).is_err());
        assert!(serde_json::from_str::<ShareRequest>(r#"{"share_control":"none","x":1}"#).is_err());
        assert_eq!(ShareControl::default(), ShareControl::None);
    }
}
