use super::fuzz::exercise;
use super::*;

// --- Known bytes -------------------------------------------------------------------

/// A sender report with one report block: the "valid" vector of pion/rtcp's and
/// webrtc-rs's `sender_report_test`. Their header says length 7, which neither
/// decoder checks; the 52 bytes are 12 words + 1, so the length is corrected to 12.
const SR_ONE_BLOCK: [u8; 52] = [
    0x81, 0xc8, 0x00, 0x0c, // v=2, p=0, RC=1, SR, len=12
    0x90, 0x2f, 0x9e, 0x2e, // ssrc
    0xda, 0x8b, 0xd1, 0xfc, 0xdd, 0xdd, 0xa0, 0x5a, // ntp
    0xaa, 0xf4, 0xed, 0xd5, // rtp time
    0x00, 0x00, 0x00, 0x01, // packet count
    0x00, 0x00, 0x00, 0x02, // octet count
    0xbc, 0x5e, 0x9a, 0x40, // report: ssrc
    0x00, 0x00, 0x00, 0x00, // fraction lost, cumulative lost
    0x00, 0x00, 0x46, 0xe1, // extended highest seq
    0x00, 0x00, 0x01, 0x11, // jitter
    0x09, 0xf3, 0x64, 0x32, // lsr
    0x00, 0x02, 0x4a, 0x79, // dlsr
];

/// SR (no blocks) + SDES CNAME, as Chrome sends them: webrtc-rs's "with extension"
/// vector (issue #447), which is a two-packet compound.
const SR_SDES: [u8; 56] = [
    0x80, 0xc8, 0x00, 0x06, 0x2b, 0x7e, 0xc0, 0xc5, 0xe0, 0x20, 0xa2, 0xa9, 0x52, 0xa5, 0x3f, 0xc0,
    0x2e, 0x48, 0xa5, 0x52, 0x00, 0x00, 0x00, 0x46, 0x00, 0x00, 0x12, 0x1d, 0x81, 0xca, 0x00, 0x06,
    0x2b, 0x7e, 0xc0, 0xc5, 0x01, 0x10, 0x4c, 0x63, 0x49, 0x66, 0x7a, 0x58, 0x6f, 0x6e, 0x44, 0x6f,
    0x72, 0x64, 0x53, 0x65, 0x57, 0x36, 0x00, 0x00,
];

/// RR + SDES + BYE + PLI + RRR + APP from a packet dump (pion/rtcp `realPacket`).
const DUMP: [u8; 132] = [
    // RR, RC=1
    0x81, 0xc9, 0x00, 0x07, 0x90, 0x2f, 0x9e, 0x2e, 0xbc, 0x5e, 0x9a, 0x40, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x46, 0xe1, 0x00, 0x00, 0x01, 0x11, 0x09, 0xf3, 0x64, 0x32, 0x00, 0x02, 0x4a,
    0x79, //
    // SDES, one chunk, CNAME of 38 bytes, END + padding
    0x81, 0xca, 0x00, 0x0c, 0x90, 0x2f, 0x9e, 0x2e, 0x01, 0x26, 0x7b, 0x39, 0x63, 0x30, 0x30, 0x65,
    0x62, 0x39, 0x32, 0x2d, 0x31, 0x61, 0x66, 0x62, 0x2d, 0x39, 0x64, 0x34, 0x39, 0x2d, 0x61, 0x34,
    0x37, 0x64, 0x2d, 0x39, 0x31, 0x66, 0x36, 0x34, 0x65, 0x65, 0x65, 0x36, 0x39, 0x66, 0x35, 0x7d,
    0x00, 0x00, 0x00, 0x00, //
    // BYE, one source
    0x81, 0xcb, 0x00, 0x01, 0x90, 0x2f, 0x9e, 0x2e, //
    // PLI
    0x81, 0xce, 0x00, 0x02, 0x90, 0x2f, 0x9e, 0x2e, 0x90, 0x2f, 0x9e, 0x2e, //
    // RTPFB FMT 5 (rapid resynchronisation request, RFC 6051)
    0x85, 0xcd, 0x00, 0x02, 0x90, 0x2f, 0x9e, 0x2e, 0x90, 0x2f, 0x9e, 0x2e, //
    // APP, subtype 0, name "NAME", data "ABCD"
    0x80, 0xcc, 0x00, 0x03, 0x4b, 0xaa, 0xe1, 0xab, 0x4e, 0x41, 0x4d, 0x45, 0x41, 0x42, 0x43, 0x44,
];

/// Generic NACK, PID 0xaaaa BLP 0x5555 (pion/rtcp `transport_layer_nack_test`).
const NACK: [u8; 16] = [
    0x81, 0xcd, 0x00, 0x03, 0x90, 0x2f, 0x9e, 0x2e, 0x90, 0x2f, 0x9e, 0x2e, 0xaa, 0xaa, 0x55, 0x55,
];

/// FIR with one entry (pion/rtcp `full_intra_request_test`).
const FIR: [u8; 20] = [
    0x84, 0xce, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x4b, 0xc4, 0xfc, 0xb4, 0x12, 0x34, 0x56, 0x78,
    0x42, 0x00, 0x00, 0x00,
];

/// REMB sent by Chrome watching a 6 Mb/s stream (webrtc-rs REMB test): exponent 6,
/// mantissa 139487, so 8 927 168 b/s, for SSRC 1215622422.
const REMB: [u8; 24] = [
    143, 206, 0, 5, 0, 0, 0, 1, 0, 0, 0, 0, 82, 69, 77, 66, 1, 26, 32, 223, 72, 116, 237, 22,
];

/// TMMBR laid out by hand from RFC 5104 §4.2.1.1: 1 000 000 b/s = 125 000 × 2^3
/// (the smallest exponent whose 17-bit mantissa fits), overhead 40.
const TMMBR: [u8; 20] = [
    0x83, 0xcd, 0x00, 0x04, 0x11, 0x11, 0x11, 0x11, 0x00, 0x00, 0x00, 0x00, 0x22, 0x22, 0x22, 0x22,
    0x0f, 0xd0, 0x90, 0x28,
];

/// Transport-cc vectors from pion/rtcp `transport_layer_cc_test.go` whose padding
/// count agrees with their length (the others there set P with a wrong count).
/// One run-length chunk: 1 packet, small delta 0x94 (37 ms); 1 byte of padding.
const TCC_RUN: [u8; 24] = [
    0xaf, 0xcd, 0x00, 0x05, 0xfa, 0x17, 0xfa, 0x17, 0x43, 0x03, 0x2f, 0xa0, 0x00, 0x99, 0x00, 0x01,
    0x3d, 0xe8, 0x02, 0x17, 0x20, 0x01, 0x94, 0x01,
];
/// Run-length chunk of 7 small deltas; 3 bytes of padding.
const TCC_RUN7: [u8; 32] = [
    0xaf, 0xcd, 0x00, 0x07, 0xfa, 0x17, 0xfa, 0x17, 0x19, 0x3d, 0xd8, 0xbb, 0x00, 0x04, 0x00, 0x07,
    0x10, 0x63, 0x6e, 0x01, 0x20, 0x07, 0x4c, 0x24, 0x24, 0x10, 0x0c, 0x0c, 0x10, 0x00, 0x00, 0x03,
];
/// A 2-bit status vector (5 small, 1 lost, 1 large) then a run of 48 lost, of
/// which 2 are counted; 1 byte of padding.
const TCC_VEC2_RUN: [u8; 32] = [
    0xaf, 0xcd, 0x00, 0x07, 0x9b, 0x74, 0xf6, 0x1f, 0x93, 0x71, 0xdc, 0xbc, 0x85, 0x3c, 0x00, 0x09,
    0x63, 0xf9, 0x16, 0xb3, 0xd5, 0x52, 0x00, 0x30, 0x9b, 0xaa, 0x6a, 0xaa, 0x7b, 0x01, 0x09, 0x01,
];
/// A 1-bit status vector (0xba00: received ×3, lost, received, lost ×9); 2 bytes
/// of padding.
const TCC_VEC1: [u8; 28] = [
    0xaf, 0xcd, 0x00, 0x06, 0xfa, 0x17, 0xfa, 0x17, 0x19, 0x3d, 0xd8, 0xbb, 0x00, 0x01, 0x00, 0x0e,
    0x10, 0x63, 0x6d, 0x00, 0xba, 0x00, 0x10, 0x0c, 0x0c, 0x10, 0x00, 0x02,
];
/// Two 2-bit vectors (the second with `11` symbols) of which only 2 symbols count,
/// so the second "chunk" is already the receive deltas; 1 byte of padding.
const TCC_VEC2_TWO: [u8; 28] = [
    0xaf, 0xcd, 0x00, 0x06, 0xfa, 0x17, 0xfa, 0x17, 0x19, 0x3d, 0xd8, 0xbb, 0x01, 0x74, 0x00, 0x02,
    0x45, 0xb1, 0x5a, 0x40, 0xd8, 0x00, 0xf0, 0xff, 0xd0, 0x00, 0x00, 0x01,
];
/// No packets at all, no padding.
const TCC_EMPTY: [u8; 20] = [
    0x8f, 0xcd, 0x00, 0x04, 0x9a, 0xcb, 0x04, 0x42, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00,
];
/// Run of 3 small deltas with only 1 delta byte: must be rejected.
const TCC_SHORT_SMALL: [u8; 24] = [
    0xaf, 0xcd, 0x00, 0x05, 0xfa, 0x17, 0xfa, 0x17, 0x43, 0x03, 0x2f, 0xa0, 0x00, 0x99, 0x00, 0x03,
    0x3d, 0xe8, 0x02, 0x17, 0x20, 0x03, 0x94, 0x01,
];
/// Run of 2 large deltas with only 1 delta byte: must be rejected.
const TCC_SHORT_LARGE: [u8; 24] = [
    0xaf, 0xcd, 0x00, 0x05, 0xfa, 0x17, 0xfa, 0x17, 0x43, 0x03, 0x2f, 0xa0, 0x00, 0x99, 0x00, 0x02,
    0x3d, 0xe8, 0x02, 0x17, 0x40, 0x02, 0x94, 0x01,
];

