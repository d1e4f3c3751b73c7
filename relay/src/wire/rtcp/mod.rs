//! RTCP compound packets (RFC 3550, RFC 4585, RFC 5104, RFC 7728, REMB, transport-cc).
//!
//! # Parsing
//!
//! [`RtcpCompound::parse`] walks a decrypted (S)RTCP compound packet once and checks
//! its framing: every packet has version 2, a length field that stays inside the
//! buffer, and padding only on the last packet. Reduced-size RTCP (RFC 5506) is
//! accepted: the first packet need not be an SR or RR.
//!
//! Iterating the compound gives one [`RtcpPacket`] per packet. Each typed view checks
//! its own minimum sizes when it is made, so one malformed packet yields an `Err` (to
//! count and skip) while the rest of the compound is still readable. After that, every
//! accessor and iterator of a view is infallible and reads straight from the buffer.
//!
//! ```
//! use blindfold_relay::id::Ssrc;
//! use blindfold_relay::wire::rtcp::{CompoundWriter, RtcpCompound, RtcpPacket};
//!
//! let mut buf = [0u8; 64];
//! let mut w = CompoundWriter::new(&mut buf);
//! w.pli(Ssrc(1), Ssrc(2)).unwrap();
//! w.remb(Ssrc(1), 1_500_000, &[Ssrc(2)]).unwrap();
//! let len = w.finish();
//!
//! let compound = RtcpCompound::parse(&buf[..len]).unwrap();
//! for packet in compound {
//!     match packet.unwrap() {
//!         RtcpPacket::Pli(pli) => assert_eq!(pli.media_ssrc(), Ssrc(2)),
//!         RtcpPacket::Remb(remb) => assert_eq!(remb.bitrate_bps(), 1_500_000),
//!         _ => unreachable!(),
//!     }
//! }
//! ```
//!
//! # Building
//!
//! The `write_*` functions write one packet at the start of a caller's buffer, fill in
//! its header (length included) and return the number of bytes written; they fail with
//! [`RtcpError::BufferTooSmall`] rather than write a partial packet. [`CompoundWriter`]
//! appends such packets one after another into one buffer. Nothing allocates.

use crate::id::{RtpTime, Ssrc, WireSeq};

/// RTCP packet type of a sender report (RFC 3550 §6.4.1).
pub const PT_SR: u8 = 200;
/// RTCP packet type of a receiver report (RFC 3550 §6.4.2).
pub const PT_RR: u8 = 201;
/// RTCP packet type of source description items (RFC 3550 §6.5).
pub const PT_SDES: u8 = 202;
/// RTCP packet type of a goodbye (RFC 3550 §6.6).
pub const PT_BYE: u8 = 203;
/// RTCP packet type of application-defined packets (RFC 3550 §6.7).
pub const PT_APP: u8 = 204;
/// RTCP packet type of transport-layer feedback (RFC 4585 §6.2).
pub const PT_RTPFB: u8 = 205;
/// RTCP packet type of payload-specific feedback (RFC 4585 §6.3).
pub const PT_PSFB: u8 = 206;

/// RTPFB FMT of a generic NACK (RFC 4585 §6.2.1).
pub const FMT_NACK: u8 = 1;
/// RTPFB FMT of a temporary maximum media stream bitrate request (RFC 5104 §4.2.1).
pub const FMT_TMMBR: u8 = 3;
/// RTPFB FMT of a temporary maximum media stream bitrate notification (RFC 5104 §4.2.2).
pub const FMT_TMMBN: u8 = 4;
/// RTPFB FMT of transport-wide congestion control feedback (draft-holmer-…-01 §3.1).
pub const FMT_TCC: u8 = 15;
/// PSFB FMT of a picture loss indication (RFC 4585 §6.3.1).
pub const FMT_PLI: u8 = 1;
/// PSFB FMT of a full intra request (RFC 5104 §4.3.1).
pub const FMT_FIR: u8 = 4;
/// PSFB FMT of application-layer feedback, which carries REMB (RFC 4585 §6.4).
pub const FMT_AFB: u8 = 15;

