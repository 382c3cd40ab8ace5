//! Deployment configuration read from wrangler vars and secrets. Provider keys are held
//! in [`Secret`], whose `Debug` prints `***`, so they cannot slip into a log line.

use parallax_api::Model;
use worker::Env;

use crate::providers::{Kind, Provider};
use crate::secret::Secret;

/// Request-rate limits per account.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub submits_per_minute: u32,
    pub reads_per_minute: u32,
    /// Reads without a key, per client address (IPv6: per /56), also the read limit
    /// of anonymous accounts (`RATE_LIMIT_KEYLESS_READS_PER_MIN`, default: the
    /// keyed read limit).
    pub keyless_reads_per_minute: u32,
    /// Reads held (and event streams) at once per account (`HELD_READS_PER_ACCOUNT`,
    /// see `holds.rs`).
    pub holds_per_account: u32,
    /// Longest life of an event stream, seconds (`STREAM_MAX_SECS`).
    pub stream_max_secs: u64,
}

/// Everything the edge reads from its environment.
#[derive(Debug, Clone)]
pub struct Config {
    /// Every provider with a base URL (configured or the public default).
    pub providers: Vec<Provider>,
    /// Per model, the providers to try, in order (`PROVIDERS_FLUX_DEPTH_PRO = "segmind, replicate"`).
    pub routes: Vec<(Model, Vec<Kind>)>,
    /// Operator model fallbacks (`FALLBACK_FLUX_DEPTH_PRO = "flux-depth-dev"`; off by
    /// default): the model to serve a request with when none of its own providers is
    /// healthy (see `fallback.rs`).
    pub fallbacks: Vec<(Model, Model)>,
    /// Overrides the request's origin in absolute URLs (set behind a proxy). It also
    /// says providers can reach this deployment: with `CONTROL_LINK_SECRET` set, the
    /// control image goes to providers that fetch URLs as a signed link to it (see
    /// `control_link.rs`); without either, inline as base64.
    pub public_base_url: Option<String>,
    /// Signs those links (`PUBLIC_BASE_URL` + the `CONTROL_LINK_SECRET` secret).
    pub control_links: Option<crate::control_link::Signer>,
    /// `CONTROL_LINK_SECRET` alone: signs the owner's links to a control image (on the
    /// request's origin, see `control_link.rs`). Without it no link is made, and the
    /// photo opens only with its owner's API key.
    pub control_link_secret: Option<Secret>,
    /// Upstream callbacks (`PUBLIC_BASE_URL` + the `HOOK_SECRET` secret; see
    /// `hooks.rs`): providers that can call back are told to, and polled as a backstop.
    pub hooks: Option<crate::hooks::Hooks>,
    /// A job not finished by then is FAILED.
    pub job_deadline_secs: u64,
    /// How long a finished job, its record and its images are kept.
    pub retention_secs: u64,
    /// Credits per output image, per model.
    pub credits_pro: u64,
    pub credits_dev: u64,
    /// Credits per depth preview (`PREVIEW_CREDITS`, default 0: seeing the depth
    /// before spending is free unless the operator prices it).
    pub credits_preview: u64,
    /// Credits per day for callers without a key; 0 requires a key.
    pub anon_daily_credits: u64,
    pub limits: Limits,
    /// How long `POST /v1/{model}` waits for the job before answering 504.
    pub sync_wait_secs: u64,
    /// Timeout of one upstream call (submit or poll), in seconds.
    pub upstream_timeout_secs: u64,
    /// The polling budget's unit (`POLL_EVERY_MS`, default 2000): a job seen finished
    /// at `t` costs at most `4 + t / 2` upstream requests, the look at once and the
    /// quick look included (`3 + t / 2` on providers whose status reads are
    /// rate-limited; `objects::runner::PollBudget`).
    pub poll_every_ms: u64,
    /// Whether `control_image` may be an https URL the edge fetches (`REMOTE_IMAGES=off`
    /// disables it, e.g. where outbound traffic is not allowed).
    pub remote_images: bool,
    /// The per-provider circuit breaker (`BREAKER_FAILURES`, 0 = off;
    /// `BREAKER_COOL_DOWN_SECS`).
    pub breaker: crate::objects::breaker::Policy,
    /// Lets webhooks go to `http://127.0.0.1` (`WEBHOOK_LOOPBACK=on`, the test stack
    /// only: production webhooks go to public https hosts).
    pub webhook_loopback: bool,
}

