//! Downlink estimate of one receiver: how many bits per second the relay can send it,
//! from what the receiver reports (RTCP receiver reports, REMB) and what the relay
//! actually sent it. Layer choice (`layers.rs`) and rate clamping (`clamp.rs`) run on
//! this number.
//!
//! # The rules
//!
//! The loss-based controller of Google congestion control
//! (draft-ietf-rmcat-gcc-02 §6), run once per receiver report:
//!
//! - loss below 2%: increase 5% (the link may carry more);
//! - loss 2–10%: hold (the link is about full; this much loss is what probing costs);
//! - loss above 10%: decrease to `A·(1 − 0.5·loss)` (congestion).
//!
//! Around it:
//!
//! - **REMB caps it.** A receiver that sends REMB (its own delay-based estimate, draft-
//!   alvestrand-rmcat-remb) knows about queues building up before they lose packets,
//!   so the estimate is never above its REMB while that is fresh (default: at most 5 s
//!   old; receivers send one a second). On low loss the loss-based state may also rise
//!   straight to the REMB rather than 5% a report: the receiver vouches for that rate
//!   and nothing is being lost, and 5% a second would take half a minute to go from a
//!   thumbnail's rate to a full layer's.
//! - **Never above 1.5× what was sent.** Without loss the increase would go on forever
//!   on a link the relay hardly uses, and the first burst after that would meet a
//!   number nobody measured. So the estimate is at most 1.5× the rate the relay sent
//!   this receiver over the last second (GCC's own bound on its delay-based estimate),
//!   and the loss-based state does not grow past that bound (it is not pulled down by
//!   it either: a pause in sending does not reset what was learnt). On low loss it
//!   rises at once to at least what was sent over that second: the receiver got it, so
//!   the link carries it (after the relay starts forwarding a full layer, the estimate
//!   catches up in one report instead of many). While the receiver signals no
//!   congestion (no loss of 2% or more, no jitter above the hold, no falling REMB, for
//!   2 s), [`DownlinkEstimate::app_limited`] says so: the estimate is what was tried,
//!   not what the link carries, which layer choice uses to decide to probe (and not to
//!   switch down an estimate that is merely catching up).
//! - **Jitter holds.** Interarrival jitter above 30 ms (default) in any report block
//!   means queues are growing somewhere: the estimate holds instead of increasing.
//! - **A queue in the round trips decreases it.** The engine times the round trip to
//!   the receiver from the report blocks that answer the SRs it forwarded
//!   (`round_trip.rs`) and gives the lowest of each report
//!   ([`DownlinkEstimate::handle_round_trip`]). More than `queue_high` (100 ms) above
//!   the lowest of the last `base_rtt_window`s (30–60 s) is a queue on the downlink:
//!   on a link with a deep buffer the first sign of congestion, seconds before the
//!   buffer overflows, and one a delay-based estimator fed by arrival times alone (the
//!   receiver's REMB) stops seeing once the queue stands still. A queue that grew
//!   since the report before, or has stood for 3 s since the last decrease, brings the
//!   estimate to 0.9 × what the link delivered: a link with a queue is busy, and
//!   delivers what was sent less what joined the queue (`sent / (1 + growth)`, the
//!   growth in seconds per second). A queue that drains holds it. Above that delivered
//!   rate the estimate then grows by 1% a report at most (GCC's additive increase
//!   near the link's capacity), whatever the REMB says, until 1.1 × that rate went
//!   through without a queue in three reports in a row. A round trip has two legs:
//!   the engine takes out of it what the receiver's own media shows queued on its
//!   uplink, which its reports cross (one-way delay over abs-send-time,
//!   `UplinkEstimate::queue`).
//! - **Loss is per packet, not per stream.** A receiver report has one block per
//!   stream the receiver gets; their fraction-lost values are weighted by the packets
//!   each stream carried since its previous report (from the extended highest sequence
//!   number), so a lossy 50 packet/s audio stream does not count as much as a clean
//!   300 packet/s video stream. Reports closer together than 200 ms (default) are
//!   merged into one update, so a receiver that reports often does not ramp faster.
//! - **A stream's first block's loss is not taken** (`first_report_loss: false`, as
//!   the engine sets for a receiver's downlink), nor that of its first block after the
//!   stream began to arrive again after carrying nothing for a while
//!   ([`LossReport::resumed_at`]). Such a block's fraction lost covers packets that never
//!   reached this relay: a member that reconnects after a relay restart reports the
//!   seconds of the outage as loss on every stream it got before, and a member still
//!   connected reports them on the streams of one that reconnects after it (the outage
//!   is a jump in that sender's sequence numbers), or of one whose uplink went dead
//!   for a while. Taken as congestion, they would cut its estimate and fail every
//!   layer it is tried on for a second after. Such a block counts as one without loss,
//!   and sets the packet count the stream's next block is weighed from. Loss while the
//!   stream arrives (a blackout of the receiver's link, a report lost on the way) is
//!   taken: the relay's own view tells the two apart, not the receiver's counts.
//! - **Room for every stream**: a receiver's counts are kept for up to 128 streams
//!   (`max_streams`; each other member's audio and thumbnail and the full layers the
//!   receiver views: a conference of about 60). A stream not reported on for 64
//!   reports gives up its place. A stream that finds no place has no count: while
//!   other streams' blocks are weighed it is left out, and with none to weigh the
//!   fractions' plain mean is taken.
//!
//! Start: 1 Mbit/s (default), within `[min_bps, max_bps]` (50 kbit/s, 100 Mbit/s).
//! Nothing is allocated after construction, and there is no deadline: the estimate is
//! computed when asked, from `now`.

use std::time::{Duration, Instant};

use crate::id::Ssrc;

/// Settings of one receiver's estimate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct EstimateConfig {
    /// The estimate before any report.
    pub initial_bps: u64,
    /// The loss-based state never goes below this.
    pub min_bps: u64,
    /// Nor above this.
    pub max_bps: u64,
    /// The estimate is at most `sent_headroom` × the rate sent over `sent_window`.
    pub sent_headroom: f64,
    /// See `sent_headroom`.
    pub sent_window: Duration,
    /// A REMB older than this no longer caps the estimate.
    pub remb_timeout: Duration,
    /// Jitter above this (in any block) holds instead of increasing.
    pub jitter_hold: Duration,
    /// Reports closer together than this are merged into one update.
    pub min_update_interval: Duration,
    /// A round trip this much above the lowest one is a queue on the downlink (`None`:
    /// no queue check).
    pub queue_high: Option<Duration>,
    /// The lowest round trip is taken over the last one to two of these.
    pub base_rtt_window: Duration,
    /// Whether the loss in a stream's first report block (or its first since it began
    /// to arrive again) is taken. A receiver's block may cover packets that never
    /// reached this relay (see the module docs): `false` for the downlink. An uplink's
    /// counts are the relay's own: `true`.
    pub first_report_loss: bool,
    /// Streams whose packet counts are kept (at least 1).
    pub max_streams: usize,
}

impl Default for EstimateConfig {
    fn default() -> Self {
        EstimateConfig {
            initial_bps: 1_000_000,
            min_bps: 50_000,
            max_bps: 100_000_000,
            sent_headroom: 1.5,
            sent_window: Duration::from_secs(1),
            remb_timeout: Duration::from_secs(5),
            jitter_hold: Duration::from_millis(30),
            min_update_interval: Duration::from_millis(200),
            queue_high: Some(Duration::from_millis(100)),
            base_rtt_window: Duration::from_secs(30),
            first_report_loss: true,
            max_streams: 128,
        }
    }
}

