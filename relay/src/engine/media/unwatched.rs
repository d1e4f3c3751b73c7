//! Pausing unwatched layers (RFC 7728): when no receiver gets a sender's
//! full-resolution layer, the relay asks the sender to PAUSE it, and to RESUME it — the
//! relay also asks for a keyframe — as soon as a receiver wants it again. Uplink spent
//! on a layer nobody watches is the waste users of other SFUs complain about most.
//!
//! A layer is paused only after it has been unwatched for [`UnwatchedLayer::DELAY`], so
//! a subscription switched off and on again (a viewer scrolling past a tile) costs the
//! sender no pause and no keyframe. A viewer appearing resumes at once.
//!
//! PauseID (RFC 7728 §8.2) numbers the relay's requests for the stream: a RESUME carries
//! the PauseID of the PAUSE it ends, and the next PAUSE the next one. The sender's
//! PAUSED and REFUSED replies are not needed: if the layer is not paused, the relay
//! simply forwards it to nobody, as before.

use std::time::{Duration, Instant};

/// What to ask of the sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PauseAction {
    /// PAUSE the layer, with this PauseID.
    Pause(u16),
    /// RESUME it (the PauseID of the PAUSE it ends), then a keyframe.
    Resume(u16),
}

/// One full-resolution layer's pause state (on its sender's home shard).
#[derive(Debug, Default)]
pub(crate) struct UnwatchedLayer {
    /// Since when nobody receives it (while not paused).
    unwatched_since: Option<Instant>,
    /// The PauseID of the PAUSE in force, if paused.
    paused: Option<u16>,
    /// The PauseID of the next PAUSE.
    next_id: u16,
}

impl UnwatchedLayer {
    /// How long a layer stays unwatched before it is paused.
    pub(crate) const DELAY: Duration = Duration::from_millis(500);

    /// The layer now has `viewers` receivers: a RESUME if it was paused and has
    /// viewers again.
    pub(crate) fn handle_viewers(&mut self, now: Instant, viewers: usize) -> Option<PauseAction> {
        if viewers > 0 {
            self.unwatched_since = None;
            return self.paused.take().map(PauseAction::Resume);
        }
        if self.paused.is_none() && self.unwatched_since.is_none() {
            self.unwatched_since = Some(now);
        }
        None
    }

    /// When it is to be paused, if it is waiting to be.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.unwatched_since.map(|t| t + Self::DELAY)
    }

    /// A PAUSE if the layer has been unwatched long enough.
    pub(crate) fn handle_timeout(&mut self, now: Instant) -> Option<PauseAction> {
        let due = self.poll_timeout()?;
        if now < due {
            return None;
        }
        self.unwatched_since = None;
        let id = self.next_id;
        self.next_id = id.wrapping_add(1);
        self.paused = Some(id);
        Some(PauseAction::Pause(id))
    }

    /// Whether a PAUSE is in force.
    pub(crate) fn is_paused(&self) -> bool {
        self.paused.is_some()
    }
}

#[cfg(test)]
mod tests {
    // One arbitrary base instant; everything after it is simulated.
    #![allow(clippy::disallowed_methods)]

    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn unwatched_for_the_delay_pauses_and_a_viewer_resumes_at_once() {
        let t0 = Instant::now();
        let mut l = UnwatchedLayer::default();
        assert_eq!(l.handle_viewers(t0, 0), None);
        assert_eq!(l.poll_timeout(), Some(t0 + UnwatchedLayer::DELAY));
        assert_eq!(
            l.handle_timeout(t0 + 499 * MS),
            None,
            "not before the delay"
        );
        assert_eq!(l.handle_timeout(t0 + 500 * MS), Some(PauseAction::Pause(0)));
        assert!(l.is_paused());
        assert_eq!(l.poll_timeout(), None, "paused: nothing to wait for");
        assert_eq!(l.handle_viewers(t0 + 600 * MS, 0), None, "still nobody");
        assert_eq!(
            l.handle_viewers(t0 + 700 * MS, 1),
            Some(PauseAction::Resume(0)),
            "the RESUME names the PAUSE it ends"
        );
        assert_eq!(l.handle_viewers(t0 + 800 * MS, 2), None, "already flowing");
        assert_eq!(l.handle_viewers(t0 + 900 * MS, 0), None);
        assert_eq!(
            l.handle_timeout(t0 + 1400 * MS),
            Some(PauseAction::Pause(1)),
            "the next PAUSE has the next id"
        );
    }

    #[test]
    fn a_viewer_back_within_the_delay_costs_nothing() {
        let t0 = Instant::now();
        let mut l = UnwatchedLayer::default();
        l.handle_viewers(t0, 1);
        l.handle_viewers(t0 + 10 * MS, 0);
        assert_eq!(l.handle_viewers(t0 + 300 * MS, 1), None);
        assert_eq!(l.poll_timeout(), None);
        assert_eq!(l.handle_timeout(t0 + 2000 * MS), None, "never paused");
        // Unwatched again: the delay starts over from then.
        l.handle_viewers(t0 + 2000 * MS, 0);
        assert_eq!(l.poll_timeout(), Some(t0 + 2500 * MS));
    }
}
