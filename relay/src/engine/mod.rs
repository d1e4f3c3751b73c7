//! The relay engine: one per worker (shard), sans-IO.
//!
//! The engine never touches a socket, a thread or the clock. The shell feeds it and
//! drains it in this order:
//!
//! 1. [`Engine::handle_datagram`] for every received datagram. For media it answers
//!    [`Handled::Forward`] with the addresses to send the *unchanged* receive buffer to —
//!    the shell hands buffer and addresses to one `sendmmsg`, nothing is copied.
//! 2. [`Engine::handle_command`] for control-socket rules and messages from other shards.
//! 3. [`Engine::handle_timeout`] when [`Engine::poll_timeout`] is reached.
//! 4. Then drain [`Engine::poll_transmit`] (datagrams the engine wrote: STUN answers,
//!    DTLS flights, RTCP) and [`Engine::poll_event`] (notifications for the control
//!    socket, messages for other shards) until both say `None`.
//!
//! # Shards
//!
//! Every worker's socket is bound with `SO_REUSEPORT` to the one public port, so the
//! kernel sends all datagrams of one client address to the same worker. Every shard
//! knows every session (the control thread sends each rule to all of them); the shard
//! that answers a session's first valid ICE check *claims* it and runs its ICE, DTLS and
//! SRTCP ("home shard"). It tells the others with [`PeerMsg`]s, so each shard's fan-out
//! tables list every connected receiver of the conference, wherever it lives: any shard
//! may send to any address from its own socket. What needs ordered per-destination state
//! (an SRTCP index) goes to the destination's home shard as a message.
//!
//! A session's other addresses (a second interface, IPv6 beside IPv4, the new address
//! after a NAT rebinding or a network switch) may hash to other workers. Any shard
//! answers a valid check itself ([`IceLite::answer`]: the credentials are on every
//! shard) and tells the home ([`PeerMsg::Checked`]), whose agent records it. From then
//! on, that shard finds the address in its own table: it forwards the session's media
//! from it exactly as the home would (its fan-out tables are complete, nothing is
//! locked or copied), hands the rare datagrams that need the home's state — DTLS, and
//! SRTCP to decrypt — to the home ([`PeerMsg::Datagram`]), and keeps the home's consent
//! timer fed ([`PeerMsg::Alive`], at most one per [`ALIVE_EVERY`]).
//!
//! Bandwidth (see `bandwidth.rs`): a receiver's downlink estimate and its layer choice
//! per subscribed full-resolution layer run on the receiver's home; which layer each
//! receiver gets is announced to every shard ([`PeerMsg::LayerState`]); the shard
//! where a sender's media arrives switches a receiver up at the layer's next keyframe
//! and measures each stream's rate ([`PeerMsg::StreamRate`]); a full layer's rate clamp
//! runs on its sender's home ([`PeerMsg::ViewerRate`], [`PeerMsg::Demote`]). A
//! sender's uplink is estimated where its media arrives, from the loss in its sequence
//! numbers and the delay in its abs-send-time ([`bwe`]), and the estimate goes to its home ([`PeerMsg::Uplink`]), which asks
//! the sender to fit its full layer under it.
//!
//! A conference's active-speaker detector runs on one shard every shard computes
//! from the conference id (its *speaker shard*); the shards where its members' audio
//! lands pass speech on to it as [`PeerMsg::Speech`] (see `speaker.rs`).
//!
//! # What is checked per packet
//!
//! Media is forwarded only from a session's ICE-nominated address, after its DTLS
//! handshake completed (so the peer proved the certificate fingerprint signaling
//! pinned), on an SSRC the session declared — and only to receivers that meet the same
//! bar. Everything else is dropped with a [`DropReason`] and counted.

// The engine by packet-path stage: each file adds its part of `impl Engine`.
mod bandwidth;
mod commands;
mod drop;
mod fanout;
mod handshake;
mod media;
mod peers;
mod rtp;
mod rules;
mod slab;
mod speaker;
mod srtcp;
mod stun;
mod timers;
mod txqueue;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use drop::{DropReason, RtcpDrop};
pub use media::bwe;
pub use media::uplink;
pub use rules::{
    ConfName, EndReason, ExtensionIds, FullSet, Layer, MediaKind, SessionEvent, SessionName,
    SessionRule, StreamRule,
};
pub use txqueue::{SLOT_LEN, Transmit};

use crate::dtls::{self, DtlsCert, DtlsConfig, DtlsError, DtlsEvent, DtlsSession, SrtpKeyMaterial};
use crate::ice::{self, IceLite, IceLiteConfig, IceOutcome};
use crate::id::{Ssrc, WireSeq};
use crate::srtp::{SrtpContext, SrtpProfile};
use crate::wire::rtcp::{self, ProbeMessage, ProbeReport, RtcpCompound, RtcpPacket};
use crate::wire::rtp::RtpHeader;
use crate::wire::stun::StunMessage;
use crate::wire::{self, Kind};
use slab::{Slab, handle};
use timers::{Due, Timers};
use txqueue::TxQueue;

type FastMap<K, V> = HashMap<K, V, foldhash::fast::FixedState>;

/// How often a shard that forwards a session's media from an address homed elsewhere
/// tells the home the session is alive: well inside the 30 s silence timeout, and rare
/// enough to cost nothing.
pub const ALIVE_EVERY: Duration = Duration::from_secs(1);

/// The longest a connected participant goes without SRTCP from the relay: a session
/// sent nothing else for this long gets an empty receiver report. A participant that
/// hears nothing for several of these while its consent checks are answered knows the
/// relay lost its session (a restart) and connects again (docs/protocol.md).
pub const RTCP_EVERY: Duration = Duration::from_secs(1);

/// Which worker an engine is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShardId(pub u16);

