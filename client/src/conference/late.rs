//! Events of `R` that could not be decrypted when they came. Over federation a key
//! event can arrive before the to-device message carrying its megolm key (the two
//! travel apart), so such events are held, and read again when to-device messages
//! arrive ([`Late::take`], [`Late::put_back`]).
//!
//! Each event of `R` gets a position in the order the syncs brought it. A late key
//! event is applied only if no later key event from the same device was applied first
//! ([`Late::is_older`]): each key event replaces the sender's earlier one, so an old
//! one decrypted late must not undo a newer one. Nor is one applied for a call that
//! has ended meanwhile ([`Late::call_ended`]): the SFU's word that it ended, or the
//! member's hangup event, came first, and the member is gone.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use matrix_sdk::ruma::events::room::encrypted::OriginalSyncRoomEncryptedEvent;
use matrix_sdk::ruma::serde::Raw;

/// How many undecryptable events are held; past it the oldest goes.
pub const LATE_EVENTS_HELD: usize = 256;
/// How long an undecryptable event is held.
pub const LATE_EVENT_WAIT: Duration = Duration::from_secs(600);

/// An event of `R` waiting for its megolm key.
pub(super) struct Held {
    pub(super) raw: Raw<OriginalSyncRoomEncryptedEvent>,
    /// Its place in the order the syncs brought `R`'s events.
    pub(super) position: u64,
    /// Its megolm session: when an event of a session still cannot be decrypted, the
    /// session's older ones are not tried in the same round.
    pub(super) session: Option<String>,
    since: Instant,
}

/// The held events, oldest first, the order of each device's key events, and the calls
/// that ended.
#[derive(Default)]
pub(super) struct Late {
    held: VecDeque<Held>,
    next_position: u64,
    /// What each (user, device) sent last.
    devices: HashMap<(String, String), Device>,
    /// The calls (user, device, call id) that ended, oldest first, at most
    /// [`ENDED_CALLS_KEPT`].
    ended: VecDeque<(String, String, String)>,
    ended_set: HashSet<(String, String, String)>,
}

/// The order of one device's key events.
#[derive(Default)]
struct Device {
    /// The position of the newest key event applied.
    applied: Option<u64>,
    /// The position and call id of the newest key event that passed the megolm checks,
    /// applied or refused.
    latest_call: Option<(u64, String)>,
}

/// How many ended calls are remembered for the held events (more than can be held).
const ENDED_CALLS_KEPT: usize = 4 * LATE_EVENTS_HELD;

impl Late {
    /// The position of the next event of `R`.
    pub(super) fn position(&mut self) -> u64 {
        let p = self.next_position;
        self.next_position += 1;
        p
    }

    /// Holds an event that could not be decrypted (the oldest goes if
    /// [`LATE_EVENTS_HELD`] are held).
    pub(super) fn hold(
        &mut self,
        now: Instant,
        raw: Raw<OriginalSyncRoomEncryptedEvent>,
        position: u64,
    ) {
        let session = raw
            .get_field::<serde_json::Value>("content")
            .ok()
            .flatten()
            .and_then(|c| c["session_id"].as_str().map(str::to_owned));
        if self.held.len() == LATE_EVENTS_HELD {
            self.held.pop_front();
        }
        self.held.push_back(Held {
            raw,
            position,
            session,
            since: now,
        });
    }

    /// Takes every held event for a new try, oldest first, after dropping those held
    /// for [`LATE_EVENT_WAIT`].
    pub(super) fn take(&mut self, now: Instant) -> Vec<Held> {
        self.held
            .retain(|h| now.saturating_duration_since(h.since) < LATE_EVENT_WAIT);
        self.held.drain(..).collect()
    }

    /// Holds again what [`take`](Self::take) returned and still cannot be decrypted,
    /// ahead of anything held since.
    pub(super) fn put_back(&mut self, still: Vec<Held>) {
        for h in still.into_iter().rev() {
            self.held.push_front(h);
        }
        while self.held.len() > LATE_EVENTS_HELD {
            self.held.pop_front();
        }
    }

