//! Transport-wide congestion control feedback: when each of a sender's packets arrived,
//! for the sender's own estimate of its uplink
//! (draft-holmer-rmcat-transport-wide-cc-extensions-01).
//!
//! A sender that stamps the transport-wide sequence number extension on its packets
//! (one count across all its streams) gets, about every [`INTERVAL`], a feedback packet
//! saying which of them arrived and when (`wire::rtcp::write_transport_cc`). The sender
//! knows when it sent each one, so it can run a delay-based estimator over its own
//! uplink (the participant library does: `Participant`'s uplink estimate), even where
//! it stamps no abs-send-time for the relay's estimate.
//!
//! [`TwccRecorder`] is one sender's, where its media arrives (on the forwarding path:
//! [`TwccRecorder::on_packet`] is a store into a preallocated ring). Feedback is due at
//! the first packet [`INTERVAL`] after the last feedback; it covers every sequence
//! number from the one after the last reported to the highest arrived, at most
//! [`MAX_PER_FEEDBACK`] each (so more than one when a burst was long). A packet that
//! arrives after its number was reported is not reported again; a packet older than
//! the ring ([`SLOTS`] numbers behind the highest) is reported lost. Arrival times are
//! microseconds since the first packet; the reference time counts 64 ms units from
//! there.
//!
//! Sans-IO: time comes in as `now`; nothing is allocated after [`TwccRecorder::new`].

use std::time::{Duration, Instant};

/// Feedback goes out at most this often.
pub(crate) const INTERVAL: Duration = Duration::from_millis(100);
/// Sequence numbers kept: about 2 s of a 3 Mbit/s sender.
pub(crate) const SLOTS: usize = 1024;
/// The most packets one feedback reports.
pub(crate) const MAX_PER_FEEDBACK: usize = 256;
/// A sender silent this long starts its numbering over (see `TwccRecorder::micros`).
pub(crate) const RESTART_GAP: Duration = Duration::from_secs(2);

/// A sequence number with no arrival stored.
const EMPTY: u64 = u64::MAX;

/// One feedback to write: its fields for `wire::rtcp::write_transport_cc`, the
/// arrivals in the recorder's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TwccFeedback {
    pub base_seq: u16,
    pub reference_time: i32,
    pub fb_pkt_count: u8,
    /// How many of [`TwccRecorder::arrivals`] it reports.
    pub count: usize,
}

/// One sender's arrivals, for transport-cc feedback.
#[derive(Debug)]
pub(crate) struct TwccRecorder {
    /// The first packet's arrival: times are counted from it.
    epoch: Option<Instant>,
    /// By extended sequence number modulo [`SLOTS`]: the number stored, and its
    /// arrival in microseconds since `epoch`.
    slots: Box<[(u64, u64); SLOTS]>,
    /// The highest extended sequence number arrived.
    max: Option<u64>,
    /// The first not yet reported.
    next: u64,
    /// When the next feedback may go (none yet: at once).
    next_feedback: Option<Instant>,
    /// The latest arrival instant and its microseconds since `epoch`: a worker hands a
    /// whole receive batch one instant, converted once.
    clock: Option<(Instant, u64)>,
    fb_pkt_count: u8,
    /// The arrivals of the feedback being written (250 µs ticks after its reference).
    arrivals: Box<[Option<i64>]>,
}

impl TwccRecorder {
    pub(crate) fn new() -> Self {
        TwccRecorder {
            epoch: None,
            slots: Box::new([(EMPTY, 0); SLOTS]),
            max: None,
            next: 0,
            next_feedback: None,
            clock: None,
            fb_pkt_count: 0,
            arrivals: vec![None; MAX_PER_FEEDBACK].into_boxed_slice(),
        }
    }

    /// A packet with transport-wide sequence number `seq` arrived at `now`.
    #[inline(always)]
    pub(crate) fn on_packet(&mut self, now: Instant, seq: u16) {
        let us = match self.clock {
            Some((at, us)) if at == now => us,
            _ => self.micros(now),
        };
        let ext = match self.max {
            None => {
                self.next = u64::from(seq) + (1 << 16);
                self.next
            }
            Some(max) => {
                let ext = max.wrapping_add_signed(i64::from(seq.wrapping_sub(max as u16) as i16));
                if ext < self.next {
                    return; // reported already (or before the first)
                }
                ext
            }
        };
        if self.max.is_none_or(|m| ext > m) {
            self.max = Some(ext);
            // Numbers the ring no longer holds are reported lost with the rest.
            self.next = self.next.max((ext + 1).saturating_sub(SLOTS as u64));
        }
        self.slots[ext as usize % SLOTS] = (ext, us);
    }

