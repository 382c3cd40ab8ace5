//! The Ledger's SQLite schema, its statements, and the writes each decision makes.

use serde::Deserialize;
use worker::{SqlStorage, SqlStorageValue};

use parallax_api::Settlement;

use super::protocol::*;
use super::rules::*;

/// One statement and its bindings.
#[derive(Debug, Clone)]
pub(super) struct Write {
    pub(super) query: &'static str,
    pub(super) args: Vec<SqlStorageValue>,
}

pub(super) fn int(n: u64) -> SqlStorageValue {
    // Credits and milliseconds stay far below 2^53.
    SqlStorageValue::Integer(i64::try_from(n).unwrap_or(i64::MAX))
}

pub(super) fn text(s: &str) -> SqlStorageValue {
    SqlStorageValue::String(s.to_owned())
}

pub(super) const SCHEMA: [&str; 8] = [
    "CREATE TABLE IF NOT EXISTS account (
        id INTEGER PRIMARY KEY CHECK (id = 0),
        balance INTEGER NOT NULL,
        day TEXT,
        day_started_ms INTEGER NOT NULL DEFAULT 0)",
    "CREATE TABLE IF NOT EXISTS grants (
        id TEXT PRIMARY KEY,
        credits INTEGER NOT NULL,
        applied_ms INTEGER)",
    // `seq` orders the job list; `listed = 0` once the job was deleted (the row stays
    // so a refund still finds it, a cursor naming it still resolves, and the credit
    // history still shows it). `reason` and `settled_ms`: the job's end, once its
    // runner settled it.
    "CREATE TABLE IF NOT EXISTS charges (
        seq INTEGER PRIMARY KEY,
        job_id TEXT NOT NULL UNIQUE,
        credits INTEGER NOT NULL,
        refunded INTEGER,
        created_ms INTEGER NOT NULL,
        listed INTEGER NOT NULL DEFAULT 1,
        model TEXT,
        reason TEXT,
        settled_ms INTEGER)",
    "CREATE INDEX IF NOT EXISTS charges_by_age ON charges (created_ms)",
    "CREATE TABLE IF NOT EXISTS idempotency (
        idem_key TEXT PRIMARY KEY,
        fingerprint TEXT NOT NULL,
        job_id TEXT NOT NULL,
        state TEXT NOT NULL,
        expires_ms INTEGER NOT NULL)",
    "CREATE INDEX IF NOT EXISTS idempotency_by_expiry ON idempotency (expires_ms)",
    // Starts under an idempotency key not yet confirmed or released: the alarm reaps
    // those whose pending key lapsed (a lost Confirm or Release).
    "CREATE TABLE IF NOT EXISTS starts (
        job_id TEXT PRIMARY KEY,
        idem_key TEXT NOT NULL,
        expires_ms INTEGER NOT NULL)",
    "CREATE INDEX IF NOT EXISTS starts_by_expiry ON starts (expires_ms)",
];

/// Columns added after the first release, for databases created before them: (table,
/// column, its `ALTER TABLE`, what to write into the rows that existed then). Each is
/// applied only when a probe finds the column missing, in one transaction with its
/// back-fill.
pub(super) const MIGRATIONS: [(&str, &str, &str, Option<&str>); 4] = [
    (
        "grants",
        "applied_ms",
        "ALTER TABLE grants ADD COLUMN applied_ms INTEGER",
        None,
    ),
    (
        "charges",
        "model",
        "ALTER TABLE charges ADD COLUMN model TEXT",
        None,
    ),
    (
        "charges",
        "reason",
        "ALTER TABLE charges ADD COLUMN reason TEXT",
        // Their jobs' ends were never recorded (see `job_entry`).
        Some("UPDATE charges SET reason = 'legacy'"),
    ),
    (
        "charges",
        "settled_ms",
        "ALTER TABLE charges ADD COLUMN settled_ms INTEGER",
        None,
    ),
];

