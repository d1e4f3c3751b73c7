//! When sessions and conferences need the engine's attention: a min-heap of deadlines,
//! so a shard's [`poll_timeout`](super::Engine::poll_timeout) is the soonest of its
//! sessions' and conferences' own deadlines (str0m's `soonest()`) and a timeout visits
//! only what is due.
//!
//! Each session (and each conference whose speaker detector runs here) keeps the one
//! deadline it is scheduled at. An entry whose owner has since moved its deadline (or
//! gone) is stale: the engine pops stale entries off the top whenever it reschedules or
//! removes something, so the top is always live and `poll_timeout` exact. Deadlines that
//! move *later* on the packet path (a consent refresh on every valid packet, the next
//! speaker decision) cost nothing there: the scheduled entry fires, finds its owner
//! alive, and schedules the next. A deadline that moves *earlier* is pushed at once.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

/// What a deadline is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Due {
    /// A session's ICE, DTLS or first-check deadline.
    Session(SessionHandle),
    /// A conference's next active-speaker decision (on its speaker shard).
    Speaker(ConfHandle),
}

/// Deadlines by session or conference.
#[derive(Debug, Default)]
pub(super) struct Timers {
    heap: BinaryHeap<Reverse<(Instant, Due)>>,
}

impl Timers {
    /// Schedules `what` at `at`.
    pub(super) fn push(&mut self, at: Instant, what: Due) {
        self.heap.push(Reverse((at, what)));
    }

    /// The soonest deadline.
    pub(super) fn soonest(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((t, _))| *t)
    }

    /// The soonest entry.
    pub(super) fn peek(&self) -> Option<(Instant, Due)> {
        self.heap.peek().map(|Reverse(e)| *e)
    }

    /// Removes the soonest entry.
    pub(super) fn pop(&mut self) {
        self.heap.pop();
    }

    /// Entries, live or stale.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.heap.len()
    }

    /// The next entry due at `now`, removed.
    pub(super) fn pop_due(&mut self, now: Instant) -> Option<(Instant, Due)> {
        match self.heap.peek() {
            Some(Reverse((t, _))) if *t <= now => self.heap.pop().map(|Reverse(e)| e),
            _ => None,
        }
    }
}

use super::{ConfHandle, EndReason, Engine, Home, SessionEvent, SessionHandle, ShardId};

impl Engine {
    /// Runs the timers that are due: ICE consent, DTLS retransmission, first-check
    /// deadlines, active-speaker decisions, receiver reports to quiet sessions. Visits
    /// only what has a deadline due.
    pub fn handle_timeout(&mut self, now: Instant) {
        let now = self.clock(now);
        while let Some((at, due)) = self.timers.pop_due(now) {
            let h = match due {
                Due::Session(h) => h,
                Due::Speaker(c) => {
                    self.speaker_timeout(now, c, at);
                    continue;
                }
            };
            let Some(s) = self.sessions.get_mut(h) else {
                continue; // gone
            };
            if s.timer_at != Some(at) {
                continue; // stale: rescheduled since
            }
            s.timer_at = None;
            self.stats.timer_visits += 1;
            self.session_timeout(now, h);
            self.schedule(h);
        }
        self.drop_stale_timers();
    }

