//! The `Ledger` Durable Object: reads the rows an operation needs, decides with the
//! pure rules, applies the writes in one `transactionSync`; its alarm reaps lost
//! starts.

use std::cell::{Cell, RefCell};

use serde::Deserialize;
use worker::{DurableObject, Env, Request, Response, SqlStorageValue, State, durable_object};

use super::legacy::*;
use super::protocol::*;
use super::rules::*;
use super::sql::*;
use crate::config::Config;
use crate::http;

#[durable_object(alarm)]
pub struct Ledger {
    state: State,
    env: Env,
    /// A job's retention: a runner without a record for a younger job never had one.
    retention_ms: u64,
    windows: RefCell<RateWindows>,
    /// Leases of held reads (`crate::holds`): in memory, as the rate windows.
    leases: RefCell<crate::holds::Leases>,
    /// The schema exists and any legacy value was imported (checked once per
    /// instance).
    ready: Cell<bool>,
    /// How long a charge row is kept: the job's deadline and retention, plus a margin.
    keep_charges_ms: u64,
    /// How long after its charge a job may still be settled: its deadline, plus a
    /// margin for the runner's outbox (see [`job_entry`]).
    open_ms: u64,
    dev_ops: bool,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ledger")
    }
}

impl DurableObject for Ledger {
    fn new(state: State, env: Env) -> Self {
        crate::meter::init(&env);
        let cfg = Config::from_env(&env);
        let dev_ops = env
            .var("LEDGER_DEV_OPS")
            .map(|v| v.to_string() == "on")
            .unwrap_or(false);
        Self {
            state,
            env,
            retention_ms: cfg.retention_secs * 1000,
            windows: RefCell::new(RateWindows::default()),
            leases: RefCell::new(crate::holds::Leases::default()),
            ready: Cell::new(false),
            keep_charges_ms: (cfg.retention_secs + cfg.job_deadline_secs) * 1000 + CHARGE_MARGIN_MS,
            open_ms: cfg.job_deadline_secs * 1000 + CHARGE_MARGIN_MS,
            dev_ops,
        }
    }

    async fn fetch(&self, mut req: Request) -> worker::Result<Response> {
        let _request = crate::meter::DoRequest::start();
        let request: LedgerRequest = req.json().await?;
        let storage = self.state.storage();
        let db = Db {
            sql: storage.sql(),
            storage,
        };
        if matches!(
            request.op,
            Op::DevSeed { .. } | Op::DevLegacy { .. } | Op::DevStats | Op::DevReserve { .. }
        ) {
            if !self.dev_ops {
                return Ok(http::json(&serde_json::json!({"error": "no dev ops"}), 404));
            }
            return self.dev(&db, request).await;
        }
        // Memory only: no row is read or written for it.
        if let Op::Unhold { id } = &request.op {
            self.leases.borrow_mut().give_back(id);
            return Ok(http::json(&reply(Outcome::Ok, 0), 200));
        }
        if !self.ready.get() {
            self.prepare(&db, request.now_ms).await?;
        }
        let reply = self.run(&db, &request)?;
        if let Op::Reserve {
            idempotency_key: Some(_),
            ..
        } = &request.op
            && reply.outcome == Outcome::Ok
        {
            self.arm_reaper(request.now_ms + PENDING_TTL_MS).await?;
        }
        Ok(http::json(&reply, 200))
    }

