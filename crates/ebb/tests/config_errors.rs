//! Malformed pool files: each one exits 2 with the file, line and key, never panics, and
//! changes nothing.

mod support;
use support::*;

const GOOD: &str = r#"[pool]
name = "web"
max_unavailable = 1
min_in_service = 1

[balancer]
driver = "command"
drainstop = "true"
stop = "true"
start = "true"
state = "echo started"
initial_state = "true"

[[member]]
name = "web1"
address = "127.0.0.1:8081"

[[member]]
name = "web2"
address = "127.0.0.1:8082"

[runbook.drain]
mode = "drainstop"
timeout = "10m"

[[runbook.step]]
name = "update"
run = "apt-get upgrade -y"
"#;

/// `GOOD` with one `[[pool.window]]` (its keys on lines 7 to 10).
fn window(g: &str, days: &str, start: &str, length: &str, zone: &str) -> String {
    g.replace(
        "min_in_service = 1\n",
        &format!("min_in_service = 1\n\n[[pool.window]]\ndays = {days}\nstart = \"{start}\"\nlength = \"{length}\"\ntime_zone = \"{zone}\"\n"),
    )
}

/// (what is wrong, the file, the line the error must name, text the message must contain)
fn cases() -> Vec<(&'static str, String, usize, &'static str)> {
    let g = GOOD;
    vec![
        ("not TOML", g.replace("name = \"web\"", "name = web\""), 2, "not valid TOML"),
        ("unknown top-level key", format!("{g}\nfoo = 1\n"), 30, "foo: unknown key"),
        ("typo in a pool key", g.replace("min_in_service", "min_in_servise"), 4, "did you mean \"min_in_service\""),
        ("missing pool name", g.replace("name = \"web\"\n", ""), 1, "missing key \"name\""),
        ("max_unavailable zero", g.replace("max_unavailable = 1", "max_unavailable = 0"), 3, "pool.max_unavailable"),
        ("bad percentage", g.replace("max_unavailable = 1", "max_unavailable = \"150%\""), 3, "percentage"),
        ("min_in_service too high", g.replace("min_in_service = 1", "min_in_service = 2"), 4, "leaves no member free"),
        ("unknown driver", g.replace("driver = \"command\"", "driver = \"a10\""), 7, "balancer.driver"),
        ("command driver missing start", g.replace("start = \"true\"\n", ""), 7, "needs start"),
        ("duplicate member", g.replace("name = \"web2\"", "name = \"web1\""), 19, "defined twice"),
        ("duplicate lb_name", g.replace("name = \"web2\"", "name = \"web2\"\nlb_name = \"web1\""), 20, "lb_name \"web1\" duplicates member \"web1\""),
        ("member without address", g.replace("address = \"127.0.0.1:8082\"\n", ""), 18, "missing key \"address\""),
        ("bad duration", g.replace("timeout = \"10m\"", "timeout = \"10 minutes\""), 24, "runbook.drain.timeout"),
        ("duration without unit", g.replace("timeout = \"10m\"", "timeout = \"600\""), 24, "no unit"),
        ("bad drain mode", g.replace("mode = \"drainstop\"", "mode = \"drain\""), 23, "expected one of \"drainstop\", \"stop\""),
        ("unknown placeholder", g.replace("apt-get upgrade -y", "upgrade {hostname}"), 28, "unknown placeholder {hostname}"),
        ("unknown variable", g.replace("apt-get upgrade -y", "upgrade {var.pkg}"), 28, "no variable \"pkg\""),
        ("step without run", g.replace("run = \"apt-get upgrade -y\"\n", ""), 26, "missing key \"run\""),
        ("reboot without [runbook.reboot]", g.replace("run = \"apt-get upgrade -y\"", "run = \"x\"\nreboot = \"always\""), 29, "no [runbook.reboot]"),
        ("wave naming an unknown member", format!("{g}\n[[wave]]\nmembers = [\"web9\"]\n"), 31, "no member named \"web9\""),
        ("wrong type", g.replace("min_in_service = 1", "min_in_service = \"one\""), 4, "expected a whole number"),
        ("check with two kinds", format!("{g}\n[[runbook.verify]]\nname = \"x\"\ncommand = \"true\"\ntcp = \"{{address}}\"\n"), 30, "exactly one of"),
        ("window: a day that is not one", window(g, "[\"sat\", \"sunday2\"]", "22:00", "4h", "UTC"), 7, "pool.window[0].days: expected \"daily\" or a list of days"),
        ("window: days = \"weekends\"", window(g, "\"weekends\"", "22:00", "4h", "UTC"), 7, "found \"weekends\""),
        ("window: start not HH:MM", window(g, "\"daily\"", "10pm", "4h", "UTC"), 8, "pool.window[0].start: expected a time of day \"HH:MM\""),
        ("window: start past midnight", window(g, "\"daily\"", "24:30", "4h", "UTC"), 8, "found \"24:30\""),
        ("window: length in the wrong grammar", window(g, "\"daily\"", "22:00", "4 hours", "UTC"), 9, "pool.window[0].length"),
        ("window: longer than a week", window(g, "\"daily\"", "22:00", "8d", "UTC"), 9, "longer than a week"),
        ("window: unknown zone", window(g, "\"daily\"", "22:00", "4h", "Europe/Berln"), 10, "pool.window[0].time_zone: \"Europe/Berln\" is not a time zone"),
        ("window: unknown key", window(g, "\"daily\"", "22:00", "4h", "UTC").replace("length =", "lenght = \"1h\"\nlength ="), 9, "did you mean \"length\""),
        ("expected_member_time in the wrong grammar", g.replace("[runbook.drain]", "[runbook]\nexpected_member_time = \"ten minutes\"\n\n[runbook.drain]"), 23, "runbook.expected_member_time"),
        ("bake without checks", format!("{g}\n[runbook.bake]\nduration = \"5m\"\n"), 30, "at least one [[runbook.bake.check]]"),
        ("bake without duration", format!("{g}\n[runbook.bake]\n[[runbook.bake.check]]\nname = \"x\"\ncommand = \"true\"\n"), 30, "needs duration"),
        ("bake check with two kinds", format!("{g}\n[runbook.bake]\nduration = \"5m\"\n[[runbook.bake.check]]\nname = \"x\"\ncommand = \"true\"\ntcp = \"{{address}}\"\n"), 32, "exactly one of"),
        ("rollback_on without rollback steps", format!("{g}\n[runbook]\nrollback_on = [\"verify\"]\n"), 31, "needs [[runbook.rollback]]"),
        ("rollback step with an undo", format!("{g}\n[[runbook.rollback]]\nname = \"back\"\nrun = \"x\"\nundo = \"y\"\n"), 33, "unknown key"),
        ("rollback step without run", format!("{g}\n[[runbook.rollback]]\nname = \"back\"\n"), 30, "missing key \"run\""),
        ("unknown rollback_on failure", format!("{g}\n[[runbook.rollback]]\nname = \"b\"\nrun = \"x\"\n\n[runbook]\nrollback_on = [\"drain\"]\n"), 35, "unknown failure \"drain\""),
        ("rollback_on bake without a bake", format!("{g}\n[[runbook.rollback]]\nname = \"b\"\nrun = \"x\"\n\n[runbook]\nrollback_on = [\"bake\"]\n"), 35, "no [runbook.bake]"),
        ("member is not a table array", g.replace("[[member]]\nname = \"web2\"", "[member2]\nname = \"web2\""), 18, "unknown key"),
    ]
}

