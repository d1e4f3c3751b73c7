//! Every parse, accessor and builder of the module on arbitrary input.

use super::*;

/// Drives everything in this module on arbitrary bytes; shared by the fuzz hook and tests.
#[cfg(any(test, feature = "fuzz"))]
pub(super) fn exercise(data: &[u8]) {
    const KEY: &[u8] = b"VOkJxbRl1RmTxUk/WvJxBt";
    let Ok(msg) = StunMessage::parse(data) else {
        return;
    };
    let class = msg.class();
    let method = msg.method();
    let tid = msg.transaction_id();
    assert_eq!(message_type(class, method.bits()), msg.message_type());
    let username = msg.username();
    let software = msg.software();
    let integrity = msg.message_integrity();
    let fingerprint = msg.fingerprint();
    let xor = msg.xor_mapped_address();
    let mapped = msg.mapped_address();
    let priority = msg.priority();
    let use_candidate = msg.use_candidate();
    let controlling = msg.ice_controlling();
    let controlled = msg.ice_controlled();
    let error = msg.error_code();
    let unknown_count = msg.unknown_required().count();
    assert_eq!(msg.first_unknown_required().is_some(), unknown_count > 0);
    let mut total = 0usize;
    for a in msg.attributes() {
        total += 4 + padded(a.value.len());
    }
    assert_eq!(total + HEADER_LEN, data.len(), "attributes walk to the end");
    let verified = msg.verify_integrity(KEY);
    let fp_ok = msg.verify_fingerprint();
    assert_eq!(
        msg.has_integrity(),
        verified != Err(StunError::MissingIntegrity)
    );
    assert_eq!(
        msg.has_fingerprint(),
        fp_ok != Err(StunError::MissingFingerprint)
    );

    // Rebuild from what counts, with the typed writers for the first attribute of each
    // type the getters accepted (that is the one they read), raw otherwise; then check the
    // copy reads back the same.
    let mut out = [0u8; 1500];
    let Ok(mut w) = StunWriter::new(&mut out, class, method, tid) else {
        return;
    };
    let mut seen = [false; 7];
    for a in msg.counted() {
        let slot = match a.ty {
            AttrType::MESSAGE_INTEGRITY => break,
            AttrType::FINGERPRINT => continue,
            AttrType::USERNAME => 0,
            AttrType::PRIORITY => 1,
            AttrType::USE_CANDIDATE => 2,
            AttrType::ICE_CONTROLLING => 3,
            AttrType::ICE_CONTROLLED => 4,
            AttrType::XOR_MAPPED_ADDRESS => 5,
            AttrType::ERROR_CODE => 6,
            _ => usize::MAX,
        };
        let first = seen
            .get_mut(slot)
            .is_some_and(|s| !std::mem::replace(s, true));
        let r = match (a.ty, first) {
            (AttrType::USERNAME, true) if matches!(username, Ok(Some(_))) => {
                w.add_username(username.ok().flatten().unwrap_or_default())
            }
            (AttrType::PRIORITY, true) if matches!(priority, Ok(Some(_))) => {
                w.add_priority(priority.ok().flatten().unwrap_or_default())
            }
            (AttrType::USE_CANDIDATE, true) if use_candidate == Ok(true) => w.add_use_candidate(),
            (AttrType::ICE_CONTROLLING, true) if matches!(controlling, Ok(Some(_))) => {
                w.add_ice_controlling(controlling.ok().flatten().unwrap_or_default())
            }
            (AttrType::ICE_CONTROLLED, true) if matches!(controlled, Ok(Some(_))) => {
                w.add_ice_controlled(controlled.ok().flatten().unwrap_or_default())
            }
            (AttrType::XOR_MAPPED_ADDRESS, true) => match xor {
                Ok(Some(addr)) => w.add_xor_mapped_address(addr),
                _ => w.add_raw(a.ty, a.value),
            },
            (AttrType::ERROR_CODE, true) => match error {
                Ok(Some(e)) => w.add_error_code(e.code, e.reason),
                _ => w.add_raw(a.ty, a.value),
            },
            _ => w.add_raw(a.ty, a.value),
        };
        if r.is_err() {
            return; // Larger than our scratch buffer: nothing to compare.
        }
    }
    let had_integrity = msg.has_integrity();
    let had_fp = msg.has_fingerprint();
    let len = match (had_integrity, had_fp) {
        (true, true) => w.finish_with_integrity_and_fingerprint(KEY),
        (true, false) => w.finish_with_integrity(KEY),
        (false, true) => w.finish_with_fingerprint(),
        (false, false) => w.finish(),
    };
    let Ok(len) = len else { return };
    let copy = StunMessage::parse(&out[..len]).expect("own output parses");
    assert_eq!(copy.class(), class);
    assert_eq!(copy.method(), method);
    assert_eq!(copy.transaction_id(), tid);
    assert_eq!(copy.username(), username);
    assert_eq!(copy.software(), software);
    assert_eq!(copy.priority(), priority);
    assert_eq!(copy.use_candidate(), use_candidate);
    assert_eq!(copy.ice_controlling(), controlling);
    assert_eq!(copy.ice_controlled(), controlled);
    assert_eq!(copy.error_code(), error);
    assert_eq!(copy.xor_mapped_address(), xor);
    assert_eq!(copy.mapped_address(), mapped);
    assert!(copy.unknown_required().eq(msg.unknown_required()));
    assert_eq!(copy.has_integrity(), had_integrity);
    assert_eq!(copy.has_fingerprint(), had_fp);
    if had_integrity {
        assert_eq!(copy.verify_integrity(KEY), Ok(()));
        // The first MESSAGE-INTEGRITY's own length is what the writer always uses.
        assert_eq!(copy.message_integrity().map(|m| m.is_some()), Ok(true));
    }
    if had_fp {
        assert_eq!(copy.verify_fingerprint(), Ok(()));
    }
    // If the original verified under KEY and the rebuilt attributes before
    // MESSAGE-INTEGRITY are byte-identical, the writer's HMAC must equal the sender's.
    if let (Ok(()), Some(a), Some(b)) = (verified, msg.integrity_at, copy.integrity_at) {
        let same_prefix =
            a == b && msg.as_bytes().get(HEADER_LEN..a) == copy.as_bytes().get(HEADER_LEN..b);
        if same_prefix {
            assert_eq!(copy.message_integrity(), integrity);
        }
    }
    let _ = fingerprint;
}

/// Fuzz entry point: parses `data`, reads every field, verifies with a fixed key, and
/// rebuilds what parsed to check the writer agrees with the reader.
#[cfg(feature = "fuzz")]
#[doc(hidden)]
pub fn fuzz_one(data: &[u8]) {
    exercise(data);
}
