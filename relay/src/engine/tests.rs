//! Engine tests that need no DTLS peer: ICE admission, what is dropped before a session
//! is connected, rule handling and shard hand-over. Whole calls (ICE, DTLS, media, RTCP,
//! several shards) are driven with the real participant library in the workspace's
//! `tests/` crate.

// Tests choose an arbitrary base instant; everything after it is simulated.
#![allow(clippy::disallowed_methods)]

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use super::*;
use crate::dtls::{DtlsSettings, Fingerprint};
use crate::wire::stun::{Class, IntegrityKey, Method, StunWriter, TransactionId};

const PWD: &str = "relaypassword0123456789";
/// The participant's ICE password: the relay keys its own checks with it.
const PEER_PWD: &str = "peerpassword0123456789ab";

fn shared() -> (Arc<DtlsCert>, Arc<DtlsConfig>) {
    static S: OnceLock<(Arc<DtlsCert>, Arc<DtlsConfig>)> = OnceLock::new();
    S.get_or_init(|| {
        let settings = DtlsSettings {
            insecure_rng_seed: Some(7),
            ..DtlsSettings::default()
        };
        (
            Arc::new(DtlsCert::generate().unwrap()),
            Arc::new(DtlsConfig::new(settings).unwrap()),
        )
    })
    .clone()
}

fn engine(shard: u16) -> Engine {
    let (cert, dtls) = shared();
    Engine::new(EngineConfig::new(ShardId(shard), cert, dtls))
}

/// Shard `shard` of a relay of two (it broadcasts what a relay of one keeps to itself).
fn engine_of_two(shard: u16) -> Engine {
    let (cert, dtls) = shared();
    let mut cfg = EngineConfig::new(ShardId(shard), cert, dtls);
    cfg.shards = 2;
    Engine::new(cfg)
}

/// Shards 0 and 1 of a relay of two, each with session "a" (conference "c", SSRC 1),
/// their events taken.
fn two_shards_with_a(now: Instant) -> (Engine, Engine) {
    let (mut e0, mut e1) = (engine_of_two(0), engine_of_two(1));
    for e in [&mut e0, &mut e1] {
        e.handle_command(now, Command::UpsertSession(spec("a", "c", &[1])));
        events(e);
    }
    (e0, e1)
}

/// The messages `e` has for other shards that `keep` picks; its other events go.
fn peer_messages(e: &mut Engine, keep: impl Fn(&PeerMsg) -> bool) -> Vec<PeerMsg> {
    events(e)
        .into_iter()
        .filter_map(|ev| match ev {
            Event::Peer(_, msg) if keep(&msg) => Some(msg),
            _ => None,
        })
        .collect()
}

/// Hands `to` every message `from` has for other shards; `from`'s other events go.
fn pass_peer_messages(now: Instant, from: &mut Engine, to: &mut Engine) {
    for ev in events(from) {
        if let Event::Peer(_, msg) = ev {
            to.handle_command(now, Command::Peer(msg));
        }
    }
}

fn spec(id: &str, conf: &str, ssrcs: &[u32]) -> SessionRule {
    SessionRule {
        id: SessionName::new(id),
        conf: ConfName::new(conf),
        ice_ufrag: format!("relay{id}"),
        ice_pwd: PWD.to_owned(),
        remote_ufrag: format!("peer{id}"),
        remote_pwd: Some(PEER_PWD.to_owned()),
        fingerprint: Fingerprint([0xab; 32]),
        streams: ssrcs
            .iter()
            .map(|&s| StreamRule {
                ssrc: Ssrc(s),
                kind: MediaKind::Audio,
                layer: Layer::Single,
            })
            .collect(),
        extensions: ExtensionIds::default(),
        tmmbr: false,
    }
}

fn check(id: &str, pwd: &str, use_candidate: bool) -> Vec<u8> {
    check_as(&format!("relay{id}:peer{id}"), pwd, use_candidate)
}

/// A check with STUN USERNAME `username`.
fn check_as(username: &str, pwd: &str, use_candidate: bool) -> Vec<u8> {
    let mut buf = vec![0u8; 200];
    let mut w = StunWriter::new(
        &mut buf,
        Class::Request,
        Method::Binding,
        TransactionId([9; 12]),
    )
    .unwrap();
    w.add_username(username).unwrap();
    w.add_priority(1).unwrap();
    w.add_ice_controlling(5).unwrap();
    if use_candidate {
        w.add_use_candidate().unwrap();
    }
    w.add_message_integrity(&IntegrityKey::new(pwd.as_bytes()))
        .unwrap();
    let n = w.finish_with_fingerprint().unwrap();
    buf.truncate(n);
    buf
}

