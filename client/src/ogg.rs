//! Ogg Opus files (RFC 7845) over Ogg pages (RFC 3533): [`OggOpusReader`] gives a
//! sender the Opus packets of a file with their durations (so it can send one packet
//! per RTP payload, RFC 7587, at real time), and [`OggOpusWriter`] records received
//! packets into a file that `opusdec` and ffmpeg play.
//!
//! Only what a conference participant needs: one logical stream per file (the first
//! Opus stream; pages of other streams are skipped, and reading stops at its
//! end-of-stream page, so chained files give their first link), the whole file in
//! memory (clips and recordings are seconds to minutes: kilobytes to a few megabytes).
//! Every page's CRC is checked; damaged or truncated input is an [`OggError`] that says
//! where, never a panic.
//!
//! # Reading a clip and pacing it
//!
//! ```no_run
//! use blindfold_client::ogg::OggOpusReader;
//!
//! let mut clip = OggOpusReader::open("clip.opus".as_ref())?;
//! let head = clip.head();
//! println!("{} channel(s), pre-skip {} samples", head.channels, head.pre_skip);
//! for packet in &mut clip {
//!     let packet = packet?;
//!     // One RTP payload; the RTP timestamp advances by `packet.samples` (48 kHz).
//!     send(&packet.data);
//!     std::thread::sleep(packet.duration()); // typically 20 ms
//! }
//! # fn send(_: &[u8]) {}
//! # Ok::<(), blindfold_client::ogg::OggError>(())
//! ```
//!
//! # Recording a stream
//!
//! ```no_run
//! use blindfold_client::ogg::{OggOpusWriter, OpusHead};
//!
//! let head = OpusHead::new(2, OpusHead::TYPICAL_PRE_SKIP, 48_000);
//! let mut rec = OggOpusWriter::create("from-bob.opus".as_ref(), &head)?;
//! # let payloads: Vec<Vec<u8>> = Vec::new();
//! for payload in payloads {
//!     rec.write_packet(&payload)?; // duration from the packet's TOC byte
//! }
//! rec.finish()?; // end-of-stream page (dropping the writer does it too, best effort)
//! # Ok::<(), blindfold_client::ogg::OggError>(())
//! ```

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::time::Duration;

use blindfold_relay::wire::rtp::AudioLevel;

/// Opus always counts time in 48 kHz samples (RFC 7845 §4), whatever the input rate.
pub const OPUS_RATE: u32 = 48_000;

/// The longest Opus packet: 120 ms (RFC 6716 §3.2.5).
pub const MAX_PACKET_SAMPLES: u32 = 5_760;

/// The Ogg capture pattern that starts every page.
const CAPTURE: &[u8; 4] = b"OggS";
/// Fixed part of a page header, before the lacing values.
const PAGE_HEADER: usize = 27;
/// Byte range of the CRC field in a page header.
const CRC_FIELD: std::ops::Range<usize> = 22..26;
/// Header type flags (RFC 3533 §6).
const FLAG_CONTINUED: u8 = 0x01;
const FLAG_BOS: u8 = 0x02;
const FLAG_EOS: u8 = 0x04;
/// A page's granule position when no packet finishes on it (RFC 3533 §6: -1).
const NO_GRANULE: u64 = u64::MAX;
/// A page holds at most 255 lacing values.
const MAX_SEGMENTS: usize = 255;
/// The writer closes a page once it holds this much audio: one second, opusenc's
/// default `--max-delay`, so a recording interrupted by a crash loses at most that.
const PAGE_SAMPLES: u64 = OPUS_RATE as u64;

/// Why an Ogg Opus stream could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OggError {
    /// Reading or writing the file failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done, with the path.
        what: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A page that is not well formed Ogg (capture pattern, version, truncation,
    /// packet continuation, sequence numbers).
    #[error("Ogg page at byte {offset}: {reason}")]
    Page {
        /// Where the page starts in the input.
        offset: usize,
        /// What is wrong.
        reason: String,
    },
    /// A page whose CRC does not match its bytes: the file is corrupt.
    #[error(
        "Ogg page {sequence} at byte {offset}: CRC mismatch (stored {stored:08x}, \
         computed {computed:08x}); the file is corrupt"
    )]
    Crc {
        /// Where the page starts.
        offset: usize,
        /// Its page sequence number.
        sequence: u32,
        /// The CRC in its header.
        stored: u32,
        /// The CRC of its bytes.
        computed: u32,
    },
    /// Well-formed Ogg, but not an Opus stream per RFC 7845 (identification or comment
    /// header missing or malformed).
    #[error("not an Ogg Opus stream: {0}")]
    NotOpus(String),
    /// An Opus packet whose TOC byte gives no valid duration.
    #[error("Opus packet {index} (counting from 0): {source}")]
    Packet {
        /// Which audio packet of the stream.
        index: u64,
        /// Why.
        #[source]
        source: TocError,
    },
    /// A writer was asked for something Ogg Opus cannot hold.
    #[error("{0}")]
    Invalid(String),
}

