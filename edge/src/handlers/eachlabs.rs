//! The Eachlabs prediction API over the job core (shapes in `compat::eachlabs`):
//! `POST /v1/prediction/` submits, `GET /v1/prediction/{id}` polls. A non-empty
//! `webhook_url` gets the finished prediction POSTed to it (see `webhook`).

use worker::{Env, Request, Response};

use crate::accounts::Caller;
use crate::compat::eachlabs;
use crate::config::Config;
use crate::error::{EdgeError, EdgeResult};
use crate::handlers::submit::{JobRequest, cheapest_job, create_job, idempotency_key};
use crate::http;
use crate::input::body::{self, RawSubmission};
use crate::objects::runner::client::load;
use crate::webhook::{self, Target};

/// `POST /v1/prediction/`.
pub async fn create_prediction(
    mut req: Request,
    env: &Env,
    caller: &Caller,
) -> EdgeResult<Response> {
    let cfg = Config::from_env(env);
    let idempotency_key = idempotency_key(&req)?;
    let bound_to = caller
        .precheck(env, cheapest_job(&cfg), idempotency_key.as_deref())
        .await?;
    let raw = body::read_json(&mut req).await?;
    let create = eachlabs::parse_create(&raw.fields).map_err(EdgeError::fields)?;
    let origin = http::origin(&req, cfg.public_base_url.as_deref());
    let webhook = match create.webhook_url {
        None => None,
        Some(url) => {
            webhook::check_url(&url, cfg.webhook_loopback)
                .map_err(|e| EdgeError::field("webhook_url", e))?;
            // Signed with the caller's secret, else with their key's SHA-256.
            let secret = create
                .webhook_secret
                .or_else(|| caller.key_hash.clone())
                .ok_or_else(|| {
                    EdgeError::field(
                        "webhook_secret",
                        "is required with webhook_url when calling without an API key (it signs the deliveries)",
                    )
                })?;
            Some(Target {
                url,
                secret,
                origin: origin.clone(),
            })
        }
    };
    let request = JobRequest {
        raw: RawSubmission {
            fields: create.input,
            upload: None,
        },
        idempotency_key,
        webhook,
        bound_to,
    };
    let id = create_job(env, &cfg, caller, create.model, request)
        .await
        .map_err(|e| e.map_fields(eachlabs::input_errors))?;
    Ok(http::json(&eachlabs::created(id.as_str()), 200))
}

/// `GET /v1/prediction/{id}`: 200 in every state (a failure is `status: "failed"` with
/// the reason in `logs`), 404 for an unknown or expired id.
/// Its input's `control_image` is the owner's signed link, absent for anyone else.
pub async fn get_prediction(
    req: &Request,
    env: &Env,
    caller: Option<&Caller>,
    id: &str,
) -> EdgeResult<Response> {
    let job = load(env, id).await?;
    let cfg = Config::from_env(env);
    let origin = http::origin(req, cfg.public_base_url.as_deref());
    let token = crate::handlers::jobs::owner_token(req)?;
    let claim = crate::handlers::jobs::Claim {
        caller,
        token: token.as_deref(),
    };
    let control = crate::handlers::jobs::owner_control_link(&cfg, &claim, &job, &origin);
    Ok(http::json(
        &eachlabs::prediction(&job, &origin, control),
        200,
    ))
}
