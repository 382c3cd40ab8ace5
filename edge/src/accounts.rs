//! Who is calling: an API key (looked up by its SHA-256 in KV, never stored in clear)
//! or, when the operator allows it, an anonymous client with a daily allowance per IP.
//! Each account's balance and rate limits live in its [`crate::objects::ledger::Ledger`].

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use worker::{Env, Request, Response};

use crate::bindings;
use crate::config::Config;
use crate::error::{EdgeError, EdgeResult};
use crate::objects::ledger::{
    ChargeInfo, Funding, Grant, LedgerReply, LedgerRequest, Limit, Op, Outcome,
};
use crate::storage::keys;

mod reader;
use parallax_api::{CreditEntry, Model, Settlement};
pub use reader::{Reader, public_reader};

/// An API key's record in KV (under `keys::api_key(hash)`), written by the operator
/// (`cargo xtask keys create`, or `wrangler kv key put`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    pub name: String,
    pub created_at: u64,
    #[serde(default)]
    pub grants: Vec<Grant>,
    #[serde(default)]
    pub disabled: bool,
    /// Overrides the deployment's submit rate limit for this key.
    #[serde(default)]
    pub submits_per_minute: Option<u32>,
}

/// Lowercase hex SHA-256 of an API key: how keys are stored and looked up.
pub fn key_hash(key: &str) -> String {
    Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The authenticated (or anonymous) caller of one request.
#[derive(Debug)]
pub struct Caller {
    /// `key:<hash prefix>` or `anon:<address bucket>`; owns jobs and names the ledger.
    pub account: String,
    pub keyed: bool,
    /// SHA-256 (hex) of the presented API key: it signs webhooks whose caller gave no
    /// `webhook_secret` (the caller can compute it; it is no credential).
    pub key_hash: Option<String>,
    funding: Funding,
    submits_per_minute: u32,
    reads_per_minute: u32,
    holds_per_account: u32,
    /// The balance as of this request's ledger call, for `x-remaining-credits`
    /// (shared with its [`Reader`]).
    balance: Rc<Cell<Option<u64>>>,
}

/// How long an isolate keeps a key's record after reading it from KV.
const KEY_CACHE_MS: u64 = 30_000;
/// How long it remembers that a key is unknown: a client repeating a wrong key costs
/// one KV read per this much time, and a key just created works within it.
const UNKNOWN_KEY_CACHE_MS: u64 = 5_000;
/// Most records an isolate keeps (then it starts over).
const KEY_CACHE_MAX: usize = 1_000;

thread_local! {
    /// Valid keys' records recently read from KV, by hash, with when they were read.
    /// KV may itself serve a read up to 60 s stale, so holding a record here for
    /// [`KEY_CACHE_MS`] weakens no guarantee (a disabled key or a new grant takes
    /// effect within that time) and saves a KV read on nearly every request.
    static KEY_CACHE: RefCell<HashMap<String, (u64, KeyRecord)>> = RefCell::new(HashMap::new());
    /// Unknown keys recently looked up, with when: a map of its own, so a flood of
    /// random keys never pushes valid keys' records out.
    static UNKNOWN_KEYS: RefCell<HashMap<String, u64>> = RefCell::new(HashMap::new());
}

/// Whether a cache entry read at `at` is still fresh at `now`, given its lifetime.
fn fresh(at: u64, ttl_ms: u64, now: u64) -> bool {
    now.saturating_sub(at) < ttl_ms
}

/// A key's record, from this isolate's caches or KV.
async fn key_record(env: &Env, hash: &str) -> EdgeResult<Option<KeyRecord>> {
    let now = worker::Date::now().as_millis();
    let cached = KEY_CACHE.with(|c| {
        c.borrow()
            .get(hash)
            .filter(|(at, _)| fresh(*at, KEY_CACHE_MS, now))
            .map(|(_, record)| record.clone())
    });
    if cached.is_some() {
        return Ok(cached);
    }
    let unknown = UNKNOWN_KEYS.with(|u| {
        u.borrow()
            .get(hash)
            .is_some_and(|at| fresh(*at, UNKNOWN_KEY_CACHE_MS, now))
    });
    if unknown {
        return Ok(None);
    }
    crate::meter::count(crate::meter::Op::KvRead, 1);
    let record: Option<KeyRecord> = env
        .kv(bindings::JOBS_KV)?
        .get(&keys::api_key(hash))
        .json()
        .await?;
    match &record {
        Some(r) => KEY_CACHE.with(|c| {
            let mut c = c.borrow_mut();
            if c.len() >= KEY_CACHE_MAX {
                c.clear();
            }
            c.insert(hash.to_owned(), (now, r.clone()));
        }),
        None => UNKNOWN_KEYS.with(|u| {
            let mut u = u.borrow_mut();
            if u.len() >= KEY_CACHE_MAX {
                u.clear();
            }
            u.insert(hash.to_owned(), now);
        }),
    }
    Ok(record)
}

/// The key from `x-api-key` (Segmind's and Eachlabs' header), `API-KEY` (1min.ai's)
/// or `Authorization: Bearer`.
fn presented_key(req: &Request) -> EdgeResult<Option<String>> {
    for header in ["x-api-key", "api-key"] {
        if let Some(k) = req.headers().get(header)? {
            return Ok(Some(k.trim().to_owned()));
        }
    }
    Ok(req
        .headers()
        .get("authorization")?
        .and_then(|v| v.strip_prefix("Bearer ").map(|k| k.trim().to_owned())))
}

pub async fn identify(req: &Request, env: &Env, cfg: &Config) -> EdgeResult<Caller> {
    match presented_key(req)? {
        Some(key) if !key.is_empty() => {
            let hash = key_hash(&key);
            let record = key_record(env, &hash).await?;
            let record = record
                .filter(|r| !r.disabled)
                .ok_or_else(|| EdgeError::Unauthorized("API key is invalid".into()))?;
            Ok(Caller {
                account: format!("key:{}", &hash[..32]),
                keyed: true,
                key_hash: Some(hash.clone()),
                funding: Funding::Grants {
                    grants: record.grants,
                },
                submits_per_minute: record
                    .submits_per_minute
                    .unwrap_or(cfg.limits.submits_per_minute),
                reads_per_minute: cfg.limits.reads_per_minute,
                holds_per_account: cfg.limits.holds_per_account,
                balance: Rc::default(),
            })
        }
        _ if cfg.anon_daily_credits > 0 => Ok(Caller {
            account: anonymous_account(req)?,
            keyed: false,
            key_hash: None,
            funding: Funding::Daily {
                allowance: cfg.anon_daily_credits,
            },
            submits_per_minute: cfg.limits.submits_per_minute,
            reads_per_minute: cfg.limits.keyless_reads_per_minute,
            holds_per_account: cfg.limits.holds_per_account,
            balance: Rc::default(),
        }),
        _ => Err(EdgeError::Unauthorized(
            "Missing API key (x-api-key, API-KEY or Authorization: Bearer)".into(),
        )),
    }
}

/// For reads of a job by its id (the id is the capability, as for share links): a
/// presented key must be valid, but without one the read is public when anonymous
/// use is off, so a shared result opens for anyone.
pub async fn identify_for_read(
    req: &Request,
    env: &Env,
    cfg: &Config,
) -> EdgeResult<Option<Caller>> {
    let has_key = presented_key(req)?.is_some_and(|k| !k.is_empty());
    if has_key || cfg.anon_daily_credits > 0 {
        identify(req, env, cfg).await.map(Some)
    } else {
        Ok(None)
    }
}

/// Sends one operation to an account's ledger. `Err` unless the ledger answered (and
/// so committed the operation).
pub async fn ledger_call(
    env: &Env,
    account: &str,
    funding: Funding,
    op: Op,
    limit: Option<Limit>,
) -> EdgeResult<LedgerReply> {
    ledger_request(
        env,
        account,
        LedgerRequest {
            funding,
            op,
            limit,
            now_ms: worker::Date::now().as_millis(),
            hold: None,
        },
    )
    .await
}

async fn ledger_request(env: &Env, account: &str, body: LedgerRequest) -> EdgeResult<LedgerReply> {
    let stub = env
        .durable_object(bindings::LEDGER)?
        .id_from_name(account)?
        .get_stub()?;
    let text = serde_json::to_string(&body).map_err(|e| EdgeError::Internal(e.to_string()))?;
    let mut init = worker::RequestInit::new();
    init.with_method(worker::Method::Post)
        .with_body(Some(text.into()));
    let req = Request::new_with_init("https://ledger/op", &init)?;
    let mut resp = stub.fetch_with_request(req).await?;
    if resp.status_code() != 200 {
        return Err(EdgeError::Internal(format!(
            "ledger answered {}",
            resp.status_code()
        )));
    }
    Ok(resp.json::<LedgerReply>().await?)
}

/// How many times a handler tries a ledger operation that must not be lost (the
/// request is still open, so it can wait for them).
const INLINE_TRIES: usize = 3;

/// What a reservation found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reservation {
    /// Credits reserved for the new job (and its key, if any, held pending).
    New,
    /// The idempotency key already made this job, with the same request.
    Replay(String),
}

