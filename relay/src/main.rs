//! `blindfold-relay`: the relay process — the mio shell around one sans-IO
//! [`Engine`] per core.
//!
//! ```text
//! main ─ Config::load → logging → control socket (0600) → Shutdown::install
//!      → DTLS certificate (loaded or generated; its fingerprint goes in the hello)
//!      → Metrics + MetricsServer (GET /metrics)
//!      → N worker threads ─┐
//!      → the control loop on the main thread
//!
//! worker i: own SO_REUSEPORT socket on the public port, own Engine, mio Poll + Waker
//!   loop { poll(timeout = engine.poll_timeout(), next metrics publish)
//!          recvmmsg → engine.handle_datagram → Forward: push_fanout(receive buffer)
//!                                            → poll_transmit: push_owned → sendmmsg
//!          commands from the channel (rules, other workers' PeerMsgs) → handle_command
//!          handle_timeout when due; poll_event: Notify → control, Peer → other workers
//!          every 100 ms: EngineStats → WorkerMetrics }
//!
//! control: Unix listener, one signaling client at a time; FrameDecoder per connection;
//!   hello exchange; requests → Registry → response + commands to EVERY worker (+ wake);
//!   worker notifications → the client. The client going away stops nothing: sessions
//!   keep running, and the snapshot sent after a reconnect is reconciled.
//! ```
//!
//! Channels are bounded crossbeam channels. A worker never blocks: a full peer or
//! notification channel is a counted drop (`peer_queue_full`, `notify_queue_full`).
//! The control thread may wait for room in a worker's channel, because a rule must not
//! be lost, and workers drain their channels every loop.
//!
//! SIGTERM/SIGINT: every loop is woken, the control socket says `goodbye` (`shutdown`)
//! to signaling, workers leave their loops, sockets close, the process exits 0.

// The binary is the IO shell: it reads the clock (the engines never do).
#![allow(clippy::disallowed_methods)]

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use blindfold_relay::control::registry::Registry;
use blindfold_relay::control::{
    self, ControlError, Disposition, ErrorCode, FrameDecoder, Goodbye, Hello, MAX_CANDIDATES,
    Message, NotificationBody, RequestBody, Response, ResponseBody, Role,
};
use blindfold_relay::dtls::{DtlsCert, DtlsConfig, DtlsSettings};
use blindfold_relay::engine::{
    Command, DropReason, Engine, EngineConfig, EngineStats, Event, Handled, PeerDest, ShardId,
};
use blindfold_relay::shell::config::{Config, ConfigError};
use blindfold_relay::shell::metrics::{Labels, Metrics, MetricsServer, WorkerMetrics};
use blindfold_relay::shell::signals::Shutdown;
use blindfold_relay::shell::udp::{FlushStats, RecvBatch, SendQueue, bind_reuseport};
use crossbeam_channel::{Receiver, Sender, TrySendError};
use mio::{Events, Interest, Poll, Token, Waker};

// ----- metrics names -------------------------------------------------------------------

/// Drops the shell counts itself, after the engine's [`DropReason`]s.
const SHELL_DROPS: [&str; 5] = [
    "recv_truncated",
    "send_buffer_full",
    "send_error",
    "peer_queue_full",
    "notify_queue_full",
];
const RECV_TRUNCATED: usize = DropReason::COUNT;
const SEND_FULL: usize = DropReason::COUNT + 1;
const SEND_ERROR: usize = DropReason::COUNT + 2;
const PEER_QUEUE_FULL: usize = DropReason::COUNT + 3;
const NOTIFY_QUEUE_FULL: usize = DropReason::COUNT + 4;
const DROPS: usize = DropReason::COUNT + SHELL_DROPS.len();

static SESSIONS: Labels<3> = Labels {
    metric: "blindfold_sessions",
    help: "Sessions by state: configured (counted once, not per worker), connecting and connected (on their home worker).",
    label: "state",
    values: ["configured", "connecting", "connected"],
};

type RelayMetrics = Metrics<DROPS, 3>;
type OneWorker = WorkerMetrics<DROPS, 3>;

