//! A sans-IO network emulator for Blindfold: real relay [`Engine`]s (one per simulated
//! worker) and real [`Participant`]s exchange datagrams in memory, in simulated time.
//! Nothing here touches a socket or the clock after the base instant.
//!
//! The relay's shell is emulated as the binary does it: each participant address is
//! hashed to one worker (as `SO_REUSEPORT` does), [`Handled::Forward`] sends the
//! *received bytes* to every listed address, engine-written datagrams go out as they
//! are polled, and messages between workers are delivered to the named shards.
//! Signaling is emulated as the control thread does it: every rule goes to every shard.
//! Key exchange over Matrix is emulated by [`Sim::share_keys`].
//!
//! # The network
//!
//! Each member reaches the relay over an uplink (member → relay) and is reached over a
//! downlink (relay → member), each a [`Link`] configured by a [`LinkConfig`]
//! ([`Sim::set_uplink`], [`Sim::set_downlink`]). By default both are perfect:
//! datagrams are delivered synchronously, inside [`Sim::pump`], at the instant they
//! were sent — the emulator behaves as if links did not exist. A link may instead have
//! a bottleneck rate with a tail-drop buffer, a propagation delay, uniform jitter (in
//! order unless told to reorder) and random loss, independent or bursty
//! (Gilbert–Elliott); see [`net`] for the exact model. Datagrams that arrive later are
//! held in a time-ordered queue and delivered at their arrival instant by
//! [`Sim::run_for_ms`], which steps time to each arrival in between its 5 ms timer
//! steps; [`Sim::pump`] alone never advances time, so it only delivers what is due.
//!
//! What travels which link: everything a participant sends (STUN, DTLS, SRTP, SRTCP)
//! its uplink; everything the relay sends a member — datagrams the engine writes
//! (STUN answers, DTLS, RTCP) and media it forwards ([`Handled::Forward`]) — that
//! member's downlink. Datagrams from strangers ([`Sim::inject`]) and to non-members
//! cross no link.
//!
//! Randomness (jitter, loss) comes from a seed ([`Sim::with_seed`]), one stream per
//! link, so a run repeats exactly and traffic on one link never changes another's
//! losses. Nothing reads the clock: arrival instants are the simulation's `now`.
//!
//! Not modelled: cross traffic (a link carries only this member's datagrams, so its
//! rate is all theirs), ECN and AQM (the buffer is plain tail drop), IP and UDP header
//! bytes (rates count UDP payloads), a shared bottleneck between members, corruption
//! and duplication, and the relay's own socket buffers and CPU (the relay side of
//! every link is infinitely fast). Timers of the engines and participants still fire
//! on the 5 ms steps, not at their exact instants.
//!
//! ```
//! use blindfold_tests::Sim;
//!
//! let mut sim = Sim::new(1);
//! let a = sim.join("alice", "conf");
//! let b = sim.join("bob", "conf");
//! sim.run_until_connected();
//! sim.share_keys();
//! sim.send_audio(a, b"hello");
//! sim.run_for_ms(20);
//! assert_eq!(sim.member(b).media_from(a).len(), 1);
//! ```
//!
//! Beside the emulator, real processes: [`process`] runs the relay binary, [`synapse`]
//! a real Synapse homeserver, [`matrix`] calls its client-server API as a test user,
//! [`hs_proxy`] stands in front of it to hold back a client's to-device messages (a
//! megolm key slower than its room event, as over federation) or refuse its sends;
//! [`demo`] holds the pieces of the `blindfold-demo` binary (`scripts/demo`).
#![allow(clippy::disallowed_methods)] // one base instant; everything after is simulated

pub mod bench;
pub mod browser;
pub mod demo;
pub mod fixtures;
pub mod hs_proxy;
mod http;
pub mod matrix;
pub mod net;
pub mod process;
pub mod signaling;
pub mod synapse;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use blindfold_client::timeline::Timeline;
use blindfold_client::{
    Driver, Event as PEvent, IceCredentials, MediaPacket, OwnSsrcs, Participant, ParticipantConfig,
    SenderId,
};
use blindfold_relay::control::rules;
use blindfold_relay::control::{
    ConfId, ExtmapIds, FullSet, IcePwd, IceUfrag, Layer, NotificationBody, SessionId, SessionSpec,
    StreamKind, StreamSpec, SubscriptionSpec,
};
use blindfold_relay::dtls::{DtlsCert, DtlsConfig, DtlsSettings, Fingerprint};
use blindfold_relay::engine::{
    Command, Engine, EngineConfig, EngineStats, Event, Handled, PeerMsg, ShardId,
};
use blindfold_relay::id::{ExtId, KeyIndex, Pt, RtpTime, SeqNo, Ssrc};
use blindfold_relay::srtp::{MasterKey, SrtpProfile};

