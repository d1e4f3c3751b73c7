//! RTP stream pause and resume (RFC 7728 §8): the PAUSE-RESUME transport-layer
//! feedback message, RTPFB FMT 9.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |V=2|P|  FMT=9  |    PT=205     |             length            |
//! |                     SSRC of packet sender                     |
//! |               SSRC of media source (unused, 0)                |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+  ┐
//! |                          Target SSRC                          |  │ one FCI entry,
//! | Type  |  Res  | Parameter Len |            PauseID            |  │ repeated
//! :          Type Specific (Parameter Len 32-bit words)           :  │
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+  ┘
//! ```
//!
//! Type 0 is PAUSE, 1 RESUME (both requests to the target's sender), 2 PAUSED (the
//! sender's indication that it paused), 3 REFUSED (its notification that it will not
//! change state); 4–15 are reserved and receivers ignore them, so a view reports them
//! as [`PauseKind::Reserved`] for the caller to skip. Res is ignored on reading and
//! written as 0. PauseID numbers requests per target SSRC (incremented per new PAUSE,
//! not per repetition); Type Specific is opaque here and read as whole words. As with
//! TMMBR, the target is in each entry and the header's media SSRC is written as 0.

use super::*;

/// RTPFB FMT of PAUSE-RESUME (RFC 7728 §8).
pub const FMT_PAUSE_RESUME: u8 = 9;

/// What a PAUSE-RESUME FCI entry asks or says (its 4-bit Type).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PauseKind {
    /// 0: pause the target stream.
    Pause,
    /// 1: resume the target stream.
    Resume,
    /// 2: the sender paused the target stream.
    Paused,
    /// 3: the sender will not change the target stream's state.
    Refused,
    /// 4–15: reserved; receivers ignore such entries (RFC 7728 §8).
    Reserved(u8),
}

impl PauseKind {
    /// The kind a 4-bit Type value stands for (higher bits ignored).
    pub fn from_type(t: u8) -> Self {
        match t & 0x0f {
            0 => PauseKind::Pause,
            1 => PauseKind::Resume,
            2 => PauseKind::Paused,
            3 => PauseKind::Refused,
            t => PauseKind::Reserved(t),
        }
    }

    /// The Type value, or `None` for a reserved value outside 4–15.
    pub fn to_type(self) -> Option<u8> {
        match self {
            PauseKind::Pause => Some(0),
            PauseKind::Resume => Some(1),
            PauseKind::Paused => Some(2),
            PauseKind::Refused => Some(3),
            PauseKind::Reserved(t @ 4..=15) => Some(t),
            PauseKind::Reserved(_) => None,
        }
    }
}

/// One PAUSE-RESUME FCI entry, parsed or to be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PauseEntry<'a> {
    /// The stream the entry is about.
    pub target: Ssrc,
    /// PAUSE, RESUME, PAUSED, REFUSED.
    pub kind: PauseKind,
    /// The request's sequence number, per target SSRC.
    pub pause_id: u16,
    /// Type-specific parameters: whole 32-bit words, at most 255 of them.
    pub type_specific: &'a [u8],
}

/// A PAUSE-RESUME message (RFC 7728 §8): one or more [`PauseEntry`]s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PauseResume<'a> {
    raw: RawPacket<'a>,
}

single_packet_parse!(PauseResume, "PAUSE-RESUME", |raw| raw.pt() == PT_RTPFB
    && raw.count() == FMT_PAUSE_RESUME);
feedback_accessors!(PauseResume);

impl<'a> PauseResume<'a> {
    pub(super) fn from_raw(raw: RawPacket<'a>) -> Result<Self, RtcpError> {
        feedback_check(&raw)?;
        let mut fci = &raw.body[FB_COMMON_LEN..];
        if fci.is_empty() {
            return Err(RtcpError::PauseBadLength);
        }
        while !fci.is_empty() {
            let len = entry_len(fci).ok_or(RtcpError::PauseBadLength)?;
            fci = &fci[len..];
        }
        Ok(PauseResume { raw })
    }

    /// The FCI entries.
    pub fn entries(&self) -> PauseEntries<'a> {
        PauseEntries { rest: self.fci() }
    }
}

/// The length of the entry at the start of `fci`, if it is all there.
fn entry_len(fci: &[u8]) -> Option<usize> {
    let words = usize::from(*fci.get(5)?);
    let len = 8 + 4 * words;
    (fci.len() >= len).then_some(len)
}

/// Iterator over the [`PauseEntry`]s of a [`PauseResume`].
#[derive(Debug, Clone)]
pub struct PauseEntries<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for PauseEntries<'a> {
    type Item = PauseEntry<'a>;

    fn next(&mut self) -> Option<PauseEntry<'a>> {
        // The view checked the entries; a short tail cannot happen, but ends the walk.
        let len = entry_len(self.rest)?;
        let (e, rest) = self.rest.split_at(len);
        self.rest = rest;
        Some(PauseEntry {
            target: Ssrc(be32(e, 0)),
            kind: PauseKind::from_type(e[4] >> 4),
            pause_id: be16(e, 6),
            type_specific: &e[8..],
        })
    }
}

