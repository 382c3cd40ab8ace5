//! The studio's depth preview as data: what sits beside the control image
//! ([`DepthShown`]), which pick an answer belongs to (an answer for an older pick is
//! never shown next to a newer image: [`Picks`]), and the short reason shown when there
//! is no depth map. Pure, tested natively.

use parallax_api::{ErrorCode, JobStatus, Params};

/// What the studio shows beside the control image.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum DepthShown {
    /// No image, or the image is itself a depth map: nothing to preview.
    #[default]
    Off,
    /// A preview job is being computed.
    Computing,
    /// The depth map (a greyscale PNG, near is bright) at this URL.
    Ready(String),
    /// No depth map, and why (the image alone is shown; Generate still works).
    Unavailable(String),
}

/// The picks of control images, numbered: a preview started for pick `n` may only be
/// shown while `n` is still the current pick.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Picks {
    current: u64,
    /// The pick the shown (or computing) preview is for.
    previewed: Option<u64>,
}

impl Picks {
    /// A new image was chosen: whatever preview runs is now stale.
    pub fn new_pick(&mut self) -> u64 {
        self.current += 1;
        self.previewed = None;
        self.current
    }

    pub fn current(&self) -> u64 {
        self.current
    }

    /// Whether a preview for the current pick is shown or under way, so the same
    /// image prepared again (another size) needs none.
    pub fn has_preview(&self) -> bool {
        self.previewed == Some(self.current)
    }

    /// A preview is started for the current pick; returns the pick it belongs to.
    pub fn start(&mut self) -> u64 {
        self.previewed = Some(self.current);
        self.current
    }

    /// Forgets the current pick's preview (the image became a depth map itself).
    pub fn drop_preview(&mut self) {
        self.previewed = None;
    }

    /// Whether an answer for `pick` may be shown now.
    pub fn is_current(&self, pick: u64) -> bool {
        pick == self.current && self.previewed == Some(pick)
    }
}

/// Time between status reads of a preview job `age_ms` old: every 500 ms while it is
/// young (a preview takes a second or two), then as a job's. Plain reads, not held:
/// the jobs' held reads have the page's connections to spare ([`super::poll::MAX_HELD`]).
pub fn read_interval_ms(age_ms: f64) -> f64 {
    if age_ms < 5_000.0 {
        500.0
    } else {
        super::poll::interval_ms(age_ms)
    }
}

/// The key a depth map is remembered under in this tab: a 64-bit FNV-1a hash of the
/// image's bytes (or of the URL the server fetches). Not a security boundary: a
/// collision would show another image's map, at odds of 2⁻⁶⁴ per pair.
pub fn image_key(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The depth maps this tab has seen, by [`image_key`], newest last; at most [`KEPT`].
/// Each keeps the preview job that made it, when this tab made it: an anonymous job's
/// `owner_token` is the only way to delete it later.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Seen(Vec<Remembered>);

/// One remembered depth map.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Remembered {
    key: u64,
    url: String,
    job: Option<PreviewJob>,
}

/// A preview job this tab submitted: enough to delete it (`DELETE response_url`, with
/// `x-owner-token` when it was anonymous).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreviewJob {
    pub response_url: String,
    pub owner_token: Option<String>,
}

/// Depth maps remembered per tab.
pub const KEPT: usize = 32;

impl Seen {
    pub fn get(&self, key: u64) -> Option<&str> {
        self.0.iter().find(|r| r.key == key).map(|r| r.url.as_str())
    }

    /// The preview job that made the map remembered for `key`, if this tab made it.
    #[cfg_attr(
        not(test),
        expect(
            dead_code,
            reason = "kept so a preview can be deleted; no control deletes one yet"
        )
    )]
    pub fn job(&self, key: u64) -> Option<&PreviewJob> {
        self.0.iter().find(|r| r.key == key)?.job.as_ref()
    }

    /// Remembers `url` for `key`; the same map seen again (`job` `None`) keeps its job.
    pub fn put(&mut self, key: u64, url: String, job: Option<PreviewJob>) {
        let old = self
            .0
            .iter()
            .position(|r| r.key == key)
            .map(|i| self.0.remove(i));
        let job = job.or_else(|| old.filter(|o| o.url == url).and_then(|o| o.job));
        self.0.push(Remembered { key, url, job });
        if self.0.len() > KEPT {
            self.0.remove(0);
        }
    }

    /// Forgets a map that no longer loads (expired); whether it was remembered.
    pub fn forget(&mut self, url: &str) -> bool {
        let before = self.0.len();
        self.0.retain(|r| r.url != url);
        self.0.len() != before
    }
}

