//! Tests of the synthetic media sources and receive-side measurement: the probe format,
//! the sources' sizes, timing and extensions, the receiver's counters. The run end to end
//! through the relay engine is in the workspace's `tests/tests/media_sim.rs`.

// Tests choose an arbitrary base instant; everything after it is simulated.
#![allow(clippy::disallowed_methods)]

use std::time::{Duration, Instant};

use blindfold_relay::control::ExtmapIds;
use blindfold_relay::id::{ExtId, Ssrc};
use blindfold_relay::wire::rtp::{self, abs_send_time, audio_level, frame_marking};

use crate::measure::{Arrival, IntegrityError, LatencyHistogram, REORDER_WINDOW};
use crate::source::{
    DriverError, ExtList, MAX_PAYLOAD, MAX_REQUESTED_KEYFRAMES_PER_SECOND, PROBE_LEN,
    PROBE_VERSION, ProbeError,
};
use crate::*;

const MS: Duration = Duration::from_millis(1);

fn extmap() -> ExtmapIds {
    ExtmapIds {
        audio_level: Some(ExtId(1)),
        frame_marking: Some(ExtId(2)),
        abs_send_time: Some(ExtId(3)),
        transport_cc: Some(ExtId(5)),
    }
}

fn probe() -> Probe {
    Probe {
        sender: SenderId(0x0102_0304_0506_0708),
        stream: Ssrc(0xdead_beef),
        seq: 0x1112_1314_1516_1718,
        send_time_ns: 0x2122_2324_2526_2728,
        keyframe: true,
    }
}

fn encoded(len: usize) -> Vec<u8> {
    let mut buf: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
    probe().encode_into(&mut buf).unwrap();
    buf
}

// --- probe ------------------------------------------------------------------------------

#[test]
fn probe_round_trips_with_documented_layout() {
    let buf = encoded(100);
    assert_eq!(&buf[..4], b"BFP\x01");
    assert_eq!(&buf[4..12], &[1, 2, 3, 4, 5, 6, 7, 8]);
    assert_eq!(&buf[12..16], &[0xde, 0xad, 0xbe, 0xef]);
    assert_eq!(&buf[16..24], &0x1112_1314_1516_1718u64.to_be_bytes());
    assert_eq!(&buf[24..32], &0x2122_2324_2526_2728u64.to_be_bytes());
    assert_eq!(&buf[32..34], &[0, 100]);
    assert_eq!(&buf[34..36], &[1, 0]);
    let mut crc = crc32fast::Hasher::new();
    crc.update(&buf[..36]);
    crc.update(&buf[40..]);
    assert_eq!(&buf[36..40], &crc.finalize().to_be_bytes());
    // The filler is left as it was.
    assert!((40..100).all(|i| buf[i] == (i * 7) as u8));
    assert_eq!(Probe::decode(&buf), Ok(probe()));

    // Smallest and largest payloads.
    assert_eq!(Probe::decode(&encoded(PROBE_LEN)), Ok(probe()));
    assert_eq!(Probe::decode(&encoded(65535)), Ok(probe()));
    let plain = Probe {
        keyframe: false,
        ..probe()
    };
    let mut b = vec![0; 60];
    plain.encode_into(&mut b).unwrap();
    assert_eq!(Probe::decode(&b), Ok(plain));
}

#[test]
fn probe_encode_rejects_bad_buffer_lengths() {
    for len in [0, 1, PROBE_LEN - 1, 65536] {
        assert_eq!(
            probe().encode_into(&mut vec![0; len]),
            Err(ProbeError::BadBufferLength),
            "{len}"
        );
    }
}

#[test]
fn probe_truncated_at_every_length_is_rejected() {
    let buf = encoded(200);
    for n in 0..buf.len() {
        let e = Probe::decode(&buf[..n]).unwrap_err();
        if n < PROBE_LEN {
            assert_eq!(e, ProbeError::Truncated, "{n}");
        } else {
            assert_eq!(
                e,
                ProbeError::LengthMismatch {
                    declared: 200,
                    actual: n
                },
                "{n}"
            );
        }
    }
    // Extended by a byte too.
    let mut longer = buf.clone();
    longer.push(0);
    assert!(matches!(
        Probe::decode(&longer),
        Err(ProbeError::LengthMismatch { .. })
    ));
}

