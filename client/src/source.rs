//! Synthetic media sources with realistic sizes and timing, and the probe header every
//! payload carries inside the encryption so receivers can measure loss, latency and
//! integrity after decrypting ([`crate::measure`]).
//!
//! Everything here is sans-IO: time comes in as `now`, randomness from a seeded RNG, so a
//! run in simulated time repeats exactly.
//!
//! - [`Probe`]: the fixed 40-byte header at the start of every payload.
//! - [`MediaSource`]: one stream — [`SourceKind::Audio`] (Opus-like: 20 ms packets of
//!   60–160 bytes with an RFC 6464 audio level that follows a talk/silence pattern) or
//!   [`SourceKind::Video`] (VP8-like frames at 15 fps / ~150 kbps for the thumbnail, 30
//!   fps / ~1.5 Mbps for full resolution, split into packets of at most 1200 bytes,
//!   keyframes periodically and on request, each packet frame-marked per RFC 9626).
//!   [`MediaSource::poll`] hands out what is due; [`MediaSource::poll_timeout`] says when
//!   the next packet is.
//! - [`Driver`]: a participant's three sources, sent through
//!   [`Participant::send_rtp`], with PLI/FIR ([`Event::KeyframeRequested`]) routed to the
//!   right source, RFC 7728 PAUSE/RESUME obeyed, and the relay's REMB/TMMBR for the
//!   full-resolution stream applied to that source's bitrate ([`MIN_FULL_RATE`]).
//!
//! Bitrates count RTP payload bytes (the probe header included), not RTP headers,
//! extensions or SRTP overhead.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use blindfold_relay::control::ExtmapIds;
use blindfold_relay::id::{ExtId, Pt, RtpTime, Ssrc, WireSeq};
use blindfold_relay::wire::rtp::{AbsSendTime, AudioLevel, FrameMarking};

use crate::rng::Rng;
use crate::{Event, OwnSsrcs, Participant, ParticipantError, SenderId};

// ---------------------------------------------------------------------------------------
// The probe header.

/// The probe's magic, the first three bytes of every synthetic payload: `"BFP"`.
pub const PROBE_MAGIC: [u8; 3] = *b"BFP";
/// The probe format version this module writes and reads.
pub const PROBE_VERSION: u8 = 1;
/// Length of the probe header; the smallest payload a source produces.
pub const PROBE_LEN: usize = 40;
/// Largest RTP payload a source produces (the probe header included).
pub const MAX_PAYLOAD: usize = 1200;

/// Flag bit: the packet belongs to a keyframe.
const FLAG_KEYFRAME: u8 = 0x01;
/// Where the CRC sits; it covers everything before it and everything after the header.
const CRC_AT: usize = 36;

/// The header at the start of every synthetic payload, inside the end-to-end encryption.
///
/// Wire layout, big-endian, [`PROBE_LEN`] = 40 bytes:
///
/// ```text
///  0..3   magic "BFP"
///  3      version (1)
///  4..12  sender id (u64)
/// 12..16  stream id: the sender's SSRC (u32)
/// 16..24  per-stream sequence number (u64, from 0; independent of the RTP sequence)
/// 24..32  send time: nanoseconds since the sender's epoch `Instant` (u64)
/// 32..34  payload length, this header included (u16)
/// 34      flags: bit 0 = keyframe; other bits zero
/// 35      reserved, zero
/// 36..40  CRC-32 (IEEE) over bytes 0..36 followed by bytes 40..length
/// 40..    filler
/// ```
///
/// Sender and receivers in one process share the epoch, so `receive now − epoch − send
/// time` is the one-way latency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Probe {
    /// Who sent it (the sender's own id; receivers usually install its keys under the
    /// same [`SenderId`]).
    pub sender: SenderId,
    /// The stream: the sender's SSRC.
    pub stream: Ssrc,
    /// Per-stream sequence number, counting every packet the source produced from 0.
    pub seq: u64,
    /// Send time in nanoseconds since the shared epoch.
    pub send_time_ns: u64,
    /// The packet belongs to a keyframe.
    pub keyframe: bool,
}

/// Why a probe could not be written or read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProbeError {
    /// Fewer bytes than the 40-byte header.
    #[error("payload shorter than the probe header")]
    Truncated,
    /// The first three bytes are not `"BFP"`.
    #[error("bad probe magic")]
    BadMagic,
    /// A version this module does not read.
    #[error("unsupported probe version {0}")]
    UnsupportedVersion(u8),
    /// The declared length is not the payload's length (truncated or extended).
    #[error("probe declares {declared} bytes, payload has {actual}")]
    LengthMismatch {
        /// The length in the header.
        declared: u16,
        /// The payload's length.
        actual: usize,
    },
    /// Unknown flag bits or a non-zero reserved byte.
    #[error("reserved probe bits set")]
    ReservedBits,
    /// The CRC does not match: the payload was altered.
    #[error("probe checksum mismatch")]
    Checksum,
    /// Encoding: the buffer is shorter than the header or longer than 65535 bytes.
    #[error("probe buffer length out of range")]
    BadBufferLength,
}

