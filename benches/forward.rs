//! The bare forwarder: the physical-limit baseline for the relay.
//!
//! Each worker thread owns one `SO_REUSEPORT` socket on the listen port (as the relay's
//! workers do) and its own mio loop. Per receive batch (`recvmmsg`, 64 datagrams, the
//! relay's size) it queues every datagram once per destination with one
//! [`SendBatch::push_fanout`](blindfold_relay::shell::udp::SendBatch::push_fanout)
//! (zero copy: every message points at the receive buffer) and flushes with `sendmmsg`.
//! Nothing else: no parsing, no lookup, no rewriting.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use blindfold_relay::shell::signals::Shutdown;
use blindfold_relay::shell::udp::{RecvBatch, SendQueue, bind_reuseport};
use mio::{Events, Interest, Poll, Token, Waker};

/// Datagrams per `recvmmsg` (the relay's `RECV_BATCH`).
pub const RECV_BATCH: usize = 64;
/// Datagrams per `sendmmsg` (the relay's `SEND_QUEUE`).
pub const SEND_QUEUE: usize = 512;
/// The default socket buffer size each way (the relay's default).
pub const DEFAULT_BUFFER: usize = 4 << 20;

const SOCKET: Token = Token(0);
const WAKER: Token = Token(1);

/// What the forwarder binds and where it sends.
#[derive(Debug, Clone)]
pub struct ForwarderConfig {
    /// The shared listen address (port 0 picks one port for all workers).
    pub listen: SocketAddr,
    /// Worker threads, each with its own socket on the listen port (at least 1).
    pub workers: usize,
    /// The fixed fan-out list: every datagram goes to each of these.
    pub dests: Vec<SocketAddr>,
    /// `SO_RCVBUF` in bytes (0: the system default).
    pub recv_buffer: usize,
    /// `SO_SNDBUF` in bytes (0: the system default).
    pub send_buffer: usize,
}

/// One worker's counters, updated once per receive batch. Cache-line aligned so workers
/// do not share a line.
#[derive(Debug, Default)]
#[repr(align(64))]
pub struct WorkerCounters {
    /// Datagrams received.
    pub received: AtomicU64,
    /// Datagrams the kernel accepted for sending.
    pub sent: AtomicU64,
    /// Datagrams dropped because the send buffer was full (`EAGAIN`/`ENOBUFS`).
    pub dropped_full: AtomicU64,
    /// Datagrams dropped by a per-destination send error.
    pub dropped_error: AtomicU64,
    /// Datagrams received but skipped (truncated or an unknown address family).
    pub dropped_recv: AtomicU64,
}

/// The sum of every worker's counters at one moment.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    /// Datagrams received.
    pub received: u64,
    /// Datagrams sent.
    pub sent: u64,
    /// Dropped on a full send buffer.
    pub dropped_full: u64,
    /// Dropped on a per-destination send error.
    pub dropped_error: u64,
    /// Skipped on receive.
    pub dropped_recv: u64,
}

impl Totals {
    /// Every drop the forwarder saw.
    pub fn dropped(&self) -> u64 {
        self.dropped_full + self.dropped_error + self.dropped_recv
    }

    /// `self - earlier`, counter by counter (saturating).
    pub fn since(&self, earlier: &Totals) -> Totals {
        Totals {
            received: self.received.saturating_sub(earlier.received),
            sent: self.sent.saturating_sub(earlier.sent),
            dropped_full: self.dropped_full.saturating_sub(earlier.dropped_full),
            dropped_error: self.dropped_error.saturating_sub(earlier.dropped_error),
            dropped_recv: self.dropped_recv.saturating_sub(earlier.dropped_recv),
        }
    }
}

fn sum(counters: &[WorkerCounters]) -> Totals {
    let mut t = Totals::default();
    for c in counters {
        t.received += c.received.load(Ordering::Relaxed);
        t.sent += c.sent.load(Ordering::Relaxed);
        t.dropped_full += c.dropped_full.load(Ordering::Relaxed);
        t.dropped_error += c.dropped_error.load(Ordering::Relaxed);
        t.dropped_recv += c.dropped_recv.load(Ordering::Relaxed);
    }
    t
}

/// A running forwarder: its worker threads and their counters.
#[derive(Debug)]
pub struct Forwarder {
    local: SocketAddr,
    counters: Arc<[WorkerCounters]>,
    threads: Vec<JoinHandle<io::Result<()>>>,
    shutdown: Shutdown,
}

