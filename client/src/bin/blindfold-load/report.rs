//! The run's report.

use super::*;

/// What a run measured. Latency percentiles come from one histogram merging every
/// (receiver, stream)'s, so they are percentiles over all packets delivered.
pub(crate) struct Report {
    pub(crate) run_secs: f64,
    pub(crate) connect_secs: f64,
    pub(crate) sessions: usize,
    pub(crate) sent: u64,
    pub(crate) send_errors: u64,
    pub(crate) skipped: u64,
    pub(crate) expected: u64,
    pub(crate) delivered: u64,
    pub(crate) receiver_lost: u64,
    pub(crate) duplicates: u64,
    pub(crate) too_old: u64,
    pub(crate) integrity_failures: u64,
    pub(crate) drops: BTreeMap<String, u64>,
    pub(crate) latency: LatencyHistogram,
    pub(crate) io: IoStats,
    pub(crate) relay_cpu: Option<(f64, u64)>,
    pub(crate) own_cpu: f64,
    /// Host-wide UDP RcvbufErrors and SndbufErrors during the run and drain.
    pub(crate) udp_errors: Option<(u64, u64)>,
    /// Fixed-rate mode's figures, for the udp-blast format.
    pub(crate) blast: Option<BlastFields>,
}

/// What fixed-rate mode measured, in `udp-blast`'s terms (rates over the sending phase;
/// receptions include the drain, as udp-blast's sinks do).
pub(crate) struct BlastFields {
    pub(crate) offered_pps: f64,
    pub(crate) sent_pps: f64,
    pub(crate) shortfall_pps: f64,
    pub(crate) received_pps_per_sink: Vec<f64>,
    /// `1 - received / (offered × fan-out)`.
    pub(crate) loss: f64,
    /// `1 - received / (sent × fan-out)`.
    pub(crate) loss_after_send: f64,
    /// This process's (user, system) CPU seconds over the sending phase.
    pub(crate) own_split: (f64, f64),
    /// The relay's, if `--relay-pid` was given.
    pub(crate) relay_split: Option<(f64, f64)>,
    pub(crate) send_errors: u64,
    /// Datagrams the kernel dropped at the relay's socket and at the participants'
    /// sockets during sending and draining (`/proc/net/udp`), if readable.
    pub(crate) drops: (Option<u64>, Option<u64>),
}

impl Report {
    pub(crate) fn new(
        load: &Load,
        run_secs: f64,
        connect_secs: f64,
        relay_cpu: Option<(f64, u64)>,
        own_cpu: f64,
        udp_errors: Option<(u64, u64)>,
    ) -> Self {
        let ms = &load.members;
        let mut r = Report {
            run_secs,
            connect_secs,
            sessions: ms.len(),
            sent: 0,
            send_errors: 0,
            skipped: 0,
            expected: 0,
            delivered: 0,
            receiver_lost: 0,
            duplicates: 0,
            too_old: 0,
            integrity_failures: 0,
            drops: BTreeMap::new(),
            latency: LatencyHistogram::default(),
            io: load.io(),
            relay_cpu,
            own_cpu,
            udp_errors,
            blast: None,
        };
        for (i, m) in ms.iter().enumerate() {
            if let Some(d) = &m.driver {
                r.sent += d.stats().sent;
                r.send_errors += d.stats().send_errors;
                for (k, src) in d.sources().iter().enumerate() {
                    r.skipped += src.stats().skipped;
                    // Who should get this stream: the rest of the conference; the full
                    // layer only its full subscribers.
                    let receivers = ms
                        .iter()
                        .enumerate()
                        .filter(|(j, o)| {
                            *j != i && o.conf == m.conf && (k != 2 || o.full_subscriber)
                        })
                        .count() as u64;
                    r.expected += src.stats().packets * receivers;
                }
            }
            for s in m.rx.streams() {
                r.delivered += s.received;
                r.receiver_lost += s.lost();
                r.duplicates += s.duplicates;
                r.too_old += s.too_old;
                r.integrity_failures += s.integrity_failures;
                r.latency.merge(&s.latency);
            }
            r.latency.merge(&m.rtp_latency);
            for (reason, n) in m.p().iter().flat_map(|p| &p.stats().drops) {
                *r.drops.entry(format!("{reason:?}")).or_default() += n;
            }
            if let Some(other) = m.p().map(|p| p.stats().other_drops).filter(|&n| n > 0) {
                *r.drops.entry("other".into()).or_default() += other;
            }
        }
        r
    }

