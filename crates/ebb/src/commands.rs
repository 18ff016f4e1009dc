//! The engine's commands: check, plan, run, resume, status, release, abort, report.

use crate::locate::{
    load_plan, open_journal, pool_name, print_problems, problems_of, state_dir, EXIT_USAGE,
};
use crate::outputs::{
    sorted_line, CheckReport, InvalidFile, MemberCheck, PlanDoc, PlannedOp, VersionsLine,
};
use crate::render::Renderer;
use crate::report::to_json;
use crate::status::RunStatus;
use crate::{Command, RunSel};
use ebb_engine::journal::{default_lock_dir, HostLock, Journal};
use ebb_engine::member::Drivers;
use ebb_engine::plan::Plan;
use ebb_engine::run::{self, RunError, RunOptions, RunOutcome};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;
use tokio::sync::watch;

pub fn main(cmd: Command) -> i32 {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.worker_threads(2);
    let rt = match runtime(builder) {
        Ok(rt) => rt,
        Err(c) => return c,
    };
    rt.block_on(dispatch(cmd))
}

/// The async runtime `builder` makes, or exit 1 saying why it cannot start.
pub(crate) fn runtime(
    mut builder: tokio::runtime::Builder,
) -> Result<tokio::runtime::Runtime, i32> {
    builder.enable_all().build().map_err(|e| {
        ebb_out::errln!("ebb: cannot start the async runtime: {e}");
        1
    })
}

async fn dispatch(cmd: Command) -> i32 {
    match cmd {
        Command::Check {
            pool,
            json,
            no_members,
        } => check(&pool, json, no_members).await,
        Command::Plan { pool, json } => plan_cmd(&pool, json),
        Command::Run {
            pool,
            state_dir,
            state_backend,
            json,
            steal_lock,
            only_skipped,
            wait,
            web,
        } => {
            let sel = RunSel {
                pool: Some(pool),
                state_dir,
                state_backend,
            };
            run_cmd(
                &sel,
                RunOptions {
                    steal_lock,
                    only_skipped,
                    wait,
                    ..Default::default()
                },
                json,
                &web,
            )
            .await
        }
        Command::Resume {
            sel,
            assume_done,
            rerun,
            json,
            steal_lock,
            wait,
            web,
            kill_running,
        } => {
            run_cmd(
                &sel,
                RunOptions {
                    resume: true,
                    assume_done,
                    rerun,
                    steal_lock,
                    kill_running,
                    wait,
                    ..Default::default()
                },
                json,
                &web,
            )
            .await
        }
        Command::Status { sel, json } => status(&sel, json),
        Command::Release {
            member,
            sel,
            json,
            kill_running,
        } => release(&sel, &member, json, kill_running).await,
        Command::Abort { sel, json } => abort(&sel, json).await,
        Command::Report {
            sel,
            run,
            json,
            html,
        } => crate::report::report(&sel, run, json, html.as_deref()),
        Command::Watch { sel, web } => crate::watch::watch(&sel, &web).await,
        Command::Lock(cmd) => crate::lock::lock(cmd),
        Command::Lb(_)
        | Command::Demo(_)
        | Command::Internal(_)
        | Command::Completions { .. }
        | Command::Man
        | Command::Schema
        | Command::Init(_) => EXIT_USAGE,
    }
}

fn load_drivers(plan: &Plan) -> Option<Drivers> {
    match ebb_drivers::build(plan) {
        Ok(d) => Some(d),
        Err(errs) => {
            print_problems(&problems_of(&errs), &plan.file);
            None
        }
    }
}

/// The plan for a command that reads a run: the pool file given, or the one the run used.
fn plan_for(sel: &RunSel, journal: &Journal) -> Result<Plan, i32> {
    let path = match &sel.pool {
        Some(p) => p.clone(),
        None => match journal.latest_run(None) {
            Ok(Some(run)) => PathBuf::from(run.pool_file),
            Ok(None) => {
                ebb_out::errln!("ebb: no run in {}", journal.path().display());
                return Err(EXIT_USAGE);
            }
            Err(e) => {
                ebb_out::errln!("ebb: {e}");
                return Err(1);
            }
        },
    };
    load_plan(&path).ok_or(EXIT_USAGE)
}

/// The signal that stopped this command (0: none yet).
static STOPPED_BY: AtomicI32 = AtomicI32::new(0);

