//! Application-defined packets (RFC 3550 §6.7).

use super::*;

// --- APP -------------------------------------------------------------------------------

/// An application-defined packet (RFC 3550 §6.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct App<'a> {
    raw: RawPacket<'a>,
}

single_packet_parse!(App, "APP packet", |raw| raw.pt() == PT_APP);

impl<'a> App<'a> {
    pub(super) fn from_raw(raw: RawPacket<'a>) -> Result<Self, RtcpError> {
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
