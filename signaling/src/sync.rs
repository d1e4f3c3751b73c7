//! The parts of a `/sync` response signaling reads, kept as raw JSON events.
//!
//! Each event stays a `serde_json::Value` until [`Event::from_value`] reads it, so one
//! malformed event (wrong types, missing `type`) is counted and skipped instead of
//! failing the whole batch: the homeserver relays whatever room members send. The
//! envelope is read the same way: a section or room of the wrong shape reads as empty
//! (only `next_batch` is required), so one odd room never stalls the sync loop on a
//! batch it can never read.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// One `/sync` response, reduced to what signaling uses.
#[derive(Debug, Default, Deserialize)]
pub struct SyncResponse {
    /// The token for the next request.
    pub next_batch: String,
    /// Per-room updates.
    #[serde(default, deserialize_with = "lenient")]
    pub rooms: Rooms,
}

/// Rooms by membership.
#[derive(Debug, Default, Deserialize)]
pub struct Rooms {
    /// Rooms the account is joined to.
    #[serde(default, deserialize_with = "lenient_map")]
    pub join: BTreeMap<String, JoinedRoom>,
    /// Rooms the account is invited to.
    #[serde(default, deserialize_with = "lenient_map")]
    pub invite: BTreeMap<String, InvitedRoom>,
    /// Rooms the account left or was removed from.
    #[serde(default, deserialize_with = "lenient_map")]
    pub leave: BTreeMap<String, Value>,
}

/// A joined room's update.
#[derive(Debug, Default, Deserialize)]
pub struct JoinedRoom {
    /// State before the timeline (the full state on an initial or `full_state` sync).
    #[serde(default, deserialize_with = "lenient")]
    pub state: EventList,
    /// New events, oldest first.
    #[serde(default, deserialize_with = "lenient")]
    pub timeline: Timeline,
    /// The room's state as the homeserver resolves it now, when read
    /// ([`JoinedRoom::use_current_state`]): it goes after the timeline's state events,
    /// being the state at the batch's end or later. Not part of the sync answer.
    #[serde(skip)]
    pub current_state: Option<Vec<Value>>,
}

impl JoinedRoom {
    /// Keeps `current`, the room's current state as `GET /rooms/{roomId}/state` gives
    /// it, as [`current_state`](Self::current_state), with the types signaling reads
    /// ([`STATE_TYPES`]); what is not an event object is dropped.
    ///
    /// Why: the `state` of an initial or `full_state` sync is not always the room's
    /// state. Synapse gives the state after the room's latest event, which lacks
    /// whatever a concurrent branch of the room's event graph set, until a later event
    /// merges the branches. The SFU joining a conference room while its creator
    /// announces the conference is such a pair, and signaling writes nothing in
    /// conference rooms that would merge them: a restart would read the conference as
    /// ended and hang up its calls. And where two branches set the same key, the
    /// timeline's order of them is not always the homeserver's resolution of them.
    pub fn use_current_state(&mut self, current: Vec<Value>) {
        self.current_state = Some(
            current
                .into_iter()
                .filter(|e| {
                    e.get("type")
                        .and_then(Value::as_str)
                        .is_some_and(|t| STATE_TYPES.contains(&t))
                })
                .collect(),
        );
    }

    /// Every state event of the update in the order it applies: `state`, the
    /// timeline's, then the current state if read.
    pub fn state_in_order(&self) -> impl Iterator<Item = &Value> {
        self.state
            .events
            .iter()
            .chain(&self.timeline.events)
            .chain(self.current_state.iter().flatten())
    }
}

/// A timeline slice.
#[derive(Debug, Default, Deserialize)]
pub struct Timeline {
    /// Events, oldest first.
    #[serde(default, deserialize_with = "lenient")]
    pub events: Vec<Value>,
    /// True if events were left out between the previous batch and this one.
    #[serde(default, deserialize_with = "lenient")]
    pub limited: bool,
    /// Where to page back from (`GET /rooms/{roomId}/messages`) for the events left out.
    #[serde(default, deserialize_with = "lenient")]
    pub prev_batch: Option<String>,
}

impl Timeline {
    /// Puts `gap`, the events left out (oldest first), in front of the timeline's,
    /// leaving out those the timeline has already (by `event_id`: a homeserver can page
    /// back over some of them); with `whole`, the gap is filled and the timeline no
    /// longer `limited`.
    pub fn fill_gap(&mut self, gap: Vec<Value>, whole: bool) {
        fn id(e: &Value) -> Option<&str> {
            e.get("event_id")?.as_str()
        }
        let known: std::collections::HashSet<&str> = self.events.iter().filter_map(id).collect();
        let mut gap: Vec<Value> = gap
            .into_iter()
            .filter(|e| !id(e).is_some_and(|i| known.contains(i)))
            .collect();
        gap.append(&mut self.events);
        self.events = gap;
        self.limited &= !whole;
    }
}

