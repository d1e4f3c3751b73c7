//! RTP headers (RFC 3550 §5.1) and header extensions (RFC 8285).
//!
//! [`RtpHeader`] is a view over the first bytes of an RTP (or SRTP) packet. SRTP leaves
//! the header in the clear, so the relay reads it from encrypted packets too.
//!
//! # Reading
//!
//! [`RtpHeader::parse`] checks the fixed header, the CSRC list and the extension block's
//! length once. The extension block is walked lazily by [`RtpHeader::extensions`], which
//! understands both RFC 8285 forms (one-byte, profile `0xBEDE`; two-byte, profile
//! `0x100X`) and yields `(ExtId, &[u8])` elements. The ids are the ones each sender
//! negotiated with `a=extmap`; the relay maps them to the extensions it reads and
//! decodes the element bytes with the small pure readers [`audio_level`],
//! [`frame_marking`], [`abs_send_time`] and [`transport_cc_seq`]. A stream's
//! [`ExtLayout`] finds the few elements the relay reads in each of its packets by
//! checking the block against the last one's layout instead of walking it.
//!
//! ```
//! use blindfold_relay::id::ExtId;
//! use blindfold_relay::wire::rtp::{audio_level, RtpHeader};
//!
//! // V=2, X=1, PT 111; one-byte extension block with audio level (id 1) = V, -42 dBov.
//! let packet = [0x90, 111, 0, 1, 0, 0, 0, 0, 0, 0, 0, 7,
//!               0xbe, 0xde, 0, 1, 0x10, 0x80 | 42, 0, 0];
//! let h = RtpHeader::parse(&packet).unwrap();
//! let level = audio_level(h.extension(ExtId(1)).unwrap()).unwrap();
//! assert!(level.voice_activity);
//! assert_eq!(level.level, 42);
//! ```
//!
//! # Writing
//!
//! [`write_header`] writes a complete header (fixed part, CSRCs and an extension block
//! in the smallest RFC 8285 form that can carry the elements) into a caller's buffer.
//! It never allocates; [`encoded_header_len`] says how much room it needs.

use std::iter::FusedIterator;
use std::time::Duration;

use crate::id::{ExtId, Pt, RtpTime, Ssrc, WireSeq};

/// Why a buffer is not an RTP header, an extension element is malformed, or a header
/// cannot be written.
///
/// Each variant is a distinct drop reason, so callers can count them separately.
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
    /// An extension element's header or data runs past the end of the extension block.
    #[error("header extension element runs past the end of the extension block")]
    ExtensionElementTruncated,
    /// A one-byte-form element has ID 0 but a non-zero length nibble: it is neither a
    /// padding byte (which is the value 0, RFC 8285 §4.1) nor a valid element.
    #[error("one-byte header extension element with ID 0 and a non-zero length")]
    BadExtensionPadding,
    /// The P bit is set but the last payload byte, the padding count, is 0.
    #[error("RTP padding count is zero")]
    PaddingCountZero,
    /// The P bit is set but the padding count is larger than the payload (or the payload
    /// is empty).
    #[error("RTP padding runs past the start of the payload")]
    PaddingOverrun,
    /// An audio level element (RFC 6464) is empty.
    #[error("audio level extension element is empty")]
    AudioLevelLen,
    /// A frame marking element (RFC 9626) is not 1, 2 or 3 bytes long.
    #[error("frame marking extension element is not 1 to 3 bytes")]
    FrameMarkingLen,
    /// An abs-send-time element is not 3 bytes long.
    #[error("abs-send-time extension element is not 3 bytes")]
    AbsSendTimeLen,
    /// A transport-wide sequence number element is not 2 bytes long.
    #[error("transport-wide sequence number extension element is not 2 bytes")]
    TransportCcLen,
    /// The output buffer is too small for what is being written.
    #[error("output buffer too small")]
    BufferTooSmall,
    /// More than 15 CSRCs were given to the writer.
    #[error("more than 15 CSRCs")]
    TooManyCsrcs,
    /// A payload type above 127 was given to the writer.
    #[error("payload type does not fit in 7 bits")]
    BadPayloadType,
    /// Extension ID 0 was given to the writer; 0 is reserved for padding.
    #[error("extension ID 0 is reserved for padding")]
    BadExtensionId,
    /// An extension element longer than 255 bytes was given to the writer.
    #[error("extension element longer than 255 bytes")]
    ExtensionTooLong,
    /// The extension block would be longer than 65535 words.
    #[error("extension block longer than 65535 words")]
    ExtensionBlockTooLong,
    /// An audio level above 127 was given to the encoder.
    #[error("audio level does not fit in 7 bits")]
    BadAudioLevel,
    /// A frame marking with TID above 7, or with TL0PICIDX but no LID, was given to the
    /// encoder.
    #[error("frame marking cannot be encoded")]
    BadFrameMarking,
}

