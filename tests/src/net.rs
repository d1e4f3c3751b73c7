//! The simulated network's links: one per member and direction, each a bottleneck with
//! a rate, a tail-drop queue, propagation delay, jitter and random loss, driven by the
//! [`Sim`](crate::Sim)'s simulated time and a seeded RNG (no clock, no OS randomness).
//!
//! A datagram entering a [`Link`] at `now` goes through, in order:
//!
//! 1. **The bottleneck queue.** With a rate, the link is busy `bytes × 8 / rate` per
//!    datagram after the previous one; a datagram waits behind those not yet fully
//!    serialized. If the bytes waiting (the one being serialized included) plus its
//!    own exceed [`LinkConfig::queue_bytes`], it is tail-dropped
//!    ([`LinkStats::queue_dropped`]). An empty queue always takes a datagram. Without a
//!    rate there is no bottleneck and no queue.
//! 2. **Propagation.** Once serialized, it arrives [`LinkConfig::delay`] later, plus a
//!    uniform random `0..jitter`. Unless [`LinkConfig::reorder`] is set, it never
//!    arrives before the datagram in front of it (jitter then only bunches datagrams up,
//!    as a FIFO path does).
//! 3. **Random loss.** Then it is lost with probability [`LinkConfig::loss`],
//!    independently of every other datagram — or, with a [`Burst`], with the
//!    probability of the two-state Gilbert–Elliott chain's current state.
//!
//! Sizes are UDP payload bytes: IP and UDP headers are not counted against the rate.
//! Changing a link's configuration affects datagrams entering it from then on; those in
//! its queue or in flight keep the schedule they were given.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The default bottleneck buffer of a [`LinkConfig`] built by hand: 64 KiB.
pub const DEFAULT_QUEUE_BYTES: usize = 64 * 1024;

/// How one direction of a member's path behaves. The default is perfect: immediate,
/// lossless, unlimited — datagrams are delivered synchronously, as if there were no
/// link at all.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkConfig {
    /// Bottleneck rate in bits per second; `None` is unlimited (and queueless).
    pub rate_bps: Option<u64>,
    /// The bottleneck's buffer in bytes (tail drop when full). Only used with a rate.
    /// [`DEFAULT_QUEUE_BYTES`] by default; [`LinkConfig::rate`] sets 100 ms' worth.
    pub queue_bytes: usize,
    /// One-way propagation delay.
    pub delay: Duration,
    /// Extra delay, uniform in `0..jitter`, per datagram.
    pub jitter: Duration,
    /// Whether jitter may reorder datagrams. If not, a datagram is held until the one
    /// sent before it on this link has arrived.
    pub reorder: bool,
    /// Probability in `0..=1` that a datagram is lost (in the good state, with
    /// [`LinkConfig::burst`]).
    pub loss: f64,
    /// Bursty loss: a Gilbert–Elliott chain on top of [`LinkConfig::loss`].
    pub burst: Option<Burst>,
}

/// A two-state (Gilbert–Elliott) loss model: before each datagram the link moves from
/// the good to the bad state with probability `enter`, from bad to good with `leave`;
/// in the bad state a datagram is lost with probability `loss`, in the good state with
/// [`LinkConfig::loss`]. The long-run share of datagrams in the bad state is
/// `enter / (enter + leave)`; a bad period lasts `1 / leave` datagrams on average.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Burst {
    /// Probability, per datagram, of going from good to bad.
    pub enter: f64,
    /// Probability, per datagram, of going from bad to good.
    pub leave: f64,
    /// Loss probability in the bad state.
    pub loss: f64,
}

impl Default for LinkConfig {
    fn default() -> Self {
        LinkConfig::PERFECT
    }
}

impl LinkConfig {
    /// Immediate, lossless, unlimited.
    pub const PERFECT: LinkConfig = LinkConfig {
        rate_bps: None,
        queue_bytes: DEFAULT_QUEUE_BYTES,
        delay: Duration::ZERO,
        jitter: Duration::ZERO,
        reorder: false,
        loss: 0.0,
        burst: None,
    };

    /// This link limited to `bps` bits per second, with a buffer of 100 ms at that
    /// rate (at least two 1500-byte datagrams).
    pub fn rate(mut self, bps: u64) -> Self {
        self.rate_bps = Some(bps);
        self.queue_bytes = ((bps / 8 / 10) as usize).max(3000);
        self
    }

    /// This link with a bottleneck buffer of `bytes`.
    pub fn queue_bytes(mut self, bytes: usize) -> Self {
        self.queue_bytes = bytes;
        self
    }

    /// This link with a one-way propagation delay.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// This link with a uniform extra delay in `0..jitter` per datagram.
    pub fn jitter(mut self, jitter: Duration) -> Self {
        self.jitter = jitter;
        self
    }

