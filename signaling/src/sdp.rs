//! The SDP half of the SFU's call handling: a participant's offer in, the relay's answer
//! out.
//!
//! [`parse_offer`] checks an offer against the contract in `docs/protocol.md` ("SDP") and
//! extracts what the relay needs (ICE credentials, DTLS fingerprint, the streams the
//! participant sends, the header-extension ids the relay reads) plus what the answer
//! echoes (mids, directions, codecs, extmaps). [`build_answer`] writes the relay's answer:
//! ICE-lite, DTLS passive, one BUNDLE transport, host candidates only.
//!
//! Offers are untrusted. They are size-capped before anything else, restricted to
//! printable ASCII, parsed by Mozilla's `webrtc-sdp`, then checked rule by rule; every
//! refusal is an [`OfferError`] with a specific message, all mapping to the refusal code
//! [`REFUSAL_CODE`].
//!
//! ```
//! use blindfold_relay::control::{Fingerprint, RelayInfo};
//! use blindfold_signaling::sdp::{self, AnswerParams, OfferLimits};
//!
//! # let offer_sdp = include_str!("../../docs/protocol.md")
//! #     .split("```sdp\n").nth(1).unwrap().split("```").next().unwrap().replace('\n', "\r\n");
//! let offer = sdp::parse_offer(&offer_sdp, &OfferLimits::default())?;
//! let mut counter = 0u8;
//! let (ufrag, pwd) = sdp::fresh_credentials(&mut |buf: &mut [u8]| {
//!     // Use OS randomness (getrandom) here; a counter keeps the example deterministic.
//!     for b in buf { counter = counter.wrapping_add(1); *b = counter; }
//! });
//! let relay = RelayInfo {
//!     dtls_fingerprint: Fingerprint([0xab; 32]),
//!     candidates: vec!["203.0.113.7:10000".parse().unwrap()],
//! };
//! let answer = sdp::build_answer(&offer, &AnswerParams {
//!     ice_ufrag: &ufrag, ice_pwd: &pwd, relay: &relay, session_version: 1,
//! });
//! assert!(answer.contains("a=ice-lite\r\n"));
//! # Ok::<(), sdp::OfferError>(())
//! ```

use blindfold_relay::control::{ExtmapIds, Fingerprint, IcePwd, IceUfrag, StreamKind, StreamSpec};
use blindfold_relay::id::{ExtId, Ssrc};

mod answer;
mod offer;

pub use answer::{AnswerParams, build_answer, fresh_credentials};
pub use offer::parse_offer;

/// The refusal code every [`OfferError`] maps to when the call is refused.
pub const REFUSAL_CODE: &str = "bad_offer";

/// Default [`OfferLimits::max_bytes`]: a browser's two-section offer is 3–6 KiB.
pub const DEFAULT_MAX_OFFER_BYTES: usize = 16 * 1024;

/// Bounds applied to an offer before it is parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct OfferLimits {
    /// Longest offer accepted, bytes; a longer one is refused unparsed.
    pub max_bytes: usize,
}

impl Default for OfferLimits {
    fn default() -> Self {
        OfferLimits {
            max_bytes: DEFAULT_MAX_OFFER_BYTES,
        }
    }
}

/// A checked offer: what the relay needs and what the answer echoes.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Offer {
    /// The participant's ICE ufrag (the remote half of STUN USERNAME).
    pub ice_ufrag: IceUfrag,
    /// The participant's ICE password.
    pub ice_pwd: IcePwd,
    /// The participant's DTLS certificate fingerprint (SHA-256).
    pub fingerprint: Fingerprint,
    /// The streams the participant sends, in section order (thumbnail before full).
    pub streams: Vec<StreamSpec>,
    /// The header-extension ids the relay reads.
    pub extmap: ExtmapIds,
    /// The media sections, in offer order: one audio, one video.
    pub sections: Vec<Section>,
    /// The offer carried `a=extmap-allow-mixed` (ids up to 255, two-byte headers).
    pub extmap_allow_mixed: bool,
}

