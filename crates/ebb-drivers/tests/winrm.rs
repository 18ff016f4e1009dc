//! The winrm transport against a fake WS-Management endpoint (no Windows can run here; see
//! tests/support_winrm and tests/fixtures/winrm): the exact PowerShell ebb sends, a
//! command's output and exit code, a timeout that sends Signal terminate, a reboot seen as
//! a new LastBootUpTime, failures (auth, TLS, unreachable) in words, and over HTTPS a
//! private CA (`ca_file`), a client certificate login and an NTLM login.

mod support_issue6;
mod support_winrm;
#[path = "support/tls.rs"]
mod tls;
use support_issue6::*;
use support_winrm::{FakeWinrm, Login, Reply};

use ebb_drivers::transport::command_line::powershell_script;
use ebb_engine::interfaces::{CommandOutcome, OutputSink, Transport};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const PASSWORD: &str = "s3cret pass";

/// A transport for one member reached at `url`, its password in the variable `pw_env`.
fn transport(dir: &std::path::Path, url: &str, pw_env: &str, extra: &str) -> Arc<dyn Transport> {
    member_transport(
        dir,
        &format!("winrm_url = \"{url}\"\nwinrm_auth = \"basic\"\nwinrm_user = 'CONTOSO\\ebb'\nwinrm_password_env = \"{pw_env}\"\n{extra}"),
    )
}

/// Runs `command` with no environment and no output sink, within `secs` seconds.
async fn run(t: &Arc<dyn Transport>, command: &str, secs: u64) -> CommandOutcome {
    t.run(command, &BTreeMap::new(), Duration::from_secs(secs), None)
        .await
        .unwrap_or_else(|e| panic!("{command}: {e}"))
}

/// A transport for the winrm member `cas1` with these keys.
fn member_transport(dir: &std::path::Path, keys: &str) -> Arc<dyn Transport> {
    let text = format!(
        "[pool]\nname = \"winrm-test\"\n\n{}\n[[member]]\nname = \"cas1\"\naddress = \"127.0.0.1:443\"\nshell = \"powershell\"\ntransport = \"winrm\"\n{keys}",
        file_balancer(dir, &["cas1"])
    );
    let plan = load_plan(dir, &text);
    ebb_drivers::transport::build(&plan, &plan.members[0]).expect("winrm transport")
}

#[tokio::test]
async fn a_command_runs_with_its_output_and_exit_code() {
    let fake = FakeWinrm::start("ebb", PASSWORD).await;
    std::env::set_var("EBB_TEST_WINRM_PW_1", PASSWORD);
    fake.script(
        "Get-Service MSExchangeIS",
        Reply {
            stdout: "Running\r\nline two\r\n".into(),
            stderr: "a warning\n".into(),
            exit: 3,
            ..Reply::default()
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let t = transport(dir.path(), &fake.url(), "EBB_TEST_WINRM_PW_1", "");
    let lines: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::new()));
    let l2 = lines.clone();
    let sink: OutputSink = Arc::new(move |l: &str| l2.lock().unwrap().push(l.to_string()));
    let mut env = BTreeMap::new();
    env.insert("EBB_MEMBER".to_string(), "cas1 it's".to_string());
    let command = "(Get-Service MSExchangeIS).Status; exit 3";
    let out = t
        .run(command, &env, Duration::from_secs(30), Some(sink))
        .await
        .expect("run");
    assert_eq!(out.exit_code, Some(3), "{out:?}");
    assert!(!out.timed_out && !out.connection_lost, "{out:?}");
    for want in ["Running", "line two", "a warning"] {
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
        !out.tail.contains("__ebb_"),
        "markers are not output: {:?}",
        out.tail
    );
    // Exactly the wrapper the ssh transport sends to PowerShell members, as powershell.exe
    // -EncodedCommand, in a shell that was then deleted.
    fake.seen(|s| {
        assert_eq!(s.scripts, vec![powershell_script(command, &env)]);
        assert_eq!(
            &s.command_lines[0][..4],
            [
                "powershell",
                "-NoProfile",
                "-NonInteractive",
                "-EncodedCommand"
            ]
        );
        assert_eq!((s.shells_created, s.shells_deleted), (1, 1));
        assert!(s.signals.is_empty());
    });
}

