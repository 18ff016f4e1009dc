//! Verification checks: the exact commands generated for systemd and Windows and the
//! parsing of their outputs (fixtures), `logs` from a real file through the engine (only
//! lines since the update began count), `version` and its pool-wide table, HTTPS against a
//! real TLS server with a self-signed certificate, and config errors for the new keys.

mod support_issue6;
#[path = "support/tls.rs"]
mod tls;
use support_issue6::*;

use ebb_drivers::check::http::HttpCheck;
use ebb_drivers::check::logs::{LogSource, LogsSpec};
use ebb_drivers::check::{logs, services, version};
use ebb_engine::interfaces::{BuiltChecks, CheckContext, Checker};
use ebb_engine::plan::Shell;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn fixture(name: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/support_issue6/fixtures")
        .join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn services_commands_for_systemd_and_windows() {
    let names = strings(&["nginx", "app-worker@*", "postfix@-.service"]);
    assert_eq!(
        services::command(Shell::Sh, &names),
        "systemctl list-units --all --type=service --no-legend --plain --no-pager -- nginx.service 'app-worker@*' postfix@-.service"
    );
    assert_eq!(
        services::command(Shell::PowerShell, &strings(&["MSExchange*", "FSC'Controller"])),
        "Get-Service -Name 'MSExchange*','FSC''Controller' -ErrorAction SilentlyContinue | ForEach-Object { '{0}|{1}' -f $_.Name, $_.Status }"
    );
}

#[test]
fn services_states_are_judged_from_recorded_outputs() {
    let sd = services::parse_systemd(&fixture("systemctl_list_units.txt"));
    assert_eq!(sd.len(), 6);
    assert!(sd[0].running && sd[0].name == "nginx.service");
    let wrong = services::judge(
        Shell::Sh,
        &sd,
        &strings(&["nginx", "app-worker@*", "redis"]),
        &strings(&["apt-daily", "php8.2-fpm"]),
    );
    assert_eq!(
        wrong,
        strings(&[
            "app-worker@2.service: failed/failed (expected running)",
            "redis: not found (expected running)",
            "php8.2-fpm.service: active/running (expected stopped)",
        ])
    );
    let win = services::parse_windows(&fixture("get_service.txt"));
    // The tutorial's verification: Exchange services running, Forefront stopped while out.
    let ok = services::judge(
        Shell::PowerShell,
        &win,
        &strings(&[
            "msexchangeADTopology",
            "MSExchangeIS",
            "MSExchangeFrontEnd*",
        ]),
        &strings(&["FSCController", "NoSuchService"]),
    );
    assert!(ok.is_empty(), "{ok:?}");
    let wrong = services::judge(
        Shell::PowerShell,
        &win,
        &strings(&["MSExchange*"]),
        &strings(&["Spooler"]),
    );
    assert_eq!(
        wrong,
        strings(&[
            "MSExchangeTransport: Stopped (expected running)",
            "Spooler: Running (expected stopped)",
        ])
    );
}

fn logs_spec(source: LogSource, level: Option<&str>) -> LogsSpec {
    LogsSpec {
        source,
        level: level.map(String::from),
        fail_on: vec![],
        ignore: vec![],
        expect: vec![],
        lookback: Duration::from_secs(3600),
    }
}

#[test]
fn logs_commands_for_the_journal_and_the_windows_event_log() {
    let plan = plan_with_members("", "");
    let m = &plan.members[0];
    let spec = logs_spec(
        LogSource::Journal {
            unit: Some("nginx.service".into()),
        },
        Some("err"),
    );
    assert_eq!(
        logs::command(&spec, m, 1_795_000_000),
        "journalctl --no-pager --quiet --output=short-iso --since=@1795000000 --priority=err --unit=nginx.service"
    );
    let spec = logs_spec(
        LogSource::EventLog {
            log: "Application".into(),
        },
        None,
    );
    assert_eq!(
        logs::command(&spec, m, 1_795_000_000),
        "Get-WinEvent -FilterHashtable @{LogName='Application'; StartTime=[DateTimeOffset]::FromUnixTimeSeconds(1795000000).LocalDateTime; Level=1,2,3} -ErrorAction SilentlyContinue | ForEach-Object { '{0:o}|{1}|{2}|{3}|{4}' -f $_.TimeCreated.ToUniversalTime(), $_.LevelDisplayName, $_.ProviderName, $_.Id, ($_.Message -replace '\\s+', ' ') }"
    );
    assert_eq!(logs::event_levels("information"), "0,1,2,3,4");
    assert_eq!(logs::event_levels("error"), "1,2");
}

#[test]
fn logs_outputs_are_judged_showing_the_offending_lines() {
    let lines: Vec<String> = fixture("journalctl_short_iso.txt")
        .lines()
        .map(String::from)
        .collect();
    let entries = logs::parse_entries(&lines);
    let mut spec = logs_spec(LogSource::Journal { unit: None }, None);
    spec.ignore = strings(&["types_hash"]);
    let err = logs::judge(&spec, &entries, "T").expect_err("two offending entries");
    assert!(err.starts_with("2 offending entries since T: "), "{err}");
    assert!(err.contains("ERROR database connection refused"), "{err}");
    assert!(!err.contains("types_hash"), "{err}");
    spec.fail_on = strings(&["(?i)database"]);
    let err = logs::judge(&spec, &entries, "T").expect_err("one");
    assert!(err.starts_with("1 offending entry"), "{err}");

    let lines: Vec<String> = fixture("get_winevent.txt")
        .lines()
        .map(String::from)
        .collect();
    let entries = logs::parse_entries(&lines);
    assert_eq!(entries.len(), 2);
    let mut spec = logs_spec(
        LogSource::EventLog {
            log: "Application".into(),
        },
        None,
    );
    spec.fail_on = strings(&["^[^|]*\\|Error\\|"]);
    spec.expect = strings(&["Setup completed"]);
    let err = logs::judge(&spec, &entries, "T").expect_err("an error and a missing line");
    assert!(err.contains("DSC_E_NO_SUITABLE_CDC"), "{err}");
    assert!(
        err.contains("no entry since T matches /Setup completed/"),
        "{err}"
    );
}

#[test]
fn log_line_timestamps() {
    let t = |s: &str| logs::line_time(s);
    let base = t("2026-11-25T12:00:00Z").unwrap();
    assert_eq!(base, 1_795_608_000);
    assert_eq!(t("2026-11-25 12:00:00,123 ERROR x"), Some(base));
    assert_eq!(t("2026-11-25T13:00:00+01:00 x"), Some(base));
    assert_eq!(t("2026-11-25T12:00:00+0000 host x"), Some(base));
    assert_eq!(t("[11/25/2026 12:00:00.0123] [0] Setup"), Some(base));
    assert_eq!(t("    at Foo.Bar()"), None);
    let lines = strings(&[
        "2026-11-25T11:00:00Z ERROR old",
        "  continuation of old",
        "2026-11-25T12:00:01Z ERROR new",
        "  continuation of new",
    ]);
    assert_eq!(
        logs::file_entries_since(&lines, base).unwrap(),
        strings(&["2026-11-25T12:00:01Z ERROR new", "  continuation of new"])
    );
    assert!(logs::file_entries_since(&strings(&["no time here"]), base).is_err());
}

fn plan_with_members(extra_member: &str, rest: &str) -> ebb_engine::plan::Plan {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[pool]\nname = \"checks\"\n\n{}\n[[member]]\nname = \"web1\"\naddress = \"127.0.0.1:1\"\n{extra_member}\n[[member]]\nname = \"web2\"\naddress = \"127.0.0.1:2\"\nvars = {{ v = \"2\" }}\n{rest}",
        file_balancer(dir.path(), &["web1", "web2"])
    );
    let p = load_plan(dir.path(), &text);
    std::mem::forget(dir);
    p
}