#[test]
fn each_malformed_pool_file_exits_2_naming_file_line_and_key_without_panicking() {
    let dir = tempfile::tempdir().unwrap();
    let cases = cases();
    assert!(cases.len() >= 20);
    for (what, text, line, needle) in cases {
        let path = dir.path().join("pool.toml");
        std::fs::write(&path, &text).unwrap();
        for cmd in ["check", "plan", "run"] {
            let o = ebb()
                .arg(cmd)
                .arg(&path)
                .current_dir(dir.path())
                .output()
                .unwrap();
            let err = stderr(&o);
            assert_eq!(o.status.code(), Some(2), "{what} ({cmd}): {err}");
            assert!(!err.contains("panicked"), "{what}: {err}");
            let want = format!("pool.toml:{line}:");
            assert!(
                err.contains(&want),
                "{what} ({cmd}): expected {want} in:\n{err}"
            );
            assert!(
                err.contains(needle),
                "{what} ({cmd}): expected {needle:?} in:\n{err}"
            );
        }
        assert!(
            !dir.path().join(".ebb").exists(),
            "{what}: nothing written before validation"
        );
    }
}

#[test]
fn every_problem_is_reported_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let text = GOOD
        .replace("min_in_service = 1", "min_in_service = \"x\"")
        .replace("mode = \"drainstop\"", "mode = \"nope\"")
        .replace("apt-get upgrade -y", "{nope}");
    let path = dir.path().join("pool.toml");
    std::fs::write(&path, text).unwrap();
    let o = ebb().arg("check").arg(&path).output().unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2));
    for needle in [
        "pool.toml:4:",
        "pool.toml:23:",
        "pool.toml:28:",
        "3 problem(s)",
    ] {
        assert!(err.contains(needle), "{needle} in {err}");
    }
}

