//! The data plane: accept client connections, pick a member, connect (bounded; on refusal
//! or timeout try another member), then copy bytes both ways until both sides are done,
//! the connection idles out, or its member is stopped.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::pool::Pool;

/// Per-listener counters for the metrics.
pub(crate) struct ListenerStats {
    pub addr: SocketAddr,
    /// Client connections accepted.
    pub accepted: AtomicU64,
    /// Client connections closed because no member could take them.
    pub refused: AtomicU64,
}

/// Settings every connection needs.
#[derive(Clone, Copy)]
pub(crate) struct ProxySettings {
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
}

/// Buffer size for each direction of a connection.
const BUF_SIZE: usize = 16 * 1024;

/// Accepts clients on one listener until shutdown.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    stats: Arc<ListenerStats>,
    pool: Arc<Pool>,
    settings: ProxySettings,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((client, peer)) => {
                    stats.accepted.fetch_add(1, Relaxed);
                    let pool = pool.clone();
                    let stats = stats.clone();
                    tokio::spawn(async move {
                        if !serve_client(client, peer, &pool, settings).await {
                            stats.refused.fetch_add(1, Relaxed);
                        }
                    });
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off rather than spin.
                    tracing::warn!(listener = %stats.addr, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = shutdown.changed() => return,
        }
    }
}

/// Proxies one client. Returns false if no member could take it.
async fn serve_client(
    client: TcpStream,
    peer: SocketAddr,
    pool: &Arc<Pool>,
    settings: ProxySettings,
) -> bool {
    let _ = client.set_nodelay(true);
    let mut tried: Vec<usize> = Vec::new();
    loop {
        let Some(guard) = pool.pick(peer.ip(), &tried) else {
            tracing::debug!(client = %peer, "no member can take the connection");
            return false;
        };
        let member = guard.member();
        match tokio::time::timeout(settings.connect_timeout, TcpStream::connect(member.addr)).await
        {
            Ok(Ok(backend)) => {
                let _ = backend.set_nodelay(true);
                member.total.fetch_add(1, Relaxed);
                let mut cut = guard.cut.clone();
                copy_both_ways(client, backend, member, &mut cut, settings.idle_timeout).await;
                drop(guard);
                return true;
            }
            Ok(Err(e)) => {
                tracing::warn!(member = %member.name, address = %member.addr, error = %e, "member refused a connection; trying another member");
            }
            Err(_) => {
                tracing::warn!(member = %member.name, address = %member.addr, timeout = ?settings.connect_timeout, "connecting to member timed out; trying another member");
            }
        }
        tried.push(guard.index);
    }
}

async fn copy_both_ways(
    mut client: TcpStream,
    mut backend: TcpStream,
    member: &crate::pool::Member,
    cut: &mut watch::Receiver<u64>,
    idle_timeout: Duration,
) {
    let shared = Shared {
        start: Instant::now(),
        last_ms: AtomicU64::new(0),
        ended: AtomicU8::new(0),
    };
    let (start, last_ms) = (shared.start, &shared.last_ms);
    let (mut cr, mut cw) = client.split();
    let (mut br, mut bw) = backend.split();
    // Uninitialised capacity: `read_buf` fills it without the cost of zeroing 32 KiB for
    // every connection (it showed in profiles of one-request-per-connection traffic).
    let mut up = Vec::with_capacity(BUF_SIZE);
    let mut down = Vec::with_capacity(BUF_SIZE);
    let both = async {
        tokio::try_join!(
            pump(&mut cr, &mut bw, &mut up, &member.bytes_in, &shared),
            pump(&mut br, &mut cw, &mut down, &member.bytes_out, &shared),
        )
    };
    let idle = async {
        loop {
            let deadline = start + Duration::from_millis(last_ms.load(Relaxed)) + idle_timeout;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    };
    tokio::select! {
        r = both => {
            if let Err(e) = r {
                tracing::debug!(member = %member.name, error = %e, "connection ended with an error");
            }
        }
        _ = cut.changed() => {
            tracing::debug!(member = %member.name, "connection closed: member stopped");
        }
        _ = idle => {
            tracing::debug!(member = %member.name, "connection closed: idle timeout");
        }
    }
}

/// What both directions of a connection share.
struct Shared {
    start: Instant,
    /// Milliseconds after `start` of the latest traffic either way (for the idle timeout).
    last_ms: AtomicU64,
    /// How many directions have reached end of input.
    ended: AtomicU8,
}

/// Copies one direction; on end of input, half-closes the other side (sends FIN) and lets
/// the opposite direction go on. The direction that ends last skips the shutdown: closing
/// both sockets right after sends the same FIN, one syscall cheaper per connection.
async fn pump<R, W>(
    r: &mut R,
    w: &mut W,
    buf: &mut Vec<u8>,
    counter: &AtomicU64,
    shared: &Shared,
) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    loop {
        buf.clear();
        let n = r.read_buf(buf).await?;
        if n == 0 {
            if shared.ended.fetch_add(1, Relaxed) == 0 {
                w.shutdown().await?;
            }
            return Ok(());
        }
        w.write_all(buf).await?;
        counter.fetch_add(n as u64, Relaxed);
        shared
            .last_ms
            .store(shared.start.elapsed().as_millis() as u64, Relaxed);
    }
}
