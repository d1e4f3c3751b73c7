//! Receive-side, delay-based bandwidth estimation: how many bits per second can cross a
//! link before a queue builds up on it, for a REMB (draft-alvestrand-rmcat-remb).
//!
//! Two ends run it. A participant (`blindfold-client`) runs it on its downlink, over
//! every sender's packets, and sends the relay the estimate. The relay runs it on each
//! sender's uplink, over that sender's packets as they arrive, and asks the sender to
//! fit its full layer under it (see `Engine`'s bandwidth docs). Neither needs a key:
//! abs-send-time is a header extension, readable and left as it is.
//!
//! [`Bwe`] is Google Congestion Control's delay-based controller as a receiver runs it
//! (draft-ietf-rmcat-gcc-02 §5; libwebrtc's `remote_bitrate_estimator_abs_send_time`,
//! `overuse_estimator`, `overuse_detector` and `aimd_rate_control` are the reference).
//! It is sans-IO: time comes in as `now`, nothing is allocated after [`Bwe::new`] (the
//! per-sender state, the send-period history and the rate window are fixed-size
//! arrays), and no input makes it panic.
//!
//! # Input
//!
//! [`Bwe::on_packet`] (or [`Bwe::on_packet_from`]) for every received media packet that
//! carries the abs-send-time header extension: its arrival time, the extension's 24-bit
//! value (6.18 fixed-point seconds of the *sender's* clock, wrapping every 64 s) and its
//! size. All arithmetic on send times is modulo 2^24, so the wrap is invisible.
//!
//! Through an SFU that does not rewrite headers (the relay may not: the header is
//! authenticated end to end) each remote sender stamps its own clock, so send times of
//! two senders cannot be compared. [`Bwe::on_packet_from`] takes a key for the clock
//! (the participant passes the sender's id): packets are grouped and differenced per
//! key (up to [`MAX_CLOCKS`] at once, the least recently heard one making room), and the
//! delay variations of all of them feed the one filter, detector and rate controller —
//! they all cross the same downlink, whose queue is what is measured.
//!
//! # The pipeline, per packet group
//!
//! 1. **Pre-filtering (§5.2).** Packets sent within 5 ms of a group's first packet form
//!    one group (a frame, or a pacer burst); so does a packet arriving within 5 ms of
//!    the group's last with a smaller arrival than send spacing, as long as the group
//!    spans under 100 ms of arrivals (a burst that sat in a queue). A group's arrival
//!    time is its last packet's. When the first packet of the next group arrives, the
//!    group is complete and the inter-group delay variation is
//!    `d(i) = (t(i) − t(i−1)) − (T(i) − T(i−1))` (arrival minus send spacing of the
//!    groups' last packets). A packet sent before its group's first is reordered and
//!    only counted for the rate; three such in a row (the sender's clock jumped back),
//!    or a gap of more than 2 s in either clock, restart that sender's history.
//! 2. **Arrival-time filter (§5.3): a Kalman filter**, in the two-state form libwebrtc's
//!    receive-side estimator runs: it tracks the queuing-delay gradient `m` and the
//!    inverse bottleneck capacity `1/C` from `d(i) = ΔL(i)/C + m(i) + v(i)`, where
//!    `ΔL(i)` is the size difference of the two groups. The size term is what keeps a
//!    keyframe — a large group that takes longer to cross the link, not a sign of a
//!    queue — from looking like over-use (the draft's §5.3 writes the filter for `m`
//!    alone; earlier GCC drafts and libwebrtc carry the size term). Process noise
//!    10⁻¹³ (`1/C`) and 10⁻³ (`m`, the draft's q); the
//!    measurement-noise variance is an exponential average of the squared residual
//!    (`α = (1 − χ)^(30·T_min/1000)`, `T_min` the shortest send spacing of the last 60
//!    groups, `χ` = 0.01 for the first 300 groups then 0.002), with residuals clipped at
//!    3 standard deviations, floored at 1 ms², and updated only in the normal state.
//!    The trendline estimator that replaced this filter in libwebrtc's send-side
//!    estimator needs several more groups to show a sudden queue (its 20-group
//!    regression behind a 0.9 smoothing), too slow for a REMB out within ~100 ms.
//! 3. **Over-use detector (§5.4).** The signal is `min(n, 60) · m` (`n` the number of
//!    groups filtered so far: libwebrtc's scaling, which makes the 12.5 ms threshold
//!    meaningful for a per-group gradient). Above the threshold for at least 10 ms of
//!    arrival time (the receiver's clock: half the first group's spacing, then each
//!    group's), over at least two groups, and not decreasing anywhere in that streak
//!    (a fall restarts it: a draining queue is not over-use): **over-use**. Below
//!    minus the threshold: **under-use**. Otherwise normal.
//!
//!    One addition to the draft and libwebrtc, for senders that do not pace (this
//!    participant library's `Driver`, and the relay, which forwards as it
//!    receives): a group more than twice its sender's average group size (a keyframe,
//!    the average following each group by 1/16) cannot end an over-use streak, nor can
//!    the group after it; over-use needs two more groups. A keyframe sent at once
//!    holds up the frames behind it on a link not much faster than it, and the first
//!    of them arrives too late for the size term to explain — one group of apparent
//!    queue growth, then the queue drains. Without this, keyframes alone held a steady
//!    closed loop at a third of the link; with it, a real over-use that starts with a
//!    keyframe is seen at most two groups later.
//!
//!    The threshold adapts:
//!    `γ += Δt · k · (|signal| − γ)`, `k_u` = 0.01 when the signal is above it, `k_d` =
//!    0.00018 below (Δt in ms, at most 100), not at all when the signal is more than
//!    15 ms beyond it (a sudden drop must not raise it), kept within 6..=600 ms,
//!    starting at 12.5 ms.
//! 4. **Rate controller (§5.5)**, a state machine over Increase, Hold and Decrease:
//!    normal moves Hold to Increase, over-use any state to Decrease, under-use to Hold
//!    (the queue is draining: do not add to it). `R_r` is the incoming bitrate, bytes
//!    received over the last 0.5 s (50 buckets of 10 ms).
//!    - *Increase*: multiplicative, ×1.08 per second, while the link capacity is
//!      unknown; additive, about one packet per response time (`max(4 kbit/s, packet
//!      bits / 0.6 s)` per second, the packet being a 30 fps frame's share of at most
//!      1200 bytes; 0.6 s is twice 100 ms plus an assumed 200 ms RTT, the receiver does
//!      not know the RTT) when `R_r` is within three standard deviations of the average
//!      `R_r` at past over-uses (the link capacity estimate). The estimate never grows
//!      past `1.5 · R_r`: what has not been tried is not vouched for. (A fall in `R_r`
//!      does not pull it down: a sender pausing is not congestion.) One addition, for
//!      an SFU's receiver: when `R_r` has stayed above 1.5 × the estimate for 1 s, in
//!      Increase all along (no queue building or draining), the estimate jumps to
//!      `R_r` — the link carries that. The relay switching a receiver to a full layer
//!      multiplies its incoming rate at once, and ×1.08 a second would take half a
//!      minute to follow (libwebrtc's controller has a sender's probes instead). The
//!      factor, the second and the reset on any over- or under-use keep it from
//!      following a queue draining at the link's rate after a decrease: that held the
//!      sender at the link's rate on a standing queue of 0.15 s (and, following `R_r`
//!      whenever above, of 1 s) in the closed-loop test, which checks the queue, not
//!      only the values.
//!    - *Decrease*: to `β · R_r`, β = 0.85, unless that is higher than the estimate;
//!      then Hold until the detector is normal again. A further decrease in the same
//!      over-use waits 200 ms (an assumed RTT: time for the previous one to act), unless
//!      `R_r` is under half the estimate.
//!    - *Initial estimate*: [`BweConfig::initial_bps`], default 1 Mbit/s (the relay's
//!      own starting downlink estimate). It is only a guess: no REMB carries it. Once
//!      `R_r` has been measured for 1 s, the estimate becomes `R_r` (libwebrtc waits
//!      5 s; 1 s replaces the guess sooner) and REMBs start. An over-use before then
//!      ends the guess too: the estimate becomes the smaller of it and `β · R_r`.
//!    - The estimate stays within [`BweConfig::min_bps`] (30 kbit/s) and
//!      [`BweConfig::max_bps`] (100 Mbit/s).
//! 5. **REMB (§5.6)**: [`Bwe::poll_remb`] hands out a value to send once the estimate
//!    is measured, then at most once per [`BweConfig::remb_interval`] (1 s), and at once
//!    when the estimate has dropped more than 3% below the value last handed out — so
//!    the relay learns of a queue within about 100 ms of its start, before packets are
//!    lost. (In the tests, 106 ms after the first packet a link could not carry when a
//!    5 Mbit/s link under 1.6 Mbit/s fell to 300 kbit/s, 138 ms when 250 kbit/s into
//!    300 kbit/s jumped to 1.6 Mbit/s: 1200-byte packets take 32 ms each at that rate,
//!    and the detector needs the third one's delay, known when the fourth arrives.)
//!
//! Times are handled in milliseconds since the first packet, as `f64`. A `now` earlier
//! than one already seen counts as the latest seen (time does not go backwards).