pub(super) const SET_ACCOUNT: &str =
    "INSERT INTO account (id, balance, day, day_started_ms) VALUES (0, ?, ?, ?)
     ON CONFLICT (id) DO UPDATE SET balance = excluded.balance, day = excluded.day,
     day_started_ms = excluded.day_started_ms";
pub(super) const ADD_GRANT: &str =
    "INSERT OR IGNORE INTO grants (id, credits, applied_ms) VALUES (?, ?, ?)";
pub(super) const ADD_CHARGE: &str =
    "INSERT INTO charges (job_id, credits, refunded, created_ms, listed, model, reason)
     VALUES (?, ?, ?, ?, ?, ?, ?)";
pub(super) const SET_REFUNDED: &str =
    "UPDATE charges SET refunded = ? WHERE job_id = ? AND refunded IS NULL";
/// A settlement: the refund (as planned by `plan_settle`), and the first real reason.
pub(super) const SETTLE: &str = "UPDATE charges SET refunded = ?,
     reason = CASE WHEN reason IS NULL OR reason = 'legacy' THEN ? ELSE reason END,
     settled_ms = COALESCE(settled_ms, ?) WHERE job_id = ?";
/// A settlement that changes no credits still records the first real reason.
pub(super) const SETTLE_REASON: &str =
    "UPDATE charges SET reason = ?, settled_ms = COALESCE(settled_ms, ?)
     WHERE job_id = ? AND (reason IS NULL OR reason = 'legacy')";
pub(super) const UNLIST: &str = "UPDATE charges SET listed = 0 WHERE job_id = ?";
pub(super) const PUT_KEY: &str =
    "INSERT OR REPLACE INTO idempotency (idem_key, fingerprint, job_id, state, expires_ms)
     VALUES (?, ?, ?, ?, ?)";
pub(super) const CONFIRM_KEY: &str = "UPDATE idempotency SET state = 'confirmed', expires_ms = ?
     WHERE idem_key = ? AND job_id = ? AND state = 'pending'";
pub(super) const DROP_KEY: &str =
    "DELETE FROM idempotency WHERE idem_key = ? AND job_id = ? AND state = 'pending'";
pub(super) const ADD_START: &str =
    "INSERT OR REPLACE INTO starts (job_id, idem_key, expires_ms) VALUES (?, ?, ?)";
pub(super) const DROP_START: &str = "DELETE FROM starts WHERE job_id = ?";
/// A job's own runner spoke of it (a refund, a delete): it exists, so its start is
/// settled and a key still pending for it replays it.
pub(super) const CONFIRM_KEY_OF_JOB: &str =
    "UPDATE idempotency SET state = 'confirmed', expires_ms = ?
     WHERE job_id = ? AND state = 'pending'";
/// How many lapsed starts one alarm reaps (each asks a runner); the rest next time.
pub const REAP_BATCH: u64 = 16;
/// The reaper tries again this long after a runner could not be asked.
pub const REAP_RETRY_MS: u64 = 30_000;
/// Expired keys, except a pending one whose start the reaper has not decided yet.
pub(super) const PRUNE_KEYS: &str = "DELETE FROM idempotency WHERE idem_key IN
     (SELECT idem_key FROM idempotency WHERE expires_ms <= ?
        AND NOT (state = 'pending' AND job_id IN (SELECT job_id FROM starts))
      ORDER BY expires_ms LIMIT ?)";
/// Only settled charges (a recorded end, or a refund recorded before settlements
/// were): a charge whose settlement has not arrived yet is kept until it does, so a
/// late settlement still finds it.
pub(super) const PRUNE_CHARGES: &str = "DELETE FROM charges WHERE seq IN
     (SELECT seq FROM charges WHERE created_ms < ?
        AND (reason IS NOT NULL OR refunded IS NOT NULL)
      ORDER BY created_ms LIMIT ?)";
