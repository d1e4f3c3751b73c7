//! The `blindfold-relay` binary as a real process: its control socket spoken to as
//! signaling would, real participants ([`Participant`]) over real UDP sockets on
//! 127.0.0.1, `/metrics` scraped over HTTP, SIGTERM.
//!
//! The relay binary is built and started by [`blindfold_tests::process`] (see there
//! for why it is built from the test); the control socket is spoken through
//! [`ControlClient`]. Every wait is bounded, and the [`Relay`] guard kills the process
//! when dropped.

// Real processes, sockets and deadlines: the test reads the clock.
#![allow(clippy::disallowed_methods)]

use std::io::{Read, Write};
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::net::UnixStream;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use blindfold_client::control::ControlClient;
use blindfold_client::udp::{UdpLink, UdpParticipant};
use blindfold_client::{Event as PEvent, Participant, ParticipantConfig, SenderId};
use blindfold_relay::control::{
    self, ConfId, ConferenceSpec, EndReason, ErrorCode, ExtmapIds, FrameDecoder, FullSet,
    Generation, IcePwd, IceUfrag, Layer, Message, NotificationBody, RelayInfo, Request,
    RequestBody, RequestId, ResponseBody, SessionId, SessionSpec, Snapshot, StreamKind, StreamSpec,
    SubscriptionSpec,
};
use blindfold_relay::dtls::{DtlsCert, DtlsConfig, DtlsSettings};
use blindfold_relay::id::{Pt, RtpTime};
use blindfold_relay::srtp::{MasterKey, SrtpProfile};
use blindfold_relay::wire::stun::{Class, StunMessage};
use blindfold_tests::ice_check;
use blindfold_tests::process::Relay;

const CONF: &str = "!room:example.org";

// ----- the control socket, as signaling speaks it -------------------------------------

const TIMEOUT: Duration = Duration::from_secs(5);

/// Connects as signaling; returns the relay's announcement too.
fn connect(relay: &Relay) -> (ControlClient, RelayInfo) {
    ControlClient::connect(&relay.control, TIMEOUT).expect("control connection")
}

/// The next message (panics after `limit` or on a connection error); `None` when the
/// relay closed the connection.
fn recv(c: &mut ControlClient, limit: Duration) -> Option<Message> {
    c.recv(limit).expect("a message from the relay")
}

/// Waits until `n` `session_connected` notifications were seen; returns every
/// notification seen (including those collected during earlier requests).
fn await_connected(c: &mut ControlClient, n: usize) -> Vec<NotificationBody> {
    let connected = |notes: &[NotificationBody]| {
        notes
            .iter()
            .filter(|n| matches!(n, NotificationBody::SessionConnected { .. }))
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut notes = Vec::new();
    while connected(&notes) < n {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "notifications so far: {notes:?}");
        notes.extend(c.poll_notifications(left));
    }
    notes
}

fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = (body.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

/// Generations as signaling stamps them: one counter, always moving forward.
fn generation() -> Generation {
    static G: AtomicUsize = AtomicUsize::new(1000);
    Generation(G.fetch_add(1, Ordering::Relaxed) as u64)
}

// ----- participants over real UDP ------------------------------------------------------

struct Shared {
    client_dtls: DtlsConfig,
    client_cert: DtlsCert,
}

fn shared() -> &'static Shared {
    static S: OnceLock<Shared> = OnceLock::new();
    S.get_or_init(|| Shared {
        client_dtls: DtlsConfig::new(DtlsSettings::default()).expect("client dtls"),
        client_cert: DtlsCert::generate().expect("client cert"),
    })
}

/// One participant: the library instance on its own UDP socket.
struct Peer {
    udp: UdpParticipant,
    spec: SessionSpec,
    key: Vec<u8>,
    events: Vec<PEvent>,
}

