//! The data plane: accept client connections, pick a member, connect (bounded; on refusal
//! or timeout try another member), then copy bytes both ways until both sides are done,
//! the connection idles out, or its member is stopped.

use std::net::SocketAddr;
use std::sync::atomic::{
    AtomicBool, AtomicU64, AtomicU8, AtomicUsize,
    Ordering::{Acquire, Relaxed, Release},
};
use std::sync::Arc;
use std::time::Duration;

use std::cell::RefCell;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::task::{ready, Context, Poll, Waker};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::net::TcpStream;
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
    /// Whether long-lived connections go to their thread's copy loop (`crate::copy_loop`).
    pub copy_loop: bool,
}

/// Size of the read buffer (one per thread).
const BUF_SIZE: usize = 16 * 1024;

/// The threads that serve one listener's connections and how many each serves. They all accept from the
/// same listening socket, so that new connections wait in one first-come-first-served
/// queue (the kernel's) however many threads there are; a thread accepts only while it
/// serves no more than `ACCEPT_MARGIN` connections above the thread with fewest, so that
/// long-lived connections still end up even.
pub(crate) struct Threads {
    active: Vec<Slot>,
}

/// One thread's count of connections (on a cache line of its own), and how another
/// thread that leaves waiting connections to it wakes it.
#[repr(align(64))]
struct Slot(AtomicUsize, tokio::sync::Notify);

/// How many connections above the least-loaded thread a thread may serve and still
/// accept.
const ACCEPT_MARGIN: usize = 4;

/// Connections a thread accepts in a row before it lets its connections run.
const ACCEPT_BATCH: usize = 16;

impl Threads {
    pub(crate) fn new(threads: usize) -> Arc<Threads> {
        Arc::new(Threads {
            active: (0..threads.max(1))
                .map(|_| Slot(AtomicUsize::new(0), tokio::sync::Notify::new()))
                .collect(),
        })
    }

    /// Connections each thread serves, in thread order (0 is the balancer's main thread).
    pub(crate) fn active(&self) -> Vec<usize> {
        self.active.iter().map(|s| s.0.load(Relaxed)).collect()
    }

    /// Connections each thread serves over all `listeners`.
    pub(crate) fn total(listeners: &[Arc<Threads>]) -> Vec<usize> {
        let mut total = Vec::new();
        for l in listeners {
            let active = l.active();
            total.resize(total.len().max(active.len()), 0);
            for (t, n) in total.iter_mut().zip(active) {
                *t += n;
            }
        }
        total
    }

    /// Thread `me` serves one connection more.
    fn enter(&self, me: usize) {
        self.active[me].0.fetch_add(1, Relaxed);
    }

    /// Thread `me` serves one connection less.
    fn leave(&self, me: usize) {
        self.active[me].0.fetch_sub(1, Relaxed);
    }

    /// Whether thread `me` may accept a connection now; if not, the thread with fewest
    /// connections is woken to take it. (A thread stops waiting for the listening socket
    /// when it leaves a connection to another: without that wake-up, a connection left by
    /// every thread would wait for the next one to arrive.)
    fn may_accept(&self, me: usize) -> bool {
        let count = |i: usize| self.active[i].0.load(Relaxed);
        let fewest = (0..self.active.len())
            .min_by_key(|&i| count(i))
            .unwrap_or(me);
        if count(me) <= count(fewest) + ACCEPT_MARGIN {
            return true;
        }
        self.active[fewest].1.notify_one();
        false
    }
}

/// What one thread's connections of one listener share. Made once per thread: a
/// connection holds a clone of this thread's `Arc`, whose count no other thread touches,
/// rather than clones of the pool's, the listener's and the threads' (counts both threads
/// bump at every connection; docs/benchmarks.md, issue 17, attempt 32).
struct ThreadCtx {
    pool: Arc<Pool>,
    stats: Arc<ListenerStats>,
    settings: ProxySettings,
    threads: Arc<Threads>,
    me: usize,
}

/// Counts a connection against its thread until dropped.
struct Counted {
    ctx: Arc<ThreadCtx>,
}

