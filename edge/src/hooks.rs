//! Upstream webhooks: providers that can call back when a job ends are given a callback
//! URL on this Worker with the submit, so the runner learns of completion at once
//! instead of on its next poll. Polling stays as the backstop, much slower (see
//! `JobRecord::backstop_delay_ms`).
//!
//! The callback URL is `{PUBLIC_BASE_URL}/hooks/{provider}/{job id}?token={token}`, with
//! `token` = base64url(HMAC-SHA256(`HOOK_SECRET`, "hook\n{provider}\n{job id}")) (the
//! signing code of `control_link.rs`): it names one job at one provider, and a token for
//! one does not open another. On top of it, each provider's own proof is checked:
//!
//! - Replicate (`webhook` + `webhook_events_filter: ["completed"]` on the create call):
//!   Standard Webhooks. `webhook-id`, `webhook-timestamp` (Unix seconds) and
//!   `webhook-signature` (space-separated `v1,<base64>`), the signature being
//!   HMAC-SHA256 of `{id}.{timestamp}.{raw body}` keyed with the base64 after `whsec_`
//!   of the account's secret (`REPLICATE_WEBHOOK_SECRET`, from
//!   `GET /v1/webhooks/default/secret`); a timestamp more than 5 minutes away is stale.
//!   https://replicate.com/docs/topics/webhooks/verify-webhook ,
//!   https://github.com/standard-webhooks/standard-webhooks/blob/main/spec/standard-webhooks.md
//!   (providers-2026.md §2.3). Without that secret Replicate gets no webhook.
//! - fal (`fal_webhook=<url>` on the queue submit): ED25519. Headers
//!   `X-Fal-Webhook-Request-Id`, `-User-Id`, `-Timestamp` and `-Signature` (hex); the
//!   signed message is `{request id}\n{user id}\n{timestamp}\n{hex SHA-256 of the raw
//!   body}`; the public keys are the OKP/Ed25519 entries of fal's JWKS
//!   (`FAL_WEBHOOK_JWKS_URL`, default [`FAL_JWKS_URL`]), cached an hour; ±5 minutes.
//!   https://docs.fal.ai/model-apis/model-endpoints/webhooks ("Verifying Your Webhook";
//!   providers-2026.md §3.2). The recipe is fal's documented one as every public
//!   verifier reproduces it; it was not checked against a live fal delivery here.
//! - BFL (`webhook_url` + `webhook_secret`): the secret comes back verbatim in
//!   `X-Webhook-Secret` (black-forest-labs/blackforest `src/bfl/_webhooks.py`;
//!   providers-2026.md §1.5). We send the job's token as that secret.
//!
//! The others are polled: Segmind's v2 async API is submit + poll (its docs,
//! shared/reference `002_…`, name no webhook), another Parallax's v2 API takes none
//! (only the Eachlabs-style `/v1/prediction` does, and the adapter speaks v2), and
//! ComfyUI's `POST /prompt` reads only `prompt`, `number`, `front`, `extra_data` and
//! `client_id`, its progress going to that client's `/ws` websocket
//! (comfyanonymous/ComfyUI `server.py`, `post_prompt`).
//!
//! A callback is never trusted as a result: it only wakes the job's runner, which
//! confirms with one poll of the upstream and proceeds as its alarm would. Each
//! delivery is remembered by the runner under a key ([`Verified::delivery`]), and a
//! second one with the same key (a replay, or the provider retrying) changes nothing.

use base64::Engine;
use ed25519_dalek::{Signature, VerifyingKey};
use hmac::{Hmac, Mac};
use parallax_api::RequestId;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::control_link::{sign_message, verify_message};
use crate::secret::Secret;