fn rtp(ssrc: u32) -> Vec<u8> {
    let mut p = vec![0x80, 111, 0, 1, 0, 0, 0, 1];
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(&[0xee; 40]);
    p
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn events(e: &mut Engine) -> Vec<Event> {
    std::iter::from_fn(|| e.poll_event()).collect()
}

fn transmits(e: &mut Engine) -> Vec<(SocketAddr, Vec<u8>)> {
    let mut out = Vec::new();
    while let Some(t) = e.poll_transmit() {
        out.push((t.dest, t.data.to_vec()));
    }
    out
}

#[test]
fn valid_check_is_answered_and_claims_the_session() {
    let now = Instant::now();
    let mut e = engine(0);
    e.handle_command(now, Command::UpsertSession(spec("a", "c", &[1])));
    let mut c = check("a", PWD, true);
    assert_eq!(
        e.handle_datagram(now, addr(5000), &mut c),
        Handled::Consumed
    );
    let tx = transmits(&mut e);
    assert_eq!(tx.len(), 1);
    let answer = StunMessage::parse(&tx[0].1).unwrap();
    assert_eq!(tx[0].0, addr(5000));
    assert_eq!(answer.class(), Class::SuccessResponse);
    answer.verify_integrity(PWD.as_bytes()).unwrap();
    assert_eq!(answer.xor_mapped_address().unwrap(), Some(addr(5000)));
    let ev = events(&mut e);
    assert!(ev.iter().any(|e| matches!(
        e,
        Event::Peer(
            PeerDest::All,
            PeerMsg::Claimed {
                shard: ShardId(0),
                ..
            }
        )
    )));
    assert_eq!(e.session_counts().connecting, 1);
}

#[test]
fn wrong_password_gets_401_and_creates_no_state() {
    let now = Instant::now();
    let mut e = engine(0);
    e.handle_command(now, Command::UpsertSession(spec("a", "c", &[1])));
    let mut c = check("a", "not-the-password-at-all", true);
    assert_eq!(
        e.handle_datagram(now, addr(5000), &mut c),
        Handled::Dropped(DropReason::StunRejected)
    );
    let tx = transmits(&mut e);
    assert_eq!(tx.len(), 1);
    let answer = StunMessage::parse(&tx[0].1).unwrap();
    assert_eq!(answer.class(), Class::ErrorResponse);
    assert_eq!(answer.error_code().unwrap().unwrap().code, 401);
    assert!(!answer.has_integrity());
    assert!(events(&mut e).is_empty(), "no claim");
    assert_eq!(e.session_counts().connecting, 0);
    // And the address is not validated: its media is dropped as such.
    let mut m = rtp(1);
    assert_eq!(
        e.handle_datagram(now, addr(5000), &mut m),
        Handled::Dropped(DropReason::Unvalidated)
    );
}

#[test]
fn media_before_dtls_and_from_strangers_is_dropped() {
    let now = Instant::now();
    let mut e = engine(0);
    e.handle_command(now, Command::UpsertSession(spec("a", "c", &[1])));
    e.handle_command(now, Command::UpsertSession(spec("b", "c", &[2])));
    let mut c = check("a", PWD, true);
    e.handle_datagram(now, addr(5000), &mut c);
    let mut m = rtp(1);
    assert_eq!(
        e.handle_datagram(now, addr(5000), &mut m),
        Handled::Dropped(DropReason::BeforeDtls)
    );
    assert_eq!(
        e.handle_datagram(now, addr(6000), &mut m),
        Handled::Dropped(DropReason::Unvalidated)
    );
    let mut rtcp = vec![0x81, 201, 0, 1, 0, 0, 0, 1];
    assert_eq!(
        e.handle_datagram(now, addr(6000), &mut rtcp),
        Handled::Dropped(DropReason::Unvalidated)
    );
    assert_eq!(e.stats().dropped(DropReason::Unvalidated), 2);
    assert_eq!(e.stats().dropped(DropReason::BeforeDtls), 1);
}

#[test]
fn garbage_and_unknown_ufrags_are_dropped() {
    let now = Instant::now();
    let mut e = engine(0);
    let mut junk = [0xffu8; 30];
    assert_eq!(
        e.handle_datagram(now, addr(1), &mut junk),
        Handled::Dropped(DropReason::NotOurs)
    );
    let mut c = check("nobody", PWD, true);
    assert_eq!(
        e.handle_datagram(now, addr(1), &mut c),
        Handled::Dropped(DropReason::StunUnknownUfrag)
    );
    assert!(transmits(&mut e).is_empty(), "strangers learn nothing");
}

#[test]
fn removed_session_is_forgotten_at_once() {
    let now = Instant::now();
    let mut e = engine(0);
    e.handle_command(now, Command::UpsertSession(spec("a", "c", &[1])));
    let mut c = check("a", PWD, true);
    e.handle_datagram(now, addr(5000), &mut c);
    e.handle_command(now, Command::RemoveSession(SessionName::new("a")));
    let mut c = check("a", PWD, true);
    assert_eq!(
        e.handle_datagram(now, addr(5000), &mut c),
        Handled::Dropped(DropReason::StunUnknownUfrag)
    );
    let mut m = rtp(1);
    assert_eq!(
        e.handle_datagram(now, addr(5000), &mut m),
        Handled::Dropped(DropReason::Unvalidated)
    );
    assert_eq!(e.session_counts(), SessionCounts::default());
}

/// A snapshot may hand one session's relay ufrag to another, listed first: replacing the
/// second session afterwards must not take the ufrag from the first.
#[test]
fn a_ufrag_handed_to_another_session_stays_with_it() {
    let now = Instant::now();
    let mut e = engine(0);
    e.handle_command(now, Command::UpsertSession(spec("x", "c", &[1])));
    e.handle_command(now, Command::UpsertSession(spec("y", "c", &[2])));
    let mut x = spec("x", "c", &[1]);
    x.ice_ufrag = "relayy".to_owned();
    let mut y = spec("y", "c", &[2]);
    y.ice_ufrag = "relayb".to_owned();
    e.handle_command(now, Command::UpsertSession(x));
    e.handle_command(now, Command::UpsertSession(y));
    let mut c = check_as("relayy:peerx", PWD, true);
    assert_eq!(
        e.handle_datagram(now, addr(5000), &mut c),
        Handled::Consumed
    );
    let tx = transmits(&mut e);
    assert_eq!(tx.len(), 1);
    assert_eq!(
        StunMessage::parse(&tx[0].1).unwrap().class(),
        Class::SuccessResponse
    );
}

#[test]
fn identical_upsert_keeps_the_session() {
    let now = Instant::now();
    let mut e = engine(0);
    e.handle_command(now, Command::UpsertSession(spec("a", "c", &[1])));
    let mut c = check("a", PWD, true);
    e.handle_datagram(now, addr(5000), &mut c);
    events(&mut e);
    e.handle_command(now, Command::UpsertSession(spec("a", "c", &[1])));
    assert!(events(&mut e).is_empty());
    assert_eq!(e.session_counts().connecting, 1, "ICE state survived");
}

#[test]
fn a_session_claimed_elsewhere_is_answered_here_and_recorded_by_its_home() {
    let now = Instant::now();
    let mut home = engine(0);
    let mut other = engine(1);
    for e in [&mut home, &mut other] {
        e.handle_command(now, Command::UpsertSession(spec("a", "c", &[1])));
    }
    let mut c = check("a", PWD, false);
    assert_eq!(
        home.handle_datagram(now, addr(5000), &mut c),
        Handled::Consumed
    );
    transmits(&mut home);
    pass_peer_messages(now, &mut home, &mut other);
    // A second address of the session reaches the other shard: answered there.
    let mut c = check("a", PWD, true);
    assert_eq!(
        other.handle_datagram(now, addr(6000), &mut c),
        Handled::Consumed
    );
    let tx = transmits(&mut other);
    assert_eq!(tx.len(), 1);
    assert_eq!(tx[0].0, addr(6000));
    let answer = StunMessage::parse(&tx[0].1).unwrap();
    assert_eq!(answer.class(), Class::SuccessResponse);
    answer.verify_integrity(PWD.as_bytes()).unwrap();
    // And the home hears of it, and its agent selects the nominated address.
    let ev = events(&mut other);
    let checked = ev
        .into_iter()
        .find_map(|e| match e {
            Event::Peer(PeerDest::Shard(ShardId(0)), m @ PeerMsg::Checked { .. }) => Some(m),
            _ => None,
        })
        .expect("a Checked message for the home");
    home.handle_command(now, Command::Peer(checked));
    let Some((_, Session { ice, .. })) = home.sessions.iter().next() else {
        panic!("the session is there");
    };
    assert_eq!(ice.selected(), Some(addr(6000)));
    // DTLS from the other shard's address goes to the home, whole.
    let mut hello = vec![22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1];
    assert_eq!(
        other.handle_datagram(now, addr(6000), &mut hello),
        Handled::Consumed
    );
    assert!(events(&mut other).iter().any(|e| matches!(e,
        Event::Peer(PeerDest::Shard(ShardId(0)), PeerMsg::Datagram { from, data, .. })
            if *from == addr(6000) && **data == hello[..])));
}

#[test]
fn silence_before_any_check_is_reported_once_by_shard_zero() {
    let t0 = Instant::now();
    let mut e0 = engine(0);
    let mut e1 = engine(1);
    for e in [&mut e0, &mut e1] {
        e.handle_command(t0, Command::UpsertSession(spec("a", "c", &[1])));
        e.handle_timeout(t0);
        e.handle_timeout(t0 + Duration::from_secs(31));
        e.handle_timeout(t0 + Duration::from_secs(40));
    }
    let failed = |ev: Vec<Event>| {
        ev.iter()
            .filter(|e| {
                matches!(
                    e,
                    Event::Session(SessionEvent::Failed {
                        reason: EndReason::IceTimeout,
                        ..
                    })
                )
            })
            .count()
    };
    assert_eq!(failed(events(&mut e0)), 1);
    assert_eq!(failed(events(&mut e1)), 0);
}

#[test]
fn consent_expiry_closes_a_claimed_session() {
    let t0 = Instant::now();
    let mut e = engine(0);
    e.handle_command(t0, Command::UpsertSession(spec("a", "c", &[1])));
    let mut c = check("a", PWD, true);
    e.handle_datagram(t0, addr(5000), &mut c);
    events(&mut e);
    e.handle_timeout(t0 + Duration::from_secs(29));
    assert!(events(&mut e).is_empty());
    e.handle_timeout(t0 + Duration::from_secs(31));
    let ev = events(&mut e);
    assert!(ev.iter().any(|e| matches!(
        e,
        Event::Session(SessionEvent::Failed {
            reason: EndReason::IceTimeout,
            ..
        })
    )));
    // Its address is no longer validated.
    let mut m = rtp(1);
    assert_eq!(
        e.handle_datagram(t0 + Duration::from_secs(32), addr(5000), &mut m),
        Handled::Dropped(DropReason::Unvalidated)
    );
}

#[test]
fn fuzz_body_survives_generated_sequences() {
    // The cargo-fuzz target's body, over deterministic pseudo-random inputs, so a
    // regression shows up in the normal test run too.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..300 {
        let mut input = Vec::new();
        for _ in 0..64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            input.push(x as u8);
        }
        super::fuzz::run(&input);
    }
}

