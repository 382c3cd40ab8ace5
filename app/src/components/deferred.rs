//! The parts of the app that live in lazily loaded wasm chunks.
//!
//! `cargo xtask build` splits the app at each `#[wasm_split]` function: the code only
//! such a function reaches moves into a chunk, fetched the first time it is called. So
//! the first visit to `/` does not download History, the share page, the job cards or
//! the code snippets. Every split point here is `fallible`: a chunk that cannot be
//! fetched (offline, a flaky network) is an `Err` shown with a retry button, never a
//! panic (which would abort the whole app), and a failed load is retried from scratch.

use std::future::Future;

use leptos::prelude::*;
use leptos::wasm_split::SplitLoaderError;
use send_wrapper::SendWrapper;

/// What a split point returns: the view it builds, or why its chunk did not load.
pub type Loaded = Result<AnyView, SplitLoaderError>;

/// Shows the view `load` builds once its chunk is in (nothing before: the chunks are
/// small and usually cached). When the load fails, a notice takes its place, with a
/// retry button and a reload button (after a deploy, an open tab's chunks are gone
/// and only a reload brings the new ones); coming back online retries by itself.
pub fn deferred<F, Fut>(load: F) -> impl IntoView
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Loaded> + 'static,
{
    load_or_notice(load, false)
}

/// [`deferred`] for a whole page: its notice is the page's heading.
pub fn deferred_page<F, Fut>(load: F) -> impl IntoView
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Loaded> + 'static,
{
    load_or_notice(load, true)
}

/// A group of one: the notice stands where the part would be.
fn load_or_notice<F, Fut>(load: F, page: bool) -> impl IntoView
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Loaded> + 'static,
{
    let group = ChunkGroup {
        page,
        ..ChunkGroup::new(PART)
    };
    (group.notice(), group.part(load))
}

/// Many parts from one chunk (the studio's job cards): a part whose chunk fails shows
/// nothing, and the list shows one notice ([`ChunkGroup::notice`]) whose "Try again"
/// retries them all, instead of a notice (and an alert read aloud) per card.
#[derive(Debug, Clone, Copy)]
pub struct ChunkGroup {
    attempt: RwSignal<u32>,
    failed: RwSignal<bool>,
    /// What could not be shown, first in the notice.
    what: &'static str,
    /// The notice is a whole page's (its heading says so).
    page: bool,
}

impl ChunkGroup {
    /// A group whose notice starts with `what` (a sentence).
    pub fn new(what: &'static str) -> Self {
        Self {
            attempt: RwSignal::new(0),
            failed: RwSignal::new(false),
            what,
            page: false,
        }
    }

    /// One part: the view `load` builds once its chunk is in.
    pub fn part<F, Fut>(self, load: F) -> impl IntoView
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Loaded> + 'static,
    {
        move || {
            self.attempt.track();
            let pending = load();
            Suspend::new(SendWrapper::new(async move {
                match from_chunk(pending).await {
                    Some(view) => view,
                    None => {
                        let _ = self.failed.try_set(true);
                        ().into_any()
                    }
                }
            }))
        }
    }

    /// The group's one notice, while a part could not be loaded.
    pub fn notice(self) -> impl IntoView {
        let retry = move || {
            self.failed.set(false);
            self.attempt.update(|n| *n += 1);
        };
        move || {
            self.failed
                .get()
                .then(|| retry_notice(retry, self.page, self.what))
        }
    }
}

/// How long a chunk may take before its notice shows: a stalled fetch (a dead mobile
/// connection) would otherwise leave the part blank until the browser gives up,
/// minutes later. By then the chunk's fetch has been made again twice (`cargo xtask
/// build`'s patient fetch, after 7 and 14 s). "Try again" gets the load still under
/// way, "Reload" starts over.
const STALLED_MS: i32 = 15_000;

/// `fut`'s output, or `None` if [`STALLED_MS`] pass first (then `fut` is dropped; a
/// chunk that arrives later is used by the next try).
async fn unless_stalled<T>(fut: impl Future<Output = T>) -> Option<T> {
    let fut = std::pin::pin!(fut);
    let timer = std::pin::pin!(crate::client::delay(STALLED_MS));
    match futures_util::future::select(fut, timer).await {
        futures_util::future::Either::Left((out, _)) => Some(out),
        futures_util::future::Either::Right(_) => None,
    }
}

