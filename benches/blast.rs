//! The raw load side of the baseline: counting sinks and a paced `sendmmsg` blaster.
//!
//! [`Sinks`] binds N UDP sockets and counts what arrives on each, on one thread with a
//! mio loop (so many sinks cost one core's worth of scheduling, not N threads).
//! [`blast`] offers a fixed packet rate to one target from several source sockets (so
//! an `SO_REUSEPORT` forwarder spreads them across its workers), in small bursts: each
//! burst is one `sendmmsg` of the same payload bytes queued once per packet.
//!
//! One-way latency: the blaster writes each burst's send time into the payload's first
//! 8 bytes (nanoseconds since [`epoch`], plus one, little-endian) just before its
//! `sendmmsg`, and the sinks subtract it from the time their `recvmmsg` returned. Both
//! run in one process on one clock. Datagrams shorter than 8 bytes, or stamped 0 (the
//! readiness probes), are counted but not timed.

// A load generator is IO, not an engine: it reads the clock to pace itself.
#![allow(clippy::disallowed_methods)]

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use blindfold_client::measure::LatencyHistogram;
use blindfold_relay::shell::udp::{RecvBatch, SendQueue, bind_reuseport};
use mio::{Events, Interest, Poll, Token};

/// The sinks' receive buffer: large, so a sink that is scheduled late does not drop.
pub const SINK_BUFFER: usize = 8 << 20;

/// The origin of the send-time stamps: the first call's instant, the same for every
/// thread of the process.
pub fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// The stamp for `t`: nanoseconds since [`epoch`] plus one (0 means "not stamped").
fn stamp(t: Instant) -> u64 {
    u64::try_from(t.saturating_duration_since(epoch()).as_nanos())
        .unwrap_or(u64::MAX - 1)
        .saturating_add(1)
}

/// The one-way latency of a datagram read at `now`, if it carries a stamp.
fn latency_of(datagram: &[u8], now: u64) -> Option<u64> {
    let sent = u64::from_le_bytes(datagram.get(..8)?.try_into().ok()?);
    (sent != 0).then(|| now.saturating_sub(sent))
}

/// N receiving sockets and the thread that counts datagrams on each.
#[derive(Debug)]
pub struct Sinks {
    addrs: Vec<SocketAddr>,
    counts: Arc<[AtomicU64]>,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<io::Result<LatencyHistogram>>,
}

/// What the sinks saw, from [`Sinks::stop`].
#[derive(Debug, Clone)]
pub struct SinkTotals {
    /// Datagrams received on each sink, in the order of the ports.
    pub counts: Vec<u64>,
    /// One-way latency of every stamped datagram, all sinks.
    pub latency: LatencyHistogram,
}

impl Sinks {
    /// Binds one sink per entry of `ports` on `ip` (a port of 0 picks a free one) and
    /// starts counting.
    ///
    /// # Errors
    /// Binding a socket or creating the poll failed.
    pub fn bind(ip: IpAddr, ports: &[u16]) -> io::Result<Self> {
        let mut sockets = Vec::with_capacity(ports.len());
        let mut addrs = Vec::with_capacity(ports.len());
        for &port in ports {
            let s = bind_reuseport(SocketAddr::new(ip, port), SINK_BUFFER, 0)?;
            addrs.push(s.local_addr()?);
            sockets.push(mio::net::UdpSocket::from_std(s));
        }
        let poll = Poll::new()?;
        for (i, s) in sockets.iter_mut().enumerate() {
            poll.registry().register(s, Token(i), Interest::READABLE)?;
        }
        let counts: Arc<[AtomicU64]> = ports.iter().map(|_| AtomicU64::new(0)).collect();
        let stop = Arc::new(AtomicBool::new(false));
        let (c, st) = (counts.clone(), stop.clone());
        epoch();
        let thread = std::thread::Builder::new()
            .name("udp-sinks".into())
            .spawn(move || sink_loop(poll, &sockets, &c, &st))?;
        Ok(Self {
            addrs,
            counts,
            stop,
            thread,
        })
    }

    /// The sinks' bound addresses, in the order of `ports`.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Datagrams received on each sink so far.
    pub fn counts(&self) -> Vec<u64> {
        self.counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect()
    }

    /// Stops the counting thread and returns the final counts and latencies.
    ///
    /// # Errors
    /// The thread's receive error, if it failed.
    pub fn stop(self) -> io::Result<SinkTotals> {
        self.stop.store(true, Ordering::Relaxed);
        let latency = self
            .thread
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("sink thread panicked")))?;
        Ok(SinkTotals {
            counts: self
                .counts
                .iter()
                .map(|c| c.load(Ordering::Relaxed))
                .collect(),
            latency,
        })
    }
}

fn sink_loop(
    mut poll: Poll,
    sockets: &[mio::net::UdpSocket],
    counts: &[AtomicU64],
    stop: &AtomicBool,
) -> io::Result<LatencyHistogram> {
    let mut events = Events::with_capacity(sockets.len().max(1));
    let mut rx = RecvBatch::new(64);
    let mut latency = LatencyHistogram::default();
    while !stop.load(Ordering::Relaxed) {
        match poll.poll(&mut events, Some(Duration::from_millis(20))) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        for ev in &events {
            let i = ev.token().0;
            let (Some(socket), Some(count)) = (sockets.get(i), counts.get(i)) else {
                continue;
            };
            loop {
                let n = rx.recv(socket)?;
                if n == 0 {
                    break;
                }
                // A short batch emptied the queue; the next arrival re-arms the poll.
                let drained = n < rx.capacity();
                let now = stamp(Instant::now());
                for (_, d) in rx.iter_mut() {
                    if let Some(l) = latency_of(d, now) {
                        latency.record(l);
                    }
                }
                count.fetch_add(n as u64, Ordering::Relaxed);
                if drained {
                    break;
                }
            }
        }
    }
    Ok(latency)
}

