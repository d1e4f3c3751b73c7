//! One worker thread: its `SO_REUSEPORT` socket, its [`Engine`], and the mio loop
//! that feeds one to the other.
//!
//! ```text
//! loop { poll(timeout = engine.poll_timeout(), next metrics publish)
//!        recvmmsg → engine.handle_datagram → Forward: push_fanout(receive buffer)
//!                                          → poll_transmit: push_owned → sendmmsg
//!        commands from the channel (rules, other workers' PeerMsgs) → handle_command;
//!          rules applied are counted in `applied` for the control thread
//!        handle_timeout when due; poll_event: Notify/Ended → control, Peer → workers
//!        every 100 ms: EngineStats → WorkerMetrics }
//! ```
//!
//! A worker never blocks. A message for another worker that its full channel cannot
//! take is a counted drop (`peer_queue_full`) if its sender repeats it anyway (RTCP,
//! rates: [`PeerMsg::must_arrive`] is false); the others — who owns a session, where
//! it receives, layer states — wait, in order, in the worker (up to
//! [`MAX_HELD_PEER_MESSAGES`] per peer, then dropped and counted the same), and so do
//! reports the control thread's full channel cannot take (up to [`MAX_HELD_REPORTS`],
//! then `notify_queue_full`). Both are retried every loop and at least every
//! [`HELD_RETRY`]. A panic in a worker stops the whole process ([`Worker::run`]'s
//! guard triggers the shutdown, and the binary exits non-zero): every worker knows
//! every session and may be the only one that can reach some of them, so the relay
//! must not run on with a dead one.

use std::collections::VecDeque;
use std::io;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use mio::{Events, Interest, Poll, Token, Waker};

use super::metrics::{Labels, Metrics, WorkerMetrics};
use super::signals::Shutdown;
use super::udp::{FlushStats, RecvBatch, SendQueue};
use crate::control::server::WorkerReport;
use crate::engine::{Command, DropReason, Engine, EngineStats, Event, Handled, PeerMsg};

// ----- metrics names -------------------------------------------------------------------

/// Datagrams (or messages) the shell drops itself; counted after the engine's
/// [`DropReason`]s in `blindfold_drops_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShellDrop {
    /// A datagram longer than the receive buffer (cut by the kernel).
    RecvTruncated,
    /// The socket's send buffer was full.
    SendBufferFull,
    /// `sendmmsg` refused a datagram.
    SendError,
    /// Another worker's channel was full (a cross-shard message lost).
    PeerQueueFull,
    /// The control thread's report channel was full (a notification lost).
    NotifyQueueFull,
}

impl ShellDrop {
    /// Every reason, in counter order.
    pub const ALL: [ShellDrop; 5] = [
        ShellDrop::RecvTruncated,
        ShellDrop::SendBufferFull,
        ShellDrop::SendError,
        ShellDrop::PeerQueueFull,
        ShellDrop::NotifyQueueFull,
    ];

    /// The metrics label.
    pub fn name(self) -> &'static str {
        match self {
            ShellDrop::RecvTruncated => "recv_truncated",
            ShellDrop::SendBufferFull => "send_buffer_full",
            ShellDrop::SendError => "send_error",
            ShellDrop::PeerQueueFull => "peer_queue_full",
            ShellDrop::NotifyQueueFull => "notify_queue_full",
        }
    }

    /// Its slot in the drop counters (after the engine's reasons).
    pub fn slot(self) -> usize {
        DropReason::COUNT + self as usize
    }
}

/// Every drop counter: the engine's reasons, then the shell's.
pub const DROPS: usize = DropReason::COUNT + ShellDrop::ALL.len();

/// Session gauges by state.
pub static SESSIONS: Labels<3> = Labels {
    metric: "blindfold_sessions",
    help: "Sessions by state: configured (counted once, not per worker), connecting and connected (on their home worker).",
    label: "state",
    values: ["configured", "connecting", "connected"],
};

/// The relay's metrics.
pub type RelayMetrics = Metrics<DROPS, 3>;

