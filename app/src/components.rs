//! Reusable view components.

pub mod job_card;
