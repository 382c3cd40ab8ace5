//! Short-lived signed links to a job's control image, handed to providers that fetch
//! their input from a URL (Replicate, fal, Segmind, another Parallax) instead of a
//! multi-megabyte data URL in the submit body.
//!
//! A link is `{PUBLIC_BASE_URL}/results/{id}/control?exp={unix secs}&sig={HMAC}`, with
//! `sig` = base64url(HMAC-SHA256(`CONTROL_LINK_SECRET`, "control\n{id}\n{exp}")). It
//! names one job and one expiry (the job's deadline): a signature for one job does not
//! open another, and an altered `exp` breaks it. Links are only made when the
//! deployment says where providers can reach it (`PUBLIC_BASE_URL`) and has the secret;
//! otherwise the image goes inline as before.
//!
//! The job's owner gets links too ([`owner_link`], on the origin they asked, valid for
//! [`OWNER_LINK_SECS`]): the control image is a person's photo, served to nobody else
//! (see `handlers/results.rs`), and a link is how an `<img>` in their studio opens it.
//! An anonymous job's owner is whoever holds its [`owner_token`] (handed out once, in
//! the submit's answer).

use base64::Engine;
use hmac::{Hmac, Mac};
use parallax_api::RequestId;
use sha2::Sha256;

use crate::secret::Secret;
use crate::storage::keys;

/// Where links point and how they are signed (both from the deployment's config).
#[derive(Debug, Clone)]
pub struct Signer {
    /// The deployment's public origin, without a trailing slash.
    pub base_url: String,
    pub secret: Secret,
}

/// Why a signed request for a control image is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `exp` or `sig` is missing or not well-formed.
    Malformed,
    /// The signature does not match this job and expiry.
    Forged,
    /// It matched, but its time is over.
    Expired,
}

/// HMAC-SHA256 of `message` under `secret`. Every signed thing this deployment hands
/// out (control image links here, upstream callback tokens in `hooks.rs`) starts its
/// message with its own purpose word, so a signature for one is never valid for another.
fn mac(secret: &Secret, message: &str) -> Hmac<Sha256> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.expose().as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(message.as_bytes());
    mac
}

/// base64url (no padding) of the HMAC of `message` under `secret`.
pub fn sign_message(secret: &Secret, message: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(mac(secret, message).finalize().into_bytes())
}

/// Whether `sig` (base64url, as [`sign_message`] writes it) signs `message`, compared in
/// constant time. `None`: `sig` is not base64url at all.
pub fn verify_message(secret: &Secret, message: &str, sig: &str) -> Option<bool> {
    let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(sig)
        .ok()?;
    Some(mac(secret, message).verify_slice(&sig).is_ok())
}

fn control_message(id: &RequestId, exp: u64) -> String {
    format!("control\n{id}\n{exp}")
}

/// The signature of job `id`'s control image link valid until `exp` (unix seconds).
pub fn sign(secret: &Secret, id: &RequestId, exp: u64) -> String {
    sign_message(secret, &control_message(id, exp))
}

/// The link to job `id`'s control image on `base`, valid until `exp` (unix seconds).
fn link_on(base: &str, secret: &Secret, id: &RequestId, exp: u64) -> String {
    format!(
        "{base}{}?exp={exp}&sig={}",
        keys::control_path(id),
        sign(secret, id, exp)
    )
}

impl Signer {
    /// The link to job `id`'s control image, valid until `exp` (unix seconds).
    pub fn link(&self, id: &RequestId, exp: u64) -> String {
        link_on(&self.base_url, &self.secret, id, exp)
    }
}

/// How long an owner's link lives: long enough for a page's images to load and be
/// looked at, short enough that a copied link stops working the same hour. The
/// studio asks for a fresh one when its link is over.
pub const OWNER_LINK_SECS: u64 = 3600;

/// The owner's link to job `id`'s control image on `origin`, made at `now` (unix
/// seconds). The expiry is rounded up to the next quarter hour, so reads within it
/// get the same URL and the browser's cache of the image holds.
pub fn owner_link(secret: &Secret, origin: &str, id: &RequestId, now: u64) -> String {
    let exp = (now + OWNER_LINK_SECS).div_ceil(900) * 900;
    link_on(origin, secret, id, exp)
}

/// The owner's link to job `id`'s own depth map (`/results/{id}/depth.png`) on
/// `origin`, made at `now`: the same signature as [`owner_link`]'s (one job, one
/// expiry), which `handlers/results.rs` accepts for either image, both the owner's.
pub fn owner_depth_link(secret: &Secret, origin: &str, id: &RequestId, now: u64) -> String {
    let exp = (now + OWNER_LINK_SECS).div_ceil(900) * 900;
    format!(
        "{origin}{}?exp={exp}&sig={}",
        keys::depth_path(id),
        sign(secret, id, exp)
    )
}

