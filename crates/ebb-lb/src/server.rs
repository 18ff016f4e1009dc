//! Putting the balancer together: bind the listeners and the control API, then run the
//! data plane, the health checks and the state-file writer until shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, watch};

use crate::config::LbConfig;
use crate::control::{self, Control};
use crate::health;
use crate::pool::Pool;
use crate::proxy::{self, ListenerStats, ProxySettings};

/// A bound balancer, not yet serving. Binding first lets callers learn the actual
/// addresses (tests bind port 0) before traffic starts.
pub struct Server {
    config: LbConfig,
    pool: Arc<Pool>,
    listeners: Vec<(TcpListener, Arc<ListenerStats>)>,
    control: TcpListener,
    listen_addrs: Vec<SocketAddr>,
    control_addr: SocketAddr,
}

impl Server {
    /// Loads the saved member states and binds every listener and the control API.
    /// Refuses a control address off loopback without a token.
    pub async fn bind(config: LbConfig) -> anyhow::Result<Server> {
        let src = config.source.display().to_string();
        if config.token.is_none() && !config.control.ip().is_loopback() {
            bail!(
                "{src}: balancer.control: the control API would listen on {} (not loopback) without a token; anyone who reaches it could stop your members. Set balancer.token (or EBB_LB_TOKEN), or bind control to 127.0.0.1",
                config.control
            );
        }
        let pool = Pool::new(&config).map_err(|msg| anyhow::anyhow!("{src}: {msg}"))?;
        let mut listeners = Vec::new();
        let mut listen_addrs = Vec::new();
        for addr in &config.listen {
            let l = bind_listener(*addr).await.with_context(|| {
                format!(
                    "{src}: balancer.listen: cannot listen on {addr}; is another process using it?"
                )
            })?;
            let local = l.local_addr()?;
            listen_addrs.push(local);
            listeners.push((
                l,
                Arc::new(ListenerStats {
                    addr: local,
                    accepted: AtomicU64::new(0),
                    refused: AtomicU64::new(0),
                }),
            ));
        }
        let control = TcpListener::bind(config.control).await.with_context(|| {
            format!(
                "{src}: balancer.control: cannot listen on {}; is another balancer running?",
                config.control
            )
        })?;
        let control_addr = control.local_addr()?;
        // Fail now, not at the first drainstop, if the state file cannot be written.
        let p = pool.clone();
        tokio::task::spawn_blocking(move || p.save())
            .await?
            .map_err(|msg| anyhow::anyhow!("{src}: balancer.state_file: {msg}"))?;
        Ok(Server {
            config,
            pool,
            listeners,
            control,
            listen_addrs,
            control_addr,
        })
    }

    /// The addresses clients connect to (with real ports when port 0 was asked for).
    pub fn listen_addrs(&self) -> &[SocketAddr] {
        &self.listen_addrs
    }

    /// The control API's address.
    pub fn control_addr(&self) -> SocketAddr {
        self.control_addr
    }

    /// The control API's URL, for [`crate::client::ControlClient::new`].
    pub fn control_url(&self) -> String {
        format!("http://{}", self.control_addr)
    }

    /// Serves until `shutdown` completes, then closes every connection and saves the
    /// member states. The caller's runtime serves the control API, the health checks and
    /// one share of the connections; one more thread per further core serves the rest
    /// (see `data_threads_wanted`).
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let settings = ProxySettings {
            connect_timeout: self.config.connect_timeout,
            idle_timeout: self.config.idle_timeout,
        };
        let mut tasks = Vec::new();
        let mut stats = Vec::new();
        let all: Vec<Arc<ListenerStats>> =
            self.listeners.iter().map(|(_, st)| st.clone()).collect();
        let mut data_threads = Vec::new();
        for n in 1..data_threads_wanted() {
            match spawn_data_thread(n, &all, &self.pool, settings, &stop_rx) {
                Ok(t) => data_threads.push(t),
                // Fewer threads serve the listeners; they are still served.
                Err(e) => tracing::warn!(error = %e, "cannot start a data-plane thread"),
            }
        }
        for (listener, st) in self.listeners {
            stats.push(st.clone());
            tasks.push(tokio::spawn(proxy::accept_loop(
                listener,
                st,
                self.pool.clone(),
                settings,
                stop_rx.clone(),
            )));
        }
        let ctl = Arc::new(Control {
            pool: self.pool.clone(),
            listeners: stats,
            token: self.config.token.clone(),
        });
        tasks.push(tokio::spawn(control::serve(
            self.control,
            ctl,
            stop_rx.clone(),
        )));
        for i in 0..self.pool.members.len() {
            tasks.push(tokio::spawn(health::check_loop(
                self.pool.clone(),
                i,
                self.config.health.clone(),
                stop_rx.clone(),
            )));
        }
        tasks.push(tokio::spawn(return_memory(
            self.pool.clone(),
            stop_rx.clone(),
        )));
        tasks.push(tokio::spawn(save_changes(
            self.pool.clone(),
            stop_rx.clone(),
        )));

