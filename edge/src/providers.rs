//! Upstream adapters. Each is pure request building and response parsing (tested on
//! fixtures shaped like the provider's documented examples) plus this module's thin
//! [`send`]. Status and errors are normalised into [`UpstreamState`] and
//! [`UpstreamError`] so the job runner is provider-agnostic; [`submit`] and [`poll`]
//! dispatch on the provider's kind.

pub mod bfl;
pub mod comfyui;
pub mod fal;
pub mod replicate;
pub mod segmind;

use parallax_api::{FieldError, Model, Params};

use crate::config::Provider;
use crate::input::image::ImageInfo;
use crate::job::{JobRecord, PollBudget};

use base64::Engine;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use worker::{Fetch, Headers, Method, Request, RequestInit, RequestRedirect};

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
    /// Worth retrying later (429, 5xx, connection failure, timeout).
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

/// The error for a provider's redirect (`None` if `status` is not one). Requests that
/// carry a provider's key are never redirected: fetch would send the key on to the
/// `Location`, which nobody checked against [`trusts`] (a compromised host, a proxy
/// misconfigured). So a 3xx is a transient upstream error naming where it pointed.
pub fn redirect_error(
    provider: &str,
    status: u16,
    location: Option<&str>,
) -> Option<UpstreamError> {
    if !(300..400).contains(&status) {
        return None;
    }
    // The origin only: a location's path and query may carry tokens.
    let target = location
        .and_then(|l| worker::Url::parse(l).ok())
        .map_or_else(
            || "elsewhere".to_owned(),
            |u| u.origin().ascii_serialization(),
        );
    Some(UpstreamError::Transient {
        reason: format!(
            "{provider} answered HTTP {status} redirecting to {target}; not followed, so its key stays with it"
        ),
        retry_after: None,
    })
}

/// Sends a request with a timeout, without following redirects ([`redirect_error`]).
/// Connection failures and timeouts are transient.
pub async fn send(
    provider: &str,
    req: &UpstreamRequest,
    timeout_ms: u32,
) -> Result<UpstreamResponse, UpstreamError> {
    send_with(provider, req, timeout_ms, false, None).await
}

