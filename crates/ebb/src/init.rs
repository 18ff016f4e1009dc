//! `ebb init`: a first pool file written from what a balancer already knows (its members
//! and their addresses), with the balancer section filled in and a commented runbook
//! skeleton (drain, one step, reboot, verify) that `ebb check` and `ebb plan` accept.
//!
//! The file is validated by the engine's own reader before it is written, and an existing
//! file is never overwritten.

use crate::locate::EXIT_USAGE;
use clap::Args;
use ebb_drivers::discover::{self, Found};
use std::io::Write;
use std::path::{Path, PathBuf};

/// `ebb init --from KIND SOURCE [POOL]`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// Where the members come from: `haproxy SOCKET` (with --backend), `builtin
    /// CONTROL_URL`, `nginx UPSTREAM_FILE`, `nlb HOST` (over ssh, PowerShell).
    #[arg(long, num_args = 2, value_names = ["KIND", "SOURCE"], required = true)]
    pub from: Vec<String>,
    /// haproxy: the backend whose servers are the members.
    #[arg(long, value_name = "NAME")]
    pub backend: Option<String>,
    /// The pool's name (default: the backend, or the file's name).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// builtin: the control API's token; read from the environment when not given, and
    /// never written to the file.
    #[arg(long, env = "EBB_LB_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// nlb: the ssh login on the NLB hosts (written to `[defaults]`).
    #[arg(long, value_name = "USER")]
    pub ssh_user: Option<String>,
    /// nlb: the NLB interface (`-InterfaceName`), for hosts in several clusters.
    #[arg(long, value_name = "NAME")]
    pub interface: Option<String>,
    /// The pool file to write; an existing file is never overwritten.
    #[arg(default_value = "pool.toml")]
    pub pool: PathBuf,
}

/// The balancer a pool file is started from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// HAProxy's runtime API and a backend.
    Haproxy { socket: String, backend: String },
    /// ebb's built-in balancer's control API.
    Builtin { control: String },
    /// The nginx upstream file holding the members' `server` lines (on this machine).
    Nginx { upstream_file: PathBuf },
    /// A Windows NLB cluster, read on one of its hosts.
    Nlb {
        host: String,
        ssh_user: Option<String>,
        interface: Option<String>,
    },
}

/// Runs `ebb init`.
pub fn main(args: InitArgs) -> i32 {
    let source = match source(&args) {
        Ok(s) => s,
        Err(e) => {
            ebb_out::errln!("ebb init: {e}");
            return EXIT_USAGE;
        }
    };
    // Refuse before asking the balancer anything; the write below refuses again
    // (create_new) in case the file appears meanwhile.
    if args.pool.exists() {
        ebb_out::errln!(
            "ebb init: {} already exists; ebb init never overwrites a file (name another, or move it away)",
            args.pool.display()
        );
        return EXIT_USAGE;
    }
    let rt = match crate::commands::runtime(tokio::runtime::Builder::new_current_thread()) {
        Ok(rt) => rt,
        Err(c) => return c,
    };
    let found = match rt.block_on(discover(&source, &args)) {
        Ok(f) => f,
        Err(e) => {
            ebb_out::errln!("ebb init: {e}");
            return 1;
        }
    };
    let name = pool_name(args.name.as_deref(), &source, &args.pool);
    let text = render(&Skeleton {
        name: &name,
        source: &source,
        found: &found,
        command_line: &command_line(&args),
        file: &args.pool.display().to_string(),
    });
    // Our own reader must accept what we write: a failure here is a bug in ebb init.
    if let Err(errs) = ebb_engine::config::parse(&text, &args.pool, &ebb_drivers::registry()) {
        ebb_out::errln!("ebb init: the generated file does not validate (a bug in ebb):\n{errs}");
        return 1;
    }
    match write_new(&args.pool, &text) {
        Ok(()) => {
            ebb_out::errln!(
                "ebb init: wrote {} with {} member(s) from {}; next: fill in the runbook, then `ebb check {0}` and `ebb plan {0}`",
                args.pool.display(),
                found.len(),
                source.kind(),
            );
            0
        }
        Err(e) => {
            ebb_out::errln!("ebb init: {e}");
            EXIT_USAGE
        }
    }
}

