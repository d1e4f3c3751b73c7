//! Behaviour tests in simulated time: the participant against an in-test relay built
//! from the relay crate's STUN module and DTLS server, datagrams shuttled in memory.

// Tests choose an arbitrary base instant; everything after it is simulated.
#![allow(clippy::disallowed_methods)]

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use blindfold_relay::dtls::{
    DtlsCert, DtlsConfig, DtlsError, DtlsEvent, DtlsSession, DtlsSettings, Fingerprint,
    SrtpKeyMaterial,
};
use blindfold_relay::id::{ExtId, KeyIndex, Pt, RtpTime, Ssrc, WireSeq};
use blindfold_relay::srtp::{MasterKey, SrtpContext, SrtpError, SrtpProfile};
use blindfold_relay::wire::rtcp::{CompoundWriter, RtcpCompound, RtcpPacket};
use blindfold_relay::wire::rtp::AbsSendTime;
use blindfold_relay::wire::stun::{
    AttrType, Class, Method, StunError, StunMessage, StunWriter, TransactionId,
};

use super::*;
use crate::ice::PRFLX_PRIORITY;

const RELAY_UFRAG: &str = "relU";
const RELAY_PWD: &str = "relay-password-0123456789";

fn dtls_settings() -> DtlsSettings {
    let mut s = DtlsSettings::default();
    s.insecure_rng_seed = Some(11);
    s
}

fn server_config() -> &'static DtlsConfig {
    static C: OnceLock<DtlsConfig> = OnceLock::new();
    C.get_or_init(|| DtlsConfig::new(dtls_settings()).unwrap())
}

fn client_config() -> &'static DtlsConfig {
    static C: OnceLock<DtlsConfig> = OnceLock::new();
    C.get_or_init(|| DtlsConfig::new(dtls_settings()).unwrap())
}

fn relay_cert() -> &'static DtlsCert {
    static C: OnceLock<DtlsCert> = OnceLock::new();
    C.get_or_init(|| DtlsCert::generate().unwrap())
}

fn client_cert(n: usize) -> DtlsCert {
    static C: OnceLock<Vec<DtlsCert>> = OnceLock::new();
    C.get_or_init(|| (0..2).map(|_| DtlsCert::generate().unwrap()).collect())[n % 2].clone()
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([192, 0, 2, 1], port))
}

const PROFILE: SrtpProfile = SrtpProfile::AeadAes128Gcm;

fn master(fill: u8) -> Vec<u8> {
    (0..PROFILE.master_len() as u8).map(|b| b ^ fill).collect()
}

fn ssrcs(base: u32) -> OwnSsrcs {
    OwnSsrcs {
        audio: Ssrc(base),
        thumbnail: Ssrc(base + 1),
        full: Ssrc(base + 2),
    }
}

fn remote_streams(s: OwnSsrcs) -> Vec<RemoteStream> {
    vec![
        RemoteStream {
            ssrc: s.audio,
            kind: MediaKind::Audio,
        },
        RemoteStream {
            ssrc: s.thumbnail,
            kind: MediaKind::Video,
        },
        RemoteStream {
            ssrc: s.full,
            kind: MediaKind::Video,
        },
    ]
}

fn config(n: usize, relay_addr: SocketAddr, relay_fp: Fingerprint) -> ParticipantConfig {
    let mut c = ParticipantConfig::new(
        IceCredentials {
            ufrag: format!("loc{n}"),
            pwd: format!("local-password-{n}-abcdefgh"),
        },
        IceCredentials {
            ufrag: RELAY_UFRAG.into(),
            pwd: RELAY_PWD.into(),
        },
        relay_addr,
        client_cert(n),
        relay_fp,
        client_config().clone(),
        ssrcs(1000 * (n as u32 + 1)),
        MasterKey::new(PROFILE, &master(n as u8 + 1)).unwrap(),
        42 + n as u64,
    );
    c.auto_feedback = false;
    c
}

/// Builds the relay's answer to a Binding request, keyed with `pwd`.
fn binding_response(tid: TransactionId, mapped: SocketAddr, pwd: &str) -> Vec<u8> {
    let mut buf = [0u8; 256];
    let mut w = StunWriter::new(&mut buf, Class::SuccessResponse, Method::Binding, tid).unwrap();
    w.add_xor_mapped_address(mapped).unwrap();
    let n = w
        .finish_with_integrity_and_fingerprint(pwd.as_bytes())
        .unwrap();
    buf[..n].to_vec()
}

/// The relay's side for one participant: an ICE-lite responder on the relay crate's STUN
/// module, and its DTLS server.
struct FakeRelay {
    addr: SocketAddr,
    participant_addr: SocketAddr,
    local_ufrag: String,
    dtls: DtlsSession,
    keys: Option<SrtpKeyMaterial>,
    /// Protects its keepalives ([`FakeRelay::keepalive`]), once keyed.
    srtcp_out: Option<SrtpContext>,
    failed: Option<DtlsError>,
    nominated: bool,
}

impl FakeRelay {
    fn new(at: SocketAddr, p: &ParticipantConfig, now: Instant) -> Self {
        FakeRelay {
            addr: at,
            participant_addr: addr(9),
            local_ufrag: p.local_ice.ufrag.clone(),
            dtls: DtlsSession::server(server_config(), relay_cert(), p.cert.fingerprint(), now),
            keys: None,
            srtcp_out: None,
            failed: None,
            nominated: false,
        }
    }

    /// Handles a datagram from the participant; returns what to send back.
    fn handle(&mut self, now: Instant, d: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        match d.first() {
            Some(0..=3) => {
                let m = StunMessage::parse(d).unwrap();
                m.verify_fingerprint().unwrap();
                m.verify_integrity(RELAY_PWD.as_bytes()).unwrap();
                assert_eq!(
                    m.username().unwrap(),
                    Some(format!("{RELAY_UFRAG}:{}", self.local_ufrag).as_str())
                );
                self.nominated |= m.use_candidate().unwrap();
                out.push(binding_response(
                    m.transaction_id(),
                    self.participant_addr,
                    RELAY_PWD,
                ));
            }
            Some(20..=63) => {
                let _ = self.dtls.handle_datagram(now, d);
                self.drain(&mut out);
            }
            _ => {}
        }
        out
    }

    fn drain(&mut self, out: &mut Vec<Vec<u8>>) {
        while let Some(p) = self.dtls.poll_transmit() {
            out.push(p.to_vec());
        }
        while let Some(e) = self.dtls.poll_event() {
            match e {
                DtlsEvent::Connected(k) => {
                    self.srtcp_out = Some(relay_srtcp_out(&k));
                    self.keys = Some(k);
                }
                DtlsEvent::Failed(e) => self.failed = Some(e),
                _ => {}
            }
        }
    }

    fn timeout(&mut self, now: Instant) -> Vec<Vec<u8>> {
        self.dtls.handle_timeout(now);
        let mut out = Vec::new();
        self.drain(&mut out);
        out
    }

    /// An empty receiver report in SRTCP, as the relay sends a session it sent nothing
    /// else for a second (none before the DTLS handshake completed).
    fn keepalive(&mut self) -> Option<Vec<u8>> {
        let out = self.srtcp_out.as_mut()?;
        let mut buf = vec![0u8; 128];
        let mut w = CompoundWriter::new(&mut buf);
        w.rr(Ssrc(0x0b11_dfd0), &[]).unwrap();
        let len = w.finish();
        let n = out.protect_rtcp(&mut buf, len).unwrap();
        buf.truncate(n);
        Some(buf)
    }
}

/// The relay side's SRTCP context of a DTLS association with `keys`, reading what
/// the participant sends (`client_master`).
fn relay_srtcp_in(keys: &SrtpKeyMaterial) -> SrtpContext {
    let profile = srtp_profile(keys.profile).unwrap();
    SrtpContext::new(profile, keys.client_master.key_salt(), None).unwrap()
}

/// The relay side's SRTCP context protecting what goes to the participant
/// (`server_master`).
fn relay_srtcp_out(keys: &SrtpKeyMaterial) -> SrtpContext {
    let profile = srtp_profile(keys.profile).unwrap();
    SrtpContext::new(profile, keys.server_master.key_salt(), None).unwrap()
}

/// Shuttles datagrams between a participant and its fake relay until both are quiet,
/// advancing time to the next timer up to `until`. Returns the participant's events.
fn run(p: &mut Participant, r: &mut FakeRelay, now: &mut Instant, until: Instant) -> Vec<Event> {
    let mut events = Vec::new();
    loop {
        let mut moved = false;
        while let Some(t) = p.poll_transmit() {
            assert_eq!(t.dest, r.addr);
            moved = true;
            for mut back in r.handle(*now, &t.bytes) {
                let _ = p.handle_datagram(*now, r.addr, &mut back);
            }
        }
        for mut back in r.timeout(*now) {
            moved = true;
            let _ = p.handle_datagram(*now, r.addr, &mut back);
        }
        while let Some(e) = p.poll_event() {
            events.push(e);
        }
        if moved {
            continue;
        }
        let next = [p.poll_timeout(), r.dtls.poll_timeout()]
            .into_iter()
            .flatten()
            .min();
        match next {
            Some(t) if t <= until => {
                *now = (*now).max(t);
                p.handle_timeout(*now);
            }
            _ => return events,
        }
    }
}

fn connected(n: usize, relay_port: u16, t0: Instant) -> (Participant, FakeRelay, Instant) {
    connected_with(n, relay_port, t0, |_| {})
}

/// [`connected`] with a change to the participant's configuration.
fn connected_with(
    n: usize,
    relay_port: u16,
    t0: Instant,
    change: impl FnOnce(&mut ParticipantConfig),
) -> (Participant, FakeRelay, Instant) {
    let mut cfg = config(n, addr(relay_port), relay_cert().fingerprint());
    change(&mut cfg);
    let mut relay = FakeRelay::new(addr(relay_port), &cfg, t0);
    let mut p = Participant::new(cfg, t0).unwrap();
    let mut now = t0;
    // It connects within milliseconds; the fake relay sends no SRTCP, so stop before
    // the participant asks where the relay sees it (RELAY_PROBE).
    let events = run(&mut p, &mut relay, &mut now, t0 + Duration::from_secs(1));
    assert!(events.contains(&Event::IceSelected), "{events:?}");
    assert!(
        events.contains(&Event::Connected {
            srtcp_profile: SrtpProfile::AeadAes256Gcm
        }),
        "{events:?}"
    );
    assert!(p.is_connected());
    assert!(relay.nominated);
    assert!(relay.keys.is_some());
    (p, relay, now)
}

fn stun_requests(p: &mut Participant) -> Vec<Vec<u8>> {
    let mut v = Vec::new();
    while let Some(t) = p.poll_transmit() {
        v.push(t.bytes);
    }
    v
}

// --- (1) ICE ----------------------------------------------------------------------------

#[test]
fn ice_request_verifies_with_relay_pwd_and_nominates() {
    let t0 = Instant::now();
    let cfg = config(0, addr(5000), relay_cert().fingerprint());
    let mut p = Participant::new(cfg, t0).unwrap();
    let reqs = stun_requests(&mut p);
    assert_eq!(reqs.len(), 1);
    let m = StunMessage::parse(&reqs[0]).unwrap();
    assert_eq!(m.class(), Class::Request);
    assert_eq!(m.method(), Method::Binding);
    m.verify_fingerprint().unwrap();
    m.verify_integrity(RELAY_PWD.as_bytes()).unwrap();
    assert_eq!(
        m.verify_integrity(b"local-password-0-abcdefgh"),
        Err(StunError::IntegrityMismatch)
    );
    assert_eq!(m.username().unwrap(), Some("relU:loc0"));
    assert!(m.use_candidate().unwrap());
    assert_eq!(m.priority().unwrap(), Some(PRFLX_PRIORITY));
    assert_eq!(m.ice_controlling().unwrap(), Some(p.tie_breaker()));
    assert_eq!(m.ice_controlled().unwrap(), None);
    assert_eq!(m.first_unknown_required(), None);
}

