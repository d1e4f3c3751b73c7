//! STUN (RFC 5389 / RFC 8489) for ICE: parse and build.
//!
//! The relay is an ICE-lite agent (RFC 8445 §2.5): it answers Binding requests that carry
//! the session's short-term credentials and never sends checks of its own. This module
//! holds the wire format only; the agent lives elsewhere.
//!
//! - [`StunMessage`] is a view over a received datagram. [`StunMessage::parse`] checks the
//!   header and walks the attributes once; the typed getters then read straight from the
//!   buffer. [`StunMessage::verify_integrity`] and [`StunMessage::verify_fingerprint`]
//!   authenticate it without allocating.
//! - [`StunWriter`] builds a message into the caller's buffer and returns its length.
//!
//! ```
//! use blindfold_relay::wire::stun::{Class, Method, StunMessage, StunWriter, TransactionId};
//!
//! let key = b"VOkJxbRl1RmTxUk/WvJxBt";
//! let tid = TransactionId([7; 12]);
//! let mut buf = [0u8; 128];
//! let mut w = StunWriter::new(&mut buf, Class::Request, Method::Binding, tid)?;
//! w.add_username("evtj:h6vY")?;
//! w.add_priority(0x6e00_01ff)?;
//! w.add_use_candidate()?;
//! let len = w.finish_with_integrity_and_fingerprint(key)?;
//!
//! let msg = StunMessage::parse(&buf[..len])?;
//! msg.verify_fingerprint()?;
//! msg.verify_integrity(key)?;
//! assert_eq!(msg.username()?, Some("evtj:h6vY"));
//! assert!(msg.use_candidate()?);
//! assert_eq!(msg.first_unknown_required(), None);
//! # Ok::<(), blindfold_relay::wire::stun::StunError>(())
//! ```
//!
//! # Which attributes count
//!
//! RFC 5389 §15.4: everything after MESSAGE-INTEGRITY except FINGERPRINT is ignored. The
//! typed getters and [`StunMessage::unknown_required`] honour that: they see only the
//! attributes up to and including the first MESSAGE-INTEGRITY. When an attribute appears
//! more than once, the getters return the first (RFC 8489 §14). The raw
//! [`StunMessage::attributes`] iterator shows every attribute on the wire.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use aws_lc_rs::hmac;
use subtle::ConstantTimeEq;

/// The fixed magic cookie of RFC 5389 §6.
pub const MAGIC_COOKIE: u32 = 0x2112_a442;

/// Length of the STUN header.
pub const HEADER_LEN: usize = 20;

/// Length of a MESSAGE-INTEGRITY value (HMAC-SHA1).
pub const INTEGRITY_LEN: usize = 20;

/// What FINGERPRINT's CRC-32 is XORed with (RFC 5389 §15.5).
pub const FINGERPRINT_XOR: u32 = 0x5354_554e;

/// Longest USERNAME value (RFC 5389 §15.3), in bytes.
pub const MAX_USERNAME_LEN: usize = 513;

/// Longest ERROR-CODE reason phrase (RFC 5389 §15.6), in bytes.
pub const MAX_REASON_LEN: usize = 763;

/// Largest value of the header's length field: 16 bits, rounded down to a multiple of 4.
const MAX_BODY_LEN: usize = 0xfffc;

/// Why a buffer is not an acceptable STUN message, or why a message could not be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StunError {
    /// Shorter than the 20-byte header.
    #[error("shorter than the STUN header")]
    TooShort,
    /// The two most significant bits of the message are not zero.
    #[error("leading bits are not zero")]
    NotStun,
    /// The magic cookie is not 0x2112A442 (RFC 3489 messages land here too).
    #[error("wrong magic cookie")]
    BadMagicCookie,
    /// The header's length field is not a multiple of 4.
    #[error("message length is not a multiple of 4")]
    UnalignedLength,
    /// The header's length field does not match the datagram's length.
    #[error("message length does not match the datagram")]
    LengthMismatch,
    /// An attribute (with its padding) runs past the end of the message.
    #[error("attribute runs past the end of the message")]
    AttributeOverrun,
    /// An attribute follows FINGERPRINT, which must be last (RFC 5389 §15.5).
    #[error("attribute after FINGERPRINT")]
    AttributeAfterFingerprint,
    /// An attribute we read has a value length its definition does not allow.
    #[error("attribute {0:?} has a bad length")]
    BadAttributeLength(AttrType),
    /// USERNAME is longer than 513 bytes.
    #[error("USERNAME longer than 513 bytes")]
    UsernameTooLong,
    /// USERNAME, SOFTWARE or an ERROR-CODE reason is not UTF-8.
    #[error("text attribute is not UTF-8")]
    NotUtf8,
    /// An address attribute's family is neither IPv4 (1) nor IPv6 (2).
    #[error("unknown address family")]
    UnknownAddressFamily,
    /// ERROR-CODE's class is outside 3..=6 or its number above 99; or, when building, the
    /// code is outside 300..=699.
    #[error("error code out of range")]
    BadErrorCode,
    /// An ERROR-CODE reason phrase is longer than 763 bytes.
    #[error("error reason longer than 763 bytes")]
    ReasonTooLong,
    /// There is no MESSAGE-INTEGRITY attribute.
    #[error("no MESSAGE-INTEGRITY")]
    MissingIntegrity,
    /// MESSAGE-INTEGRITY does not match the key.
    #[error("MESSAGE-INTEGRITY does not match")]
    IntegrityMismatch,
    /// There is no FINGERPRINT attribute.
    #[error("no FINGERPRINT")]
    MissingFingerprint,
    /// FINGERPRINT does not match the message.
    #[error("FINGERPRINT does not match")]
    FingerprintMismatch,
    /// Building: the caller's buffer is too small for the message.
    #[error("buffer too small")]
    BufferTooSmall,
    /// Building: the message or an attribute value would exceed STUN's 16-bit lengths.
    #[error("message or attribute too long for STUN")]
    TooLong,
    /// Building: the method does not fit in 12 bits.
    #[error("method does not fit in 12 bits")]
    MethodOutOfRange,
}