/// Stops at the next safe point on SIGINT (Ctrl-C), SIGTERM, SIGHUP (a closed terminal, a
/// dropped ssh session to the admin host) and `ebb abort`'s SIGUSR1: the running step's
/// command is ended (its process group, or the remote command over ssh), the journal
/// records where, and the run is halted. Without this, SIGHUP would kill ebb outright and
/// leave the step running, orphaned.
fn shutdown_signal(say: Arc<dyn Fn(&str) + Send + Sync>) -> watch::Receiver<bool> {
    use tokio::signal::unix::{signal, Signal, SignalKind};
    let (tx, rx) = watch::channel(false);
    let watch_for = |kind: SignalKind, signo: i32| match signal(kind) {
        Ok(s) => Some(s),
        Err(e) => {
            ebb_out::errln!("ebb: cannot watch for {}: {e}", signal_name(signo));
            None
        }
    };
    let mut int = watch_for(SignalKind::interrupt(), libc::SIGINT);
    let mut term = watch_for(SignalKind::terminate(), libc::SIGTERM);
    let mut hup = watch_for(SignalKind::hangup(), libc::SIGHUP);
    let mut abort = watch_for(SignalKind::user_defined1(), run::ABORT_SIGNAL);
    async fn recv(s: &mut Option<Signal>) {
        match s {
            Some(s) => {
                s.recv().await;
            }
            None => std::future::pending::<()>().await,
        }
    }
    tokio::spawn(async move {
        let signo = tokio::select! {
            _ = recv(&mut int) => libc::SIGINT,
            _ = recv(&mut term) => libc::SIGTERM,
            _ = recv(&mut hup) => libc::SIGHUP,
            _ = recv(&mut abort) => run::ABORT_SIGNAL,
        };
        STOPPED_BY.store(signo, Ordering::SeqCst);
        if signo == run::ABORT_SIGNAL {
            say("ebb: `ebb abort` from another terminal: stopping at the next safe point");
        } else {
            say(&format!(
                "ebb: {}: stopping at the next safe point (the journal records where)",
                signal_name(signo)
            ));
        }
        // A closed receiver means the command is already ending: nothing to stop.
        tx.send(true).ok();
        // Later signals change nothing: tokio keeps its handlers installed for the life of
        // the process, so a second Ctrl-C cannot kill ebb while it ends the step's command
        // and writes the journal.
    });
    rx
}

/// The host-wide lock of the plan's pool, held while a run, resume or release works:
/// the journal's own lock covers only its state dir.
fn host_lock(plan: &Plan, journal: &Journal) -> Result<Option<HostLock>, RunError> {
    if journal.shared() {
        // The etcd lock already covers every host.
        return Ok(None);
    }
    let state_dir = journal.path().parent().unwrap_or(journal.path());
    Ok(Some(HostLock::take(
        &default_lock_dir(),
        &plan.pool.name,
        state_dir,
    )?))
}

fn signal_name(signo: i32) -> &'static str {
    match signo {
        libc::SIGINT => "SIGINT (Ctrl-C)",
        libc::SIGTERM => "SIGTERM",
        libc::SIGHUP => "SIGHUP (terminal closed)",
        s if s == run::ABORT_SIGNAL => "SIGUSR1 (`ebb abort`)",
        _ => "a signal",
    }
}

/// The exit code of a command stopped by a signal: 128 + the signal (129 SIGHUP, 130
/// SIGINT, 143 SIGTERM); 130 when `ebb abort` stopped it.
fn stopped_exit_code() -> i32 {
    match STOPPED_BY.load(Ordering::SeqCst) {
        0 => 130,
        s if s == run::ABORT_SIGNAL => 130,
        s => 128 + s,
    }
}

/// True when `ebb abort` stopped this command.
fn aborted() -> bool {
    STOPPED_BY.load(Ordering::SeqCst) == run::ABORT_SIGNAL
}

/// Prints why a command could not run; the journal failing is 1, anything else is bad
/// input or usage (2).
fn refused(e: RunError) -> i32 {
    ebb_out::errln!("ebb: {e}");
    match e.kind() {
        run::ErrorKind::Interrupted => stopped_exit_code(),
        kind => kind.exit_code(),
    }
}

