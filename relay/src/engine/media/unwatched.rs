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
//! PAUSED and REFUSED replies are not needed: the relay watches the layer itself. RTCP
//! can be lost, and a sender that connected again may have forgotten a PAUSE, so while
//! the layer is paused the relay checks every [`UnwatchedLayer::RECHECK`] whether it
//! still arrives, more than [`UnwatchedLayer::HEED`] after the PAUSE went, and if it
//! does sends the PAUSE again (same PauseID). A RESUME that nothing of the layer follows
//! within [`UnwatchedLayer::RECHECK`] is sent again, with its keyframe request, up to
//! [`UnwatchedLayer::RESUME_REPEATS`] times (a sender whose camera is off has nothing
//! to resume).

use std::time::{Duration, Instant};

/// What to ask of the sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PauseAction {
    /// PAUSE the layer, with this PauseID.
    Pause(u16),
    /// RESUME it (the PauseID of the PAUSE it ends), then a keyframe.
    Resume(u16),
}

/// A request to send: what, and whether it repeats one the sender did not heed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PauseAsk {
    pub(crate) action: PauseAction,
    pub(crate) again: bool,
}

/// The request in force, and when it is next checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Asked {
    /// Paused with this PauseID; the PAUSE last went at `sent`, and the layer is next
    /// checked at `check`.
    Paused {
        id: u16,
        sent: Instant,
        check: Instant,
    },
    /// Resumed: the RESUME (this PauseID) first went at `first`, last at `sent`, and
    /// went `repeats` more times.
    Resuming {
        id: u16,
        first: Instant,
        sent: Instant,
        repeats: u8,
    },
}

/// One full-resolution layer's pause state (on its sender's home shard).
#[derive(Debug, Default)]
pub(crate) struct UnwatchedLayer {
    /// Since when nobody receives it (while not paused).
    unwatched_since: Option<Instant>,
    /// The PAUSE in force, or a RESUME not yet seen heeded.
    asked: Option<Asked>,
    /// The PauseID of the next PAUSE.
    next_id: u16,
}

impl UnwatchedLayer {
    /// How long a layer stays unwatched before it is paused.
    pub(crate) const DELAY: Duration = Duration::from_millis(500);
    /// How often a paused layer is checked for packets, and how long a RESUME waits
    /// for the layer's first packets before it is sent again.
    pub(crate) const RECHECK: Duration = Duration::from_secs(2);
    /// How long after a PAUSE went the layer's packets may still arrive (in flight, or
    /// the sender's round trip) without it being sent again.
    pub(crate) const HEED: Duration = Duration::from_secs(1);
    /// How many times a RESUME is sent again at most.
    pub(crate) const RESUME_REPEATS: u8 = 3;

    /// The layer now has `viewers` receivers: a RESUME if it was paused and has
    /// viewers again.
    pub(crate) fn handle_viewers(&mut self, now: Instant, viewers: usize) -> Option<PauseAction> {
        if viewers > 0 {
            self.unwatched_since = None;
            let Some(Asked::Paused { id, .. }) = self.asked else {
                return None;
            };
            self.asked = Some(Asked::Resuming {
                id,
                first: now,
                sent: now,
                repeats: 0,
            });
            return Some(PauseAction::Resume(id));
        }
        if !self.is_paused() && self.unwatched_since.is_none() {
            self.unwatched_since = Some(now);
        }
        None
    }

