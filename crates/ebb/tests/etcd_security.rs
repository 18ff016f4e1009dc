//! The etcd state backend against a real etcd that wants credentials: TLS on the client
//! port with client-certificate auth (certificates made by the test with `openssl`), and
//! etcd's own user/password authentication.

#[path = "support/etcd.rs"]
mod etcd;
mod support;

use etcd::EtcdCluster;
use std::path::Path;
use support::*;

/// `ebb ARGS POOL` in the pool's directory, with `env` set.
fn ebb_in(args: &[&str], pool: &Path, env: &[(&str, &str)]) -> std::process::Output {
    let mut c = ebb();
    c.args(args).arg(pool).current_dir(pool.parent().unwrap());
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

/// The run finished: done, every member updated and back in service.
fn assert_done(f: &Fixture, pool: &Path, members: &[&str], env: &[(&str, &str)]) {
    let o = ebb_in(&["status", "--json"], pool, env);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let st: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(st["run"]["state"], "done", "{st}");
    for m in members {
        assert_eq!(f.lb_state(m), "started", "{m}");
        assert_eq!(f.read(&format!("lb/{m}.version")).trim(), "1.1", "{m}");
    }
    assert!(
        !pool.parent().unwrap().join(".ebb").exists(),
        "no local state"
    );
}

#[test]
fn tls_with_a_client_certificate_runs_and_a_wrong_ca_or_no_certificate_is_refused() {
    let cluster = EtcdCluster::start_tls(1, true);
    let certs = cluster.tls.as_ref().unwrap();
    let endpoint = cluster.endpoints()[0].clone();
    assert!(endpoint.starts_with("https://"), "{endpoint}");
    let members = ["a", "b"];
    let f = Fixture::new(&members);
    let table = cluster.state_table("/tls", "5s");
    let with = |ca: &Path, client: bool| {
        let mut t = format!("{RUNBOOK}\n{table}ca_file = \"{}\"\n", ca.display());
        if client {
            t.push_str(&format!(
                "cert_file = \"{}\"\nkey_file = \"{}\"\n",
                certs.client_cert.display(),
                certs.client_key.display()
            ));
        }
        t
    };

    // The right CA and a client certificate: the run goes through etcd over TLS.
    let pool = f.pool("", &members, &with(&certs.ca, true));
    let o = ebb_in(&["run"], &pool, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_done(&f, &pool, &members, &[]);
    let o = ebb_in(&["lock", "status", "--json"], &pool, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    // etcd holds the journal: etcdctl (with its own client certificate) sees the run.
    let o = cluster
        .etcdctl()
        .args(["get", "--prefix", "--keys-only", "/tls/t/run/"])
        .output()
        .unwrap();
    assert!(stdout(&o).contains("/tls/t/run/"), "{}", stdout(&o));
    let before = f.transitions().len();

    // A CA that did not sign etcd's certificate: exit 2, naming the endpoint and TLS.
    let pool = f.pool("", &members, &with(&certs.other_ca, true));
    let o = ebb_in(&["run"], &pool, &[]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains(&endpoint), "names the endpoint: {err}");
    assert!(err.contains("TLS"), "says it is TLS: {err}");
    assert!(err.contains("ca_file"), "says what to check: {err}");

    // No client certificate, to an etcd that wants one: exit 2, naming the endpoint and TLS.
    let pool = f.pool("", &members, &with(&certs.ca, false));
    let o = ebb_in(&["status"], &pool, &[]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains(&endpoint), "names the endpoint: {err}");
    assert!(err.contains("TLS"), "says it is TLS: {err}");
    assert!(err.contains("cert_file"), "says what to set: {err}");

    // The same files from the environment, for a pipeline: accepted.
    let pool = f.pool("", &members, &format!("{RUNBOOK}\n{table}"));
    let env = [
        ("EBB_STATE_CA_FILE", certs.ca.to_str().unwrap()),
        ("EBB_STATE_CERT_FILE", certs.client_cert.to_str().unwrap()),
        ("EBB_STATE_KEY_FILE", certs.client_key.to_str().unwrap()),
    ];
    assert_done(&f, &pool, &members, &env);
    assert_eq!(f.transitions().len(), before, "no balancer operation");
}

#[test]
fn etcd_auth_takes_the_password_from_the_environment_and_a_wrong_one_is_exit_2_unprinted() {
    // Tokens that etcd forgets after 1 s idle: each member's install (2 s) outlasts the
    // token, so the journal writes after it need a new one.
    let mut cluster = EtcdCluster::start_args(1, &["--auth-token-ttl=1"]);
    cluster.enable_auth("right-pw-7f3a");
    let members = ["a", "b"];
    let f = Fixture::new(&members);
    let table = cluster.state_table("/auth", "5s");
    let runbook = RUNBOOK.replace("sleep 0.2;", "sleep 2;");
    let pool = f.pool(
        "",
        &members,
        &format!("{runbook}\n{table}username = \"root\"\n"),
    );

    let good = [("EBB_STATE_PASSWORD", "right-pw-7f3a")];
    let o = ebb_in(&["run"], &pool, &good);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_done(&f, &pool, &members, &good);
    let before = f.transitions().len();

    for cmd in [&["run"][..], &["status"], &["lock", "status"]] {
        let o = ebb_in(cmd, &pool, &[("EBB_STATE_PASSWORD", "wrong-pw-91c2")]);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{cmd:?}: {err}");
        assert!(err.contains("authentication failed"), "{cmd:?}: {err}");
        assert!(err.contains("root"), "names the user: {err}");
        assert!(
            !err.contains("wrong-pw-91c2"),
            "the password is never printed: {err}"
        );
        assert!(!stdout(&o).contains("wrong-pw-91c2"));
    }
    // The password in the file, wrong: the same, and never printed either.
    let pool = f.pool(
        "",
        &members,
        &format!("{RUNBOOK}\n{table}username = \"root\"\npassword = \"file-pw-55e0\"\n"),
    );
    let o = ebb_in(&["run"], &pool, &[]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(!err.contains("file-pw-55e0"), "{err}");
    // No user at all, to an etcd with auth on: exit 2 saying a user is needed.
    let pool = f.pool("", &members, &format!("{RUNBOOK}\n{table}"));
    let o = ebb_in(&["run"], &pool, &[]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("username"), "{err}");
    assert_eq!(f.transitions().len(), before, "no balancer operation");
}