/// Number of engine counters exported besides drops and handshakes.
const ENGINE_COUNTERS: usize = EngineStats::EXPORTED;

/// The engine counters each worker exports besides drops and handshakes
/// ([`EngineStats::exported`]), as last published; rendered per worker.
#[derive(Debug)]
pub struct EngineCounters {
    workers: Box<[[AtomicU64; ENGINE_COUNTERS]]>,
}

impl EngineCounters {
    /// Zeroed counters for `workers` workers.
    pub fn new(workers: usize) -> Arc<Self> {
        Arc::new(EngineCounters {
            workers: (0..workers)
                .map(|_| std::array::from_fn(|_| AtomicU64::new(0)))
                .collect(),
        })
    }

    fn publish(&self, worker: usize, st: &EngineStats) {
        if let Some(w) = self.workers.get(worker) {
            for (c, (_, _, _, v)) in w.iter().zip(st.exported()) {
                c.store(v, Ordering::Relaxed);
            }
        }
    }

    /// Appends them in the Prometheus text format, one sample per worker.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write as _;
        let names = EngineStats::default().exported();
        let mut last = "";
        for (k, (name, label, help, _)) in names.iter().enumerate() {
            if *name != last {
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
                last = name;
            }
            for (i, w) in self.workers.iter().enumerate() {
                let v = w[k].load(Ordering::Relaxed);
                let sep = if label.is_empty() { "" } else { "," };
                let _ = writeln!(out, "{name}{{worker=\"{i}\"{sep}{label}}} {v}");
            }
        }
    }
}
type OneWorker = WorkerMetrics<DROPS, 3>;

