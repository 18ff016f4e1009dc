//! The `logs` check: entries written since the member's update began, at or above a
//! level, that match `fail_on` (every entry when it is empty) and not `ignore`, fail it;
//! each `expect` pattern must match some entry. Sources: the systemd journal
//! (`journalctl --since @EPOCH -p LEVEL`), the Windows event log
//! (`Get-WinEvent -FilterHashtable`) and a text file whose lines start with a timestamp.

use async_trait::async_trait;
use ebb_config::{Context, Key, Kind};
use ebb_engine::config::valid_regex;
use ebb_engine::interfaces::{Check, CheckContext, Transport};
use ebb_engine::placeholder::{ps_quote, render, sh_quote, Quote};
use ebb_engine::plan::{Member, Shell};
use regex::Regex;
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A `logs` check: which entries count, from where.
#[derive(Debug, Clone)]
pub struct LogsSpec {
    /// Where the entries come from.
    pub source: LogSource,
    /// Lowest level that counts (journal: syslog names; event log: `critical`, `error`,
    /// `warning`, `information`).
    pub level: Option<String>,
    /// Entries that fail the check (regular expressions; empty: every entry that counts).
    pub fail_on: Vec<String>,
    /// Entries that never fail it (regular expressions).
    pub ignore: Vec<String>,
    /// Each must match some entry since the update began (e.g. "completed successfully").
    pub expect: Vec<String>,
    /// Without an update start (pool checks before the run), how far back to look.
    pub lookback: Duration,
}

/// Where a `logs` check reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogSource {
    /// `journalctl` on the member, optionally one unit.
    Journal {
        /// `-u UNIT`.
        unit: Option<String>,
    },
    /// A text file on the member whose lines start with a timestamp.
    File {
        /// Path template.
        path: String,
    },
    /// A Windows event log (`Get-WinEvent`).
    EventLog {
        /// `System`, `Application`, `Setup`, ...
        log: String,
    },
}

/// Syslog levels `journalctl -p` knows, most severe first.
pub const JOURNAL_LEVELS: &[&str] = &[
    "emerg", "alert", "crit", "err", "warning", "notice", "info", "debug",
];
/// Windows event levels, most severe first (`Level` 1..=4).
pub const EVENT_LEVELS: &[&str] = &["critical", "error", "warning", "information"];

/// Lines read from the end of a log file.
pub const FILE_TAIL_LINES: usize = 20_000;

/// The level used when none is given.
pub const DEFAULT_LEVEL: &str = "warning";

/// The command that prints the entries since `since` (seconds since the epoch).
pub fn command(spec: &LogsSpec, member: &Member, since: i64) -> String {
    match &spec.source {
        LogSource::Journal { unit } => {
            let level = spec.level.as_deref().unwrap_or(DEFAULT_LEVEL);
            let mut c = format!(
                "journalctl --no-pager --quiet --output=short-iso --since=@{since} --priority={level}"
            );
            if let Some(u) = unit {
                c.push_str(&format!(" --unit={}", sh_quote(u)));
            }
            c
        }
        LogSource::EventLog { log } => {
            let level = spec.level.as_deref().unwrap_or(DEFAULT_LEVEL);
            let levels = event_levels(level);
            format!(
                "Get-WinEvent -FilterHashtable @{{LogName={}; StartTime=[DateTimeOffset]::FromUnixTimeSeconds({since}).LocalDateTime; Level={}}} -ErrorAction SilentlyContinue | ForEach-Object {{ '{{0:o}}|{{1}}|{{2}}|{{3}}|{{4}}' -f $_.TimeCreated.ToUniversalTime(), $_.LevelDisplayName, $_.ProviderName, $_.Id, ($_.Message -replace '\\s+', ' ') }}",
                ps_quote(log),
                levels
            )
        }
        LogSource::File { path } => {
            let path = render(path, member, Quote::None, &BTreeMap::new());
            match member.shell {
                Shell::Sh => format!("tail -n {FILE_TAIL_LINES} -- {}", sh_quote(&path)),
                Shell::PowerShell => format!(
                    "Get-Content -LiteralPath {} -Tail {FILE_TAIL_LINES}",
                    ps_quote(&path)
                ),
            }
        }
    }
}

