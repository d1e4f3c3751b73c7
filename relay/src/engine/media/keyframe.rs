//! The keyframe-request throttle: receivers' PLIs and FIRs for one stream, and the
//! relay's own requests on layer switches, reach its sender at most once per interval
//! and at most a few times per second, whatever the number of receivers asking (a
//! crowd joining must not become a keyframe storm).
//!
//! Two limits, both counted from requests that went out (an absorbed one starts
//! nothing):
//!
//! - **interval** (default 300 ms): one request per interval. A keyframe takes about
//!   a round trip to arrive, so requests within one interval are all served by it.
//! - **per second** (default 2): at most this many requests in any rolling second. A
//!   keyframe costs several times a delta frame; a receiver on a lossy link that asks
//!   after every loss would otherwise keep the sender at three keyframes a second,
//!   which is most of its bitrate. Two still lets a join and a layer switch 300 ms
//!   apart both be served at once.
//!
//! Each request that goes out carries the next FIR command sequence number of this
//! stream (RFC 5104 §4.3.1.2): the number space is per pair of command source (the
//! relay) and target SSRC, so the throttle, which is per stream, keeps it. It starts
//! at 0 and grows by one, modulo 256, with each request that goes out. The relay never
//! repeats a FIR: asking again for a keyframe that has not come is a new command, which
//! the sender must act on (a repetition, with the same number, it may ignore).

use std::time::{Duration, Instant};

/// The most requests per second the throttle can be set to allow.
const MAX_PER_SECOND: usize = 8;
const SECOND: Duration = Duration::from_secs(1);

/// Settings of the throttle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct KeyframeConfig {
    /// At most one request per stream in this interval.
    pub interval: Duration,
    /// At most this many requests per stream in any rolling second (1 to 8).
    pub max_per_second: u32,
}

impl Default for KeyframeConfig {
    fn default() -> Self {
        KeyframeConfig {
            interval: Duration::from_millis(300),
            max_per_second: 2,
        }
    }
}

/// A request that passed the throttle: send it to the sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct KeyframeRequest {
    /// The FIR command sequence number to use if it goes out as a FIR (a PLI has none).
    pub fir_seq: u8,
}

/// One stream's throttle (on the sender's home shard).
#[derive(Debug, Clone, Default)]
pub(crate) struct KeyframeThrottle {
    /// When a request last went to the sender.
    last_sent: Option<Instant>,
    /// When the last requests went out: a ring, `sent_at[next]` the oldest.
    sent_at: [Option<Instant>; MAX_PER_SECOND],
    next: usize,
    /// The FIR sequence number of the next new request.
    next_fir_seq: u8,
}

impl KeyframeThrottle {
    /// A receiver asked for a keyframe at `now`: whether to pass it on to the sender
    /// (and start a new interval), or absorb it. The default per-second cap applies.
    #[cfg(test)]
    pub(crate) fn handle_request(&mut self, now: Instant, interval: Duration) -> bool {
        let cfg = KeyframeConfig {
            interval,
            ..KeyframeConfig::default()
        };
        self.request(now, &cfg).is_some()
    }

    /// A receiver (or the relay itself) asked for a keyframe at `now`: the request to
    /// send, with its FIR sequence number, or `None` to absorb it.
    pub(crate) fn request(
        &mut self,
        now: Instant,
        cfg: &KeyframeConfig,
    ) -> Option<KeyframeRequest> {
        if self
            .last_sent
            .is_some_and(|t| now.saturating_duration_since(t) < cfg.interval)
        {
            return None;
        }
        let cap = (cfg.max_per_second as usize).clamp(1, MAX_PER_SECOND);
        let within_second = self
            .sent_at
            .iter()
            .flatten()
            .filter(|&&t| now.saturating_duration_since(t) < SECOND)
            .count();
        if within_second >= cap {
            return None;
        }
        self.last_sent = Some(now);
        self.sent_at[self.next] = Some(now);
        self.next = (self.next + 1) % MAX_PER_SECOND;
        let fir_seq = self.next_fir_seq;
        self.next_fir_seq = fir_seq.wrapping_add(1);
        Some(KeyframeRequest { fir_seq })
    }
}

#[cfg(test)]
mod tests {
    // One arbitrary base instant; everything after it is simulated.
    #![allow(clippy::disallowed_methods)]

    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn one_request_per_interval_passes() {
        let t0 = Instant::now();
        let iv = Duration::from_millis(300);
        let mut k = KeyframeThrottle::default();
        assert!(k.handle_request(t0, iv), "the first passes");
        assert!(
            !k.handle_request(t0, iv),
            "a second receiver at once is absorbed"
        );
        assert!(!k.handle_request(t0 + Duration::from_millis(299), iv));
        assert!(k.handle_request(t0 + iv, iv), "a new interval");
        // Time that goes backwards counts as no time passed.
        assert!(!k.handle_request(t0, iv));
    }

