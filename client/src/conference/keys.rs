//! The `org.matrix.msc2359.call.keys` event and the key rules of docs/protocol.md
//! ("Media keys"), without Matrix or sockets: reading and writing the event
//! ([`KeyEvent`]), the trust rules on other members' declarations ([`Roster`]) and our
//! own rekey schedule ([`LocalKeys`]).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use blindfold_relay::id::{KeyIndex, Ssrc};
use blindfold_relay::srtp::SrtpProfile;
use serde::{Deserialize, Serialize};

use crate::{MediaKind, OwnSsrcs, RemoteStream, SenderId};

/// The key event's type.
pub const KEYS_EVENT: &str = "org.matrix.msc2359.call.keys";
/// A sender switches to a published key no sooner than this (docs/protocol.md).
pub const ACTIVATE_AFTER: Duration = Duration::from_secs(2);
/// A sender drops its previous key this long after switching (receivers keep it as long
/// after the first packet under the new index).
pub const RETIRE_AFTER: Duration = Duration::from_secs(10);

/// For how long rekeys may keep replacing a key that waits out [`ACTIVATE_AFTER`]
/// before it is switched to anyway: each replacement restarts the wait, so leaves
/// faster than it (anyone's, in a busy room) would otherwise keep the old key in use
/// for as long as they go on.
pub const REPLACE_FOR: Duration = Duration::from_secs(4);

/// The profile's name in a key event.
pub fn profile_name(p: SrtpProfile) -> Option<&'static str> {
    match p {
        SrtpProfile::AeadAes128Gcm => Some("SRTP_AEAD_AES_128_GCM"),
        SrtpProfile::AesCm128HmacSha1_80 => Some("SRTP_AES128_CM_SHA1_80"),
        _ => None,
    }
}

fn profile_from_name(s: &str) -> Option<SrtpProfile> {
    match s {
        "SRTP_AEAD_AES_128_GCM" => Some(SrtpProfile::AeadAes128Gcm),
        "SRTP_AES128_CM_SHA1_80" => Some(SrtpProfile::AesCm128HmacSha1_80),
        _ => None,
    }
}

/// Which simulcast layer a video stream is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Layer {
    /// Low resolution, forwarded to everyone.
    Thumbnail,
    /// Full resolution, forwarded to subscribers.
    Full,
}

/// One declared stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Stream {
    /// Its SSRC.
    pub ssrc: Ssrc,
    /// Audio or video.
    pub kind: MediaKind,
    /// For video, the layer.
    pub layer: Option<Layer>,
}

/// A key event, read and checked (not yet against other members: see [`Roster`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyEvent {
    /// The conference.
    pub conf_id: String,
    /// The sender's call.
    pub call_id: String,
    /// The device the sender says it is (must be the megolm sender's).
    pub device_id: String,
    /// Its streams; empty in a hangup (the sender left the call).
    pub streams: Vec<Stream>,
    /// Its profile (none in a hangup).
    pub profile: Option<SrtpProfile>,
    /// Its whole current key set, oldest first: `(index, master key ‖ salt)`.
    pub keys: Vec<(KeyIndex, Vec<u8>)>,
}

#[derive(Serialize, Deserialize)]
struct WireStream {
    ssrc: u32,
    kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    layer: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct WireKey {
    index: u8,
    profile: String,
    key: String,
}

#[derive(Serialize, Deserialize)]
struct WireKeys {
    conf_id: String,
    call_id: String,
    device_id: String,
    streams: Vec<WireStream>,
    keys: Vec<WireKey>,
}

/// Why a key event was not accepted (counted and dropped, never a panic).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyEventError {
    /// Not the documented JSON shape, or a field out of range.
    #[error("malformed key event: {0}")]
    Malformed(String),
    /// Sent in the clear: key events are only trusted megolm-encrypted.
    #[error("key event not encrypted")]
    NotEncrypted,
    /// The megolm session's device is not the event's `device_id` (or is unknown).
    #[error("device_id {claimed} is not the megolm sender device {actual}")]
    WrongDevice {
        /// What the event says.
        claimed: String,
        /// The megolm session's device, or "unknown".
        actual: String,
    },
    /// The sender is not joined to the conference room.
    #[error("sender is not joined to the conference room")]
    NotJoined,
    /// An SSRC is ours or another member's.
    #[error("SSRC {0} collides with another member's")]
    SsrcCollision(u32),
    /// The member declared other streams earlier in this call.
    #[error("streams differ from what this member declared")]
    StreamsChanged,
    /// The participant library refused the keys.
    #[error("keys refused: {0}")]
    Install(String),
}

