//! The engine's own vocabulary: the rules it is given and the events it reports.
//!
//! They say only what the engine acts on. The control side translates the control
//! protocol into them (`control::rules`), so the engine depends on nothing of the
//! control codec and the codec on nothing of the engine.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::dtls::Fingerprint;
use crate::id::{ExtId, Ssrc};

macro_rules! name {
    ($(#[$doc:meta])* $t:ident) => {
        $(#[$doc])*
        // Shared, not boxed: names ride in cross-shard messages (a session's home and
        // connection broadcasts), and cloning one must not allocate.
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $t(Arc<str>);

        impl $t {
            /// The name as signaling gave it (checked by the control codec).
            pub fn new(name: &str) -> Self {
                $t(name.into())
            }

            /// The name.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($t), &*self.0)
            }
        }
    };
}

name!(
    /// A session (one participant's device in one conference), by signaling's id.
    SessionName
);
name!(
    /// A conference, by signaling's id.
    ConfName
);

/// How a stream is forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Layer {
    /// A simulcast thumbnail: every other participant receives it.
    Thumbnail,
    /// A full-resolution simulcast layer: only subscribers receive it.
    Full,
    /// Not simulcast (audio, single-layer video): every other participant receives it.
    Single,
}

/// What a stream carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MediaKind {
    /// Audio: not retransmitted (Opus conceals a loss; a resend would come too late).
    Audio,
    /// Video: its recent packets are kept to answer NACKs.
    Video,
}

/// One stream a session sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StreamRule {
    /// Its SSRC, unique in the conference.
    pub ssrc: Ssrc,
    /// What it carries.
    pub kind: MediaKind,
    /// How it is forwarded.
    pub layer: Layer,
}

/// Which full-resolution layers a session receives.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum FullSet {
    /// Every one.
    All,
    /// Those of the conference's active speaker, as the speaker changes (none before
    /// the first; the speaker itself gets no full layer from this).
    Speaker,
    /// These SSRCs (empty: thumbnails only).
    Ssrcs(Vec<Ssrc>),
}

impl FullSet {
    /// Whether a session with this set receives `stream`: every thumbnail and
    /// single-layer stream, full-resolution ones only when subscribed. `speaking`: the
    /// stream's sender is its conference's active speaker.
    pub fn wants(&self, stream: &StreamRule, speaking: bool) -> bool {
        match stream.layer {
            Layer::Full => match self {
                FullSet::All => true,
                FullSet::Speaker => speaking,
                FullSet::Ssrcs(s) => s.contains(&stream.ssrc),
            },
            Layer::Thumbnail | Layer::Single => true,
        }
    }
}

/// Everything the engine needs to run one session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRule {
    /// The session.
    pub id: SessionName,
    /// Its conference.
    pub conf: ConfName,
    /// The relay's ICE ufrag for it (checks carry `ice_ufrag:remote_ufrag`).
    pub ice_ufrag: String,
    /// The relay's ICE password (keys MESSAGE-INTEGRITY).
    pub ice_pwd: String,
    /// The participant's ICE ufrag.
    pub remote_ufrag: String,
    /// The participant's ICE password, if signaling gave it: an address the
    /// participant nominates gets the relay's own check, keyed with it, and media goes
    /// there only once it is answered from there (`engine/stun.rs`, `PathCheck`).
    /// Without it, media goes where the participant nominates.
    pub remote_pwd: Option<String>,
    /// The participant's certificate must hash to this.
    pub fingerprint: Fingerprint,
    /// What it sends; packets on other SSRCs are dropped.
    pub streams: Vec<StreamRule>,
    /// The header-extension ids it negotiated, for the extensions the engine reads.
    pub extensions: ExtensionIds,
    /// It negotiated TMMBR (RFC 5104): the rate requests for its full layer go as TMMBR,
    /// not REMB.
    pub tmmbr: bool,
}

/// The RTP header-extension ids (RFC 8285) one sender negotiated with `a=extmap`, for
/// the extensions the engine reads. Ids are per sender, so each session carries its
/// own; `None`: not negotiated, the engine does without. A feature that reads another
/// extension adds its id here (and its translation in `control::rules`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct ExtensionIds {
    /// Client-to-mixer audio level (RFC 6464), on audio streams: active speaker.
    pub audio_level: Option<ExtId>,
    /// Frame marking (RFC 9626), on video streams: where keyframes start.
    pub frame_marking: Option<ExtId>,
    /// abs-send-time: uplink estimation.
    pub abs_send_time: Option<ExtId>,
    /// Transport-wide sequence numbers: uplink estimation.
    pub transport_cc: Option<ExtId>,
}

impl SessionRule {
    /// Whether `other` is the same session as far as its connection goes (conference,
    /// credentials, fingerprint): an upsert from one to the other updates the streams
    /// in place; otherwise it replaces the session.
    pub fn same_identity(&self, other: &SessionRule) -> bool {
        self.conf == other.conf
            && self.ice_ufrag == other.ice_ufrag
            && self.ice_pwd == other.ice_pwd
            && self.remote_ufrag == other.remote_ufrag
            && self.remote_pwd == other.remote_pwd
            && self.fingerprint == other.fingerprint
    }

    /// A digest of what [`same_identity`](Self::same_identity) compares: which
    /// incarnation of the session this is. Session events carry it, so that the control
    /// side can tell a report about an incarnation an upsert has since replaced.
    pub fn identity(&self) -> u64 {
        use std::hash::{DefaultHasher, Hash, Hasher};
        let mut h = DefaultHasher::new();
        (&self.conf, &self.ice_ufrag, &self.ice_pwd).hash(&mut h);
        (&self.remote_ufrag, &self.remote_pwd, &self.fingerprint).hash(&mut h);
        h.finish()
    }
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EndReason {
    /// No valid ICE check in time.
    IceTimeout,
    /// Connected, then silent for the consent timeout.
    ConsentExpired,
    /// The DTLS handshake failed.
    DtlsFailed,
    /// The client certificate did not match the fingerprint.
    FingerprintMismatch,
    /// DTLS completed without an SRTP profile.
    NoSrtpProfile,
    /// Signaling removed it.
    Removed,
    /// Signaling changed its credentials, fingerprint or conference.
    Replaced,
    /// The participant closed its DTLS association (close_notify).
    Closed,
    /// Anything else.
    Other,
}

/// What happened to a session, for the control side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEvent {
    /// ICE nominated `addr` and the DTLS handshake completed: media flows.
    Connected {
        /// The session.
        session: SessionName,
        /// Its incarnation ([`SessionRule::identity`]).
        identity: u64,
        /// Its nominated address.
        addr: SocketAddr,
    },
    /// It never connected (it stays configured: the participant may retry).
    Failed {
        /// The session.
        session: SessionName,
        /// Its incarnation ([`SessionRule::identity`]).
        identity: u64,
        /// Why.
        reason: EndReason,
        /// For logs.
        detail: String,
    },
    /// It was connected and is closed.
    Closed {
        /// The session.
        session: SessionName,
        /// Its incarnation ([`SessionRule::identity`]).
        identity: u64,
        /// Why.
        reason: EndReason,
    },
    /// `session` became its conference's dominant speaker (reported by the
    /// conference's speaker shard only, once per change).
    ActiveSpeaker {
        /// The conference.
        conf: ConfName,
        /// Its new active speaker.
        session: SessionName,
    },
}
