//! How every page says it could not load something: a heading, the reason (from the
//! error's code, via [`ClientError::message`]), and the way back to the studio.

use leptos::prelude::*;

use crate::client::ClientError;
use crate::logic::poll::Read;

#[component]
pub fn ErrorView(
    /// The heading when loading failed ("Cannot load this result").
    title: &'static str,
    /// What to say when the thing does not exist (a 404).
    gone: &'static str,
    /// What went wrong.
    error: ClientError,
) -> impl IntoView {
    let (heading, message) = match error.read() {
        Read::Gone => ("Not found", gone.to_owned()),
        _ => (title, error.message()),
    };
    view! {
        <div class="panel" role="alert">
            <h1>{heading}</h1>
            <p data-testid="load-error">{message}</p>
            <a class="button" href="/">"Open the studio"</a>
        </div>
    }
}