#[test]
fn idle_sessions_cost_no_work_per_poll() {
    let t0 = Instant::now();
    let mut e = engine(0);
    // 10 000 configured sessions this shard times (their first-check deadline), a few
    // of them claimed here (ICE consent and DTLS deadlines too).
    let (n, claimed) = (10_000, 50);
    for i in 0..n {
        let id = format!("s{i}");
        // A conference each: this test is about timers, not fan-out rebuilds.
        let conf = format!("c{i}");
        e.handle_command(t0, Command::UpsertSession(spec(&id, &conf, &[i])));
        if i < claimed {
            let mut c = check(&id, PWD, true);
            let from = addr(10_000 + (i as u16));
            assert_eq!(e.handle_datagram(t0, from, &mut c), Handled::Consumed);
        }
    }
    transmits(&mut e);
    events(&mut e);
    assert_eq!(e.session_counts().configured, n as usize);
    assert_eq!(e.session_counts().connecting, claimed as usize);
    let first = e.poll_timeout().expect("sessions to time");
    assert!(first > t0, "nothing is due at once");
    // Polls before the soonest deadline visit no session at all (the old engine walked
    // all 10 000 on every 50 ms tick).
    let mut polls = 0;
    let mut t = t0;
    while t < first {
        e.handle_timeout(t);
        polls += 1;
        t += Duration::from_millis(50);
    }
    assert!(polls > 1);
    assert_eq!(e.stats().timer_visits, 0);
    assert_eq!(e.poll_timeout(), Some(first));
    // At the deadline, only the sessions due are visited.
    e.handle_timeout(first);
    assert!(e.stats().timer_visits > 0);
    assert!(e.stats().timer_visits <= n as u64);
}

