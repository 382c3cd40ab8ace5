//! The owner's choice of what a job's share page shows beside the result.

use leptos::prelude::*;
use parallax_api::ShareControl;

/// What the job's share page shows beside the result: nothing, the photo, or only the
/// depth map (a person's photo need not be public to share what it made).
#[component]
pub fn ShareChoice(
    /// The select's element id.
    id: String,
    /// The server's stored choice.
    shared: Signal<ShareControl>,
    /// Sends a new choice.
    set: Callback<ShareControl>,
    /// Whether the server knows the job's depth map (only then can the page show it).
    depth_known: Signal<bool>,
) -> impl IntoView {
    let value = move || match shared.get() {
        ShareControl::None => "none",
        ShareControl::Photo => "photo",
        ShareControl::Depth => "depth",
    };
    view! {
        <div class="share-choice">
            <label for=id.clone()>"Share page shows"</label>
            <select id=id data-testid="job-share-control" prop:value=value
                on:change=move |ev| set.run(match event_target_value(&ev).as_str() {
                    "photo" => ShareControl::Photo,
                    "depth" => ShareControl::Depth,
                    _ => ShareControl::None,
                })>
                <option value="none" selected=move || value() == "none">"the result only"</option>
                <option value="photo" selected=move || value() == "photo">"my photo too"</option>
                <Show when=move || depth_known.get() || value() == "depth">
                    <option value="depth" selected=move || value() == "depth">"the depth map, not my photo"</option>
                </Show>
            </select>
        </div>
    }
}
