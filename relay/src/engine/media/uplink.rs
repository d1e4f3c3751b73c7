//! A sender's uplink as the relay sees it: how many bits per second the sender can get
//! to the relay, from the packets that arrive — their abs-send-time (delay) and their
//! sequence numbers (loss) — for the REMB or TMMBR the relay sends it.
//!
//! It runs Google congestion control's two controllers (draft-ietf-rmcat-gcc-02 §5,
//! §6) where the sender's packets arrive:
//!
//! - **Delay**: [`Bwe`], fed every packet that carries abs-send-time. It sees a queue
//!   building on the uplink before the queue overflows.
//! - **Loss**: the rules of the downlink estimate (`DownlinkEstimate`: loss over 10%: decrease to
//!   `A·(1 − 0.5·loss)`; 2–10%: hold; under 2%: increase; never above 1.5× what
//!   arrived), fed once per [`INTERVAL`] with the loss the relay counted on each of the
//!   sender's streams (sequence numbers expected against packets received, RFC 3550
//!   §A.3), the delay-based estimate as its cap, and what arrived as the rate sent. A
//!   queue that is already full no longer grows, so its delay holds still while its
//!   packets are dropped: only the loss shows it.
//!
//! **It limits only a congested uplink.** Before any congestion nothing has measured
//! what the uplink carries (only that it carries what the sender sends), so there is
//! no limit: the sender sends what its viewers take. Congestion is loss: an interval
//! that lost [`CONGESTED_LOSS`] of the sender's packets or more. (Not a fall of the
//! delay-based estimate: on a busy relay host, the sender's packets wait in the relay's
//! own socket buffer while its workers are busy, which looks like a queue on the
//! uplink, and a limit would throttle a sender whose uplink is fine. Once limiting, the
//! delay-based estimate caps the limit.) From then on the limit is the
//! estimate *without* its bound of 1.5× what arrived: what the uplink was found to
//! carry, which the sender pausing its full layer does not lower (its viewers are
//! back, and the uplink is no wider for the pause). While the sender sends up to the
//! limit (at least [`BUSY`] of it), the limit grows with the estimate, a few percent a
//! second on a clean uplink. It is lifted ([`Limit::Lifted`]) once [`LIMIT_HOLD`]
//! passes with neither loss nor the sender up against it.
//!
//! [`UplinkEstimate::poll`] hands out the limit once a second while it holds, at once
//! when it falls more than 3% below the value last handed out, and the lifting once.
//!
//! **One controller per uplink.** A sender that stamps transport-wide sequence numbers
//! gets the relay's transport-cc feedback instead and runs this same estimate at its
//! end of the uplink, over the arrivals the feedback reports against the send times it
//! noted (the participant library does: public as `blindfold_relay::engine::uplink`).
//! The relay does not estimate that sender's uplink too: two controllers on one link
//! would each react to the other's corrections, and the work would be done twice.
//! (libwebrtc's receiver makes the same choice: REMB from abs-send-time only for
//! streams without transport-wide sequence numbers.)
//! Fixed-size state: nothing is allocated after [`UplinkEstimate::new`], and no input
//! makes it panic.

use std::time::{Duration, Instant};

use super::bwe::{Bwe, BweConfig};
use super::estimate::{DownlinkEstimate, EstimateConfig, LossReport};
use crate::id::{Ssrc, WireSeq};

/// Loss is counted over this long, and the estimate handed out at least this often.
pub const INTERVAL: Duration = Duration::from_secs(1);

/// A value this far below the last one handed out goes at once.
const FELL: f64 = 0.97;

/// The limit holds until the uplink has shown no congestion, and the sender has not
/// been up against it, for this long.
pub const LIMIT_HOLD: Duration = Duration::from_secs(10);

/// An interval that lost this fraction of the sender's packets or more shows its
/// uplink congested.
pub const CONGESTED_LOSS: f64 = 0.02;

/// A sender whose arrivals over an interval are at least this fraction of its limit is
/// up against it.
pub const BUSY: f64 = 0.8;

/// What [`UplinkEstimate::poll`] says of the sender's uplink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// It carries this many bits per second (and no more, for now).
    Bps(u64),
    /// It showed no congestion for [`LIMIT_HOLD`]: no limit.
    Lifted,
}

/// Streams whose loss is counted (a session's first ones, by their index).
const STREAMS: usize = 8;

