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
//! [`frame_marking`], [`abs_send_time`] and [`transport_cc_seq`].
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
        match (self.extension_form(), self.extension_data()) {
            (Some(form), Some(data)) => Extensions {
                rest: data,
                form: Some(form),
            },
            _ => Extensions::EMPTY,
        }
    }

    /// The data of the first extension element with this `id`.
    ///
    /// `None` if there is no such element before the end of the block, an ID-15 stop, or
    /// the first malformed element (see [`RtpHeader::extensions`]).
    pub fn extension(&self, id: ExtId) -> Option<&'a [u8]> {
        self.extensions()
            .map_while(Result::ok)
            .find_map(|(i, data)| (i == id).then_some(data))
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
        loop {
            let Some((&first, rest)) = self.rest.split_first() else {
                self.form = None;
                return None;
            };
            if first == 0 {
                // A padding byte: no ID, no length (RFC 8285 §4.1).
                self.rest = rest;
                continue;
            }
            let (id, len, rest) = match form {
                ExtForm::OneByte => {
                    let id = first >> 4;
                    if id == 15 {
                        self.form = None;
                        self.rest = &[];
                        return None;
                    }
                    if id == 0 {
                        return self.fail(RtpError::BadExtensionPadding);
                    }
                    (id, usize::from(first & 0x0f) + 1, rest)
                }
                ExtForm::TwoByte => {
                    let Some((&len, rest)) = rest.split_first() else {
                        return self.fail(RtpError::ExtensionElementTruncated);
                    };
                    (first, usize::from(len), rest)
                }
            };
            let Some((data, after)) = rest.split_at_checked(len) else {
                return self.fail(RtpError::ExtensionElementTruncated);
            };
            self.rest = after;
            return Some(Ok((ExtId(id), data)));
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

// ---------------------------------------------------------------------------------------
// Readers for the extensions the relay uses.

/// Client-to-mixer audio level (RFC 6464 §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AudioLevel {
    /// The V bit: the sender believes the packet contains voice.
    pub voice_activity: bool,
    /// Level in -dBov, 0 (loudest, 0 dBov) to 127 (silence, -127 dBov or quieter).
    pub level: u8,
}

impl AudioLevel {
    /// The level in dBov: 0 down to -127.
    pub fn dbov(&self) -> i16 {
        -i16::from(self.level & 0x7f)
    }

    /// The element's data byte. Rejects a level above 127 ([`RtpError::BadAudioLevel`]).
    pub fn to_byte(&self) -> Result<u8, RtpError> {
        if self.level > 0x7f {
            return Err(RtpError::BadAudioLevel);
        }
        Ok(u8::from(self.voice_activity) << 7 | self.level)
    }
}

/// Reads an audio level element (RFC 6464 §3): `|V| level |`, one byte.
///
/// The one-byte form always carries exactly one byte. In the two-byte form the RFC's
/// length is 1, but a sender may pad the element itself; any length ≥ 1 is accepted and
/// only the first byte is read. Rejects an empty element ([`RtpError::AudioLevelLen`]).
pub fn audio_level(data: &[u8]) -> Result<AudioLevel, RtpError> {
    let &b = data.first().ok_or(RtpError::AudioLevelLen)?;
    Ok(AudioLevel {
        voice_activity: b & 0x80 != 0,
        level: b & 0x7f,
    })
}

/// Video frame marking (RFC 9626 §3).
///
/// The first byte is `|S|E|I|D|B| TID |` in both forms; the long form for scalable
/// streams (§3.1) may add the LID byte and then the TL0PICIDX byte. The short form for
/// non-scalable streams (§3.2) is one byte with B and TID zero, so it reads the same as
/// a one-byte long form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FrameMarking {
    /// S: the first packet of a frame.
    pub start_of_frame: bool,
    /// E: the last packet of a frame.
    pub end_of_frame: bool,
    /// I: the frame can be decoded without earlier frames (a keyframe).
    pub independent: bool,
    /// D: the frame can be dropped and the stream stays decodable.
    pub discardable: bool,
    /// B: base layer sync — the frame depends only on the base temporal layer.
    pub base_layer_sync: bool,
    /// TID: temporal layer, 0..=7 (0 is the base layer).
    pub tid: u8,
    /// LID: spatial/quality layer (second byte, long form only).
    pub lid: Option<u8>,
    /// TL0PICIDX: temporal layer 0 picture index (third byte, long form only).
    pub tl0_pic_idx: Option<u8>,
}

impl FrameMarking {
    /// The first packet of an independently decodable frame: where a receiver that needs
    /// a keyframe can start (S and I set).
    pub fn starts_keyframe(&self) -> bool {
        self.start_of_frame && self.independent
    }

    /// Writes the element's data (1 to 3 bytes) into `out` and returns its length.
    ///
    /// Rejects a TID above 7 or a TL0PICIDX without a LID ([`RtpError::BadFrameMarking`])
    /// and an `out` too small ([`RtpError::BufferTooSmall`]).
    pub fn write(&self, out: &mut [u8]) -> Result<usize, RtpError> {
        if self.tid > 7 || (self.tl0_pic_idx.is_some() && self.lid.is_none()) {
            return Err(RtpError::BadFrameMarking);
        }
        let first = u8::from(self.start_of_frame) << 7
            | u8::from(self.end_of_frame) << 6
            | u8::from(self.independent) << 5
            | u8::from(self.discardable) << 4
            | u8::from(self.base_layer_sync) << 3
            | self.tid;
        let bytes = [first, self.lid.unwrap_or(0), self.tl0_pic_idx.unwrap_or(0)];
        let len = 1 + usize::from(self.lid.is_some()) + usize::from(self.tl0_pic_idx.is_some());
        let dst = out.get_mut(..len).ok_or(RtpError::BufferTooSmall)?;
        dst.copy_from_slice(&bytes[..len]);
        Ok(len)
    }
}