pub(super) const SEED: &str =
    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?)
     INSERT OR IGNORE INTO charges (job_id, credits, refunded, created_ms, listed, reason)
     SELECT printf('seed-%d-%08d', ?, i), 2, CASE WHEN i % 10 = 0 THEN 2 ELSE 0 END, ?, 1,
            CASE WHEN i % 10 = 0 THEN 'failed' ELSE 'completed' END FROM n";
pub(super) const SEED_KEYS: &str =
    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?)
     INSERT OR IGNORE INTO idempotency (idem_key, fingerprint, job_id, state, expires_ms)
     SELECT printf('seed-key-%d-%08d', ?, i), 'f', printf('seed-%d-%08d', ?, i), 'confirmed', ?
     FROM n";

#[derive(Debug, Deserialize)]
pub(super) struct JobIdRow {
    job_id: String,
}

#[derive(Debug, Deserialize)]
pub(super) struct SeqRow {
    seq: u64,
}

#[derive(Debug, Deserialize)]
pub(super) struct CountRow {
    n: u64,
}

/// Counts a finished cursor's rows for the bench's operations meter.
pub(super) fn metered(cursor: &worker::SqlCursor) {
    crate::meter::count(crate::meter::Op::RowsRead, cursor.rows_read());
    crate::meter::count(crate::meter::Op::RowsWritten, cursor.rows_written());
}

/// The account's database: synchronous reads, and writes applied atomically.
pub(super) struct Db {
    pub(super) sql: SqlStorage,
    pub(super) storage: worker::Storage,
}

impl Db {
    pub(super) fn rows<T: serde::de::DeserializeOwned>(
        &self,
        query: &str,
        args: Vec<SqlStorageValue>,
    ) -> worker::Result<Vec<T>> {
        let cursor = self.sql.exec(query, args)?;
        let rows = cursor.to_array();
        metered(&cursor);
        rows
    }

    pub(super) fn account(&self) -> worker::Result<Option<AccountRow>> {
        Ok(self
            .rows(
                "SELECT balance, day, day_started_ms FROM account WHERE id = 0",
                vec![],
            )?
            .into_iter()
            .next())
    }

    pub(super) fn charge(&self, job_id: &str) -> worker::Result<Option<ChargeRow>> {
        Ok(self
            .rows(
                "SELECT job_id, credits, refunded, created_ms FROM charges WHERE job_id = ?",
                vec![text(job_id)],
            )?
            .into_iter()
            .next())
    }

    pub(super) fn key(&self, key: &str) -> worker::Result<Option<KeyRow>> {
        Ok(self
            .rows(
                "SELECT idem_key, fingerprint, job_id, state, expires_ms FROM idempotency
                 WHERE idem_key = ?",
                vec![text(key)],
            )?
            .into_iter()
            .next())
    }

    /// Whether a start is still waiting for its Confirm, Release or the reaper.
    pub(super) fn start_exists(&self, job_id: &str) -> worker::Result<bool> {
        Ok(self
            .rows::<CountRow>(
                "SELECT COUNT(*) AS n FROM starts WHERE job_id = ?",
                vec![text(job_id)],
            )?
            .first()
            .is_some_and(|c| c.n > 0))
    }

    pub(super) fn grant_applied(&self, id: &str) -> bool {
        self.rows::<CountRow>(
            "SELECT COUNT(*) AS n FROM grants WHERE id = ?",
            vec![text(id)],
        )
        .ok()
        .and_then(|r| r.first().map(|c| c.n > 0))
        .unwrap_or(false)
    }

    pub(super) fn count(&self, table: &str) -> worker::Result<u64> {
        let query = match table {
            "charges" => "SELECT COUNT(*) AS n FROM charges",
            _ => "SELECT COUNT(*) AS n FROM idempotency",
        };
        Ok(self
            .rows::<CountRow>(query, vec![])?
            .first()
            .map_or(0, |c| c.n))
    }

