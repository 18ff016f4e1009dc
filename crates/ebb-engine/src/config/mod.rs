//! Pool file (TOML) → validated [`Plan`]. Every problem is found in one pass and reported
//! with file, line and key; nothing is changed anywhere before this succeeds.

use crate::placeholder;
use crate::plan::*;
use crate::source::{line_of_offset, LineIndex};
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The balancer drivers a pool file may name (ebb-drivers builds each).
pub const DRIVERS: &[&str] = &["builtin", "haproxy", "nlb", "command", "nginx", "caddy"];

/// `"builtin", "haproxy", ...` for messages.
fn quoted_drivers() -> String {
    DRIVERS
        .iter()
        .map(|d| format!("\"{d}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

mod checks;
mod maintenance;
mod members;
mod reader;

use checks::*;
pub use checks::{EVENT_LEVELS, JOURNAL_LEVELS};
use maintenance::*;
use members::*;
use reader::*;

/// One problem in a pool file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file, as the user named it.
    pub file: String,
    /// 1-based line, 0 when unknown.
    pub line: usize,
    /// The key or table the problem is in (`member[2].lb_name`).
    pub key: String,
    /// What was wrong and what was expected.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}:{}: {}", self.file, self.line, self.message)
        } else {
            write!(
                f,
                "{}:{}: {}: {}",
                self.file, self.line, self.key, self.message
            )
        }
    }
}

/// Every problem found in a pool file.
#[derive(Debug, Clone)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Reads and validates a pool file.
pub fn load(path: &Path) -> Result<Plan, ConfigErrors> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            file: shown.clone(),
            line: 0,
            key: String::new(),
            message: format!("cannot read the pool file: {e}"),
        }])
    })?;
    parse(&text, path)
}

/// Validates pool file `text`; `path` names it in errors and anchors relative paths.
pub fn parse(text: &str, path: &Path) -> Result<Plan, ConfigErrors> {
    let file = path.display().to_string();
    let root: toml::Table = match text.parse::<toml::Table>() {
        Ok(t) => t,
        Err(e) => {
            let line = e.span().map(|s| line_of_offset(text, s.start)).unwrap_or(0);
            return Err(ConfigErrors(vec![ConfigError {
                file,
                line,
                key: String::new(),
                message: format!("not valid TOML: {}", e.message()),
            }]));
        }
    };
    let mut cx = Cx {
        file,
        idx: LineIndex::new(text),
        errors: Vec::new(),
    };
    let plan = build(&mut cx, &root, path);
    if cx.errors.is_empty() {
        if let Some(plan) = plan {
            return Ok(plan);
        }
    }
    cx.errors.sort_by_key(|e| e.line);
    cx.errors.dedup();
    Err(ConfigErrors(cx.errors))
}

struct Cx {
    file: String,
    idx: LineIndex,
    errors: Vec<ConfigError>,
}

impl Cx {
    fn err(&mut self, path: &str, message: impl Into<String>) {
        self.errors.push(ConfigError {
            file: self.file.clone(),
            line: self.idx.line(path),
            key: path.to_string(),
            message: message.into(),
        });
    }
}