#[test]
fn ice_retransmits_on_rfc5389_schedule_then_fails() {
    let t0 = Instant::now();
    let cfg = config(0, addr(5000), relay_cert().fingerprint());
    let mut p = Participant::new(cfg, t0).unwrap();
    let mut sent = Vec::new();
    let mut tids = Vec::new();
    let mut now = t0;
    let mut failed_at = None;
    for _ in 0..20 {
        while let Some(t) = p.poll_transmit() {
            sent.push((now - t0).as_millis());
            tids.push(StunMessage::parse(&t.bytes).unwrap().transaction_id());
        }
        while let Some(e) = p.poll_event() {
            assert_eq!(e, Event::Failed(FailReason::IceTimeout));
            failed_at = Some((now - t0).as_millis());
        }
        let Some(next) = p.poll_timeout() else { break };
        now = next;
        p.handle_timeout(now);
    }
    assert_eq!(sent, [0, 500, 1500, 3500, 7500, 15500, 31500]);
    assert!(
        tids.iter().all(|t| *t == tids[0]),
        "retransmissions reuse the tid"
    );
    assert_eq!(failed_at, Some(39500));
    assert!(p.is_failed());
    assert_eq!(p.poll_timeout(), None);
}

#[test]
fn ice_ignores_bad_responses_and_selects_on_good_one() {
    let t0 = Instant::now();
    let relay = addr(5000);
    let cfg = config(0, relay, relay_cert().fingerprint());
    let mut p = Participant::new(cfg, t0).unwrap();
    let req = stun_requests(&mut p).remove(0);
    let tid = StunMessage::parse(&req).unwrap().transaction_id();

    // Keyed with the wrong password: ignored, counted.
    let mut bad = binding_response(tid, addr(9), "not-the-relay-password");
    assert_eq!(
        p.handle_datagram(t0, relay, &mut bad),
        Err(DropReason::Stun(StunError::IntegrityMismatch))
    );
    // Right key, wrong transaction.
    let mut other = binding_response(TransactionId([9; 12]), addr(9), RELAY_PWD);
    assert_eq!(
        p.handle_datagram(t0, relay, &mut other),
        Err(DropReason::StunUnknownTransaction)
    );
    // Right response from another address.
    let mut good = binding_response(tid, addr(9), RELAY_PWD);
    assert_eq!(
        p.handle_datagram(t0, addr(5001), &mut good.clone()),
        Err(DropReason::UnknownSource)
    );
    // A corrupted FINGERPRINT.
    let mut fp = good.clone();
    let last = fp.len() - 1;
    fp[last] ^= 1;
    assert_eq!(
        p.handle_datagram(t0, relay, &mut fp),
        Err(DropReason::Stun(StunError::FingerprintMismatch))
    );
    assert_eq!(p.poll_event(), None);
    assert_eq!(p.stats().total_dropped(), 4);
    assert_eq!(
        p.stats()
            .dropped(DropReason::Stun(StunError::IntegrityMismatch)),
        1
    );

    let mut dup = good.clone();
    assert_eq!(p.handle_datagram(t0, relay, &mut good), Ok(()));
    assert_eq!(p.poll_event(), Some(Event::IceSelected));
    // A second answer (to a retransmission) is still ours, and selects nothing twice.
    assert_eq!(p.handle_datagram(t0, relay, &mut dup), Ok(()));
    assert_eq!(p.poll_event(), None);
    // The DTLS ClientHello follows at once.
    let t = p.poll_transmit().unwrap();
    assert_eq!(t.bytes[0], 22);
}

#[test]
fn consent_checks_every_4_to_6_s_keep_the_session() {
    let t0 = Instant::now();
    let (mut p, mut relay, mut now) = connected(0, 5000, t0);
    let mut checks = Vec::new();
    let mut next_beat = now;
    while now < t0 + Duration::from_secs(90) {
        now = p.poll_timeout().unwrap().min(next_beat);
        if now == next_beat {
            // The relay's once-a-second SRTCP keeps it from looking as if it lost us.
            let mut beat = relay.keepalive().unwrap();
            p.handle_datagram(now, relay.addr, &mut beat).unwrap();
            next_beat += Duration::from_secs(1);
        }
        p.handle_timeout(now);
        while let Some(t) = p.poll_transmit() {
            if t.bytes[0] > 3 {
                continue; // our RTCP reports
            }
            let m = StunMessage::parse(&t.bytes).unwrap();
            assert!(
                !m.use_candidate().unwrap(),
                "consent checks do not nominate"
            );
            checks.push(now);
            for mut back in relay.handle(now, &t.bytes) {
                p.handle_datagram(now, relay.addr, &mut back).unwrap();
            }
        }
        if let Some(e) = p.poll_event() {
            panic!("{e:?}");
        }
    }
    assert!(p.is_connected());
    assert!(checks.len() >= 14, "{}", checks.len());
    let mut distinct = std::collections::BTreeSet::new();
    for w in checks.windows(2) {
        let gap = w[1] - w[0];
        assert!(
            gap >= Duration::from_secs(4) && gap <= Duration::from_secs(6),
            "{gap:?}"
        );
        distinct.insert(gap);
    }
    assert!(distinct.len() > 3, "randomized: {distinct:?}");
}

#[test]
fn consent_lost_after_30_s_of_silence() {
    let t0 = Instant::now();
    let (mut p, _relay, connected_at) = connected(0, 5000, t0);
    // From now on the relay answers nothing.
    let mut now = connected_at;
    let mut failed = None;
    while failed.is_none() {
        let Some(next) = p.poll_timeout() else { break };
        now = next;
        p.handle_timeout(now);
        while p.poll_transmit().is_some() {}
        while let Some(e) = p.poll_event() {
            if let Event::Failed(r) = e {
                failed = Some(r);
            }
        }
    }
    assert_eq!(failed, Some(FailReason::ConsentLost));
    // The last verified response was the nomination, at most a few ms into the run.
    let since = now - t0;
    assert!(
        since >= Duration::from_secs(30) && since < Duration::from_secs(31),
        "{since:?}"
    );
}

// --- (2) DTLS and SRTCP -----------------------------------------------------------------

/// How the relay treats a participant in [`relay_silence`].
#[derive(Clone, Copy)]
struct Silence {
    /// How long the participant sends audio (every 20 ms, transport-wide numbers on).
    sending: Duration,
    /// The relay sends an SRTCP receiver report this often, if at all (the real one
    /// sends some SRTCP at least once a second).
    feedback: Option<Duration>,
    /// The relay answers consent checks.
    consent: bool,
    /// When the participant reconnects, a fresh relay (a restarted one) takes it, and
    /// sends feedback with this period, if at all.
    restarted_feedback: Option<Option<Duration>>,
}

/// Runs a connected participant for 20 s as `how` says; returns its events (media and
/// reports left out) with when they came, from its start (it connects within
/// milliseconds).
fn relay_silence(how: Silence) -> Vec<(Duration, Event)> {
    let t0 = Instant::now();
    let tcc = ExtId(5);
    let (mut p, mut relay, start) = connected_with(0, 5000, t0, |c| c.transport_cc = Some(tcc));
    let mut keyed = true;
    let mut feedback = how.feedback;
    let audio = p.ssrcs().audio;
    let mut now = start;
    let mut next_feedback = feedback.map(|f| t0 + f);
    let mut events = Vec::new();
    for n in 0u16..1000 {
        let t = start + Duration::from_millis(20) * u32::from(n);
        while let Some(due) = p.poll_timeout().filter(|&d| d <= t) {
            now = now.max(due);
            p.handle_timeout(now);
        }
        now = now.max(t);
        // A reconnect's first check goes to the restarted relay.
        while let Some(e) = p.poll_event() {
            if e == Event::Reconnecting
                && let Some(restarted) = how.restarted_feedback
            {
                relay = FakeRelay::new(relay.addr, &p.config, now);
                keyed = false;
                feedback = restarted;
            }
            if !matches!(e, Event::Media(_) | Event::ReceiverReport { .. }) {
                events.push((now - t0, e));
            }
        }
        if p.is_connected() && t < start + how.sending {
            let tcc_seq = n.to_be_bytes();
            let exts = [(tcc, &tcc_seq[..])];
            let ts = RtpTime(u32::from(n) * 960);
            p.send_rtp(now, audio, Pt(111), false, ts, &exts, &[7; 80])
                .unwrap();
        }
        if let Some(at) = next_feedback
            && at <= now
            && keyed
            && p.is_connected()
        {
            next_feedback = feedback.map(|f| at + f);
            let mut beat = relay.keepalive().unwrap();
            p.handle_datagram(now, relay.addr, &mut beat).unwrap();
        }
        while let Some(d) = p.poll_transmit() {
            let stun = d.bytes.first().is_some_and(|b| *b < 4);
            if stun && !how.consent {
                continue;
            }
            for mut back in relay.handle(now, &d.bytes) {
                let _ = p.handle_datagram(now, relay.addr, &mut back);
            }
        }
        for mut back in relay.timeout(now) {
            let _ = p.handle_datagram(now, relay.addr, &mut back);
        }
        if !keyed && relay.keys.is_some() {
            keyed = true;
            next_feedback = feedback.map(|f| now + f);
        }
        while let Some(e) = p.poll_event() {
            if !matches!(e, Event::Media(_) | Event::ReceiverReport { .. }) {
                events.push((now - t0, e));
            }
        }
    }
    events
}

#[test]
fn a_relay_that_answers_consent_but_sends_no_srtcp_is_connected_to_again() {
    let secs = Duration::from_secs;
    let silent = Silence {
        sending: secs(20),
        feedback: None,
        consent: true,
        restarted_feedback: Some(Some(secs(1))),
    };
    // The relay restarted: it answers our consent checks (it has our credentials
    // back), never sends SRTCP. Our check at RELAY_PROBE (2 s) is answered from the
    // address we had, so we wait out RELAY_SILENCE (5 s after we connected), then
    // connect again, to the new relay.
    let events = relay_silence(silent);
    let kinds: Vec<&Event> = events.iter().map(|(_, e)| e).collect();
    assert!(
        matches!(
            kinds[..],
            [
                Event::Reconnecting,
                Event::IceSelected,
                Event::Connected { .. }
            ]
        ),
        "{events:?}"
    );
    let at = events[0].0;
    assert!(
        at >= RELAY_SILENCE && at <= RELAY_SILENCE + Duration::from_millis(40),
        "{at:?}"
    );
    assert!(events[2].0 - at < secs(1), "{events:?}");
    // A new relay that says nothing either: we fail.
    let events = relay_silence(Silence {
        restarted_feedback: Some(None),
        ..silent
    });
    assert!(
        matches!(
            events.last(),
            Some((_, Event::Failed(FailReason::RelaySilent)))
        ),
        "{events:?}"
    );
    // SRTCP every 100 ms (transport-cc feedback), every second (the relay's keepalive),
    // or even every 4 s: alive.
    for f in [Duration::from_millis(100), secs(1), secs(4)] {
        let events = relay_silence(Silence {
            feedback: Some(f),
            ..silent
        });
        assert!(events.is_empty(), "{events:?}");
    }
    // A participant that sends nothing (a listener) tells a lost session the same way.
    let listening = relay_silence(Silence {
        sending: Duration::ZERO,
        ..silent
    });
    assert_eq!(
        listening.iter().map(|(_, e)| e).collect::<Vec<_>>(),
        kinds,
        "{listening:?}"
    );
    // A network that carries nothing either way is consent's business (30 s).
    let events = relay_silence(Silence {
        consent: false,
        ..silent
    });
    assert!(events.is_empty(), "{events:?}");
}

#[test]
fn a_participant_whose_nat_rebinds_nominates_its_new_address() {
    let ms = Duration::from_millis;
    // The relay sends SRTCP every second (its beat: a listener), or every 100 ms
    // (transport-cc feedback: a sender). The NAT rebinds at 3.3 s, so the last SRTCP
    // that reaches us came at 3 s, or 3.2 s; we ask where the relay sees us after four
    // usual gaps (2 s at most, 500 ms at least): at 5 s, or 3.7 s.
    for (beat, asked) in [(ms(1000), ms(5000)), (ms(100), ms(3700))] {
        nat_rebinding(beat, asked);
    }
}

