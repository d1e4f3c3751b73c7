//! The participant library's synthetic media through the real relay engine, measured
//! by the receivers after decryption: nothing lost, nothing corrupted, every stream
//! where the subscriptions say.
#![allow(clippy::disallowed_methods)] // no clock: the simulator's instant is the epoch

use blindfold_client::{Driver, Event as PEvent, Receiver, SenderId};
use blindfold_relay::control::{ExtmapIds, FullSet};
use blindfold_relay::id::{ExtId, Ssrc};
use blindfold_tests::LinkConfig;
use blindfold_tests::{FULL_EXTMAP, Sim, starts_keyframe};
use std::time::Duration;

/// Alice, bob and carol connected on two workers, keys shared; bob receives every
/// full-resolution layer.
fn alice_bob_carol() -> (Sim, usize, usize, usize) {
    let mut sim = Sim::new(2);
    let a = sim.join("alice", "conf");
    let b = sim.join("bob", "conf");
    let c = sim.join("carol", "conf");
    sim.run_until_connected();
    sim.share_keys();
    sim.subscribe(b, FullSet::All);
    (sim, a, b, c)
}

#[test]
fn three_sources_arrive_whole_at_every_receiver() {
    let (mut sim, a, b, c) = alice_bob_carol();
    for m in &mut sim.members {
        m.events.clear();
    }

    let extmap = ExtmapIds {
        audio_level: Some(ExtId(1)),
        frame_marking: Some(ExtId(2)),
        abs_send_time: Some(ExtId(3)),
        transport_cc: Some(ExtId(5)),
    };
    let epoch = sim.now;
    let mut driver = Driver::for_participant(
        &sim.members[a].p,
        SenderId(a as u64),
        extmap,
        epoch,
        7,
        sim.now,
    );
    let end = sim.now + std::time::Duration::from_secs(2);
    let mut sent = 0;
    while sim.now < end {
        let now = sim.now;
        sent += driver.drive(&mut sim.members[a].p, now).unwrap();
        sim.run_for_ms(5);
    }
    sim.run_for_ms(50);
    assert!(sent > 100, "{sent} packets sent");

    let summary = |who: usize| {
        let mut rx = Receiver::new(epoch);
        for e in &sim.member(who).events {
            rx.handle_event(epoch, e);
        }
        rx.summary()
    };
    let ssrcs = sim.member(a).ssrcs();
    for (who, streams) in [(b, 3), (c, 2)] {
        let s = summary(who);
        assert_eq!(s.streams.len(), streams, "receiver {who}");
        for st in &s.streams {
            assert_eq!(st.sender, SenderId(a as u64));
            assert!(st.received > 0);
            assert_eq!(
                (st.lost, st.duplicates, st.integrity_failures),
                (0, 0, 0),
                "{st:?}"
            );
            // SRTP drops a second copy as a replay before the summary could count it:
            // the relay sent each packet once, counted as it arrived.
            assert_eq!(sim.member(who).rtp_copies_on(st.ssrc) as u64, st.received);
        }
        let has_full = s.streams.iter().any(|st| st.ssrc == ssrcs.full);
        assert_eq!(
            has_full,
            who == b,
            "full resolution only for the subscriber"
        );
    }
}

/// Alice's full-resolution packets as she sent them: (when, bytes).
type Sent = Vec<(std::time::Instant, usize)>;

/// Runs the simulation for `ms`, sender `a` sending from `driver`, which obeys the
/// relay's requests; notes the packets she sends on `full` in `sent_full`.
fn run(sim: &mut Sim, driver: &mut Driver, a: usize, full: Ssrc, sent_full: &mut Sent, ms: u64) {
    let end = sim.now + std::time::Duration::from_millis(ms);
    while sim.now < end {
        let now = sim.now;
        let before = sim.member(a).sent.len();
        driver.drive(&mut sim.members[a].p, now).unwrap();
        sim.pump();
        for d in &sim.member(a).sent[before..] {
            if blindfold_relay::wire::rtp::RtpHeader::parse(d).is_ok_and(|h| h.ssrc() == full) {
                sent_full.push((now, d.len()));
            }
        }
        let evs: Vec<_> = sim.members[a].events.drain(..).collect();
        for e in &evs {
            driver.handle_event(e);
        }
        sim.members[a].events.extend(evs);
        sim.run_for_ms(5);
    }
}

