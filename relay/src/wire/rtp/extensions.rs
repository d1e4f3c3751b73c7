//! Readers for the header extensions the relay uses.

use super::*;

/// Client-to-mixer audio level (RFC 6464 §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AudioLevel {
    /// The V bit: the sender believes the packet contains voice.
    pub voice_activity: bool,
    /// Level in -dBov, 0 (loudest, 0 dBov) to 127 (silence, -127 dBov or quieter).
    pub level: u8,
}

impl AudioLevel {
    /// The level in dBov: 0 down to -127.
    pub fn dbov(&self) -> i16 {
        -i16::from(self.level & 0x7f)
    }

    /// The element's data byte. Rejects a level above 127 ([`RtpError::BadAudioLevel`]).
    pub fn to_byte(&self) -> Result<u8, RtpError> {
        if self.level > 0x7f {
            return Err(RtpError::BadAudioLevel);
        }
        Ok(u8::from(self.voice_activity) << 7 | self.level)
    }
}

/// Reads an audio level element (RFC 6464 §3): `|V| level |`, one byte.
///
/// The one-byte form always carries exactly one byte. In the two-byte form the RFC's
/// length is 1, but a sender may pad the element itself; any length ≥ 1 is accepted and
/// only the first byte is read. Rejects an empty element ([`RtpError::AudioLevelLen`]).
pub fn audio_level(data: &[u8]) -> Result<AudioLevel, RtpError> {
    let &b = data.first().ok_or(RtpError::AudioLevelLen)?;
    Ok(AudioLevel {
        voice_activity: b & 0x80 != 0,
        level: b & 0x7f,
    })
}

/// Video frame marking (RFC 9626 §3).
///
/// The first byte is `|S|E|I|D|B| TID |` in both forms; the long form for scalable
/// streams (§3.1) may add the LID byte and then the TL0PICIDX byte. The short form for
/// non-scalable streams (§3.2) is one byte with B and TID zero, so it reads the same as
/// a one-byte long form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FrameMarking {
    /// S: the first packet of a frame.
    pub start_of_frame: bool,
    /// E: the last packet of a frame.
    pub end_of_frame: bool,
    /// I: the frame can be decoded without earlier frames (a keyframe).
    pub independent: bool,
    /// D: the frame can be dropped and the stream stays decodable.
    pub discardable: bool,
    /// B: base layer sync — the frame depends only on the base temporal layer.
    pub base_layer_sync: bool,
    /// TID: temporal layer, 0..=7 (0 is the base layer).
    pub tid: u8,
    /// LID: spatial/quality layer (second byte, long form only).
    pub lid: Option<u8>,
    /// TL0PICIDX: temporal layer 0 picture index (third byte, long form only).
    pub tl0_pic_idx: Option<u8>,
}

impl FrameMarking {
    /// The first packet of an independently decodable frame: where a receiver that needs
    /// a keyframe can start (S and I set).
    pub fn starts_keyframe(&self) -> bool {
        self.start_of_frame && self.independent
    }

    /// Writes the element's data (1 to 3 bytes) into `out` and returns its length.
    ///
    /// Rejects a TID above 7 or a TL0PICIDX without a LID ([`RtpError::BadFrameMarking`])
    /// and an `out` too small ([`RtpError::BufferTooSmall`]).
    pub fn write(&self, out: &mut [u8]) -> Result<usize, RtpError> {
        if self.tid > 7 || (self.tl0_pic_idx.is_some() && self.lid.is_none()) {
            return Err(RtpError::BadFrameMarking);
        }
        let first = u8::from(self.start_of_frame) << 7
            | u8::from(self.end_of_frame) << 6
            | u8::from(self.independent) << 5
            | u8::from(self.discardable) << 4
            | u8::from(self.base_layer_sync) << 3
            | self.tid;
        let bytes = [first, self.lid.unwrap_or(0), self.tl0_pic_idx.unwrap_or(0)];
        let len = 1 + usize::from(self.lid.is_some()) + usize::from(self.tl0_pic_idx.is_some());
        let dst = out.get_mut(..len).ok_or(RtpError::BufferTooSmall)?;
        dst.copy_from_slice(&bytes[..len]);
        Ok(len)
    }
}

