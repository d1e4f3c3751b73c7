//! Sending an Ogg Opus file as the audio stream, per RFC 7587: each Opus packet of the
//! file is one RTP payload (payload type 111), the RTP timestamp advances by each
//! packet's duration in 48 kHz samples, and packets leave in real time, paced by those
//! durations (20 ms for typical files). The file loops: the timestamps keep advancing
//! across the seam, so a receiver hears one continuous stream. Each packet carries the
//! RFC 6464 level of its decoded audio ([`audio_levels`]), so the SFU can name this
//! participant the active speaker.

use std::path::Path;
use std::time::{Duration, Instant};

use blindfold_client::conference::{Conference, ConferenceError};
use blindfold_client::ogg::{OggOpusReader, OpusPacket, audio_levels};
use blindfold_relay::wire::rtp::AudioLevel;

/// How far behind schedule the sender may fall before it stops catching up: after a
/// stall (a busy machine), it resumes at the current time rather than bursting out
/// the backlog, as a live source would.
const MAX_LAG: Duration = Duration::from_millis(200);

/// An Ogg Opus clip being sent.
#[derive(Debug)]
pub struct ClipSender {
    packets: Vec<OpusPacket>,
    /// Each packet's audio level (none for one that did not decode).
    levels: Vec<Option<AudioLevel>>,
    next: usize,
    timestamp: u32,
    /// When the next packet is due, or before the first one went out (media not
    /// connected yet), when to try again. Kept here, not recomputed by the caller: its
    /// loop wakes for every received packet, and a deadline of "now + 20 ms" taken at
    /// each wake-up would never come.
    due: Instant,
    /// Whether the first packet went out.
    started: bool,
    /// Packets sent.
    pub sent: u64,
    /// Times the clip started over.
    pub loops: u64,
}

impl ClipSender {
    /// Reads the whole clip. Refuses a file that is not Ogg Opus, has no audio packet,
    /// or holds a packet whose TOC byte gives no duration (it could not be paced).
    pub fn open(path: &Path, first_timestamp: u32) -> Result<ClipSender, String> {
        let what = |e: &dyn std::fmt::Display| format!("--audio-file {}: {e}", path.display());
        let reader = OggOpusReader::open(path).map_err(|e| what(&e))?;
        let head = reader.head().clone();
        let packets: Vec<OpusPacket> = reader.collect::<Result<_, _>>().map_err(|e| what(&e))?;
        if packets.is_empty() {
            return Err(what(&"no audio packets"));
        }
        if let Some(i) = packets.iter().position(|p| p.samples == 0) {
            return Err(what(&format!("packet {i} has no duration (not Opus)")));
        }
        Ok(ClipSender {
            levels: audio_levels(&head, &packets),
            packets,
            next: 0,
            timestamp: first_timestamp,
            due: Instant::now(),
            started: false,
            sent: 0,
            loops: 0,
        })
    }

    /// The clip's packets, as read from the file.
    pub fn packets(&self) -> &[OpusPacket] {
        &self.packets
    }

    /// When [`ClipSender::send_due`] next has work (before media is connected, it
    /// tries every 20 ms).
    pub fn next_due(&self) -> Instant {
        self.due
    }

    /// Sends every packet due at `now`. Before media is connected nothing is sent and
    /// the clip waits at its start.
    pub fn send_due(&mut self, conf: &Conference, now: Instant) -> Result<(), ConferenceError> {
        if !self.started {
            // The clip starts when media can flow, from its first packet.
            self.due = now;
        }
        let mut due = self.due;
        if now.saturating_duration_since(due) > MAX_LAG {
            due = now;
        }
        while due <= now {
            let p = &self.packets[self.next];
            // The marker starts the stream (RFC 7587 §4.2: the first packet of a
            // talkspurt); the clip is sent without silence suppression.
            let level = self.levels[self.next];
            if !conf.send_audio(self.sent == 0, self.timestamp, &p.data, level)? {
                // Not connected yet: try again shortly, from the clip's start.
                self.due = now + Duration::from_millis(20);
                return Ok(());
            }
            self.started = true;
            self.sent += 1;
            self.timestamp = self.timestamp.wrapping_add(p.samples);
            due += p.duration();
            self.next += 1;
            if self.next == self.packets.len() {
                self.next = 0;
                self.loops += 1;
            }
        }
        self.due = due;
        Ok(())
    }
}
