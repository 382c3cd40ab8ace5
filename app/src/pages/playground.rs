//! The playground: the form (model, control image, prompt, parameters from the
//! catalog), the API snippets, and the jobs with their results.

use leptos::prelude::*;
use leptos::task::spawn_local;
use parallax_api::{JobStatus, Model};
use wasm_bindgen::JsCast;
use web_sys::FormData;

use crate::client;
use crate::components::image_input::{ImageInput, Picked};
use crate::components::job_card::{CardActions, JobCard};
use crate::components::param_field::ParamField;
use crate::components::snippets_panel::SnippetsPanel;
use crate::image::{self, Prepared};
use crate::jobs::{JobView, Phase};
use crate::logic::form::{FormState, target_megapixels};
use crate::logic::{eta, history};
use crate::session;

/// ETA before this device has finished a job of the model.
const DEFAULT_EXPECTED_SECS: f64 = 20.0;

/// The control image, ready to send.
#[derive(Debug, Clone)]
enum Control {
    Prepared(Prepared),
    Url(String),
}

fn now_ms() -> f64 {
    js_sys::Date::now()
}

#[component]
pub fn PlaygroundPage(
    /// The clock (ms), ticking once a second.
    now: Signal<f64>,
) -> impl IntoView {
    let form = RwSignal::new(FormState::new(Model::FluxDepthPro));
    let control = RwSignal::new(None::<Control>);
    let preview = RwSignal::new(None::<String>);
    let preparing = RwSignal::new(false);
    let image_error = RwSignal::new(None::<String>);
    let form_error = RwSignal::new(None::<String>);
    let jobs = RwSignal::new(Vec::<RwSignal<JobView>>::new());
    let next_key = StoredValue::new(0u64);
    let show_errors = RwSignal::new(false);

    let set_preview = move |url: Option<String>| {
        if let Some(old) = preview.get_untracked()
            && old.starts_with("blob:")
            && !jobs.with_untracked(|js| {
                js.iter()
                    .any(|j| j.with_untracked(|j| j.control_url.as_deref() == Some(old.as_str())))
            })
        {
            let _ = web_sys::Url::revoke_object_url(&old);
        }
        preview.set(url);
    };

    // Prepares a picked image (upright, downscaled, JPEG) for the current size.
    let prepare = move |blob: web_sys::Blob| {
        image_error.set(None);
        preparing.set(true);
        let megapixels = form.with_untracked(target_megapixels);
        spawn_local(async move {
            match image::prepare(&blob, megapixels).await {
                Ok(p) => {
                    set_preview(web_sys::Url::create_object_url_with_blob(&p.blob).ok());
                    control.set(Some(Control::Prepared(p)));
                }
                Err(e) => image_error.set(Some(e)),
            }
            preparing.set(false);
        });
    };
    let on_pick = Callback::new(move |picked: Picked| match picked {
        Picked::File(f) => match image::precheck(&f.type_(), f.size()) {
            Ok(()) => prepare(f.into()),
            Err(e) => image_error.set(Some(e)),
        },
        Picked::Url(u) if u.starts_with("https://") => {
            image_error.set(None);
            set_preview(Some(u.clone()));
            control.set(Some(Control::Url(u)));
        }
        Picked::Url(_) => image_error.set(Some("Use an https:// URL".into())),
    });
    let info = Signal::derive(move || {
        control.with(|c| match c {
            Some(Control::Prepared(p)) => Some(format!(
                "Will upload {}×{} JPEG, {:.0} KB",
                p.width,
                p.height,
                p.bytes / 1024.0
            )),
            Some(Control::Url(_)) => Some("The server will fetch this URL.".into()),
            None => None,
        })
    });

    let generate = move || {
        show_errors.set(true);
        let Some(ctl) = control.get_untracked() else {
            form_error.set(Some("Choose a control image first.".into()));
            return;
        };
        let state = form.get_untracked();
        if let Some((name, e)) = state.errors().into_iter().next() {
            let label = state.model.param(name).map_or(name, |p| p.label);
            form_error.set(Some(format!("{label} {e}")));
            return;
        }
        let Ok(data) = FormData::new() else { return };
        for (name, value) in state.fields() {
            let _ = data.append_with_str(name, &value);
        }
        let control_url = match &ctl {
            Control::Prepared(p) => {
                let _ = data.append_with_blob_and_filename("control_image", &p.blob, "control.jpg");
                web_sys::Url::create_object_url_with_blob(&p.blob).ok()
            }
            Control::Url(u) => {
                let _ = data.append_with_str("control_image", u);
                None
            }
        };
        form_error.set(None);
        if !state.seed_locked {
            form.update(|f| f.set("seed", String::new()));
        }
        let key = next_key.get_value();
        next_key.set_value(key + 1);
        let job = RwSignal::new(JobView {
            key,
            model: state.model,
            prompt: state.get("prompt").trim().to_owned(),
            request_id: None,
            response_url: None,
            phase: Phase::Submitting,
            started_ms: now_ms(),
            finished_ms: None,
            expected_secs: eta::expected(&session::durations(state.model), DEFAULT_EXPECTED_SECS),
            control_url,
            result: None,
        });
        jobs.update(|list| list.insert(0, job));
        spawn_local(run_job(job, data));
    };

    let actions = CardActions {
        cancel: Callback::new(move |job: RwSignal<JobView>| {
            if let Some(url) = job.with_untracked(|j| j.response_url.clone()) {
                spawn_local(async move {
                    if let Err(e) = client::cancel(&url).await {
                        job.update(|j| {
                            j.phase = Phase::Failed {
                                message: e.message(),
                            }
                        });
                    }
                    client::wake_all();
                });
            }
        }),
        remix: Callback::new(move |job: RwSignal<JobView>| {
            if let Some(r) = job.with_untracked(|j| j.result.clone()) {
                form.update(|f| f.load(r.model, &r.params));
                if let Some(url) = job.with_untracked(|j| j.control_url.clone()) {
                    reuse_control(url, prepare);
                }
                scroll_to_form();
            }
        }),
        use_as_control: Callback::new(move |url: String| {
            reuse_control(url, prepare);
            scroll_to_form();
        }),
    };

    // `/?remix=<id>` (from a share page): load that job's parameters and image.
    let remix_id = web_sys::Url::new(&window().location().href().unwrap_or_default())
        .ok()
        .and_then(|u| u.search_params().get("remix"));
    if let Some(id) = remix_id {
        spawn_local(async move {
            if let Ok(r) = client::result(&format!("/v2/requests/{id}")).await {
                form.update(|f| f.load(r.model, &r.params));
                reuse_control(r.control_image.clone(), prepare);
            }
        });
    }

    let model = move || form.with(|f| f.model);
    view! {
        <section class="studio">
            <form id="studio-form" class="panel form" novalidate
                on:submit=move |ev| { ev.prevent_default(); generate(); }
                on:keydown=move |ev: web_sys::KeyboardEvent| {
                    if ev.key() == "Enter" && (ev.ctrl_key() || ev.meta_key()) {
                        ev.prevent_default();
                        generate();
                    }
                }>
                <fieldset class="models">
                    <legend>"Model"</legend>
                    {Model::ALL.into_iter().map(|m| view! {
                        <label class="model-choice">
                            <input type="radio" name="model" value=m.slug() data-testid=format!("model-{}", m.slug())
                                prop:checked=move || model() == m
                                on:change=move |_| form.update(|f| f.switch_model(m)) />
                            <span>{m.title()}</span>
                        </label>
                    }).collect_view()}
                </fieldset>
                <p class="hint">{move || model().summary()}</p>

                <ImageInput on_pick=on_pick preview=preview.into() busy=preparing.into()
                    error=image_error.into() info=info />

                <label for="prompt" class="field-label">"Prompt"</label>
                <textarea id="prompt" rows="3" placeholder="A cosy reading nook, warm evening light"
                    data-testid="prompt" aria-describedby="prompt-help prompt-error" required
                    prop:value=move || form.with(|f| f.get("prompt").to_owned())
                    on:input=move |ev| form.update(|f| f.set("prompt", event_target_value(&ev)))></textarea>
                <p id="prompt-help" class="help">"Describe the new image; the control image's layout is kept. Ctrl+Enter generates."</p>
                <p id="prompt-error" class="field-error" role="status">
                    {move || form.with(|f| {
                        let e = f.error("prompt")?;
                        (show_errors.get() || !f.get("prompt").is_empty()).then(|| format!("Prompt {e}"))
                    })}
                </p>

                {move || {
                    let m = model();
                    let (basic, advanced): (Vec<_>, Vec<_>) = m.params().iter()
                        .filter(|p| !matches!(p.name, "prompt" | "control_image"))
                        .partition(|p| !p.advanced);
                    view! {
                        <div class="params">
                            {basic.into_iter().map(|spec| view! { <ParamField spec=spec form=form /> }).collect_view()}
                        </div>
                        <details class="advanced">
                            <summary>"Advanced"</summary>
                            <div class="params">
                                {advanced.into_iter().map(|spec| view! { <ParamField spec=spec form=form /> }).collect_view()}
                            </div>
                        </details>
                    }
                }}

                <div class="generate-bar">
                    <p class="form-error" role="alert">{move || form_error.get()}</p>
                    <button type="submit" class="generate" data-testid="generate">"Generate"</button>
                </div>
            </form>

            <section class="results" aria-label="Jobs">
                <Show when=move || jobs.with(Vec::is_empty)>
                    <p class="empty">"Your images appear here. Jobs keep running on the server even if you close this tab."</p>
                </Show>
                <For each=move || jobs.get() key=|job| job.with_untracked(|j| j.key) let(job)>
                    <JobCard job=job actions=actions now=now />
                </For>
                <SnippetsPanel form=form />
            </section>
        </section>
    }
}

