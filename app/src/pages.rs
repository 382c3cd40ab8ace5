//! Pages of the app, routed by `leptos_router` in `app.rs`: `/` (studio), `/history`,
//! `/r/{id}` (a shared result).

pub mod history;
pub mod share;
pub mod studio;
