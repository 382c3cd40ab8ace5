//! The Ledger's rules and its storage, natively.

use parallax_api::{CreditEntry, Model, Settlement};

use super::legacy::*;
use super::protocol::*;
use super::rules::*;

fn grants(list: &[(&str, u64)]) -> Funding {
    Funding::Grants {
        grants: list
            .iter()
            .map(|(id, credits)| Grant {
                id: (*id).into(),
                credits: *credits,
            })
            .collect(),
    }
}

fn charge(credits: u64, refunded: Option<u64>, created_ms: u64) -> ChargeRow {
    ChargeRow {
        job_id: "j".into(),
        credits,
        refunded,
        created_ms,
        reason: None,
    }
}

fn key(fingerprint: &str, state: KeyState, expires_ms: u64) -> KeyRow {
    KeyRow {
        key: "k".into(),
        fingerprint: fingerprint.into(),
        job_id: "job-1".into(),
        state,
        expires_ms,
    }
}

#[test]
fn grants_apply_once_each() {
    let applied = |id: &str| id == "g1";
    let (a, new) = fund(
        &AccountRow {
            balance: 10,
            ..AccountRow::default()
        },
        &grants(&[("g1", 10), ("g2", 5), ("g2", 5)]),
        &applied,
        0,
    );
    assert_eq!(a.balance, 15, "only g2, once");
    assert_eq!(new.len(), 1);
    let (same, none) = fund(&a, &grants(&[("g1", 10)]), &applied, 0);
    assert_eq!((same, none), (a, vec![]));
}

#[test]
fn the_daily_allowance_resets_each_day_and_remembers_when() {
    let daily = Funding::Daily { allowance: 10 };
    // 2026-11-21T00:00:05Z and the next day, by the Ledger's clock.
    let nov21 = 1_795_219_200_000;
    let (a, _) = fund(&AccountRow::default(), &daily, &|_| false, nov21 + 5);
    assert_eq!(
        a,
        AccountRow {
            balance: 10,
            day: Some("2026-11-21".into()),
            day_started_ms: nov21 + 5
        }
    );
    let spent = AccountRow { balance: 2, ..a };
    assert_eq!(fund(&spent, &daily, &|_| false, nov21 + 9).0, spent);
    let next = fund(&spent, &daily, &|_| false, nov21 + 86_400_000).0;
    assert_eq!(
        (next.balance, next.day_started_ms),
        (10, nov21 + 86_400_000)
    );
}

/// Issue 26: a day computed before a slow body (or a clock stepping back) must not
/// hand a spent account yesterday's allowance again.
#[test]
fn the_anonymous_day_only_moves_forward() {
    let daily = Funding::Daily { allowance: 10 };
    let nov22 = 1_795_305_600_000;
    let spent = AccountRow {
        balance: 0,
        day: Some("2026-11-22".into()),
        day_started_ms: nov22,
    };
    for earlier in [nov22 - 1, nov22 - 86_400_000 * 3] {
        assert_eq!(
            fund(&spent, &daily, &|_| false, earlier).0,
            spent,
            "{earlier}"
        );
    }
}

#[test]
fn utc_days_are_iso_dates() {
    assert_eq!(utc_day(0), "1970-01-01");
    assert_eq!(utc_day(86_399_999), "1970-01-01");
    assert_eq!(utc_day(951_782_400_000), "2000-02-29");
    assert_eq!(utc_day(1_795_219_200_000), "2026-11-21");
    assert_eq!(utc_day(1_795_219_199_999), "2026-11-20");
    assert_eq!(utc_day(4_107_542_400_000), "2100-03-01");
}

#[test]
fn a_refund_is_capped_at_the_charge_and_happens_once() {
    let keyed = AccountRow::default();
    assert_eq!(
        plan_refund(&charge(5, None, 0), None, &keyed),
        Some(RefundPlan {
            recorded: 5,
            credited: 5
        })
    );
    assert_eq!(
        plan_refund(&charge(5, None, 0), Some(2), &keyed).map(|p| p.recorded),
        Some(2)
    );
    assert_eq!(
        plan_refund(&charge(5, None, 0), Some(50), &keyed).map(|p| p.recorded),
        Some(5),
        "never more than charged"
    );
    assert_eq!(
        plan_refund(&charge(5, Some(0), 0), None, &keyed),
        None,
        "a refund of 0 still counts as the job's refund"
    );
}