/// Engine settings.
#[derive(Clone)]
pub struct EngineConfig {
    /// This engine's shard.
    pub shard: ShardId,
    /// The relay's DTLS certificate (shared by all shards).
    pub cert: Arc<DtlsCert>,
    /// DTLS settings, built once per process.
    pub dtls: Arc<DtlsConfig>,
    /// At most one keyframe request per stream in this interval, whatever the number of
    /// requesters (docs/design.md: 300 ms).
    pub keyframe_interval: Duration,
    /// And at most this many per stream in any rolling second (1 to 8).
    pub keyframe_max_per_second: u32,
    /// A session with no valid packet for this long is closed (docs/design.md: 30 s). Also
    /// the time a session may take to send its first valid ICE check.
    pub silence_timeout: Duration,
    /// The SSRC the relay puts in the RTCP it originates (PLI).
    pub relay_ssrc: Ssrc,
    /// Capacity of the queue of engine-written datagrams.
    pub tx_queue: usize,
    /// Bytes of recent packets kept per full-resolution or single-layer video stream to
    /// answer receivers' NACKs (0: none kept, every NACK goes to the sender).
    pub retransmit_full_bytes: usize,
    /// The same for each simulcast thumbnail.
    pub retransmit_thumbnail_bytes: usize,
    /// How long a kept packet may be resent.
    pub retransmit_age: Duration,
    /// How many sequence numbers one receiver may NACK per second, over all the streams
    /// it gets, and at most a second's worth at once; the rest are dropped and counted
    /// (0: no cap).
    pub nack_max_per_second: u32,
    /// How many RTCP packets (inside its compounds; a FIR counts once per stream it
    /// names) one participant may send per second, a second's worth at once; the rest
    /// are dropped and counted (0: no cap).
    pub rtcp_max_per_second: u32,
    /// Packets per second one audio stream may carry, counted over each half second;
    /// the rest are dropped (`over_rate`) before anything reads them (0: no cap). The
    /// relay cannot tell a sender's packets from a spoofer's on the sender's address,
    /// and each goes to every receiver: this bounds what one stream costs.
    pub max_audio_pps: u32,
    /// The same for each video stream (thumbnail, full or single layer).
    pub max_video_pps: u32,
    /// Seed of the hash maps (fixed, so runs are repeatable).
    pub hash_seed: u64,
    /// How many shards the relay runs (every shard must be given the same number): a
    /// conference's speaker detector runs on one of them, chosen from its id.
    pub shards: u16,
    /// After an active-speaker switch, no other switch for this long (the detector's
    /// long time scale; see `media::speaker`).
    pub speaker_hold: Duration,
    /// Layer choice and rate clamping on: each receiver gets a full-resolution layer
    /// it subscribes to only while its downlink estimate allows, switching up at a
    /// keyframe; senders get REMB. Off: every subscriber gets every subscribed layer
    /// at once, and senders get no REMB.
    pub layer_choice: bool,
    /// The wait before the next trial of a full layer after a probe found the link
    /// short of it, and the first after a failed trial (that one doubles after each
    /// failed trial up to `layer_probe_backoff_max`).
    pub layer_probe_backoff: Duration,
    /// The longest wait after failed trials.
    pub layer_probe_backoff_max: Duration,
    /// A trial of a full layer first sends the receiver a probe (a short cluster of
    /// padding in its SRTCP, `media::probe`) at the rate the layer needs, and is
    /// dropped without a byte of the layer sent if the link did not carry it. Off:
    /// trials are blind.
    pub layer_probe_padding: bool,
    /// A viewer whose downlink is below this fraction of the median viewer's is moved
    /// to the thumbnail instead of clamping the sender's full layer to its rate.
    pub clamp_demote_below: f64,
    /// Uplink estimation on: each sender of a full layer that does not stamp
    /// transport-wide sequence numbers has its uplink estimated where its media arrives
    /// (from the loss in its sequence numbers, and with abs-send-time from the delay:
    /// [`bwe`]), and is asked (REMB, or TMMBR) to send its full layer at no more than
    /// the estimate leaves it after its other streams. (One that stamps them gets
    /// transport-cc feedback and estimates its own: [`uplink`].) Off: only its viewers
    /// limit it.
    pub uplink_estimation: bool,
    /// A receiver's round trip (timed from the report blocks that answer the SRs the
    /// relay forwarded it) this far above its lowest is a queue on its downlink, which
    /// brings its estimate down (`media::DownlinkEstimate`). `None`: no queue check.
    pub downlink_queue: Option<Duration>,
}

impl EngineConfig {
    /// Defaults from docs/design.md for one shard.
    pub fn new(shard: ShardId, cert: Arc<DtlsCert>, dtls: Arc<DtlsConfig>) -> Self {
        EngineConfig {
            shard,
            cert,
            dtls,
            keyframe_interval: Duration::from_millis(300),
            keyframe_max_per_second: 2,
            silence_timeout: Duration::from_secs(30),
            relay_ssrc: Ssrc::RELAY,
            tx_queue: 1024,
            // About 1 s of a 3 Mbit/s layer and of a 500 kbit/s thumbnail.
            retransmit_full_bytes: 384 * 1024,
            retransmit_thumbnail_bytes: 64 * 1024,
            retransmit_age: Duration::from_secs(1),
            nack_max_per_second: 250,
            max_audio_pps: 500,
            max_video_pps: 5000,
            rtcp_max_per_second: 500,
            hash_seed: 0x5eed,
            shards: 1,
            speaker_hold: Duration::from_secs(1),
            layer_choice: true,
            layer_probe_backoff: Duration::from_secs(4),
            layer_probe_backoff_max: Duration::from_secs(32),
            layer_probe_padding: true,
            clamp_demote_below: 0.5,
            uplink_estimation: true,
            downlink_queue: media::EstimateConfig::default().queue_high,
        }
    }
}

/// What the engine made of a datagram.
#[derive(Debug, PartialEq, Eq)]
pub enum Handled<'a> {
    /// Media: send the received datagram, unchanged, to each of these addresses (possibly
    /// none: nobody receives this stream right now).
    Forward(&'a [SocketAddr]),
    /// Consumed (STUN, DTLS, RTCP); look at `poll_transmit` and `poll_event`.
    Consumed,
    /// Dropped, and counted.
    Dropped(DropReason),
}

/// A rule or message for the engine.
// RTCP crosses shards inline: boxing it would allocate per forwarded RTCP packet.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Command {
    /// Creates a conference (no-op if it exists).
    UpsertConference(ConfName),
    /// Removes a conference and all its sessions.
    RemoveConference(ConfName),
    /// Creates or updates a session. An identical spec is a no-op; changed streams or
    /// extension ids update it in place; changed credentials, fingerprint or conference
    /// replace it (the old one is closed with [`EndReason::Replaced`]).
    UpsertSession(SessionRule),
    /// Removes a session; its participant stops receiving at once.
    RemoveSession(SessionName),
    /// Sets which full-resolution layers a session receives.
    SetSubscription {
        /// The session.
        session: SessionName,
        /// What it receives at full resolution.
        full: FullSet,
    },
    /// A message from another shard.
    Peer(PeerMsg),
}

/// Which incarnation of a session a [`PeerMsg`] is about: its rule's
/// [`SessionRule::identity`]. An upsert that replaces a session (new credentials,
/// fingerprint or conference, same id) reaches the shards one at a time, so a shard
/// may still run the old incarnation when another asks about, or announces, the new
/// one; each ignores what is about an incarnation it does not hold.
pub type Incarnation = u64;