impl KeyEvent {
    /// Reads an event's content. Empty `streams` and `keys` together are a hangup; else
    /// both must be present: 1–2 keys of one supported profile, of its length, distinct
    /// indexes; streams of distinct SSRCs, kinds `audio`/`video` (at most one audio and
    /// two video), layers `thumbnail`/`full` (video only).
    pub fn from_content(content: &serde_json::Value) -> Result<KeyEvent, KeyEventError> {
        let bad = |s: &str| KeyEventError::Malformed(s.to_owned());
        let w: WireKeys = serde_json::from_value(content.clone())
            .map_err(|e| KeyEventError::Malformed(e.to_string()))?;
        // Ids end up in logs and terminals: no control characters.
        for id in [&w.conf_id, &w.call_id, &w.device_id] {
            if id.is_empty() || id.len() > 255 || id.chars().any(char::is_control) {
                return Err(bad(
                    "conf_id, call_id and device_id: 1-255 bytes, printable",
                ));
            }
        }
        // One audio stream and two video layers at most, as an offer declares them.
        let count = |kind: &str| w.streams.iter().filter(|s| s.kind == kind).count();
        if count("audio") > 1 || count("video") > 2 {
            return Err(bad("more than one audio or two video streams"));
        }
        let mut streams = Vec::with_capacity(w.streams.len());
        for s in &w.streams {
            let kind = match s.kind.as_str() {
                "audio" => MediaKind::Audio,
                "video" => MediaKind::Video,
                _ => return Err(bad("stream kind")),
            };
            let layer = match (kind, s.layer.as_deref()) {
                (_, None) => None,
                (MediaKind::Video, Some("thumbnail")) => Some(Layer::Thumbnail),
                (MediaKind::Video, Some("full")) => Some(Layer::Full),
                _ => return Err(bad("stream layer")),
            };
            if streams.iter().any(|x: &Stream| x.ssrc.0 == s.ssrc) {
                return Err(bad("repeated ssrc"));
            }
            streams.push(Stream {
                ssrc: Ssrc(s.ssrc),
                kind,
                layer,
            });
        }
        if streams.is_empty() != w.keys.is_empty() || w.keys.len() > 2 {
            return Err(bad("streams and 1-2 keys, or neither"));
        }
        let mut profile = None;
        let mut keys = Vec::with_capacity(w.keys.len());
        for k in &w.keys {
            let p = profile_from_name(&k.profile).ok_or_else(|| bad("profile"))?;
            if profile.is_some_and(|q| q != p) {
                return Err(bad("two profiles"));
            }
            profile = Some(p);
            let bytes = STANDARD_NO_PAD
                .decode(k.key.trim_end_matches('='))
                .map_err(|_| bad("key base64"))?;
            if bytes.len() != p.master_len() {
                return Err(bad("key length"));
            }
            if keys.iter().any(|(i, _)| *i == KeyIndex(k.index)) {
                return Err(bad("repeated index"));
            }
            keys.push((KeyIndex(k.index), bytes));
        }
        Ok(KeyEvent {
            conf_id: w.conf_id,
            call_id: w.call_id,
            device_id: w.device_id,
            streams,
            profile,
            keys,
        })
    }

    /// The event content.
    pub fn to_content(&self) -> serde_json::Value {
        let streams = self
            .streams
            .iter()
            .map(|s| WireStream {
                ssrc: s.ssrc.0,
                kind: match s.kind {
                    MediaKind::Audio => "audio",
                    MediaKind::Video => "video",
                }
                .into(),
                layer: s.layer.map(|l| {
                    match l {
                        Layer::Thumbnail => "thumbnail",
                        Layer::Full => "full",
                    }
                    .into()
                }),
            })
            .collect();
        let profile = self.profile.and_then(profile_name).unwrap_or_default();
        let keys = self
            .keys
            .iter()
            .map(|(i, k)| WireKey {
                index: i.0,
                profile: profile.into(),
                key: STANDARD_NO_PAD.encode(k),
            })
            .collect();
        serde_json::to_value(WireKeys {
            conf_id: self.conf_id.clone(),
            call_id: self.call_id.clone(),
            device_id: self.device_id.clone(),
            streams,
            keys,
        })
        .unwrap_or_default()
    }

