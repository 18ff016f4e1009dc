//! `ebb lb ...` subcommands: run the balancer, or control a running one the way the NLB
//! manager controls a cluster host.

use std::path::PathBuf;

use crate::client::{ClientError, ControlClient, InitialState, MemberStatus};
use crate::config::{LbConfig, DEFAULT_CONTROL};

/// `ebb lb` subcommands: run the balancer, or control a running one.
#[derive(Debug, clap::Subcommand)]
pub enum LbCommand {
    /// Run the built-in balancer for a pool file, until Ctrl-C or SIGTERM.
    ///
    /// It reads [balancer] and the [[member]] list of the pool file (the same file `ebb run`
    /// uses), listens on balancer.listen, serves the control API on balancer.control
    /// (default http://127.0.0.1:9900) and keeps each member's state and initial state in
    /// balancer.state_file so they survive a restart. Logs go to stderr (EBB_LOG=debug for
    /// more).
    Serve {
        /// The pool file, e.g. pool.toml.
        pool: PathBuf,
    },
    /// Show every member: state, initial state, health and connections.
    #[command(after_help = "Example: ebb lb status --control http://10.0.0.5:9900 --json")]
    Status {
        #[command(flatten)]
        control: ControlArgs,
        /// Print JSON ({"members":[...]}) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Drainstop a member: no new connections, existing ones go on.
    ///
    /// The member becomes stopped by itself when its last connection closes. Watch the
    /// count fall with `ebb lb status` (or GET /events on the control API).
    #[command(after_help = "Example: ebb lb drainstop web1 && ebb lb status")]
    Drainstop {
        /// The member's name in the balancer (lb_name, or name).
        member: String,
        #[command(flatten)]
        control: ControlArgs,
    },
    /// Stop a member now, closing its open connections.
    ///
    /// Clients of the member are cut off; prefer `drainstop` unless it is urgent.
    Stop {
        /// The member's name in the balancer (lb_name, or name).
        member: String,
        #[command(flatten)]
        control: ControlArgs,
    },
    /// Start a member: it takes new connections again.
    ///
    /// A member whose health checks fail gets no connections until they pass.
    Start {
        /// The member's name in the balancer (lb_name, or name).
        member: String,
        #[command(flatten)]
        control: ControlArgs,
    },
    /// Set a member's initial state (what it comes back as).
    ///
    /// The initial state is the state a member takes when it recovers from failed health
    /// checks and when the balancer restarts. `stopped` holds it out of service (e.g.
    /// across a reboot during an update) until someone starts it.
    #[command(
        after_help = "Example, as NLB's \"initial host state: stopped\" before patching:\n  ebb lb initial-state web1 stopped\n  ebb lb drainstop web1\n  ... patch, reboot, verify ...\n  ebb lb initial-state web1 started\n  ebb lb start web1"
    )]
    InitialState {
        /// The member's name in the balancer (lb_name, or name).
        member: String,
        /// `started` or `stopped`.
        #[arg(value_parser = ["started", "stopped"])]
        state: String,
        #[command(flatten)]
        control: ControlArgs,
    },
}

/// Where the running balancer's control API is.
#[derive(Debug, clap::Args)]
pub struct ControlArgs {
    /// The control API of the running balancer (its balancer.control). Default: the
    /// --pool file's balancer.control, else $EBB_LB_CONTROL, else http://127.0.0.1:9900.
    #[arg(long, value_name = "URL")]
    pub control: Option<String>,
    /// Bearer token, if the balancer has balancer.token set. Default: the --pool file's
    /// balancer.token, else $EBB_LB_TOKEN.
    #[arg(long)]
    pub token: Option<String>,
    /// The pool file the balancer serves: its [balancer] control and token are used
    /// (--control and --token still win).
    #[arg(long, value_name = "FILE")]
    pub pool: Option<PathBuf>,
}

/// Environment variable naming the control API when neither --control nor --pool does.
pub const CONTROL_ENV: &str = "EBB_LB_CONTROL";

