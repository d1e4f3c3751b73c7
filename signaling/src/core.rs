//! The SFU's call logic, sans-IO: Matrix sync batches and relay notifications in,
//! [`Action`]s out.
//!
//! [`Core`] never does IO and never reads the clock: the service feeds it
//! [`handle_sync`](Core::handle_sync) with each `/sync` response and the wall-clock
//! time (invite lifetimes are wall-clock, against the homeserver's `origin_server_ts`),
//! [`handle_relay`](Core::handle_relay) with relay notifications, and drains
//! [`poll_action`](Core::poll_action) after each call. Randomness (ICE credentials,
//! session ids) comes from a function given to [`Core::new`], so tests are repeatable.
//!
//! The desired state is the set of live [`Call`]s; each is one relay session. From
//! it come the relay [`snapshot`](Core::snapshot) after a (re)connect and the rows the
//! service persists ([`Action::Persist`]). Whether a call may stay is decided in one
//! place, [`Core::reconcile`], after every batch: a caller who left the conference room,
//! a conference that ended or moved to another SFU, a DM the SFU left — each ends the
//! call with a hangup naming why.
//!
//! ```
//! use blindfold_signaling::core::{Core, CoreConfig, Action};
//! use blindfold_signaling::sync::SyncResponse;
//!
//! let cfg = CoreConfig::new("@sfu:example.org", "SFUDEVICE");
//! let mut core = Core::new(cfg, Box::new(|buf: &mut [u8]| buf.fill(7)));
//! let batch: SyncResponse = serde_json::from_str(r#"{"next_batch":"s1","rooms":{"invite":{
//!   "!dm:example.org":{"invite_state":{"events":[{"type":"m.room.member",
//!   "sender":"@alice:example.org","state_key":"@sfu:example.org",
//!   "content":{"membership":"invite","is_direct":true}}]}}}}}"#).unwrap();
//! core.handle_sync(&batch, 1_700_000_000_000, false);
//! assert_eq!(core.poll_action(), Some(Action::JoinRoom("!dm:example.org".into())));
//! ```

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;

use blindfold_relay::control::{
    ConfId, ConferenceSpec, EndReason, Fingerprint, FullSet, Generation, NotificationBody,
    RelayInfo, RequestBody, SessionId, SessionSpec, Snapshot, SubscriptionSpec,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::events::{self, CallIds, ConferenceState, HangupReason, Invite, InviteError, Subscribe};
use crate::sdp::{self, AnswerParams, OfferLimits};
use crate::sync::{Event, SyncResponse};

/// Who may use the SFU: users listed by id, or every user of a listed server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList {
    /// Full user ids, `@user:server`.
    pub users: Vec<String>,
    /// Server names; a user id ending in `:server` is allowed.
    pub servers: Vec<String>,
}

impl AllowList {
    /// True if `user` may invite the SFU into rooms and call it.
    pub fn allows(&self, user: &str) -> bool {
        self.users.iter().any(|u| u == user)
            || server_of(user).is_some_and(|s| self.servers.iter().any(|a| a == s))
    }
}

/// The server name of a user id (everything after the first `:`).
pub fn server_of(user: &str) -> Option<&str> {
    user.split_once(':')
        .map(|(_, s)| s)
        .filter(|s| !s.is_empty())
}

/// Capacity and abuse limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Live calls on this SFU.
    pub max_calls: usize,
    /// Live calls in one conference.
    pub max_calls_per_conference: usize,
    /// Live calls of one user (all devices, all conferences).
    pub max_calls_per_user: usize,
    /// Invites one user may send per minute (answered or not).
    pub invites_per_user_per_minute: usize,
    /// Largest SDP offer, bytes.
    pub max_sdp_bytes: usize,
    /// Rooms the SFU may be in (conference rooms and DMs, joined or being joined): every
    /// room joined is state it keeps and syncs for good, so past this an invite is
    /// declined. A DM stays joined while its caller is in it, so this also bounds the
    /// distinct callers a long-lived SFU serves: well above `max_calls`' range.
    pub max_rooms: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_calls: 1000,
            max_calls_per_conference: 100,
            max_calls_per_user: 4,
            invites_per_user_per_minute: 20,
            max_sdp_bytes: 16 * 1024,
            max_rooms: 10_000,
        }
    }
}

/// What [`Core`] needs to know about itself and its policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoreConfig {
    /// The SFU's own user id.
    pub user_id: String,
    /// Its `party_id` in call events: its device id.
    pub party_id: String,
    /// Who may invite it into rooms and call it.
    pub allow: AllowList,
    /// Limits.
    pub limits: Limits,
}

impl CoreConfig {
    /// Defaults: users of the SFU's own server only, [`Limits::default`].
    pub fn new(user_id: &str, party_id: &str) -> Self {
        CoreConfig {
            user_id: user_id.to_owned(),
            party_id: party_id.to_owned(),
            allow: AllowList {
                users: Vec::new(),
                servers: server_of(user_id).into_iter().map(str::to_owned).collect(),
            },
            limits: Limits::default(),
        }
    }
}

/// Why a call was refused or ended: the machine code in `org.matrix.msc2359.reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Code {
    /// The caller is not joined to the conference room.
    NotAMember,
    /// The room has no such conference (or the SFU is not in the room).
    NoSuchConference,
    /// The conference has ended.
    ConferenceTerminated,
    /// The conference names another SFU.
    WrongSfu,
    /// The invite or its SDP offer is malformed.
    BadOffer,
    /// A capacity limit (SFU, conference, or the caller's open calls) is reached.
    OverCapacity,
    /// The caller sent too many invites in the last minute.
    RateLimited,
    /// The caller is not on the SFU's allow-list.
    NotAllowed,
    /// The invite came in a room where others than the caller and the SFU are joined
    /// or invited (they would read the answer's ICE credentials).
    NotADm,
    /// The invite was past its lifetime when the SFU saw it.
    InviteExpired,
    /// The relay could not take the session.
    RelayUnavailable,
    /// The caller left the conference room.
    LeftConference,
    /// A newer call from the same device to the same conference replaced this one.
    Replaced,
    /// No ICE check arrived in time.
    IceTimeout,
    /// Connected, then silent past consent.
    ConsentExpired,
    /// The DTLS handshake failed.
    DtlsFailed,
    /// The DTLS certificate did not match the offer's fingerprint.
    FingerprintMismatch,
    /// No SRTP profile in common.
    NoSrtpProfile,
}

