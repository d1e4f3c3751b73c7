//! The per-stream retransmission cache (RFC 4585 §6.2.1 generic NACK, answered by the
//! relay): recent packets of one sender stream kept byte for byte, so a receiver's NACK
//! for a packet the relay still holds is answered by resending the original packet to
//! that receiver alone, and only NACKs for what it no longer holds go to the sender —
//! once per interval however many receivers ask ([`NackDedup`]).
//!
//! The packets are opaque SRTP: the cache never looks inside, and what it returns is
//! exactly what was inserted (a resent packet must authenticate at the receiver, and
//! its SRTP replay window accepts it only because the first copy never arrived).
//!
//! # Bounds
//!
//! Everything is allocated once, in [`RetransmitCache::new`]; inserting copies into it
//! and never allocates:
//!
//! - **bytes**: one ring of `max_bytes` (512 KiB in [`RetransmitConfig::default`]; the
//!   relay's configuration gives 384 KiB to a full-resolution or single-layer stream
//!   and 64 KiB to a thumbnail, `retransmit_full_bytes` and
//!   `retransmit_thumbnail_bytes`). Packets are packed one after another, so a 100-byte
//!   packet costs 100 bytes, not a 1500-byte slot; when the ring is full the oldest
//!   packets are dropped to make room. 384 KiB holds about 1 s of a 3 Mbit/s stream.
//! - **age**: a packet older than `max_age` (default 1 s) is never returned. A NACK
//!   arrives one receiver round trip after the loss (typically 50–300 ms); after a
//!   second the receiver's jitter buffer has given up on the packet, and a resend would
//!   only cost its downlink.
//! - **count**: at most `max_packets` records (default 1024, rounded up to a power of
//!   two, at most 32768 so sequence numbers in the table are never ambiguous), 1 s of
//!   audio and video at the rates a conference sends. The relay sizes it from the ring
//!   ([`RetransmitConfig::for_bytes`]: one per 384 bytes, at least 1024), so an
//!   operator who gives a stream more bytes gets more packets kept.
//! - **size**: a packet longer than `max_packet_len` (default 1500 bytes, an Ethernet
//!   MTU) is not cached.
//!
//! # Lookup
//!
//! Records are indexed by RTP sequence number modulo the table size. The table size
//! divides 2^16, so the index is continuous across the 16-bit wrap (65535 → 0). Two
//! live packets that share a table slot are `max_packets` sequence numbers apart; the
//! newer one (in RFC 1982 serial-number order) keeps the slot, so a packet that arrives
//! very late never displaces a newer one.
//!
//! A packet inserted again while its first copy is cached is ignored
//! ([`Insert::Duplicate`]): the original bytes stay.

use std::time::{Duration, Instant};

use crate::id::WireSeq;

/// Settings of one stream's cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RetransmitConfig {
    /// Packets older than this are never returned.
    pub max_age: Duration,
    /// Bytes of packet data the cache holds (the ring it preallocates).
    pub max_bytes: usize,
    /// Records the cache holds (rounded up to a power of two, at most 32768).
    pub max_packets: usize,
    /// Longer packets are not cached (at most 65535).
    pub max_packet_len: usize,
    /// A lost packet is asked of the sender at most once per this interval.
    pub nack_interval: Duration,
}

/// Bytes of the ring per record, when the record count follows the ring's size
/// ([`RetransmitConfig::for_bytes`]): a video stream's packets average above this (most
/// are near the MTU, each frame's last one shorter), so the records run out after the
/// bytes do.
const BYTES_PER_RECORD: usize = 384;

impl RetransmitConfig {
    /// The settings for a ring of `max_bytes` kept `max_age`: one record per
    /// [`BYTES_PER_RECORD`] bytes, at least the default 1024 and at most 32768, so a
    /// larger ring holds more packets, not only the same 1024 in more room.
    pub(crate) fn for_bytes(max_bytes: usize, max_age: Duration) -> Self {
        RetransmitConfig {
            max_age,
            max_bytes,
            max_packets: (max_bytes / BYTES_PER_RECORD).clamp(1024, 0x8000),
            ..RetransmitConfig::default()
        }
    }
}

impl Default for RetransmitConfig {
    fn default() -> Self {
        RetransmitConfig {
            max_age: Duration::from_secs(1),
            max_bytes: 512 * 1024,
            max_packets: 1024,
            max_packet_len: 1500,
            nack_interval: Duration::from_millis(100),
        }
    }
}

