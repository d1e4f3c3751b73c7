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
//! # What is checked per packet
//!
//! Media is forwarded only from a session's ICE-nominated address, after its DTLS
//! handshake completed (so the peer proved the certificate fingerprint signaling
//! pinned), on an SSRC the session declared — and only to receivers that meet the same
//! bar. Everything else is dropped with a [`DropReason`] and counted.

mod drop;
mod rules;
mod timers;
mod txqueue;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use drop::{DropReason, RtcpDrop};
pub use rules::{
    ConfName, EndReason, FullSet, Layer, SessionEvent, SessionName, SessionRule, StreamRule,
};
pub use txqueue::{SLOT_LEN, Transmit};

use crate::dtls::{DtlsCert, DtlsConfig, DtlsError, DtlsEvent, DtlsSession};
use crate::ice::{self, IceLite, IceLiteConfig, IceOutcome};
use crate::id::Ssrc;
use crate::srtp::{SrtpContext, SrtpProfile};
use crate::wire::rtcp::{self, RtcpCompound, RtcpPacket};
use crate::wire::rtp::RtpHeader;
use crate::wire::stun::StunMessage;
use crate::wire::{self, Kind};
use timers::Timers;
use txqueue::TxQueue;

type FastMap<K, V> = HashMap<K, V, foldhash::fast::FixedState>;

/// How often a shard that forwards a session's media from an address homed elsewhere
/// tells the home the session is alive: well inside the 30 s silence timeout, and rare
/// enough to cost nothing.
pub const ALIVE_EVERY: Duration = Duration::from_secs(1);

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
    /// A session with no valid packet for this long is closed (docs/design.md: 30 s). Also
    /// the time a session may take to send its first valid ICE check.
    pub silence_timeout: Duration,
    /// The SSRC the relay puts in the RTCP it originates (PLI).
    pub relay_ssrc: Ssrc,
    /// Capacity of the queue of engine-written datagrams.
    pub tx_queue: usize,
    /// Seed of the hash maps (fixed, so runs are repeatable).
    pub hash_seed: u64,
}