impl Offer {
    /// Whether the participant offered TMMBR for its video (`a=rtcp-fb:<pt> ccm tmmbr`,
    /// or `*` for every format; RFC 5104): the relay then asks it for rates by TMMBR.
    pub fn tmmbr(&self) -> bool {
        let is_tmmbr = |fb: &String| {
            let mut words = fb.split_whitespace().skip(1);
            words.next() == Some("ccm") && words.next() == Some("tmmbr")
        };
        self.sections
            .iter()
            .filter(|s| s.kind == StreamKind::Video)
            .any(|s| {
                s.rtcp_fb_all.iter().any(is_tmmbr)
                    || s.codecs.iter().any(|c| c.rtcp_fb.iter().any(is_tmmbr))
            })
    }
}

/// One offered media section, as the answer needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Section {
    /// Audio or video.
    pub kind: StreamKind,
    /// `a=mid`: 1..=32 RFC 4566 token characters.
    pub mid: String,
    /// The offer's direction (the answer mirrors it).
    pub direction: Direction,
    /// The formats of the m-line, in order, with their attributes.
    pub codecs: Vec<Codec>,
    /// `a=rtcp-fb:* …` values (after the colon), applying to every format.
    pub rtcp_fb_all: Vec<String>,
    /// `a=extmap` lines of this section (and session-level ones, copied in).
    pub extmaps: Vec<Extmap>,
    /// `a=rtcp-rsize` (RFC 5506): the participant takes reduced-size RTCP. The relay
    /// sends it either way; the answer echoes the attribute where it was offered.
    pub rtcp_rsize: bool,
}

/// One payload type of a section with its attribute values exactly as offered (the text
/// after `a=rtpmap:` etc., payload type included), to be echoed in the answer.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Codec {
    /// RTP payload type, 0..=127.
    pub pt: u8,
    /// `a=rtpmap` value, e.g. `111 opus/48000/2`; absent for a static payload type.
    pub rtpmap: Option<String>,
    /// `a=fmtp` values, e.g. `111 minptime=10;useinbandfec=1`.
    pub fmtp: Vec<String>,
    /// `a=rtcp-fb` values, e.g. `96 nack pli`.
    pub rtcp_fb: Vec<String>,
}

/// One `a=extmap:<id>[/<direction>] <uri> [<attributes>]` (RFC 8285).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Extmap {
    /// The id: 1..=14, or 1..=255 with `a=extmap-allow-mixed`.
    pub id: ExtId,
    /// The optional direction after the id.
    pub direction: Option<Direction>,
    /// The extension's URI.
    pub uri: String,
    /// Extension attributes after the URI, if any.
    pub attributes: Option<String>,
}

/// A media direction the relay accepts (an `inactive` section is refused).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// `sendrecv`.
    SendRecv,
    /// `sendonly`.
    SendOnly,
    /// `recvonly`.
    RecvOnly,
}

impl Direction {
    /// The attribute name.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
        }
    }

    /// The answerer's direction for this offered one (RFC 3264 §6.1).
    pub fn mirrored(self) -> Direction {
        match self {
            Direction::SendRecv => Direction::SendRecv,
            Direction::SendOnly => Direction::RecvOnly,
            Direction::RecvOnly => Direction::SendOnly,
        }
    }
}