impl Source {
    fn kind(&self) -> &'static str {
        match self {
            Source::Haproxy { .. } => "haproxy",
            Source::Builtin { .. } => "builtin",
            Source::Nginx { .. } => "nginx",
            Source::Nlb { .. } => "nlb",
        }
    }
}

fn source(args: &InitArgs) -> Result<Source, String> {
    let [kind, value] = args.from.as_slice() else {
        return Err("--from takes two values: KIND SOURCE".into());
    };
    let unused = |flag: &str, given: bool| {
        if given {
            Err(format!("{flag} does not apply to --from {kind}"))
        } else {
            Ok(())
        }
    };
    match kind.as_str() {
        "haproxy" => {
            unused("--ssh-user", args.ssh_user.is_some())?;
            unused("--interface", args.interface.is_some())?;
            let backend = args.backend.clone().ok_or(
                "--from haproxy needs --backend NAME (the backend whose servers are the members)",
            )?;
            Ok(Source::Haproxy {
                socket: value.clone(),
                backend,
            })
        }
        "builtin" => {
            unused("--backend", args.backend.is_some())?;
            unused("--ssh-user", args.ssh_user.is_some())?;
            unused("--interface", args.interface.is_some())?;
            Ok(Source::Builtin {
                control: value.clone(),
            })
        }
        "nginx" => {
            unused("--backend", args.backend.is_some())?;
            unused("--ssh-user", args.ssh_user.is_some())?;
            unused("--interface", args.interface.is_some())?;
            // The driver reads the file from the pool file's directory (local transport):
            // an absolute path keeps it right wherever the pool file is written.
            let path = PathBuf::from(value);
            let upstream_file = std::fs::canonicalize(&path)
                .map_err(|e| format!("--from nginx {value}: {e}"))?;
            Ok(Source::Nginx { upstream_file })
        }
        "nlb" => {
            unused("--backend", args.backend.is_some())?;
            Ok(Source::Nlb {
                host: value.clone(),
                ssh_user: args.ssh_user.clone(),
                interface: args.interface.clone(),
            })
        }
        other => Err(format!(
            "--from {other}: expected haproxy SOCKET, builtin CONTROL_URL, nginx UPSTREAM_FILE or nlb HOST"
        )),
    }
}

async fn discover(source: &Source, args: &InitArgs) -> Result<Vec<Found>, String> {
    match source {
        Source::Haproxy { socket, backend } => {
            discover::haproxy(socket, backend).await.map_err(|e| {
                format!("cannot read backend \"{backend}\" from HAProxy at {socket}: {e}")
            })
        }
        Source::Builtin { control } => discover::builtin(control, args.token.clone())
            .await
            .map_err(|e| format!("cannot read the members of the balancer at {control}: {e}")),
        Source::Nginx { upstream_file } => {
            let (found, skipped) = discover::nginx(upstream_file)?;
            for s in skipped {
                ebb_out::errln!(
                    "ebb init: left out {s}: ebb cannot reach a member on a unix socket"
                );
            }
            Ok(found)
        }
        Source::Nlb { host, .. } => {
            let probe = nlb_probe(source);
            let plan = ebb_engine::config::parse(&probe, &args.pool, &ebb_drivers::registry())
                .map_err(|e| format!("--from nlb {host}: {e}"))?;
            discover::nlb(&plan)
                .await
                .map_err(|e| format!("cannot read the NLB cluster on {host}: {e}"))
        }
    }
}

