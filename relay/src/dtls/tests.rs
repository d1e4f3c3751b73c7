//! In-process handshakes against the relay's server: a dimpl client (its own cert) and an
//! OpenSSL client, datagrams shuttled in memory, time simulated.

// Tests choose an arbitrary base instant; everything after it is simulated.
#![allow(clippy::disallowed_methods)]

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use super::*;
use crate::srtp::test_util::hex;

const HANDSHAKE: u8 = 22;
const CHANGE_CIPHER_SPEC: u8 = 20;
const HELLO_VERIFY_REQUEST: u8 = 3;
const SERVER_HELLO: u8 = 2;

fn config() -> &'static DtlsConfig {
    static C: OnceLock<DtlsConfig> = OnceLock::new();
    C.get_or_init(|| {
        DtlsConfig::new(DtlsSettings {
            insecure_rng_seed: Some(7),
            ..DtlsSettings::default()
        })
        .unwrap()
    })
}

fn relay_cert() -> &'static DtlsCert {
    static C: OnceLock<DtlsCert> = OnceLock::new();
    C.get_or_init(|| DtlsCert::generate().unwrap())
}

/// Handshake message types of every handshake record in a datagram (epoch 0 only, the
/// others are encrypted).
fn handshake_types(d: &[u8]) -> Vec<u8> {
    record_types(d)
        .into_iter()
        .filter(|&(ct, epoch, _)| ct == HANDSHAKE && epoch == 0)
        .map(|(_, _, first)| first)
        .collect()
}

/// (content type, epoch, first body byte) of each record.
fn record_types(d: &[u8]) -> Vec<(u8, u16, u8)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i + 13 <= d.len() {
        let len = u16::from_be_bytes([d[i + 11], d[i + 12]]) as usize;
        let epoch = u16::from_be_bytes([d[i + 3], d[i + 4]]);
        out.push((d[i], epoch, d.get(i + 13).copied().unwrap_or(0)));
        i += 13 + len;
    }
    out
}

/// Record boundaries (offsets where a record ends) in a datagram.
fn record_ends(d: &[u8]) -> Vec<usize> {
    let mut out = Vec::new();
    let mut i = 0;
    while i + 13 <= d.len() {
        i += 13 + u16::from_be_bytes([d[i + 11], d[i + 12]]) as usize;
        out.push(i);
    }
    out
}

/// A datagram holding one whole ClientHello record, sent instead as fragments of at
/// most `size` bytes, one record and datagram each (RFC 6347 §4.2.3), in a shuffled
/// order: the last fragment first, then the others, then the first one again.
fn fragmented(hello: &[u8], size: usize) -> Vec<Vec<u8>> {
    let (record, rest) = hello.split_at(13);
    let (handshake, message) = rest.split_at(12);
    assert_eq!(record_ends(hello), [hello.len()], "one record");
    let u24 = |n: usize| [(n >> 16) as u8, (n >> 8) as u8, n as u8];
    let mut out: Vec<Vec<u8>> = message
        .chunks(size)
        .enumerate()
        .map(|(i, chunk)| {
            let mut d = record[..11].to_vec();
            d.extend_from_slice(&((12 + chunk.len()) as u16).to_be_bytes());
            d.extend_from_slice(&handshake[..6]);
            d.extend_from_slice(&u24(i * size));
            d.extend_from_slice(&u24(chunk.len()));
            d.extend_from_slice(chunk);
            d
        })
        .collect();
    assert!(
        out.len() > 1,
        "a ClientHello of {} bytes in one piece",
        message.len()
    );
    out.rotate_right(1);
    out.push(out[1].clone());
    out
}