impl Probe {
    /// Writes the header into the first [`PROBE_LEN`] bytes of `payload`, which is the
    /// whole payload: its length goes in the header and the CRC covers the filler
    /// already in `payload[PROBE_LEN..]`. Allocates nothing.
    ///
    /// Rejects a `payload` shorter than [`PROBE_LEN`] or longer than 65535 bytes
    /// ([`ProbeError::BadBufferLength`]).
    pub fn encode_into(&self, payload: &mut [u8]) -> Result<(), ProbeError> {
        let len = u16::try_from(payload.len()).map_err(|_| ProbeError::BadBufferLength)?;
        let (head, filler) = payload
            .split_at_mut_checked(PROBE_LEN)
            .ok_or(ProbeError::BadBufferLength)?;
        head[0..3].copy_from_slice(&PROBE_MAGIC);
        head[3] = PROBE_VERSION;
        head[4..12].copy_from_slice(&self.sender.0.to_be_bytes());
        head[12..16].copy_from_slice(&self.stream.0.to_be_bytes());
        head[16..24].copy_from_slice(&self.seq.to_be_bytes());
        head[24..32].copy_from_slice(&self.send_time_ns.to_be_bytes());
        head[32..34].copy_from_slice(&len.to_be_bytes());
        head[34] = if self.keyframe { FLAG_KEYFRAME } else { 0 };
        head[35] = 0;
        let crc = checksum(&head[..CRC_AT], filler);
        head[CRC_AT..PROBE_LEN].copy_from_slice(&crc.to_be_bytes());
        Ok(())
    }

    /// Reads and verifies the probe at the start of `payload` (the whole payload).
    /// Allocates nothing, never panics.
    ///
    /// Rejects, in this order: fewer than 40 bytes ([`ProbeError::Truncated`]), a wrong
    /// magic ([`ProbeError::BadMagic`]), another version
    /// ([`ProbeError::UnsupportedVersion`]), a declared length other than
    /// `payload.len()` ([`ProbeError::LengthMismatch`]), unknown flags or a non-zero
    /// reserved byte ([`ProbeError::ReservedBits`]) and a CRC mismatch
    /// ([`ProbeError::Checksum`]).
    pub fn decode(payload: &[u8]) -> Result<Probe, ProbeError> {
        let (head, filler) = payload
            .split_first_chunk::<PROBE_LEN>()
            .ok_or(ProbeError::Truncated)?;
        if head[0..3] != PROBE_MAGIC {
            return Err(ProbeError::BadMagic);
        }
        if head[3] != PROBE_VERSION {
            return Err(ProbeError::UnsupportedVersion(head[3]));
        }
        let declared = u16::from_be_bytes([head[32], head[33]]);
        if usize::from(declared) != payload.len() {
            return Err(ProbeError::LengthMismatch {
                declared,
                actual: payload.len(),
            });
        }
        if head[34] & !FLAG_KEYFRAME != 0 || head[35] != 0 {
            return Err(ProbeError::ReservedBits);
        }
        let crc = u32::from_be_bytes([head[36], head[37], head[38], head[39]]);
        if crc != checksum(&head[..CRC_AT], filler) {
            return Err(ProbeError::Checksum);
        }
        let u64_at = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&head[at..at + 8]);
            u64::from_be_bytes(b)
        };
        Ok(Probe {
            sender: SenderId(u64_at(4)),
            stream: Ssrc(u32::from_be_bytes([head[12], head[13], head[14], head[15]])),
            seq: u64_at(16),
            send_time_ns: u64_at(24),
            keyframe: head[34] & FLAG_KEYFRAME != 0,
        })
    }
}

fn checksum(head: &[u8], filler: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(head);
    h.update(filler);
    h.finalize()
}

/// Nanoseconds from `epoch` to `now` (0 if `now` is earlier; saturating at u64).
pub(crate) fn nanos_since(epoch: Instant, now: Instant) -> u64 {
    u64::try_from(now.saturating_duration_since(epoch).as_nanos()).unwrap_or(u64::MAX)
}

// ---------------------------------------------------------------------------------------
// Header extensions of one packet.

/// Most header extensions a source's packet carries (audio level or frame marking,
/// abs-send-time, and transport-wide cc added by the [`Driver`]).
pub const MAX_EXTENSIONS: usize = 4;

/// The header extension elements of one outgoing packet, inline (no allocation). Each
/// element holds at most 3 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ExtList {
    ids: [u8; MAX_EXTENSIONS],
    data: [[u8; 3]; MAX_EXTENSIONS],
    lens: [u8; MAX_EXTENSIONS],
    n: usize,
}

impl ExtList {
    /// Adds an element. Returns false (and adds nothing) if the list is full or `data`
    /// is empty or longer than 3 bytes.
    pub fn push(&mut self, id: ExtId, data: &[u8]) -> bool {
        if self.n >= MAX_EXTENSIONS || data.is_empty() || data.len() > 3 {
            return false;
        }
        self.ids[self.n] = id.0;
        self.data[self.n][..data.len()].copy_from_slice(data);
        self.lens[self.n] = data.len() as u8;
        self.n += 1;
        true
    }

    /// How many elements.
    pub fn len(&self) -> usize {
        self.n
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// The element with this id.
    pub fn get(&self, id: ExtId) -> Option<&[u8]> {
        (0..self.n)
            .find(|&i| self.ids[i] == id.0)
            .map(|i| &self.data[i][..usize::from(self.lens[i])])
    }

    /// Calls `f` with the elements in the form [`Participant::send_rtp`] takes.
    pub fn with_slice<R>(&self, f: impl FnOnce(&[(ExtId, &[u8])]) -> R) -> R {
        let mut refs: [(ExtId, &[u8]); MAX_EXTENSIONS] = [(ExtId(0), &[]); MAX_EXTENSIONS];
        for (i, r) in refs.iter_mut().enumerate().take(self.n) {
            *r = (
                ExtId(self.ids[i]),
                &self.data[i][..usize::from(self.lens[i])],
            );
        }
        f(&refs[..self.n])
    }
}

// ---------------------------------------------------------------------------------------
// Sources.

/// A video simulcast layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VideoLayer {
    /// The low layer: ~15 fps, ~150 kbps.
    Thumbnail,
    /// Full resolution: ~30 fps, ~1.5 Mbps.
    Full,
}