/// What [`RetransmitCache::insert`] did with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Insert {
    /// Copied into the cache.
    Cached,
    /// That sequence number is already cached; the first copy stays.
    Duplicate,
    /// A newer packet holds its table slot (it arrived very late); not cached.
    Stale,
    /// Empty, or longer than `max_packet_len` or the whole ring; not cached.
    TooLarge,
}

/// What to do about one sequence number a receiver NACKed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NackReply<'a> {
    /// Resend these bytes (the original packet) to that receiver.
    Resend(&'a [u8]),
    /// Not cached: ask the sender for it (add it to the NACK the relay sends upstream).
    Forward,
    /// Not cached, and already asked of the sender within the interval: nothing to do.
    Suppressed,
}

/// One cached packet: where its bytes are in the ring, and when it arrived.
#[derive(Debug, Clone, Copy)]
struct Rec {
    /// When it was inserted (`None` only in a record never used).
    at: Option<Instant>,
    start: u32,
    /// Its length; 0 once it is dropped (its bytes stay reserved until the record
    /// leaves the FIFO).
    len: u16,
    seq: u16,
}

const EMPTY: Rec = Rec {
    at: None,
    start: 0,
    len: 0,
    seq: 0,
};

/// Whether sequence number `a` is newer than `b` (RFC 1982 serial-number order).
fn newer(a: u16, b: u16) -> bool {
    let d = a.wrapping_sub(b);
    d != 0 && d < 0x8000
}

/// One stream's cache of recent packets, with the dedup of NACKs it cannot answer.
#[derive(Debug)]
pub(crate) struct RetransmitCache {
    max_age: Duration,
    /// The longest packet cached: `max_packet_len`, or the ring's size if smaller.
    max_len: usize,
    /// The byte ring.
    data: Box<[u8]>,
    /// Records in insertion order: a ring of `recs.len()` (a power of two).
    recs: Box<[Rec]>,
    /// Index of the oldest record in `recs`.
    head: usize,
    /// Records in the FIFO (live or dropped; a dropped one still holds its bytes).
    count: usize,
    /// Where the next packet's bytes go.
    write: usize,
    /// `seq & mask` → index in `recs` of the last packet with that slot.
    by_seq: Box<[u16]>,
    mask: u16,
    nack: NackDedup,
}

impl RetransmitCache {
    /// A cache with everything it will ever use allocated now.
    pub(crate) fn new(cfg: RetransmitConfig) -> Self {
        let n = cfg.max_packets.clamp(1, 0x8000).next_power_of_two();
        let max_bytes = cfg.max_bytes.min(u32::MAX as usize);
        RetransmitCache {
            max_age: cfg.max_age,
            max_len: cfg.max_packet_len.min(usize::from(u16::MAX)).min(max_bytes),
            data: vec![0u8; max_bytes].into_boxed_slice(),
            recs: vec![EMPTY; n].into_boxed_slice(),
            head: 0,
            count: 0,
            write: 0,
            by_seq: vec![0u16; n].into_boxed_slice(),
            mask: (n - 1) as u16,
            nack: NackDedup::new(cfg.nack_interval),
        }
    }

    /// Caches a copy of `packet`, sequence number `seq`, received at `now`.
    ///
    /// Expired packets are not dropped here: one is never returned, and its room is
    /// taken when the ring or the records run out (the oldest go first).
    #[inline]
    pub(crate) fn insert(&mut self, now: Instant, seq: WireSeq, packet: &[u8]) -> Insert {
        let len = packet.len();
        if len == 0 || len > self.max_len {
            return Insert::TooLarge;
        }
        let slot = usize::from(seq.0 & self.mask);
        let idx = usize::from(self.by_seq[slot]);
        let r = self.recs[idx];
        // The slot points at a record that may since have been reused for another slot.
        if r.len != 0 && (r.seq ^ seq.0) & self.mask == 0 {
            if self.fresh(&r, now) {
                if r.seq == seq.0 {
                    return Insert::Duplicate;
                }
                if newer(r.seq, seq.0) {
                    return Insert::Stale;
                }
            }
            self.kill(idx);
        }
        if self.count == self.recs.len() {
            self.pop_oldest();
        }
        let start = self.reserve(len);
        self.data[start..start + len].copy_from_slice(packet);
        self.write = start + len;
        let idx = (self.head + self.count) & (self.recs.len() - 1);
        self.recs[idx] = Rec {
            at: Some(now),
            start: start as u32,
            len: len as u16,
            seq: seq.0,
        };
        self.count += 1;
        self.by_seq[slot] = idx as u16;
        Insert::Cached
    }