use std::time::{Duration, Instant};

/// Senders' clocks followed at once by [`Bwe::on_packet_from`].
pub const MAX_CLOCKS: usize = 16;

/// The abs-send-time field: 24 bits.
const AST_MASK: u32 = 0x00ff_ffff;
/// Half the field: a difference below this is forward in time.
const AST_HALF: u32 = 0x0080_0000;
/// Milliseconds per abs-send-time tick (2^-18 s).
const MS_PER_TICK: f64 = 1000.0 / 262_144.0;

/// Packets sent within this of their group's first packet join the group (§5.2).
pub(crate) const GROUP_SPAN_MS: f64 = 5.0;
/// A packet arriving within this of the group's last, with a smaller arrival than send
/// spacing, joins the group (a burst released by a queue) …
const BURST_ARRIVAL_MS: f64 = 5.0;
/// … as long as the group spans less than this of arrival time.
const MAX_BURST_MS: f64 = 100.0;
/// A gap longer than this (arrival or send time) restarts a sender's history.
const STREAM_GAP_MS: f64 = 2000.0;
/// A group this many times its clock's average size is large (a keyframe) …
const LARGE_GROUP: f64 = 2.0;
/// … (the average follows each group by this fraction).
const GROUP_SIZE_GAIN: f64 = 1.0 / 16.0;
/// This many reordered packets in a row restart a sender's history.
const REORDER_RESET: u32 = 3;

/// Kalman filter: process noise of 1/C (ms per byte) and of the gradient m (ms).
const PROCESS_NOISE: [f64; 2] = [1e-13, 1e-3];
/// Initial covariance diagonal.
const INITIAL_E: [f64; 2] = [100.0, 0.1];
/// Initial 1/C: 8/512 ms per byte, i.e. 512 kbit/s.
const INITIAL_SLOPE: f64 = 8.0 / 512.0;
/// Initial measurement-noise variance (ms²), and its floor.
const INITIAL_NOISE_VAR: f64 = 50.0;
const MIN_NOISE_VAR: f64 = 1.0;
/// The noise filter's χ for the first groups, and after.
const CHI_START: f64 = 0.01;
const CHI: f64 = 0.002;
const CHI_START_GROUPS: u32 = 300;
/// Send spacings remembered for the shortest one (the draft's f_max).
const PERIOD_HISTORY: usize = 60;
/// The group counter stops here.
const MAX_GROUP_COUNT: u32 = 1000;

