//! What a list of jobs says when it has none.

use leptos::prelude::*;

#[component]
pub fn NoJobs(
    /// Whether the list is empty now.
    #[prop(into)]
    empty: Signal<bool>,
    /// What to say when there is no job at all.
    text: &'static str,
) -> impl IntoView {
    view! {
        <Show when=move || empty.get()>
            <p class="empty">{text}</p>
        </Show>
    }
}