/// The two datagrams of Chromium's first ClientHello (testdata: 1413 bytes, in
/// fragments of 1175 and 238).
fn chromium_client_hello() -> Vec<Vec<u8>> {
    include_str!("../../testdata/chromium-client-hello.txt")
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(hex)
        .collect()
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Dir {
    ToServer,
    ToClient,
}

type DropFn = Box<dyn FnMut(Dir, usize, &[u8]) -> bool>;

/// A dimpl client and our server, wired back to back.
struct Pair {
    now: Instant,
    server: DtlsSession,
    client: dimpl::Dtls,
    client_timeout: Option<Instant>,
    client_connected: bool,
    client_peer_cert: Option<Vec<u8>>,
    client_keys: Option<(Vec<u8>, dimpl::SrtpProfile)>,
    server_events: Vec<DtlsEvent>,
    /// Every datagram the server sent, in order.
    server_sent: Vec<Vec<u8>>,
    /// Every datagram the client sent, in order.
    client_sent: Vec<Vec<u8>>,
    /// Return true to drop the n-th datagram in that direction.
    drop: DropFn,
    /// Send each ClientHello in fragments of at most this many bytes, as a browser
    /// sends one too large for a datagram ([`fragmented`]).
    split_hellos: Option<usize>,
    to_server: VecDeque<Vec<u8>>,
    to_client: VecDeque<Vec<u8>>,
}

impl Pair {
    fn new(expected: Fingerprint) -> (Self, DtlsCert) {
        let client_cert = DtlsCert::generate().unwrap();
        let now = Instant::now();
        let server = DtlsSession::server(config(), relay_cert(), expected, now);
        let client_cfg = Arc::new(dimpl::Config::default());
        let mut client = dimpl::Dtls::new_12(client_cfg, client_cert.inner.clone(), now);
        client.set_active(true);
        let pair = Pair {
            now,
            server,
            client,
            client_timeout: None,
            client_connected: false,
            client_peer_cert: None,
            client_keys: None,
            server_events: Vec::new(),
            server_sent: Vec::new(),
            client_sent: Vec::new(),
            drop: Box::new(|_, _, _| false),
            split_hellos: None,
            to_server: VecDeque::new(),
            to_client: VecDeque::new(),
        };
        (pair, client_cert)
    }

    /// With the client's own fingerprint expected.
    fn matching() -> Self {
        // The client cert is generated in `new`, so build once to learn it, then swap
        // the server for one expecting it.
        let (mut p, cc) = Pair::new(Fingerprint([0; 32]));
        p.server = DtlsSession::server(config(), relay_cert(), cc.fingerprint(), p.now);
        p
    }

    fn drain_client(&mut self) {
        let mut buf = vec![0u8; 4096];
        loop {
            match self.client.poll_output(&mut buf) {
                dimpl::Output::Packet(p) => {
                    let n = self.client_sent.len();
                    self.client_sent.push(p.to_vec());
                    if (self.drop)(Dir::ToServer, n, p) {
                        continue;
                    }
                    match self.split_hellos {
                        Some(size) if is_client_hello(p) => {
                            self.to_server.extend(fragmented(p, size));
                        }
                        _ => self.to_server.push_back(p.to_vec()),
                    }
                }
                dimpl::Output::Timeout(t) => {
                    self.client_timeout = Some(t);
                    break;
                }
                dimpl::Output::Connected => self.client_connected = true,
                dimpl::Output::PeerCert(c) => self.client_peer_cert = Some(c.to_vec()),
                dimpl::Output::KeyingMaterial(km, prof) => {
                    self.client_keys = Some((km.to_vec(), prof));
                }
                dimpl::Output::BufferTooSmall { needed } => buf.resize(needed, 0),
                _ => {}
            }
        }
    }

    fn drain_server(&mut self) {
        while let Some(p) = self.server.poll_transmit() {
            let p = p.to_vec();
            let n = self.server_sent.len();
            if !(self.drop)(Dir::ToClient, n, &p) {
                self.to_client.push_back(p.clone());
            }
            self.server_sent.push(p);
        }
        while let Some(e) = self.server.poll_event() {
            self.server_events.push(e);
        }
    }

    /// One round: deliver everything in flight, then if nothing moved, jump to the
    /// earliest timer. Returns false when there is nothing left to do.
    fn step(&mut self) -> bool {
        // The client may give up (timeout tests); it then stays silent.
        let _ = self.client.handle_timeout(self.now);
        self.drain_client();
        let mut moved = false;
        while let Some(d) = self.to_server.pop_front() {
            moved = true;
            let _ = self.server.handle_datagram(self.now, &d);
            self.drain_server();
        }
        while let Some(d) = self.to_client.pop_front() {
            moved = true;
            // The client dies if the server goes silent; that is fine in the tests.
            let _ = self.client.handle_packet(&d);
            self.drain_client();
        }
        self.drain_server();
        if moved {
            return true;
        }
        let next = [self.server.poll_timeout(), self.client_timeout]
            .into_iter()
            .flatten()
            .filter(|&t| t > self.now)
            .min();
        match next {
            Some(t) if t - self.now < Duration::from_secs(120) => {
                self.now = t;
                self.server.handle_timeout(self.now);
                self.drain_server();
                true
            }
            _ => false,
        }
    }

    fn run(&mut self) {
        for _ in 0..500 {
            if (self.client_connected && self.server.is_connected()) || self.server.is_failed() {
                // One more round so any last flight is delivered.
                self.step();
                return;
            }
            if !self.step() {
                return;
            }
        }
        panic!("handshake did not settle");
    }

    fn server_keys(&self) -> Option<&SrtpKeyMaterial> {
        self.server_events.iter().find_map(|e| match e {
            DtlsEvent::Connected(k) => Some(k),
            _ => None,
        })
    }
}

fn join(k: &SrtpKeyMaterial) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(k.client_master.key());
    v.extend_from_slice(k.server_master.key());
    v.extend_from_slice(k.client_master.salt());
    v.extend_from_slice(k.server_master.salt());
    v
}

#[test]
fn handshake_with_dimpl_client_exports_same_keys_aes256gcm() {
    let mut p = Pair::matching();
    p.run();
    assert!(p.client_connected, "client connected");
    assert!(p.server.is_connected());
    let keys = p.server_keys().expect("Connected event").clone();
    assert_eq!(keys.profile, DtlsSrtpProfile::AeadAes256Gcm);
    assert_eq!(keys.client_master.key().len(), 32);
    assert_eq!(keys.client_master.salt().len(), 12);
    assert_eq!(keys.server_master.key_salt().len(), 44);
    assert_ne!(keys.client_master, keys.server_master);
    let (client_km, client_profile) = p.client_keys.clone().expect("client keys");
    assert_eq!(client_profile, dimpl::SrtpProfile::AEAD_AES_256_GCM);
    assert_eq!(join(&keys), client_km, "both ends export the same material");
    // The client saw the relay's certificate, whose fingerprint goes in the SDP answer.
    let seen = p.client_peer_cert.clone().unwrap();
    assert_eq!(Fingerprint::of_der(&seen), relay_cert().fingerprint());
    // Exactly one event.
    assert_eq!(p.server_events.len(), 1);
    assert!(p.server.poll_timeout().is_some());
}