impl ControlArgs {
    /// The control URL and token to use: the flags, then the pool file's `[balancer]`
    /// (`control`, `token`), then `EBB_LB_CONTROL` / `EBB_LB_TOKEN`, then the default URL.
    /// A pool file that cannot be read or is not the built-in balancer's is an error
    /// naming the file, line and key.
    pub fn resolve(&self) -> Result<(String, Option<String>), String> {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let (file_control, file_token) = match &self.pool {
            Some(path) => {
                let c = LbConfig::from_pool_file(path).map_err(|errs| {
                    format!(
                        "{errs}\nebb lb: --pool {}: cannot take the control API from it (give --control URL instead)",
                        path.display()
                    )
                })?;
                (Some(format!("http://{}", c.control)), c.token)
            }
            None => (None, env(crate::config::TOKEN_ENV)),
        };
        let control = self
            .control
            .clone()
            .or(file_control)
            .or_else(|| env(CONTROL_ENV))
            .unwrap_or_else(|| DEFAULT_CONTROL.to_string());
        Ok((control, self.token.clone().or(file_token)))
    }
}

/// Runs an `ebb lb` subcommand; returns the process exit code (0 ok, 1 the operation
/// failed, 2 bad input or usage).
pub fn run(cmd: LbCommand) -> i32 {
    match cmd {
        LbCommand::Serve { pool } => serve_command(pool),
        LbCommand::Status { control, json } => control_command(
            &control,
            |c| async move { c.members().await },
            |members| {
                if json {
                    print_json(&crate::status::Members {
                        members,
                        cursor: None,
                    });
                } else {
                    print_table(&members);
                }
            },
        ),
        LbCommand::Drainstop { member, control } => control_command(
            &control,
            |c| async move { c.drainstop(&member).await },
            print_one,
        ),
        LbCommand::Stop { member, control } => control_command(
            &control,
            |c| async move { c.stop(&member).await },
            print_one,
        ),
        LbCommand::Start { member, control } => control_command(
            &control,
            |c| async move { c.start(&member).await },
            print_one,
        ),
        LbCommand::InitialState {
            member,
            state,
            control,
        } => {
            let Some(state) = InitialState::parse(&state) else {
                ebb_out::errln!(
                    "ebb lb initial-state: expected `started` or `stopped`, found {state:?}"
                );
                return 2;
            };
            control_command(
                &control,
                |c| async move { c.set_initial_state(&member, state).await },
                print_one,
            )
        }
    }
}

fn serve_command(pool: PathBuf) -> i32 {
    use std::io::IsTerminal;
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("EBB_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .try_init();
    let config = match LbConfig::from_pool_file(&pool) {
        Ok(c) => c,
        Err(errs) => {
            ebb_out::errln!("{errs}");
            return 2;
        }
    };
    // Single-threaded: this thread serves one share of the connections (with the control
    // API and the health checks), and the server starts a thread of its own for each
    // other core (see `Server::run`).
    let Some(rt) = runtime("ebb lb serve") else {
        return 1;
    };
    rt.block_on(async move {
        let server = match crate::Server::bind(config).await {
            Ok(s) => s,
            Err(e) => {
                ebb_out::errln!("ebb lb serve: {e:#}");
                return 2;
            }
        };
        let listen: Vec<String> = server
            .listen_addrs()
            .iter()
            .map(|a| a.to_string())
            .collect();
        ebb_out::outln!(
            "ebb lb: listening on {}; control API {}",
            listen.join(", "),
            server.control_url()
        );
        use std::io::Write;
        let _ = std::io::stdout().flush();
        match server.run(shutdown_signal()).await {
            Ok(()) => 0,
            Err(e) => {
                ebb_out::errln!("ebb lb serve: {e:#}");
                1
            }
        }
    })
}

/// A single-threaded runtime for a command; says why on stderr if there is none.
fn runtime(command: &str) -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => Some(rt),
        Err(e) => {
            ebb_out::errln!("{command}: cannot start the async runtime: {e}");
            None
        }
    }
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn control_command<T, F, Fut>(args: &ControlArgs, op: F, print: impl FnOnce(T)) -> i32
where
    F: FnOnce(ControlClient) -> Fut,
    Fut: std::future::Future<Output = Result<T, ClientError>>,
{
    let (control, token) = match args.resolve() {
        Ok(x) => x,
        Err(e) => {
            ebb_out::errln!("{e}");
            return 2;
        }
    };
    let client = match ControlClient::new(&control, token) {
        Ok(c) => c,
        Err(e) => {
            ebb_out::errln!("ebb lb: {e}");
            return 2;
        }
    };
    let Some(rt) = runtime("ebb lb") else {
        return 1;
    };
    match rt.block_on(op(client)) {
        Ok(v) => {
            print(v);
            0
        }
        Err(e) => {
            ebb_out::errln!("ebb lb: {e}");
            if e.is_bad_input() {
                2
            } else {
                1
            }
        }
    }
}