#[tokio::test]
async fn a_timeout_sends_signal_terminate_and_deletes_the_shell() {
    let fake = FakeWinrm::start("ebb", PASSWORD).await;
    std::env::set_var("EBB_TEST_WINRM_PW_2", PASSWORD);
    fake.script(
        "Start-Sleep 3600",
        Reply {
            hang: true,
            ..Reply::default()
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let t = transport(dir.path(), &fake.url(), "EBB_TEST_WINRM_PW_2", "");
    let out = run(&t, "Start-Sleep 3600", 1).await;
    assert!(out.timed_out, "{out:?}");
    assert_eq!(out.exit_code, None);
    fake.seen(|s| {
        assert_eq!(
            s.signals,
            vec!["http://schemas.microsoft.com/wbem/wsman/1/windows/shell/signal/terminate"]
        );
        assert_eq!(s.shells_deleted, 1);
    });
}

#[tokio::test]
async fn a_reboot_is_a_new_last_boot_up_time() {
    let fake = FakeWinrm::start("ebb", PASSWORD).await;
    std::env::set_var("EBB_TEST_WINRM_PW_3", PASSWORD);
    fake.script(
        "LastBootUpTime",
        Reply::out("2026-11-29T06:00:00.0000000Z\r\n", 0),
    );
    let dir = tempfile::tempdir().unwrap();
    let t = transport(dir.path(), &fake.url(), "EBB_TEST_WINRM_PW_3", "");
    let before = t.boot_id().await.expect("boot id");
    assert_eq!(before, "2026-11-29T06:00:00.0000000Z");
    fake.script(
        "LastBootUpTime",
        Reply::out("2026-11-29T06:07:31.5000000Z\r\n", 0),
    );
    let after = t.boot_id().await.expect("boot id after the reboot");
    assert_ne!(before, after);
    fake.seen(|s| {
        assert!(s.scripts.iter().all(|x| {
            x.contains(
            "(Get-CimInstance Win32_OperatingSystem).LastBootUpTime.ToUniversalTime().ToString('o')"
        )
        }));
        // Each command has its own shell: a member that rebooted is simply reached again.
        assert_eq!(s.shells_created, 2);
    });
}

#[tokio::test]
async fn a_refused_login_says_auth_failed() {
    let fake = FakeWinrm::start("ebb", PASSWORD).await;
    std::env::set_var("EBB_TEST_WINRM_PW_4", "wrong");
    let dir = tempfile::tempdir().unwrap();
    let t = transport(dir.path(), &fake.url(), "EBB_TEST_WINRM_PW_4", "");
    let e = t.boot_id().await.expect_err("refused").to_string();
    eprintln!("{e}");
    assert!(e.contains("WinRM") && e.contains("auth failed"), "{e}");
    assert!(e.contains("member \"cas1\""), "{e}");
    assert!(!e.contains("wrong"), "the password is never printed: {e}");
    assert!(fake.seen(|s| s.refused) >= 1);
}

#[tokio::test]
async fn tls_and_unreachable_failures_are_named() {
    // https:// to the fake, which speaks plain HTTP: the TLS handshake fails.
    let fake = FakeWinrm::start("ebb", PASSWORD).await;
    std::env::set_var("EBB_TEST_WINRM_PW_5", PASSWORD);
    let dir = tempfile::tempdir().unwrap();
    let url = format!("https://{}/wsman", fake.addr);
    let t = transport(dir.path(), &url, "EBB_TEST_WINRM_PW_5", "");
    let e = t.boot_id().await.expect_err("tls").to_string();
    eprintln!("{e}");
    assert!(e.contains("WinRM") && e.contains("TLS"), "{e}");
    assert!(e.contains("insecure_tls = true"), "names the key: {e}");
    // Nothing listens: unreachable.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let t = transport(
        dir.path(),
        &format!("http://127.0.0.1:{port}/wsman"),
        "EBB_TEST_WINRM_PW_5",
        "",
    );
    let e = t.boot_id().await.expect_err("unreachable").to_string();
    eprintln!("{e}");
    assert!(e.contains("WinRM") && e.contains("unreachable"), "{e}");
}

#[tokio::test]
async fn a_missing_password_is_named_by_its_variable() {
    let dir = tempfile::tempdir().unwrap();
    std::env::remove_var("EBB_TEST_WINRM_PW_UNSET");
    let t = transport(
        dir.path(),
        "http://127.0.0.1:9/wsman",
        "EBB_TEST_WINRM_PW_UNSET",
        "",
    );
    let e = t.boot_id().await.expect_err("no password").to_string();
    assert!(
        e.contains("EBB_TEST_WINRM_PW_UNSET") && e.contains("WinRM"),
        "{e}"
    );
}

#[test]
fn bad_settings_are_refused_with_their_key() {
    let dir = tempfile::tempdir().unwrap();
    let base = format!(
        "[pool]\nname = \"w\"\n\n{}\n[[member]]\nname = \"cas1\"\naddress = \"10.0.0.5\"\nshell = \"powershell\"\ntransport = \"winrm\"\n",
        file_balancer(dir.path(), &["cas1"])
    );
    let p = dir.path().join("pool.toml");
    for (extra, want) in [
        ("winrm_url = \"https://h/other\"\n", "winrm_url"),
        ("winrm_auth = \"digest\"\n", "winrm_auth"),
        (
            "winrm_auth = \"basic\"\nwinrm_url = \"http://10.0.0.5/wsman\"\n",
            "in clear",
        ),
        ("winrm_auth = \"certificate\"\n", "winrm_cert"),
        (
            "ca_file = \"ca.pem\"\ninsecure_tls = true\n",
            "set either ca_file or insecure_tls",
        ),
        (
            "ca_file = \"ca.pem\"\nwinrm_url = \"http://10.0.0.5/wsman\"\n",
            "ca_file applies to an https:// winrm_url only",
        ),
        #[cfg(not(feature = "kerberos"))]
        (
            "winrm_auth = \"kerberos\"\n",
            "features ebb-drivers/kerberos",
        ),
    ] {
        std::fs::write(&p, format!("{base}{extra}")).unwrap();
        let e = match ebb_engine::config::load(&p, &ebb_drivers::registry()) {
            Ok(_) => panic!("accepted: {extra}"),
            Err(e) => e.to_string(),
        };
        assert!(e.contains(want), "{extra}: {e}");
    }
}

#[test]
fn insecure_tls_is_the_key_and_its_former_name_is_still_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let text = |member: &str, defaults: &str| {
        format!(
            "[pool]\nname = \"w\"\n\n{}\n{defaults}\n[[member]]\nname = \"cas1\"\naddress = \"10.0.0.5\"\nshell = \"powershell\"\ntransport = \"winrm\"\n{member}",
            file_balancer(dir.path(), &["cas1"])
        )
    };
    let insecure = |member: &str, defaults: &str| {
        let plan = load_plan(dir.path(), &text(member, defaults));
        ebb_drivers::transport::winrm::Winrm::new(&plan, &plan.members[0])
            .unwrap_or_else(|e| panic!("{member}: {e:?}"))
            .settings()
            .insecure_tls
    };
    assert!(!insecure("", ""));
    assert!(insecure("insecure_tls = true\n", ""));
    assert!(!insecure("insecure_tls = false\n", ""));
    assert!(insecure("", "[defaults]\ninsecure_tls = true\n"));
    assert!(
        insecure("winrm_insecure_tls = true\n", ""),
        "the former name"
    );
    let p = dir.path().join("pool.toml");
    for (member, want) in [
        (
            "insecure_tls = true\nwinrm_insecure_tls = true\n",
            "winrm_insecure_tls is the former name of insecure_tls: set insecure_tls only",
        ),
        ("insecure_tls = \"yes\"\n", "insecure_tls"),
    ] {
        std::fs::write(&p, text(member, "")).unwrap();
        let e = match ebb_engine::config::load(&p, &ebb_drivers::registry()) {
            Ok(_) => panic!("accepted: {member}"),
            Err(e) => e.to_string(),
        };
        assert!(
            e.contains(want) && e.contains("pool.toml:"),
            "{member}: {e}"
        );
    }
}

