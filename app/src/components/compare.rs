//! A before/after compare slider: the result over the control image, revealed up to
//! a handle. The handle is a native range input, so mouse, touch and keyboard (arrow
//! keys, Home/End) all work and screen readers announce it.

use leptos::prelude::*;
use wasm_bindgen::JsCast;

#[component]
pub fn CompareSlider(
    /// The control image (left of the handle).
    before: String,
    /// The generated image (right of the handle).
    after: String,
    /// Accessible description of the generated image.
    label: String,
) -> impl IntoView {
    let position = RwSignal::new(50.0_f64);
    // Pointer (mouse, pen, touch) anywhere on the image moves the handle there.
    let follow = move |ev: web_sys::PointerEvent, pressed: bool| {
        if !pressed {
            return;
        }
        let Some(el) = ev
            .current_target()
            .and_then(|t| t.dyn_into::<web_sys::Element>().ok())
        else {
            return;
        };
        let rect = el.get_bounding_client_rect();
        if rect.width() > 0.0 {
            let x = (f64::from(ev.client_x()) - rect.left()) / rect.width() * 100.0;
            position.set(x.clamp(0.0, 100.0).round());
        }
    };
    view! {
        <div class="compare" data-testid="compare"
            on:pointerdown=move |ev: web_sys::PointerEvent| follow(ev, true)
            on:pointermove=move |ev: web_sys::PointerEvent| {
                let pressed = ev.buttons() & 1 == 1;
                follow(ev, pressed)
            }>
            <img class="compare-after" src=after alt=label data-testid="job-output" />
            <img class="compare-before" src=before alt="Control image"
                style=move || format!("clip-path: inset(0 {}% 0 0)", 100.0 - position.get()) />
            <div class="compare-handle" aria-hidden="true" style=move || format!("left: {}%", position.get())></div>
            <input class="compare-range" type="range" min="0" max="100" step="1"
                aria-label="Compare with the control image"
                data-testid="compare-range"
                prop:value=move || position.get().to_string()
                on:input=move |ev| {
                    if let Ok(v) = event_target_value(&ev).parse() {
                        position.set(v);
                    }
                } />
        </div>
    }
}