fn report_outcome(r: Result<RunOutcome, RunError>, renderer: &Renderer) -> i32 {
    renderer.finish();
    match r {
        Ok(o) => {
            let interrupted = o.exit_code == 130;
            // The verdict goes to stdout (`ebb run pool.toml > run.log` keeps it); the
            // progress above it stays on stderr.
            if interrupted && aborted() {
                ebb_out::outln!(
                    "ebb: run {} was aborted with `ebb abort` (from another terminal): `ebb resume` will refuse it. Members that are out stay out, held, their undos owed: see `ebb status`, and resolve each with `ebb release MEMBER`",
                    o.run_id
                );
                return stopped_exit_code();
            }
            if !renderer.json {
                let what = match o.state.as_str() {
                    "done" => {
                        "done: every member updated, verified and back in service".to_string()
                    }
                    s => format!(
                        "{s}{}{}",
                        if o.message.is_empty() { "" } else { ": " },
                        o.message
                    ),
                };
                ebb_out::outln!("ebb: run {} {what}", o.run_id);
            }
            if interrupted {
                stopped_exit_code()
            } else {
                o.exit_code
            }
        }
        Err(e) => refused(e),
    }
}

/// The journal (which must exist unless a run starts), the plan, its drivers and a
/// renderer, for a command that works on a run.
fn prepare(
    sel: &RunSel,
    must_exist: bool,
    json: bool,
) -> Result<(Arc<Journal>, Arc<Plan>, Drivers, Renderer), i32> {
    let journal = Arc::new(open_journal(sel, must_exist)?);
    let plan = Arc::new(plan_for(sel, &journal)?);
    let drivers = load_drivers(&plan).ok_or(EXIT_USAGE)?;
    let renderer = Renderer::new(json, &plan);
    renderer.start_ticker();
    Ok((journal, plan, drivers, renderer))
}

async fn run_cmd(sel: &RunSel, opts: RunOptions, json: bool, web: &crate::web::WebArgs) -> i32 {
    // Validate everything before the journal (or anything else) is created.
    let web = match web.options() {
        Ok(w) => w,
        Err(e) => {
            ebb_out::errln!("ebb: {e}");
            return EXIT_USAGE;
        }
    };
    if let Some(p) = &sel.pool {
        let Some(plan) = load_plan(p) else {
            return EXIT_USAGE;
        };
        if load_drivers(&plan).is_none() {
            return EXIT_USAGE;
        }
    }
    let (journal, plan, drivers, renderer) = match prepare(sel, opts.resume, json) {
        Ok(x) => x,
        Err(c) => return c,
    };
    let _host_lock = match host_lock(&plan, &journal) {
        Ok(l) => l,
        Err(e) => return report_outcome(Err(e), &renderer),
    };
    let web = match crate::web::serve_run(web.as_ref(), sel, &plan).await {
        Ok(w) => w,
        Err(e) => {
            ebb_out::errln!("ebb: {e}");
            return EXIT_USAGE;
        }
    };
    let sink = crate::web::tee(web.as_ref(), renderer.sink());
    // Notifications go out in the background; at the end ebb waits a bounded moment for
    // the last ones (the run's own end), never for a receiver that does not answer.
    let notifier =
        ebb_drivers::notify::Notifier::new(plan.notify.clone(), &plan.pool.name, state_dir(sel));
    let sink = notifier.sink(sink);
    let (plan2, drivers2) = (plan.clone(), drivers.clone());
    let stop = shutdown_signal(renderer.announcer());
    let r = run::run(plan, drivers, journal, sink, opts, stop).await;
    notifier.finish(std::time::Duration::from_secs(10)).await;
    let code = report_outcome(r, &renderer);
    // The pool-wide version table at the end of a run (version checks only).
    let versions = ebb_drivers::check::version::table(&plan2, &drivers2.transports).await;
    if json && !versions.is_empty() {
        ebb_out::outln!(
            "{}",
            sorted_line(&VersionsLine {
                event: "versions",
                members: &versions
            })
        );
    } else if !json {
        print_versions(&versions);
    }
    code
}

/// Prints the pool-wide version table, naming the members that are behind.
fn print_versions(rows: &[ebb_drivers::check::version::VersionRow]) {
    if rows.is_empty() {
        return;
    }
    ebb_out::outln!("versions:");
    for l in ebb_drivers::check::version::render_table(rows) {
        ebb_out::outln!("{l}");
    }
    let behind = ebb_drivers::check::version::behind(rows);
    if !behind.is_empty() {
        ebb_out::outln!("behind: {}", behind.join(", "));
    }
}

async fn release(sel: &RunSel, member: &str, json: bool, kill_running: bool) -> i32 {
    let (journal, plan, drivers, renderer) = match prepare(sel, true, json) {
        Ok(x) => x,
        Err(c) => return c,
    };
    let _host_lock = match host_lock(&plan, &journal) {
        Ok(l) => l,
        Err(e) => {
            renderer.finish();
            return refused(e);
        }
    };
    let r = run::release(
        plan,
        drivers,
        journal,
        renderer.sink(),
        member,
        kill_running,
        shutdown_signal(renderer.announcer()),
    )
    .await;
    renderer.finish();
    match r {
        Ok(o) => {
            ebb_out::outln!("ebb: {}", o.message);
            if o.exit_code == 130 {
                stopped_exit_code()
            } else {
                o.exit_code
            }
        }
        Err(e) => refused(e),
    }
}