        shutdown.await;
        tracing::info!("shutting down: closing connections and saving member states");
        let _ = stop_tx.send(true);
        self.pool.cut_all();
        for t in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(2), t).await;
        }
        // Each ends once its accept loop saw the stop (its connections were cut above).
        for t in data_threads {
            let _ = tokio::time::timeout(
                Duration::from_secs(2),
                tokio::task::spawn_blocking(move || t.join()),
            )
            .await;
        }
        let p = self.pool.clone();
        tokio::task::spawn_blocking(move || p.save())
            .await?
            .map_err(anyhow::Error::msg)?;
        Ok(())
    }
}

/// How many threads serve the listeners: one per core. Each accepts on a listening
/// socket of its own (`SO_REUSEPORT`: the kernel spreads new connections over them) and
/// keeps every connection it accepted on its single-threaded runtime: no work stealing,
/// no wake-ups across threads on a connection's path. Measured in docs/benchmarks.md
/// (issue 17, attempt 12): about 6% less CPU per keep-alive request than tokio's
/// work-stealing runtime.
fn data_threads_wanted() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Binds a listening socket that threads of this process can share the port with
/// (`SO_REUSEPORT`). A plain bind first: it fails if anything listens there already, even
/// a socket that has `SO_REUSEPORT` too (another balancer still running), which ours would
/// otherwise silently share the port with.
async fn bind_listener(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let probe = std::net::TcpListener::bind(addr)?;
    let addr = probe.local_addr()?;
    drop(probe);
    reuseport_socket(addr)?.listen(LISTEN_BACKLOG)
}

/// The backlog tokio's `TcpListener::bind` uses.
const LISTEN_BACKLOG: u32 = 1024;

/// A socket bound to `addr` with `SO_REUSEPORT`, not yet listening.
fn reuseport_socket(addr: SocketAddr) -> std::io::Result<tokio::net::TcpSocket> {
    let sock = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    sock.set_reuseaddr(true)?;
    sock.set_reuseport(true)?;
    sock.bind(addr)?;
    Ok(sock)
}

/// Starts a thread with its own single-threaded runtime and its own listening socket on
/// each listener's address, which accepts and serves the connections the kernel gives it
/// until `stop`.
fn spawn_data_thread(
    n: usize,
    listeners: &[Arc<ListenerStats>],
    pool: &Arc<Pool>,
    settings: ProxySettings,
    stop: &watch::Receiver<bool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    // Bound here, so that a failure is reported before the thread starts; they listen (and
    // register with the runtime) on the thread.
    let socks = listeners
        .iter()
        .map(|st| Ok((reuseport_socket(st.addr)?, st.clone())))
        .collect::<std::io::Result<Vec<_>>>()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (pool, stop) = (pool.clone(), stop.clone());
    std::thread::Builder::new()
        .name(format!("ebb-lb-data-{n}"))
        .spawn(move || {
            rt.block_on(async move {
                let mut loops = Vec::new();
                for (sock, st) in socks {
                    match sock.listen(LISTEN_BACKLOG) {
                        Ok(l) => loops.push(tokio::spawn(proxy::accept_loop(
                            l,
                            st,
                            pool.clone(),
                            settings,
                            stop.clone(),
                        ))),
                        Err(e) => {
                            tracing::warn!(listener = %st.addr, error = %e, "a data-plane thread cannot listen")
                        }
                    }
                }
                for l in loops {
                    // An accept loop ends at the stop (or panicked: nothing to add then).
                    let _ = l.await;
                }
            })
        })
}

/// Runs the balancer until `shutdown` completes.
pub async fn serve(config: LbConfig, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    Server::bind(config).await?.run(shutdown).await
}

/// Saves the state file whenever a member's state or initial state changed by itself
/// (end of a drain, recovery from failed health checks). Changes made through the control
/// API are saved before the API answers; this catches the rest.
async fn save_changes(pool: Arc<Pool>, mut shutdown: watch::Receiver<bool>) {
    let mut events = pool.subscribe();
    let mut last = pool.saved_view();
    loop {
        tokio::select! {
            ev = events.recv() => {
                if let Err(broadcast::error::RecvError::Closed) = ev {
                    return;
                }
            }
            _ = shutdown.changed() => return,
        }
        let now = pool.saved_view();
        if now == last {
            continue;
        }
        let p = pool.clone();
        match tokio::task::spawn_blocking(move || p.save()).await {
            Ok(Ok(())) => last = now,
            Ok(Err(msg)) => tracing::error!("{msg}"),
            Err(e) => tracing::error!("saving the state file failed: {e}"),
        }
    }
}

/// Gives memory back to the system after many connections closed. The allocator keeps
/// the freed memory of connections in its arenas (free pages in the middle of a heap are
/// not returned by `free`), so a balancer that once held 10,000 connections would keep
/// that RSS forever. Once a second: when the open connections fell to half of their peak
/// since the last release (and by at least `RELEASE_MIN`), `malloc_trim` returns the free
/// pages.
async fn return_memory(pool: Arc<Pool>, mut shutdown: watch::Receiver<bool>) {
    const RELEASE_MIN: u64 = 256;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut peak = 0u64;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        let now = pool.active_total();
        peak = peak.max(now);
        if peak - now >= RELEASE_MIN && now <= peak / 2 {
            peak = now;
            let _ = tokio::task::spawn_blocking(trim_heap).await;
        }
    }
}

/// Returns the allocator's free pages to the system.
fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists; no pointers of ours.
    unsafe {
        libc::malloc_trim(0);
    }
}