/// Detector: the gradient is scaled by min(groups, this).
const MAX_SCALE: u32 = 60;
const INITIAL_THRESHOLD: f64 = 12.5;
const K_UP: f64 = 0.01;
const K_DOWN: f64 = 0.00018;
const MIN_THRESHOLD: f64 = 6.0;
const MAX_THRESHOLD: f64 = 600.0;
/// The threshold does not follow a signal this far beyond it.
const MAX_ADAPT_OFFSET: f64 = 15.0;
/// Longest step of the threshold's adaptation.
const MAX_ADAPT_MS: f64 = 100.0;
/// Over-use must last this long (arrival time) …
const OVERUSE_MS: f64 = 10.0;
/// … over at least this many groups …
const OVERUSE_GROUPS: u32 = 2;
/// … and at least this many groups after a large one.
const AFTER_LARGE_GROUPS: u32 = 2;

/// Rate control.
const BETA: f64 = 0.85;
const MAX_RATE_FACTOR: f64 = 1.5;
const MULTIPLICATIVE_PER_S: f64 = 1.08;
const MIN_ADDITIVE_BPS_PER_S: f64 = 4000.0;
/// Twice (100 ms + an assumed 200 ms RTT).
const RESPONSE_S: f64 = 0.6;
const ASSUMED_FPS: f64 = 30.0;
const PACKET_BITS: f64 = 1200.0 * 8.0;
/// A further decrease within one over-use waits this long.
const REDUCE_INTERVAL_MS: f64 = 200.0;
/// `R_r` measured this long replaces the initial estimate.
const INIT_MS: f64 = 1000.0;
/// `R_r` above this many times the estimate for this long, in Increase throughout,
/// raises the estimate to it.
const FOLLOW_FACTOR: f64 = 1.5;
const FOLLOW_MS: f64 = 1000.0;

/// Incoming-rate window: buckets of 10 ms over 0.5 s.
const BUCKET_MS: f64 = 10.0;
const BUCKETS: usize = 50;
const WINDOW_MS: f64 = BUCKET_MS * BUCKETS as f64;
/// The rate is not reported from less than this much time.
const MIN_RATE_SPAN_MS: f64 = 100.0;

/// A REMB goes at once when the estimate falls below this fraction of the last sent.
const DROP_NOW: f64 = 0.97;

/// Settings of a [`Bwe`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BweConfig {
    /// The estimate before the incoming rate has been measured for 1 s (never sent in
    /// a REMB: [`Bwe::poll_remb`] waits for a measured one).
    pub initial_bps: u64,
    /// The estimate never goes below this.
    pub min_bps: u64,
    /// Nor above this.
    pub max_bps: u64,
    /// [`Bwe::poll_remb`] hands out a value at least this often (and no more often,
    /// but for a drop of more than 3%).
    pub remb_interval: Duration,
}

impl Default for BweConfig {
    /// 1 Mbit/s to start (the relay's own starting estimate), 30 kbit/s to 100 Mbit/s,
    /// a REMB a second.
    fn default() -> Self {
        BweConfig {
            initial_bps: 1_000_000,
            min_bps: 30_000,
            max_bps: 100_000_000,
            remb_interval: Duration::from_secs(1),
        }
    }
}

/// The over-use detector's state (§5.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Usage {
    /// Delay is steady.
    #[default]
    Normal,
    /// A queue is building: the link is over-used.
    Overusing,
    /// A queue is draining.
    Underusing,
}

/// What a [`Bwe`] has seen and done.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BweStats {
    /// Packets given to `on_packet`/`on_packet_from`.
    pub packets: u64,
    /// Completed groups whose delay variation went through the filter.
    pub groups: u64,
    /// Times the detector signalled over-use.
    pub overuses: u64,
    /// Times the rate controller decreased the estimate.
    pub decreases: u64,
    /// Sender histories restarted (gaps, clock jumps, reordering).
    pub resets: u64,
    /// Values handed out by [`Bwe::poll_remb`], [`Bwe::poll_remb_drop`] and
    /// [`Bwe::take_remb`].
    pub rembs: u64,
}

/// A receive-side delay-based bandwidth estimator; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct Bwe {
    config: BweConfig,
    /// The first packet's arrival: time zero of every `*_ms` field.
    base: Option<Instant>,
    latest_ms: f64,
    /// The instant `latest_ms` was last computed for: packets handled in one batch
    /// share their arrival instant, and converting it costs more than comparing it.
    latest_at: Option<Instant>,
    clocks: [Clock; MAX_CLOCKS],
    filter: Filter,
    detector: Detector,
    window: RateWindow,
    aimd: Aimd,
    /// The last value handed out for a REMB, and when.
    last_remb: Option<(Instant, u64)>,
    /// The rate bucket the rate controller last ran in.
    rated_bucket: i64,
    stats: BweStats,
}

impl Default for Bwe {
    fn default() -> Self {
        Bwe::new(BweConfig::default())
    }
}

impl Bwe {
    /// An estimator with these settings (`min_bps` above `max_bps` counts as
    /// `max_bps`; the initial estimate is clamped to the two).
    pub fn new(mut config: BweConfig) -> Self {
        config.min_bps = config.min_bps.min(config.max_bps);
        let initial = config.initial_bps.clamp(config.min_bps, config.max_bps);
        Bwe {
            config,
            base: None,
            latest_ms: 0.0,
            latest_at: None,
            clocks: [Clock::default(); MAX_CLOCKS],
            filter: Filter::new(),
            detector: Detector::new(),
            window: RateWindow::new(),
            aimd: Aimd::new(initial as f64),
            last_remb: None,
            rated_bucket: i64::MIN,
            stats: BweStats::default(),
        }
    }

