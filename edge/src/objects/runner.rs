//! The `JobRunner` Durable Object, one per job: its record ([`JobRecord`]) and the
//! pure rules of its life, split by concern — the record and its lifecycle
//! (`record.rs`), submit attempts and failover (`submits.rs`), charges, refunds and
//! the outbox (`charges.rs`, `effects.rs`), the polling schedule (`schedule.rs`) and the wire view
//! (`view.rs`), all tested natively (`tests.rs`).

mod callbacks;
mod charges;
pub mod client;
mod depth;
pub mod eachlabs;
mod effects;
mod object;
mod outbox;
pub mod protocol;
mod record;
mod schedule;
mod steps;
mod submits;
#[cfg(test)]
pub(crate) mod tests;
mod view;

pub use callbacks::HookVerdict;
pub use object::JobRunner;
pub use record::*;
pub use schedule::*;
