//! Networks that fail: members, the balancer and ebb on separate hosts (network
//! namespaces, `scripts/testnet.sh`), links cut with `ip link set eth0 down` in the middle
//! of a run. Each scenario asserts what the balancer and the members end up in from their
//! own state and logs: every member updated, in service and unheld, every undo paid
//! exactly once (counted in the member's log), no held member ever back in rotation early.

#[path = "support/netns.rs"]
mod netns;

use netns::*;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// How long any single `ebb` invocation may take in these tests.
const EBB_BOUND: Duration = Duration::from_secs(90);

/// Options for the pool file of a scenario.
struct Pool {
    balancer: Balancer,
    install_idempotent: bool,
    install_sleep: &'static str,
    drain_timeout: &'static str,
    reboot: bool,
    reboot_timeout: &'static str,
}

#[derive(Clone, Copy, PartialEq)]
enum Balancer {
    Builtin,
    Haproxy,
}

impl Default for Pool {
    fn default() -> Self {
        Pool {
            balancer: Balancer::Builtin,
            install_idempotent: true,
            install_sleep: "0.2",
            drain_timeout: "10s",
            reboot: false,
            reboot_timeout: "20s",
        }
    }
}

/// Writes `DIR/pool.toml` for the net's members.
fn pool_file(net: &TestNet, p: &Pool) -> PathBuf {
    let d = net.dir.path().display().to_string();
    let balancer = match p.balancer {
        Balancer::Builtin => format!(
            "[balancer]\ndriver = \"builtin\"\nlisten = \"{LB_ADDR}:80\"\ncontrol = \"http://{LB_ADDR}:9900\"\ntoken = \"{LB_TOKEN}\"\nstate_file = \"{d}/lb-state.json\"\n\n\
             [balancer.health]\nkind = \"http\"\ninterval = \"200ms\"\ntimeout = \"500ms\"\nrise = 1\nfall = 2\n"
        ),
        Balancer::Haproxy => format!(
            "[balancer]\ndriver = \"haproxy\"\nsocket = \"tcp://{LB_ADDR}:9999\"\nbackend = \"app\"\nstate_file = \"{d}/hap-state\"\n"
        ),
    };
    let log = format!("{d}/{{member}}/member.log");
    let reboot = if p.reboot {
        format!(
            "reboot = \"always\"\n\n[runbook.reboot]\ncommand = \"if [ -e {d}/{{member}}/cut-on-reboot ]; then rm {d}/{{member}}/cut-on-reboot; echo {{member}} > {d}/reboot-requested; else setsid {script} reboot {net} {{member}} > /dev/null 2>&1 < /dev/null & fi\"\ntimeout = \"{t}\"\npoll_interval = \"300ms\"\n",
            script = script().display(),
            net = net.name,
            t = p.reboot_timeout
        )
    } else {
        String::new()
    };
    let text = format!(
        "[pool]\nname = \"{pool_name}\"\nmax_unavailable = 1\n\n{balancer}\n[defaults]\n{ssh}\n{members}\
         [runbook]\nrejoin_timeout = \"20s\"\n\n[runbook.drain]\ntimeout = \"{drain}\"\n\n\
         [[runbook.step]]\nname = \"maint\"\nrun = \"echo maint-on >> {log}\"\nundo = \"echo maint-off >> {log}\"\n\n\
         [[runbook.step]]\nname = \"install\"\nrun = \"echo install-start >> {log}; sleep {sleep}; echo 2.0 > {d}/{{member}}/version; echo install-end >> {log}\"\nidempotent = {idem}\ntimeout = \"60s\"\n{reboot}\n\
         [[runbook.verify]]\nname = \"version\"\ncommand = \"grep -qx 2.0 {d}/{{member}}/version\"\nretries = 10\ninterval = \"500ms\"\ntimeout = \"5s\"\n\n\
         [[runbook.verify]]\nname = \"http\"\nhttp = {{ url = \"http://{{address}}/health\", expect_status = 200 }}\nretries = 10\ninterval = \"500ms\"\ntimeout = \"2s\"\n",
        // One run per pool name per host: each net's pool has a name of its own.
        pool_name = net.name,
        ssh = net.ssh_defaults(),
        members = net.member_tables(),
        drain = p.drain_timeout,
        sleep = p.install_sleep,
        idem = p.install_idempotent,
    );
    let path = net.path("pool.toml");
    std::fs::write(&path, text).expect("write pool");
    path
}

