//! Every parser, accessor, reader and the writer on arbitrary input.

use super::*;

/// Fuzz entry point: drives every parser, accessor, reader and the writer on `data`.
#[cfg(feature = "fuzz")]
#[doc(hidden)]
pub fn fuzz_one(data: &[u8]) {
    exercise(data);
}

/// Everything `fuzz_one` does; also run by the unit tests on truncated and garbage input.
#[cfg(any(test, feature = "fuzz"))]
pub(super) fn exercise(data: &[u8]) {
    exercise_writer(data);

    let parsed = RtpHeader::parse(data);
    assert_eq!(parsed.map(|h| h.header_len()), header_len(data));
    let Ok(h) = parsed else { return };

    // Every accessor.
    let _ = (h.packet(), h.padding(), h.marker(), h.payload_type());
    let _ = (h.seq(), h.timestamp(), h.ssrc(), h.payload());
    assert!(h.header_len() <= data.len());
    assert_eq!(h.payload().len(), data.len() - h.header_len());
    let csrcs: Vec<Ssrc> = (0..15).filter_map(|i| h.csrc(i)).collect();
    assert_eq!(csrcs.len(), h.csrc_count());
    if let Ok(p) = h.payload_without_padding() {
        assert!(p.len() <= h.payload().len());
        assert!(h.padding() || p.len() == h.payload().len());
    }
    assert_eq!(h.extension_profile().is_some(), h.has_extension());
    assert_eq!(h.extension_data().is_some(), h.has_extension());

    // Every element, every reader, and every reader's encoder back.
    let mut elements: Vec<(ExtId, &[u8])> = Vec::new();
    let mut malformed = false;
    for item in h.extensions() {
        match item {
            Ok((id, d)) => {
                check_readers(d);
                elements.push((id, d));
            }
            Err(_) => malformed = true,
        }
    }
    if h.extension_form().is_none() {
        assert!(elements.is_empty() && !malformed);
    }
    // The direct lookup finds what the walk finds, for every ID (present or not).
    for id in (0..=u8::MAX).map(ExtId) {
        let first = elements.iter().find(|(i, _)| *i == id).map(|(_, d)| *d);
        assert_eq!(h.extension(id), first, "{id:?}");
    }
    check_layout(data, &h, &elements);
    if malformed {
        return;
    }

    // Rebuild the header from what was parsed and check it reads back the same.
    let exts: &[(ExtId, &[u8])] = &elements;
    let fields = RtpFields {
        padding: h.padding(),
        marker: h.marker(),
        payload_type: h.payload_type(),
        seq: h.seq(),
        timestamp: h.timestamp(),
        ssrc: h.ssrc(),
        csrcs: &csrcs,
    };
    let want = encoded_header_len(&fields, exts).expect("parsed header fits the writer");
    // Dropping padding, ID-15 tails and foreign blocks, or moving to the one-byte form,
    // never makes the header longer.
    assert!(want <= h.header_len());
    let mut out = vec![0u8; want];
    assert_eq!(write_header(&mut out, &fields, exts), Ok(want));
    assert_eq!(
        write_header(&mut out[..want - 1], &fields, exts),
        Err(RtpError::BufferTooSmall)
    );
    let r = RtpHeader::parse(&out).expect("written header parses");
    assert_eq!(r.header_len(), want);
    assert_same_header(&r, &fields, exts);
}

/// A stream's [`ExtLayout`] finds what the direct lookup finds: learnt from `h`, then
/// remembered on `h` again, then on copies of it with one byte changed, in turn (an
/// element's data: still remembered; a header or padding byte: learnt afresh). It
/// looks for the ids of the first elements and one more taken from the input.
#[cfg(any(test, feature = "fuzz"))]
fn check_layout(data: &[u8], h: &RtpHeader<'_>, elements: &[(ExtId, &[u8])]) {
    let mut ids = [None; LAYOUT_IDS];
    for (slot, (id, _)) in ids.iter_mut().zip(elements) {
        *slot = Some(*id);
    }
    ids[LAYOUT_IDS - 1] = Some(ExtId(data[1] & 0x0f));
    let mut layout = ExtLayout::new(ids);
    let mut check = |h: &RtpHeader<'_>| {
        let found = layout.find(h);
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(found.get(i), id.and_then(|id| h.extension(id)), "{id:?}");
        }
    };
    check(h);
    check(h);
    let mut copy = data[..h.header_len()].to_vec();
    for at in RtpHeader::FIXED_LEN..copy.len().min(80) {
        let was = copy[at];
        copy[at] = was.wrapping_add(data[at % data.len()] | 1);
        if let Ok(m) = RtpHeader::parse(&copy) {
            check(&m);
        }
        copy[at] = was;
    }
    check(h);
}