/// What a source generates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SourceKind {
    /// Opus-like audio: one packet every 20 ms, RTP clock 48 kHz.
    Audio,
    /// VP8-like video, RTP clock 90 kHz.
    Video {
        /// Which simulcast layer.
        layer: VideoLayer,
    },
}

impl SourceKind {
    /// Packets (audio) or frames (video) per second.
    pub fn units_per_second(self) -> u64 {
        match self {
            SourceKind::Audio => 50,
            SourceKind::Video {
                layer: VideoLayer::Thumbnail,
            } => 15,
            SourceKind::Video {
                layer: VideoLayer::Full,
            } => 30,
        }
    }

    /// Target payload bitrate at rate multiplier 1 (audio: the mean of its size and
    /// talk/silence model, about 43 kbps).
    pub fn target_bps(self) -> u64 {
        match self {
            SourceKind::Audio => 43_000,
            SourceKind::Video {
                layer: VideoLayer::Thumbnail,
            } => 150_000,
            SourceKind::Video {
                layer: VideoLayer::Full,
            } => 1_500_000,
        }
    }

    fn clock(self) -> u64 {
        match self {
            SourceKind::Audio => 48_000,
            SourceKind::Video { .. } => 90_000,
        }
    }
}

/// How a keyframe compares with an average delta frame.
pub const KEYFRAME_RATIO: u64 = 4;

/// At most this many requested keyframes (PLI, FIR, a restart after PAUSE) start in any
/// second; a request past that waits. The relay asks at most twice a second per stream
/// (docs/protocol.md), plus the keyframe that restarts a resumed stream; one that asked
/// on every frame — each a keyframe, 4× the size — must not multiply the uplink.
/// Periodic keyframes do not count.
pub const MAX_REQUESTED_KEYFRAMES_PER_SECOND: usize = 3;

/// A [`MediaSource`]'s settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SourceConfig {
    /// Audio or which video layer.
    pub kind: SourceKind,
    /// The sender id written in every probe.
    pub sender: SenderId,
    /// The stream's SSRC.
    pub ssrc: Ssrc,
    /// RTP payload type (defaults: Opus 111, VP8 96).
    pub pt: Pt,
    /// Negotiated extension ids: audio sources write `audio_level`, video sources
    /// `frame_marking`, both `abs_send_time`; absent ids are not written.
    /// (`transport_cc` is the [`Driver`]'s, across a participant's streams.)
    pub extmap: ExtmapIds,
    /// The epoch probe send times count from; receivers must use the same.
    pub epoch: Instant,
    /// RNG seed (sizes, levels, talk pattern, filler, initial RTP timestamp).
    pub seed: u64,
    /// Bitrate multiplier: scales payload sizes, not packet or frame rates (clamped to
    /// [`PROBE_LEN`]..=`max_payload` per packet). 1.0 gives the targets.
    pub rate: f64,
    /// Video: a keyframe at least this often (the first frame is one too).
    pub keyframe_interval: Duration,
    /// Largest payload per packet, at most [`MAX_PAYLOAD`].
    pub max_payload: usize,
    /// If `poll` is called more than this late, the source skips the missed packets or
    /// frames (counted in [`SourceStats::skipped`]) instead of bursting them out.
    pub max_lag: Duration,
}

impl SourceConfig {
    /// An audio source: PT 111, extension ids of `extmap`, rate 1.
    pub fn audio(
        sender: SenderId,
        ssrc: Ssrc,
        extmap: ExtmapIds,
        epoch: Instant,
        seed: u64,
    ) -> Self {
        SourceConfig {
            kind: SourceKind::Audio,
            sender,
            ssrc,
            pt: Pt(111),
            extmap,
            epoch,
            seed,
            rate: 1.0,
            keyframe_interval: Duration::from_secs(3),
            max_payload: MAX_PAYLOAD,
            max_lag: Duration::from_millis(500),
        }
    }

    /// A video source for `layer`: PT 96, a keyframe every 3 s, rate 1.
    pub fn video(
        layer: VideoLayer,
        sender: SenderId,
        ssrc: Ssrc,
        extmap: ExtmapIds,
        epoch: Instant,
        seed: u64,
    ) -> Self {
        SourceConfig {
            kind: SourceKind::Video { layer },
            pt: Pt(96),
            ..Self::audio(sender, ssrc, extmap, epoch, seed)
        }
    }
}

/// What a source has produced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SourceStats {
    /// Packets handed out.
    pub packets: u64,
    /// Payload bytes handed out (probe headers included).
    pub bytes: u64,
    /// Video frames started (audio: 0).
    pub frames: u64,
    /// Keyframes started.
    pub keyframes: u64,
    /// Packets (audio) or frames (video) skipped because `poll` came too late.
    pub skipped: u64,
}