    /// The settings.
    pub fn config(&self) -> &BweConfig {
        &self.config
    }

    /// A received media packet carrying abs-send-time (`abs_send_time`: the
    /// extension's 24-bit value; higher bits are ignored), `size_bytes` long, all from
    /// one sender's clock. Same as [`on_packet_from`](Self::on_packet_from) with
    /// source 0.
    pub fn on_packet(&mut self, now: Instant, abs_send_time: u32, size_bytes: usize) {
        self.on_packet_from(now, 0, abs_send_time, size_bytes);
    }

    /// A received media packet carrying abs-send-time, from the sender whose clock
    /// `source` names (any key; the participant uses the sender's id). Packets should
    /// come in arrival order; anything else is tolerated.
    pub fn on_packet_from(
        &mut self,
        now: Instant,
        source: u64,
        abs_send_time: u32,
        size_bytes: usize,
    ) {
        let t = self.time_ms(now);
        let size = u64::try_from(size_bytes).unwrap_or(u64::MAX);
        self.stats.packets += 1;
        self.window.add(t, size);
        let at = self.clock_for(source, t);
        let sample = self.clocks[at].on_packet(t, abs_send_time & AST_MASK, size);
        let sample = match sample {
            Step::Sample(s) => s,
            Step::Reset => {
                self.stats.resets += 1;
                return self.update_rate(t);
            }
            // Within a group the rate controller runs once per rate bucket (10 ms): a
            // burst of packets arriving together has nothing new to tell it.
            Step::None if RateWindow::bucket(t) == self.rated_bucket => return,
            Step::None => return self.update_rate(t),
        };
        self.stats.groups += 1;
        self.filter.update(sample, self.detector.usage);
        if self
            .detector
            .detect(&sample, self.filter.offset, self.filter.groups, t)
        {
            self.stats.overuses += 1;
        }
        self.update_rate(t);
    }

    fn update_rate(&mut self, t: f64) {
        self.rated_bucket = RateWindow::bucket(t);
        let rate = self.window.rate_bps(t);
        let usage = self.detector.usage;
        if self.aimd.update(t, usage, rate, &self.config) {
            self.stats.decreases += 1;
        }
    }

    /// The current estimate in bits per second; `None` before the first packet.
    pub fn estimate_bps(&self) -> Option<u64> {
        self.base?;
        Some(self.aimd.estimate.round() as u64)
    }

    /// Whether the estimate has been measured (the incoming rate for 1 s, or an
    /// over-use) rather than being the configured initial value.
    pub fn is_measured(&self) -> bool {
        self.aimd.initialized
    }

    /// The incoming bitrate `R_r` over the last 0.5 s, as of the latest packet or poll
    /// (`None` before 100 ms of packets, or after 0.5 s without any).
    pub fn incoming_bps(&self) -> Option<u64> {
        self.window
            .rate_bps(self.latest_ms)
            .map(|r| r.round() as u64)
    }

    /// The detector's state after the latest group.
    pub fn usage(&self) -> Usage {
        self.detector.usage
    }

    /// Counters.
    pub fn stats(&self) -> &BweStats {
        &self.stats
    }

    /// A value to send in a REMB now, if one is due: the first measured estimate (see
    /// [`is_measured`](Self::is_measured)), then at most one per
    /// [`BweConfig::remb_interval`], and at once when the estimate has fallen more than
    /// 3% below the value last handed out. The value handed out counts as sent.
    pub fn poll_remb(&mut self, now: Instant) -> Option<u64> {
        let estimate = self.measured()?;
        let due = match self.last_remb {
            None => true,
            Some((at, sent)) => {
                now.saturating_duration_since(at) >= self.config.remb_interval
                    || dropped(estimate, sent)
            }
        };
        due.then(|| self.hand_out(now, estimate))
    }

    /// Only the drop rule of [`poll_remb`](Self::poll_remb): a value when the estimate
    /// has fallen more than 3% below the value last handed out, for a caller that sends
    /// the periodic values on its own schedule ([`take_remb`](Self::take_remb)). Counts
    /// as sent.
    pub fn poll_remb_drop(&mut self, now: Instant) -> Option<u64> {
        let estimate = self.measured()?;
        let (_, sent) = self.last_remb?;
        dropped(estimate, sent).then(|| self.hand_out(now, estimate))
    }

    /// The measured estimate to send now whatever the timing (a periodic report is
    /// going out anyway); counts as sent, so the next periodic value from
    /// [`poll_remb`](Self::poll_remb) is due a [`BweConfig::remb_interval`] later.
    /// `None` while the estimate is not measured.
    pub fn take_remb(&mut self, now: Instant) -> Option<u64> {
        let estimate = self.measured()?;
        Some(self.hand_out(now, estimate))
    }

