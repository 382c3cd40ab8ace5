//! Credits in Settings: with an access key, its balance and where its credits went
//! (`GET /v2/credits`: every job, deleted ones too, and every grant, newest first, a
//! refund still to come shown as pending); without one, today's remaining anonymous
//! allowance (`x-remaining-credits`, which the history's 401 carries too).
//!
//! Loaded with a small task rather than a `LocalResource` in a `Transition`, as the
//! share page is (`pages/share.rs`: the Suspense machinery costs the first load).

use leptos::prelude::*;
use leptos::task::spawn_local;
use parallax_api::{CreditEntry, ErrorCode};

use crate::client;
use crate::logic::credits;
use crate::session::use_session;

/// What the panel shows.
#[derive(Debug, Clone, PartialEq)]
enum Shown {
    Loading,
    /// The key's history so far, and the cursor of the next (older) page.
    History {
        balance: u64,
        entries: Vec<CreditEntry>,
        next: Option<String>,
    },
    /// No key: the anonymous allowance (the balance arrives as a header).
    Anonymous,
    Failed(String),
}

/// When an entry happened, in the browser's locale.
fn when(secs: Option<u64>) -> String {
    match secs {
        Some(s) => js_sys::Date::new(&((s as f64) * 1000.0).into())
            .to_locale_string("default", &js_sys::Object::new())
            .into(),
        None => "earlier".into(),
    }
}

#[component]
pub fn CreditsPanel() -> impl IntoView {
    let session = use_session();
    let shown = RwSignal::new(Shown::Loading);
    let more_busy = RwSignal::new(false);
    // Again whenever the key changes (the client sends the key it holds then).
    Effect::new(move || {
        let keyed = !session.key.get().trim().is_empty();
        shown.set(Shown::Loading);
        spawn_local(async move {
            let next = match client::credits(None).await {
                Ok(page) => Shown::History {
                    balance: page.balance,
                    entries: page.entries,
                    next: page.next_cursor,
                },
                Err(e) if !keyed && e.code() == Some(ErrorCode::Unauthorized) => Shown::Anonymous,
                Err(e) => Shown::Failed(e.message()),
            };
            let _ = shown.try_set(next);
        });
    });
    let more = move |_| {
        let Shown::History {
            next: Some(cursor), ..
        } = shown.get_untracked()
        else {
            return;
        };
        more_busy.set(true);
        spawn_local(async move {
            match client::credits(Some(&cursor)).await {
                Ok(page) => shown.update(|s| {
                    if let Shown::History { entries, next, .. } = s {
                        entries.extend(page.entries);
                        *next = page.next_cursor;
                    }
                }),
                Err(e) => shown.set(Shown::Failed(e.message())),
            }
            let _ = more_busy.try_set(false);
        });
    };
    view! {
        <section class="credits-panel" data-testid="credits-panel" aria-label="Credits">
            <h2 class="field-label">"Credits"</h2>
            {move || match shown.get() {
                Shown::Loading => view! { <p class="help">"Loading…"</p> }.into_any(),
                Shown::Failed(message) => view! { <p class="error" role="alert">{message}</p> }.into_any(),
                Shown::Anonymous => view! {
                    <p data-testid="credits-balance">
                        {move || match session.credits.get() {
                            Some(n) => format!("{n} credits left today (the daily allowance without a key)"),
                            None => "The daily allowance without a key".into(),
                        }}
                    </p>
                    <p class="help">"Add an access key to see its balance and where its credits went."</p>
                }.into_any(),
                Shown::History { balance, entries, next } => view! {
                    <p data-testid="credits-balance">{format!("Balance: {balance} credits")}</p>
                    <ul class="credits-history" data-testid="credits-history">
                        {entries.iter().map(|e| {
                            let l = credits::line(e);
                            view! {
                                <li data-testid="credits-entry">
                                    <span class="credits-amount">{l.amount}</span>
                                    <span class="credits-title">{l.title}</span>
                                    <span class="help">{format!("{} · {}", l.detail, when(l.at))}</span>
                                    {l.pending.map(|p| view! { <span class="badge processing" data-testid="credits-pending">{p}</span> })}
                                </li>
                            }
                        }).collect_view()}
                    </ul>
                    {entries.is_empty().then(|| view! { <p class="help">"No credits moved yet."</p> })}
                    {next.is_some().then(|| view! {
                        <button type="button" class="button small" prop:disabled=move || more_busy.get() on:click=more>"Older"</button>
                    })}
                }.into_any(),
            }}
        </section>
    }
}
