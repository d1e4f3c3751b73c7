//! Vectors (RFC 7714 §16–17, libsrtp through pylibsrtp) and negative tests.

use super::test_util::hex;
use super::*;
use crate::id::{KeyIndex, Ssrc};

// ---- RFC 7714 §16 and §17 -------------------------------------------------------------

const RFC7714_KEY_128: &str = "000102030405060708090a0b0c0d0e0f";
const RFC7714_KEY_256: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
/// "Quid pro quo"
const RFC7714_SALT: &str = "517569642070726f2071756f";
const RFC7714_RTP: &str = "8040f17b 8041f8d3 5501a0b2 47616c6c 69612065 7374206f 6d6e6973
                           20646976 69736120 696e2070 61727465 73207472 6573";
const RFC7714_RTCP: &str = "81c8000d 4d617273 4e545031 4e545032 52545020 0000042a 0000e930
                            4c756e61 deadbeef deadbeef deadbeef deadbeef deadbeef";

fn rfc7714_ctx(profile: SrtpProfile, key: &str) -> SrtpContext {
    let salt: [u8; 12] = hex(RFC7714_SALT).try_into().unwrap();
    SrtpContext::from_gcm_session(profile, &hex(key), salt).unwrap()
}

fn check_rtp_vector(profile: SrtpProfile, key: &str, protected: &str) {
    let plain = hex(RFC7714_RTP);
    let protected = hex(protected);
    let mut buf = vec![0u8; 128];
    buf[..plain.len()].copy_from_slice(&plain);
    let n = rfc7714_ctx(profile, key)
        .protect_rtp(&mut buf, plain.len())
        .unwrap();
    assert_eq!(buf[..n], protected[..]);
    let mut rx = rfc7714_ctx(profile, key);
    let m = rx.unprotect_rtp(&mut buf[..n]).unwrap();
    assert_eq!(buf[..m], plain[..]);
}

/// RFC 7714 §16.1.1 / §16.1.2: AEAD_AES_128_GCM SRTP.
#[test]
fn rfc7714_16_1_aes128_srtp() {
    check_rtp_vector(
        SrtpProfile::AeadAes128Gcm,
        RFC7714_KEY_128,
        "8040f17b 8041f8d3 5501a0b2 f24de3a3 fb34de6c acba861c 9d7e4bca be633bd5 0d294e6f
         42a5f47a 51c7d19b 36de3adf 8833899d 7f27beb1 6a9152cf 765ee439 0cce",
    );
}

/// RFC 7714 §16.2.1 / §16.2.2: AEAD_AES_256_GCM SRTP.
#[test]
fn rfc7714_16_2_aes256_srtp() {
    check_rtp_vector(
        SrtpProfile::AeadAes256Gcm,
        RFC7714_KEY_256,
        "8040f17b 8041f8d3 5501a0b2 32b1de78 a822fe12 ef9f78fa 332e33aa b1801238 9a58e2f3
         b50b2a02 76ffae0f 1ba63799 b87b7aa3 db36dfff d6b0f9bb 7878d7a7 6c13",
    );
}

fn check_rtcp_vector(profile: SrtpProfile, key: &str, protected: &str) {
    let plain = hex(RFC7714_RTCP);
    let protected = hex(protected);
    let mut tx = rfc7714_ctx(profile, key);
    tx.set_next_rtcp_index(Ssrc(0x4d61_7273), 0x5d4).unwrap();
    let mut buf = vec![0u8; 128];
    buf[..plain.len()].copy_from_slice(&plain);
    let n = tx.protect_rtcp(&mut buf, plain.len()).unwrap();
    assert_eq!(buf[..n], protected[..]);
    let mut rx = rfc7714_ctx(profile, key);
    let m = rx.unprotect_rtcp(&mut buf[..n]).unwrap();
    assert_eq!(buf[..m], plain[..]);
}

/// RFC 7714 §17.1: AEAD_AES_128_GCM SRTCP, encrypted (E = 1), index 0x5d4.
#[test]
fn rfc7714_17_1_aes128_srtcp() {
    check_rtcp_vector(
        SrtpProfile::AeadAes128Gcm,
        RFC7714_KEY_128,
        "81c8000d 4d617273 63e94885 dcdab67c a727d766 2f6b7e99 7ff5c0f7 6c06f32d c676a5f1
         730d6fda 4ce09b46 86303ded 0bb9275b c84aa458 96cf4d2f c5abf872 45d9eade 800005d4",
    );
}

