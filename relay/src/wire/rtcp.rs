//! RTCP compound packets (RFC 3550, RFC 4585, RFC 5104, REMB, transport-cc).
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

// --- SR / RR ---------------------------------------------------------------------------

/// The sender information block of an SR (RFC 3550 §6.4.1), also the input of
/// [`write_sr`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SenderInfo {
    /// SSRC of the sender.
    pub ssrc: Ssrc,
    /// NTP timestamp, 32.32 fixed point.
    pub ntp: u64,
    /// RTP timestamp matching `ntp`.
    pub rtp_time: RtpTime,
    /// Sender's packet count.
    pub packet_count: u32,
    /// Sender's octet count.
    pub octet_count: u32,
}

/// One reception report block (RFC 3550 §6.4.1), parsed or to be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReportBlock {
    /// The source this block reports on.
    pub ssrc: Ssrc,
    /// Fraction lost since the last report, in 1/256.
    pub fraction_lost: u8,
    /// Cumulative number of packets lost, 24-bit signed. Writers clamp it to
    /// `-0x80_0000..=0x7f_ffff`.
    pub cumulative_lost: i32,
    /// Extended highest sequence number received.
    pub highest_seq: u32,
    /// Interarrival jitter, in timestamp units.
    pub jitter: u32,
    /// Middle 32 bits of the NTP timestamp of the last SR received (LSR).
    pub lsr: u32,
    /// Delay since the last SR, in 1/65536 s (DLSR).
    pub dlsr: u32,
}

impl ReportBlock {
    fn read(b: &[u8]) -> Self {
        ReportBlock {
            ssrc: Ssrc(be32(b, 0)),
            fraction_lost: b[4],
            cumulative_lost: sign_extend_24(be24(b, 5)),
            highest_seq: be32(b, 8),
            jitter: be32(b, 12),
            lsr: be32(b, 16),
            dlsr: be32(b, 20),
        }
    }

    fn write(&self, c: &mut Cursor<'_>) {
        c.u32(self.ssrc.0);
        c.u8(self.fraction_lost);
        let lost = self.cumulative_lost.clamp(-0x80_0000, 0x7f_ffff) as u32;
        c.put(&lost.to_be_bytes()[1..]);
        c.u32(self.highest_seq);
        c.u32(self.jitter);
        c.u32(self.lsr);
        c.u32(self.dlsr);
    }
}

/// Iterator over report blocks of an SR or RR.
#[derive(Debug, Clone)]
pub struct ReportBlocks<'a> {
    chunks: core::slice::ChunksExact<'a, u8>,
}

impl Iterator for ReportBlocks<'_> {
    type Item = ReportBlock;

    fn next(&mut self) -> Option<ReportBlock> {
        self.chunks.next().map(ReportBlock::read)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.chunks.size_hint()
    }
}

impl ExactSizeIterator for ReportBlocks<'_> {}

/// A sender report (RFC 3550 §6.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderReport<'a> {
    raw: RawPacket<'a>,
}

single_packet_parse!(SenderReport, "SR", |raw| raw.pt() == PT_SR);

impl<'a> SenderReport<'a> {
    fn from_raw(raw: RawPacket<'a>) -> Result<Self, RtcpError> {
        let need = SENDER_INFO_LEN + REPORT_BLOCK_LEN * usize::from(raw.count());
        if raw.body.len() < need {
            return Err(RtcpError::SrTooShort);
        }
        Ok(SenderReport { raw })
    }

    /// SSRC of the sender.
    pub fn ssrc(&self) -> Ssrc {
        Ssrc(be32(self.raw.body, 0))
    }

    /// NTP timestamp, 32.32 fixed point.
    pub fn ntp(&self) -> u64 {
        u64::from(be32(self.raw.body, 4)) << 32 | u64::from(be32(self.raw.body, 8))
    }

    /// RTP timestamp matching [`SenderReport::ntp`].
    pub fn rtp_time(&self) -> RtpTime {
        RtpTime(be32(self.raw.body, 12))
    }

    /// Sender's packet count.
    pub fn packet_count(&self) -> u32 {
        be32(self.raw.body, 16)
    }

    /// Sender's octet count.
    pub fn octet_count(&self) -> u32 {
        be32(self.raw.body, 20)
    }

    /// All sender info fields at once.
    pub fn sender_info(&self) -> SenderInfo {
        SenderInfo {
            ssrc: self.ssrc(),
            ntp: self.ntp(),
            rtp_time: self.rtp_time(),
            packet_count: self.packet_count(),
            octet_count: self.octet_count(),
        }
    }

    /// Number of report blocks.
    pub fn report_count(&self) -> usize {
        usize::from(self.raw.count())
    }

    /// The report blocks.
    pub fn reports(&self) -> ReportBlocks<'a> {
        let end = SENDER_INFO_LEN + REPORT_BLOCK_LEN * self.report_count();
        ReportBlocks {
            chunks: self.raw.body[SENDER_INFO_LEN..end].chunks_exact(REPORT_BLOCK_LEN),
        }
    }

    /// Profile-specific extension bytes after the report blocks (usually empty).
    pub fn profile_extension(&self) -> &'a [u8] {
        &self.raw.body[SENDER_INFO_LEN + REPORT_BLOCK_LEN * self.report_count()..]
    }
}

/// A receiver report (RFC 3550 §6.4.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceiverReport<'a> {
    raw: RawPacket<'a>,
}

single_packet_parse!(ReceiverReport, "RR", |raw| raw.pt() == PT_RR);

impl<'a> ReceiverReport<'a> {
    fn from_raw(raw: RawPacket<'a>) -> Result<Self, RtcpError> {
        let need = 4 + REPORT_BLOCK_LEN * usize::from(raw.count());
        if raw.body.len() < need {
            return Err(RtcpError::RrTooShort);
        }
        Ok(ReceiverReport { raw })
    }

    /// SSRC of the packet sender.
    pub fn ssrc(&self) -> Ssrc {
        Ssrc(be32(self.raw.body, 0))
    }

    /// Number of report blocks.
    pub fn report_count(&self) -> usize {
        usize::from(self.raw.count())
    }

    /// The report blocks.
    pub fn reports(&self) -> ReportBlocks<'a> {
        let end = 4 + REPORT_BLOCK_LEN * self.report_count();
        ReportBlocks {
            chunks: self.raw.body[4..end].chunks_exact(REPORT_BLOCK_LEN),
        }
    }

    /// Profile-specific extension bytes after the report blocks (usually empty).
    pub fn profile_extension(&self) -> &'a [u8] {
        &self.raw.body[4 + REPORT_BLOCK_LEN * self.report_count()..]
    }
}

// --- SDES ------------------------------------------------------------------------------

/// One SDES item (RFC 3550 §6.5): its type and value, parsed or to be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SdesItem<'a> {
    /// Item type (1 CNAME, 2 NAME, …, 8 PRIV); never 0, which ends the list.
    pub kind: u8,
    /// The item's value (UTF-8 text for the standard types, not checked).
    pub value: &'a [u8],
}

impl SdesItem<'_> {
    /// Canonical end-point identifier (RFC 3550 §6.5.1).
    pub const CNAME: u8 = 1;
    /// User name (RFC 3550 §6.5.2).
    pub const NAME: u8 = 2;
    /// Electronic mail address (RFC 3550 §6.5.3).
    pub const EMAIL: u8 = 3;
    /// Phone number (RFC 3550 §6.5.4).
    pub const PHONE: u8 = 4;
    /// Geographic location (RFC 3550 §6.5.5).
    pub const LOC: u8 = 5;
    /// Application or tool name (RFC 3550 §6.5.6).
    pub const TOOL: u8 = 6;
    /// Notice or status (RFC 3550 §6.5.7).
    pub const NOTE: u8 = 7;
    /// Private extension (RFC 3550 §6.5.8).
    pub const PRIV: u8 = 8;
}

/// Input of [`write_sdes`]: one chunk's SSRC and items.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SdesChunkSpec<'s> {
    /// The SSRC or CSRC the items describe.
    pub ssrc: Ssrc,
    /// The items, written in order.
    pub items: &'s [SdesItem<'s>],
}

/// A source description packet (RFC 3550 §6.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sdes<'a> {
    raw: RawPacket<'a>,
}

single_packet_parse!(Sdes, "SDES packet", |raw| raw.pt() == PT_SDES);

/// Length of the items of the chunk at the start of `buf`, and of the chunk with its
/// terminating null octets. `None` if the chunk runs past the end.
fn sdes_chunk_len(buf: &[u8]) -> Option<(usize, usize)> {
    if buf.len() < 4 {
        return None;
    }
    let mut off = 4;
    loop {
        let kind = *buf.get(off)?;
        if kind == 0 {
            // The null item and padding to the next 32-bit boundary.
            let end = (off + 4) & !3;
            return (end <= buf.len()).then_some((off, end));
        }
        let len = usize::from(*buf.get(off + 1)?);
        off += 2 + len;
    }
}

impl<'a> Sdes<'a> {
    fn from_raw(raw: RawPacket<'a>) -> Result<Self, RtcpError> {
        let mut rest = raw.body;
        for _ in 0..raw.count() {
            let (_, len) = sdes_chunk_len(rest).ok_or(RtcpError::SdesTruncated)?;
            rest = &rest[len..];
        }
        Ok(Sdes { raw })
    }

    /// Number of chunks.
    pub fn chunk_count(&self) -> usize {
        usize::from(self.raw.count())
    }

    /// The chunks.
    pub fn chunks(&self) -> SdesChunks<'a> {
        SdesChunks {
            rest: self.raw.body,
            left: self.raw.count(),
        }
    }
}

/// Iterator over the chunks of an SDES packet.
#[derive(Debug, Clone)]
pub struct SdesChunks<'a> {
    rest: &'a [u8],
    left: u8,
}

impl<'a> Iterator for SdesChunks<'a> {
    type Item = SdesChunk<'a>;

    fn next(&mut self) -> Option<SdesChunk<'a>> {
        self.left = self.left.checked_sub(1)?;
        let (items_end, len) = sdes_chunk_len(self.rest)?;
        let chunk = SdesChunk {
            ssrc: Ssrc(be32(self.rest, 0)),
            items: &self.rest[4..items_end],
        };
        self.rest = &self.rest[len..];
        Some(chunk)
    }
}

/// One SDES chunk: an SSRC and its items.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SdesChunk<'a> {
    ssrc: Ssrc,
    items: &'a [u8],
}

impl<'a> SdesChunk<'a> {
    /// The SSRC or CSRC the items describe.
    pub fn ssrc(&self) -> Ssrc {
        self.ssrc
    }

    /// The items, in order.
    pub fn items(&self) -> SdesItems<'a> {
        SdesItems { rest: self.items }
    }

    /// The first CNAME item's value, if any.
    pub fn cname(&self) -> Option<&'a [u8]> {
        self.items()
            .find(|i| i.kind == SdesItem::CNAME)
            .map(|i| i.value)
    }
}

/// Iterator over the items of an SDES chunk.
#[derive(Debug, Clone)]
pub struct SdesItems<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for SdesItems<'a> {
    type Item = SdesItem<'a>;

    fn next(&mut self) -> Option<SdesItem<'a>> {
        let (&kind, rest) = self.rest.split_first()?;
        let (&len, rest) = rest.split_first()?;
        let value = rest.get(..usize::from(len))?;
        self.rest = &rest[value.len()..];
        Some(SdesItem { kind, value })
    }
}

// --- BYE -------------------------------------------------------------------------------

/// A goodbye packet (RFC 3550 §6.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bye<'a> {
    raw: RawPacket<'a>,
}

single_packet_parse!(Bye, "BYE packet", |raw| raw.pt() == PT_BYE);

impl<'a> Bye<'a> {
    fn from_raw(raw: RawPacket<'a>) -> Result<Self, RtcpError> {
        let ssrcs_len = 4 * usize::from(raw.count());
        let rest = raw.body.get(ssrcs_len..).ok_or(RtcpError::ByeTruncated)?;
        if let Some((&len, text)) = rest.split_first()
            && text.len() < usize::from(len)
        {
            return Err(RtcpError::ByeTruncated);
        }
        Ok(Bye { raw })
    }

    /// The SSRCs / CSRCs leaving.
    pub fn ssrcs(&self) -> SsrcList<'a> {
        SsrcList {
            chunks: self.raw.body[..4 * usize::from(self.raw.count())].chunks_exact(4),
        }
    }

    /// The reason for leaving, if present.
    pub fn reason(&self) -> Option<&'a [u8]> {
        let rest = &self.raw.body[4 * usize::from(self.raw.count())..];
        let (&len, text) = rest.split_first()?;
        Some(&text[..usize::from(len)])
    }
}

/// Iterator over a list of SSRCs (BYE sources, REMB feedback SSRCs).
#[derive(Debug, Clone)]
pub struct SsrcList<'a> {
    chunks: core::slice::ChunksExact<'a, u8>,
}

impl Iterator for SsrcList<'_> {
    type Item = Ssrc;

    fn next(&mut self) -> Option<Ssrc> {
        self.chunks.next().map(|c| Ssrc(be32(c, 0)))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.chunks.size_hint()
    }
}

impl ExactSizeIterator for SsrcList<'_> {}

// --- APP -------------------------------------------------------------------------------

/// An application-defined packet (RFC 3550 §6.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct App<'a> {
    raw: RawPacket<'a>,
}

single_packet_parse!(App, "APP packet", |raw| raw.pt() == PT_APP);

impl<'a> App<'a> {
    fn from_raw(raw: RawPacket<'a>) -> Result<Self, RtcpError> {
        if raw.body.len() < 8 {
            return Err(RtcpError::AppTooShort);
        }
        Ok(App { raw })
    }

    /// The 5-bit subtype.
    pub fn subtype(&self) -> u8 {
        self.raw.count()
    }

    /// SSRC / CSRC of the sender.
    pub fn ssrc(&self) -> Ssrc {
        Ssrc(be32(self.raw.body, 0))
    }

    /// The four-character name.
    pub fn name(&self) -> [u8; 4] {
        let b = self.raw.body;
        [b[4], b[5], b[6], b[7]]
    }

    /// Application-dependent data.
    pub fn data(&self) -> &'a [u8] {
        &self.raw.body[8..]
    }
}

// --- NACK ------------------------------------------------------------------------------

/// One generic NACK FCI entry (RFC 4585 §6.2.1): a lost packet id and a bitmask of
/// the 16 following packets that are lost too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NackPair {
    /// The lost packet's sequence number (PID).
    pub pid: WireSeq,
    /// Bit `i` set: `pid + i + 1` is lost too (BLP).
    pub blp: u16,
}

impl NackPair {
    /// The lost sequence numbers this entry covers, PID first, ascending (wrapping).
    pub fn lost(self) -> NackPairLost {
        NackPairLost {
            pid: self.pid.0,
            blp: self.blp,
            next: 0,
        }
    }

    /// Groups lost sequence numbers into entries, without allocating.
    ///
    /// The list should be ascending in wrapping order (send order); every number is
    /// covered whatever the order, but unsorted input takes more entries. A number up
    /// to 16 after the current PID joins its bitmask; duplicates are merged.
    pub fn group(lost: &[WireSeq]) -> NackGroups<'_> {
        NackGroups { lost }
    }
}

/// Iterator over the sequence numbers covered by one [`NackPair`].
#[derive(Debug, Clone)]
pub struct NackPairLost {
    pid: u16,
    blp: u16,
    /// 0 = the PID itself, 1..=16 = bit `next - 1`, 17 = done.
    next: u8,
}

impl Iterator for NackPairLost {
    type Item = WireSeq;