/// A session whose deadline moves later with every packet (here its consent, by
/// checks that never lead to a connection) keeps one timer entry, however many packets
/// come, while another session's earlier deadline holds the top of the heap.
#[test]
fn a_deadline_that_moves_on_per_packet_keeps_one_timer_entry() {
    let t0 = Instant::now();
    let mut e = engine(0);
    for id in ["a", "b"] {
        e.handle_command(t0, Command::UpsertSession(spec(id, id, &[1])));
    }
    let mut c = check("b", PWD, true);
    e.handle_datagram(t0, addr(6000), &mut c);
    for i in 1..=2000u64 {
        let mut c = check("a", PWD, false);
        let at = t0 + Duration::from_millis(i);
        assert_eq!(e.handle_datagram(at, addr(5000), &mut c), Handled::Consumed);
        transmits(&mut e);
    }
    assert!(e.timers.len() <= 4, "{} timer entries", e.timers.len());
    // And the moved deadline still holds: "a" ends 30 s after its last check, not
    // after its first.
    let last = t0 + Duration::from_millis(2000);
    events(&mut e);
    let mut ended_at = None;
    while let Some(t) = e.poll_timeout().filter(|_| ended_at.is_none()) {
        assert!(t <= last + Duration::from_secs(31), "{:?}", t - t0);
        e.handle_timeout(t);
        let ended = events(&mut e).into_iter().any(|ev| {
            matches!(ev, Event::Session(
                SessionEvent::Failed { ref session, .. } | SessionEvent::Closed { ref session, .. }
            ) if session.as_str() == "a")
        });
        ended_at = ended.then_some(t);
    }
    let ended_at = ended_at.expect("a's consent ran out");
    assert!(
        ended_at >= last + Duration::from_secs(30),
        "{:?}",
        ended_at - t0
    );
}

/// An engine with session "a" (conference "c", SSRC 1) checked from `addr(5000)` at
/// `t0`, nominating or not, and a DTLS client with the certificate signaling pinned
/// for it (its ClientHello not sent yet).
fn checked_session(t0: Instant, nominate: bool) -> (Engine, DtlsSession) {
    checked_session_of(t0, nominate, spec("a", "c", &[1]))
}

/// [`checked_session`] for session `rule` (whose id must be "a").
fn checked_session_of(t0: Instant, nominate: bool, mut rule: SessionRule) -> (Engine, DtlsSession) {
    let (relay_cert, _) = shared();
    let client_cert = DtlsCert::generate().unwrap();
    let client_cfg = DtlsConfig::new(DtlsSettings::default()).unwrap();
    let mut e = engine(0);
    rule.fingerprint = client_cert.fingerprint();
    e.handle_command(t0, Command::UpsertSession(rule));
    let mut c = check("a", PWD, nominate);
    e.handle_datagram(t0, addr(5000), &mut c);
    transmits(&mut e);
    let client = DtlsSession::client(&client_cfg, &client_cert, relay_cert.fingerprint(), t0);
    (e, client)
}

/// Session "a" nominated from `addr(5000)` at `t0` and connected: no participant
/// password, so the nomination alone connects it (no relay check), and DTLS done.
fn connected_by_its_nomination(t0: Instant) -> Engine {
    let mut rule = spec("a", "c", &[1]);
    rule.remote_pwd = None;
    let (mut e, mut client) = checked_session_of(t0, true, rule);
    complete_dtls(t0, &mut e, &mut client);
    e
}

/// Runs the handshake of [`checked_session`]'s client from port 5000 to its end, and
/// returns the hop's SRTP keys as the client has them.
fn complete_dtls(now: Instant, e: &mut Engine, client: &mut DtlsSession) -> SrtpKeyMaterial {
    for _ in 0..4 {
        while let Some(d) = client.poll_transmit() {
            let mut d = d.to_vec();
            e.handle_datagram(now, addr(5000), &mut d);
        }
        for (to, d) in transmits(e) {
            assert_eq!(to, addr(5000));
            client.handle_datagram(now, &d).unwrap();
        }
    }
    assert!(client.is_connected());
    match client.poll_event() {
        Some(DtlsEvent::Connected(keys)) => keys,
        other => panic!("{other:?}"),
    }
}

#[test]
fn dtls_retransmits_at_its_own_deadline() {
    let t0 = Instant::now();
    let (mut e, mut client) = checked_session(t0, true);
    // ClientHello → HelloVerifyRequest → ClientHello with the cookie → the server's
    // flight, which the server retransmits if nothing comes back.
    let mut flight = Vec::new();
    for _ in 0..2 {
        while let Some(d) = client.poll_transmit() {
            let mut d = d.to_vec();
            e.handle_datagram(t0, addr(5000), &mut d);
        }
        flight = transmits(&mut e);
        for (_, d) in &flight {
            client.handle_datagram(t0, d).unwrap();
        }
    }
    assert!(!flight.is_empty(), "the server sent its flight");
    // The engine wakes at the DTLS server's own deadline, not on a tick.
    let Some((
        _,
        Session {
            home: Home::Here(local),
            ..
        },
    )) = e.sessions.iter().next()
    else {
        panic!("homed here");
    };
    let due = local.dtls.poll_timeout().expect("a retransmission timer");
    assert!(
        due > t0 + Duration::from_millis(50),
        "longer than the old tick"
    );
    // An entry armed for an earlier deadline (one since moved on) fires first, finds
    // nothing due and arms the session at this one.
    let mut early = 0;
    while let Some(t) = e.poll_timeout().filter(|&t| t < due) {
        e.handle_timeout(t);
        assert!(transmits(&mut e).is_empty(), "nothing due at {t:?}");
        early += 1;
        assert!(early < 3, "one early wake per moved deadline");
    }
    assert_eq!(e.poll_timeout(), Some(due));
    e.handle_timeout(due - Duration::from_millis(1));
    assert!(transmits(&mut e).is_empty(), "not before its deadline");
    e.handle_timeout(due);
    let again = transmits(&mut e);
    assert_eq!(
        again.len(),
        flight.len(),
        "the flight again, at its deadline"
    );
    assert!(again.iter().all(|(to, d)| *to == addr(5000) && d[0] == 22));
}

