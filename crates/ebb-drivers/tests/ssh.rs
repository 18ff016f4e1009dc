//! The ssh transport against a real OpenSSH server on loopback (started by the test with
//! keys made for it): steps, output, exit codes, environment, timeouts that kill the remote
//! command, a host key mismatch, an unreachable member, and a reboot through the engine.

mod support_issue6;
use support_issue6::*;

use ebb_engine::interfaces::{OutputSink, Transport};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn pool(dir: &Path, member_extra: &str) -> String {
    format!(
        "[pool]\nname = \"ssh-test\"\n\n{}\n[[member]]\nname = \"m1\"\naddress = \"127.0.0.1:9\"\n{member_extra}",
        file_balancer(dir, &["m1"])
    )
}

fn transport(sshd: &Sshd, member_extra: &str) -> Arc<dyn Transport> {
    let text = pool(
        sshd.dir.path(),
        &format!(
            "{}boot_id = \"cat {}\"\n{member_extra}",
            sshd.member_keys(),
            sshd.path("boot_id").display()
        ),
    );
    let plan = load_plan(sshd.dir.path(), &text);
    ebb_drivers::transport::build(&plan, &plan.members[0]).expect("ssh transport")
}

#[tokio::test]
async fn commands_run_with_their_output_exit_code_and_environment() {
    let sshd = Sshd::start();
    let t = transport(&sshd, "");
    let lines: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::new()));
    let l2 = lines.clone();
    let sink: OutputSink = Arc::new(move |l: &str| l2.lock().unwrap().push(l.to_string()));
    let mut env = BTreeMap::new();
    env.insert("EBB_MEMBER".to_string(), "m1 it's".to_string());
    let started = Instant::now();
    let out = t
        .run(
            "echo hello; echo oops >&2; printf '%s\\n' \"$EBB_MEMBER\"; exit 3",
            &env,
            Duration::from_secs(20),
            Some(sink),
        )
        .await
        .expect("run");
    let first = started.elapsed();
    assert_eq!(out.exit_code, Some(3), "{out:?}");
    assert!(!out.timed_out);
    for want in ["hello", "oops", "m1 it's"] {
        assert!(
            out.tail.lines().any(|l| l == want),
            "{want} in {:?}",
            out.tail
        );
        assert!(
            lines.lock().unwrap().iter().any(|l| l == want),
            "{want} streamed"
        );
    }
    assert!(
        !out.tail.contains("__ebb_pid__"),
        "the pid marker is not output: {:?}",
        out.tail
    );
    // Later commands reuse the member's connection.
    let started = Instant::now();
    for i in 0..10 {
        let o = t
            .run(
                &format!("exit {i}"),
                &BTreeMap::new(),
                Duration::from_secs(20),
                None,
            )
            .await
            .expect("run");
        assert_eq!(o.exit_code, Some(i));
    }
    let reused = started.elapsed() / 10;
    eprintln!(
        "ssh: first command {first:?} (new connection), then {reused:?} per command (reused)"
    );
    assert!(
        reused < first,
        "reused connection {reused:?} not faster than the first {first:?}"
    );
    assert_eq!(t.boot_id().await.expect("boot id"), "boot-1");
}