    /// The original bytes of packet `seq`, if cached and not older than `max_age`.
    #[cfg(test)]
    pub(crate) fn get(&self, now: Instant, seq: WireSeq) -> Option<&[u8]> {
        let (start, len) = self.find(now, seq)?;
        Some(&self.data[start..start + len])
    }

    /// A receiver NACKed `seq`: resend it from the cache, or ask the sender (once per
    /// `nack_interval` for all receivers together).
    pub(crate) fn handle_nack(&mut self, now: Instant, seq: WireSeq) -> NackReply<'_> {
        match self.find(now, seq) {
            Some((start, len)) => NackReply::Resend(&self.data[start..start + len]),
            None if self.nack.should_forward(now, seq) => NackReply::Forward,
            None => NackReply::Suppressed,
        }
    }

    /// Bytes of the packets currently cached (expired ones not yet dropped included).
    #[cfg(test)]
    pub(crate) fn cached_bytes(&self) -> usize {
        self.live().map(|r| usize::from(r.len)).sum()
    }

    /// Packets currently cached (expired ones not yet dropped included).
    #[cfg(test)]
    pub(crate) fn cached_packets(&self) -> usize {
        self.live().count()
    }

    /// The records in the FIFO that hold a packet, oldest first.
    #[cfg(test)]
    fn live(&self) -> impl Iterator<Item = &Rec> + '_ {
        (0..self.count)
            .map(|i| &self.recs[(self.head + i) & (self.recs.len() - 1)])
            .filter(|r| r.len != 0)
    }

    /// Bytes the cache allocated, all at construction: the ring, the records and the
    /// tables. It never changes.
    #[cfg(test)]
    pub(crate) fn allocated_bytes(&self) -> usize {
        self.data.len()
            + std::mem::size_of_val(&*self.recs)
            + std::mem::size_of_val(&*self.by_seq)
            + self.nack.allocated_bytes()
    }

    /// The sequence number of the packet cached last (the newest unless packets came
    /// out of order), if any is cached.
    pub(crate) fn last_seq(&self) -> Option<WireSeq> {
        let last = self.count.checked_sub(1)?;
        let r = &self.recs[(self.head + last) & (self.recs.len() - 1)];
        (r.len != 0).then_some(WireSeq(r.seq))
    }

    fn find(&self, now: Instant, seq: WireSeq) -> Option<(usize, usize)> {
        let r = &self.recs[usize::from(self.by_seq[usize::from(seq.0 & self.mask)])];
        (r.len != 0 && r.seq == seq.0 && self.fresh(r, now))
            .then(|| (r.start as usize, usize::from(r.len)))
    }

    /// At most `max_age` old at `now`; time that went backwards counts as none passed.
    fn fresh(&self, r: &Rec, now: Instant) -> bool {
        r.at.is_some_and(|at| now.saturating_duration_since(at) <= self.max_age)
    }

    /// Marks record `idx` dropped; its bytes stay reserved until it leaves the FIFO.
    fn kill(&mut self, idx: usize) {
        self.recs[idx].len = 0;
    }

    fn pop_oldest(&mut self) {
        self.kill(self.head);
        self.head = (self.head + 1) & (self.recs.len() - 1);
        self.count -= 1;
        if self.count == 0 {
            self.write = 0;
        }
    }

    /// Where `len` bytes (at most the ring's size) can go, dropping the oldest records
    /// until they fit. The records' bytes run from the oldest record's start to
    /// `write`, wrapping to 0 at most once.
    fn reserve(&mut self, len: usize) -> usize {
        let cap = self.data.len();
        loop {
            if self.count == 0 {
                return 0;
            }
            let oldest = self.recs[self.head].start as usize;
            if self.write > oldest {
                // In use: [oldest, write). Free: [write, cap) and [0, oldest).
                if cap - self.write >= len {
                    return self.write;
                }
                if oldest >= len {
                    return 0;
                }
            } else if oldest - self.write >= len {
                // Wrapped: in use [oldest, …) and [0, write); free [write, oldest).
                return self.write;
            }
            self.pop_oldest();
        }
    }
}

