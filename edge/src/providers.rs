//! Upstream adapters. Each is pure request building and response parsing (tested on
//! fixtures shaped like the provider's documented examples) plus this module's thin
//! [`send`]. Status and errors are normalised into [`UpstreamState`] and
//! [`UpstreamError`] so the job runner is provider-agnostic. Each adapter keeps the
//! one contract of `contract.rs` ([`Adapter`]); [`submit`], [`poll`], [`cancel`] and
//! [`lookup`] are the same for every provider.

pub mod bfl;
pub mod comfyui;
pub mod contract;
pub mod fal;
pub mod parallax;
pub mod replicate;
pub mod segmind;
mod transport;

pub use contract::{Adapter, HookError, Kind, Order, Provider};
pub(crate) use transport::send_with;
pub use transport::{redirect_error, send};

use parallax_api::{FieldError, Model, Params};

use crate::input::image::ImageInfo;

use base64::Engine;
use serde::{Deserialize, Serialize};

/// An HTTP request to an upstream, built by a pure function.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamRequest {
    pub method: HttpMethod,
    pub url: String,
    /// Header values may hold secrets: never log this struct's headers.
    pub headers: Vec<(&'static str, String)>,
    pub body: Option<Vec<u8>>,
}

impl UpstreamRequest {
    pub fn get(url: impl Into<String>, headers: Vec<(&'static str, String)>) -> Self {
        Self {
            method: HttpMethod::Get,
            url: url.into(),
            headers,
            body: None,
        }
    }

    /// A JSON POST (adds the content type).
    pub fn post_json(
        url: impl Into<String>,
        mut headers: Vec<(&'static str, String)>,
        body: &serde_json::Value,
    ) -> Self {
        headers.push(("content-type", "application/json".to_owned()));
        Self {
            method: HttpMethod::Post,
            url: url.into(),
            headers,
            body: Some(body.to_string().into_bytes()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpMethod {
    Get,
    Post,
    Put,
}

/// What an upstream answered, as the pure parsers see it.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamResponse {
    pub status: u16,
    /// Seconds, from a `Retry-After` header.
    pub retry_after: Option<u64>,
    pub body: Vec<u8>,
}

/// The upstream's handle on a submitted job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Submitted {
    pub upstream_id: String,
    pub status_url: String,
    /// Where the result is (Segmind), or the queue to ask (ComfyUI).
    pub result_url: String,
    #[serde(default)]
    pub cancel_url: Option<String>,
    /// Set when the submit asked the provider to call back (`hooks.rs`): the polls
    /// are then only a backstop, the first this many milliseconds after the submit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backstop_ms: Option<u64>,
}

/// A job's state at the upstream.
#[derive(Debug, Clone, PartialEq)]
pub enum UpstreamState {
    Queued,
    Processing,
    /// Output URLs, to download at once (they expire).
    Completed(Vec<String>),
    Failed(String),
}

/// Why an upstream call did not give an answer.
#[derive(Debug, Clone, PartialEq)]
pub enum UpstreamError {
    /// Worth retrying later (429, 5xx, a connection that could not be made, a read's
    /// timeout).
    Transient {
        reason: String,
        retry_after: Option<u64>,
    },
    /// Retrying cannot help (the upstream refused the job, or it is gone).
    Permanent(String),
    /// The upstream is still starting this very job (a Parallax upstream's 409 under
    /// our `Idempotency-Key`): it may run, so ask the same upstream again after
    /// `retry_after` seconds — never another one, and it is not a failure.
    InProgress { reason: String, retry_after: u64 },
    /// A request that changes something upstream (a submit) was sent, but its answer
    /// never came whole: it timed out or was cut off. The provider may have accepted
    /// it, so a submit is neither failed over nor refunded in full until that is
    /// decided (`docs/reliability.md` § "A submit whose fate is unknown").
    Ambiguous { reason: String },
}

impl UpstreamError {
    /// Worth asking again later (an ambiguous answer too: for anything but a submit
    /// it is simply a failed call).
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Transient { .. } | Self::Ambiguous { .. })
    }
}

impl UpstreamError {
    /// The usual classification of a non-success HTTP status.
    pub fn from_status(
        provider: &str,
        status: u16,
        retry_after: Option<u64>,
        detail: &str,
    ) -> Self {
        let detail = if detail.is_empty() {
            String::new()
        } else {
            format!(": {detail}")
        };
        let reason = format!("{provider} answered HTTP {status}{detail}");
        if status == 429 || status == 408 || status >= 500 {
            Self::Transient {
                reason,
                retry_after,
            }
        } else {
            Self::Permanent(reason)
        }
    }
}

/// `Retry-After` in seconds (the HTTP-date form is treated as absent).
pub fn parse_retry_after(value: Option<&str>) -> Option<u64> {
    value?.trim().parse::<u64>().ok().map(|s| s.min(3600))
}

/// The `error` or `detail` text of an upstream's JSON error body, shortened.
pub fn error_detail(body: &[u8]) -> String {
    let text = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            ["error", "detail", "message"]
                .iter()
                .find_map(|k| v.get(*k).and_then(|e| e.as_str()).map(str::to_owned))
        })
        .unwrap_or_default();
    text.chars().take(300).collect()
}