    fn next(&mut self) -> Option<WireSeq> {
        while self.next <= 16 {
            let i = self.next;
            self.next += 1;
            if i == 0 {
                return Some(WireSeq(self.pid));
            }
            if self.blp & (1 << (i - 1)) != 0 {
                return Some(WireSeq(self.pid.wrapping_add(u16::from(i))));
            }
        }
        None
    }
}

/// Iterator grouping lost sequence numbers into [`NackPair`]s (see [`NackPair::group`]).
#[derive(Debug, Clone)]
pub struct NackGroups<'s> {
    lost: &'s [WireSeq],
}

impl Iterator for NackGroups<'_> {
    type Item = NackPair;

    fn next(&mut self) -> Option<NackPair> {
        let (&pid, mut rest) = self.lost.split_first()?;
        let mut blp = 0u16;
        while let Some((&seq, tail)) = rest.split_first() {
            let d = seq.0.wrapping_sub(pid.0);
            if d > 16 {
                break;
            }
            if d > 0 {
                blp |= 1 << (d - 1);
            }
            rest = tail;
        }
        self.lost = rest;
        Some(NackPair { pid, blp })
    }
}

/// A generic NACK (RFC 4585 §6.2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Nack<'a> {
    raw: RawPacket<'a>,
}

single_packet_parse!(Nack, "generic NACK", |raw| raw.pt() == PT_RTPFB
    && raw.count() == FMT_NACK);
feedback_accessors!(Nack);

impl<'a> Nack<'a> {
    fn from_raw(raw: RawPacket<'a>) -> Result<Self, RtcpError> {
        feedback_check(&raw)?;
        let fci = raw.body.len() - FB_COMMON_LEN;
        if fci == 0 || !fci.is_multiple_of(4) {
            return Err(RtcpError::NackBadLength);
        }
        Ok(Nack { raw })
    }

    /// The FCI entries.
    pub fn pairs(&self) -> NackPairs<'a> {
        NackPairs {
            chunks: self.fci().chunks_exact(4),
        }
    }

    /// Every lost sequence number, entry by entry (duplicates possible if entries
    /// overlap).
    pub fn lost(&self) -> impl Iterator<Item = WireSeq> + Clone + 'a {
        self.pairs().flat_map(NackPair::lost)
    }
}

/// Iterator over the [`NackPair`]s of a [`Nack`].
#[derive(Debug, Clone)]
pub struct NackPairs<'a> {
    chunks: core::slice::ChunksExact<'a, u8>,
}

impl Iterator for NackPairs<'_> {
    type Item = NackPair;

    fn next(&mut self) -> Option<NackPair> {
        self.chunks.next().map(|c| NackPair {
            pid: WireSeq(be16(c, 0)),
            blp: be16(c, 2),
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.chunks.size_hint()
    }
}

impl ExactSizeIterator for NackPairs<'_> {}

// --- TMMBR / TMMBN ---------------------------------------------------------------------

/// One TMMBR / TMMBN FCI entry (RFC 5104 §4.2.1.1), parsed or to be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TmmbEntry {
    /// The media sender the limit applies to.
    pub ssrc: Ssrc,
    /// Maximum total media bitrate, bits per second. On the wire it is a 17-bit
    /// mantissa and 6-bit exponent: writers round down to the nearest value that has
    /// one (smallest exponent that fits); a parsed value too large for `u64` saturates.
    pub bitrate_bps: u64,
    /// Measured per-packet overhead in bytes, 9 bits (at most 511).
    pub overhead: u16,
}

impl TmmbEntry {
    fn read(b: &[u8]) -> Self {
        let word = be32(b, 4);
        TmmbEntry {
            ssrc: Ssrc(be32(b, 0)),
            bitrate_bps: mantissa_exp_to_bps(u64::from((word >> 9) & 0x1_ffff), word >> 26),
            overhead: (word & 0x1ff) as u16,
        }
    }
}

/// Iterator over the [`TmmbEntry`]s of a [`Tmmbr`] or [`Tmmbn`].
#[derive(Debug, Clone)]
pub struct TmmbEntries<'a> {
    chunks: core::slice::ChunksExact<'a, u8>,
}

impl Iterator for TmmbEntries<'_> {
    type Item = TmmbEntry;

    fn next(&mut self) -> Option<TmmbEntry> {
        self.chunks.next().map(TmmbEntry::read)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.chunks.size_hint()
    }
}

impl ExactSizeIterator for TmmbEntries<'_> {}

macro_rules! tmmb_view {
    ($ty:ident, $fmt:ident, $what:literal, $allow_empty:literal) => {
        #[doc = concat!("A ", $what, ".")]
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub struct $ty<'a> {
            raw: RawPacket<'a>,
        }

        single_packet_parse!($ty, $what, |raw| raw.pt() == PT_RTPFB
            && raw.count() == $fmt);
        feedback_accessors!($ty);

        impl<'a> $ty<'a> {
            fn from_raw(raw: RawPacket<'a>) -> Result<Self, RtcpError> {
                feedback_check(&raw)?;
                let fci = raw.body.len() - FB_COMMON_LEN;
                if !fci.is_multiple_of(8) || (fci == 0 && !$allow_empty) {
                    return Err(RtcpError::TmmbBadLength);
                }
                Ok($ty { raw })
            }

            /// The FCI entries.
            pub fn entries(&self) -> TmmbEntries<'a> {
                TmmbEntries {
                    chunks: self.fci().chunks_exact(8),
                }
            }
        }
    };
}

tmmb_view!(
    Tmmbr,
    FMT_TMMBR,
    "temporary maximum media stream bitrate request (RFC 5104 §4.2.1)",
    false
);
tmmb_view!(
    Tmmbn,
    FMT_TMMBN,
    "temporary maximum media stream bitrate notification (RFC 5104 §4.2.2); it may be empty",
    true
);

// --- PLI / FIR -------------------------------------------------------------------------

/// A picture loss indication (RFC 4585 §6.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pli<'a> {
    raw: RawPacket<'a>,
}

single_packet_parse!(Pli, "PLI", |raw| raw.pt() == PT_PSFB
    && raw.count() == FMT_PLI);
feedback_accessors!(Pli);

impl<'a> Pli<'a> {
    fn from_raw(raw: RawPacket<'a>) -> Result<Self, RtcpError> {
        feedback_check(&raw)?;
        Ok(Pli { raw })
    }
}

/// One FIR FCI entry (RFC 5104 §4.3.1.1), parsed or to be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FirEntry {
    /// The media sender asked for a decoder refresh.
    pub ssrc: Ssrc,
    /// Command sequence number, incremented per new request.
    pub seq_nr: u8,
}

/// A full intra request (RFC 5104 §4.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fir<'a> {
    raw: RawPacket<'a>,
}

single_packet_parse!(Fir, "FIR", |raw| raw.pt() == PT_PSFB
    && raw.count() == FMT_FIR);
feedback_accessors!(Fir);

impl<'a> Fir<'a> {
    fn from_raw(raw: RawPacket<'a>) -> Result<Self, RtcpError> {
        feedback_check(&raw)?;
        let fci = raw.body.len() - FB_COMMON_LEN;
        if fci == 0 || !fci.is_multiple_of(8) {
            return Err(RtcpError::FirBadLength);
        }
        Ok(Fir { raw })
    }

    /// The FCI entries.
    pub fn entries(&self) -> FirEntries<'a> {
        FirEntries {
            chunks: self.fci().chunks_exact(8),
        }
    }
}

/// Iterator over the [`FirEntry`]s of a [`Fir`].
#[derive(Debug, Clone)]
pub struct FirEntries<'a> {
    chunks: core::slice::ChunksExact<'a, u8>,
}

impl Iterator for FirEntries<'_> {
    type Item = FirEntry;

    fn next(&mut self) -> Option<FirEntry> {
        self.chunks.next().map(|c| FirEntry {
            ssrc: Ssrc(be32(c, 0)),
            seq_nr: c[4],
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.chunks.size_hint()
    }
}

impl ExactSizeIterator for FirEntries<'_> {}

// --- REMB ------------------------------------------------------------------------------

/// A receiver estimated maximum bitrate (draft-alvestrand-rmcat-remb-03 §2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Remb<'a> {
    raw: RawPacket<'a>,
}

single_packet_parse!(Remb, "REMB", |raw| raw.pt() == PT_PSFB
    && raw.count() == FMT_AFB
    && raw.body.get(8..12) == Some(&REMB_ID[..]));
feedback_accessors!(Remb);

impl<'a> Remb<'a> {
    fn from_raw(raw: RawPacket<'a>) -> Result<Self, RtcpError> {
        let n = *raw.body.get(12).ok_or(RtcpError::RembTooShort)?;
        if raw.body.len() < 16 + 4 * usize::from(n) {
            return Err(RtcpError::RembTooShort);
        }
        Ok(Remb { raw })
    }

    /// The estimated maximum bitrate, bits per second (18-bit mantissa × 2^exp; a value
    /// too large for `u64` saturates).
    pub fn bitrate_bps(&self) -> u64 {
        let word = be32(self.raw.body, 12);
        mantissa_exp_to_bps(u64::from(word & 0x3_ffff), (word >> 18) & 0x3f)
    }

    /// The media SSRCs the estimate applies to.
    pub fn ssrcs(&self) -> SsrcList<'a> {
        let n = usize::from(self.raw.body[12]);
        SsrcList {
            chunks: self.raw.body[16..16 + 4 * n].chunks_exact(4),
        }
    }
}

// --- transport-cc ----------------------------------------------------------------------

/// Fixed part of a transport-cc FCI after the two SSRCs: base seq, status count,
/// reference time, feedback packet count.
const TCC_FIXED_LEN: usize = FB_COMMON_LEN + 8;

/// A packet's status in transport-cc feedback (draft-holmer-…-01 §3.1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TccStatus {
    /// `00`: not received.
    NotReceived,
    /// `01`: received, with a one-byte receive delta.
    SmallDelta,
    /// `10`: received, with a two-byte signed receive delta.
    LargeDelta,
    /// `11`: reserved in §3.1.1, but the draft's own examples use it for "received,
    /// without timestamp"; it carries no receive delta.
    ReceivedWithoutDelta,
}

impl TccStatus {
    fn from_bits(bits: u16) -> Self {
        match bits & 3 {
            0 => TccStatus::NotReceived,
            1 => TccStatus::SmallDelta,
            2 => TccStatus::LargeDelta,
            _ => TccStatus::ReceivedWithoutDelta,
        }
    }

    fn delta_len(self) -> usize {
        match self {
            TccStatus::SmallDelta => 1,
            TccStatus::LargeDelta => 2,
            _ => 0,
        }
    }
}

/// One reported packet of a transport-cc feedback.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TccPacketStatus {
    /// Transport-wide sequence number.
    pub seq: u16,
    /// Whether and how it was received.
    pub status: TccStatus,
    /// Receive delta in 250 µs units from the previous received packet (the first one:
    /// from the reference time); `None` when not received or without delta.
    pub delta: Option<i16>,
}

/// Symbol `idx` of a packet status chunk and the number of symbols in the chunk, or
/// `None` if `idx` is past the chunk.
fn tcc_symbol(chunk: u16, idx: u16) -> Option<(TccStatus, u16)> {
    if chunk & 0x8000 == 0 {
        // Run length chunk: 0 | symbol (2) | run length (13).
        let run = chunk & 0x1fff;
        (idx < run).then(|| (TccStatus::from_bits(chunk >> 13), run))
    } else if chunk & 0x4000 == 0 {
        // Status vector of fourteen 1-bit symbols: 0 not received, 1 small delta.
        (idx < 14).then(|| (TccStatus::from_bits((chunk >> (13 - idx)) & 1), 14))
    } else {
        // Status vector of seven 2-bit symbols.
        (idx < 7).then(|| (TccStatus::from_bits(chunk >> (12 - 2 * idx)), 7))
    }
}

/// Transport-wide congestion control feedback (draft-holmer-rmcat-transport-wide-cc-
/// extensions-01 §3.1). Parse only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransportCc<'a> {
    raw: RawPacket<'a>,
    /// Offset in the body where the receive deltas start.
    deltas: usize,
}

single_packet_parse!(TransportCc, "transport-cc feedback", |raw| raw.pt()
    == PT_RTPFB
    && raw.count() == FMT_TCC);
feedback_accessors!(TransportCc);

impl<'a> TransportCc<'a> {
    /// Walks every chunk once so that [`TransportCc::statuses`] cannot run out.
    fn from_raw(raw: RawPacket<'a>) -> Result<Self, RtcpError> {
        let body = raw.body;
        if body.len() < TCC_FIXED_LEN {
            return Err(RtcpError::TccTooShort);
        }
        let mut remaining = be16(body, 10);
        let mut off = TCC_FIXED_LEN;
        let mut delta_bytes = 0usize;
        while remaining > 0 {
            let chunk = body
                .get(off..off + 2)
                .ok_or(RtcpError::TccChunksTruncated)?;
            let chunk = be16(chunk, 0);
            off += 2;
            if chunk & 0x8000 == 0 {
                let n = (chunk & 0x1fff).min(remaining);
                delta_bytes += usize::from(n) * TccStatus::from_bits(chunk >> 13).delta_len();
                remaining -= n;
            } else {
                let mut idx = 0;
                while remaining > 0
                    && let Some((status, _)) = tcc_symbol(chunk, idx)
                {
                    delta_bytes += status.delta_len();
                    remaining -= 1;
                    idx += 1;
                }
            }
        }
        if body.len() - off < delta_bytes {
            return Err(RtcpError::TccDeltasTruncated);
        }
        Ok(TransportCc { raw, deltas: off })
    }

    /// Transport-wide sequence number of the first packet reported.
    pub fn base_seq(&self) -> u16 {
        be16(self.raw.body, 8)
    }

    /// Number of packets reported.
    pub fn status_count(&self) -> u16 {
        be16(self.raw.body, 10)
    }

    /// Reference time, 24-bit signed, in multiples of 64 ms.
    pub fn reference_time(&self) -> i32 {
        sign_extend_24(be24(self.raw.body, 12))
    }

    /// Reference time in milliseconds.
    pub fn reference_time_ms(&self) -> i64 {
        i64::from(self.reference_time()) * 64
    }

    /// Feedback packet count, for detecting lost feedback.
    pub fn fb_pkt_count(&self) -> u8 {
        self.raw.body[15]
    }

    /// Every reported packet in sequence order, exactly [`TransportCc::status_count`]
    /// of them.
    pub fn statuses(&self) -> TccStatuses<'a> {
        TccStatuses {
            body: self.raw.body,
            chunk_off: TCC_FIXED_LEN,
            idx: 0,
            remaining: self.status_count(),
            delta_off: self.deltas,
            seq: self.base_seq(),
        }
    }
}

/// Iterator over the [`TccPacketStatus`]es of a [`TransportCc`].
#[derive(Debug, Clone)]
pub struct TccStatuses<'a> {
    body: &'a [u8],
    chunk_off: usize,
    idx: u16,
    remaining: u16,
    delta_off: usize,
    seq: u16,
}

impl Iterator for TccStatuses<'_> {
    type Item = TccPacketStatus;

    fn next(&mut self) -> Option<TccPacketStatus> {
        if self.remaining == 0 {
            return None;
        }
        let status = loop {
            let chunk = be16(self.body.get(self.chunk_off..self.chunk_off + 2)?, 0);
            match tcc_symbol(chunk, self.idx) {
                Some((status, len)) => {
                    self.idx += 1;
                    if self.idx == len {
                        self.chunk_off += 2;
                        self.idx = 0;
                    }
                    break status;
                }
                // Past the end of the chunk (or an empty run): go to the next one.
                None => {
                    self.chunk_off += 2;
                    self.idx = 0;
                }
            }
        };
        let delta = match status {
            TccStatus::SmallDelta => {
                let d = *self.body.get(self.delta_off)?;
                self.delta_off += 1;
                Some(i16::from(d))
            }
            TccStatus::LargeDelta => {
                let d = self.body.get(self.delta_off..self.delta_off + 2)?;
                self.delta_off += 2;
                Some(i16::from_be_bytes([d[0], d[1]]))
            }
            _ => None,
        };
        let seq = self.seq;
        self.seq = seq.wrapping_add(1);
        self.remaining -= 1;
        Some(TccPacketStatus { seq, status, delta })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = usize::from(self.remaining);
        (n, Some(n))
    }
}