/// Length of the common RTCP header.
const HEADER_LEN: usize = 4;
/// Largest packet the 16-bit length field can describe: (0xffff + 1) words.
const MAX_PACKET_LEN: usize = 0x1_0000 * 4;
/// Largest value of the 5-bit count / FMT field.
const MAX_COUNT: usize = 31;
/// Sender SSRC + media SSRC that start every RTPFB/PSFB packet.
const FB_COMMON_LEN: usize = 8;
/// One report block (RFC 3550 §6.4.1).
const REPORT_BLOCK_LEN: usize = 24;
/// Sender info of an SR, after the header: SSRC, NTP, RTP time, counts.
const SENDER_INFO_LEN: usize = 24;
/// REMB's unique identifier (draft-alvestrand-rmcat-remb-03 §2.2).
const REMB_ID: [u8; 4] = *b"REMB";

/// Why a buffer is not valid RTCP, or why a packet could not be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum RtcpError {
    /// Empty, or fewer than 4 bytes left where a packet header should start (8 for
    /// [`first_ssrc`]).
    #[error("shorter than an RTCP header")]
    TooShort,
    /// The version field is not 2.
    #[error("RTCP version is not 2")]
    BadVersion,
    /// The length field runs past the end of the buffer.
    #[error("RTCP length field runs past the end")]
    LengthOverrun,
    /// The padding count is zero or larger than the packet body.
    #[error("RTCP padding count is invalid")]
    BadPadding,
    /// A packet other than the last of the compound has the padding bit set.
    #[error("RTCP padding on a packet that is not the last")]
    PaddingNotLast,
    /// A single-packet parse found bytes after the packet.
    #[error("bytes after the RTCP packet")]
    TrailingBytes,
    /// A typed single-packet parse found another packet type or FMT.
    #[error("not the expected RTCP packet type")]
    WrongType,
    /// An SR shorter than its sender info and report blocks.
    #[error("sender report shorter than its report count says")]
    SrTooShort,
    /// An RR shorter than its SSRC and report blocks.
    #[error("receiver report shorter than its report count says")]
    RrTooShort,
    /// SDES chunks or items run past the end, or fewer chunks than the count says.
    #[error("SDES chunks or items run past the end")]
    SdesTruncated,
    /// BYE SSRC list or reason runs past the end.
    #[error("BYE SSRC list or reason runs past the end")]
    ByeTruncated,
    /// APP packet shorter than SSRC and name.
    #[error("APP packet shorter than SSRC and name")]
    AppTooShort,
    /// RTPFB/PSFB packet shorter than its sender and media SSRCs.
    #[error("feedback packet shorter than its SSRCs")]
    FeedbackTooShort,
    /// Generic NACK FCI empty or not a multiple of 4 bytes.
    #[error("NACK FCI empty or not a multiple of 4 bytes")]
    NackBadLength,
    /// TMMBR FCI empty, or TMMBR/TMMBN FCI not a multiple of 8 bytes.
    #[error("TMMBR/TMMBN FCI has a bad length")]
    TmmbBadLength,
    /// FIR FCI empty or not a multiple of 8 bytes.
    #[error("FIR FCI empty or not a multiple of 8 bytes")]
    FirBadLength,
    /// PAUSE-RESUME FCI empty, or an entry's parameters run past the end.
    #[error("PAUSE-RESUME FCI empty or an entry runs past the end")]
    PauseBadLength,
    /// REMB shorter than its fixed part or its SSRC list.
    #[error("REMB shorter than its SSRC count says")]
    RembTooShort,
    /// Transport-cc feedback shorter than its fixed fields.
    #[error("transport-cc feedback shorter than its fixed fields")]
    TccTooShort,
    /// Transport-cc packet chunks end before the packet status count is covered.
    #[error("transport-cc packet chunks end early")]
    TccChunksTruncated,
    /// Transport-cc receive deltas run past the end.
    #[error("transport-cc receive deltas run past the end")]
    TccDeltasTruncated,
    /// A Blindfold probe or probe report (APP `BFPR`) shorter than its fields, or a
    /// probe whose index is not below its count.
    #[error("BFPR probe packet with bad fields")]
    ProbeMalformed,
    /// Builder: the output buffer is too small for the packet.
    #[error("output buffer too small")]
    BufferTooSmall,
    /// Builder: more items than the count field (31), REMB's SSRC count (255) or the
    /// 16-bit length field allow.
    #[error("too many items for one RTCP packet")]
    TooManyItems,
    /// Builder: an SDES item or BYE reason longer than 255 bytes.
    #[error("SDES item or BYE reason longer than 255 bytes")]
    ItemTooLong,
    /// Builder: a NACK, TMMBR or FIR with no entries.
    #[error("feedback packet needs at least one entry")]
    EmptyList,
    /// Builder: APP data not a multiple of 4 bytes.
    #[error("APP data not a multiple of 4 bytes")]
    Unaligned,
    /// Builder: a field outside its range (APP subtype > 31, TMMBR overhead > 511,
    /// SDES item type 0).
    #[error("field value out of range")]
    FieldOutOfRange,
}

