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
}

impl LastSenderReport {
    /// An SR older than this is not replayed to a new receiver.
    pub(crate) const MAX_AGE: Duration = Duration::from_secs(5);

    /// The sender sent `packet` (one plain SR) at `now`. An SR too large to carry is
    /// not kept (nor is the one before it, which it replaces).
    pub(crate) fn handle_report(&mut self, now: Instant, packet: &[u8]) {
        match (RtcpBytes::new(packet), &mut self.last) {
            (Some(sr), Some(last)) => **last = (now, sr),
            (Some(sr), None) => self.last = Some(Box::new((now, sr))),
            (None, _) => self.last = None,
        }
    }

    /// The SR to send a receiver that starts the stream at `now`, if a recent one is
    /// known.
    pub(crate) fn for_new_receiver(&self, now: Instant) -> Option<&[u8]> {
        let (at, sr) = &**self.last.as_ref()?;
        (now.saturating_duration_since(*at) <= Self::MAX_AGE).then(|| sr.as_bytes())
    }

    /// It acts only when asked: no deadline of its own.
    #[allow(dead_code)] // the pattern every media machine follows; this one never waits
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        None
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
        assert_eq!(sr.poll_timeout(), None);
    }

    #[test]
    fn an_uncarriable_report_replaces_the_last_with_nothing() {
        let t0 = Instant::now();
        let mut sr = LastSenderReport::default();
        sr.handle_report(t0, b"fits");
        sr.handle_report(t0, &[0u8; RtcpBytes::MAX + 1]);
        assert_eq!(sr.for_new_receiver(t0), None);
    }
}
