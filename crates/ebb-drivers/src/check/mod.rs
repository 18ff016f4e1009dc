//! Verification checks: `command` (exit 0 on the member), `http` (status, body contains or
//! matches; `https://` with TLS), `tcp` (connect), `services` (systemd or Windows service
//! states), `logs` (entries since the update began) and `version`. One attempt each; the
//! engine does retries. The commands the member-side checks run, and the parsing of what
//! they print, live in one file per kind so they can be tested on recorded outputs.

pub mod logs;
pub mod services;
pub mod version;

use async_trait::async_trait;
use ebb_engine::interfaces::{CheckContext, Checker, Transport};
use ebb_engine::placeholder::{render, Quote};
use ebb_engine::plan::{CheckKind, CheckSpec, Member};
use std::collections::BTreeMap;

/// The checks every ebb has.
pub struct StandardChecker;

#[async_trait]
impl Checker for StandardChecker {
    async fn check_in(
        &self,
        check: &CheckSpec,
        member: &Member,
        transport: &dyn Transport,
        ctx: &CheckContext,
    ) -> Result<String, String> {
        let none = BTreeMap::new();
        match &check.kind {
            CheckKind::Command { command } => {
                let cmd = render(command, member, Quote::from(member.shell), &none);
                let out = transport
                    .run(&cmd, &BTreeMap::new(), check.timeout, None)
                    .await
                    .map_err(|e| e.to_string())?;
                match out.exit_code {
                    Some(0) => Ok("exit 0".into()),
                    Some(c) => Err(format!("`{cmd}` exited with {c}: {}", last_line(&out.tail))),
                    None => Err(format!("`{cmd}` did not finish (timed out or killed)")),
                }
            }
            CheckKind::Http {
                url,
                expect_status,
                expect_body,
                expect_body_regex,
                insecure_tls,
                ca_file,
            } => {
                let url = render(url, member, Quote::None, &none);
                let tls = crate::tls::TlsOptions {
                    insecure: *insecure_tls,
                    ca_file: ca_file.clone(),
                };
                let resp =
                    crate::http::request_tls("GET", &url, None, &[], check.timeout, &tls).await?;
                if resp.status != *expect_status {
                    return Err(format!(
                        "GET {url} answered {} (expected {expect_status}): {}",
                        resp.status,
                        last_line(&resp.body)
                    ));
                }
                if let Some(want) = expect_body {
                    if !resp.body.contains(want.as_str()) {
                        return Err(format!(
                            "GET {url}: the body does not contain \"{want}\"; it was: {}",
                            last_line(&resp.body)
                        ));
                    }
                }
                if let Some(re) = expect_body_regex {
                    let r = regex::Regex::new(re).map_err(|e| e.to_string())?;
                    if !r.is_match(&resp.body) {
                        return Err(format!(
                            "GET {url}: the body does not match /{re}/; it was: {}",
                            last_line(&resp.body)
                        ));
                    }
                }
                Ok(format!("GET {url} → {}", resp.status))
            }
            CheckKind::Tcp { address } => {
                let addr = render(address, member, Quote::None, &none);
                tokio::net::TcpStream::connect(&addr)
                    .await
                    .map(|_| format!("connected to {addr}"))
                    .map_err(|e| format!("cannot connect to {addr}: {e}"))
            }
            CheckKind::Services { running, stopped } => {
                services::check(member, transport, running, stopped, check.timeout).await
            }
            CheckKind::Logs(spec) => logs::check(member, transport, spec, ctx, check.timeout).await,
            CheckKind::Version {
                command,
                equals,
                at_least,
            } => version::check(
                member,
                transport,
                command,
                equals.as_deref(),
                at_least.as_deref(),
                check.timeout,
            )
            .await
            .map(|v| v.summary())
            .and_then(|v| v),
        }
    }
}

/// Most output lines a check keeps (the transports keep only a tail for the journal).
pub const MAX_LINES: usize = 50_000;

/// Runs `cmd` on the member and collects its whole output (stdout and stderr, as lines).
pub async fn run_collect(
    transport: &dyn Transport,
    cmd: &str,
    timeout: std::time::Duration,
) -> Result<(ebb_engine::interfaces::CommandOutcome, Vec<String>), String> {
    let lines: std::sync::Arc<std::sync::Mutex<Vec<String>>> = Default::default();
    let l2 = lines.clone();
    let sink: ebb_engine::interfaces::OutputSink = std::sync::Arc::new(move |l: &str| {
        if let Ok(mut v) = l2.lock() {
            if v.len() < MAX_LINES {
                v.push(l.to_string());
            }
        }
    });
    let out = transport
        .run(cmd, &BTreeMap::new(), timeout, Some(sink))
        .await
        .map_err(|e| e.to_string())?;
    let all = lines.lock().map(|v| v.clone()).unwrap_or_default();
    Ok((out, all))
}

/// The last line of `s`, cut to 200 characters.
pub fn last_line(s: &str) -> String {
    let t = s.trim();
    let line = t.lines().last().unwrap_or("");
    cut(line, 200)
}

/// `s` cut to `n` characters, with an ellipsis when cut.
pub fn cut(s: &str, n: usize) -> String {
    match s.char_indices().nth(n) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// Matches `name` against a pattern where `*` stands for any run of characters.
pub fn glob_match(pattern: &str, name: &str, case_insensitive: bool) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = if case_insensitive {
        (
            pattern.to_lowercase().chars().collect(),
            name.to_lowercase().chars().collect(),
        )
    } else {
        (pattern.chars().collect(), name.chars().collect())
    };
    let (mut pi, mut ni, mut star, mut mark) = (0, 0, None, 0);
    while ni < n.len() {
        if pi < p.len() && p[pi] != '*' && p[pi] == n[ni] {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            pi += 1;
            mark = ni;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("MSExchange*", "MSExchangeIS", false));
        assert!(glob_match("msexchange*", "MSExchangeIS", true));
        assert!(!glob_match("msexchange*", "MSExchangeIS", false));
        assert!(glob_match("*", "", false));
        assert!(glob_match("a*b*c", "axxbyyc", false));
        assert!(!glob_match("a*b*c", "axxbyy", false));
        assert!(glob_match("nginx", "nginx", false));
    }
}
