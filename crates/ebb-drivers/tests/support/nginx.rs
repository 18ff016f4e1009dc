//! A real nginx (the Debian package) run by the tests as an unprivileged-friendly process:
//! prefix, configuration, pid file, error log and temp paths all in a temp dir, `daemon
//! off` so the test owns the master process, proxying HTTP on a free loopback port to an
//! upstream whose `server` lines are in an included file, as users set it up.

use super::free_port;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The nginx binary (Debian puts it in /usr/sbin).
pub fn nginx_bin() -> String {
    for p in ["/usr/sbin/nginx", "/usr/bin/nginx", "/usr/local/sbin/nginx"] {
        if Path::new(p).exists() {
            return p.to_string();
        }
    }
    panic!("nginx is not installed (apt-get install nginx; scripts/test.sh does it): the nginx tests need the real thing")
}

/// nginx in front of some members.
pub struct Nginx {
    pub dir: PathBuf,
    pub conf: PathBuf,
    pub upstream_file: PathBuf,
    /// `127.0.0.1:PORT` clients connect to.
    pub frontend: String,
    child: Option<Child>,
}

impl Nginx {
    /// Starts nginx in `dir/nginx` with `upstream` as the included file's text.
    pub fn start(dir: &Path, upstream: &str) -> Nginx {
        let ndir = dir.join("nginx");
        std::fs::create_dir_all(ndir.join("tmp")).unwrap();
        let port = free_port();
        let upstream_file = ndir.join("upstream.conf");
        std::fs::write(&upstream_file, upstream).unwrap();
        let d = ndir.display();
        let conf = ndir.join("nginx.conf");
        std::fs::write(
            &conf,
            format!(
                r#"daemon off;
master_process on;
worker_processes 2;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 512; }}
http {{
    access_log off;
    client_body_temp_path {d}/tmp/body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;
    upstream app {{
        include {d}/upstream.conf;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://app;
            proxy_buffering off;
            proxy_read_timeout 60s;
        }}
    }}
}}
"#
            ),
        )
        .unwrap();
        let mut n = Nginx {
            dir: ndir,
            conf,
            upstream_file,
            frontend: format!("127.0.0.1:{port}"),
            child: None,
        };
        n.launch();
        n
    }

    /// `nginx -p DIR -c CONF -e LOG`: every path of this instance, for commands.
    pub fn args(&self) -> String {
        format!(
            "{} -p {} -c {} -e {}",
            nginx_bin(),
            self.dir.display(),
            self.conf.display(),
            self.dir.join("error.log").display()
        )
    }

    /// The command that tests this configuration.
    pub fn test_cmd(&self) -> String {
        format!("{} -t", self.args())
    }

    /// The command that reloads it gracefully.
    pub fn reload_cmd(&self) -> String {
        format!("{} -s reload", self.args())
    }

    fn launch(&mut self) {
        let child = Command::new(nginx_bin())
            .args(["-p", &self.dir.display().to_string()])
            .args(["-c", &self.conf.display().to_string()])
            .args(["-e", &self.dir.join("error.log").display().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start nginx: {e}"));
        self.child = Some(child);
        let t = Instant::now();
        while std::net::TcpStream::connect(&self.frontend).is_err() {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "nginx did not listen on {} within 10s: {}",
                self.frontend,
                std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops nginx (SIGTERM: a fast shutdown, as `systemctl restart` does) and waits.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: signalling the child we started.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(10) {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        // Workers and the port go with the master.
        let t = Instant::now();
        while std::net::TcpStream::connect(&self.frontend).is_ok()
            && t.elapsed() < Duration::from_secs(10)
        {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A restart of the balancer: stop, then start from the files as they are.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    /// The upstream file as it is now.
    pub fn upstream(&self) -> String {
        std::fs::read_to_string(&self.upstream_file).unwrap()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM, not SIGKILL: the master takes its workers with it.
        self.stop();
    }
}

/// `[balancer]` for these members behind `n`.
pub fn balancer_toml(n: &Nginx) -> String {
    format!(
        "[balancer]\ndriver = \"nginx\"\nupstream_file = \"{}\"\ntest = \"{}\"\nreload = \"{}\"\n",
        n.upstream_file.display(),
        n.test_cmd(),
        n.reload_cmd()
    )
}