#[test]
fn the_exchange_example_switched_to_winrm_is_valid() {
    // examples/exchange-2010-cas-array.toml documents the switch: comment out the ssh
    // lines, uncomment the WinRM ones.
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/exchange-2010-cas-array.toml");
    let text = std::fs::read_to_string(&path).expect("example");
    let switched = text
        .replace("\ntransport = \"ssh\"\n", "\n# transport = \"ssh\"\n")
        .replace("\nssh_user = \"ebb-maint\"", "\n# ssh_user = \"ebb-maint\"")
        .replace("\n# transport = \"winrm\"\n", "\ntransport = \"winrm\"\n")
        .replace("\n# winrm_user = ", "\nwinrm_user = ");
    assert!(switched.contains("\ntransport = \"winrm\"\nwinrm_user = 'CORP\\ebb-maint'\n"));
    let dir = tempfile::tempdir().unwrap();
    let plan = load_plan(dir.path(), &switched);
    assert!(plan.members.iter().all(|m| m.transport == "winrm"));
    std::env::set_var("EBB_WINRM_PASSWORD", "unused");
    for m in &plan.members {
        ebb_drivers::transport::build(&plan, m).expect("a winrm transport per member");
    }
}

#[tokio::test]
async fn a_tracked_command_is_named_by_its_pid_and_asked_about_later() {
    let fake = FakeWinrm::start("ebb", PASSWORD).await;
    std::env::set_var("EBB_TEST_WINRM_PW_6", PASSWORD);
    fake.script("Install-Rollup", Reply::out("done\n", 0));
    let dir = tempfile::tempdir().unwrap();
    let t = transport(dir.path(), &fake.url(), "EBB_TEST_WINRM_PW_6", "");
    let ids: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::new()));
    let i2 = ids.clone();
    let out = t
        .run_tracked(
            "Install-Rollup",
            &BTreeMap::new(),
            Duration::from_secs(30),
            None,
            Arc::new(move |id: &str| i2.lock().unwrap().push(id.to_string())),
        )
        .await
        .expect("run");
    assert_eq!(out.exit_code, Some(0));
    // The fake's wrapper output says $PID is 4242 (as the real wrapper prints it first).
    assert_eq!(*ids.lock().unwrap(), vec!["winrm 4242"]);
    assert!(t.describe_process("winrm 4242").contains("4242"));
    fake.script("Get-Process -Id 4242", Reply::out("running\n", 0));
    assert!(t.still_running("winrm 4242").await.expect("asked"));
    fake.script("Get-Process -Id 4242", Reply::out("gone\n", 0));
    assert!(!t.still_running("winrm 4242").await.expect("asked"));
    assert!(t.still_running("ssh 1 - -").await.is_err());
}

