//! `Ledger`: one Durable Object per account (an API key, or an anonymous client IP).
//! It is the only place balances live (KV is eventually consistent and would allow
//! double spending): it applies credit grants, reserves credits at submit, refunds a
//! failed or canceled job once, remembers idempotency keys, and rate-limits.
//!
//! Internal protocol: `POST /op` with a [`LedgerRequest`] → [`LedgerReply`].

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use worker::{DurableObject, Env, Request, Response, State, durable_object};

use crate::http;

/// A credit grant issued by the operator (stored with the key in KV, applied once).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub id: String,
    pub credits: u64,
}

/// Where an account's credits come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Funding {
    /// An API key: the operator's grants.
    Grants { grants: Vec<Grant> },
    /// An anonymous client: a fresh allowance every UTC day.
    Daily { day: String, allowance: u64 },
}

/// What to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// Reserve `amount` credits for a new job (once per idempotency key).
    Reserve {
        job_id: String,
        amount: u64,
        idempotency_key: Option<String>,
    },
    /// Give a job's credits back (at most once).
    Refund {
        job_id: String,
        /// How much of the charge to give back (`None`: all of it).
        #[serde(default)]
        credits: Option<u64>,
    },
    /// Just count a request and report the balance.
    Touch,
    /// A page of the account's jobs, newest first, after `cursor` (a job id).
    List {
        cursor: Option<String>,
        limit: usize,
    },
    /// Drop a deleted job from the account's list.
    Forget { job_id: String },
}

/// A request-rate limit: at most `per_minute` in each minute, per bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limit {
    pub bucket: String,
    pub per_minute: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerRequest {
    pub funding: Funding,
    pub op: Op,
    pub limit: Option<Limit>,
    pub now_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    Ok,
    /// The idempotency key was seen: this is the job it created.
    Replay {
        job_id: String,
    },
    Insufficient {
        needed: u64,
    },
    RateLimited {
        retry_after_secs: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerReply {
    #[serde(flatten)]
    pub outcome: Outcome,
    pub balance: u64,
    /// For [`Op::List`]: job ids, newest first, and the cursor of the next page.
    #[serde(default)]
    pub jobs: Vec<String>,
    #[serde(default)]
    pub next_cursor: Option<String>,
}

/// Most jobs an account's list remembers (older ones have expired by then).
pub const MAX_LISTED: usize = 5_000;

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
struct Charge {
    amount: u64,
    refunded: bool,
}

/// How long an idempotency key is remembered.
pub const IDEMPOTENCY_TTL_MS: u64 = 24 * 3600 * 1000;

/// The account's persistent state and its pure rules.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LedgerState {
    balance: u64,
    applied_grants: Vec<String>,
    day: Option<String>,
    charges: BTreeMap<String, Charge>,
    /// idempotency key → (job id, when)
    idempotency: BTreeMap<String, (String, u64)>,
    /// The account's jobs, oldest first.
    #[serde(default)]
    jobs: Vec<String>,
}

impl LedgerState {
    pub fn balance(&self) -> u64 {
        self.balance
    }

    /// Up to `limit` job ids, newest first, after `cursor`; and the next cursor.
    pub fn page(&self, cursor: Option<&str>, limit: usize) -> (Vec<String>, Option<String>) {
        let newest_first = self.jobs.iter().rev();
        let rest: Vec<&String> = match cursor {
            Some(c) => newest_first
                .skip_while(|j| j.as_str() != c)
                .skip(1)
                .collect(),
            None => newest_first.collect(),
        };
        let page: Vec<String> = rest.iter().take(limit).map(|j| (*j).clone()).collect();
        let next = (rest.len() > limit).then(|| page.last().cloned()).flatten();
        (page, next)
    }

    /// Applies grants not applied yet, or starts a new day's allowance; true when
    /// that changed anything.
    pub fn fund(&mut self, funding: &Funding) -> bool {
        match funding {
            Funding::Grants { grants } => {
                let mut changed = false;
                for g in grants {
                    if !self.applied_grants.contains(&g.id) {
                        self.applied_grants.push(g.id.clone());
                        self.balance += g.credits;
                        changed = true;
                    }
                }
                changed
            }
            Funding::Daily { day, allowance } => {
                if self.day.as_deref() == Some(day.as_str()) {
                    return false;
                }
                self.day = Some(day.clone());
                self.balance = *allowance;
                true
            }
        }
    }

    /// Whether `op` may change the state (reads need no write).
    pub fn writes(op: &Op) -> bool {
        !matches!(op, Op::Touch | Op::List { .. })
    }

    pub fn apply(&mut self, op: &Op, now_ms: u64) -> Outcome {
        match op {
            Op::Touch => Outcome::Ok,
            Op::Reserve {
                job_id,
                amount,
                idempotency_key,
            } => {
                self.idempotency
                    .retain(|_, (_, at)| now_ms.saturating_sub(*at) < IDEMPOTENCY_TTL_MS);
                if let Some(key) = idempotency_key
                    && let Some((job, _)) = self.idempotency.get(key)
                {
                    return Outcome::Replay {
                        job_id: job.clone(),
                    };
                }
                if self.charges.contains_key(job_id) {
                    return Outcome::Ok;
                }
                if self.balance < *amount {
                    return Outcome::Insufficient { needed: *amount };
                }
                self.balance -= amount;
                self.jobs.push(job_id.clone());
                if self.jobs.len() > MAX_LISTED {
                    self.jobs.remove(0);
                }
                self.charges.insert(
                    job_id.clone(),
                    Charge {
                        amount: *amount,
                        refunded: false,
                    },
                );
                if let Some(key) = idempotency_key {
                    self.idempotency
                        .insert(key.clone(), (job_id.clone(), now_ms));
                }
                Outcome::Ok
            }
            Op::List { .. } => Outcome::Ok,
            Op::Forget { job_id } => {
                self.jobs.retain(|j| j != job_id);
                Outcome::Ok
            }
            Op::Refund { job_id, credits } => {
                if let Some(c) = self.charges.get_mut(job_id)
                    && !c.refunded
                {
                    c.refunded = true;
                    self.balance += credits.map_or(c.amount, |n| n.min(c.amount));
                }
                Outcome::Ok
            }
        }
    }
}

/// Fixed one-minute windows per bucket. Kept in memory: if the object is evicted the
/// window restarts, which only ever errs towards letting a request through.
#[derive(Debug, Default)]
pub struct RateWindows {
    windows: HashMap<String, (u64, u32)>,
}

impl RateWindows {
    /// Counts a request; `Err(retry_after_secs)` when over the limit.
    pub fn check(&mut self, limit: &Limit, now_ms: u64) -> Result<(), u64> {
        let minute = now_ms / 60_000;
        let entry = self
            .windows
            .entry(limit.bucket.clone())
            .or_insert((minute, 0));
        if entry.0 != minute {
            *entry = (minute, 0);
        }
        if entry.1 >= limit.per_minute {
            let retry = 60 - (now_ms % 60_000) / 1000;
            return Err(retry.max(1));
        }
        entry.1 += 1;
        Ok(())
    }
}

const STATE: &str = "ledger";

#[durable_object]
pub struct Ledger {
    state: State,
    windows: RefCell<RateWindows>,
    /// The stored state, loaded once: this object is its only writer, so the copy in
    /// memory stays exact, and a read (`Touch`, `List`) costs no storage round trip.
    ledger: RefCell<Option<LedgerState>>,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ledger")
    }
}