#[test]
fn probe_corruption_of_every_bit_is_detected() {
    let buf = encoded(120);
    for i in 0..buf.len() {
        for bit in 0..8 {
            let mut c = buf.clone();
            c[i] ^= 1 << bit;
            let e = Probe::decode(&c).unwrap_err();
            let want = match i {
                0..=2 => ProbeError::BadMagic,
                3 => ProbeError::UnsupportedVersion(PROBE_VERSION ^ (1 << bit)),
                32 | 33 => ProbeError::LengthMismatch {
                    declared: u16::from_be_bytes([c[32], c[33]]),
                    actual: 120,
                },
                34 if bit > 0 => ProbeError::ReservedBits,
                35 => ProbeError::ReservedBits,
                _ => ProbeError::Checksum,
            };
            assert_eq!(e, want, "byte {i} bit {bit}");
        }
    }
    // Garbage of every length never panics and never decodes.
    let mut x = 0x1234_5678u32;
    for len in 0..300 {
        let g: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        assert!(Probe::decode(&g).is_err());
    }
}

// --- sources ----------------------------------------------------------------------------

fn audio_source(t0: Instant) -> MediaSource {
    MediaSource::new(
        SourceConfig::audio(SenderId(7), Ssrc(1000), extmap(), t0, 99),
        t0,
    )
}

fn video_source(layer: VideoLayer, t0: Instant) -> MediaSource {
    MediaSource::new(
        SourceConfig::video(layer, SenderId(7), Ssrc(1002), extmap(), t0, 99),
        t0,
    )
}

/// One packet a source produced, owned.
#[derive(Debug, Clone)]
struct Pkt {
    at: Instant,
    marker: bool,
    ts: u32,
    ext: ExtList,
    payload: Vec<u8>,
}

/// Polls `src` in simulated time from `t0` to `t0 + dur` (exclusive), waking exactly at
/// each `poll_timeout`.
fn run_source(src: &mut MediaSource, t0: Instant, dur: Duration) -> Vec<Pkt> {
    let end = t0 + dur;
    let mut out = Vec::new();
    let mut now = t0;
    while now < end {
        while let Some(o) = src.poll(now) {
            out.push(Pkt {
                at: now,
                marker: o.marker,
                ts: o.timestamp.0,
                ext: o.extensions,
                payload: o.payload.to_vec(),
            });
        }
        let next = src.poll_timeout();
        assert!(next > now, "poll returned None while due");
        now = next;
    }
    out
}

#[test]
fn audio_is_50_pps_with_sizes_levels_and_talkspurt_markers() {
    let t0 = Instant::now();
    let mut src = audio_source(t0);
    let pkts = run_source(&mut src, t0, Duration::from_secs(10));
    assert_eq!(pkts.len(), 500);
    let mut voiced = 0;
    let mut prev_voice = false;
    for (i, p) in pkts.iter().enumerate() {
        assert_eq!(p.at, t0 + 20 * MS * i as u32);
        assert!((60..=160).contains(&p.payload.len()), "{}", p.payload.len());
        assert_eq!(p.ts, pkts[0].ts.wrapping_add(960 * i as u32));
        let level = audio_level(p.ext.get(ExtId(1)).unwrap()).unwrap();
        let pr = Probe::decode(&p.payload).unwrap();
        assert_eq!(
            (pr.sender, pr.stream, pr.seq, pr.keyframe),
            (SenderId(7), Ssrc(1000), i as u64, false)
        );
        assert_eq!(pr.send_time_ns, (20 * MS * i as u32).as_nanos() as u64);
        let ast = abs_send_time(p.ext.get(ExtId(3)).unwrap()).unwrap();
        assert_eq!(
            ast,
            rtp::AbsSendTime::from_duration(20 * MS * i as u32),
            "{i}"
        );
        if level.voice_activity {
            voiced += 1;
            assert!(level.level <= 45 && p.payload.len() >= 100);
        } else {
            assert!(level.level >= 90 && p.payload.len() <= 80);
        }
        // The marker is set exactly on the first packet of each talkspurt.
        assert_eq!(p.marker, level.voice_activity && !prev_voice, "{i}");
        prev_voice = level.voice_activity;
        assert!(p.ext.get(ExtId(2)).is_none());
    }
    assert!(pkts[0].marker);
    // Both talk and silence occur, several talkspurts in 10 s.
    assert!((100..450).contains(&voiced), "{voiced}");
    assert!(pkts.iter().filter(|p| p.marker).count() >= 2);
    assert_eq!(src.stats().packets, 500);
    let bps = src.stats().bytes as f64 * 8.0 / 10.0;
    let target = SourceKind::Audio.target_bps() as f64;
    assert!((bps - target).abs() <= target * 0.1, "{bps}");
}

