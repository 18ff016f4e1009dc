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
        let dir = tempfile::tempdir().expect("tempdir");
        let names: Vec<String> = (0..n).map(|i| format!("m{i}")).collect();
        let client_ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let peer_ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let mut c = EtcdCluster {
            dir,
            names,
            client_ports,
            peer_ports,
            children: (0..n).map(|_| None).collect(),
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
        let client = format!("http://127.0.0.1:{}", self.client_ports[i]);
        let peer = format!("http://127.0.0.1:{}", self.peer_ports[i]);
        let child = Command::new("etcd")
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

    /// The client URLs, as the pool file lists them.
    pub fn endpoints(&self) -> Vec<String> {
        self.client_ports
            .iter()
            .map(|p| format!("http://127.0.0.1:{p}"))
            .collect()
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
            for p in &self.client_ports {
                let ok = Command::new("etcdctl")
                    .env("ETCDCTL_API", "3")
                    .args([
                        "--endpoints",
                        &format!("http://127.0.0.1:{p}"),
                        "--command-timeout=2s",
                        "put",
                        "/health-probe",
                        "1",
                    ])
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
