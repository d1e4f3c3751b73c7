//! The Matrix events signaling reads and writes, as docs/protocol.md specifies them.
//!
//! Everything that arrives from Matrix is untrusted: an event is read from a raw
//! `serde_json::Value` field by field, so a wrong type in one field names that field in
//! the refusal instead of failing a whole sync batch. Outgoing events are built as JSON
//! values of exactly the documented shape.

use blindfold_relay::control::FullSet;
use blindfold_relay::id::Ssrc;
use serde_json::{Map, Value, json};

/// State event announcing a conference in its room; `state_key` is the conference id.
pub const CONFERENCE: &str = "org.matrix.msc2359.conference";
/// Timeline event in the DM: which full-resolution streams a participant wants.
pub const SUBSCRIBE: &str = "org.matrix.msc2359.call.subscribe";
/// Timeline event in the DM: the conference's active speaker changed.
pub const ACTIVE_SPEAKER: &str = "org.matrix.msc2359.call.active_speaker";
/// Timeline event in the DM: another member's call of the conference ended.
pub const MEMBER_ENDED: &str = "org.matrix.msc2359.call.member_ended";
/// The key under which an invite names its conference, and a hangup its machine code.
pub const CONFERENCE_REF: &str = "org.matrix.msc2359.conference";
/// The machine-readable refusal code in `m.call.hangup`.
pub const REASON_CODE: &str = "org.matrix.msc2359.reason";

/// VoIP v1 call events.
pub const CALL_INVITE: &str = "m.call.invite";
/// See [`CALL_INVITE`].
pub const CALL_ANSWER: &str = "m.call.answer";
/// See [`CALL_INVITE`].
pub const CALL_HANGUP: &str = "m.call.hangup";
/// See [`CALL_INVITE`].
pub const CALL_CANDIDATES: &str = "m.call.candidates";
/// See [`CALL_INVITE`].
pub const CALL_SELECT_ANSWER: &str = "m.call.select_answer";
/// See [`CALL_INVITE`].
pub const CALL_NEGOTIATE: &str = "m.call.negotiate";
/// See [`CALL_INVITE`].
pub const CALL_REJECT: &str = "m.call.reject";

/// Longest `call_id` / `party_id` / `conf_id` signaling keeps (bytes). The spec sets no
/// bound; one is needed because these are stored and echoed.
pub const MAX_ID_BYTES: usize = 255;

/// A conference's state as announced in its room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConferenceState {
    /// Live, served by the SFU user `sfu`.
    Live {
        /// The SFU's Matrix user id.
        sfu: String,
    },
    /// Ended: empty content, `"terminated": true`, or content that does not name an SFU.
    Terminated,
}

impl ConferenceState {
    /// Reads the content of an `org.matrix.msc2359.conference` state event.
    ///
    /// Content without a string `sfu` cannot be served by anyone, so it counts as ended.
    pub fn from_content(content: &Value) -> Self {
        let Some(obj) = content.as_object() else {
            return ConferenceState::Terminated;
        };
        if obj.get("terminated") == Some(&Value::Bool(true)) {
            return ConferenceState::Terminated;
        }
        match obj.get("sfu").and_then(Value::as_str) {
            Some(sfu) if !sfu.is_empty() => ConferenceState::Live {
                sfu: sfu.to_owned(),
            },
            _ => ConferenceState::Terminated,
        }
    }
}

/// Why an incoming call event could not be read. The message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadEvent(pub String);

fn bad(msg: impl Into<String>) -> BadEvent {
    BadEvent(msg.into())
}

/// Reads a required string field of at most [`MAX_ID_BYTES`] bytes.
fn id_field<'a>(obj: &'a Map<String, Value>, key: &str) -> Result<&'a str, BadEvent> {
    match obj.get(key) {
        None => Err(bad(format!("`{key}` is missing"))),
        Some(Value::String(s)) if s.is_empty() => Err(bad(format!("`{key}` is empty"))),
        Some(Value::String(s)) if s.len() > MAX_ID_BYTES => Err(bad(format!(
            "`{key}` is {} bytes, at most {MAX_ID_BYTES} allowed",
            s.len()
        ))),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(bad(format!("`{key}` must be a string"))),
    }
}

