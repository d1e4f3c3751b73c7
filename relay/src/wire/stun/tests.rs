use super::fuzz::*;
use super::*;

/// RFC 5769 §2.1: sample request (short-term credentials). USERNAME "evtj:h6vY" is
/// padded with spaces (0x20), as is SOFTWARE in §2.2 and §2.3.
const RFC5769_REQUEST: &str = "000100582112a442b7e7a701bc34d686fa87dfae\
    802200105354554e207465737420636c69656e74\
    002400046e0001ff\
    80290008932ff9b151263b36\
    000600096576746a3a68367659202020\
    000800149aeaa70cbfd8cb56781ef2b5b2d3f249c1b571a2\
    80280004e57a3bcf";
/// RFC 5769 §2.2: sample IPv4 response.
const RFC5769_RESPONSE_V4: &str = "0101003c2112a442b7e7a701bc34d686fa87dfae\
    8022000b7465737420766563746f7220\
    002000080001a147e112a643\
    000800142b91f599fd9e90c38c7489f92af9ba53f06be7d7\
    80280004c07d4c96";
/// RFC 5769 §2.3: sample IPv6 response.
const RFC5769_RESPONSE_V6: &str = "010100482112a442b7e7a701bc34d686fa87dfae\
    8022000b7465737420766563746f7220\
    002000140002a1470113a9faa5d3f179bc25f4b5bed2b9d9\
    00080014a382954e4be67bf11784c97c8292c275bfe3ed41\
    80280004c8fb0b4c";
/// RFC 5769 §2.4: sample request with long-term authentication (no FINGERPRINT).
const RFC5769_LONG_TERM: &str = "000100602112a44278ad3433c6ad72c029da412e\
    00060012e3839ee38388e383aae38383e382afe382b90000\
    0015001c662f2f3439396b39353464364f4c33346f4c394653547679363473410\
    014000b6578616d706c652e6f726700\
    00080014f67024656dd64a3e02b8e0712e85c9a28ca89666";
const PASSWORD: &[u8] = b"VOkJxbRl1RmTxUk/WvJxBt";
const TID: TransactionId = TransactionId([
    0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae,
]);
/// §2.4's long-term key, MD5("マトリックス:example.org:TheMatrIX") (RFC 5389 §15.4; the
/// password "The\u{ad}M\u{aa}tr\u{2168}" after SASLprep), computed with Python's
/// hashlib since no MD5 is among our dependencies.
const LONG_TERM_KEY: [u8; 16] = [
    0xe8, 0xca, 0x7a, 0xd5, 0x9d, 0x5e, 0xb0, 0x51, 0x8e, 0x31, 0x29, 0x11, 0xd2, 0xda, 0xb2, 0xa9,
];

fn hex(s: &str) -> Vec<u8> {
    let s: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    s.chunks(2)
        .map(|c| u8::from_str_radix(std::str::from_utf8(c).unwrap(), 16).unwrap())
        .collect()
}

fn types(msg: &StunMessage<'_>) -> Vec<u16> {
    msg.attributes().map(|a| a.ty.0).collect()
}

#[test]
fn rfc5769_sample_request() {
    let v = hex(RFC5769_REQUEST);
    assert_eq!(v.len(), 108);
    let m = StunMessage::parse(&v).unwrap();
    assert_eq!(m.class(), Class::Request);
    assert_eq!(m.method(), Method::Binding);
    assert_eq!(m.message_type(), 0x0001);
    assert_eq!(m.transaction_id(), TID);
    assert_eq!(types(&m), [0x8022, 0x0024, 0x8029, 0x0006, 0x0008, 0x8028]);
    assert_eq!(m.software(), Ok(Some("STUN test client")));
    assert_eq!(m.priority(), Ok(Some(0x6e00_01ff)));
    assert_eq!(m.ice_controlled(), Ok(Some(0x932f_f9b1_5126_3b36)));
    assert_eq!(m.ice_controlling(), Ok(None));
    assert_eq!(m.use_candidate(), Ok(false));
    assert_eq!(m.username(), Ok(Some("evtj:h6vY")));
    assert_eq!(m.xor_mapped_address(), Ok(None));
    assert_eq!(m.error_code(), Ok(None));
    assert_eq!(m.message_integrity().unwrap().unwrap()[..], v[80..100]);
    assert_eq!(m.fingerprint(), Ok(Some(0xe57a_3bcf)));
    assert_eq!(m.first_unknown_required(), None);
    assert_eq!(m.verify_integrity(PASSWORD), Ok(()));
    assert_eq!(
        m.verify_integrity_with(&IntegrityKey::new(PASSWORD)),
        Ok(())
    );
    assert_eq!(m.verify_fingerprint(), Ok(()));
    assert_eq!(
        m.verify_integrity(b"VOkJxbRl1RmTxUk/WvJxBu"),
        Err(StunError::IntegrityMismatch)
    );
    assert_eq!(m.verify_integrity(b""), Err(StunError::IntegrityMismatch));
}