#[test]
fn first_server_flight_is_hello_verify_request() {
    let mut p = Pair::matching();
    assert!(p.server.awaiting_client_hello());
    p.run();
    assert!(p.server.is_connected());
    assert!(!p.server.awaiting_client_hello());
    let first = &p.server_sent[0];
    assert_eq!(first[0], HANDSHAKE);
    assert_eq!(handshake_types(first), vec![HELLO_VERIFY_REQUEST]);
    // The client sent two ClientHellos: without and with the cookie.
    let hellos = p
        .client_sent
        .iter()
        .filter(|d| handshake_types(d).first() == Some(&1))
        .count();
    assert_eq!(hellos, 2);
    // The next flight opens with ServerHello.
    assert_eq!(
        handshake_types(&p.server_sent[1]).first(),
        Some(&SERVER_HELLO)
    );
}

/// A ClientHello whose HelloVerifyRequest nobody answers (someone else's address was
/// on it) leaves the server waiting for one that carries the cookie.
#[test]
fn a_client_hello_without_the_cookie_leaves_the_server_waiting() {
    let now = Instant::now();
    let mut server = DtlsSession::server(config(), relay_cert(), Fingerprint([0; 32]), now);
    let cert = DtlsCert::generate().unwrap();
    let mut client = DtlsSession::client(config(), &cert, relay_cert().fingerprint(), now);
    let hello = client.poll_transmit().unwrap().to_vec();
    server.handle_datagram(now, &hello).unwrap();
    let answer = server.poll_transmit().unwrap().to_vec();
    assert_eq!(handshake_types(&answer), vec![HELLO_VERIFY_REQUEST]);
    assert!(server.awaiting_client_hello());
    // The same ClientHello again (a retransmission, or a replay) changes nothing.
    server.handle_datagram(now, &hello).unwrap();
    assert!(server.awaiting_client_hello());
    // A client never waits for one.
    assert!(!client.awaiting_client_hello());
}

#[test]
fn fingerprint_mismatch_fails_and_releases_nothing() {
    let other = DtlsCert::generate().unwrap();
    let (mut p, _client_cert) = Pair::new(other.fingerprint());
    p.run();
    assert!(p.server.is_failed());
    assert_eq!(
        p.server_events,
        vec![DtlsEvent::Failed(DtlsError::FingerprintMismatch)]
    );
    assert!(!p.client_connected, "client must not complete");
    assert!(p.client_keys.is_none());
    // The server never sent its ChangeCipherSpec/Finished flight.
    for d in &p.server_sent {
        for (ct, epoch, _) in record_types(d) {
            assert_ne!(ct, CHANGE_CIPHER_SPEC);
            assert_eq!(epoch, 0);
        }
    }
    // Its last word is a fatal bad_certificate alert, which the client takes.
    let alert = p.server_sent.last().unwrap();
    assert_eq!(record_types(alert), vec![(21, 0, 2)]);
    assert_eq!(alert[alert.len() - 2..], [2, 42]);
    let mut fresh = Pair::matching();
    fresh.step();
    fresh.step();
    assert!(
        matches!(
            fresh.client.handle_packet(alert),
            Err(dimpl::Error::SecurityError(_))
        ),
        "a dimpl client mid-handshake fails on the alert at once"
    );
    // Dead: further datagrams are refused, no timer.
    assert_eq!(p.server.poll_timeout(), None);
    let ch = p.client_sent[0].clone();
    assert_eq!(
        p.server.handle_datagram(p.now, &ch),
        Err(DtlsError::Inactive)
    );
    assert!(p.server.poll_event().is_none());
}

#[test]
fn lost_server_flight_is_retransmitted() {
    let (mut p, cc) = Pair::new(Fingerprint([0; 32]));
    p.server = DtlsSession::server(config(), relay_cert(), cc.fingerprint(), p.now);
    let start = p.now;
    // Drop the first datagram of the ServerHello flight.
    let mut dropped = false;
    p.drop = Box::new(move |dir, _, d| {
        if dir == Dir::ToClient && handshake_types(d).first() == Some(&SERVER_HELLO) && !dropped {
            dropped = true;
            return true;
        }
        false
    });
    p.run();
    assert!(p.server.is_connected() && p.client_connected);
    let server_hellos = p
        .server_sent
        .iter()
        .filter(|d| handshake_types(d).first() == Some(&SERVER_HELLO))
        .count();
    assert!(server_hellos >= 2, "ServerHello flight resent");
    assert!(
        p.now - start >= Duration::from_millis(700),
        "resent only after a timeout ({:?})",
        p.now - start
    );
    assert_eq!(
        join(p.server_keys().unwrap()),
        p.client_keys.clone().unwrap().0
    );
}

#[test]
fn lost_client_flight_is_recovered() {
    let mut p = Pair::matching();
    // Drop the client's first flight-5 datagram (the one carrying its Certificate).
    let mut dropped = false;
    p.drop = Box::new(move |dir, n, _| {
        if dir == Dir::ToServer && n == 2 && !dropped {
            dropped = true;
            return true;
        }
        false
    });
    let start = p.now;
    p.run();
    assert!(p.server.is_connected() && p.client_connected);
    assert!(p.now - start >= Duration::from_millis(700));
    assert_eq!(
        join(p.server_keys().unwrap()),
        p.client_keys.clone().unwrap().0
    );
}

