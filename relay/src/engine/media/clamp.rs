//! Rate clamp of one sender's full-resolution stream: the bitrate the relay asks the
//! sender for (REMB, draft-alvestrand-rmcat-remb; or TMMBR, RFC 5104 §4.2.1, for
//! senders that negotiated it) so that every receiver viewing that stream can take it.
//!
//! # The policy
//!
//! - **The lowest viewer sets the rate**: a stream sent faster than a viewer's downlink
//!   carries becomes loss and freezes at that viewer; sent at the lowest estimate, it
//!   fits everyone who gets it.
//! - **Except one far below the rest**: a viewer whose estimate is below half the
//!   median of all viewers' estimates (`demote_below`, default 0.5) would drag everyone
//!   else's picture down to its link. It is left out of the minimum and reported back
//!   ([`ClampOutcome::demote_below_bps`]) for layer choice to move it to the thumbnail
//!   (`Judged::demoted` in `LayerChoice::handle_figures`). With one or two viewers the
//!   median is their mean, so a lone slow viewer of two is demoted only when the other
//!   is more than three times faster.
//! - **Smoothing**: receivers' estimates are noisy. The target follows the minimum
//!   through an exponential filter, quickly down (time constant 0.5 s: a real drop
//!   must reach the sender before its packets are lost) and slowly up (2 s: a sender
//!   told to ramp up fast overshoots and loses). On a steady link the noise of the
//!   minimum is filtered to a few percent, so the requests do not swing by 20%.
//! - **Pacing**: a new value goes to the sender at most once per `interval` (default
//!   1 s; REMB senders expect about one a second anyway) — except at once when the
//!   target has fallen more than 20% below the value last sent (`drop_now`, 0.8),
//!   because then the stream is already too fast for someone.
//!
//! A viewer estimate of 0 means "not known yet" and is left out. The target never goes
//! below `min_bps` (default 50 kbit/s): zero would stop the stream, and stopping it is
//! pausing's job (RFC 7728 PAUSE), decided by who watches, not by a rate.
//!
//! "Viewers" are the receivers that get the stream and, for a while, a subscriber that
//! does not get it yet but whose link a probe measured (a prospect, `layers.rs`): the
//! clamp brings the stream down to it before it is tried on it.
//!
//! The engine calls [`RateClamp::update_capped`] with the viewers' estimates whenever
//! one of them reports (each about once a second). The median needs the estimates
//! side by side: they are copied into a buffer allocated at construction
//! (`max_viewers`, default 256; beyond that the median is taken over the first 256,
//! and the minimum still over all).

use std::time::{Duration, Instant};

/// Settings of the clamp.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct ClampConfig {
    /// Viewers below this fraction of the median are demoted instead of followed.
    pub demote_below: f64,
    /// At most one new value per this interval …
    pub interval: Duration,
    /// … except at once when the target falls below this fraction of the last sent.
    pub drop_now: f64,
    /// Time constant of the filter when the minimum is below the target.
    pub fall: Duration,
    /// Time constant of the filter when the minimum is above the target.
    pub rise: Duration,
    /// The target never goes below this.
    pub min_bps: u64,
    /// Viewers whose estimates the median is taken over.
    pub max_viewers: usize,
}

impl Default for ClampConfig {
    fn default() -> Self {
        ClampConfig {
            demote_below: 0.5,
            interval: Duration::from_secs(1),
            drop_now: 0.8,
            fall: Duration::from_millis(500),
            rise: Duration::from_secs(2),
            min_bps: 50_000,
            max_viewers: 256,
        }
    }
}

/// What one update decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ClampOutcome {
    /// Send the sender this bitrate now (REMB or TMMBR), or nothing yet.
    pub send_bps: Option<u64>,
    /// Viewers whose estimate is below this are moved to the thumbnail instead of
    /// being followed (0: nobody).
    pub demote_below_bps: u64,
}

/// One sender full stream's clamp (on the sender's home shard).
#[derive(Debug)]
pub(crate) struct RateClamp {
    cfg: ClampConfig,
    scratch: Box<[u64]>,
    /// The filtered target and when it was last updated.
    target: Option<(f64, Instant)>,
    /// The value last sent and when.
    sent: Option<(u64, Instant)>,
}

impl RateClamp {
    /// A clamp with no viewers, its buffer allocated now.
    pub(crate) fn new(cfg: ClampConfig) -> Self {
        RateClamp {
            scratch: vec![0; cfg.max_viewers].into_boxed_slice(),
            cfg,
            target: None,
            sent: None,
        }
    }