    /// Our three streams as declared.
    pub fn own_streams(s: OwnSsrcs) -> Vec<Stream> {
        vec![
            Stream {
                ssrc: s.audio,
                kind: MediaKind::Audio,
                layer: None,
            },
            Stream {
                ssrc: s.thumbnail,
                kind: MediaKind::Video,
                layer: Some(Layer::Thumbnail),
            },
            Stream {
                ssrc: s.full,
                kind: MediaKind::Video,
                layer: Some(Layer::Full),
            },
        ]
    }

    /// The streams as the participant library installs them.
    pub fn remote_streams(&self) -> Vec<RemoteStream> {
        self.streams
            .iter()
            .map(|s| RemoteStream {
                ssrc: s.ssrc,
                kind: s.kind,
            })
            .collect()
    }
}

/// A member's device in the call, as the roster knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Matrix user id.
    pub user_id: String,
    /// Device id.
    pub device_id: String,
    /// Its current call.
    pub call_id: String,
    /// Its id in the participant library.
    pub sender: SenderId,
    /// Its declared streams.
    pub streams: Vec<Stream>,
}

/// What accepting a key event means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accepted {
    /// A member's first key event in this call: install, and re-send our own keys.
    New(SenderId),
    /// New keys from a known member: install.
    Update(SenderId),
    /// The same device in a new call (it restarted): forget the old sender, install the
    /// new one.
    Replaced {
        /// The earlier call's sender.
        old: SenderId,
        /// The new one.
        new: SenderId,
    },
    /// The member hung up: forget it, rekey.
    Ended(SenderId),
    /// A hangup for a call we do not know: nothing to do.
    Ignored,
}

/// Other members' declarations, keyed by (user, device).
#[derive(Debug, Default)]
pub struct Roster {
    members: HashMap<(String, String), Member>,
    next_sender: u64,
}

impl Roster {
    /// Checks `ev` from `user_id` against the rules on SSRCs (ours and other members'
    /// are taken; a member keeps what it declared for a call) and, when accepted, records
    /// it. Call it only after the megolm and membership checks; if installing the keys
    /// then fails, [`forget`](Self::forget) the sender.
    pub fn accept(
        &mut self,
        user_id: &str,
        ev: &KeyEvent,
        own: OwnSsrcs,
    ) -> Result<Accepted, KeyEventError> {
        let key = (user_id.to_owned(), ev.device_id.clone());
        let known = self.members.get(&key);
        if ev.streams.is_empty() {
            return Ok(match known {
                Some(m) if m.call_id == ev.call_id => {
                    let s = m.sender;
                    self.members.remove(&key);
                    Accepted::Ended(s)
                }
                _ => Accepted::Ignored,
            });
        }
        let own = [own.audio, own.thumbnail, own.full];
        for s in &ev.streams {
            let taken = own.contains(&s.ssrc)
                || self
                    .members
                    .iter()
                    .any(|(k, m)| *k != key && m.streams.iter().any(|x| x.ssrc == s.ssrc));
            if taken {
                return Err(KeyEventError::SsrcCollision(s.ssrc.0));
            }
        }
        let sender = SenderId(self.next_sender);
        let result = match known {
            Some(m) if m.call_id == ev.call_id => {
                // The same streams, in whatever order.
                let same = m.streams.len() == ev.streams.len()
                    && m.streams.iter().all(|x| ev.streams.contains(x));
                if !same {
                    return Err(KeyEventError::StreamsChanged);
                }
                return Ok(Accepted::Update(m.sender));
            }
            Some(m) => Accepted::Replaced {
                old: m.sender,
                new: sender,
            },
            None => Accepted::New(sender),
        };
        self.next_sender += 1;
        self.members.insert(
            key,
            Member {
                user_id: user_id.to_owned(),
                device_id: ev.device_id.clone(),
                call_id: ev.call_id.clone(),
                sender,
                streams: ev.streams.clone(),
            },
        );
        Ok(result)
    }