impl ExactSizeIterator for TccStatuses<'_> {}

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

/// Writes a sender report with up to 31 report blocks.
///
/// Fails with [`RtcpError::TooManyItems`] for more than 31 blocks and
/// [`RtcpError::BufferTooSmall`] if `out` is shorter than `28 + 24 * reports.len()`.
pub fn write_sr(
    out: &mut [u8],
    info: &SenderInfo,
    reports: &[ReportBlock],
) -> Result<usize, RtcpError> {
    let count = count_field(reports.len())?;
    let total = HEADER_LEN + SENDER_INFO_LEN + REPORT_BLOCK_LEN * reports.len();
    let mut c = begin(out, total, count, PT_SR)?;
    c.u32(info.ssrc.0);
    c.put(&info.ntp.to_be_bytes());
    c.u32(info.rtp_time.0);
    c.u32(info.packet_count);
    c.u32(info.octet_count);
    for r in reports {
        r.write(&mut c);
    }
    Ok(total)
}

/// Writes a receiver report with up to 31 report blocks (none is fine).
///
/// Fails with [`RtcpError::TooManyItems`] for more than 31 blocks and
/// [`RtcpError::BufferTooSmall`] if `out` is shorter than `8 + 24 * reports.len()`.
pub fn write_rr(out: &mut [u8], ssrc: Ssrc, reports: &[ReportBlock]) -> Result<usize, RtcpError> {
    let count = count_field(reports.len())?;
    let total = HEADER_LEN + 4 + REPORT_BLOCK_LEN * reports.len();
    let mut c = begin(out, total, count, PT_RR)?;
    c.u32(ssrc.0);
    for r in reports {
        r.write(&mut c);
    }
    Ok(total)
}

/// Writes an SDES packet with up to 31 chunks.
///
/// Fails with [`RtcpError::TooManyItems`] for more than 31 chunks or a packet past the
/// length field, [`RtcpError::ItemTooLong`] for an item over 255 bytes,
/// [`RtcpError::FieldOutOfRange`] for an item of type 0, and
/// [`RtcpError::BufferTooSmall`].
pub fn write_sdes(out: &mut [u8], chunks: &[SdesChunkSpec<'_>]) -> Result<usize, RtcpError> {
    let count = count_field(chunks.len())?;
    let mut total = HEADER_LEN;
    for chunk in chunks {
        let mut len = 4;
        for item in chunk.items {
            if item.kind == 0 {
                return Err(RtcpError::FieldOutOfRange);
            }
            if item.value.len() > 255 {
                return Err(RtcpError::ItemTooLong);
            }
            len += 2 + item.value.len();
        }
        // At least one null octet, then padding to a 32-bit boundary.
        total += (len + 4) & !3;
    }
    let mut c = begin(out, total, count, PT_SDES)?;
    for chunk in chunks {
        let start = c.pos;
        c.u32(chunk.ssrc.0);
        for item in chunk.items {
            c.u8(item.kind);
            c.u8(item.value.len() as u8);
            c.put(item.value);
        }
        let end = start + ((c.pos - start + 4) & !3);
        c.zeros_to(end);
    }
    Ok(total)
}

/// Writes an SDES packet with one chunk holding one CNAME item.
///
/// Fails like [`write_sdes`].
pub fn write_sdes_cname(out: &mut [u8], ssrc: Ssrc, cname: &[u8]) -> Result<usize, RtcpError> {
    let items = [SdesItem {
        kind: SdesItem::CNAME,
        value: cname,
    }];
    write_sdes(
        out,
        &[SdesChunkSpec {
            ssrc,
            items: &items,
        }],
    )
}

/// Writes a BYE for up to 31 sources, with an optional reason.
///
/// Fails with [`RtcpError::TooManyItems`] for more than 31 sources,
/// [`RtcpError::ItemTooLong`] for a reason over 255 bytes, and
/// [`RtcpError::BufferTooSmall`].
pub fn write_bye(
    out: &mut [u8],
    ssrcs: &[Ssrc],
    reason: Option<&[u8]>,
) -> Result<usize, RtcpError> {
    let count = count_field(ssrcs.len())?;
    let mut total = HEADER_LEN + 4 * ssrcs.len();
    if let Some(r) = reason {
        if r.len() > 255 {
            return Err(RtcpError::ItemTooLong);
        }
        total += (1 + r.len() + 3) & !3;
    }
    let mut c = begin(out, total, count, PT_BYE)?;
    for s in ssrcs {
        c.u32(s.0);
    }
    if let Some(r) = reason {
        c.u8(r.len() as u8);
        c.put(r);
        c.zeros_to(total);
    }
    Ok(total)
}

/// Writes an APP packet.
///
/// Fails with [`RtcpError::FieldOutOfRange`] for a subtype over 31,
/// [`RtcpError::Unaligned`] if `data` is not a multiple of 4 bytes,
/// [`RtcpError::TooManyItems`] past the length field, and [`RtcpError::BufferTooSmall`].
pub fn write_app(
    out: &mut [u8],
    subtype: u8,
    ssrc: Ssrc,
    name: [u8; 4],
    data: &[u8],
) -> Result<usize, RtcpError> {
    if subtype > 31 {
        return Err(RtcpError::FieldOutOfRange);
    }
    if !data.len().is_multiple_of(4) {
        return Err(RtcpError::Unaligned);
    }
    let total = HEADER_LEN + 8 + data.len();
    let mut c = begin(out, total, subtype, PT_APP)?;
    c.u32(ssrc.0);
    c.put(&name);
    c.put(data);
    Ok(total)
}

/// Writes a generic NACK from FCI entries.
///
/// Fails with [`RtcpError::EmptyList`] for no entries, [`RtcpError::TooManyItems`] past
/// the length field, and [`RtcpError::BufferTooSmall`].
pub fn write_nack_pairs(
    out: &mut [u8],
    sender: Ssrc,
    media: Ssrc,
    pairs: &[NackPair],
) -> Result<usize, RtcpError> {
    write_nack_iter(out, sender, media, pairs.iter().copied())
}

/// Writes a generic NACK for a list of lost sequence numbers, grouped as
/// [`NackPair::group`] does.
///
/// Fails like [`write_nack_pairs`].
pub fn write_nack(
    out: &mut [u8],
    sender: Ssrc,
    media: Ssrc,
    lost: &[WireSeq],
) -> Result<usize, RtcpError> {
    write_nack_iter(out, sender, media, NackPair::group(lost))
}

fn write_nack_iter(
    out: &mut [u8],
    sender: Ssrc,
    media: Ssrc,
    pairs: impl Iterator<Item = NackPair> + Clone,
) -> Result<usize, RtcpError> {
    let n = pairs.clone().count();
    if n == 0 {
        return Err(RtcpError::EmptyList);
    }
    let total = HEADER_LEN + FB_COMMON_LEN + 4 * n;
    let mut c = begin(out, total, FMT_NACK, PT_RTPFB)?;
    c.u32(sender.0);
    c.u32(media.0);
    for p in pairs {
        c.u16(p.pid.0);
        c.u16(p.blp);
    }
    Ok(total)
}

fn write_tmmb(
    out: &mut [u8],
    fmt: u8,
    sender: Ssrc,
    entries: &[TmmbEntry],
) -> Result<usize, RtcpError> {
    if entries.iter().any(|e| e.overhead > 0x1ff) {
        return Err(RtcpError::FieldOutOfRange);
    }
    let total = HEADER_LEN + FB_COMMON_LEN + 8 * entries.len();
    let mut c = begin(out, total, fmt, PT_RTPFB)?;
    c.u32(sender.0);
    c.u32(0); // media SSRC: not used, SHALL be 0 (RFC 5104 §4.2.1.2).
    for e in entries {
        let (mantissa, exp) = bps_to_mantissa_exp(e.bitrate_bps, 17);
        c.u32(e.ssrc.0);
        c.u32(exp << 26 | (mantissa as u32) << 9 | u32::from(e.overhead));
    }
    Ok(total)
}

/// Writes a TMMBR (media SSRC 0, as RFC 5104 says).
///
/// Fails with [`RtcpError::EmptyList`] for no entries, [`RtcpError::FieldOutOfRange`]
/// for an overhead over 511, [`RtcpError::TooManyItems`] past the length field, and
/// [`RtcpError::BufferTooSmall`].
pub fn write_tmmbr(
    out: &mut [u8],
    sender: Ssrc,
    entries: &[TmmbEntry],
) -> Result<usize, RtcpError> {
    if entries.is_empty() {
        return Err(RtcpError::EmptyList);
    }
    write_tmmb(out, FMT_TMMBR, sender, entries)
}

/// Writes a TMMBN (media SSRC 0); an empty bounding set is allowed.
///
/// Fails like [`write_tmmbr`], except that no entries is fine.
pub fn write_tmmbn(
    out: &mut [u8],
    sender: Ssrc,
    entries: &[TmmbEntry],
) -> Result<usize, RtcpError> {
    write_tmmb(out, FMT_TMMBN, sender, entries)
}

/// Writes a PLI (12 bytes).
///
/// Fails with [`RtcpError::BufferTooSmall`].
pub fn write_pli(out: &mut [u8], sender: Ssrc, media: Ssrc) -> Result<usize, RtcpError> {
    let total = HEADER_LEN + FB_COMMON_LEN;
    let mut c = begin(out, total, FMT_PLI, PT_PSFB)?;
    c.u32(sender.0);
    c.u32(media.0);
    Ok(total)
}

/// Writes a FIR (media SSRC 0, as RFC 5104 says).
///
/// Fails with [`RtcpError::EmptyList`] for no entries, [`RtcpError::TooManyItems`] past
/// the length field, and [`RtcpError::BufferTooSmall`].
pub fn write_fir(out: &mut [u8], sender: Ssrc, entries: &[FirEntry]) -> Result<usize, RtcpError> {
    if entries.is_empty() {
        return Err(RtcpError::EmptyList);
    }
    let total = HEADER_LEN + FB_COMMON_LEN + 8 * entries.len();
    let mut c = begin(out, total, FMT_FIR, PT_PSFB)?;
    c.u32(sender.0);
    c.u32(0);
    for e in entries {
        c.u32(e.ssrc.0);
        c.u32(u32::from(e.seq_nr) << 24);
    }
    Ok(total)
}

/// Writes a REMB for up to 255 media SSRCs (media SSRC field 0). The bitrate is
/// rounded down to an 18-bit mantissa with the smallest exponent that fits.
///
/// Fails with [`RtcpError::TooManyItems`] for more than 255 SSRCs and
/// [`RtcpError::BufferTooSmall`].
pub fn write_remb(
    out: &mut [u8],
    sender: Ssrc,
    bitrate_bps: u64,
    ssrcs: &[Ssrc],
) -> Result<usize, RtcpError> {
    let n = u8::try_from(ssrcs.len()).map_err(|_| RtcpError::TooManyItems)?;
    let total = HEADER_LEN + FB_COMMON_LEN + 8 + 4 * ssrcs.len();
    let mut c = begin(out, total, FMT_AFB, PT_PSFB)?;
    c.u32(sender.0);
    c.u32(0);
    c.put(&REMB_ID);
    let (mantissa, exp) = bps_to_mantissa_exp(bitrate_bps, 18);
    c.u32(u32::from(n) << 24 | exp << 18 | mantissa as u32);
    for s in ssrcs {
        c.u32(s.0);
    }
    Ok(total)
}

/// Appends RTCP packets one after another into one buffer, making a compound packet.
///
/// Each method writes one packet after the previous ones and returns its length; on
/// error nothing is appended. The methods fail as the matching `write_*` function does.
#[derive(Debug)]
pub struct CompoundWriter<'b> {
    buf: &'b mut [u8],
    len: usize,
}

