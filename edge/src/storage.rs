//! Where bytes and records live: R2 for images (inputs and outputs), KV for finished
//! job records. Every key is built in [`keys`].

pub mod keys;

use std::collections::HashMap;

use worker::{Bucket, Env, HttpMetadata};

use crate::bindings;
use crate::error::EdgeResult;

pub fn media(env: &Env) -> EdgeResult<Bucket> {
    Ok(env.bucket(bindings::MEDIA)?)
}

/// Writes an image to R2 with its content type and immutable caching.
pub async fn put_image(
    bucket: &Bucket,
    key: &str,
    bytes: Vec<u8>,
    content_type: &str,
    job_id: &str,
) -> worker::Result<()> {
    let meta = HttpMetadata {
        content_type: Some(content_type.to_owned()),
        cache_control: Some("public, max-age=31536000, immutable".to_owned()),
        ..HttpMetadata::default()
    };
    let mut custom = HashMap::new();
    custom.insert("job".to_owned(), job_id.to_owned());
    crate::meter::count(crate::meter::Op::R2ClassA, 1);
    bucket
        .put(key, bytes)
        .http_metadata(meta)
        .custom_metadata(custom)
        .execute()
        .await?;
    Ok(())
}
