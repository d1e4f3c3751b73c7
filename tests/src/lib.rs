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
//! a real Synapse homeserver, and [`matrix`] calls its client-server API as a test user;
//! [`demo`] holds the pieces of the `blindfold-demo` binary (`scripts/demo`).
#![allow(clippy::disallowed_methods)] // one base instant; everything after is simulated

pub mod bench;
pub mod demo;
pub mod fixtures;
pub mod matrix;
pub mod process;
pub mod signaling;
pub mod synapse;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use blindfold_client::{
    Event as PEvent, IceCredentials, MediaPacket, OwnSsrcs, Participant, ParticipantConfig,
    SenderId,
};
use blindfold_relay::control::rules;
use blindfold_relay::control::{
    ConfId, ExtmapIds, FullSet, IcePwd, IceUfrag, Layer, NotificationBody, SessionId, SessionSpec,
    StreamKind, StreamSpec, SubscriptionSpec,
};
use blindfold_relay::dtls::{DtlsCert, DtlsConfig, DtlsSettings, Fingerprint};
use blindfold_relay::engine::{
    Command, Engine, EngineConfig, Event, Handled, PeerDest, PeerMsg, ShardId,
};
use blindfold_relay::id::{KeyIndex, Pt, RtpTime, Ssrc};
use blindfold_relay::srtp::{MasterKey, SrtpProfile};

/// The relay's public address in the simulation.
pub const RELAY: SocketAddr = SocketAddr::new(
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 1)),
    40000,
);

const STEP: Duration = Duration::from_millis(5);

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
    /// Datagrams that arrived at the relay from addresses that are not members.
    pub from_strangers: Vec<(SocketAddr, Vec<u8>)>,
    /// What the relay sent to addresses that are not members.
    pub to_strangers: Vec<(SocketAddr, Vec<u8>)>,
    by_addr: HashMap<SocketAddr, usize>,
    next_port: u16,
}

impl Sim {
    /// A relay with `workers` shards and no participants.
    pub fn new(workers: u16) -> Self {
        let s = shared();
        let now = Instant::now();
        let shards = (0..workers)
            .map(|i| {
                let cfg = EngineConfig::new(ShardId(i), s.relay_cert.clone(), s.relay_dtls.clone());
                Engine::new(cfg)
            })
            .collect();
        Sim {
            now,
            shards,
            members: Vec::new(),
            notifications: Vec::new(),
            sender_reports_between_shards: 0,
            from_strangers: Vec::new(),
            to_strangers: Vec::new(),
            by_addr: HashMap::new(),
            next_port: 10_000,
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
            dtls_fingerprint: fingerprint.into(),
            streams: vec![
                stream(ssrcs.audio, StreamKind::Audio, Layer::None),
                stream(ssrcs.thumbnail, StreamKind::Video, Layer::Thumbnail),
                stream(ssrcs.full, StreamKind::Video, Layer::Full),
            ],
            extmap: ExtmapIds::default(),
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
        cfg.auto_feedback = false;
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
        });
        idx
    }

    /// The member at `idx`.
    pub fn member(&self, idx: usize) -> &Member {
        &self.members[idx]
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

    /// Member `idx` sends one video packet on `ssrc`.
    pub fn send(&mut self, idx: usize, ssrc: Ssrc, pt: Pt, payload: &[u8]) {
        let now = self.now;
        self.members[idx]
            .p
            .send_rtp(now, ssrc, pt, false, RtpTime(0), &[], payload)
            .expect("send_rtp");
        self.pump();
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

    /// Runs simulated time forward.
    pub fn run_for_ms(&mut self, ms: u64) {
        let end = self.now + Duration::from_millis(ms);
        self.pump();
        while self.now < end {
            self.now += STEP;
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

    /// Moves datagrams and messages until nothing moves.
    pub fn pump(&mut self) {
        loop {
            let mut moved = false;
            for i in 0..self.members.len() {
                while let Some(t) = self.members[i].p.poll_transmit() {
                    moved = true;
                    self.members[i].sent.push(t.bytes.clone());
                    let from = self.members[i].addr;
                    self.send_to_relay(from, t.bytes);
                }
                while let Some(e) = self.members[i].p.poll_event() {
                    self.members[i].events.push(e);
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
                        Event::Ended(spec) => self.command_all(Command::RemoveSession(spec.id)),
                        Event::Peer(dest, msg) => {
                            if matches!(msg, PeerMsg::SenderReport { .. }) {
                                self.sender_reports_between_shards += 1;
                            }
                            for (j, e) in self.shards.iter_mut().enumerate() {
                                let to_it = match dest {
                                    PeerDest::All => j != k,
                                    PeerDest::Shard(s) => usize::from(s.0) == j,
                                };
                                if to_it {
                                    e.handle_command(self.now, Command::Peer(msg.clone()));
                                }
                            }
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

    fn deliver(&mut self, dests: &[SocketAddr], bytes: &[u8]) {
        for &d in dests {
            match self.by_addr.get(&d) {
                Some(&i) => {
                    let m = &mut self.members[i];
                    m.received.push(bytes.to_vec());
                    let mut buf = bytes.to_vec();
                    let _ = m.p.handle_datagram(self.now, RELAY, &mut buf);
                }
                None => self.to_strangers.push((d, bytes.to_vec())),
            }
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
