//! Events of `R` that could not be decrypted when they came. Over federation a key
//! event can arrive before the to-device message carrying its megolm key (the two
//! travel apart), so such events are held, and read again when to-device messages
//! arrive ([`Late::take`], [`Late::put_back`]).
//!
//! Each event of `R` gets a position in the order the syncs brought it. A late key
//! event is applied only if no later key event from the same device was read first
//! ([`Late::is_newest`]): each key event replaces the sender's earlier one, so an old
//! one decrypted late must not undo a newer one.

use std::collections::{HashMap, VecDeque};
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

/// The held events, oldest first, and the newest key event read from each device.
#[derive(Default)]
pub(super) struct Late {
    held: VecDeque<Held>,
    next_position: u64,
    /// (user, device) → position of the newest key event read from it.
    newest: HashMap<(String, String), u64>,
}

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

    /// Whether the key event at `position` from `user`'s `device` is newer than every
    /// key event read from that device so far; if so, it is now the newest.
    pub(super) fn is_newest(&mut self, user: &str, device: &str, position: u64) -> bool {
        let newest = self
            .newest
            .entry((user.to_owned(), device.to_owned()))
            .or_insert(position);
        if *newest > position {
            return false;
        }
        *newest = position;
        true
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
        assert!(late.is_newest("@a:x", "A", new));
        assert!(
            !late.is_newest("@a:x", "A", old),
            "older than what was read"
        );
        assert!(
            late.is_newest("@a:x", "B", old),
            "another device has its own order"
        );
        assert!(late.is_newest("@a:x", "A", new), "the same event again");
        let newer = late.position();
        assert!(late.is_newest("@a:x", "A", newer));
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