/// The "defined by profile" value that marks the one-byte extension form
/// (RFC 8285 §4.2).
pub const ONE_BYTE_PROFILE: u16 = 0xBEDE;

/// The "defined by profile" value of the two-byte extension form (RFC 8285 §4.3) with
/// all four "appbits" zero. Any value `0x1000..=0x100F` marks the two-byte form.
pub const TWO_BYTE_PROFILE: u16 = 0x1000;

/// `a=extmap` URI of the client-to-mixer audio level extension (RFC 6464).
pub const AUDIO_LEVEL_URI: &str = "urn:ietf:params:rtp-hdrext:ssrc-audio-level";
/// `a=extmap` URI of the video frame marking extension (RFC 9626).
pub const FRAME_MARKING_URI: &str = "urn:ietf:params:rtp-hdrext:framemarking";
/// `a=extmap` URI of the abs-send-time extension.
pub const ABS_SEND_TIME_URI: &str = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time";
/// `a=extmap` URI of the transport-wide sequence number extension.
pub const TRANSPORT_CC_URI: &str =
    "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01";

/// Which RFC 8285 form an extension block uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExtForm {
    /// One-byte headers: profile `0xBEDE`, IDs 1..=14, 1..=16 bytes of data.
    OneByte,
    /// Two-byte headers: profile `0x100X`, IDs 1..=255, 0..=255 bytes of data.
    TwoByte,
}

impl ExtForm {
    /// The form a "defined by profile" value announces, or `None` for a profile that is
    /// not RFC 8285's.
    pub fn of_profile(profile: u16) -> Option<ExtForm> {
        if profile == ONE_BYTE_PROFILE {
            Some(ExtForm::OneByte)
        } else if profile & 0xfff0 == TWO_BYTE_PROFILE {
            Some(ExtForm::TwoByte)
        } else {
            None
        }
    }
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
    /// padding is encrypted; see [`RtpHeader::payload`]. Extension elements are not
    /// checked here either; [`RtpHeader::extensions`] reports malformed ones.
    #[inline]
    pub fn parse(packet: &'a [u8]) -> Result<Self, RtpError> {
        let header_len = header_len(packet)?;
        Ok(RtpHeader {
            buf: packet,
            header_len,
        })
    }

