//! History: every job in this browser's store (and, with an access key, the key's jobs
//! from the server, merged into the store so other devices' jobs show too), newest
//! first, with filters, cancel, delete (confirmed) and export. Running jobs are
//! followed by the store's scheduler like everywhere else; nothing here writes a
//! snapshot back, so jobs added by another tab are never lost.

use leptos::prelude::*;
use leptos::task::spawn_local;
use parallax_api::{JobStatus, Model};

use crate::client;
use crate::components::no_jobs::NoJobs;
use crate::jobs;
use crate::logic::store::{self, Job};
use crate::session::use_session;
use crate::store::{Canceled, now_ms, use_store};

/// Pages of the server's list fetched at most.
const MAX_PAGES: usize = 6;

fn now_secs() -> u64 {
    (js_sys::Date::now() / 1000.0) as u64
}

fn confirm(question: &str) -> bool {
    window().confirm_with_message(question).unwrap_or(false)
}

#[component]
pub fn HistoryPage() -> impl IntoView {
    let session = use_session();
    let store = use_store();
    let model_filter = RwSignal::new(String::new());
    let status_filter = RwSignal::new(String::new());
    let notice = RwSignal::new(None::<String>);

    // With a key, merge in the key's jobs from the server (other devices), once per
    // key this page is shown with.
    Effect::new(move || {
        if session.key.get().trim().is_empty() {
            return;
        }
        spawn_local(async move {
            let mut cursor: Option<String> = None;
            let origin = window().location().origin().unwrap_or_default();
            for _ in 0..MAX_PAGES {
                match client::list(cursor.as_deref()).await {
                    Ok(page) => {
                        let now = now_ms();
                        // Depth previews are the studio's, not jobs of their own.
                        for r in page.requests.iter().filter(|r| !r.model.is_preview()) {
                            let url = format!("{origin}/v2/requests/{}", r.request_id);
                            store.put(Job::from_result(r, &url, now));
                        }
                        cursor = page.next_cursor;
                        if cursor.is_none() {
                            break;
                        }
                    }
                    Err(e) => {
                        let _ = notice.try_set(Some(e.message()));
                        break;
                    }
                }
            }
        });
    });

    let export = move |_| {
        let json = store.state.with_untracked(|s| store::export(&s.jobs));
        let parts = js_sys::Array::of1(&json.into());
        let options = web_sys::BlobPropertyBag::new();
        options.set_type("application/json");
        if let Ok(blob) = web_sys::Blob::new_with_str_sequence_and_options(&parts, &options)
            && let Ok(url) = web_sys::Url::create_object_url_with_blob(&blob)
            && let Ok(a) = document().create_element("a")
        {
            let _ = a.set_attribute("href", &url);
            let _ = a.set_attribute("download", "parallax-history.json");
            if let Ok(a) = wasm_bindgen::JsCast::dyn_into::<web_sys::HtmlElement>(a) {
                a.click();
            }
            let _ = web_sys::Url::revoke_object_url(&url);
        }
    };

    let shown = Memo::new(move |_| {
        let (m, s) = (model_filter.get(), status_filter.get());
        let now = now_secs();
        store.state.with(|st| {
            let mut list: Vec<Job> = store::filter(&st.jobs, &m, &s)
                .into_iter()
                .cloned()
                .collect();
            store::prune_expired(&mut list, now);
            list.into_iter().map(|j| j.id).collect::<Vec<_>>()
        })
    });
    view! {
        <section class="history">
            <div class="history-bar panel">
                <h1>"History"</h1>
                <label for="filter-model" class="visually-hidden">"Model"</label>
                <select id="filter-model" on:change=move |ev| model_filter.set(event_target_value(&ev))>
                    <option value="">"All models"</option>
                    {Model::GENERATORS.into_iter().map(|m| view! { <option value=m.slug()>{m.title()}</option> }).collect_view()}
                </select>
                <label for="filter-status" class="visually-hidden">"Status"</label>
                <select id="filter-status" on:change=move |ev| status_filter.set(event_target_value(&ev))>
                    <option value="">"Any status"</option>
                    {[JobStatus::Completed, JobStatus::Failed, JobStatus::Processing, JobStatus::Queued].into_iter()
                        .map(|s| view! { <option value=s.as_str()>{s.as_str()}</option> }).collect_view()}
                </select>
                <button type="button" class="button" on:click=export>"Export JSON"</button>
            </div>
            <p class="form-error" role="alert">{move || notice.get()}</p>
            <NoJobs
                empty=Signal::derive(move || shown.with(Vec::is_empty))
                text="No jobs yet. Generate something in the studio, or add your access key in Settings to see your key's jobs from other devices."
            />
            <ul class="history-list">
                <For each=move || shown.get() key=|id| id.clone() let(id)>
                    <HistoryItem id=id notice=notice />
                </For>
            </ul>
        </section>
    }
}

