//! Long-lived connections copied by one epoll loop per data thread.
//!
//! A connection starts as a tokio task that copies both ways (`proxy::copy_both_ways`).
//! Once it has shown itself long-lived, its two sockets are handed to this thread's copy loop:
//! an epoll descriptor of its own (registered with the thread's runtime as one readable
//! descriptor) whose events copy the bytes with plain `recv` and `send`, as HAProxy's loop
//! does. A request on such a connection then costs no task wake-up, no poll of tokio's
//! readiness and no waker: the connection's task sleeps until the copy ends, the member is
//! cut or the idle timer fires (docs/benchmarks.md, issue 17, attempt 46).
//!
//! Everything here lives on one thread (a thread-local), touched only by that thread's
//! loop task and by the tasks of the connections it holds, never across an `.await`.

use std::cell::RefCell;
use std::io;
use std::net::TcpStream;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use crate::pool::{PerThread, Pool};

/// Events taken from the loop's epoll per turn.
const MAX_EVENTS: usize = 256;

/// How a connection held by the copy loop ended.
pub(crate) enum Ended {
    /// Both directions passed on their end of input.
    Done,
    /// A read or write failed; `members_side` if at the member's end of the connection.
    Error {
        error: io::Error,
        members_side: bool,
    },
}

/// Where a connection's byte counters are: the member's share of this thread.
pub(crate) struct Counters {
    pub pool: Arc<Pool>,
    pub member: usize,
    pub thread: usize,
}

impl Counters {
    fn share(&self) -> &PerThread {
        self.pool.members[self.member].thread(self.thread)
    }
}

/// One connection held by the copy loop. Direction `d` reads `socks[d]` and writes
/// `socks[1 - d]`: 0 is client to member, 1 member to client.
struct Conn {
    socks: [TcpStream; 2],
    /// Bytes read that the other side could not take yet, per direction.
    pending: [Vec<u8>; 2],
    /// End of input seen and passed on, per direction.
    done: [bool; 2],
    /// Reads with data, either way (for the idle timeout).
    traffic: u64,
    counters: Counters,
    end: Option<Ended>,
    /// The connection's task, woken when it ends.
    waker: Option<Waker>,
}

/// A thread's copy loop: its epoll (a connection's two sockets are registered with tokens
/// `2 * id` and `2 * id + 1`) and the connections it holds, by id.
struct CopyLoop {
    epoll: OwnedFd,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    events: Vec<libc::epoll_event>,
    /// Set when its task could no longer wait for events: no connection is taken then.
    failed: bool,
}

thread_local! {
    static LOOP: RefCell<Option<CopyLoop>> = const { RefCell::new(None) };
}

/// The loop's epoll descriptor as the runtime sees it (the loop owns it).
struct EpollFd(RawFd);

impl AsRawFd for EpollFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

/// Makes this thread's copy loop and starts its task, if not done yet. Call before taking
/// a connection's sockets off the runtime: if it fails, they stay on their task. Only a
/// runtime with a single thread has a copy loop: there the connections' tasks and the
/// loop share the thread-local (the data threads' runtimes are such).
pub(crate) fn start() -> io::Result<()> {
    match LOOP.with_borrow(|p| p.as_ref().map(|p| p.failed)) {
        Some(false) => return Ok(()),
        Some(true) => {
            return Err(io::Error::other(
                "the thread's copy loop stopped: it could not wait for events",
            ))
        }
        None => {}
    }
    let flavor = tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor());
    if flavor.ok() != Some(tokio::runtime::RuntimeFlavor::CurrentThread) {
        return Err(io::Error::other(
            "not on a single-threaded runtime, where connections may change threads",
        ));
    }
    // SAFETY: epoll_create1 has no preconditions; its result is checked.
    let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a descriptor just made, owned by nothing else.
    let epoll = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: the descriptor stays open while registered: the loop (this thread's) owns
    // it, and is dropped only when the thread exits, after its runtime and so after the
    // loop's task, which holds the registration.
    let registered = unsafe { AsyncFd::register_with_interest(EpollFd(fd), Interest::READABLE)? };
    LOOP.set(Some(CopyLoop {
        epoll,
        conns: Vec::new(),
        free: Vec::new(),
        events: Vec::with_capacity(MAX_EVENTS),
        failed: false,
    }));
    tokio::spawn(drive(registered));
    Ok(())
}