/// What to send, where and how fast.
#[derive(Debug, Clone)]
pub struct BlastConfig {
    /// The forwarder (or relay) under test.
    pub target: SocketAddr,
    /// Source sockets, used round robin per burst (at least 1).
    pub senders: usize,
    /// Datagram size in bytes.
    pub size: usize,
    /// Total offered packets per second.
    pub rate: f64,
    /// How long to offer it.
    pub duration: Duration,
    /// The pacing quantum: each burst carries `rate × burst` packets (1..=512).
    pub burst: Duration,
}

/// What [`blast`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct BlastStats {
    /// Packets the schedule offered (`rate × duration`).
    pub offered: u64,
    /// Packets the kernel accepted.
    pub sent: u64,
    /// Packets scheduled but skipped because the sender fell more than 20 ms behind
    /// (the generator was the limit), or refused by the kernel.
    pub shortfall: u64,
    /// Wall time of the sending phase.
    pub elapsed: Duration,
}

/// Largest lag before the schedule skips ahead instead of catching up at full speed.
const MAX_LAG: Duration = Duration::from_millis(20);

/// Lowers this thread's timer slack to 1 ns so short sleeps end on time.
fn tight_timer_slack() {
    // SAFETY: PR_SET_TIMERSLACK takes one unsigned long and affects only this thread.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong);
    }
}

/// Offers `config.rate` packets/s of `config.size` bytes to `config.target` for
/// `config.duration`, paced in bursts, each one `sendmmsg`. Blocking sockets: a full
/// send buffer slows the generator rather than dropping in it.
///
/// # Errors
/// Binding the source sockets or a fatal send error.
pub fn blast(config: &BlastConfig) -> io::Result<BlastStats> {
    tight_timer_slack();
    let bind_ip: IpAddr = if config.target.is_ipv4() {
        Ipv4Addr::UNSPECIFIED.into()
    } else {
        Ipv6Addr::UNSPECIFIED.into()
    };
    let sockets = (0..config.senders.max(1))
        .map(|_| UdpSocket::bind(SocketAddr::new(bind_ip, 0)))
        .collect::<io::Result<Vec<_>>>()?;
    let mut payload: Vec<u8> = (0..config.size).map(|i| (i % 251) as u8).collect();
    let rate = config.rate.max(1.0);
    let total = (rate * config.duration.as_secs_f64()).round() as u64;
    let burst = ((rate * config.burst.as_secs_f64()).round() as usize).clamp(1, 512);
    let dests = vec![config.target; burst];
    let mut tx = SendQueue::new(burst, 1);
    let mut stats = BlastStats {
        offered: total,
        ..BlastStats::default()
    };
    let start = Instant::now();
    let mut scheduled = 0u64;
    let mut turn = 0usize;
    while scheduled < total {
        let due = start + Duration::from_secs_f64(scheduled as f64 / rate);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        } else if now - due > MAX_LAG {
            // Behind: skip to where the schedule is now; those packets were not offered
            // by us in time, so they count against the generator, not the forwarder.
            let at = ((now - start).as_secs_f64() * rate) as u64;
            let at = at.min(total);
            stats.shortfall += at.saturating_sub(scheduled);
            scheduled = at;
            continue;
        }
        let n = burst.min((total - scheduled) as usize);
        if let Some(head) = payload.get_mut(..8) {
            head.copy_from_slice(&stamp(Instant::now()).to_le_bytes());
        }
        let socket = &sockets[turn % sockets.len()];
        turn = turn.wrapping_add(1);
        let mut batch = tx.batch(socket.as_fd());
        batch.push_fanout(&payload, &dests[..n]);
        let st = batch.flush()?;
        drop(batch);
        stats.sent += st.sent;
        stats.shortfall += st.dropped_full + st.dropped_error;
        scheduled += n as u64;
    }
    stats.elapsed = start.elapsed();
    Ok(stats)
}

/// Sends one probe to `target` every 10 ms until every sink has counted at least one
/// datagram more than at the start (the path through the forwarder works), or `timeout`.
/// Returns whether the path is ready.
///
/// # Errors
/// Binding the probe socket or sending failed (other than `ECONNREFUSED`, which just
/// means nothing listens yet).
pub fn wait_ready(
    target: SocketAddr,
    sinks: &Sinks,
    size: usize,
    timeout: Duration,
) -> io::Result<bool> {
    let bind_ip: IpAddr = if target.is_ipv4() {
        Ipv4Addr::UNSPECIFIED.into()
    } else {
        Ipv6Addr::UNSPECIFIED.into()
    };
    let probe = UdpSocket::bind(SocketAddr::new(bind_ip, 0))?;
    let payload = vec![0u8; size.max(1)];
    let before = sinks.counts();
    let start = Instant::now();
    while start.elapsed() < timeout {
        match probe.send_to(&payload, target) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
            Err(e) => return Err(e),
        }
        std::thread::sleep(Duration::from_millis(10));
        if sinks.counts().iter().zip(&before).all(|(now, b)| now > b) {
            return Ok(true);
        }
    }
    Ok(false)
}
/// The JSON report of `udp-blast`, shared with `blindfold-load`.
pub use blindfold_client::report::BlastReport;