/// An `ebb` command running in ebb's host, its output going to files.
struct EbbRun {
    child: Child,
    out: PathBuf,
    err: PathBuf,
}

fn spawn_ebb(net: &TestNet, args: &[&str]) -> EbbRun {
    let n = std::fs::read_dir(net.dir.path())
        .map(|d| d.count())
        .unwrap_or(0);
    let out = net.path(&format!("ebb-{n}.out"));
    let err = net.path(&format!("ebb-{n}.err"));
    let child = net
        .ebb()
        .args(args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).expect("out"))
        .stderr(std::fs::File::create(&err).expect("err"))
        .spawn()
        .expect("spawn ebb");
    EbbRun { child, out, err }
}

impl EbbRun {
    /// Waits (bounded) for it to end: (exit code, stdout, stderr).
    fn finish(mut self) -> (Option<i32>, String, String) {
        let t = Instant::now();
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                break s;
            }
            if t.elapsed() > EBB_BOUND {
                let _ = self.child.kill();
                panic!(
                    "ebb did not finish within {EBB_BOUND:?}: {}",
                    std::fs::read_to_string(&self.err).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        (
            status.code(),
            std::fs::read_to_string(&self.out).unwrap_or_default(),
            std::fs::read_to_string(&self.err).unwrap_or_default(),
        )
    }
}

/// Runs `ebb ARGS` to its end.
fn ebb(net: &TestNet, args: &[&str]) -> (Option<i32>, String, String) {
    spawn_ebb(net, args).finish()
}

fn p(path: &std::path::Path) -> &str {
    path.to_str().expect("utf-8 path")
}

fn status(net: &TestNet, pool: &std::path::Path) -> serde_json::Value {
    let (_, out, err) = ebb(net, &["status", "--json", p(pool)]);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("status JSON ({e}): {out} {err}"))
}

fn member<'a>(st: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    st["members"]
        .as_array()
        .and_then(|ms| ms.iter().find(|m| m["name"] == name))
        .unwrap_or_else(|| panic!("no member {name} in {st}"))
}

/// The builtin balancer's view of every member, read from ebb's host.
fn builtin_now(net: &TestNet) -> serde_json::Value {
    let (_, out, err) = ebb(
        net,
        &[
            "lb",
            "status",
            "--json",
            "--control",
            &format!("http://{LB_ADDR}:9900"),
            "--token",
            LB_TOKEN,
        ],
    );
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("lb status ({e}): {out} {err}"))
}

/// Every scenario ends here: the run is done; every member has the update, is in service
/// and unheld in the balancer, owes nothing, and paid its (non-idempotent) undo exactly
/// once.
fn assert_finished(net: &TestNet, pool: &std::path::Path) {
    let st = status(net, pool);
    assert_eq!(st["run"]["state"], "done", "{st}");
    for k in 1..=net.members {
        let m = format!("m{k}");
        assert_eq!(
            net.read(&format!("{m}/version")).trim(),
            "2.0",
            "{m} updated"
        );
        assert_eq!(member(&st, &m)["owed_undos"], serde_json::json!([]), "{m}");
        assert!(
            net.count(&m, "maint-on") >= 1,
            "{m}: {:?}",
            net.member_log(&m)
        );
        assert_eq!(
            net.count(&m, "maint-off"),
            1,
            "{m}: the undo is paid exactly once: {:?}",
            net.member_log(&m)
        );
    }
}

