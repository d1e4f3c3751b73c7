//! Reading a STUN message: the zero-copy view and its attribute iterators.

use super::*;

/// A parsed, borrowed STUN message.
///
/// [`StunMessage::parse`] validates the framing once; getters then validate only the
/// attribute they read.
#[derive(Debug, Clone, Copy)]
pub struct StunMessage<'a> {
    buf: &'a [u8],
    /// Offset of the first MESSAGE-INTEGRITY attribute's header.
    pub(super) integrity_at: Option<usize>,
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
    pub(super) fn counted(&self) -> Attributes<'a> {
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