/// Writes a PAUSE-RESUME message (media SSRC 0).
///
/// Fails with [`RtcpError::EmptyList`] for no entries, [`RtcpError::Unaligned`] for
/// type-specific data not a multiple of 4 bytes, [`RtcpError::FieldOutOfRange`] for
/// more than 255 words of it or a reserved kind outside 4–15,
/// [`RtcpError::TooManyItems`] past the length field, and
/// [`RtcpError::BufferTooSmall`].
pub fn write_pause_resume(
    out: &mut [u8],
    sender: Ssrc,
    entries: &[PauseEntry<'_>],
) -> Result<usize, RtcpError> {
    if entries.is_empty() {
        return Err(RtcpError::EmptyList);
    }
    let mut fci = 0usize;
    for e in entries {
        if !e.type_specific.len().is_multiple_of(4) {
            return Err(RtcpError::Unaligned);
        }
        if e.type_specific.len() / 4 > 255 || e.kind.to_type().is_none() {
            return Err(RtcpError::FieldOutOfRange);
        }
        fci = fci.saturating_add(8 + e.type_specific.len());
    }
    let total = (HEADER_LEN + FB_COMMON_LEN).saturating_add(fci);
    let mut c = begin(out, total, FMT_PAUSE_RESUME, PT_RTPFB)?;
    c.u32(sender.0);
    c.u32(0);
    for e in entries {
        c.u32(e.target.0);
        // Checked above: a Type value and at most 255 words.
        c.u8(e.kind.to_type().unwrap_or(0) << 4);
        c.u8((e.type_specific.len() / 4) as u8);
        c.u16(e.pause_id);
        c.put(e.type_specific);
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::super::fuzz::exercise;
    use super::*;

    /// Sender 0x11223344: PAUSE of 0xaabbccdd with PauseID 0x0102, then PAUSED of
    /// 0x01020304 with PauseID 0xfffe and one type-specific word, its Res bits set.
    /// Laid out by hand from RFC 7728 §8's figures.
    const TWO_ENTRIES: [u8; 32] = [
        0x89, 0xcd, 0x00, 0x07, // V=2 P=0 FMT=9, PT=205 (RTPFB), length 7 (32 bytes)
        0x11, 0x22, 0x33, 0x44, // SSRC of packet sender
        0x00, 0x00, 0x00, 0x00, // SSRC of media source: unused
        0xaa, 0xbb, 0xcc, 0xdd, // target SSRC
        0x00, 0x00, 0x01, 0x02, // Type 0 (PAUSE), Res 0, Parameter Len 0, PauseID 0x0102
        0x01, 0x02, 0x03, 0x04, // target SSRC
        0x2f, 0x01, 0xff, 0xfe, // Type 2 (PAUSED), Res 0xf, Parameter Len 1, PauseID
        0x00, 0x00, 0x12, 0x34, // type specific
    ];

    #[test]
    fn known_bytes() {
        let p = PauseResume::parse(&TWO_ENTRIES).unwrap();
        assert_eq!(p.sender_ssrc(), Ssrc(0x1122_3344));
        assert_eq!(p.media_ssrc(), Ssrc(0));
        let entries: Vec<_> = p.entries().collect();
        assert_eq!(
            entries,
            [
                PauseEntry {
                    target: Ssrc(0xaabb_ccdd),
                    kind: PauseKind::Pause,
                    pause_id: 0x0102,
                    type_specific: &[],
                },
                PauseEntry {
                    target: Ssrc(0x0102_0304),
                    kind: PauseKind::Paused,
                    pause_id: 0xfffe,
                    type_specific: &[0x00, 0x00, 0x12, 0x34],
                },
            ]
        );
        // In a compound it is its own variant.
        match RtcpCompound::parse(&TWO_ENTRIES).unwrap().packets().next() {
            Some(Ok(RtcpPacket::PauseResume(q))) => assert_eq!(q, p),
            other => panic!("{other:?}"),
        }
        // Written back, the bytes are the same but for the Res bits, written as 0.
        let mut buf = [0u8; 64];
        let n = write_pause_resume(&mut buf, p.sender_ssrc(), &entries).unwrap();
        let mut expected = TWO_ENTRIES;
        expected[24] = 0x20;
        assert_eq!(buf[..n], expected);
        exercise(&TWO_ENTRIES);
    }

    #[test]
    fn each_kind_writes_its_type() {
        let kinds = [
            (PauseKind::Pause, 0x00),
            (PauseKind::Resume, 0x10),
            (PauseKind::Paused, 0x20),
            (PauseKind::Refused, 0x30),
            (PauseKind::Reserved(15), 0xf0),
        ];
        for (kind, byte) in kinds {
            let mut buf = [0u8; 20];
            let e = PauseEntry {
                target: Ssrc(7),
                kind,
                pause_id: 3,
                type_specific: &[],
            };
            assert_eq!(write_pause_resume(&mut buf, Ssrc(9), &[e]), Ok(20));
            assert_eq!(
                buf,
                [
                    0x89, 0xcd, 0x00, 0x04, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 7, byte, 0, 0, 3
                ]
            );
            let back = PauseResume::parse(&buf).unwrap().entries().next().unwrap();
            assert_eq!(back, e);
        }
    }

    #[test]
    fn rejects_what_does_not_add_up() {
        // No entry at all.
        let mut p = TWO_ENTRIES[..12].to_vec();
        p[3] = 2;
        assert_eq!(PauseResume::parse(&p), Err(RtcpError::PauseBadLength));
        // An entry whose Parameter Len runs past the packet.
        let mut p = TWO_ENTRIES;
        p[25] = 2;
        assert_eq!(PauseResume::parse(&p), Err(RtcpError::PauseBadLength));
        // One whole entry is fine; one and a half is not.
        let mut q = TWO_ENTRIES[..20].to_vec();
        q[3] = 4;
        assert_eq!(PauseResume::parse(&q).map(|v| v.entries().count()), Ok(1));
        let mut r = TWO_ENTRIES[..20].to_vec();
        r.extend_from_slice(&[0x01, 0x02, 0x03, 0x04]);
        r[3] = 5;
        assert_eq!(PauseResume::parse(&r), Err(RtcpError::PauseBadLength));
        // Too short for the two SSRCs.
        assert_eq!(
            PauseResume::parse(&[0x89, 0xcd, 0x00, 0x01, 0, 0, 0, 1]),
            Err(RtcpError::FeedbackTooShort)
        );
        // Another FMT.
        let mut p = TWO_ENTRIES;
        p[0] = 0x88;
        assert_eq!(PauseResume::parse(&p), Err(RtcpError::WrongType));
    }

    #[test]
    fn writer_errors() {
        let mut buf = [0u8; 2048];
        let e = |ts| PauseEntry {
            target: Ssrc(1),
            kind: PauseKind::Resume,
            pause_id: 0,
            type_specific: ts,
        };
        assert_eq!(
            write_pause_resume(&mut buf, Ssrc(1), &[]),
            Err(RtcpError::EmptyList)
        );
        assert_eq!(
            write_pause_resume(&mut buf, Ssrc(1), &[e(&[1, 2, 3])]),
            Err(RtcpError::Unaligned)
        );
        assert_eq!(
            write_pause_resume(&mut buf, Ssrc(1), &[e(&[0; 1024])]),
            Err(RtcpError::FieldOutOfRange)
        );
        assert_eq!(
            write_pause_resume(&mut buf, Ssrc(1), &[e(&[0; 1020])]),
            Ok(12 + 8 + 1020)
        );
        let reserved = PauseEntry {
            kind: PauseKind::Reserved(16),
            ..e(&[])
        };
        assert_eq!(
            write_pause_resume(&mut buf, Ssrc(1), &[reserved]),
            Err(RtcpError::FieldOutOfRange)
        );
        assert_eq!(
            write_pause_resume(&mut buf[..19], Ssrc(1), &[e(&[])]),
            Err(RtcpError::BufferTooSmall)
        );
        let mut w = CompoundWriter::new(&mut buf);
        assert_eq!(w.pause_resume(Ssrc(1), &[e(&[0; 4])]), Ok(24));
        assert_eq!(w.pli(Ssrc(1), Ssrc(2)), Ok(12));
        let n = w.finish();
        let kinds: Vec<_> = RtcpCompound::parse(&buf[..n])
            .unwrap()
            .packets()
            .map(|p| matches!(p, Ok(RtcpPacket::PauseResume(_))))
            .collect();
        assert_eq!(kinds, [true, false]);
    }

    #[test]
    fn truncated_and_mutated_never_panic() {
        for len in 0..TWO_ENTRIES.len() {
            exercise(&TWO_ENTRIES[..len]);
            let mut p = TWO_ENTRIES[..len - len % 4].to_vec();
            if p.len() >= 4 {
                p[3] = (p.len() / 4 - 1) as u8;
                exercise(&p);
            }
        }
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..5000 {
            let mut m = TWO_ENTRIES;
            for _ in 0..3 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                // Leave the header's first two bytes, so most mutants stay PAUSE-RESUME.
                let i = 2 + (x as usize) % (m.len() - 2);
                m[i] ^= 1 << ((x >> 32) % 8);
            }
            exercise(&m);
        }
    }
}