/// Reads a frame marking element (RFC 9626 §3).
///
/// Accepts 1 byte (short form, or long form with LID and TL0PICIDX omitted), 2 bytes
/// (LID present) or 3 bytes (LID and TL0PICIDX present); rejects any other length
/// ([`RtpError::FrameMarkingLen`]). Reserved bits are not checked: a short-form sender
/// should send B and TID as zero, and they are reported as they are.
pub fn frame_marking(data: &[u8]) -> Result<FrameMarking, RtpError> {
    let (&b, rest) = data.split_first().ok_or(RtpError::FrameMarkingLen)?;
    if rest.len() > 2 {
        return Err(RtpError::FrameMarkingLen);
    }
    Ok(FrameMarking {
        start_of_frame: b & 0x80 != 0,
        end_of_frame: b & 0x40 != 0,
        independent: b & 0x20 != 0,
        discardable: b & 0x10 != 0,
        base_layer_sync: b & 0x08 != 0,
        tid: b & 0x07,
        lid: rest.first().copied(),
        tl0_pic_idx: rest.get(1).copied(),
    })
}

/// The abs-send-time extension's value: a 24-bit 6.18 fixed-point count of seconds
/// (6 integer bits, 18 fraction bits) that wraps every 64 s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AbsSendTime(pub u32);

impl AbsSendTime {
    /// The largest value, 64 s minus 2^-18 s.
    pub const MAX: u32 = 0x00ff_ffff;

    /// The time within the 64-second cycle, in nanoseconds, rounded down.
    ///
    /// Bits above the low 24 are ignored.
    pub fn as_nanos(self) -> u64 {
        (u64::from(self.0 & Self::MAX) * 1_000_000_000) >> 18
    }

    /// The time within the 64-second cycle, rounded down to a nanosecond.
    pub fn to_duration(self) -> Duration {
        Duration::from_nanos(self.as_nanos())
    }

    /// The abs-send-time of `t` (taken modulo 64 s), rounded to the nearest 2^-18 s.
    ///
    /// Rounding to nearest makes `from_duration(x.to_duration()) == x` for every `x`.
    pub fn from_duration(t: Duration) -> AbsSendTime {
        // Below 64 s in nanoseconds is below 2^36, so the shift cannot overflow.
        let nanos = (t.as_secs() % 64) * 1_000_000_000 + u64::from(t.subsec_nanos());
        let ticks = ((nanos << 18) + 500_000_000) / 1_000_000_000;
        // Rounding up from just below 64 s wraps to 0, like the clock itself.
        AbsSendTime((ticks as u32) & Self::MAX)
    }

    /// The element's three data bytes (the low 24 bits, big-endian).
    pub fn to_bytes(self) -> [u8; 3] {
        let [_, a, b, c] = self.0.to_be_bytes();
        [a, b, c]
    }
}

/// Reads an abs-send-time element: exactly 3 bytes, big-endian.
///
/// Rejects any other length ([`RtpError::AbsSendTimeLen`]).
pub fn abs_send_time(data: &[u8]) -> Result<AbsSendTime, RtpError> {
    match *data {
        [a, b, c] => Ok(AbsSendTime(u32::from_be_bytes([0, a, b, c]))),
        _ => Err(RtpError::AbsSendTimeLen),
    }
}

/// Reads a transport-wide sequence number element
/// (draft-holmer-rmcat-transport-wide-cc-extensions-01 §2): exactly 2 bytes, big-endian.
///
/// Rejects any other length ([`RtpError::TransportCcLen`]).
pub fn transport_cc_seq(data: &[u8]) -> Result<u16, RtpError> {
    match *data {
        [a, b] => Ok(u16::from_be_bytes([a, b])),
        _ => Err(RtpError::TransportCcLen),
    }
}

// ---------------------------------------------------------------------------------------
// Writing.

/// The fields of an RTP header to write with [`write_header`]. The version is always 2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpFields<'c> {
    /// The P bit. The writer only sets the bit; the caller appends the padding.
    pub padding: bool,
    /// The marker bit.
    pub marker: bool,
    /// Payload type, 0..=127.
    pub payload_type: Pt,
    /// Sequence number.
    pub seq: WireSeq,
    /// Media timestamp.
    pub timestamp: RtpTime,
    /// Synchronization source.
    pub ssrc: Ssrc,
    /// Contributing sources, at most 15.
    pub csrcs: &'c [Ssrc],
}

/// Which form [`write_header`] uses for these elements, and the extension block's total
/// length including its 4-byte header; `None` for no elements.
fn plan_extensions(extensions: &[(ExtId, &[u8])]) -> Result<Option<(ExtForm, usize)>, RtpError> {
    if extensions.is_empty() {
        return Ok(None);
    }
    let one_byte = extensions
        .iter()
        .all(|(id, data)| (1..=14).contains(&id.0) && (1..=16).contains(&data.len()));
    let (form, per_element) = if one_byte {
        (ExtForm::OneByte, 1)
    } else {
        (ExtForm::TwoByte, 2)
    };
    let mut body: usize = 0;
    for (id, data) in extensions {
        if id.0 == 0 {
            return Err(RtpError::BadExtensionId);
        }
        if data.len() > 255 {
            return Err(RtpError::ExtensionTooLong);
        }
        body = body
            .checked_add(per_element + data.len())
            .ok_or(RtpError::ExtensionBlockTooLong)?;
    }
    let padded = body
        .checked_next_multiple_of(4)
        .ok_or(RtpError::ExtensionBlockTooLong)?;
    if padded / 4 > usize::from(u16::MAX) {
        return Err(RtpError::ExtensionBlockTooLong);
    }
    Ok(Some((form, 4 + padded)))
}

/// How many bytes [`write_header`] writes for these fields and extension elements.
///
/// Rejects the same inputs as [`write_header`], except that it has no buffer to be too
/// small.
pub fn encoded_header_len(
    fields: &RtpFields<'_>,
    extensions: &[(ExtId, &[u8])],
) -> Result<usize, RtpError> {
    layout(fields, extensions).map(|(total, _)| total)
}

/// The header's total length and the extension plan (see [`plan_extensions`]).
fn layout(
    fields: &RtpFields<'_>,
    extensions: &[(ExtId, &[u8])],
) -> Result<(usize, Option<(ExtForm, usize)>), RtpError> {
    if fields.csrcs.len() > 15 {
        return Err(RtpError::TooManyCsrcs);
    }
    if fields.payload_type.0 > 0x7f {
        return Err(RtpError::BadPayloadType);
    }
    let plan = plan_extensions(extensions)?;
    let ext = plan.map_or(0, |(_, len)| len);
    Ok((RtpHeader::FIXED_LEN + 4 * fields.csrcs.len() + ext, plan))
}