fn build(cx: &mut Cx, root: &toml::Table, path: &Path) -> Option<Plan> {
    let mut top = Tbl::new(root, "");

    // [pool]
    let pool_t = top.table(cx, "pool");
    let empty = toml::Table::new();
    if pool_t.is_none() && !root.contains_key("pool") {
        cx.err(
            "pool",
            "missing table [pool] (it needs at least name = \"...\")",
        );
    }
    let mut pool = Tbl::new(pool_t.unwrap_or(&empty), "pool");
    let pool_name = if pool_t.is_some() {
        pool.req_str(cx, "name", "the pool's name, e.g. name = \"web\"")
    } else {
        None
    };
    if let Some(n) = &pool_name {
        if !n
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            cx.err(
                "pool.name",
                format!("\"{n}\" may only contain letters, digits, '-', '_' and '.'"),
            );
        }
    }
    let max_unavailable = match pool.get("max_unavailable") {
        None => MaxUnavailable::Count(1),
        Some(toml::Value::Integer(n)) if *n >= 1 => MaxUnavailable::Count(*n as usize),
        Some(toml::Value::String(s)) if s.ends_with('%') => {
            match s[..s.len() - 1].trim().parse::<u32>() {
                Ok(p) if (1..=100).contains(&p) => MaxUnavailable::Percent(p),
                _ => {
                    cx.err(
                        "pool.max_unavailable",
                        format!("expected a percentage from \"1%\" to \"100%\", found \"{s}\""),
                    );
                    MaxUnavailable::Count(1)
                }
            }
        }
        Some(other) => {
            cx.err(
                "pool.max_unavailable",
                format!(
                    "expected a count of 1 or more or a percentage such as \"25%\", found {}",
                    display_value(other)
                ),
            );
            MaxUnavailable::Count(1)
        }
    };
    let min_in_service = pool.uint(cx, "min_in_service", 0) as usize;
    let capacity_wait = pool.duration(cx, "capacity_wait", Duration::from_secs(300));
    let pool_checks: Vec<CheckSpec> = pool
        .tables(cx, "check")
        .into_iter()
        .enumerate()
        .filter_map(|(i, t)| check(cx, t, &format!("pool.check[{i}]")))
        .collect();
    let gate = pool.table(cx, "gate").and_then(|t| gate(cx, t));
    pool.finish(cx, &[]);

    // [balancer]
    let bal_t = top.table(cx, "balancer");
    if bal_t.is_none() && !root.contains_key("balancer") {
        cx.err(
            "balancer",
            format!(
                "missing table [balancer] (driver = {})",
                DRIVERS
                    .iter()
                    .map(|d| format!("\"{d}\""))
                    .collect::<Vec<_>>()
                    .join(" | ")
            ),
        );
    }
    let mut bal = Tbl::new(bal_t.unwrap_or(&empty), "balancer");
    let driver = if bal_t.is_some() {
        bal.req_str(cx, "driver", &format!("one of {}", quoted_drivers()))
    } else {
        None
    };
    if let Some(d) = &driver {
        if !DRIVERS.contains(&d.as_str()) {
            cx.err(
                "balancer.driver",
                format!("expected one of {}, found \"{d}\"", quoted_drivers()),
            );
        }
    }
    let mut settings = bal_t.cloned().unwrap_or_default();
    settings.remove("driver");
    let lines: BTreeMap<String, usize> = bal_t
        .map(|t| t.keys().cloned().collect::<Vec<_>>())
        .unwrap_or_default()
        .iter()
        .map(|k| (k.clone(), cx.idx.line(&format!("balancer.{k}"))))
        .collect();

    // [defaults]
    let defaults_t = top.table(cx, "defaults").unwrap_or(&empty);
    let mut defaults = Tbl::new(defaults_t, "defaults");
    let d_transport = defaults.choice(
        cx,
        "transport",
        &[("local", "local"), ("ssh", "ssh")],
        "local",
    );
    let d_shell = defaults.choice(
        cx,
        "shell",
        &[("sh", Shell::Sh), ("powershell", Shell::PowerShell)],
        Shell::Sh,
    );
    let d_boot = defaults.str(cx, "boot_id");
    let d_vars = vars(cx, &mut defaults);
    let mut d_settings = toml::Table::new();
    for k in MEMBER_SETTINGS {
        if let Some(v) = defaults.get(k) {
            member_setting(cx, &format!("defaults.{k}"), k, v);
            d_settings.insert(k.to_string(), v.clone());
        }
    }
    defaults.finish(cx, &[]);

    // [[member]]
    let mut members: Vec<Member> = Vec::new();
    let member_ts = top.tables(cx, "member");
    if member_ts.is_empty() && !root.contains_key("member") {
        cx.err(
            "member",
            "no [[member]] tables: a pool needs at least one member",
        );
    }
    let mut names: BTreeMap<String, String> = BTreeMap::new();
    let mut lb_names: BTreeMap<String, String> = BTreeMap::new();
    for (i, t) in member_ts.iter().enumerate() {
        let p = format!("member[{i}]");
        let mut m = Tbl::new(t, p.clone());
        let name = m.req_str(cx, "name", "the member's name, e.g. name = \"web1\"");
        let address = m.req_str(
            cx,
            "address",
            "where the member serves, e.g. address = \"10.0.0.11:443\"",
        );
        let lb_name = m.str(cx, "lb_name");
        let transport = m.choice(
            cx,
            "transport",
            &[("local", "local"), ("ssh", "ssh")],
            d_transport,
        );
        let shell = m.choice(
            cx,
            "shell",
            &[("sh", Shell::Sh), ("powershell", Shell::PowerShell)],
            d_shell,
        );
        let group = m.str(cx, "group");
        let boot_id = m.str(cx, "boot_id").or_else(|| d_boot.clone());
        let weight = m.uint(cx, "weight", 1);
        let mut member_vars = d_vars.clone();
        member_vars.extend(vars(cx, &mut m));
        let mut msettings = d_settings.clone();
        for k in MEMBER_SETTINGS {
            if let Some(v) = m.get(k) {
                member_setting(cx, &format!("{p}.{k}"), k, v);
                msettings.insert(k.to_string(), v.clone());
            }
        }
        m.finish(cx, &[]);
        let (Some(name), Some(address)) = (name, address) else {
            continue;
        };
        if let Some(prev) = names.get(&name) {
            cx.err(
                &format!("{p}.name"),
                format!("member \"{name}\" is defined twice (first as {prev})"),
            );
        }
        names.insert(name.clone(), p.clone());
        let lb_name = lb_name.unwrap_or_else(|| name.clone());
        if let Some(prev) = lb_names.get(&lb_name) {
            cx.err(
                &format!("{p}.lb_name"),
                format!("member \"{name}\": lb_name \"{lb_name}\" duplicates member \"{prev}\""),
            );
        } else {
            lb_names.insert(lb_name.clone(), name.clone());
        }
        members.push(Member {
            name,
            address,
            lb_name,
            transport: transport.to_string(),
            shell,
            group,
            vars: member_vars,
            boot_id,
            settings: msettings,
            weight: weight.min(u32::MAX as u64) as u32,
        });
    }

    // [runbook]
    let rb_t = top.table(cx, "runbook").unwrap_or(&empty);
    let mut rb = Tbl::new(rb_t, "runbook");
    let on_failure = rb.choice(
        cx,
        "on_failure",
        &[("halt", OnFailure::Halt), ("continue", OnFailure::Continue)],
        OnFailure::Halt,
    );
    let max_failed = rb.uint(cx, "max_failed", 0) as usize;
    let rejoin_timeout = rb.duration(cx, "rejoin_timeout", Duration::from_secs(120));
    let balancer_retry = rb.duration(cx, "balancer_retry", crate::patient::BALANCER_RETRY);
    let drain_t = rb.table(cx, "drain").unwrap_or(&empty);
    let mut dr = Tbl::new(drain_t, "runbook.drain");
    let drain = DrainSpec {
        mode: dr.choice(
            cx,
            "mode",
            &[
                ("drainstop", DrainMode::Drainstop),
                ("stop", DrainMode::Stop),
            ],
            DrainMode::Drainstop,
        ),
        timeout: dr.duration(cx, "timeout", Duration::from_secs(600)),
        on_timeout: dr.choice(
            cx,
            "on_timeout",
            &[
                ("stop", OnTimeout::Stop),
                ("abort", OnTimeout::Abort),
                ("wait", OnTimeout::Wait),
            ],
            OnTimeout::Stop,
        ),
        hold: dr.bool(cx, "hold", true),
    };
    dr.finish(cx, &[]);

    let mut steps = Vec::new();
    let mut step_names: HashSet<String> = HashSet::new();
    for (i, t) in rb.tables(cx, "step").into_iter().enumerate() {
        let p = format!("runbook.step[{i}]");
        let mut s = Tbl::new(t, p.clone());
        let name = s.req_str(cx, "name", "the step's name, e.g. name = \"install\"");
        let maintenance = maintenance(cx, &mut s);
        let run = if maintenance.is_some() {
            // Read, so they are reported once, below, not as unknown keys.
            let (_, _) = (s.get("run"), s.get("undo"));
            if t.contains_key("run") || t.contains_key("undo") {
                let k = if t.contains_key("alertmanager") {
                    "alertmanager"
                } else {
                    "webhook"
                };
                cx.err(&format!("{p}.{k}"), "a maintenance step (alertmanager or webhook) has no run or undo: it begins maintenance and ends it on return");
            }
            Some(String::new())
        } else {
            s.req_str(
                cx,
                "run",
                "the command to run on the member (or alertmanager = { ... } / webhook = { ... })",
            )
        };
        let undo = if maintenance.is_some() {
            None
        } else {
            s.str(cx, "undo")
        };
        let when = s.choice(
            cx,
            "when",
            &[
                ("every", When::Every),
                ("first", When::First),
                ("never", When::Never),
            ],
            When::Every,
        );
        let only_group = s.str(cx, "only_group");
        let timeout = s.duration(cx, "timeout", Duration::from_secs(1800));
        let idempotent = s.bool(cx, "idempotent", true);
        let reboot = s.choice(
            cx,
            "reboot",
            &[
                ("never", RebootPolicy::Never),
                ("if-required", RebootPolicy::IfRequired),
                ("always", RebootPolicy::Always),
            ],
            RebootPolicy::Never,
        );
        let codes = match s.get("reboot_required_exit_codes") {
            None => vec![3010],
            Some(toml::Value::Array(a)) => {
                let mut out = Vec::new();
                for v in a {
                    match v.as_integer() {
                        Some(c) if (i32::MIN as i64..=i32::MAX as i64).contains(&c) => {
                            out.push(c as i32)
                        }
                        _ => cx.err(
                            &format!("{p}.reboot_required_exit_codes"),
                            "expected a list of exit codes, e.g. [3010, 1641]",
                        ),
                    }
                }
                out
            }
            Some(other) => {
                cx.err(
                    &format!("{p}.reboot_required_exit_codes"),
                    format!("expected a list of exit codes, found {}", type_name(other)),
                );
                vec![3010]
            }
        };
        s.finish(cx, &[]);
        let (Some(name), Some(run)) = (name, run) else {
            continue;
        };
        if RESERVED_STEP_NAMES.contains(&name.as_str()) {
            cx.err(
                &format!("{p}.name"),
                format!("\"{name}\" is the name of a built-in stage; choose another"),
            );
        }
        if !step_names.insert(name.clone()) {
            cx.err(
                &format!("{p}.name"),
                format!("step \"{name}\" is defined twice; step names must be unique"),
            );
        }
        if reboot != RebootPolicy::Never && !rb_t.contains_key("reboot") {
            cx.err(&format!("{p}.reboot"), "this step may reboot but there is no [runbook.reboot] with the command that reboots");
        }
        if let Some(g) = &only_group {
            if !members
                .iter()
                .any(|m| m.group.as_deref() == Some(g.as_str()))
            {
                cx.err(
                    &format!("{p}.only_group"),
                    format!("no member is in group \"{g}\""),
                );
            }
        }
        steps.push((
            p,
            StepSpec {
                name,
                run,
                undo,
                when,
                only_group,
                timeout,
                idempotent,
                reboot,
                reboot_required_exit_codes: codes,
                maintenance,
            },
        ));
    }

    let reboot = rb.table(cx, "reboot").and_then(|t| {
        let mut r = Tbl::new(t, "runbook.reboot");
        let command = r.req_str(cx, "command", "the command that reboots the member");
        let timeout = r.duration(cx, "timeout", Duration::from_secs(900));
        let poll_interval = r.duration(cx, "poll_interval", Duration::from_secs(2));
        r.finish(cx, &[]);
        Some(RebootSpec {
            command: command?,
            timeout,
            poll_interval,
        })
    });
    if reboot.is_some() {
        for (i, m) in members.iter().enumerate() {
            if m.transport == "local" && m.boot_id.is_none() {
                cx.err(
                    &format!("member[{i}]"),
                    format!("member \"{}\" uses the local transport and the runbook reboots: set boot_id = \"<command printing the boot identity>\" on it or in [defaults]", m.name),
                );
            }
        }
    }
    let verify: Vec<CheckSpec> = rb
        .tables(cx, "verify")
        .into_iter()
        .enumerate()
        .filter_map(|(i, t)| check(cx, t, &format!("runbook.verify[{i}]")))
        .collect();
    rb.finish(cx, &[]);

    // Placeholders, now that every member's variables are known.
    let mut templates: Vec<(String, String, Vec<&str>)> = Vec::new();
    for (p, s) in &steps {
        templates.push((format!("{p}.run"), s.run.clone(), vec![]));
        if let Some(u) = &s.undo {
            templates.push((format!("{p}.undo"), u.clone(), vec![]));
        }
    }
    if let Some(r) = &reboot {
        templates.push(("runbook.reboot.command".into(), r.command.clone(), vec![]));
    }
    if let Some(b) = &d_boot {
        templates.push(("defaults.boot_id".into(), b.clone(), vec![]));
    }
    for (p, s) in &steps {
        if let Some(m) = &s.maintenance {
            for (k, t) in maintenance_templates(m) {
                templates.push((format!("{p}.{k}"), t, vec![]));
            }
        }
    }
    for (prefix, checks) in [("runbook.verify", &verify), ("pool.check", &pool_checks)] {
        for (i, c) in checks.iter().enumerate() {
            for (k, t) in check_templates(&c.kind) {
                templates.push((format!("{prefix}[{i}].{k}"), t, vec![]));
            }
        }
    }
    if driver.as_deref() == Some("command") {
        for (k, v) in &settings {
            if let toml::Value::String(s) = v {
                let extras = if k == "initial_state" {
                    vec!["state"]
                } else {
                    vec![]
                };
                templates.push((format!("balancer.{k}"), s.clone(), extras));
            }
        }
    }
    for (key, template, extras) in &templates {
        for m in &members {
            if let Err(e) = placeholder::validate(template, m, extras) {
                cx.err(key, e);
                break;
            }
        }
    }

    // [[wave]]
    let mut waves = Vec::new();
    let mut assigned: BTreeMap<usize, String> = BTreeMap::new();
    for (i, t) in top.tables(cx, "wave").into_iter().enumerate() {
        let p = format!("wave[{i}]");
        let mut w = Tbl::new(t, p.clone());
        let name = w
            .str(cx, "name")
            .unwrap_or_else(|| format!("wave {}", i + 1));
        let listed = w.strings(cx, "members");
        let group = w.str(cx, "group");
        let pause_after = w.bool(cx, "pause_after", false);
        w.finish(cx, &[]);
        let mut idxs = Vec::new();
        match (listed, group) {
            (Some(_), Some(_)) => cx.err(
                &p,
                "give either members = [...] or group = \"...\", not both",
            ),
            (None, None) => cx.err(
                &p,
                "a wave needs members = [\"name\", ...] or group = \"...\"",
            ),
            (Some(list), None) => {
                for n in list {
                    match members.iter().position(|m| m.name == n) {
                        Some(ix) => idxs.push(ix),
                        None => cx.err(&format!("{p}.members"), format!("no member named \"{n}\"")),
                    }
                }
            }
            (None, Some(g)) => {
                idxs = members
                    .iter()
                    .enumerate()
                    .filter(|(_, m)| m.group.as_deref() == Some(g.as_str()))
                    .map(|(ix, _)| ix)
                    .collect();
                if idxs.is_empty() {
                    cx.err(
                        &format!("{p}.group"),
                        format!("no member is in group \"{g}\""),
                    );
                }
            }
        }
        for ix in &idxs {
            if let Some(prev) = assigned.get(ix) {
                cx.err(
                    &p,
                    format!(
                        "member \"{}\" is already in {prev}; a member belongs to one wave",
                        members[*ix].name
                    ),
                );
            }
            assigned.insert(*ix, name.clone());
        }
        waves.push(Wave {
            name,
            members: idxs,
            pause_after,
        });
    }
    let rest: Vec<usize> = (0..members.len())
        .filter(|i| !assigned.contains_key(i))
        .collect();
    if !rest.is_empty() {
        let name = if waves.is_empty() {
            "all".to_string()
        } else {
            "rest".to_string()
        };
        waves.push(Wave {
            name,
            members: rest,
            pause_after: false,
        });
    }
    top.finish(cx, &[]);

    // The policy must be satisfiable at all.
    if let MaxUnavailable::Count(n) = max_unavailable {
        if !members.is_empty() && n > members.len() {
            cx.err(
                "pool.max_unavailable",
                format!("{n} is more than the {} members of the pool", members.len()),
            );
        }
    }
    if !members.is_empty() && min_in_service >= members.len() {
        cx.err(
            "pool.min_in_service",
            format!("{min_in_service} leaves no member free to drain in a pool of {} (it must be at most {})", members.len(), members.len() - 1),
        );
    }

    Some(Plan {
        file: PathBuf::from(path),
        pool: PoolSpec {
            name: pool_name?,
            max_unavailable,
            min_in_service,
            capacity_wait,
            checks: pool_checks,
            gate,
        },
        balancer: BalancerSpec {
            driver: driver?,
            settings,
            lines,
        },
        members,
        runbook: Runbook {
            on_failure,
            max_failed,
            drain,
            steps: steps.into_iter().map(|(_, s)| s).collect(),
            reboot,
            verify,
            rejoin_timeout,
            balancer_retry,
        },
        waves,
    })
}

/// Names of the built-in stages, which user steps may not take.
pub const RESERVED_STEP_NAMES: &[&str] =
    &["drain", "hold", "verify", "reboot", "return", "pool-check"];
