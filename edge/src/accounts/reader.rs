//! Who a held read or an event stream is counted against (`holds.rs`): the account's
//! Ledger, asked to count the read and lease one of its held reads in one call.

use std::cell::Cell;
use std::rc::Rc;

use worker::{Env, Request};

use super::{Caller, anonymous_account, ledger_call, ledger_request};
use crate::config::Config;
use crate::error::{EdgeError, EdgeResult};
use crate::objects::ledger::{Funding, Hold, LedgerRequest, Limit, Op, Outcome};

/// Who a held read or an event stream is counted against: its account's Ledger, for
/// the read rate limit and the account's cap on held reads (`holds.rs`).
#[derive(Debug, Clone)]
pub struct Reader {
    pub(super) account: String,
    pub(super) funding: Funding,
    pub(super) per_minute: u32,
    pub(super) max_holds: u32,
    pub(super) balance: Rc<Cell<Option<u64>>>,
}

impl Reader {
    /// Counts a read against the rate limit (`Err(RateLimited)` over it) and asks for
    /// the lease `id` for `secs`: `true` if it may be held.
    pub async fn hold(&self, env: &Env, id: &str, secs: u32) -> EdgeResult<bool> {
        let now_ms = worker::Date::now().as_millis();
        let body = LedgerRequest {
            funding: self.funding.clone(),
            op: Op::Touch,
            limit: Some(Limit {
                bucket: "read".into(),
                per_minute: self.per_minute,
            }),
            now_ms,
            hold: Some(Hold {
                id: id.to_owned(),
                until_ms: now_ms + u64::from(secs) * 1000 + crate::holds::LEASE_MARGIN_MS,
                max: self.max_holds,
            }),
        };
        let reply = ledger_request(env, &self.account, body).await?;
        if !matches!(reply.outcome, Outcome::RateLimited { .. }) {
            self.balance.set(Some(reply.balance));
        }
        match reply.outcome {
            Outcome::RateLimited { retry_after_secs } => {
                Err(EdgeError::RateLimited { retry_after_secs })
            }
            _ => Ok(reply.held),
        }
    }

    /// Gives the lease `id` back (its hold ended). A lost give-back only keeps the
    /// lease until it lapses by itself, so it is logged, not retried.
    pub async fn give_back(&self, env: &Env, id: &str) {
        let op = Op::Unhold { id: id.to_owned() };
        if let Err(e) = ledger_call(env, &self.account, self.funding.clone(), op, None).await {
            worker::console_warn!("held read lease not given back (it lapses): {e}");
        }
    }
}

/// The [`Reader`] of a read without a key (a public read by id while anonymous use
/// is off): its client address's bucket, as [`touch_public`] counts it.
pub fn public_reader(req: &Request, cfg: &Config) -> EdgeResult<Reader> {
    Ok(Reader {
        account: anonymous_account(req)?,
        funding: Funding::Daily {
            allowance: cfg.anon_daily_credits,
        },
        per_minute: cfg.limits.keyless_reads_per_minute,
        max_holds: cfg.limits.holds_per_account,
        balance: Rc::default(),
    })
}

impl Caller {
    /// Who this caller's held reads and streams are counted against.
    pub fn reader(&self) -> Reader {
        Reader {
            account: self.account.clone(),
            funding: self.funding.clone(),
            per_minute: self.reads_per_minute,
            max_holds: self.holds_per_account,
            balance: Rc::clone(&self.balance),
        }
    }
}
