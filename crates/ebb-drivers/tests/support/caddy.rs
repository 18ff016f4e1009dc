//! A real Caddy (the Debian package) run by the tests: a JSON config with the admin API
//! and one HTTP server on free loopback ports, a `reverse_proxy` handler with `@id` "web"
//! over the members, its data and config dirs (autosave) in a temp dir.

use super::free_port;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The caddy binary.
pub fn caddy_bin() -> String {
    for p in ["/usr/bin/caddy", "/usr/local/bin/caddy"] {
        if Path::new(p).exists() {
            return p.to_string();
        }
    }
    panic!("caddy is not installed (apt-get install caddy; scripts/test.sh does it): the Caddy tests need the real thing")
}

/// Caddy in front of some members.
pub struct Caddy {
    pub dir: PathBuf,
    /// `http://127.0.0.1:PORT` of the admin API.
    pub admin: String,
    /// `127.0.0.1:PORT` clients connect to.
    pub frontend: String,
    /// Started with `--resume` (from the autosaved config, when there is one).
    pub resume: bool,
    child: Option<Child>,
}

impl Caddy {
    /// Starts `caddy run --config` with the members' addresses as the handler's upstreams.
    pub fn start(dir: &Path, members: &[std::net::SocketAddr]) -> Caddy {
        let upstreams: Vec<String> = members
            .iter()
            .map(|a| format!("{{\"dial\": \"{a}\"}}"))
            .collect();
        Self::start_with(dir, &upstreams, false, "")
    }

    /// Caddy with these upstream objects (JSON), with `--resume` or not, and
    /// `handler_extra` JSON members added to the handler (`"flush_interval": -1, `).
    pub fn start_with(
        dir: &Path,
        upstreams: &[String],
        resume: bool,
        handler_extra: &str,
    ) -> Caddy {
        let cdir = dir.join("caddy");
        std::fs::create_dir_all(&cdir).unwrap();
        let (admin_port, port) = (free_port(), free_port());
        let config = format!(
            r#"{{"admin": {{"listen": "127.0.0.1:{admin_port}"}},
 "apps": {{"http": {{"servers": {{"srv0": {{"listen": ["127.0.0.1:{port}"],
   "routes": [{{"handle": [{{"@id": "web", "handler": "reverse_proxy", {handler_extra}
     "load_balancing": {{"selection_policy": {{"policy": "round_robin"}}}},
     "upstreams": [{}]}}]}}]}}}}}}}}}}"#,
            upstreams.join(", ")
        );
        std::fs::write(cdir.join("caddy.json"), config).unwrap();
        let mut c = Caddy {
            dir: cdir,
            admin: format!("http://127.0.0.1:{admin_port}"),
            frontend: format!("127.0.0.1:{port}"),
            resume,
            child: None,
        };
        c.launch();
        c
    }

    fn launch(&mut self) {
        let mut cmd = Command::new(caddy_bin());
        cmd.args(["run", "--config"])
            .arg(self.dir.join("caddy.json"));
        if self.resume {
            cmd.arg("--resume");
        }
        let child = cmd
            .env("HOME", &self.dir)
            .env("XDG_DATA_HOME", self.dir.join("data"))
            .env("XDG_CONFIG_HOME", self.dir.join("config"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start caddy: {e}"));
        self.child = Some(child);
        let t = Instant::now();
        while std::net::TcpStream::connect(&self.frontend).is_err() {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "caddy did not listen on {} within 10s",
                self.frontend
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops Caddy (SIGTERM) and starts it again the same way.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: signalling the child we started.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(5) {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// `GET` on the admin API (blocking, for observer threads): the body.
    pub fn admin_get(&self, path: &str) -> Option<String> {
        use std::io::{Read, Write};
        let hostport = self.admin.trim_start_matches("http://");
        let mut s = std::net::TcpStream::connect(hostport).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(s, "GET {path} HTTP/1.0\r\nHost: {hostport}\r\n\r\n").ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        let (head, body) = out.split_once("\r\n\r\n")?;
        (head.split_whitespace().nth(1) == Some("200")).then(|| body.to_string())
    }

    /// The `dial`s of the handler's upstreams, in order.
    pub fn dials(&self) -> Option<Vec<String>> {
        let v: serde_json::Value =
            serde_json::from_str(&self.admin_get("/id/web/upstreams")?).ok()?;
        Some(
            v.as_array()?
                .iter()
                .filter_map(|u| u["dial"].as_str().map(String::from))
                .collect(),
        )
    }
}

impl Drop for Caddy {
    fn drop(&mut self) {
        self.stop();
    }
}