    /// `now` in microseconds since the first packet, cached for the next packets of
    /// the same instant. After [`RESTART_GAP`] without a packet the numbering starts
    /// over from the next one: the sender's media may have been arriving at another
    /// worker meanwhile (its numbers have moved on by any amount, which read as a step
    /// back past half the range), and a gap past the feedback's ±8 s of deltas could
    /// not be reported anyway.
    #[cold]
    fn micros(&mut self, now: Instant) -> u64 {
        if self
            .clock
            .is_some_and(|(at, _)| now.saturating_duration_since(at) >= RESTART_GAP)
        {
            self.max = None;
            self.next_feedback = None;
        }
        let epoch = *self.epoch.get_or_insert(now);
        let us = now.saturating_duration_since(epoch).as_micros() as u64;
        self.clock = Some((now, us));
        us
    }

    /// Whether feedback is due: something to report, and [`INTERVAL`] since the last.
    #[inline]
    pub(crate) fn due(&self, now: Instant) -> bool {
        self.max.is_some_and(|m| m >= self.next) && self.next_feedback.is_none_or(|t| now >= t)
    }

    /// The next feedback (call until `None`: a long burst takes several), its arrivals
    /// in [`Self::arrivals`].
    pub(crate) fn poll_feedback(&mut self, now: Instant) -> Option<TwccFeedback> {
        let max = self.max?;
        if max < self.next {
            return None;
        }
        let base = self.next;
        let count = ((max - base + 1) as usize).min(MAX_PER_FEEDBACK);
        let stored = |ext: u64| {
            let (at, us) = self.slots[ext as usize % SLOTS];
            (at == ext).then_some(us)
        };
        // The reference time: the first arrival's 64 ms unit.
        let first = (base..base + count as u64).find_map(stored).unwrap_or(0);
        let reference = first / 64_000;
        for (i, a) in self.arrivals[..count].iter_mut().enumerate() {
            *a = stored(base + i as u64).map(|us| (us / 250) as i64 - (reference * 256) as i64);
        }
        self.next = base + count as u64;
        self.next_feedback = now.checked_add(INTERVAL);
        let fb = TwccFeedback {
            base_seq: base as u16,
            reference_time: (reference & 0x7f_ffff) as i32,
            fb_pkt_count: self.fb_pkt_count,
            count,
        };
        self.fb_pkt_count = self.fb_pkt_count.wrapping_add(1);
        Some(fb)
    }

    /// The arrivals of the feedback [`Self::poll_feedback`] returned last.
    pub(crate) fn arrivals(&self, fb: &TwccFeedback) -> &[Option<i64>] {
        &self.arrivals[..fb.count]
    }
}

#[cfg(test)]
mod tests {
    // One arbitrary base instant; everything after it is simulated.
    #![allow(clippy::disallowed_methods)]

    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn drain(r: &mut TwccRecorder, now: Instant) -> Vec<(TwccFeedback, Vec<Option<i64>>)> {
        std::iter::from_fn(|| {
            let fb = r.poll_feedback(now)?;
            Some((fb, r.arrivals(&fb).to_vec()))
        })
        .collect()
    }