/// An agent that nominates after DTLS (regular nomination, as browsers do) sends media
/// as soon as DTLS is done: it is taken from the address its checks came from, for a
/// few seconds, while nothing goes there until it nominates and answers the relay's
/// check.
#[test]
fn media_after_dtls_is_taken_before_the_nomination() {
    let t0 = Instant::now();
    let (mut e, mut client) = checked_session(t0, false);
    let mut m = rtp(1);
    assert_eq!(
        e.handle_datagram(t0, addr(5000), &mut m),
        Handled::Dropped(DropReason::BeforeDtls)
    );
    complete_dtls(t0, &mut e, &mut client);
    let mut m = rtp(1);
    assert!(matches!(
        e.handle_datagram(t0, addr(5000), &mut m),
        Handled::Forward(_)
    ));
    // Not connected: no address nominated, and no check of it sent.
    assert!(e.sessions.iter().all(|(_, s)| s.addr.is_none()));
    assert!(transmits(&mut e).is_empty());
    // From an address that passed no check, still nothing.
    assert_eq!(
        e.handle_datagram(t0, addr(6000), &mut m),
        Handled::Dropped(DropReason::Unvalidated)
    );
    // A session that has not connected within `UNCONNECTED_MEDIA` sends nothing more.
    let later = t0 + rtp::UNCONNECTED_MEDIA;
    assert!(matches!(
        e.handle_datagram(later, addr(5000), &mut m),
        Handled::Forward(_)
    ));
    assert_eq!(
        e.handle_datagram(later + Duration::from_millis(1), addr(5000), &mut m),
        Handled::Dropped(DropReason::NotNominated)
    );
}

/// Consent counts from whatever valid packet arrives last: a connected participant
/// that sends media but never checks again stays; silence for the consent timeout
/// ends it (`consent_expired`).
#[test]
fn media_alone_keeps_consent_and_silence_ends_it() {
    let t0 = Instant::now();
    let mut e = connected_by_its_nomination(t0);
    let run_until = |e: &mut Engine, until: Instant| {
        while let Some(t) = e.poll_timeout().filter(|&t| t <= until) {
            e.handle_timeout(t);
        }
    };
    let ended = |e: &mut Engine| {
        events(e).into_iter().find_map(|ev| match ev {
            Event::Session(SessionEvent::Closed { reason, .. }) => Some(reason),
            Event::Session(SessionEvent::Failed { reason, .. }) => Some(reason),
            _ => None,
        })
    };
    let timeout = e.cfg.silence_timeout;
    let mut now = t0;
    while now < t0 + 2 * timeout {
        now += Duration::from_secs(1);
        run_until(&mut e, now);
        assert!(
            matches!(
                e.handle_datagram(now, addr(5000), &mut rtp(1)),
                Handled::Forward(_)
            ),
            "still forwarded at {:?}",
            now - t0
        );
    }
    assert_eq!(ended(&mut e), None, "media alone kept it");
    run_until(&mut e, now + timeout - Duration::from_millis(100));
    assert_eq!(ended(&mut e), None);
    run_until(&mut e, now + timeout + Duration::from_secs(1));
    assert_eq!(ended(&mut e), Some(EndReason::ConsentExpired));
}

/// A stream's packets past its cap (`max_audio_pps`, counted per half second) are
/// dropped before anything reads them: a sender ignoring every rate, or a spoofer on
/// its address, costs each receiver at most that. The next half second brings a new
/// allowance; a cap of 0 is none.
#[test]
fn a_streams_packets_past_its_cap_are_dropped_as_over_rate() {
    for cap in [500, 0] {
        let t0 = Instant::now();
        let (mut e, mut client) = checked_session(t0, false);
        e.cfg.max_audio_pps = cap;
        complete_dtls(t0, &mut e, &mut client);
        let flood = |e: &mut Engine, at: Instant| {
            (0..5000)
                .filter(|_| {
                    matches!(
                        e.handle_datagram(at, addr(5000), &mut rtp(1)),
                        Handled::Forward(_)
                    )
                })
                .count()
        };
        let (first, next) = (flood(&mut e, t0), flood(&mut e, t0 + RATE_EVERY));
        match cap {
            0 => assert_eq!((first, next), (5000, 5000)),
            _ => assert_eq!((first, next), (250, 250), "half a second's worth each"),
        }
        assert_eq!(
            e.stats.drops[DropReason::OverRate.index()],
            2 * (5000 - first as u64)
        );
    }
}