/// [`a_participant_whose_nat_rebinds_nominates_its_new_address`] with the relay's
/// SRTCP every `beat`; we should ask at `asked`.
fn nat_rebinding(beat: Duration, asked: Duration) {
    let ms = Duration::from_millis;
    let t0 = Instant::now();
    let (mut p, mut relay, start) = connected(0, 5000, t0);
    let (old, new) = (relay.participant_addr, addr(10));
    let rebinding = start + ms(3300);
    // The relay's SRTCP reaches us until our NAT rebinds, and again once we nominated
    // the new address (its media follows the nomination).
    let mut nominated_at = None;
    let mut heard = Vec::new();
    // Each check we send: when, and whether it nominates.
    let mut checks = Vec::new();
    let mut events = Vec::new();
    let mut dropped_first_nomination = false;
    for n in 0..1500u32 {
        let since = ms(10) * n;
        let now = start + since;
        if now >= rebinding {
            relay.participant_addr = new;
        }
        let reaches_us = relay.participant_addr == old || nominated_at.is_some();
        if n > 0 && since.as_millis().is_multiple_of(beat.as_millis()) && reaches_us {
            let mut srtcp = relay.keepalive().unwrap();
            p.handle_datagram(now, relay.addr, &mut srtcp).unwrap();
            heard.push(since);
        }
        // Twice: an answer can make a check due at once.
        for _ in 0..2 {
            p.handle_timeout(now);
            while let Some(d) = p.poll_transmit() {
                let Ok(m) = StunMessage::parse(&d.bytes) else {
                    continue; // our receiver reports
                };
                let nominates = m.use_candidate().unwrap();
                checks.push((since, nominates));
                // The first nominating check is lost: the next follows an RTO later.
                if nominates && !dropped_first_nomination {
                    dropped_first_nomination = true;
                    continue;
                }
                if nominates && relay.participant_addr == new {
                    nominated_at.get_or_insert(since);
                }
                for mut back in relay.handle(now, &d.bytes) {
                    p.handle_datagram(now, relay.addr, &mut back).unwrap();
                }
            }
        }
        events.extend(std::iter::from_fn(|| p.poll_event()).map(|e| (now - start, e)));
    }
    // We ask, learn the new address from the answer and nominate it at once: that
    // check is lost, the next goes 500 ms later (the RTO).
    assert_eq!(events, [(asked, Event::AddressChanged(new))], "{beat:?}");
    assert_eq!(
        checks
            .iter()
            .filter(|c| c.0 >= ms(3300))
            .take(3)
            .collect::<Vec<_>>(),
        [&(asked, false), &(asked, true), &(asked + ms(500), true)],
        "{beat:?}"
    );
    let answered = asked + ms(500);
    assert_eq!(nominated_at, Some(answered));
    // Then back to consent, 4 s after the answer and every 4–6 s, not nominating; the
    // relay's SRTCP reaches us again, and nothing connected again.
    let after: Vec<_> = checks.iter().filter(|c| c.0 > answered).collect();
    assert!(
        !after.is_empty() && after.iter().all(|c| !c.1),
        "{checks:?}"
    );
    assert_eq!(after[0].0, answered + ms(4000), "{checks:?}");
    let back = heard.iter().find(|&&t| t > answered).copied();
    assert!(back.is_some_and(|t| t <= answered + beat), "{heard:?}");
    assert!(
        heard.last().is_some_and(|&t| t + beat >= ms(15_000)),
        "{heard:?}"
    );
    assert!(p.is_connected());
}

#[test]
fn dtls_connects_and_srtcp_works_both_ways() {
    let t0 = Instant::now();
    let (mut p, relay, now) = connected(0, 5000, t0);
    let keys = relay.keys.clone().unwrap();
    let profile = srtp_profile(keys.profile).unwrap();
    let own = p.ssrcs();

    // Participant → relay: the relay unprotects with client_master.
    p.request_keyframe(now, Ssrc(77)).unwrap();
    let mut d = p.poll_transmit().unwrap().bytes;
    let mut relay_in = relay_srtcp_in(&keys);
    let n = relay_in.unprotect_rtcp(&mut d).unwrap();
    let compound = RtcpCompound::parse(&d[..n]).unwrap();
    match compound.packets().next().unwrap().unwrap() {
        RtcpPacket::Pli(pli) => {
            assert_eq!(pli.sender_ssrc(), own.audio);
            assert_eq!(pli.media_ssrc(), Ssrc(77));
        }
        other => panic!("{other:?}"),
    }

    // Relay → participant: protected with server_master.
    let mut relay_out = relay_srtcp_out(&keys);
    let mut buf = vec![0u8; 256];
    let mut w = CompoundWriter::new(&mut buf);
    w.pli(Ssrc(1), own.full).unwrap();
    w.remb(Ssrc(1), 750_000, &[own.full]).unwrap();
    w.nack(Ssrc(1), own.thumbnail, &[WireSeq(5), WireSeq(7)])
        .unwrap();
    let len = w.finish();
    let n = relay_out.protect_rtcp(&mut buf, len).unwrap();
    p.handle_datagram(now, relay.addr, &mut buf[..n]).unwrap();
    let events: Vec<Event> = std::iter::from_fn(|| p.poll_event()).collect();
    assert_eq!(
        events,
        [
            Event::KeyframeRequested(own.full),
            Event::Remb {
                bitrate_bps: 750_000,
                ssrcs: vec![own.full]
            },
            Event::Nack {
                ssrc: own.thumbnail,
                lost: vec![WireSeq(5), WireSeq(7)]
            },
        ]
    );

    // The wrong direction's key does not work: a packet protected with client_master
    // (i.e. a reflected one of ours) is rejected.
    let mut wrong = SrtpContext::new(profile, keys.client_master.key_salt(), None).unwrap();
    let mut buf = vec![0u8; 64];
    // (Another sender SSRC, so the replay check, which comes first, does not hit.)
    let len = blindfold_relay::wire::rtcp::write_pli(&mut buf, Ssrc(2), own.full).unwrap();
    let n = wrong.protect_rtcp(&mut buf, len).unwrap();
    assert_eq!(
        p.handle_datagram(now, relay.addr, &mut buf[..n]),
        Err(DropReason::Srtcp(SrtpError::AuthFailed))
    );
}

#[test]
fn what_a_relay_packs_into_its_datagrams_costs_the_participant_little() {
    let t0 = Instant::now();
    let (mut p, relay, now) = connected(0, 5000, t0);
    let keys = relay.keys.clone().unwrap();
    let own = p.ssrcs();
    let mut relay_out = relay_srtcp_out(&keys);
    let mut send = |p: &mut Participant, compound: &[u8]| {
        let mut buf = compound.to_vec();
        buf.resize(compound.len() + 64, 0);
        let n = relay_out.protect_rtcp(&mut buf, compound.len()).unwrap();
        p.handle_datagram(now, relay.addr, &mut buf[..n])
    };
    // A NACK of a few hundred bytes naming 5100 packets: the event lists the first 1024.
    let pairs: Vec<_> = (0..300u16)
        .map(|i| blindfold_relay::wire::rtcp::NackPair {
            pid: WireSeq(i * 17),
            blp: 0xffff,
        })
        .collect();
    let mut buf = vec![0u8; 1400];
    let n =
        blindfold_relay::wire::rtcp::write_nack_pairs(&mut buf, Ssrc(1), own.full, &pairs).unwrap();
    send(&mut p, &buf[..n]).unwrap();
    match p.poll_event() {
        Some(Event::Nack { lost, .. }) => assert_eq!(lost.len(), MAX_NACK_EVENT),
        other => panic!("{other:?}"),
    }
    // Transport-cc feedback claiming 65535 packets in 40 bytes is not walked.
    let mut tcc = vec![0x8f, 205, 0, 9];
    tcc.extend_from_slice(&1u32.to_be_bytes());
    tcc.extend_from_slice(&own.audio.0.to_be_bytes());
    tcc.extend_from_slice(&[0, 0, 0xff, 0xff, 0, 0, 0, 0]);
    for _ in 0..8 {
        tcc.extend_from_slice(&0x1fffu16.to_be_bytes()); // run of 8191 "not received"
    }
    tcc.extend_from_slice(&7u16.to_be_bytes());
    tcc.extend_from_slice(&[0, 0]);
    send(&mut p, &tcc).unwrap();
    assert_eq!(p.stats().feedback_ignored, 1);
    // Garbage that names a different bad value each time is counted, in a bounded list.
    for v in 0..200u16 {
        let mut d = vec![22, (v >> 8) as u8, v as u8];
        d.resize(40, 0);
        assert!(p.handle_datagram(now, relay.addr, &mut d).is_err());
    }
    assert!(p.stats().drops.len() <= MAX_DROP_REASONS);
    assert!(p.stats().other_drops > 0);
    assert_eq!(p.stats().total_dropped(), 200);
}

#[test]
fn wrong_relay_fingerprint_fails_without_keys() {
    let t0 = Instant::now();
    let cfg = config(0, addr(5000), Fingerprint([0xab; 32]));
    let mut relay = FakeRelay::new(addr(5000), &cfg, t0);
    let mut p = Participant::new(cfg, t0).unwrap();
    // Nothing to connect to again before the first connection.
    assert_eq!(p.reconnect(t0), Err(ParticipantError::NotConnected));
    let mut now = t0;
    let events = run(&mut p, &mut relay, &mut now, t0 + Duration::from_secs(2));
    assert_eq!(
        events,
        [
            Event::IceSelected,
            Event::Failed(FailReason::Dtls(DtlsError::FingerprintMismatch))
        ]
    );
    assert!(p.is_failed());
    assert!(!p.is_connected());
    // No keys on our side (no SRTCP, no media) and the relay never finished either;
    // a failed participant stays failed.
    assert_eq!(
        p.request_keyframe(now, Ssrc(1)),
        Err(ParticipantError::Failed)
    );
    assert_eq!(p.reconnect(now), Err(ParticipantError::Failed));
    assert!(p.poll_transmit().is_none());
    assert!(relay.keys.is_none());
}

// --- (3) end-to-end SRTP ----------------------------------------------------------------

struct Two {
    a: Participant,
    b: Participant,
    b_relay: SocketAddr,
    /// The relay side's DTLS keys for B, to read what B sends.
    b_keys: SrtpKeyMaterial,
    now: Instant,
}

fn two() -> Two {
    two_with(|_| {})
}

/// [`two`] with a change to B's configuration.
fn two_with(change_b: impl FnOnce(&mut ParticipantConfig)) -> Two {
    let t0 = Instant::now();
    let (a, _ra, n1) = connected(0, 5000, t0);
    let (mut b, rb, n2) = connected_with(1, 5001, t0, change_b);
    let a_ssrcs = a.ssrcs();
    b.install_remote_keys(
        SenderId(1),
        &remote_streams(a_ssrcs),
        PROFILE,
        &[(KeyIndex(0), &master(1))],
    )
    .unwrap();
    Two {
        a,
        b,
        b_relay: rb.addr,
        b_keys: rb.keys.clone().unwrap(),
        now: n1.max(n2),
    }
}

impl Two {
    fn a_sends(&mut self, payload: &[u8]) -> Vec<u8> {
        let ssrc = self.a.ssrcs().full;
        self.a
            .send_rtp(
                self.now,
                ssrc,
                Pt(96),
                true,
                RtpTime(9000),
                &[(ExtId(3), &[0x80][..])],
                payload,
            )
            .unwrap();
        let t = self.a.poll_transmit().unwrap();
        assert!(self.a.poll_transmit().is_none());
        t.bytes
    }

    /// A sends a packet on its full stream with frame marking `marking` (id 2): 0x80
    /// starts a frame, 0xa0 a keyframe.
    fn a_sends_marked(&mut self, marking: u8) -> Vec<u8> {
        let full = self.a.ssrcs().full;
        let marks = [(ExtId(2), &[marking][..])];
        self.a
            .send_rtp(self.now, full, Pt(96), false, RtpTime(0), &marks, b"v")
            .unwrap();
        self.a.poll_transmit().unwrap().bytes
    }

    /// A publishes key 1 (its event lists only key 1), B installs it, and A switches.
    fn a_moves_to_key_1(&mut self) {
        let k1 = MasterKey::new(PROFILE, &master(0x71)).unwrap();
        self.a.add_local_key(KeyIndex(1), &k1).unwrap();
        let a_streams = remote_streams(self.a.ssrcs());
        self.b
            .install_remote_keys(
                SenderId(1),
                &a_streams,
                PROFILE,
                &[(KeyIndex(1), &master(0x71))],
            )
            .unwrap();
        self.a.activate_local_key(KeyIndex(1)).unwrap();
    }