    /// The estimates (bits per second) of the receivers currently viewing the stream,
    /// at `now`: what to send the sender, and who to demote. With no viewers (or none
    /// with an estimate) nothing is sent and the filter starts afresh next time.
    // The engine caps the median (`update_capped`); the machine's own rules are tested
    // uncapped.
    #[cfg(test)]
    pub(crate) fn update<I>(&mut self, now: Instant, viewers: I) -> ClampOutcome
    where
        I: IntoIterator<Item = u64>,
        I::IntoIter: Clone,
    {
        self.update_capped(now, viewers, u64::MAX)
    }

    /// `update` (its tests' entry), with each viewer counted at no more than
    /// `median_cap` in the median (the minimum takes them as they are).
    ///
    /// The engine caps at the layer's current rate: a viewer's estimate is bounded by
    /// 1.5× what it was sent, so viewers with room to spare would otherwise put the
    /// median at 1.5× the layer's rate, and "half the median" would demote a viewer
    /// that can take three quarters of it. Capped, a viewer is demoted when it can take
    /// less than half of what the others are being sent.
    pub(crate) fn update_capped<I>(
        &mut self,
        now: Instant,
        viewers: I,
        median_cap: u64,
    ) -> ClampOutcome
    where
        I: IntoIterator<Item = u64>,
        I::IntoIter: Clone,
    {
        let viewers = viewers.into_iter().filter(|&v| v > 0);
        if viewers.clone().next().is_none() {
            self.target = None;
            self.sent = None;
            return ClampOutcome {
                send_bps: None,
                demote_below_bps: 0,
            };
        }
        let mut n = 0;
        for v in viewers.clone() {
            if n == self.scratch.len() {
                break;
            }
            self.scratch[n] = v.min(median_cap.max(1));
            n += 1;
        }
        let demote_below_bps = match median(&mut self.scratch[..n]) {
            Some(m) if n > 1 => (m * self.cfg.demote_below.clamp(0.0, 1.0)) as u64,
            _ => 0,
        };
        // Not empty: the viewer at the median is at least its (capped) value, above any
        // demotion bound.
        let lowest = viewers
            .filter(|&v| v >= demote_below_bps)
            .min()
            .unwrap_or(u64::MAX) as f64;
        let target = match self.target {
            None => lowest,
            Some((t, at)) => {
                let dt = now.saturating_duration_since(at).as_secs_f64();
                let tau = if lowest < t {
                    self.cfg.fall
                } else {
                    self.cfg.rise
                };
                let k = if tau.is_zero() {
                    1.0
                } else {
                    1.0 - (-dt / tau.as_secs_f64()).exp()
                };
                t + (lowest - t) * k
            }
        };
        // Time that went backwards leaves the filter's clock where it was.
        let at = self.target.map_or(now, |(_, at)| at.max(now));
        self.target = Some((target, at));
        let value = (target as u64).max(self.cfg.min_bps);
        let due = match self.sent {
            None => true,
            Some((last, at)) => {
                (value as f64) < last as f64 * self.cfg.drop_now
                    || now.saturating_duration_since(at) >= self.cfg.interval
            }
        };
        let send_bps = due.then(|| {
            self.sent = Some((value, now));
            value
        });
        ClampOutcome {
            send_bps,
            demote_below_bps,
        }
    }

    /// The current target (what its viewers can take), or `None` with no viewers.
    pub(crate) fn target(&self) -> Option<u64> {
        let (t, _) = self.target?;
        Some((t as u64).max(self.cfg.min_bps))
    }

    /// When the next periodic value is due (then call [`Self::update`] with the
    /// viewers), or `None` with no viewers.
    // The engine updates the clamp on every viewer's report (about one a second per
    // viewer), so it needs no timer of its own.
    #[cfg(test)]
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        let (_, at) = self.sent?;
        at.checked_add(self.cfg.interval)
    }
}

/// The median of `v` (the mean of the middle two for an even count), reordering it.
fn median(v: &mut [u64]) -> Option<f64> {
    let n = v.len();
    if n == 0 {
        return None;
    }
    let (lower, &mut mid, _) = v.select_nth_unstable(n / 2);
    if n % 2 == 1 {
        return Some(mid as f64);
    }
    let below = lower.iter().copied().max().unwrap_or(mid);
    Some((below as f64 + mid as f64) / 2.0)
}

#[cfg(test)]
mod capped_tests {
    #![allow(clippy::disallowed_methods)]
    use super::*;