/// [`send`], following redirects only if `follow` (a request that carries no key),
/// and reading at most `cap` bytes of the answer (if given; more is a permanent
/// error, stopped as the body streams).
async fn send_with(
    provider: &str,
    req: &UpstreamRequest,
    timeout_ms: u32,
    follow: bool,
    cap: Option<usize>,
) -> Result<UpstreamResponse, UpstreamError> {
    let transient = |what: &str| UpstreamError::Transient {
        reason: format!("{provider} {what}"),
        retry_after: None,
    };
    let headers = Headers::new();
    for (name, value) in &req.headers {
        headers
            .set(name, value)
            .map_err(|_| UpstreamError::Permanent(format!("{provider}: invalid header {name}")))?;
    }
    let mut init = RequestInit::new();
    init.with_method(match req.method {
        HttpMethod::Get => Method::Get,
        HttpMethod::Post => Method::Post,
        HttpMethod::Put => Method::Put,
    })
    .with_headers(headers)
    .with_redirect(if follow {
        RequestRedirect::Follow
    } else {
        RequestRedirect::Manual
    });
    if let Some(body) = &req.body {
        let array =
            js_sys::Uint8Array::new_with_length(u32::try_from(body.len()).unwrap_or(u32::MAX));
        array.copy_from(body);
        init.with_body(Some(array.into()));
    }
    let request = Request::new_with_init(&req.url, &init)
        .map_err(|_| UpstreamError::Permanent(format!("{provider}: invalid URL")))?;
    let signal =
        worker::AbortSignal::from(worker::web_sys::AbortSignal::timeout_with_u32(timeout_ms));
    let mut resp = Fetch::Request(request)
        .send_with_signal(&signal)
        .await
        .map_err(|_| transient("could not be reached (connection failed or timed out)"))?;
    let location = resp.headers().get("location").ok().flatten();
    if let Some(e) = redirect_error(provider, resp.status_code(), location.as_deref()) {
        return Err(e);
    }
    let retry_after =
        parse_retry_after(resp.headers().get("retry-after").ok().flatten().as_deref());
    let body = match cap {
        None => resp
            .bytes()
            .await
            .map_err(|_| transient("response was interrupted"))?,
        Some(cap) => {
            let mut stream = resp
                .stream()
                .map_err(|_| transient("response could not be read"))?;
            let mut body = Vec::new();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|_| transient("response was interrupted"))?;
                crate::input::remote::append_capped(&mut body, &chunk, cap)
                    .map_err(|e| UpstreamError::Permanent(format!("{provider}: the answer {e}")))?;
            }
            body
        }
    };
    Ok(UpstreamResponse {
        status: resp.status_code(),
        retry_after,
        body,
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
    match kind {
        Kind::Replicate => replicate::check(model, params),
        Kind::ComfyUi => comfyui::check(params, input),
        Kind::Fal => fal::check(params),
        Kind::Segmind | Kind::Parallax | Kind::Bfl => Ok(()),
    }
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
    job: &JobRecord,
    control: &ControlImage,
    callback: Option<&crate::hooks::Callback>,
    timeout_ms: u32,
    before_send: impl AsyncFn() -> Result<(), UpstreamError>,
) -> Result<Submitted, UpstreamError> {
    let mut sub = send_submit(provider, job, control, callback, timeout_ms, before_send).await?;
    if own_urls(provider, &mut sub) {
        worker::console_warn!(
            "{} named a URL off its own hosts for job {}; its documented path on the base is used",
            provider.kind.name(),
            sub.upstream_id
        );
    }
    Ok(sub)
}

/// The hosts (exactly these, no subdomains) whose URLs `kind`'s answers may name and
/// that get its key, besides the configured base's origin:
/// - Segmind: `api.segmind.com`;
/// - Replicate: `api.replicate.com` (`urls.get`, `urls.cancel`);
/// - fal: `queue.fal.run` and its backup `queue.falrun.com` (fal's queue docs);
/// - BFL: `api.bfl.ai`, its regional `api.eu.bfl.ai`/`api.us.bfl.ai`, the legacy
///   `api.eu1`/`api.us1.bfl.ai` and `api.bfl.ml` (BFL's integration guidelines; see
///   ../shared/reference/providers-2026.md);
/// - a Parallax upstream and ComfyUI: their configured origin only.
fn documented_hosts(kind: Kind) -> &'static [&'static str] {
    match kind {
        Kind::Segmind => &["api.segmind.com"],
        Kind::Replicate => &["api.replicate.com"],
        Kind::Fal => &["queue.fal.run", "queue.falrun.com"],
        Kind::Bfl => &[
            "api.bfl.ai",
            "api.eu.bfl.ai",
            "api.us.bfl.ai",
            "api.eu1.bfl.ai",
            "api.us1.bfl.ai",
            "api.bfl.ml",
        ],
        Kind::Parallax | Kind::ComfyUi => &[],
    }
}

/// Whether `url`, named in `provider`'s answer, may be called with its key: on the
/// configured base's origin, or over https on a host the provider documents
/// ([`documented_hosts`]). Anything else (another host, plain http off the base)
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
    url.scheme() == "https" && documented_hosts(provider.kind).contains(&host)
}