    /// When it is to be paused, or its request checked.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        let check = match self.asked {
            Some(Asked::Paused { check, .. }) => Some(check),
            Some(Asked::Resuming { sent, .. }) => sent.checked_add(Self::RECHECK),
            None => None,
        };
        let pause = self.unwatched_since.map(|t| t + Self::DELAY);
        pause.into_iter().chain(check).min()
    }

    /// A PAUSE if the layer has been unwatched long enough; a PAUSE again if it still
    /// arrives, or a RESUME again if it does not. `arrived`: when the layer's packets
    /// were last seen arriving (its last rate measurement with packets in it).
    pub(crate) fn handle_timeout(
        &mut self,
        now: Instant,
        arrived: Option<Instant>,
    ) -> Option<PauseAsk> {
        if self.unwatched_since.is_some_and(|t| now >= t + Self::DELAY) {
            self.unwatched_since = None;
            let id = self.next_id;
            self.next_id = id.wrapping_add(1);
            self.asked = Some(Asked::Paused {
                id,
                sent: now,
                check: now + Self::RECHECK,
            });
            return Some(PauseAsk {
                action: PauseAction::Pause(id),
                again: false,
            });
        }
        match &mut self.asked {
            Some(Asked::Paused { id, sent, check }) if now >= *check => {
                *check = now + Self::RECHECK;
                if arrived.is_none_or(|a| a <= *sent + Self::HEED) {
                    return None;
                }
                *sent = now;
                Some(PauseAsk {
                    action: PauseAction::Pause(*id),
                    again: true,
                })
            }
            Some(Asked::Resuming {
                id,
                first,
                sent,
                repeats,
            }) if now >= *sent + Self::RECHECK => {
                let id = *id;
                // Arrived, given up on, or nobody to resume it for now (a viewer that
                // comes back within the delay gets no RESUME again).
                let done = arrived.is_some_and(|a| a >= *first)
                    || *repeats >= Self::RESUME_REPEATS
                    || self.unwatched_since.is_some();
                if done {
                    self.asked = None;
                    return None;
                }
                *sent = now;
                *repeats += 1;
                Some(PauseAsk {
                    action: PauseAction::Resume(id),
                    again: true,
                })
            }
            _ => None,
        }
    }

    /// Whether a PAUSE is in force.
    pub(crate) fn is_paused(&self) -> bool {
        matches!(self.asked, Some(Asked::Paused { .. }))
    }
}

#[cfg(test)]
mod tests {
    // One arbitrary base instant; everything after it is simulated.
    #![allow(clippy::disallowed_methods)]

    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn first(action: PauseAction) -> PauseAsk {
        PauseAsk {
            action,
            again: false,
        }
    }

    fn again(action: PauseAction) -> PauseAsk {
        PauseAsk {
            action,
            again: true,
        }
    }