    fn session_timeout(&mut self, now: Instant, h: SessionHandle) {
        let first_check_due = self.cfg.silence_timeout;
        let report_unclaimed = self.cfg.shard == ShardId(0);
        let Some(s) = self.sessions.get_mut(h) else {
            return;
        };
        match &mut s.home {
            Home::Here(local) => {
                if local.ended() {
                    return;
                }
                local.dtls.handle_timeout(now);
                if let Some(new) = local.rehandshake.as_mut() {
                    new.dtls.handle_timeout(now);
                }
                self.drain_dtls(h);
                let Some(s) = self.sessions.get_mut(h) else {
                    return;
                };
                if s.ice.handle_timeout(now).is_some() {
                    let reason = if s.is_connected() {
                        EndReason::ConsentExpired
                    } else {
                        EndReason::IceTimeout
                    };
                    self.end_session(h, reason);
                    return;
                }
                // Layers unwatched long enough are paused; a PAUSE or RESUME the
                // sender did not heed is sent again.
                let pauses: Vec<_> = s
                    .streams
                    .iter_mut()
                    .filter_map(|st| {
                        let arrived = st.rate.map(|(_, at)| at);
                        Some((st.spec.ssrc, st.unwatched.handle_timeout(now, arrived)?))
                    })
                    .collect();
                for (ssrc, ask) in pauses {
                    self.ask_pause(now, h, ssrc, ask);
                }
                // Layer choices that wait for time (a pending upswitch re-asking, the up
                // hold, a trial's window, feedback that came too soon after the last).
                let downlink = self
                    .sessions
                    .get_mut(h)
                    .and_then(|s| s.local())
                    .map(|l| &mut l.downlink);
                if let Some(d) = downlink
                    && d.poll_timeout().is_some_and(|t| t <= now)
                {
                    let report = d.take_report_due(now).then_some(now);
                    self.probe_timeout(now, h);
                    self.drive_choices(now, h, report);
                }
                // A nomination that came too soon after the last move, or whose path
                // check is due again.
                self.move_media(now, h);
                self.maybe_connected(now, h);
                // A second without SRTCP to it: a receiver report says we are here.
                self.send_rtcp_if_quiet(now, h);
            }
            Home::Unclaimed { timed_out } => {
                // Nobody answered a check in time. One shard reports it.
                if !*timed_out
                    && report_unclaimed
                    && now.saturating_duration_since(s.created) >= first_check_due
                {
                    *timed_out = true;
                    let (session, identity) = (s.spec.id.clone(), s.identity);
                    self.notify(SessionEvent::Failed {
                        session,
                        identity,
                        reason: EndReason::IceTimeout,
                        detail: String::from("no valid ICE check"),
                    });
                }
            }
            Home::Elsewhere(..) => {}
        }
    }

    /// Schedules session `h` at its own next deadline: the soonest of its ICE and DTLS
    /// deadlines if it is homed here, its first-check deadline on shard 0 while
    /// unclaimed, none once it has ended or elsewhere.
    pub(super) fn schedule(&mut self, h: SessionHandle) {
        let shard = self.cfg.shard;
        let silence = self.cfg.silence_timeout;
        let Some(s) = self.sessions.get_mut(h) else {
            return;
        };
        let due = match &s.home {
            Home::Here(local) if local.ended() => None,
            Home::Here(local) => {
                let ice = s.ice.poll_timeout();
                let dtls = local.dtls.poll_timeout().unwrap_or(ice);
                let rehandshake = local.rehandshake.as_ref().and_then(|r| r.poll_timeout());
                let pause = s
                    .streams
                    .iter()
                    .filter_map(|st| st.unwatched.poll_timeout());
                let layers = local.downlink.poll_timeout();
                let moving = Engine::move_due(s);
                let rtcp = Engine::rtcp_due(s);
                pause
                    .chain([ice, dtls])
                    .chain(rehandshake)
                    .chain(layers)
                    .chain(moving)
                    .chain(rtcp)
                    .min()
            }
            Home::Unclaimed { timed_out: false } if shard == ShardId(0) => {
                Some(s.created + silence)
            }
            Home::Unclaimed { .. } | Home::Elsewhere(..) => None,
        };
        // One live heap entry per session, at or before its deadline: a deadline that
        // moved later keeps its entry, which fires early, finds nothing due and
        // schedules the session at its deadline then. So a deadline that moves on with
        // every packet (consent, a quiet second of SRTCP) pushes no entry per packet,
        // and the heap stays as large as the sessions with a deadline.
        match (due, s.timer_at) {
            (Some(due), Some(armed)) if armed <= due => return,
            (Some(due), _) => {
                s.timer_at = Some(due);
                self.timers.push(due, Due::Session(h));
            }
            (None, None) => return,
            (None, Some(_)) => s.timer_at = None,
        }
        self.drop_stale_timers();
    }

    /// Pops entries whose session moved its deadline or is gone off the top of the
    /// heap, so that [`Engine::poll_timeout`] is a live deadline.
    pub(super) fn drop_stale_timers(&mut self) {
        while let Some((at, due)) = self.timers.peek() {
            let live = match due {
                Due::Session(h) => self.sessions.get(h).is_some_and(|s| s.timer_at == Some(at)),
                Due::Speaker(c) => self.speaker_due(c) == Some(at),
            };
            if live {
                break;
            }
            self.timers.pop();
        }
    }
}
