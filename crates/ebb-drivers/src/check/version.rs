//! The `version` check: a command prints the member's version; it must equal, or be at
//! least, an expected one. The same reading feeds the pool-wide version table of
//! `ebb check` and of the end of a run.

use async_trait::async_trait;
use ebb_config::{Context, Key, Kind};
use ebb_engine::interfaces::{Check, CheckContext, Transport};
use ebb_engine::placeholder::{render, Quote};
use ebb_engine::plan::{Member, Plan};
use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::time::Duration;

/// What a member's version check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionReading {
    /// The version read.
    pub version: String,
    /// What was expected (`= 1.1`, `>= 1.0`).
    pub expected: String,
    /// Whether it meets the expectation.
    pub ok: bool,
}

impl VersionReading {
    /// The check's outcome.
    pub fn summary(&self) -> Result<String, String> {
        if self.ok {
            Ok(format!("version {} ({})", self.version, self.expected))
        } else {
            Err(format!(
                "version {} does not meet {}",
                self.version, self.expected
            ))
        }
    }
}

/// The version in a command's output: in its last non-empty line, the first word that
/// starts with a digit (`nginx version: nginx/1.22.1` → `1.22.1`), else the whole line.
pub fn extract(output: &str) -> String {
    let line = output
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    for word in line.split(|c: char| c.is_whitespace() || c == '/' || c == '=' || c == ':') {
        let w = word.trim_start_matches(['v', 'V']);
        if w.starts_with(|c: char| c.is_ascii_digit()) {
            return w.trim_end_matches([',', ';', ')']).to_string();
        }
    }
    line.to_string()
}

/// Compares versions part by part (`1.10` > `1.9`; numbers as numbers, other parts as
/// text; a missing part counts as 0).
pub fn compare(a: &str, b: &str) -> Ordering {
    let parts = |s: &str| -> Vec<String> {
        s.split(|c: char| !c.is_ascii_alphanumeric())
            .filter(|p| !p.is_empty())
            .map(String::from)
            .collect()
    };
    let (pa, pb) = (parts(a), parts(b));
    for i in 0..pa.len().max(pb.len()) {
        let x = pa.get(i).map(String::as_str).unwrap_or("0");
        let y = pb.get(i).map(String::as_str).unwrap_or("0");
        let o = match (x.parse::<u64>(), y.parse::<u64>()) {
            (Ok(m), Ok(n)) => m.cmp(&n),
            _ => x.cmp(y),
        };
        if o != Ordering::Equal {
            return o;
        }
    }
    Ordering::Equal
}

/// Runs the version command on `member` and judges the result.
pub async fn check(
    member: &Member,
    transport: &dyn Transport,
    command: &str,
    equals: Option<&str>,
    at_least: Option<&str>,
    timeout: Duration,
) -> Result<VersionReading, String> {
    let none = BTreeMap::new();
    let cmd = render(command, member, Quote::from(member.shell), &none);
    let (out, lines) = super::run_collect(transport, &cmd, timeout).await?;
    if out.exit_code != Some(0) {
        return Err(format!(
            "`{cmd}` failed ({}): {}",
            out.ended(),
            super::last_line(&lines.join("\n"))
        ));
    }
    let version = extract(&lines.join("\n"));
    let (expected, ok) = match (equals, at_least) {
        (Some(e), _) => {
            let e = render(e, member, Quote::None, &none);
            let ok = version == e || compare(&version, &e) == Ordering::Equal;
            (format!("= {e}"), ok)
        }
        (None, Some(a)) => {
            let a = render(a, member, Quote::None, &none);
            let ok = compare(&version, &a) != Ordering::Less;
            (format!(">= {a}"), ok)
        }
        (None, None) => ("any".to_string(), true),
    };
    Ok(VersionReading {
        version,
        expected,
        ok,
    })
}

/// One row of the pool-wide version table.
#[derive(Debug, Clone)]
pub struct VersionRow {
    /// Member name.
    pub member: String,
    /// Check name.
    pub check: String,
    /// The reading, or why there is none.
    pub reading: Result<VersionReading, String>,
}

/// Reads every `version` check (from `[[runbook.verify]]` and `[[pool.check]]`) on every
/// member, members in parallel.
pub async fn table(plan: &Plan, transports: &[std::sync::Arc<dyn Transport>]) -> Vec<VersionRow> {
    let checks: Vec<_> = plan
        .runbook
        .verify
        .iter()
        .chain(&plan.pool.checks)
        .filter_map(|c| Some((c, c.check.as_any().downcast_ref::<VersionCheck>()?)))
        .collect();
    let mut rows = Vec::new();
    for (c, v) in checks {
        let VersionCheck {
            command,
            equals,
            at_least,
        } = v;
        let futs = plan
            .members
            .iter()
            .zip(transports)
            .map(|(m, t)| async move {
                let r = tokio::time::timeout(
                    c.timeout,
                    check(
                        m,
                        t.as_ref(),
                        command,
                        equals.as_deref(),
                        at_least.as_deref(),
                        c.timeout,
                    ),
                )
                .await
                .unwrap_or_else(|_| Err("timed out".into()));
                VersionRow {
                    member: m.name.clone(),
                    check: c.name.clone(),
                    reading: r,
                }
            });
        for row in join_all(futs.collect()).await {
            if !rows
                .iter()
                .any(|r: &VersionRow| r.member == row.member && r.check == row.check)
            {
                rows.push(row);
            }
        }
    }
    rows
}

