//! Test fixtures: a realistic offer (Chrome-shaped, simulcast video), fixed relay
//! credentials, and helpers for one-line edits of the offer.

use blindfold_relay::control::{Fingerprint, IcePwd, IceUfrag, RelayInfo};

use super::{AnswerParams, Offer, OfferError, OfferLimits, build_answer, parse_offer};

/// A browser-style offer: Opus 111 and VP8 96 with the usual rtcp-fb, the four extmaps
/// the relay reads plus sdes:mid, a SIM group, a host candidate, LF line ends (the tests
/// convert to CRLF where it matters). It is also the example in `docs/protocol.md`.
pub(crate) const GOOD_OFFER: &str = "\
v=0
o=- 4611731400430051336 2 IN IP4 127.0.0.1
s=-
t=0 0
a=group:BUNDLE 0 1
a=msid-semantic: WMS stream0
m=audio 9 UDP/TLS/RTP/SAVPF 111
c=IN IP4 0.0.0.0
a=rtcp:9 IN IP4 0.0.0.0
a=candidate:1467250027 1 udp 2122260223 192.0.2.10 54321 typ host generation 0
a=ice-ufrag:pZ9q
a=ice-pwd:Jc2v/NdhQ8uGkR3xw+Tm5bYe
a=ice-options:trickle
a=fingerprint:sha-256 9C:95:0D:C0:08:80:17:C6:92:00:57:92:6F:1A:0F:23:37:75:EA:84:08:3E:92:92:AB:20:B6:EB:77:3A:69:85
a=setup:actpass
a=mid:0
a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level
a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time
a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01
a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid
a=sendrecv
a=msid:stream0 audio0
a=rtcp-mux
a=rtpmap:111 opus/48000/2
a=rtcp-fb:111 transport-cc
a=fmtp:111 minptime=10;useinbandfec=1
a=ssrc:1001 cname:f2Lq8dWm
a=ssrc:1001 msid:stream0 audio0
m=video 9 UDP/TLS/RTP/SAVPF 96
c=IN IP4 0.0.0.0
a=rtcp:9 IN IP4 0.0.0.0
a=ice-ufrag:pZ9q
a=ice-pwd:Jc2v/NdhQ8uGkR3xw+Tm5bYe
a=ice-options:trickle
a=fingerprint:sha-256 9C:95:0D:C0:08:80:17:C6:92:00:57:92:6F:1A:0F:23:37:75:EA:84:08:3E:92:92:AB:20:B6:EB:77:3A:69:85
a=setup:actpass
a=mid:1
a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time
a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01
a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid
a=extmap:5 urn:ietf:params:rtp-hdrext:framemarking
a=sendrecv
a=msid:stream0 video0
a=rtcp-mux
a=rtcp-rsize
a=rtpmap:96 VP8/90000
a=rtcp-fb:96 goog-remb
a=rtcp-fb:96 transport-cc
a=rtcp-fb:96 ccm fir
a=rtcp-fb:96 nack
a=rtcp-fb:96 nack pli
a=ssrc-group:SIM 2001 2002
a=ssrc:2001 cname:f2Lq8dWm
a=ssrc:2001 msid:stream0 video0
a=ssrc:2002 cname:f2Lq8dWm
a=ssrc:2002 msid:stream0 video0
";

/// The participant's fingerprint in [`GOOD_OFFER`].
pub(crate) const OFFER_FINGERPRINT: &str = "9C:95:0D:C0:08:80:17:C6:92:00:57:92:6F:1A:0F:23:37:75:EA:84:08:3E:92:92:AB:20:B6:EB:77:3A:69:85";

/// The `o=` version of the example answer in `docs/protocol.md`.
pub(crate) const DOC_SESSION_VERSION: u64 = 1;

/// The relay credentials of the example answer in `docs/protocol.md`.
pub(crate) fn relay_credentials() -> (IceUfrag, IcePwd) {
    (
        IceUfrag::new("Rl4yK9mQ").unwrap(),
        IcePwd::new("v7Xq2+Lw9/aZ0cTn4Ks8eHbR").unwrap(),
    )
}

/// The relay fingerprint of the example answer in `docs/protocol.md`.
pub(crate) fn relay_fingerprint() -> Fingerprint {
    "21:A0:E3:07:01:11:94:6D:04:E3:23:40:AA:7D:46:DC:48:B5:85:A9:8A:67:5E:4D:9C:0D:B1:40:BE:27:CC:6F"
        .parse()
        .unwrap()
}

/// The answer to `offer` with the doc's relay credentials and fingerprint, the relay
/// candidates `candidates` (socket address syntax) and `session_version`.
pub(crate) fn answer_with(offer: &Offer, candidates: &[&str], session_version: u64) -> String {
    let (ufrag, pwd) = relay_credentials();
    let relay = RelayInfo {
        dtls_fingerprint: relay_fingerprint(),
        candidates: candidates.iter().map(|c| c.parse().unwrap()).collect(),
    };
    build_answer(
        offer,
        &AnswerParams {
            ice_ufrag: &ufrag,
            ice_pwd: &pwd,
            relay: &relay,
            session_version,
        },
    )
}

/// `sdp` with CRLF line ends, as clients send it.
pub(crate) fn crlf(sdp: &str) -> String {
    sdp.replace("\r\n", "\n").replace('\n', "\r\n")
}

/// Parses `sdp` (made CRLF) with the default limits, panicking on refusal.
pub(crate) fn offer_of(sdp: &str) -> Offer {
    match parse_offer(&crlf(sdp), &OfferLimits::default()) {
        Ok(o) => o,
        Err(e) => panic!("offer refused: {e}"),
    }
}

/// The refusal of `sdp` (made CRLF), panicking if it is accepted.
pub(crate) fn refusal(sdp: &str) -> OfferError {
    match parse_offer(&crlf(sdp), &OfferLimits::default()) {
        Ok(_) => panic!("offer accepted:\n{sdp}"),
        Err(e) => e,
    }
}

/// [`GOOD_OFFER`] with `from` replaced by `to`; `from` must occur exactly `times` times,
/// so an edit never silently misses.
pub(crate) fn edited(from: &str, to: &str, times: usize) -> String {
    assert_eq!(
        GOOD_OFFER.matches(from).count(),
        times,
        "{from:?} in the offer"
    );
    GOOD_OFFER.replace(from, to)
}

/// [`GOOD_OFFER`] with its one occurrence of `from` replaced by `to`.
pub(crate) fn edit(from: &str, to: &str) -> String {
    edited(from, to, 1)
}
