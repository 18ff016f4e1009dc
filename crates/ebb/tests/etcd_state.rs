//! The etcd state backend against a real 3-member etcd cluster on loopback: the lock is a
//! lease that any machine sees, runs resume from a directory with no local state, a run
//! that lost its lease changes nothing more, and etcd trouble halts safely.

#[path = "support/etcd.rs"]
mod etcd;
mod support;

use etcd::EtcdCluster;
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};
use support::*;

const TTL: &str = "5s";

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string()
}

/// The runbook with a drain that waits up to a minute and an install that waits
/// (bounded) for the file `go` in the fixture dir when `gated`.
fn runbook(cluster: &EtcdCluster, prefix: &str, gated: bool) -> String {
    let mut rb = RUNBOOK.replace("timeout = \"10s\"", "timeout = \"60s\"");
    if gated {
        rb = rb.replace(
            "sleep 0.2;",
            "i=0; while [ ! -f {var.dir}/go ] && [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done;",
        );
    }
    format!("{rb}\n{}", cluster.state_table(prefix, TTL))
}

/// A copy of the pool file in a directory of its own (no `.ebb/` anywhere near it).
fn elsewhere(pool: &Path) -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("pool.toml");
    std::fs::copy(pool, &p).unwrap();
    (d, p)
}