#[test]
fn handshake_timeout_fails_session() {
    let mut p = Pair::matching();
    // The server never hears anything after the first ClientHello answer.
    p.drop = Box::new(|dir, n, _| dir == Dir::ToServer && n >= 1);
    for _ in 0..200 {
        if !p.step() || p.server.is_failed() {
            break;
        }
    }
    // The server answered the first ClientHello with a HelloVerifyRequest and has no
    // flight of its own outstanding, but that ClientHello started dimpl's 40 s
    // handshake deadline.
    assert_eq!(
        p.server_events,
        vec![DtlsEvent::Failed(DtlsError::Handshake(
            HandshakeFailure::Timeout
        ))]
    );

    // Now a client whose flight 5 never arrives: the server's flight-4 timer runs out.
    let mut p = Pair::matching();
    p.drop = Box::new(|dir, n, _| dir == Dir::ToServer && n >= 2);
    for _ in 0..500 {
        if !p.step() || p.server.is_failed() {
            break;
        }
    }
    assert!(p.server.is_failed());
    match p.server_events.as_slice() {
        [DtlsEvent::Failed(DtlsError::Handshake(HandshakeFailure::Timeout))] => {}
        other => panic!("expected a timeout failure, got {other:?}"),
    }
}

#[test]
fn truncated_and_garbage_datagrams_are_errors_not_panics() {
    let mut p = Pair::matching();
    // Run the handshake once to collect real datagrams of every flight.
    p.run();
    assert!(p.server.is_connected());
    let client_sent = p.client_sent.clone();

    let mut fresh = Pair::matching();
    for d in &client_sent {
        let ends = record_ends(d);
        for len in 0..d.len() {
            let r = fresh.server.handle_datagram(fresh.now, &d[..len]);
            if ends.contains(&len) {
                // A whole number of records: framing is fine, dimpl decides.
                continue;
            }
            let e = r.expect_err("truncated datagram accepted");
            assert!(!e.is_fatal(), "truncation killed the session: {e:?}");
        }
    }
    assert!(!fresh.server.is_failed());

    // Pseudo-random garbage at every length, raw and behind a plausible record header.
    // Raw garbage never frames, so it is always a non-fatal drop. Well-framed junk
    // is dropped by the pre-ServerHello filter or silently by dimpl. (Were the session
    // to die anyway, start over with a fresh server and count it.)
    let mut x: u32 = 0x1234_5678;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        x as u8
    };
    let mut fresh = Pair::matching();
    let mut deaths = 0;
    for len in 0..600usize {
        let mut g: Vec<u8> = (0..len).map(|_| rnd()).collect();
        g[..len.min(1)].fill(0x40); // not a DTLS content type
        let e = fresh.server.handle_datagram(fresh.now, &g).unwrap_err();
        assert!(!e.is_fatal(), "raw garbage {e:?}");
        if len >= 13 {
            g[0] = 20 + rnd() % 4;
            g[1] = 0xfe;
            g[2] = 0xfd;
            g[3] = 0;
            g[4] = rnd() % 2;
            let body = (len - 13) as u16;
            g[11..13].copy_from_slice(&body.to_be_bytes());
            match fresh.server.handle_datagram(fresh.now, &g) {
                Ok(()) => {}
                Err(DtlsError::Handshake(_)) => {
                    deaths += 1;
                    fresh.drain_server();
                    assert!(matches!(
                        fresh.server_events.as_slice(),
                        [DtlsEvent::Failed(DtlsError::Handshake(_))]
                    ));
                    fresh = Pair::matching();
                }
                Err(DtlsError::NotClientHello) => {}
                Err(e) => panic!("framed junk gave {e:?}"),
            }
        }
        fresh.drain_server();
        assert!(!fresh.server.is_connected());
    }
    assert_eq!(deaths, 0, "sessions killed by junk records");
    assert_eq!(
        fresh.server.handle_datagram(fresh.now, &[]),
        Err(DtlsError::Empty)
    );
    assert_eq!(
        fresh.server.handle_datagram(fresh.now, &[0x30; 20]),
        Err(DtlsError::BadContentType(0x30))
    );
    let mut bad_version = client_sent[0].clone();
    bad_version[2] = 0xfc;
    assert_eq!(
        fresh.server.handle_datagram(fresh.now, &bad_version),
        Err(DtlsError::BadRecordVersion(0xfefc))
    );
    // A garbage-fed server still completes a real handshake.
    fresh.run();
    assert!(fresh.server.is_connected() && fresh.client_connected);
}

/// dimpl buffers up to 30 records it cannot use yet, and overflowing that queue is a
/// fatal error. Before our ServerHello only ClientHello is useful, so the wrapper drops
/// everything else itself: a flood of junk change_cipher_spec records (which would fill
/// the queue) does not end the session.
#[test]
fn junk_before_server_hello_does_not_fill_dimpl_queue() {
    let mut p = Pair::matching();
    for seq in 0..100u8 {
        let r = [20, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, seq, 0, 1, 1];
        assert_eq!(
            p.server.handle_datagram(p.now, &r),
            Err(DtlsError::NotClientHello)
        );
        // ClientHello fragments, which dimpl would also hold on to, are put together
        // by the wrapper (this one never completes).
        let mut ch = vec![22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 1, seq, 0, 14];
        ch.extend_from_slice(&[1, 0, 0, 200, 0, seq % 2, 0, 0, seq, 0, 0, 2, 0xaa, 0xbb]);
        assert_eq!(p.server.handle_datagram(p.now, &ch), Ok(()));
        // A fragment that runs past its message's end is not one.
        ch[21..24].copy_from_slice(&[0, 0, 199]);
        assert_eq!(
            p.server.handle_datagram(p.now, &ch),
            Err(DtlsError::NotClientHello)
        );
        // Whole ClientHellos with a junk body reach dimpl, which discards them.
        let mut ch = vec![22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 2, seq, 0, 14];
        ch.extend_from_slice(&[1, 0, 0, 2, 0, seq % 2, 0, 0, 0, 0, 0, 2, 0xaa, seq]);
        assert_eq!(p.server.handle_datagram(p.now, &ch), Ok(()));
        // A later message_seq would be held for reordering: dropped.
        ch[18] = 2 + seq % 10;
        assert_eq!(
            p.server.handle_datagram(p.now, &ch),
            Err(DtlsError::NotClientHello)
        );
    }
    p.run();
    assert!(p.server.is_connected() && p.client_connected);
}

