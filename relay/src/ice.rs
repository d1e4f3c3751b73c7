//! The relay's ICE-lite agent (RFC 8445 §2.5), one per participant session.
//!
//! A lite agent has one host candidate per address family, runs no checks of its own
//! and never nominates: it answers the participant's connectivity checks (RFC 8445
//! §7.3), takes the controlled role, and uses the pair the participant nominates with
//! USE-CANDIDATE. (Before media goes to a nominated address the engine sends that
//! address one Binding request of its own, a consent check in the sense of RFC 7675,
//! which any full agent answers: see `engine/stun.rs`, `PathCheck`. This agent does not
//! take part in it.) Liveness follows docs/design.md ("Timers and limits, with reasons"):
//! a session is silent after 30 s without a valid packet of any kind, which is the
//! spirit of RFC 7675 consent freshness seen from the side that does not send consent
//! checks itself.
//!
//! The agent is sans-IO and reads no clock: time comes in as `now`, responses are
//! written into the caller's buffer, and nothing on the per-packet path allocates (the
//! only allocations are the two ufrags copied in [`IceLite::new`]).
//!
//! # Credentials
//!
//! The signaling side puts the relay's `a=ice-ufrag`/`a=ice-pwd` in the SDP answer and
//! takes the participant's `a=ice-ufrag` from the offer. A check sent *to* the relay
//! carries `USERNAME = "relayUfrag:clientUfrag"` (RFC 8445 §7.2.2: the receiver's ufrag
//! first) and MESSAGE-INTEGRITY keyed with the relay's password. So the engine can find
//! the session from the part before the colon ([`local_ufrag_of`]) before anything is
//! authenticated, and the session's agent then checks the whole USERNAME and the HMAC.
//!
//! # Driving it
//!
//! ```
//! use std::time::{Duration, Instant};
//! use blindfold_relay::ice::{local_ufrag_of, IceLite, IceLiteConfig, IceOutcome, MAX_RESPONSE_LEN};
//! use blindfold_relay::wire::stun::{Class, Method, StunMessage, StunWriter, TransactionId};
//!
//! let t0 = Instant::now();
//! let config = IceLiteConfig::new("relayUfrag", "relayPasswordOf22Chars+", "clientUfrag");
//! let mut agent = IceLite::new(t0, config).unwrap();
//!
//! // What a participant sends (built here with the STUN writer):
//! let mut check = [0u8; 256];
//! let mut w = StunWriter::new(&mut check, Class::Request, Method::Binding, TransactionId([9; 12]))?;
//! w.add_username("relayUfrag:clientUfrag")?;
//! w.add_priority(0x6e00_01ff)?;
//! w.add_ice_controlling(42)?;
//! w.add_use_candidate()?;
//! let n = w.finish_with_integrity_and_fingerprint(b"relayPasswordOf22Chars+")?;
//!
//! // In the engine: demux says STUN, parse, find the session by ufrag, hand it over.
//! let from = "198.51.100.7:50000".parse().unwrap();
//! let msg = StunMessage::parse(&check[..n])?;
//! assert_eq!(local_ufrag_of(&msg), Some("relayUfrag"));
//! let mut out = [0u8; MAX_RESPONSE_LEN];
//! match agent.handle_binding(t0, from, &msg, &mut out) {
//!     IceOutcome::Success { len, selected_changed, .. } => {
//!         // send out[..len] to `from`; if selected_changed, media now goes to `from`.
//!         assert!(selected_changed);
//!     }
//!     IceOutcome::ErrorResponse { len, reason } => { /* send out[..len], count reason */ }
//!     IceOutcome::Dropped(reason) => { /* count reason */ }
//! }
//! assert_eq!(agent.selected(), Some(from));
//!
//! // Every valid DTLS/SRTP/SRTCP packet from the selected address keeps it alive:
//! agent.touch(t0 + Duration::from_secs(10));
//! // Wake at poll_timeout() and ask whether the session is over.
//! assert_eq!(agent.poll_timeout(), t0 + Duration::from_secs(40));
//! assert!(agent.handle_timeout(t0 + Duration::from_secs(39)).is_none());
//! assert!(agent.handle_timeout(t0 + Duration::from_secs(40)).is_some());
//! # Ok::<(), blindfold_relay::wire::stun::StunError>(())
//! ```
//!
//! # What is answered, and how (RFC 8489 §6.3, §9.1.3; RFC 8445 §7.3)
//!
//! In this order; the first rule that applies decides:
//!
//! | input | answer | [`IceDrop`] |
//! |---|---|---|
//! | session already expired | nothing | `Expired` |
//! | no FINGERPRINT / wrong FINGERPRINT | nothing | `MissingFingerprint` / `BadFingerprint` |
//! | indication (Binding indications are keepalives) / response / other method | nothing | `Indication` / `Response` / `NotBinding` |
//! | no USERNAME or no MESSAGE-INTEGRITY | 400, no integrity | `MissingCredentials` |
//! | USERNAME not `local:remote` (or unreadable) | 401, no integrity | `UnknownUsername` |
//! | MESSAGE-INTEGRITY does not verify with the relay's password | 401, no integrity | `BadIntegrity` |
//! | unknown comprehension-required attribute | 420 + UNKNOWN-ATTRIBUTES, with integrity | `UnknownAttributes` |
//! | PRIORITY / USE-CANDIDATE / ICE-CONTROLLING / ICE-CONTROLLED of the wrong size | 400, with integrity | `MalformedAttribute` |
//! | ICE-CONTROLLED present | 487, with integrity | `RoleConflict` |
//! | otherwise | success: XOR-MAPPED-ADDRESS = `from`, integrity, fingerprint | — |
//!
//! Every response ends with FINGERPRINT and echoes the request's transaction id. Only a
//! success changes state; 400s and 401s in particular create none. Errors that come
//! after authentication carry MESSAGE-INTEGRITY (RFC 8489 §9.1.4) so that the peer,
//! which discards unauthenticated responses to its checks, acts on them.
//!
//! **Role conflicts.** RFC 8445 §6.1.1 makes a full agent facing a lite one the
//! controlling agent, so a check with ICE-CONTROLLED means the participant wrongly
//! believes it is controlled. RFC 8445 §7.3.1.1 would have a controlled agent compare
//! tie-breakers and possibly *switch to controlling*; a lite agent cannot (it sends no
//! checks and cannot nominate), so this agent always takes the branch that keeps its
//! role and answers 487 (Role Conflict), whatever the tie-breaker. On a 487 the peer
//! switches to the controlling role and retries (RFC 8445 §7.2.5.1), which is exactly the
//! repair wanted; answering success instead would leave a session nobody nominates.
//! A check with neither ICE-CONTROLLING nor ICE-CONTROLLED (an RFC 5245-era peer) is
//! accepted, and a missing PRIORITY is accepted too: a lite agent learns no
//! peer-reflexive candidates, so it has no use for it.
//!
//! # Nomination
//!
//! Both regular nomination (checks first, then one with USE-CANDIDATE) and aggressive
//! nomination (USE-CANDIDATE on every check) end in a successful check carrying
//! USE-CANDIDATE; that check selects its source address. A later nominating check from
//! another address re-selects: this is how a participant that changed networks (Wi-Fi
//! to cellular) moves its media without an ICE restart. The latest nomination wins
//! rather than the highest-priority one (RFC 8445 §8.1.1): with one relay candidate per
//! family, a participant nominating several paths at once flips between them until it
//! settles, while a priority rule would pin a dead Wi-Fi path. (The engine moves a
//! connected session's media at most once a second, to the latest nomination: each
//! move costs it work on every shard.)
//! Addresses whose checks succeeded without nominating are remembered as *validated* in
//! a fixed set of [`VALIDATED_CAP`] (least recently checked evicted first), so DTLS that
//! arrives before the nomination may be accepted; the engine never forwards media from
//! anything but [`IceLite::selected`].
//!
//! # Liveness
//!
//! Until the first valid check the deadline is creation + [`IceLiteConfig::initial_timeout`];
//! after it, the last valid packet + [`IceLiteConfig::consent_timeout`] (both 30 s by
//! default). A valid check refreshes it, and so does [`IceLite::touch`], which the
//! engine calls for every valid DTLS, SRTP or SRTCP packet from the selected address.
//! Time earlier than already seen never moves the deadline back. Once the deadline has
//! passed the session is over for good: [`IceLite::handle_timeout`] reports an
//! [`IceFailure`] and later checks are dropped as [`IceDrop::Expired`].

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::wire::stun::{
    AttrType, Class, IntegrityKey, Method, StunError, StunMessage, StunWriter,
};

