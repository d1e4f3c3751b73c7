use super::fuzz::*;
use super::*;

#[test]
fn fixed_header_fields() {
    let p = [
        0x80, 0xe0, 0x12, 0x34, 0, 0, 0x10, 0, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3,
    ];
    let h = RtpHeader::parse(&p).unwrap();
    assert!(h.marker());
    assert_eq!(h.payload_type(), Pt(96));
    assert_eq!(h.seq(), WireSeq(0x1234));
    assert_eq!(h.timestamp(), RtpTime(0x1000));
    assert_eq!(h.ssrc(), Ssrc(0xdeadbeef));
    assert_eq!(h.header_len(), 12);
    assert_eq!(h.payload(), &[1, 2, 3]);
}

#[test]
fn csrc_and_extension_lengths_are_checked() {
    // CC = 1, X = 1, extension of one word.
    let mut p = vec![0x91, 96, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1];
    p.extend_from_slice(&[0, 0, 0, 9]); // CSRC 9
    p.extend_from_slice(&[0xbe, 0xde, 0, 1, 0x10, 0xff, 0, 0]);
    let h = RtpHeader::parse(&p).unwrap();
    assert_eq!(h.header_len(), 24);
    assert_eq!(h.csrc(0), Some(Ssrc(9)));
    assert_eq!(h.csrc(1), None);
    assert_eq!(RtpHeader::parse(&p[..23]).unwrap_err(), RtpError::Truncated);
    assert_eq!(RtpHeader::parse(&p[..14]).unwrap_err(), RtpError::Truncated);
    assert_eq!(RtpHeader::parse(&p[..11]).unwrap_err(), RtpError::TooShort);
    p[0] = 0x51;
    assert_eq!(RtpHeader::parse(&p).unwrap_err(), RtpError::BadVersion);
}

fn elements<'a>(h: &RtpHeader<'a>) -> Vec<Result<(ExtId, &'a [u8]), RtpError>> {
    h.extensions().collect()
}

/// RFC 8285 §4.2's one-byte example: ID L=0 with one byte, ID L=1 with two, two
/// padding bytes, ID L=3 with four; length 3. The concrete packet (IDs 1, 2, 3 and
/// its fixed header and payload) is webrtc-rs `rtp` crate's test vector for it.
const RFC8285_ONE_BYTE: [u8; 33] = [
    0x90, 0xe0, 0x69, 0x8f, 0xd9, 0xc2, 0x93, 0xda, 0x1c, 0x64, 0x27, 0x82, //
    0xbe, 0xde, 0x00, 0x03, //
    0x10, 0xaa, 0x21, 0xbb, 0xbb, 0x00, 0x00, 0x33, 0xcc, 0xcc, 0xcc, 0xcc, //
    0x98, 0x36, 0xbe, 0x88, 0x9e,
];

#[test]
fn rfc8285_one_byte_example() {
    let h = RtpHeader::parse(&RFC8285_ONE_BYTE).unwrap();
    assert_eq!(h.header_len(), 28);
    assert_eq!(h.payload(), &[0x98, 0x36, 0xbe, 0x88, 0x9e]);
    assert_eq!(h.extension_profile(), Some(0xbede));
    assert_eq!(h.extension_form(), Some(ExtForm::OneByte));
    assert_eq!(h.extension_data().unwrap().len(), 12);
    assert_eq!(
        elements(&h),
        vec![
            Ok((ExtId(1), &[0xaa][..])),
            Ok((ExtId(2), &[0xbb, 0xbb][..])),
            Ok((ExtId(3), &[0xcc, 0xcc, 0xcc, 0xcc][..])),
        ]
    );
    assert_eq!(h.extension(ExtId(2)), Some(&[0xbb, 0xbb][..]));
    assert_eq!(h.extension(ExtId(4)), None);
    assert_eq!(h.payload_type(), Pt(96));
    assert!(h.marker());
}

