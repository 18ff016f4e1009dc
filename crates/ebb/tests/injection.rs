//! Hostile names and values: member names, lb_name, group and vars holding quotes, `$(...)`,
//! backticks, `;`, newlines, `%VAR%` and PowerShell sub-expressions reach sh commands
//! verbatim and never run; names ebb refuses are refused at `ebb check` with file, line and
//! key, before anything is changed. (PowerShell command text and ssh: crates/ebb-drivers/
//! tests/injection.rs.)

mod support;
use support::*;

/// Names that are legal (no control characters) and no file-system trouble (no `/`), each
/// trying to create a file named `pwned*` in the pool's folder if it were ever executed.
const HOSTILE_NAMES: &[&str] = &[
    "a'b$(touch pwned1)",
    "c`touch pwned2`\"d",
    "e;touch pwned3;%PATH%",
    "f$(Get-Date)@(x)&{touch pwned4}|x",
];

/// A variable value: every trick at once, newlines included (values may span lines).
const HOSTILE_VALUE: &str =
    "$(touch pwned5)\n`touch pwned6`\n'; touch pwned7; echo '\n\"; touch pwned8 #\n%COMSPEC% $env:X $(Get-Date) ${HOME} \\n";

fn toml_str(s: &str) -> String {
    serde_json::to_string(s).expect("json string")
}

#[test]
fn hostile_names_lb_names_groups_and_vars_reach_sh_verbatim_and_never_run() {
    let f = Fixture::new(HOSTILE_NAMES);
    let mut text = format!(
        "[pool]\nname = \"t\"\n\n{}\n[defaults]\nvars = {{ v = {} }}\n\n",
        f.balancer(),
        toml_str(HOSTILE_VALUE)
    );
    for (i, m) in HOSTILE_NAMES.iter().enumerate() {
        text.push_str(&format!(
            "[[member]]\nname = {n}\naddress = \"127.0.0.1:{}\"\ngroup = {n}\nvars = {{ i = \"{i}\" }}\n\n",
            10_000 + i,
            n = toml_str(m)
        ));
    }
    text.push_str(
        "[runbook.drain]\ntimeout = \"10s\"\n\n[[runbook.step]]\nname = \"record\"\n\
         run = \"printf '%s|' {member} {lb_name} {group} {var.v} > seen.{var.i}; printf '%s' \\\"$EBB_MEMBER|$EBB_VAR_V\\\" > env.{var.i}\"\n\
         undo = \"printf '%s' {member} > undone.{var.i}\"\n",
    );
    let pool = f.path("pool.toml");
    std::fs::write(&pool, &text).unwrap();
    let o = run(
        &["check", "--no-members", pool.to_str().unwrap()],
        f.dir.path(),
    );
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    let o = run(&["run", pool.to_str().unwrap()], f.dir.path());
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    for (i, m) in HOSTILE_NAMES.iter().enumerate() {
        assert_eq!(
            f.read(&format!("seen.{i}")),
            format!("{m}|{m}|{m}|{HOSTILE_VALUE}|"),
            "placeholders arrive verbatim"
        );
        assert_eq!(
            f.read(&format!("env.{i}")),
            format!("{m}|{HOSTILE_VALUE}"),
            "the environment arrives verbatim"
        );
        assert_eq!(f.read(&format!("undone.{i}")), *m, "the undo too");
        // The balancer (commands with {lb_name}) saw the same names.
        assert_eq!(f.lb_state(m), "started", "{m} back in service");
        assert_eq!(f.lb_initial(m), "started", "{m} unheld");
    }
    let pwned: Vec<_> = walk(f.dir.path())
        .into_iter()
        .filter(|p| {
            p.file_name().is_some_and(|n| {
                n.to_string_lossy()
                    .strip_prefix("pwned")
                    .is_some_and(|k| k.chars().all(|c| c.is_ascii_digit()))
            })
        })
        .collect();
    assert!(pwned.is_empty(), "something ran: {pwned:?}");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        }
        out.push(p);
    }
    out
}

/// `ebb check` on `text`: exit 2, and each `(line, text)` in the message, nothing run.
fn refused(text: &str, want: &[(usize, &str)]) {
    let dir = tempfile::tempdir().unwrap();
    let pool = dir.path().join("pool.toml");
    std::fs::write(&pool, text).unwrap();
    let o = run(&["check", pool.to_str().unwrap()], dir.path());
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    for (line, what) in want {
        assert!(
            err.contains(&format!("pool.toml:{line}: {what}")),
            "wanted pool.toml:{line}: {what} in:\n{err}"
        );
    }
    assert!(
        !dir.path().join("pwned").exists(),
        "ebb check ran something"
    );
    assert!(!dir.path().join(".ebb").exists(), "no journal");
}

#[test]
fn names_with_control_characters_are_refused_at_check() {
    refused(
        "[pool]\nname = \"p\"\n[balancer]\ndriver = \"command\"\nstart = \"true\"\nstop = \"true\"\ndrainstop = \"true\"\nstate = \"echo started\"\ninitial_state = \"true\"\n\
         [[member]]\nname = \"web1\\ntouch pwned\"\naddress = \"127.0.0.1:1\"\n\
         [[member]]\nname = \"web2\"\naddress = \"127.0.0.1:2\"\nlb_name = \"web2\\r\"\ngroup = \"a\\tb\"\n",
        &[
            (11, "member[0].name: \"web1\\ntouch pwned\" contains the control character '\\n'"),
            (16, "member[1].lb_name: \"web2\\r\" contains the control character '\\r'"),
            (17, "member[1].group: \"a\\tb\" contains the control character '\\t'"),
        ],
    );
}

#[test]
fn placeholders_inside_the_templates_own_quotes_are_refused_at_check() {
    refused(
        "[pool]\nname = \"p\"\n[balancer]\ndriver = \"command\"\nstart = \"lb start '{lb_name}'\"\nstop = \"true\"\ndrainstop = \"true\"\nstate = \"echo started\"\ninitial_state = \"true\"\n\
         [[member]]\nname = \"web1\"\naddress = \"127.0.0.1:1\"\n\
         [[runbook.step]]\nname = \"s\"\nrun = \"echo \\\"updating {member}\\\"\"\nundo = \"echo {member} \\\"{var.x}\\\"\"\n",
        &[
            (5, "balancer.start: placeholder {lb_name} is inside quotes"),
            (15, "runbook.step[0].run: placeholder {member} is inside quotes"),
            (16, "runbook.step[0].undo: placeholder {var.x} is inside quotes"),
        ],
    );
}

#[test]
fn haproxy_refuses_server_names_that_would_end_its_runtime_api_command() {
    refused(
        "[pool]\nname = \"p\"\n[balancer]\ndriver = \"haproxy\"\nsocket = \"/nonexistent/admin.sock\"\nbackend = \"app\"\n\
         [[member]]\nname = \"web1\"\naddress = \"127.0.0.1:1\"\nlb_name = \"web1;disable server app/web2\"\n\
         [[member]]\nname = \"web 2\"\naddress = \"127.0.0.1:2\"\n\
         [[member]]\nname = \"web3\"\naddress = \"127.0.0.1:3\"\nlb_name = \"app/web3\"\n",
        &[
            (10, "member[0].lb_name: member \"web1\": \"web1;disable server app/web2\" is not a HAProxy server name"),
            (11, "member[1].lb_name: member \"web 2\": \"web 2\" is not a HAProxy server name"),
        ],
    );
}
