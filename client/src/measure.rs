//! Receive-side measurement of synthetic media ([`crate::source`]): per (sender, stream)
//! counts of received, lost, duplicate, reordered and corrupted packets, and one-way
//! latency percentiles, from the [`Probe`] in each decrypted payload.
//!
//! Memory per stream is fixed, about 2.5 KB whatever the run's length: a 2048-packet
//! window for duplicates and a log-linear latency histogram (about 3% precision).
//!
//! ```no_run
//! # use std::time::Instant;
//! # use blindfold_client::{Event, Participant, Receiver};
//! # fn run(p: &mut Participant, epoch: Instant, now: Instant) {
//! let mut rx = Receiver::new(epoch); // the senders' epoch
//! while let Some(ev) = p.poll_event() {
//!     rx.handle_event(now, &ev);
//! }
//! println!("{}", rx.summary().to_json());
//! # }
//! ```

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::Instant;

use blindfold_relay::id::Ssrc;

use crate::source::{Probe, ProbeError, nanos_since};
use crate::{Event, MediaPacket, SenderId};

/// Packets behind the highest sequence number still checked for duplicates; older ones
/// are counted as [`StreamStats::too_old`] and otherwise ignored.
pub const REORDER_WINDOW: u64 = 2048;

/// Why a packet counted as an integrity failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IntegrityError {
    /// The probe did not decode or verify.
    #[error("probe: {0}")]
    Probe(ProbeError),
    /// The probe names another stream than the SSRC it arrived on.
    #[error("probe for stream {probe} arrived on SSRC {ssrc}")]
    WrongStream {
        /// The probe's stream.
        probe: Ssrc,
        /// The packet's SSRC.
        ssrc: Ssrc,
    },
    /// The probe's sender differs from earlier packets of the stream.
    #[error("probe sender changed within a stream")]
    SenderChanged,
}

/// How an intact packet was counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// A new highest sequence number (possibly after a gap).
    InOrder,
    /// Below the highest, not seen before: fills a gap.
    Reordered,
    /// Seen before.
    Duplicate,
    /// More than [`REORDER_WINDOW`] behind the highest: not counted.
    TooOld,
}

// ---------------------------------------------------------------------------------------
// Where the kernel dropped.

/// Datagrams the kernel dropped at the UDP sockets bound to any of `ports` (their
/// receive queues were full): the `drops` column of `/proc/net/udp` and `/proc/net/udp6`,
/// summed over every matching socket. `None` if neither file could be read (not Linux).
///
/// A load generator reads this for the forwarder's port and for its own receivers'
/// ports to say where loss happened: at the forwarder (it was the limit) or at the
/// receivers (the generator was).
pub fn udp_socket_drops(ports: &[u16]) -> Option<u64> {
    let mut found = false;
    let mut drops = 0u64;
    for path in ["/proc/net/udp", "/proc/net/udp6"] {
        let Ok(text) = std::fs::read_to_string(path) else {
            continue;
        };
        found = true;
        drops += proc_net_udp_drops(&text, ports);
    }
    found.then_some(drops)
}

/// The sum of the `drops` column over the rows of a `/proc/net/udp` text whose local
/// port is in `ports`. Rows that do not parse are skipped.
fn proc_net_udp_drops(text: &str, ports: &[u16]) -> u64 {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (_, port) = fields.get(1)?.rsplit_once(':')?;
            let port = u16::from_str_radix(port, 16).ok()?;
            ports
                .contains(&port)
                .then(|| fields.last()?.parse::<u64>().ok())?
        })
        .sum()
}

// ---------------------------------------------------------------------------------------
// Latency histogram.

/// Buckets count whole microseconds: exact below 2^(SUB_BITS+1) µs, then 2^SUB_BITS
/// buckets per power of two.
const SUB_BITS: u32 = 4;
const SUB: u64 = 1 << SUB_BITS;
const EXACT: u64 = 2 * SUB;
/// Values from 2^(MAX_MSB+1) µs (about 71 minutes) on share the last bucket.
const MAX_MSB: u32 = 31;
const BUCKETS: usize = (EXACT + (MAX_MSB - SUB_BITS) as u64 * SUB) as usize;

