//! Length-prefixed framing: a 4-byte big-endian body length, then the body.
//!
//! [`FrameDecoder`] is sans-IO: the shell reads whatever the socket gives and pushes
//! it in; complete frames come out of [`FrameDecoder::next_frame`]. It holds at most one
//! frame, so it never buffers more than [`MAX_FRAME_LEN`] + 4 bytes however the peer
//! behaves.

use super::{ControlError, FRAME_HEADER_LEN, MAX_FRAME_LEN};

/// Initial body allocation cap: a length prefix alone (without the bytes behind it)
/// must not make us allocate the whole maximum up front.
const INITIAL_BODY_CAPACITY: usize = 64 * 1024;

/// Why a decoder stopped; kept so every later call reports the same fatal error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Poison {
    TooLarge(u32),
    Empty,
}

impl Poison {
    fn error(self) -> ControlError {
        match self {
            Poison::TooLarge(len) => ControlError::FrameTooLarge {
                len: u64::from(len),
            },
            Poison::Empty => ControlError::EmptyFrame,
        }
    }
}

/// Reassembles frames from a byte stream.
///
/// Drive it like this (the loop always terminates: `push` consumes nothing only when a
/// frame is ready or the decoder has failed, and then `next_frame` returns it or the
/// error):
///
/// ```
/// use blindfold_control::FrameDecoder;
///
/// let mut dec = FrameDecoder::new();
/// let mut read: &[u8] = &[0, 0, 0, 2, b'{', b'}', 0, 0, 0, 1]; // one frame and a bit
/// let mut frames = Vec::new();
/// while !read.is_empty() {
///     let used = dec.push(read);
///     read = &read[used..];
///     while let Some(frame) = dec.next_frame().expect("close the socket on error") {
///         frames.push(frame);
///     }
/// }
/// assert_eq!(frames, vec![b"{}".to_vec()]);
/// assert!(dec.is_mid_frame()); // at EOF this would be a truncated frame
/// ```
#[derive(Debug)]
pub struct FrameDecoder {
    header: [u8; FRAME_HEADER_LEN],
    header_filled: usize,
    /// Body length from the header; meaningful once `header_filled == 4`.
    body_len: usize,
    body: Vec<u8>,
    poison: Option<Poison>,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameDecoder {
    /// A decoder at the start of a stream.
    pub fn new() -> Self {
        FrameDecoder {
            header: [0; FRAME_HEADER_LEN],
            header_filled: 0,
            body_len: 0,
            body: Vec::new(),
            poison: None,
        }
    }

    /// Takes bytes up to the end of the current frame and returns how many it took;
    /// push the rest after draining [`next_frame`](Self::next_frame).
    ///
    /// Takes nothing while a complete frame waits to be taken, and nothing after a
    /// fatal error: a length prefix of zero or above [`MAX_FRAME_LEN`] (reported by
    /// `next_frame`; the connection must then be closed, since the stream has lost its
    /// frame boundaries).
    #[must_use = "bytes not taken must be pushed again"]
    pub fn push(&mut self, data: &[u8]) -> usize {
        if self.poison.is_some() {
            return 0;
        }
        let mut used = 0;
        if self.header_filled < FRAME_HEADER_LEN {
            let want = FRAME_HEADER_LEN - self.header_filled;
            let n = want.min(data.len());
            let (Some(dst), Some(src)) = (
                self.header
                    .get_mut(self.header_filled..self.header_filled + n),
                data.get(..n),
            ) else {
                return 0;
            };
            dst.copy_from_slice(src);
            self.header_filled += n;
            used = n;
            if self.header_filled < FRAME_HEADER_LEN {
                return used;
            }
            let len = u32::from_be_bytes(self.header);
            if len == 0 {
                self.poison = Some(Poison::Empty);
                return used;
            }
            match usize::try_from(len) {
                Ok(l) if l <= MAX_FRAME_LEN => self.body_len = l,
                _ => {
                    self.poison = Some(Poison::TooLarge(len));
                    return used;
                }
            }
            self.body = Vec::with_capacity(self.body_len.min(INITIAL_BODY_CAPACITY));
        }
        let rest = data.get(used..).unwrap_or_default();
        let need = self.body_len.saturating_sub(self.body.len());
        let n = need.min(rest.len());
        if let Some(chunk) = rest.get(..n) {
            // Grow geometrically but never past the announced length, so capacity
            // stays within the frame limit too.
            if self.body.capacity() - self.body.len() < n {
                let target = (self.body.capacity().saturating_mul(2))
                    .max(self.body.len() + n)
                    .min(self.body_len);
                self.body.reserve_exact(target - self.body.len());
            }
            self.body.extend_from_slice(chunk);
            used += n;
        }
        used
    }

    /// The next complete frame body, if one is ready.
    ///
    /// Errors (fatal, and repeated on every later call): [`ControlError::EmptyFrame`]
    /// for a zero length prefix, [`ControlError::FrameTooLarge`] for one above
    /// [`MAX_FRAME_LEN`].
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, ControlError> {
        if let Some(p) = self.poison {
            return Err(p.error());
        }
        if self.header_filled == FRAME_HEADER_LEN && self.body.len() == self.body_len {
            self.header_filled = 0;
            self.body_len = 0;
            return Ok(Some(std::mem::take(&mut self.body)));
        }
        Ok(None)
    }

    /// Whether part of a frame is buffered (so an end of stream now would truncate it).
    pub fn is_mid_frame(&self) -> bool {
        self.header_filled > 0
    }

    /// Bytes currently held (header and body); never more than `MAX_FRAME_LEN + 4`.
    pub fn buffered(&self) -> usize {
        self.header_filled + self.body.len()
    }

    /// Call at end of stream. Rejects a stream that ended inside a frame
    /// ([`ControlError::Truncated`]) or after a fatal framing error.
    pub fn finish(&self) -> Result<(), ControlError> {
        if let Some(p) = self.poison {
            return Err(p.error());
        }
        if self.is_mid_frame() {
            return Err(ControlError::Truncated {
                buffered: self.buffered() as u64,
            });
        }
        Ok(())
    }
}

/// Appends one frame holding `body` to `out`.
///
/// Rejects an empty body ([`ControlError::EmptyFrame`]) and one longer than
/// [`MAX_FRAME_LEN`] ([`ControlError::FrameTooLarge`]); `out` is unchanged then.
pub fn write_frame(body: &[u8], out: &mut Vec<u8>) -> Result<(), ControlError> {
    if body.is_empty() {
        return Err(ControlError::EmptyFrame);
    }
    let len = check_len(body.len())?;
    out.reserve(FRAME_HEADER_LEN + body.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(body);
    Ok(())
}

/// The length prefix for a body of `len` bytes, or `FrameTooLarge`.
pub(super) fn check_len(len: usize) -> Result<u32, ControlError> {
    match u32::try_from(len) {
        Ok(l) if len <= MAX_FRAME_LEN => Ok(l),
        _ => Err(ControlError::FrameTooLarge { len: len as u64 }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(dec: &mut FrameDecoder, mut data: &[u8]) -> Result<Vec<Vec<u8>>, ControlError> {
        let mut frames = Vec::new();
        loop {
            let used = dec.push(data);
            data = &data[used..];
            let mut got = false;
            while let Some(f) = dec.next_frame()? {
                frames.push(f);
                got = true;
            }
            if data.is_empty() || (used == 0 && !got) {
                return Ok(frames);
            }
        }
    }

    fn stream() -> Vec<u8> {
        let mut out = Vec::new();
        write_frame(b"{\"a\":1}", &mut out).unwrap();
        write_frame(b"x", &mut out).unwrap();
        write_frame(&[7u8; 300], &mut out).unwrap();
        out
    }

    #[test]
    fn frames_come_out_whole() {
        let mut dec = FrameDecoder::new();
        let frames = drain(&mut dec, &stream()).unwrap();
        assert_eq!(
            frames,
            vec![b"{\"a\":1}".to_vec(), b"x".to_vec(), vec![7u8; 300]]
        );
        assert!(!dec.is_mid_frame());
        dec.finish().unwrap();
    }

    #[test]
    fn split_at_every_boundary_decodes_identically() {
        let s = stream();
        let whole = drain(&mut FrameDecoder::new(), &s).unwrap();
        for cut in 0..=s.len() {
            let mut dec = FrameDecoder::new();
            let mut frames = drain(&mut dec, &s[..cut]).unwrap();
            frames.extend(drain(&mut dec, &s[cut..]).unwrap());
            assert_eq!(frames, whole, "split at {cut}");
        }
        // And byte by byte.
        let mut dec = FrameDecoder::new();
        let mut frames = Vec::new();
        for b in &s {
            frames.extend(drain(&mut dec, std::slice::from_ref(b)).unwrap());
        }
        assert_eq!(frames, whole);
    }

    #[test]
    fn truncated_frame_waits_then_completes() {
        let mut out = Vec::new();
        write_frame(b"hello", &mut out).unwrap();
        for cut in 0..out.len() {
            let mut dec = FrameDecoder::new();
            assert!(drain(&mut dec, &out[..cut]).unwrap().is_empty());
            assert_eq!(dec.is_mid_frame(), cut > 0);
            if cut > 0 {
                assert!(matches!(dec.finish(), Err(ControlError::Truncated { .. })));
            }
            assert_eq!(
                drain(&mut dec, &out[cut..]).unwrap(),
                vec![b"hello".to_vec()]
            );
        }
    }

    #[test]
    fn oversized_length_prefix_is_fatal() {
        let too_big = (MAX_FRAME_LEN as u32 + 1).to_be_bytes();
        let mut dec = FrameDecoder::new();
        assert_eq!(dec.push(&too_big), 4);
        let err = dec.next_frame().unwrap_err();
        assert!(
            matches!(err, ControlError::FrameTooLarge { len } if len == MAX_FRAME_LEN as u64 + 1)
        );
        // Poisoned: takes nothing more, keeps failing.
        assert_eq!(dec.push(b"more"), 0);
        assert!(dec.next_frame().is_err());
        assert!(dec.finish().is_err());
        assert!(matches!(err.disposition(), crate::Disposition::Close(_)));

        let mut dec = FrameDecoder::new();
        assert_eq!(dec.push(&[0xff; 8]), 4);
        assert!(matches!(
            dec.next_frame(),
            Err(ControlError::FrameTooLarge { len: 0xffff_ffff })
        ));
    }

    #[test]
    fn max_length_frame_is_accepted_and_bounded() {
        let mut dec = FrameDecoder::new();
        let hdr = (MAX_FRAME_LEN as u32).to_be_bytes();
        assert_eq!(dec.push(&hdr), 4);
        let chunk = vec![b' '; 1 << 20];
        let mut sent = 0;
        while sent < MAX_FRAME_LEN {
            let used = dec.push(&chunk);
            assert!(used > 0);
            sent += used;
            assert!(dec.buffered() <= MAX_FRAME_LEN + 4);
        }
        assert_eq!(dec.push(b"extra"), 0, "holds one frame at most");
        let f = dec.next_frame().unwrap().unwrap();
        assert_eq!(f.len(), MAX_FRAME_LEN);
        assert!(f.capacity() <= MAX_FRAME_LEN);
    }

    #[test]
    fn zero_length_frame_is_fatal() {
        let mut dec = FrameDecoder::new();
        assert_eq!(dec.push(&[0, 0, 0, 0, 1, 2]), 4);
        assert!(matches!(dec.next_frame(), Err(ControlError::EmptyFrame)));
        let mut out = Vec::new();
        assert!(matches!(
            write_frame(b"", &mut out),
            Err(ControlError::EmptyFrame)
        ));
        assert!(out.is_empty());
    }
}
