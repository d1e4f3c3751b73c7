//! When sessions need the engine's attention: a min-heap of deadlines, so a shard's
//! [`poll_timeout`](super::Engine::poll_timeout) is the soonest of its sessions' own
//! deadlines (str0m's `soonest()`) and a timeout visits only the sessions that are due.
//!
//! Each session keeps the one deadline it is scheduled at. An entry whose session has
//! since moved its deadline (or gone) is stale: the engine pops stale entries off the top
//! whenever it reschedules or removes a session, so the top is always live and
//! `poll_timeout` exact. Deadlines that move *later* on the packet path (a consent
//! refresh on every valid packet) cost nothing there: the scheduled entry fires, finds
//! the session alive, and schedules the next.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

/// Deadlines by session.
#[derive(Debug, Default)]
pub(super) struct Timers {
    heap: BinaryHeap<Reverse<(Instant, SessionHandle)>>,
}

impl Timers {
    /// Schedules `h` at `at`.
    pub(super) fn push(&mut self, at: Instant, h: SessionHandle) {
        self.heap.push(Reverse((at, h)));
    }

    /// The soonest deadline.
    pub(super) fn soonest(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((t, _))| *t)
    }

    /// The soonest entry.
    pub(super) fn peek(&self) -> Option<(Instant, SessionHandle)> {
        self.heap.peek().map(|Reverse(e)| *e)
    }

    /// Removes the soonest entry.
    pub(super) fn pop(&mut self) {
        self.heap.pop();
    }

    /// The next entry due at `now`, removed.
    pub(super) fn pop_due(&mut self, now: Instant) -> Option<(Instant, SessionHandle)> {
        match self.heap.peek() {
            Some(Reverse((t, _))) if *t <= now => self.heap.pop().map(|Reverse(e)| e),
            _ => None,
        }
    }
}

use super::{EndReason, Engine, Home, SessionEvent, SessionHandle, ShardId};

impl Engine {
    /// Runs the timers that are due: ICE consent, DTLS retransmission, first-check
    /// deadlines. Visits only the sessions whose deadline has come.
    pub fn handle_timeout(&mut self, now: Instant) {
        let now = self.clock(now);
        while let Some((at, h)) = self.timers.pop_due(now) {
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
                // Layers unwatched long enough are paused.
                let pauses: Vec<_> = s
                    .streams
                    .iter_mut()
                    .filter_map(|st| Some((st.spec.ssrc, st.unwatched.handle_timeout(now)?)))
                    .collect();
                for (ssrc, action) in pauses {
                    self.ask_pause(now, h, ssrc, action);
                }
            }
            Home::Unclaimed { timed_out } => {
                // Nobody answered a check in time. One shard reports it.
                if !*timed_out
                    && report_unclaimed
                    && now.saturating_duration_since(s.created) >= first_check_due
                {
                    *timed_out = true;
                    let session = s.spec.id.clone();
                    self.notify(SessionEvent::Failed {
                        session,
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
                let pause = s
                    .streams
                    .iter()
                    .filter_map(|st| st.unwatched.poll_timeout());
                pause.chain([ice, dtls]).min()
            }
            Home::Unclaimed { timed_out: false } if shard == ShardId(0) => {
                Some(s.created + silence)
            }
            Home::Unclaimed { .. } | Home::Elsewhere(..) => None,
        };
        if due == s.timer_at {
            return;
        }
        s.timer_at = due;
        if let Some(due) = due {
            self.timers.push(due, h);
        }
        self.drop_stale_timers();
    }

    /// Pops entries whose session moved its deadline or is gone off the top of the
    /// heap, so that [`Engine::poll_timeout`] is a live deadline.
    pub(super) fn drop_stale_timers(&mut self) {
        while let Some((at, h)) = self.timers.peek() {
            let live = self.sessions.get(h);
            if live.is_some_and(|s| s.timer_at == Some(at)) {
                break;
            }
            self.timers.pop();
        }
    }
}
