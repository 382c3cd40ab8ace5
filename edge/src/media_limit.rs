//! A per-address rate limit on the public media routes (`GET /results/*`,
//! `GET /api/assets/*`), through Cloudflare's Rate Limiting binding (`MEDIA_LIMIT` in
//! `wrangler.toml`: 600 per minute per address, IPv6 per /56 as everywhere).
//!
//! Not the Ledger: an image load is the most frequent request a page makes (a History
//! page loads every thumbnail), and a Ledger call is a billed Durable Object request
//! awaited by each one. The binding counts in the Worker's location, without a
//! round trip to one object; its counts are per Cloudflare location and approximate
//! (Cloudflare documents it so), which is enough to stop a flood, not to bill. Its
//! limit is in `wrangler.toml` (the binding's `simple` setting), not a var.
//! `POST /api/assets` is not limited here: it is an account's request, counted with
//! its submits in the account's Ledger (`Caller::count_upload`).

use worker::wasm_bindgen::{JsCast, JsValue};
use worker::{Env, Request};

use crate::bindings;
use crate::error::{EdgeError, EdgeResult};

/// Counts a public media request against its client address's bucket:
/// `Err(RateLimited)` over the limit. A deployment without the binding is not
/// limited (logged).
pub async fn check(req: &Request, env: &Env) -> EdgeResult<()> {
    let ip = req.headers().get("cf-connecting-ip")?.unwrap_or_default();
    let key = format!("media:{}", crate::accounts::address_bucket(&ip));
    match limit(env, &key).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(EdgeError::RateLimited {
            retry_after_secs: retry_after_secs(worker::Date::now().as_millis()),
        }),
        Err(e) => {
            worker::console_warn!("media rate limit not applied: {e:?}");
            Ok(())
        }
    }
}

/// The binding's `limit({key})`, called through `js_sys`: the crate's typed
/// `Env::rate_limiter` checks the binding's constructor name, which the local
/// runtime's binding (a wrapped object) does not carry.
async fn limit(env: &Env, key: &str) -> Result<bool, JsValue> {
    let binding = js_sys::Reflect::get(env.as_ref(), &bindings::MEDIA_LIMIT.into())?;
    if binding.is_undefined() {
        return Err("no MEDIA_LIMIT binding".into());
    }
    let limit: js_sys::Function = js_sys::Reflect::get(&binding, &"limit".into())?.dyn_into()?;
    let options = js_sys::Object::new();
    js_sys::Reflect::set(&options, &"key".into(), &key.into())?;
    let promise: js_sys::Promise = limit.call1(&binding, &options)?.dyn_into()?;
    let outcome = worker::wasm_bindgen_futures::JsFuture::from(promise).await?;
    Ok(js_sys::Reflect::get(&outcome, &"success".into())?
        .as_bool()
        .unwrap_or(true))
}

/// Seconds to the end of the binding's one-minute window.
fn retry_after_secs(now_ms: u64) -> u64 {
    (60 - (now_ms % 60_000) / 1000).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_the_rest_of_the_minute() {
        assert_eq!(retry_after_secs(120_000), 60);
        assert_eq!(retry_after_secs(120_000 + 59_500), 1);
        assert_eq!(retry_after_secs(120_000 + 15_000), 45);
    }
}
