//! A real etcd cluster (Debian's `etcd-server`) of N members on loopback ports, in a temp
//! dir, for the tests of the etcd state backend. A missing `etcd` binary fails the test.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct EtcdCluster {
    pub dir: tempfile::TempDir,
    names: Vec<String>,
    client_ports: Vec<u16>,
    peer_ports: Vec<u16>,
    children: Vec<Option<Child>>,
    /// With TLS on the client port: the certificates the test made.
    pub tls: Option<Certs>,
    /// etcdctl's `--user` once auth is enabled.
    user: Option<String>,
    /// More flags for every member.
    extra: Vec<String>,
}

/// Certificates made with the `openssl` CLI for one test: a CA, etcd's server certificate
/// (for 127.0.0.1) and a client certificate it signed, and an unrelated CA.
pub struct Certs {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    pub other_ca: PathBuf,
    /// etcd started with `--client-cert-auth`.
    pub client_cert_auth: bool,
}

fn openssl(dir: &std::path::Path, args: &[&str]) {
    let o = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl (Debian package openssl)");
    assert!(
        o.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

impl Certs {
    /// Makes the certificates in `dir` (P-256 keys: quick to make).
    pub fn make(dir: &std::path::Path, client_cert_auth: bool) -> Certs {
        let ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
        let sh = |line: String| {
            let args: Vec<&str> = line.split(' ').collect();
            openssl(dir, &args);
        };
        for ca in ["ca", "other-ca"] {
            sh(format!(
                "req -x509 {ec} -keyout {ca}.key -out {ca}.pem -days 2 -subj /CN={ca}"
            ));
        }
        std::fs::write(
            dir.join("server.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\nbasicConstraints=CA:FALSE\n",
        )
        .expect("write server.ext");
        std::fs::write(
            dir.join("client.ext"),
            "extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n",
        )
        .expect("write client.ext");
        for (who, cn) in [("server", "127.0.0.1"), ("client", "root")] {
            sh(format!(
                "req {ec} -keyout {who}.key -out {who}.csr -subj /CN={cn}"
            ));
            sh(format!("x509 -req -in {who}.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out {who}.pem -days 2 -extfile {who}.ext"));
        }
        Certs {
            ca: dir.join("ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
            client_cert: dir.join("client.pem"),
            client_key: dir.join("client.key"),
            other_ca: dir.join("other-ca.pem"),
            client_cert_auth,
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl EtcdCluster {
    /// Starts `n` members and waits (bounded) until the cluster answers writes.
    pub fn start(n: usize) -> EtcdCluster {
        Self::start_with(n, false, false, &[])
    }

    /// Starts `n` members with more flags (`--auth-token-ttl=1`).
    pub fn start_args(n: usize, extra: &[&str]) -> EtcdCluster {
        Self::start_with(n, false, false, extra)
    }

    /// Starts `n` members serving their client port over TLS (certificates made by
    /// [`Certs::make`]), with `--client-cert-auth` when `client_cert_auth`.
    pub fn start_tls(n: usize, client_cert_auth: bool) -> EtcdCluster {
        Self::start_with(n, true, client_cert_auth, &[])
    }

    fn start_with(n: usize, tls: bool, client_cert_auth: bool, extra: &[&str]) -> EtcdCluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let tls = tls.then(|| Certs::make(dir.path(), client_cert_auth));
        let names: Vec<String> = (0..n).map(|i| format!("m{i}")).collect();
        let client_ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let peer_ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let mut c = EtcdCluster {
            dir,
            names,
            client_ports,
            peer_ports,
            children: (0..n).map(|_| None).collect(),
            tls,
            user: None,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        for i in 0..n {
            c.start_member(i);
        }
        c.wait_healthy();
        c
    }

    fn initial_cluster(&self) -> String {
        self.names
            .iter()
            .zip(&self.peer_ports)
            .map(|(n, p)| format!("{n}=http://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Starts (or restarts, on its data dir) member `i`.
    pub fn start_member(&mut self, i: usize) {
        let data: PathBuf = self.dir.path().join(&self.names[i]);
        let log = std::fs::File::create(self.dir.path().join(format!("{}.log", self.names[i])))
            .expect("etcd log");
        let client = format!("{}://127.0.0.1:{}", self.scheme(), self.client_ports[i]);
        let peer = format!("http://127.0.0.1:{}", self.peer_ports[i]);
        let mut cmd = Command::new("etcd");
        if let Some(c) = &self.tls {
            cmd.arg("--cert-file").arg(&c.server_cert);
            cmd.arg("--key-file").arg(&c.server_key);
            if c.client_cert_auth {
                cmd.arg("--client-cert-auth")
                    .arg("--trusted-ca-file")
                    .arg(&c.ca);
            }
        }
        let child = cmd
            .args(&self.extra)
            .args(["--name", &self.names[i]])
            .arg("--data-dir")
            .arg(&data)
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &self.initial_cluster()])
            .args(["--initial-cluster-token", "ebb-test"])
            .args(["--initial-cluster-state", "new"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start etcd (Debian package etcd-server; scripts/test.sh installs it)");
        self.children[i] = Some(child);
    }

    /// Kills member `i` (SIGKILL).
    pub fn kill_member(&mut self, i: usize) {
        if let Some(mut c) = self.children[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// The client URLs, as the pool file lists them.
    pub fn endpoints(&self) -> Vec<String> {
        self.client_ports
            .iter()
            .map(|p| format!("{}://127.0.0.1:{p}", self.scheme()))
            .collect()
    }

    /// `etcdctl` against this cluster (its TLS files and, once auth is on, its root user).
    pub fn etcdctl(&self) -> Command {
        let mut c = Command::new("etcdctl");
        c.env("ETCDCTL_API", "3")
            .arg("--endpoints")
            .arg(self.endpoints().join(","))
            .arg("--command-timeout=5s");
        if let Some(t) = &self.tls {
            c.arg("--cacert").arg(&t.ca);
            c.arg("--cert").arg(&t.client_cert);
            c.arg("--key").arg(&t.client_key);
        }
        if let Some(u) = &self.user {
            c.arg("--user").arg(u);
        }
        c
    }

    /// Turns on etcd's authentication with user `root` (password `password`), which
    /// etcdctl uses from now on.
    pub fn enable_auth(&mut self, password: &str) {
        for args in [
            vec!["user", "add", &format!("root:{password}")],
            vec!["auth", "enable"],
        ] {
            let o = self.etcdctl().args(&args).output().expect("run etcdctl");
            assert!(
                o.status.success(),
                "etcdctl {args:?}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
        self.user = Some(format!("root:{password}"));
    }

    /// A `[state]` table for this cluster.
    pub fn state_table(&self, prefix: &str, ttl: &str) -> String {
        let eps: Vec<String> = self
            .endpoints()
            .iter()
            .map(|e| format!("\"{e}\""))
            .collect();
        format!(
            "[state]\nbackend = \"etcd\"\nendpoints = [{}]\nprefix = \"{prefix}\"\nlease_ttl = \"{ttl}\"\n",
            eps.join(", ")
        )
    }

    /// Waits until a write through some member succeeds.
    pub fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            for ep in self.endpoints() {
                let ok = self
                    .etcdctl()
                    .args(["--endpoints", &ep, "put", "/health-probe", "1"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .map(|s| s.success())
                    .unwrap_or(false);
                if ok {
                    return;
                }
            }
            if Instant::now() > deadline {
                let logs: String = self
                    .names
                    .iter()
                    .map(|n| {
                        std::fs::read_to_string(self.dir.path().join(format!("{n}.log")))
                            .unwrap_or_default()
                    })
                    .collect::<Vec<_>>()
                    .join("\n---\n");
                panic!(
                    "etcd cluster not healthy in 60 s:\n{}",
                    &logs[logs.len().saturating_sub(4000)..]
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.children.len() {
            self.kill_member(i);
        }
    }
}