/// What one report block (RFC 3550 §6.4.1) says, as the estimate needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LossReport {
    /// The stream the block is about.
    pub ssrc: Ssrc,
    /// Fraction lost since the receiver's previous report, in 1/256.
    pub fraction_lost: u8,
    /// Extended highest sequence number received.
    pub highest_seq: u32,
    /// Interarrival jitter (the block's timestamp units divided by the clock rate).
    pub jitter: Duration,
    /// When the stream last began to arrive at the relay after carrying nothing for a
    /// while (or at all): a block about it is the first after that if the one before
    /// came earlier, and covers what never reached the relay (see the module docs).
    pub resumed_at: Option<Instant>,
    /// Whether the block's loss and jitter are taken; `false`: it only sets the count
    /// the stream's next block is weighed from (a full layer the receiver started
    /// getting just now, whose block counts the packets it was never sent as lost).
    pub judged: bool,
}

/// What an estimate is the least of ([`DownlinkEstimate::breakdown`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Breakdown {
    /// The loss-based state (loss, jitter and the round trips' queue act on it).
    pub loss_based_bps: u64,
    /// The receiver's REMB, while it is fresh.
    pub remb_bps: Option<u64>,
    /// 1.5× what the relay sent it over the last second.
    pub sent_cap_bps: u64,
}

/// NACKed packets that make a burst …
const LOSS_BURST: usize = 10;
/// … within this long.
const LOSS_BURST_WINDOW: Duration = Duration::from_millis(500);

/// A REMB this much below the one before it is the receiver's estimator seeing a
/// queue build (it sends one at once when its estimate falls more than 3%).
const REMB_FELL: f64 = 0.97;
/// How long a congestion signal (loss of 2% or more, jitter above the hold, a falling
/// REMB) keeps the estimate from counting as app-limited.
const TROUBLE_HOLD: Duration = Duration::from_secs(2);

/// A growing queue decreases the estimate to this fraction of what the link delivered …
const QUEUE_BETA: f64 = 0.9;
/// … and so does one that has stood (above `queue_high`, not growing) this long since.
const QUEUE_STANDING: Duration = Duration::from_secs(3);
/// Above the rate a queue last showed the link to deliver, the estimate grows by at
/// most this factor per update (GCC's additive increase near the link's capacity) …
const NEAR_CAPACITY_GROWTH: f64 = 1.01;
/// … until more than this multiple of that rate went through without a queue …
const CAPACITY_PASSED: f64 = 1.1;
/// … in this many updates in a row (one is a keyframe's burst).
const CAPACITY_PASSED_UPDATES: u32 = 3;
/// A queue's growth between two reports is not taken to say the link delivered less
/// than this fraction of what was sent (one report's round trips can be a burst's).
const MIN_DELIVERED: f64 = 0.75;

/// What the round trips since the last update say of a queue on the downlink.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Queue {
    /// No round trip was timed.
    Unknown,
    /// None above `queue_high`.
    Clear,
    /// One above it, draining since the last decrease: hold.
    Draining,
    /// One above it, growing, or standing since the last decrease had time to act:
    /// decrease, under what the link delivered (bits per second).
    Building { delivered: f64 },
}

/// A stream not reported on for this many reports gives up its place.
const STALE_REPORTS: u32 = 64;

/// What the previous block about one stream said.
#[derive(Debug, Clone, Copy)]
struct StreamCount {
    ssrc: Ssrc,
    highest_seq: u32,
    /// The report (`DownlinkEstimate::reports`) it came in, and when.
    report: u32,
    at: Instant,
}

/// Where a block's stream stands in the table.
enum Count {
    /// Packets its stream carried since its previous block.
    Since(u32),
    /// Its first block, or the first since it began to arrive again, or after its
    /// sequence numbers restarted: a count to go from.
    First,
    /// No place in the table: its weight is not known.
    Unknown,
}

/// Buckets of the sent-rate meter.
const SENT_BUCKETS: usize = 10;

/// One receiver's downlink estimate (on the receiver's home shard).
#[derive(Debug)]
pub(crate) struct DownlinkEstimate {
    cfg: EstimateConfig,
    /// The loss-based state (GCC's `A_s`).
    loss_based: f64,
    remb: Option<(u64, Instant)>,
    /// When the receiver last signalled congestion: a falling REMB, or an update with
    /// 2% loss or more, or jitter above the hold, or a burst of NACKed packets.
    trouble_at: Option<Instant>,
    /// Packets NACKed since the instant given (the current burst window).
    nacked: Option<(usize, Instant)>,
    /// When the receiver last showed heavy loss (see [`Self::lossy`]).
    lossy_at: Option<Instant>,
    /// Per stream: what its previous block said (an open-addressed table, probed
    /// linearly from a place chosen by the SSRC).
    streams: Box<[Option<StreamCount>]>,
    /// Receiver reports so far (wrapping): the age of a stream's count.
    reports: u32,
    /// Loss accumulated since the last update: lost and expected packets (weighted),
    /// and the unweighted fractions of blocks whose weight is not known yet.
    acc_lost: f64,
    acc_expected: f64,
    acc_fraction: f64,
    acc_blocks: u32,
    acc_jitter: Duration,
    last_update: Option<Instant>,
    last_loss: Option<f64>,
    /// The lowest round trip since the update before, the queue it showed then (and
    /// when), and the lowest round trip of the last `base_rtt_window`s.
    acc_rtt: Option<Duration>,
    last_queue: Option<(Duration, Instant)>,
    base_rtt: RecentLowest<Duration>,
    /// When a queue last decreased the estimate, and what the link delivered then.
    queue_cut_at: Option<Instant>,
    capacity: Option<f64>,
    /// Updates in a row that sent more than [`CAPACITY_PASSED`] × `capacity` clear.
    passed: u32,
    sent: RateMeter,
    /// What was sent, as given by [`DownlinkEstimate::set_sent_rate`] (it then replaces
    /// the meter).
    sent_given: Option<f64>,
}

impl DownlinkEstimate {
    /// An estimate at `cfg.initial_bps`.
    pub(crate) fn new(cfg: EstimateConfig) -> Self {
        let min = cfg.min_bps.min(cfg.max_bps);
        DownlinkEstimate {
            loss_based: cfg.initial_bps.clamp(min, cfg.max_bps) as f64,
            cfg,
            remb: None,
            trouble_at: None,
            nacked: None,
            lossy_at: None,
            streams: vec![None; cfg.max_streams.max(1)].into_boxed_slice(),
            reports: 0,
            acc_lost: 0.0,
            acc_expected: 0.0,
            acc_fraction: 0.0,
            acc_blocks: 0,
            acc_jitter: Duration::ZERO,
            last_update: None,
            last_loss: None,
            acc_rtt: None,
            last_queue: None,
            queue_cut_at: None,
            capacity: None,
            passed: 0,
            base_rtt: RecentLowest::default(),
            sent: RateMeter::new(cfg.sent_window),
            sent_given: None,
        }
    }

    /// The relay sent this receiver a datagram of `bytes` at `now`.
    #[cfg(test)]
    pub(crate) fn handle_sent(&mut self, now: Instant, bytes: usize) {
        self.sent.add(now, bytes as u64);
    }

