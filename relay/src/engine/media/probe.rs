//! Downlink probes: whether a receiver's link carries a rate before the relay sends it
//! that rate in media.
//!
//! A receiver that gets only thumbnails cannot show room for a full layer: its
//! estimate is bounded by what it is sent. Trying the layer blind costs a link that
//! cannot carry it a keyframe's worth of queue, and with a small buffer its audio.
//! Instead, the relay first sends the receiver a short *cluster* of padding packets
//! (hop-by-hop SRTCP, APP `BFPR`, `wire::rtcp::Probe`) paced at the rate the switch
//! would need, and the receiver reports what arrived (`wire::rtcp::ProbeReport`):
//! the bytes of everything it received from the relay between the cluster's first and
//! last packet, and how long that took. A link that cannot carry the rate queues the
//! cluster and delivers it at its own capacity; one that can delivers it as paced.
//! `docs/protocol.md`, "Probes", is the participant's side.
//!
//! [`Prober`] is one receiver's: one cluster at a time, numbered per receiver. A cluster
//! lasts about [`CLUSTER_TIME`]: at least [`MIN_PACKETS`] packets of at most
//! [`MAX_PACKET`] bytes (more packets for a higher rate, up to [`MAX_PACKETS`]; above
//! that the cluster is shorter). Packets that fell due while the engine was busy go
//! out together, so the cluster keeps its planned length. The verdict
//! ([`ProbeOutcome`]):
//!
//! - **Carried** when every packet arrived and the link delivered at least
//!   [`PASS`] of the rate the cluster was sent at (its target, or less if timers sent
//!   its last packets late: the receiver measures from the first packet to the last).
//! - **Short** when it delivered less, some probe packets were lost, or — for a
//!   receiver that has answered a probe before — no report came within
//!   [`REPORT_TIMEOUT`] of the last packet (the link is too congested to answer).
//!   When every packet arrived, only slower than sent, the link queued the cluster
//!   and delivered it at its own rate: the verdict carries that rate, a measure of
//!   what the link carries (layer choice uses it to bring a layer down to the link,
//!   `layers.rs`).
//! - **Unanswered** when no report came and the receiver never answered one: it does
//!   not implement probes, and the caller decides without (the layer choice tries the
//!   layer, as it would without probes).
//!
//! A cluster costs a link that cannot carry it a queue of its bytes (about 4–20 KB,
//! well under a home router's buffer) for the time the link takes to drain them: no
//! loss, and far less than a keyframe of the layer.
//!
//! Sans-IO: time comes in as `now`; nothing is allocated.

use std::time::{Duration, Instant};

use crate::wire::rtcp::{PROBE_MIN_LEN, Probe, ProbeReport};

/// A cluster's planned length.
pub(crate) const CLUSTER_TIME: Duration = Duration::from_millis(20);
/// A cluster has at least this many packets (the rate is measured over the gaps
/// between them).
pub(crate) const MIN_PACKETS: u8 = 5;
/// … and at most this many.
pub(crate) const MAX_PACKETS: u8 = 20;
/// The largest probe packet before SRTCP protection (with it, under 1200 bytes).
pub(crate) const MAX_PACKET: usize = 1100;
/// A cluster passes when the link delivered this fraction of its target.
pub(crate) const PASS: f64 = 0.9;
/// A report later than this after the cluster's last packet is not waited for.
pub(crate) const REPORT_TIMEOUT: Duration = Duration::from_secs(1);

/// What a cluster showed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProbeOutcome {
    /// The link carried the target rate.
    Carried,
    /// It did not (or the receiver's answer never came). When every packet arrived,
    /// only slower than sent, the link queued the cluster and delivered it at its own
    /// capacity: that rate (what the receiver's report measured), else `None`.
    Short(Option<u64>),
    /// No answer from a receiver that never answered one.
    Unanswered,
}

/// One probe packet to send: its fields and its length before protection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProbePacket {
    pub probe: Probe,
    pub len: usize,
}

#[derive(Debug, Clone, Copy)]
struct Cluster {
    id: u16,
    count: u8,
    sent: u8,
    len: usize,
    /// When the first packet was due, and the spacing of the rest.
    start: Instant,
    interval: Duration,
    target_bps: u64,
    /// When the first packet went out.
    first: Option<Instant>,
    /// When the last packet went out.
    done: Option<Instant>,
}

impl Cluster {
    fn due(&self, i: u8) -> Instant {
        self.start + self.interval * u32::from(i)
    }

    /// The rate the cluster was sent at: its target, or less if the engine's timer
    /// sent its last packets late (the receiver's window runs from the first packet to
    /// the last, as the relay's does here).
    fn offered_bps(&self) -> u64 {
        let (Some(first), Some(done)) = (self.first, self.done) else {
            return self.target_bps;
        };
        let bytes = (self.len * usize::from(self.count - 1)) as f64;
        let secs = done.saturating_duration_since(first).as_secs_f64();
        match secs > 0.0 {
            true => self.target_bps.min((bytes * 8.0 / secs) as u64),
            false => self.target_bps,
        }
    }
}

