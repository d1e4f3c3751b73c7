//! The per-key cryptographic transforms: AES-CM + HMAC-SHA1 (RFC 3711 §4.1.1, §4.2.1)
//! and AES-GCM (RFC 7714 §8, §9), each keyed once at setup.
//!
//! These functions see only byte ranges the caller has already bounds-checked; they do
//! the cipher, the IV and the tag, nothing about packet layout or replay.

use aws_lc_rs::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::hmac;
use subtle::ConstantTimeEq;

use super::SrtpError;
use super::aes::{AesKey, cleanse};
use super::kdf::{Kdf, Label};
use super::profile::SrtpProfile;

/// HMAC-SHA1 key length (RFC 3711 §5.2: n_a = 160 bits).
const AUTH_KEY_LEN: usize = 20;
/// GCM tag length (RFC 7714 §12 profiles use 16 octets).
pub(crate) const GCM_TAG_LEN: usize = 16;

/// One direction-independent transform (for SRTP or for SRTCP) under one master key.
///
/// The AES-CM variant is large (the AES schedule and the HMAC context are inline); it
/// lives in the context's key table, built once, so it is not boxed: a packet then
/// touches no extra pointer.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Transform {
    AesCm {
        aes: AesKey,
        salt: [u8; 14],
        auth: hmac::Key,
    },
    Gcm {
        key: LessSafeKey,
        salt: [u8; 12],
    },
}

impl Transform {
    /// Derives the SRTP (`rtcp == false`) or SRTCP session keys from a master key.
    pub(crate) fn derive(
        profile: SrtpProfile,
        master_key: &[u8],
        master_salt: &[u8],
        rtcp: bool,
    ) -> Result<Self, SrtpError> {
        let kdf = Kdf::new(master_key, master_salt)?;
        let (enc, auth, salt) = if rtcp {
            (Label::RtcpEncryption, Label::RtcpAuth, Label::RtcpSalt)
        } else {
            (Label::RtpEncryption, Label::RtpAuth, Label::RtpSalt)
        };
        let mut key = [0u8; 32];
        let key = &mut key[..profile.master_key_len()];
        kdf.derive(enc, key);
        let t = if profile.is_aead() {
            let mut s = [0u8; 12];
            kdf.derive(salt, &mut s);
            Self::gcm(key, s)
        } else {
            let mut s = [0u8; 14];
            kdf.derive(salt, &mut s);
            let mut a = [0u8; AUTH_KEY_LEN];
            kdf.derive(auth, &mut a);
            let t = Self::aes_cm(key, s, &a);
            cleanse(&mut a);
            t
        };
        cleanse(key);
        t
    }

    /// Builds an AES-CM transform from session keys.
    pub(crate) fn aes_cm(key: &[u8], salt: [u8; 14], auth: &[u8]) -> Result<Self, SrtpError> {
        Ok(Transform::AesCm {
            aes: AesKey::new(key)?,
            salt,
            auth: hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, auth),
        })
    }

    /// Builds a GCM transform from a 16- or 32-byte session key and a 12-byte salt.
    pub(crate) fn gcm(key: &[u8], salt: [u8; 12]) -> Result<Self, SrtpError> {
        let alg = match key.len() {
            16 => &aead::AES_128_GCM,
            32 => &aead::AES_256_GCM,
            _ => return Err(SrtpError::Crypto),
        };
        let key = UnboundKey::new(alg, key).map_err(|_| SrtpError::Crypto)?;
        Ok(Transform::Gcm {
            key: LessSafeKey::new(key),
            salt,
        })
    }

    /// AES-CM: XORs the keystream for (`ssrc`, `index`) into `data` (RFC 3711 §4.1.1:
    /// IV = (k_s · 2^16) ⊕ (SSRC · 2^64) ⊕ (i · 2^16)).
    pub(crate) fn cm_xor(aes: &AesKey, salt: &[u8; 14], ssrc: u32, index: u64, data: &mut [u8]) {
        let mut iv = [0u8; 16];
        iv[..14].copy_from_slice(salt);
        for (d, s) in iv[4..8].iter_mut().zip(ssrc.to_be_bytes()) {
            *d ^= s;
        }
        for (d, s) in iv[8..14].iter_mut().zip(&index.to_be_bytes()[2..]) {
            *d ^= s;
        }
        aes.ctr_xor(&iv, data);
    }

    /// HMAC-SHA1 over `first ‖ second`, the full 20 bytes.
    pub(crate) fn hmac(auth: &hmac::Key, first: &[u8], second: &[u8]) -> hmac::Tag {
        let mut ctx = hmac::Context::with_key(auth);
        ctx.update(first);
        ctx.update(second);
        ctx.sign()
    }

    /// Constant-time check that `tag` is the truncation of `computed`.
    pub(crate) fn tag_matches(computed: &hmac::Tag, tag: &[u8]) -> bool {
        computed
            .as_ref()
            .get(..tag.len())
            .is_some_and(|c| bool::from(c.ct_eq(tag)))
    }

    /// The GCM nonce for SRTP (RFC 7714 §8.1): `00 00 ‖ SSRC ‖ ROC ‖ SEQ`, XOR salt.
    /// The same layout with `index` in the last four bytes is the SRTCP nonce (§9.1),
    /// so both pass the 48-bit (SRTP) or 31-bit (SRTCP) index here.
    pub(crate) fn gcm_nonce(salt: &[u8; 12], ssrc: u32, index: u64) -> Nonce {
        let mut iv = [0u8; 12];
        iv[2..6].copy_from_slice(&ssrc.to_be_bytes());
        iv[6..12].copy_from_slice(&index.to_be_bytes()[2..]);
        for (d, s) in iv.iter_mut().zip(salt) {
            *d ^= s;
        }
        Nonce::assume_unique_for_key(iv)
    }

    /// GCM seal of `data` in place; returns the tag.
    pub(crate) fn gcm_seal(
        key: &LessSafeKey,
        nonce: Nonce,
        aad: &[u8],
        data: &mut [u8],
    ) -> Result<aead::Tag, SrtpError> {
        key.seal_in_place_separate_tag(nonce, Aad::from(aad), data)
            .map_err(|_| SrtpError::Crypto)
    }

    /// GCM open of `data` (ciphertext ‖ tag) in place; returns the plaintext length.
    pub(crate) fn gcm_open(
        key: &LessSafeKey,
        nonce: Nonce,
        aad: &[u8],
        data: &mut [u8],
    ) -> Result<usize, SrtpError> {
        key.open_in_place(nonce, Aad::from(aad), data)
            .map(|p| p.len())
            .map_err(|_| SrtpError::AuthFailed)
    }
}

impl Drop for Transform {
    fn drop(&mut self) {
        match self {
            Transform::AesCm { salt, .. } => cleanse(salt),
            Transform::Gcm { salt, .. } => cleanse(salt),
        }
    }
}