fn all_vectors() -> [&'static [u8]; 16] {
    [
        &SR_ONE_BLOCK,
        &SR_SDES,
        &DUMP,
        &NACK,
        &FIR,
        &REMB,
        &TMMBR,
        &TCC_RUN,
        &TCC_RUN7,
        &TCC_VEC2_RUN,
        &TCC_VEC1,
        &TCC_VEC2_TWO,
        &TCC_EMPTY,
        &TCC_SHORT_SMALL,
        &TCC_SHORT_LARGE,
        &COMPOUND_FOR_BENCH,
    ]
}

fn only<'a>(buf: &'a [u8]) -> RtcpPacket<'a> {
    let mut it = RtcpCompound::parse(buf).unwrap().packets();
    let p = it.next().unwrap().unwrap();
    assert!(it.next().is_none());
    p
}

fn rebuild(f: impl FnOnce(&mut [u8]) -> Result<usize, RtcpError>) -> Vec<u8> {
    let mut buf = vec![0u8; 2048];
    let n = f(&mut buf).unwrap();
    buf.truncate(n);
    buf
}

#[test]
fn sender_report_known_bytes() {
    let RtcpPacket::SenderReport(sr) = only(&SR_ONE_BLOCK) else {
        panic!()
    };
    assert_eq!(sr.ssrc(), Ssrc(0x902f9e2e));
    assert_eq!(sr.ntp(), 0xda8bd1fcdddda05a);
    assert_eq!(sr.rtp_time(), RtpTime(0xaaf4edd5));
    assert_eq!(sr.packet_count(), 1);
    assert_eq!(sr.octet_count(), 2);
    assert_eq!(sr.report_count(), 1);
    let block = ReportBlock {
        ssrc: Ssrc(0xbc5e9a40),
        fraction_lost: 0,
        cumulative_lost: 0,
        highest_seq: 0x46e1,
        jitter: 273,
        lsr: 0x9f36432,
        dlsr: 150137,
    };
    assert_eq!(sr.reports().collect::<Vec<_>>(), [block]);
    assert!(sr.profile_extension().is_empty());
    assert_eq!(sr.packet(), &SR_ONE_BLOCK);
    assert_eq!(first_ssrc(&SR_ONE_BLOCK), Ok(Ssrc(0x902f9e2e)));
    assert_eq!(SenderReport::parse(&SR_ONE_BLOCK), Ok(sr));
    assert_eq!(
        rebuild(|b| write_sr(b, &sr.sender_info(), &[block])),
        SR_ONE_BLOCK
    );
}

#[test]
fn sr_then_sdes_as_chrome_sends() {
    let c = RtcpCompound::parse(&SR_SDES).unwrap();
    let packets: Vec<_> = c.packets().map(Result::unwrap).collect();
    let [RtcpPacket::SenderReport(sr), RtcpPacket::Sdes(sdes)] = packets[..] else {
        panic!("{packets:?}")
    };
    assert_eq!(sr.ssrc(), Ssrc(0x2b7ec0c5));
    assert_eq!(sr.ntp(), 0xe020a2a952a53fc0);
    assert_eq!(sr.rtp_time(), RtpTime(0x2e48a552));
    assert_eq!((sr.packet_count(), sr.octet_count()), (70, 4637));
    assert_eq!(sr.reports().len(), 0);
    let chunk = sdes.chunks().next().unwrap();
    assert_eq!(chunk.ssrc(), Ssrc(0x2b7ec0c5));
    assert_eq!(chunk.cname(), Some(&b"LcIfzXonDordSeW6"[..]));
    assert_eq!(
        rebuild(|b| write_sdes_cname(b, Ssrc(0x2b7ec0c5), b"LcIfzXonDordSeW6")),
        SR_SDES[28..]
    );
}

#[test]
fn packet_dump_every_type() {
    let c = RtcpCompound::parse(&DUMP).unwrap();
    let raws: Vec<_> = c.raw_packets().collect();
    assert_eq!(
        raws.iter()
            .map(|r| (r.pt(), r.count(), r.bytes().len()))
            .collect::<Vec<_>>(),
        [
            (201, 1, 32),
            (202, 1, 52),
            (203, 1, 8),
            (206, 1, 12),
            (205, 5, 12),
            (204, 0, 16)
        ]
    );
    let p: Vec<_> = c.packets().map(Result::unwrap).collect();

    let RtcpPacket::ReceiverReport(rr) = p[0] else {
        panic!()
    };
    assert_eq!(rr.ssrc(), Ssrc(0x902f9e2e));
    let block = rr.reports().next().unwrap();
    assert_eq!(block.ssrc, Ssrc(0xbc5e9a40));
    assert_eq!((block.highest_seq, block.jitter), (0x46e1, 273));
    assert_eq!((block.lsr, block.dlsr), (0x9f36432, 150137));
    assert_eq!(rebuild(|b| write_rr(b, rr.ssrc(), &[block])), DUMP[..32]);

    let RtcpPacket::Sdes(sdes) = p[1] else {
        panic!()
    };
    let chunk = sdes.chunks().next().unwrap();
    let items: Vec<_> = chunk.items().collect();
    assert_eq!(
        items,
        [SdesItem {
            kind: SdesItem::CNAME,
            value: b"{9c00eb92-1afb-9d49-a47d-91f64eee69f5}"
        }]
    );
    assert_eq!(
        rebuild(|b| write_sdes_cname(b, chunk.ssrc(), items[0].value)),
        DUMP[32..84]
    );

    let RtcpPacket::Bye(bye) = p[2] else { panic!() };
    assert_eq!(bye.ssrcs().collect::<Vec<_>>(), [Ssrc(0x902f9e2e)]);
    assert_eq!(bye.reason(), None);
    assert_eq!(
        rebuild(|b| write_bye(b, &[Ssrc(0x902f9e2e)], None)),
        DUMP[84..92]
    );

    let RtcpPacket::Pli(pli) = p[3] else { panic!() };
    assert_eq!(
        (pli.sender_ssrc(), pli.media_ssrc()),
        (Ssrc(0x902f9e2e), Ssrc(0x902f9e2e))
    );
    assert_eq!(
        rebuild(|b| write_pli(b, pli.sender_ssrc(), pli.media_ssrc())),
        DUMP[92..104]
    );

    assert_eq!(
        p[4],
        RtcpPacket::Other {
            pt: PT_RTPFB,
            fmt: 5,
            body: &DUMP[108..116]
        }
    );

    let RtcpPacket::App(app) = p[5] else { panic!() };
    assert_eq!(app.subtype(), 0);
    assert_eq!(app.ssrc(), Ssrc(0x4baae1ab));
    assert_eq!(&app.name(), b"NAME");
    assert_eq!(app.data(), b"ABCD");
    assert_eq!(
        rebuild(|b| write_app(b, 0, app.ssrc(), *b"NAME", b"ABCD")),
        DUMP[116..]
    );
}

#[test]
fn nack_known_bytes() {
    let RtcpPacket::Nack(nack) = only(&NACK) else {
        panic!()
    };
    assert_eq!(nack.sender_ssrc(), Ssrc(0x902f9e2e));
    assert_eq!(nack.media_ssrc(), Ssrc(0x902f9e2e));
    let pair = NackPair {
        pid: WireSeq(0xaaaa),
        blp: 0x5555,
    };
    assert_eq!(nack.pairs().collect::<Vec<_>>(), [pair]);
    // BLP 0x5555 sets bits 0, 2, …, 14: PID + 1, PID + 3, …, PID + 15.
    let mut want = vec![WireSeq(0xaaaa)];
    want.extend((0..8).map(|i| WireSeq(0xaaaa + 1 + 2 * i)));
    assert_eq!(nack.lost().collect::<Vec<_>>(), want);
    let (s, m) = (nack.sender_ssrc(), nack.media_ssrc());
    assert_eq!(rebuild(|b| write_nack_pairs(b, s, m, &[pair])), NACK);
    assert_eq!(rebuild(|b| write_nack(b, s, m, &want)), NACK);
}