fn spawn_run(pool: &Path) -> Child {
    ebb()
        .arg("run")
        .arg(pool)
        .current_dir(pool.parent().unwrap())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn wait_for(what: &str, secs: u64, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn in_dir(args: &[&str], pool: &Path) -> Output {
    ebb()
        .args(args)
        .arg(pool)
        .current_dir(pool.parent().unwrap())
        .output()
        .unwrap()
}

/// `ebb resume` from `pool`'s directory, again while the previous holder's lease has not
/// lapsed yet (bounded).
fn resume_when_free(pool: &Path) -> Output {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let o = in_dir(&["resume"], pool);
        if !stderr(&o).contains("is locked by") || Instant::now() > deadline {
            return o;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn lock_status(pool: &Path) -> serde_json::Value {
    let o = in_dir(&["lock", "status", "--json"], pool);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// Every member started, unheld, updated, with nothing owed; the run done.
fn assert_finished(f: &Fixture, pool: &Path, members: &[&str]) {
    let st = status(pool);
    assert_eq!(st["run"]["state"], "done", "{st}");
    for m in members {
        assert_eq!(f.lb_state(m), "started", "{m} in service");
        assert_eq!(f.lb_initial(m), "started", "{m} hold released");
        assert!(!f.path(&format!("lb/{m}.maint")).exists(), "{m} undo ran");
        assert_eq!(f.read(&format!("lb/{m}.version")).trim(), "1.1", "{m}");
        assert_eq!(member(&st, m)["owed_undos"], serde_json::json!([]), "{m}");
    }
}

#[test]
fn a_second_run_from_another_directory_is_refused_and_lock_break_waits_for_the_lease() {
    let cluster = EtcdCluster::start(3);
    let members = ["a", "b"];
    let f = Fixture::new(&members);
    let pool = f.pool("", &members, &runbook(&cluster, "/t1", true));
    let (_other, copy) = elsewhere(&pool);
    let mut first = spawn_run(&pool);
    wait_for("a's install", 60, || f.path("lb/a.install.log").exists());

    let o = in_dir(&["run"], &copy);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    let who = format!("ebb pid {} on host {}", first.id(), hostname());
    assert!(err.contains(&who), "{err}");
    let st = lock_status(&copy);
    assert_eq!(st["holder"]["pid"], first.id(), "{st}");
    assert!(st["lease_left_s"].as_i64().unwrap() > 0, "{st}");

    // --steal-lock cannot take a live lease: refused, pointing to what frees it.
    let o = ebb()
        .args(["run", "--steal-lock"])
        .arg(&copy)
        .current_dir(copy.parent().unwrap())
        .output()
        .unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains(&who) && err.contains("--steal-lock"), "{err}");
    assert!(err.contains("ebb lock break"), "{err}");
    // What is known of the holder: since when, its last renewal, the time left.
    let o = in_dir(&["lock", "status"], &copy);
    assert!(stdout(&o).contains("last renewed at"), "{}", stdout(&o));
    let o = in_dir(&["status"], &copy);
    assert!(stdout(&o).contains("s left)"), "{}", stdout(&o));
    assert!(status(&copy)["lock"]["since_ms"].as_i64().unwrap() > 0);

    // Alive: break is refused, naming the holder.
    let o = in_dir(&["lock", "break"], &copy);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains(&who), "{}", stderr(&o));

    // Dead, and its lease lapsed: break is accepted and recorded.
    let _ = first.kill();
    let _ = first.wait();
    wait_for("the lease to lapse", 60, || {
        lock_status(&copy)["holder"].is_null()
    });
    let o = in_dir(&["lock", "status"], &copy);
    assert!(
        stdout(&o).contains(&format!("last held by ebb pid {}", first.id())),
        "{}",
        stdout(&o)
    );
    let o = in_dir(&["lock", "break"], &copy);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let st = lock_status(&copy);
    assert!(st["broken"]["by"].as_str().unwrap().contains('@'), "{st}");
    assert_eq!(st["broken"]["holder"]["pid"], first.id(), "{st}");
    let o = in_dir(&["status"], &copy);
    assert!(stdout(&o).contains("lock broken by"), "{}", stdout(&o));

    std::fs::write(f.path("go"), "").unwrap();
    let o = resume_when_free(&copy);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_finished(&f, &copy, &members);
    for d in [pool.parent().unwrap(), copy.parent().unwrap()] {
        assert!(
            !d.join(".ebb").exists(),
            "no local state in {}",
            d.display()
        );
    }
}

#[test]
fn kill_9_mid_drain_then_resume_from_another_directory_finishes() {
    let cluster = EtcdCluster::start(3);
    let members = ["a", "b", "c"];
    let f = Fixture::new(&members);
    let pool = f.pool("", &members, &runbook(&cluster, "/t2", false));
    std::fs::write(f.path("lb/a.conns"), "1\n").unwrap();
    let mut first = spawn_run(&pool);
    wait_for("a draining", 60, || f.lb_state("a") == "draining");
    let _ = first.kill();
    let _ = first.wait();
    std::fs::remove_file(f.path("lb/a.conns")).unwrap();
    let (_other, copy) = elsewhere(&pool);
    let o = resume_when_free(&copy);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_finished(&f, &copy, &members);
}

#[test]
fn a_run_paused_past_its_lease_changes_nothing_after_the_takeover() {
    let cluster = EtcdCluster::start(3);
    let members = ["a", "b"];
    let f = Fixture::new(&members);
    let pool = f.pool("", &members, &runbook(&cluster, "/t3", false));
    std::fs::write(f.path("lb/a.conns"), "1\n").unwrap();
    let first = spawn_run(&pool);
    wait_for("a draining", 60, || f.lb_state("a") == "draining");
    let pid = first.id() as i32;
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let (_other, copy) = elsewhere(&pool);
    wait_for("the paused run's lease to lapse", 60, || {
        lock_status(&copy)["holder"].is_null()
    });
    std::fs::remove_file(f.path("lb/a.conns")).unwrap();
    let o = resume_when_free(&copy);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_finished(&f, &copy, &members);
    let after_takeover = f.transitions();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    let out = first.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("lease"), "it says why: {err}");
    assert_eq!(
        f.transitions(),
        after_takeover,
        "no balancer operation by the first run after the takeover"
    );
    assert_finished(&f, &copy, &members);
}

#[test]
fn one_etcd_member_lost_is_ridden_out_two_halt_and_resume_finishes() {
    let mut cluster = EtcdCluster::start(3);
    let members = ["a", "b", "c"];
    let f = Fixture::new(&members);
    let pool = f.pool("", &members, &runbook(&cluster, "/t4", true));

    // One member of three lost mid-run: the run finishes.
    let first = spawn_run(&pool);
    wait_for("a's install", 60, || f.path("lb/a.install.log").exists());
    cluster.kill_member(0);
    std::fs::write(f.path("go"), "").unwrap();
    let out = first.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_finished(&f, &pool, &members);

    // Two lost (no quorum) mid-run: the run halts, the member mid-step stays held.
    std::fs::remove_file(f.path("go")).unwrap();
    let before = f.transitions().len();
    let second = spawn_run(&pool);
    wait_for("a's second install", 60, || {
        f.read("lb/a.install.log").matches("start").count() == 2
    });
    cluster.kill_member(1);
    std::fs::write(f.path("go"), "").unwrap();
    let out = second.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("etcd"), "{err}");
    assert_ne!(f.lb_state("a"), "started", "a is left held out");
    let touched: Vec<_> = f.transitions()[before..]
        .iter()
        .filter(|t| t.1 != "a")
        .cloned()
        .collect();
    assert!(touched.is_empty(), "nobody else touched: {touched:?}");

    // etcd back: resume finishes.
    cluster.start_member(0);
    cluster.start_member(1);
    cluster.wait_healthy();
    let o = resume_when_free(&pool);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_finished(&f, &pool, &members);
}

#[test]
fn unreachable_etcd_at_start_is_exit_2_naming_the_endpoints() {
    let members = ["a"];
    let f = Fixture::new(&members);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let rest = format!(
        "{RUNBOOK}\n[state]\nbackend = \"etcd\"\nendpoints = [\"http://127.0.0.1:{port}\"]\n"
    );
    let pool = f.pool("", &members, &rest);
    let o = in_dir(&["run"], &pool);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    assert!(f.transitions().is_empty());
    // A bad override names itself; the pool file's [state] errors name file, line, key.
    let o = ebb()
        .args(["status", "--state-backend", "zk"])
        .arg(&pool)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--state-backend"), "{}", stderr(&o));
}