/// fal's published webhook keys (fal docs, "Verifying Your Webhook").
pub const FAL_JWKS_URL: &str = "https://rest.alpha.fal.ai/.well-known/jwks.json";
/// A signed timestamp further than this from now is stale (the Standard Webhooks and
/// fal recommendation).
pub const TOLERANCE_SECS: u64 = 300;
/// The backstop's first poll comes this long after the submit when a callback is
/// expected (`HOOK_BACKSTOP_MS`); each later one waits as long as the job's age.
pub const DEFAULT_BACKSTOP_MS: u64 = 60_000;
/// Callback bodies are small JSON; anything larger is refused unread.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// The deployment's callback settings (`PUBLIC_BASE_URL` and `HOOK_SECRET` both set).
#[derive(Debug, Clone)]
pub struct Hooks {
    /// The deployment's public origin, without a trailing slash.
    pub base_url: String,
    /// Signs the per-job tokens (`HOOK_SECRET`).
    pub secret: Secret,
    /// Replicate's account webhook secret, `whsec_…` (`REPLICATE_WEBHOOK_SECRET`).
    pub replicate_secret: Option<Secret>,
    /// Where fal's public keys are (`FAL_WEBHOOK_JWKS_URL`).
    pub fal_jwks_url: String,
    /// The deployment's fal account (`FAL_USER_ID`): fal signs deliveries for every
    /// account alike, so one for another account is refused, whatever its signature.
    pub fal_user_id: Option<String>,
    /// The backstop's first poll (`HOOK_BACKSTOP_MS`).
    pub backstop_ms: u64,
}

/// What a submit carries so the provider calls back.
#[derive(Clone, PartialEq, Eq)]
pub struct Callback {
    /// The URL, token included.
    pub url: String,
    /// The job's token alone.
    pub token: String,
    /// The job's callback secret (BFL's `webhook_secret`, echoed in
    /// `X-Webhook-Secret`): signed apart from the token, so whoever sees the URL (a
    /// request log keeps query strings) still cannot forge BFL's proof.
    pub secret: String,
}

impl std::fmt::Debug for Callback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Callback(***)")
    }
}

fn message(provider: &str, id: &RequestId) -> String {
    format!("hook\n{provider}\n{id}")
}

/// What a job's callback secret signs (not the URL token's message).
fn secret_message(provider: &str, id: &RequestId) -> String {
    format!("hook-secret\n{provider}\n{id}")
}

impl Hooks {
    /// The callback for job `id` at `provider` (one that calls back: see
    /// `providers::callback`).
    pub fn callback(&self, provider: &str, id: &RequestId) -> Callback {
        let token = sign_message(&self.secret, &message(provider, id));
        Callback {
            url: format!("{}/hooks/{provider}/{id}?token={token}", self.base_url),
            token,
            secret: sign_message(&self.secret, &secret_message(provider, id)),
        }
    }

    /// Checks the URL's token for job `id` at `provider` (constant time).
    pub fn check_token(
        &self,
        provider: &str,
        id: &RequestId,
        token: Option<&str>,
    ) -> Result<(), Refusal> {
        let token = token
            .filter(|t| !t.is_empty())
            .ok_or(Refusal::Missing("token"))?;
        match verify_message(&self.secret, &message(provider, id), token) {
            Some(true) => Ok(()),
            _ => Err(Refusal::WrongToken),
        }
    }
}