    #[test]
    fn a_capped_median_demotes_only_below_half_of_what_is_sent() {
        let t0 = Instant::now();
        // Two viewers with room (their estimates 1.5× the layer's 1.5 Mbit/s) and one
        // that can take 1.0 Mbit/s: uncapped, the bound is 1.125 Mbit/s and it is
        // demoted; capped at the layer's rate, the bound is 750 kbit/s and it is
        // followed.
        let viewers = [2_250_000u64, 2_250_000, 1_000_000];
        let mut c = RateClamp::new(ClampConfig::default());
        let out = c.update(t0, viewers);
        assert_eq!(out.demote_below_bps, 1_125_000);
        assert_eq!(out.send_bps, Some(2_250_000));
        let mut c = RateClamp::new(ClampConfig::default());
        let out = c.update_capped(t0, viewers, 1_500_000);
        assert_eq!(out.demote_below_bps, 750_000);
        assert_eq!(out.send_bps, Some(1_000_000));
        // One that can take 600 kbit/s is still demoted.
        let mut c = RateClamp::new(ClampConfig::default());
        let out = c.update_capped(t0, [2_250_000, 2_250_000, 600_000], 1_500_000);
        assert_eq!(out.send_bps, Some(2_250_000));
    }
}

#[cfg(test)]
mod tests {
    // One arbitrary base instant; everything after it is simulated.
    #![allow(clippy::disallowed_methods)]

    use super::*;

