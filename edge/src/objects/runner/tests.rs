//! The job's rules, natively: look by look, cancel by cancel.

use parallax_api::{ErrorCode, JobStatus, Model, OutputImage, Params, RequestId, Settlement};

use super::HookVerdict;
use super::record::*;
use super::schedule::*;
use crate::input::image::ImageInfo;
use crate::providers::{CancelOutcome, Submitted, UpstreamError, UpstreamState};

use crate::input::image::ImageFormat;

/// A queued pro job with seed 42, as tests of the API shapes start from.
pub fn job() -> JobRecord {
    let mut params = Params::default();
    params.set_seed(42);
    JobRecord::new(
        RequestId::parse("2c7f59ea-13f1-402c-9353-915a2b5a2124").unwrap(),
        Model::FluxDepthPro,
        params,
        ImageInfo {
            format: ImageFormat::Jpeg,
            width: 640,
            height: 480,
        },
        Ownership {
            owner: "key:abc".into(),
            charged: 5,
            retention_secs: 60,
        },
        1_000_000,
        900,
        vec!["segmind".into(), "replicate".into()],
    )
}

/// A job completed with `n` JPEG outputs.
pub fn completed(n: usize) -> JobRecord {
    let mut j = job();
    j.mark_processing(1_000_500);
    let out = StoredOutput {
        ext: "jpg".into(),
        content_type: "image/jpeg".into(),
        bytes: 10,
        width: 64,
        height: 48,
    };
    j.complete(vec![out; n], 1_002_500);
    j
}

#[test]
fn a_completed_job_reports_timings_and_absolute_output_urls() {
    let mut j = job();
    j.mark_processing(1_000_500);
    j.complete(
        vec![StoredOutput {
            ext: "jpg".into(),
            content_type: "image/jpeg".into(),
            bytes: 10,
            width: 64,
            height: 48,
        }],
        1_002_500,
    );
    let r = j.result("http://127.0.0.1:8787");
    assert_eq!(r.status, JobStatus::Completed);
    let url = "http://127.0.0.1:8787/results/2c7f59ea-13f1-402c-9353-915a2b5a2124/0.jpg";
    assert_eq!(r.output.as_deref(), Some(url));
    assert_eq!(
        r.images,
        vec![OutputImage {
            url: url.into(),
            content_type: "image/jpeg".into(),
            file_name: "0.jpg".into(),
            file_size: 10,
        }]
    );
    assert_eq!(r.metrics.cost, Some(5));
    assert_eq!(r.seed, Some(42));
    assert_eq!(r.metrics.queue_time, Some(0.5));
    assert_eq!(r.metrics.inference_time, Some(2.0));
    assert_eq!(r.metrics.total_time, Some(2.5));
    assert_eq!(r.code, None);
    assert_eq!(r.expires_at, Some(1_062));
    assert!(!j.is_expired(1_061_999));
    assert!(j.is_expired(1_062_500));
}

#[test]
fn a_failed_job_carries_its_reason_and_code() {
    let mut j = job();
    j.fail(FailureKind::Rejected, "Content moderated", 1_001_000);
    let s = j.status_response("https://px.example");
    assert_eq!(s.status, JobStatus::Failed);
    assert_eq!(
        s.response_url,
        "https://px.example/v2/requests/2c7f59ea-13f1-402c-9353-915a2b5a2124"
    );
    assert_eq!(s.status_url, format!("{}/status", s.response_url));
    let r = j.result("https://px.example");
    assert_eq!(
        (r.output, r.images.len()),
        (None, 0),
        "a failure has no image"
    );
    assert_eq!(r.metrics.cost, None, "only a COMPLETED job has a cost");
    assert_eq!(
        s.error.as_deref(),
        Some("Rejected by the provider's safety filter (content moderated)")
    );
    assert_eq!(j.detail.as_deref(), Some("Content moderated"));
    assert_eq!(s.code, Some(ErrorCode::JobFailed));
}

#[test]
fn submit_fails_over_in_order_then_retries_or_gives_up() {
    let transient = || UpstreamError::Transient {
        reason: "HTTP 503".into(),
        retry_after: None,
    };
    let mut j = job();
    assert_eq!(j.provider, "segmind");
    assert_eq!(j.submit_failed(transient(), 0, 0.0), FailoverStep::Now);
    assert_eq!(j.provider, "replicate");
    assert_eq!(
        j.submit_failed(UpstreamError::Permanent("HTTP 401".into()), 0, 0.0),
        FailoverStep::After(1000)
    );
    assert_eq!(j.provider, "segmind", "a new round starts from the first");
    assert_eq!(j.status, JobStatus::Queued);

    let mut k = job();
    k.submit_failed(UpstreamError::Permanent("HTTP 400: bad".into()), 0, 0.0);
    assert_eq!(
        k.submit_failed(UpstreamError::Permanent("HTTP 404".into()), 5, 0.0),
        FailoverStep::Failed
    );
    assert_eq!(k.status, JobStatus::Failed);
    assert_eq!(k.failure, Some(FailureKind::Upstream));
    assert_eq!(k.error.as_deref(), Some("No provider accepted the job"));
    let e = k.detail.unwrap();
    assert!(
        e.contains("segmind: HTTP 400: bad") && e.contains("replicate: HTTP 404"),
        "{e}"
    );
}