impl Counted {
    fn new(ctx: &Arc<ThreadCtx>) -> Counted {
        ctx.threads.enter(ctx.me);
        Counted { ctx: ctx.clone() }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.ctx.threads.leave(self.ctx.me);
    }
}

/// Accepts clients on one listener (non-blocking; every thread has a handle on the same
/// socket) as thread `me` of `threads`, until shutdown.
pub(crate) async fn accept_loop(
    listener: std::net::TcpListener,
    stats: Arc<ListenerStats>,
    pool: Arc<Pool>,
    settings: ProxySettings,
    threads: Arc<Threads>,
    me: usize,
    mut shutdown: watch::Receiver<bool>,
) {
    // SAFETY: a std `TcpListener` owns its descriptor, which stays open and the same until
    // the `AsyncFd` (which owns the listener) is dropped.
    let registered = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(listener, tokio::io::Interest::READABLE)
    };
    let ctx = Arc::new(ThreadCtx {
        pool,
        stats,
        settings,
        threads,
        me,
    });
    let (stats, threads) = (&ctx.stats, &ctx.threads);
    let listener = match registered {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(listener = %stats.addr, error = %e, "a data-plane thread cannot listen");
            return;
        }
    };
    // Whether more connections may be waiting after a full batch: then accept again without
    // waiting to be woken (this thread may not be woken again for them: its readiness may
    // have been cleared before another thread's wake-up made it accept).
    let mut more = false;
    loop {
        let mut ready = if more {
            if shutdown.has_changed().unwrap_or(true) {
                return;
            }
            None
        } else {
            // Woken by a new connection, or by another thread that left one to this one.
            tokio::select! {
                r = listener.readable() => match r {
                    Ok(g) => Some(g),
                    Err(e) => {
                        tracing::warn!(listener = %stats.addr, error = %e, "cannot wait for connections");
                        return;
                    }
                },
                _ = threads.active[me].1.notified() => None,
                _ = shutdown.changed() => return,
            }
        };
        let mut accepted = 0;
        while accepted < ACCEPT_BATCH {
            if !threads.may_accept(me) {
                // Another thread serves fewer, and takes it. Wait for the next.
                if let Some(r) = ready.as_mut() {
                    r.clear_ready();
                }
                break;
            }
            let flags = libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
            match socket2::SockRef::from(listener.get_ref()).accept4(flags) {
                Ok((sock, peer)) => {
                    accepted += 1;
                    let Some(peer) = peer.as_socket() else {
                        continue;
                    };
                    let counted = Counted::new(&ctx);
                    let client = match TcpStream::from_std(std::net::TcpStream::from(sock)) {
                        Ok(c) => c,
                        Err(e) => {
                            tracing::warn!(client = %peer, error = %e, "cannot take a connection");
                            continue;
                        }
                    };
                    // The connection's state machine (~1.2 KB) is boxed at the task's first
                    // poll: spawning moves the task's future several times (a full-size
                    // copy each), and this one holds only what it captured. ~4% fewer
                    // instructions per connection (docs/benchmarks.md, issue 17, attempt 42).
                    tokio::spawn(async move {
                        Box::pin(async move {
                            let ctx = &counted.ctx;
                            if !serve_client(client, peer, ctx).await {
                                ctx.stats.refused.fetch_add(1, Relaxed);
                            }
                        })
                        .await
                    });
                }
                // None waiting (any more): wait for the next.
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if let Some(r) = ready.as_mut() {
                        r.clear_ready();
                    }
                    break;
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off rather than spin.
                    tracing::warn!(listener = %stats.addr, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    break;
                }
            }
        }
        // Once per batch: the count is shared by the threads.
        if accepted > 0 {
            stats.accepted.fetch_add(accepted as u64, Relaxed);
            ACCEPTED.set(ACCEPTED.get().wrapping_add(accepted as u64));
        }
        more = accepted == ACCEPT_BATCH;
        if more {
            // More may wait: let this thread's connections have a turn first.
            tokio::task::yield_now().await;
        }
    }
}

