// Tests choose an arbitrary base instant; everything after it is simulated.
#![allow(clippy::disallowed_methods)]

use super::fuzz::{LOCAL_PWD, LOCAL_UFRAG, REMOTE_UFRAG, USERNAME, drive};
use super::*;

const PWD: &[u8] = LOCAL_PWD.as_bytes();
const TID: TransactionId = TransactionId([0xa5; 12]);

use crate::wire::stun::TransactionId;

fn hex(s: &str) -> Vec<u8> {
    let s: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    s.chunks(2)
        .map(|c| u8::from_str_radix(std::str::from_utf8(c).unwrap(), 16).unwrap())
        .collect()
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn agent(t0: Instant) -> IceLite {
    IceLite::new(t0, IceLiteConfig::new(LOCAL_UFRAG, LOCAL_PWD, REMOTE_UFRAG)).unwrap()
}

/// A Binding request: `username` and `key` (for MESSAGE-INTEGRITY) when given, then
/// `extra` attributes, then FINGERPRINT.
fn request(
    class: Class,
    method: Method,
    username: Option<&str>,
    key: Option<&[u8]>,
    extra: impl FnOnce(&mut StunWriter<'_>),
) -> Vec<u8> {
    let mut buf = vec![0u8; 1500];
    let mut w = StunWriter::new(&mut buf, class, method, TID).unwrap();
    if let Some(u) = username {
        w.add_username(u).unwrap();
    }
    extra(&mut w);
    if let Some(k) = key {
        w.add_message_integrity(&IntegrityKey::new(k)).unwrap();
    }
    let len = w.finish_with_fingerprint().unwrap();
    buf.truncate(len);
    buf
}

/// A check as a controlling full agent sends it, optionally nominating.
fn check(use_candidate: bool) -> Vec<u8> {
    request(
        Class::Request,
        Method::Binding,
        Some(USERNAME),
        Some(PWD),
        |w| {
            w.add_priority(0x6e00_01ff).unwrap();
            w.add_ice_controlling(0x1122_3344_5566_7788).unwrap();
            if use_candidate {
                w.add_use_candidate().unwrap();
            }
        },
    )
}

/// Feeds `bytes` through the invariant-checking driver and returns the outcome and the
/// response bytes (re-generated: the driver keeps its own buffer).
fn feed(a: &mut IceLite, now: Instant, from: SocketAddr, bytes: &[u8]) -> (IceOutcome, Vec<u8>) {
    let msg = StunMessage::parse(bytes).unwrap();
    // The driver checks every invariant on a clone of the state; then run it for real
    // on `a` to capture the response bytes.
    let mut shadow = a.clone();
    let expected = drive(&mut shadow, now, from, &msg);
    let mut out = [0u8; MAX_RESPONSE_LEN];
    let outcome = a.handle_binding(now, from, &msg, &mut out);
    assert_eq!(outcome, expected);
    let resp = outcome
        .response_len()
        .map_or_else(Vec::new, |n| out[..n].to_vec());
    (outcome, resp)
}

fn error_code(resp: &[u8]) -> u16 {
    StunMessage::parse(resp)
        .unwrap()
        .error_code()
        .unwrap()
        .unwrap()
        .code
}

#[test]
fn nominating_check_gets_a_verifiable_success_and_selects() {
    let t0 = Instant::now();
    let mut a = agent(t0);
    let from = addr("198.51.100.7:50000");
    let (outcome, resp) = feed(&mut a, t0, from, &check(true));
    assert_eq!(
        outcome,
        IceOutcome::Success {
            len: resp.len(),
            nominated: true,
            selected_changed: true
        }
    );
    let r = StunMessage::parse(&resp).unwrap();
    assert_eq!(r.class(), Class::SuccessResponse);
    assert_eq!(r.method(), Method::Binding);
    assert_eq!(r.transaction_id(), TID);
    assert_eq!(r.xor_mapped_address(), Ok(Some(from)));
    assert_eq!(r.verify_integrity(PWD), Ok(()));
    assert_eq!(r.verify_fingerprint(), Ok(()));
    assert_eq!(r.username(), Ok(None));
    // Exactly XOR-MAPPED-ADDRESS, MESSAGE-INTEGRITY, FINGERPRINT.
    let types: Vec<_> = r.attributes().map(|a| a.ty).collect();
    assert_eq!(
        types,
        [
            AttrType::XOR_MAPPED_ADDRESS,
            AttrType::MESSAGE_INTEGRITY,
            AttrType::FINGERPRINT
        ]
    );
    assert_eq!(resp.len(), 64);
    assert_eq!(a.selected(), Some(from));
    assert!(a.is_selected(from));
    assert!(a.is_validated(from));
    assert_eq!(a.poll_timeout(), t0 + DEFAULT_TIMEOUT);

    // Same check again (a retransmission): still success, selection unchanged.
    let (outcome, _) = feed(&mut a, t0, from, &check(true));
    assert!(matches!(
        outcome,
        IceOutcome::Success {
            nominated: true,
            selected_changed: false,
            ..
        }
    ));
}

#[test]
fn regular_nomination_check_then_use_candidate() {
    let t0 = Instant::now();
    let mut a = agent(t0);
    let from = addr("198.51.100.7:50000");
    let (outcome, _) = feed(&mut a, t0, from, &check(false));
    assert!(matches!(
        outcome,
        IceOutcome::Success {
            nominated: false,
            selected_changed: false,
            ..
        }
    ));
    assert!(a.is_validated(from));
    assert_eq!(a.selected(), None);
    let (outcome, _) = feed(&mut a, t0 + Duration::from_millis(50), from, &check(true));
    assert!(matches!(
        outcome,
        IceOutcome::Success {
            nominated: true,
            selected_changed: true,
            ..
        }
    ));
    assert_eq!(a.selected(), Some(from));
}

#[test]
fn wrong_password_is_401_without_integrity_and_changes_nothing() {
    let t0 = Instant::now();
    let mut a = agent(t0);
    let from = addr("198.51.100.7:50000");
    let bytes = request(
        Class::Request,
        Method::Binding,
        Some(USERNAME),
        Some(b"notTheRelayPasswordAtAll"),
        |w| w.add_use_candidate().unwrap(),
    );
    let (outcome, resp) = feed(&mut a, t0, from, &bytes);
    assert_eq!(
        outcome,
        IceOutcome::ErrorResponse {
            len: resp.len(),
            reason: IceDrop::BadIntegrity
        }
    );
    let r = StunMessage::parse(&resp).unwrap();
    assert_eq!(r.class(), Class::ErrorResponse);
    assert_eq!(r.transaction_id(), TID);
    assert_eq!(error_code(&resp), 401);
    assert_eq!(r.error_code().unwrap().unwrap().reason, "Unauthorized");
    assert!(!r.has_integrity());
    assert_eq!(r.verify_fingerprint(), Ok(()));
    assert!(!a.is_validated(from));
    assert_eq!(a.selected(), None);
    // No state: the deadline is still the initial one.
    assert_eq!(a.poll_timeout(), t0 + DEFAULT_TIMEOUT);
}

#[test]
fn foreign_username_is_401() {
    let t0 = Instant::now();
    let mut a = agent(t0);
    let from = addr("198.51.100.7:50000");
    for username in [
        "otherUfrag:clientUfrag",
        "relayUfrag:otherClient",
        "clientUfrag:relayUfrag",
        "relayUfrag",
        "relayUfrag:",
        "relayUfrag:clientUfrag:x",
        "",
    ] {
        let bytes = request(
            Class::Request,
            Method::Binding,
            Some(username),
            Some(PWD),
            |w| w.add_use_candidate().unwrap(),
        );
        let (outcome, resp) = feed(&mut a, t0, from, &bytes);
        assert_eq!(
            outcome.drop_reason(),
            Some(IceDrop::UnknownUsername),
            "{username}"
        );
        assert_eq!(error_code(&resp), 401);
        assert!(!StunMessage::parse(&resp).unwrap().has_integrity());
    }
    // A USERNAME that is not UTF-8.
    let bytes = request(Class::Request, Method::Binding, None, Some(PWD), |w| {
        w.add_raw(AttrType::USERNAME, &[0xff, b':', b'x']).unwrap()
    });
    let (outcome, _) = feed(&mut a, t0, from, &bytes);
    assert_eq!(outcome.drop_reason(), Some(IceDrop::UnknownUsername));
    assert!(!a.is_validated(from));
}

#[test]
fn missing_credentials_are_400_without_integrity() {
    let t0 = Instant::now();
    let mut a = agent(t0);
    let from = addr("198.51.100.7:50000");
    let no_username = request(Class::Request, Method::Binding, None, Some(PWD), |w| {
        w.add_use_candidate().unwrap()
    });
    let no_integrity = request(Class::Request, Method::Binding, Some(USERNAME), None, |w| {
        w.add_use_candidate().unwrap()
    });
    let neither = request(Class::Request, Method::Binding, None, None, |_| {});
    for bytes in [no_username, no_integrity, neither] {
        let (outcome, resp) = feed(&mut a, t0, from, &bytes);
        assert_eq!(
            outcome,
            IceOutcome::ErrorResponse {
                len: resp.len(),
                reason: IceDrop::MissingCredentials
            }
        );
        assert_eq!(error_code(&resp), 400);
        let r = StunMessage::parse(&resp).unwrap();
        assert!(!r.has_integrity());
        assert_eq!(r.verify_fingerprint(), Ok(()));
    }
    assert!(!a.is_validated(from));
    assert_eq!(a.selected(), None);
}

#[test]
fn username_after_integrity_does_not_count() {
    // RFC 5389 §15.4: attributes after MESSAGE-INTEGRITY are ignored, so this request
    // has no USERNAME; and a USE-CANDIDATE after it does not nominate.
    let t0 = Instant::now();
    let mut a = agent(t0);
    let from = addr("198.51.100.7:50000");
    let mut buf = [0u8; 256];
    let mut w = StunWriter::new(&mut buf, Class::Request, Method::Binding, TID).unwrap();
    w.add_message_integrity(&IntegrityKey::new(PWD)).unwrap();
    w.add_username(USERNAME).unwrap();
    let n = w.finish_with_fingerprint().unwrap();
    let (outcome, _) = feed(&mut a, t0, from, &buf[..n]);
    assert_eq!(outcome.drop_reason(), Some(IceDrop::MissingCredentials));

    let mut w = StunWriter::new(&mut buf, Class::Request, Method::Binding, TID).unwrap();
    w.add_username(USERNAME).unwrap();
    w.add_message_integrity(&IntegrityKey::new(PWD)).unwrap();
    w.add_use_candidate().unwrap();
    let n = w.finish_with_fingerprint().unwrap();
    let (outcome, _) = feed(&mut a, t0, from, &buf[..n]);
    assert!(matches!(
        outcome,
        IceOutcome::Success {
            nominated: false,
            ..
        }
    ));
    assert_eq!(a.selected(), None);
}

#[test]
fn unknown_required_attribute_is_420_listing_it() {
    let t0 = Instant::now();
    let mut a = agent(t0);
    let from = addr("198.51.100.7:50000");
    let bytes = request(
        Class::Request,
        Method::Binding,
        Some(USERNAME),
        Some(PWD),
        |w| {
            w.add_use_candidate().unwrap();
            w.add_raw(AttrType(0x7777), b"zz").unwrap();
            w.add_raw(AttrType::REALM, b"example.org").unwrap();
            w.add_raw(AttrType(0x7777), b"again").unwrap();
            // Comprehension-optional unknowns are fine.
            w.add_raw(AttrType(0xc001), b"opt").unwrap();
        },
    );
    let (outcome, resp) = feed(&mut a, t0, from, &bytes);
    assert_eq!(
        outcome,
        IceOutcome::ErrorResponse {
            len: resp.len(),
            reason: IceDrop::UnknownAttributes
        }
    );
    let r = StunMessage::parse(&resp).unwrap();
    assert_eq!(error_code(&resp), 420);
    assert_eq!(r.transaction_id(), TID);
    // Listed once each, in order of appearance.
    assert_eq!(
        r.find(AttrType::UNKNOWN_ATTRIBUTES),
        Some(&[0x77, 0x77, 0x00, 0x14][..])
    );
    // Authenticated request: the answer is integrity-protected.
    assert_eq!(r.verify_integrity(PWD), Ok(()));
    assert_eq!(r.verify_fingerprint(), Ok(()));
    assert!(!a.is_validated(from));
    assert_eq!(a.selected(), None);
}

#[test]
fn unknown_attributes_from_strangers_get_401_first() {
    // Authentication comes before the unknown-attribute check (RFC 5389 §7.3).
    let t0 = Instant::now();
    let mut a = agent(t0);
    let bytes = request(
        Class::Request,
        Method::Binding,
        Some(USERNAME),
        Some(b"notTheRelayPasswordAtAll"),
        |w| w.add_raw(AttrType(0x7777), b"zz").unwrap(),
    );
    let (outcome, _) = feed(&mut a, t0, addr("198.51.100.7:1"), &bytes);
    assert_eq!(outcome.drop_reason(), Some(IceDrop::BadIntegrity));
}

#[test]
fn longest_response_fits_max_response_len() {
    let t0 = Instant::now();
    let mut a = agent(t0);
    let bytes = request(
        Class::Request,
        Method::Binding,
        Some(USERNAME),
        Some(PWD),
        |w| {
            for t in 0x7000..0x7000 + 40u16 {
                w.add_raw(AttrType(t), &[]).unwrap();
            }
        },
    );
    let (outcome, resp) = feed(&mut a, t0, addr("[2001:db8::9]:9"), &bytes);
    assert_eq!(outcome.drop_reason(), Some(IceDrop::UnknownAttributes));
    assert_eq!(resp.len(), MAX_RESPONSE_LEN);
    let listed = StunMessage::parse(&resp)
        .unwrap()
        .find(AttrType::UNKNOWN_ATTRIBUTES)
        .unwrap()
        .len();
    assert_eq!(listed, 2 * MAX_UNKNOWN_LISTED);
    // An IPv6 success is 76 bytes.
    let (_, resp) = feed(&mut a, t0, addr("[2001:db8::9]:9"), &check(false));
    assert_eq!(resp.len(), 76);
}

#[test]
fn malformed_ice_attributes_are_400_with_integrity() {
    let t0 = Instant::now();
    let mut a = agent(t0);
    let from = addr("198.51.100.7:50000");
    let cases: [(AttrType, &[u8]); 4] = [
        (AttrType::USE_CANDIDATE, b"x"),
        (AttrType::PRIORITY, b"abc"),
        (AttrType::ICE_CONTROLLING, b"1234"),
        (AttrType::ICE_CONTROLLED, b"123456789"),
    ];
    for (ty, value) in cases {
        let bytes = request(
            Class::Request,
            Method::Binding,
            Some(USERNAME),
            Some(PWD),
            |w| w.add_raw(ty, value).unwrap(),
        );
        let (outcome, resp) = feed(&mut a, t0, from, &bytes);
        assert_eq!(
            outcome.drop_reason(),
            Some(IceDrop::MalformedAttribute),
            "{ty:?}"
        );
        assert_eq!(error_code(&resp), 400);
        assert_eq!(
            StunMessage::parse(&resp).unwrap().verify_integrity(PWD),
            Ok(())
        );
    }
    assert!(!a.is_validated(from));
}

#[test]
fn ice_controlled_peer_gets_487_whatever_its_tie_breaker() {
    let t0 = Instant::now();
    let mut a = agent(t0);
    let from = addr("198.51.100.7:50000");
    for tie in [0, 1, u64::MAX] {
        let bytes = request(
            Class::Request,
            Method::Binding,
            Some(USERNAME),
            Some(PWD),
            |w| {
                w.add_priority(1).unwrap();
                w.add_ice_controlled(tie).unwrap();
                w.add_use_candidate().unwrap();
            },
        );
        let (outcome, resp) = feed(&mut a, t0, from, &bytes);
        assert_eq!(outcome.drop_reason(), Some(IceDrop::RoleConflict));
        assert_eq!(error_code(&resp), 487);
        assert_eq!(
            StunMessage::parse(&resp).unwrap().verify_integrity(PWD),
            Ok(())
        );
    }
    assert!(!a.is_validated(from));
    assert_eq!(a.selected(), None);

    // Neither role attribute (an RFC 5245-era peer): accepted.
    let bytes = request(
        Class::Request,
        Method::Binding,
        Some(USERNAME),
        Some(PWD),
        |w| w.add_use_candidate().unwrap(),
    );
    let (outcome, _) = feed(&mut a, t0, from, &bytes);
    assert!(matches!(
        outcome,
        IceOutcome::Success {
            nominated: true,
            ..
        }
    ));
}

/// RFC 5769 §2.1's sample request, from an agent in the controlled role, authenticates
/// with the RFC's credentials and is answered 487 with integrity.
#[test]
fn rfc5769_sample_request_is_a_role_conflict() {
    let v = hex("000100582112a442b7e7a701bc34d686fa87dfae\
        802200105354554e207465737420636c69656e74\
        002400046e0001ff\
        80290008932ff9b151263b36\
        000600096576746a3a68367659202020\
        000800149aeaa70cbfd8cb56781ef2b5b2d3f249c1b571a2\
        80280004e57a3bcf");
    let msg = StunMessage::parse(&v).unwrap();
    assert_eq!(local_ufrag_of(&msg), Some("evtj"));
    let t0 = Instant::now();
    // USERNAME is "evtj:h6vY" (length 9; the three spaces after it are padding).
    let mut a = IceLite::new(
        t0,
        IceLiteConfig::new("evtj", "VOkJxbRl1RmTxUk/WvJxBt", "h6vY"),
    )
    .unwrap();
    let mut out = [0u8; MAX_RESPONSE_LEN];
    let outcome = a.handle_binding(t0, addr("192.0.2.1:32853"), &msg, &mut out);
    let Some(len) = outcome.response_len() else {
        panic!("{outcome:?}");
    };
    assert_eq!(outcome.drop_reason(), Some(IceDrop::RoleConflict));
    let r = StunMessage::parse(&out[..len]).unwrap();
    assert_eq!(r.error_code().unwrap().unwrap().code, 487);
    assert_eq!(r.error_code().unwrap().unwrap().reason, "Role Conflict");
    assert_eq!(r.verify_integrity(b"VOkJxbRl1RmTxUk/WvJxBt"), Ok(()));
    assert_eq!(r.transaction_id(), msg.transaction_id());
    assert_eq!(a.selected(), None);
}

/// The XOR-MAPPED-ADDRESS values of RFC 5769 §2.2 and §2.3: same transaction id, same
/// mapped address, same bytes.
#[test]
fn mapped_address_matches_rfc5769_responses() {
    let tid = TransactionId([
        0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae,
    ]);
    let mut buf = [0u8; 256];
    let mut w = StunWriter::new(&mut buf, Class::Request, Method::Binding, tid).unwrap();
    w.add_username(USERNAME).unwrap();
    w.add_ice_controlling(7).unwrap();
    let n = w.finish_with_integrity_and_fingerprint(PWD).unwrap();
    let t0 = Instant::now();
    let mut a = agent(t0);
    for (from, want) in [
        ("192.0.2.1:32853", "0001a147e112a643"),
        (
            "[2001:db8:1234:5678:11:2233:4455:6677]:32853",
            "0002a1470113a9faa5d3f179bc25f4b5bed2b9d9",
        ),
    ] {
        let (_, resp) = feed(&mut a, t0, addr(from), &buf[..n]);
        let r = StunMessage::parse(&resp).unwrap();
        assert_eq!(r.find(AttrType::XOR_MAPPED_ADDRESS), Some(&hex(want)[..]));
    }
}

#[test]
fn ipv6_and_ipv4_mapped_sources() {
    let t0 = Instant::now();
    let mut a = agent(t0);
    let v6 = addr("[2001:db8::42]:61000");
    let (_, resp) = feed(&mut a, t0, v6, &check(true));
    let r = StunMessage::parse(&resp).unwrap();
    assert_eq!(r.xor_mapped_address(), Ok(Some(v6)));
    assert_eq!(r.verify_integrity(PWD), Ok(()));
    assert_eq!(a.selected(), Some(v6));

    // From a dual-stack socket: state keeps the address as given, the response names
    // the IPv4 address the peer used.
    let mapped = addr("[::ffff:198.51.100.7]:5000");
    let (outcome, resp) = feed(&mut a, t0, mapped, &check(true));
    assert!(matches!(
        outcome,
        IceOutcome::Success {
            selected_changed: true,
            ..
        }
    ));
    let r = StunMessage::parse(&resp).unwrap();
    assert_eq!(r.xor_mapped_address(), Ok(Some(addr("198.51.100.7:5000"))));
    assert_eq!(a.selected(), Some(mapped));
}

#[test]
fn bad_or_missing_fingerprint_is_dropped_silently() {
    let t0 = Instant::now();
    let mut a = agent(t0);
    let from = addr("198.51.100.7:50000");
    let mut bytes = check(true);
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    let (outcome, resp) = feed(&mut a, t0, from, &bytes);
    assert_eq!(outcome, IceOutcome::Dropped(IceDrop::BadFingerprint));
    assert!(resp.is_empty());

    let mut buf = [0u8; 256];
    let mut w = StunWriter::new(&mut buf, Class::Request, Method::Binding, TID).unwrap();
    w.add_username(USERNAME).unwrap();
    w.add_use_candidate().unwrap();
    let n = w.finish_with_integrity(PWD).unwrap();
    let (outcome, _) = feed(&mut a, t0, from, &buf[..n]);
    assert_eq!(outcome, IceOutcome::Dropped(IceDrop::MissingFingerprint));
    assert!(!a.is_validated(from));
    assert_eq!(a.selected(), None);
}

#[test]
fn not_binding_requests_are_dropped() {
    let t0 = Instant::now();
    let mut a = agent(t0);
    let from = addr("198.51.100.7:50000");
    let cases = [
        (Class::Indication, Method::Binding, IceDrop::Indication),
        (Class::SuccessResponse, Method::Binding, IceDrop::Response),
        (Class::ErrorResponse, Method::Binding, IceDrop::Response),
        (Class::Request, Method::Other(0x003), IceDrop::NotBinding),
    ];
    for (class, method, reason) in cases {
        let bytes = request(class, method, Some(USERNAME), Some(PWD), |w| {
            w.add_use_candidate().unwrap()
        });
        let (outcome, resp) = feed(&mut a, t0, from, &bytes);
        assert_eq!(outcome, IceOutcome::Dropped(reason));
        assert!(resp.is_empty());
        assert_eq!(reason.error_code(), None);
    }
    assert!(!a.is_validated(from));
}

#[test]
fn second_address_validates_then_renominates() {
    let t0 = Instant::now();
    let mut a = agent(t0);
    let wifi = addr("198.51.100.7:50000");
    let cell = addr("203.0.113.9:40000");
    let _ = feed(&mut a, t0, wifi, &check(true));
    assert_eq!(a.selected(), Some(wifi));

    let t1 = t0 + Duration::from_secs(5);
    let (outcome, _) = feed(&mut a, t1, cell, &check(false));
    assert!(matches!(
        outcome,
        IceOutcome::Success {
            nominated: false,
            selected_changed: false,
            ..
        }
    ));
    assert!(a.is_validated(cell));
    assert!(!a.is_selected(cell));
    assert_eq!(a.selected(), Some(wifi));

    let (outcome, _) = feed(&mut a, t1, cell, &check(true));
    assert!(matches!(
        outcome,
        IceOutcome::Success {
            nominated: true,
            selected_changed: true,
            ..
        }
    ));
    assert_eq!(a.selected(), Some(cell));
    assert!(!a.is_selected(wifi));
    assert!(a.is_validated(wifi), "the old path stays validated");
}

#[test]
fn validated_set_is_bounded_and_evicts_the_least_recent() {
    let t0 = Instant::now();
    let mut a = agent(t0);
    let sel = addr("10.0.0.1:1");
    let _ = feed(&mut a, t0, sel, &check(true));
    let addrs: Vec<SocketAddr> = (2..2 + VALIDATED_CAP as u16)
        .map(|p| SocketAddr::new("10.0.0.2".parse().unwrap(), p))
        .collect();
    for (i, &x) in addrs.iter().enumerate() {
        let _ = feed(
            &mut a,
            t0 + Duration::from_secs(i as u64 + 1),
            x,
            &check(false),
        );
    }
    // The selected address was evicted from the set but is still validated.
    assert!(a.is_validated(sel));
    assert!(addrs.iter().all(|&x| a.is_validated(x)));
    // Re-checking the first refreshes it; the next newcomer evicts the second.
    let _ = feed(
        &mut a,
        t0 + Duration::from_secs(20),
        addrs[0],
        &check(false),
    );
    let newcomer = addr("10.0.0.3:1");
    let _ = feed(
        &mut a,
        t0 + Duration::from_secs(21),
        newcomer,
        &check(false),
    );
    assert!(a.is_validated(newcomer));
    assert!(a.is_validated(addrs[0]));
    assert!(!a.is_validated(addrs[1]));
    assert_eq!(a.selected(), Some(sel));
}

#[test]
fn consent_expires_after_30s_of_silence_and_touch_extends_it() {
    let t0 = Instant::now();
    let s = Duration::from_secs;
    let mut a = agent(t0);
    let from = addr("198.51.100.7:50000");
    let _ = feed(&mut a, t0 + s(1), from, &check(true));
    assert_eq!(a.poll_timeout(), t0 + s(31));
    assert_eq!(a.handle_timeout(t0 + s(30)), None);

    a.touch(t0 + s(20));
    assert_eq!(a.poll_timeout(), t0 + s(50));
    assert_eq!(a.handle_timeout(t0 + s(49)), None);
    // Time going backwards is ignored, by touch and by checks.
    a.touch(t0 + s(5));
    assert_eq!(a.poll_timeout(), t0 + s(50));
    let _ = feed(&mut a, t0 + s(2), from, &check(false));
    assert_eq!(a.poll_timeout(), t0 + s(50));
    assert_eq!(a.handle_timeout(t0 + s(3)), None);

    assert_eq!(
        a.handle_timeout(t0 + s(50)),
        Some(IceFailure::ConsentExpired)
    );
    // Sticky: a late check or touch does not revive it.
    assert_eq!(a.failure(), Some(IceFailure::ConsentExpired));
    a.touch(t0 + s(51));
    assert_eq!(a.poll_timeout(), t0 + s(50));
    let (outcome, _) = feed(&mut a, t0 + s(51), from, &check(true));
    assert_eq!(outcome, IceOutcome::Dropped(IceDrop::Expired));
    assert_eq!(
        a.handle_timeout(t0 + s(52)),
        Some(IceFailure::ConsentExpired)
    );
}

#[test]
fn a_stream_of_touches_keeps_consent_and_a_late_one_finds_it_expired() {
    let t0 = Instant::now();
    let s = Duration::from_secs;
    let mut a = agent(t0);
    let from = addr("198.51.100.7:50000");
    let _ = feed(&mut a, t0 + s(1), from, &check(true));
    // Every touch within 30 s of the one before keeps the session alive, however far
    // past the first deadline they go.
    for k in 1..=10 {
        a.touch(t0 + s(1 + 25 * k));
        assert_eq!(a.poll_timeout(), t0 + s(31 + 25 * k));
    }
    assert_eq!(a.failure(), None);
    // A touch 30 s after the last one, with no handle_timeout between: expired, and the
    // deadline stays where it was.
    a.touch(t0 + s(281));
    assert_eq!(a.failure(), Some(IceFailure::ConsentExpired));
    assert_eq!(a.poll_timeout(), t0 + s(281));
}

#[test]
fn a_late_check_finds_the_session_expired_without_handle_timeout() {
    let t0 = Instant::now();
    let mut a = agent(t0);
    let from = addr("198.51.100.7:50000");
    let (outcome, _) = feed(&mut a, t0 + Duration::from_secs(30), from, &check(true));
    assert_eq!(outcome, IceOutcome::Dropped(IceDrop::Expired));
    assert_eq!(a.failure(), Some(IceFailure::NoChecks));
    assert_eq!(a.selected(), None);
}

#[test]
fn initial_window_is_configurable_and_failures_are_distinguished() {
    let t0 = Instant::now();
    let s = Duration::from_secs;
    let mut config = IceLiteConfig::new(LOCAL_UFRAG, LOCAL_PWD, REMOTE_UFRAG);
    config.initial_timeout = s(10);
    config.consent_timeout = s(5);
    let mut a = IceLite::new(t0, config.clone()).unwrap();
    assert_eq!(a.poll_timeout(), t0 + s(10));
    // A touch before any check counts for nothing.
    a.touch(t0 + s(9));
    assert_eq!(a.poll_timeout(), t0 + s(10));
    assert_eq!(a.handle_timeout(t0 + s(9)), None);
    assert_eq!(a.handle_timeout(t0 + s(10)), Some(IceFailure::NoChecks));

    // Checks but no nomination.
    let mut a = IceLite::new(t0, config).unwrap();
    let _ = feed(&mut a, t0 + s(8), addr("10.0.0.1:1"), &check(false));
    // After the first check, the consent timeout rules (even if shorter).
    assert_eq!(a.poll_timeout(), t0 + s(13));
    assert_eq!(a.handle_timeout(t0 + s(13)), Some(IceFailure::NotNominated));
}

#[test]
fn short_output_buffer_changes_nothing() {
    let t0 = Instant::now();
    let mut a = agent(t0);
    let from = addr("198.51.100.7:50000");
    let bytes = check(true);
    let msg = StunMessage::parse(&bytes).unwrap();
    let mut out = [0u8; MAX_RESPONSE_LEN - 1];
    assert_eq!(
        a.handle_binding(t0, from, &msg, &mut out),
        IceOutcome::Dropped(IceDrop::OutputTooSmall)
    );
    assert_eq!(a.selected(), None);
    assert!(!a.is_validated(from));
}

#[test]
fn local_ufrag_lookup() {
    let bytes = check(true);
    assert_eq!(
        local_ufrag_of(&StunMessage::parse(&bytes).unwrap()),
        Some(LOCAL_UFRAG)
    );
    let cases: [(Option<&[u8]>, Option<&str>); 5] = [
        (None, None),
        (Some(b"nocolon"), None),
        (Some(b":x"), Some("")),
        (Some(b"a:b:c"), Some("a")),
        (Some(&[0xff, b':']), None),
    ];
    for (value, want) in cases {
        let bytes = request(Class::Request, Method::Binding, None, None, |w| {
            if let Some(v) = value {
                w.add_raw(AttrType::USERNAME, v).unwrap();
            }
        });
        assert_eq!(local_ufrag_of(&StunMessage::parse(&bytes).unwrap()), want);
    }
}

#[test]
fn config_is_validated() {
    let t0 = Instant::now();
    let ok = |l: &str, p: &str, r: &str| IceLite::new(t0, IceLiteConfig::new(l, p, r)).map(|_| ());
    assert_eq!(ok(LOCAL_UFRAG, LOCAL_PWD, REMOTE_UFRAG), Ok(()));
    assert_eq!(
        ok("abc", LOCAL_PWD, REMOTE_UFRAG),
        Err(IceConfigError::BadLocalUfrag)
    );
    assert_eq!(
        ok("ab:cd", LOCAL_PWD, REMOTE_UFRAG),
        Err(IceConfigError::BadLocalUfrag)
    );
    assert_eq!(
        ok(LOCAL_UFRAG, "tooShortPassword", REMOTE_UFRAG),
        Err(IceConfigError::BadLocalPwd)
    );
    assert_eq!(
        ok(LOCAL_UFRAG, &"p".repeat(257), REMOTE_UFRAG),
        Err(IceConfigError::BadLocalPwd)
    );
    assert_eq!(
        ok(LOCAL_UFRAG, LOCAL_PWD, "cl:ent"),
        Err(IceConfigError::BadRemoteUfrag)
    );
    assert_eq!(
        ok(LOCAL_UFRAG, LOCAL_PWD, "clié"),
        Err(IceConfigError::BadRemoteUfrag)
    );
    // The password never shows in Debug.
    let dbg = format!(
        "{:?}",
        IceLiteConfig::new(LOCAL_UFRAG, LOCAL_PWD, REMOTE_UFRAG)
    );
    assert!(!dbg.contains(LOCAL_PWD));
}

#[test]
fn every_truncation_and_bit_flip_is_refused_safely() {
    let t0 = Instant::now();
    let bytes = check(true);
    let from = addr("198.51.100.7:50000");
    for n in 0..bytes.len() {
        super::fuzz::run(&bytes[..n]);
    }
    for i in 0..bytes.len() * 8 {
        let mut v = bytes.clone();
        v[i / 8] ^= 1 << (i % 8);
        super::fuzz::run(&v);
        if let Ok(msg) = StunMessage::parse(&v) {
            let mut a = agent(t0);
            let outcome = drive(&mut a, t0, from, &msg);
            assert!(
                !matches!(outcome, IceOutcome::Success { .. }),
                "bit {i} flipped still succeeded"
            );
            assert_eq!(a.selected(), None);
        }
    }
    super::fuzz::run(&bytes);
    super::fuzz::run(&check(false));
}

#[test]
fn garbage_never_panics() {
    let mut x: u32 = 0x1234_5678;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        x
    };
    let base = check(true);
    for _ in 0..2000 {
        let mut v = base.clone();
        for _ in 0..(next() % 4 + 1) {
            let i = next() as usize % v.len();
            v[i] = next() as u8;
        }
        super::fuzz::run(&v);
        let len = next() as usize % 120;
        let g: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        super::fuzz::run(&g);
    }
}