/// One packet to send, from [`MediaSource::poll`]. Its fields are `send_rtp`'s
/// arguments; [`Outgoing::send`] does that.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outgoing<'a> {
    /// The stream.
    pub ssrc: Ssrc,
    /// Payload type.
    pub pt: Pt,
    /// Marker: audio, the first packet of a talkspurt; video, a frame's last packet.
    pub marker: bool,
    /// RTP timestamp (48 kHz audio, 90 kHz video).
    pub timestamp: RtpTime,
    /// Header extension elements.
    pub extensions: ExtList,
    /// The payload: probe header and filler.
    pub payload: &'a [u8],
    /// The probe written at the start of `payload`.
    pub probe: Probe,
}

impl Outgoing<'_> {
    /// Sends this packet through `p` ([`Participant::send_rtp`], whose errors it
    /// returns).
    pub fn send(&self, p: &mut Participant, now: Instant) -> Result<WireSeq, ParticipantError> {
        self.extensions.with_slice(|ext| {
            p.send_rtp(
                now,
                self.ssrc,
                self.pt,
                self.marker,
                self.timestamp,
                ext,
                self.payload,
            )
        })
    }
}

/// A video frame being packetized.
#[derive(Debug, Clone, Copy)]
struct Frame {
    due: Instant,
    timestamp: RtpTime,
    keyframe: bool,
    size: usize,
    packets: usize,
    next: usize,
}

/// A synthetic media stream (sans-IO).
///
/// Call [`poll`](Self::poll) with the current time until it returns `None`, then wait
/// until [`poll_timeout`](Self::poll_timeout). Packets are scheduled from the `now` given
/// to [`new`](Self::new): audio every 20 ms; video one frame every 1/fps, all of a
/// frame's packets due at the frame's time (no pacing).
#[derive(Debug, Clone)]
pub struct MediaSource {
    cfg: SourceConfig,
    rng: Rng,
    start: Instant,
    /// Next audio packet or video frame number.
    index: u64,
    /// Next probe sequence number.
    seq: u64,
    ts0: u32,
    talking: bool,
    /// Audio: the packet index at which talking flips.
    flip_at: u64,
    frame: Option<Frame>,
    keyframe_requested: bool,
    next_periodic_key: u64,
    /// When the last requested keyframes started, oldest first.
    requested_at: VecDeque<Instant>,
    /// Bytes (before `rate`) requested keyframes took beyond a delta frame, which the
    /// next delta frames pay back.
    debt: f64,
    buf: Vec<u8>,
    stats: SourceStats,
}

impl MediaSource {
    /// A source whose first packet is due at `now`. `max_payload` is clamped to
    /// [`PROBE_LEN`]..=[`MAX_PAYLOAD`] and a negative or NaN rate counts as 0 (every
    /// packet the minimum size).
    pub fn new(mut cfg: SourceConfig, now: Instant) -> Self {
        cfg.max_payload = cfg.max_payload.clamp(PROBE_LEN, MAX_PAYLOAD);
        if cfg.rate.is_nan() || cfg.rate < 0.0 {
            cfg.rate = 0.0;
        }
        let mut rng = Rng::new(cfg.seed ^ u64::from(cfg.ssrc.0).rotate_left(32));
        let ts0 = rng.next_u64() as u32;
        MediaSource {
            cfg,
            rng,
            start: now,
            index: 0,
            seq: 0,
            ts0,
            talking: false,
            flip_at: 0,
            frame: None,
            keyframe_requested: false,
            next_periodic_key: 0,
            requested_at: VecDeque::with_capacity(MAX_REQUESTED_KEYFRAMES_PER_SECOND),
            debt: 0.0,
            buf: vec![0; MAX_PAYLOAD],
            stats: SourceStats::default(),
        }
    }

    /// The configuration (clamped as [`new`](Self::new) says).
    pub fn config(&self) -> &SourceConfig {
        &self.cfg
    }

    /// The stream's SSRC.
    pub fn ssrc(&self) -> Ssrc {
        self.cfg.ssrc
    }

    /// What it has produced so far.
    pub fn stats(&self) -> &SourceStats {
        &self.stats
    }

    /// Changes the bitrate multiplier from the next frame or packet on.
    pub fn set_rate(&mut self, rate: f64) {
        self.cfg.rate = if rate.is_nan() || rate < 0.0 {
            0.0
        } else {
            rate
        };
    }

    /// Makes the next frame started a keyframe (video; audio ignores it). Frames are
    /// never cut short, so it comes within one frame interval — unless
    /// [`MAX_REQUESTED_KEYFRAMES_PER_SECOND`] started within the last second: then with
    /// the first frame after that.
    pub fn request_keyframe(&mut self) {
        if matches!(self.cfg.kind, SourceKind::Video { .. }) {
            self.keyframe_requested = true;
        }
    }

    /// When the next packet is due (it may be in the past: call [`poll`](Self::poll)).
    pub fn poll_timeout(&self) -> Instant {
        match self.frame {
            Some(f) => f.due,
            None => self.due(self.index),
        }
    }

