//! The messages, their JSON form, and the decode/encode entry points.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;

use serde::de::{DeserializeOwned, IgnoredAny};
use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;

use super::Fingerprint;
use super::frame::check_len;
use super::types::{
    ConfId, ConferenceSpec, Generation, RequestId, SessionId, SessionSpec, SubscriptionSpec,
};
use super::{
    ControlError, FRAME_HEADER_LEN, MAX_CANDIDATES, MAX_SNAPSHOT_CONFERENCES,
    MAX_SNAPSHOT_SESSIONS, MAX_SOFTWARE_LEN, MAX_STATS_COUNTERS, MAX_TEXT_LEN, PROTOCOL_VERSION,
    clip, invalid,
};

/// One control message: the unit carried by a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// First message each way.
    Hello(Hello),
    /// Signaling → relay: do something, answer with a [`Response`] of the same id.
    Request(Request),
    /// Relay → signaling: the outcome of a [`Request`].
    Response(Response),
    /// Relay → signaling: something happened.
    Notification(NotificationBody),
    /// Either way, just before closing the connection: why.
    Goodbye(Goodbye),
}

/// Which end of the control socket a peer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// blindfold-signaling: the client; sends requests.
    Signaling,
    /// The relay: the server; answers requests, sends notifications.
    Relay,
}

/// The handshake message. Each side sends its own first and checks the peer's with
/// [`Hello::negotiate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// Major protocol version; peers with different majors cannot talk. A decoded
    /// `Hello` always has [`PROTOCOL_VERSION`] (others fail with
    /// [`ControlError::VersionMismatch`]).
    pub version: u32,
    /// Minor version: additions within a major. Each side uses only what the lower of
    /// the two minors defines.
    pub minor: u32,
    /// Free text naming the implementation, e.g. `blindfold-relay/0.1.0`, at most
    /// [`MAX_SOFTWARE_LEN`] bytes.
    pub software: String,
    /// Who is speaking, with the relay's transport details.
    pub role: HelloRole,
}

/// The sender's role, and what the relay announces about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HelloRole {
    /// Sent by blindfold-signaling.
    Signaling,
    /// Sent by the relay.
    Relay(RelayInfo),
}

/// What signaling needs from the relay to write SDP answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayInfo {
    /// SHA-256 fingerprint of the relay's DTLS certificate (`a=fingerprint:sha-256`).
    pub dtls_fingerprint: Fingerprint,
    /// Public UDP addresses to offer as host candidates, 1..=[`MAX_CANDIDATES`].
    pub candidates: Vec<SocketAddr>,
}

impl Hello {
    /// Signaling's hello at this crate's protocol version.
    pub fn signaling(software: impl Into<String>) -> Self {
        Hello {
            version: PROTOCOL_VERSION,
            minor: super::PROTOCOL_MINOR,
            software: clip(software.into(), MAX_SOFTWARE_LEN),
            role: HelloRole::Signaling,
        }
    }

    /// The relay's hello at this crate's protocol version.
    pub fn relay(
        software: impl Into<String>,
        dtls_fingerprint: Fingerprint,
        candidates: Vec<SocketAddr>,
    ) -> Self {
        Hello {
            version: PROTOCOL_VERSION,
            minor: super::PROTOCOL_MINOR,
            software: clip(software.into(), MAX_SOFTWARE_LEN),
            role: HelloRole::Relay(RelayInfo {
                dtls_fingerprint,
                candidates,
            }),
        }
    }

    /// The sender's role.
    pub fn role(&self) -> Role {
        match self.role {
            HelloRole::Signaling => Role::Signaling,
            HelloRole::Relay(_) => Role::Relay,
        }
    }

    /// Checks the peer's hello against ours and returns the minor version to speak.
    ///
    /// Rejects a different major version ([`ControlError::VersionMismatch`]) and a peer
    /// with our own role ([`ControlError::ProtocolViolation`]). Both are fatal: send
    /// the error's [`disposition`](ControlError::disposition) and close.
    pub fn negotiate(&self, peer: &Hello) -> Result<u32, ControlError> {
        if peer.version != self.version {
            return Err(ControlError::VersionMismatch {
                ours: self.version,
                theirs: u64::from(peer.version),
            });
        }
        if peer.role() == self.role() {
            return Err(ControlError::ProtocolViolation {
                reason: format!("peer claims our own role {:?}", self.role()),
            });
        }
        Ok(self.minor.min(peer.minor))
    }