/// Why an Opus packet's TOC byte (RFC 6716 §3.1) gives no duration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TocError {
    /// A packet of zero bytes has no TOC byte.
    #[error("empty packet (no TOC byte)")]
    Empty,
    /// Frame count code 3 needs a frame count byte after the TOC byte.
    #[error("frame count code 3 without its frame count byte")]
    MissingFrameCount,
    /// Code 3 with a frame count of 0 (RFC 6716 R5).
    #[error("frame count code 3 with 0 frames")]
    NoFrames,
    /// More than 120 ms of audio in one packet (RFC 6716 R5).
    #[error("{samples} samples at 48 kHz is longer than the 120 ms an Opus packet may hold")]
    TooLong {
        /// What the TOC adds up to.
        samples: u32,
    },
}

/// The duration of an Opus packet in 48 kHz samples, from its TOC byte (RFC 6716
/// §3.1): the frame size of its configuration times its frame count (code 0: one,
/// codes 1 and 2: two, code 3: the count in the second byte). Not a full validation of
/// the packet: frame lengths are not checked, which the decoder does.
pub fn opus_packet_samples(packet: &[u8]) -> Result<u32, TocError> {
    let &toc = packet.first().ok_or(TocError::Empty)?;
    let config = toc >> 3;
    // Frame sizes in 48 kHz samples (2.5 ms = 120); RFC 6716 Table 2.
    let frame = match config {
        // SILK-only: 10, 20, 40, 60 ms.
        0..=11 => [480, 960, 1920, 2880][usize::from(config % 4)],
        // Hybrid: 10, 20 ms.
        12..=15 => [480, 960][usize::from(config % 2)],
        // CELT-only: 2.5, 5, 10, 20 ms.
        _ => [120, 240, 480, 960][usize::from(config % 4)],
    };
    let frames = match toc & 0x03 {
        0 => 1,
        1 | 2 => 2,
        _ => {
            let &count = packet.get(1).ok_or(TocError::MissingFrameCount)?;
            match u32::from(count & 0x3f) {
                0 => return Err(TocError::NoFrames),
                n => n,
            }
        }
    };
    let samples = frame * frames;
    if samples > MAX_PACKET_SAMPLES {
        return Err(TocError::TooLong { samples });
    }
    Ok(samples)
}

/// Samples at 48 kHz as a [`Duration`].
pub fn samples_to_duration(samples: u64) -> Duration {
    Duration::from_nanos(samples.saturating_mul(1_000_000_000) / u64::from(OPUS_RATE))
}

/// The CRC-32 of Ogg pages (RFC 3533 §6): polynomial 0x04c11db7, initial value 0, no
/// reflection, no final XOR — not the zlib CRC of `crc32fast`, which is reflected.
pub fn ogg_crc32(bytes: &[u8]) -> u32 {
    crc_update(0, bytes)
}

fn crc_update(crc: u32, bytes: &[u8]) -> u32 {
    bytes.iter().fold(crc, |crc, &b| {
        (crc << 8) ^ CRC_TABLE[usize::from((crc >> 24) as u8 ^ b)]
    })
}

/// Byte-at-a-time table for [`ogg_crc32`], built at compile time.
const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut r = (i as u32) << 24;
        let mut bit = 0;
        while bit < 8 {
            r = if r & 0x8000_0000 != 0 {
                (r << 1) ^ 0x04c1_1db7
            } else {
                r << 1
            };
            bit += 1;
        }
        table[i] = r;
        i += 1;
    }
    table
};

/// The identification header, `OpusHead` (RFC 7845 §5.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpusHead {
    /// Header version; readers accept 0–15 (major version 0).
    pub version: u8,
    /// Output channels, 1 or more (1–2 for mapping family 0).
    pub channels: u8,
    /// Samples (48 kHz) to drop from the start of the decoded audio: the encoder's
    /// look-ahead.
    pub pre_skip: u16,
    /// The sample rate of the original input, for information only (0: unknown).
    pub input_rate: u32,
    /// Gain to apply on output, Q7.8 dB.
    pub output_gain: i16,
    /// Channel mapping family: 0 (mono or stereo, one stream), 1, 255, ….
    pub mapping_family: u8,
    /// For families other than 0: stream count, coupled count and the channel mapping
    /// table, as in the header; empty for family 0.
    pub mapping: Vec<u8>,
}

impl OpusHead {
    /// libopus's encoder look-ahead at 48 kHz (what opusenc writes): a recorder that
    /// does not know the sender's encoder uses it.
    pub const TYPICAL_PRE_SKIP: u16 = 312;

    /// A family-0 header (one Opus stream, mono or stereo), version 1, no gain.
    pub fn new(channels: u8, pre_skip: u16, input_rate: u32) -> OpusHead {
        OpusHead {
            version: 1,
            channels,
            pre_skip,
            input_rate,
            output_gain: 0,
            mapping_family: 0,
            mapping: Vec::new(),
        }
    }

