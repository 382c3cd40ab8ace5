//! `GET /v2/credits?limit=&cursor=`: the calling key's balance and credit history —
//! every job's charge, refund, pending refund and end (deleted jobs included, until
//! their charge row is pruned after the retention period) and every grant, newest
//! first, from its Ledger's rows.

use parallax_api::CreditsPage;
use worker::{Env, Request, Response};

use crate::accounts::Caller;
use crate::error::{EdgeError, EdgeResult};
use crate::handlers::jobs::page_limit;
use crate::http;
use crate::objects::ledger::EntryKey;

/// Query of `GET /v2/credits`.
#[derive(Debug, Default, serde::Deserialize)]
struct CreditsQuery {
    limit: Option<String>,
    cursor: Option<String>,
}

/// Keys only: an anonymous allowance belongs to an address (or a /64), which many
/// people can share behind one NAT; its history would hand each of them the others'
/// job ids, which are read capabilities (results, share pages). An anonymous caller
/// learns its remaining allowance from `x-remaining-credits` on any answer, this 401
/// included.
pub async fn get_credits(req: &Request, env: &Env, caller: &Caller) -> EdgeResult<Response> {
    if !caller.keyed {
        // Learns the balance for `x-remaining-credits` (counted as a read).
        caller.touch(env).await?;
        return Err(EdgeError::Unauthorized(
            "The credit history needs an API key (x-api-key); without one, \
             x-remaining-credits tells today's remaining allowance"
                .into(),
        ));
    }
    let query: CreditsQuery = req
        .query()
        .map_err(|_| EdgeError::bad_request("Invalid query string"))?;
    let limit = page_limit(query.limit.as_deref())?;
    let cursor = match query.cursor.filter(|c| !c.is_empty()) {
        Some(c) => Some(
            EntryKey::parse(&c)
                .ok_or_else(|| EdgeError::field("cursor", "is not a cursor this API gave out"))?
                .to_string(),
        ),
        None => None,
    };
    let (entries, next_cursor) = caller.credit_history(env, cursor, limit).await?;
    let page = CreditsPage {
        balance: caller.balance().unwrap_or(0),
        entries,
        next_cursor,
    };
    Ok(http::json(&page, 200))
}