/// Writes an RTP header — fixed part, CSRCs and, if `extensions` is not empty, an
/// RFC 8285 extension block — at the start of `buf`, and returns its length.
///
/// The extension block uses the one-byte form (profile `0xBEDE`) when every ID is in
/// 1..=14 and every element is 1..=16 bytes long, and the two-byte form (profile
/// `0x1000`) otherwise. Elements are written in the order given, without padding
/// between them; the block is zero-padded to a multiple of 4 bytes. With no elements
/// the X bit is clear.
///
/// Rejects more than 15 CSRCs ([`RtpError::TooManyCsrcs`]), a payload type above 127
/// ([`RtpError::BadPayloadType`]), extension ID 0 ([`RtpError::BadExtensionId`]), an
/// element longer than 255 bytes ([`RtpError::ExtensionTooLong`]), a block longer than
/// 65535 words ([`RtpError::ExtensionBlockTooLong`]) and a `buf` shorter than the header
/// ([`RtpError::BufferTooSmall`]). Nothing is written when it fails.
pub fn write_header(
    buf: &mut [u8],
    fields: &RtpFields<'_>,
    extensions: &[(ExtId, &[u8])],
) -> Result<usize, RtpError> {
    let (total, plan) = layout(fields, extensions)?;
    let out = buf.get_mut(..total).ok_or(RtpError::BufferTooSmall)?;
    out.fill(0);

    // The CSRC count is at most 15, checked above.
    out[0] = 0x80
        | u8::from(fields.padding) << 5
        | u8::from(plan.is_some()) << 4
        | fields.csrcs.len() as u8;
    out[1] = u8::from(fields.marker) << 7 | fields.payload_type.0;
    out[2..4].copy_from_slice(&fields.seq.0.to_be_bytes());
    out[4..8].copy_from_slice(&fields.timestamp.0.to_be_bytes());
    out[8..12].copy_from_slice(&fields.ssrc.0.to_be_bytes());
    let mut at = RtpHeader::FIXED_LEN;
    for csrc in fields.csrcs {
        out[at..at + 4].copy_from_slice(&csrc.0.to_be_bytes());
        at += 4;
    }

    if let Some((form, block_len)) = plan {
        let profile = match form {
            ExtForm::OneByte => ONE_BYTE_PROFILE,
            ExtForm::TwoByte => TWO_BYTE_PROFILE,
        };
        // plan_extensions checked that the word count fits in 16 bits.
        let words = ((block_len - 4) / 4) as u16;
        out[at..at + 2].copy_from_slice(&profile.to_be_bytes());
        out[at + 2..at + 4].copy_from_slice(&words.to_be_bytes());
        at += 4;
        for (id, data) in extensions {
            // Lengths were checked by plan_extensions for the chosen form.
            match form {
                ExtForm::OneByte => {
                    out[at] = id.0 << 4 | (data.len() - 1) as u8;
                    at += 1;
                }
                ExtForm::TwoByte => {
                    out[at] = id.0;
                    out[at + 1] = data.len() as u8;
                    at += 2;
                }
            }
            out[at..at + data.len()].copy_from_slice(data);
            at += data.len();
        }
        // The padding up to `total` is already zero.
    }
    Ok(total)
}

// ---------------------------------------------------------------------------------------
// Fuzzing.

/// Fuzz entry point: drives every parser, accessor, reader and the writer on `data`.
#[cfg(feature = "fuzz")]
#[doc(hidden)]
pub fn fuzz_one(data: &[u8]) {
    exercise(data);
}

/// Everything `fuzz_one` does; also run by the unit tests on truncated and garbage input.
#[cfg(any(test, feature = "fuzz"))]
fn exercise(data: &[u8]) {
    exercise_writer(data);

    let parsed = RtpHeader::parse(data);
    assert_eq!(parsed.map(|h| h.header_len()), header_len(data));
    let Ok(h) = parsed else { return };

    // Every accessor.
    let _ = (h.packet(), h.padding(), h.marker(), h.payload_type());
    let _ = (h.seq(), h.timestamp(), h.ssrc(), h.payload());
    assert!(h.header_len() <= data.len());
    assert_eq!(h.payload().len(), data.len() - h.header_len());
    let csrcs: Vec<Ssrc> = (0..15).filter_map(|i| h.csrc(i)).collect();
    assert_eq!(csrcs.len(), h.csrc_count());
    if let Ok(p) = h.payload_without_padding() {
        assert!(p.len() <= h.payload().len());
        assert!(h.padding() || p.len() == h.payload().len());
    }
    assert_eq!(h.extension_profile().is_some(), h.has_extension());
    assert_eq!(h.extension_data().is_some(), h.has_extension());

    // Every element, every reader, and every reader's encoder back.
    let mut elements: Vec<(ExtId, &[u8])> = Vec::new();
    let mut malformed = false;
    for item in h.extensions() {
        match item {
            Ok((id, d)) => {
                check_readers(d);
                elements.push((id, d));
            }
            Err(_) => malformed = true,
        }
    }
    if h.extension_form().is_none() {
        assert!(elements.is_empty() && !malformed);
    }
    for (id, _) in &elements {
        let first = elements.iter().find(|(i, _)| i == id).map(|(_, d)| *d);
        assert_eq!(h.extension(*id), first);
    }
    if malformed {
        return;
    }

    // Rebuild the header from what was parsed and check it reads back the same.
    let exts: &[(ExtId, &[u8])] = &elements;
    let fields = RtpFields {
        padding: h.padding(),
        marker: h.marker(),
        payload_type: h.payload_type(),
        seq: h.seq(),
        timestamp: h.timestamp(),
        ssrc: h.ssrc(),
        csrcs: &csrcs,
    };
    let want = encoded_header_len(&fields, exts).expect("parsed header fits the writer");
    // Dropping padding, ID-15 tails and foreign blocks, or moving to the one-byte form,
    // never makes the header longer.
    assert!(want <= h.header_len());
    let mut out = vec![0u8; want];
    assert_eq!(write_header(&mut out, &fields, exts), Ok(want));
    assert_eq!(
        write_header(&mut out[..want - 1], &fields, exts),
        Err(RtpError::BufferTooSmall)
    );
    let r = RtpHeader::parse(&out).expect("written header parses");
    assert_eq!(r.header_len(), want);
    assert_same_header(&r, &fields, exts);
}