/// Member `m`'s synthetic sources, stamping the extensions every member negotiates
/// here ([`FULL_EXTMAP`]: frame marking, for the relay's switches and resumes).
fn sources_of(sim: &Sim, m: usize) -> Driver {
    let p = &sim.members[m].p;
    Driver::for_participant(p, SenderId(m as u64), FULL_EXTMAP, sim.now, 7, sim.now)
}

/// How many PAUSEs (`paused`) or RESUMEs member `m` was sent for its stream `ssrc`.
fn pause_requests(sim: &Sim, m: usize, ssrc: Ssrc, paused: bool) -> usize {
    sim.member(m)
        .events
        .iter()
        .filter(|e| matches!(e, PEvent::PauseRequested { ssrc: s, paused: p } if *s == ssrc && *p == paused))
        .count()
}

#[test]
fn a_layer_nobody_receives_is_paused_and_resumes_on_a_keyframe_when_wanted() {
    let (mut sim, a, b, c) = alice_bob_carol();
    let mut driver = sources_of(&sim, a);
    let full = sim.member(a).ssrcs().full;
    // Alice's full-resolution packets as she sent them: (when, bytes).
    let mut sent_full = Vec::new();
    run(&mut sim, &mut driver, a, full, &mut sent_full, 1000);
    let watched = sent_full.len();
    assert!(watched > 20, "bob watches: alice sends full ({watched})");
    // Bob stops watching: within a second alice stops sending full resolution.
    sim.subscribe(b, FullSet::Ssrcs(Vec::new()));
    let unsubscribed = sim.now;
    run(&mut sim, &mut driver, a, full, &mut sent_full, 2000);
    let last = sent_full.last().unwrap().0;
    assert!(
        last - unsubscribed <= std::time::Duration::from_secs(1),
        "alice still sent full {:?} after nobody watched",
        last - unsubscribed
    );
    let pauses = |sim: &Sim, paused: bool| pause_requests(sim, a, full, paused);
    assert_eq!(pauses(&sim, true), 1, "one PAUSE");
    // Bob's and carol's full layers, watched by nobody, were paused too.
    let paused: u64 = sim.shards.iter().map(|e| e.stats().layers_paused).sum();
    assert_eq!(paused, 3);
    // Carol wants it: her first full-resolution packet, a keyframe, within 500 ms.
    let before = sim.member(c).media_on(full).len();
    sim.subscribe(c, FullSet::All);
    let wanted = sim.now;
    run(&mut sim, &mut driver, a, full, &mut sent_full, 1000);
    let got: Vec<_> = sim
        .member(c)
        .media_log
        .iter()
        .filter(|m| m.ssrc == full)
        .collect();
    assert!(got.len() > before, "carol receives full resolution again");
    let first = got[before];
    assert!(
        first.at - wanted <= std::time::Duration::from_millis(500),
        "first full packet {:?} after carol subscribed",
        first.at - wanted
    );
    let first_packet = &sim.member(c).media_on(full)[before].packet;
    assert!(
        starts_keyframe(first_packet, ExtId(2)),
        "it starts a keyframe"
    );
    assert_eq!(pauses(&sim, false), 1, "one RESUME");
    // Carol subscribed to every full layer: bob's resumed too.
    let resumed: u64 = sim.shards.iter().map(|e| e.stats().layers_resumed).sum();
    assert_eq!(resumed, 2);
}

/// Signaling updates a paused sender's session in place (only `tmmbr` changes): the
/// relay still knows its full layer is paused, so a new viewer gets it resumed.
#[test]
fn a_session_updated_in_place_keeps_its_paused_layer_known() {
    let (mut sim, a, b, c) = alice_bob_carol();
    let mut driver = sources_of(&sim, a);
    let full = sim.member(a).ssrcs().full;
    let mut sent_full = Vec::new();
    run(&mut sim, &mut driver, a, full, &mut sent_full, 1000);
    sim.subscribe(b, FullSet::Ssrcs(Vec::new()));
    run(&mut sim, &mut driver, a, full, &mut sent_full, 2000);
    assert_eq!(pause_requests(&sim, a, full, true), 1, "one PAUSE");
    let mut spec = sim.member(a).spec.clone();
    spec.tmmbr = !spec.tmmbr;
    sim.command_all(blindfold_relay::control::rules::upsert_session(&spec));
    let before = sim.member(c).media_on(full).len();
    sim.subscribe(c, FullSet::All);
    run(&mut sim, &mut driver, a, full, &mut sent_full, 1000);
    assert_eq!(pause_requests(&sim, a, full, false), 1, "one RESUME");
    let got = sim.member(c).media_on(full);
    assert!(got.len() > before, "carol receives alice's full layer");
    assert!(starts_keyframe(&got[before].packet, ExtId(2)));
}

