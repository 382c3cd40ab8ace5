//! The playground: pick a control image, write a prompt, generate, watch the job.

use leptos::html;
use leptos::prelude::*;
use leptos::task::spawn_local;
use parallax_api::{JobStatus, Model, validate_value};
use web_sys::FormData;

use crate::client::{self, ClientError};
use crate::components::job_card::JobCard;
use crate::jobs::{JobView, Phase, poll_delay_ms};

/// Status polls that may fail in a row (network blips) before the card gives up.
const MAX_POLL_ERRORS: u32 = 5;

#[component]
pub fn PlaygroundPage() -> impl IntoView {
    let model = RwSignal::new(Model::FluxDepthPro);
    let prompt = RwSignal::new(String::new());
    let preview = RwSignal::new(None::<String>);
    let form_error = RwSignal::new(None::<String>);
    let jobs = RwSignal::new(Vec::<RwSignal<JobView>>::new());
    let next_key = StoredValue::new(0u64);
    let file_input = NodeRef::<html::Input>::new();

    let prompt_error = move || {
        let p = prompt.get();
        if p.is_empty() {
            return None;
        }
        let spec = model.get().param("prompt")?;
        validate_value(spec, &serde_json::Value::from(p)).err()
    };

    let on_file = move |_| {
        let file = file_input
            .get()
            .and_then(|i| i.files())
            .and_then(|f| f.get(0));
        if let Some(old) = preview.get_untracked() {
            let _ = web_sys::Url::revoke_object_url(&old);
        }
        preview.set(file.and_then(|f| web_sys::Url::create_object_url_with_blob(&f).ok()));
        form_error.set(None);
    };

    let generate = move || {
        let file = file_input
            .get()
            .and_then(|i| i.files())
            .and_then(|f| f.get(0));
        let text = prompt.get_untracked().trim().to_owned();
        let problem = match (&file, text.is_empty()) {
            (None, _) => Some("Choose a control image first."),
            (_, true) => Some("Write a prompt describing the new image."),
            _ => None,
        };
        if let Some(p) = problem {
            form_error.set(Some(p.into()));
            return;
        }
        let (Some(file), Ok(form)) = (file, FormData::new()) else {
            return;
        };
        let _ = form.append_with_str("prompt", &text);
        let _ = form.append_with_blob_and_filename("control_image", &file, &file.name());
        form_error.set(None);
        let key = next_key.get_value();
        next_key.set_value(key + 1);
        let job = RwSignal::new(JobView {
            key,
            model: model.get_untracked(),
            prompt: text,
            request_id: None,
            phase: Phase::Submitting,
        });
        jobs.update(|list| list.insert(0, job));
        spawn_local(run_job(job, form));
    };

    view! {
        <section class="studio">
            <form class="panel" on:submit=move |ev| { ev.prevent_default(); generate(); }>
                <fieldset class="models">
                    <legend>"Model"</legend>
                    {Model::ALL.into_iter().map(|m| view! {
                        <label class="model-choice">
                            <input type="radio" name="model" value=m.slug()
                                prop:checked=move || model.get() == m
                                on:change=move |_| model.set(m) />
                            <span>{m.title()}</span>
                        </label>
                    }).collect_view()}
                </fieldset>
                <p class="hint">{move || model.get().summary()}</p>

                <label for="control-image" class="field-label">"Control image"</label>
                <input id="control-image" type="file" accept="image/jpeg,image/png,image/webp"
                    node_ref=file_input on:change=on_file data-testid="control-image" />
                {move || preview.get().map(|src| view! {
                    <img class="preview" src=src alt="Control image preview" />
                })}

                <label for="prompt" class="field-label">"Prompt"</label>
                <textarea id="prompt" rows="3" placeholder="A cosy reading nook, warm evening light"
                    data-testid="prompt"
                    prop:value=move || prompt.get()
                    on:input=move |ev| prompt.set(event_target_value(&ev))
                    on:keydown=move |ev: web_sys::KeyboardEvent| {
                        if ev.key() == "Enter" && (ev.ctrl_key() || ev.meta_key()) {
                            ev.prevent_default();
                            generate();
                        }
                    }
                    aria-describedby="prompt-error"></textarea>
                <p id="prompt-error" class="field-error">{prompt_error}</p>

                <button type="submit" class="generate" data-testid="generate">"Generate"</button>
                <p class="form-error" role="alert">{move || form_error.get()}</p>
            </form>

            <section class="results" aria-label="Jobs">
                <Show when=move || jobs.with(Vec::is_empty)>
                    <p class="empty">"Your images appear here. Jobs keep running on the server even if you close this tab."</p>
                </Show>
                <For each=move || jobs.get() key=|job| job.with_untracked(|j| j.key) let(job)>
                    <JobCard job=job />
                </For>
            </section>
        </section>
    }
}

/// Submits a job and follows it to the end, updating its card.
async fn run_job(job: RwSignal<JobView>, form: FormData) {
    let set_phase = move |phase: Phase| job.update(|j| j.phase = phase);
    let fail = move |e: ClientError| {
        set_phase(Phase::Failed {
            message: e.message(),
        })
    };
    let model = job.with_untracked(|j| j.model);
    let submitted = match client::submit(model, &form).await {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    job.update(|j| {
        j.request_id = Some(submitted.request_id.to_string());
        j.phase = Phase::Queued;
    });
    let mut errors = 0;
    for attempt in 0.. {
        client::sleep(poll_delay_ms(attempt)).await;
        match client::status(&submitted.status_url).await {
            Ok(s) if s.status.is_terminal() => break,
            Ok(s) => {
                errors = 0;
                set_phase(Phase::from_status(&s));
            }
            Err(e) if matches!(e, ClientError::Api { .. }) || errors >= MAX_POLL_ERRORS => {
                return fail(e);
            }
            Err(_) => errors += 1,
        }
    }
    match client::result(&submitted.response_url).await {
        Ok(r) if r.status == JobStatus::Completed || r.status == JobStatus::Failed => {
            set_phase(Phase::from_result(&r));
        }
        Ok(_) => set_phase(Phase::Processing),
        Err(e) => fail(e),
    }
}