#[cfg(any(test, feature = "fuzz"))]
fn check_readers(d: &[u8]) {
    if let Ok(a) = audio_level(d) {
        assert_eq!(a.to_byte(), Ok(d[0]));
        assert!((-127..=0).contains(&a.dbov()));
    }
    if let Ok(f) = frame_marking(d) {
        let mut b = [0u8; 3];
        let n = f.write(&mut b).expect("read frame marking encodes");
        assert_eq!(&b[..n], d);
    }
    if let Ok(t) = abs_send_time(d) {
        assert_eq!(&t.to_bytes()[..], d);
        assert!(t.as_nanos() < 64_000_000_000);
        assert_eq!(AbsSendTime::from_duration(t.to_duration()), t);
    }
    if let Ok(s) = transport_cc_seq(d) {
        assert_eq!(&s.to_be_bytes()[..], d);
    }
}

/// Checks that a written-and-parsed header carries exactly these fields and elements.
#[cfg(any(test, feature = "fuzz"))]
fn assert_same_header(r: &RtpHeader<'_>, fields: &RtpFields<'_>, exts: &[(ExtId, &[u8])]) {
    assert_eq!(r.padding(), fields.padding);
    assert_eq!(r.marker(), fields.marker);
    assert_eq!(r.payload_type(), fields.payload_type);
    assert_eq!(r.seq(), fields.seq);
    assert_eq!(r.timestamp(), fields.timestamp);
    assert_eq!(r.ssrc(), fields.ssrc);
    assert_eq!(r.csrc_count(), fields.csrcs.len());
    for (i, c) in fields.csrcs.iter().enumerate() {
        assert_eq!(r.csrc(i), Some(*c));
    }
    assert_eq!(r.has_extension(), !exts.is_empty());
    if !exts.is_empty() {
        let one_byte = exts
            .iter()
            .all(|(id, d)| (1..=14).contains(&id.0) && (1..=16).contains(&d.len()));
        let form = if one_byte {
            ExtForm::OneByte
        } else {
            ExtForm::TwoByte
        };
        assert_eq!(r.extension_form(), Some(form));
    }
    let mut back = r.extensions();
    for want in exts {
        assert_eq!(back.next(), Some(Ok(*want)));
    }
    assert_eq!(back.next(), None);
}