fn drop_labels() -> &'static Labels<DROPS> {
    let values = std::array::from_fn(|i| match DropReason::ALL.get(i) {
        Some(r) => r.name(),
        None => SHELL_DROPS[i - DropReason::COUNT],
    });
    // Built once at start; the metrics need a `'static` name table.
    Box::leak(Box::new(Labels {
        metric: "blindfold_drops_total",
        help: "Datagrams dropped, by reason.",
        label: "reason",
        values,
    }))
}

// ----- tuning --------------------------------------------------------------------------

/// Datagrams per `recvmmsg`.
const RECV_BATCH: usize = 64;
/// Datagrams per `sendmmsg` (a fan-out of one batch to a large conference).
const SEND_QUEUE: usize = 512;
/// Owned slots for engine-written datagrams per `sendmmsg`.
const SEND_OWNED: usize = 128;
/// `recvmmsg` rounds per wake-up before commands and timers get a turn.
const RECV_ROUNDS: usize = 16;
/// Commands handled per loop before datagrams get a turn again.
const COMMANDS_PER_LOOP: usize = 4096;
/// Capacity of each worker's command channel (rules and peer messages).
const COMMAND_CHANNEL: usize = 16 * 1024;
/// Capacity of the notification channel to the control thread.
const NOTIFY_CHANNEL: usize = 64 * 1024;
/// How often a worker publishes its engine's counters.
const PUBLISH_EVERY: Duration = Duration::from_millis(100);
/// How long the control thread waits for room in a wedged worker's channel.
const COMMAND_SEND_TIMEOUT: Duration = Duration::from_secs(5);
/// Unsent output to a signaling client that stopped reading, before we hang up.
const MAX_CONTROL_BACKLOG: usize = 64 << 20;

const SOCKET: Token = Token(0);
const WAKER: Token = Token(1);
const LISTENER: Token = Token(2);
const CLIENT: Token = Token(3);