#[test]
fn nack_grouping() {
    let seqs = |v: &[u16]| v.iter().map(|&s| WireSeq(s)).collect::<Vec<_>>();
    let groups = |v: &[u16]| NackPair::group(&seqs(v)).collect::<Vec<_>>();
    let pair = |pid, blp| NackPair {
        pid: WireSeq(pid),
        blp,
    };
    assert_eq!(groups(&[]), []);
    assert_eq!(groups(&[5]), [pair(5, 0)]);
    // 16 after the PID still fits; 17 starts a new entry.
    assert_eq!(
        groups(&[1, 2, 3, 17, 18, 40]),
        [pair(1, 0b1000_0000_0000_0011), pair(18, 0), pair(40, 0)]
    );
    // Across the wrap, with a duplicate.
    assert_eq!(groups(&[65534, 65535, 65535, 0, 1]), [pair(65534, 0b111)]);
    // Out of order: still covered.
    assert_eq!(groups(&[10, 5]), [pair(10, 0), pair(5, 0)]);
    // Every number comes back out.
    let lost = seqs(&[65530, 65531, 65535, 3, 4, 20, 21, 100]);
    let expanded: Vec<_> = NackPair::group(&lost).flat_map(NackPair::lost).collect();
    assert_eq!(expanded, lost);
}

#[test]
fn fir_known_bytes() {
    let RtcpPacket::Fir(fir) = only(&FIR) else {
        panic!()
    };
    assert_eq!(fir.sender_ssrc(), Ssrc(0));
    assert_eq!(fir.media_ssrc(), Ssrc(0x4bc4fcb4));
    let entry = FirEntry {
        ssrc: Ssrc(0x12345678),
        seq_nr: 0x42,
    };
    assert_eq!(fir.entries().collect::<Vec<_>>(), [entry]);
    // Our writer puts 0 in the unused media SSRC, as RFC 5104 says.
    let mut want = FIR;
    want[8..12].fill(0);
    assert_eq!(rebuild(|b| write_fir(b, Ssrc(0), &[entry])), want);
}

#[test]
fn remb_known_bytes() {
    let RtcpPacket::Remb(remb) = only(&REMB) else {
        panic!()
    };
    assert_eq!(remb.sender_ssrc(), Ssrc(1));
    assert_eq!(remb.media_ssrc(), Ssrc(0));
    assert_eq!(remb.bitrate_bps(), 8_927_168);
    assert_eq!(remb.ssrcs().collect::<Vec<_>>(), [Ssrc(1215622422)]);
    assert_eq!(
        rebuild(|b| write_remb(b, Ssrc(1), 8_927_168, &[Ssrc(1215622422)])),
        REMB
    );
    // One less rounds down to mantissa 139486 (webrtc-rs's truncation test).
    let mut want = REMB;
    want[19] = 222;
    assert_eq!(
        rebuild(|b| write_remb(b, Ssrc(1), 8_927_167, &[Ssrc(1215622422)])),
        want
    );
    assert_eq!(Remb::parse(&want).unwrap().bitrate_bps(), 8_927_104);
}

#[test]
fn remb_extremes() {
    // Largest u64: exponent 46, mantissa all ones.
    let b = rebuild(|b| write_remb(b, Ssrc(0), u64::MAX, &[]));
    assert_eq!(b[16..20], [0, 46 << 2 | 3, 0xff, 0xff]);
    assert_eq!(Remb::parse(&b).unwrap().bitrate_bps(), 0x3_ffff << 46);
    // Exponent 63 with a full mantissa does not fit in u64: saturates.
    let max = [
        143, 206, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 82, 69, 77, 66, 0, 255, 255, 255,
    ];
    assert_eq!(Remb::parse(&max).unwrap().bitrate_bps(), u64::MAX);
    let zero = rebuild(|b| write_remb(b, Ssrc(0), 0, &[]));
    assert_eq!(Remb::parse(&zero).unwrap().bitrate_bps(), 0);
    // Small values use exponent 0.
    let small = rebuild(|b| write_remb(b, Ssrc(0), 0x3_ffff, &[]));
    assert_eq!(small[17] >> 2, 0);
    let next = rebuild(|b| write_remb(b, Ssrc(0), 0x4_0000, &[]));
    assert_eq!(next[17] >> 2, 1);
    // 256 SSRCs do not fit the 8-bit count.
    let many = [Ssrc(1); 256];
    assert_eq!(
        write_remb(&mut [0; 2048], Ssrc(0), 1, &many),
        Err(RtcpError::TooManyItems)
    );
    // An AFB that is not REMB is Other.
    let mut other = REMB;
    other[12] = b'X';
    assert!(matches!(
        only(&other),
        RtcpPacket::Other {
            pt: 206,
            fmt: 15,
            ..
        }
    ));
    assert_eq!(Remb::parse(&other), Err(RtcpError::WrongType));
}

#[test]
fn bitrate_exponent_is_the_smallest_that_fits() {
    assert_eq!(bps_to_mantissa_exp(0, 17), (0, 0));
    assert_eq!(bps_to_mantissa_exp(0x1_ffff, 17), (0x1_ffff, 0));
    assert_eq!(bps_to_mantissa_exp(0x2_0000, 17), (0x1_0000, 1));
    assert_eq!(bps_to_mantissa_exp(0x2_0001, 17), (0x1_0000, 1));
    assert_eq!(bps_to_mantissa_exp(1_000_000, 17), (125_000, 3));
    assert_eq!(bps_to_mantissa_exp(u64::MAX, 17), (0x1_ffff, 47));
    assert_eq!(bps_to_mantissa_exp(8_927_168, 18), (139_487, 6));
    assert_eq!(mantissa_exp_to_bps(0x1_ffff, 47), 0x1_ffff << 47);
    assert_eq!(mantissa_exp_to_bps(0x1_ffff, 48), u64::MAX);
    assert_eq!(mantissa_exp_to_bps(1, 63), 1 << 63);
    assert_eq!(mantissa_exp_to_bps(2, 63), u64::MAX);
    assert_eq!(mantissa_exp_to_bps(0, 63), 0);
}

#[test]
fn tmmbr_and_tmmbn() {
    let RtcpPacket::Tmmbr(t) = only(&TMMBR) else {
        panic!()
    };
    assert_eq!(t.sender_ssrc(), Ssrc(0x11111111));
    assert_eq!(t.media_ssrc(), Ssrc(0));
    let entry = TmmbEntry {
        ssrc: Ssrc(0x22222222),
        bitrate_bps: 1_000_000,
        overhead: 40,
    };
    assert_eq!(t.entries().collect::<Vec<_>>(), [entry]);
    assert_eq!(
        rebuild(|b| write_tmmbr(b, Ssrc(0x11111111), &[entry])),
        TMMBR
    );

    let two = [
        entry,
        TmmbEntry {
            ssrc: Ssrc(7),
            bitrate_bps: 123_456_789,
            overhead: 511,
        },
    ];
    let b = rebuild(|b| write_tmmbn(b, Ssrc(3), &two));
    let RtcpPacket::Tmmbn(n) = only(&b) else {
        panic!()
    };
    let got: Vec<_> = n.entries().collect();
    assert_eq!(got[0], two[0]);
    // 123456789 needs 27 bits: exponent 10, rounded down to a multiple of 1024.
    assert_eq!(got[1].bitrate_bps, 123_456_789 & !1023);
    assert_eq!(got[1].overhead, 511);
    // An empty TMMBN is a valid bounding set; an empty TMMBR is not.
    let empty = rebuild(|b| write_tmmbn(b, Ssrc(3), &[]));
    assert_eq!(Tmmbn::parse(&empty).unwrap().entries().len(), 0);
    assert_eq!(
        write_tmmbr(&mut [0; 64], Ssrc(3), &[]),
        Err(RtcpError::EmptyList)
    );
    let mut as_tmmbr = empty.clone();
    as_tmmbr[0] = 0x83;
    assert_eq!(Tmmbr::parse(&as_tmmbr), Err(RtcpError::TmmbBadLength));
    let bad = TmmbEntry {
        overhead: 512,
        ..entry
    };
    assert_eq!(
        write_tmmbr(&mut [0; 64], Ssrc(3), &[bad]),
        Err(RtcpError::FieldOutOfRange)
    );
}

// --- transport-cc ------------------------------------------------------------------

fn statuses(buf: &[u8]) -> (TransportCc<'_>, Vec<(u16, TccStatus, Option<i16>)>) {
    let RtcpPacket::TransportCc(t) = only(buf) else {
        panic!()
    };
    let v = t.statuses().map(|s| (s.seq, s.status, s.delta)).collect();
    (t, v)
}

use TccStatus::{LargeDelta as L, NotReceived as N, ReceivedWithoutDelta as R, SmallDelta as S};