impl Code {
    /// The wire value.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::NotAMember => "not_a_member",
            Code::NoSuchConference => "no_such_conference",
            Code::ConferenceTerminated => "conference_terminated",
            Code::WrongSfu => "wrong_sfu",
            Code::BadOffer => "bad_offer",
            Code::OverCapacity => "over_capacity",
            Code::RateLimited => "rate_limited",
            Code::NotAllowed => "not_allowed",
            Code::NotADm => "not_a_dm",
            Code::InviteExpired => "invite_expired",
            Code::RelayUnavailable => "relay_unavailable",
            Code::LeftConference => "left_conference",
            Code::Replaced => "replaced",
            Code::IceTimeout => "ice_timeout",
            Code::ConsentExpired => "consent_expired",
            Code::DtlsFailed => "dtls_failed",
            Code::FingerprintMismatch => "fingerprint_mismatch",
            Code::NoSrtpProfile => "no_srtp_profile",
        }
    }

    /// The spec's `reason` that goes with it.
    pub fn hangup_reason(self) -> HangupReason {
        match self {
            Code::InviteExpired => HangupReason::InviteTimeout,
            Code::IceTimeout => HangupReason::IceTimeout,
            Code::ConsentExpired
            | Code::DtlsFailed
            | Code::FingerprintMismatch
            | Code::NoSrtpProfile => HangupReason::IceFailed,
            _ => HangupReason::UnknownError,
        }
    }

    /// Every code, for metrics and docs.
    pub const ALL: [Code; 18] = [
        Code::NotAMember,
        Code::NoSuchConference,
        Code::ConferenceTerminated,
        Code::WrongSfu,
        Code::BadOffer,
        Code::OverCapacity,
        Code::RateLimited,
        Code::NotAllowed,
        Code::NotADm,
        Code::InviteExpired,
        Code::RelayUnavailable,
        Code::LeftConference,
        Code::Replaced,
        Code::IceTimeout,
        Code::ConsentExpired,
        Code::DtlsFailed,
        Code::FingerprintMismatch,
        Code::NoSrtpProfile,
    ];
}

/// One admitted call: a relay session, and what signaling must remember of it across
/// restarts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Call {
    /// The relay session (its `session_spec.session_id`).
    pub spec: SessionSpec,
    /// The DM the call lives in.
    pub dm_room: String,
    /// The caller's `call_id`.
    pub call_id: String,
    /// The caller's user id.
    pub caller: String,
    /// The caller's `party_id`.
    pub caller_party: String,
    /// The conference room.
    pub conf_room: String,
    /// The conference id within it.
    pub conf_id: String,
    /// The full-resolution streams it receives.
    pub full: FullSet,
    /// When the answer was sent (ms since the Unix epoch).
    pub answered_ms: u64,
    /// When its invite was sent (`origin_server_ts`, ms since the Unix epoch; 0 in
    /// calls stored by versions that did not keep it): of two calls from one device to
    /// one conference, the newer invite's stays.
    #[serde(default)]
    pub invited_ms: u64,
    /// The relay the answer named; `None` in calls stored by versions that did not
    /// keep it. A relay back with another certificate or addresses cannot serve the
    /// call.
    #[serde(default)]
    pub answered_relay: Option<AnsweredRelay>,
    /// The SFU's `party_id` in the answer: every later event of the call carries it,
    /// even after a login on another device (a caller ignores events from a party it
    /// did not select). Empty in calls stored by versions that did not keep it, until
    /// [`Core::restore`] sets the stored session's device.
    #[serde(default)]
    pub answered_party: String,
    /// Whether the relay reported the session connected (not persisted meaningfully:
    /// after a restart the relay re-announces connected sessions).
    #[serde(default)]
    pub connected: bool,
}

/// The relay as an answer names it: its certificate's fingerprint and its candidates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnsweredRelay {
    /// `a=fingerprint:sha-256`.
    pub fingerprint: Fingerprint,
    /// The host candidates.
    pub candidates: Vec<SocketAddr>,
}

impl AnsweredRelay {
    fn of(info: &RelayInfo) -> Self {
        AnsweredRelay {
            fingerprint: info.dtls_fingerprint,
            candidates: info.candidates.clone(),
        }
    }

    /// Whether a participant holding this answer can reach the relay `info` describes.
    fn reaches(&self, info: &RelayInfo) -> bool {
        self.fingerprint == info.dtls_fingerprint && self.candidates == info.candidates
    }
}

/// What the service must do, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Join a room the SFU was invited to.
    JoinRoom(String),
    /// Decline an invite (leave the room).
    DeclineInvite(String),
    /// Leave a room nobody else is joined to any more, once what is queued for it has
    /// been sent.
    LeaveRoom(String),
    /// Send a timeline event.
    Send {
        /// The room.
        room: String,
        /// Event type.
        event_type: String,
        /// Content.
        content: Value,
    },
    /// Create the session on the relay (its conference first), then send `answer` in
    /// `room` and persist `call`. If the relay refuses or is unreachable, call
    /// [`Core::admission_failed`].
    Admit {
        /// The call, with its relay session spec.
        call: Box<Call>,
        /// `m.call.answer` content to send once the relay said `ok`.
        answer: Value,
        /// When the invite arrived (ms), for latency metrics.
        invite_ms: u64,
    },
    /// Send one request to the relay (best effort; a lost one is repaired by the next
    /// snapshot).
    Relay(RequestBody),
    /// Write the call to the store.
    Persist(Box<Call>),
    /// Delete the call from the store: it ended, for `why` (its hangup code, `hangup`
    /// when the caller hung up or said goodbye on the media path,
    /// `answered_elsewhere` when the caller took another party's answer).
    Forget {
        /// The call's relay session.
        session_id: SessionId,
        /// Why it ended.
        why: &'static str,
    },
}

/// A conference room (or DM) as seen from sync.
#[derive(Debug, Default, Clone)]
struct Room {
    /// User → membership (`join`, `invite`, `leave`, `ban`, …).
    members: HashMap<String, String>,
    /// conf_id → state.
    conferences: HashMap<String, ConferenceState>,
    /// conf_id → the event id and sender of its current announcement (when the sync
    /// gave one): a redaction of it by its sender or a moderator empties its content,
    /// which ends the conference.
    announcements: HashMap<String, (String, String)>,
    /// Who may redact others' events (`m.room.power_levels`).
    power: PowerLevels,
    /// Its creators (`m.room.create`: its sender, and from room version 12 its
    /// `additional_creators`): from version 12 their power has no bound, and before,
    /// a room without a power-levels event gives its creator 100.
    creators: Vec<String>,
    encrypted: bool,
    /// Anyone can read it without joining (`m.room.history_visibility`
    /// `world_readable`) or join it without an invite (`m.room.join_rules` `public`,
    /// `restricted` or `knock_restricted`).
    open: Open,
}

/// The part of a room's `m.room.power_levels` that says who may redact another's
/// event: the user's level against `redact`. Without the event (a room that never had
/// one), nobody may.
#[derive(Debug, Clone)]
struct PowerLevels {
    users: HashMap<String, i64>,
    users_default: i64,
    redact: i64,
}

impl Default for PowerLevels {
    fn default() -> Self {
        PowerLevels {
            users: HashMap::new(),
            users_default: 0,
            redact: i64::MAX,
        }
    }
}

impl PowerLevels {
    /// From the event's content; a level may be a number or (in old rooms) a string of
    /// one; what is neither takes the specification's default.
    fn from_content(content: &Value) -> Self {
        fn level(v: Option<&Value>, default: i64) -> i64 {
            match v {
                Some(Value::Number(n)) => n.as_i64().unwrap_or(default),
                Some(Value::String(s)) => s.trim().parse().unwrap_or(default),
                _ => default,
            }
        }
        let users = content
            .get("users")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .take(MAX_POWER_USERS)
                    .map(|(u, v)| (u.clone(), level(Some(v), 0)))
                    .collect()
            })
            .unwrap_or_default();
        PowerLevels {
            users,
            users_default: level(content.get("users_default"), 0),
            redact: level(content.get("redact"), 50),
        }
    }

    fn may_redact(&self, user: &str) -> bool {
        self.users.get(user).copied().unwrap_or(self.users_default) >= self.redact
    }
}

/// Creators kept per room.
const MAX_CREATORS: usize = 64;

