//! The client load the demo drives through the balancer, and what the clients saw.
//!
//! Two kinds of clients run side by side, like the users of a real array:
//! - short requests (`GET /`), one per connection, at a steady `--rate`; each one that does
//!   not end in a complete `200` is a failure, and its latency goes into a histogram;
//! - long-lived connections (`GET /stream`), each streaming slowly for a few seconds and
//!   then reconnecting; a stream that ends before its final `end` line was cut.
//!
//! A drainstop must produce no failures and no cut streams; a stop cuts the streams of the
//! member it takes out. Both are counted here, independently of anything ebb reports.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::http::{self, HttpError};

/// How many recent failure messages are kept for the summary.
const KEPT_ERRORS: usize = 8;

/// What to send and where.
#[derive(Debug, Clone)]
pub struct TrafficConfig {
    /// The balancer's client address, `127.0.0.1:PORT`.
    pub target: String,
    /// Short requests per second.
    pub rate: u32,
    /// Long-lived streaming connections kept open at once.
    pub streams: u16,
    /// How long a stream lasts when nothing cuts it.
    pub stream_time: Duration,
    /// Bound on one short request, connect included.
    pub request_timeout: Duration,
}

/// The counters, shared by every client task.
#[derive(Debug)]
pub struct TrafficStats {
    requests: AtomicU64,
    failed: AtomicU64,
    streams_completed: AtomicU64,
    streams_active: AtomicU64,
    cut: AtomicU64,
    histogram: Mutex<Histogram<u64>>,
    per_second: Mutex<BTreeMap<u64, (u64, u64)>>,
    versions: Mutex<BTreeMap<String, u64>>,
    errors: Mutex<VecDeque<String>>,
}

/// A consistent-enough copy of the counters for display and the summary.
#[derive(Debug, Clone, Default)]
pub struct TrafficSnapshot {
    /// Short requests and streams finished (ok or not).
    pub requests: u64,
    /// Of those, the ones that failed (not cut streams: those are counted in `cut`).
    pub failed: u64,
    /// Streams that ran to their end.
    pub streams_completed: u64,
    /// Streams open now.
    pub streams_active: u64,
    /// Streams that ended before their full length.
    pub cut: u64,
    /// Median latency of the short requests, ms.
    pub p50_ms: f64,
    /// 99th percentile latency of the short requests, ms.
    pub p99_ms: f64,
    /// Slowest short request, ms.
    pub max_ms: f64,
    /// Requests finished in the last complete second.
    pub last_second: u64,
    /// Errors in the last complete second.
    pub last_second_errors: u64,
    /// Responses per version seen by the clients (`1.0`, `1.1`).
    pub versions: BTreeMap<String, u64>,
    /// The most recent failure messages.
    pub recent_errors: Vec<String>,
}

/// One second of the traffic timeline, as the run report reads it.
pub use ebb_report::TrafficSample as Sample;

impl TrafficStats {
    fn new() -> Self {
        // Constant bounds (1 µs .. 10 min, 3 digits) that hdrhistogram always accepts.
        let histogram =
            Histogram::new_with_bounds(1, 600_000_000, 3).expect("constant histogram bounds");
        Self {
            requests: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            streams_completed: AtomicU64::new(0),
            streams_active: AtomicU64::new(0),
            cut: AtomicU64::new(0),
            histogram: Mutex::new(histogram),
            per_second: Mutex::new(BTreeMap::new()),
            versions: Mutex::new(BTreeMap::new()),
            errors: Mutex::new(VecDeque::new()),
        }
    }

    /// Copies the counters.
    pub fn snapshot(&self) -> TrafficSnapshot {
        let (p50_ms, p99_ms, max_ms) = {
            let h = lock(&self.histogram);
            if h.is_empty() {
                (0.0, 0.0, 0.0)
            } else {
                let ms = |us: u64| us as f64 / 1000.0;
                (
                    ms(h.value_at_quantile(0.5)),
                    ms(h.value_at_quantile(0.99)),
                    ms(h.max()),
                )
            }
        };
        let now = unix_ms() / 1000;
        let (last_second, last_second_errors) = lock(&self.per_second)
            .get(&(now.saturating_sub(1)))
            .copied()
            .unwrap_or_default();
        TrafficSnapshot {
            requests: self.requests.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            streams_completed: self.streams_completed.load(Ordering::Relaxed),
            streams_active: self.streams_active.load(Ordering::Relaxed),
            cut: self.cut.load(Ordering::Relaxed),
            p50_ms,
            p99_ms,
            max_ms,
            last_second,
            last_second_errors,
            versions: lock(&self.versions).clone(),
            recent_errors: lock(&self.errors).iter().cloned().collect(),
        }
    }

    /// The per-second timeline.
    pub fn samples(&self) -> Vec<Sample> {
        lock(&self.per_second)
            .iter()
            .map(|(&sec, &(requests, errors))| Sample {
                t_ms: sec * 1000,
                requests,
                errors,
            })
            .collect()
    }

    fn count(&self, ok: bool) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if !ok {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
        self.tick(ok);
    }