/// A pool file with the NLB host as its only member: the ssh settings to reach it, read by
/// the same reader as any pool file.
fn nlb_probe(source: &Source) -> String {
    let Source::Nlb {
        host,
        ssh_user,
        interface,
    } = source
    else {
        return String::new();
    };
    let mut t = format!(
        "[pool]\nname = \"init\"\n\n[balancer]\ndriver = \"nlb\"\n{}\n[defaults]\ntransport = \"ssh\"\nshell = \"powershell\"\n{}\n[[member]]\nname = \"probe\"\naddress = {}\n",
        interface
            .as_deref()
            .map(|i| format!("interface = {}\n", q(i)))
            .unwrap_or_default(),
        ssh_user
            .as_deref()
            .map(|u| format!("ssh_user = {}\n", q(u)))
            .unwrap_or_default(),
        q(host),
    );
    t.push('\n');
    t
}

/// The pool's name: given, or the backend, or the file's stem; made of the characters a
/// pool name may hold.
fn pool_name(given: Option<&str>, source: &Source, file: &Path) -> String {
    let raw = match (given, source) {
        (Some(n), _) => n.to_string(),
        (None, Source::Haproxy { backend, .. }) => backend.clone(),
        (None, _) => file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .filter(|s| s != "pool")
            .unwrap_or_else(|| "pool".into()),
    };
    let name: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    if name.is_empty() {
        "pool".into()
    } else {
        name
    }
}

/// How the file was made, for its first comment (the token is never repeated).
fn command_line(args: &InitArgs) -> String {
    let mut s = format!("ebb init --from {}", args.from.join(" "));
    for (flag, v) in [
        ("--backend", &args.backend),
        ("--name", &args.name),
        ("--ssh-user", &args.ssh_user),
        ("--interface", &args.interface),
    ] {
        if let Some(v) = v {
            s += &format!(" {flag} {v}");
        }
    }
    s
}

/// A TOML string.
fn q(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// Creates `path` with `text`; fails if it exists.
fn write_new(path: &Path, text: &str) -> Result<(), String> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                format!(
                    "{} already exists; ebb init never overwrites a file",
                    path.display()
                )
            } else {
                format!("cannot create {}: {e}", path.display())
            }
        })?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// What the pool file is made from.
pub struct Skeleton<'a> {
    pub name: &'a str,
    pub source: &'a Source,
    pub found: &'a [Found],
    pub command_line: &'a str,
    /// The file's name, for the commands in its first comment.
    pub file: &'a str,
}

/// The pool file text.
pub fn render(s: &Skeleton) -> String {
    let n = s.found.len();
    let mut t = format!(
        "# A first pool file, written by `{}`.\n\
# The members are those the balancer knows; the runbook below is a skeleton to fill in.\n\
#   ebb check {file}   # validate; ask the balancer for every member's state\n\
#   ebb plan {file}    # what each member will go through, in order\n\
# Every key is described in docs/pool-file.md.\n\n",
        s.command_line,
        file = s.file,
    );
    t += &format!(
        "[pool]\nname = {}\nmax_unavailable = 1          # members out of service at once\n\
min_in_service = {}           # never drain one while fewer would stay in service\n\
capacity_wait = \"5m\"         # wait this long for the policy to allow a drain, then stop (exit 1)\n\n",
        q(s.name),
        n.saturating_sub(1)
    );
    t += &balancer_section(s.source);
    t += &defaults_section(s.source);
    for f in s.found {
        t += &format!(
            "[[member]]\nname = {}\naddress = {}\n",
            q(&f.name),
            q(&f.address)
        );
        if let Some(w) = f.weight {
            t += &format!("weight = {w}\n");
        }
        if f.down {
            t += "# marked `down` in the balancer now: ebb check shows it out of service\n";
        }
        t += "\n";
    }
    let powershell = matches!(s.source, Source::Nlb { .. });
    t += RUNBOOK_DRAIN;
    t += if powershell {
        RUNBOOK_STEP_POWERSHELL
    } else {
        RUNBOOK_STEP_SH
    };
    t += if powershell {
        VERIFY_POWERSHELL
    } else if s.found.iter().all(|f| has_port(&f.address)) {
        VERIFY_TCP
    } else {
        VERIFY_SH
    };
    t
}