/// Users with a level kept per room: a power-levels event is at most 64 KiB, so a few
/// thousand at most in practice.
const MAX_POWER_USERS: usize = 10_000;

/// What of a room is open to people who are not in it.
#[derive(Debug, Default, Clone, Copy)]
struct Open {
    history: bool,
    join: bool,
}

impl Room {
    fn joined(&self, user: &str) -> bool {
        self.members.get(user).is_some_and(|m| m == "join")
    }

    /// Whether the SFU is joined and nobody else is: every member left, so nothing in
    /// the room can reach it any more.
    fn abandoned(&self, sfu: &str) -> bool {
        self.joined(sfu) && self.members.iter().all(|(u, m)| u == sfu || m != "join")
    }

    /// Whether nobody but `caller` and `sfu` is joined or invited, and nobody else can
    /// read its history without joining or join it uninvited: only they can read the
    /// offer and the answer, and so the call's ICE credentials.
    fn private_to(&self, caller: &str, sfu: &str) -> bool {
        !self.open.history
            && !self.open.join
            && self
                .members
                .iter()
                .all(|(u, m)| u == caller || u == sfu || !matches!(m.as_str(), "join" | "invite"))
    }
}

/// One user's recent invites to the SFU, for its rate.
#[derive(Debug, Default)]
struct InviteRate {
    /// When the invites within the rate arrived (at most the limit).
    recent: VecDeque<u64>,
    /// When the last one over it was refused.
    refused_at: Option<u64>,
}

/// Counters for metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Invites refused, by code.
    pub refusals: BTreeMap<&'static str, u64>,
    /// Calls ended, by code (`hangup` for the caller's own hangup).
    pub ended: BTreeMap<&'static str, u64>,
    /// Calls admitted.
    pub admitted: u64,
    /// Events dropped as unreadable, by what was wrong.
    pub dropped: BTreeMap<&'static str, u64>,
    /// Room invites accepted and declined.
    pub rooms_joined: u64,
    /// See `rooms_joined`.
    pub rooms_declined: u64,
    /// Rooms the SFU set out to leave because every other member had left them.
    pub rooms_left: u64,
    /// Sync timelines cut short (`limited`) whose gap the service could not fill: the
    /// events in it were missed.
    pub limited_timelines: u64,
    /// Active-speaker events sent (one per call of the conference per change).
    pub speaker_events: u64,
    /// Member-ended events sent (one per other call of the conference per call ended).
    pub member_ended_events: u64,
}

/// Fills a buffer with secure random bytes.
pub type Rng = Box<dyn FnMut(&mut [u8]) + Send>;

/// Invites remembered for de-duplication, for how long, and at most how many.
const HANDLED_TTL_MS: u64 = 3_600_000;
const MAX_HANDLED: usize = 100_000;

/// How long a room the SFU set out to join counts against [`Limits::max_rooms`] before
/// sync shows it joined: longer than a join's retries take.
const JOIN_PENDING_MS: u64 = 10 * 60_000;

/// An invite against its sender's rate ([`Core::invite_rate`]).
enum Rate {
    Within,
    JustOver,
    Over,
}

/// The call logic. See the module docs.
pub struct Core {
    cfg: CoreConfig,
    rng: Rng,
    relay: Option<RelayInfo>,
    rooms: HashMap<String, Room>,
    calls: HashMap<SessionId, Call>,
    by_call: HashMap<(String, String), SessionId>,
    /// (DM, call_id) of every invite already answered or refused, with when.
    handled: HashMap<(String, String), u64>,
    handled_order: VecDeque<(u64, (String, String))>,
    /// Per user, its recent invites.
    invites: HashMap<String, InviteRate>,
    /// Rooms told that the SFU cannot read encrypted calls.
    told_encrypted: HashSet<String>,
    /// Rooms the SFU decided to leave, until sync reports them left (or the SFU
    /// invited back): no call is admitted in them meanwhile.
    leaving: HashSet<String>,
    /// Rooms the SFU set out to join, with when, until sync shows them (or
    /// [`JOIN_PENDING_MS`] passed: the join failed): they count against
    /// [`Limits::max_rooms`] already.
    joining: HashMap<String, u64>,
    /// The calls a new call replaced, until the relay takes the new one
    /// ([`Core::admitted`]); if it does not ([`Core::admission_failed`]), the members
    /// are told that they ended after all.
    replaced_by: HashMap<SessionId, Vec<Call>>,
    last_generation: u64,
    out: VecDeque<Action>,
    stats: Stats,
}

impl Core {
    /// A core with no rooms and no calls. `rng` fills buffers with secure random bytes.
    pub fn new(cfg: CoreConfig, rng: Rng) -> Self {
        Core {
            cfg,
            rng,
            relay: None,
            rooms: HashMap::new(),
            calls: HashMap::new(),
            by_call: HashMap::new(),
            handled: HashMap::new(),
            handled_order: VecDeque::new(),
            invites: HashMap::new(),
            told_encrypted: HashSet::new(),
            leaving: HashSet::new(),
            joining: HashMap::new(),
            replaced_by: HashMap::new(),
            last_generation: 0,
            out: VecDeque::new(),
            stats: Stats::default(),
        }
    }

    // ---- getters ----

    /// The live calls.
    pub fn calls(&self) -> impl Iterator<Item = &Call> {
        self.calls.values()
    }

    /// How many rooms the SFU is joined to, as its sync shows them (one it is leaving
    /// counts until sync reports it left).
    pub fn room_count(&self) -> usize {
        self.rooms.len()
    }

    /// The SFU's own identity changed before the first sync (a login on a new device:
    /// the calls restored were answered as the stored session's, and keep that
    /// `party_id`, [`Call::answered_party`]). Its server stays the same (the same
    /// account on the same homeserver), and so does the allow-list.
    pub fn set_identity(&mut self, user_id: &str, party_id: &str) {
        self.cfg.user_id = user_id.to_owned();
        self.cfg.party_id = party_id.to_owned();
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The relay's announcement, if the relay was ever reached.
    pub fn relay_info(&self) -> Option<&RelayInfo> {
        self.relay.as_ref()
    }

    /// The next action, in order.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.out.pop_front()
    }

    /// Every generation from now on is above `g` (one a previous run may have used:
    /// the service keeps a reservation in its store).
    pub fn generations_above(&mut self, g: u64) {
        self.last_generation = self.last_generation.max(g);
    }

    /// A fresh generation for a relay request: microseconds since the epoch, strictly
    /// increasing even if the clock is not (docs/control-protocol.md, "Generations").
    pub fn next_generation(&mut self, now_ms: u64) -> Generation {
        let g = now_ms.saturating_mul(1000).max(self.last_generation + 1);
        self.last_generation = g;
        Generation(g)
    }

    /// The full desired state for the relay, for the request after every (re)connect.
    pub fn snapshot(&mut self, now_ms: u64) -> Snapshot {
        let generation = self.next_generation(now_ms);
        let mut conferences: Vec<ConfId> = self
            .calls
            .values()
            .map(|c| c.spec.conf_id.clone())
            .collect();
        conferences.sort();
        conferences.dedup();
        let mut sessions: Vec<&Call> = self.calls.values().collect();
        sessions.sort_by(|a, b| a.spec.session_id.cmp(&b.spec.session_id));
        Snapshot {
            generation,
            conferences: conferences
                .into_iter()
                .map(|conf_id| ConferenceSpec { conf_id })
                .collect(),
            subscriptions: sessions
                .iter()
                .map(|c| SubscriptionSpec {
                    session_id: c.spec.session_id.clone(),
                    full: c.full.clone(),
                })
                .collect(),
            sessions: sessions.into_iter().map(|c| c.spec.clone()).collect(),
        }
    }