/// The default for both the initial and the consent timeout (docs/design.md: 30 s of silence).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// How many checked-but-not-nominated addresses an agent remembers.
pub const VALIDATED_CAP: usize = 8;

/// At most this many distinct unknown attribute types are listed in a 420's
/// UNKNOWN-ATTRIBUTES (the rest are left out; a peer sending more is not a real ICE
/// agent).
pub const MAX_UNKNOWN_LISTED: usize = 16;

/// The longest response [`IceLite::handle_binding`] writes: a 420 listing
/// [`MAX_UNKNOWN_LISTED`] types (header 20, ERROR-CODE 28, UNKNOWN-ATTRIBUTES 36,
/// MESSAGE-INTEGRITY 24, FINGERPRINT 8). A success is at most 76 bytes (IPv6).
pub const MAX_RESPONSE_LEN: usize = 20 + 28 + (4 + 2 * MAX_UNKNOWN_LISTED) + 24 + 8;

/// Shortest and longest ufrag (RFC 8445 §5.3: at least 24 bits, i.e. 4 ice-chars; RFC
/// 8839 §5.4: at most 256).
const UFRAG_LEN: std::ops::RangeInclusive<usize> = 4..=256;
/// Shortest and longest password (RFC 8445 §5.3: at least 128 bits, i.e. 22 ice-chars).
const PWD_LEN: std::ops::RangeInclusive<usize> = 22..=256;

