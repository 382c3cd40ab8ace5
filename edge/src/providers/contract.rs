//! The one contract every upstream adapter keeps. Each adapter file (`segmind.rs`,
//! `parallax.rs`, `replicate.rs`, `comfyui.rs`, `bfl.rs`, `fal.rs`) owns everything
//! about its provider behind [`Adapter`] — its name and configuration, endpoints and
//! trusted hosts, which models and parameters it takes, how a job is submitted,
//! polled, canceled and looked up, and whether it calls back — and is registered by
//! one line in [`Kind::ALL`]. The rest of the edge knows a provider only as a
//! [`Kind`].

use std::future::Future;
use std::pin::Pin;

use parallax_api::{FieldError, Model, Params, RequestId};

use super::{
    CancelOutcome, ControlImage, Lookup, Submitted, UpstreamError, UpstreamRequest,
    UpstreamResponse, UpstreamState,
};
use crate::hooks::{Callback, Hooks, Refusal, Verified};
use crate::input::image::ImageInfo;
use crate::secret::Secret;

/// One asynchronous step of an adapter's protocol (its requests sent with
/// [`super::send`]): boxed, as a trait object's async method must be.
pub type Step<'a, T> = Pin<Box<dyn Future<Output = Result<T, UpstreamError>> + 'a>>;

/// What an adapter sees of a job: what to make, and from what image.
#[derive(Debug, Clone, Copy)]
pub struct Order<'a> {
    /// Our job id (ComfyUI's `prompt_id`, a Parallax upstream's `Idempotency-Key`).
    pub id: &'a RequestId,
    pub model: Model,
    pub params: &'a Params,
    pub input: ImageInfo,
}

/// Why a callback was not taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookError {
    /// The provider has no callback route on this deployment.
    NoRoute,
    /// The provider's own proof does not hold.
    Refused(Refusal),
    /// What the proof is checked against could not be had (fal's keys): retry later.
    Unavailable(String),
}

/// A callback's check (async: fal's keys may have to be fetched).
pub type HookCheck<'a> = Pin<Box<dyn Future<Output = Result<Verified, HookError>> + 'a>>;

/// What an adapter found or did before the POST that starts a job.
#[derive(Debug, Clone, PartialEq)]
pub enum Prepared {
    /// Ready to submit; the text is what the submit needs from the steps before it
    /// (ComfyUI: the uploaded image's name), empty for most.
    Fresh(String),
    /// An earlier attempt of this job reached the provider (its answer was lost on
    /// the way back): follow that one, submit nothing.
    Already(Submitted),
}

/// Everything about one provider. Defaults fit a provider that polls with the plain
/// budget, takes its image inline, has no cancel, no lookup and no callbacks.
pub trait Adapter: Sync {
    /// The name used in configuration and in a job's `metrics.provider`.
    fn name(&self) -> &'static str;

    /// Prefix of its wrangler vars: `<PREFIX>_BASE_URL`, `<PREFIX>_API_KEY`.
    fn env_prefix(&self) -> &'static str;

