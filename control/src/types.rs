//! Validated value types carried by control messages.
//!
//! Every type here checks its invariants when it is built ([`SessionId::new`],
//! [`IceUfrag::new`], …) and when it is deserialized, so a value of the type is always
//! valid. Composite specs ([`SessionSpec`], [`SubscriptionSpec`], …) have public fields
//! for convenience; their cross-field rules (no duplicate SSRC, bounded lists) are
//! checked by their `validate` methods, which [`decode`](super::decode) and
//! [`encode`](super::encode) both run.

use std::collections::HashSet;
use std::fmt;

use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{ControlError, MAX_ID_LEN, MAX_STREAMS_PER_SESSION, MAX_SUBSCRIPTION_SSRCS, invalid};
use crate::{ExtId, Ssrc};

/// Monotonic version stamp of a piece of state, chosen by the signaling side.
///
/// Every mutating request carries one; the relay applies a request only if its
/// generation is not older than the one it holds for that object (see
/// `docs/control-protocol.md`, "Generations").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Generation(pub u64);

impl<'de> Deserialize<'de> for Generation {
    /// Any u64.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        de_uint(d, "a generation (unsigned 64-bit integer)", 0, u64::MAX).map(Generation)
    }
}

/// Reads an unsigned integer in `min..=max`, with an error message naming `what`: serde's
/// own says only "expected u64", which does not tell the peer which field was wrong.
fn de_uint<'de, D: Deserializer<'de>>(
    d: D,
    what: &'static str,
    min: u64,
    max: u64,
) -> Result<u64, D::Error> {
    struct V {
        what: &'static str,
        min: u64,
        max: u64,
    }
    impl<'de> Visitor<'de> for V {
        type Value = u64;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.what)
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
            if (self.min..=self.max).contains(&v) {
                Ok(v)
            } else {
                Err(E::invalid_value(de::Unexpected::Unsigned(v), &self))
            }
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
            match u64::try_from(v) {
                Ok(u) => self.visit_u64(u),
                Err(_) => Err(E::invalid_value(de::Unexpected::Signed(v), &self)),
            }
        }
    }
    d.deserialize_u64(V { what, min, max })
}

/// Correlates a [`Response`](super::Response) with its [`Request`](super::Request).
/// Chosen by the requester; the relay echoes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RequestId(pub u64);

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Display for Generation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// Checks an opaque identifier: 1..=[`MAX_ID_LEN`] bytes of printable ASCII, no space.
/// Matrix room ids, user ids and device ids all fit; the restriction keeps logs safe.
fn check_id(what: &str, s: &str) -> Result<(), ControlError> {
    if s.is_empty() || s.len() > MAX_ID_LEN {
        return Err(invalid(format!(
            "{what} must be 1..={MAX_ID_LEN} bytes, got {}",
            s.len()
        )));
    }
    if let Some((at, b)) = s
        .bytes()
        .enumerate()
        .find(|(_, b)| !(0x21..=0x7e).contains(b))
    {
        return Err(invalid(format!(
            "{what} has byte 0x{b:02x} at offset {at}; allowed: printable ASCII without space"
        )));
    }
    Ok(())
}

macro_rules! text_id {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            #[doc = concat!("Validates a ", $what, ".")]
            ///
            /// Rejects an empty string, one longer than [`MAX_ID_LEN`] bytes, and any byte
            /// outside printable ASCII (0x21..=0x7e).
            pub fn new(s: impl Into<String>) -> Result<Self, ControlError> {
                let s = s.into();
                check_id($what, &s)?;
                Ok(Self(s))
            }

            /// The identifier as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = ControlError;
            fn try_from(s: String) -> Result<Self, ControlError> {
                Self::new(s)
            }
        }

        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