#[test]
fn a_submit_whose_answer_was_lost_is_neither_failed_over_nor_refunded_before_the_deadline() {
    let lost = || {
        Err(UpstreamError::Ambiguous {
            reason: "segmind did not answer in time; it may have been accepted".into(),
        })
    };
    // Running: the job stays on that provider and waits for its deadline.
    let mut j = job();
    let attempt = j.begin_submit(1_000_100);
    let step = j.submit_outcome(&attempt, lost(), 1_008_100, 0.0);
    assert_eq!(step, FailoverStep::After(j.deadline_ms - 1_008_100));
    assert_eq!(j.provider, "segmind", "not failed over");
    assert!(
        j.submitting
            .as_ref()
            .is_some_and(|a| a.ambiguous && a.n == attempt.n)
    );
    assert_eq!(j.next_step_ms, Some(j.deadline_ms));
    assert!(j.refund.is_none());
    // A cancel meanwhile: the refund stays undecided, also when the resolver looks
    // before the deadline.
    let mut k = j.clone();
    k.cancel(1_010_000);
    assert_eq!(k.refund, None);
    assert_eq!(k.refund_pending(), Some(k.ownership.charged));
    // The resolver looks soon (a lookup or a replay may decide it), and where none
    // can, leaves it for the deadline.
    assert!(k.lost_submit_due(1_010_000 + RESOLVE_SUBMIT_AFTER_MS));
    k.lost_submit_after_cancel(1_020_000);
    assert!(!k.lost_submit_due(1_020_000 + RESOLVE_SUBMIT_AFTER_MS));
    assert_eq!(k.refund, None, "not decided before the deadline");
    assert!(k.lost_submit_due(k.deadline_ms));
    k.lost_submit_after_cancel(k.deadline_ms);
    assert_eq!(k.refund, Some(k.ownership.charged), "the owner got nothing");
    assert!(k.submitting.is_none());
    // Not canceled: the deadline ends it, then it is refunded in full.
    j.time_out(j.deadline_ms);
    assert_eq!(j.failure, Some(FailureKind::Timeout));
    assert!(j.lost_submit_due(j.deadline_ms + RESOLVE_SUBMIT_AFTER_MS));
    j.lost_submit_after_cancel(j.deadline_ms + RESOLVE_SUBMIT_AFTER_MS);
    assert_eq!(j.refund, Some(j.ownership.charged));

    // Canceled while the POST was out, then its answer was lost: decided at the
    // deadline too, not refunded in full at once.
    let mut c = job();
    let attempt = c.begin_submit(1_000_100);
    c.cancel(1_000_200);
    assert_eq!(c.refund, None);
    assert_eq!(
        c.submit_outcome(&attempt, lost(), 1_008_100, 0.0),
        FailoverStep::Failed
    );
    assert_eq!(c.refund, None);
    assert_eq!(
        c.outbox.resolve_submit.map(|r| r.next_ms),
        Some(1_008_100 + RESOLVE_SUBMIT_AFTER_MS)
    );
    // A lookup that finds it (where the provider has one) follows it as a cancel.
    c.submit_outcome(
        &c.submitting.clone().unwrap(),
        Ok(sub("u9")),
        1_009_000,
        0.0,
    );
    assert_eq!(
        c.upstream.as_ref().map(|u| u.upstream_id.as_str()),
        Some("u9")
    );
    assert!(c.submitting.is_none());
}

#[test]
fn an_upstream_still_starting_the_job_is_asked_again_never_failed_over() {
    let in_progress = || UpstreamError::InProgress {
        reason: "parallax is still starting this job (409)".into(),
        retry_after: 2,
    };
    let mut j = job();
    assert_eq!(
        j.submit_failed(in_progress(), 0, 0.0),
        FailoverStep::After(2000)
    );
    assert_eq!(j.provider, "segmind", "the same upstream, not the next one");
    assert_eq!(j.next_step_ms, Some(2000));
    assert!(j.round_failures.is_empty(), "not counted as a failure");

    // Canceled while that POST was out: the job may run there, nothing comes back.
    let mut k = job();
    let attempt = k.begin_submit(0);
    k.cancel(1);
    k.submit_outcome(&attempt, Err(in_progress()), 2, 0.0);
    assert_eq!(k.refund, Some(0));
}

/// The ages at which the schedule looks at a job that ends `finish` ms after its
/// submit, up to the first look that finds it done, with `expected` learned;
/// every look after the early ones is checked against the budget.
fn looks(budget: PollBudget, expected: &[u32], finish: u64) -> Vec<u64> {
    let mut j = job();
    let t0 = 2_000_000;
    j.submitted(sub("u"), t0);
    j.expect_finishes(expected.to_vec(), t0, budget);
    let mut now = j.next_step_ms.expect("a first look");
    let mut ages = Vec::new();
    loop {
        j.polled();
        let age = now - t0;
        ages.push(age);
        // Besides the early looks: the looks so far, the submit and a result fetch.
        let requests = u64::from(j.polls.saturating_sub(EARLY_LOOKS)) + 2;
        assert!(
            j.polls <= EARLY_LOOKS
                || requests * budget.every_ms <= budget.base * budget.every_ms + age,
            "look {} at {age} ms (expected {expected:?}) makes {requests} requests",
            j.polls
        );
        if age >= finish {
            return ages;
        }
        let delay = j.poll_delay_ms(now, budget);
        assert!(delay > 0, "a zero delay at {age} ms");
        now += delay;
    }
}

/// When the schedule first sees done a job that ends `finish` ms after its submit.
fn seen_done_at(budget: PollBudget, expected: &[u32], finish: u64) -> u64 {
    *looks(budget, expected, finish).last().expect("a look")
}

const EVERY: PollBudget = PollBudget::new(2_000);
const TIGHT: PollBudget = PollBudget::tight(2_000);
/// A provider whose jobs lately took 1, 3, 10 and 30 s.
const LEARNED: [u32; 4] = [1_050, 3_050, 10_050, 30_050];

#[test]
fn the_early_looks_stay_whatever_was_learned() {
    let early = |expected: &[u32]| looks(EVERY, expected, QUICK_LOOK_MS)[..2].to_vec();
    assert_eq!(early(&[]), [0, QUICK_LOOK_MS]);
    assert_eq!(early(&LEARNED), [0, QUICK_LOOK_MS]);
    assert_eq!(early(&[10_000]), [0, QUICK_LOOK_MS]);
    // A provider whose jobs end sooner than that is looked at when they end.
    assert_eq!(early(&[100, 10_000]), [0, 100]);
    assert_eq!(looks(TIGHT, &LEARNED, 200), [0, QUICK_LOOK_MS]);
}

