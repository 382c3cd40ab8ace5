//! Settings: the access key (kept in this browser), remaining credits, the theme, and
//! the key's credit history (`components::credits_panel`).

use leptos::prelude::*;

use crate::components::credits_panel::CreditsPanel;
use crate::session::{Theme, use_session};

#[component]
pub fn SettingsPanel() -> impl IntoView {
    let session = use_session();
    view! {
        <details class="settings">
            <summary data-testid="settings">
                "Settings"
                {move || session.credits.get().map(|c| view! { <span class="credits" data-testid="credits">{format!("\u{a0}· {c} credits")}</span> })}
            </summary>
            <SettingsBody />
        </details>
    }
}

#[component]
fn SettingsBody() -> impl IntoView {
    let session = use_session();
    let shown = RwSignal::new(false);
    view! {
            <div class="settings-body panel">
                <label for="access-key" class="field-label">"Access key"</label>
                <div class="seed-row">
                    <input id="access-key" autocomplete="off" spellcheck="false"
                        type=move || if shown.get() { "text" } else { "password" }
                        placeholder="px_… (optional where anonymous use is on)"
                        prop:value=move || session.key.get()
                        on:change=move |ev| session.key.set(event_target_value(&ev)) />
                    <button type="button" class="button" on:click=move |_| shown.update(|s| *s = !*s)>
                        {move || if shown.get() { "Hide" } else { "Show" }}
                    </button>
                </div>
                <p class="help">"Stored only in this browser and sent as x-api-key. Remaining credits appear after your next request."</p>
                <fieldset class="theme">
                    <legend class="field-label">"Theme"</legend>
                    {[Theme::System, Theme::Light, Theme::Dark].into_iter().map(|t| view! {
                        <label class="model-choice">
                            <input type="radio" name="theme" prop:checked=move || session.theme.get() == t
                                on:change=move |_| session.theme.set(t) />
                            <span>{match t { Theme::System => "System", Theme::Light => "Light", Theme::Dark => "Dark" }}</span>
                        </label>
                    }).collect_view()}
                </fieldset>
                <CreditsPanel />
            </div>
    }
}