/// A ClientHello too large for one datagram comes in fragments, in any order and
/// repeated; the wrapper puts it together and the handshake completes. Stray fragments
/// that never complete, of either message_seq, hold up neither ClientHello.
#[test]
fn a_fragmented_client_hello_completes_the_handshake() {
    let mut p = Pair::matching();
    p.split_hellos = Some(50);
    for seq in [1, 0] {
        let mut stray = vec![22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 9, 0, 14];
        stray.extend_from_slice(&[1, 0, 1, 44, 0, seq, 0, 0, 0, 0, 0, 2, 0xaa, 0xbb]);
        assert_eq!(p.server.handle_datagram(p.now, &stray), Ok(()));
    }
    p.run();
    assert!(p.server.is_connected() && p.client_connected);
    // Both ClientHellos (before and after the HelloVerifyRequest) went in fragments.
    let hellos = p.client_sent.iter().filter(|d| is_client_hello(d)).count();
    assert_eq!(hellos, 2);
    assert_eq!(p.server_keys().map(join), p.client_keys.map(|(k, _)| k));
}

/// Chromium's real ClientHello (two fragments, an X25519MLKEM768 key share offered)
/// gets the HelloVerifyRequest, whichever fragment comes first; either fragment alone
/// gets nothing.
#[test]
fn chromium_fragmented_client_hello_is_answered() {
    let hello = chromium_client_hello();
    assert_eq!(hello.len(), 2);
    for order in [[0, 1], [1, 0]] {
        let now = Instant::now();
        let mut server = DtlsSession::server(config(), relay_cert(), Fingerprint([0; 32]), now);
        assert!(hello.iter().all(|d| is_client_hello(d)));
        assert_eq!(server.handle_datagram(now, &hello[order[0]]), Ok(()));
        assert!(
            server.poll_transmit().is_none(),
            "answered half a ClientHello"
        );
        assert_eq!(server.handle_datagram(now, &hello[order[1]]), Ok(()));
        let answer = server.poll_transmit().expect("an answer").to_vec();
        assert_eq!(handshake_types(&answer), [HELLO_VERIFY_REQUEST]);
    }
}

#[test]
fn junk_after_connect_is_discarded() {
    let mut p = Pair::matching();
    p.run();
    assert!(p.server.is_connected());
    for seq in 0..100u8 {
        for (ct, epoch) in [(20u8, 0u8), (22, 0), (23, 1), (22, 1), (21, 1), (23, 2)] {
            let r = [
                ct, 0xfe, 0xfd, 0, epoch, 0, 0, 0, 0, 0x10, seq, 0, 3, 1, 2, 3,
            ];
            let _ = p.server.handle_datagram(p.now, &r);
        }
    }
    assert!(p.server.is_connected(), "{:?}", p.server_events);
    p.drain_server();
    assert_eq!(p.server_events.len(), 1);
}

#[test]
fn truncated_client_hello_then_real_one_still_connects() {
    let mut p = Pair::matching();
    p.client.handle_timeout(p.now).unwrap();
    p.drain_client();
    let ch = p.to_server.front().cloned().unwrap();
    assert_eq!(record_ends(&ch), vec![ch.len()], "one record");
    for len in 0..ch.len() {
        assert!(p.server.handle_datagram(p.now, &ch[..len]).is_err());
    }
    p.drain_server();
    assert!(p.server_sent.is_empty(), "no answer to truncated hellos");
    p.run();
    assert!(p.server.is_connected() && p.client_connected);
}

#[test]
fn time_going_backwards_is_ignored() {
    let mut p = Pair::matching();
    p.client.handle_timeout(p.now).unwrap();
    p.drain_client();
    let ch = p.to_server.pop_front().unwrap();
    let earlier = p.now.checked_sub(Duration::from_secs(5)).unwrap_or(p.now);
    p.server.handle_timeout(earlier);
    assert!(p.server.handle_datagram(earlier, &ch).is_ok());
    p.drain_server();
    assert_eq!(
        handshake_types(&p.server_sent[0]),
        vec![HELLO_VERIFY_REQUEST]
    );
    p.run();
    assert!(p.server.is_connected());
}

#[test]
fn close_sends_close_notify_and_ends_session() {
    let mut p = Pair::matching();
    p.run();
    assert!(p.server.is_connected());
    p.server.close();
    let mut sent = Vec::new();
    while let Some(d) = p.server.poll_transmit() {
        sent.push(d.to_vec());
    }
    assert_eq!(sent.len(), 1, "one close_notify record");
    assert!(p.server.is_failed());
    assert!(p.server.poll_event().is_none());
    assert_eq!(p.server.poll_timeout(), None);
}

#[test]
fn peer_close_notify_is_reported() {
    let mut p = Pair::matching();
    p.run();
    p.client.close().unwrap();
    p.drain_client();
    p.step();
    assert!(p.server.is_failed());
    assert_eq!(
        p.server_events.last(),
        Some(&DtlsEvent::Failed(DtlsError::PeerClosed))
    );
}

#[test]
fn application_data_is_counted_and_dropped() {
    let mut p = Pair::matching();
    p.run();
    p.client.send_application_data(b"hello").unwrap();
    p.drain_client();
    p.step();
    assert_eq!(p.server.app_data_dropped(), 1);
    assert!(p.server.is_connected());
    assert_eq!(p.server_events.len(), 1);
}