/// The class of a message (RFC 5389 §6): the two C bits of the message type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// A request (0b00).
    Request,
    /// An indication (0b01).
    Indication,
    /// A success response (0b10).
    SuccessResponse,
    /// An error response (0b11).
    ErrorResponse,
}

impl Class {
    fn from_bits(bits: u16) -> Self {
        match bits & 0b11 {
            0b00 => Class::Request,
            0b01 => Class::Indication,
            0b10 => Class::SuccessResponse,
            _ => Class::ErrorResponse,
        }
    }

    fn bits(self) -> u16 {
        match self {
            Class::Request => 0b00,
            Class::Indication => 0b01,
            Class::SuccessResponse => 0b10,
            Class::ErrorResponse => 0b11,
        }
    }
}

/// The method of a message: the 12 M bits of the message type.
///
/// ICE uses only Binding; the rest are carried as [`Method::Other`] so a parsed message
/// can be counted and rebuilt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    /// Binding (0x001).
    Binding,
    /// Any other method, as its 12-bit number (never 0x001 when produced by parsing).
    Other(u16),
}

impl Method {
    /// The method with this 12-bit number (higher bits are ignored).
    pub fn from_bits(bits: u16) -> Self {
        match bits & 0x0fff {
            0x001 => Method::Binding,
            m => Method::Other(m),
        }
    }

    /// The method's number.
    pub fn bits(self) -> u16 {
        match self {
            Method::Binding => 0x001,
            Method::Other(m) => m,
        }
    }
}

/// Combines class and method into the 14-bit message type (RFC 5389 §6, figure 3).
fn message_type(class: Class, method: u16) -> u16 {
    let c = class.bits();
    (method & 0x000f)
        | ((method & 0x0070) << 1)
        | ((method & 0x0f80) << 2)
        | ((c & 0b01) << 4)
        | ((c & 0b10) << 7)
}

/// The 96-bit transaction id (RFC 5389 §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TransactionId(pub [u8; 12]);

/// A STUN attribute type. The associated constants name the ones ICE uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AttrType(pub u16);

impl AttrType {
    /// MAPPED-ADDRESS (RFC 5389 §15.1).
    pub const MAPPED_ADDRESS: AttrType = AttrType(0x0001);
    /// USERNAME (RFC 5389 §15.3).
    pub const USERNAME: AttrType = AttrType(0x0006);
    /// MESSAGE-INTEGRITY (RFC 5389 §15.4).
    pub const MESSAGE_INTEGRITY: AttrType = AttrType(0x0008);
    /// ERROR-CODE (RFC 5389 §15.6).
    pub const ERROR_CODE: AttrType = AttrType(0x0009);
    /// UNKNOWN-ATTRIBUTES (RFC 5389 §15.9).
    pub const UNKNOWN_ATTRIBUTES: AttrType = AttrType(0x000a);
    /// REALM (RFC 5389 §15.7), long-term credentials only.
    pub const REALM: AttrType = AttrType(0x0014);
    /// NONCE (RFC 5389 §15.8), long-term credentials only.
    pub const NONCE: AttrType = AttrType(0x0015);
    /// MESSAGE-INTEGRITY-SHA256 (RFC 8489 §14.6).
    pub const MESSAGE_INTEGRITY_SHA256: AttrType = AttrType(0x001c);
    /// PASSWORD-ALGORITHM (RFC 8489 §14.12).
    pub const PASSWORD_ALGORITHM: AttrType = AttrType(0x001d);
    /// USERHASH (RFC 8489 §14.4).
    pub const USERHASH: AttrType = AttrType(0x001e);
    /// XOR-MAPPED-ADDRESS (RFC 5389 §15.2).
    pub const XOR_MAPPED_ADDRESS: AttrType = AttrType(0x0020);
    /// PRIORITY (RFC 8445 §16.1).
    pub const PRIORITY: AttrType = AttrType(0x0024);
    /// USE-CANDIDATE (RFC 8445 §16.1).
    pub const USE_CANDIDATE: AttrType = AttrType(0x0025);
    /// PASSWORD-ALGORITHMS (RFC 8489 §14.11).
    pub const PASSWORD_ALGORITHMS: AttrType = AttrType(0x8002);
    /// ALTERNATE-DOMAIN (RFC 8489 §14.16).
    pub const ALTERNATE_DOMAIN: AttrType = AttrType(0x8003);
    /// SOFTWARE (RFC 5389 §15.10).
    pub const SOFTWARE: AttrType = AttrType(0x8022);
    /// ALTERNATE-SERVER (RFC 5389 §15.11).
    pub const ALTERNATE_SERVER: AttrType = AttrType(0x8023);
    /// FINGERPRINT (RFC 5389 §15.5).
    pub const FINGERPRINT: AttrType = AttrType(0x8028);
    /// ICE-CONTROLLED (RFC 8445 §16.1).
    pub const ICE_CONTROLLED: AttrType = AttrType(0x8029);
    /// ICE-CONTROLLING (RFC 8445 §16.1).
    pub const ICE_CONTROLLING: AttrType = AttrType(0x802a);

