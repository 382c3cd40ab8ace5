//! One job: its status, and its images when done or its error when failed.

use leptos::prelude::*;

use crate::jobs::{JobView, Phase};

/// Shows a job and follows its phase as it changes.
#[component]
pub fn JobCard(
    /// The job, updated by its polling task.
    job: RwSignal<JobView>,
) -> impl IntoView {
    let phase = move || job.with(|j| j.phase.clone());
    view! {
        <article class="job" data-testid="job" data-request-id=move || job.with(|j| j.request_id.clone())>
            <header>
                <span class=move || format!("badge {}", phase().class()) data-testid="job-status" aria-live="polite">
                    {move || phase().label()}
                </span>
                <span class="model">{move || job.with(|j| j.model.title())}</span>
            </header>
            <p class="prompt">{move || job.with(|j| j.prompt.clone())}</p>
            {move || match phase() {
                Phase::Completed { outputs } => view! {
                    <div class="outputs">
                        {outputs.into_iter().enumerate().map(|(n, url)| {
                            let href = url.clone();
                            view! {
                                <a href=href target="_blank" rel="noopener">
                                    <img src=url alt=format!("Generated image {}", n + 1) data-testid="job-output" />
                                </a>
                            }
                        }).collect_view()}
                    </div>
                }.into_any(),
                Phase::Failed { message } => view! {
                    <p class="error" role="alert" data-testid="job-error">{message}</p>
                }.into_any(),
                _ => view! { <div class="progress" aria-hidden="true"><span></span></div> }.into_any(),
            }}
        </article>
    }
}
