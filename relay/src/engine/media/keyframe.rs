//! The keyframe-request throttle: receivers' PLIs and FIRs for one stream reach its
//! sender at most once per interval, whatever the number of receivers asking (a crowd
//! joining must not become a keyframe storm).

use std::time::{Duration, Instant};

/// One stream's throttle (on the sender's home shard).
#[derive(Debug, Clone, Default)]
pub(crate) struct KeyframeThrottle {
    /// When a request last went to the sender.
    last_sent: Option<Instant>,
}

impl KeyframeThrottle {
    /// A receiver asked for a keyframe at `now`: whether to pass it on to the sender
    /// (and start a new interval), or absorb it.
    pub(crate) fn handle_request(&mut self, now: Instant, interval: Duration) -> bool {
        if self
            .last_sent
            .is_some_and(|t| now.saturating_duration_since(t) < interval)
        {
            return false;
        }
        self.last_sent = Some(now);
        true
    }

    /// It decides only when asked: no deadline of its own.
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
        assert_eq!(k.poll_timeout(), None);
    }
}