#[test]
fn a_missing_file_and_a_missing_journal_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let o = ebb()
        .args(["check", "nope.toml"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("nope.toml") && stderr(&o).contains("cannot read"),
        "{}",
        stderr(&o)
    );
    let o = ebb()
        .args(["status", "--state-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("no journal"), "{}", stderr(&o));
    let o = ebb()
        .args(["status"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn check_json_on_an_invalid_file_prints_its_problems_on_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pool.toml");
    // One problem of the core and one of the balancer driver's settings.
    for text in [
        GOOD.replace("mode = \"drainstop\"", "mode = \"nope\""),
        GOOD.replace("start = \"true\"\n", ""),
    ] {
        std::fs::write(&path, &text).unwrap();
        let o = ebb().args(["check", "--json"]).arg(&path).output().unwrap();
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {:?}", stdout(&o)));
        assert_eq!(v["ok"], false, "{v}");
        assert_eq!(v["valid"], false, "{v}");
        let problems = v["problems"].as_array().expect("problems");
        assert_eq!(problems.len(), 1, "{v}");
        assert!(problems[0].as_str().unwrap().contains("pool.toml:"), "{v}");
    }
}

/// Runs `ebb check FILE` (bounded: a hang is a failure) and returns exit code and stderr.
fn check_bounded(path: &std::path::Path) -> (Option<i32>, String) {
    let mut child = ebb()
        .arg("check")
        .arg(path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
            return (status.code(), err);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("ebb check {} did not finish within 20 s", path.display());
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn what_is_not_a_regular_pool_file_of_bounded_size_is_refused_without_line_zero() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("pool.fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo with a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let big = dir.path().join("big.toml");
    std::fs::write(&big, "#".repeat(5 * 1024 * 1024)).unwrap();
    let cases: Vec<(std::path::PathBuf, &str)> = vec![
        (fifo, "not a regular file"),
        ("/dev/zero".into(), "not a regular file"),
        (dir.path().to_path_buf(), "is a directory"),
        (big, "at most 4 MiB"),
        (dir.path().join("missing.toml"), "cannot read"),
    ];
    for (path, needle) in cases {
        let (code, err) = check_bounded(&path);
        assert_eq!(code, Some(2), "{}: {err}", path.display());
        assert!(
            err.contains(needle),
            "{}: {needle:?} in {err}",
            path.display()
        );
        assert!(!err.contains(":0:"), "{}: {err}", path.display());
    }
}

#[test]
fn a_pool_file_that_is_not_utf8_names_the_line_of_the_bad_byte() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pool.toml");
    let mut bytes = GOOD.as_bytes().to_vec();
    // Into the drainstop command, on line 8.
    let at = GOOD.find("drainstop = \"true\"").unwrap() + "drainstop = \"tr".len();
    bytes.insert(at, 0xff);
    std::fs::write(&path, bytes).unwrap();
    let (code, err) = check_bounded(&path);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("pool.toml:8:"), "{err}");
    assert!(err.contains("UTF-8"), "{err}");
    assert!(!err.contains(":0:"), "{err}");
}

#[test]
fn values_that_can_never_work_fail_check_with_their_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pool.toml");
    let reboot = "\n[defaults]\nboot_id = \"cat /proc/sys/kernel/random/boot_id\"\n\n[runbook.reboot]\ncommand = \"reboot\"\n";
    let step = |extra: &str| {
        format!(
            "{}{reboot}",
            GOOD.replace(
                "run = \"apt-get upgrade -y\"",
                &format!("run = \"apt-get upgrade -y\"\n{extra}")
            )
        )
    };
    // (what, file, line, key, text)
    let cases = [
        (
            "zero step timeout",
            step("timeout = \"0s\""),
            29,
            "runbook.step[0].timeout",
            "more than 0",
        ),
        (
            "exit codes no sh command can exit with",
            step("reboot = \"if-required\"\nreboot_required_exit_codes = [256, -1]"),
            30,
            "runbook.step[0].reboot_required_exit_codes",
            "0 to 255",
        ),
        (
            "the default 3010 on sh members",
            step("reboot = \"if-required\""),
            29,
            "runbook.step[0].reboot",
            "3010",
        ),
        (
            "codes with reboot = never",
            step("reboot = \"never\"\nreboot_required_exit_codes = [100]"),
            30,
            "runbook.step[0].reboot_required_exit_codes",
            "if-required",
        ),
    ];
    for (what, text, line, key, needle) in cases {
        std::fs::write(&path, &text).unwrap();
        let (code, err) = check_bounded(&path);
        assert_eq!(code, Some(2), "{what}: {err}");
        let want = format!("pool.toml:{line}: {key}:");
        assert!(err.contains(&want), "{what}: {want:?} in {err}");
        assert!(err.contains(needle), "{what}: {needle:?} in {err}");
    }
    // A code an sh command can exit with is fine.
    std::fs::write(
        &path,
        step("reboot = \"if-required\"\nreboot_required_exit_codes = [100]"),
    )
    .unwrap();
    let (code, err) = check_bounded(&path);
    assert_ne!(code, Some(2), "{err}");
}

#[test]
fn a_mistake_does_not_bring_follow_on_errors_about_what_is_not_in_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pool.toml");
    let three = format!("{GOOD}\n[[member]]\nname = \"web3\"\nadress = \"127.0.0.1:8083\"\n")
        .replace("min_in_service = 1", "min_in_service = 2");
    std::fs::write(&path, three).unwrap();
    let (code, err) = check_bounded(&path);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("adress"), "{err}");
    assert!(!err.contains("leaves no member free"), "{err}");
    assert!(!err.contains("pool of 2"), "{err}");

    std::fs::write(&path, GOOD.replace("name = \"web2\"", "name = \"web1\"")).unwrap();
    let (code, err) = check_bounded(&path);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("defined twice"), "{err}");
    assert!(!err.contains("lb_name"), "{err}");
    assert!(err.contains("1 problem(s)"), "{err}");
}

#[test]
fn check_reports_the_balancer_drivers_problems_with_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pool.toml");
    let builtin = GOOD.replace(
        "driver = \"command\"\ndrainstop = \"true\"\nstop = \"true\"\nstart = \"true\"\nstate = \"echo started\"\ninitial_state = \"true\"",
        "driver = \"builtin\"\nbalance = \"rr\"\nconnect_timeout = \"soon\"",
    );
    // A problem in [pool], one in the runbook, two in the builtin balancer's settings.
    let text = builtin
        .replace("name = \"web\"\n", "")
        .replace("mode = \"drainstop\"", "mode = \"nope\"");
    std::fs::write(&path, &text).unwrap();
    let (code, err) = check_bounded(&path);
    assert_eq!(code, Some(2), "{err}");
    for needle in [
        "missing key \"name\"",
        "runbook.drain.mode",
        "balancer.balance",
        "balancer.connect_timeout",
    ] {
        assert!(err.contains(needle), "{needle:?} in {err}");
    }
}