impl<'b> CompoundWriter<'b> {
    /// Starts an empty compound at the beginning of `buf`.
    pub fn new(buf: &'b mut [u8]) -> Self {
        CompoundWriter { buf, len: 0 }
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing has been written.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The compound written so far.
    pub fn written(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// Ends the compound and returns its length.
    pub fn finish(self) -> usize {
        self.len
    }

    fn push(
        &mut self,
        f: impl FnOnce(&mut [u8]) -> Result<usize, RtcpError>,
    ) -> Result<usize, RtcpError> {
        let rest = self
            .buf
            .get_mut(self.len..)
            .ok_or(RtcpError::BufferTooSmall)?;
        let n = f(rest)?;
        self.len += n;
        Ok(n)
    }

    /// Appends a sender report ([`write_sr`]).
    pub fn sr(&mut self, info: &SenderInfo, reports: &[ReportBlock]) -> Result<usize, RtcpError> {
        self.push(|b| write_sr(b, info, reports))
    }

    /// Appends a receiver report ([`write_rr`]).
    pub fn rr(&mut self, ssrc: Ssrc, reports: &[ReportBlock]) -> Result<usize, RtcpError> {
        self.push(|b| write_rr(b, ssrc, reports))
    }

    /// Appends an SDES packet ([`write_sdes`]).
    pub fn sdes(&mut self, chunks: &[SdesChunkSpec<'_>]) -> Result<usize, RtcpError> {
        self.push(|b| write_sdes(b, chunks))
    }

    /// Appends an SDES packet with one CNAME ([`write_sdes_cname`]).
    pub fn sdes_cname(&mut self, ssrc: Ssrc, cname: &[u8]) -> Result<usize, RtcpError> {
        self.push(|b| write_sdes_cname(b, ssrc, cname))
    }

    /// Appends a BYE ([`write_bye`]).
    pub fn bye(&mut self, ssrcs: &[Ssrc], reason: Option<&[u8]>) -> Result<usize, RtcpError> {
        self.push(|b| write_bye(b, ssrcs, reason))
    }

    /// Appends an APP packet ([`write_app`]).
    pub fn app(
        &mut self,
        subtype: u8,
        ssrc: Ssrc,
        name: [u8; 4],
        data: &[u8],
    ) -> Result<usize, RtcpError> {
        self.push(|b| write_app(b, subtype, ssrc, name, data))
    }

    /// Appends a generic NACK for lost sequence numbers ([`write_nack`]).
    pub fn nack(
        &mut self,
        sender: Ssrc,
        media: Ssrc,
        lost: &[WireSeq],
    ) -> Result<usize, RtcpError> {
        self.push(|b| write_nack(b, sender, media, lost))
    }

    /// Appends a generic NACK from FCI entries ([`write_nack_pairs`]).
    pub fn nack_pairs(
        &mut self,
        sender: Ssrc,
        media: Ssrc,
        pairs: &[NackPair],
    ) -> Result<usize, RtcpError> {
        self.push(|b| write_nack_pairs(b, sender, media, pairs))
    }

    /// Appends a TMMBR ([`write_tmmbr`]).
    pub fn tmmbr(&mut self, sender: Ssrc, entries: &[TmmbEntry]) -> Result<usize, RtcpError> {
        self.push(|b| write_tmmbr(b, sender, entries))
    }

    /// Appends a TMMBN ([`write_tmmbn`]).
    pub fn tmmbn(&mut self, sender: Ssrc, entries: &[TmmbEntry]) -> Result<usize, RtcpError> {
        self.push(|b| write_tmmbn(b, sender, entries))
    }

    /// Appends a PLI ([`write_pli`]).
    pub fn pli(&mut self, sender: Ssrc, media: Ssrc) -> Result<usize, RtcpError> {
        self.push(|b| write_pli(b, sender, media))
    }

    /// Appends a FIR ([`write_fir`]).
    pub fn fir(&mut self, sender: Ssrc, entries: &[FirEntry]) -> Result<usize, RtcpError> {
        self.push(|b| write_fir(b, sender, entries))
    }

    /// Appends a REMB ([`write_remb`]).
    pub fn remb(
        &mut self,
        sender: Ssrc,
        bitrate_bps: u64,
        ssrcs: &[Ssrc],
    ) -> Result<usize, RtcpError> {
        self.push(|b| write_remb(b, sender, bitrate_bps, ssrcs))
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
// Fuzzing
// ---------------------------------------------------------------------------------------

/// Drives everything in this module on arbitrary input: every parse, accessor and
/// iterator, and a rebuild-and-reparse of every packet type that has a builder.
#[cfg(feature = "fuzz")]
#[doc(hidden)]
pub fn fuzz_one(data: &[u8]) {
    exercise(data);
}

#[cfg(any(test, feature = "fuzz"))]
fn exercise(data: &[u8]) {
    let _ = first_ssrc(data);
    // Single-packet parses on the raw input must agree with the generic one.
    if let Ok(raw) = RawPacket::parse(data) {
        assert_eq!(raw.bytes(), data);
        let _ = raw.typed();
    }
    let _ = SenderReport::parse(data);
    let _ = ReceiverReport::parse(data);
    let _ = Sdes::parse(data);
    let _ = Bye::parse(data);
    let _ = App::parse(data);
    let _ = Nack::parse(data);
    let _ = Tmmbr::parse(data);
    let _ = Tmmbn::parse(data);
    let _ = TransportCc::parse(data);
    let _ = Pli::parse(data);
    let _ = Fir::parse(data);
    let _ = Remb::parse(data);

    let Ok(compound) = RtcpCompound::parse(data) else {
        return;
    };
    assert_eq!(compound.as_bytes(), data);
    let mut total = 0;
    for raw in compound.raw_packets() {
        total += raw.bytes().len();
        assert!(raw.body().len() + 4 <= raw.bytes().len());
        let _ = (raw.has_padding(), raw.count(), raw.pt());
    }
    assert_eq!(total, data.len());

    let mut rebuilt = std::vec![0u8; 2 * data.len() + 64];
    let mut writer = CompoundWriter::new(&mut rebuilt);
    let mut rebuilt_count = 0;
    for packet in compound.packets().flatten() {
        if exercise_packet(packet, data.len() + 64, &mut writer) {
            rebuilt_count += 1;
        }
    }
    let len = writer.finish();
    if len > 0 {
        let again = RtcpCompound::parse(&rebuilt[..len]).expect("rebuilt compound parses");
        assert_eq!(again.packets().count(), rebuilt_count);
        assert!(again.packets().all(|p| p.is_ok()));
    }
}

/// Touches every accessor of `packet`, rebuilds it where a builder exists, checks the
/// rebuild parses back to the same fields, and appends it to `w`. Returns whether it
/// appended a packet.
#[cfg(any(test, feature = "fuzz"))]
fn exercise_packet(packet: RtcpPacket<'_>, cap: usize, w: &mut CompoundWriter<'_>) -> bool {
    use std::vec::Vec;

    // A rebuild is never longer than the packet it came from.
    let mut buf = std::vec![0u8; cap];
    match packet {
        RtcpPacket::SenderReport(sr) => {
            let info = sr.sender_info();
            let reports: Vec<_> = sr.reports().collect();
            assert_eq!(reports.len(), sr.report_count());
            let _ = sr.profile_extension();
            let n = write_sr(&mut buf, &info, &reports).unwrap();
            let again = SenderReport::parse(&buf[..n]).unwrap();
            assert_eq!(again.sender_info(), info);
            assert!(again.reports().eq(reports.iter().copied()));
            assert!(again.profile_extension().is_empty());
            w.sr(&info, &reports).unwrap();
        }
        RtcpPacket::ReceiverReport(rr) => {
            let reports: Vec<_> = rr.reports().collect();
            let _ = rr.profile_extension();
            let n = write_rr(&mut buf, rr.ssrc(), &reports).unwrap();
            let again = ReceiverReport::parse(&buf[..n]).unwrap();
            assert_eq!(again.ssrc(), rr.ssrc());
            assert!(again.reports().eq(reports.iter().copied()));
            w.rr(rr.ssrc(), &reports).unwrap();
        }
        RtcpPacket::Sdes(sdes) => {
            let chunks: Vec<(Ssrc, Vec<SdesItem<'_>>)> = sdes
                .chunks()
                .map(|c| {
                    let _ = c.cname();
                    (c.ssrc(), c.items().collect())
                })
                .collect();
            assert_eq!(chunks.len(), sdes.chunk_count());
            let specs: Vec<_> = chunks
                .iter()
                .map(|(ssrc, items)| SdesChunkSpec { ssrc: *ssrc, items })
                .collect();
            let n = write_sdes(&mut buf, &specs).unwrap();
            let again = Sdes::parse(&buf[..n]).unwrap();
            assert!(
                again
                    .chunks()
                    .map(|c| (c.ssrc(), c.items().collect::<Vec<_>>()))
                    .eq(chunks.iter().cloned())
            );
            w.sdes(&specs).unwrap();
        }
        RtcpPacket::Bye(bye) => {
            let ssrcs: Vec<_> = bye.ssrcs().collect();
            let reason = bye.reason();
            let n = write_bye(&mut buf, &ssrcs, reason).unwrap();
            let again = Bye::parse(&buf[..n]).unwrap();
            assert!(again.ssrcs().eq(ssrcs.iter().copied()));
            assert_eq!(again.reason(), reason);
            w.bye(&ssrcs, reason).unwrap();
        }
        RtcpPacket::App(app) => {
            if !app.data().len().is_multiple_of(4) {
                return false;
            }
            let n = write_app(&mut buf, app.subtype(), app.ssrc(), app.name(), app.data()).unwrap();
            let again = App::parse(&buf[..n]).unwrap();
            assert_eq!(
                (again.subtype(), again.ssrc(), again.name(), again.data()),
                (app.subtype(), app.ssrc(), app.name(), app.data())
            );
            w.app(app.subtype(), app.ssrc(), app.name(), app.data())
                .unwrap();
        }
        RtcpPacket::Nack(nack) => {
            let pairs: Vec<_> = nack.pairs().collect();
            let n =
                write_nack_pairs(&mut buf, nack.sender_ssrc(), nack.media_ssrc(), &pairs).unwrap();
            let again = Nack::parse(&buf[..n]).unwrap();
            assert_eq!(again.fci(), nack.fci());
            assert_eq!(again.sender_ssrc(), nack.sender_ssrc());
            assert_eq!(again.media_ssrc(), nack.media_ssrc());
            // Regrouping the expanded list covers exactly the same numbers, in no more
            // entries.
            let lost: Vec<_> = nack.lost().collect();
            let n = write_nack(&mut buf, nack.sender_ssrc(), nack.media_ssrc(), &lost).unwrap();
            let again = Nack::parse(&buf[..n]).unwrap();
            assert!(again.pairs().len() <= pairs.len());
            let mut a: Vec<_> = again.lost().collect();
            let mut b = lost;
            a.sort();
            a.dedup();
            b.sort();
            b.dedup();
            assert_eq!(a, b);
            w.nack_pairs(nack.sender_ssrc(), nack.media_ssrc(), &pairs)
                .unwrap();
        }
        RtcpPacket::Tmmbr(t) => {
            let entries: Vec<_> = t.entries().collect();
            let _ = (t.media_ssrc(), t.fci());
            let n = write_tmmbr(&mut buf, t.sender_ssrc(), &entries).unwrap();
            let again = Tmmbr::parse(&buf[..n]).unwrap();
            assert_eq!(again.sender_ssrc(), t.sender_ssrc());
            assert_tmmb_eq(again.entries(), &entries);
            w.tmmbr(t.sender_ssrc(), &entries).unwrap();
        }
        RtcpPacket::Tmmbn(t) => {
            let entries: Vec<_> = t.entries().collect();
            let _ = (t.media_ssrc(), t.fci());
            let n = write_tmmbn(&mut buf, t.sender_ssrc(), &entries).unwrap();
            let again = Tmmbn::parse(&buf[..n]).unwrap();
            assert_eq!(again.sender_ssrc(), t.sender_ssrc());
            assert_tmmb_eq(again.entries(), &entries);
            w.tmmbn(t.sender_ssrc(), &entries).unwrap();
        }
        RtcpPacket::TransportCc(tcc) => {
            let _ = (tcc.sender_ssrc(), tcc.media_ssrc(), tcc.fci());
            let _ = (tcc.reference_time_ms(), tcc.fb_pkt_count());
            let mut seq = tcc.base_seq();
            let mut n = 0usize;
            for s in tcc.statuses() {
                assert_eq!(s.seq, seq);
                seq = seq.wrapping_add(1);
                n += 1;
                match s.status {
                    TccStatus::SmallDelta => assert!(matches!(s.delta, Some(0..=255))),
                    TccStatus::LargeDelta => assert!(s.delta.is_some()),
                    _ => assert!(s.delta.is_none()),
                }
            }
            assert_eq!(n, usize::from(tcc.status_count()));
            assert_eq!(tcc.statuses().len(), n);
            return false;
        }
        RtcpPacket::Pli(pli) => {
            let _ = pli.fci();
            let n = write_pli(&mut buf, pli.sender_ssrc(), pli.media_ssrc()).unwrap();
            let again = Pli::parse(&buf[..n]).unwrap();
            assert_eq!(
                (again.sender_ssrc(), again.media_ssrc()),
                (pli.sender_ssrc(), pli.media_ssrc())
            );
            w.pli(pli.sender_ssrc(), pli.media_ssrc()).unwrap();
        }
        RtcpPacket::Fir(fir) => {
            let entries: Vec<_> = fir.entries().collect();
            let _ = fir.media_ssrc();
            let n = write_fir(&mut buf, fir.sender_ssrc(), &entries).unwrap();
            let again = Fir::parse(&buf[..n]).unwrap();
            assert_eq!(again.sender_ssrc(), fir.sender_ssrc());
            assert!(again.entries().eq(entries.iter().copied()));
            w.fir(fir.sender_ssrc(), &entries).unwrap();
        }
        RtcpPacket::Remb(remb) => {
            let ssrcs: Vec<_> = remb.ssrcs().collect();
            let bps = remb.bitrate_bps();
            let _ = (remb.media_ssrc(), remb.fci());
            let n = write_remb(&mut buf, remb.sender_ssrc(), bps, &ssrcs).unwrap();
            let again = Remb::parse(&buf[..n]).unwrap();
            assert_eq!(again.sender_ssrc(), remb.sender_ssrc());
            assert!(again.ssrcs().eq(ssrcs.iter().copied()));
            if bps != u64::MAX {
                assert_eq!(again.bitrate_bps(), bps);
            }
            w.remb(remb.sender_ssrc(), bps, &ssrcs).unwrap();
        }
        RtcpPacket::Other { pt, fmt, body } => {
            let _ = (pt, fmt, body.len());
            return false;
        }
    }
    true
}

#[cfg(any(test, feature = "fuzz"))]
fn assert_tmmb_eq(again: TmmbEntries<'_>, entries: &[TmmbEntry]) {
    assert_eq!(again.len(), entries.len());
    for (a, e) in again.zip(entries) {
        assert_eq!((a.ssrc, a.overhead), (e.ssrc, e.overhead));
        // A saturated parse is the only value the wire cannot hold again.
        if e.bitrate_bps != u64::MAX {
            assert_eq!(a.bitrate_bps, e.bitrate_bps);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // --- Known bytes -------------------------------------------------------------------

    /// A sender report with one report block: the "valid" vector of pion/rtcp's and
    /// webrtc-rs's `sender_report_test`. Their header says length 7, which neither
    /// decoder checks; the 52 bytes are 12 words + 1, so the length is corrected to 12.
    const SR_ONE_BLOCK: [u8; 52] = [
        0x81, 0xc8, 0x00, 0x0c, // v=2, p=0, RC=1, SR, len=12
        0x90, 0x2f, 0x9e, 0x2e, // ssrc
        0xda, 0x8b, 0xd1, 0xfc, 0xdd, 0xdd, 0xa0, 0x5a, // ntp
        0xaa, 0xf4, 0xed, 0xd5, // rtp time
        0x00, 0x00, 0x00, 0x01, // packet count
        0x00, 0x00, 0x00, 0x02, // octet count
        0xbc, 0x5e, 0x9a, 0x40, // report: ssrc
        0x00, 0x00, 0x00, 0x00, // fraction lost, cumulative lost
        0x00, 0x00, 0x46, 0xe1, // extended highest seq
        0x00, 0x00, 0x01, 0x11, // jitter
        0x09, 0xf3, 0x64, 0x32, // lsr
        0x00, 0x02, 0x4a, 0x79, // dlsr
    ];

    /// SR (no blocks) + SDES CNAME, as Chrome sends them: webrtc-rs's "with extension"
    /// vector (issue #447), which is a two-packet compound.
    const SR_SDES: [u8; 56] = [
        0x80, 0xc8, 0x00, 0x06, 0x2b, 0x7e, 0xc0, 0xc5, 0xe0, 0x20, 0xa2, 0xa9, 0x52, 0xa5, 0x3f,
        0xc0, 0x2e, 0x48, 0xa5, 0x52, 0x00, 0x00, 0x00, 0x46, 0x00, 0x00, 0x12, 0x1d, 0x81, 0xca,
        0x00, 0x06, 0x2b, 0x7e, 0xc0, 0xc5, 0x01, 0x10, 0x4c, 0x63, 0x49, 0x66, 0x7a, 0x58, 0x6f,
        0x6e, 0x44, 0x6f, 0x72, 0x64, 0x53, 0x65, 0x57, 0x36, 0x00, 0x00,
    ];

    /// RR + SDES + BYE + PLI + RRR + APP from a packet dump (pion/rtcp `realPacket`).
    const DUMP: [u8; 132] = [
        // RR, RC=1
        0x81, 0xc9, 0x00, 0x07, 0x90, 0x2f, 0x9e, 0x2e, 0xbc, 0x5e, 0x9a, 0x40, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x46, 0xe1, 0x00, 0x00, 0x01, 0x11, 0x09, 0xf3, 0x64, 0x32, 0x00, 0x02,
        0x4a, 0x79, //
        // SDES, one chunk, CNAME of 38 bytes, END + padding
        0x81, 0xca, 0x00, 0x0c, 0x90, 0x2f, 0x9e, 0x2e, 0x01, 0x26, 0x7b, 0x39, 0x63, 0x30, 0x30,
        0x65, 0x62, 0x39, 0x32, 0x2d, 0x31, 0x61, 0x66, 0x62, 0x2d, 0x39, 0x64, 0x34, 0x39, 0x2d,
        0x61, 0x34, 0x37, 0x64, 0x2d, 0x39, 0x31, 0x66, 0x36, 0x34, 0x65, 0x65, 0x65, 0x36, 0x39,
        0x66, 0x35, 0x7d, 0x00, 0x00, 0x00, 0x00, //
        // BYE, one source
        0x81, 0xcb, 0x00, 0x01, 0x90, 0x2f, 0x9e, 0x2e, //
        // PLI
        0x81, 0xce, 0x00, 0x02, 0x90, 0x2f, 0x9e, 0x2e, 0x90, 0x2f, 0x9e, 0x2e, //
        // RTPFB FMT 5 (rapid resynchronisation request, RFC 6051)
        0x85, 0xcd, 0x00, 0x02, 0x90, 0x2f, 0x9e, 0x2e, 0x90, 0x2f, 0x9e, 0x2e, //
        // APP, subtype 0, name "NAME", data "ABCD"
        0x80, 0xcc, 0x00, 0x03, 0x4b, 0xaa, 0xe1, 0xab, 0x4e, 0x41, 0x4d, 0x45, 0x41, 0x42, 0x43,
        0x44,
    ];

    /// Generic NACK, PID 0xaaaa BLP 0x5555 (pion/rtcp `transport_layer_nack_test`).
    const NACK: [u8; 16] = [
        0x81, 0xcd, 0x00, 0x03, 0x90, 0x2f, 0x9e, 0x2e, 0x90, 0x2f, 0x9e, 0x2e, 0xaa, 0xaa, 0x55,
        0x55,
    ];

    /// FIR with one entry (pion/rtcp `full_intra_request_test`).
    const FIR: [u8; 20] = [
        0x84, 0xce, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x4b, 0xc4, 0xfc, 0xb4, 0x12, 0x34, 0x56,
        0x78, 0x42, 0x00, 0x00, 0x00,
    ];

    /// REMB sent by Chrome watching a 6 Mb/s stream (webrtc-rs REMB test): exponent 6,
    /// mantissa 139487, so 8 927 168 b/s, for SSRC 1215622422.
    const REMB: [u8; 24] = [
        143, 206, 0, 5, 0, 0, 0, 1, 0, 0, 0, 0, 82, 69, 77, 66, 1, 26, 32, 223, 72, 116, 237, 22,
    ];

    /// TMMBR laid out by hand from RFC 5104 §4.2.1.1: 1 000 000 b/s = 125 000 × 2^3
    /// (the smallest exponent whose 17-bit mantissa fits), overhead 40.
    const TMMBR: [u8; 20] = [
        0x83, 0xcd, 0x00, 0x04, 0x11, 0x11, 0x11, 0x11, 0x00, 0x00, 0x00, 0x00, 0x22, 0x22, 0x22,
        0x22, 0x0f, 0xd0, 0x90, 0x28,
    ];

    /// Transport-cc vectors from pion/rtcp `transport_layer_cc_test.go` whose padding
    /// count agrees with their length (the others there set P with a wrong count).
    /// One run-length chunk: 1 packet, small delta 0x94 (37 ms); 1 byte of padding.
    const TCC_RUN: [u8; 24] = [
        0xaf, 0xcd, 0x00, 0x05, 0xfa, 0x17, 0xfa, 0x17, 0x43, 0x03, 0x2f, 0xa0, 0x00, 0x99, 0x00,
        0x01, 0x3d, 0xe8, 0x02, 0x17, 0x20, 0x01, 0x94, 0x01,
    ];
    /// Run-length chunk of 7 small deltas; 3 bytes of padding.
    const TCC_RUN7: [u8; 32] = [
        0xaf, 0xcd, 0x00, 0x07, 0xfa, 0x17, 0xfa, 0x17, 0x19, 0x3d, 0xd8, 0xbb, 0x00, 0x04, 0x00,
        0x07, 0x10, 0x63, 0x6e, 0x01, 0x20, 0x07, 0x4c, 0x24, 0x24, 0x10, 0x0c, 0x0c, 0x10, 0x00,
        0x00, 0x03,
    ];
    /// A 2-bit status vector (5 small, 1 lost, 1 large) then a run of 48 lost, of
    /// which 2 are counted; 1 byte of padding.
    const TCC_VEC2_RUN: [u8; 32] = [
        0xaf, 0xcd, 0x00, 0x07, 0x9b, 0x74, 0xf6, 0x1f, 0x93, 0x71, 0xdc, 0xbc, 0x85, 0x3c, 0x00,
        0x09, 0x63, 0xf9, 0x16, 0xb3, 0xd5, 0x52, 0x00, 0x30, 0x9b, 0xaa, 0x6a, 0xaa, 0x7b, 0x01,
        0x09, 0x01,
    ];
    /// A 1-bit status vector (0xba00: received ×3, lost, received, lost ×9); 2 bytes
    /// of padding.
    const TCC_VEC1: [u8; 28] = [
        0xaf, 0xcd, 0x00, 0x06, 0xfa, 0x17, 0xfa, 0x17, 0x19, 0x3d, 0xd8, 0xbb, 0x00, 0x01, 0x00,
        0x0e, 0x10, 0x63, 0x6d, 0x00, 0xba, 0x00, 0x10, 0x0c, 0x0c, 0x10, 0x00, 0x02,
    ];
    /// Two 2-bit vectors (the second with `11` symbols) of which only 2 symbols count,
    /// so the second "chunk" is already the receive deltas; 1 byte of padding.
    const TCC_VEC2_TWO: [u8; 28] = [
        0xaf, 0xcd, 0x00, 0x06, 0xfa, 0x17, 0xfa, 0x17, 0x19, 0x3d, 0xd8, 0xbb, 0x01, 0x74, 0x00,
        0x02, 0x45, 0xb1, 0x5a, 0x40, 0xd8, 0x00, 0xf0, 0xff, 0xd0, 0x00, 0x00, 0x01,
    ];
    /// No packets at all, no padding.
    const TCC_EMPTY: [u8; 20] = [
        0x8f, 0xcd, 0x00, 0x04, 0x9a, 0xcb, 0x04, 0x42, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00,
    ];
    /// Run of 3 small deltas with only 1 delta byte: must be rejected.
    const TCC_SHORT_SMALL: [u8; 24] = [
        0xaf, 0xcd, 0x00, 0x05, 0xfa, 0x17, 0xfa, 0x17, 0x43, 0x03, 0x2f, 0xa0, 0x00, 0x99, 0x00,
        0x03, 0x3d, 0xe8, 0x02, 0x17, 0x20, 0x03, 0x94, 0x01,
    ];
    /// Run of 2 large deltas with only 1 delta byte: must be rejected.
    const TCC_SHORT_LARGE: [u8; 24] = [
        0xaf, 0xcd, 0x00, 0x05, 0xfa, 0x17, 0xfa, 0x17, 0x43, 0x03, 0x2f, 0xa0, 0x00, 0x99, 0x00,
        0x02, 0x3d, 0xe8, 0x02, 0x17, 0x40, 0x02, 0x94, 0x01,
    ];

    fn all_vectors() -> [&'static [u8]; 16] {
        [
            &SR_ONE_BLOCK,
            &SR_SDES,
            &DUMP,
            &NACK,
            &FIR,
            &REMB,
            &TMMBR,
            &TCC_RUN,
            &TCC_RUN7,
            &TCC_VEC2_RUN,
            &TCC_VEC1,
            &TCC_VEC2_TWO,
            &TCC_EMPTY,
            &TCC_SHORT_SMALL,
            &TCC_SHORT_LARGE,
            &COMPOUND_FOR_BENCH,
        ]
    }

    fn only<'a>(buf: &'a [u8]) -> RtcpPacket<'a> {
        let mut it = RtcpCompound::parse(buf).unwrap().packets();
        let p = it.next().unwrap().unwrap();
        assert!(it.next().is_none());
        p
    }

    fn rebuild(f: impl FnOnce(&mut [u8]) -> Result<usize, RtcpError>) -> Vec<u8> {
        let mut buf = vec![0u8; 2048];
        let n = f(&mut buf).unwrap();
        buf.truncate(n);
        buf
    }

    #[test]
    fn sender_report_known_bytes() {
        let RtcpPacket::SenderReport(sr) = only(&SR_ONE_BLOCK) else {
            panic!()
        };
        assert_eq!(sr.ssrc(), Ssrc(0x902f9e2e));
        assert_eq!(sr.ntp(), 0xda8bd1fcdddda05a);
        assert_eq!(sr.rtp_time(), RtpTime(0xaaf4edd5));
        assert_eq!(sr.packet_count(), 1);
        assert_eq!(sr.octet_count(), 2);
        assert_eq!(sr.report_count(), 1);
        let block = ReportBlock {
            ssrc: Ssrc(0xbc5e9a40),
            fraction_lost: 0,
            cumulative_lost: 0,
            highest_seq: 0x46e1,
            jitter: 273,
            lsr: 0x9f36432,
            dlsr: 150137,
        };
        assert_eq!(sr.reports().collect::<Vec<_>>(), [block]);
        assert!(sr.profile_extension().is_empty());
        assert_eq!(sr.packet(), &SR_ONE_BLOCK);
        assert_eq!(first_ssrc(&SR_ONE_BLOCK), Ok(Ssrc(0x902f9e2e)));
        assert_eq!(SenderReport::parse(&SR_ONE_BLOCK), Ok(sr));
        assert_eq!(
            rebuild(|b| write_sr(b, &sr.sender_info(), &[block])),
            SR_ONE_BLOCK
        );
    }

    #[test]
    fn sr_then_sdes_as_chrome_sends() {
        let c = RtcpCompound::parse(&SR_SDES).unwrap();
        let packets: Vec<_> = c.packets().map(Result::unwrap).collect();
        let [RtcpPacket::SenderReport(sr), RtcpPacket::Sdes(sdes)] = packets[..] else {
            panic!("{packets:?}")
        };
        assert_eq!(sr.ssrc(), Ssrc(0x2b7ec0c5));
        assert_eq!(sr.ntp(), 0xe020a2a952a53fc0);
        assert_eq!(sr.rtp_time(), RtpTime(0x2e48a552));
        assert_eq!((sr.packet_count(), sr.octet_count()), (70, 4637));
        assert_eq!(sr.reports().len(), 0);
        let chunk = sdes.chunks().next().unwrap();
        assert_eq!(chunk.ssrc(), Ssrc(0x2b7ec0c5));
        assert_eq!(chunk.cname(), Some(&b"LcIfzXonDordSeW6"[..]));
        assert_eq!(
            rebuild(|b| write_sdes_cname(b, Ssrc(0x2b7ec0c5), b"LcIfzXonDordSeW6")),
            SR_SDES[28..]
        );
    }

    #[test]
    fn packet_dump_every_type() {
        let c = RtcpCompound::parse(&DUMP).unwrap();
        let raws: Vec<_> = c.raw_packets().collect();
        assert_eq!(
            raws.iter()
                .map(|r| (r.pt(), r.count(), r.bytes().len()))
                .collect::<Vec<_>>(),
            [
                (201, 1, 32),
                (202, 1, 52),
                (203, 1, 8),
                (206, 1, 12),
                (205, 5, 12),
                (204, 0, 16)
            ]
        );
        let p: Vec<_> = c.packets().map(Result::unwrap).collect();

        let RtcpPacket::ReceiverReport(rr) = p[0] else {
            panic!()
        };
        assert_eq!(rr.ssrc(), Ssrc(0x902f9e2e));
        let block = rr.reports().next().unwrap();
        assert_eq!(block.ssrc, Ssrc(0xbc5e9a40));
        assert_eq!((block.highest_seq, block.jitter), (0x46e1, 273));
        assert_eq!((block.lsr, block.dlsr), (0x9f36432, 150137));
        assert_eq!(rebuild(|b| write_rr(b, rr.ssrc(), &[block])), DUMP[..32]);

        let RtcpPacket::Sdes(sdes) = p[1] else {
            panic!()
        };
        let chunk = sdes.chunks().next().unwrap();
        let items: Vec<_> = chunk.items().collect();
        assert_eq!(
            items,
            [SdesItem {
                kind: SdesItem::CNAME,
                value: b"{9c00eb92-1afb-9d49-a47d-91f64eee69f5}"
            }]
        );
        assert_eq!(
            rebuild(|b| write_sdes_cname(b, chunk.ssrc(), items[0].value)),
            DUMP[32..84]
        );

        let RtcpPacket::Bye(bye) = p[2] else { panic!() };
        assert_eq!(bye.ssrcs().collect::<Vec<_>>(), [Ssrc(0x902f9e2e)]);
        assert_eq!(bye.reason(), None);
        assert_eq!(
            rebuild(|b| write_bye(b, &[Ssrc(0x902f9e2e)], None)),
            DUMP[84..92]
        );

        let RtcpPacket::Pli(pli) = p[3] else { panic!() };
        assert_eq!(
            (pli.sender_ssrc(), pli.media_ssrc()),
            (Ssrc(0x902f9e2e), Ssrc(0x902f9e2e))
        );
        assert_eq!(
            rebuild(|b| write_pli(b, pli.sender_ssrc(), pli.media_ssrc())),
            DUMP[92..104]
        );

        assert_eq!(
            p[4],
            RtcpPacket::Other {
                pt: PT_RTPFB,
                fmt: 5,
                body: &DUMP[108..116]
            }
        );

        let RtcpPacket::App(app) = p[5] else { panic!() };
        assert_eq!(app.subtype(), 0);
        assert_eq!(app.ssrc(), Ssrc(0x4baae1ab));
        assert_eq!(&app.name(), b"NAME");
        assert_eq!(app.data(), b"ABCD");
        assert_eq!(
            rebuild(|b| write_app(b, 0, app.ssrc(), *b"NAME", b"ABCD")),
            DUMP[116..]
        );
    }

    #[test]
    fn nack_known_bytes() {
        let RtcpPacket::Nack(nack) = only(&NACK) else {
            panic!()
        };
        assert_eq!(nack.sender_ssrc(), Ssrc(0x902f9e2e));
        assert_eq!(nack.media_ssrc(), Ssrc(0x902f9e2e));
        let pair = NackPair {
            pid: WireSeq(0xaaaa),
            blp: 0x5555,
        };
        assert_eq!(nack.pairs().collect::<Vec<_>>(), [pair]);
        // BLP 0x5555 sets bits 0, 2, …, 14: PID + 1, PID + 3, …, PID + 15.
        let mut want = vec![WireSeq(0xaaaa)];
        want.extend((0..8).map(|i| WireSeq(0xaaaa + 1 + 2 * i)));
        assert_eq!(nack.lost().collect::<Vec<_>>(), want);
        let (s, m) = (nack.sender_ssrc(), nack.media_ssrc());
        assert_eq!(rebuild(|b| write_nack_pairs(b, s, m, &[pair])), NACK);
        assert_eq!(rebuild(|b| write_nack(b, s, m, &want)), NACK);
    }

    #[test]
    fn nack_grouping() {
        let seqs = |v: &[u16]| v.iter().map(|&s| WireSeq(s)).collect::<Vec<_>>();
        let groups = |v: &[u16]| NackPair::group(&seqs(v)).collect::<Vec<_>>();
        let pair = |pid, blp| NackPair {
            pid: WireSeq(pid),
            blp,
        };
        assert_eq!(groups(&[]), []);
        assert_eq!(groups(&[5]), [pair(5, 0)]);
        // 16 after the PID still fits; 17 starts a new entry.
        assert_eq!(
            groups(&[1, 2, 3, 17, 18, 40]),
            [pair(1, 0b1000_0000_0000_0011), pair(18, 0), pair(40, 0)]
        );
        // Across the wrap, with a duplicate.
        assert_eq!(groups(&[65534, 65535, 65535, 0, 1]), [pair(65534, 0b111)]);
        // Out of order: still covered.
        assert_eq!(groups(&[10, 5]), [pair(10, 0), pair(5, 0)]);
        // Every number comes back out.
        let lost = seqs(&[65530, 65531, 65535, 3, 4, 20, 21, 100]);
        let expanded: Vec<_> = NackPair::group(&lost).flat_map(NackPair::lost).collect();
        assert_eq!(expanded, lost);
    }

    #[test]
    fn fir_known_bytes() {
        let RtcpPacket::Fir(fir) = only(&FIR) else {
            panic!()
        };
        assert_eq!(fir.sender_ssrc(), Ssrc(0));
        assert_eq!(fir.media_ssrc(), Ssrc(0x4bc4fcb4));
        let entry = FirEntry {
            ssrc: Ssrc(0x12345678),
            seq_nr: 0x42,
        };
        assert_eq!(fir.entries().collect::<Vec<_>>(), [entry]);
        // Our writer puts 0 in the unused media SSRC, as RFC 5104 says.
        let mut want = FIR;
        want[8..12].fill(0);
        assert_eq!(rebuild(|b| write_fir(b, Ssrc(0), &[entry])), want);
    }

    #[test]
    fn remb_known_bytes() {
        let RtcpPacket::Remb(remb) = only(&REMB) else {
            panic!()
        };
        assert_eq!(remb.sender_ssrc(), Ssrc(1));
        assert_eq!(remb.media_ssrc(), Ssrc(0));
        assert_eq!(remb.bitrate_bps(), 8_927_168);
        assert_eq!(remb.ssrcs().collect::<Vec<_>>(), [Ssrc(1215622422)]);
        assert_eq!(
            rebuild(|b| write_remb(b, Ssrc(1), 8_927_168, &[Ssrc(1215622422)])),
            REMB
        );
        // One less rounds down to mantissa 139486 (webrtc-rs's truncation test).
        let mut want = REMB;
        want[19] = 222;
        assert_eq!(
            rebuild(|b| write_remb(b, Ssrc(1), 8_927_167, &[Ssrc(1215622422)])),
            want
        );
        assert_eq!(Remb::parse(&want).unwrap().bitrate_bps(), 8_927_104);
    }

    #[test]
    fn remb_extremes() {
        // Largest u64: exponent 46, mantissa all ones.
        let b = rebuild(|b| write_remb(b, Ssrc(0), u64::MAX, &[]));
        assert_eq!(b[16..20], [0, 46 << 2 | 3, 0xff, 0xff]);
        assert_eq!(Remb::parse(&b).unwrap().bitrate_bps(), 0x3_ffff << 46);
        // Exponent 63 with a full mantissa does not fit in u64: saturates.
        let max = [
            143, 206, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 82, 69, 77, 66, 0, 255, 255, 255,
        ];
        assert_eq!(Remb::parse(&max).unwrap().bitrate_bps(), u64::MAX);
        let zero = rebuild(|b| write_remb(b, Ssrc(0), 0, &[]));
        assert_eq!(Remb::parse(&zero).unwrap().bitrate_bps(), 0);
        // Small values use exponent 0.
        let small = rebuild(|b| write_remb(b, Ssrc(0), 0x3_ffff, &[]));
        assert_eq!(small[17] >> 2, 0);
        let next = rebuild(|b| write_remb(b, Ssrc(0), 0x4_0000, &[]));
        assert_eq!(next[17] >> 2, 1);
        // 256 SSRCs do not fit the 8-bit count.
        let many = [Ssrc(1); 256];
        assert_eq!(
            write_remb(&mut [0; 2048], Ssrc(0), 1, &many),
            Err(RtcpError::TooManyItems)
        );
        // An AFB that is not REMB is Other.
        let mut other = REMB;
        other[12] = b'X';
        assert!(matches!(
            only(&other),
            RtcpPacket::Other {
                pt: 206,
                fmt: 15,
                ..
            }
        ));
        assert_eq!(Remb::parse(&other), Err(RtcpError::WrongType));
    }

    #[test]
    fn bitrate_exponent_is_the_smallest_that_fits() {
        assert_eq!(bps_to_mantissa_exp(0, 17), (0, 0));
        assert_eq!(bps_to_mantissa_exp(0x1_ffff, 17), (0x1_ffff, 0));
        assert_eq!(bps_to_mantissa_exp(0x2_0000, 17), (0x1_0000, 1));
        assert_eq!(bps_to_mantissa_exp(0x2_0001, 17), (0x1_0000, 1));
        assert_eq!(bps_to_mantissa_exp(1_000_000, 17), (125_000, 3));
        assert_eq!(bps_to_mantissa_exp(u64::MAX, 17), (0x1_ffff, 47));
        assert_eq!(bps_to_mantissa_exp(8_927_168, 18), (139_487, 6));
        assert_eq!(mantissa_exp_to_bps(0x1_ffff, 47), 0x1_ffff << 47);
        assert_eq!(mantissa_exp_to_bps(0x1_ffff, 48), u64::MAX);
        assert_eq!(mantissa_exp_to_bps(1, 63), 1 << 63);
        assert_eq!(mantissa_exp_to_bps(2, 63), u64::MAX);
        assert_eq!(mantissa_exp_to_bps(0, 63), 0);
    }

    #[test]
    fn tmmbr_and_tmmbn() {
        let RtcpPacket::Tmmbr(t) = only(&TMMBR) else {
            panic!()
        };
        assert_eq!(t.sender_ssrc(), Ssrc(0x11111111));
        assert_eq!(t.media_ssrc(), Ssrc(0));
        let entry = TmmbEntry {
            ssrc: Ssrc(0x22222222),
            bitrate_bps: 1_000_000,
            overhead: 40,
        };
        assert_eq!(t.entries().collect::<Vec<_>>(), [entry]);
        assert_eq!(
            rebuild(|b| write_tmmbr(b, Ssrc(0x11111111), &[entry])),
            TMMBR
        );

        let two = [
            entry,
            TmmbEntry {
                ssrc: Ssrc(7),
                bitrate_bps: 123_456_789,
                overhead: 511,
            },
        ];
        let b = rebuild(|b| write_tmmbn(b, Ssrc(3), &two));
        let RtcpPacket::Tmmbn(n) = only(&b) else {
            panic!()
        };
        let got: Vec<_> = n.entries().collect();
        assert_eq!(got[0], two[0]);
        // 123456789 needs 27 bits: exponent 10, rounded down to a multiple of 1024.
        assert_eq!(got[1].bitrate_bps, 123_456_789 & !1023);
        assert_eq!(got[1].overhead, 511);
        // An empty TMMBN is a valid bounding set; an empty TMMBR is not.
        let empty = rebuild(|b| write_tmmbn(b, Ssrc(3), &[]));
        assert_eq!(Tmmbn::parse(&empty).unwrap().entries().len(), 0);
        assert_eq!(
            write_tmmbr(&mut [0; 64], Ssrc(3), &[]),
            Err(RtcpError::EmptyList)
        );
        let mut as_tmmbr = empty.clone();
        as_tmmbr[0] = 0x83;
        assert_eq!(Tmmbr::parse(&as_tmmbr), Err(RtcpError::TmmbBadLength));
        let bad = TmmbEntry {
            overhead: 512,
            ..entry
        };
        assert_eq!(
            write_tmmbr(&mut [0; 64], Ssrc(3), &[bad]),
            Err(RtcpError::FieldOutOfRange)
        );
    }

    // --- transport-cc ------------------------------------------------------------------

    fn statuses(buf: &[u8]) -> (TransportCc<'_>, Vec<(u16, TccStatus, Option<i16>)>) {
        let RtcpPacket::TransportCc(t) = only(buf) else {
            panic!()
        };
        let v = t.statuses().map(|s| (s.seq, s.status, s.delta)).collect();
        (t, v)
    }

    use TccStatus::{
        LargeDelta as L, NotReceived as N, ReceivedWithoutDelta as R, SmallDelta as S,
    };

    #[test]
    fn tcc_chunk_examples_from_the_draft() {
        // §3.1.3 example 1: run of 221 "not received".
        assert_eq!(tcc_symbol(0x00dd, 0), Some((N, 221)));
        assert_eq!(tcc_symbol(0x00dd, 220), Some((N, 221)));
        assert_eq!(tcc_symbol(0x00dd, 221), None);
        // §3.1.3 example 2: run of 24 with symbol 11.
        assert_eq!(tcc_symbol(0x6018, 23), Some((R, 24)));
        // §3.1.4 example 1: 1-bit vector 0x9f1c.
        let one_bit: Vec<_> = (0..14).map(|i| tcc_symbol(0x9f1c, i).unwrap().0).collect();
        assert_eq!(one_bit, [N, S, S, S, S, S, N, N, N, S, S, S, N, N]);
        assert_eq!(tcc_symbol(0x9f1c, 14), None);
        // §3.1.4 example 2: 2-bit vector 0xcd50.
        let two_bit: Vec<_> = (0..7).map(|i| tcc_symbol(0xcd50, i).unwrap().0).collect();
        assert_eq!(two_bit, [N, R, S, S, S, N, N]);
        assert_eq!(tcc_symbol(0xcd50, 7), None);
    }

    #[test]
    fn tcc_run_length() {
        let (t, v) = statuses(&TCC_RUN);
        assert_eq!(t.sender_ssrc(), Ssrc(4195875351));
        assert_eq!(t.media_ssrc(), Ssrc(1124282272));
        assert_eq!(t.base_seq(), 153);
        assert_eq!(t.status_count(), 1);
        assert_eq!(t.reference_time(), 4057090);
        assert_eq!(t.reference_time_ms(), 4057090 * 64);
        assert_eq!(t.fb_pkt_count(), 23);
        // 0x94 = 148 × 250 µs = 37 ms.
        assert_eq!(v, [(153, S, Some(148))]);

        let (t, v) = statuses(&TCC_RUN7);
        assert_eq!(
            (t.base_seq(), t.reference_time(), t.fb_pkt_count()),
            (4, 1074030, 1)
        );
        // 19, 9, 9, 4, 3, 3, 4 ms.
        let d = [76, 36, 36, 16, 12, 12, 16];
        let want: Vec<_> = (0..7).map(|i| (4 + i as u16, S, Some(d[i]))).collect();
        assert_eq!(v, want);
    }

    #[test]
    fn tcc_status_vectors() {
        let (t, v) = statuses(&TCC_VEC2_RUN);
        assert_eq!(t.sender_ssrc(), Ssrc(2608133663));
        assert_eq!(t.media_ssrc(), Ssrc(2473712828));
        assert_eq!((t.base_seq(), t.status_count()), (34108, 9));
        assert_eq!((t.reference_time(), t.fb_pkt_count()), (6551830, 179));
        // 38.75, 42.5, 26.5, 42.5, 30.75 ms small; 66.25 ms large.
        assert_eq!(
            v,
            [
                (34108, S, Some(155)),
                (34109, S, Some(170)),
                (34110, S, Some(106)),
                (34111, S, Some(170)),
                (34112, S, Some(123)),
                (34113, N, None),
                (34114, L, Some(265)),
                (34115, N, None),
                (34116, N, None),
            ]
        );

        let (t, v) = statuses(&TCC_VEC1);
        assert_eq!((t.base_seq(), t.status_count()), (1, 14));
        assert_eq!(t.reference_time(), 1074029);
        let got: Vec<_> = v.iter().map(|&(_, s, d)| (s, d)).collect();
        let mut want = vec![(S, Some(16)), (S, Some(12)), (S, Some(12)), (N, None)];
        want.push((S, Some(16)));
        want.extend([(N, None); 9]);
        assert_eq!(got, want);

        // pion expects deltas 0xd0 and 0x0000 here, reading past a second chunk that the
        // status count does not need. By the count the deltas start right after the
        // first chunk (webrtc-rs reads it the same way, see `cross_check_transport_cc`).
        let (_, v) = statuses(&TCC_VEC2_TWO);
        assert_eq!(v, [(372, S, Some(0xf0)), (373, L, Some(-48))]);

        let (t, v) = statuses(&TCC_EMPTY);
        assert_eq!((t.sender_ssrc(), t.status_count()), (Ssrc(2596996162), 0));
        assert!(v.is_empty());
    }

    #[test]
    fn tcc_rejects_short_deltas_and_chunks() {
        fn first(b: &[u8]) -> Result<RtcpPacket<'_>, RtcpError> {
            RtcpCompound::parse(b).unwrap().packets().next().unwrap()
        }
        assert_eq!(first(&TCC_SHORT_SMALL), Err(RtcpError::TccDeltasTruncated));
        assert_eq!(first(&TCC_SHORT_LARGE), Err(RtcpError::TccDeltasTruncated));
        // Status count 3 but only one chunk covering 1 (and no room for another).
        let mut b = TCC_RUN;
        b[15] = 3;
        b[21] = 1;
        b[0] = 0x8f; // no padding: 0x94 0x01 become a chunk of run 0x1401 "small"
        assert_eq!(first(&b), Err(RtcpError::TccDeltasTruncated));
        let mut b = TCC_EMPTY;
        b[15] = 1;
        assert_eq!(first(&b), Err(RtcpError::TccChunksTruncated));
        // Empty runs are skipped.
        let mut b = TCC_RUN7.to_vec();
        b[20..22].copy_from_slice(&[0x20, 0x00]); // run of 0
        b[22..24].copy_from_slice(&[0x20, 0x07]);
        b[24..31].copy_from_slice(&[0x4c, 0x24, 0x24, 0x10, 0x0c, 0x0c, 0x10]);
        b[31] = 0x01;
        let (_, v) = statuses(&b);
        assert_eq!(v.len(), 7);
        assert_eq!(v[6], (10, S, Some(16)));
    }

    // --- Building ----------------------------------------------------------------------

    fn block(seed: u32) -> ReportBlock {
        ReportBlock {
            ssrc: Ssrc(seed),
            fraction_lost: seed as u8,
            cumulative_lost: -(seed as i32 % 1000),
            highest_seq: seed.wrapping_mul(7),
            jitter: seed ^ 0xffff,
            lsr: seed.rotate_left(3),
            dlsr: seed.rotate_right(5),
        }
    }

    #[test]
    fn reports_round_trip_with_signed_loss() {
        let info = SenderInfo {
            ssrc: Ssrc(9),
            ntp: 0x0123_4567_89ab_cdef,
            rtp_time: RtpTime(77),
            packet_count: 100,
            octet_count: 20_000,
        };
        let blocks: Vec<_> = (1..=31).map(block).collect();
        let b = rebuild(|b| write_sr(b, &info, &blocks));
        assert_eq!(b.len(), 28 + 24 * 31);
        let sr = SenderReport::parse(&b).unwrap();
        assert_eq!(sr.sender_info(), info);
        assert_eq!(sr.reports().collect::<Vec<_>>(), blocks);
        let b = rebuild(|b| write_rr(b, Ssrc(5), &blocks[..2]));
        let rr = ReceiverReport::parse(&b).unwrap();
        assert_eq!(rr.ssrc(), Ssrc(5));
        assert_eq!(rr.reports().collect::<Vec<_>>(), blocks[..2]);
        // Empty RR is what a receiver with nothing to report sends.
        let b = rebuild(|b| write_rr(b, Ssrc(5), &[]));
        assert_eq!(b, [0x80, 0xc9, 0, 1, 0, 0, 0, 5]);

        // Cumulative loss is 24-bit signed on the wire, clamped when written.
        let mut extreme = block(1);
        for (given, read) in [
            (-1, -1),
            (0x7f_ffff, 0x7f_ffff),
            (-0x80_0000, -0x80_0000),
            (i32::MAX, 0x7f_ffff),
            (i32::MIN, -0x80_0000),
        ] {
            extreme.cumulative_lost = given;
            let b = rebuild(|b| write_rr(b, Ssrc(5), &[extreme]));
            let got = ReceiverReport::parse(&b).unwrap().reports().next().unwrap();
            assert_eq!(got.cumulative_lost, read);
        }
        extreme.cumulative_lost = -1;
        let b = rebuild(|b| write_rr(b, Ssrc(5), &[extreme]));
        assert_eq!(b[13..16], [0xff, 0xff, 0xff]);

        assert_eq!(
            write_rr(&mut [0; 2048], Ssrc(5), &[block(1); 32]),
            Err(RtcpError::TooManyItems)
        );
    }

    #[test]
    fn sdes_generic_items_and_layout() {
        let a = [
            SdesItem {
                kind: SdesItem::CNAME,
                value: b"abc",
            },
            SdesItem {
                kind: SdesItem::TOOL,
                value: b"bf",
            },
        ];
        let b_items = [SdesItem {
            kind: SdesItem::NOTE,
            value: b"",
        }];
        let chunks = [
            SdesChunkSpec {
                ssrc: Ssrc(1),
                items: &a,
            },
            SdesChunkSpec {
                ssrc: Ssrc(2),
                items: &[],
            },
            SdesChunkSpec {
                ssrc: Ssrc(3),
                items: &b_items,
            },
        ];
        let b = rebuild(|b| write_sdes(b, &chunks));
        #[rustfmt::skip]
        let want = [
            0x83, 0xca, 0x00, 0x08,
            0, 0, 0, 1, 1, 3, b'a', b'b', b'c', 6, 2, b'b', b'f', 0, 0, 0,
            0, 0, 0, 2, 0, 0, 0, 0,
            0, 0, 0, 3, 7, 0, 0, 0,
        ];
        assert_eq!(b, want);
        let sdes = Sdes::parse(&b).unwrap();
        assert_eq!(sdes.chunk_count(), 3);
        let got: Vec<_> = sdes
            .chunks()
            .map(|c| (c.ssrc(), c.items().collect::<Vec<_>>(), c.cname()))
            .collect();
        assert_eq!(
            got,
            [
                (Ssrc(1), a.to_vec(), Some(&b"abc"[..])),
                (Ssrc(2), vec![], None),
                (Ssrc(3), b_items.to_vec(), None),
            ]
        );
        // Items that end on a word boundary need a whole word of nulls.
        let four = [SdesItem {
            kind: 1,
            value: b"ab",
        }];
        let b = rebuild(|b| {
            write_sdes(
                b,
                &[SdesChunkSpec {
                    ssrc: Ssrc(1),
                    items: &four,
                }],
            )
        });
        assert_eq!(b[8..], [1, 2, b'a', b'b', 0, 0, 0, 0]);
        // Missing terminator or too few chunks.
        let mut cut = b.clone();
        cut[3] -= 1;
        cut.truncate(12);
        assert_eq!(Sdes::parse(&cut), Err(RtcpError::SdesTruncated));
        let mut more = b.clone();
        more[0] = 0x82;
        assert_eq!(Sdes::parse(&more), Err(RtcpError::SdesTruncated));

        let long = [SdesItem {
            kind: 1,
            value: &[b'x'; 256],
        }];
        let spec = [SdesChunkSpec {
            ssrc: Ssrc(1),
            items: &long,
        }];
        assert_eq!(
            write_sdes(&mut [0; 1024], &spec),
            Err(RtcpError::ItemTooLong)
        );
        let zero = [SdesItem {
            kind: 0,
            value: b"",
        }];
        let spec = [SdesChunkSpec {
            ssrc: Ssrc(1),
            items: &zero,
        }];
        assert_eq!(
            write_sdes(&mut [0; 64], &spec),
            Err(RtcpError::FieldOutOfRange)
        );
    }

    #[test]
    fn bye_with_reason_and_app() {
        let b = rebuild(|b| write_bye(b, &[Ssrc(1), Ssrc(2)], Some(b"bye!x")));
        #[rustfmt::skip]
        assert_eq!(b, [
            0x82, 0xcb, 0, 4, 0, 0, 0, 1, 0, 0, 0, 2,
            5, b'b', b'y', b'e', b'!', b'x', 0, 0,
        ]);
        let bye = Bye::parse(&b).unwrap();
        assert_eq!(bye.ssrcs().collect::<Vec<_>>(), [Ssrc(1), Ssrc(2)]);
        assert_eq!(bye.reason(), Some(&b"bye!x"[..]));
        let mut lying = b.clone();
        lying[12] = 9;
        assert_eq!(Bye::parse(&lying), Err(RtcpError::ByeTruncated));
        let mut too_many = b.clone();
        too_many[0] = 0x86;
        assert_eq!(Bye::parse(&too_many), Err(RtcpError::ByeTruncated));
        assert_eq!(
            write_bye(&mut [0; 512], &[], Some(&[0; 256])),
            Err(RtcpError::ItemTooLong)
        );

        let b = rebuild(|b| write_app(b, 31, Ssrc(4), *b"bfld", &[1, 2, 3, 4, 5, 6, 7, 8]));
        let app = App::parse(&b).unwrap();
        assert_eq!(
            (app.subtype(), app.ssrc(), app.name()),
            (31, Ssrc(4), *b"bfld")
        );
        assert_eq!(app.data(), [1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(
            write_app(&mut [0; 64], 32, Ssrc(4), *b"bfld", &[]),
            Err(RtcpError::FieldOutOfRange)
        );
        assert_eq!(
            write_app(&mut [0; 64], 1, Ssrc(4), *b"bfld", &[1]),
            Err(RtcpError::Unaligned)
        );
    }

    /// The compound the relay's bench parses: SR (one report block) + REMB + PLI + NACK.
    const COMPOUND_FOR_BENCH: [u8; 108] = [
        0x81, 0xc8, 0x00, 0x0c, 0x00, 0x00, 0x00, 0x0a, 0xe5, 0x00, 0x00, 0x00, 0x80, 0x00, 0x00,
        0x00, 0x00, 0x01, 0x5f, 0x90, 0x00, 0x00, 0x03, 0xe8, 0x00, 0x0f, 0x42, 0x40, 0x00, 0x00,
        0x00, 0x14, 0x19, 0xff, 0xff, 0xfe, 0x00, 0x01, 0x23, 0x45, 0x00, 0x00, 0x00, 0x10, 0x12,
        0x34, 0x56, 0x78, 0x00, 0x00, 0x01, 0x00, //
        0x8f, 0xce, 0x00, 0x05, 0x00, 0x00, 0x00, 0x0a, 0x00, 0x00, 0x00, 0x00, b'R', b'E', b'M',
        b'B', 0x01, 0x12, 0x62, 0x5a, 0x00, 0x00, 0x00, 0x14, //
        0x81, 0xce, 0x00, 0x02, 0x00, 0x00, 0x00, 0x0a, 0x00, 0x00, 0x00, 0x14, //
        0x81, 0xcd, 0x00, 0x04, 0x00, 0x00, 0x00, 0x0a, 0x00, 0x00, 0x00, 0x14, 0x03, 0xe8, 0x80,
        0x05, 0x04, 0x00, 0x00, 0x00,
    ];

    fn bench_parts() -> (SenderInfo, ReportBlock) {
        let info = SenderInfo {
            ssrc: Ssrc(10),
            ntp: 0xe500_0000_8000_0000,
            rtp_time: RtpTime(90_000),
            packet_count: 1000,
            octet_count: 1_000_000,
        };
        let block = ReportBlock {
            ssrc: Ssrc(20),
            fraction_lost: 25,
            cumulative_lost: -2,
            highest_seq: 0x1_2345,
            jitter: 16,
            lsr: 0x1234_5678,
            dlsr: 256,
        };
        (info, block)
    }

    #[test]
    fn compound_sr_remb_pli_nack() {
        let (info, block) = bench_parts();
        let mut buf = [0u8; 1500];
        let mut w = CompoundWriter::new(&mut buf);
        assert!(w.is_empty());
        assert_eq!(w.sr(&info, &[block]), Ok(52));
        assert_eq!(w.remb(Ssrc(10), 2_500_000, &[Ssrc(20)]), Ok(24));
        assert_eq!(w.pli(Ssrc(10), Ssrc(20)), Ok(12));
        let lost = [1000, 1001, 1003, 1016, 1024].map(WireSeq);
        assert_eq!(w.nack(Ssrc(10), Ssrc(20), &lost), Ok(20));
        assert_eq!(w.written(), COMPOUND_FOR_BENCH);
        let len = w.finish();
        assert_eq!(len, 108);

        let c = RtcpCompound::parse(&buf[..len]).unwrap();
        assert_eq!(first_ssrc(c.as_bytes()), Ok(Ssrc(10)));
        let mut it = c.into_iter();
        let Some(Ok(RtcpPacket::SenderReport(sr))) = it.next() else {
            panic!()
        };
        assert_eq!(sr.sender_info(), info);
        assert_eq!(sr.reports().collect::<Vec<_>>(), [block]);
        let Some(Ok(RtcpPacket::Remb(remb))) = it.next() else {
            panic!()
        };
        // 2.5 Mb/s needs 22 bits: exponent 4, exact.
        assert_eq!(remb.bitrate_bps(), 2_500_000);
        assert_eq!(remb.ssrcs().collect::<Vec<_>>(), [Ssrc(20)]);
        let Some(Ok(RtcpPacket::Pli(pli))) = it.next() else {
            panic!()
        };
        assert_eq!((pli.sender_ssrc(), pli.media_ssrc()), (Ssrc(10), Ssrc(20)));
        let Some(Ok(RtcpPacket::Nack(nack))) = it.next() else {
            panic!()
        };
        assert_eq!(nack.media_ssrc(), Ssrc(20));
        assert_eq!(nack.lost().collect::<Vec<_>>(), lost);
        assert_eq!(nack.pairs().len(), 2);
        assert!(it.next().is_none());
    }

    #[test]
    fn writer_errors_leave_it_unchanged() {
        let (info, block) = bench_parts();
        for size in 0..52 {
            let mut buf = vec![0u8; size];
            assert_eq!(
                write_sr(&mut buf, &info, &[block]),
                Err(RtcpError::BufferTooSmall),
                "{size}"
            );
        }
        let mut buf = [0u8; 60];
        let mut w = CompoundWriter::new(&mut buf);
        w.sr(&info, &[block]).unwrap();
        assert_eq!(w.pli(Ssrc(1), Ssrc(2)), Err(RtcpError::BufferTooSmall));
        assert_eq!(w.len(), 52);
        assert_eq!(w.nack(Ssrc(1), Ssrc(2), &[]), Err(RtcpError::EmptyList));
        assert_eq!(w.fir(Ssrc(1), &[]), Err(RtcpError::EmptyList));
        assert_eq!(w.bye(&[Ssrc(1)], None), Ok(8));
        assert_eq!(w.finish(), 60);
        assert!(RtcpCompound::parse(&buf).is_ok());
        // A NACK past the 16-bit length field.
        let lost: Vec<_> = (0..70_000u32).map(|i| WireSeq((i * 17) as u16)).collect();
        assert_eq!(
            write_nack(&mut vec![0; 400_000], Ssrc(1), Ssrc(2), &lost),
            Err(RtcpError::TooManyItems)
        );
    }

    // --- Framing and hostile input -----------------------------------------------------

    #[test]
    fn framing_errors() {
        assert_eq!(RtcpCompound::parse(&[]), Err(RtcpError::TooShort));
        assert_eq!(
            RtcpCompound::parse(&[0x80, 0xc9, 0]),
            Err(RtcpError::TooShort)
        );
        assert_eq!(
            RtcpCompound::parse(&[0x40, 0xc9, 0, 0]),
            Err(RtcpError::BadVersion)
        );
        assert_eq!(
            RtcpCompound::parse(&[0x80, 0xc9, 0, 1, 0, 0, 0]),
            Err(RtcpError::LengthOverrun)
        );
        // Trailing bytes that are not a packet.
        let mut v = NACK.to_vec();
        v.extend([0x80, 0xcd]);
        assert_eq!(RtcpCompound::parse(&v), Err(RtcpError::TooShort));
        assert_eq!(RawPacket::parse(&DUMP), Err(RtcpError::TrailingBytes));
        assert_eq!(Nack::parse(&FIR), Err(RtcpError::WrongType));
        assert_eq!(Pli::parse(&NACK), Err(RtcpError::WrongType));
        assert_eq!(SenderReport::parse(&DUMP[..32]), Err(RtcpError::WrongType));
        assert_eq!(first_ssrc(&NACK[..7]), Err(RtcpError::TooShort));
        assert_eq!(first_ssrc(&[0; 8]), Err(RtcpError::BadVersion));
    }

    #[test]
    fn padding_rules() {
        // PLI with 4 bytes of padding, last in the compound.
        let mut padded = NACK[..12].to_vec();
        padded[0] = 0xa1;
        padded[1] = PT_PSFB;
        padded[3] = 3;
        padded.extend([0, 0, 0, 4]);
        let raw = RawPacket::parse(&padded).unwrap();
        assert!(raw.has_padding());
        assert_eq!(raw.body().len(), 8);
        assert!(matches!(raw.typed(), Ok(RtcpPacket::Pli(_))));
        let mut compound = DUMP.to_vec();
        compound.extend(&padded);
        assert_eq!(RtcpCompound::parse(&compound).unwrap().packets().count(), 7);
        // Padding on a packet that is not the last.
        let mut compound = padded.clone();
        compound.extend(&DUMP);
        assert_eq!(
            RtcpCompound::parse(&compound),
            Err(RtcpError::PaddingNotLast)
        );
        // Count 0, or eating into the header.
        for bad in [0, 13, 255] {
            padded[15] = bad;
            assert_eq!(
                RtcpCompound::parse(&padded),
                Err(RtcpError::BadPadding),
                "{bad}"
            );
        }
        // Padding that eats the SSRCs leaves a feedback packet too short.
        padded[15] = 12;
        let c = RtcpCompound::parse(&padded).unwrap();
        assert_eq!(c.packets().next(), Some(Err(RtcpError::FeedbackTooShort)));
    }

    #[test]
    fn typed_minimum_sizes() {
        // Shorten each single-packet vector's length field word by word; the typed view
        // must reject it with its own reason (or still accept it where that is valid).
        let cases: [(&[u8], RtcpError); 7] = [
            (&SR_ONE_BLOCK, RtcpError::SrTooShort),
            (&DUMP[..32], RtcpError::RrTooShort),
            (&NACK, RtcpError::NackBadLength),
            (&FIR, RtcpError::FirBadLength),
            (&REMB, RtcpError::RembTooShort),
            (&TMMBR, RtcpError::TmmbBadLength),
            (&DUMP[116..], RtcpError::AppTooShort),
        ];
        for (v, err) in cases {
            for words in 0..v.len() / 4 - 1 {
                let mut p = v[..4 + 4 * words].to_vec();
                p[3] = words as u8;
                let got = RawPacket::parse(&p).unwrap().typed();
                let fb = matches!(p[1], PT_RTPFB | PT_PSFB) && words < 2;
                match got {
                    Err(e) if fb => assert_eq!(e, RtcpError::FeedbackTooShort),
                    Err(e) => assert_eq!(e, err, "{v:02x?} {words}"),
                    // A REMB cut before its identifier is some other AFB.
                    Ok(RtcpPacket::Other { .. }) if v == REMB => assert!(words < 3),
                    // SSRC and name without data is a valid APP.
                    Ok(RtcpPacket::App(a)) => assert!(words == 2 && a.data().is_empty()),
                    Ok(p) => panic!("accepted {p:?}"),
                }
            }
        }
        // A TCC shorter than its fixed fields.
        let mut p = TCC_EMPTY[..16].to_vec();
        p[3] = 3;
        assert_eq!(
            RawPacket::parse(&p).unwrap().typed(),
            Err(RtcpError::TccTooShort)
        );
    }

    #[test]
    fn truncation_at_every_length() {
        for v in all_vectors() {
            let boundaries: Vec<usize> = {
                let mut at = 0;
                let mut b = vec![0];
                for raw in RtcpCompound::parse(v).unwrap().raw_packets() {
                    at += raw.bytes().len();
                    b.push(at);
                }
                b
            };
            for len in 0..v.len() {
                let cut = &v[..len];
                let parsed = RtcpCompound::parse(cut);
                if boundaries.contains(&len) && len > 0 {
                    assert!(parsed.is_ok());
                } else {
                    assert!(parsed.is_err(), "{len} of {v:02x?}");
                }
                exercise(cut);
            }
            exercise(v);
        }
    }

    /// xorshift64*, deterministic.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn byte(&mut self) -> u8 {
            self.next() as u8
        }
    }

    #[test]
    fn mutated_vectors_and_garbage_never_panic() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for v in all_vectors() {
            for _ in 0..2000 {
                let mut m = v.to_vec();
                for _ in 0..1 + rng.next() % 4 {
                    let i = (rng.next() as usize) % m.len();
                    m[i] ^= 1 << (rng.next() % 8);
                }
                exercise(&m);
            }
        }
        for _ in 0..20_000 {
            // Mostly whole words, so that the framing passes and the typed views run.
            let len = if rng.next().is_multiple_of(8) {
                (rng.next() % 96) as usize
            } else {
                4 * (rng.next() % 24) as usize
            };
            let mut m: Vec<u8> = (0..len).map(|_| rng.byte()).collect();
            if let Some(first) = m.first_mut() {
                *first = 0x80 | (*first & 0x3f);
            }
            if len > 3 {
                m[1] = 200 + (m[1] % 8);
                m[2] = 0;
                m[3] = (len / 4 - 1) as u8;
                if m[0] & 0x20 != 0 {
                    m.truncate(4 * (len / 4));
                }
            }
            exercise(&m);
        }
    }

    // --- Cross-check with webrtc-rs `rtcp` ----------------------------------------------

    mod reference {
        use rtcp::packet::Packet;

        pub(super) type Boxed = Box<dyn Packet + Send + Sync>;

        pub(super) fn marshal(p: Boxed) -> Vec<u8> {
            rtcp::packet::marshal(&[p]).unwrap().to_vec()
        }

        pub(super) fn unmarshal(b: &[u8]) -> Vec<Boxed> {
            rtcp::packet::unmarshal(&mut &b[..]).unwrap()
        }

        pub(super) fn one<T: 'static + Clone>(b: &[u8]) -> T {
            let v = unmarshal(b);
            assert_eq!(v.len(), 1);
            v[0].as_any()
                .downcast_ref::<T>()
                .expect("packet type")
                .clone()
        }
    }

    fn to_ref_report(b: &ReportBlock) -> rtcp::reception_report::ReceptionReport {
        rtcp::reception_report::ReceptionReport {
            ssrc: b.ssrc.0,
            fraction_lost: b.fraction_lost,
            total_lost: (b.cumulative_lost as u32) & 0xff_ffff,
            last_sequence_number: b.highest_seq,
            jitter: b.jitter,
            last_sender_report: b.lsr,
            delay: b.dlsr,
        }
    }

    #[test]
    fn cross_check_reports() {
        use rtcp::{
            receiver_report::ReceiverReport as RefRr, sender_report::SenderReport as RefSr,
        };
        let mut rng = Rng(42);
        for round in 0..50 {
            let n = (rng.next() % 5) as usize;
            let blocks: Vec<_> = (0..n).map(|_| block(rng.next() as u32)).collect();
            let info = SenderInfo {
                ssrc: Ssrc(rng.next() as u32),
                ntp: rng.next(),
                rtp_time: RtpTime(rng.next() as u32),
                packet_count: rng.next() as u32,
                octet_count: rng.next() as u32,
            };
            // Ours → theirs.
            let b = rebuild(|b| write_sr(b, &info, &blocks));
            let theirs: RefSr = reference::one(&b);
            assert_eq!(theirs.ssrc, info.ssrc.0);
            assert_eq!(theirs.ntp_time, info.ntp);
            assert_eq!(theirs.rtp_time, info.rtp_time.0);
            assert_eq!(
                (theirs.packet_count, theirs.octet_count),
                (info.packet_count, info.octet_count)
            );
            let want: Vec<_> = blocks.iter().map(to_ref_report).collect();
            assert_eq!(theirs.reports, want, "{round}");
            // Theirs → ours.
            let b = reference::marshal(Box::new(theirs));
            let sr = SenderReport::parse(&b).unwrap();
            assert_eq!(sr.sender_info(), info);
            assert_eq!(sr.reports().collect::<Vec<_>>(), blocks);

            let b = rebuild(|b| write_rr(b, info.ssrc, &blocks));
            let theirs: RefRr = reference::one(&b);
            assert_eq!(theirs.ssrc, info.ssrc.0);
            assert_eq!(theirs.reports, want);
            let b = reference::marshal(Box::new(theirs));
            let rr = ReceiverReport::parse(&b).unwrap();
            assert_eq!(rr.reports().collect::<Vec<_>>(), blocks);
        }
    }

    #[test]
    fn cross_check_sdes_bye() {
        use rtcp::goodbye::Goodbye;
        use rtcp::source_description::{
            SdesType, SourceDescription, SourceDescriptionChunk, SourceDescriptionItem,
        };
        for cname in [
            &b""[..],
            b"a",
            b"ab",
            b"abc",
            b"abcd",
            b"user@example.org",
            &[b'z'; 255],
        ] {
            let b = rebuild(|b| write_sdes_cname(b, Ssrc(77), cname));
            let theirs: SourceDescription = reference::one(&b);
            assert_eq!(theirs.chunks.len(), 1);
            assert_eq!(theirs.chunks[0].source, 77);
            assert_eq!(theirs.chunks[0].items.len(), 1);
            assert_eq!(theirs.chunks[0].items[0].sdes_type, SdesType::SdesCname);
            assert_eq!(&theirs.chunks[0].items[0].text[..], cname);

            let theirs = SourceDescription {
                chunks: vec![
                    SourceDescriptionChunk {
                        source: 5,
                        items: vec![
                            SourceDescriptionItem {
                                sdes_type: SdesType::SdesCname,
                                text: cname.to_vec().into(),
                            },
                            SourceDescriptionItem {
                                sdes_type: SdesType::SdesTool,
                                text: b"tool".to_vec().into(),
                            },
                        ],
                    },
                    SourceDescriptionChunk {
                        source: 6,
                        items: vec![SourceDescriptionItem {
                            sdes_type: SdesType::SdesNote,
                            text: b"n".to_vec().into(),
                        }],
                    },
                ],
            };
            let b = reference::marshal(Box::new(theirs));
            let sdes = Sdes::parse(&b).unwrap();
            let got: Vec<_> = sdes
                .chunks()
                .map(|c| {
                    (
                        c.ssrc(),
                        c.items()
                            .map(|i| (i.kind, i.value.to_vec()))
                            .collect::<Vec<_>>(),
                    )
                })
                .collect();
            assert_eq!(
                got,
                [
                    (Ssrc(5), vec![(1, cname.to_vec()), (6, b"tool".to_vec())]),
                    (Ssrc(6), vec![(7, b"n".to_vec())]),
                ]
            );

            // BYE with the same text as reason.
            let b = rebuild(|b| write_bye(b, &[Ssrc(1), Ssrc(2)], Some(cname)));
            let theirs: Goodbye = reference::one(&b);
            assert_eq!(theirs.sources, [1, 2]);
            assert_eq!(&theirs.reason[..], cname);
            let b = reference::marshal(Box::new(theirs));
            let bye = Bye::parse(&b).unwrap();
            assert_eq!(bye.ssrcs().collect::<Vec<_>>(), [Ssrc(1), Ssrc(2)]);
            assert_eq!(bye.reason(), Some(cname));
        }
    }

    #[test]
    fn cross_check_feedback() {
        use rtcp::payload_feedbacks::full_intra_request::{
            FirEntry as RefFirEntry, FullIntraRequest,
        };
        use rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
        use rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
        use rtcp::transport_feedbacks::transport_layer_nack::{
            NackPair as RefNackPair, TransportLayerNack,
        };
        let mut rng = Rng(7);
        for _ in 0..50 {
            let (s, m) = (Ssrc(rng.next() as u32), Ssrc(rng.next() as u32));

            // NACK from a sorted loss list.
            let start = rng.next() as u16;
            let mut lost = vec![];
            let mut at = start;
            for _ in 0..1 + rng.next() % 40 {
                at = at.wrapping_add(1 + (rng.next() % 20) as u16);
                lost.push(WireSeq(at));
            }
            let b = rebuild(|b| write_nack(b, s, m, &lost));
            let theirs: TransportLayerNack = reference::one(&b);
            assert_eq!((theirs.sender_ssrc, theirs.media_ssrc), (s.0, m.0));
            let their_lost: Vec<_> = theirs
                .nacks
                .iter()
                .flat_map(|p| p.packet_list())
                .map(WireSeq)
                .collect();
            assert_eq!(their_lost, lost);
            let pairs: Vec<_> = theirs
                .nacks
                .iter()
                .map(|p| NackPair {
                    pid: WireSeq(p.packet_id),
                    blp: p.lost_packets,
                })
                .collect();
            let b2 = reference::marshal(Box::new(TransportLayerNack {
                sender_ssrc: s.0,
                media_ssrc: m.0,
                nacks: pairs
                    .iter()
                    .map(|p| RefNackPair {
                        packet_id: p.pid.0,
                        lost_packets: p.blp,
                    })
                    .collect(),
            }));
            assert_eq!(b2, b);
            assert_eq!(Nack::parse(&b2).unwrap().lost().collect::<Vec<_>>(), lost);

            // PLI.
            let b = rebuild(|b| write_pli(b, s, m));
            let theirs: PictureLossIndication = reference::one(&b);
            assert_eq!((theirs.sender_ssrc, theirs.media_ssrc), (s.0, m.0));
            assert_eq!(reference::marshal(Box::new(theirs)), b);

            // FIR.
            let entries: Vec<_> = (0..1 + rng.next() % 4)
                .map(|_| FirEntry {
                    ssrc: Ssrc(rng.next() as u32),
                    seq_nr: rng.byte(),
                })
                .collect();
            let b = rebuild(|b| write_fir(b, s, &entries));
            let theirs: FullIntraRequest = reference::one(&b);
            assert_eq!(theirs.sender_ssrc, s.0);
            let got: Vec<_> = theirs
                .fir
                .iter()
                .map(|e| FirEntry {
                    ssrc: Ssrc(e.ssrc),
                    seq_nr: e.sequence_number,
                })
                .collect();
            assert_eq!(got, entries);
            let b = reference::marshal(Box::new(FullIntraRequest {
                sender_ssrc: s.0,
                media_ssrc: m.0,
                fir: entries
                    .iter()
                    .map(|e| RefFirEntry {
                        ssrc: e.ssrc.0,
                        sequence_number: e.seq_nr,
                    })
                    .collect(),
            }));
            let fir = Fir::parse(&b).unwrap();
            assert_eq!((fir.sender_ssrc(), fir.media_ssrc()), (s, m));
            assert_eq!(fir.entries().collect::<Vec<_>>(), entries);

            // REMB: values an f32 holds exactly (18-bit mantissa).
            let bps = (rng.next() % 0x4_0000) << (rng.next() % 30);
            let ssrcs: Vec<_> = (0..rng.next() % 4)
                .map(|_| Ssrc(rng.next() as u32))
                .collect();
            let b = rebuild(|b| write_remb(b, s, bps, &ssrcs));
            let theirs: ReceiverEstimatedMaximumBitrate = reference::one(&b);
            assert_eq!(theirs.sender_ssrc, s.0);
            if bps != 0 {
                assert_eq!(theirs.bitrate as u64, bps);
            }
            assert_eq!(theirs.ssrcs, ssrcs.iter().map(|s| s.0).collect::<Vec<_>>());
            let b2 = reference::marshal(Box::new(theirs));
            if bps != 0 {
                assert_eq!(b2, b);
            }
            let remb = Remb::parse(&b2).unwrap();
            assert_eq!(remb.bitrate_bps(), bps);
            assert_eq!(remb.ssrcs().collect::<Vec<_>>(), ssrcs);
        }
    }

    #[test]
    fn cross_check_transport_cc() {
        use rtcp::transport_feedbacks::transport_layer_cc::{
            PacketStatusChunk, RecvDelta, RunLengthChunk, StatusChunkTypeTcc, StatusVectorChunk,
            SymbolSizeTypeTcc, SymbolTypeTcc, TransportLayerCc,
        };
        // Their decoder on our vectors.
        for v in [
            &TCC_RUN[..],
            &TCC_RUN7,
            &TCC_VEC2_RUN,
            &TCC_VEC1,
            &TCC_VEC2_TWO,
        ] {
            let theirs: TransportLayerCc = reference::one(v);
            let (t, ours) = statuses(v);
            assert_eq!(theirs.base_sequence_number, t.base_seq());
            assert_eq!(theirs.packet_status_count, t.status_count());
            assert_eq!(theirs.reference_time as i32, t.reference_time());
            assert_eq!(theirs.fb_pkt_count, t.fb_pkt_count());
            let our_deltas: Vec<i64> = ours
                .iter()
                .filter_map(|s| s.2)
                .map(|d| i64::from(d) * 250)
                .collect();
            let their_deltas: Vec<i64> = theirs.recv_deltas.iter().map(|d| d.delta).collect();
            assert_eq!(our_deltas, their_deltas);
        }
        // Our decoder on their encoding: run of 3 small, then a 2-bit vector
        // (large, lost, small, lost, lost, large, lost), then a 1-bit vector.
        let small = |d: i64| RecvDelta {
            type_tcc_packet: SymbolTypeTcc::PacketReceivedSmallDelta,
            delta: d * 250,
        };
        let large = |d: i64| RecvDelta {
            type_tcc_packet: SymbolTypeTcc::PacketReceivedLargeDelta,
            delta: d * 250,
        };
        use SymbolTypeTcc::{
            PacketNotReceived as TN, PacketReceivedLargeDelta as TL, PacketReceivedSmallDelta as TS,
        };
        let theirs = TransportLayerCc {
            sender_ssrc: 1,
            media_ssrc: 2,
            base_sequence_number: 65534,
            packet_status_count: 3 + 7 + 14,
            reference_time: 0x80_0001,
            fb_pkt_count: 9,
            packet_chunks: vec![
                PacketStatusChunk::RunLengthChunk(RunLengthChunk {
                    type_tcc: StatusChunkTypeTcc::RunLengthChunk,
                    packet_status_symbol: TS,
                    run_length: 3,
                }),
                PacketStatusChunk::StatusVectorChunk(StatusVectorChunk {
                    type_tcc: StatusChunkTypeTcc::StatusVectorChunk,
                    symbol_size: SymbolSizeTypeTcc::TwoBit,
                    symbol_list: vec![TL, TN, TS, TN, TN, TL, TN],
                }),
                PacketStatusChunk::StatusVectorChunk(StatusVectorChunk {
                    type_tcc: StatusChunkTypeTcc::StatusVectorChunk,
                    symbol_size: SymbolSizeTypeTcc::OneBit,
                    symbol_list: vec![TS, TN, TN, TN, TN, TN, TN, TN, TN, TN, TN, TN, TN, TS],
                }),
            ],
            recv_deltas: vec![
                small(0),
                small(255),
                small(7),
                large(-32768),
                small(1),
                large(32767),
                small(2),
                small(3),
            ],
        };
        let b = reference::marshal(Box::new(theirs));
        let (t, v) = statuses(&b);
        assert_eq!((t.sender_ssrc(), t.media_ssrc()), (Ssrc(1), Ssrc(2)));
        assert_eq!(t.reference_time(), -0x7f_ffff);
        assert_eq!(t.fb_pkt_count(), 9);
        let got: Vec<_> = v.iter().map(|&(_, s, d)| (s, d)).collect();
        let mut want = vec![(S, Some(0)), (S, Some(255)), (S, Some(7))];
        want.extend([
            (L, Some(-32768)),
            (N, None),
            (S, Some(1)),
            (N, None),
            (N, None),
        ]);
        want.extend([(L, Some(32767)), (N, None), (S, Some(2))]);
        want.extend([(N, None); 12]);
        want.push((S, Some(3)));
        assert_eq!(got, want);
        assert_eq!(v[0].0, 65534);
        assert_eq!(v[2].0, 0);
        assert_eq!(v[23].0, 21);
    }
}
