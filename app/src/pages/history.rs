//! History: every job submitted from this browser (and, with an access key, the
//! key's jobs from the server, so another device shows the same list), newest first,
//! with filters, delete and export. Jobs still running when the page opens are
//! followed until they finish.

use leptos::prelude::*;
use leptos::task::spawn_local;
use parallax_api::{JobStatus, Model};

use crate::client;
use crate::logic::history::{self, Entry};
use crate::session::{self, use_session};

/// Pages of the server's list fetched at most.
const MAX_PAGES: usize = 6;

fn now_secs() -> u64 {
    (js_sys::Date::now() / 1000.0) as u64
}

#[component]
pub fn HistoryPage() -> impl IntoView {
    let session = use_session();
    let entries = RwSignal::new({
        let mut list = session::load_history();
        history::prune_expired(&mut list, now_secs());
        list
    });
    let model_filter = RwSignal::new(String::new());
    let status_filter = RwSignal::new(String::new());
    let notice = RwSignal::new(None::<String>);
    let update = move |entry: Entry| {
        entries.update(|l| history::upsert(l, entry));
        session::save_history(&entries.get_untracked());
    };

    // Follow jobs that were still running (e.g. the tab was closed mid-job).
    for entry in entries
        .get_untracked()
        .into_iter()
        .filter(|e| !e.status.is_terminal())
    {
        spawn_local(async move {
            let status_url = entry.status_url();
            let running = entry.clone();
            let followed = client::follow(&status_url, &entry.response_url, move |s| {
                let mut e = running.clone();
                e.status = s.status;
                update(e);
            })
            .await;
            if let Ok(r) = followed {
                update(Entry::from_result(&r, &entry.response_url));
            }
        });
    }
    // With a key, merge in the key's jobs from the server (other devices).
    if !session.key.get_untracked().trim().is_empty() {
        spawn_local(async move {
            let mut cursor: Option<String> = None;
            for _ in 0..MAX_PAGES {
                match client::list(cursor.as_deref()).await {
                    Ok(page) => {
                        for r in &page.requests {
                            let url = format!(
                                "{}/v2/requests/{}",
                                window().location().origin().unwrap_or_default(),
                                r.request_id
                            );
                            update(Entry::from_result(r, &url));
                        }
                        cursor = page.next_cursor;
                        if cursor.is_none() {
                            break;
                        }
                    }
                    Err(e) => {
                        notice.set(Some(e.message()));
                        break;
                    }
                }
            }
        });
    }

    let export = move |_| {
        let json = history::export(&entries.get_untracked());
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
        }
    };
    let delete = move |entry: Entry| {
        spawn_local(async move {
            let result = if entry.status.is_terminal() {
                client::delete(&entry.response_url).await
            } else {
                client::cancel(&entry.response_url).await.map(|_| ())
            };
            match result {
                Ok(()) => {}
                // Already gone on the server: forgetting it here is what the user wants.
                Err(client::ClientError::Api { status: 404, .. }) => {}
                Err(e) => return notice.set(Some(e.message())),
            }
            entries.update(|l| history::remove(l, &entry.id));
            session::save_history(&entries.get_untracked());
        });
    };

    let shown = move || {
        let (m, s) = (model_filter.get(), status_filter.get());
        entries.with(|l| {
            history::filter(l, &m, &s)
                .into_iter()
                .cloned()
                .collect::<Vec<_>>()
        })
    };
    view! {
        <section class="history">
            <div class="history-bar panel">
                <h1>"History"</h1>
                <label for="filter-model" class="visually-hidden">"Model"</label>
                <select id="filter-model" on:change=move |ev| model_filter.set(event_target_value(&ev))>
                    <option value="">"All models"</option>
                    {Model::ALL.into_iter().map(|m| view! { <option value=m.slug()>{m.title()}</option> }).collect_view()}
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
            <Show when=move || shown().is_empty()>
                <p class="empty">"No jobs yet. Generate something in the studio, or add your access key in Settings to see your key's jobs from other devices."</p>
            </Show>
            <ul class="history-list">
                <For each=shown key=|e| (e.id.clone(), e.status.as_str(), e.outputs.len()) let(entry)>
                    <HistoryItem entry=entry on_delete=Callback::new(delete) />
                </For>
            </ul>
        </section>
    }
}

#[component]
fn HistoryItem(
    /// The job.
    entry: Entry,
    /// Deletes it (server and here).
    on_delete: Callback<Entry>,
) -> impl IntoView {
    let thumb = entry
        .outputs
        .first()
        .cloned()
        .or_else(|| entry.control_image.clone());
    let created = js_sys::Date::new(&entry.created_ms.into());
    let when: String = created
        .to_locale_string("default", &js_sys::Object::new())
        .into();
    let expiry = history::expiry_text(entry.expires_at, now_secs());
    let model =
        Model::from_slug(&entry.model).map_or(entry.model.clone(), |m| m.title().to_owned());
    let link = format!("/r/{}", entry.id);
    let status = entry.status;
    let for_delete = entry.clone();
    view! {
        <li class="history-item" data-testid="history-item" data-request-id=entry.id.clone()>
            <a href=link.clone() class="thumb">
                {match thumb {
                    Some(src) => view! { <img src=src alt=format!("Result of: {}", entry.prompt) loading="lazy" data-testid="history-thumb" /> }.into_any(),
                    None => view! { <span class="thumb-empty" aria-hidden="true">"◐"</span> }.into_any(),
                }}
            </a>
            <div class="history-text">
                <a href=link class="history-prompt">{entry.prompt.clone()}</a>
                <p class="help">
                    <span class=format!("badge {}", status.as_str().to_ascii_lowercase()) data-testid="history-status">{status.as_str()}</span>
                    {format!(" {model} · {when}")}
                    {expiry.map(|t| format!(" · {t}"))}
                </p>
                {entry.error.clone().map(|e| view! { <p class="error">{e}</p> })}
            </div>
            <button type="button" class="button small" on:click=move |_| on_delete.run(for_delete.clone())>
                {if status.is_terminal() { "Delete" } else { "Cancel" }}
            </button>
        </li>
    }
}
