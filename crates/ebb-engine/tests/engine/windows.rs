//! Maintenance windows (`[[pool.window]]`), judged by the harness's settable clock: a
//! member starts only inside a window with its expected time left; otherwise the run pauses
//! (or, with `--wait`, sleeps until the window it fits in).

use crate::waits;
use ebb_engine::events::Event;
use ebb_engine::journal::{MemberState, RunState};
use ebb_engine::run::{RunError, RunOptions};
use ebb_engine::testing::{assert_ended, Harness, PlanBuilder};
use ebb_engine::window::Window;
use jiff::civil::Time;
use jiff::tz::TimeZone;
use jiff::Timestamp;
use std::time::Duration;

const MINUTE: Duration = Duration::from_secs(60);

fn at(s: &str) -> Timestamp {
    s.parse().unwrap()
}

/// Every day at 21:00 UTC, for `length`.
fn nightly(length: Duration) -> Window {
    Window {
        days: [true; 7],
        start: Time::new(21, 0, 0, 0).unwrap(),
        length,
        time_zone: TimeZone::UTC,
        zone_name: "UTC".into(),
    }
}

/// Three members with one step, windows of `length` and the given expected member time;
/// the clock at Saturday 2026-12-05 21:00 UTC, when the window opens; each member's
/// install moves the clock on by `takes`.
fn harness(length: Duration, expected: Duration, takes: Duration) -> Harness {
    let plan = PlanBuilder::new(3)
        .step("install")
        .windows(vec![nightly(length)], Some(expected))
        .build();
    let h = Harness::new(plan);
    h.clock.set(at("2026-12-05T21:00:00Z"));
    for m in ["m1", "m2", "m3"] {
        let clock = h.clock.clone();
        h.log.on(m, "run install", move || clock.advance(takes));
    }
    h
}

