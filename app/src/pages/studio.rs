//! The studio: the form (model, control image, prompt, parameters from the catalog),
//! the API snippets, and the jobs from the store with their results.
//!
//! The form and the control image live in [`Studio`], provided by the app, so going
//! to History and back keeps them, and saved in localStorage (`parallax.studio`), so a
//! reload keeps the prompt, the parameters and an image that can be fetched again (a
//! sample, an output, an https URL; not a picked file's bytes). The jobs live in the
//! store, so a reload keeps them and resumes the running ones. The URL carries the model (`?model=`), a job to show
//! (`?job=`), and a job to remix (`?remix=`, from a share page).

use leptos::prelude::*;
use leptos::task::spawn_local;
use leptos_router::NavigateOptions;
use leptos_router::hooks::{use_navigate, use_query_map};
use parallax_api::{Model, RequestId};
use wasm_bindgen::JsCast;

use crate::client;
use crate::components::image_input::{ImageInput, Picked};
use crate::components::job_card::{CardActions, JobCard};
use crate::components::no_jobs::NoJobs;
use crate::components::param_field::ParamField;
use crate::components::snippets_panel::SnippetsPanel;
use crate::image::{self};
use crate::logic::form::{self, target_megapixels};
use crate::logic::store::Job;
use crate::store::use_store;

mod depth;
mod depth_panel;
mod generate;
mod pending_card;
mod state;

use depth_panel::{DepthPanel, DepthToggle};
pub use pending_card::Clock;
use pending_card::PendingCard;
use state::Control;
pub use state::Studio;

/// ETA before this device has finished a job of the model.
const DEFAULT_EXPECTED_SECS: f64 = 20.0;
/// Jobs shown in the studio (History has them all).
const STUDIO_JOBS: usize = 24;