fn has_port(address: &str) -> bool {
    address
        .rsplit_once(':')
        .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
}

fn balancer_section(source: &Source) -> String {
    match source {
        Source::Haproxy { socket, backend } => format!(
            "[balancer]\ndriver = \"haproxy\"\n\
# the runtime API (a unix socket or tcp://HOST:PORT), at level admin\nsocket = {}\n\
# a member's lb_name (default: its name) is its server in this backend\nbackend = {}\n\
# HAProxy's server-state-file: with it a reload keeps a held member out (docs/haproxy.md)\n\
# state_file = \"/var/lib/haproxy/server-state\"\n\
start_timeout = \"60s\"        # how long a start waits for the server to be UP\n\n",
            q(socket),
            q(backend)
        ),
        Source::Builtin { control } => format!(
            "[balancer]\ndriver = \"builtin\"\n# the balancer's control API; its token: set EBB_LB_TOKEN (kept out of this file)\ncontrol = {}\n\n",
            q(control)
        ),
        Source::Nginx { upstream_file } => format!(
            "[balancer]\ndriver = \"nginx\"\n# the included file holding the upstream's server lines (ebb toggles `down` there)\n\
upstream_file = {}\n\
# test = \"nginx -t\"              # must fail when the configuration is broken\n\
# reload = \"nginx -s reload\"     # a graceful reload\n\
# transport = \"local\"            # ebb runs on the nginx host; or \"ssh\" with ssh_host\n\n",
            q(&upstream_file.display().to_string())
        ),
        Source::Nlb { interface, .. } => {
            let mut b = String::from(
                "[balancer]\ndriver = \"nlb\"              # the NLB cmdlets, run on each member over ssh\n",
            );
            match interface {
                Some(i) => b += &format!("interface = {}\n", q(i)),
                None => b += "# interface = \"NLB\"        # -InterfaceName, for hosts in several clusters\n",
            }
            b += "converge_timeout = \"2m\"      # wait for the cluster to converge after a start\n\n";
            b
        }
    }
}

fn defaults_section(source: &Source) -> String {
    match source {
        Source::Nlb { ssh_user, .. } => format!(
            "[defaults]\ntransport = \"ssh\"            # OpenSSH server on each Windows member\nshell = \"powershell\"\n{}\n",
            match ssh_user {
                Some(u) => format!("ssh_user = {}\n", q(u)),
                None => "# ssh_user = \"CORP\\\\admin\"\n".into(),
            }
        ),
        _ => "[defaults]\ntransport = \"ssh\"            # ebb logs in to each member to run the runbook\n\
# ssh_user = \"deploy\"          # with passwordless sudo for the commands below\n\n"
            .into(),
    }
}

const RUNBOOK_DRAIN: &str = "\
# The runbook, applied to each member in turn: drain, the steps (and a reboot), verify,
# then return to service. The steps run only once the member is out of service.
[runbook.drain]
mode = \"drainstop\"           # existing connections finish; \"stop\" cuts them now
timeout = \"10m\"
on_timeout = \"stop\"          # or \"abort\" (the member stays out) | \"wait\"
hold = true                  # keep it out of service across reboots; restored on return

";

const RUNBOOK_STEP_SH: &str = "\
# One step: put your update here. `when = \"never\"` keeps it from running until you have:
# delete that line and `ebb plan` shows it. A step with `undo = \"...\"` is paired: its undo
# is owed until the member returns.
[[runbook.step]]
name = \"update\"
run = \"sudo apt-get update -q && sudo DEBIAN_FRONTEND=noninteractive apt-get -y -q dist-upgrade\"
timeout = \"30m\"
when = \"never\"
reboot = \"always\"            # or \"if-required\" (with reboot_required_exit_codes), \"never\"