/// Proxies one client on the thread of `ctx`. Returns false if no member could take it.
async fn serve_client(client: TcpStream, peer: SocketAddr, ctx: &ThreadCtx) -> bool {
    let (pool, settings, me) = (&ctx.pool, ctx.settings, ctx.me);
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
                let share = member.thread(me);
                share.total.fetch_add(1, Relaxed);
                let counters = || crate::copy_loop::Counters {
                    pool: pool.clone(),
                    member: guard.index,
                    thread: me,
                };
                copy_both_ways(
                    client, backend, member, share, guard.cuts, settings, counters,
                )
                .await;
                drop(guard);
                return true;
            }
            Ok(Err(e)) => {
                member.connect_failures.fetch_add(1, Relaxed);
                tracing::warn!(member = %member.name, address = %member.addr, error = %e, "member refused a connection; trying another member");
            }
            Err(_) => {
                member.connect_failures.fetch_add(1, Relaxed);
                tracing::warn!(member = %member.name, address = %member.addr, timeout = ?settings.connect_timeout, "connecting to member timed out; trying another member");
            }
        }
        tried.push(guard.index);
    }
}

/// The idle timeout is checked this many times per `idle_timeout`: a connection is closed
/// at the first check after `IDLE_TICKS` checks in a row saw no traffic, so after between
/// `idle_timeout` and `idle_timeout` plus one tick of silence. Counting ticks instead of
/// reading the clock on every read keeps the clock off the per-request path.
const IDLE_TICKS: u32 = 8;

/// Polls of a connection before it gets a waker per direction (`DirWaker`).
const DIR_WAKERS_AFTER: u32 = 32;

/// How a connection ended.
enum End {
    Done,
    Error(PumpError),
    Cut,
    Idle,
    /// Not ended: long-lived, to be handed to the thread's copy loop (`crate::copy_loop`).
    Adopt,
}