fn print_json(v: &impl serde::Serialize) {
    ebb_out::outln!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

fn print_one(m: MemberStatus) {
    print_table(std::slice::from_ref(&m));
}

fn print_table(members: &[MemberStatus]) {
    for line in table_lines(members) {
        ebb_out::outln!("{line}");
    }
}

/// `ebb lb status` as text: a header and a row per member, columns padded to line up.
fn table_lines(members: &[MemberStatus]) -> Vec<String> {
    let header = [
        "MEMBER",
        "ADDRESS",
        "WEIGHT",
        "STATE",
        "INITIAL",
        "HEALTH",
        "ACTIVE",
        "TOTAL",
        "CONNECT ERRORS",
        "RESETS",
        "BYTES IN",
        "BYTES OUT",
    ];
    let rows: Vec<[String; 12]> = members
        .iter()
        .map(|m| {
            [
                m.name.clone(),
                m.address.clone(),
                m.weight.to_string(),
                m.state.to_string(),
                m.initial_state.to_string(),
                m.health.to_string(),
                m.active_connections.to_string(),
                m.total_connections.to_string(),
                m.connect_failures.to_string(),
                m.resets.to_string(),
                m.bytes_in.to_string(),
                m.bytes_out.to_string(),
            ]
        })
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let parts: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        parts.join("  ").trim_end().to_string()
    };
    std::iter::once(line(header.to_vec()))
        .chain(
            rows.iter()
                .map(|r| line(r.iter().map(String::as_str).collect())),
        )
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::{Health, HostState};

    #[test]
    fn the_status_table_shows_each_members_error_counters() {
        let member = |name: &str, connect_failures, resets| MemberStatus {
            name: name.into(),
            address: "10.0.0.1:80".into(),
            weight: 1,
            state: HostState::Started,
            initial_state: InitialState::Started,
            health: Health::Up,
            active_connections: 2,
            total_connections: 40,
            bytes_in: 1200,
            bytes_out: 56000,
            connect_failures,
            resets,
        };
        let lines = table_lines(&[member("web1", 3, 0), member("web2", 0, 17)]);
        let cols = |l: &str| {
            l.split("  ")
                .filter(|c| !c.is_empty())
                .map(str::trim)
                .map(String::from)
                .collect::<Vec<_>>()
        };
        let header = cols(&lines[0]);
        let at = |name: &str| {
            header
                .iter()
                .position(|h| h == name)
                .unwrap_or_else(|| panic!("no {name} column in {header:?}"))
        };
        let (errors, resets) = (at("CONNECT ERRORS"), at("RESETS"));
        assert_eq!(cols(&lines[1])[errors], "3", "{lines:?}");
        assert_eq!(cols(&lines[1])[resets], "0", "{lines:?}");
        assert_eq!(cols(&lines[2])[errors], "0", "{lines:?}");
        assert_eq!(cols(&lines[2])[resets], "17", "{lines:?}");
        // Every row lines up under the header.
        let start = lines[0].find("RESETS").unwrap();
        assert!(
            lines
                .iter()
                .skip(1)
                .all(|l| l[start..].starts_with(|c: char| c.is_ascii_digit())),
            "{lines:?}"
        );
    }
}
