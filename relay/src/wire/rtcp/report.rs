//! Sender and receiver reports (RFC 3550 §6.4).

use super::*;

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
    pub(super) fn from_raw(raw: RawPacket<'a>) -> Result<Self, RtcpError> {
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
    pub(super) fn from_raw(raw: RawPacket<'a>) -> Result<Self, RtcpError> {
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