fn status(sel: &RunSel, json_out: bool) -> i32 {
    let journal = match open_journal(sel, true) {
        Ok(j) => j,
        Err(c) => return c,
    };
    let pool_name = pool_name(sel);
    match journal.latest_run(pool_name.as_deref()) {
        Ok(Some(run)) => {
            let mut v = RunStatus::read(&journal, &run);
            // The window the run waits for, judged now by the pool file (given, or the
            // one the run used).
            let file = sel
                .pool
                .clone()
                .unwrap_or_else(|| PathBuf::from(&run.pool_file));
            let plan = ebb_engine::config::load(&file, &ebb_drivers::registry()).ok();
            v.window = plan.and_then(|p| crate::windows::next_window(&journal, &run, &p));
            if json_out {
                ebb_out::outln!("{}", to_json(&v));
            } else {
                ebb_out::out!("{}", v.render());
            }
            0
        }
        Ok(None) => {
            if json_out {
                ebb_out::outln!("{}", to_json(&ebb_report::NoRun::default()));
            } else {
                ebb_out::outln!("no run yet in {}", journal.path().display());
            }
            0
        }
        Err(e) => {
            ebb_out::errln!("ebb: {e}");
            1
        }
    }
}

async fn abort(sel: &RunSel, json_out: bool) -> i32 {
    let journal = match open_journal(sel, true) {
        Ok(j) => j,
        Err(c) => return c,
    };
    let pool_name = pool_name(sel);
    match run::abort(&journal, pool_name.as_deref()).await {
        Ok(run) => {
            let v = RunStatus::read(&journal, &run);
            if json_out {
                ebb_out::outln!("{}", to_json(&v));
            } else {
                ebb_out::out!("{}", v.render());
                ebb_out::outln!("aborted. Members that are out stay out; resolve each with `ebb release MEMBER`.");
            }
            0
        }
        Err(e) => refused(e),
    }
}

fn plan_cmd(path: &Path, json_out: bool) -> i32 {
    let Some(plan) = load_plan(path) else {
        return EXIT_USAGE;
    };
    if ebb_drivers::build(&plan).is_err() {
        let _ = load_drivers(&plan);
        return EXIT_USAGE;
    }
    let sel = RunSel {
        pool: Some(path.to_path_buf()),
        state_dir: None,
        state_backend: None,
    };
    let expectation = crate::windows::expectation(&sel, &plan);
    let timing = crate::windows::timing(
        &plan,
        &expectation,
        ebb_engine::window::jiff::Timestamp::now(),
    );
    let doc = PlanDoc::new(&plan, timing);
    if json_out {
        ebb_out::outln!("{}", sorted_line(&doc));
        return 0;
    }
    let total = plan.members.len();
    ebb_out::outln!(
        "pool {} ({} members, balancer {}): at most {} out at once, at least {} in service; waits up to {} for capacity",
        plan.pool.name,
        total,
        plan.balancer.driver,
        plan.pool.max_unavailable.resolve(total),
        plan.pool.min_in_service,
        ebb_config::format_duration(plan.pool.capacity_wait)
    );
    for w in &doc.waves {
        ebb_out::outln!(
            "{}{}",
            ebb_engine::plan::wave_label(&w.name).replace('"', ""),
            if w.pause_after {
                " (pause for approval after it)"
            } else {
                ""
            }
        );
        for m in &w.members {
            let names =
                |ops: &[PlannedOp]| -> Vec<String> { ops.iter().map(|o| o.name.clone()).collect() };
            let rollback = names(&m.rollback);
            ebb_out::outln!(
                "  {:<16} {}{}",
                m.name,
                names(&m.ops).join(" → "),
                if rollback.is_empty() {
                    String::new()
                } else {
                    format!("; if verify or the bake fails: {}", rollback.join(" → "))
                }
            );
        }
    }
    crate::windows::print_timing(&doc.timing);
    0
}

