//! Building a STUN message into a caller's buffer.

use super::*;

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
