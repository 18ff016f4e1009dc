//! Durations on the command line and in the pool file: `500ms`, `2s`, `1.5s`, `3m`, `1h`.

use std::time::Duration;

/// Parses `500ms`, `2s`, `1.5s`, `3m` or `1h` (a bare number means seconds).
pub fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration (try 500ms, 2s, 3m)"))?;
    let seconds = match unit.trim() {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        other => {
            return Err(format!(
                "unknown unit `{other}` in `{text}` (use ms, s, m or h)"
            ))
        }
    };
    if !seconds.is_finite() || !(0.0..=86_400.0 * 7.0).contains(&seconds) {
        return Err(format!("duration `{text}` is out of range"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// Formats a duration the way [`parse`] reads it back, in whole milliseconds.
pub fn format(duration: Duration) -> String {
    let ms = duration.as_millis();
    if ms / 1000 * 1000 == ms {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse("3m"), Ok(Duration::from_secs(180)));
        assert_eq!(parse("4"), Ok(Duration::from_secs(4)));
        assert!(parse("soon").is_err());
        assert!(parse("3 parsecs").is_err());
    }

    #[test]
    fn formats_round_trip() {
        for text in ["500ms", "2s", "1500ms"] {
            let parsed = parse(text).unwrap_or_default();
            assert_eq!(format(parsed), text);
        }
    }
}