/// The JSON body of a 2xx answer; other statuses are classified for retry, and a
/// body that is not JSON is transient (a proxy's error page, a cut-off answer).
pub fn success_json(
    provider: &str,
    resp: &UpstreamResponse,
) -> Result<serde_json::Value, UpstreamError> {
    if !(200..300).contains(&resp.status) {
        return Err(UpstreamError::from_status(
            provider,
            resp.status,
            resp.retry_after,
            &error_detail(&resp.body),
        ));
    }
    serde_json::from_slice(&resp.body).map_err(|_| UpstreamError::Transient {
        reason: format!("{provider} answered with malformed JSON"),
        retry_after: None,
    })
}

/// A provider answer with a JSON body, for the adapters' fixture tests.
#[cfg(test)]
pub fn test_response(status: u16, body: serde_json::Value) -> UpstreamResponse {
    UpstreamResponse {
        status,
        retry_after: None,
        body: body.to_string().into_bytes(),
    }
}

/// Whether `provider` can do what `params` ask for `model` with this control image;
/// the error names the field.
pub fn check(
    kind: Kind,
    model: Model,
    params: &Params,
    input: &ImageInfo,
) -> Result<(), FieldError> {
    if !kind.serves(model) {
        return Err(FieldError::new(
            "model",
            format!("{} does not serve {}", kind.name(), model.slug()),
        ));
    }
    if params.control_is_depth() && !kind.takes_depth_maps(model) {
        return Err(FieldError::new(
            "control_type",
            format!(
                "depth is not available from {} for {}: it always estimates the depth of the control image itself",
                kind.name(),
                model.slug()
            ),
        ));
    }
    kind.check(model, params, input)
}

/// How the control image travels to a provider.
#[derive(Debug, Clone, PartialEq)]
pub enum ControlImage {
    /// The bytes, sent inline (base64, a data URL, or ComfyUI's multipart upload).
    Inline(Vec<u8>),
    /// A short-lived signed link to it on this edge, which the provider fetches
    /// (see `control_link.rs`).
    Link(String),
}

impl ControlImage {
    /// A value for a file input that takes a URL or a data URL (Replicate, fal).
    pub fn url_or_data_url(&self, media_type: &str) -> String {
        match self {
            Self::Inline(bytes) => format!(
                "data:{media_type};base64,{}",
                base64::engine::general_purpose::STANDARD.encode(bytes)
            ),
            Self::Link(url) => url.clone(),
        }
    }