    /// Rejects software text over [`MAX_SOFTWARE_LEN`] and a relay hello without
    /// candidates or with more than [`MAX_CANDIDATES`].
    pub fn validate(&self) -> Result<(), ControlError> {
        if self.software.len() > MAX_SOFTWARE_LEN {
            return Err(invalid(format!(
                "hello: software is {} bytes, at most {MAX_SOFTWARE_LEN}",
                self.software.len()
            )));
        }
        if let HelloRole::Relay(info) = &self.role
            && (info.candidates.is_empty() || info.candidates.len() > MAX_CANDIDATES)
        {
            return Err(invalid(format!(
                "hello: a relay announces 1..={MAX_CANDIDATES} candidates, got {}",
                info.candidates.len()
            )));
        }
        Ok(())
    }
}

/// A request and the id its response will carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Chosen by signaling; echoed in the [`Response`].
    pub id: RequestId,
    /// What to do.
    pub body: RequestBody,
}

/// The requests. Every mutation is idempotent and carries a [`Generation`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestBody {
    /// `upsert_conference`: create the conference, or leave it as it is.
    UpsertConference {
        /// Generation of this change.
        generation: Generation,
        /// The conference.
        conference: ConferenceSpec,
    },
    /// `remove_conference`: remove the conference and every session in it. Removing a
    /// conference that does not exist succeeds.
    RemoveConference {
        /// Generation of this change.
        generation: Generation,
        /// The conference.
        conf_id: ConfId,
    },
    /// `upsert_session`: create or update a session.
    UpsertSession {
        /// Generation of this change.
        generation: Generation,
        /// The whole desired state of the session.
        session: SessionSpec,
    },
    /// `remove_session`: end a session (reported as `session_closed`, reason
    /// `removed`). Removing one that does not exist succeeds.
    RemoveSession {
        /// Generation of this change.
        generation: Generation,
        /// The session.
        session_id: SessionId,
    },
    /// `set_subscription`: replace what a session receives at full resolution.
    SetSubscription {
        /// Generation of this change.
        generation: Generation,
        /// The session's subscription.
        subscription: SubscriptionSpec,
    },
    /// `snapshot`: the complete desired state, sent after (re)connecting.
    Snapshot(Snapshot),
    /// `get_stats`: answered with [`ResponseBody::Stats`].
    GetStats,
}

/// The complete desired state of the relay, for reconciliation after a reconnect.
///
/// Validated: ids are unique within each list, every session's conference is listed,
/// every subscription's session is listed (at most one subscription per session), and
/// the lists are bounded. A session without a subscription receives thumbnails only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Snapshot {
    /// Generation of the whole snapshot; every object in it takes this generation.
    pub generation: Generation,
    /// All conferences, at most [`MAX_SNAPSHOT_CONFERENCES`].
    pub conferences: Vec<ConferenceSpec>,
    /// All sessions, at most [`MAX_SNAPSHOT_SESSIONS`].
    pub sessions: Vec<SessionSpec>,
    /// Subscriptions, at most one per session.
    pub subscriptions: Vec<SubscriptionSpec>,
}

impl Snapshot {
    /// Rejects oversize lists, duplicate ids, dangling references and any invalid
    /// session or subscription (see [`SessionSpec::validate`],
    /// [`SubscriptionSpec::validate`]).
    pub fn validate(&self) -> Result<(), ControlError> {
        if self.conferences.len() > MAX_SNAPSHOT_CONFERENCES {
            return Err(invalid(format!(
                "snapshot: {} conferences, at most {MAX_SNAPSHOT_CONFERENCES}",
                self.conferences.len()
            )));
        }
        if self.sessions.len() > MAX_SNAPSHOT_SESSIONS {
            return Err(invalid(format!(
                "snapshot: {} sessions, at most {MAX_SNAPSHOT_SESSIONS}",
                self.sessions.len()
            )));
        }
        if self.subscriptions.len() > self.sessions.len() {
            return Err(invalid(format!(
                "snapshot: {} subscriptions for {} sessions",
                self.subscriptions.len(),
                self.sessions.len()
            )));
        }
        let mut confs = HashSet::with_capacity(self.conferences.len());
        for c in &self.conferences {
            if !confs.insert(&c.conf_id) {
                return Err(invalid(format!(
                    "snapshot: conference {} listed twice",
                    c.conf_id
                )));
            }
        }
        let mut sessions = HashSet::with_capacity(self.sessions.len());
        for s in &self.sessions {
            if !sessions.insert(&s.session_id) {
                return Err(invalid(format!(
                    "snapshot: session {} listed twice",
                    s.session_id
                )));
            }
            if !confs.contains(&s.conf_id) {
                return Err(invalid(format!(
                    "snapshot: session {} is in conference {}, which is not listed",
                    s.session_id, s.conf_id
                )));
            }
            s.validate()?;
        }
        let mut subscribed = HashSet::with_capacity(self.subscriptions.len());
        for sub in &self.subscriptions {
            if !sessions.contains(&sub.session_id) {
                return Err(invalid(format!(
                    "snapshot: subscription for session {}, which is not listed",
                    sub.session_id
                )));
            }
            if !subscribed.insert(&sub.session_id) {
                return Err(invalid(format!(
                    "snapshot: two subscriptions for session {}",
                    sub.session_id
                )));
            }
            sub.validate()?;
        }
        Ok(())
    }
}