// ---------------------------------------------------------------------------------------
// OpenSSL client: offers exactly the profiles we ask for, and exports independently.
// ---------------------------------------------------------------------------------------

/// Datagram-preserving in-memory transport for an OpenSSL `SslStream`.
#[derive(Default, Debug)]
struct MemIo {
    inbox: VecDeque<Vec<u8>>,
    outbox: Vec<Vec<u8>>,
}

impl io::Read for MemIo {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(d) = self.inbox.pop_front() else {
            return Err(io::ErrorKind::WouldBlock.into());
        };
        let n = d.len().min(buf.len());
        buf[..n].copy_from_slice(&d[..n]);
        Ok(n)
    }
}

impl io::Write for MemIo {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.outbox.push(buf.to_vec());
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

struct OsslResult {
    server: DtlsSession,
    events: Vec<DtlsEvent>,
    client_export: Option<Vec<u8>>,
    client_profile: Option<String>,
}

/// Handshakes an OpenSSL DTLS client offering `profiles` (OpenSSL's names,
/// colon-separated) against our server.
fn ossl_handshake(profiles: &str, expect_match: bool) -> OsslResult {
    use openssl::pkey::PKey;
    use openssl::ssl::{HandshakeError, Ssl, SslContext, SslMethod, SslVerifyMode};
    use openssl::x509::X509;

    let client_cert = DtlsCert::generate().unwrap();
    let mut ctx = SslContext::builder(SslMethod::dtls()).unwrap();
    ctx.set_certificate(&X509::from_der(client_cert.certificate_der()).unwrap())
        .unwrap();
    ctx.set_private_key(&PKey::private_key_from_der(&client_cert.inner.private_key).unwrap())
        .unwrap();
    ctx.set_tlsext_use_srtp(profiles).unwrap();
    ctx.set_verify_callback(SslVerifyMode::PEER, |_, _| true);
    let ctx = ctx.build();
    let mut ssl = Ssl::new(&ctx).unwrap();
    ssl.set_mtu(1150).unwrap();

    let mut now = Instant::now();
    let expected = if expect_match {
        client_cert.fingerprint()
    } else {
        Fingerprint([1; 32])
    };
    let mut server = DtlsSession::server(config(), relay_cert(), expected, now);
    let mut events = Vec::new();

    let mut hs = match ssl.connect(MemIo::default()) {
        Err(HandshakeError::WouldBlock(m)) => m,
        other => panic!("unexpected connect result: {:?}", other.err()),
    };
    for _ in 0..50 {
        let out = std::mem::take(&mut hs.get_mut().outbox);
        for d in out {
            let _ = server.handle_datagram(now, &d);
        }
        while let Some(d) = server.poll_transmit() {
            hs.get_mut().inbox.push_back(d.to_vec());
        }
        while let Some(e) = server.poll_event() {
            events.push(e);
        }
        if server.is_failed() {
            break;
        }
        hs = match hs.handshake() {
            Ok(stream) => {
                // Let the server see the client's last flight.
                let mut stream = stream;
                let ssl = stream.ssl();
                let mut km = vec![0u8; 2 * (16 + 14)];
                let profile = ssl.selected_srtp_profile().map(|p| p.name().to_string());
                let len = match profile.as_deref() {
                    Some("SRTP_AEAD_AES_256_GCM") => 88,
                    Some("SRTP_AEAD_AES_128_GCM") => 56,
                    _ => 60,
                };
                km.resize(len, 0);
                ssl.export_keying_material(&mut km, "EXTRACTOR-dtls_srtp", None)
                    .unwrap();
                let out = std::mem::take(&mut stream.get_mut().outbox);
                for d in out {
                    let _ = server.handle_datagram(now, &d);
                }
                while server.poll_transmit().is_some() {}
                while let Some(e) = server.poll_event() {
                    events.push(e);
                }
                return OsslResult {
                    server,
                    events,
                    client_export: Some(km),
                    client_profile: profile,
                };
            }
            Err(HandshakeError::WouldBlock(m)) => m,
            Err(e) => panic!("openssl handshake failed: {e:?}"),
        };
        now += Duration::from_millis(10);
    }
    OsslResult {
        server,
        events,
        client_export: None,
        client_profile: None,
    }
}

#[test]
fn openssl_client_offering_only_aes_cm_gets_aes_cm() {
    let r = ossl_handshake("SRTP_AES128_CM_SHA1_80", true);
    assert!(r.server.is_connected(), "events: {:?}", r.events);
    let keys = match r.events.as_slice() {
        [DtlsEvent::Connected(k)] => k.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(keys.profile, DtlsSrtpProfile::AesCm128HmacSha1_80);
    assert_eq!(r.client_profile.as_deref(), Some("SRTP_AES128_CM_SHA1_80"));
    assert_eq!(keys.client_master.key().len(), 16);
    assert_eq!(keys.client_master.salt().len(), 14);
    // OpenSSL's RFC 5705 exporter agrees with dimpl's.
    assert_eq!(Some(join(&keys)), r.client_export);
}

#[test]
fn openssl_client_offering_all_gets_server_preference() {
    // Client preference order is AES-CM first; the server's order wins.
    let r = ossl_handshake(
        "SRTP_AES128_CM_SHA1_80:SRTP_AEAD_AES_128_GCM:SRTP_AEAD_AES_256_GCM",
        true,
    );
    let keys = r.server.is_connected().then(|| match r.events.as_slice() {
        [DtlsEvent::Connected(k)] => k.clone(),
        other => panic!("{other:?}"),
    });
    let keys = keys.expect("connected");
    assert_eq!(keys.profile, DtlsSrtpProfile::AeadAes256Gcm);
    assert_eq!(Some(join(&keys)), r.client_export);

    let r = ossl_handshake("SRTP_AES128_CM_SHA1_80:SRTP_AEAD_AES_128_GCM", true);
    match r.events.as_slice() {
        [DtlsEvent::Connected(k)] => {
            assert_eq!(k.profile, DtlsSrtpProfile::AeadAes128Gcm);
            assert_eq!(k.client_master.key_salt().len(), 28);
            assert_eq!(Some(join(k)), r.client_export);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn openssl_client_with_wrong_fingerprint_is_refused() {
    let r = ossl_handshake("SRTP_AEAD_AES_128_GCM", false);
    assert_eq!(
        r.events,
        vec![DtlsEvent::Failed(DtlsError::FingerprintMismatch)]
    );
    assert!(r.client_export.is_none(), "client must not complete");
}

// ---------------------------------------------------------------------------------------
// Fingerprints, certificates, key material
// ---------------------------------------------------------------------------------------

#[test]
fn fingerprint_parse_and_format() {
    let s = "AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:\
             AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:8F";
    let f: Fingerprint = s.parse().unwrap();
    assert_eq!(f.0[0], 0xab);
    assert_eq!(f.0[31], 0x8f);
    assert_eq!(f.to_string(), s);
    assert_eq!(s.to_lowercase().parse::<Fingerprint>().unwrap(), f);
    assert_eq!(
        Fingerprint::from_sdp_attribute(&format!("SHA-256 {s}")).unwrap(),
        f
    );
    assert_eq!(
        Fingerprint::from_sdp_attribute(&format!("sha-1 {s}")),
        Err(DtlsError::FingerprintHashFunction)
    );
    assert_eq!(
        Fingerprint::from_sdp_attribute(s),
        Err(DtlsError::FingerprintSyntax)
    );
    assert_eq!(
        Fingerprint::from_sdp_attribute(&format!("sha-256 {s} x")),
        Err(DtlsError::FingerprintSyntax)
    );
    let bad = [
        String::new(),
        s[..s.len() - 1].to_string(),
        format!("{s}:"),
        format!("{s}0"),
        format!(" {}", &s[1..]),
        s.replace(':', "-"),
        s.replacen("AB", "GB", 1),
        s.replacen("AB:", "A:B", 1),
        s.replacen("AB", "+B", 1),
        s.replace(':', ""),
        format!("{}:{}", &s[..s.len() - 3], "ÿ"),
    ];
    for b in &bad {
        assert_eq!(
            b.parse::<Fingerprint>(),
            Err(DtlsError::FingerprintSyntax),
            "{b:?}"
        );
    }
    // Every truncation of a valid fingerprint is rejected.
    for i in 0..s.len() {
        assert!(s[..i].parse::<Fingerprint>().is_err());
    }
}

#[test]
fn cert_fingerprint_matches_sha256_of_der() {
    let c = relay_cert();
    let d = digest::digest(&digest::SHA256, c.certificate_der());
    assert_eq!(c.fingerprint().0.as_slice(), d.as_ref());
    let s = c.fingerprint_sha256();
    assert_eq!(s.len(), 95);
    assert!(
        s.bytes()
            .all(|b| b == b':' || b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
    );
    assert_eq!(s.parse::<Fingerprint>().unwrap(), c.fingerprint());
}

#[test]
fn cert_pem_round_trip_and_openssl_agrees() {
    let c = DtlsCert::generate().unwrap();
    let (cp, kp) = (c.certificate_pem(), c.private_key_pem());
    assert!(cp.starts_with("-----BEGIN CERTIFICATE-----\n"));
    assert!(kp.starts_with("-----BEGIN PRIVATE KEY-----\n"));
    let back = DtlsCert::from_pem(&cp, &kp).unwrap();
    assert_eq!(back.fingerprint(), c.fingerprint());
    // OpenSSL reads our PEM, and we read OpenSSL's (SEC1 "EC PRIVATE KEY").
    let x = openssl::x509::X509::from_pem(cp.as_bytes()).unwrap();
    assert_eq!(x.to_der().unwrap(), c.certificate_der());
    let pk = openssl::pkey::PKey::private_key_from_pem(kp.as_bytes()).unwrap();
    let sec1_pem = String::from_utf8(pk.ec_key().unwrap().private_key_to_pem().unwrap()).unwrap();
    assert!(sec1_pem.contains("BEGIN EC PRIVATE KEY"));
    let cert_pem = String::from_utf8(x.to_pem().unwrap()).unwrap();
    let from_ossl = DtlsCert::from_pem(&cert_pem, &sec1_pem).unwrap();
    assert_eq!(from_ossl.fingerprint(), c.fingerprint());
    assert!(from_ossl.private_key_pem().contains("BEGIN EC PRIVATE KEY"));
    // And a SEC1-keyed identity still handshakes.
    let sec1_der = pk.ec_key().unwrap().private_key_to_der().unwrap();
    let again = DtlsCert::from_der(c.certificate_der().to_vec(), sec1_der).unwrap();
    assert_eq!(again.fingerprint(), c.fingerprint());
}

#[test]
fn cert_loading_rejects_bad_inputs() {
    let a = DtlsCert::generate().unwrap();
    let b = DtlsCert::generate().unwrap();
    let bad = |f: CertFailure| Err::<(), _>(DtlsError::BadCertificate(f));
    // Key of another certificate.
    assert_eq!(
        DtlsCert::from_der(a.certificate_der().to_vec(), b.inner.private_key.clone()).map(|_| ()),
        bad(CertFailure::Mismatch)
    );
    // Garbage certificate.
    assert_eq!(
        DtlsCert::from_der(vec![0x30, 0x03, 1, 2, 3], a.inner.private_key.clone()).map(|_| ()),
        bad(CertFailure::Mismatch)
    );
    // Garbage key.
    assert_eq!(
        DtlsCert::from_der(a.certificate_der().to_vec(), vec![1, 2, 3]).map(|_| ()),
        bad(CertFailure::Key)
    );
    // A P-384 key.
    let ec = openssl::ec::EcKey::generate(
        &openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::SECP384R1).unwrap(),
    )
    .unwrap();
    let p384 = openssl::pkey::PKey::from_ec_key(ec)
        .unwrap()
        .private_key_to_pkcs8()
        .unwrap();
    assert_eq!(
        DtlsCert::from_der(a.certificate_der().to_vec(), p384).map(|_| ()),
        bad(CertFailure::NotP256)
    );
    // PEM problems.
    let (cp, kp) = (a.certificate_pem(), a.private_key_pem());
    for (c, k) in [
        ("", kp.as_str()),
        (cp.as_str(), ""),
        (kp.as_str(), kp.as_str()),
        (&cp.replace("-----END CERTIFICATE-----", ""), kp.as_str()),
        (&cp.replacen('M', "*", 1), kp.as_str()),
        (&cp.replacen("\n", "\n=", 1), kp.as_str()),
        (
            &cp.replace("-----END CERTIFICATE-----", "-----END PRIVATE KEY-----"),
            kp.as_str(),
        ),
    ] {
        assert_eq!(DtlsCert::from_pem(c, k).map(|_| ()), bad(CertFailure::Pem));
    }
    // Truncating the base64 at every point: never a panic.
    for i in 0..cp.len() {
        if cp.is_char_boundary(i) {
            let _ = DtlsCert::from_pem(&cp[..i], &kp);
        }
    }
}

#[test]
fn key_material_split_follows_rfc5764() {
    // client_key ‖ server_key ‖ client_salt ‖ server_salt
    let raw: Vec<u8> = (0..60u8).collect();
    let k = SrtpKeyMaterial::from_exported(DtlsSrtpProfile::AesCm128HmacSha1_80, &raw).unwrap();
    assert_eq!(k.client_master.key(), &raw[0..16]);
    assert_eq!(k.server_master.key(), &raw[16..32]);
    assert_eq!(k.client_master.salt(), &raw[32..46]);
    assert_eq!(k.server_master.salt(), &raw[46..60]);
    assert_eq!(
        k.client_master.key_salt(),
        [&raw[0..16], &raw[32..46]].concat()
    );
    let raw: Vec<u8> = (0..88u8).collect();
    let k = SrtpKeyMaterial::from_exported(DtlsSrtpProfile::AeadAes256Gcm, &raw).unwrap();
    assert_eq!(k.server_master.key(), &raw[32..64]);
    assert_eq!(k.server_master.salt(), &raw[76..88]);
    for p in DtlsSrtpProfile::PREFERENCE {
        for len in 0..100 {
            let r = SrtpKeyMaterial::from_exported(p, &vec![0; len]);
            assert_eq!(r.is_ok(), len == p.keying_material_len());
        }
    }
    assert!(
        !format!("{:?}", k).contains("40"),
        "keys are redacted in Debug"
    );
    assert_eq!(
        DtlsSrtpProfile::PREFERENCE.map(|p| (p.iana_id(), p.keying_material_len())),
        [(8, 88), (7, 56), (1, 60)]
    );
    assert_eq!(
        DtlsSrtpProfile::AeadAes128Gcm.to_string(),
        "SRTP_AEAD_AES_128_GCM"
    );
}

#[test]
fn framing_checks() {
    assert_eq!(check_framing(&[]), Err(DtlsError::Empty));
    let mut rec = vec![22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 1, 0, 2, 9, 9];
    assert_eq!(check_framing(&rec), Ok(()));
    rec.extend_from_slice(&rec.clone());
    assert_eq!(check_framing(&rec), Ok(()));
    for len in 1..rec.len() {
        let r = check_framing(&rec[..len]);
        assert_eq!(r.is_ok(), len == 15, "len {len}");
    }
    let mut long = vec![23, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 1, 0xff, 0xff];
    long.resize(13 + 0xffff, 0);
    assert_eq!(check_framing(&long), Err(DtlsError::RecordTooLong));
    assert_eq!(
        check_framing(&[24, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
        Err(DtlsError::BadContentType(24))
    );
    assert_eq!(
        check_framing(&[22, 0x03, 0x03, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
        Err(DtlsError::BadRecordVersion(0x0303))
    );
}

#[cfg(feature = "fuzz")]
#[test]
fn fuzz_one_smoke() {
    fuzz_one(&[]);
    fuzz_one(&[0, 0, 0]);
    fuzz_one(&[
        5, 22, 0xfe, 0xfd, 0, 0, 13, 22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ]);
    let mut p = Pair::matching();
    p.client.handle_timeout(p.now).unwrap();
    p.drain_client();
    let ch = p.to_server.pop_front().unwrap();
    let mut input = Vec::new();
    for piece in ch.chunks(255) {
        input.push(piece.len() as u8);
        input.extend_from_slice(piece);
    }
    input.push(0);
    fuzz_one(&input);
}
