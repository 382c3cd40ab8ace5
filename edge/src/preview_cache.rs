//! Depth previews already made, so the same control image is previewed once: per
//! account, by the SHA-256 of the image's bytes, a KV entry naming the preview job
//! (`keys::preview_cache`), kept as long as a job is (`RETENTION_DAYS`).
//!
//! Per account, not global: a global entry would tell one account that another had
//! already previewed exactly these bytes (and hand it that job), which is what a
//! person's photo must not reveal. Per keyed account only: an anonymous account is a
//! client address (a NAT, a shared /56) that strangers share, so it is never cached —
//! the studio keeps its own previews for the page's life.
//!
//! A hit answers with the earlier job itself (the same `request_id`), not a copy: the
//! map is deterministic, the job already holds it in R2 under its retention, and one
//! job owning its outputs keeps deletes and expiry simple (a copy sharing the R2
//! object would lose it when the first job is deleted). An entry whose job failed,
//! expired, was deleted or belongs to another account is a miss (and is replaced).

use parallax_api::{JobStatus, RequestId};
use sha2::{Digest, Sha256};
use worker::Env;

use crate::bindings;
use crate::meter::{Op, count};
use crate::objects::runner::JobRecord;
use crate::objects::runner::client::load;
use crate::storage::keys;

/// SHA-256 of the control image's bytes, hex.
pub fn digest(image: &[u8]) -> String {
    hex(&Sha256::digest(image))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The KV key for `account`'s preview of the image `digest`; the account is hashed so
/// no account name is a key's text.
pub fn key(account: &str, digest: &str) -> String {
    keys::preview_cache(&hex(&Sha256::digest(account.as_bytes())), digest)
}

/// Whether `job` may answer `account`'s preview: its own, not deleted, not failed.
pub fn usable(job: &JobRecord, account: &str) -> bool {
    job.model.is_preview()
        && job.ownership.owner == account
        && !job.deleted
        && job.status != JobStatus::Failed
}

/// `account`'s earlier preview of the image `digest`, if it is still usable.
pub async fn find(env: &Env, account: &str, digest: &str) -> Option<JobRecord> {
    let kv = env.kv(bindings::JOBS_KV).ok()?;
    count(Op::KvRead, 1);
    let id = kv.get(&key(account, digest)).text().await.ok()??;
    let job = load(env, &id).await.ok()?;
    usable(&job, account).then_some(job)
}

/// Remembers `id` as `account`'s preview of `digest` for `ttl_secs`. A failure costs
/// only a later miss: it is logged, not raised.
pub async fn remember(env: &Env, account: &str, digest: &str, id: &RequestId, ttl_secs: u64) {
    let put = async {
        let kv = env.kv(bindings::JOBS_KV)?;
        count(Op::KvWrite, 1);
        // KV's smallest TTL is 60 s.
        kv.put(&key(account, digest), id.as_str())?
            .expiration_ttl(ttl_secs.max(60))
            .execute()
            .await?;
        Ok::<(), worker::Error>(())
    };
    if let Err(e) = put.await {
        worker::console_warn!("job {id}: preview cache entry not written: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_hides_the_account_and_names_the_bytes() {
        let d = digest(b"abc");
        assert_eq!(
            d,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let k = key("key:0123abcd", &d);
        assert!(k.starts_with("preview:") && k.ends_with(&d), "{k}");
        assert!(!k.contains("0123abcd"));
        assert_ne!(k, key("key:other", &d));
    }

    #[test]
    fn only_the_accounts_own_live_preview_answers() {
        let mut p = crate::objects::runner::tests::job();
        p.model = parallax_api::Model::DepthAnythingV2;
        assert!(
            usable(&p, "key:abc"),
            "queued or running: the same job answers"
        );
        assert!(!usable(&p, "key:other"), "another account's is never used");
        p.status = JobStatus::Completed;
        assert!(usable(&p, "key:abc"));
        p.deleted = true;
        assert!(!usable(&p, "key:abc"));
        p.deleted = false;
        p.status = JobStatus::Failed;
        assert!(
            !usable(&p, "key:abc"),
            "a failed preview is previewed again"
        );
        let generation = crate::objects::runner::tests::job();
        assert!(!usable(&generation, "key:abc"), "only a preview job");
    }
}
