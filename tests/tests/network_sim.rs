//! The emulator's network model: per-link rate, buffer, delay, jitter and loss between
//! real participants and real relay engines, in simulated time. One behaviour per test;
//! what is asserted is what the participants decrypted, and when.

use std::time::{Duration, Instant};

use blindfold_relay::id::Pt;
use blindfold_tests::{Burst, LinkConfig, MediaArrival, Sim};

const MS: Duration = Duration::from_millis(1);

/// A connected call of `names` (alice, bob, carol…) with keys shared, over perfect links.
fn call(seed: u64, names: &[&str]) -> (Sim, Vec<usize>) {
    let mut sim = Sim::with_seed(1, seed);
    let ids = names.iter().map(|n| sim.join(n, "conf")).collect();
    sim.run_until_connected();
    sim.share_keys();
    (sim, ids)
}

/// Member `from` sends `n` audio packets, one every 5 ms step; returns the instant of
/// each send.
fn send_audio_stream(sim: &mut Sim, from: usize, n: usize) -> Vec<Instant> {
    (0..n)
        .map(|i| {
            let at = sim.now;
            sim.send_audio(from, format!("packet {i}").as_bytes());
            sim.run_for_ms(5);
            at
        })
        .collect()
}

/// Sequence numbers of what `who` decrypted from `sender`, in arrival order.
fn seqs(sim: &Sim, who: usize, sender: usize) -> Vec<u64> {
    arrivals(sim, who, sender).iter().map(|m| m.seq.0).collect()
}

fn arrivals(sim: &Sim, who: usize, sender: usize) -> Vec<MediaArrival> {
    let sender = blindfold_client::SenderId(sender as u64);
    sim.member(who)
        .media_log
        .iter()
        .filter(|m| m.sender == sender)
        .copied()
        .collect()
}

#[test]
fn a_perfect_link_delivers_the_same_bytes_at_the_same_instant() {
    let (mut sim, p) = call(0, &["alice", "bob"]);
    let (a, b) = (p[0], p[1]);
    sim.set_uplink(a, LinkConfig::PERFECT);
    sim.set_downlink(b, LinkConfig::default());
    let before = sim.downlink_stats(b);
    let t0 = sim.now;
    // No time passes: delivery is synchronous, as without links.
    sim.send_audio(a, b"now");
    assert_eq!(sim.in_flight(), 0);
    let got = arrivals(&sim, b, a);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].at, t0);
    let sent = sim.member(a).sent.last().unwrap();
    assert_eq!(sim.member(b).received.last(), Some(sent));
    let s = sim.downlink_stats(b).since(&before);
    assert_eq!((s.sent, s.delivered, s.lost, s.queue_dropped), (1, 1, 0, 0));
    assert_eq!(s.bytes_delivered, sent.len() as u64);
}

#[test]
fn five_percent_loss_on_one_downlink_costs_only_that_receiver_five_percent() {
    let (mut sim, p) = call(0, &["alice", "bob", "carol"]);
    let (a, b, c) = (p[0], p[1], p[2]);
    sim.set_downlink(b, LinkConfig::PERFECT.loss(0.05));
    let n = 4000;
    send_audio_stream(&mut sim, a, n);
    sim.run_for_ms(20);
    let got_b = arrivals(&sim, b, a).len();
    let expected = n * 95 / 100;
    // The binomial's standard deviation is about 14 packets.
    assert!(
        got_b.abs_diff(expected) <= 100,
        "bob decrypted {got_b} of {n}"
    );
    assert_eq!(arrivals(&sim, c, a).len(), n, "carol loses nothing");
    let s = sim.downlink_stats(b);
    assert!(s.lost >= (n - got_b) as u64, "{s:?}");
    assert_eq!(s.sent, s.delivered + s.lost + s.queue_dropped);
    assert_eq!(sim.downlink_stats(c).lost, 0);
}

#[test]
fn a_300_kbit_downlink_caps_its_receiver_and_drops_the_excess() {
    let (mut sim, p) = call(0, &["alice", "bob", "carol"]);
    let (a, b, c) = (p[0], p[1], p[2]);
    sim.set_downlink(b, LinkConfig::PERFECT.rate(300_000));
    let thumb = sim.member(a).ssrcs().thumbnail;
    // 625 payload bytes every 5 ms: 1 Mbit/s of payload (more on the wire).
    let t0 = sim.now;
    for _ in 0..800 {
        sim.send(a, thumb, Pt(96), &[0x5a; 625]);
        sim.run_for_ms(5);
    }
    let t1 = sim.now;
    // Past the first second the buffer is full and stays full.
    let from = t0 + Duration::from_secs(1);
    let wire = sim.member(b).received_bps(from, t1);
    let media = sim.member(b).media_bps(from, t1);
    assert!(
        (285_000..=303_000).contains(&wire),
        "bob's link carried {wire} bit/s"
    );
    assert!(media <= wire, "decrypted {media} bit/s");
    assert!(media >= 250_000, "decrypted {media} bit/s");
    assert!(sim.member(c).media_bps(from, t1) >= 1_000_000, "carol");
    let s = sim.downlink_stats(b);
    assert!(s.queue_dropped > 400, "{s:?}");
    assert_eq!(s.lost, 0);
    assert_eq!(sim.downlink_stats(c).queue_dropped, 0);
}

