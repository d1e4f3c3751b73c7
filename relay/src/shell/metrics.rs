//! Lock-free per-worker counters and their Prometheus exposition.
//!
//! Each worker owns one [`WorkerMetrics`] inside the shared [`Metrics`] (an `Arc`): it
//! only ever `fetch_add`s (or `store`s, for gauges) its own atomics with `Relaxed`
//! ordering, and each worker's struct is aligned to its own 128-byte block, so workers
//! never contend or false-share. The metrics thread reads them all with `Relaxed`
//! loads: a scrape may see one counter a few increments ahead of another, which
//! Prometheus tolerates. An increment is one uncontended atomic add; nothing allocates.
//!
//! Labelled counters (drops by reason) and gauges (sessions by state) are fixed-size sets
//! whose names the engine declares once as a `static` [`Labels`]:
//!
//! ```
//! use blindfold_relay::shell::metrics::{Labels, Metrics};
//!
//! static DROPS: Labels<2> = Labels {
//!     metric: "blindfold_drops_total",
//!     help: "Datagrams dropped, by reason.",
//!     label: "reason",
//!     values: ["unknown_source", "bad_rtp"],
//! };
//! static SESSIONS: Labels<2> = Labels {
//!     metric: "blindfold_sessions",
//!     help: "Sessions, by state.",
//!     label: "state",
//!     values: ["connecting", "connected"],
//! };
//!
//! let metrics = Metrics::new(2, &DROPS, &SESSIONS);
//! let w0 = metrics.worker(0).unwrap();
//! w0.packets_in.inc();
//! w0.drops.add(1, 1); // bad_rtp; the engine passes `reason as usize`
//! w0.sessions.set(1, 3);
//! let mut text = String::new();
//! metrics.render(&mut text, false);
//! assert!(text.contains("blindfold_drops_total{reason=\"bad_rtp\"} 1"));
//! ```
//!
//! [`MetricsServer`] serves the text on `GET /metrics` from a std thread.

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A monotonically increasing count, written by one worker.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one.
    #[inline]
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds `n`.
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down (a number of sessions), written by one worker.
#[derive(Debug, Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    /// Sets the value.
    #[inline]
    pub fn set(&self, v: i64) {
        self.0.store(v, Ordering::Relaxed);
    }

    /// Adds `d` (negative to subtract).
    #[inline]
    pub fn add(&self, d: i64) {
        self.0.fetch_add(d, Ordering::Relaxed);
    }

    /// The current value.
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// The names of a labelled metric family: one metric, one label, `N` label values (one
/// per counter or gauge of the set, in index order). Declare it as a `static`.
///
/// `metric` must be a valid Prometheus name (`[a-zA-Z_:][a-zA-Z0-9_:]*`) and `label` a
/// valid label name; values are escaped when rendered.
#[derive(Debug)]
pub struct Labels<const N: usize> {
    /// The metric name, e.g. `blindfold_drops_total`.
    pub metric: &'static str,
    /// The `# HELP` text.
    pub help: &'static str,
    /// The label's name, e.g. `reason`.
    pub label: &'static str,
    /// The label's values; index `i` names counter `i`.
    pub values: [&'static str; N],
}

/// `N` counters named by a [`Labels`]; indexed by the engine's enum (`reason as usize`).
#[derive(Debug)]
pub struct CounterSet<const N: usize> {
    labels: &'static Labels<N>,
    values: [Counter; N],
}

impl<const N: usize> CounterSet<N> {
    /// A set of zeroed counters named by `labels`.
    pub fn new(labels: &'static Labels<N>) -> Self {
        Self {
            labels,
            values: std::array::from_fn(|_| Counter::default()),
        }
    }

    /// Adds `n` to counter `i`; an index past `N` is ignored (never panics).
    #[inline]
    pub fn add(&self, i: usize, n: u64) {
        if let Some(c) = self.values.get(i) {
            c.add(n);
        }
    }

    /// Counter `i`'s value; 0 past `N`.
    pub fn get(&self, i: usize) -> u64 {
        self.values.get(i).map_or(0, Counter::get)
    }

    /// The names.
    pub fn labels(&self) -> &'static Labels<N> {
        self.labels
    }
}

/// `N` gauges named by a [`Labels`] (sessions by state).
#[derive(Debug)]
pub struct GaugeSet<const N: usize> {
    labels: &'static Labels<N>,
    values: [Gauge; N],
}