/// What the plan's checks cannot do with this balancer (a `balancer` check behind a
/// driver that cannot count errors), one problem per check.
async fn check_problems(plan: &Plan, drivers: &Drivers) -> Vec<String> {
    let mut problems = Vec::new();
    for c in plan.checks() {
        let driver = &plan.balancer.driver;
        if let Some(p) = c
            .check
            .preflight(drivers.balancer.as_ref(), driver, &plan.members)
            .await
        {
            problems.push(format!("check \"{}\" ({}): {p}", c.name, c.kind));
        }
    }
    problems
}

async fn check(path: &Path, json_out: bool, no_members: bool) -> i32 {
    let loaded = match ebb_engine::config::load(path, &ebb_drivers::registry()) {
        Ok(plan) => ebb_drivers::build(&plan)
            .map(|d| (plan, d))
            .map_err(|e| problems_of(&e)),
        Err(errs) => Err(problems_of(&errs)),
    };
    let (plan, drivers) = match loaded {
        Ok(x) => x,
        Err(problems) => {
            print_problems(&problems, path);
            if json_out {
                ebb_out::outln!("{}", sorted_line(&InvalidFile::new(path, &problems)));
            }
            return EXIT_USAGE;
        }
    };
    let states = drivers.balancer.pool_state(&plan.members).await;
    let warnings = drivers.balancer.preflight(&plan.members).await;
    let mut problems = drivers.balancer.preflight_problems(&plan.members).await;
    let mut rows = Vec::new();
    let mut errors = Vec::new();
    // Members whose failed connection a balancer problem already quotes (a balancer
    // driven through the members' own transports).
    let mut said_unreached = std::collections::HashSet::new();
    for (i, (m, s)) in plan.members.iter().zip(&states).enumerate() {
        match s {
            Ok(st) => rows.push(MemberCheck::Read {
                name: m.name.clone(),
                state: st.state,
                in_service: st.in_service(),
                active_connections: st.active_connections,
                detail: st.detail.clone(),
            }),
            Err(e) => {
                said_unreached.extend(e.unreached.iter().cloned());
                errors.push((i, e.to_string()));
                rows.push(MemberCheck::Unreachable {
                    name: m.name.clone(),
                    error: e.to_string(),
                });
            }
        }
    }
    // Said once when every member meets the same error (a socket that refuses everyone).
    problems.extend(run::balancer_errors(&plan, &errors));
    let sel = RunSel {
        pool: Some(path.to_path_buf()),
        state_dir: None,
        state_backend: None,
    };
    problems.extend(crate::windows::problems(
        &plan,
        &crate::windows::expectation(&sel, &plan),
    ));
    problems.extend(check_problems(&plan, &drivers).await);
    // Members reached over ssh: one connection each (host key, login, boot identity).
    let reached = if no_members {
        Vec::new()
    } else {
        ebb_drivers::transport::preflight(&plan, &drivers.transports).await
    };
    for (name, e) in reached {
        // Already said: the balancer could not be read through this very connection.
        if said_unreached.contains(&name) {
            continue;
        }
        if e.contains(&format!("member \"{name}\"")) {
            problems.push(e);
        } else {
            problems.push(format!("member \"{name}\": {e}"));
        }
    }
    let ok = problems.is_empty();
    let versions = if no_members {
        Vec::new()
    } else {
        ebb_drivers::check::version::table(&plan, &drivers.transports).await
    };
    let report = CheckReport {
        ok,
        valid: true,
        pool: plan.pool.name.clone(),
        members: rows,
        warnings,
        problems,
        versions,
    };
    if json_out {
        ebb_out::outln!("{}", sorted_line(&report));
    } else {
        print_check(path, &plan, &report);
    }
    if ok {
        0
    } else {
        1
    }
}

/// `ebb check` for people: the members, the versions, the warnings and the problems.
fn print_check(path: &Path, plan: &Plan, report: &CheckReport) {
    ebb_out::outln!(
        "{}: valid ({} members, balancer {})",
        path.display(),
        plan.members.len(),
        plan.balancer.driver
    );
    for r in &report.members {
        match r {
            // The error itself is among the problems below, said once.
            MemberCheck::Unreachable { name, .. } => {
                ebb_out::outln!("  {name:<16} UNREACHABLE (see the problem below)")
            }
            MemberCheck::Read {
                name,
                state,
                in_service,
                ..
            } => ebb_out::outln!(
                "  {name:<16} {:<9} {}",
                state.as_str(),
                if *in_service {
                    "in service"
                } else {
                    "OUT of service"
                }
            ),
        }
    }
    print_versions(&report.versions);
    for w in &report.warnings {
        ebb_out::outln!("warning: {w}");
    }
    for p in &report.problems {
        ebb_out::errln!("problem: {p}");
    }
}
