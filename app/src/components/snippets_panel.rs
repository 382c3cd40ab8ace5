//! Copyable API snippets (curl, Python, JavaScript) for the current form. The panel
//! is closed at first; its body is built when it is first opened (a snippet is
//! rebuilt on every change of the form while it is there).

use leptos::prelude::*;

use crate::components::job_card::copy_text;
use crate::logic::form::FormState;
use crate::logic::snippets;

#[component]
pub fn SnippetsPanel(
    /// The form the snippets reproduce.
    form: RwSignal<FormState>,
) -> impl IntoView {
    let opened = RwSignal::new(false);
    view! {
        <details class="panel snippets" on:toggle=move |_| opened.set(true)>
            <summary>"API code for these settings"</summary>
            <Show when=move || opened.get()>
                <SnippetsBody form=form />
            </Show>
        </details>
    }
}

#[component]
fn SnippetsBody(form: RwSignal<FormState>) -> impl IntoView {
    let tab = RwSignal::new(0usize);
    let origin = StoredValue::new(window().location().origin().unwrap_or_default());
    let code = move || {
        let s = form.with(|f| origin.with_value(|o| snippets::build(f, o)));
        match tab.get() {
            1 => s.python,
            2 => s.javascript,
            _ => s.curl,
        }
    };
    let copied = RwSignal::new(false);
    view! {
        <div class="tabs" role="tablist">
            {["curl", "Python", "JavaScript"].into_iter().enumerate().map(|(i, name)| view! {
                <button type="button" role="tab" aria-selected=move || (tab.get() == i).to_string()
                    on:click=move |_| { tab.set(i); copied.set(false); }>{name}</button>
            }).collect_view()}
        </div>
        <pre><code data-testid="snippet">{code}</code></pre>
        <button type="button" class="button" on:click=move |_| { copy_text(&code()); copied.set(true); }>
            {move || if copied.get() { "Copied" } else { "Copy" }}
        </button>
    }
}