/// Why a callback is refused (nothing is woken).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A header or parameter (named) is absent.
    Missing(&'static str),
    /// A header (named) is not in its documented form.
    Malformed(&'static str),
    /// The URL's token is not this job's.
    WrongToken,
    /// The provider's signature does not verify.
    Forged,
    /// Signed, but its timestamp (the header named) is more than [`TOLERANCE_SECS`]
    /// from now.
    Stale(&'static str),
}

/// A callback that passed its provider's check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Identifies this delivery: a second one with the same key changes nothing.
    pub delivery: String,
}

fn timestamp(raw: &str, name: &'static str) -> Result<u64, Refusal> {
    raw.trim()
        .parse::<u64>()
        .map_err(|_| Refusal::Malformed(name))
}

fn fresh(ts: u64, now_secs: u64, name: &'static str) -> Result<(), Refusal> {
    if ts.abs_diff(now_secs) > TOLERANCE_SECS {
        Err(Refusal::Stale(name))
    } else {
        Ok(())
    }
}

/// Standard Webhooks (Replicate): the signature first, then the timestamp, so a forged
/// message learns nothing about the clock.
pub fn check_standard(
    secret: &Secret,
    id: Option<&str>,
    ts: Option<&str>,
    signatures: Option<&str>,
    body: &[u8],
    now_secs: u64,
) -> Result<Verified, Refusal> {
    let id = id
        .filter(|i| !i.is_empty())
        .ok_or(Refusal::Missing("webhook-id"))?;
    let raw_ts = ts.ok_or(Refusal::Missing("webhook-timestamp"))?;
    let ts = timestamp(raw_ts, "webhook-timestamp")?;
    let signatures = signatures.ok_or(Refusal::Missing("webhook-signature"))?;
    let encoded = secret.expose().trim();
    let key = base64::engine::general_purpose::STANDARD
        .decode(encoded.strip_prefix("whsec_").unwrap_or(encoded))
        .map_err(|_| Refusal::Forged)?;
    let mac = || {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&key)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(raw_ts.trim().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    };
    let signed = signatures
        .split(' ')
        .filter_map(|s| s.split_once(','))
        .filter(|(version, _)| *version == "v1")
        .filter_map(|(_, sig)| base64::engine::general_purpose::STANDARD.decode(sig).ok())
        .any(|sig| mac().verify_slice(&sig).is_ok());
    if !signed {
        return Err(Refusal::Forged);
    }
    fresh(ts, now_secs, "webhook-timestamp")?;
    Ok(Verified {
        delivery: format!("replicate:{id}"),
    })
}

/// The Ed25519 keys of a JWKS document (`{"keys": [{"kty": "OKP", "crv": "Ed25519",
/// "x": base64url}]}`); other entries are skipped.
pub fn parse_jwks(body: &[u8]) -> Vec<VerifyingKey> {
    #[derive(Deserialize)]
    struct Jwk {
        kty: Option<String>,
        crv: Option<String>,
        x: Option<String>,
    }
    #[derive(Deserialize)]
    struct Jwks {
        #[serde(default)]
        keys: Vec<Jwk>,
    }
    let Ok(jwks) = serde_json::from_slice::<Jwks>(body) else {
        return Vec::new();
    };
    jwks.keys
        .into_iter()
        .filter(|k| k.kty.as_deref() == Some("OKP") && k.crv.as_deref() == Some("Ed25519"))
        .filter_map(|k| {
            let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(k.x?.trim_end_matches('='))
                .ok()?;
            VerifyingKey::from_bytes(&raw.try_into().ok()?).ok()
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

/// The headers of a fal delivery.
#[derive(Debug, Clone, Copy, Default)]
pub struct FalHeaders<'a> {
    pub request_id: Option<&'a str>,
    pub user_id: Option<&'a str>,
    pub timestamp: Option<&'a str>,
    pub signature: Option<&'a str>,
}

struct FalParts<'a> {
    request_id: &'a str,
    user_id: &'a str,
    raw_ts: &'a str,
    ts: u64,
    sig: Signature,
}

fn fal_parts<'a>(h: FalHeaders<'a>) -> Result<FalParts<'a>, Refusal> {
    let request_id = h
        .request_id
        .filter(|r| !r.is_empty())
        .ok_or(Refusal::Missing("x-fal-webhook-request-id"))?;
    let user_id = h.user_id.ok_or(Refusal::Missing("x-fal-webhook-user-id"))?;
    let raw_ts = h
        .timestamp
        .ok_or(Refusal::Missing("x-fal-webhook-timestamp"))?
        .trim();
    let ts = timestamp(raw_ts, "x-fal-webhook-timestamp")?;
    let sig = h
        .signature
        .ok_or(Refusal::Missing("x-fal-webhook-signature"))
        .and_then(|s| unhex(s.trim()).ok_or(Refusal::Malformed("x-fal-webhook-signature")))
        .and_then(|s| {
            Signature::from_slice(&s).map_err(|_| Refusal::Malformed("x-fal-webhook-signature"))
        })?;
    Ok(FalParts {
        request_id,
        user_id,
        raw_ts,
        ts,
        sig,
    })
}