    /// The next packet if one is due at `now`; `None` until
    /// [`poll_timeout`](Self::poll_timeout). The probe's send time is `now`.
    pub fn poll(&mut self, now: Instant) -> Option<Outgoing<'_>> {
        match self.cfg.kind {
            SourceKind::Audio => self.poll_audio(now),
            SourceKind::Video { .. } => self.poll_video(now),
        }
    }

    fn due(&self, index: u64) -> Instant {
        let per_s = u128::from(self.cfg.kind.units_per_second());
        let nanos = u128::from(index) * 1_000_000_000 / per_s;
        self.start + Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    fn timestamp(&self, index: u64) -> RtpTime {
        let step = self.cfg.kind.clock() / self.cfg.kind.units_per_second();
        RtpTime(self.ts0.wrapping_add(index.wrapping_mul(step) as u32))
    }

    /// If the next unit is due more than `max_lag` before `now`, jumps to the latest
    /// unit due at or before `now`. Returns whether the next unit is due.
    fn catch_up(&mut self, now: Instant) -> bool {
        let due = self.due(self.index);
        if due > now {
            return false;
        }
        if now.duration_since(due) > self.cfg.max_lag {
            let elapsed = now.duration_since(self.start).as_nanos();
            let per_s = u128::from(self.cfg.kind.units_per_second());
            let latest = u64::try_from(elapsed * per_s / 1_000_000_000).unwrap_or(u64::MAX);
            if latest > self.index {
                self.stats.skipped += latest - self.index;
                self.index = latest;
            }
        }
        true
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform integer in `lo..=hi`.
    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.rng.next_u64() % (hi - lo + 1)
    }

    fn scaled(&self, bytes: f64) -> usize {
        let v = (bytes * self.cfg.rate).round();
        if v.is_finite() && v > 0.0 {
            (v as usize).clamp(PROBE_LEN, self.cfg.max_payload)
        } else {
            PROBE_LEN
        }
    }

    /// Fills the payload buffer with filler and the probe; returns the probe.
    fn write_payload(&mut self, now: Instant, len: usize, keyframe: bool) -> Probe {
        let probe = Probe {
            sender: self.cfg.sender,
            stream: self.cfg.ssrc,
            seq: self.seq,
            send_time_ns: nanos_since(self.cfg.epoch, now),
            keyframe,
        };
        self.seq += 1;
        let buf = &mut self.buf[..len];
        self.rng.fill(&mut buf[PROBE_LEN..]);
        // `len` is within PROBE_LEN..=MAX_PAYLOAD, which encode_into accepts.
        let _ = probe.encode_into(buf);
        self.stats.packets += 1;
        self.stats.bytes += len as u64;
        probe
    }

    fn abs_send_time(&self, now: Instant, ext: &mut ExtList) {
        if let Some(id) = self.cfg.extmap.abs_send_time {
            let t = AbsSendTime::from_duration(now.saturating_duration_since(self.cfg.epoch));
            ext.push(id, &t.to_bytes());
        }
    }

    /// Talkspurts of 1–4 s, silences of 0.5–2.5 s; starts talking. Talking: level 20–45
    /// -dBov with V set, 100–160 bytes; silence: level 90–127, V clear, 60–80 bytes.
    fn poll_audio(&mut self, now: Instant) -> Option<Outgoing<'_>> {
        if !self.catch_up(now) {
            return None;
        }
        let index = self.index;
        let mut marker = false;
        if index >= self.flip_at {
            self.talking = !self.talking;
            marker = self.talking;
            let packets = if self.talking {
                self.between(50, 200)
            } else {
                self.between(25, 125)
            };
            self.flip_at = index + packets;
        }
        let (level, size) = if self.talking {
            (self.between(20, 45), self.between(100, 160))
        } else {
            (self.between(90, 127), self.between(60, 80))
        };
        let len = self.scaled(size as f64);
        let probe = self.write_payload(now, len, false);
        let mut extensions = ExtList::default();
        if let Some(id) = self.cfg.extmap.audio_level {
            let al = AudioLevel {
                voice_activity: self.talking,
                level: level as u8,
            };
            if let Ok(b) = al.to_byte() {
                extensions.push(id, &[b]);
            }
        }
        self.abs_send_time(now, &mut extensions);
        self.index += 1;
        Some(Outgoing {
            ssrc: self.cfg.ssrc,
            pt: self.cfg.pt,
            marker,
            timestamp: self.timestamp(index),
            extensions,
            payload: &self.buf[..len],
            probe,
        })
    }

    /// Frames in keyframe intervals of `K` frames: a delta frame averages
    /// `avg·K/(K+R−1)` (±25%), a keyframe `R` times that (±10%), `R` =
    /// [`KEYFRAME_RATIO`], so the mean over an interval is the target. A requested
    /// keyframe's extra bytes are paid back by the delta frames after it (each gives up
    /// to half its size), as an encoder's rate control does: requests do not raise the
    /// stream's rate, where the link is congested least of all.
    fn start_frame(&mut self, now: Instant) -> Option<Frame> {
        if !self.catch_up(now) {
            return None;
        }
        let index = self.index;
        let fps = self.cfg.kind.units_per_second();
        let k = (self.cfg.keyframe_interval.as_nanos() * u128::from(fps) / 1_000_000_000)
            .clamp(1, u128::from(u32::MAX)) as u64;
        let requested = self.keyframe_requested
            && (self.requested_at.len() < MAX_REQUESTED_KEYFRAMES_PER_SECOND
                || self
                    .requested_at
                    .front()
                    .is_some_and(|&t| now.saturating_duration_since(t) >= Duration::from_secs(1)));
        if requested {
            if self.requested_at.len() == MAX_REQUESTED_KEYFRAMES_PER_SECOND {
                self.requested_at.pop_front();
            }
            self.requested_at.push_back(now);
        }
        let keyframe = requested || index >= self.next_periodic_key;
        if keyframe {
            self.keyframe_requested = false;
            self.next_periodic_key = index + k;
            self.stats.keyframes += 1;
        }
        self.stats.frames += 1;
        let avg = self.cfg.kind.target_bps() as f64 / 8.0 / fps as f64;
        let delta = avg * k as f64 / (k + KEYFRAME_RATIO - 1) as f64;
        let bytes = if keyframe {
            let bytes = delta * KEYFRAME_RATIO as f64 * (0.9 + 0.2 * self.unit());
            if requested {
                // At most a second's requests are owed: asked for faster than delta
                // frames can pay back (a thumbnail's few frames a second), the rest is
                // forgiven rather than owed for ever.
                let most =
                    (KEYFRAME_RATIO - 1) as f64 * delta * MAX_REQUESTED_KEYFRAMES_PER_SECOND as f64;
                self.debt = (self.debt + bytes - delta).min(most);
            }
            bytes
        } else {
            let planned = delta * (0.75 + 0.5 * self.unit());
            let paid = self.debt.min(planned / 2.0);
            self.debt -= paid;
            planned - paid
        };
        // Frame size scales; packets then split it (each at least a probe header).
        let v = (bytes * self.cfg.rate).round();
        let size = if v.is_finite() && v > PROBE_LEN as f64 {
            (v as usize).min(self.cfg.max_payload * 1000)
        } else {
            PROBE_LEN
        };
        Some(Frame {
            due: self.due(index),
            timestamp: self.timestamp(index),
            keyframe,
            size,
            packets: size.div_ceil(self.cfg.max_payload),
            next: 0,
        })
    }

    fn poll_video(&mut self, now: Instant) -> Option<Outgoing<'_>> {
        let mut f = match self.frame {
            Some(f) => f,
            None => self.start_frame(now)?,
        };
        // Equal parts; the first `size % packets` one byte longer.
        let k = f.next;
        let len = f.size / f.packets + usize::from(k < f.size % f.packets);
        let first = k == 0;
        let last = k + 1 == f.packets;
        f.next += 1;
        if last {
            self.frame = None;
            self.index += 1;
        } else {
            self.frame = Some(f);
        }
        let probe = self.write_payload(now, len, f.keyframe);
        let mut extensions = ExtList::default();
        if let Some(id) = self.cfg.extmap.frame_marking {
            let fm = FrameMarking {
                start_of_frame: first,
                end_of_frame: last,
                independent: f.keyframe,
                discardable: false,
                base_layer_sync: false,
                tid: 0,
                lid: None,
                tl0_pic_idx: None,
            };
            let mut b = [0u8; 3];
            if let Ok(n) = fm.write(&mut b) {
                extensions.push(id, &b[..n]);
            }
        }
        self.abs_send_time(now, &mut extensions);
        Some(Outgoing {
            ssrc: self.cfg.ssrc,
            pt: self.cfg.pt,
            marker: last,
            timestamp: f.timestamp,
            extensions,
            payload: &self.buf[..len],
            probe,
        })
    }
}

