//! What the client decrypted, from whom: per sender (a member's device) and stream,
//! packets, bytes, loss from sequence-number gaps (apart from the relay's layer
//! switches, counted as resumes), decrypt failures, the last key index,
//! the receive rate over the last table interval, and one-way latency from the
//! synthetic sources' probes. Each received audio stream is also recorded to an Ogg
//! Opus file. [`Tally::rows`] gives the live table's rows ([`SenderRow`]).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use blindfold_client::MediaPacket;
use blindfold_client::conference::MemberId;
use blindfold_client::conference::keys::{Layer, Stream};
use blindfold_client::ogg::{MAX_PACKET_SAMPLES, OggOpusWriter, OpusHead, opus_packet_samples};
use blindfold_client::report::{Recording, SpeakerTurns};
use blindfold_client::table::{SenderRow, StreamKind, StreamRow};
use blindfold_client::{MediaKind, Probe};
use blindfold_relay::id::Ssrc;

/// The period of the shared latency clock. Participants in separate processes have no
/// common `Instant`, so each takes as its probes' epoch the start of the current
/// wall-clock period; send and receive times are compared modulo the period, which
/// only needs the machines' wall clocks to agree (they are one machine in the demo;
/// NTP elsewhere). A minute is far above any latency and far below the uptime of any
/// machine that can run this.
pub const LATENCY_PERIOD: Duration = Duration::from_secs(60);

/// The epoch for the probes this process sends and the latency it measures: the
/// `Instant` of the last whole [`LATENCY_PERIOD`] of wall-clock time. `None` if the
/// monotonic clock does not reach that far back (a machine booted seconds ago): then
/// latency is not measured.
pub fn latency_epoch() -> Option<Instant> {
    let wall = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .ok()?;
    let period = LATENCY_PERIOD.as_nanos();
    let into = Duration::from_nanos(u64::try_from(wall.as_nanos() % period).ok()?);
    Instant::now().checked_sub(into)
}

/// One stream of one sender.
#[derive(Debug)]
struct StreamTally {
    ssrc: Ssrc,
    kind: StreamKind,
    packets: u64,
    bytes: u64,
    /// Extended sequence numbers: the first and the highest seen.
    first_seq: Option<u64>,
    max_seq: u64,
    /// Layer gaps: see [`StreamRow::resumes`] and [`StreamRow::skipped`].
    resumes: u64,
    skipped: u64,
    failures: u64,
    key_index: Option<u8>,
    first_at: Option<Instant>,
    last_at: Option<Instant>,
    /// Bytes at the last [`Tally::tick`], for the rate.
    bytes_at_tick: u64,
    kbps: f64,
    latency_sum_ms: f64,
    latency_n: u64,
    latency_ms: Option<f64>,
    recorder: Option<Recorder>,
}

impl StreamTally {
    fn new(ssrc: Ssrc, kind: StreamKind) -> StreamTally {
        StreamTally {
            ssrc,
            kind,
            packets: 0,
            bytes: 0,
            first_seq: None,
            max_seq: 0,
            resumes: 0,
            skipped: 0,
            failures: 0,
            key_index: None,
            first_at: None,
            last_at: None,
            bytes_at_tick: 0,
            kbps: 0.0,
            latency_sum_ms: 0.0,
            latency_n: 0,
            latency_ms: None,
            recorder: None,
        }
    }

    fn lost(&self) -> u64 {
        let expected = self
            .first_seq
            .map_or(0, |first| self.max_seq.saturating_sub(first) + 1);
        expected
            .saturating_sub(self.packets)
            .saturating_sub(self.skipped)
    }

