//! The shape of every `--json` document ebb prints outside the run's event lines (whose
//! shape the engine's `Event` pins): `check`, `plan`, `lock status`, and the `versions`
//! line that ends a run. Field names, their order and the JSON type of each value are
//! pinned, so a refactor of the structs behind them cannot rename, reorder or retype a
//! field unnoticed. The balancer is the file-backed `command` driver of `support`; the
//! etcd lock runs against a real etcd.

#[path = "support/etcd.rs"]
mod etcd;
mod support;

use etcd::EtcdCluster;
use std::path::Path;
use support::*;

/// The document with every value replaced by its JSON type (`s` string, `n` number,
/// `b` bool, `null`), keys kept in the order printed; an array shows each of its elements.
/// Written over the raw text because a parsed `serde_json::Value` sorts its keys.
fn shape(raw: &str) -> String {
    let mut out = String::new();
    let mut chars = raw.trim().chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                let mut s = String::new();
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => {
                            chars.next();
                        }
                        '"' => break,
                        c => s.push(c),
                    }
                }
                if chars.peek() == Some(&':') {
                    out.push_str(&s);
                } else {
                    out.push('s');
                }
            }
            '{' | '}' | '[' | ']' | ':' | ',' => out.push(c),
            't' | 'f' => {
                while chars.peek().is_some_and(|c| c.is_ascii_alphabetic()) {
                    chars.next();
                }
                out.push('b');
            }
            'n' => {
                while chars.peek().is_some_and(|c| c.is_ascii_alphabetic()) {
                    chars.next();
                }
                out.push_str("null");
            }
            c if c == '-' || c.is_ascii_digit() => {
                while chars
                    .peek()
                    .is_some_and(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-'))
                {
                    chars.next();
                }
                out.push('n');
            }
            _ => {}
        }
    }
    out
}

