//! The relay engine alone: ns per forwarded media packet at fan-out 1, 10 and 50 —
//! demux, address lookup, header view, SSRC check, fan-out list — with no syscalls.
//! The call is real: participants went through ICE and DTLS in the simulator first.
//!
//! The same path with every media feature on against the plain path, in one run
//! (`engine_forward_features`).
//!
//! Also the control path that membership changes cost: the 100th member of a
//! conference connecting (homed on another shard, so only the fan-out tables of this
//! shard change) and disconnecting, and a member switching its full-resolution
//! subscription on and off; and the keepalive receiver reports idle sessions get.
//!
//! `cargo bench -p blindfold-benches --bench engine`

use std::hint::black_box;

use blindfold_relay::control::ExtmapIds;
use blindfold_relay::engine::{
    Command, FullSet, Handled, PeerMsg, SessionHandle, SessionName, ShardId,
};
use blindfold_relay::id::{ExtId, Pt};
use blindfold_relay::wire::rtp::RtpHeader;
use blindfold_tests::{AUDIO_LEVEL_EXT, FULL_EXTMAP, Sim, uncapped};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

/// A connected call on one shard: a sender (its index is returned) and `receivers`.
fn call(receivers: usize) -> (Sim, usize) {
    let mut sim = Sim::with_config(1, 0, uncapped);
    let sender = sim.join("sender", "conf");
    for i in 0..receivers {
        sim.join(&format!("r{i}"), "conf");
    }
    sim.run_until_connected();
    (sim, sender)
}

fn forward(c: &mut Criterion) {
    let mut g = c.benchmark_group("engine_forward");
    g.throughput(Throughput::Elements(1));
    for fanout in [1usize, 10, 50] {
        let (mut sim, sender) = call(fanout);
        sim.send_audio(sender, &[0x55; 160]);
        let mut packet = sim.member(sender).sent.last().unwrap().clone();
        let from = sim.member(sender).addr;
        let now = sim.now;
        let engine = &mut sim.shards[0];
        g.bench_with_input(
            BenchmarkId::from_parameter(fanout),
            &fanout,
            |b, &fanout| {
                b.iter(
                    || match engine.handle_datagram(now, from, black_box(&mut packet)) {
                        Handled::Forward(dests) => {
                            assert_eq!(dests.len(), fanout);
                            black_box(dests.as_ptr())
                        }
                        other => panic!("{other:?}"),
                    },
                )
            },
        );
    }
    g.finish();
    // Video is also copied into the stream's retransmission cache (a new sequence number
    // each packet, as a real stream has).
    let mut g = c.benchmark_group("engine_forward_video");
    g.throughput(Throughput::Elements(1));
    let (mut sim, sender) = call(10);
    let thumb = sim.member(sender).ssrcs().thumbnail;
    sim.send(sender, thumb, Pt(96), &[0x55; 1000]);
    let mut packet = sim.member(sender).sent.last().unwrap().clone();
    let from = sim.member(sender).addr;
    let now = sim.now;
    let engine = &mut sim.shards[0];
    let mut seq = 0u16;
    g.bench_function("10", |b| {
        b.iter(|| {
            seq = seq.wrapping_add(1);
            packet[2..4].copy_from_slice(&seq.to_be_bytes());
            match engine.handle_datagram(now, from, black_box(&mut packet)) {
                Handled::Forward(dests) => black_box(dests.as_ptr()),
                other => panic!("{other:?}"),
            }
        })
    });
    g.finish();
    // Audio with an RFC 6464 level that is speech: the level is read and judged on
    // every packet; at one instant only the first is passed to the conference's
    // detector (at most one per 25 ms per stream). Compare with engine_forward/10.
    let mut g = c.benchmark_group("engine_forward_audio_level");
    g.throughput(Throughput::Elements(1));
    let (mut sim, sender) = call(10);
    sim.send_audio_level(sender, 30, true, &[0x55; 160]);
    let mut packet = sim.member(sender).sent.last().unwrap().clone();
    let from = sim.member(sender).addr;
    let now = sim.now;
    let engine = &mut sim.shards[0];
    g.bench_function("10", |b| {
        b.iter(
            || match engine.handle_datagram(now, from, black_box(&mut packet)) {
                Handled::Forward(dests) => black_box(dests.as_ptr()),
                other => panic!("{other:?}"),
            },
        )
    });
    g.finish();
}

