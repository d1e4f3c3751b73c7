//! Every parse, accessor and builder of the module on arbitrary input.

use super::*;

// ---------------------------------------------------------------------------------------
// Fuzzing
// ---------------------------------------------------------------------------------------

/// Drives everything in this module on arbitrary input: every parse, accessor and
/// iterator, and a rebuild-and-reparse of every packet type that has a builder.
#[cfg(feature = "fuzz")]
#[doc(hidden)]
pub fn fuzz_one(data: &[u8]) {
    exercise(data);
}

#[cfg(any(test, feature = "fuzz"))]
pub(super) fn exercise(data: &[u8]) {
    let _ = first_ssrc(data);
    // Single-packet parses on the raw input must agree with the generic one.
    if let Ok(raw) = RawPacket::parse(data) {
        assert_eq!(raw.bytes(), data);
        let _ = raw.typed();
    }
    let _ = SenderReport::parse(data);
    let _ = ReceiverReport::parse(data);
    let _ = Sdes::parse(data);
    let _ = Bye::parse(data);
    let _ = App::parse(data);
    let _ = Nack::parse(data);
    let _ = Tmmbr::parse(data);
    let _ = Tmmbn::parse(data);
    let _ = TransportCc::parse(data);
    let _ = PauseResume::parse(data);
    let _ = Pli::parse(data);
    let _ = Fir::parse(data);
    let _ = Remb::parse(data);

    let Ok(compound) = RtcpCompound::parse(data) else {
        return;
    };
    assert_eq!(compound.as_bytes(), data);
    let mut total = 0;
    for raw in compound.raw_packets() {
        total += raw.bytes().len();
        assert!(raw.body().len() + 4 <= raw.bytes().len());
        let _ = (raw.has_padding(), raw.count(), raw.pt());
    }
    assert_eq!(total, data.len());

    let mut rebuilt = std::vec![0u8; 2 * data.len() + 64];
    let mut writer = CompoundWriter::new(&mut rebuilt);
    let mut rebuilt_count = 0;
    for packet in compound.packets().flatten() {
        if exercise_packet(packet, data.len() + 64, &mut writer) {
            rebuilt_count += 1;
        }
    }
    let len = writer.finish();
    if len > 0 {
        let again = RtcpCompound::parse(&rebuilt[..len]).expect("rebuilt compound parses");
        assert_eq!(again.packets().count(), rebuilt_count);
        assert!(again.packets().all(|p| p.is_ok()));
    }
}

