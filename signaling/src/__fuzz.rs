//! Entry points for the cargo-fuzz targets in `fuzz/`. A panic or failed assertion
//! inside is a finding. Hidden: not part of the crate's API.

use std::net::SocketAddr;

use blindfold_relay::control::{Fingerprint, RelayInfo};

use crate::sdp::{self, AnswerParams, OfferLimits};

/// An offer from arbitrary bytes (non-UTF-8 is refused by the offer's byte rule anyway,
/// so it is parsed lossily); an accepted one must give an answer that `webrtc-sdp`
/// parses back, with the offer's sections in order and the relay's credentials.
pub fn sdp_offer(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let Ok(offer) = sdp::parse_offer(&text, &OfferLimits::default()) else {
        return;
    };
    let mut n = 0u8;
    let (ufrag, pwd) = sdp::fresh_credentials(&mut |buf: &mut [u8]| {
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
    let answer = sdp::build_answer(
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
}