/// The names of every drop counter (built once, at start).
pub fn drop_labels() -> &'static Labels<DROPS> {
    let values = std::array::from_fn(|i| match DropReason::ALL.get(i) {
        Some(r) => r.name(),
        None => ShellDrop::ALL[i - DropReason::COUNT].name(),
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
pub const COMMAND_CHANNEL: usize = 16 * 1024;
/// How often a worker publishes its engine's counters.
const PUBLISH_EVERY: Duration = Duration::from_millis(100);
/// Reports a worker keeps while the control thread's channel is full: a session's
/// end must reach signaling, or its session stays configured but dead.
pub const MAX_HELD_REPORTS: usize = 256 * 1024;
/// Messages another worker must get that a worker keeps per peer while that peer's
/// channel is full (at about a kilobyte each, 18 MiB per peer at most; the memory is
/// given back once they are sent).
pub const MAX_HELD_PEER_MESSAGES: usize = 16 * 1024;
/// How soon held reports and peer messages are offered again to a full channel.
pub const HELD_RETRY: Duration = Duration::from_millis(10);

const SOCKET: Token = Token(0);
/// The token of every poll's waker.
pub const WAKER: Token = Token(1);

/// The way into one worker: its command channel, the waker of its poll, and how many
/// control commands (not peer messages) it has applied.
#[derive(Clone)]
pub struct Link {
    /// Rules and peer messages.
    pub tx: Sender<Command>,
    /// Wakes its poll.
    pub waker: Arc<Waker>,
    /// Control commands applied so far (the control thread holds `ok` until this
    /// passes the request's commands).
    pub applied: Arc<AtomicU64>,
}

/// One worker; [`Worker::run`] is its thread.
pub struct Worker {
    index: usize,
    engine: Engine,
    socket: mio::net::UdpSocket,
    poll: Poll,
    inbox: Receiver<Command>,
    /// Every worker's link, this one's included (never used to send to itself).
    peers: Vec<Link>,
    /// Which peers were sent something since the last wake-up round.
    wake: Vec<bool>,
    notify: Sender<WorkerReport>,
    /// Reports waiting for room in `notify`.
    held: Held<WorkerReport>,
    /// Per peer, messages that must arrive waiting for room in its channel.
    peer_held: Vec<Held<Command>>,
    control_waker: Arc<Waker>,
    metrics: Arc<RelayMetrics>,
    engine_counters: Arc<EngineCounters>,
    shutdown: Shutdown,
    /// The engine's counters as last published (metrics take deltas).
    published: EngineStats,
}

/// What a worker is made of (see [`Worker::new`]).
pub struct WorkerParts {
    /// Its index (also its shard id).
    pub index: usize,
    /// Its engine.
    pub engine: Engine,
    /// Its socket.
    pub socket: std::net::UdpSocket,
    /// Its poll, with [`WAKER`] registered.
    pub poll: Poll,
    /// Its command channel's receiving end.
    pub inbox: Receiver<Command>,
    /// Every worker's link, its own included.
    pub peers: Vec<Link>,
    /// Reports to the control thread.
    pub notify: Sender<WorkerReport>,
    /// Wakes the control thread.
    pub control_waker: Arc<Waker>,
    /// The shared metrics.
    pub metrics: Arc<RelayMetrics>,
    /// The engine counters, shared with the metrics server.
    pub engine_counters: Arc<EngineCounters>,
    /// The shutdown flag.
    pub shutdown: Shutdown,
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
    /// A worker from its parts.
    pub fn new(p: WorkerParts) -> Self {
        let workers = p.peers.len();
        Worker {
            index: p.index,
            engine: p.engine,
            socket: mio::net::UdpSocket::from_std(p.socket),
            poll: p.poll,
            inbox: p.inbox,
            peers: p.peers,
            wake: vec![false; workers],
            notify: p.notify,
            held: Held::new(MAX_HELD_REPORTS),
            peer_held: (0..workers)
                .map(|_| Held::new(MAX_HELD_PEER_MESSAGES))
                .collect(),
            control_waker: p.control_waker,
            metrics: p.metrics,
            engine_counters: p.engine_counters,
            shutdown: p.shutdown,
            published: EngineStats::default(),
        }
    }

    fn metrics(&self) -> &OneWorker {
        self.metrics
            .worker(self.index)
            .expect("one metrics block per worker")
    }

    /// The worker's loop, until shutdown.
    pub fn run(mut self) {
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
            let timeout = self.wait(Instant::now(), next_publish, backlog);
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
            let mut rules = 0;
            for k in 0..COMMANDS_PER_LOOP {
                let Ok(cmd) = self.inbox.try_recv() else {
                    break;
                };
                if !matches!(cmd, Command::Peer(_)) {
                    rules += 1;
                }
                self.engine.handle_command(now, cmd);
                // Peer RTCP makes datagrams: keep the engine's queue from filling.
                if k % 256 == 255 {
                    self.send_engine_output(&mut tx);
                }
            }
            if rules > 0 {
                self.metrics().control_messages.add(rules);
                // Applied: the control thread may now answer the requests behind them.
                self.peers[self.index]
                    .applied
                    .fetch_add(rules, Ordering::Release);
                if let Err(e) = self.control_waker.wake() {
                    tracing::warn!(worker = self.index, error = %e, "waking control failed");
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
            m.drops
                .add(ShellDrop::RecvTruncated.slot(), rx.dropped() as u64);
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

    /// How long the loop may sleep in `poll` at `now`: until the next metrics publish,
    /// the engine's next deadline, or [`HELD_RETRY`] while messages are held; not at
    /// all with datagrams (`backlog`) or commands waiting.
    fn wait(&self, now: Instant, next_publish: Instant, backlog: bool) -> Duration {
        if backlog || !self.inbox.is_empty() {
            return Duration::ZERO;
        }
        let mut timeout = next_publish.saturating_duration_since(now);
        if let Some(t) = self.engine.poll_timeout() {
            timeout = timeout.min(t.saturating_duration_since(now));
        }
        if !self.held.is_empty() || self.peer_held.iter().any(|h| !h.is_empty()) {
            timeout = timeout.min(HELD_RETRY);
        }
        timeout
    }

    /// Hands the engine's events on: notifications to the control thread, messages to
    /// the other workers. Never blocks: what a full channel cannot take is held
    /// ([`Held`]) or, for a peer message its sender repeats anyway, a counted drop.
    fn dispatch_events(&mut self) {
        let mut wake_control = self.offer_held();
        for (j, held) in self.peer_held.iter_mut().enumerate() {
            if held.flush(&self.peers[j].tx) {
                self.wake[j] = true;
            }
        }
        while let Some(ev) = self.engine.poll_event() {
            match ev {
                Event::Ended(spec, reason) => {
                    wake_control |= self.report(WorkerReport::Ended(spec, reason))
                }
                Event::Session(ev) => wake_control |= self.report(WorkerReport::Session(ev)),
                Event::Peer(dest, msg) => {
                    let (from, shards) = (self.index, self.peers.len());
                    dest.route(from, shards, msg, |j, m| self.send_peer(j, m));
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

    /// Sends a report to the control thread (see [`Held::send`]); one beyond
    /// [`MAX_HELD_REPORTS`] is a counted drop. Returns whether it was sent (the
    /// control thread then needs waking).
    fn report(&mut self, report: WorkerReport) -> bool {
        match self.held.send(&self.notify, report) {
            Sent::Now => true,
            Sent::Held => false,
            Sent::Dropped => {
                let drop = ShellDrop::NotifyQueueFull.slot();
                self.metrics().drops.add(drop, 1);
                false
            }
            // The control thread is gone: the relay is stopping.
            Sent::Closed => false,
        }
    }

    /// Offers the held reports again; returns whether any was sent.
    fn offer_held(&mut self) -> bool {
        self.held.flush(&self.notify)
    }

    fn send_peer(&mut self, j: usize, msg: PeerMsg) {
        match send_peer(&self.peers[j].tx, &mut self.peer_held[j], msg) {
            Sent::Now => self.wake[j] = true,
            Sent::Held | Sent::Closed => {}
            Sent::Dropped => self.metrics().drops.add(ShellDrop::PeerQueueFull.slot(), 1),
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
        self.engine_counters.publish(self.index, &st);
        self.published = st;
    }
}

/// Messages for a bounded channel that was full, kept in order until it has room.
#[derive(Debug)]
struct Held<T> {
    queue: VecDeque<T>,
    cap: usize,
}

/// What [`Held::send`] did.
#[derive(Debug, PartialEq, Eq)]
enum Sent {
    Now,
    Held,
    /// Full, and `cap` held already.
    Dropped,
    /// The receiver is gone.
    Closed,
}

impl<T> Held<T> {
    fn new(cap: usize) -> Self {
        Held {
            queue: VecDeque::new(),
            cap,
        }
    }

    fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Sends `msg` on `tx` unless earlier ones wait (order is kept) or it is full: then
    /// holds it, or drops it if `cap` are held.
    fn send(&mut self, tx: &Sender<T>, msg: T) -> Sent {
        let msg = if self.queue.is_empty() {
            match tx.try_send(msg) {
                Ok(()) => return Sent::Now,
                Err(TrySendError::Full(m)) => m,
                Err(TrySendError::Disconnected(_)) => return Sent::Closed,
            }
        } else {
            msg
        };
        if self.queue.len() < self.cap {
            self.queue.push_back(msg);
            Sent::Held
        } else {
            Sent::Dropped
        }
    }

    /// Sends what `tx` has room for, oldest first; returns whether anything went. A
    /// backlog that cleared gives its memory back.
    fn flush(&mut self, tx: &Sender<T>) -> bool {
        let mut sent = false;
        while let Some(m) = self.queue.pop_front() {
            match tx.try_send(m) {
                Ok(()) => sent = true,
                Err(TrySendError::Full(m)) => {
                    self.queue.push_front(m);
                    break;
                }
                Err(TrySendError::Disconnected(_)) => self.queue.clear(),
            }
        }
        if self.queue.is_empty() && self.queue.capacity() > 0 {
            self.queue = VecDeque::new();
        }
        sent
    }
}

/// Sends `msg` to a peer's channel `tx`. One that must arrive waits in `held` (in order)
/// while the channel is full; any other is dropped then — and also while messages that
/// must arrive wait, which go first.
fn send_peer(tx: &Sender<Command>, held: &mut Held<Command>, msg: PeerMsg) -> Sent {
    if msg.must_arrive() {
        return held.send(tx, Command::Peer(msg));
    }
    if !held.is_empty() {
        return Sent::Dropped;
    }
    match tx.try_send(Command::Peer(msg)) {
        Ok(()) => Sent::Now,
        Err(TrySendError::Full(_)) => Sent::Dropped,
        Err(TrySendError::Disconnected(_)) => Sent::Closed,
    }
}

fn record_flush(m: &OneWorker, flushed: io::Result<FlushStats>, worker: usize) {
    match flushed {
        Ok(st) => {
            m.packets_out.add(st.sent);
            m.bytes_out.add(st.bytes);
            m.drops
                .add(ShellDrop::SendBufferFull.slot(), st.dropped_full);
            m.drops.add(ShellDrop::SendError.slot(), st.dropped_error);
        }
        Err(e) => tracing::error!(worker, error = %e, "sendmmsg failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{SessionHandle, SessionName, ShardId};

    /// The session the test messages are about.
    const KEY: SessionHandle = SessionHandle {
        slot: 1,
        incarnation: 1,
    };

    /// A message another worker must get: session `KEY` is claimed by shard `n`.
    fn claimed(n: u16) -> PeerMsg {
        PeerMsg::Claimed {
            session: SessionName::new("s"),
            identity: 0,
            shard: ShardId(n),
            key: KEY,
        }
    }

    #[test]
    fn reports_a_full_channel_cannot_take_wait_in_order() {
        let (tx, rx) = crossbeam_channel::bounded(2);
        let mut held = Held::new(3);
        let sent: Vec<Sent> = (0..6).map(|i| held.send(&tx, i)).collect();
        // Two fit, three wait, the sixth is beyond the bound.
        use Sent::{Dropped, Held as Waits, Now};
        assert_eq!(sent, [Now, Now, Waits, Waits, Waits, Dropped]);
        assert_eq!(rx.try_recv(), Ok(0));
        // Room for one: the oldest held goes, and a new report waits behind the rest.
        assert!(held.flush(&tx));
        assert_eq!(held.send(&tx, 6), Waits);
        let mut got: Vec<i32> = rx.try_iter().collect();
        assert_eq!(got, [1, 2]);
        while !held.is_empty() {
            assert!(held.flush(&tx));
            got.extend(rx.try_iter());
        }
        assert_eq!(got, [1, 2, 3, 4, 6]);
        drop(rx);
        assert_eq!(held.send(&tx, 7), Sent::Closed);
    }

    #[test]
    fn peer_messages_that_must_arrive_wait_and_the_others_give_way() {
        let alive = || PeerMsg::Alive { session: KEY };
        let (tx, rx) = crossbeam_channel::bounded(2);
        let mut held = Held::new(2);
        use Sent::{Dropped, Held as Waits, Now};
        // The channel fills; a repeatable message is dropped, a state message waits.
        assert_eq!(send_peer(&tx, &mut held, alive()), Now);
        assert_eq!(send_peer(&tx, &mut held, claimed(1)), Now);
        assert_eq!(send_peer(&tx, &mut held, alive()), Dropped);
        assert_eq!(send_peer(&tx, &mut held, claimed(2)), Waits);
        // With room again, a repeatable message still gives way to the waiting one...
        rx.try_recv().unwrap();
        assert_eq!(send_peer(&tx, &mut held, alive()), Dropped);
        // ...which goes first at the next flush, in order with those after it.
        assert_eq!(send_peer(&tx, &mut held, claimed(3)), Waits);
        assert_eq!(
            send_peer(&tx, &mut held, claimed(4)),
            Dropped,
            "beyond the bound"
        );
        assert!(held.flush(&tx));
        rx.try_recv().unwrap();
        assert!(held.flush(&tx));
        let shards: Vec<u16> = rx
            .try_iter()
            .map(|c| match c {
                Command::Peer(PeerMsg::Claimed { shard, .. }) => shard.0,
                _ => panic!("only state messages were kept"),
            })
            .collect();
        assert_eq!(shards, [2, 3]);
        assert!(held.is_empty());
        assert_eq!(send_peer(&tx, &mut held, alive()), Now);
    }

    /// Worker 0 of two, peer 1's channel holding at most `capacity` commands: the
    /// worker, and peer 1's end of its channel.
    fn worker_and_peer(capacity: usize) -> (Worker, Receiver<Command>) {
        use crate::dtls::{DtlsCert, DtlsConfig, DtlsSettings};
        use crate::engine::EngineConfig;
        let cert = Arc::new(DtlsCert::generate().unwrap());
        let dtls = Arc::new(DtlsConfig::new(DtlsSettings::default()).unwrap());
        let poll = Poll::new().unwrap();
        let control_waker = Arc::new(Waker::new(poll.registry(), WAKER).unwrap());
        let mut inboxes = Vec::new();
        let peers = [COMMAND_CHANNEL, capacity].map(|cap| {
            let (tx, rx) = crossbeam_channel::bounded(cap);
            inboxes.push(rx);
            Link {
                tx,
                waker: Arc::clone(&control_waker),
                applied: Arc::new(AtomicU64::new(0)),
            }
        });
        let peer_inbox = inboxes.pop().unwrap();
        let worker = Worker::new(WorkerParts {
            index: 0,
            engine: Engine::new(EngineConfig::new(ShardId(0), cert, dtls)),
            socket: std::net::UdpSocket::bind("127.0.0.1:0").unwrap(),
            poll: Poll::new().unwrap(),
            inbox: inboxes.pop().unwrap(),
            peers: peers.to_vec(),
            notify: crossbeam_channel::bounded(16).0,
            control_waker,
            metrics: RelayMetrics::new(2, drop_labels(), &SESSIONS),
            engine_counters: EngineCounters::new(2),
            shutdown: Shutdown::new(),
        });
        (worker, peer_inbox)
    }

    #[test]
    fn a_worker_retries_held_peer_messages_soon_and_passes_them_on_in_order() {
        let (mut w, peer) = worker_and_peer(1);
        let now = Instant::now();
        let publish = now + Duration::from_secs(1);
        assert_eq!(w.wait(now, publish, false), Duration::from_secs(1));
        // Peer 1's channel is full: what must arrive waits, and the loop comes back
        // for it within HELD_RETRY.
        let alive = Command::Peer(PeerMsg::Alive { session: KEY });
        w.peers[1].tx.try_send(alive).unwrap();
        for n in 1..=3 {
            w.send_peer(1, claimed(n));
        }
        assert_eq!(w.wait(now, publish, false), HELD_RETRY);
        // Each turn of the loop passes on what the channel has room for, in order.
        let mut got = Vec::new();
        for _ in 0..4 {
            w.dispatch_events();
            got.extend(peer.try_iter().filter_map(|c| match c {
                Command::Peer(PeerMsg::Claimed { shard, .. }) => Some(shard.0),
                _ => None,
            }));
        }
        assert_eq!(got, [1, 2, 3]);
        assert_eq!(w.wait(now, publish, false), Duration::from_secs(1));
        assert_eq!(w.metrics().drops.get(ShellDrop::PeerQueueFull.slot()), 0);
    }

    #[test]
    fn a_panicking_worker_stops_the_whole_relay() {
        // The policy (module docs): a worker that dies takes the process down, because
        // the sessions it owns would otherwise hang with nobody to run them.
        let shutdown = Shutdown::new();
        let guard = PanicGuard(shutdown.clone());
        let worker = std::thread::spawn(move || {
            let _guard = guard;
            panic!("a bug in a worker");
        });
        assert!(worker.join().is_err());
        assert!(shutdown.is_set(), "the shutdown was triggered");

        // A worker that returns normally triggers nothing.
        let shutdown = Shutdown::new();
        let guard = PanicGuard(shutdown.clone());
        std::thread::spawn(move || drop(guard)).join().unwrap();
        assert!(!shutdown.is_set());
    }
}
