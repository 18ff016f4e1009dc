//! The `services` check: which services run on the member. systemd for `sh` members
//! (`systemctl list-units`, which, unlike `systemctl is-active`, prints each unit's name
//! beside its state, so `*` patterns can be reported unit by unit), Windows services for
//! PowerShell members (`Get-Service`).

use async_trait::async_trait;
use ebb_config::{Context, Key, Kind};
use ebb_engine::interfaces::{Check, CheckContext, Transport};
use ebb_engine::placeholder::{ps_quote, sh_quote};
use ebb_engine::plan::{Member, Shell};
use std::time::Duration;

/// One service as the member reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceState {
    /// Unit or service name (`nginx.service`, `MSExchangeIS`).
    pub name: String,
    /// What the member says (`active`/`running`, `inactive`/`dead`, `Running`, `Stopped`).
    pub state: String,
    /// Whether that counts as running.
    pub running: bool,
}

/// The systemd unit name a plain service name stands for (`nginx` → `nginx.service`).
pub fn systemd_unit(name: &str) -> String {
    const SUFFIXES: &[&str] = &[
        ".service",
        ".socket",
        ".target",
        ".timer",
        ".mount",
        ".automount",
        ".path",
        ".scope",
        ".slice",
        ".swap",
        ".device",
    ];
    if name.contains('*') || SUFFIXES.iter().any(|s| name.ends_with(s)) {
        name.to_string()
    } else {
        format!("{name}.service")
    }
}

/// The command that lists the state of `names` (patterns allowed) on a member.
pub fn command(shell: Shell, names: &[String]) -> String {
    match shell {
        Shell::Sh => {
            let mut c = String::from(
                "systemctl list-units --all --type=service --no-legend --plain --no-pager --",
            );
            for n in names {
                c.push(' ');
                c.push_str(&sh_quote(&systemd_unit(n)));
            }
            c
        }
        Shell::PowerShell => {
            let list: Vec<String> = names.iter().map(|n| ps_quote(n)).collect();
            format!(
                "Get-Service -Name {} -ErrorAction SilentlyContinue | ForEach-Object {{ '{{0}}|{{1}}' -f $_.Name, $_.Status }}",
                list.join(",")
            )
        }
    }
}

/// Parses `systemctl list-units --plain --no-legend` (`UNIT LOAD ACTIVE SUB DESCRIPTION`).
pub fn parse_systemd(out: &str) -> Vec<ServiceState> {
    out.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let name = f.next()?.trim_start_matches('●').to_string();
            let _load = f.next()?;
            let active = f.next()?;
            let sub = f.next().unwrap_or("");
            if name.is_empty() {
                return None;
            }
            Some(ServiceState {
                name,
                state: format!("{active}/{sub}"),
                running: active == "active",
            })
        })
        .collect()
}

/// Parses the PowerShell command's `Name|Status` lines.
pub fn parse_windows(out: &str) -> Vec<ServiceState> {
    out.lines()
        .filter_map(|l| {
            let (name, status) = l.trim().split_once('|')?;
            Some(ServiceState {
                name: name.trim().to_string(),
                state: status.trim().to_string(),
                running: status.trim().eq_ignore_ascii_case("Running"),
            })
        })
        .collect()
}

/// Every service in the wrong state, one line each (empty: the check passes).
pub fn judge(
    shell: Shell,
    states: &[ServiceState],
    running: &[String],
    stopped: &[String],
) -> Vec<String> {
    let windows = shell == Shell::PowerShell;
    let matches = |pattern: &str, s: &ServiceState| {
        let p = if windows {
            pattern.to_string()
        } else {
            systemd_unit(pattern)
        };
        super::glob_match(&p, &s.name, windows)
    };
    let mut wrong = Vec::new();
    for p in running {
        let found: Vec<&ServiceState> = states.iter().filter(|s| matches(p, s)).collect();
        if found.is_empty() {
            wrong.push(format!("{p}: not found (expected running)"));
        }
        for s in found.into_iter().filter(|s| !s.running) {
            wrong.push(format!("{}: {} (expected running)", s.name, s.state));
        }
    }
    for p in stopped {
        // A service that does not exist (or is not loaded) is not running.
        for s in states.iter().filter(|s| matches(p, s) && s.running) {
            wrong.push(format!("{}: {} (expected stopped)", s.name, s.state));
        }
    }
    wrong
}

/// Runs the check on `member`.
pub async fn check(
    member: &Member,
    transport: &dyn Transport,
    running: &[String],
    stopped: &[String],
    timeout: Duration,
) -> Result<String, String> {
    let names: Vec<String> = running.iter().chain(stopped).cloned().collect();
    let cmd = command(member.shell, &names);
    let (out, lines) = super::run_collect(transport, &cmd, timeout).await?;
    let text = lines.join("\n");
    if out.timed_out {
        return Err(format!("`{cmd}` did not finish"));
    }
    let states = match member.shell {
        Shell::Sh => parse_systemd(&text),
        Shell::PowerShell => parse_windows(&text),
    };
    if states.is_empty() && out.exit_code != Some(0) {
        return Err(format!(
            "`{cmd}` failed ({}): {}",
            out.ended(),
            super::last_line(&out.tail)
        ));
    }
    let wrong = judge(member.shell, &states, running, stopped);
    if wrong.is_empty() {
        Ok(format!(
            "{} running, {} stopped as expected",
            running.len(),
            stopped.len()
        ))
    } else {
        Err(format!("services in the wrong state: {}", wrong.join("; ")))
    }
}

/// Which services must run and which must not.
#[derive(Debug, Clone)]
pub struct ServicesCheck {
    /// Must be running.
    pub running: Vec<String>,
    /// Must not be running.
    pub stopped: Vec<String>,
}

/// `services = { running = [...], stopped = [...] }`.
pub const KIND: super::Descriptor<ServicesCheck> = super::Descriptor {
    name: "services",
    value: Kind::Table,
    description: "service states on the member",
    example: "services = { running = [...] }",
    keys: KEYS,
    read,
};

const KEYS: &[Key] = &[
    Key::new(
        "running",
        Kind::Strings,
        "services that must be running (* allowed)",
    ),
    Key::new(
        "stopped",
        Kind::Strings,
        "services that must not be running (* allowed)",
    ),
];

fn read(cx: &mut Context, key: &str, value: &toml::Value) -> Option<ServicesCheck> {
    let mut st = super::table(cx, key, value, KEYS)?;
    let running = st.strings(cx, "running").unwrap_or_default();
    let stopped = st.strings(cx, "stopped").unwrap_or_default();
    st.finish(cx);
    if running.is_empty() && stopped.is_empty() {
        cx.err(
            key,
            "name at least one service in running = [...] or stopped = [...]",
        );
    }
    for n in running.iter().chain(&stopped) {
        if n.trim().is_empty() || n.contains(['\'', '"', '\n']) {
            cx.err(
                key,
                format!("\"{n}\" is not a service name (letters, digits, -_.@ and *)"),
            );
        }
    }
    Some(ServicesCheck { running, stopped })
}

#[async_trait]
impl Check for ServicesCheck {
    async fn run(
        &self,
        member: &Member,
        transport: &dyn Transport,
        _: &CheckContext,
        timeout: Duration,
    ) -> Result<String, String> {
        check(member, transport, &self.running, &self.stopped, timeout).await
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}