fn assert_builtin_in_service(net: &TestNet) {
    let lb = builtin_now(net);
    for k in 1..=net.members {
        let m = format!("m{k}");
        let v = lb["members"]
            .as_array()
            .and_then(|a| a.iter().find(|x| x["name"] == m.as_str()))
            .unwrap_or_else(|| panic!("{m} in {lb}"));
        assert_eq!(v["state"], "started", "{m} in service: {lb}");
        assert_eq!(v["initial_state"], "started", "{m} unheld: {lb}");
    }
}

/// What every `ebb` started so far printed on stderr (for failure messages).
fn ebb_logs(net: &TestNet) -> String {
    let mut files: Vec<PathBuf> = std::fs::read_dir(net.dir.path())
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|e| e == "err"));
    files.sort();
    files
        .iter()
        .map(|f| {
            format!(
                "--- {}\n{}",
                f.display(),
                std::fs::read_to_string(f).unwrap_or_default()
            )
        })
        .collect()
}

fn wait_log(net: &TestNet, m: &str, line: &str) {
    let t = Instant::now();
    while net.count(m, line) == 0 {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "waited 60 s for {m} to log {line}; ebb said:\n{}",
            ebb_logs(net)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_test_hosts_cannot_reach_outside_and_come_with_their_services() {
    let net = TestNet::up(2);
    // (`up` asserted the unreachable route and the absence of default routes.)
    // A downed member is unreachable at once from ebb's host: no default route to fall
    // back to.
    let ping = |to: &str| {
        net.cmd_in("ebb", "bash")
            .args(["-c", &format!("exec 3<>/dev/tcp/{}/8080", addr(to))])
            .stderr(Stdio::null())
            .status()
            .expect("bash")
            .success()
    };
    assert!(ping("m1"), "m1's HTTP service answers");
    let boot = net.boot_id("m1");
    assert!(!boot.is_empty());
    net.reboot("m1");
    assert_ne!(
        net.boot_id("m1"),
        boot,
        "a reboot gives a new boot identity"
    );
    assert!(ping("m1"), "m1's HTTP service is back after the reboot");
    net.cut("ebb");
    let t = Instant::now();
    assert!(!ping("m2"), "nothing answers with ebb's link down");
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "with its link down ebb's host has no route at all: {:?}",
        t.elapsed()
    );
    net.restore("ebb");
    // The root namespace reaches nothing in the subnet.
    let root = std::net::TcpStream::connect_timeout(
        &format!("{}:8080", addr("m1")).parse().expect("addr"),
        Duration::from_secs(1),
    );
    let e = root.expect_err("the root namespace must not reach test hosts");
    assert!(
        matches!(
            e.raw_os_error(),
            Some(libc::EHOSTUNREACH) | Some(libc::ENETUNREACH)
        ),
        "refused by the unreachable route, not timed out: {e}"
    );
}

#[test]
fn a_link_cut_mid_install_leaves_the_outcome_unknown_and_resume_reruns_an_idempotent_step() {
    let net = TestNet::up(2);
    let pool = pool_file(
        &net,
        &Pool {
            install_sleep: "4",
            ..Pool::default()
        },
    );
    let _lb = net.start_builtin(&pool);
    let run = spawn_ebb(&net, &["run", p(&pool)]);
    wait_log(&net, "m1", "install-start");
    net.cut("m1");
    let (code, _out, err) = run.finish();
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("outcome is unknown"), "{err}");
    let st = status(&net, &pool);
    let m1 = member(&st, "m1");
    assert_eq!(m1["state"], "failed", "{st}");
    let owed = m1["owed_undos"].to_string();
    assert!(owed.contains("maint") && owed.contains("hold"), "{owed}");
    // The balancer keeps it out and held; m2 was never touched.
    let lb = builtin_now(&net);
    let view = |m: &str| {
        lb["members"]
            .as_array()
            .and_then(|a| a.iter().find(|x| x["name"] == m))
            .cloned()
            .unwrap_or_default()
    };
    assert_eq!(view("m1")["state"], "stopped", "{lb}");
    assert_eq!(view("m1")["initial_state"], "stopped", "{lb}");
    assert_eq!(view("m2")["state"], "started", "{lb}");
    assert_eq!(net.count("m2", "maint-on"), 0, "m2 not started");
    net.restore("m1");
    let (code, _, err) = ebb(&net, &["resume", p(&pool)]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        net.count("m1", "install-start"),
        2,
        "the idempotent install ran again: {:?}",
        net.member_log("m1")
    );
    assert_finished(&net, &pool);
    assert_builtin_in_service(&net);
}