/// RFC 7714 §17.3: AEAD_AES_256_GCM SRTCP, encrypted (E = 1), index 0x5d4.
#[test]
fn rfc7714_17_3_aes256_srtcp() {
    check_rtcp_vector(
        SrtpProfile::AeadAes256Gcm,
        RFC7714_KEY_256,
        "81c8000d 4d617273 d50ae4d1 f5ce5d30 4ba297e4 7d470c28 2c3ece5d bffe0a50 a2eaa5c1
         110555be 8415f658 c61de047 6f1b6fad 1d1eb30c 4446839f 57ff6f6c b26ac3be 800005d4",
    );
}

/// RFC 7714 §17.2 / §17.4 are unencrypted SRTCP (E = 0), which we refuse by design; a
/// packet with E cleared must be rejected before any crypto.
#[test]
fn unencrypted_srtcp_is_refused() {
    let mut packet = hex(
        "81c8000d 4d617273 63e94885 dcdab67c a727d766 2f6b7e99 7ff5c0f7 6c06f32d c676a5f1
         730d6fda 4ce09b46 86303ded 0bb9275b c84aa458 96cf4d2f c5abf872 45d9eade 000005d4",
    );
    let mut rx = rfc7714_ctx(SrtpProfile::AeadAes128Gcm, RFC7714_KEY_128);
    assert_eq!(
        rx.unprotect_rtcp(&mut packet),
        Err(SrtpError::UnencryptedSrtcp)
    );
}

// ---- libsrtp vectors ------------------------------------------------------------------

const LIBSRTP: &str = include_str!("../../tests/vectors/libsrtp.txt");

fn profile_named(name: &str) -> SrtpProfile {
    match name {
        "SRTP_AES128_CM_SHA1_80" => SrtpProfile::AesCm128HmacSha1_80,
        "SRTP_AES128_CM_SHA1_32" => SrtpProfile::AesCm128HmacSha1_32,
        "SRTP_AEAD_AES_128_GCM" => SrtpProfile::AeadAes128Gcm,
        "SRTP_AEAD_AES_256_GCM" => SrtpProfile::AeadAes256Gcm,
        _ => panic!("unknown profile {name}"),
    }
}

fn rtcp_sender(packet: &[u8]) -> Ssrc {
    Ssrc(u32::from_be_bytes(packet[4..8].try_into().unwrap()))
}

/// One line of `libsrtp.txt`: a master key, or a packet with its protected form.
struct Vector<'a> {
    /// "master", "rtp" or "rtcp".
    kind: &'a str,
    profile: SrtpProfile,
    mki: Option<u8>,
    /// The master key, or the plaintext packet.
    plain: Vec<u8>,
    /// libsrtp's protected packet (empty for a master key).
    protected: Vec<u8>,
    line: &'a str,
}

fn libsrtp_vectors() -> impl Iterator<Item = Vector<'static>> {
    LIBSRTP.lines().filter(|l| !l.starts_with('#')).map(|line| {
        let f: Vec<&str> = line.split(' ').collect();
        Vector {
            kind: f[0],
            profile: profile_named(f[1]),
            mki: (f[2] != "-").then(|| u8::from_str_radix(f[2], 16).unwrap()),
            plain: hex(f[3]),
            protected: f.get(4).map(|p| hex(p)).unwrap_or_default(),
            line,
        }
    })
}

/// A context holding every master key seen so far for `profile` in this MKI mode, the
/// first one active (libsrtp's session setup).
fn libsrtp_context(
    masters: &[(SrtpProfile, Option<u8>, Vec<u8>)],
    profile: SrtpProfile,
    mki: bool,
) -> SrtpContext {
    let keys: Vec<_> = masters
        .iter()
        .filter(|m| m.0 == profile && m.1.is_some() == mki)
        .collect();
    let mut c = SrtpContext::new(profile, &keys[0].2, keys[0].1.map(KeyIndex)).unwrap();
    for k in &keys[1..] {
        c.add_key(KeyIndex(k.1.unwrap()), &k.2).unwrap();
    }
    c
}