async fn copy_both_ways(
    mut client: TcpStream,
    mut backend: TcpStream,
    member: &crate::pool::Member,
    share: &crate::pool::PerThread,
    cuts: u64,
    settings: ProxySettings,
    counters: impl FnOnce() -> crate::copy_loop::Counters,
) {
    let idle_timeout = settings.idle_timeout;
    // Whether it goes to the thread's copy loop once long-lived (see `crate::copy_loop`).
    let mut to_loop = settings.copy_loop;
    let shared = Shared {
        traffic: AtomicU64::new(0),
        ended: AtomicU8::new(0),
    };
    let (cr, cw) = client.split();
    let (br, bw) = backend.split();
    // Client to member, member to client.
    let mut dirs = [
        Direction::new(cr, bw, &share.bytes_in, false),
        Direction::new(br, cw, &share.bytes_out, true),
    ];
    let tick = (idle_timeout / IDLE_TICKS).max(Duration::from_millis(1));
    let mut idle = std::pin::pin!(tokio::time::sleep(tick));
    let (mut seen, mut quiet) = (0u64, 0u32);
    // Made before the first check of `cuts`: a cut after this wakes it (`notify_waiters`
    // reaches a `Notified` from its creation), one before is seen by `was_cut`.
    let mut cut_wakes = std::pin::pin!(share.cut.notified());
    // The waker the cut and the idle timer were last polled with.
    let mut registered: Option<Waker> = None;
    // One waker per direction once the connection has lasted `DIR_WAKERS_AFTER` polls
    // (see `DirWaker`): a wake-up then polls only the direction whose socket asked for
    // it. Not before: one request per connection would pay their allocation for nothing.
    let mut wakers: Option<[(Arc<DirWaker>, Waker); 2]> = None;
    let mut polls = 0u32;
    let end = poll_fn(|cx| {
        if to_loop
            && polls >= DIR_WAKERS_AFTER
            && dirs.iter().all(|d| !d.done && d.pending.is_empty())
        {
            // Long-lived, and nothing held back: the copy loop copies it from now on.
            // (Bytes that arrived since are reported by the loop's epoll when it takes
            // the sockets.) If the loop cannot start, it stays here.
            match crate::copy_loop::start() {
                Ok(()) => return Poll::Ready(End::Adopt),
                Err(e) => {
                    tracing::debug!(error = %e, "no copy loop on this thread; the connection stays on its task");
                    to_loop = false;
                }
            }
        }
        let fresh = !registered.as_ref().is_some_and(|w| w.will_wake(cx.waker()));
        if fresh {
            registered = Some(cx.waker().clone());
        }
        if polls < DIR_WAKERS_AFTER {
            polls += 1;
        } else if fresh || wakers.is_none() {
            // Made marked woken: both directions are polled now and register them.
            wakers = Some([DirWaker::new(cx.waker()), DirWaker::new(cx.waker())]);
        }
        // Traffic first; each direction that is to be polled, with the waker it registers.
        let [up_waker, down_waker] = match &wakers {
            Some([up, down]) => [DirWaker::take(up), DirWaker::take(down)],
            None => [Some(cx.waker()), Some(cx.waker())],
        };
        for (dir, waker) in dirs.iter_mut().zip([up_waker, down_waker]) {
            if let (false, Some(w)) = (dir.done, waker) {
                let mut dcx = Context::from_waker(w);
                match poll_pump(&mut dcx, dir, &shared) {
                    Poll::Ready(Ok(())) => dir.done = true,
                    Poll::Ready(Err(e)) => return Poll::Ready(End::Error(e)),
                    Poll::Pending => {}
                }
            }
        }
        if dirs.iter().all(|d| d.done) {
            return Poll::Ready(End::Done);
        }
        // The cut and the idle timer keep this task's waker once polled; after that they
        // are polled again only when they fired (two loads), not on every wake-up for
        // traffic: most of a wake-up's cost was polling them.
        if fresh {
            // Registers (again, with this waker); ready once the member's connections
            // were cut.
            if cut_wakes.as_mut().poll(cx).is_ready() {
                return Poll::Ready(End::Cut);
            }
        }
        if member.was_cut(cuts) {
            return Poll::Ready(End::Cut);
        }
        if (fresh || idle.is_elapsed())
            && idled_out(
                idle.as_mut(),
                cx,
                tick,
                shared.traffic.load(Relaxed),
                &mut seen,
                &mut quiet,
            )
        {
            return Poll::Ready(End::Idle);
        }
        Poll::Pending
    });
    let end = match end.await {
        End::Adopt => {
            drop(dirs);
            let cut = poll_fn(|cx| {
                if cut_wakes.as_mut().poll(cx).is_ready() || member.was_cut(cuts) {
                    Poll::Ready(())
                } else {
                    Poll::Pending
                }
            });
            // Boxed: only long-lived connections get here, and a connection's state
            // (allocated for every connection, idle ones too) stays as small as before.
            Box::pin(in_copy_loop(client, backend, counters(), cut, idle, tick)).await
        }
        end => end,
    };
    match end {
        End::Done => {}
        End::Error(e) => {
            // Counted for the `balancer` check: an error at the member's end of the
            // connection is the member's; one at the client's end is not.
            if e.members_side {
                member.resets.fetch_add(1, Relaxed);
            }
            tracing::debug!(member = %member.name, error = %e.error, members_side = e.members_side, "connection ended with an error");
        }
        End::Cut => {
            tracing::debug!(member = %member.name, "connection closed: member stopped");
        }
        End::Idle => {
            tracing::debug!(member = %member.name, "connection closed: idle timeout");
        }
        // Replaced above by how the copy loop's connection ended.
        End::Adopt => {}
    }
}

