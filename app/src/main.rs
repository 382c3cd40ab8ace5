//! The Parallax playground: swaps index.html's static first view for the app, and
//! tells the person when the app has stopped.

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

use leptos::prelude::document;
use wasm_bindgen::JsCast;

fn main() {
    std::panic::set_hook(Box::new(stopped));
    // index.html's static first view goes in the same task as the app mounts, so no
    // frame shows both, or neither.
    if let Some(shell) = document().get_element_by_id("shell") {
        shell.remove();
    }
    leptos::mount::mount_to_body(app::App);
}

/// A panic stops the app for good (`panic = "abort"`): the message goes to the
/// console, for a bug report, and the person gets index.html's notice, worded for
/// this, in place of a page that no longer answers (the stylesheet hides what
/// follows the notice). Its Reload button calls `location.reload` bound in JS, which
/// works with the wasm stopped.
fn stopped(info: &std::panic::PanicHookInfo<'_>) {
    web_sys::console::error_1(&info.to_string().into());
    let doc = document();
    let Some(notice) = doc.get_element_by_id("boot-error") else {
        return;
    };
    let say = |selector: &str, text: &str| {
        if let Ok(Some(el)) = notice.query_selector(selector) {
            el.set_text_content(Some(text));
        }
    };
    say("h1", "Parallax stopped after an error");
    say(
        "p",
        "Reload the page to go on. Jobs already sent keep running on the server.",
    );
    if let (Ok(Some(button)), Some(location)) = (notice.query_selector("button"), doc.location())
        && let Ok(reload) = js_sys::Reflect::get(&location, &"reload".into())
        && let Ok(reload) = reload.dyn_into::<js_sys::Function>()
    {
        let _ = button.add_event_listener_with_callback("click", &reload.bind0(&location));
    }
    let _ = notice.remove_attribute("hidden");
}
