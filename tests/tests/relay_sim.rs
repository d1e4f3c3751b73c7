//! The relay's behaviour over whole calls, in simulated time: real engines, real
//! participants (ICE, DTLS, SRTCP, end-to-end SRTP), an in-memory network. One behaviour
//! per test; the outcome asserted is what a participant decrypted or what the relay sent.

use std::net::SocketAddr;

use blindfold_client::Event as PEvent;
use blindfold_relay::control::SessionSpec;
use blindfold_relay::control::{EndReason, FullSet, NotificationBody};
use blindfold_relay::dtls::Fingerprint;
use blindfold_relay::engine::{DropReason, Handled, RtcpDrop};
use blindfold_relay::id::{ExtId, Pt, Ssrc, WireSeq};
use blindfold_relay::wire::rtcp;
use blindfold_tests::{Sim, answer_relay_check, ice_check};

fn call(workers: u16, names: &[&str]) -> (Sim, Vec<usize>) {
    let mut sim = Sim::new(workers);
    let ids = names.iter().map(|n| sim.join(n, "conf")).collect();
    sim.run_until_connected();
    sim.share_keys();
    (sim, ids)
}

/// Every SRTP packet `receiver` got that `sender` sent, compared byte for byte.
fn forwarded_identical(sim: &Sim, sender: usize, receiver: usize) -> usize {
    let sent = &sim.member(sender).sent;
    sim.member(receiver)
        .received
        .iter()
        .filter(|r| sent.contains(r))
        .count()
}

/// Signaling heard of no session closing or failing.
fn assert_no_session_ended(sim: &Sim) {
    assert!(
        !sim.notifications.iter().any(|n| matches!(
            n,
            NotificationBody::SessionClosed { .. } | NotificationBody::SessionFailed { .. }
        )),
        "{:?}",
        sim.notifications
    );
}

fn three_participants_get_each_others_audio_and_thumbnail(workers: u16) {
    let (mut sim, p) = call(workers, &["alice", "bob", "carol"]);
    for &i in &p {
        sim.send_audio(i, format!("audio from {i}").as_bytes());
        let thumb = sim.member(i).ssrcs().thumbnail;
        sim.send(i, thumb, Pt(96), format!("thumbnail from {i}").as_bytes());
    }
    sim.run_for_ms(20);
    for &r in &p {
        for &s in &p {
            if r == s {
                continue;
            }
            let got = sim.member(r).media_from(s);
            let payloads: Vec<_> = got.iter().map(|m| m.payload().to_vec()).collect();
            assert_eq!(
                payloads,
                vec![
                    format!("audio from {s}").into_bytes(),
                    format!("thumbnail from {s}").into_bytes()
                ],
                "{r} from {s}"
            );
            assert_eq!(
                forwarded_identical(&sim, s, r),
                2,
                "bit-identical, {r} from {s}"
            );
        }
        assert!(
            sim.member(r).media_from(r).is_empty(),
            "nobody gets their own media"
        );
    }
    assert!(sim.to_strangers.is_empty());
}

#[test]
fn three_participants_get_each_others_audio_and_thumbnail_one_worker() {
    three_participants_get_each_others_audio_and_thumbnail(1);
}

#[test]
fn three_participants_get_each_others_audio_and_thumbnail_across_workers() {
    // Ports 10000, 10001, 10002 hash to workers 0, 1, 0.
    three_participants_get_each_others_audio_and_thumbnail(2);
}

#[test]
fn connections_are_reported_to_signaling() {
    let (sim, p) = call(2, &["alice", "bob"]);
    for &i in &p {
        let m = sim.member(i);
        let reported: Vec<_> = sim
            .notifications
            .iter()
            .filter(|n| {
                matches!(n, NotificationBody::SessionConnected { session_id, addr }
                if *session_id == m.spec.session_id && *addr == m.addr)
            })
            .collect();
        assert_eq!(reported.len(), 1, "{}", m.name);
    }
}

#[test]
fn full_resolution_only_when_subscribed() {
    let (mut sim, p) = call(1, &["alice", "bob", "carol"]);
    let (a, b, c) = (p[0], p[1], p[2]);
    let full = sim.member(a).ssrcs().full;
    sim.send(a, full, Pt(96), b"full 1");
    sim.run_for_ms(10);
    assert!(sim.member(b).media_on(full).is_empty());
    assert!(sim.member(c).media_on(full).is_empty());

    sim.subscribe(b, FullSet::Ssrcs(vec![full]));
    sim.subscribe(c, FullSet::All);
    // The relay probes each new subscriber's link first: a 20 ms cluster and its
    // report.
    sim.run_for_ms(100);
    sim.send(a, full, Pt(96), b"full 2");
    sim.run_for_ms(10);
    for r in [b, c] {
        let got: Vec<_> = sim
            .member(r)
            .media_on(full)
            .iter()
            .map(|m| m.payload().to_vec())
            .collect();
        assert_eq!(got, vec![b"full 2".to_vec()]);
    }

    sim.subscribe(b, FullSet::Ssrcs(vec![]));
    sim.send(a, full, Pt(96), b"full 3");
    sim.run_for_ms(10);
    assert_eq!(sim.member(b).media_on(full).len(), 1, "unsubscribed");
    assert_eq!(sim.member(c).media_on(full).len(), 2, "still on 'all'");
}

#[test]
fn sender_reports_reach_receivers_across_workers() {
    let (mut sim, p) = call(2, &["alice", "bob", "carol"]);
    let a = p[0];
    let audio = sim.member(a).ssrcs().audio;
    // Bob or carol is on the other worker than alice (the test is about that).
    let shard = |m: usize| sim.shard_of(sim.member(m).addr);
    assert!(p[1..].iter().any(|&r| shard(r) != shard(a)));
    sim.send_audio(a, b"so alice has an SR to send");
    // Participants report every second.
    sim.run_for_ms(2500);
    for &r in &p[1..] {
        let srs = sim
            .member(r)
            .events
            .iter()
            .filter(|e| matches!(e, blindfold_client::Event::SenderReport(sr) if sr.ssrc == audio))
            .count();
        assert!(srs >= 1, "member {r} got {srs} SRs from alice");
    }
    let stats: u64 = sim.shards.iter().map(|e| e.stats().sr_forwarded).sum();
    assert!(stats >= 2);
    assert!(sim.sender_reports_between_shards >= 1);
}