// ---------------------------------------------------------------------------------------
// Driving a participant.

/// Why a [`Driver`] could not be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DriverError {
    /// A source's SSRC is not the participant's SSRC for that role.
    #[error("source SSRC {0} does not match the participant's")]
    SsrcMismatch(Ssrc),
    /// A source of the wrong kind in a role (audio, thumbnail, full).
    #[error("source kind does not fit its role")]
    WrongKind,
}

/// What a [`Driver`] has done.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DriverStats {
    /// Packets handed to `send_rtp` successfully.
    pub sent: u64,
    /// Packets `send_rtp` refused (they are lost: their probe sequence numbers leave a
    /// gap).
    pub send_errors: u64,
    /// Keyframe requests routed to a source.
    pub keyframe_requests: u64,
    /// PAUSE and RESUME requests applied to a source.
    pub pause_requests: u64,
    /// REMB and TMMBR requests applied to the full-resolution source.
    pub rate_requests: u64,
}

/// The lowest bitrate multiplier a REMB or TMMBR sets on the full-resolution source: 5%
/// of its nominal ~1.5 Mbit/s, 75 kbit/s. Lower requests get this (below it a "full"
/// layer would be worse than the thumbnail); only a TMMBR of 0 stops the stream.
pub const MIN_FULL_RATE: f64 = 0.05;

/// A participant's three sources — audio, thumbnail, full — sent through its
/// [`Participant`].
///
/// In the participant's loop: call [`drive`](Self::drive) when
/// [`poll_timeout`](Self::poll_timeout) is due (and after connecting), and pass each
/// event to [`handle_event`](Self::handle_event) so PLI/FIR reach the right source.
#[derive(Debug, Clone)]
pub struct Driver {
    sources: [MediaSource; 3],
    /// Whether the audio source sends; off when the application sends real audio on
    /// the audio SSRC itself ([`Driver::without_audio`]).
    audio: bool,
    /// Sources the relay asked to pause (RFC 7728), by position: not polled, so they
    /// skip what falls due meanwhile and restart on a keyframe when resumed.
    paused: [bool; 3],
    /// The full-resolution source was stopped by a TMMBR of 0 (a limit of 0: stop),
    /// apart from any PAUSE; it sends again once both allow.
    tmmbr_stopped: bool,
    /// The full source's rate multiplier when the driver was built: REMB and TMMBR never
    /// raise it above this.
    full_nominal_rate: f64,
    /// The last REMB or TMMBR value for the full layer.
    asked_bps: Option<u64>,
    /// Our own estimate's limit on our uplink ([`Event::UplinkLimit`]).
    uplink_bps: Option<u64>,
    transport_cc: Option<ExtId>,
    tcc_seq: u16,
    stats: DriverStats,
}

