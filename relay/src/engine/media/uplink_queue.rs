//! How long a sender's packets queue on its uplink, from their abs-send-time: each
//! packet's arrival less its send time (the sender's clock, unwrapped) is the one-way
//! delay plus a constant; above the lowest of the last 30–60 s, it is queueing.
//!
//! The relay reads it to take the uplink's part out of the round trips the sender's
//! own receiver reports time: they cross the same queue (see `estimate.rs`, the
//! downlink's round-trip check). It is measured on the first packet of each group the
//! sender sent within [`GROUP_SPAN_MS`] (5 ms: a frame, about): the packet that waited least
//! behind its own burst. Every other packet costs one comparison.
//!
//! It runs for every participant whose media carries abs-send-time, whether or not
//! the relay also estimates its uplink (`uplink.rs`: a sender that stamps
//! transport-wide sequence numbers estimates its own). Fixed-size state, no allocation
//! after [`UplinkQueue::default`], and no input makes it panic.

use std::time::{Duration, Instant};

use super::bwe::{GROUP_SPAN_MS, forward_ms};
use super::estimate::RecentLowest;

/// The lowest one-way delay is taken over the last one to two of these.
const WINDOW: Duration = Duration::from_secs(30);
/// A send time this far behind the latest is the sender's clock starting over, not
/// reordering (ms).
const CLOCK_RESTART_MS: f64 = 1000.0;

/// One sender's uplink queue; see the module docs.
#[derive(Debug, Default)]
pub(crate) struct UplinkQueue {
    /// The first arrival measured: arrival times count from it.
    epoch: Option<Instant>,
    /// The send time of the current group's first packet and its unwrapped value in
    /// ms.
    send: Option<(u32, f64)>,
    /// The lowest offset (arrival less send time, ms) of the last windows.
    lowest: RecentLowest<f64>,
    /// The latest group's queueing, ms.
    queue_ms: f64,
}

impl UplinkQueue {
    /// How long the sender's latest group of packets queued on its uplink.
    pub(crate) fn queue(&self) -> Duration {
        Duration::try_from_secs_f64(self.queue_ms / 1000.0).unwrap_or_default()
    }

    /// A packet sent at abs-send-time `ast` arrived at `now`.
    #[inline(always)]
    pub(crate) fn on_packet(&mut self, now: Instant, ast: u32) {
        if let Some((first, _)) = self.send
            && forward_ms(first, ast).is_some_and(|ahead| ahead < GROUP_SPAN_MS)
        {
            return;
        }
        self.measure(now, ast);
    }

    /// The first packet of a group (or one sent before the current group's).
    #[inline(never)]
    fn measure(&mut self, now: Instant, ast: u32) {
        let send_ms = match self.send {
            None => 0.0,
            Some((last, ms)) => match forward_ms(last, ast) {
                Some(ahead) => ms + ahead,
                None => {
                    if forward_ms(ast, last).is_some_and(|behind| behind > CLOCK_RESTART_MS) {
                        *self = UplinkQueue::default();
                    }
                    // Reordered (or a retransmission): the latest group stands.
                    return;
                }
            },
        };
        let epoch = *self.epoch.get_or_insert(now);
        let arrival_ms = now.saturating_duration_since(epoch).as_secs_f64() * 1000.0;
        self.send = Some((ast, send_ms));
        let offset = arrival_ms - send_ms;
        self.queue_ms = offset - self.lowest.add(now, WINDOW, offset);
    }
}

#[cfg(test)]
mod tests {
    // One arbitrary base instant; everything after it is simulated.
    #![allow(clippy::disallowed_methods)]

    use super::*;

    /// abs-send-time: 24 bits of 2^-18 s.
    const MASK: u32 = 0x00ff_ffff;

    fn tick(ms: f64) -> u32 {
        (ms * 262.144) as u32
    }

    /// The queue is the one-way delay above its lowest: the sender's clock unwrapped
    /// past 2^24 ticks, a reordered packet ignored, a clock that starts over measured
    /// afresh.
    #[test]
    fn the_uplink_queue_is_the_one_way_delay_above_its_lowest() {
        let t0 = Instant::now();
        let at = |q: &mut UplinkQueue, arrival_ms: f64, ast: u32| {
            q.on_packet(t0 + Duration::from_secs_f64(arrival_ms / 1000.0), ast)
        };
        let ms = |q: &UplinkQueue| q.queue().as_secs_f64() * 1000.0;
        let mut q = UplinkQueue::default();
        // 20 ms apart, 10 ms on the way: no queue.
        for i in 0..10 {
            at(
                &mut q,
                10.0 + 20.0 * f64::from(i),
                tick(20.0 * f64::from(i)),
            );
        }
        assert!(ms(&q) < 0.01, "{}", ms(&q));
        // Then each packet waits 5 ms longer than the one before.
        for i in 10..20 {
            let wait = 5.0 * f64::from(i - 9);
            at(
                &mut q,
                10.0 + 20.0 * f64::from(i) + wait,
                tick(20.0 * f64::from(i)),
            );
        }
        assert!((ms(&q) - 50.0).abs() < 0.01, "{}", ms(&q));
        // A reordered packet (sent before the latest) changes nothing.
        at(&mut q, 500.0, tick(100.0));
        assert!((ms(&q) - 50.0).abs() < 0.01);
        // Across the 24-bit wrap (64 s): still counted forward.
        let mut q = UplinkQueue::default();
        at(&mut q, 0.0, MASK - tick(10.0));
        at(&mut q, 20.0, tick(10.0));
        assert!(ms(&q) < 0.01, "{}", ms(&q));
        // The sender's clock starts over, 10 s back: measured afresh.
        at(&mut q, 40.0, MASK - tick(10_000.0));
        at(&mut q, 60.0, MASK - tick(9_980.0));
        assert!(ms(&q) < 0.01, "{}", ms(&q));
        // Nothing stamped, no queue to tell.
        assert_eq!(UplinkQueue::default().queue(), Duration::ZERO);
    }

    /// Only a group's first packet is measured: the rest of a burst, sent within
    /// 5 ms of it, waited behind it on the sender's own link.
    #[test]
    fn a_group_is_measured_on_its_first_packet() {
        let t0 = Instant::now();
        let mut q = UplinkQueue::default();
        let at = |q: &mut UplinkQueue, arrival_ms: f64, send_ms: f64| {
            q.on_packet(
                t0 + Duration::from_secs_f64(arrival_ms / 1000.0),
                tick(send_ms),
            )
        };
        for frame in 0..10 {
            let sent = 33.0 * f64::from(frame);
            // A frame of ten packets sent 0.1 ms apart; the link spreads them 2 ms
            // apart on arrival.
            for p in 0..10 {
                at(
                    &mut q,
                    sent + 10.0 + 2.0 * f64::from(p),
                    sent + 0.1 * f64::from(p),
                );
            }
        }
        assert!(q.queue() < Duration::from_micros(10), "{:?}", q.queue());
    }
}