/// Windows event levels at or above `level`: critical 1, error 2, warning 3, information
/// 4 (and 0, "LogAlways", shown as information).
pub fn event_levels(level: &str) -> String {
    let upto = EVENT_LEVELS.iter().position(|l| *l == level).unwrap_or(2);
    let mut v: Vec<String> = (1..=upto + 1).map(|n| n.to_string()).collect();
    if upto == 3 {
        v.insert(0, "0".into());
    }
    v.join(",")
}

/// The entries of a journal or event log output (one per line; journalctl's `-- ...`
/// notes dropped).
pub fn parse_entries(out: &[String]) -> Vec<String> {
    out.iter()
        .map(|l| l.trim_end().to_string())
        .filter(|l| !l.is_empty() && !l.starts_with("-- "))
        .collect()
}

/// The lines of a log file written at or after `since` (seconds since the epoch): lines
/// start with a timestamp; a line without one (a continuation) belongs to the entry
/// above it. `Err` when no line has a timestamp ebb can read.
pub fn file_entries_since(lines: &[String], since: i64) -> Result<Vec<String>, String> {
    let mut current: Option<i64> = None;
    let mut any = false;
    let mut out = Vec::new();
    for l in lines {
        if let Some(t) = line_time(l) {
            current = Some(t);
            any = true;
        }
        if current.is_some_and(|t| t >= since) {
            out.push(l.clone());
        }
    }
    if !any && !lines.is_empty() {
        return Err("no line starts with a timestamp ebb can read (2026-11-25T12:00:00Z, 2026-11-25 12:00:00, [11/25/2026 12:00:00]), so it cannot tell which lines are new".into());
    }
    Ok(out)
}

/// Seconds since the epoch of the timestamp a log line starts with: ISO 8601
/// (`2026-11-25T12:00:00.123+01:00`, `2026-11-25 12:00:00,123`; without an offset, UTC),
/// or Exchange setup's `[11/25/2026 12:00:00.0123]`, optionally after a `[`.
pub fn line_time(line: &str) -> Option<i64> {
    let s = line.trim_start().trim_start_matches('[');
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        if t.bytes().all(|c| c.is_ascii_digit()) {
            t.parse().ok()
        } else {
            None
        }
    };
    let (y, mo, d, rest) = if b.len() >= 10 && b[4] == b'-' && b[7] == b'-' {
        (num(0..4)?, num(5..7)?, num(8..10)?, 10)
    } else if b.len() >= 10 && b[2] == b'/' && b[5] == b'/' {
        (num(6..10)?, num(0..2)?, num(3..5)?, 10)
    } else {
        return None;
    };
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) {
        return None;
    }
    let sep = *b.get(rest)?;
    if sep != b'T' && sep != b' ' {
        return None;
    }
    let t = rest + 1;
    if b.len() < t + 8 || b[t + 2] != b':' || b[t + 5] != b':' {
        return None;
    }
    let (h, mi, se) = (num(t..t + 2)?, num(t + 3..t + 5)?, num(t + 6..t + 8)?);
    let mut i = t + 8;
    if matches!(b.get(i), Some(b'.') | Some(b',')) {
        i += 1;
        while b.get(i).is_some_and(|c| c.is_ascii_digit()) {
            i += 1;
        }
    }
    let offset = match b.get(i) {
        Some(b'Z') => 0,
        Some(c @ (b'+' | b'-')) => {
            let sign = if *c == b'-' { -1 } else { 1 };
            let hh = num(i + 1..i + 3)?;
            let mm = if b.get(i + 3) == Some(&b':') {
                num(i + 4..i + 6)?
            } else {
                num(i + 3..i + 5).unwrap_or(0)
            };
            sign * (hh * 3600 + mm * 60)
        }
        _ => 0,
    };
    let days = crate::maintenance::days_from_civil(y, mo as u32, d as u32);
    Some(days * 86_400 + h * 3600 + mi * 60 + se - offset)
}