    /// Reads an `OpusHead` packet.
    pub fn parse(packet: &[u8]) -> Result<OpusHead, OggError> {
        let bad = |why: &str| OggError::NotOpus(format!("OpusHead: {why}"));
        if !packet.starts_with(b"OpusHead") {
            return Err(OggError::NotOpus(
                "the first packet is not an OpusHead identification header".into(),
            ));
        }
        if packet.len() < 19 {
            return Err(bad(&format!("{} bytes, needs at least 19", packet.len())));
        }
        let version = packet[8];
        if version >> 4 != 0 {
            return Err(bad(&format!(
                "version {version} (only major version 0 is defined)"
            )));
        }
        let channels = packet[9];
        if channels == 0 {
            return Err(bad("0 channels"));
        }
        let mapping_family = packet[18];
        let mapping = &packet[19..];
        if mapping_family == 0 {
            if channels > 2 {
                return Err(bad(&format!(
                    "{channels} channels with mapping family 0 (at most 2)"
                )));
            }
        } else {
            let needed = 2 + usize::from(channels);
            if mapping.len() < needed {
                return Err(bad(&format!(
                    "mapping family {mapping_family} needs {needed} bytes of channel \
                     mapping, the header has {}",
                    mapping.len()
                )));
            }
            let (streams, coupled) = (mapping[0], mapping[1]);
            if streams == 0 || coupled > streams {
                return Err(bad(&format!(
                    "{streams} streams of which {coupled} coupled"
                )));
            }
        }
        Ok(OpusHead {
            version,
            channels,
            pre_skip: u16::from_le_bytes([packet[10], packet[11]]),
            input_rate: u32::from_le_bytes([packet[12], packet[13], packet[14], packet[15]]),
            output_gain: i16::from_le_bytes([packet[16], packet[17]]),
            mapping_family,
            mapping: if mapping_family == 0 {
                Vec::new()
            } else {
                mapping[..2 + usize::from(channels)].to_vec()
            },
        })
    }

    /// The header as a packet.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(19 + self.mapping.len());
        b.extend_from_slice(b"OpusHead");
        b.push(self.version);
        b.push(self.channels);
        b.extend_from_slice(&self.pre_skip.to_le_bytes());
        b.extend_from_slice(&self.input_rate.to_le_bytes());
        b.extend_from_slice(&self.output_gain.to_le_bytes());
        b.push(self.mapping_family);
        b.extend_from_slice(&self.mapping);
        b
    }

    /// Round trips through [`parse`](Self::parse): what a writer may put in a file.
    fn check(&self) -> Result<(), OggError> {
        match OpusHead::parse(&self.to_bytes()) {
            Ok(back) if back == *self => Ok(()),
            Ok(_) => Err(OggError::Invalid(format!(
                "OpusHead mapping table of {} bytes does not match mapping family {} \
                 with {} channels",
                self.mapping.len(),
                self.mapping_family,
                self.channels
            ))),
            Err(OggError::NotOpus(why)) => Err(OggError::Invalid(format!("cannot write {why}"))),
            Err(e) => Err(e),
        }
    }
}

/// The comment header, `OpusTags` (RFC 7845 §5.2).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OpusTags {
    /// Who wrote the stream (e.g. "libopus 1.3.1").
    pub vendor: String,
    /// `NAME=value` comments. Invalid UTF-8 is replaced, not refused.
    pub comments: Vec<String>,
}

impl OpusTags {
    /// Reads an `OpusTags` packet.
    pub fn parse(packet: &[u8]) -> Result<OpusTags, OggError> {
        let rest = packet.strip_prefix(b"OpusTags").ok_or_else(|| {
            OggError::NotOpus("the second packet is not an OpusTags comment header".into())
        })?;
        let mut cursor = rest;
        let vendor = take_string(&mut cursor, "vendor string")?;
        let count = take_u32(&mut cursor)
            .ok_or_else(|| OggError::NotOpus("OpusTags: truncated comment count".into()))?;
        let mut comments = Vec::new();
        for i in 0..count {
            comments.push(take_string(
                &mut cursor,
                &format!("comment {i} of {count}"),
            )?);
        }
        Ok(OpusTags { vendor, comments })
    }

    /// The header as a packet.
    pub fn to_bytes(&self) -> Result<Vec<u8>, OggError> {
        let len = |s: &str| {
            u32::try_from(s.len())
                .map_err(|_| OggError::Invalid("an OpusTags string over 4 GiB".into()))
        };
        let mut b = Vec::from(&b"OpusTags"[..]);
        b.extend_from_slice(&len(&self.vendor)?.to_le_bytes());
        b.extend_from_slice(self.vendor.as_bytes());
        let count = u32::try_from(self.comments.len())
            .map_err(|_| OggError::Invalid("over 2^32 OpusTags comments".into()))?;
        b.extend_from_slice(&count.to_le_bytes());
        for c in &self.comments {
            b.extend_from_slice(&len(c)?.to_le_bytes());
            b.extend_from_slice(c.as_bytes());
        }
        Ok(b)
    }
}