// ---------------------------------------------------------------------------------------
// Framing
// ---------------------------------------------------------------------------------------

/// One RTCP packet of a compound, framed but not interpreted.
///
/// The whole packet is [`RawPacket::bytes`]; the part after the 4-byte header with any
/// padding removed is [`RawPacket::body`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawPacket<'a> {
    bytes: &'a [u8],
    body: &'a [u8],
}

impl<'a> RawPacket<'a> {
    /// Parses one RTCP packet that fills `packet` exactly.
    ///
    /// Rejects what [`RtcpCompound::parse`] rejects, and bytes after the packet
    /// ([`RtcpError::TrailingBytes`]).
    pub fn parse(packet: &'a [u8]) -> Result<Self, RtcpError> {
        let (raw, rest) = split_packet(packet)?;
        if !rest.is_empty() {
            return Err(RtcpError::TrailingBytes);
        }
        Ok(raw)
    }

    /// The whole packet: header, body and padding.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// The packet after its 4-byte header, without padding.
    pub fn body(&self) -> &'a [u8] {
        self.body
    }

    /// The P bit.
    pub fn has_padding(&self) -> bool {
        self.bytes[0] & 0x20 != 0
    }

    /// The 5-bit count field: report count, source count, APP subtype or feedback FMT.
    pub fn count(&self) -> u8 {
        self.bytes[0] & 0x1f
    }

    /// The packet type (200 SR, 201 RR, …).
    pub fn pt(&self) -> u8 {
        self.bytes[1]
    }

    /// Interprets the packet as its typed view (see [`RtcpPacket`]).
    ///
    /// Rejects a packet too short for its type, with the type's own error variant.
    pub fn typed(self) -> Result<RtcpPacket<'a>, RtcpError> {
        RtcpPacket::from_raw(self)
    }
}

/// Splits the first packet off `buf`; the caller decides whether padding is allowed.
fn split_packet(buf: &[u8]) -> Result<(RawPacket<'_>, &[u8]), RtcpError> {
    let header = buf.get(..HEADER_LEN).ok_or(RtcpError::TooShort)?;
    if header[0] >> 6 != 2 {
        return Err(RtcpError::BadVersion);
    }
    let len = (usize::from(u16::from_be_bytes([header[2], header[3]])) + 1) * 4;
    if len > buf.len() {
        return Err(RtcpError::LengthOverrun);
    }
    let (bytes, rest) = buf.split_at(len);
    let mut content_end = len;
    if header[0] & 0x20 != 0 {
        if !rest.is_empty() {
            return Err(RtcpError::PaddingNotLast);
        }
        let pad = usize::from(bytes[len - 1]);
        if pad == 0 || pad > len - HEADER_LEN {
            return Err(RtcpError::BadPadding);
        }
        content_end = len - pad;
    }
    let body = bytes
        .get(HEADER_LEN..content_end)
        .ok_or(RtcpError::BadPadding)?;
    Ok((RawPacket { bytes, body }, rest))
}

/// A decrypted RTCP compound packet whose framing has been checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtcpCompound<'a> {
    buf: &'a [u8],
}