#[test]
fn a_50_ms_downlink_delay_delays_arrival_by_50_ms() {
    let (mut sim, p) = call(0, &["alice", "bob", "carol"]);
    let (a, b, c) = (p[0], p[1], p[2]);
    sim.set_downlink(b, LinkConfig::PERFECT.delay(50 * MS));
    let t0 = sim.now;
    sim.send_audio(a, b"delayed");
    assert_eq!(arrivals(&sim, c, a)[0].at, t0, "carol's link is perfect");
    sim.run_for_ms(45);
    assert!(arrivals(&sim, b, a).is_empty(), "not yet");
    sim.run_for_ms(10);
    assert_eq!(arrivals(&sim, b, a)[0].at, t0 + 50 * MS);
}

#[test]
fn uplink_and_downlink_delays_add_up() {
    let (mut sim, p) = call(0, &["alice", "bob", "carol"]);
    let (a, b, c) = (p[0], p[1], p[2]);
    sim.set_uplink(a, LinkConfig::PERFECT.delay(20 * MS));
    sim.set_downlink(b, LinkConfig::PERFECT.delay(33 * MS));
    let t0 = sim.now;
    sim.send_audio(a, b"delayed twice");
    sim.run_for_ms(100);
    assert_eq!(arrivals(&sim, c, a)[0].at, t0 + 20 * MS);
    assert_eq!(arrivals(&sim, b, a)[0].at, t0 + 53 * MS);
}

#[test]
fn jitter_without_reorder_keeps_order() {
    let (mut sim, p) = call(0, &["alice", "bob"]);
    let (a, b) = (p[0], p[1]);
    sim.set_downlink(b, LinkConfig::PERFECT.delay(20 * MS).jitter(40 * MS));
    let n = 400;
    let sent_at = send_audio_stream(&mut sim, a, n);
    sim.run_for_ms(100);
    let got = arrivals(&sim, b, a);
    assert_eq!(got.len(), n);
    assert!(
        got.windows(2).all(|w| w[0].seq < w[1].seq),
        "in order: {:?}",
        seqs(&sim, b, a)
    );
    let delays: Vec<Duration> = got.iter().zip(&sent_at).map(|(m, t)| m.at - *t).collect();
    assert!(delays.iter().all(|d| (20 * MS..60 * MS).contains(d)));
    let mut distinct = delays.clone();
    distinct.sort();
    distinct.dedup();
    assert!(distinct.len() > n / 2, "jitter varies the delay");
}

#[test]
fn jitter_with_reorder_set_reorders() {
    let (mut sim, p) = call(0, &["alice", "bob"]);
    let (a, b) = (p[0], p[1]);
    let cfg = LinkConfig::PERFECT
        .delay(20 * MS)
        .jitter(40 * MS)
        .reorder(true);
    sim.set_downlink(b, cfg);
    let n = 400;
    send_audio_stream(&mut sim, a, n);
    sim.run_for_ms(100);
    let s = seqs(&sim, b, a);
    assert_eq!(
        s.len(),
        n,
        "nothing lost, reordered within the replay window"
    );
    assert!(s.windows(2).filter(|w| w[0] > w[1]).count() > n / 10);
}

/// Bursty loss, jitter and a bottleneck on bob's downlink; returns what bob decrypted
/// (sequence number, arrival relative to the start) and his link's counters.
fn lossy_run(seed: u64) -> (Vec<(u32, u64, Duration)>, blindfold_tests::LinkStats) {
    let (mut sim, p) = call(seed, &["alice", "bob"]);
    let start = sim.now;
    let (a, b) = (p[0], p[1]);
    let cfg = LinkConfig::PERFECT
        .rate(200_000)
        .delay(30 * MS)
        .jitter(20 * MS)
        .loss(0.05)
        .burst(Burst {
            enter: 0.02,
            leave: 0.3,
            loss: 0.8,
        });
    sim.set_downlink(b, cfg);
    // The DTLS handshake's sizes vary (ECDSA signatures): count from here.
    let before = sim.downlink_stats(b);
    let thumb = sim.member(a).ssrcs().thumbnail;
    for i in 0..400u32 {
        sim.send_audio(a, &i.to_be_bytes());
        sim.send(a, thumb, Pt(96), &[0x11; 300]);
        sim.run_for_ms(5);
    }
    sim.run_for_ms(500);
    let got = sim
        .member(b)
        .media_log
        .iter()
        .map(|m| (m.ssrc.0, m.seq.0, m.at - start))
        .collect();
    (got, sim.downlink_stats(b).since(&before))
}