/// Rebuilds §2.1 byte for byte. The RFC pads with spaces, so the writer is told to
/// (`set_padding(0x20)`); USERNAME goes through the typed `add_username`.
#[test]
fn rfc5769_sample_request_rebuilt_exactly() {
    let v = hex(RFC5769_REQUEST);
    let mut buf = [0u8; 200];
    let mut w = StunWriter::new(&mut buf, Class::Request, Method::Binding, TID).unwrap();
    w.set_padding(0x20);
    w.add_raw(AttrType::SOFTWARE, b"STUN test client").unwrap();
    w.add_priority(0x6e00_01ff).unwrap();
    w.add_ice_controlled(0x932f_f9b1_5126_3b36).unwrap();
    w.add_username("evtj:h6vY").unwrap();
    let len = w.finish_with_integrity_and_fingerprint(PASSWORD).unwrap();
    assert_eq!(buf[..len], v[..]);

    // With the default zero padding only the padding, and so MESSAGE-INTEGRITY and
    // FINGERPRINT, differ; the result still verifies.
    let mut buf = [0u8; 200];
    let mut w = StunWriter::new(&mut buf, Class::Request, Method::Binding, TID).unwrap();
    w.add_raw(AttrType::SOFTWARE, b"STUN test client").unwrap();
    w.add_priority(0x6e00_01ff).unwrap();
    w.add_ice_controlled(0x932f_f9b1_5126_3b36).unwrap();
    w.add_username("evtj:h6vY").unwrap();
    let len = w.finish_with_integrity_and_fingerprint(PASSWORD).unwrap();
    let differs: Vec<usize> = (0..len).filter(|&i| buf[i] != v[i]).collect();
    assert!(differs.iter().all(|&i| (73..76).contains(&i) || i >= 80));
    assert_eq!(buf[73..76], [0, 0, 0]);
    let m = StunMessage::parse(&buf[..len]).unwrap();
    assert_eq!(m.verify_integrity(PASSWORD), Ok(()));
    assert_eq!(m.verify_fingerprint(), Ok(()));
}

#[test]
fn rfc5769_ipv4_response() {
    let v = hex(RFC5769_RESPONSE_V4);
    assert_eq!(v.len(), 80);
    let m = StunMessage::parse(&v).unwrap();
    assert_eq!(m.class(), Class::SuccessResponse);
    assert_eq!(m.method(), Method::Binding);
    assert_eq!(m.transaction_id(), TID);
    assert_eq!(types(&m), [0x8022, 0x0020, 0x0008, 0x8028]);
    assert_eq!(m.software(), Ok(Some("test vector")));
    let addr: SocketAddr = "192.0.2.1:32853".parse().unwrap();
    assert_eq!(m.xor_mapped_address(), Ok(Some(addr)));
    assert_eq!(m.first_unknown_required(), None);
    assert_eq!(m.verify_integrity(PASSWORD), Ok(()));
    assert_eq!(m.verify_fingerprint(), Ok(()));
    assert_eq!(
        m.verify_integrity(b"wrong"),
        Err(StunError::IntegrityMismatch)
    );

    let mut buf = [0u8; 200];
    let mut w = StunWriter::new(&mut buf, Class::SuccessResponse, Method::Binding, TID).unwrap();
    w.set_padding(0x20);
    w.add_raw(AttrType::SOFTWARE, b"test vector").unwrap();
    w.add_xor_mapped_address(addr).unwrap();
    let len = w.finish_with_integrity_and_fingerprint(PASSWORD).unwrap();
    assert_eq!(buf[..len], v[..]);
}