#[test]
fn tcc_chunk_examples_from_the_draft() {
    // §3.1.3 example 1: run of 221 "not received".
    assert_eq!(tcc_symbol(0x00dd, 0), Some((N, 221)));
    assert_eq!(tcc_symbol(0x00dd, 220), Some((N, 221)));
    assert_eq!(tcc_symbol(0x00dd, 221), None);
    // §3.1.3 example 2: run of 24 with symbol 11.
    assert_eq!(tcc_symbol(0x6018, 23), Some((R, 24)));
    // §3.1.4 example 1: 1-bit vector 0x9f1c.
    let one_bit: Vec<_> = (0..14).map(|i| tcc_symbol(0x9f1c, i).unwrap().0).collect();
    assert_eq!(one_bit, [N, S, S, S, S, S, N, N, N, S, S, S, N, N]);
    assert_eq!(tcc_symbol(0x9f1c, 14), None);
    // §3.1.4 example 2: 2-bit vector 0xcd50.
    let two_bit: Vec<_> = (0..7).map(|i| tcc_symbol(0xcd50, i).unwrap().0).collect();
    assert_eq!(two_bit, [N, R, S, S, S, N, N]);
    assert_eq!(tcc_symbol(0xcd50, 7), None);
}

#[test]
fn tcc_run_length() {
    let (t, v) = statuses(&TCC_RUN);
    assert_eq!(t.sender_ssrc(), Ssrc(4195875351));
    assert_eq!(t.media_ssrc(), Ssrc(1124282272));
    assert_eq!(t.base_seq(), 153);
    assert_eq!(t.status_count(), 1);
    assert_eq!(t.reference_time(), 4057090);
    assert_eq!(t.reference_time_ms(), 4057090 * 64);
    assert_eq!(t.fb_pkt_count(), 23);
    // 0x94 = 148 × 250 µs = 37 ms.
    assert_eq!(v, [(153, S, Some(148))]);

    let (t, v) = statuses(&TCC_RUN7);
    assert_eq!(
        (t.base_seq(), t.reference_time(), t.fb_pkt_count()),
        (4, 1074030, 1)
    );
    // 19, 9, 9, 4, 3, 3, 4 ms.
    let d = [76, 36, 36, 16, 12, 12, 16];
    let want: Vec<_> = (0..7).map(|i| (4 + i as u16, S, Some(d[i]))).collect();
    assert_eq!(v, want);
}

#[test]
fn tcc_status_vectors() {
    let (t, v) = statuses(&TCC_VEC2_RUN);
    assert_eq!(t.sender_ssrc(), Ssrc(2608133663));
    assert_eq!(t.media_ssrc(), Ssrc(2473712828));
    assert_eq!((t.base_seq(), t.status_count()), (34108, 9));
    assert_eq!((t.reference_time(), t.fb_pkt_count()), (6551830, 179));
    // 38.75, 42.5, 26.5, 42.5, 30.75 ms small; 66.25 ms large.
    assert_eq!(
        v,
        [
            (34108, S, Some(155)),
            (34109, S, Some(170)),
            (34110, S, Some(106)),
            (34111, S, Some(170)),
            (34112, S, Some(123)),
            (34113, N, None),
            (34114, L, Some(265)),
            (34115, N, None),
            (34116, N, None),
        ]
    );

    let (t, v) = statuses(&TCC_VEC1);
    assert_eq!((t.base_seq(), t.status_count()), (1, 14));
    assert_eq!(t.reference_time(), 1074029);
    let got: Vec<_> = v.iter().map(|&(_, s, d)| (s, d)).collect();
    let mut want = vec![(S, Some(16)), (S, Some(12)), (S, Some(12)), (N, None)];
    want.push((S, Some(16)));
    want.extend([(N, None); 9]);
    assert_eq!(got, want);

    // pion expects deltas 0xd0 and 0x0000 here, reading past a second chunk that the
    // status count does not need. By the count the deltas start right after the
    // first chunk (webrtc-rs reads it the same way, see `cross_check_transport_cc`).
    let (_, v) = statuses(&TCC_VEC2_TWO);
    assert_eq!(v, [(372, S, Some(0xf0)), (373, L, Some(-48))]);

    let (t, v) = statuses(&TCC_EMPTY);
    assert_eq!((t.sender_ssrc(), t.status_count()), (Ssrc(2596996162), 0));
    assert!(v.is_empty());
}

#[test]
fn tcc_rejects_short_deltas_and_chunks() {
    fn first(b: &[u8]) -> Result<RtcpPacket<'_>, RtcpError> {
        RtcpCompound::parse(b).unwrap().packets().next().unwrap()
    }
    assert_eq!(first(&TCC_SHORT_SMALL), Err(RtcpError::TccDeltasTruncated));
    assert_eq!(first(&TCC_SHORT_LARGE), Err(RtcpError::TccDeltasTruncated));
    // Status count 3 but only one chunk covering 1 (and no room for another).
    let mut b = TCC_RUN;
    b[15] = 3;
    b[21] = 1;
    b[0] = 0x8f; // no padding: 0x94 0x01 become a chunk of run 0x1401 "small"
    assert_eq!(first(&b), Err(RtcpError::TccDeltasTruncated));
    let mut b = TCC_EMPTY;
    b[15] = 1;
    assert_eq!(first(&b), Err(RtcpError::TccChunksTruncated));
    // Empty runs are skipped.
    let mut b = TCC_RUN7.to_vec();
    b[20..22].copy_from_slice(&[0x20, 0x00]); // run of 0
    b[22..24].copy_from_slice(&[0x20, 0x07]);
    b[24..31].copy_from_slice(&[0x4c, 0x24, 0x24, 0x10, 0x0c, 0x0c, 0x10]);
    b[31] = 0x01;
    let (_, v) = statuses(&b);
    assert_eq!(v.len(), 7);
    assert_eq!(v[6], (10, S, Some(16)));
}

// --- Building ----------------------------------------------------------------------

fn block(seed: u32) -> ReportBlock {
    ReportBlock {
        ssrc: Ssrc(seed),
        fraction_lost: seed as u8,
        cumulative_lost: -(seed as i32 % 1000),
        highest_seq: seed.wrapping_mul(7),
        jitter: seed ^ 0xffff,
        lsr: seed.rotate_left(3),
        dlsr: seed.rotate_right(5),
    }
}

#[test]
fn reports_round_trip_with_signed_loss() {
    let info = SenderInfo {
        ssrc: Ssrc(9),
        ntp: 0x0123_4567_89ab_cdef,
        rtp_time: RtpTime(77),
        packet_count: 100,
        octet_count: 20_000,
    };
    let blocks: Vec<_> = (1..=31).map(block).collect();
    let b = rebuild(|b| write_sr(b, &info, &blocks));
    assert_eq!(b.len(), 28 + 24 * 31);
    let sr = SenderReport::parse(&b).unwrap();
    assert_eq!(sr.sender_info(), info);
    assert_eq!(sr.reports().collect::<Vec<_>>(), blocks);
    let b = rebuild(|b| write_rr(b, Ssrc(5), &blocks[..2]));
    let rr = ReceiverReport::parse(&b).unwrap();
    assert_eq!(rr.ssrc(), Ssrc(5));
    assert_eq!(rr.reports().collect::<Vec<_>>(), blocks[..2]);
    // Empty RR is what a receiver with nothing to report sends.
    let b = rebuild(|b| write_rr(b, Ssrc(5), &[]));
    assert_eq!(b, [0x80, 0xc9, 0, 1, 0, 0, 0, 5]);

    // Cumulative loss is 24-bit signed on the wire, clamped when written.
    let mut extreme = block(1);
    for (given, read) in [
        (-1, -1),
        (0x7f_ffff, 0x7f_ffff),
        (-0x80_0000, -0x80_0000),
        (i32::MAX, 0x7f_ffff),
        (i32::MIN, -0x80_0000),
    ] {
        extreme.cumulative_lost = given;
        let b = rebuild(|b| write_rr(b, Ssrc(5), &[extreme]));
        let got = ReceiverReport::parse(&b).unwrap().reports().next().unwrap();
        assert_eq!(got.cumulative_lost, read);
    }
    extreme.cumulative_lost = -1;
    let b = rebuild(|b| write_rr(b, Ssrc(5), &[extreme]));
    assert_eq!(b[13..16], [0xff, 0xff, 0xff]);

    assert_eq!(
        write_rr(&mut [0; 2048], Ssrc(5), &[block(1); 32]),
        Err(RtcpError::TooManyItems)
    );
}