    /// Types below 0x8000 must be understood by the receiver (RFC 5389 §15): an unknown one
    /// in a request earns a 420 (Unknown Attribute) answer.
    pub fn is_comprehension_required(self) -> bool {
        self.0 < 0x8000
    }

    /// Whether this module understands a comprehension-required type.
    ///
    /// Understood: MAPPED-ADDRESS, USERNAME, MESSAGE-INTEGRITY, ERROR-CODE,
    /// UNKNOWN-ATTRIBUTES, XOR-MAPPED-ADDRESS, PRIORITY, USE-CANDIDATE, and
    /// MESSAGE-INTEGRITY-SHA256, which is accepted but ignored (ICE agents send
    /// MESSAGE-INTEGRITY, which is what we verify). Not understood: the long-term
    /// credential attributes (REALM, NONCE, USERHASH, PASSWORD-ALGORITHM) and everything
    /// else. Comprehension-optional types (≥ 0x8000) are all "understood".
    pub fn is_understood(self) -> bool {
        !self.is_comprehension_required()
            || matches!(
                self,
                AttrType::MAPPED_ADDRESS
                    | AttrType::USERNAME
                    | AttrType::MESSAGE_INTEGRITY
                    | AttrType::ERROR_CODE
                    | AttrType::UNKNOWN_ATTRIBUTES
                    | AttrType::MESSAGE_INTEGRITY_SHA256
                    | AttrType::XOR_MAPPED_ADDRESS
                    | AttrType::PRIORITY
                    | AttrType::USE_CANDIDATE
            )
    }
}

/// One attribute as it is on the wire: its type and its value without padding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attribute<'a> {
    /// The attribute type.
    pub ty: AttrType,
    /// The value, without padding.
    pub value: &'a [u8],
}

/// An ERROR-CODE attribute (RFC 5389 §15.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorCode<'a> {
    /// class × 100 + number, 300..=699.
    pub code: u16,
    /// The reason phrase.
    pub reason: &'a str,
}

/// An HMAC-SHA1 key for MESSAGE-INTEGRITY, prepared once and reused.
///
/// For ICE's short-term credentials the key is the password's bytes (RFC 8445 §7.2.2;
/// RFC 5389 §15.4 with SASLprep, which ICE passwords, being ice-chars, pass unchanged).
/// Building the key does the HMAC key schedule, so an agent should keep one per session
/// rather than pass the password to [`StunMessage::verify_integrity`] per packet.
#[derive(Clone)]
pub struct IntegrityKey(hmac::Key);

impl IntegrityKey {
    /// Prepares `key` (for ICE: the password bytes).
    pub fn new(key: &[u8]) -> Self {
        IntegrityKey(hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, key))
    }
}

impl std::fmt::Debug for IntegrityKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IntegrityKey(..)")
    }
}

/// Computes the MESSAGE-INTEGRITY HMAC over `header` (a copy with the length already
/// patched) followed by `body`.
fn hmac_sha1(key: &IntegrityKey, header: &[u8; HEADER_LEN], body: &[u8]) -> hmac::Tag {
    let mut ctx = hmac::Context::with_key(&key.0);
    ctx.update(header);
    ctx.update(body);
    ctx.sign()
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(
        b.get(at..at.checked_add(2)?)?.try_into().ok()?,
    ))
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(
        b.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

/// Length of a value padded to a multiple of 4.
fn padded(len: usize) -> usize {
    (len + 3) & !3
}

/// A parsed, borrowed STUN message.
///
/// [`StunMessage::parse`] validates the framing once; getters then validate only the
/// attribute they read.
#[derive(Debug, Clone, Copy)]
pub struct StunMessage<'a> {
    buf: &'a [u8],
    /// Offset of the first MESSAGE-INTEGRITY attribute's header.
    integrity_at: Option<usize>,
    /// Offset of the FINGERPRINT attribute's header (always the last attribute).
    fingerprint_at: Option<usize>,
    /// End of the attributes that count (RFC 5389 §15.4): just past the first
    /// MESSAGE-INTEGRITY, or the whole message.
    counted_end: usize,
}

impl<'a> StunMessage<'a> {
    /// Parses `datagram` as one whole STUN message.
    ///
    /// Rejects: fewer than 20 bytes ([`StunError::TooShort`]); either of the first two bits
    /// set ([`StunError::NotStun`]); a magic cookie other than 0x2112A442
    /// ([`StunError::BadMagicCookie`]); a length field that is not a multiple of 4
    /// ([`StunError::UnalignedLength`]) or not the datagram's length minus 20
    /// ([`StunError::LengthMismatch`]); an attribute whose value and padding run past the
    /// end ([`StunError::AttributeOverrun`]); any attribute after FINGERPRINT
    /// ([`StunError::AttributeAfterFingerprint`]). Attribute values are not checked here;
    /// each getter checks the one it reads.
    pub fn parse(datagram: &'a [u8]) -> Result<Self, StunError> {
        let buf = datagram;
        let (Some(ty), Some(len), Some(cookie)) = (be16(buf, 0), be16(buf, 2), be32(buf, 4)) else {
            return Err(StunError::TooShort);
        };
        if buf.len() < HEADER_LEN {
            return Err(StunError::TooShort);
        }
        if ty & 0xc000 != 0 {
            return Err(StunError::NotStun);
        }
        if cookie != MAGIC_COOKIE {
            return Err(StunError::BadMagicCookie);
        }
        let len = usize::from(len);
        if len % 4 != 0 {
            return Err(StunError::UnalignedLength);
        }
        if HEADER_LEN + len != buf.len() {
            return Err(StunError::LengthMismatch);
        }
        let mut msg = StunMessage {
            buf,
            integrity_at: None,
            fingerprint_at: None,
            counted_end: buf.len(),
        };
        let mut at = HEADER_LEN;
        while at < buf.len() {
            if msg.fingerprint_at.is_some() {
                return Err(StunError::AttributeAfterFingerprint);
            }
            let (Some(ty), Some(vlen)) = (be16(buf, at), be16(buf, at + 2)) else {
                return Err(StunError::AttributeOverrun);
            };
            let end = at + 4 + padded(usize::from(vlen));
            if end > buf.len() {
                return Err(StunError::AttributeOverrun);
            }
            match AttrType(ty) {
                AttrType::MESSAGE_INTEGRITY if msg.integrity_at.is_none() => {
                    msg.integrity_at = Some(at);
                    msg.counted_end = end;
                }
                AttrType::FINGERPRINT => msg.fingerprint_at = Some(at),
                _ => {}
            }
            at = end;
        }
        Ok(msg)
    }