#[test]
fn the_same_seed_gives_the_same_run() {
    let (first, stats) = lossy_run(42);
    assert!(stats.lost > 0 && stats.queue_dropped > 0, "{stats:?}");
    assert_eq!(lossy_run(42), (first.clone(), stats));
    assert_ne!(lossy_run(43).0, first, "another seed, other losses");
}

/// Mean length of the runs of consecutive missing sequence numbers.
fn mean_gap(seqs: &[u64]) -> f64 {
    let gaps: Vec<u64> = seqs
        .windows(2)
        .map(|w| w[1] - w[0] - 1)
        .filter(|&g| g > 0)
        .collect();
    gaps.iter().sum::<u64>() as f64 / gaps.len().max(1) as f64
}

#[test]
fn burst_loss_clusters_where_independent_loss_does_not() {
    let (mut sim, p) = call(0, &["alice", "bob", "carol"]);
    let (a, b, c) = (p[0], p[1], p[2]);
    // A quarter of bad periods end per packet (4 packets long on average), in which
    // everything is lost; they start often enough for a mean loss of about 4%.
    let burst = Burst {
        enter: 0.01,
        leave: 0.25,
        loss: 1.0,
    };
    sim.set_downlink(b, LinkConfig::PERFECT.burst(burst));
    sim.set_downlink(c, LinkConfig::PERFECT.loss(0.01 / 0.26));
    let n = 8000;
    send_audio_stream(&mut sim, a, n);
    sim.run_for_ms(20);
    let (sb, sc) = (seqs(&sim, b, a), seqs(&sim, c, a));
    // About 3.8% of packets lost on both; bursts make bob's count vary more.
    let lost_b = n - sb.len();
    assert!(
        (n / 50..=n * 6 / 100).contains(&lost_b),
        "bob lost {lost_b}"
    );
    let lost_c = n - sc.len();
    assert!(
        (n * 3 / 100..=n * 47 / 1000).contains(&lost_c),
        "carol lost {lost_c}"
    );
    assert!(mean_gap(&sb) > 3.0, "bursts: {}", mean_gap(&sb));
    assert!(mean_gap(&sc) < 1.3, "independent: {}", mean_gap(&sc));
}

#[test]
fn packets_lost_on_a_downlink_are_resent_from_the_relays_cache_within_200_ms() {
    let (mut sim, p) = call(11, &["alice", "bob", "carol"]);
    let (a, b, c) = (p[0], p[1], p[2]);
    // Bob NACKs the gaps he sees; 5% of what the relay sends him is lost, 20 ms away.
    sim.members[b].p.set_auto_feedback(true);
    let delay = 20 * MS;
    sim.set_downlink(b, LinkConfig::PERFECT.loss(0.05).delay(delay));
    let thumb = sim.member(a).ssrcs().thumbnail;
    let mut sent = Vec::new();
    for i in 0..2000u32 {
        sent.push(sim.now);
        sim.send(a, thumb, Pt(96), &i.to_be_bytes().repeat(100));
        sim.run_for_ms(5);
    }
    sim.run_for_ms(300);
    // When bob first decrypted each packet (by order of sending: alice's stream starts
    // at its first sequence number and never skips).
    let arrivals: Vec<&MediaArrival> = sim
        .member(b)
        .media_log
        .iter()
        .filter(|m| m.ssrc == thumb)
        .collect();
    let first_seq = arrivals.iter().map(|m| m.seq.0).min().unwrap();
    let mut first_at = vec![None; sent.len()];
    for m in &arrivals {
        let k = (m.seq.0 - first_seq) as usize;
        if let Some(slot) = first_at.get_mut(k) {
            slot.get_or_insert(m.at);
        }
    }
    // A packet that arrived later than the link's delay was lost once and resent.
    let late: Vec<Option<Duration>> = first_at
        .iter()
        .zip(&sent)
        .map(|(at, sent)| at.map(|at| at - *sent))
        .filter(|d| d.is_none_or(|d| d > delay))
        .collect();
    let within = late
        .iter()
        .filter(|d| d.is_some_and(|d| d <= 200 * MS))
        .count();
    assert!(late.len() >= 50, "about 5% of 2000 lost: {}", late.len());
    assert!(
        within * 10 >= late.len() * 9,
        "recovered within 200 ms: {within} of {} lost",
        late.len()
    );
    let resent: u64 = sim.shards.iter().map(|e| e.stats().nack_resent).sum();
    assert!(resent as usize >= within, "the relay resent them: {resent}");
    // Carol, on a perfect link, lost nothing (she decrypted each packet) and was sent
    // nothing twice (counted before SRTP, which drops a replay unseen).
    let carol = sim
        .member(c)
        .media_log
        .iter()
        .filter(|m| m.ssrc == thumb)
        .count();
    assert_eq!(carol, sent.len());
    assert_eq!(sim.member(c).rtp_copies_on(thumb), sent.len());
}