/// A fixed-size log-linear histogram of latencies (464 counters, under 2 KB, however
/// many samples): whole microseconds, exact below 32 µs, then 16 buckets per power of
/// two, so a percentile is within about 3% (and 1 µs). Count, minimum, maximum and mean
/// are exact, in nanoseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LatencyHistogram {
    buckets: Box<[u32]>,
    count: u64,
    sum: u128,
    min: u64,
    max: u64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram {
            buckets: vec![0; BUCKETS].into_boxed_slice(),
            count: 0,
            sum: 0,
            min: u64::MAX,
            max: 0,
        }
    }
}

/// The bucket of a value in microseconds.
fn bucket_of(us: u64) -> usize {
    if us < EXACT {
        return us as usize;
    }
    let v = us.min((1u64 << (MAX_MSB + 1)) - 1);
    let msb = 63 - v.leading_zeros();
    let sub = (v >> (msb - SUB_BITS)) & (SUB - 1);
    (EXACT + u64::from(msb - SUB_BITS - 1) * SUB + sub) as usize
}

/// The lowest and highest microsecond of bucket `i`.
fn bucket_range(i: usize) -> (u64, u64) {
    let i = i as u64;
    if i < EXACT {
        return (i, i);
    }
    let group = (i - EXACT) / SUB;
    let sub = (i - EXACT) % SUB;
    let shift = group + 1;
    let lo = (SUB + sub) << shift;
    (lo, lo + (1 << shift) - 1)
}

impl LatencyHistogram {
    /// Adds one sample.
    pub fn record(&mut self, nanos: u64) {
        let b = &mut self.buckets[bucket_of(nanos / 1000)];
        *b = b.saturating_add(1);
        self.count += 1;
        self.sum += u128::from(nanos);
        self.min = self.min.min(nanos);
        self.max = self.max.max(nanos);
    }

    /// Adds every sample of `other` (for percentiles over many streams: the merged
    /// histogram is the one that would have recorded both streams' samples).
    pub fn merge(&mut self, other: &LatencyHistogram) {
        for (a, b) in self.buckets.iter_mut().zip(other.buckets.iter()) {
            *a = a.saturating_add(*b);
        }
        self.count += other.count;
        self.sum += other.sum;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }

    /// Number of samples.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Smallest sample (exact), if any.
    pub fn min(&self) -> Option<u64> {
        (self.count > 0).then_some(self.min)
    }

    /// Largest sample (exact), if any.
    pub fn max(&self) -> Option<u64> {
        (self.count > 0).then_some(self.max)
    }

    /// Mean (exact, rounded down), if any.
    pub fn mean(&self) -> Option<u64> {
        (self.count > 0).then(|| (self.sum / u128::from(self.count)) as u64)
    }

    /// The `q` quantile (0.0..=1.0; 0.5 is the median): the ⌈q·count⌉-th smallest
    /// sample — exact for the smallest and largest, otherwise the midpoint of its bucket
    /// clamped to the exact min and max.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        if self.count == 0 {
            return None;
        }
        let q = if q.is_nan() { 0.5 } else { q.clamp(0.0, 1.0) };
        let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
        // The extremes are known exactly.
        if rank == self.count {
            return Some(self.max);
        }
        if rank == 1 {
            return Some(self.min);
        }
        let mut seen = 0;
        for (i, &n) in self.buckets.iter().enumerate() {
            seen += u64::from(n);
            if seen >= rank {
                let (lo, hi) = bucket_range(i);
                // The middle of [lo µs, hi µs + 999 ns].
                let mid = (lo * 1000).saturating_add((hi - lo + 1) * 500);
                return Some(mid.clamp(self.min, self.max));
            }
        }
        Some(self.max)
    }
}

// ---------------------------------------------------------------------------------------
// Per-stream state.

const WORDS: usize = (REORDER_WINDOW / 64) as usize;

/// Which sequence numbers in `(highest − REORDER_WINDOW, highest]` arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SeqWindow {
    bits: [u64; WORDS],
}

impl SeqWindow {
    fn slot(seq: u64) -> (usize, u64) {
        let i = seq % REORDER_WINDOW;
        ((i / 64) as usize, 1 << (i % 64))
    }
    fn get(&self, seq: u64) -> bool {
        let (w, b) = Self::slot(seq);
        self.bits[w] & b != 0
    }
    fn set(&mut self, seq: u64) {
        let (w, b) = Self::slot(seq);
        self.bits[w] |= b;
    }
    /// Clears the slots of `from..=to` (about to be reused by a new highest).
    fn clear(&mut self, from: u64, to: u64) {
        if to - from + 1 >= REORDER_WINDOW {
            self.bits = [0; WORDS];
            return;
        }
        for s in from..=to {
            let (w, b) = Self::slot(s);
            self.bits[w] &= !b;
        }
    }
}