struct FrameCheck {
    frames: usize,
    keyframes: Vec<usize>,
    bytes: usize,
}

/// Checks packetization and frame marking; returns per-frame facts.
fn check_frames(pkts: &[Pkt], fps: u32, t0: Instant) -> FrameCheck {
    let mut frames = 0;
    let mut keyframes = Vec::new();
    let mut bytes = 0;
    let mut i = 0;
    while i < pkts.len() {
        let first = &pkts[i];
        let fm0 = frame_marking(first.ext.get(ExtId(2)).unwrap()).unwrap();
        assert!(fm0.start_of_frame, "packet {i} should start a frame");
        let mut j = i;
        loop {
            let p = &pkts[j];
            let fm = frame_marking(p.ext.get(ExtId(2)).unwrap()).unwrap();
            assert!(p.payload.len() <= MAX_PAYLOAD && p.payload.len() >= PROBE_LEN);
            assert_eq!(fm.start_of_frame, j == i);
            assert_eq!(fm.independent, fm0.independent);
            assert_eq!((fm.tid, fm.lid, fm.discardable), (0, None, false));
            assert_eq!(p.ts, first.ts);
            assert_eq!(p.at, first.at);
            assert_eq!(p.marker, fm.end_of_frame);
            let pr = Probe::decode(&p.payload).unwrap();
            assert_eq!(pr.keyframe, fm.independent);
            assert!(p.ext.get(ExtId(1)).is_none());
            bytes += p.payload.len();
            if fm.end_of_frame {
                break;
            }
            j += 1;
        }
        let step = 90_000 / fps;
        assert_eq!(first.ts, pkts[0].ts.wrapping_add(step * frames as u32));
        let due = t0 + Duration::from_nanos(frames as u64 * 1_000_000_000 / u64::from(fps));
        assert_eq!(first.at, due);
        if fm0.independent {
            keyframes.push(frames);
        }
        frames += 1;
        i = j + 1;
    }
    FrameCheck {
        frames,
        keyframes,
        bytes,
    }
}

#[test]
fn full_video_is_30_fps_1_5_mbps_in_packets_of_at_most_1200() {
    let t0 = Instant::now();
    let mut src = video_source(VideoLayer::Full, t0);
    let pkts = run_source(&mut src, t0, Duration::from_secs(10));
    let c = check_frames(&pkts, 30, t0);
    assert_eq!(c.frames, 300);
    // Periodic keyframes every 3 s (90 frames).
    assert_eq!(c.keyframes, [0, 90, 180, 270]);
    let bps = c.bytes as f64 * 8.0 / 10.0;
    assert!((1_350_000.0..=1_650_000.0).contains(&bps), "{bps}");
    // Seq numbers in probes count every packet.
    for (i, p) in pkts.iter().enumerate() {
        assert_eq!(Probe::decode(&p.payload).unwrap().seq, i as u64);
    }
    // Keyframes are several packets and about 4× a delta frame.
    let kf_packets = pkts.iter().take_while(|p| !p.marker).count() + 1;
    assert!(kf_packets >= 15, "{kf_packets}");
    assert_eq!(src.stats().frames, 300);
    assert_eq!(src.stats().keyframes, 4);
}

#[test]
fn thumbnail_is_15_fps_150_kbps() {
    let t0 = Instant::now();
    let mut src = video_source(VideoLayer::Thumbnail, t0);
    let pkts = run_source(&mut src, t0, Duration::from_secs(10));
    let c = check_frames(&pkts, 15, t0);
    assert_eq!(c.frames, 150);
    assert_eq!(c.keyframes, [0, 45, 90, 135]);
    let bps = c.bytes as f64 * 8.0 / 10.0;
    assert!((135_000.0..=165_000.0).contains(&bps), "{bps}");
}