/// Why a preview's submit was refused, in a few words (`status` is the HTTP status,
/// `code` the API's error code, `message` the client's line for the error).
pub fn refused_reason(status: u16, code: Option<ErrorCode>, message: &str) -> String {
    match (status, code) {
        // An edge without the preview model, or without a provider that computes it
        // (502 from an edge with none configured).
        (404, _) | (501..=503, _) | (_, Some(ErrorCode::NotFound)) => {
            "No depth preview: no provider here can compute depth maps.".into()
        }
        (429, _) | (_, Some(ErrorCode::RateLimited)) => {
            "No depth preview right now: too many requests.".into()
        }
        // An account that could not afford a generation is refused previews too.
        (402, _) | (_, Some(ErrorCode::InsufficientCredits)) => {
            "No depth preview: not enough credits.".into()
        }
        (0, _) => "No depth preview: the server could not be reached.".into(),
        (500..=599, _) => "No depth preview: the server could not compute one.".into(),
        _ => format!("No depth preview: {message}"),
    }
}

/// Why a preview job ended without a depth map.
pub fn failed_reason(status: JobStatus, error: Option<&str>) -> String {
    match (status, error) {
        (JobStatus::Failed, Some(e)) if !e.is_empty() => format!("No depth preview: {e}"),
        (JobStatus::Failed, _) => "No depth preview: the provider could not compute it.".into(),
        _ => "No depth preview: the result had no image.".into(),
    }
}

/// The name a downloaded depth map is saved under.
pub fn download_name(pick: u64) -> String {
    format!("parallax-depth-{pick}.png")
}

/// Two layers of a result the compare slider shows, left (revealed by the handle) and
/// right.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layers {
    PhotoResult,
    DepthResult,
    PhotoDepth,
}

impl Layers {
    /// The choice's words and its value (test id suffix).
    pub fn title(self) -> &'static str {
        match self {
            Self::PhotoResult => "Photo vs result",
            Self::DepthResult => "Depth vs result",
            Self::PhotoDepth => "Photo vs depth",
        }
    }

    pub fn slug(self) -> &'static str {
        match self {
            Self::PhotoResult => "photo-result",
            Self::DepthResult => "depth-result",
            Self::PhotoDepth => "photo-depth",
        }
    }

    /// Which side is which, under the slider.
    pub fn caption(self) -> &'static str {
        match self {
            Self::PhotoResult => "Left: the photo. Right: the result.",
            Self::DepthResult => "Left: the depth map (near is bright). Right: the result.",
            Self::PhotoDepth => "Left: the photo. Right: its depth map (near is bright).",
        }
    }

    /// The pairs a result can be compared in, given which layers it has (the result
    /// always): none with one layer only (the result alone).
    pub fn available(photo: bool, depth: bool) -> Vec<Self> {
        match (photo, depth) {
            (true, true) => vec![Self::PhotoResult, Self::DepthResult, Self::PhotoDepth],
            (true, false) => vec![Self::PhotoResult],
            (false, true) => vec![Self::DepthResult],
            (false, false) => Vec::new(),
        }
    }
}

