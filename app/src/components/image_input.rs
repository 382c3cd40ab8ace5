//! Where a control image comes from: drag and drop, the file picker, the phone's
//! camera, pasting from the clipboard, an https URL (fetched by the server; Enter in
//! its field uses it), or one of the shipped sample photos (one tap).

use leptos::ev;
use leptos::prelude::*;
use web_sys::File;

use crate::image::ACCEPT;

/// What the user picked.
#[derive(Debug, Clone)]
pub enum Picked {
    File(File),
    Url(String),
    /// A sample photo shipped with the app (`/samples/…`).
    Sample(String),
}

/// The sample photos in `public/samples/` (see its README), with what they show. The
/// studio shows each as its 160 px thumbnail (`samples/thumbs/`, a few KB); the photo
/// itself is fetched only when picked.
const SAMPLES: [(&str, &str); 4] = [
    ("chelsea", "a cat on a table"),
    ("coffee", "a coffee cup on wood"),
    ("rocket", "a rocket launch"),
    ("astronaut", "an astronaut portrait"),
];

fn first_file(list: Option<web_sys::FileList>) -> Option<File> {
    list.and_then(|l| l.get(0))
}

#[component]
pub fn ImageInput(
    /// Called with each pick.
    on_pick: Callback<Picked>,
    /// Preview URL of the current control image.
    preview: Signal<Option<String>>,
    /// Set while the image is being prepared.
    busy: Signal<bool>,
    /// What went wrong with the last pick.
    error: Signal<Option<String>>,
    /// A line about the prepared upload ("1024×683, 180 KB").
    info: Signal<Option<String>>,
    /// Shown beside the image (the studio's depth map).
    #[prop(optional)]
    children: Option<Children>,
) -> impl IntoView {
    let dragging = RwSignal::new(false);
    let url = RwSignal::new(String::new());
    let pick_file = move |f: Option<File>| {
        if let Some(f) = f {
            on_pick.run(Picked::File(f));
        }
    };
    let paste = window_event_listener(ev::paste, move |ev: web_sys::ClipboardEvent| {
        if let Some(f) = first_file(ev.clipboard_data().and_then(|d| d.files())) {
            ev.prevent_default();
            pick_file(Some(f));
        }
    });
    on_cleanup(move || paste.remove());
    let use_url = move || {
        let u = url.get_untracked().trim().to_owned();
        if !u.is_empty() {
            on_pick.run(Picked::Url(u));
        }
    };
    let from_input = move |ev: ev::Event| {
        let input: web_sys::HtmlInputElement = event_target(&ev);
        pick_file(first_file(input.files()));
        input.set_value("");
    };
    view! {
        <div class="image-input">
            <span class="field-label" id="control-label">"Control image"</span>
            <div class="control-pair">
            <div class=move || if dragging.get() { "drop dragging" } else { "drop" }
                data-testid="drop-zone"
                on:dragover=move |ev: web_sys::DragEvent| { ev.prevent_default(); dragging.set(true); }
                on:dragleave=move |_| dragging.set(false)
                on:drop=move |ev: web_sys::DragEvent| {
                    ev.prevent_default();
                    dragging.set(false);
                    pick_file(first_file(ev.data_transfer().and_then(|d| d.files())));
                }>
                {move || match preview.get() {
                    Some(src) => view! { <img class="preview" src=src alt="Control image preview" /> }.into_any(),
                    None => view! {
                        <p class="drop-hint">"Drop a photo here, paste one, or choose below. Its depth (layout) is kept."</p>
                    }.into_any(),
                }}
                <Show when=move || busy.get()>
                    <p class="busy" role="status">"Preparing image…"</p>
                </Show>
            </div>
            {children.map(|c| c())}
            </div>
            <div class="pick-row">
                <label class="button">
                    "Choose image"
                    <input type="file" class="visually-hidden" accept=ACCEPT data-testid="control-image"
                        aria-describedby="control-info" on:change=from_input />
                </label>
                <label class="button">
                    "Take photo"
                    <input type="file" class="visually-hidden" accept=ACCEPT capture="environment" on:change=from_input />
                </label>
            </div>
            <div class="url-row">
                <label for="control-url" class="visually-hidden">"Image URL"</label>
                <input id="control-url" type="url" inputmode="url" enterkeyhint="go" placeholder="or an https:// image URL"
                    prop:value=move || url.get() on:input=move |ev| url.set(event_target_value(&ev))
                    on:keydown=move |ev: web_sys::KeyboardEvent| {
                        // Enter (a phone's "Go") uses the URL; it never submits the form.
                        if ev.key() == "Enter" {
                            ev.prevent_default();
                            ev.stop_propagation();
                            if !ev.repeat() { use_url(); }
                        }
                    } />
                <button type="button" class="button" on:click=move |_| use_url()>"Use URL"</button>
            </div>
            <div class="samples" role="group" aria-labelledby="samples-label">
                <span id="samples-label" class="help">"Or start from a sample:"</span>
                {SAMPLES.into_iter().map(|(name, what)| view! {
                    <button type="button" class="sample" data-testid="sample"
                        aria-label=format!("Use the sample photo of {what}")
                        on:click=move |_| on_pick.run(Picked::Sample(format!("/samples/{name}.jpg")))>
                        <img src=format!("/samples/thumbs/{name}.webp") alt="" width="56" height="56" loading="lazy" />
                    </button>
                }).collect_view()}
            </div>
            <p id="control-info" class="help">{move || info.get()}</p>
            <p class="field-error" role="alert" data-testid="image-error">{move || error.get()}</p>
        </div>
    }
}