#[test]
fn rate_multiplier_scales_bitrate() {
    let t0 = Instant::now();
    let mut cfg = SourceConfig::video(VideoLayer::Full, SenderId(1), Ssrc(5), extmap(), t0, 3);
    cfg.rate = 0.5;
    let mut src = MediaSource::new(cfg, t0);
    let pkts = run_source(&mut src, t0, Duration::from_secs(10));
    let bps = pkts.iter().map(|p| p.payload.len()).sum::<usize>() as f64 * 8.0 / 10.0;
    assert!((675_000.0..=825_000.0).contains(&bps), "{bps}");
    assert_eq!(check_frames(&pkts, 30, t0).frames, 300);
}

#[test]
fn keyframes_asked_for_on_every_frame_come_at_most_three_a_second() {
    let t0 = Instant::now();
    let mut src = video_source(VideoLayer::Full, t0);
    // A relay asking before every frame for 3 s (30 fps: 90 frames).
    let mut keyframes = Vec::new();
    let mut now = t0;
    while now < t0 + Duration::from_secs(3) {
        src.request_keyframe();
        while let Some(o) = src.poll(now) {
            let fm = frame_marking(o.extensions.get(ExtId(2)).unwrap()).unwrap();
            if fm.starts_keyframe() {
                keyframes.push(now);
            }
        }
        now = src.poll_timeout();
    }
    // Three at once each second, not 90 (the first is the periodic one as well).
    assert_eq!(keyframes.len(), 9, "{keyframes:?}");
    for w in keyframes.windows(MAX_REQUESTED_KEYFRAMES_PER_SECOND + 1) {
        assert!(w[MAX_REQUESTED_KEYFRAMES_PER_SECOND] - w[0] >= Duration::from_secs(1));
    }
}

/// Requested keyframes (three a second here, the most it makes) are paid back by the
/// delta frames after them, as an encoder's rate control does: the stream keeps its
/// 1.5 Mbit/s. (Each is four delta frames' worth: without the payback it runs at
/// 1.9 Mbit/s.)
#[test]
fn requested_keyframes_do_not_raise_the_rate() {
    let t0 = Instant::now();
    let mut src = video_source(VideoLayer::Full, t0);
    let mut now = t0;
    let mut bytes = 0;
    let mut asked = t0;
    while now < t0 + Duration::from_secs(10) {
        if now >= asked {
            src.request_keyframe();
            asked += Duration::from_millis(334);
        }
        while let Some(o) = src.poll(now) {
            bytes += o.payload.len();
        }
        now = src.poll_timeout();
    }
    assert!(src.stats().keyframes >= 28, "{:?}", src.stats());
    let bps = bytes as f64 * 8.0 / 10.0;
    assert!((1_350_000.0..=1_600_000.0).contains(&bps), "{bps}");
}

#[test]
fn keyframe_on_request_within_one_frame_interval() {
    let t0 = Instant::now();
    let mut src = video_source(VideoLayer::Full, t0);
    // Let the first keyframe and a few delta frames go.
    let mut now = t0;
    let mut deltas = 0;
    while deltas < 5 {
        while let Some(o) = src.poll(now) {
            let fm = frame_marking(o.extensions.get(ExtId(2)).unwrap()).unwrap();
            if fm.end_of_frame && !fm.independent {
                deltas += 1;
            }
        }
        now = src.poll_timeout();
    }
    // Requested between frames, at an odd time.
    let asked = now - 7 * MS;
    src.request_keyframe();
    let mut frame: Vec<(Instant, rtp::FrameMarking, bool)> = Vec::new();
    loop {
        let now = src.poll_timeout();
        let mut done = false;
        while let Some(o) = src.poll(now) {
            let fm = frame_marking(o.extensions.get(ExtId(2)).unwrap()).unwrap();
            frame.push((now, fm, o.marker));
            done = fm.end_of_frame;
            if done {
                break;
            }
        }
        if done {
            break;
        }
    }
    let frame_interval = Duration::from_nanos(1_000_000_000 / 30 + 1);
    assert!(frame[0].0 - asked <= frame_interval);
    assert!(frame.len() > 1, "a keyframe spans several packets");
    for (i, (_, fm, marker)) in frame.iter().enumerate() {
        assert!(fm.independent);
        assert_eq!(fm.start_of_frame, i == 0);
        assert_eq!(fm.end_of_frame, i + 1 == frame.len());
        assert_eq!(*marker, fm.end_of_frame);
    }
    assert!(frame[0].1.starts_keyframe());
    // The next frame is a delta frame again, and the periodic timer restarted.
    let o = src.poll(src.poll_timeout()).unwrap();
    let fm = frame_marking(o.extensions.get(ExtId(2)).unwrap()).unwrap();
    assert!(fm.start_of_frame && !fm.independent);
    // A request in the middle of a frame's packets applies to the next frame.
    let mut src = video_source(VideoLayer::Full, t0);
    let now = t0;
    let first = src.poll(now).unwrap();
    assert!(!first.marker);
    src.request_keyframe();
    while let Some(o) = src.poll(now) {
        if o.marker {
            break;
        }
    }
    let next = src.poll_timeout();
    let o = src.poll(next).unwrap();
    let fm = frame_marking(o.extensions.get(ExtId(2)).unwrap()).unwrap();
    assert!(fm.starts_keyframe());
    assert_eq!(src.stats().keyframes, 2);
}