/// Messages between shards (see the module docs).
// RTCP crosses shards inline: boxing it would allocate per forwarded RTCP packet.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerMsg {
    /// `shard` answered the session's first valid ICE check and runs it now.
    Claimed {
        /// The session.
        session: SessionName,
        /// Which incarnation of it ([`Incarnation`]).
        identity: Incarnation,
        /// Its home shard.
        shard: ShardId,
        /// Its handle there.
        key: SessionHandle,
    },
    /// The session completed ICE and DTLS and receives media at `addr`.
    Connected {
        /// The session.
        session: SessionName,
        /// Which incarnation of it ([`Incarnation`]).
        identity: Incarnation,
        /// Its home shard.
        shard: ShardId,
        /// Its handle there.
        key: SessionHandle,
        /// Its nominated address.
        addr: SocketAddr,
    },
    /// The session no longer receives media.
    Disconnected {
        /// The session.
        session: SessionName,
        /// Which incarnation of it ([`Incarnation`]).
        identity: Incarnation,
    },
    /// Shard `from` just created the session: if it is homed on the shard this reaches,
    /// that shard answers with [`PeerMsg::Claimed`] (and [`PeerMsg::Connected`] if it
    /// is). A session whose participant already holds its credentials (one signaling
    /// gave back after a relay restart, or the same upsert again after it ended) may be
    /// claimed by a quick shard before a slow one has created it, and the slow one drops
    /// messages about sessions it does not know. Not one that must arrive: a snapshot
    /// sends one per session to every shard.
    WhereIs {
        /// The session.
        session: SessionName,
        /// Which incarnation of it ([`Incarnation`]): only a shard that runs that one
        /// answers.
        identity: Incarnation,
        /// The shard asking.
        from: ShardId,
    },
    /// RTCP (plain) to protect with `to`'s SRTCP context and send to it.
    Rtcp {
        /// The receiving session (homed on the shard this is sent to).
        to: SessionHandle,
        /// The plain RTCP packet.
        packet: RtcpBytes,
    },
    /// Receivers asked for a keyframe of `ssrc`, which `owner` (homed on the shard this
    /// is sent to) sends.
    KeyframeRequest {
        /// The sending session.
        owner: SessionHandle,
        /// The stream.
        ssrc: Ssrc,
        /// How it was asked for.
        kind: KeyframeKind,
    },
    /// The receiver at `to` NACKed packets of `ssrc`, which `owner` (homed on the shard
    /// this is sent to, where its media arrives and its retransmission cache is) sends.
    Nack {
        /// The sending session's home shard.
        home: ShardId,
        /// The sending session (its handle on `home`).
        owner: SessionHandle,
        /// The stream.
        ssrc: Ssrc,
        /// The receiver's address (resent packets go there).
        to: SocketAddr,
        /// The plain NACK as the receiver sent it.
        packet: RtcpBytes,
        /// How many of its sequence numbers (the first ones) the receiver's budget
        /// allows.
        allowed: usize,
    },
    /// Another shard answered a valid check of `session` (homed on the shard this is
    /// sent to) from `from`.
    Checked {
        /// The session.
        session: SessionHandle,
        /// The shard that answered it (where datagrams from `from` arrive).
        shard: ShardId,
        /// The check's source address.
        from: SocketAddr,
        /// It carried USE-CANDIDATE.
        nominated: bool,
    },
    /// A datagram that needs the home's state (DTLS, or SRTCP to decrypt) and reached
    /// another shard, to be handled as if the home had received it from `from`.
    /// Boxed: these are rare (a handshake, a few RTCP packets a second), and carrying a
    /// whole datagram inline would grow every message in every worker's queue.
    Datagram {
        /// The session (homed on the shard this is sent to).
        session: SessionHandle,
        /// Where it came from.
        from: SocketAddr,
        /// The datagram as received.
        data: Box<[u8]>,
    },
    /// A sender report of `sender` about `ssrc`, for the receivers of that stream homed
    /// on the shard this is sent to (one message per shard, not per receiver).
    SenderReport {
        /// The sender's home shard, which sends this.
        home: ShardId,
        /// The session that sent it, by its handle on its home shard.
        sender: SessionHandle,
        /// The stream it describes.
        ssrc: Ssrc,
        /// The plain SR.
        packet: RtcpBytes,
    },
    /// Another shard forwards the session's media: it is alive.
    Alive {
        /// The session (homed on the shard this is sent to).
        session: SessionHandle,
    },
    /// The rate of `sender`'s stream `ssrc`, measured where its media arrives (sent to
    /// every shard at most once per [`RATE_EVERY`] while it flows): what layer choice
    /// and the downlink estimates count it at.
    StreamRate {
        /// The sender's home shard.
        home: ShardId,
        /// The sender, by its handle there.
        sender: SessionHandle,
        /// The stream.
        ssrc: Ssrc,
        /// Bits per second over the last second.
        bps: u64,
        /// The packet that made this measure begins the stream again (see
        /// `rtp::rate_announce`).
        resumed: bool,
    },
    /// Layer choice (on `receiver`'s home) moved it on `ssrc`, a full-resolution layer it
    /// subscribes to (sent to every shard).
    LayerState {
        /// The receiver's home shard.
        home: ShardId,
        /// The receiver, by its handle there.
        receiver: SessionHandle,
        /// The full-resolution layer.
        ssrc: Ssrc,
        /// Where it is now.
        state: LayerState,
    },
    /// The shard where `ssrc`'s media arrives forwarded its keyframe to `receiver`
    /// (homed on the shard this is sent to), which waited for it: the upswitch is done.
    KeyframeForwarded {
        /// The receiver.
        receiver: SessionHandle,
        /// The full-resolution layer.
        ssrc: Ssrc,
    },
    /// The shard where `owner`'s media arrives (homed on the shard this is sent to)
    /// found its uplink congested: what the uplink's estimate leaves its full layer
    /// `ssrc` after its other streams; or `None`: the congestion is over.
    Uplink {
        /// The sending session.
        owner: SessionHandle,
        /// Its full-resolution layer.
        ssrc: Ssrc,
        /// What the full layer may take (`None`: no limit).
        bps: Option<u64>,
    },
    /// A viewer of `owner`'s full layer `ssrc` (homed on the shard this is sent to) can
    /// take it at `bps`: its downlink estimate less everything else it receives — or,
    /// for a subscriber not viewing it yet whose link a probe measured (a prospect),
    /// what that measure leaves it.
    ViewerRate {
        /// The sending session.
        owner: SessionHandle,
        /// The full-resolution layer.
        ssrc: Ssrc,
        /// The viewer's home shard.
        home: ShardId,
        /// The viewer, by its handle there.
        viewer: SessionHandle,
        /// What it can take.
        bps: u64,
    },
    /// The rate clamp of `sender`'s full layer `ssrc` (on its home) moves viewers that
    /// can take less than `below_bps` to the thumbnail (sent to every shard).
    Demote {
        /// The sender's home shard.
        home: ShardId,
        /// The sender, by its handle there.
        sender: SessionHandle,
        /// The full-resolution layer.
        ssrc: Ssrc,
        /// Viewers below this are demoted (0: none).
        below_bps: u64,
    },
    /// The conference's speaker shard decided that `session` is its active speaker (sent
    /// to every shard: members that follow the speaker change layers everywhere).
    ActiveSpeaker {
        /// The conference.
        conf: ConfName,
        /// Its new active speaker.
        session: SessionName,
    },
    /// A member's audio was speech (RFC 6464 level and V bit) at least once in the
    /// last half bucket, for its conference's speaker detector, which runs on the shard
    /// this is sent to (see `speaker`). At most one per audio stream per half bucket.
    Speech {
        /// The member's home shard.
        home: ShardId,
        /// The member, by its handle on its home shard.
        session: SessionHandle,
        /// The level of the first speech packet (-dBov, 0 loudest).
        level: u8,
    },
}

impl PeerMsg {
    /// Whether the receiving shard's state depends on this message arriving: who owns
    /// a session, where it receives, which layers its receivers are on, who speaks.
    /// Nothing resends those. The others are RTCP and datagrams their senders repeat,
    /// or figures renewed every second or so; under a backlog they may be dropped.
    pub fn must_arrive(&self) -> bool {
        match self {
            PeerMsg::Claimed { .. }
            | PeerMsg::Connected { .. }
            | PeerMsg::Disconnected { .. }
            | PeerMsg::Checked { .. }
            | PeerMsg::LayerState { .. }
            | PeerMsg::KeyframeForwarded { .. }
            | PeerMsg::Demote { .. }
            | PeerMsg::ActiveSpeaker { .. } => true,
            // One per session a shard creates, to every other: a snapshot of thousands
            // must not push out what must arrive. A lost one leaves the rare late shard
            // as it was before it asked.
            PeerMsg::WhereIs { .. }
            | PeerMsg::Rtcp { .. }
            | PeerMsg::KeyframeRequest { .. }
            | PeerMsg::Nack { .. }
            | PeerMsg::Datagram { .. }
            | PeerMsg::SenderReport { .. }
            | PeerMsg::Alive { .. }
            | PeerMsg::StreamRate { .. }
            | PeerMsg::Uplink { .. }
            | PeerMsg::ViewerRate { .. }
            | PeerMsg::Speech { .. } => false,
        }
    }
}

/// Where layer choice has one receiver on one full-resolution layer it subscribes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerState {
    /// It gets the thumbnail only: its downlink cannot take the full layer.
    Thumbnail,
    /// It is switching up: it gets the full layer from the layer's next keyframe on.
    AwaitKeyframe,
    /// It gets the full layer.
    Full,
}

/// How often at most the shard where a stream's media arrives announces its rate.
pub const RATE_EVERY: Duration = Duration::from_millis(500);

