//! `/r/{id}`: a shared result, for anyone with the link: the images (beside the
//! control image and its depth map, or the depth map alone, only when its owner chose
//! to show them: the server then gives their links; a photo is otherwise private to
//! the job's owner), the prompt and parameters,
//! provider and timings, when it expires, and Remix (opens the studio prefilled).
//!
//! It loads with a small loop rather than a `LocalResource` in a `Transition`: this
//! is the app's only page that loads over the network, and the Suspense machinery
//! costs the first load of `/` 13 KB gzip (measured), against a 250 KB budget.

use leptos::prelude::*;
use leptos::task::spawn_local;
use leptos_router::hooks::use_params_map;
use parallax_api::{JobResult, JobStatus, RequestId};

use crate::client::{self, ClientError};
use crate::components::compare_layers::CompareLayers;
use crate::components::error_view::ErrorView;
use crate::logic::depth::result_layers;
use crate::logic::eta;
use crate::logic::form::value_text;
use crate::logic::poll::Read;
use crate::logic::store::{download_name, expiry_text};

/// What the page shows.
#[derive(Debug, Clone, PartialEq)]
enum Shown {
    Loading,
    Job(Box<JobResult>),
    /// Could not load it (a 404: it does not exist or has expired).
    Failed(ClientError),
}

/// What the server says of an id no job can have.
fn not_found() -> ClientError {
    ClientError::Http {
        status: 404,
        retry_after_ms: None,
    }
}

#[component]
pub fn SharePage() -> impl IntoView {
    let params = use_params_map();
    let shown = RwSignal::new(Shown::Loading);
    let lost = RwSignal::new(false);
    // A new token per id: a stale loop stops when the page moves to another job.
    let token = StoredValue::new(0u64);
    Effect::new(move || {
        let raw = params.with(|p| p.get("id")).unwrap_or_default();
        token.update_value(|t| *t += 1);
        let mine = token.get_value();
        let Some(id) = RequestId::parse(&raw) else {
            shown.set(Shown::Failed(not_found()));
            return;
        };
        shown.set(Shown::Loading);
        spawn_local(async move {
            let url = format!("/v2/requests/{id}");
            let mut failures = 0u32;
            loop {
                if token.try_get_value() != Some(mine) {
                    return;
                }
                let read = client::result(&url, None).await;
                let next = match &read {
                    Ok(r) => Some(Shown::Job(Box::new(r.clone()))),
                    Err(e) => match e.read() {
                        Read::Gone => Some(Shown::Failed(e.clone())),
                        _ if failures >= 3 && shown.get_untracked() == Shown::Loading => {
                            Some(Shown::Failed(e.clone()))
                        }
                        _ => None,
                    },
                };
                let _ = lost.try_set(read.is_err() && next.is_none());
                failures = if read.is_err() { failures + 1 } else { 0 };
                let running = matches!(&read, Ok(r) if !r.status.is_terminal());
                if let Some(n) = next {
                    let _ = shown.try_set(n);
                }
                let gone = read.as_ref().is_err_and(|e| e.read() == Read::Gone);
                if (read.is_ok() && !running) || gone {
                    return;
                }
                client::sleep(if read.is_err() { 3_000 } else { 2_000 }).await;
            }
        });
    });
    view! {
        <section class="share">
            {move || match shown.get() {
                Shown::Loading => view! { <p class="empty" role="status">"Loading…"</p> }.into_any(),
                Shown::Failed(error) => view! {
                    <ErrorView title="Cannot load this result"
                        gone="This result does not exist or has expired." error=error />
                }.into_any(),
                Shown::Job(r) => view! { <Shared r=*r /> }.into_any(),
            }}
            <Show when=move || lost.get()>
                <p class="lost" role="status">"Connection lost — retrying"</p>
            </Show>
        </section>
    }
}

#[component]
fn Shared(
    /// The job.
    r: JobResult,
) -> impl IntoView {
    let now = (js_sys::Date::now() / 1000.0) as u64;
    let expiry = expiry_text(r.expires_at, now);
    let model = r.model;
    let params: Vec<(String, String)> = model
        .params()
        .iter()
        .filter_map(|p| {
            r.params
                .get(p.name)
                .map(|v| (p.label.to_owned(), value_text(v)))
        })
        .filter(|(label, _)| label != "Prompt")
        .collect();
    let timings = format!(
        "{} · {}{}",
        r.metrics.provider.clone().unwrap_or_default(),
        r.metrics.total_time.map_or_else(
            || "timing unknown".to_owned(),
            |t| format!("took {}", eta::elapsed_text(t))
        ),
        r.metrics
            .queue_time
            .map(|q| format!(" (queued {})", eta::elapsed_text(q)))
            .unwrap_or_default()
    );
    let remix = format!("/?remix={}", r.request_id);
    let (control, depth) =
        result_layers(&r.params, r.control_image.as_ref(), r.depth_image.as_ref());
    let status = r.status;
    view! {
        <article class="panel share-card">
            <p class="hint">{model.title()}</p>
            <h1 class="share-prompt" data-testid="share-prompt">{r.params.prompt().to_owned()}</h1>
            {match status {
                JobStatus::Completed => view! {
                    <div class="outputs">
                        {r.images.iter().map(|i| &i.url).enumerate().map(|(n, url)| view! {
                            <figure class="output">
                                // The result alone, unless its owner chose to show the
                                // photo it was made from, or only its depth map (only
                                // then are their links here).
                                <CompareLayers control=control.clone() depth=depth.clone()
                                    output=url.clone() label=format!("Generated: {}", r.params.prompt())
                                    output_testid="share-output" />
                                <figcaption class="actions">
                                    <a class="button small" href=url.clone() target="_blank" rel="noopener" aria-label=format!("Full size: image {}", n + 1)>"Full size"</a>
                                    <a class="button small" href=url.clone() download=download_name(r.params.prompt(), r.seed, n, url)
                                        aria-label=format!("Download image {}", n + 1)>"Download"</a>
                                </figcaption>
                            </figure>
                        }).collect_view()}
                    </div>
                }.into_any(),
                JobStatus::Failed => view! {
                    <p class="error" role="alert">{r.error.clone().unwrap_or_else(|| "This job failed.".into())}</p>
                }.into_any(),
                _ => view! { <p role="status" class="badge processing">"Still generating…"</p> }.into_any(),
            }}
            <div class="actions">
                <a class="button generate-link" href=remix data-testid="share-remix">"Remix in the studio"</a>
            </div>
            <dl class="params-list">
                {params.into_iter().map(|(k, v)| view! { <div><dt>{k}</dt><dd>{v}</dd></div> }).collect_view()}
            </dl>
            <p class="help">{timings}{expiry.map(|t| format!(" · {t}"))}</p>
        </article>
    }
}