/// Replaces each URL of an accepted job that `provider` may not be called on with its
/// key ([`trusts`]) by the provider's documented path for the job on the configured
/// base, so the job is still polled (and canceled) where the key belongs: the job
/// was accepted, and failing over would pay for it twice. Whether any was replaced.
fn own_urls(provider: &Provider, sub: &mut Submitted) -> bool {
    let (base, id) = (provider.base_url.as_str(), sub.upstream_id.clone());
    let (status, result, cancel) = match provider.kind {
        Kind::Segmind | Kind::Parallax => (
            format!("{base}/v2/requests/{id}/status"),
            format!("{base}/v2/requests/{id}"),
            None,
        ),
        Kind::Replicate => (
            format!("{base}/v1/predictions/{id}"),
            format!("{base}/v1/predictions/{id}"),
            Some(format!("{base}/v1/predictions/{id}/cancel")),
        ),
        Kind::Fal => (
            format!("{base}/{}/requests/{id}/status", fal::APP),
            format!("{base}/{}/requests/{id}", fal::APP),
            Some(format!("{base}/{}/requests/{id}/cancel", fal::APP)),
        ),
        Kind::Bfl => {
            let poll = format!("{base}/v1/get_result?id={id}");
            (poll.clone(), poll, None)
        }
        // Built from the base already (`comfyui::submitted`).
        Kind::ComfyUi => return false,
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
    job: &JobRecord,
    control: &ControlImage,
    callback: Option<&crate::hooks::Callback>,
    timeout_ms: u32,
    before_send: impl AsyncFn() -> Result<(), UpstreamError>,
) -> Result<Submitted, UpstreamError> {
    let name = provider.kind.name();
    if provider.kind == Kind::ComfyUi {
        // ComfyUI runs a repeated prompt again: if an earlier attempt of this job
        // reached the server (an answer lost on the way back), follow that one.
        let id = job.id.as_str();
        if comfyui_lookup(provider, id, timeout_ms).await? != comfyui::Lookup::Unknown {
            return Ok(comfyui::submitted(provider, id));
        }
        let file = format!("parallax-{}.{}", job.id, job.input.format.ext());
        let upload = comfyui::build_upload(
            provider,
            &comfyui::job_folder(job),
            &file,
            inline_bytes(provider, control)?,
            job.input.format.media_type(),
        );
        let uploaded = comfyui::parse_upload(&send(name, &upload, timeout_ms).await?)?;
        let req = build_submit(provider, job, control, callback, &uploaded)?;
        before_send().await?;
        return comfyui::parse_prompt(provider, id, &send(name, &req, timeout_ms).await?);
    }
    let req = build_submit(provider, job, control, callback, "")?;
    before_send().await?;
    let resp = send(name, &req, timeout_ms).await?;
    match provider.kind {
        Kind::Segmind | Kind::Parallax => segmind::parse_submit(provider, &resp),
        Kind::Replicate => replicate::parse_prediction_urls(&resp),
        Kind::Fal => fal::parse_submit(&resp),
        Kind::Bfl => bfl::parse_submit(&resp),
        Kind::ComfyUi => unreachable!("submitted above"),
    }
}

/// The control image's bytes, for a provider that takes them only inline.
fn inline_bytes<'a>(
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

/// The request that starts `job` at `provider`, built by a pure function (ComfyUI's
/// prompt, given the name its upload answered: `comfy_image`). Every catalog
/// parameter reaches it or is refused by [`check`] (a unit test holds each adapter
/// to it).
pub fn build_submit(
    provider: &Provider,
    job: &JobRecord,
    control: &ControlImage,
    callback: Option<&crate::hooks::Callback>,
    comfy_image: &str,
) -> Result<UpstreamRequest, UpstreamError> {
    let media_type = job.input.format.media_type();
    Ok(match provider.kind {
        Kind::Segmind | Kind::Parallax => {
            let mut req = segmind::build_submit(provider, job.model, &job.params, control);
            if provider.kind == Kind::Parallax {
                // Our own API replays a submit with the same key: a resubmit after an
                // ambiguous failure cannot start a second job.
                req.headers
                    .push(("idempotency-key", job.id.as_str().to_owned()));
            }
            req
        }
        Kind::Replicate => replicate::build_submit(
            provider,
            job.model,
            &job.params,
            control,
            media_type,
            callback,
        ),
        Kind::Fal => fal::build_submit(
            provider,
            &job.params,
            &job.input,
            control,
            media_type,
            callback,
        ),
        Kind::Bfl => bfl::build_submit(
            provider,
            &job.params,
            inline_bytes(provider, control)?,
            callback,
        ),
        Kind::ComfyUi => comfyui::build_prompt(provider, job, comfy_image),
    })
}

/// Where prompt `prompt_id` is at a ComfyUI server (see [`comfyui::lookup_with`]:
/// its queue first, then its history). The runner uses it before any resubmit of the
/// same id and on cancel.
pub async fn comfyui_lookup(
    provider: &Provider,
    prompt_id: &str,
    timeout_ms: u32,
) -> Result<comfyui::Lookup, UpstreamError> {
    let name = provider.kind.name();
    comfyui::lookup_with(provider, prompt_id, |probe| {
        let req = comfyui::build_probe(provider, prompt_id, probe);
        async move { send(name, &req, timeout_ms).await }
    })
    .await
}

/// Asks `provider` where a submitted job is.
pub async fn poll(
    provider: &Provider,
    sub: &Submitted,
    timeout_ms: u32,
) -> Result<UpstreamState, UpstreamError> {
    let name = provider.kind.name();
    match provider.kind {
        Kind::Segmind | Kind::Parallax => {
            let resp = send(
                name,
                &segmind::build_get(provider, &sub.status_url),
                timeout_ms,
            )
            .await?;
            let state = segmind::parse_state(&resp)?;
            if state != UpstreamState::Completed(Vec::new()) {
                return Ok(state);
            }
            let resp = send(
                name,
                &segmind::build_get(provider, &sub.result_url),
                timeout_ms,
            )
            .await?;
            segmind::parse_state(&resp)
        }
        Kind::Replicate => {
            let resp = send(
                name,
                &replicate::build_get(provider, &sub.status_url),
                timeout_ms,
            )
            .await?;
            replicate::parse_state(&resp)
        }
        Kind::Bfl => {
            let resp = send(name, &bfl::build_get(provider, &sub.status_url), timeout_ms).await?;
            bfl::parse_state(&resp)
        }
        Kind::Fal => {
            let resp = send(name, &fal::build_get(provider, &sub.status_url), timeout_ms).await?;
            let state = fal::parse_status(&resp)?;
            if state != UpstreamState::Completed(Vec::new()) {
                return Ok(state);
            }
            let resp = send(name, &fal::build_get(provider, &sub.result_url), timeout_ms).await?;
            fal::parse_result(&resp)
        }
        Kind::ComfyUi => match comfyui_lookup(provider, &sub.upstream_id, timeout_ms).await? {
            comfyui::Lookup::Done(state) => Ok(state),
            comfyui::Lookup::Running => Ok(UpstreamState::Processing),
            comfyui::Lookup::Queued => Ok(UpstreamState::Queued),
            // It may have finished between the two calls: look again next time, but
            // never forever (the job's deadline ends it).
            comfyui::Lookup::Unknown => Err(UpstreamError::Transient {
                reason: "comfyui has the prompt neither queued nor in its history".into(),
                retry_after: None,
            }),
        },
    }
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
    let name = provider.kind.name();
    match provider.kind {
        // Replicate: `POST urls.cancel` answers the prediction; one canceled before it
        // started (`started_at` null) never ran.
        // https://replicate.com/docs/reference/http#predictions.cancel
        Kind::Replicate => {
            let Some(url) = &sub.cancel_url else {
                return Ok(CancelOutcome::Unsupported);
            };
            let resp = send(name, &replicate::build_cancel(provider, url), timeout_ms).await?;
            let v = success_json(name, &resp)?;
            let never_started = v["status"] == "canceled" && v["started_at"].is_null();
            Ok(if never_started {
                CancelOutcome::Stopped
            } else {
                CancelOutcome::Requested
            })
        }
        // Our own API: `POST /v2/requests/{id}/cancel` answers the status with
        // `metrics.credits`; a full refund there means nothing was spent. A finished
        // job answers 409 (it ran).
        Kind::Parallax => {
            let url = format!(
                "{}/v2/requests/{}/cancel",
                provider.base_url, sub.upstream_id
            );
            let mut req = segmind::build_get(provider, &url);
            req.method = HttpMethod::Post;
            let resp = send(name, &req, timeout_ms).await?;
            if resp.status == 409 || resp.status == 404 {
                return Ok(CancelOutcome::Requested);
            }
            let v = success_json(name, &resp)?;
            let credits = &v["metrics"]["credits"];
            let stopped = credits["charged"].as_u64().is_some_and(|c| c > 0)
                && credits["refunded"] == credits["charged"];
            Ok(if stopped {
                CancelOutcome::Stopped
            } else {
                CancelOutcome::Requested
            })
        }
        Kind::ComfyUi => {
            let id = sub.upstream_id.as_str();
            match comfyui_lookup(provider, id, timeout_ms).await? {
                comfyui::Lookup::Queued => {
                    let req = comfyui::build_queue_delete(provider, id);
                    send(name, &req, timeout_ms).await?;
                    // Gone from the queue and not in the history: it never ran.
                    Ok(match comfyui_lookup(provider, id, timeout_ms).await? {
                        comfyui::Lookup::Unknown => CancelOutcome::Stopped,
                        comfyui::Lookup::Running => {
                            send(name, &comfyui::build_interrupt(provider, id), timeout_ms).await?;
                            CancelOutcome::Requested
                        }
                        _ => CancelOutcome::Requested,
                    })
                }
                comfyui::Lookup::Running => {
                    // Only when ours is the one running: older servers ignore the
                    // body and interrupt whatever runs.
                    send(name, &comfyui::build_interrupt(provider, id), timeout_ms).await?;
                    Ok(CancelOutcome::Requested)
                }
                comfyui::Lookup::Done(_) => Ok(CancelOutcome::Requested),
                comfyui::Lookup::Unknown => Ok(CancelOutcome::Stopped),
            }
        }
        Kind::Fal => match &sub.cancel_url {
            Some(url) => {
                fal::parse_cancel(
                    &send(name, &fal::build_cancel(provider, url), timeout_ms).await?,
                )?;
                Ok(CancelOutcome::Requested)
            }
            None => Ok(CancelOutcome::Unsupported),
        },
        Kind::Segmind | Kind::Bfl => Ok(CancelOutcome::Unsupported),
    }
}

/// Whether a provider has a job we may have submitted before our record of it was lost.
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup {
    Found(Submitted),
    Absent,
    /// The protocol cannot say (no lookup by our id).
    Unsupported,
}

/// Looks up the job we submit under our own id: ComfyUI keeps it under the
/// `prompt_id` we chose, in `/history/{id}` once done or in `/queue` before.
pub async fn lookup(
    provider: &Provider,
    job: &JobRecord,
    timeout_ms: u32,
) -> Result<Lookup, UpstreamError> {
    if provider.kind != Kind::ComfyUi {
        return Ok(Lookup::Unsupported);
    }
    let id = job.id.as_str();
    Ok(match comfyui_lookup(provider, id, timeout_ms).await? {
        comfyui::Lookup::Unknown => Lookup::Absent,
        _ => Lookup::Found(comfyui::submitted(provider, id)),
    })
}

/// The kinds of upstream Parallax can drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Segmind,
    Replicate,
    ComfyUi,
    /// Another server speaking this project's v2 API (Segmind-compatible).
    Parallax,
    Bfl,
    /// fal.ai's queue (`fal-ai/flux-lora-depth`, dev only).
    Fal,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::Segmind,
        Kind::Replicate,
        Kind::ComfyUi,
        Kind::Parallax,
        Kind::Bfl,
        Kind::Fal,
    ];

    /// The name used in configuration and in a job's `metrics.provider`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Segmind => "segmind",
            Self::Replicate => "replicate",
            Self::ComfyUi => "comfyui",
            Self::Parallax => "parallax",
            Self::Bfl => "bfl",
            Self::Fal => "fal",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }

    /// How many upstream requests polling may spend on one of its jobs. Segmind's
    /// requests count against a per-account limit per minute (Free 5, Pro 50 RPM:
    /// https://docs.segmind.com/api-reference/rate-limits, which does not exempt status
    /// reads), and so do a Parallax upstream's keyed reads (`RATE_LIMIT_READS_PER_MIN`):
    /// the tighter budget. The others' status reads are neither billed nor limited per
    /// job (`docs/performance.md` § "Short jobs").
    pub fn poll_budget(self, every_ms: u64) -> PollBudget {
        match self {
            Self::Segmind | Self::Parallax => PollBudget::tight(every_ms),
            Self::Replicate | Self::ComfyUi | Self::Bfl | Self::Fal => PollBudget::new(every_ms),
        }
    }

    /// Prefix of its wrangler vars: `<PREFIX>_BASE_URL`, `<PREFIX>_API_KEY`.
    pub fn env_prefix(self) -> &'static str {
        match self {
            Self::Segmind => "SEGMIND",
            Self::Replicate => "REPLICATE",
            Self::ComfyUi => "COMFYUI",
            Self::Parallax => "PARALLAX_UPSTREAM",
            Self::Bfl => "BFL",
            Self::Fal => "FAL",
        }
    }

    /// The public endpoint, for cloud providers.
    pub fn default_base_url(self) -> Option<&'static str> {
        match self {
            Self::Segmind => Some("https://api.segmind.com"),
            Self::Replicate => Some("https://api.replicate.com"),
            Self::Bfl => Some("https://api.bfl.ai"),
            Self::Fal => Some("https://queue.fal.run"),
            Self::ComfyUi | Self::Parallax => None,
        }
    }

    /// Whether it takes its control image as `link`, a URL it fetches itself, rather
    /// than inline. Replicate: file inputs take an HTTP(S) URL or a data URL, and data
    /// URLs are only recommended up to 256 KB
    /// (https://replicate.com/docs/topics/predictions/create-a-prediction). fal:
    /// `image_url` is a URL fal downloads, data URIs also accepted (fal-js
    /// `endpoints.ts`, `FluxLoraDepthInput`; `fal.rs`). Segmind: flux-depth-pro/dev's `control_image` is "an image URL or
    /// base64" (https://segmind.com/models/flux-depth-pro/api). Another Parallax fetches
    /// an `https` URL on a public host only (`input/remote.rs`), so it gets links on such
    /// deployments only. BFL's depth endpoint documents base64 only, and ComfyUI takes
    /// the file through `/upload/image`: both keep the bytes inline.
    pub fn fetches(self, link: &str) -> bool {
        match self {
            Self::Replicate | Self::Fal | Self::Segmind => {
                link.starts_with("https://") || link.starts_with("http://")
            }
            Self::Parallax => link.starts_with("https://"),
            Self::ComfyUi | Self::Bfl => false,
        }
    }

    /// Whether it needs a key to work at all.
    pub fn needs_key(self) -> bool {
        !matches!(self, Self::ComfyUi)
    }

    pub fn serves(self, model: Model) -> bool {
        match self {
            Self::Segmind | Self::Replicate | Self::Parallax => true,
            Self::ComfyUi | Self::Fal => model == Model::FluxDepthDev,
            Self::Bfl => model == Model::FluxDepthPro,
        }
    }
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
    match provider.kind {
        Kind::ComfyUi if own => comfyui::headers(provider),
        _ => Vec::new(),
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
                            let mut job = crate::job::tests::job();
                            job.model = model;
                            job.input = info;
                            job.params.0.insert("prompt".into(), "a house".into());
                            job.params.0.insert(spec.name.into(), value.clone());
                            check(kind, model, &job.params, &info).ok()?;
                            let req = build_submit(&provider, &job, &control, None, "in.jpg")
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
        let bfl = at(Kind::Bfl, "https://api.bfl.ai");
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
        let fal = at(Kind::Fal, "https://queue.fal.run");
        let parallax = at(Kind::Parallax, "https://gpu.example.fly.dev");
        let sim = at(Kind::Replicate, "http://127.0.0.1:8790/replicate");
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
            kind: Kind::Replicate,
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
        assert!(own_urls(&replicate, &mut sub));
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
            kind: Kind::Bfl,
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
        assert!(own_urls(&bfl, &mut sub));
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
            kind: Kind::ComfyUi,
            base_url: "https://gpu.example.com".into(),
            api_key: Some(crate::config::Secret::new("k")),
        };
        assert_eq!(
            download_headers(&comfy, "https://gpu.example.com/view?filename=a.png"),
            vec![("authorization", "Bearer k".to_owned())]
        );
        assert!(download_headers(&comfy, "https://gpu.example.com.evil/view").is_empty());
        let replicate = Provider {
            kind: Kind::Replicate,
            base_url: "https://api.replicate.com".into(),
            api_key: Some(crate::config::Secret::new("r8")),
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