/// How a receiver asked for a keyframe; the relay asks the sender the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyframeKind {
    /// Picture loss indication (RFC 4585 §6.3.1): the relay sends a PLI.
    Pli,
    /// Full intra request (RFC 5104 §4.3.1): the relay sends its own FIR, with the
    /// stream's next command sequence number.
    Fir,
}

/// A plain RTCP packet carried between shards without a heap allocation.
#[derive(Clone, PartialEq, Eq)]
pub struct RtcpBytes {
    len: u16,
    data: [u8; RtcpBytes::MAX],
}

impl RtcpBytes {
    /// Largest packet carried (an SR with 31 report blocks is 772 bytes).
    pub const MAX: usize = 1024;

    /// Copies `packet`, if it fits.
    pub fn new(packet: &[u8]) -> Option<Self> {
        let mut data = [0u8; Self::MAX];
        data.get_mut(..packet.len())?.copy_from_slice(packet);
        Some(RtcpBytes {
            len: packet.len() as u16,
            data,
        })
    }

    /// The packet.
    pub fn as_bytes(&self) -> &[u8] {
        &self.data[..usize::from(self.len)]
    }
}

impl std::fmt::Debug for RtcpBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RtcpBytes({} bytes)", self.len)
    }
}

handle!(
    /// A session on one shard: its slot in that shard's session table and which
    /// incarnation of the slot (slots are reused, so a stale handle finds nothing; see
    /// `slab`). Messages to a session's home shard carry its handle there instead of its
    /// id, so they neither hash a string nor allocate.
    pub SessionHandle
);

handle!(
    /// A conference in this shard's conference table.
    ConfHandle
);

/// Where a [`PeerMsg`] goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerDest {
    /// Every other shard.
    All,
    /// One shard.
    Shard(ShardId),
}

/// Output for the shell.
// RTCP crosses shards inline: boxing it would allocate per forwarded RTCP packet.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Event {
    /// Something happened to a session (the control side tells signaling).
    Session(SessionEvent),
    /// A message for other shards: deliver it as [`Command::Peer`] to those
    /// [`PeerDest::route`] names.
    Peer(PeerDest, PeerMsg),
    /// The relay closed this session on its own (consent expired, DTLS failed after
    /// connecting), for this reason: it is gone, as `session_closed` says. The control
    /// side forgets it and sends [`Command::RemoveSession`] to every shard, in order
    /// with the rules, so the same spec upserted again makes a new session (a snapshot
    /// that lists it hears of the close again instead). The spec tells which
    /// incarnation ended: one replaced meanwhile is not touched.
    Ended(SessionRule, EndReason),
}

/// Counters, kept as plain integers (the engine is single-threaded); the shell
/// publishes them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// Drops by [`DropReason::index`].
    pub drops: [u64; DropReason::COUNT],
    /// Datagrams in, by class.
    pub stun_in: u64,
    /// DTLS datagrams in.
    pub dtls_in: u64,
    /// RTP packets accepted for forwarding.
    pub rtp_in: u64,
    /// Bytes of those.
    pub rtp_bytes_in: u64,
    /// Copies of RTP packets to forward (packets × receivers).
    pub rtp_out: u64,
    /// Bytes of those.
    pub rtp_bytes_out: u64,
    /// SRTCP compounds accepted.
    pub rtcp_in: u64,
    /// SRTCP packets the engine wrote.
    pub rtcp_out: u64,
    /// Of those, empty receiver reports to sessions sent nothing else for
    /// [`RTCP_EVERY`].
    pub rtcp_keepalives: u64,
    /// RTCP not sent because the participant's outbound SRTCP context holds no more
    /// SSRCs (`OUTBOUND_RTCP_SSRCS`).
    pub rtcp_out_refused: u64,
    /// Sender reports forwarded (per receiver).
    pub sr_forwarded: u64,
    /// Last sender reports sent to receivers as they started a stream.
    pub sr_replayed: u64,
    /// Sender reports kept for new receivers but not forwarded: one of the stream's
    /// went out within 250 ms.
    pub sr_held_back: u64,
    /// Keyframe requests sent to senders.
    pub keyframe_requests_sent: u64,
    /// Keyframe requests absorbed by the per-stream throttle.
    pub keyframe_requests_throttled: u64,
    /// Full-resolution layers the relay asked their sender to pause (nobody received
    /// them).
    pub layers_paused: u64,
    /// Paused layers the relay asked their sender to resume (a receiver wants them).
    pub layers_resumed: u64,
    /// PAUSEs sent again because the layer still arrived, and RESUMEs sent again
    /// because nothing of it did (`media::UnwatchedLayer`).
    pub pause_requests_repeated: u64,
    /// Packets receivers NACKed that the relay resent from its cache.
    pub nack_resent: u64,
    /// Packets receivers NACKed that the relay asked their sender for.
    pub nack_forwarded: u64,
    /// Packets receivers NACKed that were asked of the sender within the interval
    /// already (or that could not be resent: the transmit queue was full).
    pub nack_suppressed: u64,
    /// Packets receivers NACKed beyond their budget (`nack_max_per_second`): neither
    /// resent nor asked of the sender.
    pub nack_over_budget: u64,
    /// RTCP packets of a kind not acted on (TMMBR, TMMBN, transport-cc, PAUSE-RESUME replies,
    /// ...) and NACKs for audio.
    pub rtcp_ignored: u64,
    /// RTCP packets (inside accepted compounds) dropped, by [`RtcpDrop::index`].
    pub rtcp_drops: [u64; RtcpDrop::COUNT],
    /// DTLS handshakes that completed with a matching fingerprint.
    pub dtls_handshakes_ok: u64,
    /// DTLS handshakes that failed.
    pub dtls_handshakes_failed: u64,
    /// New handshakes on keyed links that completed (the participant connected again)
    /// …
    pub rehandshakes_ok: u64,
    /// … and that failed (the old association stays), timeouts and those whose
    /// ClientHello never came back with the cookie included.
    pub rehandshakes_failed: u64,
    /// Connected sessions whose media moved to a newly nominated address (a NAT
    /// rebinding, a change of network).
    pub media_moves: u64,
    /// The relay's own checks of newly nominated addresses, media moving there only
    /// once one is answered from there (retries included).
    pub path_checks: u64,
    /// Sessions visited by [`Engine::handle_timeout`] because a deadline of theirs was
    /// due (idle sessions cost nothing per poll).
    pub timer_visits: u64,
    /// Active-speaker changes decided (on each conference's speaker shard).
    pub speaker_changes: u64,
    /// Receivers switched up to a full-resolution layer (at its keyframe).
    pub layer_switches_up: u64,
    /// Receivers switched down to the thumbnail.
    pub layer_switches_down: u64,
    /// REMB the relay sent senders (rate clamp and uplink estimate).
    pub remb_sent: u64,
    /// TMMBR the relay sent senders that negotiated it (rate clamp).
    pub tmmbr_sent: u64,
    /// REMB received from receivers.
    pub remb_received: u64,
    /// Receiver report blocks about streams a receiver gets, fed to its estimate.
    pub report_blocks: u64,
    /// Receiver reports whose blocks answered SRs the relay sent (a round trip to that
    /// receiver measured, for its downlink estimate's queue check).
    pub round_trips: u64,
    /// Probe packets sent receivers before trials of full layers.
    pub probe_packets_sent: u64,
    /// Probe clusters whose receiver's link carried the rate a trial needed.
    pub probes_carried: u64,
    /// Probe clusters whose receiver's link did not (or whose report never came).
    pub probes_short: u64,
    /// Probe clusters a receiver that never answered one did not answer.
    pub probes_unanswered: u64,
    /// Transport-cc feedback packets sent senders that stamp transport-wide sequence
    /// numbers.
    pub transport_cc_sent: u64,
    /// REMB/TMMBR sent senders whose value their uplink estimate set (below what their
    /// viewers could take).
    pub uplink_limited: u64,
}

