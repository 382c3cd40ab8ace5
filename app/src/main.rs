//! The Parallax playground: mounts the app, nothing else.

mod app;
mod client;
mod components;
mod jobs;
mod pages;

fn main() {
    console_error_panic_hook::set_once();
    leptos::mount::mount_to_body(app::App);
}