impl DurableObject for Ledger {
    fn new(state: State, _env: Env) -> Self {
        Self {
            state,
            windows: RefCell::new(RateWindows::default()),
            ledger: RefCell::new(None),
        }
    }

    async fn fetch(&self, mut req: Request) -> worker::Result<Response> {
        let request: LedgerRequest = req.json().await?;
        let storage = self.state.storage();
        // (The borrow ends before the await: another request may run meanwhile.)
        let loaded = self.ledger.borrow().is_some();
        let stored = if loaded {
            None
        } else {
            storage.get::<LedgerState>(STATE).await?
        };
        // Applied in memory with no await in between, so concurrent requests see each
        // other's changes in order.
        let (reply, changed) = {
            let mut slot = self.ledger.borrow_mut();
            // A request that loaded it meanwhile may already have changed it: keep that.
            let ledger = slot.get_or_insert_with(|| stored.unwrap_or_default());
            let funded = ledger.fund(&request.funding);
            let limited = request
                .limit
                .as_ref()
                .and_then(|limit| self.windows.borrow_mut().check(limit, request.now_ms).err());
            let outcome = match limited {
                Some(retry_after_secs) => Outcome::RateLimited { retry_after_secs },
                None => ledger.apply(&request.op, request.now_ms),
            };
            let (jobs, next_cursor) = match &request.op {
                Op::List { cursor, limit } if outcome == Outcome::Ok => {
                    ledger.page(cursor.as_deref(), *limit)
                }
                _ => (Vec::new(), None),
            };
            let changed = (funded || LedgerState::writes(&request.op)).then(|| ledger.clone());
            let reply = LedgerReply {
                outcome,
                balance: ledger.balance(),
                jobs,
                next_cursor,
            };
            (reply, changed)
        };
        if let Some(ledger) = changed
            && let Err(e) = storage.put(STATE, &ledger).await
        {
            // Memory ran ahead of storage: forget it and reload next time.
            self.ledger.replace(None);
            return Err(e);
        }
        Ok(http::json(&reply, 200))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grants(list: &[(&str, u64)]) -> Funding {
        Funding::Grants {
            grants: list
                .iter()
                .map(|(id, credits)| Grant {
                    id: (*id).into(),
                    credits: *credits,
                })
                .collect(),
        }
    }

    fn reserve(job: &str, amount: u64, idem: Option<&str>) -> Op {
        Op::Reserve {
            job_id: job.into(),
            amount,
            idempotency_key: idem.map(str::to_owned),
        }
    }

    #[test]
    fn grants_apply_once_each() {
        let mut l = LedgerState::default();
        assert!(l.fund(&grants(&[("g1", 10)])));
        assert!(!l.fund(&grants(&[("g1", 10)])), "nothing new to store");
        assert_eq!(l.balance(), 10);
        assert!(l.fund(&grants(&[("g1", 10), ("g2", 5)])));
        assert_eq!(l.balance(), 15);
    }

    #[test]
    fn reserve_refund_is_exact_and_never_doubles() {
        let mut l = LedgerState::default();
        l.fund(&grants(&[("g", 10)]));
        assert_eq!(l.apply(&reserve("a", 4, None), 0), Outcome::Ok);
        assert_eq!(
            l.apply(&reserve("a", 4, None), 0),
            Outcome::Ok,
            "same job charged once"
        );
        assert_eq!(l.balance(), 6);
        assert_eq!(
            l.apply(&reserve("b", 7, None), 0),
            Outcome::Insufficient { needed: 7 }
        );
        assert_eq!(l.balance(), 6);
        l.apply(
            &Op::Refund {
                job_id: "a".into(),
                credits: None,
            },
            0,
        );
        l.apply(
            &Op::Refund {
                job_id: "a".into(),
                credits: None,
            },
            0,
        );
        l.apply(
            &Op::Refund {
                job_id: "never-charged".into(),
                credits: None,
            },
            0,
        );
        assert_eq!(l.balance(), 10);
    }

    #[test]
    fn an_idempotency_key_replays_its_job_for_a_day() {
        let mut l = LedgerState::default();
        l.fund(&grants(&[("g", 10)]));
        assert_eq!(l.apply(&reserve("a", 4, Some("k")), 0), Outcome::Ok);
        assert_eq!(
            l.apply(&reserve("b", 4, Some("k")), 1000),
            Outcome::Replay { job_id: "a".into() }
        );
        assert_eq!(l.balance(), 6);
        assert_eq!(
            l.apply(&reserve("c", 4, Some("k")), IDEMPOTENCY_TTL_MS + 1),
            Outcome::Ok
        );
        assert_eq!(l.balance(), 2);
    }

    #[test]
    fn the_daily_allowance_resets_each_day() {
        let mut l = LedgerState::default();
        let day = |d: &str| Funding::Daily {
            day: d.into(),
            allowance: 10,
        };
        assert!(l.fund(&day("2026-11-21")));
        l.apply(&reserve("a", 8, None), 0);
        assert!(!l.fund(&day("2026-11-21")));
        assert_eq!(l.balance(), 2);
        assert!(l.fund(&day("2026-11-22")));
        assert_eq!(l.balance(), 10);
    }

    #[test]
    fn only_changing_ops_are_written() {
        assert!(!LedgerState::writes(&Op::Touch));
        assert!(!LedgerState::writes(&Op::List {
            cursor: None,
            limit: 10
        }));
        assert!(LedgerState::writes(&reserve("a", 1, None)));
        assert!(LedgerState::writes(&Op::Refund {
            job_id: "a".into(),
            credits: None
        }));
        assert!(LedgerState::writes(&Op::Forget { job_id: "a".into() }));
    }

    #[test]
    fn jobs_are_listed_newest_first_in_pages() {
        let mut l = LedgerState::default();
        l.fund(&grants(&[("g", 100)]));
        for id in ["a", "b", "c", "d", "e"] {
            l.apply(&reserve(id, 1, None), 0);
        }
        assert_eq!(
            l.page(None, 2),
            (vec!["e".into(), "d".into()], Some("d".into()))
        );
        assert_eq!(
            l.page(Some("d"), 2),
            (vec!["c".into(), "b".into()], Some("b".into()))
        );
        assert_eq!(l.page(Some("b"), 2), (vec!["a".into()], None));
        l.apply(&Op::Forget { job_id: "c".into() }, 0);
        assert_eq!(
            l.page(Some("d"), 2).0,
            vec!["b".to_string(), "a".to_string()]
        );
        assert_eq!(l.page(Some("unknown"), 2).0, Vec::<String>::new());
    }

    #[test]
    fn rate_windows_limit_per_minute_and_say_when_to_retry() {
        let mut w = RateWindows::default();
        let limit = Limit {
            bucket: "submit".into(),
            per_minute: 2,
        };
        let t = 120_000 + 15_000;
        assert_eq!(w.check(&limit, t), Ok(()));
        assert_eq!(w.check(&limit, t), Ok(()));
        assert_eq!(w.check(&limit, t), Err(45));
        assert_eq!(w.check(&limit, 180_000), Ok(()), "next minute");
    }
}
