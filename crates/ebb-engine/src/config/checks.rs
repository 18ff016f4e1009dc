//! Verification checks (`[[runbook.verify]]`, `[[pool.check]]`): command, http, tcp,
//! services, logs, version.

use super::keys;
use crate::plan::*;
use ebb_config::{Context as Cx, Section};
use std::time::Duration;

pub(super) fn check(cx: &mut Cx, t: &toml::Table, p: &str) -> Option<CheckSpec> {
    let mut c = Section::new(t, p, keys::CHECK);
    let name = c.req_str(cx, "name", "the check's name");
    let retries = c.uint(cx, "retries", 0).min(u32::MAX as u64) as u32;
    let interval = c.duration(cx, "interval", Duration::from_secs(2));
    let timeout = c.duration(cx, "timeout", Duration::from_secs(30));
    let command = c.str(cx, "command");
    let tcp = c.str(cx, "tcp");
    let http = c.sub(cx, "http");
    let services = c.sub(cx, "services");
    let logs = c.sub(cx, "logs");
    let version = c.sub(cx, "version");
    let kinds = usize::from(command.is_some())
        + usize::from(tcp.is_some())
        + usize::from(http.is_some())
        + usize::from(services.is_some())
        + usize::from(logs.is_some())
        + usize::from(version.is_some());
    let kind = if kinds != 1 {
        cx.err(p, "a check needs exactly one of: command = \"...\", http = { url = \"...\" }, tcp = \"host:port\", services = { running = [...] }, logs = { source = \"...\" }, version = { command = \"...\", equals = \"...\" }");
        None
    } else if let Some(command) = command {
        Some(CheckKind::Command { command })
    } else if let Some(address) = tcp {
        Some(CheckKind::Tcp { address })
    } else if let Some(h) = http {
        http_check(cx, h, p)
    } else if let Some(t) = services {
        let mut st = Section::new(t, format!("{p}.services"), keys::SERVICES_CHECK);
        let running = st.strings(cx, "running").unwrap_or_default();
        let stopped = st.strings(cx, "stopped").unwrap_or_default();
        st.finish(cx);
        if running.is_empty() && stopped.is_empty() {
            cx.err(
                &format!("{p}.services"),
                "name at least one service in running = [...] or stopped = [...]",
            );
        }
        for n in running.iter().chain(&stopped) {
            if n.trim().is_empty() || n.contains(['\'', '"', '\n']) {
                cx.err(
                    &format!("{p}.services"),
                    format!("\"{n}\" is not a service name (letters, digits, -_.@ and *)"),
                );
            }
        }
        Some(CheckKind::Services { running, stopped })
    } else if let Some(t) = logs {
        logs_check(cx, t, p).map(CheckKind::Logs)
    } else if let Some(t) = version {
        let mut vt = Section::new(t, format!("{p}.version"), keys::VERSION_CHECK);
        let command = vt.req_str(
            cx,
            "command",
            "the command printing the version, e.g. command = \"myapp --version\"",
        );
        let equals = vt.str(cx, "equals");
        let at_least = vt.str(cx, "at_least");
        vt.finish(cx);
        if equals.is_some() == at_least.is_some() {
            cx.err(
                &format!("{p}.version"),
                "give exactly one of equals = \"1.2.3\" or at_least = \"1.2\"",
            );
        }
        command.map(|command| CheckKind::Version {
            command,
            equals,
            at_least,
        })
    } else {
        None
    };
    c.finish(cx);
    Some(CheckSpec {
        name: name?,
        kind: kind?,
        retries,
        interval,
        timeout,
    })
}

pub(super) fn http_check(cx: &mut Cx, h: &toml::Table, p: &str) -> Option<CheckKind> {
    let mut ht = Section::new(h, format!("{p}.http"), keys::HTTP_CHECK);
    let url = ht.req_str(
        cx,
        "url",
        "the URL to GET, e.g. url = \"http://{address}/health\"",
    );
    let status = ht.uint(cx, "expect_status", 200);
    if !(100..=599).contains(&status) {
        cx.err(
            &format!("{p}.http.expect_status"),
            format!("expected an HTTP status from 100 to 599, found {status}"),
        );
    }
    let expect_body = ht.str(cx, "expect_body");
    let expect_body_regex = ht.str(cx, "expect_body_regex");
    if let Some(r) = &expect_body_regex {
        valid_regex(cx, &format!("{p}.http.expect_body_regex"), r);
    }
    let insecure_tls = ht.bool(cx, "insecure_tls", false);
    // Relative to the pool file, like every other path in it.
    let ca_file = ht
        .str(cx, "ca_file")
        .map(|f| super::relative_to_pool(cx, &f));
    ht.finish(cx);
    if let Some(u) = &url {
        if !u.starts_with("http://") && !u.starts_with("https://") {
            cx.err(
                &format!("{p}.http.url"),
                format!("expected an http:// or https:// URL, found \"{u}\""),
            );
        } else if u.starts_with("http://") && (insecure_tls || ca_file.is_some()) {
            cx.err(
                &format!("{p}.http"),
                "insecure_tls and ca_file apply to https:// URLs only",
            );
        }
    }
    url.map(|url| CheckKind::Http {
        url,
        expect_status: status as u16,
        expect_body,
        expect_body_regex,
        insecure_tls,
        ca_file,
    })
}

/// Syslog levels `journalctl -p` knows, most severe first.
pub const JOURNAL_LEVELS: &[&str] = &[
    "emerg", "alert", "crit", "err", "warning", "notice", "info", "debug",
];
/// Windows event levels, most severe first (`Level` 1..=4).
pub const EVENT_LEVELS: &[&str] = &["critical", "error", "warning", "information"];

pub(super) fn logs_check(cx: &mut Cx, t: &toml::Table, p: &str) -> Option<LogsSpec> {
    let key = format!("{p}.logs");
    let mut lt = Section::new(t, key.clone(), keys::LOGS_CHECK);
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
    let misplaced = |cx: &mut Cx, k: &str, v: bool, src: &str| {
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

/// The templates in a check, by key, for placeholder validation.
pub(super) fn check_templates(kind: &CheckKind) -> Vec<(&'static str, String)> {
    match kind {
        CheckKind::Command { command } => vec![("command", command.clone())],
        CheckKind::Http { url, .. } => vec![("http.url", url.clone())],
        CheckKind::Tcp { address } => vec![("tcp", address.clone())],
        CheckKind::Services { .. } => vec![],
        CheckKind::Logs(l) => match &l.source {
            LogSource::File { path } => vec![("logs.path", path.clone())],
            _ => vec![],
        },
        CheckKind::Version {
            command,
            equals,
            at_least,
        } => {
            let mut v = vec![("version.command", command.clone())];
            if let Some(e) = equals {
                v.push(("version.equals", e.clone()));
            }
            if let Some(a) = at_least {
                v.push(("version.at_least", a.clone()));
            }
            v
        }
    }
}

/// A regular expression the `regex` crate accepts; the error shows its own last line.
pub(super) fn valid_regex(cx: &mut Cx, key: &str, r: &str) {
    if let Err(e) = regex::Regex::new(r) {
        let first = e.to_string();
        let last = first.lines().last().unwrap_or("").trim().to_string();
        cx.err(
            key,
            format!("\"{r}\" is not a valid regular expression: {last}"),
        );
    }
}