/// The local part of a check's USERNAME: what comes before the first `:`.
///
/// For a check sent to the relay the USERNAME is `"relayUfrag:clientUfrag"`, so this is
/// the relay's ufrag for the session, and the engine can look the session up by it
/// before handing the message to that session's [`IceLite`]. Nothing is authenticated
/// yet: the agent checks the whole USERNAME and MESSAGE-INTEGRITY.
///
/// Returns `None` for no USERNAME, one that does not parse (over 513 bytes, not UTF-8),
/// or one without a `:`. Does not allocate.
pub fn local_ufrag_of<'a>(msg: &StunMessage<'a>) -> Option<&'a str> {
    let username = msg.username().ok()??;
    username.split_once(':').map(|(local, _)| local)
}

/// Why a Binding request got no success response. Each variant is a drop counter; see
/// [`IceDrop::error_code`] for which ones were answered with an error response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum IceDrop {
    /// The session's deadline had passed; nothing more is answered.
    #[error("session expired")]
    Expired,
    /// `out` is shorter than [`MAX_RESPONSE_LEN`]; nothing was written or changed.
    #[error("output buffer shorter than MAX_RESPONSE_LEN")]
    OutputTooSmall,
    /// No FINGERPRINT: ICE messages always carry one (RFC 8445 §7.2.2). Silent.
    #[error("no FINGERPRINT")]
    MissingFingerprint,
    /// FINGERPRINT malformed or wrong (RFC 8489 §7.3: discard). Silent.
    #[error("bad FINGERPRINT")]
    BadFingerprint,
    /// An indication. Binding indications are the peer's keepalives (RFC 8445 §11);
    /// they are unauthenticated, so they do not count as a valid packet here. Silent.
    #[error("indication")]
    Indication,
    /// A success or error response: a lite agent sends no requests. Silent.
    #[error("response to a request we never sent")]
    Response,
    /// A request of a method other than Binding. Silent.
    #[error("not a Binding request")]
    NotBinding,
    /// USERNAME or MESSAGE-INTEGRITY missing. Answered 400 without integrity.
    #[error("USERNAME or MESSAGE-INTEGRITY missing")]
    MissingCredentials,
    /// USERNAME is not `localUfrag:remoteUfrag`, or does not parse. Answered 401
    /// without integrity.
    #[error("USERNAME not this session's")]
    UnknownUsername,
    /// MESSAGE-INTEGRITY malformed or not made with the relay's password. Answered 401
    /// without integrity.
    #[error("MESSAGE-INTEGRITY does not verify")]
    BadIntegrity,
    /// Authenticated, but carries comprehension-required attributes we do not know.
    /// Answered 420 with UNKNOWN-ATTRIBUTES and integrity.
    #[error("unknown comprehension-required attributes")]
    UnknownAttributes,
    /// Authenticated, but PRIORITY, USE-CANDIDATE, ICE-CONTROLLING or ICE-CONTROLLED
    /// has the wrong size. Answered 400 with integrity.
    #[error("malformed ICE attribute")]
    MalformedAttribute,
    /// Authenticated, but carries ICE-CONTROLLED: the peer must be controlling against
    /// a lite agent. Answered 487 with integrity (see the module docs).
    #[error("role conflict: peer claims the controlled role")]
    RoleConflict,
}

impl IceDrop {
    /// The STUN error code this reason is answered with, or `None` if it is dropped
    /// silently.
    pub fn error_code(self) -> Option<u16> {
        match self {
            IceDrop::MissingCredentials | IceDrop::MalformedAttribute => Some(400),
            IceDrop::UnknownUsername | IceDrop::BadIntegrity => Some(401),
            IceDrop::UnknownAttributes => Some(420),
            IceDrop::RoleConflict => Some(487),
            IceDrop::Expired
            | IceDrop::OutputTooSmall
            | IceDrop::MissingFingerprint
            | IceDrop::BadFingerprint
            | IceDrop::Indication
            | IceDrop::Response
            | IceDrop::NotBinding => None,
        }
    }

    /// Whether the error response for this reason carries MESSAGE-INTEGRITY (it does once
    /// the request authenticated; 400/401 for credentials must not, RFC 8489 §9.1.3).
    fn answer_has_integrity(self) -> bool {
        matches!(
            self,
            IceDrop::UnknownAttributes | IceDrop::MalformedAttribute | IceDrop::RoleConflict
        )
    }

    fn reason_phrase(self) -> &'static str {
        match self.error_code() {
            Some(400) => "Bad Request",
            Some(401) => "Unauthorized",
            Some(420) => "Unknown Attribute",
            Some(487) => "Role Conflict",
            _ => "",
        }
    }
}

/// Why a session's ICE ended. Reported by [`IceLite::handle_timeout`]; the engine ends
/// the session and reports the reason, so an operator can tell a participant that never
/// reached the relay from one that connected and then went silent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum IceFailure {
    /// No valid check arrived within the initial timeout.
    #[error("no valid connectivity check arrived")]
    NoChecks,
    /// Checks succeeded but none nominated an address before the consent timeout.
    #[error("checks succeeded but nothing was nominated")]
    NotNominated,
    /// The selected address was silent for the consent timeout.
    #[error("consent expired: no valid packet for the consent timeout")]
    ConsentExpired,
}