impl Forwarder {
    /// Binds one socket per worker on `config.listen` (all on the same port) and starts
    /// the workers; they run until `shutdown` is triggered.
    ///
    /// # Errors
    /// Binding a socket (e.g. `EADDRINUSE`) or spawning a thread failed; nothing is left
    /// running then.
    pub fn start(config: &ForwarderConfig, shutdown: Shutdown) -> io::Result<Self> {
        let workers = config.workers.max(1);
        let first = bind_reuseport(config.listen, config.recv_buffer, config.send_buffer)?;
        let local = first.local_addr()?;
        let mut sockets = vec![first];
        for _ in 1..workers {
            sockets.push(bind_reuseport(
                local,
                config.recv_buffer,
                config.send_buffer,
            )?);
        }
        let counters: Arc<[WorkerCounters]> =
            (0..workers).map(|_| WorkerCounters::default()).collect();
        let dests: Arc<[SocketAddr]> = config.dests.iter().copied().collect();
        let mut threads = Vec::with_capacity(workers);
        for (i, socket) in sockets.into_iter().enumerate() {
            let (dests, counters, stop) = (dests.clone(), counters.clone(), shutdown.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("bare-fwd-{i}"))
                .spawn(move || {
                    let r = run_worker(socket, &dests, &stop, &counters[i]);
                    if r.is_err() {
                        stop.trigger();
                    }
                    r
                });
            match spawned {
                Ok(t) => threads.push(t),
                Err(e) => {
                    shutdown.trigger();
                    for t in threads {
                        let _ = t.join();
                    }
                    return Err(e);
                }
            }
        }
        Ok(Self {
            local,
            counters,
            threads,
            shutdown,
        })
    }

    /// The address the workers share (with the port resolved if 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The counters summed over the workers now.
    pub fn totals(&self) -> Totals {
        sum(&self.counters)
    }

    /// Whether shutdown was requested (by a signal, [`stop`](Self::stop) or a worker's
    /// fatal error).
    pub fn is_stopping(&self) -> bool {
        self.shutdown.is_set()
    }

    /// Triggers shutdown, waits for the workers and returns the final counters.
    ///
    /// # Errors
    /// The first worker's fatal socket error, if any.
    pub fn stop(self) -> io::Result<Totals> {
        self.shutdown.trigger();
        self.join()
    }

    /// Waits for the workers to stop (after a shutdown from elsewhere) and returns the
    /// final counters.
    ///
    /// # Errors
    /// The first worker's fatal socket error, if any.
    pub fn join(self) -> io::Result<Totals> {
        let mut result = Ok(());
        for t in self.threads {
            let r = t
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("forwarder worker panicked")));
            if result.is_ok() {
                result = r;
            }
        }
        result.map(|()| sum(&self.counters))
    }
}

/// One worker's loop: waits on `socket` with mio, drains it with `recvmmsg`, fans every
/// datagram out to `dests` with one `push_fanout` per datagram and one flush per receive
/// batch, and counts into `counters`. Returns when `shutdown` is set.
///
/// # Errors
/// Registering with mio, a failed `poll`, `recvmmsg` or a fatal `sendmmsg` error
/// (`EBADF`/`ENOTSOCK`/`EFAULT`). Full send buffers are counted drops, not errors.
pub fn run_worker(
    socket: UdpSocket,
    dests: &[SocketAddr],
    shutdown: &Shutdown,
    counters: &WorkerCounters,
) -> io::Result<()> {
    socket.set_nonblocking(true)?;
    let mut socket = mio::net::UdpSocket::from_std(socket);
    let mut poll = Poll::new()?;
    poll.registry()
        .register(&mut socket, SOCKET, Interest::READABLE)?;
    shutdown.add_waker(Arc::new(Waker::new(poll.registry(), WAKER)?));
    let mut events = Events::with_capacity(8);
    let mut rx = RecvBatch::new(RECV_BATCH);
    let mut tx = SendQueue::new(SEND_QUEUE, 1);
    while !shutdown.is_set() {
        match poll.poll(&mut events, Some(Duration::from_millis(500))) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        // Edge-triggered: drain until the socket would block, whichever token fired.
        while !shutdown.is_set() {
            let n = rx.recv(&socket)?;
            if n == 0 {
                break;
            }
            let mut batch = tx.batch(socket.as_fd());
            for (_, buf) in rx.iter_mut() {
                let buf: &[u8] = buf;
                batch.push_fanout(buf, dests);
            }
            let st = batch.flush()?;
            drop(batch);
            counters.received.fetch_add(n as u64, Ordering::Relaxed);
            counters
                .dropped_recv
                .fetch_add(rx.dropped() as u64, Ordering::Relaxed);
            counters.sent.fetch_add(st.sent, Ordering::Relaxed);
            counters
                .dropped_full
                .fetch_add(st.dropped_full, Ordering::Relaxed);
            counters
                .dropped_error
                .fetch_add(st.dropped_error, Ordering::Relaxed);
        }
    }
    Ok(())
}
