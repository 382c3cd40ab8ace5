//! `POST /v2/{model}`: count the submit and check credits (before reading anything),
//! validate, reserve credits (once per `Idempotency-Key`, bound to the request's
//! fingerprint), store the control image, hand the job to its `JobRunner`, confirm the
//! key, answer with absolute poll URLs.

use parallax_api::{JobStatus, Model, RequestId, SubmitResponse};
use worker::{Env, Request, Response};

use crate::accounts::{Caller, Reservation};
use crate::config::Config;
use crate::error::{EdgeError, EdgeResult};
use crate::http;
use crate::input::body;
use crate::objects::runner::client::runner_stub;
use crate::objects::runner::protocol::RunnerCall;
use crate::objects::runner::{JobRecord, Ownership, Start};
use crate::providers;
use crate::storage::{self, keys};

/// Fills 16 bytes from the platform's CSPRNG (`crypto.getRandomValues`).
pub fn random_bytes() -> EdgeResult<[u8; 16]> {
    use worker::wasm_bindgen::JsCast;
    let global = js_sys::global();
    let crypto = js_sys::Reflect::get(&global, &"crypto".into())
        .map_err(|_| EdgeError::Internal("no crypto global".into()))?;
    let get = js_sys::Reflect::get(&crypto, &"getRandomValues".into())
        .ok()
        .and_then(|f| f.dyn_into::<js_sys::Function>().ok())
        .ok_or_else(|| EdgeError::Internal("no crypto.getRandomValues".into()))?;
    let array = js_sys::Uint8Array::new_with_length(16);
    get.call1(&crypto, &array)
        .map_err(|_| EdgeError::Internal("crypto.getRandomValues failed".into()))?;
    let mut out = [0u8; 16];
    array.copy_to(&mut out);
    Ok(out)
}

pub fn find_model(slug: &str) -> EdgeResult<Model> {
    Model::from_slug(slug).ok_or_else(|| {
        let known: Vec<&str> = Model::ALL.iter().map(|m| m.slug()).collect();
        EdgeError::NotFound(format!(
            "Unknown model `{}`; available: {}",
            slug.chars().take(64).collect::<String>(),
            known.join(", ")
        ))
    })
}

pub fn idempotency_key(req: &Request) -> EdgeResult<Option<String>> {
    match req.headers().get("idempotency-key")? {
        None => Ok(None),
        Some(k) if k.is_empty() || k.len() > 255 || !k.is_ascii() => Err(EdgeError::bad_request(
            "Idempotency-Key must be 1 to 255 ASCII characters",
        )),
        Some(k) => Ok(Some(k)),
    }
}

/// What a new job is made from, however the caller's API shaped it.
#[derive(Debug, Default)]
pub struct JobRequest {
    /// The fields (in this API's names) and the uploaded control image, if any.
    pub raw: body::RawSubmission,
    /// Retries with the same key return the same job, charged once.
    pub idempotency_key: Option<String>,
    /// Where to POST the finished job (the Eachlabs API's `webhook_url`).
    pub webhook: Option<crate::webhook::Target>,
    /// The fingerprint the account's Ledger holds for `idempotency_key`, learned at
    /// the precheck ([`Caller::precheck`]): a request that does not match it is refused
    /// before its control image is fetched.
    pub bound_to: Option<String>,
}

/// Reads a Segmind-shaped submit: the body's fields and the `Idempotency-Key` header.
pub async fn read_job_request(
    req: &mut Request,
    bound_to: Option<String>,
) -> EdgeResult<JobRequest> {
    Ok(JobRequest {
        idempotency_key: idempotency_key(req)?,
        raw: body::read(req).await?,
        webhook: None,
        bound_to,
    })
}

/// The cheapest job any generating model can be (what [`Caller::precheck`] asks for
/// when the model is not known before the body, as in the Eachlabs API, which serves
/// no depth preview: a free preview must not let a broke account's body be read).
pub fn cheapest_job(cfg: &Config) -> u64 {
    Model::GENERATORS
        .iter()
        .map(|m| cfg.cost(*m, 1))
        .min()
        .unwrap_or(0)
}

