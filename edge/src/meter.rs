//! What a job costs in billable Cloudflare operations, for `cargo xtask bench ops`.
//!
//! Off unless the var `OPS_METER` is `on` (set only by the bench's own stack; never in
//! `wrangler.toml`). When on, every billable operation this code performs logs one line
//! `parallax-meter <op> <n>`; the bench sums the lines of a run of jobs and divides.
//! Counting where the operation is made (rather than estimating from the code) keeps
//! the figure honest as the code changes: a new R2 read shows up in the next bench.
//!
//! What each op is billed as, per Cloudflare's pricing pages (Workers Paid, 2026):
//! <https://developers.cloudflare.com/workers/platform/pricing/>,
//! <https://developers.cloudflare.com/durable-objects/platform/pricing/>,
//! <https://developers.cloudflare.com/kv/platform/pricing/>,
//! <https://developers.cloudflare.com/r2/pricing/>.
//! Durable Object storage through the key-value API of a SQLite-backed class is billed
//! as rows: one row read per key got, one row written per key put or deleted.

use std::cell::Cell;

use worker::Env;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// An invocation of the Worker's fetch handler.
    WorkerRequest,
    /// A request to a Durable Object (fetch or alarm invocation).
    DoRequest,
    /// SQLite rows read / written by a Durable Object (SQL or key-value API).
    RowsRead,
    RowsWritten,
    KvRead,
    KvWrite,
    /// R2 Class A (put, list, multipart) and Class B (get, head). Deletes are free.
    R2ClassA,
    R2ClassB,
    /// Milliseconds a Durable Object spent handling a request or alarm, awaits
    /// included: what its duration is billed on (128 MB per object).
    DoActiveMs,
}

impl Op {
    pub fn name(self) -> &'static str {
        match self {
            Op::WorkerRequest => "worker_request",
            Op::DoRequest => "do_request",
            Op::RowsRead => "do_rows_read",
            Op::RowsWritten => "do_rows_written",
            Op::KvRead => "kv_read",
            Op::KvWrite => "kv_write",
            Op::R2ClassA => "r2_class_a",
            Op::R2ClassB => "r2_class_b",
            Op::DoActiveMs => "do_active_ms",
        }
    }
}

thread_local! {
    // An isolate runs one thread; the var cannot change while it lives.
    static ON: Cell<Option<bool>> = const { Cell::new(None) };
}

/// Reads `OPS_METER` once per isolate; call at every entry point (Worker fetch,
/// Durable Object constructors) before counting.
pub fn init(env: &Env) {
    ON.with(|on| {
        if on.get().is_none() {
            let enabled = env.var("OPS_METER").is_ok_and(|v| v.to_string() == "on");
            on.set(Some(enabled));
        }
    });
}

/// Records `n` operations of kind `op` (nothing unless the meter is on).
pub fn count(op: Op, n: usize) {
    if n > 0 && ON.with(|on| on.get() == Some(true)) {
        worker::console_log!("parallax-meter {} {n}", op.name());
    }
}

/// Logs `parallax-completed <job id> <Unix ms>` (only when the meter is on): the
/// moment a job's record turned COMPLETED, which the bench compares with the moment
/// the upstream finished (issue 18's added latency at completion).
pub fn completed(job: &str) {
    if ON.with(|on| on.get() == Some(true)) {
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let now = js_sys::Date::now() as u64;
        worker::console_log!("parallax-completed {job} {now}");
    }
}

/// Counts a Durable Object request (fetch or alarm) and, when dropped at its end,
/// the wall-clock time it took. Hold it for the whole handler.
#[derive(Debug)]
pub struct DoRequest(f64);

impl DoRequest {
    pub fn start() -> Self {
        count(Op::DoRequest, 1);
        Self(js_sys::Date::now())
    }
}

impl Drop for DoRequest {
    fn drop(&mut self) {
        let ms = (js_sys::Date::now() - self.0).max(0.0);
        // Whole milliseconds; a request is never billed less than the platform's
        // minimum anyway.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        count(Op::DoActiveMs, ms.round() as usize);
    }
}
