//! The Durable Objects, one folder each: what runs inside each object, its protocol
//! (the typed requests the Worker sends it) and the pure rules it decides by.

pub mod breaker;
pub mod ledger;
pub mod runner;
