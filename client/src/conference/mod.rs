//! The participant's Matrix side (docs/protocol.md): a [`Conference`] logs in with
//! matrix-sdk (end-to-end encryption, a SQLite store per participant), joins the
//! conference room `R`, calls the SFU in an unencrypted DM, connects a [`Participant`]
//! over UDP to the relay from the answer, and exchanges media keys with the other
//! members as megolm-encrypted `org.matrix.msc2359.call.keys` events in `R`.
//!
//! The participant estimates its downlink from the abs-send-time its offer declares
//! ([`crate::sdp::OFFER_EXTMAP`], read on other members' media:
//! [`ParticipantConfig::bwe`]) and reports it to the relay in REMBs; the synthetic
//! sources' full-resolution layer follows the relay's REMB and TMMBR, and stays under
//! the participant's own estimate of its uplink, made from the relay's transport-cc
//! feedback about the transport-wide sequence numbers it stamps
//! ([`ParticipantConfig::transport_cc`], [`crate::Driver::handle_event`]).
//!
//! # Driving it
//!
//! Inside a tokio runtime (current-thread or multi-thread; the conference spawns its
//! Matrix sync, and a rekey's publishing, on it). The participant's UDP datagrams and
//! timers move on a thread of their own, so that what else runs on the runtime (Matrix
//! crypto is heavy when a member joins) does not hold them up: a packet's arrival time
//! is what the delay-based estimate and the relay's probes are measured by, and a media
//! loop kept waiting would show the relay a congested link that is not there.
//!
//! ```no_run
//! use blindfold_client::conference::{Conference, ConferenceConfig, ConferenceEvent, Login};
//! # async fn run() -> Result<(), blindfold_client::conference::ConferenceError> {
//! let config = ConferenceConfig::new(
//!     "https://matrix.example.org",
//!     Login::Password { user: "@alice:example.org".into(), password: "…".into() },
//!     "/var/lib/alice-blindfold",     // the SQLite store (and saved session) directory
//!     "!conf:example.org",
//!     "weekly",
//! );
//! let mut conf = Conference::join(config).await?; // answered, connecting, keys published
//! while let Some(ev) = conf.next_event().await {
//!     match ev {
//!         ConferenceEvent::Media { packet, from, .. } => { /* decode packet.payload() */ }
//!         ConferenceEvent::Ended { reason, .. } => break,
//!         _ => {}
//!     }
//! }
//! conf.hangup().await?;
//! # Ok(()) }
//! ```
//!
//! What [`Conference::join`] checks before publishing anything: `R` is encrypted, it
//! holds the conference, and the conference's SFU account has no device with
//! end-to-end-encryption keys (`/keys/query`, again before every key event it sends).
//! Other members' key events are accepted only under docs/protocol.md's trust rules
//! ([`keys::Roster`]); refused ones are reported ([`ConferenceEvent::KeysRejected`])
//! and dropped. One that comes before its megolm key (over federation the key's
//! to-device message can be slower) is held and read when the key comes
//! ([`Conference::read_late`]). When a member leaves `R` or hangs up, or the SFU says
//! in the DM that a member's call ended ([`MEMBER_ENDED_EVENT`]: its client died or
//! lost its link), the conference rekeys ([`keys::LocalKeys`]): the next MKI index is
//! published at once, used 2 s later, dropped 10 s after that. matrix-sdk itself
//! rotates `R`'s megolm session when a member it shared the session with has left (so
//! the leaver cannot read the new key event). When the relay restarts, the
//! participant library connects to it again by itself
//! ([`ConferenceEvent::Reconnecting`]).

// The IO shell around the sans-IO participant: it reads the clock (and hands `now` to
// the participant and the key schedule).
#![allow(clippy::disallowed_methods)]

pub mod keys;
mod late;
mod media;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use blindfold_relay::dtls::{DtlsCert, DtlsConfig, DtlsSettings};
use blindfold_relay::id::{KeyIndex, Ssrc};
use blindfold_relay::srtp::{MasterKey, SrtpProfile};
use blindfold_relay::wire::rtp::AudioLevel;
use matrix_sdk::authentication::matrix::MatrixSession;
use matrix_sdk::config::SyncSettings;
use matrix_sdk::deserialized_responses::{TimelineEvent, VerificationLevel, VerificationState};
use matrix_sdk::room::Room;
use matrix_sdk::ruma::api::client::keys::get_keys;
use matrix_sdk::ruma::api::client::room::create_room;
use matrix_sdk::ruma::events::StateEventType;
use matrix_sdk::ruma::events::room::history_visibility::HistoryVisibility;
use matrix_sdk::ruma::events::room::join_rules::JoinRule;
use matrix_sdk::ruma::events::room::member::MembershipState;
use matrix_sdk::ruma::{OwnedUserId, RoomId, UserId};
use matrix_sdk::sync::{State as SyncState, SyncResponse};
use matrix_sdk::{Client, RoomMemberships, RoomState, SessionMeta, SessionTokens};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::sdp::{Answer, AnswerError, Offer};
use crate::{IceCredentials, MediaPacket, OwnSsrcs, Participant, ParticipantConfig, SenderId};
use keys::{Accepted, KEYS_EVENT, KeyAction, KeyEvent, KeyEventError, LocalKeys, Roster};
use late::Late;
pub use late::{LATE_EVENT_WAIT, LATE_EVENTS_HELD};

pub use matrix_sdk;

/// The conference announcement's state event type.
pub const CONFERENCE_EVENT: &str = "org.matrix.msc2359.conference";
/// The subscription event type.
pub const SUBSCRIBE_EVENT: &str = "org.matrix.msc2359.call.subscribe";
/// The SFU's active-speaker event type (in the DM, docs/protocol.md "Active speaker").
pub const ACTIVE_SPEAKER_EVENT: &str = "org.matrix.msc2359.call.active_speaker";
/// The SFU's event saying another member's call ended (in the DM, docs/protocol.md "A
/// member's call ended").
pub const MEMBER_ENDED_EVENT: &str = "org.matrix.msc2359.call.member_ended";
/// Events the application has not taken yet; past this, media events are dropped and
/// counted ([`Conference::dropped_events`]).
const EVENT_QUEUE: usize = 8192;
/// Room the media events leave in the queue: a relay flooding undecryptable datagrams,
/// or an application that fell behind, must not crowd out an event that ends or
/// changes the call.
const CONTROL_RESERVE: usize = 256;
/// The long-poll of the sync loop.
const SYNC_TIMEOUT: Duration = Duration::from_secs(5);
/// Timeline events per room a sync of the call's loop may carry (a homeserver's default
/// is 10): when a member leaves, every other member's key event comes at once, and a
/// truncated timeline would lose all but the last few.
const SYNC_TIMELINE_LIMIT: u32 = 500;

/// The sync loop's settings: its long-poll and [`SYNC_TIMELINE_LIMIT`].
fn loop_sync_settings() -> SyncSettings {
    use matrix_sdk::ruma::api::client::filter::FilterDefinition;
    use matrix_sdk::ruma::api::client::sync::sync_events::v3::Filter;
    let mut filter = FilterDefinition::empty();
    filter.room.timeline.limit = Some(SYNC_TIMELINE_LIMIT.into());
    SyncSettings::default()
        .timeout(SYNC_TIMEOUT)
        .filter(Filter::FilterDefinition(filter))
}

/// How the participant logs in.
#[derive(Debug, Clone)]
pub enum Login {
    /// Password login (a new device the first time; the store directory keeps the
    /// session, so later runs are the same device).
    Password {
        /// User id or localpart.
        user: String,
        /// Its password.
        password: String,
    },
    /// An existing session's access token and device.
    Token {
        /// `@user:server`.
        user_id: String,
        /// The token's device.
        device_id: String,
        /// The access token.
        access_token: String,
    },
}

/// Which full-resolution streams to receive (docs/protocol.md, "Subscriptions").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subscription {
    /// Every current and future one.
    All,
    /// The conference's active speaker's, following each change.
    Speaker,
    /// These SSRCs (`[]`: thumbnails only).
    Ssrcs(Vec<Ssrc>),
}

impl Subscription {
    fn to_json(&self) -> Value {
        match self {
            Subscription::All => json!("all"),
            Subscription::Speaker => json!("speaker"),
            Subscription::Ssrcs(s) => json!(s.iter().map(|x| x.0).collect::<Vec<_>>()),
        }
    }
}

/// What the conference sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaMode {
    /// Nothing (a listener).
    None,
    /// The synthetic audio, thumbnail and full-resolution sources of [`crate::source`],
    /// probes counting from `epoch`.
    Synthetic {
        /// The probes' epoch (receivers measuring latency use the same).
        epoch: Instant,
        /// The sources' RNG seed.
        seed: u64,
    },
    /// The synthetic thumbnail and full-resolution sources only; the application sends
    /// its own audio on the audio SSRC with [`Conference::send_audio`] (a real Opus
    /// file, say).
    SyntheticVideo {
        /// The probes' epoch.
        epoch: Instant,
        /// The sources' RNG seed.
        seed: u64,
    },
}

/// Everything [`Conference::join`] needs.
#[derive(Debug, Clone)]
pub struct ConferenceConfig {
    /// Homeserver base URL.
    pub homeserver: String,
    /// How to log in.
    pub login: Login,
    /// The participant's directory: matrix-sdk's SQLite stores and the saved session.
    pub store: PathBuf,
    /// The conference room `R`.
    pub room_id: String,
    /// The conference id (the announcement's state key).
    pub conf_id: String,
    /// The subscription sent once answered.
    pub subscription: Subscription,
    /// Our SSRCs; random if `None`.
    pub ssrcs: Option<OwnSsrcs>,
    /// Our SRTP profile (GCM by default): one a key event can name
    /// (`SRTP_AEAD_AES_128_GCM` or `SRTP_AES128_CM_SHA1_80`), or
    /// [`Conference::join`] refuses it.
    pub profile: SrtpProfile,
    /// What to send.
    pub media: MediaMode,
    /// Also report every RTP datagram we send ([`ConferenceEvent::Sent`]).
    pub report_sent: bool,
    /// Limit for each wait while joining (the SFU joining the DM, the answer).
    pub timeout: Duration,
}