#[test]
fn a_member_flooding_rtcp_gets_a_bounded_rate_of_work() {
    for workers in [1, 2] {
        let (mut sim, p) = call(workers, &["alice", "bob", "carol"]);
        let (a, b, c) = (p[0], p[1], p[2]);
        let audio = sim.member(a).ssrcs().audio;
        sim.send_audio(a, b"so alice's stream exists");
        let srs_at = |sim: &Sim, r: usize| {
            sim.member(r)
                .events
                .iter()
                .filter(|e| matches!(e, PEvent::SenderReport(sr) if sr.ssrc == audio))
                .count()
        };
        let before = [srs_at(&sim, b), srs_at(&sim, c)];
        // 30 compounds of 20 SRs each at once: 600 packets, 500 of them read, and one SR
        // forwarded to each receiver.
        let mut compound = Vec::new();
        for i in 0..20u32 {
            let info = rtcp::SenderInfo {
                ssrc: audio,
                ntp: u64::from(i) << 32,
                rtp_time: blindfold_relay::id::RtpTime(i),
                packet_count: i,
                octet_count: i,
            };
            let mut buf = [0u8; 28];
            let n = rtcp::write_sr(&mut buf, &info, &[]).unwrap();
            compound.extend_from_slice(&buf[..n]);
        }
        let now = sim.now;
        for _ in 0..30 {
            sim.members[a].p.send_rtcp(now, &compound).unwrap();
        }
        sim.pump();
        let after = [srs_at(&sim, b), srs_at(&sim, c)];
        assert_eq!(
            [after[0] - before[0], after[1] - before[1]],
            [1, 1],
            "{workers} workers"
        );
        assert_eq!(
            sim.relay_total(|s| s.rtcp_drops[RtcpDrop::OverBudget.index()]),
            100
        );
        assert_eq!(sim.relay_total(|s| s.sr_held_back), 499);
        // Alice's next periodic SRs (one a second) go through as ever.
        sim.run_for_ms(2500);
        assert!(srs_at(&sim, b) >= after[0] + 2, "{workers} workers");
        // A FIR costs one per stream it names: six of 100 entries each are 600, and the
        // sixth is dropped.
        let thumb = sim.member(a).ssrcs().thumbnail;
        let entries = [rtcp::FirEntry {
            ssrc: thumb,
            seq_nr: 1,
        }; 100];
        let mut fir = [0u8; 12 + 8 * 100];
        let n = rtcp::write_fir(&mut fir, sim.member(b).ssrcs().audio, &entries).unwrap();
        let dropped = sim.relay_total(|s| s.rtcp_drops[RtcpDrop::OverBudget.index()]);
        let now = sim.now;
        for _ in 0..6 {
            sim.members[b].p.send_rtcp(now, &fir[..n]).unwrap();
        }
        sim.pump();
        assert_eq!(
            sim.relay_total(|s| s.rtcp_drops[RtcpDrop::OverBudget.index()]),
            dropped + 1
        );
    }
}

#[test]
fn a_sender_report_crosses_to_another_shard_once_whatever_its_receivers_there() {
    let names = ["alice", "r1", "r2", "r3", "r4", "r5", "r6", "r7"];
    let (mut sim, p) = call(2, &names);
    let a = p[0];
    let home = sim.shard_of(sim.member(a).addr);
    let remote: Vec<usize> = p[1..]
        .iter()
        .copied()
        .filter(|&r| sim.shard_of(sim.member(r).addr) != home)
        .collect();
    assert!(
        remote.len() >= 2,
        "receivers on the other shard: {remote:?}"
    );
    let audio = sim.member(a).ssrcs().audio;
    sim.send_audio(a, b"so alice has an SR to send");
    sim.run_for_ms(2500);
    let srs_at = |r: usize| {
        sim.member(r)
            .events
            .iter()
            .filter(|e| matches!(e, blindfold_client::Event::SenderReport(sr) if sr.ssrc == audio))
            .count()
    };
    let got = srs_at(remote[0]);
    assert!(got >= 1);
    assert!(
        remote.iter().all(|&r| srs_at(r) == got),
        "every remote receiver got each SR"
    );
    // One message per SR to the other shard, not one per receiver there.
    assert_eq!(sim.sender_reports_between_shards, got);
}

#[test]
fn keyframe_requests_are_throttled_per_stream() {
    let (mut sim, p) = call(2, &["alice", "bob", "carol"]);
    let (a, b, c) = (p[0], p[1], p[2]);
    let (thumb, full) = (sim.member(a).ssrcs().thumbnail, sim.member(a).ssrcs().full);
    let bobs_thumb = sim.member(b).ssrcs().thumbnail;
    sim.subscribe(c, blindfold_relay::control::FullSet::All);
    sim.run_for_ms(400); // past the request the subscription made of alice's full layer
    let full_before = sim.member(a).keyframe_requests(full);
    // Five requests from two receivers within 100 ms: one reaches the sender.
    for i in 0..5 {
        let r = if i % 2 == 0 { b } else { c };
        let now = sim.now;
        sim.members[r].p.request_keyframe(now, thumb).unwrap();
        sim.run_for_ms(20);
    }
    assert_eq!(sim.member(a).keyframe_requests(thumb), 1);
    // Inside that window, requests for her other stream and for another sender's pass:
    // the throttle is the stream's own.
    let now = sim.now;
    sim.members[c].p.request_keyframe(now, full).unwrap();
    sim.members[c].p.request_keyframe(now, bobs_thumb).unwrap();
    sim.run_for_ms(20);
    assert_eq!(sim.member(a).keyframe_requests(full), full_before + 1);
    assert_eq!(sim.member(b).keyframe_requests(bobs_thumb), 1);
    // After the 300 ms window, the next request goes through.
    sim.run_for_ms(300);
    let now = sim.now;
    sim.members[b].p.request_keyframe(now, thumb).unwrap();
    sim.run_for_ms(20);
    assert_eq!(sim.member(a).keyframe_requests(thumb), 2);
    let throttled: u64 = sim
        .shards
        .iter()
        .map(|e| e.stats().keyframe_requests_throttled)
        .sum();
    assert_eq!(throttled, 4);
}

#[test]
fn keyframe_request_for_an_unreceived_stream_is_dropped() {
    let (mut sim, p) = call(1, &["alice", "bob"]);
    let full = sim.member(p[0]).ssrcs().full;
    let now = sim.now;
    sim.members[p[1]].p.request_keyframe(now, full).unwrap();
    sim.run_for_ms(20);
    assert_eq!(
        sim.member(p[0]).keyframe_requests(full),
        0,
        "bob does not receive full"
    );
    assert_eq!(sim.shards[0].stats().rtcp_dropped(RtcpDrop::NotReceiver), 1);
}

/// Bob subscribes to alice's full layer, which marks frames: he gets it from its next
/// keyframe. Until then he may ask for that keyframe, but a NACK of the layer is not
/// his to send (nothing of it was sent him); from the keyframe on it is.
#[test]
fn a_viewer_waiting_for_a_keyframe_may_ask_for_it_but_not_nack_the_layer() {
    let mut sim = Sim::new(1);
    sim.extmap = blindfold_tests::FULL_EXTMAP;
    let (a, b) = (sim.join("alice", "conf"), sim.join("bob", "conf"));
    sim.run_until_connected();
    sim.share_keys();
    sim.subscribe(b, blindfold_relay::control::FullSet::All);
    let full = sim.member(a).ssrcs().full;
    sim.send(a, full, Pt(96), &[1; 300]);
    let delta = sim.member(a).sent.last().unwrap().clone();
    sim.run_for_ms(400); // past the keyframe throttle's interval
    nack(&mut sim, b, full, &delta);
    assert_eq!(copies_of(&sim, b, &delta), 0, "not resent");
    assert_eq!(sim.shards[0].stats().rtcp_dropped(RtcpDrop::NotReceiver), 1);
    // His PLI counts: sent on, or absorbed by the throttle (the relay asked for the
    // keyframe itself as he subscribed).
    let taken = |sim: &Sim| {
        let st = sim.shards[0].stats();
        st.keyframe_requests_sent + st.keyframe_requests_throttled
    };
    let before = taken(&sim);
    let now = sim.now;
    sim.members[b].p.request_keyframe(now, full).unwrap();
    sim.run_for_ms(20);
    assert_eq!(taken(&sim), before + 1, "his PLI counts");
    assert_eq!(sim.shards[0].stats().rtcp_dropped(RtcpDrop::NotReceiver), 1);

    let keyframe = [0xa0]; // frame marking: start of frame, independent
    sim.send_with(a, full, Pt(96), &[(ExtId(2), &keyframe)], &[2; 300]);
    let key = sim.member(a).sent.last().unwrap().clone();
    assert_eq!(copies_of(&sim, b, &key), 1, "from the keyframe on");
    nack(&mut sim, b, full, &key);
    assert_eq!(copies_of(&sim, b, &key), 2, "resent");
    assert_eq!(sim.shards[0].stats().rtcp_dropped(RtcpDrop::NotReceiver), 1);
}

