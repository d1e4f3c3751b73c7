//! A token bucket for what one participant may ask of the relay per second — NACKed
//! sequence numbers, RTCP packets — so that no input, however it is packed, costs the
//! relay more than a fixed rate of work on the participant's behalf.
//!
//! GCRA form: the state is the instant the bucket would be full again, so an idle
//! bucket costs nothing and is refilled lazily when it is next used. It holds at most
//! one second's worth.

use std::time::{Duration, Instant};

/// `per_second` a second, at most a second's worth at once (0: no cap).
#[derive(Debug)]
pub(crate) struct Budget {
    /// What one unit costs (`None`: no cap).
    cost: Option<Duration>,
    /// When the bucket is full again at what was spent so far.
    full_at: Option<Instant>,
}

impl Budget {
    /// The most a full bucket holds: one second's worth.
    const DEPTH: Duration = Duration::from_secs(1);

    /// A full bucket of `per_second` a second (0: no cap).
    pub(crate) fn new(per_second: u32) -> Self {
        let cost =
            (per_second > 0).then(|| (Self::DEPTH / per_second).max(Duration::from_nanos(1)));
        Budget {
            cost,
            full_at: None,
        }
    }

    /// How many of `wanted` units may be spent at `now`; they are spent. Time that went
    /// backwards counts as none passed.
    pub(crate) fn take(&mut self, now: Instant, wanted: usize) -> usize {
        let Some(cost) = self.cost else {
            return wanted;
        };
        let n = self.available(now, cost).min(wanted);
        // n ≤ DEPTH / cost, so the product is at most DEPTH.
        self.full_at = Some(self.spent_until(now) + cost * n as u32);
        n
    }

    /// Spends `n` units at `now` if all of them are there; else spends nothing.
    pub(crate) fn try_take(&mut self, now: Instant, n: usize) -> bool {
        self.cost.is_none_or(|cost| self.available(now, cost) >= n) && self.take(now, n) == n
    }

    /// The units there at `now`, each costing `cost`.
    fn available(&self, now: Instant, cost: Duration) -> usize {
        let room = (now + Self::DEPTH).saturating_duration_since(self.spent_until(now));
        usize::try_from(room.as_nanos() / cost.as_nanos()).unwrap_or(usize::MAX)
    }

    /// What was spent so far counts from this instant (never before `now`).
    fn spent_until(&self, now: Instant) -> Instant {
        self.full_at.map_or(now, |t| t.max(now))
    }
}

#[cfg(test)]
mod tests {
    // One arbitrary base instant; everything after it is simulated.
    #![allow(clippy::disallowed_methods)]

    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_budget_caps_at_a_seconds_worth_and_refills_with_time() {
        let t0 = Instant::now();
        let mut b = Budget::new(250);
        // A full bucket: one second's worth at once, nothing more.
        assert_eq!(b.take(t0, 200), 200);
        assert_eq!(b.take(t0, 200), 50);
        assert_eq!(b.take(t0, 1), 0);
        // It refills at 250 a second (one per 4 ms) ...
        assert_eq!(b.take(t0 + 40 * MS, 100), 10);
        // ... and never beyond one second's worth, however long it rests.
        assert_eq!(b.take(t0 + 60_000 * MS, 1000), 250);
        // Time that went backwards gives nothing back.
        assert_eq!(b.take(t0, 10), 0);
        // Asking for nothing spends nothing.
        assert_eq!(b.take(t0 + 61_000 * MS, 0), 0);
        assert_eq!(b.take(t0 + 61_000 * MS, 1000), 250);
    }

    #[test]
    fn asking_steadily_gets_the_rate_and_no_more() {
        let t0 = Instant::now();
        let mut b = Budget::new(250);
        // 100 every 10 ms for 10 s: 10 000 a second asked.
        let got: usize = (0..1000).map(|i| b.take(t0 + 10 * MS * i, 100)).sum();
        // The first second's depth plus 250 a second for the ten seconds.
        assert!((250 + 2490..=250 + 2500).contains(&got), "{got}");
    }

    #[test]
    fn try_take_spends_all_or_nothing() {
        let t0 = Instant::now();
        let mut b = Budget::new(250);
        assert!(b.try_take(t0, 200));
        assert!(!b.try_take(t0, 100), "only 50 left");
        assert!(b.try_take(t0, 50), "and they are still there");
        assert!(!b.try_take(t0, 1));
        assert!(b.try_take(t0 + MS * 4, 1), "one more after 4 ms");
        assert!(Budget::new(0).try_take(t0, usize::MAX));
    }

    #[test]
    fn a_budget_of_zero_is_no_cap() {
        let t0 = Instant::now();
        let mut b = Budget::new(0);
        assert_eq!(b.take(t0, 100_000), 100_000);
        assert_eq!(b.take(t0, usize::MAX), usize::MAX);
        let mut fast = Budget::new(u32::MAX);
        assert!(fast.take(t0, 10_000_000) > 1_000_000);
    }
}
