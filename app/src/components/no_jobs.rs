//! What a list of jobs says about its jobs: its empty text when it has none; nothing
//! while stored jobs are being read in (their code is a wasm chunk, `store::Codec`);
//! and, when that chunk cannot be fetched yet, that they come back with the connection.

use leptos::prelude::*;

use crate::store::use_store;

#[component]
pub fn NoJobs(
    /// Whether the list is empty now.
    #[prop(into)]
    empty: Signal<bool>,
    /// What to say when there is no job at all.
    text: &'static str,
) -> impl IntoView {
    let store = use_store();
    // Always in the page (out of the flow while silent), so a screen reader announces
    // the text when it appears.
    let waiting = move || store.restoring.get() && store.restore_lost.get();
    view! {
        <Show when=move || empty.get() && !store.restoring.get()>
            <p class="empty">{text}</p>
        </Show>
        <p role="status" data-testid="restore-status" class:empty=waiting class:visually-hidden=move || !waiting()>
            {move || waiting().then_some("Connection lost — your saved jobs appear here once it is back.")}
        </p>
    }
}