#[tokio::test]
async fn a_logs_check_from_a_file_counts_only_what_was_written_since_the_update_began() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    // Yesterday's error must not fail today's update.
    std::fs::write(
        dir.path().join("web1.log"),
        "2020-01-01T00:00:00Z ERROR old failure\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("web2.log"), "").unwrap();
    let text = format!(
        "[pool]\nname = \"logs\"\n\n{bal}\n[[member]]\nname = \"web1\"\naddress = \"127.0.0.1:1\"\n\n[[member]]\nname = \"web2\"\naddress = \"127.0.0.1:2\"\n\n\
         [[runbook.step]]\nname = \"install\"\nrun = \"sleep 1; echo \\\"$(date -u +%Y-%m-%dT%H:%M:%SZ) INFO setup completed successfully\\\" >> {d}/{{member}}.log; if [ {{member}} = web2 ]; then echo \\\"$(date -u +%Y-%m-%dT%H:%M:%SZ) ERROR service failed to start\\\" >> {d}/{{member}}.log; echo '   at Service.Start()' >> {d}/{{member}}.log; fi\"\n\n\
         [[runbook.verify]]\nname = \"setup-log\"\nlogs = {{ source = \"file\", path = \"{d}/{{member}}.log\", fail_on = [\"ERROR\"], expect = [\"completed successfully\"] }}\n",
        bal = file_balancer(dir.path(), &["web1", "web2"])
    );
    let plan = load_plan(dir.path(), &text);
    let state = tempfile::tempdir().unwrap();
    let (code, log, _) = rollout(plan, state.path()).await;
    assert_eq!(code, 1, "web2 logged an error during its update: {log}");
    assert!(
        log.contains("member: \"web1\", state: \"done\""),
        "web1's old error is before its update: {log}"
    );
    assert!(log.contains("1 offending entry since"), "{log}");
    assert!(log.contains("ERROR service failed to start"), "{log}");
    assert!(!log.contains("old failure"), "{log}");
}