/// One receiver's downlink probes.
#[derive(Debug, Default)]
pub(crate) struct Prober {
    next_id: u16,
    cluster: Option<Cluster>,
    /// The receiver has answered a probe.
    answered: bool,
}

impl Prober {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Whether a cluster is out (sending, or waiting for its report).
    #[cfg(test)]
    pub(crate) fn busy(&self) -> bool {
        self.cluster.is_some()
    }

    /// Starts a cluster at `target_bps`, its first packet due now. False (and nothing
    /// started) while one is out or for a target of 0.
    pub(crate) fn start(&mut self, now: Instant, target_bps: u64) -> bool {
        if self.cluster.is_some() || target_bps == 0 {
            return false;
        }
        let bytes = (target_bps as f64 * CLUSTER_TIME.as_secs_f64() / 8.0) as usize;
        let count = bytes
            .div_ceil(MAX_PACKET)
            .clamp(usize::from(MIN_PACKETS), usize::from(MAX_PACKETS));
        let len = (bytes / count).clamp(PROBE_MIN_LEN, MAX_PACKET) & !3;
        // Paced at the target, but over no more than the cluster's time: a target too
        // low for the smallest packets is probed at more than it needs.
        let spread = CLUSTER_TIME / (count as u32 - 1);
        let interval = Duration::from_secs_f64(len as f64 * 8.0 / target_bps as f64).min(spread);
        self.cluster = Some(Cluster {
            id: self.next_id,
            count: count as u8,
            sent: 0,
            len,
            start: now,
            interval,
            target_bps,
            first: None,
            done: None,
        });
        self.next_id = self.next_id.wrapping_add(1);
        true
    }

    /// The next probe packet due at `now`, if any (call until `None`: packets that
    /// fell due meanwhile come at once).
    pub(crate) fn poll_packet(&mut self, now: Instant) -> Option<ProbePacket> {
        let c = self.cluster.as_mut()?;
        if c.sent == c.count || c.due(c.sent) > now {
            return None;
        }
        let probe = Probe {
            cluster: c.id,
            index: c.sent,
            count: c.count,
        };
        c.sent += 1;
        c.first.get_or_insert(now);
        if c.sent == c.count {
            c.done = Some(now);
        }
        Some(ProbePacket { probe, len: c.len })
    }

    /// When [`Self::poll_packet`] or [`Self::handle_timeout`] has something next.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        let c = self.cluster.as_ref()?;
        match c.done {
            Some(done) => Some(done + REPORT_TIMEOUT),
            None => Some(c.due(c.sent)),
        }
    }

    /// The receiver's report on a cluster: the verdict if it is about the cluster out
    /// (whose packets have all been sent); other reports are ignored.
    pub(crate) fn handle_report(&mut self, report: &ProbeReport) -> Option<ProbeOutcome> {
        let c = self.cluster?;
        if report.cluster != c.id || c.done.is_none() {
            return None;
        }
        self.cluster = None;
        self.answered = true;
        let whole = report.received >= c.count;
        let delivered = report.delivered_bps();
        Some(
            match (whole, delivered as f64 >= PASS * c.offered_bps() as f64) {
                (true, true) => ProbeOutcome::Carried,
                (true, false) => ProbeOutcome::Short(Some(delivered)),
                (false, _) => ProbeOutcome::Short(None),
            },
        )
    }

    /// Time passed: the verdict on a cluster whose report is overdue.
    pub(crate) fn handle_timeout(&mut self, now: Instant) -> Option<ProbeOutcome> {
        let done = self.cluster?.done?;
        if now < done + REPORT_TIMEOUT {
            return None;
        }
        self.cluster = None;
        Some(match self.answered {
            true => ProbeOutcome::Short(None),
            false => ProbeOutcome::Unanswered,
        })
    }
}

#[cfg(test)]
mod tests {
    // One arbitrary base instant; everything after it is simulated.
    #![allow(clippy::disallowed_methods)]

    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// Sends the whole cluster as the engine would, polling every millisecond: the
    /// packets and when each went out.
    fn send_all(p: &mut Prober, t0: Instant) -> Vec<(Instant, ProbePacket)> {
        let mut out = Vec::new();
        for ms in 0..100u32 {
            let now = t0 + MS * ms;
            while let Some(pkt) = p.poll_packet(now) {
                out.push((now, pkt));
            }
        }
        out
    }

    /// A 1.5 Mbit/s cluster, started at `t0` and sent whole.
    fn sent_cluster(p: &mut Prober, t0: Instant) {
        assert!(p.start(t0, 1_500_000));
        send_all(p, t0);
    }

    fn report(cluster: u16, received: u8, bytes: u32, duration_us: u32) -> ProbeReport {
        ProbeReport {
            cluster,
            received,
            bytes,
            duration_us,
        }
    }

