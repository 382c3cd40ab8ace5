//! A before/after compare slider: the result over the control image, revealed up to
//! a handle. Pressing anywhere on the image moves the handle; the control is a native
//! range input *below* the image (not laid over it), so keyboard and screen readers
//! work and a long-press or right-click on the image still offers "Save image".

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
    /// What the image left of the handle is ("Control image", "Depth map").
    #[prop(default = "Control image")]
    before_label: &'static str,
    /// The same in a sentence ("control image"; written out: `str::to_lowercase` would
    /// link Unicode's case tables into the wasm).
    #[prop(default = "control image")]
    before_name: &'static str,
    /// The test id of the image right of the handle.
    #[prop(default = "job-output")]
    after_testid: &'static str,
    /// The handle's position (whole percents of the before image shown), when the
    /// caller keeps it across layer changes.
    #[prop(optional)]
    position: Option<RwSignal<u32>>,
) -> impl IntoView {
    // Whole percents (u32): formatting them needs no float formatting code in the wasm.
    let position = position.unwrap_or_else(|| RwSignal::new(50_u32));
    let range_label = format!("Compare with the {before_name}");
    // Pointer (mouse, pen, touch) anywhere on the image moves the handle there.
    let follow = move |ev: web_sys::PointerEvent, pressed: bool| {
        if !pressed || ev.button() > 0 {
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
            position.set(x.clamp(0.0, 100.0).round() as u32);
        }
    };
    view! {
        <div class="compare" data-testid="compare"
            on:pointerdown=move |ev: web_sys::PointerEvent| follow(ev, true)
            on:pointermove=move |ev: web_sys::PointerEvent| {
                let pressed = ev.buttons() & 1 == 1;
                follow(ev, pressed)
            }>
            <img class="compare-after" src=after alt=label data-testid=after_testid draggable="false" loading="lazy" />
            <img class="compare-before" src=before alt=before_label draggable="false" loading="lazy"
                style=move || format!("clip-path: inset(0 {}% 0 0)", 100 - position.get()) />
            <div class="compare-handle" aria-hidden="true" style=move || format!("left: {}%", position.get())></div>
        </div>
        <input class="compare-range" type="range" min="0" max="100" step="1"
                aria-label=range_label
                aria-valuetext=move || format!("{}% {before_name} shown", position.get())
                data-testid="compare-range"
                prop:value=move || position.get().to_string()
                on:input=move |ev| {
                    if let Ok(v) = event_target_value(&ev).parse::<u32>() {
                        position.set(v.min(100));
                    }
                } />
    }
}