#[test]
fn a_refund_after_the_allowance_was_renewed_is_not_credited_twice() {
    let today = AccountRow {
        balance: 10,
        day: Some("2026-11-22".into()),
        day_started_ms: 1_000,
    };
    assert_eq!(
        plan_refund(&charge(4, None, 999), None, &today),
        Some(RefundPlan {
            recorded: 4,
            credited: 0
        })
    );
    assert_eq!(
        plan_refund(&charge(4, None, 1_000), None, &today).map(|p| p.credited),
        Some(4)
    );
}

#[test]
fn an_idempotency_key_is_bound_to_its_request_and_visible_once_confirmed() {
    let now = 1_000;
    assert_eq!(check_key(None, "f", now, false), KeyCheck::Fresh);
    assert_eq!(
        check_key(Some(&key("f", KeyState::Pending, now + 1)), "f", now, false),
        KeyCheck::InProgress
    );
    assert_eq!(
        check_key(
            Some(&key("f", KeyState::Confirmed, now + 1)),
            "f",
            now,
            false
        ),
        KeyCheck::Replay("job-1".into())
    );
    assert_eq!(
        check_key(
            Some(&key("f", KeyState::Confirmed, now + 1)),
            "g",
            now,
            false
        ),
        KeyCheck::Reused
    );
    assert_eq!(
        check_key(Some(&key("f", KeyState::Pending, now + 1)), "g", now, false),
        KeyCheck::Reused,
        "another body is refused even while the first is starting"
    );
    assert_eq!(
        check_key(Some(&key("f", KeyState::Pending, now)), "g", now, false),
        KeyCheck::Fresh,
        "an expired (e.g. abandoned pending) key is free again"
    );
    assert_eq!(
        check_key(Some(&key("f", KeyState::Pending, now)), "f", now, true),
        KeyCheck::InProgress,
        "a lapsed pending key whose start the reaper has not decided stays in progress"
    );
    assert_eq!(
        check_key(Some(&key("f", KeyState::Pending, now)), "g", now, true),
        KeyCheck::Reused
    );
    assert_eq!(
        check_key(
            Some(&key("", KeyState::Confirmed, now + 1)),
            "g",
            now,
            false
        ),
        KeyCheck::Replay("job-1".into()),
        "keys imported from before fingerprints replay any body"
    );
}

#[test]
fn a_legacy_state_becomes_rows_in_order() {
    let legacy: LegacyState = serde_json::from_value(serde_json::json!({
        "balance": 7,
        "applied_grants": ["g1"],
        "day": null,
        "charges": {
            "a": {"amount": 5, "refunded": false},
            "b": {"amount": 2, "refunded": true},
            "gone": {"amount": 1, "refunded": false}
        },
        "idempotency": {"k": ["a", 1_000], "old": ["b", 0]},
        "jobs": ["b", "a"]
    }))
    .unwrap();
    let now = IDEMPOTENCY_TTL_MS + 10;
    let rows = import(legacy, now);
    assert_eq!(rows.account.balance, 7);
    assert_eq!(rows.grants, vec!["g1".to_string()]);
    let order: Vec<(&str, bool, Option<u64>)> = rows
        .charges
        .iter()
        .map(|(c, listed)| (c.job_id.as_str(), *listed, c.refunded))
        .collect();
    assert_eq!(
        order,
        vec![
            ("gone", false, None),
            ("b", true, Some(2)),
            ("a", true, None)
        ]
    );
    assert!(rows.charges.iter().all(|(c, _)| c.created_ms == now));
    assert_eq!(rows.keys.len(), 1, "the expired key is dropped");
    assert_eq!(rows.keys[0].key, "k");
    assert_eq!(rows.keys[0].state, KeyState::Confirmed);
    assert_eq!(rows.keys[0].expires_ms, 1_000 + IDEMPOTENCY_TTL_MS);
}

