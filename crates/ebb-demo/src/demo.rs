//! `ebb demo`: puts the pieces together.
//!
//! 1. a working directory with the pool file, logs and the engine's state dir;
//! 2. the members (through the [`Supervisor`]) and the balancer (`ebb lb serve`);
//! 3. client traffic and the balancer watcher, then the rollout (`ebb run --json`);
//! 4. the proof: client numbers, the most members out at once, every member's version;
//!    the traffic timeline for `ebb report`; then everything is stopped (or kept with
//!    `--keep` until Ctrl-C). Ctrl-C at any point stops every process the demo started.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::process::Command;
use tokio::signal::unix::{signal, SignalKind};

use crate::pool_file::{self, PoolSpec};
use crate::procs::Processes;
use crate::rollout::{self, RolloutPaths, RolloutView};
use crate::summary::{MemberVersion, Summary};
use crate::supervisor::{Supervisor, SupervisorConfig};
use crate::traffic::{unix_ms, Traffic, TrafficConfig};
use crate::watch::Watcher;
use crate::DemoArgs;

/// The version the members start with, and the one the rollout installs.
const OLD_VERSION: &str = "1.0";
const NEW_VERSION: &str = "1.1";
/// Traffic before the rollout starts and after it ends, so the timeline shows both sides.
const WARM_UP: Duration = Duration::from_secs(2);
const COOL_DOWN: Duration = Duration::from_secs(2);
/// How long the balancer may take to come up and to see every member healthy.
const LB_START_TIMEOUT: Duration = Duration::from_secs(15);

/// Runs the demo; returns the exit code.
pub fn run(args: DemoArgs) -> i32 {
    let runtime = match crate::runtime() {
        Ok(rt) => rt,
        Err(e) => {
            ebb_out::errln!("ebb demo: {e:#}");
            return 1;
        }
    };
    runtime.block_on(async {
        let procs = Arc::new(Processes::new());
        // Listen for Ctrl-C before the first child exists.
        let mut stop_signals = match StopSignals::new() {
            Ok(s) => s,
            Err(e) => {
                ebb_out::errln!("ebb demo: {e:#}");
                return 1;
            }
        };
        let outcome = tokio::select! {
            result = demo(&args, procs.clone()) => Some(result),
            name = stop_signals.next() => {
                ebb_out::errln!("\nebb demo: {name}: stopping every process the demo started");
                None
            }
        };
        let code = match outcome {
            None => 130,
            Some(Err(e)) => {
                ebb_out::errln!("ebb demo: {e:#}");
                1
            }
            Some(Ok(summary)) => {
                if args.keep {
                    let name = stop_signals.next().await;
                    ebb_out::errln!("\nebb demo: {name}: stopping the balancer and the members");
                }
                if summary.ok {
                    0
                } else {
                    1
                }
            }
        };
        procs.kill_all(Duration::from_millis(1500)).await;
        code
    })
}

/// SIGINT and SIGTERM.
struct StopSignals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn new() -> anyhow::Result<Self> {
        Ok(Self {
            interrupt: signal(SignalKind::interrupt()).context("cannot watch SIGINT")?,
            terminate: signal(SignalKind::terminate()).context("cannot watch SIGTERM")?,
        })
    }

    async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.interrupt.recv() => "interrupted",
            _ = self.terminate.recv() => "terminated",
        }
    }
}

/// The demo's files.
struct Layout {
    dir: PathBuf,
    pool: PathBuf,
    state: PathBuf,
    logs: PathBuf,
}

impl Layout {
    fn create(requested: Option<&Path>) -> anyhow::Result<Self> {
        let dir = match requested {
            Some(dir) => dir.to_path_buf(),
            None => {
                std::env::temp_dir().join(format!("ebb-demo-{}-{}", std::process::id(), unix_ms()))
            }
        };
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let dir = dir
            .canonicalize()
            .with_context(|| format!("cannot resolve {}", dir.display()))?;
        let state = dir.join("state");
        if state.exists() {
            // An earlier demo in the same dir: keep its journal, but start a fresh one.
            let old = dir.join(format!("state.{}", unix_ms()));
            std::fs::rename(&state, &old)
                .with_context(|| format!("cannot move the old {} aside", state.display()))?;
        }
        // A fresh pool: boot ids, maintenance markers and the balancer's persisted member
        // states of an earlier demo in the same dir (possibly interrupted) would mislead.
        let _ = std::fs::remove_file(dir.join("lb-state.json"));
        for sub in ["boot", "logs", "maintenance"] {
            let path = dir.join(sub);
            if sub != "logs" {
                let _ = std::fs::remove_dir_all(&path);
            }
            std::fs::create_dir_all(&path)
                .with_context(|| format!("cannot create {}", path.display()))?;
        }
        Ok(Self {
            pool: dir.join("pool.toml"),
            logs: dir.join("logs"),
            state,
            dir,
        })
    }
}