    fn b_receives(&mut self, bytes: &[u8]) -> Result<MediaPacket, DropReason> {
        let mut buf = bytes.to_vec();
        self.b.handle_datagram(self.now, self.b_relay, &mut buf)?;
        match self.b.poll_event() {
            Some(Event::Media(m)) => Ok(m),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn e2e_media_decrypts_at_other_participant_with_mki() {
    let mut t = two();
    let payload = b"a VP8 frame, encrypted end to end";
    let wire = t.a_sends(payload);
    // The payload is not in clear on the wire; the last byte is the MKI (GCM).
    assert!(!wire.windows(payload.len()).any(|w| w == payload));
    assert_eq!(*wire.last().unwrap(), 0);
    let m = t.b_receives(&wire).unwrap();
    assert_eq!(m.payload(), payload);
    assert_eq!(m.key, KeyIndex(0));
    assert_eq!(m.sender, SenderId(1));
    assert_eq!(m.ssrc, t.a.ssrcs().full);
    assert_eq!(m.pt, Pt(96));
    assert!(m.marker);
    assert_eq!(m.timestamp, RtpTime(9000));
    assert_eq!(m.header().unwrap().extension(ExtId(3)), Some(&[0x80][..]));
    assert_eq!(t.b.stats().media_in, 1);
}

#[test]
fn e2e_rekey_with_both_keys_installed() {
    let mut t = two();
    let before = t.a_sends(b"under key zero");

    // A publishes key 1; B installs the whole set {0, 1}; A switches.
    let k1 = MasterKey::new(PROFILE, &master(0x71)).unwrap();
    t.a.add_local_key(KeyIndex(1), &k1).unwrap();
    let a_streams = remote_streams(t.a.ssrcs());
    t.b.install_remote_keys(
        SenderId(1),
        &a_streams,
        PROFILE,
        &[(KeyIndex(0), &master(1)), (KeyIndex(1), &master(0x71))],
    )
    .unwrap();
    t.a.activate_local_key(KeyIndex(1)).unwrap();
    let after = t.a_sends(b"under key one");
    assert_eq!(*after.last().unwrap(), 1);

    let m1 = t.b_receives(&after).unwrap();
    assert_eq!((m1.key, m1.payload()), (KeyIndex(1), &b"under key one"[..]));
    // The packet sent before the switch, delivered late, still decrypts.
    let m0 = t.b_receives(&before).unwrap();
    assert_eq!(
        (m0.key, m0.payload()),
        (KeyIndex(0), &b"under key zero"[..])
    );
    assert_eq!(
        t.b.remote_keys(SenderId(1)).unwrap(),
        [KeyIndex(0), KeyIndex(1)]
    );
}

#[test]
fn e2e_rejects_corrupted_and_unknown_key_packets() {
    let mut t = two();
    let mut wire = t.a_sends(b"payload to corrupt");
    wire[20] ^= 0x01; // a payload byte (header 12 + extension block 8)
    assert_eq!(
        t.b_receives(&wire).unwrap_err(),
        DropReason::Srtp(SrtpError::AuthFailed)
    );

    // A moves to key 7, which B never got.
    let k7 = MasterKey::new(PROFILE, &master(0x07)).unwrap();
    t.a.add_local_key(KeyIndex(7), &k7).unwrap();
    t.a.activate_local_key(KeyIndex(7)).unwrap();
    let wire = t.a_sends(b"under an unpublished key");
    assert_eq!(
        t.b_receives(&wire).unwrap_err(),
        DropReason::Srtp(SrtpError::UnknownMki)
    );
    // And the MKI cannot be rewritten to a key B has: the tag fails.
    let mut forged = wire.clone();
    *forged.last_mut().unwrap() = 0;
    assert_eq!(
        t.b_receives(&forged).unwrap_err(),
        DropReason::Srtp(SrtpError::AuthFailed)
    );
    let s = t.b.stats();
    assert_eq!(s.dropped(DropReason::Srtp(SrtpError::AuthFailed)), 2);
    assert_eq!(s.dropped(DropReason::Srtp(SrtpError::UnknownMki)), 1);
    assert_eq!(s.media_in, 0);
}

#[test]
fn previous_key_retired_10_s_after_first_packet_under_new_one() {
    let mut t = two();
    let first = t.a_sends(b"k0");
    t.b_receives(&first).unwrap();
    let stale = t.a_sends(b"k0 late");
    t.a_moves_to_key_1();
    // The new key set lists only key 1: key 0 stays because packets still use it.
    assert_eq!(
        t.b.remote_keys(SenderId(1)).unwrap(),
        [KeyIndex(0), KeyIndex(1)]
    );
    let new = t.a_sends(b"k1");
    t.b_receives(&new).unwrap();
    let switched = t.now;

    // 9.9 s later the old key still works…
    t.now = switched + Duration::from_millis(9900);
    t.b.handle_timeout(t.now);
    while t.b.poll_transmit().is_some() {}
    while let Some(e) = t.b.poll_event() {
        assert!(!matches!(e, Event::KeyRetired { .. }), "{e:?}");
    }
    // …at 10 s it goes.
    t.now = switched + Duration::from_secs(10);
    t.b.handle_timeout(t.now);
    let events: Vec<Event> = std::iter::from_fn(|| t.b.poll_event()).collect();
    assert!(events.contains(&Event::KeyRetired {
        sender: SenderId(1),
        index: KeyIndex(0)
    }));
    assert_eq!(t.b.remote_keys(SenderId(1)).unwrap(), [KeyIndex(1)]);
    assert_eq!(
        t.b_receives(&stale).unwrap_err(),
        DropReason::Srtp(SrtpError::UnknownMki)
    );
}

/// Every member re-sends its key event, listing only its current key, when a newcomer
/// arrives: the previous key still has its grace period.
#[test]
fn a_resent_key_event_does_not_cut_the_previous_keys_grace_short() {
    let mut t = two();
    let first = t.a_sends(b"k0");
    t.b_receives(&first).unwrap();
    let stale = t.a_sends(b"k0 late");
    t.a_moves_to_key_1();
    let new = t.a_sends(b"k1");
    t.b_receives(&new).unwrap();
    t.now += Duration::from_secs(1);
    t.b.install_remote_keys(
        SenderId(1),
        &remote_streams(t.a.ssrcs()),
        PROFILE,
        &[(KeyIndex(1), &master(0x71))],
    )
    .unwrap();
    assert_eq!(
        t.b.remote_keys(SenderId(1)).unwrap(),
        [KeyIndex(0), KeyIndex(1)]
    );
    t.b_receives(&stale).unwrap();
    // Its timer still runs from the first packet under key 1.
    t.now += Duration::from_secs(9);
    t.b.handle_timeout(t.now);
    assert_eq!(t.b.remote_keys(SenderId(1)).unwrap(), [KeyIndex(1)]);
}

#[test]
fn a_late_packet_under_the_previous_key_does_not_retire_the_current_one() {
    let mut t = two();
    let first = t.a_sends(b"k0");
    t.b_receives(&first).unwrap();
    let late = t.a_sends(b"k0, delivered late");
    t.a_moves_to_key_1();
    let new = t.a_sends(b"k1");
    t.b_receives(&new).unwrap();
    // The relay delivers a packet of key 0 late (reordered, or resent from its cache),
    // then nothing of A's for 10 s.
    t.b_receives(&late).unwrap();
    t.now += Duration::from_secs(10);
    t.b.handle_timeout(t.now);
    let events: Vec<Event> = std::iter::from_fn(|| t.b.poll_event()).collect();
    assert!(events.contains(&Event::KeyRetired {
        sender: SenderId(1),
        index: KeyIndex(0)
    }));
    // Key 1, A's current key, is still there.
    assert_eq!(t.b.remote_keys(SenderId(1)).unwrap(), [KeyIndex(1)]);
    let next = t.a_sends(b"k1 again");
    t.b_receives(&next).unwrap();
}

#[test]
fn key_events_are_checked() {
    let mut t = two();
    let a = remote_streams(t.a.ssrcs());
    let own = remote_streams(t.b.ssrcs());
    let k = master(3);
    // Another sender claiming A's SSRCs, or B's own.
    assert_eq!(
        t.b.install_remote_keys(SenderId(2), &a, PROFILE, &[(KeyIndex(0), &k)]),
        Err(ParticipantError::SsrcCollision(a[0].ssrc))
    );
    assert_eq!(
        t.b.install_remote_keys(SenderId(2), &own, PROFILE, &[(KeyIndex(0), &k)]),
        Err(ParticipantError::SsrcCollision(own[0].ssrc))
    );
    // A changing its declared streams.
    assert_eq!(
        t.b.install_remote_keys(SenderId(1), &a[..2], PROFILE, &[(KeyIndex(0), &k)]),
        Err(ParticipantError::StreamsChanged)
    );
    // Three keys, none, a wrong length, a repeated index.
    assert_eq!(
        t.b.install_remote_keys(
            SenderId(1),
            &a,
            PROFILE,
            &[(KeyIndex(0), &k), (KeyIndex(1), &k), (KeyIndex(2), &k)]
        ),
        Err(ParticipantError::TooManyKeys)
    );
    assert_eq!(
        t.b.install_remote_keys(SenderId(1), &a, PROFILE, &[]),
        Err(ParticipantError::NoKeys)
    );
    assert_eq!(
        t.b.install_remote_keys(SenderId(1), &a, PROFILE, &[(KeyIndex(0), &k[..5])]),
        Err(ParticipantError::Srtp(SrtpError::BadMasterLength))
    );
    assert_eq!(
        t.b.install_remote_keys(
            SenderId(1),
            &a,
            PROFILE,
            &[(KeyIndex(4), &k), (KeyIndex(4), &k)]
        ),
        Err(ParticipantError::DuplicateKeyIndex(KeyIndex(4)))
    );
    // Nothing changed: A's media still decrypts under key 0.
    let wire = t.a_sends(b"still fine");
    assert_eq!(t.b_receives(&wire).unwrap().payload(), b"still fine");
    // A mismatched own key profile is refused.
    let cm = MasterKey::new(SrtpProfile::AesCm128HmacSha1_80, &[1; 30]).unwrap();
    assert_eq!(
        t.a.add_local_key(KeyIndex(1), &cm),
        Err(ParticipantError::ProfileMismatch)
    );
}

#[test]
fn aes_cm_profile_end_to_end() {
    let mut t = two();
    let cm = SrtpProfile::AesCm128HmacSha1_80;
    let key: Vec<u8> = (0..cm.master_len() as u8).collect();
    // A sender on another profile (a fresh participant config would do the same).
    let mut tx = SrtpContext::new(cm, &key, Some(KeyIndex(3))).unwrap();
    let c_streams = remote_streams(ssrcs(7000));
    t.b.install_remote_keys(SenderId(3), &c_streams, cm, &[(KeyIndex(3), &key)])
        .unwrap();
    let mut buf = vec![0u8; 100];
    let rtp = [
        0x80, 111, 0, 1, 0, 0, 0, 5, 0, 0, 0x1b, 0x58, b'o', b'p', b'u', b's',
    ];
    buf[..rtp.len()].copy_from_slice(&rtp);
    let n = tx.protect_rtp(&mut buf, rtp.len()).unwrap();
    assert_eq!(buf[n - 11], 3, "AES-CM: MKI before the 10-byte tag");
    let m = t.b_receives(&buf[..n]).unwrap();
    assert_eq!(
        (m.sender, m.key, m.payload()),
        (SenderId(3), KeyIndex(3), &b"opus"[..])
    );
}

/// Sender 3's GCM key and an SRTP context protecting with it (its audio is SSRC 7000).
fn sender_of_7000() -> (SrtpProfile, Vec<u8>, SrtpContext) {
    let gcm = SrtpProfile::AeadAes128Gcm;
    let key: Vec<u8> = (0..gcm.master_len() as u8).map(|b| b ^ 0x5c).collect();
    let tx = SrtpContext::new(gcm, &key, Some(KeyIndex(0))).unwrap();
    (gcm, key, tx)
}

/// B gets sender 3's key (from [`sender_of_7000`]) from the room.
fn b_installs_sender_of_7000(t: &mut Two, profile: SrtpProfile, key: &[u8]) {
    t.b.install_remote_keys(
        SenderId(3),
        &remote_streams(ssrcs(7000)),
        profile,
        &[(KeyIndex(0), key)],
    )
    .unwrap();
}

/// An "opus" audio packet of SSRC 7000, sequence number `seq`, protected by `tx`.
fn opus_packet(tx: &mut SrtpContext, seq: u16) -> Vec<u8> {
    let mut buf = vec![0u8; 100];
    let [s0, s1] = seq.to_be_bytes();
    let rtp = [
        0x80, 111, s0, s1, 0, 0, 0, 5, 0, 0, 0x1b, 0x58, b'o', b'p', b'u', b's',
    ];
    buf[..rtp.len()].copy_from_slice(&rtp);
    let n = tx.protect_rtp(&mut buf, rtp.len()).unwrap();
    buf.truncate(n);
    buf
}

#[test]
fn a_late_joiner_decrypts_a_sender_whose_sequence_wrapped() {
    let mut t = two();
    let (gcm, key, mut tx) = sender_of_7000();
    // The sender has been talking for a while: its sequence numbers wrapped (ROC 1).
    for seq in 65_530..=u16::MAX {
        opus_packet(&mut tx, seq);
    }
    // B joins now and gets the key from the room.
    b_installs_sender_of_7000(&mut t, gcm, &key);
    // Garbage on the stream first (it fails under every ROC tried): for a while the
    // sender's new streams are tried under ROC 0 alone, so a flood of it costs one tag
    // check a packet; the genuine stream is found once the pause is over.
    let mut garbage = opus_packet(&mut tx, 0);
    garbage[20] ^= 0xff;
    assert!(t.b_receives(&garbage).is_err());
    assert!(t.b_receives(&opus_packet(&mut tx, 1)).is_err());
    t.now += crate::media::ROC_SEARCH_BACKOFF;
    for seq in 2..7 {
        let m = t.b_receives(&opus_packet(&mut tx, seq)).unwrap();
        assert_eq!(
            (m.sender, m.payload()),
            (SenderId(3), &b"opus"[..]),
            "seq {seq}"
        );
    }
}

/// A receiver switched away from a sender's stream (its full layer, while others kept
/// getting it) and back after more than 32 768 of its packets: the first packets after
/// the gap fail (the index is estimated from the last one it got), then the stream is
/// found under its later rollover counter at once (no pause: no search had failed),
/// and decrypts from then on.
#[test]
fn a_stream_received_again_after_a_long_gap_decrypts_within_a_few_packets() {
    let mut t = two();
    let (gcm, key, mut tx) = sender_of_7000();
    b_installs_sender_of_7000(&mut t, gcm, &key);
    for seq in 0..100 {
        t.b_receives(&opus_packet(&mut tx, seq)).unwrap();
    }
    // 70 000 packets B never gets (past a wrap, so the estimate fails its tag); then
    // the stream reaches B again.
    let mut seq = 100u16;
    for _ in 0..70_000 {
        opus_packet(&mut tx, seq);
        seq = seq.wrapping_add(1);
    }
    let results: Vec<bool> = (0..10)
        .map(|_| {
            let p = opus_packet(&mut tx, seq);
            seq = seq.wrapping_add(1);
            t.b_receives(&p).is_ok()
        })
        .collect();
    let first = results.iter().position(|&ok| ok).expect("found again");
    assert!(first <= 4, "{results:?}");
    assert!(results[first..].iter().all(|&ok| ok), "{results:?}");
}

// --- RTCP duties ------------------------------------------------------------------------

#[test]
fn gaps_are_nacked_and_new_video_streams_get_a_pli() {
    let mut t = two();
    let b_relay = t.b_relay;
    // Turn automatic feedback on for B.
    t.b.config.auto_feedback = true;
    let first = t.a_sends(b"1");
    let _lost1 = t.a_sends(b"2");
    let _lost2 = t.a_sends(b"3");
    let fourth = t.a_sends(b"4");
    let rtcp_out = t.b.stats().rtcp_out;
    t.b_receives(&first).unwrap();
    let pli = t.b.poll_transmit().expect("PLI for a new video stream");
    assert_eq!(pli.dest, b_relay);
    t.b_receives(&fourth).unwrap();
    let nack = t.b.poll_transmit().expect("NACK for the gap");
    assert!(t.b.poll_transmit().is_none());
    assert_eq!(t.b.stats().rtcp_out, rtcp_out + 2);
    // Both are SRTCP (PT in the RTCP range) of the expected sizes: PLI 12 bytes, NACK
    // with one FCI entry 16 bytes, plus index word, GCM tag.
    let mut relay_in = relay_srtcp_in(&t.b_keys);
    let seq = |d: &[u8]| {
        blindfold_relay::wire::rtp::RtpHeader::parse(d)
            .unwrap()
            .seq()
            .0
    };
    let full = t.a.ssrcs().full;
    let mut pli = pli.bytes;
    let n = relay_in.unprotect_rtcp(&mut pli).unwrap();
    match RtcpPacket::from_raw(blindfold_relay::wire::rtcp::RawPacket::parse(&pli[..n]).unwrap())
        .unwrap()
    {
        RtcpPacket::Pli(p) => assert_eq!(p.media_ssrc(), full),
        other => panic!("{other:?}"),
    }
    let mut nack = nack.bytes;
    let n = relay_in.unprotect_rtcp(&mut nack).unwrap();
    match RtcpPacket::from_raw(blindfold_relay::wire::rtcp::RawPacket::parse(&nack[..n]).unwrap())
        .unwrap()
    {
        RtcpPacket::Nack(k) => {
            assert_eq!(k.media_ssrc(), full);
            assert_eq!(k.sender_ssrc(), t.b.ssrcs().audio);
            let lost: Vec<u16> = k.lost().map(|s| s.0).collect();
            assert_eq!(lost, [seq(&_lost1), seq(&_lost2)]);
        }
        other => panic!("{other:?}"),
    }
}

/// The NACKs (sequence numbers) and PLIs (media SSRCs) in what B sent the relay.
fn b_feedback(t: &mut Two, relay_in: &mut SrtpContext) -> (Vec<u16>, Vec<Ssrc>) {
    let (mut nacked, mut plis) = (Vec::new(), Vec::new());
    while let Some(out) = t.b.poll_transmit() {
        let mut bytes = out.bytes;
        let Ok(n) = relay_in.unprotect_rtcp(&mut bytes) else {
            continue; // not SRTCP
        };
        for packet in RtcpCompound::parse(&bytes[..n]).unwrap() {
            match packet {
                Ok(RtcpPacket::Nack(k)) => nacked.extend(k.lost().map(|s| s.0)),
                Ok(RtcpPacket::Pli(p)) => plis.push(p.media_ssrc()),
                _ => {}
            }
        }
    }
    (nacked, plis)
}

/// Runs B's timers in 10 ms steps from `t.now` to `until` while A's full layer flows
/// (a packet every 30 ms, when `flowing`); returns B's NACKs and PLIs, each with when
/// it went.
fn repair_feedback(
    t: &mut Two,
    relay_in: &mut SrtpContext,
    until: Instant,
    flowing: bool,
) -> Vec<(Instant, Vec<u16>, Vec<Ssrc>)> {
    let mut out = Vec::new();
    let mut step = 0;
    while t.now < until {
        t.now += Duration::from_millis(10);
        step += 1;
        if flowing && step % 3 == 0 {
            let p = t.a_sends(b"more");
            t.b_receives(&p).unwrap();
        }
        t.b.handle_timeout(t.now);
        let (nacked, plis) = b_feedback(t, relay_in);
        if !nacked.is_empty() || !plis.is_empty() {
            out.push((t.now, nacked, plis));
        }
    }
    out
}

/// A video packet NACKed in vain is NACKed once more after [`NACK_AGAIN_AFTER`]; still
/// missing [`NACK_GIVE_UP_AFTER`] after that, a keyframe is asked for and nothing more
/// waits. One that comes meanwhile (resent) is waited for no more.
#[test]
fn a_video_packet_nacked_in_vain_is_nacked_again_then_a_keyframe_is_asked_for() {
    let mut t = two();
    t.b.config.auto_feedback = true;
    let mut relay_in = relay_srtcp_in(&t.b_keys);
    let full = t.a.ssrcs().full;
    let seq = |d: &[u8]| {
        blindfold_relay::wire::rtp::RtpHeader::parse(d)
            .unwrap()
            .seq()
            .0
    };
    let first = t.a_sends(b"1");
    let lost = t.a_sends(b"2");
    let resent = t.a_sends(b"3");
    let fourth = t.a_sends(b"4");
    let t0 = t.now;
    t.b_receives(&first).unwrap();
    t.b_receives(&fourth).unwrap();
    assert_eq!(
        b_feedback(&mut t, &mut relay_in),
        (vec![seq(&lost), seq(&resent)], vec![full]),
        "the new stream's PLI, the gap's NACK"
    );
    t.b_receives(&resent).unwrap();
    // The resent packet came at once: the minimums pace the rest.
    let until = t0 + 10 * NACK_GIVE_UP_AFTER;
    let sent = repair_feedback(&mut t, &mut relay_in, until, true);
    let (again, give_up) = (
        t0 + NACK_AGAIN_AFTER,
        t0 + NACK_AGAIN_AFTER + NACK_GIVE_UP_AFTER,
    );
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert_eq!(
        (sent[0].1.clone(), sent[0].2.clone()),
        (vec![seq(&lost)], vec![]),
        "only the one still missing, again"
    );
    assert!(sent[0].0 >= again && sent[0].0 < again + Duration::from_millis(10));
    assert_eq!(
        (sent[1].1.clone(), sent[1].2.clone()),
        (vec![], vec![full]),
        "a keyframe instead, and nothing more waits"
    );
    // Asked for with the stream's next packet after the give-up (every 30 ms).
    assert!(sent[1].0 >= give_up && sent[1].0 < give_up + Duration::from_millis(40));
}

/// A sends three packets of its full layer and B gets the first and the last, with
/// automatic feedback on from the first (whatever came before it, as a gap of its
/// own, asks for nothing): B NACKs the one between, and nothing else. Returns when.
fn b_misses_one(t: &mut Two, relay_in: &mut SrtpContext) -> Instant {
    let first = t.a_sends(b"1");
    let _lost = t.a_sends(b"2");
    let last = t.a_sends(b"3");
    let t0 = t.now;
    t.b_receives(&first).unwrap();
    t.b.config.auto_feedback = true;
    t.b_receives(&last).unwrap();
    let (nacked, plis) = b_feedback(t, relay_in);
    assert_eq!((nacked.len(), plis), (1, vec![]), "the gap's NACK");
    t0
}

/// Automatic feedback turned off stops the repair under way too.
#[test]
fn turning_automatic_feedback_off_stops_the_repair() {
    let mut t = two();
    let mut relay_in = relay_srtcp_in(&t.b_keys);
    let t0 = b_misses_one(&mut t, &mut relay_in);
    t.b.set_auto_feedback(false);
    let sent = repair_feedback(&mut t, &mut relay_in, t0 + 10 * NACK_GIVE_UP_AFTER, true);
    assert!(sent.is_empty(), "{sent:?}");
}

/// A stream that stopped (the relay switched us down, or paused the layer) is not
/// repaired while it is stopped: the relay would drop the NACK and the PLI. Resumed at
/// a keyframe, as the relay resumes a layer, it needs nothing; resumed without one,
/// the keyframe its loss wants is asked for with its first packet.
#[test]
fn a_stream_that_stopped_is_not_repaired() {
    for at_a_keyframe in [true, false] {
        let mut t = two();
        t.b.config.auto_feedback = true;
        t.b.config.frame_marking = Some(ExtId(2));
        let mut relay_in = relay_srtcp_in(&t.b_keys);
        let full = t.a.ssrcs().full;
        let first = t.a_sends_marked(0xa0);
        let _lost = t.a_sends_marked(0x80);
        let last = t.a_sends_marked(0x80);
        let t0 = t.now;
        t.b_receives(&first).unwrap();
        t.b_receives(&last).unwrap();
        assert_eq!(
            b_feedback(&mut t, &mut relay_in).0.len(),
            1,
            "the gap's NACK"
        );
        let until = t0 + 10 * NACK_GIVE_UP_AFTER;
        let sent = repair_feedback(&mut t, &mut relay_in, until, false);
        assert!(sent.is_empty(), "{sent:?}");
        let resumed = t.a_sends_marked(if at_a_keyframe { 0xa0 } else { 0x80 });
        t.b_receives(&resumed).unwrap();
        let until = t0 + 20 * NACK_GIVE_UP_AFTER;
        let sent = repair_feedback(&mut t, &mut relay_in, until, true);
        let plis: Vec<Ssrc> = sent.iter().flat_map(|s| s.2.clone()).collect();
        assert!(sent.iter().all(|s| s.1.is_empty()), "{sent:?}");
        match at_a_keyframe {
            true => assert!(plis.is_empty(), "{sent:?}"),
            false => assert_eq!(plis, [full], "{sent:?}"),
        }
    }
}

/// A keyframe's first packet ends the wait for what came before it: those frames are
/// not needed any more, whether the gap ended before the keyframe or at it.
#[test]
fn a_keyframe_ends_the_wait_for_packets_nacked_before_it() {
    for at_the_keyframe in [false, true] {
        let mut t = two();
        t.b.config.auto_feedback = true;
        t.b.config.frame_marking = Some(ExtId(2));
        let mut relay_in = relay_srtcp_in(&t.b_keys);
        let first = t.a_sends_marked(0xa0);
        let _lost = t.a_sends_marked(0x80);
        let delta = (!at_the_keyframe).then(|| t.a_sends_marked(0x80));
        let keyframe = t.a_sends_marked(0xa0);
        let t0 = t.now;
        t.b_receives(&first).unwrap();
        if let Some(delta) = delta {
            t.b_receives(&delta).unwrap();
        }
        t.b_receives(&keyframe).unwrap();
        assert_eq!(
            b_feedback(&mut t, &mut relay_in).0.len(),
            1,
            "the gap's NACK"
        );
        let sent = repair_feedback(&mut t, &mut relay_in, t0 + 10 * NACK_GIVE_UP_AFTER, true);
        assert!(sent.is_empty(), "{at_the_keyframe}: {sent:?}");
    }
}

#[test]
fn a_long_video_gap_asks_for_a_keyframe_unless_it_ends_at_one() {
    let mut t = two();
    t.b.config.auto_feedback = true;
    t.b.config.frame_marking = Some(ExtId(2));
    let first = t.a_sends_marked(0xa0);
    // More than a NACK covers, as when the relay stops sending us the layer.
    for _ in 0..=MAX_NACK_GAP {
        t.a_sends_marked(0x80);
    }
    let keyframe = t.a_sends_marked(0xa0);
    for _ in 0..=MAX_NACK_GAP {
        t.a_sends_marked(0x80);
    }
    let delta = t.a_sends_marked(0x80);
    // A stream that starts at a keyframe's first packet has its keyframe.
    t.b_receives(&first).unwrap();
    assert!(t.b.poll_transmit().is_none(), "no PLI for a keyframe start");
    let rtcp_out = t.b.stats().rtcp_out;
    // Back at a keyframe's first packet: the keyframe is here, nothing to ask for.
    t.b_receives(&keyframe).unwrap();
    assert!(t.b.poll_transmit().is_none());
    assert_eq!(t.b.stats().rtcp_out, rtcp_out);
    // Back in the middle of a picture: asks for a keyframe.
    t.b_receives(&delta).unwrap();
    assert!(t.b.poll_transmit().is_some());
    assert_eq!(t.b.stats().rtcp_out, rtcp_out + 1);
}

/// A video stream that starts in the middle of a picture (a thumbnail joined mid
/// GOP) is asked for a keyframe at once.
#[test]
fn a_new_video_stream_that_starts_mid_picture_asks_for_a_keyframe() {
    let mut t = two();
    t.b.config.auto_feedback = true;
    t.b.config.frame_marking = Some(ExtId(2));
    let delta = t.a_sends_marked(0x80);
    t.b_receives(&delta).unwrap();
    t.b.poll_transmit()
        .expect("PLI for a stream that starts mid picture");
}

#[test]
fn a_resumed_layers_gap_is_not_reported_lost() {
    let mut t = two();
    t.b.config.frame_marking = Some(ExtId(2));
    let full = t.a.ssrcs().full;
    // A keyframe; 100 packets the relay never sent B; a keyframe where it resumes; one
    // packet lost on the way; one more.
    let first = t.a_sends_marked(0xa0);
    for _ in 0..100 {
        t.a_sends_marked(0x80);
    }
    let resumed = t.a_sends_marked(0xa0);
    let _lost = t.a_sends_marked(0x80);
    let last = t.a_sends_marked(0x80);
    // The packet it resumes at says what was skipped; the lost one is not skipped.
    let skipped: Vec<u64> = [&first, &resumed, &last]
        .map(|p| t.b_receives(p).unwrap().skipped)
        .into();
    assert_eq!(skipped, [0, 100, 0]);
    let mut relay_in = relay_srtcp_in(&t.b_keys);
    let block = loop {
        let now = t.b.poll_timeout().unwrap();
        assert!(now < t.now + Duration::from_secs(5), "no receiver report");
        t.b.handle_timeout(now);
        let Some(mut tx) = t.b.poll_transmit() else {
            continue;
        };
        let n = relay_in.unprotect_rtcp(&mut tx.bytes).unwrap();
        let rr = RtcpCompound::parse(&tx.bytes[..n])
            .unwrap()
            .into_iter()
            .find_map(|p| match p {
                Ok(RtcpPacket::ReceiverReport(rr)) => rr.reports().find(|b| b.ssrc == full),
                _ => None,
            });
        if let Some(b) = rr {
            break b;
        }
    };
    // Four expected (the first keyframe, the resumed one and the two after it), one lost.
    assert_eq!((block.cumulative_lost, block.fraction_lost), (1, 64));
}

#[test]
fn a_gap_across_a_reconnect_is_loss_even_when_it_ends_at_a_keyframe() {
    let mut t = two();
    t.b.config.frame_marking = Some(ExtId(2));
    let first = t.a_sends_marked(0xa0);
    assert_eq!(t.b_receives(&first).unwrap().skipped, 0);
    // The relay lost B's session (it restarted): B connects again, to the new relay,
    // while A's packets go nowhere.
    t.b.reconnect(t.now).unwrap();
    let mut relay = FakeRelay::new(t.b_relay, &t.b.config, t.now);
    let mut now = t.now;
    let events = run(
        &mut t.b,
        &mut relay,
        &mut now,
        t.now + Duration::from_secs(2),
    );
    assert!(
        events.contains(&Event::Reconnecting) && t.b.is_connected(),
        "{events:?}"
    );
    t.now = now;
    for _ in 0..100 {
        t.a_sends_marked(0x80);
    }
    // The new relay starts B's full layer at a keyframe: what came before it was lost.
    let again = t.a_sends_marked(0xa0);
    assert_eq!(t.b_receives(&again).unwrap().skipped, 0);
    // Later, a layer the relay resumes is told apart again.
    for _ in 0..100 {
        t.a_sends_marked(0x80);
    }
    let resumed = t.a_sends_marked(0xa0);
    assert_eq!(t.b_receives(&resumed).unwrap().skipped, 100);
}

/// Advances `p` timer by timer until it sends an SRTCP packet whose (clear) packet
/// type is `pt`; returns its length.
fn next_report(p: &mut Participant, now: &mut Instant, pt: u8) -> usize {
    let end = *now + Duration::from_secs(3);
    while *now < end {
        *now = p.poll_timeout().unwrap();
        p.handle_timeout(*now);
        while let Some(tx) = p.poll_transmit() {
            if tx.bytes[0] >= 128 && tx.bytes[1] == pt {
                return tx.bytes.len();
            }
        }
    }
    panic!("no report with PT {pt}");
}

#[test]
fn periodic_reports_carry_sr_and_report_blocks() {
    let mut t = two();
    let wire = t.a_sends(b"x");
    t.b_receives(&wire).unwrap();
    // B only received: an RR with one report block, 8 + 24 bytes, plus SRTCP's index
    // word and GCM tag.
    let mut now = t.now;
    assert_eq!(next_report(&mut t.b, &mut now, 201), 32 + 20);
    // A sent on its full stream: an SR with no blocks, 28 bytes.
    let mut now = t.now;
    assert_eq!(next_report(&mut t.a, &mut now, 200), 28 + 20);
}

/// 13 more senders join A, and B gets a packet on each of the 14 senders' three
/// streams; returns those 42 SSRCs.
fn receive_from_14_senders(t: &mut Two) -> std::collections::BTreeSet<Ssrc> {
    let mut senders = vec![];
    for n in 2..15 {
        let (p, _relay, _) = connected(n, 5000 + n as u16, t.now);
        t.b.install_remote_keys(
            SenderId(n as u64),
            &remote_streams(p.ssrcs()),
            PROFILE,
            &[(KeyIndex(0), &master(n as u8 + 1))],
        )
        .unwrap();
        senders.push(p);
    }
    let mut all = std::collections::BTreeSet::new();
    let mut wires = vec![];
    for p in senders.iter_mut().chain([&mut t.a]) {
        let o = p.ssrcs();
        for (ssrc, pt) in [(o.audio, 111), (o.thumbnail, 96), (o.full, 96)] {
            p.send_rtp(t.now, ssrc, Pt(pt), false, RtpTime(0), &[], b"m")
                .unwrap();
            wires.push(p.poll_transmit().unwrap().bytes);
            all.insert(ssrc);
        }
    }
    for wire in wires {
        t.b_receives(&wire).unwrap();
    }
    all
}

/// Runs B's timers for `ms` milliseconds; hands each RTCP packet it sends the relay to
/// `each`.
fn b_sends_rtcp_for(t: &mut Two, ms: u64, mut each: impl FnMut(RtcpPacket<'_>)) {
    let mut relay_in = relay_srtcp_in(&t.b_keys);
    let end = t.now + Duration::from_millis(ms);
    while let Some(now) = t.b.poll_timeout().filter(|&n| n < end) {
        t.b.handle_timeout(now);
        while let Some(mut tx) = t.b.poll_transmit() {
            let Ok(n) = relay_in.unprotect_rtcp(&mut tx.bytes) else {
                continue;
            };
            for p in RtcpCompound::parse(&tx.bytes[..n])
                .unwrap()
                .into_iter()
                .flatten()
            {
                each(p);
            }
        }
    }
}

/// B receives 42 streams from 14 senders: an SR or RR holds 31 report blocks, so the
/// rest go in a compound of their own, and every stream is reported each second.
#[test]
fn a_receiver_of_more_than_31_streams_reports_every_one() {
    let mut t = two();
    let all = receive_from_14_senders(&mut t);
    assert_eq!(all.len(), 42);
    let mut reported = std::collections::BTreeSet::new();
    b_sends_rtcp_for(&mut t, 1600, |p| match p {
        RtcpPacket::ReceiverReport(rr) => reported.extend(rr.reports().map(|b| b.ssrc)),
        RtcpPacket::SenderReport(sr) => reported.extend(sr.reports().map(|b| b.ssrc)),
        _ => {}
    });
    assert_eq!(reported, all, "a block for every stream");
}

/// In a large conference the REMB, which names every remote video stream, does not
/// fit beside our SRs and 31 report blocks: it goes in a compound of its own, each
/// report, not lost.
#[test]
fn a_remb_naming_many_video_streams_goes_on_its_own_when_the_reports_fill_the_packet() {
    let mut t = two_with(|c| c.remb_bps = Some(800_000));
    // 14 senders whose 42 streams B receives (31 blocks in the periodic compound)...
    receive_from_14_senders(&mut t);
    // ... and 40 more that have sent nothing yet: 108 video streams to name.
    for n in 0..40u32 {
        t.b.install_remote_keys(
            SenderId(100 + u64::from(n)),
            &remote_streams(ssrcs(100_000 + 3 * n)),
            PROFILE,
            &[(KeyIndex(0), &master(7))],
        )
        .unwrap();
    }
    // B sends on its three streams: three SRs in its compound.
    let own = t.b.ssrcs();
    for (ssrc, pt) in [(own.audio, 111), (own.thumbnail, 96), (own.full, 96)] {
        t.b.send_rtp(t.now, ssrc, Pt(pt), false, RtpTime(0), &[], b"m")
            .unwrap();
    }
    while t.b.poll_transmit().is_some() {}
    let before = t.b.stats().remb_out;
    let mut rembs = vec![];
    b_sends_rtcp_for(&mut t, 2500, |p| {
        if let RtcpPacket::Remb(r) = p {
            rembs.push((r.bitrate_bps(), r.ssrcs().count()));
        }
    });
    assert!(rembs.len() >= 2, "{rembs:?}");
    assert!(rembs.iter().all(|&r| r == (800_000, 108)), "{rembs:?}");
    assert_eq!(t.b.stats().remb_out - before, rembs.len() as u64);
}

/// The relay forgets the SRTCP state of a member's SSRCs when it leaves; a later member
/// with one of them continues above the indexes the relay used for it (never the same
/// index twice under one key): B, which forgets them when it drops the member, takes
/// that member's sender reports.
#[test]
fn a_departed_members_ssrcs_carry_on_in_the_relays_srtcp() {
    let mut t = two();
    let audio = t.a.ssrcs().audio;
    let sr = |out: &mut SrtpContext| {
        let mut buf = vec![0u8; 256];
        let mut w = CompoundWriter::new(&mut buf);
        let info = blindfold_relay::wire::rtcp::SenderInfo {
            ssrc: audio,
            ntp: 1 << 32,
            rtp_time: RtpTime(0),
            packet_count: 1,
            octet_count: 100,
        };
        w.sr(&info, &[]).unwrap();
        let len = w.finish();
        let n = out.protect_rtcp(&mut buf, len).unwrap();
        buf.truncate(n);
        buf
    };
    let got_sr = |t: &mut Two, mut d: Vec<u8>| {
        let relay = t.b_relay;
        let now = t.now;
        t.b.handle_datagram(now, relay, &mut d).map(|_| {
            std::iter::from_fn(|| t.b.poll_event())
                .any(|e| matches!(e, Event::SenderReport(sr) if sr.ssrc == audio))
        })
    };
    let mut out = relay_srtcp_out(&t.b_keys);
    for _ in 0..5 {
        let d = sr(&mut out);
        assert_eq!(got_sr(&mut t, d), Ok(true));
    }
    out.remove_stream(audio);
    // A leaves; a new member declares the same SSRCs.
    assert!(t.b.remove_remote_sender(SenderId(1)));
    t.b.install_remote_keys(
        SenderId(2),
        &remote_streams(t.a.ssrcs()),
        PROFILE,
        &[(KeyIndex(0), &master(1))],
    )
    .unwrap();
    let d = sr(&mut out);
    assert_eq!(got_sr(&mut t, d), Ok(true));
}

/// What B sent the relay that carried a REMB.
#[derive(Debug)]
struct SentRemb {
    at: Instant,
    bps: u64,
    ssrcs: Vec<Ssrc>,
    /// The compound's packet types, in order (201 RR, 200 SR, 206 PSFB).
    kinds: Vec<u8>,
    /// The report blocks of the compound's RR.
    blocks: usize,
}

/// Sends A's full-resolution stream to B through a modelled link — `bytes`-byte payloads
/// carrying abs-send-time (id 2) every `spacing`, serialized at the link's rate (which
/// `rate_at` gives for each send time) behind a FIFO, then 5 ms of propagation — from
/// `t.now` for `dur`, running B's timers. Returns B's REMBs.
fn a_streams_to_b(
    t: &mut Two,
    dur: Duration,
    spacing: Duration,
    bytes: usize,
    rate_at: impl Fn(Duration) -> f64,
) -> Vec<SentRemb> {
    let start = t.now;
    let end = start + dur;
    let mut relay_in = relay_srtcp_in(&t.b_keys);
    let full = t.a.ssrcs().full;
    let payload = vec![0x5au8; bytes];
    let mut link: std::collections::VecDeque<(Instant, Vec<u8>)> = Default::default();
    let mut link_free = start;
    let mut next_send = start;
    let mut seq_ts = 0u32;
    let mut out = Vec::new();
    let mut last = start;
    loop {
        let arrival = link.front().map(|(at, _)| *at);
        let timer = t.b.poll_timeout();
        let now = [Some(next_send), arrival, timer]
            .into_iter()
            .flatten()
            .min()
            .unwrap()
            .max(last);
        last = now;
        if now >= end {
            break;
        }
        if now == next_send {
            let ast = AbsSendTime::from_duration(now - start);
            seq_ts = seq_ts.wrapping_add(3000);
            t.a.send_rtp(
                now,
                full,
                Pt(96),
                true,
                RtpTime(seq_ts),
                &[(ExtId(2), &ast.to_bytes()[..])],
                &payload,
            )
            .unwrap();
            while let Some(d) = t.a.poll_transmit() {
                let bps = rate_at(now - start);
                let serialize = Duration::from_secs_f64(d.bytes.len() as f64 * 8.0 / bps);
                link_free = link_free.max(now) + serialize;
                link.push_back((link_free + Duration::from_millis(5), d.bytes));
            }
            next_send += spacing;
        } else if Some(now) == arrival {
            let (_, mut d) = link.pop_front().unwrap();
            t.b.handle_datagram(now, t.b_relay, &mut d).unwrap();
        } else {
            t.b.handle_timeout(now);
        }
        while t.b.poll_event().is_some() {}
        while let Some(tx) = t.b.poll_transmit() {
            let mut d = tx.bytes;
            if d[0] < 128 {
                continue; // a consent check
            }
            let n = relay_in.unprotect_rtcp(&mut d).unwrap();
            let compound = RtcpCompound::parse(&d[..n]).unwrap();
            let mut kinds = Vec::new();
            let mut blocks = 0;
            let mut remb = None;
            for p in compound.packets() {
                match p.unwrap() {
                    RtcpPacket::ReceiverReport(rr) => {
                        kinds.push(201);
                        blocks = rr.reports().count();
                    }
                    RtcpPacket::SenderReport(_) => kinds.push(200),
                    RtcpPacket::Remb(r) => {
                        kinds.push(206);
                        remb = Some((r.bitrate_bps(), r.ssrcs().collect::<Vec<_>>()));
                    }
                    _ => kinds.push(0),
                }
            }
            if let Some((bps, ssrcs)) = remb {
                out.push(SentRemb {
                    at: now,
                    bps,
                    ssrcs,
                    kinds,
                    blocks,
                });
            }
        }
    }
    t.now = end;
    out
}

#[test]
fn the_estimate_goes_in_rembs_once_a_second_and_at_once_when_it_drops() {
    // B estimates from abs-send-time (id 2) on what it receives; automatic feedback is
    // off (as in the relay's simulations): REMB does not depend on it.
    let mut t = two_with(|c| c.bwe = Some(ExtId(2)));
    assert!(!t.b.config.auto_feedback);
    let a = t.a.ssrcs();
    let start = t.now;
    // 800 kbit/s of payload (1000 bytes every 10 ms) through a 2 Mbit/s link for 6 s,
    // then the link falls to 300 kbit/s.
    let fall = Duration::from_secs(6);
    let rembs = a_streams_to_b(
        &mut t,
        Duration::from_secs(8),
        Duration::from_millis(10),
        1000,
        |at| if at < fall { 2_000_000.0 } else { 300_000.0 },
    );
    let before: Vec<&SentRemb> = rembs.iter().filter(|r| r.at < start + fall).collect();
    // Nothing before the rate is measured (1 s); the first at once, on its own; then
    // one in each periodic report, a second apart.
    let first = before[0].at - start;
    assert!(first >= Duration::from_secs(1) && first < Duration::from_millis(1300));
    assert_eq!(before[0].blocks, 0, "{rembs:?}");
    assert!((4..=6).contains(&before.len()), "{rembs:?}");
    assert!(before[1..].iter().all(|r| r.blocks == 1), "{rembs:?}");
    for w in before[1..].windows(2) {
        assert_eq!(w[1].at - w[0].at, Duration::from_secs(1), "{rembs:?}");
    }
    for r in &rembs {
        // RFC-compliant compounds: the RR first, then the REMB, naming A's video.
        assert_eq!(r.kinds, [201, 206], "{r:?}");
        assert_eq!(r.ssrcs, [a.thumbnail, a.full], "{r:?}");
    }
    // The estimate grows by 8% a second towards 1.5 × what arrives (800 kbit/s of
    // payload, headers and SRTP on top).
    let last = before.last().unwrap();
    assert!((900_000..=1_400_000).contains(&last.bps), "{rembs:?}");
    // The fall: a lower value at once, in its own compound (no report blocks), long
    // before the next periodic one.
    let dropped = rembs
        .iter()
        .find(|r| r.at >= start + fall && (r.bps as f64) < 0.97 * last.bps as f64)
        .unwrap();
    assert!(
        dropped.at - (start + fall) < Duration::from_millis(200),
        "{rembs:?}"
    );
    assert_eq!(dropped.blocks, 0, "{dropped:?}");
    assert_eq!(t.b.stats().remb_out, rembs.len() as u64);
    let bwe = t.b.bwe().unwrap();
    assert!(bwe.stats().overuses > 0);
    // A sent no REMB: it has no estimator.
    assert!(t.a.bwe().is_none());
}

/// On a congested link (our estimator signalled over-use or brought its estimate down
/// within [`CONGESTION_QUIET`]), a lost video packet is NACKed once, as ever, but not
/// again, and the keyframe repair then wants waits until the link has been quiet that
/// long: resends and keyframes piled on a full queue would only deepen it.
#[test]
fn repair_waits_out_congestion() {
    let mut t = two_with(|c| c.bwe = Some(ExtId(2)));
    let mut relay_in = relay_srtcp_in(&t.b_keys);
    let full = t.a.ssrcs().full;
    // 800 kbit/s through a 2 Mbit/s link that falls to 300 kbit/s after 1.5 s: by the
    // end, half a second later, a queue is building.
    let _ = a_streams_to_b(
        &mut t,
        Duration::from_secs(2),
        Duration::from_millis(10),
        1000,
        |at| {
            if at < Duration::from_millis(1500) {
                2_000_000.0
            } else {
                300_000.0
            }
        },
    );
    let signals = |t: &Two| t.b.bwe().map(|b| b.stats().overuses + b.stats().decreases);
    assert!(signals(&t) > Some(0), "congestion signalled");
    let _ = b_feedback(&mut t, &mut relay_in);
    // (What the link still held when the stream stopped is a gap of its own.)
    let t0 = b_misses_one(&mut t, &mut relay_in);
    // Past the times to NACK again and to give up, the stream flowing: no second NACK;
    // once the link has been quiet for CONGESTION_QUIET, the keyframe.
    let sent = repair_feedback(&mut t, &mut relay_in, t0 + CONGESTION_QUIET, true);
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!((sent[0].1.clone(), sent[0].2.clone()), (vec![], vec![full]));
    let give_up = t0 + NACK_AGAIN_AFTER + NACK_GIVE_UP_AFTER;
    assert!(sent[0].0 > give_up + Duration::from_millis(100), "{sent:?}");
}

#[test]
fn a_fixed_remb_wins_over_the_estimate() {
    let mut t = two_with(|c| {
        c.bwe = Some(ExtId(2));
        c.remb_bps = Some(123_000);
    });
    let rembs = a_streams_to_b(
        &mut t,
        Duration::from_secs(4),
        Duration::from_millis(10),
        1000,
        |_| 2_000_000.0,
    );
    assert!((3..=5).contains(&rembs.len()), "{rembs:?}");
    for r in &rembs {
        assert_eq!((r.bps, r.blocks), (123_000, 1), "{r:?}");
    }
    // The estimator still runs (its value is there to read), it just does not send.
    assert!(t.b.bwe().unwrap().is_measured());
    assert_eq!(t.b.stats().remb_out, rembs.len() as u64);
}

/// Runs `d` through `p` in simulated time for `dur` (waking at each of the driver's
/// deadlines); returns the full-resolution stream's payload bitrate over that time and
/// whether its first packet was a keyframe.
fn drive_for(
    d: &mut Driver,
    p: &mut Participant,
    now: &mut Instant,
    dur: Duration,
) -> (f64, Option<bool>) {
    let full = p.ssrcs().full;
    let end = *now + dur;
    let (_, before) = p.sent_totals(full).unwrap();
    let keyframes = d.sources()[2].stats().keyframes;
    let packets = d.sources()[2].stats().packets;
    let mut first_was_key = None;
    while *now < end {
        d.drive(p, *now).unwrap();
        while p.poll_transmit().is_some() {}
        if first_was_key.is_none() && d.sources()[2].stats().packets > packets {
            first_was_key = Some(d.sources()[2].stats().keyframes > keyframes);
        }
        *now = d
            .poll_timeout(p)
            .unwrap()
            .max(*now + Duration::from_micros(1));
    }
    let (_, after) = p.sent_totals(full).unwrap();
    (
        (after - before) as f64 * 8.0 / dur.as_secs_f64(),
        first_was_key,
    )
}

/// Before its participant connects (and after it failed) the driver has nothing due:
/// it sends nothing then, and its sources' due times would be in the past, so a loop
/// waiting for its deadline would spin.
#[test]
fn the_driver_has_no_deadline_while_its_participant_is_not_connected() {
    let t0 = Instant::now();
    let cfg = config(0, addr(5000), relay_cert().fingerprint());
    let mut relay = FakeRelay::new(addr(5000), &cfg, t0);
    let mut p = Participant::new(cfg, t0).unwrap();
    let ext = blindfold_relay::control::ExtmapIds::default();
    let d = Driver::for_participant(&p, SenderId(1), ext, t0, 9, t0);
    assert_eq!(d.poll_timeout(&p), None);
    let mut now = t0;
    run(&mut p, &mut relay, &mut now, t0 + Duration::from_secs(1));
    assert!(p.is_connected());
    assert!(d.poll_timeout(&p).is_some_and(|t| t <= now));
}

#[test]
fn the_driver_sends_its_full_layer_at_the_rate_remb_and_tmmbr_ask_for() {
    let t0 = Instant::now();
    let (mut p, _relay, mut now) = connected(0, 5000, t0);
    let own = p.ssrcs();
    let ext = blindfold_relay::control::ExtmapIds::default();
    let mut d = Driver::for_participant(&p, SenderId(1), ext, t0, 9, now);
    let two_s = Duration::from_secs(2);
    let near = |bps: f64, want: f64| (bps - want).abs() <= 0.15 * want;
    let (nominal, _) = drive_for(&mut d, &mut p, &mut now, two_s);
    assert!(near(nominal, 1_500_000.0), "{nominal}");

    // A REMB naming the full stream: about 500 kbit/s from then on.
    let remb = |bps| Event::Remb {
        bitrate_bps: bps,
        ssrcs: vec![own.full],
    };
    assert!(d.handle_event(&remb(500_000)));
    let (slowed, _) = drive_for(&mut d, &mut p, &mut now, two_s);
    assert!(near(slowed, 500_000.0), "{slowed}");
    // One far above the nominal rate: back to the nominal ~1.5 Mbit/s, no more.
    assert!(d.handle_event(&remb(5_000_000)));
    let (back, _) = drive_for(&mut d, &mut p, &mut now, two_s);
    assert!(near(back, 1_500_000.0), "{back}");
    // Not about the full stream: ignored.
    let thumb_only = Event::Remb {
        bitrate_bps: 100_000,
        ssrcs: vec![own.thumbnail],
    };
    assert!(!d.handle_event(&thumb_only));
    let other = Event::Tmmbr {
        ssrc: own.thumbnail,
        bitrate_bps: 0,
    };
    assert!(!d.handle_event(&other));
    assert_eq!(d.stats().rate_requests, 2);

    // A tiny one: the floor, 5% of nominal (75 kbit/s).
    assert!(d.handle_event(&remb(1_000)));
    let (floor, _) = drive_for(&mut d, &mut p, &mut now, two_s);
    assert!(near(floor, 75_000.0), "{floor}");

    // TMMBR 0 stops the full layer; a non-zero one restarts it with a keyframe, at
    // that rate.
    let tmmbr = |bps| Event::Tmmbr {
        ssrc: own.full,
        bitrate_bps: bps,
    };
    assert!(d.handle_event(&tmmbr(0)));
    let (stopped, _) = drive_for(&mut d, &mut p, &mut now, Duration::from_secs(1));
    assert_eq!(stopped, 0.0);
    assert!(d.handle_event(&tmmbr(300_000)));
    let (resumed, first_key) = drive_for(&mut d, &mut p, &mut now, two_s);
    assert!(near(resumed, 300_000.0), "{resumed}");
    assert_eq!(first_key, Some(true));

    // A PAUSE holds whatever TMMBR says; RESUME then sends again.
    let pause = |paused| Event::PauseRequested {
        ssrc: own.full,
        paused,
    };
    assert!(d.handle_event(&pause(true)));
    assert!(d.handle_event(&tmmbr(0)));
    assert!(d.handle_event(&tmmbr(900_000)));
    let (held, _) = drive_for(&mut d, &mut p, &mut now, Duration::from_secs(1));
    assert_eq!(held, 0.0);
    assert!(d.handle_event(&pause(false)));
    let (again, first_key) = drive_for(&mut d, &mut p, &mut now, two_s);
    assert!(near(again, 900_000.0), "{again}");
    assert_eq!(first_key, Some(true));
    assert_eq!(d.stats().rate_requests, 7);
    assert_eq!(d.stats().pause_requests, 2);

    // Reconnecting (a relay that restarted holds no PAUSE to RESUME, none that TMMBR 0
    // stopped to restart): whatever the old session stopped sends again, from a keyframe.
    assert!(d.handle_event(&pause(true)));
    let (held, _) = drive_for(&mut d, &mut p, &mut now, Duration::from_secs(1));
    assert_eq!(held, 0.0);
    assert!(d.handle_event(&Event::Reconnecting));
    let (after_reconnect, first_key) = drive_for(&mut d, &mut p, &mut now, two_s);
    assert!(near(after_reconnect, 900_000.0), "{after_reconnect}");
    assert_eq!(first_key, Some(true));
    assert!(d.handle_event(&tmmbr(0)));
    assert!(d.handle_event(&Event::Reconnecting));
    let (after_tmmbr, first_key) = drive_for(&mut d, &mut p, &mut now, two_s);
    assert!(near(after_tmmbr, 900_000.0), "{after_tmmbr}");
    assert_eq!(first_key, Some(true));
    eprintln!(
        "full layer: nominal {nominal:.0}, REMB 500k → {slowed:.0}, 5M → {back:.0}, 1k → {floor:.0}, TMMBR 300k → {resumed:.0}, 900k → {again:.0} bit/s"
    );
}

// --- (4) malformed input ----------------------------------------------------------------

#[test]
fn truncated_datagrams_of_every_kind_are_dropped_without_panic() {
    let mut t = two();
    let relay = t.b_relay;
    let media = t.a_sends(b"some media payload for truncation");
    // An SRTCP packet as the relay would send B.
    t.a.request_keyframe(t.now, Ssrc(1)).unwrap();
    let rtcp = t.a.poll_transmit().unwrap().bytes;
    let stun = binding_response(TransactionId([1; 12]), addr(9), RELAY_PWD);
    let dtls = {
        let mut d = vec![23u8, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 9, 0, 40];
        d.extend_from_slice(&[0x5a; 40]);
        d
    };
    let mut garbage: Vec<Vec<u8>> = Vec::new();
    let mut x: u32 = 1;
    for len in [1usize, 7, 12, 20, 40, 200, 1400] {
        let mut g = vec![0u8; len];
        for b in &mut g {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            *b = x as u8;
        }
        garbage.push(g);
    }
    let before = t.b.stats().media_in;
    for d in [&media, &rtcp, &stun, &dtls]
        .into_iter()
        .chain(garbage.iter())
    {
        for len in 0..d.len() {
            let mut buf = d[..len].to_vec();
            assert!(
                t.b.handle_datagram(t.now, relay, &mut buf).is_err(),
                "len {len}"
            );
            // Every first byte, too.
            let mut buf = d[..len].to_vec();
            if let Some(b) = buf.first_mut() {
                *b = (len * 37) as u8;
            }
            let _ = t.b.handle_datagram(t.now, relay, &mut buf);
        }
    }
    while let Some(e) = t.b.poll_event() {
        assert!(!matches!(e, Event::Media(_) | Event::Failed(_)), "{e:?}");
    }
    assert_eq!(t.b.stats().media_in, before);
    assert!(t.b.is_connected());
    // The whole media packet still decrypts: truncations did not move the replay window.
    assert_eq!(
        t.b_receives(&media).unwrap().payload(),
        b"some media payload for truncation"
    );
    // And an unknown STUN attribute type constant compiles in (sanity on imports).
    let _ = AttrType::USE_CANDIDATE;
}

#[test]
fn datagrams_before_connection_and_after_failure_are_dropped() {
    let t0 = Instant::now();
    let relay = addr(5000);
    let cfg = config(0, relay, relay_cert().fingerprint());
    let mut p = Participant::new(cfg, t0).unwrap();
    let mut rtp = vec![0x80, 96, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4];
    assert_eq!(
        p.handle_datagram(t0, relay, &mut rtp),
        Err(DropReason::NotConnected)
    );
    let mut dtls = vec![22u8, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    assert_eq!(
        p.handle_datagram(t0, relay, &mut dtls),
        Err(DropReason::DtlsNotStarted)
    );
    assert_eq!(
        p.send_rtp(t0, p.ssrcs().audio, Pt(111), false, RtpTime(0), &[], b"x"),
        Err(ParticipantError::NotConnected)
    );
    p.close();
    assert!(p.is_failed());
    assert_eq!(
        p.handle_datagram(t0, relay, &mut rtp),
        Err(DropReason::Failed)
    );
}

#[test]
fn a_participant_on_a_loopback_socket_connects_by_stepping() {
    use crate::udp::{RECV_BUF, UdpLink, UdpParticipant};

    // The fake relay behind a real socket; the participant on its own.
    let relay_sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    relay_sock.set_nonblocking(true).unwrap();
    let relay_addr = relay_sock.local_addr().unwrap();
    let t0 = Instant::now();
    let cfg = config(0, relay_addr, relay_cert().fingerprint());
    let mut relay = FakeRelay::new(relay_addr, &cfg, t0);
    let p = Participant::new(cfg, t0).unwrap();
    let mut udp = UdpParticipant::new(p, UdpLink::bind("127.0.0.1:0").unwrap());
    let me = udp.link().local_addr().unwrap();

    let (mut relay_in, mut relay_out) = (0u64, 0u64);
    let mut buf = [0u8; RECV_BUF];
    let mut events = Vec::new();
    let deadline = t0 + Duration::from_secs(5);
    while !udp.participant().is_connected() && Instant::now() < deadline {
        let now = Instant::now();
        events.extend(udp.step(now));
        let mut back = Vec::new();
        while let Ok((n, from)) = relay_sock.recv_from(&mut buf) {
            assert_eq!(from, me);
            relay_in += 1;
            back.extend(relay.handle(now, &buf[..n]));
        }
        back.extend(relay.timeout(now));
        for d in back {
            relay_out += 1;
            relay_sock.send_to(&d, me).unwrap();
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(events.contains(&Event::IceSelected), "{events:?}");
    assert!(
        events.contains(&Event::Connected {
            srtcp_profile: SrtpProfile::AeadAes256Gcm
        }),
        "{events:?}"
    );
    assert!(relay.nominated);
    assert!(relay.keys.is_some());

    // Whatever is still in flight lands; then both ends agree on every datagram.
    std::thread::sleep(Duration::from_millis(20));
    udp.read(Instant::now(), &mut buf);
    while relay_sock.recv_from(&mut buf).is_ok() {
        relay_in += 1;
    }
    let st = udp.stats();
    assert_eq!((st.datagrams_out, st.datagrams_in), (relay_in, relay_out));
    assert_eq!(st.send_errors + st.send_would_block + st.recv_errors, 0);
}