/// RFC 8285 §4.3's two-byte example: ID L=0, ID L=1 with one byte, one padding
/// byte, ID L=4 with four bytes; length 3. IDs and data chosen here.
fn rfc8285_two_byte(profile: u16) -> Vec<u8> {
    let mut p = vec![0x90, 96, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3];
    p.extend_from_slice(&profile.to_be_bytes());
    p.extend_from_slice(&[0x00, 0x03]);
    p.extend_from_slice(&[0x01, 0x00, 0x02, 0x01]);
    p.extend_from_slice(&[0xaa, 0x00, 0xff, 0x04]);
    p.extend_from_slice(&[0xdd, 0xde, 0xdf, 0xe0]);
    p
}

#[test]
fn rfc8285_two_byte_example() {
    for appbits in 0..16 {
        let p = rfc8285_two_byte(0x1000 | appbits);
        let h = RtpHeader::parse(&p).unwrap();
        assert_eq!(h.extension_profile(), Some(0x1000 | appbits));
        assert_eq!(h.extension_form(), Some(ExtForm::TwoByte));
        assert_eq!(
            elements(&h),
            vec![
                Ok((ExtId(1), &[][..])),
                Ok((ExtId(2), &[0xaa][..])),
                Ok((ExtId(255), &[0xdd, 0xde, 0xdf, 0xe0][..])),
            ]
        );
        assert_eq!(h.extension(ExtId(1)), Some(&[][..]));
        assert_eq!(h.extension(ExtId(255)).map(<[u8]>::len), Some(4));
    }
}

#[test]
fn one_byte_id_15_stops_parsing() {
    let p = [
        0x90, 96, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, //
        0xbe, 0xde, 0x00, 0x02, //
        0x10, 0xaa, 0xf3, 0x20, 0xbb, 0x00, 0x00, 0x00,
    ];
    let h = RtpHeader::parse(&p).unwrap();
    // The 0x20 0xbb after the ID-15 byte would be an element, but is never read.
    assert_eq!(elements(&h), vec![Ok((ExtId(1), &[0xaa][..]))]);
    assert_eq!(h.extension(ExtId(2)), None);
}

#[test]
fn one_byte_id_0_with_length_is_malformed() {
    let p = [
        0x90, 96, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, //
        0xbe, 0xde, 0x00, 0x01, //
        0x10, 0xaa, 0x05, 0x00,
    ];
    let h = RtpHeader::parse(&p).unwrap();
    assert_eq!(
        elements(&h),
        vec![
            Ok((ExtId(1), &[0xaa][..])),
            Err(RtpError::BadExtensionPadding)
        ]
    );
    assert_eq!(h.extension(ExtId(1)), Some(&[0xaa][..]));
}

#[test]
fn element_past_block_ends_with_error() {
    // One-byte: ID 2 claims 4 bytes, only 1 left in the block.
    let p = [
        0x90, 96, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, //
        0xbe, 0xde, 0x00, 0x01, //
        0x10, 0xaa, 0x23, 0xbb, //
        0xcc, 0xcc, 0xcc, // payload, not part of the block
    ];
    let h = RtpHeader::parse(&p).unwrap();
    let mut it = h.extensions();
    assert_eq!(it.next(), Some(Ok((ExtId(1), &[0xaa][..]))));
    assert_eq!(it.next(), Some(Err(RtpError::ExtensionElementTruncated)));
    assert_eq!(it.next(), None);
    assert_eq!(it.next(), None);
    assert_eq!(h.extension(ExtId(2)), None);

    // Two-byte: an ID with no room for its length byte.
    let p = [
        0x90, 96, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, //
        0x10, 0x00, 0x00, 0x01, //
        0x01, 0x01, 0xaa, 0x07,
    ];
    let h = RtpHeader::parse(&p).unwrap();
    assert_eq!(
        elements(&h),
        vec![
            Ok((ExtId(1), &[0xaa][..])),
            Err(RtpError::ExtensionElementTruncated)
        ]
    );

    // Two-byte: data runs past the block.
    let p = [
        0x90, 96, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, //
        0x10, 0x00, 0x00, 0x01, //
        0x00, 0x09, 0x03, 0xaa,
    ];
    let h = RtpHeader::parse(&p).unwrap();
    assert_eq!(elements(&h), vec![Err(RtpError::ExtensionElementTruncated)]);
}