text_id!(
    /// Names one participant's media session on the relay (one ICE/DTLS transport),
    /// chosen by the signaling side, unique per relay.
    SessionId,
    "session_id"
);
text_id!(
    /// Names a conference (the set of sessions that see each other's media), chosen by
    /// the signaling side; typically the Matrix room id.
    ConfId,
    "conf_id"
);

/// RFC 8839 §5.4 `ice-char = ALPHA / DIGIT / "+" / "/"`.
fn check_ice_chars(what: &str, s: &str, min: usize, max: usize) -> Result<(), ControlError> {
    if s.len() < min || s.len() > max {
        return Err(invalid(format!(
            "{what} must be {min}..={max} ice-chars, got {} bytes",
            s.len()
        )));
    }
    if let Some((at, b)) = s
        .bytes()
        .enumerate()
        .find(|(_, b)| !(b.is_ascii_alphanumeric() || *b == b'+' || *b == b'/'))
    {
        return Err(invalid(format!(
            "{what} has byte 0x{b:02x} at offset {at}; RFC 8839 ice-char is ALPHA / DIGIT / \"+\" / \"/\""
        )));
    }
    Ok(())
}

/// An ICE username fragment (RFC 8839 §5.4): 4..=256 ice-chars.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct IceUfrag(String);

impl IceUfrag {
    /// Validates a ufrag. Rejects fewer than 4 or more than 256 bytes and any byte that
    /// is not an RFC 8839 ice-char (`A-Z a-z 0-9 + /`).
    pub fn new(s: impl Into<String>) -> Result<Self, ControlError> {
        let s = s.into();
        check_ice_chars("ICE ufrag", &s, 4, 256)?;
        Ok(Self(s))
    }

    /// The ufrag as text (as it appears in STUN USERNAME).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for IceUfrag {
    type Error = ControlError;
    fn try_from(s: String) -> Result<Self, ControlError> {
        Self::new(s)
    }
}

impl From<IceUfrag> for String {
    fn from(v: IceUfrag) -> String {
        v.0
    }
}

/// An ICE password (RFC 8839 §5.4): 22..=256 ice-chars. A credential: its `Debug`
/// output is redacted and error messages never quote it.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct IcePwd(String);

impl IcePwd {
    /// Validates a password. Rejects fewer than 22 or more than 256 bytes and any byte
    /// that is not an RFC 8839 ice-char.
    pub fn new(s: impl Into<String>) -> Result<Self, ControlError> {
        let s = s.into();
        check_ice_chars("ICE pwd", &s, 22, 256)?;
        Ok(Self(s))
    }

    /// The password (the short-term credential key for STUN MESSAGE-INTEGRITY).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for IcePwd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("IcePwd(<redacted>)")
    }
}

impl TryFrom<String> for IcePwd {
    type Error = ControlError;
    fn try_from(s: String) -> Result<Self, ControlError> {
        Self::new(s)
    }
}

impl From<IcePwd> for String {
    fn from(v: IcePwd) -> String {
        v.0
    }
}

use crate::Fingerprint;

// The typed ids travel as plain JSON numbers.

impl Serialize for Ssrc {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u32(self.0)
    }
}

impl<'de> Deserialize<'de> for Ssrc {
    /// Any u32; rejects negatives, fractions and values above `u32::MAX`.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        de_uint(d, "an SSRC (0..=4294967295)", 0, u64::from(u32::MAX)).map(|v| Ssrc(v as u32))
    }
}

impl Serialize for ExtId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(self.0)
    }
}

impl<'de> Deserialize<'de> for ExtId {
    /// 1..=255 (RFC 8285 §4.2, §4.3: 0 is padding, never an id).
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        de_uint(d, "an extmap id (1..=255, RFC 8285)", 1, 255).map(|v| ExtId(v as u8))
    }
}

/// What a stream carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamKind {
    /// Audio (Opus).
    Audio,
    /// Video.
    Video,
}