impl RequestBody {
    /// The method name on the wire.
    pub fn method(&self) -> &'static str {
        match self {
            RequestBody::UpsertConference { .. } => "upsert_conference",
            RequestBody::RemoveConference { .. } => "remove_conference",
            RequestBody::UpsertSession { .. } => "upsert_session",
            RequestBody::RemoveSession { .. } => "remove_session",
            RequestBody::SetSubscription { .. } => "set_subscription",
            RequestBody::Snapshot(_) => "snapshot",
            RequestBody::GetStats => "get_stats",
        }
    }

    /// The generation of a mutating request; `None` for `get_stats`.
    pub fn generation(&self) -> Option<Generation> {
        match self {
            RequestBody::UpsertConference { generation, .. }
            | RequestBody::RemoveConference { generation, .. }
            | RequestBody::UpsertSession { generation, .. }
            | RequestBody::RemoveSession { generation, .. }
            | RequestBody::SetSubscription { generation, .. } => Some(*generation),
            RequestBody::Snapshot(s) => Some(s.generation),
            RequestBody::GetStats => None,
        }
    }

    /// Checks the cross-field rules of the request's contents (see
    /// [`SessionSpec::validate`], [`SubscriptionSpec::validate`],
    /// [`Snapshot::validate`]).
    pub fn validate(&self) -> Result<(), ControlError> {
        match self {
            RequestBody::UpsertSession { session, .. } => session.validate(),
            RequestBody::SetSubscription { subscription, .. } => subscription.validate(),
            RequestBody::Snapshot(s) => s.validate(),
            RequestBody::UpsertConference { .. }
            | RequestBody::RemoveConference { .. }
            | RequestBody::RemoveSession { .. }
            | RequestBody::GetStats => Ok(()),
        }
    }
}

/// The outcome of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The request's id.
    pub id: RequestId,
    /// What happened.
    pub result: Result<ResponseBody, ErrorReply>,
}

/// A successful outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ResponseBody {
    /// Done (or nothing to do: the request was a repeat).
    Ok,
    /// The answer to `get_stats`.
    Stats(StatsReport),
}

/// A failed request: a machine-readable code and a human-readable message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorReply {
    /// What kind of failure.
    pub code: ErrorCode,
    /// What exactly is wrong, at most [`MAX_TEXT_LEN`] bytes.
    pub message: String,
}

impl ErrorReply {
    /// An error reply; the message is clipped to [`MAX_TEXT_LEN`] bytes.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ErrorReply {
            code,
            message: clip(message.into(), MAX_TEXT_LEN),
        }
    }
}

/// Error codes of error responses and goodbyes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// The request's parameters are malformed or violate a rule; the message says which.
    BadRequest,
    /// The method is not one this version knows.
    UnknownMethod,
    /// The request's generation is older than the state the relay holds.
    StaleGeneration,
    /// The request refers to something that does not exist (e.g. a session in an
    /// unknown conference).
    NotFound,
    /// The relay is at capacity.
    Overloaded,
    /// The relay failed; not the request's fault.
    Internal,
    /// Goodbye: the peer speaks another major version.
    VersionMismatch,
    /// Goodbye: a frame could not be parsed as a message (and had no usable id).
    Malformed,
    /// Goodbye: a length prefix was zero or above the maximum.
    BadFrame,
    /// Goodbye: a message arrived out of order (no hello first, a second hello, a
    /// message in the wrong direction).
    ProtocolViolation,
    /// Goodbye: the sender is shutting down.
    Shutdown,
    /// A code this version does not know (from a newer peer); never sent.
    #[serde(other)]
    Unknown,
}

