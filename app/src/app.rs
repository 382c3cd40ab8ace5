//! The app shell: header and the playground page.

use leptos::prelude::*;

use crate::pages::playground::PlaygroundPage;

#[component]
pub fn App() -> impl IntoView {
    view! {
        <header class="top">
            <a class="brand" href="/">
                <span class="logo" aria-hidden="true">"◐"</span>
                "Parallax"
            </a>
            <span class="tagline">"Keep the layout. Change everything else."</span>
        </header>
        <main>
            <PlaygroundPage />
        </main>
    }
}