    /// What the relay sends this receiver now, bits per second, measured elsewhere:
    /// from now on this is the sent rate (the engine knows it as the sum of the
    /// measured rates of the streams the receiver gets, without counting every copy).
    pub(crate) fn set_sent_rate(&mut self, bps: u64) {
        self.sent_given = Some(bps as f64);
    }

    /// The rate sent over the last window, bits per second.
    fn sent_rate(&self, now: Instant) -> f64 {
        self.sent_given.unwrap_or_else(|| self.sent.rate_bps(now))
    }

    /// The receiver's REMB said `bps` at `now`.
    pub(crate) fn handle_remb(&mut self, now: Instant, bps: u64) {
        if self
            .fresh_remb(now)
            .is_some_and(|last| (bps as f64) < REMB_FELL * last as f64)
        {
            self.trouble_at = Some(now);
        }
        self.remb = Some((bps, now));
    }

    /// The receiver said at `now` that it lost `lost` packets (a NACK). A burst of
    /// [`LOSS_BURST`] or more within [`LOSS_BURST_WINDOW`] is congestion (see
    /// [`Self::app_limited`]); a packet or two lost or reordered now and then is not.
    pub(crate) fn handle_loss_signal(&mut self, now: Instant, lost: usize) {
        let (count, since) = match self.nacked {
            Some((n, t)) if now.saturating_duration_since(t) < LOSS_BURST_WINDOW => (n, t),
            _ => (0, now),
        };
        let count = count.saturating_add(lost);
        self.nacked = Some((count, since));
        if count >= LOSS_BURST {
            self.trouble_at = Some(now);
            self.lossy_at = Some(now);
        }
    }

    /// A report block from this receiver, arriving at `now`, answered an SR the relay
    /// sent it `rtt` ago (`RoundTrip`). Give it before the report's blocks: the lowest
    /// round trip of a report counts (one SR behind a keyframe met a queue the others
    /// did not), against the lowest of the last `base_rtt_window`s.
    pub(crate) fn handle_round_trip(&mut self, now: Instant, rtt: Duration) {
        self.acc_rtt = Some(self.acc_rtt.map_or(rtt, |a| a.min(rtt)));
        self.base_rtt.add(now, self.cfg.base_rtt_window, rtt);
    }

    /// What the round trips since the last update say of a queue on the downlink: how
    /// far the lowest of them is above the lowest of the window, against the queue of
    /// the update before.
    fn check_queue(&mut self, now: Instant) -> Queue {
        let Some(rtt) = self.acc_rtt.take() else {
            return Queue::Unknown;
        };
        let (Some(base), Some(high)) = (self.base_rtt.lowest(), self.cfg.queue_high) else {
            return Queue::Unknown;
        };
        let q = rtt.saturating_sub(base);
        let last = self.last_queue.replace((q, now));
        if q <= high {
            return Queue::Clear;
        }
        // Growing since the report before, or standing since the last decrease had
        // time to act. (Not merely "not draining yet": the sender slows down a report
        // or two after a decrease, and a second one before then would compound it.)
        let growing = last.is_none_or(|(l, _)| q > l);
        let standing = self
            .queue_cut_at
            .is_none_or(|t| now.saturating_duration_since(t) >= QUEUE_STANDING);
        let sent = self.sent_rate(now);
        if !(growing || standing) || sent <= 0.0 {
            return Queue::Draining;
        }
        // A link with a queue is busy: it delivers what was sent less what joined the
        // queue (or more, what left it). A queue growing by `g` seconds a second
        // delivers `sent / (1 + g)`.
        let growth = last.map_or(0.0, |(l, at)| {
            let dt = now.saturating_duration_since(at).as_secs_f64();
            match dt > 0.0 {
                true => (q.as_secs_f64() - l.as_secs_f64()) / dt,
                false => 0.0,
            }
        });
        let delivered = (sent / (1.0 + growth).max(0.2)).max(MIN_DELIVERED * sent);
        Queue::Building { delivered }
    }

    /// An increase to `up` from `a`, slowed near what a queue last showed the link to
    /// deliver: the REMB of a receiver whose estimator does not see a queue that stands
    /// still runs ahead of the link. `clear`: this update's round trips showed no queue.
    fn near_capacity(&mut self, now: Instant, a: f64, up: f64, clear: bool) -> f64 {
        let sent = self.sent_rate(now);
        match self.capacity {
            Some(c) if clear && sent > CAPACITY_PASSED * c => self.passed += 1,
            _ => self.passed = 0,
        }
        if self.passed >= CAPACITY_PASSED_UPDATES {
            self.capacity = None;
        }
        match self.capacity {
            Some(c) => up.min((a * NEAR_CAPACITY_GROWTH).max(c)),
            None => up,
        }
    }

    /// A receiver report from this receiver arrived at `now` with these blocks.
    pub(crate) fn handle_receiver_report(
        &mut self,
        now: Instant,
        blocks: impl IntoIterator<Item = LossReport>,
    ) {
        self.reports = self.reports.wrapping_add(1);
        for b in blocks {
            self.account(now, b);
        }
        let due = self
            .last_update
            .is_none_or(|t| now.saturating_duration_since(t) >= self.cfg.min_update_interval);
        if due {
            self.update(now);
        }
    }

    /// The estimate at `now`, bits per second.
    pub(crate) fn estimate(&self, now: Instant) -> u64 {
        let (unbounded, cap) = self.parts(now);
        unbounded.min(cap)
    }

    /// The estimate without its bound of 1.5× what was sent: what the link was last
    /// found to carry (by loss and by the REMB), which a pause in sending does not lower.
    pub(crate) fn estimate_unbounded(&self, now: Instant) -> u64 {
        self.parts(now).0
    }

    /// Whether the estimate is limited by what the relay sent rather than by the link:
    /// the receiver signalled no congestion for [`TROUBLE_HOLD`] — no update with 2%
    /// loss or more, no jitter above the hold, no REMB falling by more than 3% — so the
    /// link may carry more than has been tried, and an estimate below what a layer needs
    /// is only one nothing has tested yet.
    pub(crate) fn app_limited(&self, now: Instant) -> bool {
        self.trouble_at
            .is_none_or(|t| now.saturating_duration_since(t) >= TROUBLE_HOLD)
    }

    /// Whether the receiver is losing packets now: a burst of NACKed packets, or a
    /// report with more than 10% loss, within the last second.
    pub(crate) fn lossy(&self, now: Instant) -> bool {
        self.lossy_at
            .is_some_and(|t| now.saturating_duration_since(t) < Duration::from_secs(1))
    }

    /// Whether the receiver has reported anything yet (a receiver report with blocks
    /// about what the relay sends it, or a REMB): before that the estimate knows nothing
    /// of its link.
    pub(crate) fn has_reports(&self) -> bool {
        self.last_loss.is_some() || self.remb.is_some()
    }

    /// The loss fraction of the last update (0.0 to 1.0), if there was one.
    #[cfg(test)]
    pub(crate) fn last_loss(&self) -> Option<f64> {
        self.last_loss
    }

    /// What the estimate at `now` is the least of, for the relay's log.
    pub(crate) fn breakdown(&self, now: Instant) -> Breakdown {
        Breakdown {
            loss_based_bps: self.loss_based as u64,
            remb_bps: self.fresh_remb(now),
            sent_cap_bps: self.sent_cap(now) as u64,
        }
    }

