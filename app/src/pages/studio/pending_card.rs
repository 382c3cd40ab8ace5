//! A submit waiting for the server (or refused by it), and the page-wide clock.

use leptos::prelude::*;

use crate::store::{Pending, use_store};

/// The page-wide clock (ms), ticking once a second, provided by the app.
#[derive(Debug, Clone, Copy)]
pub struct Clock(pub Signal<f64>);

/// A submit waiting for the server (or refused by it).
#[component]
pub(super) fn PendingCard(
    /// The submit.
    pending: Pending,
) -> impl IntoView {
    let store = use_store();
    let key = pending.key;
    view! {
        <article class="job" data-testid="job">
            <header>
                <span class=if pending.error.is_some() { "badge failed" } else { "badge queued" }
                    data-testid="job-status" role="status" aria-live="polite">
                    {if pending.error.is_some() { "Not submitted" } else { "Uploading…" }}
                </span>
                <span class="model">{pending.model.title()}</span>
            </header>
            <h2 class="prompt">{pending.prompt.clone()}</h2>
            {pending.error.clone().map(|e| view! {
                <p class="error" role="alert" data-testid="job-error">{e}</p>
                <div class="actions">
                    <button type="button" class="button small"
                        on:click=move |_| store.pending.update(|p| p.retain(|p| p.key != key))>"Dismiss"</button>
                </div>
            })}
        </article>
    }
}