impl Caller {
    async fn call(&self, env: &Env, op: Op, limit: Limit) -> EdgeResult<Outcome> {
        let reply = ledger_call(env, &self.account, self.funding.clone(), op, Some(limit)).await?;
        self.balance.set(Some(reply.balance));
        match reply.outcome {
            Outcome::RateLimited { retry_after_secs } => {
                Err(EdgeError::RateLimited { retry_after_secs })
            }
            other => Ok(other),
        }
    }

    fn submit_limit(&self) -> Limit {
        Limit {
            bucket: "submit".into(),
            per_minute: self.submits_per_minute,
        }
    }

    fn insufficient(&self, needed: u64) -> EdgeError {
        EdgeError::InsufficientCredits(format!(
            "Not enough credits: this job costs {needed}, {} remaining",
            self.balance.get().unwrap_or(0)
        ))
    }

    /// Counts a read request against the rate limit and learns the balance.
    pub async fn touch(&self, env: &Env) -> EdgeResult<()> {
        let limit = Limit {
            bucket: "read".into(),
            per_minute: self.reads_per_minute,
        };
        self.call(env, Op::Touch, limit).await.map(|_| ())
    }

    /// Before anything of a submit is read or fetched: counts it against the submit
    /// rate limit and checks the account can pay for the cheapest job (`amount`).
    /// A retry under a known `idempotency_key` passes whatever the balance (its job is
    /// paid for already and will be replayed). `Ok(Some(fingerprint))`: the request
    /// the key is bound to, so a different one is refused before anything is fetched.
    pub async fn precheck(
        &self,
        env: &Env,
        amount: u64,
        idempotency_key: Option<&str>,
    ) -> EdgeResult<Option<String>> {
        let op = Op::Precheck {
            amount,
            idempotency_key: idempotency_key.map(str::to_owned),
        };
        let limit = Some(self.submit_limit());
        let reply = ledger_call(env, &self.account, self.funding.clone(), op, limit).await?;
        self.balance.set(Some(reply.balance));
        match reply.outcome {
            Outcome::RateLimited { retry_after_secs } => {
                Err(EdgeError::RateLimited { retry_after_secs })
            }
            Outcome::Insufficient { needed } => Err(self.insufficient(needed)),
            _ => Ok(reply.key_fingerprint),
        }
    }