    /// The estimate without the sent bound, and the sent bound.
    fn parts(&self, now: Instant) -> (u64, u64) {
        let mut est = self.loss_based as u64;
        if let Some(remb) = self.fresh_remb(now) {
            est = est.min(remb);
        }
        (est, self.sent_cap(now) as u64)
    }

    fn sent_cap(&self, now: Instant) -> f64 {
        self.sent_rate(now) * self.cfg.sent_headroom.max(0.0)
    }

    fn fresh_remb(&self, now: Instant) -> Option<u64> {
        self.remb
            .filter(|&(_, at)| now.saturating_duration_since(at) <= self.cfg.remb_timeout)
            .map(|(bps, _)| bps)
    }

    /// Takes block `b`, which came at `now`, as the count its stream's next block is
    /// weighed from, and says how many packets its stream carried since its previous
    /// block.
    fn baseline(&mut self, now: Instant, b: LossReport) -> Count {
        let n = self.streams.len();
        let home = (b.ssrc.0.wrapping_mul(0x9e37_79b9) >> 16) as usize % n;
        let report = self.reports;
        // A place is never emptied, so a stream is found before the first empty one.
        let mut free = None;
        for k in 0..n {
            let i = (home + k) % n;
            match self.streams[i] {
                Some(c) if c.ssrc == b.ssrc => {
                    let d = b.highest_seq.wrapping_sub(c.highest_seq);
                    self.streams[i] = Some(StreamCount {
                        highest_seq: b.highest_seq,
                        report,
                        at: now,
                        ..c
                    });
                    // A jump back or of more than 2^16 is a restart, not a count.
                    let resumed =
                        !self.cfg.first_report_loss && b.resumed_at.is_some_and(|t| t > c.at);
                    return match d < 0x1_0000 && !resumed {
                        true => Count::Since(d),
                        false => Count::First,
                    };
                }
                Some(c) => {
                    if free.is_none() && report.wrapping_sub(c.report) > STALE_REPORTS {
                        free = Some(i);
                    }
                }
                None => {
                    free.get_or_insert(i);
                    break;
                }
            }
        }
        let Some(i) = free else {
            return Count::Unknown;
        };
        self.streams[i] = Some(StreamCount {
            ssrc: b.ssrc,
            highest_seq: b.highest_seq,
            report,
            at: now,
        });
        Count::First
    }

    fn account(&mut self, now: Instant, b: LossReport) {
        let count = self.baseline(now, b);
        if !b.judged {
            return;
        }
        let fraction = f64::from(b.fraction_lost) / 256.0;
        self.acc_jitter = self.acc_jitter.max(b.jitter);
        match count {
            Count::Since(n) => {
                self.acc_lost += fraction * f64::from(n);
                self.acc_expected += f64::from(n);
            }
            // Counts to go from, and no loss (see the module docs).
            Count::First if !self.cfg.first_report_loss => self.acc_blocks += 1,
            Count::First | Count::Unknown => {
                self.acc_fraction += fraction;
                self.acc_blocks += 1;
            }
        }
    }

    fn update(&mut self, now: Instant) {
        let loss = if self.acc_expected > 0.0 {
            self.acc_lost / self.acc_expected
        } else if self.acc_blocks > 0 {
            self.acc_fraction / f64::from(self.acc_blocks)
        } else {
            // No blocks: a report about nothing the relay sends.
            return;
        };
        let jitter = self.acc_jitter;
        let queue = self.check_queue(now);
        (
            self.acc_lost,
            self.acc_expected,
            self.acc_fraction,
            self.acc_blocks,
        ) = (0.0, 0.0, 0.0, 0);
        self.acc_jitter = Duration::ZERO;
        self.last_update = Some(now);
        self.last_loss = Some(loss);
        let a = self.loss_based;
        let queued = matches!(queue, Queue::Draining | Queue::Building { .. });
        let hold = loss >= 0.02 || jitter > self.cfg.jitter_hold || queued;
        if hold {
            self.trouble_at = Some(now);
        }
        if loss > 0.10 {
            self.lossy_at = Some(now);
        }
        let next = if loss > 0.10 {
            // Cut from what was sent when the estimate rests above it (growth stops at
            // 1.5× what was sent): cut from there, heavy loss would take seconds of
            // reports to bring the estimate under the rate that is losing packets. But
            // never from below half the estimate: a receiver sent far less than its
            // estimate (audio only, for a while) learns little of its link from one
            // lossy report, and would otherwise lose what it knew of it.
            let sent = self.sent_rate(now);
            let from = if sent > 0.0 {
                a.min(sent.max(0.5 * a))
            } else {
                a
            };
            from * (1.0 - 0.5 * loss)
        } else if let Queue::Building { delivered } = queue {
            // More is sent than the link carries, though nothing was lost yet.
            self.queue_cut_at = Some(now);
            self.capacity = Some(delivered);
            a.min(QUEUE_BETA * delivered)
        } else if hold {
            a
        } else {
            // What was sent over the last second arrived with under 2% loss: the link
            // carries at least that.
            let mut up = (a * 1.05).max(self.sent_rate(now));
            if let Some(remb) = self.fresh_remb(now) {
                up = up.max(remb as f64);
            }
            up = self.near_capacity(now, a, up, queue == Queue::Clear);
            // Growth stops at 1.5× what was sent; the bound never pulls it down.
            up.min(a.max(self.sent_cap(now)))
        };
        let min = self.cfg.min_bps.min(self.cfg.max_bps) as f64;
        self.loss_based = next.clamp(min, self.cfg.max_bps as f64);
    }
}

/// The lowest value of the last one to two windows: of the current one and the one
/// before it (a new window starts when the current one is `window` old). Fixed size.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct RecentLowest<T> {
    lowest: [Option<T>; 2],
    since: Option<Instant>,
}

impl<T: Copy + PartialOrd> RecentLowest<T> {
    /// Counts `v` at `now`; returns the lowest value now.
    pub(crate) fn add(&mut self, now: Instant, window: Duration, v: T) -> T {
        if self
            .since
            .is_none_or(|t| now.saturating_duration_since(t) >= window)
        {
            self.lowest = [None, self.lowest[0]];
            self.since = Some(now);
        }
        self.lowest[0] = Some(self.lowest[0].map_or(v, |l| lower(l, v)));
        self.lowest.iter().flatten().fold(v, |m, &l| lower(m, l))
    }

    /// The lowest value of the last one to two windows, if any was counted.
    pub(crate) fn lowest(&self) -> Option<T> {
        self.lowest.iter().flatten().copied().reduce(lower)
    }
}

fn lower<T: PartialOrd>(a: T, b: T) -> T {
    if b < a { b } else { a }
}

/// Bytes over the last window, in buckets of a tenth of it: what the relay sent a
/// receiver, or what a stream carries (the engine's per-stream rate). No allocation.
#[derive(Debug)]
pub(crate) struct RateMeter {
    bucket_ns: u64,
    bytes: [u64; SENT_BUCKETS],
    epoch: Option<Instant>,
    /// The bucket `bytes[newest % SENT_BUCKETS]` counts.
    newest: u64,
    /// When the first byte was counted, in ns since `epoch`.
    first_ns: Option<u64>,
    /// When the newest bucket ends: until then a count only adds to it (the forwarding
    /// path counts every packet; this keeps that to one comparison and one addition).
    newest_end: Option<Instant>,
}