/// The content as an object.
fn content_object(content: &Value) -> Result<&Map<String, Value>, BadEvent> {
    content
        .as_object()
        .ok_or_else(|| bad("content is not an object"))
}

/// The object under `key` (e.g. an active speaker's `speaker`).
fn object_field<'a>(content: &'a Value, key: &str) -> Result<&'a Map<String, Value>, BadEvent> {
    content
        .get(key)
        .and_then(Value::as_object)
        .ok_or_else(|| bad(format!("`{key}` must be an object")))
}

/// The ids every VoIP v1 call event carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallIds {
    /// The call.
    pub call_id: String,
    /// The sending client's party (its device, for clients that follow the spec).
    pub party_id: String,
}

impl CallIds {
    /// Reads `call_id` and `party_id`. A v1 event without `party_id` is malformed.
    pub fn from_content(content: &Value) -> Result<Self, BadEvent> {
        let obj = content_object(content)?;
        Ok(CallIds {
            call_id: id_field(obj, "call_id")?.to_owned(),
            party_id: id_field(obj, "party_id")?.to_owned(),
        })
    }
}

/// A well-formed `m.call.invite` to a Blindfold conference (SDP not yet checked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invite {
    /// Call and party ids.
    pub ids: CallIds,
    /// Milliseconds after the event's `origin_server_ts` after which it is void.
    pub lifetime_ms: u64,
    /// `invitee`, if present.
    pub invitee: Option<String>,
    /// The conference room.
    pub room_id: String,
    /// The conference within it.
    pub conf_id: String,
    /// The SDP offer.
    pub sdp: String,
}

/// How an invite failed to read: the ids were readable (so it can be refused with a
/// hangup) or not (so it can only be dropped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InviteError {
    /// No usable `call_id`/`party_id`: nothing to hang up.
    NoIds(BadEvent),
    /// `version` is not `"1"`.
    Version(CallIds, String),
    /// Some other field is wrong.
    Malformed(CallIds, BadEvent),
}

impl Invite {
    /// Reads an `m.call.invite` content per docs/protocol.md.
    pub fn from_content(content: &Value) -> Result<Self, InviteError> {
        let ids = CallIds::from_content(content).map_err(InviteError::NoIds)?;
        // `from_content` checked it is an object.
        let obj = content.as_object().expect("checked by CallIds");
        match obj.get("version") {
            Some(Value::String(v)) if v == "1" => {}
            Some(other) => return Err(InviteError::Version(ids, other.to_string())),
            None => return Err(InviteError::Version(ids, "none".to_owned())),
        }
        let malformed = |ids: &CallIds, msg: String| InviteError::Malformed(ids.clone(), bad(msg));
        let lifetime_ms = match obj.get("lifetime") {
            Some(v) => v.as_u64().ok_or_else(|| {
                malformed(&ids, "`lifetime` must be a non-negative integer".into())
            })?,
            None => return Err(malformed(&ids, "`lifetime` is missing".into())),
        };
        let invitee = match obj.get("invitee") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return Err(malformed(&ids, "`invitee` must be a string".into())),
        };
        let conf = obj
            .get(CONFERENCE_REF)
            .and_then(Value::as_object)
            .ok_or_else(|| malformed(&ids, format!("`{CONFERENCE_REF}` object is missing")))?;
        let room_id = id_field(conf, "room_id")
            .map_err(|e| malformed(&ids, format!("{CONFERENCE_REF}: {e}")))?
            .to_owned();
        let conf_id = id_field(conf, "conf_id")
            .map_err(|e| malformed(&ids, format!("{CONFERENCE_REF}: {e}")))?
            .to_owned();
        let offer = obj
            .get("offer")
            .and_then(Value::as_object)
            .ok_or_else(|| malformed(&ids, "`offer` object is missing".into()))?;
        if offer.get("type").and_then(Value::as_str) != Some("offer") {
            return Err(malformed(&ids, "`offer.type` must be \"offer\"".into()));
        }
        let sdp = offer
            .get("sdp")
            .and_then(Value::as_str)
            .ok_or_else(|| malformed(&ids, "`offer.sdp` must be a string".into()))?
            .to_owned();
        Ok(Invite {
            ids,
            lifetime_ms,
            invitee,
            room_id,
            conf_id,
            sdp,
        })
    }
}