/// Checks a request's `exp` and `sig` for job `id` at `now` (unix seconds). The
/// signature is compared in constant time, and checked before the expiry so that a
/// forged link learns nothing about time.
pub fn verify(
    secret: &Secret,
    id: &RequestId,
    exp: Option<&str>,
    sig: Option<&str>,
    now: u64,
) -> Result<(), Refusal> {
    let exp: u64 = exp
        .filter(|e| !e.is_empty() && e.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|e| e.parse().ok())
        .ok_or(Refusal::Malformed)?;
    let verified = sig
        .and_then(|s| verify_message(secret, &control_message(id, exp), s))
        .ok_or(Refusal::Malformed)?;
    if !verified {
        return Err(Refusal::Forged);
    }
    if now >= exp {
        return Err(Refusal::Expired);
    }
    Ok(())
}

/// The owner token of anonymous job `id`: base64url(HMAC-SHA256(`CONTROL_LINK_SECRET`,
/// "owner\n{id}")). Derived, not stored, so a replayed submit answers the same one.
pub fn owner_token(secret: &Secret, id: &RequestId) -> String {
    sign_message(secret, &format!("owner\n{id}"))
}

/// Whether `token` is job `id`'s owner token (compared in constant time).
pub fn is_owner_token(secret: &Secret, id: &RequestId, token: &str) -> bool {
    verify_message(secret, &format!("owner\n{id}"), token) == Some(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> RequestId {
        RequestId::parse(s).unwrap()
    }

    const A: &str = "2c7f59ea-13f1-402c-9353-915a2b5a2124";
    const B: &str = "9b1deb4d-3b7d-4bad-9bdd-2b0d7b3dcb6d";

    #[test]
    fn a_link_names_the_job_and_its_expiry_and_verifies_until_then() {
        let signer = Signer {
            base_url: "https://parallax.example.com".into(),
            secret: Secret::new("s3cret"),
        };
        let link = signer.link(&id(A), 1_800_000_000);
        let sig = sign(&signer.secret, &id(A), 1_800_000_000);
        assert_eq!(
            link,
            format!("https://parallax.example.com/results/{A}/control?exp=1800000000&sig={sig}")
        );
        assert!(!link.contains("s3cret"));
        let check = |job: &str, exp: &str, sig: &str, now| {
            verify(&signer.secret, &id(job), Some(exp), Some(sig), now)
        };
        assert_eq!(check(A, "1800000000", &sig, 1_799_999_999), Ok(()));
        assert_eq!(
            check(A, "1800000000", &sig, 1_800_000_000),
            Err(Refusal::Expired)
        );
        // Another job, a later expiry, another secret: all refused.
        assert_eq!(
            check(B, "1800000000", &sig, 1_700_000_000),
            Err(Refusal::Forged)
        );
        assert_eq!(
            check(A, "1900000000", &sig, 1_700_000_000),
            Err(Refusal::Forged)
        );
        let other = sign(&Secret::new("other"), &id(A), 1_800_000_000);
        assert_eq!(
            check(A, "1800000000", &other, 1_700_000_000),
            Err(Refusal::Forged)
        );
    }

    #[test]
    fn an_owners_link_lives_about_an_hour_and_is_stable_within_a_quarter() {
        let secret = Secret::new("s");
        let at = |now| owner_link(&secret, "https://px.example", &id(A), now);
        let link = at(1_800_000_100);
        let exp: u64 = link
            .split("exp=")
            .nth(1)
            .unwrap()
            .split('&')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            (1_800_000_100 + OWNER_LINK_SECS..1_800_000_100 + OWNER_LINK_SECS + 900).contains(&exp)
        );
        let query = link.split_once('?').unwrap().1;
        let (exp_s, sig) = (
            query.split('&').next().unwrap().trim_start_matches("exp="),
            query.split("sig=").nth(1).unwrap(),
        );
        assert_eq!(
            verify(&secret, &id(A), Some(exp_s), Some(sig), exp - 1),
            Ok(())
        );
        assert_eq!(
            verify(&secret, &id(B), Some(exp_s), Some(sig), exp - 1),
            Err(Refusal::Forged)
        );
        assert_eq!(at(1_800_000_200), link, "the same link within the quarter");
    }

    #[test]
    fn an_owner_token_names_one_job_and_is_no_link_signature() {
        let secret = Secret::new("s");
        let token = owner_token(&secret, &id(A));
        assert!(is_owner_token(&secret, &id(A), &token));
        assert!(!is_owner_token(&secret, &id(B), &token));
        assert!(!is_owner_token(&Secret::new("t"), &id(A), &token));
        assert!(!is_owner_token(&secret, &id(A), "not base64!"));
        assert!(!is_owner_token(&secret, &id(A), ""));
        // Purpose words keep a token from verifying as a link, and back.
        assert_eq!(
            verify(&secret, &id(A), Some("0"), Some(&token), 0),
            Err(Refusal::Forged)
        );
    }

    #[test]
    fn malformed_parameters_are_refused_before_any_comparison() {
        let secret = Secret::new("s");
        let sig = sign(&secret, &id(A), 10);
        for (exp, sig) in [
            (None, Some(sig.as_str())),
            (Some("10"), None),
            (Some("+10"), Some(sig.as_str())),
            (Some(""), Some(sig.as_str())),
            (Some("10"), Some("not base64!")),
        ] {
            assert_eq!(
                verify(&secret, &id(A), exp, sig, 0),
                Err(Refusal::Malformed),
                "{exp:?} {sig:?}"
            );
        }
    }
}
