//! The participant's side of docs/protocol.md's "SDP": the [`Offer`] it sends in its
//! `m.call.invite` and the [`Answer`] reader for the SFU's `m.call.answer`.
//!
//! The offer is exactly what a participant built on this library sends: BUNDLE, Opus
//! (PT 111) and VP8 (PT 96), audio level, frame marking, abs-send-time and the
//! transport-wide sequence number, and the audio + simulcast thumbnail/full SSRCs. The
//! answer reader takes only what connecting needs (ICE credentials, fingerprint,
//! candidates) and refuses, with an error, an answer without them: SDP comes from the
//! network.

use std::net::{IpAddr, SocketAddr};

use blindfold_relay::control::ExtmapIds;
use blindfold_relay::dtls::Fingerprint;
use blindfold_relay::id::ExtId;

use crate::{IceCredentials, OwnSsrcs};

/// The header extension ids our offer declares (the relay takes them from the offer).
pub const OFFER_EXTMAP: ExtmapIds = ExtmapIds {
    audio_level: Some(ExtId(1)),
    frame_marking: Some(ExtId(2)),
    abs_send_time: Some(ExtId(3)),
    transport_cc: Some(ExtId(4)),
};

/// The transport-wide sequence number extension
/// (draft-holmer-rmcat-transport-wide-cc-extensions-01).
const TRANSPORT_CC_URI: &str =
    "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01";

/// What goes into a participant's SDP offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    /// SDP session id (`o=` line); any number, distinct per call is polite.
    pub session_id: u64,
    /// Our streams.
    pub ssrcs: OwnSsrcs,
    /// Our ICE credentials.
    pub ice: IceCredentials,
    /// Our DTLS certificate's fingerprint.
    pub fingerprint: Fingerprint,
    /// The `cname` of our streams.
    pub cname: String,
}

impl Offer {
    /// The offer's SDP text, CRLF line ends.
    pub fn to_sdp(&self) -> String {
        let s = &self.ssrcs;
        let fp = self.fingerprint;
        let cname = &self.cname;
        let ext = |id: Option<ExtId>| id.map_or(0, |i| i.0);
        let lines = [
            "v=0".to_owned(),
            format!("o=- {} 1 IN IP4 127.0.0.1", self.session_id),
            "s=-".into(),
            "t=0 0".into(),
            "a=group:BUNDLE 0 1".into(),
            format!("a=ice-ufrag:{}", self.ice.ufrag),
            format!("a=ice-pwd:{}", self.ice.pwd),
            format!("a=fingerprint:sha-256 {fp}"),
            "a=setup:actpass".into(),
            "m=audio 9 UDP/TLS/RTP/SAVPF 111".into(),
            "c=IN IP4 0.0.0.0".into(),
            "a=mid:0".into(),
            "a=sendrecv".into(),
            "a=rtcp-mux".into(),
            "a=rtcp-rsize".into(),
            format!(
                "a=extmap:{} urn:ietf:params:rtp-hdrext:ssrc-audio-level",
                ext(OFFER_EXTMAP.audio_level)
            ),
            format!(
                "a=extmap:{} http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time",
                ext(OFFER_EXTMAP.abs_send_time)
            ),
            format!(
                "a=extmap:{} {TRANSPORT_CC_URI}",
                ext(OFFER_EXTMAP.transport_cc)
            ),
            "a=rtpmap:111 opus/48000/2".into(),
            format!("a=ssrc:{} cname:{cname}", s.audio.0),
            "m=video 9 UDP/TLS/RTP/SAVPF 96".into(),
            "c=IN IP4 0.0.0.0".into(),
            "a=mid:1".into(),
            "a=sendrecv".into(),
            "a=rtcp-mux".into(),
            "a=rtcp-rsize".into(),
            format!(
                "a=extmap:{} urn:ietf:params:rtp-hdrext:framemarking",
                ext(OFFER_EXTMAP.frame_marking)
            ),
            format!(
                "a=extmap:{} http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time",
                ext(OFFER_EXTMAP.abs_send_time)
            ),
            format!(
                "a=extmap:{} {TRANSPORT_CC_URI}",
                ext(OFFER_EXTMAP.transport_cc)
            ),
            "a=rtpmap:96 VP8/90000".into(),
            "a=rtcp-fb:96 nack pli".into(),
            format!("a=ssrc-group:SIM {} {}", s.thumbnail.0, s.full.0),
            format!("a=ssrc:{} cname:{cname}", s.thumbnail.0),
            format!("a=ssrc:{} cname:{cname}", s.full.0),
        ];
        lines.join("\r\n") + "\r\n"
    }
}

