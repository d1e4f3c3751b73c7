//! The last sender report of a stream, for receivers that start the stream later.
//!
//! A receiver maps a stream's RTP timestamps to wall-clock time — what lip sync between
//! one sender's audio and video needs — from the stream's RTCP sender reports (RFC 3550
//! §6.4.1). Senders send one every second or so; a receiver that starts a stream (it
//! joined, or subscribed to a full-resolution layer) would otherwise play it unsynced
//! until the next one. The relay keeps each stream's last SR on the sender's home shard
//! and sends it, re-protected for that hop like every forwarded SR, to a receiver as it
//! starts the stream. The SR is passed on as the sender wrote it.
//!
//! An SR older than [`LastSenderReport::MAX_AGE`] is not replayed: its sender has
//! stopped reporting (or sending), and the next live SR will do.
//!
//! Every SR is forwarded to each receiver of the stream, so a sender could have the
//! relay multiply a flood of them by its fan-out: SRs of one stream are forwarded at
//! most one per [`LastSenderReport::FORWARD_GAP`] (senders send one a second or so);
//! the others only replace the kept one.
//!
//! Receivers' RTCP ends at the relay, so the replay skews no round-trip time a sender
//! computes; the relay's own round trip to the receiver (`round_trip.rs`) counts from
//! when it sent the replay.

use std::time::{Duration, Instant};

use crate::engine::RtcpBytes;

/// One stream's last SR (kept on its sender's home shard).
#[derive(Debug, Default)]
pub(crate) struct LastSenderReport {
    /// Boxed: every stream on every shard has one, most never hold an SR. Allocated at
    /// the stream's first SR, reused for every later one.
    last: Option<Box<(Instant, RtcpBytes)>>,
    /// When an SR of the stream was last forwarded.
    forwarded_at: Option<Instant>,
}

impl LastSenderReport {
    /// An SR older than this is not replayed to a new receiver.
    pub(crate) const MAX_AGE: Duration = Duration::from_secs(5);

    /// SRs of one stream are forwarded at most one per this long.
    pub(crate) const FORWARD_GAP: Duration = Duration::from_millis(250);

    /// The sender sent `packet` (one plain SR) at `now`: whether to forward it to the
    /// stream's receivers (none was within [`Self::FORWARD_GAP`]). An SR too large to
    /// carry is not kept (nor is the one before it, which it replaces).
    pub(crate) fn handle_report(&mut self, now: Instant, packet: &[u8]) -> bool {
        match (RtcpBytes::new(packet), &mut self.last) {
            (Some(sr), Some(last)) => **last = (now, sr),
            (Some(sr), None) => self.last = Some(Box::new((now, sr))),
            (None, _) => self.last = None,
        }
        let forward = self
            .forwarded_at
            .is_none_or(|t| now.saturating_duration_since(t) >= Self::FORWARD_GAP);
        if forward {
            self.forwarded_at = Some(now);
        }
        forward
    }

    /// The SR to send a receiver that starts the stream at `now`, if a recent one is
    /// known.
    pub(crate) fn for_new_receiver(&self, now: Instant) -> Option<&[u8]> {
        let (at, sr) = &**self.last.as_ref()?;
        (now.saturating_duration_since(*at) <= Self::MAX_AGE).then(|| sr.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    // One arbitrary base instant; everything after it is simulated.
    #![allow(clippy::disallowed_methods)]

    use super::*;

    #[test]
    fn a_new_receiver_gets_the_last_recent_report() {
        let t0 = Instant::now();
        let mut sr = LastSenderReport::default();
        assert_eq!(sr.for_new_receiver(t0), None, "no SR yet");
        sr.handle_report(t0, b"first");
        sr.handle_report(t0 + Duration::from_secs(1), b"second");
        let at = t0 + Duration::from_secs(2);
        assert_eq!(
            sr.for_new_receiver(at),
            Some(&b"second"[..]),
            "the last one"
        );
        let stale = t0 + Duration::from_secs(1) + LastSenderReport::MAX_AGE;
        assert_eq!(sr.for_new_receiver(stale), Some(&b"second"[..]));
        assert_eq!(
            sr.for_new_receiver(stale + Duration::from_millis(1)),
            None,
            "too old to replay"
        );
        // Time that goes backwards counts as no time passed.
        assert_eq!(sr.for_new_receiver(t0), Some(&b"second"[..]));
    }

    #[test]
    fn an_uncarriable_report_replaces_the_last_with_nothing() {
        let t0 = Instant::now();
        let mut sr = LastSenderReport::default();
        sr.handle_report(t0, b"fits");
        sr.handle_report(t0, &[0u8; RtcpBytes::MAX + 1]);
        assert_eq!(sr.for_new_receiver(t0), None);
    }

    #[test]
    fn a_flood_of_reports_is_forwarded_once_per_gap_and_the_newest_kept() {
        let t0 = Instant::now();
        let ms = Duration::from_millis(1);
        let mut sr = LastSenderReport::default();
        // A sender's usual one a second: each is forwarded.
        assert!(sr.handle_report(t0, b"first"));
        assert!(sr.handle_report(t0 + 1000 * ms, b"second"));
        // Fifty at once, then one every 10 ms: one per 250 ms goes out.
        let t1 = t0 + 2000 * ms;
        let burst = (0..50).filter(|_| sr.handle_report(t1, b"burst")).count();
        assert_eq!(burst, 1);
        let steady = (1..=100)
            .filter(|&i| sr.handle_report(t1 + 10 * ms * i, b"steady"))
            .count();
        assert_eq!(steady, 4, "at 250, 500, 750 and 1000 ms");
        // The kept one is the newest, forwarded or not.
        sr.handle_report(t1 + 1005 * ms, b"newest");
        assert_eq!(sr.for_new_receiver(t1 + 1005 * ms), Some(&b"newest"[..]));
        // Time that went backwards is no time passed.
        assert!(!sr.handle_report(t0, b"late"));
    }
}