/// Transport-cc feedback waits for the session's address: the transport-wide numbers
/// of media taken before the nomination (a browser's first bandwidth probes) are
/// reported in the first feedback after it, not written to nowhere.
#[test]
fn transport_cc_feedback_waits_for_the_nomination_and_reports_what_came_before() {
    const TCC: crate::id::ExtId = crate::id::ExtId(5);
    let t0 = Instant::now();
    let mut rule = spec("a", "c", &[1]);
    rule.extensions.transport_cc = Some(TCC);
    // No participant password: the nomination alone connects it (no relay check).
    rule.remote_pwd = None;
    let (mut e, mut client) = checked_session_of(t0, false, rule);
    let keys = complete_dtls(t0, &mut e, &mut client);
    // RTP with one one-byte header extension element: the transport-wide number.
    let media = |seq: u16| {
        let mut p = vec![0x90, 111, 0, seq as u8, 0, 0, 0, 1, 0, 0, 0, 1];
        p.extend_from_slice(&[0xbe, 0xde, 0, 1, (TCC.0 << 4) | 1]);
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&[0, 0xee, 0xee, 0xee, 0xee]);
        p
    };
    let ms = |n: u64| t0 + Duration::from_millis(n);
    for seq in 1..=15u16 {
        let at = ms(20 * u64::from(seq));
        assert!(matches!(
            e.handle_datagram(at, addr(5000), &mut media(seq)),
            Handled::Forward(_)
        ));
        assert!(
            transmits(&mut e).is_empty(),
            "no feedback before an address"
        );
    }
    assert_eq!(e.stats.transport_cc_sent, 0);
    // It nominates: the answer to its check, and then the next packet brings feedback
    // on all sixteen.
    let mut c = check("a", PWD, true);
    e.handle_datagram(ms(320), addr(5000), &mut c);
    transmits(&mut e);
    assert!(e.sessions.iter().all(|(_, s)| s.addr == Some(addr(5000))));
    e.handle_datagram(ms(340), addr(5000), &mut media(16));
    let sent = transmits(&mut e);
    assert_eq!(e.stats.transport_cc_sent, 1);
    let profile = SrtpProfile::from_dtls_id(keys.profile.iana_id()).unwrap();
    let mut srtcp = SrtpContext::new(profile, keys.server_master.key_salt(), None).unwrap();
    let fb = sent
        .into_iter()
        .map(|(to, mut d)| {
            assert_eq!(to, addr(5000));
            let n = srtcp.unprotect_rtcp(&mut d).unwrap();
            d.truncate(n);
            d
        })
        .find_map(|d| {
            let compound = RtcpCompound::parse(&d).unwrap();
            compound.packets().find_map(|p| match p {
                Ok(RtcpPacket::TransportCc(t)) => Some((t.base_seq(), t.status_count())),
                _ => None,
            })
        });
    assert_eq!(fb, Some((1, 16)));
}

/// Another session's valid check with a forged source (the address a connected
/// session receives its media at) is not answered and takes nothing over: the
/// connected session keeps its address and its media goes on.
#[test]
fn a_check_from_another_sessions_media_address_is_not_answered() {
    let t0 = Instant::now();
    let mut e = connected_by_its_nomination(t0);
    let mut c = check("a", PWD, true);
    e.handle_datagram(t0, addr(5000), &mut c);
    transmits(&mut e);
    assert!(e.sessions.iter().any(|(_, s)| s.addr == Some(addr(5000))));
    // Mallory holds session b's credentials and writes alice's address on her check.
    e.handle_command(t0, Command::UpsertSession(spec("b", "c", &[2])));
    let mut forged = check("b", PWD, true);
    assert_eq!(
        e.handle_datagram(t0, addr(5000), &mut forged),
        Handled::Dropped(DropReason::AddressInUse)
    );
    assert!(transmits(&mut e).is_empty(), "not answered");
    // Alice's media still arrives as hers.
    let mut m = rtp(1);
    assert!(matches!(
        e.handle_datagram(t0, addr(5000), &mut m),
        Handled::Forward(_)
    ));
    // From an address nobody receives at, b's check is answered as ever.
    let mut c = check("b", PWD, true);
    assert_eq!(e.handle_datagram(t0, addr(6000), &mut c), Handled::Consumed);
}

#[test]
fn checks_from_ever_new_addresses_keep_a_bounded_index_and_the_nominated_one() {
    let now = Instant::now();
    let mut e = engine(0);
    e.handle_command(now, Command::UpsertSession(spec("a", "c", &[1])));
    // Nominated first, then 200 more addresses check without nominating.
    let mut c = check("a", PWD, true);
    assert_eq!(
        e.handle_datagram(now, addr(5000), &mut c),
        Handled::Consumed
    );
    for port in 6000..6200 {
        let mut c = check("a", PWD, false);
        assert_eq!(
            e.handle_datagram(now, addr(port), &mut c),
            Handled::Consumed
        );
    }
    transmits(&mut e);
    assert_eq!(e.by_addr.len(), stun::MAX_INDEXED, "bounded");
    let h = e.by_addr[&addr(5000)];
    let indexed = &e.sessions.get(h).unwrap().indexed;
    assert_eq!(indexed.len(), stun::MAX_INDEXED);
    assert!(indexed.contains(&addr(5000)), "the nominated address stays");
    assert_eq!(indexed.last(), Some(&addr(6199)), "the latest is in");
    assert!(!e.by_addr.contains_key(&addr(6000)), "the oldest went");
    // An address that checks again is the most recent, and outlives the others.
    let mut c = check("a", PWD, false);
    e.handle_datagram(now, addr(6195), &mut c);
    for port in 7000..7008 {
        let mut c = check("a", PWD, false);
        e.handle_datagram(now, addr(port), &mut c);
    }
    assert!(e.by_addr.contains_key(&addr(6195)));
    assert!(!e.by_addr.contains_key(&addr(6196)));
    assert!(e.by_addr.contains_key(&addr(5000)));
}