    /// The whole message.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.buf
    }

    /// The 14-bit message type (class and method interleaved).
    pub fn message_type(&self) -> u16 {
        u16::from_be_bytes([self.buf[0], self.buf[1]])
    }

    /// The message class.
    pub fn class(&self) -> Class {
        let t = self.message_type();
        Class::from_bits(((t >> 4) & 0b01) | ((t >> 7) & 0b10))
    }

    /// The message method.
    pub fn method(&self) -> Method {
        let t = self.message_type();
        Method::from_bits((t & 0x000f) | ((t >> 1) & 0x0070) | ((t >> 2) & 0x0f80))
    }

    /// The transaction id.
    pub fn transaction_id(&self) -> TransactionId {
        let mut id = [0u8; 12];
        id.copy_from_slice(&self.buf[8..HEADER_LEN]);
        TransactionId(id)
    }

    /// Every attribute on the wire, in order, including those after MESSAGE-INTEGRITY
    /// that RFC 5389 §15.4 says to ignore (the typed getters do ignore them).
    pub fn attributes(&self) -> Attributes<'a> {
        Attributes {
            buf: self.buf,
            at: HEADER_LEN,
            end: self.buf.len(),
        }
    }

    /// The attributes that count: up to and including the first MESSAGE-INTEGRITY.
    fn counted(&self) -> Attributes<'a> {
        Attributes {
            buf: self.buf,
            at: HEADER_LEN,
            end: self.counted_end,
        }
    }

    /// The value of the first counted attribute of type `ty`.
    ///
    /// Attributes after MESSAGE-INTEGRITY are not seen (RFC 5389 §15.4); FINGERPRINT has
    /// its own getter.
    pub fn find(&self, ty: AttrType) -> Option<&'a [u8]> {
        self.counted().find(|a| a.ty == ty).map(|a| a.value)
    }

    fn find_exact<const N: usize>(&self, ty: AttrType) -> Result<Option<&'a [u8; N]>, StunError> {
        self.find(ty)
            .map(|v| v.try_into().map_err(|_| StunError::BadAttributeLength(ty)))
            .transpose()
    }

    /// USERNAME, if present.
    ///
    /// Rejects a value over 513 bytes ([`StunError::UsernameTooLong`]) or not UTF-8
    /// ([`StunError::NotUtf8`]).
    pub fn username(&self) -> Result<Option<&'a str>, StunError> {
        let Some(v) = self.find(AttrType::USERNAME) else {
            return Ok(None);
        };
        if v.len() > MAX_USERNAME_LEN {
            return Err(StunError::UsernameTooLong);
        }
        std::str::from_utf8(v)
            .map(Some)
            .map_err(|_| StunError::NotUtf8)
    }

    /// SOFTWARE, if present. Rejects a value that is not UTF-8 ([`StunError::NotUtf8`]).
    pub fn software(&self) -> Result<Option<&'a str>, StunError> {
        self.find(AttrType::SOFTWARE)
            .map(|v| std::str::from_utf8(v).map_err(|_| StunError::NotUtf8))
            .transpose()
    }

    /// The first MESSAGE-INTEGRITY's HMAC, if present.
    ///
    /// Rejects a value that is not 20 bytes ([`StunError::BadAttributeLength`]).
    pub fn message_integrity(&self) -> Result<Option<&'a [u8; INTEGRITY_LEN]>, StunError> {
        self.find_exact(AttrType::MESSAGE_INTEGRITY)
    }

    /// FINGERPRINT's value as sent, if present.
    ///
    /// Rejects a value that is not 4 bytes ([`StunError::BadAttributeLength`]).
    pub fn fingerprint(&self) -> Result<Option<u32>, StunError> {
        let Some(at) = self.fingerprint_at else {
            return Ok(None);
        };
        if be16(self.buf, at + 2) != Some(4) {
            return Err(StunError::BadAttributeLength(AttrType::FINGERPRINT));
        }
        be32(self.buf, at + 4)
            .map(Some)
            .ok_or(StunError::BadAttributeLength(AttrType::FINGERPRINT))
    }

    /// XOR-MAPPED-ADDRESS, decoded, if present.
    ///
    /// Rejects a family other than 1 or 2 ([`StunError::UnknownAddressFamily`]) and a
    /// length other than 8 (IPv4) or 20 (IPv6) ([`StunError::BadAttributeLength`]).
    pub fn xor_mapped_address(&self) -> Result<Option<SocketAddr>, StunError> {
        self.find(AttrType::XOR_MAPPED_ADDRESS)
            .map(|v| self.decode_address(AttrType::XOR_MAPPED_ADDRESS, v, true))
            .transpose()
    }

    /// MAPPED-ADDRESS (the RFC 3489 form, not XORed), if present.
    ///
    /// Rejects as [`StunMessage::xor_mapped_address`] does.
    pub fn mapped_address(&self) -> Result<Option<SocketAddr>, StunError> {
        self.find(AttrType::MAPPED_ADDRESS)
            .map(|v| self.decode_address(AttrType::MAPPED_ADDRESS, v, false))
            .transpose()
    }

    fn decode_address(&self, ty: AttrType, v: &[u8], xor: bool) -> Result<SocketAddr, StunError> {
        let bad_len = StunError::BadAttributeLength(ty);
        let family = *v.get(1).ok_or(bad_len)?;
        let port = be16(v, 2).ok_or(bad_len)?;
        // The cookie and transaction id, the XOR mask of RFC 5389 §15.2.
        let mut mask = [0u8; 16];
        if xor {
            mask.copy_from_slice(&self.buf[4..HEADER_LEN]);
        }
        let port = port ^ u16::from_be_bytes([mask[0], mask[1]]);
        let ip = match family {
            1 => {
                let mut a: [u8; 4] = v.get(4..).ok_or(bad_len)?.try_into().map_err(|_| bad_len)?;
                a.iter_mut().zip(mask).for_each(|(b, m)| *b ^= m);
                IpAddr::V4(Ipv4Addr::from(a))
            }
            2 => {
                let mut a: [u8; 16] = v.get(4..).ok_or(bad_len)?.try_into().map_err(|_| bad_len)?;
                a.iter_mut().zip(mask).for_each(|(b, m)| *b ^= m);
                IpAddr::V6(Ipv6Addr::from(a))
            }
            _ => return Err(StunError::UnknownAddressFamily),
        };
        Ok(SocketAddr::new(ip, port))
    }

    /// PRIORITY, if present. Rejects a value that is not 4 bytes.
    pub fn priority(&self) -> Result<Option<u32>, StunError> {
        Ok(self
            .find_exact::<4>(AttrType::PRIORITY)?
            .map(|v| u32::from_be_bytes(*v)))
    }

    /// Whether USE-CANDIDATE is present. Rejects one with a non-empty value.
    pub fn use_candidate(&self) -> Result<bool, StunError> {
        Ok(self.find_exact::<0>(AttrType::USE_CANDIDATE)?.is_some())
    }

    /// ICE-CONTROLLING's tie-breaker, if present. Rejects a value that is not 8 bytes.
    pub fn ice_controlling(&self) -> Result<Option<u64>, StunError> {
        Ok(self
            .find_exact::<8>(AttrType::ICE_CONTROLLING)?
            .map(|v| u64::from_be_bytes(*v)))
    }

    /// ICE-CONTROLLED's tie-breaker, if present. Rejects a value that is not 8 bytes.
    pub fn ice_controlled(&self) -> Result<Option<u64>, StunError> {
        Ok(self
            .find_exact::<8>(AttrType::ICE_CONTROLLED)?
            .map(|v| u64::from_be_bytes(*v)))
    }

    /// ERROR-CODE, if present.
    ///
    /// Rejects a value shorter than 4 bytes ([`StunError::BadAttributeLength`]), a class
    /// outside 3..=6 or a number above 99 ([`StunError::BadErrorCode`]), a reason over 763
    /// bytes ([`StunError::ReasonTooLong`]) or not UTF-8 ([`StunError::NotUtf8`]).
    pub fn error_code(&self) -> Result<Option<ErrorCode<'a>>, StunError> {
        let Some(v) = self.find(AttrType::ERROR_CODE) else {
            return Ok(None);
        };
        let bad_len = StunError::BadAttributeLength(AttrType::ERROR_CODE);
        let class = u16::from(*v.get(2).ok_or(bad_len)? & 0x07);
        let number = u16::from(*v.get(3).ok_or(bad_len)?);
        if !(3..=6).contains(&class) || number > 99 {
            return Err(StunError::BadErrorCode);
        }
        let reason = v.get(4..).ok_or(bad_len)?;
        if reason.len() > MAX_REASON_LEN {
            return Err(StunError::ReasonTooLong);
        }
        let reason = std::str::from_utf8(reason).map_err(|_| StunError::NotUtf8)?;
        Ok(Some(ErrorCode {
            code: class * 100 + number,
            reason,
        }))
    }

    /// The counted comprehension-required attribute types this module does not understand
    /// (see [`AttrType::is_understood`]), in order, duplicates included. An agent answers a
    /// request that has any with 420 and lists them in UNKNOWN-ATTRIBUTES.
    pub fn unknown_required(&self) -> UnknownRequired<'a> {
        UnknownRequired(self.counted())
    }

    /// The first of [`StunMessage::unknown_required`], if any.
    pub fn first_unknown_required(&self) -> Option<AttrType> {
        self.unknown_required().next()
    }

    /// Whether the message has a MESSAGE-INTEGRITY attribute.
    pub fn has_integrity(&self) -> bool {
        self.integrity_at.is_some()
    }

    /// Whether the message has a FINGERPRINT attribute.
    pub fn has_fingerprint(&self) -> bool {
        self.fingerprint_at.is_some()
    }

    /// Checks the first MESSAGE-INTEGRITY against `key` (for ICE: the password bytes).
    ///
    /// Prefer [`StunMessage::verify_integrity_with`] with a cached key on a hot path.
    /// Rejects as that does.
    pub fn verify_integrity(&self, key: &[u8]) -> Result<(), StunError> {
        self.verify_integrity_with(&IntegrityKey::new(key))
    }

    /// Checks the first MESSAGE-INTEGRITY as RFC 5389 §15.4 says: HMAC-SHA1 over the
    /// message up to that attribute, with the header's length field set as if the message
    /// ended right after it. The comparison is constant-time.
    ///
    /// Rejects: no MESSAGE-INTEGRITY ([`StunError::MissingIntegrity`]); one whose value is
    /// not 20 bytes ([`StunError::BadAttributeLength`]); a mismatch
    /// ([`StunError::IntegrityMismatch`]).
    pub fn verify_integrity_with(&self, key: &IntegrityKey) -> Result<(), StunError> {
        let at = self.integrity_at.ok_or(StunError::MissingIntegrity)?;
        let bad_len = StunError::BadAttributeLength(AttrType::MESSAGE_INTEGRITY);
        if be16(self.buf, at + 2) != Some(INTEGRITY_LEN as u16) {
            return Err(bad_len);
        }
        let sent = self
            .buf
            .get(at + 4..at + 4 + INTEGRITY_LEN)
            .ok_or(bad_len)?;
        let body = self.buf.get(HEADER_LEN..at).ok_or(bad_len)?;
        let mut header = [0u8; HEADER_LEN];
        header.copy_from_slice(&self.buf[..HEADER_LEN]);
        // `at + 24 - 20` fits: `at` is inside a message whose body length fits in 16 bits.
        let patched = u16::try_from(at + 4 + INTEGRITY_LEN - HEADER_LEN).map_err(|_| bad_len)?;
        header[2..4].copy_from_slice(&patched.to_be_bytes());
        let tag = hmac_sha1(key, &header, body);
        if bool::from(tag.as_ref().ct_eq(sent)) {
            Ok(())
        } else {
            Err(StunError::IntegrityMismatch)
        }
    }

    /// Checks FINGERPRINT (RFC 5389 §15.5): CRC-32 of everything before it, XOR
    /// 0x5354554e.
    ///
    /// Rejects: no FINGERPRINT ([`StunError::MissingFingerprint`]); one that is not 4
    /// bytes ([`StunError::BadAttributeLength`]); a mismatch
    /// ([`StunError::FingerprintMismatch`]).
    pub fn verify_fingerprint(&self) -> Result<(), StunError> {
        let at = self.fingerprint_at.ok_or(StunError::MissingFingerprint)?;
        let sent = self.fingerprint()?.ok_or(StunError::MissingFingerprint)?;
        let covered = self.buf.get(..at).ok_or(StunError::MissingFingerprint)?;
        if crc32fast::hash(covered) ^ FINGERPRINT_XOR == sent {
            Ok(())
        } else {
            Err(StunError::FingerprintMismatch)
        }
    }
}