use net::Fate;
pub use net::{Burst, Link, LinkConfig, LinkStats};

/// The relay's public address in the simulation.
pub const RELAY: SocketAddr = SocketAddr::new(
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 1)),
    40000,
);

const STEP: Duration = Duration::from_millis(5);

/// The header-extension id every simulated member negotiated for RFC 6464 audio levels.
pub const AUDIO_LEVEL_EXT: ExtId = ExtId(1);

/// Process-wide DTLS material (building it runs crypto self-tests; do it once).
struct Shared {
    relay_cert: Arc<DtlsCert>,
    relay_dtls: Arc<DtlsConfig>,
    client_dtls: DtlsConfig,
    client_cert: DtlsCert,
}

fn shared() -> &'static Shared {
    static S: OnceLock<Shared> = OnceLock::new();
    S.get_or_init(|| {
        let mut settings = DtlsSettings::default();
        settings.insecure_rng_seed = Some(1);
        Shared {
            relay_cert: Arc::new(DtlsCert::generate().expect("relay cert")),
            relay_dtls: Arc::new(DtlsConfig::new(settings).expect("relay dtls")),
            client_dtls: DtlsConfig::new(settings).expect("client dtls"),
            client_cert: DtlsCert::generate().expect("client cert"),
        }
    })
}

/// One participant in the simulation.
pub struct Member {
    /// Its name (also its session id).
    pub name: String,
    /// Its address.
    pub addr: SocketAddr,
    /// The participant library instance.
    pub p: Participant,
    /// Everything it reported, in order.
    pub events: Vec<PEvent>,
    /// The session rule signaling pushed for it.
    pub spec: SessionSpec,
    /// Its end-to-end master key (key ‖ salt), as published in its key event.
    pub key: Vec<u8>,
    /// Every datagram it sent, as sent (SRTP media bytes included).
    pub sent: Vec<Vec<u8>>,
    /// Every datagram it received from the relay, as received.
    pub received: Vec<Vec<u8>>,
    /// Every media packet it decrypted, with its arrival instant (kept apart from
    /// `events`, which tests may clear).
    pub media_log: Vec<MediaArrival>,
    /// Its path to the relay.
    pub uplink: Link,
    /// The relay's path to it.
    pub downlink: Link,
    /// What its video decoders would show (`None`: not kept; set it to keep one).
    pub timeline: Option<Timeline>,
}

/// A media packet a member decrypted, and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MediaArrival {
    /// When the datagram carrying it arrived.
    pub at: Instant,
    /// Whose key decrypted it.
    pub sender: SenderId,
    /// Its SSRC.
    pub ssrc: Ssrc,
    /// Its sequence number, extended past rollover.
    pub seq: SeqNo,
    /// The decrypted RTP packet's length (header, extensions, payload; no SRTP tag).
    pub len: usize,
}

impl Member {
    /// Media it decrypted from `sender`'s streams.
    pub fn media_from(&self, sender: usize) -> Vec<&MediaPacket> {
        self.events
            .iter()
            .filter_map(|e| match e {
                PEvent::Media(m) if m.sender == SenderId(sender as u64) => Some(m),
                _ => None,
            })
            .collect()
    }

    /// Media it decrypted on `ssrc`.
    pub fn media_on(&self, ssrc: Ssrc) -> Vec<&MediaPacket> {
        self.events
            .iter()
            .filter_map(|e| match e {
                PEvent::Media(m) if m.ssrc == ssrc => Some(m),
                _ => None,
            })
            .collect()
    }

    /// Keyframe requests it received for `ssrc`.
    pub fn keyframe_requests(&self, ssrc: Ssrc) -> usize {
        self.events
            .iter()
            .filter(|e| matches!(e, PEvent::KeyframeRequested(s) if *s == ssrc))
            .count()
    }

    /// Its SSRCs.
    pub fn ssrcs(&self) -> OwnSsrcs {
        self.p.ssrcs()
    }

    /// Bits per second of decrypted media (RTP packets without the SRTP tag) that
    /// arrived in `[from, to)`.
    pub fn media_bps(&self, from: Instant, to: Instant) -> u64 {
        self.media_bps_where(from, to, |_| true)
    }

    /// Like [`Member::media_bps`], for the packets on `ssrc` only.
    pub fn media_bps_on(&self, ssrc: Ssrc, from: Instant, to: Instant) -> u64 {
        self.media_bps_where(from, to, |m| m.ssrc == ssrc)
    }

