//! Round-trip time between the relay and one receiver, from the sender reports the
//! relay sends it and the reception report blocks that answer them (RFC 3550 §6.4.1).
//!
//! The relay forwards every sender's SRs to the stream's receivers. A receiver's report
//! block about that stream carries the SR's NTP timestamp (its middle 32 bits, LSR) and
//! how long the receiver held it before reporting (DLSR, in 1/65536 s). The relay
//! remembers when it sent each SR to this receiver, so a block answering one gives
//! `arrival − sent − DLSR`: the time the SR and the report spent on the way, queues
//! included. A queue building on the receiver's downlink — where the relay's streams
//! wait behind each other — shows here before it overflows, and it shows as a level,
//! which a delay-based estimator fed by arrival times alone (the receiver's REMB) does
//! not see once the queue stands still.
//!
//! The last [`PER_STREAM`] SRs of each stream are remembered (a report written while the
//! latest SR is still queued answers the one before it), in [`SLOTS`] slots in all; the
//! oldest slot makes room. Fixed size: nothing is allocated after [`RoundTrip::new`].

use std::time::{Duration, Instant};

use crate::id::Ssrc;

/// SRs remembered in all …
pub(crate) const SLOTS: usize = 32;
/// … and per stream.
pub(crate) const PER_STREAM: usize = 2;

#[derive(Debug, Clone, Copy)]
struct Sent {
    ssrc: Ssrc,
    /// The SR's NTP timestamp, middle 32 bits: what a block's LSR names it by.
    lsr: u32,
    at: Instant,
}

/// The SRs sent to one receiver, to time its answers.
#[derive(Debug)]
pub(crate) struct RoundTrip {
    sent: [Option<Sent>; SLOTS],
}

impl Default for RoundTrip {
    fn default() -> Self {
        Self::new()
    }
}

impl RoundTrip {
    pub(crate) fn new() -> Self {
        RoundTrip {
            sent: [None; SLOTS],
        }
    }

    /// The relay sent the receiver `sr`, a sender report about `ssrc`, at `now`. Not an
    /// SR (shorter than one): nothing to remember.
    pub(crate) fn handle_sr_sent(&mut self, now: Instant, ssrc: Ssrc, sr: &[u8]) {
        let Some(ntp) = sr.get(10..14) else {
            return;
        };
        let lsr = u32::from_be_bytes([ntp[0], ntp[1], ntp[2], ntp[3]]);
        let entry = Sent { ssrc, lsr, at: now };
        let mut ours = 0;
        let mut our_oldest: Option<usize> = None;
        let mut free: Option<usize> = None;
        let mut oldest = 0;
        for (i, slot) in self.sent.iter().enumerate() {
            let Some(s) = slot else {
                free = free.or(Some(i));
                continue;
            };
            if s.ssrc == ssrc {
                if s.lsr == lsr {
                    // The same SR again (a replay): the latest send is what an answer
                    // can follow.
                    self.sent[i] = Some(entry);
                    return;
                }
                ours += 1;
                if our_oldest.is_none_or(|j| self.sent[j].is_some_and(|o| s.at < o.at)) {
                    our_oldest = Some(i);
                }
            }
            if self.sent[oldest].is_some_and(|o| s.at < o.at) {
                oldest = i;
            }
        }
        let i = match (ours >= PER_STREAM, our_oldest, free) {
            (true, Some(j), _) => j,
            (_, _, Some(f)) => f,
            _ => oldest,
        };
        self.sent[i] = Some(entry);
    }

    /// A report block about `ssrc` with `lsr` and `dlsr` arrived at `now`: the round
    /// trip, if it answers an SR sent to this receiver (LSR 0 says no SR arrived yet;
    /// a DLSR longer than the time since the SR went out is not a real one).
    pub(crate) fn handle_block(
        &self,
        now: Instant,
        ssrc: Ssrc,
        lsr: u32,
        dlsr: u32,
    ) -> Option<Duration> {
        if lsr == 0 {
            return None;
        }
        let sent = self
            .sent
            .iter()
            .flatten()
            .find(|s| s.ssrc == ssrc && s.lsr == lsr)?;
        let held = Duration::from_nanos((u64::from(dlsr) * 1_000_000_000) >> 16);
        now.saturating_duration_since(sent.at).checked_sub(held)
    }
}