/// Hands a long-lived connection to its thread's copy loop (`crate::copy_loop`) and waits for
/// it to end: the loop's copy ends, `cut` is ready (the member was cut), or the idle timer
/// (ticks of `tick`) sees no traffic for `IDLE_TICKS` ticks. Dropping the loop's handle
/// closes both sockets, as dropping the streams did.
async fn in_copy_loop(
    client: TcpStream,
    backend: TcpStream,
    counters: crate::copy_loop::Counters,
    mut cut: impl Future<Output = ()> + Unpin,
    mut idle: Pin<&mut tokio::time::Sleep>,
    tick: Duration,
) -> End {
    // Off the runtime (each `into_std` unregisters its socket), onto the loop's epoll.
    let taken = client
        .into_std()
        .and_then(|c| Ok((c, backend.into_std()?)))
        .and_then(|(c, b)| crate::copy_loop::adopt(c, b, counters));
    let adopted = match taken {
        Ok(a) => a,
        Err(error) => {
            return End::Error(PumpError {
                error,
                members_side: false,
            })
        }
    };
    let (mut seen, mut quiet) = (adopted.traffic(), 0);
    poll_fn(|cx| {
        if let Poll::Ready(e) = adopted.poll_end(cx) {
            return Poll::Ready(match e {
                crate::copy_loop::Ended::Done => End::Done,
                crate::copy_loop::Ended::Error {
                    error,
                    members_side,
                } => End::Error(PumpError {
                    error,
                    members_side,
                }),
            });
        }
        if Pin::new(&mut cut).poll(cx).is_ready() {
            return Poll::Ready(End::Cut);
        }
        if idled_out(
            idle.as_mut(),
            cx,
            tick,
            adopted.traffic(),
            &mut seen,
            &mut quiet,
        ) {
            return Poll::Ready(End::Idle);
        }
        Poll::Pending
    })
    .await
}

/// Checks the idle timer of a connection whose reads with data, either way, number
/// `traffic`: true once `IDLE_TICKS` ticks in a row saw none. Otherwise the timer is set
/// for the next tick (registering `cx`'s waker).
fn idled_out(
    mut idle: Pin<&mut tokio::time::Sleep>,
    cx: &mut Context<'_>,
    tick: Duration,
    traffic: u64,
    seen: &mut u64,
    quiet: &mut u32,
) -> bool {
    while idle.as_mut().poll(cx).is_ready() {
        if traffic != *seen {
            (*seen, *quiet) = (traffic, 0);
        } else {
            *quiet += 1;
            if *quiet >= IDLE_TICKS {
                return true;
            }
        }
        let next = idle.deadline() + tick;
        idle.as_mut().reset(next.max(Instant::now()));
    }
    false
}

/// The waker one direction of a connection registers with its sockets: it notes that
/// this direction has something to do, then wakes the connection's task. A wake-up then
/// polls only the direction(s) woken; polling the other one would only find its socket
/// not ready and register the waker it already has registered (tokio's readiness lock,
/// the most expensive part of a poll that comes to nothing).
struct DirWaker {
    woken: AtomicBool,
    task: Waker,
}

impl DirWaker {
    /// A direction's waker for `task`, marked woken (so it is polled once to register).
    fn new(task: &Waker) -> (Arc<DirWaker>, Waker) {
        let w = Arc::new(DirWaker {
            woken: AtomicBool::new(true),
            task: task.clone(),
        });
        (w.clone(), Waker::from(w))
    }

    /// The direction's waker if it was woken since the last call (then it is to be
    /// polled), clearing the mark first so that a wake-up during the poll is not lost.
    fn take(pair: &(Arc<DirWaker>, Waker)) -> Option<&Waker> {
        pair.0.woken.swap(false, Acquire).then_some(&pair.1)
    }
}

impl std::task::Wake for DirWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Release);
        self.task.wake_by_ref();
    }
}

/// One direction of a connection.
struct Direction<'a> {
    r: ReadHalf<'a>,
    w: WriteHalf<'a>,
    /// Bytes read that the other side could not take yet (see `poll_pump`).
    pending: Vec<u8>,
    /// The member's byte counter for this direction.
    counter: &'a AtomicU64,
    /// End of input seen and passed on.
    done: bool,
    /// Whether it reads from the member (member to client) rather than writes to it.
    reads_member: bool,
}