#[test]
fn an_instant_job_is_seen_at_once_and_a_short_one_at_the_quick_look() {
    for expected in [&[][..], &LEARNED, &[40]] {
        for budget in [EVERY, TIGHT] {
            assert_eq!(looks(budget, expected, 0), [0]);
            assert!(seen_done_at(budget, expected, 30) <= QUICK_LOOK_MS);
        }
    }
}

#[test]
fn a_one_second_job_is_seen_at_the_first_look_the_budget_allows() {
    // Look by look: the early ones, then 2 s (the submit, three looks and a result
    // fetch: 5 requests ≤ 4 + 2/2).
    assert_eq!(looks(EVERY, &[], 1_000), [0, 250, 2_000]);
    // Where status reads are rate-limited, at 4 s (1 + 4/2 besides the early looks).
    assert_eq!(looks(TIGHT, &[], 1_000), [0, 250, 4_000]);
}

#[test]
fn learned_ten_and_thirty_second_jobs_are_seen_within_a_quarter_second() {
    assert_eq!(
        looks(EVERY, &LEARNED, 10_000),
        [0, 250, 2_000, 4_000, 6_000, 10_050]
    );
    for budget in [EVERY, TIGHT] {
        for finish in [9_990, 10_100, 29_800, 30_200] {
            let seen = seen_done_at(budget, &LEARNED, finish);
            assert!(
                seen - finish <= 250,
                "a job done at {finish} ms seen at {seen} ms ({budget:?})"
            );
        }
    }
}

#[test]
fn an_unexpected_sixty_second_job_is_seen_at_most_half_its_age_late() {
    let ages = looks(EVERY, &LEARNED, 60_000);
    let seen = *ages.last().expect("a look");
    assert!(seen - 60_000 <= 10_000, "seen at {seen} ms: {ages:?}");
    for finish in [17_000, 45_000, 60_000, 200_000] {
        for budget in [EVERY, TIGHT] {
            let seen = seen_done_at(budget, &LEARNED, finish);
            assert!(
                seen - finish <= (finish / 2).max(4_000),
                "an unexpected job done at {finish} ms seen at {seen} ms"
            );
        }
    }
}

#[test]
fn without_learned_times_polling_keeps_the_budget_then_an_eighth_of_the_age() {
    // The quick look, then every 2 s as the budget allows, then an eighth of the
    // job's age once that is longer.
    let ages = looks(EVERY, &[], 30_000);
    assert_eq!(&ages[..7], &[0, 250, 2_000, 4_000, 6_000, 8_000, 10_000]);
    assert_eq!(
        looks(TIGHT, &[], 9_990),
        [0, 250, 4_000, 6_000, 8_000, 10_000]
    );
    let mut j = job();
    j.submitted(sub("u"), 2_000_000);
    j.polls = 5;
    // A long job is polled every eighth of its age, at most every 10 s.
    assert_eq!(j.poll_delay_ms(2_000_000 + 48_000, EVERY), 6_000);
    assert_eq!(j.poll_delay_ms(2_000_000 + 3_600_000, EVERY), POLL_MAX_MS);
}

#[test]
fn a_transient_answer_is_retried_within_the_budget() {
    let t0 = 2_000_000;
    let transient = |retry_after| {
        Err(UpstreamError::Transient {
            reason: "503".into(),
            retry_after,
        })
    };
    let running = Ok(UpstreamState::Processing);
    // A lag at the quick look: the backoff says 1 s, the tight budget 4 s.
    let mut j = job();
    j.submitted(sub("u"), t0);
    j.poll_outcome("u", running.clone(), t0, TIGHT, 0.0, false);
    j.poll_outcome("u", transient(None), t0 + 250, TIGHT, 0.0, false);
    assert_eq!(j.next_step_ms, Some(t0 + 4_000));
    // A lag at the look at once: the quick look is early too, so the backoff.
    let mut l = job();
    l.submitted(sub("u"), t0);
    l.poll_outcome("u", transient(None), t0, TIGHT, 0.0, false);
    assert_eq!(l.next_step_ms, Some(t0 + 1_000));
    // A longer backoff or `Retry-After` still wins.
    let mut k = job();
    k.submitted(sub("u"), t0);
    k.poll_outcome("u", running, t0, EVERY, 0.0, false);
    k.poll_outcome("u", transient(Some(30)), t0 + 250, EVERY, 0.0, false);
    assert_eq!(k.next_step_ms, Some(t0 + 250 + 30_000));
}

#[test]
fn transient_failures_back_off_exponentially_with_jitter_and_retry_after() {
    let mut j = job();
    assert_eq!(j.retry_delay_ms(None, 0.0), 1000);
    j.retries = 3;
    assert_eq!(j.retry_delay_ms(None, 0.0), 8000);
    assert_eq!(j.retry_delay_ms(None, 1.0), 10_000);
    assert_eq!(j.retry_delay_ms(Some(30), 0.0), 30_000);
    j.retries = 40;
    assert_eq!(j.retry_delay_ms(None, 0.0), 60_000);
}

fn sub(id: &str) -> Submitted {
    Submitted {
        upstream_id: id.into(),
        status_url: format!("s/{id}"),
        result_url: format!("r/{id}"),
        cancel_url: None,
        backstop_ms: None,
    }
}

fn jpg() -> StoredOutput {
    StoredOutput {
        ext: "jpg".into(),
        content_type: "image/jpeg".into(),
        bytes: 10,
        width: 64,
        height: 48,
    }
}

