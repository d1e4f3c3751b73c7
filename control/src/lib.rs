//! The control-socket protocol between blindfold-signaling (client) and the relay
//! (server), sans-IO: the codec only. It depends on serde and nothing of the relay's
//! (no DTLS, crypto or event loop), so the signaling service can use it alone; the
//! relay re-exports it as `blindfold_relay::control`, beside its registry and server.
//!
//! A Unix stream socket carries frames: a 4-byte big-endian length, then a JSON body
//! holding one [`Message`]. Signaling sends [`Request`]s (idempotent upserts and
//! removals stamped with a [`Generation`], a full [`Snapshot`] after each (re)connect,
//! `get_stats`); the relay answers each with a [`Response`] and reports
//! [`NotificationBody`] events. Both sides open with a [`Hello`]; the wire format is
//! specified in `docs/control-protocol.md`.
//!
//! Everything that comes out of [`decode`] is valid — ids, ICE credentials and
//! fingerprints are checked newtypes, lists are bounded, SSRCs are unique — so the
//! engine never re-checks a command. This is the control path, not the packet path:
//! it allocates freely, and nothing on the packet path depends on it.
//!
//! # Driving it
//!
//! ```
//! use blindfold_control::{self as control, Disposition, FrameDecoder, Message, Request,
//!                         RequestBody, RequestId};
//!
//! // Signaling side: encode a request into a frame.
//! let mut wire = Vec::new();
//! let req = Message::Request(Request { id: RequestId(1), body: RequestBody::GetStats });
//! control::encode(&req, &mut wire).unwrap();
//!
//! // Relay side: feed bytes as the socket yields them, decode each frame.
//! let mut dec = FrameDecoder::new();
//! let mut input = &wire[..];
//! let mut replies = Vec::new();
//! while !input.is_empty() {
//!     let used = dec.push(input);
//!     input = &input[used..];
//!     // A framing error is fatal: close the socket.
//!     while let Some(frame) = dec.next_frame().unwrap() {
//!         match control::decode(&frame) {
//!             Ok(msg) => assert_eq!(msg, req), // hand it to the engine
//!             Err(e) => match e.disposition() {
//!                 Disposition::Reply(reply) => replies.push(reply),
//!                 Disposition::Close(goodbye) => { /* send goodbye, close */ let _ = goodbye; }
//!             },
//!         }
//!     }
//! }
//! ```

#![warn(missing_docs, unreachable_pub)]

mod fingerprint;
mod frame;
mod id;
mod message;
mod types;

pub use fingerprint::{Fingerprint, FingerprintError};
pub use id::{ExtId, Ssrc};

pub use frame::{FrameDecoder, write_frame};
pub use message::{
    EndReason, ErrorCode, ErrorReply, Goodbye, Hello, HelloRole, Message, NotificationBody,
    RelayInfo, Request, RequestBody, Response, ResponseBody, Role, Snapshot, StatsReport, decode,
    encode,
};
pub use types::{
    ConfId, ConferenceSpec, ExtmapIds, FullSet, Generation, IcePwd, IceUfrag, Layer, RequestId,
    SessionId, SessionSpec, StreamKind, StreamSpec, SubscriptionSpec,
};

/// The major protocol version this crate speaks. Peers with another major are refused.
pub const PROTOCOL_VERSION: u32 = 1;
/// The minor protocol version this crate speaks (additions within the major). 1: the
/// session end reason `closed` ([`EndReason::Closed`]). 2: the session's `remote_pwd`
/// ([`SessionSpec::remote_pwd`]).
pub const PROTOCOL_MINOR: u32 = 2;