impl ConferenceConfig {
    /// A configuration subscribing to every full-resolution stream, random SSRCs, GCM,
    /// no media, 30 s waits.
    pub fn new(
        homeserver: impl Into<String>,
        login: Login,
        store: impl Into<PathBuf>,
        room_id: impl Into<String>,
        conf_id: impl Into<String>,
    ) -> Self {
        ConferenceConfig {
            homeserver: homeserver.into(),
            login,
            store: store.into(),
            room_id: room_id.into(),
            conf_id: conf_id.into(),
            subscription: Subscription::All,
            ssrcs: None,
            profile: SrtpProfile::AeadAes128Gcm,
            media: MediaMode::None,
            report_sent: false,
            timeout: Duration::from_secs(30),
        }
    }
}

/// Why joining or a conference operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConferenceError {
    /// The Matrix SDK or the homeserver failed.
    #[error("matrix: {0}")]
    Matrix(String),
    /// The store directory or saved session.
    #[error("store {0}")]
    Store(String),
    /// The room id or a user id is not valid.
    #[error("invalid id: {0}")]
    InvalidId(String),
    /// The conference room is not end-to-end encrypted: keys would travel in the clear.
    #[error("room {0} is not end-to-end encrypted: refusing to publish media keys there")]
    RoomNotEncrypted(String),
    /// No live conference with this id in the room.
    #[error("room {room} holds no conference {conf_id}")]
    NoSuchConference {
        /// The room.
        room: String,
        /// The conference id.
        conf_id: String,
    },
    /// The conference has ended.
    #[error("conference {0} has ended")]
    ConferenceEnded(String),
    /// The SFU account has end-to-end-encryption devices: it could be given the room's
    /// megolm sessions, so the media keys.
    #[error(
        "the SFU account {sfu} has end-to-end-encryption devices {devices:?}: refusing to \
         publish media keys in this conference"
    )]
    SfuHasDevices {
        /// The SFU account.
        sfu: String,
        /// Its devices with keys.
        devices: Vec<String>,
    },
    /// The SFU refused or ended the call.
    #[error("the SFU hung up: {code} ({reason})")]
    Hangup {
        /// `org.matrix.msc2359.reason`.
        code: String,
        /// The spec's `reason`.
        reason: String,
    },
    /// A wait ran out.
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    /// Our media stopped for good: a rekey could not be published (see
    /// [`ConferenceEvent::Ended`]), and the key in use is one a member who left may hold.
    #[error("our media is withheld: our new key could not be published")]
    MediaWithheld,
    /// The answer's SDP is not usable.
    #[error("bad answer: {0}")]
    BadAnswer(#[from] AnswerError),
    /// The configured SRTP profile has no name in key events (docs/protocol.md "Media
    /// keys"), so no member could read our keys.
    #[error("SRTP profile {0:?} cannot be named in a key event")]
    UnnamedProfile(SrtpProfile),
    /// The participant library refused its configuration or a key.
    #[error("participant: {0}")]
    Participant(#[from] crate::ParticipantError),
    /// Local I/O (the UDP socket).
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

fn mx(e: impl std::fmt::Display) -> ConferenceError {
    ConferenceError::Matrix(e.to_string())
}

/// A member's device in the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberId {
    /// Matrix user id.
    pub user_id: String,
    /// Device id.
    pub device_id: String,
}

impl From<&keys::Member> for MemberId {
    fn from(m: &keys::Member) -> MemberId {
        MemberId {
            user_id: m.user_id.clone(),
            device_id: m.device_id.clone(),
        }
    }
}

/// What a [`Conference`] reports.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum ConferenceEvent {
    /// The SFU says this member's device is the conference's active speaker now (it
    /// may be us). Map it to streams through the member's key event.
    ActiveSpeaker {
        /// The speaker.
        member: MemberId,
    },
    /// DTLS with the relay completed: media flows. Again after [`Reconnecting`].
    ///
    /// [`Reconnecting`]: ConferenceEvent::Reconnecting
    Connected {
        /// When the handshake completed (the event may be taken much later: it is often
        /// reported while [`Conference::join`] is still publishing our keys).
        at: Instant,
    },
    /// The relay lost our session (it restarted: it answers our consent checks, but
    /// has sent us no SRTCP for [`crate::RELAY_SILENCE`]); ICE and DTLS
    /// start again with the same answer. [`Connected`] follows, or [`Ended`].
    ///
    /// [`Connected`]: ConferenceEvent::Connected
    /// [`Ended`]: ConferenceEvent::Ended
    Reconnecting {
        /// When the participant library decided it.
        at: Instant,
    },
    /// The relay sees us at a new address (our NAT rebound): the participant library
    /// nominated it, and the relay moves our media there. Nothing else changes.
    AddressChanged {
        /// Where the relay sees us now.
        address: SocketAddr,
    },
    /// A decrypted media packet.
    Media {
        /// The packet.
        packet: MediaPacket,
        /// Its sender (if still known when it arrived).
        from: Option<MemberId>,
        /// SHA-256 of the SRTP datagram as it arrived from the relay.
        wire_sha256: [u8; 32],
    },
    /// An RTP datagram we sent (only with [`ConferenceConfig::report_sent`]).
    Sent {
        /// Its SSRC.
        ssrc: Ssrc,
        /// Its sequence number.
        seq: u16,
        /// The MKI it carries.
        key: KeyIndex,
        /// SHA-256 of the whole datagram.
        sha256: [u8; 32],
    },
    /// An SRTP datagram from the relay that did not decrypt. `reason` is
    /// [`DropReason::UnknownSsrc`] for a stream no accepted key event declares (usual
    /// for a moment after someone joins: media can arrive before their key event) and
    /// [`DropReason::Srtp`] for a declared stream whose packet failed to unprotect
    /// (wrong or unknown key, tampering, replay).
    ///
    /// [`DropReason::UnknownSsrc`]: crate::DropReason::UnknownSsrc
    /// [`DropReason::Srtp`]: crate::DropReason::Srtp
    Undecryptable {
        /// The datagram's SSRC.
        ssrc: Ssrc,
        /// The member that declared it, if any.
        from: Option<MemberId>,
        /// Why it was dropped.
        reason: crate::DropReason,
    },
    /// A member's key event was accepted and its keys installed.
    KeysAccepted {
        /// Who.
        member: MemberId,
        /// Its id in the participant library.
        sender: SenderId,
        /// The key indexes it holds now.
        indexes: Vec<KeyIndex>,
    },
    /// A key event was refused (and dropped).
    KeysRejected {
        /// The event's sender (user id).
        user_id: String,
        /// Why.
        reason: KeyEventError,
    },
    /// A member left the call or `R`; its keys are gone.
    MemberLeft {
        /// Who.
        member: MemberId,
    },
    /// We published our key event with these indexes.
    KeysPublished {
        /// The key set, oldest first.
        indexes: Vec<KeyIndex>,
        /// When the homeserver accepted the event (the first one is published inside
        /// [`Conference::join`], before the application can take events).
        at: Instant,
    },
    /// We switched to a new key.
    KeyActivated {
        /// Its index.
        index: KeyIndex,
    },
    /// The call ended (SFU hangup, conference ended, we left `R`).
    Ended {
        /// Why.
        reason: String,
        /// The SFU hung up with `relay_unavailable`: the relay could not take the call,
        /// or came back from a restart unable to serve its answer (another certificate
        /// or address). A new call ([`Conference::join`] again) may well succeed.
        call_again: bool,
    },
}

impl ConferenceEvent {
    /// [`ConferenceEvent::Ended`] for `reason`, not to be called again.
    pub(crate) fn ended(reason: impl Into<String>) -> Self {
        ConferenceEvent::Ended {
            reason: reason.into(),
            call_again: false,
        }
    }
}

/// The SFU's hangup code that asks the caller to call again (docs/protocol.md).
pub const CALL_AGAIN: &str = "relay_unavailable";

/// How long to wait before each new try of a key set's publication that failed: then
/// our media stops ([`ConferenceError::MediaWithheld`]).
pub const PUBLISH_RETRIES: [Duration; 3] = [
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_secs(2),
];

/// Counters of what was dropped.
#[derive(Debug, Default)]
struct Counters {
    events_dropped: AtomicU64,
    undecryptable: AtomicU64,
    read_late: AtomicU64,
}

/// The state the sync task and the media loop (on its own thread) share. Held briefly,
/// never across an await.
struct State {
    participant: Participant,
    driver: Option<crate::Driver>,
    roster: Roster,
    keys: LocalKeys,
    profile: SrtpProfile,
    /// `R`'s events waiting for their megolm key.
    late: Late,
}

