//! Maintenance windows (`[[pool.window]]`): when a member may start, how long a member is
//! expected to take, and the clock both are judged by.
//!
//! A member starts only when the time is inside a window **and** its expected time ends
//! before that window closes. Windows that overlap or touch count as one. The time of day is
//! read in each window's own time zone (jiff, with the IANA database bundled so that no
//! `/usr/share/zoneinfo` is needed); a window's length is elapsed time, so a window across
//! a daylight-saving change is as long as it says.

use crate::journal::{JResult, Journal};
use jiff::civil::{Time, Weekday};
use jiff::tz::TimeZone;
use jiff::Timestamp;
use std::sync::Arc;
use std::time::Duration;

/// The time library windows are computed with, for the tools that show them.
pub use jiff;

/// One `[[pool.window]]`: it opens at `start` (local time in `time_zone`) on each of its
/// days and stays open for `length`.
#[derive(Debug, Clone)]
pub struct Window {
    /// The days it opens on, Monday first.
    pub days: [bool; 7],
    /// The local time it opens at.
    pub start: Time,
    /// How long it stays open (at most 7 days).
    pub length: Duration,
    /// The zone `start` is read in.
    pub time_zone: TimeZone,
    /// The zone's name as shown to people (`Europe/Berlin`, or the machine's zone).
    pub zone_name: String,
}

impl Window {
    /// `sat,sun 22:00 +4h Europe/Berlin`, for messages.
    pub fn describe(&self) -> String {
        const NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
        let days = if self.days.iter().all(|d| *d) {
            "daily".to_string()
        } else {
            NAMES
                .iter()
                .zip(self.days)
                .filter(|(_, on)| *on)
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
                .join(",")
        };
        format!(
            "{days} {} for {} ({})",
            self.start.strftime("%H:%M"),
            ebb_config::format_duration(self.length),
            self.zone_name
        )
    }
}

/// The longest window: a window open longer than a week is always open; give none.
pub const MAX_LENGTH: Duration = Duration::from_secs(7 * 86_400);

/// A span of time during which some window is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Open {
    /// When it opens.
    pub start: Timestamp,
    /// When it closes.
    pub end: Timestamp,
}

/// Every open span of `windows` from 8 days before `around` to 15 days after it, merged
/// where windows overlap or touch, in order. A window opens at most once a day and lasts at
/// most a week, and every pattern repeats weekly, so this holds the open span around
/// `around` and the next one a member of any length that fits at all can use.
pub fn open_spans(windows: &[Window], around: Timestamp) -> Vec<Open> {
    let mut spans: Vec<Open> = Vec::new();
    for w in windows {
        let today = around.to_zoned_datetime(w.time_zone.clone()).date();
        for offset in -8i32..=15 {
            let Ok(day) = today.checked_add(jiff::Span::new().days(offset)) else {
                continue;
            };
            let on = w.days[day.weekday().to_monday_zero_offset() as usize];
            if !on {
                continue;
            }
            // A start time a daylight-saving change skips opens at the first time after
            // it (jiff's "compatible" rule); one it repeats opens at the first of the two.
            let Ok(opens) = day
                .to_datetime(w.start)
                .to_zoned_datetime(w.time_zone.clone())
            else {
                continue;
            };
            let start = opens.timestamp();
            let Ok(end) = start.checked_add(w.length) else {
                continue;
            };
            spans.push(Open { start, end });
        }
    }
    spans.sort_by_key(|s| s.start);
    let mut merged: Vec<Open> = Vec::with_capacity(spans.len());
    for s in spans {
        match merged.last_mut() {
            Some(last) if s.start <= last.end => last.end = last.end.max(s.end),
            _ => merged.push(s),
        }
    }
    merged
}

/// Whether a member expected to take `expected` may start at `now`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Inside a window, with time enough left (or there are no windows).
    Start,
    /// Not now.
    Closed {
        /// Why, for people: outside every window, or too little of it left.
        reason: String,
        /// The earliest time a member of that length can start, if some window within
        /// the coming week is long enough.
        next: Option<Timestamp>,
    },
}