#[tokio::test]
async fn a_logs_check_without_an_update_looks_back_and_reads_a_real_file() {
    let dir = tempfile::tempdir().unwrap();
    let now = ebb_drivers::maintenance::rfc3339(SystemTime::now());
    std::fs::write(
        dir.path().join("app.log"),
        format!("2020-01-01T00:00:00Z ERROR ancient\n{now} WARN disk 91% full\n"),
    )
    .unwrap();
    let plan = plan_with_members("", "");
    let t = ebb_drivers::transport::build(&plan, &plan.members[0]).unwrap();
    let mut spec = logs_spec(
        LogSource::File {
            path: dir.path().join("app.log").display().to_string(),
        },
        None,
    );
    spec.fail_on = strings(&["ERROR", "WARN"]);
    spec.ignore = strings(&["disk \\d+% full"]);
    let check = ebb_engine::plan::CheckSpec {
        name: "app-log".into(),
        kind: "logs".into(),
        check: Arc::new(spec),
        retries: 0,
        interval: Duration::from_secs(1),
        timeout: Duration::from_secs(10),
    };
    let checker = BuiltChecks;
    let ok = checker
        .check_in(
            &check,
            &plan.members[0],
            t.as_ref(),
            &CheckContext::default(),
        )
        .await
        .expect("the warning is ignored, the old error is older than the lookback");
    assert!(ok.contains("1 entry since"), "{ok}");
    let ctx = CheckContext {
        update_began: Some(UNIX_EPOCH),
        ..Default::default()
    };
    let err = checker
        .check_in(&check, &plan.members[0], t.as_ref(), &ctx)
        .await
        .expect_err("since 1970 the ancient error counts");
    assert!(err.contains("ERROR ancient"), "{err}");
}

#[test]
fn versions_are_read_and_compared_part_by_part() {
    use std::cmp::Ordering::*;
    assert_eq!(version::extract("nginx version: nginx/1.22.1\n"), "1.22.1");
    assert_eq!(version::extract("v15.2.1118.7\n"), "15.2.1118.7");
    assert_eq!(
        version::extract("Version 15.02.1118.007, build x"),
        "15.02.1118.007"
    );
    assert_eq!(version::extract("banner\n\n1.1\n"), "1.1");
    assert_eq!(version::compare("1.10", "1.9"), Greater);
    assert_eq!(version::compare("15.02.1118.007", "15.2.1118.7"), Equal);
    assert_eq!(version::compare("1.0", "1"), Equal);
    assert_eq!(version::compare("2.0.0-rc1", "2.0.0-rc2"), Less);
}

#[tokio::test]
async fn the_version_table_names_the_members_that_are_behind() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("web1.version"), "app 1.10.0\n").unwrap();
    std::fs::write(dir.path().join("web2.version"), "app 1.9.3\n").unwrap();
    let plan = plan_with_members(
        "",
        &format!(
            "\n[[runbook.verify]]\nname = \"version\"\nversion = {{ command = \"cat {}/{{member}}.version\", at_least = \"1.10\" }}\n",
            dir.path().display()
        ),
    );
    let drivers = ebb_drivers::build(&plan).expect("drivers");
    let rows = version::table(&plan, &drivers.transports).await;
    let text = version::render_table(&rows).join("\n");
    assert_eq!(rows.len(), 2, "{text}");
    assert!(rows[0].reading.as_ref().unwrap().ok, "{text}");
    assert!(!rows[1].reading.as_ref().unwrap().ok, "{text}");
    assert!(
        text.contains("web2") && text.contains("BEHIND (expected >= 1.10)"),
        "{text}"
    );
}

/// A one-page HTTPS server with a self-signed certificate for 127.0.0.1.
async fn https_server(dir: &Path) -> (u16, std::path::PathBuf) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (cert, key) = tls::self_signed(dir);
    let acceptor = tls::acceptor(&cert, &key);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(s).await else {
                    return;
                };
                let mut buf = [0u8; 4096];
                let _ = tls.read(&mut buf).await;
                let body = "{\"status\":\"healthy\",\"version\":\"1.1.0\"}";
                let _ = tls
                    .write_all(
                        format!(
                            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                            body.len()
                        )
                        .as_bytes(),
                    )
                    .await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (port, cert)
}