    #[test]
    fn feedback_reports_each_number_once_with_its_arrival() {
        let t0 = Instant::now();
        let mut r = TwccRecorder::new();
        assert!(!r.due(t0));
        // 65534, 65535, (0 lost), 2, 1 (reordered): across the wrap.
        r.on_packet(t0 + 10 * MS, 65_534);
        assert!(r.due(t0 + 10 * MS), "the first feedback goes at once");
        r.on_packet(t0 + 11 * MS, 65_535);
        r.on_packet(t0 + 70 * MS, 2);
        r.on_packet(t0 + 71 * MS, 1);
        let fbs = drain(&mut r, t0 + 71 * MS);
        assert_eq!(fbs.len(), 1);
        let (fb, arrivals) = &fbs[0];
        assert_eq!(
            (fb.base_seq, fb.reference_time, fb.fb_pkt_count),
            (65_534, 0, 0)
        );
        // 250 µs ticks after the first packet.
        assert_eq!(arrivals, &[Some(0), Some(4), None, Some(244), Some(240)]);
        // The lost one arrives late: already reported, not again. Nothing due.
        r.on_packet(t0 + 72 * MS, 0);
        assert!(!r.due(t0 + 200 * MS));
        // The next, 100 ms after the last feedback at the earliest; reference 64 ms
        // units.
        r.on_packet(t0 + 150 * MS, 3);
        assert!(!r.due(t0 + 150 * MS));
        assert!(r.due(t0 + 171 * MS));
        let fbs = drain(&mut r, t0 + 171 * MS);
        assert_eq!(
            (
                fbs[0].0.base_seq,
                fbs[0].0.reference_time,
                fbs[0].0.fb_pkt_count
            ),
            (3, 2, 1)
        );
        // 140 ms after the first: 560 ticks, less two 64 ms units.
        assert_eq!(fbs[0].1, [Some(560 - 2 * 256)]);
    }

    #[test]
    fn a_long_burst_takes_several_feedbacks_and_the_ring_bounds_them() {
        let t0 = Instant::now();
        let mut r = TwccRecorder::new();
        for s in 0..600u16 {
            r.on_packet(t0, s);
        }
        let fbs = drain(&mut r, t0);
        let counts: Vec<usize> = fbs.iter().map(|f| f.0.count).collect();
        assert_eq!(counts, [256, 256, 88]);
        assert_eq!(fbs[2].0.base_seq, 512);
        // 3000 numbers at once (a long stall): only the ring's last SLOTS are held;
        // the older are reported lost.
        for s in 600..3600u16 {
            r.on_packet(t0 + 200 * MS, s);
        }
        let fbs = drain(&mut r, t0 + 200 * MS);
        let total: usize = fbs.iter().map(|f| f.0.count).sum();
        assert_eq!(total, SLOTS);
        assert_eq!(fbs[0].0.base_seq, 3600 - SLOTS as u16);
        assert!(fbs.iter().all(|f| f.1.iter().all(Option::is_some)));
    }

    #[test]
    fn hostile_numbers_never_panic() {
        let t0 = Instant::now();
        let mut r = TwccRecorder::new();
        for (i, s) in [0u16, 32_768, 65_535, 1, 40_000, 40_000, 7, 0]
            .into_iter()
            .enumerate()
        {
            r.on_packet(t0 + MS * i as u32, s);
            let _ = drain(&mut r, t0 + MS * i as u32 * 200);
        }
        // Time before the epoch counts as the epoch.
        r.on_packet(t0 - MS, 9);
        let _ = drain(&mut r, t0 + 10 * S_FAR);
    }

    const S_FAR: Duration = Duration::from_secs(100);

    #[test]
    fn after_a_silence_the_numbering_starts_over() {
        let t0 = Instant::now();
        let mut r = TwccRecorder::new();
        for i in 0..5u16 {
            r.on_packet(t0 + MS * u32::from(i), 100 + i);
        }
        assert_eq!(drain(&mut r, t0 + 5 * MS).len(), 1);
        // The sender's media arrived at another worker for a while, and comes back
        // 40 000 numbers on: read against the old numbers, a step back.
        let back = t0 + RESTART_GAP + 10 * MS;
        r.on_packet(back, 100 + 40_000);
        r.on_packet(back, 100 + 40_001);
        assert!(r.due(back));
        let fbs = drain(&mut r, back);
        assert_eq!(fbs.len(), 1);
        let (fb, arrivals) = &fbs[0];
        assert_eq!(fb.base_seq, 100 + 40_000);
        assert_eq!(arrivals.len(), 2);
        // Within the gap, a step of that size still reads as a step back.
        let mut r = TwccRecorder::new();
        r.on_packet(t0, 100);
        drain(&mut r, t0);
        r.on_packet(t0 + 100 * MS, 100 + 40_000);
        assert!(!r.due(t0 + 200 * MS));
    }
}