impl Peer {
    fn new(idx: usize, name: &str, relay: &RelayInfo) -> Peer {
        let (ssrcs, relay_ice, local_ice) = blindfold_tests::test_identity(idx, name);
        let s = shared();
        let stream = |ssrc, kind, layer| StreamSpec { ssrc, kind, layer };
        let spec = SessionSpec {
            session_id: SessionId::new(format!("@{name}:example.org|DEV")).unwrap(),
            conf_id: ConfId::new(CONF).unwrap(),
            ice_ufrag: IceUfrag::new(relay_ice.ufrag.clone()).unwrap(),
            ice_pwd: IcePwd::new(relay_ice.pwd.clone()).unwrap(),
            remote_ufrag: IceUfrag::new(local_ice.ufrag.clone()).unwrap(),
            remote_pwd: Some(IcePwd::new(local_ice.pwd.clone()).unwrap()),
            dtls_fingerprint: s.client_cert.fingerprint().into(),
            streams: vec![
                stream(ssrcs.audio, StreamKind::Audio, Layer::None),
                stream(ssrcs.thumbnail, StreamKind::Video, Layer::Thumbnail),
                stream(ssrcs.full, StreamKind::Video, Layer::Full),
            ],
            extmap: ExtmapIds::default(),
            tmmbr: false,
        };
        let profile = SrtpProfile::AeadAes128Gcm;
        let key: Vec<u8> = (0..profile.master_len())
            .map(|i| (i as u8).wrapping_mul(31) ^ idx as u8)
            .collect();
        let mut cfg = ParticipantConfig::new(
            local_ice,
            relay_ice,
            relay.candidates[0],
            s.client_cert.clone(),
            relay.dtls_fingerprint.into(),
            s.client_dtls.clone(),
            ssrcs,
            MasterKey::new(profile, &key).unwrap(),
            idx as u64 + 1,
        );
        cfg.auto_feedback = false;
        let p = Participant::new(cfg, Instant::now()).expect("participant");
        let link = UdpLink::bind("127.0.0.1:0").expect("participant socket");
        Peer {
            udp: UdpParticipant::new(p, link),
            spec,
            key,
            events: Vec::new(),
        }
    }

    fn p(&self) -> &Participant {
        self.udp.participant()
    }

    fn p_mut(&mut self) -> &mut Participant {
        self.udp.participant_mut()
    }

    /// Payloads decrypted from sender `idx`'s streams.
    fn media_from(&self, idx: usize) -> Vec<&[u8]> {
        self.events
            .iter()
            .filter_map(|e| match e {
                PEvent::Media(m) if m.sender == SenderId(idx as u64) => Some(m.payload()),
                _ => None,
            })
            .collect()
    }

    fn send_audio(&mut self, payload: &[u8]) {
        let ssrc = self.p().ssrcs().audio;
        self.p_mut()
            .send_rtp(
                Instant::now(),
                ssrc,
                Pt(111),
                false,
                RtpTime(0),
                &[],
                payload,
            )
            .expect("send_rtp");
    }
}

