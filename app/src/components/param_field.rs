//! One parameter's input, rendered from its catalog spec, with its help text and the
//! validation message next to it. Numbers are typed into text inputs with a numeric
//! keyboard (`inputmode`), not `type=number`: Blink reports "7." in a number input as
//! "" (bad input), and writing that back cleared the field, so "7.5" could not be typed.

use leptos::prelude::*;
use parallax_api::{ParamKind, ParamSpec, num};

use crate::logic::form::{FormState, default_text};

/// A random seed in the API's range.
fn random_seed() -> String {
    ((js_sys::Math::random() * f64::from(u32::MAX)).floor() as u64).to_string()
}

#[component]
pub fn ParamField(
    /// The parameter, from the catalog.
    spec: &'static ParamSpec,
    /// The form it edits.
    form: RwSignal<FormState>,
) -> impl IntoView {
    let id = format!("param-{}", spec.name);
    let help_id = format!("{id}-help");
    let error_id = format!("{id}-error");
    let value = move || form.with(|f| f.get(spec.name).to_owned());
    let error = move || form.with(|f| f.error(spec.name));
    let set = move |v: String| form.update(|f| f.set(spec.name, v));
    let described = format!("{help_id} {error_id}");

    let input = match spec.kind {
        ParamKind::Boolean { .. } => view! {
            <input id=id.clone() type="checkbox" class="check" aria-describedby=described.clone()
                prop:checked=move || value() == "true"
                on:change=move |ev| set(event_target_checked(&ev).to_string()) />
        }
        .into_any(),
        ParamKind::Choice { options, .. } => view! {
            <select id=id.clone() aria-describedby=described.clone()
                prop:value=value
                on:change=move |ev| set(event_target_value(&ev))>
                {options.iter().map(|o| view! { <option value=*o selected=move || value() == *o>{*o}</option> }).collect_view()}
            </select>
        }
        .into_any(),
        ParamKind::Integer { min, max, .. } => view! {
            <div class="range-row">
                <input type="range" min=min max=max step="1" aria-hidden="true" tabindex="-1"
                    prop:value=value on:input=move |ev| set(event_target_value(&ev)) />
                <input id=id.clone() type="text" inputmode="numeric" autocomplete="off"
                    aria-describedby=described.clone() aria-invalid=move || error().is_some().to_string()
                    prop:value=value on:input=move |ev| set(event_target_value(&ev)) />
            </div>
        }
        .into_any(),
        ParamKind::Number { min, max, step, .. } => view! {
            <div class="range-row">
                <input type="range" min=num::text(min) max=num::text(max) step=num::text(step) aria-hidden="true" tabindex="-1"
                    prop:value=value on:input=move |ev| set(event_target_value(&ev)) />
                <input id=id.clone() type="text" inputmode="decimal" autocomplete="off"
                    aria-describedby=described.clone() aria-invalid=move || error().is_some().to_string()
                    prop:value=value on:input=move |ev| set(event_target_value(&ev)) />
            </div>
        }
        .into_any(),
        ParamKind::Seed => view! {
            <div class="seed-row">
                <input id=id.clone() type="text" inputmode="numeric" autocomplete="off" placeholder="random"
                    data-testid="seed" aria-describedby=described.clone()
                    aria-invalid=move || error().is_some().to_string()
                    prop:value=value on:input=move |ev| set(event_target_value(&ev)) />
                <button type="button" class="icon-button" aria-label="Roll a random seed" title="Random seed"
                    on:click=move |_| set(random_seed())>"🎲"</button>
                <label class="lock">
                    <input type="checkbox" prop:checked=move || form.with(|f| f.seed_locked)
                        on:change=move |ev| form.update(|f| f.seed_locked = event_target_checked(&ev)) />
                    "Keep"
                </label>
            </div>
        }
        .into_any(),
        ParamKind::Prompt { .. } | ParamKind::Image => ().into_any(),
    };
    let default = default_text(spec);
    view! {
        <div class="field">
            <label for=id class="field-label">{spec.label}</label>
            {input}
            <p id=help_id class="help">
                {spec.help}
                {(!default.is_empty()).then(|| format!(" Default: {default}."))}
            </p>
            <p id=error_id class="field-error" role="status">{move || error().map(|e| format!("{} {e}", spec.label))}</p>
        </div>
    }
}
