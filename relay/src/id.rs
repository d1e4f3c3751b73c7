//! Typed identifiers.
//!
//! Each identifier is its own newtype, so an SSRC is never confused with a sequence
//! number or a payload type.

use std::fmt;

/// The two the control protocol names too are defined with its codec (which depends
/// on nothing of the relay's); they are the same types.
pub use blindfold_control::{ExtId, Ssrc};

/// RTP payload type (RFC 3550 §5.1), 7 bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Pt(pub u8);

/// The 16-bit RTP sequence number as it appears on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WireSeq(pub u16);

/// An RTP sequence number extended past rollover: `roc << 16 | seq` (RFC 3711 §3.3.1).
///
/// This is the 48-bit packet index SRTP uses; it never wraps in practice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeqNo(pub u64);

impl SeqNo {
    /// Builds the extended number from a rollover counter and a wire sequence number.
    pub fn new(roc: u32, seq: WireSeq) -> Self {
        SeqNo((u64::from(roc) << 16) | u64::from(seq.0))
    }

    /// The rollover counter part.
    pub fn roc(self) -> u32 {
        (self.0 >> 16) as u32
    }

    /// The 16-bit wire sequence number part.
    pub fn wire(self) -> WireSeq {
        WireSeq(self.0 as u16)
    }
}

/// RTP timestamp (RFC 3550 §5.1), in the media clock of the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RtpTime(pub u32);

/// SRTP master key index as carried in a one-byte MKI (RFC 3711 §3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyIndex(pub u8);

macro_rules! display_inner {
    ($($t:ty),*) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }
    )*};
}
display_inner!(Pt, WireSeq, SeqNo, RtpTime, KeyIndex);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seqno_splits_into_roc_and_wire() {
        let s = SeqNo::new(3, WireSeq(0xfffe));
        assert_eq!(s.0, 0x3_fffe);
        assert_eq!(s.roc(), 3);
        assert_eq!(s.wire(), WireSeq(0xfffe));
    }
}