/// Why an offer was refused. Every variant maps to [`REFUSAL_CODE`]; the message names
/// the rule broken and never quotes the ICE password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OfferError {
    /// Longer than [`OfferLimits::max_bytes`].
    #[error("offer is {len} bytes, more than the {max} allowed")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Empty or only whitespace.
    #[error("offer is empty")]
    Empty,
    /// A byte outside printable ASCII, space, tab and line ends.
    #[error(
        "offer has byte 0x{byte:02x} at offset {offset}; only printable ASCII, space, tab, CRLF and LF are allowed"
    )]
    Byte {
        /// The byte.
        byte: u8,
        /// Its offset in the offer.
        offset: usize,
    },
    /// `webrtc-sdp` refused the text.
    #[error("offer is not valid SDP: {0}")]
    Syntax(String),
    /// An m-line `webrtc-sdp` could not read (unknown protocol).
    #[error("offer line {line}: m-line with an unsupported protocol; only UDP/TLS/RTP/SAVPF")]
    MediaLine {
        /// 1-based line number.
        line: usize,
    },
    /// Not exactly one audio and one video section.
    #[error(
        "offer has {audio} m=audio, {video} m=video and {other} other m-lines; exactly one m=audio and one m=video are required"
    )]
    Sections {
        /// Audio sections.
        audio: usize,
        /// Video sections.
        video: usize,
        /// Any other sections (application, unknown).
        other: usize,
    },
    /// A section's protocol is not `UDP/TLS/RTP/SAVPF`.
    #[error("{} m-line: protocol {proto} is not allowed; only UDP/TLS/RTP/SAVPF", m_line(*.kind))]
    Protocol {
        /// The section.
        kind: StreamKind,
        /// The protocol offered.
        proto: String,
    },
    /// Port 0 (a rejected section) without `a=bundle-only`.
    #[error("{} m-line: port 0 without a=bundle-only marks the section rejected", m_line(*.kind))]
    PortZero {
        /// The section.
        kind: StreamKind,
    },
    /// An m-line without formats, or with RTX alone (which is not answered).
    #[error("{} m-line: no payload types other than RTX", m_line(*.kind))]
    NoFormats {
        /// The section.
        kind: StreamKind,
    },
    /// A format above 127 (RTP payload types are 7 bits).
    #[error("{} m-line: payload type {pt} is outside 0..=127", m_line(*.kind))]
    PayloadType {
        /// The section.
        kind: StreamKind,
        /// The format.
        pt: u32,
    },
    /// A payload type listed twice, or given two `a=rtpmap`s.
    #[error("{} m-line: payload type {pt} is {what} twice", m_line(*.kind))]
    RepeatedPayloadType {
        /// The section.
        kind: StreamKind,
        /// The payload type.
        pt: u8,
        /// "listed" or "mapped".
        what: &'static str,
    },
    /// A required section attribute is missing.
    #[error("{} m-line: no a={attr}", m_line(*.kind))]
    MissingSectionAttribute {
        /// The section.
        kind: StreamKind,
        /// The attribute.
        attr: &'static str,
    },
    /// A section attribute that may appear once appears again.
    #[error("{} m-line: more than one a={attr}", m_line(*.kind))]
    RepeatedSectionAttribute {
        /// The section.
        kind: StreamKind,
        /// The attribute (a direction counts as `direction`).
        attr: &'static str,
    },
    /// `a=mid` is not 1..=32 token characters.
    #[error("{} m-line: a=mid must be 1..=32 RFC 4566 token characters", m_line(*.kind))]
    BadMid {
        /// The section.
        kind: StreamKind,
    },
    /// A session-level attribute that may appear once appears again.
    #[error("offer has more than one session-level a={0}")]
    Repeated(&'static str),
    /// Both sections have the same mid.
    #[error("both m-lines have a=mid:{0}; mids must differ")]
    SameMid(String),
    /// An `a=inactive` section (at media level, or inherited from the session).
    #[error("{} m-line: a=inactive; the section must send, receive or both", m_line(*.kind))]
    Inactive {
        /// The section.
        kind: StreamKind,
    },
    /// A session-level `a=inactive`.
    #[error("offer has a session-level a=inactive; the call must send, receive or both")]
    SessionInactive,
    /// No `a=group:BUNDLE`, or more than one.
    #[error("offer needs exactly one a=group:BUNDLE, has {0}")]
    BundleCount(usize),
    /// The BUNDLE group does not list exactly the two mids.
    #[error("a=group:BUNDLE must list exactly the two mids, audio's and video's (one transport)")]
    BundleMids,
    /// The offerer is ICE-lite too; two lite agents never connect.
    #[error("offer has a=ice-lite; the relay is ICE-lite, so the participant must run full ICE")]
    IceLite,
    /// A required session-or-media attribute appears nowhere.
    #[error("offer has no a={0}")]
    Missing(&'static str),
    /// A session-or-media attribute has different values in different places.
    #[error("offer has different a={0} values; one BUNDLE transport has one")]
    Conflicting(&'static str),
    /// `a=ice-ufrag` is not an RFC 8839 ufrag.
    #[error("offer a=ice-ufrag: {0}")]
    BadUfrag(String),
    /// `a=ice-pwd` is not an RFC 8839 password (the message never quotes it).
    #[error("offer a=ice-pwd: {0}")]
    BadPwd(String),
    /// A fingerprint with a hash function other than SHA-256.
    #[error("offer has a=fingerprint with hash function {0}; only sha-256 is accepted")]
    FingerprintHash(String),
    /// `a=setup` other than `actpass` or `active`.
    #[error(
        "offer has a=setup:{0}; the relay is always the DTLS server (passive), so the offer must say actpass or active"
    )]
    Setup(&'static str),
    /// `a=crypto`: SDES would hand the media keys to the SFU.
    #[error("offer has a=crypto: SDES keying is not allowed")]
    Crypto,
    /// `a=key-mgmt`: MIKEY would hand the media keys to the SFU.
    #[error("offer has a=key-mgmt: MIKEY keying is not allowed")]
    KeyMgmt,
    /// More SSRCs than the section may declare.
    #[error("{} m-line: {count} SSRCs declared, at most {max} allowed", m_line(*.kind))]
    TooManySsrcs {
        /// The section.
        kind: StreamKind,
        /// Distinct SSRCs declared.
        count: usize,
        /// The section's limit.
        max: usize,
    },
    /// An `a=ssrc-group` other than video's one `SIM` and its `FID` pairs.
    #[error(
        "{} m-line: a=ssrc-group:{semantics} is not allowed; only video may group its two simulcast SSRCs with SIM and name their RTX SSRCs with FID (the relay never sends FEC)",
        m_line(*.kind)
    )]
    SsrcGroup {
        /// The section.
        kind: StreamKind,
        /// The group's semantics.
        semantics: String,
    },
    /// An `a=ssrc-group` with semantics `webrtc-sdp` does not know (only SIM is allowed).
    #[error("offer has a=ssrc-group:{0}; only video's a=ssrc-group:SIM is allowed")]
    UnknownSsrcGroup(String),
    /// A SIM group without exactly two distinct SSRCs.
    #[error("video m-line: a=ssrc-group:SIM needs exactly two SSRCs (thumbnail, full)")]
    SimSize,
    /// More than one SIM group.
    #[error("video m-line: more than one a=ssrc-group:SIM")]
    SimRepeated,
    /// The SIM group names an SSRC no `a=ssrc` line declares.
    #[error("video m-line: a=ssrc-group:SIM names ssrc {0}, which no a=ssrc line declares")]
    SimUndeclared(Ssrc),
    /// An `a=ssrc-group:FID` that does not pair one declared media SSRC with one other
    /// declared SSRC, or pairs an SSRC twice.
    #[error(
        "video m-line: a=ssrc-group:FID {0} must name two distinct SSRCs that a=ssrc lines declare, a media SSRC first, each in one FID group at most"
    )]
    FidGroup(String),
    /// Two video SSRCs without a SIM group saying which layer is which.
    #[error("video m-line: two SSRCs need a=ssrc-group:SIM <thumbnail> <full>")]
    SimMissing,
    /// The same SSRC in both sections.
    #[error("ssrc {0} is declared in both m-lines")]
    SsrcInBothSections(Ssrc),
    /// The SSRC the relay's own RTCP comes from.
    #[error("ssrc {0} is the relay's own")]
    RelaySsrc(Ssrc),
    /// An extmap id out of range.
    #[error("a=extmap id {id} is outside 1..={max}{}", if *.max == 14 { " (ids above 14 need a=extmap-allow-mixed)" } else { "" })]
    ExtmapIdRange {
        /// The id.
        id: u16,
        /// The largest id allowed.
        max: u16,
    },
    /// One id for two URIs (under BUNDLE an id names one extension everywhere).
    #[error("a=extmap id {0} names two different URIs; under BUNDLE an id names one extension")]
    ExtmapIdClash(u16),
    /// One URI under two ids.
    #[error("a=extmap URI {0} has two different ids; under BUNDLE an extension has one id")]
    ExtmapUriClash(String),
    /// The same id twice in one section.
    #[error("{} m-line: a=extmap id {id} appears twice", m_line(*.kind))]
    ExtmapRepeated {
        /// The section.
        kind: StreamKind,
        /// The id.
        id: u16,
    },
    /// The extracted ids failed [`ExtmapIds::validate`].
    #[error("offer extmap: {0}")]
    ExtmapIds(String),
}