/// One sender's uplink estimate (on the shards where its media arrives).
#[derive(Debug)]
pub struct UplinkEstimate {
    delay: Bwe,
    loss: DownlinkEstimate,
    streams: [Arrivals; STREAMS],
    /// Bytes that arrived since the interval began, when it began and when it ends.
    bytes: u64,
    since: Option<Instant>,
    ends: Option<Instant>,
    /// The last limit handed out, and when (`None`: none in force).
    handed: Option<(u64, Instant)>,
    /// When an interval's arrivals last came up to the limit in force ([`BUSY`]).
    busy_at: Option<Instant>,
    /// When an interval last lost [`CONGESTED_LOSS`] of its packets or more.
    congested_at: Option<Instant>,
}

/// What arrived of one stream.
#[derive(Debug, Clone, Copy, Default)]
struct Arrivals {
    /// The stream, once a packet of it arrived.
    ssrc: Option<Ssrc>,
    /// Extended highest sequence number received.
    highest: u32,
    /// `highest` when the interval began.
    base: u32,
    /// Packets received in the interval.
    received: u32,
    /// After a jump too far to be loss or reordering: the sequence number that would
    /// confirm it (RFC 3550 §A.1's `bad_seq`).
    restart: Option<u16>,
}

/// A sequence number this far behind the highest is not reordering …
const MAX_MISORDER: i16 = 100;
/// … nor one this far ahead loss: both are a restart, once the next packet follows.
const MAX_DROPOUT: i16 = 3000;

impl Arrivals {
    fn on_packet(&mut self, ssrc: Ssrc, seq: WireSeq) {
        if self.ssrc != Some(ssrc) {
            // A first packet (or the slot's stream changed): it counts, nothing before.
            let highest = (1 << 16) | u32::from(seq.0);
            *self = Arrivals {
                ssrc: Some(ssrc),
                highest,
                base: highest - 1,
                received: 1,
                restart: None,
            };
            return;
        }
        let delta = seq.0.wrapping_sub(self.highest as u16) as i16;
        if !(-MAX_MISORDER..=MAX_DROPOUT).contains(&delta) {
            // A jump: counted only once the next packet confirms it, and then from
            // there (the sender restarted its sequence).
            match self.restart {
                Some(next) if next == seq.0 => {
                    self.ssrc = None;
                    self.on_packet(ssrc, seq);
                }
                _ => self.restart = Some(seq.0.wrapping_add(1)),
            }
            return;
        }
        self.restart = None;
        // Forward extends it; behind is late (reordered or a duplicate) and only counts
        // as received.
        if delta > 0 {
            self.highest = self.highest.wrapping_add(delta as u32);
        }
        self.received = self.received.saturating_add(1);
    }

    /// The interval's loss as a report block would give it, with the packets expected
    /// and lost it is computed from, and a new interval.
    fn take_counts(&mut self) -> Option<(LossReport, u32, u32)> {
        let ssrc = self.ssrc?;
        let expected = self.highest.wrapping_sub(self.base);
        let received = std::mem::take(&mut self.received);
        self.base = self.highest;
        if expected == 0 || expected >= 1 << 16 {
            return None;
        }
        let lost = expected.saturating_sub(received);
        let report = LossReport {
            ssrc,
            fraction_lost: (u64::from(lost) * 256 / u64::from(expected)).min(255) as u8,
            highest_seq: self.highest,
            jitter: Duration::ZERO,
            resumed_at: None,
            judged: true,
        };
        Some((report, expected, lost))
    }
}

impl Default for UplinkEstimate {
    fn default() -> Self {
        Self::new()
    }
}

impl UplinkEstimate {
    /// No packets yet, no limit.
    pub fn new() -> Self {
        UplinkEstimate {
            delay: Bwe::new(BweConfig::default()),
            // One sender's streams.
            loss: DownlinkEstimate::new(EstimateConfig {
                max_streams: 8,
                ..EstimateConfig::default()
            }),
            streams: [Arrivals::default(); STREAMS],
            bytes: 0,
            since: None,
            ends: None,
            handed: None,
            busy_at: None,
            congested_at: None,
        }
    }

    /// A packet of the sender's `stream` (its index among the sender's streams),
    /// `ssrc`, sequence number `seq`, `size` bytes, arrived at `now`, carrying
    /// abs-send-time `sent` if the sender stamps it.
    pub fn on_packet(
        &mut self,
        now: Instant,
        stream: usize,
        ssrc: Ssrc,
        seq: WireSeq,
        sent: Option<u32>,
        size: usize,
    ) {
        if let Some(s) = self.streams.get_mut(stream) {
            s.on_packet(ssrc, seq);
        }
        self.bytes = self.bytes.saturating_add(size as u64);
        if self.since.is_none() {
            self.begin_interval(now);
        }
        if let Some(sent) = sent {
            self.delay.on_packet(now, sent, size);
        }
    }