    fn media_bps_where(
        &self,
        from: Instant,
        to: Instant,
        keep: impl Fn(&MediaArrival) -> bool,
    ) -> u64 {
        let bytes = self
            .media_log
            .iter()
            .filter(|m| m.at >= from && m.at < to && keep(m))
            .map(|m| m.len)
            .sum();
        net::bits_per_second(bytes, from, to)
    }

    /// How many RTP datagrams on `ssrc` the relay sent it, as received (before SRTP,
    /// which would drop a second copy as a replay).
    pub fn rtp_copies_on(&self, ssrc: Ssrc) -> usize {
        self.received
            .iter()
            .filter(|d| blindfold_relay::wire::classify(d) == blindfold_relay::wire::Kind::Rtp)
            .filter(|d| {
                blindfold_relay::wire::rtp::RtpHeader::parse(d).is_ok_and(|h| h.ssrc() == ssrc)
            })
            .count()
    }

    /// Bits per second of every datagram the relay sent it (media, RTCP, STUN, DTLS)
    /// that arrived in `[from, to)`: its downlink's delivered rate.
    pub fn received_bps(&self, from: Instant, to: Instant) -> u64 {
        self.downlink.delivered_bps(from, to)
    }
}

/// For loops where time stands still (benchmarks, allocation counts): a stream's
/// packet cap (`max_audio_pps`, `max_video_pps`, per half second) would stop them after
/// its allowance, so it is off; its check still runs on every packet.
pub fn uncapped(cfg: &mut EngineConfig) {
    cfg.max_audio_pps = 0;
    cfg.max_video_pps = 0;
}

/// Which way a datagram in flight goes: from the member at this address to the relay,
/// or from the relay to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Hop {
    Up(SocketAddr),
    Down(SocketAddr),
}

/// A datagram on its way, ordered by arrival, then by when it was sent.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct InFlight {
    at: Instant,
    seq: u64,
    hop: Hop,
    bytes: Vec<u8>,
}

/// The simulated relay and its participants.
pub struct Sim {
    /// Simulated now.
    pub now: Instant,
    /// One engine per simulated worker.
    pub shards: Vec<Engine>,
    /// The participants, by index.
    pub members: Vec<Member>,
    /// Notifications the relay sent to signaling.
    pub notifications: Vec<NotificationBody>,
    /// Sender reports that crossed between shards (one per target shard and SR).
    pub sender_reports_between_shards: usize,
    /// Speech notes that crossed to a conference's speaker shard.
    pub speech_between_shards: usize,
    /// Datagrams that arrived at the relay from addresses that are not members.
    pub from_strangers: Vec<(SocketAddr, Vec<u8>)>,
    /// What the relay sent to addresses that are not members.
    pub to_strangers: Vec<(SocketAddr, Vec<u8>)>,
    by_addr: HashMap<SocketAddr, usize>,
    next_port: u16,
    seed: u64,
    in_flight: BinaryHeap<Reverse<InFlight>>,
    next_seq: u64,
    /// The header-extension ids members negotiate from their join on (by default only
    /// the audio level, [`AUDIO_LEVEL_EXT`]).
    pub extmap: ExtmapIds,
    /// Whether members joining from now on send NACKs and keyframe requests on their
    /// own (`ParticipantConfig::auto_feedback`; off by default, so tests send exactly
    /// the feedback they mean to).
    pub auto_feedback: bool,
    /// Whether members joining from now on negotiated TMMBR (the relay's rate requests
    /// go to them as TMMBR, not REMB).
    pub tmmbr: bool,
    /// Whether members joining from now on that negotiated abs-send-time estimate their
    /// downlink and send REMB (on by default; off, they send receiver reports only, as
    /// receivers that estimate with transport-cc do towards a relay that does not).
    pub remb: bool,
}

/// A member sending its [`Driver`]'s synthetic media in [`Sim::run_sending`].
pub struct Sending {
    /// The member.
    pub member: usize,
    /// Its sources.
    pub driver: Driver,
    /// How many of the member's events the driver has seen.
    seen: usize,
}

impl Sending {
    /// Member `member` sends with `driver`.
    pub fn new(member: usize, driver: Driver) -> Self {
        Sending {
            member,
            driver,
            seen: 0,
        }
    }
}

/// Whether an RTP packet (SRTP as received, or decrypted: the header is in the clear)
/// starts a keyframe per its frame marking (RFC 9626) at extension `id`.
pub fn starts_keyframe(packet: &[u8], id: ExtId) -> bool {
    blindfold_relay::wire::rtp::RtpHeader::parse(packet)
        .ok()
        .and_then(|h| h.extension(id))
        .and_then(|d| blindfold_relay::wire::rtp::frame_marking(d).ok())
        .is_some_and(|fm| fm.starts_keyframe())
}