/// Both directions against libsrtp 2.7: our protect equals theirs byte for byte, and we
/// unprotect theirs to the plaintext — across the sequence-number wrap, for several
/// SSRCs, in all four profiles, with and without a one-byte MKI.
#[test]
fn libsrtp_vectors_both_directions() {
    let mut masters: Vec<(SrtpProfile, Option<u8>, Vec<u8>)> = Vec::new();
    // (profile, mki mode) → (tx, rx)
    let mut ctxs: Vec<(SrtpProfile, bool, SrtpContext, SrtpContext)> = Vec::new();
    let mut seen_rtcp: Vec<(SrtpProfile, bool, Ssrc)> = Vec::new();
    let mut counts = [0usize; 2];
    let mut wrapped = 0;
    for v in libsrtp_vectors() {
        let (profile, mki, line) = (v.profile, v.mki, v.line);
        if v.kind == "master" {
            masters.push((profile, mki, v.plain));
            continue;
        }
        let pos = match ctxs
            .iter()
            .position(|c| c.0 == profile && c.1 == mki.is_some())
        {
            Some(p) => p,
            None => {
                let make = || libsrtp_context(&masters, profile, mki.is_some());
                ctxs.push((profile, mki.is_some(), make(), make()));
                ctxs.len() - 1
            }
        };
        let (_, _, tx, rx) = &mut ctxs[pos];
        if let Some(m) = mki {
            tx.set_active_key(KeyIndex(m)).unwrap();
        }
        let (plain, protected) = (v.plain, v.protected);
        let mut buf = vec![0u8; 256];
        buf[..plain.len()].copy_from_slice(&plain);
        if v.kind == "rtp" {
            counts[0] += 1;
            let n = tx.protect_rtp(&mut buf, plain.len()).unwrap();
            assert_eq!(buf[..n], protected[..], "protect {line}");
            let mut theirs = protected.clone();
            let m = rx.unprotect_rtp(&mut theirs).unwrap();
            assert_eq!(theirs[..m], plain[..], "unprotect {line}");
            let ssrc = crate::wire::rtp::RtpHeader::parse(&plain).unwrap().ssrc();
            if rx.rtp_rx_index(ssrc).unwrap() > 0xffff {
                wrapped += 1;
            }
        } else {
            counts[1] += 1;
            let ssrc = rtcp_sender(&plain);
            if !seen_rtcp.contains(&(profile, mki.is_some(), ssrc)) {
                // libsrtp numbers SRTCP from 1; RFC 3711 §3.4 and we start at 0.
                tx.set_next_rtcp_index(ssrc, 1).unwrap();
                seen_rtcp.push((profile, mki.is_some(), ssrc));
            }
            let n = tx.protect_rtcp(&mut buf, plain.len()).unwrap();
            assert_eq!(buf[..n], protected[..], "protect {line}");
            let mut theirs = protected.clone();
            let m = rx.unprotect_rtcp(&mut theirs).unwrap();
            assert_eq!(theirs[..m], plain[..], "unprotect {line}");
        }
    }
    assert!(counts[0] >= 150 && counts[1] >= 60, "{counts:?}");
    assert!(wrapped >= 40, "{wrapped}");
}

/// A late joiner: a receiver whose first packet of a stream comes after the sender's
/// sequence numbers wrapped (ROC 1, protected by libsrtp) authenticates it only when
/// allowed to search the rollover counter, and keeps that ROC for the packets after it.
#[test]
fn late_joiner_finds_the_rollover_counter() {
    let mut masters: Vec<(SrtpProfile, Option<u8>, Vec<u8>)> = Vec::new();
    let mut before_wrap: Vec<(SrtpProfile, bool, Ssrc)> = Vec::new();
    let mut joined: Vec<(SrtpProfile, bool, Ssrc, SrtpContext)> = Vec::new();
    let (mut joins, mut after) = (0, 0);
    for v in libsrtp_vectors() {
        let (profile, mki, line) = (v.profile, v.mki, v.line);
        if v.kind == "master" {
            masters.push((profile, mki, v.plain));
            continue;
        }
        if v.kind != "rtp" {
            continue;
        }
        let (plain, protected) = (v.plain, v.protected);
        let header = crate::wire::rtp::RtpHeader::parse(&plain).unwrap();
        let (ssrc, seq) = (header.ssrc(), header.seq().0);
        let stream = (profile, mki.is_some(), ssrc);
        if seq >= 0x8000 {
            before_wrap.push(stream);
            continue;
        }
        if !before_wrap.contains(&stream) {
            continue;
        }
        if let Some(j) = joined.iter_mut().find(|j| (j.0, j.1, j.2) == stream) {
            let mut theirs = protected.clone();
            let n = j.3.unprotect_rtp(&mut theirs).unwrap();
            assert_eq!(theirs[..n], plain[..], "after joining: {line}");
            after += 1;
            continue;
        }
        let make = || libsrtp_context(&masters, profile, mki.is_some());
        let mut theirs = protected.clone();
        assert_eq!(
            make().unprotect_rtp(&mut theirs),
            Err(SrtpError::AuthFailed),
            "ROC 0 only: {line}"
        );
        let mut ctx = make().with_roc_search(4);
        let mut theirs = protected.clone();
        let n = ctx.unprotect_rtp(&mut theirs).unwrap();
        assert_eq!(theirs[..n], plain[..], "joining: {line}");
        assert_eq!(ctx.rtp_rx_index(ssrc), Some((1 << 16) | u64::from(seq)));
        joined.push((profile, mki.is_some(), ssrc, ctx));
        joins += 1;
    }
    assert!(
        joins >= 16 && after >= 16,
        "{joins} joins, {after} packets after"
    );
}