    #[test]
    fn a_cluster_is_paced_at_its_target_for_about_20_ms() {
        let t0 = Instant::now();
        let mut p = Prober::new();
        assert!(p.start(t0, 1_500_000));
        assert!(!p.start(t0, 1_500_000), "one at a time");
        let sent = send_all(&mut p, t0);
        // 1.5 Mbit/s for 20 ms is 3750 bytes: 5 packets of 748 (a multiple of 4).
        assert_eq!(sent.len(), 5);
        assert!(sent.iter().all(|(_, k)| k.len == 748 && k.probe.count == 5));
        let idx: Vec<u8> = sent.iter().map(|(_, k)| k.probe.index).collect();
        assert_eq!(idx, [0, 1, 2, 3, 4]);
        // 748 bytes at 1.5 Mbit/s: one every 3.99 ms (sent on the next millisecond).
        let at: Vec<u128> = sent.iter().map(|(t, _)| (*t - t0).as_millis()).collect();
        assert_eq!(at, [0, 4, 8, 12, 16]);
        // A faster target takes more packets, at most 20 (then a shorter cluster); a
        // slow one at least 5, smaller.
        let mut fast = Prober::new();
        fast.start(t0, 10_000_000);
        let f = send_all(&mut fast, t0);
        assert_eq!((f.len(), f[0].1.len), (20, 1100));
        let mut slow = Prober::new();
        slow.start(t0, 200_000);
        let s = send_all(&mut slow, t0);
        assert_eq!((s.len(), s[0].1.len), (5, 100));
        // A target too low for 5 of the smallest packets in 20 ms is probed at more.
        let mut tiny = Prober::new();
        tiny.start(t0, 1000);
        let s = send_all(&mut tiny, t0);
        assert_eq!((s.len(), s[0].1.len), (5, PROBE_MIN_LEN));
        assert_eq!(s[4].0 - t0, CLUSTER_TIME);
    }

    #[test]
    fn packets_that_fell_due_go_at_once() {
        let t0 = Instant::now();
        let mut p = Prober::new();
        p.start(t0, 1_500_000);
        assert!(p.poll_packet(t0).is_some());
        assert!(p.poll_packet(t0).is_none());
        let next = p.poll_timeout().unwrap() - t0;
        assert!(
            next > Duration::from_micros(3980) && next < 4 * MS,
            "{next:?}"
        );
        // The engine was busy for 9 ms: two packets were due.
        let late = t0 + 9 * MS;
        assert_eq!(std::iter::from_fn(|| p.poll_packet(late)).count(), 2);
    }

    #[test]
    fn the_verdict_follows_what_the_link_delivered() {
        let t0 = Instant::now();
        let mut p = Prober::new();
        // No report from a receiver that never answered: unanswered.
        sent_cluster(&mut p, t0);
        let done = t0 + 16 * MS;
        assert_eq!(p.poll_timeout(), Some(done + REPORT_TIMEOUT));
        assert_eq!(p.handle_timeout(done + 999 * MS), None);
        assert_eq!(
            p.handle_timeout(done + REPORT_TIMEOUT),
            Some(ProbeOutcome::Unanswered)
        );
        assert!(!p.busy());

        // Cluster 1: the link delivered 1.5 Mbit/s (4680 bytes in 25 ms): carried.
        sent_cluster(&mut p, t0);
        assert_eq!(p.handle_report(&report(0, 6, 4680, 25_000)), None, "stale");
        assert_eq!(
            p.handle_report(&report(1, 6, 4680, 25_000)),
            Some(ProbeOutcome::Carried)
        );
        // Cluster 2: at 300 kbit/s the same bytes take 125 ms: short, and the link's
        // rate measured.
        sent_cluster(&mut p, t0);
        assert_eq!(
            p.handle_report(&report(2, 6, 4680, 124_800)),
            Some(ProbeOutcome::Short(Some(300_000)))
        );
        // Cluster 3: fast, but a packet was lost: short, and nothing measured (the
        // link dropped what it could not queue).
        sent_cluster(&mut p, t0);
        assert_eq!(
            p.handle_report(&report(3, 4, 4680, 25_000)),
            Some(ProbeOutcome::Short(None))
        );
        // Cluster 4: no report now that the receiver answers probes: short.
        sent_cluster(&mut p, t0);
        assert_eq!(
            p.handle_timeout(t0 + 2 * REPORT_TIMEOUT),
            Some(ProbeOutcome::Short(None))
        );
        // Cluster 5: a timer every 10 ms sent the 5 packets (748 bytes each) over 20
        // ms, at 1.2 Mbit/s: a link that kept up with that carried it.
        p.start(t0, 1_500_000);
        for ms in [0, 10, 20] {
            while p.poll_packet(t0 + MS * ms).is_some() {}
        }
        assert_eq!(
            p.handle_report(&report(5, 5, 4 * 770, 20_000)),
            Some(ProbeOutcome::Carried)
        );
    }

    #[test]
    fn a_report_before_the_last_packet_went_out_is_not_a_verdict() {
        let t0 = Instant::now();
        let mut p = Prober::new();
        p.start(t0, 1_500_000);
        p.poll_packet(t0);
        assert_eq!(p.handle_report(&report(0, 6, 4680, 25_000)), None);
        assert!(p.busy());
        assert_eq!(p.handle_timeout(t0 + 10 * REPORT_TIMEOUT), None);
    }
}
