//! Goodbye (RFC 3550 §6.6).

use super::*;

// --- BYE -------------------------------------------------------------------------------

/// A goodbye packet (RFC 3550 §6.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bye<'a> {
    raw: RawPacket<'a>,
}

single_packet_parse!(Bye, "BYE packet", |raw| raw.pt() == PT_BYE);

impl<'a> Bye<'a> {
    pub(super) fn from_raw(raw: RawPacket<'a>) -> Result<Self, RtcpError> {
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
    pub(super) chunks: core::slice::ChunksExact<'a, u8>,
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
