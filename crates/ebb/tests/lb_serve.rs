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

#[test]
fn with_one_of_three_equal_members_drained_the_other_two_share_the_traffic_evenly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let listen = format!("127.0.0.1:{}", free_port());
    let control = format!("http://127.0.0.1:{}", free_port());
    let mut pool = format!(
        "[pool]\nname = \"web\"\n\n[balancer]\ndriver = \"builtin\"\nlisten = \"{listen}\"\ncontrol = \"{control}\"\n\n[balancer.health]\ninterval = \"1h\"\n"
    );
    for name in ["web1", "web2", "web3"] {
        pool.push_str(&format!(
            "\n[[member]]\nname = \"{name}\"\naddress = \"{}\"\n",
            backend(name)
        ));
    }
    std::fs::write(dir.path().join("pool.toml"), pool).expect("write pool");
    let _serve = Serve(
        Command::new(env!("CARGO_BIN_EXE_ebb"))
            .args(["lb", "serve", "pool.toml"])
            .current_dir(dir.path())
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