    /// When [`poll_remb`](Self::poll_remb) will next hand out a value without a drop:
    /// `None` while the estimate is not measured; the first packet's arrival (already
    /// past) if none was handed out yet.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let base = self.base?;
        if !self.aimd.initialized {
            return None;
        }
        Some(match self.last_remb {
            None => base,
            Some((at, _)) => at.checked_add(self.config.remb_interval).unwrap_or(at),
        })
    }

    /// The estimate if it is measured.
    fn measured(&self) -> Option<u64> {
        if self.aimd.initialized {
            self.estimate_bps()
        } else {
            None
        }
    }

    fn hand_out(&mut self, now: Instant, estimate: u64) -> u64 {
        self.last_remb = Some((now, estimate));
        self.stats.rembs += 1;
        estimate
    }

    /// Milliseconds since the first packet, never less than the latest seen.
    fn time_ms(&mut self, now: Instant) -> f64 {
        if self.latest_at == Some(now) {
            return self.latest_ms;
        }
        self.latest_at = Some(now);
        let base = *self.base.get_or_insert(now);
        let t = now.saturating_duration_since(base).as_secs_f64() * 1000.0;
        self.latest_ms = self.latest_ms.max(t);
        self.latest_ms
    }

    /// The slot following `source`'s clock: its own, a free one, or the one heard from
    /// least recently (whose history restarts).
    fn clock_for(&mut self, source: u64, t: f64) -> usize {
        if let Some(i) = self
            .clocks
            .iter()
            .position(|c| c.in_use && c.source == source)
        {
            return i;
        }
        let i = match self.clocks.iter().position(|c| !c.in_use) {
            Some(i) => i,
            None => {
                let mut oldest = 0;
                for (i, c) in self.clocks.iter().enumerate() {
                    if c.last_ms < self.clocks[oldest].last_ms {
                        oldest = i;
                    }
                }
                oldest
            }
        };
        self.clocks[i] = Clock {
            in_use: true,
            source,
            last_ms: t,
            ..Clock::default()
        };
        i
    }
}

// ---------------------------------------------------------------------------------------
// Pre-filtering (§5.2).

/// A group of packets sent within 5 ms.
#[derive(Debug, Clone, Copy, Default)]
struct Group {
    /// Send time of the first packet (24-bit abs-send-time).
    first_ts: u32,
    /// Latest send time in the group.
    ts: u32,
    first_arrival: f64,
    /// Arrival of the latest packet.
    complete: f64,
    bytes: u64,
}

/// One completed group's differences from the one before.
#[derive(Debug, Clone, Copy)]
struct Sample {
    arrival_delta: f64,
    send_delta: f64,
    size_delta: f64,
    /// The group is more than twice its clock's average group size (a keyframe).
    large: bool,
}

enum Step {
    None,
    Sample(Sample),
    Reset,
}

/// One sender clock's grouping state.
#[derive(Debug, Clone, Copy, Default)]
struct Clock {
    in_use: bool,
    source: u64,
    last_ms: f64,
    current: Option<Group>,
    previous: Option<Group>,
    reordered: u32,
    /// Average size of this clock's groups (0: none yet).
    avg_bytes: f64,
}

/// `to − from` in milliseconds if `to` is not before `from` (modulo 2^24 ticks).
pub(crate) fn forward_ms(from: u32, to: u32) -> Option<f64> {
    let d = to.wrapping_sub(from) & AST_MASK;
    (d < AST_HALF).then(|| f64::from(d) * MS_PER_TICK)
}

impl Clock {
    fn restart(&mut self, t: f64, ts: u32, size: u64) -> Step {
        self.previous = None;
        self.reordered = 0;
        self.current = Some(Group {
            first_ts: ts,
            ts,
            first_arrival: t,
            complete: t,
            bytes: size,
        });
        Step::Reset
    }

    fn on_packet(&mut self, t: f64, ts: u32, size: u64) -> Step {
        let gap = t - self.last_ms;
        self.last_ms = t;
        let Some(mut cur) = self.current else {
            let _ = self.restart(t, ts, size);
            return Step::None;
        };
        if gap > STREAM_GAP_MS {
            return self.restart(t, ts, size);
        }
        let Some(since_first) = forward_ms(cur.first_ts, ts) else {
            // Sent before the group's first packet: reordered, or (several in a row) the
            // sender's clock jumped back.
            self.reordered += 1;
            if self.reordered >= REORDER_RESET {
                return self.restart(t, ts, size);
            }
            return Step::None;
        };
        self.reordered = 0;
        if since_first > STREAM_GAP_MS {
            return self.restart(t, ts, size);
        }
        if !self.starts_group(&cur, t, ts, since_first) {
            if forward_ms(cur.ts, ts).is_some() {
                cur.ts = ts;
            }
            cur.bytes = cur.bytes.saturating_add(size);
            cur.complete = t;
            self.current = Some(cur);
            return Step::None;
        }
        // The current group is complete: difference it with the previous one.
        // (A previous group that took in a later-sent burst may end after this one
        // starts: no sample then.)
        let bytes = cur.bytes as f64;
        let large = self.avg_bytes > 0.0 && bytes > LARGE_GROUP * self.avg_bytes;
        self.avg_bytes = if self.avg_bytes > 0.0 {
            self.avg_bytes + (bytes - self.avg_bytes) * GROUP_SIZE_GAIN
        } else {
            bytes
        };
        let step = match self
            .previous
            .and_then(|p| Some((p, forward_ms(p.ts, cur.ts)?)))
        {
            Some((prev, send_delta)) => Step::Sample(Sample {
                arrival_delta: cur.complete - prev.complete,
                send_delta,
                size_delta: bytes - prev.bytes as f64,
                large,
            }),
            None => Step::None,
        };
        self.previous = Some(cur);
        self.current = Some(Group {
            first_ts: ts,
            ts,
            first_arrival: t,
            complete: t,
            bytes: size,
        });
        step
    }

    /// Whether a packet sent at `ts`, arriving at `t`, starts a new group.
    fn starts_group(&self, cur: &Group, t: f64, ts: u32, since_first: f64) -> bool {
        let Some(send_delta) = forward_ms(cur.ts, ts) else {
            // Between the group's first and latest send times: inside the group.
            return false;
        };
        let arrival_delta = t - cur.complete;
        if send_delta < 0.5 {
            return false;
        }
        let burst = arrival_delta - send_delta < 0.0
            && arrival_delta <= BURST_ARRIVAL_MS
            && t - cur.first_arrival < MAX_BURST_MS;
        !burst && since_first > GROUP_SPAN_MS
    }
}