fn main() -> ExitCode {
    let config = match Config::load(std::env::args_os()) {
        Ok(c) => c,
        Err(ConfigError::Args(e)) => e.exit(),
        Err(e) => {
            eprintln!("blindfold-relay: {e}");
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::from(config.log_level))
        .with_writer(io::stderr)
        .init();
    match run(&config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// A start-up or fatal error, with what was being done.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {source}")]
struct Fatal {
    what: String,
    source: Box<dyn std::error::Error + Send + Sync>,
}

fn fatal<E: Into<Box<dyn std::error::Error + Send + Sync>>>(
    what: impl Into<String>,
) -> impl FnOnce(E) -> Fatal {
    let what = what.into();
    move |e| Fatal {
        what,
        source: e.into(),
    }
}

fn run(config: &Config) -> Result<(), Fatal> {
    // The control socket first: before any other thread exists (the umask is per
    // process) and so a second relay on the same path fails before binding UDP.
    let listener = bind_control_socket(&config.control_socket)?;
    let shutdown = Shutdown::install().map_err(fatal("installing signal handlers"))?;

    let cert = match &config.tls {
        Some(files) => {
            let cert = std::fs::read_to_string(&files.cert)
                .map_err(fatal(format!("reading {}", files.cert.display())))?;
            let key = std::fs::read_to_string(&files.key)
                .map_err(fatal(format!("reading {}", files.key.display())))?;
            DtlsCert::from_pem(&cert, &key).map_err(fatal("loading the DTLS certificate"))?
        }
        None => DtlsCert::generate().map_err(fatal("generating a DTLS certificate"))?,
    };
    let fingerprint = cert.fingerprint();
    tracing::info!(%fingerprint, generated = config.tls.is_none(), "DTLS certificate");
    let mut settings = DtlsSettings::default();
    if let Some(seed) = config.rng_seed {
        tracing::warn!(
            seed,
            "rng_seed is set: DTLS randoms and hashing are predictable (tests only)"
        );
        settings.insecure_rng_seed = Some(seed);
    }
    let dtls = Arc::new(DtlsConfig::new(settings).map_err(fatal("building the DTLS config"))?);
    let cert = Arc::new(cert);
    let hash_seed = config
        .rng_seed
        .unwrap_or_else(|| RandomState::new().hash_one(0x5eed_u64));

    let workers = config.workers.get();
    let metrics = RelayMetrics::new(workers, drop_labels(), &SESSIONS);
    let metrics_server = match config.metrics {
        Some(addr) => {
            let m = Arc::clone(&metrics);
            let server = MetricsServer::spawn(addr, move |out| m.render(out, true))
                .map_err(fatal(format!("serving metrics on {addr}")))?;
            tracing::info!(addr = %server.local_addr(), "metrics on GET /metrics");
            Some(server)
        }
        None => None,
    };

    // Bind every worker's socket before starting any, so a bad address fails start-up.
    // With port 0, the first socket picks the port and the others share it.
    let mut listen = config.listen;
    let mut sockets = Vec::with_capacity(workers);
    for _ in 0..workers {
        let s = bind_reuseport(listen, config.recv_buffer, config.send_buffer)
            .map_err(fatal(format!("binding UDP {listen}")))?;
        listen = s.local_addr().map_err(fatal("reading the UDP address"))?;
        sockets.push(s);
    }
    tracing::info!(%listen, workers, public = ?config.public, "media socket");

    let (notify_tx, notify_rx) = crossbeam_channel::bounded(NOTIFY_CHANNEL);
    let control_poll = Poll::new().map_err(fatal("creating the control poll"))?;
    let control_waker = Arc::new(
        Waker::new(control_poll.registry(), WAKER).map_err(fatal("creating the control waker"))?,
    );
    shutdown.add_waker(Arc::clone(&control_waker));

    let mut polls = Vec::with_capacity(workers);
    let mut links = Vec::with_capacity(workers);
    let mut inboxes = Vec::with_capacity(workers);
    for _ in 0..workers {
        let poll = Poll::new().map_err(fatal("creating a worker poll"))?;
        let waker =
            Arc::new(Waker::new(poll.registry(), WAKER).map_err(fatal("creating a worker waker"))?);
        shutdown.add_waker(Arc::clone(&waker));
        let (tx, rx) = crossbeam_channel::bounded(COMMAND_CHANNEL);
        polls.push(poll);
        links.push(Link { tx, waker });
        inboxes.push(rx);
    }

    let mut threads: Vec<JoinHandle<()>> = Vec::with_capacity(workers);
    for (i, ((socket, poll), inbox)) in sockets.into_iter().zip(polls).zip(inboxes).enumerate() {
        let mut engine_cfg = EngineConfig::new(ShardId(i as u16), cert.clone(), dtls.clone());
        engine_cfg.hash_seed = hash_seed;
        engine_cfg.silence_timeout = config.consent_timeout;
        let worker = Worker {
            index: i,
            engine: Engine::new(engine_cfg),
            socket: mio::net::UdpSocket::from_std(socket),
            poll,
            inbox,
            peers: links.clone(),
            wake: vec![false; workers],
            notify: notify_tx.clone(),
            control_waker: Arc::clone(&control_waker),
            metrics: Arc::clone(&metrics),
            shutdown: shutdown.clone(),
            published: EngineStats::default(),
        };
        let thread = std::thread::Builder::new()
            .name(format!("worker-{i}"))
            .spawn(move || worker.run())
            .map_err(fatal("spawning a worker"))?;
        threads.push(thread);
    }
    drop(notify_tx);

    let mut candidates = config.public.clone();
    if candidates.len() > MAX_CANDIDATES {
        tracing::warn!(
            "{} public addresses; the hello carries the first {MAX_CANDIDATES}",
            candidates.len()
        );
        candidates.truncate(MAX_CANDIDATES);
    }
    let hello = Hello::relay(
        format!("blindfold-relay/{}", env!("CARGO_PKG_VERSION")),
        fingerprint,
        candidates,
    );
    let control = ControlLoop {
        poll: control_poll,
        listener,
        conn: None,
        registry: Registry::new(),
        workers: links,
        notifications: notify_rx,
        hello,
        metrics: Arc::clone(&metrics),
        shutdown: shutdown.clone(),
        read_buf: vec![0u8; 64 * 1024],
    };
    let result = control.run();
    // Whatever ended the control loop ends the workers too.
    shutdown.trigger();
    let _ = std::fs::remove_file(&config.control_socket);
    let mut worker_failed = false;
    for t in threads {
        worker_failed |= t.join().is_err();
    }
    drop(metrics_server);
    result?;
    if worker_failed {
        return Err(Fatal {
            what: "a worker".into(),
            source: "panicked".into(),
        });
    }
    tracing::info!("stopped");
    Ok(())
}

/// Binds the control socket at `path` with mode 0600, replacing a stale socket file a
/// previous relay left behind (but not a live one, nor a file that is not a socket).
fn bind_control_socket(path: &Path) -> Result<mio::net::UnixListener, Fatal> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(Fatal {
                    what: format!("control socket {}", path.display()),
                    source: "another process is listening on it".into(),
                });
            }
            std::fs::remove_file(path)
                .map_err(fatal(format!("removing stale {}", path.display())))?;
        }
        Ok(_) => {
            return Err(Fatal {
                what: format!("control socket {}", path.display()),
                source: "the path exists and is not a socket".into(),
            });
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(fatal(format!("inspecting {}", path.display()))(e)),
    }
    // SAFETY: `umask` only swaps the process's file-mode mask; no other thread creates
    // files yet. The socket is created 0600 rather than chmod-ed after the fact, so
    // there is no window in which another user could connect.
    let old = unsafe { libc::umask(0o177) };
    let bound = std::os::unix::net::UnixListener::bind(path);
    // SAFETY: as above; restores the previous mask.
    unsafe { libc::umask(old) };
    let listener = bound.map_err(fatal(format!("binding {}", path.display())))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(fatal(format!("chmod 0600 {}", path.display())))?;
    listener
        .set_nonblocking(true)
        .map_err(fatal("making the control socket non-blocking"))?;
    tracing::info!(path = %path.display(), "control socket");
    Ok(mio::net::UnixListener::from_std(listener))
}