    /// This link, allowed to reorder datagrams by jitter.
    pub fn reorder(mut self, reorder: bool) -> Self {
        self.reorder = reorder;
        self
    }

    /// This link losing each datagram with probability `p`, independently.
    pub fn loss(mut self, p: f64) -> Self {
        assert!((0.0..=1.0).contains(&p), "loss {p} outside 0..=1");
        self.loss = p;
        self
    }

    /// This link with bursty loss on top of [`LinkConfig::loss`].
    pub fn burst(mut self, burst: Burst) -> Self {
        for p in [burst.enter, burst.leave, burst.loss] {
            assert!((0.0..=1.0).contains(&p), "probability {p} outside 0..=1");
        }
        self.burst = Some(burst);
        self
    }

    /// Whether this is the perfect link (no rate, delay, jitter or loss).
    pub fn is_perfect(&self) -> bool {
        self.rate_bps.is_none()
            && self.delay.is_zero()
            && self.jitter.is_zero()
            && self.loss == 0.0
            && self.burst.is_none()
    }
}

/// What a link did. Every datagram offered to it is, at any instant, exactly one of
/// delivered, lost, queue-dropped or still on its way:
/// `sent = delivered + lost + queue_dropped + in flight`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Datagrams offered to the link.
    pub sent: u64,
    /// Datagrams that arrived at the far end.
    pub delivered: u64,
    /// Datagrams lost at random (counted when they enter the link).
    pub lost: u64,
    /// Datagrams tail-dropped because the bottleneck buffer was full.
    pub queue_dropped: u64,
    /// Bytes of the delivered datagrams.
    pub bytes_delivered: u64,
}

impl LinkStats {
    /// What happened since `earlier` (counters taken from the same link before).
    pub fn since(&self, earlier: &LinkStats) -> LinkStats {
        LinkStats {
            sent: self.sent - earlier.sent,
            delivered: self.delivered - earlier.delivered,
            lost: self.lost - earlier.lost,
            queue_dropped: self.queue_dropped - earlier.queue_dropped,
            bytes_delivered: self.bytes_delivered - earlier.bytes_delivered,
        }
    }
}

/// What becomes of a datagram offered to a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fate {
    /// It arrives now: deliver it synchronously.
    Now,
    /// It arrives at this instant.
    At(Instant),
    /// It was lost or dropped.
    Gone,
}

/// One direction of a member's path (see the [module docs](self)).
#[derive(Debug, Clone)]
pub struct Link {
    cfg: LinkConfig,
    stats: LinkStats,
    rng: Rng,
    /// In the Gilbert–Elliott bad state.
    bad: bool,
    /// Datagrams in the bottleneck (waiting or being serialized): when each has been
    /// serialized, and its size.
    queue: VecDeque<(Instant, usize)>,
    queued_bytes: usize,
    /// When the bottleneck has serialized everything in it.
    busy_until: Option<Instant>,
    /// When the last datagram that was not lost arrives.
    last_arrival: Option<Instant>,
    /// Every delivery: when, and how many bytes.
    log: Vec<(Instant, usize)>,
}

impl Link {
    /// A perfect link whose random draws come from `seed`.
    pub(crate) fn new(seed: u64) -> Self {
        Link {
            cfg: LinkConfig::PERFECT,
            stats: LinkStats::default(),
            rng: Rng(seed),
            bad: false,
            queue: VecDeque::new(),
            queued_bytes: 0,
            busy_until: None,
            last_arrival: None,
            log: Vec::new(),
        }
    }

    /// Its configuration.
    pub fn config(&self) -> &LinkConfig {
        &self.cfg
    }

    /// Its counters.
    pub fn stats(&self) -> LinkStats {
        self.stats
    }

    /// Every delivery so far, in time order: the arrival instant and the datagram's
    /// size in bytes.
    pub fn deliveries(&self) -> &[(Instant, usize)] {
        &self.log
    }

    /// Bits per second delivered in `[from, to)` (0 for an empty window).
    pub fn delivered_bps(&self, from: Instant, to: Instant) -> u64 {
        let start = self.log.partition_point(|&(t, _)| t < from);
        let end = self.log.partition_point(|&(t, _)| t < to);
        let bytes: usize = self.log[start..end.max(start)]
            .iter()
            .map(|&(_, n)| n)
            .sum();
        bits_per_second(bytes, from, to)
    }

    /// Datagrams entering from now on follow `cfg`.
    pub(crate) fn set_config(&mut self, cfg: LinkConfig) {
        self.cfg = cfg;
    }