    // ---- inputs ----

    /// The relay (re)connected and announced itself. Whether a session is connected is
    /// the relay's to say again: after the snapshot it reports every connected session
    /// (a relay that restarted has none).
    ///
    /// A relay that came back with another certificate (it generates one at each start
    /// unless given `cert`/`key`) or other addresses than a call's answer carries
    /// cannot be reached with that answer: such calls end at once with
    /// `relay_unavailable`, so that their callers call again rather than finding out
    /// from a failed handshake (calls stored by versions that did not keep the answer's
    /// relay are not checked).
    pub fn set_relay_info(&mut self, info: RelayInfo, now_ms: u64) {
        let mut unreachable: Vec<SessionId> = self
            .calls
            .iter()
            .filter(|(_, c)| c.answered_relay.as_ref().is_some_and(|a| !a.reaches(&info)))
            .map(|(id, _)| id.clone())
            .collect();
        unreachable.sort();
        self.relay = Some(info);
        for call in self.calls.values_mut() {
            call.connected = false;
        }
        for id in unreachable {
            self.end_call(&id, Code::RelayUnavailable, now_ms);
        }
    }

    /// Restores calls persisted by an earlier run, before the first sync.
    ///
    /// A call stored by an older version that declares the relay's own SSRC, which the
    /// relay now refuses (and with it the whole snapshot), is hung up (`bad_offer`) and
    /// forgotten instead.
    pub fn restore(&mut self, calls: impl IntoIterator<Item = Call>) {
        for mut call in calls {
            call.connected = false;
            // Stored by a version that did not keep its party: answered as the device
            // of the stored session, which is ours until a login on another device.
            let unkept = call.answered_party.is_empty();
            if unkept {
                call.answered_party = self.cfg.party_id.clone();
            }
            let key = (call.dm_room.clone(), call.call_id.clone());
            if call
                .spec
                .streams
                .iter()
                .any(|s| s.ssrc == blindfold_relay::id::Ssrc::RELAY)
            {
                self.remember_handled(key, call.answered_ms);
                self.hangup(
                    &call.dm_room,
                    &call.call_id,
                    &call.answered_party,
                    Code::BadOffer,
                );
                self.out.push_back(Action::Forget {
                    session_id: call.spec.session_id.clone(),
                    why: Code::BadOffer.as_str(),
                });
                continue;
            }
            if unkept {
                self.out.push_back(Action::Persist(Box::new(call.clone())));
            }
            self.remember_handled(key.clone(), call.answered_ms);
            self.by_call.insert(key, call.spec.session_id.clone());
            self.calls.insert(call.spec.session_id.clone(), call);
        }
    }

    /// One `/sync` response. `initial` is true for the very first sync of a new
    /// account (no stored token): its timeline is history, so only state is read.
    pub fn handle_sync(&mut self, sync: &SyncResponse, now_ms: u64, initial: bool) {
        self.expire_handled(now_ms);
        // A join set out on is done (or undone) once sync shows the room.
        for room_id in sync
            .rooms
            .join
            .keys()
            .chain(sync.rooms.leave.keys())
            .chain(sync.rooms.invite.keys())
        {
            self.joining.remove(room_id);
        }
        // A room the SFU left, or is invited to (again): what it knew of it is stale.
        for room_id in sync.rooms.leave.keys().chain(sync.rooms.invite.keys()) {
            self.rooms.remove(room_id);
            self.told_encrypted.remove(room_id);
            self.leaving.remove(room_id);
        }
        for (room_id, invited) in &sync.rooms.invite {
            self.handle_room_invite(room_id, &invited.invite_state.events, now_ms);
        }
        // State first, everywhere, so a call event sees the membership and conference
        // state of its batch whatever order the rooms come in.
        for (room_id, joined) in &sync.rooms.join {
            let room = self.rooms.entry(room_id.clone()).or_default();
            for v in joined.state_in_order() {
                if let Some(e) = Event::from_value(v) {
                    apply_state(room, &e);
                }
            }
            if joined.timeline.limited && !initial {
                self.stats.limited_timelines += 1;
            }
        }
        if !initial {
            for (room_id, joined) in &sync.rooms.join {
                for v in &joined.timeline.events {
                    match Event::from_value(v) {
                        Some(e) if e.state_key.is_none() => {
                            self.handle_timeline(room_id, &e, now_ms)
                        }
                        Some(_) => {}
                        None => self.count_drop("unreadable_event"),
                    }
                }
            }
        }
        self.reconcile(now_ms);
        self.leave_abandoned(sync);
    }

    /// Leaves the rooms of this batch that every other member has left (after
    /// [`Core::reconcile`] ended their calls): nobody can call or announce anything
    /// there any more, and a room the SFU stays in is state it keeps and syncs for
    /// good. Whoever wants it back invites it again.
    fn leave_abandoned(&mut self, sync: &SyncResponse) {
        for room_id in sync.rooms.join.keys() {
            let abandoned = self
                .rooms
                .get(room_id)
                .is_some_and(|r| r.abandoned(&self.cfg.user_id));
            if abandoned && self.leaving.insert(room_id.clone()) {
                self.stats.rooms_left += 1;
                self.out.push_back(Action::LeaveRoom(room_id.clone()));
            }
        }
    }

    /// A relay notification.
    pub fn handle_relay(&mut self, note: &NotificationBody, now_ms: u64) {
        match note {
            NotificationBody::SessionConnected { session_id, .. } => {
                if let Some(c) = self.calls.get_mut(session_id) {
                    c.connected = true;
                }
            }
            NotificationBody::SessionFailed {
                session_id, reason, ..
            }
            | NotificationBody::SessionClosed { session_id, reason } => {
                if *reason == EndReason::Closed {
                    // The participant said goodbye on the media path (its Matrix
                    // hangup may still be on its way): a hangup, answered by nothing.
                    if self.calls.contains_key(session_id) {
                        self.count_caller_hangup();
                        self.remove_call(session_id, "hangup", now_ms, true, Some("hangup"));
                    }
                    return;
                }
                let code = match reason {
                    EndReason::IceTimeout => Code::IceTimeout,
                    EndReason::ConsentExpired => Code::ConsentExpired,
                    EndReason::DtlsFailed => Code::DtlsFailed,
                    EndReason::FingerprintMismatch => Code::FingerprintMismatch,
                    EndReason::NoSrtpProfile => Code::NoSrtpProfile,
                    // Our own removals, and a relay's shutdown (the snapshot after its
                    // return restores the session): nothing the caller must hear about.
                    EndReason::Removed | EndReason::Replaced | EndReason::Shutdown => return,
                    // The relay could not run the session (`other`), or a reason from a
                    // newer relay: the call is dead either way, and its caller may try
                    // again.
                    _ => Code::RelayUnavailable,
                };
                if self.calls.contains_key(session_id) {
                    self.end_call(session_id, code, now_ms);
                }
            }
            NotificationBody::ActiveSpeaker {
                conf_id,
                session_id,
            } => self.active_speaker(conf_id, session_id),
            NotificationBody::Stats(_) => {}
        }
    }