    /// The limit, if one is due to go to the sender now, or its lifting: see the module
    /// docs. Call it after packets; what it hands out counts as sent.
    #[inline]
    pub fn poll(&mut self, now: Instant) -> Option<Limit> {
        if self.handed.is_none() && self.ends.is_some_and(|end| now < end) {
            // No limit in force: only an interval's loss can start one. Until the
            // interval ends, one comparison a packet (the delay-based estimate reaches
            // the loss rules then, at most an interval old, as it would once a second).
            return None;
        }
        self.poll_interval(now)
    }

    /// [`Self::poll`] once an interval ended or while a limit is in force.
    #[inline(never)]
    fn poll_interval(&mut self, now: Instant) -> Option<Limit> {
        let since = self.since?;
        if let Some(bps) = self.delay.poll_remb(now) {
            self.loss.handle_remb(now, bps);
        }
        if self.ends.is_none_or(|end| now >= end) {
            let elapsed = now.saturating_duration_since(since);
            let bits = self.bytes.saturating_mul(8) as f64;
            let arrived = bits / elapsed.as_secs_f64();
            self.loss.set_sent_rate(arrived as u64);
            if self
                .handed
                .is_some_and(|(limit, _)| arrived >= BUSY * limit as f64)
            {
                self.busy_at = Some(now);
            }
            let (mut expected, mut lost) = (0u64, 0u64);
            let reports = self.streams.iter_mut().filter_map(|s| {
                let (report, e, l) = s.take_counts()?;
                (expected, lost) = (expected + u64::from(e), lost + u64::from(l));
                Some(report)
            });
            self.loss.handle_receiver_report(now, reports);
            if lost as f64 >= CONGESTED_LOSS * expected as f64 && lost > 0 {
                self.congested_at = Some(now);
            }
            self.begin_interval(now);
        }
        if !self.loss.has_reports() {
            return None;
        }
        let busy = self.handed.is_some()
            && self
                .busy_at
                .is_some_and(|t| now.saturating_duration_since(t) < LIMIT_HOLD);
        let congested = self
            .congested_at
            .is_some_and(|t| now.saturating_duration_since(t) < LIMIT_HOLD);
        if !busy && !congested {
            return self.handed.take().map(|_| Limit::Lifted);
        }
        let value = self.loss.estimate_unbounded(now);
        let due = self.handed.is_none_or(|(last, at)| {
            now.saturating_duration_since(at) >= INTERVAL || (value as f64) < FELL * last as f64
        });
        due.then(|| {
            self.handed = Some((value, now));
            Limit::Bps(value)
        })
    }

    fn begin_interval(&mut self, now: Instant) {
        self.bytes = 0;
        self.since = Some(now);
        self.ends = now.checked_add(INTERVAL);
    }

    /// The delay-based estimator's counters (for tests).
    #[cfg(test)]
    pub(crate) fn delay(&self) -> &Bwe {
        &self.delay
    }
}

#[cfg(test)]
mod tests {
    // One arbitrary base instant; everything after it is simulated.
    #![allow(clippy::disallowed_methods)]

    use super::*;

    const AUDIO: Ssrc = Ssrc(1);
    const VIDEO: Ssrc = Ssrc(2);

    /// Sends `bps` of 1000-byte video packets plus 50 audio packets a second for
    /// `secs` over a link that drops every `drop_every`-th video packet (0: none),
    /// starting at `t`; returns the values handed out and the time after.
    fn run(
        u: &mut UplinkEstimate,
        t: Instant,
        seqs: &mut [u16; 2],
        bps: u64,
        drop_every: u64,
        secs: u64,
    ) -> (Vec<Limit>, Instant) {
        let mut out = Vec::new();
        let per_ms_video = bps as f64 / 8.0 / 1000.0 / 1000.0;
        let mut owed = 0.0;
        let mut n = 0u64;
        for ms in 0..secs * 1000 {
            let now = t + Duration::from_millis(ms);
            owed += per_ms_video;
            while owed >= 1.0 {
                owed -= 1.0;
                n += 1;
                seqs[1] = seqs[1].wrapping_add(1);
                if drop_every == 0 || !n.is_multiple_of(drop_every) {
                    u.on_packet(now, 1, VIDEO, WireSeq(seqs[1]), None, 1000);
                }
            }
            if ms.is_multiple_of(20) {
                seqs[0] = seqs[0].wrapping_add(1);
                u.on_packet(now, 0, AUDIO, WireSeq(seqs[0]), None, 100);
            }
            out.extend(u.poll(now));
        }
        (out, t + Duration::from_secs(secs))
    }

    /// The limits in `out`, failing on a lifting.
    fn limits(out: &[Limit]) -> Vec<u64> {
        out.iter()
            .map(|l| match l {
                Limit::Bps(b) => *b,
                Limit::Lifted => panic!("lifted in {out:?}"),
            })
            .collect()
    }