    /// Notes a packet's extended sequence number `seq` and the packets the participant
    /// library says were `skipped` before it ([`MediaPacket::skipped`]). Only a
    /// full-resolution stream is resumed by the relay: a thumbnail's gap is loss, however
    /// it ends.
    fn sequence(&mut self, seq: u64, skipped: u64) {
        let Some(first) = self.first_seq else {
            self.first_seq = Some(seq);
            self.max_seq = seq;
            return;
        };
        if self.kind == StreamKind::Full && skipped > 0 {
            self.resumes += 1;
            self.skipped += skipped;
        }
        self.max_seq = self.max_seq.max(seq);
        // A reordered packet from before the first one seen.
        if seq < first {
            self.first_seq = Some(seq);
        }
    }

    fn row(&self, kbps: f64) -> StreamRow {
        StreamRow {
            ssrc: self.ssrc.0,
            kind: self.kind,
            packets: self.packets,
            bytes: self.bytes,
            lost: self.lost(),
            resumes: self.resumes,
            skipped: self.skipped,
            decrypt_failures: self.failures,
            key_index: self.key_index,
            kbps,
            latency_ms: self.latency_ms,
        }
    }
}

/// One received audio stream being written to an Ogg Opus file.
#[derive(Debug)]
struct Recorder {
    path: PathBuf,
    writer: Option<OggOpusWriter<std::io::BufWriter<std::fs::File>>>,
    last_timestamp: Option<u32>,
}

#[derive(Debug)]
struct SenderTally {
    member: MemberId,
    streams: Vec<StreamTally>,
}

/// Everything received, by sender.
#[derive(Debug)]
pub struct Tally {
    senders: Vec<SenderTally>,
    epoch: Option<Instant>,
    record_dir: Option<PathBuf>,
    last_tick: Instant,
    /// Packets decrypted whose sender was no longer known when they were handled.
    pub unattributed: u64,
    /// Datagrams on streams no accepted key event declared (before a member's keys
    /// arrived, or from a member whose key event was refused).
    pub unknown_ssrc: u64,
    /// Recording problems, said once each (a full disk should not flood the terminal).
    pub warnings: Vec<String>,
    /// Whom the SFU named the active speaker, and how often.
    pub speakers: Vec<SpeakerTurns>,
    /// The last one it named.
    pub speaker: Option<MemberId>,
    /// Times the relay lost our session and we connected again.
    pub reconnects: u64,
    /// Times the SFU ended our call asking us to call again, and we did.
    pub calls_again: u64,
}

fn kind_of(s: &Stream) -> StreamKind {
    match (s.kind, s.layer) {
        (MediaKind::Audio, _) => StreamKind::Audio,
        (MediaKind::Video, Some(Layer::Full)) => StreamKind::Full,
        (MediaKind::Video, _) => StreamKind::Thumbnail,
    }
}