async fn demo(args: &DemoArgs, procs: Arc<Processes>) -> anyhow::Result<Summary> {
    let demo_started = unix_ms();
    let layout = Layout::create(args.dir.as_deref())?;
    let exe = std::env::current_exe().context("cannot find the ebb binary to re-run")?;

    let PoolSpec {
        listen,
        control,
        members,
        ..
    } = write_pool_file(args, &layout, &exe)?;

    let supervisor = Supervisor::new(
        SupervisorConfig {
            exe: exe.clone(),
            dir: layout.dir.clone(),
            install_time: args.install_time,
            reboot_time: args.reboot_time,
            stream_time: args.stream_time,
        },
        procs.clone(),
        &members,
        OLD_VERSION,
    );
    let _ctl_server = supervisor.serve().await?;
    supervisor.start_all().await?;

    start_balancer(&exe, &layout, &control, &procs).await?;
    let watcher = Watcher::start(format!("http://{control}"));
    wait_for_pool(&watcher, members.len()).await?;

    let traffic = Traffic::start(TrafficConfig {
        target: listen.clone(),
        rate: args.rate,
        streams: args.streams,
        stream_time: args.stream_time,
        request_timeout: Duration::from_secs(5),
    });
    let rollout_view = Arc::new(Mutex::new(RolloutView::default()));
    let (lines_tx, lines_rx) = tokio::sync::mpsc::unbounded_channel();
    let (stop_view, view_stopped) = tokio::sync::watch::channel(false);
    let display = tokio::spawn(crate::progress::run(
        crate::progress::Sources {
            supervisor: supervisor.clone(),
            pool: watcher.shared(),
            traffic: traffic.stats(),
            rollout: rollout_view.clone(),
        },
        lines_rx,
        view_stopped,
        demo_started,
    ));

    tokio::time::sleep(WARM_UP).await;
    watcher.arm();
    let rollout_started = unix_ms();
    let rollout = rollout::run(
        RolloutPaths {
            exe: &exe,
            pool: &layout.pool,
            state_dir: &layout.state,
            log: &layout.logs.join("run.log"),
        },
        &procs,
        rollout_view.clone(),
        Some(lines_tx),
        args.timeout,
    )
    .await;
    let rollout_ms = unix_ms().saturating_sub(rollout_started);
    tokio::time::sleep(COOL_DOWN).await;

    let stats = traffic.stop().await;
    let pool_view = watcher.stop().await;
    let _ = stop_view.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(2), display).await;

    let rollout_exit_code = match rollout {
        Ok(code) => Some(code),
        Err(e) => {
            ebb_out::errln!("ebb demo: {e:#}");
            None
        }
    };
    if rollout_exit_code != Some(0) {
        print_log_tail(&layout.logs.join("run.log"));
    }

    let mut versions = Vec::new();
    for (name, address) in &members {
        versions.push(MemberVersion {
            name: name.clone(),
            version: member_version(address).await,
        });
    }
    write_traffic_timeline(&layout.state, &stats.samples(), &pool_view)?;

    let t = stats.snapshot();
    let rollout_state = rollout_view.lock().ok().and_then(|v| v.final_state.clone());
    let mut summary = Summary {
        ok: false,
        drain_mode: args.drain_mode.clone(),
        requests: t.requests,
        failed: t.failed,
        cut_connections: t.cut,
        streams_completed: t.streams_completed,
        p50_ms: round2(t.p50_ms),
        p99_ms: round2(t.p99_ms),
        max_ms: round2(t.max_ms),
        max_out_of_service: pool_view.max_out_of_service,
        members: versions,
        rollout_exit_code,
        rollout_state,
        rollout_ms,
        duration_ms: unix_ms().saturating_sub(demo_started),
        dir: layout.dir.display().to_string(),
        state_dir: layout.state.display().to_string(),
        problems: Vec::new(),
        recent_errors: t.recent_errors.clone(),
    };
    summary.judge(NEW_VERSION);
    print_summary(args, &summary, &exe, &layout, &listen, &control);
    Ok(summary)
}

/// Writes the pool file (members and balancer on free loopback ports) and says what runs.
fn write_pool_file(args: &DemoArgs, layout: &Layout, exe: &Path) -> anyhow::Result<PoolSpec> {
    let mut addresses = free_addresses(usize::from(args.members) + 2)?.into_iter();
    let mut next = || addresses.next().context("cannot find a free port");
    let listen = next()?;
    let control = next()?;
    let mut members = Vec::new();
    for i in 1..=args.members {
        members.push((format!("web{i}"), next()?));
    }
    let spec = PoolSpec {
        listen,
        control,
        members,
        drain_mode: args.drain_mode.clone(),
        exe: exe.display().to_string(),
        dir: layout.dir.display().to_string(),
        new_version: NEW_VERSION.into(),
    };
    pool_file::write(&layout.pool, &spec)?;
    ebb_out::errln!(
        "ebb demo: {} members behind ebb's balancer at {}, {} requests/s and {} long streams, {}\n          dir {}",
        args.members,
        spec.listen,
        args.rate,
        args.streams,
        spec.drain_mode,
        layout.dir.display()
    );
    Ok(spec)
}