    /// A value for an input that takes a URL or raw base64 (Segmind, Parallax).
    pub fn url_or_base64(&self) -> String {
        match self {
            Self::Inline(bytes) => base64::engine::general_purpose::STANDARD.encode(bytes),
            Self::Link(url) => url.clone(),
        }
    }
}

/// Submits a job to `provider`, with its control image as [`Kind::fetches`] allows,
/// asking it to call back at `callback` where it can (`hooks.rs`; the caller passes
/// one only for providers that push). `before_send` is awaited right before the POST
/// that starts the job (after ComfyUI's upload), and its error is the outcome: the
/// runner checks there that the job was not canceled while it waited.
pub async fn submit(
    provider: &Provider,
    job: &Order<'_>,
    control: &ControlImage,
    callback: Option<&crate::hooks::Callback>,
    timeout_ms: u32,
    before_send: impl AsyncFn() -> Result<(), UpstreamError>,
) -> Result<Submitted, UpstreamError> {
    let mut sub = send_submit(provider, job, control, callback, timeout_ms, before_send).await?;
    if own_urls(provider, job.model, &mut sub) {
        worker::console_warn!(
            "{} named a URL off its own hosts for job {}; its documented path on the base is used",
            provider.kind.name(),
            sub.upstream_id
        );
    }
    Ok(sub)
}

/// Whether `url`, named in `provider`'s answer, may be called with its key: on the
/// configured base's origin, or over https on a host the provider documents
/// ([`Adapter::documented_hosts`]). Anything else (another host, plain http off the base)
/// would hand the key to whoever wrote the answer: a proxy's error page, a tampered
/// response.
pub fn trusts(provider: &Provider, url: &str) -> bool {
    use worker::url::Host;
    let (Ok(base), Ok(url)) = (
        worker::Url::parse(&provider.base_url),
        worker::Url::parse(url),
    ) else {
        return false;
    };
    if url.origin() == base.origin() {
        return true;
    }
    let Some(Host::Domain(host)) = url.host() else {
        return false;
    };
    url.scheme() == "https" && provider.kind.documented_hosts().contains(&host)
}

/// Replaces each URL of an accepted job that `provider` may not be called on with its
/// key ([`trusts`]) by the provider's documented path for the job on the configured
/// base, so the job is still polled (and canceled) where the key belongs: the job
/// was accepted, and failing over would pay for it twice. Whether any was replaced.
fn own_urls(provider: &Provider, model: Model, sub: &mut Submitted) -> bool {
    let Some((status, result, cancel)) =
        provider
            .kind
            .documented_urls(model, &provider.base_url, &sub.upstream_id)
    else {
        // Built from the base already.
        return false;
    };
    let mend = |url: &mut String, documented: String| {
        let off = !trusts(provider, url);
        if off {
            *url = documented;
        }
        off
    };
    let mut mended = mend(&mut sub.status_url, status);
    mended |= mend(&mut sub.result_url, result);
    if let (Some(url), Some(documented)) = (sub.cancel_url.as_mut(), cancel) {
        mended |= mend(url, documented);
    }
    mended
}

async fn send_submit(
    provider: &Provider,
    job: &Order<'_>,
    control: &ControlImage,
    callback: Option<&crate::hooks::Callback>,
    timeout_ms: u32,
    before_send: impl AsyncFn() -> Result<(), UpstreamError>,
) -> Result<Submitted, UpstreamError> {
    let kind = provider.kind;
    let prepared = match kind.prepare(provider, job, control, timeout_ms).await? {
        contract::Prepared::Already(sub) => return Ok(sub),
        contract::Prepared::Fresh(prepared) => prepared,
    };
    let req = kind.build_submit(provider, job, control, callback, &prepared)?;
    before_send().await?;
    let resp = send(kind.name(), &req, timeout_ms).await?;
    // A gateway that timed out waiting for the provider (504, Cloudflare's 524) passed
    // the request on: the provider may hold the job.
    if matches!(resp.status, 504 | 524) {
        return Err(UpstreamError::Ambiguous {
            reason: format!(
                "{} answered HTTP {} (a gateway timed out)",
                kind.name(),
                resp.status
            ),
        });
    }
    match kind.parse_submit(provider, job.id.as_str(), &resp) {
        // A 2xx is an acceptance, whatever its body: one we cannot read leaves the
        // job's fate unknown, never "refused".
        Err(e) if (200..300).contains(&resp.status) => Err(UpstreamError::Ambiguous {
            reason: format!(
                "{} accepted the submit but its answer is unreadable: {e:?}",
                kind.name()
            ),
        }),
        other => other,
    }
}

