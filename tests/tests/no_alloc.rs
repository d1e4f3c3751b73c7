//! The packet path allocates nothing: every parser, builder and SRTP/SRTCP
//! protect/unprotect here runs under a counting global allocator and must leave the
//! count at zero once contexts are set up.
//!
//! Counting is per thread, so the test harness's own threads do not disturb it.
//!
//! aws-lc allocates with libc `malloc`, which a Rust global allocator does not see, so
//! the C side of SRTP is checked with valgrind: `valgrind_loop` (ignored) protects and
//! unprotects `SRTP_LOOP_N` rounds of packets; run it with two values of N and compare
//! "total heap usage" (it stayed at 747 allocations for N = 100 … 2000):
//!
//! ```text
//! cargo test -p blindfold-tests --test no_alloc --no-run
//! SRTP_LOOP_N=1000 valgrind target/debug/deps/no_alloc-* --ignored valgrind_loop --test-threads=1
//! SRTP_LOOP_N=2000 valgrind target/debug/deps/no_alloc-* --ignored valgrind_loop --test-threads=1
//! ```

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use std::net::{SocketAddr, UdpSocket};
#[cfg(target_os = "linux")]
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use blindfold_relay::engine::{ConfName, Handled};
use blindfold_relay::ice::{IceOutcome, MAX_RESPONSE_LEN};
use blindfold_relay::id::{ExtId, KeyIndex, Pt, RtpTime, Ssrc, WireSeq};
use blindfold_relay::shell::metrics::{Labels, Metrics};
#[cfg(target_os = "linux")]
use blindfold_relay::shell::udp::{RecvBatch, SendQueue, bind_reuseport};
use blindfold_relay::srtp::{SrtpContext, SrtpProfile};
use blindfold_relay::wire::rtcp::{RtcpCompound, RtcpPacket};
use blindfold_relay::wire::stun::StunMessage;
use blindfold_relay::wire::{self, rtp, rtp::RtpHeader};
use blindfold_tests::Sim;
use blindfold_tests::fixtures::{FEEDBACK_LOST, write_feedback_compound};

struct Counting;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Runs `f` and returns how many allocations it made on this thread.
fn allocations(f: impl FnOnce()) -> u64 {
    let before = ALLOCS.with(Cell::get);
    f();
    ALLOCS.with(Cell::get) - before
}

#[test]
fn the_counter_sees_allocations() {
    // Guards the guard: if counting were broken every other test here would pass.
    assert!(allocations(|| drop(std::hint::black_box(vec![1u8; 64]))) >= 1);
}

#[test]
fn demux_and_rtp_header_do_not_allocate() {
    let mut pkt = [0u8; 200];
    pkt[..12].copy_from_slice(&[0x80, 96, 0, 1, 0, 0, 0, 1, 0, 0, 0, 7]);
    let n = allocations(|| {
        for _ in 0..100 {
            let d = std::hint::black_box(&pkt[..]);
            assert_eq!(wire::classify(d), wire::Kind::Rtp);
            let h = RtpHeader::parse(d).unwrap();
            std::hint::black_box((h.ssrc(), h.seq(), h.payload().len()));
        }
    });
    assert_eq!(n, 0);
}

#[test]
fn rtp_extensions_and_writer_do_not_allocate() {
    let level = [0x80 | 30];
    let marking = [0xa0];
    let tcc = [0x12, 0x34];
    let exts = [
        (ExtId(1), &level[..]),
        (ExtId(4), &marking[..]),
        (ExtId(5), &tcc[..]),
    ];
    let fields = rtp::RtpFields {
        padding: false,
        marker: true,
        payload_type: Pt(96),
        seq: WireSeq(7),
        timestamp: RtpTime(90_000),
        ssrc: Ssrc(0x1234_5678),
        csrcs: &[],
    };
    let mut buf = [0u8; 1500];
    let n = allocations(|| {
        for _ in 0..100 {
            let len = rtp::write_header(&mut buf, &fields, &exts).unwrap();
            let h = RtpHeader::parse(std::hint::black_box(&buf[..len + 100])).unwrap();
            for e in h.extensions() {
                std::hint::black_box(e.unwrap());
            }
            let a = rtp::audio_level(h.extension(ExtId(1)).unwrap()).unwrap();
            let f = rtp::frame_marking(h.extension(ExtId(4)).unwrap()).unwrap();
            let t = rtp::transport_cc_seq(h.extension(ExtId(5)).unwrap()).unwrap();
            std::hint::black_box((a, f, t));
        }
    });
    assert_eq!(n, 0);
}