    /// The public endpoint, for cloud providers.
    fn default_base_url(&self) -> Option<&'static str> {
        None
    }

    /// Whether it needs a key to work at all.
    fn needs_key(&self) -> bool {
        true
    }

    /// The hosts (exactly these, no subdomains) whose URLs its answers may name and
    /// that get its key, besides the configured base's origin.
    fn documented_hosts(&self) -> &'static [&'static str] {
        &[]
    }

    /// Whether its status reads count against a per-minute request limit: then it is
    /// polled on the tighter budget (`docs/performance.md` § "Short jobs").
    fn reads_limited(&self) -> bool {
        false
    }

    /// Whether it takes its control image as `link`, a URL it fetches itself, rather
    /// than inline.
    fn fetches(&self, _link: &str) -> bool {
        false
    }

    /// Whether it runs `model` at all.
    fn serves(&self, model: Model) -> bool;

    /// Whether it can take, for `model`, a control image that already is a depth map
    /// (`control_type: depth`) and skip its own depth estimation. A provider that always
    /// estimates keeps the default: such a job is routed past it
    /// ([`super::check`] refuses `control_type` there).
    fn takes_depth_maps(&self, _model: Model) -> bool {
        false
    }

    /// Whether it can do what `params` ask for `model` with this control image; the
    /// error names the field. Every catalog parameter is either carried by
    /// [`Adapter::build_submit`] or refused here (a unit test holds each adapter to it).
    fn check(&self, _model: Model, _params: &Params, _input: &ImageInfo) -> Result<(), FieldError> {
        Ok(())
    }

    /// The steps before the POST that starts `job`, their requests sent.
    fn prepare<'a>(
        &'a self,
        _provider: &'a Provider,
        _job: &'a Order<'a>,
        _control: &'a ControlImage,
        _timeout_ms: u32,
    ) -> Step<'a, Prepared> {
        Box::pin(async { Ok(Prepared::Fresh(String::new())) })
    }

    /// The request that starts `job` (pure); `prepared` is [`Prepared::Fresh`]'s text.
    fn build_submit(
        &self,
        provider: &Provider,
        job: &Order<'_>,
        control: &ControlImage,
        callback: Option<&Callback>,
        prepared: &str,
    ) -> Result<UpstreamRequest, UpstreamError>;

    /// Its answer to that request; `job_id` is ours.
    fn parse_submit(
        &self,
        provider: &Provider,
        job_id: &str,
        resp: &UpstreamResponse,
    ) -> Result<Submitted, UpstreamError>;

    /// Its documented URLs for upstream job `id` of `model` on `base` — status,
    /// result and cancel — used where an answer named a URL off its trusted hosts.
    /// `None` where the adapter builds every URL from the base itself.
    fn documented_urls(
        &self,
        model: Model,
        base: &str,
        id: &str,
    ) -> Option<(String, String, Option<String>)>;

    /// Where a submitted job is.
    fn poll<'a>(
        &'a self,
        provider: &'a Provider,
        sub: &'a Submitted,
        timeout_ms: u32,
    ) -> Step<'a, UpstreamState>;

    /// Asks it to stop a submitted job. `Err` means the answer is unknown (retry).
    fn cancel<'a>(
        &'a self,
        _provider: &'a Provider,
        _sub: &'a Submitted,
        _timeout_ms: u32,
    ) -> Step<'a, CancelOutcome> {
        Box::pin(async { Ok(CancelOutcome::Unsupported) })
    }

    /// Whether it has a job we submitted under our own id (before our record of it
    /// was lost, or when a submit's answer was).
    fn lookup<'a>(
        &'a self,
        _provider: &'a Provider,
        _job: &'a Order<'a>,
        _timeout_ms: u32,
    ) -> Step<'a, Lookup> {
        Box::pin(async { Ok(Lookup::Unsupported) })
    }

    /// Whether submitting the same job again replays the first submit instead of
    /// starting a second (an idempotency key): then a submit whose answer was lost is
    /// simply sent again.
    fn resubmit_replays(&self) -> bool {
        false
    }

    /// Headers for downloading an output at `url` (its auth only where it belongs).
    fn download_headers(&self, _provider: &Provider, _url: &str) -> Vec<(&'static str, String)> {
        Vec::new()
    }

    /// Whether it is given a callback URL on this deployment (`hooks.rs`).
    fn pushes(&self, _hooks: &Hooks) -> bool {
        false
    }

    /// Checks one callback delivery for job `id` by the provider's own proof (its
    /// signature, or the secret it echoes), after the URL's token passed. `header`
    /// reads a request header.
    fn verify_hook<'a>(
        &'a self,
        _hooks: &'a Hooks,
        _id: &'a RequestId,
        _header: &'a dyn Fn(&str) -> Option<String>,
        _body: &'a [u8],
        _now_secs: u64,
    ) -> HookCheck<'a> {
        Box::pin(async { Err(HookError::NoRoute) })
    }

    /// The upstream job a callback's body names, if it says.
    fn hook_upstream_id(&self, body: &[u8]) -> Option<String> {
        let v: serde_json::Value = serde_json::from_slice(body).ok()?;
        v.get("id")?.as_str().map(str::to_owned)
    }
}

/// One configured upstream.
#[derive(Debug, Clone)]
pub struct Provider {
    pub kind: Kind,
    /// e.g. `https://api.segmind.com`, or `sim` on loopback in development.
    pub base_url: String,
    pub api_key: Option<Secret>,
}

impl Provider {
    /// Usable: it has a base URL, and a key where the provider needs one.
    pub fn is_ready(&self) -> bool {
        !self.base_url.is_empty() && (self.api_key.is_some() || !self.kind.needs_key())
    }
}

/// A provider, by its adapter. Two kinds are equal when their names are.
#[derive(Clone, Copy)]
pub struct Kind(&'static dyn Adapter);

impl Kind {
    /// Every adapter Parallax can drive: a new provider is its file plus one entry
    /// here.
    pub const ALL: [Kind; 6] = [
        Kind(&super::segmind::Segmind),
        Kind(&super::replicate::Replicate),
        Kind(&super::comfyui::ComfyUi),
        Kind(&super::parallax::ParallaxUpstream),
        Kind(&super::bfl::Bfl),
        Kind(&super::fal::Fal),
    ];

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }

    /// The adapter named `name`, which must be registered (tests and defaults).
    pub fn named(name: &str) -> Self {
        Self::from_name(name).unwrap_or_else(|| panic!("no provider named {name}"))
    }
}

impl std::ops::Deref for Kind {
    type Target = dyn Adapter;

    fn deref(&self) -> &Self::Target {
        self.0
    }
}

impl PartialEq for Kind {
    fn eq(&self, other: &Self) -> bool {
        self.name() == other.name()
    }
}

impl Eq for Kind {}

impl std::hash::Hash for Kind {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name().hash(state);
    }
}

impl std::fmt::Debug for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_adapter_is_registered_once_under_its_own_name() {
        let mut names: Vec<_> = Kind::ALL.iter().map(|k| k.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Kind::ALL.len());
        for k in Kind::ALL {
            assert_eq!(Kind::from_name(k.name()), Some(k));
            assert!(
                Model::ALL.into_iter().any(|m| k.serves(m)),
                "{k:?} serves no model"
            );
        }
        assert_eq!(Kind::from_name("elsewhere"), None);
    }
}