/// The search gives up after `max_roc`, tries only streams with no authenticated packet
/// yet, and a packet that fits no ROC leaves no state behind.
#[test]
fn roc_search_is_bounded_and_leaves_no_state_on_failure() {
    let profile = SrtpProfile::AeadAes128Gcm;
    let (mut tx, _) = pair(profile, Some(KeyIndex(0)));
    // Walk the sender to ROC 3 (sequence 0 three times over).
    let mut last = Vec::new();
    for i in 0..=(3u32 << 16) {
        last = protect(&mut tx, &rtp(i as u16, 7, 0), false);
    }
    let m = master(profile, 1);
    let mut short = SrtpContext::new(profile, &m, Some(KeyIndex(0)))
        .unwrap()
        .with_roc_search(2);
    let mut copy = last.clone();
    assert_eq!(short.unprotect_rtp(&mut copy), Err(SrtpError::AuthFailed));
    assert_eq!(
        short.rtp_rx_index(Ssrc(7)),
        None,
        "no stream from a failed packet"
    );
    let mut enough = SrtpContext::new(profile, &m, Some(KeyIndex(0)))
        .unwrap()
        .with_roc_search(3);
    let mut copy = last.clone();
    assert!(enough.unprotect_rtp(&mut copy).is_ok());
    assert_eq!(enough.rtp_rx_index(Ssrc(7)), Some(3 << 16));
    // Once the stream is known, its ROC is estimated, not searched: a packet of ROC 0
    // with a sequence number far from the highest is a stale one.
    let mut stale = protect(
        &mut SrtpContext::new(profile, &m, Some(KeyIndex(0))).unwrap(),
        &rtp(5, 7, 0),
        false,
    );
    assert!(enough.unprotect_rtp(&mut stale).is_err());
}

/// A receiver that stops getting a stream it knows (a layer it was switched away from)
/// and gets it again after more than half the sequence-number space finds it again
/// within a few packets, under the later rollover counter, when a search is allowed;
/// and once the stream is lost, an older packet is still refused (the search looks
/// only past the highest index).
#[test]
fn a_known_stream_is_found_again_after_a_long_gap_and_old_packets_stay_refused() {
    for profile in SrtpProfile::ALL {
        for gap in [40_000u64, 70_000, (3 << 16) + 5] {
            let (mut tx, rx) = pair(profile, Some(KeyIndex(0)));
            let mut rx = rx.with_roc_search(4);
            let mut sent = Vec::new();
            for i in 0..=(100 + gap + 20) {
                sent.push(protect(&mut tx, &rtp(i as u16, 7, 20), false));
            }
            for p in &sent[..=100] {
                rx.unprotect_rtp(&mut p.clone()).unwrap();
            }
            // After the gap: the first packets fail (the estimate is off), then the
            // search finds the stream and every packet after it decrypts.
            let after = 100 + gap as usize;
            let found = (after..after + 10)
                .find(|&i| rx.unprotect_rtp(&mut sent[i].clone()).is_ok())
                .unwrap_or_else(|| panic!("{profile:?} gap {gap}: not found"));
            assert!(found <= after + 4, "{profile:?} gap {gap}: at {found}");
            assert_eq!(rx.rtp_rx_index(Ssrc(7)), Some(found as u64));
            for p in &sent[found + 1..] {
                rx.unprotect_rtp(&mut p.clone()).unwrap();
            }
            // Lost again (four forgeries on its SSRC), an authentic packet from
            // before the gap is refused as it was before.
            for _ in 0..4 {
                let mut forged = sent[after].clone();
                let last = forged.len() - 2;
                forged[last] ^= 1;
                assert!(rx.unprotect_rtp(&mut forged).is_err());
            }
            for old in [50, 100] {
                assert!(
                    rx.unprotect_rtp(&mut sent[old].clone()).is_err(),
                    "{profile:?} gap {gap}: {old} replayed"
                );
            }
            // Without a search the stream is not found.
            let (mut tx, mut rx) = pair(profile, Some(KeyIndex(0)));
            let mut last = Vec::new();
            for i in 0..=(100 + gap) {
                let p = protect(&mut tx, &rtp(i as u16, 7, 20), false);
                if i <= 100 {
                    rx.unprotect_rtp(&mut p.clone()).unwrap();
                }
                last = p;
            }
            for _ in 0..8 {
                assert!(rx.unprotect_rtp(&mut last.clone()).is_err());
            }
        }
    }
}