    /// The relay's active speaker of `conf_id` is now `speaker`: every call of that
    /// conference hears it in its DM (docs/protocol.md, "Active speaker").
    fn active_speaker(&mut self, conf_id: &ConfId, speaker: &SessionId) {
        let Some(s) = self.calls.get(speaker) else {
            return; // ended meanwhile, or not ours
        };
        if &s.spec.conf_id != conf_id {
            return;
        }
        let (user, party) = (s.caller.clone(), s.caller_party.clone());
        self.stats.speaker_events += self.tell_calls(conf_id, events::ACTIVE_SPEAKER, |c| {
            events::active_speaker_content(&c.call_id, &c.answered_party, &user, &party)
        });
    }

    /// Sends every call of `conf_id`, in its DM, an event of `event_type` with the
    /// content `content` makes for it; returns how many.
    fn tell_calls(
        &mut self,
        conf_id: &ConfId,
        event_type: &str,
        content: impl Fn(&Call) -> Value,
    ) -> u64 {
        // In session order, so the actions do not depend on the map's.
        let mut calls: Vec<(&SessionId, &Call)> = self
            .calls
            .iter()
            .filter(|(_, c)| &c.spec.conf_id == conf_id)
            .collect();
        calls.sort_by(|a, b| a.0.cmp(b.0));
        let n = calls.len();
        for (_, c) in calls {
            self.out.push_back(Action::Send {
                room: c.dm_room.clone(),
                event_type: event_type.into(),
                content: content(c),
            });
        }
        n as u64
    }

    /// `ended`'s call is over: every other call of its conference hears it in its DM
    /// (docs/protocol.md, "A member's call ended"), so that the members forget its keys
    /// and rekey even when it could not tell them itself (it crashed, or its link died).
    fn member_ended(&mut self, ended: &Call, reason: &str) {
        self.stats.member_ended_events +=
            self.tell_calls(&ended.spec.conf_id, events::MEMBER_ENDED, |c| {
                events::member_ended_content(
                    &c.call_id,
                    &c.answered_party,
                    &ended.caller,
                    &ended.caller_party,
                    &ended.call_id,
                    reason,
                )
            });
    }

    /// The relay took an [`Action::Admit`]: the calls it replaced stay ended without a
    /// word to the members (its key event tells them).
    pub fn admitted(&mut self, session_id: &SessionId) {
        self.replaced_by.remove(session_id);
    }

    /// The relay did not take an [`Action::Admit`]: refuse the call after all. The
    /// calls it replaced have ended, and no new call's key event will tell the members
    /// so: they hear it as `member_ended` with reason `replaced`.
    ///
    /// The relay is told to remove the session, and the conference if no other call
    /// is in it: a request that timed out may have been applied after all, and the
    /// conference's upsert may have been taken before the session's failed. Neither
    /// may stay behind (the session would hold the caller's SSRCs and credentials).
    pub fn admission_failed(&mut self, session_id: &SessionId, now_ms: u64) {
        // What the same batch queued for the call after its admission is about a
        // session the relay does not have.
        self.withdraw_follow_ups(session_id);
        if let Some(call) = self.calls.get(session_id) {
            let (room, call_id) = (call.dm_room.clone(), call.call_id.clone());
            let party = call.answered_party.clone();
            let why = Code::RelayUnavailable.as_str();
            self.remove_call(session_id, why, now_ms, true, None);
            self.count_refusal(Code::RelayUnavailable);
            self.hangup(&room, &call_id, &party, Code::RelayUnavailable);
        }
        for old in self.replaced_by.remove(session_id).unwrap_or_default() {
            self.member_ended(&old, Code::Replaced.as_str());
        }
    }

    /// Whether `id`'s [`Action::Admit`] is still queued.
    fn admission_queued(&self, id: &SessionId) -> bool {
        self.out
            .iter()
            .any(|a| matches!(a, Action::Admit { call, .. } if call.spec.session_id == *id))
    }

    /// Takes `id`'s queued [`Action::Admit`] back, with what its batch queued after it
    /// (its subscription for the relay, its record for the store); whether there was
    /// one.
    fn withdraw_admission(&mut self, id: &SessionId) -> bool {
        if !self.admission_queued(id) {
            return false;
        }
        self.out
            .retain(|a| !matches!(a, Action::Admit { call, .. } if call.spec.session_id == *id));
        self.withdraw_follow_ups(id);
        true
    }

    /// Takes back what a batch queued for `id`'s call after its admission: its
    /// subscription for the relay and its record for the store.
    fn withdraw_follow_ups(&mut self, id: &SessionId) {
        self.out.retain(|a| match a {
            Action::Relay(RequestBody::SetSubscription { subscription, .. }) => {
                subscription.session_id != *id
            }
            Action::Persist(call) => call.spec.session_id != *id,
            _ => true,
        });
    }

    /// Ends every call that may no longer stay: its caller left the conference room,
    /// the conference ended or names another SFU, the SFU left the room or the DM, or
    /// someone else joined or was invited into the DM.
    pub fn reconcile(&mut self, now_ms: u64) {
        let mut ending: Vec<(SessionId, Code)> = Vec::new();
        for (id, c) in &self.calls {
            let verdict = match self.rooms.get(&c.conf_room) {
                None => Some(Code::ConferenceTerminated),
                Some(room) => match room.conferences.get(&c.conf_id) {
                    None | Some(ConferenceState::Terminated) => Some(Code::ConferenceTerminated),
                    Some(ConferenceState::Live { sfu }) if *sfu != self.cfg.user_id => {
                        Some(Code::WrongSfu)
                    }
                    Some(ConferenceState::Live { .. }) if !room.joined(&c.caller) => {
                        Some(Code::LeftConference)
                    }
                    Some(ConferenceState::Live { .. }) => None,
                },
            };
            let verdict = verdict.or_else(|| match self.rooms.get(&c.dm_room) {
                Some(dm) if !dm.joined(&c.caller) => Some(Code::LeftConference),
                // Someone else can read the answer now (the DM shares its history).
                Some(dm) if !dm.private_to(&c.caller, &self.cfg.user_id) => Some(Code::NotADm),
                Some(_) => None,
                None => Some(Code::LeftConference),
            });
            if let Some(code) = verdict {
                ending.push((id.clone(), code));
            }
        }
        ending.sort();
        for (id, code) in ending {
            self.end_call(&id, code, now_ms);
        }
    }

    // ---- internals ----

    /// An invite of the SFU to a room: joined if its inviter passes the allow-list and
    /// its rate, which room invites share with call invites (every room joined is state
    /// the SFU keeps and syncs), and the SFU is in fewer than [`Limits::max_rooms`]
    /// rooms; declined otherwise.
    ///
    /// The inviter is the sender of the *last* invite membership of the SFU in the
    /// invite's stripped state: the homeserver appends the invite event it checked to
    /// the state the inviting server sent, which that server could fill with member
    /// events naming anyone.
    fn handle_room_invite(&mut self, room_id: &str, stripped: &[Value], now_ms: u64) {
        let inviter = stripped
            .iter()
            .rev()
            .filter_map(Event::from_value)
            .find(|e| {
                e.kind == "m.room.member"
                    && e.state_key == Some(self.cfg.user_id.as_str())
                    && e.content.get("membership").and_then(Value::as_str) == Some("invite")
            })
            .map(|e| e.sender.to_owned());
        let join = match inviter.as_deref() {
            // Declined over the rate, without using up the minute's one refusal
            // of a call invite.
            Some(who) if self.cfg.allow.allows(who) => {
                if !self.take_invite(who, now_ms) {
                    self.count_drop("room_invite_over_rate");
                    false
                } else if self.rooms.len() + self.joining.len() >= self.cfg.limits.max_rooms {
                    self.count_drop("room_invite_over_max_rooms");
                    false
                } else {
                    true
                }
            }
            _ => false,
        };
        if join {
            self.joining.insert(room_id.to_owned(), now_ms);
            self.stats.rooms_joined += 1;
            self.out.push_back(Action::JoinRoom(room_id.to_owned()));
        } else {
            self.stats.rooms_declined += 1;
            self.out
                .push_back(Action::DeclineInvite(room_id.to_owned()));
        }
    }

