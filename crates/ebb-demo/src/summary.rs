//! The numbers at the end of the demo: what the clients saw, what the balancer showed, and
//! which version every member runs. Printed as text, or with `--json` as one JSON object.

use serde::Serialize;

/// One member's version, asked from the member itself (`GET /version`).
#[derive(Debug, Clone, Serialize)]
pub struct MemberVersion {
    /// Member name.
    pub name: String,
    /// What it answered, or `unreachable`.
    pub version: String,
}

/// The demo's result.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Whether every promise held (the exit code is 0 exactly when this is true).
    pub ok: bool,
    /// `drainstop` or `stop`.
    pub drain_mode: String,
    /// Requests finished (short requests and long streams).
    pub requests: u64,
    /// Requests that failed (not counting cut streams).
    pub failed: u64,
    /// Long-lived streams that ended before their full length.
    pub cut_connections: u64,
    /// Long-lived streams that ran to their end.
    pub streams_completed: u64,
    /// Latency of the short requests through the balancer.
    pub p50_ms: f64,
    /// See `p50_ms`.
    pub p99_ms: f64,
    /// Slowest short request.
    pub max_ms: f64,
    /// The most members out of service at once, polled from the balancer every ~50 ms.
    pub max_out_of_service: usize,
    /// Every member's version at the end.
    pub members: Vec<MemberVersion>,
    /// The exit code of `ebb run`, if it finished.
    pub rollout_exit_code: Option<i32>,
    /// How the engine said the run ended (`done`, `halted`, ...).
    pub rollout_state: Option<String>,
    /// How long the rollout took, ms.
    pub rollout_ms: u64,
    /// How long the whole demo took, ms.
    pub duration_ms: u64,
    /// The demo's working directory.
    pub dir: String,
    /// The engine's state dir (for `ebb report --state-dir`).
    pub state_dir: String,
    /// Why the demo is not ok, one reason per entry.
    pub problems: Vec<String>,
    /// The most recent client errors, for diagnosis.
    pub recent_errors: Vec<String>,
}

impl Summary {
    /// Works out `ok` and `problems` from the numbers.
    pub fn judge(&mut self, new_version: &str) {
        let mut problems = Vec::new();
        match self.rollout_exit_code {
            Some(0) => {}
            Some(code) => problems.push(format!("the rollout exited with {code}")),
            None => problems.push("the rollout did not finish".into()),
        }
        if self.drain_mode == "drainstop" {
            if self.failed > 0 {
                problems.push(format!("{} client requests failed", self.failed));
            }
            if self.cut_connections > 0 {
                problems.push(format!(
                    "{} long-lived connections were cut",
                    self.cut_connections
                ));
            }
        }
        if self.requests == 0 {
            problems.push("no request went through the balancer".into());
        }
        for m in &self.members {
            if m.version != new_version {
                problems.push(format!("{} runs {}, not {new_version}", m.name, m.version));
            }
        }
        if self.max_out_of_service > 1 {
            problems.push(format!(
                "{} members were out of service at once (max_unavailable = 1)",
                self.max_out_of_service
            ));
        }
        self.ok = problems.is_empty();
        self.problems = problems;
    }

    /// The human summary.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let verdict = if self.ok { "OK" } else { "NOT OK" };
        out.push_str(&format!(
            "\nebb demo: {verdict} — rolling update with {} in {:.1}s (demo {:.1}s)\n",
            self.drain_mode,
            self.rollout_ms as f64 / 1000.0,
            self.duration_ms as f64 / 1000.0
        ));
        out.push_str(&format!(
            "  requests        {} sent, {} failed\n  long streams    {} completed, {} cut\n",
            self.requests, self.failed, self.streams_completed, self.cut_connections
        ));
        out.push_str(&format!(
            "  latency         p50 {:.2} ms, p99 {:.2} ms, max {:.1} ms\n",
            self.p50_ms, self.p99_ms, self.max_ms
        ));
        out.push_str(&format!(
            "  out of service  at most {} member(s) at once (measured on the balancer every 50 ms)\n",
            self.max_out_of_service
        ));
        let versions: Vec<String> = self
            .members
            .iter()
            .map(|m| format!("{} {}", m.name, m.version))
            .collect();
        out.push_str(&format!("  versions        {}\n", versions.join(", ")));
        let rollout = match (&self.rollout_state, self.rollout_exit_code) {
            (Some(state), Some(code)) => format!("{state} (exit {code})"),
            (None, Some(code)) => format!("exit {code}"),
            _ => "did not finish".into(),
        };
        out.push_str(&format!("  rollout         {rollout}\n"));
        for problem in &self.problems {
            out.push_str(&format!("  problem: {problem}\n"));
        }
        if !self.ok {
            for e in &self.recent_errors {
                out.push_str(&format!("  client error: {e}\n"));
            }
        }
        out.push_str(&format!(
            "  report          ebb report --state-dir {}\n",
            self.state_dir
        ));
        out
    }
}