    /// Counts an upload (1min.ai's `/api/assets`) against the submit rate limit.
    pub async fn count_upload(&self, env: &Env) -> EdgeResult<()> {
        self.call(env, Op::Touch, self.submit_limit())
            .await
            .map(|_| ())
    }

    /// Reserves credits for a new job; the submit was already counted by
    /// [`Caller::precheck`]. With a key: the job it made if `fingerprint` matches, 422
    /// if it does not, 409 while that job is still being started.
    pub async fn reserve(
        &self,
        env: &Env,
        job_id: &str,
        amount: u64,
        idempotency_key: Option<String>,
        fingerprint: String,
        model: Model,
    ) -> EdgeResult<Reservation> {
        let op = Op::Reserve {
            job_id: job_id.to_owned(),
            amount,
            idempotency_key,
            fingerprint,
            model: Some(model),
        };
        let reply = ledger_call(env, &self.account, self.funding.clone(), op, None).await?;
        self.balance.set(Some(reply.balance));
        match reply.outcome {
            Outcome::Ok => Ok(Reservation::New),
            Outcome::Replay { job_id } => Ok(Reservation::Replay(job_id)),
            Outcome::KeyReused => Err(EdgeError::IdempotencyKeyReused),
            Outcome::InProgress { retry_after_secs } => Err(EdgeError::Conflict {
                message:
                    "A request with this Idempotency-Key is still being processed; retry shortly"
                        .into(),
                retry_after_secs: Some(retry_after_secs),
            }),
            Outcome::Insufficient { needed } => Err(self.insufficient(needed)),
            Outcome::RateLimited { retry_after_secs } => {
                Err(EdgeError::RateLimited { retry_after_secs })
            }
        }
    }

    /// Makes the idempotency key replay `job_id` (its runner accepted the job).
    pub async fn confirm(&self, env: &Env, job_id: &str, key: &str) -> EdgeResult<()> {
        let op = Op::Confirm {
            job_id: job_id.to_owned(),
            idempotency_key: key.to_owned(),
        };
        self.retried(env, op).await
    }

