//! `[[notify]]` through the binary, against a local HTTP receiver: the run's and members'
//! events arrive in the asked format; a receiver that is down fails no run, and `report`
//! shows what was and was not sent.

mod support;
use support::*;

#[test]
fn the_run_and_a_failed_member_are_notified_in_json_and_slack_format() {
    let members = ["a", "b"];
    let f = Fixture::new(&members);
    let (url, got) = receiver();
    let rest = format!(
        r#"
[[runbook.step]]
name = "install"
run = "if [ {{member}} = b ]; then exit 5; fi"

[[notify]]
url = "{url}"
format = "json"

[[notify]]
url = "{url}"
format = "slack"
events = ["member_failed"]
"#
    );
    let pool = f.pool("", &members, &rest);
    let o = ebb().arg("run").arg(&pool).output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let bodies = got.lock().unwrap().clone();
    let json: Vec<serde_json::Value> = bodies
        .iter()
        .filter_map(|b| serde_json::from_str::<serde_json::Value>(b).ok())
        .collect();
    let events: Vec<&str> = json.iter().filter_map(|v| v["event"].as_str()).collect();
    for want in ["run_started", "member_failed", "run_failed"] {
        assert!(events.contains(&want), "{want} missing in {bodies:?}");
    }
    let failed = json.iter().find(|v| v["event"] == "member_failed").unwrap();
    assert_eq!(failed["member"], "b");
    assert_eq!(failed["pool"], "t");
    // The slack receiver asked only for member_failed.
    let slack: Vec<&serde_json::Value> = json.iter().filter(|v| v.get("text").is_some()).collect();
    assert_eq!(slack.len(), 1, "{bodies:?}");
    assert!(
        slack[0]["text"].as_str().unwrap().contains("b failed"),
        "{bodies:?}"
    );
    let report = ebb().args(["report"]).arg(&pool).output().unwrap();
    assert!(
        stdout(&report).contains("notification member_failed to"),
        "{}",
        stdout(&report)
    );
}

#[test]
fn a_receiver_that_is_down_fails_nothing_and_report_says_so() {
    let members = ["a"];
    let f = Fixture::new(&members);
    // A port nothing listens on.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/hook", l.local_addr().unwrap())
    };
    let rest = format!(
        "{RUNBOOK}\n[[notify]]\nurl = \"{dead}\"\nevents = [\"run_started\", \"run_done\"]\n"
    );
    let pool = f.pool("", &members, &rest);
    let child = spawn(&["run"], &pool);
    let o = wait_bounded(child, std::time::Duration::from_secs(60));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(f.read("lb/a.version").trim(), "1.1");
    // The operator is told during the run, not only in the report afterwards; the last
    // one too, though it fails after the run finished.
    for event in ["run_started", "run_done"] {
        let told = format!("warning: notification {event} to {dead} not sent (3 attempts):");
        assert!(stderr(&o).contains(&told), "{told}\n{}", stderr(&o));
    }
    let report = ebb()
        .args(["report", "--json"])
        .arg(&pool)
        .output()
        .unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&report.stdout).unwrap();
    let n = doc["notifications"].as_array().unwrap();
    assert_eq!(n.len(), 2, "{doc}");
    for x in n {
        assert_eq!(x["ok"], false, "{x}");
        assert_eq!(x["attempts"], 3, "{x}");
        assert!(
            x["error"].as_str().unwrap().contains("cannot connect"),
            "{x}"
        );
    }
}

/// The JSON bodies the receiver got.
fn received(got: &std::sync::Arc<std::sync::Mutex<Vec<String>>>) -> Vec<serde_json::Value> {
    got.lock()
        .unwrap()
        .iter()
        .filter_map(|b| serde_json::from_str(b).ok())
        .collect()
}

#[test]
fn a_rolled_back_member_and_a_capacity_wait_are_notified() {
    // a's verify fails; the rollback step runs, a is held and the run halts.
    let f = Fixture::new(&["a", "b"]);
    let (url, got) = receiver();
    let rest = format!(
        r#"
[[runbook.step]]
name = "install"
run = "echo 1.1 > {{var.dir}}/lb/{{member}}.version"

[[runbook.verify]]
name = "version"
command = "grep -q 1.0 {{var.dir}}/lb/{{member}}.version"

[[runbook.rollback]]
name = "downgrade"
run = "echo 1.0 > {{var.dir}}/lb/{{member}}.version"

[[notify]]
url = "{url}"
events = ["member_rolled_back", "member_failed", "capacity_wait_begun"]
"#
    );
    let pool = f.pool("", &["a", "b"], &rest);
    let o = ebb().arg("run").arg(&pool).output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let json = received(&got);
    let events: Vec<&str> = json.iter().filter_map(|v| v["event"].as_str()).collect();
    assert_eq!(events, ["member_rolled_back"], "{json:?}");
    assert_eq!(json[0]["member"], "a");
    let msg = json[0]["message"].as_str().unwrap();
    assert!(
        msg.contains("a rolled-back") && msg.contains("verify after the rollback passed"),
        "{msg}"
    );

    // Someone else's member is out: with max_unavailable = 1, a waits for capacity.
    let f = Fixture::new(&["a", "b"]);
    std::fs::write(f.path("lb/b.state"), "stopped\n").unwrap();
    let (url, got) = receiver();
    let rest =
        format!("{RUNBOOK}\n[[notify]]\nurl = \"{url}\"\nevents = [\"capacity_wait_begun\"]\n");
    let pool = f.pool(
        "max_unavailable = 1\ncapacity_wait = \"1s\"",
        &["a", "b"],
        &rest,
    );
    let o = ebb().arg("run").arg(&pool).output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let json = received(&got);
    assert_eq!(json.len(), 1, "{json:?}");
    assert_eq!(json[0]["event"], "capacity_wait_begun");
    assert_eq!(json[0]["member"], "a");
    assert!(
        json[0]["message"]
            .as_str()
            .unwrap()
            .contains("the availability policy does not allow taking \"a\" out"),
        "{json:?}"
    );
}