#[test]
fn unknown_profile_and_empty_blocks_yield_nothing() {
    let p = [
        0x90, 96, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, //
        0xab, 0xcd, 0x00, 0x01, //
        0x10, 0xaa, 0x00, 0x00,
    ];
    let h = RtpHeader::parse(&p).unwrap();
    assert_eq!(h.extension_profile(), Some(0xabcd));
    assert_eq!(h.extension_form(), None);
    assert_eq!(h.extension_data(), Some(&[0x10, 0xaa, 0, 0][..]));
    assert!(elements(&h).is_empty());
    assert_eq!(h.extension(ExtId(1)), None);
    // Close to, but not, the two-byte profile: appbits are only the low four bits.
    assert_eq!(ExtForm::of_profile(0x1010), None);
    assert_eq!(ExtForm::of_profile(0x0100), None);

    // X bit with a zero-length block, and all-padding blocks.
    let p = [0x90, 96, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0xbe, 0xde, 0, 0];
    let h = RtpHeader::parse(&p).unwrap();
    assert_eq!(h.extension_data(), Some(&[][..]));
    assert!(elements(&h).is_empty());
    for profile in [0xbede_u16, 0x1000] {
        let mut p = vec![0x90, 96, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3];
        p.extend_from_slice(&profile.to_be_bytes());
        p.extend_from_slice(&[0, 2, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert!(elements(&RtpHeader::parse(&p).unwrap()).is_empty());
    }

    // No X bit.
    let h = RtpHeader::parse(&[0x80, 96, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3]).unwrap();
    assert_eq!(h.extension_profile(), None);
    assert_eq!(h.extension_data(), None);
    assert!(elements(&h).is_empty());
}

#[test]
fn extensions_after_csrcs() {
    let p = [
        0x92, 96, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, //
        0, 0, 0, 7, 0, 0, 0, 8, //
        0xbe, 0xde, 0x00, 0x01, //
        0x51, 0x12, 0x34, 0x00,
    ];
    let h = RtpHeader::parse(&p).unwrap();
    assert_eq!(h.csrc(1), Some(Ssrc(8)));
    assert_eq!(h.extension(ExtId(5)), Some(&[0x12, 0x34][..]));
    assert_eq!(transport_cc_seq(h.extension(ExtId(5)).unwrap()), Ok(0x1234));
}

#[test]
fn rfc6464_audio_level() {
    // V=1, level 0: voice at full scale (0 dBov).
    let a = audio_level(&[0x80]).unwrap();
    assert_eq!((a.voice_activity, a.level, a.dbov()), (true, 0, 0));
    // V=0, level 127: silence (-127 dBov).
    let a = audio_level(&[0x7f]).unwrap();
    assert_eq!((a.voice_activity, a.level, a.dbov()), (false, 127, -127));
    // V=1, level 42 (-42 dBov).
    let a = audio_level(&[0xaa]).unwrap();
    assert_eq!((a.voice_activity, a.level, a.dbov()), (true, 42, -42));
    assert_eq!(a.to_byte(), Ok(0xaa));
    // Two-byte form, len=1 plus a sender that padded inside the element.
    assert_eq!(audio_level(&[0x88, 0x00]).unwrap().level, 8);
    assert_eq!(audio_level(&[]), Err(RtpError::AudioLevelLen));
    let loud = AudioLevel {
        voice_activity: false,
        level: 128,
    };
    assert_eq!(loud.to_byte(), Err(RtpError::BadAudioLevel));

    // As it arrives: one-byte form, ID 1, len=0.
    let p = [
        0x90, 111, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0xbe, 0xde, 0, 1, 0x10, 0x9e, 0, 0,
    ];
    let h = RtpHeader::parse(&p).unwrap();
    let a = audio_level(h.extension(ExtId(1)).unwrap()).unwrap();
    assert_eq!((a.voice_activity, a.level), (true, 30));
}

#[test]
fn rfc9626_frame_marking_bits() {
    // Each of S E I D B on its own, most significant first.
    let flags = |f: FrameMarking| {
        [
            f.start_of_frame,
            f.end_of_frame,
            f.independent,
            f.discardable,
            f.base_layer_sync,
        ]
    };
    for bit in 0..5 {
        let f = frame_marking(&[0x80 >> bit]).unwrap();
        let mut want = [false; 5];
        want[bit] = true;
        assert_eq!(flags(f), want, "bit {bit}");
        assert_eq!(f.tid, 0);
    }
    // TID is the low three bits.
    for tid in 0..8 {
        assert_eq!(frame_marking(&[tid]).unwrap().tid, tid);
    }
    // Short form (§3.2), non-scalable keyframe start: S=1 E=0 I=1 D=0, low bits 0.
    let f = frame_marking(&[0b1010_0000]).unwrap();
    assert!(f.starts_keyframe());
    assert_eq!((f.lid, f.tl0_pic_idx), (None, None));
    // Long form (§3.1): S E I D B=0,1,0,1,1, TID 5, LID 3, TL0PICIDX 200.
    let f = frame_marking(&[0b0101_1101, 3, 200]).unwrap();
    assert_eq!(flags(f), [false, true, false, true, true]);
    assert!(!f.starts_keyframe());
    assert_eq!((f.tid, f.lid, f.tl0_pic_idx), (5, Some(3), Some(200)));
    // Long form with TL0PICIDX omitted.
    let f = frame_marking(&[0xff, 9]).unwrap();
    assert_eq!((f.tid, f.lid, f.tl0_pic_idx), (7, Some(9), None));
    let mut b = [0u8; 3];
    assert_eq!(f.write(&mut b), Ok(2));
    assert_eq!(b[..2], [0xff, 9]);
    assert_eq!(f.write(&mut b[..1]), Err(RtpError::BufferTooSmall));

    assert_eq!(frame_marking(&[]), Err(RtpError::FrameMarkingLen));
    assert_eq!(frame_marking(&[0, 0, 0, 0]), Err(RtpError::FrameMarkingLen));
    let bad_tid = FrameMarking { tid: 8, ..f };
    assert_eq!(bad_tid.write(&mut b), Err(RtpError::BadFrameMarking));
    let tl0_without_lid = FrameMarking {
        lid: None,
        tl0_pic_idx: Some(1),
        ..f
    };
    assert_eq!(
        tl0_without_lid.write(&mut b),
        Err(RtpError::BadFrameMarking)
    );
}

#[test]
fn abs_send_time_fixed_point() {
    let one_second = abs_send_time(&[0x04, 0x00, 0x00]).unwrap();
    assert_eq!(one_second, AbsSendTime(1 << 18));
    assert_eq!(one_second.to_duration(), Duration::from_secs(1));
    assert_eq!(AbsSendTime(1 << 17).as_nanos(), 500_000_000);
    // One tick is 2^-18 s = 3814.697265625 ns.
    assert_eq!(AbsSendTime(1).as_nanos(), 3814);
    // The top of the cycle: 64 s minus one tick.
    let max = abs_send_time(&[0xff, 0xff, 0xff]).unwrap();
    assert_eq!(max.0, AbsSendTime::MAX);
    assert_eq!(max.as_nanos(), 63_999_996_185);
    assert_eq!(
        AbsSendTime::from_duration(Duration::from_secs(1)),
        one_second
    );
    // Wraps every 64 s.
    assert_eq!(
        AbsSendTime::from_duration(Duration::from_millis(65_500)),
        AbsSendTime(1 << 18 | 1 << 17)
    );
    assert_eq!(AbsSendTime(0x12_3456).to_bytes(), [0x12, 0x34, 0x56]);
    assert_eq!(abs_send_time(&[1, 2]), Err(RtpError::AbsSendTimeLen));
    assert_eq!(abs_send_time(&[1, 2, 3, 4]), Err(RtpError::AbsSendTimeLen));
}

#[test]
fn transport_cc_sequence() {
    assert_eq!(transport_cc_seq(&[0x01, 0x02]), Ok(0x0102));
    assert_eq!(transport_cc_seq(&[0xff, 0xff]), Ok(0xffff));
    assert_eq!(transport_cc_seq(&[0x01]), Err(RtpError::TransportCcLen));
    assert_eq!(transport_cc_seq(&[0, 0, 0]), Err(RtpError::TransportCcLen));
}

fn fields(csrcs: &[Ssrc]) -> RtpFields<'_> {
    RtpFields {
        padding: false,
        marker: true,
        payload_type: Pt(96),
        seq: WireSeq(0x698f),
        timestamp: RtpTime(0xd9c2_93da),
        ssrc: Ssrc(0x1c64_2782),
        csrcs,
    }
}

#[test]
fn writes_rfc8285_one_byte_packet() {
    let exts: [(ExtId, &[u8]); 3] = [
        (ExtId(1), &[0xaa]),
        (ExtId(2), &[0xbb, 0xbb]),
        (ExtId(3), &[0xcc; 4]),
    ];
    let mut buf = [0xffu8; 40];
    let n = write_header(&mut buf, &fields(&[]), &exts).unwrap();
    // The RFC example minus its two inner padding bytes, padded at the end instead.
    assert_eq!(
        buf[..n],
        [
            0x90, 0xe0, 0x69, 0x8f, 0xd9, 0xc2, 0x93, 0xda, 0x1c, 0x64, 0x27, 0x82, //
            0xbe, 0xde, 0x00, 0x03, //
            0x10, 0xaa, 0x21, 0xbb, 0xbb, 0x33, 0xcc, 0xcc, 0xcc, 0xcc, 0x00, 0x00,
        ]
    );
    let h = RtpHeader::parse(&buf[..n]).unwrap();
    assert_same_header(&h, &fields(&[]), &exts);
    // The RFC packet itself reads back as the same elements.
    let rfc = RtpHeader::parse(&RFC8285_ONE_BYTE).unwrap();
    assert_same_header(&rfc, &fields(&[]), &exts);
}

#[test]
fn write_parse_round_trip() {
    let csrcs: Vec<Ssrc> = (1..=15).map(|i| Ssrc(0x0101_0101 * i)).collect();
    let long = [0x5a; 255];
    let seventeen = [7; 17];
    let cases: Vec<Vec<(ExtId, &[u8])>> = vec![
        vec![],
        vec![(ExtId(14), &[1][..])],
        vec![(ExtId(1), &[0x80 | 30][..]), (ExtId(3), &[0xe0, 1, 2][..])],
        vec![(ExtId(1), &long[..16])],
        // Two-byte form: ID 15, ID > 15, empty element, element > 16 bytes, 255 bytes.
        vec![(ExtId(15), &[1][..])],
        vec![(ExtId(200), &[1, 2][..]), (ExtId(2), &[3][..])],
        vec![(ExtId(4), &[][..])],
        vec![(ExtId(4), &seventeen[..])],
        vec![
            (ExtId(255), &long[..]),
            (ExtId(1), &[][..]),
            (ExtId(1), &[9][..]),
        ],
    ];
    for exts in &cases {
        for ncsrc in [0, 1, 15] {
            for (padding, marker) in [(false, false), (true, true)] {
                let f = RtpFields {
                    padding,
                    marker,
                    payload_type: Pt(127),
                    seq: WireSeq(0xfffe),
                    timestamp: RtpTime(u32::MAX),
                    ssrc: Ssrc(0x8000_0001),
                    csrcs: &csrcs[..ncsrc],
                };
                let len = encoded_header_len(&f, exts).unwrap();
                assert_eq!(len % 4, 0);
                let mut buf = vec![0xeeu8; len + 3];
                assert_eq!(write_header(&mut buf, &f, exts), Ok(len));
                assert_eq!(buf[len..], [0xee; 3], "wrote past the header");
                let h = RtpHeader::parse(&buf[..len]).unwrap();
                assert_eq!(h.header_len(), len);
                assert_same_header(&h, &f, exts);
                for (id, d) in exts.iter() {
                    let first = exts.iter().find(|(i, _)| i == id).unwrap().1;
                    assert_eq!(h.extension(*id), Some(first), "{d:?}");
                }
                // Too small at every length, and nothing written.
                for short in 0..len {
                    let mut small = vec![0xeeu8; short];
                    assert_eq!(
                        write_header(&mut small, &f, exts),
                        Err(RtpError::BufferTooSmall)
                    );
                    assert!(small.iter().all(|&b| b == 0xee));
                }
            }
        }
    }
}

#[test]
fn writer_rejections() {
    let sixteen = [Ssrc(0); 16];
    let mut buf = [0u8; 2048];
    assert_eq!(
        write_header(&mut buf, &fields(&sixteen), &[]),
        Err(RtpError::TooManyCsrcs)
    );
    let bad_pt = RtpFields {
        payload_type: Pt(128),
        ..fields(&[])
    };
    assert_eq!(
        write_header(&mut buf, &bad_pt, &[]),
        Err(RtpError::BadPayloadType)
    );
    assert_eq!(
        write_header(&mut buf, &fields(&[]), &[(ExtId(0), &[1][..])]),
        Err(RtpError::BadExtensionId)
    );
    let too_long = [0u8; 256];
    assert_eq!(
        write_header(&mut buf, &fields(&[]), &[(ExtId(1), &too_long[..])]),
        Err(RtpError::ExtensionTooLong)
    );
    // 65535 words is the most a block can hold: 1024 elements of 2 + 255 bytes
    // is 263168 bytes, over the 262140 limit.
    let big = [0u8; 255];
    let many: Vec<(ExtId, &[u8])> = (0..1024).map(|_| (ExtId(200), &big[..])).collect();
    assert_eq!(
        encoded_header_len(&fields(&[]), &many),
        Err(RtpError::ExtensionBlockTooLong)
    );
    let fits: Vec<(ExtId, &[u8])> = (0..1020).map(|_| (ExtId(200), &big[..])).collect();
    // 1020 elements of 257 bytes fill exactly 65535 words.
    assert_eq!(
        encoded_header_len(&fields(&[]), &fits),
        Ok(12 + 4 + 65535 * 4)
    );
}

#[test]
fn padding_is_checked() {
    let mut p = vec![0xa0, 96, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 1, 2, 3, 0, 0, 3];
    let h = RtpHeader::parse(&p).unwrap();
    assert_eq!(h.payload_without_padding(), Ok(&[1, 2, 3][..]));
    p[17] = 6; // the whole payload is padding
    assert_eq!(
        RtpHeader::parse(&p).unwrap().payload_without_padding(),
        Ok(&[][..])
    );
    p[17] = 7;
    assert_eq!(
        RtpHeader::parse(&p).unwrap().payload_without_padding(),
        Err(RtpError::PaddingOverrun)
    );
    p[17] = 0;
    assert_eq!(
        RtpHeader::parse(&p).unwrap().payload_without_padding(),
        Err(RtpError::PaddingCountZero)
    );
    assert_eq!(
        RtpHeader::parse(&p[..12])
            .unwrap()
            .payload_without_padding(),
        Err(RtpError::PaddingOverrun)
    );
    // Without the P bit the last byte is payload.
    p[0] = 0x80;
    assert_eq!(
        RtpHeader::parse(&p).unwrap().payload_without_padding(),
        Ok(&p[12..])
    );
}

fn sample_packets() -> Vec<Vec<u8>> {
    let mut v = vec![RFC8285_ONE_BYTE.to_vec(), rfc8285_two_byte(0x1003)];
    let csrcs = [Ssrc(1), Ssrc(2)];
    let exts: [(ExtId, &[u8]); 4] = [
        (ExtId(1), &[0x85]),
        (ExtId(2), &[0xa0, 1, 2]),
        (ExtId(3), &[1, 2, 3]),
        (ExtId(4), &[0, 9]),
    ];
    let mut buf = vec![0u8; 64];
    let n = write_header(&mut buf, &fields(&csrcs), &exts).unwrap();
    buf.truncate(n);
    buf.extend_from_slice(&[1, 2, 3, 0, 2]);
    buf[0] |= 0x20;
    v.push(buf);
    v
}

#[test]
fn truncation_at_every_length_never_panics() {
    for p in sample_packets() {
        let full = header_len(&p).unwrap();
        for cut in 0..=p.len() {
            let r = RtpHeader::parse(&p[..cut]);
            if cut < 12 {
                assert_eq!(r.unwrap_err(), RtpError::TooShort);
            } else if cut < full {
                assert_eq!(r.unwrap_err(), RtpError::Truncated);
            } else {
                assert_eq!(r.unwrap().header_len(), full);
            }
            exercise(&p[..cut]);
        }
    }
}

#[test]
fn garbage_never_panics() {
    // A small deterministic generator. A third of the inputs are random bytes shaped
    // like RTP with an RFC 8285 block; the rest are valid packets from the writer
    // with a few bytes of the header damaged, so both the rebuild path and the
    // malformed-element path of `exercise` are reached often.
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let (mut with_elements, mut malformed) = (0, 0);
    let noise: Vec<u8> = (0..4096).map(|_| next() as u8).collect();
    let csrcs = [Ssrc(5); 15];
    for round in 0..20_000 {
        let mut p: Vec<u8>;
        if round % 3 == 0 {
            let len = (next() % 96) as usize;
            p = (0..len).map(|_| next() as u8).collect();
            if p.len() >= 16 {
                p[0] = 0x90 | (p[0] & 0x23);
                let off = 12 + 4 * usize::from(p[0] & 0x03);
                if p.len() >= off + 4 {
                    let profile: u16 = if round % 2 == 0 { 0xbede } else { 0x100a };
                    p[off..off + 2].copy_from_slice(&profile.to_be_bytes());
                    p[off + 2] = 0;
                    p[off + 3] %= ((p.len() - off - 4) / 4 + 1) as u8;
                }
            }
        } else {
            let mut exts: Vec<(ExtId, &[u8])> = Vec::new();
            for _ in 0..next() % 6 {
                let r = next();
                let id = if r % 8 == 0 {
                    r >> 8
                } else {
                    1 + (r >> 8) % 14
                } as u8;
                let len = if r % 16 == 1 {
                    (r >> 16) % 40
                } else {
                    (r >> 16) % 5
                } as usize;
                let at = ((r >> 32) % 4000) as usize;
                exts.push((ExtId(id.max(1)), &noise[at..at + len]));
            }
            let f = RtpFields {
                padding: next() % 2 == 0,
                csrcs: &csrcs[..(next() % 3) as usize],
                ..fields(&[])
            };
            p = vec![0u8; 600];
            let n = write_header(&mut p, &f, &exts).unwrap();
            p.truncate(n + (next() % 8) as usize);
            for _ in 0..next() % 3 {
                let at = (next() as usize) % n;
                p[at] = next() as u8;
            }
        }
        exercise(&p);
        if let Ok(h) = RtpHeader::parse(&p) {
            let items: Vec<_> = h.extensions().collect();
            match items.last() {
                Some(Ok(_)) => with_elements += 1,
                Some(Err(_)) => malformed += 1,
                None => {}
            }
        }
    }
    assert!(with_elements > 5_000, "{with_elements}");
    assert!(malformed > 1_000, "{malformed}");
    for p in sample_packets() {
        for i in 0..p.len() {
            for flip in [0x01, 0x10, 0x80, 0xff] {
                let mut q = p.clone();
                q[i] ^= flip;
                exercise(&q);
            }
        }
    }
}