/// What the precheck asks a request for `model` to be able to pay: the cheapest
/// one-image job it can become (its own price, or the operator's fallback model's when
/// one is set: a pro request may be served by dev). A depth preview is offered only to
/// an account that could afford the cheapest generating job ([`cheapest_job`]), though
/// it is charged `PREVIEW_CREDITS` (0 by default): else free previews would lift the
/// credit limit, and a broke account or an anonymous caller past its allowance could
/// fill the shared GPU queue. (An earlier preview of the same bytes is still answered
/// without charging: the precheck reserves nothing.)
pub fn cheapest_for(cfg: &Config, model: Model) -> u64 {
    if model.is_preview() {
        return cheapest_job(cfg).max(cfg.cost(model, 1));
    }
    cfg.fallbacks
        .iter()
        .filter(|(from, _)| *from == model)
        .map(|(_, to)| cfg.cost(*to, 1))
        .chain([cfg.cost(model, 1)])
        .min()
        .unwrap_or(0)
}

/// What an `Idempotency-Key` is bound to: the model, the validated parameters (in
/// their canonical form, before a seed is drawn), the control image as sent (its
/// bytes, however they were encoded, or its URL: so a retry is matched before any
/// image is fetched) and the webhook. SHA-256, hex.
pub fn fingerprint(
    model: Model,
    params: &parallax_api::Params,
    image: &body::Given,
    webhook: Option<&crate::webhook::Target>,
) -> String {
    use sha2::{Digest, Sha256};
    let params = serde_json::to_string(params).unwrap_or_default();
    let image = match image {
        body::Given::Bytes(bytes) => Sha256::digest(bytes).to_vec(),
        body::Given::Url(url) => format!("url:{url}").into_bytes(),
    };
    let mut h = Sha256::new();
    for part in [
        model.slug().as_bytes(),
        params.as_bytes(),
        &image[..],
        webhook.map_or(&b""[..], |w| w.url.as_bytes()),
    ] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Creates a job (or finds the one an idempotency key already created) and returns
/// its id. The caller ran [`Caller::precheck`] before reading the request.
pub async fn create_job(
    env: &Env,
    cfg: &Config,
    caller: &Caller,
    model: Model,
    request: JobRequest,
) -> EdgeResult<RequestId> {
    let validated = body::validate(model, request.raw)?;
    let key = request.idempotency_key;
    let fingerprint = match key {
        Some(_) => fingerprint(
            model,
            &validated.params,
            &validated.image,
            request.webhook.as_ref(),
        ),
        None => String::new(),
    };
    // A key already bound to another request is refused here, before its image is
    // fetched or stored. Its body had to be read: the binding is to the body. (The
    // reservation checks again: another request may bind the key meanwhile.)
    if request
        .bound_to
        .as_ref()
        .is_some_and(|bound| *bound != fingerprint)
    {
        return Err(EdgeError::IdempotencyKeyReused);
    }
    let mut submission = body::obtain(validated, cfg.remote_images).await?;

    // The same account's earlier preview of these bytes (keyed accounts only, see
    // `preview_cache.rs`): a preview is answered with it, nothing charged or sent
    // upstream; a generation job shows its map as `depth_image`.
    let digest = crate::preview_cache::digest(&submission.image);
    let earlier = match caller.keyed {
        true => crate::preview_cache::find(env, &caller.account, &digest).await,
        false => None,
    };
    if model.is_preview()
        && let Some(done) = &earlier
    {
        return Ok(done.id.clone());
    }
    let depth_from = earlier
        .filter(|p| p.status == JobStatus::Completed && !submission.params.control_is_depth())
        .and_then(|p| {
            p.outputs
                .first()
                .map(|o| keys::output_path(&p.id, 0, &o.ext))
        });

    let random = random_bytes()?;
    // A depth preview is deterministic: it takes no seed.
    if submission.params.seed().is_none() && !model.is_preview() {
        let seed = u32::from_le_bytes([random[0], random[5], random[10], random[15]]);
        submission.params.set_seed(seed);
    }
    let (served, candidates) =
        serve(env, cfg, model, &mut submission.params, &submission.info).await?;
    let id = RequestId::from_random(random_bytes()?);
    let cost = cfg.cost(served, submission.params.num_outputs());
    if let Reservation::Replay(existing) = caller
        .reserve(env, id.as_str(), cost, key.clone(), fingerprint, model)
        .await?
    {
        return RequestId::parse(&existing)
            .ok_or_else(|| EdgeError::Internal("ledger replayed a malformed id".into()));
    }

    let mut record = JobRecord::new(
        id.clone(),
        served,
        submission.params,
        submission.info,
        Ownership {
            owner: caller.account.clone(),
            charged: cost,
            retention_secs: cfg.retention_secs,
        },
        worker::Date::now().as_millis(),
        cfg.job_deadline_secs,
        candidates,
    );
    record.asked_model = (served != model).then_some(model);
    record.depth_from = depth_from.filter(|_| !model.is_preview());
    let started = match start(env, &record, submission.image, request.webhook).await {
        Ok(()) => Started::Yes,
        // The start's answer may have been lost after the runner took the job: ask it.
        Err(e) => probe_start(env, &id, &e).await,
    };
    match (started, &key) {
        (Started::Yes, _) => {}
        // Nothing was started: the refund and the release of the key, as one ledger
        // operation. If even that fails, the Ledger's reaper settles the start.
        (Started::No, _) | (Started::Unknown, None) => {
            caller
                .release(env, id.as_str(), key)
                .await
                .map_err(|e| EdgeError::Internal(format!("job {id}: release failed: {e}")))?;
            return Err(EdgeError::Internal(format!(
                "job {id} could not be started"
            )));
        }
        // The runner could not say: releasing now could refund a job that runs, and a
        // retry would then start a second one. The key stays pending; the Ledger's
        // reaper asks the runner when it lapses (job there: confirm; not: release and
        // refund), and a retry under the key meanwhile gets this same 409.
        (Started::Unknown, Some(_)) => {
            return Err(EdgeError::Conflict {
                message:
                    "A request with this Idempotency-Key is still being processed; retry shortly"
                        .into(),
                retry_after_secs: Some(1),
            });
        }
    }
    if let Some(key) = key
        && let Err(e) = caller.confirm(env, id.as_str(), &key).await
    {
        // The job runs and is charged; only a retry within the pending minute gets 409,
        // after it a retry would make a second job.
        worker::console_error!("job {id}: idempotency key not confirmed: {e}");
    }
    if model.is_preview() && caller.keyed {
        // Kept as long as the job may be (its deadline, then its retention).
        let ttl = cfg.job_deadline_secs + cfg.retention_secs;
        crate::preview_cache::remember(env, &caller.account, &digest, &id, ttl).await;
    }
    Ok(id)
}

/// Whether a job whose start answered an error was started after all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Started {
    Yes,
    /// The runner has no record: definitely not started.
    No,
    /// The runner could not be asked (it did not answer, or answered an error).
    Unknown,
}