#[tokio::test]
async fn a_rollout_over_winrm_reboots_the_member_and_waits_for_its_new_boot() {
    let fake = FakeWinrm::start("ebb", PASSWORD).await;
    std::env::set_var("EBB_TEST_WINRM_PW_7", PASSWORD);
    // The "machine": Restart-Computer makes a new LastBootUpTime.
    let boot = Arc::new(Mutex::new(1u32));
    let b2 = boot.clone();
    fake.respond(Arc::new(move |cmd: String| {
        let b = b2.clone();
        Box::pin(async move {
            let mut boot = b.lock().unwrap();
            if cmd.contains("LastBootUpTime") {
                Reply::out(&format!("2026-11-29T0{}:00:00.0000000Z\n", *boot), 0)
            } else if cmd == "Restart-Computer -Force" {
                *boot += 1;
                Reply::out("", 0)
            } else if cmd == "Install-Rollup" {
                Reply::out("installing on cas1\n", 3010)
            } else if cmd == "Test-Rollup" {
                Reply::out("", 0)
            } else {
                Reply {
                    stderr: format!("unexpected: {cmd}\n"),
                    exit: 1,
                    ..Reply::default()
                }
            }
        })
    }));
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[pool]\nname = \"winrm-rollout\"\n\n{}\n[[member]]\nname = \"cas1\"\naddress = \"127.0.0.1:443\"\nshell = \"powershell\"\ntransport = \"winrm\"\nwinrm_url = \"{}\"\nwinrm_auth = \"basic\"\nwinrm_user = \"ebb\"\nwinrm_password_env = \"EBB_TEST_WINRM_PW_7\"\n\n\
         [[runbook.step]]\nname = \"rollup\"\nrun = \"Install-Rollup\"\nreboot = \"if-required\"\nreboot_required_exit_codes = [3010]\n\n\
         [runbook.reboot]\ncommand = \"Restart-Computer -Force\"\ntimeout = \"30s\"\npoll_interval = \"100ms\"\n\n\
         [[runbook.verify]]\nname = \"rollup\"\ncommand = \"Test-Rollup\"\n",
        file_balancer(dir.path(), &["cas1"]),
        fake.url()
    );
    let plan = load_plan(dir.path(), &text);
    let state = tempfile::tempdir().unwrap();
    let (code, log, _journal) = rollout(plan, state.path()).await;
    assert_eq!(code, 0, "{log}");
    assert!(
        log.contains("2026-11-29T01:00:00.0000000Z → 2026-11-29T02:00:00.0000000Z"),
        "the reboot was seen as a new LastBootUpTime: {log}"
    );
    assert!(log.contains("installing on cas1"), "output streamed: {log}");
    assert_eq!(*boot.lock().unwrap(), 2);
    fake.seen(|s| assert_eq!(s.shells_created, s.shells_deleted));
}