/// A list of events.
#[derive(Debug, Default, Deserialize)]
pub struct EventList {
    /// The events.
    #[serde(default, deserialize_with = "lenient")]
    pub events: Vec<Value>,
}

/// An invited room's stripped state.
#[derive(Debug, Default, Deserialize)]
pub struct InvitedRoom {
    /// Stripped state events, including the invite itself.
    #[serde(default, deserialize_with = "lenient")]
    pub invite_state: EventList,
}

/// Reads a `T`, or its default if the value has another shape.
fn lenient<'de, D: Deserializer<'de>, T: DeserializeOwned + Default>(d: D) -> Result<T, D::Error> {
    let v = Value::deserialize(d)?;
    Ok(serde_json::from_value(v).unwrap_or_default())
}

/// Reads a map of `T`, leaving out entries of another shape (and reading a non-map as
/// empty).
fn lenient_map<'de, D: Deserializer<'de>, T: DeserializeOwned>(
    d: D,
) -> Result<BTreeMap<String, T>, D::Error> {
    let v = Value::deserialize(d)?;
    let Value::Object(m) = v else {
        return Ok(BTreeMap::new());
    };
    Ok(m.into_iter()
        .filter_map(|(k, v)| Some((k, serde_json::from_value(v).ok()?)))
        .collect())
}

/// The envelope of one event, with its content left raw.
#[derive(Debug, Clone, PartialEq)]
pub struct Event<'a> {
    /// `type`.
    pub kind: &'a str,
    /// `sender`.
    pub sender: &'a str,
    /// `state_key`, for state events.
    pub state_key: Option<&'a str>,
    /// `origin_server_ts` (ms since the Unix epoch); absent in stripped state.
    pub origin_server_ts: Option<u64>,
    /// `content` (`Value::Null` when missing).
    pub content: &'a Value,
    /// `event_id`; absent in stripped state.
    pub event_id: Option<&'a str>,
    /// For a redaction, the event it redacts: `redacts` at the top level (room versions
    /// up to 10) or in `content` (from 11).
    pub redacts: Option<&'a str>,
}

static NULL: Value = Value::Null;

impl<'a> Event<'a> {
    /// Reads the envelope. `None` if `type` or `sender` is not a string, or
    /// `state_key` is present but not a string.
    pub fn from_value(v: &'a Value) -> Option<Self> {
        let obj = v.as_object()?;
        let kind = obj.get("type")?.as_str()?;
        let sender = obj.get("sender")?.as_str()?;
        let state_key = match obj.get("state_key") {
            None => None,
            Some(Value::String(s)) => Some(s.as_str()),
            Some(_) => return None,
        };
        let content = obj.get("content").unwrap_or(&NULL);
        let redacts = obj
            .get("redacts")
            .or_else(|| content.get("redacts"))
            .and_then(Value::as_str);
        Some(Event {
            kind,
            sender,
            state_key,
            origin_server_ts: obj.get("origin_server_ts").and_then(Value::as_u64),
            content,
            event_id: obj.get("event_id").and_then(Value::as_str),
            redacts,
        })
    }
}

/// The state event types signaling reads: membership, what makes a room open to
/// outsiders or encrypted, who may redact an announcement (its creators and power
/// levels), and conference announcements.
pub const STATE_TYPES: [&str; 7] = [
    "m.room.create",
    "m.room.member",
    "m.room.encryption",
    "m.room.history_visibility",
    "m.room.join_rules",
    "m.room.power_levels",
    crate::events::CONFERENCE,
];

/// The sync filter signaling uses: only the event types it reads, no presence,
/// ephemeral events or account data, and a long timeline so a busy gap between two
/// requests rarely truncates it.
pub fn filter_json() -> String {
    serde_json::json!({
        "presence": {"not_types": ["*"]},
        "account_data": {"not_types": ["*"]},
        "room": {
            "ephemeral": {"not_types": ["*"]},
            "account_data": {"not_types": ["*"]},
            "state": {
                "types": STATE_TYPES,
                "lazy_load_members": false
            },
            "timeline": {
                "limit": 500,
                "types": TIMELINE_TYPES
            }
        }
    })
    .to_string()
}

/// The timeline event types signaling reads: calls, the state it follows, encrypted
/// events (to tell a caller that an encrypted DM cannot carry calls), redactions (of
/// conference announcements) and subscriptions.
pub const TIMELINE_TYPES: [&str; 10] = [
    "m.call.*",
    "m.room.member",
    "m.room.encryption",
    "m.room.encrypted",
    "m.room.history_visibility",
    "m.room.join_rules",
    "m.room.power_levels",
    "m.room.redaction",
    crate::events::CONFERENCE,
    crate::events::SUBSCRIBE,
];