#[test]
fn old_clients_requests_still_parse() {
    let op: Op = serde_json::from_str(r#"{"op":"refund","job_id":"a"}"#).unwrap();
    assert_eq!(
        op,
        Op::Refund {
            job_id: "a".into(),
            credits: None
        }
    );
    let op: Op =
        serde_json::from_str(r#"{"op":"reserve","job_id":"a","amount":2,"idempotency_key":null}"#)
            .unwrap();
    assert!(matches!(op, Op::Reserve { fingerprint, .. } if fingerprint.is_empty()));
}

#[test]
fn rate_windows_limit_per_minute_and_say_when_to_retry() {
    let mut w = RateWindows::default();
    let limit = Limit {
        bucket: "submit".into(),
        per_minute: 2,
    };
    let t = 120_000 + 15_000;
    assert_eq!(w.check(&limit, t), Ok(()));
    assert_eq!(w.check(&limit, t), Ok(()));
    assert_eq!(w.check(&limit, t), Err(45));
    assert_eq!(w.check(&limit, 180_000), Ok(()), "next minute");
}

#[test]
fn a_lapsed_start_is_confirmed_if_its_job_exists_else_released_while_it_cannot_be_purged() {
    let retention = 60_000;
    let c = charge(5, None, 1_000);
    let young = 1_000 + 61_000 - retention;
    assert_eq!(
        reap(Started::Yes, Some(&c), true, 62_000, retention),
        Reap::Confirm,
        "a lost Confirm"
    );
    assert_eq!(
        reap(Started::No, Some(&c), true, young, retention),
        Reap::Release,
        "a lost Release: refund it"
    );
    assert_eq!(
        reap(Started::No, Some(&c), true, 1_000 + retention, retention),
        Reap::Forget,
        "old enough to have been purged: its runner settled it"
    );
    assert_eq!(
        reap(Started::No, Some(&c), false, young, retention),
        Reap::Forget,
        "deleted by its owner: it existed"
    );
    assert_eq!(
        reap(Started::No, None, true, young, retention),
        Reap::Forget
    );
}

fn settled(credits: u64, refunded: Option<u64>, reason: Option<&str>) -> ChargeRow {
    ChargeRow {
        reason: reason.map(str::to_owned),
        ..charge(credits, refunded, 0)
    }
}

#[test]
fn a_settlement_refunds_once_and_only_tops_up_to_the_charge() {
    let keyed = AccountRow::default();
    let plan = |c: &ChargeRow, credits| plan_settle(c, credits, &keyed);
    assert_eq!(
        plan(&settled(5, None, None), 0),
        Some(RefundPlan {
            recorded: 0,
            credited: 0
        }),
        "a job that refunds nothing is still settled"
    );
    assert_eq!(
        plan(&settled(5, None, None), 50).map(|p| p.recorded),
        Some(5),
        "never more than charged"
    );
    assert_eq!(
        plan(&settled(5, Some(5), Some("failed")), 5),
        None,
        "a repeat changes nothing"
    );
    assert_eq!(
        plan(&settled(5, Some(0), Some("canceled")), 5),
        Some(RefundPlan {
            recorded: 5,
            credited: 5
        }),
        "a confirmed stop after 'requested' tops the refund up"
    );
    assert_eq!(
        plan(&settled(5, Some(5), Some("canceled")), 0),
        None,
        "a refund never shrinks"
    );
    assert_eq!(
        plan(&settled(5, Some(2), None), 2),
        None,
        "a refund recorded by the older Refund op is not paid again"
    );
    assert_eq!(
        plan(&settled(5, None, Some(LEGACY_REASON)), 5).map(|p| p.credited),
        Some(5),
        "a job from before settlements still gets its refund"
    );
    let renewed = AccountRow {
        day: Some("2026-11-22".into()),
        day_started_ms: 1,
        ..AccountRow::default()
    };
    assert_eq!(
        plan_settle(&settled(5, None, None), 5, &renewed),
        Some(RefundPlan {
            recorded: 5,
            credited: 0
        })
    );
}

fn history_charge(seq: u64, created_ms: u64) -> HistoryCharge {
    HistoryCharge {
        seq,
        job_id: format!("job-{seq}"),
        credits: 5,
        refunded: None,
        created_ms,
        listed: 1,
        model: Some("flux-depth-pro".into()),
        reason: None,
        settled_ms: None,
    }
}

#[test]
fn a_job_entry_is_pending_until_settled_and_stays_after_a_delete() {
    let open = 1_000;
    let running = job_entry(&history_charge(1, 10_000), 10_500, open);
    assert!(matches!(
        running,
        CreditEntry::Job {
            pending: 5,
            refunded: 0,
            reason: None,
            deleted: false,
            model: Some(Model::FluxDepthPro),
            ..
        }
    ));
    let canceled = HistoryCharge {
        refunded: Some(0),
        reason: Some("canceled".into()),
        settled_ms: Some(12_000),
        listed: 0,
        ..history_charge(1, 10_000)
    };
    assert_eq!(
        job_entry(&canceled, 13_000, open),
        CreditEntry::Job {
            request_id: "job-1".into(),
            model: Some(Model::FluxDepthPro),
            charged: 5,
            refunded: 0,
            pending: 0,
            created_at: 10,
            settled_at: Some(12),
            reason: Some(Settlement::Canceled),
            deleted: true,
        }
    );
    let never = HistoryCharge {
        refunded: Some(5),
        reason: Some("not_started".into()),
        listed: 0,
        ..history_charge(1, 10_000)
    };
    assert!(matches!(
        job_entry(&never, 13_000, open),
        CreditEntry::Job {
            deleted: false,
            pending: 0,
            refunded: 5,
            ..
        }
    ));
    let legacy = HistoryCharge {
        reason: Some(LEGACY_REASON.into()),
        ..history_charge(1, 10_000)
    };
    assert!(
        matches!(
            job_entry(&legacy, 10_500, open),
            CreditEntry::Job {
                pending: 5,
                reason: None,
                ..
            }
        ),
        "a legacy job that may still run may still refund"
    );
    assert!(matches!(
        job_entry(&legacy, 11_000, open),
        CreditEntry::Job { pending: 0, .. }
    ));
}

#[test]
fn the_history_merges_jobs_and_grants_newest_first_page_by_page() {
    let charges: Vec<HistoryCharge> = (1..=5)
        .rev()
        .map(|seq| history_charge(seq, seq * 1_000))
        .collect();
    let grants = vec![
        HistoryGrant {
            row: 1,
            id: "g1".into(),
            credits: 100,
            applied_ms: Some(3_000),
        },
        HistoryGrant {
            row: 2,
            id: "old".into(),
            credits: 7,
            applied_ms: None,
        },
    ];
    let name = |e: &CreditEntry| match e {
        CreditEntry::Job { request_id, .. } => request_id.clone(),
        CreditEntry::Grant { grant_id, .. } => grant_id.clone(),
    };
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        // As the Ledger reads them: the charges before the cursor, limit + 1.
        let before: Vec<HistoryCharge> = charges
            .iter()
            .filter(|c| {
                cursor.is_none_or(|k: EntryKey| {
                    (c.created_ms, c.seq) < (k.at_ms, if k.rank == 0 { 0 } else { k.row })
                })
            })
            .take(3)
            .cloned()
            .collect();
        let (page, next) = history_page(&before, &grants, cursor, 2, 0, 0);
        assert!(page.len() <= 2);
        seen.extend(page.iter().map(name));
        match next {
            Some(n) => cursor = Some(EntryKey::parse(&n).expect("a cursor it gave out")),
            None => break,
        }
    }
    assert_eq!(
        seen,
        ["job-5", "job-4", "job-3", "g1", "job-2", "job-1", "old"],
        "a job before a grant of the same millisecond; grants of unknown time last"
    );
    assert_eq!(EntryKey::parse("1.2.3"), None, "rank is 0 or 1");
    assert_eq!(EntryKey::parse("1.1"), None);
    assert_eq!(EntryKey::parse("1.1.3.4"), None);
    assert_eq!(EntryKey::parse("x.1.3"), None);
}