/// Collapses the NACKs of many receivers for one lost packet into one request to the
/// sender per interval (default 100 ms, about one round trip: if the sender's resend
/// was lost too, the receivers ask again and so does the relay).
///
/// A fixed table of 256 sequence numbers (a burst of more distinct losses at once can
/// overwrite an entry; the cost is one extra request upstream, never a missing one).
#[derive(Debug)]
pub(crate) struct NackDedup {
    interval: Duration,
    table: Box<[(u16, Option<Instant>)]>,
}

const NACK_TABLE: usize = 256;

impl NackDedup {
    /// A dedup table, allocated now.
    pub(crate) fn new(interval: Duration) -> Self {
        NackDedup {
            interval,
            table: vec![(0, None); NACK_TABLE].into_boxed_slice(),
        }
    }

    /// Whether `seq` should go upstream now (and start its interval), or was asked for
    /// within the interval already.
    pub(crate) fn should_forward(&mut self, now: Instant, seq: WireSeq) -> bool {
        let e = &mut self.table[usize::from(seq.0) % NACK_TABLE];
        if e.0 == seq.0
            && e.1
                .is_some_and(|t| now.saturating_duration_since(t) < self.interval)
        {
            return false;
        }
        *e = (seq.0, Some(now));
        true
    }

    #[cfg(test)]
    fn allocated_bytes(&self) -> usize {
        std::mem::size_of_val(&*self.table)
    }
}

#[cfg(test)]
mod tests {
    // One arbitrary base instant; everything after it is simulated.
    #![allow(clippy::disallowed_methods)]

    use std::collections::HashMap;

    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// A packet whose bytes say which sequence number and which copy it is.
    fn packet(seq: u16, tag: u32, len: usize) -> Vec<u8> {
        let mut x = (u32::from(seq) << 16) ^ tag ^ 0x9e37_79b9;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect()
    }

    /// Marsaglia's xorshift64: a seeded, dependency-free generator.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// The live records never overlap and stay inside the ring.
    fn check_invariants(c: &RetransmitCache) {
        let mut ranges: Vec<(usize, usize)> = c
            .live()
            .map(|r| (r.start as usize, r.start as usize + usize::from(r.len)))
            .collect();
        assert!(
            ranges.iter().all(|&(_, e)| e <= c.data.len()),
            "records inside the ring"
        );
        ranges.sort();
        for w in ranges.windows(2) {
            assert!(w[0].1 <= w[1].0, "records overlap: {w:?}");
        }
        assert!(c.cached_bytes() <= c.data.len());
        assert!(c.count <= c.recs.len());
    }

    #[test]
    fn defaults_are_documented_values() {
        let d = RetransmitConfig::default();
        assert_eq!(d.max_age, Duration::from_secs(1));
        assert_eq!(d.max_bytes, 512 * 1024);
        assert_eq!(d.max_packets, 1024);
        assert_eq!(d.max_packet_len, 1500);
        assert_eq!(d.nack_interval, Duration::from_millis(100));
        let c = RetransmitCache::new(d);
        assert_eq!(c.recs.len(), 1024);
    }

    #[test]
    fn returns_the_original_bytes() {
        let t0 = Instant::now();
        let mut c = RetransmitCache::new(RetransmitConfig::default());
        assert_eq!(c.last_seq(), None);
        for s in 0..100u16 {
            let p = packet(s, 0, 200 + usize::from(s));
            assert_eq!(
                c.insert(t0 + MS * u32::from(s), WireSeq(s), &p),
                Insert::Cached
            );
        }
        let now = t0 + 100 * MS;
        for s in 0..100u16 {
            assert_eq!(
                c.get(now, WireSeq(s)),
                Some(&packet(s, 0, 200 + usize::from(s))[..])
            );
        }
        assert_eq!(c.get(now, WireSeq(100)), None);
        assert_eq!(c.get(now, WireSeq(100 + 1024)), None, "same slot as 100");
        assert_eq!(c.cached_packets(), 100);
        assert_eq!(c.last_seq(), Some(WireSeq(99)));
        check_invariants(&c);
    }

