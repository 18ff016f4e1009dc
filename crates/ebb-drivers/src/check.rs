//! Verification checks: `command` (exit 0 on the member), `http` (status and body),
//! `tcp` (connect). One attempt each; the engine does retries.

use async_trait::async_trait;
use ebb_engine::interfaces::{Checker, Transport};
use ebb_engine::placeholder::{render, Quote};
use ebb_engine::plan::{CheckKind, CheckSpec, Member};
use std::collections::BTreeMap;

/// The checks every ebb has.
pub struct StandardChecker;

#[async_trait]
impl Checker for StandardChecker {
    async fn check_once(
        &self,
        check: &CheckSpec,
        member: &Member,
        transport: &dyn Transport,
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
            } => {
                let url = render(url, member, Quote::None, &none);
                let resp = crate::http::request("GET", &url, None, &[], check.timeout).await?;
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
                Ok(format!("GET {url} → {}", resp.status))
            }
            CheckKind::Tcp { address } => {
                let addr = render(address, member, Quote::None, &none);
                tokio::net::TcpStream::connect(&addr)
                    .await
                    .map(|_| format!("connected to {addr}"))
                    .map_err(|e| format!("cannot connect to {addr}: {e}"))
            }
        }
    }
}

fn last_line(s: &str) -> String {
    let t = s.trim();
    let line = t.lines().last().unwrap_or("");
    if line.len() > 200 {
        format!(
            "{}…",
            &line[..line.char_indices().nth(200).map_or(line.len(), |(i, _)| i)]
        )
    } else {
        line.to_string()
    }
}
