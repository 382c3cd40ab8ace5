//! The app shell: header (brand, settings with key, credits and theme), the
//! playground, and the page-wide clock and wake-ups.

use leptos::ev;
use leptos::prelude::*;

use crate::client;
use crate::components::settings_panel::SettingsPanel;
use crate::pages::Route;
use crate::pages::history::HistoryPage;
use crate::pages::playground::PlaygroundPage;
use crate::pages::share::SharePage;
use crate::session;

#[component]
pub fn App() -> impl IntoView {
    session::provide();
    let route = Route::parse(&window().location().pathname().unwrap_or_default());
    let now = RwSignal::new(js_sys::Date::now());
    let tick = set_interval_with_handle(
        move || now.set(js_sys::Date::now()),
        std::time::Duration::from_secs(1),
    );
    on_cleanup(move || {
        if let Ok(t) = tick {
            t.clear();
        }
    });
    // Phones freeze background tabs: poll again as soon as the page is back.
    let _visible = window_event_listener(ev::visibilitychange, move |_| client::wake_all());
    let _shown = window_event_listener(ev::pageshow, move |_| client::wake_all());
    view! {
        <a class="skip" href="#prompt">"Skip to the prompt"</a>
        <header class="top">
            <a class="brand" href="/">
                <span class="logo" aria-hidden="true">"◐"</span>
                "Parallax"
            </a>
            <span class="tagline">"Keep the layout. Change everything else."</span>
            <nav class="nav" aria-label="Pages">
                <a href="/" aria-current=(route == Route::Playground).then_some("page")>"Studio"</a>
                <a href="/history" aria-current=(route == Route::History).then_some("page") data-testid="nav-history">"History"</a>
            </nav>
            <SettingsPanel />
        </header>
        <main>
            {match route.clone() {
                Route::Playground => view! { <PlaygroundPage now=now.into() /> }.into_any(),
                Route::History => view! { <HistoryPage /> }.into_any(),
                Route::Share(id) => view! { <SharePage id=id /> }.into_any(),
            }}
        </main>
    }
}