impl RateMeter {
    pub(crate) fn new(window: Duration) -> Self {
        let bucket_ns =
            (window.as_nanos() / SENT_BUCKETS as u128).clamp(1_000, u128::from(u64::MAX / 4));
        RateMeter {
            bucket_ns: bucket_ns as u64,
            bytes: [0; SENT_BUCKETS],
            epoch: None,
            newest: 0,
            first_ns: None,
            newest_end: None,
        }
    }

    /// Nanoseconds since the epoch (0 before it: time never goes back past it).
    fn ns(&self, now: Instant) -> u64 {
        self.epoch.map_or(0, |e| {
            now.saturating_duration_since(e)
                .as_nanos()
                .min(u128::from(u64::MAX / 4)) as u64
        })
    }

    /// Counts `n` bytes at `now`.
    #[inline]
    pub(crate) fn add(&mut self, now: Instant, n: u64) {
        if self.newest_end.is_some_and(|end| now < end) {
            let i = (self.newest % SENT_BUCKETS as u64) as usize;
            self.bytes[i] = self.bytes[i].saturating_add(n);
            return;
        }
        self.add_to_new_bucket(now, n);
    }

    /// [`Self::add`] past the newest bucket's end: once a bucket.
    #[inline(never)]
    fn add_to_new_bucket(&mut self, now: Instant, n: u64) {
        self.epoch.get_or_insert(now);
        let ns = self.ns(now);
        self.first_ns.get_or_insert(ns);
        let b = (ns / self.bucket_ns).max(self.newest);
        if b > self.newest {
            let stale = (b - self.newest).min(SENT_BUCKETS as u64);
            for k in 0..stale {
                self.bytes[((b - k) % SENT_BUCKETS as u64) as usize] = 0;
            }
            self.newest = b;
        }
        let i = (b % SENT_BUCKETS as u64) as usize;
        self.bytes[i] = self.bytes[i].saturating_add(n);
        self.newest_end = self.epoch.and_then(|e| {
            let end_ns = (self.newest + 1).checked_mul(self.bucket_ns)?;
            e.checked_add(Duration::from_nanos(end_ns))
        });
    }

    /// Bits per second over the window ending at `now`.
    pub(crate) fn rate_bps(&self, now: Instant) -> f64 {
        let Some(first) = self.first_ns else {
            return 0.0;
        };
        let ns = self.ns(now).max(self.newest * self.bucket_ns);
        let b = ns / self.bucket_ns;
        let oldest = (b + 1).saturating_sub(SENT_BUCKETS as u64);
        if self.newest < oldest {
            return 0.0;
        }
        let bytes: u64 = (oldest..=self.newest)
            .map(|k| self.bytes[(k % SENT_BUCKETS as u64) as usize])
            .fold(0u64, u64::saturating_add);
        // The window starts at the oldest bucket in it, or at the first byte.
        let start = (oldest * self.bucket_ns).max(first);
        let span = ns.saturating_sub(start).max(self.bucket_ns);
        bytes as f64 * 8.0 * 1e9 / span as f64
    }
}

#[cfg(test)]
mod tests {
    // One arbitrary base instant; everything after it is simulated.
    #![allow(clippy::disallowed_methods)]

    use super::*;

    const MS: Duration = Duration::from_millis(1);
    const VIDEO: Ssrc = Ssrc(0xbeef);
    const AUDIO: Ssrc = Ssrc(0xa0d1);

    /// A receiver being sent `bps` steadily (1000-byte packets) and reporting every
    /// second with `fraction_lost` on one stream of 300 packets/s; optional REMB.
    struct Sim {
        e: DownlinkEstimate,
        now: Instant,
        seq: u32,
    }

    impl Sim {
        fn new() -> Self {
            let t0 = Instant::now();
            Sim {
                e: DownlinkEstimate::new(EstimateConfig::default()),
                now: t0,
                seq: 0,
            }
        }

        /// One second of sending at `bps`, then a report with `loss` (0..=255).
        fn second(&mut self, bps: u64, loss: u8, remb: Option<u64>) -> u64 {
            let packets = bps / 8000;
            for i in 0..packets {
                let at = self.now + Duration::from_nanos(1_000_000_000 * i / packets.max(1));
                self.e.handle_sent(at, 1000);
            }
            self.now += Duration::from_secs(1);
            if let Some(r) = remb {
                self.e.handle_remb(self.now, r);
            }
            self.seq += 300;
            let block = LossReport {
                ssrc: VIDEO,
                fraction_lost: loss,
                highest_seq: self.seq,
                jitter: 5 * MS,
                resumed_at: None,
                judged: true,
            };
            self.e.handle_receiver_report(self.now, [block]);
            self.e.estimate(self.now)
        }
    }

    /// An estimate set as the engine sets a receiver's downlink's.
    fn downlink() -> DownlinkEstimate {
        DownlinkEstimate::new(EstimateConfig {
            first_report_loss: false,
            ..EstimateConfig::default()
        })
    }

    /// A block about `ssrc` with highest sequence number `seq` and `loss` (in 1/256).
    fn block(ssrc: Ssrc, seq: u32, loss: u8) -> LossReport {
        LossReport {
            ssrc,
            fraction_lost: loss,
            highest_seq: seq,
            jitter: Duration::ZERO,
            resumed_at: None,
            judged: true,
        }
    }

    fn near(a: u64, b: u64) -> bool {
        a.abs_diff(b) <= b / 100
    }

    /// A queue on the link shows in the round trips before a packet is lost. Growing,
    /// it brings the estimate to 0.9 × what the link delivers (`sent / (1 + growth)`);
    /// draining, it holds it; once gone, a REMB that ran ahead lifts the estimate back
    /// to that rate at once but only 1% a report above it, until more has gone through
    /// without a queue three reports in a row.
    #[test]
    fn a_queue_in_the_round_trips_brings_the_estimate_under_what_the_link_delivers() {
        let mut s = Sim::new();
        let remb = Some(3_000_000);
        let second = |s: &mut Sim, bps, rtt_ms| {
            s.e.handle_round_trip(s.now + Duration::from_secs(1), rtt_ms * MS);
            s.second(bps, 0, remb)
        };
        // 20 ms round trips: no queue. (The estimate is 1.5 × what is sent.)
        for _ in 0..3 {
            assert_eq!(second(&mut s, 1_600_000, 20), 2_400_000);
        }
        assert!(s.e.app_limited(s.now));
        // The link carries 1.25 Mbit/s: the queue grows by 0.28 s in a second.
        let e = second(&mut s, 1_600_000, 300);
        assert!(near(e, 1_125_000), "{e}");
        assert!(!s.e.app_limited(s.now));
        // The sender slowed down, the queue drains: held, not cut again.
        assert_eq!(second(&mut s, 1_100_000, 200), e);
        // Gone: up to what the link delivered, then 1% a report.
        assert!(near(second(&mut s, 1_100_000, 20), 1_250_000));
        assert!(near(second(&mut s, 1_100_000, 20), 1_262_500));
        // The link turns out to carry more: 1.5 Mbit/s without a queue, three reports.
        assert!(second(&mut s, 1_500_000, 20) < 1_300_000);
        assert!(second(&mut s, 1_500_000, 20) < 1_300_000);
        assert!(near(second(&mut s, 1_500_000, 20), 2_250_000));
    }

