//! What this browser remembers and shares across the app: the access key, the
//! remaining credits (from `x-remaining-credits`), the theme, and recent job
//! durations for ETAs. Persisted in localStorage. (Jobs are in `crate::store`.)

use std::cell::RefCell;
use std::rc::Rc;

use leptos::prelude::*;
use parallax_api::Model;

use crate::logic::eta;

const KEY: &str = "parallax.key";
const THEME: &str = "parallax.theme";

/// Called with each balance a response reports.
type CreditsListener = Rc<dyn Fn(u64)>;

thread_local! {
    static API_KEY: RefCell<Option<String>> = const { RefCell::new(None) };
    static ON_CREDITS: RefCell<Option<CreditsListener>> = RefCell::new(None);
}

fn storage() -> Option<web_sys::Storage> {
    web_sys::window()?.local_storage().ok().flatten()
}

pub fn load(name: &str) -> Option<String> {
    storage()?.get_item(name).ok().flatten()
}

/// Remembers a setting across visits. Storage may refuse (full, or blocked in a
/// private window): the setting then holds for this tab only, and the console says so.
pub fn save(name: &str, value: &str) {
    let stored = storage().map(|s| {
        if value.is_empty() {
            s.remove_item(name)
        } else {
            s.set_item(name, value)
        }
    });
    if !matches!(stored, Some(Ok(()))) {
        web_sys::console::warn_1(
            &format!(
                "Parallax: the setting {name} could not be stored; it holds for this tab only"
            )
            .into(),
        );
    }
}

/// The key requests carry (`x-api-key`), if the user set one.
pub fn api_key() -> Option<String> {
    API_KEY.with(|k| k.borrow().clone())
}

/// Reports a balance seen on a response.
pub fn saw_credits(credits: u64) {
    if let Some(f) = ON_CREDITS.with(|c| c.borrow().clone()) {
        f(credits);
    }
}

/// Light, dark, or following the system.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Theme {
    System,
    Light,
    Dark,
}

impl Theme {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::System => "system",
            Self::Light => "light",
            Self::Dark => "dark",
        }
    }

    pub fn parse(s: &str) -> Self {
        match s {
            "light" => Self::Light,
            "dark" => Self::Dark,
            _ => Self::System,
        }
    }
}

/// The app-wide state, provided as context.
#[derive(Debug, Clone, Copy)]
pub struct Session {
    pub key: RwSignal<String>,
    pub credits: RwSignal<Option<u64>>,
    pub theme: RwSignal<Theme>,
}

/// Creates the session from storage and keeps storage, requests and the page in sync.
pub fn provide() -> Session {
    let session = Session {
        key: RwSignal::new(load(KEY).unwrap_or_default()),
        credits: RwSignal::new(None),
        theme: RwSignal::new(Theme::parse(&load(THEME).unwrap_or_default())),
    };
    let initial = session.key.get_untracked().trim().to_owned();
    API_KEY.with(|k| *k.borrow_mut() = (!initial.is_empty()).then_some(initial));
    let credits = session.credits;
    ON_CREDITS.with(|c| *c.borrow_mut() = Some(Rc::new(move |n| credits.set(Some(n)))));
    Effect::new(move || {
        let key = session.key.get().trim().to_owned();
        save(KEY, &key);
        API_KEY.with(|k| *k.borrow_mut() = (!key.is_empty()).then_some(key));
    });
    Effect::new(move || {
        let theme = session.theme.get();
        save(
            THEME,
            if theme == Theme::System {
                ""
            } else {
                theme.as_str()
            },
        );
        if let Some(root) = document().document_element() {
            let _ = root.set_attribute("data-theme", theme.as_str());
        }
    });
    provide_context(session);
    session
}

pub fn use_session() -> Session {
    expect_context::<Session>()
}

fn eta_key(model: Model) -> String {
    format!("parallax.eta.{}", model.slug())
}

/// Recent job durations on this device for `model`, in seconds.
pub fn durations(model: Model) -> Vec<f64> {
    load(&eta_key(model))
        .and_then(|s| crate::json::parse(&s).ok())
        .unwrap_or_default()
}

pub fn record_duration(model: Model, seconds: f64) {
    let mut history = durations(model);
    eta::record(&mut history, seconds);
    save(&eta_key(model), &crate::json::stringify(&history));
}