/// What one receiver measured for one (sender, stream).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamStats {
    /// The sender (whose key decrypted the packets).
    pub sender: SenderId,
    /// The stream's SSRC.
    pub ssrc: Ssrc,
    /// The sender id in the stream's probes.
    pub probe_sender: Option<SenderId>,
    /// Distinct intact packets within the window (in order or reordered).
    pub received: u64,
    /// Their payload bytes.
    pub bytes: u64,
    /// Intact packets seen before.
    pub duplicates: u64,
    /// Intact packets that arrived below the highest sequence number and filled a gap.
    pub reordered: u64,
    /// Intact packets more than [`REORDER_WINDOW`] behind: not counted as received.
    pub too_old: u64,
    /// Packets whose probe failed to decode or verify, or named another stream or sender.
    pub integrity_failures: u64,
    /// Lowest probe sequence number counted.
    pub first_seq: Option<u64>,
    /// Highest probe sequence number seen.
    pub highest_seq: Option<u64>,
    /// First and last arrival of an intact packet.
    pub first_arrival: Option<Instant>,
    /// Last arrival of an intact packet.
    pub last_arrival: Option<Instant>,
    /// One-way latency of counted packets (receive time − probe send time).
    pub latency: LatencyHistogram,
    window: SeqWindow,
}

impl StreamStats {
    fn new(sender: SenderId, ssrc: Ssrc) -> Self {
        StreamStats {
            sender,
            ssrc,
            probe_sender: None,
            received: 0,
            bytes: 0,
            duplicates: 0,
            reordered: 0,
            too_old: 0,
            integrity_failures: 0,
            first_seq: None,
            highest_seq: None,
            first_arrival: None,
            last_arrival: None,
            latency: LatencyHistogram::default(),
            window: SeqWindow { bits: [0; WORDS] },
        }
    }

    /// Packets expected: from the lowest to the highest sequence number counted.
    pub fn expected(&self) -> u64 {
        match (self.first_seq, self.highest_seq) {
            (Some(f), Some(h)) => (h - f).saturating_add(1),
            _ => 0,
        }
    }

    /// Packets lost: expected but not received (late arrivals within the window reduce
    /// it; packets after the last one received cannot be seen).
    pub fn lost(&self) -> u64 {
        self.expected().saturating_sub(self.received)
    }

    fn arrive(&mut self, seq: u64) -> Arrival {
        let Some(high) = self.highest_seq else {
            self.first_seq = Some(seq);
            self.highest_seq = Some(seq);
            self.window.set(seq);
            return Arrival::InOrder;
        };
        if seq > high {
            self.window.clear(high + 1, seq);
            self.window.set(seq);
            self.highest_seq = Some(seq);
            return Arrival::InOrder;
        }
        if high - seq >= REORDER_WINDOW {
            return Arrival::TooOld;
        }
        if self.window.get(seq) {
            return Arrival::Duplicate;
        }
        self.window.set(seq);
        if self.first_seq.is_some_and(|f| seq < f) {
            self.first_seq = Some(seq);
        }
        Arrival::Reordered
    }

    fn summary(&self) -> StreamSummary {
        let l = &self.latency;
        let span = match (self.first_arrival, self.last_arrival) {
            (Some(a), Some(b)) => b.saturating_duration_since(a).as_secs_f64(),
            _ => 0.0,
        };
        StreamSummary {
            sender: self.sender,
            ssrc: self.ssrc,
            received: self.received,
            lost: self.lost(),
            duplicates: self.duplicates,
            reordered: self.reordered,
            too_old: self.too_old,
            integrity_failures: self.integrity_failures,
            bytes: self.bytes,
            bitrate_bps: if span > 0.0 {
                (self.bytes as f64 * 8.0 / span) as u64
            } else {
                0
            },
            latency: LatencySummary {
                count: l.count(),
                min_ns: l.min().unwrap_or(0),
                p50_ns: l.quantile(0.5).unwrap_or(0),
                p99_ns: l.quantile(0.99).unwrap_or(0),
                max_ns: l.max().unwrap_or(0),
                mean_ns: l.mean().unwrap_or(0),
            },
        }
    }
}

// ---------------------------------------------------------------------------------------
// The receiver.