/// The extension ids a member negotiates for everything the relay reads: audio level
/// 1, frame marking 2, abs-send-time 3 (no transport-wide cc).
pub const FULL_EXTMAP: ExtmapIds = ExtmapIds {
    audio_level: Some(AUDIO_LEVEL_EXT),
    frame_marking: Some(ExtId(2)),
    abs_send_time: Some(ExtId(3)),
    transport_cc: None,
};

impl Sim {
    /// A relay with `workers` shards and no participants; links draw their randomness
    /// from seed 0.
    pub fn new(workers: u16) -> Self {
        Sim::with_seed(workers, 0)
    }

    /// Like [`Sim::new`], with the links' randomness (jitter, loss) drawn from `seed`.
    pub fn with_seed(workers: u16, seed: u64) -> Self {
        Sim::with_config(workers, seed, |_| {})
    }

    /// Like [`Sim::with_seed`], with each shard's engine settings changed by `set`.
    pub fn with_config(workers: u16, seed: u64, set: impl Fn(&mut EngineConfig)) -> Self {
        let s = shared();
        let now = Instant::now();
        let shards = (0..workers)
            .map(|i| {
                let mut cfg =
                    EngineConfig::new(ShardId(i), s.relay_cert.clone(), s.relay_dtls.clone());
                cfg.shards = workers;
                set(&mut cfg);
                Engine::new(cfg)
            })
            .collect();
        Sim {
            now,
            shards,
            members: Vec::new(),
            notifications: Vec::new(),
            sender_reports_between_shards: 0,
            speech_between_shards: 0,
            from_strangers: Vec::new(),
            to_strangers: Vec::new(),
            by_addr: HashMap::new(),
            next_port: 10_000,
            seed,
            in_flight: BinaryHeap::new(),
            next_seq: 0,
            extmap: ExtmapIds {
                audio_level: Some(AUDIO_LEVEL_EXT),
                ..ExtmapIds::default()
            },
            auto_feedback: false,
            tmmbr: false,
            remb: true,
        }
    }

    /// The worker a datagram from `addr` lands on (the kernel's `SO_REUSEPORT` hash).
    pub fn shard_of(&self, addr: SocketAddr) -> usize {
        usize::from(addr.port()) % self.shards.len()
    }

    /// A participant joins `conf`: signaling pushes its session rule to every shard and
    /// the participant starts ICE. Returns its index.
    pub fn join(&mut self, name: &str, conf: &str) -> usize {
        let fp = shared().client_cert.fingerprint();
        self.join_with_fingerprint(name, conf, fp)
    }

    /// Like [`Sim::join`], but signaling pins `fingerprint` (a mismatch makes the relay
    /// refuse the participant's DTLS).
    pub fn join_with_fingerprint(
        &mut self,
        name: &str,
        conf: &str,
        fingerprint: Fingerprint,
    ) -> usize {
        let idx = self.members.len();
        let (ssrcs, relay_ice, local_ice) = test_identity(idx, name);
        let spec = SessionSpec {
            session_id: SessionId::new(name).expect("session id"),
            conf_id: ConfId::new(conf).expect("conf id"),
            ice_ufrag: IceUfrag::new(relay_ice.ufrag.clone()).expect("ufrag"),
            ice_pwd: IcePwd::new(relay_ice.pwd.clone()).expect("pwd"),
            remote_ufrag: IceUfrag::new(local_ice.ufrag.clone()).expect("ufrag"),
            remote_pwd: Some(IcePwd::new(local_ice.pwd.clone()).expect("pwd")),
            dtls_fingerprint: fingerprint.into(),
            streams: vec![
                stream(ssrcs.audio, StreamKind::Audio, Layer::None),
                stream(ssrcs.thumbnail, StreamKind::Video, Layer::Thumbnail),
                stream(ssrcs.full, StreamKind::Video, Layer::Full),
            ],
            // As signaling puts a client's `a=extmap` (by default RFC 6464's only, for
            // `send_audio_level`).
            extmap: self.extmap,
            tmmbr: self.tmmbr,
        };
        self.command_all(rules::upsert_session(&spec));
        let profile = SrtpProfile::AeadAes128Gcm;
        let key: Vec<u8> = (0..profile.master_len())
            .map(|i| (i as u8).wrapping_mul(31) ^ idx as u8)
            .collect();
        let s = shared();
        let mut cfg = ParticipantConfig::new(
            local_ice,
            relay_ice,
            RELAY,
            s.client_cert.clone(),
            s.relay_cert.fingerprint(),
            s.client_dtls.clone(),
            ssrcs,
            MasterKey::new(profile, &key).expect("master key"),
            idx as u64 + 1,
        );
        cfg.auto_feedback = self.auto_feedback;
        // A member that negotiated abs-send-time estimates its downlink and sends REMB.
        cfg.bwe = self.extmap.abs_send_time.filter(|_| self.remb);
        // One that stamps transport-wide sequence numbers estimates its uplink from the
        // relay's feedback.
        cfg.transport_cc = self.extmap.transport_cc;
        // Every member's video carries frame marking where it was negotiated.
        cfg.frame_marking = self.extmap.frame_marking;
        let p = Participant::new(cfg, self.now).expect("participant");
        let addr = SocketAddr::from(([127, 0, 0, 1], self.next_port));
        self.next_port += 1;
        self.by_addr.insert(addr, idx);
        self.members.push(Member {
            name: name.to_owned(),
            addr,
            p,
            events: Vec::new(),
            spec,
            key,
            sent: Vec::new(),
            received: Vec::new(),
            media_log: Vec::new(),
            uplink: Link::new(net::link_seed(self.seed, idx, 0)),
            downlink: Link::new(net::link_seed(self.seed, idx, 1)),
            timeline: None,
        });
        idx
    }