impl<const N: usize> GaugeSet<N> {
    /// A set of zeroed gauges named by `labels`.
    pub fn new(labels: &'static Labels<N>) -> Self {
        Self {
            labels,
            values: std::array::from_fn(|_| Gauge::default()),
        }
    }

    /// Sets gauge `i`; an index past `N` is ignored.
    #[inline]
    pub fn set(&self, i: usize, v: i64) {
        if let Some(g) = self.values.get(i) {
            g.set(v);
        }
    }

    /// Adds `d` to gauge `i` (negative to subtract); an index past `N` is ignored.
    #[inline]
    pub fn add(&self, i: usize, d: i64) {
        if let Some(g) = self.values.get(i) {
            g.add(d);
        }
    }

    /// Gauge `i`'s value; 0 past `N`.
    pub fn get(&self, i: usize) -> i64 {
        self.values.get(i).map_or(0, Gauge::get)
    }

    /// The names.
    pub fn labels(&self) -> &'static Labels<N> {
        self.labels
    }
}

/// One worker's metrics: `D` drop reasons and `S` session states. Written only by its
/// worker; aligned to 128 bytes (two cache lines, for the adjacent-line prefetcher) so
/// neighbouring workers never share a line.
#[derive(Debug)]
#[repr(align(128))]
pub struct WorkerMetrics<const D: usize, const S: usize> {
    /// Datagrams received (`blindfold_packets_received_total`).
    pub packets_in: Counter,
    /// Their bytes (`blindfold_bytes_received_total`).
    pub bytes_in: Counter,
    /// Datagrams the kernel accepted for sending (`blindfold_packets_sent_total`).
    pub packets_out: Counter,
    /// Their bytes (`blindfold_bytes_sent_total`).
    pub bytes_out: Counter,
    /// DTLS handshakes completed (`blindfold_dtls_handshakes_total`).
    pub dtls_handshakes: Counter,
    /// DTLS handshakes failed (`blindfold_dtls_handshake_failures_total`).
    pub dtls_failures: Counter,
    /// Control messages applied by this worker (`blindfold_control_messages_total`).
    pub control_messages: Counter,
    /// Drops by reason.
    pub drops: CounterSet<D>,
    /// Sessions by state.
    pub sessions: GaugeSet<S>,
}

impl<const D: usize, const S: usize> WorkerMetrics<D, S> {
    fn new(drops: &'static Labels<D>, sessions: &'static Labels<S>) -> Self {
        Self {
            packets_in: Counter::default(),
            bytes_in: Counter::default(),
            packets_out: Counter::default(),
            bytes_out: Counter::default(),
            dtls_handshakes: Counter::default(),
            dtls_failures: Counter::default(),
            control_messages: Counter::default(),
            drops: CounterSet::new(drops),
            sessions: GaugeSet::new(sessions),
        }
    }
}

/// Every worker's metrics, shared (`Arc`) between the workers and the metrics thread.
#[derive(Debug)]
pub struct Metrics<const D: usize, const S: usize> {
    workers: Box<[WorkerMetrics<D, S>]>,
}

type Plain<const D: usize, const S: usize> =
    (&'static str, &'static str, fn(&WorkerMetrics<D, S>) -> u64);

impl<const D: usize, const S: usize> Metrics<D, S> {
    /// Zeroed metrics for `workers` workers (at least one).
    pub fn new(
        workers: usize,
        drops: &'static Labels<D>,
        sessions: &'static Labels<S>,
    ) -> Arc<Self> {
        let workers = (0..workers.max(1))
            .map(|_| WorkerMetrics::new(drops, sessions))
            .collect();
        Arc::new(Self { workers })
    }

    /// Worker `i`'s metrics, for that worker to write; `None` past the end.
    pub fn worker(&self, i: usize) -> Option<&WorkerMetrics<D, S>> {
        self.workers.get(i)
    }

    /// All workers' metrics.
    pub fn workers(&self) -> &[WorkerMetrics<D, S>] {
        &self.workers
    }