// ---------------------------------------------------------------------------------------
// Arrival-time filter (§5.3).

/// The two-state Kalman filter over (1/C, m).
#[derive(Debug, Clone, Copy)]
struct Filter {
    /// 1/C in ms per byte.
    slope: f64,
    /// The queuing-delay gradient m, ms per group.
    offset: f64,
    prev_offset: f64,
    e: [[f64; 2]; 2],
    avg_noise: f64,
    var_noise: f64,
    /// Groups filtered (stops at [`MAX_GROUP_COUNT`]).
    groups: u32,
    periods: [f64; PERIOD_HISTORY],
    periods_len: usize,
    periods_next: usize,
}

impl Filter {
    fn new() -> Self {
        Filter {
            slope: INITIAL_SLOPE,
            offset: 0.0,
            prev_offset: 0.0,
            e: [[INITIAL_E[0], 0.0], [0.0, INITIAL_E[1]]],
            avg_noise: 0.0,
            var_noise: INITIAL_NOISE_VAR,
            groups: 0,
            periods: [0.0; PERIOD_HISTORY],
            periods_len: 0,
            periods_next: 0,
        }
    }

    /// The shortest send spacing among the last 60 groups, this one's included.
    fn min_period(&mut self, send_delta: f64) -> f64 {
        let min = self.periods[..self.periods_len]
            .iter()
            .fold(send_delta, |m, &p| m.min(p));
        self.periods[self.periods_next] = send_delta;
        self.periods_next = (self.periods_next + 1) % PERIOD_HISTORY;
        self.periods_len = (self.periods_len + 1).min(PERIOD_HISTORY);
        min
    }

    fn update(&mut self, s: Sample, usage: Usage) {
        let min_period = self.min_period(s.send_delta);
        self.groups = (self.groups + 1).min(MAX_GROUP_COUNT);
        self.e[0][0] += PROCESS_NOISE[0];
        self.e[1][1] += PROCESS_NOISE[1];
        // Leaving a state the filter lags behind: let m move faster.
        if (usage == Usage::Overusing && self.offset < self.prev_offset)
            || (usage == Usage::Underusing && self.offset > self.prev_offset)
        {
            self.e[1][1] += 10.0 * PROCESS_NOISE[1];
        }
        let h = [s.size_delta, 1.0];
        let eh = [
            self.e[0][0] * h[0] + self.e[0][1] * h[1],
            self.e[1][0] * h[0] + self.e[1][1] * h[1],
        ];
        let d = s.arrival_delta - s.send_delta;
        let residual = d - self.slope * h[0] - self.offset;
        if usage == Usage::Normal {
            let limit = 3.0 * self.var_noise.sqrt();
            self.update_noise(residual.clamp(-limit, limit), min_period);
        }
        let denom = self.var_noise + h[0] * eh[0] + h[1] * eh[1];
        let k = [eh[0] / denom, eh[1] / denom];
        let ikh = [
            [1.0 - k[0] * h[0], -k[0] * h[1]],
            [-k[1] * h[0], 1.0 - k[1] * h[1]],
        ];
        let e = self.e;
        self.e = [
            [
                ikh[0][0] * e[0][0] + ikh[0][1] * e[1][0],
                ikh[0][0] * e[0][1] + ikh[0][1] * e[1][1],
            ],
            [
                ikh[1][0] * e[0][0] + ikh[1][1] * e[1][0],
                ikh[1][0] * e[0][1] + ikh[1][1] * e[1][1],
            ],
        ];
        self.slope += k[0] * residual;
        self.prev_offset = self.offset;
        self.offset += k[1] * residual;
        let psd = self.e[0][0] >= 0.0
            && self.e[1][1] >= 0.0
            && self.e[0][0] * self.e[1][1] - self.e[0][1] * self.e[1][0] >= 0.0;
        if !psd {
            // Rounding broke the covariance: start it afresh, keep the state.
            self.e = [[INITIAL_E[0], 0.0], [0.0, INITIAL_E[1]]];
        }
        let finite = self.slope.is_finite()
            && self.offset.is_finite()
            && self.var_noise.is_finite()
            && self.avg_noise.is_finite()
            && self.e.iter().flatten().all(|v| v.is_finite());
        if !finite {
            // Only absurd input gets here; forget it.
            *self = Filter::new();
        }
    }

    fn update_noise(&mut self, residual: f64, min_period: f64) {
        let chi = if self.groups > CHI_START_GROUPS {
            CHI
        } else {
            CHI_START
        };
        let alpha = (1.0 - chi).powf(ASSUMED_FPS * min_period.max(0.0) / 1000.0);
        self.avg_noise = alpha * self.avg_noise + (1.0 - alpha) * residual;
        let dev = self.avg_noise - residual;
        self.var_noise = (alpha * self.var_noise + (1.0 - alpha) * dev * dev).max(MIN_NOISE_VAR);
    }
}

// ---------------------------------------------------------------------------------------
// Over-use detector (§5.4).

#[derive(Debug, Clone, Copy)]
struct Detector {
    threshold: f64,
    last_adapt: Option<f64>,
    /// Arrival time spent above the threshold in the current streak.
    over_ms: Option<f64>,
    over_groups: u32,
    prev_offset: f64,
    /// Groups since the latest large one (up to [`AFTER_LARGE_GROUPS`]).
    since_large: u32,
    usage: Usage,
}

impl Detector {
    fn new() -> Self {
        Detector {
            threshold: INITIAL_THRESHOLD,
            last_adapt: None,
            over_ms: None,
            over_groups: 0,
            prev_offset: 0.0,
            since_large: AFTER_LARGE_GROUPS,
            usage: Usage::Normal,
        }
    }