/// A keyframe's start that arrives after newer packets of its layer (the sender's
/// resend of it, for a NACK the relay passed on; or reordered on the way) does not
/// start a receiver switching up to the layer: the rest of that keyframe has gone by,
/// and what followed it would not decode. The next keyframe does.
#[test]
fn a_stale_keyframe_start_does_not_complete_a_switch_up() {
    let mut sim = Sim::new(1);
    sim.extmap = blindfold_tests::FULL_EXTMAP;
    let (a, b) = (sim.join("alice", "conf"), sim.join("bob", "conf"));
    sim.run_until_connected();
    sim.share_keys();
    let full = sim.member(a).ssrcs().full;
    let keyframe = [0xa0]; // frame marking: start of frame, independent
    sim.send_with(a, full, Pt(96), &[(ExtId(2), &keyframe)], &[1; 300]);
    let old = sim.member(a).sent.last().unwrap().clone();
    assert_eq!(copies_of(&sim, b, &old), 0, "not subscribed yet");
    let asked = sim.relay_total(|s| s.keyframe_requests_sent);
    sim.subscribe(b, blindfold_relay::control::FullSet::All);
    // His trial's probe, then the wait for the keyframe, which the relay asked for.
    sim.run_for_ms(1000);
    assert!(
        sim.relay_total(|s| s.keyframe_requests_sent) > asked,
        "bob is switching up"
    );
    // A stale start as the first packet since he began to wait (the relay's cache
    // knows alice's newest), and after a newer one.
    let from = sim.member(a).addr;
    assert!(matches!(sim.inject(from, &old), Handled::Forward(_)));
    assert_eq!(copies_of(&sim, b, &old), 0, "a stale start, first");
    sim.send(a, full, Pt(96), &[2; 300]);
    let delta = sim.member(a).sent.last().unwrap().clone();
    assert!(matches!(sim.inject(from, &old), Handled::Forward(_)));
    assert_eq!(copies_of(&sim, b, &old), 0, "a stale start");
    assert_eq!(copies_of(&sim, b, &delta), 0);
    sim.send_with(a, full, Pt(96), &[(ExtId(2), &keyframe)], &[3; 300]);
    let key = sim.member(a).sent.last().unwrap().clone();
    assert_eq!(copies_of(&sim, b, &key), 1, "from the next keyframe on");
    sim.send(a, full, Pt(96), &[4; 300]);
    let after = sim.member(a).sent.last().unwrap().clone();
    assert_eq!(copies_of(&sim, b, &after), 1);
}

#[test]
fn a_stranger_gets_nothing_forwarded_and_learns_nothing() {
    let (mut sim, p) = call(1, &["alice", "bob"]);
    // Replay alice's real SRTP packet from an address that never passed ICE.
    sim.send_audio(p[0], b"secret");
    let pkt = sim.member(p[0]).sent.last().unwrap().clone();
    let before = sim.member(p[1]).received.len();
    let stranger = "127.0.0.1:9".parse().unwrap();
    assert_eq!(
        sim.inject(stranger, &pkt),
        Handled::Dropped(DropReason::Unvalidated)
    );
    sim.run_for_ms(10);
    assert_eq!(sim.member(p[1]).received.len(), before);
    assert!(sim.to_strangers.is_empty(), "no answer of any kind");
}

#[test]
fn a_participant_cannot_send_on_anothers_ssrc() {
    let (mut sim, p) = call(1, &["alice", "bob", "carol"]);
    sim.send_audio(p[0], b"alice speaks");
    let pkt = sim.member(p[0]).sent.last().unwrap().clone();
    let carol_before = sim.member(p[2]).received.len();
    // Bob (validated, connected) replays alice's packet from his own address.
    let bob = sim.member(p[1]).addr;
    let k = sim.shard_of(bob);
    let mut buf = pkt.clone();
    let now = sim.now;
    assert_eq!(
        sim.shards[k].handle_datagram(now, bob, &mut buf),
        Handled::Dropped(DropReason::UndeclaredSsrc)
    );
    sim.run_for_ms(10);
    assert_eq!(sim.member(p[2]).received.len(), carol_before);
}

#[test]
fn wrong_dtls_fingerprint_never_connects_nor_receives() {
    let mut sim = Sim::new(1);
    let a = sim.join("alice", "conf");
    let m = sim.join_with_fingerprint("mallory", "conf", Fingerprint([0x42; 32]));
    sim.run_for_ms(3000);
    assert!(sim.member(a).p.is_connected());
    assert!(!sim.member(m).p.is_connected());
    assert!(sim.notifications.iter().any(|n| matches!(n,
        NotificationBody::SessionFailed { session_id, reason: EndReason::FingerprintMismatch, .. }
            if *session_id == sim.member(m).spec.session_id)));
    sim.share_keys();
    let before = sim.member(m).received.len();
    sim.send_audio(a, b"not for mallory");
    sim.run_for_ms(10);
    assert_eq!(sim.member(m).received.len(), before);
}

#[test]
fn a_removed_session_stops_receiving_at_once() {
    let (mut sim, p) = call(2, &["alice", "bob", "carol"]);
    sim.remove(p[1]);
    // No time passes: the very next packet is not sent to bob.
    let before = sim.member(p[1]).received.len();
    sim.send_audio(p[0], b"after bob left");
    assert_eq!(sim.member(p[1]).received.len(), before);
    assert_eq!(
        sim.member(p[2]).media_from(p[0]).len(),
        1,
        "carol still gets it"
    );
    // And bob's own media is no longer forwarded.
    sim.members[p[1]].events.clear();
    let now = sim.now;
    let audio = sim.member(p[1]).ssrcs().audio;
    let _ = sim.members[p[1]].p.send_rtp(
        now,
        audio,
        Pt(111),
        false,
        blindfold_relay::id::RtpTime(0),
        &[],
        b"x",
    );
    sim.pump();
    assert!(sim.member(p[2]).media_from(p[1]).is_empty());
}

#[test]
fn silence_closes_the_session_and_stops_forwarding_to_it() {
    let (mut sim, p) = call(1, &["alice", "bob"]);
    // Bob goes away without a word: his participant is no longer pumped.
    let bob = sim.members.remove(p[1]);
    sim.run_for_ms(31_000);
    assert!(sim.notifications.iter().any(|n| matches!(n,
        NotificationBody::SessionClosed { session_id, reason: EndReason::ConsentExpired }
            if *session_id == bob.spec.session_id)));
    assert_eq!(sim.shards[0].session_counts().connected, 1);
}

#[test]
fn a_participant_that_closes_its_dtls_association_has_left() {
    let (mut sim, p) = call(2, &["alice", "bob", "carol"]);
    // Bob's client hangs up: close_notify, then nothing.
    sim.members[p[1]].p.close();
    sim.pump();
    let bob = sim.member(p[1]).spec.session_id.clone();
    assert!(
        sim.notifications.iter().any(|n| matches!(n,
            NotificationBody::SessionClosed { session_id, reason: EndReason::Closed }
                if *session_id == bob)),
        "{:?}",
        sim.notifications
    );
    assert_eq!(
        sim.shards
            .iter()
            .map(|s| s.session_counts().connected)
            .sum::<usize>(),
        2
    );
    assert_eq!(
        sim.shards
            .iter()
            .map(|s| s.stats().dtls_handshakes_failed)
            .sum::<u64>(),
        0
    );
    // Its goodbye was taken, not dropped.
    assert_eq!(sim.relay_total(|s| s.drops.iter().sum()), 0);
    // The others go on.
    sim.send_audio(p[0], b"after bob left");
    assert_eq!(sim.member(p[2]).media_from(p[0]).len(), 1);
}