impl OfferError {
    /// The refusal code sent to the participant: always [`REFUSAL_CODE`].
    pub fn refusal_code(&self) -> &'static str {
        REFUSAL_CODE
    }
}

/// "audio m-line" / "video m-line", for messages.
fn m_line(kind: StreamKind) -> &'static str {
    match kind {
        StreamKind::Audio => "audio m-line",
        StreamKind::Video => "video m-line",
    }
}

/// Fuzz and stress entry: an offer from arbitrary bytes (parsed lossily: non-UTF-8 is
/// refused by the byte rule anyway); an accepted one must give an answer that
/// `webrtc-sdp` parses back without warnings, one section per offered one. Returns
/// whether the offer was accepted. Panics on a finding.
#[cfg(any(test, feature = "fuzz"))]
pub(crate) fn fuzz_one(data: &[u8]) -> bool {
    use std::net::SocketAddr;

    use blindfold_relay::control::RelayInfo;

    let text = String::from_utf8_lossy(data);
    let Ok(offer) = parse_offer(&text, &OfferLimits::default()) else {
        return false;
    };
    let mut n = 0u8;
    let (ufrag, pwd) = fresh_credentials(&mut |buf: &mut [u8]| {
        for b in buf {
            n = n.wrapping_add(37);
            *b = n;
        }
    });
    let relay = RelayInfo {
        dtls_fingerprint: Fingerprint([0x5a; 32]),
        candidates: vec![
            SocketAddr::from(([203, 0, 113, 7], 10_000)),
            SocketAddr::from(([0x2001, 0xdb8, 0, 0, 0, 0, 0, 7], 10_000)),
        ],
    };
    let answer = build_answer(
        &offer,
        &AnswerParams {
            ice_ufrag: &ufrag,
            ice_pwd: &pwd,
            relay: &relay,
            session_version: 7,
        },
    );
    let parsed = match webrtc_sdp::parse_sdp(&answer, false) {
        Ok(p) => p,
        Err(e) => panic!("answer does not parse: {e}\n{answer}"),
    };
    assert!(parsed.warnings.is_empty(), "answer has warnings:\n{answer}");
    assert_eq!(parsed.media.len(), offer.sections.len());
    true
}