// ---- round trips, MKI, replay ---------------------------------------------------------

fn master(profile: SrtpProfile, seed: u8) -> Vec<u8> {
    (0..profile.master_len() as u8)
        .map(|i| i.wrapping_mul(7).wrapping_add(seed))
        .collect()
}

fn rtp(seq: u16, ssrc: u32, payload_len: usize) -> Vec<u8> {
    let mut p = vec![0x80, 96];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&[0, 0, 3, 0xe8]);
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend((0..payload_len).map(|i| i as u8 ^ 0xa5));
    p
}

fn rtcp(ssrc: u32) -> Vec<u8> {
    let mut p = vec![0x81, 201, 0, 7];
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend((0..24).map(|i| i as u8));
    p
}

fn protect(ctx: &mut SrtpContext, plain: &[u8], rtcp: bool) -> Vec<u8> {
    let mut buf = vec![0u8; plain.len() + 64];
    buf[..plain.len()].copy_from_slice(plain);
    let n = if rtcp {
        ctx.protect_rtcp(&mut buf, plain.len()).unwrap()
    } else {
        ctx.protect_rtp(&mut buf, plain.len()).unwrap()
    };
    buf.truncate(n);
    buf
}

fn pair(profile: SrtpProfile, mki: Option<KeyIndex>) -> (SrtpContext, SrtpContext) {
    let m = master(profile, 1);
    (
        SrtpContext::new(profile, &m, mki).unwrap(),
        SrtpContext::new(profile, &m, mki).unwrap(),
    )
}