/// `org.matrix.msc2359.call.subscribe`: which full-resolution streams a caller wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    /// The call it applies to.
    pub ids: CallIds,
    /// What it wants: `"all"`, `"speaker"` (whoever is the conference's active speaker)
    /// or a list of SSRCs.
    pub full: FullSet,
}

/// Most SSRCs in one subscription (the relay's bound).
pub const MAX_SUBSCRIBE_SSRCS: usize = blindfold_relay::control::MAX_SUBSCRIPTION_SSRCS;

impl Subscribe {
    /// Reads a subscribe content.
    pub fn from_content(content: &Value) -> Result<Self, BadEvent> {
        let ids = CallIds::from_content(content)?;
        let obj = content.as_object().expect("checked by CallIds");
        let full = match obj.get("full") {
            Some(Value::String(s)) if s == "all" => FullSet::All,
            Some(Value::String(s)) if s == "speaker" => FullSet::Speaker,
            Some(Value::Array(items)) => {
                if items.len() > MAX_SUBSCRIBE_SSRCS {
                    return Err(bad(format!(
                        "`full` lists {} SSRCs, at most {MAX_SUBSCRIBE_SSRCS} allowed",
                        items.len()
                    )));
                }
                let mut out = Vec::with_capacity(items.len());
                for v in items {
                    let ssrc = v
                        .as_u64()
                        .and_then(|n| u32::try_from(n).ok())
                        .ok_or_else(|| bad(format!("`full` entry {v} is not an SSRC")))?;
                    if !out.contains(&ssrc) {
                        out.push(ssrc);
                    }
                }
                FullSet::Ssrcs(out.into_iter().map(Ssrc).collect())
            }
            _ => {
                return Err(bad(
                    "`full` must be \"all\", \"speaker\" or a list of SSRCs",
                ));
            }
        };
        Ok(Subscribe { ids, full })
    }
}

/// The spec's `reason` values signaling uses in `m.call.hangup`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HangupReason {
    /// ICE (or the DTLS handshake over it) failed, or connectivity was lost.
    IceFailed,
    /// No connectivity check arrived in time.
    IceTimeout,
    /// The invite was past its lifetime.
    InviteTimeout,
    /// Everything else.
    UnknownError,
}

impl HangupReason {
    /// The wire value.
    pub fn as_str(self) -> &'static str {
        match self {
            HangupReason::IceFailed => "ice_failed",
            HangupReason::IceTimeout => "ice_timeout",
            HangupReason::InviteTimeout => "invite_timeout",
            HangupReason::UnknownError => "unknown_error",
        }
    }
}

/// `m.call.answer` content.
pub fn answer_content(call_id: &str, party_id: &str, sdp: &str) -> Value {
    json!({
        "call_id": call_id,
        "party_id": party_id,
        "version": "1",
        "answer": {"type": "answer", "sdp": sdp},
    })
}

/// `m.call.hangup` content with the spec's reason and Blindfold's machine code.
pub fn hangup_content(call_id: &str, party_id: &str, reason: HangupReason, code: &str) -> Value {
    json!({
        "call_id": call_id,
        "party_id": party_id,
        "version": "1",
        "reason": reason.as_str(),
        REASON_CODE: code,
    })
}

/// An `org.matrix.msc2359.call.active_speaker` as a participant reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveSpeaker {
    /// The receiving participant's call, and the SFU's `party_id`.
    pub ids: CallIds,
    /// The speaker's user id.
    pub user_id: String,
    /// The speaker's `party_id` (its device).
    pub party_id: String,
}

impl ActiveSpeaker {
    /// Reads the content: the call ids and `speaker.user_id`, `speaker.party_id`.
    pub fn from_content(content: &Value) -> Result<Self, BadEvent> {
        let ids = CallIds::from_content(content)?;
        let speaker = object_field(content, "speaker")?;
        Ok(ActiveSpeaker {
            ids,
            user_id: id_field(speaker, "user_id")?.to_owned(),
            party_id: id_field(speaker, "party_id")?.to_owned(),
        })
    }
}

