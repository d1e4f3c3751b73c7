//! The JSON reports of the load tools, through serde: [`BlastReport`] is the one line
//! that `udp-blast` and `blindfold-load --report-format udp-blast` print and
//! `relay-vs-bare` reads back.

/// The JSON report of a fixed-rate run (one line on stdout), read back by `relay-vs-bare`.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BlastReport {
    /// Where the load went.
    pub target: String,
    /// Datagram size, bytes.
    pub size: usize,
    /// Source sockets.
    pub senders: usize,
    /// Sinks counted (the fan-out expected of the forwarder).
    pub sinks: Vec<String>,
    /// Length of the sending phase asked for, seconds.
    pub duration_s: f64,
    /// The rate asked for, packets/s.
    pub rate_pps: f64,
    /// Packets scheduled per second of the actual sending phase.
    pub offered_pps: f64,
    /// Packets the kernel accepted per second.
    pub sent_pps: f64,
    /// Packets the generator could not send on time (it was the limit), per second.
    pub shortfall_pps: f64,
    /// Datagrams received per second on each sink (over the sending phase).
    pub received_pps_per_sink: Vec<f64>,
    /// Their sum: the delivered egress rate.
    pub received_pps_total: f64,
    /// `1 - received / (offered × sinks)`: everything lost between the schedule and the
    /// sinks. 0 without sinks.
    pub loss: f64,
    /// `1 - received / (sent × sinks)`: only what the path after the generator lost.
    pub loss_after_send: f64,
    /// This process's user CPU during sending and draining, seconds (all threads).
    pub cpu_user_s: f64,
    /// Its system CPU, seconds.
    pub cpu_sys_s: f64,
    /// `(user + sys) / wall` over the same window: near 1.0 means the generator and the
    /// sinks saturate their core and the numbers are the generator's limit.
    pub cpu_util: f64,
    /// The spawned forwarder's final JSON line, if one was spawned.
    pub forwarder: Option<serde_json::Value>,
    /// Datagrams whose one-way latency was measured (stamped ones that reached a sink).
    #[serde(default)]
    pub latency_samples: u64,
    /// Median one-way latency, generator to sink, microseconds (None: nothing timed).
    #[serde(default)]
    pub latency_p50_us: Option<f64>,
    /// Its 99th percentile.
    #[serde(default)]
    pub latency_p99_us: Option<f64>,
    /// Its maximum.
    #[serde(default)]
    pub latency_max_us: Option<f64>,
    /// Datagrams the kernel dropped at the target's socket(s) during the run, full
    /// receive queue: the forwarder was the limit (`/proc/net/udp`; None: unreadable).
    #[serde(default)]
    pub drops_forwarder: Option<u64>,
    /// Datagrams dropped at the sinks' sockets: the generator's side was the limit.
    #[serde(default)]
    pub drops_sinks: Option<u64>,
    /// Which generator wrote it (`blindfold-load`; absent from `udp-blast`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generator: Option<String>,
    /// RTP packets the generator failed to build or protect (`blindfold-load` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_rtp_errors: Option<u64>,
}