#[component]
fn HistoryItem(
    /// The job's id in the store.
    id: String,
    /// Where to say what went wrong.
    notice: RwSignal<Option<String>>,
) -> impl IntoView {
    let store = use_store();
    let job = {
        let id = id.clone();
        Memo::new(move |_| store.state.with(|s| s.get(&id).cloned()))
    };
    let busy = RwSignal::new(false);
    let field = move |f: fn(&Job) -> String| job.with(|j| j.as_ref().map(f).unwrap_or_default());
    let running = move || job.with(|j| j.as_ref().is_some_and(jobs::running));
    let link = format!("/r/{id}");
    let act_id = id.clone();
    let act = move |_| {
        let Some(j) = job.get_untracked() else { return };
        let short: String = j.prompt.chars().take(60).collect();
        if busy.get_untracked() {
            return;
        }
        if jobs::running(&j) {
            busy.set(true);
            let id = act_id.clone();
            spawn_local(async move {
                let said = match store.cancel(&id).await {
                    Ok(Canceled::Refunded(n)) => {
                        format!("Canceled “{short}”; {n} credits refunded.")
                    }
                    Ok(Canceled::RefundPending(n)) => {
                        format!("Canceled “{short}”; a refund of up to {n} credits is pending.")
                    }
                    Ok(Canceled::AlreadyFinished) => {
                        format!("“{short}” had already finished; nothing was canceled.")
                    }
                    Err(e) => e,
                };
                let _ = notice.try_set(Some(said));
                let _ = busy.try_set(false);
            });
            return;
        }
        if !confirm(&format!(
            "Delete “{short}” for good? Its images and share link stop working."
        )) {
            return;
        }
        busy.set(true);
        let id = act_id.clone();
        spawn_local(async move {
            match client::delete(&j.response_url, j.owner_token.as_deref()).await {
                Ok(()) => store.remove(&id),
                // Already gone on the server: forgetting it here is what the user wants.
                Err(e) if e.status() == 404 => store.remove(&id),
                Err(e) => {
                    let _ = notice.try_set(Some(format!("Could not delete: {}", e.message())));
                }
            }
            let _ = busy.try_set(false);
        });
    };
    let forget_id = id.clone();
    let forget = move |_| {
        if confirm("Remove this job from this browser's list? It stays on the server.") {
            store.remove(&forget_id);
        }
    };
    view! {
        <li class="history-item" data-testid="history-item" data-request-id=id.clone()>
            <a href=link.clone() class="thumb" tabindex="-1" aria-hidden="true">
                {move || match job.with(|j| j.as_ref().and_then(|j| j.outputs.first().cloned().or_else(|| j.control_image.clone()))) {
                    Some(src) => view! { <img src=src alt="" loading="lazy" data-testid="history-thumb" /> }.into_any(),
                    None => view! { <span class="thumb-empty">"◐"</span> }.into_any(),
                }}
            </a>
            <div class="history-text">
                <a href=link class="history-prompt">{move || field(|j| j.prompt.clone())}</a>
                <p class="help">
                    <span class=move || format!("badge {}", field(|j| jobs::class(j).to_owned()))
                        data-testid="history-status">{move || field(|j| j.status.as_str().to_owned())}</span>
                    {move || field(|j| {
                        let when: String = js_sys::Date::new(&j.created_ms.into())
                            .to_locale_string("default", &js_sys::Object::new())
                            .into();
                        let expiry = store::expiry_text(j.expires_at, now_secs())
                            .map(|t| format!(" · {t}"))
                            .unwrap_or_default();
                        format!(" {} · {when}{expiry}", j.model.title())
                    })}
                </p>
                {move || job.with(|j| j.as_ref().and_then(|j| j.error.clone())).map(|e| view! { <p class="error">{e}</p> })}
                {move || job.with(|j| j.as_ref().and_then(jobs::pending_text)).map(|t| view! { <p class="help" data-testid="history-refund-pending">{t}</p> })}
            </div>
            <div class="history-actions">
                <button type="button" class="button small" data-testid="history-action"
                    prop:disabled=move || busy.get()
                    aria-label=move || format!("{} “{}”", if running() { "Cancel" } else { "Delete" }, field(|j| j.prompt.chars().take(40).collect()))
                    on:click=act>
                    {move || if running() { "Cancel" } else { "Delete" }}
                </button>
                <button type="button" class="button small"
                    aria-label=move || format!("Remove “{}” from this list", field(|j| j.prompt.chars().take(40).collect()))
                    on:click=forget>"Remove"</button>
            </div>
        </li>
    }
}
