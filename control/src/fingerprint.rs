//! The certificate fingerprint signaling pins for each session, in its SDP form.

use std::fmt;
use std::str::FromStr;

/// A SHA-256 certificate fingerprint (RFC 8122 `a=fingerprint:sha-256`), as the
/// control protocol carries it.
///
/// Parses from and displays as the SDP form: 32 two-digit hex pairs separated by `:`
/// ("AB:CD:…"). Displays in upper case; parsing also takes lower case. Computing one
/// from a certificate needs SHA-256, which this crate does not carry: the relay's DTLS
/// module has its own `Fingerprint` (same bytes, `From` both ways) that does.
#[derive(Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Fingerprint(pub [u8; 32]);

/// Why a fingerprint did not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FingerprintError {
    /// Not 32 hex pairs separated by single colons.
    #[error(
        "malformed SHA-256 fingerprint: expected 32 hex pairs separated by colons (\"AB:CD:...\")"
    )]
    Syntax,
    /// An SDP fingerprint attribute whose hash function is not sha-256.
    #[error("fingerprint hash function is not sha-256")]
    HashFunction,
}

impl Fingerprint {
    /// Parses the value of an SDP `a=fingerprint:` attribute, `"sha-256 AB:CD:…"`.
    ///
    /// Rejects a hash function other than `sha-256` (case-insensitive) with
    /// [`FingerprintError::HashFunction`] and a bad fingerprint as [`FromStr`] does.
    pub fn from_sdp_attribute(value: &str) -> Result<Self, FingerprintError> {
        let mut parts = value.split_ascii_whitespace();
        let hash = parts.next().ok_or(FingerprintError::Syntax)?;
        let fp = parts.next().ok_or(FingerprintError::Syntax)?;
        if parts.next().is_some() {
            return Err(FingerprintError::Syntax);
        }
        if !hash.eq_ignore_ascii_case("sha-256") {
            return Err(FingerprintError::HashFunction);
        }
        fp.parse()
    }
}

impl FromStr for Fingerprint {
    type Err = FingerprintError;

    /// Parses exactly 32 hex pairs separated by single colons, nothing else (no spaces,
    /// no prefix, no trailing colon).
    fn from_str(s: &str) -> Result<Self, FingerprintError> {
        let b = s.as_bytes();
        // 32 pairs + 31 colons.
        if b.len() != 32 * 3 - 1 {
            return Err(FingerprintError::Syntax);
        }
        let mut out = [0u8; 32];
        for (i, o) in out.iter_mut().enumerate() {
            let at = i * 3;
            let hi = b.get(at).copied().and_then(hex_val);
            let lo = b.get(at + 1).copied().and_then(hex_val);
            let (Some(hi), Some(lo)) = (hi, lo) else {
                return Err(FingerprintError::Syntax);
            };
            if i < 31 && b.get(at + 2) != Some(&b':') {
                return Err(FingerprintError::Syntax);
            }
            *o = (hi << 4) | lo;
        }
        Ok(Fingerprint(out))
    }
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'A'..=b'F' => Some(c - b'A' + 10),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{b:02X}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

impl TryFrom<String> for Fingerprint {
    type Error = FingerprintError;
    fn try_from(s: String) -> Result<Self, FingerprintError> {
        s.parse()
    }
}

impl From<Fingerprint> for String {
    fn from(v: Fingerprint) -> String {
        v.to_string()
    }
}