impl<'a> Direction<'a> {
    fn new(r: ReadHalf<'a>, w: WriteHalf<'a>, counter: &'a AtomicU64, reads_member: bool) -> Self {
        // No buffer of its own: an idle connection holds no buffer memory.
        Direction {
            r,
            w,
            pending: Vec::new(),
            counter,
            done: false,
            reads_member,
        }
    }
}

/// A direction's copy failed: the error, and whether it happened at the member's end of
/// the connection (reading from it or writing to it) rather than the client's.
struct PumpError {
    error: std::io::Error,
    members_side: bool,
}

/// What both directions of a connection share.
struct Shared {
    /// Bumped on every read with data either way (for the idle timeout).
    traffic: AtomicU64,
    /// How many directions have reached end of input.
    ended: AtomicU8,
}

thread_local! {
    /// Connections accepted by this thread, over all listeners.
    static ACCEPTED: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Connections this thread accepted so far (for `server::hold_while_long_lived`).
pub(crate) fn accepted_on_this_thread() -> u64 {
    ACCEPTED.get()
}

thread_local! {
    /// The read buffer of every connection served by this thread. A connection borrows it
    /// only within one poll (read, then write what was read), so idle connections hold no
    /// buffer at all: HAProxy's way, and most of the memory of an idle connection before.
    pub(crate) static BUF: RefCell<Box<[u8]>> = RefCell::new(vec![0; BUF_SIZE].into_boxed_slice());
}

/// Copies one direction; on end of input, half-closes the other side (sends FIN) and lets
/// the opposite direction go on. The direction that ends last skips the shutdown: closing
/// both sockets right after sends the same FIN, one syscall cheaper per connection.
///
/// Reads into the thread's buffer and writes at once; only bytes the other side cannot
/// take now are copied to `pending` (the connection's own, freed when written).
fn poll_pump(
    cx: &mut Context<'_>,
    dir: &mut Direction<'_>,
    shared: &Shared,
) -> Poll<Result<(), PumpError>> {
    let Direction {
        r,
        w,
        pending,
        counter,
        reads_member,
        ..
    } = dir;
    // Only on an error: which end it happened at.
    let at_reader = |error| PumpError {
        error,
        members_side: *reads_member,
    };
    let at_writer = |error| PumpError {
        error,
        members_side: !*reads_member,
    };
    loop {
        if !pending.is_empty() {
            while !pending.is_empty() {
                let n = ready!(Pin::new(&mut *w).poll_write(cx, pending)).map_err(at_writer)?;
                if n == 0 {
                    return Poll::Ready(Err(at_writer(std::io::ErrorKind::WriteZero.into())));
                }
                pending.drain(..n);
            }
            *pending = Vec::new();
        }
        let (n, then) = ready!(BUF.with_borrow_mut(|buf| {
            let mut n = {
                let mut rb = ReadBuf::new(buf);
                ready!(Pin::new(&mut *r).poll_read(cx, &mut rb)).map_err(at_reader)?;
                rb.filled().len()
            };
            // After a short read tokio reads again only if the peer has closed its end
            // (EPOLLRDHUP; otherwise the socket is known empty and this is the poll the
            // loop would make next anyway). Reading the end before writing lets the
            // bytes and the FIN go in one segment, as HAProxy's do: two packets fewer
            // per connection whose answer and end arrive together.
            let mut then = Then::Read;
            if n > 0 && n < buf.len() {
                let mut rb = ReadBuf::new(&mut buf[n..]);
                match Pin::new(&mut *r).poll_read(cx, &mut rb) {
                    Poll::Ready(Ok(())) if rb.filled().is_empty() => then = Then::End,
                    Poll::Ready(Ok(())) => n += rb.filled().len(),
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(at_reader(e))),
                    Poll::Pending => then = Then::Wait,
                }
            }
            let mut off = 0;
            if let Then::End = then {
                // MSG_MORE: held until the shutdown (or close) right after, which sends
                // it with the FIN. What the socket cannot take goes to `pending` below.
                let socket = socket2::SockRef::from(AsRef::<TcpStream>::as_ref(&*w));
                if let Ok(sent) =
                    socket.send_with_flags(&buf[..n], libc::MSG_MORE | libc::MSG_NOSIGNAL)
                {
                    off = sent;
                }
            }
            while off < n {
                match Pin::new(&mut *w).poll_write(cx, &buf[off..n]) {
                    Poll::Ready(Ok(0)) => {
                        return Poll::Ready(Err(at_writer(std::io::ErrorKind::WriteZero.into())))
                    }
                    Poll::Ready(Ok(m)) => off += m,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(at_writer(e))),
                    Poll::Pending => {
                        pending.extend_from_slice(&buf[off..n]);
                        break;
                    }
                }
            }
            Poll::Ready(Ok((n, then)))
        }))?;
        if n > 0 {
            counter.fetch_add(n as u64, Relaxed);
            // Both directions run in the connection's one task: no read-modify-write needed.
            let t = shared.traffic.load(Relaxed);
            shared.traffic.store(t.wrapping_add(1), Relaxed);
        }
        match then {
            // The read above registered the waker: polling again would find the same.
            Then::Wait if pending.is_empty() => return Poll::Pending,
            // With bytes left to write, the loop writes them and reads the end again.
            Then::End if pending.is_empty() => {}
            _ if n > 0 => continue,
            _ => {}
        }
        if shared.ended.fetch_add(1, Relaxed) == 0 {
            ready!(Pin::new(&mut *w).poll_shutdown(cx)).map_err(at_writer)?;
        }
        return Poll::Ready(Ok(()));
    }
}