/// A length-prefixed string of a comment header (lengths are little-endian u32).
fn take_string(cursor: &mut &[u8], what: &str) -> Result<String, OggError> {
    let len = take_u32(cursor)
        .ok_or_else(|| OggError::NotOpus(format!("OpusTags: {what} is missing")))?;
    let len = usize::try_from(len).unwrap_or(usize::MAX);
    if len > cursor.len() {
        return Err(OggError::NotOpus(format!(
            "OpusTags: {what} of {len} bytes, only {} left",
            cursor.len()
        )));
    }
    let (s, tail) = cursor.split_at(len);
    *cursor = tail;
    Ok(String::from_utf8_lossy(s).into_owned())
}

fn take_u32(cursor: &mut &[u8]) -> Option<u32> {
    let (head, tail) = cursor.split_first_chunk::<4>()?;
    *cursor = tail;
    Some(u32::from_le_bytes(*head))
}

/// One Ogg page, borrowed from the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Page<'a> {
    pub(crate) flags: u8,
    /// `NO_GRANULE` when no packet finishes on the page.
    pub(crate) granule: u64,
    pub(crate) serial: u32,
    pub(crate) sequence: u32,
    pub(crate) lacing: &'a [u8],
    pub(crate) body: &'a [u8],
}

impl<'a> Page<'a> {
    /// Reads the page at `offset` of `data`, checking its CRC: the page and its length.
    pub(crate) fn parse(data: &'a [u8], offset: usize) -> Result<(Page<'a>, usize), OggError> {
        let bad = |reason: String| OggError::Page { offset, reason };
        let bytes = &data[offset.min(data.len())..];
        if !bytes.starts_with(CAPTURE) {
            let shown: Vec<String> = bytes.iter().take(4).map(|b| format!("{b:02x}")).collect();
            return Err(bad(format!(
                "no capture pattern \"OggS\" (found {}): not an Ogg file, or damaged",
                if shown.is_empty() {
                    "the end of the input".to_owned()
                } else {
                    shown.join(" ")
                }
            )));
        }
        if bytes.len() < PAGE_HEADER {
            return Err(bad(format!(
                "truncated header ({} of {PAGE_HEADER} bytes)",
                bytes.len()
            )));
        }
        if bytes[4] != 0 {
            return Err(bad(format!(
                "stream structure version {} (only 0)",
                bytes[4]
            )));
        }
        let segments = usize::from(bytes[26]);
        let header_len = PAGE_HEADER + segments;
        let lacing = bytes.get(PAGE_HEADER..header_len).ok_or_else(|| {
            bad(format!(
                "truncated lacing table ({segments} values, {} bytes left)",
                bytes.len() - PAGE_HEADER
            ))
        })?;
        let body_len: usize = lacing.iter().map(|&l| usize::from(l)).sum();
        let len = header_len + body_len;
        let body = bytes.get(header_len..len).ok_or_else(|| {
            bad(format!(
                "truncated body ({} of {body_len} bytes)",
                bytes.len() - header_len
            ))
        })?;
        let sequence = u32::from_le_bytes([bytes[18], bytes[19], bytes[20], bytes[21]]);
        let stored = u32::from_le_bytes([bytes[22], bytes[23], bytes[24], bytes[25]]);
        let crc = crc_update(0, &bytes[..CRC_FIELD.start]);
        let crc = crc_update(crc, &[0; 4]);
        let computed = crc_update(crc, &bytes[CRC_FIELD.end..len]);
        if computed != stored {
            return Err(OggError::Crc {
                offset,
                sequence,
                stored,
                computed,
            });
        }
        let page = Page {
            flags: bytes[5],
            granule: u64::from_le_bytes(bytes[6..14].try_into().expect("8 bytes")),
            serial: u32::from_le_bytes([bytes[14], bytes[15], bytes[16], bytes[17]]),
            sequence,
            lacing,
            body,
        };
        Ok((page, len))
    }

    /// The page's bytes, CRC computed.
    pub(crate) fn to_bytes(self) -> Vec<u8> {
        debug_assert!(self.lacing.len() <= MAX_SEGMENTS);
        let mut b = Vec::with_capacity(PAGE_HEADER + self.lacing.len() + self.body.len());
        b.extend_from_slice(CAPTURE);
        b.push(0);
        b.push(self.flags);
        b.extend_from_slice(&self.granule.to_le_bytes());
        b.extend_from_slice(&self.serial.to_le_bytes());
        b.extend_from_slice(&self.sequence.to_le_bytes());
        b.extend_from_slice(&[0; 4]);
        b.push(self.lacing.len() as u8);
        b.extend_from_slice(self.lacing);
        b.extend_from_slice(self.body);
        let crc = ogg_crc32(&b);
        b[CRC_FIELD].copy_from_slice(&crc.to_le_bytes());
        b
    }
}