#[test]
fn sdes_generic_items_and_layout() {
    let a = [
        SdesItem {
            kind: SdesItem::CNAME,
            value: b"abc",
        },
        SdesItem {
            kind: SdesItem::TOOL,
            value: b"bf",
        },
    ];
    let b_items = [SdesItem {
        kind: SdesItem::NOTE,
        value: b"",
    }];
    let chunks = [
        SdesChunkSpec {
            ssrc: Ssrc(1),
            items: &a,
        },
        SdesChunkSpec {
            ssrc: Ssrc(2),
            items: &[],
        },
        SdesChunkSpec {
            ssrc: Ssrc(3),
            items: &b_items,
        },
    ];
    let b = rebuild(|b| write_sdes(b, &chunks));
    #[rustfmt::skip]
    let want = [
        0x83, 0xca, 0x00, 0x08,
        0, 0, 0, 1, 1, 3, b'a', b'b', b'c', 6, 2, b'b', b'f', 0, 0, 0,
        0, 0, 0, 2, 0, 0, 0, 0,
        0, 0, 0, 3, 7, 0, 0, 0,
    ];
    assert_eq!(b, want);
    let sdes = Sdes::parse(&b).unwrap();
    assert_eq!(sdes.chunk_count(), 3);
    let got: Vec<_> = sdes
        .chunks()
        .map(|c| (c.ssrc(), c.items().collect::<Vec<_>>(), c.cname()))
        .collect();
    assert_eq!(
        got,
        [
            (Ssrc(1), a.to_vec(), Some(&b"abc"[..])),
            (Ssrc(2), vec![], None),
            (Ssrc(3), b_items.to_vec(), None),
        ]
    );
    // Items that end on a word boundary need a whole word of nulls.
    let four = [SdesItem {
        kind: 1,
        value: b"ab",
    }];
    let b = rebuild(|b| {
        write_sdes(
            b,
            &[SdesChunkSpec {
                ssrc: Ssrc(1),
                items: &four,
            }],
        )
    });
    assert_eq!(b[8..], [1, 2, b'a', b'b', 0, 0, 0, 0]);
    // Missing terminator or too few chunks.
    let mut cut = b.clone();
    cut[3] -= 1;
    cut.truncate(12);
    assert_eq!(Sdes::parse(&cut), Err(RtcpError::SdesTruncated));
    let mut more = b.clone();
    more[0] = 0x82;
    assert_eq!(Sdes::parse(&more), Err(RtcpError::SdesTruncated));

    let long = [SdesItem {
        kind: 1,
        value: &[b'x'; 256],
    }];
    let spec = [SdesChunkSpec {
        ssrc: Ssrc(1),
        items: &long,
    }];
    assert_eq!(
        write_sdes(&mut [0; 1024], &spec),
        Err(RtcpError::ItemTooLong)
    );
    let zero = [SdesItem {
        kind: 0,
        value: b"",
    }];
    let spec = [SdesChunkSpec {
        ssrc: Ssrc(1),
        items: &zero,
    }];
    assert_eq!(
        write_sdes(&mut [0; 64], &spec),
        Err(RtcpError::FieldOutOfRange)
    );
}

#[test]
fn bye_with_reason_and_app() {
    let b = rebuild(|b| write_bye(b, &[Ssrc(1), Ssrc(2)], Some(b"bye!x")));
    #[rustfmt::skip]
    assert_eq!(b, [
        0x82, 0xcb, 0, 4, 0, 0, 0, 1, 0, 0, 0, 2,
        5, b'b', b'y', b'e', b'!', b'x', 0, 0,
    ]);
    let bye = Bye::parse(&b).unwrap();
    assert_eq!(bye.ssrcs().collect::<Vec<_>>(), [Ssrc(1), Ssrc(2)]);
    assert_eq!(bye.reason(), Some(&b"bye!x"[..]));
    let mut lying = b.clone();
    lying[12] = 9;
    assert_eq!(Bye::parse(&lying), Err(RtcpError::ByeTruncated));
    let mut too_many = b.clone();
    too_many[0] = 0x86;
    assert_eq!(Bye::parse(&too_many), Err(RtcpError::ByeTruncated));
    assert_eq!(
        write_bye(&mut [0; 512], &[], Some(&[0; 256])),
        Err(RtcpError::ItemTooLong)
    );

    let b = rebuild(|b| write_app(b, 31, Ssrc(4), *b"bfld", &[1, 2, 3, 4, 5, 6, 7, 8]));
    let app = App::parse(&b).unwrap();
    assert_eq!(
        (app.subtype(), app.ssrc(), app.name()),
        (31, Ssrc(4), *b"bfld")
    );
    assert_eq!(app.data(), [1, 2, 3, 4, 5, 6, 7, 8]);
    assert_eq!(
        write_app(&mut [0; 64], 32, Ssrc(4), *b"bfld", &[]),
        Err(RtcpError::FieldOutOfRange)
    );
    assert_eq!(
        write_app(&mut [0; 64], 1, Ssrc(4), *b"bfld", &[1]),
        Err(RtcpError::Unaligned)
    );
}

/// The compound the relay's bench parses: SR (one report block) + REMB + PLI + NACK.
const COMPOUND_FOR_BENCH: [u8; 108] = [
    0x81, 0xc8, 0x00, 0x0c, 0x00, 0x00, 0x00, 0x0a, 0xe5, 0x00, 0x00, 0x00, 0x80, 0x00, 0x00, 0x00,
    0x00, 0x01, 0x5f, 0x90, 0x00, 0x00, 0x03, 0xe8, 0x00, 0x0f, 0x42, 0x40, 0x00, 0x00, 0x00, 0x14,
    0x19, 0xff, 0xff, 0xfe, 0x00, 0x01, 0x23, 0x45, 0x00, 0x00, 0x00, 0x10, 0x12, 0x34, 0x56, 0x78,
    0x00, 0x00, 0x01, 0x00, //
    0x8f, 0xce, 0x00, 0x05, 0x00, 0x00, 0x00, 0x0a, 0x00, 0x00, 0x00, 0x00, b'R', b'E', b'M', b'B',
    0x01, 0x12, 0x62, 0x5a, 0x00, 0x00, 0x00, 0x14, //
    0x81, 0xce, 0x00, 0x02, 0x00, 0x00, 0x00, 0x0a, 0x00, 0x00, 0x00, 0x14, //
    0x81, 0xcd, 0x00, 0x04, 0x00, 0x00, 0x00, 0x0a, 0x00, 0x00, 0x00, 0x14, 0x03, 0xe8, 0x80, 0x05,
    0x04, 0x00, 0x00, 0x00,
];

fn bench_parts() -> (SenderInfo, ReportBlock) {
    let info = SenderInfo {
        ssrc: Ssrc(10),
        ntp: 0xe500_0000_8000_0000,
        rtp_time: RtpTime(90_000),
        packet_count: 1000,
        octet_count: 1_000_000,
    };
    let block = ReportBlock {
        ssrc: Ssrc(20),
        fraction_lost: 25,
        cumulative_lost: -2,
        highest_seq: 0x1_2345,
        jitter: 16,
        lsr: 0x1234_5678,
        dlsr: 256,
    };
    (info, block)
}

#[test]
fn compound_sr_remb_pli_nack() {
    let (info, block) = bench_parts();
    let mut buf = [0u8; 1500];
    let mut w = CompoundWriter::new(&mut buf);
    assert!(w.is_empty());
    assert_eq!(w.sr(&info, &[block]), Ok(52));
    assert_eq!(w.remb(Ssrc(10), 2_500_000, &[Ssrc(20)]), Ok(24));
    assert_eq!(w.pli(Ssrc(10), Ssrc(20)), Ok(12));
    let lost = [1000, 1001, 1003, 1016, 1024].map(WireSeq);
    assert_eq!(w.nack(Ssrc(10), Ssrc(20), &lost), Ok(20));
    assert_eq!(w.written(), COMPOUND_FOR_BENCH);
    let len = w.finish();
    assert_eq!(len, 108);

    let c = RtcpCompound::parse(&buf[..len]).unwrap();
    assert_eq!(first_ssrc(c.as_bytes()), Ok(Ssrc(10)));
    let mut it = c.into_iter();
    let Some(Ok(RtcpPacket::SenderReport(sr))) = it.next() else {
        panic!()
    };
    assert_eq!(sr.sender_info(), info);
    assert_eq!(sr.reports().collect::<Vec<_>>(), [block]);
    let Some(Ok(RtcpPacket::Remb(remb))) = it.next() else {
        panic!()
    };
    // 2.5 Mb/s needs 22 bits: exponent 4, exact.
    assert_eq!(remb.bitrate_bps(), 2_500_000);
    assert_eq!(remb.ssrcs().collect::<Vec<_>>(), [Ssrc(20)]);
    let Some(Ok(RtcpPacket::Pli(pli))) = it.next() else {
        panic!()
    };
    assert_eq!((pli.sender_ssrc(), pli.media_ssrc()), (Ssrc(10), Ssrc(20)));
    let Some(Ok(RtcpPacket::Nack(nack))) = it.next() else {
        panic!()
    };
    assert_eq!(nack.media_ssrc(), Ssrc(20));
    assert_eq!(nack.lost().collect::<Vec<_>>(), lost);
    assert_eq!(nack.pairs().len(), 2);
    assert!(it.next().is_none());
}