#[tokio::test]
async fn a_member_that_goes_away_mid_command_leaves_the_outcome_unknown() {
    let fake = FakeWinrm::start("ebb", PASSWORD).await;
    std::env::set_var("EBB_TEST_WINRM_PW_12", PASSWORD);
    fake.script(
        "Install-Rollup",
        Reply {
            vanish: true,
            ..Reply::default()
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let t = transport(dir.path(), &fake.url(), "EBB_TEST_WINRM_PW_12", "");
    let out = run(&t, "Install-Rollup", 60).await;
    // Not a failure and not a success: the engine holds the member (outcome unknown).
    assert!(out.connection_lost, "{out:?}");
    assert_eq!((out.exit_code, out.timed_out), (None, false), "{out:?}");
    // The operator sees why with the step's output.
    assert!(out.tail.contains("ebb: WinRM Receive failed:"), "{out:?}");
    assert_eq!(fake.seen(|s| s.shells_created), 1);
}

#[tokio::test]
async fn a_cancelled_run_still_sends_signal_terminate() {
    let fake = FakeWinrm::start("ebb", PASSWORD).await;
    std::env::set_var("EBB_TEST_WINRM_PW_8", PASSWORD);
    fake.script(
        "Start-Sleep 3600",
        Reply {
            hang: true,
            ..Reply::default()
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let t = transport(dir.path(), &fake.url(), "EBB_TEST_WINRM_PW_8", "");
    // Ctrl-C: the run's future is dropped while the command runs (its own timeout is long).
    let cancelled = tokio::time::timeout(
        Duration::from_millis(800),
        t.run(
            "Start-Sleep 3600",
            &BTreeMap::new(),
            Duration::from_secs(3600),
            None,
        ),
    )
    .await;
    assert!(cancelled.is_err(), "still running when cancelled");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while fake.seen(|s| s.shells_deleted) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "no Delete after the cancel"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    fake.seen(|s| {
        assert_eq!(
            s.signals,
            vec!["http://schemas.microsoft.com/wbem/wsman/1/windows/shell/signal/terminate"]
        );
    });
}

/// A private CA made in `dir`, and a fake served over HTTPS with the server certificate it
/// signed, answering `Get-ExchangeServer` with "CAS1".
async fn https_fake(dir: &std::path::Path, login: Login) -> (tls::PrivateCa, FakeWinrm) {
    let certs = tls::private_ca(dir);
    let fake = FakeWinrm::start_tls(
        "ebb",
        PASSWORD,
        tls::acceptor(&certs.server.0, &certs.server.1),
        login,
    )
    .await;
    fake.script("Get-ExchangeServer", Reply::out("CAS1\r\n", 0));
    (certs, fake)
}

#[tokio::test]
async fn a_private_ca_in_ca_file_is_trusted_over_https_and_refused_without_it() {
    let dir = tempfile::tempdir().unwrap();
    let (certs, fake) = https_fake(dir.path(), Login::Basic).await;
    std::env::set_var("EBB_TEST_WINRM_PW_9", PASSWORD);
    let ca = format!("ca_file = \"{}\"\n", certs.ca.display());
    let t = transport(dir.path(), &fake.https_url(), "EBB_TEST_WINRM_PW_9", &ca);
    let out = run(&t, "Get-ExchangeServer", 30).await;
    assert_eq!(out.exit_code, Some(0), "{out:?}");
    assert_eq!(out.tail, "CAS1");
    fake.seen(|s| {
        assert_eq!(s.refused, 0);
        assert_eq!((s.shells_created, s.shells_deleted), (1, 1));
        // The member sees its own name in Host, not the bridge's.
        let own = fake.addr.to_string();
        assert!(s.hosts.iter().all(|h| *h == own), "{:?}", s.hosts);
    });
    // No ca_file: the private CA is not trusted, and the message says what to set.
    let t = transport(dir.path(), &fake.https_url(), "EBB_TEST_WINRM_PW_9", "");
    let e = t.boot_id().await.expect_err("untrusted").to_string();
    eprintln!("{e}");
    assert!(
        e.contains("member \"cas1\"") && e.contains("WinRM") && e.contains("TLS"),
        "{e}"
    );
    assert!(e.contains("ca_file"), "names the key: {e}");
    // A ca_file of another CA: refused too, naming the file.
    let other = format!("ca_file = \"{}\"\n", certs.stranger_ca.display());
    let t = transport(dir.path(), &fake.https_url(), "EBB_TEST_WINRM_PW_9", &other);
    let e = t.boot_id().await.expect_err("another CA").to_string();
    eprintln!("{e}");
    assert!(e.contains("WinRM") && e.contains("TLS"), "{e}");
    assert!(e.contains("stranger-ca.pem"), "names the file: {e}");
    assert!(!e.contains(PASSWORD), "{e}");
    // Nothing reached the fake's WS-Management layer without a trusted certificate.
    assert_eq!(fake.seen(|s| s.shells_created), 1);
}

#[tokio::test]
async fn a_client_certificate_logs_in_over_https() {
    let dir = tempfile::tempdir().unwrap();
    let certs = tls::private_ca(dir.path());
    let fake = FakeWinrm::start_tls(
        "ebb",
        PASSWORD,
        tls::acceptor_requiring_client(&certs.server.0, &certs.server.1, &certs.ca),
        Login::Certificate,
    )
    .await;
    fake.script("Get-ExchangeServer", Reply::out("CAS1\r\n", 5));
    let keys = |cert: &std::path::Path, key: &std::path::Path| {
        format!(
            "winrm_url = \"{}\"\nwinrm_auth = \"certificate\"\nwinrm_cert = \"{}\"\nwinrm_key = \"{}\"\nca_file = \"{}\"\n",
            fake.https_url(),
            cert.display(),
            key.display(),
            certs.ca.display()
        )
    };
    let t = member_transport(dir.path(), &keys(&certs.client.0, &certs.client.1));
    let out = run(&t, "Get-ExchangeServer", 30).await;
    assert_eq!((out.exit_code, out.tail.as_str()), (Some(5), "CAS1"));
    // Every request carried the https/mutual Authorization (the fake refuses others).
    assert_eq!(fake.seen(|s| s.refused), 0);
    // A certificate the member's CA did not sign: the TLS handshake refuses it.
    let stranger = dir.path().join("stranger");
    std::fs::create_dir(&stranger).unwrap();
    let (stranger_cert, stranger_key) = tls::self_signed(&stranger);
    let t = member_transport(dir.path(), &keys(&stranger_cert, &stranger_key));
    let e = t.boot_id().await.expect_err("refused").to_string();
    eprintln!("{e}");
    assert!(
        e.contains("member \"cas1\"") && e.contains("WinRM") && e.contains("TLS"),
        "{e}"
    );
    assert!(e.contains("client certificate"), "{e}");
    assert_eq!(fake.seen(|s| s.shells_created), 1);
}

#[tokio::test]
async fn an_ntlm_login_over_https_proves_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let (certs, fake) = https_fake(dir.path(), Login::Ntlm).await;
    std::env::set_var("EBB_TEST_WINRM_PW_10", PASSWORD);
    std::env::set_var("EBB_TEST_WINRM_PW_11", "wrong");
    // Through ebb's TLS (ca_file: the bridge, one TLS connection per client connection),
    // and through winrm-rs's own (insecure_tls, with its channel binding token).
    let ca = format!("ca_file = \"{}\"", certs.ca.display());
    for tls_keys in [ca.as_str(), "insecure_tls = true"] {
        let keys = |pw_env: &str| {
            format!(
                "winrm_url = \"{}\"\nwinrm_auth = \"ntlm\"\nwinrm_user = 'CONTOSO\\ebb'\nwinrm_password_env = \"{pw_env}\"\n{tls_keys}\n",
                fake.https_url()
            )
        };
        let before = fake.seen(|s| s.ntlm_logins);
        let t = member_transport(dir.path(), &keys("EBB_TEST_WINRM_PW_10"));
        let out = run(&t, "Get-ExchangeServer", 30).await;
        assert_eq!(
            (out.exit_code, out.tail.as_str()),
            (Some(0), "CAS1"),
            "{tls_keys}"
        );
        // Create, Command, Receive and Delete: each one logged in with NTLM.
        assert!(
            fake.seen(|s| s.ntlm_logins) >= before + 4,
            "{tls_keys}: {} logins",
            fake.seen(|s| s.ntlm_logins) - before
        );
        let t = member_transport(dir.path(), &keys("EBB_TEST_WINRM_PW_11"));
        let e = t.boot_id().await.expect_err("wrong password").to_string();
        eprintln!("{e}");
        assert!(
            e.contains("WinRM") && e.contains("auth failed") && e.contains("ntlm"),
            "{tls_keys}: {e}"
        );
        assert!(!e.contains("wrong"), "never printed: {e}");
    }
}