/// One audio packet of an Ogg Opus stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpusPacket {
    /// The Opus packet: one RTP payload (RFC 7587).
    pub data: Vec<u8>,
    /// Its duration in 48 kHz samples, from its TOC byte.
    pub samples: u32,
    /// The granule position of its page if it is the last packet that finishes on that
    /// page (RFC 7845 §4: 48 kHz samples decoded up to its end, pre-skip included; on
    /// the last page, smaller than the sum of durations by the end trimming).
    pub granule: Option<u64>,
}

impl OpusPacket {
    /// How long it plays: the pacing of a sender.
    pub fn duration(&self) -> Duration {
        samples_to_duration(u64::from(self.samples))
    }
}

/// [`audio_levels`]'s energy VAD: a packet is voice when its level is below this
/// (louder than -40 dBov; speech recorded at a usual level is -20 to -30 dBov, a quiet
/// room -50 or below).
pub const VOICE_LEVEL: u8 = 40;

/// The RFC 6464 audio level of each of a mono or stereo stream's `packets`, for a
/// sender that has only the encoded audio (a file): each packet decoded (pure-Rust
/// decoder) and the level of its samples' RMS, in -dBov, 0 (full scale) to 127; the
/// voice-activity bit set below [`VOICE_LEVEL`], an energy VAD. A packet that does
/// not decode gets no level (`None`), and the decoder starts afresh after it; every
/// packet of a stream with more than two channels (mapping families other than 0)
/// gets none.
pub fn audio_levels(head: &OpusHead, packets: &[OpusPacket]) -> Vec<Option<AudioLevel>> {
    let channels = usize::from(head.channels);
    let decoder = (head.mapping_family == 0 && (1..=2).contains(&channels))
        .then(|| opus_decoder::OpusDecoder::new(48_000, channels).ok())
        .flatten();
    let Some(mut decoder) = decoder else {
        return vec![None; packets.len()];
    };
    let mut pcm = vec![0i16; MAX_PACKET_SAMPLES as usize * channels];
    packets
        .iter()
        .map(|p| {
            // A young decoder: a packet it cannot take must not take the sender down,
            // nor leave its state skewed for the packets after it.
            let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                decoder.decode(&p.data, &mut pcm, false)
            }));
            match decoded {
                Ok(Ok(per_channel)) => Some(level_of(pcm.get(..per_channel * channels)?)),
                Ok(Err(_)) | Err(_) => {
                    decoder.reset();
                    None
                }
            }
        })
        .collect()
}

/// The RFC 6464 level of 16-bit samples: their RMS in -dBov (a full-scale square
/// wave is 0 dBov), 127 for silence; voice below [`VOICE_LEVEL`].
pub fn level_of(samples: &[i16]) -> AudioLevel {
    let energy: f64 = samples.iter().map(|&x| f64::from(x) * f64::from(x)).sum();
    let rms = (energy / samples.len().max(1) as f64).sqrt() / 32768.0;
    let level = if rms > 0.0 {
        (-20.0 * rms.log10()).round().clamp(0.0, 127.0) as u8
    } else {
        127
    };
    AudioLevel {
        voice_activity: level < VOICE_LEVEL,
        level,
    }
}

/// Reads an Ogg Opus stream: its headers at once, then its audio packets as an
/// iterator (see its `Iterator` impl for errors).
#[derive(Debug)]
pub struct OggOpusReader {
    data: Vec<u8>,
    /// Offset of the next page.
    pos: usize,
    serial: u32,
    next_sequence: u32,
    head: OpusHead,
    tags: OpusTags,
    /// A packet continued on the next page.
    partial: Option<Vec<u8>>,
    /// Packets of the last page not returned yet; an `Err` for one whose TOC byte
    /// gives no duration.
    ready: VecDeque<Result<OpusPacket, OggError>>,
    /// Audio packets returned or queued so far.
    packets: u64,
    last_granule: Option<u64>,
    /// End-of-stream page read, end of input reached or an error returned.
    done: bool,
}

/// Packets that finished on one page.
struct PagePackets {
    offset: usize,
    granule: u64,
    packets: Vec<Vec<u8>>,
}

impl OggOpusReader {
    /// Reads the file at `path` (whole) and its headers.
    pub fn open(path: &Path) -> Result<OggOpusReader, OggError> {
        let data = std::fs::read(path).map_err(|source| OggError::Io {
            what: format!("reading {}", path.display()),
            source,
        })?;
        OggOpusReader::from_bytes(data)
    }