impl EngineConfig {
    /// Defaults from docs/design.md for one shard.
    pub fn new(shard: ShardId, cert: Arc<DtlsCert>, dtls: Arc<DtlsConfig>) -> Self {
        EngineConfig {
            shard,
            cert,
            dtls,
            keyframe_interval: Duration::from_millis(300),
            silence_timeout: Duration::from_secs(30),
            relay_ssrc: Ssrc(0x0b11_dfd0),
            tx_queue: 1024,
            hash_seed: 0x5eed,
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

/// Messages between shards (see the module docs).
// RTCP crosses shards inline: boxing it would allocate per forwarded RTCP packet.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerMsg {
    /// `shard` answered the session's first valid ICE check and runs it now.
    Claimed {
        /// The session.
        session: SessionName,
        /// Its home shard.
        shard: ShardId,
    },
    /// The session completed ICE and DTLS and receives media at `addr`.
    Connected {
        /// The session.
        session: SessionName,
        /// Its home shard.
        shard: ShardId,
        /// Its nominated address.
        addr: SocketAddr,
    },
    /// The session no longer receives media.
    Disconnected {
        /// The session.
        session: SessionName,
    },
    /// RTCP (plain) to protect with `to`'s SRTCP context and send to it.
    Rtcp {
        /// The receiving session (homed on the shard this is sent to).
        to: SessionName,
        /// The plain RTCP packet.
        packet: RtcpBytes,
    },
    /// Receivers asked for a keyframe of `ssrc`, which `owner` (homed on the shard this
    /// is sent to) sends.
    KeyframeRequest {
        /// The sending session.
        owner: SessionName,
        /// The stream.
        ssrc: Ssrc,
    },
    /// Another shard answered a valid check of `session` (homed on the shard this is
    /// sent to) from `from`.
    Checked {
        /// The session.
        session: SessionName,
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
        session: SessionName,
        /// Where it came from.
        from: SocketAddr,
        /// The datagram as received.
        data: Box<[u8]>,
    },
    /// Another shard forwards the session's media: it is alive.
    Alive {
        /// The session (homed on the shard this is sent to).
        session: SessionName,
    },
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
    /// A message for other shards (deliver as [`Command::Peer`]).
    Peer(PeerDest, PeerMsg),
    /// The relay closed this session on its own (consent expired, DTLS failed after
    /// connecting): it is gone, as `session_closed` says. The control side forgets it
    /// and sends [`Command::RemoveSession`] to every shard, in order with the rules, so
    /// the same spec upserted again (or listed in a snapshot) makes a new session. The
    /// spec tells which incarnation ended: one replaced meanwhile is not touched.
    Ended(SessionRule),
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
    /// Sender reports forwarded (per receiver).
    pub sr_forwarded: u64,
    /// Keyframe requests sent to senders.
    pub keyframe_requests_sent: u64,
    /// Keyframe requests absorbed by the per-stream throttle.
    pub keyframe_requests_throttled: u64,
    /// RTCP packets of a kind not acted on yet (REMB, NACK, TMMBR, transport-cc, ...).
    pub rtcp_ignored: u64,
    /// RTCP packets (inside accepted compounds) dropped, by [`RtcpDrop::index`].
    pub rtcp_drops: [u64; RtcpDrop::COUNT],
    /// DTLS handshakes that completed with a matching fingerprint.
    pub dtls_handshakes_ok: u64,
    /// DTLS handshakes that failed.
    pub dtls_handshakes_failed: u64,
    /// Sessions visited by [`Engine::handle_timeout`] because a deadline of theirs was
    /// due (idle sessions cost nothing per poll).
    pub timer_visits: u64,
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

    /// The counters to export besides drops and handshakes, one unit each: (metric
    /// name, label as `key="value"` or empty, help, value). Entries of one name are
    /// adjacent.
    pub fn exported(&self) -> [(&'static str, &'static str, &'static str, u64); 15] {
        let rtcp_dropped = "RTCP packets inside accepted SRTCP compounds dropped, by reason.";
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
                "blindfold_sender_reports_forwarded_total",
                "",
                "Sender reports forwarded (one per receiver).",
                self.sr_forwarded,
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
                "blindfold_rtcp_packets_ignored_total",
                "",
                "RTCP packets of a kind not acted on yet.",
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
    /// Fan-out list: nominated addresses of every connected session that receives this
    /// stream. Rebuilt on every membership, connection or subscription change.
    receivers: Vec<SocketAddr>,
    /// When a keyframe was last requested from the sender (home shard only).
    last_keyframe_request: Option<Instant>,
}

enum Home {
    /// No shard has answered a valid check yet.
    Unclaimed,
    /// This shard runs the session.
    Here(Box<Local>),
    /// Another shard does.
    Elsewhere(ShardId),
}

/// State of a session homed on this shard.
struct Local {
    dtls: DtlsSession,
    srtcp_in: Option<SrtpContext>,
    srtcp_out: Option<SrtpContext>,
    failed: bool,
    /// Where the last DTLS datagram came from (answers go there before nomination).
    dtls_from: Option<SocketAddr>,
}

struct Session {
    spec: SessionRule,
    conf: usize,
    full: FullSet,
    ice: IceLite,
    home: Home,
    /// Nominated address once connected (ICE and DTLS), wherever the session lives.
    addr: Option<SocketAddr>,
    /// Addresses of this session in `by_addr` (home shard only).
    indexed: Vec<SocketAddr>,
    streams: Vec<Stream>,
    created: Instant,
    /// A failure was already reported.
    reported: bool,
    /// When this shard last sent [`PeerMsg::Alive`] for it (sessions homed elsewhere).
    alive_sent: Option<Instant>,
    /// The deadline it is scheduled at in `timers`, if any.
    timer_at: Option<Instant>,
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

    /// Whether this session receives `stream`.
    fn wants(&self, stream: &StreamRule) -> bool {
        self.full.wants(stream)
    }
}

struct Conference {
    id: ConfName,
    members: Vec<usize>,
}

/// One shard's relay engine. See the module docs for how to drive it.
pub struct Engine {
    cfg: EngineConfig,
    sessions: Vec<Option<Session>>,
    free: Vec<usize>,
    by_id: FastMap<SessionName, usize>,
    by_ufrag: FastMap<String, usize>,
    /// ICE-validated addresses of sessions homed here.
    by_addr: FastMap<SocketAddr, usize>,
    conferences: Vec<Option<Conference>>,
    conf_by_id: FastMap<ConfName, usize>,
    tx: TxQueue,
    events: VecDeque<Event>,
    stats: EngineStats,
    timers: Timers,
    last_now: Option<Instant>,
}

impl Engine {
    /// A new engine with no sessions.
    pub fn new(cfg: EngineConfig) -> Self {
        let hasher = foldhash::fast::FixedState::with_seed(cfg.hash_seed);
        Engine {
            tx: TxQueue::new(cfg.tx_queue),
            sessions: Vec::new(),
            free: Vec::new(),
            by_id: HashMap::with_hasher(hasher.clone()),
            by_ufrag: HashMap::with_hasher(hasher.clone()),
            by_addr: HashMap::with_hasher(hasher.clone()),
            conferences: Vec::new(),
            conf_by_id: HashMap::with_hasher(hasher),
            events: VecDeque::new(),
            stats: EngineStats::default(),
            timers: Timers::default(),
            last_now: None,
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
        for s in self.sessions.iter().flatten() {
            c.configured += 1;
            if let Home::Here(l) = &s.home {
                if s.is_connected() {
                    c.connected += 1;
                } else if !l.failed {
                    c.connecting += 1;
                }
            }
        }
        c
    }

    /// The nominated address of a connected session, if it is connected.
    pub fn session_addr(&self, id: &SessionName) -> Option<SocketAddr> {
        self.by_id
            .get(id)
            .and_then(|&i| self.sessions[i].as_ref())
            .and_then(|s| s.addr)
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
                if let Some(&i) = self.by_id.get(&id) {
                    self.remove_session(i, Some(EndReason::Removed));
                }
            }
            Command::SetSubscription { session, full } => {
                if let Some(&i) = self.by_id.get(&session) {
                    let s = self.sessions[i].as_mut().expect("indexed session exists");
                    if s.full != full {
                        s.full = full;
                        let conf = s.conf;
                        self.rebuild_fanout(conf);
                    }
                }
            }
            Command::Peer(msg) => self.handle_peer(now, msg),
        }
    }

    /// Runs the timers that are due: ICE consent, DTLS retransmission, first-check
    /// deadlines. Visits only the sessions whose deadline has come.
    pub fn handle_timeout(&mut self, now: Instant) {
        let now = self.clock(now);
        while let Some((at, i)) = self.timers.pop_due(now) {
            let Some(s) = self.sessions.get_mut(i).and_then(Option::as_mut) else {
                continue;
            };
            if s.timer_at != Some(at) {
                continue; // stale: rescheduled or a new session in the slot
            }
            s.timer_at = None;
            self.stats.timer_visits += 1;
            self.session_timeout(now, i);
            self.schedule(i);
        }
        self.drop_stale_timers();
    }

    fn session_timeout(&mut self, now: Instant, i: usize) {
        let Some(s) = self.sessions[i].as_mut() else {
            return;
        };
        match &mut s.home {
            Home::Here(local) => {
                if !local.failed {
                    local.dtls.handle_timeout(now);
                }
                self.drain_dtls(now, i);
                let s = self.sessions[i].as_mut().expect("still there");
                if s.ice.handle_timeout(now).is_some() {
                    let reason = if s.is_connected() {
                        EndReason::ConsentExpired
                    } else {
                        EndReason::IceTimeout
                    };
                    self.end_session(i, reason);
                }
            }
            Home::Unclaimed => {
                // Nobody answered a check in time. One shard reports it.
                if !s.reported
                    && self.cfg.shard == ShardId(0)
                    && now.saturating_duration_since(s.created) >= self.cfg.silence_timeout
                {
                    s.reported = true;
                    let id = s.spec.id.clone();
                    self.notify(SessionEvent::Failed {
                        session: id,
                        reason: EndReason::IceTimeout,
                        detail: String::from("no valid ICE check"),
                    });
                }
            }
            Home::Elsewhere(_) => {}
        }
    }

    /// Schedules session `i` at its own next deadline: the soonest of its ICE and DTLS
    /// deadlines if it is homed here, its first-check deadline on shard 0 while
    /// unclaimed, none once it has ended or elsewhere.
    fn schedule(&mut self, i: usize) {
        let shard = self.cfg.shard;
        let silence = self.cfg.silence_timeout;
        let Some(s) = self.sessions.get_mut(i).and_then(Option::as_mut) else {
            return;
        };
        let due = match &s.home {
            _ if s.reported => None,
            Home::Here(local) => {
                let dtls = (!local.failed).then(|| local.dtls.poll_timeout()).flatten();
                Some(dtls.map_or(s.ice.poll_timeout(), |d| d.min(s.ice.poll_timeout())))
            }
            Home::Unclaimed if shard == ShardId(0) => Some(s.created + silence),
            Home::Unclaimed | Home::Elsewhere(_) => None,
        };
        if due == s.timer_at {
            return;
        }
        s.timer_at = due;
        if let Some(due) = due {
            self.timers.push(due, i);
        }
        self.drop_stale_timers();
    }

    /// Pops entries whose session moved its deadline or is gone off the top of the
    /// heap, so that [`Engine::poll_timeout`] is a live deadline.
    fn drop_stale_timers(&mut self) {
        while let Some((at, i)) = self.timers.peek() {
            let live = self.sessions.get(i).and_then(Option::as_ref);
            if live.is_some_and(|s| s.timer_at == Some(at)) {
                break;
            }
            self.timers.pop();
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

    fn clock(&mut self, now: Instant) -> Instant {
        // Time that goes backwards is ignored.
        let now = match self.last_now {
            Some(last) if now < last => last,
            _ => now,
        };
        self.last_now = Some(now);
        now
    }

    fn dropped(&mut self, reason: DropReason) -> Handled<'static> {
        self.stats.drops[reason.index()] += 1;
        Handled::Dropped(reason)
    }

    /// The forwarding path: no allocation, no lock, one hash lookup.
    fn handle_rtp(&mut self, now: Instant, from: SocketAddr, buf: &[u8]) -> Handled<'_> {
        match self.route_rtp(now, from, buf) {
            Ok((i, k)) => {
                let s = self.sessions[i].as_ref().expect("indexed session exists");
                let receivers = &s.streams[k].receivers;
                let n = receivers.len() as u64;
                self.stats.rtp_in += 1;
                self.stats.rtp_bytes_in += buf.len() as u64;
                self.stats.rtp_out += n;
                self.stats.rtp_bytes_out += n * buf.len() as u64;
                Handled::Forward(receivers)
            }
            Err(reason) => self.dropped(reason),
        }
    }

    /// Finds the session and stream of a media packet: (session index, stream index).
    fn route_rtp(
        &mut self,
        now: Instant,
        from: SocketAddr,
        buf: &[u8],
    ) -> Result<(usize, usize), DropReason> {
        let i = self.media_session(from)?;
        let s = self.sessions[i].as_mut().expect("indexed session exists");
        let ssrc = RtpHeader::parse(buf)
            .map_err(|_| DropReason::RtpMalformed)?
            .ssrc();
        let k = s
            .streams
            .iter()
            .position(|st| st.spec.ssrc == ssrc)
            .ok_or(DropReason::UndeclaredSsrc)?;
        match s.home {
            Home::Elsewhere(home) => {
                // The home times the session: feed it, rarely (one comparison a packet).
                if s.alive_sent
                    .is_none_or(|t| now.saturating_duration_since(t) >= ALIVE_EVERY)
                {
                    s.alive_sent = Some(now);
                    let msg = PeerMsg::Alive {
                        session: s.spec.id.clone(),
                    };
                    self.events
                        .push_back(Event::Peer(PeerDest::Shard(home), msg));
                }
            }
            _ => s.ice.touch(now),
        }
        Ok((i, k))
    }

    /// The session that may send RTP/RTCP from `from`: it passed ICE there, `from` is
    /// its nominated address, and it is connected (DTLS done).
    fn media_session(&self, from: SocketAddr) -> Result<usize, DropReason> {
        let &i = self.by_addr.get(&from).ok_or(DropReason::Unvalidated)?;
        let s = self.sessions[i].as_ref().expect("indexed session exists");
        match s.addr {
            Some(addr) if addr == from => Ok(i),
            Some(_) => Err(DropReason::NotNominated),
            None => Err(DropReason::BeforeDtls),
        }
    }

    fn handle_stun(
        &mut self,
        now: Instant,
        from: SocketAddr,
        buf: &[u8],
    ) -> Result<(), DropReason> {
        self.stats.stun_in += 1;
        let msg = StunMessage::parse(buf).map_err(|_| DropReason::StunMalformed)?;
        let ufrag = ice::local_ufrag_of(&msg).ok_or(DropReason::StunMalformed)?;
        let &i = self
            .by_ufrag
            .get(ufrag)
            .ok_or(DropReason::StunUnknownUfrag)?;
        if self.tx.is_full() {
            // Not even looked at: a check we cannot answer must not change state.
            return Err(DropReason::TxQueueFull);
        }
        let s = self.sessions[i].as_mut().expect("indexed session exists");
        if s.local().is_some_and(|l| l.failed) {
            return Err(DropReason::DtlsRejected);
        }
        let home = match s.home {
            Home::Elsewhere(home) => Some(home),
            _ => None,
        };
        let mut answer = None;
        self.tx.push(from, |out| {
            let outcome = match home {
                // Answered here, recorded by the home (see the module docs).
                Some(_) => s.ice.answer(from, &msg, out),
                None => s.ice.handle_binding(now, from, &msg, out),
            };
            answer = Some(outcome);
            outcome.response_len().ok_or(())
        });
        let nominated = match answer.ok_or(DropReason::StunMalformed)? {
            IceOutcome::Success { nominated, .. } => nominated,
            IceOutcome::ErrorResponse { .. } => return Err(DropReason::StunRejected),
            IceOutcome::Dropped(_) => return Err(DropReason::StunMalformed),
        };
        self.index_addr(i, from);
        if let Some(home) = home {
            let s = self.sessions[i].as_ref().expect("indexed session exists");
            let msg = PeerMsg::Checked {
                session: s.spec.id.clone(),
                from,
                nominated,
            };
            self.events
                .push_back(Event::Peer(PeerDest::Shard(home), msg));
            return Ok(());
        }
        // A valid check: this shard takes the session if nobody has.
        let s = self.sessions[i].as_mut().expect("indexed session exists");
        if let Home::Unclaimed = s.home {
            let dtls = DtlsSession::server(&self.cfg.dtls, &self.cfg.cert, s.spec.fingerprint, now);
            s.home = Home::Here(Box::new(Local {
                dtls,
                srtcp_in: None,
                srtcp_out: None,
                failed: false,
                dtls_from: None,
            }));
            let msg = PeerMsg::Claimed {
                session: s.spec.id.clone(),
                shard: self.cfg.shard,
            };
            self.events.push_back(Event::Peer(PeerDest::All, msg));
            self.schedule(i);
        }
        self.after_check(i);
        Ok(())
    }

    /// Lets this shard find session `i` by `from` (DTLS, SRTCP and media from it).
    fn index_addr(&mut self, i: usize, from: SocketAddr) {
        let s = self.sessions[i].as_mut().expect("indexed session exists");
        if !s.indexed.contains(&from) {
            s.indexed.push(from);
            self.by_addr.insert(from, i);
        }
    }

    /// After a valid check of session `i` homed here (answered here or elsewhere).
    fn after_check(&mut self, i: usize) {
        let s = self.sessions[i].as_mut().expect("indexed session exists");
        // A (re-)nomination of a connected session moves its media address.
        if let (Some(sel), Some(addr)) = (s.ice.selected(), s.addr)
            && sel != addr
            && s.local().is_some_and(|l| l.srtcp_out.is_some())
        {
            self.set_connected(i, Some(sel));
        }
        self.maybe_connected(i);
    }

    fn handle_dtls(
        &mut self,
        now: Instant,
        from: SocketAddr,
        buf: &[u8],
    ) -> Result<(), DropReason> {
        self.stats.dtls_in += 1;
        let &i = self.by_addr.get(&from).ok_or(DropReason::Unvalidated)?;
        self.dtls_for(now, i, from, buf)
    }

    /// A DTLS datagram of session `i` from one of its validated addresses: handled if
    /// the session is homed here, else handed to its home.
    fn dtls_for(
        &mut self,
        now: Instant,
        i: usize,
        from: SocketAddr,
        buf: &[u8],
    ) -> Result<(), DropReason> {
        let s = self.sessions[i].as_mut().expect("indexed session exists");
        let local = match &mut s.home {
            Home::Here(local) => local,
            Home::Elsewhere(home) => {
                let home = *home;
                self.hand_home(i, home, from, buf);
                return Ok(());
            }
            Home::Unclaimed => return Err(DropReason::Unvalidated),
        };
        if local.failed {
            return Err(DropReason::DtlsRejected);
        }
        local.dtls_from = Some(from);
        let r = local.dtls.handle_datagram(now, buf);
        if r.is_ok() {
            s.ice.touch(now);
        }
        self.drain_dtls(now, i);
        r.map_err(|_| DropReason::DtlsRejected)
    }

    /// Hands a datagram of session `i` to its home shard.
    fn hand_home(&mut self, i: usize, home: ShardId, from: SocketAddr, buf: &[u8]) {
        let s = self.sessions[i].as_ref().expect("indexed session exists");
        let msg = PeerMsg::Datagram {
            session: s.spec.id.clone(),
            from,
            data: buf.into(),
        };
        self.events
            .push_back(Event::Peer(PeerDest::Shard(home), msg));
    }

    fn handle_rtcp(
        &mut self,
        now: Instant,
        from: SocketAddr,
        buf: &mut [u8],
    ) -> Result<(), DropReason> {
        let i = self.media_session(from)?;
        self.rtcp_for(now, i, from, buf)
    }

    /// SRTCP of session `i` from its nominated address: handled if the session is homed
    /// here, else handed to its home.
    fn rtcp_for(
        &mut self,
        now: Instant,
        i: usize,
        from: SocketAddr,
        buf: &mut [u8],
    ) -> Result<(), DropReason> {
        let s = self.sessions[i].as_mut().expect("indexed session exists");
        if let Home::Elsewhere(home) = s.home {
            self.hand_home(i, home, from, buf);
            return Ok(());
        }
        let srtcp = s
            .local()
            .and_then(|l| l.srtcp_in.as_mut())
            .ok_or(DropReason::BeforeDtls)?;
        let len = srtcp
            .unprotect_rtcp(buf)
            .map_err(|_| DropReason::SrtcpRejected)?;
        s.ice.touch(now);
        self.stats.rtcp_in += 1;
        let plain = &buf[..len];
        let compound = RtcpCompound::parse(plain).map_err(|_| DropReason::RtcpMalformed)?;
        let sender = rtcp::first_ssrc(plain).map_err(|_| DropReason::RtcpMalformed)?;
        if !s.streams.iter().any(|st| st.spec.ssrc == sender) {
            return Err(DropReason::RtcpUndeclaredSsrc);
        }
        for raw in compound.raw_packets() {
            match raw.typed() {
                Ok(RtcpPacket::SenderReport(sr)) => self.forward_sr(i, sr.ssrc(), raw.bytes()),
                Ok(RtcpPacket::Pli(pli)) => self.keyframe_request(now, i, pli.media_ssrc()),
                Ok(RtcpPacket::Fir(fir)) => {
                    for e in fir.entries() {
                        self.keyframe_request(now, i, e.ssrc);
                    }
                }
                Ok(_) => self.stats.rtcp_ignored += 1,
                Err(_) => self.stats.rtcp_drops[RtcpDrop::Malformed.index()] += 1,
            }
        }
        Ok(())
    }

    // ----- RTCP duties -----------------------------------------------------------------

    /// Forwards a sender's SR to every receiver of the stream it describes, re-protected
    /// per receiver.
    fn forward_sr(&mut self, sender: usize, ssrc: Ssrc, packet: &[u8]) {
        let s = self.sessions[sender].as_ref().expect("sender exists");
        let Some(stream) = s.streams.iter().find(|st| st.spec.ssrc == ssrc) else {
            self.stats.rtcp_drops[RtcpDrop::UndeclaredSsrc.index()] += 1;
            return;
        };
        let spec = stream.spec;
        let conf = s.conf;
        let members = self.conferences[conf]
            .as_ref()
            .map(|c| c.members.len())
            .unwrap_or(0);
        for m in 0..members {
            let r = self.conferences[conf]
                .as_ref()
                .expect("conference exists")
                .members[m];
            if r == sender {
                continue;
            }
            let rs = self.sessions[r].as_ref().expect("member exists");
            if !rs.is_connected() || !rs.wants(&spec) {
                continue;
            }
            self.stats.sr_forwarded += 1;
            self.send_rtcp_to(r, packet);
        }
    }

    /// A receiver asked for a keyframe of `ssrc`: pass it to the sender, throttled.
    fn keyframe_request(&mut self, now: Instant, requester: usize, ssrc: Ssrc) {
        let conf = self.sessions[requester]
            .as_ref()
            .expect("requester exists")
            .conf;
        let Some(owner) = self.stream_owner(conf, ssrc) else {
            self.stats.rtcp_drops[RtcpDrop::NotReceiver.index()] += 1;
            return;
        };
        let o = self.sessions[owner].as_ref().expect("owner exists");
        let spec = o
            .streams
            .iter()
            .find(|st| st.spec.ssrc == ssrc)
            .map(|st| st.spec);
        let r = self.sessions[requester].as_ref().expect("requester exists");
        if owner == requester || !spec.is_some_and(|sp| r.wants(&sp)) {
            self.stats.rtcp_drops[RtcpDrop::NotReceiver.index()] += 1;
            return;
        }
        self.request_keyframe_from(now, owner, ssrc);
    }

    /// Sends (or forwards to the owner's shard) a throttled PLI for `ssrc`.
    fn request_keyframe_from(&mut self, now: Instant, owner: usize, ssrc: Ssrc) {
        let interval = self.cfg.keyframe_interval;
        let o = self.sessions[owner].as_mut().expect("owner exists");
        match o.home {
            Home::Elsewhere(shard) => {
                let msg = PeerMsg::KeyframeRequest {
                    owner: o.spec.id.clone(),
                    ssrc,
                };
                self.events
                    .push_back(Event::Peer(PeerDest::Shard(shard), msg));
            }
            Home::Unclaimed => {}
            Home::Here(_) => {
                let Some(st) = o.streams.iter_mut().find(|st| st.spec.ssrc == ssrc) else {
                    return;
                };
                if st
                    .last_keyframe_request
                    .is_some_and(|t| now.saturating_duration_since(t) < interval)
                {
                    self.stats.keyframe_requests_throttled += 1;
                    return;
                }
                st.last_keyframe_request = Some(now);
                let mut pli = [0u8; 12];
                if rtcp::write_pli(&mut pli, self.cfg.relay_ssrc, ssrc).is_ok() {
                    self.stats.keyframe_requests_sent += 1;
                    self.send_rtcp_to(owner, &pli);
                }
            }
        }
    }

    /// Protects `packet` with session `to`'s outbound SRTCP context and queues it, or
    /// passes it to `to`'s home shard.
    fn send_rtcp_to(&mut self, to: usize, packet: &[u8]) {
        let s = self.sessions[to].as_mut().expect("session exists");
        let Some(addr) = s.addr else { return };
        match &mut s.home {
            Home::Here(local) => {
                let Some(ctx) = local.srtcp_out.as_mut() else {
                    return;
                };
                let queued = self.tx.push(addr, |slot| {
                    let dst = slot.get_mut(..packet.len()).ok_or(())?;
                    dst.copy_from_slice(packet);
                    ctx.protect_rtcp(slot, packet.len()).map_err(|_| ())
                });
                if queued {
                    self.stats.rtcp_out += 1;
                } else {
                    self.stats.drops[DropReason::TxQueueFull.index()] += 1;
                }
            }
            Home::Elsewhere(shard) => {
                if let Some(packet) = RtcpBytes::new(packet) {
                    let msg = PeerMsg::Rtcp {
                        to: s.spec.id.clone(),
                        packet,
                    };
                    let shard = *shard;
                    self.events
                        .push_back(Event::Peer(PeerDest::Shard(shard), msg));
                }
            }
            Home::Unclaimed => {}
        }
    }

    fn stream_owner(&self, conf: usize, ssrc: Ssrc) -> Option<usize> {
        let c = self.conferences[conf].as_ref()?;
        c.members.iter().copied().find(|&m| {
            self.sessions[m]
                .as_ref()
                .is_some_and(|s| s.streams.iter().any(|st| st.spec.ssrc == ssrc))
        })
    }

    // ----- DTLS and connection state ---------------------------------------------------

    /// Sends the session's pending DTLS datagrams, acts on its DTLS events, and
    /// schedules its next deadline (a retransmission timer may have been set).
    fn drain_dtls(&mut self, now: Instant, i: usize) {
        self.drain_dtls_output(now, i);
        self.schedule(i);
    }

    fn drain_dtls_output(&mut self, _now: Instant, i: usize) {
        let s = self.sessions[i].as_mut().expect("session exists");
        let Home::Here(local) = &mut s.home else {
            return;
        };
        let dest = s
            .ice
            .selected()
            .or(local.dtls_from)
            .or_else(|| s.indexed.last().copied());
        while let Some(d) = local.dtls.poll_transmit() {
            if let Some(dest) = dest
                && !self.tx.push_copy(dest, d)
            {
                self.stats.drops[DropReason::TxQueueFull.index()] += 1;
            }
        }
        let mut failed = None;
        while let Some(ev) = local.dtls.poll_event() {
            match ev {
                DtlsEvent::Connected(km) => {
                    let profile = SrtpProfile::from_dtls_id(km.profile.iana_id());
                    let ctxs = profile.and_then(|p| {
                        let inbound =
                            SrtpContext::new(p, km.client_master.key_salt(), None).ok()?;
                        let outbound =
                            SrtpContext::new(p, km.server_master.key_salt(), None).ok()?;
                        Some((inbound, outbound))
                    });
                    match ctxs {
                        Some((inbound, outbound)) => {
                            local.srtcp_in = Some(inbound);
                            local.srtcp_out = Some(outbound);
                            self.stats.dtls_handshakes_ok += 1;
                        }
                        None => failed = Some(DtlsError::NoSrtpProfile),
                    }
                }
                DtlsEvent::Failed(e) => failed = Some(e),
            }
        }
        if let Some(e) = failed {
            self.stats.dtls_handshakes_failed += 1;
            local.failed = true;
            local.srtcp_in = None;
            local.srtcp_out = None;
            let reason = match e {
                DtlsError::FingerprintMismatch => EndReason::FingerprintMismatch,
                DtlsError::NoSrtpProfile => EndReason::NoSrtpProfile,
                _ => EndReason::DtlsFailed,
            };
            let was_connected = s.is_connected();
            self.set_connected(i, None);
            let s = self.sessions[i].as_mut().expect("session exists");
            s.reported = true;
            if was_connected {
                self.closed_by_relay(i, reason);
            } else {
                let session_id = s.spec.id.clone();
                self.notify(SessionEvent::Failed {
                    session: session_id,
                    reason,
                    detail: e.to_string(),
                });
            }
            return;
        }
        self.maybe_connected(i);
    }

    /// Marks a session homed here connected once ICE nominated an address and DTLS gave
    /// keys.
    fn maybe_connected(&mut self, i: usize) {
        let s = self.sessions[i].as_mut().expect("session exists");
        if s.is_connected() {
            return;
        }
        let Some(sel) = s.ice.selected() else { return };
        if !s
            .local()
            .is_some_and(|l| l.srtcp_out.is_some() && !l.failed)
        {
            return;
        }
        self.set_connected(i, Some(sel));
        let s = self.sessions[i].as_ref().expect("session exists");
        self.notify(SessionEvent::Connected {
            session: s.spec.id.clone(),
            addr: sel,
        });
    }

    /// Sets where a session receives media (None: nowhere), updates the conference's
    /// fan-out lists and, for a session homed here, tells the other shards.
    fn set_connected(&mut self, i: usize, addr: Option<SocketAddr>) {
        let shard = self.cfg.shard;
        let s = self.sessions[i].as_mut().expect("session exists");
        if s.addr == addr {
            return;
        }
        s.addr = addr;
        if let Home::Here(_) = s.home {
            let session = s.spec.id.clone();
            let msg = match addr {
                Some(addr) => PeerMsg::Connected {
                    session,
                    shard,
                    addr,
                },
                None => PeerMsg::Disconnected { session },
            };
            self.events.push_back(Event::Peer(PeerDest::All, msg));
        }
        let conf = s.conf;
        self.rebuild_fanout(conf);
    }

    /// Ends a session homed here: reports why and stops its media. A session that never
    /// connected keeps its config (the participant may retry; signaling removes it); a
    /// connected one is closed, which removes it relay-wide ([`Event::Ended`]). Either
    /// way its addresses are forgotten, so a late packet cannot revive it.
    fn end_session(&mut self, i: usize, reason: EndReason) {
        let s = self.sessions[i].as_mut().expect("session exists");
        if s.reported {
            return;
        }
        s.reported = true;
        let was_connected = s.is_connected();
        if let Some(local) = s.local() {
            local.failed = true;
            local.srtcp_in = None;
            local.srtcp_out = None;
        }
        let session_id = s.spec.id.clone();
        for a in std::mem::take(&mut s.indexed) {
            self.by_addr.remove(&a);
        }
        self.set_connected(i, None);
        if was_connected {
            self.closed_by_relay(i, reason);
        } else {
            self.notify(SessionEvent::Failed {
                session: session_id,
                reason,
                detail: String::new(),
            });
        }
    }

    /// Reports that the relay closed connected session `i` on its own: the notification,
    /// and [`Event::Ended`] so that the control side removes it from every shard.
    fn closed_by_relay(&mut self, i: usize, reason: EndReason) {
        let s = self.sessions[i].as_ref().expect("session exists");
        let spec = s.spec.clone();
        self.notify(SessionEvent::Closed {
            session: spec.id.clone(),
            reason,
        });
        self.events.push_back(Event::Ended(spec));
    }

    // ----- peers -----------------------------------------------------------------------

    /// The slab index of `session` if this shard is its home.
    fn homed_here(&self, session: &SessionName) -> Option<usize> {
        let &i = self.by_id.get(session)?;
        let s = self.sessions.get(i)?.as_ref()?;
        matches!(s.home, Home::Here(_)).then_some(i)
    }

    fn handle_peer(&mut self, now: Instant, msg: PeerMsg) {
        match msg {
            PeerMsg::Claimed { session, shard } => {
                let Some(&i) = self.by_id.get(&session) else {
                    return;
                };
                let s = self.sessions[i].as_mut().expect("indexed session exists");
                match s.home {
                    Home::Unclaimed | Home::Elsewhere(_) => s.home = Home::Elsewhere(shard),
                    // Two shards answered first checks at once: the lower id keeps it.
                    Home::Here(_) if shard < self.cfg.shard => {
                        s.home = Home::Elsewhere(shard);
                        // The addresses checked here stay indexed (their datagrams go
                        // to the new home), and the new home learns them.
                        let selected = s.ice.selected();
                        for &from in &s.indexed {
                            let msg = PeerMsg::Checked {
                                session: session.clone(),
                                from,
                                nominated: selected == Some(from),
                            };
                            self.events
                                .push_back(Event::Peer(PeerDest::Shard(shard), msg));
                        }
                        if s.addr.is_some() {
                            self.set_connected(i, None);
                        }
                    }
                    Home::Here(_) => {}
                }
            }
            PeerMsg::Connected {
                session,
                shard,
                addr,
            } => {
                let Some(&i) = self.by_id.get(&session) else {
                    return;
                };
                let s = self.sessions[i].as_mut().expect("indexed session exists");
                if !matches!(s.home, Home::Here(_)) {
                    s.home = Home::Elsewhere(shard);
                    self.set_connected(i, Some(addr));
                }
            }
            PeerMsg::Disconnected { session } => {
                let Some(&i) = self.by_id.get(&session) else {
                    return;
                };
                let s = self.sessions[i].as_ref().expect("indexed session exists");
                if !matches!(s.home, Home::Here(_)) {
                    self.set_connected(i, None);
                }
            }
            PeerMsg::Rtcp { to, packet } => {
                if let Some(i) = self.homed_here(&to) {
                    self.send_rtcp_to(i, packet.as_bytes());
                }
            }
            PeerMsg::KeyframeRequest { owner, ssrc } => {
                if let Some(i) = self.homed_here(&owner) {
                    self.request_keyframe_from(now, i, ssrc);
                }
            }
            PeerMsg::Checked {
                session,
                from,
                nominated,
            } => {
                let Some(i) = self.homed_here(&session) else {
                    return;
                };
                let s = self.sessions[i].as_mut().expect("homed session exists");
                if s.local().is_some_and(|l| l.failed) {
                    return;
                }
                if s.ice.record_check(now, from, nominated).is_some() {
                    self.after_check(i);
                }
            }
            PeerMsg::Datagram {
                session,
                from,
                mut data,
            } => {
                let Some(i) = self.homed_here(&session) else {
                    return;
                };
                let s = self.sessions[i].as_ref().expect("homed session exists");
                let r = match wire::classify(&data) {
                    // The sending shard saw a valid check from `from`; the `Checked`
                    // it sent first reached this agent already (one queue, in order).
                    Kind::Dtls if s.ice.is_validated(from) => self.dtls_for(now, i, from, &data),
                    Kind::Rtcp if s.addr == Some(from) => self.rtcp_for(now, i, from, &mut data),
                    _ => Err(DropReason::Unvalidated),
                };
                if let Err(reason) = r {
                    self.stats.drops[reason.index()] += 1;
                }
            }
            PeerMsg::Alive { session } => {
                if let Some(i) = self.homed_here(&session) {
                    let s = self.sessions[i].as_mut().expect("homed session exists");
                    s.ice.touch(now);
                }
            }
        }
    }

    // ----- rules -----------------------------------------------------------------------

    fn conference(&mut self, id: &ConfName) -> usize {
        if let Some(&c) = self.conf_by_id.get(id) {
            return c;
        }
        let conf = Conference {
            id: id.clone(),
            members: Vec::new(),
        };
        let c = match self.conferences.iter().position(Option::is_none) {
            Some(c) => {
                self.conferences[c] = Some(conf);
                c
            }
            None => {
                self.conferences.push(Some(conf));
                self.conferences.len() - 1
            }
        };
        self.conf_by_id.insert(id.clone(), c);
        c
    }

    fn remove_conference(&mut self, id: &ConfName) {
        let Some(&c) = self.conf_by_id.get(id) else {
            return;
        };
        let members = self.conferences[c]
            .as_ref()
            .map(|c| c.members.clone())
            .unwrap_or_default();
        for m in members {
            self.remove_session(m, Some(EndReason::Removed));
        }
        let conf = self.conferences[c]
            .take()
            .expect("indexed conference exists");
        self.conf_by_id.remove(&conf.id);
    }

    fn upsert_session(&mut self, now: Instant, spec: SessionRule) {
        if let Some(&i) = self.by_id.get(&spec.id) {
            let s = self.sessions[i].as_mut().expect("indexed session exists");
            if s.spec == spec {
                return;
            }
            if s.spec.same_identity(&spec) {
                // Streams changed: update in place, keep the connection.
                s.streams = spec
                    .streams
                    .iter()
                    .map(|&st| Stream {
                        spec: st,
                        receivers: Vec::new(),
                        last_keyframe_request: None,
                    })
                    .collect();
                s.spec = spec;
                let conf = s.conf;
                self.rebuild_fanout(conf);
                return;
            }
            self.remove_session(i, Some(EndReason::Replaced));
        }
        let mut ice_cfg = IceLiteConfig::new(
            spec.ice_ufrag.as_str(),
            spec.ice_pwd.as_str(),
            spec.remote_ufrag.as_str(),
        );
        ice_cfg.initial_timeout = self.cfg.silence_timeout;
        ice_cfg.consent_timeout = self.cfg.silence_timeout;
        let ice = match IceLite::new(now, ice_cfg) {
            Ok(ice) => ice,
            Err(e) => {
                // The control codec already checks ice-chars; this is the last line.
                self.notify(SessionEvent::Failed {
                    session: spec.id,
                    reason: EndReason::Other,
                    detail: e.to_string(),
                });
                return;
            }
        };
        let conf = self.conference(&spec.conf);
        let session = Session {
            ice,
            conf,
            full: FullSet::Ssrcs(Vec::new()),
            home: Home::Unclaimed,
            addr: None,
            indexed: Vec::new(),
            streams: spec
                .streams
                .iter()
                .map(|&st| Stream {
                    spec: st,
                    receivers: Vec::new(),
                    last_keyframe_request: None,
                })
                .collect(),
            created: now,
            reported: false,
            alive_sent: None,
            timer_at: None,
            spec,
        };
        let id = session.spec.id.clone();
        let ufrag = session.spec.ice_ufrag.as_str().to_owned();
        let i = match self.free.pop() {
            Some(i) => {
                self.sessions[i] = Some(session);
                i
            }
            None => {
                self.sessions.push(Some(session));
                self.sessions.len() - 1
            }
        };
        self.by_id.insert(id, i);
        self.by_ufrag.insert(ufrag, i);
        self.schedule(i);
        self.conferences[conf]
            .as_mut()
            .expect("conference exists")
            .members
            .push(i);
        self.rebuild_fanout(conf);
    }

    /// Removes a session at once: it neither sends nor receives from this call on.
    fn remove_session(&mut self, i: usize, reason: Option<EndReason>) {
        let Some(s) = self.sessions[i].take() else {
            return;
        };
        self.drop_stale_timers();
        self.by_id.remove(&s.spec.id);
        self.by_ufrag.remove(s.spec.ice_ufrag.as_str());
        for a in &s.indexed {
            self.by_addr.remove(a);
        }
        self.free.push(i);
        if let Some(c) = self.conferences[s.conf].as_mut() {
            c.members.retain(|&m| m != i);
        }
        self.rebuild_fanout(s.conf);
        if let (Home::Here(_), Some(reason), true) = (&s.home, reason, s.is_connected()) {
            self.notify(SessionEvent::Closed {
                session: s.spec.id,
                reason,
            });
        }
    }

    /// Recomputes every fan-out list of a conference. Control path: allocation is fine.
    fn rebuild_fanout(&mut self, conf: usize) {
        let Some(c) = self.conferences[conf].as_ref() else {
            return;
        };
        let members = c.members.clone();
        let mut lists: Vec<(usize, usize, Vec<SocketAddr>)> = Vec::new();
        for &sender in &members {
            let s = self.sessions[sender].as_ref().expect("member exists");
            for (k, st) in s.streams.iter().enumerate() {
                let receivers = members
                    .iter()
                    .filter(|&&r| r != sender)
                    .filter_map(|&r| self.sessions[r].as_ref())
                    .filter(|r| r.wants(&st.spec))
                    .filter_map(|r| r.addr)
                    .collect();
                lists.push((sender, k, receivers));
            }
        }
        for (sender, k, receivers) in lists {
            self.sessions[sender]
                .as_mut()
                .expect("member exists")
                .streams[k]
                .receivers = receivers;
        }
    }

    fn notify(&mut self, ev: SessionEvent) {
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