#[component]
pub fn StudioPage() -> impl IntoView {
    let studio = expect_context::<Studio>();
    let now = expect_context::<Clock>().0;
    let store = use_store();
    let Studio {
        form,
        control,
        preview,
        preparing,
        image_error,
        form_error,
        show_errors,
        ..
    } = studio;
    let query = use_query_map();
    let navigate = use_navigate();

    // The URL's model wins over the form's (a shared or reloaded link); one the
    // studio cannot generate with (the depth preview's) is the default model instead.
    Effect::new(move || {
        let wanted = query
            .with(|q| q.get("model"))
            .and_then(|m| Model::from_slug(&m))
            .map(form::generator);
        if let Some(m) = wanted
            && form.with_untracked(|f| f.model) != m
        {
            form.update(|f| f.switch_model(m));
        }
    });
    // A size change after the pick: prepare the image again for the new size.
    let megapixels = Memo::new(move |_| form.with(target_megapixels));
    Effect::new(move |prev: Option<f64>| {
        let mp = megapixels.get();
        if prev.is_some_and(|p| p != mp) {
            studio.prepare_again();
        }
        mp
    });

    let on_pick = Callback::new(move |picked: Picked| match picked {
        Picked::File(f) => match image::precheck(&f.type_(), f.size()) {
            Ok(()) => studio.pick_file(f),
            Err(e) => image_error.set(Some(e)),
        },
        Picked::Sample(url) => studio.load_url(url),
        Picked::Url(u) if u.starts_with("https://") => studio.use_remote(u),
        Picked::Url(_) => image_error.set(Some("Use an https:// URL".into())),
    });
    let info = Signal::derive(move || {
        control.with(|c| match c {
            Some(Control::Prepared(p)) => Some(format!(
                "Will upload {}×{} JPEG, {} KB",
                p.width,
                p.height,
                image::whole(p.bytes / 1024.0)
            )),
            Some(Control::Url(_)) => Some("The server will fetch this URL.".into()),
            None => None,
        })
    });

    let generate = move || studio.generate(store);

    let actions = CardActions {
        remix: Callback::new(move |job: Job| {
            studio.remix(job.model, &job.params, job.control_image.clone());
            scroll_to_form();
        }),
        use_as_control: Callback::new(move |url: String| {
            studio.load_url(url);
            scroll_to_form();
        }),
    };

    // `/?remix=<id>` (from a share page): load that job's parameters and image.
    Effect::new(move || {
        let Some(id) = query.with(|q| q.get("remix")) else {
            return;
        };
        if studio.remixed.get_value().as_deref() == Some(id.as_str()) {
            return;
        }
        studio.remixed.set_value(Some(id.clone()));
        let Some(id) = RequestId::parse(&id) else {
            form_error.set(Some("That remix link is not valid.".into()));
            return;
        };
        spawn_local(async move {
            match client::result_retried(&format!("/v2/requests/{id}")).await {
                Ok(r) => {
                    // Only the job's owner gets its photo; anyone else brings their own.
                    studio.remix(r.model, &r.params, r.control_image.clone());
                }
                Err(e) => form_error.set(Some(format!("Could not load that job: {}", e.message()))),
            }
        });
    });
    // `/?job=<id>`: the job to show.
    let selected = Memo::new(move |_| query.with(|q| q.get("job")));

    let model = Memo::new(move |_| form.with(|f| f.model));
    let switch_model = move |m: Model| {
        form.update(|f| f.switch_model(m));
        navigate(
            &format!("/?model={}", m.slug()),
            NavigateOptions {
                replace: true,
                scroll: false,
                ..Default::default()
            },
        );
    };
    let job_ids = Memo::new(move |_| {
        store.state.with(|s| {
            s.jobs
                .iter()
                .take(STUDIO_JOBS)
                .map(|j| j.id.clone())
                .collect::<Vec<_>>()
        })
    });
    // Scrolled to once its slot is in the list.
    let scrolled_to = StoredValue::new(None::<String>);
    Effect::new(move || {
        let Some(id) = selected.get() else {
            return;
        };
        if !job_ids.with(|ids| ids.contains(&id))
            || scrolled_to.with_value(|s| s.as_deref() == Some(id.as_str()))
        {
            return;
        }
        scrolled_to.set_value(Some(id.clone()));
        request_animation_frame(move || {
            if let Ok(Some(el)) =
                document().query_selector(&format!("[data-slot=\"{}\"]", css_id(&id)))
            {
                el.scroll_into_view();
            }
        });
    });
    let nothing = move || job_ids.with(Vec::is_empty) && store.pending.with(Vec::is_empty);
    view! {
        <section class="studio">
            <h1 class="visually-hidden">"Studio"</h1>
            <form id="studio-form" class="panel form" novalidate
                on:submit=move |ev| { ev.prevent_default(); generate(); }
                on:keydown=move |ev: web_sys::KeyboardEvent| {
                    if ev.key() != "Enter" {
                        return;
                    }
                    if ev.ctrl_key() || ev.meta_key() {
                        ev.prevent_default();
                        // One job per key press: a held key repeats keydown.
                        if !ev.repeat() { generate(); }
                        return;
                    }
                    // Enter in a one-line field does not submit a paid job.
                    let in_input = ev.target()
                        .and_then(|t| t.dyn_into::<web_sys::HtmlInputElement>().ok())
                        .is_some_and(|i| i.type_() != "submit");
                    if in_input { ev.prevent_default(); }
                }>
                <fieldset class="models">
                    <legend>"Model"</legend>
                    {Model::GENERATORS.into_iter().map(|m| { let switch_model = switch_model.clone(); view! {
                        <label class="model-choice">
                            <input type="radio" name="model" value=m.slug() data-testid=format!("model-{}", m.slug())
                                prop:checked=move || model.get() == m
                                on:change=move |_| switch_model(m) />
                            <span>{m.title()}</span>
                        </label>
                    } }).collect_view()}
                </fieldset>
                <p class="hint">{move || model.get().summary()}</p>

                <ImageInput on_pick=on_pick preview=preview.into() busy=preparing.into()
                    error=image_error.into() info=info>
                    <DepthPanel />
                </ImageInput>
                <DepthToggle />

                <label for="prompt" class="field-label">"Prompt"</label>
                <textarea id="prompt" rows="3" placeholder="A cosy reading nook, warm evening light"
                    data-testid="prompt" aria-describedby="prompt-help prompt-error" required
                    prop:value=move || form.with(|f| f.get("prompt").to_owned())
                    on:input=move |ev| form.update(|f| f.set("prompt", event_target_value(&ev)))></textarea>
                <p id="prompt-help" class="help">"Describe the new image; the control image's layout is kept. Ctrl+Enter (⌘+Enter) generates."</p>
                <p id="prompt-error" class="field-error" role="status">
                    {move || form.with(|f| {
                        let e = f.error("prompt")?;
                        (show_errors.get() || !f.get("prompt").is_empty()).then(|| format!("Prompt {e}"))
                    })}
                </p>

                {move || {
                    let m = model.get();
                    let (basic, advanced): (Vec<_>, Vec<_>) = m.params().iter()
                        .filter(|p| !matches!(p.name, "prompt" | "control_image" | "control_type"))
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
                    <button type="submit" class="generate" data-testid="generate"
                        prop:disabled=move || preparing.get()>
                        {move || if preparing.get() { "Preparing image…" } else { "Generate" }}
                    </button>
                </div>
            </form>

            <section class="results" aria-label="Jobs">
                <NoJobs
                    empty=Signal::derive(nothing)
                    text="Your images appear here. Jobs keep running on the server even if you close this tab."
                />
                <For each=move || store.pending.get() key=|p| (p.key, p.error.clone()) let(p)>
                    <PendingCard pending=p />
                </For>
                <For each=move || job_ids.get() key=|id| id.clone() let(id)>
                    {
                        let mine = id.clone();
                        view! {
                            <div class="job-slot" data-slot=mine.clone() class:selected=move || selected.get().as_deref() == Some(mine.as_str())>
                                <JobCard id=id actions=actions now=now />
                            </div>
                        }
                    }
                </For>
                <Show when=move || { store.state.with(|s| s.jobs.len()) > STUDIO_JOBS }>
                    <a class="button" href="/history">"All jobs in History"</a>
                </Show>
                <SnippetsPanel form=form />
            </section>
        </section>
    }
}

/// `id` made safe inside a CSS attribute selector (request ids are UUIDs anyway).
fn css_id(id: &str) -> String {
    id.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect()
}

fn focus(id: &str) {
    if let Some(el) = document().get_element_by_id(id) {
        if let Some(details) = el.closest("details").ok().flatten() {
            let _ = details.set_attribute("open", "");
        }
        if let Ok(el) = el.dyn_into::<web_sys::HtmlElement>() {
            let _ = el.focus();
        }
    }
}

/// Brings the newest job card into view (on a phone it is below the whole form).
fn scroll_to_newest_job() {
    request_animation_frame(|| {
        if let Ok(Some(el)) = document().query_selector(".results [data-testid=job]") {
            let options = web_sys::ScrollIntoViewOptions::new();
            options.set_block(web_sys::ScrollLogicalPosition::Nearest);
            el.scroll_into_view_with_scroll_into_view_options(&options);
        }
    });
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