/// MKI placement per RFC 3711 §3.1 (AES-CM: before the tag) and RFC 7714 (GCM: after
/// the AEAD tag, which is part of the ciphertext), with a rekey round trip: the receiver
/// picks the key by MKI, and an unknown MKI is refused.
#[test]
fn mki_layout_and_rekey() {
    for profile in SrtpProfile::ALL {
        let (mut tx, mut rx) = pair(profile, Some(KeyIndex(0)));
        let new = master(profile, 99);
        tx.add_key(KeyIndex(1), &new).unwrap();
        rx.add_key(KeyIndex(1), &new).unwrap();
        let plain = rtp(10, 5, 20);
        let s0 = protect(&mut tx, &plain, false);
        tx.set_active_key(KeyIndex(1)).unwrap();
        let s1 = protect(&mut tx, &rtp(11, 5, 20), false);
        let c0 = protect(&mut tx, &rtcp(5), true);
        let mki_at = |len: usize, rtcp: bool| {
            if profile.is_aead() {
                len - 1
            } else if rtcp {
                len - profile.rtcp_tag_len() - 1
            } else {
                len - profile.rtp_tag_len() - 1
            }
        };
        assert_eq!(s0[mki_at(s0.len(), false)], 0);
        assert_eq!(s1[mki_at(s1.len(), false)], 1);
        assert_eq!(c0[mki_at(c0.len(), true)], 1);
        if !profile.is_aead() {
            // E·index directly precedes the MKI.
            let at = mki_at(c0.len(), true) - 4;
            assert_eq!(c0[at..at + 4], [0x80, 0, 0, 0]);
        } else {
            assert_eq!(c0[c0.len() - 5..c0.len() - 1], [0x80, 0, 0, 0]);
        }
        for s in [&s0, &s1] {
            let mut b = s.clone();
            assert!(rx.unprotect_rtp(&mut b).is_ok());
        }
        let mut b = c0.clone();
        assert!(rx.unprotect_rtcp(&mut b).is_ok());
        // Receiver dropped key 0: packets under it are an unknown MKI.
        rx.set_active_key(KeyIndex(1)).unwrap();
        rx.remove_key(KeyIndex(0)).unwrap();
        let s2 = {
            tx.set_active_key(KeyIndex(0)).unwrap();
            protect(&mut tx, &rtp(12, 5, 20), false)
        };
        let mut b = s2.clone();
        assert_eq!(rx.unprotect_rtp(&mut b), Err(SrtpError::UnknownMki));
        // Key management errors.
        assert_eq!(rx.remove_key(KeyIndex(1)), Err(SrtpError::ActiveKey));
        assert_eq!(rx.remove_key(KeyIndex(7)), Err(SrtpError::UnknownKey));
        assert_eq!(rx.set_active_key(KeyIndex(7)), Err(SrtpError::UnknownKey));
        assert_eq!(rx.active_key(), KeyIndex(1));
        assert!(rx.has_key(KeyIndex(1)) && !rx.has_key(KeyIndex(0)));
        let (mut plain_ctx, _) = pair(profile, None);
        assert_eq!(
            plain_ctx.add_key(KeyIndex(1), &new),
            Err(SrtpError::MkiDisabled)
        );
        assert_eq!(
            tx.add_key(KeyIndex(2), &new[1..]),
            Err(SrtpError::BadMasterLength)
        );
    }
}

/// Replay and window behaviour: a replay is rejected; a reordered packet within 64 is
/// accepted once; a packet 64 behind is too old; a forged packet does not move the
/// window; SRTCP has its own window.
#[test]
fn replay_window() {
    for profile in SrtpProfile::ALL {
        for mki in [None, Some(KeyIndex(4))] {
            let (mut tx, mut rx) = pair(profile, mki);
            let packets: Vec<Vec<u8>> = (0..100u16)
                .map(|s| protect(&mut tx, &rtp(s.wrapping_add(65500), 9, 8), false))
                .collect();
            let mut take = |i: usize| {
                let mut b = packets[i].clone();
                rx.unprotect_rtp(&mut b)
            };
            assert!(take(0).is_ok());
            assert_eq!(take(0), Err(SrtpError::Replayed));
            assert!(take(80).is_ok()); // across the wrap
            assert_eq!(take(16), Err(SrtpError::TooOld));
            assert!(take(17).is_ok());
            assert_eq!(take(17), Err(SrtpError::Replayed));
            assert!(take(79).is_ok());
            // Forged packet far ahead: rejected, and the window did not move.
            let mut forged = packets[99].clone();
            forged[14] ^= 1;
            assert_eq!(rx.unprotect_rtp(&mut forged), Err(SrtpError::AuthFailed));
            let mut b = packets[18].clone();
            assert!(rx.unprotect_rtp(&mut b).is_ok());
            assert_eq!(rx.rtp_rx_index(Ssrc(9)), Some(0x1_0000 + 80 - 36));

            let c: Vec<Vec<u8>> = (0..70).map(|_| protect(&mut tx, &rtcp(9), true)).collect();
            let mut b = c[69].clone();
            assert!(rx.unprotect_rtcp(&mut b).is_ok());
            let mut b = c[69].clone();
            assert_eq!(rx.unprotect_rtcp(&mut b), Err(SrtpError::Replayed));
            let mut b = c[5].clone();
            assert_eq!(rx.unprotect_rtcp(&mut b), Err(SrtpError::TooOld));
            let mut b = c[6].clone();
            assert!(rx.unprotect_rtcp(&mut b).is_ok());

            // Protect refuses to reuse an index, or one too old to track.
            for (seq, err) in [(63, SrtpError::Replayed), (65500, SrtpError::TooOld)] {
                let mut buf = rtp(seq, 9, 8);
                buf.resize(64, 0);
                assert_eq!(tx.protect_rtp(&mut buf, 20), Err(err));
            }
        }
    }
}