    #[test]
    fn a_queue_that_stands_is_cut_again_after_three_seconds() {
        let mut s = Sim::new();
        let second = |s: &mut Sim, bps, rtt_ms| {
            s.e.handle_round_trip(s.now + Duration::from_secs(1), rtt_ms * MS);
            s.second(bps, 0, None)
        };
        second(&mut s, 1_000_000, 10);
        // A queue of 200 ms appears: cut to 0.9 × 1 Mbit/s / 1.19.
        let first = second(&mut s, 1_000_000, 200);
        assert!(near(first, 756_302), "{first}");
        // The sender slows to it, and that is all the link carries: the queue stands.
        // Held for 3 s, then cut to 0.9 × what a busy link with a steady queue
        // delivers, what was sent.
        assert_eq!(second(&mut s, 760_000, 200), first);
        assert_eq!(second(&mut s, 760_000, 200), first);
        let e = second(&mut s, 760_000, 200);
        assert!(near(e, 684_000), "{e}");
        // The lowest round trip of the window is the base: a higher one never is.
        assert_eq!(s.e.base_rtt.lowest(), Some(10 * MS));
    }

    #[test]
    fn defaults() {
        let d = EstimateConfig::default();
        assert_eq!(d.initial_bps, 1_000_000);
        assert_eq!(d.sent_headroom, 1.5);
        assert_eq!(d.sent_window, Duration::from_secs(1));
        assert_eq!(d.remb_timeout, Duration::from_secs(5));
        assert_eq!(d.jitter_hold, 30 * MS);
        assert_eq!(d.min_update_interval, 200 * MS);
        assert_eq!(d.queue_high, Some(100 * MS));
        assert_eq!(d.base_rtt_window, Duration::from_secs(30));
    }

    #[test]
    fn low_loss_increases_five_percent_a_report_up_to_one_and_a_half_times_sent() {
        let mut s = Sim::new();
        // 800 kbit/s sent: the bound is 1.2 Mbit/s, above the initial 1 Mbit/s.
        let mut expect = 1_000_000.0;
        for _ in 0..3 {
            expect *= 1.05;
            let e = s.second(800_000, 3, None); // 1.2% loss: still "low"
            assert!(near(e, expect as u64), "{e} vs {expect}");
        }
        for _ in 0..10 {
            let e = s.second(800_000, 0, None);
            assert!(near(e, 1_200_000), "never above 1.5× sent: {e}");
        }
        assert!(s.e.app_limited(s.now));
    }

    #[test]
    fn low_loss_lifts_it_to_what_was_delivered() {
        let mut s = Sim::new();
        // The relay starts forwarding 2 Mbit/s and the receiver loses nothing: the
        // link carries 2 Mbit/s, whatever 5% a report would say.
        assert!(near(s.second(2_000_000, 0, None), 2_000_000));
        // With 5% loss it would only have held.
        let mut s = Sim::new();
        assert_eq!(s.second(2_000_000, 13, None), 1_000_000);
    }

    #[test]
    fn moderate_loss_holds_and_heavy_loss_decreases() {
        let mut s = Sim::new();
        s.second(2_000_000, 0, None);
        let before = s.e.estimate(s.now);
        // 5% loss: hold.
        assert_eq!(s.second(2_000_000, 13, None), before);
        assert_eq!(s.second(2_000_000, 25, None), before, "9.8%");
        // 20% loss: × (1 − 0.1).
        let after = s.second(2_000_000, 51, None);
        let loss = 51.0 / 256.0;
        assert!(
            near(after, (before as f64 * (1.0 - 0.5 * loss)) as u64),
            "{after}"
        );
        assert_eq!(s.e.last_loss(), Some(loss));
        // 100% loss, over and over: down to the floor, never zero.
        for _ in 0..50 {
            s.second(2_000_000, 255, None);
        }
        assert_eq!(s.e.estimate(s.now), 50_000);
    }

    /// An estimate resting at 1.5× what is sent (a clean link) is cut from what is
    /// sent when heavy loss comes, so the first lossy report already puts it under
    /// the rate that is losing packets (cut from where it rested, it took four).
    #[test]
    fn heavy_loss_cuts_from_what_is_sent_not_from_an_estimate_above_it() {
        let mut s = Sim::new();
        for _ in 0..20 {
            s.second(1_000_000, 0, None);
        }
        assert!(near(s.e.estimate(s.now), 1_500_000));
        let loss = 51.0 / 256.0;
        let e = s.second(1_000_000, 51, None);
        assert!(near(e, (1_000_000.0 * (1.0 - 0.5 * loss)) as u64), "{e}");
        // Sent far less than its estimate (audio only), one lossy report takes what it
        // knows of the link (the estimate without its bound of 1.5× what is sent) to
        // half at most, not to the little it is sent.
        let mut s = Sim::new();
        for _ in 0..20 {
            s.second(2_000_000, 0, None);
        }
        let before = s.e.estimate(s.now);
        for _ in 0..3 {
            s.second(48_000, 0, None);
        }
        assert_eq!(s.e.estimate_unbounded(s.now), before);
        s.second(48_000, 51, None);
        let e = s.e.estimate_unbounded(s.now);
        assert!(
            near(e, (before as f64 * 0.5 * (1.0 - 0.5 * loss)) as u64),
            "{e} from {before}"
        );
    }

    #[test]
    fn remb_caps_the_estimate_and_lets_it_rise_at_once() {
        let mut s = Sim::new();
        // A fast receiver: its REMB says 2.5 Mbit/s while the relay sends 2 Mbit/s.
        assert_eq!(s.second(2_000_000, 0, Some(2_500_000)), 2_500_000);
        // Its REMB drops: so does the estimate, loss or not.
        assert_eq!(s.second(2_000_000, 0, Some(800_000)), 800_000);
        assert!(!s.e.app_limited(s.now));
        // The REMB goes stale after 5 s: the loss-based state (which kept growing from
        // 2.5 Mbit/s, bounded by 1.5× sent) rules again.
        s.now += Duration::from_secs(5);
        assert!(s.second(2_000_000, 0, None) > 2_500_000);
    }

    #[test]
    fn what_was_sent_bounds_the_estimate() {
        let mut s = Sim::new();
        // Only thumbnails and audio go to this receiver: 320 kbit/s.
        for _ in 0..10 {
            let e = s.second(320_000, 0, Some(5_000_000));
            assert!(e <= 481_000, "{e}");
        }
        assert!(near(s.e.estimate(s.now), 480_000));
        assert!(
            s.e.app_limited(s.now),
            "the link may carry more than was tried"
        );
        // A pause in sending caps the estimate (nothing sent, nothing known)…
        assert_eq!(s.e.estimate(s.now + Duration::from_secs(3)), 0);
        // …and when sending resumes, the receiver's REMB lets it rise at once.
        s.now += Duration::from_secs(3);
        let e = s.second(2_000_000, 0, Some(5_000_000));
        assert!(e >= 2_900_000, "{e}");
    }