#[test]
fn rfc5769_ipv6_response() {
    let v = hex(RFC5769_RESPONSE_V6);
    assert_eq!(v.len(), 92);
    let m = StunMessage::parse(&v).unwrap();
    assert_eq!(m.class(), Class::SuccessResponse);
    assert_eq!(m.method(), Method::Binding);
    assert_eq!(m.transaction_id(), TID);
    assert_eq!(types(&m), [0x8022, 0x0020, 0x0008, 0x8028]);
    assert_eq!(m.software(), Ok(Some("test vector")));
    let addr: SocketAddr = "[2001:db8:1234:5678:11:2233:4455:6677]:32853"
        .parse()
        .unwrap();
    assert_eq!(m.xor_mapped_address(), Ok(Some(addr)));
    assert_eq!(m.verify_integrity(PASSWORD), Ok(()));
    assert_eq!(m.verify_fingerprint(), Ok(()));
    assert_eq!(
        m.verify_integrity(b"wrong"),
        Err(StunError::IntegrityMismatch)
    );

    let mut buf = [0u8; 200];
    let mut w = StunWriter::new(&mut buf, Class::SuccessResponse, Method::Binding, TID).unwrap();
    w.set_padding(0x20);
    w.add_raw(AttrType::SOFTWARE, b"test vector").unwrap();
    w.add_xor_mapped_address(addr).unwrap();
    let len = w.finish_with_integrity_and_fingerprint(PASSWORD).unwrap();
    assert_eq!(buf[..len], v[..]);
}

/// §2.4 has no FINGERPRINT; its key is the long-term MD5 key, precomputed above.
#[test]
fn rfc5769_long_term_request() {
    let v = hex(RFC5769_LONG_TERM);
    assert_eq!(v.len(), 116);
    let m = StunMessage::parse(&v).unwrap();
    assert_eq!(m.class(), Class::Request);
    assert_eq!(m.method(), Method::Binding);
    let tid = TransactionId([
        0x78, 0xad, 0x34, 0x33, 0xc6, 0xad, 0x72, 0xc0, 0x29, 0xda, 0x41, 0x2e,
    ]);
    assert_eq!(m.transaction_id(), tid);
    assert_eq!(types(&m), [0x0006, 0x0015, 0x0014, 0x0008]);
    assert_eq!(m.username(), Ok(Some("マトリックス")));
    let nonce = b"f//499k954d6OL34oL9FSTvy64sA";
    assert_eq!(m.find(AttrType::NONCE), Some(&nonce[..]));
    assert_eq!(m.find(AttrType::REALM), Some(&b"example.org"[..]));
    // We do not do long-term credentials, so REALM and NONCE are unknown to us.
    let unknown: Vec<_> = m.unknown_required().collect();
    assert_eq!(unknown, [AttrType::NONCE, AttrType::REALM]);
    assert_eq!(m.first_unknown_required(), Some(AttrType::NONCE));
    assert!(!m.has_fingerprint());
    assert_eq!(m.fingerprint(), Ok(None));
    assert_eq!(m.verify_fingerprint(), Err(StunError::MissingFingerprint));
    assert_eq!(m.verify_integrity(&LONG_TERM_KEY), Ok(()));
    assert_eq!(
        m.verify_integrity(b"TheMatrIX"),
        Err(StunError::IntegrityMismatch)
    );

    // This one pads with zeros, so the defaults rebuild it exactly.
    let mut buf = [0u8; 200];
    let mut w = StunWriter::new(&mut buf, Class::Request, Method::Binding, tid).unwrap();
    w.add_username("マトリックス").unwrap();
    w.add_raw(AttrType::NONCE, nonce).unwrap();
    w.add_raw(AttrType::REALM, b"example.org").unwrap();
    let len = w.finish_with_integrity(&LONG_TERM_KEY).unwrap();
    assert_eq!(buf[..len], v[..]);
}