/// Every single-byte change of an SRTP and an SRTCP packet, in every profile, with and
/// without MKI, is rejected; an MKI change gives an unknown key or a failed tag.
#[test]
fn every_byte_tamper_is_rejected() {
    for profile in SrtpProfile::ALL {
        for mki in [None, Some(KeyIndex(4))] {
            let (mut tx, mut rx) = pair(profile, mki);
            if mki.is_some() {
                // MKI 4 ^ 1 = 5 names a real key with different material.
                rx.add_key(KeyIndex(5), &master(profile, 2)).unwrap();
            }
            let mut plain = rtp(300, 77, 33);
            plain[0] |= 0x10; // add a one-word header extension
            plain.splice(12..12, [0xbe, 0xde, 0, 1, 0x10, 1, 0, 0]);
            let s = protect(&mut tx, &plain, false);
            let c = protect(&mut tx, &rtcp(77), true);
            for (packet, is_rtcp) in [(&s, false), (&c, true)] {
                for at in 0..packet.len() {
                    for flip in [0x01u8, 0x80, 0xff] {
                        let mut b = packet.clone();
                        b[at] ^= flip;
                        let r = if is_rtcp {
                            rx.unprotect_rtcp(&mut b)
                        } else {
                            rx.unprotect_rtp(&mut b)
                        };
                        assert!(
                            r.is_err(),
                            "{profile:?} mki={mki:?} rtcp={is_rtcp} byte {at} ^ {flip:#x}"
                        );
                    }
                }
                let mut b = packet.clone();
                let r = if is_rtcp {
                    rx.unprotect_rtcp(&mut b)
                } else {
                    rx.unprotect_rtp(&mut b)
                };
                assert!(r.is_ok(), "{profile:?} untouched packet");
            }
        }
    }
}

/// Every truncation of a valid packet is an error, never a panic; so is a buffer too
/// small to protect into, and `len > buf.len()`.
#[test]
fn truncation_and_small_buffers() {
    for profile in SrtpProfile::ALL {
        for mki in [None, Some(KeyIndex(0))] {
            let (mut tx, mut rx) = pair(profile, mki);
            let plain = rtp(1, 3, 17);
            let s = protect(&mut tx, &plain, false);
            let c = protect(&mut tx, &rtcp(3), true);
            for len in 0..s.len() {
                let mut b = s[..len].to_vec();
                assert!(rx.unprotect_rtp(&mut b).is_err(), "rtp len {len}");
            }
            for len in 0..c.len() {
                let mut b = c[..len].to_vec();
                assert!(rx.unprotect_rtcp(&mut b).is_err(), "rtcp len {len}");
            }
            for len in 0..plain.len() + tx.rtp_overhead() {
                let mut b = vec![0u8; len];
                let n = plain.len().min(len);
                b[..n].copy_from_slice(&plain[..n]);
                assert!(tx.protect_rtp(&mut b, plain.len()).is_err());
                assert!(tx.protect_rtp(&mut b, n).is_err(), "len {len}");
            }
            let p = rtcp(3);
            for len in 0..p.len() + tx.rtcp_overhead() {
                let mut b = vec![0u8; len];
                let n = p.len().min(len);
                b[..n].copy_from_slice(&p[..n]);
                assert!(tx.protect_rtcp(&mut b, p.len()).is_err());
            }
            for len in 0..8 {
                let mut b = vec![0x80u8; 64];
                assert_eq!(tx.protect_rtcp(&mut b, len), Err(SrtpError::TooShort));
            }
            let mut b = vec![0x40u8; 64];
            assert_eq!(tx.protect_rtcp(&mut b, 20), Err(SrtpError::BadRtcpVersion));
            assert!(matches!(
                tx.protect_rtp(&mut b, 20),
                Err(SrtpError::Rtp(crate::wire::rtp::RtpError::BadVersion))
            ));
            // Garbage of every length never panics.
            for len in 0..80 {
                let mut g: Vec<u8> = (0..len as u8).map(|i| i.wrapping_mul(37) | 0x80).collect();
                let _ = rx.unprotect_rtp(&mut g.clone());
                let _ = rx.unprotect_rtcp(&mut g);
            }
        }
    }
}

