//! The SRTP key derivation function (RFC 3711 §4.3) with key_derivation_rate 0.
//!
//! The PRF is AES in counter mode keyed with the master key (AES-128 or AES-256, RFC 6188
//! §3 and RFC 7714 §11 use the same construction). Its starting block is
//! `(master_salt XOR (label << 48)) << 16`, with the salt taken as a 112-bit number; the
//! 96-bit master salt of the GCM profiles is padded with zero bytes on the right to 112
//! bits, as libsrtp does.

use super::SrtpError;
use super::aes::{AesKey, cleanse};

/// The six labels of RFC 3711 §4.3.2 (key_derivation_rate 0, so `r` is always 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Label {
    RtpEncryption = 0,
    RtpAuth = 1,
    RtpSalt = 2,
    RtcpEncryption = 3,
    RtcpAuth = 4,
    RtcpSalt = 5,
}

/// The PRF keyed with one master key.
pub(crate) struct Kdf {
    aes: AesKey,
    salt: [u8; 14],
}

impl Kdf {
    /// Keys the PRF with a 16- or 32-byte master key and a 12- or 14-byte master salt.
    pub(crate) fn new(master_key: &[u8], master_salt: &[u8]) -> Result<Self, SrtpError> {
        let mut salt = [0u8; 14];
        salt.get_mut(..master_salt.len())
            .ok_or(SrtpError::Crypto)?
            .copy_from_slice(master_salt);
        Ok(Kdf {
            aes: AesKey::new(master_key)?,
            salt,
        })
    }

    /// Fills `out` with the session key material for `label`.
    pub(crate) fn derive(&self, label: Label, out: &mut [u8]) {
        let mut iv = [0u8; 16];
        iv[..14].copy_from_slice(&self.salt);
        // key_id = label || r (48 bits, zero) lines up with salt bytes 7..14.
        iv[7] ^= label as u8;
        out.fill(0);
        self.aes.ctr_xor(&iv, out);
    }
}

impl Drop for Kdf {
    fn drop(&mut self) {
        cleanse(&mut self.salt);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::srtp::test_util::hex;

    /// RFC 3711 Appendix B.3.
    #[test]
    fn rfc3711_b3_key_derivation() {
        let kdf = Kdf::new(
            &hex("E1F97A0D3E018BE0D64FA32C06DE4139"),
            &hex("0EC675AD498AFEEBB6960B3AABE6"),
        )
        .unwrap();
        let mut key = [0u8; 16];
        kdf.derive(Label::RtpEncryption, &mut key);
        assert_eq!(key[..], hex("C61E7A93744F39EE10734AFE3FF7A087")[..]);
        let mut salt = [0u8; 14];
        kdf.derive(Label::RtpSalt, &mut salt);
        assert_eq!(salt[..], hex("30CBBC08863D8C85D49DB34A9AE1")[..]);
        // The appendix prints 94 bytes of the auth keystream; SHA-1 uses the first 20.
        let mut auth = [0u8; 94];
        kdf.derive(Label::RtpAuth, &mut auth);
        assert_eq!(
            auth[..],
            hex("CEBE321F6FF7716B6FD4AB49AF256A15\
                 6D38BAA48F0A0ACF3C34E2359E6CDBCE\
                 E049646C43D9327AD175578EF7227098\
                 6371C10C9A369AC2F94A8C5FBCDDDC25\
                 6D6E919A48B610EF17C2041E47403576\
                 6B68642C59BBFC2F34DB60DBDFB2")[..]
        );
    }

    /// RFC 9335 Appendix A.2 prints the session key and salt that AEAD_AES_128_GCM
    /// derives from master key 000102..0f and the 96-bit master salt a0a1..ab; this pins
    /// the right-padding of the short salt.
    #[test]
    fn gcm_short_salt_is_right_padded() {
        let kdf = Kdf::new(
            &hex("000102030405060708090a0b0c0d0e0f"),
            &hex("a0a1a2a3a4a5a6a7a8a9aaab"),
        )
        .unwrap();
        let mut key = [0u8; 16];
        kdf.derive(Label::RtpEncryption, &mut key);
        assert_eq!(key[..], hex("077c6143cb221bc355ff23d5f984a16e")[..]);
        let mut salt = [0u8; 12];
        kdf.derive(Label::RtpSalt, &mut salt);
        assert_eq!(salt[..], hex("9af3e95364ebac9c99c5a7c4")[..]);
    }

    /// RFC 3711 Appendix B.2: the AES-CM keystream for session key 2B7E..3C and salt
    /// F0F1..FD with SSRC 0 and index 0, including the blocks around counter 0xff00.
    #[test]
    fn rfc3711_b2_keystream() {
        let aes = AesKey::new(&hex("2B7E151628AED2A6ABF7158809CF4F3C")).unwrap();
        let mut iv = [0u8; 16];
        iv[..14].copy_from_slice(&hex("F0F1F2F3F4F5F6F7F8F9FAFBFCFD"));
        let mut ks = vec![0u8; 0xff02 * 16];
        aes.ctr_xor(&iv, &mut ks);
        let block = |i: usize| &ks[i * 16..(i + 1) * 16];
        assert_eq!(block(0), &hex("E03EAD0935C95E80E166B16DD92B4EB4")[..]);
        assert_eq!(block(1), &hex("D23513162B02D0F72A43A2FE4A5F97AB")[..]);
        assert_eq!(block(2), &hex("41E95B3BB0A2E8DD477901E4FCA894C0")[..]);
        assert_eq!(block(0xfeff), &hex("EC8CDF7398607CB0F2D21675EA9EA1E4")[..]);
        assert_eq!(block(0xff00), &hex("362B7C3C6773516318A077D7FC5073AE")[..]);
        assert_eq!(block(0xff01), &hex("6A2CC3787889374FBEB4C81B17BA6C44")[..]);
    }
}
