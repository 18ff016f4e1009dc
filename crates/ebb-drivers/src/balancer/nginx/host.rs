//! The machine nginx runs on, reached through a transport (local, or ssh as members are):
//! commands with their whole output, and the upstream file read and written through the
//! shell, so a remote nginx is driven exactly like a local one.

use ebb_engine::interfaces::{CommandOutcome, DriverError, DriverResult, Transport};
use ebb_engine::placeholder::sh_quote;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A command's exit and every line it printed (stdout and stderr, in order).
pub struct Output {
    /// How it ended.
    pub outcome: CommandOutcome,
    /// Every line, not only the transport's tail.
    pub lines: Vec<String>,
}

impl Output {
    /// Exit code 0.
    pub fn ok(&self) -> bool {
        self.outcome.exit_code == Some(0)
    }

    /// What the command said, for an error message (its last lines, trimmed).
    pub fn said(&self) -> String {
        let text = self.lines.join("\n");
        let text = text.trim();
        if text.is_empty() {
            "(no output)".to_string()
        } else {
            text.to_string()
        }
    }

    /// `exit code N` or `timed out`.
    pub fn how(&self) -> String {
        match (self.outcome.timed_out, self.outcome.exit_code) {
            (true, _) => "timed out".to_string(),
            (false, Some(c)) => format!("exit code {c}"),
            (false, None) => "killed".to_string(),
        }
    }
}

/// The balancer host.
pub struct Host {
    transport: Arc<dyn Transport>,
    /// Bound on each command.
    pub timeout: Duration,
    /// `local` or `ssh HOST`, for messages.
    pub label: String,
}

/// Marks the line carrying the file's contents, apart from anything on stderr.
const DATA: &str = "EBB-BASE64:";

impl Host {
    /// Commands go through `transport`, each bounded by `timeout`.
    pub fn new(transport: Arc<dyn Transport>, timeout: Duration, label: String) -> Host {
        Host {
            transport,
            timeout,
            label,
        }
    }

    /// Runs `command` and keeps all of its output.
    pub async fn run(&self, command: &str) -> DriverResult<Output> {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = {
            let lines = lines.clone();
            Arc::new(move |l: &str| {
                if let Ok(mut v) = lines.lock() {
                    v.push(l.to_string());
                }
            })
        };
        let outcome = self
            .transport
            .run(command, &BTreeMap::new(), self.timeout, Some(sink))
            .await
            .map_err(|e| DriverError::new(format!("on the nginx host ({}): {e}", self.label)))?;
        let lines = lines.lock().map(|v| v.clone()).unwrap_or_default();
        Ok(Output { outcome, lines })
    }

    /// The file's exact bytes (as text: nginx configuration is text).
    pub async fn read(&self, path: &str) -> Result<String, String> {
        let cmd = format!(
            "printf '{DATA}' && base64 -w0 -- {} && echo",
            sh_quote(path)
        );
        let out = self.run(&cmd).await.map_err(|e| e.to_string())?;
        if !out.ok() {
            let said: Vec<&str> = out
                .lines
                .iter()
                .map(|l| l.trim_start_matches(DATA))
                .filter(|l| !l.trim().is_empty())
                .collect();
            return Err(format!(
                "cannot read it ({}): {}",
                out.how(),
                said.join("\n")
            ));
        }
        let Some(data) = out.lines.iter().find_map(|l| l.strip_prefix(DATA)) else {
            return Err(format!("reading it printed no contents: {}", out.said()));
        };
        let bytes = crate::base64::decode(data.trim())
            .ok_or_else(|| format!("reading it gave something that is not base64: {data:.60}"))?;
        String::from_utf8(bytes).map_err(|_| "it is not UTF-8 text".to_string())
    }

    /// Replaces the file's contents atomically: a copy beside it (same owner and mode)
    /// gets the new bytes, then is renamed over it. A symlink's target is what changes.
    pub async fn write(&self, path: &str, contents: &str) -> Result<(), String> {
        let cmd = format!(
            "f=$(readlink -f -- {p}) && t=\"$f.ebb-new.$$\" && cp -p -- \"$f\" \"$t\" && \
             printf %s {data} | base64 -d > \"$t\" && mv -f -- \"$t\" \"$f\" || {{ rm -f -- \"$t\"; exit 1; }}",
            p = sh_quote(path),
            data = sh_quote(&crate::base64::encode(contents.as_bytes())),
        );
        let out = self.run(&cmd).await.map_err(|e| e.to_string())?;
        if out.ok() {
            Ok(())
        } else {
            Err(format!("cannot write it ({}): {}", out.how(), out.said()))
        }
    }
}