    /// Forgets `user_id`'s device `device_id` if its current call is `call_id` (the SFU
    /// says that call ended); returns its sender.
    pub fn end_call(&mut self, user_id: &str, device_id: &str, call_id: &str) -> Option<SenderId> {
        let key = (user_id.to_owned(), device_id.to_owned());
        let m = self.members.get(&key).filter(|m| m.call_id == call_id)?;
        let sender = m.sender;
        self.members.remove(&key);
        Some(sender)
    }

    /// Forgets a sender (its keys could not be installed).
    pub fn forget(&mut self, sender: SenderId) {
        self.members.retain(|_, m| m.sender != sender);
    }

    /// Forgets every device of `user_id` (it left the room); returns their senders.
    pub fn remove_user(&mut self, user_id: &str) -> Vec<SenderId> {
        let gone: Vec<SenderId> = self
            .members
            .values()
            .filter(|m| m.user_id == user_id)
            .map(|m| m.sender)
            .collect();
        self.members.retain(|_, m| m.user_id != user_id);
        gone
    }

    /// Forgets everyone (the conference ended); returns their senders.
    pub fn clear(&mut self) -> Vec<SenderId> {
        self.members.drain().map(|(_, m)| m.sender).collect()
    }

    /// The member behind a sender.
    pub fn member(&self, sender: SenderId) -> Option<&Member> {
        self.members.values().find(|m| m.sender == sender)
    }

    /// Every member with keys installed.
    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.members.values()
    }
}

/// What [`LocalKeys`] asks of the participant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyAction {
    /// `add_local_key`.
    Add(KeyIndex, Vec<u8>),
    /// `activate_local_key`.
    Activate(KeyIndex),
    /// `remove_local_key`.
    Remove(KeyIndex),
}

/// A key published (or about to be) and not yet in use.
#[derive(Debug)]
struct Pending {
    index: KeyIndex,
    key: Vec<u8>,
    /// When it may be used: none until a key event carrying it is out
    /// ([`LocalKeys::sent`]).
    usable_at: Option<Instant>,
}

/// Our own key schedule: the active key, a published key waiting out
/// [`ACTIVATE_AFTER`], and the previous key until [`RETIRE_AFTER`] after the switch.
#[derive(Debug)]
pub struct LocalKeys {
    active: (KeyIndex, Vec<u8>),
    pending: Option<Pending>,
    /// When the first of the pending keys replaced since the last switch was made.
    pending_since: Option<Instant>,
    /// A rekey was asked for while the pending key could no longer be replaced: one is
    /// due as soon as that key is switched to ([`take_owed`](Self::take_owed)).
    owed: bool,
    retiring: Option<(KeyIndex, Instant)>,
}

impl LocalKeys {
    /// Starts with `key` active under index 0 (the participant's initial key).
    pub fn new(key: Vec<u8>) -> Self {
        LocalKeys {
            active: (KeyIndex(0), key),
            pending: None,
            pending_since: None,
            owed: false,
            retiring: None,
        }
    }

    /// The index in use.
    pub fn active(&self) -> KeyIndex {
        self.active.0
    }

    /// The key set to publish, oldest first: the active key, and the pending one.
    pub fn published(&self) -> Vec<(KeyIndex, Vec<u8>)> {
        let mut v = vec![self.active.clone()];
        if let Some(p) = &self.pending {
            v.push((p.index, p.key.clone()));
        }
        v
    }

    /// A fresh key `fresh` under the next index, to be published now and activated
    /// [`ACTIVATE_AFTER`] after the key event carrying it is out ([`sent`](Self::sent)).
    /// A pending key that was never used is replaced (a second leaver may have read
    /// it), for up to [`REPLACE_FOR`] after the first of them was made; after that the
    /// pending key is kept, switched to on time, and the rekey is owed: nothing changes
    /// now, and [`take_owed`](Self::take_owed) says when to ask again.
    pub fn rekey(&mut self, now: Instant, fresh: Vec<u8>) -> Vec<KeyAction> {
        if self
            .pending_since
            .is_some_and(|t| now.saturating_duration_since(t) >= REPLACE_FOR)
        {
            self.owed = true;
            return Vec::new();
        }
        self.pending_since.get_or_insert(now);
        let mut actions = Vec::new();
        let mut next = self.active.0.0.wrapping_add(1);
        if let Some(p) = self.pending.take() {
            actions.push(KeyAction::Remove(p.index));
            next = p.index.0.wrapping_add(1);
        }
        // Rekeys that each replace a pending key (one per leave, faster than it can be
        // switched to) bring the index round to the keys in use after 254 of them:
        // skip those, so a new key never overwrites one that packets still carry.
        let retiring = self.retiring.map(|(r, _)| r.0);
        while next == self.active.0.0 || Some(next) == retiring {
            next = next.wrapping_add(1);
        }
        let index = KeyIndex(next);
        actions.push(KeyAction::Add(index, fresh.clone()));
        self.pending = Some(Pending {
            index,
            key: fresh,
            usable_at: None,
        });
        actions
    }