/// Receive-side measurement over every (sender, stream) seen (sans-IO: `now` comes in).
#[derive(Debug, Clone)]
pub struct Receiver {
    epoch: Instant,
    streams: Vec<StreamStats>,
    index: HashMap<(SenderId, Ssrc), usize>,
}

impl Receiver {
    /// A receiver measuring latency against `epoch`, the senders' epoch.
    pub fn new(epoch: Instant) -> Self {
        Receiver {
            epoch,
            streams: Vec::new(),
            index: HashMap::new(),
        }
    }

    /// Records [`Event::Media`] (other events are ignored). Returns whether it was
    /// media.
    pub fn handle_event(&mut self, now: Instant, event: &Event) -> bool {
        match event {
            Event::Media(m) => {
                let _ = self.record_media(now, m);
                true
            }
            _ => false,
        }
    }

    /// Records a decrypted media packet.
    pub fn record_media(
        &mut self,
        now: Instant,
        m: &MediaPacket,
    ) -> Result<Arrival, IntegrityError> {
        self.record(now, m.sender, m.ssrc, m.payload())
    }

    /// Records one payload received at `now` from `sender` on `ssrc`. Counts it under
    /// (sender, ssrc) and returns how.
    ///
    /// An integrity failure (returned and counted) is a probe that does not decode or
    /// verify ([`IntegrityError::Probe`]), one naming another stream
    /// ([`IntegrityError::WrongStream`]), or another sender than the stream's earlier
    /// probes ([`IntegrityError::SenderChanged`]).
    pub fn record(
        &mut self,
        now: Instant,
        sender: SenderId,
        ssrc: Ssrc,
        payload: &[u8],
    ) -> Result<Arrival, IntegrityError> {
        let at = *self.index.entry((sender, ssrc)).or_insert_with(|| {
            self.streams.push(StreamStats::new(sender, ssrc));
            self.streams.len() - 1
        });
        let s = &mut self.streams[at];
        let checked = Probe::decode(payload)
            .map_err(IntegrityError::Probe)
            .and_then(|p| {
                if p.stream != ssrc {
                    Err(IntegrityError::WrongStream {
                        probe: p.stream,
                        ssrc,
                    })
                } else if s.probe_sender.is_some_and(|e| e != p.sender) {
                    Err(IntegrityError::SenderChanged)
                } else {
                    Ok(p)
                }
            });
        let probe = match checked {
            Ok(p) => p,
            Err(e) => {
                s.integrity_failures += 1;
                return Err(e);
            }
        };
        s.probe_sender = Some(probe.sender);
        let arrival = s.arrive(probe.seq);
        match arrival {
            Arrival::Duplicate => s.duplicates += 1,
            Arrival::TooOld => s.too_old += 1,
            Arrival::InOrder | Arrival::Reordered => {
                if arrival == Arrival::Reordered {
                    s.reordered += 1;
                }
                s.received += 1;
                s.bytes += payload.len() as u64;
                s.first_arrival.get_or_insert(now);
                s.last_arrival = Some(now);
                let sent = probe.send_time_ns;
                s.latency
                    .record(nanos_since(self.epoch, now).saturating_sub(sent));
            }
        }
        Ok(arrival)
    }

    /// Every stream seen, in order of first arrival.
    pub fn streams(&self) -> &[StreamStats] {
        &self.streams
    }

    /// One stream's measurements.
    pub fn stream(&self, sender: SenderId, ssrc: Ssrc) -> Option<&StreamStats> {
        self.index
            .get(&(sender, ssrc))
            .and_then(|&i| self.streams.get(i))
    }

    /// A snapshot of every stream.
    pub fn summary(&self) -> Summary {
        Summary {
            streams: self.streams.iter().map(StreamStats::summary).collect(),
        }
    }
}

/// Latency figures of a stream, in nanoseconds (0 when there are no samples).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LatencySummary {
    /// Samples.
    pub count: u64,
    /// Smallest.
    pub min_ns: u64,
    /// Median (bucket precision).
    pub p50_ns: u64,
    /// 99th percentile (bucket precision).
    pub p99_ns: u64,
    /// Largest.
    pub max_ns: u64,
    /// Mean.
    pub mean_ns: u64,
}