#[tokio::test]
async fn https_checks_against_a_self_signed_server() {
    let dir = tempfile::tempdir().unwrap();
    let (port, cert) = https_server(dir.path()).await;
    let plan = plan_with_members("", "");
    let t = ebb_drivers::transport::build(&plan, &plan.members[0]).unwrap();
    let checker = BuiltChecks;
    let http =
        |insecure: bool, ca: Option<&Path>, regex: Option<&str>| ebb_engine::plan::CheckSpec {
            name: "https".into(),
            kind: "http".into(),
            check: Arc::new(HttpCheck {
                url: format!("https://127.0.0.1:{port}/health"),
                expect_status: 200,
                expect_body: Some("healthy".into()),
                expect_body_regex: regex.map(String::from),
                insecure_tls: insecure,
                ca_file: ca.map(Path::to_path_buf),
            }),
            retries: 0,
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(5),
        };
    let m = &plan.members[0];
    let err = checker
        .check_in(
            &http(false, None, None),
            m,
            t.as_ref(),
            &CheckContext::default(),
        )
        .await
        .expect_err("an unknown certificate is refused by default");
    assert!(err.contains("TLS handshake with 127.0.0.1:"), "{err}");
    assert!(err.contains("ca_file"), "the error says what to do: {err}");
    let ok = checker
        .check_in(
            &http(false, Some(&cert), Some("\"version\":\"1\\.1\\.\\d+\"")),
            m,
            t.as_ref(),
            &CheckContext::default(),
        )
        .await
        .expect("trusted through ca_file");
    assert!(ok.ends_with("→ 200"), "{ok}");
    checker
        .check_in(
            &http(true, None, None),
            m,
            t.as_ref(),
            &CheckContext::default(),
        )
        .await
        .expect("accepted with insecure_tls");
    let err = checker
        .check_in(
            &http(true, None, Some("\"version\":\"2\\.")),
            m,
            t.as_ref(),
            &CheckContext::default(),
        )
        .await
        .expect_err("the regex does not match");
    assert!(err.contains("does not match"), "{err}");
}

#[test]
fn new_check_and_maintenance_keys_are_validated_all_at_once_with_lines() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[pool]\nname = \"bad\"\n\n[pool.gate]\nalertmanager = \"ftp://x\"\nmatchers = {{ severity = \"~[\" }}\n\n{}\n[[member]]\nname = \"m\"\naddress = \"127.0.0.1:1\"\n\n\
         [[runbook.step]]\nname = \"silence\"\nalertmanager = {{ url = \"http://am:9093\", matchers = {{ instance = \"{{adress}}\" }}, duration = \"2 hours\" }}\n\n\
         [[runbook.step]]\nname = \"both\"\nrun = \"x\"\nwebhook = {{ url = \"http://hook\" }}\n\n\
         [[runbook.verify]]\nname = \"svc\"\nservices = {{ runing = [\"nginx\"] }}\n\n\
         [[runbook.verify]]\nname = \"log\"\nlogs = {{ source = \"file\", path = \"/var/log/x\", level = \"err\" }}\n\n\
         [[runbook.verify]]\nname = \"ver\"\nversion = {{ command = \"x --version\" }}\n\n\
         [[runbook.verify]]\nname = \"h\"\nhttp = {{ url = \"http://x/\", expect_body_regex = \"(\", insecure_tls = true }}\n",
        file_balancer(dir.path(), &["m"])
    );
    let p = dir.path().join("pool.toml");
    std::fs::write(&p, &text).unwrap();
    let errs = ebb_engine::config::load(&p, &ebb_drivers::registry())
        .expect_err("invalid")
        .to_string();
    let line = |needle: &str| text.lines().position(|l| l.contains(needle)).unwrap() + 1;
    for (needle, want) in [
        (
            "ftp://x",
            "pool.gate.alertmanager: expected an http:// or https:// URL",
        ),
        (
            "severity",
            "pool.gate.matchers.severity: \"[\" is not a valid regular expression",
        ),
        (
            "duration = \"2 hours\"",
            "runbook.step[0].alertmanager.duration",
        ),
        ("{adress}", "runbook.step[0].alertmanager.matchers.instance"),
        (
            "webhook = {",
            "runbook.step[1].webhook: a maintenance step (webhook) has no run or undo",
        ),
        (
            "runing",
            "runbook.verify[0].services.runing: unknown key (did you mean \"running\"?)",
        ),
        (
            "level = \"err\"",
            "runbook.verify[1].logs.level: not used with source = \"file\"",
        ),
        (
            "x --version",
            "runbook.verify[2].version: give exactly one of equals",
        ),
        (
            "expect_body_regex",
            "runbook.verify[3].http.expect_body_regex: \"(\" is not a valid regular expression",
        ),
    ] {
        let at = format!(":{}: {want}", line(needle));
        assert!(errs.contains(&at), "expected «{at}» in:\n{errs}");
    }
}