/// The callback a job at `kind` is given, where the deployment takes callbacks and
/// the provider calls back ([`Adapter::pushes`]).
pub fn callback(
    hooks: Option<&crate::hooks::Hooks>,
    kind: Kind,
    id: &parallax_api::RequestId,
) -> Option<crate::hooks::Callback> {
    hooks
        .filter(|h| kind.pushes(h))
        .map(|h| h.callback(kind.name(), id))
}

/// The control image's bytes, for a provider that takes them only inline.
pub fn inline_bytes<'a>(
    provider: &Provider,
    control: &'a ControlImage,
) -> Result<&'a [u8], UpstreamError> {
    match control {
        ControlImage::Inline(bytes) => Ok(bytes.as_slice()),
        ControlImage::Link(_) => Err(UpstreamError::Permanent(format!(
            "{} needs the control image inline",
            provider.kind.name()
        ))),
    }
}

/// Asks `provider` where a submitted job is.
pub async fn poll(
    provider: &Provider,
    sub: &Submitted,
    timeout_ms: u32,
) -> Result<UpstreamState, UpstreamError> {
    provider.kind.poll(provider, sub, timeout_ms).await
}

/// What an upstream cancel achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    /// The provider confirms the job never ran (removed from its queue): nothing spent.
    Stopped,
    /// Asked; it may have run already (spent).
    Requested,
    /// The protocol has no cancel.
    Unsupported,
}

/// Asks the provider to stop a submitted job. `Err` means the answer is unknown (retry).
pub async fn cancel(
    provider: &Provider,
    sub: &Submitted,
    timeout_ms: u32,
) -> Result<CancelOutcome, UpstreamError> {
    provider.kind.cancel(provider, sub, timeout_ms).await
}

/// Whether a provider has a job we may have submitted before our record of it was lost.
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup {
    Found(Submitted),
    Absent,
    /// The protocol cannot say (no lookup by our id).
    Unsupported,
}

/// Looks up the job we submit under our own id, where the provider can say
/// ([`Adapter::lookup`]).
pub async fn lookup(
    provider: &Provider,
    job: &Order<'_>,
    timeout_ms: u32,
) -> Result<Lookup, UpstreamError> {
    provider.kind.lookup(provider, job, timeout_ms).await
}

/// The largest output file stored (Flux's largest PNG is a few MB).
pub const MAX_OUTPUT_BYTES: usize = 30 * 1_048_576;

/// Downloads one output file (at most [`MAX_OUTPUT_BYTES`]). A URL on the provider's own host gets the provider's
/// auth header (ComfyUI's `/view` behind an API-key proxy); a CDN URL gets none.
pub async fn download(
    provider: &Provider,
    url: &str,
    timeout_ms: u32,
) -> Result<Vec<u8>, UpstreamError> {
    let req = UpstreamRequest {
        method: HttpMethod::Get,
        url: url.to_owned(),
        headers: download_headers(provider, url),
        body: None,
    };
    // A CDN may redirect a download; one that carries a key (ComfyUI's own host) is
    // not followed.
    let follow = req.headers.is_empty();
    let resp = send_with(
        "output download",
        &req,
        timeout_ms,
        follow,
        Some(MAX_OUTPUT_BYTES),
    )
    .await?;
    if resp.status == 200 {
        Ok(resp.body)
    } else {
        Err(UpstreamError::from_status(
            "output download",
            resp.status,
            resp.retry_after,
            "",
        ))
    }
}