    fn handle_timeline(&mut self, room_id: &str, e: &Event<'_>, now_ms: u64) {
        if e.sender == self.cfg.user_id {
            return;
        }
        match e.kind {
            events::CALL_INVITE => self.handle_invite(room_id, e, now_ms),
            events::CALL_HANGUP | events::CALL_REJECT => {
                if let Some(id) = self.own_call(room_id, e) {
                    self.count_caller_hangup();
                    self.remove_call(&id, "hangup", now_ms, true, Some("hangup"));
                }
            }
            events::CALL_SELECT_ANSWER => {
                if let Some(id) = self.own_call(room_id, e) {
                    let selected = e.content.get("selected_party_id").and_then(Value::as_str);
                    let ours = self.calls.get(&id).map(|c| c.answered_party.as_str());
                    if selected != ours {
                        // The caller took another party's answer: our session is moot,
                        // and the members are told as for a hangup.
                        self.count_caller_hangup();
                        let why = "answered_elsewhere";
                        self.remove_call(&id, why, now_ms, true, Some("hangup"));
                    }
                }
            }
            // Candidates are ignored: the relay is ICE-lite and learns the caller's
            // address from its checks. Renegotiation is not supported (yet).
            events::CALL_CANDIDATES | events::CALL_NEGOTIATE | events::CALL_ANSWER => {}
            events::SUBSCRIBE => self.handle_subscribe(room_id, e, now_ms),
            "m.room.encrypted" => {
                // A caller's encrypted DM: the sender and the SFU alone in it, and no
                // conference. A room of more members (a conference room whose
                // announcement has not arrived yet, a group that invited the SFU) gets
                // no plaintext notice, which everyone in it would see and keep.
                let sfu = self.cfg.user_id.as_str();
                let dm = self
                    .rooms
                    .get(room_id)
                    .is_some_and(|r| r.conferences.is_empty() && r.private_to(e.sender, sfu));
                if dm && self.told_encrypted.insert(room_id.to_owned()) {
                    self.out.push_back(Action::Send {
                        room: room_id.to_owned(),
                        event_type: "m.room.message".into(),
                        content: json!({
                            "msgtype": "m.notice",
                            "body": "This room is encrypted, and the conference SFU deliberately has no \
                                     encryption keys, so it cannot read calls placed here. Call it from an \
                                     unencrypted direct chat; your media stays end-to-end encrypted.",
                        }),
                    });
                }
            }
            _ => {}
        }
    }

    /// The session of the call an event in `room_id` refers to, if the event's sender
    /// and party own it.
    fn own_call(&mut self, room_id: &str, e: &Event<'_>) -> Option<SessionId> {
        let ids = match CallIds::from_content(e.content) {
            Ok(ids) => ids,
            Err(_) => {
                self.count_drop("unreadable_call_event");
                return None;
            }
        };
        let id = self.by_call.get(&(room_id.to_owned(), ids.call_id))?;
        let call = &self.calls[id];
        (call.caller == e.sender && call.caller_party == ids.party_id).then(|| id.clone())
    }

    fn handle_subscribe(&mut self, room_id: &str, e: &Event<'_>, now_ms: u64) {
        let sub = match Subscribe::from_content(e.content) {
            Ok(s) => s,
            Err(_) => return self.count_drop("unreadable_subscribe"),
        };
        let Some(id) = self.own_call(room_id, e) else {
            return self.count_drop("subscribe_for_unknown_call");
        };
        let full = sub.full;
        if self.calls[&id].full == full {
            // A repeat (or a flood of them) costs no relay request and no write.
            return self.count_drop("subscribe_unchanged");
        }
        let generation = self.next_generation(now_ms);
        let call = self.calls.get_mut(&id).expect("own_call found it");
        call.full = full.clone();
        let call = Box::new(call.clone());
        self.out
            .push_back(Action::Relay(RequestBody::SetSubscription {
                generation,
                subscription: SubscriptionSpec {
                    session_id: id,
                    full,
                },
            }));
        self.out.push_back(Action::Persist(call));
    }

    fn handle_invite(&mut self, room_id: &str, e: &Event<'_>, now_ms: u64) {
        // Another user's call (in a room the SFU shares with them) is none of its
        // business, however it is written.
        if e.content
            .get("invitee")
            .and_then(serde_json::Value::as_str)
            .is_some_and(|who| who != self.cfg.user_id)
        {
            return self.count_drop("invite_for_someone_else");
        }
        // A plaintext invite in an encrypted room (a conference room included) is not
        // answered, not even refused: the refusal would be a plaintext event everyone
        // in the room sees and keeps.
        if self
            .rooms
            .get(room_id)
            .is_some_and(|r| r.encrypted || !r.conferences.is_empty())
        {
            return self.count_drop("invite_in_encrypted_room");
        }
        let parsed = Invite::from_content(e.content);
        let call_id = match &parsed {
            Ok(inv) => &inv.ids.call_id,
            Err(InviteError::NoIds(_)) => return self.count_drop("invite_without_ids"),
            Err(InviteError::Version(ids, _) | InviteError::Malformed(ids, _)) => &ids.call_id,
        };
        let key = (room_id.to_owned(), call_id.clone());
        if self.handled.contains_key(&key) {
            return self.count_drop("duplicate_invite");
        }
        // Before any answer, so that a flood of invites (well-formed or not, allowed
        // or not) gets one refusal a minute past the rate and otherwise silence. Only
        // what is answered is remembered (an ignored one may come again).
        match self.invite_rate(e.sender, now_ms) {
            Rate::Within => self.remember_handled(key, now_ms),
            Rate::JustOver => {
                self.remember_handled(key, now_ms);
                let call_id = call_id.clone();
                return self.refuse(room_id, &call_id, Code::RateLimited);
            }
            Rate::Over => return self.count_drop("invite_over_rate"),
        }
        let invite = match parsed {
            Ok(inv) => inv,
            Err(_) => {
                let call_id = call_id.clone();
                return self.refuse(room_id, &call_id, Code::BadOffer);
            }
        };
        if let Err(code) = self.admit(room_id, e, &invite, now_ms) {
            self.refuse(room_id, &invite.ids.call_id, code);
        }
    }

    /// Counts an invite from `user` against its rate if the rate has room for it:
    /// whether it had.
    fn take_invite(&mut self, user: &str, now_ms: u64) -> bool {
        let limit = self.cfg.limits.invites_per_user_per_minute;
        let rate = self.invites.entry(user.to_owned()).or_default();
        while rate.recent.front().is_some_and(|&t| t + 60_000 <= now_ms) {
            rate.recent.pop_front();
        }
        let within = rate.recent.len() < limit;
        if within {
            rate.recent.push_back(now_ms);
        }
        within
    }