/// A context tracks at most `max_streams` SSRCs; a forged packet does not take a slot;
/// removing a stream frees one.
#[test]
fn stream_cap() {
    let profile = SrtpProfile::AeadAes128Gcm;
    let m = master(profile, 1);
    let mut tx = SrtpContext::new(profile, &m, None).unwrap();
    let mut rx = SrtpContext::new(profile, &m, None)
        .unwrap()
        .with_max_streams(2);
    let a = protect(&mut tx, &rtp(1, 1, 4), false);
    let b = protect(&mut tx, &rtp(1, 2, 4), false);
    let c = protect(&mut tx, &rtp(1, 3, 4), false);
    let mut forged = c.clone();
    forged[14] ^= 1;
    assert_eq!(rx.unprotect_rtp(&mut forged), Err(SrtpError::AuthFailed));
    assert!(rx.unprotect_rtp(&mut a.clone()).is_ok());
    assert!(rx.unprotect_rtp(&mut b.clone()).is_ok());
    assert_eq!(
        rx.unprotect_rtp(&mut c.clone()),
        Err(SrtpError::TooManyStreams)
    );
    rx.remove_stream(Ssrc(1));
    assert!(rx.unprotect_rtp(&mut c.clone()).is_ok());
    assert_eq!(rx.rtp_rx_index(Ssrc(1)), None);
}

/// The SRTCP index word (E flag and index) of a protected AES-CM packet without MKI.
fn srtcp_index(protected: &[u8]) -> u32 {
    let at = protected.len() - 10 - 4;
    u32::from_be_bytes(protected[at..at + 4].try_into().unwrap()) & 0x7fff_ffff
}

/// A removed SSRC that comes back continues above every SRTCP index it was sent with
/// (and so does any new one): no (key, SSRC, index) is protected twice, which under
/// AES-CM would repeat a keystream and under GCM a nonce. A receiver that kept its
/// replay window accepts the returning stream.
#[test]
fn srtcp_indexes_are_not_reused_after_a_stream_is_removed() {
    let (mut tx, mut rx) = pair(SrtpProfile::AesCm128HmacSha1_80, None);
    for want in 0..3 {
        let c = protect(&mut tx, &rtcp(8), true);
        assert_eq!(srtcp_index(&c), want);
        assert!(rx.unprotect_rtcp(&mut c.clone()).is_ok());
    }
    tx.remove_stream(Ssrc(8));
    let again = protect(&mut tx, &rtcp(8), true);
    assert_eq!(srtcp_index(&again), 3);
    assert!(rx.unprotect_rtcp(&mut again.clone()).is_ok());
    // Every stream removed at once, and one never seen before.
    tx.clear_streams();
    assert_eq!(srtcp_index(&protect(&mut tx, &rtcp(8), true)), 4);
    assert_eq!(srtcp_index(&protect(&mut tx, &rtcp(9), true)), 4);
}

/// SRTCP index exhaustion: after 2^31 − 1 the context refuses to send.
#[test]
fn srtcp_index_exhaustion() {
    let (mut tx, mut rx) = pair(SrtpProfile::AesCm128HmacSha1_80, None);
    tx.set_next_rtcp_index(Ssrc(8), 0x7fff_ffff).unwrap();
    let c = protect(&mut tx, &rtcp(8), true);
    assert!(rx.unprotect_rtcp(&mut c.clone()).is_ok());
    let mut buf = rtcp(8);
    let n = buf.len();
    buf.resize(n + 64, 0);
    assert_eq!(tx.protect_rtcp(&mut buf, n), Err(SrtpError::IndexExhausted));
    assert_eq!(
        tx.set_next_rtcp_index(Ssrc(8), 0x8000_0000),
        Err(SrtpError::IndexExhausted)
    );
}

/// The fuzz hook on the vector packets (plain and protected) and on short garbage.
#[cfg(feature = "fuzz")]
#[test]
fn fuzz_one_smoke() {
    for line in LIBSRTP.lines().filter(|l| l.starts_with("rt")) {
        let f: Vec<&str> = line.split(' ').collect();
        fuzz_one(&hex(f[3]));
        fuzz_one(&hex(f[4]));
    }
    for len in 0..40u8 {
        fuzz_one(
            &(0..len)
                .map(|i| i.wrapping_mul(91) | 0x80)
                .collect::<Vec<u8>>(),
        );
    }
    fuzz_one(&[0x80; 3000]);
}
