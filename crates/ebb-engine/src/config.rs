//! Pool file (TOML) → validated [`Plan`]. Every problem is found in one pass and reported
//! with file, line and key; nothing is changed anywhere before this succeeds.

use crate::duration::parse_duration;
use crate::placeholder;
use crate::plan::*;
use crate::source::{line_of_offset, LineIndex};
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

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

/// A table being read: records which keys were used so unknown ones are reported.
struct Tbl<'a> {
    t: &'a toml::Table,
    path: String,
    used: HashSet<&'static str>,
}

fn type_name(v: &toml::Value) -> &'static str {
    match v {
        toml::Value::String(_) => "a string",
        toml::Value::Integer(_) => "an integer",
        toml::Value::Float(_) => "a number",
        toml::Value::Boolean(_) => "a boolean",
        toml::Value::Datetime(_) => "a date",
        toml::Value::Array(_) => "an array",
        toml::Value::Table(_) => "a table",
    }
}

impl<'a> Tbl<'a> {
    fn new(t: &'a toml::Table, path: impl Into<String>) -> Self {
        Tbl {
            t,
            path: path.into(),
            used: HashSet::new(),
        }
    }

    fn key(&self, k: &str) -> String {
        if self.path.is_empty() {
            k.to_string()
        } else {
            format!("{}.{k}", self.path)
        }
    }