/// The loop's task: a turn whenever its epoll has events.
async fn drive(epoll: AsyncFd<EpollFd>) {
    loop {
        let mut wake = Vec::new();
        let turned = match epoll.readable().await {
            Ok(mut ready) => {
                let taken = LOOP.with_borrow_mut(|p| match p.as_mut() {
                    Some(p) => p.turn(&mut wake),
                    None => Ok(0),
                });
                if matches!(taken, Ok(n) if n < MAX_EVENTS) {
                    // All taken: wait for the next. (An event after the `epoll_wait`
                    // makes the descriptor readable again, which this does not lose.)
                    ready.clear_ready();
                }
                taken
            }
            Err(e) => Err(e),
        };
        let failed = match turned {
            Err(e) if e.kind() != io::ErrorKind::Interrupted => Some(e),
            _ => None,
        };
        if let Some(e) = &failed {
            // Its connections end with the error (their tasks close them), and new
            // long-lived connections stay on their tasks.
            tracing::warn!(error = %e, "a data-plane thread's copy loop cannot wait for events; its connections are closed");
            LOOP.with_borrow_mut(|p| {
                if let Some(p) = p.as_mut() {
                    p.failed = true;
                    for conn in p.conns.iter_mut().flatten() {
                        conn.end.get_or_insert_with(|| Ended::Error {
                            error: io::Error::new(e.kind(), e.to_string()),
                            members_side: false,
                        });
                        wake.extend(conn.waker.take());
                    }
                }
            });
        }
        // Outside the borrow: a task dropped by its wake-up (at shutdown) removes itself.
        for w in wake {
            w.wake();
        }
        if failed.is_some() {
            return;
        }
    }
}

/// A connection held by the copy loop, as its task sees it. Dropping it closes both sockets.
pub(crate) struct Adopted {
    id: usize,
}

/// Hands a connection's sockets (non-blocking, on no runtime) to this thread's copy loop. Its
/// bytes are counted in `counters`, as its task counted them.
pub(crate) fn adopt(
    client: TcpStream,
    backend: TcpStream,
    counters: Counters,
) -> io::Result<Adopted> {
    start()?;
    LOOP.with_borrow_mut(|p| {
        let p = p.as_mut().expect("started above");
        let conn = Conn {
            socks: [client, backend],
            pending: [Vec::new(), Vec::new()],
            done: [false; 2],
            traffic: 0,
            counters,
            end: None,
            waker: None,
        };
        let id = match p.free.pop() {
            Some(id) => {
                p.conns[id] = Some(conn);
                id
            }
            None => {
                p.conns.push(Some(conn));
                p.conns.len() - 1
            }
        };
        let conn = p.conns[id].as_ref().expect("just put");
        for (side, sock) in conn.socks.iter().enumerate() {
            let mut ev = libc::epoll_event {
                events: (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLET) as u32,
                u64: (id * 2 + side) as u64,
            };
            // SAFETY: both descriptors are open (owned by `conn`); `ev` is a valid event.
            let r = unsafe {
                libc::epoll_ctl(
                    p.epoll.as_raw_fd(),
                    libc::EPOLL_CTL_ADD,
                    sock.as_raw_fd(),
                    &mut ev,
                )
            };
            if r < 0 {
                let e = io::Error::last_os_error();
                // Closing the sockets takes them out of the epoll too.
                p.remove(id);
                return Err(e);
            }
        }
        Ok(Adopted { id })
    })
}

impl Adopted {
    /// Ready with how the copy ended; until then, registers `cx`'s waker for the end.
    pub(crate) fn poll_end(&self, cx: &mut Context<'_>) -> Poll<Ended> {
        LOOP.with_borrow_mut(|p| {
            let conn = p
                .as_mut()
                .and_then(|p| p.conns[self.id].as_mut())
                .expect("an adopted connection stays until dropped");
            if let Some(end) = conn.end.take() {
                return Poll::Ready(end);
            }
            if !conn.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                conn.waker = Some(cx.waker().clone());
            }
            Poll::Pending
        })
    }

    /// Reads with data so far, either way.
    pub(crate) fn traffic(&self) -> u64 {
        LOOP.with_borrow(|p| {
            p.as_ref()
                .and_then(|p| p.conns[self.id].as_ref())
                .map_or(0, |c| c.traffic)
        })
    }
}

impl Drop for Adopted {
    fn drop(&mut self) {
        // The thread-local is gone only when the thread exits, after its runtime.
        let _ = LOOP.try_with(|p| {
            if let Ok(mut p) = p.try_borrow_mut() {
                if let Some(p) = p.as_mut() {
                    p.remove(self.id);
                }
            }
        });
    }
}