#[test]
fn a_link_cut_mid_install_of_a_non_idempotent_step_makes_resume_ask() {
    let net = TestNet::up(2);
    let pool = pool_file(
        &net,
        &Pool {
            install_sleep: "4",
            install_idempotent: false,
            ..Pool::default()
        },
    );
    let _lb = net.start_builtin(&pool);
    let run = spawn_ebb(&net, &["run", p(&pool)]);
    wait_log(&net, "m1", "install-start");
    net.cut("m1");
    let (code, _out, err) = run.finish();
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("outcome is unknown"), "{err}");
    net.restore("m1");
    // Asked, not re-run, and nothing changed.
    let (code, _, err) = ebb(&net, &["resume", p(&pool)]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("outcome is unknown")
            && err.contains("--assume-done \"m1:install\"")
            && err.contains("--rerun \"m1:install\""),
        "{err}"
    );
    // The operator looks at the member: the install went on there and completed.
    wait_log(&net, "m1", "install-end");
    let (code, _, err) = ebb(&net, &["resume", "--assume-done", "m1:install", p(&pool)]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(net.count("m1", "install-start"), 1, "not run twice");
    assert_finished(&net, &pool);
    assert_builtin_in_service(&net);
}

#[test]
fn a_link_cut_during_a_reboot_past_its_timeout_keeps_the_member_held_until_resume() {
    let net = TestNet::up(2);
    // Members reboot themselves (testnet.sh reboot), except m1: its reboot command asks
    // the test (which plays the machine room) to cut its link and reboot it; the link
    // comes back only after ebb gave up waiting.
    let req = net.path("reboot-requested");
    let pool = pool_file(
        &net,
        &Pool {
            reboot: true,
            reboot_timeout: "4s",
            ..Pool::default()
        },
    );
    std::fs::write(net.path("m1/cut-on-reboot"), "").unwrap();
    let _lb = net.start_builtin(&pool);
    let run = spawn_ebb(&net, &["run", p(&pool)]);
    wait_for(Duration::from_secs(60), "m1 asks to reboot", || {
        req.exists()
    });
    assert_eq!(std::fs::read_to_string(&req).unwrap().trim(), "m1");
    std::fs::remove_file(&req).unwrap();
    let boot = net.boot_id("m1");
    net.cut("m1");
    net.reboot("m1");
    assert_ne!(net.boot_id("m1"), boot);
    let (code, _out, err) = run.finish();
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("did not come back as a new boot within 4s"),
        "{err}"
    );
    // Held: back from its reboot and healthy, but the balancer keeps it out.
    net.restore("m1");
    let lb = builtin_now(&net);
    let m1 = lb["members"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["name"] == "m1"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(m1["state"], "stopped", "{lb}");
    assert_eq!(m1["initial_state"], "stopped", "{lb}");
    assert_eq!(net.count("m1", "maint-off"), 0, "nothing unwound yet");
    // Resume sees the reboot happened (a new boot) and does not reboot it again.
    let (code, out, err) = ebb(&net, &["resume", "--json", p(&pool)]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("already rebooted"), "{out}");
    assert!(!req.exists(), "only m1 asked the test to reboot it");
    assert_eq!(
        net.read("m2/reboots.log").lines().count(),
        1,
        "m2 rebooted itself"
    );
    assert_eq!(
        net.read("m1/reboots.log").lines().count(),
        1,
        "m1 rebooted once"
    );
    assert_finished(&net, &pool);
    assert_builtin_in_service(&net);
}