    /// The report as JSON (the default `--report-format load`).
    pub(crate) fn to_json(&self, args: &Args) -> String {
        let secs = self.run_secs.max(1e-9);
        let l = &self.latency;
        let relay_cpu = self.relay_cpu.map(|(s, _)| s);
        let report = LoadReport {
            config: LoadConfig {
                control: target_name(args),
                relay: args.relay.map(|a| a.to_string()),
                conferences: args.conferences,
                participants: args.participants,
                streams: args
                    .streams
                    .iter()
                    .map(|s| format!("{s:?}").to_lowercase())
                    .collect(),
                full_subscribers: args.full_subscribers,
                speakers: args.speakers,
                rate: args.rate,
                duration_s: args.duration,
                relay_pid: args.relay_pid,
            },
            sessions: self.sessions,
            connect_s: self.connect_secs,
            run_s: self.run_secs,
            sent_packets: self.sent,
            offered_pps: self.sent as f64 / secs,
            expected_deliveries: self.expected,
            delivered_packets: self.delivered,
            delivered_pps: self.delivered as f64 / secs,
            loss_ratio: 1.0 - ratio(self.delivered, self.expected).min(1.0),
            receiver_counted_lost: self.receiver_lost,
            duplicates: self.duplicates,
            too_old: self.too_old,
            integrity_failures: self.integrity_failures,
            decrypt_failures: self.drops.values().sum(),
            drops: &self.drops,
            source_skipped: self.skipped,
            send_rtp_errors: self.send_errors,
            udp: UdpCounters {
                datagrams_out: self.io.datagrams_out,
                datagrams_in: self.io.datagrams_in,
                send_would_block: self.io.send_would_block,
                send_errors: self.io.send_errors,
                recv_errors: self.io.recv_errors,
                host_rcvbuf_errors: self.udp_errors.map(|(r, _)| r),
                host_sndbuf_errors: self.udp_errors.map(|(_, s)| s),
            },
            latency_ns: Latency {
                method: if self.blast.is_some() {
                    "abs-send-time to recvmmsg return, every counted RTP datagram"
                } else {
                    "send time inside the encryption to decryption, every receiver's streams"
                },
                count: l.count(),
                min: l.min().unwrap_or(0),
                p50: l.quantile(0.5).unwrap_or(0),
                p99: l.quantile(0.99).unwrap_or(0),
                max: l.max().unwrap_or(0),
                mean: l.mean().unwrap_or(0),
            },
            relay_cpu_s: relay_cpu,
            relay_cpu_util: relay_cpu.map(|s| s / secs),
            relay_rss_kib: self.relay_cpu.map(|(_, rss)| rss),
            load_cpu_s: self.own_cpu,
            load_cpu_util: self.own_cpu / secs,
        };
        // Every field is a number, string, map or option: serialising cannot fail.
        serde_json::to_string(&report).unwrap_or_default()
    }

    /// The report as `udp-blast`'s JSON line (the fields `relay-vs-bare` reads). The
    /// relay's CPU, when known, is in `forwarder` (`cpu_user_s`, `cpu_sys_s`); its own
    /// sent count is unknown (metrics off), so `forwarder` has no `sent`.
    pub(crate) fn to_blast_json(&self, args: &Args) -> String {
        let Some(b) = &self.blast else {
            return "{}".into();
        };
        let secs = self.run_secs.max(1e-9);
        let (u, s) = b.own_split;
        let us = |ns: Option<u64>| ns.map(|n| n as f64 / 1000.0);
        let report = BlastReport {
            target: target_name(args),
            size: args.fixed_size.unwrap_or(0),
            senders: args.conferences,
            sinks: (1..=b.received_pps_per_sink.len())
                .map(|i| format!("participant {i}"))
                .collect(),
            duration_s: args.duration,
            rate_pps: args.fixed_pps.unwrap_or(0.0),
            offered_pps: b.offered_pps,
            sent_pps: b.sent_pps,
            shortfall_pps: b.shortfall_pps,
            received_pps_per_sink: b.received_pps_per_sink.clone(),
            received_pps_total: b.received_pps_per_sink.iter().sum(),
            loss: b.loss,
            loss_after_send: b.loss_after_send,
            cpu_user_s: u,
            cpu_sys_s: s,
            cpu_util: (u + s) / secs,
            forwarder: b.relay_split.map(|(ru, rs)| {
                serde_json::json!({
                    "cpu_user_s": ru,
                    "cpu_sys_s": rs,
                    "relay_rss_kib": self.relay_cpu.map(|(_, rss)| rss),
                })
            }),
            latency_samples: self.latency.count(),
            latency_p50_us: us(self.latency.quantile(0.5)),
            latency_p99_us: us(self.latency.quantile(0.99)),
            latency_max_us: us(self.latency.max()),
            drops_forwarder: b.drops.0,
            drops_sinks: b.drops.1,
            generator: Some("blindfold-load".into()),
            send_rtp_errors: Some(b.send_errors),
        };
        serde_json::to_string(&report).unwrap_or_default()
    }
}

/// The default report's JSON, field for field.
#[derive(serde::Serialize)]
struct LoadReport<'a> {
    config: LoadConfig,
    sessions: usize,
    connect_s: f64,
    run_s: f64,
    sent_packets: u64,
    offered_pps: f64,
    expected_deliveries: u64,
    delivered_packets: u64,
    delivered_pps: f64,
    loss_ratio: f64,
    receiver_counted_lost: u64,
    duplicates: u64,
    too_old: u64,
    integrity_failures: u64,
    decrypt_failures: u64,
    drops: &'a BTreeMap<String, u64>,
    source_skipped: u64,
    send_rtp_errors: u64,
    udp: UdpCounters,
    latency_ns: Latency,
    relay_cpu_s: Option<f64>,
    relay_cpu_util: Option<f64>,
    relay_rss_kib: Option<u64>,
    load_cpu_s: f64,
    load_cpu_util: f64,
}

/// The flags the run had.
#[derive(serde::Serialize)]
struct LoadConfig {
    control: String,
    relay: Option<String>,
    conferences: usize,
    participants: usize,
    streams: Vec<String>,
    full_subscribers: usize,
    speakers: usize,
    rate: f64,
    duration_s: f64,
    relay_pid: Option<u32>,
}

/// The generator's own socket counters and the host's UDP buffer errors.
#[derive(serde::Serialize)]
struct UdpCounters {
    datagrams_out: u64,
    datagrams_in: u64,
    send_would_block: u64,
    send_errors: u64,
    recv_errors: u64,
    host_rcvbuf_errors: Option<u64>,
    host_sndbuf_errors: Option<u64>,
}

/// One-way latency over every packet delivered, nanoseconds.
#[derive(serde::Serialize)]
struct Latency {
    method: &'static str,
    count: u64,
    min: u64,
    p50: u64,
    p99: u64,
    max: u64,
    mean: u64,
}