    /// One group's gradient estimate; returns whether it signalled over-use.
    fn detect(&mut self, s: &Sample, offset: f64, groups: u32, t: f64) -> bool {
        let mut signalled = false;
        let arrival_delta = s.arrival_delta;
        self.since_large = if s.large {
            0
        } else {
            (self.since_large + 1).min(AFTER_LARGE_GROUPS)
        };
        if groups < 2 {
            self.prev_offset = offset;
            return false;
        }
        let signal = f64::from(groups.min(MAX_SCALE)) * offset;
        if signal > self.threshold && offset < self.prev_offset {
            // Above, but falling: the queue is already draining (the tail of a burst).
            // A streak of over-use must not be falling anywhere.
            self.over_ms = None;
            self.over_groups = 0;
        } else if signal > self.threshold {
            let over = match self.over_ms {
                None => arrival_delta / 2.0,
                Some(o) => o + arrival_delta,
            };
            self.over_ms = Some(over);
            self.over_groups += 1;
            if over >= OVERUSE_MS
                && self.over_groups >= OVERUSE_GROUPS
                && self.since_large >= AFTER_LARGE_GROUPS
            {
                self.over_ms = Some(0.0);
                self.over_groups = 0;
                self.usage = Usage::Overusing;
                signalled = true;
            }
        } else if signal < -self.threshold {
            self.over_ms = None;
            self.over_groups = 0;
            self.usage = Usage::Underusing;
        } else {
            self.over_ms = None;
            self.over_groups = 0;
            self.usage = Usage::Normal;
        }
        self.prev_offset = offset;
        self.adapt(signal, t);
        signalled
    }

    fn adapt(&mut self, signal: f64, t: f64) {
        let last = *self.last_adapt.get_or_insert(t);
        self.last_adapt = Some(t);
        let magnitude = signal.abs();
        if magnitude > self.threshold + MAX_ADAPT_OFFSET {
            return;
        }
        let k = if magnitude < self.threshold {
            K_DOWN
        } else {
            K_UP
        };
        let dt = (t - last).clamp(0.0, MAX_ADAPT_MS);
        self.threshold += k * (magnitude - self.threshold) * dt;
        self.threshold = self.threshold.clamp(MIN_THRESHOLD, MAX_THRESHOLD);
    }
}

// ---------------------------------------------------------------------------------------
// Incoming rate.

/// Bytes received per 10 ms bucket over the last 0.5 s (`(bucket number, bytes)`).
///
/// The sum over the window ending at the newest bucket is kept as packets arrive, so
/// the rate asked for after each packet costs no scan; the buckets are summed afresh
/// once per bucket (every 10 ms), and when asked about a later bucket.
#[derive(Debug, Clone, Copy)]
struct RateWindow {
    buckets: [(i64, u64); BUCKETS],
    /// Start of the current measurement (reset after 0.5 s without packets).
    since: Option<f64>,
    last: f64,
    /// Bytes of the window whose newest bucket is `sum_bucket`.
    sum: u64,
    sum_bucket: i64,
}

impl RateWindow {
    fn new() -> Self {
        RateWindow {
            buckets: [(i64::MIN, 0); BUCKETS],
            since: None,
            last: 0.0,
            sum: 0,
            sum_bucket: i64::MIN,
        }
    }

    /// Bytes of the window whose newest bucket is `newest`.
    fn sum_to(&self, newest: i64) -> u64 {
        if newest == self.sum_bucket {
            return self.sum;
        }
        let oldest = newest - (BUCKETS as i64 - 1);
        self.buckets
            .iter()
            .filter(|(n, _)| (oldest..=newest).contains(n))
            .map(|(_, b)| *b)
            .fold(0, u64::saturating_add)
    }

    /// The bucket of time `t` (never negative: times count from the first packet, so
    /// truncation is the floor, without a call to libm's `floor` on every packet).
    fn bucket(t: f64) -> i64 {
        (t.max(0.0) / BUCKET_MS) as i64
    }

    fn add(&mut self, t: f64, bytes: u64) {
        if self.since.is_none() || t - self.last > WINDOW_MS {
            self.since = Some(t);
        }
        self.last = t;
        let n = Self::bucket(t);
        let slot = &mut self.buckets[n.rem_euclid(BUCKETS as i64) as usize];
        if slot.0 != n {
            *slot = (n, 0);
        }
        slot.1 = slot.1.saturating_add(bytes);
        if n == self.sum_bucket {
            self.sum = self.sum.saturating_add(bytes);
        } else {
            self.sum_bucket = i64::MIN;
            self.sum = self.sum_to(n);
            self.sum_bucket = n;
        }
    }

    fn rate_bps(&self, t: f64) -> Option<f64> {
        let since = self.since?;
        if t - self.last > WINDOW_MS || t - since < MIN_RATE_SPAN_MS {
            return None;
        }
        let newest = Self::bucket(t);
        let oldest = newest - (BUCKETS as i64 - 1);
        let bytes = self.sum_to(newest);
        let from = since.max(oldest as f64 * BUCKET_MS);
        let span = (t - from).max(MIN_RATE_SPAN_MS);
        Some(bytes as f64 * 8.0 * 1000.0 / span)
    }
}

// ---------------------------------------------------------------------------------------
// Rate controller (§5.5).

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RateState {
    Hold,
    Increase,
    Decrease,
}

/// The average incoming rate at over-uses and its spread (kbit/s), libwebrtc's
/// link-capacity estimate: near it, increase additively.
#[derive(Debug, Clone, Copy)]
struct LinkCapacity {
    estimate_kbps: Option<f64>,
    /// Normalised variance.
    deviation: f64,
}

impl LinkCapacity {
    fn new() -> Self {
        LinkCapacity {
            estimate_kbps: None,
            deviation: 0.4,
        }
    }

