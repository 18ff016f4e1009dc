//! The data plane: accept client connections, pick a member, connect (bounded; on refusal
//! or timeout try another member), then copy bytes both ways until both sides are done,
//! the connection idles out, or its member is stopped.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use std::cell::RefCell;
use std::future::poll_fn;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::tcp::{ReadHalf, WriteHalf};
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

/// Size of the read buffer (one per thread).
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
    // No buffer of its own: an idle connection holds no buffer memory (see `poll_pump`).
    let (mut up, mut down) = (Vec::new(), Vec::new());
    let both = async {
        tokio::try_join!(
            poll_fn(|cx| poll_pump(cx, &mut cr, &mut bw, &mut up, &member.bytes_in, &shared)),
            poll_fn(|cx| poll_pump(cx, &mut br, &mut cw, &mut down, &member.bytes_out, &shared)),
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
    // Biased: polled in this order on every wake-up (traffic first), without drawing a
    // random number for fairness each time.
    tokio::select! {
        biased;
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

thread_local! {
    /// The read buffer of every connection served by this thread. A connection borrows it
    /// only within one poll (read, then write what was read), so idle connections hold no
    /// buffer at all: HAProxy's way, and most of the memory of an idle connection before.
    static BUF: RefCell<Box<[u8]>> = RefCell::new(vec![0; BUF_SIZE].into_boxed_slice());
}

/// Copies one direction; on end of input, half-closes the other side (sends FIN) and lets
/// the opposite direction go on. The direction that ends last skips the shutdown: closing
/// both sockets right after sends the same FIN, one syscall cheaper per connection.
///
/// Reads into the thread's buffer and writes at once; only bytes the other side cannot
/// take now are copied to `pending` (the connection's own, freed when written).
fn poll_pump(
    cx: &mut Context<'_>,
    r: &mut ReadHalf<'_>,
    w: &mut WriteHalf<'_>,
    pending: &mut Vec<u8>,
    counter: &AtomicU64,
    shared: &Shared,
) -> Poll<std::io::Result<()>> {
    loop {
        if !pending.is_empty() {
            while !pending.is_empty() {
                let n = ready!(Pin::new(&mut *w).poll_write(cx, pending))?;
                if n == 0 {
                    return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
                }
                pending.drain(..n);
            }
            *pending = Vec::new();
        }
        let n = ready!(BUF.with_borrow_mut(|buf| {
            let n = {
                let mut rb = ReadBuf::new(buf);
                ready!(Pin::new(&mut *r).poll_read(cx, &mut rb))?;
                rb.filled().len()
            };
            let mut off = 0;
            while off < n {
                match Pin::new(&mut *w).poll_write(cx, &buf[off..n]) {
                    Poll::Ready(Ok(0)) => {
                        return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()))
                    }
                    Poll::Ready(Ok(m)) => off += m,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => {
                        pending.extend_from_slice(&buf[off..n]);
                        break;
                    }
                }
            }
            Poll::Ready(Ok(n))
        }))?;
        if n == 0 {
            if shared.ended.fetch_add(1, Relaxed) == 0 {
                ready!(Pin::new(&mut *w).poll_shutdown(cx))?;
            }
            return Poll::Ready(Ok(()));
        }
        counter.fetch_add(n as u64, Relaxed);
        shared
            .last_ms
            .store(shared.start.elapsed().as_millis() as u64, Relaxed);
    }
}