    /// The whole buffer this header was parsed from.
    #[inline]
    pub fn packet(&self) -> &'a [u8] {
        self.buf
    }

    /// Length of the header: fixed part, CSRCs and extension.
    #[inline]
    pub fn header_len(&self) -> usize {
        self.header_len
    }

    /// The P bit: the payload ends with padding (encrypted, in SRTP).
    #[inline]
    pub fn padding(&self) -> bool {
        self.buf[0] & 0x20 != 0
    }

    /// The X bit: a header extension follows the CSRCs.
    #[inline]
    pub fn has_extension(&self) -> bool {
        self.buf[0] & 0x10 != 0
    }

    /// Number of CSRCs.
    #[inline]
    pub fn csrc_count(&self) -> usize {
        usize::from(self.buf[0] & 0x0f)
    }

    /// The marker bit.
    #[inline]
    pub fn marker(&self) -> bool {
        self.buf[1] & 0x80 != 0
    }

    /// Payload type.
    #[inline]
    pub fn payload_type(&self) -> Pt {
        Pt(self.buf[1] & 0x7f)
    }

    /// Sequence number as on the wire.
    #[inline]
    pub fn seq(&self) -> WireSeq {
        WireSeq(u16::from_be_bytes([self.buf[2], self.buf[3]]))
    }

    /// Media timestamp.
    #[inline]
    pub fn timestamp(&self) -> RtpTime {
        RtpTime(be32(self.buf, 4))
    }

    /// Synchronization source.
    #[inline]
    pub fn ssrc(&self) -> Ssrc {
        Ssrc(be32(self.buf, 8))
    }

    /// The `i`th contributing source, if there is one.
    #[inline]
    pub fn csrc(&self, i: usize) -> Option<Ssrc> {
        (i < self.csrc_count()).then(|| Ssrc(be32(self.buf, 12 + 4 * i)))
    }

    /// Everything after the header (for SRTP: ciphertext, then MKI and tag).
    #[inline]
    pub fn payload(&self) -> &'a [u8] {
        &self.buf[self.header_len..]
    }

    /// The payload without its trailing padding (RFC 3550 §5.1), for plain RTP only.
    ///
    /// Without the P bit this is [`RtpHeader::payload`]. With it, the last byte counts
    /// the padding bytes including itself; a count of 0 is rejected with
    /// [`RtpError::PaddingCountZero`], and a count larger than the payload (or an empty
    /// payload) with [`RtpError::PaddingOverrun`]. Do not call this on SRTP before
    /// decryption: there the padding is encrypted and the payload ends with the tag.
    #[inline]
    pub fn payload_without_padding(&self) -> Result<&'a [u8], RtpError> {
        let payload = self.payload();
        if !self.padding() {
            return Ok(payload);
        }
        let &count = payload.last().ok_or(RtpError::PaddingOverrun)?;
        if count == 0 {
            return Err(RtpError::PaddingCountZero);
        }
        let keep = payload
            .len()
            .checked_sub(usize::from(count))
            .ok_or(RtpError::PaddingOverrun)?;
        payload.get(..keep).ok_or(RtpError::PaddingOverrun)
    }

    /// Offset of the 4-byte extension header, if the X bit is set.
    fn extension_offset(&self) -> Option<usize> {
        self.has_extension()
            .then(|| Self::FIXED_LEN + 4 * self.csrc_count())
    }

    /// The extension block's "defined by profile" value, if the X bit is set.
    ///
    /// `0xBEDE` is the one-byte form and `0x1000..=0x100F` the two-byte form; any other
    /// value is some other profile's extension, which [`RtpHeader::extensions`] skips.
    pub fn extension_profile(&self) -> Option<u16> {
        let off = self.extension_offset()?;
        let b = self.buf.get(off..off + 2)?;
        Some(u16::from_be_bytes([b[0], b[1]]))
    }

    /// The RFC 8285 form of the extension block, if there is one and its profile is one
    /// of RFC 8285's.
    pub fn extension_form(&self) -> Option<ExtForm> {
        ExtForm::of_profile(self.extension_profile()?)
    }

    /// The extension block's contents (after the 4-byte profile and length), if the X
    /// bit is set.
    pub fn extension_data(&self) -> Option<&'a [u8]> {
        let off = self.extension_offset()?;
        self.buf.get(off + 4..self.header_len)
    }

    /// Iterates over the RFC 8285 extension elements, in wire order.
    ///
    /// Padding bytes (value 0) between elements are skipped. In the one-byte form, an
    /// element with ID 15 ends the walk without an error (RFC 8285 §4.2: "processing of
    /// the entire extension should terminate"). A malformed element — one whose header or
    /// data runs past the end of the block, or a one-byte-form byte with ID 0 and a
    /// non-zero length — yields one `Err` and then the iterator is done; elements before
    /// it have already been yielded and are sound.
    ///
    /// Yields nothing without the X bit or when the profile is not RFC 8285's (see
    /// [`RtpHeader::extension_profile`]).
    pub fn extensions(&self) -> Extensions<'a> {
        match self.extension_elements() {
            Some((form, data)) => Extensions {
                rest: data,
                form: Some(form),
            },
            None => Extensions::EMPTY,
        }
    }

    /// The RFC 8285 form and the elements of the extension block, if it is RFC 8285's.
    #[inline]
    fn extension_elements(&self) -> Option<(ExtForm, &'a [u8])> {
        let off = self.extension_offset()?;
        let (profile, data) = self.buf.get(off..self.header_len)?.split_at_checked(4)?;
        let form = ExtForm::of_profile(u16::from_be_bytes([profile[0], profile[1]]))?;
        Some((form, data))
    }

    /// The data of the first extension element with this `id`.
    ///
    /// `None` if there is no such element before the end of the block, an ID-15 stop, or
    /// the first malformed element (see [`RtpHeader::extensions`]).
    ///
    /// The same walk as [`RtpHeader::extensions`] without the iterator's state: the
    /// forwarding path looks up one or two elements in every packet.
    #[inline]
    pub fn extension(&self, id: ExtId) -> Option<&'a [u8]> {
        let (form, mut rest) = self.extension_elements()?;
        while let Step::Element(i, data, after) = next_element(rest, form) {
            if i == id.0 {
                return Some(data);
            }
            rest = after;
        }
        None
    }
}