/// Decides whether a member expected to take `expected` may start at `now`.
pub fn decide(windows: &[Window], now: Timestamp, expected: Duration) -> Decision {
    if windows.is_empty() {
        return Decision::Start;
    }
    let spans = open_spans(windows, now);
    let next = earliest_start(&spans, now, expected);
    if next == Some(now) {
        return Decision::Start;
    }
    let reason = match spans.iter().find(|s| s.start <= now && now < s.end) {
        Some(open) => format!(
            "the maintenance window closes at {} ({} left), too soon for the next member's expected {}",
            show(open.end, windows),
            roughly(between(now, open.end)),
            ebb_config::format_duration(expected)
        ),
        None => "outside the maintenance windows".to_string(),
    };
    let reason = match next {
        Some(t) => format!(
            "{reason}; the next window it fits in opens {} (in {})",
            show(t, windows),
            roughly(between(now, t))
        ),
        None => format!(
            "{reason}; no window within the coming week is long enough for {}",
            ebb_config::format_duration(expected)
        ),
    };
    Decision::Closed { reason, next }
}

/// The earliest time at or after `now` when a member of `expected` fits in a span.
fn earliest_start(spans: &[Open], now: Timestamp, expected: Duration) -> Option<Timestamp> {
    spans.iter().filter(|s| s.end > now).find_map(|s| {
        let t = s.start.max(now);
        let ends = t.checked_add(expected).ok()?;
        (ends <= s.end).then_some(t)
    })
}

/// The time from `a` to `b` (zero when `b` is not later), to the second.
pub fn between(a: Timestamp, b: Timestamp) -> Duration {
    let secs = b.as_second() - a.as_second();
    Duration::from_secs(secs.max(0) as u64)
}

/// `d` for a message: whole minutes from a minute on (`30h28m`, not `30h28m54s`).
fn roughly(d: Duration) -> String {
    let d = if d >= Duration::from_secs(60) {
        Duration::from_secs(d.as_secs() / 60 * 60)
    } else {
        d
    };
    ebb_config::format_duration(d)
}

/// `t` in the first window's zone (`Sat 2026-12-05 22:00 CET`), for messages.
pub fn show(t: Timestamp, windows: &[Window]) -> String {
    let tz = windows
        .first()
        .map(|w| w.time_zone.clone())
        .unwrap_or(TimeZone::UTC);
    t.to_zoned_datetime(tz)
        .strftime("%a %Y-%m-%d %H:%M %Z")
        .to_string()
}

/// The days a window opens on, from `days`.
pub fn weekday(name: &str) -> Option<Weekday> {
    Some(match name.to_ascii_lowercase().as_str() {
        "mon" | "monday" => Weekday::Monday,
        "tue" | "tuesday" => Weekday::Tuesday,
        "wed" | "wednesday" => Weekday::Wednesday,
        "thu" | "thursday" => Weekday::Thursday,
        "fri" | "friday" => Weekday::Friday,
        "sat" | "saturday" => Weekday::Saturday,
        "sun" | "sunday" => Weekday::Sunday,
        _ => return None,
    })
}

/// Where the scheduler reads the time from, and how it waits for a window: the system
/// clock in `ebb`, a clock the test sets in the engine's tests (no sleeps of minutes).
#[async_trait::async_trait]
pub trait Clock: Send + Sync {
    /// Now.
    fn now(&self) -> Timestamp;
    /// Returns once it is `t` or later.
    async fn sleep_until(&self, t: Timestamp);
}

/// The machine's clock.
#[derive(Debug, Default)]
pub struct SystemClock;

#[async_trait::async_trait]
impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }

    async fn sleep_until(&self, t: Timestamp) {
        // In slices, reading the wall clock again after each: a suspended machine or a
        // clock set forward does not make ebb sleep past the window.
        loop {
            let now = Timestamp::now();
            if now >= t {
                return;
            }
            let slice = between(now, t).clamp(Duration::from_millis(50), Duration::from_secs(30));
            tokio::time::sleep(slice).await;
        }
    }
}