    #[test]
    fn unwatched_for_the_delay_pauses_and_a_viewer_resumes_at_once() {
        let t0 = Instant::now();
        let mut l = UnwatchedLayer::default();
        assert_eq!(l.handle_viewers(t0, 0), None);
        assert_eq!(l.poll_timeout(), Some(t0 + UnwatchedLayer::DELAY));
        assert_eq!(
            l.handle_timeout(t0 + 499 * MS, None),
            None,
            "not before the delay"
        );
        assert_eq!(
            l.handle_timeout(t0 + 500 * MS, None),
            Some(first(PauseAction::Pause(0)))
        );
        assert!(l.is_paused());
        assert_eq!(
            l.poll_timeout(),
            Some(t0 + 500 * MS + UnwatchedLayer::RECHECK),
            "paused: checked for packets"
        );
        assert_eq!(l.handle_viewers(t0 + 600 * MS, 0), None, "still nobody");
        assert_eq!(
            l.handle_viewers(t0 + 700 * MS, 1),
            Some(PauseAction::Resume(0)),
            "the RESUME names the PAUSE it ends"
        );
        assert_eq!(l.handle_viewers(t0 + 800 * MS, 2), None, "already flowing");
        assert_eq!(l.handle_viewers(t0 + 900 * MS, 0), None);
        assert_eq!(
            l.handle_timeout(t0 + 1400 * MS, None),
            Some(first(PauseAction::Pause(1))),
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
        assert_eq!(l.handle_timeout(t0 + 2000 * MS, None), None, "never paused");
        // Unwatched again: the delay starts over from then.
        l.handle_viewers(t0 + 2000 * MS, 0);
        assert_eq!(l.poll_timeout(), Some(t0 + 2500 * MS));
    }

    #[test]
    fn a_paused_layer_that_still_arrives_is_paused_again_with_the_same_id() {
        let t0 = Instant::now();
        let mut l = UnwatchedLayer::default();
        l.handle_viewers(t0, 0);
        let paused = t0 + UnwatchedLayer::DELAY;
        assert_eq!(
            l.handle_timeout(paused, None),
            Some(first(PauseAction::Pause(0)))
        );
        let check = paused + UnwatchedLayer::RECHECK;
        assert_eq!(l.poll_timeout(), Some(check));
        // Packets in flight when it went, or the sender's round trip: heeded.
        let in_flight = Some(paused + 900 * MS);
        assert_eq!(l.handle_timeout(check - MS, in_flight), None, "not yet due");
        assert_eq!(l.handle_timeout(check, in_flight), None);
        // The sender went on sending (the PAUSE was lost, or it forgot it).
        let next = check + UnwatchedLayer::RECHECK;
        assert_eq!(l.poll_timeout(), Some(next));
        assert_eq!(
            l.handle_timeout(next, Some(next - 100 * MS)),
            Some(again(PauseAction::Pause(0))),
            "the same PauseID"
        );
        // Stopped since: nothing more, however often it is checked.
        let last = next - 100 * MS;
        for k in 1..5 {
            let t = next + UnwatchedLayer::RECHECK * k;
            assert_eq!(l.poll_timeout(), Some(t));
            assert_eq!(l.handle_timeout(t, Some(last)), None, "check {k}");
        }
        // It starts again long after (it connected again and forgot the PAUSE).
        let t = next + UnwatchedLayer::RECHECK * 5;
        assert_eq!(
            l.handle_timeout(t, Some(t - 300 * MS)),
            Some(again(PauseAction::Pause(0)))
        );
        assert!(l.is_paused());
        // A viewer: the RESUME ends that PAUSE.
        assert_eq!(l.handle_viewers(t + MS, 1), Some(PauseAction::Resume(0)));
        assert!(!l.is_paused());
    }

    #[test]
    fn a_resume_that_nothing_follows_is_sent_again_a_few_times() {
        let t0 = Instant::now();
        let mut l = UnwatchedLayer::default();
        l.handle_viewers(t0, 0);
        let paused = t0 + UnwatchedLayer::DELAY;
        l.handle_timeout(paused, None);
        let resumed = paused + 3000 * MS;
        assert_eq!(l.handle_viewers(resumed, 1), Some(PauseAction::Resume(0)));
        // Nothing arrives (the RESUME was lost): sent again every RECHECK, up to
        // RESUME_REPEATS times, then left (a sender with nothing to send).
        let mut t = resumed;
        for _ in 0..UnwatchedLayer::RESUME_REPEATS {
            t += UnwatchedLayer::RECHECK;
            assert_eq!(l.poll_timeout(), Some(t));
            assert_eq!(
                l.handle_timeout(t, Some(paused)),
                Some(again(PauseAction::Resume(0)))
            );
        }
        t += UnwatchedLayer::RECHECK;
        assert_eq!(l.handle_timeout(t, Some(paused)), None);
        assert_eq!(l.poll_timeout(), None, "given up");

        // Heeded: one RESUME only.
        let mut l = UnwatchedLayer::default();
        l.handle_viewers(t0, 0);
        l.handle_timeout(paused, None);
        assert_eq!(l.handle_viewers(resumed, 1), Some(PauseAction::Resume(0)));
        let t = resumed + UnwatchedLayer::RECHECK;
        assert_eq!(l.handle_timeout(t, Some(resumed + 80 * MS)), None);
        assert_eq!(l.poll_timeout(), None);
        // A viewer that blinks out and back (its layer choice moving it) keeps the
        // RESUME's check.
        let mut l = UnwatchedLayer::default();
        l.handle_viewers(t0, 0);
        l.handle_timeout(paused, None);
        l.handle_viewers(resumed, 1);
        assert_eq!(l.handle_viewers(resumed + 10 * MS, 0), None);
        assert_eq!(l.handle_viewers(resumed + 20 * MS, 1), None);
        let t = resumed + UnwatchedLayer::RECHECK;
        assert_eq!(
            l.handle_timeout(t, Some(paused)),
            Some(again(PauseAction::Resume(0)))
        );
        // Unwatched again before the check: no RESUME again, the next PAUSE waits.
        let mut l = UnwatchedLayer::default();
        l.handle_viewers(t0, 0);
        l.handle_timeout(paused, None);
        l.handle_viewers(resumed, 1);
        l.handle_viewers(resumed + 100 * MS, 0);
        assert_eq!(
            l.poll_timeout(),
            Some(resumed + 100 * MS + UnwatchedLayer::DELAY)
        );
        assert_eq!(
            l.handle_timeout(resumed + 100 * MS + UnwatchedLayer::DELAY, None),
            Some(first(PauseAction::Pause(1)))
        );
    }
}