/// Asks the runner whether it holds the job; a lost answer is asked again twice,
/// after a short pause.
async fn probe_start(env: &Env, id: &RequestId, start_error: &EdgeError) -> Started {
    for attempt in 0..3 {
        match crate::objects::runner::client::abandon_unless_started(env, id).await {
            Ok(_) => return Started::Yes,
            Err(EdgeError::NotFound(_)) => return Started::No,
            Err(probe) => {
                worker::console_error!(
                    "job {id}: start failed: {start_error}; runner probe {}: {probe}",
                    attempt + 1
                );
                // A moment for a runner that is resetting or overloaded.
                worker::Delay::from(std::time::Duration::from_millis(200 * (attempt + 1))).await;
            }
        }
    }
    Started::Unknown
}

/// The model to run and its candidates: the asked model's, or, when none of its
/// providers is healthy (none ready and able, or every circuit breaker open) and the
/// operator set `FALLBACK_FLUX_DEPTH_PRO = "flux-depth-dev"`, dev's with the parameters
/// mapped (`fallback.rs`).
async fn serve(
    env: &Env,
    cfg: &Config,
    model: Model,
    params: &mut parallax_api::Params,
    input: &crate::input::image::ImageInfo,
) -> EdgeResult<(Model, Vec<String>)> {
    let own = candidates(cfg, model, params, input);
    let to = match cfg.fallback(model) {
        Some(to @ Model::FluxDepthDev) if model == Model::FluxDepthPro => to,
        _ => return own.map(|c| (model, c)),
    };
    if let Ok(names) = &own {
        for name in names {
            if crate::objects::breaker::allow(env, name).await {
                return own.map(|c| (model, c));
            }
        }
    }
    let (served, c, mapped) = fall_back(cfg, model, to, own, params, input)?;
    if let Some(mapped) = mapped {
        *params = mapped;
    }
    Ok((served, c))
}