/// Counters the relay reports (in a `get_stats` response and a `stats` notification).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatsReport {
    /// Conferences.
    pub conferences: u64,
    /// Sessions, in any state.
    pub sessions: u64,
    /// Sessions that passed ICE and DTLS.
    pub connected_sessions: u64,
    /// Datagrams received.
    pub rx_packets: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Datagrams sent.
    pub tx_packets: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Dropped datagrams by reason (the drop-reason counters), at most
    /// [`MAX_STATS_COUNTERS`] entries with names of at most 64 printable ASCII bytes.
    #[serde(default)]
    pub drops: BTreeMap<String, u64>,
}

impl StatsReport {
    /// Rejects too many drop counters and bad counter names.
    pub fn validate(&self) -> Result<(), ControlError> {
        if self.drops.len() > MAX_STATS_COUNTERS {
            return Err(invalid(format!(
                "stats: {} drop counters, at most {MAX_STATS_COUNTERS}",
                self.drops.len()
            )));
        }
        for k in self.drops.keys() {
            if k.is_empty() || k.len() > 64 || !k.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
                return Err(invalid(
                    "stats: drop counter names are 1..=64 bytes of printable ASCII",
                ));
            }
        }
        Ok(())
    }
}

/// Why a session ended or failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum EndReason {
    /// No ICE connectivity check arrived in time.
    IceTimeout,
    /// Connected, then silent for 30 s (RFC 7675 consent).
    ConsentExpired,
    /// The DTLS handshake failed.
    DtlsFailed,
    /// The client certificate does not match the session's `dtls_fingerprint`.
    FingerprintMismatch,
    /// No SRTP protection profile in common.
    NoSrtpProfile,
    /// Signaling removed it (`remove_session`, `remove_conference`, or missing from a
    /// snapshot).
    Removed,
    /// An upsert changed its credentials, fingerprint or conference, so it restarted.
    Replaced,
    /// The relay is shutting down.
    Shutdown,
    /// The participant closed its DTLS association (close_notify): it left.
    Closed,
    /// `session_failed` only: the relay could not start the session's ICE agent from
    /// its credentials. Also what a reason this version does not know (from a newer
    /// peer) decodes as.
    #[serde(other)]
    Other,
}

/// What the relay tells signaling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotificationBody {
    /// `session_connected`: ICE nominated `addr` and DTLS completed.
    SessionConnected {
        /// The session.
        session_id: SessionId,
        /// The participant's nominated address.
        addr: SocketAddr,
    },
    /// `session_failed`: the session never connected.
    SessionFailed {
        /// The session.
        session_id: SessionId,
        /// Why.
        reason: EndReason,
        /// Details for logs, at most [`MAX_TEXT_LEN`] bytes, may be empty.
        detail: String,
    },
    /// `session_closed`: the session ended and is gone from the relay.
    SessionClosed {
        /// The session.
        session_id: SessionId,
        /// Why.
        reason: EndReason,
    },
    /// `active_speaker`: the loudest session in a conference changed.
    ActiveSpeaker {
        /// The conference.
        conf_id: ConfId,
        /// Its new active speaker.
        session_id: SessionId,
    },
    /// `stats`: periodic counters.
    Stats(StatsReport),
}

impl NotificationBody {
    /// The event name on the wire.
    pub fn event(&self) -> &'static str {
        match self {
            NotificationBody::SessionConnected { .. } => "session_connected",
            NotificationBody::SessionFailed { .. } => "session_failed",
            NotificationBody::SessionClosed { .. } => "session_closed",
            NotificationBody::ActiveSpeaker { .. } => "active_speaker",
            NotificationBody::Stats(_) => "stats",
        }
    }

    /// Rejects a `detail` over [`MAX_TEXT_LEN`] bytes and invalid stats.
    pub fn validate(&self) -> Result<(), ControlError> {
        match self {
            NotificationBody::SessionFailed { detail, .. } if detail.len() > MAX_TEXT_LEN => {
                Err(invalid(format!(
                    "session_failed: detail is {} bytes, at most {MAX_TEXT_LEN}",
                    detail.len()
                )))
            }
            NotificationBody::Stats(s) => s.validate(),
            _ => Ok(()),
        }
    }
}

/// Sent just before closing: why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Goodbye {
    /// Why, for machines.
    pub code: ErrorCode,
    /// Why, for people; at most [`MAX_TEXT_LEN`] bytes.
    pub message: String,
}

impl Goodbye {
    /// A goodbye; the message is clipped to [`MAX_TEXT_LEN`] bytes.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Goodbye {
            code,
            message: clip(message.into(), MAX_TEXT_LEN),
        }
    }
}

