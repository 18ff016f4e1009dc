//! `ebb report --run N`: any past run of the pool, as text, JSON or HTML, from the SQLite
//! journal and from a real etcd; an unknown N is a usage error naming the runs there are;
//! an `--html` path that cannot be written is refused before anything else.

#[path = "support/etcd.rs"]
mod etcd;
mod support;

use etcd::EtcdCluster;
use std::path::Path;
use support::*;

/// The runbook of run number `n`: one step named after it.
fn runbook(n: usize) -> String {
    format!("[[runbook.step]]\nname = \"install-{n}\"\nrun = \"true\"\n")
}

/// Runs the pool once more with `runbook(n)` (plus `extra`); returns the new run's id.
fn run_number(f: &Fixture, members: &[&str], n: usize, extra: &str) -> i64 {
    let pool = f.pool("", members, &format!("{}{extra}", runbook(n)));
    let o = run(&["run", pool.to_str().unwrap()], f.dir.path());
    assert_eq!(o.status.code(), Some(0), "run {n}: {}", stderr(&o));
    status(&pool)["run"]["id"].as_i64().expect("a run id")
}

fn report(pool: &Path, args: &[&str]) -> std::process::Output {
    ebb()
        .arg("report")
        .arg(pool)
        .args(args)
        .current_dir(pool.parent().unwrap())
        .output()
        .expect("ebb report")
}

fn report_json(pool: &Path, args: &[&str]) -> serde_json::Value {
    let mut args = args.to_vec();
    args.push("--json");
    let o = report(pool, &args);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(&o)))
}

fn step_names(doc: &serde_json::Value) -> Vec<String> {
    doc["members"][0]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["name"].as_str().map(String::from))
        .collect()
}

/// Two runs, each reported by id as text, JSON and HTML; the latest by default; an unknown
/// id refused (exit 2) with the ids there are.
fn reports_each_run_by_id(f: &Fixture, extra: &str) {
    let members = ["a", "b"];
    let first = run_number(f, &members, 1, extra);
    let second = run_number(f, &members, 2, extra);
    assert_ne!(first, second);
    let pool = f.path("pool.toml");

    let latest = report_json(&pool, &[]);
    assert_eq!(latest["run"]["id"], second, "{latest}");
    let one = report_json(&pool, &["--run", &first.to_string()]);
    assert_eq!(one["run"]["id"], first, "{one}");
    assert_eq!(one["run"]["state"], "done");
    assert!(step_names(&one).contains(&"install-1".to_string()), "{one}");
    assert!(
        !step_names(&one).contains(&"install-2".to_string()),
        "{one}"
    );
    let two = report_json(&pool, &["--run", &second.to_string()]);
    assert!(step_names(&two).contains(&"install-2".to_string()), "{two}");

    let text = report(&pool, &["--run", &first.to_string()]);
    assert_eq!(text.status.code(), Some(0), "{}", stderr(&text));
    let out = stdout(&text);
    assert!(
        out.starts_with(&format!("run {first} of pool t: done")),
        "{out}"
    );
    assert!(
        out.contains("install-1") && !out.contains("install-2"),
        "{out}"
    );

    let page = f.path("first.html");
    let html = report(
        &pool,
        &[
            "--run",
            &first.to_string(),
            "--html",
            page.to_str().unwrap(),
        ],
    );
    assert_eq!(html.status.code(), Some(0), "{}", stderr(&html));
    let page = std::fs::read_to_string(&page).expect("the page");
    assert!(
        page.contains("install-1") && !page.contains("install-2"),
        "the page is of run {first}"
    );

    let unknown = second + 1000;
    let o = report(&pool, &["--run", &unknown.to_string()]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(o.stdout.is_empty(), "{}", stdout(&o));
    let err = stderr(&o);
    assert!(
        err.contains(&format!("--run {unknown}: no run {unknown} of pool \"t\"")),
        "{err}"
    );
    assert!(
        err.contains(&format!("its runs: {first}, {second}")),
        "{err}"
    );
    let o = report(&pool, &["--run", "x"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

#[test]
fn report_run_reads_any_past_run_from_the_sqlite_journal() {
    let f = Fixture::new(&["a", "b"]);
    reports_each_run_by_id(&f, "");
    // A run of another pool in the same journal is not one of this pool's.
    let pool = f.path("pool.toml");
    let other = f.other_pool(&pool);
    let state_dir = f.path(".ebb");
    let o = ebb()
        .args(["report", "--run", "1", "--state-dir"])
        .arg(&state_dir)
        .arg(&other)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("no run 1 of pool \"u\"")
            && err.contains("(run 1 is of pool \"t\")")
            && err.contains("it has no run yet"),
        "{err}"
    );
}

#[test]
fn report_run_reads_any_past_run_from_etcd() {
    let cluster = EtcdCluster::start(1);
    let f = Fixture::new(&["a", "b"]);
    reports_each_run_by_id(&f, &cluster.state_table("/report-run", "5s"));
    assert!(
        !f.path(".ebb/journal.db").exists(),
        "the runs are in etcd, not in a local journal"
    );
}

#[test]
fn an_unwritable_html_path_is_refused_first_naming_the_file() {
    let f = Fixture::new(&["a"]);
    let pool = f.pool("", &["a"], &runbook(1));
    // Before any run: the page's path is what is wrong, not the missing journal.
    let missing = f.path("no-such-dir/run.html");
    let o = report(&pool, &["--html", missing.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains(&format!("--html {}", missing.display())) && !err.contains("no journal"),
        "{err}"
    );
    // A path that can be written, with nothing to report yet: no empty page is left.
    let early = f.path("early.html");
    let o = report(&pool, &["--html", early.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("no journal"), "{}", stderr(&o));
    assert!(!early.exists(), "the probe left {}", early.display());
    let o = run(&["run", pool.to_str().unwrap()], f.dir.path());
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    // A directory in the way.
    let o = report(&pool, &["--html", f.dir.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("cannot write the report there"),
        "{}",
        stderr(&o)
    );
    assert!(o.stdout.is_empty(), "nothing reported: {}", stdout(&o));
    let page = f.path("run.html");
    let o = report(&pool, &["--html", page.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(std::fs::metadata(&page).unwrap().len() > 1000);
}