    fn get(&mut self, k: &'static str) -> Option<&'a toml::Value> {
        self.used.insert(k);
        self.t.get(k)
    }

    fn str(&mut self, cx: &mut Cx, k: &'static str) -> Option<String> {
        match self.get(k)? {
            toml::Value::String(s) => Some(s.clone()),
            other => {
                cx.err(
                    &self.key(k),
                    format!("expected a string, found {}", type_name(other)),
                );
                None
            }
        }
    }

    fn req_str(&mut self, cx: &mut Cx, k: &'static str, what: &str) -> Option<String> {
        let v = self.str(cx, k);
        if v.is_none() && !self.t.contains_key(k) {
            cx.err(&self.path, format!("missing key \"{k}\": {what}"));
        }
        if let Some(s) = &v {
            if s.trim().is_empty() {
                cx.err(&self.key(k), format!("must not be empty: {what}"));
                return None;
            }
        }
        v
    }

    fn bool(&mut self, cx: &mut Cx, k: &'static str, default: bool) -> bool {
        match self.get(k) {
            None => default,
            Some(toml::Value::Boolean(b)) => *b,
            Some(other) => {
                cx.err(
                    &self.key(k),
                    format!("expected true or false, found {}", type_name(other)),
                );
                default
            }
        }
    }

    fn uint(&mut self, cx: &mut Cx, k: &'static str, default: u64) -> u64 {
        match self.get(k) {
            None => default,
            Some(toml::Value::Integer(i)) if *i >= 0 => *i as u64,
            Some(toml::Value::Integer(i)) => {
                cx.err(
                    &self.key(k),
                    format!("expected a number 0 or more, found {i}"),
                );
                default
            }
            Some(other) => {
                cx.err(
                    &self.key(k),
                    format!("expected a whole number, found {}", type_name(other)),
                );
                default
            }
        }
    }

    fn duration(&mut self, cx: &mut Cx, k: &'static str, default: Duration) -> Duration {
        match self.get(k) {
            None => default,
            Some(toml::Value::String(s)) => match parse_duration(s) {
                Ok(d) => d,
                Err(e) => {
                    cx.err(&self.key(k), e);
                    default
                }
            },
            Some(other) => {
                cx.err(
                    &self.key(k),
                    format!(
                        "expected a duration string such as \"90s\" or \"10m\", found {}",
                        type_name(other)
                    ),
                );
                default
            }
        }
    }

    fn choice<T: Copy>(
        &mut self,
        cx: &mut Cx,
        k: &'static str,
        options: &[(&str, T)],
        default: T,
    ) -> T {
        let Some(s) = self.str(cx, k) else {
            return default;
        };
        match options.iter().find(|(name, _)| *name == s) {
            Some((_, v)) => *v,
            None => {
                let names: Vec<String> = options.iter().map(|(n, _)| format!("\"{n}\"")).collect();
                cx.err(
                    &self.key(k),
                    format!("expected one of {}, found \"{s}\"", names.join(", ")),
                );
                default
            }
        }
    }

    fn table(&mut self, cx: &mut Cx, k: &'static str) -> Option<&'a toml::Table> {
        match self.get(k)? {
            toml::Value::Table(t) => Some(t),
            other => {
                cx.err(
                    &self.key(k),
                    format!("expected a table, found {}", type_name(other)),
                );
                None
            }
        }
    }

    fn tables(&mut self, cx: &mut Cx, k: &'static str) -> Vec<&'a toml::Table> {
        match self.get(k) {
            None => Vec::new(),
            Some(toml::Value::Array(items)) => {
                let mut out = Vec::new();
                for (i, item) in items.iter().enumerate() {
                    match item {
                        toml::Value::Table(t) => out.push(t),
                        other => cx.err(
                            &format!("{}[{i}]", self.key(k)),
                            format!("expected a table ([[{k}]]), found {}", type_name(other)),
                        ),
                    }
                }
                out
            }
            Some(other) => {
                cx.err(
                    &self.key(k),
                    format!(
                        "expected an array of tables ([[{k}]]), found {}",
                        type_name(other)
                    ),
                );
                Vec::new()
            }
        }
    }

    fn strings(&mut self, cx: &mut Cx, k: &'static str) -> Option<Vec<String>> {
        match self.get(k)? {
            toml::Value::Array(items) => {
                let mut out = Vec::new();
                for item in items {
                    match item {
                        toml::Value::String(s) => out.push(s.clone()),
                        other => {
                            cx.err(
                                &self.key(k),
                                format!(
                                    "expected a list of strings, found {} in it",
                                    type_name(other)
                                ),
                            );
                            return None;
                        }
                    }
                }
                Some(out)
            }
            other => {
                cx.err(
                    &self.key(k),
                    format!("expected a list of strings, found {}", type_name(other)),
                );
                None
            }
        }
    }

    /// Reports every key that was not read (a typo, most often).
    fn finish(&self, cx: &mut Cx, also_allowed: &[&str]) {
        for k in self.t.keys() {
            if !self.used.contains(k.as_str()) && !also_allowed.contains(&k.as_str()) {
                let mut known: Vec<&str> = self.used.iter().copied().collect();
                known.extend_from_slice(also_allowed);
                known.sort();
                let hint = match known.iter().find(|c| similar(c, k)) {
                    Some(c) => format!(" (did you mean \"{c}\"?)"),
                    None => format!(" (known keys here: {})", known.join(", ")),
                };
                cx.err(&self.key(k), format!("unknown key{hint}"));
            }
        }
    }
}

fn similar(a: &str, b: &str) -> bool {
    // Cheap typo test: same length ±1 and at most two differing characters.
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    if a.len().abs_diff(b.len()) > 1 {
        return false;
    }
    let mut dp: Vec<usize> = (0..=b.len()).collect();
    for i in 1..=a.len() {
        let mut prev = dp[0];
        dp[0] = i;
        for j in 1..=b.len() {
            let tmp = dp[j];
            dp[j] = (dp[j] + 1)
                .min(dp[j - 1] + 1)
                .min(prev + usize::from(a[i - 1] != b[j - 1]));
            prev = tmp;
        }
    }
    dp[b.len()] <= 2
}

const MEMBER_SETTINGS: &[&str] = &[
    "ssh_user",
    "ssh_port",
    "ssh_key",
    "ssh_known_hosts",
    "ssh_options",
    "ssh_host",
    "ssh_connect_timeout",
];

/// Options of `ssh_options` that ebb owns (host keys are always checked).
const SSH_OWNED_OPTIONS: &[&str] = &[
    "stricthostkeychecking",
    "userknownhostsfile",
    "globalknownhostsfile",
    "controlmaster",
    "controlpath",
    "controlpersist",
    "batchmode",
    "requesttty",
    "permitlocalcommand",
    "localcommand",
];

/// Checks the type of one transport setting (`ssh_*`), so a typo fails with its line.
fn member_setting(cx: &mut Cx, key: &str, k: &str, v: &toml::Value) {
    let bad = |cx: &mut Cx, what: &str| {
        cx.err(key, format!("expected {what}, found {}", display_value(v)));
    };
    match k {
        "ssh_port" => match v.as_integer() {
            Some(p) if (1..=65535).contains(&p) => {}
            _ => bad(cx, "a port number from 1 to 65535"),
        },
        "ssh_connect_timeout" => match v.as_str().map(parse_duration) {
            Some(Ok(_)) => {}
            Some(Err(e)) => cx.err(key, e),
            None => bad(cx, "a duration such as \"10s\""),
        },
        "ssh_options" => match v.as_array() {
            Some(items) => {
                for item in items {
                    let Some(o) = item.as_str() else {
                        bad(cx, "a list of \"Key=Value\" strings");
                        return;
                    };
                    let name = o.split_once('=').map(|(n, _)| n.trim()).unwrap_or("");
                    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric()) {
                        cx.err(key, format!("\"{o}\" is not of the form Key=Value"));
                    } else if SSH_OWNED_OPTIONS.contains(&name.to_ascii_lowercase().as_str()) {
                        cx.err(key, format!("\"{name}\" is set by ebb: host keys are always checked (use ssh_known_hosts for the file)"));
                    }
                }
            }
            None => bad(cx, "a list of \"Key=Value\" strings"),
        },
        _ => match v.as_str() {
            Some(s) if !s.trim().is_empty() => {}
            _ => bad(cx, "a non-empty string"),
        },
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
            "missing table [balancer] (driver = \"builtin\" | \"haproxy\" | \"nlb\" | \"command\")",
        );
    }
    let mut bal = Tbl::new(bal_t.unwrap_or(&empty), "balancer");
    let driver = if bal_t.is_some() {
        bal.req_str(
            cx,
            "driver",
            "one of \"builtin\", \"haproxy\", \"nlb\", \"command\"",
        )
    } else {
        None
    };
    if let Some(d) = &driver {
        if !["builtin", "haproxy", "nlb", "command"].contains(&d.as_str()) {
            cx.err(
                "balancer.driver",
                format!(
                    "expected one of \"builtin\", \"haproxy\", \"nlb\", \"command\", found \"{d}\""
                ),
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
        },
        waves,
    })
}

/// Names of the built-in stages, which user steps may not take.
pub const RESERVED_STEP_NAMES: &[&str] =
    &["drain", "hold", "verify", "reboot", "return", "pool-check"];

fn display_value(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => format!("\"{s}\""),
        other => other.to_string(),
    }
}