impl Driver {
    /// Ties three sources to the participant whose SSRCs are `ssrcs`.
    /// `transport_cc`, if given, is the extension id of a transport-wide sequence number
    /// the driver adds to every packet, counting across the three streams.
    ///
    /// Rejects a source whose SSRC is not the matching one of `ssrcs`
    /// ([`DriverError::SsrcMismatch`]) or whose kind does not fit
    /// ([`DriverError::WrongKind`]).
    pub fn new(
        ssrcs: OwnSsrcs,
        audio: MediaSource,
        thumbnail: MediaSource,
        full: MediaSource,
        transport_cc: Option<ExtId>,
    ) -> Result<Self, DriverError> {
        let roles = [
            (&audio, ssrcs.audio, SourceKind::Audio),
            (
                &thumbnail,
                ssrcs.thumbnail,
                SourceKind::Video {
                    layer: VideoLayer::Thumbnail,
                },
            ),
            (
                &full,
                ssrcs.full,
                SourceKind::Video {
                    layer: VideoLayer::Full,
                },
            ),
        ];
        for (s, ssrc, kind) in roles {
            if s.ssrc() != ssrc {
                return Err(DriverError::SsrcMismatch(s.ssrc()));
            }
            if s.config().kind != kind {
                return Err(DriverError::WrongKind);
            }
        }
        let full_nominal_rate = full.config().rate;
        Ok(Driver {
            sources: [audio, thumbnail, full],
            audio: true,
            paused: [false; 3],
            tmmbr_stopped: false,
            full_nominal_rate,
            asked_bps: None,
            uplink_bps: None,
            transport_cc,
            tcc_seq: 0,
            stats: DriverStats::default(),
        })
    }

    /// The three default sources for `p` (see [`SourceConfig::audio`] and
    /// [`SourceConfig::video`]), starting at `now`, with the extension ids of `extmap`
    /// (transport-wide cc included).
    pub fn for_participant(
        p: &Participant,
        sender: SenderId,
        extmap: ExtmapIds,
        epoch: Instant,
        seed: u64,
        now: Instant,
    ) -> Self {
        let s = p.ssrcs();
        let audio = SourceConfig::audio(sender, s.audio, extmap, epoch, seed);
        let thumb = SourceConfig::video(
            VideoLayer::Thumbnail,
            sender,
            s.thumbnail,
            extmap,
            epoch,
            seed,
        );
        let full = SourceConfig::video(VideoLayer::Full, sender, s.full, extmap, epoch, seed);
        Driver {
            sources: [
                MediaSource::new(audio, now),
                MediaSource::new(thumb, now),
                MediaSource::new(full, now),
            ],
            audio: true,
            paused: [false; 3],
            tmmbr_stopped: false,
            full_nominal_rate: 1.0,
            asked_bps: None,
            uplink_bps: None,
            transport_cc: extmap.transport_cc,
            tcc_seq: 0,
            stats: DriverStats::default(),
        }
    }

    /// The same driver with its audio source silent: only the video layers are sent,
    /// and the application sends its own audio (a real Opus file) on the audio SSRC.
    pub fn without_audio(mut self) -> Self {
        self.audio = false;
        self
    }

    /// The sources: audio, thumbnail, full.
    pub fn sources(&self) -> &[MediaSource; 3] {
        &self.sources
    }

    /// The sources, to change rates or request keyframes.
    pub fn sources_mut(&mut self) -> &mut [MediaSource; 3] {
        &mut self.sources
    }

    /// Counters.
    pub fn stats(&self) -> &DriverStats {
        &self.stats
    }

    /// When [`drive`](Self::drive) has something to send next through `p`: never
    /// while `p` is not connected (drive sends nothing then, and the sources' due
    /// times, left in the past, would make a loop that waits for this spin).
    pub fn poll_timeout(&self, p: &Participant) -> Option<Instant> {
        if !p.is_connected() || p.is_failed() {
            return None;
        }
        let from = usize::from(!self.audio);
        self.sources
            .iter()
            .zip(self.active())
            .skip(from)
            .filter(|(_, active)| *active)
            .map(|(s, _)| s.poll_timeout())
            .min()
    }

    /// Sends every packet due at `now` through `p`. Returns how many were sent.
    ///
    /// Before `p` is connected it sends nothing (the sources wait; a long wait makes
    /// them skip, see [`SourceConfig::max_lag`]). Stops at the first packet `send_rtp`
    /// refuses and returns its error; that packet is lost, the rest go next time.
    pub fn drive(&mut self, p: &mut Participant, now: Instant) -> Result<usize, ParticipantError> {
        if p.is_failed() {
            return Err(ParticipantError::Failed);
        }
        if !p.is_connected() {
            return Ok(0);
        }
        let mut sent = 0;
        let from = usize::from(!self.audio);
        let active = self.active();
        for (src, _) in self
            .sources
            .iter_mut()
            .zip(active)
            .skip(from)
            .filter(|(_, active)| *active)
        {
            while let Some(mut out) = src.poll(now) {
                if let Some(id) = self.transport_cc {
                    out.extensions.push(id, &self.tcc_seq.to_be_bytes());
                    self.tcc_seq = self.tcc_seq.wrapping_add(1);
                }
                match out.send(p, now) {
                    Ok(_) => {
                        sent += 1;
                        self.stats.sent += 1;
                    }
                    Err(e) => {
                        self.stats.send_errors += 1;
                        return Err(e);
                    }
                }
            }
        }
        Ok(sent)
    }

