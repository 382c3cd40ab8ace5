//! Every R2 and KV key, built in exactly one place.

use parallax_api::RequestId;

/// R2: the control image a job was submitted with.
pub fn input(id: &RequestId) -> String {
    format!("inputs/{id}")
}

/// R2: output `n` of a job.
pub fn output(id: &RequestId, n: usize, ext: &str) -> String {
    format!("results/{id}/{n}.{ext}")
}

/// R2: a generation job's own copy of the depth map its account previewed of its
/// control image (`objects/runner/depth.rs`), under its outputs prefix so it goes with
/// them.
pub fn depth_map(id: &RequestId) -> String {
    format!("results/{id}/depth.png")
}

/// R2: an image uploaded with `POST /api/assets` (1min.ai's asset API), by its random
/// id. This is also the path callers give back as `imageUrl`.
pub fn asset(id: &str, ext: &str) -> String {
    format!("assets/{id}.{ext}")
}

/// R2: the mark of job `job` on the asset at `asset_key` (see `asset_refs.rs`).
pub fn asset_ref(asset_key: &str, job: &RequestId) -> String {
    format!("{}{job}", asset_refs_prefix(asset_key))
}

/// R2: the prefix of every mark on the asset at `asset_key`.
pub fn asset_refs_prefix(asset_key: &str) -> String {
    format!(
        "asset-refs/{}/",
        asset_key.strip_prefix("assets/").unwrap_or(asset_key)
    )
}

/// R2: which asset job `job` was made from (its body is the asset's key).
pub fn job_asset(job: &RequestId) -> String {
    format!("job-assets/{job}")
}

/// R2: the prefix of every output of a job (purged as a whole, so an output that no
/// record lists cannot survive).
pub fn outputs_prefix(id: &RequestId) -> String {
    format!("results/{id}/")
}

/// KV: an API key's record, by the key's SHA-256 (the key itself is never stored).
pub fn api_key(hash: &str) -> String {
    format!("apikey:{hash}")
}

/// KV: an account's depth preview of an image (`preview_cache.rs`), by the SHA-256 of
/// the account's name and of the image's bytes; its value is the preview's job id.
pub fn preview_cache(account_hash: &str, image_digest: &str) -> String {
    format!("preview:{account_hash}:{image_digest}")
}

/// Public path of a job's control image on this edge.
pub fn control_path(id: &RequestId) -> String {
    format!("/results/{id}/control")
}

/// Public path of a job's share page.
pub fn share_path(id: &RequestId) -> String {
    format!("/r/{id}")
}

/// Public path of output `n` on this edge.
pub fn output_path(id: &RequestId, n: usize, ext: &str) -> String {
    format!("/results/{id}/{n}.{ext}")
}

/// Public path of a generation job's own depth map ([`depth_map`]) on this edge.
pub fn depth_path(id: &RequestId) -> String {
    format!("/{}", depth_map(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_namespaced_by_kind_and_job() {
        let id = RequestId::parse("2c7f59ea-13f1-402c-9353-915a2b5a2124").unwrap();
        assert_eq!(input(&id), "inputs/2c7f59ea-13f1-402c-9353-915a2b5a2124");
        assert_eq!(
            output(&id, 2, "webp"),
            "results/2c7f59ea-13f1-402c-9353-915a2b5a2124/2.webp"
        );
        assert_eq!(
            output_path(&id, 0, "jpg"),
            format!("/{}", output(&id, 0, "jpg"))
        );
        assert!(output(&id, 3, "png").starts_with(&outputs_prefix(&id)));
        assert!(depth_map(&id).starts_with(&outputs_prefix(&id)));
        assert_eq!(depth_path(&id), format!("/{}", depth_map(&id)));
    }
}