    /// Counts a call invite from `caller` against its rate (every new invite counts,
    /// whatever its fate): within it; over it, refused (once a minute); or over it
    /// again within that minute.
    fn invite_rate(&mut self, caller: &str, now_ms: u64) -> Rate {
        if self.take_invite(caller, now_ms) {
            return Rate::Within;
        }
        let rate = self.invites.entry(caller.to_owned()).or_default();
        if rate.refused_at.is_some_and(|t| t + 60_000 > now_ms) {
            Rate::Over
        } else {
            rate.refused_at = Some(now_ms);
            Rate::JustOver
        }
    }

    /// Checks an invite in the order docs/protocol.md gives, and on success emits
    /// [`Action::Admit`].
    fn admit(&mut self, dm: &str, e: &Event<'_>, inv: &Invite, now_ms: u64) -> Result<(), Code> {
        let caller = e.sender;
        let sent = e.origin_server_ts.unwrap_or(now_ms);
        if sent.saturating_add(inv.lifetime_ms) < now_ms {
            return Err(Code::InviteExpired);
        }
        if !self.cfg.allow.allows(caller) {
            return Err(Code::NotAllowed);
        }
        // The answer carries the relay's ICE credentials, which with the offer's let
        // anyone who reads both move the session to another address.
        let dm_room = self.rooms.get(dm);
        if !dm_room.is_some_and(|r| r.private_to(caller, &self.cfg.user_id)) {
            return Err(Code::NotADm);
        }

        // A room the SFU is leaving is one it will not read any more.
        let room = self
            .rooms
            .get(&inv.room_id)
            .filter(|_| !self.leaving.contains(&inv.room_id))
            .ok_or(Code::NoSuchConference)?;
        match room.conferences.get(&inv.conf_id) {
            None => return Err(Code::NoSuchConference),
            Some(ConferenceState::Terminated) => return Err(Code::ConferenceTerminated),
            Some(ConferenceState::Live { sfu }) if *sfu != self.cfg.user_id => {
                return Err(Code::WrongSfu);
            }
            Some(ConferenceState::Live { .. }) => {}
        }
        if !room.joined(caller) {
            return Err(Code::NotAMember);
        }
        let limits = OfferLimits {
            max_bytes: self.cfg.limits.max_sdp_bytes,
        };
        let offer = sdp::parse_offer(&inv.sdp, &limits).map_err(|_| Code::BadOffer)?;
        let relay_conf = relay_conf_id(&inv.room_id, &inv.conf_id);

        // A new call from the same device to the same conference replaces its old one
        // (a client that restarted); anything else counts against the limits.
        let replaced: Vec<SessionId> = self
            .calls
            .values()
            .filter(|c| {
                c.caller == caller
                    && c.caller_party == inv.ids.party_id
                    && c.spec.conf_id == relay_conf
            })
            .map(|c| c.spec.session_id.clone())
            .collect();
        // One sync can bring both (in two DMs, read in room order): an invite older
        // than the call it would replace is the one replaced.
        if replaced
            .iter()
            .any(|id| self.calls.get(id).is_some_and(|c| c.invited_ms > sent))
        {
            return Err(Code::Replaced);
        }
        let others = || {
            self.calls
                .values()
                .filter(|c| !replaced.contains(&c.spec.session_id))
        };
        if others().count() >= self.cfg.limits.max_calls
            || others().filter(|c| c.spec.conf_id == relay_conf).count()
                >= self.cfg.limits.max_calls_per_conference
            || others().filter(|c| c.caller == caller).count() >= self.cfg.limits.max_calls_per_user
        {
            return Err(Code::OverCapacity);
        }
        let clash = others().filter(|c| c.spec.conf_id == relay_conf).any(|c| {
            c.spec
                .streams
                .iter()
                .any(|s| offer.streams.iter().any(|o| o.ssrc == s.ssrc))
        });
        if clash {
            return Err(Code::BadOffer);
        }
        let Some(relay) = self.relay.clone() else {
            return Err(Code::RelayUnavailable);
        };

        // A replaced call still unanswered is withdrawn (nobody heard of it), and the
        // calls it was replacing become this one's.
        let mut old: Vec<Call> = Vec::new();
        for id in &replaced {
            if self.admission_queued(id) {
                old.extend(self.replaced_by.remove(id).unwrap_or_default());
            } else if let Some(c) = self.calls.get(id) {
                old.push(c.clone());
            }
        }
        for id in replaced {
            self.end_call(&id, Code::Replaced, now_ms);
        }
        let (ice_ufrag, ice_pwd) = sdp::fresh_credentials(&mut |b: &mut [u8]| (self.rng)(b));
        let session_id = self.fresh_session_id();
        if !old.is_empty() {
            self.replaced_by.insert(session_id.clone(), old);
        }
        let generation = self.next_generation(now_ms);
        let answer_sdp = sdp::build_answer(
            &offer,
            &AnswerParams {
                ice_ufrag: &ice_ufrag,
                ice_pwd: &ice_pwd,
                relay: &relay,
                session_version: generation.0,
            },
        );
        let call = Call {
            spec: SessionSpec {
                session_id: session_id.clone(),
                conf_id: relay_conf,
                ice_ufrag,
                ice_pwd,
                remote_ufrag: offer.ice_ufrag.clone(),
                remote_pwd: Some(offer.ice_pwd.clone()),
                dtls_fingerprint: offer.fingerprint,
                streams: offer.streams.clone(),
                extmap: offer.extmap,
                tmmbr: offer.tmmbr(),
            },
            dm_room: dm.to_owned(),
            call_id: inv.ids.call_id.clone(),
            caller: caller.to_owned(),
            caller_party: inv.ids.party_id.clone(),
            conf_room: inv.room_id.clone(),
            conf_id: inv.conf_id.clone(),
            full: FullSet::Ssrcs(Vec::new()),
            answered_ms: now_ms,
            invited_ms: sent,
            answered_relay: Some(AnsweredRelay::of(&relay)),
            answered_party: self.cfg.party_id.clone(),
            connected: false,
        };
        self.by_call
            .insert((dm.to_owned(), inv.ids.call_id.clone()), session_id.clone());
        self.calls.insert(session_id, call.clone());
        self.stats.admitted += 1;
        self.out.push_back(Action::Admit {
            answer: events::answer_content(&inv.ids.call_id, &self.cfg.party_id, &answer_sdp),
            call: Box::new(call),
            invite_ms: now_ms,
        });
        Ok(())
    }

    fn fresh_session_id(&mut self) -> SessionId {
        let mut raw = [0u8; 16];
        (self.rng)(&mut raw);
        SessionId::new(format!("s-{}", hex(&raw))).expect("s- and hex are printable ASCII")
    }

    fn remember_handled(&mut self, key: (String, String), at: u64) {
        self.handled.insert(key.clone(), at);
        self.handled_order.push_back((at, key));
        // A bound whatever the senders do; the oldest go first (a live call's stays).
        while self.handled_order.len() > MAX_HANDLED {
            let (at, key) = self
                .handled_order
                .pop_front()
                .expect("longer than the bound");
            if self.handled.get(&key) == Some(&at) && !self.by_call.contains_key(&key) {
                self.handled.remove(&key);
            }
        }
    }