/// Why [`IceLite::new`] refused a configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IceConfigError {
    /// The relay's ufrag is not 4..=256 ice-chars (`A-Z a-z 0-9 + /`).
    #[error("local ufrag must be 4 to 256 ice-chars")]
    BadLocalUfrag,
    /// The relay's password is not 22..=256 ice-chars.
    #[error("local password must be 22 to 256 ice-chars")]
    BadLocalPwd,
    /// The participant's ufrag is not 4..=256 ice-chars.
    #[error("remote ufrag must be 4 to 256 ice-chars")]
    BadRemoteUfrag,
}

/// What [`IceLite::handle_binding`] did with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum IceOutcome {
    /// A valid check: a success response of `len` bytes is in `out`, to be sent to the
    /// check's source address, which is now validated.
    Success {
        /// Length of the response in `out`.
        len: usize,
        /// The check carried USE-CANDIDATE, so its source is now the selected address.
        nominated: bool,
        /// The selected address changed with this check (first nomination, or a
        /// re-nomination from a new address): point the session's media at it.
        selected_changed: bool,
    },
    /// Refused with an error response of `len` bytes in `out`, to be sent back to the
    /// source; count `reason`. No state changed.
    ErrorResponse {
        /// Length of the response in `out`.
        len: usize,
        /// Why; its [`IceDrop::error_code`] is the code in the response.
        reason: IceDrop,
    },
    /// Dropped without an answer; count the reason. No state changed.
    Dropped(IceDrop),
}

impl IceOutcome {
    /// The length of the response written into `out`, if one is to be sent.
    pub fn response_len(&self) -> Option<usize> {
        match *self {
            IceOutcome::Success { len, .. } | IceOutcome::ErrorResponse { len, .. } => Some(len),
            IceOutcome::Dropped(_) => None,
        }
    }

    /// Why the message was refused, if it was.
    pub fn drop_reason(&self) -> Option<IceDrop> {
        match *self {
            IceOutcome::Success { .. } => None,
            IceOutcome::ErrorResponse { reason, .. } | IceOutcome::Dropped(reason) => Some(reason),
        }
    }
}

/// The credentials and timeouts of one session's agent.
#[derive(Clone)]
pub struct IceLiteConfig {
    /// The relay's `a=ice-ufrag` for this session (the first half of USERNAME in checks).
    pub local_ufrag: String,
    /// The relay's `a=ice-pwd`: keys MESSAGE-INTEGRITY both ways.
    pub local_pwd: String,
    /// The participant's `a=ice-ufrag` from its offer (the second half of USERNAME).
    pub remote_ufrag: String,
    /// How long to wait for the first valid check after the agent is created.
    pub initial_timeout: Duration,
    /// How long the session may be silent (no valid packet of any kind) once a check
    /// has succeeded.
    pub consent_timeout: Duration,
}

impl IceLiteConfig {
    /// Credentials with both timeouts at [`DEFAULT_TIMEOUT`].
    pub fn new(
        local_ufrag: impl Into<String>,
        local_pwd: impl Into<String>,
        remote_ufrag: impl Into<String>,
    ) -> Self {
        IceLiteConfig {
            local_ufrag: local_ufrag.into(),
            local_pwd: local_pwd.into(),
            remote_ufrag: remote_ufrag.into(),
            initial_timeout: DEFAULT_TIMEOUT,
            consent_timeout: DEFAULT_TIMEOUT,
        }
    }
}

impl std::fmt::Debug for IceLiteConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IceLiteConfig")
            .field("local_ufrag", &self.local_ufrag)
            .field("local_pwd", &"<redacted>")
            .field("remote_ufrag", &self.remote_ufrag)
            .field("initial_timeout", &self.initial_timeout)
            .field("consent_timeout", &self.consent_timeout)
            .finish()
    }
}

/// ice-char (RFC 8839 §5.1): ALPHA / DIGIT / "+" / "/".
fn is_ice_chars(s: &str, len: std::ops::RangeInclusive<usize>) -> bool {
    len.contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

/// One session's ICE-lite responder. See the [module docs](self) for how to drive it.
///
/// Methods: getters ([`selected`](Self::selected), [`is_selected`](Self::is_selected),
/// [`is_validated`](Self::is_validated), [`local_ufrag`](Self::local_ufrag),
/// [`failure`](Self::failure)); input ([`handle_binding`](Self::handle_binding),
/// [`touch`](Self::touch), [`handle_timeout`](Self::handle_timeout)); and
/// [`poll_timeout`](Self::poll_timeout). None of them allocates.
#[derive(Clone)]
pub struct IceLite {
    local_ufrag: Box<str>,
    remote_ufrag: Box<str>,
    key: IntegrityKey,
    created: Instant,
    initial_timeout: Duration,
    consent_timeout: Duration,
    /// Latest time a valid packet arrived; `None` before the first valid check.
    last_valid: Option<Instant>,
    /// A time before which the session is certainly alive: the consent deadline as last
    /// computed. `last_valid` only grows, so the deadline only moves later; [`touch`]
    /// (every media packet) compares against this and computes the deadline anew only
    /// once it has passed, about once per consent timeout.
    ///
    /// [`touch`]: Self::touch
    alive_until: Instant,
    selected: Option<SocketAddr>,
    /// Addresses that passed a check, with the latest time they did.
    validated: [Option<(SocketAddr, Instant)>; VALIDATED_CAP],
    failure: Option<IceFailure>,
}

impl std::fmt::Debug for IceLite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IceLite")
            .field("local_ufrag", &self.local_ufrag)
            .field("remote_ufrag", &self.remote_ufrag)
            .field("selected", &self.selected)
            .field("last_valid", &self.last_valid)
            .field("failure", &self.failure)
            .finish_non_exhaustive()
    }
}

