//! `/r/{id}`: a shared result, for anyone with the link: the images with a compare
//! slider against the control image, the prompt and parameters, provider and
//! timings, when it expires, and Remix (opens the studio prefilled).

use leptos::prelude::*;
use leptos::task::spawn_local;
use parallax_api::{JobResult, JobStatus};

use crate::client::{self, ClientError};
use crate::components::compare::CompareSlider;
use crate::logic::form::value_text;
use crate::logic::{eta, history};

#[component]
pub fn SharePage(
    /// The request id from the URL.
    id: String,
) -> impl IntoView {
    let job = RwSignal::new(None::<Result<JobResult, ClientError>>);
    let url = format!("/v2/requests/{id}");
    spawn_local(async move {
        let first = client::result(&url).await;
        let running = matches!(&first, Ok(r) if !r.status.is_terminal());
        job.set(Some(first));
        if running {
            let followed = client::follow(&format!("{url}/status"), &url, |_| {}).await;
            job.set(Some(followed));
        }
    });
    view! {
        <section class="share">
            {move || match job.get() {
                None => view! { <p class="empty" role="status">"Loading…"</p> }.into_any(),
                Some(Err(e)) => view! {
                    <div class="panel">
                        <h1>"Not found"</h1>
                        <p data-testid="share-error">{match e {
                            ClientError::Api { status: 404, .. } => "This result does not exist or has expired.".to_owned(),
                            other => other.message(),
                        }}</p>
                        <a class="button" href="/">"Open the studio"</a>
                    </div>
                }.into_any(),
                Some(Ok(r)) => view! { <Shared r=r /> }.into_any(),
            }}
        </section>
    }
}

#[component]
fn Shared(
    /// The job.
    r: JobResult,
) -> impl IntoView {
    let now = (js_sys::Date::now() / 1000.0) as u64;
    let expiry = history::expiry_text(r.expires_at, now);
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
                                <CompareSlider before=control.clone() after=url.clone() label=format!("Generated image {}", n + 1) />
                                <figcaption class="actions">
                                    <a class="button small" href=url.clone() target="_blank" rel="noopener">"Full size"</a>
                                    <a class="button small" href=url.clone() download="">"Download"</a>
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