#[test]
#[allow(clippy::disallowed_methods)] // one arbitrary origin for the sans-IO agent's clock
fn stun_check_and_answer_do_not_allocate() {
    // What the relay does per connectivity check: parse, then the session's ICE-lite
    // agent verifies fingerprint and integrity with its prepared key and writes the
    // success response.
    let now = Instant::now();
    let (mut agent, key) = blindfold_tests::fixtures::binding_check_agent(now);
    let mut req = [0u8; 200];
    let len = blindfold_tests::fixtures::write_binding_check(&mut req, &key).unwrap();
    let from: SocketAddr = "192.0.2.7:40000".parse().unwrap();
    let mut resp = [0u8; MAX_RESPONSE_LEN];
    let n = allocations(|| {
        for _ in 0..100 {
            let m = StunMessage::parse(std::hint::black_box(&req[..len])).unwrap();
            m.verify_fingerprint().unwrap();
            m.verify_integrity_with(&key).unwrap();
            assert_eq!(m.username().unwrap(), Some("relayufrag:clientufrag"));
            assert!(m.use_candidate().unwrap());
            assert!(m.first_unknown_required().is_none());
            let outcome = agent.handle_binding(now, from, &m, &mut resp);
            assert!(
                matches!(
                    outcome,
                    IceOutcome::Success {
                        nominated: true,
                        ..
                    }
                ),
                "{outcome:?}"
            );
            std::hint::black_box(&resp);
        }
    });
    assert_eq!(n, 0);
    assert_eq!(agent.selected(), Some(from));
}

#[test]
fn rtcp_compound_write_and_walk_do_not_allocate() {
    let mut buf = [0u8; 1500];
    let n = allocations(|| {
        for _ in 0..100 {
            let len = write_feedback_compound(&mut buf).unwrap();
            let mut seen = 0;
            for p in RtcpCompound::parse(std::hint::black_box(&buf[..len])).unwrap() {
                match p.unwrap() {
                    RtcpPacket::SenderReport(sr) => seen += sr.reports().count(),
                    RtcpPacket::Remb(r) => seen += r.ssrcs().count(),
                    RtcpPacket::Pli(_) => seen += 1,
                    RtcpPacket::Nack(n) => seen += n.lost().count(),
                    _ => unreachable!(),
                }
            }
            assert_eq!(seen, 1 + 1 + 1 + FEEDBACK_LOST.len());
        }
    });
    assert_eq!(n, 0);
}

fn master(profile: SrtpProfile, seed: u8) -> Vec<u8> {
    (0..profile.master_len() as u8)
        .map(|i| i.wrapping_mul(13) ^ seed)
        .collect()
}

/// One sender and one receiver per profile and MKI mode, with their SSRCs already seen.
struct Fixture {
    tx: SrtpContext,
    rx: SrtpContext,
    seq: u16,
}

const SSRCS: [u32; 3] = [0x1111, 0x2222, 0x3333];

impl Fixture {
    fn all() -> Vec<Fixture> {
        let mut out = Vec::new();
        for profile in SrtpProfile::ALL {
            for mki in [None, Some(KeyIndex(1))] {
                let make = || {
                    let mut c = SrtpContext::new(profile, &master(profile, 1), mki).unwrap();
                    if mki.is_some() {
                        c.add_key(KeyIndex(2), &master(profile, 2)).unwrap();
                    }
                    c
                };
                let mut f = Fixture {
                    tx: make(),
                    rx: make(),
                    seq: 65000,
                };
                // First sight of each SSRC may allocate; do it before counting.
                f.round(100);
                out.push(f);
            }
        }
        out
    }