/// A job accepted upstream as `u1`.
fn running() -> JobRecord {
    let mut j = job();
    let a = j.begin_submit(1_000_100);
    assert_eq!(
        j.submit_outcome(&a, Ok(sub("u1")), 1_000_200, 0.0),
        FailoverStep::Now
    );
    j
}

/// A job running on upstream job `u1` at segmind, which was asked to call back.
fn hooked() -> JobRecord {
    let mut j = job();
    let a = j.begin_submit(1_000_100);
    let mut s = sub("u1");
    s.backstop_ms = Some(60_000);
    j.submit_outcome(&a, Ok(s), 1_000_200, 0.0);
    j
}

#[test]
fn callbacks_wake_a_few_looks_at_most_and_a_lagging_provider_is_polled_as_usual() {
    let mut j = hooked();
    for n in 0..MAX_HOOK_WAKES {
        assert_eq!(
            j.take_hook("segmind", None, 1_001_000),
            HookVerdict::Poll,
            "callback {n}"
        );
    }
    // A flood (forged, or a provider gone wrong) makes no more upstream requests.
    assert_eq!(
        j.take_hook("segmind", None, 1_002_000),
        HookVerdict::Ignored
    );
    // The confirming look still saw it running: the ordinary schedule now, not
    // the 60 s backstop.
    j.poll_outcome(
        "u1",
        Ok(UpstreamState::Processing),
        1_003_000,
        PollBudget::new(250),
        0.0,
        false,
    );
    assert!(j.next_step_ms.unwrap() < 1_003_000 + 60_000);
}

#[test]
fn a_job_that_expects_a_callback_is_polled_only_as_a_slow_backstop() {
    let mut j = hooked();
    assert_eq!(
        j.next_step_ms,
        Some(1_000_200 + 60_000),
        "no quick first look"
    );
    let mut now = 1_000_200 + 60_000;
    let mut polls = 0;
    while now < 1_000_200 + 600_000 {
        j.poll_outcome(
            "u1",
            Ok(UpstreamState::Processing),
            now,
            PollBudget::new(250),
            0.0,
            false,
        );
        polls += 1;
        now = j.next_step_ms.unwrap();
    }
    assert_eq!(polls, 4, "60 s, 2 min, 4 min, 8 min into a 10-minute job");
    // Without a callback the schedule is the polling one (much denser).
    let mut k = running();
    k.poll_outcome(
        "u1",
        Ok(UpstreamState::Processing),
        1_000_200,
        PollBudget::new(250),
        0.0,
        false,
    );
    assert!(k.next_step_ms.unwrap() < 1_000_200 + 60_000);
}

#[test]
fn a_callback_polls_a_running_job_now_and_leaves_others_as_they_are() {
    let mut j = hooked();
    assert_eq!(
        j.take_hook("segmind", Some("u1"), 1_005_000),
        HookVerdict::Poll
    );
    assert_eq!(j.next_step_ms, Some(1_005_000));
    assert_eq!(j.hooks, 1);
    // Another provider's or another upstream job's callback changes nothing.
    let before = j.clone();
    assert_eq!(
        j.take_hook("replicate", Some("u1"), 1_006_000),
        HookVerdict::Ignored
    );
    assert_eq!(
        j.take_hook("segmind", Some("old"), 1_006_000),
        HookVerdict::Ignored
    );
    assert_eq!(j, before);
    // A finished job: a late callback changes nothing either.
    let mut done = completed(1);
    let before = done.clone();
    assert_eq!(
        done.take_hook("segmind", None, 1_009_000),
        HookVerdict::Finished
    );
    assert_eq!(done, before);
    // Before the submit's outcome is recorded: noted, never a second submit.
    let mut early = job();
    early.begin_submit(1_000_100);
    let step = early.next_step_ms;
    assert_eq!(
        early.take_hook("segmind", None, 1_000_150),
        HookVerdict::Noted
    );
    assert_eq!(early.next_step_ms, step);
}

#[test]
fn a_callback_that_lands_during_a_step_is_confirmed_after_it() {
    // The poll began with no callback taken; one came while it was out.
    let mut j = hooked();
    let before = j.hooks;
    j.take_hook("segmind", Some("u1"), 1_003_000);
    j.poll_outcome(
        "u1",
        Ok(UpstreamState::Processing),
        1_003_100,
        PollBudget::new(250),
        0.0,
        false,
    );
    assert!(j.next_step_ms > Some(1_003_100), "the poll's own schedule");
    j.recheck_if_hooked(before, 1_003_100);
    assert_eq!(j.next_step_ms, Some(1_003_100), "looked at again now");
    // None came: the schedule stands.
    let mut k = hooked();
    k.poll_outcome(
        "u1",
        Ok(UpstreamState::Processing),
        1_003_100,
        PollBudget::new(250),
        0.0,
        false,
    );
    let next = k.next_step_ms;
    k.recheck_if_hooked(k.hooks, 1_003_100);
    assert_eq!(k.next_step_ms, next);
    // A callback noted before the submit's outcome: the first poll comes at once.
    let mut e = job();
    let a = e.begin_submit(1_000_100);
    e.take_hook("segmind", None, 1_000_150);
    let mut s = sub("u1");
    s.backstop_ms = Some(60_000);
    e.submit_outcome(&a, Ok(s), 1_000_200, 0.0);
    e.recheck_if_hooked(0, 1_000_200);
    assert_eq!(e.next_step_ms, Some(1_000_200));
}

#[test]
fn a_cancel_before_anything_was_sent_refunds_in_full_at_once() {
    let mut j = job();
    assert_eq!(
        j.refund_on_cancel(),
        Some(5),
        "the client is told before the click"
    );
    assert_eq!(j.cancel(1_000_050), CancelVerdict::Canceled);
    assert_eq!(j.status, JobStatus::Failed);
    assert_eq!(j.error.as_deref(), Some("Canceled by its owner"));
    assert_eq!(j.refund, Some(5));
    assert!(j.outbox.refund.is_some(), "the refund is an outbox entry");
    assert!(j.outbox.cancels.is_empty(), "nothing to stop upstream");
    let c = j.metrics().credits.unwrap();
    assert_eq!((c.charged, c.refunded, c.refund_on_cancel), (5, 5, None));
}

