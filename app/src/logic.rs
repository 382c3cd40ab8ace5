//! The app's logic, kept out of `view!` and tested natively.

pub mod credits;
pub mod depth;
pub mod eta;
pub mod form;
pub mod poll;
pub mod snippets;
pub mod store;