    #[test]
    fn wraps_around_the_sequence_space() {
        let t0 = Instant::now();
        let mut c = RetransmitCache::new(RetransmitConfig::default());
        let seqs: Vec<u16> = (0..600u16).map(|i| 65_300u16.wrapping_add(i)).collect();
        for (i, &s) in seqs.iter().enumerate() {
            let p = packet(s, 1, 300);
            assert_eq!(c.insert(t0 + MS * i as u32, WireSeq(s), &p), Insert::Cached);
        }
        let now = t0 + 600 * MS;
        for &s in &seqs {
            assert_eq!(c.get(now, WireSeq(s)), Some(&packet(s, 1, 300)[..]), "{s}");
        }
        // A very late packet from before the wrap whose slot a newer one holds.
        let late = 65_300u16.wrapping_add(599).wrapping_sub(1024);
        assert_eq!(
            c.insert(now, WireSeq(late), &packet(late, 2, 300)),
            Insert::Stale
        );
        assert_eq!(
            c.get(now, WireSeq(65_300u16.wrapping_add(599))),
            Some(&packet(65_300u16.wrapping_add(599), 1, 300)[..])
        );
        check_invariants(&c);
    }

    #[test]
    fn packets_expire_after_max_age() {
        let t0 = Instant::now();
        let mut c = RetransmitCache::new(RetransmitConfig::default());
        c.insert(t0, WireSeq(1), &packet(1, 0, 100));
        c.insert(t0 + 500 * MS, WireSeq(2), &packet(2, 0, 100));
        assert!(
            c.get(t0 + 1000 * MS, WireSeq(1)).is_some(),
            "exactly 1 s old"
        );
        assert!(
            c.get(t0 + 1001 * MS, WireSeq(1)).is_none(),
            "older than 1 s"
        );
        assert!(c.get(t0 + 1001 * MS, WireSeq(2)).is_some());
        // Time that goes backwards counts as none passed.
        assert!(c.get(t0, WireSeq(2)).is_some());
        // An expired packet keeps its room until the room is needed.
        c.insert(t0 + 1200 * MS, WireSeq(3), &packet(3, 0, 100));
        assert_eq!(c.cached_packets(), 3);
        assert!(c.get(t0 + 1200 * MS, WireSeq(1)).is_none());
        // An expired packet's sequence number can be cached afresh.
        assert_eq!(
            c.insert(t0 + 2600 * MS, WireSeq(2), &packet(2, 9, 50)),
            Insert::Cached
        );
        assert_eq!(
            c.get(t0 + 2600 * MS, WireSeq(2)),
            Some(&packet(2, 9, 50)[..])
        );
        check_invariants(&c);
    }

    #[test]
    fn duplicates_keep_the_first_copy() {
        let t0 = Instant::now();
        let mut c = RetransmitCache::new(RetransmitConfig::default());
        assert_eq!(c.insert(t0, WireSeq(7), &packet(7, 0, 100)), Insert::Cached);
        assert_eq!(
            c.insert(t0 + MS, WireSeq(7), &packet(7, 1, 120)),
            Insert::Duplicate
        );
        assert_eq!(c.get(t0 + MS, WireSeq(7)), Some(&packet(7, 0, 100)[..]));
        assert_eq!(c.cached_bytes(), 100);
        check_invariants(&c);
    }

    /// A ring sized for more than a second of a fast stream holds more than the default
    /// 1024 packets: the records grow with the bytes (up to 32768), and the relay's
    /// defaults keep 1024.
    #[test]
    fn a_larger_ring_holds_more_packets() {
        let t0 = Instant::now();
        let age = Duration::from_secs(1);
        let mut c = RetransmitCache::new(RetransmitConfig::for_bytes(4 << 20, age));
        for seq in 0..4000u16 {
            c.insert(t0, WireSeq(seq), &packet(seq, 0, 1000));
        }
        assert_eq!(c.cached_packets(), 4000);
        assert!(c.get(t0, WireSeq(0)).is_some(), "the first is still held");
        check_invariants(&c);
        for (bytes, records) in [
            (0, 1024),
            (64 << 10, 1024),
            (384 << 10, 1024),
            (64 << 20, 0x8000),
        ] {
            assert_eq!(RetransmitConfig::for_bytes(bytes, age).max_packets, records);
        }
    }