    fn tick(&self, ok: bool) {
        let sec = unix_ms() / 1000;
        let mut per_second = lock(&self.per_second);
        let entry = per_second.entry(sec).or_default();
        entry.0 += 1;
        if !ok {
            entry.1 += 1;
        }
    }

    fn note_error(&self, message: String) {
        let mut errors = lock(&self.errors);
        if errors.len() >= KEPT_ERRORS {
            errors.pop_front();
        }
        errors.push_back(message);
    }
}

/// The running clients.
pub struct Traffic {
    stats: Arc<TrafficStats>,
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
    config: TrafficConfig,
}

impl Traffic {
    /// Starts the clients.
    pub fn start(config: TrafficConfig) -> Self {
        let stats = Arc::new(TrafficStats::new());
        let (stop, stopped) = watch::channel(false);
        let mut tasks = JoinSet::new();
        tasks.spawn(short_requests(
            config.clone(),
            stats.clone(),
            stopped.clone(),
        ));
        for _ in 0..config.streams {
            tasks.spawn(stream_client(
                config.clone(),
                stats.clone(),
                stopped.clone(),
            ));
        }
        Self {
            stats,
            stop,
            tasks,
            config,
        }
    }

    /// The shared counters.
    pub fn stats(&self) -> Arc<TrafficStats> {
        self.stats.clone()
    }

    /// Stops sending; waits (bounded) for requests in flight and streams to finish.
    pub async fn stop(mut self) -> Arc<TrafficStats> {
        let _ = self.stop.send(true);
        let bound = self.config.stream_time + self.config.request_timeout + Duration::from_secs(5);
        let drain = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(bound, drain).await.is_err() {
            self.tasks.abort_all();
        }
        self.stats
    }
}

async fn short_requests(
    config: TrafficConfig,
    stats: Arc<TrafficStats>,
    mut stop: watch::Receiver<bool>,
) {
    let period = Duration::from_secs_f64(1.0 / f64::from(config.rate.max(1)));
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut in_flight = JoinSet::new();
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.changed() => break,
        }
        if *stop.borrow() {
            break;
        }
        let stats = stats.clone();
        let target = config.target.clone();
        let limit = config.request_timeout;
        in_flight.spawn(async move { one_request(&target, limit, &stats).await });
        // Reap finished tasks so the set does not grow with the whole run.
        while in_flight.try_join_next().is_some() {}
    }
    while in_flight.join_next().await.is_some() {}
}

async fn one_request(target: &str, limit: Duration, stats: &TrafficStats) {
    let started = tokio::time::Instant::now();
    let result = http::get(target, "/", limit).await;
    let elapsed = started.elapsed();
    let outcome = match result {
        Ok(r) if r.status == 200 && r.framed && !r.body.is_empty() => {
            let text = r.text();
            let version = text.split_whitespace().nth(1).unwrap_or("?").to_string();
            *lock(&stats.versions).entry(version).or_default() += 1;
            Ok(())
        }
        Ok(r) => Err(format!("GET / answered {} `{}`", r.status, r.text().trim())),
        Err(e) => Err(format!("GET /: {e}")),
    };
    match outcome {
        Ok(()) => {
            let us = elapsed.as_micros().min(u128::from(u64::MAX)) as u64;
            lock(&stats.histogram).saturating_record(us.max(1));
            stats.count(true);
        }
        Err(message) => {
            stats.count(false);
            stats.note_error(message);
        }
    }
}

/// How one long-lived stream ended.
#[derive(Debug, PartialEq, Eq)]
enum StreamEnd {
    Complete,
    Cut(String),
    Failed(String),
}