/// The clock a run uses unless told otherwise.
pub fn system_clock() -> Arc<dyn Clock> {
    Arc::new(SystemClock)
}

/// How long each member is expected to take: the median of the pool's earlier members
/// that ended done (the member's own when the journal has any, else the whole pool's), else
/// `[runbook] expected_member_time`.
#[derive(Debug, Clone, Default)]
pub struct Expectation {
    /// Earlier members' work times, newest first.
    history: Vec<(String, Duration)>,
    /// `[runbook] expected_member_time`.
    fallback: Option<Duration>,
}

/// How many earlier members the median is taken over, newest first.
pub const HISTORY: usize = 200;

/// Where an expected time comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Basis {
    /// The median of this many earlier runs of the same member.
    Own(usize),
    /// The median of this many earlier members of the pool.
    Pool(usize),
    /// `[runbook] expected_member_time`.
    Runbook,
}

impl Basis {
    /// In people's words.
    pub fn describe(self) -> String {
        match self {
            Basis::Own(n) => format!("median of its {n} earlier run(s)"),
            Basis::Pool(n) => format!("median of {n} earlier member(s) of the pool"),
            Basis::Runbook => "[runbook] expected_member_time".to_string(),
        }
    }
}

impl Expectation {
    /// From the journal's earlier members of `pool`, and the runbook's fallback.
    pub fn from_journal(
        journal: &Journal,
        pool: &str,
        fallback: Option<Duration>,
    ) -> JResult<Expectation> {
        Ok(Expectation {
            history: journal.member_times(pool, HISTORY)?,
            fallback,
        })
    }

    /// From known times (newest first), for tools and tests.
    pub fn new(history: Vec<(String, Duration)>, fallback: Option<Duration>) -> Expectation {
        Expectation { history, fallback }
    }

    /// The time `member` is expected to take and where it comes from; `None` when there is
    /// neither history nor `expected_member_time` (a window cannot be judged).
    pub fn of(&self, member: &str) -> Option<(Duration, Basis)> {
        let own: Vec<Duration> = self
            .history
            .iter()
            .filter(|(m, _)| m == member)
            .map(|(_, d)| *d)
            .collect();
        if !own.is_empty() {
            return Some((median(own.clone()), Basis::Own(own.len())));
        }
        if !self.history.is_empty() {
            let all: Vec<Duration> = self.history.iter().map(|(_, d)| *d).collect();
            return Some((median(all), Basis::Pool(self.history.len())));
        }
        self.fallback.map(|d| (d, Basis::Runbook))
    }
}

/// The median (the mean of the middle two for an even count); zero for none.
pub fn median(mut v: Vec<Duration>) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    v.sort_unstable();
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2
    }
}

/// A run's maintenance windows, the expected times they are judged by, and the clock.
pub struct Schedule {
    /// `[[pool.window]]`.
    pub windows: Vec<Window>,
    /// Expected times of the members.
    pub expectation: Expectation,
    /// Now, and waiting.
    pub clock: Arc<dyn Clock>,
}

impl Schedule {
    /// Whether `member` may start now.
    pub fn decide(&self, member: &str) -> Decision {
        if self.windows.is_empty() {
            return Decision::Start;
        }
        match self.expectation.of(member) {
            Some((d, _)) => decide(&self.windows, self.clock.now(), d),
            None => Decision::Closed {
                reason: format!("{}: {}", member, CANNOT_JUDGE),
                next: None,
            },
        }
    }
}

/// The message of a run paused because a member does not fit in a window now.
pub fn paused(reason: &str) -> String {
    format!("{reason}; `ebb resume` goes on inside a window, `ebb resume --wait` waits for it")
}

/// Why a window cannot be judged: no member time is known.
pub const CANNOT_JUDGE: &str = "the maintenance window cannot be judged: the journal has no earlier member that ended done and [runbook] sets no expected_member_time (e.g. expected_member_time = \"20m\")";