    /// Appends the Prometheus text exposition (format 0.0.4) to `out`: the sum over
    /// workers, or with `per_worker` one sample per worker labelled `worker="i"`.
    pub fn render(&self, out: &mut String, per_worker: bool) {
        let plain: [Plain<D, S>; 7] = [
            (
                "blindfold_packets_received_total",
                "Datagrams received.",
                |w| w.packets_in.get(),
            ),
            (
                "blindfold_bytes_received_total",
                "Bytes of datagrams received.",
                |w| w.bytes_in.get(),
            ),
            ("blindfold_packets_sent_total", "Datagrams sent.", |w| {
                w.packets_out.get()
            }),
            (
                "blindfold_bytes_sent_total",
                "Bytes of datagrams sent.",
                |w| w.bytes_out.get(),
            ),
            (
                "blindfold_dtls_handshakes_total",
                "DTLS handshakes completed.",
                |w| w.dtls_handshakes.get(),
            ),
            (
                "blindfold_dtls_handshake_failures_total",
                "DTLS handshakes failed.",
                |w| w.dtls_failures.get(),
            ),
            (
                "blindfold_control_messages_total",
                "Control messages applied.",
                |w| w.control_messages.get(),
            ),
        ];
        for (name, help, get) in plain {
            header(out, name, help, "counter");
            if per_worker {
                for (i, w) in self.workers.iter().enumerate() {
                    let _ = writeln!(out, "{name}{{worker=\"{i}\"}} {}", get(w));
                }
            } else {
                let sum = self.workers.iter().map(get).fold(0u64, u64::wrapping_add);
                let _ = writeln!(out, "{name} {sum}");
            }
        }
        let Some(first) = self.workers.first() else {
            return;
        };
        let drops = first.drops.labels();
        header(out, drops.metric, drops.help, "counter");
        for (j, value) in drops.values.iter().enumerate() {
            self.labelled(out, drops.metric, drops.label, value, per_worker, |w| {
                i128::from(w.drops.get(j))
            });
        }
        let sessions = first.sessions.labels();
        header(out, sessions.metric, sessions.help, "gauge");
        for (j, value) in sessions.values.iter().enumerate() {
            self.labelled(
                out,
                sessions.metric,
                sessions.label,
                value,
                per_worker,
                |w| i128::from(w.sessions.get(j)),
            );
        }
    }

    fn labelled(
        &self,
        out: &mut String,
        metric: &str,
        label: &str,
        value: &str,
        per_worker: bool,
        get: impl Fn(&WorkerMetrics<D, S>) -> i128,
    ) {
        if per_worker {
            for (i, w) in self.workers.iter().enumerate() {
                let _ = write!(out, "{metric}{{worker=\"{i}\",{label}=\"");
                escape_label(out, value);
                let _ = writeln!(out, "\"}} {}", get(w));
            }
        } else {
            // i128 holds counters (u64) and gauges (i64) and their sums without overflow.
            let sum: i128 = self.workers.iter().map(get).sum();
            let _ = write!(out, "{metric}{{{label}=\"");
            escape_label(out, value);
            let _ = writeln!(out, "\"}} {sum}");
        }
    }
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    out.push_str("# HELP ");
    out.push_str(name);
    out.push(' ');
    for c in help.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    let _ = writeln!(out, "\n# TYPE {name} {kind}");
}

/// Escapes a label value for the text format: `\`, `"` and newline.
fn escape_label(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// What a request to the metrics server asks for, from its request line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Request {
    /// `GET /metrics` (a query string is ignored): 200 with the exposition.
    Metrics,
    /// `GET` of any other path: 404.
    NotFound,
    /// A method other than `GET`: 405.
    MethodNotAllowed,
    /// No complete request line, or not HTTP/1.x: 400.
    Bad,
}

/// Classifies a request from the start of its bytes (the request line; headers are not
/// needed). Never panics; anything malformed is [`Request::Bad`].
pub fn parse_request(data: &[u8]) -> Request {
    let Some(end) = data.windows(2).position(|w| w == b"\r\n") else {
        return Request::Bad;
    };
    let Ok(line) = std::str::from_utf8(&data[..end]) else {
        return Request::Bad;
    };
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Request::Bad;
    };
    if !version.starts_with("HTTP/1.") || method.is_empty() || !target.starts_with('/') {
        return Request::Bad;
    }
    if method != "GET" {
        return Request::MethodNotAllowed;
    }
    let path = target.split('?').next().unwrap_or(target);
    if path == "/metrics" {
        Request::Metrics
    } else {
        Request::NotFound
    }
}

/// Longest request head accepted (request line and headers).
const MAX_REQUEST: usize = 8192;
/// Time a client gets to send its request head, in total.
const REQUEST_DEADLINE: Duration = Duration::from_secs(5);
/// Time a client gets to take the whole response, in total.
const RESPONSE_DEADLINE: Duration = Duration::from_secs(5);