#[test]
fn shape_reads_keys_in_order_and_types() {
    assert_eq!(
        shape(r#"{"b":1,"a":[true,null,"x:y"],"c":{"d":-1.5e3}}"#),
        "{b:n,a:[b,null,s],c:{d:n}}"
    );
}

const VERSION_CHECK: &str = r#"
[[runbook.verify]]
name = "app-version"
version = { command = "cat {var.dir}/lb/{member}.version", at_least = "1.1" }

[[runbook.rollback]]
name = "previous"
run = "echo 1.0 > {var.dir}/lb/{member}.version"
"#;

/// Three members: `a` on 1.1, `b` on 1.0, `c` whose version cannot be read.
fn fixture() -> (Fixture, std::path::PathBuf) {
    let f = Fixture::new(&["a", "b", "c"]);
    let pool = f.pool("", &["a", "b", "c"], &format!("{RUNBOOK}{VERSION_CHECK}"));
    std::fs::write(f.path("lb/a.version"), "1.1\n").unwrap();
    std::fs::write(f.path("lb/b.version"), "1.0\n").unwrap();
    (f, pool)
}

fn json_of(args: &[&str], pool: &Path) -> (Option<i32>, String) {
    let o = ebb()
        .args(args)
        .arg(pool)
        .current_dir(pool.parent().unwrap())
        .output()
        .unwrap();
    (o.status.code(), stdout(&o))
}

#[test]
fn check_json_keeps_its_fields() {
    let (f, pool) = fixture();
    std::fs::remove_file(f.path("lb/b.state")).unwrap();
    let (code, out) = json_of(&["check", "--json"], &pool);
    assert_eq!(code, Some(1), "{out}");
    assert_eq!(
        shape(&out),
        "{members:[{active_connections:n,detail:s,in_service:b,name:s,state:s},{error:s,name:s},\
         {active_connections:n,detail:s,in_service:b,name:s,state:s}],\
         ok:b,pool:s,problems:[s],valid:b,\
         versions:[{check:s,expected:s,member:s,ok:b,version:s},{check:s,expected:s,member:s,ok:b,version:s},\
         {check:s,error:s,member:s,ok:b}],\
         warnings:[]}",
        "{out}"
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["members"][0]["state"], "started", "{v}");
    assert_eq!(v["members"][0]["in_service"], true, "{v}");
    assert_eq!(v["members"][1]["name"], "b", "{v}");
    assert_eq!(v["versions"][1]["ok"], false, "{v}");
    assert_eq!(v["versions"][1]["version"], "1.0", "{v}");
}

#[test]
fn check_json_of_an_invalid_file_keeps_its_fields() {
    let (f, _) = fixture();
    let bad = f.path("bad.toml");
    std::fs::write(&bad, "[pool]\nname = \"t\"\nmax_unavailable = \"lots\"\n").unwrap();
    let (code, out) = json_of(&["check", "--json"], &bad);
    assert_eq!(code, Some(2), "{out}");
    assert_eq!(
        shape(&out),
        format!(
            "{{file:s,ok:b,problems:[{}],valid:b}}",
            vec![
                "s";
                serde_json::from_str::<serde_json::Value>(&out).unwrap()["problems"]
                    .as_array()
                    .unwrap()
                    .len()
            ]
            .join(",")
        ),
        "{out}"
    );
}

#[test]
fn plan_json_keeps_its_fields() {
    let (_f, pool) = fixture();
    let (code, out) = json_of(&["plan", "--json"], &pool);
    assert_eq!(code, Some(0), "{out}");
    let member = "{address:s,lb_name:s,name:s,ops:[{kind:s,name:s},{kind:s,name:s},{kind:s,name:s},{kind:s,name:s},{kind:s,name:s},{kind:s,name:s},{kind:s,name:s}],rollback:[{kind:s,name:s},{kind:s,name:s}]}";
    let timing = "{basis:null,end:null,expected_s:null,in_next_window:b,name:s,start:null}";
    assert_eq!(
        shape(&out),
        format!(
            "{{driver:s,policy:{{capacity_wait_s:n,max_unavailable:n,min_in_service:n}},pool:s,\
             timing:{{expected_end:null,members:[{timing},{timing},{timing}],next_window:null,windows:[]}},\
             waves:[{{members:[{member},{member},{member}],name:s,pause_after:b}}]}}"
        ),
        "{out}"
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let a = &v["waves"][0]["members"][0];
    assert_eq!(a["name"], "a", "{v}");
    assert_eq!(
        a["ops"][0],
        serde_json::json!({"kind": "hold", "name": "hold"}),
        "{v}"
    );
    assert_eq!(a["rollback"][0]["name"], "previous", "{v}");
    assert_eq!(v["policy"]["max_unavailable"], 1, "{v}");
}

#[test]
fn run_json_ends_with_the_versions_line() {
    let (f, pool) = fixture();
    std::fs::write(f.path("lb/b.version"), "1.1\n").unwrap();
    std::fs::write(f.path("lb/c.version"), "1.1\n").unwrap();
    let (code, out) = json_of(&["run", "--json"], &pool);
    assert_eq!(code, Some(0), "{out}");
    let last = out.lines().last().unwrap_or_default();
    assert_eq!(
        shape(last),
        "{event:s,members:[{check:s,expected:s,member:s,ok:b,version:s},\
         {check:s,expected:s,member:s,ok:b,version:s},{check:s,expected:s,member:s,ok:b,version:s}]}",
        "{out}"
    );
    assert!(last.starts_with(r#"{"event":"versions","#), "{last}");
}

#[test]
fn lock_status_json_keeps_its_fields_on_sqlite() {
    let (_f, pool) = fixture();
    let (code, out) = json_of(&["lock", "status", "--json"], &pool);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(shape(&out), "{backend:s,holder:null}", "{out}");
    assert!(out.contains(r#""backend":"sqlite""#), "{out}");
}

#[test]
fn lock_status_json_keeps_its_fields_on_etcd() {
    let cluster = EtcdCluster::start(1);
    let (f, _) = fixture();
    let pool = f.pool(
        "",
        &["a", "b", "c"],
        &format!("{RUNBOOK}\n{}", cluster.state_table("/shapes", "5s")),
    );
    let (code, out) = json_of(&["lock", "status", "--json"], &pool);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(
        shape(&out),
        "{backend:s,broken:null,holder:null,last_holder:null,lease_left_s:null,renewed_ms:null}",
        "{out}"
    );
    assert!(out.contains(r#""backend":"etcd""#), "{out}");
}