    #[test]
    fn jitter_holds_instead_of_increasing() {
        let mut s = Sim::new();
        let before = s.second(2_000_000, 0, None);
        s.now += Duration::from_secs(1);
        s.e.handle_receiver_report(
            s.now,
            [LossReport {
                ssrc: VIDEO,
                fraction_lost: 0,
                highest_seq: s.seq + 300,
                jitter: 80 * MS,
                resumed_at: None,
                judged: true,
            }],
        );
        assert_eq!(s.e.last_loss(), Some(0.0));
        assert_eq!(s.e.loss_based as u64, before, "held, not increased");
    }

    #[test]
    fn loss_is_weighted_by_packets() {
        let t0 = Instant::now();
        let mut e = DownlinkEstimate::new(EstimateConfig::default());
        e.handle_sent(t0, 1_000_000);
        let report = |video_seq, audio_seq, video_loss, audio_loss| {
            [
                block(VIDEO, video_seq, video_loss),
                block(AUDIO, audio_seq, audio_loss),
            ]
        };
        // First report: no counts yet, so the plain mean of the fractions: 25%.
        e.handle_receiver_report(t0, report(1000, 100, 0, 128));
        assert_eq!(e.last_loss(), Some(0.25));
        // Then 950 video packets with no loss and 50 audio packets with half lost:
        // 25 of 1000 packets, 2.5%, not the 25% a plain mean would say.
        e.handle_receiver_report(t0 + 1000 * MS, report(1950, 150, 0, 128));
        assert_eq!(e.last_loss(), Some(0.025));
    }

    /// A member that reconnects after a relay restart reports the outage as loss (its
    /// previous report went to the relay before): the new relay's estimate takes the
    /// first report as one without loss, for its counts, and the loss of the next.
    #[test]
    fn the_first_report_sets_the_counts_and_its_loss_is_not_taken() {
        let t0 = Instant::now();
        let mut e = downlink();
        for i in 0..250u32 {
            e.handle_sent(t0 + 4 * MS * i, 1000);
        }
        assert!(!e.has_reports());
        let now = t0 + 1000 * MS;
        e.handle_receiver_report(now, [block(VIDEO, 9000, 255), block(AUDIO, 900, 255)]);
        assert!(e.has_reports());
        assert_eq!(e.last_loss(), Some(0.0));
        assert!(!e.lossy(now), "the outage is not this link's loss");
        assert!(e.app_limited(now));
        assert!(e.estimate_unbounded(now) >= 1_000_000, "not cut");
        // The next report's loss, over what the relay sent, counts.
        let later = now + 1000 * MS;
        e.handle_receiver_report(later, [block(VIDEO, 9300, 64), block(AUDIO, 950, 64)]);
        assert_eq!(e.last_loss(), Some(0.25));
        assert!(e.lossy(later));
        // By default (an uplink's counts, the relay's own) the first report's loss is
        // taken.
        let mut e = DownlinkEstimate::new(EstimateConfig::default());
        e.handle_receiver_report(now, [block(VIDEO, 9000, 255)]);
        assert!(e.lossy(now));
    }

    /// A member that reconnects after another: the receiver, reporting all along, names
    /// the newcomer's streams again with the outage as their loss. Their first blocks
    /// set counts; from the next ones their loss is taken.
    #[test]
    fn a_streams_first_block_sets_its_count_and_its_loss_is_not_taken() {
        let t0 = Instant::now();
        let mut e = downlink();
        let back = Ssrc(0x5eed);
        e.handle_receiver_report(t0, [block(VIDEO, 9000, 0)]);
        // The reconnected member's stream, alone in a compound of its own (a receiver
        // of more than 31 streams sends the blocks beyond them so).
        let now = t0 + 1000 * MS;
        e.handle_receiver_report(now, [block(back, 4000, 255)]);
        assert_eq!(e.last_loss(), Some(0.0));
        assert!(!e.lossy(now), "the outage is not this link's loss");
        let later = now + 1000 * MS;
        e.handle_receiver_report(later, [block(back, 4300, 64)]);
        assert_eq!(e.last_loss(), Some(0.25));
    }

    /// A member still connected when another comes back (it reconnects after a relay
    /// restart, or its uplink was dead for a while): it went on reporting the other's
    /// stream with nothing counted (or left it out of its reports), and its first
    /// block after the other is back counts the outage as loss. The relay saw the
    /// stream begin to arrive again, so that block only sets the count; the next one's
    /// loss is taken.
    #[test]
    fn a_streams_first_block_after_it_began_to_arrive_again_is_not_taken() {
        let t0 = Instant::now();
        let back = Ssrc(0x5eed);
        for reported_while_away in [true, false] {
            let mut e = downlink();
            let mut now = t0;
            e.handle_receiver_report(now, [block(VIDEO, 3000, 0), block(back, 4000, 0)]);
            for i in 1..=5u32 {
                now += 1000 * MS;
                let video = block(VIDEO, 3000 + 300 * i, 0);
                match reported_while_away {
                    true => e.handle_receiver_report(now, [video, block(back, 4000, 0)]),
                    false => e.handle_receiver_report(now, [video]),
                }
            }
            // Back half a second ago: 1500 packets sent into the outage, 300 since.
            now += 1000 * MS;
            let resumed = LossReport {
                resumed_at: Some(now - 500 * MS),
                ..block(back, 5800, 213)
            };
            e.handle_receiver_report(now, [block(VIDEO, 5100, 0), resumed]);
            let while_away = format!("reported while away: {reported_while_away}");
            assert_eq!(e.last_loss(), Some(0.0), "{while_away}");
            assert!(!e.lossy(now));
            now += 1000 * MS;
            let next = LossReport {
                resumed_at: Some(now - 1500 * MS),
                ..block(back, 6100, 64)
            };
            e.handle_receiver_report(now, [block(VIDEO, 5400, 0), next]);
            assert_eq!(e.last_loss(), Some(0.125), "{while_away}");
        }
        // The relay's own counts (an uplink's) are taken as they come.
        let mut e = DownlinkEstimate::new(EstimateConfig::default());
        e.handle_receiver_report(t0, [block(back, 4000, 0)]);
        let resumed = LossReport {
            resumed_at: Some(t0 + 500 * MS),
            ..block(back, 4300, 64)
        };
        e.handle_receiver_report(t0 + 1000 * MS, [resumed]);
        assert_eq!(e.last_loss(), Some(0.25));
    }

    /// A receiver whose link carried nothing for a second while the relay sent (its
    /// block then counts no packets), or whose report was lost on the way: the next
    /// block's loss is the link's, and is taken.
    #[test]
    fn loss_after_a_blackout_or_a_lost_report_is_taken() {
        let t0 = Instant::now();
        let mut e = downlink();
        e.handle_receiver_report(t0, [block(VIDEO, 3000, 0)]);
        e.handle_receiver_report(t0 + 1000 * MS, [block(VIDEO, 3300, 0)]);
        // The blackout: nothing arrived, and the block says nothing.
        e.handle_receiver_report(t0 + 2000 * MS, [block(VIDEO, 3300, 0)]);
        // Then 600 packets, half of them lost (the blackout's).
        let now = t0 + 3000 * MS;
        e.handle_receiver_report(now, [block(VIDEO, 3900, 128)]);
        assert_eq!(e.last_loss(), Some(0.5));
        assert!(e.lossy(now));
        // A report lost on the way: the next one, 2 s after the one before, counts.
        let later = now + 2000 * MS;
        e.handle_receiver_report(later, [block(VIDEO, 4500, 26)]);
        assert!((e.last_loss().unwrap() - 26.0 / 256.0).abs() < 1e-9);
    }