    /// Reads the headers of the stream in `data`.
    pub fn from_bytes(data: Vec<u8>) -> Result<OggOpusReader, OggError> {
        let (first, _) = Page::parse(&data, 0)?;
        if first.flags & FLAG_BOS == 0 {
            return Err(OggError::Page {
                offset: 0,
                reason: "the first page is not a beginning-of-stream page".into(),
            });
        }
        let mut reader = OggOpusReader {
            serial: first.serial,
            next_sequence: first.sequence,
            data,
            pos: 0,
            head: OpusHead::new(1, 0, 0),
            tags: OpusTags::default(),
            partial: None,
            ready: VecDeque::new(),
            packets: 0,
            last_granule: None,
            done: false,
        };
        // RFC 7845 §3: OpusHead alone on the first page; OpusTags next, ending its
        // last page, so audio starts on a fresh page.
        let head_page = reader.read_page()?.ok_or_else(|| {
            OggError::NotOpus("the stream ends before its identification header".into())
        })?;
        if head_page.packets.len() != 1 || reader.partial.is_some() {
            return Err(OggError::NotOpus(format!(
                "the first page holds {} packets; OpusHead must be alone on it",
                head_page.packets.len() + usize::from(reader.partial.is_some())
            )));
        }
        reader.head = OpusHead::parse(&head_page.packets[0])?;
        let tags_page = loop {
            match reader.read_page()? {
                Some(p) if p.packets.is_empty() => continue, // OpusTags spans pages
                Some(p) => break p,
                None => {
                    return Err(OggError::NotOpus(
                        "the stream ends before its comment header (OpusTags)".into(),
                    ));
                }
            }
        };
        if tags_page.packets.len() != 1 || reader.partial.is_some() {
            return Err(OggError::NotOpus(format!(
                "the page at byte {} ends OpusTags but holds other packets too; audio \
                 must start on a new page",
                tags_page.offset
            )));
        }
        reader.tags = OpusTags::parse(&tags_page.packets[0])?;
        Ok(reader)
    }

    /// The identification header.
    pub fn head(&self) -> &OpusHead {
        &self.head
    }

    /// The comment header.
    pub fn tags(&self) -> &OpusTags {
        &self.tags
    }

    /// The stream's serial number.
    pub fn serial(&self) -> u32 {
        self.serial
    }

    /// The granule position of the last page read that finished a packet: after the
    /// whole stream, minus [`OpusHead::pre_skip`], its playback length in samples.
    pub fn last_granule(&self) -> Option<u64> {
        self.last_granule
    }

    /// The next page of our stream and the packets that finished on it; `None` after
    /// the end-of-stream page or at the end of the input.
    fn read_page(&mut self) -> Result<Option<PagePackets>, OggError> {
        loop {
            if self.done {
                return Ok(None);
            }
            if self.pos >= self.data.len() {
                self.done = true;
                if self.partial.is_some() {
                    return Err(OggError::Page {
                        offset: self.pos,
                        reason: "the input ends in the middle of a packet".into(),
                    });
                }
                // A recording cut off without its end-of-stream page still plays.
                return Ok(None);
            }
            let offset = self.pos;
            let (page, len) = Page::parse(&self.data, offset)?;
            self.pos += len;
            if page.serial != self.serial {
                continue; // another logical stream multiplexed into the file
            }
            let bad = |reason: String| OggError::Page { offset, reason };
            if page.sequence != self.next_sequence {
                return Err(bad(format!(
                    "page sequence number {} where {} was due: a page is missing",
                    page.sequence, self.next_sequence
                )));
            }
            self.next_sequence = page.sequence.wrapping_add(1);
            if offset != 0 && page.flags & FLAG_BOS != 0 {
                return Err(bad(
                    "a second beginning-of-stream page for this stream".into()
                ));
            }
            let continued = page.flags & FLAG_CONTINUED != 0;
            match (continued, self.partial.is_some()) {
                (true, false) => {
                    return Err(bad("continues a packet that no earlier page started".into()));
                }
                (false, true) => {
                    return Err(bad(
                        "starts a new packet while the previous page's last packet is \
                         unfinished"
                            .into(),
                    ));
                }
                _ => {}
            }
            let mut packets = Vec::new();
            let mut current = self.partial.take().unwrap_or_default();
            let mut body = page.body;
            for &l in page.lacing {
                let (seg, rest) = body.split_at(usize::from(l));
                body = rest;
                current.extend_from_slice(seg);
                if l < 255 {
                    packets.push(std::mem::take(&mut current));
                }
            }
            if page.lacing.last() == Some(&255) {
                self.partial = Some(current);
            }
            if page.flags & FLAG_EOS != 0 {
                self.done = true;
                if self.partial.is_some() {
                    return Err(bad(
                        "the end-of-stream page ends in the middle of a packet".into()
                    ));
                }
            }
            if page.granule != NO_GRANULE && !packets.is_empty() {
                if let Some(last) = self.last_granule
                    && page.granule < last
                {
                    return Err(bad(format!(
                        "granule position {} after {last}: time runs backwards",
                        page.granule
                    )));
                }
                self.last_granule = Some(page.granule);
            }
            return Ok(Some(PagePackets {
                offset,
                granule: page.granule,
                packets,
            }));
        }
    }
}

/// What a whole stream holds, from [`OggOpusReader::summarize`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamSummary {
    /// Audio packets, including those counted in `bad_toc`.
    pub packets: u64,
    /// Packets whose TOC byte gives no duration (not Opus: synthetic audio).
    pub bad_toc: u64,
    /// How long it plays in 48 kHz samples: the last granule position less the
    /// pre-skip (`None` if no page gives one).
    pub playback_samples: Option<u64>,
}