    /// Runs for `ms` with `senders` sending: every 5 ms each driver sends what is due,
    /// and gets the events its participant reported since (keyframe requests, PAUSE and
    /// RESUME, REMB and TMMBR).
    pub fn run_sending(&mut self, senders: &mut [Sending], ms: u64) {
        let end = self.now + Duration::from_millis(ms);
        while self.now < end {
            let now = self.now;
            for s in senders.iter_mut() {
                let m = &mut self.members[s.member];
                for e in &m.events[s.seen.min(m.events.len())..] {
                    s.driver.handle_event(e);
                }
                s.seen = m.events.len();
                // A refused packet is lost, as on a real socket.
                let _ = s.driver.drive(&mut m.p, now);
            }
            self.run_for_ms(5);
        }
    }

    /// One of the engines' counters, summed over the shards.
    pub fn relay_total(&self, counter: impl Fn(&EngineStats) -> u64) -> u64 {
        self.shards.iter().map(|e| counter(e.stats())).sum()
    }

    /// The member at `idx`.
    pub fn member(&self, idx: usize) -> &Member {
        &self.members[idx]
    }

    /// Member `idx`'s path to the relay behaves as `cfg` says, for datagrams it sends
    /// from now on.
    pub fn set_uplink(&mut self, idx: usize, cfg: LinkConfig) {
        self.members[idx].uplink.set_config(cfg);
    }

    /// The relay's path to member `idx` behaves as `cfg` says, for datagrams sent from
    /// now on.
    pub fn set_downlink(&mut self, idx: usize, cfg: LinkConfig) {
        self.members[idx].downlink.set_config(cfg);
    }

    /// Member `idx`'s uplink counters.
    pub fn uplink_stats(&self, idx: usize) -> LinkStats {
        self.members[idx].uplink.stats()
    }

    /// Member `idx`'s downlink counters.
    pub fn downlink_stats(&self, idx: usize) -> LinkStats {
        self.members[idx].downlink.stats()
    }

    /// Datagrams on their way over a link, not yet arrived.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// When the next datagram on its way arrives.
    pub fn next_arrival(&self) -> Option<Instant> {
        self.in_flight.peek().map(|Reverse(d)| d.at)
    }

    /// Sends a rule to every shard, as the relay's control thread does.
    pub fn command_all(&mut self, cmd: Command) {
        for e in &mut self.shards {
            e.handle_command(self.now, cmd.clone());
        }
    }

    /// Signaling removes a participant's session.
    pub fn remove(&mut self, idx: usize) {
        let id = self.members[idx].spec.session_id.clone();
        self.command_all(rules::remove_session(&id));
    }

    /// A participant's full-resolution subscription.
    pub fn subscribe(&mut self, idx: usize, full: FullSet) {
        let session_id = self.members[idx].spec.session_id.clone();
        self.command_all(rules::set_subscription(&SubscriptionSpec {
            session_id,
            full,
        }));
    }

    /// Every member installs every other member's key, as the key events in the
    /// encrypted room would have them do.
    pub fn share_keys(&mut self) {
        let mut all: Vec<(&mut Participant, &[u8])> = self
            .members
            .iter_mut()
            .map(|m| (&mut m.p, m.key.as_slice()))
            .collect();
        share_keys_among(&mut all);
    }

    /// Member `idx` sends one audio packet.
    pub fn send_audio(&mut self, idx: usize, payload: &[u8]) {
        let ssrc = self.members[idx].ssrcs().audio;
        self.send(idx, ssrc, Pt(111), payload);
    }

