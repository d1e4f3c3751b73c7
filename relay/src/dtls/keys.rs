//! The SRTP profiles use_srtp negotiates and the keying material DTLS exports.

use super::*;

// ---------------------------------------------------------------------------------------
// SRTP profiles and keying material
// ---------------------------------------------------------------------------------------

/// An SRTP protection profile negotiated by use_srtp (RFC 5764 §4.1.2, RFC 7714 §14.2).
///
/// This is the DTLS module's own enum: the SRTP module has its own, and the engine maps
/// between them by [`DtlsSrtpProfile::iana_id`] or variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DtlsSrtpProfile {
    /// SRTP_AEAD_AES_256_GCM (0x0008): 32-byte key, 12-byte salt.
    AeadAes256Gcm,
    /// SRTP_AEAD_AES_128_GCM (0x0007): 16-byte key, 12-byte salt.
    AeadAes128Gcm,
    /// SRTP_AES128_CM_HMAC_SHA1_80 (0x0001): 16-byte key, 14-byte salt.
    AesCm128HmacSha1_80,
}

impl DtlsSrtpProfile {
    /// The profiles this server accepts, most preferred first.
    pub const PREFERENCE: [DtlsSrtpProfile; 3] = [
        Self::AeadAes256Gcm,
        Self::AeadAes128Gcm,
        Self::AesCm128HmacSha1_80,
    ];

    /// Master key length in bytes.
    pub const fn key_len(self) -> usize {
        match self {
            Self::AeadAes256Gcm => 32,
            Self::AeadAes128Gcm | Self::AesCm128HmacSha1_80 => 16,
        }
    }

    /// Master salt length in bytes.
    pub const fn salt_len(self) -> usize {
        match self {
            Self::AeadAes256Gcm | Self::AeadAes128Gcm => 12,
            Self::AesCm128HmacSha1_80 => 14,
        }
    }

    /// Bytes exported from the DTLS session: 2 × (key + salt).
    pub const fn keying_material_len(self) -> usize {
        2 * (self.key_len() + self.salt_len())
    }

    /// The SRTPProtectionProfile value on the wire.
    pub const fn iana_id(self) -> u16 {
        match self {
            Self::AeadAes256Gcm => 0x0008,
            Self::AeadAes128Gcm => 0x0007,
            Self::AesCm128HmacSha1_80 => 0x0001,
        }
    }

    /// The IANA name ("SRTP_AEAD_AES_128_GCM", …), as used in the key events.
    pub const fn name(self) -> &'static str {
        match self {
            Self::AeadAes256Gcm => "SRTP_AEAD_AES_256_GCM",
            Self::AeadAes128Gcm => "SRTP_AEAD_AES_128_GCM",
            Self::AesCm128HmacSha1_80 => "SRTP_AES128_CM_SHA1_80",
        }
    }

    /// The profile dimpl negotiated, if it is one of ours (`None` for any other).
    pub(crate) fn from_dimpl(p: dimpl::SrtpProfile) -> Option<Self> {
        match p {
            dimpl::SrtpProfile::AEAD_AES_256_GCM => Some(Self::AeadAes256Gcm),
            dimpl::SrtpProfile::AEAD_AES_128_GCM => Some(Self::AeadAes128Gcm),
            dimpl::SrtpProfile::AES128_CM_SHA1_80 => Some(Self::AesCm128HmacSha1_80),
            _ => None,
        }
    }
}

impl fmt::Display for DtlsSrtpProfile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Longest key + salt among the profiles (AES-256: 32 + 12; AES-CM: 16 + 14).
pub(super) const MAX_KEY_SALT: usize = 46;

/// One direction's SRTP master key and master salt, stored contiguously as key ‖ salt
/// (the form the key events and the SRTP module take).
///
/// `Debug` does not print the bytes. The bytes are zeroed on drop (best effort).
#[derive(Clone, PartialEq, Eq)]
pub struct SrtpMasterKey {
    buf: [u8; MAX_KEY_SALT],
    key_len: u8,
    salt_len: u8,
}

impl SrtpMasterKey {
    /// The master key.
    pub fn key(&self) -> &[u8] {
        &self.buf[..usize::from(self.key_len)]
    }

    /// The master salt.
    pub fn salt(&self) -> &[u8] {
        &self.buf[usize::from(self.key_len)..self.key_salt().len()]
    }

    /// Key ‖ salt.
    pub fn key_salt(&self) -> &[u8] {
        &self.buf[..usize::from(self.key_len) + usize::from(self.salt_len)]
    }

    fn new(key: &[u8], salt: &[u8]) -> Self {
        let mut buf = [0u8; MAX_KEY_SALT];
        buf[..key.len()].copy_from_slice(key);
        buf[key.len()..key.len() + salt.len()].copy_from_slice(salt);
        SrtpMasterKey {
            buf,
            key_len: key.len() as u8,
            salt_len: salt.len() as u8,
        }
    }
}

impl Drop for SrtpMasterKey {
    fn drop(&mut self) {
        self.buf.fill(0);
    }
}

impl fmt::Debug for SrtpMasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SrtpMasterKey({} key + {} salt bytes, redacted)",
            self.key_len, self.salt_len
        )
    }
}

/// The DTLS-SRTP keys of one session (RFC 5764 §4.2): the exporter output with label
/// "EXTRACTOR-dtls_srtp", no context, 2 × (key + salt) bytes, split as
/// client_write_key ‖ server_write_key ‖ client_write_salt ‖ server_write_salt.
///
/// The relay is the DTLS server, so it **decrypts** what the participant sends with
/// [`client_master`](Self::client_master) and **encrypts** what it sends to the
/// participant with [`server_master`](Self::server_master).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrtpKeyMaterial {
    /// The negotiated protection profile.
    pub profile: DtlsSrtpProfile,
    /// The client's (participant's) write key and salt: the relay's inbound keys.
    pub client_master: SrtpMasterKey,
    /// The server's (relay's) write key and salt: the relay's outbound keys.
    pub server_master: SrtpMasterKey,
}

impl SrtpKeyMaterial {
    /// Splits raw exporter output for `profile`.
    ///
    /// Rejects material whose length is not [`DtlsSrtpProfile::keying_material_len`]
    /// with [`DtlsError::KeyingMaterialLength`].
    pub fn from_exported(profile: DtlsSrtpProfile, material: &[u8]) -> Result<Self, DtlsError> {
        let (k, s) = (profile.key_len(), profile.salt_len());
        if material.len() != profile.keying_material_len() {
            return Err(DtlsError::KeyingMaterialLength);
        }
        let (ck, rest) = material.split_at(k);
        let (sk, rest) = rest.split_at(k);
        let (cs, ss) = rest.split_at(s);
        Ok(SrtpKeyMaterial {
            profile,
            client_master: SrtpMasterKey::new(ck, cs),
            server_master: SrtpMasterKey::new(sk, ss),
        })
    }
}