fn vars(cx: &mut Cx, t: &mut Tbl<'_>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let key = t.key("vars");
    if let Some(vt) = t.table(cx, "vars") {
        for (k, v) in vt {
            match v {
                toml::Value::String(s) => {
                    out.insert(k.clone(), s.clone());
                }
                toml::Value::Integer(_) | toml::Value::Float(_) | toml::Value::Boolean(_) => {
                    out.insert(k.clone(), v.to_string());
                }
                other => cx.err(
                    &format!("{key}.{k}"),
                    format!(
                        "expected a string, number or boolean, found {}",
                        type_name(other)
                    ),
                ),
            }
        }
    }
    out
}

fn check(cx: &mut Cx, t: &toml::Table, p: &str) -> Option<CheckSpec> {
    let mut c = Tbl::new(t, p);
    let name = c.req_str(cx, "name", "the check's name");
    let retries = c.uint(cx, "retries", 0).min(u32::MAX as u64) as u32;
    let interval = c.duration(cx, "interval", Duration::from_secs(2));
    let timeout = c.duration(cx, "timeout", Duration::from_secs(30));
    let command = c.str(cx, "command");
    let tcp = c.str(cx, "tcp");
    let http = c.table(cx, "http");
    let services = c.table(cx, "services");
    let logs = c.table(cx, "logs");
    let version = c.table(cx, "version");
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
        let mut st = Tbl::new(t, format!("{p}.services"));
        let running = st.strings(cx, "running").unwrap_or_default();
        let stopped = st.strings(cx, "stopped").unwrap_or_default();
        st.finish(cx, &[]);
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
        let mut vt = Tbl::new(t, format!("{p}.version"));
        let command = vt.req_str(
            cx,
            "command",
            "the command printing the version, e.g. command = \"myapp --version\"",
        );
        let equals = vt.str(cx, "equals");
        let at_least = vt.str(cx, "at_least");
        vt.finish(cx, &[]);
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
    c.finish(cx, &[]);
    Some(CheckSpec {
        name: name?,
        kind: kind?,
        retries,
        interval,
        timeout,
    })
}