    #[test]
    fn oversized_and_empty_packets_are_not_cached() {
        let t0 = Instant::now();
        let mut c = RetransmitCache::new(RetransmitConfig {
            max_bytes: 1000,
            ..RetransmitConfig::default()
        });
        assert_eq!(c.insert(t0, WireSeq(1), &[]), Insert::TooLarge);
        assert_eq!(
            c.insert(t0, WireSeq(1), &packet(1, 0, 1001)),
            Insert::TooLarge,
            "larger than the ring"
        );
        let mut c = RetransmitCache::new(RetransmitConfig::default());
        assert_eq!(
            c.insert(t0, WireSeq(1), &packet(1, 0, 1501)),
            Insert::TooLarge
        );
        assert_eq!(
            c.insert(t0, WireSeq(1), &packet(1, 0, 1500)),
            Insert::Cached
        );
        // A cache configured with nothing caches nothing, and does not panic.
        let mut c = RetransmitCache::new(RetransmitConfig {
            max_bytes: 0,
            max_packets: 0,
            ..RetransmitConfig::default()
        });
        assert_eq!(c.insert(t0, WireSeq(1), &[1]), Insert::TooLarge);
        assert_eq!(c.get(t0, WireSeq(1)), None);
    }

    #[test]
    fn the_byte_cap_drops_the_oldest() {
        let t0 = Instant::now();
        let mut c = RetransmitCache::new(RetransmitConfig {
            max_bytes: 10_000,
            ..RetransmitConfig::default()
        });
        for s in 0..100u16 {
            c.insert(t0, WireSeq(s), &packet(s, 0, 1000));
            assert!(c.cached_bytes() <= 10_000);
            check_invariants(&c);
        }
        // The newest ten fit exactly; everything before them is gone.
        for s in 90..100u16 {
            assert_eq!(c.get(t0, WireSeq(s)), Some(&packet(s, 0, 1000)[..]));
        }
        assert!((0..90u16).all(|s| c.get(t0, WireSeq(s)).is_none()));
    }

    #[test]
    fn the_record_cap_drops_the_oldest() {
        let t0 = Instant::now();
        let mut c = RetransmitCache::new(RetransmitConfig {
            max_packets: 8,
            ..RetransmitConfig::default()
        });
        for s in 0..20u16 {
            c.insert(t0, WireSeq(s), &packet(s, 0, 10));
        }
        assert_eq!(c.cached_packets(), 8);
        assert!((12..20u16).all(|s| c.get(t0, WireSeq(s)).is_some()));
        check_invariants(&c);
    }

    #[test]
    fn nacks_resend_from_the_cache_or_go_upstream_once_per_interval() {
        let t0 = Instant::now();
        let mut c = RetransmitCache::new(RetransmitConfig::default());
        c.insert(t0, WireSeq(10), &packet(10, 0, 100));
        let p10 = packet(10, 0, 100);
        // Fifty receivers NACK a cached packet: each gets the original bytes.
        for _ in 0..50 {
            assert_eq!(c.handle_nack(t0 + MS, WireSeq(10)), NackReply::Resend(&p10));
        }
        // Fifty receivers NACK a packet the relay never got: one request upstream.
        assert_eq!(c.handle_nack(t0 + MS, WireSeq(11)), NackReply::Forward);
        for r in 1..50 {
            assert_eq!(
                c.handle_nack(t0 + MS * (1 + r), WireSeq(11)),
                NackReply::Suppressed
            );
        }
        assert_eq!(
            c.handle_nack(t0 + 101 * MS, WireSeq(11)),
            NackReply::Forward,
            "a new interval"
        );
        // Time going backwards: no time passed.
        assert_eq!(c.handle_nack(t0, WireSeq(11)), NackReply::Suppressed);
        // Once the sender's resend arrives, NACKs are answered from the cache.
        c.insert(t0 + 120 * MS, WireSeq(11), &packet(11, 0, 90));
        assert_eq!(
            c.handle_nack(t0 + 130 * MS, WireSeq(11)),
            NackReply::Resend(&packet(11, 0, 90))
        );
    }