/// What a split point's call gives: its value, or `None` when the chunk cannot be
/// fetched or its fetch stalls. Then, after a deploy, the page reloads into the new
/// build ([`reload_if_updated`], on its own: a hanging check must not hold up what
/// the caller shows).
pub async fn from_chunk<T>(call: impl Future<Output = Result<T, SplitLoaderError>>) -> Option<T> {
    match unless_stalled(call).await {
        Some(Ok(value)) => Some(value),
        _ => {
            leptos::task::spawn_local(reload_if_updated());
            None
        }
    }
}

/// [`from_chunk`] until the chunk is here, for what must start in the end (the
/// polling scheduler, the storage format): tried again with backoff, 1 s doubling to
/// 60 s (a wake-up, `client::wake_all`, tries at once). `failed` runs after each
/// failure and says whether to go on (not when the page is gone).
pub async fn from_chunk_retried<T, Fut>(
    call: impl Fn() -> Fut,
    failed: impl Fn() -> bool,
) -> Option<T>
where
    Fut: Future<Output = Result<T, SplitLoaderError>>,
{
    let mut wait = 1_000;
    loop {
        if let Some(value) = from_chunk(call()).await {
            return Some(value);
        }
        if !failed() {
            return None;
        }
        crate::client::sleep(wait).await;
        wait = (wait * 2).min(60_000);
    }
}

/// The notice's first sentence for a part of a page.
const PART: &str = "This part of Parallax could not be downloaded.";

fn retry_notice(
    retry: impl Fn() + Copy + Send + Sync + 'static,
    page: bool,
    what: &'static str,
) -> impl IntoView {
    let online = window_event_listener(leptos::ev::online, move |_| retry());
    on_cleanup(move || online.remove());
    view! {
        <div class="panel load-error" role="alert" data-testid="load-error">
            {page.then(|| view! { <h1>"This page could not be loaded"</h1> })}
            <p>{what}" Check the connection, or reload the page if Parallax was just updated."</p>
            <button type="button" class="button" data-testid="load-retry" on:click=move |_| retry()>
                "Try again"
            </button>
            " "
            <button type="button" class="button" on:click=move |_| { let _ = window().location().reload(); }>
                "Reload"
            </button>
        </div>
    }
}

/// Where this session keeps the build it last reloaded for (against a reload loop).
const RELOADED_FOR: &str = "parallax:reloaded-for";

/// After a deploy, `dist/` holds only the new build, so the chunks of the build this
/// page runs can never load. When that is why a chunk failed, the page reloads into
/// the new build (once per build: a sessionStorage mark stops a loop). Nothing is
/// lost: jobs and the form are kept in localStorage. Offline, nothing is known, and
/// nothing happens.
async fn reload_if_updated() {
    let Some(main) = main_module() else {
        return;
    };
    if !build_is_gone(&main).await {
        return;
    }
    let Some(w) = web_sys::window() else {
        return;
    };
    let session = w.session_storage().ok().flatten();
    if let Some(s) = &session {
        if s.get_item(RELOADED_FOR).ok().flatten().as_deref() == Some(main.as_str()) {
            return;
        }
        let _ = s.set_item(RELOADED_FOR, &main);
    }
    let _ = w.location().reload();
}

/// The running build's main module, as `index.html` preloads it.
fn main_module() -> Option<String> {
    document()
        .query_selector("link[rel=modulepreload]")
        .ok()??
        .get_attribute("href")
}

/// Whether the server no longer has `main` (a 404, or the SPA's HTML fallback).
async fn build_is_gone(main: &str) -> bool {
    let asked = gloo_net::http::RequestBuilder::new(main)
        .method(gloo_net::http::Method::HEAD)
        .cache(web_sys::RequestCache::NoStore)
        .send()
        .await;
    match asked {
        Ok(r) => {
            r.status() == 404
                || r.headers()
                    .get("content-type")
                    .is_some_and(|t| t.starts_with("text/html"))
        }
        Err(_) => false,
    }
}