impl StreamSummary {
    /// [`playback_samples`](Self::playback_samples) as a duration.
    pub fn playback(&self) -> Option<Duration> {
        self.playback_samples.map(samples_to_duration)
    }
}

impl OggOpusReader {
    /// Reads the rest of the stream: its packet count and length. Packets without a
    /// valid TOC are counted, not errors; damaged pages are.
    pub fn summarize(mut self) -> Result<StreamSummary, OggError> {
        let mut summary = StreamSummary {
            packets: 0,
            bad_toc: 0,
            playback_samples: None,
        };
        for item in self.by_ref() {
            match item {
                Ok(_) => {}
                Err(OggError::Packet { .. }) => summary.bad_toc += 1,
                Err(e) => return Err(e),
            }
            summary.packets += 1;
        }
        let pre_skip = u64::from(self.head.pre_skip);
        summary.playback_samples = self.last_granule.map(|g| g.saturating_sub(pre_skip));
        Ok(summary)
    }
}

/// Audio packets in order. A packet whose TOC byte gives no duration is an
/// [`OggError::Packet`] item and reading goes on (the pages are sound); any other error
/// ends the iteration.
impl Iterator for OggOpusReader {
    type Item = Result<OpusPacket, OggError>;

    fn next(&mut self) -> Option<Self::Item> {
        while self.ready.is_empty() {
            let page = match self.read_page() {
                Ok(Some(page)) => page,
                Ok(None) => return None,
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            };
            let count = page.packets.len();
            for (i, data) in page.packets.into_iter().enumerate() {
                let index = self.packets;
                self.packets += 1;
                let last = i + 1 == count && page.granule != NO_GRANULE;
                self.ready.push_back(match opus_packet_samples(&data) {
                    Ok(samples) => Ok(OpusPacket {
                        data,
                        samples,
                        granule: last.then_some(page.granule),
                    }),
                    Err(source) => Err(OggError::Packet { index, source }),
                });
            }
        }
        self.ready.pop_front()
    }
}

/// Writes an Ogg Opus stream: `OpusHead` and `OpusTags` pages at once, then audio pages
/// of up to one second each (flushed to `out` as each page closes, so a file being
/// recorded is playable up to its last page), and an end-of-stream page on
/// [`finish`](Self::finish) — or, best effort, when dropped.
///
/// Granule positions count 48 kHz samples of every packet finished so far, pre-skip
/// included (RFC 7845 §4); page sequence numbers run from 0; every page has its CRC.
#[derive(Debug)]
pub struct OggOpusWriter<W: Write> {
    /// `None` once [`finish`](Self::finish) handed it back.
    out: Option<W>,
    /// The end-of-stream page was written (or writing it failed): nothing more goes out.
    finished: bool,
    serial: u32,
    sequence: u32,
    /// Samples of every audio packet finished so far.
    granule: u64,
    packets: u64,
    /// The page being filled.
    lacing: Vec<u8>,
    body: Vec<u8>,
    /// It starts with the rest of a packet begun on the previous page.
    continued: bool,
    /// Granule of the last packet finished on it.
    page_granule: Option<u64>,
    page_samples: u64,
    /// The last segment written was 255 bytes: the packet goes on.
    in_packet: bool,
}

impl OggOpusWriter<BufWriter<File>> {
    /// Creates (truncates) `path` and writes the headers, with a serial number from
    /// the path and the clock (distinct streams get distinct serials, as RFC 3533 asks).
    pub fn create(path: &Path, head: &OpusHead) -> Result<Self, OggError> {
        let file = File::create(path).map_err(|source| OggError::Io {
            what: format!("creating {}", path.display()),
            source,
        })?;
        // Any value is valid; this one only needs to differ between files.
        #[allow(clippy::disallowed_methods)]
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let serial = ogg_crc32(path.as_os_str().as_encoded_bytes()) ^ nanos;
        let mut w = OggOpusWriter::new(BufWriter::new(file), head, serial)?;
        w.flush_out(&format!("writing {}", path.display()))?;
        Ok(w)
    }
}

impl<W: Write> OggOpusWriter<W> {
    /// Writes the `OpusHead` page (beginning of stream) and the `OpusTags` page (vendor
    /// "blindfold", no comments) to `out`.
    pub fn new(out: W, head: &OpusHead, serial: u32) -> Result<Self, OggError> {
        head.check()?;
        let mut w = OggOpusWriter {
            out: Some(out),
            finished: false,
            serial,
            sequence: 0,
            granule: 0,
            packets: 0,
            lacing: Vec::new(),
            body: Vec::new(),
            continued: false,
            page_granule: None,
            page_samples: 0,
            in_packet: false,
        };
        let tags = OpusTags {
            vendor: format!("blindfold {}", env!("CARGO_PKG_VERSION")),
            comments: Vec::new(),
        };
        // Each header alone on its page(s), granule 0 (RFC 7845 §3).
        for header in [head.to_bytes(), tags.to_bytes()?] {
            w.append(&header)?;
            w.page_granule = Some(0);
            w.close_page(false)?;
        }
        Ok(w)
    }