async fn join_all<F: std::future::Future>(futs: Vec<F>) -> Vec<F::Output> {
    let mut pinned: Vec<std::pin::Pin<Box<F>>> = futs.into_iter().map(Box::pin).collect();
    let mut out = Vec::with_capacity(pinned.len());
    // Sequential polling would serialise the members; poll them together instead.
    let mut results: Vec<Option<F::Output>> = (0..pinned.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in pinned.iter_mut().enumerate() {
            if results[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => results[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    for r in results.into_iter().flatten() {
        out.push(r);
    }
    out
}

/// The table as text lines (members behind are named).
pub fn render_table(rows: &[VersionRow]) -> Vec<String> {
    let mut out = Vec::new();
    for r in rows {
        out.push(match &r.reading {
            Ok(v) if v.ok => format!(
                "  {:<16} {:<12} {:<16} ok ({})",
                r.member, r.check, v.version, v.expected
            ),
            Ok(v) => format!(
                "  {:<16} {:<12} {:<16} BEHIND (expected {})",
                r.member, r.check, v.version, v.expected
            ),
            Err(e) => format!(
                "  {:<16} {:<12} {:<16} UNKNOWN: {e}",
                r.member, r.check, "?"
            ),
        });
    }
    out
}

/// A row as `--json` shows it: `{check, expected, member, ok, version}`, or `{check,
/// error, member, ok}` (`ok` false) when the version could not be read.
impl serde::Serialize for VersionRow {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut o = s.serialize_struct("VersionRow", 5)?;
        o.serialize_field("check", &self.check)?;
        match &self.reading {
            Ok(v) => {
                o.serialize_field("expected", &v.expected)?;
                o.serialize_field("member", &self.member)?;
                o.serialize_field("ok", &v.ok)?;
                o.serialize_field("version", &v.version)?;
            }
            Err(e) => {
                o.serialize_field("error", e)?;
                o.serialize_field("member", &self.member)?;
                o.serialize_field("ok", &false)?;
            }
        }
        o.end()
    }
}

/// The members whose version is behind (or unknown), for a one-line summary.
pub fn behind(rows: &[VersionRow]) -> Vec<String> {
    let mut out: Vec<String> = rows
        .iter()
        .filter(|r| !r.reading.as_ref().is_ok_and(|v| v.ok))
        .map(|r| r.member.clone())
        .collect();
    out.dedup();
    out
}

/// A command printing the member's version, compared with an expected one.
#[derive(Debug, Clone)]
pub struct VersionCheck {
    /// Command template; the last non-empty line of its output is the version.
    pub command: String,
    /// The version must equal this (a template: `{var.version}`).
    pub equals: Option<String>,
    /// The version must be at least this (compared part by part, numbers as numbers).
    pub at_least: Option<String>,
}

/// `version = { command = "...", equals = "..." }`.
pub const KIND: super::Descriptor<VersionCheck> = super::Descriptor {
    name: "version",
    value: Kind::Table,
    description: "the version a command prints",
    example: "version = { command = \"...\", equals = \"...\" }",
    keys: KEYS,
    read,
};

const KEYS: &[Key] = &[
    Key::required("command", Kind::String, "the command printing the version"),
    Key::new("equals", Kind::String, "the version must equal this"),
    Key::new(
        "at_least",
        Kind::String,
        "the version must be at least this",
    ),
];

fn read(cx: &mut Context, key: &str, value: &toml::Value) -> Option<VersionCheck> {
    let mut vt = super::table(cx, key, value, KEYS)?;
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
            key,
            "give exactly one of equals = \"1.2.3\" or at_least = \"1.2\"",
        );
    }
    Some(VersionCheck {
        command: command?,
        equals,
        at_least,
    })
}

#[async_trait]
impl Check for VersionCheck {
    async fn run(
        &self,
        member: &Member,
        transport: &dyn Transport,
        _: &CheckContext,
        timeout: Duration,
    ) -> Result<String, String> {
        check(
            member,
            transport,
            &self.command,
            self.equals.as_deref(),
            self.at_least.as_deref(),
            timeout,
        )
        .await
        .and_then(|v| v.summary())
    }
    fn templates(&self) -> Vec<(String, String)> {
        let mut v = vec![("version.command".into(), self.command.clone())];
        if let Some(e) = &self.equals {
            v.push(("version.equals".into(), e.clone()));
        }
        if let Some(a) = &self.at_least {
            v.push(("version.at_least".into(), a.clone()));
        }
        v
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}