#[test]
fn a_cancel_of_a_finished_job_changes_nothing() {
    let mut j = completed(1);
    let before = j.clone();
    assert_eq!(j.cancel(1_005_000), CancelVerdict::AlreadyFinished);
    assert_eq!(j, before);
    let mut f = job();
    f.fail(FailureKind::Rejected, "Content moderated", 1_001_000);
    let before = f.clone();
    assert_eq!(f.cancel(1_005_000), CancelVerdict::AlreadyFinished);
    assert_eq!(f, before);
}

#[test]
fn a_cancel_after_submit_refunds_only_what_the_provider_confirms_unspent() {
    for (outcome, refund) in [
        (CancelOutcome::Stopped, 5),
        (CancelOutcome::Requested, 0),
        (CancelOutcome::Unsupported, 0),
    ] {
        let mut j = running();
        assert_eq!(
            j.refund_on_cancel(),
            Some(0),
            "submitted: a cancel may refund nothing"
        );
        j.cancel(1_000_300);
        assert_eq!(j.refund, None, "undecided until the provider answers");
        assert_eq!(j.outbox.cancels.len(), 1);
        assert!(j.outbox.cancels[0].refund_if_stopped);
        assert!(
            j.outbox.drop_outputs.is_some(),
            "no output of it may survive"
        );
        j.cancel_outcome("u1", Ok(outcome), 1_000_400, 0.0);
        assert!(j.outbox.cancels.is_empty());
        assert_eq!(j.refund, Some(refund), "{outcome:?}");
        assert!(
            j.outbox.refund.is_some(),
            "settled with the Ledger whatever the amount"
        );
        assert_eq!(j.settlement(), Settlement::Canceled);
    }
}

#[test]
fn a_failing_upstream_cancel_is_retried_with_backoff_then_counts_as_spent() {
    let mut j = running();
    j.cancel(1_000_300);
    let err = || {
        Err(UpstreamError::Transient {
            reason: "503".into(),
            retry_after: None,
        })
    };
    let mut now = 1_000_400;
    let mut gaps = Vec::new();
    while !j.outbox.cancels.is_empty() {
        j.cancel_outcome("u1", err(), now, 0.0);
        if let Some(c) = j.outbox.cancels.first() {
            gaps.push(c.retry.next_ms - now);
            now = c.retry.next_ms;
        }
    }
    assert_eq!(gaps.len() as u32, CANCEL_MAX_TRIES - 1);
    assert!(gaps.windows(2).all(|w| w[0] <= w[1]), "{gaps:?}");
    assert_eq!(j.refund, Some(0));
}

#[test]
fn a_cancel_during_the_submit_is_settled_by_the_submit_outcome() {
    // Accepted upstream after the cancel: stopped there, refund per its answer.
    let mut j = job();
    let a = j.begin_submit(1_000_100);
    assert_eq!(j.refund_on_cancel(), Some(0), "a submit is under way");
    j.cancel(1_000_150);
    assert_eq!(j.refund, None);
    assert_eq!(
        j.submit_outcome(&a, Ok(sub("u1")), 1_000_200, 0.0),
        FailoverStep::Failed
    );
    assert_eq!(j.status, JobStatus::Failed, "the cancel stands");
    assert_eq!(j.outbox.cancels.len(), 1);
    assert_eq!(j.outbox.cancels[0].sub.upstream_id, "u1");
    j.cancel_outcome("u1", Ok(CancelOutcome::Stopped), 1_000_300, 0.0);
    assert_eq!(j.refund, Some(5));

    // Refused upstream after the cancel: nothing was spent.
    let mut k = job();
    let a = k.begin_submit(1_000_100);
    k.cancel(1_000_150);
    k.submit_outcome(
        &a,
        Err(UpstreamError::Permanent("400".into())),
        1_000_200,
        0.0,
    );
    assert_eq!(k.refund, Some(5));
    assert!(k.outbox.cancels.is_empty());

    // Lost (the object was reset mid-POST) and not lookupable: it may have run.
    let mut l = job();
    l.begin_submit(1_000_100);
    l.cancel(1_000_150);
    l.lost_submit_after_cancel(1_000_200);
    assert_eq!(l.refund, Some(0));
    assert!(l.submitting.is_none());
}

#[test]
fn a_superseded_submit_is_canceled_upstream() {
    let mut j = job();
    let first = j.begin_submit(1_000_100);
    let second = j.begin_submit(1_000_200);
    assert_eq!(
        j.submit_outcome(&first, Ok(sub("old")), 1_000_300, 0.0),
        FailoverStep::Failed
    );
    assert_eq!(j.outbox.cancels.len(), 1);
    assert!(!j.outbox.cancels[0].refund_if_stopped);
    assert!(
        j.upstream.is_none(),
        "the record still waits for the second"
    );
    j.submit_outcome(&second, Ok(sub("new")), 1_000_400, 0.0);
    assert_eq!(j.upstream.as_ref().unwrap().upstream_id, "new");
    assert_eq!(j.status, JobStatus::Queued);
}

#[test]
fn a_poll_answer_for_a_job_that_moved_on_is_ignored() {
    let mut j = running();
    j.cancel(1_000_300);
    let before = j.clone();
    j.poll_outcome(
        "u1",
        Ok(UpstreamState::Failed("moderated".into())),
        1_000_400,
        PollBudget::new(250),
        0.0,
        false,
    );
    assert_eq!(j, before, "a canceled job stays canceled");
    let mut k = running();
    let before = k.clone();
    k.poll_outcome(
        "other",
        Ok(UpstreamState::Processing),
        1_000_400,
        PollBudget::new(250),
        0.0,
        false,
    );
    assert_eq!(k, before);
}