/// Builds header fields and extension elements out of `data` and writes them into a
/// buffer whose size also comes from `data`, so the writer's rejections get exercised.
#[cfg(any(test, feature = "fuzz"))]
fn exercise_writer(data: &[u8]) {
    let Some((head, mut rest)) = data.split_first_chunk::<12>() else {
        return;
    };
    const NO_EXT: (ExtId, &[u8]) = (ExtId(0), &[]);
    let csrcs_all: [Ssrc; 16] = std::array::from_fn(|i| Ssrc(i as u32 + 1));
    let fields = RtpFields {
        padding: head[0] & 0x20 != 0,
        marker: head[1] & 0x80 != 0,
        // Occasionally out of range, to exercise the rejection.
        payload_type: Pt(if head[0] & 0x40 != 0 {
            head[1]
        } else {
            head[1] & 0x7f
        }),
        seq: WireSeq(u16::from_be_bytes([head[2], head[3]])),
        timestamp: RtpTime(be32(head, 4)),
        ssrc: Ssrc(be32(head, 8)),
        csrcs: &csrcs_all[..usize::from(head[0] & 0x0f) + usize::from(head[0] & 0x80 != 0)],
    };
    let mut exts = [NO_EXT; 16];
    let mut n = 0;
    while n < exts.len() {
        let Some(([id, len], tail)) = rest.split_first_chunk::<2>().map(|(a, t)| (*a, t)) else {
            break;
        };
        let take = usize::from(len).min(tail.len());
        let (d, tail) = tail.split_at(take);
        exts[n] = (ExtId(id), d);
        n += 1;
        rest = tail;
    }
    let exts = &exts[..n];
    let room = usize::from(head[3]) * 2;
    let mut out = vec![0u8; room];
    let expected = encoded_header_len(&fields, exts);
    match write_header(&mut out, &fields, exts) {
        Ok(len) => {
            assert_eq!(expected, Ok(len));
            let r = RtpHeader::parse(&out[..len]).expect("written header parses");
            assert_eq!(r.header_len(), len);
            assert_same_header(&r, &fields, exts);
        }
        Err(RtpError::BufferTooSmall) => assert!(expected.is_ok_and(|len| len > room)),
        Err(e) => assert_eq!(expected, Err(e)),
    }
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

    fn elements<'a>(h: &RtpHeader<'a>) -> Vec<Result<(ExtId, &'a [u8]), RtpError>> {
        h.extensions().collect()
    }

    /// RFC 8285 §4.2's one-byte example: ID L=0 with one byte, ID L=1 with two, two
    /// padding bytes, ID L=3 with four; length 3. The concrete packet (IDs 1, 2, 3 and
    /// its fixed header and payload) is webrtc-rs `rtp` crate's test vector for it.
    const RFC8285_ONE_BYTE: [u8; 33] = [
        0x90, 0xe0, 0x69, 0x8f, 0xd9, 0xc2, 0x93, 0xda, 0x1c, 0x64, 0x27, 0x82, //
        0xbe, 0xde, 0x00, 0x03, //
        0x10, 0xaa, 0x21, 0xbb, 0xbb, 0x00, 0x00, 0x33, 0xcc, 0xcc, 0xcc, 0xcc, //
        0x98, 0x36, 0xbe, 0x88, 0x9e,
    ];

    #[test]
    fn rfc8285_one_byte_example() {
        let h = RtpHeader::parse(&RFC8285_ONE_BYTE).unwrap();
        assert_eq!(h.header_len(), 28);
        assert_eq!(h.payload(), &[0x98, 0x36, 0xbe, 0x88, 0x9e]);
        assert_eq!(h.extension_profile(), Some(0xbede));
        assert_eq!(h.extension_form(), Some(ExtForm::OneByte));
        assert_eq!(h.extension_data().unwrap().len(), 12);
        assert_eq!(
            elements(&h),
            vec![
                Ok((ExtId(1), &[0xaa][..])),
                Ok((ExtId(2), &[0xbb, 0xbb][..])),
                Ok((ExtId(3), &[0xcc, 0xcc, 0xcc, 0xcc][..])),
            ]
        );
        assert_eq!(h.extension(ExtId(2)), Some(&[0xbb, 0xbb][..]));
        assert_eq!(h.extension(ExtId(4)), None);
        assert_eq!(h.payload_type(), Pt(96));
        assert!(h.marker());
    }

    /// RFC 8285 §4.3's two-byte example: ID L=0, ID L=1 with one byte, one padding
    /// byte, ID L=4 with four bytes; length 3. IDs and data chosen here.
    fn rfc8285_two_byte(profile: u16) -> Vec<u8> {
        let mut p = vec![0x90, 96, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3];
        p.extend_from_slice(&profile.to_be_bytes());
        p.extend_from_slice(&[0x00, 0x03]);
        p.extend_from_slice(&[0x01, 0x00, 0x02, 0x01]);
        p.extend_from_slice(&[0xaa, 0x00, 0xff, 0x04]);
        p.extend_from_slice(&[0xdd, 0xde, 0xdf, 0xe0]);
        p
    }

    #[test]
    fn rfc8285_two_byte_example() {
        for appbits in 0..16 {
            let p = rfc8285_two_byte(0x1000 | appbits);
            let h = RtpHeader::parse(&p).unwrap();
            assert_eq!(h.extension_profile(), Some(0x1000 | appbits));
            assert_eq!(h.extension_form(), Some(ExtForm::TwoByte));
            assert_eq!(
                elements(&h),
                vec![
                    Ok((ExtId(1), &[][..])),
                    Ok((ExtId(2), &[0xaa][..])),
                    Ok((ExtId(255), &[0xdd, 0xde, 0xdf, 0xe0][..])),
                ]
            );
            assert_eq!(h.extension(ExtId(1)), Some(&[][..]));
            assert_eq!(h.extension(ExtId(255)).map(<[u8]>::len), Some(4));
        }
    }

    #[test]
    fn one_byte_id_15_stops_parsing() {
        let p = [
            0x90, 96, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, //
            0xbe, 0xde, 0x00, 0x02, //
            0x10, 0xaa, 0xf3, 0x20, 0xbb, 0x00, 0x00, 0x00,
        ];
        let h = RtpHeader::parse(&p).unwrap();
        // The 0x20 0xbb after the ID-15 byte would be an element, but is never read.
        assert_eq!(elements(&h), vec![Ok((ExtId(1), &[0xaa][..]))]);
        assert_eq!(h.extension(ExtId(2)), None);
    }

    #[test]
    fn one_byte_id_0_with_length_is_malformed() {
        let p = [
            0x90, 96, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, //
            0xbe, 0xde, 0x00, 0x01, //
            0x10, 0xaa, 0x05, 0x00,
        ];
        let h = RtpHeader::parse(&p).unwrap();
        assert_eq!(
            elements(&h),
            vec![
                Ok((ExtId(1), &[0xaa][..])),
                Err(RtpError::BadExtensionPadding)
            ]
        );
        assert_eq!(h.extension(ExtId(1)), Some(&[0xaa][..]));
    }

    #[test]
    fn element_past_block_ends_with_error() {
        // One-byte: ID 2 claims 4 bytes, only 1 left in the block.
        let p = [
            0x90, 96, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, //
            0xbe, 0xde, 0x00, 0x01, //
            0x10, 0xaa, 0x23, 0xbb, //
            0xcc, 0xcc, 0xcc, // payload, not part of the block
        ];
        let h = RtpHeader::parse(&p).unwrap();
        let mut it = h.extensions();
        assert_eq!(it.next(), Some(Ok((ExtId(1), &[0xaa][..]))));
        assert_eq!(it.next(), Some(Err(RtpError::ExtensionElementTruncated)));
        assert_eq!(it.next(), None);
        assert_eq!(it.next(), None);
        assert_eq!(h.extension(ExtId(2)), None);

        // Two-byte: an ID with no room for its length byte.
        let p = [
            0x90, 96, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, //
            0x10, 0x00, 0x00, 0x01, //
            0x01, 0x01, 0xaa, 0x07,
        ];
        let h = RtpHeader::parse(&p).unwrap();
        assert_eq!(
            elements(&h),
            vec![
                Ok((ExtId(1), &[0xaa][..])),
                Err(RtpError::ExtensionElementTruncated)
            ]
        );

        // Two-byte: data runs past the block.
        let p = [
            0x90, 96, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, //
            0x10, 0x00, 0x00, 0x01, //
            0x00, 0x09, 0x03, 0xaa,
        ];
        let h = RtpHeader::parse(&p).unwrap();
        assert_eq!(elements(&h), vec![Err(RtpError::ExtensionElementTruncated)]);
    }

    #[test]
    fn unknown_profile_and_empty_blocks_yield_nothing() {
        let p = [
            0x90, 96, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, //
            0xab, 0xcd, 0x00, 0x01, //
            0x10, 0xaa, 0x00, 0x00,
        ];
        let h = RtpHeader::parse(&p).unwrap();
        assert_eq!(h.extension_profile(), Some(0xabcd));
        assert_eq!(h.extension_form(), None);
        assert_eq!(h.extension_data(), Some(&[0x10, 0xaa, 0, 0][..]));
        assert!(elements(&h).is_empty());
        assert_eq!(h.extension(ExtId(1)), None);
        // Close to, but not, the two-byte profile: appbits are only the low four bits.
        assert_eq!(ExtForm::of_profile(0x1010), None);
        assert_eq!(ExtForm::of_profile(0x0100), None);

        // X bit with a zero-length block, and all-padding blocks.
        let p = [0x90, 96, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0xbe, 0xde, 0, 0];
        let h = RtpHeader::parse(&p).unwrap();
        assert_eq!(h.extension_data(), Some(&[][..]));
        assert!(elements(&h).is_empty());
        for profile in [0xbede_u16, 0x1000] {
            let mut p = vec![0x90, 96, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3];
            p.extend_from_slice(&profile.to_be_bytes());
            p.extend_from_slice(&[0, 2, 0, 0, 0, 0, 0, 0, 0, 0]);
            assert!(elements(&RtpHeader::parse(&p).unwrap()).is_empty());
        }

        // No X bit.
        let h = RtpHeader::parse(&[0x80, 96, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3]).unwrap();
        assert_eq!(h.extension_profile(), None);
        assert_eq!(h.extension_data(), None);
        assert!(elements(&h).is_empty());
    }

    #[test]
    fn extensions_after_csrcs() {
        let p = [
            0x92, 96, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, //
            0, 0, 0, 7, 0, 0, 0, 8, //
            0xbe, 0xde, 0x00, 0x01, //
            0x51, 0x12, 0x34, 0x00,
        ];
        let h = RtpHeader::parse(&p).unwrap();
        assert_eq!(h.csrc(1), Some(Ssrc(8)));
        assert_eq!(h.extension(ExtId(5)), Some(&[0x12, 0x34][..]));
        assert_eq!(transport_cc_seq(h.extension(ExtId(5)).unwrap()), Ok(0x1234));
    }

    #[test]
    fn rfc6464_audio_level() {
        // V=1, level 0: voice at full scale (0 dBov).
        let a = audio_level(&[0x80]).unwrap();
        assert_eq!((a.voice_activity, a.level, a.dbov()), (true, 0, 0));
        // V=0, level 127: silence (-127 dBov).
        let a = audio_level(&[0x7f]).unwrap();
        assert_eq!((a.voice_activity, a.level, a.dbov()), (false, 127, -127));
        // V=1, level 42 (-42 dBov).
        let a = audio_level(&[0xaa]).unwrap();
        assert_eq!((a.voice_activity, a.level, a.dbov()), (true, 42, -42));
        assert_eq!(a.to_byte(), Ok(0xaa));
        // Two-byte form, len=1 plus a sender that padded inside the element.
        assert_eq!(audio_level(&[0x88, 0x00]).unwrap().level, 8);
        assert_eq!(audio_level(&[]), Err(RtpError::AudioLevelLen));
        let loud = AudioLevel {
            voice_activity: false,
            level: 128,
        };
        assert_eq!(loud.to_byte(), Err(RtpError::BadAudioLevel));

        // As it arrives: one-byte form, ID 1, len=0.
        let p = [
            0x90, 111, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0xbe, 0xde, 0, 1, 0x10, 0x9e, 0, 0,
        ];
        let h = RtpHeader::parse(&p).unwrap();
        let a = audio_level(h.extension(ExtId(1)).unwrap()).unwrap();
        assert_eq!((a.voice_activity, a.level), (true, 30));
    }

    #[test]
    fn rfc9626_frame_marking_bits() {
        // Each of S E I D B on its own, most significant first.
        let flags = |f: FrameMarking| {
            [
                f.start_of_frame,
                f.end_of_frame,
                f.independent,
                f.discardable,
                f.base_layer_sync,
            ]
        };
        for bit in 0..5 {
            let f = frame_marking(&[0x80 >> bit]).unwrap();
            let mut want = [false; 5];
            want[bit] = true;
            assert_eq!(flags(f), want, "bit {bit}");
            assert_eq!(f.tid, 0);
        }
        // TID is the low three bits.
        for tid in 0..8 {
            assert_eq!(frame_marking(&[tid]).unwrap().tid, tid);
        }
        // Short form (§3.2), non-scalable keyframe start: S=1 E=0 I=1 D=0, low bits 0.
        let f = frame_marking(&[0b1010_0000]).unwrap();
        assert!(f.starts_keyframe());
        assert_eq!((f.lid, f.tl0_pic_idx), (None, None));
        // Long form (§3.1): S E I D B=0,1,0,1,1, TID 5, LID 3, TL0PICIDX 200.
        let f = frame_marking(&[0b0101_1101, 3, 200]).unwrap();
        assert_eq!(flags(f), [false, true, false, true, true]);
        assert!(!f.starts_keyframe());
        assert_eq!((f.tid, f.lid, f.tl0_pic_idx), (5, Some(3), Some(200)));
        // Long form with TL0PICIDX omitted.
        let f = frame_marking(&[0xff, 9]).unwrap();
        assert_eq!((f.tid, f.lid, f.tl0_pic_idx), (7, Some(9), None));
        let mut b = [0u8; 3];
        assert_eq!(f.write(&mut b), Ok(2));
        assert_eq!(b[..2], [0xff, 9]);
        assert_eq!(f.write(&mut b[..1]), Err(RtpError::BufferTooSmall));

        assert_eq!(frame_marking(&[]), Err(RtpError::FrameMarkingLen));
        assert_eq!(frame_marking(&[0, 0, 0, 0]), Err(RtpError::FrameMarkingLen));
        let bad_tid = FrameMarking { tid: 8, ..f };
        assert_eq!(bad_tid.write(&mut b), Err(RtpError::BadFrameMarking));
        let tl0_without_lid = FrameMarking {
            lid: None,
            tl0_pic_idx: Some(1),
            ..f
        };
        assert_eq!(
            tl0_without_lid.write(&mut b),
            Err(RtpError::BadFrameMarking)
        );
    }

    #[test]
    fn abs_send_time_fixed_point() {
        let one_second = abs_send_time(&[0x04, 0x00, 0x00]).unwrap();
        assert_eq!(one_second, AbsSendTime(1 << 18));
        assert_eq!(one_second.to_duration(), Duration::from_secs(1));
        assert_eq!(AbsSendTime(1 << 17).as_nanos(), 500_000_000);
        // One tick is 2^-18 s = 3814.697265625 ns.
        assert_eq!(AbsSendTime(1).as_nanos(), 3814);
        // The top of the cycle: 64 s minus one tick.
        let max = abs_send_time(&[0xff, 0xff, 0xff]).unwrap();
        assert_eq!(max.0, AbsSendTime::MAX);
        assert_eq!(max.as_nanos(), 63_999_996_185);
        assert_eq!(
            AbsSendTime::from_duration(Duration::from_secs(1)),
            one_second
        );
        // Wraps every 64 s.
        assert_eq!(
            AbsSendTime::from_duration(Duration::from_millis(65_500)),
            AbsSendTime(1 << 18 | 1 << 17)
        );
        assert_eq!(AbsSendTime(0x12_3456).to_bytes(), [0x12, 0x34, 0x56]);
        assert_eq!(abs_send_time(&[1, 2]), Err(RtpError::AbsSendTimeLen));
        assert_eq!(abs_send_time(&[1, 2, 3, 4]), Err(RtpError::AbsSendTimeLen));
    }

    #[test]
    fn transport_cc_sequence() {
        assert_eq!(transport_cc_seq(&[0x01, 0x02]), Ok(0x0102));
        assert_eq!(transport_cc_seq(&[0xff, 0xff]), Ok(0xffff));
        assert_eq!(transport_cc_seq(&[0x01]), Err(RtpError::TransportCcLen));
        assert_eq!(transport_cc_seq(&[0, 0, 0]), Err(RtpError::TransportCcLen));
    }

    fn fields(csrcs: &[Ssrc]) -> RtpFields<'_> {
        RtpFields {
            padding: false,
            marker: true,
            payload_type: Pt(96),
            seq: WireSeq(0x698f),
            timestamp: RtpTime(0xd9c2_93da),
            ssrc: Ssrc(0x1c64_2782),
            csrcs,
        }
    }

    #[test]
    fn writes_rfc8285_one_byte_packet() {
        let exts: [(ExtId, &[u8]); 3] = [
            (ExtId(1), &[0xaa]),
            (ExtId(2), &[0xbb, 0xbb]),
            (ExtId(3), &[0xcc; 4]),
        ];
        let mut buf = [0xffu8; 40];
        let n = write_header(&mut buf, &fields(&[]), &exts).unwrap();
        // The RFC example minus its two inner padding bytes, padded at the end instead.
        assert_eq!(
            buf[..n],
            [
                0x90, 0xe0, 0x69, 0x8f, 0xd9, 0xc2, 0x93, 0xda, 0x1c, 0x64, 0x27, 0x82, //
                0xbe, 0xde, 0x00, 0x03, //
                0x10, 0xaa, 0x21, 0xbb, 0xbb, 0x33, 0xcc, 0xcc, 0xcc, 0xcc, 0x00, 0x00,
            ]
        );
        let h = RtpHeader::parse(&buf[..n]).unwrap();
        assert_same_header(&h, &fields(&[]), &exts);
        // The RFC packet itself reads back as the same elements.
        let rfc = RtpHeader::parse(&RFC8285_ONE_BYTE).unwrap();
        assert_same_header(&rfc, &fields(&[]), &exts);
    }

    #[test]
    fn write_parse_round_trip() {
        let csrcs: Vec<Ssrc> = (1..=15).map(|i| Ssrc(0x0101_0101 * i)).collect();
        let long = [0x5a; 255];
        let seventeen = [7; 17];
        let cases: Vec<Vec<(ExtId, &[u8])>> = vec![
            vec![],
            vec![(ExtId(14), &[1][..])],
            vec![(ExtId(1), &[0x80 | 30][..]), (ExtId(3), &[0xe0, 1, 2][..])],
            vec![(ExtId(1), &long[..16])],
            // Two-byte form: ID 15, ID > 15, empty element, element > 16 bytes, 255 bytes.
            vec![(ExtId(15), &[1][..])],
            vec![(ExtId(200), &[1, 2][..]), (ExtId(2), &[3][..])],
            vec![(ExtId(4), &[][..])],
            vec![(ExtId(4), &seventeen[..])],
            vec![
                (ExtId(255), &long[..]),
                (ExtId(1), &[][..]),
                (ExtId(1), &[9][..]),
            ],
        ];
        for exts in &cases {
            for ncsrc in [0, 1, 15] {
                for (padding, marker) in [(false, false), (true, true)] {
                    let f = RtpFields {
                        padding,
                        marker,
                        payload_type: Pt(127),
                        seq: WireSeq(0xfffe),
                        timestamp: RtpTime(u32::MAX),
                        ssrc: Ssrc(0x8000_0001),
                        csrcs: &csrcs[..ncsrc],
                    };
                    let len = encoded_header_len(&f, exts).unwrap();
                    assert_eq!(len % 4, 0);
                    let mut buf = vec![0xeeu8; len + 3];
                    assert_eq!(write_header(&mut buf, &f, exts), Ok(len));
                    assert_eq!(buf[len..], [0xee; 3], "wrote past the header");
                    let h = RtpHeader::parse(&buf[..len]).unwrap();
                    assert_eq!(h.header_len(), len);
                    assert_same_header(&h, &f, exts);
                    for (id, d) in exts.iter() {
                        let first = exts.iter().find(|(i, _)| i == id).unwrap().1;
                        assert_eq!(h.extension(*id), Some(first), "{d:?}");
                    }
                    // Too small at every length, and nothing written.
                    for short in 0..len {
                        let mut small = vec![0xeeu8; short];
                        assert_eq!(
                            write_header(&mut small, &f, exts),
                            Err(RtpError::BufferTooSmall)
                        );
                        assert!(small.iter().all(|&b| b == 0xee));
                    }
                }
            }
        }
    }

    #[test]
    fn writer_rejections() {
        let sixteen = [Ssrc(0); 16];
        let mut buf = [0u8; 2048];
        assert_eq!(
            write_header(&mut buf, &fields(&sixteen), &[]),
            Err(RtpError::TooManyCsrcs)
        );
        let bad_pt = RtpFields {
            payload_type: Pt(128),
            ..fields(&[])
        };
        assert_eq!(
            write_header(&mut buf, &bad_pt, &[]),
            Err(RtpError::BadPayloadType)
        );
        assert_eq!(
            write_header(&mut buf, &fields(&[]), &[(ExtId(0), &[1][..])]),
            Err(RtpError::BadExtensionId)
        );
        let too_long = [0u8; 256];
        assert_eq!(
            write_header(&mut buf, &fields(&[]), &[(ExtId(1), &too_long[..])]),
            Err(RtpError::ExtensionTooLong)
        );
        // 65535 words is the most a block can hold: 1024 elements of 2 + 255 bytes
        // is 263168 bytes, over the 262140 limit.
        let big = [0u8; 255];
        let many: Vec<(ExtId, &[u8])> = (0..1024).map(|_| (ExtId(200), &big[..])).collect();
        assert_eq!(
            encoded_header_len(&fields(&[]), &many),
            Err(RtpError::ExtensionBlockTooLong)
        );
        let fits: Vec<(ExtId, &[u8])> = (0..1020).map(|_| (ExtId(200), &big[..])).collect();
        // 1020 elements of 257 bytes fill exactly 65535 words.
        assert_eq!(
            encoded_header_len(&fields(&[]), &fits),
            Ok(12 + 4 + 65535 * 4)
        );
    }

    #[test]
    fn padding_is_checked() {
        let mut p = vec![0xa0, 96, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 1, 2, 3, 0, 0, 3];
        let h = RtpHeader::parse(&p).unwrap();
        assert_eq!(h.payload_without_padding(), Ok(&[1, 2, 3][..]));
        p[17] = 6; // the whole payload is padding
        assert_eq!(
            RtpHeader::parse(&p).unwrap().payload_without_padding(),
            Ok(&[][..])
        );
        p[17] = 7;
        assert_eq!(
            RtpHeader::parse(&p).unwrap().payload_without_padding(),
            Err(RtpError::PaddingOverrun)
        );
        p[17] = 0;
        assert_eq!(
            RtpHeader::parse(&p).unwrap().payload_without_padding(),
            Err(RtpError::PaddingCountZero)
        );
        assert_eq!(
            RtpHeader::parse(&p[..12])
                .unwrap()
                .payload_without_padding(),
            Err(RtpError::PaddingOverrun)
        );
        // Without the P bit the last byte is payload.
        p[0] = 0x80;
        assert_eq!(
            RtpHeader::parse(&p).unwrap().payload_without_padding(),
            Ok(&p[12..])
        );
    }

    fn sample_packets() -> Vec<Vec<u8>> {
        let mut v = vec![RFC8285_ONE_BYTE.to_vec(), rfc8285_two_byte(0x1003)];
        let csrcs = [Ssrc(1), Ssrc(2)];
        let exts: [(ExtId, &[u8]); 4] = [
            (ExtId(1), &[0x85]),
            (ExtId(2), &[0xa0, 1, 2]),
            (ExtId(3), &[1, 2, 3]),
            (ExtId(4), &[0, 9]),
        ];
        let mut buf = vec![0u8; 64];
        let n = write_header(&mut buf, &fields(&csrcs), &exts).unwrap();
        buf.truncate(n);
        buf.extend_from_slice(&[1, 2, 3, 0, 2]);
        buf[0] |= 0x20;
        v.push(buf);
        v
    }

    #[test]
    fn truncation_at_every_length_never_panics() {
        for p in sample_packets() {
            let full = header_len(&p).unwrap();
            for cut in 0..=p.len() {
                let r = RtpHeader::parse(&p[..cut]);
                if cut < 12 {
                    assert_eq!(r.unwrap_err(), RtpError::TooShort);
                } else if cut < full {
                    assert_eq!(r.unwrap_err(), RtpError::Truncated);
                } else {
                    assert_eq!(r.unwrap().header_len(), full);
                }
                exercise(&p[..cut]);
            }
        }
    }

    #[test]
    fn garbage_never_panics() {
        // A small deterministic generator. A third of the inputs are random bytes shaped
        // like RTP with an RFC 8285 block; the rest are valid packets from the writer
        // with a few bytes of the header damaged, so both the rebuild path and the
        // malformed-element path of `exercise` are reached often.
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let (mut with_elements, mut malformed) = (0, 0);
        let noise: Vec<u8> = (0..4096).map(|_| next() as u8).collect();
        let csrcs = [Ssrc(5); 15];
        for round in 0..20_000 {
            let mut p: Vec<u8>;
            if round % 3 == 0 {
                let len = (next() % 96) as usize;
                p = (0..len).map(|_| next() as u8).collect();
                if p.len() >= 16 {
                    p[0] = 0x90 | (p[0] & 0x23);
                    let off = 12 + 4 * usize::from(p[0] & 0x03);
                    if p.len() >= off + 4 {
                        let profile: u16 = if round % 2 == 0 { 0xbede } else { 0x100a };
                        p[off..off + 2].copy_from_slice(&profile.to_be_bytes());
                        p[off + 2] = 0;
                        p[off + 3] %= ((p.len() - off - 4) / 4 + 1) as u8;
                    }
                }
            } else {
                let mut exts: Vec<(ExtId, &[u8])> = Vec::new();
                for _ in 0..next() % 6 {
                    let r = next();
                    let id = if r % 8 == 0 {
                        r >> 8
                    } else {
                        1 + (r >> 8) % 14
                    } as u8;
                    let len = if r % 16 == 1 {
                        (r >> 16) % 40
                    } else {
                        (r >> 16) % 5
                    } as usize;
                    let at = ((r >> 32) % 4000) as usize;
                    exts.push((ExtId(id.max(1)), &noise[at..at + len]));
                }
                let f = RtpFields {
                    padding: next() % 2 == 0,
                    csrcs: &csrcs[..(next() % 3) as usize],
                    ..fields(&[])
                };
                p = vec![0u8; 600];
                let n = write_header(&mut p, &f, &exts).unwrap();
                p.truncate(n + (next() % 8) as usize);
                for _ in 0..next() % 3 {
                    let at = (next() as usize) % n;
                    p[at] = next() as u8;
                }
            }
            exercise(&p);
            if let Ok(h) = RtpHeader::parse(&p) {
                let items: Vec<_> = h.extensions().collect();
                match items.last() {
                    Some(Ok(_)) => with_elements += 1,
                    Some(Err(_)) => malformed += 1,
                    None => {}
                }
            }
        }
        assert!(with_elements > 5_000, "{with_elements}");
        assert!(malformed > 1_000, "{malformed}");
        for p in sample_packets() {
            for i in 0..p.len() {
                for flip in [0x01, 0x10, 0x80, 0xff] {
                    let mut q = p.clone();
                    q[i] ^= flip;
                    exercise(&q);
                }
            }
        }
    }
}