/// The headers for downloading `url` from `provider`: its auth only on its own origin.
pub fn download_headers(provider: &Provider, url: &str) -> Vec<(&'static str, String)> {
    let own = !provider.base_url.is_empty()
        && url
            .strip_prefix(&provider.base_url)
            .is_some_and(|rest| rest.starts_with('/'));
    if own {
        provider.kind.download_headers(provider, url)
    } else {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two or more values of `spec`'s kind, each valid in the catalog.
    fn sample_values(spec: &parallax_api::models::ParamSpec) -> Vec<serde_json::Value> {
        use parallax_api::models::ParamKind;
        use serde_json::json;
        match spec.kind {
            ParamKind::Prompt { .. } => vec![json!("a lighthouse"), json!("a barn at dusk")],
            ParamKind::Image => Vec::new(),
            ParamKind::Seed => vec![json!(1), json!(4_000_000_000u32)],
            ParamKind::Integer { min, max, default } => {
                vec![json!(min), json!(max), json!(default)]
            }
            ParamKind::Number {
                min, max, default, ..
            } => {
                vec![json!(min), json!(max), json!(default)]
            }
            ParamKind::Boolean { .. } => vec![json!(false), json!(true)],
            ParamKind::Choice { options, .. } => options.iter().map(|o| json!(o)).collect(),
        }
    }

    #[test]
    fn a_depth_map_control_goes_only_where_the_estimator_can_be_skipped() {
        use crate::input::image::ImageFormat;
        use parallax_api::models::Model;
        let info = ImageInfo {
            format: ImageFormat::Png,
            width: 640,
            height: 480,
        };
        let mut params = Params::default();
        params.0.insert("control_type".into(), "depth".into());
        params.0.insert("output_format".into(), "png".into());
        let takes = |model| -> Vec<&str> {
            Kind::ALL
                .into_iter()
                .filter(|k| check(*k, model, &params, &info).is_ok())
                .map(|k| k.name())
                .collect()
        };
        assert_eq!(takes(Model::FluxDepthPro), ["parallax", "bfl"]);
        assert_eq!(takes(Model::FluxDepthDev), ["comfyui", "parallax"]);
        let refusal = check(
            Kind::named("replicate"),
            Model::FluxDepthDev,
            &params,
            &info,
        )
        .unwrap_err();
        assert_eq!(refusal.field, "control_type");
        // BFL gets the map as `preprocessed_image`, not `control_image`.
        let bfl = bfl::build_submit(
            &Provider {
                kind: Kind::named("bfl"),
                base_url: "https://api.bfl.ai".into(),
                api_key: None,
            },
            &params,
            b"map",
            None,
        );
        let body: serde_json::Value = serde_json::from_slice(bfl.body.as_deref().unwrap()).unwrap();
        assert_eq!(body["preprocessed_image"], "bWFw");
        assert!(body.get("control_image").is_none());
    }

    #[test]
    fn every_catalog_parameter_reaches_each_provider_or_is_refused() {
        use crate::input::image::ImageFormat;
        use parallax_api::models::Model;
        let info = ImageInfo {
            format: ImageFormat::Jpeg,
            width: 640,
            height: 480,
        };
        let control = ControlImage::Inline(vec![0xff, 0xd8, 0xff]);
        let mut dropped = Vec::new();
        for model in Model::ALL {
            for kind in Kind::ALL.into_iter().filter(|k| k.serves(model)) {
                let provider = Provider {
                    kind,
                    base_url: "https://upstream.example".into(),
                    api_key: None,
                };
                for spec in model.params() {
                    // Each value the adapter takes (the others it refuses by name),
                    // and the request it builds for it.
                    let requests: Vec<_> = sample_values(spec)
                        .into_iter()
                        .filter_map(|value| {
                            let mut job = crate::objects::runner::tests::job();
                            job.model = model;
                            job.input = info;
                            job.params.0.insert("prompt".into(), "a house".into());
                            job.params.0.insert(spec.name.into(), value.clone());
                            check(kind, model, &job.params, &info).ok()?;
                            let req = kind
                                .build_submit(&provider, &job.order(), &control, None, "in.jpg")
                                .expect("a request");
                            Some((value, req))
                        })
                        .collect();
                    let distinct = requests.iter().filter(|(_, r)| *r != requests[0].1).count();
                    if requests.len() > 1 && distinct == 0 {
                        dropped.push(format!(
                            "{} drops {}'s {}",
                            kind.name(),
                            model.slug(),
                            spec.name
                        ));
                    }
                }
            }
        }
        assert!(dropped.is_empty(), "{dropped:#?}");
    }

    #[test]
    fn a_key_goes_only_to_the_providers_own_hosts() {
        let at = |kind, base: &str| Provider {
            kind,
            base_url: base.to_owned(),
            api_key: None,
        };
        let bfl = at(Kind::named("bfl"), "https://api.bfl.ai");
        for ok in [
            "https://api.bfl.ai/v1/get_result?id=1",
            "https://api.us1.bfl.ai/v1/get_result?id=1",
            "https://api.eu.bfl.ai/v1/get_result?id=1",
            "https://api.bfl.ml/v1/get_result?id=1",
        ] {
            assert!(trusts(&bfl, ok), "{ok}");
        }
        for bad in [
            "http://api.us1.bfl.ai/v1/get_result?id=1",
            "https://bfl.ai.evil.example/x",
            "https://evilbfl.ai/x",
            "https://api.bfl.ai@evil.example/x",
            "https://api.bfl.ai.evil.example/x",
            "https://anything.bfl.ai/v1/get_result?id=1",
            "https://x.api.bfl.ai/v1/get_result?id=1",
            "https://bfl.ai/v1/get_result?id=1",
            "not a url",
        ] {
            assert!(!trusts(&bfl, bad), "{bad}");
        }
        // (provider, URL, trusted): fal's backup queue; a Parallax upstream (or ComfyUI)
        // on a shared suffix, its own origin only; sim on loopback, its own origin only.
        let fal = at(Kind::named("fal"), "https://queue.fal.run");
        let parallax = at(Kind::named("parallax"), "https://gpu.example.fly.dev");
        let sim = at(Kind::named("replicate"), "http://127.0.0.1:8790/replicate");
        for (p, url, trusted) in [
            (
                &fal,
                "https://queue.falrun.com/fal-ai/flux-lora-depth/requests/r",
                true,
            ),
            (&fal, "https://queue.fal.run.evil.example/x", false),
            (&fal, "https://storage.fal.run/x", false),
            (&fal, "https://fal.run/x", false),
            (
                &parallax,
                "https://gpu.example.fly.dev/v2/requests/r/status",
                true,
            ),
            (
                &parallax,
                "https://other.fly.dev/v2/requests/r/status",
                false,
            ),
            (
                &sim,
                "http://127.0.0.1:8790/replicate/v1/predictions/p",
                true,
            ),
            (
                &sim,
                "http://127.0.0.1:9999/replicate/v1/predictions/p",
                false,
            ),
        ] {
            assert_eq!(trusts(p, url), trusted, "{url}");
        }
    }

    #[test]
    fn urls_off_a_providers_hosts_become_its_documented_paths_on_the_base() {
        let replicate = Provider {
            kind: Kind::named("replicate"),
            base_url: "https://api.replicate.com".into(),
            api_key: None,
        };
        let mut sub = Submitted {
            upstream_id: "p1".into(),
            status_url: "https://evil.example/p1".into(),
            result_url: "https://api.replicate.com/v1/predictions/p1".into(),
            cancel_url: Some("http://api.replicate.com/v1/predictions/p1/cancel".into()),
            backstop_ms: None,
        };
        assert!(own_urls(&replicate, Model::FluxDepthDev, &mut sub));
        assert_eq!(
            sub.status_url,
            "https://api.replicate.com/v1/predictions/p1"
        );
        assert_eq!(
            sub.result_url,
            "https://api.replicate.com/v1/predictions/p1"
        );
        assert_eq!(
            sub.cancel_url.as_deref(),
            Some("https://api.replicate.com/v1/predictions/p1/cancel")
        );
        let bfl = Provider {
            kind: Kind::named("bfl"),
            base_url: "https://api.bfl.ai".into(),
            api_key: None,
        };
        let mut sub = Submitted {
            upstream_id: "t1".into(),
            status_url: "https://api.us1.bfl.ai/v1/get_result?id=t1".into(),
            result_url: "https://elsewhere.example/v1/get_result?id=t1".into(),
            cancel_url: None,
            backstop_ms: None,
        };
        assert!(own_urls(&bfl, Model::FluxDepthPro, &mut sub));
        assert_eq!(sub.status_url, "https://api.us1.bfl.ai/v1/get_result?id=t1");
        assert_eq!(sub.result_url, "https://api.bfl.ai/v1/get_result?id=t1");
    }

    #[test]
    fn a_redirect_is_a_transient_error_naming_only_its_origin() {
        assert_eq!(redirect_error("segmind", 200, None), None);
        let e = redirect_error(
            "segmind",
            302,
            Some("https://collector.example:8443/steal?token=abc"),
        );
        let Some(UpstreamError::Transient { reason, .. }) = e else {
            panic!("{e:?}");
        };
        assert!(
            reason.contains("HTTP 302 redirecting to https://collector.example:8443"),
            "{reason}"
        );
        assert!(!reason.contains("token"), "{reason}");
        assert!(matches!(
            redirect_error("bfl", 307, None),
            Some(UpstreamError::Transient { .. })
        ));
    }

    #[test]
    fn statuses_are_classified_for_retry() {
        assert!(matches!(
            UpstreamError::from_status("x", 429, Some(3), ""),
            UpstreamError::Transient {
                retry_after: Some(3),
                ..
            }
        ));
        assert!(matches!(
            UpstreamError::from_status("x", 503, None, ""),
            UpstreamError::Transient { .. }
        ));
        assert_eq!(
            UpstreamError::from_status("segmind", 401, None, "bad key"),
            UpstreamError::Permanent("segmind answered HTTP 401: bad key".into())
        );
    }

    #[test]
    fn downloads_carry_the_key_only_to_the_providers_own_host() {
        let comfy = Provider {
            kind: Kind::named("comfyui"),
            base_url: "https://gpu.example.com".into(),
            api_key: Some(crate::secret::Secret::new("k")),
        };
        assert_eq!(
            download_headers(&comfy, "https://gpu.example.com/view?filename=a.png"),
            vec![("authorization", "Bearer k".to_owned())]
        );
        assert!(download_headers(&comfy, "https://gpu.example.com.evil/view").is_empty());
        let replicate = Provider {
            kind: Kind::named("replicate"),
            base_url: "https://api.replicate.com".into(),
            api_key: Some(crate::secret::Secret::new("r8")),
        };
        assert!(download_headers(&replicate, "https://replicate.delivery/x.webp").is_empty());
    }

    #[test]
    fn retry_after_is_seconds_and_capped() {
        assert_eq!(parse_retry_after(Some(" 7 ")), Some(7));
        assert_eq!(parse_retry_after(Some("999999")), Some(3600));
        assert_eq!(
            parse_retry_after(Some("Wed, 21 Oct 2015 07:28:00 GMT")),
            None
        );
        assert_eq!(parse_retry_after(None), None);
    }
}
