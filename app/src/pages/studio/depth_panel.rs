//! Beside the control image: its depth map (a spinner while it is computed, the reason
//! when there is none), "Use as control" and a download link; and below the picker the
//! toggle "This image is already a depth map" (`control_type: depth`).

use leptos::prelude::*;

use super::state::Studio;
use crate::logic::depth::{DepthShown, download_name};

/// The depth map beside the control image (nothing when there is no image, or when
/// the image is itself a depth map).
#[component]
pub(super) fn DepthPanel() -> impl IntoView {
    let studio = expect_context::<Studio>();
    let shown = studio.depth.shown;
    move || {
        match shown.get() {
        DepthShown::Off => ().into_any(),
        DepthShown::Computing => view! {
            <div class="depth" data-testid="depth">
                <div class="depth-wait" role="status" data-testid="depth-computing">
                    <span class="spinner" aria-hidden="true"></span>
                    "Computing the depth map…"
                </div>
            </div>
        }
        .into_any(),
        DepthShown::Unavailable(reason) => view! {
            <div class="depth" data-testid="depth">
                <p class="help depth-reason" role="status" data-testid="depth-unavailable">{reason}</p>
            </div>
        }
        .into_any(),
        DepthShown::Ready(url) => {
            let use_url = url.clone();
            let gone = url.clone();
            let loaded = url.clone();
            let name = download_name(studio.depth.pick());
            view! {
                <div class="depth" data-testid="depth">
                    <img class="depth-img" src=url.clone() data-testid="depth-map"
                        alt="Depth map of the control image: near is bright, far is dark"
                        on:load=move |_| studio.depth.loaded(&loaded)
                        on:error=move |_| studio.depth.failed_to_load(&gone, studio.control.get_untracked()) />
                    <div class="depth-actions">
                        <button type="button" class="button small" data-testid="depth-use"
                            on:click=move |_| studio.use_depth_map(use_url.clone())>"Use as control"</button>
                        <a class="button small" href=url download=name data-testid="depth-download"
                            aria-label="Download the depth map">"Download"</a>
                    </div>
                </div>
            }
            .into_any()
        }
    }
    }
}

/// "This image is already a depth map": sends `control_type: depth` (the provider skips
/// its own depth estimation) and needs no preview.
#[component]
pub(super) fn DepthToggle() -> impl IntoView {
    let studio = expect_context::<Studio>();
    let on = studio.is_depth_map();
    view! {
        <label class="check-label depth-toggle">
            <input type="checkbox" class="check" data-testid="control-is-depth"
                aria-describedby="control-is-depth-help"
                prop:checked=move || on.get()
                on:change=move |ev| studio.mark_depth_map(event_target_checked(&ev)) />
            " This image is already a depth map"
        </label>
        <p id="control-is-depth-help" class="help">
            "Tick it for a greyscale depth map (near is bright), such as one you edited: the model uses it as it is."
        </p>
    }
}