/// A stream's figures in a [`Summary`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamSummary {
    /// The sender.
    pub sender: SenderId,
    /// The stream.
    pub ssrc: Ssrc,
    /// See [`StreamStats::received`].
    pub received: u64,
    /// See [`StreamStats::lost`].
    pub lost: u64,
    /// See [`StreamStats::duplicates`].
    pub duplicates: u64,
    /// See [`StreamStats::reordered`].
    pub reordered: u64,
    /// See [`StreamStats::too_old`].
    pub too_old: u64,
    /// See [`StreamStats::integrity_failures`].
    pub integrity_failures: u64,
    /// Payload bytes received.
    pub bytes: u64,
    /// Payload bitrate between the first and last arrival.
    pub bitrate_bps: u64,
    /// One-way latency.
    pub latency: LatencySummary,
}

/// A [`Receiver`]'s figures, one entry per (sender, stream).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// The streams, in order of first arrival.
    pub streams: Vec<StreamSummary>,
}

impl Summary {
    /// Sums of every stream's counters (latency: count, min and max over all streams;
    /// percentiles and mean are left 0, they do not add up).
    pub fn totals(&self) -> StreamSummary {
        let mut t = StreamSummary {
            sender: SenderId(0),
            ssrc: Ssrc(0),
            received: 0,
            lost: 0,
            duplicates: 0,
            reordered: 0,
            too_old: 0,
            integrity_failures: 0,
            bytes: 0,
            bitrate_bps: 0,
            latency: LatencySummary::default(),
        };
        let mut min = u64::MAX;
        for s in &self.streams {
            t.received += s.received;
            t.lost += s.lost;
            t.duplicates += s.duplicates;
            t.reordered += s.reordered;
            t.too_old += s.too_old;
            t.integrity_failures += s.integrity_failures;
            t.bytes += s.bytes;
            t.bitrate_bps += s.bitrate_bps;
            t.latency.count += s.latency.count;
            if s.latency.count > 0 {
                min = min.min(s.latency.min_ns);
            }
            t.latency.max_ns = t.latency.max_ns.max(s.latency.max_ns);
        }
        t.latency.min_ns = if min == u64::MAX { 0 } else { min };
        t
    }

    /// The summary as JSON: `{"streams":[{"sender":…,"ssrc":…,"received":…,…,
    /// "latency_ns":{"count":…,"min":…,"p50":…,"p99":…,"max":…,"mean":…}}]}`. Every
    /// value is an unsigned integer.
    pub fn to_json(&self) -> String {
        let mut out = String::from("{\"streams\":[");
        for (i, s) in self.streams.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let l = &s.latency;
            // Writing to a String cannot fail.
            let _ = write!(
                out,
                "{{\"sender\":{},\"ssrc\":{},\"received\":{},\"lost\":{},\"duplicates\":{},\
                 \"reordered\":{},\"too_old\":{},\"integrity_failures\":{},\"bytes\":{},\
                 \"bitrate_bps\":{},\"latency_ns\":{{\"count\":{},\"min\":{},\"p50\":{},\
                 \"p99\":{},\"max\":{},\"mean\":{}}}}}",
                s.sender.0,
                s.ssrc.0,
                s.received,
                s.lost,
                s.duplicates,
                s.reordered,
                s.too_old,
                s.integrity_failures,
                s.bytes,
                s.bitrate_bps,
                l.count,
                l.min_ns,
                l.p50_ns,
                l.p99_ns,
                l.max_ns,
                l.mean_ns
            );
        }
        out.push_str("]}");
        out
    }
}

#[cfg(test)]
mod drop_tests {
    use super::{proc_net_udp_drops, udp_socket_drops};

    #[test]
    fn sums_the_drops_column_of_matching_ports() {
        // Two rows on port 0x1F90 = 8080 (SO_REUSEPORT workers), one on 0x0035 = 53.
        let text = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
 1: 0100007F:1F90 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1 2 0000000000000000 7
 2: 0100007F:1F90 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 2 2 0000000000000000 5
 3: 00000000:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 3 2 0000000000000000 100
 garbage line
";
        assert_eq!(proc_net_udp_drops(text, &[8080]), 12);
        assert_eq!(proc_net_udp_drops(text, &[53, 8080]), 112);
        assert_eq!(proc_net_udp_drops(text, &[9]), 0);
    }

    #[test]
    fn sees_a_real_overflowing_socket() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = rx.local_addr().unwrap().port();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        assert_eq!(udp_socket_drops(&[port]), Some(0));
        // Nobody reads: far more than any default receive buffer holds.
        for _ in 0..20_000 {
            let _ = tx.send_to(&[0u8; 1000], rx.local_addr().unwrap());
        }
        assert!(udp_socket_drops(&[port]).unwrap() > 0);
    }
}
