//! One job from the store: status with elapsed time, ETA and progress, Cancel while it
//! runs (saying whether credits come back); when done, the images (compare slider, full
//! size, download, copy link / share of its `/r/{id}` page, Remix, use as control
//! image) with seed, parameters, provider, duration and credits; or the server's reason
//! when it failed.

use leptos::prelude::*;
use leptos::task::spawn_local;
use wasm_bindgen::JsValue;

use crate::components::compare_layers::CompareLayers;
use crate::components::share_choice::ShareChoice;
use crate::jobs;
use crate::logic::depth::result_layers;
use crate::logic::eta;
use crate::logic::store::{Job, download_name};
use crate::store::{Canceled, use_store};
use parallax_api::ShareControl;

/// Calls `navigator.<object>.<method>(arg)` if it exists (APIs web-sys marks unstable).
fn navigator_call(object: Option<&str>, method: &str, arg: &JsValue) -> bool {
    let Some(w) = web_sys::window() else {
        return false;
    };
    let mut target: JsValue = w.navigator().into();
    if let Some(name) = object {
        match js_sys::Reflect::get(&target, &name.into()) {
            Ok(o) if !o.is_undefined() => target = o,
            _ => return false,
        }
    }
    if let Ok(f) = js_sys::Reflect::get(&target, &method.into())
        && let Some(f) = wasm_bindgen::JsCast::dyn_ref::<js_sys::Function>(&f)
    {
        return f.call1(&target, arg).is_ok();
    }
    false
}