fn all_vectors() -> Vec<Vec<u8>> {
    [
        RFC5769_REQUEST,
        RFC5769_RESPONSE_V4,
        RFC5769_RESPONSE_V6,
        RFC5769_LONG_TERM,
    ]
    .iter()
    .map(|s| hex(s))
    .collect()
}

/// CRC-32 catches every single-bit error, and a flip that turns an attribute into
/// another type removes what the checks need, so no flip gets through.
#[test]
fn every_bit_flip_in_the_sample_request_fails() {
    let v = hex(RFC5769_REQUEST);
    for bit in 0..v.len() * 8 {
        let mut f = v.clone();
        f[bit / 8] ^= 1 << (bit % 8);
        let ok = StunMessage::parse(&f)
            .is_ok_and(|m| m.verify_integrity(PASSWORD).is_ok() && m.verify_fingerprint().is_ok());
        assert!(!ok, "bit {bit} flipped and still accepted");
        exercise(&f);
    }
}

#[test]
fn truncations_are_rejected() {
    for v in all_vectors() {
        for n in 0..v.len() {
            assert!(StunMessage::parse(&v[..n]).is_err(), "prefix of {n}");
            exercise(&v[..n]);
        }
    }
    assert_eq!(StunMessage::parse(&[]).unwrap_err(), StunError::TooShort);
    assert_eq!(
        StunMessage::parse(&[0; 19]).unwrap_err(),
        StunError::TooShort
    );
}

/// A truncation whose length field is patched to match parses, but the checks fail.
#[test]
fn truncations_with_patched_length_fail_the_checks() {
    let v = hex(RFC5769_REQUEST);
    for n in (20..v.len()).step_by(4) {
        let mut t = v[..n].to_vec();
        t[2..4].copy_from_slice(&((n - 20) as u16).to_be_bytes());
        let Ok(m) = StunMessage::parse(&t) else {
            continue;
        };
        assert!(m.verify_integrity(PASSWORD).is_err() || m.verify_fingerprint().is_err());
        exercise(&t);
    }
}

#[test]
fn header_errors() {
    let v = hex(RFC5769_REQUEST);
    let mut f = v.clone();
    f[0] |= 0x80;
    assert_eq!(StunMessage::parse(&f).unwrap_err(), StunError::NotStun);
    let mut f = v.clone();
    f[0] |= 0x40;
    assert_eq!(StunMessage::parse(&f).unwrap_err(), StunError::NotStun);
    let mut f = v.clone();
    f[7] ^= 1;
    assert_eq!(
        StunMessage::parse(&f).unwrap_err(),
        StunError::BadMagicCookie
    );
    let mut f = v.clone();
    f[3] = 0x59;
    assert_eq!(
        StunMessage::parse(&f).unwrap_err(),
        StunError::UnalignedLength
    );
    let mut f = v.clone();
    f[3] = 0x54;
    assert_eq!(
        StunMessage::parse(&f).unwrap_err(),
        StunError::LengthMismatch
    );
    let mut f = v.clone();
    f.extend_from_slice(&[0; 4]);
    assert_eq!(
        StunMessage::parse(&f).unwrap_err(),
        StunError::LengthMismatch
    );
    // USERNAME's length grown past the end.
    let mut f = v.clone();
    f[62..64].copy_from_slice(&[0x00, 0x40]);
    assert_eq!(
        StunMessage::parse(&f).unwrap_err(),
        StunError::AttributeOverrun
    );
    // A header-only message is fine and has nothing in it.
    let mut h = v[..20].to_vec();
    h[2..4].copy_from_slice(&[0, 0]);
    let m = StunMessage::parse(&h).unwrap();
    assert_eq!(m.attributes().count(), 0);
    assert!(!m.has_integrity() && !m.has_fingerprint());
    assert_eq!(
        m.verify_integrity(PASSWORD),
        Err(StunError::MissingIntegrity)
    );
    assert_eq!(m.verify_fingerprint(), Err(StunError::MissingFingerprint));
}