/// The photo and the depth map a result is compared with. A job sent with
/// `control_type: depth` had a depth map as its control image: that is its depth layer,
/// and it has no photo.
pub fn result_layers(
    params: &Params,
    control: Option<&String>,
    depth: Option<&String>,
) -> (Option<String>, Option<String>) {
    let control_is_depth = params
        .get("control_type")
        .and_then(serde_json::Value::as_str)
        == Some("depth");
    if control_is_depth {
        (None, depth.or(control).cloned())
    } else {
        (control.cloned(), depth.cloned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_depth_map_sent_as_control_is_the_depth_layer_not_a_photo() {
        let photo = "https://x/results/a/control".to_owned();
        let depth = "https://x/results/p/0.png".to_owned();
        let mut params = Params::default();
        assert_eq!(
            result_layers(&params, Some(&photo), Some(&depth)),
            (Some(photo.clone()), Some(depth.clone()))
        );
        params.0.insert("control_type".into(), "depth".into());
        assert_eq!(
            result_layers(&params, Some(&photo), None),
            (None, Some(photo.clone()))
        );
        assert_eq!(
            result_layers(&params, Some(&photo), Some(&depth)),
            (None, Some(depth))
        );
    }

    #[test]
    fn three_layers_give_three_pairs_and_two_give_one() {
        assert_eq!(Layers::available(true, true).len(), 3);
        assert_eq!(Layers::available(true, false), vec![Layers::PhotoResult]);
        assert_eq!(Layers::available(false, true), vec![Layers::DepthResult]);
        assert!(Layers::available(false, false).is_empty());
    }

    #[test]
    fn an_answer_for_an_older_pick_is_never_current() {
        let mut p = Picks::default();
        p.new_pick();
        let first = p.start();
        assert!(p.is_current(first));
        p.new_pick();
        assert!(!p.is_current(first), "a newer image was picked");
        let second = p.start();
        assert!(p.is_current(second));
        assert!(!p.is_current(first));
    }

    #[test]
    fn the_same_pick_prepared_again_keeps_its_preview() {
        let mut p = Picks::default();
        p.new_pick();
        assert!(!p.has_preview());
        p.start();
        assert!(p.has_preview());
        p.drop_preview();
        assert!(
            !p.has_preview(),
            "marked a depth map: previewed again if unmarked"
        );
        p.start();
        p.new_pick();
        assert!(!p.has_preview());
    }

    #[test]
    fn a_young_preview_is_read_twice_a_second_then_as_a_job() {
        assert_eq!(read_interval_ms(0.0), 500.0);
        assert_eq!(read_interval_ms(4_999.0), 500.0);
        assert_eq!(read_interval_ms(10_000.0), 2_000.0);
        assert_eq!(read_interval_ms(60_000.0), 3_000.0);
    }

    #[test]
    fn the_same_bytes_find_their_map_and_the_oldest_is_dropped() {
        assert_eq!(image_key(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(
            image_key(b"a"),
            0xaf63_dc4c_8601_ec8c,
            "FNV-1a's published value"
        );
        assert_ne!(image_key(b"photo one"), image_key(b"photo two"));
        let mut seen = Seen::default();
        let job = PreviewJob {
            response_url: "/v2/requests/a".into(),
            owner_token: Some("tok".into()),
        };
        seen.put(1, "/results/a/0.png".into(), Some(job.clone()));
        assert_eq!(seen.get(1), Some("/results/a/0.png"));
        seen.put(1, "/results/a/0.png".into(), None);
        assert_eq!(
            seen.job(1),
            Some(&job),
            "seen again, its owner token is kept"
        );
        assert_eq!(seen.get(2), None);
        for k in 2..=(KEPT as u64 + 1) {
            seen.put(k, format!("/results/{k}/0.png"), None);
        }
        assert_eq!(seen.get(1), None, "the oldest went");
        assert!(seen.get(2).is_some());
        assert!(seen.forget("/results/2/0.png"));
        assert_eq!(seen.get(2), None);
        assert!(!seen.forget("/results/2/0.png"));
    }

    #[test]
    fn reasons_are_short_and_say_what_happened() {
        assert!(refused_reason(404, None, "x").contains("no provider"));
        assert!(refused_reason(503, None, "x").contains("no provider"));
        assert!(refused_reason(502, Some(ErrorCode::UpstreamFailed), "x").contains("no provider"));
        assert_eq!(
            refused_reason(504, Some(ErrorCode::UpstreamTimeout), "a long raw line"),
            "No depth preview: the server could not compute one."
        );
        for status in [402, 406] {
            assert_eq!(
                refused_reason(status, Some(ErrorCode::InsufficientCredits), "raw"),
                "No depth preview: not enough credits."
            );
        }
        assert_eq!(
            refused_reason(402, None, "raw"),
            "No depth preview: not enough credits."
        );
        assert!(refused_reason(0, None, "x").contains("reached"));
        assert!(refused_reason(429, Some(ErrorCode::RateLimited), "x").contains("too many"));
        assert_eq!(
            refused_reason(400, Some(ErrorCode::BadRequest), "control_image: too large"),
            "No depth preview: control_image: too large"
        );
        assert_eq!(
            failed_reason(JobStatus::Failed, Some("The provider failed")),
            "No depth preview: The provider failed"
        );
        assert!(failed_reason(JobStatus::Failed, None).contains("could not"));
        assert!(failed_reason(JobStatus::Completed, None).contains("no image"));
    }
}