impl IceLite {
    /// An agent for one session, created at `now`, waiting for checks.
    ///
    /// Prepares the HMAC key from the password once. Rejects ufrags and a password that
    /// are not ice-chars of the lengths RFC 8445 §5.3 asks for ([`IceConfigError`]); a
    /// `:` in a ufrag would make USERNAME ambiguous, and ice-chars exclude it.
    pub fn new(now: Instant, config: IceLiteConfig) -> Result<Self, IceConfigError> {
        if !is_ice_chars(&config.local_ufrag, UFRAG_LEN) {
            return Err(IceConfigError::BadLocalUfrag);
        }
        if !is_ice_chars(&config.local_pwd, PWD_LEN) {
            return Err(IceConfigError::BadLocalPwd);
        }
        if !is_ice_chars(&config.remote_ufrag, UFRAG_LEN) {
            return Err(IceConfigError::BadRemoteUfrag);
        }
        Ok(IceLite {
            key: IntegrityKey::new(config.local_pwd.as_bytes()),
            local_ufrag: config.local_ufrag.into_boxed_str(),
            remote_ufrag: config.remote_ufrag.into_boxed_str(),
            created: now,
            initial_timeout: config.initial_timeout,
            consent_timeout: config.consent_timeout,
            last_valid: None,
            alive_until: now,
            selected: None,
            validated: [None; VALIDATED_CAP],
            failure: None,
        })
    }

    /// The relay's ufrag for this session (the key the engine finds it by).
    pub fn local_ufrag(&self) -> &str {
        &self.local_ufrag
    }

    /// The nominated address: where the session's media goes and the only address its
    /// media is accepted from. `None` until a check with USE-CANDIDATE succeeds.
    pub fn selected(&self) -> Option<SocketAddr> {
        self.selected
    }

    /// Whether `addr` is the nominated address.
    pub fn is_selected(&self, addr: SocketAddr) -> bool {
        self.selected == Some(addr)
    }

    /// Whether a check from `addr` succeeded (the selected address always counts, the
    /// others while they are among the [`VALIDATED_CAP`] most recently checked). DTLS may
    /// be accepted from such an address; media never is unless it is selected.
    pub fn is_validated(&self, addr: SocketAddr) -> bool {
        self.is_selected(addr) || self.validated.iter().flatten().any(|&(a, _)| a == addr)
    }

    /// Why the session ended, once [`handle_timeout`](Self::handle_timeout) (or a late
    /// check) found its deadline passed.
    pub fn failure(&self) -> Option<IceFailure> {
        self.failure
    }

    /// Answers one STUN message that the engine routed to this session, writing any
    /// response into `out` (which must hold [`MAX_RESPONSE_LEN`] bytes).
    ///
    /// See the [module docs](self) for the full table of what is answered how. Only a
    /// [`IceOutcome::Success`] changes state: it validates `from`, refreshes liveness,
    /// and with USE-CANDIDATE selects `from`. Rejects (see [`IceDrop`]): an expired
    /// session, a short `out`, missing or bad FINGERPRINT, anything but a Binding
    /// request (silently); missing credentials (400), a foreign USERNAME or a bad
    /// MESSAGE-INTEGRITY (401), unknown comprehension-required attributes (420),
    /// malformed ICE attributes (400), ICE-CONTROLLED (487).
    ///
    /// XOR-MAPPED-ADDRESS is `from` with an IPv4-mapped IPv6 address (from a dual-stack
    /// socket) written as the IPv4 address the peer actually used. Allocation-free.
    pub fn handle_binding(
        &mut self,
        now: Instant,
        from: SocketAddr,
        msg: &StunMessage<'_>,
        out: &mut [u8],
    ) -> IceOutcome {
        if self.check_expiry(now).is_some() {
            return IceOutcome::Dropped(IceDrop::Expired);
        }
        if out.len() < MAX_RESPONSE_LEN {
            return IceOutcome::Dropped(IceDrop::OutputTooSmall);
        }
        let check = match self.authenticate(msg) {
            Ok(check) => check,
            Err(reason) => return self.refuse(msg, reason, out),
        };
        let len = match self.write_success(msg, from, out) {
            Ok(len) => len,
            // Cannot happen with `out` of MAX_RESPONSE_LEN; if it did, change nothing.
            Err(_) => return IceOutcome::Dropped(IceDrop::OutputTooSmall),
        };
        self.mark_valid(now, from);
        let selected_changed = check.use_candidate && self.selected != Some(from);
        if check.use_candidate {
            self.selected = Some(from);
        }
        IceOutcome::Success {
            len,
            nominated: check.use_candidate,
            selected_changed,
        }
    }