    /// The reaper: starts whose pending key lapsed without a Confirm or Release (the
    /// submit handler's inline tries all failed, or it died) are settled by asking the
    /// job's runner whether the job exists (see [`reap`]).
    async fn alarm(&self) -> worker::Result<Response> {
        let _request = crate::meter::DoRequest::start();
        let storage = self.state.storage();
        let db = Db {
            sql: storage.sql(),
            storage,
        };
        let now = worker::Date::now().as_millis();
        if !self.ready.get() {
            self.prepare(&db, now).await?;
        }
        let due: Vec<StartRow> = db.rows(
            "SELECT job_id, idem_key, expires_ms FROM starts WHERE expires_ms <= ?
             ORDER BY expires_ms LIMIT ?",
            vec![int(now), int(REAP_BATCH)],
        )?;
        for start in due {
            let started = match self.runner_has(&start.job_id).await {
                Ok(started) => started,
                Err(e) => {
                    worker::console_warn!(
                        "ledger: reaping {}: runner not reached: {e}",
                        start.job_id
                    );
                    // Asked again later, not at once.
                    db.apply(vec![Write {
                        query: "UPDATE starts SET expires_ms = ? WHERE job_id = ?",
                        args: vec![int(now + REAP_RETRY_MS), text(&start.job_id)],
                    }])?;
                    continue;
                }
            };
            // No await from here to the writes: the rows read are the rows changed.
            let listed = db
                .rows::<ListedRow>(
                    "SELECT listed FROM charges WHERE job_id = ?",
                    vec![text(&start.job_id)],
                )?
                .first()
                .is_some_and(|r| r.listed == 1);
            let charge = db.charge(&start.job_id)?;
            let decision = reap(started, charge.as_ref(), listed, now, self.retention_ms);
            worker::console_warn!(
                "ledger: start of {} neither confirmed nor released: {decision:?}",
                start.job_id
            );
            let stored = db.account()?.unwrap_or_default();
            let mut account = stored.clone();
            let mut writes = match decision {
                Reap::Confirm => confirm_writes(&start.job_id, &start.idem_key, now),
                Reap::Release => {
                    release_writes(&db, &mut account, &start.job_id, Some(&start.idem_key), now)?
                }
                Reap::Forget => vec![
                    Write {
                        query: DROP_KEY,
                        args: vec![text(&start.idem_key), text(&start.job_id)],
                    },
                    Write {
                        query: DROP_START,
                        args: vec![text(&start.job_id)],
                    },
                ],
            };
            if account != stored {
                writes.insert(0, set_account(&account));
            }
            db.apply(writes)?;
        }
        let next = db
            .rows::<NextRow>("SELECT MIN(expires_ms) AS next FROM starts", vec![])?
            .first()
            .and_then(|r| r.next);
        if let Some(next) = next {
            self.state
                .storage()
                .set_alarm(alarm_offset(next.max(now), now))
                .await?;
        }
        Response::ok("reaped")
    }
}

pub(super) fn alarm_offset(at_ms: u64, now_ms: u64) -> i64 {
    i64::try_from(at_ms.saturating_sub(now_ms)).unwrap_or(i64::MAX)
}

#[derive(Debug, Deserialize)]
pub(super) struct StartRow {
    job_id: String,
    idem_key: String,
    #[allow(dead_code)]
    expires_ms: u64,
}

#[derive(Debug, Deserialize)]
pub(super) struct ListedRow {
    listed: u64,
}

#[derive(Debug, Deserialize)]
pub(super) struct NextRow {
    next: Option<u64>,
}

impl Ledger {
    /// Sets the alarm to `at_ms` unless it is set earlier already.
    async fn arm_reaper(&self, at_ms: u64) -> worker::Result<()> {
        let storage = self.state.storage();
        let now = worker::Date::now().as_millis();
        if let Some(set) = storage.get_alarm().await?
            && (set as u64) <= at_ms
        {
            return Ok(());
        }
        storage.set_alarm(alarm_offset(at_ms, now)).await
    }

