//! What a list of jobs shows while it has none: its empty text; nothing while stored
//! jobs are being read in (their code is a wasm chunk, `store::Codec`); and, when that
//! chunk cannot be fetched yet, that the jobs will come back with the connection.

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
    let restoring = move || empty.get() && store.restoring.get();
    view! {
        <Show when=move || empty.get() && !store.restoring.get()>
            <p class="empty">{text}</p>
        </Show>
        <Show when=move || restoring() && store.lost.get()>
            <p class="empty" role="status" data-testid="restore-lost">
                "Connection lost — your saved jobs appear here once it is back."
            </p>
        </Show>
    }
}
