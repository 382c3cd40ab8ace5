//! What the Worker asks a job's runner (answered by `object.rs`): each request typed,
//! its route written once. The Worker reaches the runner only through these
//! ([`RunnerCall::request`], sent by `client.rs` and the handlers that start a job,
//! deliver a callback or record a share choice).

use parallax_api::{ShareControl, StatusWait};
use worker::Request;

use super::Start;
use crate::hooks::Wake;
use crate::http::internal_request;

/// The runner's internal routes.
pub mod route {
    pub const START: &str = "/start";
    pub const STATE: &str = "/state";
    pub const CANCEL: &str = "/cancel";
    pub const DELETE: &str = "/delete";
    pub const HOOK: &str = "/hook";
    /// Also sent by the Ledger's reaper (`objects/ledger/object.rs`), which cannot
    /// name this module: the runner reaches the Ledger, not the other way round.
    pub const ABANDON: &str = "/abandon";
    pub const SHARE: &str = "/share";
}

/// One request to a job's runner.
#[derive(Debug)]
pub enum RunnerCall<'a> {
    /// A new job's record (and its webhook), to run.
    Start(&'a Start),
    /// The record, at once (`None`) or held until it changes (`?wait=N&seen=S`).
    State(Option<StatusWait>),
    /// The owner's cancel (409 for a finished job).
    Cancel,
    /// The owner's delete.
    Delete,
    /// After a lost `/start` answer: the record if there is one, else "no such job"
    /// for good.
    Abandon,
    /// A verified upstream callback.
    Hook(&'a Wake),
    /// The owner's choice of what the share page shows.
    Share(ShareControl),
}

impl RunnerCall<'_> {
    /// The request that carries it.
    pub fn request(&self) -> worker::Result<Request> {
        match self {
            Self::Start(start) => internal_request(route::START, Some(*start)),
            Self::State(None) => internal_request::<()>(route::STATE, None),
            Self::State(Some(wait)) => {
                internal_request::<()>(&format!("{}?{}", route::STATE, wait.query()), None)
            }
            Self::Cancel => internal_request(route::CANCEL, Some(&())),
            Self::Delete => internal_request(route::DELETE, Some(&())),
            Self::Abandon => internal_request(route::ABANDON, Some(&())),
            Self::Hook(wake) => internal_request(route::HOOK, Some(*wake)),
            Self::Share(choice) => internal_request(route::SHARE, Some(choice)),
        }
    }
}