    /// A full layer the receiver just started getting: its blocks count the packets it
    /// was never sent as lost, so they only set the count, and the first block taken
    /// weighs only the packets since.
    #[test]
    fn blocks_not_judged_only_set_the_count() {
        let t0 = Instant::now();
        let mut e = downlink();
        let settling = |seq, loss| LossReport {
            judged: false,
            ..block(VIDEO, seq, loss)
        };
        e.handle_receiver_report(t0, [block(AUDIO, 1000, 0), settling(9000, 255)]);
        e.handle_receiver_report(
            t0 + 1000 * MS,
            [block(AUDIO, 1050, 0), settling(12000, 200)],
        );
        assert!(!e.lossy(t0 + 1000 * MS));
        // Judged from here: 300 video packets with 10% lost, 50 audio without.
        let now = t0 + 2000 * MS;
        e.handle_receiver_report(now, [block(AUDIO, 1100, 0), block(VIDEO, 12300, 26)]);
        let loss = e.last_loss().unwrap();
        assert!((loss - 300.0 * 26.0 / 256.0 / 350.0).abs() < 1e-9, "{loss}");
    }

    /// Blocks are weighted by their streams' packets however many streams a receiver
    /// gets: here 80, a conference of 40 members.
    #[test]
    fn loss_is_weighted_across_many_streams() {
        let t0 = Instant::now();
        let mut e = DownlinkEstimate::new(EstimateConfig::default());
        let ssrcs: Vec<Ssrc> = (0..80u32).map(|k| Ssrc(0x1000_0000 + 7919 * k)).collect();
        // Every stream but the last is clean video, 300 packets a second; the last is
        // audio, 50 packets a second, half of them lost.
        let blocks = |i: u32| {
            ssrcs.iter().enumerate().map(move |(k, &ssrc)| match k {
                79 => block(ssrc, 50 * i, 128),
                _ => block(ssrc, 300 * i, 0),
            })
        };
        for i in 1..=3 {
            e.handle_receiver_report(t0 + 1000 * MS * i, blocks(i));
        }
        // 25 of 79 × 300 + 50 packets: 0.1%, not the plain mean's 0.6%.
        let loss = e.last_loss().unwrap();
        assert!((loss - 25.0 / 23_750.0).abs() < 1e-9, "{loss}");
    }

    /// Streams that stopped being reported give up their places to new ones.
    #[test]
    fn streams_no_longer_reported_give_up_their_places() {
        let t0 = Instant::now();
        let mut e = DownlinkEstimate::new(EstimateConfig::default());
        let gone = (0..200u32).map(|k| block(Ssrc(0x2000_0000 + k), 100, 0));
        e.handle_receiver_report(t0, gone);
        let (video, audio) = (Ssrc(0x3000_0000), Ssrc(0x3000_0001));
        for i in 1..=70u32 {
            e.handle_receiver_report(
                t0 + 1000 * MS * i,
                [block(video, 300 * i, 0), block(audio, 50 * i, 128)],
            );
        }
        // The two new streams found places once the old ones were stale: weighted.
        let loss = e.last_loss().unwrap();
        assert!((loss - 25.0 / 350.0).abs() < 1e-9, "{loss}");
    }

    #[test]
    fn frequent_reports_are_merged() {
        let t0 = Instant::now();
        let mut e = DownlinkEstimate::new(EstimateConfig::default());
        // 900 kbit/s for 2 s: below the estimate, and the bound (1.35 Mbit/s) is above
        // where five increases take it.
        for i in 0..1000u32 {
            e.handle_sent(t0 + 2 * MS * i, 225);
        }
        let now = t0 + 1000 * MS;
        // 100 reports within a second: five updates (every 200 ms), not 100.
        for i in 0..100u32 {
            e.handle_receiver_report(
                now + 10 * MS * i,
                [LossReport {
                    ssrc: VIDEO,
                    fraction_lost: 0,
                    highest_seq: 10 * i,
                    jitter: Duration::ZERO,
                    resumed_at: None,
                    judged: true,
                }],
            );
        }
        let five = 1_000_000.0 * 1.05f64.powi(5);
        assert!(near(e.loss_based as u64, five as u64), "{}", e.loss_based);
    }

    #[test]
    fn sent_rate_is_measured_over_the_last_second() {
        let t0 = Instant::now();
        let mut m = RateMeter::new(Duration::from_secs(1));
        assert_eq!(m.rate_bps(t0), 0.0);
        // 1 Mbit/s for 3 s, in 1000-byte packets every 8 ms.
        for i in 0..375u32 {
            m.add(t0 + 8 * MS * i, 1000);
        }
        let r = m.rate_bps(t0 + 3000 * MS);
        assert!((r - 1e6).abs() < 0.05e6, "{r}");
        // Early on, the window is what has elapsed, not a full second.
        let mut m = RateMeter::new(Duration::from_secs(1));
        for i in 0..25u32 {
            m.add(t0 + 8 * MS * i, 1000);
        }
        let r = m.rate_bps(t0 + 200 * MS);
        assert!((r - 1e6).abs() < 0.05e6, "{r}");
        // Silence: the rate falls to zero once the window has passed.
        assert_eq!(m.rate_bps(t0 + 5000 * MS), 0.0);
        // Time going backwards counts as none passed.
        assert!(m.rate_bps(t0) > 0.0);
    }

    #[test]
    fn hostile_input_never_panics() {
        let t0 = Instant::now() + Duration::from_secs(1000);
        let mut e = DownlinkEstimate::new(EstimateConfig {
            initial_bps: 0,
            min_bps: u64::MAX,
            max_bps: 0,
            sent_headroom: f64::NAN,
            sent_window: Duration::ZERO,
            remb_timeout: Duration::ZERO,
            jitter_hold: Duration::ZERO,
            min_update_interval: Duration::MAX,
            queue_high: Some(Duration::ZERO),
            base_rtt_window: Duration::ZERO,
            first_report_loss: false,
            max_streams: 0,
        });
        e.handle_sent(t0, usize::MAX);
        e.handle_sent(t0, usize::MAX);
        e.handle_sent(t0 - Duration::from_secs(999), 1);
        e.handle_remb(t0, u64::MAX);
        e.handle_receiver_report(t0, []);
        for i in 0..40u32 {
            let rtt = [Duration::ZERO, Duration::MAX, Duration::from_nanos(1)][i as usize % 3];
            e.handle_round_trip(t0 + Duration::from_secs(u64::from(i)), rtt);
            let blocks = (0..20u32).map(|k| LossReport {
                ssrc: Ssrc(k),
                fraction_lost: (i * 7 + k) as u8,
                highest_seq: u32::MAX - i * k,
                jitter: Duration::MAX,
                resumed_at: None,
                judged: true,
            });
            e.handle_receiver_report(t0 + Duration::from_secs(u64::from(i)), blocks);
        }
        let _ = (e.estimate(t0), e.app_limited(t0), e.last_loss());
        let _ = e.estimate(t0 + Duration::from_secs(1_000_000_000));
        let mut e = DownlinkEstimate::new(EstimateConfig::default());
        assert_eq!(e.estimate(t0), 0, "nothing sent yet");
        e.handle_remb(t0, 0);
        e.handle_sent(t0, 1000);
        assert_eq!(e.estimate(t0), 0, "a REMB of 0 caps at 0");
    }
}