/// The transport-wide sequence number's id in the "all" variants of [`features`].
const TCC_EXT: ExtId = ExtId(5);
/// abs-send-time's.
const ABS_SEND_TIME_EXT: ExtId = FULL_EXTMAP.abs_send_time.unwrap();

/// A packet's header extensions.
type Exts<'a> = &'a [(ExtId, &'a [u8])];

/// The forwarding path with every media feature on against the plain path, in one run:
/// "plain" is the relay with layer choice off, no retransmission caches and no header
/// extensions negotiated (no audio level read, no frame marking); "all" is the default
/// relay with every extension negotiated — the audio level read and judged, each video
/// packet copied into its cache, each packet counted into its stream's rate meter,
/// layer choice running for subscribed receivers, the queue on the sender's uplink
/// measured from abs-send-time, and each packet's transport-wide sequence number and
/// arrival noted for its transport-cc feedback (the feedback itself, one per 100 ms,
/// is not in the loop: time stands still); "all_but_cache" is "all" without the
/// retransmission caches (the one feature that copies a packet); "all_uplink_at_relay"
/// is "all" for a sender that does not stamp transport-wide sequence numbers, whose
/// uplink the relay estimates instead (sequence numbers counted, abs-send-time fed to
/// the delay-based estimator, here with an unchanging send and arrival time: the
/// in-group path most packets take). Per iteration: one audio packet (a speech level)
/// and one 1000-byte thumbnail packet, to 10 receivers.
fn features(c: &mut Criterion) {
    let mut g = c.benchmark_group("engine_forward_features");
    g.throughput(Throughput::Elements(2));
    for (name, all, cache, tcc) in [
        ("plain", false, false, false),
        ("all_but_cache", true, false, true),
        ("all_uplink_at_relay", true, true, false),
        ("all", true, true, true),
    ] {
        let mut sim = Sim::with_config(1, 0, |cfg| {
            uncapped(cfg);
            if !all {
                cfg.layer_choice = false;
                cfg.uplink_estimation = false;
            }
            if !cache {
                cfg.retransmit_full_bytes = 0;
                cfg.retransmit_thumbnail_bytes = 0;
            }
        });
        sim.extmap = match all {
            true => ExtmapIds {
                transport_cc: tcc.then_some(TCC_EXT),
                ..FULL_EXTMAP
            },
            false => ExtmapIds::default(),
        };
        let sender = sim.join("sender", "conf");
        for i in 0..10 {
            let r = sim.join(&format!("r{i}"), "conf");
            if all {
                sim.subscribe(r, blindfold_relay::control::FullSet::All);
            }
        }
        sim.run_until_connected();
        let ssrcs = sim.member(sender).ssrcs();
        // With every extension, the audio packet carries its level, the video packet
        // abs-send-time (the uplink's queue and delay-based estimate read it), and
        // both a transport-wide sequence number if the sender stamps one.
        let level = [0x80 | 30];
        let seq = [0, 0];
        let stamp = [0x12, 0x34, 0x56];
        let (audio_exts, video_exts): (Exts, Exts) = match (all, tcc) {
            (true, true) => (
                &[(AUDIO_LEVEL_EXT, &level), (TCC_EXT, &seq)],
                &[(ABS_SEND_TIME_EXT, &stamp), (TCC_EXT, &seq)],
            ),
            (true, false) => (&[(AUDIO_LEVEL_EXT, &level)], &[(ABS_SEND_TIME_EXT, &stamp)]),
            (false, _) => (&[(AUDIO_LEVEL_EXT, &level)], &[]),
        };
        sim.send_with(sender, ssrcs.audio, Pt(111), audio_exts, &[0x55; 160]);
        let mut audio = sim.member(sender).sent.last().unwrap().clone();
        sim.send_with(sender, ssrcs.thumbnail, Pt(96), video_exts, &[0x55; 1000]);
        let mut video = sim.member(sender).sent.last().unwrap().clone();
        // Where each packet's transport-wide number sits (renumbered per iteration).
        let tcc_at = |p: &[u8]| {
            let h = RtpHeader::parse(p).unwrap();
            h.extension(TCC_EXT)
                .map(|d| d.as_ptr() as usize - p.as_ptr() as usize)
        };
        let (audio_tcc, video_tcc) = (tcc_at(&audio), tcc_at(&video));
        let from = sim.member(sender).addr;
        let now = sim.now;
        let engine = &mut sim.shards[0];
        let mut seq = 0u16;
        let mut tcc_seq = 0u16;
        g.bench_function(name, |b| {
            b.iter(|| {
                seq = seq.wrapping_add(1);
                video[2..4].copy_from_slice(&seq.to_be_bytes());
                for (packet, at) in [(&mut audio, audio_tcc), (&mut video, video_tcc)] {
                    if let Some(at) = at {
                        tcc_seq = tcc_seq.wrapping_add(1);
                        packet[at..at + 2].copy_from_slice(&tcc_seq.to_be_bytes());
                    }
                }
                for packet in [&mut audio, &mut video] {
                    match engine.handle_datagram(now, from, black_box(packet)) {
                        Handled::Forward(dests) => {
                            assert_eq!(dests.len(), 10);
                            black_box(dests.as_ptr());
                        }
                        other => panic!("{other:?}"),
                    }
                }
            })
        });
    }
    g.finish();
}

/// A conference of 99 connected members on one shard, and a 100th that is configured.
fn conference_of_99() -> (Sim, usize) {
    let mut sim = Sim::new(1);
    for i in 0..99 {
        sim.join(&format!("m{i}"), "conf");
    }
    sim.run_until_connected();
    let last = sim.join("m99", "conf");
    (sim, last)
}

fn membership(c: &mut Criterion) {
    let mut g = c.benchmark_group("engine_membership");
    let (mut sim, last) = conference_of_99();
    let session = SessionName::new(sim.member(last).spec.session_id.as_str());
    let identity = blindfold_relay::control::rules::session_rule(&sim.member(last).spec).identity();
    let now = sim.now;
    let engine = &mut sim.shards[0];
    // The 100th member connects on another shard and leaves again: every sender's
    // fan-out lists on this shard gain and lose its address.
    g.bench_function("connect_and_disconnect_100th", |b| {
        b.iter(|| {
            engine.handle_command(
                now,
                Command::Peer(PeerMsg::Connected {
                    session: session.clone(),
                    identity,
                    shard: ShardId(1),
                    key: SessionHandle {
                        slot: 0,
                        incarnation: 0,
                    },
                    addr: "127.0.0.1:9".parse().unwrap(),
                }),
            );
            engine.handle_command(
                now,
                Command::Peer(PeerMsg::Disconnected {
                    session: session.clone(),
                    identity,
                }),
            );
        })
    });
    let (mut sim, _) = conference_of_99();
    let member = SessionName::new(sim.member(0).spec.session_id.as_str());
    let now = sim.now;
    let engine = &mut sim.shards[0];
    // A connected member of 100 subscribes to every full-resolution layer and back.
    g.bench_function("subscribe_and_unsubscribe_in_100", |b| {
        b.iter(|| {
            for full in [FullSet::All, FullSet::Ssrcs(Vec::new())] {
                engine.handle_command(
                    now,
                    Command::SetSubscription {
                        session: member.clone(),
                        full,
                    },
                );
            }
        })
    });
    g.finish();
}

/// What the relay's once-a-second keepalive costs: 500 connected members (25
/// conferences of 20) that nobody sends to, so each gets an empty receiver report every
/// second (`RTCP_EVERY`). Per iteration, a second passes: the shard's timers visit each
/// session and queue its report, protected in SRTCP (per element: one keepalive).
/// The consent timeout is set past the run, as members that answer nothing would
/// otherwise be closed after 30 s.
fn keepalive(c: &mut Criterion) {
    const MEMBERS: usize = 500;
    let mut g = c.benchmark_group("engine_keepalive");
    g.throughput(Throughput::Elements(MEMBERS as u64));
    let mut sim = Sim::with_config(1, 0, |cfg| {
        cfg.silence_timeout = std::time::Duration::from_secs(100_000_000);
    });
    for i in 0..MEMBERS {
        sim.join(&format!("m{i}"), &format!("conf{}", i / 20));
    }
    sim.run_until_connected();
    let mut now = sim.now;
    let engine = &mut sim.shards[0];
    g.bench_function("500_idle_sessions_each_second", |b| {
        b.iter(|| {
            now += std::time::Duration::from_secs(1);
            engine.handle_timeout(now);
            let mut sent = 0;
            while let Some(t) = engine.poll_transmit() {
                sent += 1;
                black_box(t.data.len());
            }
            // Each session got its one report, and nothing else went out.
            assert_eq!(sent, MEMBERS);
        })
    });
    g.finish();
}

criterion_group!(benches, forward, features, membership, keepalive);
criterion_main!(benches);
