//! Layer choice through the real relay engine, measured where a user would see it: the
//! receiver's decoded timeline (`blindfold_client::timeline`), what each receiver's
//! link delivered, and what the sender was asked to send.
#![allow(clippy::disallowed_methods)] // no clock: the simulator's instant is the epoch

use std::time::Duration;

use blindfold_client::timeline::Timeline;
use blindfold_client::{Driver, SenderId, VideoLayer};
use blindfold_relay::control::FullSet;
use blindfold_relay::id::ExtId;
use blindfold_tests::{FULL_EXTMAP, Sending, Sim};

const FRAME_MARKING: ExtId = ExtId(2);

/// A sim on two workers whose members negotiate every extension the relay reads.
fn sim() -> Sim {
    let mut sim = Sim::new(2);
    sim.extmap = FULL_EXTMAP;
    sim
}

/// `idx` sends synthetic audio, thumbnail and full video.
fn sending(sim: &Sim, idx: usize) -> Sending {
    let p = &sim.member(idx).p;
    let driver = Driver::for_participant(p, SenderId(idx as u64), FULL_EXTMAP, sim.now, 7, sim.now);
    Sending::new(idx, driver)
}

/// `idx` keeps a decoded timeline of `senders`' video.
fn watch(sim: &mut Sim, idx: usize, senders: &[usize]) {
    let mut t = Timeline::new(FRAME_MARKING);
    for &s in senders {
        let ssrcs = sim.member(s).ssrcs();
        t.add_sender(SenderId(s as u64), ssrcs.thumbnail, ssrcs.full);
    }
    sim.members[idx].timeline = Some(t);
}

/// Whether an RTP packet (as received) starts a keyframe per its frame marking.
fn starts_keyframe(packet: &[u8]) -> bool {
    blindfold_relay::wire::rtp::RtpHeader::parse(packet)
        .ok()
        .and_then(|h| h.extension(FRAME_MARKING))
        .and_then(|d| blindfold_relay::wire::rtp::frame_marking(d).ok())
        .is_some_and(|fm| fm.starts_keyframe())
}

/// Bob subscribes to alice's full layer and drops it, three times over, while carol
/// watches it throughout (so it flows, and bob joins it mid-way through a group of
/// pictures). Every switch up starts at a keyframe the relay asked for (within
/// 500 ms), the thumbnail never stops, and his decoders never meet an undecodable
/// frame: his picture of alice never stands still longer than two thumbnail frames.
#[test]
fn switches_start_at_a_keyframe_and_the_picture_never_stops() {
    let mut sim = sim();
    let a = sim.join("alice", "conf");
    let b = sim.join("bob", "conf");
    let c = sim.join("carol", "conf");
    sim.run_until_connected();
    sim.share_keys();
    sim.subscribe(c, FullSet::All);
    watch(&mut sim, b, &[a]);
    let mut senders = [sending(&sim, a)];
    let full = sim.member(a).ssrcs().full;
    let start = sim.now;
    sim.run_sending(&mut senders, 1500);
    assert!(
        sim.member(b).media_on(full).is_empty(),
        "not subscribed yet"
    );
    for _ in 0..3 {
        let before = sim.member(b).media_on(full).len();
        sim.subscribe(b, FullSet::Ssrcs(vec![full]));
        let asked = sim.now;
        sim.run_sending(&mut senders, 2000);
        let got = sim.member(b).media_on(full);
        assert!(got.len() > before + 50, "bob gets alice's full layer");
        assert!(
            starts_keyframe(&got[before].packet),
            "it starts at a keyframe"
        );
        let first = sim
            .member(b)
            .media_log
            .iter()
            .filter(|m| m.ssrc == full)
            .nth(before)
            .unwrap()
            .at;
        assert!(
            first - asked <= Duration::from_millis(500),
            "first full packet {:?} after subscribing",
            first - asked
        );
        sim.subscribe(b, FullSet::Ssrcs(Vec::new()));
        sim.run_sending(&mut senders, 1500);
    }
    let t = sim.member(b).timeline.as_ref().unwrap();
    assert!(t.lost().is_empty(), "undecodable frames: {:?}", t.lost());
    let fulls = t
        .shown()
        .iter()
        .filter(|f| f.layer == VideoLayer::Full)
        .count();
    assert!(fulls > 150, "full frames shown: {fulls}");
    let gap = t.longest_gap(
        SenderId(a as u64),
        start + Duration::from_millis(500),
        sim.now,
    );
    assert!(
        gap <= Duration::from_millis(140),
        "alice's picture stood still for {gap:?}"
    );
    let ups: u64 = sim.shards.iter().map(|e| e.stats().layer_switches_up).sum();
    assert_eq!(ups, 1 + 3, "carol's switch up and bob's three");
}