    /// Up to `limit` listed job ids after `cursor`, newest first, and the next cursor.
    pub(super) fn page(
        &self,
        cursor: Option<&str>,
        limit: usize,
    ) -> worker::Result<(Vec<String>, Option<String>)> {
        let before = match cursor {
            None => i64::MAX as u64,
            Some(c) => match self
                .rows::<SeqRow>("SELECT seq FROM charges WHERE job_id = ?", vec![text(c)])?
                .first()
            {
                Some(row) => row.seq,
                None => return Ok((Vec::new(), None)),
            },
        };
        let rows: Vec<JobIdRow> = self.rows(
            "SELECT job_id FROM charges WHERE listed = 1 AND seq < ? ORDER BY seq DESC LIMIT ?",
            vec![int(before), int(limit as u64 + 1)],
        )?;
        let mut ids: Vec<String> = rows.into_iter().map(|r| r.job_id).collect();
        let more = ids.len() > limit;
        ids.truncate(limit);
        let next = if more { ids.last().cloned() } else { None };
        Ok((ids, next))
    }

    /// Adds the columns of [`MIGRATIONS`] a database created before them lacks, each
    /// with its back-fill in one transaction. A column is probed by selecting it (an
    /// error: it is missing), which needs no access to SQLite's own tables.
    pub(super) fn migrate(&self) -> worker::Result<()> {
        for (table, column, alter, fill) in MIGRATIONS {
            if self
                .sql
                .exec(&format!("SELECT {column} FROM {table} LIMIT 0"), None)
                .is_ok()
            {
                continue;
            }
            let mut writes = vec![Write {
                query: alter,
                args: vec![],
            }];
            writes.extend(fill.map(|query| Write {
                query,
                args: vec![],
            }));
            self.apply(writes)?;
        }
        Ok(())
    }

    /// Up to `limit + 1` charges before `cursor`, newest first (by the `charges_by_age`
    /// index, whose entries end with the row id `seq`).
    pub(super) fn history_charges(
        &self,
        cursor: Option<EntryKey>,
        limit: usize,
    ) -> worker::Result<Vec<HistoryCharge>> {
        let (at, rank, row) = match cursor {
            Some(c) => (c.at_ms, c.rank, c.row),
            None => (i64::MAX as u64, 1, i64::MAX as u64),
        };
        // A job (rank 1) sorts before a grant (rank 0) of the same millisecond: after
        // a grant's cursor, that millisecond's jobs are all on earlier pages.
        let row = if rank == 0 { 0 } else { row };
        self.rows(
            "SELECT seq, job_id, credits, refunded, created_ms, listed, model, reason, settled_ms
             FROM charges WHERE (created_ms, seq) < (?, ?)
             ORDER BY created_ms DESC, seq DESC LIMIT ?",
            vec![int(at), int(row), int(limit as u64 + 1)],
        )
    }

    /// The account's grants (a few rows: the operator's), without those imported with
    /// no amount.
    pub(super) fn history_grants(&self) -> worker::Result<Vec<HistoryGrant>> {
        self.rows(
            "SELECT rowid AS row, id, credits, applied_ms FROM grants WHERE credits > 0",
            vec![],
        )
    }

    /// Runs the writes in one `transactionSync`: all of them or none.
    pub(super) fn apply(&self, writes: Vec<Write>) -> worker::Result<()> {
        use worker::wasm_bindgen::JsCast;
        use worker::wasm_bindgen::JsValue;
        use worker::wasm_bindgen::closure::Closure;
        if writes.is_empty() {
            return Ok(());
        }
        let sql = self.sql.clone();
        let run = move || -> Result<JsValue, JsValue> {
            for w in writes {
                let cursor = sql
                    .exec(w.query, w.args)
                    .map_err(|e| JsValue::from_str(&e.to_string()))?;
                for row in cursor.raw() {
                    row.map_err(|e| JsValue::from_str(&e.to_string()))?;
                }
                metered(&cursor);
            }
            Ok(JsValue::UNDEFINED)
        };
        let raw: &JsValue = self.storage.as_raw();
        let transaction = js_sys::Reflect::get(raw, &JsValue::from_str("transactionSync"))
            .ok()
            .and_then(|f| f.dyn_into::<js_sys::Function>().ok())
            .ok_or_else(|| worker::Error::RustError("no storage.transactionSync".into()))?;
        transaction
            .call1(raw, &Closure::once_into_js(run))
            .map(|_| ())
            .map_err(worker::Error::from)
    }
}