/// The fallback's choice once no provider of `model`'s own (`own`) is healthy: `to`'s
/// candidates with the parameters mapped (carried back), or else `model`'s own answer
/// (a 400 naming the parameter neither model's providers can take, e.g. `control_type:
/// depth`, a 502 when none is ready). A mapped request is never served with
/// something the caller asked for dropped: the mapping carries `control_type`.
fn fall_back(
    cfg: &Config,
    model: Model,
    to: Model,
    own: EdgeResult<Vec<String>>,
    params: &parallax_api::Params,
    input: &crate::input::image::ImageInfo,
) -> EdgeResult<(Model, Vec<String>, Option<parallax_api::Params>)> {
    let Some(mapped) = crate::fallback::dev_params(params) else {
        return own.map(|c| (model, c, None));
    };
    match candidates(cfg, to, &mapped, input) {
        Ok(c) => Ok((to, c, Some(mapped))),
        Err(_) => own.map(|c| (model, c, None)),
    }
}

/// The providers of the model's route that are ready and can honour these
/// parameters. None ready: 502. Ready ones all unable: 400 naming the parameter.
fn candidates(
    cfg: &Config,
    model: Model,
    params: &parallax_api::Params,
    input: &crate::input::image::ImageInfo,
) -> EdgeResult<Vec<String>> {
    let ready: Vec<_> = cfg
        .route(model)
        .iter()
        .filter(|k| cfg.provider(**k).is_some_and(|p| p.is_ready()))
        .copied()
        .collect();
    if ready.is_empty() {
        // The status every model answers without a provider; the preview's names what
        // is missing (a deployment without ComfyUI, or another Parallax, computes none).
        return Err(EdgeError::UpstreamFailed(match model.is_preview() {
            true => format!(
                "No provider computes depth previews here: {} has no configured provider",
                model.slug()
            ),
            false => format!("No provider is configured for {}", model.slug()),
        }));
    }
    let mut refusals = Vec::new();
    let mut able = Vec::new();
    for kind in ready {
        match providers::check(kind, model, params, input) {
            Ok(()) => able.push(kind.name().to_owned()),
            Err(e) => refusals.push(e),
        }
    }
    if able.is_empty() {
        return Err(EdgeError::fields(refusals));
    }
    Ok(able)
}

async fn start(
    env: &Env,
    record: &JobRecord,
    image: Vec<u8>,
    webhook: Option<crate::webhook::Target>,
) -> EdgeResult<()> {
    storage::put_image(
        &storage::media(env)?,
        &keys::input(&record.id),
        image,
        record.input.format.media_type(),
        record.id.as_str(),
    )
    .await?;
    let resp = runner_stub(env, &record.id)?
        .fetch_with_request(
            RunnerCall::Start(&Start {
                job: record.clone(),
                webhook,
            })
            .request()?,
        )
        .await?;
    match resp.status_code() {
        201 => Ok(()),
        other => Err(EdgeError::Internal(format!(
            "runner refused start: {other}"
        ))),
    }
}