/// Which simulcast layer a video stream is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Layer {
    /// The low-resolution layer every viewer gets unless it asked for `full`.
    Thumbnail,
    /// The full-resolution layer, sent only to viewers that subscribed to it.
    Full,
    /// Not simulcast: audio (always), or single-layer video sent to every viewer.
    None,
}

/// One RTP stream a session sends, declared so the relay forwards it (packets with an
/// undeclared SSRC are dropped).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamSpec {
    /// The stream's SSRC.
    pub ssrc: Ssrc,
    /// Audio or video.
    pub kind: StreamKind,
    /// Simulcast layer; must be [`Layer::None`] for audio.
    pub layer: Layer,
}

/// Negotiated RTP header extension ids (SDP `a=extmap`, RFC 8285) the relay reads.
/// An absent extension was not negotiated.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtmapIds {
    /// `urn:ietf:params:rtp-hdrext:ssrc-audio-level` (RFC 6464), for active speaker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio_level: Option<ExtId>,
    /// Frame marking (RFC 9626 / draft-ietf-avtext-framemarking), for keyframes and layers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frame_marking: Option<ExtId>,
    /// `http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time`, for REMB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abs_send_time: Option<ExtId>,
    /// Transport-wide congestion control sequence numbers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport_cc: Option<ExtId>,
}

impl ExtmapIds {
    /// Rejects two extensions mapped to the same id (RFC 8285 §5: an id names one
    /// extension).
    pub fn validate(&self) -> Result<(), ControlError> {
        let named = [
            ("audio_level", self.audio_level),
            ("frame_marking", self.frame_marking),
            ("abs_send_time", self.abs_send_time),
            ("transport_cc", self.transport_cc),
        ];
        for (i, (a, ida)) in named.iter().enumerate() {
            for (b, idb) in named.iter().skip(i + 1) {
                if let (Some(x), Some(y)) = (ida, idb)
                    && x == y
                {
                    return Err(invalid(format!(
                        "extmap: {a} and {b} both use id {x}; each extension needs its own id"
                    )));
                }
            }
        }
        Ok(())
    }
}

/// A conference as the signaling side wants it to exist.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConferenceSpec {
    /// The conference.
    pub conf_id: ConfId,
}

/// Everything the relay needs to run one participant's session: ICE-lite credentials,
/// the DTLS fingerprint to pin, the streams it sends and the extension ids to read.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionSpec {
    /// The session.
    pub session_id: SessionId,
    /// The conference it belongs to.
    pub conf_id: ConfId,
    /// The relay's ufrag for this session (from the SDP answer).
    pub ice_ufrag: IceUfrag,
    /// The relay's password for this session (from the SDP answer).
    pub ice_pwd: IcePwd,
    /// The participant's ufrag (from its SDP offer); STUN USERNAME is
    /// `ice_ufrag:remote_ufrag`.
    pub remote_ufrag: IceUfrag,
    /// The participant's ICE password (from its SDP offer), since minor version 2: the
    /// relay's own checks to a new address the participant nominates are keyed with it,
    /// and its media moves there only once one is answered from there. Absent: media
    /// moves on the nomination alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_pwd: Option<IcePwd>,
    /// The participant's DTLS certificate fingerprint (from its SDP offer); the
    /// handshake fails unless the client certificate matches.
    pub dtls_fingerprint: Fingerprint,
    /// The streams the participant sends, at most [`MAX_STREAMS_PER_SESSION`], SSRCs
    /// distinct. May be empty (receive-only).
    pub streams: Vec<StreamSpec>,
    /// Header extension ids; all absent if omitted.
    #[serde(default)]
    pub extmap: ExtmapIds,
    /// The participant negotiated TMMBR (`a=rtcp-fb:<pt> ccm tmmbr`, RFC 5104) for its
    /// video: the relay's rate requests for its full-resolution stream go as TMMBR
    /// instead of REMB. Absent: false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tmmbr: bool,
}

