//! The Parallax playground: swaps index.html's static first view for the app.

mod app;
mod client;
mod components;
mod image;
mod jobs;
mod json;
mod logic;
mod pages;
mod session;
mod store;

fn main() {
    console_error_panic_hook::set_once();
    // index.html's static first view goes in the same task as the app mounts: no
    // frame shows neither or both.
    if let Some(shell) = leptos::prelude::document().get_element_by_id("shell") {
        shell.remove();
    }
    leptos::mount::mount_to_body(app::App);
}
