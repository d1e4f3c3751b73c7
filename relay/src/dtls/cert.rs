//! The relay's DTLS identity and the fingerprints that pin certificates.

use super::*;

// ---------------------------------------------------------------------------------------
// Fingerprint
// ---------------------------------------------------------------------------------------

/// A SHA-256 certificate fingerprint (RFC 8122 `a=fingerprint:sha-256`).
///
/// Parses from and displays as the SDP form: 32 two-digit hex pairs separated by `:`
/// ("AB:CD:…"). Displays in upper case; parsing also takes lower case.
///
/// The control protocol carries the same bytes as [`blindfold_control::Fingerprint`]
/// (its codec has no SHA-256); `From` converts either way.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 32]);

impl From<blindfold_control::Fingerprint> for Fingerprint {
    fn from(f: blindfold_control::Fingerprint) -> Self {
        Fingerprint(f.0)
    }
}

impl From<Fingerprint> for blindfold_control::Fingerprint {
    fn from(f: Fingerprint) -> Self {
        blindfold_control::Fingerprint(f.0)
    }
}

impl Fingerprint {
    /// SHA-256 of a DER certificate.
    pub fn of_der(cert_der: &[u8]) -> Self {
        let d = digest::digest(&digest::SHA256, cert_der);
        let mut out = [0u8; 32];
        out.copy_from_slice(d.as_ref());
        Fingerprint(out)
    }

    /// Parses the value of an SDP `a=fingerprint:` attribute, `"sha-256 AB:CD:…"`.
    ///
    /// Rejects a hash function other than `sha-256` (case-insensitive) with
    /// [`DtlsError::FingerprintHashFunction`] and a bad fingerprint as [`FromStr`] does.
    pub fn from_sdp_attribute(value: &str) -> Result<Self, DtlsError> {
        // One parser, the control codec's; its errors become ours.
        blindfold_control::Fingerprint::from_sdp_attribute(value)
            .map(Self::from)
            .map_err(DtlsError::from)
    }
}

impl From<blindfold_control::FingerprintError> for DtlsError {
    fn from(e: blindfold_control::FingerprintError) -> Self {
        match e {
            blindfold_control::FingerprintError::HashFunction => DtlsError::FingerprintHashFunction,
            _ => DtlsError::FingerprintSyntax,
        }
    }
}

impl FromStr for Fingerprint {
    type Err = DtlsError;

    /// Parses exactly 32 hex pairs separated by single colons, nothing else (no spaces,
    /// no prefix, no trailing colon). Anything else is [`DtlsError::FingerprintSyntax`].
    fn from_str(s: &str) -> Result<Self, DtlsError> {
        s.parse::<blindfold_control::Fingerprint>()
            .map(Self::from)
            .map_err(DtlsError::from)
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&blindfold_control::Fingerprint(self.0), f)
    }
}

impl TryFrom<String> for Fingerprint {
    type Error = DtlsError;
    fn try_from(s: String) -> Result<Self, DtlsError> {
        s.parse()
    }
}