    #[test]
    fn defaults() {
        let d = KeyframeConfig::default();
        assert_eq!(d.interval, 300 * MS);
        assert_eq!(d.max_per_second, 2);
    }

    #[test]
    fn fifty_receivers_at_once_make_one_request() {
        let t0 = Instant::now();
        let cfg = KeyframeConfig::default();
        let mut k = KeyframeThrottle::default();
        let passed = (0..50)
            .filter(|i| k.request(t0 + MS * (i % 3), &cfg).is_some())
            .count();
        assert_eq!(passed, 1);
    }

    #[test]
    fn the_per_second_cap_holds_in_every_rolling_second() {
        let t0 = Instant::now();
        let cfg = KeyframeConfig::default();
        let mut k = KeyframeThrottle::default();
        // A receiver asking every 10 ms for 10 s.
        let sent: Vec<Instant> = (0..1000)
            .map(|i| t0 + 10 * MS * i)
            .filter(|&t| k.request(t, &cfg).is_some())
            .collect();
        for (i, &t) in sent.iter().enumerate() {
            let in_second = sent[i..].iter().filter(|&&u| u - t < SECOND).count();
            assert!(in_second <= 2, "{in_second} requests within a second");
            if i > 0 {
                assert!(t - sent[i - 1] >= 300 * MS);
            }
        }
        // Two per second, sustained: 0, 0.3, 1.0, 1.3, 2.0, …
        assert_eq!(sent.len(), 20);
        assert_eq!(sent[1] - sent[0], 300 * MS);
        assert_eq!(sent[2] - sent[0], 1000 * MS);
    }

    #[test]
    fn the_cap_is_clamped_to_what_the_ring_holds() {
        let t0 = Instant::now();
        let mut k = KeyframeThrottle::default();
        let cfg = KeyframeConfig {
            interval: Duration::ZERO,
            max_per_second: 0,
        };
        assert!(k.request(t0, &cfg).is_some(), "0 counts as 1");
        assert!(k.request(t0 + 999 * MS, &cfg).is_none());
        let cfg = KeyframeConfig {
            interval: Duration::ZERO,
            max_per_second: 1000,
        };
        let mut k = KeyframeThrottle::default();
        let passed = (0..100)
            .filter(|&i| k.request(t0 + MS * i, &cfg).is_some())
            .count();
        assert_eq!(passed, MAX_PER_SECOND);
    }

    #[test]
    fn fir_sequence_numbers_grow_per_new_request_only() {
        let t0 = Instant::now();
        let cfg = KeyframeConfig {
            interval: 300 * MS,
            max_per_second: 8,
        };
        let mut k = KeyframeThrottle::default();
        let mut expected = 0u8;
        for i in 0..600u32 {
            let now = t0 + 100 * MS * i;
            // An absorbed request is no new command: the number stays.
            if let Some(r) = k.request(now, &cfg) {
                assert_eq!(r.fir_seq, expected, "request {i}");
                expected = expected.wrapping_add(1);
            }
        }
        // 600 asks every 100 ms, one passes per 300 ms: 200 new requests.
        assert_eq!(expected, 200);
        // Each stream has its own number space.
        let mut other = KeyframeThrottle::default();
        assert_eq!(
            other.request(t0, &cfg),
            Some(KeyframeRequest { fir_seq: 0 })
        );
        let mut k = KeyframeThrottle::default();
        for i in 0..300u32 {
            assert_eq!(
                k.request(t0 + SECOND * i, &cfg).map(|r| r.fir_seq),
                Some(i as u8),
                "wraps modulo 256"
            );
        }
    }

    #[test]
    fn time_going_backwards_never_passes_more() {
        let t0 = Instant::now() + SECOND * 10;
        let cfg = KeyframeConfig::default();
        let mut k = KeyframeThrottle::default();
        assert!(k.request(t0, &cfg).is_some());
        assert!(k.request(t0 - SECOND * 5, &cfg).is_none());
        assert!(k.request(t0 + 300 * MS, &cfg).is_some());
        assert!(k.request(t0 + 600 * MS, &cfg).is_none(), "the cap");
        assert!(k.request(t0 + 1000 * MS, &cfg).is_some());
    }
}