#[tokio::test]
async fn a_timeout_kills_the_remote_command_and_what_it_started() {
    let sshd = Sshd::start();
    let t = transport(&sshd, "");
    let d = sshd.dir.path().display().to_string();
    let started = Instant::now();
    let out = t
        .run(
            &format!("echo $$ > {d}/pid; sleep 60 & echo $! > {d}/child; echo started; wait"),
            &BTreeMap::new(),
            Duration::from_secs(1),
            None,
        )
        .await
        .expect("run");
    let took = started.elapsed();
    assert!(out.timed_out, "{out:?}");
    assert_eq!(out.exit_code, None);
    assert!(out.tail.contains("started"), "{:?}", out.tail);
    assert!(
        took < Duration::from_secs(8),
        "timeout handling took {took:?}"
    );
    let pid: u32 = std::fs::read_to_string(format!("{d}/pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let child: u32 = std::fs::read_to_string(format!("{d}/child"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while (alive(pid) || alive(child)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!alive(pid), "the remote shell {pid} still runs");
    assert!(!alive(child), "the remote sleep {child} still runs");
    eprintln!("ssh: a 1 s timeout returned after {took:?}, remote processes gone");
    // The member's connection still works afterwards.
    let o = t
        .run("echo ok", &BTreeMap::new(), Duration::from_secs(20), None)
        .await
        .expect("run after a timeout");
    assert_eq!(o.exit_code, Some(0));
}

#[tokio::test]
async fn a_host_key_mismatch_is_an_error_naming_the_member_never_an_accept() {
    let sshd = Sshd::start();
    let wrong = sshd.path("wrong_known_hosts").display().to_string();
    let marker = sshd.path("ran");
    // The member's own ssh_known_hosts is replaced by the wrong one.
    let text = pool(
        sshd.dir.path(),
        &sshd
            .member_keys()
            .replace(&sshd.path("known_hosts").display().to_string(), &wrong),
    );
    let plan = load_plan(sshd.dir.path(), &text);
    let t = ebb_drivers::transport::build(&plan, &plan.members[0]).expect("transport");
    let err = t
        .run(
            &format!("touch {}", marker.display()),
            &BTreeMap::new(),
            Duration::from_secs(20),
            None,
        )
        .await
        .expect_err("a changed host key must fail");
    let msg = err.to_string();
    assert!(msg.contains("member \"m1\""), "{msg}");
    assert!(msg.contains("host key verification failed"), "{msg}");
    assert!(msg.contains(&wrong), "{msg}");
    assert!(!marker.exists(), "the command must not have run");
    // An empty known_hosts (unknown host) is refused the same way.
    let empty = sshd.path("empty_known_hosts");
    std::fs::write(&empty, "").unwrap();
    let text = pool(
        sshd.dir.path(),
        &sshd.member_keys().replace(
            &sshd.path("known_hosts").display().to_string(),
            &empty.display().to_string(),
        ),
    );
    let plan = load_plan(sshd.dir.path(), &text);
    let t = ebb_drivers::transport::build(&plan, &plan.members[0]).expect("transport");
    let err = t
        .boot_id()
        .await
        .expect_err("an unknown host key must fail");
    assert!(
        err.to_string().contains("host key verification failed"),
        "{err}"
    );
    assert!(
        std::fs::read_to_string(&empty).unwrap().is_empty(),
        "ebb must never add a key to known_hosts"
    );
}

#[tokio::test]
async fn an_unreachable_member_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let text = pool(
        dir.path(),
        &format!("transport = \"ssh\"\nssh_port = {port}\nssh_connect_timeout = \"3s\"\n"),
    );
    let plan = load_plan(dir.path(), &text);
    let t = ebb_drivers::transport::build(&plan, &plan.members[0]).expect("transport");
    let started = Instant::now();
    let err = t
        .run("true", &BTreeMap::new(), Duration::from_secs(20), None)
        .await
        .expect_err("nothing listens there");
    let msg = err.to_string();
    assert!(
        msg.contains("member \"m1\" is unreachable over ssh at 127.0.0.1:"),
        "{msg}"
    );
    assert!(msg.contains("Connection refused"), "{msg}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        t.boot_id().await.is_err(),
        "a member that is down has no boot id"
    );
}

#[test]
fn ssh_settings_are_validated_with_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let text = pool(
        dir.path(),
        "transport = \"ssh\"\nssh_port = 70000\nssh_options = [\"StrictHostKeyChecking=no\", \"bogus\"]\nssh_user = 3\n",
    );
    let p = dir.path().join("pool.toml");
    std::fs::write(&p, &text).unwrap();
    let errs = ebb_engine::config::load(&p, &ebb_drivers::registry())
        .expect_err("invalid")
        .to_string();
    let line = |k: &str| text.lines().position(|l| l.starts_with(k)).unwrap() + 1;
    assert!(
        errs.contains(&format!(
            ":{}: member[0].ssh_port: expected a port number",
            line("ssh_port")
        )),
        "{errs}"
    );
    assert!(
        errs.contains("member[0].ssh_options: \"StrictHostKeyChecking\" is set by ebb"),
        "{errs}"
    );
    assert!(
        errs.contains("\"bogus\" is not of the form Key=Value"),
        "{errs}"
    );
    assert!(
        errs.contains(&format!(
            ":{}: member[0].ssh_user: expected a non-empty string",
            line("ssh_user")
        )),
        "{errs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_over_ssh_reboots_members_and_waits_for_the_new_boot() {
    let sshd = Arc::new(Mutex::new(Sshd::start()));
    let (dir, keys) = {
        let s = sshd.lock().unwrap();
        (s.dir.path().to_path_buf(), s.member_keys())
    };
    let d = dir.display();
    for m in ["m1", "m2"] {
        std::fs::write(dir.join(format!("boot_{m}")), format!("{m}-boot-1\n")).unwrap();
    }
    let text = format!(
        "[pool]\nname = \"ssh-rollout\"\nmax_unavailable = 1\n\n{bal}\n[defaults]\n{keys}boot_id = \"cat {d}/boot_{{member}}\"\n\n\
         [[member]]\nname = \"m1\"\naddress = \"127.0.0.1:1\"\n\n[[member]]\nname = \"m2\"\naddress = \"127.0.0.1:2\"\n\n\
         [[runbook.step]]\nname = \"maintenance\"\nrun = \"touch {d}/{{member}}.maint\"\nundo = \"rm {d}/{{member}}.maint\"\n\n\
         [[runbook.step]]\nname = \"install\"\nrun = \"echo installing on $EBB_MEMBER; echo 1.1 > {d}/{{member}}.version; exit 100\"\nreboot = \"if-required\"\nreboot_required_exit_codes = [100]\n\n\
         [runbook.reboot]\ncommand = \"touch {d}/{{member}}.reboot-requested\"\ntimeout = \"30s\"\npoll_interval = \"200ms\"\n\n\
         [[runbook.verify]]\nname = \"version\"\ncommand = \"grep -qx 1.1 {d}/{{member}}.version\"\nretries = 2\ninterval = \"200ms\"\n",
        bal = file_balancer(&dir, &["m1", "m2"]),
    );
    let plan = load_plan(&dir, &text);
    // The "machine": on a reboot request, sshd and every session go away, the boot
    // identity changes, and sshd comes back.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (s2, stop2, dir2) = (sshd.clone(), stop.clone(), dir.clone());
    let machine = std::thread::spawn(move || {
        let mut reboots = Vec::new();
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            for m in ["m1", "m2"] {
                let req = dir2.join(format!("{m}.reboot-requested"));
                if req.exists() {
                    let _ = std::fs::remove_file(&req);
                    let t = Instant::now();
                    s2.lock().unwrap().stop();
                    std::thread::sleep(Duration::from_millis(500));
                    std::fs::write(dir2.join(format!("boot_{m}")), format!("{m}-boot-2\n"))
                        .unwrap();
                    s2.lock().unwrap().start_again();
                    reboots.push((m, t.elapsed()));
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        reboots
    });
    let state = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let (code, log, _journal) = rollout(plan, state.path()).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let reboots = machine.join().unwrap();
    assert_eq!(code, 0, "{log}");
    assert_eq!(reboots.len(), 2, "{reboots:?}");
    for m in ["m1", "m2"] {
        assert!(
            log.contains(&format!("boot {m}-boot-1 → {m}-boot-2")),
            "{m} rebooted to a new boot: {log}"
        );
        assert!(
            !dir.join(format!("{m}.maint")).exists(),
            "{m}: undo ran over ssh"
        );
        assert_eq!(
            std::fs::read_to_string(dir.join(format!("lb/{m}.state")))
                .unwrap()
                .trim(),
            "started"
        );
    }
    assert!(log.contains("installing on m1"), "output streamed: {log}");
    assert!(
        !log.contains("never seen down"),
        "the reboot was seen: {log}"
    );
    eprintln!(
        "ssh rollout of 2 members with a reboot each: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn preflight_names_the_members_ssh_cannot_reach_before_a_run() {
    let sshd = Sshd::start();
    let d = sshd.dir.path();
    let good = sshd.member_keys();
    let bad = good.replace(
        &sshd.path("known_hosts").display().to_string(),
        &sshd.path("wrong_known_hosts").display().to_string(),
    );
    let text = format!(
        "[pool]\nname = \"pre\"\n\n{}\n[defaults]\nboot_id = \"cat {}\"\n\n[[member]]\nname = \"good\"\naddress = \"127.0.0.1:1\"\n{good}\n[[member]]\nname = \"bad\"\naddress = \"127.0.0.1:2\"\n{bad}\n[[member]]\nname = \"here\"\naddress = \"127.0.0.1:3\"\n",
        file_balancer(d, &["good", "bad", "here"]),
        sshd.path("boot_id").display()
    );
    let plan = load_plan(d, &text);
    let drivers = ebb_drivers::build(&plan).expect("drivers");
    let problems = ebb_drivers::transport::preflight(&plan, &drivers.transports).await;
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].0, "bad");
    assert!(
        problems[0].1.contains("host key verification failed"),
        "{problems:?}"
    );
}

/// Starts `command` over ssh and abandons it the way a `kill -9` of ebb does (nothing is
/// dropped, nothing cleaned up), once the transport has named its remote process.
async fn start_and_abandon(t: &Arc<dyn Transport>, command: &str) -> String {
    let id: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
    let id2 = id.clone();
    let started: ebb_engine::interfaces::StartedSink =
        Arc::new(move |p: &str| *id2.lock().unwrap() = Some(p.to_string()));
    let env = BTreeMap::new();
    let mut fut = Box::pin(t.run_tracked(command, &env, Duration::from_secs(60), None, started));
    let deadline = Instant::now() + Duration::from_secs(30);
    while id.lock().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the command was never named");
        tokio::select! {
            r = &mut fut => panic!("the command ended early: {r:?}"),
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
    }
    std::mem::forget(fut);
    let id = id.lock().unwrap().clone().unwrap();
    id
}

#[tokio::test]
async fn a_remote_command_left_running_by_a_dead_ebb_is_found_waited_for_and_stopped() {
    let sshd = Sshd::start();
    let log = sshd.path("left.log");
    let cmd = format!(
        "echo start $$ >> {0}; sleep 3; echo end $$ >> {0}",
        log.display()
    );
    let first = transport(&sshd, "");
    let id = start_and_abandon(&first, &cmd).await;
    // A later ebb: its own transport, its own connection.
    let later = transport(&sshd, "");
    assert!(
        later.describe_process(&id).contains("process group"),
        "{}",
        later.describe_process(&id)
    );
    assert!(later.still_running(&id).await.expect("ask"), "{id}");
    // The same pid with another start time is another process (a reused id).
    let mut f: Vec<&str> = id.split(' ').collect();
    assert_eq!(f.len(), 4, "ssh PID START BOOT: {id}");
    assert_ne!(f[2], "-", "the start time is known on Linux: {id}");
    f[2] = "1";
    assert!(!later.still_running(&f.join(" ")).await.expect("ask"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while later.still_running(&id).await.expect("ask") {
        assert!(Instant::now() < deadline, "never ended");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        text.lines().filter(|l| l.starts_with("end ")).count(),
        1,
        "{text}"
    );

    // Stopped instead: it never ends by itself.
    std::fs::remove_file(&log).unwrap();
    let id = start_and_abandon(&first, &cmd).await;
    later.stop_process(&id).await.expect("stop");
    assert!(!later.still_running(&id).await.expect("ask"));
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains("end "), "killed before its end: {text}");
}