// ----- workers -------------------------------------------------------------------------

/// What a worker tells the control thread.
enum Report {
    /// A notification for signaling.
    Note(NotificationBody),
    /// The relay closed this session on its own: forget it everywhere.
    Ended(blindfold_relay::control::SessionSpec),
}

/// The way into one worker: its command channel and the waker of its poll.
#[derive(Clone)]
struct Link {
    tx: Sender<Command>,
    waker: Arc<Waker>,
}

struct Worker {
    index: usize,
    engine: Engine,
    socket: mio::net::UdpSocket,
    poll: Poll,
    inbox: Receiver<Command>,
    /// Every worker's link, this one's included (never used to send to itself).
    peers: Vec<Link>,
    /// Which peers were sent something since the last wake-up round.
    wake: Vec<bool>,
    notify: Sender<Report>,
    control_waker: Arc<Waker>,
    metrics: Arc<RelayMetrics>,
    shutdown: Shutdown,
    /// The engine's counters as last published (metrics take deltas).
    published: EngineStats,
}

/// Stops the whole process if a worker panics, rather than running on without it.
struct PanicGuard(Shutdown);

impl Drop for PanicGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            tracing::error!("a worker panicked; shutting down");
            self.0.trigger();
        }
    }
}

impl Worker {
    fn metrics(&self) -> &OneWorker {
        self.metrics
            .worker(self.index)
            .expect("one metrics block per worker")
    }

