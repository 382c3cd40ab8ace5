//! The sim's deterministic renderer, also used by the load test to check that every
//! image the edge stored is byte for byte what the sim produced.

pub mod render;