    #[test]
    fn loss_limits_a_sender_until_its_uplink_has_been_clean_for_10_s() {
        let t0 = Instant::now();
        let mut u = UplinkEstimate::new();
        let mut seqs = [65_000, 65_500]; // both wrap within the run
        // Clean at 1.6 Mbit/s: nothing to limit.
        let (clean, t) = run(&mut u, t0, &mut seqs, 1_600_000, 0, 5);
        assert_eq!(clean, [], "no congestion, no limit");
        // A third of the video lost: a limit after the first second's count, falling by
        // half the loss each second (×0.85), never rising while the loss lasts.
        let (lossy, t) = run(&mut u, t, &mut seqs, 1_600_000, 3, 6);
        let lossy = limits(&lossy);
        assert!(lossy.len() >= 5, "lossy: {lossy:?}");
        assert!(lossy.windows(2).all(|w| w[1] <= w[0]), "lossy: {lossy:?}");
        let low = *lossy.last().unwrap();
        assert!(low * 10 < lossy[0] * 6, "lossy: {lossy:?}");
        // Clean again at 800 kbit/s: the limit grows again, 5% a second, while the
        // sender is up against it (about 4 s), and is lifted once 10 s have passed
        // with neither loss nor the sender up against it.
        let (again, _) = run(&mut u, t, &mut seqs, 800_000, 0, 20);
        let lifted = again
            .iter()
            .position(|l| *l == Limit::Lifted)
            .expect("lifted");
        assert_eq!(lifted, again.len() - 1, "{again:?}");
        let rising = limits(&again[..lifted]);
        assert!((12..=16).contains(&rising.len()), "{again:?}");
        assert!(
            rising.windows(2).all(|w| w[1] >= w[0]),
            "{rising:?} after {low}"
        );
        assert!(rising.last() > rising.first(), "{rising:?} after {low}");
    }

    #[test]
    fn limits_go_once_an_interval_and_at_once_on_a_fall() {
        let t0 = Instant::now();
        let mut u = UplinkEstimate::new();
        let mut seqs = [0, 0];
        let (_, t) = run(&mut u, t0, &mut seqs, 1_000_000, 0, 3);
        // A quarter of the video lost, then 4% of it (3% in all: held, neither up nor
        // down).
        let (lossy, t) = run(&mut u, t, &mut seqs, 1_000_000, 4, 4);
        let lossy = limits(&lossy);
        assert!((3..=4).contains(&lossy.len()), "{lossy:?}");
        assert!(lossy[1] * 100 < lossy[0] * 97, "{lossy:?}");
        let (held, _) = run(&mut u, t, &mut seqs, 1_000_000, 25, 5);
        let held = limits(&held);
        assert!((4..=5).contains(&held.len()), "one a second: {held:?}");
        assert!(held.windows(2).all(|w| w[0] == w[1]), "{held:?}");
    }

    #[test]
    fn reordered_and_duplicate_packets_are_not_loss() {
        let t0 = Instant::now();
        let mut u = UplinkEstimate::new();
        let mut a = Arrivals::default();
        for seq in [10u16, 12, 11, 13, 13, 14] {
            a.on_packet(VIDEO, WireSeq(seq));
        }
        let r = a.take_counts().map(|c| c.0).unwrap();
        assert_eq!(r.fraction_lost, 0);
        // Nothing arrived: no report, no division by zero.
        assert!(a.take_counts().map(|c| c.0).is_none());
        // A stream restarting far away is a new count, not 60 000 losses; one packet
        // that far away is a stray and not counted.
        a.on_packet(VIDEO, WireSeq(60_000));
        assert!(a.take_counts().map(|c| c.0).is_none());
        for seq in [60_000u16, 60_001, 60_003] {
            a.on_packet(VIDEO, WireSeq(seq));
        }
        let r = a.take_counts().map(|c| c.0).unwrap();
        // Counted from the packet that confirmed the restart: 60 002 of 60 001..=60 003.
        assert_eq!(
            (r.fraction_lost, r.highest_seq & 0xffff),
            (85, 60_003),
            "1 of 3"
        );
        a.on_packet(VIDEO, WireSeq(2_000));
        a.on_packet(VIDEO, WireSeq(60_004));
        let r = a.take_counts().map(|c| c.0).unwrap();
        assert_eq!(
            r.fraction_lost, 0,
            "the stray is neither loss nor a restart"
        );
        assert_eq!(u.poll(t0), None, "nothing arrived yet");
        assert_eq!(u.delay().stats().packets, 0);
    }
}
