//! Zero-copy wire formats.
//!
//! Every type here is a view over a borrowed buffer: parsing checks lengths and
//! structure once, then accessors read fields straight from the bytes. Nothing
//! allocates, nothing copies. Malformed input is rejected with a typed reason that
//! the caller counts and drops; it never panics.
//!
//! Start with [`demux`], which sorts a datagram from the shared media port into the
//! protocol it belongs to (RFC 7983 §7, as extended by RFC 5761 for RTP/RTCP mux).

pub mod rtcp;
pub mod rtp;
pub mod stun;

/// What an incoming datagram on the media port is, by its first bytes.
///
/// Each variant borrows the whole datagram; parse it further with the matching module.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Datagram<'a> {
    /// First byte 0..=3: STUN (ICE connectivity checks).
    Stun(&'a [u8]),
    /// First byte 20..=63: DTLS records.
    Dtls(&'a [u8]),
    /// First byte 128..=191 with an RTP payload type: (S)RTP media.
    Rtp(&'a [u8]),
    /// First byte 128..=191 with payload type 192..=223 (RFC 5761 §4): (S)RTCP.
    Rtcp(&'a [u8]),
    /// Anything else (ZRTP, TURN channels, garbage, or too short to classify).
    Unknown(&'a [u8]),
}

/// The class of a datagram, without the borrow (see [`Datagram`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// STUN.
    Stun,
    /// DTLS.
    Dtls,
    /// RTP.
    Rtp,
    /// RTCP.
    Rtcp,
    /// Not one of ours.
    Unknown,
}

/// Classifies a datagram by RFC 7983's first-byte ranges.
///
/// RTP and RTCP share the 128..=191 range; they are told apart by the second byte as
/// RFC 5761 §4 says: RTCP packet types 192..=223 occupy RTP payload types 64..=95
/// once the marker bit is masked, which RTP must not use when muxed. Datagrams shorter
/// than the fixed header of their protocol (20 bytes STUN, 13 DTLS, 12 RTP, 8 RTCP)
/// are [`Kind::Unknown`].
#[inline]
pub fn classify(datagram: &[u8]) -> Kind {
    let Some(&first) = datagram.first() else {
        return Kind::Unknown;
    };
    match first {
        0..=3 if datagram.len() >= 20 => Kind::Stun,
        20..=63 if datagram.len() >= 13 => Kind::Dtls,
        128..=191 => match datagram.get(1) {
            Some(&b) if (192..=223).contains(&b) || (64..=95).contains(&(b & 0x7f)) => {
                if datagram.len() >= 8 {
                    Kind::Rtcp
                } else {
                    Kind::Unknown
                }
            }
            Some(_) if datagram.len() >= 12 => Kind::Rtp,
            _ => Kind::Unknown,
        },
        _ => Kind::Unknown,
    }
}

/// Sorts a datagram into a borrowed [`Datagram`] (see [`classify`] for the rules).
#[inline]
pub fn demux(datagram: &[u8]) -> Datagram<'_> {
    match classify(datagram) {
        Kind::Stun => Datagram::Stun(datagram),
        Kind::Dtls => Datagram::Dtls(datagram),
        Kind::Rtp => Datagram::Rtp(datagram),
        Kind::Rtcp => Datagram::Rtcp(datagram),
        Kind::Unknown => Datagram::Unknown(datagram),
    }
}

impl<'a> TryFrom<&'a [u8]> for Datagram<'a> {
    type Error = &'a [u8];

    /// Like [`demux`], but an unclassifiable datagram is an `Err` carrying its bytes.
    fn try_from(datagram: &'a [u8]) -> Result<Self, Self::Error> {
        match demux(datagram) {
            Datagram::Unknown(d) => Err(d),
            d => Ok(d),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_first(first: u8, second: u8, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        v[0] = first;
        if len > 1 {
            v[1] = second;
        }
        v
    }

    #[test]
    fn rfc7983_ranges() {
        for b in 0..=3 {
            assert_eq!(classify(&with_first(b, 1, 20)), Kind::Stun);
        }
        for b in 4..=19 {
            assert_eq!(classify(&with_first(b, 1, 40)), Kind::Unknown, "{b}");
        }
        for b in 20..=63 {
            assert_eq!(classify(&with_first(b, 1, 40)), Kind::Dtls);
        }
        for b in 64..=127 {
            assert_eq!(classify(&with_first(b, 1, 40)), Kind::Unknown, "{b}");
        }
        for b in 192..=255 {
            assert_eq!(classify(&with_first(b, 1, 40)), Kind::Unknown, "{b}");
        }
    }

    #[test]
    fn rtp_and_rtcp_split_on_payload_type() {
        // Opus PT 111, VP8 PT 96 with and without marker.
        assert_eq!(classify(&with_first(0x80, 111, 12)), Kind::Rtp);
        assert_eq!(classify(&with_first(0x80, 0x80 | 96, 12)), Kind::Rtp);
        // SR 200, RR 201, SDES 202, BYE 203, APP 204, RTPFB 205, PSFB 206.
        for pt in 192..=223 {
            assert_eq!(classify(&with_first(0x81, pt, 8)), Kind::Rtcp, "{pt}");
        }
        assert_eq!(classify(&with_first(0x80, 200, 7)), Kind::Unknown);
        assert_eq!(classify(&with_first(0x80, 96, 11)), Kind::Unknown);
    }

    #[test]
    fn short_and_empty_are_unknown() {
        assert_eq!(classify(&[]), Kind::Unknown);
        assert_eq!(classify(&[0x80]), Kind::Unknown);
        assert_eq!(classify(&with_first(0, 1, 19)), Kind::Unknown);
        assert_eq!(classify(&with_first(22, 1, 12)), Kind::Unknown);
        assert!(Datagram::try_from(&[0xffu8][..]).is_err());
    }
}