/// Whether a fal delivery has every header in its form and, if the deployment names
/// its fal account (`user_id`), is for that account (checked before fal's keys are
/// fetched, so a bare or foreign request costs nothing).
pub fn check_fal_headers(h: FalHeaders<'_>, user_id: Option<&str>) -> Result<(), Refusal> {
    let parts = fal_parts(h)?;
    match user_id {
        // Signed by fal, perhaps, but for another account: not a delivery of ours.
        Some(ours) if parts.user_id != ours => Err(Refusal::Forged),
        _ => Ok(()),
    }
}

/// fal's ED25519 signature against any of `keys`, then the timestamp.
pub fn check_fal(
    keys: &[VerifyingKey],
    h: FalHeaders<'_>,
    body: &[u8],
    now_secs: u64,
) -> Result<Verified, Refusal> {
    let p = fal_parts(h)?;
    let message = format!(
        "{}\n{}\n{}\n{}",
        p.request_id,
        p.user_id,
        p.raw_ts,
        hex(&Sha256::digest(body))
    );
    if !keys
        .iter()
        .any(|k| k.verify_strict(message.as_bytes(), &p.sig).is_ok())
    {
        return Err(Refusal::Forged);
    }
    fresh(p.ts, now_secs, "x-fal-webhook-timestamp")?;
    Ok(Verified {
        delivery: format!("fal:{}:{}", p.request_id, p.ts),
    })
}

/// BFL: `X-Webhook-Secret` must be the job's callback secret (constant time; not the
/// URL's token). BFL signs nothing else, so a delivery is known by its body: the same
/// body again is the same delivery.
pub fn check_bfl(
    hooks: &Hooks,
    id: &RequestId,
    secret_header: Option<&str>,
    body: &[u8],
) -> Result<Verified, Refusal> {
    let got = secret_header.ok_or(Refusal::Missing("x-webhook-secret"))?;
    match verify_message(&hooks.secret, &secret_message("bfl", id), got.trim()) {
        Some(true) => Ok(Verified {
            delivery: format!("bfl:{}", hex(&Sha256::digest(body))),
        }),
        _ => Err(Refusal::Forged),
    }
}

/// The Worker's `POST /hook` to a job's runner: a verified callback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Wake {
    pub provider: String,
    pub delivery: String,
    #[serde(default)]
    pub upstream_id: Option<String>,
}