#[cfg(test)]
mod tests {
    // One arbitrary base instant; everything after it is simulated.
    #![allow(clippy::disallowed_methods)]

    use super::*;

    const A: Ssrc = Ssrc(10);
    const B: Ssrc = Ssrc(20);

    /// An SR whose NTP timestamp's middle 32 bits are `lsr`.
    fn sr(ssrc: Ssrc, lsr: u32) -> Vec<u8> {
        let mut p = vec![0x80, 200, 0, 6];
        p.extend_from_slice(&ssrc.0.to_be_bytes());
        p.extend_from_slice(&[0, 0]);
        p.extend_from_slice(&lsr.to_be_bytes());
        p.extend_from_slice(&[0; 14]);
        p
    }

    fn dlsr(d: Duration) -> u32 {
        ((d.as_nanos() << 16) / 1_000_000_000) as u32
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_block_answering_an_sr_gives_the_time_on_the_way_without_the_receivers_hold() {
        let t = Instant::now();
        let mut rt = RoundTrip::new();
        rt.handle_sr_sent(t, A, &sr(A, 0x1234_5678));
        // Out 40 ms, held 300 ms, back 20 ms.
        let got = rt.handle_block(t + ms(360), A, 0x1234_5678, dlsr(ms(300)));
        let got = got.unwrap();
        assert!(got.abs_diff(ms(60)) < Duration::from_micros(20), "{got:?}");
    }

    #[test]
    fn a_block_names_its_sr_by_stream_and_timestamp() {
        let t = Instant::now();
        let mut rt = RoundTrip::new();
        rt.handle_sr_sent(t, A, &sr(A, 1));
        assert_eq!(
            rt.handle_block(t + ms(50), B, 1, 0),
            None,
            "another stream's SR"
        );
        assert_eq!(
            rt.handle_block(t + ms(50), A, 2, 0),
            None,
            "an SR never sent"
        );
        assert_eq!(rt.handle_block(t + ms(50), A, 0, 0), None, "no SR received");
        assert_eq!(rt.handle_block(t + ms(50), A, 1, 0), Some(ms(50)));
        // A hold longer than the time since the SR went out: no sample.
        assert_eq!(rt.handle_block(t + ms(50), A, 1, dlsr(ms(60))), None);
        assert_eq!(rt.handle_block(t + ms(50), A, 1, u32::MAX), None);
    }

    #[test]
    fn the_sr_before_the_latest_still_answers_while_the_latest_is_queued() {
        let t = Instant::now();
        let mut rt = RoundTrip::new();
        rt.handle_sr_sent(t, A, &sr(A, 1));
        rt.handle_sr_sent(t + ms(1000), A, &sr(A, 2));
        assert_eq!(rt.handle_block(t + ms(1500), A, 1, 0), Some(ms(1500)));
        assert_eq!(rt.handle_block(t + ms(1500), A, 2, 0), Some(ms(500)));
        // A third SR of the stream replaces its oldest, not another stream's.
        rt.handle_sr_sent(t + ms(1000), B, &sr(B, 9));
        rt.handle_sr_sent(t + ms(2000), A, &sr(A, 3));
        assert_eq!(rt.handle_block(t + ms(2500), A, 1, 0), None);
        assert_eq!(rt.handle_block(t + ms(2500), A, 2, 0), Some(ms(1500)));
        assert_eq!(rt.handle_block(t + ms(2500), B, 9, 0), Some(ms(1500)));
    }

    #[test]
    fn many_streams_fill_every_slot_and_then_replace_the_oldest() {
        let t = Instant::now();
        let mut rt = RoundTrip::new();
        for i in 0..SLOTS as u32 + 4 {
            let ssrc = Ssrc(100 + i);
            rt.handle_sr_sent(t + ms(u64::from(i)), ssrc, &sr(ssrc, i + 1));
        }
        // The first four went to make room; the rest answer.
        for i in 0..SLOTS as u32 + 4 {
            let got = rt.handle_block(t + ms(100), Ssrc(100 + i), i + 1, 0);
            assert_eq!(got.is_some(), i >= 4, "stream {i}");
        }
        // A short packet is no SR.
        rt.handle_sr_sent(t, A, &[0x80, 200, 0, 1]);
        assert_eq!(rt.handle_block(t + ms(1), A, 0, 0), None);
    }
}