#[cfg(test)]
mod testdata;

#[cfg(test)]
mod tests {
    use blindfold_relay::control::Layer;

    use super::testdata::{answer_with, offer_of};
    use super::*;

    /// Every ```sdp block of `text`, LF turned into CRLF.
    fn sdp_blocks(text: &str) -> Vec<String> {
        text.split("```sdp\n")
            .skip(1)
            .map(|rest| {
                let body = rest.split("```").next().unwrap_or_default();
                body.replace('\n', "\r\n")
            })
            .collect()
    }

    #[test]
    fn doc_examples_parse() {
        let doc = include_str!("../../docs/protocol.md");
        let blocks = sdp_blocks(doc);
        assert_eq!(
            blocks.len(),
            2,
            "docs/protocol.md has an offer and an answer"
        );

        // The streams and extmap ids the doc's prose states for its example offer.
        let offer = offer_of(&blocks[0]);
        let stream = |ssrc, kind, layer| StreamSpec {
            ssrc: Ssrc(ssrc),
            kind,
            layer,
        };
        assert_eq!(
            offer.streams,
            [
                stream(1001, StreamKind::Audio, Layer::None),
                stream(2001, StreamKind::Video, Layer::Thumbnail),
                stream(2002, StreamKind::Video, Layer::Full),
            ]
        );
        let id = |n| Some(ExtId(n));
        assert_eq!(
            offer.extmap,
            ExtmapIds {
                audio_level: id(1),
                abs_send_time: id(2),
                transport_cc: id(3),
                frame_marking: id(5),
            }
        );

        // The documented answer is exactly what build_answer writes for the documented
        // offer, relay credentials, candidates and session version.
        let answer = answer_with(
            &offer,
            &["203.0.113.7:10000", "[2001:db8::7]:10000"],
            testdata::DOC_SESSION_VERSION,
        );
        assert_eq!(answer, blocks[1]);
    }

    #[test]
    fn doc_example_offer_is_the_test_offer() {
        let blocks = sdp_blocks(include_str!("../../docs/protocol.md"));
        assert_eq!(blocks[0], testdata::crlf(testdata::GOOD_OFFER));
    }

