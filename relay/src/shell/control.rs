//! The control thread's IO: the Unix listener and the one signaling connection, the
//! workers' report channel and their `applied` counters, moved in and out of the
//! sans-IO [`ControlServer`], which makes every decision.
//!
//! ```text
//! loop { poll(listener, client, waker; 1 s, or 5 ms while commands wait for room, or
//!             until the client's hello deadline; not at all while the client has
//!             more to read)
//!        client readable → read up to 1 MiB → server.handle_data / handle_hangup
//!        listener → accept (a closing client is closed first) → server.accept (a
//!             refusal's goodbye is written, best effort)
//!        server.handle_timeout (a client without a hello in 5 s is closed)
//!        reports → server.handle_report; each worker's applied → server.handle_applied
//!        server.poll_command(w) → try_send to worker w (full: return_command, retry later)
//!        server.transmit → write without blocking; wants_close → close }
//! ```
//!
//! Nothing here waits for a worker: a full channel leaves the command in the server's
//! queue, and the server answers `overloaded` when a queue is too long.

use std::io::{self, Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, TrySendError};
use mio::net::{UnixListener, UnixStream};
use mio::{Events, Interest, Poll, Token};

use super::signals::Shutdown;
use super::worker::{Link, RelayMetrics};
use crate::control::server::{ControlServer, ServerStats, WorkerReport};

const LISTENER: Token = Token(2);
const CLIENT: Token = Token(3);

/// The control server's counters, for `/metrics`.
#[derive(Debug, Default)]
pub struct ControlCounters {
    overloaded: AtomicU64,
    backlog_hangups: AtomicU64,
    refused_clients: AtomicU64,
    requests: AtomicU64,
}

impl ControlCounters {
    fn publish(&self, s: ServerStats) {
        self.overloaded.store(s.overloaded, Ordering::Relaxed);
        self.backlog_hangups
            .store(s.backlog_hangups, Ordering::Relaxed);
        self.refused_clients
            .store(s.refused_clients, Ordering::Relaxed);
        self.requests.store(s.requests, Ordering::Relaxed);
    }

    /// Appends them in the Prometheus text format.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write as _;
        let all = [
            (
                "blindfold_control_requests_total",
                "Control requests handled.",
                &self.requests,
            ),
            (
                "blindfold_control_overloaded_total",
                "Control requests refused as overloaded: a worker's rule queue was full.",
                &self.overloaded,
            ),
            (
                "blindfold_control_backlog_hangups_total",
                "Signaling clients hung up on for not reading.",
                &self.backlog_hangups,
            ),
            (
                "blindfold_control_refused_clients_total",
                "Second signaling connections turned away.",
                &self.refused_clients,
            ),
        ];
        for (name, help, v) in all {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} counter");
            let _ = writeln!(out, "{name} {}", v.load(Ordering::Relaxed));
        }
    }
}

/// The control thread.
pub struct ControlLoop {
    poll: Poll,
    listener: UnixListener,
    stream: Option<UnixStream>,
    server: ControlServer,
    workers: Vec<Link>,
    reports: Receiver<WorkerReport>,
    shutdown: Shutdown,
    counters: Arc<ControlCounters>,
    read_buf: Vec<u8>,
    /// The client may have sent more than the last turn read ([`READ_PER_TURN`]): read
    /// on without waiting for readiness (mio's is edge-triggered).
    unread: bool,
}

/// Bytes read from the client per loop turn: a client that writes without pause still
/// lets the loop hand commands to the workers, write answers and take reports.
const READ_PER_TURN: usize = 1024 * 1024;

