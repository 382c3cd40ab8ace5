//! Log lines for refused requests (401, 403, 429, and refused provider callbacks),
//! rate-limited per isolate so a flood of refusals does not flood the log: at most
//! [`PER_WINDOW`] lines per [`WINDOW_MS`]; the first line of a later window says how
//! many were left out before it. Counting per isolate needs no storage and bounds what
//! each isolate writes, which is what a log's volume is made of.

use std::cell::RefCell;

/// Lines per window at most.
pub const PER_WINDOW: u32 = 5;
/// The window, in milliseconds.
pub const WINDOW_MS: u64 = 10_000;

/// One isolate's budget of refusal lines.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    window: u64,
    logged: u32,
    /// Refusals left out since the last line written.
    left_out: u64,
}

impl Budget {
    /// Whether to write a line now: `Some(left out before it)`, or `None` (left out).
    pub fn admit(&mut self, now_ms: u64) -> Option<u64> {
        let window = now_ms / WINDOW_MS;
        if window != self.window {
            self.window = window;
            self.logged = 0;
        }
        if self.logged >= PER_WINDOW {
            self.left_out += 1;
            return None;
        }
        self.logged += 1;
        Some(std::mem::take(&mut self.left_out))
    }
}

thread_local! {
    static BUDGET: RefCell<Budget> = RefCell::new(Budget::default());
}

/// Writes `parallax-refused <line>` (a warning) unless this isolate's budget is spent.
/// `line` must hold no secret.
pub fn warn(line: &str) {
    let now = worker::Date::now().as_millis();
    if let Some(left_out) = BUDGET.with(|b| b.borrow_mut().admit(now)) {
        if left_out > 0 {
            worker::console_warn!("parallax-refused {line} ({left_out} more left out before)");
        } else {
            worker::console_warn!("parallax-refused {line}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_writes_a_few_lines_a_window_and_counts_the_rest() {
        let mut b = Budget::default();
        let t = 5 * WINDOW_MS;
        let written: Vec<_> = (0..1000).filter_map(|_| b.admit(t)).collect();
        assert_eq!(written, vec![0; PER_WINDOW as usize]);
        assert_eq!(b.admit(t + WINDOW_MS), Some(1000 - u64::from(PER_WINDOW)));
        assert_eq!(b.admit(t + WINDOW_MS), Some(0));
    }
}
