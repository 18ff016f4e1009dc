//! Maintenance kinds, one file each with its settings and its descriptor: `alertmanager`
//! (a Prometheus Alertmanager silence while the member is out) and `webhook` (a request
//! when maintenance begins and another when it ends); and the `[pool.gate]` that keeps the
//! next member waiting while matching alerts fire (`alertmanager::AlertmanagerGate`).
//! They are registered in [`crate::registry`].

pub mod alertmanager;
pub mod webhook;

pub use alertmanager::Alertmanager;

use ebb_config::Context;
use ebb_engine::placeholder;
use ebb_engine::plan::Member;
use std::time::{Duration, SystemTime};

/// Bound on each request to a monitoring system.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// Checks each template (with its key) against every member.
fn check_templates(cx: &mut Context, templates: &[(String, String)], members: &[Member]) {
    for (key, template) in templates {
        for m in members {
            if let Err(e) = placeholder::validate(template, m, &[]) {
                cx.err(key, e);
                break;
            }
        }
    }
}

/// `SystemTime` as RFC 3339 in UTC (`2026-11-25T12:00:00.000Z`).
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, dd) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{dd:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// Days since 1970-01-01 → (year, month, day) (Howard Hinnant's algorithm).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// (year, month, day) → days since 1970-01-01.
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip() {
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_000_000_123);
        assert_eq!(rfc3339(t), "2026-11-18T11:06:40.123Z");
        for days in [-1000, 0, 59, 60, 365, 11_000, 20_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }
}
