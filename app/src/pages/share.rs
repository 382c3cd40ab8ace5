//! `/r/{id}`: a shared result, for anyone with the link: the images with a compare
//! slider against the control image, the prompt and parameters, provider and
//! timings, when it expires, and Remix (opens the studio prefilled).

use leptos::prelude::*;
use leptos_router::hooks::use_params_map;
use parallax_api::{JobResult, JobStatus, RequestId};

use crate::client::{self, ClientError};
use crate::components::compare::CompareSlider;
use crate::components::error_view::ErrorView;
use crate::logic::eta;
use crate::logic::form::value_text;
use crate::logic::poll::Read;
use crate::logic::store::{download_name, expiry_text};

/// How often a job still running is read again.
const REFRESH_MS: u64 = 2_000;

#[component]
pub fn SharePage() -> impl IntoView {
    let params = use_params_map();
    let id = Memo::new(move |_| params.with(|p| p.get("id")).unwrap_or_default());
    // The job last shown, kept on screen while a refresh fails ("Connection lost").
    let last = StoredValue::new(None::<JobResult>);
    let lost = RwSignal::new(false);
    let result = LocalResource::new(move || {
        let raw = id.get();
        async move {
            let Some(id) = RequestId::parse(&raw) else {
                // No job can have this id: what the server would say for it.
                return Err(ClientError::Http {
                    status: 404,
                    retry_after_ms: None,
                });
            };
            let read = client::result_retried(&format!("/v2/requests/{id}")).await;
            let shown = last
                .get_value()
                .filter(|j| j.request_id.to_string() == id.to_string());
            let _ = lost.try_set(read.is_err() && shown.is_some());
            match read {
                Ok(r) => {
                    last.set_value(Some(r.clone()));
                    Ok(r)
                }
                Err(e) if e.read() == Read::Gone => Err(e),
                Err(e) => shown.ok_or(e),
            }
        }
    });
    // A job still running (or a refresh that failed) is read again in a moment.
    Effect::new(move || {
        let again =
            lost.get() || result.with(|r| matches!(r, Some(Ok(j)) if !j.status.is_terminal()));
        if again
            && let Ok(timer) = set_timeout_with_handle(
                move || result.refetch(),
                std::time::Duration::from_millis(REFRESH_MS),
            )
        {
            on_cleanup(move || timer.clear());
        }
    });
    view! {
        <section class="share">
            <Transition fallback=|| view! { <p class="empty" role="status">"Loading…"</p> }>
                {move || Suspend::new(async move {
                    match result.await {
                        Ok(r) => view! { <Shared r=r /> }.into_any(),
                        Err(error) => view! {
                            <ErrorView title="Cannot load this result"
                                gone="This result does not exist or has expired." error=error />
                        }.into_any(),
                    }
                })}
            </Transition>
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
    let control = r.control_image.clone();
    let status = r.status;
    view! {
        <article class="panel share-card">
            <p class="hint">{model.title()}</p>
            <h1 class="share-prompt" data-testid="share-prompt">{r.params.prompt().to_owned()}</h1>
            {match status {
                JobStatus::Completed => view! {
                    <div class="outputs">
                        {r.output.iter().enumerate().map(|(n, url)| view! {
                            <figure class="output">
                                <CompareSlider before=control.clone() after=url.clone() label=format!("Generated: {}", r.params.prompt()) />
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
