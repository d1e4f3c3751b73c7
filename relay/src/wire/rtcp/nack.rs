//! Generic NACK (RFC 4585 §6.2.1).

use super::*;

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
    pub(super) fn from_raw(raw: RawPacket<'a>) -> Result<Self, RtcpError> {
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

pub(super) fn write_nack_iter(
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
