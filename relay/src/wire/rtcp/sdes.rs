//! Source description items (RFC 3550 §6.5).

use super::*;

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
pub(super) fn sdes_chunk_len(buf: &[u8]) -> Option<(usize, usize)> {
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
    pub(super) fn from_raw(raw: RawPacket<'a>) -> Result<Self, RtcpError> {
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