#[test]
fn nothing_may_follow_fingerprint() {
    let mut f = hex(RFC5769_REQUEST);
    f.extend_from_slice(&[0x80, 0x22, 0, 0]);
    let len = (f.len() - 20) as u16;
    f[2..4].copy_from_slice(&len.to_be_bytes());
    assert_eq!(
        StunMessage::parse(&f).unwrap_err(),
        StunError::AttributeAfterFingerprint
    );
}

fn build(f: impl FnOnce(&mut StunWriter<'_>)) -> Vec<u8> {
    let mut buf = vec![0u8; 2048];
    let mut w = StunWriter::new(&mut buf, Class::Request, Method::Binding, TID).unwrap();
    f(&mut w);
    let len = w.finish().unwrap();
    buf.truncate(len);
    buf
}

#[test]
fn attribute_value_errors() {
    let ok_user = "u".repeat(513);
    let m = build(|w| w.add_username(&ok_user).unwrap());
    assert_eq!(
        StunMessage::parse(&m).unwrap().username(),
        Ok(Some(&ok_user[..]))
    );
    let m = build(|w| w.add_raw(AttrType::USERNAME, &[b'u'; 514]).unwrap());
    assert_eq!(
        StunMessage::parse(&m).unwrap().username(),
        Err(StunError::UsernameTooLong)
    );
    let m = build(|w| w.add_raw(AttrType::USERNAME, &[0xff, 0xfe]).unwrap());
    assert_eq!(
        StunMessage::parse(&m).unwrap().username(),
        Err(StunError::NotUtf8)
    );
    let m = build(|w| w.add_raw(AttrType::SOFTWARE, &[0xc0]).unwrap());
    assert_eq!(
        StunMessage::parse(&m).unwrap().software(),
        Err(StunError::NotUtf8)
    );

    for (ty, len) in [
        (AttrType::PRIORITY, 3),
        (AttrType::PRIORITY, 8),
        (AttrType::USE_CANDIDATE, 1),
        (AttrType::ICE_CONTROLLING, 4),
        (AttrType::ICE_CONTROLLED, 9),
        (AttrType::MESSAGE_INTEGRITY, 16),
        (AttrType::ERROR_CODE, 3),
        (AttrType::XOR_MAPPED_ADDRESS, 12),
        (AttrType::XOR_MAPPED_ADDRESS, 3),
    ] {
        let mut v = vec![0u8; len];
        if ty == AttrType::XOR_MAPPED_ADDRESS && len > 1 {
            v[1] = 1;
        }
        let m = build(|w| w.add_raw(ty, &v).unwrap());
        let m = StunMessage::parse(&m).unwrap();
        let err = match ty {
            AttrType::PRIORITY => m.priority().map(drop),
            AttrType::USE_CANDIDATE => m.use_candidate().map(drop),
            AttrType::ICE_CONTROLLING => m.ice_controlling().map(drop),
            AttrType::ICE_CONTROLLED => m.ice_controlled().map(drop),
            AttrType::MESSAGE_INTEGRITY => m.verify_integrity(PASSWORD),
            AttrType::ERROR_CODE => m.error_code().map(drop),
            _ => m.xor_mapped_address().map(drop),
        };
        assert_eq!(
            err,
            Err(StunError::BadAttributeLength(ty)),
            "{ty:?} len {len}"
        );
    }
    let m = build(|w| w.add_raw(AttrType::MESSAGE_INTEGRITY, &[0; 16]).unwrap());
    assert_eq!(
        StunMessage::parse(&m).unwrap().message_integrity(),
        Err(StunError::BadAttributeLength(AttrType::MESSAGE_INTEGRITY))
    );

    let m = build(|w| {
        w.add_raw(AttrType::XOR_MAPPED_ADDRESS, &[0, 3, 0, 0, 1, 2, 3, 4])
            .unwrap()
    });
    assert_eq!(
        StunMessage::parse(&m).unwrap().xor_mapped_address(),
        Err(StunError::UnknownAddressFamily)
    );
    // IPv6 family with an IPv4-sized address.
    let m = build(|w| {
        w.add_raw(AttrType::XOR_MAPPED_ADDRESS, &[0, 2, 0, 0, 1, 2, 3, 4])
            .unwrap()
    });
    assert_eq!(
        StunMessage::parse(&m).unwrap().xor_mapped_address(),
        Err(StunError::BadAttributeLength(AttrType::XOR_MAPPED_ADDRESS))
    );
    for bad in [[0, 0, 2, 0], [0, 0, 7, 0], [0, 0, 4, 100]] {
        let m = build(|w| w.add_raw(AttrType::ERROR_CODE, &bad).unwrap());
        assert_eq!(
            StunMessage::parse(&m).unwrap().error_code(),
            Err(StunError::BadErrorCode)
        );
    }
    let mut long = vec![0, 0, 4, 0];
    long.extend_from_slice(&[b'x'; 764]);
    let m = build(|w| w.add_raw(AttrType::ERROR_CODE, &long).unwrap());
    assert_eq!(
        StunMessage::parse(&m).unwrap().error_code(),
        Err(StunError::ReasonTooLong)
    );
}

#[test]
fn typed_attributes_round_trip() {
    let v4: SocketAddr = "203.0.113.7:3478".parse().unwrap();
    let v6: SocketAddr = "[2001:db8::1]:50000".parse().unwrap();
    for addr in [v4, v6] {
        let mut buf = [0u8; 256];
        let mut w = StunWriter::new(&mut buf, Class::ErrorResponse, Method::Binding, TID).unwrap();
        w.add_error_code(487, "Role Conflict").unwrap();
        w.add_xor_mapped_address(addr).unwrap();
        w.add_ice_controlling(u64::MAX).unwrap();
        w.add_use_candidate().unwrap();
        w.add_priority(1).unwrap();
        let key = IntegrityKey::new(b"pw");
        w.add_message_integrity(&key).unwrap();
        let len = w.finish_with_fingerprint().unwrap();
        let m = StunMessage::parse(&buf[..len]).unwrap();
        assert_eq!(m.class(), Class::ErrorResponse);
        assert_eq!(m.message_type(), 0x0111);
        assert_eq!(
            m.error_code(),
            Ok(Some(ErrorCode {
                code: 487,
                reason: "Role Conflict"
            }))
        );
        assert_eq!(m.xor_mapped_address(), Ok(Some(addr)));
        assert_eq!(m.ice_controlling(), Ok(Some(u64::MAX)));
        assert_eq!(m.use_candidate(), Ok(true));
        assert_eq!(m.priority(), Ok(Some(1)));
        assert_eq!(m.verify_integrity_with(&key), Ok(()));
        assert_eq!(m.verify_fingerprint(), Ok(()));
        exercise(&buf[..len]);
    }
}

#[test]
fn writer_rejects_bad_arguments() {
    let mut buf = [0u8; 4096];
    assert_eq!(
        StunWriter::new(&mut buf, Class::Request, Method::Other(0x1000), TID).unwrap_err(),
        StunError::MethodOutOfRange
    );
    let mut w = StunWriter::new(&mut buf, Class::Request, Method::Binding, TID).unwrap();
    assert_eq!(
        w.add_username(&"u".repeat(514)),
        Err(StunError::UsernameTooLong)
    );
    assert_eq!(w.add_error_code(299, ""), Err(StunError::BadErrorCode));
    assert_eq!(w.add_error_code(700, ""), Err(StunError::BadErrorCode));
    assert_eq!(
        w.add_error_code(400, &"r".repeat(764)),
        Err(StunError::ReasonTooLong)
    );
    assert_eq!(
        w.add_raw(AttrType::SOFTWARE, &[0; 70000]),
        Err(StunError::TooLong)
    );
    assert_eq!(w.message_len(), 20);
    assert_eq!(w.finish(), Ok(20));
    let mut small = [0u8; 19];
    assert_eq!(
        StunWriter::new(&mut small, Class::Request, Method::Binding, TID).unwrap_err(),
        StunError::BufferTooSmall
    );
    // The whole 16-bit length is usable, and no more.
    let mut big = vec![0u8; 20 + 0x10000];
    let mut w = StunWriter::new(&mut big, Class::Indication, Method::Binding, TID).unwrap();
    w.add_raw(AttrType::SOFTWARE, &[0; 0xfff8]).unwrap();
    assert_eq!(w.add_raw(AttrType::SOFTWARE, &[]), Err(StunError::TooLong));
    assert_eq!(w.finish_with_fingerprint(), Err(StunError::TooLong));
    let m = StunMessage::parse(&big[..20 + 0xfffc]).unwrap();
    assert_eq!(m.attributes().next().unwrap().value.len(), 0xfff8);
}

/// Every buffer size short of the message fails cleanly; the exact size works.
#[test]
fn writer_buffer_too_small_at_every_size() {
    let v = hex(RFC5769_REQUEST);
    for n in 0..=v.len() {
        let mut buf = vec![0u8; n];
        let r = (|| {
            let mut w = StunWriter::new(&mut buf, Class::Request, Method::Binding, TID)?;
            w.set_padding(0x20);
            w.add_raw(AttrType::SOFTWARE, b"STUN test client")?;
            w.add_priority(0x6e00_01ff)?;
            w.add_ice_controlled(0x932f_f9b1_5126_3b36)?;
            w.add_username("evtj:h6vY")?;
            w.finish_with_integrity_and_fingerprint(PASSWORD)
        })();
        if n < v.len() {
            assert_eq!(r, Err(StunError::BufferTooSmall), "size {n}");
        } else {
            assert_eq!(r, Ok(v.len()));
            assert_eq!(buf, v);
        }
    }
}

#[test]
fn message_types() {
    for (class, ty) in [
        (Class::Request, 0x0001),
        (Class::Indication, 0x0011),
        (Class::SuccessResponse, 0x0101),
        (Class::ErrorResponse, 0x0111),
    ] {
        assert_eq!(message_type(class, 1), ty);
    }
    // Every method and class survives a round trip.
    for method in 0..0x1000u16 {
        for class in [
            Class::Request,
            Class::Indication,
            Class::SuccessResponse,
            Class::ErrorResponse,
        ] {
            let mut buf = [0u8; 20];
            let method = Method::from_bits(method);
            let len = StunWriter::new(&mut buf, class, method, TID)
                .unwrap()
                .finish()
                .unwrap();
            let m = StunMessage::parse(&buf[..len]).unwrap();
            assert_eq!((m.class(), m.method()), (class, method));
        }
    }
    assert_eq!(Method::from_bits(1), Method::Binding);
    assert_eq!(Method::Other(0x0abc).bits(), 0x0abc);
}

/// RFC 5389 §15.4: what follows MESSAGE-INTEGRITY (other than FINGERPRINT) is ignored.
#[test]
fn attributes_after_integrity_are_ignored() {
    let mut buf = [0u8; 256];
    let mut w = StunWriter::new(&mut buf, Class::Request, Method::Binding, TID).unwrap();
    w.add_username("a:b").unwrap();
    w.add_message_integrity(&IntegrityKey::new(PASSWORD))
        .unwrap();
    w.add_priority(7).unwrap();
    w.add_username("evil").unwrap();
    w.add_raw(AttrType(0x7777), &[]).unwrap();
    let len = w.finish_with_fingerprint().unwrap();
    let m = StunMessage::parse(&buf[..len]).unwrap();
    assert_eq!(m.verify_integrity(PASSWORD), Ok(()));
    assert_eq!(m.verify_fingerprint(), Ok(()));
    assert_eq!(m.username(), Ok(Some("a:b")));
    assert_eq!(m.priority(), Ok(None));
    assert_eq!(m.first_unknown_required(), None);
    assert_eq!(m.attributes().count(), 6);
    exercise(&buf[..len]);
}

#[test]
fn unknown_required_and_420_answer() {
    let req = build(|w| {
        w.add_raw(AttrType(0x8fff), &[1]).unwrap(); // optional: fine
        w.add_raw(AttrType(0x7fff), &[1, 2]).unwrap();
        w.add_raw(AttrType::MESSAGE_INTEGRITY_SHA256, &[0; 32])
            .unwrap(); // understood
        w.add_raw(AttrType::USERHASH, &[0; 32]).unwrap();
    });
    let m = StunMessage::parse(&req).unwrap();
    let unknown: Vec<_> = m.unknown_required().collect();
    assert_eq!(unknown, [AttrType(0x7fff), AttrType::USERHASH]);

    let mut buf = [0u8; 128];
    let mut w = StunWriter::new(&mut buf, Class::ErrorResponse, Method::Binding, TID).unwrap();
    w.add_error_code(420, "Unknown Attribute").unwrap();
    w.add_unknown_attributes(m.unknown_required()).unwrap();
    let len = w.finish_with_fingerprint().unwrap();
    let r = StunMessage::parse(&buf[..len]).unwrap();
    assert_eq!(r.error_code().unwrap().unwrap().code, 420);
    assert_eq!(
        r.find(AttrType::UNKNOWN_ATTRIBUTES),
        Some(&[0x7f, 0xff, 0x00, 0x1e][..])
    );

    // An odd count is padded; a buffer too small leaves the message unchanged.
    let mut buf = [0u8; 27];
    let mut w = StunWriter::new(&mut buf, Class::ErrorResponse, Method::Binding, TID).unwrap();
    assert_eq!(
        w.add_unknown_attributes([AttrType(0x7fff)]),
        Err(StunError::BufferTooSmall)
    );
    assert_eq!(w.message_len(), 20);
    let mut buf = [0u8; 28];
    let mut w = StunWriter::new(&mut buf, Class::ErrorResponse, Method::Binding, TID).unwrap();
    w.add_unknown_attributes([AttrType(0x7fff)]).unwrap();
    assert_eq!(w.finish(), Ok(28));
    assert_eq!(buf[20..], [0x00, 0x0a, 0x00, 0x02, 0x7f, 0xff, 0, 0]);
}

/// Deterministic garbage and mutated vectors through the fuzz body.
#[test]
fn garbage_never_panics() {
    let mut state = 0x1234_5678_9abc_def0u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let vectors = all_vectors();
    let mut parsed = 0;
    for i in 0..30_000 {
        let mut d = match i % 3 {
            0 => vectors[i % vectors.len()].clone(),
            1 => {
                let n = (next() % 120) as usize;
                let mut d: Vec<u8> = (0..n).map(|_| next() as u8).collect();
                if d.len() >= 8 {
                    d[0] &= 0x3f;
                    d[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
                }
                if d.len() >= 20 {
                    let len = ((d.len() - 20) & !3) as u16;
                    d.truncate(20 + usize::from(len));
                    d[2..4].copy_from_slice(&len.to_be_bytes());
                }
                d
            }
            _ => {
                // Well-framed messages of attributes we know, with random values.
                const TYPES: [u16; 12] = [
                    0x0001, 0x0006, 0x0008, 0x0009, 0x000a, 0x0014, 0x0020, 0x0024, 0x0025, 0x8022,
                    0x8029, 0x802a,
                ];
                let mut d = vec![0u8; 20];
                d[0..2].copy_from_slice(&((next() as u16) & 0x3fff).to_be_bytes());
                d[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
                for _ in 0..(next() % 6) {
                    let ty = TYPES[(next() % 12) as usize];
                    let len = [0, 4, 8, 20, (next() % 40) as usize][(next() % 5) as usize];
                    d.extend_from_slice(&ty.to_be_bytes());
                    d.extend_from_slice(&(len as u16).to_be_bytes());
                    d.extend((0..padded(len)).map(|_| next() as u8));
                }
                if next() % 2 == 0 {
                    d.extend_from_slice(&[0x80, 0x28, 0, 4, 0, 0, 0, 0]);
                }
                let len = (d.len() - 20) as u16;
                d[2..4].copy_from_slice(&len.to_be_bytes());
                d
            }
        };
        for _ in 0..(next() % 4) {
            if !d.is_empty() {
                let at = (next() as usize) % d.len();
                d[at] = next() as u8;
            }
        }
        parsed += usize::from(StunMessage::parse(&d).is_ok());
        exercise(&d);
    }
    // Enough inputs get past framing for the rebuild half of the body to run.
    assert!(parsed > 10_000, "{parsed}");
}

#[test]
fn vectors_through_the_fuzz_body() {
    for v in all_vectors() {
        exercise(&v);
    }
}
