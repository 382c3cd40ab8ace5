//! The polling schedule: when to look at a running upstream job again, within the
//! provider's request budget.

use super::record::*;

/// The quick look: the second poll comes this soon after the upstream accepted a job
/// (or at an earlier learned finish), whatever the provider's recent jobs took, so
/// work done in a moment — a warm self-hosted GPU, a small `megapixels`, a depth
/// preview — is told at once. The first poll comes at once, for work that was done
/// before the submit answered (a cached result). Tuned on the bench
/// (`docs/performance.md` § "Short jobs").
pub const QUICK_LOOK_MS: u64 = 250;
/// The longest gap between polls (long jobs are polled every eighth of their age).
pub const POLL_MAX_MS: u64 = 10_000;
/// Looks around expected finishes are at least this far apart.
pub const MIN_LOOK_GAP_MS: u64 = 200;
/// Callbacks that may wake a job's runner for a look; later ones are ignored.
pub const MAX_HOOK_WAKES: u32 = 3;
/// Where the poll schedule looks around each expected finish time, relative to it:
/// at it, then less and less often after it. None before it: an expected finish is
/// learned from the looks just before and after the end, so it sits a little after
/// the usual end, and a look spent early is missing when the job ends.
pub const AROUND_EXPECTED_MS: [u64; 5] = [0, 250, 600, 1_200, 2_500];

/// The looks that come before the budget is counted: one at once and the quick look.
pub const EARLY_LOOKS: u32 = 2;

/// How many upstream requests polling may spend on a job: one seen finished at `t`
/// costs at most `base + t / every_ms` of them (the submit, every look and a result
/// fetch counted), the [`EARLY_LOOKS`] aside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PollBudget {
    pub every_ms: u64,
    pub base: u64,
}

impl PollBudget {
    /// `2 + t / every` besides the early looks (so `4 + t / every` in all): early
    /// looks are cheap (one Durable Object alarm and one provider GET each), so a
    /// short job is seen soon after it ends.
    pub const fn new(every_ms: u64) -> Self {
        Self { every_ms, base: 2 }
    }

    /// `1 + t / every` besides the early looks (`3 + t / every` in all), for
    /// providers whose status reads count against a per-minute request limit (`docs/performance.md` § "Short jobs").
    pub const fn tight(every_ms: u64) -> Self {
        Self { every_ms, base: 1 }
    }

    /// The budget for a job at `kind`: the tighter one where its status reads count
    /// against a per-minute limit ([`crate::providers::Adapter::reads_limited`]).
    pub fn of(kind: crate::providers::Kind, every_ms: u64) -> Self {
        if kind.reads_limited() {
            Self::tight(every_ms)
        } else {
            Self::new(every_ms)
        }
    }

    /// The earliest age of the next look after `polls` looks: without the early
    /// looks, `polls - 2` looks so far, this one, the submit and a result fetch make
    /// `polls + 1` requests, which `base + age / every` must cover.
    pub fn earliest_ms(self, polls: u32) -> u64 {
        if polls < EARLY_LOOKS {
            return 0;
        }
        (u64::from(polls) + 3).saturating_sub(u64::from(EARLY_LOOKS) + self.base) * self.every_ms
    }
}

impl JobRecord {
    /// Delay before the next poll while the upstream works.
    ///
    /// The first look comes at once, the second is the quick look ([`QUICK_LOOK_MS`]
    /// after the submit, or the first learned finish if that is sooner). After them,
    /// each look keeps to the [`PollBudget`]. Without learned finish times ([`Self::expected_ms`]): as often
    /// as the budget allows, and never more often than every eighth of the job's age
    /// (capped at [`POLL_MAX_MS`]), so long jobs cost little. With them: each look
    /// goes to the next moment at or after an expected finish
    /// ([`AROUND_EXPECTED_MS`]), or the first the budget allows once one has passed,
    /// with a look at 1.5 × the age when none is nearer (so a job unlike the learned
    /// ones is seen at most half its age late); past the last expected finish, the
    /// cadence without them.
    pub fn poll_delay_ms(&self, now_ms: u64, budget: PollBudget) -> u64 {
        let since = self.submitted_ms.unwrap_or(self.created_ms);
        let age = now_ms.saturating_sub(since);
        if self.polls == 0 {
            return 0;
        }
        if self.polls == 1 {
            let quick = self
                .expected_ms
                .first()
                .map_or(QUICK_LOOK_MS, |&e| u64::from(e).min(QUICK_LOOK_MS));
            if quick > age {
                return quick - age;
            }
        }
        let earliest = budget.earliest_ms(self.polls);
        let fixed = || {
            let gap = (age / 8).min(POLL_MAX_MS);
            earliest.saturating_sub(age).max(gap)
        };
        let next_expected = self
            .expected_ms
            .iter()
            .flat_map(|&e| AROUND_EXPECTED_MS.iter().map(move |&d| u64::from(e) + d))
            // Not back to back: expected finishes a few ms apart are one look.
            .filter(|&t| t >= age + MIN_LOOK_GAP_MS)
            // One the budget does not allow yet is looked at as soon as it does.
            .map(|t| t.max(earliest))
            .min();
        let Some(next_expected) = next_expected else {
            return fixed();
        };
        // Between expected finishes, a look at one and a half times the age: a job
        // unlike the learned ones is still seen, and most of the budget is saved for
        // the looks that matter.
        let idle = (age + (age / 2).max(2 * budget.every_ms)).max(earliest);
        // An expected finish a little after the idle look replaces it.
        let at = if next_expected <= idle + budget.every_ms {
            next_expected
        } else {
            idle
        };
        at - age
    }

    /// The gap before the next poll of a running upstream job: the backstop when the
    /// provider was asked to call back, else the polling schedule.
    pub(super) fn poll_gap_ms(&self, now_ms: u64, budget: PollBudget) -> u64 {
        match self.upstream.as_ref().and_then(|u| u.backstop_ms) {
            // A callback came but the confirming look still saw the job running (a
            // provider's read lagging its webhook): the ordinary schedule, not the
            // slow backstop.
            Some(_) if self.hooks > 0 => self.poll_delay_ms(now_ms, budget),
            Some(backstop_ms) => self.backstop_delay_ms(now_ms, backstop_ms),
            None => self.poll_delay_ms(now_ms, budget),
        }
    }

    /// The backstop for an upstream that calls back (kept apart from
    /// [`Self::poll_delay_ms`]): the first poll `backstop_ms` after the submit, then
    /// each one waits as long as the job's age, so a job whose callback never comes
    /// still finishes, at about twice its length, while one whose callback works
    /// costs the submit and the confirming poll whatever its length.
    pub fn backstop_delay_ms(&self, now_ms: u64, backstop_ms: u64) -> u64 {
        let age = now_ms.saturating_sub(self.submitted_ms.unwrap_or(self.created_ms));
        age.max(backstop_ms)
    }

    /// One more upstream poll was made.
    pub fn polled(&mut self) {
        self.polls = self.polls.saturating_add(1);
    }
}
