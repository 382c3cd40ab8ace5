//! One job: status with elapsed time, ETA and progress, Cancel while it runs; the
//! images when done (compare slider, full size, download, copy link, share, Remix,
//! Use as control image) or the reason when it failed.

use leptos::prelude::*;
use wasm_bindgen::JsValue;

use crate::components::compare::CompareSlider;
use crate::jobs::{JobView, Phase, is_final};
use crate::logic::eta;

/// Calls `navigator.<object>.<method>(arg)` if it exists (APIs web-sys marks unstable).
fn navigator_call(object: Option<&str>, method: &str, arg: &JsValue) {
    let Some(w) = web_sys::window() else { return };
    let mut target: JsValue = w.navigator().into();
    if let Some(name) = object {
        match js_sys::Reflect::get(&target, &name.into()) {
            Ok(o) if !o.is_undefined() => target = o,
            _ => return,
        }
    }
    if let Ok(f) = js_sys::Reflect::get(&target, &method.into())
        && let Some(f) = wasm_bindgen::JsCast::dyn_ref::<js_sys::Function>(&f)
    {
        let _ = f.call1(&target, arg);
    }
}

/// Copies text to the clipboard (best effort).
pub fn copy_text(text: &str) {
    navigator_call(Some("clipboard"), "writeText", &JsValue::from_str(text));
}

/// Whether the native share sheet exists here (phones).
fn can_share() -> bool {
    web_sys::window()
        .map(|w| js_sys::Reflect::has(&w.navigator(), &"share".into()).unwrap_or(false))
        .unwrap_or(false)
}

fn share(title: &str, url: &str) {
    let data = js_sys::Object::new();
    let _ = js_sys::Reflect::set(&data, &"title".into(), &JsValue::from_str(title));
    let _ = js_sys::Reflect::set(&data, &"url".into(), &JsValue::from_str(url));
    navigator_call(None, "share", &data);
}

fn file_name(url: &str) -> String {
    url.rsplit('/')
        .next()
        .map_or_else(|| "parallax.jpg".into(), |f| format!("parallax-{f}"))
}

/// What the card can ask the page to do.
#[derive(Debug, Clone, Copy)]
pub struct CardActions {
    pub cancel: Callback<RwSignal<JobView>>,
    pub remix: Callback<RwSignal<JobView>>,
    pub use_as_control: Callback<String>,
}

#[component]
pub fn JobCard(
    /// The job, updated by its polling task.
    job: RwSignal<JobView>,
    /// Page-level actions.
    actions: CardActions,
    /// The clock (ms), ticking once a second.
    now: Signal<f64>,
) -> impl IntoView {
    let phase = move || job.with(|j| j.phase.clone());
    let elapsed =
        move || job.with(|j| (j.finished_ms.unwrap_or_else(|| now.get()) - j.started_ms) / 1000.0);
    let running = move || !is_final(&phase());
    let timing = move || {
        let e = elapsed();
        if running() {
            let expected = job.with(|j| j.expected_secs);
            format!(
                "{} · {}",
                eta::elapsed_text(e),
                eta::remaining_text(e, expected)
            )
        } else {
            format!("took {}", eta::elapsed_text(e))
        }
    };
    let progress = move || {
        let expected = job.with(|j| j.expected_secs);
        format!("width: {:.0}%", eta::progress(elapsed(), expected) * 100.0)
    };
    let outputs = move || match phase() {
        Phase::Completed { outputs } => outputs,
        _ => Vec::new(),
    };
    view! {
        <article class="job" data-testid="job" data-request-id=move || job.with(|j| j.request_id.clone())>
            <header>
                <span class=move || format!("badge {}", phase().class()) data-testid="job-status" role="status" aria-live="polite">
                    {move || phase().label()}
                </span>
                <span class="model">{move || job.with(|j| j.model.title())}</span>
                <span class="timing" data-testid="job-timing">{timing}</span>
                <Show when=move || running() && job.with(|j| j.response_url.is_some())>
                    <button type="button" class="button small" data-testid="job-cancel"
                        on:click=move |_| actions.cancel.run(job)>"Cancel"</button>
                </Show>
            </header>
            <p class="prompt">{move || job.with(|j| j.prompt.clone())}</p>
            <Show when=running>
                <div class="progress" role="progressbar" aria-label="Progress"><span style=progress></span></div>
            </Show>
            {move || match phase() {
                Phase::Failed { message } => view! {
                    <p class="error" role="alert" data-testid="job-error">{message}</p>
                }.into_any(),
                _ => ().into_any(),
            }}
            <Show when=move || !outputs().is_empty()>
                <div class="outputs">
                    {move || {
                        let control = job.with(|j| j.control_url.clone());
                        outputs().into_iter().enumerate().map(|(n, url)| {
                            let label = format!("Generated image {}", n + 1);
                            let image = match control.clone() {
                                Some(before) => view! { <CompareSlider before=before after=url.clone() label=label.clone() /> }.into_any(),
                                None => view! { <img src=url.clone() alt=label.clone() data-testid="job-output" /> }.into_any(),
                            };
                            let (open, download, copy, share_url, use_url) = (url.clone(), url.clone(), url.clone(), url.clone(), url.clone());
                            view! {
                                <figure class="output">
                                    {image}
                                    <figcaption class="actions">
                                        <a class="button small" href=open target="_blank" rel="noopener">"Full size"</a>
                                        <a class="button small" href=download.clone() download=file_name(&download)>"Download"</a>
                                        <button type="button" class="button small" on:click=move |_| copy_text(&copy)>"Copy link"</button>
                                        {can_share().then(|| view! {
                                            <button type="button" class="button small" on:click=move |_| share("Made with Parallax", &share_url)>"Share"</button>
                                        })}
                                        <button type="button" class="button small" on:click=move |_| actions.use_as_control.run(use_url.clone())>"Use as control image"</button>
                                    </figcaption>
                                </figure>
                            }
                        }).collect_view()
                    }}
                </div>
                <div class="actions">
                    <button type="button" class="button" data-testid="job-remix" on:click=move |_| actions.remix.run(job)>"Remix"</button>
                    <Show when=move || { outputs().len() > 1 }>
                        <button type="button" class="button" on:click=move |_| {
                            for url in outputs() {
                                download_url(&url);
                            }
                        }>"Download all"</button>
                    </Show>
                </div>
            </Show>
        </article>
    }
}

/// Starts a download of `url` through a temporary anchor.
fn download_url(url: &str) {
    let Some(doc) = web_sys::window().and_then(|w| w.document()) else {
        return;
    };
    if let Ok(a) = doc.create_element("a") {
        let _ = a.set_attribute("href", url);
        let _ = a.set_attribute("download", &file_name(url));
        if let Ok(a) = wasm_bindgen::JsCast::dyn_into::<web_sys::HtmlElement>(a) {
            a.click();
        }
    }
}