/// Length of the frame header: a big-endian u32 body length.
pub const FRAME_HEADER_LEN: usize = 4;
/// Largest frame body accepted or produced, 16 MiB. Sized for a full snapshot: 10 000
/// typical sessions (~0.7 KiB of JSON each) with their subscriptions fit with room to
/// spare; a snapshot at every limit at once would not, and `encode` refuses it.
pub const MAX_FRAME_LEN: usize = 16 * 1024 * 1024;
/// Longest session or conference id, bytes.
pub const MAX_ID_LEN: usize = 255;
/// Most streams one session may declare.
pub const MAX_STREAMS_PER_SESSION: usize = 64;
/// Most SSRCs in one subscription's `full` list.
pub const MAX_SUBSCRIPTION_SSRCS: usize = 1024;
/// Most sessions in a snapshot.
pub const MAX_SNAPSHOT_SESSIONS: usize = 10_000;
/// Most conferences in a snapshot.
pub const MAX_SNAPSHOT_CONFERENCES: usize = 10_000;
/// Most candidates a relay announces.
pub const MAX_CANDIDATES: usize = 16;
/// Longest free text (error messages, details), bytes.
pub const MAX_TEXT_LEN: usize = 1024;
/// Longest `software` string in a hello, bytes.
pub const MAX_SOFTWARE_LEN: usize = 128;
/// Most drop counters in a stats report.
pub const MAX_STATS_COUNTERS: usize = 256;

/// Everything that can go wrong on the control socket.
///
/// Not `Copy`: the variants that become replies carry the text that tells the peer
/// what was wrong. [`ControlError::disposition`] says whether to answer and go on, or
/// to close.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// A length prefix above [`MAX_FRAME_LEN`] (decoding), or a message too big to
    /// encode. Fatal when decoding: the stream can no longer be trusted.
    #[error("frame of {len} bytes exceeds the maximum of {MAX_FRAME_LEN}")]
    FrameTooLarge {
        /// The announced or attempted length.
        len: u64,
    },
    /// A zero length prefix (no message is empty). Fatal.
    #[error("zero-length frame")]
    EmptyFrame,
    /// The stream ended inside a frame.
    #[error("stream ended inside a frame ({buffered} bytes buffered)")]
    Truncated {
        /// Bytes of the partial frame.
        buffered: u64,
    },
    /// A frame that is not a message, or a non-request message that breaks the rules;
    /// no request id to answer to. Fatal.
    #[error("malformed message: {reason}")]
    Malformed {
        /// What is wrong.
        reason: String,
    },
    /// A request for a method this version does not know. Answered.
    #[error("unknown method `{method}`")]
    UnknownMethod {
        /// The request's id.
        id: RequestId,
        /// The method as sent (clipped).
        method: String,
    },
    /// A request with a readable id whose envelope or params are wrong. Answered.
    #[error("bad request: {reason}")]
    BadRequest {
        /// The request's id.
        id: RequestId,
        /// What is wrong.
        reason: String,
    },
    /// A hello with another major version. Fatal.
    #[error("protocol version {theirs} is not supported; this side speaks version {ours}")]
    VersionMismatch {
        /// Our major version.
        ours: u32,
        /// The peer's.
        theirs: u64,
    },
    /// A message out of order or in the wrong direction (see
    /// [`Message::check_order`]), or a hello from a peer with our own role. Fatal.
    #[error("protocol violation: {reason}")]
    ProtocolViolation {
        /// What happened.
        reason: String,
    },
    /// A value that breaks a rule of the protocol: returned by constructors such as
    /// [`SessionId::new`], by the `validate` methods and by [`encode`].
    #[error("{reason}")]
    Invalid {
        /// What is wrong.
        reason: String,
    },
}

/// What to do about a [`ControlError`] on a received message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    /// Send this error response and keep the connection.
    Reply(Message),
    /// Send this goodbye (best effort), then close the connection.
    Close(Message),
}

impl Disposition {
    /// The message to send.
    pub fn message(&self) -> &Message {
        match self {
            Disposition::Reply(m) | Disposition::Close(m) => m,
        }
    }
}

impl ControlError {
    /// The error code that reports this error to the peer.
    pub fn code(&self) -> ErrorCode {
        match self {
            ControlError::FrameTooLarge { .. }
            | ControlError::EmptyFrame
            | ControlError::Truncated { .. } => ErrorCode::BadFrame,
            ControlError::Malformed { .. } => ErrorCode::Malformed,
            ControlError::UnknownMethod { .. } => ErrorCode::UnknownMethod,
            ControlError::BadRequest { .. } | ControlError::Invalid { .. } => ErrorCode::BadRequest,
            ControlError::VersionMismatch { .. } => ErrorCode::VersionMismatch,
            ControlError::ProtocolViolation { .. } => ErrorCode::ProtocolViolation,
        }
    }