    /// Whether job `job_id`'s runner has a record (`Err`: it could not be asked).
    async fn runner_has(&self, job_id: &str) -> worker::Result<Started> {
        // `/abandon`, not `/state`: without a record the runner also refuses a late
        // `/start` from then on, so its "no such job" stays true.
        // The runner's `/abandon` (`objects/runner/protocol.rs` `route::ABANDON`).
        let req = http::internal_request("/abandon", Some(&()))?;
        let mut resp = self
            .env
            .durable_object(crate::bindings::JOB_RUNNER)?
            .id_from_name(job_id)?
            .get_stub()?
            .fetch_with_request(req)
            .await?;
        match resp.status_code() {
            200 => Ok(Started::Yes),
            // The runner's 404: "no such job" (no record; now tombstoned).
            404 => Ok(match resp.json::<String>().await?.as_str() {
                "no such job" => Started::No,
                _ => Started::Yes,
            }),
            other => Err(worker::Error::RustError(format!("runner answered {other}"))),
        }
    }

    /// Creates the tables, and imports a pre-rows account once (then deletes its
    /// value). The import's writes are one transaction; its check runs after the
    /// only await, so two first requests cannot both import.
    async fn prepare(&self, db: &Db, now_ms: u64) -> worker::Result<()> {
        for statement in SCHEMA {
            metered(&db.sql.exec(statement, None)?);
        }
        db.migrate()?;
        if db.account()?.is_some() {
            self.ready.set(true);
            return Ok(());
        }
        crate::meter::count(crate::meter::Op::RowsRead, 1);
        let legacy = db.storage.get::<LegacyState>(LEGACY_KEY).await?;
        if db.account()?.is_none() {
            let import = import(legacy.clone().unwrap_or_default(), now_ms);
            db.apply(import_writes(&import))?;
        }
        if legacy.is_some() {
            db.storage.delete(LEGACY_KEY).await?;
        }
        self.ready.set(true);
        Ok(())
    }