    fn expire_handled(&mut self, now_ms: u64) {
        while let Some(&(at, _)) = self.handled_order.front() {
            if at + HANDLED_TTL_MS > now_ms {
                break;
            }
            let (_, key) = self.handled_order.pop_front().expect("front exists");
            // A live call keeps its key: its events must still find it.
            if self.handled.get(&key) == Some(&at) && !self.by_call.contains_key(&key) {
                self.handled.remove(&key);
            }
        }
        self.invites.retain(|_, rate| {
            let last = rate.recent.back().copied().max(rate.refused_at);
            last.is_some_and(|t| t + 60_000 > now_ms)
        });
        self.joining.retain(|_, at| *at + JOIN_PENDING_MS > now_ms);
    }

    fn refuse(&mut self, room: &str, call_id: &str, code: Code) {
        self.count_refusal(code);
        let party = self.cfg.party_id.clone();
        self.hangup(room, call_id, &party, code);
    }

    fn count_refusal(&mut self, code: Code) {
        *self.stats.refusals.entry(code.as_str()).or_insert(0) += 1;
    }

    /// A call the caller ended (`calls_ended_total{reason="hangup"}`).
    fn count_caller_hangup(&mut self) {
        *self.stats.ended.entry("hangup").or_insert(0) += 1;
    }

    fn count_drop(&mut self, what: &'static str) {
        *self.stats.dropped.entry(what).or_insert(0) += 1;
    }

    /// Hangs up `call_id` in `room` as the SFU's `party`.
    fn hangup(&mut self, room: &str, call_id: &str, party: &str, code: Code) {
        self.out.push_back(Action::Send {
            room: room.to_owned(),
            event_type: events::CALL_HANGUP.into(),
            content: events::hangup_content(call_id, party, code.hangup_reason(), code.as_str()),
        });
    }

    /// Ends a call for `code` with a hangup to the caller.
    fn end_call(&mut self, id: &SessionId, code: Code, now_ms: u64) {
        let Some(call) = self.calls.get(id) else {
            return;
        };
        let (room, call_id) = (call.dm_room.clone(), call.call_id.clone());
        let party = call.answered_party.clone();
        *self.stats.ended.entry(code.as_str()).or_insert(0) += 1;
        self.hangup(&room, &call_id, &party, code);
        // When the whole conference ends, or the relay it ran on changed, every call
        // hears it; a replaced call's member tells the others itself, with its new
        // call's key event.
        let tell = !matches!(
            code,
            Code::ConferenceTerminated | Code::WrongSfu | Code::Replaced | Code::RelayUnavailable
        );
        let why = code.as_str();
        self.remove_call(id, why, now_ms, true, tell.then_some(why));
    }

    /// Forgets a call, which ended for `why`, and tells the relay and the store; with
    /// `ended` (why, as the members hear it), the conference's other calls hear of it
    /// too.
    ///
    /// A call whose admission is still queued (it ends in the batch that brought its
    /// invite) is withdrawn instead: no answer, nothing to the relay, nothing to the
    /// members, who never heard of it.
    fn remove_call(
        &mut self,
        id: &SessionId,
        why: &'static str,
        now_ms: u64,
        tell_relay: bool,
        ended: Option<&str>,
    ) {
        let Some(call) = self.calls.remove(id) else {
            return;
        };
        let unanswered = self.withdraw_admission(id);
        let tell_relay = tell_relay && !unanswered;
        if let Some(reason) = ended.filter(|_| !unanswered) {
            self.member_ended(&call, reason);
        }
        if unanswered {
            // The calls it replaced end as if its admission had failed.
            for old in self.replaced_by.remove(id).unwrap_or_default() {
                self.member_ended(&old, Code::Replaced.as_str());
            }
        }
        let key = (call.dm_room.clone(), call.call_id.clone());
        self.by_call.remove(&key);
        // Still a duplicate for another hour: a replayed invite must not revive it.
        self.remember_handled(key, now_ms);
        if tell_relay {
            let generation = self.next_generation(now_ms);
            self.out
                .push_back(Action::Relay(RequestBody::RemoveSession {
                    generation,
                    session_id: id.clone(),
                }));
            if !self
                .calls
                .values()
                .any(|c| c.spec.conf_id == call.spec.conf_id)
            {
                let generation = self.next_generation(now_ms);
                self.out
                    .push_back(Action::Relay(RequestBody::RemoveConference {
                        generation,
                        conf_id: call.spec.conf_id.clone(),
                    }));
            }
        }
        self.out.push_back(Action::Forget {
            session_id: id.clone(),
            why,
        });
    }
}

/// Applies a state event to the room's view.
fn apply_state(room: &mut Room, e: &Event<'_>) {
    if e.kind == "m.room.redaction" {
        // A redacted announcement keeps only its type and state key: the conference
        // has ended (its state changes with no new state event in the sync). Only its
        // sender or a moderator can redact it: a homeserver may pass on a redaction it
        // did not apply (one that came over federation), which clients must check.
        let redacted = e.redacts.and_then(|target| {
            room.announcements
                .iter()
                .find(|(_, (id, by))| {
                    id.as_str() == target
                        && (by.as_str() == e.sender
                            || room.creators.iter().any(|c| c == e.sender)
                            || room.power.may_redact(e.sender))
                })
                .map(|(conf, _)| conf.clone())
        });
        if let Some(conf) = redacted {
            room.announcements.remove(&conf);
            room.conferences
                .insert(conf, ConferenceState::from_content(&Value::Null));
        }
        return;
    }
    let Some(key) = e.state_key else { return };
    match e.kind {
        "m.room.member" => {
            let m = e
                .content
                .get("membership")
                .and_then(Value::as_str)
                .unwrap_or("leave");
            room.members.insert(key.to_owned(), m.to_owned());
        }
        events::CONFERENCE => {
            room.conferences
                .insert(key.to_owned(), ConferenceState::from_content(e.content));
            match e.event_id {
                Some(id) => room
                    .announcements
                    .insert(key.to_owned(), (id.to_owned(), e.sender.to_owned())),
                None => room.announcements.remove(key),
            };
        }
        "m.room.encryption" => room.encrypted = true,
        "m.room.power_levels" => room.power = PowerLevels::from_content(e.content),
        "m.room.create" => {
            let more = e
                .content
                .get("additional_creators")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .take(MAX_CREATORS);
            room.creators = std::iter::once(e.sender)
                .chain(more)
                .map(str::to_owned)
                .collect();
        }
        "m.room.history_visibility" => {
            room.open.history = e.content.get("history_visibility").and_then(Value::as_str)
                == Some("world_readable");
        }
        "m.room.join_rules" => {
            // `restricted` and `knock_restricted` let members of other rooms (a space)
            // join without an invite.
            room.open.join = matches!(
                e.content.get("join_rule").and_then(Value::as_str),
                Some("public" | "restricted" | "knock_restricted")
            );
        }
        _ => {}
    }
}

/// The relay's id for a conference: `c-` and 32 hex digits of SHA-256 over the room and
/// conference ids. Matrix ids can be long and non-ASCII; the relay's ids are short
/// printable ASCII, and a hash keeps them stable across restarts.
pub fn relay_conf_id(room_id: &str, conf_id: &str) -> ConfId {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    ctx.update(room_id.as_bytes());
    ctx.update(b"\n");
    ctx.update(conf_id.as_bytes());
    let d = ctx.finish();
    ConfId::new(format!("c-{}", hex(&d.as_ref()[..16]))).expect("c- and hex are printable ASCII")
}

/// `bytes` as lowercase hex digits.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(any(test, feature = "fuzz"))]
pub(crate) mod fuzz;
#[cfg(test)]
mod tests;