/// The v1 and v2 submit: the cheap precheck before the body is read, then the job.
pub async fn create_job_from(
    req: &mut Request,
    env: &Env,
    cfg: &Config,
    caller: &Caller,
    model: Model,
) -> EdgeResult<RequestId> {
    let bound_to = caller
        .precheck(
            env,
            cheapest_for(cfg, model),
            idempotency_key(req)?.as_deref(),
        )
        .await?;
    let request = read_job_request(req, bound_to).await?;
    create_job(env, cfg, caller, model, request).await
}

pub async fn submit_job(
    mut req: Request,
    env: &Env,
    caller: &Caller,
    slug: &str,
) -> EdgeResult<Response> {
    let model = find_model(slug)?;
    let cfg = Config::from_env(env);
    let id = create_job_from(&mut req, env, &cfg, caller, model).await?;
    let origin = http::origin(&req, cfg.public_base_url.as_deref());
    let status_url = format!("{origin}/v2/requests/{id}/status");
    let response_url = format!("{origin}/v2/requests/{id}");
    let owner_token = anonymous_owner_token(&cfg, caller, &id);
    Ok(http::json(
        &SubmitResponse {
            request_id: id,
            status: JobStatus::Queued,
            poll_url: response_url.clone(),
            status_url,
            response_url,
            owner_token,
        },
        200,
    ))
}