    const MS: Duration = Duration::from_millis(1);
    const S: Duration = Duration::from_secs(1);

    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        /// Uniform in `[-1, 1]`.
        fn signed_unit(&mut self) -> f64 {
            (self.next() % 2_000_001) as f64 / 1_000_000.0 - 1.0
        }
    }

    #[test]
    fn defaults() {
        let d = ClampConfig::default();
        assert_eq!(d.demote_below, 0.5);
        assert_eq!(d.interval, S);
        assert_eq!(d.drop_now, 0.8);
        assert_eq!((d.fall, d.rise), (500 * MS, 2 * S));
        assert_eq!(d.min_bps, 50_000);
    }

    #[test]
    fn the_lowest_viewer_sets_the_rate() {
        let t0 = Instant::now();
        let mut c = RateClamp::new(ClampConfig::default());
        let o = c.update(t0, [3_000_000, 2_000_000, 1_200_000]);
        assert_eq!(o.send_bps, Some(1_200_000));
        // Median 2 Mbit/s: nobody is below 1 Mbit/s, nobody demoted.
        assert_eq!(o.demote_below_bps, 1_000_000);
    }

    #[test]
    fn a_viewer_far_below_the_rest_is_demoted_instead() {
        let t0 = Instant::now();
        let mut c = RateClamp::new(ClampConfig::default());
        let viewers = [2_000_000, 2_200_000, 1_800_000, 500_000];
        let o = c.update(t0, viewers);
        // Median 1.9 Mbit/s, half of it 950 kbit/s: the 500 kbit/s viewer goes to the
        // thumbnail and the others get 1.8 Mbit/s.
        assert_eq!(o.demote_below_bps, 950_000);
        assert_eq!(o.send_bps, Some(1_800_000));
        assert_eq!(
            viewers.iter().filter(|&&v| v < o.demote_below_bps).count(),
            1
        );
        // Two viewers: the slow one is demoted only when more than 3× slower.
        let mut c = RateClamp::new(ClampConfig::default());
        assert_eq!(
            c.update(t0, [1_000_000, 3_000_000]).send_bps,
            Some(1_000_000)
        );
        let mut c = RateClamp::new(ClampConfig::default());
        assert_eq!(c.update(t0, [900_000, 3_000_000]).send_bps, Some(3_000_000));
        // A single viewer is never demoted.
        let mut c = RateClamp::new(ClampConfig::default());
        let o = c.update(t0, [100_000]);
        assert_eq!((o.send_bps, o.demote_below_bps), (Some(100_000), 0));
    }

    #[test]
    fn values_go_out_once_a_second_or_at_once_on_a_drop() {
        let t0 = Instant::now();
        let mut c = RateClamp::new(ClampConfig::default());
        assert_eq!(c.update(t0, [2_000_000]).send_bps, Some(2_000_000));
        assert_eq!(c.poll_timeout(), Some(t0 + S));
        // Updates within the second send nothing…
        assert_eq!(c.update(t0 + 500 * MS, [2_100_000]).send_bps, None);
        // …the periodic one does.
        let v = c.update(t0 + S, [2_100_000]).send_bps.unwrap();
        assert!((2_000_000..2_100_000).contains(&v), "rises slowly: {v}");
        // The link halves: the drop goes out at once, well before the next second.
        let mut sent = None;
        for i in 1..10u32 {
            let now = t0 + S + 100 * MS * i;
            if let Some(v) = c.update(now, [1_000_000]).send_bps {
                sent = Some((now, v));
                break;
            }
        }
        let (at, v) = sent.expect("a drop is sent at once");
        assert!(at < t0 + 2 * S, "{:?}", at - t0);
        assert!(v < 1_700_000, "{v}");
        // It settles on the new rate.
        let mut last = v;
        for i in 0..50u32 {
            if let Some(v) = c.update(at + 100 * MS * i, [1_000_000]).send_bps {
                last = v;
            }
        }
        assert!(last.abs_diff(1_000_000) < 20_000, "{last}");
    }

    /// A steady link reported with ±15% noise by each of three viewers: the requests
    /// stay within 20% of each other (the raw minimum swings by more than that).
    #[test]
    fn a_noisy_steady_link_does_not_oscillate() {
        let t0 = Instant::now();
        let mut c = RateClamp::new(ClampConfig::default());
        let mut rng = XorShift(0x5eed);
        let (mut lo, mut hi, mut sends) = (u64::MAX, 0, 0);
        let (mut raw_lo, mut raw_hi) = (u64::MAX, 0);
        for i in 0..1200u32 {
            let now = t0 + 100 * MS * i;
            let viewers: Vec<u64> = (0..3)
                .map(|_| (2_000_000.0 * (1.0 + 0.15 * rng.signed_unit())) as u64)
                .collect();
            let raw = *viewers.iter().min().unwrap();
            let o = c.update(now, viewers.iter().copied());
            if i >= 100 {
                raw_lo = raw_lo.min(raw);
                raw_hi = raw_hi.max(raw);
                if let Some(v) = o.send_bps {
                    lo = lo.min(v);
                    hi = hi.max(v);
                    sends += 1;
                }
            }
        }
        // 110 s of updates after the first 10: about one request a second (the interval;
        // more only when the target falls 20% under the last, which must not happen here).
        assert!((100..=120).contains(&sends), "{sends} requests");
        assert!((hi as f64) < lo as f64 * 1.2, "requests {lo}..{hi}");
        assert!(
            (raw_hi as f64) > raw_lo as f64 * 1.2,
            "the input does swing"
        );
    }

    #[test]
    fn no_viewers_sends_nothing_and_starts_afresh() {
        let t0 = Instant::now();
        let mut c = RateClamp::new(ClampConfig::default());
        c.update(t0, [2_000_000]);
        let o = c.update(t0 + S, std::iter::empty());
        assert_eq!(
            o,
            ClampOutcome {
                send_bps: None,
                demote_below_bps: 0
            }
        );
        assert_eq!(c.poll_timeout(), None);
        // Unknown estimates (0) are no viewers either.
        assert_eq!(c.update(t0 + S, [0, 0]).send_bps, None);
        // A new viewer is followed at once, not filtered from the old value.
        assert_eq!(c.update(t0 + 2 * S, [700_000]).send_bps, Some(700_000));
    }

    #[test]
    fn more_viewers_than_the_buffer() {
        let t0 = Instant::now();
        let mut c = RateClamp::new(ClampConfig {
            max_viewers: 3,
            ..ClampConfig::default()
        });
        // The median of the first three is 2 Mbit/s; the minimum is over all.
        let o = c.update(t0, [2_000_000, 2_000_000, 2_000_000, 1_500_000, 1_200_000]);
        assert_eq!(o.demote_below_bps, 1_000_000);
        assert_eq!(o.send_bps, Some(1_200_000));
    }

    #[test]
    fn hostile_input_never_panics() {
        let t0 = Instant::now() + 100 * S;
        let mut c = RateClamp::new(ClampConfig {
            demote_below: f64::NAN,
            interval: Duration::MAX,
            drop_now: f64::INFINITY,
            fall: Duration::ZERO,
            rise: Duration::ZERO,
            min_bps: u64::MAX,
            max_viewers: 0,
        });
        let _ = c.update(t0, [u64::MAX, 1, u64::MAX]);
        let _ = c.update(t0 - 50 * S, [u64::MAX]);
        let _ = c.poll_timeout();
        let mut c = RateClamp::new(ClampConfig::default());
        let _ = c.update(t0, [u64::MAX, u64::MAX, 1]);
        let _ = c.update(t0 - 99 * S, [1]);
        let o = c.update(t0, [1]);
        assert!(
            o.send_bps.is_none_or(|v| v >= 50_000),
            "never below the floor"
        );
        assert_eq!(median(&mut []), None);
        assert_eq!(median(&mut [5, 1, 3, 2]), Some(2.5));
    }
}