struct Inner {
    client: Client,
    room: Room,
    dm: Room,
    sfu: OwnedUserId,
    conf_id: String,
    call_id: String,
    device_id: String,
    ssrcs: OwnSsrcs,
    relay: SocketAddr,
    invited_at: Instant,
    answered_at: Instant,
    report_sent: bool,
    state: Mutex<State>,
    events: mpsc::Sender<ConferenceEvent>,
    counters: Counters,
    wake: tokio::sync::Notify,
    publishing: tokio::sync::Mutex<()>,
    /// We hung up (no key event with our streams may follow the empty one), or the
    /// conference was stopped (dropped): no key event at all.
    hung_up: AtomicBool,
    /// A key set could not be published even after [`PUBLISH_RETRIES`]: we send no
    /// more media.
    withheld: AtomicBool,
    /// The conference stopped (`Conference::stop`): the media loop sends nothing more
    /// and ends.
    stopped: AtomicBool,
    /// The media socket (a handle on the media loop's; for the last datagrams at a
    /// stop). Non-blocking.
    sock: std::net::UdpSocket,
}

/// Queues `ev` for the application unless the queue has no room for it: a media event
/// (`Media`, `Sent`, `Undecryptable`) needs more than [`CONTROL_RESERVE`] places free,
/// any other one place. Returns whether it was queued.
fn offer(events: &mpsc::Sender<ConferenceEvent>, ev: ConferenceEvent) -> bool {
    use ConferenceEvent::{Media, Sent, Undecryptable};
    let media = matches!(ev, Media { .. } | Sent { .. } | Undecryptable { .. });
    !(media && events.capacity() <= CONTROL_RESERVE) && events.try_send(ev).is_ok()
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn emit(&self, ev: ConferenceEvent) {
        if !offer(&self.events, ev) {
            self.counters.events_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn apply(&self, st: &mut State, actions: Vec<KeyAction>) {
        for a in actions {
            let r = match &a {
                KeyAction::Add(i, k) => MasterKey::new(st.profile, k)
                    .map_err(crate::ParticipantError::Srtp)
                    .and_then(|k| st.participant.add_local_key(*i, &k)),
                KeyAction::Activate(i) => st.participant.activate_local_key(*i),
                KeyAction::Remove(i) => st.participant.remove_local_key(*i),
            };
            match r {
                Ok(()) => {
                    if let KeyAction::Activate(index) = a {
                        self.emit(ConferenceEvent::KeyActivated { index });
                    }
                }
                // Our own schedule asked for it; a refusal is a bug in LocalKeys, not
                // input, and the participant is unchanged: report and go on.
                Err(e) => self.emit(ConferenceEvent::ended(format!("key schedule: {a:?}: {e}"))),
            }
        }
        self.wake.notify_one();
    }

    /// Refuses when the SFU account has a device with E2EE keys (docs/protocol.md).
    async fn check_sfu_devices(&self) -> Result<(), ConferenceError> {
        check_sfu_devices(&self.client, &self.sfu).await
    }

    /// Publishes our current key set in `R` (megolm-encrypted by matrix-sdk).
    async fn publish_keys(&self) -> Result<(), ConferenceError> {
        let _one_at_a_time = self.publishing.lock().await;
        if self.hung_up.load(Ordering::Acquire) {
            // A rekey that was under way when we hung up (one spawned by the media
            // loop outlives the call's tasks): publishing would make us a member again.
            return Ok(());
        }
        self.check_sfu_devices().await?;
        let (content, indexes) = {
            let st = self.lock();
            let keys = st.keys.published();
            let indexes: Vec<KeyIndex> = keys.iter().map(|k| k.0).collect();
            let ev = KeyEvent {
                conf_id: self.conf_id.clone(),
                call_id: self.call_id.clone(),
                device_id: self.device_id.clone(),
                streams: KeyEvent::own_streams(self.ssrcs),
                profile: Some(st.profile),
                keys,
            };
            (ev.to_content(), indexes)
        };
        self.room.send_raw(KEYS_EVENT, content).await.map_err(mx)?;
        // The 2 s before switching count from when the event is out.
        let at = Instant::now();
        self.lock().keys.sent(at, &indexes);
        self.wake.notify_one();
        self.emit(ConferenceEvent::KeysPublished { indexes, at });
        Ok(())
    }

    /// Publishes our key set, after a fresh key under the next index if `rekey`,
    /// trying the publication again after each of [`PUBLISH_RETRIES`] if it fails (the
    /// homeserver unreachable, the SFU showing E2EE devices). If it still fails, our
    /// media stops for good (`withheld`) and the conference reports
    /// [`ConferenceEvent::Ended`]: the key in use may be one a member who left holds,
    /// and the members cannot learn the next one.
    async fn publish_or_withhold(&self, rekey: bool) {
        let mut r = if rekey {
            self.rekey().await
        } else {
            self.publish_keys().await
        };
        for delay in PUBLISH_RETRIES {
            if r.is_ok() {
                return;
            }
            tokio::time::sleep(delay).await;
            r = self.publish_keys().await;
        }
        if let Err(e) = r {
            self.withheld.store(true, Ordering::Release);
            self.emit(ConferenceEvent::ended(format!(
                "could not publish our keys: {e}; our media has stopped"
            )));
        }
    }

    /// Whether our media stopped because a key set could not be published.
    fn is_withheld(&self) -> bool {
        self.withheld.load(Ordering::Acquire)
    }

    /// A fresh key under the next index, published now, used 2 s later.
    async fn rekey(&self) -> Result<(), ConferenceError> {
        let fresh = random_key(self.lock().profile)?;
        {
            let mut st = self.lock();
            let actions = st.keys.rekey(Instant::now(), fresh);
            self.apply(&mut st, actions);
        }
        self.publish_keys().await
    }
}

fn random_bytes(n: usize) -> Result<Vec<u8>, ConferenceError> {
    let mut v = vec![0u8; n];
    aws_lc_rs::rand::fill(&mut v).map_err(|_| ConferenceError::Store("no OS randomness".into()))?;
    Ok(v)
}

fn random_key(profile: SrtpProfile) -> Result<Vec<u8>, ConferenceError> {
    random_bytes(profile.master_len())
}

fn random_u64() -> Result<u64, ConferenceError> {
    let b = random_bytes(8)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(&b);
    Ok(u64::from_le_bytes(a))
}

/// ICE characters (RFC 8839 ice-char).
fn ice_string(len: usize) -> Result<String, ConferenceError> {
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    Ok(random_bytes(len)?
        .into_iter()
        .map(|b| CHARS[usize::from(b) % CHARS.len()] as char)
        .collect())
}

fn random_ssrcs() -> Result<OwnSsrcs, ConferenceError> {
    let b = random_bytes(12)?;
    let ssrc = |i: usize| {
        let v = u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        Ssrc(v.max(1))
    };
    let (a, t, f) = (ssrc(0), ssrc(4), ssrc(8));
    if a == t || t == f || a == f {
        return random_ssrcs();
    }
    Ok(OwnSsrcs {
        audio: a,
        thumbnail: t,
        full: f,
    })
}

fn dtls_config() -> Result<DtlsConfig, ConferenceError> {
    static D: OnceLock<Option<DtlsConfig>> = OnceLock::new();
    D.get_or_init(|| DtlsConfig::new(DtlsSettings::default()).ok())
        .clone()
        .ok_or_else(|| ConferenceError::Store("DTLS configuration".into()))
}

async fn check_sfu_devices(client: &Client, sfu: &UserId) -> Result<(), ConferenceError> {
    let mut req = get_keys::v3::Request::new();
    req.device_keys.insert(sfu.to_owned(), Vec::new());
    let resp = client.send(req).await.map_err(mx)?;
    let devices: Vec<String> = resp
        .device_keys
        .get(sfu)
        .map(|d| d.keys().map(|k| k.to_string()).collect())
        .unwrap_or_default();
    if devices.is_empty() {
        Ok(())
    } else {
        Err(ConferenceError::SfuHasDevices {
            sfu: sfu.to_string(),
            devices,
        })
    }
}

/// Creates the store directory (and missing parents) readable by this user only: it holds
/// the account's access token and its E2EE keys, unencrypted.
fn create_private_dir(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
}

/// Writes `bytes` to a file only this user can read (created with mode 0600).
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?
        .write_all(bytes)
}

/// Logs in, or restores the session saved in the store directory.
async fn login(config: &ConferenceConfig) -> Result<Client, ConferenceError> {
    create_private_dir(&config.store).map_err(|e| ConferenceError::Store(e.to_string()))?;
    let client = Client::builder()
        .homeserver_url(&config.homeserver)
        .sqlite_store(&config.store, None)
        .build()
        .await
        .map_err(mx)?;
    let saved = config.store.join("session.json");
    let session = match (&config.login, std::fs::read(&saved)) {
        (Login::Token { .. }, _) | (_, Err(_)) => None,
        (Login::Password { .. }, Ok(bytes)) => serde_json::from_slice::<MatrixSession>(&bytes).ok(),
    };
    match (session, &config.login) {
        (Some(s), _) => client.restore_session(s).await.map_err(mx)?,
        (None, Login::Password { user, password }) => {
            client
                .matrix_auth()
                .login_username(user, password)
                .initial_device_display_name("blindfold participant")
                .await
                .map_err(mx)?;
            let s = client
                .matrix_auth()
                .session()
                .ok_or_else(|| mx("no session after login"))?;
            let bytes =
                serde_json::to_vec(&s).map_err(|e| ConferenceError::Store(e.to_string()))?;
            write_private(&saved, &bytes).map_err(|e| ConferenceError::Store(e.to_string()))?;
        }
        (
            None,
            Login::Token {
                user_id,
                device_id,
                access_token,
            },
        ) => {
            let s = MatrixSession {
                meta: SessionMeta {
                    user_id: UserId::parse(user_id.as_str())
                        .map_err(|e| ConferenceError::InvalidId(e.to_string()))?,
                    device_id: device_id.as_str().into(),
                },
                tokens: SessionTokens {
                    access_token: access_token.clone(),
                    refresh_token: None,
                },
            };
            client.restore_session(s).await.map_err(mx)?;
        }
    }
    Ok(client)
}

/// The announcement's content, if the conference is live: its SFU.
async fn conference_sfu(
    room: &Room,
    conf_id: &str,
) -> Result<Option<OwnedUserId>, ConferenceError> {
    let Some(raw) = room
        .get_state_event(StateEventType::from(CONFERENCE_EVENT), conf_id)
        .await
        .map_err(mx)?
    else {
        return Ok(None);
    };
    let json: Value = match raw {
        matrix_sdk::deserialized_responses::RawAnySyncOrStrippedState::Sync(r) => {
            serde_json::from_str(r.json().get()).unwrap_or_default()
        }
        matrix_sdk::deserialized_responses::RawAnySyncOrStrippedState::Stripped(r) => {
            serde_json::from_str(r.json().get()).unwrap_or_default()
        }
    };
    let content = &json["content"];
    if content["terminated"] == json!(true) {
        return Ok(None);
    }
    Ok(content["sfu"].as_str().and_then(|s| UserId::parse(s).ok()))
}

/// `user` has joined `room`, as far as our store knows.
async fn joined(room: &Room, user: &UserId) -> bool {
    membership(room, user).await == Some(MembershipState::Join)
}

/// `user`'s membership of `room`, as far as our store knows.
async fn membership(room: &Room, user: &UserId) -> Option<MembershipState> {
    let member = room.get_member_no_sync(user).await.ok()??;
    Some(member.membership().clone())
}

/// The SFU reads `R` only while joined to it, and leaves a room nobody else is in:
/// an announcement may outlive its membership. Invites it back (unless it is invited
/// already) and waits for its join.
async fn bring_sfu_into(
    client: &Client,
    room: &Room,
    sfu: &UserId,
    backlog: &mut Vec<TimelineEvent>,
    timeout: Duration,
) -> Result<(), ConferenceError> {
    match membership(room, sfu).await {
        Some(MembershipState::Join) => return Ok(()),
        Some(MembershipState::Invite) => {}
        _ => room.invite_user_by_id(sfu).await.map_err(|e| {
            mx(format!(
                "inviting the SFU {sfu} into the conference room: {e}"
            ))
        })?,
    }
    let deadline = Instant::now() + timeout;
    while !joined(room, sfu).await {
        if Instant::now() > deadline {
            return Err(ConferenceError::Timeout(
                "the SFU to join the conference room",
            ));
        }
        sync_step(client, room.room_id(), backlog, Duration::from_millis(500)).await?;
    }
    Ok(())
}

/// One sync; `R`'s timeline events are kept for the conference loop (nothing sent
/// while joining is lost).
async fn sync_step(
    client: &Client,
    room_id: &RoomId,
    backlog: &mut Vec<TimelineEvent>,
    timeout: Duration,
) -> Result<SyncResponse, ConferenceError> {
    let resp = client
        .sync_once(SyncSettings::default().timeout(timeout))
        .await
        .map_err(mx)?;
    if let Some(update) = resp.rooms.joined.get(room_id) {
        backlog.extend(update.timeline.events.iter().cloned());
    }
    Ok(resp)
}

/// The speaker an `org.matrix.msc2359.call.active_speaker` event `v` from the DM names,
/// if it is one, the SFU (`sfu`) sent it, and it is about our call `call_id`.
fn active_speaker(v: &Value, sfu: &str, call_id: &str) -> Option<MemberId> {
    if v["type"] != ACTIVE_SPEAKER_EVENT
        || v["sender"].as_str() != Some(sfu)
        || v["content"]["call_id"] != call_id
    {
        return None;
    }
    let speaker = &v["content"]["speaker"];
    Some(MemberId {
        user_id: speaker["user_id"].as_str()?.to_owned(),
        device_id: speaker["party_id"].as_str()?.to_owned(),
    })
}

/// The member and its call that an `org.matrix.msc2359.call.member_ended` event `v`
/// from the DM says ended, if it is one, the SFU (`sfu`) sent it, and it is about our
/// call `call_id`.
pub(crate) fn member_ended(v: &Value, sfu: &str, call_id: &str) -> Option<(MemberId, String)> {
    if v["type"] != MEMBER_ENDED_EVENT
        || v["sender"].as_str() != Some(sfu)
        || v["content"]["call_id"] != call_id
    {
        return None;
    }
    let member = &v["content"]["member"];
    Some((
        MemberId {
            user_id: member["user_id"].as_str()?.to_owned(),
            device_id: member["party_id"].as_str()?.to_owned(),
        },
        member["call_id"].as_str()?.to_owned(),
    ))
}

/// The SFU says these members' calls ended: those still in the roster under that call
/// are forgotten as on their hangup key event, and we rekey.
async fn end_calls(inner: &Inner, calls: Vec<(MemberId, String)>) {
    let mut any = false;
    for (member, call_id) in calls {
        let mut st = inner.lock();
        // Its key event may be held, waiting for its megolm key.
        st.late.ended(&member.user_id, &member.device_id, &call_id);
        let Some(sender) = st
            .roster
            .end_call(&member.user_id, &member.device_id, &call_id)
        else {
            continue;
        };
        st.participant.remove_remote_sender(sender);
        drop(st);
        inner.emit(ConferenceEvent::MemberLeft { member });
        any = true;
    }
    if any {
        // As for any other rekey: a key set that cannot be published stops our media.
        inner.publish_or_withhold(true).await;
    }
}

/// The DM's timeline events in one sync, oldest first.
fn dm_events(resp: &SyncResponse, dm: &RoomId) -> Vec<Value> {
    resp.rooms.joined.get(dm).map_or_else(Vec::new, |update| {
        update
            .timeline
            .events
            .iter()
            .filter_map(|e| serde_json::from_str(e.raw().json().get()).ok())
            .collect()
    })
}

/// The first of the DM's `events` for our call `call_id` whose type is one of `kinds`
/// and that the SFU sent, and where it is. Only the SFU answers or ends our call: the
/// DM held only it and us when we chose it, but someone invited since is not it.
fn our_call_event<'a>(
    events: &'a [Value],
    sfu: &str,
    call_id: &str,
    kinds: &[&str],
) -> Option<(usize, &'a Value)> {
    events.iter().enumerate().find(|(_, v)| {
        v["type"].as_str().is_some_and(|k| kinds.contains(&k))
            && v["sender"].as_str() == Some(sfu)
            && v["content"]["call_id"] == call_id
    })
}