/// Shard 0 claims a session before shard 1 has created it (a session signaling gave
/// back after a restart, whose participant checks on), so shard 1 drops the claim. On
/// creating it, shard 1 asks where it is homed, and shard 0 answers; shard 1 learns it.
#[test]
fn a_shard_that_creates_a_session_late_asks_where_it_is_homed() {
    let now = Instant::now();
    let (mut quick, mut slow) = (engine_of_two(0), engine_of_two(1));
    quick.handle_command(now, Command::UpsertSession(spec("a", "c", &[1])));
    events(&mut quick);
    let mut c = check("a", PWD, true);
    assert_eq!(
        quick.handle_datagram(now, addr(5000), &mut c),
        Handled::Consumed
    );
    // Not known there yet: dropped.
    pass_peer_messages(now, &mut quick, &mut slow);
    slow.handle_command(now, Command::UpsertSession(spec("a", "c", &[1])));
    let asked: Vec<PeerMsg> = events(&mut slow)
        .into_iter()
        .filter_map(|e| match e {
            Event::Peer(PeerDest::All, msg @ PeerMsg::WhereIs { .. }) => Some(msg),
            _ => None,
        })
        .collect();
    assert_eq!(asked.len(), 1, "it asks");
    // Only the home answers, to the shard that asked.
    let mut other = engine_of_two(1);
    other.handle_command(now, Command::UpsertSession(spec("a", "c", &[1])));
    events(&mut other);
    other.handle_command(now, Command::Peer(asked[0].clone()));
    assert!(events(&mut other).is_empty(), "not homed there: no answer");
    quick.handle_command(now, Command::Peer(asked[0].clone()));
    let answers: Vec<Event> = events(&mut quick);
    let [Event::Peer(PeerDest::Shard(ShardId(1)), claim @ PeerMsg::Claimed { shard, key, .. })] =
        &answers[..]
    else {
        panic!("{answers:?}");
    };
    assert_eq!(*shard, ShardId(0));
    let key = *key;
    slow.handle_command(now, Command::Peer(claim.clone()));
    // The slow shard now sends what it learns for the session to its home: a check from
    // a new address it validates is handed over under the home's handle.
    let mut c = check("a", PWD, false);
    assert_eq!(
        slow.handle_datagram(now, addr(5001), &mut c),
        Handled::Consumed
    );
    let handed = events(&mut slow).into_iter().any(|e| {
        matches!(e, Event::Peer(PeerDest::Shard(ShardId(0)), PeerMsg::Checked { session, .. }) if session == key)
    });
    assert!(handed, "the check goes to its home");
}

/// A session replaced (same id, new credentials: its member called again) by an upsert
/// that reaches one shard before the other: the shard still running the old
/// incarnation does not answer for the new one, and what it says about the old one
/// does not make the new one homed there or connected.
#[test]
fn peer_messages_about_a_replaced_incarnation_are_ignored() {
    let now = Instant::now();
    let (mut e0, mut e1) = two_shards_with_a(now);
    // Homed on shard 1, connected there (no participant password: the nomination
    // connects it once keyed; here the claim is enough).
    let mut c = check("a", PWD, true);
    e1.handle_datagram(now, addr(5000), &mut c);
    transmits(&mut e1);
    let old_news: Vec<PeerMsg> = peer_messages(&mut e1, |m| matches!(m, PeerMsg::Claimed { .. }));
    assert_eq!(old_news.len(), 1);
    // The member calls again. Shard 0 takes the new upsert first, and asks.
    let mut again = spec("a", "c", &[1]);
    again.ice_pwd = "otherpassword0123456789".to_owned();
    e0.handle_command(now, Command::UpsertSession(again.clone()));
    let asked: Vec<PeerMsg> = peer_messages(&mut e0, |m| matches!(m, PeerMsg::WhereIs { .. }));
    assert_eq!(asked.len(), 1, "it asks");
    // Shard 1 still runs the old incarnation: no answer.
    e1.handle_command(now, Command::Peer(asked[0].clone()));
    assert!(events(&mut e1).is_empty());
    // The old incarnation's claim, late, and its connection leave the new one alone.
    for msg in old_news {
        e0.handle_command(now, Command::Peer(msg));
    }
    let identity = spec("a", "c", &[1]).identity();
    e0.handle_command(
        now,
        Command::Peer(PeerMsg::Connected {
            session: SessionName::new("a"),
            identity,
            shard: ShardId(1),
            key: SessionHandle {
                slot: 0,
                incarnation: 0,
            },
            addr: addr(5000),
        }),
    );
    let (_, s) = e0.sessions.iter().next().unwrap();
    assert!(
        matches!(s.home, Home::Unclaimed { .. }),
        "not homed on shard 1"
    );
    assert_eq!(s.addr, None);
    assert_eq!(s.spec, again);
    // Once shard 1 has the new one too, it is claimed as before.
    e1.handle_command(now, Command::UpsertSession(again));
    events(&mut e1);
    let mut c = check("a", "otherpassword0123456789", true);
    assert_eq!(
        e1.handle_datagram(now, addr(5000), &mut c),
        Handled::Consumed
    );
    pass_peer_messages(now, &mut e1, &mut e0);
    let (_, s) = e0.sessions.iter().next().unwrap();
    assert!(matches!(s.home, Home::Elsewhere(ShardId(1), _)));
}