    /// One operation: reads, the rules, and its writes in one transaction. No await.
    fn run(&self, db: &Db, request: &LedgerRequest) -> worker::Result<LedgerReply> {
        let now = request.now_ms;
        let stored = db.account()?.unwrap_or_default();
        // The day of a daily allowance is this object's, from its own clock: a request
        // may have waited (a slow body) since the Worker read its clock.
        let own_now = worker::Date::now().as_millis();
        let (account, new_grants) = fund(
            &stored,
            &request.funding,
            &|id| db.grant_applied(id),
            own_now,
        );
        let mut writes = Vec::new();
        for g in &new_grants {
            writes.push(Write {
                query: ADD_GRANT,
                args: vec![text(&g.id), int(g.credits), int(now)],
            });
        }
        let mut account = account;
        let limited = request
            .limit
            .as_ref()
            .and_then(|limit| self.windows.borrow_mut().check(limit, now).err());
        let mut out = reply(Outcome::Ok, 0);
        if let Some(retry_after_secs) = limited {
            out.outcome = Outcome::RateLimited { retry_after_secs };
        } else {
            if let Some(hold) = &request.hold {
                out.held = self
                    .leases
                    .borrow_mut()
                    .take(&hold.id, hold.until_ms, hold.max, now);
            }
            match &request.op {
                Op::Touch | Op::Unhold { .. } => {}
                Op::Precheck {
                    amount,
                    idempotency_key,
                } => {
                    let live = match idempotency_key {
                        Some(key) => db.key(key)?.filter(|row| row.expires_ms > now),
                        None => None,
                    };
                    let known = live.is_some();
                    out.key_fingerprint = live.map(|row| row.fingerprint).filter(|f| !f.is_empty());
                    if !known && account.balance < *amount {
                        out.outcome = Outcome::Insufficient { needed: *amount };
                    }
                }
                Op::Reserve {
                    job_id,
                    amount,
                    idempotency_key,
                    fingerprint,
                    model,
                } => {
                    let check = match idempotency_key {
                        Some(key) => {
                            let row = db.key(key)?;
                            let unsettled = match &row {
                                Some(r) if r.state == KeyState::Pending => {
                                    db.start_exists(&r.job_id)?
                                }
                                _ => false,
                            };
                            check_key(row.as_ref(), fingerprint, now, unsettled)
                        }
                        None => KeyCheck::Fresh,
                    };
                    match check {
                        KeyCheck::Reused => out.outcome = Outcome::KeyReused,
                        KeyCheck::InProgress => {
                            out.outcome = Outcome::InProgress {
                                retry_after_secs: IN_PROGRESS_RETRY_SECS,
                            }
                        }
                        KeyCheck::Replay(job_id) => out.outcome = Outcome::Replay { job_id },
                        KeyCheck::Fresh if db.charge(job_id)?.is_some() => {}
                        KeyCheck::Fresh if account.balance < *amount => {
                            out.outcome = Outcome::Insufficient { needed: *amount };
                        }
                        KeyCheck::Fresh => {
                            account.balance -= amount;
                            writes.push(Write {
                                query: ADD_CHARGE,
                                args: vec![
                                    text(job_id),
                                    int(*amount),
                                    SqlStorageValue::Null,
                                    // The allowance's day is renewed on this clock, so
                                    // the charge is dated on it too (`plan_settle`
                                    // compares the two).
                                    int(own_now),
                                    int(1),
                                    model
                                        .map(|m| text(m.slug()))
                                        .unwrap_or(SqlStorageValue::Null),
                                    SqlStorageValue::Null,
                                ],
                            });
                            if let Some(key) = idempotency_key {
                                writes.extend(pending_writes(
                                    key,
                                    fingerprint,
                                    job_id,
                                    now + PENDING_TTL_MS,
                                ));
                            }
                            writes.push(Write {
                                query: PRUNE_KEYS,
                                args: vec![int(now), int(PRUNE_BATCH)],
                            });
                            writes.push(Write {
                                query: PRUNE_CHARGES,
                                args: vec![
                                    int(now.saturating_sub(self.keep_charges_ms)),
                                    int(PRUNE_BATCH),
                                ],
                            });
                        }
                    }
                }
                Op::Confirm {
                    job_id,
                    idempotency_key,
                } => writes.extend(confirm_writes(job_id, idempotency_key, now)),
                Op::Release {
                    job_id,
                    idempotency_key,
                } => writes.extend(release_writes(
                    db,
                    &mut account,
                    job_id,
                    idempotency_key.as_deref(),
                    now,
                )?),
                Op::Refund { job_id, credits } => {
                    if let Some(charge) = db.charge(job_id)?
                        && let Some(plan) = plan_refund(&charge, *credits, &account)
                    {
                        account.balance = account.balance.saturating_add(plan.credited);
                        writes.push(Write {
                            query: SET_REFUNDED,
                            args: vec![int(plan.recorded), text(job_id)],
                        });
                    }
                    writes.extend(settled_start_writes(job_id, now));
                }
                Op::Settle {
                    job_id,
                    credits,
                    reason,
                } => {
                    let charge = db.charge(job_id)?;
                    if charge.is_none() {
                        // Nothing to settle against: refused (no credit given), logged.
                        worker::console_error!(
                            "ledger: settle of {job_id} without a charge: refused"
                        );
                    }
                    if let Some(charge) = charge {
                        match plan_settle(&charge, *credits, &account) {
                            Some(plan) => {
                                account.balance = account.balance.saturating_add(plan.credited);
                                writes.push(Write {
                                    query: SETTLE,
                                    args: vec![
                                        int(plan.recorded),
                                        text(reason.as_str()),
                                        int(now),
                                        text(job_id),
                                    ],
                                });
                            }
                            None => writes.push(Write {
                                query: SETTLE_REASON,
                                args: vec![text(reason.as_str()), int(now), text(job_id)],
                            }),
                        }
                    }
                    writes.extend(settled_start_writes(job_id, now));
                }
                Op::History { cursor, limit } => {
                    let cursor = cursor.as_deref().and_then(EntryKey::parse);
                    let charges = db.history_charges(cursor, *limit)?;
                    let grants = db.history_grants()?;
                    let (entries, next) =
                        history_page(&charges, &grants, cursor, *limit, now, self.open_ms);
                    out.entries = entries;
                    out.next_cursor = next;
                }
                Op::Charge { job_id } => {
                    out.charge = db.charge(job_id)?.map(|c| ChargeInfo {
                        charged: c.credits,
                        refunded: c.refunded,
                    });
                }
                Op::List { cursor, limit } => {
                    let (jobs, next) = db.page(cursor.as_deref(), *limit)?;
                    out.jobs = jobs;
                    out.next_cursor = next;
                }
                Op::Forget { job_id } => {
                    writes.push(Write {
                        query: UNLIST,
                        args: vec![text(job_id)],
                    });
                    writes.extend(settled_start_writes(job_id, now));
                }
                Op::DevSeed { .. }
                | Op::DevLegacy { .. }
                | Op::DevStats
                | Op::DevReserve { .. } => {}
            }
        }
        if account != stored || db.account()?.is_none() {
            writes.insert(0, set_account(&account));
        }
        db.apply(writes)?;
        out.balance = account.balance;
        Ok(out)
    }