#[test]
fn a_lost_pause_and_a_lost_resume_are_sent_again() {
    let (mut sim, a, b, c) = alice_bob_carol();
    let mut driver = sources_of(&sim, a);
    let full = sim.member(a).ssrcs().full;
    let mut sent_full = Vec::new();
    let repeated = |sim: &Sim| sim.relay_total(|s| s.pause_requests_repeated);
    let requests = |sim: &Sim, paused: bool| pause_requests(sim, a, full, paused);
    run(&mut sim, &mut driver, a, full, &mut sent_full, 1000);
    assert!(sent_full.len() > 20, "bob watches: alice sends full");

    // Bob stops watching while everything the relay sends alice is lost: the PAUSE
    // (500 ms later) does not reach her, and she goes on sending.
    let down = LinkConfig::PERFECT;
    sim.set_downlink(a, LinkConfig { loss: 1.0, ..down });
    sim.subscribe(b, FullSet::Ssrcs(Vec::new()));
    let unsubscribed = sim.now;
    run(&mut sim, &mut driver, a, full, &mut sent_full, 1000);
    sim.set_downlink(a, down);
    run(&mut sim, &mut driver, a, full, &mut sent_full, 1000);
    assert!(
        sent_full.last().unwrap().0 > unsubscribed + Duration::from_millis(1900),
        "the PAUSE was lost: she still sends"
    );
    assert_eq!(requests(&sim, true), 0);
    assert_eq!(repeated(&sim), 0);
    // Checked 2 s after it went: the layer still arrives, so the PAUSE goes again.
    run(&mut sim, &mut driver, a, full, &mut sent_full, 2000);
    assert_eq!(requests(&sim, true), 1, "the PAUSE again");
    assert_eq!(repeated(&sim), 1);
    let stopped = sent_full.last().unwrap().0;
    let pause_at = unsubscribed + Duration::from_millis(500);
    assert!(
        stopped <= pause_at + Duration::from_millis(2100),
        "she stopped {:?} after the first PAUSE",
        stopped - pause_at
    );

    // Carol wants it while the relay's RESUME (and its keyframe request) are lost.
    sim.set_downlink(a, LinkConfig { loss: 1.0, ..down });
    let before = sim.member(c).media_on(full).len();
    sim.subscribe(c, FullSet::Ssrcs(vec![full]));
    let wanted = sim.now;
    run(&mut sim, &mut driver, a, full, &mut sent_full, 500);
    sim.set_downlink(a, down);
    run(&mut sim, &mut driver, a, full, &mut sent_full, 1000);
    assert_eq!(sim.member(c).media_on(full).len(), before, "nothing yet");
    assert_eq!(requests(&sim, false), 0);
    // 2 s after the RESUME, nothing of the layer has come: the RESUME goes again, and
    // carol's first full packet is a keyframe.
    run(&mut sim, &mut driver, a, full, &mut sent_full, 1500);
    assert_eq!(requests(&sim, false), 1, "the RESUME again");
    assert_eq!(repeated(&sim), 2);
    let got = sim.member(c).media_on(full);
    assert!(got.len() > before, "carol receives full resolution");
    assert!(
        starts_keyframe(&got[before].packet, ExtId(2)),
        "from a keyframe"
    );
    let first = sim
        .member(c)
        .media_log
        .iter()
        .find(|m| m.ssrc == full)
        .map(|m| m.at)
        .unwrap();
    assert!(
        first - wanted <= Duration::from_millis(2500),
        "carol's first full packet {:?} after she subscribed",
        first - wanted
    );
}