impl EngineStats {
    /// Drops for one reason.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.drops[reason.index()]
    }

    /// RTCP packets dropped for one reason.
    pub fn rtcp_dropped(&self, reason: RtcpDrop) -> u64 {
        self.rtcp_drops[reason.index()]
    }

    /// How many counters [`EngineStats::exported`] lists.
    pub const EXPORTED: usize = 45;

    /// The counters to export besides drops and handshakes, one unit each: (metric
    /// name, label as `key="value"` or empty, help, value). Entries of one name are
    /// adjacent.
    pub fn exported(&self) -> [(&'static str, &'static str, &'static str, u64); Self::EXPORTED] {
        let rtcp_dropped = "RTCP packets inside accepted SRTCP compounds dropped, by reason.";
        let switches = "Receivers switched between a sender's thumbnail and its full layer \
                        by layer choice.";
        let probes = "Probe clusters sent before trials of full layers, by verdict: the \
                      receiver's link carried the rate, did not (or never answered), or the \
                      receiver does not answer probes.";
        let rehandshakes = "New DTLS handshakes on connected sessions (a participant that \
                            connected again), by outcome: completed (its new keys replace \
                            the old), or failed (the old association stays; also one \
                            whose ClientHello never came back with the cookie in 5 s).";
        let nacked = "Video packets receivers NACKed: resent from the relay's cache, asked of \
                      the sender, already asked within the interval, or beyond the \
                      receiver's budget.";
        [
            (
                "blindfold_stun_received_total",
                "",
                "STUN messages received.",
                self.stun_in,
            ),
            (
                "blindfold_dtls_received_total",
                "",
                "DTLS datagrams received.",
                self.dtls_in,
            ),
            (
                "blindfold_rtp_accepted_total",
                "",
                "RTP packets accepted for forwarding.",
                self.rtp_in,
            ),
            (
                "blindfold_rtp_accepted_bytes_total",
                "",
                "Bytes of RTP packets accepted for forwarding.",
                self.rtp_bytes_in,
            ),
            (
                "blindfold_rtp_forwarded_total",
                "",
                "Copies of RTP packets forwarded (packets times receivers).",
                self.rtp_out,
            ),
            (
                "blindfold_rtp_forwarded_bytes_total",
                "",
                "Bytes of RTP copies forwarded.",
                self.rtp_bytes_out,
            ),
            (
                "blindfold_srtcp_received_total",
                "",
                "SRTCP compounds accepted.",
                self.rtcp_in,
            ),
            (
                "blindfold_srtcp_sent_total",
                "",
                "SRTCP packets the relay wrote.",
                self.rtcp_out,
            ),
            (
                "blindfold_srtcp_out_of_ssrcs_total",
                "",
                "RTCP not sent: the participant's outbound SRTCP context holds no more SSRCs \
                 (1024: its own conference's streams and the relay's).",
                self.rtcp_out_refused,
            ),
            (
                "blindfold_dtls_rehandshakes_total",
                "outcome=\"completed\"",
                rehandshakes,
                self.rehandshakes_ok,
            ),
            (
                "blindfold_dtls_rehandshakes_total",
                "outcome=\"failed\"",
                rehandshakes,
                self.rehandshakes_failed,
            ),
            (
                "blindfold_media_moves_total",
                "",
                "Connected sessions whose media moved to an address the participant \
                 nominated later (a NAT rebinding, a change of network).",
                self.media_moves,
            ),
            (
                "blindfold_path_checks_total",
                "",
                "Connectivity checks the relay sent to addresses participants nominated \
                 later (media moves there once one is answered from there), retries \
                 included.",
                self.path_checks,
            ),
            (
                "blindfold_srtcp_keepalives_sent_total",
                "",
                "Empty receiver reports sent to participants the relay sent no other SRTCP \
                 for a second (so they can tell it still holds their session).",
                self.rtcp_keepalives,
            ),
            (
                "blindfold_sender_reports_forwarded_total",
                "",
                "Sender reports forwarded (one per receiver).",
                self.sr_forwarded,
            ),
            (
                "blindfold_sender_reports_replayed_total",
                "",
                "Last sender reports sent to receivers as they started a stream.",
                self.sr_replayed,
            ),
            (
                "blindfold_sender_reports_held_back_total",
                "",
                "Sender reports not forwarded: another of the stream's went out within \
                 250 ms (each is still kept for receivers that start the stream).",
                self.sr_held_back,
            ),
            (
                "blindfold_keyframe_requests_sent_total",
                "",
                "Keyframe requests sent to senders.",
                self.keyframe_requests_sent,
            ),
            (
                "blindfold_keyframe_requests_throttled_total",
                "",
                "Keyframe requests absorbed by the per-stream throttle.",
                self.keyframe_requests_throttled,
            ),
            (
                "blindfold_layers_paused_total",
                "",
                "Full-resolution layers the relay asked their sender to pause (RFC 7728): \
                 nobody received them.",
                self.layers_paused,
            ),
            (
                "blindfold_layers_resumed_total",
                "",
                "Paused layers the relay asked their sender to resume: a receiver wants them.",
                self.layers_resumed,
            ),
            (
                "blindfold_pause_requests_repeated_total",
                "",
                "PAUSEs sent again because the paused layer still arrived 2 s later, and \
                 RESUMEs sent again because nothing of the layer did.",
                self.pause_requests_repeated,
            ),
            (
                "blindfold_nacked_packets_total",
                "outcome=\"resent\"",
                nacked,
                self.nack_resent,
            ),
            (
                "blindfold_nacked_packets_total",
                "outcome=\"forwarded\"",
                nacked,
                self.nack_forwarded,
            ),
            (
                "blindfold_nacked_packets_total",
                "outcome=\"suppressed\"",
                nacked,
                self.nack_suppressed,
            ),
            (
                "blindfold_nacked_packets_total",
                "outcome=\"over_budget\"",
                nacked,
                self.nack_over_budget,
            ),
            (
                "blindfold_rtcp_packets_ignored_total",
                "",
                "RTCP packets of a kind not acted on.",
                self.rtcp_ignored,
            ),
            (
                "blindfold_rtcp_packets_dropped_total",
                "reason=\"malformed\"",
                rtcp_dropped,
                self.rtcp_drops[RtcpDrop::Malformed.index()],
            ),
            (
                "blindfold_rtcp_packets_dropped_total",
                "reason=\"undeclared_ssrc\"",
                rtcp_dropped,
                self.rtcp_drops[RtcpDrop::UndeclaredSsrc.index()],
            ),
            (
                "blindfold_rtcp_packets_dropped_total",
                "reason=\"not_receiver\"",
                rtcp_dropped,
                self.rtcp_drops[RtcpDrop::NotReceiver.index()],
            ),
            (
                "blindfold_rtcp_packets_dropped_total",
                "reason=\"over_budget\"",
                rtcp_dropped,
                self.rtcp_drops[RtcpDrop::OverBudget.index()],
            ),
            (
                "blindfold_active_speaker_changes_total",
                "",
                "Active-speaker changes reported (each conference's speaker shard).",
                self.speaker_changes,
            ),
            (
                "blindfold_layer_switches_total",
                "direction=\"up\"",
                switches,
                self.layer_switches_up,
            ),
            (
                "blindfold_layer_switches_total",
                "direction=\"down\"",
                switches,
                self.layer_switches_down,
            ),
            (
                "blindfold_remb_sent_total",
                "",
                "REMB sent to senders: each full layer clamped to what its viewers and the sender's uplink can take.",
                self.remb_sent,
            ),
            (
                "blindfold_tmmbr_sent_total",
                "",
                "TMMBR sent to senders that negotiated it, in place of REMB.",
                self.tmmbr_sent,
            ),
            (
                "blindfold_remb_received_total",
                "",
                "REMB received from receivers (their own downlink estimates).",
                self.remb_received,
            ),
            (
                "blindfold_report_blocks_total",
                "",
                "Receiver report blocks fed to the receivers' downlink estimates.",
                self.report_blocks,
            ),
            (
                "blindfold_round_trips_total",
                "",
                "Receiver reports that timed a round trip to their receiver (blocks answering SRs the relay sent it).",
                self.round_trips,
            ),
            (
                "blindfold_probe_packets_sent_total",
                "",
                "Probe packets (padding in SRTCP) sent receivers before trials of full layers.",
                self.probe_packets_sent,
            ),
            (
                "blindfold_probes_total",
                "outcome=\"carried\"",
                probes,
                self.probes_carried,
            ),
            (
                "blindfold_probes_total",
                "outcome=\"short\"",
                probes,
                self.probes_short,
            ),
            (
                "blindfold_probes_total",
                "outcome=\"unanswered\"",
                probes,
                self.probes_unanswered,
            ),
            (
                "blindfold_transport_cc_sent_total",
                "",
                "Transport-cc feedback packets sent senders that stamp transport-wide sequence numbers.",
                self.transport_cc_sent,
            ),
            (
                "blindfold_uplink_limited_total",
                "",
                "REMB/TMMBR whose value the sender's own uplink estimate set, below what its viewers could take.",
                self.uplink_limited,
            ),
        ]
    }
}