impl<'a> RtcpCompound<'a> {
    /// Walks the compound packet in `buf` and checks its framing.
    ///
    /// Rejects an empty buffer or a tail shorter than a header ([`RtcpError::TooShort`]),
    /// a version other than 2, a length field past the end, padding on any packet but
    /// the last, and a padding count of zero or larger than the packet body. It does
    /// not look inside the packets (see [`RtcpCompound::packets`]) and does not require
    /// an SR or RR first (RFC 5506 reduced-size RTCP).
    pub fn parse(buf: &'a [u8]) -> Result<Self, RtcpError> {
        if buf.is_empty() {
            return Err(RtcpError::TooShort);
        }
        let mut rest = buf;
        while !rest.is_empty() {
            rest = split_packet(rest)?.1;
        }
        Ok(RtcpCompound { buf })
    }

    /// The whole compound packet.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.buf
    }

    /// The packets, framed but not interpreted.
    pub fn raw_packets(&self) -> RawPackets<'a> {
        RawPackets { rest: self.buf }
    }

    /// The packets as typed views; a packet too short for its type is an `Err` item
    /// and iteration goes on with the next packet.
    pub fn packets(&self) -> Packets<'a> {
        Packets {
            raw: self.raw_packets(),
        }
    }
}

impl<'a> IntoIterator for RtcpCompound<'a> {
    type Item = Result<RtcpPacket<'a>, RtcpError>;
    type IntoIter = Packets<'a>;

    fn into_iter(self) -> Packets<'a> {
        self.packets()
    }
}

/// Iterator over the [`RawPacket`]s of an [`RtcpCompound`].
#[derive(Debug, Clone)]
pub struct RawPackets<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for RawPackets<'a> {
    type Item = RawPacket<'a>;

    fn next(&mut self) -> Option<RawPacket<'a>> {
        // The compound was validated; an error here cannot happen, but ends the walk.
        let (raw, rest) = split_packet(self.rest).ok()?;
        self.rest = rest;
        Some(raw)
    }
}

/// Iterator over the typed [`RtcpPacket`]s of an [`RtcpCompound`].
#[derive(Debug, Clone)]
pub struct Packets<'a> {
    raw: RawPackets<'a>,
}

impl<'a> Iterator for Packets<'a> {
    type Item = Result<RtcpPacket<'a>, RtcpError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.raw.next().map(RawPacket::typed)
    }
}

/// The sender SSRC of the first packet in `buf` (bytes 4..8), without walking further.
///
/// SRTCP leaves the first 8 bytes in the clear, so this works on protected packets and
/// selects the SRTCP context before decryption. Rejects fewer than 8 bytes
/// ([`RtcpError::TooShort`]) and a version other than 2.
pub fn first_ssrc(buf: &[u8]) -> Result<Ssrc, RtcpError> {
    let head = buf.get(..8).ok_or(RtcpError::TooShort)?;
    if head[0] >> 6 != 2 {
        return Err(RtcpError::BadVersion);
    }
    Ok(Ssrc(be32(head, 4)))
}

// ---------------------------------------------------------------------------------------
// Typed packets
// ---------------------------------------------------------------------------------------