/// A pending key and its start, reaped if neither confirmed nor released by `expires_ms`.
pub(super) fn pending_writes(
    key: &str,
    fingerprint: &str,
    job_id: &str,
    expires_ms: u64,
) -> Vec<Write> {
    vec![
        put_key(&KeyRow {
            key: key.to_owned(),
            fingerprint: fingerprint.to_owned(),
            job_id: job_id.to_owned(),
            state: KeyState::Pending,
            expires_ms,
        }),
        Write {
            query: ADD_START,
            args: vec![text(job_id), text(key), int(expires_ms)],
        },
    ]
}

/// The job exists: its key replays it from now on.
/// The runner of `job_id` reported on it (refund, delete): a start still waiting for
/// its Confirm is settled as started, so the reaper never takes a later "no record"
/// (the job purged) for "never started" and refunds a job that ran.
pub(super) fn settled_start_writes(job_id: &str, now_ms: u64) -> Vec<Write> {
    vec![
        Write {
            query: CONFIRM_KEY_OF_JOB,
            args: vec![int(now_ms + IDEMPOTENCY_TTL_MS), text(job_id)],
        },
        Write {
            query: DROP_START,
            args: vec![text(job_id)],
        },
    ]
}

pub(super) fn confirm_writes(job_id: &str, key: &str, now_ms: u64) -> Vec<Write> {
    vec![
        Write {
            query: CONFIRM_KEY,
            args: vec![int(now_ms + IDEMPOTENCY_TTL_MS), text(key), text(job_id)],
        },
        Write {
            query: DROP_START,
            args: vec![text(job_id)],
        },
    ]
}

/// The job was never started: refunded in full (once), settled as such, unlisted, its
/// key dropped.
pub(super) fn release_writes(
    db: &Db,
    account: &mut AccountRow,
    job_id: &str,
    key: Option<&str>,
    now_ms: u64,
) -> worker::Result<Vec<Write>> {
    let mut writes = Vec::new();
    if let Some(charge) = db.charge(job_id)?
        && let Some(plan) = plan_refund(&charge, None, account)
    {
        account.balance = account.balance.saturating_add(plan.credited);
        writes.push(Write {
            query: SET_REFUNDED,
            args: vec![int(plan.recorded), text(job_id)],
        });
    }
    writes.push(Write {
        query: SETTLE_REASON,
        args: vec![
            text(Settlement::NotStarted.as_str()),
            int(now_ms),
            text(job_id),
        ],
    });
    writes.push(Write {
        query: UNLIST,
        args: vec![text(job_id)],
    });
    if let Some(key) = key {
        writes.push(Write {
            query: DROP_KEY,
            args: vec![text(key), text(job_id)],
        });
    }
    writes.push(Write {
        query: DROP_START,
        args: vec![text(job_id)],
    });
    Ok(writes)
}

pub(super) fn put_key(k: &KeyRow) -> Write {
    Write {
        query: PUT_KEY,
        args: vec![
            text(&k.key),
            text(&k.fingerprint),
            text(&k.job_id),
            text(k.state.as_str()),
            int(k.expires_ms),
        ],
    }
}

pub(super) fn set_account(a: &AccountRow) -> Write {
    Write {
        query: SET_ACCOUNT,
        args: vec![
            int(a.balance),
            a.day.as_deref().map(text).unwrap_or(SqlStorageValue::Null),
            int(a.day_started_ms),
        ],
    }
}