#[test]
fn srtcp_from_a_participant_is_authenticated() {
    let (mut sim, p) = call(1, &["alice", "bob"]);
    let alice = sim.member(p[0]).addr;
    // A PLI in the clear (not SRTCP) from a validated address is rejected.
    let mut pli = [0u8; 12];
    rtcp::write_pli(&mut pli, Ssrc(0x1001), sim.member(p[1]).ssrcs().thumbnail).unwrap();
    let now = sim.now;
    assert_eq!(
        sim.shards[0].handle_datagram(now, alice, &mut pli),
        Handled::Dropped(DropReason::SrtcpRejected)
    );
}

/// A member of a conference of 17 that receives every layer hears sender reports of
/// 48 streams: each is sent under its own SSRC in the member's SRTCP from the relay,
/// beside the relay's own. All of them reach it, and so do the relay's own keepalives
/// and keyframe requests, on both workers.
#[test]
fn a_member_of_a_large_conference_hears_every_streams_sender_report_and_the_relay() {
    let names: Vec<String> = (0..16).map(|i| format!("m{i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let (mut sim, p) = call(2, &names);
    let send_all = |sim: &mut Sim| {
        for &i in &p {
            let o = sim.member(i).ssrcs();
            sim.send(i, o.audio, Pt(111), b"audio");
            sim.send(i, o.thumbnail, Pt(96), b"thumbnail");
            sim.send(i, o.full, Pt(96), b"full");
        }
    };
    send_all(&mut sim);
    sim.run_for_ms(1100);
    // The late joiner starts every stream at once: the relay's copies of their last
    // SRs go first, before anything under its own SSRC.
    let late = sim.join("late", "conf");
    sim.subscribe(late, blindfold_relay::control::FullSet::All);
    sim.run_until_connected();
    sim.share_keys();
    for _ in 0..4 {
        send_all(&mut sim);
        sim.run_for_ms(1000);
    }
    let heard: std::collections::HashSet<Ssrc> = sim
        .member(late)
        .events
        .iter()
        .filter_map(|e| match e {
            blindfold_client::Event::SenderReport(sr) => Some(sr.ssrc),
            _ => None,
        })
        .collect();
    assert_eq!(heard.len(), 48, "SRs of every stream");
    assert_eq!(sim.relay_total(|s| s.rtcp_out_refused), 0);
    // The relay's own RTCP under its SSRC: a keyframe request for its thumbnail.
    let thumbnail = sim.member(late).ssrcs().thumbnail;
    let asked = sim.member(late).keyframe_requests(thumbnail);
    let viewer = p[0];
    sim.members[viewer]
        .p
        .request_keyframe(sim.now, thumbnail)
        .expect("pli");
    sim.pump();
    sim.run_for_ms(50);
    assert_eq!(sim.member(late).keyframe_requests(thumbnail), asked + 1);
    assert!(
        !sim.member(late)
            .events
            .iter()
            .any(|e| matches!(e, blindfold_client::Event::Reconnecting)),
        "it hears the relay"
    );
    assert_no_session_ended(&sim);
}

#[test]
fn a_receiver_starting_a_stream_gets_its_last_sender_report_at_once() {
    let (mut sim, p) = call(2, &["alice", "bob"]);
    let a = p[0];
    let audio = sim.member(a).ssrcs().audio;
    sim.send_audio(a, b"so alice has an SR to send");
    // Alice reports every second: one SR reached the relay.
    sim.run_for_ms(1100);
    let carol = sim.join("carol", "conf");
    sim.run_until_connected();
    // Carol connected within the last few simulated milliseconds, long before Alice's
    // next report: the SR she has is the relay's copy of Alice's last.
    let srs = sim
        .member(carol)
        .events
        .iter()
        .filter(|e| matches!(e, blindfold_client::Event::SenderReport(sr) if sr.ssrc == audio))
        .count();
    assert_eq!(srs, 1, "carol got alice's last SR as she connected");
    let replayed: u64 = sim.shards.iter().map(|e| e.stats().sr_replayed).sum();
    assert!(replayed >= 1);
}

/// Member `a` sends five 300-byte thumbnail packets; returns the third, as sent.
fn third_of_five_thumbnails(sim: &mut Sim, a: usize) -> Vec<u8> {
    let thumb = sim.member(a).ssrcs().thumbnail;
    for i in 0..5u8 {
        sim.send(a, thumb, Pt(96), &[i; 300]);
    }
    let third = sim.member(a).sent.len() - 3;
    sim.member(a).sent[third].clone()
}

/// Member `rx` NACKs `packet` (an RTP packet as its sender sent it) on `ssrc`, and the
/// relay answers.
fn nack(sim: &mut Sim, rx: usize, ssrc: Ssrc, packet: &[u8]) {
    let seq = blindfold_relay::wire::rtp::RtpHeader::parse(packet)
        .unwrap()
        .seq();
    let now = sim.now;
    sim.members[rx].p.send_nack(now, ssrc, &[seq]).unwrap();
    sim.pump();
}

/// The first address on 127.0.0.9 whose shard `wanted` takes (a NAT rebinding's new
/// address, on a chosen worker).
fn address_on(sim: &Sim, wanted: impl Fn(usize) -> bool) -> SocketAddr {
    (40_000..)
        .map(|port| SocketAddr::from(([127, 0, 0, 9], port)))
        .find(|&at| wanted(sim.shard_of(at)))
        .unwrap()
}

/// The datagrams `receiver` got that are byte for byte `packet`.
fn copies_of(sim: &Sim, receiver: usize, packet: &[u8]) -> usize {
    sim.member(receiver)
        .received
        .iter()
        .filter(|d| d.as_slice() == packet)
        .count()
}

#[test]
fn a_nacked_video_packet_is_resent_from_the_relays_cache_byte_for_byte() {
    for workers in [1, 2] {
        let (mut sim, p) = call(workers, &["alice", "bob", "carol"]);
        let (a, b, c) = (p[0], p[1], p[2]);
        let thumb = sim.member(a).ssrcs().thumbnail;
        let packet = third_of_five_thumbnails(&mut sim, a);
        assert_eq!(copies_of(&sim, b, &packet), 1);
        nack(&mut sim, b, thumb, &packet);
        assert_eq!(
            copies_of(&sim, b, &packet),
            2,
            "{workers} workers: bob got the original bytes again"
        );
        assert_eq!(copies_of(&sim, c, &packet), 1, "to the NACKer only");
        let resent: u64 = sim.shards.iter().map(|e| e.stats().nack_resent).sum();
        assert_eq!(resent, 1);
        // Nothing went to alice: the relay had it.
        assert!(
            !sim.member(a)
                .events
                .iter()
                .any(|e| matches!(e, PEvent::Nack { .. }))
        );
    }
}

/// Each kind of layer has its own cache budget (`retransmit_thumbnail_bytes`, 64 KiB;
/// `retransmit_full_bytes`, 384 KiB): 120 KB of thumbnail sent within a quarter second
/// no longer holds its first packet, which a NACK then asks of the sender; the same
/// 120 KB of full layer is all kept, and its first packet resent.
#[test]
fn a_thumbnails_cache_is_smaller_than_a_full_layers() {
    let mut sim = Sim::with_config(1, 0, |c| c.layer_choice = false);
    let (a, b) = (sim.join("alice", "conf"), sim.join("bob", "conf"));
    sim.run_until_connected();
    sim.share_keys();
    sim.subscribe(b, FullSet::All);
    sim.run_for_ms(50);
    let ssrcs = sim.member(a).ssrcs();
    for (ssrc, kept) in [(ssrcs.thumbnail, false), (ssrcs.full, true)] {
        let mut first = None;
        for i in 0..120u32 {
            sim.send(a, ssrc, Pt(96), &i.to_be_bytes().repeat(250));
            first.get_or_insert_with(|| sim.member(a).sent.last().unwrap().clone());
            sim.run_for_ms(2);
        }
        let first = first.unwrap();
        assert_eq!(copies_of(&sim, b, &first), 1);
        let (resent, asked) = (
            sim.relay_total(|s| s.nack_resent),
            sim.member(a).events.len(),
        );
        nack(&mut sim, b, ssrc, &first);
        let asked = sim.member(a).events[asked..]
            .iter()
            .any(|e| matches!(e, PEvent::Nack { ssrc: s, .. } if *s == ssrc));
        let resent = sim.relay_total(|s| s.nack_resent) - resent;
        match kept {
            true => assert_eq!((copies_of(&sim, b, &first), resent, asked), (2, 1, false)),
            false => assert_eq!((copies_of(&sim, b, &first), resent, asked), (1, 0, true)),
        }
    }
}

/// Alice's NAT rebinds to an address the other worker reads, so her media arrives
/// there while she stays homed where she was. Bob, homed on her home worker, which
/// still holds a cache of her streams from before, NACKs a packet sent after the move:
/// the NACK goes to the worker her media arrives at, whose cache answers it.
#[test]
fn a_nack_is_answered_where_the_senders_media_arrives() {
    let mut sim = Sim::new(2);
    let a = sim.join("alice", "conf");
    let home = sim.shard_of(sim.member(a).addr);
    let b = loop {
        let m = sim.join(&format!("m{}", sim.members.len()), "conf");
        if sim.shard_of(sim.member(m).addr) == home {
            break m;
        }
    };
    sim.run_until_connected();
    sim.share_keys();
    let new = address_on(&sim, |shard| shard != home);
    sim.rebind(a, new);
    for _ in 0..200 {
        sim.send_audio(a, b"moving");
        sim.run_for_ms(20);
        if sim.member(a).events.contains(&PEvent::AddressChanged(new)) {
            break;
        }
    }
    sim.run_for_ms(1000);
    assert_eq!(sim.relay_total(|s| s.media_moves), 1, "her media moved");
    let thumb = sim.member(a).ssrcs().thumbnail;
    let packet = third_of_five_thumbnails(&mut sim, a);
    assert_eq!(copies_of(&sim, b, &packet), 1);
    nack(&mut sim, b, thumb, &packet);
    assert_eq!(copies_of(&sim, b, &packet), 2, "resent from the cache");
    assert_eq!(sim.relay_total(|s| s.nack_resent), 1);
    assert!(
        !sim.member(a)
            .events
            .iter()
            .any(|e| matches!(e, PEvent::Nack { .. })),
        "nothing asked of alice"
    );
}

#[test]
fn a_receiver_nacking_again_and_again_gets_its_budget_and_no_more() {
    for workers in [1, 2] {
        let (mut sim, p) = call(workers, &["alice", "bob", "carol"]);
        let (a, b, c) = (p[0], p[1], p[2]);
        let thumb = sim.member(a).ssrcs().thumbnail;
        for i in 0..100u8 {
            sim.send(a, thumb, Pt(96), &[i; 200]);
        }
        let seqs: Vec<WireSeq> = sim
            .member(b)
            .media_on(thumb)
            .iter()
            .map(|m| WireSeq(m.seq.0 as u16))
            .collect();
        assert_eq!(seqs.len(), 100);
        let got = |sim: &Sim, r: usize| sim.member(r).received.len();
        // Bob asks for all 100 packets, ten times over: a second's budget (250) is
        // resent, the other 750 are ignored, and nothing is asked of alice.
        let before = got(&sim, b);
        let now = sim.now;
        for _ in 0..10 {
            sim.members[b].p.send_nack(now, thumb, &seqs).unwrap();
        }
        sim.pump();
        assert_eq!(got(&sim, b) - before, 250, "{workers} workers");
        assert_eq!(sim.relay_total(|s| s.nack_resent), 250);
        assert_eq!(sim.relay_total(|s| s.nack_over_budget), 750);
        assert_eq!(sim.relay_total(|s| s.nack_forwarded), 0);
        // Carol's budget is her own.
        let before_c = got(&sim, c);
        sim.members[c].p.send_nack(now, thumb, &seqs[..3]).unwrap();
        sim.pump();
        assert_eq!(got(&sim, c) - before_c, 3);
        // Bob's refills at 250 a second: 100 more after 400 ms.
        sim.run_for_ms(400);
        let before = got(&sim, b);
        let now = sim.now;
        for _ in 0..2 {
            sim.members[b].p.send_nack(now, thumb, &seqs).unwrap();
        }
        sim.pump();
        let resent = got(&sim, b) - before;
        assert!((100..=101).contains(&resent), "{workers} workers: {resent}");
    }
}

#[test]
fn nacks_for_packets_the_relay_lacks_reach_the_sender_once_per_interval() {
    for workers in [1, 2] {
        let (mut sim, p) = call(workers, &["alice", "bob", "carol"]);
        let (a, b, c) = (p[0], p[1], p[2]);
        let thumb = sim.member(a).ssrcs().thumbnail;
        sim.send(a, thumb, Pt(96), b"one packet, so the stream exists");
        let gone = WireSeq(0x4000); // never sent, so never cached
        let now = sim.now;
        for r in [b, c] {
            sim.members[r].p.send_nack(now, thumb, &[gone]).unwrap();
        }
        sim.pump();
        let upstream = |sim: &Sim| {
            sim.member(a)
                .events
                .iter()
                .filter(|e| matches!(e, PEvent::Nack { ssrc, lost } if *ssrc == thumb && lost == &[gone]))
                .count()
        };
        assert_eq!(
            upstream(&sim),
            1,
            "{workers} workers: two receivers, one NACK to alice"
        );
        // After the interval, a receiver asking again is passed on again.
        sim.run_for_ms(150);
        let now = sim.now;
        sim.members[b].p.send_nack(now, thumb, &[gone]).unwrap();
        sim.pump();
        assert_eq!(upstream(&sim), 2);
        assert_eq!(sim.relay_total(|s| s.nack_forwarded), 2);
        assert_eq!(sim.relay_total(|s| s.nack_suppressed), 1);
    }
}

#[test]
fn fifty_receivers_asking_at_once_make_one_keyframe_request_per_interval() {
    let names: Vec<String> = (0..51).map(|i| format!("m{i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let (mut sim, p) = call(2, &names);
    let sender = p[0];
    let thumb = sim.member(sender).ssrcs().thumbnail;
    // Every receiver asks (PLI), again every 50 ms, for two seconds.
    let start = sim.now;
    let mut at = Vec::new();
    for _ in 0..40 {
        let before = sim.member(sender).keyframe_requests(thumb);
        let now = sim.now;
        for &r in &p[1..] {
            sim.members[r].p.request_keyframe(now, thumb).unwrap();
        }
        sim.run_for_ms(50);
        let after = sim.member(sender).keyframe_requests(thumb);
        at.extend(std::iter::repeat_n(now - start, after - before));
    }
    assert_eq!(
        at.first().copied(),
        Some(std::time::Duration::ZERO),
        "the first at once"
    );
    // One per 300 ms interval, and never more than 2 in any second.
    for w in at.windows(2) {
        assert!(
            w[1] - w[0] >= std::time::Duration::from_millis(300),
            "{at:?}"
        );
    }
    for (i, &t) in at.iter().enumerate() {
        let in_second = at[i..]
            .iter()
            .filter(|&&u| u - t < std::time::Duration::from_secs(1))
            .count();
        assert!(in_second <= 2, "{at:?}");
    }
    assert!(at.len() >= 4, "requests keep going through: {at:?}");
    let asked = 50 * 40;
    let throttled: u64 = sim
        .shards
        .iter()
        .map(|e| e.stats().keyframe_requests_throttled)
        .sum();
    assert_eq!(throttled as usize + at.len(), asked);
}

/// What one member does over a span of the talk script.
#[derive(Clone, Copy, PartialEq)]
enum Act {
    /// Speech: -20 to -45 dBov, the V bit on 90% of packets.
    Talk,
    /// Background: -90 to -127 dBov, V clear.
    Quiet,
    /// Discontinuous transmission: no packets.
    Dtx,
}

/// Active speaker over a whole call across two workers: members send real SRTP audio
/// every 20 ms with RFC 6464 levels, following a script of talk turns, coughs,
/// interjections, silence and cross-talk. The relay reports exactly one switch per
/// talk turn, 0.5–1.2 s into it, and none for the cough, the interjection, the
/// silence or the member talking over the speaker.
#[test]
fn the_active_speaker_follows_a_scripted_talk_sequence_across_workers() {
    use Act::*;
    let (mut sim, p) = call(2, &["alice", "bob", "carol"]);
    let (a, b, c) = (p[0], p[1], p[2]);
    // Alice and carol land on one worker, bob on the other.
    assert_ne!(
        sim.shard_of(sim.member(a).addr),
        sim.shard_of(sim.member(b).addr)
    );
    let script = [
        (0, 3000, a, Talk),
        (3000, 3250, b, Talk), // a cough
        (4300, 7000, b, Talk),
        (7000, 9000, a, Dtx),  // both quiet; alice's client stops sending
        (9000, 9400, c, Talk), // "yes, go on"
        (10_000, 13_000, a, Talk),
        (10_500, 12_000, b, Talk), // talks over alice
        (13_500, 15_500, c, Talk),
    ];
    let turns = [
        (0, "alice"),
        (4300, "bob"),
        (10_000, "alice"),
        (13_500, "carol"),
    ];
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut changes: Vec<(u64, String)> = Vec::new();
    for ms in (0..17_500u64).step_by(20) {
        for m in [a, b, c] {
            let act = script
                .iter()
                .find(|&&(from, to, who, _)| who == m && (from..to).contains(&ms))
                .map_or(Quiet, |s| s.3);
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            match act {
                Talk => {
                    let level = 20 + (rng % 26) as u8;
                    sim.send_audio_level(m, level, !rng.is_multiple_of(10), &[0x55; 60]);
                }
                Quiet => sim.send_audio_level(m, 90 + (rng % 38) as u8, false, &[0; 60]),
                Dtx => {}
            }
        }
        sim.run_for_ms(20);
        for (_, who) in sim.active_speakers().into_iter().skip(changes.len()) {
            changes.push((ms, who));
        }
    }
    let who: Vec<&str> = changes.iter().map(|c| c.1.as_str()).collect();
    assert_eq!(who, turns.map(|t| t.1), "{changes:?}");
    for ((at, _), (start, _)) in changes.iter().zip(turns) {
        assert!((start + 500..=start + 1200).contains(at), "{changes:?}");
    }
    assert!(
        sim.active_speakers().iter().all(|(conf, _)| conf == "conf"),
        "{:?}",
        sim.active_speakers()
    );
    // Bob's speech crossed to the other worker's detector (or the others' to his).
    assert!(sim.speech_between_shards > 0);
    let changes_counted: u64 = sim.shards.iter().map(|e| e.stats().speaker_changes).sum();
    assert_eq!(changes_counted, 4);
    // Audio with levels is forwarded unchanged and decrypts.
    assert!(sim.member(b).media_from(a).len() > 500);
}

/// Background noise (levels far below speech, no V bit) reports no speaker and sends
/// no speech notes between workers.
#[test]
fn background_noise_reports_no_speaker_and_sends_no_notes() {
    let (mut sim, p) = call(2, &["alice", "bob"]);
    for _ in 0..100 {
        for &m in &p {
            sim.send_audio_level(m, 110, false, &[0; 60]);
        }
        sim.run_for_ms(20);
    }
    assert!(sim.active_speakers().is_empty());
    assert_eq!(sim.speech_between_shards, 0);
}

/// Alice answers every check the relay sent to one of `paths` since the last call, from
/// there, as her agent would.
fn answer_path_checks(sim: &mut Sim, a: usize, paths: &[SocketAddr]) {
    let spec = sim.member(a).spec.clone();
    let answers: Vec<(SocketAddr, Vec<u8>)> = std::mem::take(&mut sim.to_strangers)
        .into_iter()
        .filter(|(to, _)| paths.contains(to))
        .filter_map(|(to, bytes)| Some((to, answer_relay_check(&spec, &bytes, to)?)))
        .collect();
    for (from, answer) in answers {
        sim.inject(from, &answer);
    }
    sim.pump();
}

/// A member who nominates an address of someone else (a check with a forged source:
/// she knows her own credentials) does not get the conference's media sent there: the
/// relay checks the new address itself and moves only once the answer comes back from
/// it, carrying the check's random transaction id, which only that address saw.
#[test]
fn media_moves_only_to_an_address_that_answers_the_relays_check() {
    let (mut sim, p) = call(1, &["alice", "bob"]);
    let (a, b) = (p[0], p[1]);
    let home = sim.member(a).addr;
    let victim = SocketAddr::from(([127, 0, 0, 2], 4000));
    let spec = sim.member(a).spec.clone();
    // One forged nomination, then 10 s of the call.
    let mut to_victim = Vec::new();
    sim.inject(victim, &ice_check(&spec, 1, true));
    for _ in 0..100 {
        sim.send_audio(b, b"not for the victim");
        sim.run_for_ms(100);
        to_victim.extend(
            std::mem::take(&mut sim.to_strangers)
                .into_iter()
                .filter(|(to, _)| *to == victim)
                .map(|(_, bytes)| bytes),
        );
    }
    // The victim got the answer to the forged check and the relay's own checks, five
    // (at 0, 0.25, 0.75, 1.75 and 3.75 s), and none of bob's media; alice kept hers.
    let checks = to_victim
        .iter()
        .filter(|d| answer_relay_check(&spec, d, victim).is_some())
        .count();
    assert_eq!(checks, 5, "{} datagrams", to_victim.len());
    assert_eq!(to_victim.len(), 6);
    assert!(
        to_victim.iter().all(|d| d[0] < 2),
        "only STUN went to the victim"
    );
    assert_eq!(sim.relay_total(|s| s.media_moves), 0);
    let heard = sim.member(a).received.len();
    sim.send_audio(b, b"still for alice");
    sim.run_for_ms(50);
    assert!(
        sim.member(a).received.len() > heard,
        "alice still hears bob at {home}"
    );
    // A forged answer (another transaction id) from there moves nothing either.
    let guess = relay_check_as(&spec, &ice_check(&spec, 0x42, false));
    let forged = answer_relay_check(&spec, &guess, victim).expect("an answer");
    sim.inject(victim, &forged);
    sim.pump();
    assert_eq!(sim.relay_total(|s| s.media_moves), 0);
}

/// The same at the first connect: a participant that checks from its own address and
/// does DTLS there, but nominates a forged one, gets no media sent there either.
#[test]
fn a_session_connects_only_at_an_address_that_answers_the_relays_check() {
    let mut sim = Sim::new(1);
    let a = sim.join("alice", "conf");
    let b = sim.join("bob", "conf");
    let victim = SocketAddr::from(([127, 0, 0, 2], 4000));
    let spec = sim.member(a).spec.clone();
    // Alice's agent checks and nominates from her address; while her DTLS handshake
    // crosses her 20 ms links, a nomination comes from the victim's.
    let slow = blindfold_tests::LinkConfig {
        delay: std::time::Duration::from_millis(20),
        ..Default::default()
    };
    sim.set_uplink(a, slow);
    sim.set_downlink(a, slow);
    for _ in 0..500 {
        if sim.shards[0].session_counts().connecting > 0 {
            break;
        }
        sim.run_for_ms(1);
    }
    assert_eq!(
        sim.shards[0].session_counts().connecting,
        1,
        "alice is connecting"
    );
    sim.inject(victim, &ice_check(&spec, 1, true));
    sim.share_keys();
    for _ in 0..30 {
        sim.send_audio(b, b"not for the victim");
        sim.run_for_ms(100);
    }
    let to_victim: Vec<&Vec<u8>> = sim
        .to_strangers
        .iter()
        .filter(|(to, _)| *to == victim)
        .map(|(_, d)| d)
        .collect();
    assert!(
        !to_victim.is_empty(),
        "the relay checked the victim's address"
    );
    assert!(
        to_victim.iter().all(|d| d[0] < 2),
        "only STUN went to the victim"
    );
    assert!(
        !sim.notifications.iter().any(|n| matches!(
            n,
            NotificationBody::SessionConnected { addr, .. } if *addr == victim
        )),
        "{:?}",
        sim.notifications
    );
}

/// `check` re-keyed as the relay's check of the participant `spec` describes (its
/// password), so that [`answer_relay_check`] answers it.
fn relay_check_as(spec: &SessionSpec, check: &[u8]) -> Vec<u8> {
    use blindfold_relay::wire::stun::{Class, Method, StunMessage, StunWriter};
    let msg = StunMessage::parse(check).unwrap();
    let mut buf = vec![0u8; 256];
    let w = StunWriter::new(
        &mut buf,
        Class::Request,
        Method::Binding,
        msg.transaction_id(),
    )
    .unwrap();
    let n = w
        .finish_with_integrity_and_fingerprint(
            spec.remote_pwd.as_ref().unwrap().as_str().as_bytes(),
        )
        .unwrap();
    buf.truncate(n);
    buf
}

#[test]
fn a_participant_flipping_between_two_paths_moves_its_media_at_most_once_a_second() {
    let (mut sim, p) = call(1, &["alice", "bob"]);
    let (a, b) = (p[0], p[1]);
    let home = sim.member(a).addr;
    let paths = [
        SocketAddr::from(([127, 0, 0, 2], 4000)),
        SocketAddr::from(([127, 0, 0, 3], 4000)),
    ];
    // Alice's agent nominates her two new paths in turn, every 100 ms for 2 s, and
    // answers the relay's checks of them; bob sends a packet after each nomination.
    // Where does it go?
    let mut dests = Vec::new();
    for i in 0..20 {
        sim.inject(paths[i % 2], &ice_check(&sim.member(a).spec, i as u8, true));
        answer_path_checks(&mut sim, a, &paths);
        let strangers = sim.to_strangers.len();
        sim.send_audio(b, b"where does this go");
        let sent = sim.member(b).sent.last().unwrap().clone();
        let to = sim.to_strangers[strangers..]
            .iter()
            .find(|(_, bytes)| *bytes == sent)
            .map_or(home, |(to, _)| *to);
        dests.push(to);
        sim.run_for_ms(100);
    }
    // The first nomination moves her media as soon as its check is answered; the next
    // move waits a second, checks the latest nomination then and moves on its answer
    // (which alice sends at her next step, 100 ms later); nothing flips in between.
    let expected: Vec<SocketAddr> = (0..20).map(|i| paths[usize::from(i >= 11)]).collect();
    assert_eq!(dests, expected);
    assert_eq!(sim.relay_total(|s| s.media_moves), 2);
}

#[test]
fn a_handshake_with_another_certificate_on_a_connected_session_changes_nothing() {
    use blindfold_relay::dtls::{DtlsCert, DtlsConfig, DtlsSession, DtlsSettings, Fingerprint};
    let (mut sim, p) = call(1, &["alice", "bob"]);
    // A ClientHello from bob's address, with a certificate his offer did not name
    // (anyone who can put his address on a datagram): his association stays.
    let bob = sim.member(p[1]).addr;
    let cfg = DtlsConfig::new(DtlsSettings::default()).unwrap();
    let cert = DtlsCert::generate().unwrap();
    let mut client = DtlsSession::client(&cfg, &cert, Fingerprint([0; 32]), sim.now);
    let hello = client.poll_transmit().unwrap().to_vec();
    sim.inject(bob, &hello);
    sim.pump();
    sim.run_for_ms(2000);
    assert_eq!(sim.shards[0].session_counts().connected, 2);
    assert_no_session_ended(&sim);
    assert_eq!(sim.relay_total(|s| s.dtls_handshakes_failed), 0);
    // The handshake it started never gets past the cookie exchange (the
    // HelloVerifyRequest went to bob, who ignores it): 5 s after it started it is
    // dropped as failed, and ends nothing; bob goes on hearing the relay's SRTCP under
    // his association's keys meanwhile.
    let heard = sim.member(p[1]).p.stats().rtcp_in;
    sim.run_for_ms(2900);
    assert_eq!(sim.relay_total(|s| s.rehandshakes_failed), 0);
    sim.run_for_ms(200);
    assert_eq!(sim.relay_total(|s| s.rehandshakes_failed), 1);
    assert_eq!(sim.relay_total(|s| s.rehandshakes_ok), 0);
    assert_eq!(sim.shards[0].session_counts().connected, 2);
    assert!(sim.member(p[1]).p.stats().rtcp_in >= heard + 2);
    // Media goes on both ways.
    sim.send_audio(p[0], b"to bob");
    sim.send_audio(p[1], b"to alice");
    assert_eq!(sim.member(p[1]).media_from(p[0]).len(), 1);
    assert_eq!(sim.member(p[0]).media_from(p[1]).len(), 1);
    assert!(sim.member(p[1]).p.is_connected());
    // And bob's own new handshake, when he connects again, completes.
    let now = sim.now;
    sim.members[p[1]].p.reconnect(now).unwrap();
    sim.pump();
    sim.run_for_ms(2000);
    assert!(sim.member(p[1]).p.is_connected());
    assert_eq!(sim.relay_total(|s| s.rehandshakes_ok), 1);
    assert_no_session_ended(&sim);
}

/// The relay sends every connected participant some SRTCP at least once a second: an
/// empty receiver report when it has nothing else for it. A participant tells a relay
/// that lost its session (a restart) by its silence; one that sends nothing hears the
/// keepalive, one that gets transport-cc feedback needs none.
#[test]
fn every_participant_hears_srtcp_from_the_relay_each_second() {
    let tcc = blindfold_relay::id::ExtId(5);
    let mut sim = Sim::new(2);
    sim.extmap.transport_cc = Some(tcc);
    let p: Vec<usize> = ["alice", "bob"]
        .iter()
        .map(|n| sim.join(n, "conf"))
        .collect();
    sim.run_until_connected();
    sim.share_keys();
    let srtcp = |sim: &Sim| {
        p.iter()
            .map(|&m| sim.member(m).p.stats().rtcp_in)
            .collect::<Vec<_>>()
    };
    let keepalives = |sim: &Sim| sim.relay_total(|s| s.rtcp_keepalives);
    // Nobody sends: a keepalive each second to each.
    let (before, k0) = (srtcp(&sim), keepalives(&sim));
    sim.run_for_ms(10_000);
    for (after, before) in srtcp(&sim).into_iter().zip(before) {
        assert!((9..=11).contains(&(after - before)), "{}", after - before);
    }
    assert!((18..=22).contains(&(keepalives(&sim) - k0)));
    // Alice sends with transport-wide numbers for 5 s: the relay's feedback is her
    // SRTCP, and only bob, who sends nothing, gets keepalives.
    let (before, k0) = (srtcp(&sim), keepalives(&sim));
    let audio = sim.member(p[0]).ssrcs().audio;
    for n in 0u16..250 {
        let seq = n.to_be_bytes();
        sim.send_with(p[0], audio, Pt(111), &[(tcc, &seq)], &[7; 80]);
        sim.run_for_ms(20);
    }
    let got = srtcp(&sim);
    assert!(got[0] - before[0] >= 40, "{}", got[0] - before[0]);
    assert!(got[1] - before[1] >= 4, "{}", got[1] - before[1]);
    assert!(keepalives(&sim) - k0 <= 6, "{}", keepalives(&sim) - k0);
}

/// A participant that connects again (ICE and DTLS with the answer it has) to a relay
/// that still holds its session, as one that wrongly took the relay for restarted
/// would: the relay completes the new handshake beside the old association and swaps
/// the hop's SRTCP keys; nothing ends, media and SRTCP go on both ways. Bob is homed
/// on the other worker.
#[test]
fn a_participant_that_connects_again_to_a_live_relay_keeps_its_session() {
    let (mut sim, p) = call(2, &["alice", "bob"]);
    let (a, b) = (p[0], p[1]);
    assert_ne!(
        sim.shard_of(sim.member(a).addr),
        sim.shard_of(sim.member(b).addr)
    );
    let now = sim.now;
    sim.members[b].p.reconnect(now).unwrap();
    sim.pump();
    sim.run_for_ms(2000);
    let events = &sim.member(b).events;
    assert!(events.contains(&PEvent::Reconnecting), "{events:?}");
    assert!(sim.member(b).p.is_connected());
    assert_eq!(sim.relay_total(|s| s.rehandshakes_ok), 1);
    assert_eq!(sim.relay_total(|s| s.rehandshakes_failed), 0);
    assert_no_session_ended(&sim);
    // SRTCP under the new keys both ways: the relay's keepalives reach bob, and his
    // keyframe request reaches alice.
    let heard = sim.member(b).p.stats().rtcp_in;
    let alice_thumb = sim.member(a).ssrcs().thumbnail;
    let asked = sim.member(a).keyframe_requests(alice_thumb);
    sim.members[b]
        .p
        .request_keyframe(sim.now, alice_thumb)
        .unwrap();
    sim.pump();
    sim.run_for_ms(2000);
    assert!(sim.member(b).p.stats().rtcp_in > heard);
    assert_eq!(sim.member(a).keyframe_requests(alice_thumb), asked + 1);
    sim.send_audio(a, b"to bob");
    sim.send_audio(b, b"to alice");
    assert_eq!(sim.member(b).media_from(a).len(), 1);
    assert_eq!(sim.member(a).media_from(b).len(), 1);
    // His goodbye, in the new association, ends his session as the first one's would.
    sim.members[b].p.close();
    sim.pump();
    sim.run_for_ms(100);
    assert!(
        sim.notifications.iter().any(|n| matches!(
            n,
            NotificationBody::SessionClosed {
                reason: EndReason::Closed,
                ..
            }
        )),
        "{:?}",
        sim.notifications
    );
}

/// Alice's NAT rebinds mid-call: her datagrams come from a new address, and what the
/// relay sends to the old one is lost. Her consent checks from there are answered
/// (they validate the address) but move nothing, so she hears no SRTCP; after four of
/// its usual gaps (2 s when she gets the relay's beat once a second, 500 ms when she
/// gets transport-cc feedback every 100 ms) she asks the relay where it sees her,
/// learns the new address from its answer and nominates it, which moves her media
/// there (no new handshake), and media flows both ways again, on the same call and
/// keys. With her new address on her session's worker and on the other (where her
/// check, her SRTCP and her media are handed over or forwarded from).
#[test]
fn a_participant_whose_nat_rebinds_nominates_its_new_address_and_media_follows() {
    let secs = std::time::Duration::from_secs_f64;
    for other_worker in [false, true] {
        nat_rebinding(other_worker, false, secs(2.5));
        nat_rebinding(other_worker, true, secs(1.0));
    }
}

/// Alice and bob talk for 3 s, then alice's NAT rebinds and they talk for 10 s more;
/// each may miss the other's audio for at most `outage`. With `transport_cc`, alice
/// stamps transport-wide numbers (and gets feedback every 100 ms).
fn nat_rebinding(other_worker: bool, transport_cc: bool, outage: std::time::Duration) {
    let tcc = blindfold_relay::id::ExtId(5);
    let mut sim = Sim::new(2);
    sim.extmap.transport_cc = Some(tcc);
    let (a, b) = (sim.join("alice", "conf"), sim.join("bob", "conf"));
    sim.run_until_connected();
    sim.share_keys();
    let alice_audio = sim.member(a).ssrcs().audio;
    let mut seq = 0u16;
    let mut talk = |sim: &mut Sim, ms: u32| {
        for _ in 0..ms / 20 {
            seq = seq.wrapping_add(1);
            let wide = seq.to_be_bytes();
            let exts: &[(blindfold_relay::id::ExtId, &[u8])] =
                if transport_cc { &[(tcc, &wide)] } else { &[] };
            sim.send_with(a, alice_audio, Pt(111), exts, b"to bob");
            sim.send_audio(b, b"to alice");
            sim.run_for_ms(20);
        }
    };
    talk(&mut sim, 3000);
    let home = sim.shard_of(sim.member(a).addr);
    let new = address_on(&sim, |shard| (shard != home) == other_worker);
    sim.rebind(a, new);
    let rebound = sim.now;
    talk(&mut sim, 10_000);
    let events = &sim.member(a).events;
    assert!(events.contains(&PEvent::AddressChanged(new)), "{events:?}");
    assert!(!events.contains(&PEvent::Reconnecting), "{events:?}");
    assert!(sim.member(a).p.is_connected());
    assert_eq!(sim.relay_total(|s| s.rehandshakes_ok), 0);
    assert_eq!(sim.relay_total(|s| s.media_moves), 1);
    assert_no_session_ended(&sim);
    // The longest each went without the other's audio, around the rebinding.
    let ssrc = |m: usize| sim.member(m).p.ssrcs().audio;
    for (rx, tx) in [(a, b), (b, a)] {
        let got: Vec<_> = sim
            .member(rx)
            .media_log
            .iter()
            .filter(|m| m.ssrc == ssrc(tx) && m.at >= rebound - outage)
            .map(|m| m.at)
            .collect();
        let gap = got
            .windows(2)
            .map(|w| w[1] - w[0])
            .max()
            .unwrap_or_default();
        let after = got.iter().filter(|&&t| t > rebound).count();
        eprintln!(
            "{} went {gap:?} without the other's audio, and got {after} of its 500 \
             packets after the rebinding (new address on the {} worker, transport-cc \
             {transport_cc})",
            sim.member(rx).name,
            if other_worker { "other" } else { "same" }
        );
        assert!(gap <= outage, "{gap:?}");
        assert!(
            after >= 500 - outage.as_millis() as usize / 20 - 5,
            "{after}"
        );
    }
}
