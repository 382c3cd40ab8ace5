//! Uploaded assets (`POST /api/assets`) and the jobs made from them.
//!
//! An asset is an input: a job made from it copies its bytes into the job's own
//! control image at submit. So an asset nobody used is gone [`unused_secs`] after its
//! upload (1 hour by default, `ASSET_UNUSED_SECS`): time to submit the features that
//! use it, as 1min.ai's flow does (upload, then feature). One that a job used lives as
//! long as a job made from it: each such job leaves a mark (`asset-refs/{asset}/{job}`
//! and `job-assets/{job}` naming the asset), and deleting the job deletes the asset too
//! when no other job made from it still exists. A mark whose job is gone (deleted or
//! past retention) is dropped when next looked at. Storage holds them at most as long
//! as the bucket's lifecycle rule (see the README's Deploy), whatever happens here.
//!
//! Why not charge for uploads instead: a charge would make a free `GET` of a public,
//! 10 MB, month-long file merely paid for; tying the file to the jobs that need it
//! keeps no photo longer than its jobs, which is the point (issue 26).

use parallax_api::RequestId;
use worker::{Bucket, Env};

use crate::config::Config;
use crate::error::EdgeResult;
use crate::storage::{self, keys};

/// How long an asset no job used is kept (`ASSET_UNUSED_SECS`, default an hour).
pub fn unused_secs(env: &Env) -> u64 {
    Config::number_var(env, "ASSET_UNUSED_SECS", 3600)
}

/// Whether an asset uploaded at `uploaded_ms` is still within its unused window.
pub fn fresh(uploaded_ms: u64, unused_secs: u64, now_ms: u64) -> bool {
    now_ms < uploaded_ms.saturating_add(unused_secs * 1000)
}

/// Whether the asset at `key` (uploaded at `uploaded_ms`) may still be served or used:
/// fresh, or used by a job that still exists. An asset that may not is deleted.
pub async fn alive(env: &Env, key: &str, uploaded_ms: u64) -> EdgeResult<bool> {
    if fresh(
        uploaded_ms,
        unused_secs(env),
        worker::Date::now().as_millis(),
    ) {
        return Ok(true);
    }
    let bucket = storage::media(env)?;
    if used(env, &bucket, key, None).await? {
        return Ok(true);
    }
    bucket.delete(key).await?;
    Ok(false)
}

/// Whether a job other than `except` that still exists was made from the asset; marks
/// of jobs that are gone are dropped on the way.
async fn used(
    env: &Env,
    bucket: &Bucket,
    key: &str,
    except: Option<&RequestId>,
) -> EdgeResult<bool> {
    let prefix = keys::asset_refs_prefix(key);
    crate::meter::count(crate::meter::Op::R2ClassA, 1);
    let listed = bucket.list().prefix(prefix.clone()).execute().await?;
    for object in listed.objects() {
        let mark = object.key();
        let Some(job) = mark.strip_prefix(&prefix).and_then(RequestId::parse) else {
            continue;
        };
        if except == Some(&job) {
            continue;
        }
        match crate::objects::runner::client::load(env, job.as_str()).await {
            Ok(record) if !record.deleted => return Ok(true),
            Ok(_) | Err(crate::error::EdgeError::NotFound(_)) => bucket.delete(&mark).await?,
            Err(e) => return Err(e),
        }
    }
    Ok(false)
}

/// Marks job `job` as made from the asset at `key`.
pub async fn mark(env: &Env, key: &str, job: &RequestId) -> EdgeResult<()> {
    let bucket = storage::media(env)?;
    crate::meter::count(crate::meter::Op::R2ClassA, 2);
    bucket
        .put(keys::asset_ref(key, job), Vec::<u8>::new())
        .execute()
        .await?;
    bucket
        .put(keys::job_asset(job), key.as_bytes().to_vec())
        .execute()
        .await?;
    Ok(())
}

/// After job `job` was deleted: drops its mark, and the asset it was made from when
/// no other job made from it still exists.
pub async fn release(env: &Env, job: &RequestId) -> EdgeResult<()> {
    let bucket = storage::media(env)?;
    crate::meter::count(crate::meter::Op::R2ClassB, 1);
    let Some(object) = bucket.get(keys::job_asset(job)).execute().await? else {
        return Ok(());
    };
    let Some(body) = object.body() else {
        return Ok(());
    };
    let key = body.text().await?;
    bucket.delete(keys::asset_ref(&key, job)).await?;
    if !used(env, &bucket, &key, Some(job)).await? {
        bucket.delete(&key).await?;
    }
    bucket.delete(keys::job_asset(job)).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unused_asset_is_fresh_for_its_window_only() {
        assert!(fresh(1_000, 3600, 1_000));
        assert!(fresh(1_000, 3600, 1_000 + 3_599_999));
        assert!(!fresh(1_000, 3600, 1_000 + 3_600_000));
    }
}