/// Iterator over attributes; see [`StunMessage::attributes`].
///
/// Stops at the first malformed attribute header (which [`StunMessage::parse`] already
/// rules out).
#[derive(Debug, Clone)]
pub struct Attributes<'a> {
    buf: &'a [u8],
    at: usize,
    end: usize,
}

impl<'a> Iterator for Attributes<'a> {
    type Item = Attribute<'a>;

    fn next(&mut self) -> Option<Attribute<'a>> {
        if self.at >= self.end {
            return None;
        }
        let ty = be16(self.buf, self.at)?;
        let len = usize::from(be16(self.buf, self.at + 2)?);
        let start = self.at + 4;
        let value = self.buf.get(start..start + len)?;
        self.at = start + padded(len);
        Some(Attribute {
            ty: AttrType(ty),
            value,
        })
    }
}

/// Iterator over unknown comprehension-required attribute types; see
/// [`StunMessage::unknown_required`].
#[derive(Debug, Clone)]
pub struct UnknownRequired<'a>(Attributes<'a>);

impl Iterator for UnknownRequired<'_> {
    type Item = AttrType;

    fn next(&mut self) -> Option<AttrType> {
        self.0.by_ref().map(|a| a.ty).find(|t| !t.is_understood())
    }
}

/// Builds a STUN message into a caller's buffer.
///
/// The header's length field is kept current after every attribute. Padding is zeros
/// (RFC 8489 §14) unless [`StunWriter::set_padding`] says otherwise. A failed `add_*`
/// leaves the message as it was.
#[derive(Debug)]
pub struct StunWriter<'b> {
    buf: &'b mut [u8],
    len: usize,
    padding: u8,
}