/// A clock for [`crate::run::RunOptions`]: the system clock unless a test sets its own.
#[derive(Clone)]
pub struct ClockRef(pub Arc<dyn Clock>);

impl Default for ClockRef {
    fn default() -> Self {
        ClockRef(system_clock())
    }
}

impl std::fmt::Debug for ClockRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Clock({})", self.0.now())
    }
}

/// Where one member falls in [`simulate`]d time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    /// Member index in the plan.
    pub member: usize,
    /// Its expected time, if known.
    pub expected: Option<Duration>,
    /// When it is expected to start and end; `None` when it cannot be judged.
    pub at: Option<(Timestamp, Timestamp)>,
}

/// Plays a run forward from `now` on expected times: waves in order, at most `parallel`
/// members at once, each starting only where it fits a window. For `ebb plan`: each member's
/// expected start and end, and from them the run's expected end.
pub fn simulate(
    order: &[Vec<usize>],
    names: &[String],
    parallel: usize,
    windows: &[Window],
    expectation: &Expectation,
    now: Timestamp,
) -> Vec<Slot> {
    let mut out = Vec::new();
    let mut t = now;
    let mut known = true;
    for wave in order {
        // When each of the `parallel` slots is free again.
        let mut free = vec![t; parallel.max(1)];
        let mut wave_end = t;
        for &i in wave {
            let expected = expectation.of(&names[i]).map(|(d, _)| d);
            let k = (0..free.len()).min_by_key(|&k| free[k]).unwrap_or(0);
            // Once one member cannot be judged (unknown time, or no window long enough),
            // no member after it can.
            let start = match expected.filter(|_| known) {
                Some(_) if windows.is_empty() => Some(free[k]),
                Some(d) => earliest_start(&open_spans(windows, free[k]), free[k], d),
                None => None,
            };
            let at = start
                .zip(expected)
                .map(|(s, d)| (s, s.checked_add(d).unwrap_or(s)));
            match at {
                Some((_, end)) => {
                    free[k] = end;
                    wave_end = wave_end.max(end);
                }
                None => known = false,
            }
            out.push(Slot {
                member: i,
                expected,
                at,
            });
        }
        t = wave_end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(days: &[usize], start: (i8, i8), length_min: u64, tz: &str) -> Window {
        let mut d = [false; 7];
        for &i in days {
            d[i] = true;
        }
        Window {
            days: d,
            start: Time::new(start.0, start.1, 0, 0).unwrap(),
            length: Duration::from_secs(length_min * 60),
            time_zone: TimeZone::get(tz).unwrap(),
            zone_name: tz.into(),
        }
    }

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn a_weekend_night_window_opens_and_closes_in_its_own_zone() {
        // Saturday 2026-12-05 22:00 in Berlin is 21:00 UTC; four hours long.
        let w = [window(&[5, 6], (22, 0), 240, "Europe/Berlin")];
        let hour = Duration::from_secs(3600);
        assert_eq!(
            decide(&w, at("2026-12-05T21:30:00Z"), hour),
            Decision::Start
        );
        match decide(&w, at("2026-12-05T20:00:00Z"), hour) {
            Decision::Closed { reason, next } => {
                assert_eq!(next, Some(at("2026-12-05T21:00:00Z")));
                assert!(reason.starts_with("outside"), "{reason}");
            }
            d => panic!("{d:?}"),
        }
        // 30 minutes left of Saturday's window: a 1 h member waits for Sunday's.
        match decide(&w, at("2026-12-06T00:30:00Z"), hour) {
            Decision::Closed { reason, next } => {
                assert_eq!(next, Some(at("2026-12-06T21:00:00Z")));
                assert!(reason.contains("30m left"), "{reason}");
            }
            d => panic!("{d:?}"),
        }
        // Longer than any window: never.
        match decide(&w, at("2026-12-05T21:30:00Z"), 5 * hour) {
            Decision::Closed { next: None, .. } => {}
            d => panic!("{d:?}"),
        }
    }

    #[test]
    fn a_window_across_a_daylight_saving_change_is_as_long_as_it_says() {
        // 2026-03-29 is the spring change in Berlin: 01:00 to 05:00 local is 3 h of
        // local clock but the window lasts 4 h of elapsed time: 00:00 to 04:00 UTC.
        let w = [window(&[6], (1, 0), 240, "Europe/Berlin")];
        let spans = open_spans(&w, at("2026-03-29T02:00:00Z"));
        assert!(spans.contains(&Open {
            start: at("2026-03-29T00:00:00Z"),
            end: at("2026-03-29T04:00:00Z"),
        }));
    }

    #[test]
    fn windows_that_touch_count_as_one() {
        let w = [
            window(&[0, 1, 2, 3, 4, 5, 6], (22, 0), 240, "UTC"),
            window(&[0, 1, 2, 3, 4, 5, 6], (2, 0), 120, "UTC"),
        ];
        // 23:00: 5 h left across both.
        let five = Duration::from_secs(5 * 3600);
        assert_eq!(
            decide(&w, at("2026-12-07T23:00:00Z"), five),
            Decision::Start
        );
    }

    #[test]
    fn a_simulated_run_waits_for_the_next_window_where_a_member_does_not_fit() {
        // A daily 21:00-21:25 UTC window, 10-minute members one at a time: two fit
        // tonight, the third starts tomorrow night; a second wave follows it.
        let w = [window(&[0, 1, 2, 3, 4, 5, 6], (21, 0), 25, "UTC")];
        let names: Vec<String> = ["a", "b", "c", "d"].map(String::from).to_vec();
        let e = Expectation::new(vec![], Some(Duration::from_secs(600)));
        let slots = simulate(
            &[vec![0, 1, 2], vec![3]],
            &names,
            1,
            &w,
            &e,
            at("2026-12-05T20:00:00Z"),
        );
        let starts: Vec<Timestamp> = slots.iter().map(|s| s.at.unwrap().0).collect();
        assert_eq!(
            starts,
            [
                at("2026-12-05T21:00:00Z"),
                at("2026-12-05T21:10:00Z"),
                at("2026-12-06T21:00:00Z"),
                at("2026-12-06T21:10:00Z"),
            ]
        );
        // An unknown time: that member and every one after it cannot be judged.
        let none = simulate(
            &[vec![0, 1]],
            &names,
            1,
            &w,
            &Expectation::default(),
            at("2026-12-05T20:00:00Z"),
        );
        assert!(none.iter().all(|s| s.at.is_none()));
    }

    #[test]
    fn the_time_zone_database_is_compiled_in_for_machines_without_one() {
        // What jiff falls back to when no /usr/share/zoneinfo (or TZDIR) exists.
        let bundled = jiff::tz::TimeZoneDatabase::bundled();
        assert!(!bundled.is_definitively_empty());
        let berlin = bundled.get("Europe/Berlin").unwrap();
        let winter = at("2026-12-05T21:00:00Z").to_zoned_datetime(berlin.clone());
        let summer = at("2026-07-04T20:00:00Z").to_zoned_datetime(berlin);
        assert_eq!((winter.hour(), summer.hour()), (22, 22));
    }

    #[test]
    fn the_median_prefers_the_members_own_times() {
        let m = |s| Duration::from_secs(s);
        let e = Expectation::new(
            vec![
                ("a".into(), m(10)),
                ("b".into(), m(30)),
                ("b".into(), m(50)),
                ("c".into(), m(20)),
            ],
            Some(m(99)),
        );
        assert_eq!(e.of("b"), Some((m(40), Basis::Own(2))));
        assert_eq!(e.of("z"), Some((m(25), Basis::Pool(4))));
        assert_eq!(
            Expectation::new(vec![], Some(m(99))).of("z"),
            Some((m(99), Basis::Runbook))
        );
        assert_eq!(Expectation::new(vec![], None).of("z"), None);
    }
}