    /// Protects and unprotects one SRTP and one SRTCP packet per SSRC, on the stack.
    fn round(&mut self, payload: usize) {
        let mut buf = [0u8; 1500];
        self.seq = self.seq.wrapping_add(1);
        // Alternate the key, so MKI lookup of both keys is exercised.
        if self.tx.has_mki() {
            let k = if self.seq.is_multiple_of(2) { 1 } else { 2 };
            self.tx.set_active_key(KeyIndex(k)).unwrap();
        }
        for ssrc in SSRCS {
            let len = 12 + payload;
            buf[..12].copy_from_slice(&[0x80, 96, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0]);
            buf[2..4].copy_from_slice(&self.seq.to_be_bytes());
            buf[8..12].copy_from_slice(&ssrc.to_be_bytes());
            let n = self.tx.protect_rtp(&mut buf, len).unwrap();
            let m = self.rx.unprotect_rtp(&mut buf[..n]).unwrap();
            assert_eq!(m, len);

            let len = 8 + payload;
            buf[..8].copy_from_slice(&[0x81, 201, 0, 1, 0, 0, 0, 0]);
            buf[4..8].copy_from_slice(&ssrc.to_be_bytes());
            let n = self.tx.protect_rtcp(&mut buf, len).unwrap();
            let m = self.rx.unprotect_rtcp(&mut buf[..n]).unwrap();
            assert_eq!(m, len);
        }
    }
}

#[test]
fn srtp_and_srtcp_do_not_allocate_per_packet() {
    let mut fixtures = Fixture::all();
    let n = allocations(|| {
        for i in 0..200 {
            for f in &mut fixtures {
                f.round(1 + (i * 37) % 1200);
            }
        }
    });
    assert_eq!(n, 0, "protect/unprotect allocated");
}