async fn stream_client(
    config: TrafficConfig,
    stats: Arc<TrafficStats>,
    stop: watch::Receiver<bool>,
) {
    // Stagger the streams so they do not all end (and reconnect) at the same instant.
    let stagger = config.stream_time.mul_f64(fastrand_fraction());
    tokio::time::sleep(stagger).await;
    while !*stop.borrow() {
        stats.streams_active.fetch_add(1, Ordering::Relaxed);
        let end = one_stream(&config).await;
        stats.streams_active.fetch_sub(1, Ordering::Relaxed);
        match end {
            StreamEnd::Complete => {
                stats.streams_completed.fetch_add(1, Ordering::Relaxed);
                stats.count(true);
            }
            StreamEnd::Cut(message) => {
                stats.cut.fetch_add(1, Ordering::Relaxed);
                stats.requests.fetch_add(1, Ordering::Relaxed);
                stats.tick(false);
                stats.note_error(format!("stream cut: {message}"));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            StreamEnd::Failed(message) => {
                stats.count(false);
                stats.note_error(format!("GET /stream: {message}"));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn one_stream(config: &TrafficConfig) -> StreamEnd {
    let limit = config.stream_time + config.request_timeout + Duration::from_secs(5);
    let connect =
        tokio::time::timeout(config.request_timeout, TcpStream::connect(&config.target)).await;
    let mut stream = match connect {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return StreamEnd::Failed(HttpError::Connect(e.to_string()).to_string()),
        Err(_) => return StreamEnd::Failed("connect timed out".into()),
    };
    let request = format!(
        "GET /stream HTTP/1.1\r\nHost: {}\r\nUser-Agent: ebb-demo\r\nConnection: close\r\n\r\n",
        config.target
    );
    let mut received = Vec::new();
    let exchange = async {
        stream.write_all(request.as_bytes()).await?;
        let mut buf = [0u8; 4096];
        loop {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                return Ok::<(), std::io::Error>(());
            }
            received.extend_from_slice(&buf[..n]);
        }
    };
    let result = tokio::time::timeout(limit, exchange).await;
    let got_head = received.starts_with(b"HTTP/1.1 200") || received.starts_with(b"HTTP/1.0 200");
    let complete = received.ends_with(b"\nend\n");
    match result {
        Err(_) => StreamEnd::Failed(format!("no end after {limit:?}")),
        Ok(_) if complete && got_head => StreamEnd::Complete,
        Ok(Err(e)) if got_head => StreamEnd::Cut(format!("{e} after {} bytes", received.len())),
        Ok(Ok(())) if got_head => StreamEnd::Cut(format!("closed after {} bytes", received.len())),
        Ok(Err(e)) => StreamEnd::Failed(format!("{e} before the response")),
        Ok(Ok(())) if received.is_empty() => StreamEnd::Failed("closed before the response".into()),
        Ok(Ok(())) => StreamEnd::Failed(format!(
            "answered `{}`",
            String::from_utf8_lossy(received.split(|&b| b == b'\r').next().unwrap_or_default())
        )),
    }
}

/// A number in [0, 1) that differs between calls, without a random-number dependency.
fn fastrand_fraction() -> f64 {
    let token = crate::member::random_token();
    let n = u64::from_str_radix(&token[..8.min(token.len())], 16).unwrap_or(0);
    (n % 10_000) as f64 / 10_000.0
}

/// Current unix time in milliseconds.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A server that answers one `/stream` request with `body`, then closes (or resets).
    async fn server(body: &'static [u8], reset: bool) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        tokio::spawn(async move {
            if let Ok((mut stream, _)) = listener.accept().await {
                let _ = http::read_request(&mut stream, Duration::from_secs(2)).await;
                let _ = stream.write_all(body).await;
                if reset {
                    // SO_LINGER 0: closing sends a reset instead of a clean FIN.
                    use std::os::fd::AsRawFd;
                    let linger = libc::linger {
                        l_onoff: 1,
                        l_linger: 0,
                    };
                    // SAFETY: a valid socket and a correctly sized option value.
                    unsafe {
                        libc::setsockopt(
                            stream.as_raw_fd(),
                            libc::SOL_SOCKET,
                            libc::SO_LINGER,
                            (&linger as *const libc::linger).cast(),
                            std::mem::size_of::<libc::linger>() as libc::socklen_t,
                        );
                    }
                }
            }
        });
        addr
    }

    fn config(target: String) -> TrafficConfig {
        TrafficConfig {
            target,
            rate: 1,
            streams: 1,
            stream_time: Duration::from_millis(200),
            request_timeout: Duration::from_secs(1),
        }
    }

    #[tokio::test]
    async fn a_stream_is_complete_only_with_its_end_line() {
        let ok = server(b"HTTP/1.1 200 OK\r\n\r\nweb1 1.0 tick 0\nend\n", false).await;
        assert_eq!(one_stream(&config(ok)).await, StreamEnd::Complete);

        let closed = server(b"HTTP/1.1 200 OK\r\n\r\nweb1 1.0 tick 0\n", false).await;
        assert!(matches!(
            one_stream(&config(closed)).await,
            StreamEnd::Cut(_)
        ));

        let reset = server(b"HTTP/1.1 200 OK\r\n\r\nweb1 1.0 tick 0\n", true).await;
        assert!(matches!(
            one_stream(&config(reset)).await,
            StreamEnd::Cut(_)
        ));

        let refused = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").to_string()
        };
        assert!(matches!(
            one_stream(&config(refused)).await,
            StreamEnd::Failed(_)
        ));

        let nothing = server(b"", false).await;
        assert!(matches!(
            one_stream(&config(nothing)).await,
            StreamEnd::Failed(_)
        ));
    }

    #[tokio::test]
    async fn short_requests_count_failures_and_versions() {
        let stats = TrafficStats::new();
        let ok = server(
            b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nweb1 1.1\n",
            false,
        )
        .await;
        one_request(&ok, Duration::from_secs(1), &stats).await;
        let bad = server(b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n", false).await;
        one_request(&bad, Duration::from_secs(1), &stats).await;
        let s = stats.snapshot();
        assert_eq!((s.requests, s.failed), (2, 1));
        assert_eq!(s.versions.get("1.1"), Some(&1));
        assert_eq!(s.recent_errors.len(), 1);
        assert_eq!(stats.samples().iter().map(|x| x.requests).sum::<u64>(), 2);
    }
}
