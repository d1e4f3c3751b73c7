//! Wire-format views: ns per packet for what the relay does to every datagram.
//!
//! `cargo bench -p blindfold-benches --bench wire`

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::Instant;

use blindfold_relay::ice::MAX_RESPONSE_LEN;
use blindfold_relay::id::{ExtId, Pt, RtpTime, Ssrc, WireSeq};
use blindfold_relay::wire::rtcp::{RtcpCompound, RtcpPacket};
use blindfold_relay::wire::rtp::{self, RtpHeader};
use blindfold_relay::wire::stun::StunMessage;
use blindfold_relay::wire::{self, Kind};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

/// A 1200-byte video packet as a browser sends it: audio level is absent, frame
/// marking, abs-send-time and transport-cc are present in the one-byte form.
fn video_packet() -> Vec<u8> {
    let fields = rtp::RtpFields {
        padding: false,
        marker: false,
        payload_type: Pt(96),
        seq: WireSeq(4242),
        timestamp: RtpTime(90_000),
        ssrc: Ssrc(0x1234_5678),
        csrcs: &[],
    };
    let exts = [
        (ExtId(2), &[0xa0u8][..]),
        (ExtId(3), &[0x12, 0x34, 0x56][..]),
        (ExtId(5), &[0x01, 0x02][..]),
    ];
    let mut buf = vec![0u8; 1200];
    rtp::write_header(&mut buf, &fields, &exts).unwrap();
    buf
}

fn rtp_header(c: &mut Criterion) {
    let pkt = video_packet();
    let mut g = c.benchmark_group("rtp");
    g.throughput(Throughput::Elements(1));
    // What the forwarder reads from every media packet: class, SSRC, sequence number.
    g.bench_function("header_view", |b| {
        b.iter(|| {
            let d = black_box(&pkt[..]);
            let h = RtpHeader::parse(d).unwrap();
            (
                wire::classify(d) == Kind::Rtp,
                h.ssrc(),
                h.seq(),
                h.marker(),
            )
        })
    });
    // Plus the frame-marking lookup the keyframe detection needs.
    g.bench_function("header_view_and_frame_marking", |b| {
        b.iter(|| {
            let h = RtpHeader::parse(black_box(&pkt[..])).unwrap();
            let fm = h.extension(ExtId(2)).map(rtp::frame_marking);
            (h.ssrc(), fm)
        })
    });
    g.finish();
}

#[allow(clippy::disallowed_methods)] // one arbitrary origin for the sans-IO agent's clock
fn stun_check(c: &mut Criterion) {
    let now = Instant::now();
    let (mut agent, key) = blindfold_tests::fixtures::binding_check_agent(now);
    let mut req = [0u8; 200];
    let len = blindfold_tests::fixtures::write_binding_check(&mut req, &key).unwrap();
    let from: SocketAddr = "192.0.2.7:40000".parse().unwrap();
    let mut resp = [0u8; MAX_RESPONSE_LEN];
    let mut g = c.benchmark_group("stun");
    g.throughput(Throughput::Elements(1));
    // One ICE connectivity check as the relay handles it: parse, then the session's
    // agent checks fingerprint and integrity and writes the answer.
    g.bench_function("binding_check_and_answer", |b| {
        b.iter(|| {
            let m = StunMessage::parse(black_box(&req[..len])).unwrap();
            agent.handle_binding(now, from, &m, &mut resp)
        })
    });
    g.finish();
}

criterion_group!(benches, rtp_header, stun_check);

/// SR (one report block) + REMB + PLI + NACK, as a receiver's feedback compound.
fn feedback_compound() -> Vec<u8> {
    let mut buf = vec![0u8; 1500];
    let n = blindfold_tests::fixtures::write_feedback_compound(&mut buf).unwrap();
    buf.truncate(n);
    buf
}

fn rtcp_compound(c: &mut Criterion) {
    let pkt = feedback_compound();
    let mut g = c.benchmark_group("rtcp");
    g.throughput(Throughput::Elements(1));
    // Parse: check the framing, then build each packet's typed view (which checks its
    // own sizes).
    g.bench_function("compound_sr_remb_pli_nack", |b| {
        b.iter(|| {
            let mut n = 0usize;
            for p in RtcpCompound::parse(black_box(&pkt[..])).unwrap() {
                n += black_box(p.is_ok()) as usize;
            }
            n
        })
    });
    // Parse and read what the relay acts on from each packet, expanding every NACK bit.
    g.bench_function("compound_sr_remb_pli_nack_and_read", |b| {
        b.iter(|| {
            let mut acc = 0u64;
            for p in RtcpCompound::parse(black_box(&pkt[..])).unwrap() {
                acc += match p.unwrap() {
                    RtcpPacket::SenderReport(sr) => sr.ntp() ^ u64::from(sr.ssrc().0),
                    RtcpPacket::Remb(r) => r.bitrate_bps(),
                    RtcpPacket::Pli(p) => u64::from(p.media_ssrc().0),
                    RtcpPacket::Nack(n) => n.lost().map(|s| u64::from(s.0)).sum(),
                    _ => 0,
                };
            }
            acc
        })
    });
    g.finish();
}

criterion_group!(rtcp_benches, rtcp_compound);
criterion_main!(benches, rtcp_benches);