    /// How many events are held.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.held.len()
    }

    /// Whether a key event from `user`'s `device` newer than the one at `position`
    /// was applied already.
    pub(super) fn is_older(&self, user: &str, device: &str, position: u64) -> bool {
        self.device(user, device)
            .and_then(|d| d.applied)
            .is_some_and(|p| p > position)
    }

    /// Whether a key event from `user`'s `device` for another call than `call_id` and
    /// newer than the one at `position` came (applied or refused: the device moved on
    /// to that call either way).
    pub(super) fn moved_on(&self, user: &str, device: &str, call_id: &str, position: u64) -> bool {
        self.device(user, device)
            .and_then(|d| d.latest_call.as_ref())
            .is_some_and(|(p, c)| *p > position && c != call_id)
    }

    /// A key event at `position` for `call_id` from `user`'s `device` passed the megolm
    /// checks.
    pub(super) fn saw(&mut self, user: &str, device: &str, call_id: &str, position: u64) {
        let latest = &mut self.device_mut(user, device).latest_call;
        if latest.as_ref().is_none_or(|(p, _)| position >= *p) {
            *latest = Some((position, call_id.to_owned()));
        }
    }

    /// The key event at `position` from `user`'s `device` was applied.
    pub(super) fn applied(&mut self, user: &str, device: &str, position: u64) {
        let applied = &mut self.device_mut(user, device).applied;
        *applied = Some(applied.map_or(position, |p| p.max(position)));
    }

    fn device(&self, user: &str, device: &str) -> Option<&Device> {
        self.devices.get(&(user.to_owned(), device.to_owned()))
    }

    fn device_mut(&mut self, user: &str, device: &str) -> &mut Device {
        self.devices
            .entry((user.to_owned(), device.to_owned()))
            .or_default()
    }

    /// `user`'s `device`'s call `call_id` ended.
    pub(super) fn ended(&mut self, user: &str, device: &str, call_id: &str) {
        let key = (user.to_owned(), device.to_owned(), call_id.to_owned());
        if self.ended_set.insert(key.clone()) {
            self.ended.push_back(key);
        }
        while self.ended.len() > ENDED_CALLS_KEPT {
            if let Some(old) = self.ended.pop_front() {
                self.ended_set.remove(&old);
            }
        }
    }

    /// Whether `user`'s `device`'s call `call_id` ended.
    pub(super) fn call_ended(&self, user: &str, device: &str, call_id: &str) -> bool {
        self.ended_set
            .contains(&(user.to_owned(), device.to_owned(), call_id.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(session: &str) -> Raw<OriginalSyncRoomEncryptedEvent> {
        Raw::from_json_string(
            serde_json::json!({
                "type": "m.room.encrypted",
                "event_id": "$e", "sender": "@a:x", "origin_server_ts": 1,
                "content": {"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "AA",
                            "session_id": session},
            })
            .to_string(),
        )
        .unwrap()
    }

    #[test]
    fn an_older_key_event_read_late_does_not_replace_a_newer_one() {
        let mut late = Late::default();
        let (old, new) = (late.position(), late.position());
        assert!(!late.is_older("@a:x", "A", old), "nothing applied yet");
        late.applied("@a:x", "A", new);
        assert!(
            late.is_older("@a:x", "A", old),
            "older than what was applied"
        );
        assert!(
            !late.is_older("@a:x", "B", old),
            "another device has its own order"
        );
        assert!(!late.is_older("@a:x", "A", new), "the same event again");
        late.applied("@a:x", "A", old);
        let newer = late.position();
        assert!(!late.is_older("@a:x", "A", newer));
        assert!(
            late.is_older("@a:x", "A", old),
            "applying an older one moves nothing"
        );
    }

    #[test]
    fn a_device_that_moved_on_to_another_call_leaves_its_older_calls_behind() {
        let mut late = Late::default();
        let (c1, c2) = (late.position(), late.position());
        late.saw("@a:x", "A", "call2", c2);
        assert!(late.moved_on("@a:x", "A", "call1", c1), "an older call");
        assert!(!late.moved_on("@a:x", "A", "call2", c1), "the same call");
        assert!(!late.moved_on("@a:x", "B", "call1", c1), "another device");
        late.saw("@a:x", "A", "call1", c1);
        assert!(
            late.moved_on("@a:x", "A", "call1", c1),
            "an older one does not rewind"
        );
        let c3 = late.position();
        assert!(
            !late.moved_on("@a:x", "A", "call1", c3),
            "a newer one is news"
        );
    }

    #[test]
    fn ended_calls_are_remembered_within_a_bound() {
        let mut late = Late::default();
        late.ended("@a:x", "A", "c1");
        assert!(late.call_ended("@a:x", "A", "c1"));
        assert!(
            !late.call_ended("@a:x", "A", "c2"),
            "the device's next call"
        );
        assert!(!late.call_ended("@a:x", "B", "c1"));
        for i in 0..ENDED_CALLS_KEPT {
            late.ended("@b:x", "B", &i.to_string());
        }
        assert!(!late.call_ended("@a:x", "A", "c1"), "the oldest went");
        assert!(late.call_ended("@b:x", "B", "0"));
        assert_eq!(late.ended.len(), ENDED_CALLS_KEPT);
        assert_eq!(late.ended_set.len(), ENDED_CALLS_KEPT);
    }

    #[test]
    fn held_events_come_back_oldest_first_and_stay_bounded() {
        let t0 = Instant::now();
        let mut late = Late::default();
        for _ in 0..LATE_EVENTS_HELD + 3 {
            let p = late.position();
            late.hold(t0, event("s"), p);
        }
        assert_eq!(late.len(), LATE_EVENTS_HELD);
        let held = late.take(t0);
        let positions: Vec<u64> = held.iter().map(|h| h.position).collect();
        assert_eq!(
            positions,
            (3..LATE_EVENTS_HELD as u64 + 3).collect::<Vec<_>>()
        );
        assert_eq!(held[0].session.as_deref(), Some("s"));
        // One came meanwhile: what goes back stays ahead of it.
        let p = late.position();
        late.hold(t0, event("t"), p);
        late.put_back(held.into_iter().skip(1).collect());
        let held = late.take(t0);
        assert_eq!(held.len(), LATE_EVENTS_HELD);
        assert_eq!(held[0].position, 4);
        assert_eq!(held.last().map(|h| h.position), Some(p));
    }

    #[test]
    fn held_events_expire() {
        let t0 = Instant::now();
        let mut late = Late::default();
        late.hold(t0, event("s"), 0);
        late.hold(t0 + Duration::from_secs(1), event("s"), 1);
        let held = late.take(t0 + LATE_EVENT_WAIT);
        assert_eq!(held.len(), 1);
        assert_eq!(held[0].position, 1);
    }
}