    /// Member `idx` sends one audio packet carrying an RFC 6464 level (-dBov, 0
    /// loudest) and voice-activity bit, as a client with a VAD does.
    pub fn send_audio_level(&mut self, idx: usize, level: u8, voice: bool, payload: &[u8]) {
        let ssrc = self.members[idx].ssrcs().audio;
        let byte = u8::from(voice) << 7 | (level & 0x7f);
        self.send_with(idx, ssrc, Pt(111), &[(AUDIO_LEVEL_EXT, &[byte])], payload);
    }

    /// The active speakers the relay reported (`active_speaker` notifications), in
    /// order: (conference, session).
    pub fn active_speakers(&self) -> Vec<(String, String)> {
        self.notifications
            .iter()
            .filter_map(|n| match n {
                NotificationBody::ActiveSpeaker {
                    conf_id,
                    session_id,
                } => Some((conf_id.as_str().to_owned(), session_id.as_str().to_owned())),
                _ => None,
            })
            .collect()
    }

    /// Member `idx` sends one video packet on `ssrc`.
    pub fn send(&mut self, idx: usize, ssrc: Ssrc, pt: Pt, payload: &[u8]) {
        self.send_with(idx, ssrc, pt, &[], payload);
    }

    /// Member `idx` sends one packet on `ssrc` carrying these header extensions.
    pub fn send_with(
        &mut self,
        idx: usize,
        ssrc: Ssrc,
        pt: Pt,
        extensions: &[(ExtId, &[u8])],
        payload: &[u8],
    ) {
        let now = self.now;
        self.members[idx]
            .p
            .send_rtp(now, ssrc, pt, false, RtpTime(0), extensions, payload)
            .expect("send_rtp");
        self.pump();
    }

    /// Member `idx`'s NAT rebinds: its datagrams come from `addr` from now on, and what
    /// is sent to its old address is lost.
    pub fn rebind(&mut self, idx: usize, addr: SocketAddr) {
        let old = std::mem::replace(&mut self.members[idx].addr, addr);
        self.by_addr.remove(&old);
        self.by_addr.insert(addr, idx);
    }