    /// A job that could not be started: its refund and the release of its pending
    /// key, in one ledger operation, tried until acknowledged (a few times inline).
    pub async fn release(&self, env: &Env, job_id: &str, key: Option<String>) -> EdgeResult<()> {
        let op = Op::Release {
            job_id: job_id.to_owned(),
            idempotency_key: key,
        };
        self.retried(env, op).await
    }

    async fn retried(&self, env: &Env, op: Op) -> EdgeResult<()> {
        let mut last = None;
        for _ in 0..INLINE_TRIES {
            match self.unlimited(env, op.clone()).await {
                Ok(()) => return Ok(()),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| EdgeError::Internal("ledger not reached".into())))
    }

    /// A page of this account's job ids, newest first, and the next cursor.
    pub async fn list(
        &self,
        env: &Env,
        cursor: Option<String>,
        limit: usize,
    ) -> EdgeResult<(Vec<String>, Option<String>)> {
        let limit_rule = Limit {
            bucket: "read".into(),
            per_minute: self.reads_per_minute,
        };
        let reply = ledger_call(
            env,
            &self.account,
            self.funding.clone(),
            Op::List { cursor, limit },
            Some(limit_rule),
        )
        .await?;
        self.balance.set(Some(reply.balance));
        match reply.outcome {
            Outcome::RateLimited { retry_after_secs } => {
                Err(EdgeError::RateLimited { retry_after_secs })
            }
            _ => Ok((reply.jobs, reply.next_cursor)),
        }
    }

    /// A page of this account's credit history, newest first, and the next cursor
    /// (counted as a read).
    pub async fn credit_history(
        &self,
        env: &Env,
        cursor: Option<String>,
        limit: usize,
    ) -> EdgeResult<(Vec<CreditEntry>, Option<String>)> {
        let limit_rule = Limit {
            bucket: "read".into(),
            per_minute: self.reads_per_minute,
        };
        let reply = ledger_call(
            env,
            &self.account,
            self.funding.clone(),
            Op::History { cursor, limit },
            Some(limit_rule),
        )
        .await?;
        self.balance.set(Some(reply.balance));
        match reply.outcome {
            Outcome::RateLimited { retry_after_secs } => {
                Err(EdgeError::RateLimited { retry_after_secs })
            }
            _ => Ok((reply.entries, reply.next_cursor)),
        }
    }

    /// The balance this request learned (after any ledger call).
    pub fn balance(&self) -> Option<u64> {
        self.balance.get()
    }

    /// Drops a deleted job from this account's list.
    pub async fn forget(&self, env: &Env, job_id: &str) -> EdgeResult<()> {
        self.unlimited(
            env,
            Op::Forget {
                job_id: job_id.to_owned(),
            },
        )
        .await
    }

    /// Re-reads the balance (after something else changed it, e.g. a cancel's refund).
    pub async fn refresh(&self, env: &Env) -> EdgeResult<()> {
        self.unlimited(env, Op::Touch).await
    }

    /// A dev/bench stack's ledger operation (refused unless `LEDGER_DEV_OPS=on`).
    pub async fn dev_op(&self, env: &Env, op: Op) -> EdgeResult<LedgerReply> {
        ledger_call(env, &self.account, self.funding.clone(), op, None).await
    }

    async fn unlimited(&self, env: &Env, op: Op) -> EdgeResult<()> {
        let reply = ledger_call(env, &self.account, self.funding.clone(), op, None).await?;
        self.balance.set(Some(reply.balance));
        Ok(())
    }

    /// Sets `x-remaining-credits` when this request learned the balance.
    pub fn stamp(&self, resp: &mut Response) {
        if let Some(b) = self.balance.get() {
            let _ = resp
                .headers_mut()
                .set("x-remaining-credits", &b.to_string());
        }
    }
}

/// The funding to send with an operation that has no caller at hand (a runner's):
/// grants are not needed to refund or read a charge.
fn owner_funding(env: &Env, account: &str) -> Funding {
    if account.starts_with("anon:") {
        Funding::Daily {
            allowance: Config::from_env(env).anon_daily_credits,
        }
    } else {
        Funding::Grants { grants: Vec::new() }
    }
}

/// Tells a job's owner's Ledger how the job ended and what it refunds (possibly 0),
/// from the runner. Idempotent per job: the first settlement refunds
/// `min(credits, charged)`, a later one only tops that up to a larger amount (see
/// `ledger::plan_settle`), and still answers `Ok`. `Err` unless the Ledger
/// acknowledged, so the caller can retry.
pub async fn settle_owner(
    env: &Env,
    account: &str,
    job_id: &str,
    credits: u64,
    reason: Settlement,
) -> EdgeResult<()> {
    let op = Op::Settle {
        job_id: job_id.to_owned(),
        credits,
        reason,
    };
    ledger_call(env, account, owner_funding(env, account), op, None)
        .await
        .map(|_| ())
}