fn http_check(cx: &mut Cx, h: &toml::Table, p: &str) -> Option<CheckKind> {
    let mut ht = Tbl::new(h, format!("{p}.http"));
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
    let ca_file = ht.str(cx, "ca_file").map(|f| {
        let f = PathBuf::from(f);
        match Path::new(&cx.file).parent() {
            Some(dir) if f.is_relative() => dir.join(f),
            _ => f,
        }
    });
    ht.finish(cx, &[]);
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

fn logs_check(cx: &mut Cx, t: &toml::Table, p: &str) -> Option<LogsSpec> {
    let key = format!("{p}.logs");
    let mut lt = Tbl::new(t, key.clone());
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
    lt.finish(cx, &[]);
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

fn valid_regex(cx: &mut Cx, key: &str, r: &str) {
    if let Err(e) = regex::Regex::new(r) {
        let first = e.to_string();
        let last = first.lines().last().unwrap_or("").trim().to_string();
        cx.err(
            key,
            format!("\"{r}\" is not a valid regular expression: {last}"),
        );
    }
}

/// The templates in a check, by key, for placeholder validation.
fn check_templates(kind: &CheckKind) -> Vec<(&'static str, String)> {
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

fn string_map(cx: &mut Cx, t: &mut Tbl<'_>, k: &'static str) -> BTreeMap<String, String> {
    let key = t.key(k);
    let mut out = BTreeMap::new();
    if let Some(mt) = t.table(cx, k) {
        for (name, v) in mt {
            match v.as_str() {
                Some(s) => {
                    out.insert(name.clone(), s.to_string());
                }
                None => cx.err(
                    &format!("{key}.{name}"),
                    format!("expected a string, found {}", type_name(v)),
                ),
            }
        }
    }
    out
}

fn http_url(cx: &mut Cx, key: &str, u: &Option<String>) {
    if let Some(u) = u {
        if !u.starts_with("http://") && !u.starts_with("https://") {
            cx.err(
                key,
                format!("expected an http:// or https:// URL, found \"{u}\""),
            );
        }
    }
}

/// `alertmanager = { ... }` or `webhook = { ... }` in a `[[runbook.step]]`.
fn maintenance(cx: &mut Cx, s: &mut Tbl<'_>) -> Option<MaintenanceSpec> {
    let am = s.table(cx, "alertmanager");
    let wh = s.table(cx, "webhook");
    if am.is_some() && wh.is_some() {
        cx.err(
            &s.path,
            "give either alertmanager = { ... } or webhook = { ... }, not both",
        );
        return None;
    }
    if let Some(t) = am {
        let key = s.key("alertmanager");
        let mut a = Tbl::new(t, key.clone());
        let url = a.req_str(
            cx,
            "url",
            "the Alertmanager, e.g. url = \"http://alertmanager:9093\"",
        );
        http_url(cx, &format!("{key}.url"), &url);
        let matchers = string_map(cx, &mut a, "matchers");
        if matchers.is_empty() {
            cx.err(
                &key,
                "a silence needs matchers, e.g. matchers = { instance = \"{address}\" }",
            );
        }
        let duration = a.duration(cx, "duration", Duration::from_secs(7200));
        let comment = a.str(cx, "comment");
        a.finish(cx, &[]);
        return Some(MaintenanceSpec::Alertmanager {
            url: url?,
            matchers,
            duration,
            comment,
        });
    }
    if let Some(t) = wh {
        let key = s.key("webhook");
        let mut w = Tbl::new(t, key.clone());
        let url = w.req_str(cx, "url", "the URL to call when maintenance begins");
        http_url(cx, &format!("{key}.url"), &url);
        let method = w.str(cx, "method").unwrap_or_else(|| "POST".into());
        if !["POST", "PUT", "GET", "DELETE", "PATCH"].contains(&method.as_str()) {
            cx.err(
                &format!("{key}.method"),
                format!("expected POST, PUT, PATCH, DELETE or GET, found \"{method}\""),
            );
        }
        let body = webhook_body(cx, &mut w, "body");
        let undo_url = w.str(cx, "undo_url");
        http_url(cx, &format!("{key}.undo_url"), &undo_url);
        let undo_body = webhook_body(cx, &mut w, "undo_body");
        let headers = string_map(cx, &mut w, "headers");
        w.finish(cx, &[]);
        return Some(MaintenanceSpec::Webhook {
            url: url?,
            method,
            body,
            undo_url,
            undo_body,
            headers,
        });
    }
    None
}

fn webhook_body(cx: &mut Cx, w: &mut Tbl<'_>, k: &'static str) -> Option<WebhookBody> {
    match w.get(k)? {
        toml::Value::String(s) => Some(WebhookBody::Text(s.clone())),
        v @ toml::Value::Table(_) => Some(WebhookBody::Json(v.clone())),
        other => {
            cx.err(
                &w.key(k),
                format!(
                    "expected a string or a table (sent as JSON), found {}",
                    type_name(other)
                ),
            );
            None
        }
    }
}

/// The strings inside a JSON body, for placeholder validation.
fn body_templates(b: &WebhookBody, out: &mut Vec<String>) {
    fn walk(v: &toml::Value, out: &mut Vec<String>) {
        match v {
            toml::Value::String(s) => out.push(s.clone()),
            toml::Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            toml::Value::Table(t) => t.values().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    match b {
        WebhookBody::Text(t) => out.push(t.clone()),
        WebhookBody::Json(v) => walk(v, out),
    }
}

/// The templates in a maintenance step, by key, for placeholder validation.
fn maintenance_templates(m: &MaintenanceSpec) -> Vec<(String, String)> {
    match m {
        MaintenanceSpec::Alertmanager {
            matchers, comment, ..
        } => {
            let mut v: Vec<(String, String)> = matchers
                .iter()
                .map(|(k, t)| (format!("alertmanager.matchers.{k}"), t.clone()))
                .collect();
            if let Some(c) = comment {
                v.push(("alertmanager.comment".into(), c.clone()));
            }
            v
        }
        MaintenanceSpec::Webhook {
            url,
            body,
            undo_url,
            undo_body,
            headers,
            ..
        } => {
            let mut v = vec![("webhook.url".to_string(), url.clone())];
            if let Some(u) = undo_url {
                v.push(("webhook.undo_url".to_string(), u.clone()));
            }
            for (k, b) in [("body", body), ("undo_body", undo_body)] {
                let mut ts = Vec::new();
                if let Some(b) = b {
                    body_templates(b, &mut ts);
                }
                v.extend(ts.into_iter().map(|t| (format!("webhook.{k}"), t)));
            }
            for (k, t) in headers {
                v.push((format!("webhook.headers.{k}"), t.clone()));
            }
            v
        }
    }
}

/// `[pool.gate]`.
fn gate(cx: &mut Cx, t: &toml::Table) -> Option<GateSpec> {
    let mut g = Tbl::new(t, "pool.gate");
    let url = g.req_str(
        cx,
        "alertmanager",
        "the Alertmanager to ask, e.g. alertmanager = \"http://alertmanager:9093\"",
    );
    http_url(cx, "pool.gate.alertmanager", &url);
    let matchers = string_map(cx, &mut g, "matchers");
    for (k, v) in &matchers {
        if let Some(r) = v.strip_prefix('~') {
            valid_regex(cx, &format!("pool.gate.matchers.{k}"), r);
        }
    }
    let timeout = g.duration(cx, "timeout", Duration::from_secs(1800));
    let poll_interval = g.duration(cx, "poll_interval", Duration::from_secs(15));
    g.finish(cx, &[]);
    Some(GateSpec {
        alertmanager: url?,
        matchers,
        timeout,
        poll_interval,
    })
}
