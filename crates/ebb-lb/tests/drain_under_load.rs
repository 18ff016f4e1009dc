//! A drainstop under full load cuts no connection: wrk drives HTTP through the balancer to
//! two real nginx servers, one member is drainstopped mid-run, and wrk must end without a
//! single socket error (a cut or reset connection is a read error to wrk) or non-2xx
//! answer, while the drained member's connections go on carrying requests.
mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ebb_lb::HostState;
use support::*;

/// One nginx with two `server` blocks (members `a` and `b`), each answering `return 200`.
struct Nginx {
    child: Child,
    a: std::net::SocketAddr,
    b: std::net::SocketAddr,
}

impl Nginx {
    fn start(dir: &Path) -> Nginx {
        let bin = ["/usr/sbin/nginx", "/usr/bin/nginx"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("nginx is not installed (scripts/test.sh installs it): this test needs it");
        let (a, b) = (free_addr(), free_addr());
        let d = dir.join("nginx");
        std::fs::create_dir_all(d.join("tmp")).unwrap();
        let dd = d.display();
        let conf = format!(
            "worker_processes 1;\npid {dd}/nginx.pid;\nerror_log {dd}/error.log warn;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {dd}/tmp;\n  keepalive_requests 100000000;\n\
             server {{ listen {a}; location / {{ return 200 \"a\\n\"; }} }}\n\
             server {{ listen {b}; location / {{ return 200 \"b\\n\"; }} }}\n}}\n"
        );
        std::fs::write(d.join("nginx.conf"), conf).unwrap();
        let child = Command::new(bin)
            .arg("-p")
            .arg(&d)
            .arg("-e")
            .arg(d.join("error.log"))
            .arg("-c")
            .arg(d.join("nginx.conf"))
            .args(["-g", "daemon off;"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start nginx: {e}"));
        let n = Nginx { child, a, b };
        let t = Instant::now();
        for addr in [a, b] {
            while std::net::TcpStream::connect(addr).is_err() {
                assert!(t.elapsed() < WAIT, "nginx did not listen on {addr}");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        n
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_addr() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// wrk running against the balancer until `finish` (SIGINT: wrk stops and prints its
/// summary). Its own duration is only a bound.
struct Wrk(Option<Child>);

impl Wrk {
    fn start(addr: std::net::SocketAddr, extra: &[&str]) -> Wrk {
        let child = Command::new("wrk")
            .args(["-t1", "-c32", "-d60s", "--timeout", "30s"])
            .args(extra)
            .arg(format!("http://{addr}/"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start wrk (scripts/test.sh installs it): {e}"));
        Wrk(Some(child))
    }

    /// Stops wrk; returns (requests, errors) from its summary.
    fn finish(mut self) -> (u64, u64, String) {
        let child = self.0.take().unwrap();
        // SAFETY: signalling our own child by its pid.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGINT);
        }
        let out = child.wait_with_output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let requests = text
            .lines()
            .find(|l| l.contains("requests in"))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no request count in wrk's output:\n{text}"));
        // "Socket errors: connect 0, read 1, write 0, timeout 0" and "Non-2xx or 3xx responses: 2"
        let mut errors = 0;
        for l in text.lines() {
            if l.contains("Socket errors") || l.contains("Non-2xx") {
                errors += l
                    .split(|c: char| !c.is_ascii_digit())
                    .filter_map(|n| n.parse::<u64>().ok())
                    .sum::<u64>();
            }
        }
        (requests, errors, text)
    }
}

impl Drop for Wrk {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drainstop_under_wrk_load_cuts_no_connection() {
    let dir = tempfile::tempdir().unwrap();
    let nginx = Nginx::start(dir.path());
    let pool = write_pool(
        dir.path(),
        &[("a", nginx.a), ("b", nginx.b)],
        "",
        SLOW_HEALTH,
    );
    let lb = Lb::start(&pool).await;

    // Keep-alive: wrk's 32 connections stay open; those on `a` must go on through the drain.
    let wrk = Wrk::start(lb.listen, &[]);
    // All 32 set up first: a member's total counts a connection once its connect
    // completed, so one still connecting when the drain began (admitted before it) would
    // look like a new connection below. The balancer's threads accept wrk's burst in
    // parallel with this; the counts are settled when all 32 are open and two reads
    // 50 ms apart agree.
    let deadline = Instant::now() + WAIT;
    let mut last = None;
    loop {
        let (a, b) = (lb.member("a").await, lb.member("b").await);
        let now = (
            a.active_connections,
            a.total_connections,
            b.active_connections,
            b.total_connections,
        );
        if a.active_connections + b.active_connections == 32 && a.bytes_out > 0 && last == Some(now)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "wrk's 32 connections were not all set up: {a:?} {b:?}"
        );
        last = Some(now);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let st = lb.client.drainstop("a").await.unwrap();
    assert_eq!(st.state, HostState::Draining, "{st:?}");
    assert!(st.active_connections > 0, "{st:?}");
    let kept = st.active_connections;
    // Its connections still carry requests after the drain began (well past what was in
    // flight when it began), and none of them was closed.
    let mark = st.bytes_out;
    let during = lb
        .wait_member("a", "still carrying requests", |s| {
            s.bytes_out > mark + 100 * 64 * kept
        })
        .await;
    assert_eq!(during.state, HostState::Draining, "{during:?}");
    assert_eq!(during.active_connections, kept, "{during:?}");
    // No new connection reached it.
    assert_eq!(during.total_connections, st.total_connections, "{during:?}");
    let (requests, errors, out) = wrk.finish();
    assert!(requests > 0, "{out}");
    assert_eq!(errors, 0, "wrk saw cut connections or errors:\n{out}");
    // wrk closed its connections: the drain ends by itself.
    lb.wait_member("a", "stopped", |s| {
        s.state == HostState::Stopped && s.active_connections == 0
    })
    .await;

    // One request per connection: every connection in flight when the drain begins
    // completes, every later one goes to `b`.
    lb.client.start("a").await.unwrap();
    let wrk = Wrk::start(lb.listen, &["-H", "Connection: close"]);
    let a0 = lb.member("a").await.total_connections;
    lb.wait_member("a", "taking new connections", |s| {
        s.total_connections > a0 + 100
    })
    .await;
    let st = lb.client.drainstop("a").await.unwrap();
    assert_ne!(st.state, HostState::Started, "{st:?}");
    let b0 = lb.member("b").await.total_connections;
    lb.wait_member("b", "taking the new connections", |s| {
        s.total_connections > b0 + 200
    })
    .await;
    let a_end = lb
        .wait_member("a", "stopped", |s| s.state == HostState::Stopped)
        .await;
    let (requests, errors, out) = wrk.finish();
    assert!(requests > 0, "{out}");
    assert_eq!(errors, 0, "wrk saw cut connections or errors:\n{out}");
    // Nothing reached `a` once it was stopped.
    let a_after = lb.member("a").await;
    assert_eq!(a_after.total_connections, a_end.total_connections);
    lb.shutdown().await;
    drop(nginx);
}