#[test]
fn writer_errors_leave_it_unchanged() {
    let (info, block) = bench_parts();
    for size in 0..52 {
        let mut buf = vec![0u8; size];
        assert_eq!(
            write_sr(&mut buf, &info, &[block]),
            Err(RtcpError::BufferTooSmall),
            "{size}"
        );
    }
    let mut buf = [0u8; 60];
    let mut w = CompoundWriter::new(&mut buf);
    w.sr(&info, &[block]).unwrap();
    assert_eq!(w.pli(Ssrc(1), Ssrc(2)), Err(RtcpError::BufferTooSmall));
    assert_eq!(w.len(), 52);
    assert_eq!(w.nack(Ssrc(1), Ssrc(2), &[]), Err(RtcpError::EmptyList));
    assert_eq!(w.fir(Ssrc(1), &[]), Err(RtcpError::EmptyList));
    assert_eq!(w.bye(&[Ssrc(1)], None), Ok(8));
    assert_eq!(w.finish(), 60);
    assert!(RtcpCompound::parse(&buf).is_ok());
    // A NACK past the 16-bit length field.
    let lost: Vec<_> = (0..70_000u32).map(|i| WireSeq((i * 17) as u16)).collect();
    assert_eq!(
        write_nack(&mut vec![0; 400_000], Ssrc(1), Ssrc(2), &lost),
        Err(RtcpError::TooManyItems)
    );
}

// --- Framing and hostile input -----------------------------------------------------

#[test]
fn framing_errors() {
    assert_eq!(RtcpCompound::parse(&[]), Err(RtcpError::TooShort));
    assert_eq!(
        RtcpCompound::parse(&[0x80, 0xc9, 0]),
        Err(RtcpError::TooShort)
    );
    assert_eq!(
        RtcpCompound::parse(&[0x40, 0xc9, 0, 0]),
        Err(RtcpError::BadVersion)
    );
    assert_eq!(
        RtcpCompound::parse(&[0x80, 0xc9, 0, 1, 0, 0, 0]),
        Err(RtcpError::LengthOverrun)
    );
    // Trailing bytes that are not a packet.
    let mut v = NACK.to_vec();
    v.extend([0x80, 0xcd]);
    assert_eq!(RtcpCompound::parse(&v), Err(RtcpError::TooShort));
    assert_eq!(RawPacket::parse(&DUMP), Err(RtcpError::TrailingBytes));
    assert_eq!(Nack::parse(&FIR), Err(RtcpError::WrongType));
    assert_eq!(Pli::parse(&NACK), Err(RtcpError::WrongType));
    assert_eq!(SenderReport::parse(&DUMP[..32]), Err(RtcpError::WrongType));
    assert_eq!(first_ssrc(&NACK[..7]), Err(RtcpError::TooShort));
    assert_eq!(first_ssrc(&[0; 8]), Err(RtcpError::BadVersion));
}

#[test]
fn padding_rules() {
    // PLI with 4 bytes of padding, last in the compound.
    let mut padded = NACK[..12].to_vec();
    padded[0] = 0xa1;
    padded[1] = PT_PSFB;
    padded[3] = 3;
    padded.extend([0, 0, 0, 4]);
    let raw = RawPacket::parse(&padded).unwrap();
    assert!(raw.has_padding());
    assert_eq!(raw.body().len(), 8);
    assert!(matches!(raw.typed(), Ok(RtcpPacket::Pli(_))));
    let mut compound = DUMP.to_vec();
    compound.extend(&padded);
    assert_eq!(RtcpCompound::parse(&compound).unwrap().packets().count(), 7);
    // Padding on a packet that is not the last.
    let mut compound = padded.clone();
    compound.extend(&DUMP);
    assert_eq!(
        RtcpCompound::parse(&compound),
        Err(RtcpError::PaddingNotLast)
    );
    // Count 0, or eating into the header.
    for bad in [0, 13, 255] {
        padded[15] = bad;
        assert_eq!(
            RtcpCompound::parse(&padded),
            Err(RtcpError::BadPadding),
            "{bad}"
        );
    }
    // Padding that eats the SSRCs leaves a feedback packet too short.
    padded[15] = 12;
    let c = RtcpCompound::parse(&padded).unwrap();
    assert_eq!(c.packets().next(), Some(Err(RtcpError::FeedbackTooShort)));
}

#[test]
fn typed_minimum_sizes() {
    // Shorten each single-packet vector's length field word by word; the typed view
    // must reject it with its own reason (or still accept it where that is valid).
    let cases: [(&[u8], RtcpError); 7] = [
        (&SR_ONE_BLOCK, RtcpError::SrTooShort),
        (&DUMP[..32], RtcpError::RrTooShort),
        (&NACK, RtcpError::NackBadLength),
        (&FIR, RtcpError::FirBadLength),
        (&REMB, RtcpError::RembTooShort),
        (&TMMBR, RtcpError::TmmbBadLength),
        (&DUMP[116..], RtcpError::AppTooShort),
    ];
    for (v, err) in cases {
        for words in 0..v.len() / 4 - 1 {
            let mut p = v[..4 + 4 * words].to_vec();
            p[3] = words as u8;
            let got = RawPacket::parse(&p).unwrap().typed();
            let fb = matches!(p[1], PT_RTPFB | PT_PSFB) && words < 2;
            match got {
                Err(e) if fb => assert_eq!(e, RtcpError::FeedbackTooShort),
                Err(e) => assert_eq!(e, err, "{v:02x?} {words}"),
                // A REMB cut before its identifier is some other AFB.
                Ok(RtcpPacket::Other { .. }) if v == REMB => assert!(words < 3),
                // SSRC and name without data is a valid APP.
                Ok(RtcpPacket::App(a)) => assert!(words == 2 && a.data().is_empty()),
                Ok(p) => panic!("accepted {p:?}"),
            }
        }
    }
    // A TCC shorter than its fixed fields.
    let mut p = TCC_EMPTY[..16].to_vec();
    p[3] = 3;
    assert_eq!(
        RawPacket::parse(&p).unwrap().typed(),
        Err(RtcpError::TccTooShort)
    );
}

#[test]
fn truncation_at_every_length() {
    for v in all_vectors() {
        let boundaries: Vec<usize> = {
            let mut at = 0;
            let mut b = vec![0];
            for raw in RtcpCompound::parse(v).unwrap().raw_packets() {
                at += raw.bytes().len();
                b.push(at);
            }
            b
        };
        for len in 0..v.len() {
            let cut = &v[..len];
            let parsed = RtcpCompound::parse(cut);
            if boundaries.contains(&len) && len > 0 {
                assert!(parsed.is_ok());
            } else {
                assert!(parsed.is_err(), "{len} of {v:02x?}");
            }
            exercise(cut);
        }
        exercise(v);
    }
}

/// xorshift64*, deterministic.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn byte(&mut self) -> u8 {
        self.next() as u8
    }
}

#[test]
fn mutated_vectors_and_garbage_never_panic() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for v in all_vectors() {
        for _ in 0..2000 {
            let mut m = v.to_vec();
            for _ in 0..1 + rng.next() % 4 {
                let i = (rng.next() as usize) % m.len();
                m[i] ^= 1 << (rng.next() % 8);
            }
            exercise(&m);
        }
    }
    for _ in 0..20_000 {
        // Mostly whole words, so that the framing passes and the typed views run.
        let len = if rng.next().is_multiple_of(8) {
            (rng.next() % 96) as usize
        } else {
            4 * (rng.next() % 24) as usize
        };
        let mut m: Vec<u8> = (0..len).map(|_| rng.byte()).collect();
        if let Some(first) = m.first_mut() {
            *first = 0x80 | (*first & 0x3f);
        }
        if len > 3 {
            m[1] = 200 + (m[1] % 8);
            m[2] = 0;
            m[3] = (len / 4 - 1) as u8;
            if m[0] & 0x20 != 0 {
                m.truncate(4 * (len / 4));
            }
        }
        exercise(&m);
    }
}

// --- Cross-check with webrtc-rs `rtcp` ----------------------------------------------

mod reference {
    use rtcp::packet::Packet;

    pub(super) type Boxed = Box<dyn Packet + Send + Sync>;

    pub(super) fn marshal(p: Boxed) -> Vec<u8> {
        rtcp::packet::marshal(&[p]).unwrap().to_vec()
    }

    pub(super) fn unmarshal(b: &[u8]) -> Vec<Boxed> {
        rtcp::packet::unmarshal(&mut &b[..]).unwrap()
    }

    pub(super) fn one<T: 'static + Clone>(b: &[u8]) -> T {
        let v = unmarshal(b);
        assert_eq!(v.len(), 1);
        v[0].as_any()
            .downcast_ref::<T>()
            .expect("packet type")
            .clone()
    }
}

fn to_ref_report(b: &ReportBlock) -> rtcp::reception_report::ReceptionReport {
    rtcp::reception_report::ReceptionReport {
        ssrc: b.ssrc.0,
        fraction_lost: b.fraction_lost,
        total_lost: (b.cumulative_lost as u32) & 0xff_ffff,
        last_sequence_number: b.highest_seq,
        jitter: b.jitter,
        last_sender_report: b.lsr,
        delay: b.dlsr,
    }
}