/// A blocking HTTP/1.1 server for `GET /metrics` on its own std thread, one connection
/// at a time (a scraper every few seconds needs no more). A client gets
/// 5 s in total to send at most 8 KiB of request head, and 5 s in total to take the
/// response, so a slow, silent or slowly reading client cannot wedge it; every
/// response closes the connection.
///
/// Dropping the server (or [`shutdown`](Self::shutdown)) stops the thread.
#[derive(Debug)]
pub struct MetricsServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// Binds `addr` and serves `render`'s output (called once per scrape, appending to a
    /// cleared `String`) on `GET /metrics`.
    ///
    /// # Errors
    /// Binding the listener or spawning the thread failed.
    pub fn spawn(
        addr: SocketAddr,
        render: impl Fn(&mut String) + Send + 'static,
    ) -> io::Result<Self> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread_stop = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("metrics-http".into())
            .spawn(move || serve(&listener, &thread_stop, &render))?;
        Ok(Self {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// The address it listens on (with the port the OS chose for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops the server thread and waits for it.
    pub fn shutdown(mut self) {
        self.stop_thread();
    }

    fn stop_thread(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        self.stop.store(true, Ordering::Relaxed);
        // Wake the blocking accept with a connection of our own.
        let ip = match self.addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        if TcpStream::connect_timeout(
            &SocketAddr::new(ip, self.addr.port()),
            Duration::from_secs(1),
        )
        .is_ok()
        {
            let _ = thread.join();
        }
        // If the wake-up connection failed, leave the thread: it exits on the next request.
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop_thread();
    }
}

/// Writes all of `bytes` by `deadline`, or fails (`TimedOut`): a timeout per write alone
/// would let a client that takes a few bytes at a time hold the server for ever.
fn write_within(stream: &mut TcpStream, mut bytes: &[u8], deadline: Instant) -> io::Result<()> {
    while !bytes.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        stream.set_write_timeout(Some(left))?;
        match stream.write(bytes) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn serve(listener: &TcpListener, stop: &AtomicBool, render: &dyn Fn(&mut String)) {
    let mut body = String::new();
    for conn in listener.incoming() {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        match conn {
            Ok(stream) => {
                if let Err(e) = handle(stream, render, &mut body) {
                    tracing::debug!(error = %e, "metrics request failed");
                }
            }
            Err(e) => {
                // E.g. EMFILE: back off instead of spinning.
                tracing::warn!(error = %e, "metrics accept failed");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

fn handle(
    mut stream: TcpStream,
    render: &dyn Fn(&mut String),
    body: &mut String,
) -> io::Result<()> {
    let deadline = Instant::now() + REQUEST_DEADLINE;
    let mut buf = [0u8; MAX_REQUEST];
    let mut len = 0;
    let request = loop {
        if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
            break parse_request(&buf[..len]);
        }
        if len == buf.len() {
            break Request::Bad;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(()); // too slow: just close
        }
        stream.set_read_timeout(Some(left))?;
        match stream.read(&mut buf[len..]) {
            Ok(0) => break parse_request(&buf[..len]),
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    };
    let (status, content_type) = match request {
        Request::Metrics => {
            body.clear();
            render(body);
            ("200 OK", "text/plain; version=0.0.4; charset=utf-8")
        }
        Request::NotFound => {
            body.clear();
            body.push_str("not found\n");
            ("404 Not Found", "text/plain; charset=utf-8")
        }
        Request::MethodNotAllowed => {
            body.clear();
            body.push_str("method not allowed\n");
            ("405 Method Not Allowed", "text/plain; charset=utf-8")
        }
        Request::Bad => {
            body.clear();
            body.push_str("bad request\n");
            ("400 Bad Request", "text/plain; charset=utf-8")
        }
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let deadline = Instant::now() + RESPONSE_DEADLINE;
    write_within(&mut stream, head.as_bytes(), deadline)?;
    write_within(&mut stream, body.as_bytes(), deadline)?;
    let _ = stream.shutdown(std::net::Shutdown::Write);
    // Lingering close: read (and discard) what the client still sends for a moment, so
    // closing with unread input does not send a RST that destroys our response.
    let linger = Instant::now() + Duration::from_millis(200);
    let mut drained = 0;
    while drained < 64 * 1024 {
        let left = linger.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            break;
        }
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => drained += n,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