fn run_finished(h: &Harness) -> Vec<(String, String)> {
    h.events()
        .into_iter()
        .filter_map(|e| match e {
            Event::RunFinished { state, message, .. } => Some((state, message)),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn a_window_closing_soon_pauses_at_the_first_member_that_no_longer_fits() {
    // 25 minutes of window, 10 minutes a member: m1 (21:00-21:10) and m2 (21:10-21:20)
    // fit, m3 at 21:20 would end at 21:30, after the window closes.
    let h = harness(25 * MINUTE, 10 * MINUTE, 10 * MINUTE);
    let out = h.run().await;
    assert_ended(&out, RunState::Paused, 0);
    assert_eq!(
        h.states(),
        [MemberState::Done, MemberState::Done, MemberState::Pending]
    );
    assert!(h.log.calls("m3").is_empty(), "{}", h.log.dump());
    assert!(h.owed("m3").is_empty());
    for part in [
        "closes at Sat 2026-12-05 21:25 UTC (5m left)",
        "expected 10m",
        "opens Sun 2026-12-06 21:00 UTC",
        "`ebb resume`",
    ] {
        assert!(out.message.contains(part), "{part:?} in {}", out.message);
    }
    // The reason is in the journal (status) and in the run's last event (the `paused`
    // notification is made from it).
    assert_eq!(h.run_record().state, RunState::Paused);
    assert_eq!(h.run_record().message, out.message);
    assert_eq!(
        run_finished(&h),
        [("paused".to_string(), out.message.clone())]
    );

    // A resume outside any window pauses again at once, touching nothing.
    h.clock.set(at("2026-12-06T12:00:00Z"));
    let again = h.resume().await;
    assert_eq!((again.state, again.exit_code), (RunState::Paused, 0));
    assert!(
        again.message.starts_with("outside the maintenance windows"),
        "{}",
        again.message
    );
    assert!(h.log.calls("m3").is_empty());
}

#[tokio::test]
async fn resume_wait_sleeps_until_the_next_window_and_goes_on() {
    let h = harness(25 * MINUTE, 10 * MINUTE, 10 * MINUTE);
    assert_eq!(h.run().await.state, RunState::Paused);
    // The window has closed (m1 and m2, done, now set the expected time: milliseconds).
    h.clock.set(at("2026-12-05T21:30:00Z"));
    let resume = h.resume_with(RunOptions {
        wait: true,
        ..Default::default()
    });
    let next_window = async {
        // The resume says it waits, and waits: m3 is not touched before the clock moves.
        let mut waited = Duration::ZERO;
        while waits(&h).is_empty() {
            assert!(waited < Duration::from_secs(15), "no wait announced");
            tokio::time::sleep(Duration::from_millis(20)).await;
            waited += Duration::from_millis(20);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(h.log.calls("m3").is_empty(), "{}", h.log.dump());
        h.clock.set(at("2026-12-06T21:00:00Z"));
    };
    let (out, ()) = tokio::join!(resume, next_window);
    assert_ended(&out, RunState::Done, 0);
    h.assert_all_done();
    assert!(
        waits(&h)[0].contains("opens Sun 2026-12-06 21:00 UTC"),
        "{:?}",
        waits(&h)
    );
}

#[tokio::test]
async fn a_member_whose_time_does_not_fit_any_window_is_not_started() {
    // A 5-minute window and 10-minute members: no member ever fits.
    let h = harness(5 * MINUTE, 10 * MINUTE, 10 * MINUTE);
    let out = h.run().await;
    assert_ended(&out, RunState::Paused, 0);
    assert!(
        out.message
            .contains("no window within the coming week is long enough for 10m"),
        "{}",
        out.message
    );
    for m in ["m1", "m2", "m3"] {
        assert!(h.log.calls(m).is_empty(), "{}", h.log.dump());
    }
}

#[tokio::test]
async fn ctrl_c_while_waiting_for_a_window_leaves_the_run_paused_owing_nothing() {
    let h = harness(25 * MINUTE, 10 * MINUTE, 10 * MINUTE);
    h.clock.set(at("2026-12-05T12:00:00Z"));
    let run = h.start(RunOptions {
        wait: true,
        ..Default::default()
    });
    let ctrl_c = async {
        while waits(&h).is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        h.interrupt();
    };
    let (ended, ()) = tokio::join!(run, ctrl_c);
    let out = match ended {
        ebb_engine::testing::Ended::Finished(Ok(o)) => o,
        other => panic!("{other:?}"),
    };
    assert_ended(&out, RunState::Paused, 130);
    assert_eq!(h.run_record().state, RunState::Paused);
    for m in ["m1", "m2", "m3"] {
        assert!(h.log.calls(m).is_empty(), "{}", h.log.dump());
        assert!(h.owed(m).is_empty());
    }
}

#[tokio::test]
async fn earlier_members_in_the_journal_set_the_expected_time() {
    // A first run without windows: its members take (real) milliseconds.
    let plain = PlanBuilder::new(3).step("install").build();
    let mut h = Harness::new(plain.clone());
    assert_eq!(h.run().await.state, RunState::Done);
    // Then a 5-minute window with expected_member_time = 1h: the journal's median (far
    // below 5 minutes) decides, not the runbook's hour, so every member fits.
    let mut windowed = plain;
    windowed.pool.windows = vec![nightly(5 * MINUTE)];
    windowed.runbook.expected_member_time = Some(60 * MINUTE);
    h.replan(windowed.clone());
    h.clock.set(at("2026-12-05T21:00:00Z"));
    let out = h.run().await;
    assert_ended(&out, RunState::Done, 0);
    h.assert_all_done();

    // Without history and without expected_member_time, the run is refused: the window
    // cannot be judged.
    let mut bare = windowed;
    bare.runbook.expected_member_time = None;
    let fresh = Harness::new(bare);
    match fresh.start(RunOptions::default()).await {
        ebb_engine::testing::Ended::Finished(Err(RunError::Usage(m))) => {
            assert!(m.contains("cannot be judged"), "{m}")
        }
        other => panic!("{other:?}"),
    }
    assert!(fresh.log.calls("m1").is_empty());
}
