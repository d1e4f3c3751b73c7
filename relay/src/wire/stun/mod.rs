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

#[cfg(any(test, feature = "fuzz"))]
mod fuzz;
mod message;
mod writer;

#[cfg(feature = "fuzz")]
pub use fuzz::fuzz_one;
pub use message::*;
pub use writer::*;

#[cfg(test)]
mod tests;