    /// A datagram from an address that is no member (an attacker, a scanner).
    pub fn inject(&mut self, from: SocketAddr, bytes: &[u8]) -> Handled<'static> {
        let k = self.shard_of(from);
        let mut buf = bytes.to_vec();
        self.from_strangers.push((from, bytes.to_vec()));
        let handled = match self.shards[k].handle_datagram(self.now, from, &mut buf) {
            Handled::Forward(d) => {
                let dests = d.to_vec();
                self.deliver(&dests, &buf);
                // Leaked only to keep the signature simple; tests are short-lived.
                Handled::Forward(Box::leak(dests.into_boxed_slice()))
            }
            Handled::Consumed => Handled::Consumed,
            Handled::Dropped(r) => Handled::Dropped(r),
        };
        self.pump();
        handled
    }

    /// Runs simulated time forward: in steps of 5 ms, at the end of which the engines'
    /// and participants' due timers fire; datagrams arriving within a step are
    /// delivered at their own arrival instants.
    pub fn run_for_ms(&mut self, ms: u64) {
        let end = self.now + Duration::from_millis(ms);
        self.pump();
        while self.now < end {
            let step_end = self.now + STEP;
            while let Some(at) = self.next_arrival().filter(|&at| at < step_end) {
                self.now = self.now.max(at);
                self.pump();
            }
            self.now = step_end;
            let now = self.now;
            for e in &mut self.shards {
                if e.poll_timeout().is_some_and(|t| t <= now) {
                    e.handle_timeout(now);
                }
            }
            for m in &mut self.members {
                if m.p.poll_timeout().is_some_and(|t| t <= now) {
                    m.p.handle_timeout(now);
                }
            }
            self.pump();
        }
    }

    /// Runs until every member is connected (or fails after 10 simulated seconds).
    pub fn run_until_connected(&mut self) {
        for _ in 0..2000 {
            if self.members.iter().all(|m| m.p.is_connected()) {
                // Let the relay's side settle too.
                self.run_for_ms(20);
                return;
            }
            self.run_for_ms(5);
        }
        let stuck: Vec<_> = self
            .members
            .iter()
            .filter(|m| !m.p.is_connected())
            .map(|m| m.name.clone())
            .collect();
        panic!(
            "not connected after 10 s: {stuck:?}; notifications {:?}",
            self.notifications
        );
    }

    /// Moves datagrams and messages until nothing moves, without advancing time:
    /// datagrams over perfect links (and others' that are due) are delivered, the rest
    /// wait in flight.
    pub fn pump(&mut self) {
        loop {
            let mut moved = false;
            while self.next_arrival().is_some_and(|at| at <= self.now) {
                let Some(Reverse(d)) = self.in_flight.pop() else {
                    break;
                };
                moved = true;
                self.arrive(d.hop, d.bytes);
            }
            for i in 0..self.members.len() {
                while let Some(t) = self.members[i].p.poll_transmit() {
                    moved = true;
                    self.members[i].sent.push(t.bytes.clone());
                    let from = self.members[i].addr;
                    let fate = self.members[i].uplink.admit(self.now, t.bytes.len());
                    self.travel(fate, Hop::Up(from), t.bytes);
                }
                while let Some(e) = self.members[i].p.poll_event() {
                    let m = &mut self.members[i];
                    if let PEvent::Media(media) = &e {
                        if let Some(t) = &mut m.timeline {
                            t.handle_media(self.now, media);
                        }
                        m.media_log.push(MediaArrival {
                            at: self.now,
                            sender: media.sender,
                            ssrc: media.ssrc,
                            seq: media.seq,
                            len: media.packet.len(),
                        });
                    }
                    m.events.push(e);
                }
            }
            for k in 0..self.shards.len() {
                let mut out = Vec::new();
                while let Some(t) = self.shards[k].poll_transmit() {
                    out.push((t.dest, t.data.to_vec()));
                }
                for (dest, bytes) in out {
                    moved = true;
                    self.deliver(&[dest], &bytes);
                }
                while let Some(ev) = self.shards[k].poll_event() {
                    moved = true;
                    match ev {
                        // As the control server does: the engine's event, in the protocol.
                        Event::Session(ev) => self.notifications.extend(rules::notification(ev)),
                        // As the control thread does: the relay forgot it everywhere.
                        Event::Ended(spec, _) => self.command_all(Command::RemoveSession(spec.id)),
                        Event::Peer(dest, msg) => {
                            match msg {
                                PeerMsg::SenderReport { .. } => {
                                    self.sender_reports_between_shards += 1
                                }
                                PeerMsg::Speech { .. } => self.speech_between_shards += 1,
                                _ => {}
                            }
                            let (now, shards) = (self.now, &mut self.shards);
                            dest.route(k, shards.len(), msg, |j, m| {
                                shards[j].handle_command(now, Command::Peer(m));
                            });
                        }
                    }
                }
            }
            if !moved {
                // Every shard's incrementally kept fan-out lists equal lists computed
                // from scratch (quadratic: debug builds, i.e. the tests, only).
                if cfg!(debug_assertions) {
                    for e in &self.shards {
                        if let Err(wrong) = e.check_fanout() {
                            panic!("{wrong}");
                        }
                    }
                }
                return;
            }
        }
    }

    fn send_to_relay(&mut self, from: SocketAddr, mut buf: Vec<u8>) {
        let k = self.shard_of(from);
        if let Handled::Forward(d) = self.shards[k].handle_datagram(self.now, from, &mut buf) {
            let dests = d.to_vec();
            self.deliver(&dests, &buf);
        }
    }

    /// The relay sends `bytes` to each of `dests`: members' over their downlinks.
    fn deliver(&mut self, dests: &[SocketAddr], bytes: &[u8]) {
        for &d in dests {
            match self.member_at(d) {
                Some(i) => {
                    let fate = self.members[i].downlink.admit(self.now, bytes.len());
                    self.travel(fate, Hop::Down(d), bytes.to_vec());
                }
                None => self.to_strangers.push((d, bytes.to_vec())),
            }
        }
    }

    /// A datagram left on `hop`'s link and will meet `fate`.
    fn travel(&mut self, fate: Fate, hop: Hop, bytes: Vec<u8>) {
        match fate {
            Fate::Now => self.arrive(hop, bytes),
            Fate::At(at) => {
                let seq = self.next_seq;
                self.next_seq += 1;
                self.in_flight.push(Reverse(InFlight {
                    at,
                    seq,
                    hop,
                    bytes,
                }));
            }
            Fate::Gone => {}
        }
    }

    /// A datagram reaches the far end of `hop`'s link now.
    fn arrive(&mut self, hop: Hop, mut bytes: Vec<u8>) {
        match hop {
            Hop::Up(from) => {
                if let Some(i) = self.member_at(from) {
                    self.members[i].uplink.delivered(self.now, bytes.len());
                }
                self.send_to_relay(from, bytes);
            }
            // A member that left the simulation while this was on its way gets nothing.
            Hop::Down(to) => {
                if let Some(i) = self.member_at(to) {
                    let m = &mut self.members[i];
                    m.downlink.delivered(self.now, bytes.len());
                    m.received.push(bytes.clone());
                    let _ = m.p.handle_datagram(self.now, RELAY, &mut bytes);
                }
            }
        }
    }

    /// The index of the member at `addr` (tests may have removed members from
    /// [`Sim::members`], shifting those after them).
    fn member_at(&self, addr: SocketAddr) -> Option<usize> {
        match self.by_addr.get(&addr) {
            Some(&i) if self.members.get(i).is_some_and(|m| m.addr == addr) => Some(i),
            Some(_) => self.members.iter().position(|m| m.addr == addr),
            None => None,
        }
    }
}