    fn run(mut self) {
        let _guard = PanicGuard(self.shutdown.clone());
        if let Err(e) = self
            .poll
            .registry()
            .register(&mut self.socket, SOCKET, Interest::READABLE)
        {
            tracing::error!(worker = self.index, error = %e, "registering the socket");
            self.shutdown.trigger();
            return;
        }
        let mut rx = RecvBatch::new(RECV_BATCH);
        let mut tx = SendQueue::new(SEND_QUEUE, SEND_OWNED);
        let mut events = Events::with_capacity(16);
        let mut next_publish = Instant::now();
        let mut backlog = false;
        loop {
            let now = Instant::now();
            let mut timeout = next_publish.saturating_duration_since(now);
            if let Some(t) = self.engine.poll_timeout() {
                timeout = timeout.min(t.saturating_duration_since(now));
            }
            if backlog || !self.inbox.is_empty() {
                timeout = Duration::ZERO;
            }
            if let Err(e) = self.poll.poll(&mut events, Some(timeout))
                && e.kind() != io::ErrorKind::Interrupted
            {
                tracing::error!(worker = self.index, error = %e, "poll failed");
                self.shutdown.trigger();
                break;
            }
            if self.shutdown.is_set() {
                break;
            }
            let now = Instant::now();
            // Receive whatever is waiting, whichever token fired: with edge-triggered
            // readiness the socket must be drained, and an empty try is one syscall.
            backlog = self.receive(now, &mut rx, &mut tx);
            for k in 0..COMMANDS_PER_LOOP {
                let Ok(cmd) = self.inbox.try_recv() else {
                    break;
                };
                if !matches!(cmd, Command::Peer(_)) {
                    self.metrics().control_messages.inc();
                }
                self.engine.handle_command(now, cmd);
                // Peer RTCP makes datagrams: keep the engine's queue from filling.
                if k % 256 == 255 {
                    self.send_engine_output(&mut tx);
                }
            }
            if self.engine.poll_timeout().is_some_and(|t| t <= now) {
                self.engine.handle_timeout(now);
            }
            self.send_engine_output(&mut tx);
            self.dispatch_events();
            if now >= next_publish {
                self.publish();
                next_publish = now + PUBLISH_EVERY;
            }
        }
        self.publish();
        tracing::debug!(worker = self.index, "stopped");
    }