    /// Answers a check for a session whose state lives on another shard: the same
    /// authentication and response as [`handle_binding`](Self::handle_binding), but no
    /// state changes here and no expiry (this copy of the agent is not the one that
    /// times the session). The caller passes a [`IceOutcome::Success`] on to the home
    /// shard, which applies it with [`record_check`](Self::record_check).
    pub fn answer(&self, from: SocketAddr, msg: &StunMessage<'_>, out: &mut [u8]) -> IceOutcome {
        if out.len() < MAX_RESPONSE_LEN {
            return IceOutcome::Dropped(IceDrop::OutputTooSmall);
        }
        let check = match self.authenticate(msg) {
            Ok(check) => check,
            Err(reason) => return self.refuse(msg, reason, out),
        };
        match self.write_success(msg, from, out) {
            Ok(len) => IceOutcome::Success {
                len,
                nominated: check.use_candidate,
                selected_changed: check.use_candidate && self.selected != Some(from),
            },
            Err(_) => IceOutcome::Dropped(IceDrop::OutputTooSmall),
        }
    }

    /// Applies a check that another shard authenticated and answered
    /// ([`answer`](Self::answer)): validates `from`, refreshes liveness and, if
    /// `nominated`, selects `from`. Returns whether the selected address changed, or
    /// `None` if the session has already expired (nothing changes then).
    pub fn record_check(
        &mut self,
        now: Instant,
        from: SocketAddr,
        nominated: bool,
    ) -> Option<bool> {
        if self.check_expiry(now).is_some() {
            return None;
        }
        self.mark_valid(now, from);
        let changed = nominated && self.selected != Some(from);
        if nominated {
            self.selected = Some(from);
        }
        Some(changed)
    }

    /// Records a valid packet (DTLS, SRTP, SRTCP) from the selected address at `now`,
    /// pushing the consent deadline to `now` + the consent timeout.
    ///
    /// Ignored before the first successful check (no address can have sent a valid
    /// packet yet), after the session expired, and when `now` is earlier than the latest
    /// time already seen.
    #[inline] // every media packet: two comparisons while the session is known alive
    pub fn touch(&mut self, now: Instant) {
        match self.last_valid {
            Some(last) if now < self.alive_until && self.failure.is_none() => {
                self.last_valid = Some(last.max(now));
            }
            Some(_) => self.touch_checking_expiry(now),
            None => {}
        }
    }

    /// [`touch`](Self::touch) once the known-alive bound has passed (about once per
    /// consent timeout) or after a failure.
    #[cold]
    fn touch_checking_expiry(&mut self, now: Instant) {
        if self.failure.is_some() {
            return;
        }
        // The deadline as `last_valid` puts it now.
        self.alive_until = self.poll_timeout();
        if self.check_expiry(now).is_none() {
            self.refresh(now);
        }
    }

    /// When the session expires unless a valid packet arrives first: the last valid
    /// packet + the consent timeout, or creation + the initial timeout before any check.
    /// Call [`handle_timeout`](Self::handle_timeout) then.
    pub fn poll_timeout(&self) -> Instant {
        match self.last_valid {
            Some(t) => t + self.consent_timeout,
            None => self.created + self.initial_timeout,
        }
    }

    /// Reports the failure once [`poll_timeout`](Self::poll_timeout) has passed (at
    /// `now` equal to it or later), and on every call after that; the agent then answers
    /// nothing more. `None` while the session is alive.
    pub fn handle_timeout(&mut self, now: Instant) -> Option<IceFailure> {
        self.check_expiry(now)
    }

    fn check_expiry(&mut self, now: Instant) -> Option<IceFailure> {
        if self.failure.is_none() && now >= self.poll_timeout() {
            self.failure = Some(match (self.selected, self.last_valid) {
                (Some(_), _) => IceFailure::ConsentExpired,
                (None, Some(_)) => IceFailure::NotNominated,
                (None, None) => IceFailure::NoChecks,
            });
        }
        self.failure
    }

    fn refresh(&mut self, now: Instant) {
        self.last_valid = Some(self.last_valid.map_or(now, |t| t.max(now)));
    }

    fn mark_valid(&mut self, now: Instant, from: SocketAddr) {
        self.refresh(now);
        if let Some((_, t)) = self
            .validated
            .iter_mut()
            .flatten()
            .find(|(a, _)| *a == from)
        {
            *t = (*t).max(now);
            return;
        }
        // An empty slot, else the least recently checked one.
        let slot = match self.validated.iter().position(Option::is_none) {
            Some(i) => i,
            None => self
                .validated
                .iter()
                .enumerate()
                .min_by_key(|(_, e)| e.map(|(_, t)| t))
                .map_or(0, |(i, _)| i),
        };
        self.validated[slot] = Some((from, now));
    }