/// A participant cycling through source ports gets each check answered, but its home
/// hears of at most `CHECKS_HANDED_PER_SECOND` of them a second: each is a message
/// that must arrive, on a channel other sessions share.
#[test]
fn checks_from_many_ports_reach_the_home_at_a_bounded_rate() {
    let now = Instant::now();
    let (mut home, mut other) = two_shards_with_a(now);
    let mut c = check("a", PWD, false);
    home.handle_datagram(now, addr(5000), &mut c);
    pass_peer_messages(now, &mut home, &mut other);
    events(&mut other);
    let handed = |e: &mut Engine| peer_messages(e, |m| matches!(m, PeerMsg::Checked { .. })).len();
    for port in 6000..6200 {
        let mut c = check("a", PWD, port % 2 == 0);
        other.handle_datagram(now, addr(port), &mut c);
    }
    assert_eq!(transmits(&mut other).len(), 200, "every check answered");
    let budget = stun::CHECKS_HANDED_PER_SECOND as usize;
    assert_eq!(handed(&mut other), budget);
    // It refills with time.
    let later = now + Duration::from_millis(100);
    for port in 7000..7100 {
        let mut c = check("a", PWD, false);
        other.handle_datagram(later, addr(port), &mut c);
    }
    assert_eq!(handed(&mut other), budget / 10);
}

/// An answer to the relay's check that arrives at a shard other than the session's
/// home is checked there (every shard holds the participant's password): a forged one,
/// which needs only a validated address, is not handed over. Datagrams handed to the
/// home (DTLS, SRTCP, answers) are bounded per session by `rtcp_max_per_second`.
#[test]
fn what_another_shard_hands_the_home_is_checked_and_bounded() {
    let now = Instant::now();
    let (mut home, mut other) = two_shards_with_a(now);
    let mut c = check("a", PWD, false);
    home.handle_datagram(now, addr(5000), &mut c);
    pass_peer_messages(now, &mut home, &mut other);
    let mut c = check("a", PWD, false);
    other.handle_datagram(now, addr(6000), &mut c);
    transmits(&mut other);
    events(&mut other);
    let answer = |pwd: &str| {
        let mut buf = vec![0u8; 100];
        let mut w = StunWriter::new(
            &mut buf,
            Class::SuccessResponse,
            Method::Binding,
            TransactionId([7; 12]),
        )
        .unwrap();
        w.add_message_integrity(&IntegrityKey::new(pwd.as_bytes()))
            .unwrap();
        let n = w.finish_with_fingerprint().unwrap();
        buf.truncate(n);
        buf
    };
    let handed = |e: &mut Engine| peer_messages(e, |m| matches!(m, PeerMsg::Datagram { .. })).len();
    for _ in 0..1000 {
        assert_eq!(
            other.handle_datagram(now, addr(6000), &mut answer("forged")),
            Handled::Dropped(DropReason::StunRejected)
        );
    }
    assert_eq!(
        handed(&mut other),
        0,
        "a forged answer costs the home nothing"
    );
    assert_eq!(
        other.handle_datagram(now, addr(6000), &mut answer(PEER_PWD)),
        Handled::Consumed
    );
    assert_eq!(handed(&mut other), 1);
    // DTLS-looking junk from that address: the session's budget of handoffs, then
    // dropped here.
    let budget = other.cfg.rtcp_max_per_second as usize;
    let passed = (0..2 * budget)
        .filter(|_| {
            let mut junk = vec![22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
            other.handle_datagram(now, addr(6000), &mut junk) == Handled::Consumed
        })
        .count();
    assert_eq!(passed, budget - 1, "the answer took one");
    assert_eq!(handed(&mut other), budget - 1);
    assert_eq!(
        other.stats.drops[DropReason::OverRate.index()],
        (budget + 1) as u64
    );
}

/// A participant flooding valid checks at a shard that is not its home: one reaches
/// the home per address and second (each is a message that must arrive, on a channel
/// other sessions share), and a nomination from an address once per 100 ms.
#[test]
fn checks_handed_to_the_home_are_one_a_second_per_address() {
    let now = Instant::now();
    let (mut home, mut other) = two_shards_with_a(now);
    let mut c = check("a", PWD, false);
    assert_eq!(
        home.handle_datagram(now, addr(5000), &mut c),
        Handled::Consumed
    );
    pass_peer_messages(now, &mut home, &mut other);
    events(&mut other);
    let handed = |e: &mut Engine| {
        events(e)
            .into_iter()
            .filter(|e| {
                matches!(
                    e,
                    Event::Peer(PeerDest::Shard(ShardId(0)), PeerMsg::Checked { .. })
                )
            })
            .count()
    };
    for _ in 0..100 {
        let mut c = check("a", PWD, false);
        assert_eq!(
            other.handle_datagram(now, addr(6000), &mut c),
            Handled::Consumed
        );
    }
    transmits(&mut other);
    assert_eq!(handed(&mut other), 1, "100 checks, one handed over");
    let mut c = check("a", PWD, true);
    other.handle_datagram(now, addr(6000), &mut c);
    let mut c = check("a", PWD, false);
    other.handle_datagram(now, addr(6002), &mut c);
    assert_eq!(handed(&mut other), 2, "a nomination, and another address");
    // A flood of nominations from the address: one each 100 ms at most (a
    // participant nominating it again after another address is heard at once).
    for _ in 0..50 {
        let mut c = check("a", PWD, true);
        other.handle_datagram(now, addr(6000), &mut c);
    }
    transmits(&mut other);
    assert_eq!(handed(&mut other), 0, "a nomination from it just went");
    let soon = now + Duration::from_millis(100);
    for _ in 0..50 {
        let mut c = check("a", PWD, true);
        other.handle_datagram(soon, addr(6000), &mut c);
    }
    transmits(&mut other);
    assert_eq!(handed(&mut other), 1, "one a 100 ms");
    // Alternating between the two addresses checked within the second: nothing more.
    for port in [6000, 6002, 6000, 6002] {
        let mut c = check("a", PWD, false);
        other.handle_datagram(now, addr(port), &mut c);
    }
    assert_eq!(handed(&mut other), 0, "each address once a second");
    let later = now + ALIVE_EVERY;
    let mut c = check("a", PWD, false);
    other.handle_datagram(later, addr(6002), &mut c);
    assert_eq!(handed(&mut other), 1, "a second later");
}
