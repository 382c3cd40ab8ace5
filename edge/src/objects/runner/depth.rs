//! A generation job's own copy of its depth map (issue 25, review M2).
//!
//! A job submitted with `depth_from` (the same account previewed these control image
//! bytes before, `preview_cache.rs`) must not point at the preview's output: sharing
//! it would publish the preview's id for good (the preview lives on with its own
//! retention, and its outputs are cached immutably), and the link would die with the
//! preview, which always started earlier. So the runner copies the preview's map to
//! `results/{job}/depth.png` ([`keys::depth_map`]) when it stores the job's outputs,
//! before the job is COMPLETED, and the record then names that copy.
//!
//! Why here and not at submit: the copy lives under the job's outputs prefix, which
//! the job's purge (delete, expiry) and its drop of late outputs remove by prefix, so
//! no crash between the copy and the record can leave it behind unowned (a copy made
//! at submit, before the runner holds the job, would be orphaned by a start that never
//! happened). A poll that stores the outputs again copies again: the same bytes to the
//! same key. The copy never fails the job: without it the job completes with no
//! `depth_image`.

use parallax_api::RequestId;

use super::JobRecord;
use super::object::*;
use crate::storage::{self, keys};

/// The R2 key behind a preview output path on this edge (`/results/{id}/0.png`), if it
/// is one.
fn preview_key(path: &str) -> Option<&str> {
    let key = path.strip_prefix('/')?;
    key.starts_with("results/").then_some(key)
}

/// What `depth_from` says once the copy is made: the job's own path, `None` when it
/// has none (the preview's map could not be read or the copy not written).
pub(super) fn own_depth(job: &RequestId, copied: bool) -> Option<String> {
    copied.then(|| keys::depth_path(job))
}

impl JobRunner {
    /// Copies the depth map `job` was submitted with (`depth_from`, a preview's output)
    /// under the job's own prefix. `None`: the job has none; `Some(false)`: it could
    /// not be copied (logged; the job completes without it). A copy that lands after
    /// the job stopped owning outputs of `upstream_id` is deleted again (the drop by
    /// prefix stays the backstop).
    pub(super) async fn copy_depth_map(
        &self,
        job: &JobRecord,
        upstream_id: &str,
    ) -> worker::Result<Option<bool>> {
        let Some(from) = job.depth_from.as_deref() else {
            return Ok(None);
        };
        let own = keys::depth_path(&job.id);
        if from == own {
            return Ok(Some(true));
        }
        let copied = match self.copy(job, from).await {
            Ok(c) => c,
            Err(e) => {
                worker::console_warn!("job {}: copying its depth map failed: {e}", job.id);
                false
            }
        };
        if copied
            && !self
                .load()
                .await?
                .is_some_and(|j| j.owns_outputs_of(upstream_id))
        {
            let bucket =
                storage::media(&self.env).map_err(|e| worker::Error::RustError(e.to_string()))?;
            if let Err(e) = bucket.delete(keys::depth_map(&job.id)).await {
                worker::console_warn!("job {}: deleting a late depth map failed: {e}", job.id);
            }
        }
        Ok(Some(copied))
    }

    /// The copy itself: `false` when the preview's map is gone (deleted or expired),
    /// unless an earlier look already copied it.
    async fn copy(&self, job: &JobRecord, from: &str) -> worker::Result<bool> {
        let bucket =
            storage::media(&self.env).map_err(|e| worker::Error::RustError(e.to_string()))?;
        let to = keys::depth_map(&job.id);
        let source = match preview_key(from) {
            Some(key) => {
                crate::meter::count(crate::meter::Op::R2ClassB, 1);
                bucket.get(key).execute().await?
            }
            None => None,
        };
        let Some(source) = source else {
            crate::meter::count(crate::meter::Op::R2ClassB, 1);
            return Ok(bucket.head(&to).await?.is_some());
        };
        let content_type = source
            .http_metadata()
            .content_type
            .filter(|t| t.starts_with("image/"))
            .unwrap_or_else(|| "image/png".to_owned());
        let Some(body) = source.body() else {
            return Ok(false);
        };
        let bytes = body.bytes().await?;
        storage::put_image(&bucket, &to, bytes, &content_type, job.id.as_str()).await?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_results_path_names_a_preview_key() {
        assert_eq!(preview_key("/results/x/0.png"), Some("results/x/0.png"));
        assert_eq!(preview_key("results/x/0.png"), None);
        assert_eq!(preview_key("/inputs/x"), None);
        let id = RequestId::parse("2c7f59ea-13f1-402c-9353-915a2b5a2124").unwrap();
        assert_eq!(
            own_depth(&id, true).as_deref(),
            Some("/results/2c7f59ea-13f1-402c-9353-915a2b5a2124/depth.png")
        );
        assert_eq!(own_depth(&id, false), None);
    }
}