    /// Appends an audio packet, its duration from its TOC byte: the number of samples.
    pub fn write_packet(&mut self, packet: &[u8]) -> Result<u32, OggError> {
        let samples = opus_packet_samples(packet).map_err(|source| OggError::Packet {
            index: self.packets,
            source,
        })?;
        self.write_packet_with_samples(packet, samples)?;
        Ok(samples)
    }

    /// Appends an audio packet lasting `samples` (48 kHz, 1 to 5760): for a recorder
    /// that knows the duration from elsewhere (RTP timestamps), or packets whose TOC
    /// byte is not to be trusted.
    pub fn write_packet_with_samples(
        &mut self,
        packet: &[u8],
        samples: u32,
    ) -> Result<(), OggError> {
        if packet.is_empty() {
            return Err(OggError::Invalid(
                "an empty Opus packet cannot be stored in Ogg Opus".into(),
            ));
        }
        if !(1..=MAX_PACKET_SAMPLES).contains(&samples) {
            return Err(OggError::Invalid(format!(
                "an Opus packet of {samples} samples (1 to {MAX_PACKET_SAMPLES} at 48 kHz)"
            )));
        }
        if self.finished {
            return Err(OggError::Invalid("the stream is already finished".into()));
        }
        self.append(packet)?;
        self.granule += u64::from(samples);
        self.packets += 1;
        self.page_granule = Some(self.granule);
        self.page_samples += u64::from(samples);
        if self.page_samples >= PAGE_SAMPLES {
            self.close_page(false)?;
        }
        Ok(())
    }

    /// Audio packets written.
    pub fn packets(&self) -> u64 {
        self.packets
    }

    /// Samples (48 kHz) of every audio packet written, pre-skip included: the granule
    /// position the stream ends at.
    pub fn samples(&self) -> u64 {
        self.granule
    }

    /// Writes the last page with the end-of-stream flag, flushes and returns the output.
    pub fn finish(mut self) -> Result<W, OggError> {
        self.end()?;
        Ok(self.out.take().expect("end() leaves the output"))
    }

    fn end(&mut self) -> Result<(), OggError> {
        if self.finished {
            return Ok(());
        }
        // With no audio, an empty end-of-stream page (RFC 3533 allows 0 segments).
        if self.page_granule.is_none() {
            self.page_granule = Some(self.granule);
        }
        let closed = self.close_page(true);
        self.finished = true;
        closed
    }

    /// Adds `packet`'s segments to the page, closing pages that fill up.
    fn append(&mut self, packet: &[u8]) -> Result<(), OggError> {
        // A packet of n bytes is n / 255 segments of 255 and one of n % 255 (possibly 0:
        // a segment under 255 bytes is what says the packet ends).
        let full = packet.len() / 255 * 255;
        for seg in packet[..full].chunks(255) {
            self.push_segment(seg)?;
        }
        self.push_segment(&packet[full..])
    }

    fn push_segment(&mut self, seg: &[u8]) -> Result<(), OggError> {
        if self.lacing.len() == MAX_SEGMENTS {
            self.close_page(false)?;
        }
        self.lacing.push(seg.len() as u8);
        self.body.extend_from_slice(seg);
        self.in_packet = seg.len() == 255;
        Ok(())
    }

    fn close_page(&mut self, eos: bool) -> Result<(), OggError> {
        if self.lacing.is_empty() && !eos {
            return Ok(());
        }
        let mut flags = 0;
        if self.continued {
            flags |= FLAG_CONTINUED;
        }
        if self.sequence == 0 {
            flags |= FLAG_BOS;
        }
        if eos {
            flags |= FLAG_EOS;
        }
        let page = Page {
            flags,
            granule: self.page_granule.unwrap_or(NO_GRANULE),
            serial: self.serial,
            sequence: self.sequence,
            lacing: &self.lacing,
            body: &self.body,
        };
        let bytes = page.to_bytes();
        let what = format!("writing Ogg page {}", self.sequence);
        let Some(out) = self.out.as_mut() else {
            return Err(OggError::Invalid("the stream is already finished".into()));
        };
        out.write_all(&bytes).map_err(|source| OggError::Io {
            what: what.clone(),
            source,
        })?;
        self.flush_out(&what)?;
        self.sequence = self.sequence.wrapping_add(1);
        self.lacing.clear();
        self.body.clear();
        self.continued = self.in_packet;
        self.page_granule = None;
        self.page_samples = 0;
        Ok(())
    }

    fn flush_out(&mut self, what: &str) -> Result<(), OggError> {
        if let Some(out) = self.out.as_mut() {
            out.flush().map_err(|source| OggError::Io {
                what: what.to_owned(),
                source,
            })?;
        }
        Ok(())
    }
}

impl<W: Write> Drop for OggOpusWriter<W> {
    /// A recorder stopped by Ctrl-C or an error still leaves a complete file.
    fn drop(&mut self) {
        let _ = self.end();
    }
}
