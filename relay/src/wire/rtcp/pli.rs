//! Picture loss indication (RFC 4585 §6.3.1).

use super::*;

/// A picture loss indication (RFC 4585 §6.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pli<'a> {
    raw: RawPacket<'a>,
}

single_packet_parse!(Pli, "PLI", |raw| raw.pt() == PT_PSFB
    && raw.count() == FMT_PLI);
feedback_accessors!(Pli);

impl<'a> Pli<'a> {
    pub(super) fn from_raw(raw: RawPacket<'a>) -> Result<Self, RtcpError> {
        feedback_check(&raw)?;
        Ok(Pli { raw })
    }
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
