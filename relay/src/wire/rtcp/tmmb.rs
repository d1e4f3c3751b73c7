//! Temporary maximum media stream bitrate request and notification (RFC 5104 §4.2).

use super::*;

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
            pub(super) fn from_raw(raw: RawPacket<'a>) -> Result<Self, RtcpError> {
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

pub(super) fn write_tmmb(
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
