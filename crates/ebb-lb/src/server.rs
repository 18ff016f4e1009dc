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
    listeners: Vec<(std::net::TcpListener, Arc<ListenerStats>)>,
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
    /// member states. The caller's runtime serves the control API and the health checks;
    /// one thread per core serves the connections (see `pool::data_threads`).
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let settings = ProxySettings {
            connect_timeout: self.config.connect_timeout,
            idle_timeout: self.config.idle_timeout,
            copy_loop: self.config.copy_loop,
        };
        let mut tasks = Vec::new();
        let mut stats = Vec::new();
        let wanted = crate::pool::data_threads();
        // Per listener: a thread that leaves a connection wakes that listener's accept loop
        // on the thread with fewest.
        let threads: Vec<Arc<proxy::Threads>> = self
            .listeners
            .iter()
            .map(|_| proxy::Threads::new(wanted))
            .collect();
        // Each data thread on a core of its own (see `allowed_cores`), if so configured.
        let all = allowed_cores();
        let cores = if self.config.pin_threads {
            all.iter().copied().take(wanted).collect()
        } else {
            Vec::new()
        };
        let mut data_threads = Vec::new();
        for n in 0..wanted {
            let thread = DataThread {
                index: n,
                core: cores.get(n).copied(),
                all: all.clone(),
                pool: self.pool.clone(),
                settings,
                threads: threads.clone(),
                stop: stop_rx.clone(),
                poll_before_sleep: self.config.poll_before_sleep,
            };
            match thread.start(&self.listeners) {
                Ok(t) => data_threads.push(t),
                // Fewer threads serve the listeners; they are still served. Its slot stays
                // empty, and the others go on accepting while it is the least loaded.
                Err(e) => tracing::warn!(error = %e, "cannot start a data-plane thread"),
            }
        }
        for (listener, st) in self.listeners {
            stats.push(st.clone());
            if data_threads.is_empty() {
                // No thread could be started: this runtime serves the connections itself.
                tasks.push(tokio::spawn(proxy::accept_loop(
                    listener,
                    st,
                    self.pool.clone(),
                    settings,
                    threads[stats.len() - 1].clone(),
                    0,
                    stop_rx.clone(),
                )));
            }
        }
        let ctl = Arc::new(Control {
            pool: self.pool.clone(),
            listeners: stats,
            threads: threads.clone(),
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

/// The backlog tokio's `TcpListener::bind` uses.
const LISTEN_BACKLOG: i32 = 1024;

/// Binds a non-blocking listening socket on `addr` (with `SO_REUSEADDR`, as tokio's
/// `TcpListener::bind`: a port whose last connections are in TIME_WAIT can be bound, one
/// something listens on cannot).
async fn bind_listener(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let sock = Socket::new(
        Domain::for_address(addr),
        Type::STREAM.nonblocking().cloexec(),
        None,
    )?;
    sock.set_reuse_address(true)?;
    sock.bind(&addr.into())?;
    sock.listen(LISTEN_BACKLOG)?;
    Ok(sock.into())
}

/// The cores this process may run on (the `taskset` or cpuset it was started with), in
/// order; empty if they cannot be read. Data thread `n` is held to the `n`th.
///
/// Held to a core each, two threads never wait for the same core while another core runs
/// the load generator and the members: unpinned, the kernel sometimes put both on one
/// core, where each ran ~4 ms slices while the other's connections waited, and the
/// slowest 1% of keep-alive requests took 3.5 ms instead of 0.6 (docs/benchmarks.md,
/// issue 17, attempt 29).
fn allowed_cores() -> Vec<usize> {
    // SAFETY: `cpu_set_t` is plain data (all zeroes is the empty set), and
    // `sched_getaffinity` writes at most `size_of::<cpu_set_t>()` bytes into it.
    let allowed = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Vec::new();
        }
        set
    };
    let max = 8 * std::mem::size_of::<libc::cpu_set_t>();
    // SAFETY: `CPU_ISSET` reads the set; every `c` is below its size in bits.
    (0..max)
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &allowed) })
        .collect()
}

/// Lets the calling thread run only on `cores`.
fn run_on(cores: &[usize]) -> std::io::Result<()> {
    // SAFETY: as in `allowed_cores`; every core is one of its set's bits.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &c in cores {
            libc::CPU_SET(c, &mut set);
        }
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

thread_local! {
    /// Whether this data thread is held to its core now (see `hold_while_long_lived`).
    static HELD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// This data thread's runtime's epoll descriptor (`runtime_epoll`); -1: not known.
    static EPOLL: std::cell::Cell<i32> = const { std::cell::Cell::new(-1) };
}

/// How long a data thread that is not held to a core polls for events before it sleeps.
const POLL_BEFORE_SLEEP: Duration = Duration::from_micros(50);