/// What a direction does after writing what it read (`poll_pump`).
#[derive(Clone, Copy)]
enum Then {
    /// Read again.
    Read,
    /// Wait: the socket has nothing more now (the waker is registered).
    Wait,
    /// Pass on the end of input: the peer closed its end after these bytes.
    End,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection counted against thread `.1` (as `Counted`, without a pool).
    struct Held(Arc<Threads>, usize);

    impl Held {
        fn new(threads: &Arc<Threads>, me: usize) -> Held {
            threads.enter(me);
            Held(threads.clone(), me)
        }
    }

    impl Drop for Held {
        fn drop(&mut self) {
            self.0.leave(self.1);
        }
    }

    fn serving(threads: &Arc<Threads>, counts: &[usize]) -> Vec<Held> {
        let mut held = Vec::new();
        for (i, &n) in counts.iter().enumerate() {
            held.extend((0..n).map(|_| Held::new(threads, i)));
        }
        held
    }

    #[tokio::test]
    async fn a_thread_accepts_until_it_serves_more_than_the_margin_above_the_fewest() {
        let threads = Threads::new(2);
        let held = serving(&threads, &[ACCEPT_MARGIN, 0]);
        assert_eq!(threads.active(), vec![ACCEPT_MARGIN, 0]);
        assert!(threads.may_accept(0), "at the margin it still accepts");
        assert!(threads.may_accept(1));
        let one_more = Held::new(&threads, 0);
        assert!(!threads.may_accept(0), "above the margin it leaves it");
        assert!(
            threads.may_accept(1),
            "the thread with fewest always accepts"
        );
        drop((held, one_more));
        assert_eq!(threads.active(), vec![0, 0], "counted until dropped");
    }

    #[tokio::test]
    async fn a_thread_that_leaves_a_connection_wakes_the_one_with_fewest() {
        let threads = Threads::new(3);
        let _held = serving(&threads, &[ACCEPT_MARGIN + 1, 2, 0]);
        assert!(!threads.may_accept(0));
        // Thread 2 was not waiting yet: the wake-up is kept for it (it would otherwise miss
        // the connection if it had stopped waiting for the socket before).
        let woken = tokio::time::timeout(Duration::from_secs(1), threads.active[2].1.notified());
        assert!(woken.await.is_ok(), "thread 2 (fewest) was not woken");
        let other = tokio::time::timeout(Duration::from_millis(50), threads.active[1].1.notified());
        assert!(
            other.await.is_err(),
            "thread 1 was woken though thread 2 serves fewer"
        );
    }
}