impl<'b> StunWriter<'b> {
    /// Starts a message with this header and no attributes.
    ///
    /// Rejects a buffer shorter than 20 bytes ([`StunError::BufferTooSmall`]) and a
    /// [`Method::Other`] above 0xFFF ([`StunError::MethodOutOfRange`]).
    pub fn new(
        buf: &'b mut [u8],
        class: Class,
        method: Method,
        transaction_id: TransactionId,
    ) -> Result<Self, StunError> {
        let method = method.bits();
        if method > 0x0fff {
            return Err(StunError::MethodOutOfRange);
        }
        let header = buf.get_mut(..HEADER_LEN).ok_or(StunError::BufferTooSmall)?;
        header[0..2].copy_from_slice(&message_type(class, method).to_be_bytes());
        header[2..4].copy_from_slice(&[0, 0]);
        header[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
        header[8..20].copy_from_slice(&transaction_id.0);
        Ok(StunWriter {
            buf,
            len: HEADER_LEN,
            padding: 0,
        })
    }

    /// Sets the byte used to pad later attributes.
    ///
    /// Receivers ignore padding; this exists to reproduce messages (such as RFC 5769's
    /// test vectors) from senders that pad with something other than zeros.
    pub fn set_padding(&mut self, byte: u8) {
        self.padding = byte;
    }

    /// Length of the message so far.
    pub fn message_len(&self) -> usize {
        self.len
    }

    fn transaction_id(&self) -> [u8; 12] {
        let mut id = [0u8; 12];
        id.copy_from_slice(&self.buf[8..HEADER_LEN]);
        id
    }

    /// Writes an attribute header for a `value_len`-byte value and its padding, and
    /// returns the value's slot; commits the new length.
    fn reserve(&mut self, ty: AttrType, value_len: usize) -> Result<&mut [u8], StunError> {
        let vlen = u16::try_from(value_len).map_err(|_| StunError::TooLong)?;
        let start = self.len;
        let end = start
            .checked_add(4 + padded(value_len))
            .ok_or(StunError::TooLong)?;
        if end - HEADER_LEN > MAX_BODY_LEN {
            return Err(StunError::TooLong);
        }
        let pad = self.padding;
        let attr = self
            .buf
            .get_mut(start..end)
            .ok_or(StunError::BufferTooSmall)?;
        attr[0..2].copy_from_slice(&ty.0.to_be_bytes());
        attr[2..4].copy_from_slice(&vlen.to_be_bytes());
        attr[4 + value_len..].fill(pad);
        self.set_len(end);
        Ok(&mut self.buf[start + 4..start + 4 + value_len])
    }

    fn set_len(&mut self, len: usize) {
        self.len = len;
        // `len - 20 <= MAX_BODY_LEN` is checked by every caller.
        let body = (len - HEADER_LEN) as u16;
        self.buf[2..4].copy_from_slice(&body.to_be_bytes());
    }

    /// Adds an attribute with an arbitrary value (padded per [`StunWriter::set_padding`]).
    ///
    /// Rejects a value over 65535 bytes or a message that would exceed STUN's length
    /// field ([`StunError::TooLong`]), and a full buffer ([`StunError::BufferTooSmall`]).
    pub fn add_raw(&mut self, ty: AttrType, value: &[u8]) -> Result<(), StunError> {
        self.reserve(ty, value.len())?.copy_from_slice(value);
        Ok(())
    }

    /// Adds USERNAME. Rejects one over 513 bytes ([`StunError::UsernameTooLong`]), and as
    /// [`StunWriter::add_raw`] does.
    pub fn add_username(&mut self, username: &str) -> Result<(), StunError> {
        if username.len() > MAX_USERNAME_LEN {
            return Err(StunError::UsernameTooLong);
        }
        self.add_raw(AttrType::USERNAME, username.as_bytes())
    }

    /// Adds XOR-MAPPED-ADDRESS for an IPv4 or IPv6 address. Rejects as
    /// [`StunWriter::add_raw`] does.
    pub fn add_xor_mapped_address(&mut self, addr: SocketAddr) -> Result<(), StunError> {
        let mut mask = [0u8; 16];
        mask[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
        mask[4..].copy_from_slice(&self.transaction_id());
        let port = addr.port() ^ (MAGIC_COOKIE >> 16) as u16;
        let mut v = [0u8; 20];
        v[2..4].copy_from_slice(&port.to_be_bytes());
        let len = match addr.ip() {
            IpAddr::V4(ip) => {
                v[1] = 1;
                for (i, b) in ip.octets().into_iter().enumerate() {
                    v[4 + i] = b ^ mask[i];
                }
                8
            }
            IpAddr::V6(ip) => {
                v[1] = 2;
                for (i, b) in ip.octets().into_iter().enumerate() {
                    v[4 + i] = b ^ mask[i];
                }
                20
            }
        };
        self.add_raw(AttrType::XOR_MAPPED_ADDRESS, &v[..len])
    }

    /// Adds PRIORITY. Rejects as [`StunWriter::add_raw`] does.
    pub fn add_priority(&mut self, priority: u32) -> Result<(), StunError> {
        self.add_raw(AttrType::PRIORITY, &priority.to_be_bytes())
    }

    /// Adds USE-CANDIDATE. Rejects as [`StunWriter::add_raw`] does.
    pub fn add_use_candidate(&mut self) -> Result<(), StunError> {
        self.add_raw(AttrType::USE_CANDIDATE, &[])
    }

    /// Adds ICE-CONTROLLING with its tie-breaker. Rejects as [`StunWriter::add_raw`] does.
    pub fn add_ice_controlling(&mut self, tie_breaker: u64) -> Result<(), StunError> {
        self.add_raw(AttrType::ICE_CONTROLLING, &tie_breaker.to_be_bytes())
    }

    /// Adds ICE-CONTROLLED with its tie-breaker. Rejects as [`StunWriter::add_raw`] does.
    pub fn add_ice_controlled(&mut self, tie_breaker: u64) -> Result<(), StunError> {
        self.add_raw(AttrType::ICE_CONTROLLED, &tie_breaker.to_be_bytes())
    }

    /// Adds ERROR-CODE.
    ///
    /// Rejects a code outside 300..=699 ([`StunError::BadErrorCode`]), a reason over 763
    /// bytes ([`StunError::ReasonTooLong`]), and as [`StunWriter::add_raw`] does.
    pub fn add_error_code(&mut self, code: u16, reason: &str) -> Result<(), StunError> {
        if !(300..=699).contains(&code) {
            return Err(StunError::BadErrorCode);
        }
        if reason.len() > MAX_REASON_LEN {
            return Err(StunError::ReasonTooLong);
        }
        let v = self.reserve(AttrType::ERROR_CODE, 4 + reason.len())?;
        // Both fit in a byte: code / 100 is 3..=6, code % 100 is 0..=99.
        v[..4].copy_from_slice(&[0, 0, (code / 100) as u8, (code % 100) as u8]);
        v[4..].copy_from_slice(reason.as_bytes());
        Ok(())
    }

    /// Adds UNKNOWN-ATTRIBUTES listing `types` (for a 420 answer, typically fed from
    /// [`StunMessage::unknown_required`]).
    ///
    /// Rejects as [`StunWriter::add_raw`] does; on error nothing is added.
    pub fn add_unknown_attributes(
        &mut self,
        types: impl IntoIterator<Item = AttrType>,
    ) -> Result<(), StunError> {
        let start = self.len;
        let mut at = start + 4;
        for t in types {
            let end = at + 2;
            if end - HEADER_LEN > MAX_BODY_LEN || end - start - 4 > usize::from(u16::MAX) {
                return Err(StunError::TooLong);
            }
            self.buf
                .get_mut(at..end)
                .ok_or(StunError::BufferTooSmall)?
                .copy_from_slice(&t.0.to_be_bytes());
            at = end;
        }
        let value_len = at - start - 4;
        // Check the padded end fits before `reserve` writes the header and padding
        // (the values already written are left in place by it).
        let padded_end = start + 4 + padded(value_len);
        if padded_end - HEADER_LEN > MAX_BODY_LEN {
            return Err(StunError::TooLong);
        }
        if padded_end > self.buf.len() {
            return Err(StunError::BufferTooSmall);
        }
        self.reserve(AttrType::UNKNOWN_ATTRIBUTES, value_len)?;
        Ok(())
    }

    /// Adds MESSAGE-INTEGRITY computed over everything written so far (RFC 5389 §15.4).
    ///
    /// Usually followed only by [`StunWriter::finish_with_fingerprint`]; receivers ignore
    /// anything else after it. Rejects as [`StunWriter::add_raw`] does.
    pub fn add_message_integrity(&mut self, key: &IntegrityKey) -> Result<(), StunError> {
        let at = self.len;
        // Reserving first sets the header's length to end after MESSAGE-INTEGRITY,
        // which is the length the HMAC must cover.
        self.reserve(AttrType::MESSAGE_INTEGRITY, INTEGRITY_LEN)?;
        let mut header = [0u8; HEADER_LEN];
        header.copy_from_slice(&self.buf[..HEADER_LEN]);
        let tag = hmac_sha1(key, &header, &self.buf[HEADER_LEN..at]);
        self.buf[at + 4..at + 4 + INTEGRITY_LEN].copy_from_slice(tag.as_ref());
        Ok(())
    }

    /// Ends the message and returns its length.
    pub fn finish(self) -> Result<usize, StunError> {
        Ok(self.len)
    }

    /// Adds FINGERPRINT (RFC 5389 §15.5), ends the message and returns its length.
    /// Rejects as [`StunWriter::add_raw`] does.
    pub fn finish_with_fingerprint(mut self) -> Result<usize, StunError> {
        let at = self.len;
        self.reserve(AttrType::FINGERPRINT, 4)?;
        let crc = crc32fast::hash(&self.buf[..at]) ^ FINGERPRINT_XOR;
        self.buf[at + 4..at + 8].copy_from_slice(&crc.to_be_bytes());
        Ok(self.len)
    }

    /// Adds MESSAGE-INTEGRITY keyed with `key`, ends the message and returns its length.
    /// Rejects as [`StunWriter::add_raw`] does.
    pub fn finish_with_integrity(mut self, key: &[u8]) -> Result<usize, StunError> {
        self.add_message_integrity(&IntegrityKey::new(key))?;
        Ok(self.len)
    }

    /// Adds MESSAGE-INTEGRITY keyed with `key` and then FINGERPRINT, ends the message and
    /// returns its length. This is what an ICE agent sends. Rejects as
    /// [`StunWriter::add_raw`] does.
    pub fn finish_with_integrity_and_fingerprint(mut self, key: &[u8]) -> Result<usize, StunError> {
        self.add_message_integrity(&IntegrityKey::new(key))?;
        self.finish_with_fingerprint()
    }
}

/// Drives everything in this module on arbitrary bytes; shared by the fuzz hook and tests.
#[cfg(any(test, feature = "fuzz"))]
fn exercise(data: &[u8]) {
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

#[cfg(test)]
mod tests {
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
        0xe8, 0xca, 0x7a, 0xd5, 0x9d, 0x5e, 0xb0, 0x51, 0x8e, 0x31, 0x29, 0x11, 0xd2, 0xda, 0xb2,
        0xa9,
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
        let mut w =
            StunWriter::new(&mut buf, Class::SuccessResponse, Method::Binding, TID).unwrap();
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
        let mut w =
            StunWriter::new(&mut buf, Class::SuccessResponse, Method::Binding, TID).unwrap();
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
            let ok = StunMessage::parse(&f).is_ok_and(|m| {
                m.verify_integrity(PASSWORD).is_ok() && m.verify_fingerprint().is_ok()
            });
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
            let mut w =
                StunWriter::new(&mut buf, Class::ErrorResponse, Method::Binding, TID).unwrap();
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
                        0x0001, 0x0006, 0x0008, 0x0009, 0x000a, 0x0014, 0x0020, 0x0024, 0x0025,
                        0x8022, 0x8029, 0x802a,
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
}