#[test]
fn cross_check_reports() {
    use rtcp::{receiver_report::ReceiverReport as RefRr, sender_report::SenderReport as RefSr};
    let mut rng = Rng(42);
    for round in 0..50 {
        let n = (rng.next() % 5) as usize;
        let blocks: Vec<_> = (0..n).map(|_| block(rng.next() as u32)).collect();
        let info = SenderInfo {
            ssrc: Ssrc(rng.next() as u32),
            ntp: rng.next(),
            rtp_time: RtpTime(rng.next() as u32),
            packet_count: rng.next() as u32,
            octet_count: rng.next() as u32,
        };
        // Ours → theirs.
        let b = rebuild(|b| write_sr(b, &info, &blocks));
        let theirs: RefSr = reference::one(&b);
        assert_eq!(theirs.ssrc, info.ssrc.0);
        assert_eq!(theirs.ntp_time, info.ntp);
        assert_eq!(theirs.rtp_time, info.rtp_time.0);
        assert_eq!(
            (theirs.packet_count, theirs.octet_count),
            (info.packet_count, info.octet_count)
        );
        let want: Vec<_> = blocks.iter().map(to_ref_report).collect();
        assert_eq!(theirs.reports, want, "{round}");
        // Theirs → ours.
        let b = reference::marshal(Box::new(theirs));
        let sr = SenderReport::parse(&b).unwrap();
        assert_eq!(sr.sender_info(), info);
        assert_eq!(sr.reports().collect::<Vec<_>>(), blocks);

        let b = rebuild(|b| write_rr(b, info.ssrc, &blocks));
        let theirs: RefRr = reference::one(&b);
        assert_eq!(theirs.ssrc, info.ssrc.0);
        assert_eq!(theirs.reports, want);
        let b = reference::marshal(Box::new(theirs));
        let rr = ReceiverReport::parse(&b).unwrap();
        assert_eq!(rr.reports().collect::<Vec<_>>(), blocks);
    }
}

