//! The participant library's synthetic media through the real relay engine, measured
//! by the receivers after decryption: nothing lost, nothing corrupted, every stream
//! where the subscriptions say.
#![allow(clippy::disallowed_methods)] // no clock: the simulator's instant is the epoch

use blindfold_client::{Driver, Receiver, SenderId};
use blindfold_relay::control::{ExtmapIds, FullSet};
use blindfold_relay::id::ExtId;
use blindfold_tests::Sim;

#[test]
fn three_sources_arrive_whole_at_every_receiver() {
    let mut sim = Sim::new(2);
    let a = sim.join("alice", "conf");
    let b = sim.join("bob", "conf");
    let c = sim.join("carol", "conf");
    sim.run_until_connected();
    sim.share_keys();
    sim.subscribe(b, FullSet::All);
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
        }
        let has_full = s.streams.iter().any(|st| st.ssrc == ssrcs.full);
        assert_eq!(
            has_full,
            who == b,
            "full resolution only for the subscriber"
        );
    }
}