/// Moves datagrams between the participants and the relay over the real sockets, and
/// runs their timers, until `done` holds. Panics after `limit`.
fn drive(
    peers: &mut [Peer],
    relay: &Relay,
    limit: Duration,
    what: &str,
    mut done: impl FnMut(&[Peer]) -> bool,
) {
    let deadline = Instant::now() + limit;
    loop {
        let now = Instant::now();
        for peer in peers.iter_mut() {
            peer.events.extend(peer.udp.step(now));
            assert_eq!(peer.udp.stats().recv_errors, 0, "participant recv failed");
        }
        if done(peers) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out: {what}; relay log:\n{}",
            relay.log()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Every participant installs every other one's key.
fn share_keys(peers: &mut [Peer]) {
    let mut all: Vec<(&mut Participant, &[u8])> = peers
        .iter_mut()
        .map(|m| (m.udp.participant_mut(), m.key.as_slice()))
        .collect();
    blindfold_tests::share_keys_among(&mut all);
}

/// Signaling sets up a conference with these participants; they connect over UDP.
fn call(relay: &Relay, control: &mut ControlClient, info: &RelayInfo, names: &[&str]) -> Vec<Peer> {
    assert_eq!(info.candidates, vec![relay.udp]);
    let conf = ConferenceSpec {
        conf_id: ConfId::new(CONF).unwrap(),
    };
    assert_eq!(
        control.request(RequestBody::UpsertConference {
            generation: generation(),
            conference: conf,
        }),
        Ok(ResponseBody::Ok)
    );
    let mut peers: Vec<Peer> = names
        .iter()
        .enumerate()
        .map(|(i, n)| Peer::new(i, n, info))
        .collect();
    for p in &peers {
        assert_eq!(
            control.request(RequestBody::UpsertSession {
                generation: generation(),
                session: p.spec.clone(),
            }),
            Ok(ResponseBody::Ok)
        );
    }
    drive(
        &mut peers,
        relay,
        Duration::from_secs(15),
        "participants connected",
        |ps| ps.iter().all(|p| p.p().is_connected()),
    );
    await_connected(control, names.len());
    share_keys(&mut peers);
    peers
}

/// Every participant sends audio saying `round`; waits until each decrypted every
/// other one's (re-sending while waiting: a packet that raced a worker's fan-out
/// update may be dropped by design).
fn exchange(peers: &mut [Peer], relay: &Relay, round: &str) {
    let n = peers.len();
    let payload = |i: usize| format!("{round} from {i}").into_bytes();
    let all_got = |ps: &[Peer]| {
        (0..n).all(|r| {
            (0..n)
                .filter(|&s| s != r)
                .all(|s| ps[r].media_from(s).contains(&payload(s).as_slice()))
        })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        for (i, p) in peers.iter_mut().enumerate() {
            p.send_audio(&payload(i));
        }
        let mut got = false;
        let limit = Duration::from_millis(300);
        let until = Instant::now() + limit;
        drive(peers, relay, limit + Duration::from_secs(1), round, |ps| {
            got = all_got(ps);
            got || Instant::now() >= until
        });
        if got {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "round {round}: not every participant decrypted every other's audio; relay log:\n{}",
            relay.log()
        );
    }
    for (i, p) in peers.iter().enumerate() {
        assert!(p.media_from(i).is_empty(), "nobody gets their own media");
    }
}

// ----- tests ---------------------------------------------------------------------------

#[test]
fn three_participants_exchange_media_through_the_relay_process() {
    let relay = Relay::start(2);
    let (mut control, info) = connect(&relay);
    let mut peers = call(&relay, &mut control, &info, &["alice", "bob", "carol"]);
    exchange(&mut peers, &relay, "hello");

    // The workers publish their counters every 100 ms.
    relay.wait_until(Duration::from_secs(5), "metrics to move", || {
        relay.metric("blindfold_dtls_handshakes_total") == 3
            && relay.metric("blindfold_packets_received_total") > 0
            && relay.metric("blindfold_packets_sent_total") > 0
    });
    assert_eq!(relay.metric("blindfold_sessions{state=\"connected\"}"), 3);
    assert_eq!(relay.metric("blindfold_sessions{state=\"configured\"}"), 3);
    match control.request(RequestBody::GetStats) {
        Ok(ResponseBody::Stats(s)) => {
            assert_eq!((s.conferences, s.sessions, s.connected_sessions), (1, 3, 3));
            assert!(s.rx_packets > 0 && s.tx_packets > 0, "{s:?}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn media_keeps_flowing_across_a_control_reconnect_and_snapshot() {
    let relay = Relay::start(2);
    let (mut control, info) = connect(&relay);
    let mut peers = call(&relay, &mut control, &info, &["alice", "bob", "carol"]);
    exchange(&mut peers, &relay, "before");
    relay.wait_until(Duration::from_secs(5), "three handshakes counted", || {
        relay.metric("blindfold_dtls_handshakes_total") == 3
    });

    // Signaling goes away: the sessions keep running.
    drop(control);
    exchange(&mut peers, &relay, "while away");

    // It comes back and, as the protocol says, first sends the whole desired state.
    let (mut control, _) = connect(&relay);
    let snapshot = Snapshot {
        generation: generation(),
        conferences: vec![ConferenceSpec {
            conf_id: ConfId::new(CONF).unwrap(),
        }],
        sessions: peers.iter().map(|p| p.spec.clone()).collect(),
        subscriptions: Vec::new(),
    };
    assert_eq!(
        control.request(RequestBody::Snapshot(snapshot)),
        Ok(ResponseBody::Ok)
    );
    // The relay re-announces who is connected.
    let notes = await_connected(&mut control, peers.len());
    exchange(&mut peers, &relay, "after");
    assert_none_closed(&notes);
    // Counters are published every 100 ms: give a re-handshake time to show.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        relay.metric("blindfold_dtls_handshakes_total"),
        3,
        "no session re-handshook"
    );
}

#[test]
fn control_socket_survives_garbage_and_oversized_frames() {
    let relay = Relay::start(1);

    // Not JSON: goodbye `malformed`, then closed.
    let (mut c, _) = connect(&relay);
    c.send_raw(&frame(b"this is not json")).expect("write");
    match recv(&mut c, Duration::from_secs(5)) {
        Some(Message::Goodbye(g)) => assert_eq!(g.code, ErrorCode::Malformed),
        other => panic!("expected goodbye, got {other:?}"),
    }
    assert!(recv(&mut c, Duration::from_secs(5)).is_none(), "closed");

    // A request with a readable id but bad params, an unknown method, a rule the
    // registry refuses: error responses, and the connection stays.
    let (mut c, info) = connect(&relay);
    c.send_raw(&frame(
        br#"{"type":"request","id":77,"method":"upsert_session","params":{}}"#,
    ))
    .expect("write");
    match recv(&mut c, Duration::from_secs(5)) {
        Some(Message::Response(r)) => {
            assert_eq!(r.id, RequestId(77));
            assert_eq!(r.result.unwrap_err().code, ErrorCode::BadRequest);
        }
        other => panic!("expected an error response, got {other:?}"),
    }
    c.send_raw(&frame(
        br#"{"type":"request","id":78,"method":"reboot","params":{}}"#,
    ))
    .expect("write");
    match recv(&mut c, Duration::from_secs(5)) {
        Some(Message::Response(r)) => {
            assert_eq!(r.result.unwrap_err().code, ErrorCode::UnknownMethod)
        }
        other => panic!("expected an error response, got {other:?}"),
    }
    let orphan = Peer::new(0, "orphan", &info).spec;
    let refused = c.request(RequestBody::UpsertSession {
        generation: generation(),
        session: orphan,
    });
    assert_eq!(refused.unwrap_err().code, ErrorCode::NotFound);
    assert!(matches!(
        c.request(RequestBody::GetStats),
        Ok(ResponseBody::Stats(_))
    ));

    // While it is connected, a second client is turned away.
    let mut second = UnixStream::connect(&relay.control).unwrap();
    second
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let msgs = read_until_closed(&mut second);
    assert!(matches!(&msgs[..], [Message::Goodbye(_)]), "{msgs:?}");
    drop(c);

    // An absurd length prefix: goodbye `bad_frame`, then closed.
    let (mut c, _) = connect(&relay);
    c.send_raw(&u32::MAX.to_be_bytes()).expect("write");
    match recv(&mut c, Duration::from_secs(5)) {
        Some(Message::Goodbye(g)) => assert_eq!(g.code, ErrorCode::BadFrame),
        other => panic!("expected goodbye, got {other:?}"),
    }
    assert!(recv(&mut c, Duration::from_secs(5)).is_none(), "closed");

    // No hello first: a protocol violation.
    let mut raw = UnixStream::connect(&relay.control).unwrap();
    let mut out = Vec::new();
    control::encode(
        &Message::Request(Request {
            id: RequestId(1),
            body: RequestBody::GetStats,
        }),
        &mut out,
    )
    .unwrap();
    raw.write_all(&out).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let msgs = read_until_closed(&mut raw);
    assert!(matches!(msgs.first(), Some(Message::Hello(_))), "{msgs:?}");
    assert!(
        matches!(msgs.last(), Some(Message::Goodbye(g)) if g.code == ErrorCode::ProtocolViolation),
        "{msgs:?}"
    );

    // A connection that never says hello (a probe left open) is closed after 5 s, so
    // it cannot keep signaling out.
    let mut silent = UnixStream::connect(&relay.control).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let opened = Instant::now();
    let msgs = read_until_closed(&mut silent);
    let waited = opened.elapsed();
    assert!(
        waited >= Duration::from_secs(4) && waited < Duration::from_secs(10),
        "{waited:?}"
    );
    assert!(
        matches!(&msgs[..], [Message::Hello(_), Message::Goodbye(g)] if g.code == ErrorCode::ProtocolViolation),
        "{msgs:?}"
    );

    // After all that, the relay still serves a well-behaved client.
    let (mut c, _) = connect(&relay);
    assert!(matches!(
        c.request(RequestBody::GetStats),
        Ok(ResponseBody::Stats(_))
    ));
}

/// Everything the relay writes on a raw control connection until it closes it.
fn read_until_closed(stream: &mut UnixStream) -> Vec<Message> {
    let mut bytes = Vec::new();
    stream.read_to_end(&mut bytes).expect("read until closed");
    let (mut dec, mut msgs, mut rest) = (FrameDecoder::new(), Vec::new(), &bytes[..]);
    while !rest.is_empty() {
        rest = &rest[dec.push(rest)..];
        while let Some(f) = dec.next_frame().unwrap() {
            msgs.push(control::decode(&f).unwrap());
        }
    }
    msgs
}

fn sigterm(relay: &Relay) {
    // SAFETY: sending a signal to our own child process by its pid.
    let rc = unsafe { libc::kill(relay.pid() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(rc, 0);
}

#[test]
fn sigterm_says_goodbye_and_exits_zero_quickly() {
    let mut relay = Relay::start(2);
    let (mut control, info) = connect(&relay);
    let mut peers = call(&relay, &mut control, &info, &["alice", "bob"]);
    exchange(&mut peers, &relay, "hello");
    let started = Instant::now();
    sigterm(&relay);
    match recv(&mut control, Duration::from_secs(2)) {
        Some(Message::Goodbye(g)) => assert_eq!(g.code, ErrorCode::Shutdown),
        other => panic!("expected goodbye, got {other:?}"),
    }
    let status = relay
        .wait_exit(Duration::from_secs(2))
        .expect("exited within 2 s of SIGTERM");
    assert!(status.success(), "{status:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(!relay.control.exists(), "the control socket is removed");
}

#[test]
fn a_second_relay_on_a_port_in_use_refuses_to_start() {
    let relay = Relay::start(2);
    let dir = relay.dir.join("second");
    std::fs::create_dir_all(&dir).unwrap();
    let mut second = std::process::Command::new(blindfold_tests::process::binary(
        "blindfold-relay",
        "blindfold-relay",
    ))
    .args(["--listen", &relay.udp.to_string(), "--workers", "2"])
    .arg("--control-socket")
    .arg(dir.join("control.sock"))
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .expect("running a second blindfold-relay");
    // It would otherwise share the port through SO_REUSEPORT and take some of the
    // first relay's flows.
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        if let Some(status) = second.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = second.kill();
            panic!("a second relay on {} started", relay.udp);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    second
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains("is in use"), "{stderr}");
    // The first relay is untouched: a call through it still carries media.
    let (mut control, info) = connect(&relay);
    let mut peers = call(&relay, &mut control, &info, &["alice", "bob"]);
    exchange(&mut peers, &relay, "after the second relay");
}

// ----- sessions across workers -----------------------------------------------------------

/// Sends `check` from `sock` (blocking) and waits up to `limit` for the relay's success
/// response to it; false if none came.
fn answered(sock: &UdpSocket, relay: &Relay, check: &[u8], limit: Duration) -> bool {
    let tid = StunMessage::parse(check).unwrap().transaction_id();
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    sock.send_to(check, relay.udp).unwrap();
    let deadline = Instant::now() + limit;
    let mut buf = [0u8; 1500];
    while Instant::now() < deadline {
        if let Ok((n, from)) = sock.recv_from(&mut buf)
            && from == relay.udp
            && let Ok(m) = StunMessage::parse(&buf[..n])
            && m.transaction_id() == tid
        {
            return m.class() == Class::SuccessResponse;
        }
    }
    false
}

/// Signaling sets up the conference and one session for `peer`, without connecting it.
fn configure(control: &mut ControlClient, peer: &Peer) {
    let conference = ConferenceSpec {
        conf_id: ConfId::new(CONF).unwrap(),
    };
    for body in [
        RequestBody::UpsertConference {
            generation: generation(),
            conference,
        },
        RequestBody::UpsertSession {
            generation: generation(),
            session: peer.spec.clone(),
        },
    ] {
        assert_eq!(control.request(body), Ok(ResponseBody::Ok));
    }
}

#[test]
fn checks_from_ten_addresses_of_one_session_are_all_answered_by_four_workers() {
    let relay = Relay::start(4);
    let (mut control, info) = connect(&relay);
    let peer = Peer::new(0, "alice", &info);
    configure(&mut control, &peer);
    let socks: Vec<UdpSocket> = (0..10)
        .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    for (k, sock) in socks.iter().enumerate() {
        // The first check claims the session for its worker; the others land wherever
        // the kernel hashes their addresses. One try each: loopback loses nothing.
        let check = ice_check(&peer.spec, k as u8 + 1, k == 0);
        assert!(
            answered(sock, &relay, &check, Duration::from_secs(2)),
            "check {k} from {} was not answered; relay log:\n{}",
            sock.local_addr().unwrap(),
            relay.log()
        );
    }
    // Not vacuous: the checks reached more than one worker (all ten on one worker has
    // a chance of 4^-9).
    let mut workers = 0;
    relay.wait_until(Duration::from_secs(5), "the checks to be counted", || {
        let per = relay.per_worker("blindfold_packets_received_total", None);
        workers = per.iter().filter(|&&n| n > 0).count();
        per.iter().sum::<u64>() >= 10
    });
    assert!(workers >= 2, "all checks reached one worker");
}

#[test]
fn a_participant_whose_address_moves_to_another_worker_keeps_sending_and_receiving() {
    let relay = Relay::start(4);
    let (mut control, info) = connect(&relay);
    let mut peers = call(&relay, &mut control, &info, &["alice", "bob"]);
    exchange(&mut peers, &relay, "before the move");

    // Alice's network changes: a new address, on another worker than her first.
    let home = relay.worker_of(peers[0].udp.link().socket());
    let moved = (0..40)
        .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
        .find(|s| relay.worker_of(s) != home)
        .expect("an address on another worker");
    // Her ICE agent nominates the new path (as after a network switch)...
    let check = ice_check(&peers[0].spec, 0x77, true);
    assert!(answered(&moved, &relay, &check, Duration::from_secs(2)));
    // ...and her media goes from it from now on.
    move_to(&mut peers[0], moved);
    exchange(&mut peers, &relay, "after the move");

    // SRTCP both ways: alice's keyframe request reaches bob (her SRTCP lands on the new
    // worker, the home decrypts it), bob's reaches alice at her new address.
    let (alice_thumb, bob_thumb) = (
        peers[0].p().ssrcs().thumbnail,
        peers[1].p().ssrcs().thumbnail,
    );
    peers[0]
        .p_mut()
        .request_keyframe(Instant::now(), bob_thumb)
        .unwrap();
    peers[1]
        .p_mut()
        .request_keyframe(Instant::now(), alice_thumb)
        .unwrap();
    let asked = |p: &Peer, ssrc| {
        p.events
            .iter()
            .any(|e| matches!(e, PEvent::KeyframeRequested(s) if *s == ssrc))
    };
    drive(
        &mut peers,
        &relay,
        Duration::from_secs(5),
        "keyframe requests across the move",
        |ps| asked(&ps[1], bob_thumb) && asked(&ps[0], alice_thumb),
    );
    assert_none_closed(&control.poll_notifications(Duration::from_millis(100)));
}

/// Alice's NAT rebinds mid-call: her datagrams leave from a new port, and what the
/// relay sends to the old one is lost. Nobody tells her: she notices that the relay
/// fell silent, learns her new address from its answer to a consent check, and
/// nominates it; the relay moves her media there, and media flows both ways again,
/// without a new handshake.
#[test]
fn a_participant_whose_nat_rebinds_gets_its_media_back_by_itself() {
    let relay = Relay::start(2);
    let (mut control, info) = connect(&relay);
    let mut peers = call(&relay, &mut control, &info, &["alice", "bob"]);
    exchange(&mut peers, &relay, "before the rebinding");

    let new_addr = move_to(&mut peers[0], UdpSocket::bind("127.0.0.1:0").unwrap());
    let rebound = Instant::now();
    drive_talking(&mut peers, &relay, "alice's new address", |ps| {
        ps[0].events.contains(&PEvent::AddressChanged(new_addr))
    });
    let noticed = rebound.elapsed();
    exchange(&mut peers, &relay, "after the rebinding");
    let back = rebound.elapsed();
    eprintln!(
        "alice noticed her new address {noticed:?} after the rebinding; media back both \
         ways {back:?} after it"
    );
    // Her last SRTCP came at most a second before the rebinding (the relay's keepalive),
    // her check goes 2 s after it; a reconnect would have taken 5 s of silence.
    assert!(noticed < Duration::from_secs(4), "{noticed:?}");
    assert!(back < Duration::from_secs(5), "{back:?}");
    assert!(!peers[0].events.contains(&PEvent::Reconnecting));
    relay.wait_until(Duration::from_secs(2), "the media move counted", || {
        relay.metric("blindfold_media_moves_total") == 1
    });
    assert_eq!(relay.metric("blindfold_dtls_rehandshakes_total"), 0);
    assert_none_closed(&control.poll_notifications(Duration::from_millis(100)));
}

/// `peer`'s datagrams leave from `socket` from now on, its old one closed (a new
/// network, or a NAT that rebound); returns its new address.
fn move_to(peer: &mut Peer, socket: UdpSocket) -> SocketAddr {
    socket.set_nonblocking(true).unwrap();
    let addr = socket.local_addr().unwrap();
    peer.udp.link_mut().replace_socket(socket).unwrap();
    addr
}

/// No session was closed, by what signaling heard.
fn assert_none_closed(notes: &[NotificationBody]) {
    assert!(
        !notes
            .iter()
            .any(|n| matches!(n, NotificationBody::SessionClosed { .. })),
        "{notes:?}"
    );
}

/// Drives `peers` until `done`, every connected one sending audio every 100 ms (a short
/// consent timeout must not end them meanwhile). Panics after 15 s.
fn drive_talking(
    peers: &mut [Peer],
    relay: &Relay,
    what: &str,
    mut done: impl FnMut(&[Peer]) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !done(peers) {
        assert!(Instant::now() < deadline, "timed out: {what}");
        for p in peers.iter_mut().filter(|p| p.p().is_connected()) {
            p.send_audio(b"still here");
        }
        let until = Instant::now() + Duration::from_millis(100);
        drive(peers, relay, Duration::from_secs(2), what, |_| {
            Instant::now() >= until
        });
    }
}

/// Keeps `peers` talking until signaling hears that `gone` was closed because its
/// consent expired (it went silent).
fn await_consent_expired(
    control: &mut ControlClient,
    peers: &mut [Peer],
    relay: &Relay,
    gone: &SessionId,
) {
    let mut notes = Vec::new();
    drive_talking(peers, relay, "session_closed", |_| {
        notes.extend(control.poll_notifications(Duration::from_millis(1)));
        notes.iter().any(|n| {
            matches!(n, NotificationBody::SessionClosed { session_id, reason }
                if session_id == gone && *reason == EndReason::ConsentExpired)
        })
    });
}

/// Keeps `peers` talking until the last one is connected.
fn await_last_connected(peers: &mut [Peer], relay: &Relay) {
    drive_talking(peers, relay, "the last participant connected", |ps| {
        ps.last().is_some_and(|p| p.p().is_connected())
    });
}

fn stats(control: &mut ControlClient) -> (u64, u64) {
    match control.request(RequestBody::GetStats) {
        Ok(ResponseBody::Stats(s)) => (s.sessions, s.connected_sessions),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_session_whose_consent_expired_is_gone_until_signaling_brings_it_back() {
    let relay = Relay::start_with(4, &["--consent-timeout", "2"]);
    let (mut control, info) = connect(&relay);
    let mut peers = call(&relay, &mut control, &info, &["alice", "bob"]);
    exchange(&mut peers, &relay, "hello");
    // Stamp alice's session with a generation this test knows (same spec: no change).
    let g = generation();
    let upsert_alice = RequestBody::UpsertSession {
        generation: g,
        session: peers[0].spec.clone(),
    };
    assert_eq!(control.request(upsert_alice.clone()), Ok(ResponseBody::Ok));
    let alice = peers.remove(0);
    let id = alice.spec.session_id.clone();
    drop(alice);

    // Alice goes silent; bob keeps talking.
    await_consent_expired(&mut control, &mut peers, &relay, &id);
    assert_eq!(stats(&mut control), (1, 1), "only bob is left");
    let subscribe = RequestBody::SetSubscription {
        generation: generation(),
        subscription: SubscriptionSpec {
            session_id: id.clone(),
            full: FullSet::All,
        },
    };
    assert_eq!(
        control.request(subscribe).unwrap_err().code,
        ErrorCode::NotFound
    );

    // The same upsert again (a retransmission) creates it anew; alice reconnects.
    assert_eq!(control.request(upsert_alice), Ok(ResponseBody::Ok));
    assert_eq!(stats(&mut control), (2, 1));
    peers.push(Peer::new(0, "alice", &info));
    await_last_connected(&mut peers, &relay);
    await_connected(&mut control, 1);
    assert_eq!(stats(&mut control), (2, 2));

    // Silent again, gone again. A snapshot that still lists her (a signaling that
    // missed the close) leaves her closed and says so again; her upsert at the
    // snapshot's generation then creates her anew.
    let alice = peers.pop().unwrap();
    drop(alice);
    await_consent_expired(&mut control, &mut peers, &relay, &id);
    assert_eq!(stats(&mut control), (1, 1));
    let g = generation();
    let alice_spec = Peer::new(0, "alice", &info).spec;
    let snapshot = Snapshot {
        generation: g,
        conferences: vec![ConferenceSpec {
            conf_id: ConfId::new(CONF).unwrap(),
        }],
        sessions: vec![peers[0].spec.clone(), alice_spec.clone()],
        subscriptions: Vec::new(),
    };
    assert_eq!(
        control.request(RequestBody::Snapshot(snapshot)),
        Ok(ResponseBody::Ok)
    );
    await_consent_expired(&mut control, &mut peers, &relay, &id);
    assert_eq!(stats(&mut control).0, 1, "not created anew");
    let upsert = RequestBody::UpsertSession {
        generation: g,
        session: alice_spec,
    };
    assert_eq!(control.request(upsert), Ok(ResponseBody::Ok));
    assert_eq!(stats(&mut control).0, 2);
    peers.push(Peer::new(0, "alice", &info));
    await_last_connected(&mut peers, &relay);
}

#[test]
fn a_participant_whose_certificate_does_not_match_is_told_at_once() {
    let relay = Relay::start(2);
    let (mut control, info) = connect(&relay);
    let mut peer = Peer::new(0, "mallory", &info);
    // Signaling pinned another certificate than the one the participant presents.
    peer.spec.dtls_fingerprint = DtlsCert::generate().unwrap().fingerprint().into();
    configure(&mut control, &peer);
    let started = Instant::now();
    let mut peers = [peer];
    // The relay's fatal alert ends the participant's handshake; without it the
    // participant would wait for its own handshake timeout (tens of seconds).
    drive(
        &mut peers,
        &relay,
        Duration::from_secs(3),
        "the participant to fail",
        |ps| ps[0].p().is_failed(),
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(!peers[0].p().is_connected());
    let notes = control.poll_notifications(Duration::from_secs(2));
    assert!(
        notes.iter().any(|n| matches!(
            n,
            NotificationBody::SessionFailed {
                reason: EndReason::FingerprintMismatch,
                ..
            }
        )),
        "{notes:?}"
    );
}

#[test]
fn a_check_sent_right_after_ok_is_answered_whatever_worker_gets_it() {
    let relay = Relay::start(4);
    let (mut control, info) = connect(&relay);
    let conference = ConferenceSpec {
        conf_id: ConfId::new(CONF).unwrap(),
    };
    assert_eq!(
        control.request(RequestBody::UpsertConference {
            generation: generation(),
            conference,
        }),
        Ok(ResponseBody::Ok)
    );
    // `ok` means applied on every worker: the very first check, from an address that
    // lands on any of them, finds the session. One try each.
    for i in 0..20 {
        let peer = Peer::new(i, &format!("p{i}"), &info);
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        assert_eq!(
            control.request(RequestBody::UpsertSession {
                generation: generation(),
                session: peer.spec.clone(),
            }),
            Ok(ResponseBody::Ok)
        );
        let check = ice_check(&peer.spec, i as u8, true);
        assert!(
            answered(&sock, &relay, &check, Duration::from_secs(1)),
            "try {i}: the check right after ok was not answered"
        );
    }
    relay.wait_until(Duration::from_secs(5), "the checks to be counted", || {
        relay.metric("blindfold_packets_received_total") >= 20
    });
    assert_eq!(
        relay.metric("blindfold_drops_total{reason=\"stun_unknown_ufrag\"}"),
        0
    );
}

#[test]
fn every_metric_is_exported_and_listed_in_the_readme() {
    let relay = Relay::start(2);
    // The metrics server starts after the control socket appears.
    relay.wait_until(Duration::from_secs(5), "the metrics server", || {
        std::net::TcpStream::connect(relay.metrics).is_ok()
    });
    let text = relay.scrape();
    let readme = include_str!("../../README.md");
    let mut names: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    names.sort_unstable();
    names.dedup();
    // Engine counters that were kept but never exported are there now.
    for wanted in [
        "blindfold_rtp_forwarded_total",
        "blindfold_sender_reports_forwarded_total",
        "blindfold_keyframe_requests_sent_total",
        "blindfold_keyframe_requests_throttled_total",
        "blindfold_rtcp_packets_ignored_total",
        "blindfold_rtcp_packets_dropped_total",
        "blindfold_control_overloaded_total",
    ] {
        assert!(names.contains(&wanted), "{wanted} not exported:\n{text}");
    }
    for name in &names {
        assert!(readme.contains(name), "{name} is not in the README");
    }
    // And every drop reason label.
    for line in text
        .lines()
        .filter(|l| l.starts_with("blindfold_drops_total{"))
    {
        let reason = line
            .split("reason=\"")
            .nth(1)
            .and_then(|r| r.split('"').next());
        let reason = reason.expect("a reason label");
        assert!(
            readme.contains(&format!("`{reason}`")),
            "drop reason {reason} is not in the README"
        );
    }
}