/// The owner token an anonymous caller gets for job `id` (see `control_link.rs`);
/// `None` for a key (the key is the owner) or where no tokens are signed.
pub fn anonymous_owner_token(cfg: &Config, caller: &Caller, id: &RequestId) -> Option<String> {
    let secret = cfg.control_link_secret.as_ref()?;
    (!caller.keyed).then(|| crate::control_link::owner_token(secret, id))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::config::Limits;
    use crate::input::body::Given;
    use crate::providers::Kind;
    use crate::providers::Provider;

    fn config(dev_route: Vec<Kind>) -> Config {
        Config {
            providers: [Kind::named("segmind"), Kind::named("comfyui")]
                .into_iter()
                .map(|kind| Provider {
                    kind,
                    base_url: "http://sim".into(),
                    api_key: Some(crate::secret::Secret::new("k")),
                })
                .collect(),
            routes: vec![(Model::FluxDepthDev, dev_route)],
            public_base_url: None,
            control_links: None,
            control_link_secret: None,
            hooks: None,
            job_deadline_secs: 900,
            retention_secs: 60,
            credits_pro: 5,
            credits_dev: 2,
            credits_preview: 0,
            anon_daily_credits: 0,
            limits: Limits {
                submits_per_minute: 1,
                reads_per_minute: 1,
                keyless_reads_per_minute: 1,
                holds_per_account: 1,
                stream_max_secs: 1,
            },
            sync_wait_secs: 1,
            upstream_timeout_secs: 1,
            poll_every_ms: 2000,
            remote_images: false,
            webhook_loopback: false,
            breaker: crate::objects::breaker::Policy::default(),
            fallbacks: Vec::new(),
        }
    }

    const INFO: crate::input::image::ImageInfo = crate::input::image::ImageInfo {
        format: crate::input::image::ImageFormat::Png,
        width: 800,
        height: 600,
    };

    fn params(fields: serde_json::Value) -> parallax_api::Params {
        parallax_api::validate(Model::FluxDepthDev, fields.as_object().unwrap(), true)
            .unwrap()
            .params
    }

    #[test]
    fn candidates_keep_route_order_and_skip_providers_that_cannot_honour_the_job() {
        let cfg = config(vec![
            Kind::named("comfyui"),
            Kind::named("segmind"),
            Kind::named("replicate"),
        ]);
        assert_eq!(
            candidates(
                &cfg,
                Model::FluxDepthDev,
                &params(json!({"prompt": "x", "output_format": "png"})),
                &INFO
            )
            .unwrap(),
            vec!["comfyui", "segmind"],
            "replicate has no base URL here"
        );
        assert_eq!(
            candidates(
                &cfg,
                Model::FluxDepthDev,
                &params(json!({"prompt": "x"})),
                &INFO
            )
            .unwrap(),
            vec!["segmind"],
            "comfyui writes no jpg"
        );
    }

    #[test]
    fn a_depth_map_control_no_ready_provider_can_take_is_a_400_naming_control_type() {
        let depth = |format| {
            params(json!({"prompt": "x", "control_type": "depth", "output_format": format}))
        };
        let cfg = config(vec![Kind::named("segmind"), Kind::named("comfyui")]);
        assert_eq!(
            candidates(&cfg, Model::FluxDepthDev, &depth("png"), &INFO).unwrap(),
            vec!["comfyui"],
            "segmind always estimates"
        );
        let cfg = config(vec![Kind::named("segmind")]);
        let err = candidates(&cfg, Model::FluxDepthDev, &depth("png"), &INFO).unwrap_err();
        assert_eq!(err.code(), parallax_api::ErrorCode::BadRequest);
        let body = err.body();
        let fields = body.fields.unwrap();
        assert_eq!(fields.len(), 1);
        assert_eq!(fields[0].field, "control_type");
        assert!(
            fields[0].message.contains("segmind"),
            "{}",
            fields[0].message
        );
    }

    fn routed(pro: Vec<Kind>, dev: Vec<Kind>) -> Config {
        let mut cfg = config(dev);
        cfg.routes.push((Model::FluxDepthPro, pro));
        cfg.fallbacks = vec![(Model::FluxDepthPro, Model::FluxDepthDev)];
        cfg
    }

    fn pro_params(fields: serde_json::Value) -> parallax_api::Params {
        parallax_api::validate(Model::FluxDepthPro, fields.as_object().unwrap(), true)
            .unwrap()
            .params
    }

    fn fall_back_for(cfg: &Config, p: &parallax_api::Params) -> EdgeResult<(Model, Vec<String>)> {
        let own = candidates(cfg, Model::FluxDepthPro, p, &INFO);
        fall_back(cfg, Model::FluxDepthPro, Model::FluxDepthDev, own, p, &INFO).map(
            |(m, c, mapped)| {
                if let Some(mapped) = mapped {
                    assert_eq!(mapped.control_is_depth(), p.control_is_depth());
                }
                (m, c)
            },
        )
    }

    #[test]
    fn the_fallback_keeps_a_depth_map_control_or_refuses_it_naming_control_type() {
        let depth =
            pro_params(json!({"prompt": "x", "control_type": "depth", "output_format": "png"}));
        // Pro's segmind cannot take a depth map; dev's comfyui can: served as dev, still
        // a depth map (not re-estimated from it).
        let cfg = routed(vec![Kind::named("segmind")], vec![Kind::named("comfyui")]);
        assert_eq!(
            fall_back_for(&cfg, &depth).unwrap(),
            (Model::FluxDepthDev, vec!["comfyui".to_owned()])
        );
        // Dev's only provider always estimates: the 400 naming control_type, not a dev
        // job that estimates the depth of a depth map.
        let cfg = routed(vec![Kind::named("segmind")], vec![Kind::named("segmind")]);
        let err = fall_back_for(&cfg, &depth).unwrap_err();
        assert_eq!(err.code(), parallax_api::ErrorCode::BadRequest);
        assert_eq!(err.body().fields.unwrap()[0].field, "control_type");
        // A photo control falls back as before.
        let photo = pro_params(json!({"prompt": "x"}));
        assert_eq!(
            fall_back_for(&cfg, &photo).unwrap(),
            (Model::FluxDepthDev, vec!["segmind".to_owned()])
        );
    }

    #[test]
    fn a_preview_is_prechecked_against_the_cheapest_generating_job() {
        let mut cfg = config(vec![]);
        assert_eq!(cfg.cost(Model::DepthAnythingV2, 1), 0);
        assert_eq!(cheapest_for(&cfg, Model::DepthAnythingV2), 2, "dev's price");
        assert_eq!(cheapest_for(&cfg, Model::FluxDepthDev), 2);
        assert_eq!(cheapest_for(&cfg, Model::FluxDepthPro), 5);
        cfg.fallbacks = vec![(Model::FluxDepthPro, Model::FluxDepthDev)];
        assert_eq!(cheapest_for(&cfg, Model::FluxDepthPro), 2);
        // A preview priced above a generation asks for its own price.
        cfg.credits_preview = 9;
        assert_eq!(cheapest_for(&cfg, Model::DepthAnythingV2), 9);
    }

    #[test]
    fn the_fingerprint_binds_model_params_image_and_webhook() {
        let p = params(json!({"prompt": "x"}));
        let img = Given::Bytes(b"img".to_vec());
        let base = fingerprint(Model::FluxDepthDev, &p, &img, None);
        assert_eq!(base, fingerprint(Model::FluxDepthDev, &p, &img, None));
        assert_eq!(base.len(), 64);
        assert_ne!(base, fingerprint(Model::FluxDepthPro, &p, &img, None));
        assert_ne!(
            base,
            fingerprint(
                Model::FluxDepthDev,
                &params(json!({"prompt": "y"})),
                &img,
                None
            )
        );
        assert_ne!(
            base,
            fingerprint(
                Model::FluxDepthDev,
                &p,
                &Given::Bytes(b"img2".to_vec()),
                None
            )
        );
        // A URL is bound as sent (nothing is fetched to check a retry).
        let url = |u: &str| fingerprint(Model::FluxDepthDev, &p, &Given::Url(u.into()), None);
        assert_eq!(
            url("https://a.example/x.jpg"),
            url("https://a.example/x.jpg")
        );
        assert_ne!(
            url("https://a.example/x.jpg"),
            url("https://a.example/y.jpg")
        );
        assert_ne!(url("https://a.example/x.jpg"), base);
        let hook = crate::webhook::Target {
            url: "https://example.com/h".into(),
            secret: "s".into(),
            origin: "o".into(),
        };
        assert_ne!(
            base,
            fingerprint(Model::FluxDepthDev, &p, &img, Some(&hook))
        );
        // Fields in another order, or a number sent as text, are the same request.
        assert_eq!(
            fingerprint(
                Model::FluxDepthDev,
                &params(json!({"num_outputs": 2, "prompt": "x"})),
                &img,
                None
            ),
            fingerprint(
                Model::FluxDepthDev,
                &params(json!({"prompt": "x", "num_outputs": "2"})),
                &img,
                None
            )
        );
    }

    #[test]
    fn a_parameter_no_provider_can_honour_is_a_400_naming_it() {
        let cfg = config(vec![Kind::named("comfyui")]);
        let err = candidates(
            &cfg,
            Model::FluxDepthDev,
            &params(json!({"prompt": "x", "output_format": "jpg"})),
            &INFO,
        )
        .unwrap_err();
        let body = err.body();
        assert_eq!(body.code, parallax_api::ErrorCode::BadRequest);
        assert_eq!(body.fields.unwrap()[0].field, "output_format");
        let none = candidates(
            &config(vec![]),
            Model::FluxDepthDev,
            &params(json!({"prompt": "x"})),
            &INFO,
        )
        .unwrap_err();
        assert_eq!(none.code(), parallax_api::ErrorCode::UpstreamFailed);
        assert_eq!(
            none.body().error,
            "No provider is configured for flux-depth-dev"
        );
    }

    #[test]
    fn a_preview_without_a_provider_says_no_provider_computes_depth_previews_here() {
        // Production's default route for the preview is comfyui, which has no default
        // base URL: nothing is ready.
        let mut cfg = config(vec![]);
        cfg.providers.retain(|p| p.kind != Kind::named("comfyui"));
        cfg.routes
            .push((Model::DepthAnythingV2, vec![Kind::named("comfyui")]));
        let err = candidates(
            &cfg,
            Model::DepthAnythingV2,
            &parallax_api::Params::default(),
            &INFO,
        )
        .unwrap_err();
        assert_eq!(err.code(), parallax_api::ErrorCode::UpstreamFailed);
        assert!(
            err.body()
                .error
                .contains("No provider computes depth previews here"),
            "{}",
            err.body().error
        );
    }
}