/// `org.matrix.msc2359.call.active_speaker` content for call `call_id` (the SFU's
/// `party_id`): the speaker is `user_id`'s call from `speaker_party`.
pub fn active_speaker_content(
    call_id: &str,
    party_id: &str,
    user_id: &str,
    speaker_party: &str,
) -> Value {
    json!({
        "call_id": call_id,
        "party_id": party_id,
        "version": "1",
        "speaker": {"user_id": user_id, "party_id": speaker_party},
    })
}

/// An `org.matrix.msc2359.call.member_ended` as a participant reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberEnded {
    /// The receiving participant's call, and the SFU's `party_id`.
    pub ids: CallIds,
    /// The member's user id.
    pub user_id: String,
    /// The member's `party_id` (its device).
    pub party_id: String,
    /// The member's call that ended.
    pub call_id: String,
    /// Why, as the code of the SFU's hangup (`"hangup"` when the member hung up).
    pub reason: String,
}

impl MemberEnded {
    /// Reads the content: the call ids, `member.user_id`, `member.party_id`,
    /// `member.call_id` and `reason`.
    pub fn from_content(content: &Value) -> Result<Self, BadEvent> {
        let ids = CallIds::from_content(content)?;
        let member = object_field(content, "member")?;
        let obj = content_object(content)?;
        Ok(MemberEnded {
            ids,
            user_id: id_field(member, "user_id")?.to_owned(),
            party_id: id_field(member, "party_id")?.to_owned(),
            call_id: id_field(member, "call_id")?.to_owned(),
            reason: id_field(obj, "reason")?.to_owned(),
        })
    }
}

