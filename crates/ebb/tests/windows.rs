//! Maintenance windows through the binary: a pool whose only window is closed now is
//! judged by `ebb check` and shown by `ebb plan`; `ebb run` pauses without touching a
//! member (exit 0), `ebb status` shows the next window, the `paused` notification carries
//! the reason, and once the window is open `ebb resume` goes on; Ctrl-C while
//! `ebb run --wait` waits leaves the run paused, nothing owed; without `time_zone` the
//! machine's zone is used.

mod support;
use support::*;

/// Minutes since midnight UTC now.
fn minute_of_day() -> u64 {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    (secs / 60) % 1440
}

fn hhmm(minute: u64) -> String {
    format!("{:02}:{:02}", (minute / 60) % 24, minute % 60)
}

fn window(start: &str, length: &str) -> String {
    format!(
        "\n[[pool.window]]\ndays = \"daily\"\nstart = \"{start}\"\nlength = \"{length}\"\ntime_zone = \"UTC\"\n"
    )
}

#[test]
fn a_closed_window_pauses_the_run_and_status_shows_the_next_one() {
    let members = ["a", "b"];
    let f = Fixture::new(&members);
    let (url, got) = receiver();
    // Opens two hours from now for one hour: closed now (yesterday's closed 21 h ago).
    let opens = hhmm(minute_of_day() + 120);
    let notify = format!("\n[[notify]]\nurl = \"{url}\"\nevents = [\"run_paused\"]\n");
    let pool = f.pool(
        &window(&opens, "1h"),
        &members,
        &format!("{RUNBOOK}{notify}"),
    );

    // No member time known yet and none given: the window cannot be judged.
    let o = ebb().arg("check").arg(&pool).output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(stderr(&o).contains("cannot be judged"), "{}", stderr(&o));

    let rb = format!("[runbook]\nexpected_member_time = \"10m\"\n{RUNBOOK}{notify}");
    let pool = f.pool(&window(&opens, "1h"), &members, &rb);
    let o = ebb().arg("check").arg(&pool).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    let plan = ebb().arg("plan").arg(&pool).output().unwrap();
    let text = stdout(&plan);
    for part in [
        "window: daily ",
        "next window: ",
        &format!(" {opens} UTC"),
        "fits 2 of 2 member(s): a, b",
        "expected 10m ([runbook] expected_member_time)",
        "expected end: ",
    ] {
        assert!(text.contains(part), "{part:?} in:\n{text}");
    }

    let o = ebb().arg("run").arg(&pool).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("paused: outside the maintenance windows"),
        "{}",
        stdout(&o)
    );
    // Nothing was touched.
    for m in members {
        assert_eq!(f.lb_state(m), "started");
        assert!(!f.path(&format!("lb/{m}.install.log")).exists());
    }
    let st = status(&pool);
    assert_eq!(st["run"]["state"], "paused", "{st}");
    assert!(
        st["run"]["message"]
            .as_str()
            .unwrap()
            .contains("outside the maintenance windows"),
        "{st}"
    );
    assert_eq!(st["window"]["open"], false, "{st}");
    assert_eq!(st["window"]["member"], "a", "{st}");
    let next = st["window"]["next_start"].as_str().unwrap();
    assert!(next.contains(&format!(" {opens} UTC")), "{st}");
    let ms = st["window"]["next_start_ms"].as_i64().unwrap();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let ahead = ms - now_ms;
    assert!(
        (110 * 60_000..=121 * 60_000).contains(&ahead),
        "next window in {ahead} ms: {st}"
    );
    let human = ebb().arg("status").arg(&pool).output().unwrap();
    assert!(
        stdout(&human).contains(&format!("next maintenance window: {next} (for a)")),
        "{}",
        stdout(&human)
    );
    assert!(
        stdout(&human).contains("ebb resume --wait"),
        "{}",
        stdout(&human)
    );
    // The `paused` notification with the reason.
    let sent = got.lock().unwrap().clone();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert!(
        sent[0].contains("outside the maintenance windows"),
        "{sent:?}"
    );

    // The window is open now (it opened an hour ago for three hours): resume goes on.
    let opened = hhmm(minute_of_day() + 1440 - 60);
    let pool = f.pool(&window(&opened, "3h"), &members, &rb);
    let o = ebb().arg("resume").arg(&pool).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let st = status(&pool);
    assert_eq!(st["run"]["state"], "done", "{st}");
    for m in members {
        assert_eq!(f.read(&format!("lb/{m}.version")).trim(), "1.1");
    }
}

#[test]
fn a_window_without_time_zone_is_read_in_the_machines_zone() {
    let members = ["a"];
    let f = Fixture::new(&members);
    let win = "\n[[pool.window]]\ndays = [\"sat\"]\nstart = \"22:00\"\nlength = \"4h\"\n";
    let rb = format!("[runbook]\nexpected_member_time = \"10m\"\n{RUNBOOK}");
    let pool = f.pool(win, &members, &rb);
    let o = ebb()
        .arg("plan")
        .arg(&pool)
        .env("TZ", "Asia/Tokyo")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(
        text.contains("window: sat 22:00 for 4h (Asia/Tokyo)"),
        "{text}"
    );
    assert!(text.contains(" 22:00 JST"), "{text}");
    // A machine zone that cannot be found: the file is refused, naming the window.
    let o = ebb()
        .arg("check")
        .arg(&pool)
        .env("TZ", "Nowhere/Bogus")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stdout(&o));
    assert!(
        stderr(&o).contains("pool.toml:4: pool.window[0]: the machine's time zone cannot be found"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn ctrl_c_while_run_wait_waits_for_the_window_leaves_the_run_paused_owing_nothing() {
    use std::io::BufRead;
    let members = ["a", "b"];
    let f = Fixture::new(&members);
    let opens = hhmm(minute_of_day() + 120);
    let rb = format!("[runbook]\nexpected_member_time = \"10m\"\n{RUNBOOK}");
    let pool = f.pool(&window(&opens, "1h"), &members, &rb);
    let mut child = spawn(&["run", "--wait", "--json"], &pool);
    // The events as they come, until ebb says it waits for the window.
    let lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in lines.map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let waiting = loop {
        match rx.recv_timeout(std::time::Duration::from_secs(60)) {
            Ok(l) if l.contains("\"event\":\"waiting\"") => break l,
            Ok(_) => {}
            Err(e) => panic!("no waiting event: {e}"),
        }
    };
    assert!(
        waiting.contains("outside the maintenance windows"),
        "{waiting}"
    );
    assert!(waiting.contains(&format!(" {opens} UTC")), "{waiting}");
    // SAFETY: signalling the ebb this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let code = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s.code();
        }
        assert!(std::time::Instant::now() < deadline, "ebb did not stop");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(code, Some(130));
    let st = status(&pool);
    assert_eq!(st["run"]["state"], "paused", "{st}");
    for m in members {
        assert_eq!(member(&st, m)["state"], "pending", "{st}");
        assert_eq!(member(&st, m)["owed"], serde_json::json!([]), "{st}");
        assert_eq!(f.lb_state(m), "started");
        assert_eq!(f.lb_initial(m), "started");
    }
}