    fn spread(&self, est: f64) -> f64 {
        3.0 * (self.deviation * est).sqrt()
    }

    fn upper_bps(&self) -> Option<f64> {
        self.estimate_kbps.map(|e| (e + self.spread(e)) * 1000.0)
    }

    fn lower_bps(&self) -> Option<f64> {
        self.estimate_kbps.map(|e| (e - self.spread(e)) * 1000.0)
    }

    fn on_overuse(&mut self, rate_bps: f64) {
        let x = rate_bps / 1000.0;
        const ALPHA: f64 = 0.05;
        let est = match self.estimate_kbps {
            None => x,
            Some(e) => (1.0 - ALPHA) * e + ALPHA * x,
        };
        let norm = est.max(1.0);
        let err = est - x;
        self.deviation =
            ((1.0 - ALPHA) * self.deviation + ALPHA * err * err / norm).clamp(0.4, 2.5);
        self.estimate_kbps = Some(est);
    }
}

#[derive(Debug, Clone, Copy)]
struct Aimd {
    estimate: f64,
    initialized: bool,
    state: RateState,
    last_change: Option<f64>,
    last_decrease: Option<f64>,
    /// Since when the incoming rate has been measured without a break.
    measured_since: Option<f64>,
    last_rate: Option<f64>,
    /// Since when, in Increase, `R_r` has been above [`FOLLOW_FACTOR`] × the estimate
    /// without a break.
    above_since: Option<f64>,
    link: LinkCapacity,
}

impl Aimd {
    fn new(initial: f64) -> Self {
        Aimd {
            estimate: initial,
            initialized: false,
            state: RateState::Hold,
            last_change: None,
            last_decrease: None,
            measured_since: None,
            last_rate: None,
            above_since: None,
            link: LinkCapacity::new(),
        }
    }

    /// One step at `t` with the detector's `usage` and the incoming rate. Returns
    /// whether the estimate was decreased.
    fn update(&mut self, t: f64, usage: Usage, rate: Option<f64>, cfg: &BweConfig) -> bool {
        let (min, max) = (cfg.min_bps as f64, cfg.max_bps as f64);
        match rate {
            Some(r) => {
                self.last_rate = Some(r);
                let since = *self.measured_since.get_or_insert(t);
                if !self.initialized && t - since >= INIT_MS {
                    self.estimate = r.clamp(min, max);
                    self.initialized = true;
                }
            }
            None => self.measured_since = None,
        }
        let Some(throughput) = self.last_rate else {
            return false;
        };
        if !self.initialized && usage != Usage::Overusing {
            return false;
        }
        match usage {
            Usage::Normal => {
                if self.state == RateState::Hold {
                    self.state = RateState::Increase;
                    self.last_change = Some(t);
                }
            }
            Usage::Overusing => {
                let waiting = self
                    .last_decrease
                    .is_some_and(|d| t - d < REDUCE_INTERVAL_MS);
                if self.state == RateState::Hold && waiting && throughput >= 0.5 * self.estimate {
                    return false;
                }
                self.state = RateState::Decrease;
            }
            Usage::Underusing => self.state = RateState::Hold,
        }
        if self.state != RateState::Increase {
            self.above_since = None;
        }
        let mut decreased = false;
        match self.state {
            RateState::Hold => {}
            RateState::Increase => {
                if self.link.upper_bps().is_some_and(|u| throughput > u) {
                    self.link = LinkCapacity::new();
                }
                // Far more arriving than the estimate for a whole second, the delay
                // steady all along: the link carries it (the relay switched us to a
                // bigger layer). Start from there rather than ramp up for half a minute.
                if throughput > FOLLOW_FACTOR * self.estimate {
                    let since = *self.above_since.get_or_insert(t);
                    if t - since >= FOLLOW_MS {
                        self.estimate = throughput;
                    }
                } else {
                    self.above_since = None;
                }
                let limit = MAX_RATE_FACTOR * throughput;
                if self.estimate < limit {
                    let dt = (t - self.last_change.unwrap_or(t)).max(0.0) / 1000.0;
                    let increase = if self.link.estimate_kbps.is_some() {
                        additive_bps_per_s(self.estimate) * dt
                    } else {
                        self.estimate * (MULTIPLICATIVE_PER_S.powf(dt.min(1.0)) - 1.0)
                    };
                    self.estimate = (self.estimate + increase).min(limit);
                }
                self.last_change = Some(t);
            }
            RateState::Decrease => {
                let mut target = BETA * throughput;
                if target > self.estimate
                    && let Some(c) = self.link.estimate_kbps
                {
                    target = BETA * c * 1000.0;
                }
                if target < self.estimate {
                    self.estimate = target;
                    decreased = true;
                }
                if self.link.lower_bps().is_some_and(|l| throughput < l) {
                    self.link = LinkCapacity::new();
                }
                self.link.on_overuse(throughput);
                self.initialized = true;
                self.state = RateState::Hold;
                self.last_change = Some(t);
                self.last_decrease = Some(t);
            }
        }
        self.estimate = self.estimate.clamp(min, max);
        decreased
    }
}

/// Whether `estimate` has fallen more than 3% below `sent`.
fn dropped(estimate: u64, sent: u64) -> bool {
    (estimate as f64) < DROP_NOW * sent as f64
}

/// Bits per second added per second near convergence: about one packet per response
/// time (draft §5.5), at least 4 kbit/s.
fn additive_bps_per_s(estimate: f64) -> f64 {
    let frame_bits = estimate / ASSUMED_FPS;
    let packets = (frame_bits / PACKET_BITS).ceil().max(1.0);
    (frame_bits / packets / RESPONSE_S).max(MIN_ADDITIVE_BPS_PER_S)
}

#[cfg(test)]
#[path = "bwe_tests.rs"]
mod tests;
