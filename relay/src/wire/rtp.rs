//! RTP headers (RFC 3550 §5.1) and header extensions (RFC 8285).
//!
//! [`RtpHeader`] is a view over the first bytes of an RTP (or SRTP) packet. SRTP leaves
//! the header in the clear, so the relay reads it from encrypted packets too.

use crate::id::{Pt, RtpTime, Ssrc, WireSeq};

/// Why a buffer is not an RTP header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RtpError {
    /// Shorter than the 12-byte fixed header.
    #[error("shorter than the RTP fixed header")]
    TooShort,
    /// The version field is not 2.
    #[error("RTP version is not 2")]
    BadVersion,
    /// The CSRC list or header extension runs past the end of the buffer.
    #[error("CSRC list or header extension runs past the end")]
    Truncated,
}

/// A parsed, borrowed RTP header.
///
/// Construction checks the version, the CSRC list and the extension length against the
/// buffer; after that every accessor is infallible and reads straight from the bytes.
#[derive(Debug, Clone, Copy)]
pub struct RtpHeader<'a> {
    buf: &'a [u8],
    header_len: usize,
}

impl<'a> RtpHeader<'a> {
    /// Fixed header length.
    pub const FIXED_LEN: usize = 12;

    /// Parses the header at the start of `packet`.
    ///
    /// Rejects buffers shorter than 12 bytes, version ≠ 2, and a CSRC list or header
    /// extension that does not fit. Padding is not checked here, because in SRTP the
    /// padding is encrypted; see [`RtpHeader::payload`].
    pub fn parse(packet: &'a [u8]) -> Result<Self, RtpError> {
        let header_len = header_len(packet)?;
        Ok(RtpHeader {
            buf: packet,
            header_len,
        })
    }

    /// The whole buffer this header was parsed from.
    pub fn packet(&self) -> &'a [u8] {
        self.buf
    }

    /// Length of the header: fixed part, CSRCs and extension.
    pub fn header_len(&self) -> usize {
        self.header_len
    }

    /// The P bit: the payload ends with padding (encrypted, in SRTP).
    pub fn padding(&self) -> bool {
        self.buf[0] & 0x20 != 0
    }

    /// The X bit: a header extension follows the CSRCs.
    pub fn has_extension(&self) -> bool {
        self.buf[0] & 0x10 != 0
    }

    /// Number of CSRCs.
    pub fn csrc_count(&self) -> usize {
        usize::from(self.buf[0] & 0x0f)
    }

    /// The marker bit.
    pub fn marker(&self) -> bool {
        self.buf[1] & 0x80 != 0
    }

    /// Payload type.
    pub fn payload_type(&self) -> Pt {
        Pt(self.buf[1] & 0x7f)
    }

    /// Sequence number as on the wire.
    pub fn seq(&self) -> WireSeq {
        WireSeq(u16::from_be_bytes([self.buf[2], self.buf[3]]))
    }

    /// Media timestamp.
    pub fn timestamp(&self) -> RtpTime {
        RtpTime(be32(self.buf, 4))
    }

    /// Synchronization source.
    pub fn ssrc(&self) -> Ssrc {
        Ssrc(be32(self.buf, 8))
    }

    /// The `i`th contributing source, if there is one.
    pub fn csrc(&self, i: usize) -> Option<Ssrc> {
        (i < self.csrc_count()).then(|| Ssrc(be32(self.buf, 12 + 4 * i)))
    }

    /// Everything after the header (for SRTP: ciphertext, then MKI and tag).
    pub fn payload(&self) -> &'a [u8] {
        &self.buf[self.header_len..]
    }
}

/// Length of the RTP header at the start of `packet` (fixed part, CSRCs, extension).
///
/// The same checks as [`RtpHeader::parse`]; useful where only the length is needed.
pub fn header_len(packet: &[u8]) -> Result<usize, RtpError> {
    if packet.len() < RtpHeader::FIXED_LEN {
        return Err(RtpError::TooShort);
    }
    if packet[0] >> 6 != 2 {
        return Err(RtpError::BadVersion);
    }
    let mut len = RtpHeader::FIXED_LEN + 4 * usize::from(packet[0] & 0x0f);
    if packet[0] & 0x10 != 0 {
        let words = packet.get(len + 2..len + 4).ok_or(RtpError::Truncated)?;
        len += 4 + 4 * usize::from(u16::from_be_bytes([words[0], words[1]]));
    }
    if len > packet.len() {
        return Err(RtpError::Truncated);
    }
    Ok(len)
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_header_fields() {
        let p = [
            0x80, 0xe0, 0x12, 0x34, 0, 0, 0x10, 0, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3,
        ];
        let h = RtpHeader::parse(&p).unwrap();
        assert!(h.marker());
        assert_eq!(h.payload_type(), Pt(96));
        assert_eq!(h.seq(), WireSeq(0x1234));
        assert_eq!(h.timestamp(), RtpTime(0x1000));
        assert_eq!(h.ssrc(), Ssrc(0xdeadbeef));
        assert_eq!(h.header_len(), 12);
        assert_eq!(h.payload(), &[1, 2, 3]);
    }

    #[test]
    fn csrc_and_extension_lengths_are_checked() {
        // CC = 1, X = 1, extension of one word.
        let mut p = vec![0x91, 96, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1];
        p.extend_from_slice(&[0, 0, 0, 9]); // CSRC 9
        p.extend_from_slice(&[0xbe, 0xde, 0, 1, 0x10, 0xff, 0, 0]);
        let h = RtpHeader::parse(&p).unwrap();
        assert_eq!(h.header_len(), 24);
        assert_eq!(h.csrc(0), Some(Ssrc(9)));
        assert_eq!(h.csrc(1), None);
        assert_eq!(RtpHeader::parse(&p[..23]).unwrap_err(), RtpError::Truncated);
        assert_eq!(RtpHeader::parse(&p[..14]).unwrap_err(), RtpError::Truncated);
        assert_eq!(RtpHeader::parse(&p[..11]).unwrap_err(), RtpError::TooShort);
        p[0] = 0x51;
        assert_eq!(RtpHeader::parse(&p).unwrap_err(), RtpError::BadVersion);
    }
}