impl Message {
    /// An error response to request `id`.
    pub fn error_response(id: RequestId, code: ErrorCode, message: impl Into<String>) -> Self {
        Message::Response(Response {
            id,
            result: Err(ErrorReply::new(code, message)),
        })
    }

    /// A success response to request `id`.
    pub fn ok_response(id: RequestId) -> Self {
        Message::Response(Response {
            id,
            result: Ok(ResponseBody::Ok),
        })
    }

    /// Checks every rule a decoded message satisfies (bounded lists and text, no
    /// duplicates, consistent references). Does not check the hello's version, so a
    /// test can encode a hello from another version.
    pub fn validate(&self) -> Result<(), ControlError> {
        match self {
            Message::Hello(h) => h.validate(),
            Message::Request(r) => r.body.validate(),
            Message::Response(r) => match &r.result {
                Ok(ResponseBody::Stats(s)) => s.validate(),
                Ok(ResponseBody::Ok) => Ok(()),
                Err(e) => check_text("error message", &e.message),
            },
            Message::Notification(n) => n.validate(),
            Message::Goodbye(g) => check_text("goodbye message", &g.message),
        }
    }

    /// Checks that a peer in `receiver`'s role may receive this message now, given
    /// whether the peer's hello has been received already.
    ///
    /// Rejects with [`ControlError::ProtocolViolation`] (fatal): anything but a hello
    /// or goodbye before the hello, a second hello, a request sent to signaling, and a
    /// response or notification sent to the relay.
    pub fn check_order(&self, receiver: Role, hello_received: bool) -> Result<(), ControlError> {
        let violation = |reason: &str| {
            Err(ControlError::ProtocolViolation {
                reason: reason.to_owned(),
            })
        };
        match (self, hello_received) {
            (Message::Goodbye(_), _) => Ok(()),
            (Message::Hello(_), false) => Ok(()),
            (Message::Hello(_), true) => violation("second hello"),
            (_, false) => violation("expected hello first"),
            (Message::Request(_), true) if receiver == Role::Relay => Ok(()),
            (Message::Response(_) | Message::Notification(_), true)
                if receiver == Role::Signaling =>
            {
                Ok(())
            }
            _ => violation("message sent in the wrong direction"),
        }
    }
}