/// Prints the summary (text or `--json`) and, with `--keep`, how to look around.
fn print_summary(
    args: &DemoArgs,
    summary: &Summary,
    exe: &Path,
    layout: &Layout,
    listen: &str,
    control: &str,
) {
    if args.json {
        ebb_out::outln!(
            "{}",
            serde_json::to_string(summary).unwrap_or_else(|_| "{}".into())
        );
    } else {
        ebb_out::outln!("{}", summary.to_text());
    }
    if args.keep {
        ebb_out::errln!(
            "\nebb demo: still running (--keep). Try:\n  curl http://{listen}/\n  curl http://{control}/members\n  {} lb status --control http://{control}\n  {} report --state-dir {}\nCtrl-C stops everything.",
            exe.display(),
            exe.display(),
            layout.state.display()
        );
    }
}

/// Picks `n` free loopback ports (bind :0, read it, close). All `n` are held open until
/// each is read, so they differ: one closed at once could be handed out again at the next
/// bind, and the balancer's control API would then find its port taken by its own listener.
fn free_addresses(n: usize) -> anyhow::Result<Vec<String>> {
    let listeners = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").context("cannot find a free port"))
        .collect::<anyhow::Result<Vec<_>>>()?;
    listeners
        .iter()
        .map(|l| {
            let addr = l.local_addr().context("cannot find a free port")?;
            Ok(addr.to_string())
        })
        .collect()
}

async fn start_balancer(
    exe: &Path,
    layout: &Layout,
    control: &str,
    procs: &Processes,
) -> anyhow::Result<()> {
    let log_path = layout.logs.join("lb.log");
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("cannot create {}", log_path.display()))?;
    let log2 = log.try_clone().context("lb log")?;
    let mut command = Command::new(exe);
    command
        .arg("lb")
        .arg("serve")
        .arg(&layout.pool)
        .current_dir(&layout.dir)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(log2));
    let mut child = procs.spawn(&mut command, "the balancer (`ebb lb serve`)")?;
    let url = format!("http://{control}/healthz");
    let deadline = tokio::time::Instant::now() + LB_START_TIMEOUT;
    loop {
        if let Ok(r) = crate::http::get_url(&url, Duration::from_millis(500)).await {
            if r.status == 200 {
                break;
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            print_log_tail(&log_path);
            bail!(
                "the balancer exited at start ({status}); see {}",
                log_path.display()
            );
        }
        if tokio::time::Instant::now() >= deadline {
            print_log_tail(&log_path);
            bail!("the balancer's control API did not answer within {LB_START_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The balancer outlives this function (`--keep`); a task owns and reaps it.
    tokio::spawn(async move {
        let _ = child.wait().await;
    });
    Ok(())
}

async fn wait_for_pool(watcher: &Watcher, total: usize) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + LB_START_TIMEOUT;
    loop {
        let view = watcher.view();
        if view.members.len() == total && view.in_service() == total {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            let states: Vec<String> = view
                .members
                .iter()
                .map(|m| format!("{} {}/{}", m.name, m.state, m.health))
                .collect();
            bail!(
                "the balancer does not see every member in service after {LB_START_TIMEOUT:?}: [{}]",
                states.join(", ")
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn member_version(address: &str) -> String {
    match crate::http::get(address, "/version", Duration::from_secs(2)).await {
        Ok(r) if r.status == 200 => r.text().trim().to_string(),
        Ok(r) => format!("HTTP {}", r.status),
        Err(_) => "unreachable".into(),
    }
}

/// The clients' timeline for `ebb report` (its typed attachment, [`ebb_report::Traffic`]),
/// plus the in-service count as the demo's watcher saw it on the balancer (every change,
/// at 50 ms resolution).
fn write_traffic_timeline(
    state_dir: &Path,
    samples: &[crate::traffic::Sample],
    pool: &crate::watch::PoolView,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(state_dir)
        .with_context(|| format!("cannot create {}", state_dir.display()))?;
    let path = state_dir.join(ebb_report::TRAFFIC_FILE);
    let body = ebb_report::Traffic {
        in_service: pool
            .in_service_changes
            .iter()
            .map(|&(t_ms, in_service, total)| ebb_report::InService {
                in_service: in_service as u64,
                t_ms,
                total: total as u64,
            })
            .collect(),
        max_out_of_service: pool.max_out_of_service as u64,
        samples: samples.to_vec(),
    };
    std::fs::write(
        &path,
        serde_json::to_vec_pretty(&body).context("traffic timeline")?,
    )
    .with_context(|| format!("cannot write {}", path.display()))
}

fn print_log_tail(path: &Path) {
    let Ok(text) = std::fs::read_to_string(path) else {
        return;
    };
    let lines: Vec<&str> = text.lines().collect();
    let tail = &lines[lines.len().saturating_sub(10)..];
    if !tail.is_empty() {
        ebb_out::errln!("--- last lines of {} ---", path.display());
        for line in tail {
            ebb_out::errln!("{line}");
        }
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}
