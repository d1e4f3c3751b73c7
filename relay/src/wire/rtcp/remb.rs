//! Receiver estimated maximum bitrate (draft-alvestrand-rmcat-remb-03).

use super::*;

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
    pub(super) fn from_raw(raw: RawPacket<'a>) -> Result<Self, RtcpError> {
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