fn check_text(what: &str, s: &str) -> Result<(), ControlError> {
    if s.len() > MAX_TEXT_LEN {
        return Err(invalid(format!(
            "{what} is {} bytes, at most {MAX_TEXT_LEN}",
            s.len()
        )));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------
// Encoding: one JSON object per message, `type` first.

/// Params of the mutating requests and data of the notifications; the field names
/// are the wire names. Generic so encoding borrows (`&SessionSpec`) and decoding owns.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpsertConferenceParams<C> {
    generation: Generation,
    conference: C,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RemoveConferenceParams<C> {
    generation: Generation,
    conf_id: C,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpsertSessionParams<S> {
    generation: Generation,
    session: S,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RemoveSessionParams<S> {
    generation: Generation,
    session_id: S,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SetSubscriptionParams<S> {
    generation: Generation,
    subscription: S,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Empty {}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConnectedData<S> {
    session_id: S,
    addr: SocketAddr,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FailedData<S, T> {
    session_id: S,
    reason: EndReason,
    #[serde(default)]
    detail: T,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClosedData<S> {
    session_id: S,
    reason: EndReason,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SpeakerData<C, S> {
    conf_id: C,
    session_id: S,
}

impl Serialize for Message {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        match self {
            Message::Hello(h) => {
                m.serialize_entry("type", "hello")?;
                m.serialize_entry("version", &h.version)?;
                m.serialize_entry("minor", &h.minor)?;
                m.serialize_entry("software", &h.software)?;
                match &h.role {
                    HelloRole::Signaling => m.serialize_entry("role", &Role::Signaling)?,
                    HelloRole::Relay(info) => {
                        m.serialize_entry("role", &Role::Relay)?;
                        m.serialize_entry("dtls_fingerprint", &info.dtls_fingerprint)?;
                        m.serialize_entry("candidates", &info.candidates)?;
                    }
                }
            }
            Message::Request(r) => {
                m.serialize_entry("type", "request")?;
                m.serialize_entry("id", &r.id)?;
                m.serialize_entry("method", r.body.method())?;
                match &r.body {
                    RequestBody::UpsertConference {
                        generation,
                        conference,
                    } => m.serialize_entry(
                        "params",
                        &UpsertConferenceParams {
                            generation: *generation,
                            conference,
                        },
                    )?,
                    RequestBody::RemoveConference {
                        generation,
                        conf_id,
                    } => m.serialize_entry(
                        "params",
                        &RemoveConferenceParams {
                            generation: *generation,
                            conf_id,
                        },
                    )?,
                    RequestBody::UpsertSession {
                        generation,
                        session,
                    } => m.serialize_entry(
                        "params",
                        &UpsertSessionParams {
                            generation: *generation,
                            session,
                        },
                    )?,
                    RequestBody::RemoveSession {
                        generation,
                        session_id,
                    } => m.serialize_entry(
                        "params",
                        &RemoveSessionParams {
                            generation: *generation,
                            session_id,
                        },
                    )?,
                    RequestBody::SetSubscription {
                        generation,
                        subscription,
                    } => m.serialize_entry(
                        "params",
                        &SetSubscriptionParams {
                            generation: *generation,
                            subscription,
                        },
                    )?,
                    RequestBody::Snapshot(snap) => m.serialize_entry("params", snap)?,
                    RequestBody::GetStats => m.serialize_entry("params", &Empty {})?,
                }
            }
            Message::Response(r) => {
                m.serialize_entry("type", "response")?;
                m.serialize_entry("id", &r.id)?;
                match &r.result {
                    Ok(body) => m.serialize_entry("result", body)?,
                    Err(e) => m.serialize_entry("error", e)?,
                }
            }
            Message::Notification(n) => {
                m.serialize_entry("type", "notification")?;
                m.serialize_entry("event", n.event())?;
                match n {
                    NotificationBody::SessionConnected { session_id, addr } => m.serialize_entry(
                        "data",
                        &ConnectedData {
                            session_id,
                            addr: *addr,
                        },
                    )?,
                    NotificationBody::SessionFailed {
                        session_id,
                        reason,
                        detail,
                    } => m.serialize_entry(
                        "data",
                        &FailedData {
                            session_id,
                            reason: *reason,
                            detail,
                        },
                    )?,
                    NotificationBody::SessionClosed { session_id, reason } => m.serialize_entry(
                        "data",
                        &ClosedData {
                            session_id,
                            reason: *reason,
                        },
                    )?,
                    NotificationBody::ActiveSpeaker {
                        conf_id,
                        session_id,
                    } => m.serialize_entry(
                        "data",
                        &SpeakerData {
                            conf_id,
                            session_id,
                        },
                    )?,
                    NotificationBody::Stats(st) => m.serialize_entry("data", st)?,
                }
            }
            Message::Goodbye(g) => {
                m.serialize_entry("type", "goodbye")?;
                m.serialize_entry("code", &g.code)?;
                m.serialize_entry("message", &g.message)?;
            }
        }
        m.end()
    }
}

/// Appends `msg` as one frame (length prefix + JSON body) to `out`.
///
/// Rejects a message that breaks a protocol rule ([`ControlError::Invalid`], see
/// [`Message::validate`]) and one whose body would exceed
/// [`MAX_FRAME_LEN`](super::MAX_FRAME_LEN) ([`ControlError::FrameTooLarge`]); `out` is
/// unchanged then.
pub fn encode(msg: &Message, out: &mut Vec<u8>) -> Result<(), ControlError> {
    msg.validate()?;
    let start = out.len();
    out.extend_from_slice(&[0; FRAME_HEADER_LEN]);
    if let Err(e) = serde_json::to_writer(&mut *out, msg) {
        out.truncate(start);
        return Err(invalid(format!("cannot serialize: {e}")));
    }
    let body_len = out.len() - start - FRAME_HEADER_LEN;
    match check_len(body_len) {
        Ok(len) => {
            if let Some(prefix) = out.get_mut(start..start + FRAME_HEADER_LEN) {
                prefix.copy_from_slice(&len.to_be_bytes());
            }
            Ok(())
        }
        Err(e) => {
            out.truncate(start);
            Err(e)
        }
    }
}

// ---------------------------------------------------------------------------------
// Decoding: a lenient peek for what the error reply needs (type, id, method, version),
// then a strict parse of the whole body for that type.

#[derive(Deserialize)]
struct Peek {
    #[serde(rename = "type")]
    kind: Option<Value>,
    id: Option<Value>,
    method: Option<Value>,
    version: Option<Value>,
}

/// Unlike every other message, a hello ignores fields it does not know: both sides
/// send theirs before either knows the other's minor version, so a field a later minor
/// adds to the hello must not make an older peer close the connection.
#[derive(Deserialize)]
struct HelloIn {
    #[serde(rename = "type")]
    _type: IgnoredAny,
    version: u32,
    #[serde(default)]
    minor: u32,
    #[serde(default)]
    software: String,
    role: Role,
    #[serde(default)]
    dtls_fingerprint: Option<Fingerprint>,
    #[serde(default)]
    candidates: Option<Vec<SocketAddr>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestIn<P> {
    #[serde(rename = "type")]
    _type: IgnoredAny,
    #[serde(rename = "id")]
    _id: IgnoredAny,
    #[serde(rename = "method")]
    _method: IgnoredAny,
    params: P,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResponseIn {
    #[serde(rename = "type")]
    _type: IgnoredAny,
    id: RequestId,
    #[serde(default)]
    result: Option<ResponseBody>,
    #[serde(default)]
    error: Option<ErrorReply>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NotificationIn<P> {
    #[serde(rename = "type")]
    _type: IgnoredAny,
    #[serde(rename = "event")]
    _event: IgnoredAny,
    data: P,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GoodbyeIn {
    #[serde(rename = "type")]
    _type: IgnoredAny,
    code: ErrorCode,
    message: String,
}

fn malformed(reason: impl Into<String>) -> ControlError {
    ControlError::Malformed {
        reason: clip(reason.into(), MAX_TEXT_LEN),
    }
}

/// Parses one frame body into a valid [`Message`].
///
/// On error, [`ControlError::disposition`] says what to do:
/// - [`ControlError::UnknownMethod`], [`ControlError::BadRequest`]: a request whose `id`
///   could be read but whose method is unknown, or whose envelope or params are wrong
///   (unknown or missing field, wrong type, a value breaking a rule such as an invalid
///   ufrag, fingerprint or a duplicate SSRC). Answer with the error response and go on.
/// - [`ControlError::VersionMismatch`]: a hello with another major version. Close.
/// - [`ControlError::Malformed`]: not JSON, not an object, no known `type`, a request
///   without a readable `id`, or an invalid response, notification, hello or goodbye.
///   Close.
pub fn decode(body: &[u8]) -> Result<Message, ControlError> {
    // Only objects: serde would also accept a struct written as a JSON array.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(malformed("message is not a JSON object"));
    }
    let peek: Peek =
        serde_json::from_slice(body).map_err(|e| malformed(format!("not a message: {e}")))?;
    let kind = match &peek.kind {
        Some(Value::String(s)) => s.as_str(),
        _ => return Err(malformed("missing string field `type`")),
    };
    match kind {
        "hello" => decode_hello(&peek, body),
        "request" => {
            let id = peek
                .id
                .as_ref()
                .and_then(Value::as_u64)
                .map(RequestId)
                .ok_or_else(|| malformed("request without an unsigned integer `id`"))?;
            let bad = |reason: String| ControlError::BadRequest {
                id,
                reason: clip(reason, MAX_TEXT_LEN),
            };
            let method = match &peek.method {
                Some(Value::String(m)) => m.as_str(),
                _ => return Err(bad("missing string field `method`".into())),
            };
            let body = decode_request_body(id, method, body).map_err(|e| match e {
                ControlError::UnknownMethod { .. } => e,
                other => bad(other.to_string()),
            })?;
            body.validate().map_err(|e| bad(e.to_string()))?;
            Ok(Message::Request(Request { id, body }))
        }
        "response" => {
            let r: ResponseIn = strict(body)?;
            let result = match (r.result, r.error) {
                (Some(ok), None) => Ok(ok),
                (None, Some(err)) => Err(err),
                _ => {
                    return Err(malformed(
                        "a response has exactly one of `result` and `error`",
                    ));
                }
            };
            checked(Message::Response(Response { id: r.id, result }))
        }
        "notification" => checked(Message::Notification(decode_notification(body)?)),
        "goodbye" => {
            let g: GoodbyeIn = strict(body)?;
            checked(Message::Goodbye(Goodbye {
                code: g.code,
                message: g.message,
            }))
        }
        other => Err(malformed(format!(
            "unknown message type `{}`",
            clip(other.to_owned(), 64)
        ))),
    }
}

fn strict<T: DeserializeOwned>(body: &[u8]) -> Result<T, ControlError> {
    serde_json::from_slice(body).map_err(|e| malformed(e.to_string()))
}

fn checked(msg: Message) -> Result<Message, ControlError> {
    msg.validate().map_err(|e| malformed(e.to_string()))?;
    Ok(msg)
}

fn decode_hello(peek: &Peek, body: &[u8]) -> Result<Message, ControlError> {
    // The version is checked before anything else: a hello from another major version
    // may have other fields, and deserves "version mismatch", not "unknown field".
    let theirs = peek
        .version
        .as_ref()
        .and_then(Value::as_u64)
        .ok_or_else(|| malformed("hello without an unsigned integer `version`"))?;
    if theirs != u64::from(PROTOCOL_VERSION) {
        return Err(ControlError::VersionMismatch {
            ours: PROTOCOL_VERSION,
            theirs,
        });
    }
    let h: HelloIn = strict(body)?;
    let role = match (h.role, h.dtls_fingerprint, h.candidates) {
        (Role::Signaling, None, None) => HelloRole::Signaling,
        (Role::Relay, Some(dtls_fingerprint), Some(candidates)) => HelloRole::Relay(RelayInfo {
            dtls_fingerprint,
            candidates,
        }),
        (Role::Signaling, ..) => {
            return Err(malformed(
                "a signaling hello has no `dtls_fingerprint` or `candidates`",
            ));
        }
        (Role::Relay, ..) => {
            return Err(malformed(
                "a relay hello needs `dtls_fingerprint` and `candidates`",
            ));
        }
    };
    checked(Message::Hello(Hello {
        version: h.version,
        minor: h.minor,
        software: h.software,
        role,
    }))
}

fn decode_request_body(
    id: RequestId,
    method: &str,
    body: &[u8],
) -> Result<RequestBody, ControlError> {
    fn params<P: DeserializeOwned>(body: &[u8]) -> Result<P, ControlError> {
        serde_json::from_slice::<RequestIn<P>>(body)
            .map(|r| r.params)
            .map_err(|e| invalid(e.to_string()))
    }
    Ok(match method {
        "upsert_conference" => {
            let p: UpsertConferenceParams<ConferenceSpec> = params(body)?;
            RequestBody::UpsertConference {
                generation: p.generation,
                conference: p.conference,
            }
        }
        "remove_conference" => {
            let p: RemoveConferenceParams<ConfId> = params(body)?;
            RequestBody::RemoveConference {
                generation: p.generation,
                conf_id: p.conf_id,
            }
        }
        "upsert_session" => {
            let p: UpsertSessionParams<SessionSpec> = params(body)?;
            RequestBody::UpsertSession {
                generation: p.generation,
                session: p.session,
            }
        }
        "remove_session" => {
            let p: RemoveSessionParams<SessionId> = params(body)?;
            RequestBody::RemoveSession {
                generation: p.generation,
                session_id: p.session_id,
            }
        }
        "set_subscription" => {
            let p: SetSubscriptionParams<SubscriptionSpec> = params(body)?;
            RequestBody::SetSubscription {
                generation: p.generation,
                subscription: p.subscription,
            }
        }
        "snapshot" => RequestBody::Snapshot(params(body)?),
        "get_stats" => {
            let Empty {} = params(body)?;
            RequestBody::GetStats
        }
        other => {
            return Err(ControlError::UnknownMethod {
                id,
                method: clip(other.to_owned(), 64),
            });
        }
    })
}

fn decode_notification(body: &[u8]) -> Result<NotificationBody, ControlError> {
    #[derive(Deserialize)]
    struct EventPeek {
        event: Option<Value>,
    }
    fn data<P: DeserializeOwned>(body: &[u8]) -> Result<P, ControlError> {
        strict::<NotificationIn<P>>(body).map(|n| n.data)
    }
    let peek: EventPeek = strict(body)?;
    let event = match &peek.event {
        Some(Value::String(e)) => e.as_str(),
        _ => return Err(malformed("notification without a string `event`")),
    };
    Ok(match event {
        "session_connected" => {
            let d: ConnectedData<SessionId> = data(body)?;
            NotificationBody::SessionConnected {
                session_id: d.session_id,
                addr: d.addr,
            }
        }
        "session_failed" => {
            let d: FailedData<SessionId, String> = data(body)?;
            NotificationBody::SessionFailed {
                session_id: d.session_id,
                reason: d.reason,
                detail: d.detail,
            }
        }
        "session_closed" => {
            let d: ClosedData<SessionId> = data(body)?;
            NotificationBody::SessionClosed {
                session_id: d.session_id,
                reason: d.reason,
            }
        }
        "active_speaker" => {
            let d: SpeakerData<ConfId, SessionId> = data(body)?;
            NotificationBody::ActiveSpeaker {
                conf_id: d.conf_id,
                session_id: d.session_id,
            }
        }
        "stats" => NotificationBody::Stats(data(body)?),
        other => {
            return Err(malformed(format!(
                "unknown notification `{}`",
                clip(other.to_owned(), 64)
            )));
        }
    })
}