/// Called by a data thread's runtime when it has nothing to do, before it sleeps in
/// `epoll_wait`: while the thread is not held to a core (many short connections, see
/// `hold_while_long_lived`), polls its runtime's epoll descriptor (`EPOLL`, if known)
/// for up to `POLL_BEFORE_SLEEP`, giving its core to any other thread that wants
/// it between polls (`sched_yield`). An event that comes meanwhile finds the thread
/// runnable: nobody has to wake it. On loopback the client's own system call does the
/// waking of a sleeping balancer thread; through ebb wrk spent more per request than
/// through HAProxy for that, and the close-mode cells with one wrk thread gained 4-11%
/// req/s at the same CPU per request when it polled (docs/benchmarks.md, attempts 44
/// and 45). Held to its core, a thread serves long-lived connections, where this gained
/// nothing.
fn poll_before_sleep() {
    let epoll = EPOLL.get();
    if epoll < 0 || HELD.get() {
        return;
    }
    let start = std::time::Instant::now();
    loop {
        let mut p = libc::pollfd {
            fd: epoll,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid `pollfd`, a zero timeout.
        if unsafe { libc::poll(&mut p, 1, 0) } != 0 || start.elapsed() >= POLL_BEFORE_SLEEP {
            return;
        }
        // SAFETY: no arguments; it cannot fail on Linux.
        unsafe { libc::sched_yield() };
    }
}

/// The epoll descriptor of the runtime this runs on: the one whose watch list
/// (`/proc/self/fdinfo`) holds a socket registered with this runtime for the purpose.
/// tokio keeps a `dup` of it (a clone of mio's registry); either will do.
async fn runtime_epoll() -> std::io::Result<i32> {
    use std::os::fd::AsRawFd;
    let (probe, _peer) = std::os::unix::net::UnixDatagram::pair()?;
    probe.set_nonblocking(true)?;
    let probe = tokio::net::UnixDatagram::from_std(probe)?;
    let fd = probe.as_raw_fd();
    let ino = {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(format!("/proc/self/fd/{fd}"))?.ino()
    };
    for entry in std::fs::read_dir("/proc/self/fd")?.flatten() {
        let is_epoll = std::fs::read_link(entry.path())
            .is_ok_and(|t| t.to_string_lossy() == "anon_inode:[eventpoll]");
        let Some(n) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        if !is_epoll {
            continue;
        }
        let Ok(info) = std::fs::read_to_string(format!("/proc/self/fdinfo/{n}")) else {
            continue;
        };
        if watches(&info, fd, ino) {
            return Ok(n);
        }
    }
    Err(std::io::Error::other(
        "no epoll descriptor in /proc/self/fd watches the probe socket",
    ))
}

/// Whether an epoll's `fdinfo` lists descriptor `fd` with inode `ino` among those it
/// watches (lines such as `tfd:       14 events:       19 data: ... ino:29 sdev:8`).
fn watches(fdinfo: &str, fd: i32, ino: u64) -> bool {
    fdinfo.lines().any(|line| {
        let mut words = line.split_whitespace();
        words.next() == Some("tfd:")
            && words.next().and_then(|w| w.parse::<i32>().ok()) == Some(fd)
            && words
                .find_map(|w| w.strip_prefix("ino:"))
                .and_then(|h| u64::from_str_radix(h, 16).ok())
                == Some(ino)
    })
}

/// Accepts per second above which a data thread is let go of its core, and below which
/// it is held again (see `hold_while_long_lived`).
const FREE_ABOVE: u64 = 2000;
const HOLD_BELOW: u64 = 500;

/// Holds data thread `me` to `core` while its connections are long-lived, and leaves it
/// free to run on any of `all` while it accepts many short ones (more than `FREE_ABOVE`
/// a second, checked every 100 ms, until it falls below `HOLD_BELOW`).
///
/// A long-lived connection's work can only be done by its thread, so two threads on one
/// core starve each other's connections (attempt 29). A short connection's work comes
/// through the accept queue that every thread takes from, and there the kernel's choice
/// of where to wake a thread wins: held, a thread woken while its core is busy waited
/// although the other core was idle, and close 256/-t1 lost ~8% (attempt 35).
async fn hold_while_long_lived(me: usize, core: usize, all: Vec<usize>) {
    let period = Duration::from_millis(100);
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let per_tick = |per_second: u64| per_second / (1000 / period.as_millis() as u64);
    let mut seen = proxy::accepted_on_this_thread();
    loop {
        tick.tick().await;
        let now = proxy::accepted_on_this_thread();
        let accepted = now.wrapping_sub(seen);
        seen = now;
        let held = HELD.get();
        let change = if held && accepted > per_tick(FREE_ABOVE) {
            Some(&all[..])
        } else if !held && accepted < per_tick(HOLD_BELOW) {
            Some(std::slice::from_ref(&core))
        } else {
            None
        };
        if let Some(cores) = change {
            match run_on(cores) {
                Ok(()) => HELD.set(!held),
                Err(e) => {
                    tracing::warn!(thread = me, error = %e, "cannot change where a data-plane thread runs");
                    return;
                }
            }
        }
    }
}

/// What a data thread serves with.
struct DataThread {
    /// Its place in `threads`.
    index: usize,
    /// The core it is held to, if any, and every core the process may use.
    core: Option<usize>,
    all: Vec<usize>,
    pool: Arc<Pool>,
    settings: ProxySettings,
    /// Per listener, in the order of the listeners.
    threads: Vec<Arc<proxy::Threads>>,
    stop: watch::Receiver<bool>,
    /// Whether it polls for events a little before it sleeps (`poll_before_sleep`).
    poll_before_sleep: bool,
}

impl DataThread {
    /// Starts the thread with its own single-threaded runtime, accepting from each of
    /// `listeners` (a handle of its own on the same socket) and serving the connections it
    /// accepted, until `stop`.
    fn start(
        self,
        listeners: &[(std::net::TcpListener, Arc<ListenerStats>)],
    ) -> std::io::Result<std::thread::JoinHandle<()>> {
        // Made here, so that a failure is reported before the thread starts.
        let socks = listeners
            .iter()
            .map(|(l, st)| Ok((l.try_clone()?, st.clone())))
            .collect::<std::io::Result<Vec<_>>>()?;
        let mut builder = tokio::runtime::Builder::new_current_thread();
        builder.enable_all();
        if self.poll_before_sleep {
            // Runs on the data thread, which sets `EPOLL` below.
            builder.on_thread_park(poll_before_sleep);
        }
        let rt = builder.build()?;
        std::thread::Builder::new()
            .name(format!("ebb-lb-data-{}", self.index))
            .spawn(move || {
                if self.poll_before_sleep {
                    match rt.block_on(runtime_epoll()) {
                        Ok(fd) => EPOLL.set(fd),
                        // It serves all the same; it sleeps whenever it has nothing to do.
                        Err(e) => tracing::debug!(thread = self.index, error = %e, "cannot find a data-plane thread's epoll descriptor; it will not poll before sleeping"),
                    }
                }
                let held = self.core.filter(|&core| match run_on(&[core]) {
                    Ok(()) => {
                        HELD.set(true);
                        true
                    }
                    Err(e) => {
                        // Still serves; the kernel places it.
                        tracing::warn!(thread = self.index, core, error = %e, "cannot hold a data-plane thread to its core");
                        false
                    }
                });
                rt.block_on(async move {
                    if let Some(core) = held {
                        tokio::spawn(hold_while_long_lived(self.index, core, self.all.clone()));
                    }
                    let loops: Vec<_> = socks
                        .into_iter()
                        .zip(&self.threads)
                        .map(|((l, st), threads)| {
                            tokio::spawn(proxy::accept_loop(
                                l,
                                st,
                                self.pool.clone(),
                                self.settings,
                                threads.clone(),
                                self.index,
                                self.stop.clone(),
                            ))
                        })
                        .collect();
                    for l in loops {
                        // An accept loop ends at the stop (or panicked: nothing to add then).
                        let _ = l.await;
                    }
                })
            })
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether `epoll` has an event waiting (poll, no wait).
    fn has_event(epoll: i32) -> bool {
        let mut p = libc::pollfd {
            fd: epoll,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid `pollfd`, a zero timeout.
        unsafe { libc::poll(&mut p, 1, 0) == 1 }
    }

    #[test]
    fn the_epoll_found_is_the_one_this_runtimes_sockets_report_to() {
        let runtime = || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
        };
        let (rt, other) = (runtime(), runtime());
        let theirs = other.block_on(runtime_epoll()).unwrap();
        rt.block_on(async {
            let ours = runtime_epoll().await.unwrap();
            let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            // The runtime sleeps in epoll_wait and takes what registering the socket queued.
            tokio::time::sleep(Duration::from_millis(5)).await;
            assert!(
                !has_event(ours),
                "nothing has happened to this runtime's sockets"
            );
            sender.send_to(b"x", socket.local_addr().unwrap()).unwrap();
            assert!(
                has_event(ours),
                "a datagram for a socket of this runtime is an event on the epoll found"
            );
            assert!(!has_event(theirs), "and not on another runtime's");
        });
    }

    #[test]
    fn polling_before_sleep_leaves_the_events_to_the_runtime() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let ours = runtime_epoll().await.unwrap();
            EPOLL.set(ours);
            let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
            // Nothing waiting: it polls until its time is up, then returns.
            poll_before_sleep();
            sender.send_to(b"x", socket.local_addr().unwrap()).unwrap();
            poll_before_sleep();
            assert!(
                has_event(ours),
                "the event is still there for the runtime's epoll_wait"
            );
            let mut buf = [0u8; 4];
            let (n, _) = socket.recv_from(&mut buf).await.unwrap();
            assert_eq!(&buf[..n], b"x");
        });
    }

    #[test]
    fn fdinfo_lines_are_matched_on_descriptor_and_inode() {
        let info = "pos:\t0\nflags:\t02000002\nmnt_id:\t16\nino:\t1057\n\
            tfd:       14 events:       19 data:                0  pos:0 ino:1057 sdev:f\n\
            tfd:       12 events: 80002019 data:      100000001  pos:0 ino:dd8b0d9 sdev:8\n";
        assert!(watches(info, 12, 0xdd8b0d9));
        assert!(watches(info, 14, 0x1057));
        assert!(!watches(info, 12, 0x1057), "same descriptor, another file");
        assert!(!watches(info, 13, 0xdd8b0d9));
        assert!(!watches("", 12, 0xdd8b0d9));
    }
}