    /// Lines that stress the parser when spliced into an offer.
    const TRICKY_LINES: &[&str] = &[
        "a=",
        "a=:",
        "a=candidate:",
        "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:x",
        "a=fingerprint:md5 00:11",
        "a=fingerprint:sha-256 ",
        "a=ssrc-group:SIM",
        "a=ssrc-group:SIM 1 2 3 4",
        "a=ssrc-group:ZZZ 1",
        "a=ssrc:4294967295 cname:x",
        "a=ssrc:4294967296",
        "a=extmap:255 urn:x",
        "a=extmap:65535/sendrecv urn:y attr",
        "a=extmap-allow-mixed",
        "a=extmap:1/inactive urn:z",
        "a=group:BUNDLE",
        "a=group:BUNDLE 0 1 0",
        "a=mid:",
        "a=rtpmap:127 x/1",
        "a=rtpmap:128 x/1",
        "a=fmtp:96",
        "a=fmtp:96 apt=300",
        "a=rtcp-fb:* nack",
        "a=rtcp-fb:96 goog-lntf",
        "a=setup:",
        "a=ice-ufrag:\u{7f}",
        "a=ice-lite",
        "a=bundle-only",
        "a=inactive",
        "m=video 0 UDP/TLS/RTP/SAVPF 96",
        "m=audio 9 UDP/TLS/RTP/SAVPF",
        "m=application 9 UDP/DTLS/SCTP webrtc-datachannel",
        "m=video 9 FOO 96",
        "m=text 9 RTP/AVP 0",
        "c=IN IP6 ::",
        "c=IN IP4 example.invalid",
        "o=- 1 1 IN IP4 0.0.0.0",
        "v=1",
        "t=x y",
        "b=AS:99999999999",
        "i=\r",
        "x=unknown",
    ];

    /// Structured mutations of the test offer (line deletions, duplications, swaps,
    /// truncations, tricky lines) through the fuzz entry: a stable-toolchain stand-in
    /// for the cargo-fuzz target that runs on every `cargo test`.
    #[test]
    fn mutated_offers_never_panic() {
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut rand = |n: usize| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % n as u64) as usize
        };
        let base: Vec<&str> = testdata::GOOD_OFFER.lines().collect();
        let (mut accepted, mut refused) = (0, 0);
        for _ in 0..3000 {
            let mut lines: Vec<String> = base.iter().map(|l| l.to_string()).collect();
            for _ in 0..1 + rand(3) {
                let i = rand(lines.len());
                match rand(6) {
                    0 => drop(lines.remove(i)),
                    1 => lines.insert(i, lines[i].clone()),
                    2 => {
                        let j = rand(lines.len());
                        lines.swap(i, j);
                    }
                    3 => {
                        let cut = rand(lines[i].len() + 1);
                        lines[i].truncate(cut);
                    }
                    4 => lines.insert(i, TRICKY_LINES[rand(TRICKY_LINES.len())].to_owned()),
                    _ => {
                        let at = rand(lines[i].len() + 1);
                        lines[i].insert(at, char::from(b" :/=0\t"[rand(6)]));
                    }
                }
                if lines.is_empty() {
                    break;
                }
            }
            let eol = if rand(2) == 0 { "\n" } else { "\r\n" };
            let text = lines.join(eol) + eol;
            if fuzz_one(text.as_bytes()) {
                accepted += 1;
            } else {
                refused += 1;
            }
        }
        // Both paths were exercised.
        assert!(
            accepted > 100 && refused > 100,
            "{accepted} accepted, {refused} refused"
        );
    }

    #[test]
    fn every_error_maps_to_bad_offer() {
        assert_eq!(OfferError::Crypto.refusal_code(), "bad_offer");
        assert_eq!(OfferError::Empty.refusal_code(), REFUSAL_CODE);
    }

    #[test]
    fn direction_mirrors() {
        assert_eq!(Direction::SendOnly.mirrored(), Direction::RecvOnly);
        assert_eq!(Direction::RecvOnly.mirrored(), Direction::SendOnly);
        assert_eq!(Direction::SendRecv.mirrored(), Direction::SendRecv);
    }
}
