//! `Ledger`: one Durable Object per account (an API key, or an anonymous client's
//! address block). It is the only place balances live (KV is eventually consistent
//! and would allow double spending): it applies credit grants, reserves credits at
//! submit, refunds a job once, binds idempotency keys to their request, lists the
//! account's jobs, and rate-limits. Every job's end is recorded on its charge (a
//! settlement: the refund, possibly 0, and why), so the account's credit history
//! (`GET /v2/credits`, [`Op::History`]) shows where every credit went, deleted jobs
//! included, until the charge row is pruned.
//!
//! Everything is kept as rows in the object's SQLite database (`ctx.storage.sql`), so
//! an operation reads and writes only the rows it needs: a submit costs the same for
//! an account with no past jobs and one with 100 000 (`cargo xtask bench ledger`).
//! Charge rows (which are also the job list) are pruned once their job is past
//! retention, expired idempotency keys as they lapse, a few rows per write. The
//! decisions are pure functions over rows (tested natively below); [`Ledger::fetch`]
//! reads the rows, decides, and applies the writes in one `transactionSync`.
//!
//! A start under an idempotency key is also a `starts` row until its Confirm or Release;
//! the object's alarm reaps those whose pending key lapsed (a lost Confirm or Release)
//! by asking the job's runner whether the job exists (see [`reap`]).
//!
//! Internal protocol: `POST /op` with a [`LedgerRequest`] → [`LedgerReply`].

mod legacy;
mod object;
pub mod protocol;
mod rules;
mod sql;
#[cfg(test)]
mod tests;

pub use object::Ledger;
pub use protocol::*;
pub use rules::{EntryKey, plan_settle};