impl ControlLoop {
    /// The loop around `server`; `poll` has the waker the workers and the shutdown use.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        poll: Poll,
        listener: UnixListener,
        mut server: ControlServer,
        workers: Vec<Link>,
        reports: Receiver<WorkerReport>,
        metrics: Arc<RelayMetrics>,
        shutdown: Shutdown,
        counters: Arc<ControlCounters>,
    ) -> Self {
        server.set_traffic(Box::new(move |stats| {
            let ws = metrics.workers();
            stats.rx_packets = ws.iter().map(|w| w.packets_in.get()).sum();
            stats.rx_bytes = ws.iter().map(|w| w.bytes_in.get()).sum();
            stats.tx_packets = ws.iter().map(|w| w.packets_out.get()).sum();
            stats.tx_bytes = ws.iter().map(|w| w.bytes_out.get()).sum();
            if let Some(first) = ws.first() {
                for (j, name) in first.drops.labels().values.iter().enumerate() {
                    let n: u64 = ws.iter().map(|w| w.drops.get(j)).sum();
                    if n > 0 {
                        stats.drops.insert((*name).to_owned(), n);
                    }
                }
            }
        }));
        ControlLoop {
            poll,
            listener,
            stream: None,
            server,
            workers,
            reports,
            shutdown,
            counters,
            read_buf: vec![0u8; 64 * 1024],
            unread: false,
        }
    }

    /// Runs until shutdown; fails only if the poll itself fails.
    pub fn run(mut self) -> io::Result<()> {
        self.poll
            .registry()
            .register(&mut self.listener, LISTENER, Interest::READABLE)?;
        let mut events = Events::with_capacity(16);
        loop {
            let waiting = (0..self.workers.len()).any(|w| self.server.queued(w) > 0);
            let mut timeout = if self.unread {
                Duration::ZERO
            } else if waiting {
                Duration::from_millis(5)
            } else {
                Duration::from_secs(1)
            };
            if let Some(t) = self.server.poll_timeout() {
                timeout = timeout.min(t.saturating_duration_since(Instant::now()));
            }
            if let Err(e) = self.poll.poll(&mut events, Some(timeout))
                && e.kind() != io::ErrorKind::Interrupted
            {
                return Err(e);
            }
            if self.shutdown.is_set() {
                self.server.handle_shutdown();
                self.flush();
                return Ok(());
            }
            let mut accept = false;
            let mut readable = std::mem::take(&mut self.unread);
            for ev in events.iter() {
                match ev.token() {
                    LISTENER => accept = true,
                    CLIENT => readable = true,
                    _ => {}
                }
            }
            if readable {
                self.read_client();
            }
            while let Ok(report) = self.reports.try_recv() {
                self.server.handle_report(report);
            }
            for (w, link) in self.workers.iter().enumerate() {
                self.server
                    .handle_applied(w, link.applied.load(Ordering::Acquire));
            }
            if accept {
                self.accept();
            }
            self.server.handle_timeout(Instant::now());
            self.deliver();
            self.flush();
            self.counters.publish(self.server.stats());
        }
    }

    fn accept(&mut self) {
        loop {
            let mut stream = match self.listener.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a control connection");
                    return;
                }
            };
            // A client that left (its EOF may be queued behind this connect), or that
            // the server is closing (its goodbye written), must not count as the
            // active one.
            self.read_client();
            if self.server.wants_close() {
                self.flush();
            }
            if let Err(bye) = self.server.accept(Instant::now()) {
                // Best effort, non-blocking: a small frame fits the socket buffer.
                let _ = stream.write(&bye);
                continue;
            }
            if let Err(e) = self.poll.registry().register(
                &mut stream,
                CLIENT,
                Interest::READABLE | Interest::WRITABLE,
            ) {
                tracing::warn!(error = %e, "registering a control connection");
                self.server.handle_hangup();
                continue;
            }
            self.stream = Some(stream);
        }
    }

    /// Reads what the client sent, up to [`READ_PER_TURN`] bytes; notices it leaving.
    fn read_client(&mut self) {
        let Some(stream) = self.stream.as_mut() else {
            return;
        };
        let mut read = 0;
        loop {
            if self.server.wants_close() {
                return;
            }
            if read >= READ_PER_TURN {
                self.unread = true;
                return;
            }
            match stream.read(&mut self.read_buf) {
                Ok(0) => break,
                Ok(n) => {
                    read += n;
                    self.server.handle_data(&self.read_buf[..n]);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // A client that exits without reading what we sent it resets the
                // connection: a hang-up, not a fault.
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                    tracing::info!("signaling hung up (connection reset)");
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "reading the control socket");
                    break;
                }
            }
        }
        self.close();
    }

    /// Hands each worker the commands waiting for it, as far as its channel has room.
    fn deliver(&mut self) {
        for (w, link) in self.workers.iter().enumerate() {
            let mut sent = false;
            while let Some(cmd) = self.server.poll_command(w) {
                match link.tx.try_send(cmd) {
                    Ok(()) => sent = true,
                    Err(TrySendError::Full(cmd)) => {
                        self.server.return_command(w, cmd);
                        break;
                    }
                    // A worker that is gone stops the process (see shell::worker).
                    Err(TrySendError::Disconnected(_)) => {}
                }
            }
            if sent {
                let _ = link.waker.wake();
            }
        }
    }

    /// Writes what the server has for the client without blocking; closes the
    /// connection when it broke or the server is done with it.
    fn flush(&mut self) {
        let Some(stream) = self.stream.as_mut() else {
            return;
        };
        let mut broken = false;
        loop {
            let out = self.server.transmit();
            if out.is_empty() {
                break;
            }
            match stream.write(out) {
                Ok(0) => {
                    broken = true;
                    break;
                }
                Ok(n) => self.server.advance(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    broken = true;
                    break;
                }
            }
        }
        // A closing connection gets one best-effort write of its goodbye.
        if broken || self.server.wants_close() {
            self.close();
        }
    }

    fn close(&mut self) {
        if let Some(mut stream) = self.stream.take() {
            let _ = self.poll.registry().deregister(&mut stream);
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
        self.server.handle_hangup();
    }
}