/// Reads a frame marking element (RFC 9626 §3).
///
/// Accepts 1 byte (short form, or long form with LID and TL0PICIDX omitted), 2 bytes
/// (LID present) or 3 bytes (LID and TL0PICIDX present); rejects any other length
/// ([`RtpError::FrameMarkingLen`]). Reserved bits are not checked: a short-form sender
/// should send B and TID as zero, and they are reported as they are.
pub fn frame_marking(data: &[u8]) -> Result<FrameMarking, RtpError> {
    let (&b, rest) = data.split_first().ok_or(RtpError::FrameMarkingLen)?;
    if rest.len() > 2 {
        return Err(RtpError::FrameMarkingLen);
    }
    Ok(FrameMarking {
        start_of_frame: b & 0x80 != 0,
        end_of_frame: b & 0x40 != 0,
        independent: b & 0x20 != 0,
        discardable: b & 0x10 != 0,
        base_layer_sync: b & 0x08 != 0,
        tid: b & 0x07,
        lid: rest.first().copied(),
        tl0_pic_idx: rest.get(1).copied(),
    })
}

/// The abs-send-time extension's value: a 24-bit 6.18 fixed-point count of seconds
/// (6 integer bits, 18 fraction bits) that wraps every 64 s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AbsSendTime(pub u32);

impl AbsSendTime {
    /// The largest value, 64 s minus 2^-18 s.
    pub const MAX: u32 = 0x00ff_ffff;

    /// The time within the 64-second cycle, in nanoseconds, rounded down.
    ///
    /// Bits above the low 24 are ignored.
    pub fn as_nanos(self) -> u64 {
        (u64::from(self.0 & Self::MAX) * 1_000_000_000) >> 18
    }

    /// The time within the 64-second cycle, rounded down to a nanosecond.
    pub fn to_duration(self) -> Duration {
        Duration::from_nanos(self.as_nanos())
    }

    /// The abs-send-time of `t` (taken modulo 64 s), rounded to the nearest 2^-18 s.
    ///
    /// Rounding to nearest makes `from_duration(x.to_duration()) == x` for every `x`.
    pub fn from_duration(t: Duration) -> AbsSendTime {
        // Below 64 s in nanoseconds is below 2^36, so the shift cannot overflow.
        let nanos = (t.as_secs() % 64) * 1_000_000_000 + u64::from(t.subsec_nanos());
        let ticks = ((nanos << 18) + 500_000_000) / 1_000_000_000;
        // Rounding up from just below 64 s wraps to 0, like the clock itself.
        AbsSendTime((ticks as u32) & Self::MAX)
    }

    /// The element's three data bytes (the low 24 bits, big-endian).
    pub fn to_bytes(self) -> [u8; 3] {
        let [_, a, b, c] = self.0.to_be_bytes();
        [a, b, c]
    }
}

/// Reads an abs-send-time element: exactly 3 bytes, big-endian.
///
/// Rejects any other length ([`RtpError::AbsSendTimeLen`]).
pub fn abs_send_time(data: &[u8]) -> Result<AbsSendTime, RtpError> {
    match *data {
        [a, b, c] => Ok(AbsSendTime(u32::from_be_bytes([0, a, b, c]))),
        _ => Err(RtpError::AbsSendTimeLen),
    }
}

/// Reads a transport-wide sequence number element
/// (draft-holmer-rmcat-transport-wide-cc-extensions-01 §2): exactly 2 bytes, big-endian.
///
/// Rejects any other length ([`RtpError::TransportCcLen`]).
pub fn transport_cc_seq(data: &[u8]) -> Result<u16, RtpError> {
    match *data {
        [a, b] => Ok(u16::from_be_bytes([a, b])),
        _ => Err(RtpError::TransportCcLen),
    }
}
