//! `ebb lb serve` and `ebb lb drainstop` as an operator uses them: real processes, real
//! TCP traffic through the balancer to three backends on loopback.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// A backend that writes its name to each connection and closes it.
fn backend(name: &'static str) -> String {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind backend");
    let addr = l.local_addr().expect("addr").to_string();
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            let _ = s.write_all(format!("{name}\n").as_bytes());
        }
    });
    addr
}

/// The balancer process; stopped when dropped.
struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn ebb_lb(args: &[&str], control: &str) {
    let o = Command::new(env!("CARGO_BIN_EXE_ebb"))
        .arg("lb")
        .args(args)
        .args(["--control", control])
        .env_remove("EBB_LB_TOKEN")
        .output()
        .expect("ebb lb");
    assert_eq!(
        o.status.code(),
        Some(0),
        "ebb lb {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Opens `n` connections one after another; counts which member answered each.
fn spread(listen: &str, n: usize) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for _ in 0..n {
        let mut s = TcpStream::connect(listen).expect("connect to the balancer");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).expect("answer");
        *counts.entry(answer.trim().to_string()).or_insert(0) += 1;
    }
    counts
}

/// `ebb lb serve pool.toml` in `dir` for three backends, `extra` added to `[balancer]`;
/// returns it (once its control API listens), the listen address and the control URL.
fn serve(dir: &std::path::Path, extra: &str) -> (Serve, String, String) {
    let listen = format!("127.0.0.1:{}", free_port());
    let control = format!("http://127.0.0.1:{}", free_port());
    let mut pool = format!(
        "[pool]\nname = \"web\"\n\n[balancer]\ndriver = \"builtin\"\nlisten = \"{listen}\"\ncontrol = \"{control}\"\n{extra}\n[balancer.health]\ninterval = \"1h\"\n"
    );
    for name in ["web1", "web2", "web3"] {
        pool.push_str(&format!(
            "\n[[member]]\nname = \"{name}\"\naddress = \"{}\"\n",
            backend(name)
        ));
    }
    std::fs::write(dir.join("pool.toml"), pool).expect("write pool");
    let serve = Serve(
        Command::new(env!("CARGO_BIN_EXE_ebb"))
            .args(["lb", "serve", "pool.toml"])
            .current_dir(dir)
            .env_remove("EBB_LB_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start ebb lb serve"),
    );
    // Waits on the control API, not the listener: a probe of the listener would take a
    // turn of the round robin at a moment the test does not control.
    let control_addr = control.trim_start_matches("http://").to_string();
    let t = Instant::now();
    while TcpStream::connect(&control_addr).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "ebb lb serve did not listen"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (serve, listen, control)
}

#[test]
fn with_one_of_three_equal_members_drained_the_other_two_share_the_traffic_evenly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_serve, listen, control) = serve(dir.path(), "");
    ebb_lb(&["drainstop", "web3"], &control);
    let counts = spread(&listen, 30);
    assert_eq!(counts.get("web1"), Some(&15), "{counts:?}");
    assert_eq!(counts.get("web2"), Some(&15), "{counts:?}");
    assert_eq!(counts.get("web3"), None, "{counts:?}");

    ebb_lb(&["start", "web3"], &control);
    ebb_lb(&["drainstop", "web1"], &control);
    let counts = spread(&listen, 4);
    assert_eq!(counts.get("web2"), Some(&2), "{counts:?}");
    assert_eq!(counts.get("web3"), Some(&2), "{counts:?}");
}

/// `ebb lb ARGS` from another directory, without EBB_LB_* in its environment.
fn lb_elsewhere(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ebb"))
        .arg("lb")
        .args(args)
        .current_dir(std::env::temp_dir())
        .env_remove("EBB_LB_TOKEN")
        .env_remove("EBB_LB_CONTROL")
        .output()
        .expect("ebb lb")
}

#[test]
fn lb_commands_take_the_control_api_and_token_from_the_pool_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_serve, _listen, control) = serve(dir.path(), "token = \"s3cret-token\"\n");
    let pool = dir.path().join("pool.toml");
    let pool = pool.to_str().unwrap();
    let err = |o: &std::process::Output| String::from_utf8_lossy(&o.stderr).into_owned();

    // The file names the control API and its token.
    let o = lb_elsewhere(&["drainstop", "web2", "--pool", pool]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    let o = lb_elsewhere(&["status", "--json", "--pool", pool]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    let st: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
    let web2 = st["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "web2")
        .cloned()
        .unwrap();
    assert_ne!(web2["state"], "started", "{st}");
    // Without the file (or the token) the balancer refuses.
    let o = lb_elsewhere(&["start", "web2", "--control", &control]);
    assert_eq!(o.status.code(), Some(2), "{}", err(&o));
    // Explicit flags win over the file: a wrong token, another address.
    let o = lb_elsewhere(&["start", "web2", "--pool", pool, "--token", "wrong"]);
    assert_eq!(o.status.code(), Some(2), "{}", err(&o));
    let closed = format!("http://127.0.0.1:{}", free_port());
    let o = lb_elsewhere(&["start", "web2", "--pool", pool, "--control", &closed]);
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    assert!(err(&o).contains(&closed), "{}", err(&o));
    let o = lb_elsewhere(&["start", "web2", "--pool", pool]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));

    // A file that is not the built-in balancer's, or not there: named, with the key.
    let other = dir.path().join("haproxy.toml");
    std::fs::write(
        &other,
        "[pool]\nname = \"web\"\n\n[balancer]\ndriver = \"haproxy\"\ncontrol = \"x\"\n",
    )
    .unwrap();
    let o = lb_elsewhere(&["status", "--pool", other.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", err(&o));
    let e = err(&o);
    assert!(
        e.contains(&format!("{}:5: balancer.driver", other.display())),
        "{e}"
    );
    assert!(e.contains("balancer.control"), "{e}");
    let missing = dir.path().join("nope.toml");
    let o = lb_elsewhere(&["status", "--pool", missing.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", err(&o));
    assert!(
        err(&o).contains(&missing.display().to_string()),
        "{}",
        err(&o)
    );
}