/// The filter of the `GET /rooms/{roomId}/messages` requests that fill a timeline's
/// gap: the sync's timeline filter.
pub fn gap_filter_json() -> String {
    serde_json::json!({"types": TIMELINE_TYPES, "lazy_load_members": false}).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_bad_event_does_not_spoil_the_batch() {
        let body = json!({
            "next_batch": "s1",
            "rooms": {"join": {"!r:hs": {"timeline": {"events": [
                {"type": 5, "sender": "@a:hs"},
                {"type": "m.call.invite", "sender": "@a:hs", "content": {}, "origin_server_ts": 7}
            ]}}}}
        });
        let sync: SyncResponse = serde_json::from_value(body).unwrap();
        let events = &sync.rooms.join["!r:hs"].timeline.events;
        assert!(Event::from_value(&events[0]).is_none());
        let e = Event::from_value(&events[1]).unwrap();
        assert_eq!(
            (e.kind, e.sender, e.origin_server_ts),
            ("m.call.invite", "@a:hs", Some(7))
        );
    }

    #[test]
    fn sections_of_the_wrong_shape_read_as_empty() {
        let body = json!({"next_batch": "x", "rooms": {
            "join": {"!bad:hs": 7, "!ok:hs": {"timeline": {"events": "nope", "limited": "yes"}, "state": []}},
            "invite": [], "leave": {"!l:hs": null}}});
        let sync: SyncResponse = serde_json::from_value(body).unwrap();
        assert_eq!(sync.rooms.join.keys().collect::<Vec<_>>(), ["!ok:hs"]);
        assert!(sync.rooms.join["!ok:hs"].timeline.events.is_empty());
        assert!(sync.rooms.invite.is_empty());
        assert!(
            serde_json::from_value::<SyncResponse>(json!({"rooms": {}})).is_err(),
            "next_batch is required"
        );
    }

    #[test]
    fn a_rooms_current_state_applies_last_keeping_what_signaling_reads() {
        let member = |who: &str, membership: &str| {
            json!({"type": "m.room.member", "state_key": who,
            "sender": who, "content": {"membership": membership}})
        };
        let conference = json!({"type": crate::events::CONFERENCE, "state_key": "c",
            "sender": "@a:hs", "content": {"sfu": "@sfu:hs"}});
        let mut room = JoinedRoom {
            state: EventList {
                events: vec![member("@a:hs", "join")],
            },
            ..JoinedRoom::default()
        };
        room.timeline.events.push(member("@a:hs", "leave"));
        room.use_current_state(vec![
            member("@a:hs", "join"),
            json!({"type": "m.room.name", "state_key": "", "content": {"name": "x"}}),
            conference.clone(),
            json!("not an event"),
            member("@sfu:hs", "join"),
        ]);
        // The homeserver's resolution has the last word, after the timeline.
        let order: Vec<&Value> = room.state_in_order().collect();
        assert_eq!(
            order,
            [
                &member("@a:hs", "join"),
                &member("@a:hs", "leave"),
                &member("@a:hs", "join"),
                &conference,
                &member("@sfu:hs", "join"),
            ]
        );
    }

    #[test]
    fn a_gap_read_back_goes_before_the_timeline_once() {
        let body = json!({"next_batch": "s9", "rooms": {"join": {"!r:hs": {"timeline": {
            "events": [{"type": "m.call.candidates", "event_id": "$c"}],
            "limited": true, "prev_batch": "t3"}}}}});
        let mut sync: SyncResponse = serde_json::from_value(body).unwrap();
        let timeline = &mut sync.rooms.join.get_mut("!r:hs").unwrap().timeline;
        assert_eq!(timeline.prev_batch.as_deref(), Some("t3"));
        timeline.fill_gap(
            vec![json!({"type": "m.call.invite", "event_id": "$i"})],
            false,
        );
        assert!(timeline.limited, "a gap read in part is still a gap");
        // Paged over a second time: the invite, and the timeline's own event.
        let again = vec![
            json!({"type": "m.room.member", "event_id": "$m"}),
            json!({"type": "m.call.invite", "event_id": "$i"}),
            json!({"type": "m.call.candidates", "event_id": "$c"}),
        ];
        timeline.fill_gap(again, true);
        let kinds: Vec<_> = timeline.events.iter().map(|e| &e["type"]).collect();
        assert_eq!(
            kinds,
            ["m.room.member", "m.call.invite", "m.call.candidates"]
        );
        assert!(!timeline.limited);
    }

    #[test]
    fn missing_sections_default_to_empty() {
        let sync: SyncResponse = serde_json::from_value(json!({"next_batch": "x"})).unwrap();
        assert!(sync.rooms.join.is_empty() && sync.rooms.invite.is_empty());
    }
}