/// A client in ebb's host with a slow request through the balancer (`GET /stream`, 20 s on
/// the member): a connection that keeps a drain waiting. Returns what it received.
fn stream_through_lb(net: &TestNet) -> std::thread::JoinHandle<String> {
    use std::io::{Read, Write};
    net.thread_in("ebb", || {
        let Ok(mut s) = std::net::TcpStream::connect((LB_ADDR, 80)) else {
            return "connect failed".to_string();
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
        let _ = s.write_all(b"GET /stream HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n");
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    })
}

/// Waits (from ebb's host) until the builtin balancer shows `m` in `state`.
fn wait_builtin(net: &TestNet, m: &'static str, state: &'static str) {
    let seen = net
        .thread_in("ebb", move || {
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(60) {
                if builtin_members()
                    .is_some_and(|ms| ms.iter().any(|x| x.name == m && x.state == state))
                {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            false
        })
        .join()
        .expect("waiting for the balancer");
    assert!(
        seen,
        "the balancer never showed {m} {state} within 60 s; ebb said:\n{}",
        ebb_logs(net)
    );
}

/// Asserts that no member was ever seen in rotation while its own log showed it still in
/// maintenance (held out), in any sample.
fn assert_never_back_early(samples: &[Sample]) {
    assert!(samples.len() > 20, "too few samples: {}", samples.len());
    for s in samples {
        for m in &s.members {
            assert!(
                !(m.in_rotation && s.in_maintenance.contains(&m.name)),
                "{} was in rotation at {:?} while still in its maintenance: {s:?}",
                m.name,
                s.at
            );
        }
    }
}

#[test]
fn two_second_blips_during_a_drain_and_a_verify_cause_no_false_failure() {
    let net = TestNet::up(2);
    // The drain waits for the slow request to end by itself (20 s at most).
    let pool = pool_file(
        &net,
        &Pool {
            drain_timeout: "40s",
            ..Pool::default()
        },
    );
    let text = std::fs::read_to_string(&pool).unwrap().replace(
        "command = \"grep -qx 2.0",
        &format!(
            "command = \"echo verify >> {}/{{member}}/member.log; sleep 1; grep -qx 2.0",
            net.dir.path().display()
        ),
    );
    std::fs::write(&pool, text).unwrap();
    let _lb = net.start_builtin(&pool);
    let sampler = net.sample_builtin();
    // Two slow requests, one per member: m1's drain waits for its own.
    let clients = [stream_through_lb(&net), stream_through_lb(&net)];
    std::thread::sleep(Duration::from_millis(500));
    let run = spawn_ebb(&net, &["run", p(&pool)]);
    wait_builtin(&net, "m1", "draining");
    net.cut("lb");
    std::thread::sleep(Duration::from_secs(2));
    net.restore("lb");
    wait_log(&net, "m1", "verify");
    net.cut("m1");
    std::thread::sleep(Duration::from_secs(2));
    net.restore("m1");
    let (code, out, err) = run.finish();
    assert_eq!(code, Some(0), "no false failure: {err}{out}");
    for c in clients {
        let got = c.join().unwrap();
        assert!(
            got.ends_with("end\n"),
            "the drained request finished: {got:?}"
        );
    }
    assert_never_back_early(&sampler.finish());
    assert_finished(&net, &pool);
    assert_builtin_in_service(&net);
}

#[test]
fn the_balancer_cut_off_mid_drain_halts_with_the_member_held_and_resume_finishes() {
    let net = TestNet::up(2);
    let pool = pool_file(
        &net,
        &Pool {
            drain_timeout: "4s",
            ..Pool::default()
        },
    );
    let _lb = net.start_builtin(&pool);
    let _clients = [stream_through_lb(&net), stream_through_lb(&net)];
    std::thread::sleep(Duration::from_millis(500));
    let run = spawn_ebb(&net, &["run", p(&pool)]);
    wait_builtin(&net, "m1", "draining");
    let cut = Instant::now();
    net.cut("lb");
    let (code, _out, err) = run.finish();
    let halted = cut.elapsed();
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("the drain could not be confirmed within the drain timeout 4s"),
        "{err}"
    );
    // It halts at about the drain timeout: a balancer read in flight then is given up
    // after 5 s, and asking where the member was left takes at most 5 s more (it used to
    // wait out two more whole retry periods: 40 s after a 4 s drain timeout). Generous
    // for a loaded machine.
    assert!(
        halted < Duration::from_secs(25),
        "halted {halted:?} after the cut, with a 4 s drain timeout:\n{err}"
    );
    // It never moved on to the member's steps without a confirmed drain.
    assert_eq!(net.count("m1", "maint-on"), 0, "{:?}", net.member_log("m1"));
    assert_eq!(net.count("m1", "install-start"), 0);
    net.restore("lb");
    let lb = builtin_now(&net);
    let m1 = lb["members"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["name"] == "m1"))
        .cloned()
        .unwrap_or_default();
    assert_ne!(m1["state"], "started", "{lb}");
    assert_eq!(m1["initial_state"], "stopped", "held: {lb}");
    let (code, _, err) = ebb(&net, &["resume", p(&pool)]);
    assert_eq!(code, Some(0), "{err}");
    assert_finished(&net, &pool);
    assert_builtin_in_service(&net);
}

/// Kills the balancer (SIGKILL) when m1's install starts and starts it again once the
/// install ended, so that ebb's next balancer calls (m1's return) meet a dead balancer.
fn balancer_killed_and_restarted(balancer: Balancer) {
    let net = TestNet::up(2);
    let pool = pool_file(
        &net,
        &Pool {
            balancer,
            install_sleep: "1",
            ..Pool::default()
        },
    );
    let start = |net: &TestNet| match balancer {
        Balancer::Builtin => net.start_builtin(&pool),
        Balancer::Haproxy => net.start_haproxy(),
    };
    let mut lb = start(&net);
    let sampler = match balancer {
        Balancer::Builtin => net.sample_builtin(),
        Balancer::Haproxy => net.sample_haproxy(),
    };
    let run = spawn_ebb(&net, &["run", p(&pool)]);
    wait_log(&net, "m1", "install-start");
    lb.kill();
    wait_log(&net, "m1", "install-end");
    std::thread::sleep(Duration::from_millis(800));
    let _lb = start(&net);
    let (code, out, err) = run.finish();
    assert_eq!(code, Some(0), "{err}{out}");
    let samples = sampler.finish();
    assert_never_back_early(&samples);
    // The samples did see m1 out and back, and the balancer gone for a while.
    let seen = |f: &dyn Fn(&MemberView) -> bool| {
        samples
            .iter()
            .any(|s| s.members.iter().any(|m| m.name == "m1" && f(m)))
    };
    assert!(seen(&|m| !m.in_rotation), "m1 was seen out");
    let gap = samples
        .windows(2)
        .map(|w| w[1].at.saturating_sub(w[0].at))
        .max()
        .unwrap_or_default();
    assert!(
        gap >= Duration::from_millis(500),
        "the balancer was down: {gap:?}"
    );
    assert_finished(&net, &pool);
    if balancer == Balancer::Builtin {
        assert_builtin_in_service(&net);
    } else {
        let now = net
            .thread_in("ebb", haproxy_members)
            .join()
            .unwrap()
            .expect("haproxy answers");
        assert!(now.iter().all(|m| m.in_rotation), "{now:?}");
    }
}

#[test]
fn the_builtin_balancer_killed_and_restarted_mid_run_keeps_held_members_out() {
    balancer_killed_and_restarted(Balancer::Builtin);
}

#[test]
fn haproxy_killed_and_restarted_mid_run_keeps_held_members_out() {
    balancer_killed_and_restarted(Balancer::Haproxy);
}