    /// The id of the request this error answers, if there is one.
    pub fn request_id(&self) -> Option<RequestId> {
        match self {
            ControlError::UnknownMethod { id, .. } | ControlError::BadRequest { id, .. } => {
                Some(*id)
            }
            _ => None,
        }
    }

    /// Answer and go on (a request with a readable id), or say goodbye and close
    /// (everything else: the peer is broken or speaks another protocol).
    pub fn disposition(&self) -> Disposition {
        match self.request_id() {
            Some(id) => {
                Disposition::Reply(Message::error_response(id, self.code(), self.to_string()))
            }
            None => Disposition::Close(Message::Goodbye(Goodbye::new(
                self.code(),
                self.to_string(),
            ))),
        }
    }
}

fn invalid(reason: impl Into<String>) -> ControlError {
    ControlError::Invalid {
        reason: reason.into(),
    }
}

/// Cuts `s` to at most `max` bytes on a char boundary, marking the cut with `…`.
fn clip(mut s: String, max: usize) -> String {
    if s.len() <= max {
        return s;
    }
    let mut cut = max.saturating_sub('…'.len_utf8());
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    s.truncate(cut);
    s.push('…');
    s
}

/// Fuzz entry: `data` as one body, then as a byte stream cut into chunks whose sizes
/// come from the first byte. Every decoded message must re-encode and re-decode to
/// itself; every error's disposition must encode and decode.
#[cfg(feature = "fuzz")]
#[doc(hidden)]
pub fn fuzz_one(data: &[u8]) {
    fuzz_body(data);

    let (seed, stream) = match data.split_first() {
        Some((s, rest)) => (*s, rest),
        None => return,
    };
    let mut dec = FrameDecoder::new();
    let mut rest = stream;
    let mut step = usize::from(seed) + 1;
    while !rest.is_empty() {
        let n = step.min(rest.len());
        let (mut chunk, tail) = rest.split_at(n);
        rest = tail;
        step = (step * 7 + 3) % 257 + 1;
        loop {
            let used = dec.push(chunk);
            chunk = chunk.get(used..).unwrap_or_default();
            assert!(dec.buffered() <= MAX_FRAME_LEN + FRAME_HEADER_LEN);
            let mut progressed = used > 0;
            loop {
                match dec.next_frame() {
                    Ok(Some(frame)) => {
                        assert!(!frame.is_empty() && frame.len() <= MAX_FRAME_LEN);
                        fuzz_body(&frame);
                        progressed = true;
                    }
                    Ok(None) => break,
                    Err(e) => {
                        assert!(matches!(e.disposition(), Disposition::Close(_)));
                        assert!(dec.finish().is_err());
                        return;
                    }
                }
            }
            if chunk.is_empty() {
                break;
            }
            assert!(progressed, "decoder stalled with input left");
        }
    }
    let _ = dec.finish();
}

#[cfg(feature = "fuzz")]
fn fuzz_body(body: &[u8]) {
    let roundtrip = |msg: &Message| {
        let mut out = Vec::new();
        match encode(msg, &mut out) {
            Ok(()) => {}
            // Defaults filled in on re-encoding can push a near-maximal body over.
            Err(ControlError::FrameTooLarge { .. }) if body.len() > MAX_FRAME_LEN / 2 => return,
            Err(e) => panic!("a decoded or generated message must encode: {e}"),
        }
        let mut dec = FrameDecoder::new();
        assert_eq!(dec.push(&out), out.len());
        let frame = dec.next_frame().ok().flatten().expect("one whole frame");
        let again = decode(&frame).expect("an encoded message must decode");
        assert_eq!(&again, msg);
    };
    match decode(body) {
        Ok(msg) => roundtrip(&msg),
        Err(e) => {
            let d = e.disposition();
            assert_eq!(matches!(d, Disposition::Reply(_)), e.request_id().is_some());
            roundtrip(d.message());
        }
    }
}

#[cfg(test)]
mod tests;