    /// Whether a rekey is due now: one was owed ([`rekey`](Self::rekey)) and the key it
    /// waited for is in use. Clears it.
    pub fn take_owed(&mut self) -> bool {
        let due = self.owed && self.pending.is_none();
        if due {
            self.owed = false;
        }
        due
    }

    /// Our key event with the pending key went out at `now`: it is used no sooner than
    /// [`ACTIVATE_AFTER`] from then.
    pub fn sent(&mut self, now: Instant, indexes: &[KeyIndex]) {
        // Only the first event that carried the pending key starts its wait: a key
        // replaced while that event was on its way was not in it, and later
        // re-publications (for newcomers) must not keep pushing the switch back.
        if let Some(p) = self.pending.as_mut()
            && p.usable_at.is_none()
            && indexes.contains(&p.index)
        {
            p.usable_at = Some(now + ACTIVATE_AFTER);
        }
    }

    /// The next time [`poll`](Self::poll) has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        let a = self.pending.as_ref().and_then(|p| p.usable_at);
        let b = self.retiring.map(|r| r.1);
        match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// What is due at `now`: switching to the pending key, dropping the previous one.
    pub fn poll(&mut self, now: Instant) -> Vec<KeyAction> {
        let mut actions = Vec::new();
        if self.retiring.is_some_and(|r| r.1 <= now)
            && let Some((r, _)) = self.retiring.take()
        {
            actions.push(KeyAction::Remove(r));
        }
        if self
            .pending
            .as_ref()
            .is_some_and(|p| p.usable_at.is_some_and(|t| t <= now))
            && let Some(p) = self.pending.take()
        {
            if let Some((r, _)) = self.retiring.take() {
                actions.push(KeyAction::Remove(r));
            }
            actions.push(KeyAction::Activate(p.index));
            self.pending_since = None;
            let old = std::mem::replace(&mut self.active, (p.index, p.key));
            self.retiring = Some((old.0, now + RETIRE_AFTER));
        }
        actions
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn doc_example() -> serde_json::Value {
        let doc = include_str!("../../../docs/protocol.md");
        let at = doc.find("\"org.matrix.msc2359.call.keys\"").unwrap();
        let start = doc[..at].rfind("```json\n").unwrap() + 8;
        let end = start + doc[start..].find("```").unwrap();
        serde_json::from_str::<serde_json::Value>(&doc[start..end]).unwrap()["content"].clone()
    }

    #[test]
    fn the_documented_key_event_reads_and_writes_back() {
        let content = doc_example();
        let ev = KeyEvent::from_content(&content).unwrap();
        assert_eq!(ev.device_id, "ALICEDEVICE");
        assert_eq!(ev.streams.len(), 3);
        assert_eq!(ev.streams[2].layer, Some(Layer::Full));
        assert_eq!(ev.profile, Some(SrtpProfile::AeadAes128Gcm));
        assert_eq!(ev.keys[0].1, (0u8..28).collect::<Vec<u8>>());
        assert_eq!(ev.to_content(), content);
    }

    #[test]
    fn malformed_key_events_are_errors() {
        let good = doc_example();
        let mut cases = Vec::new();
        for (ptr, v) in [
            ("/keys/0/key", json!("AAEC")),
            ("/keys/0/profile", json!("SRTP_NULL")),
            ("/keys/0/index", json!(256)),
            ("/streams/0/kind", json!("text")),
            (
                "/streams/0",
                json!({"ssrc": 1111, "kind": "audio", "layer": "full"}),
            ),
            ("/streams/1/ssrc", json!(1111)),
            ("/keys", json!([])),
            ("/device_id", json!(5)),
            ("/device_id", json!("\u{1b}]0;pwned\u{7}")),
            ("/call_id", json!("")),
        ] {
            let mut c = good.clone();
            *c.pointer_mut(ptr).unwrap() = v;
            cases.push(c);
        }
        let mut three = good.clone();
        let k = three["keys"][0].clone();
        three["keys"] = json!([k.clone(), k.clone(), k]);
        cases.push(three);
        // Streams beyond one audio and two video layers (thousands would fit in an
        // event, and every receiver checks each against every member's).
        for extra in [
            json!({"ssrc": 4444, "kind": "audio"}),
            json!({"ssrc": 4444, "kind": "video"}),
        ] {
            let mut more = good.clone();
            more["streams"].as_array_mut().unwrap().push(extra);
            cases.push(more);
        }
        for c in cases {
            assert!(
                matches!(KeyEvent::from_content(&c), Err(KeyEventError::Malformed(_))),
                "{c}"
            );
        }
        let mut hangup = good;
        hangup["streams"] = json!([]);
        hangup["keys"] = json!([]);
        assert!(KeyEvent::from_content(&hangup).unwrap().streams.is_empty());
    }

    #[test]
    fn the_roster_enforces_ssrc_rules() {
        let own = OwnSsrcs::numbered(9);
        let mut ev = KeyEvent::from_content(&doc_example()).unwrap();
        let mut r = Roster::default();
        let a = match r.accept("@a:x", &ev, own).unwrap() {
            Accepted::New(s) => s,
            other => panic!("{other:?}"),
        };
        assert_eq!(r.accept("@a:x", &ev, own).unwrap(), Accepted::Update(a));
        // The same streams in another order: the same declaration.
        let mut reordered = ev.clone();
        reordered.streams.reverse();
        assert_ne!(reordered.streams, ev.streams);
        assert_eq!(
            r.accept("@a:x", &reordered, own).unwrap(),
            Accepted::Update(a)
        );
        // Another device with one of a's SSRCs.
        let mut other = ev.clone();
        other.device_id = "BOB".into();
        assert_eq!(
            r.accept("@b:x", &other, own),
            Err(KeyEventError::SsrcCollision(1111))
        );
        // One of ours.
        other.streams[0].ssrc = own.audio;
        assert_eq!(
            r.accept("@b:x", &other, own),
            Err(KeyEventError::SsrcCollision(own.audio.0))
        );
        // Same call, other streams.
        ev.streams[0].ssrc = Ssrc(77);
        assert_eq!(
            r.accept("@a:x", &ev, own),
            Err(KeyEventError::StreamsChanged)
        );
        // A new call from the same device replaces the old one.
        ev.call_id = "restarted".into();
        let Accepted::Replaced { old, new } = r.accept("@a:x", &ev, own).unwrap() else {
            panic!()
        };
        assert_eq!(old, a);
        ev.streams.clear();
        ev.keys.clear();
        assert_eq!(r.accept("@a:x", &ev, own).unwrap(), Accepted::Ended(new));
        assert_eq!(r.members().count(), 0);
    }

    #[test]
    fn the_sfus_news_of_an_ended_call_ends_only_that_call() {
        let own = OwnSsrcs::numbered(9);
        let mut ev = KeyEvent::from_content(&doc_example()).unwrap();
        let mut r = Roster::default();
        let Accepted::New(first) = r.accept("@a:x", &ev, own).unwrap() else {
            panic!()
        };
        // The device called again: news of its first call's end is old news.
        let first_call = ev.call_id.clone();
        ev.call_id = "second".into();
        let Accepted::Replaced { new, .. } = r.accept("@a:x", &ev, own).unwrap() else {
            panic!()
        };
        assert_ne!(first, new);
        assert_eq!(r.end_call("@a:x", &ev.device_id, &first_call), None);
        // Another user, another device: not this member.
        assert_eq!(r.end_call("@b:x", &ev.device_id, "second"), None);
        assert_eq!(r.end_call("@a:x", "OTHER", "second"), None);
        assert_eq!(r.members().count(), 1);
        assert_eq!(r.end_call("@a:x", &ev.device_id, "second"), Some(new));
        assert_eq!(r.members().count(), 0);
        // Its hangup key event, arriving after, is then about a call nobody knows.
        ev.streams.clear();
        ev.keys.clear();
        assert_eq!(r.accept("@a:x", &ev, own).unwrap(), Accepted::Ignored);
    }

    /// The indexes of the key set to publish now.
    fn indexes(k: &LocalKeys) -> Vec<KeyIndex> {
        k.published().iter().map(|p| p.0).collect()
    }

    /// What the participant's publish does: the key set as it is now goes out at `at`.
    fn publish(k: &mut LocalKeys, at: Instant) {
        let indexes = indexes(k);
        k.sent(at, &indexes);
    }

    #[test]
    fn rekeying_publishes_then_switches_after_2s_and_drops_after_10s() {
        let t0 = Instant::now();
        let mut k = LocalKeys::new(vec![0; 28]);
        assert_eq!(k.next_deadline(), None);
        let a = k.rekey(t0, vec![1; 28]);
        assert_eq!(a, [KeyAction::Add(KeyIndex(1), vec![1; 28])]);
        assert_eq!(k.published().len(), 2);
        // Not in use before its key event is out, however long that takes.
        assert!(k.poll(t0 + Duration::from_secs(60)).is_empty());
        assert_eq!(k.next_deadline(), None);
        publish(&mut k, t0);
        assert!(k.poll(t0 + Duration::from_millis(1999)).is_empty());
        assert_eq!(k.next_deadline(), Some(t0 + ACTIVATE_AFTER));
        let t1 = t0 + ACTIVATE_AFTER;
        assert_eq!(k.poll(t1), [KeyAction::Activate(KeyIndex(1))]);
        assert_eq!(k.published(), [(KeyIndex(1), vec![1; 28])]);
        // A second leave before the first key is in use replaces it.
        let t2 = t1 + Duration::from_secs(1);
        k.rekey(t2, vec![2; 28]);
        let in_flight = indexes(&k);
        let a = k.rekey(t2, vec![3; 28]);
        assert_eq!(
            a,
            [
                KeyAction::Remove(KeyIndex(2)),
                KeyAction::Add(KeyIndex(3), vec![3; 28])
            ]
        );
        // The event carrying key 2 comes back: key 3 was not in it, so it still waits.
        k.sent(t2, &in_flight);
        assert!(k.poll(t2 + ACTIVATE_AFTER).is_empty());
        publish(&mut k, t2);
        // A re-publication (for a newcomer) does not push the switch back.
        publish(&mut k, t2 + Duration::from_secs(1));
        assert_eq!(
            k.poll(t2 + ACTIVATE_AFTER),
            [
                KeyAction::Remove(KeyIndex(0)),
                KeyAction::Activate(KeyIndex(3))
            ]
        );
        assert_eq!(
            k.poll(t2 + ACTIVATE_AFTER + RETIRE_AFTER),
            [KeyAction::Remove(KeyIndex(1))]
        );
        assert_eq!(k.next_deadline(), None);
    }

    /// Other members' key events are Matrix input: random values of the documented
    /// event replaced by values of other types and shapes must be refused or
    /// accepted, never panic, and whatever the roster accepts keeps its rules.
    #[test]
    fn mutated_key_events_never_panic() {
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut rand = move |n: usize| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % n.max(1) as u64) as usize
        };
        let with = [
            json!(null),
            json!(-1),
            json!(256),
            json!(u64::MAX),
            json!(1.5),
            json!(""),
            json!("\u{0}"),
            json!("video"),
            json!("full"),
            json!("thumbnail"),
            json!("SRTP_AES128_CM_SHA1_80"),
            json!("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGw"),
            json!([]),
            json!({}),
            json!({"ssrc": 2222, "kind": "video", "layer": "full"}),
            json!({"index": 0, "profile": "SRTP_AEAD_AES_128_GCM", "key": "AAAA"}),
        ];
        fn mutate(v: &mut Value, rand: &mut impl FnMut(usize) -> usize, with: &[Value]) {
            match v {
                Value::Object(m) if !m.is_empty() && rand(4) != 0 => {
                    let k = m.keys().nth(rand(m.len())).cloned().unwrap();
                    mutate(m.get_mut(&k).unwrap(), rand, with);
                }
                Value::Array(a) if !a.is_empty() && rand(4) != 0 => {
                    let i = rand(a.len());
                    if rand(3) == 0 {
                        let dup = a[i].clone();
                        a.push(dup);
                    } else {
                        mutate(&mut a[i], rand, with);
                    }
                }
                _ => *v = with[rand(with.len())].clone(),
            }
        }
        let own = OwnSsrcs::numbered(9);
        let mut roster = Roster::default();
        let (mut read, mut accepted) = (0, 0);
        for round in 0..3000 {
            let mut content = doc_example();
            content["device_id"] = json!(format!("D{}", round % 7));
            for _ in 0..1 + rand(3) {
                mutate(&mut content, &mut rand, &with);
            }
            let Ok(ev) = KeyEvent::from_content(&content) else {
                continue;
            };
            read += 1;
            assert!(ev.streams.len() <= 3 && ev.keys.len() <= 2, "{content}");
            if roster.accept("@m:example.org", &ev, own).is_ok() {
                accepted += 1;
            }
            // No SSRC is declared twice across the roster, nor one of ours.
            let mut seen = std::collections::HashSet::new();
            for m in roster.members() {
                for st in &m.streams {
                    assert!(seen.insert(st.ssrc), "{:?} twice", st.ssrc);
                    assert!(![own.audio, own.thumbnail, own.full].contains(&st.ssrc));
                }
            }
        }
        assert!(
            read > 100 && accepted > 10,
            "{read} read, {accepted} accepted"
        );
    }

    #[test]
    fn leaves_faster_than_a_key_can_be_switched_to_still_switch_keys() {
        // Someone leaves every 1.5 s for a minute: each leave replaces the pending key
        // (restarting its 2 s wait) for up to REPLACE_FOR, then the pending key is
        // switched to on time and the owed rekey follows.
        // Each rekey (owed ones included, which change nothing) is followed by a
        // publication of the key set that takes 300 ms.
        let t0 = Instant::now();
        let mut k = LocalKeys::new(vec![0; 28]);
        let (mut now, mut last_switch, mut longest) = (t0, t0, Duration::ZERO);
        let mut next_leave = t0;
        let mut n = 0u8;
        let mut in_flight: Vec<(Instant, Vec<KeyIndex>)> = Vec::new();
        let publish_from =
            |k: &LocalKeys, now: Instant| (now + Duration::from_millis(300), indexes(k));
        while now < t0 + Duration::from_secs(60) {
            if now >= next_leave {
                n = n.wrapping_add(1);
                k.rekey(now, vec![n; 28]);
                in_flight.push(publish_from(&k, now));
                next_leave += Duration::from_millis(1500);
            }
            in_flight.retain(|(at, indexes)| {
                if *at <= now {
                    k.sent(*at, indexes);
                }
                *at > now
            });
            if k.poll(now)
                .iter()
                .any(|a| matches!(a, KeyAction::Activate(_)))
            {
                longest = longest.max(now - last_switch);
                last_switch = now;
            }
            if k.take_owed() {
                n = n.wrapping_add(1);
                assert!(!k.rekey(now, vec![n; 28]).is_empty(), "the owed rekey");
                in_flight.push(publish_from(&k, now));
            }
            assert!(k.published().len() <= 2);
            now += Duration::from_millis(100);
        }
        // A switch at least every REPLACE_FOR + the wait of the key kept then, and of
        // the owed one after it (each after its publication).
        let publication = Duration::from_millis(300);
        assert!(
            longest <= REPLACE_FOR + (ACTIVATE_AFTER + publication) * 2,
            "{longest:?}"
        );
        assert!(
            last_switch > t0 + Duration::from_secs(50),
            "{last_switch:?}"
        );
    }

    #[test]
    fn a_rekey_storm_never_reuses_an_index_in_use() {
        // Each rekey replaces the pending key before it is switched to: the index
        // comes round to the active (and the retiring) one, which it must skip.
        let t0 = Instant::now();
        let mut k = LocalKeys::new(vec![0; 28]);
        k.rekey(t0, vec![1; 28]);
        publish(&mut k, t0);
        k.poll(t0 + ACTIVATE_AFTER);
        let (active, retiring) = (KeyIndex(1), KeyIndex(0));
        for n in 0..600u32 {
            for a in k.rekey(t0 + ACTIVATE_AFTER, vec![n as u8; 28]) {
                match a {
                    KeyAction::Add(i, _) | KeyAction::Remove(i) => {
                        assert!(i != active && i != retiring, "rekey {n}: {a:?}")
                    }
                    KeyAction::Activate(_) => panic!("rekey activated a key"),
                }
            }
            let published = k.published();
            assert_eq!(published.len(), 2);
            assert_ne!(published[0].0, published[1].0);
        }
    }
}
