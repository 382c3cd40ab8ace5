//! The Parallax playground: mounts the app, nothing else.

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
    leptos::mount::mount_to_body(app::App);
}