    /// The RFC 8489 §6.3 / §9.1.3 and RFC 8445 §7.3 checks, in order.
    fn authenticate(&self, msg: &StunMessage<'_>) -> Result<Check, IceDrop> {
        match msg.verify_fingerprint() {
            Ok(()) => {}
            Err(StunError::MissingFingerprint) => return Err(IceDrop::MissingFingerprint),
            Err(_) => return Err(IceDrop::BadFingerprint),
        }
        match msg.class() {
            Class::Request => {}
            Class::Indication => return Err(IceDrop::Indication),
            Class::SuccessResponse | Class::ErrorResponse => return Err(IceDrop::Response),
        }
        if msg.method() != Method::Binding {
            return Err(IceDrop::NotBinding);
        }
        if !msg.has_integrity() || msg.find(AttrType::USERNAME).is_none() {
            return Err(IceDrop::MissingCredentials);
        }
        let ours = match msg.username() {
            Ok(Some(u)) => u.split_once(':') == Some((&self.local_ufrag, &self.remote_ufrag)),
            _ => false,
        };
        if !ours {
            return Err(IceDrop::UnknownUsername);
        }
        if msg.verify_integrity_with(&self.key).is_err() {
            return Err(IceDrop::BadIntegrity);
        }
        if msg.first_unknown_required().is_some() {
            return Err(IceDrop::UnknownAttributes);
        }
        let (Ok(_), Ok(use_candidate), Ok(_), Ok(controlled)) = (
            msg.priority(),
            msg.use_candidate(),
            msg.ice_controlling(),
            msg.ice_controlled(),
        ) else {
            return Err(IceDrop::MalformedAttribute);
        };
        if controlled.is_some() {
            return Err(IceDrop::RoleConflict);
        }
        Ok(Check { use_candidate })
    }

    fn write_success(
        &self,
        msg: &StunMessage<'_>,
        from: SocketAddr,
        out: &mut [u8],
    ) -> Result<usize, StunError> {
        let mapped = SocketAddr::new(from.ip().to_canonical(), from.port());
        let mut w = StunWriter::new(
            out,
            Class::SuccessResponse,
            Method::Binding,
            msg.transaction_id(),
        )?;
        w.add_xor_mapped_address(mapped)?;
        w.add_message_integrity(&self.key)?;
        w.finish_with_fingerprint()
    }

    fn refuse(&self, msg: &StunMessage<'_>, reason: IceDrop, out: &mut [u8]) -> IceOutcome {
        let Some(code) = reason.error_code() else {
            return IceOutcome::Dropped(reason);
        };
        match self.write_error(msg, reason, code, out) {
            Ok(len) => IceOutcome::ErrorResponse { len, reason },
            // Cannot happen with `out` of MAX_RESPONSE_LEN.
            Err(_) => IceOutcome::Dropped(IceDrop::OutputTooSmall),
        }
    }

    fn write_error(
        &self,
        msg: &StunMessage<'_>,
        reason: IceDrop,
        code: u16,
        out: &mut [u8],
    ) -> Result<usize, StunError> {
        let mut w = StunWriter::new(
            out,
            Class::ErrorResponse,
            Method::Binding,
            msg.transaction_id(),
        )?;
        w.add_error_code(code, reason.reason_phrase())?;
        if reason == IceDrop::UnknownAttributes {
            // Distinct types, first seen first, at most MAX_UNKNOWN_LISTED; on the stack.
            let mut listed = [AttrType(0); MAX_UNKNOWN_LISTED];
            let mut n = 0;
            for t in msg.unknown_required() {
                if n == MAX_UNKNOWN_LISTED {
                    break;
                }
                if !listed[..n].contains(&t) {
                    listed[n] = t;
                    n += 1;
                }
            }
            w.add_unknown_attributes(listed[..n].iter().copied())?;
        }
        if reason.answer_has_integrity() {
            w.add_message_integrity(&self.key)?;
        }
        w.finish_with_fingerprint()
    }
}

/// What an authenticated check asks for.
struct Check {
    use_candidate: bool,
}

/// Drives a fixed agent with `data` as a STUN message from a fixed address, then with a
/// copy re-signed with the agent's credentials (so the paths after authentication are
/// reached), then past the deadline. Asserts: nothing is selected without an
/// integrity-checked success; every response parses, carries the request's transaction
/// id and a good FINGERPRINT, and carries verifiable integrity exactly when it should;
/// refusals change no state.
#[cfg(feature = "fuzz")]
#[doc(hidden)]
pub fn fuzz_one(data: &[u8]) {
    fuzz::run(data);
}

#[cfg(any(test, feature = "fuzz"))]
mod fuzz {
    use super::*;
    use std::sync::OnceLock;

    pub(super) const LOCAL_UFRAG: &str = "relayUfrag";
    pub(super) const LOCAL_PWD: &str = "relayPasswordOf22Chars+";
    pub(super) const REMOTE_UFRAG: &str = "clientUfrag";
    pub(super) const USERNAME: &str = "relayUfrag:clientUfrag";

    #[allow(clippy::disallowed_methods)] // a base instant; the run itself is simulated
    fn t0() -> Instant {
        static T0: OnceLock<Instant> = OnceLock::new();
        *T0.get_or_init(Instant::now)
    }

