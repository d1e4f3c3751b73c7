//! Full intra request (RFC 5104 §4.3.1).

use super::*;

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
    pub(super) fn from_raw(raw: RawPacket<'a>) -> Result<Self, RtcpError> {
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