#[test]
fn a_late_poll_skips_instead_of_bursting() {
    let t0 = Instant::now();
    let mut src = audio_source(t0);
    assert!(src.poll(t0).is_some());
    // 100 ms late: within max_lag, the missed packets come out at once.
    let mut n = 0;
    while src.poll(t0 + 120 * MS).is_some() {
        n += 1;
    }
    assert_eq!(n, 6);
    // 2 s late: skips to the packet due now.
    let late = t0 + Duration::from_secs(3);
    let o = src.poll(late).unwrap();
    let seq = o.probe.seq;
    assert!(src.poll(late).is_none());
    assert_eq!(seq, 7);
    assert_eq!(src.stats().skipped, 150 - 7);
    assert_eq!(src.poll_timeout(), late + 20 * MS);
}

#[test]
fn driver_checks_roles_and_routes_keyframe_requests() {
    let t0 = Instant::now();
    let ssrcs = OwnSsrcs {
        audio: Ssrc(1),
        thumbnail: Ssrc(2),
        full: Ssrc(3),
    };
    let mk = |kind: SourceKind, ssrc: u32| {
        let mut c = SourceConfig::audio(SenderId(1), Ssrc(ssrc), extmap(), t0, 1);
        c.kind = kind;
        MediaSource::new(c, t0)
    };
    let thumb = SourceKind::Video {
        layer: VideoLayer::Thumbnail,
    };
    let full = SourceKind::Video {
        layer: VideoLayer::Full,
    };
    assert_eq!(
        Driver::new(
            ssrcs,
            mk(SourceKind::Audio, 1),
            mk(thumb, 3),
            mk(full, 2),
            None
        )
        .unwrap_err(),
        DriverError::SsrcMismatch(Ssrc(3))
    );
    assert_eq!(
        Driver::new(
            ssrcs,
            mk(SourceKind::Audio, 1),
            mk(full, 2),
            mk(full, 3),
            None
        )
        .unwrap_err(),
        DriverError::WrongKind
    );
    let mut d = Driver::new(
        ssrcs,
        mk(SourceKind::Audio, 1),
        mk(thumb, 2),
        mk(full, 3),
        None,
    )
    .unwrap();
    assert!(!d.handle_event(&Event::KeyframeRequested(Ssrc(9))));
    assert!(!d.handle_event(&Event::IceSelected));
    // Past the first (periodic) keyframe of the full stream.
    let full_src = &mut d.sources_mut()[2];
    while full_src.poll(t0).is_some() {}
    assert!(d.handle_event(&Event::KeyframeRequested(Ssrc(3))));
    assert_eq!(d.stats().keyframe_requests, 1);
    let full_src = &mut d.sources_mut()[2];
    let o = full_src.poll(full_src.poll_timeout()).unwrap();
    assert!(o.probe.keyframe);
    // The thumbnail was not asked.
    let thumb_src = &mut d.sources_mut()[1];
    while thumb_src.poll(t0).is_some() {}
    let o = thumb_src.poll(thumb_src.poll_timeout()).unwrap();
    assert!(!o.probe.keyframe);
}

// --- receiver ---------------------------------------------------------------------------

fn payload(seq: u64, sent: Duration, len: usize) -> Vec<u8> {
    let mut b = vec![0x55; len];
    Probe {
        sender: SenderId(4),
        stream: Ssrc(77),
        seq,
        send_time_ns: sent.as_nanos() as u64,
        keyframe: false,
    }
    .encode_into(&mut b)
    .unwrap();
    b
}