#[test]
fn not_found_right_after_submit_is_a_lag_and_later_a_failure() {
    let mut j = running();
    let gone = || Err(UpstreamError::Permanent("segmind answered HTTP 404".into()));
    j.poll_outcome(
        "u1",
        gone(),
        1_000_200 + 2_000,
        PollBudget::new(250),
        0.0,
        false,
    );
    assert_eq!(j.status, JobStatus::Queued, "retried");
    assert!(j.next_step_ms.is_some());
    j.poll_outcome(
        "u1",
        gone(),
        1_000_200 + NOT_FOUND_GRACE_MS,
        PollBudget::new(250),
        0.0,
        false,
    );
    assert_eq!(j.status, JobStatus::Failed);
    assert_eq!(j.failure, Some(FailureKind::Upstream));
    assert_eq!(j.refund, Some(5), "a failure is refunded in full");
}

#[test]
fn the_deadline_comes_after_the_last_poll_and_stops_the_upstream() {
    let mut j = running();
    j.poll_outcome(
        "u1",
        Ok(UpstreamState::Processing),
        j.deadline_ms,
        PollBudget::new(250),
        0.0,
        true,
    );
    assert_eq!(j.failure, Some(FailureKind::Timeout));
    assert_eq!(
        j.error.as_deref(),
        Some("Timed out: the job did not finish before its deadline")
    );
    assert_eq!(j.refund, Some(5));
    assert_eq!(j.outbox.cancels.len(), 1, "the upstream is told to stop");
    assert!(!j.outbox.cancels[0].refund_if_stopped);

    // A job seen finished at the deadline is completed, not thrown away.
    let mut k = running();
    k.complete(vec![jpg()], k.deadline_ms);
    k.time_out(k.deadline_ms);
    assert_eq!(k.status, JobStatus::Completed);
}

#[test]
fn a_short_delivery_refunds_the_missing_images() {
    let mut j = job();
    j.model = Model::FluxDepthDev;
    j.params
        .0
        .insert("num_outputs".into(), serde_json::json!(4));
    j.ownership.charged = 12;
    j.complete(vec![jpg()], 1_002_000);
    assert_eq!(j.refund, Some(9), "3 of 4 images missing at 3 credits each");
    assert!(j.outbox.refund.is_some());
    assert_eq!(j.settlement(), Settlement::ShortOfOutputs);
    let mut again = job();
    again.complete(vec![jpg()], 1_002_000);
    assert_eq!(again.refund, Some(0));
    assert!(
        again.outbox.refund.is_some(),
        "a job with nothing to refund still tells the Ledger it ended"
    );
    assert_eq!(again.settlement(), Settlement::Completed);
}

#[test]
fn a_refund_is_decided_once() {
    let mut j = job();
    j.fail(FailureKind::Upstream, "x", 1_001_000);
    assert_eq!(j.refund, Some(5));
    j.decide_refund(0, 1_002_000);
    assert_eq!(j.refund, Some(5));
}

#[test]
fn users_see_categories_and_logs_keep_the_provider_text() {
    let mut j = running();
    j.poll_outcome(
        "u1",
        Ok(UpstreamState::Failed(
            "CUDA out of memory at /models/flux.safetensors".into(),
        )),
        1_000_500,
        PollBudget::new(250),
        0.0,
        false,
    );
    assert_eq!(
        j.error.as_deref(),
        Some("The provider could not use the input image or parameters")
    );
    assert!(j.detail.as_deref().unwrap().contains("CUDA"));
    let s = serde_json::to_string(&j.status_response("")).unwrap();
    assert!(!s.contains("CUDA") && !s.contains("/models"), "{s}");
    assert_eq!(
        public_error(FailureKind::Rejected, "Content moderated: flagged"),
        "Rejected by the provider's safety filter (content moderated)"
    );
    assert_eq!(
        public_error(
            FailureKind::Upstream,
            "replicate answered HTTP 402: set up billing"
        ),
        "The provider failed to generate the image"
    );
}

#[test]
fn delete_waits_for_the_refund_and_the_upstream_cancel() {
    let mut j = running();
    j.delete(1_000_500);
    assert!(j.deleted && j.status == JobStatus::Failed);
    assert!(!j.purge_ready(1_000_500), "a cancel is owed first");
    j.cancel_outcome("u1", Ok(CancelOutcome::Stopped), 1_000_600, 0.0);
    assert!(!j.purge_ready(1_000_600), "then the refund");
    j.outbox.refund = None;
    assert!(j.purge_ready(1_000_700));
}

#[test]
fn the_alarm_is_due_at_the_earliest_of_step_outbox_and_purge() {
    let mut j = running();
    assert_eq!(j.next_due_ms(), Some(1_000_200));
    j.next_step_ms = Some(j.deadline_ms + 50_000);
    assert_eq!(
        j.next_due_ms(),
        Some(j.deadline_ms),
        "never past the deadline"
    );
    assert!(!j.is_stuck(j.deadline_ms));
    assert!(
        j.is_stuck(j.deadline_ms + 1),
        "a running job past its deadline"
    );
    j.cancel(1_000_300);
    assert_eq!(
        j.next_due_ms(),
        Some(1_000_300),
        "the upstream cancel is due"
    );
    j.cancel_outcome("u1", Ok(CancelOutcome::Requested), 1_000_400, 0.0);
    j.outbox.drop_outputs = None;
    assert_eq!(j.next_due_ms(), Some(1_000_400), "then its settlement");
    j.outbox.refund = None;
    assert_eq!(j.next_due_ms(), j.expires_ms, "then only the purge");
    let mut r = Retry::now(0);
    r.failed(10, 0.0);
    assert_eq!(r.next_ms, 2_010);
    for _ in 0..20 {
        r.failed(10, 0.0);
    }
    assert_eq!(r.next_ms, 10 + OUTBOX_MAX_BACKOFF_MS);
}

