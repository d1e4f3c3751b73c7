//! Transport-wide congestion control feedback (draft-holmer-rmcat-transport-wide-cc-extensions-01).

use super::*;

// --- transport-cc ----------------------------------------------------------------------

/// Fixed part of a transport-cc FCI after the two SSRCs: base seq, status count,
/// reference time, feedback packet count.
pub(super) const TCC_FIXED_LEN: usize = FB_COMMON_LEN + 8;

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
pub(super) fn tcc_symbol(chunk: u16, idx: u16) -> Option<(TccStatus, u16)> {
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
    pub(super) fn from_raw(raw: RawPacket<'a>) -> Result<Self, RtcpError> {
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

/// The most packets [`write_transport_cc`] reports in one feedback.
pub const TCC_MAX_STATUSES: usize = 0xffff;

/// The status and receive delta of each of `arrivals` (see [`write_transport_cc`]).
fn tcc_entries(
    arrivals: &[Option<i64>],
) -> impl Iterator<Item = Result<(TccStatus, i64), RtcpError>> + '_ {
    let mut prev = 0i64;
    arrivals.iter().map(move |a| {
        let Some(t) = *a else {
            return Ok((TccStatus::NotReceived, 0));
        };
        let d = t - prev;
        prev = t;
        match d {
            0..=255 => Ok((TccStatus::SmallDelta, d)),
            _ if i16::try_from(d).is_ok() => Ok((TccStatus::LargeDelta, d)),
            _ => Err(RtcpError::FieldOutOfRange),
        }
    })
}

/// Writes transport-cc feedback (draft-holmer-rmcat-transport-wide-cc-extensions-01
/// §3.1) from `sender` about the packets `base_seq`, `base_seq + 1`, …: `arrivals[i]`
/// is when packet `base_seq + i` arrived, in 250 µs ticks after `reference_time`
/// (24-bit signed, in multiples of 64 ms), or `None` if it did not. The statuses go in
/// two-bit status vector chunks of seven; each receive delta is from the previous
/// received packet (the first from the reference time), one byte when it is 0 to 255
/// ticks, two (signed) otherwise. Zero padding ends the packet.
///
/// Fails with [`RtcpError::FieldOutOfRange`] for a delta outside ±8.19 s (i16 ticks),
/// [`RtcpError::TooManyItems`] for more than [`TCC_MAX_STATUSES`] packets or past the
/// length field, and [`RtcpError::BufferTooSmall`].
pub fn write_transport_cc(
    out: &mut [u8],
    sender: Ssrc,
    media: Ssrc,
    base_seq: u16,
    reference_time: i32,
    fb_pkt_count: u8,
    arrivals: &[Option<i64>],
) -> Result<usize, RtcpError> {
    if arrivals.len() > TCC_MAX_STATUSES {
        return Err(RtcpError::TooManyItems);
    }
    let mut delta_bytes = 0;
    for e in tcc_entries(arrivals) {
        delta_bytes += e?.0.delta_len();
    }
    let chunks = arrivals.len().div_ceil(7);
    let body = TCC_FIXED_LEN + 2 * chunks + delta_bytes;
    let total = (HEADER_LEN + body).next_multiple_of(4);
    let mut c = begin(out, total, FMT_TCC, PT_RTPFB)?;
    c.u32(sender.0);
    c.u32(media.0);
    c.u16(base_seq);
    c.u16(arrivals.len() as u16);
    c.put(&reference_time.to_be_bytes()[1..]);
    c.u8(fb_pkt_count);
    let mut entries = tcc_entries(arrivals);
    for _ in 0..chunks {
        let mut chunk = 0xc000u16;
        for (k, e) in entries.by_ref().take(7).enumerate() {
            let bits = match e?.0 {
                TccStatus::NotReceived => 0,
                TccStatus::SmallDelta => 1,
                TccStatus::LargeDelta => 2,
                TccStatus::ReceivedWithoutDelta => 3,
            };
            chunk |= bits << (12 - 2 * k);
        }
        c.u16(chunk);
    }
    for e in tcc_entries(arrivals) {
        match e? {
            (TccStatus::SmallDelta, d) => c.u8(d as u8),
            (TccStatus::LargeDelta, d) => c.u16(d as i16 as u16),
            _ => {}
        }
    }
    c.buf[c.pos..].fill(0);
    Ok(total)
}
