//! SRTP protection profiles and master key material.

use super::SrtpError;
use super::aes::cleanse;

/// An SRTP protection profile (RFC 5764 §4.1.2, RFC 7714 §14.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SrtpProfile {
    /// AES-128 counter mode, HMAC-SHA1 with an 80-bit tag.
    AesCm128HmacSha1_80,
    /// AES-128 counter mode, HMAC-SHA1 with a 32-bit tag on SRTP; SRTCP still carries
    /// an 80-bit tag (RFC 5764 §4.1.2).
    AesCm128HmacSha1_32,
    /// AES-128 in Galois/counter mode, 16-byte tag (RFC 7714).
    AeadAes128Gcm,
    /// AES-256 in Galois/counter mode, 16-byte tag (RFC 7714).
    AeadAes256Gcm,
}

impl SrtpProfile {
    /// All profiles, for iteration in tests and tools.
    pub const ALL: [SrtpProfile; 4] = [
        SrtpProfile::AesCm128HmacSha1_80,
        SrtpProfile::AesCm128HmacSha1_32,
        SrtpProfile::AeadAes128Gcm,
        SrtpProfile::AeadAes256Gcm,
    ];

    /// The DTLS-SRTP protection profile identifier (`use_srtp` extension).
    pub const fn dtls_id(self) -> u16 {
        match self {
            SrtpProfile::AesCm128HmacSha1_80 => 0x0001,
            SrtpProfile::AesCm128HmacSha1_32 => 0x0002,
            SrtpProfile::AeadAes128Gcm => 0x0007,
            SrtpProfile::AeadAes256Gcm => 0x0008,
        }
    }

    /// The profile with DTLS-SRTP identifier `id`, if we implement it.
    pub const fn from_dtls_id(id: u16) -> Option<Self> {
        match id {
            0x0001 => Some(SrtpProfile::AesCm128HmacSha1_80),
            0x0002 => Some(SrtpProfile::AesCm128HmacSha1_32),
            0x0007 => Some(SrtpProfile::AeadAes128Gcm),
            0x0008 => Some(SrtpProfile::AeadAes256Gcm),
            _ => None,
        }
    }

    /// Whether the profile is an AEAD (GCM) one.
    pub const fn is_aead(self) -> bool {
        matches!(
            self,
            SrtpProfile::AeadAes128Gcm | SrtpProfile::AeadAes256Gcm
        )
    }

    /// Master (and session encryption) key length in bytes.
    pub const fn master_key_len(self) -> usize {
        match self {
            SrtpProfile::AeadAes256Gcm => 32,
            _ => 16,
        }
    }

    /// Master salt length in bytes: 14 for AES-CM, 12 for GCM.
    pub const fn master_salt_len(self) -> usize {
        if self.is_aead() { 12 } else { 14 }
    }

    /// Length of master key ‖ master salt.
    pub const fn master_len(self) -> usize {
        self.master_key_len() + self.master_salt_len()
    }

    /// Authentication tag length on SRTP packets.
    pub const fn rtp_tag_len(self) -> usize {
        match self {
            SrtpProfile::AesCm128HmacSha1_80 => 10,
            SrtpProfile::AesCm128HmacSha1_32 => 4,
            SrtpProfile::AeadAes128Gcm | SrtpProfile::AeadAes256Gcm => 16,
        }
    }

    /// Authentication tag length on SRTCP packets.
    pub const fn rtcp_tag_len(self) -> usize {
        if self.is_aead() { 16 } else { 10 }
    }
}

/// Longest master key ‖ salt of any profile (AES-256 key, 14-byte salt bound).
const MAX_MASTER_LEN: usize = 32 + 14;

/// A master key and master salt for one profile, zeroed on drop.
///
/// `Debug` prints only the profile.
#[derive(Clone)]
pub struct MasterKey {
    profile: SrtpProfile,
    bytes: [u8; MAX_MASTER_LEN],
}

impl MasterKey {
    /// Takes master key ‖ master salt, the layout SDES and the Blindfold key events use.
    ///
    /// Rejects material whose length is not [`SrtpProfile::master_len`]
    /// ([`SrtpError::BadMasterLength`]).
    pub fn new(profile: SrtpProfile, key_and_salt: &[u8]) -> Result<Self, SrtpError> {
        if key_and_salt.len() != profile.master_len() {
            return Err(SrtpError::BadMasterLength);
        }
        let mut bytes = [0u8; MAX_MASTER_LEN];
        bytes[..key_and_salt.len()].copy_from_slice(key_and_salt);
        Ok(MasterKey { profile, bytes })
    }