/// Every participant installs every other one's key (sender ids are the slice indexes),
/// as their key events in the encrypted room would have them do.
pub fn share_keys_among(members: &mut [(&mut Participant, &[u8])]) {
    let keys: Vec<(OwnSsrcs, Vec<u8>)> = members
        .iter()
        .map(|(p, key)| (p.ssrcs(), key.to_vec()))
        .collect();
    for (i, (p, _)) in members.iter_mut().enumerate() {
        for (j, (ssrcs, key)) in keys.iter().enumerate() {
            if i != j {
                p.install_remote_keys(
                    SenderId(j as u64),
                    &ssrcs.as_remote_streams(),
                    SrtpProfile::AeadAes128Gcm,
                    &[(KeyIndex(0), key.as_slice())],
                )
                .expect("install keys");
            }
        }
    }
}

/// A connectivity check for `spec`'s session as a participant sends it (controlling,
/// with transaction id `[tid; 12]`), nominating the path it comes on if `nominate`.
pub fn ice_check(spec: &SessionSpec, tid: u8, nominate: bool) -> Vec<u8> {
    use blindfold_relay::wire::stun::{Class, Method, StunWriter, TransactionId};
    let mut buf = vec![0u8; 256];
    let mut w = StunWriter::new(
        &mut buf,
        Class::Request,
        Method::Binding,
        TransactionId([tid; 12]),
    )
    .expect("buffer");
    w.add_username(&format!(
        "{}:{}",
        spec.ice_ufrag.as_str(),
        spec.remote_ufrag.as_str()
    ))
    .expect("username");
    w.add_priority(0x6e00_01ff).expect("priority");
    w.add_ice_controlling(7).expect("controlling");
    if nominate {
        w.add_use_candidate().expect("use-candidate");
    }
    let n = w
        .finish_with_integrity_and_fingerprint(spec.ice_pwd.as_str().as_bytes())
        .expect("integrity");
    buf.truncate(n);
    buf
}

/// The answer of the participant `spec` describes to the relay's connectivity check
/// `check` (its path check of a new address, received at `at`): a Binding success
/// response with the check's transaction id, keyed with the participant's password.
/// `None` if `check` is not such a check.
pub fn answer_relay_check(spec: &SessionSpec, check: &[u8], at: SocketAddr) -> Option<Vec<u8>> {
    use blindfold_relay::wire::stun::{Class, Method, StunMessage, StunWriter};
    let msg = StunMessage::parse(check).ok()?;
    if msg.class() != Class::Request {
        return None;
    }
    let pwd = spec.remote_pwd.as_ref()?;
    msg.verify_integrity(pwd.as_str().as_bytes()).ok()?;
    let mut buf = vec![0u8; 256];
    let mut w = StunWriter::new(
        &mut buf,
        Class::SuccessResponse,
        Method::Binding,
        msg.transaction_id(),
    )
    .ok()?;
    w.add_xor_mapped_address(at).ok()?;
    let n = w
        .finish_with_integrity_and_fingerprint(pwd.as_str().as_bytes())
        .ok()?;
    buf.truncate(n);
    Some(buf)
}

/// The SSRCs and ICE credentials of test participant number `idx` called `name`
/// (relay's, then participant's), unique per participant.
pub fn test_identity(idx: usize, name: &str) -> (OwnSsrcs, IceCredentials, IceCredentials) {
    let ssrcs = OwnSsrcs::numbered(idx);
    let relay_ice = IceCredentials {
        ufrag: format!("relay{name}"),
        pwd: format!("relaypwd{name}0123456789abcdef"),
    };
    let local_ice = IceCredentials {
        ufrag: format!("peer{name}"),
        pwd: format!("peerpwd{name}0123456789abcdef"),
    };
    (ssrcs, relay_ice, local_ice)
}

fn stream(ssrc: Ssrc, kind: StreamKind, layer: Layer) -> StreamSpec {
    StreamSpec { ssrc, kind, layer }
}
