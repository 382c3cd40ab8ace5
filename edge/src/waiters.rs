//! Held status reads waiting in a job's runner (`GET /state?wait=N`): in memory, woken
//! whenever the runner writes the job's record, each raced against its own timeout.
//!
//! A waiter is only a wake-up: it re-reads the record and decides by
//! [`parallax_api::StatusWait::answers`] whether to answer or wait on. Lost with the
//! object (an eviction fails the held request, and the client reads again).

use std::cell::RefCell;
use std::future::Future;

use futures_channel::oneshot;
use futures_util::future::{Either, select};
use futures_util::pin_mut;

/// The runner's held reads.
#[derive(Debug, Default)]
pub struct Waiters(RefCell<Vec<oneshot::Sender<()>>>);

impl Waiters {
    /// Wakes every held read (the record was written).
    pub fn notify(&self) {
        for waiter in self.0.borrow_mut().drain(..) {
            // Its read may have timed out already.
            let _ = waiter.send(());
        }
    }

    /// Resolves at the next [`notify`](Self::notify) (`true`) or when `timeout`
    /// resolves (`false`), whichever is first.
    pub async fn next(&self, timeout: impl Future<Output = ()>) -> bool {
        let (tx, rx) = oneshot::channel();
        {
            let mut waiters = self.0.borrow_mut();
            // Reads that timed out since the last write leave a closed sender behind.
            waiters.retain(|w| !w.is_canceled());
            waiters.push(tx);
        }
        pin_mut!(timeout);
        matches!(select(rx, timeout).await, Either::Left((Ok(()), _)))
    }

    /// Reads held now.
    pub fn len(&self) -> usize {
        self.0.borrow().iter().filter(|w| !w.is_canceled()).count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;

    #[test]
    fn a_write_wakes_every_held_read() {
        let waiters = Waiters::default();
        let a = waiters.next(std::future::pending());
        let b = waiters.next(std::future::pending());
        pin_mut!(a, b);
        assert_eq!(a.as_mut().now_or_never(), None, "held");
        assert_eq!(b.as_mut().now_or_never(), None, "held");
        assert_eq!(waiters.len(), 2);
        waiters.notify();
        assert_eq!(a.now_or_never(), Some(true));
        assert_eq!(b.now_or_never(), Some(true));
        assert!(waiters.is_empty());
    }

    #[test]
    fn a_timeout_ends_the_hold_and_leaves_no_waiter() {
        let waiters = Waiters::default();
        assert_eq!(
            waiters.next(std::future::ready(())).now_or_never(),
            Some(false)
        );
        assert!(waiters.is_empty(), "its sender is closed");
        waiters.notify();
        // A later read is not woken by an earlier write.
        let later = waiters.next(std::future::pending());
        pin_mut!(later);
        assert_eq!(later.as_mut().now_or_never(), None);
        waiters.notify();
        assert_eq!(later.now_or_never(), Some(true));
    }
}