/// One RTCP packet, by type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RtcpPacket<'a> {
    /// Sender report, PT 200.
    SenderReport(SenderReport<'a>),
    /// Receiver report, PT 201.
    ReceiverReport(ReceiverReport<'a>),
    /// Source description, PT 202.
    Sdes(Sdes<'a>),
    /// Goodbye, PT 203.
    Bye(Bye<'a>),
    /// Application-defined, PT 204.
    App(App<'a>),
    /// Generic NACK, RTPFB FMT 1.
    Nack(Nack<'a>),
    /// TMMBR, RTPFB FMT 3.
    Tmmbr(Tmmbr<'a>),
    /// TMMBN, RTPFB FMT 4.
    Tmmbn(Tmmbn<'a>),
    /// Transport-wide congestion control feedback, RTPFB FMT 15.
    TransportCc(TransportCc<'a>),
    /// Pause and resume (RFC 7728), RTPFB FMT 9.
    PauseResume(PauseResume<'a>),
    /// Picture loss indication, PSFB FMT 1.
    Pli(Pli<'a>),
    /// Full intra request, PSFB FMT 4.
    Fir(Fir<'a>),
    /// Receiver estimated maximum bitrate, PSFB FMT 15 with the "REMB" identifier.
    Remb(Remb<'a>),
    /// Any other packet type or feedback FMT (XR, SLI, RPSI, other AFB, …).
    Other {
        /// Packet type.
        pt: u8,
        /// The 5-bit count / FMT field.
        fmt: u8,
        /// The packet after its header, without padding.
        body: &'a [u8],
    },
}

impl<'a> RtcpPacket<'a> {
    /// Interprets a framed packet by its type and FMT.
    ///
    /// Rejects a packet too short for its type, with that type's error variant
    /// (RTPFB/PSFB shorter than two SSRCs: [`RtcpError::FeedbackTooShort`]).
    pub fn from_raw(raw: RawPacket<'a>) -> Result<Self, RtcpError> {
        let fmt = raw.count();
        Ok(match (raw.pt(), fmt) {
            (PT_SR, _) => RtcpPacket::SenderReport(SenderReport::from_raw(raw)?),
            (PT_RR, _) => RtcpPacket::ReceiverReport(ReceiverReport::from_raw(raw)?),
            (PT_SDES, _) => RtcpPacket::Sdes(Sdes::from_raw(raw)?),
            (PT_BYE, _) => RtcpPacket::Bye(Bye::from_raw(raw)?),
            (PT_APP, _) => RtcpPacket::App(App::from_raw(raw)?),
            (PT_RTPFB | PT_PSFB, _) if raw.body.len() < FB_COMMON_LEN => {
                return Err(RtcpError::FeedbackTooShort);
            }
            (PT_RTPFB, FMT_NACK) => RtcpPacket::Nack(Nack::from_raw(raw)?),
            (PT_RTPFB, FMT_TMMBR) => RtcpPacket::Tmmbr(Tmmbr::from_raw(raw)?),
            (PT_RTPFB, FMT_TMMBN) => RtcpPacket::Tmmbn(Tmmbn::from_raw(raw)?),
            (PT_RTPFB, FMT_TCC) => RtcpPacket::TransportCc(TransportCc::from_raw(raw)?),
            (PT_RTPFB, FMT_PAUSE_RESUME) => RtcpPacket::PauseResume(PauseResume::from_raw(raw)?),
            (PT_PSFB, FMT_PLI) => RtcpPacket::Pli(Pli::from_raw(raw)?),
            (PT_PSFB, FMT_FIR) => RtcpPacket::Fir(Fir::from_raw(raw)?),
            (PT_PSFB, FMT_AFB) if raw.body.get(8..12) == Some(&REMB_ID[..]) => {
                RtcpPacket::Remb(Remb::from_raw(raw)?)
            }
            (pt, fmt) => RtcpPacket::Other {
                pt,
                fmt,
                body: raw.body,
            },
        })
    }
}

/// Defines `parse` (single packet, type checked) and `packet` for a typed view whose
/// `from_raw` checks the sizes.
macro_rules! single_packet_parse {
    ($ty:ident, $what:literal, |$raw:ident| $is_type:expr) => {
        impl<'a> $ty<'a> {
            #[doc = concat!("Parses one ", $what, " that fills `packet` exactly.")]
            ///
            /// Rejects what [`RawPacket::parse`] rejects, another packet type or FMT
            /// ([`RtcpError::WrongType`]), and a packet too short for this type.
            pub fn parse(packet: &'a [u8]) -> Result<Self, RtcpError> {
                let $raw = RawPacket::parse(packet)?;
                if !($is_type) {
                    return Err(RtcpError::WrongType);
                }
                Self::from_raw($raw)
            }

            /// The whole packet, header and padding included.
            pub fn packet(&self) -> &'a [u8] {
                self.raw.bytes
            }
        }
    };
}

/// Defines sender/media SSRC and FCI accessors of an RTPFB/PSFB view.
macro_rules! feedback_accessors {
    ($ty:ident) => {
        impl<'a> $ty<'a> {
            /// SSRC of the packet sender.
            pub fn sender_ssrc(&self) -> Ssrc {
                Ssrc(be32(self.raw.body, 0))
            }

            /// SSRC of the media source (0 where the FMT does not use it).
            pub fn media_ssrc(&self) -> Ssrc {
                Ssrc(be32(self.raw.body, 4))
            }

            /// The feedback control information after the two SSRCs.
            pub fn fci(&self) -> &'a [u8] {
                &self.raw.body[FB_COMMON_LEN..]
            }
        }
    };
}

fn feedback_check(raw: &RawPacket<'_>) -> Result<(), RtcpError> {
    if raw.body.len() < FB_COMMON_LEN {
        Err(RtcpError::FeedbackTooShort)
    } else {
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be24(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([0, b[at], b[at + 1], b[at + 2]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn sign_extend_24(v: u32) -> i32 {
    ((v << 8) as i32) >> 8
}

/// `mantissa × 2^exp`, saturating at `u64::MAX`.
fn mantissa_exp_to_bps(mantissa: u64, exp: u32) -> u64 {
    if mantissa == 0 {
        0
    } else if exp >= 64 || (64 - mantissa.leading_zeros()) + exp > 64 {
        u64::MAX
    } else {
        mantissa << exp
    }
}

/// The smallest exponent whose `bits`-bit mantissa holds `bps` (rounding down).
fn bps_to_mantissa_exp(bps: u64, bits: u32) -> (u64, u32) {
    let width = 64 - bps.leading_zeros();
    let exp = width.saturating_sub(bits);
    (bps >> exp, exp)
}

// ---------------------------------------------------------------------------------------
// Builders
// ---------------------------------------------------------------------------------------

/// Writes big-endian fields into a slice whose length was checked up front.
struct Cursor<'b> {
    buf: &'b mut [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn put(&mut self, bytes: &[u8]) {
        self.buf[self.pos..self.pos + bytes.len()].copy_from_slice(bytes);
        self.pos += bytes.len();
    }

    fn u8(&mut self, v: u8) {
        self.put(&[v]);
    }

    fn u16(&mut self, v: u16) {
        self.put(&v.to_be_bytes());
    }

    fn u32(&mut self, v: u32) {
        self.put(&v.to_be_bytes());
    }

    fn zeros_to(&mut self, end: usize) {
        self.buf[self.pos..end].fill(0);
        self.pos = end;
    }
}

/// Checks `total` against the length field and `out`, and writes the header.
fn begin(out: &mut [u8], total: usize, count: u8, pt: u8) -> Result<Cursor<'_>, RtcpError> {
    if total > MAX_PACKET_LEN {
        return Err(RtcpError::TooManyItems);
    }
    let buf = out.get_mut(..total).ok_or(RtcpError::BufferTooSmall)?;
    let mut c = Cursor { buf, pos: 0 };
    c.u8(0x80 | (count & 0x1f));
    c.u8(pt);
    c.u16((total / 4 - 1) as u16);
    Ok(c)
}

fn count_field(n: usize) -> Result<u8, RtcpError> {
    if n > MAX_COUNT {
        Err(RtcpError::TooManyItems)
    } else {
        Ok(n as u8)
    }
}

// ---------------------------------------------------------------------------------------
// One file per packet type: its view and its writer (after the macros they use).
// ---------------------------------------------------------------------------------------

mod app;
mod bye;
mod compound;
mod fir;
#[cfg(any(test, feature = "fuzz"))]
mod fuzz;
mod nack;
mod pause;
mod pli;
mod remb;
mod report;
mod sdes;
mod tcc;
mod tmmb;

pub use app::*;
pub use bye::*;
pub use compound::*;
pub use fir::*;
#[cfg(feature = "fuzz")]
pub use fuzz::fuzz_one;
pub use nack::*;
pub use pause::*;
pub use pli::*;
pub use remb::*;
pub use report::*;
pub use sdes::*;
pub use tcc::*;
pub use tmmb::*;

#[cfg(test)]
mod tests;