    /// The dev/bench stacks' operations (`LEDGER_DEV_OPS=on` only).
    async fn dev(&self, db: &Db, request: LedgerRequest) -> worker::Result<Response> {
        for statement in SCHEMA {
            db.sql.exec(statement, None)?;
        }
        db.migrate()?;
        let now = request.now_ms;
        match request.op {
            Op::DevSeed { jobs } => {
                // A distinct id range per call, so seeding twice adds twice.
                let batch = now % 1_000_000;
                db.apply(vec![
                    Write {
                        query: SEED,
                        args: vec![int(jobs), int(batch), int(now)],
                    },
                    Write {
                        query: SEED_KEYS,
                        args: vec![
                            int(jobs),
                            int(batch),
                            int(batch),
                            int(now + IDEMPOTENCY_TTL_MS),
                        ],
                    },
                ])?;
            }
            Op::DevReserve {
                job_id,
                amount,
                idempotency_key,
                pending_ms,
                age_ms,
            } => {
                if !self.ready.get() {
                    self.prepare(db, now).await?;
                }
                let mut account = db.account()?.unwrap_or_default();
                account.balance = account.balance.saturating_sub(amount);
                let mut writes = vec![
                    set_account(&account),
                    Write {
                        query: ADD_CHARGE,
                        args: vec![
                            text(&job_id),
                            int(amount),
                            SqlStorageValue::Null,
                            int(now.saturating_sub(age_ms)),
                            int(1),
                            SqlStorageValue::Null,
                            SqlStorageValue::Null,
                        ],
                    },
                ];
                writes.extend(pending_writes(
                    &idempotency_key,
                    "dev",
                    &job_id,
                    now + pending_ms,
                ));
                db.apply(writes)?;
                self.arm_reaper(now + pending_ms).await?;
            }
            Op::DevLegacy { mut state } => {
                if let Funding::Grants { grants } = &request.funding {
                    state.applied_grants = grants.iter().map(|g| g.id.clone()).collect();
                }
                db.apply(vec![
                    Write {
                        query: "DELETE FROM account",
                        args: vec![],
                    },
                    Write {
                        query: "DELETE FROM grants",
                        args: vec![],
                    },
                    Write {
                        query: "DELETE FROM charges",
                        args: vec![],
                    },
                    Write {
                        query: "DELETE FROM idempotency",
                        args: vec![],
                    },
                ])?;
                db.storage.put(LEGACY_KEY, &state).await?;
                self.ready.set(false);
            }
            _ => {}
        }
        let legacy_stored = db.storage.get::<LegacyState>(LEGACY_KEY).await?.is_some();
        let mut out = reply(Outcome::Ok, db.account()?.map_or(0, |a| a.balance));
        out.stats = Some(Stats {
            size_bytes: db.sql.database_size() as u64,
            charges: db.count("charges")?,
            keys: db.count("idempotency")?,
            legacy_stored,
        });
        Ok(http::json(&out, 200))
    }
}