fn scroll_to_form() {
    if let Some(el) = document().get_element_by_id("studio-form") {
        el.scroll_into_view();
    }
    if let Some(el) = document().get_element_by_id("prompt")
        && let Ok(el) = el.dyn_into::<web_sys::HtmlElement>()
    {
        let _ = el.focus();
    }
}

/// Loads an image URL (an output, or a job's control image) as the control image.
fn reuse_control(url: String, prepare: impl Fn(web_sys::Blob) + 'static) {
    spawn_local(async move {
        let Some(w) = web_sys::window() else { return };
        let Ok(resp) = wasm_bindgen_futures::JsFuture::from(w.fetch_with_str(&url)).await else {
            return;
        };
        let resp: web_sys::Response = resp.unchecked_into();
        let Ok(promise) = resp.blob() else { return };
        if let Ok(blob) = wasm_bindgen_futures::JsFuture::from(promise).await {
            prepare(blob.unchecked_into());
        }
    });
}

/// Submits a job and follows it to the end, updating its card and the history.
async fn run_job(job: RwSignal<JobView>, form: FormData) {
    let finish = move |phase: Phase| {
        job.update(|j| {
            j.phase = phase;
            j.finished_ms = Some(now_ms());
        });
    };
    let model = job.with_untracked(|j| j.model);
    let submitted = match client::submit(model, &form).await {
        Ok(s) => s,
        Err(e) => {
            return finish(Phase::Failed {
                message: e.message(),
            });
        }
    };
    job.update(|j| {
        j.request_id = Some(submitted.request_id.to_string());
        j.response_url = Some(submitted.response_url.clone());
        j.phase = Phase::Queued;
    });
    session::remember(history::Entry {
        id: submitted.request_id.to_string(),
        model: model.slug().to_owned(),
        prompt: job.with_untracked(|j| j.prompt.clone()),
        status: JobStatus::Queued,
        created_ms: job.with_untracked(|j| j.started_ms),
        outputs: Vec::new(),
        control_image: None,
        expires_at: None,
        error: None,
        response_url: submitted.response_url.clone(),
        params: parallax_api::Params::default(),
    });
    let followed = client::follow(&submitted.status_url, &submitted.response_url, |s| {
        job.update(|j| j.phase = Phase::from_status(s));
    })
    .await;
    match followed {
        Ok(r) if r.status == JobStatus::Completed || r.status == JobStatus::Failed => {
            if r.status == JobStatus::Completed {
                let started = job.with_untracked(|j| j.started_ms);
                session::record_duration(model, (now_ms() - started) / 1000.0);
            }
            session::remember(history::Entry::from_result(&r, &submitted.response_url));
            let phase = Phase::from_result(&r);
            job.update(|j| j.result = Some(r));
            finish(phase);
        }
        Ok(_) => job.update(|j| j.phase = Phase::Processing),
        Err(e) => finish(Phase::Failed {
            message: e.message(),
        }),
    }
}