/// Gauges: sessions by state on this shard.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionCounts {
    /// Configured sessions (every shard knows every session).
    pub configured: usize,
    /// Sessions whose ICE and DTLS run here and have not connected yet.
    pub connecting: usize,
    /// Sessions homed here and connected.
    pub connected: usize,
}

struct Stream {
    spec: StreamRule,
    /// Where its packets' header extensions that the engine reads sit (the sender's
    /// ids, in the order `rtp::ext_layout` gives them).
    layout: Option<Box<wire::rtp::ExtLayout>>,
    /// Fan-out list: nominated addresses of every connected session that receives this
    /// stream. Kept only where it is read — on the shards that route this session's
    /// media (those that validated one of its addresses) — and updated in place when a
    /// receiver connects, moves, leaves or changes its subscription (`fanout`).
    receivers: Vec<SocketAddr>,
    /// Its keyframe-request throttle (used on the sender's home shard).
    keyframe: media::KeyframeThrottle,
    /// Its last sender report, for receivers that start it (sender's home shard).
    last_sr: media::LastSenderReport,
    /// Its recent packets, to answer NACKs: video streams, on the shards that route
    /// the sender's media (allocated when that starts, dropped when it ends).
    retransmit: Option<media::RetransmitCache>,
    /// Whether a full-resolution layer nobody receives is paused (sender's home shard).
    unwatched: media::UnwatchedLayer,
    /// Until when this shard tells the speaker detector nothing more of this audio
    /// stream's speech (it last did half a detector bucket before).
    speech_quiet_until: Option<Instant>,
    /// Receivers switching up to this full layer: they join `receivers` at its next
    /// keyframe (kept beside `receivers`, whose capacity is reserved for them).
    pending: Vec<(SocketAddr, SessionHandle)>,
    /// While `pending` is not empty, the stream's newest sequence number (its cache's
    /// last when the first was listed, then each packet's): a keyframe's start a little
    /// behind it is no start for them (`rtp::newest`).
    pending_newest: Option<WireSeq>,
    /// What the stream carries, measured where its media arrives.
    meter: media::RateMeter,
    /// Its rate (bits/s) and when it was measured or announced, on every shard.
    rate: Option<(u64, Instant)>,
    /// When it last began to carry packets again after a second without any (or at
    /// all), on every shard, as the shard its media arrives on judged it
    /// (`rtp::rate_announce`).
    resumed_at: Option<Instant>,
    /// When the shard its media arrives on next measures and announces its rate, and
    /// refills `allowance`.
    rate_due: Option<Instant>,
    /// Packets it may still carry until `rate_due` (`max_audio_pps`, `max_video_pps`).
    allowance: u32,
    /// Its full layer's rate clamp (sender's home; full layers only, once viewed).
    clamp: Option<Box<bandwidth::Clamp>>,
    /// Viewers of this full layer that can take less than this are moved to the
    /// thumbnail (announced by the sender's home; 0: none).
    demote_below: u64,
}

/// Where a session runs.
enum Home {
    /// No shard has answered a valid check yet. `timed_out`: its first check did not
    /// come in time, which shard 0 reported.
    Unclaimed { timed_out: bool },
    /// This shard runs the session.
    Here(Box<Local>),
    /// Another shard does; messages for it carry its handle there.
    Elsewhere(ShardId, SessionHandle),
}

impl Stream {
    /// Its rate is `bps`, measured or announced at `now`, by a packet that began the
    /// stream again if `resumed`.
    fn set_rate(&mut self, now: Instant, bps: u64, resumed: bool) {
        if resumed {
            self.resumed_at = Some(now);
        }
        self.rate = Some((bps, now));
    }
}

/// State of a session homed on this shard.
struct Local {
    dtls: DtlsSession,
    link: Link,
    /// Where the last DTLS datagram came from (answers go there before nomination).
    dtls_from: Option<SocketAddr>,
    /// Its downlink estimate and layer choices (`bandwidth`).
    downlink: bandwidth::Downlink,
    /// How many more sequence numbers it may NACK.
    nack_budget: media::Budget,
    /// How many more RTCP packets it may send.
    rtcp_budget: media::Budget,
    /// When its media address last moved to a new nomination (`stun::MOVE_GAP`).
    moved_at: Option<Instant>,
    /// The relay's own check of the address it nominated, which media moves to only
    /// once answered from there (`stun::PathCheck`).
    path_check: Option<stun::PathCheck>,
    /// When the relay last sent it SRTCP (or keyed its link): it sends a receiver
    /// report after [`RTCP_EVERY`] without any.
    rtcp_sent: Option<Instant>,
    /// When its link was last keyed (the engine's latest time then): until it
    /// connects, its media is taken for [`rtp::UNCONNECTED_MEDIA`] from this.
    keyed_at: Option<Instant>,
    /// The addresses other shards answered its checks from, and which shard each
    /// (most recently checked last, at most `stun::MAX_INDEXED`): where its media
    /// arrives when its nominated address is one of them, for NACKs of its streams.
    checked_on: Vec<(SocketAddr, ShardId)>,
    /// A new handshake the participant started on its keyed link (it connected again,
    /// believing the relay lost its session). It replaces `dtls` and the link's keys
    /// when it completes; until then, and if it fails, the old association stays.
    rehandshake: Option<Box<Rehandshake>>,
}

/// A new handshake on a keyed link ([`Local::rehandshake`]).
struct Rehandshake {
    dtls: DtlsSession,
    /// It is dropped (failed) if no ClientHello has passed its cookie exchange by then
    /// ([`REHANDSHAKE_COOKIE_WAIT`]): one whose HelloVerifyRequest went to somebody who
    /// never answers came from somebody who only put the participant's address on it.
    cookie_by: Instant,
}

impl Rehandshake {
    /// When its timer or its cookie deadline is due.
    fn poll_timeout(&self) -> Option<Instant> {
        let cookie = self.dtls.awaiting_client_hello().then_some(self.cookie_by);
        self.dtls.poll_timeout().into_iter().chain(cookie).min()
    }