    /// Applies the relay's requests about our streams; returns whether the event was
    /// one and applied. Other events are ignored.
    ///
    /// - [`Event::KeyframeRequested`]: the source starts its next frame as a keyframe
    ///   (at most [`MAX_REQUESTED_KEYFRAMES_PER_SECOND`] a second).
    /// - [`Event::PauseRequested`] (RFC 7728): the source stops, or sends again.
    /// - [`Event::Remb`] naming our full-resolution SSRC, or [`Event::Tmmbr`] for it:
    ///   the full source's bitrate multiplier becomes `bitrate /`
    ///   [`SourceKind::target_bps`] of the full layer, within [`MIN_FULL_RATE`]..=1, so
    ///   the layer sends about the bitrate asked for (payload bytes; headers and SRTP add
    ///   a few percent) and never more than nominal. (A source built with another rate
    ///   multiplier, as the load generator's `--rate` does, keeps that one as its
    ///   ceiling instead of 1.) The whole REMB value goes to the full layer (the relay
    ///   names it alone). A REMB not naming it, or a TMMBR for another stream, is not
    ///   applied.
    /// - A TMMBR of 0 stops the full source as a PAUSE does (RFC 5104, RFC 7728); a later
    ///   non-zero one sends again (unless a PAUSE holds it).
    /// - [`Event::UplinkLimit`] (our own estimate of our uplink, from the relay's
    ///   transport-cc feedback): the full layer also keeps under the limit less the
    ///   audio's and the thumbnail's nominal rates; the lower of that and the REMB or
    ///   TMMBR applies. `None` lifts it.
    ///
    /// - [`Event::Reconnecting`]: the PAUSE and TMMBR 0 in force went with the relay's
    ///   session (a relay that restarted holds none; one that kept the session pauses
    ///   the layer again if nobody receives it), so every source sends again.
    ///
    /// A source that sends again starts with a keyframe.
    pub fn handle_event(&mut self, event: &Event) -> bool {
        let full = self.sources[2].ssrc();
        let ssrc = match event {
            Event::Reconnecting => {
                let before = self.active();
                self.paused = [false; 3];
                self.tmmbr_stopped = false;
                self.restart_resumed(before);
                return true;
            }
            Event::KeyframeRequested(ssrc) => ssrc,
            Event::PauseRequested { ssrc, paused } => {
                let Some(k) = self.sources.iter().position(|s| s.ssrc() == *ssrc) else {
                    return false;
                };
                let before = self.active();
                self.paused[k] = *paused;
                self.restart_resumed(before);
                self.stats.pause_requests += 1;
                return true;
            }
            Event::Remb { bitrate_bps, ssrcs } if ssrcs.contains(&full) => {
                self.asked_bps = Some(*bitrate_bps);
                self.set_full_rate();
                return true;
            }
            Event::UplinkLimit(limit) => {
                self.uplink_bps = *limit;
                self.set_full_rate();
                return true;
            }
            Event::Tmmbr { ssrc, bitrate_bps } if *ssrc == full => {
                let before = self.active();
                self.tmmbr_stopped = *bitrate_bps == 0;
                if *bitrate_bps > 0 {
                    self.asked_bps = Some(*bitrate_bps);
                    self.set_full_rate();
                } else {
                    self.stats.rate_requests += 1;
                }
                self.restart_resumed(before);
                return true;
            }
            _ => return false,
        };
        match self.sources.iter_mut().find(|s| s.ssrc() == *ssrc) {
            Some(s) => {
                s.request_keyframe();
                self.stats.keyframe_requests += 1;
                true
            }
            None => false,
        }
    }

    /// Which sources are polled: not paused, and the full one not stopped by TMMBR.
    fn active(&self) -> [bool; 3] {
        let mut a = self.paused.map(|p| !p);
        a[2] &= !self.tmmbr_stopped;
        a
    }

    /// Sources that were stopped before and send now start with a keyframe.
    fn restart_resumed(&mut self, before: [bool; 3]) {
        for (k, now) in self.active().into_iter().enumerate() {
            if now && !before[k] {
                self.sources[k].request_keyframe();
            }
        }
    }

    /// The full-resolution stream's rate multiplier from the lower of the REMB or
    /// TMMBR and what our uplink limit leaves it.
    fn set_full_rate(&mut self) {
        let others = SourceKind::Audio.target_bps()
            + SourceKind::Video {
                layer: VideoLayer::Thumbnail,
            }
            .target_bps();
        let room = self.uplink_bps.map(|u| u.saturating_sub(others));
        let bitrate_bps = match (self.asked_bps, room) {
            (Some(a), Some(r)) => a.min(r),
            (a, r) => a.or(r).unwrap_or(u64::MAX),
        };
        let nominal = SourceKind::Video {
            layer: VideoLayer::Full,
        }
        .target_bps() as f64;
        let ceiling = self.full_nominal_rate;
        let rate = (bitrate_bps as f64 / nominal).clamp(MIN_FULL_RATE.min(ceiling), ceiling);
        self.sources[2].set_rate(rate);
        self.stats.rate_requests += 1;
    }
}
