//! A real HAProxy (backend `web` with servers web1..web3, an admin socket `admin.sock`
//! and a server-state file) in a temp dir, as examples/haproxy-apt.toml's comment sets it
//! up. A missing `haproxy` binary fails the test.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The HAProxy process; stopped on drop.
pub struct Haproxy(Child);

impl Drop for Haproxy {
    fn drop(&mut self) {
        // SAFETY: the process this test started.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

/// Starts HAProxy in `dir` with its `stats socket` at `level` (`admin`, `operator`,
/// `user`) and servers web1..web3 at ports 1..3 (nothing listens there); waits (bounded)
/// until the socket answers.
pub fn start_haproxy(dir: &Path, level: &str) -> Haproxy {
    let servers = [
        ("web1", "127.0.0.1:1"),
        ("web2", "127.0.0.1:2"),
        ("web3", "127.0.0.1:3"),
    ];
    start_haproxy_with(dir, level, &servers).0
}

/// As [`start_haproxy`], with backend `web`'s servers given as (name, address), in HTTP
/// mode, round robin, without health checks; also returns the frontend's address.
pub fn start_haproxy_with(dir: &Path, level: &str, servers: &[(&str, &str)]) -> (Haproxy, String) {
    let bin = ["/usr/sbin/haproxy", "/usr/bin/haproxy"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("haproxy is not installed (apt-get install haproxy; scripts/test.sh does it)");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let sock = dir.join("admin.sock");
    let cfg = format!(
        "global\n  stats socket {} mode 660 level {level}\n  server-state-file {}\ndefaults\n  mode http\n  timeout connect 1s\n  timeout client 5s\n  timeout server 5s\n  load-server-state-from-file global\nfrontend fe\n  bind 127.0.0.1:{port}\n  default_backend web\nbackend web\n  balance roundrobin\n{}",
        sock.display(),
        dir.join("server-state").display(),
        servers
            .iter()
            .map(|(name, addr)| format!("  server {name} {addr}\n"))
            .collect::<String>()
    );
    std::fs::write(dir.join("haproxy.cfg"), cfg).unwrap();
    let child = Command::new(bin)
        .arg("-f")
        .arg(dir.join("haproxy.cfg"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while std::os::unix::net::UnixStream::connect(&sock).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "haproxy did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (Haproxy(child), format!("127.0.0.1:{port}"))
}