/// Splits the DM's `events` of the sync that brought our call's reply: the reply, and
/// what came after it in that sync (the SFU's speaker changes and other calls' ends,
/// which are ours to act on from the answer on).
fn split_at_reply(
    mut events: Vec<Value>,
    sfu: &str,
    call_id: &str,
) -> Option<((String, Value), Vec<Value>)> {
    let (at, v) = our_call_event(&events, sfu, call_id, &["m.call.answer", "m.call.hangup"])?;
    let reply = (
        v["type"].as_str().unwrap_or_default().to_owned(),
        v["content"].clone(),
    );
    Some((reply, events.split_off(at + 1)))
}

/// A joined conference: a live call to the SFU, media keys exchanged in `R`.
pub struct Conference {
    inner: Arc<Inner>,
    events: mpsc::Receiver<ConferenceEvent>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Conference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conference")
            .field("call_id", &self.inner.call_id)
            .field("relay", &self.inner.relay)
            .finish_non_exhaustive()
    }
}

impl Conference {
    /// Logs in, joins `R`, checks it (encrypted, the conference live, its SFU without
    /// E2EE devices), invites the SFU to `R` if it is not there (its announcer did not,
    /// or it left), calls the SFU from the DM, and once answered starts the media and
    /// sync tasks, publishes our key event and sends the subscription.
    pub async fn join(config: ConferenceConfig) -> Result<Conference, ConferenceError> {
        if keys::profile_name(config.profile).is_none() {
            return Err(ConferenceError::UnnamedProfile(config.profile));
        }
        let client = login(&config).await?;
        let me = client
            .user_id()
            .ok_or_else(|| mx("not logged in"))?
            .to_owned();
        let device_id = client
            .device_id()
            .ok_or_else(|| mx("no device"))?
            .to_string();
        let room_id = RoomId::parse(config.room_id.as_str())
            .map_err(|e| ConferenceError::InvalidId(e.to_string()))?;
        let mut backlog = Vec::new();
        sync_step(&client, &room_id, &mut backlog, Duration::ZERO).await?;

        let room = match client.get_room(&room_id) {
            Some(r) if r.state() == RoomState::Joined => r,
            _ => client.join_room_by_id(&room_id).await.map_err(mx)?,
        };
        let deadline = Instant::now() + config.timeout;
        while !joined(&room, &me).await {
            if Instant::now() > deadline {
                return Err(ConferenceError::Timeout("our join to the room"));
            }
            sync_step(&client, &room_id, &mut backlog, Duration::from_millis(500)).await?;
        }
        if !room
            .latest_encryption_state()
            .await
            .map_err(mx)?
            .is_encrypted()
        {
            return Err(ConferenceError::RoomNotEncrypted(room_id.to_string()));
        }
        let sfu = conference_sfu(&room, &config.conf_id)
            .await?
            .ok_or_else(|| ConferenceError::NoSuchConference {
                room: room_id.to_string(),
                conf_id: config.conf_id.clone(),
            })?;
        check_sfu_devices(&client, &sfu).await?;
        // The full member list, so matrix-sdk tracks every member's devices and shares
        // our megolm session with all of them.
        room.sync_members().await.map_err(mx)?;

        bring_sfu_into(&client, &room, &sfu, &mut backlog, config.timeout).await?;
        let dm = find_or_create_dm(&client, &room_id, &sfu, &mut backlog, config.timeout).await?;

        // The call.
        let ssrcs = match config.ssrcs {
            Some(s) => s,
            None => random_ssrcs()?,
        };
        let ice = IceCredentials {
            ufrag: ice_string(8)?,
            pwd: ice_string(24)?,
        };
        let cert = DtlsCert::generate().map_err(|e| ConferenceError::Store(e.to_string()))?;
        let session_id = random_u64()? >> 2;
        let call_id = format!("{}-{}", now_ms(), ice_string(8)?.replace(['+', '/'], "x"));
        let offer = Offer {
            session_id,
            ssrcs,
            ice: ice.clone(),
            fingerprint: cert.fingerprint(),
            cname: device_id.clone(),
        };
        let invite = json!({
            "call_id": call_id, "party_id": device_id, "version": "1", "lifetime": 60000,
            "invitee": sfu.as_str(),
            "offer": {"type": "offer", "sdp": offer.to_sdp()},
            "org.matrix.msc2359.conference": {"room_id": room_id.as_str(), "conf_id": config.conf_id},
        });
        let invited_at = Instant::now();
        dm.send_raw("m.call.invite", invite).await.map_err(mx)?;
        let deadline = Instant::now() + config.timeout;
        let ((kind, content), dm_after) = loop {
            let resp =
                sync_step(&client, &room_id, &mut backlog, Duration::from_millis(500)).await?;
            if let Some(r) = split_at_reply(dm_events(&resp, dm.room_id()), sfu.as_str(), &call_id)
            {
                break r;
            }
            if Instant::now() > deadline {
                return Err(ConferenceError::Timeout("the SFU's answer"));
            }
        };
        if kind == "m.call.hangup" {
            return Err(ConferenceError::Hangup {
                code: content["org.matrix.msc2359.reason"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned(),
                reason: content["reason"].as_str().unwrap_or("").to_owned(),
            });
        }
        let answer = Answer::parse(content["answer"]["sdp"].as_str().unwrap_or(""))?;
        let relay = *answer
            .candidates
            .first()
            .ok_or(AnswerError::Missing("candidate"))?;

        let key = random_key(config.profile)?;
        let master = MasterKey::new(config.profile, &key)
            .map_err(|e| ConferenceError::Participant(crate::ParticipantError::Srtp(e)))?;
        let mut pcfg = ParticipantConfig::new(
            ice,
            answer.ice.clone(),
            relay,
            cert,
            answer.fingerprint,
            dtls_config()?,
            ssrcs,
            master,
            random_u64()?,
        );
        // Estimate our downlink from the abs-send-time our offer declares (every
        // participant built on this library stamps it with that id) and tell the relay
        // in REMBs.
        pcfg.bwe = crate::sdp::OFFER_EXTMAP.abs_send_time;
        // Stamp transport-wide sequence numbers (the Driver does) and estimate our
        // uplink from the relay's transport-cc feedback about them.
        pcfg.transport_cc = crate::sdp::OFFER_EXTMAP.transport_cc;
        // Other members' video carries frame marking with that id: no keyframe request
        // when the relay resumes a layer at a keyframe.
        pcfg.frame_marking = crate::sdp::OFFER_EXTMAP.frame_marking;
        let now = Instant::now();
        let participant = Participant::new(pcfg, now)?;
        let driver = match config.media {
            MediaMode::None => None,
            MediaMode::Synthetic { epoch, seed } | MediaMode::SyntheticVideo { epoch, seed } => {
                let d = crate::Driver::for_participant(
                    &participant,
                    SenderId(u64::from(ssrcs.audio.0)),
                    crate::sdp::OFFER_EXTMAP,
                    epoch,
                    seed,
                    now,
                );
                Some(match config.media {
                    MediaMode::SyntheticVideo { .. } => d.without_audio(),
                    _ => d,
                })
            }
        };
        let bind: SocketAddr = match relay.ip() {
            IpAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            IpAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let sock = std::net::UdpSocket::bind(bind)?;
        sock.set_nonblocking(true)?;
        let (tx, rx) = mpsc::channel(EVENT_QUEUE);
        let inner = Arc::new(Inner {
            client,
            room,
            dm,
            sfu,
            conf_id: config.conf_id.clone(),
            call_id,
            device_id,
            ssrcs,
            relay,
            invited_at,
            answered_at: now,
            report_sent: config.report_sent,
            state: Mutex::new(State {
                participant,
                driver,
                roster: Roster::default(),
                keys: LocalKeys::new(key),
                profile: config.profile,
                late: Late::default(),
            }),
            events: tx,
            counters: Counters::default(),
            wake: tokio::sync::Notify::new(),
            publishing: tokio::sync::Mutex::new(()),
            hung_up: AtomicBool::new(false),
            withheld: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            sock: sock.try_clone()?,
        });
        let media = media::start(inner.clone(), sock).await?;
        // From here a failed (or abandoned) join drops `conf`, which stops the media
        // loop and tells the relay we left (if DTLS was up); a failed one also hangs up
        // the call it placed, so the SFU ends it at once whatever the relay saw.
        let mut conf = Conference {
            inner: inner.clone(),
            events: rx,
            tasks: vec![media],
        };
        let ready = match inner.publish_keys().await {
            Ok(()) => conf.subscribe(&config.subscription).await,
            Err(e) => Err(e),
        };
        if let Err(e) = ready {
            // Best effort: the error that stopped the join is the one to report.
            let _ = conf.hang_up_sfu("unknown_error").await;
            return Err(e);
        }
        conf.tasks
            .push(tokio::spawn(sync_loop(inner, backlog, dm_after)));
        Ok(conf)
    }

    /// The next event; `None` once the conference's tasks have stopped.
    pub async fn next_event(&mut self) -> Option<ConferenceEvent> {
        self.events.recv().await
    }

    /// An event if one is waiting.
    pub fn try_next_event(&mut self) -> Option<ConferenceEvent> {
        self.events.try_recv().ok()
    }

    /// Replaces our full-resolution subscription.
    pub async fn subscribe(&self, sub: &Subscription) -> Result<(), ConferenceError> {
        let content = json!({
            "call_id": self.inner.call_id, "party_id": self.inner.device_id, "version": "1",
            "full": sub.to_json(),
        });
        self.inner
            .dm
            .send_raw(SUBSCRIBE_EVENT, content)
            .await
            .map_err(mx)?;
        Ok(())
    }

    /// Publishes a fresh key now and switches to it 2 s later (what a member leaving
    /// triggers by itself).
    pub async fn rekey(&self) -> Result<(), ConferenceError> {
        self.inner.rekey().await
    }

    /// Hangs up: tells the members (a key event without streams or keys), then the SFU
    /// (`m.call.hangup`), and stops.
    pub async fn hangup(mut self) -> Result<(), ConferenceError> {
        // After any key event already on its way, and before none.
        let one_at_a_time = self.inner.publishing.lock().await;
        self.inner.hung_up.store(true, Ordering::Release);
        let content = KeyEvent {
            conf_id: self.inner.conf_id.clone(),
            call_id: self.inner.call_id.clone(),
            device_id: self.inner.device_id.clone(),
            streams: Vec::new(),
            profile: None,
            keys: Vec::new(),
        }
        .to_content();
        let members = self.inner.room.send_raw(KEYS_EVENT, content).await;
        drop(one_at_a_time);
        let sfu = self.hang_up_sfu("user_hangup").await;
        self.stop();
        members.map_err(mx)?;
        sfu.map_err(mx)?;
        Ok(())
    }

    /// Sends the SFU our `m.call.hangup` in the DM.
    async fn hang_up_sfu(&self, reason: &str) -> Result<(), ConferenceError> {
        self.inner
            .dm
            .send_raw(
                "m.call.hangup",
                json!({"call_id": self.inner.call_id, "party_id": self.inner.device_id,
                       "version": "1", "reason": reason}),
            )
            .await
            .map(|_| ())
            .map_err(mx)
    }

    fn stop(&mut self) {
        // A rekey the media loop spawned outlives the tasks aborted here: it must not
        // publish our streams for a call that is gone.
        self.inner.hung_up.store(true, Ordering::Release);
        self.inner.stopped.store(true, Ordering::Release);
        self.inner.wake.notify_one();
        for t in self.tasks.drain(..) {
            t.abort();
        }
        // The DTLS close_notify tells the relay at once that we left; the media loop
        // that would send it is stopping, so it goes from here (best effort, no
        // waiting).
        let mut st = self.inner.lock();
        st.participant.close();
        while let Some(t) = st.participant.poll_transmit() {
            let _ = self.inner.sock.send_to(&t.bytes, t.dest);
        }
    }

    /// The Matrix client (for what this type does not wrap).
    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    /// The conference room.
    pub fn room(&self) -> &Room {
        &self.inner.room
    }

    /// Our call id.
    pub fn call_id(&self) -> &str {
        &self.inner.call_id
    }

    /// Our device id (also our `party_id`).
    pub fn device_id(&self) -> &str {
        &self.inner.device_id
    }

    /// Our streams.
    pub fn ssrcs(&self) -> OwnSsrcs {
        self.inner.ssrcs
    }

    /// The relay's address from the answer.
    pub fn relay(&self) -> SocketAddr {
        self.inner.relay
    }

    /// When we sent the SFU our `m.call.invite` (just before its `PUT`): where join
    /// time counts from. Logging in, the room and the DM come before it.
    pub fn invited_at(&self) -> Instant {
        self.inner.invited_at
    }

    /// When our sync saw the SFU's answer.
    pub fn answered_at(&self) -> Instant {
        self.inner.answered_at
    }

    /// The key index we send under.
    pub fn active_key(&self) -> KeyIndex {
        self.inner.lock().keys.active()
    }

    /// Members whose keys are installed, with their sender ids.
    pub fn members(&self) -> Vec<(MemberId, SenderId)> {
        self.inner
            .lock()
            .roster
            .members()
            .map(|m| (MemberId::from(m), m.sender))
            .collect()
    }

    /// Sends one audio packet on our audio SSRC (payload type 111, Opus per RFC 7587;
    /// `timestamp` on the 48 kHz clock), protected with the active key, with its RFC
    /// 6464 `level` if given: the SFU picks the active speaker from the levels, so a
    /// sender without them is never the speaker ([`crate::ogg::audio_levels`] gives
    /// them for encoded audio). `Ok(false)` before media is connected: the packet is
    /// not sent, and the caller decides whether to hold it back or drop it.
    pub fn send_audio(
        &self,
        marker: bool,
        timestamp: u32,
        payload: &[u8],
        level: Option<AudioLevel>,
    ) -> Result<bool, ConferenceError> {
        let audio = self.inner.ssrcs.audio;
        // The extension's one byte under the id our offer negotiated, if any.
        let level_ext = crate::sdp::OFFER_EXTMAP
            .audio_level
            .zip(level.and_then(|l| l.to_byte().ok()));
        if self.inner.is_withheld() {
            return Err(ConferenceError::MediaWithheld);
        }
        let sent = self.with_participant(|p| {
            if !p.is_connected() {
                return Ok(false);
            }
            let extensions = level_ext
                .as_ref()
                .map(|(id, byte)| (*id, std::slice::from_ref(byte)));
            p.send_rtp(
                Instant::now(),
                audio,
                blindfold_relay::id::Pt(111),
                marker,
                blindfold_relay::id::RtpTime(timestamp),
                extensions.as_slice(),
                payload,
            )
            .map(|_| true)
        })?;
        Ok(sent)
    }

    /// The members whose keys are installed, with the streams their key event
    /// declared (SSRC, audio or video, simulcast layer).
    pub fn member_streams(&self) -> Vec<(MemberId, Vec<keys::Stream>)> {
        self.inner
            .lock()
            .roster
            .members()
            .map(|m| (MemberId::from(m), m.streams.clone()))
            .collect()
    }

    /// Runs `f` on the participant engine (stats, keys), under the conference's lock:
    /// keep it short.
    pub fn with_participant<R>(&self, f: impl FnOnce(&mut Participant) -> R) -> R {
        let mut st = self.inner.lock();
        let r = f(&mut st.participant);
        drop(st);
        self.inner.wake.notify_one();
        r
    }

    /// Events dropped because the application did not take them in time: media events
    /// (`Media`, `Sent`, `Undecryptable`) once all but the last 256 places of the
    /// queue are taken, which are kept for the events that change or end the call.
    pub fn dropped_events(&self) -> u64 {
        self.inner.counters.events_dropped.load(Ordering::Relaxed)
    }

    /// Timeline events in `R` we could not decrypt when they came (sent before we
    /// joined, or their megolm key had not come yet). Each is held, up to
    /// [`LATE_EVENTS_HELD`] for up to [`LATE_EVENT_WAIT`], and read when its key comes.
    pub fn undecryptable(&self) -> u64 {
        self.inner.counters.undecryptable.load(Ordering::Relaxed)
    }

    /// Of the [`undecryptable`](Self::undecryptable) events, those read once their
    /// megolm key came.
    pub fn read_late(&self) -> u64 {
        self.inner.counters.read_late.load(Ordering::Relaxed)
    }
}

impl Drop for Conference {
    fn drop(&mut self) {
        self.stop();
    }
}

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

/// Our unencrypted DM with the SFU (`m.direct`), created if there is none, once the SFU
/// has joined it.
async fn find_or_create_dm(
    client: &Client,
    room_id: &RoomId,
    sfu: &UserId,
    backlog: &mut Vec<TimelineEvent>,
    timeout: Duration,
) -> Result<Room, ConferenceError> {
    let mut found = None;
    for r in client.get_dm_rooms(sfu) {
        let encrypted = r
            .latest_encryption_state()
            .await
            .map_err(mx)?
            .is_encrypted();
        let members = r
            .members(RoomMemberships::JOIN | RoomMemberships::INVITE)
            .await
            .map_err(mx)?;
        let sfu_in = members.iter().any(|m| m.user_id() == sfu);
        // The SFU answers only in a room nobody else shares (its `not_a_dm`).
        let only_us = members
            .iter()
            .all(|m| m.user_id() == sfu || Some(m.user_id()) == client.user_id());
        // Nor one anyone may read, or join without an invite (members of a space
        // included).
        let open = r.history_visibility() == Some(HistoryVisibility::WorldReadable)
            || matches!(
                r.join_rule(),
                Some(JoinRule::Public | JoinRule::Restricted(_) | JoinRule::KnockRestricted(_))
            );
        if !encrypted && sfu_in && only_us && !open {
            found = Some(r);
            break;
        }
    }
    let dm = match found {
        Some(r) => r,
        None => {
            let mut req = create_room::v3::Request::new();
            req.is_direct = true;
            req.preset = Some(create_room::v3::RoomPreset::TrustedPrivateChat);
            req.invite = vec![sfu.to_owned()];
            // create_room also marks it in m.direct (matrix-sdk).
            client.create_room(req).await.map_err(mx)?
        }
    };
    let deadline = Instant::now() + timeout;
    while !joined(&dm, sfu).await {
        if Instant::now() > deadline {
            return Err(ConferenceError::Timeout("the SFU to join the DM"));
        }
        sync_step(client, room_id, backlog, Duration::from_millis(500)).await?;
    }
    Ok(dm)
}

/// Syncs until the conference ends, handling `R`'s key events and membership and, in
/// the DM, the SFU's hangup, speaker changes and other calls' ends. `backlog`: `R`'s
/// events the join's syncs brought; `dm`: the DM's events that came after the answer
/// in the join's last sync.
async fn sync_loop(inner: Arc<Inner>, mut backlog: Vec<TimelineEvent>, mut dm: Vec<Value>) {
    let room_id = inner.room.room_id().to_owned();
    let dm_id = inner.dm.room_id().to_owned();
    let me = inner.client.user_id().map(ToOwned::to_owned);
    // The join's syncs may have brought a key after the event it decrypts.
    let mut keys_came = true;
    // What followed the answer may be the SFU's hangup already.
    if let Some(end) = hung_up(&dm, inner.sfu.as_str(), &inner.call_id) {
        inner.emit(end);
        return;
    }
    loop {
        if !backlog.is_empty() || keys_came {
            let events = std::mem::take(&mut backlog);
            handle_room_events(&inner, events, false, keys_came).await;
        }
        // The DM after R, as within one sync: a member's key event and the SFU's word
        // that its call ended can come together, and the end must find the member.
        handle_dm_events(&inner, std::mem::take(&mut dm)).await;
        if let Some(reason) = ended(&inner).await {
            inner.emit(ConferenceEvent::ended(reason));
            return;
        }
        let resp = match inner.client.sync_once(loop_sync_settings()).await {
            Ok(r) => r,
            Err(_) => {
                // A homeserver hiccup: try again shortly rather than end the call. What
                // the failed sync processed is not known: keys may have come.
                keys_came = true;
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        if resp.rooms.left.contains_key(&room_id) {
            inner.emit(ConferenceEvent::ended("we left the conference room"));
            return;
        }
        dm = dm_events(&resp, &dm_id);
        if let Some(end) = hung_up(&dm, inner.sfu.as_str(), &inner.call_id) {
            inner.emit(end);
            return;
        }
        // Room keys come in to-device messages: held events may decrypt now.
        keys_came = !resp.to_device.is_empty();
        // R's events first, those a key of this sync decrypts included: a member's key
        // event and the SFU's word that its call ended can come in one sync, and the
        // end must find the member installed.
        let update = resp.rooms.joined.get(&room_id);
        if update.is_some() || keys_came {
            let mut left = false;
            if let Some(update) = update {
                backlog.extend(update.timeline.events.iter().cloned());
                // A gappy sync brings the leaves that fell in its gap as state, not in
                // the timeline.
                let (SyncState::Before(state) | SyncState::After(state)) = &update.state;
                let me = me.as_deref().map_or("", |u| u.as_str());
                left = state.iter().any(|raw| {
                    serde_json::from_str::<Value>(raw.json().get()).is_ok_and(|v| left_room(&v, me))
                });
            }
            // State-only changes count too (a call member gone from the room).
            handle_room_events(&inner, std::mem::take(&mut backlog), left, keys_came).await;
            keys_came = false;
        }
        // The DM's speaker changes and other calls' ends: at the top of the loop.
    }
}

/// The conference's end, if the DM's `events` hold the SFU's hangup of our call.
fn hung_up(events: &[Value], sfu: &str, call_id: &str) -> Option<ConferenceEvent> {
    let (_, v) = our_call_event(events, sfu, call_id, &["m.call.hangup"])?;
    let code = v["content"]["org.matrix.msc2359.reason"]
        .as_str()
        .unwrap_or("");
    Some(ConferenceEvent::Ended {
        reason: format!("the SFU hung up: {code}"),
        call_again: code == CALL_AGAIN,
    })
}

/// Acts on the SFU's speaker changes and other calls' ends among the DM's `events`.
async fn handle_dm_events(inner: &Inner, events: Vec<Value>) {
    let mut ended_calls = Vec::new();
    for v in &events {
        if let Some(member) = active_speaker(v, inner.sfu.as_str(), &inner.call_id) {
            inner.emit(ConferenceEvent::ActiveSpeaker { member });
        } else if let Some(ended) = member_ended(v, inner.sfu.as_str(), &inner.call_id) {
            ended_calls.push(ended);
        }
    }
    if !ended_calls.is_empty() {
        end_calls(inner, ended_calls).await;
    }
}

/// Why the conference is over, if it is.
async fn ended(inner: &Inner) -> Option<String> {
    match conference_sfu(&inner.room, &inner.conf_id).await {
        Ok(Some(sfu)) if sfu == inner.sfu => None,
        Ok(Some(_)) => Some("the conference moved to another SFU".into()),
        Ok(None) => Some("the conference has ended".into()),
        Err(_) => None,
    }
}

/// Tries the events of `R` held undecryptable again; returns those that now decrypt,
/// with their positions, oldest first, and holds the others again. Newest first: a
/// megolm key shared with us late decrypts a session's messages from some index on,
/// so once one of a session fails, the session's older ones are not tried.
async fn decrypt_held(inner: &Inner) -> Vec<(u64, TimelineEvent)> {
    let held = inner.lock().late.take(Instant::now());
    let mut read = Vec::new();
    let mut still = Vec::new();
    let mut missing: Vec<String> = Vec::new();
    for h in held.into_iter().rev() {
        if h.session.as_ref().is_some_and(|s| missing.contains(s)) {
            still.push(h);
            continue;
        }
        match inner.room.decrypt_event(&h.raw, None).await {
            Ok(e) if !e.kind.is_utd() => read.push((h.position, e)),
            _ => {
                missing.extend(h.session.clone());
                still.push(h);
            }
        }
    }
    still.reverse();
    read.reverse();
    inner.lock().late.put_back(still);
    inner
        .counters
        .read_late
        .fetch_add(read.len() as u64, Ordering::Relaxed);
    read
}

/// Key events, then members who left: install, re-send, rekey. `left`: someone left
/// `R` in a part of the sync the timeline does not show. `keys_came`: room keys came
/// since the last call, so the events held undecryptable (`events`' own included) are
/// tried again, and those that decrypt now are read with `events` in timeline order.
async fn handle_room_events(
    inner: &Inner,
    events: Vec<TimelineEvent>,
    left: bool,
    keys_came: bool,
) {
    let mut resend = false;
    let mut rekey = left;
    // (position, event, read late)
    let mut read: Vec<(u64, TimelineEvent, bool)> = Vec::new();
    {
        let mut st = inner.lock();
        for e in events {
            let position = st.late.position();
            if e.kind.is_utd() {
                inner.counters.undecryptable.fetch_add(1, Ordering::Relaxed);
                st.late
                    .hold(Instant::now(), e.into_raw().cast_unchecked(), position);
            } else {
                read.push((position, e, false));
            }
        }
    }
    if keys_came {
        let late = decrypt_held(inner).await;
        read.extend(late.into_iter().map(|(p, e)| (p, e, true)));
        read.sort_by_key(|(p, _, _)| *p);
    }
    for (position, e, late) in &read {
        let Ok(v) = serde_json::from_str::<Value>(e.raw().json().get()) else {
            continue;
        };
        if left_room(&v, inner.client.user_id().map_or("", |u| u.as_str())) {
            // Whoever leaves R had R's megolm keys, so it read our key events: a
            // member who never joined the call is locked out as one who did.
            rekey = true;
            continue;
        }
        if v["type"] != KEYS_EVENT {
            continue;
        }
        let Some(sender) = v["sender"].as_str() else {
            continue;
        };
        match accept_key_event(inner, sender, &v["content"], e, *position).await {
            Ok(None) => {}
            Ok(Some(Accepted::New(_) | Accepted::Replaced { .. })) => resend = true,
            Ok(Some(Accepted::Ended(_))) => rekey = true,
            Ok(Some(_)) => {}
            // Read late from someone who has left R since: nothing to report.
            Err(KeyEventError::NotJoined) if *late => {}
            Err(reason) => inner.emit(ConferenceEvent::KeysRejected {
                user_id: sender.to_owned(),
                reason,
            }),
        }
    }
    // Members whose user is no longer joined to R.
    let users: Vec<String> = inner
        .lock()
        .roster
        .members()
        .map(|m| m.user_id.clone())
        .collect();
    for user in users {
        let Ok(uid) = UserId::parse(user.as_str()) else {
            continue;
        };
        if joined(&inner.room, &uid).await {
            continue;
        }
        let mut st = inner.lock();
        let gone: Vec<_> = st
            .roster
            .members()
            .filter(|m| m.user_id == user)
            .map(MemberId::from)
            .collect();
        for s in st.roster.remove_user(&user) {
            st.participant.remove_remote_sender(s);
        }
        drop(st);
        for member in gone {
            inner.emit(ConferenceEvent::MemberLeft { member });
        }
        rekey = true;
    }
    // A rekey publishes our key set anyway, which serves the newcomer too.
    if rekey || resend {
        inner.publish_or_withhold(rekey).await;
    }
}

/// Whether `event` is another user's membership leaving `join` or `invite` (a leave,
/// kick or ban; a declined or withdrawn invite); a membership whose previous state the
/// server did not say counts as one. An invited user's devices get the room's megolm
/// keys (matrix-sdk shares them with invited members unless the history visibility is
/// `joined`), so they may have read our media key.
fn left_room(event: &Value, own_user: &str) -> bool {
    event["type"] == "m.room.member"
        && event["state_key"].as_str().is_some_and(|u| u != own_user)
        && matches!(
            event["content"]["membership"].as_str(),
            Some("leave" | "ban")
        )
        && event["unsigned"]["prev_content"]["membership"]
            .as_str()
            .is_none_or(|m| m == "join" || m == "invite")
}

/// docs/protocol.md's trust rules, then the roster's, then the participant's.
/// `Ok(None)`: not for us (another conference, our own echo).
async fn accept_key_event(
    inner: &Inner,
    sender: &str,
    content: &Value,
    e: &TimelineEvent,
    position: u64,
) -> Result<Option<Accepted>, KeyEventError> {
    // Another conference's key events are ignored, not refused, whatever their shape.
    if content["conf_id"].as_str() != Some(inner.conf_id.as_str()) {
        return Ok(None);
    }
    let ev = KeyEvent::from_content(content)?;
    if inner.client.user_id().map(|u| u.as_str()) == Some(sender) && ev.device_id == inner.device_id
    {
        return Ok(None);
    }
    let info = e.encryption_info().ok_or(KeyEventError::NotEncrypted)?;
    let actual = info.sender_device.as_ref().map(|d| d.to_string());
    let linked = !matches!(
        info.verification_state,
        VerificationState::Unverified(VerificationLevel::MismatchedSender)
            | VerificationState::Unverified(VerificationLevel::None(_))
    );
    if info.sender.as_str() != sender || actual.as_deref() != Some(ev.device_id.as_str()) || !linked
    {
        return Err(KeyEventError::WrongDevice {
            claimed: ev.device_id.clone(),
            actual: actual.unwrap_or_else(|| "unknown".into()),
        });
    }
    let uid = UserId::parse(sender).map_err(|e| KeyEventError::Malformed(e.to_string()))?;
    if !joined(&inner.room, &uid).await {
        return Err(KeyEventError::NotJoined);
    }
    let mut st = inner.lock();
    // Read late, behind a newer key event of that device (it was replaced already, or
    // the device moved on to another call), or for a call that ended: the member is
    // gone.
    if st.late.is_older(sender, &ev.device_id, position)
        || st
            .late
            .moved_on(sender, &ev.device_id, &ev.call_id, position)
        || st.late.call_ended(sender, &ev.device_id, &ev.call_id)
    {
        return Ok(None);
    }
    st.late.saw(sender, &ev.device_id, &ev.call_id, position);
    let accepted = st.roster.accept(sender, &ev, inner.ssrcs)?;
    if !matches!(
        accepted,
        Accepted::New(_) | Accepted::Replaced { .. } | Accepted::Update(_)
    ) {
        st.late.applied(sender, &ev.device_id, position);
    }
    if ev.streams.is_empty() {
        st.late.ended(sender, &ev.device_id, &ev.call_id);
    }
    let member = MemberId {
        user_id: sender.to_owned(),
        device_id: ev.device_id.clone(),
    };
    let sender_id = match accepted {
        Accepted::Ignored => return Ok(Some(accepted)),
        Accepted::Ended(s) => {
            st.participant.remove_remote_sender(s);
            drop(st);
            inner.emit(ConferenceEvent::MemberLeft { member });
            return Ok(Some(accepted));
        }
        Accepted::Replaced { old, new } => {
            st.participant.remove_remote_sender(old);
            new
        }
        Accepted::New(s) | Accepted::Update(s) => s,
    };
    let profile = ev.profile.unwrap_or(SrtpProfile::AeadAes128Gcm);
    let keys: Vec<(KeyIndex, &[u8])> = ev.keys.iter().map(|(i, k)| (*i, k.as_slice())).collect();
    if let Err(err) =
        st.participant
            .install_remote_keys(sender_id, &ev.remote_streams(), profile, &keys)
    {
        if !matches!(accepted, Accepted::Update(_)) {
            st.roster.forget(sender_id);
        }
        return Err(KeyEventError::Install(err.to_string()));
    }
    st.late.applied(sender, &ev.device_id, position);
    let indexes = st.participant.remote_keys(sender_id).unwrap_or_default();
    drop(st);
    inner.wake.notify_one();
    inner.emit(ConferenceEvent::KeysAccepted {
        member,
        sender: sender_id,
        indexes,
    });
    Ok(Some(accepted))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The store holds the access token and the E2EE keys: nobody else may read it.
    #[test]
    fn the_store_is_private_to_its_user() {
        use std::os::unix::fs::PermissionsExt;
        let root = std::env::temp_dir().join(format!("bf-private-{}", std::process::id()));
        let dir = root.join("a/store");
        create_private_dir(&dir).unwrap();
        let file = dir.join("session.json");
        write_private(&file, b"{}").unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&root.join("a")), 0o700);
        assert_eq!(mode(&file), 0o600);
        std::fs::remove_dir_all(&root).unwrap();
    }

    /// A key event names only two profiles: another would publish keys nobody can read.
    #[test]
    fn a_profile_key_events_cannot_name_is_refused_before_anything_else() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        for profile in [SrtpProfile::AeadAes256Gcm, SrtpProfile::AesCm128HmacSha1_32] {
            let mut config = ConferenceConfig::new(
                "http://127.0.0.1:9",
                Login::Password {
                    user: "@a:example.org".into(),
                    password: "p".into(),
                },
                std::env::temp_dir().join("bf-unnamed-profile"),
                "!r:example.org",
                "c",
            );
            config.profile = profile;
            match rt.block_on(Conference::join(config)) {
                Err(ConferenceError::UnnamedProfile(p)) => assert_eq!(p, profile),
                Err(e) => panic!("{e}"),
                Ok(_) => panic!("joined"),
            }
        }
    }

    #[test]
    fn media_events_leave_room_for_the_ones_that_end_the_call() {
        let (tx, mut rx) = mpsc::channel(EVENT_QUEUE);
        let undecryptable = || ConferenceEvent::Undecryptable {
            ssrc: Ssrc(7),
            from: None,
            reason: crate::DropReason::UnknownSsrc,
        };
        // A flood of undecryptable datagrams nobody takes: it stops short of full.
        let queued = (0..EVENT_QUEUE)
            .filter(|_| offer(&tx, undecryptable()))
            .count();
        assert_eq!(queued, EVENT_QUEUE - CONTROL_RESERVE);
        // The call's end still goes in, and comes out after the flood.
        let ended = || ConferenceEvent::ended("the SFU hung up");
        assert!(offer(&tx, ended()));
        for _ in 0..queued {
            assert!(matches!(
                rx.try_recv(),
                Ok(ConferenceEvent::Undecryptable { .. })
            ));
        }
        assert!(matches!(rx.try_recv(), Ok(ConferenceEvent::Ended { .. })));
        // Only a queue full to the last place refuses the others.
        let queued = (0..EVENT_QUEUE).filter(|_| offer(&tx, ended())).count();
        assert_eq!(queued, EVENT_QUEUE);
        assert!(!offer(&tx, ended()));
    }

    /// The SFU's word that another call ended, or a speaker change, can come in the
    /// same sync as our answer: the join hands it on, it is not dropped with the sync.
    #[test]
    fn what_follows_the_answer_in_its_sync_is_kept() {
        let me = UserId::parse("@me:example.org").unwrap();
        let sfu = "@sfu:example.org";
        let ev = |sender: &str, kind: &str, content: Value| json!({"type": kind, "sender": sender, "content": content});
        let ended = ev(
            sfu,
            MEMBER_ENDED_EVENT,
            json!({"call_id": "ours", "member": {"user_id": "@bob:example.org",
                   "party_id": "BOB", "call_id": "bobs"}}),
        );
        let events = vec![
            ev(me.as_str(), "m.call.invite", json!({"call_id": "ours"})),
            ev(sfu, "m.call.answer", json!({"call_id": "older"})),
            // Someone else in the DM answering our call is not the SFU.
            ev(
                "@mallory:example.org",
                "m.call.answer",
                json!({"call_id": "ours", "answer": {"sdp": "v=1"}}),
            ),
            ev(
                sfu,
                "m.call.answer",
                json!({"call_id": "ours", "answer": {"sdp": "v=0"}}),
            ),
            ended.clone(),
        ];
        let ((kind, content), after) = split_at_reply(events, sfu, "ours").unwrap();
        assert_eq!(
            (kind.as_str(), &content["answer"]["sdp"]),
            ("m.call.answer", &json!("v=0"))
        );
        assert_eq!(after, std::slice::from_ref(&ended));
        let bob = member_ended(&after[0], sfu, "ours").unwrap();
        assert_eq!((bob.0.device_id.as_str(), bob.1.as_str()), ("BOB", "bobs"));
        // Our own hangup is not the SFU's, nor is another's or a repeated answer; the
        // SFU's hangup after them is.
        let hangup = ev(
            sfu,
            "m.call.hangup",
            json!({"call_id": "ours",
            "org.matrix.msc2359.reason": "relay_failed"}),
        );
        let events = vec![
            ev(me.as_str(), "m.call.hangup", json!({"call_id": "ours"})),
            ev(
                "@mallory:example.org",
                "m.call.hangup",
                json!({"call_id": "ours"}),
            ),
            ev(sfu, "m.call.answer", json!({"call_id": "ours"})),
            hangup,
        ];
        assert!(matches!(
            hung_up(&events, sfu, "ours"),
            Some(ConferenceEvent::Ended { reason, call_again: false }) if reason.ends_with("relay_failed")
        ));
        assert!(split_at_reply(vec![ended], sfu, "ours").is_none());
    }

    #[test]
    fn the_sfus_active_speaker_event_for_our_call_names_a_member() {
        // docs/protocol.md, "Active speaker".
        let ev = json!({"type": "org.matrix.msc2359.call.active_speaker",
            "sender": "@sfu:example.org", "content": {
            "call_id": "1733094000123-alice", "party_id": "SFUDEVICE", "version": "1",
            "speaker": {"user_id": "@bob:example.org", "party_id": "BOBDEVICE"}}});
        let sfu = "@sfu:example.org";
        assert_eq!(
            active_speaker(&ev, sfu, "1733094000123-alice"),
            Some(MemberId {
                user_id: "@bob:example.org".into(),
                device_id: "BOBDEVICE".into()
            })
        );
        // Another call's, someone else's, another type, or malformed: nothing.
        assert_eq!(active_speaker(&ev, sfu, "other-call"), None);
        assert_eq!(
            active_speaker(&ev, "@mallory:example.org", "1733094000123-alice"),
            None
        );
        let mut other = ev.clone();
        other["type"] = json!("m.call.hangup");
        assert_eq!(active_speaker(&other, sfu, "1733094000123-alice"), None);
        let mut bad = ev.clone();
        bad["content"]["speaker"] = json!("@bob:example.org");
        assert_eq!(active_speaker(&bad, sfu, "1733094000123-alice"), None);
    }

    #[test]
    fn the_sfus_member_ended_event_for_our_call_names_a_members_call() {
        // The example of docs/protocol.md, "A member's call ended".
        let doc = include_str!("../../../docs/protocol.md");
        let at = doc
            .find("\"org.matrix.msc2359.call.member_ended\"")
            .unwrap();
        let start = doc[..at].rfind("```json\n").unwrap() + 8;
        let end = start + doc[start..].find("```").unwrap();
        let mut ev: Value = serde_json::from_str(&doc[start..end]).unwrap();
        ev["sender"] = json!("@sfu:example.org");
        let sfu = "@sfu:example.org";
        let bob = MemberId {
            user_id: "@bob:example.org".into(),
            device_id: "BOBDEVICE".into(),
        };
        assert_eq!(
            member_ended(&ev, sfu, "1733094000123-alice"),
            Some((bob, "1733094000456-bob".into()))
        );
        // Another call's, someone else's, another type, or malformed: nothing.
        assert_eq!(member_ended(&ev, sfu, "other-call"), None);
        assert_eq!(
            member_ended(&ev, "@mallory:example.org", "1733094000123-alice"),
            None
        );
        let mut other = ev.clone();
        other["type"] = json!(ACTIVE_SPEAKER_EVENT);
        assert_eq!(member_ended(&other, sfu, "1733094000123-alice"), None);
        for ptr in [
            "/content/member/call_id",
            "/content/member/party_id",
            "/content/member",
        ] {
            let mut bad = ev.clone();
            *bad.pointer_mut(ptr).unwrap() = json!(7);
            assert_eq!(
                member_ended(&bad, sfu, "1733094000123-alice"),
                None,
                "{ptr}"
            );
        }
    }

    #[test]
    fn any_member_leaving_the_room_is_a_leave_that_rekeys() {
        let me = "@alice:example.org";
        let member = |who: &str, now: &str, before: Option<&str>| {
            let mut ev = json!({"type": "m.room.member", "state_key": who,
                "sender": who, "content": {"membership": now}});
            if let Some(b) = before {
                ev["unsigned"] = json!({"prev_content": {"membership": b}});
            }
            ev
        };
        // Left, kicked or banned from `join` (or from a state the server did not say).
        assert!(left_room(
            &member("@eve:example.org", "leave", Some("join")),
            me
        ));
        assert!(left_room(
            &member("@eve:example.org", "ban", Some("join")),
            me
        ));
        assert!(left_room(&member("@eve:example.org", "leave", None), me));
        // Invited, who may hold the room's megolm keys: a declined or withdrawn
        // invite, or a ban.
        assert!(left_room(
            &member("@eve:example.org", "leave", Some("invite")),
            me
        ));
        assert!(left_room(
            &member("@eve:example.org", "ban", Some("invite")),
            me
        ));
        // Never invited or joined (a knock turned down), a join, ourselves, another
        // event: no.
        assert!(!left_room(
            &member("@eve:example.org", "leave", Some("knock")),
            me
        ));
        assert!(!left_room(
            &member("@eve:example.org", "join", Some("leave")),
            me
        ));
        assert!(!left_room(&member(me, "leave", Some("join")), me));
        let mut other = member("@eve:example.org", "leave", Some("join"));
        other["type"] = json!("m.room.topic");
        assert!(!left_room(&other, me));
    }
}