/// What an SDP answer gave the caller, read line by line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The relay's ICE credentials.
    pub ice: IceCredentials,
    /// `a=candidate` addresses, in order.
    pub candidates: Vec<SocketAddr>,
    /// `a=fingerprint:sha-256`.
    pub fingerprint: Fingerprint,
    /// `a=ice-lite` present at session level.
    pub ice_lite: bool,
    /// `a=setup:` value.
    pub setup: String,
    /// `a=end-of-candidates` present.
    pub end_of_candidates: bool,
}

/// Why an answer could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AnswerError {
    /// A required attribute is missing (its name).
    #[error("the answer has no a={0}")]
    Missing(&'static str),
    /// The fingerprint is not a sha-256 one.
    #[error("the answer's fingerprint is not sha-256: {0}")]
    Fingerprint(String),
    /// An `a=candidate` line that is not
    /// `<foundation> <component> udp <priority> <address> <port> typ <type>`.
    #[error("unreadable candidate: {0}")]
    Candidate(String),
}

impl Answer {
    /// Reads an answer's transport.
    pub fn parse(sdp: &str) -> Result<Answer, AnswerError> {
        let attr = |name: &str| {
            sdp.lines().find_map(|l| {
                l.trim_end()
                    .strip_prefix("a=")?
                    .strip_prefix(name)?
                    .strip_prefix(':')
                    .map(str::to_owned)
            })
        };
        let ice = IceCredentials {
            ufrag: attr("ice-ufrag").ok_or(AnswerError::Missing("ice-ufrag"))?,
            pwd: attr("ice-pwd").ok_or(AnswerError::Missing("ice-pwd"))?,
        };
        let fp = attr("fingerprint").ok_or(AnswerError::Missing("fingerprint"))?;
        let fingerprint =
            Fingerprint::from_sdp_attribute(&fp).map_err(|_| AnswerError::Fingerprint(fp))?;
        let candidates = sdp
            .lines()
            .filter_map(|l| l.trim_end().strip_prefix("a=candidate:"))
            .map(|c| {
                let f: Vec<&str> = c.split_whitespace().collect();
                let bad = || AnswerError::Candidate(c.to_owned());
                if f.len() < 8 || f[6] != "typ" {
                    return Err(bad());
                }
                let ip: IpAddr = f[4].parse().map_err(|_| bad())?;
                Ok(SocketAddr::new(ip, f[5].parse().map_err(|_| bad())?))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let session_part = sdp.split("\nm=").next().unwrap_or("");
        Ok(Answer {
            ice,
            candidates,
            fingerprint,
            ice_lite: session_part.lines().any(|l| l.trim_end() == "a=ice-lite"),
            setup: attr("setup").unwrap_or_default(),
            end_of_candidates: sdp.lines().any(|l| l.trim_end() == "a=end-of-candidates"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use blindfold_relay::dtls::DtlsCert;

    #[test]
    fn the_offer_declares_our_ssrcs_and_transport() {
        let cert = DtlsCert::generate().unwrap();
        let offer = Offer {
            session_id: 7,
            ssrcs: OwnSsrcs::numbered(0),
            ice: IceCredentials {
                ufrag: "abcd".into(),
                pwd: "0123456789012345678901".into(),
            },
            fingerprint: cert.fingerprint(),
            cname: "me".into(),
        }
        .to_sdp();
        assert!(offer.contains("a=ssrc-group:SIM 4098 4099\r\n"), "{offer}");
        assert!(offer.contains("a=ssrc:4097 cname:me\r\n"));
        assert!(offer.contains(&format!("a=fingerprint:sha-256 {}\r\n", cert.fingerprint())));
        assert!(!offer.contains("a=crypto"));
        // Both media sections declare the transport-wide sequence number.
        let tcc = format!("a=extmap:4 {TRANSPORT_CC_URI}\r\n");
        assert_eq!(offer.matches(&tcc).count(), 2, "{offer}");
    }

    #[test]
    fn the_documented_answer_reads_and_broken_ones_are_errors() {
        let doc = include_str!("../../docs/protocol.md");
        let answer = doc
            .split("```sdp\n")
            .nth(2)
            .and_then(|s| s.split("```").next())
            .expect("the answer example");
        let a = Answer::parse(answer).unwrap();
        assert_eq!(a.ice.ufrag, "Rl4yK9mQ");
        assert_eq!(a.candidates.len(), 2);
        assert_eq!(a.candidates[0], "203.0.113.7:10000".parse().unwrap());
        assert!(a.ice_lite && a.end_of_candidates);
        assert_eq!(a.setup, "passive");
        assert_eq!(
            Answer::parse("v=0\r\n"),
            Err(AnswerError::Missing("ice-ufrag"))
        );
        let bad = answer.replace("typ host", "host");
        assert!(matches!(
            Answer::parse(&bad),
            Err(AnswerError::Candidate(_))
        ));
    }
}