    /// Receives and handles datagrams until the socket would block or `RECV_ROUNDS`
    /// batches were handled; returns whether more may be waiting.
    fn receive(&mut self, now: Instant, rx: &mut RecvBatch, tx: &mut SendQueue) -> bool {
        for _ in 0..RECV_ROUNDS {
            let n = match rx.recv(&self.socket) {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(worker = self.index, error = %e, "recvmmsg failed");
                    return false;
                }
            };
            if n == 0 {
                return false;
            }
            let Worker {
                engine,
                socket,
                metrics,
                index,
                ..
            } = self;
            let m = metrics
                .worker(*index)
                .expect("one metrics block per worker");
            m.packets_in.add(n as u64);
            m.drops.add(RECV_TRUNCATED, rx.dropped() as u64);
            let mut bytes = 0u64;
            let mut batch = tx.batch(socket.as_fd());
            for (from, buf) in rx.iter_mut() {
                bytes += buf.len() as u64;
                if let Handled::Forward(dests) = engine.handle_datagram(now, from, &mut *buf) {
                    // Zero copy: every destination's message points at the receive buffer.
                    let buf: &[u8] = buf;
                    batch.push_fanout(buf, dests);
                }
                while let Some(t) = engine.poll_transmit() {
                    let _ = batch.push_owned(t.data, t.dest);
                }
            }
            m.bytes_in.add(bytes);
            let flushed = batch.flush();
            drop(batch);
            record_flush(m, flushed, *index);
            self.dispatch_events();
        }
        true
    }

    /// Sends what the engine wrote (STUN answers, DTLS flights, RTCP).
    fn send_engine_output(&mut self, tx: &mut SendQueue) {
        let Worker {
            engine,
            socket,
            metrics,
            index,
            ..
        } = self;
        let mut batch = tx.batch(socket.as_fd());
        while let Some(t) = engine.poll_transmit() {
            let _ = batch.push_owned(t.data, t.dest);
        }
        if batch.is_empty() {
            return;
        }
        let flushed = batch.flush();
        drop(batch);
        let m = metrics
            .worker(*index)
            .expect("one metrics block per worker");
        record_flush(m, flushed, *index);
    }

    /// Hands the engine's events on: notifications to the control thread, messages to
    /// the other workers. Never blocks: a full channel is a counted drop.
    fn dispatch_events(&mut self) {
        let mut wake_control = false;
        while let Some(ev) = self.engine.poll_event() {
            match ev {
                Event::Ended(spec) => match self.notify.try_send(Report::Ended(spec)) {
                    Ok(()) => wake_control = true,
                    Err(TrySendError::Full(_)) => {
                        self.metrics().drops.add(NOTIFY_QUEUE_FULL, 1);
                    }
                    Err(TrySendError::Disconnected(_)) => {}
                },
                Event::Notify(note) => match self.notify.try_send(Report::Note(note)) {
                    Ok(()) => wake_control = true,
                    Err(TrySendError::Full(_)) => {
                        self.metrics().drops.add(NOTIFY_QUEUE_FULL, 1);
                    }
                    Err(TrySendError::Disconnected(_)) => {}
                },
                Event::Peer(PeerDest::Shard(ShardId(s)), msg) => {
                    let j = usize::from(s);
                    if j != self.index && j < self.peers.len() {
                        self.send_peer(j, msg);
                    }
                }
                Event::Peer(PeerDest::All, msg) => {
                    for j in 0..self.peers.len() {
                        if j != self.index {
                            self.send_peer(j, msg.clone());
                        }
                    }
                }
            }
        }
        for (j, wake) in self.wake.iter_mut().enumerate() {
            if std::mem::take(wake)
                && let Err(e) = self.peers[j].waker.wake()
            {
                tracing::warn!(worker = self.index, peer = j, error = %e, "wake failed");
            }
        }
        if wake_control && let Err(e) = self.control_waker.wake() {
            tracing::warn!(worker = self.index, error = %e, "waking control failed");
        }
    }

    fn send_peer(&mut self, j: usize, msg: blindfold_relay::engine::PeerMsg) {
        match self.peers[j].tx.try_send(Command::Peer(msg)) {
            Ok(()) => self.wake[j] = true,
            Err(TrySendError::Full(_)) => self.metrics().drops.add(PEER_QUEUE_FULL, 1),
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    /// Publishes the engine's counters (deltas since the last time) and session gauges.
    fn publish(&mut self) {
        let st = self.engine.stats().clone();
        let counts = self.engine.session_counts();
        let m = self.metrics();
        for (k, (now, before)) in st.drops.iter().zip(&self.published.drops).enumerate() {
            let d = now.saturating_sub(*before);
            if d > 0 {
                m.drops.add(k, d);
            }
        }
        m.dtls_handshakes
            .add(st.dtls_handshakes_ok - self.published.dtls_handshakes_ok);
        m.dtls_failures
            .add(st.dtls_handshakes_failed - self.published.dtls_handshakes_failed);
        // Every worker knows every session: only worker 0 reports them as configured.
        let configured = if self.index == 0 {
            counts.configured
        } else {
            0
        };
        m.sessions.set(0, configured as i64);
        m.sessions.set(1, counts.connecting as i64);
        m.sessions.set(2, counts.connected as i64);
        self.published = st;
    }
}

fn record_flush(m: &OneWorker, flushed: io::Result<FlushStats>, worker: usize) {
    match flushed {
        Ok(st) => {
            m.packets_out.add(st.sent);
            m.bytes_out.add(st.bytes);
            m.drops.add(SEND_FULL, st.dropped_full);
            m.drops.add(SEND_ERROR, st.dropped_error);
        }
        Err(e) => tracing::error!(worker, error = %e, "sendmmsg failed"),
    }
}

// ----- control socket ------------------------------------------------------------------

/// One signaling connection.
struct Conn {
    stream: mio::net::UnixStream,
    decoder: FrameDecoder,
    /// Encoded frames not yet written; `out[sent..]` is pending.
    out: Vec<u8>,
    sent: usize,
    /// The peer's hello arrived and was accepted.
    hello: bool,
    /// Say what is queued (a goodbye), then close.
    closing: bool,
}

impl Conn {
    fn queue(&mut self, msg: &Message) {
        if let Err(e) = control::encode(msg, &mut self.out) {
            tracing::error!(error = %e, "cannot encode a control message");
        }
        if self.out.len() - self.sent > MAX_CONTROL_BACKLOG {
            tracing::warn!("signaling is not reading its control socket; hanging up");
            self.out.clear();
            self.sent = 0;
            self.closing = true;
        }
    }

    fn close_with(&mut self, d: Disposition) {
        match d {
            Disposition::Reply(m) => self.queue(&m),
            Disposition::Close(m) => {
                if let Message::Goodbye(g) = &m {
                    tracing::warn!(code = ?g.code, message = %g.message, "closing the control connection");
                }
                self.queue(&m);
                self.closing = true;
            }
        }
    }

    /// Writes what is pending without blocking. Returns false if the connection broke.
    fn flush(&mut self) -> bool {
        while self.sent < self.out.len() {
            match self.stream.write(&self.out[self.sent..]) {
                Ok(0) => return false,
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        self.out.clear();
        self.sent = 0;
        true
    }
}

struct ControlLoop {
    poll: Poll,
    listener: mio::net::UnixListener,
    conn: Option<Conn>,
    registry: Registry,
    workers: Vec<Link>,
    notifications: Receiver<Report>,
    hello: Hello,
    metrics: Arc<RelayMetrics>,
    shutdown: Shutdown,
    read_buf: Vec<u8>,
}

impl ControlLoop {
    fn run(mut self) -> Result<(), Fatal> {
        self.poll
            .registry()
            .register(&mut self.listener, LISTENER, Interest::READABLE)
            .map_err(fatal("registering the control socket"))?;
        let mut events = Events::with_capacity(16);
        loop {
            if let Err(e) = self.poll.poll(&mut events, Some(Duration::from_secs(1)))
                && e.kind() != io::ErrorKind::Interrupted
            {
                return Err(fatal("polling the control socket")(e));
            }
            if self.shutdown.is_set() {
                if let Some(mut conn) = self.conn.take() {
                    conn.queue(&Message::Goodbye(Goodbye::new(
                        ErrorCode::Shutdown,
                        "the relay is stopping",
                    )));
                    let _ = conn.flush();
                }
                return Ok(());
            }
            let mut accept = false;
            for ev in events.iter() {
                match ev.token() {
                    LISTENER => accept = true,
                    CLIENT => self.service_client(),
                    _ => {}
                }
            }
            self.forward_notifications();
            if accept {
                self.accept();
            }
            self.flush_client();
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
            // A client that left (its EOF may be queued behind this connect) must not
            // count as the active one.
            self.service_client();
            if self.conn.is_some() {
                tracing::warn!("refusing a second signaling connection");
                let mut out = Vec::new();
                let bye = Message::Goodbye(Goodbye::new(
                    ErrorCode::ProtocolViolation,
                    "another signaling connection is active; one at a time",
                ));
                if control::encode(&bye, &mut out).is_ok() {
                    // Best effort, non-blocking: a small frame fits the socket buffer.
                    let _ = stream.write(&out);
                }
                continue;
            }
            if let Err(e) = self.poll.registry().register(
                &mut stream,
                CLIENT,
                Interest::READABLE | Interest::WRITABLE,
            ) {
                tracing::warn!(error = %e, "registering a control connection");
                continue;
            }
            tracing::info!("signaling connected");
            let mut conn = Conn {
                stream,
                decoder: FrameDecoder::new(),
                out: Vec::new(),
                sent: 0,
                hello: false,
                closing: false,
            };
            // Each side sends its hello first, without waiting for the other's.
            conn.queue(&Message::Hello(self.hello.clone()));
            self.conn = Some(conn);
        }
    }

    /// Reads and handles everything the client sent; notices it leaving.
    fn service_client(&mut self) {
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        let mut alive = true;
        while alive && !conn.closing {
            match conn.stream.read(&mut self.read_buf) {
                Ok(0) => {
                    if let Err(e) = conn.decoder.finish() {
                        tracing::warn!(error = %e, "signaling hung up mid-frame");
                    }
                    alive = false;
                }
                Ok(n) => {
                    let data = std::mem::take(&mut self.read_buf);
                    self.feed(&mut conn, &data[..n]);
                    self.read_buf = data;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // A client that exits without reading what we sent it resets the
                // connection: a hang-up, not a fault.
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                    tracing::info!("signaling hung up (connection reset)");
                    alive = false;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "reading the control socket");
                    alive = false;
                }
            }
        }
        if alive {
            self.conn = Some(conn);
        } else {
            let _ = self.poll.registry().deregister(&mut conn.stream);
            tracing::info!("signaling disconnected; sessions keep running");
        }
    }

    fn feed(&mut self, conn: &mut Conn, mut input: &[u8]) {
        while !input.is_empty() && !conn.closing {
            let used = conn.decoder.push(input);
            input = input.get(used..).unwrap_or_default();
            loop {
                match conn.decoder.next_frame() {
                    Ok(Some(frame)) => self.handle_frame(conn, &frame),
                    Ok(None) => break,
                    Err(e) => conn.close_with(e.disposition()),
                }
                if conn.closing {
                    return;
                }
            }
        }
    }

    fn handle_frame(&mut self, conn: &mut Conn, frame: &[u8]) {
        let msg = match control::decode(frame) {
            Ok(m) => m,
            Err(e) => return conn.close_with(e.disposition()),
        };
        if let Err(e) = msg.check_order(Role::Relay, conn.hello) {
            return conn.close_with(e.disposition());
        }
        match msg {
            Message::Hello(peer) => match self.hello.negotiate(&peer) {
                Ok(minor) => {
                    tracing::info!(software = %peer.software, minor, "signaling hello");
                    conn.hello = true;
                }
                Err(e) => conn.close_with(e.disposition()),
            },
            Message::Request(req) => {
                let snapshot = matches!(req.body, RequestBody::Snapshot(_));
                let method = req.body.method();
                let (mut result, commands) = self.registry.apply(req.body);
                if let Ok(ResponseBody::Stats(stats)) = &mut result {
                    self.fill_stats(stats);
                }
                match &result {
                    Ok(_) => tracing::debug!(method, commands = commands.len(), "applied"),
                    Err(e) => {
                        tracing::info!(method, code = ?e.code, message = %e.message, "refused")
                    }
                }
                self.broadcast(commands);
                let ok = result.is_ok();
                conn.queue(&Message::Response(Response { id: req.id, result }));
                if snapshot && ok {
                    // Signaling may have missed notifications while away: tell it the
                    // true state.
                    for (session_id, addr) in self.registry.connected() {
                        conn.queue(&Message::Notification(NotificationBody::SessionConnected {
                            session_id: session_id.clone(),
                            addr,
                        }));
                    }
                }
            }
            Message::Goodbye(g) => {
                tracing::info!(code = ?g.code, message = %g.message, "signaling said goodbye");
                conn.closing = true;
            }
            // `check_order` refused these already.
            Message::Response(_) | Message::Notification(_) => {
                conn.close_with(
                    ControlError::ProtocolViolation {
                        reason: "message sent in the wrong direction".into(),
                    }
                    .disposition(),
                );
            }
        }
    }

    fn fill_stats(&self, stats: &mut control::StatsReport) {
        let ws = self.metrics.workers();
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
    }

    /// Sends every command to every worker, in order, then wakes them. Waits for room
    /// rather than lose a rule.
    fn broadcast(&self, commands: Vec<Command>) {
        if commands.is_empty() {
            return;
        }
        for cmd in commands {
            for (i, w) in self.workers.iter().enumerate() {
                match w.tx.try_send(cmd.clone()) {
                    Ok(()) => {}
                    Err(TrySendError::Full(cmd)) => {
                        let _ = w.waker.wake();
                        if w.tx.send_timeout(cmd, COMMAND_SEND_TIMEOUT).is_err() {
                            tracing::error!(worker = i, "worker is not taking commands");
                        }
                    }
                    Err(TrySendError::Disconnected(_)) => {}
                }
            }
        }
        for w in &self.workers {
            let _ = w.waker.wake();
        }
    }

    fn forward_notifications(&mut self) {
        while let Ok(report) = self.notifications.try_recv() {
            let note = match report {
                Report::Note(note) => note,
                Report::Ended(spec) => {
                    let commands = self.registry.observe_ended(&spec);
                    self.broadcast(commands);
                    continue;
                }
            };
            self.registry.observe(&note);
            tracing::debug!(event = note.event(), "notification");
            if let Some(conn) = self.conn.as_mut().filter(|c| c.hello && !c.closing) {
                conn.queue(&Message::Notification(note));
            }
        }
    }

    fn flush_client(&mut self) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        let ok = conn.flush();
        if !ok || conn.closing {
            // A closing connection gets one best-effort write of its goodbye.
            let mut conn = self.conn.take().expect("checked above");
            let _ = self.poll.registry().deregister(&mut conn.stream);
            let _ = conn.stream.shutdown(std::net::Shutdown::Both);
            tracing::info!("control connection closed; sessions keep running");
        }
    }
}