/// A file name from an id: letters, digits, `-` and `_` kept, the rest `_`.
fn file_part(id: &str) -> String {
    id.trim_start_matches('@')
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

impl Tally {
    /// An empty tally; `epoch` as [`latency_epoch`]; received audio recorded under
    /// `record_dir` if given (it must exist).
    pub fn new(now: Instant, epoch: Option<Instant>, record_dir: Option<PathBuf>) -> Tally {
        Tally {
            senders: Vec::new(),
            epoch,
            record_dir,
            last_tick: now,
            unattributed: 0,
            unknown_ssrc: 0,
            warnings: Vec::new(),
            speakers: Vec::new(),
            speaker: None,
            reconnects: 0,
            calls_again: 0,
        }
    }

    /// The SFU named `member` the conference's active speaker.
    pub fn speaker(&mut self, member: MemberId) {
        let turns = match self
            .speakers
            .iter_mut()
            .find(|s| s.user == member.user_id && s.device == member.device_id)
        {
            Some(t) => t,
            None => {
                self.speakers.push(SpeakerTurns {
                    user: member.user_id.clone(),
                    device: member.device_id.clone(),
                    turns: 0,
                });
                self.speakers.last_mut().expect("just pushed")
            }
        };
        turns.turns += 1;
        self.speaker = Some(member);
    }

    /// Learns a member's declared streams (from its accepted key event), so that they
    /// show in the table before their first packet, with their kind.
    pub fn declare(&mut self, member: &MemberId, streams: &[Stream]) {
        let sender = self.sender(member);
        for s in streams {
            if !sender.streams.iter().any(|t| t.ssrc == s.ssrc) {
                sender.streams.push(StreamTally::new(s.ssrc, kind_of(s)));
            }
        }
        sender.streams.sort_by_key(|t| t.kind);
    }

    fn sender(&mut self, member: &MemberId) -> &mut SenderTally {
        let at = match self.senders.iter().position(|s| s.member == *member) {
            Some(at) => at,
            None => {
                self.senders.push(SenderTally {
                    member: member.clone(),
                    streams: Vec::new(),
                });
                self.senders.len() - 1
            }
        };
        &mut self.senders[at]
    }

    fn stream(&mut self, member: &MemberId, ssrc: Ssrc) -> Option<&mut StreamTally> {
        self.senders
            .iter_mut()
            .find(|s| s.member == *member)?
            .streams
            .iter_mut()
            .find(|t| t.ssrc == ssrc)
    }

    /// A decrypted packet. `from` is `None` if its sender left before it was handled.
    pub fn media(&mut self, now: Instant, packet: &MediaPacket, from: Option<&MemberId>) {
        let epoch = self.epoch;
        let record_dir = self.record_dir.clone();
        let Some(member) = from else {
            self.unattributed += 1;
            return;
        };
        let Some(t) = self.stream(member, packet.ssrc) else {
            // Decrypted with this member's keys, so declared by its key event, which
            // `declare` has seen unless the event was handled after the packet.
            self.unattributed += 1;
            return;
        };
        let payload = packet.payload();
        t.packets += 1;
        t.bytes += payload.len() as u64;
        t.key_index = Some(packet.key.0);
        t.first_at.get_or_insert(now);
        t.last_at = Some(now);
        t.sequence(packet.seq.0, packet.skipped);
        if let (Some(epoch), Ok(probe)) = (epoch, Probe::decode(payload)) {
            let period = LATENCY_PERIOD.as_nanos() as u64;
            let recv =
                u64::try_from(now.saturating_duration_since(epoch).as_nanos()).unwrap_or(u64::MAX);
            let ns = (recv % period + period - probe.send_time_ns % period) % period;
            // More than half a period is a clock disagreement, not a latency.
            if ns < period / 2 {
                t.latency_sum_ms += ns as f64 / 1e6;
                t.latency_n += 1;
            }
        }
        if t.kind == StreamKind::Audio
            && let Some(dir) = record_dir
        {
            let warning = record(t, &dir, member, packet);
            if let Some(w) = warning
                && !self.warnings.contains(&w)
            {
                self.warnings.push(w);
            }
        }
    }

    /// A datagram on `ssrc` that did not decrypt: counted against the member that
    /// declared the stream, or as an unknown stream.
    pub fn failure(&mut self, ssrc: Ssrc, from: Option<&MemberId>) {
        match from.and_then(|m| self.stream(m, ssrc)) {
            Some(t) => t.failures += 1,
            None => self.unknown_ssrc += 1,
        }
    }

    /// Closes a rate and latency window: call once per table frame.
    pub fn tick(&mut self, now: Instant) {
        let secs = now.saturating_duration_since(self.last_tick).as_secs_f64();
        self.last_tick = now;
        for t in self.senders.iter_mut().flat_map(|s| &mut s.streams) {
            if secs > 0.0 {
                t.kbps = (t.bytes - t.bytes_at_tick) as f64 * 8.0 / 1000.0 / secs;
            }
            t.bytes_at_tick = t.bytes;
            if t.latency_n > 0 {
                t.latency_ms = Some(t.latency_sum_ms / t.latency_n as f64);
                t.latency_sum_ms = 0.0;
                t.latency_n = 0;
            }
        }
    }

    /// The live table's rows: the rate over the last window.
    pub fn rows(&self) -> Vec<SenderRow> {
        self.rows_with(|t| t.kbps)
    }

    /// The final rows: the rate is the average from each stream's first packet to its
    /// last (the last window says little once members have hung up).
    pub fn final_rows(&self) -> Vec<SenderRow> {
        self.rows_with(|t| match (t.first_at, t.last_at) {
            (Some(a), Some(b)) if b > a => {
                t.bytes as f64 * 8.0 / 1000.0 / b.duration_since(a).as_secs_f64()
            }
            _ => 0.0,
        })
    }

    fn rows_with(&self, kbps: impl Fn(&StreamTally) -> f64) -> Vec<SenderRow> {
        self.senders
            .iter()
            .map(|s| SenderRow {
                user: s.member.user_id.clone(),
                device: s.member.device_id.clone(),
                streams: s.streams.iter().map(|t| t.row(kbps(t))).collect(),
            })
            .collect()
    }

    /// Ends every recording (the end-of-stream page) and lists them; problems go to
    /// [`Tally::warnings`].
    pub fn finish_recordings(&mut self) -> Vec<Recording> {
        let mut out = Vec::new();
        for s in &mut self.senders {
            for t in &mut s.streams {
                let Some(rec) = t.recorder.as_mut() else {
                    continue;
                };
                let Some(w) = rec.writer.take() else {
                    continue;
                };
                let packets = w.packets();
                if let Err(e) = w.finish() {
                    self.warnings
                        .push(format!("finishing {}: {e}", rec.path.display()));
                    continue;
                }
                out.push(Recording {
                    user: s.member.user_id.clone(),
                    device: s.member.device_id.clone(),
                    ssrc: t.ssrc.0,
                    path: rec.path.clone(),
                    packets,
                });
            }
        }
        out
    }
}

/// Appends an audio packet to its stream's recording, creating the file at the first
/// packet. A warning if it cannot (the packet is then not in the file).
fn record(
    t: &mut StreamTally,
    dir: &Path,
    member: &MemberId,
    packet: &MediaPacket,
) -> Option<String> {
    let payload = packet.payload();
    if payload.is_empty() {
        // RFC 7587 senders never send one; Ogg Opus cannot hold one.
        return Some(format!(
            "an empty audio packet on ssrc {}: not recorded",
            t.ssrc
        ));
    }
    if t.recorder.is_none() {
        let path = dir.join(format!(
            "{}-{}-{}.opus",
            file_part(&member.user_id),
            file_part(&member.device_id),
            t.ssrc
        ));
        // Mono or stereo from the first packet's TOC byte (RFC 6716 §3.1, the s bit);
        // a decoder set up for either plays both, this only picks the output.
        let channels = if payload[0] & 0x04 != 0 { 2 } else { 1 };
        // The sender's encoder delay is not signalled over RTP; opusenc's usual 312
        // samples (6.5 ms) is what a decoder expects to skip at the start.
        let head = OpusHead::new(channels, OpusHead::TYPICAL_PRE_SKIP, 48_000);
        let writer = match OggOpusWriter::create(&path, &head) {
            Ok(w) => Some(w),
            Err(e) => {
                t.recorder = Some(Recorder {
                    path: path.clone(),
                    writer: None,
                    last_timestamp: None,
                });
                return Some(format!("cannot record to {}: {e}", path.display()));
            }
        };
        t.recorder = Some(Recorder {
            path,
            writer,
            last_timestamp: None,
        });
    }
    let rec = t.recorder.as_mut()?;
    let writer = rec.writer.as_mut()?;
    // The packet's own duration from its TOC byte; if that is not valid Opus
    // (synthetic audio), the RTP timestamp step (RFC 7587: 48 kHz), else 20 ms.
    let ts = packet.timestamp.0;
    let samples = opus_packet_samples(payload).ok().unwrap_or_else(|| {
        rec.last_timestamp
            .map(|last| ts.wrapping_sub(last))
            .filter(|d| (1..=MAX_PACKET_SAMPLES).contains(d))
            .unwrap_or(960)
    });
    rec.last_timestamp = Some(ts);
    match writer.write_packet_with_samples(payload, samples) {
        Ok(()) => None,
        Err(e) => Some(format!("recording to {}: {e}", rec.path.display())),
    }
}

#[cfg(test)]
mod tests {
    use blindfold_client::SenderId;
    use blindfold_relay::id::{KeyIndex, Pt, RtpTime, SeqNo};

    use super::*;

    /// A decrypted video packet on `ssrc` with `skipped` packets before it that were never
    /// sent (as the participant library says).
    fn video(ssrc: Ssrc, seq: u64, skipped: u64) -> MediaPacket {
        MediaPacket {
            sender: SenderId(1),
            ssrc,
            seq: SeqNo(seq),
            pt: Pt(96),
            marker: false,
            timestamp: RtpTime(0),
            key: KeyIndex(0),
            skipped,
            packet: vec![0x80; 100],
            payload: 12..100,
        }
    }

    #[test]
    fn a_full_stream_back_at_a_keyframe_after_a_long_gap_was_resumed_not_lost() {
        let now = Instant::now();
        let mut t = Tally::new(now, None, None);
        let bob = MemberId {
            user_id: "@b:l".into(),
            device_id: "B1".into(),
        };
        let (thumb, full) = (Ssrc(1), Ssrc(2));
        let stream = |ssrc, layer| Stream {
            ssrc,
            kind: MediaKind::Video,
            layer: Some(layer),
        };
        t.declare(
            &bob,
            &[stream(thumb, Layer::Thumbnail), stream(full, Layer::Full)],
        );
        // Each stream, as the participant library hands it over: 0..10, a real loss of
        // 10 to 12, 13..20, then 100 packets never sent before a keyframe from 120 (the
        // library's `skipped`), then 201 missing before a packet that starts no keyframe
        // (lost), then a gap of 3 before a keyframe (short enough to NACK: lost).
        let seqs = (0..10)
            .chain(13..20)
            .chain(120..130)
            .chain([331, 335])
            .map(|s| (s, if s == 120 { 100 } else { 0 }));
        for (seq, skipped) in seqs {
            for ssrc in [thumb, full] {
                t.media(now, &video(ssrc, seq, skipped), Some(&bob));
            }
        }
        let rows = t.rows();
        let [thumb_row, full_row] = &rows[0].streams[..] else {
            panic!("{rows:?}")
        };
        let counts = |r: &StreamRow| (r.kind, r.packets, r.lost, r.resumes, r.skipped);
        assert_eq!(
            counts(full_row),
            (StreamKind::Full, 29, 3 + 201 + 3, 1, 100)
        );
        // Only the relay's layer choice moves a receiver off a layer and back: the
        // thumbnail's gaps are loss, whatever ends them.
        assert_eq!(
            counts(thumb_row),
            (StreamKind::Thumbnail, 29, 3 + 100 + 201 + 3, 0, 0)
        );
    }

    #[test]
    fn active_speakers_are_counted_per_device_in_the_order_first_named() {
        let mut t = Tally::new(Instant::now(), None, None);
        let member = |user: &str, device: &str| MemberId {
            user_id: user.into(),
            device_id: device.into(),
        };
        for m in [
            ("@b:l", "B1"),
            ("@a:l", "A1"),
            ("@b:l", "B1"),
            ("@b:l", "B2"),
        ] {
            t.speaker(member(m.0, m.1));
        }
        let turns: Vec<(&str, &str, u64)> = t
            .speakers
            .iter()
            .map(|s| (s.user.as_str(), s.device.as_str(), s.turns))
            .collect();
        assert_eq!(
            turns,
            [("@b:l", "B1", 2), ("@a:l", "A1", 1), ("@b:l", "B2", 1)]
        );
        assert_eq!(t.speaker, Some(member("@b:l", "B2")));
    }
}