# A reboot is done when the member answers with a new boot identity.
[runbook.reboot]
command = \"sudo systemctl reboot\"
timeout = \"15m\"

";

const RUNBOOK_STEP_POWERSHELL: &str = "\
# One step: put your update here. `when = \"never\"` keeps it from running until you have:
# delete that line and `ebb plan` shows it. Exit code 3010 means \"reboot required\".
[[runbook.step]]
name = \"update\"
run = \"& 'C:\\\\Updates\\\\install.ps1'\"
timeout = \"1h\"
when = \"never\"
idempotent = false
reboot = \"if-required\"
reboot_required_exit_codes = [3010]

# A reboot is done when the member answers with a new boot identity (its last boot time).
[runbook.reboot]
command = \"Restart-Computer -Force\"
timeout = \"30m\"

";

const VERIFY_TCP: &str = "\
# A member returns to service only after every verify check passes.
[[runbook.verify]]
name = \"port\"
tcp = \"{address}\"
retries = 10
interval = \"3s\"
";

const VERIFY_SH: &str = "\
# A member returns to service only after every verify check passes.
[[runbook.verify]]
name = \"no failed units\"
command = \"test -z \\\"$(systemctl list-units --state=failed --no-legend)\\\"\"
retries = 5
interval = \"3s\"
";

const VERIFY_POWERSHELL: &str = "\
# A member returns to service only after every verify check passes: name the services
# your members must run.
[[runbook.verify]]
name = \"services\"
services = { running = [\"W3SVC\"] }
retries = 10
interval = \"30s\"
";

#[cfg(test)]
mod tests {
    use super::*;

    fn found(names: &[(&str, &str)]) -> Vec<Found> {
        names
            .iter()
            .map(|(n, a)| Found {
                name: n.to_string(),
                address: a.to_string(),
                weight: None,
                down: false,
            })
            .collect()
    }

    fn validates(source: Source, found: &[Found]) -> ebb_engine::plan::Plan {
        let text = render(&Skeleton {
            name: "web",
            source: &source,
            found,
            command_line: "ebb init",
            file: "pool.toml",
        });
        ebb_engine::config::parse(&text, Path::new("pool.toml"), &ebb_drivers::registry())
            .unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    #[test]
    fn nlb_skeleton_is_a_valid_powershell_pool() {
        let plan = validates(
            Source::Nlb {
                host: "cas1".into(),
                ssh_user: Some("CORP\\admin".into()),
                interface: Some("NLB 1".into()),
            },
            &found(&[("CAS1", "CAS1"), ("CAS2", "CAS2")]),
        );
        assert_eq!(plan.balancer.driver, "nlb");
        assert_eq!(plan.members.len(), 2);
        assert!(plan
            .members
            .iter()
            .all(|m| m.shell == ebb_engine::plan::Shell::PowerShell && m.transport == "ssh"));
        ebb_drivers::build(&plan).unwrap_or_else(|e| panic!("{e:?}"));
    }

    #[test]
    fn members_without_a_port_get_a_command_check() {
        let plan = validates(
            Source::Haproxy {
                socket: "/run/haproxy/admin.sock".into(),
                backend: "web".into(),
            },
            &found(&[("web1", "10.0.0.1"), ("web2", "10.0.0.2:80")]),
        );
        assert_eq!(plan.pool.min_in_service, 1);
    }

    #[test]
    fn pool_names_are_made_valid() {
        let s = Source::Builtin {
            control: "http://127.0.0.1:9900".into(),
        };
        assert_eq!(pool_name(None, &s, Path::new("my pool.toml")), "my-pool");
        assert_eq!(pool_name(None, &s, Path::new("pool.toml")), "pool");
        assert_eq!(pool_name(Some("a/b"), &s, Path::new("x.toml")), "a-b");
    }
}