/// `org.matrix.msc2359.call.member_ended` content for call `call_id` (the SFU's
/// `party_id`): `user_id`'s call `member_call` from `member_party` ended for `reason`.
pub fn member_ended_content(
    call_id: &str,
    party_id: &str,
    user_id: &str,
    member_party: &str,
    member_call: &str,
    reason: &str,
) -> Value {
    json!({
        "call_id": call_id,
        "party_id": party_id,
        "version": "1",
        "member": {"user_id": user_id, "party_id": member_party, "call_id": member_call},
        "reason": reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invite() -> Value {
        json!({
            "call_id": "c1", "party_id": "DEV", "version": "1", "lifetime": 60000,
            "invitee": "@sfu:hs",
            "offer": {"type": "offer", "sdp": "v=0\r\n"},
            "org.matrix.msc2359.conference": {"room_id": "!r:hs", "conf_id": "conf"}
        })
    }

    #[test]
    fn a_good_invite_reads() {
        let inv = Invite::from_content(&invite()).unwrap();
        assert_eq!(inv.ids.call_id, "c1");
        assert_eq!(inv.room_id, "!r:hs");
        assert_eq!(inv.conf_id, "conf");
        assert_eq!(inv.lifetime_ms, 60000);
        assert_eq!(inv.invitee.as_deref(), Some("@sfu:hs"));
    }

    #[test]
    fn each_bad_field_is_named() {
        let cases: [(&str, Value, &str); 6] = [
            ("lifetime", json!("soon"), "`lifetime`"),
            ("offer", json!({"type": "answer", "sdp": ""}), "offer.type"),
            ("offer", json!({"type": "offer", "sdp": 5}), "offer.sdp"),
            ("invitee", json!(7), "`invitee`"),
            (CONFERENCE_REF, json!({"room_id": "!r:hs"}), "conf_id"),
            (CONFERENCE_REF, json!("x"), CONFERENCE_REF),
        ];
        for (key, value, named) in cases {
            let mut c = invite();
            c[key] = value;
            match Invite::from_content(&c) {
                Err(InviteError::Malformed(ids, e)) => {
                    assert_eq!(ids.call_id, "c1");
                    assert!(e.0.contains(named), "{key}: {e}");
                }
                other => panic!("{key}: {other:?}"),
            }
        }
    }

    #[test]
    fn version_other_than_1_is_refused_with_ids() {
        for v in [json!(0), json!("2"), json!(null)] {
            let mut c = invite();
            c["version"] = v;
            assert!(matches!(
                Invite::from_content(&c),
                Err(InviteError::Version(..))
            ));
        }
        let mut c = invite();
        c.as_object_mut().unwrap().remove("version");
        assert!(matches!(
            Invite::from_content(&c),
            Err(InviteError::Version(..))
        ));
    }

    #[test]
    fn without_ids_nothing_can_be_answered() {
        for c in [
            json!([]),
            json!({"call_id": 5, "party_id": "p"}),
            json!({"call_id": "c"}),
        ] {
            assert!(matches!(
                Invite::from_content(&c),
                Err(InviteError::NoIds(_))
            ));
        }
        let long = "x".repeat(MAX_ID_BYTES + 1);
        let c = json!({"call_id": long, "party_id": "p"});
        assert!(matches!(
            Invite::from_content(&c),
            Err(InviteError::NoIds(_))
        ));
    }

    #[test]
    fn conference_state_reads_live_and_ended() {
        assert_eq!(
            ConferenceState::from_content(&json!({"sfu": "@sfu:hs", "name": "x"})),
            ConferenceState::Live {
                sfu: "@sfu:hs".into()
            }
        );
        for ended in [
            json!({}),
            json!({"sfu": "@sfu:hs", "terminated": true}),
            json!(null),
            json!({"sfu": 3}),
        ] {
            assert_eq!(
                ConferenceState::from_content(&ended),
                ConferenceState::Terminated
            );
        }
    }

    #[test]
    fn subscribe_reads_all_and_lists() {
        let s = Subscribe::from_content(
            &json!({"call_id": "c", "party_id": "p", "version": "1", "full": "all"}),
        )
        .unwrap();
        assert_eq!(s.full, FullSet::All);
        let s =
            Subscribe::from_content(&json!({"call_id": "c", "party_id": "p", "full": "speaker"}))
                .unwrap();
        assert_eq!(s.full, FullSet::Speaker);
        let s =
            Subscribe::from_content(&json!({"call_id": "c", "party_id": "p", "full": [1, 2, 2]}))
                .unwrap();
        assert_eq!(s.full, FullSet::Ssrcs(vec![Ssrc(1), Ssrc(2)]));
        for bad in [
            json!("some"),
            json!([-1]),
            json!([4294967296u64]),
            json!(null),
        ] {
            assert!(
                Subscribe::from_content(&json!({"call_id": "c", "party_id": "p", "full": bad}))
                    .is_err()
            );
        }
    }

    #[test]
    fn a_member_ended_event_names_the_members_call_and_reads_back() {
        let c = member_ended_content("a", "SFUDEV", "@bob:hs", "BOBDEV", "b1", "consent_expired");
        assert_eq!(c["version"], "1");
        assert_eq!(
            MemberEnded::from_content(&c).unwrap(),
            MemberEnded {
                ids: CallIds {
                    call_id: "a".into(),
                    party_id: "SFUDEV".into()
                },
                user_id: "@bob:hs".into(),
                party_id: "BOBDEV".into(),
                call_id: "b1".into(),
                reason: "consent_expired".into(),
            }
        );
        let member = json!({"user_id": "@b:hs", "party_id": "D", "call_id": "b1"});
        for bad in [
            json!({"call_id": "a", "party_id": "S", "reason": "hangup"}),
            json!({"call_id": "a", "party_id": "S", "member": member}),
            json!({"call_id": "a", "party_id": "S", "reason": "hangup",
                   "member": {"user_id": "@b:hs", "party_id": "D"}}),
            json!({"call_id": "a", "party_id": "S", "reason": "hangup",
                   "member": {"user_id": "@b:hs", "party_id": "D", "call_id": 7}}),
            json!({"call_id": "a", "party_id": "S", "reason": 3, "member": member}),
        ] {
            assert!(MemberEnded::from_content(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_active_speaker_event_names_the_speakers_call_and_reads_back() {
        let c = active_speaker_content("a", "SFUDEV", "@bob:hs", "BOBDEV");
        assert_eq!(c["version"], "1");
        assert_eq!(c["party_id"], "SFUDEV");
        assert_eq!(
            ActiveSpeaker::from_content(&c).unwrap(),
            ActiveSpeaker {
                ids: CallIds {
                    call_id: "a".into(),
                    party_id: "SFUDEV".into()
                },
                user_id: "@bob:hs".into(),
                party_id: "BOBDEV".into(),
            }
        );
        for bad in [
            json!({"call_id": "a", "party_id": "S"}),
            json!({"call_id": "a", "party_id": "S", "speaker": {"user_id": "@b:hs"}}),
            json!({"call_id": "a", "party_id": "S", "speaker": {"user_id": 3, "party_id": "D"}}),
            json!({"call_id": "a", "party_id": "S", "speaker": "@b:hs"}),
        ] {
            assert!(ActiveSpeaker::from_content(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn hangup_carries_both_reasons() {
        let h = hangup_content("c", "SFU", HangupReason::UnknownError, "not_a_member");
        assert_eq!(h["reason"], "unknown_error");
        assert_eq!(h[REASON_CODE], "not_a_member");
        assert_eq!(h["version"], "1");
    }

    /// Every ```json block of docs/protocol.md, parsed.
    fn doc_events() -> Vec<Value> {
        let doc = include_str!("../../docs/protocol.md");
        let mut out = Vec::new();
        let mut rest = doc;
        while let Some(start) = rest.find("```json\n") {
            let body = &rest[start + 8..];
            let end = body.find("```").expect("closed block");
            out.push(
                serde_json::from_str(&body[..end])
                    .unwrap_or_else(|e| panic!("{e}: {}", &body[..end])),
            );
            rest = &body[end + 3..];
        }
        out
    }

    #[test]
    fn doc_examples_parse() {
        let codes: Vec<&str> = crate::core::Code::ALL.iter().map(|c| c.as_str()).collect();
        let events = doc_events();
        assert!(events.len() >= 8, "{}", events.len());
        for e in events {
            let c = &e["content"];
            match e["type"].as_str().unwrap() {
                CONFERENCE => {
                    let expected = if c.get("terminated").is_some() {
                        ConferenceState::Terminated
                    } else {
                        ConferenceState::Live {
                            sfu: "@sfu:example.org".into(),
                        }
                    };
                    assert_eq!(ConferenceState::from_content(c), expected);
                }
                CALL_INVITE => {
                    let inv = Invite::from_content(c).unwrap();
                    assert_eq!(
                        (inv.room_id.as_str(), inv.conf_id.as_str()),
                        ("!conf:example.org", "weekly")
                    );
                }
                CALL_ANSWER => {
                    CallIds::from_content(c).unwrap();
                    assert_eq!(c["answer"]["type"], "answer");
                }
                CALL_HANGUP => {
                    CallIds::from_content(c).unwrap();
                    assert!(codes.contains(&c[REASON_CODE].as_str().unwrap()));
                }
                SUBSCRIBE => {
                    Subscribe::from_content(c).unwrap();
                }
                ACTIVE_SPEAKER => {
                    let s = ActiveSpeaker::from_content(c).unwrap();
                    assert_eq!(
                        (
                            s.ids.party_id.as_str(),
                            s.user_id.as_str(),
                            s.party_id.as_str()
                        ),
                        ("SFUDEVICE", "@bob:example.org", "BOBDEVICE")
                    );
                    // Exactly what the SFU writes.
                    assert_eq!(
                        c,
                        &active_speaker_content(
                            &s.ids.call_id,
                            &s.ids.party_id,
                            &s.user_id,
                            &s.party_id
                        )
                    );
                }
                MEMBER_ENDED => {
                    let m = MemberEnded::from_content(c).unwrap();
                    assert_eq!(
                        (m.user_id.as_str(), m.party_id.as_str(), m.reason.as_str()),
                        ("@bob:example.org", "BOBDEVICE", "consent_expired")
                    );
                    assert_eq!(
                        c,
                        &member_ended_content(
                            &m.ids.call_id,
                            &m.ids.party_id,
                            &m.user_id,
                            &m.party_id,
                            &m.call_id,
                            &m.reason
                        )
                    );
                }
                "org.matrix.msc2359.call.keys" => {
                    for k in c["keys"].as_array().unwrap() {
                        assert!(k["index"].as_u64().unwrap() <= 255);
                        let key = k["key"].as_str().unwrap();
                        assert!(!key.ends_with('='), "unpadded");
                        // 28 bytes of key ‖ salt for AEAD_AES_128_GCM: 38 base64 chars.
                        assert_eq!(
                            (k["profile"].as_str().unwrap(), key.len()),
                            ("SRTP_AEAD_AES_128_GCM", 38)
                        );
                    }
                }
                other => panic!("undocumented example type {other}"),
            }
        }
    }
}