fn text(env: &Env, name: &str) -> Option<String> {
    env.var(name)
        .map(|v| v.to_string())
        .or_else(|_| env.secret(name).map(|s| s.to_string()))
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

fn number(env: &Env, name: &str, default: u64) -> u64 {
    text(env, name)
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

impl Config {
    /// A whole-number var, or `default` when unset or not a number.
    pub fn number_var(env: &Env, name: &str, default: u64) -> u64 {
        number(env, name, default)
    }

    pub fn from_env(env: &Env) -> Self {
        let providers = Kind::ALL
            .into_iter()
            .filter_map(|kind| {
                let prefix = kind.env_prefix();
                let base_url = text(env, &format!("{prefix}_BASE_URL"))
                    .or_else(|| kind.default_base_url().map(str::to_owned))?;
                Some(Provider {
                    kind,
                    base_url: base_url.trim_end_matches('/').to_owned(),
                    api_key: text(env, &format!("{prefix}_API_KEY")).map(Secret::new),
                })
            })
            .collect();
        let routes = Model::ALL
            .into_iter()
            .map(|m| {
                let var = format!(
                    "PROVIDERS_{}",
                    m.slug().replace('-', "_").to_ascii_uppercase()
                );
                // Segmind serves the FLUX models; the depth preview needs a
                // ComfyUI server (or another Parallax) named in its own var.
                let default = if m.is_preview() { "comfyui" } else { "segmind" };
                (
                    m,
                    parse_route(text(env, &var).as_deref().unwrap_or(default)),
                )
            })
            .collect();
        let reads_per_minute =
            u32::try_from(number(env, "RATE_LIMIT_READS_PER_MIN", 600)).unwrap_or(u32::MAX);
        let fallbacks = Model::ALL
            .into_iter()
            .filter_map(|m| {
                let var = format!(
                    "FALLBACK_{}",
                    m.slug().replace('-', "_").to_ascii_uppercase()
                );
                let to = text(env, &var)?;
                match fallback_target(m, &to) {
                    Ok(t) => Some((m, t)),
                    Err(why) => {
                        worker::console_warn!("{var}: {why}; ignored");
                        None
                    }
                }
            })
            .collect();
        let public_base_url =
            text(env, "PUBLIC_BASE_URL").map(|u| u.trim_end_matches('/').to_owned());
        let control_link_secret = text(env, "CONTROL_LINK_SECRET").map(Secret::new);
        let control_links = match (&public_base_url, &control_link_secret) {
            (Some(base), Some(secret)) => Some(crate::control_link::Signer {
                base_url: base.clone(),
                secret: secret.clone(),
            }),
            _ => None,
        };
        let hooks = match (&public_base_url, text(env, "HOOK_SECRET")) {
            (Some(base), Some(secret)) => Some(crate::hooks::Hooks {
                base_url: base.clone(),
                secret: Secret::new(secret),
                replicate_secret: text(env, "REPLICATE_WEBHOOK_SECRET").map(Secret::new),
                fal_user_id: text(env, "FAL_USER_ID"),
                fal_jwks_url: text(env, "FAL_WEBHOOK_JWKS_URL")
                    .unwrap_or_else(|| crate::hooks::FAL_JWKS_URL.to_owned()),
                backstop_ms: number(env, "HOOK_BACKSTOP_MS", crate::hooks::DEFAULT_BACKSTOP_MS)
                    .max(1_000),
            }),
            _ => None,
        };
        Self {
            providers,
            routes,
            fallbacks,
            public_base_url,
            control_links,
            control_link_secret,
            hooks,
            job_deadline_secs: number(env, "JOB_DEADLINE_SECS", 900),
            retention_secs: text(env, "RETENTION_SECS")
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| number(env, "RETENTION_DAYS", 30) * 86_400),
            credits_pro: number(env, "CREDITS_FLUX_DEPTH_PRO", 5),
            credits_dev: number(env, "CREDITS_FLUX_DEPTH_DEV", 2),
            credits_preview: number(env, "PREVIEW_CREDITS", 0),
            anon_daily_credits: number(env, "ANON_DAILY_CREDITS", 0),
            limits: Limits {
                submits_per_minute: u32::try_from(number(env, "RATE_LIMIT_SUBMITS_PER_MIN", 30))
                    .unwrap_or(u32::MAX),
                reads_per_minute,
                keyless_reads_per_minute: u32::try_from(number(
                    env,
                    "RATE_LIMIT_KEYLESS_READS_PER_MIN",
                    u64::from(reads_per_minute),
                ))
                .unwrap_or(u32::MAX),
                holds_per_account: u32::try_from(number(
                    env,
                    "HELD_READS_PER_ACCOUNT",
                    u64::from(crate::holds::PER_ACCOUNT),
                ))
                .unwrap_or(u32::MAX),
                stream_max_secs: number(env, "STREAM_MAX_SECS", crate::holds::STREAM_MAX_SECS)
                    .max(1),
            },
            sync_wait_secs: number(env, "SYNC_WAIT_SECS", 300),
            upstream_timeout_secs: number(env, "UPSTREAM_TIMEOUT_SECS", 30),
            poll_every_ms: number(env, "POLL_EVERY_MS", 2000).max(100),
            remote_images: text(env, "REMOTE_IMAGES").is_none_or(|v| v != "off"),
            breaker: crate::objects::breaker::Policy {
                failures: u32::try_from(number(
                    env,
                    "BREAKER_FAILURES",
                    u64::from(crate::objects::breaker::BREAKER_THRESHOLD),
                ))
                .unwrap_or(u32::MAX),
                cool_down_ms: number(
                    env,
                    "BREAKER_COOL_DOWN_SECS",
                    crate::objects::breaker::COOL_DOWN_MS / 1000,
                ) * 1000,
            },
            webhook_loopback: text(env, "WEBHOOK_LOOPBACK").is_some_and(|v| v == "on"),
        }
    }

    pub fn provider(&self, kind: Kind) -> Option<&Provider> {
        self.providers.iter().find(|p| p.kind == kind)
    }

    /// The providers configured for `model`, in order.
    pub fn route(&self, model: Model) -> &[Kind] {
        self.routes
            .iter()
            .find(|(m, _)| *m == model)
            .map_or(&[], |(_, r)| r.as_slice())
    }

    /// The model an operator set to serve `model` when its providers are unhealthy.
    pub fn fallback(&self, model: Model) -> Option<Model> {
        self.fallbacks
            .iter()
            .find(|(m, _)| *m == model)
            .map(|(_, to)| *to)
    }

    /// What a job costs: the model's price per image times the images asked for.
    pub fn cost(&self, model: Model, images: usize) -> u64 {
        let per_image = match model {
            Model::FluxDepthPro => self.credits_pro,
            Model::FluxDepthDev => self.credits_dev,
            Model::DepthAnythingV2 => self.credits_preview,
        };
        per_image * images as u64
    }
}

/// The model `FALLBACK_{from}` = `to` names, if it may serve `from`: a generating
/// model other than `from`. The depth preview is neither a fallback target (it makes
/// a depth map, not the asked image) nor falls back (its `FALLBACK_DEPTH_ANYTHING_V2`
/// is refused: a generation is not a preview).
pub fn fallback_target(from: Model, to: &str) -> Result<Model, String> {
    if from.is_preview() {
        return Err(format!("{} has no fallback", from.slug()));
    }
    match Model::from_slug(to) {
        None => Err(format!("unknown model `{to}`")),
        Some(t) if t == from => Err(format!("`{to}` is the model itself")),
        Some(t) if t.is_preview() => Err(format!(
            "`{to}` is the depth preview, not a generating model"
        )),
        Some(t) => Ok(t),
    }
}

/// `"segmind, replicate"` → the known provider kinds, in order, without repeats.
pub fn parse_route(list: &str) -> Vec<Kind> {
    let mut out = Vec::new();
    for name in list
        .split([',', ' '])
        .map(str::trim)
        .filter(|n| !n.is_empty())
    {
        match Kind::from_name(&name.to_ascii_lowercase()) {
            Some(k) if !out.contains(&k) => out.push(k),
            Some(_) => {}
            None => worker::console_warn!("unknown provider `{name}` in a PROVIDERS_* var"),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_ordered_known_and_unique() {
        assert_eq!(
            parse_route("segmind, replicate ,segmind comfyui"),
            vec![
                Kind::named("segmind"),
                Kind::named("replicate"),
                Kind::named("comfyui")
            ]
        );
        assert!(parse_route("").is_empty());
    }

    #[test]
    fn a_fallback_is_a_generating_model_other_than_itself() {
        assert_eq!(
            fallback_target(Model::FluxDepthPro, "flux-depth-dev"),
            Ok(Model::FluxDepthDev)
        );
        assert_eq!(
            fallback_target(Model::FluxDepthDev, "flux-depth-pro"),
            Ok(Model::FluxDepthPro)
        );
        for (from, to) in [
            (Model::FluxDepthPro, "depth-anything-v2"),
            (Model::FluxDepthDev, "depth-anything-v2"),
            (Model::FluxDepthPro, "flux-depth-pro"),
            (Model::FluxDepthPro, "flux-depth-max"),
            (Model::DepthAnythingV2, "flux-depth-dev"),
            (Model::DepthAnythingV2, "flux-depth-pro"),
        ] {
            assert!(fallback_target(from, to).is_err(), "{from:?} → {to}");
        }
    }

    #[test]
    fn secrets_do_not_debug_print() {
        let cfg = Provider {
            kind: Kind::named("segmind"),
            base_url: "https://api.segmind.com".into(),
            api_key: Some(Secret::new("SG_live_123")),
        };
        let shown = format!("{cfg:?}");
        assert!(!shown.contains("SG_live_123"), "{shown}");
        assert!(shown.contains("***"));
    }
}