impl CopyLoop {
    fn remove(&mut self, id: usize) {
        if self.conns[id].take().is_some() {
            self.free.push(id);
            if self.free.len() == self.conns.len() {
                // None left: give back the table's memory (it grows to the most
                // connections held at once).
                (self.conns, self.free) = (Vec::new(), Vec::new());
            }
        }
    }

    /// Takes the events waiting (without sleeping) and copies what they allow. Returns how
    /// many events it took; the tasks of connections that ended go to `wake`.
    fn turn(&mut self, wake: &mut Vec<Waker>) -> io::Result<usize> {
        self.events.clear();
        // SAFETY: the buffer has room for MAX_EVENTS events; the kernel writes at most
        // that many and says how many.
        let n = unsafe {
            libc::epoll_wait(
                self.epoll.as_raw_fd(),
                self.events.as_mut_ptr(),
                MAX_EVENTS as i32,
                0,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the kernel wrote `n` events.
        unsafe { self.events.set_len(n as usize) };
        crate::proxy::BUF.with_borrow_mut(|buf| self.copy_events(buf, wake));
        Ok(n as usize)
    }

    /// Copies what the events just taken allow.
    fn copy_events(&mut self, buf: &mut [u8], wake: &mut Vec<Waker>) {
        for i in 0..self.events.len() {
            let ev = self.events[i];
            let (flags, token) = (ev.events as i32, ev.u64 as usize);
            let (id, side) = (token / 2, token % 2);
            let Some(conn) = self.conns.get_mut(id).and_then(Option::as_mut) else {
                continue;
            };
            if conn.end.is_some() {
                continue;
            }
            let closed = flags & (libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) != 0;
            let mut result = Ok(());
            // Readable (or closed): the direction that reads this socket.
            if flags & (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) != 0
                && !conn.done[side]
            {
                result = conn.copy(side, closed, buf);
            }
            // Writable: the direction that writes this socket, if it has bytes waiting.
            let other = 1 - side;
            if result.is_ok()
                && flags & (libc::EPOLLOUT | libc::EPOLLHUP | libc::EPOLLERR) != 0
                && !conn.pending[other].is_empty()
                && !conn.done[other]
            {
                result = conn.copy(other, false, buf);
            }
            match result {
                Err(end) => conn.end = Some(end),
                Ok(()) if conn.done == [true, true] => conn.end = Some(Ended::Done),
                Ok(()) => continue,
            }
            wake.extend(conn.waker.take());
        }
    }
}

impl Conn {
    /// Copies direction `d` until its socket has nothing more or the other side can take
    /// no more; on end of input, half-closes the other side (unless the opposite direction
    /// has ended too: closing both sockets then sends the same FIN). `closed`: the peer
    /// closed its end, so a short read is followed by a read of the end (the bytes and
    /// the FIN then go out in one segment, as in `proxy::poll_pump`).
    fn copy(&mut self, d: usize, closed: bool, buf: &mut [u8]) -> Result<(), Ended> {
        let (r, w) = (self.socks[d].as_raw_fd(), self.socks[1 - d].as_raw_fd());
        let reads_member = d == 1;
        let at_reader = |error| Ended::Error {
            error,
            members_side: reads_member,
        };
        let at_writer = |error| Ended::Error {
            error,
            members_side: !reads_member,
        };
        let pending = &mut self.pending[d];
        while !pending.is_empty() {
            match send(w, pending, 0) {
                Ok(n) => drop(pending.drain(..n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(at_writer(e)),
            }
            if pending.is_empty() {
                *pending = Vec::new();
            }
        }
        loop {
            let mut n = match recv(r, buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(at_reader(e)),
            };
            let mut end = n == 0;
            if n > 0 {
                self.traffic = self.traffic.wrapping_add(1);
                let share = self.counters.share();
                let counter = if reads_member {
                    &share.bytes_out
                } else {
                    &share.bytes_in
                };
                counter.fetch_add(n as u64, Relaxed);
                let short = n < buf.len();
                if short && closed {
                    match recv(r, &mut buf[n..]) {
                        Ok(0) => end = true,
                        Ok(m) => n += m,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(e) => return Err(at_reader(e)),
                    }
                }
                let mut off = 0;
                if end {
                    // MSG_MORE: held until the shutdown (or close) right after.
                    if let Ok(sent) = send(w, &buf[..n], libc::MSG_MORE) {
                        off = sent;
                    }
                }
                while off < n {
                    match send(w, &buf[off..n], 0) {
                        Ok(m) => off += m,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            // Written when the socket is writable; the end (if seen) is
                            // read again then.
                            self.pending[d].extend_from_slice(&buf[off..n]);
                            return Ok(());
                        }
                        Err(e) => return Err(at_writer(e)),
                    }
                }
                if !end {
                    if short && !closed {
                        // A short read emptied the socket; the next bytes are a new event.
                        return Ok(());
                    }
                    continue;
                }
            }
            self.done[d] = true;
            if !self.done[1 - d] {
                // SAFETY: `w` is an open socket owned by this connection.
                if unsafe { libc::shutdown(w, libc::SHUT_WR) } < 0 {
                    return Err(at_writer(io::Error::last_os_error()));
                }
            }
            return Ok(());
        }
    }
}

fn recv(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        // SAFETY: `buf` is valid for writes of its length.
        let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

fn send(fd: RawFd, buf: &[u8], flags: i32) -> io::Result<usize> {
    loop {
        // SAFETY: `buf` is valid for reads of its length.
        let n = unsafe {
            libc::send(
                fd,
                buf.as_ptr().cast(),
                buf.len(),
                flags | libc::MSG_NOSIGNAL,
            )
        };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const WAIT: Duration = Duration::from_secs(5);

    /// A pool of one member (never connected to) whose counters a connection bumps.
    fn counters(dir: &std::path::Path) -> Counters {
        let text = "[pool]\nname = \"t\"\n\n[balancer]\ndriver = \"builtin\"\nlisten = \"127.0.0.1:1\"\n\n[[member]]\nname = \"a\"\naddress = \"127.0.0.1:2\"\n";
        let config = crate::LbConfig::from_pool_text(&dir.join("pool.toml"), text, None)
            .expect("a valid pool");
        Counters {
            pool: Pool::new(&config).expect("a pool"),
            member: 0,
            thread: 0,
        }
    }

    /// A connected pair over loopback: the end the test keeps, and the end the copy loop
    /// takes (non-blocking, on no runtime).
    async fn pair() -> (tokio::net::TcpStream, TcpStream) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let outer = tokio::net::TcpStream::connect(l.local_addr().unwrap())
            .await
            .unwrap();
        let (inner, _) = l.accept().await.unwrap();
        (outer, inner.into_std().unwrap())
    }

    /// A client and a member, connected through the copy loop; `early` is sent by the
    /// client before the loop takes the sockets.
    async fn through_the_loop(
        dir: &std::path::Path,
        early: &[u8],
    ) -> (
        tokio::net::TcpStream,
        tokio::net::TcpStream,
        Adopted,
        Arc<Pool>,
    ) {
        let (mut client, to_client) = pair().await;
        let (member, to_member) = pair().await;
        // Small socket buffers (the kernel doubles these), so that 4 MB fill them.
        for s in [
            socket2::SockRef::from(&client),
            socket2::SockRef::from(&member),
        ] {
            s.set_send_buffer_size(64 * 1024).unwrap();
            s.set_recv_buffer_size(64 * 1024).unwrap();
        }
        for s in [
            socket2::SockRef::from(&to_client),
            socket2::SockRef::from(&to_member),
        ] {
            s.set_send_buffer_size(64 * 1024).unwrap();
            s.set_recv_buffer_size(64 * 1024).unwrap();
        }
        client.write_all(early).await.unwrap();
        let c = counters(dir);
        let pool = c.pool.clone();
        let adopted = adopt(to_client, to_member, c).unwrap();
        (client, member, adopted, pool)
    }

    async fn read_exact(s: &mut tokio::net::TcpStream, n: usize) -> Vec<u8> {
        let mut b = vec![0; n];
        tokio::time::timeout(WAIT, s.read_exact(&mut b))
            .await
            .expect("bytes in time")
            .unwrap();
        b
    }

    async fn read_to_end(s: &mut tokio::net::TcpStream) -> std::io::Result<Vec<u8>> {
        let mut b = Vec::new();
        tokio::time::timeout(WAIT, s.read_to_end(&mut b))
            .await
            .expect("the end in time")?;
        Ok(b)
    }

    async fn end(adopted: &Adopted) -> Ended {
        tokio::time::timeout(WAIT, poll_fn(|cx| adopted.poll_end(cx)))
            .await
            .expect("the copy ends in time")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_copy_loop_on_a_runtime_whose_tasks_change_threads() {
        let e = start().expect_err("a copy loop on a multi-threaded runtime");
        assert!(e.to_string().contains("single-threaded"), "{e}");
        assert!(LOOP.with_borrow(|l| l.is_none()));
    }

    #[tokio::test]
    async fn bytes_flow_both_ways_in_order_and_are_counted() {
        let dir = tempfile::tempdir().unwrap();
        let (mut client, mut member, adopted, pool) = through_the_loop(dir.path(), b"early").await;
        // What arrived before the loop took the sockets is not lost.
        assert_eq!(read_exact(&mut member, 5).await, b"early");
        for i in 0..50 {
            let ask = format!("request {i}");
            client.write_all(ask.as_bytes()).await.unwrap();
            assert_eq!(read_exact(&mut member, ask.len()).await, ask.as_bytes());
            let answer = format!("answer {i}");
            member.write_all(answer.as_bytes()).await.unwrap();
            assert_eq!(
                read_exact(&mut client, answer.len()).await,
                answer.as_bytes()
            );
        }
        // More than the sockets hold while the member reads nothing: the rest waits in
        // the connection's pending bytes until the member reads.
        let big: Vec<u8> = (0..4_000_000u32).map(|i| (i % 253) as u8).collect();
        let writer = {
            let big = big.clone();
            tokio::spawn(async move {
                client.write_all(&big).await.unwrap();
                client
            })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            !writer.is_finished(),
            "4 MB went through a member that read nothing"
        );
        assert_eq!(read_exact(&mut member, big.len()).await, big);
        let _client = tokio::time::timeout(WAIT, writer).await.unwrap().unwrap();
        let share = pool.members[0].thread(0);
        assert_eq!(
            share.bytes_in.load(Relaxed),
            5 + (0..50)
                .map(|i| format!("request {i}").len() as u64)
                .sum::<u64>()
                + big.len() as u64
        );
        assert_eq!(
            share.bytes_out.load(Relaxed),
            (0..50)
                .map(|i| format!("answer {i}").len() as u64)
                .sum::<u64>()
        );
        assert!(adopted.traffic() >= 101, "{}", adopted.traffic());
    }

    #[tokio::test]
    async fn a_half_close_is_passed_on_and_the_copy_ends_when_both_ends_closed() {
        let dir = tempfile::tempdir().unwrap();
        let (mut client, mut member, adopted, _pool) = through_the_loop(dir.path(), b"").await;
        client.write_all(b"last words").await.unwrap();
        client.shutdown().await.unwrap();
        // The member reads the bytes and then the end; it can still answer.
        assert_eq!(read_to_end(&mut member).await.unwrap(), b"last words");
        assert!(
            tokio::time::timeout(
                Duration::from_millis(100),
                poll_fn(|cx| adopted.poll_end(cx))
            )
            .await
            .is_err(),
            "the copy ended while the member could still answer"
        );
        member.write_all(b"the answer").await.unwrap();
        member.shutdown().await.unwrap();
        assert!(matches!(end(&adopted).await, Ended::Done));
        // The direction that ended last sends its end with the close (the task's drop).
        drop(adopted);
        assert_eq!(read_to_end(&mut client).await.unwrap(), b"the answer");
    }

    #[tokio::test]
    async fn a_reset_by_the_member_ends_the_copy_as_the_members_error() {
        let dir = tempfile::tempdir().unwrap();
        let (mut client, member, adopted, _pool) = through_the_loop(dir.path(), b"").await;
        socket2::SockRef::from(&member)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(member);
        match end(&adopted).await {
            Ended::Error {
                error,
                members_side,
            } => {
                assert_eq!(error.kind(), io::ErrorKind::ConnectionReset, "{error}");
                assert!(
                    members_side,
                    "a reset by the member counted as the client's"
                );
            }
            Ended::Done => panic!("a reset ended the copy as done"),
        }
        // The client is closed when the connection's task drops its handle.
        drop(adopted);
        assert!(read_to_end(&mut client).await.is_ok_and(|b| b.is_empty()));
    }

    #[tokio::test]
    async fn dropping_the_handle_closes_both_sockets_and_frees_the_table() {
        let dir = tempfile::tempdir().unwrap();
        let (mut client, mut member, adopted, _pool) = through_the_loop(dir.path(), b"").await;
        let (mut c2, mut m2, other, _) = through_the_loop(dir.path(), b"").await;
        drop(adopted);
        assert_eq!(read_to_end(&mut client).await.unwrap(), b"");
        assert_eq!(read_to_end(&mut member).await.unwrap(), b"");
        // The other connection goes on.
        c2.write_all(b"still here").await.unwrap();
        assert_eq!(read_exact(&mut m2, 10).await, b"still here");
        drop(other);
        assert!(LOOP.with_borrow(|p| p
            .as_ref()
            .is_some_and(|p| p.conns.is_empty() && p.conns.capacity() == 0)));
    }
}