#[test]
fn a_delete_during_the_submit_purges_only_after_its_outcome_and_without_spinning() {
    let mut j = job();
    let a = j.begin_submit(1_000_100);
    j.delete(1_000_150);
    assert!(j.deleted && j.status == JobStatus::Failed);
    assert!(
        !j.purge_ready(1_000_150),
        "the submit is out: its outcome decides the refund and the cancel"
    );
    assert_eq!(
        j.next_due_ms(),
        Some(1_000_150 + RESOLVE_SUBMIT_AFTER_MS),
        "a due purge that is not ready does not re-arm the alarm at once"
    );
    assert_eq!(
        j.submit_outcome(&a, Ok(sub("u1")), 1_000_200, 0.0),
        FailoverStep::Failed
    );
    assert!(j.outbox.resolve_submit.is_none());
    assert!(!j.purge_ready(1_000_200), "the upstream cancel is owed");
    assert_eq!(j.next_due_ms(), Some(1_000_200), "the cancel is due");
    j.cancel_outcome("u1", Ok(CancelOutcome::Stopped), 1_000_300, 0.0);
    assert_eq!(j.refund, Some(5));
    assert!(!j.purge_ready(1_000_300), "the refund is owed");
    j.outbox.refund = None;
    assert!(j.purge_ready(1_000_400));

    // Refused upstream: nothing spent, refunded, then purged.
    let mut k = job();
    let a = k.begin_submit(1_000_100);
    k.delete(1_000_150);
    k.submit_outcome(
        &a,
        Err(UpstreamError::Permanent("400".into())),
        1_000_200,
        0.0,
    );
    assert_eq!(k.refund, Some(5));
    assert!(!k.purge_ready(1_000_200));
    k.outbox.refund = None;
    assert!(k.purge_ready(1_000_200));
}

#[test]
fn a_lost_submit_of_a_canceled_job_is_resolved_soon_then_with_backoff() {
    let mut j = job();
    j.begin_submit(1_000_100);
    j.cancel(1_000_150);
    let due = 1_000_150 + RESOLVE_SUBMIT_AFTER_MS;
    assert_eq!(
        j.next_due_ms(),
        Some(due),
        "resolved on the next alarm, not at the end of retention"
    );
    assert!(!j.lost_submit_due(due - 1));
    assert!(j.lost_submit_due(due));
    let mut now = due;
    let mut gaps = Vec::new();
    while j.submitting.is_some() {
        j.lost_submit_lookup_failed(now, 0.0);
        if let Some(r) = j.outbox.resolve_submit {
            assert!(
                j.next_due_ms() <= Some(r.next_ms),
                "the alarm is set for it"
            );
            gaps.push(r.next_ms - now);
            now = r.next_ms;
        }
    }
    assert_eq!(gaps.len() as u32, RESOLVE_SUBMIT_MAX_TRIES - 1);
    assert!(gaps.windows(2).all(|w| w[0] < w[1]), "{gaps:?}");
    assert_eq!(j.refund, Some(0), "it may have run: spent");
    assert!(j.outbox.resolve_submit.is_none());
    j.delete(now);
    assert!(!j.purge_ready(now), "its settlement first");
    j.outbox.refund = None;
    assert!(j.purge_ready(now));

    // A record from before `resolve_submit` is due at once.
    let mut old = job();
    old.begin_submit(1_000_100);
    old.cancel(1_000_150);
    old.outbox.resolve_submit = None;
    assert!(old.lost_submit_due(1_000_150));
    assert_eq!(old.next_due_ms(), Some(1_000_150));
}

#[test]
fn a_confirmed_stop_wins_over_a_second_sends_answer_that_arrived_first() {
    let mut j = running();
    j.cancel(1_000_300);
    // Two sends of the same cancel: the second's 409 ("finished") lands first.
    j.cancel_outcome("u1", Ok(CancelOutcome::Requested), 1_000_400, 0.0);
    assert_eq!(j.refund, Some(0));
    j.cancel_outcome("u1", Ok(CancelOutcome::Stopped), 1_000_450, 0.0);
    assert_eq!(j.refund, Some(5), "Stopped wins");
    assert!(j.outbox.refund.is_some());
    // Only once, and never for another upstream job or a non-owner cancel.
    j.cancel_outcome("u1", Ok(CancelOutcome::Stopped), 1_000_500, 0.0);
    assert_eq!(j.refund, Some(5));
    let mut t = running();
    t.time_out(t.deadline_ms);
    t.cancel_outcome("u1", Ok(CancelOutcome::Requested), t.deadline_ms, 0.0);
    let before = t.refund;
    t.cancel_outcome("u1", Ok(CancelOutcome::Stopped), t.deadline_ms, 0.0);
    assert_eq!(t.refund, before);
    let mut k = running();
    k.cancel(1_000_300);
    k.cancel_outcome("u1", Ok(CancelOutcome::Requested), 1_000_400, 0.0);
    k.cancel_outcome("other", Ok(CancelOutcome::Stopped), 1_000_450, 0.0);
    assert_eq!(k.refund, Some(0));
}

#[test]
fn an_expired_job_whose_purge_waits_does_not_re_arm_at_once() {
    let mut j = running();
    j.cancel(1_000_300);
    let expiry = j.expires_ms.unwrap();
    j.expire(expiry);
    assert!(j.outbox.purge.is_some());
    let mut c = j.outbox.cancels[0].retry;
    c.failed(expiry, 0.0);
    j.outbox.cancels[0].retry = c;
    j.outbox.drop_outputs = None;
    assert_eq!(j.next_due_ms(), Some(c.next_ms), "the cancel's backoff");
}