#[test]
fn cross_check_sdes_bye() {
    use rtcp::goodbye::Goodbye;
    use rtcp::source_description::{
        SdesType, SourceDescription, SourceDescriptionChunk, SourceDescriptionItem,
    };
    for cname in [
        &b""[..],
        b"a",
        b"ab",
        b"abc",
        b"abcd",
        b"user@example.org",
        &[b'z'; 255],
    ] {
        let b = rebuild(|b| write_sdes_cname(b, Ssrc(77), cname));
        let theirs: SourceDescription = reference::one(&b);
        assert_eq!(theirs.chunks.len(), 1);
        assert_eq!(theirs.chunks[0].source, 77);
        assert_eq!(theirs.chunks[0].items.len(), 1);
        assert_eq!(theirs.chunks[0].items[0].sdes_type, SdesType::SdesCname);
        assert_eq!(&theirs.chunks[0].items[0].text[..], cname);

        let theirs = SourceDescription {
            chunks: vec![
                SourceDescriptionChunk {
                    source: 5,
                    items: vec![
                        SourceDescriptionItem {
                            sdes_type: SdesType::SdesCname,
                            text: cname.to_vec().into(),
                        },
                        SourceDescriptionItem {
                            sdes_type: SdesType::SdesTool,
                            text: b"tool".to_vec().into(),
                        },
                    ],
                },
                SourceDescriptionChunk {
                    source: 6,
                    items: vec![SourceDescriptionItem {
                        sdes_type: SdesType::SdesNote,
                        text: b"n".to_vec().into(),
                    }],
                },
            ],
        };
        let b = reference::marshal(Box::new(theirs));
        let sdes = Sdes::parse(&b).unwrap();
        let got: Vec<_> = sdes
            .chunks()
            .map(|c| {
                (
                    c.ssrc(),
                    c.items()
                        .map(|i| (i.kind, i.value.to_vec()))
                        .collect::<Vec<_>>(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (Ssrc(5), vec![(1, cname.to_vec()), (6, b"tool".to_vec())]),
                (Ssrc(6), vec![(7, b"n".to_vec())]),
            ]
        );

        // BYE with the same text as reason.
        let b = rebuild(|b| write_bye(b, &[Ssrc(1), Ssrc(2)], Some(cname)));
        let theirs: Goodbye = reference::one(&b);
        assert_eq!(theirs.sources, [1, 2]);
        assert_eq!(&theirs.reason[..], cname);
        let b = reference::marshal(Box::new(theirs));
        let bye = Bye::parse(&b).unwrap();
        assert_eq!(bye.ssrcs().collect::<Vec<_>>(), [Ssrc(1), Ssrc(2)]);
        assert_eq!(bye.reason(), Some(cname));
    }
}

#[test]
fn cross_check_feedback() {
    use rtcp::payload_feedbacks::full_intra_request::{FirEntry as RefFirEntry, FullIntraRequest};
    use rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
    use rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
    use rtcp::transport_feedbacks::transport_layer_nack::{
        NackPair as RefNackPair, TransportLayerNack,
    };
    let mut rng = Rng(7);
    for _ in 0..50 {
        let (s, m) = (Ssrc(rng.next() as u32), Ssrc(rng.next() as u32));

        // NACK from a sorted loss list.
        let start = rng.next() as u16;
        let mut lost = vec![];
        let mut at = start;
        for _ in 0..1 + rng.next() % 40 {
            at = at.wrapping_add(1 + (rng.next() % 20) as u16);
            lost.push(WireSeq(at));
        }
        let b = rebuild(|b| write_nack(b, s, m, &lost));
        let theirs: TransportLayerNack = reference::one(&b);
        assert_eq!((theirs.sender_ssrc, theirs.media_ssrc), (s.0, m.0));
        let their_lost: Vec<_> = theirs
            .nacks
            .iter()
            .flat_map(|p| p.packet_list())
            .map(WireSeq)
            .collect();
        assert_eq!(their_lost, lost);
        let pairs: Vec<_> = theirs
            .nacks
            .iter()
            .map(|p| NackPair {
                pid: WireSeq(p.packet_id),
                blp: p.lost_packets,
            })
            .collect();
        let b2 = reference::marshal(Box::new(TransportLayerNack {
            sender_ssrc: s.0,
            media_ssrc: m.0,
            nacks: pairs
                .iter()
                .map(|p| RefNackPair {
                    packet_id: p.pid.0,
                    lost_packets: p.blp,
                })
                .collect(),
        }));
        assert_eq!(b2, b);
        assert_eq!(Nack::parse(&b2).unwrap().lost().collect::<Vec<_>>(), lost);

        // PLI.
        let b = rebuild(|b| write_pli(b, s, m));
        let theirs: PictureLossIndication = reference::one(&b);
        assert_eq!((theirs.sender_ssrc, theirs.media_ssrc), (s.0, m.0));
        assert_eq!(reference::marshal(Box::new(theirs)), b);

        // FIR.
        let entries: Vec<_> = (0..1 + rng.next() % 4)
            .map(|_| FirEntry {
                ssrc: Ssrc(rng.next() as u32),
                seq_nr: rng.byte(),
            })
            .collect();
        let b = rebuild(|b| write_fir(b, s, &entries));
        let theirs: FullIntraRequest = reference::one(&b);
        assert_eq!(theirs.sender_ssrc, s.0);
        let got: Vec<_> = theirs
            .fir
            .iter()
            .map(|e| FirEntry {
                ssrc: Ssrc(e.ssrc),
                seq_nr: e.sequence_number,
            })
            .collect();
        assert_eq!(got, entries);
        let b = reference::marshal(Box::new(FullIntraRequest {
            sender_ssrc: s.0,
            media_ssrc: m.0,
            fir: entries
                .iter()
                .map(|e| RefFirEntry {
                    ssrc: e.ssrc.0,
                    sequence_number: e.seq_nr,
                })
                .collect(),
        }));
        let fir = Fir::parse(&b).unwrap();
        assert_eq!((fir.sender_ssrc(), fir.media_ssrc()), (s, m));
        assert_eq!(fir.entries().collect::<Vec<_>>(), entries);

        // REMB: values an f32 holds exactly (18-bit mantissa).
        let bps = (rng.next() % 0x4_0000) << (rng.next() % 30);
        let ssrcs: Vec<_> = (0..rng.next() % 4)
            .map(|_| Ssrc(rng.next() as u32))
            .collect();
        let b = rebuild(|b| write_remb(b, s, bps, &ssrcs));
        let theirs: ReceiverEstimatedMaximumBitrate = reference::one(&b);
        assert_eq!(theirs.sender_ssrc, s.0);
        if bps != 0 {
            assert_eq!(theirs.bitrate as u64, bps);
        }
        assert_eq!(theirs.ssrcs, ssrcs.iter().map(|s| s.0).collect::<Vec<_>>());
        let b2 = reference::marshal(Box::new(theirs));
        if bps != 0 {
            assert_eq!(b2, b);
        }
        let remb = Remb::parse(&b2).unwrap();
        assert_eq!(remb.bitrate_bps(), bps);
        assert_eq!(remb.ssrcs().collect::<Vec<_>>(), ssrcs);
    }
}

#[test]
fn cross_check_transport_cc() {
    use rtcp::transport_feedbacks::transport_layer_cc::{
        PacketStatusChunk, RecvDelta, RunLengthChunk, StatusChunkTypeTcc, StatusVectorChunk,
        SymbolSizeTypeTcc, SymbolTypeTcc, TransportLayerCc,
    };
    // Their decoder on our vectors.
    for v in [
        &TCC_RUN[..],
        &TCC_RUN7,
        &TCC_VEC2_RUN,
        &TCC_VEC1,
        &TCC_VEC2_TWO,
    ] {
        let theirs: TransportLayerCc = reference::one(v);
        let (t, ours) = statuses(v);
        assert_eq!(theirs.base_sequence_number, t.base_seq());
        assert_eq!(theirs.packet_status_count, t.status_count());
        assert_eq!(theirs.reference_time as i32, t.reference_time());
        assert_eq!(theirs.fb_pkt_count, t.fb_pkt_count());
        let our_deltas: Vec<i64> = ours
            .iter()
            .filter_map(|s| s.2)
            .map(|d| i64::from(d) * 250)
            .collect();
        let their_deltas: Vec<i64> = theirs.recv_deltas.iter().map(|d| d.delta).collect();
        assert_eq!(our_deltas, their_deltas);
    }
    // Our decoder on their encoding: run of 3 small, then a 2-bit vector
    // (large, lost, small, lost, lost, large, lost), then a 1-bit vector.
    let small = |d: i64| RecvDelta {
        type_tcc_packet: SymbolTypeTcc::PacketReceivedSmallDelta,
        delta: d * 250,
    };
    let large = |d: i64| RecvDelta {
        type_tcc_packet: SymbolTypeTcc::PacketReceivedLargeDelta,
        delta: d * 250,
    };
    use SymbolTypeTcc::{
        PacketNotReceived as TN, PacketReceivedLargeDelta as TL, PacketReceivedSmallDelta as TS,
    };
    let theirs = TransportLayerCc {
        sender_ssrc: 1,
        media_ssrc: 2,
        base_sequence_number: 65534,
        packet_status_count: 3 + 7 + 14,
        reference_time: 0x80_0001,
        fb_pkt_count: 9,
        packet_chunks: vec![
            PacketStatusChunk::RunLengthChunk(RunLengthChunk {
                type_tcc: StatusChunkTypeTcc::RunLengthChunk,
                packet_status_symbol: TS,
                run_length: 3,
            }),
            PacketStatusChunk::StatusVectorChunk(StatusVectorChunk {
                type_tcc: StatusChunkTypeTcc::StatusVectorChunk,
                symbol_size: SymbolSizeTypeTcc::TwoBit,
                symbol_list: vec![TL, TN, TS, TN, TN, TL, TN],
            }),
            PacketStatusChunk::StatusVectorChunk(StatusVectorChunk {
                type_tcc: StatusChunkTypeTcc::StatusVectorChunk,
                symbol_size: SymbolSizeTypeTcc::OneBit,
                symbol_list: vec![TS, TN, TN, TN, TN, TN, TN, TN, TN, TN, TN, TN, TN, TS],
            }),
        ],
        recv_deltas: vec![
            small(0),
            small(255),
            small(7),
            large(-32768),
            small(1),
            large(32767),
            small(2),
            small(3),
        ],
    };
    let b = reference::marshal(Box::new(theirs));
    let (t, v) = statuses(&b);
    assert_eq!((t.sender_ssrc(), t.media_ssrc()), (Ssrc(1), Ssrc(2)));
    assert_eq!(t.reference_time(), -0x7f_ffff);
    assert_eq!(t.fb_pkt_count(), 9);
    let got: Vec<_> = v.iter().map(|&(_, s, d)| (s, d)).collect();
    let mut want = vec![(S, Some(0)), (S, Some(255)), (S, Some(7))];
    want.extend([
        (L, Some(-32768)),
        (N, None),
        (S, Some(1)),
        (N, None),
        (N, None),
    ]);
    want.extend([(L, Some(32767)), (N, None), (S, Some(2))]);
    want.extend([(N, None); 12]);
    want.push((S, Some(3)));
    assert_eq!(got, want);
    assert_eq!(v[0].0, 65534);
    assert_eq!(v[2].0, 0);
    assert_eq!(v[23].0, 21);
}

/// The hex line of docs/protocol.md, "Probes", that starts with `prefix`.
fn probe_doc_example(prefix: &str) -> Vec<u8> {
    let doc = include_str!("../../../../docs/protocol.md");
    let line = doc
        .lines()
        .find_map(|l| l.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no `{prefix}` line"));
    let hex: String = line.split_whitespace().collect();
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

/// The examples of docs/protocol.md, "Probes", are what the builders write and what the
/// parser reads; malformed probes are refused.
#[test]
fn probe_and_probe_report_match_the_protocol_doc() {
    let p = Probe {
        cluster: 7,
        index: 0,
        count: 5,
    };
    let b = probe_doc_example("probe:");
    assert_eq!(b, rebuild(|o| write_probe(o, Ssrc(0x0b11_dfd0), p, 24)));
    // A length is rounded up to a multiple of 4.
    assert_eq!(b, rebuild(|o| write_probe(o, Ssrc(0x0b11_dfd0), p, 22)));
    let app = App::parse(&b).unwrap();
    assert_eq!(app.probe_message(), Some(Ok(ProbeMessage::Probe(p))));
    // Index past the count, count 0, too short: malformed; another name: not ours.
    for (at, v) in [(14, 5), (15, 0)] {
        let mut bad = b.clone();
        bad[at] = v;
        let app = App::parse(&bad).unwrap();
        assert_eq!(app.probe_message(), Some(Err(RtcpError::ProbeMalformed)));
    }
    let short = rebuild(|b| write_app(b, PROBE_SUBTYPE, Ssrc(1), PROBE_NAME, &[]));
    let app = App::parse(&short).unwrap();
    assert_eq!(app.probe_message(), Some(Err(RtcpError::ProbeMalformed)));
    let other = rebuild(|b| write_app(b, 0, Ssrc(1), *b"bfld", &[0, 7, 0, 5]));
    assert_eq!(App::parse(&other).unwrap().probe_message(), None);
    let bad = Probe { index: 5, ..p };
    assert_eq!(
        write_probe(&mut [0; 64], Ssrc(1), bad, 24),
        Err(RtcpError::ProbeMalformed)
    );

    let r = ProbeReport {
        cluster: 7,
        received: 5,
        bytes: 4500,
        duration_us: 24_000,
    };
    let b = probe_doc_example("report:");
    assert_eq!(b, rebuild(|o| write_probe_report(o, Ssrc(1), &r)));
    let app = App::parse(&b).unwrap();
    assert_eq!(app.probe_message(), Some(Ok(ProbeMessage::Report(r))));
    assert_eq!(r.delivered_bps(), 1_500_000);
    // Under a millisecond counts as one.
    let instant = ProbeReport {
        duration_us: 0,
        ..r
    };
    assert_eq!(instant.delivered_bps(), 36_000_000);
}

/// Our transport-cc writer, read back by our parser and by webrtc-rs's.
#[test]
fn transport_cc_writer_round_trips() {
    use rtcp::transport_feedbacks::transport_layer_cc::TransportLayerCc;
    // Nine packets: small deltas, a loss, a reordered one (negative), a long wait.
    let arrivals = [
        Some(3),
        Some(3),
        None,
        Some(40),
        Some(30),
        Some(300),
        None,
        None,
        Some(30_000),
    ];
    let b = rebuild(|o| write_transport_cc(o, Ssrc(7), Ssrc(8), 65_534, -2, 5, &arrivals));
    // 16 fixed, two chunks, deltas 1+1+1+2+2+2, padded to 4.
    assert_eq!(b.len(), (4 + 16 + 4 + 9usize).next_multiple_of(4));
    let (t, ours) = statuses(&b);
    assert_eq!(
        (
            t.sender_ssrc(),
            t.media_ssrc(),
            t.base_seq(),
            t.status_count()
        ),
        (Ssrc(7), Ssrc(8), 65_534, 9)
    );
    assert_eq!((t.reference_time(), t.fb_pkt_count()), (-2, 5));
    let seqs: Vec<u16> = ours.iter().map(|s| s.0).collect();
    assert_eq!(seqs, [65_534, 65_535, 0, 1, 2, 3, 4, 5, 6]);
    let deltas: Vec<Option<i16>> = ours.iter().map(|s| s.2).collect();
    assert_eq!(
        deltas,
        [
            Some(3),
            Some(0),
            None,
            Some(37),
            Some(-10),
            Some(270),
            None,
            None,
            Some(29_700)
        ]
    );
    let theirs: TransportLayerCc = reference::one(&b);
    assert_eq!(theirs.packet_status_count, 9);
    let their_deltas: Vec<i64> = theirs.recv_deltas.iter().map(|d| d.delta / 250).collect();
    assert_eq!(their_deltas, [3, 0, 37, -10, 270, 29_700]);
    // A wait past ±8.19 s does not fit; nor do more than 65535 packets.
    assert_eq!(
        write_transport_cc(&mut [0; 64], Ssrc(1), Ssrc(2), 0, 0, 0, &[Some(40_000)]),
        Err(RtcpError::FieldOutOfRange)
    );
    let many = vec![None; TCC_MAX_STATUSES + 1];
    assert_eq!(
        write_transport_cc(&mut [0; 64], Ssrc(1), Ssrc(2), 0, 0, 0, &many),
        Err(RtcpError::TooManyItems)
    );
}