/// What the entries since the update say: the failure (offending lines, missing
/// expectations) or a summary.
pub fn judge(spec: &LogsSpec, entries: &[String], since_text: &str) -> Result<String, String> {
    let compile = |v: &[String]| -> Result<Vec<Regex>, String> {
        v.iter()
            .map(|r| Regex::new(r).map_err(|e| format!("/{r}/: {e}")))
            .collect()
    };
    let fail_on = compile(&spec.fail_on)?;
    let ignore = compile(&spec.ignore)?;
    let expect = compile(&spec.expect)?;
    let offending: Vec<&String> = entries
        .iter()
        .filter(|l| !ignore.iter().any(|r| r.is_match(l)))
        .filter(|l| {
            if fail_on.is_empty() {
                // Without fail_on, every entry at or above the level counts (a file
                // requires fail_on or expect).
                !matches!(spec.source, LogSource::File { .. })
            } else {
                fail_on.iter().any(|r| r.is_match(l))
            }
        })
        .collect();
    let missing: Vec<String> = expect
        .iter()
        .filter(|r| !entries.iter().any(|l| r.is_match(l)))
        .map(|r| format!("/{}/", r.as_str()))
        .collect();
    let mut problems = Vec::new();
    if !offending.is_empty() {
        let shown: Vec<String> = offending
            .iter()
            .take(5)
            .map(|l| super::cut(l, 300))
            .collect();
        problems.push(format!(
            "{} offending entr{} since {since_text}: {}{}",
            offending.len(),
            if offending.len() == 1 { "y" } else { "ies" },
            shown.join(" | "),
            if offending.len() > 5 { " | …" } else { "" }
        ));
    }
    if !missing.is_empty() {
        problems.push(format!(
            "no entry since {since_text} matches {}",
            missing.join(", ")
        ));
    }
    if problems.is_empty() {
        Ok(format!(
            "{} entr{} since {since_text}, none offending",
            entries.len(),
            if entries.len() == 1 { "y" } else { "ies" }
        ))
    } else {
        Err(problems.join("; "))
    }
}

/// Runs the check on `member`: since the member's update began, or `lookback` ago.
pub async fn check(
    member: &Member,
    transport: &dyn Transport,
    spec: &LogsSpec,
    ctx: &CheckContext,
    timeout: Duration,
) -> Result<String, String> {
    let since_t = ctx
        .update_began
        .unwrap_or_else(|| SystemTime::now() - spec.lookback);
    let since = since_t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let since_text = crate::maintenance::rfc3339(UNIX_EPOCH + Duration::from_secs(since as u64));
    let cmd = command(spec, member, since);
    let (out, lines) = super::run_collect(transport, &cmd, timeout).await?;
    if out.timed_out {
        return Err(format!("`{cmd}` did not finish"));
    }
    if out.exit_code != Some(0) {
        return Err(format!(
            "`{cmd}` failed ({}): {}",
            out.ended(),
            super::last_line(&lines.join("\n"))
        ));
    }
    let entries = match &spec.source {
        LogSource::File { path } => {
            file_entries_since(&lines, since).map_err(|e| format!("{path}: {e}"))?
        }
        _ => parse_entries(&lines),
    };
    judge(spec, &entries, &since_text)
}

/// `logs = { source = "..." }`.
pub const KIND: super::Descriptor<LogsSpec> = super::Descriptor {
    name: "logs",
    value: Kind::Table,
    description: "log entries since the member's update began",
    example: "logs = { source = \"...\" }",
    keys: KEYS,
    read,
};

const KEYS: &[Key] = &[
    Key::required(
        "source",
        Kind::OneOf(&["journal", "file", "eventlog"]),
        "where the entries come from",
    ),
    Key::new("unit", Kind::String, "journal: only this unit"),
    Key::new("path", Kind::String, "file: the log file on the member"),
    Key::new(
        "log",
        Kind::String,
        "eventlog: the log (default \"System\")",
    ),
    Key::new("level", Kind::String, "lowest level that counts"),
    Key::new(
        "fail_on",
        Kind::Strings,
        "entries that fail the check (regular expressions)",
    ),
    Key::new(
        "ignore",
        Kind::Strings,
        "entries that never fail it (regular expressions)",
    ),
    Key::new(
        "expect",
        Kind::Strings,
        "each must match some entry (regular expressions)",
    ),
    Key::new(
        "lookback",
        Kind::Duration,
        "without an update start, how far back to look (default \"1h\")",
    ),
];