/// Touches every accessor of `packet`, rebuilds it where a builder exists, checks the
/// rebuild parses back to the same fields, and appends it to `w`. Returns whether it
/// appended a packet.
#[cfg(any(test, feature = "fuzz"))]
pub(super) fn exercise_packet(
    packet: RtcpPacket<'_>,
    cap: usize,
    w: &mut CompoundWriter<'_>,
) -> bool {
    use std::vec::Vec;

    // A rebuild is never longer than the packet it came from.
    let mut buf = std::vec![0u8; cap];
    match packet {
        RtcpPacket::SenderReport(sr) => {
            let info = sr.sender_info();
            let reports: Vec<_> = sr.reports().collect();
            assert_eq!(reports.len(), sr.report_count());
            let _ = sr.profile_extension();
            let n = write_sr(&mut buf, &info, &reports).unwrap();
            let again = SenderReport::parse(&buf[..n]).unwrap();
            assert_eq!(again.sender_info(), info);
            assert!(again.reports().eq(reports.iter().copied()));
            assert!(again.profile_extension().is_empty());
            w.sr(&info, &reports).unwrap();
        }
        RtcpPacket::ReceiverReport(rr) => {
            let reports: Vec<_> = rr.reports().collect();
            let _ = rr.profile_extension();
            let n = write_rr(&mut buf, rr.ssrc(), &reports).unwrap();
            let again = ReceiverReport::parse(&buf[..n]).unwrap();
            assert_eq!(again.ssrc(), rr.ssrc());
            assert!(again.reports().eq(reports.iter().copied()));
            w.rr(rr.ssrc(), &reports).unwrap();
        }
        RtcpPacket::Sdes(sdes) => {
            let chunks: Vec<(Ssrc, Vec<SdesItem<'_>>)> = sdes
                .chunks()
                .map(|c| {
                    let _ = c.cname();
                    (c.ssrc(), c.items().collect())
                })
                .collect();
            assert_eq!(chunks.len(), sdes.chunk_count());
            let specs: Vec<_> = chunks
                .iter()
                .map(|(ssrc, items)| SdesChunkSpec { ssrc: *ssrc, items })
                .collect();
            let n = write_sdes(&mut buf, &specs).unwrap();
            let again = Sdes::parse(&buf[..n]).unwrap();
            assert!(
                again
                    .chunks()
                    .map(|c| (c.ssrc(), c.items().collect::<Vec<_>>()))
                    .eq(chunks.iter().cloned())
            );
            w.sdes(&specs).unwrap();
        }
        RtcpPacket::Bye(bye) => {
            let ssrcs: Vec<_> = bye.ssrcs().collect();
            let reason = bye.reason();
            let n = write_bye(&mut buf, &ssrcs, reason).unwrap();
            let again = Bye::parse(&buf[..n]).unwrap();
            assert!(again.ssrcs().eq(ssrcs.iter().copied()));
            assert_eq!(again.reason(), reason);
            w.bye(&ssrcs, reason).unwrap();
        }
        RtcpPacket::App(app) => {
            match app.probe_message() {
                Some(Ok(ProbeMessage::Probe(p))) => {
                    let n = write_probe(&mut buf, app.ssrc(), p, app.data().len() + 12).unwrap();
                    let again = App::parse(&buf[..n]).unwrap().probe_message();
                    assert_eq!(again, Some(Ok(ProbeMessage::Probe(p))));
                }
                Some(Ok(ProbeMessage::Report(r))) => {
                    let n = write_probe_report(&mut buf, app.ssrc(), &r).unwrap();
                    let again = App::parse(&buf[..n]).unwrap().probe_message();
                    assert_eq!(again, Some(Ok(ProbeMessage::Report(r))));
                    let _ = r.delivered_bps();
                }
                Some(Err(_)) | None => {}
            }
            if !app.data().len().is_multiple_of(4) {
                return false;
            }
            let n = write_app(&mut buf, app.subtype(), app.ssrc(), app.name(), app.data()).unwrap();
            let again = App::parse(&buf[..n]).unwrap();
            assert_eq!(
                (again.subtype(), again.ssrc(), again.name(), again.data()),
                (app.subtype(), app.ssrc(), app.name(), app.data())
            );
            w.app(app.subtype(), app.ssrc(), app.name(), app.data())
                .unwrap();
        }
        RtcpPacket::Nack(nack) => {
            let pairs: Vec<_> = nack.pairs().collect();
            let n =
                write_nack_pairs(&mut buf, nack.sender_ssrc(), nack.media_ssrc(), &pairs).unwrap();
            let again = Nack::parse(&buf[..n]).unwrap();
            assert_eq!(again.fci(), nack.fci());
            assert_eq!(again.sender_ssrc(), nack.sender_ssrc());
            assert_eq!(again.media_ssrc(), nack.media_ssrc());
            // Regrouping the expanded list covers exactly the same numbers, in no more
            // entries.
            let lost: Vec<_> = nack.lost().collect();
            let n = write_nack(&mut buf, nack.sender_ssrc(), nack.media_ssrc(), &lost).unwrap();
            let again = Nack::parse(&buf[..n]).unwrap();
            assert!(again.pairs().len() <= pairs.len());
            let mut a: Vec<_> = again.lost().collect();
            let mut b = lost;
            a.sort();
            a.dedup();
            b.sort();
            b.dedup();
            assert_eq!(a, b);
            w.nack_pairs(nack.sender_ssrc(), nack.media_ssrc(), &pairs)
                .unwrap();
        }
        RtcpPacket::Tmmbr(t) => {
            let entries: Vec<_> = t.entries().collect();
            let _ = (t.media_ssrc(), t.fci());
            let n = write_tmmbr(&mut buf, t.sender_ssrc(), &entries).unwrap();
            let again = Tmmbr::parse(&buf[..n]).unwrap();
            assert_eq!(again.sender_ssrc(), t.sender_ssrc());
            assert_tmmb_eq(again.entries(), &entries);
            w.tmmbr(t.sender_ssrc(), &entries).unwrap();
        }
        RtcpPacket::Tmmbn(t) => {
            let entries: Vec<_> = t.entries().collect();
            let _ = (t.media_ssrc(), t.fci());
            let n = write_tmmbn(&mut buf, t.sender_ssrc(), &entries).unwrap();
            let again = Tmmbn::parse(&buf[..n]).unwrap();
            assert_eq!(again.sender_ssrc(), t.sender_ssrc());
            assert_tmmb_eq(again.entries(), &entries);
            w.tmmbn(t.sender_ssrc(), &entries).unwrap();
        }
        RtcpPacket::TransportCc(tcc) => {
            let _ = (tcc.sender_ssrc(), tcc.media_ssrc(), tcc.fci());
            let _ = (tcc.reference_time_ms(), tcc.fb_pkt_count());
            let mut seq = tcc.base_seq();
            let mut n = 0usize;
            for s in tcc.statuses() {
                assert_eq!(s.seq, seq);
                seq = seq.wrapping_add(1);
                n += 1;
                match s.status {
                    TccStatus::SmallDelta => assert!(matches!(s.delta, Some(0..=255))),
                    TccStatus::LargeDelta => assert!(s.delta.is_some()),
                    _ => assert!(s.delta.is_none()),
                }
            }
            assert_eq!(n, usize::from(tcc.status_count()));
            assert_eq!(tcc.statuses().len(), n);
            // Rebuilt from its arrival times (our writer has no "received without a
            // delta"), it reports the same deltas.
            if tcc
                .statuses()
                .all(|s| s.status != TccStatus::ReceivedWithoutDelta)
            {
                let mut t = 0i64;
                let arrivals: Vec<Option<i64>> = tcc
                    .statuses()
                    .map(|s| {
                        t += i64::from(s.delta?);
                        Some(t)
                    })
                    .collect();
                let mut out = std::vec![0u8; 4 * n + 64];
                let len = write_transport_cc(
                    &mut out,
                    tcc.sender_ssrc(),
                    tcc.media_ssrc(),
                    tcc.base_seq(),
                    tcc.reference_time(),
                    tcc.fb_pkt_count(),
                    &arrivals,
                )
                .unwrap();
                let again = TransportCc::parse(&out[..len]).unwrap();
                assert_eq!(again.reference_time(), tcc.reference_time());
                assert!(
                    again
                        .statuses()
                        .map(|s| s.delta)
                        .eq(tcc.statuses().map(|s| s.delta))
                );
            }
            return false;
        }
        RtcpPacket::PauseResume(p) => {
            let entries: Vec<_> = p.entries().collect();
            assert!(!entries.is_empty());
            let _ = (p.media_ssrc(), p.fci());
            let n = write_pause_resume(&mut buf, p.sender_ssrc(), &entries).unwrap();
            let again = PauseResume::parse(&buf[..n]).unwrap();
            assert_eq!(again.sender_ssrc(), p.sender_ssrc());
            assert!(again.entries().eq(entries.iter().copied()));
            w.pause_resume(p.sender_ssrc(), &entries).unwrap();
        }
        RtcpPacket::Pli(pli) => {
            let _ = pli.fci();
            let n = write_pli(&mut buf, pli.sender_ssrc(), pli.media_ssrc()).unwrap();
            let again = Pli::parse(&buf[..n]).unwrap();
            assert_eq!(
                (again.sender_ssrc(), again.media_ssrc()),
                (pli.sender_ssrc(), pli.media_ssrc())
            );
            w.pli(pli.sender_ssrc(), pli.media_ssrc()).unwrap();
        }
        RtcpPacket::Fir(fir) => {
            let entries: Vec<_> = fir.entries().collect();
            let _ = fir.media_ssrc();
            let n = write_fir(&mut buf, fir.sender_ssrc(), &entries).unwrap();
            let again = Fir::parse(&buf[..n]).unwrap();
            assert_eq!(again.sender_ssrc(), fir.sender_ssrc());
            assert!(again.entries().eq(entries.iter().copied()));
            w.fir(fir.sender_ssrc(), &entries).unwrap();
        }
        RtcpPacket::Remb(remb) => {
            let ssrcs: Vec<_> = remb.ssrcs().collect();
            let bps = remb.bitrate_bps();
            let _ = (remb.media_ssrc(), remb.fci());
            let n = write_remb(&mut buf, remb.sender_ssrc(), bps, &ssrcs).unwrap();
            let again = Remb::parse(&buf[..n]).unwrap();
            assert_eq!(again.sender_ssrc(), remb.sender_ssrc());
            assert!(again.ssrcs().eq(ssrcs.iter().copied()));
            if bps != u64::MAX {
                assert_eq!(again.bitrate_bps(), bps);
            }
            w.remb(remb.sender_ssrc(), bps, &ssrcs).unwrap();
        }
        RtcpPacket::Other { pt, fmt, body } => {
            let _ = (pt, fmt, body.len());
            return false;
        }
    }
    true
}

#[cfg(any(test, feature = "fuzz"))]
pub(super) fn assert_tmmb_eq(again: TmmbEntries<'_>, entries: &[TmmbEntry]) {
    assert_eq!(again.len(), entries.len());
    for (a, e) in again.zip(entries) {
        assert_eq!((a.ssrc, a.overhead), (e.ssrc, e.overhead));
        // A saturated parse is the only value the wire cannot hold again.
        if e.bitrate_bps != u64::MAX {
            assert_eq!(a.bitrate_bps, e.bitrate_bps);
        }
    }
}