/// A job's charge as its owner's Ledger recorded it (`None`: no charge, e.g. free or
/// already pruned), for `metrics.credits`.
pub async fn job_charge(env: &Env, account: &str, job_id: &str) -> EdgeResult<Option<ChargeInfo>> {
    let op = Op::Charge {
        job_id: job_id.to_owned(),
    };
    Ok(
        ledger_call(env, account, owner_funding(env, account), op, None)
            .await?
            .charge,
    )
}

/// The rate-limit (and anonymous allowance) bucket of a client address: the address
/// for IPv4, its /56 for IPv6. A /64 is one LAN, but a subscriber is commonly given
/// a /56 or a /48 (RIPE-690 recommends either for end sites), so per /64 one
/// subscriber (or a tunnel broker's free /48) holds 256 to 65 536 allowances; per /48,
/// ISPs that hand out /56s would put 256 households in one. /56: at most 256 per
/// /48, and neighbours keep theirs. Anything unparsable is one shared bucket.
pub fn address_bucket(ip: &str) -> String {
    match ip.trim().parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(v4)) => v4.to_string(),
        Ok(std::net::IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/56", s[0], s[1], s[2], s[3] & 0xff00)
            }
        },
        Err(_) => "unknown".into(),
    }
}

/// The account (and rate-limit bucket) of a caller without a key.
fn anonymous_account(req: &Request) -> EdgeResult<String> {
    let ip = req.headers().get("cf-connecting-ip")?.unwrap_or_default();
    Ok(format!("anon:{}", address_bucket(&ip)))
}

/// Counts a read without a key (a public read by id while anonymous use is off)
/// against its address's bucket: `Err(RateLimited)` over the limit.
pub async fn touch_public(req: &Request, env: &Env, cfg: &Config) -> EdgeResult<()> {
    let account = anonymous_account(req)?;
    let funding = Funding::Daily {
        allowance: cfg.anon_daily_credits,
    };
    let limit = Limit {
        bucket: "read".into(),
        per_minute: cfg.limits.keyless_reads_per_minute,
    };
    let reply = ledger_call(env, &account, funding, Op::Touch, Some(limit)).await?;
    match reply.outcome {
        Outcome::RateLimited { retry_after_secs } => {
            Err(EdgeError::RateLimited { retry_after_secs })
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_stored_as_sha256_hex() {
        assert_eq!(
            key_hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn cache_entries_are_fresh_for_their_lifetime_only() {
        assert!(fresh(
            1_000,
            UNKNOWN_KEY_CACHE_MS,
            1_000 + UNKNOWN_KEY_CACHE_MS - 1
        ));
        assert!(!fresh(
            1_000,
            UNKNOWN_KEY_CACHE_MS,
            1_000 + UNKNOWN_KEY_CACHE_MS
        ));
        assert!(!fresh(1_000, KEY_CACHE_MS, 1_000 + KEY_CACHE_MS));
    }

    #[test]
    fn key_records_accept_the_minimal_operator_json() {
        let r: KeyRecord = serde_json::from_str(
            r#"{"name":"ci","created_at":1,"grants":[{"id":"g1","credits":100}]}"#,
        )
        .unwrap();
        assert_eq!(r.grants[0].credits, 100);
        assert!(!r.disabled);
        assert_eq!(r.submits_per_minute, None);
    }

    #[test]
    fn ipv6_clients_share_a_bucket_per_56() {
        assert_eq!(
            address_bucket("2001:db8:1:2:aaaa::1"),
            address_bucket("2001:db8:1:ff:ffff:ffff:ffff:ffff")
        );
        assert_eq!(address_bucket("2001:db8:1:2::9"), "2001:db8:1:0::/56");
        assert_eq!(address_bucket("2001:db8:1:1234::9"), "2001:db8:1:1200::/56");
        assert_ne!(
            address_bucket("2001:db8:1:2::1"),
            address_bucket("2001:db8:1:102::1")
        );
        assert_eq!(address_bucket("203.0.113.7"), "203.0.113.7");
        assert_eq!(address_bucket("::ffff:203.0.113.7"), "203.0.113.7");
        assert_eq!(address_bucket(""), "unknown");
        assert_eq!(address_bucket("not an ip"), "unknown");
    }
}