    #[test]
    fn nack_dedup_is_per_sequence_number() {
        let t0 = Instant::now();
        let mut d = NackDedup::new(100 * MS);
        assert!(d.should_forward(t0, WireSeq(1)));
        assert!(d.should_forward(t0, WireSeq(2)));
        assert!(!d.should_forward(t0 + 99 * MS, WireSeq(1)));
        // 257 collides with 1 in the table: at worst an extra request, never a lost one.
        assert!(d.should_forward(t0, WireSeq(257)));
        assert!(d.should_forward(t0 + MS, WireSeq(1)));
        assert!(d.should_forward(t0 + 200 * MS, WireSeq(2)));
    }

    /// Any insert pattern — reordered, duplicated, wrapping, oversized, with time
    /// jumping back and forth — keeps the cache inside its allocation, never returns
    /// bytes other than the last packet cached under that number, never returns an
    /// expired packet, and never allocates.
    #[test]
    fn memory_bound_holds_under_any_insert_pattern() {
        let mut hits = 0u32;
        for seed in 1..=8u64 {
            let mut rng = XorShift(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            let cfg = RetransmitConfig {
                max_bytes: 4096 + rng.below(64 * 1024) as usize,
                max_packets: 1 + rng.below(600) as usize,
                max_packet_len: 1 + rng.below(1500) as usize,
                ..RetransmitConfig::default()
            };
            let mut c = RetransmitCache::new(cfg);
            let allocated = c.allocated_bytes();
            let ring = c.data.as_ptr();
            let t0 = Instant::now();
            let mut now = t0 + Duration::from_secs(10);
            let mut seq = rng.next() as u16;
            // seq → (inserted at, tag, len) of the last copy the cache accepted.
            let mut model: HashMap<u16, (Instant, u32, usize)> = HashMap::new();
            for i in 0..8_000u32 {
                match rng.below(100) {
                    0..=59 => seq = seq.wrapping_add(1),
                    60..=69 => seq = seq.wrapping_sub(rng.below(40) as u16),
                    70..=74 => seq = seq.wrapping_add(rng.below(3000) as u16),
                    75..=76 => seq = rng.next() as u16,
                    _ => {}
                }
                match rng.below(100) {
                    0..=79 => now += Duration::from_micros(rng.below(20_000)),
                    80..=81 => now -= Duration::from_micros(rng.below(500_000)),
                    82 => now += Duration::from_millis(rng.below(3000)),
                    _ => {}
                }
                let len = 1 + rng.below(cfg.max_packet_len as u64 + 200) as usize;
                let p = packet(seq, i, len);
                if c.insert(now, WireSeq(seq), &p) == Insert::Cached {
                    model.insert(seq, (now, i, len));
                }
                assert!(c.cached_bytes() <= cfg.max_bytes);
                assert_eq!(c.allocated_bytes(), allocated);
                assert_eq!(c.data.as_ptr(), ring, "the ring is never reallocated");
                for _ in 0..2 {
                    let q = seq.wrapping_sub(rng.below(48) as u16);
                    if let Some(bytes) = c.get(now, WireSeq(q)) {
                        hits += 1;
                        let &(at, tag, len) = model.get(&q).expect("only what was cached");
                        assert!(now.saturating_duration_since(at) <= cfg.max_age);
                        assert_eq!(bytes, &packet(q, tag, len)[..], "seed {seed} op {i}");
                    }
                }
                if i % 97 == 0 {
                    check_invariants(&c);
                }
            }
            check_invariants(&c);
        }
        assert!(hits > 5_000, "the lookups often find something: {hits}");
    }

    /// A steady stream that fits the cache keeps every packet of the last second.
    #[test]
    fn a_stream_within_the_bounds_keeps_its_last_second() {
        let t0 = Instant::now();
        let mut c = RetransmitCache::new(RetransmitConfig::default());
        // 2.5 Mbit/s in 1100-byte packets: about 284 packets a second.
        let mut seq = 65_000u16;
        for i in 0..3_000u32 {
            let now = t0 + Duration::from_micros(3_520 * u64::from(i));
            c.insert(now, WireSeq(seq), &packet(seq, 0, 1100));
            if i > 300 && i % 50 == 0 {
                // Everything sent within the last second is there.
                for back in 0..280u16 {
                    let s = seq.wrapping_sub(back);
                    assert_eq!(c.get(now, WireSeq(s)), Some(&packet(s, 0, 1100)[..]));
                }
            }
            seq = seq.wrapping_add(1);
        }
        check_invariants(&c);
    }
}
