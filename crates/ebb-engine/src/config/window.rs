//! `[[pool.window]]`: days, start, length and time zone of a maintenance window.

use super::keys;
use crate::window::{weekday, Window, MAX_LENGTH};
use ebb_config::{display_value, type_name, Context, Section};
use jiff::civil::Time;
use jiff::tz::TimeZone;

/// One `[[pool.window]]` at `p` (`pool.window[0]`).
pub(super) fn window(cx: &mut Context, t: &toml::Table, p: &str) -> Option<Window> {
    let mut s = Section::new(t, p, keys::WINDOW);
    let days = days(cx, &mut s);
    let start = start(cx, &mut s);
    let length = s.opt_duration(cx, "length");
    if !s.has("length") {
        s.missing(
            cx,
            "missing key \"length\": how long the window stays open, e.g. length = \"4h\"",
        );
    }
    if let Some(l) = length.filter(|l| *l > MAX_LENGTH) {
        s.error(
            cx,
            "length",
            format!(
                "{} is longer than a week: a window that long is always open; give at most \"7d\", or no window",
                ebb_config::format_duration(l)
            ),
        );
    }
    let zone = zone(cx, &mut s);
    s.finish(cx);
    let (time_zone, zone_name) = zone?;
    Some(Window {
        days: days?,
        start: start?,
        length: length.filter(|l| *l <= MAX_LENGTH)?,
        time_zone,
        zone_name,
    })
}

/// `days = "daily"` or `days = ["sat", "sun"]`.
fn days(cx: &mut Context, s: &mut Section<'_>) -> Option<[bool; 7]> {
    const EXPECTED: &str = "expected \"daily\" or a list of days such as [\"sat\", \"sun\"] (mon, tue, wed, thu, fri, sat, sun)";
    let mut on = [false; 7];
    match s.get("days") {
        None => {
            s.missing(
                cx,
                "missing key \"days\": the days the window opens on, e.g. days = [\"sat\", \"sun\"] or days = \"daily\"",
            );
            None
        }
        Some(toml::Value::String(d)) if d == "daily" => Some([true; 7]),
        Some(toml::Value::Array(list)) if !list.is_empty() => {
            for v in list {
                match v.as_str().and_then(weekday) {
                    Some(day) => on[day.to_monday_zero_offset() as usize] = true,
                    None => {
                        s.error(
                            cx,
                            "days",
                            format!("{EXPECTED}, found {} in it", display_value(v)),
                        );
                        return None;
                    }
                }
            }
            Some(on)
        }
        Some(toml::Value::Array(_)) => {
            s.error(cx, "days", format!("{EXPECTED}, found an empty list"));
            None
        }
        Some(other @ toml::Value::String(_)) => {
            s.error(
                cx,
                "days",
                format!("{EXPECTED}, found {}", display_value(other)),
            );
            None
        }
        Some(other) => {
            s.error(
                cx,
                "days",
                format!("{EXPECTED}, found {}", type_name(other)),
            );
            None
        }
    }
}

/// `start = "22:00"`.
fn start(cx: &mut Context, s: &mut Section<'_>) -> Option<Time> {
    let text = s.req_str(
        cx,
        "start",
        "the local time the window opens at, e.g. start = \"22:00\"",
    )?;
    let parsed = text.split_once(':').and_then(|(h, m)| {
        let digits =
            |x: &str| !x.is_empty() && x.len() <= 2 && x.bytes().all(|b| b.is_ascii_digit());
        if !digits(h) || m.len() != 2 || !digits(m) {
            return None;
        }
        Time::new(h.parse().ok()?, m.parse().ok()?, 0, 0).ok()
    });
    if parsed.is_none() {
        s.error(
            cx,
            "start",
            format!("expected a time of day \"HH:MM\" from \"00:00\" to \"23:59\", e.g. \"22:00\", found \"{text}\""),
        );
    }
    parsed
}

/// `time_zone = "Europe/Berlin"`, or the machine's zone.
fn zone(cx: &mut Context, s: &mut Section<'_>) -> Option<(TimeZone, String)> {
    match s.str(cx, "time_zone") {
        Some(name) => match TimeZone::get(&name) {
            Ok(tz) => Some((tz, name)),
            Err(_) => {
                s.error(
                    cx,
                    "time_zone",
                    format!("\"{name}\" is not a time zone ebb knows: expected an IANA name such as \"Europe/Berlin\", \"America/New_York\" or \"UTC\""),
                );
                None
            }
        },
        None if s.has("time_zone") => None,
        None => match TimeZone::try_system() {
            Ok(tz) => {
                let name = tz.iana_name().unwrap_or("the machine's zone").to_string();
                Some((tz, name))
            }
            Err(e) => {
                s.missing(
                    cx,
                    format!("the machine's time zone cannot be found ({e}); set time_zone = \"...\" (an IANA name such as \"Europe/Berlin\")"),
                );
                None
            }
        },
    }
}