#[test]
fn receiver_counts_loss_reordering_duplicates_and_integrity() {
    let t0 = Instant::now();
    let mut rx = Receiver::new(t0);
    let (s, ssrc) = (SenderId(4), Ssrc(77));
    let now = t0 + 10 * MS;
    let mut rec = |seq: u64| rx.record(now, s, ssrc, &payload(seq, MS, 80));
    assert_eq!(rec(0), Ok(Arrival::InOrder));
    assert_eq!(rec(1), Ok(Arrival::InOrder));
    assert_eq!(rec(4), Ok(Arrival::InOrder)); // 2 and 3 missing
    assert_eq!(rec(4), Ok(Arrival::Duplicate));
    assert_eq!(rec(0), Ok(Arrival::Duplicate));
    assert_eq!(rec(3), Ok(Arrival::Reordered)); // 3 was late, not lost
    assert_eq!(rec(3), Ok(Arrival::Duplicate));
    assert_eq!(rec(5), Ok(Arrival::InOrder));
    let st = rx.stream(s, ssrc).unwrap();
    assert_eq!(
        (st.received, st.lost(), st.duplicates, st.reordered),
        (5, 1, 3, 1)
    );
    assert_eq!(st.expected(), 6);
    assert_eq!(st.integrity_failures, 0);
    assert_eq!(st.bytes, 5 * 80);
    assert_eq!(st.probe_sender, Some(SenderId(4)));

    // A corrupted payload is an integrity failure and changes nothing else.
    let mut bad = payload(6, MS, 80);
    bad[50] ^= 0x20;
    assert_eq!(
        rx.record(now, s, ssrc, &bad),
        Err(IntegrityError::Probe(ProbeError::Checksum))
    );
    let short = payload(6, MS, 80);
    assert_eq!(
        rx.record(now, s, ssrc, &short[..60]),
        Err(IntegrityError::Probe(ProbeError::LengthMismatch {
            declared: 80,
            actual: 60
        }))
    );
    // Intact, but on another SSRC, or from another probe sender.
    assert_eq!(
        rx.record(now, s, Ssrc(78), &payload(0, MS, 80)),
        Err(IntegrityError::WrongStream {
            probe: Ssrc(77),
            ssrc: Ssrc(78)
        })
    );
    let mut other = vec![0; 80];
    Probe {
        sender: SenderId(5),
        stream: ssrc,
        seq: 6,
        send_time_ns: 0,
        keyframe: false,
    }
    .encode_into(&mut other)
    .unwrap();
    assert_eq!(
        rx.record(now, s, ssrc, &other),
        Err(IntegrityError::SenderChanged)
    );
    let st = rx.stream(s, ssrc).unwrap();
    assert_eq!((st.integrity_failures, st.received, st.lost()), (3, 5, 1));
    assert_eq!(rx.stream(s, Ssrc(78)).unwrap().integrity_failures, 1);

    // A big jump: the gap is lost, and a packet older than the window is not counted.
    let far = 5 + REORDER_WINDOW + 10;
    assert_eq!(
        rx.record(now, s, ssrc, &payload(far, MS, 80)),
        Ok(Arrival::InOrder)
    );
    assert_eq!(
        rx.record(now, s, ssrc, &payload(2, MS, 80)),
        Ok(Arrival::TooOld)
    );
    // Within the window after the jump, duplicates are still found.
    assert_eq!(
        rx.record(now, s, ssrc, &payload(far - 1, MS, 80)),
        Ok(Arrival::Reordered)
    );
    assert_eq!(
        rx.record(now, s, ssrc, &payload(far - 1, MS, 80)),
        Ok(Arrival::Duplicate)
    );
    let st = rx.stream(s, ssrc).unwrap();
    assert_eq!(st.too_old, 1);
    assert_eq!(st.received, 7);
    assert_eq!(st.lost(), far + 1 - 7);

    let sum = rx.summary();
    assert_eq!(sum.streams.len(), 2);
    let t = sum.totals();
    assert_eq!(t.integrity_failures, 4);
    assert_eq!(t.received, 7);
    // All latencies were 9 ms.
    assert_eq!(sum.streams[0].latency.p50_ns, 9_000_000);
    assert_eq!(sum.streams[0].latency.max_ns, 9_000_000);
}