/// Copies text to the clipboard; false when the browser has no clipboard API here.
pub fn copy_text(text: &str) -> bool {
    navigator_call(Some("clipboard"), "writeText", &JsValue::from_str(text))
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

/// The absolute `/r/{id}` page of a job (with its preview for chat apps).
pub fn share_url(id: &str) -> String {
    let origin = web_sys::window()
        .and_then(|w| w.location().origin().ok())
        .unwrap_or_default();
    format!("{origin}/r/{id}")
}

/// A prompt shortened for a button's accessible name.
fn short(prompt: &str) -> String {
    if prompt.chars().count() <= 40 {
        prompt.to_owned()
    } else {
        format!("{}…", prompt.chars().take(39).collect::<String>())
    }
}

/// What the card can ask the page to do.
#[derive(Debug, Clone, Copy)]
pub struct CardActions {
    pub remix: Callback<Job>,
    pub use_as_control: Callback<String>,
}

#[component]
pub fn JobCard(
    /// The job's id in the store.
    id: String,
    /// Page-level actions.
    actions: CardActions,
    /// The clock (ms), ticking once a second.
    now: Signal<f64>,
) -> impl IntoView {
    let store = use_store();
    let job = {
        let id = id.clone();
        Memo::new(move |_| store.state.with(|s| s.get(&id).cloned()))
    };
    let get = move || job.get();
    let with =
        move |f: &dyn Fn(&Job) -> String| job.with(|j| j.as_ref().map(f).unwrap_or_default());
    let running = move || job.with(|j| j.as_ref().is_some_and(jobs::running));
    let prompt = move || with(&|j| j.prompt.clone());
    let elapsed = move || {
        job.with(|j| {
            j.as_ref()
                .map_or(0.0, |j| match (j.metrics.total_time, j.finished_ms) {
                    (Some(t), _) if !jobs::running(j) => t,
                    (_, Some(end)) => (end - j.created_ms) / 1000.0,
                    _ => ((now.get() - j.created_ms) / 1000.0).max(0.0),
                })
        })
    };
    let expected = move || job.with(|j| j.as_ref().and_then(|j| j.expected_secs).unwrap_or(20.0));
    let timing = move || {
        let e = elapsed();
        if running() {
            format!(
                "{} · {}",
                eta::elapsed_text(e),
                eta::remaining_text(e, expected())
            )
        } else {
            format!("took {}", eta::elapsed_text(e))
        }
    };
    let percent = move || (eta::progress(elapsed(), expected()) * 100.0).round() as u32;
    let outputs = move || job.with(|j| j.as_ref().map(|j| j.outputs.clone()).unwrap_or_default());
    let failed = move || {
        job.with(|j| {
            j.as_ref().and_then(|j| {
                j.status
                    .eq(&parallax_api::JobStatus::Failed)
                    .then(|| j.error.clone().unwrap_or_else(|| "The job failed.".into()))
            })
        })
    };
    let numbered = move || outputs().into_iter().enumerate().collect::<Vec<_>>();
    let canceling = RwSignal::new(false);
    let notice = RwSignal::new(None::<String>);
    let copied = RwSignal::new(None::<usize>);
    let copy_text_of = move |n: usize| {
        if copied.get() == Some(n) {
            "Link copied"
        } else {
            "Copy link"
        }
    };
    let cancel_id = id.clone();
    let cancel = move |_| {
        if canceling.get_untracked() {
            return;
        }
        canceling.set(true);
        let id = cancel_id.clone();
        spawn_local(async move {
            let outcome = store.cancel(&id).await;
            let _ = notice.try_set(Some(match outcome {
                Ok(Canceled::Refunded(0)) => "Canceled. No credits were refunded.".into(),
                Ok(Canceled::Refunded(n)) => format!("Canceled. {n} credits refunded."),
                Ok(Canceled::RefundPending(n)) => {
                    format!("Canceled. A refund of up to {n} credits is pending.")
                }
                Ok(Canceled::AlreadyFinished) => {
                    "It had already finished, so nothing was canceled.".into()
                }
                Err(e) => e,
            }));
            let _ = canceling.try_set(false);
        });
    };
    // The visible text of each button starts its accessible name (WCAG 2.5.3, axe-core's
    // label-content-name-mismatch), so a voice user can say what they see.
    let cancel_text = move || {
        if canceling.get() {
            "Canceling…".to_owned()
        } else {
            with(&jobs::cancel_label)
        }
    };
    // The owner's choice of what the share page shows beside the result.
    let shared = move || job.with(|j| j.as_ref().map(|j| j.share_control).unwrap_or_default());
    let share_id = StoredValue::new(id.clone());
    let set_shared = move |choice: ShareControl| {
        let id = share_id.get_value();
        spawn_local(async move {
            if let Err(e) = store.set_share_control(&id, choice).await {
                let _ = notice.try_set(Some(e));
            }
        });
    };
    let share_select = format!("job-{id}-share");
    let title_id = format!("job-{id}-prompt");
    let labelled_by = title_id.clone();
    view! {
        <article class="job" data-testid="job" data-request-id=id.clone() aria-labelledby=labelled_by>
            <header>
                <span class=move || format!("badge {}", with(&|j| jobs::class(j).to_owned()))
                    data-testid="job-status" role="status" aria-live="polite">
                    {move || with(&|j| jobs::label(j).to_owned())}
                </span>
                <span class="model">{move || with(&|j| j.model.title().to_owned())}</span>
                <span class="timing" data-testid="job-timing">{timing}</span>
                <Show when=running>
                    <button type="button" class="button small" data-testid="job-cancel"
                        prop:disabled=move || canceling.get()
                        aria-label=move || format!("{}: “{}”", cancel_text(), short(&prompt()))
                        on:click=cancel.clone()>
                        {cancel_text}
                    </button>
                </Show>
            </header>
            <h2 class="prompt" id=title_id>{prompt}</h2>
            <Show when=move || running() && store.lost.get()>
                <p class="lost" data-testid="job-lost">"Connection lost — retrying"</p>
            </Show>
            <Show when=running>
                <div class="progress" role="progressbar" aria-label=move || format!("Progress of “{}”", short(&prompt()))
                    aria-valuemin="0" aria-valuemax="100" aria-valuenow=percent
                    aria-valuetext=move || eta::remaining_text(elapsed(), expected())>
                    <span style=move || format!("width: {}%", percent())></span>
                </div>
            </Show>
            {move || failed().map(|message| view! {
                <p class="error" data-testid="job-error">{message}</p>
            })}
            {move || job.with(|j| j.as_ref().and_then(jobs::pending_text)).map(|t| view! {
                <p class="help" data-testid="job-refund-pending">{t}</p>
            })}
            <p class="notice" role="status" data-testid="job-notice">{move || notice.get()}</p>
            <Show when=move || !outputs().is_empty()>
                <div class="outputs">
                    <For each=numbered key=|(n, url): &(usize, String)| (*n, url.clone()) let(item)>
                        {
                            let (n, url) = item;
                            get().map(|j| {
                            let what = format!("image {} of “{}”", n + 1, short(&j.prompt));
                            let alt = format!("Generated: {}", j.prompt);
                            let depth = j.depth_image.as_ref().or(j.preview_depth.as_ref());
                            let (control, depth) = result_layers(&j.params, j.control_image.as_ref(), depth);
                            let image = view! { <CompareLayers control=control depth=depth output=url.clone() label=alt /> };
                            let link = share_url(&j.id);
                            let link2 = link.clone();
                            let use_url = url.clone();
                            let title = format!("“{}” — made with Parallax", short(&j.prompt));
                            let copy_what = what.clone();
                            view! {
                                <figure class="output">
                                    {image}
                                    <figcaption class="actions">
                                        <a class="button small" href=url.clone() target="_blank" rel="noopener" aria-label=format!("Full size: {what}")>"Full size"</a>
                                        <a class="button small" href=url.clone() download=download_name(&j.prompt, j.seed, n, &url)
                                            data-testid="job-download" aria-label=format!("Download {what}")>"Download"</a>
                                        <button type="button" class="button small" data-testid="job-copy-link"
                                            aria-label=move || format!("{}: share link of {copy_what}", copy_text_of(n))
                                            on:click=move |_| { if copy_text(&link) { copied.set(Some(n)); } }>
                                            {move || copy_text_of(n)}
                                        </button>
                                        {can_share().then(|| view! {
                                            <button type="button" class="button small" aria-label=format!("Share {what}")
                                                on:click=move |_| share(&title, &link2)>"Share"</button>
                                        })}
                                        <button type="button" class="button small" aria-label=format!("Use as control image: {what}")
                                            on:click=move |_| actions.use_as_control.run(use_url.clone())>"Use as control image"</button>
                                    </figcaption>
                                </figure>
                            }
                            })
                        }
                    </For>
                </div>
                <dl class="facts" data-testid="job-facts">
                    {move || job.with(|j| j.as_ref().map(jobs::facts).unwrap_or_default()).into_iter()
                        .map(|(k, v)| view! { <div><dt>{k}</dt><dd>{v}</dd></div> }).collect_view()}
                </dl>
                <div class="actions">
                    <button type="button" class="button" data-testid="job-remix"
                        aria-label=move || format!("Remix “{}”", short(&prompt()))
                        on:click=move |_| { if let Some(j) = get() { actions.remix.run(j) } }>"Remix"</button>
                    <a class="button" href=move || with(&|j| format!("/r/{}", j.id)) data-testid="job-page"
                        aria-label=move || format!("Share page of “{}”", short(&prompt()))>"Share page"</a>
                    <ShareChoice id=share_select.clone() shared=Signal::derive(shared) set=Callback::new(set_shared)
                        depth_known=Signal::derive(move || job.with(|j| j.as_ref().is_some_and(|j| j.depth_image.is_some()))) />
                </div>
            </Show>
        </article>
    }
}
