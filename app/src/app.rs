//! The app shell: the session, the job store and the studio's state (all outliving
//! page changes), the header (brand, pages, settings), the router, and the page-wide
//! clock. Navigation between pages is client-side: no reload, nothing forgotten.

use leptos::prelude::*;
use leptos_router::components::{A, Route, Router, Routes};
use leptos_router::path;

use crate::components::settings_panel::SettingsPanel;
use crate::pages::history::HistoryPage;
use crate::pages::share::SharePage;
use crate::pages::studio::{Clock, Studio, StudioPage};
use crate::{session, store};

#[component]
pub fn App() -> impl IntoView {
    session::provide();
    store::provide();
    Studio::provide();
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
    provide_context(Clock(now.into()));
    view! {
        <Router>
            <a class="skip" href="#main">"Skip to the content"</a>
            <header class="top">
                <a href="/" class="brand">
                    <span class="logo" aria-hidden="true">"◐"</span>
                    "Parallax"
                </a>
                <span class="tagline">"Keep the layout. Change everything else."</span>
                <nav class="nav" aria-label="Pages">
                    <A href="/" exact=true>"Studio"</A>
                    <A href="/history" exact=true attr:data-testid="nav-history">"History"</A>
                </nav>
                <SettingsPanel />
            </header>
            <main id="main" tabindex="-1">
                <Routes fallback=|| view! { <StudioPage /> }>
                    <Route path=path!("/") view=StudioPage />
                    <Route path=path!("/history") view=HistoryPage />
                    <Route path=path!("/r/:id") view=SharePage />
                </Routes>
            </main>
        </Router>
    }
}
