//! What a verified upstream callback does to a job's record (`hooks.rs` verifies it;
//! the runner acts on the verdict).

use super::JobRecord;
use super::schedule::*;

/// What a verified upstream callback does to a job (`JobRecord::take_hook`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookVerdict {
    /// It runs on that upstream job: poll it now, to confirm.
    Poll,
    /// Its submit's outcome is not recorded yet: the poll after it comes at once.
    Noted,
    /// Already finished: a late callback changes nothing.
    Finished,
    /// About an upstream job this one no longer runs on (failed over, superseded).
    Ignored,
}

impl JobRecord {
    /// A verified upstream callback from `provider` about `upstream_id` (when its body
    /// names one). It is never trusted as a result: a job running on that upstream job
    /// is polled now (the runner confirms, then proceeds as its alarm would).
    pub fn take_hook(
        &mut self,
        provider: &str,
        upstream_id: Option<&str>,
        now_ms: u64,
    ) -> HookVerdict {
        if self.status.is_terminal() {
            return HookVerdict::Finished;
        }
        if provider != self.provider {
            return HookVerdict::Ignored;
        }
        // Callbacks beyond a few make no more looks: a provider sends one (plus
        // retries, which are replays), and whoever could forge more must not be able
        // to make us poll the upstream at will.
        if self.hooks >= MAX_HOOK_WAKES {
            return HookVerdict::Ignored;
        }
        match &self.upstream {
            Some(sub) if upstream_id.is_some_and(|u| u != sub.upstream_id) => HookVerdict::Ignored,
            Some(_) => {
                self.hooks = self.hooks.saturating_add(1);
                self.next_step_ms = Some(self.next_step_ms.map_or(now_ms, |t| t.min(now_ms)));
                HookVerdict::Poll
            }
            // Never step now: that would send the submit again.
            None => {
                self.hooks = self.hooks.saturating_add(1);
                HookVerdict::Noted
            }
        }
    }

    /// After a step that began when `hooks_before` callbacks had been taken: if one
    /// came meanwhile (its wake may have been overwritten by the step's own
    /// schedule), a running job looks again now.
    pub fn recheck_if_hooked(&mut self, hooks_before: u32, now_ms: u64) {
        if self.hooks > hooks_before && !self.status.is_terminal() && self.upstream.is_some() {
            self.next_step_ms = Some(now_ms);
        }
    }
}