    /// Whether it still waits for a cookie at `now`, past its deadline.
    fn cookie_overdue(&self, now: Instant) -> bool {
        now >= self.cookie_by && self.dtls.awaiting_client_hello()
    }
}

/// How long a new handshake on a keyed link may wait for a ClientHello that passes
/// the cookie exchange. A participant that connects again answers the
/// HelloVerifyRequest within a round trip (or its ClientHello's retransmission, 1 s
/// then 2 s later, starts the exchange again); and if it is dropped, its next
/// ClientHello starts a new one.
const REHANDSHAKE_COOKIE_WAIT: Duration = Duration::from_secs(5);

/// How far a session homed here got. It is connected — media flows — once it is
/// [`Link::Keyed`] and ICE has nominated an address.
enum Link {
    /// The DTLS handshake is under way.
    Handshaking,
    /// The handshake completed: the hop-by-hop SRTCP contexts.
    Keyed {
        /// Decrypts the participant's SRTCP.
        srtcp_in: SrtpContext,
        /// Protects the RTCP the relay sends it.
        srtcp_out: SrtpContext,
    },
    /// Failed or ended (reported once): nothing more happens until signaling removes
    /// it, and its datagrams are dropped.
    Ended,
}

impl Local {
    fn ended(&self) -> bool {
        matches!(self.link, Link::Ended)
    }

    /// Shard `shard` answered a check from `from` (see `checked_on`).
    fn note_checked(&mut self, from: SocketAddr, shard: ShardId) {
        if let Some(at) = self.checked_on.iter().position(|&(a, _)| a == from) {
            self.checked_on.remove(at);
        } else if self.checked_on.len() >= stun::MAX_INDEXED {
            self.checked_on.remove(0);
        }
        self.checked_on.push((from, shard));
    }

    fn keyed(&self) -> bool {
        matches!(self.link, Link::Keyed { .. })
    }

    /// Keyed, at most `within` before `now`.
    fn keyed_within(&self, now: Instant, within: Duration) -> bool {
        self.keyed()
            && self
                .keyed_at
                .is_none_or(|t| now.saturating_duration_since(t) <= within)
    }
}

struct Session {
    spec: SessionRule,
    /// `spec.identity()`, kept: an upsert changes `spec` in place only when the
    /// identity stays (otherwise it replaces the session), and session events and
    /// messages between shards name the incarnation by it.
    identity: Incarnation,
    conf: ConfHandle,
    full: FullSet,
    ice: IceLite,
    home: Home,
    /// Nominated address once connected (ICE and DTLS), wherever the session lives.
    addr: Option<SocketAddr>,
    /// Its addresses that passed ICE on this shard, in `by_addr`: media, DTLS and SRTCP
    /// from them are routed here. Non-empty means this shard keeps the session's
    /// fan-out lists.
    indexed: Vec<SocketAddr>,
    streams: Vec<Stream>,
    created: Instant,
    /// When this shard last sent [`PeerMsg::Alive`] for it (sessions homed elsewhere).
    alive_sent: Option<Instant>,
    /// Per address (at most `stun::MAX_INDEXED`, like `indexed`), when this shard last
    /// handed a check from it to the session's home ([`PeerMsg::Checked`]) and whether
    /// it nominated: another from that address within [`ALIVE_EVERY`] is not handed
    /// over (it would only refresh consent again), unless it nominates and that one
    /// did not or was 100 ms ago or more.
    checked_sent: Vec<(SocketAddr, Instant, bool)>,
    /// Checks this shard may still hand to the session's home (sessions homed
    /// elsewhere; [`stun::CHECKS_HANDED_PER_SECOND`]): a participant cycling through
    /// many source ports gets its checks answered, not every one passed on.
    checks_handed: media::Budget,
    /// Datagrams (DTLS, SRTCP, answers to the relay's checks) this shard may still hand
    /// to the session's home (sessions homed elsewhere; `rtcp_max_per_second`); the
    /// rest are dropped (`over_rate`).
    handoffs: media::Budget,
    /// When its entry in `timers` fires, if it has one: at or before its next deadline
    /// (see `schedule`).
    timer_at: Option<Instant>,
    /// The shard that runs its conference's speaker detector.
    speaker_shard: ShardId,
    /// Where layer choice has it on full layers it subscribes to, as last announced
    /// by its home; a layer not listed is at its default (`Session::layer_state`).
    layers: Vec<(Ssrc, LayerState)>,
    /// Its uplink's estimate, on the shards that route its media (with uplink
    /// estimation on, a full layer to fit under it, and no transport-wide sequence
    /// numbers: a sender that stamps them estimates its own uplink from the
    /// transport-cc feedback; allocated when that starts).
    uplink: Option<Box<media::UplinkEstimate>>,
    /// How long its media queues on its uplink, on the shards that route its media
    /// (with the downlink's round-trip check on, if it stamps abs-send-time).
    uplink_queue: Option<Box<media::UplinkQueue>>,
    /// Its packets' arrivals for transport-cc feedback, on the shards that route its
    /// media (if it stamps transport-wide sequence numbers).
    twcc: Option<Box<media::TwccRecorder>>,
}

impl Session {
    fn is_connected(&self) -> bool {
        self.addr.is_some()
    }

    fn local(&mut self) -> Option<&mut Local> {
        match &mut self.home {
            Home::Here(l) => Some(l),
            _ => None,
        }
    }

    /// Homed here and ended: its datagrams are refused.
    fn ended_here(&self) -> bool {
        matches!(&self.home, Home::Here(l) if l.ended())
    }

    /// Whether this session subscribes to `stream` (every thumbnail and single-layer
    /// stream; the full layers its subscription names), sent by `from`.
    fn wants(&self, stream: &StreamRule, from: Sender) -> bool {
        self.full.wants(stream, from.speaking)
    }

    /// Which of `stream`'s lists (sent by `from`) this session is on, if any: its
    /// subscription and its layer state.
    fn slot(&self, stream: &StreamRule, from: Sender) -> Option<Slot> {
        slot(&self.full, &self.layers, stream, from)
    }

    /// What it receives, as a snapshot (for fan-out edits), while `speaker` is its
    /// conference's active speaker.
    fn receives(&self, speaker: Option<SessionHandle>) -> Receives {
        Receives {
            full: self.full.clone(),
            layers: self.layers.clone(),
            speaker,
        }
    }

    /// Whether this shard routes its media (and so keeps its fan-out lists).
    fn routed_here(&self) -> bool {
        !self.indexed.is_empty()
    }

    fn stream(&self, ssrc: Ssrc) -> Option<&Stream> {
        self.streams.iter().find(|st| st.spec.ssrc == ssrc)
    }

    /// Its full layer `ssrc`, if the session is homed here (where the layer's clamp
    /// and uplink limit live).
    fn full_layer_here(&mut self, ssrc: Ssrc) -> Option<&mut Stream> {
        if !matches!(self.home, Home::Here(_)) {
            return None;
        }
        self.stream_mut(ssrc)
            .filter(|st| st.spec.layer == Layer::Full)
    }

    fn stream_mut(&mut self, ssrc: Ssrc) -> Option<&mut Stream> {
        self.streams.iter_mut().find(|st| st.spec.ssrc == ssrc)
    }
}

/// A receiver's subscription and layer states, and its conference's active speaker,
/// as of one moment.
#[derive(Clone)]
struct Receives {
    full: FullSet,
    layers: Vec<(Ssrc, LayerState)>,
    speaker: Option<SessionHandle>,
}

impl Receives {
    /// Where it is in the lists of stream `stream` of sender `owner` (which marks
    /// frames if `marked`).
    fn slot(&self, stream: &StreamRule, owner: SessionHandle, marked: bool) -> Option<Slot> {
        let from = Sender {
            marked,
            speaking: self.speaker == Some(owner),
        };
        slot(&self.full, &self.layers, stream, from)
    }
}

