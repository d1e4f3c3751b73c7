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

/// Deadlines by session slot.
#[derive(Debug, Default)]
pub(super) struct Timers {
    heap: BinaryHeap<Reverse<(Instant, usize)>>,
}

impl Timers {
    /// Schedules slot `i` at `at`.
    pub(super) fn push(&mut self, at: Instant, i: usize) {
        self.heap.push(Reverse((at, i)));
    }

    /// The soonest deadline.
    pub(super) fn soonest(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((t, _))| *t)
    }

    /// The soonest entry.
    pub(super) fn peek(&self) -> Option<(Instant, usize)> {
        self.heap.peek().map(|Reverse(e)| *e)
    }

    /// Removes the soonest entry.
    pub(super) fn pop(&mut self) {
        self.heap.pop();
    }

    /// The next entry due at `now`, removed.
    pub(super) fn pop_due(&mut self, now: Instant) -> Option<(Instant, usize)> {
        match self.heap.peek() {
            Some(Reverse((t, _))) if *t <= now => self.heap.pop().map(|Reverse(e)| e),
            _ => None,
        }
    }
}