#[test]
fn an_output_written_after_a_cancel_or_delete_may_not_stay() {
    let j = running();
    assert!(j.owns_outputs_of("u1"));
    assert!(!j.owns_outputs_of("other"));
    let mut c = running();
    c.cancel(1_000_300);
    assert!(!c.owns_outputs_of("u1"));
    let mut d = running();
    d.delete(1_000_300);
    assert!(!d.owns_outputs_of("u1"));
    // Completed from that upstream job by another look (two alarms overlapping:
    // the second look's write must not delete what the first completed with):
    // the same outputs, they stay; deleted afterwards, they do not.
    let mut done = running();
    done.complete(Vec::new(), 1_000_300);
    assert!(done.owns_outputs_of("u1"));
    assert!(!done.owns_outputs_of("other"));
    done.delete(1_000_400);
    assert!(!done.owns_outputs_of("u1"));
}

#[test]
fn an_answer_says_what_may_still_be_refunded_while_the_refund_is_undecided() {
    // Canceled after the submit: the upstream's answer to the cancel decides.
    let mut j = running();
    assert_eq!(
        j.refund_pending(),
        None,
        "running: refund_on_cancel says it"
    );
    j.cancel(1_000_300);
    let c = j.metrics().credits.unwrap();
    assert_eq!(
        (c.refunded, c.refund_pending, c.refund_on_cancel),
        (0, Some(5), None),
        "never 'refunded: 0' alone while a refund may come"
    );
    j.cancel_outcome("u1", Ok(CancelOutcome::Stopped), 1_000_400, 0.0);
    let c = j.metrics().credits.unwrap();
    assert_eq!((c.refunded, c.refund_pending), (5, None));

    // Canceled while the submit is out: its outcome decides.
    let mut k = job();
    let attempt = k.begin_submit(1_000_100);
    k.delete(1_000_150);
    assert_eq!(k.metrics().credits.unwrap().refund_pending, Some(5));
    k.submit_outcome(
        &attempt,
        Err(UpstreamError::Permanent("refused".into())),
        1_000_200,
        0.0,
    );
    let c = k.metrics().credits.unwrap();
    assert_eq!((c.refunded, c.refund_pending), (5, None));

    // Decided at once: nothing pending.
    let mut l = job();
    l.cancel(1_000_100);
    assert_eq!(l.metrics().credits.unwrap().refund_pending, None);
    let mut m = job();
    m.complete(vec![jpg()], 1_002_000);
    assert_eq!(m.metrics().credits.unwrap().refund_pending, None);
    let v = serde_json::to_value(m.metrics().credits.unwrap()).unwrap();
    assert!(v.get("refund_pending").is_none(), "absent once settled");
}

#[test]
fn a_refund_raised_by_a_late_confirmed_stop_is_settled_again() {
    let mut j = running();
    j.cancel(1_000_300);
    j.cancel_outcome("u1", Ok(CancelOutcome::Requested), 1_000_400, 0.0);
    assert_eq!(j.refund, Some(0));
    assert!(j.outbox.refund.is_some(), "the settlement of 0 is owed");
    j.outbox.refund = None;
    j.cancel_outcome("u1", Ok(CancelOutcome::Stopped), 1_000_500, 0.0);
    assert_eq!(j.refund, Some(5));
    assert!(
        j.outbox.refund.is_some(),
        "the raised refund is sent too (the Ledger tops the first one up)"
    );
}

#[test]
fn every_end_has_its_settlement_reason() {
    let mut failed = job();
    failed.fail(FailureKind::Timeout, "deadline", 1_001_000);
    assert_eq!(failed.settlement(), Settlement::Failed);
    let mut rejected = job();
    rejected.fail(FailureKind::Rejected, "nsfw", 1_001_000);
    assert_eq!(rejected.settlement(), Settlement::Failed);
    let mut canceled = job();
    canceled.cancel(1_001_000);
    assert_eq!(canceled.settlement(), Settlement::Canceled);
}

/// A depth preview's record, as `job()` but for the preview model.
fn preview_job() -> JobRecord {
    let mut j = job();
    j.model = Model::DepthAnythingV2;
    j.params = Params::default();
    j.ownership.charged = 0;
    j
}

#[test]
fn a_previews_control_image_is_dropped_once_it_ends_and_a_generations_is_kept() {
    let out = StoredOutput {
        ext: "png".into(),
        content_type: "image/png".into(),
        bytes: 10,
        width: 64,
        height: 48,
    };
    let mut p = preview_job();
    p.mark_processing(1_000_500);
    assert!(p.outbox.drop_input.is_none(), "not while it runs");
    p.complete(vec![out.clone()], 1_002_500);
    assert!(p.input_drop_ready(1_002_500));
    assert_eq!(p.next_due_ms(), Some(1_002_500), "due at once");
    assert_eq!(p.outputs.len(), 1, "the map stays");

    // A failed preview too; but not while a submit attempt is out or being resolved
    // (a lookup may replay it), and then not scheduled either.
    let mut f = preview_job();
    f.submitting = Some(Attempt {
        n: 1,
        provider: "comfyui".into(),
        started_ms: 1_000_100,
        ambiguous: false,
    });
    f.fail(FailureKind::Timeout, "deadline", 1_003_000);
    assert!(f.outbox.drop_input.is_some());
    assert!(!f.input_drop_ready(1_003_000));
    f.outbox.refund = None;
    assert!(
        f.next_due_ms().is_some_and(|t| t > 1_003_000),
        "{:?}",
        f.next_due_ms()
    );

    // A generation keeps its control image for the retention (its share page, the
    // owner's link).
    assert!(completed(1).outbox.drop_input.is_none());
    let mut g = job();
    g.fail(FailureKind::Upstream, "x", 1_003_000);
    assert!(g.outbox.drop_input.is_none());
}