fn read(cx: &mut Context, key: &str, value: &toml::Value) -> Option<LogsSpec> {
    let key = key.to_string();
    let mut lt = super::table(cx, &key, value, KEYS)?;
    let source = lt.req_str(
        cx,
        "source",
        "where to read: \"journal\", \"file\" or \"eventlog\"",
    );
    let unit = lt.str(cx, "unit");
    let path = lt.str(cx, "path");
    let log = lt.str(cx, "log");
    let level = lt.str(cx, "level");
    let fail_on = lt.strings(cx, "fail_on").unwrap_or_default();
    let ignore = lt.strings(cx, "ignore").unwrap_or_default();
    let expect = lt.strings(cx, "expect").unwrap_or_default();
    let lookback = lt.duration(cx, "lookback", Duration::from_secs(3600));
    lt.finish(cx);
    for (k, list) in [
        ("fail_on", &fail_on),
        ("ignore", &ignore),
        ("expect", &expect),
    ] {
        for r in list {
            valid_regex(cx, &format!("{key}.{k}"), r);
        }
    }
    let misplaced = |cx: &mut Context, k: &str, v: bool, src: &str| {
        if v {
            cx.err(
                &format!("{key}.{k}"),
                format!("not used with source = \"{src}\""),
            );
        }
    };
    let source = match source.as_deref()? {
        "journal" => {
            misplaced(cx, "path", path.is_some(), "journal");
            misplaced(cx, "log", log.is_some(), "journal");
            if let Some(l) = &level {
                if !JOURNAL_LEVELS.contains(&l.as_str()) {
                    cx.err(
                        &format!("{key}.level"),
                        format!(
                            "expected one of {}, found \"{l}\"",
                            JOURNAL_LEVELS.join(", ")
                        ),
                    );
                }
            }
            LogSource::Journal { unit }
        }
        "file" => {
            misplaced(cx, "unit", unit.is_some(), "file");
            misplaced(cx, "log", log.is_some(), "file");
            misplaced(cx, "level", level.is_some(), "file");
            if fail_on.is_empty() && expect.is_empty() {
                cx.err(
                    &key,
                    "a file has no levels: give fail_on = [\"ERROR\", ...] and/or expect = [...]",
                );
            }
            match path {
                Some(path) => LogSource::File { path },
                None => {
                    cx.err(&key, "missing key \"path\": the log file on the member");
                    return None;
                }
            }
        }
        "eventlog" => {
            misplaced(cx, "unit", unit.is_some(), "eventlog");
            misplaced(cx, "path", path.is_some(), "eventlog");
            if let Some(l) = &level {
                if !EVENT_LEVELS.contains(&l.as_str()) {
                    cx.err(
                        &format!("{key}.level"),
                        format!("expected one of {}, found \"{l}\"", EVENT_LEVELS.join(", ")),
                    );
                }
            }
            LogSource::EventLog {
                log: log.unwrap_or_else(|| "System".into()),
            }
        }
        other => {
            cx.err(
                &format!("{key}.source"),
                format!("expected one of \"journal\", \"file\", \"eventlog\", found \"{other}\""),
            );
            return None;
        }
    };
    Some(LogsSpec {
        source,
        level,
        fail_on,
        ignore,
        expect,
        lookback,
    })
}

#[async_trait]
impl Check for LogsSpec {
    async fn run(
        &self,
        member: &Member,
        transport: &dyn Transport,
        ctx: &CheckContext,
        timeout: Duration,
    ) -> Result<String, String> {
        check(member, transport, self, ctx, timeout).await
    }
    fn templates(&self) -> Vec<(String, String)> {
        match &self.source {
            LogSource::File { path } => vec![("logs.path".into(), path.clone())],
            _ => vec![],
        }
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}