#[test]
#[ignore = "run under valgrind with SRTP_LOOP_N set; see the module docs"]
fn valgrind_loop() {
    let n: usize = std::env::var("SRTP_LOOP_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let mut fixtures = Fixture::all();
    for i in 0..n {
        for f in &mut fixtures {
            f.round(1 + (i * 37) % 1200);
        }
    }
}

static DROPS: Labels<1> = Labels {
    metric: "d_total",
    help: "d",
    label: "reason",
    values: ["x"],
};
static SESSIONS: Labels<1> = Labels {
    metric: "s",
    help: "s",
    label: "state",
    values: ["x"],
};

#[cfg(target_os = "linux")]
#[test]
#[allow(clippy::disallowed_methods)] // a real-socket test waits on the real clock
fn shell_recv_fanout_flush_and_counters_do_not_allocate() {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let relay = bind_reuseport(any, 1 << 20, 1 << 20).unwrap();
    let sender = UdpSocket::bind(any).unwrap();
    let sinks: Vec<UdpSocket> = (0..8).map(|_| UdpSocket::bind(any).unwrap()).collect();
    let dests: Vec<SocketAddr> = sinks.iter().map(|s| s.local_addr().unwrap()).collect();
    let metrics = Metrics::new(1, &DROPS, &SESSIONS);
    let w = metrics.worker(0).unwrap();
    let mut rx = RecvBatch::new(32);
    let mut tx = SendQueue::new(256, 8);
    for i in 0..64u8 {
        sender
            .send_to(&[i; 1000], relay.local_addr().unwrap())
            .unwrap();
    }

    let mut forwarded = 0u64;
    let mut sent = 0u64;
    let deadline = Instant::now() + Duration::from_secs(5);
    let n = allocations(|| {
        while forwarded < 64 && Instant::now() < deadline {
            if rx.recv(&relay).unwrap() == 0 {
                std::thread::yield_now();
                continue;
            }
            let mut batch = tx.batch(relay.as_fd());
            for (from, buf) in rx.iter_mut() {
                w.packets_in.inc();
                w.bytes_in.add(buf.len() as u64);
                let buf: &[u8] = buf;
                batch.push_fanout(buf, &dests);
                batch.push_owned(&buf[..20], from).unwrap();
                forwarded += 1;
            }
            let st = batch.flush().unwrap();
            w.packets_out.add(st.sent);
            w.drops.add(0, st.dropped_full + st.dropped_error);
            w.sessions.set(0, 1);
            sent += st.sent;
        }
    });
    assert_eq!(forwarded, 64);
    assert_eq!(sent, 64 * 9);
    assert_eq!(n, 0, "allocations on the packet path");
}

#[test]
fn engine_forwarding_path_does_not_allocate() {
    // A real call: four participants connected through ICE and DTLS (every packet at
    // one instant: no packet cap).
    let mut sim = Sim::with_config(1, 0, blindfold_tests::uncapped);
    let alice = sim.join("alice", "conf");
    for name in ["bob", "carol", "dave"] {
        sim.join(name, "conf");
    }
    sim.run_until_connected();
    sim.send_audio(alice, &[0x33; 120]);
    let packet = sim.member(alice).sent.last().unwrap().clone();
    let from = sim.member(alice).addr;
    let now = sim.now;
    let engine = &mut sim.shards[0];
    let mut buf = packet.clone();
    let n = allocations(|| {
        for _ in 0..1000 {
            buf.copy_from_slice(&packet);
            match engine.handle_datagram(now, from, &mut buf) {
                Handled::Forward(dests) => assert_eq!(dests.len(), 3),
                other => panic!("{other:?}"),
            }
        }
    });
    assert_eq!(n, 0);
}

#[test]
fn forwarding_video_into_the_retransmission_cache_does_not_allocate() {
    // Video packets are also copied into the stream's cache, which was allocated when
    // the sender's media started arriving; every sequence number here is new (and
    // arrives at one instant: no packet cap).
    let mut sim = Sim::with_config(1, 0, blindfold_tests::uncapped);
    let alice = sim.join("alice", "conf");
    for name in ["bob", "carol"] {
        sim.join(name, "conf");
    }
    sim.run_until_connected();
    let thumb = sim.member(alice).ssrcs().thumbnail;
    sim.send(alice, thumb, Pt(96), &[0x44; 900]);
    let packet = sim.member(alice).sent.last().unwrap().clone();
    let from = sim.member(alice).addr;
    let now = sim.now;
    let engine = &mut sim.shards[0];
    let mut buf = packet.clone();
    let n = allocations(|| {
        for seq in 1..=3000u16 {
            buf.copy_from_slice(&packet);
            buf[2..4].copy_from_slice(&seq.wrapping_add(100).to_be_bytes());
            match engine.handle_datagram(now, from, &mut buf) {
                Handled::Forward(dests) => assert_eq!(dests.len(), 2),
                other => panic!("{other:?}"),
            }
        }
    });
    assert_eq!(n, 0);
}

#[test]
fn estimating_a_lossy_uplink_does_not_allocate() {
    // Without transport-wide sequence numbers, the relay estimates her uplink: it
    // limits her (a REMB each second).
    let (n, limits, feedback) = lossy_uplink(false);
    assert!(limits >= 5, "{limits} REMB in 8 s");
    assert_eq!(feedback, 0);
    assert_eq!(n, 0);
    // With them, it notes each packet for her transport-cc feedback (written every
    // 100 ms) and leaves the estimate to her.
    let (n, _, feedback) = lossy_uplink(true);
    assert!(
        feedback >= 70,
        "{feedback} transport-cc feedback packets in 8 s"
    );
    assert_eq!(n, 0);
}

/// Alice's full layer over an uplink that loses every fifth packet, stamped with
/// abs-send-time (and with `tcc` a transport-wide sequence number), for 10 simulated
/// seconds: every packet feeds the queue measured on her uplink, and her uplink
/// estimate or her transport-cc record. The first seconds allocate what is allocated
/// once (her clamp); the allocations of the last 8 s, the REMB sent and the
/// transport-cc feedback written in them. (Layer choice off: bob and carol get the
/// layer at once, with no keyframe to wait for.)
fn lossy_uplink(tcc: bool) -> (u64, u64, u64) {
    let mut sim = Sim::with_config(1, 0, |c| c.layer_choice = false);
    let tcc_id = ExtId(5);
    sim.extmap = blindfold_relay::control::ExtmapIds {
        transport_cc: tcc.then_some(tcc_id),
        ..blindfold_tests::FULL_EXTMAP
    };
    let alice = sim.join("alice", "conf");
    for name in ["bob", "carol"] {
        let r = sim.join(name, "conf");
        sim.subscribe(r, blindfold_relay::control::FullSet::All);
    }
    sim.run_until_connected();
    let full = sim.member(alice).ssrcs().full;
    let id = blindfold_tests::FULL_EXTMAP.abs_send_time.unwrap();
    let stamp = [0x12, 0x34, 0x56];
    let tcc_stamp = [0xfe, 0xdc];
    let exts: &[(ExtId, &[u8])] = match tcc {
        true => &[(id, &stamp), (tcc_id, &tcc_stamp)],
        false => &[(id, &stamp)],
    };
    sim.send_with(alice, full, Pt(96), exts, &[0x44; 1000]);
    let packet = sim.member(alice).sent.last().unwrap().clone();
    let at = packet.windows(3).position(|w| w == stamp).unwrap();
    let tcc_at = packet.windows(2).position(|w| w == tcc_stamp);
    let first = u16::from_be_bytes([packet[2], packet[3]]);
    let from = sim.member(alice).addr;
    let start = sim.now;
    let engine = &mut sim.shards[0];
    let mut buf = packet.clone();
    let mut run = |engine: &mut blindfold_relay::engine::Engine, seqs: std::ops::Range<u16>| {
        for seq in seqs.filter(|s| s % 5 != 0) {
            // 1000 bytes every 4 ms: 2 Mbit/s offered.
            let t = Duration::from_millis(4 * u64::from(seq));
            buf.copy_from_slice(&packet);
            buf[2..4].copy_from_slice(&first.wrapping_add(seq).to_be_bytes());
            buf[at..at + 3].copy_from_slice(&rtp::AbsSendTime::from_duration(t).to_bytes());
            if let Some(tcc_at) = tcc_at {
                buf[tcc_at..tcc_at + 2].copy_from_slice(&seq.to_be_bytes());
            }
            let _ = engine.handle_datagram(start + t, from, &mut buf);
            while engine.poll_transmit().is_some() {}
            while engine.poll_event().is_some() {}
        }
    };
    run(engine, 1..500);
    let (remb, feedback) = (engine.stats().remb_sent, engine.stats().transport_cc_sent);
    let n = allocations(|| run(engine, 500..2500));
    (
        n,
        engine.stats().remb_sent - remb,
        engine.stats().transport_cc_sent - feedback,
    )
}

#[test]
fn cross_shard_messages_clone_without_allocating() {
    use blindfold_relay::engine::{
        KeyframeKind, PeerMsg, RtcpBytes, SessionHandle, SessionName, ShardId,
    };
    // Every message a shard sends another, as the worker's fan-out to several shards
    // clones it — except `Datagram`, which carries a rare whole datagram boxed.
    let session = SessionName::new("@alice:example.org|ALICEDEV");
    let key = SessionHandle {
        slot: 3,
        incarnation: 1,
    };
    let addr: SocketAddr = "192.0.2.1:5000".parse().unwrap();
    let packet = RtcpBytes::new(&[0x80, 201, 0, 1, 0, 0, 0, 1]).unwrap();
    let messages = [
        PeerMsg::Claimed {
            session: session.clone(),
            identity: 7,
            shard: ShardId(1),
            key,
        },
        PeerMsg::Connected {
            session: session.clone(),
            identity: 7,
            shard: ShardId(1),
            key,
            addr,
        },
        PeerMsg::WhereIs {
            session: session.clone(),
            identity: 7,
            from: ShardId(1),
        },
        PeerMsg::Disconnected {
            session,
            identity: 7,
        },
        PeerMsg::Rtcp {
            to: key,
            packet: packet.clone(),
        },
        PeerMsg::KeyframeRequest {
            owner: key,
            ssrc: Ssrc(7),
            kind: KeyframeKind::Fir,
        },
        PeerMsg::Nack {
            home: ShardId(0),
            owner: key,
            ssrc: Ssrc(7),
            to: addr,
            packet: packet.clone(),
            allowed: 17,
        },
        PeerMsg::Checked {
            session: key,
            shard: ShardId(1),
            from: addr,
            nominated: true,
        },
        PeerMsg::SenderReport {
            home: ShardId(0),
            sender: key,
            ssrc: Ssrc(7),
            packet,
        },
        PeerMsg::Alive { session: key },
        PeerMsg::Speech {
            home: ShardId(0),
            session: key,
            level: 30,
        },
    ];
    let n = allocations(|| {
        for m in &messages {
            std::hint::black_box(m.clone());
        }
    });
    assert_eq!(n, 0);
}

/// Alice talks (audio with RFC 6464 levels, V set) for 20 s in conference `conf` on two
/// workers, after a warm-up in which she became the active speaker: her worker reads
/// every level and passes speech on — to its own detector or to the other worker's —
/// and runs its timers, without allocating. Returns the allocations and whether her
/// worker runs the conference's detector.
fn talk_allocations(conf: &str) -> (u64, bool) {
    let mut sim = Sim::new(2);
    let alice = sim.join("alice", conf);
    for name in ["bob", "carol"] {
        sim.join(name, conf);
    }
    sim.run_until_connected();
    for _ in 0..100 {
        sim.send_audio_level(alice, 30, true, &[0x33; 60]);
        sim.run_for_ms(20);
    }
    let k = sim.shard_of(sim.member(alice).addr);
    let local = sim.shards[k].active_speaker(&ConfName::new(conf)).is_some();
    assert!(
        sim.active_speakers().len() == 1,
        "{:?}",
        sim.active_speakers()
    );
    let packet = sim.member(alice).sent.last().unwrap().clone();
    let from = sim.member(alice).addr;
    let mut now = sim.now;
    let engine = &mut sim.shards[k];
    let mut buf = packet.clone();
    let n = allocations(|| {
        for _ in 0..1000 {
            now += Duration::from_millis(20);
            buf.copy_from_slice(&packet);
            match engine.handle_datagram(now, from, &mut buf) {
                Handled::Forward(dests) => assert_eq!(dests.len(), 2),
                other => panic!("{other:?}"),
            }
            if engine.poll_timeout().is_some_and(|t| t <= now) {
                engine.handle_timeout(now);
            }
            while engine.poll_event().is_some() {}
            while engine.poll_transmit().is_some() {}
        }
    });
    (n, local)
}

#[test]
fn forwarding_audio_with_levels_to_the_speaker_detector_does_not_allocate() {
    // Conference names until both cases are seen: the detector on alice's worker, and
    // on the other one (speech crosses as messages).
    let mut seen = [false; 2];
    for i in 0..16 {
        let (n, local) = talk_allocations(&format!("conf{i}"));
        assert_eq!(n, 0, "conf{i}, detector on alice's worker: {local}");
        seen[usize::from(local)] = true;
        if seen == [true, true] {
            return;
        }
    }
    panic!("one placement never came up: {seen:?}");
}