    /// Takes the key and the salt separately.
    ///
    /// Rejects lengths other than the profile's ([`SrtpError::BadMasterLength`]).
    pub fn from_parts(profile: SrtpProfile, key: &[u8], salt: &[u8]) -> Result<Self, SrtpError> {
        if key.len() != profile.master_key_len() || salt.len() != profile.master_salt_len() {
            return Err(SrtpError::BadMasterLength);
        }
        let mut bytes = [0u8; MAX_MASTER_LEN];
        bytes[..key.len()].copy_from_slice(key);
        bytes[key.len()..key.len() + salt.len()].copy_from_slice(salt);
        Ok(MasterKey { profile, bytes })
    }

    /// Splits DTLS-SRTP exported keying material (RFC 5764 §4.2: client key ‖ server
    /// key ‖ client salt ‖ server salt) into the client's and the server's write keys.
    ///
    /// Rejects material that is not exactly `2 · master_len` bytes
    /// ([`SrtpError::BadMasterLength`]).
    pub fn from_dtls_keying_material(
        profile: SrtpProfile,
        material: &[u8],
    ) -> Result<(MasterKey, MasterKey), SrtpError> {
        let k = profile.master_key_len();
        let s = profile.master_salt_len();
        if material.len() != 2 * (k + s) {
            return Err(SrtpError::BadMasterLength);
        }
        let (keys, salts) = material.split_at(2 * k);
        let client = Self::from_parts(profile, &keys[..k], &salts[..s])?;
        let server = Self::from_parts(profile, &keys[k..], &salts[s..])?;
        Ok((client, server))
    }

    /// The profile this material is for.
    pub fn profile(&self) -> SrtpProfile {
        self.profile
    }

    /// The master key.
    pub fn key(&self) -> &[u8] {
        &self.bytes[..self.profile.master_key_len()]
    }

    /// The master salt.
    pub fn salt(&self) -> &[u8] {
        &self.bytes[self.profile.master_key_len()..self.profile.master_len()]
    }

    /// Master key ‖ master salt.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.profile.master_len()]
    }
}

impl core::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("MasterKey")
            .field("profile", &self.profile)
            .finish_non_exhaustive()
    }
}

impl Drop for MasterKey {
    fn drop(&mut self) {
        cleanse(&mut self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_per_profile() {
        use SrtpProfile::*;
        let table = [
            (AesCm128HmacSha1_80, 16, 14, 10, 10),
            (AesCm128HmacSha1_32, 16, 14, 4, 10),
            (AeadAes128Gcm, 16, 12, 16, 16),
            (AeadAes256Gcm, 32, 12, 16, 16),
        ];
        for (p, k, s, rtp, rtcp) in table {
            assert_eq!(
                (
                    p.master_key_len(),
                    p.master_salt_len(),
                    p.rtp_tag_len(),
                    p.rtcp_tag_len()
                ),
                (k, s, rtp, rtcp)
            );
            assert_eq!(SrtpProfile::from_dtls_id(p.dtls_id()), Some(p));
        }
        assert_eq!(SrtpProfile::from_dtls_id(3), None);
    }

    #[test]
    fn master_key_material() {
        let p = SrtpProfile::AeadAes128Gcm;
        assert_eq!(
            MasterKey::new(p, &[0; 27]).unwrap_err(),
            SrtpError::BadMasterLength
        );
        let m = MasterKey::new(p, &(0..28).collect::<Vec<u8>>()).unwrap();
        assert_eq!(m.key(), &(0..16).collect::<Vec<u8>>()[..]);
        assert_eq!(m.salt(), &(16..28).collect::<Vec<u8>>()[..]);
        assert_eq!(format!("{m:?}"), "MasterKey { profile: AeadAes128Gcm, .. }");
        let material: Vec<u8> = (0..56).collect();
        let (c, s) = MasterKey::from_dtls_keying_material(p, &material).unwrap();
        assert_eq!(c.key(), &material[..16]);
        assert_eq!(s.key(), &material[16..32]);
        assert_eq!(c.salt(), &material[32..44]);
        assert_eq!(s.salt(), &material[44..56]);
        assert!(MasterKey::from_dtls_keying_material(p, &material[1..]).is_err());
    }
}