impl SessionSpec {
    /// Rejects more than [`MAX_STREAMS_PER_SESSION`] streams, a duplicate SSRC, an audio
    /// stream with a simulcast layer, and clashing extmap ids.
    pub fn validate(&self) -> Result<(), ControlError> {
        let id = &self.session_id;
        if self.streams.len() > MAX_STREAMS_PER_SESSION {
            return Err(invalid(format!(
                "session {id}: {} streams, at most {MAX_STREAMS_PER_SESSION} allowed",
                self.streams.len()
            )));
        }
        let mut seen = HashSet::with_capacity(self.streams.len());
        for s in &self.streams {
            if !seen.insert(s.ssrc) {
                return Err(invalid(format!(
                    "session {id}: duplicate ssrc {} in streams",
                    s.ssrc
                )));
            }
            if s.kind == StreamKind::Audio && s.layer != Layer::None {
                return Err(invalid(format!(
                    "session {id}: audio stream ssrc {} must have layer \"none\"",
                    s.ssrc
                )));
            }
        }
        self.extmap
            .validate()
            .map_err(|e| invalid(format!("session {id}: {e}")))
    }
}

/// Which of its conference's full-resolution layers a session receives.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum FullSet {
    /// Every full layer in the conference (JSON `"all"`).
    All,
    /// The full layers of the conference's active speaker, whoever it is (JSON
    /// `"speaker"`): it follows each `active_speaker` change; before the first, none.
    Speaker,
    /// Only these full-layer SSRCs (JSON array); every other video at thumbnail. Empty:
    /// thumbnails only.
    Ssrcs(Vec<Ssrc>),
}

impl Serialize for FullSet {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            FullSet::All => s.serialize_str("all"),
            FullSet::Speaker => s.serialize_str("speaker"),
            FullSet::Ssrcs(v) => v.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for FullSet {
    /// `"all"`, `"speaker"` or an array of u32; rejects any other string or type.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = FullSet;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("\"all\", \"speaker\" or an array of SSRCs")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<FullSet, E> {
                match v {
                    "all" => Ok(FullSet::All),
                    "speaker" => Ok(FullSet::Speaker),
                    _ => Err(E::invalid_value(de::Unexpected::Str(v), &self)),
                }
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<FullSet, A::Error> {
                let mut v = Vec::new();
                while let Some(x) = seq.next_element::<Ssrc>()? {
                    // Stop early: the list is bounded anyway, don't build a huge one.
                    if v.len() == MAX_SUBSCRIPTION_SSRCS {
                        return Err(de::Error::custom(format_args!(
                            "full: at most {MAX_SUBSCRIPTION_SSRCS} ssrcs allowed"
                        )));
                    }
                    v.push(x);
                }
                Ok(FullSet::Ssrcs(v))
            }
        }
        d.deserialize_any(V)
    }
}

/// What one session receives.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionSpec {
    /// The receiving session.
    pub session_id: SessionId,
    /// The full-resolution layers it receives; all audio and every other video's
    /// thumbnail (or single layer) it receives regardless.
    pub full: FullSet,
}

impl SubscriptionSpec {
    /// Rejects more than [`MAX_SUBSCRIPTION_SSRCS`] SSRCs and duplicates.
    pub fn validate(&self) -> Result<(), ControlError> {
        let id = &self.session_id;
        if let FullSet::Ssrcs(v) = &self.full {
            if v.len() > MAX_SUBSCRIPTION_SSRCS {
                return Err(invalid(format!(
                    "subscription of {id}: {} ssrcs, at most {MAX_SUBSCRIPTION_SSRCS} allowed",
                    v.len()
                )));
            }
            let mut seen = HashSet::with_capacity(v.len());
            if let Some(dup) = v.iter().find(|s| !seen.insert(**s)) {
                return Err(invalid(format!(
                    "subscription of {id}: duplicate ssrc {dup} in full"
                )));
            }
        }
        Ok(())
    }
}