    pub(super) fn run(data: &[u8]) {
        let Ok(msg) = StunMessage::parse(data) else {
            return;
        };
        let now = t0();
        let from: SocketAddr = "192.0.2.1:32853".parse().expect("fixed address");
        let mut agent = IceLite::new(
            now,
            IceLiteConfig::new(LOCAL_UFRAG, LOCAL_PWD, REMOTE_UFRAG),
        )
        .expect("fixed config");
        let _ = local_ufrag_of(&msg);
        let _ = drive(&mut agent, now, from, &msg);

        // The same attributes (up to the first MESSAGE-INTEGRITY or FINGERPRINT),
        // re-signed; the first byte's low bit says whether to put our USERNAME first.
        let mut buf = [0u8; 1500];
        let mut w = match StunWriter::new(&mut buf, msg.class(), msg.method(), msg.transaction_id())
        {
            Ok(w) => w,
            Err(_) => return,
        };
        let fix_username = data.first().is_some_and(|b| b & 1 == 1);
        if fix_username && w.add_username(USERNAME).is_err() {
            return;
        }
        for a in msg.attributes() {
            if a.ty == AttrType::MESSAGE_INTEGRITY || a.ty == AttrType::FINGERPRINT {
                break;
            }
            if !(fix_username && a.ty == AttrType::USERNAME) {
                // A value too long for the buffer is left out; the rest still goes.
                let _ = w.add_raw(a.ty, a.value);
            }
        }
        if w.add_message_integrity(&IntegrityKey::new(LOCAL_PWD.as_bytes()))
            .is_err()
        {
            return;
        }
        let Ok(len) = w.finish_with_fingerprint() else {
            return;
        };
        let Ok(signed) = StunMessage::parse(&buf[..len]) else {
            panic!("re-signed message does not parse");
        };
        let later = now + Duration::from_secs(1);
        let _ = drive(&mut agent, later, from, &signed);
        let other: SocketAddr = "[2001:db8::1]:40000".parse().expect("fixed address");
        let _ = drive(&mut agent, later, other, &signed);

        // Past the deadline everything is refused and nothing changes.
        let end = agent.poll_timeout();
        assert!(agent.handle_timeout(end).is_some());
        let before = agent.selected();
        let mut out = [0u8; MAX_RESPONSE_LEN];
        assert_eq!(
            agent.handle_binding(end, from, &signed, &mut out),
            IceOutcome::Dropped(IceDrop::Expired)
        );
        assert_eq!(agent.selected(), before);
    }

    /// One message through `agent`, with every invariant checked.
    pub(super) fn drive(
        agent: &mut IceLite,
        now: Instant,
        from: SocketAddr,
        msg: &StunMessage<'_>,
    ) -> IceOutcome {
        let key = LOCAL_PWD.as_bytes();
        let selected_before = agent.selected();
        let validated_before = agent.is_validated(from);
        let deadline_before = agent.poll_timeout();
        let authentic = msg.verify_fingerprint().is_ok()
            && msg.class() == Class::Request
            && msg.method() == Method::Binding
            && msg.username() == Ok(Some(USERNAME))
            && msg.verify_integrity(key).is_ok();
        let mut out = [0u8; MAX_RESPONSE_LEN];
        let outcome = agent.handle_binding(now, from, msg, &mut out);
        if let Some(len) = outcome.response_len() {
            let r = StunMessage::parse(&out[..len]).expect("our response parses");
            assert_eq!(r.verify_fingerprint(), Ok(()));
            assert_eq!(r.method(), Method::Binding);
            assert_eq!(r.transaction_id(), msg.transaction_id());
            assert_eq!(r.first_unknown_required(), None);
            match outcome {
                IceOutcome::Success { .. } => {
                    assert_eq!(r.class(), Class::SuccessResponse);
                    assert_eq!(r.verify_integrity(key), Ok(()));
                    let mapped = r.xor_mapped_address().expect("mapped").expect("mapped");
                    assert_eq!(mapped.port(), from.port());
                    assert_eq!(mapped.ip(), from.ip().to_canonical());
                }
                IceOutcome::ErrorResponse { reason, .. } => {
                    assert_eq!(r.class(), Class::ErrorResponse);
                    let code = r.error_code().expect("error code").expect("error code");
                    assert_eq!(Some(code.code), reason.error_code());
                    if reason.answer_has_integrity() {
                        assert!(authentic);
                        assert_eq!(r.verify_integrity(key), Ok(()));
                    } else {
                        assert!(!r.has_integrity());
                    }
                    assert_eq!(
                        r.find(AttrType::UNKNOWN_ATTRIBUTES).is_some(),
                        reason == IceDrop::UnknownAttributes
                    );
                }
                IceOutcome::Dropped(_) => unreachable!("no response for a drop"),
            }
        }
        match outcome {
            IceOutcome::Success {
                nominated,
                selected_changed,
                ..
            } => {
                assert!(authentic, "success only for an authenticated check");
                assert!(agent.is_validated(from));
                assert_eq!(nominated, msg.use_candidate() == Ok(true));
                if nominated {
                    assert_eq!(agent.selected(), Some(from));
                    assert_eq!(selected_changed, selected_before != Some(from));
                } else {
                    assert_eq!(agent.selected(), selected_before);
                    assert!(!selected_changed);
                }
            }
            IceOutcome::ErrorResponse { .. } | IceOutcome::Dropped(_) => {
                assert_eq!(agent.selected(), selected_before);
                assert_eq!(agent.is_validated(from), validated_before);
                assert_eq!(agent.poll_timeout(), deadline_before);
            }
        }
        if let Some(s) = agent.selected() {
            assert!(agent.is_validated(s));
        }
        outcome
    }
}

#[cfg(test)]
mod tests;