impl From<Fingerprint> for String {
    fn from(v: Fingerprint) -> String {
        v.to_string()
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

// ---------------------------------------------------------------------------------------
// Certificate
// ---------------------------------------------------------------------------------------

/// The relay's DTLS identity: a certificate and its ECDSA P-256 private key.
///
/// Load it once (from PEM/DER, or generate a self-signed one) and share it by reference
/// among sessions. Loading checks the key is P-256 and the certificate carries its
/// public key, so starting a session cannot fail on it later.
#[derive(Clone)]
pub struct DtlsCert {
    pub(super) inner: dimpl::DtlsCertificate,
    fingerprint: Fingerprint,
}

impl fmt::Debug for DtlsCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DtlsCert")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

impl DtlsCert {
    /// Generates a fresh self-signed ECDSA P-256 certificate (rcgen, through dimpl),
    /// valid for a year, with a random serial number.
    ///
    /// Fails with [`CertFailure::Generate`] if rcgen does.
    pub fn generate() -> Result<Self, DtlsError> {
        let c = dimpl::certificate::generate_self_signed_certificate()
            .map_err(|_| DtlsError::BadCertificate(CertFailure::Generate))?;
        Self::from_der(c.certificate, c.private_key)
    }

    /// Loads a DER certificate and a DER private key (PKCS#8, or SEC1 "EC PRIVATE KEY").
    ///
    /// Rejects a key that is not ECDSA ([`CertFailure::Key`]), not P-256
    /// ([`CertFailure::NotP256`]), or a certificate that does not parse or does not
    /// hold the key's public key ([`CertFailure::Mismatch`]).
    pub fn from_der(cert_der: Vec<u8>, key_der: Vec<u8>) -> Result<Self, DtlsError> {
        let bad = DtlsError::BadCertificate;
        let provider = dimpl::crypto::aws_lc_rs::default_provider();
        let mut key = provider
            .key_provider
            .load_private_key(&key_der)
            .map_err(|_| bad(CertFailure::Key))?;
        if key.algorithm() != dimpl::SignatureAlgorithm::ECDSA {
            return Err(bad(CertFailure::Key));
        }
        if key.hash_algorithm() != dimpl::HashAlgorithm::SHA256 {
            return Err(bad(CertFailure::NotP256));
        }
        // Sign with the key and verify against the certificate's public key: this is
        // exactly what the peer will do with our CertificateVerify/ServerKeyExchange.
        const PROBE: &[u8] = b"blindfold dtls certificate self-check";
        let mut sig = dimpl::crypto::Buf::new();
        key.sign(PROBE, dimpl::HashAlgorithm::SHA256, &mut sig)
            .map_err(|_| bad(CertFailure::Key))?;
        provider
            .signature_verification
            .verify_signature(
                &cert_der,
                PROBE,
                &sig,
                dimpl::HashAlgorithm::SHA256,
                dimpl::SignatureAlgorithm::ECDSA,
            )
            .map_err(|_| bad(CertFailure::Mismatch))?;
        let fingerprint = Fingerprint::of_der(&cert_der);
        Ok(DtlsCert {
            inner: dimpl::DtlsCertificate {
                certificate: cert_der,
                private_key: key_der,
            },
            fingerprint,
        })
    }

    /// Loads a PEM certificate (first `CERTIFICATE` block) and PEM private key (first
    /// `PRIVATE KEY` or `EC PRIVATE KEY` block).
    ///
    /// Rejects missing blocks or bad base64 ([`CertFailure::Pem`]), then as
    /// [`DtlsCert::from_der`].
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, DtlsError> {
        let pem = DtlsError::BadCertificate(CertFailure::Pem);
        let cert = pem_decode(cert_pem, &["CERTIFICATE"]).ok_or(pem)?;
        let key = pem_decode(key_pem, &["PRIVATE KEY", "EC PRIVATE KEY"]).ok_or(pem)?;
        Self::from_der(cert, key)
    }

    /// The certificate as PEM, for persisting a generated identity.
    pub fn certificate_pem(&self) -> String {
        pem_encode("CERTIFICATE", &self.inner.certificate)
    }

    /// The private key as PEM (`PRIVATE KEY` or `EC PRIVATE KEY`, as loaded).
    pub fn private_key_pem(&self) -> String {
        // PKCS#8 starts SEQUENCE { INTEGER 0, SEQUENCE { OID … } }; SEC1 has INTEGER 1.
        let label = match self.inner.private_key.get(2..5) {
            Some([0x02, 0x01, 0x01]) => "EC PRIVATE KEY",
            _ => match self.inner.private_key.get(3..6) {
                Some([0x02, 0x01, 0x01]) => "EC PRIVATE KEY",
                _ => "PRIVATE KEY",
            },
        };
        pem_encode(label, &self.inner.private_key)
    }

    /// The certificate in DER.
    pub fn certificate_der(&self) -> &[u8] {
        &self.inner.certificate
    }

    /// The private key in DER (PKCS#8 or SEC1, as loaded). Shared so the participant
    /// library can hand the same identity to a dimpl client.
    pub fn private_key_der(&self) -> &[u8] {
        &self.inner.private_key
    }

    /// The certificate's SHA-256 fingerprint.
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    /// The fingerprint as SDP wants it after `a=fingerprint:sha-256 `: 32 upper-case hex
    /// pairs joined by colons.
    pub fn fingerprint_sha256(&self) -> String {
        self.fingerprint.to_string()
    }
}

pub(super) const B64: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

pub(super) fn b64_val(c: u8) -> Option<u32> {
    match c {
        b'A'..=b'Z' => Some(u32::from(c - b'A')),
        b'a'..=b'z' => Some(u32::from(c - b'a') + 26),
        b'0'..=b'9' => Some(u32::from(c - b'0') + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    }
}

/// The body of the first PEM block whose label is one of `labels`, base64-decoded.
/// `None` if there is no such block, it is not closed by a matching END line, or its
/// base64 is malformed or empty.
pub(super) fn pem_decode(pem: &str, labels: &[&str]) -> Option<Vec<u8>> {
    let mut lines = pem.lines().map(str::trim);
    let label = loop {
        let line = lines.next()?;
        if let Some(l) = line
            .strip_prefix("-----BEGIN ")
            .and_then(|r| r.strip_suffix("-----"))
            && labels.contains(&l)
        {
            break l;
        }
    };
    let mut text = Vec::new();
    let mut closed = false;
    for line in lines {
        if let Some(end) = line
            .strip_prefix("-----END ")
            .and_then(|r| r.strip_suffix("-----"))
        {
            closed = end == label;
            break;
        }
        text.extend(line.bytes().filter(|c| !c.is_ascii_whitespace()));
    }
    if !closed || text.is_empty() || text.len() % 4 != 0 {
        return None;
    }
    let pad = text.iter().rev().take_while(|&&c| c == b'=').count();
    if pad > 2 {
        return None;
    }
    let data = text.get(..text.len() - pad)?;
    let mut out = Vec::with_capacity(data.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &c in data {
        acc = (acc << 6) | b64_val(c)?;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

pub(super) fn pem_encode(label: &str, der: &[u8]) -> String {
    let mut b64 = String::with_capacity(der.len() * 4 / 3 + 4);
    for chunk in der.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | (u32::from(b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                b64.push(char::from(B64[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                b64.push('=');
            }
        }
    }
    let mut s = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        s.push_str(std::str::from_utf8(line).unwrap_or_default());
        s.push('\n');
    }
    s.push_str(&format!("-----END {label}-----\n"));
    s
}