/// One step of the walk over extension elements.
enum Step<'a> {
    /// An element's ID and data, and what follows it.
    Element(u8, &'a [u8], &'a [u8]),
    /// The end of the block, or an ID-15 stop.
    End,
    /// A malformed element.
    Malformed(RtpError),
}

/// The next step of the walk over the extension elements `rest` (of `form`), padding
/// skipped.
#[inline]
fn next_element(mut rest: &[u8], form: ExtForm) -> Step<'_> {
    loop {
        let Some((&first, after)) = rest.split_first() else {
            return Step::End;
        };
        if first == 0 {
            // A padding byte: no ID, no length (RFC 8285 §4.1).
            rest = after;
            continue;
        }
        let (id, len, after) = match form {
            ExtForm::OneByte => {
                let id = first >> 4;
                if id == 15 {
                    return Step::End;
                }
                if id == 0 {
                    return Step::Malformed(RtpError::BadExtensionPadding);
                }
                (id, usize::from(first & 0x0f) + 1, after)
            }
            ExtForm::TwoByte => {
                let Some((&len, after)) = after.split_first() else {
                    return Step::Malformed(RtpError::ExtensionElementTruncated);
                };
                (first, usize::from(len), after)
            }
        };
        return match after.split_at_checked(len) {
            Some((data, next)) => Step::Element(id, data, next),
            None => Step::Malformed(RtpError::ExtensionElementTruncated),
        };
    }
}

/// Iterator over a header's extension elements; see [`RtpHeader::extensions`].
///
/// Each item is `Ok((id, data))`, or one final `Err` for a malformed element.
#[derive(Debug, Clone)]
pub struct Extensions<'a> {
    rest: &'a [u8],
    /// `None` once finished (or for a block that is not RFC 8285's).
    form: Option<ExtForm>,
}

impl Extensions<'_> {
    const EMPTY: Extensions<'static> = Extensions {
        rest: &[],
        form: None,
    };

    fn fail(&mut self, e: RtpError) -> Option<Result<(ExtId, &'static [u8]), RtpError>> {
        self.form = None;
        self.rest = &[];
        Some(Err(e))
    }
}

impl<'a> Iterator for Extensions<'a> {
    type Item = Result<(ExtId, &'a [u8]), RtpError>;

    fn next(&mut self) -> Option<Self::Item> {
        let form = self.form?;
        match next_element(self.rest, form) {
            Step::Element(id, data, after) => {
                self.rest = after;
                Some(Ok((ExtId(id), data)))
            }
            Step::End => {
                self.form = None;
                self.rest = &[];
                None
            }
            Step::Malformed(e) => self.fail(e),
        }
    }
}

impl FusedIterator for Extensions<'_> {}

/// Length of the RTP header at the start of `packet` (fixed part, CSRCs, extension).
///
/// The same checks as [`RtpHeader::parse`]; useful where only the length is needed.
#[inline]
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

#[inline]
fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

mod extensions;
#[cfg(any(test, feature = "fuzz"))]
mod fuzz;
mod layout;
mod writer;

pub use extensions::*;
#[cfg(feature = "fuzz")]
pub use fuzz::fuzz_one;
pub use layout::{ExtFound, ExtLayout, LAYOUT_IDS};
pub use writer::*;

#[cfg(test)]
mod tests;