#[test]
fn a_packet_before_the_first_extends_the_expected_range() {
    let t0 = Instant::now();
    let mut rx = Receiver::new(t0);
    let (s, ssrc) = (SenderId(4), Ssrc(77));
    for seq in [10, 11, 9, 12] {
        rx.record(t0, s, ssrc, &payload(seq, Duration::ZERO, 40))
            .unwrap();
    }
    let st = rx.stream(s, ssrc).unwrap();
    assert_eq!((st.first_seq, st.expected(), st.lost()), (Some(9), 4, 0));
}

#[test]
fn latency_percentiles_on_a_known_sample_set() {
    let mut h = LatencyHistogram::default();
    assert_eq!(h.quantile(0.5), None);
    // 1 ms .. 1000 ms, shuffled order does not matter.
    for i in (1..=1000u64).rev() {
        h.record(i * 1_000_000);
    }
    let near = |got: u64, want: u64| {
        let err = (got as f64 - want as f64).abs() / want as f64;
        assert!(err <= 1.0 / 32.0, "{got} vs {want}");
    };
    near(h.quantile(0.5).unwrap(), 500_000_000);
    near(h.quantile(0.99).unwrap(), 990_000_000);
    near(h.quantile(0.9).unwrap(), 900_000_000);
    near(h.quantile(0.01).unwrap(), 10_000_000);
    assert_eq!(h.quantile(1.0), Some(1_000_000_000));
    assert_eq!(h.quantile(0.0), Some(1_000_000));
    assert_eq!(h.min(), Some(1_000_000));
    assert_eq!(h.max(), Some(1_000_000_000));
    assert_eq!(h.mean(), Some(500_500_000));
    assert_eq!(h.count(), 1000);

    // Below 32 µs buckets are one microsecond wide; a skewed set: 98 fast, 2 slow.
    let mut h = LatencyHistogram::default();
    for i in 0..98 {
        h.record(20_000 + i);
    }
    h.record(5_000_000);
    h.record(7_000_000);
    assert_eq!(h.quantile(0.5), Some(20_500));
    assert_eq!(h.quantile(0.98), Some(20_500));
    near(h.quantile(0.99).unwrap(), 5_000_000);
    assert_eq!(h.max(), Some(7_000_000));
    assert_eq!(h.min(), Some(20_000));

    // Huge values share the last bucket, nothing overflows.
    let mut h = LatencyHistogram::default();
    h.record(u64::MAX);
    h.record(0);
    assert_eq!(h.quantile(1.0), Some(u64::MAX));
    assert_eq!(h.quantile(0.5), Some(0));
}

#[test]
fn merged_histograms_equal_one_that_recorded_everything() {
    let mut a = LatencyHistogram::default();
    let mut b = LatencyHistogram::default();
    let mut all = LatencyHistogram::default();
    for i in 1..=500u64 {
        a.record(i * 7_919);
        all.record(i * 7_919);
        b.record(i * 1_000_003);
        all.record(i * 1_000_003);
    }
    let mut merged = LatencyHistogram::default();
    merged.merge(&a);
    merged.merge(&LatencyHistogram::default());
    merged.merge(&b);
    assert_eq!(merged, all);
    assert_eq!(merged.count(), 1000);
    assert_eq!(merged.min(), Some(7_919));
    assert_eq!(merged.quantile(0.99), all.quantile(0.99));
}

#[test]
fn summary_renders_json() {
    let t0 = Instant::now();
    let mut rx = Receiver::new(t0);
    assert_eq!(rx.summary().to_json(), r#"{"streams":[]}"#);
    rx.record(t0 + 2 * MS, SenderId(4), Ssrc(77), &payload(0, MS, 50))
        .unwrap();
    rx.record(t0 + 3 * MS, SenderId(4), Ssrc(77), &payload(2, MS, 50))
        .unwrap();
    assert_eq!(
        rx.summary().to_json(),
        "{\"streams\":[{\"sender\":4,\"ssrc\":77,\"received\":2,\"lost\":1,\
         \"duplicates\":0,\"reordered\":0,\"too_old\":0,\"integrity_failures\":0,\
         \"bytes\":100,\"bitrate_bps\":800000,\"latency_ns\":{\"count\":2,\
         \"min\":1000000,\"p50\":1000000,\"p99\":2000000,\"max\":2000000,\
         \"mean\":1500000}}]}"
    );
}

// End to end through the real relay engine: tests/tests/media_sim.rs.