#[cfg(any(test, feature = "fuzz"))]
pub(super) fn check_readers(d: &[u8]) {
    if let Ok(a) = audio_level(d) {
        assert_eq!(a.to_byte(), Ok(d[0]));
        assert!((-127..=0).contains(&a.dbov()));
    }
    if let Ok(f) = frame_marking(d) {
        let mut b = [0u8; 3];
        let n = f.write(&mut b).expect("read frame marking encodes");
        assert_eq!(&b[..n], d);
    }
    if let Ok(t) = abs_send_time(d) {
        assert_eq!(&t.to_bytes()[..], d);
        assert!(t.as_nanos() < 64_000_000_000);
        assert_eq!(AbsSendTime::from_duration(t.to_duration()), t);
    }
    if let Ok(s) = transport_cc_seq(d) {
        assert_eq!(&s.to_be_bytes()[..], d);
    }
}

/// Checks that a written-and-parsed header carries exactly these fields and elements.
#[cfg(any(test, feature = "fuzz"))]
pub(super) fn assert_same_header(
    r: &RtpHeader<'_>,
    fields: &RtpFields<'_>,
    exts: &[(ExtId, &[u8])],
) {
    assert_eq!(r.padding(), fields.padding);
    assert_eq!(r.marker(), fields.marker);
    assert_eq!(r.payload_type(), fields.payload_type);
    assert_eq!(r.seq(), fields.seq);
    assert_eq!(r.timestamp(), fields.timestamp);
    assert_eq!(r.ssrc(), fields.ssrc);
    assert_eq!(r.csrc_count(), fields.csrcs.len());
    for (i, c) in fields.csrcs.iter().enumerate() {
        assert_eq!(r.csrc(i), Some(*c));
    }
    assert_eq!(r.has_extension(), !exts.is_empty());
    if !exts.is_empty() {
        let one_byte = exts
            .iter()
            .all(|(id, d)| (1..=14).contains(&id.0) && (1..=16).contains(&d.len()));
        let form = if one_byte {
            ExtForm::OneByte
        } else {
            ExtForm::TwoByte
        };
        assert_eq!(r.extension_form(), Some(form));
    }
    let mut back = r.extensions();
    for want in exts {
        assert_eq!(back.next(), Some(Ok(*want)));
    }
    assert_eq!(back.next(), None);
}

/// Builds header fields and extension elements out of `data` and writes them into a
/// buffer whose size also comes from `data`, so the writer's rejections get exercised.
#[cfg(any(test, feature = "fuzz"))]
pub(super) fn exercise_writer(data: &[u8]) {
    let Some((head, mut rest)) = data.split_first_chunk::<12>() else {
        return;
    };
    const NO_EXT: (ExtId, &[u8]) = (ExtId(0), &[]);
    let csrcs_all: [Ssrc; 16] = std::array::from_fn(|i| Ssrc(i as u32 + 1));
    let fields = RtpFields {
        padding: head[0] & 0x20 != 0,
        marker: head[1] & 0x80 != 0,
        // Occasionally out of range, to exercise the rejection.
        payload_type: Pt(if head[0] & 0x40 != 0 {
            head[1]
        } else {
            head[1] & 0x7f
        }),
        seq: WireSeq(u16::from_be_bytes([head[2], head[3]])),
        timestamp: RtpTime(be32(head, 4)),
        ssrc: Ssrc(be32(head, 8)),
        csrcs: &csrcs_all[..usize::from(head[0] & 0x0f) + usize::from(head[0] & 0x80 != 0)],
    };
    let mut exts = [NO_EXT; 16];
    let mut n = 0;
    while n < exts.len() {
        let Some(([id, len], tail)) = rest.split_first_chunk::<2>().map(|(a, t)| (*a, t)) else {
            break;
        };
        let take = usize::from(len).min(tail.len());
        let (d, tail) = tail.split_at(take);
        exts[n] = (ExtId(id), d);
        n += 1;
        rest = tail;
    }
    let exts = &exts[..n];
    let room = usize::from(head[3]) * 2;
    let mut out = vec![0u8; room];
    let expected = encoded_header_len(&fields, exts);
    match write_header(&mut out, &fields, exts) {
        Ok(len) => {
            assert_eq!(expected, Ok(len));
            let r = RtpHeader::parse(&out[..len]).expect("written header parses");
            assert_eq!(r.header_len(), len);
            assert_same_header(&r, &fields, exts);
        }
        Err(RtpError::BufferTooSmall) => assert!(expected.is_ok_and(|len| len > room)),
        Err(e) => assert_eq!(expected, Err(e)),
    }
}