    /// A datagram of `len` bytes enters the link at `now`: when does it arrive?
    pub(crate) fn admit(&mut self, now: Instant, len: usize) -> Fate {
        self.stats.sent += 1;
        let departs = match self.cfg.rate_bps {
            None => now,
            Some(bps) => {
                while let Some(&(done, n)) = self.queue.front() {
                    if done > now {
                        break;
                    }
                    self.queue.pop_front();
                    self.queued_bytes -= n;
                }
                if !self.queue.is_empty() && self.queued_bytes + len > self.cfg.queue_bytes {
                    self.stats.queue_dropped += 1;
                    return Fate::Gone;
                }
                let start = self.busy_until.map_or(now, |b| b.max(now));
                let done = start + serialization(len, bps);
                self.busy_until = Some(done);
                self.queue.push_back((done, len));
                self.queued_bytes += len;
                done
            }
        };
        let mut at = departs + self.cfg.delay;
        if !self.cfg.jitter.is_zero() {
            let span = u64::try_from(self.cfg.jitter.as_nanos()).unwrap_or(u64::MAX);
            at += Duration::from_nanos(self.rng.below(span));
        }
        if !self.cfg.reorder
            && let Some(last) = self.last_arrival
        {
            at = at.max(last);
        }
        if self.lose() {
            self.stats.lost += 1;
            return Fate::Gone;
        }
        self.last_arrival = Some(self.last_arrival.map_or(at, |l| l.max(at)));
        if at <= now { Fate::Now } else { Fate::At(at) }
    }

    /// A datagram of `len` bytes arrived at `now`.
    pub(crate) fn delivered(&mut self, now: Instant, len: usize) {
        self.stats.delivered += 1;
        self.stats.bytes_delivered += len as u64;
        self.log.push((now, len));
    }

    fn lose(&mut self) -> bool {
        let p = match self.cfg.burst {
            None => self.cfg.loss,
            Some(b) => {
                let flip = if self.bad { b.leave } else { b.enter };
                if flip > 0.0 && self.rng.unit() < flip {
                    self.bad = !self.bad;
                }
                if self.bad { b.loss } else { self.cfg.loss }
            }
        };
        p > 0.0 && self.rng.unit() < p
    }
}

/// How long `len` bytes take at `bps` (rounded up to the nanosecond).
fn serialization(len: usize, bps: u64) -> Duration {
    let bits = len as u128 * 8 * 1_000_000_000;
    let bps = u128::from(bps.max(1));
    Duration::from_nanos(u64::try_from(bits.div_ceil(bps)).unwrap_or(u64::MAX))
}

/// `bytes` over `[from, to)` in bits per second.
pub(crate) fn bits_per_second(bytes: usize, from: Instant, to: Instant) -> u64 {
    let nanos = to.saturating_duration_since(from).as_nanos();
    if nanos == 0 {
        return 0;
    }
    u64::try_from(bytes as u128 * 8 * 1_000_000_000 / nanos).unwrap_or(u64::MAX)
}

/// The seed of one link: member `idx`'s uplink (`dir` 0) or downlink (`dir` 1) in a
/// simulation seeded with `seed`. Each link draws from its own stream, so traffic on
/// one link never changes another's losses.
pub(crate) fn link_seed(seed: u64, idx: usize, dir: u64) -> u64 {
    let mut r = Rng(seed);
    let base = r.next_u64();
    let mut r = Rng(base ^ (idx as u64).wrapping_mul(2).wrapping_add(dir));
    r.next_u64()
}

/// SplitMix64: small, fast, seeded; nothing here needs more.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `0..n` (0 if `n` is 0).
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialization_at_rate() {
        assert_eq!(serialization(1250, 1_000_000), Duration::from_millis(10));
        assert_eq!(serialization(1, 3), Duration::from_nanos(2_666_666_667));
    }

    #[test]
    fn a_full_queue_drops_the_tail() {
        let t0 = Instant::now();
        let mut l = Link::new(1);
        l.set_config(LinkConfig::PERFECT.rate(80_000).queue_bytes(2000));
        // 1000 bytes at 80 kbit/s: 100 ms each.
        assert_eq!(l.admit(t0, 1000), Fate::At(t0 + Duration::from_millis(100)));
        assert_eq!(l.admit(t0, 1000), Fate::At(t0 + Duration::from_millis(200)));
        assert_eq!(l.admit(t0, 1000), Fate::Gone);
        // The first has left the queue 100 ms later: room for one more.
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(l.admit(t1, 1000), Fate::At(t0 + Duration::from_millis(300)));
        assert_eq!(l.stats().queue_dropped, 1);
    }

    #[test]
    fn burst_loss_averages_to_its_stationary_rate() {
        let t0 = Instant::now();
        let mut l = Link::new(7);
        let b = Burst {
            enter: 0.01,
            leave: 0.2,
            loss: 0.5,
        };
        l.set_config(LinkConfig::PERFECT.burst(b));
        let n = 200_000;
        for _ in 0..n {
            l.admit(t0, 100);
        }
        let expected = 0.01 / 0.21 * 0.5;
        let got = l.stats().lost as f64 / f64::from(n);
        assert!((got - expected).abs() < 0.005, "{got} vs {expected}");
    }
}
