//! Health checks: a TCP connect or an HTTP GET per member every `interval`, each bounded by
//! `timeout`. `fall` failures in a row take a member down; `rise` passes in a row bring a
//! down member back, in its initial state. A member starts `unknown` and is `up` at its
//! first passing check.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::config::{HealthConfig, HealthKind};
use crate::pool::Pool;

/// Checks member `index` until shutdown.
pub(crate) async fn check_loop(
    pool: Arc<Pool>,
    index: usize,
    cfg: HealthConfig,
    mut shutdown: watch::Receiver<bool>,
) {
    let addr = pool.members[index].addr;
    loop {
        let result = tokio::time::timeout(cfg.timeout, check_once(addr, &cfg)).await;
        let ok = match result {
            Ok(Ok(())) => true,
            Ok(Err(why)) => {
                tracing::debug!(member = %pool.members[index].name, %why, "health check failed");
                false
            }
            Err(_) => {
                tracing::debug!(member = %pool.members[index].name, "health check timed out");
                false
            }
        };
        if let Some(st) = pool.health_result(index, ok, cfg.rise, cfg.fall) {
            tracing::info!(member = %st.name, health = %st.health, state = %st.state, "member health changed");
        }
        tokio::select! {
            _ = tokio::time::sleep(cfg.interval) => {}
            _ = shutdown.changed() => return,
        }
    }
}

async fn check_once(addr: SocketAddr, cfg: &HealthConfig) -> Result<(), String> {
    let mut s = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    if cfg.kind == HealthKind::Tcp {
        return Ok(());
    }
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: ebb-lb-health\r\nConnection: close\r\n\r\n",
        cfg.path
    );
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| format!("send: {e}"))?;
    // Only the status line matters.
    let mut buf = [0u8; 256];
    let mut len = 0;
    while !buf[..len].contains(&b'\n') && len < buf.len() {
        let n = s
            .read(&mut buf[len..])
            .await
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            break;
        }
        len += n;
    }
    let line = String::from_utf8_lossy(&buf[..len]);
    let line = line.lines().next().unwrap_or("");
    let status: Option<u16> = line
        .strip_prefix("HTTP/1.")
        .and_then(|rest| rest.get(2..5))
        .and_then(|code| code.parse().ok());
    match status {
        Some(code) if code == cfg.expect_status => Ok(()),
        Some(code) => Err(format!("status {code}, expected {}", cfg.expect_status)),
        None => Err(format!("not an HTTP response: {line:?}")),
    }
}