/// How many delivery keys a runner remembers (oldest dropped first): far more than a
/// provider sends for one job.
pub const SEEN_CAP: usize = 64;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::{self, Kind};
    use ed25519_dalek::{Signer, SigningKey};

    const A: &str = "2c7f59ea-13f1-402c-9353-915a2b5a2124";
    const B: &str = "9b1deb4d-3b7d-4bad-9bdd-2b0d7b3dcb6d";

    fn id(s: &str) -> RequestId {
        RequestId::parse(s).unwrap()
    }

    fn hooks(replicate: bool) -> Hooks {
        Hooks {
            base_url: "https://px.example".into(),
            secret: Secret::new("hook-secret"),
            replicate_secret: replicate
                .then(|| Secret::new("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD")),
            fal_jwks_url: FAL_JWKS_URL.into(),
            fal_user_id: None,
            backstop_ms: DEFAULT_BACKSTOP_MS,
        }
    }

    #[test]
    fn a_callback_names_one_job_at_one_provider() {
        let h = hooks(true);
        let cb = providers::callback(Some(&h), Kind::named("fal"), &id(A)).unwrap();
        assert!(
            cb.url
                .starts_with(&format!("https://px.example/hooks/fal/{A}?token="))
        );
        assert!(cb.url.ends_with(&cb.token));
        assert!(!cb.url.contains("hook-secret") && !format!("{cb:?}").contains(&cb.token));
        assert_eq!(h.check_token("fal", &id(A), Some(&cb.token)), Ok(()));
        for (kind, job) in [
            (Kind::named("fal"), B),
            (Kind::named("replicate"), A),
            (Kind::named("bfl"), A),
        ] {
            assert_eq!(
                h.check_token(kind.name(), &id(job), Some(&cb.token)),
                Err(Refusal::WrongToken),
                "{kind:?} {job}"
            );
        }
        assert_eq!(
            h.check_token("fal", &id(A), None),
            Err(Refusal::Missing("token"))
        );
        assert_eq!(
            h.check_token("fal", &id(A), Some("not base64!")),
            Err(Refusal::WrongToken)
        );
        // Polled providers get none; Replicate only with its account secret.
        for kind in [
            Kind::named("segmind"),
            Kind::named("parallax"),
            Kind::named("comfyui"),
        ] {
            assert!(providers::callback(Some(&h), kind, &id(A)).is_none());
        }
        assert!(
            providers::callback(Some(&hooks(false)), Kind::named("replicate"), &id(A)).is_none()
        );
    }

    #[test]
    fn standard_webhooks_verify_the_specs_vector_and_refuse_forged_and_stale() {
        // The vector of the standardwebhooks libraries (Rust `test_sign`): secret,
        // id, timestamp and body → this signature.
        let secret = Secret::new("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD");
        let msg = "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk";
        let body = br#"{"email":"test@example.com","username":"test_user"}"#;
        let sig = "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=";
        let now = 1_649_367_553;
        let check = |sigs: &str, ts: &str, body: &[u8], now| {
            check_standard(&secret, Some(msg), Some(ts), Some(sigs), body, now)
        };
        assert_eq!(
            check(sig, "1649367553", body, now),
            Ok(Verified {
                delivery: format!("replicate:{msg}")
            })
        );
        // One of several signatures (a rotated secret) is enough.
        assert!(check(&format!("v1,AAAA {sig} v2,xyz"), "1649367553", body, now).is_ok());
        assert_eq!(
            check(sig, "1649367553", b"{}", now),
            Err(Refusal::Forged),
            "another body"
        );
        assert_eq!(
            check(sig, "1649367554", body, now),
            Err(Refusal::Forged),
            "another timestamp"
        );
        assert_eq!(
            check(
                "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkx=",
                "1649367553",
                body,
                now
            ),
            Err(Refusal::Forged)
        );
        assert_eq!(
            check(sig, "1649367553", body, now + TOLERANCE_SECS + 1),
            Err(Refusal::Stale("webhook-timestamp"))
        );
        assert_eq!(
            check(sig, "1649367553", body, now - TOLERANCE_SECS - 1),
            Err(Refusal::Stale("webhook-timestamp")),
            "from the future"
        );
        assert!(check(sig, "1649367553", body, now + TOLERANCE_SECS).is_ok());
        assert_eq!(
            check(sig, "soon", body, now),
            Err(Refusal::Malformed("webhook-timestamp"))
        );
        assert_eq!(
            check_standard(&secret, None, Some("1"), Some(sig), body, now),
            Err(Refusal::Missing("webhook-id"))
        );
    }

    #[test]
    fn fal_signatures_verify_against_the_jwks_keys() {
        let signer = SigningKey::from_bytes(&[7; 32]);
        let other = SigningKey::from_bytes(&[9; 32]);
        let x = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(signer.verifying_key().as_bytes());
        let jwks = format!(
            r#"{{"keys": [{{"kty": "RSA", "n": "x"}}, {{"kty": "OKP", "crv": "Ed25519", "x": "{x}", "kid": "k1"}}]}}"#
        );
        let keys = parse_jwks(jwks.as_bytes());
        assert_eq!(keys, vec![signer.verifying_key()]);
        let body = br#"{"request_id": "r1", "status": "OK", "payload": {}}"#;
        let sign = |key: &SigningKey, ts: &str, body: &[u8]| {
            let msg = format!("r1\nu1\n{ts}\n{}", hex(&Sha256::digest(body)));
            hex(&key.sign(msg.as_bytes()).to_bytes())
        };
        let sig = sign(&signer, "1700000000", body);
        let headers = |sig: &'static str, ts: &'static str| FalHeaders {
            request_id: Some("r1"),
            user_id: Some("u1"),
            timestamp: Some(ts),
            signature: Some(sig),
        };
        let sig: &'static str = Box::leak(sig.into_boxed_str());
        // Pinned to the deployment's fal account: another account's is refused before
        // any key is fetched.
        assert_eq!(check_fal_headers(headers(sig, "1700000000"), None), Ok(()));
        assert_eq!(
            check_fal_headers(headers(sig, "1700000000"), Some("u1")),
            Ok(())
        );
        assert_eq!(
            check_fal_headers(headers(sig, "1700000000"), Some("u2")),
            Err(Refusal::Forged)
        );
        assert_eq!(
            check_fal(&keys, headers(sig, "1700000000"), body, 1_700_000_100),
            Ok(Verified {
                delivery: "fal:r1:1700000000".into()
            })
        );
        assert_eq!(
            check_fal(&keys, headers(sig, "1700000000"), b"{}", 1_700_000_100),
            Err(Refusal::Forged)
        );
        let foreign: &'static str = Box::leak(sign(&other, "1700000000", body).into_boxed_str());
        assert_eq!(
            check_fal(&keys, headers(foreign, "1700000000"), body, 1_700_000_100),
            Err(Refusal::Forged)
        );
        assert_eq!(
            check_fal(&keys, headers(sig, "1700000000"), body, 1_700_000_000 + 301),
            Err(Refusal::Stale("x-fal-webhook-timestamp"))
        );
        assert_eq!(
            check_fal(&keys, headers("zz", "1700000000"), body, 1_700_000_100),
            Err(Refusal::Malformed("x-fal-webhook-signature"))
        );
        assert_eq!(
            check_fal(&[], headers(sig, "1700000000"), body, 1_700_000_100),
            Err(Refusal::Forged),
            "no keys, no trust"
        );
    }

    #[test]
    fn bfl_echoes_the_jobs_secret_and_a_body_is_one_delivery() {
        let h = hooks(false);
        let cb = providers::callback(Some(&h), Kind::named("bfl"), &id(A)).unwrap();
        assert_ne!(cb.secret, cb.token);
        assert!(!cb.url.contains(&cb.secret), "the secret is not in the URL");
        let a = check_bfl(&h, &id(A), Some(&cb.secret), b"{\"id\":\"t1\"}").unwrap();
        let b = check_bfl(&h, &id(A), Some(&cb.secret), b"{\"id\":\"t1\"}").unwrap();
        assert_eq!(a, b, "the same body is the same delivery");
        assert_eq!(
            check_bfl(&h, &id(B), Some(&cb.secret), b"{}"),
            Err(Refusal::Forged)
        );
        // Whoever read the URL (its token) cannot forge BFL's proof.
        assert_eq!(
            check_bfl(&h, &id(A), Some(&cb.token), b"{}"),
            Err(Refusal::Forged)
        );
        assert_eq!(
            check_bfl(&h, &id(A), None, b"{}"),
            Err(Refusal::Missing("x-webhook-secret"))
        );
        assert_eq!(
            Kind::named("bfl").hook_upstream_id(b"{\"id\":\"t1\"}"),
            Some("t1".into())
        );
        assert_eq!(
            Kind::named("fal").hook_upstream_id(b"{\"request_id\":\"r1\",\"id\":\"x\"}"),
            Some("r1".into())
        );
        assert_eq!(Kind::named("replicate").hook_upstream_id(b"not json"), None);
    }
}