/// What a receiver's place in a stream's lists depends on about the stream's sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Sender {
    /// It marks frames (RFC 9626): a receiver switching up waits for a keyframe.
    marked: bool,
    /// It is its conference's active speaker (for `FullSet::Speaker`).
    speaking: bool,
}

/// Which list of a stream a receiver is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    /// `receivers`: it gets the stream.
    Receivers,
    /// `pending`: it gets it from its next keyframe on.
    Pending,
}

/// Where a session with subscription `full` and layer states `layers` is in the lists
/// of `stream`, sent by `from`.
///
/// A full layer without a state (a subscription just started) waits for its next
/// keyframe if the sender marks frames, and flows at once if not: every shard computes
/// the same, and layer choice on the receiver's home announces any other state.
fn slot(
    full: &FullSet,
    layers: &[(Ssrc, LayerState)],
    stream: &StreamRule,
    from: Sender,
) -> Option<Slot> {
    if !full.wants(stream, from.speaking) {
        return None;
    }
    if stream.layer != Layer::Full {
        return Some(Slot::Receivers);
    }
    match bandwidth::layer_state(layers, stream.ssrc, from.marked) {
        LayerState::Full => Some(Slot::Receivers),
        LayerState::AwaitKeyframe => Some(Slot::Pending),
        LayerState::Thumbnail => None,
    }
}

struct Conference {
    id: ConfName,
    members: Vec<SessionHandle>,
    /// Its active speaker as its speaker shard last announced it, on every shard (for
    /// `FullSet::Speaker`).
    speaking: Option<SessionHandle>,
    /// Its speaker detector: on its speaker shard, from the first speech on.
    speaker: Option<Box<speaker::ConfSpeaker>>,
}

/// One shard's relay engine. See the module docs for how to drive it.
pub struct Engine {
    cfg: EngineConfig,
    sessions: Slab<SessionHandle, Session>,
    by_id: FastMap<SessionName, SessionHandle>,
    by_ufrag: FastMap<String, SessionHandle>,
    /// ICE-validated addresses of sessions, on the shard that validated them.
    by_addr: FastMap<SocketAddr, SessionHandle>,
    /// Sessions homed elsewhere by their home shard and their handle there.
    by_home: FastMap<(ShardId, SessionHandle), SessionHandle>,
    conferences: Slab<ConfHandle, Conference>,
    conf_by_id: FastMap<ConfName, ConfHandle>,
    tx: TxQueue,
    events: VecDeque<Event>,
    stats: EngineStats,
    timers: Timers,
    last_now: Option<Instant>,
    /// Scratch list of shards an SR goes to (kept to reuse its allocation).
    sr_shards: Vec<ShardId>,
    /// The speaker detectors' settings.
    speaker_cfg: media::SpeakerConfig,
    /// Receivers the forwarding path switched up at a keyframe, with the layer:
    /// handled once the packet is routed (capacity kept).
    switched: Vec<(SessionHandle, Ssrc)>,
}

impl Engine {
    /// A new engine with no sessions.
    pub fn new(cfg: EngineConfig) -> Self {
        let hasher = foldhash::fast::FixedState::with_seed(cfg.hash_seed);
        Engine {
            tx: TxQueue::new(cfg.tx_queue),
            sessions: Slab::default(),
            by_id: HashMap::with_hasher(hasher.clone()),
            by_ufrag: HashMap::with_hasher(hasher.clone()),
            by_addr: HashMap::with_hasher(hasher.clone()),
            by_home: HashMap::with_hasher(hasher.clone()),
            conferences: Slab::default(),
            conf_by_id: HashMap::with_hasher(hasher),
            events: VecDeque::new(),
            stats: EngineStats::default(),
            timers: Timers::default(),
            last_now: None,
            sr_shards: Vec::new(),
            speaker_cfg: media::SpeakerConfig {
                hold: cfg.speaker_hold,
                ..media::SpeakerConfig::default()
            },
            switched: Vec::with_capacity(64),
            cfg,
        }
    }

    // ----- getters -------------------------------------------------------------------

    /// Counters.
    pub fn stats(&self) -> &EngineStats {
        &self.stats
    }

    /// Sessions by state.
    pub fn session_counts(&self) -> SessionCounts {
        let mut c = SessionCounts::default();
        for (_, s) in self.sessions.iter() {
            c.configured += 1;
            if let Home::Here(l) = &s.home {
                if s.is_connected() {
                    c.connected += 1;
                } else if !l.ended() {
                    c.connecting += 1;
                }
            }
        }
        c
    }

    /// The nominated address of a connected session, if it is connected.
    pub fn session_addr(&self, id: &SessionName) -> Option<SocketAddr> {
        let &h = self.by_id.get(id)?;
        self.sessions.get(h)?.addr
    }

    // ----- input ---------------------------------------------------------------------

    /// Handles one received datagram. `buf` is the receive buffer: SRTCP is decrypted in
    /// place in it; media is never modified.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        buf: &mut [u8],
    ) -> Handled<'_> {
        let now = self.clock(now);
        let result = match wire::classify(buf) {
            Kind::Rtp => return self.handle_rtp(now, from, buf),
            Kind::Stun => self.handle_stun(now, from, buf),
            Kind::Dtls => self.handle_dtls(now, from, buf),
            Kind::Rtcp => self.handle_rtcp(now, from, buf),
            Kind::Unknown => Err(DropReason::NotOurs),
        };
        match result {
            Ok(()) => Handled::Consumed,
            Err(r) => self.dropped(r),
        }
    }

    /// Applies a rule or a message from another shard.
    pub fn handle_command(&mut self, now: Instant, cmd: Command) {
        let now = self.clock(now);
        match cmd {
            Command::UpsertConference(id) => {
                self.conference(&id);
            }
            Command::RemoveConference(id) => self.remove_conference(&id),
            Command::UpsertSession(spec) => self.upsert_session(now, spec),
            Command::RemoveSession(id) => {
                if let Some(&h) = self.by_id.get(&id) {
                    self.remove_session(h, Some(EndReason::Removed));
                }
            }
            Command::SetSubscription { session, full } => {
                if let Some(&h) = self.by_id.get(&session) {
                    self.set_subscription(h, full);
                }
            }
            Command::Peer(msg) => self.handle_peer(now, msg),
        }
    }

    // ----- output --------------------------------------------------------------------

    /// The next datagram the engine wrote, valid until the next call.
    pub fn poll_transmit(&mut self) -> Option<Transmit<'_>> {
        self.tx.pop()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When to call [`Engine::handle_timeout`] next: the soonest deadline of the
    /// sessions this shard times (none: nothing to time).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.soonest()
    }

    // ----- datagrams -----------------------------------------------------------------

    pub(super) fn clock(&mut self, now: Instant) -> Instant {
        // Time that goes backwards is ignored.
        let now = match self.last_now {
            Some(last) if now < last => last,
            _ => now,
        };
        self.last_now = Some(now);
        now
    }

    pub(super) fn dropped(&mut self, reason: DropReason) -> Handled<'static> {
        self.stats.drops[reason.index()] += 1;
        Handled::Dropped(reason)
    }

    pub(super) fn notify(&mut self, ev: SessionEvent) {
        self.events.push_back(Event::Session(ev));
    }
}

#[cfg(test)]
mod tests;

#[cfg(any(test, feature = "fuzz"))]
mod fuzz;

/// Fuzz entry point: the engine fed arbitrary datagram, command and time sequences.
#[cfg(feature = "fuzz")]
#[doc(hidden)]
pub fn fuzz_one(data: &[u8]) {
    fuzz::run(data)
}
