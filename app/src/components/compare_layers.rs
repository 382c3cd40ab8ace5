//! A result compared with what it was made from: the control photo, its depth map and
//! the output, two at a time in the [`CompareSlider`], chosen with a radio group
//! (arrow keys move between the pairs; the slider keeps its place). With one of photo
//! and depth, it is a plain before/after slider; with neither, the image alone.

use std::sync::atomic::{AtomicU32, Ordering};

use leptos::prelude::*;

use crate::components::compare::CompareSlider;
use crate::logic::depth::Layers;

/// Numbers each radio group's `name` (one per result on a page).
static GROUPS: AtomicU32 = AtomicU32::new(0);

#[component]
pub fn CompareLayers(
    /// The control image, when its link is known.
    control: Option<String>,
    /// The depth map used, when known.
    depth: Option<String>,
    /// The generated image.
    output: String,
    /// Accessible description of the generated image.
    label: String,
    /// The test id of the generated image.
    #[prop(default = "job-output")]
    output_testid: &'static str,
) -> impl IntoView {
    let pairs = Layers::available(control.is_some(), depth.is_some());
    let Some(first) = pairs.first().copied() else {
        return view! { <img src=output alt=label data-testid=output_testid loading="lazy" /> }
            .into_any();
    };
    let chosen = RwSignal::new(first);
    let position = RwSignal::new(50_u32);
    let group = format!("layers-{}", GROUPS.fetch_add(1, Ordering::Relaxed));
    let choices = (pairs.len() > 1).then(|| {
        view! {
            <fieldset class="layers" data-testid="compare-layers">
                <legend class="help">"Compare"</legend>
                {pairs.into_iter().map(|pair| view! {
                    <label class="layer-choice">
                        <input type="radio" name=group.clone() value=pair.slug()
                            data-testid=format!("layers-{}", pair.slug())
                            prop:checked=move || chosen.get() == pair
                            on:change=move |_| chosen.set(pair) />
                        <span>{pair.title()}</span>
                    </label>
                }).collect_view()}
            </fieldset>
        }
    });
    let slider = move || {
        let photo = control.clone().unwrap_or_default();
        let depth = depth.clone().unwrap_or_default();
        let pair = chosen.get();
        let (before, after, (before_label, before_name), after_label, testid) = match pair {
            Layers::PhotoResult => (
                photo,
                output.clone(),
                ("Control image", "control image"),
                label.clone(),
                output_testid,
            ),
            Layers::DepthResult => (
                depth,
                output.clone(),
                ("Depth map", "depth map"),
                label.clone(),
                output_testid,
            ),
            Layers::PhotoDepth => (
                photo,
                depth,
                ("Control image", "control image"),
                "Depth map of the control image: near is bright".to_owned(),
                "compare-depth",
            ),
        };
        view! {
            <CompareSlider before=before after=after label=after_label before_label=before_label before_name=before_name
                after_testid=testid position=position />
            <p class="help compare-caption" data-testid="compare-caption">{pair.caption()}</p>
        }
    };
    view! { {choices} {slider} }.into_any()
}
