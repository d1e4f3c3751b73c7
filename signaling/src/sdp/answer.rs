//! [`build_answer`] and the relay's per-session ICE credentials.

use std::fmt::{self, Write as _};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use blindfold_relay::control::{IcePwd, IceUfrag, RelayInfo, StreamKind};

use super::{Direction, Offer};

/// What the answer needs besides the offer: the relay's credentials for this session,
/// its certificate and addresses, and the SDP session version.
#[derive(Debug, Clone, Copy)]
pub struct AnswerParams<'a> {
    /// The relay's ufrag for this session.
    pub ice_ufrag: &'a IceUfrag,
    /// The relay's password for this session.
    pub ice_pwd: &'a IcePwd,
    /// The relay's fingerprint and host candidates.
    pub relay: &'a RelayInfo,
    /// `o=` session id and version; increase it on every new answer for the session.
    pub session_version: u64,
}

/// Where media goes when the relay has no candidate: RFC 8829 §5.3.1's dummy address.
const NO_CANDIDATE: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 9);

/// RFC 8445 §5.1.2.1 priority of the relay's `i`-th host candidate, component 1: type
/// preference 126, local preference descending from 65535 so the first is preferred.
fn candidate_priority(i: usize) -> u32 {
    let local = 65_535u32.saturating_sub(u32::try_from(i).unwrap_or(u32::MAX));
    (126 << 24) | (local << 8) | (256 - 1)
}

/// `IP4 a.b.c.d` or `IP6 x:y::z`, for `c=` lines.
struct AddrType(IpAddr);

impl fmt::Display for AddrType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            IpAddr::V4(ip) => write!(f, "IP4 {ip}"),
            IpAddr::V6(ip) => write!(f, "IP6 {ip}"),
        }
    }
}

/// Writes the relay's answer to `offer` (see `docs/protocol.md`, "SDP"), CRLF line ends.
///
/// ICE-lite, DTLS passive, one BUNDLE transport on the first relay candidate; each
/// offered section answered in order with its mid, payload types, codec attributes and
/// extmaps echoed as offered and its direction mirrored. The relay's candidates go in
/// the first section, with `a=end-of-candidates`.
pub fn build_answer(offer: &Offer, params: &AnswerParams<'_>) -> String {
    let mut out = String::with_capacity(2048);
    // Writing to a String cannot fail.
    let mut line = |args: fmt::Arguments<'_>| {
        let _ = out.write_fmt(args);
        out.push_str("\r\n");
    };
    let v = params.session_version;
    let main = params
        .relay
        .candidates
        .first()
        .copied()
        .unwrap_or(NO_CANDIDATE);
    line(format_args!("v=0"));
    line(format_args!("o=- {v} {v} IN IP4 0.0.0.0"));
    line(format_args!("s=-"));
    line(format_args!("t=0 0"));
    let mids: Vec<&str> = offer.sections.iter().map(|s| s.mid.as_str()).collect();
    line(format_args!("a=group:BUNDLE {}", mids.join(" ")));
    line(format_args!("a=ice-lite"));
    if offer.extmap_allow_mixed {
        line(format_args!("a=extmap-allow-mixed"));
    }
    for (i, s) in offer.sections.iter().enumerate() {
        let kind = match s.kind {
            StreamKind::Audio => "audio",
            StreamKind::Video => "video",
        };
        let pts: Vec<String> = s.codecs.iter().map(|c| c.pt.to_string()).collect();
        line(format_args!(
            "m={kind} {} UDP/TLS/RTP/SAVPF {}",
            main.port(),
            pts.join(" ")
        ));
        line(format_args!("c=IN {}", AddrType(main.ip())));
        line(format_args!("a=mid:{}", s.mid));
        line(format_args!("a=ice-ufrag:{}", params.ice_ufrag.as_str()));
        line(format_args!("a=ice-pwd:{}", params.ice_pwd.as_str()));
        line(format_args!(
            "a=fingerprint:sha-256 {}",
            params.relay.dtls_fingerprint
        ));
        line(format_args!("a=setup:passive"));
        line(format_args!("a=rtcp-mux"));
        if s.rtcp_rsize {
            line(format_args!("a=rtcp-rsize"));
        }
        line(format_args!("a={}", s.direction.mirrored().as_str()));
        for e in &s.extmaps {
            // RFC 8285 §6: the answer's direction for an extension mirrors the offer's.
            let dir = e.direction.map(Direction::mirrored);
            line(format_args!(
                "a=extmap:{}{}{} {}{}{}",
                e.id,
                if dir.is_some() { "/" } else { "" },
                dir.map_or("", Direction::as_str),
                e.uri,
                if e.attributes.is_some() { " " } else { "" },
                e.attributes.as_deref().unwrap_or_default(),
            ));
        }
        for c in &s.codecs {
            if let Some(r) = &c.rtpmap {
                line(format_args!("a=rtpmap:{r}"));
            }
            for f in &c.fmtp {
                line(format_args!("a=fmtp:{f}"));
            }
            for fb in &c.rtcp_fb {
                line(format_args!("a=rtcp-fb:{fb}"));
            }
        }
        for fb in &s.rtcp_fb_all {
            line(format_args!("a=rtcp-fb:{fb}"));
        }
        if i == 0 {
            // Under BUNDLE the transport's candidates go in the first section only.
            for (n, c) in params.relay.candidates.iter().enumerate() {
                line(format_args!(
                    "a=candidate:{} 1 udp {} {} {} typ host",
                    n + 1,
                    candidate_priority(n),
                    c.ip(),
                    c.port()
                ));
            }
            line(format_args!("a=end-of-candidates"));
        }
    }
    out
}

/// RFC 8839 §5.4 ice-chars, 64 of them, so a random byte's low 6 bits pick one uniformly.
const ICE_CHARS: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Fresh relay credentials for one session: an 8-character ufrag (48 random bits) and a
/// 24-character password (144 bits, above RFC 8839's 128-bit minimum). `rng` fills a
/// buffer with OS randomness; it is called once per credential.
pub fn fresh_credentials(rng: &mut impl FnMut(&mut [u8])) -> (IceUfrag, IcePwd) {
    let mut ice_chars = |n: usize| -> String {
        let mut buf = vec![0u8; n];
        rng(&mut buf);
        buf.iter()
            .map(|b| char::from(ICE_CHARS[usize::from(b & 63)]))
            .collect()
    };
    let ufrag = IceUfrag::new(ice_chars(8)).expect("8 ice-chars are a valid ufrag");
    let pwd = IcePwd::new(ice_chars(24)).expect("24 ice-chars are a valid password");
    (ufrag, pwd)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use webrtc_sdp::SdpSession;
    use webrtc_sdp::address::{Address, ExplicitlyTypedAddress};
    use webrtc_sdp::attribute_type::SdpAttribute;

    use super::super::testdata::{
        GOOD_OFFER, answer_with, edit, offer_of, relay_credentials, relay_fingerprint,
    };
    use super::*;

    const V4: &str = "203.0.113.7:10000";
    const V6: &str = "[2001:db8::7]:10000";

    fn answer_for(sdp: &str, candidates: &[&str]) -> String {
        answer_with(&offer_of(sdp), candidates, 42)
    }

    fn parsed(answer: &str) -> SdpSession {
        match webrtc_sdp::parse_sdp(answer, false) {
            Ok(s) => s,
            Err(e) => panic!("answer does not parse: {e}\n{answer}"),
        }
    }

    fn has_line(answer: &str, line: &str) -> bool {
        answer.split("\r\n").any(|l| l == line)
    }

    #[test]
    fn answer_parses_with_webrtc_sdp_without_warnings() {
        let s = parsed(&answer_for(GOOD_OFFER, &[V4, V6]));
        assert!(s.warnings.is_empty(), "{:?}", s.warnings);
        assert_eq!(s.media.len(), 2);
    }

    #[test]
    fn answer_parses_with_webrtc_rs_sdp() {
        let answer = answer_for(GOOD_OFFER, &[V4, V6]);
        let s = sdp::SessionDescription::unmarshal(&mut std::io::Cursor::new(answer.as_bytes()))
            .unwrap();
        assert_eq!(s.media_descriptions.len(), 2);
        let audio = &s.media_descriptions[0];
        assert_eq!(audio.media_name.media, "audio");
        assert_eq!(audio.media_name.port.value, 10_000);
        assert_eq!(audio.attribute("setup"), Some(Some("passive")));
        assert_eq!(s.attribute("group").map(String::as_str), Some("BUNDLE 0 1"));
    }

    #[test]
    fn answer_round_trips_candidates() {
        let s = parsed(&answer_for(GOOD_OFFER, &[V4, V6]));
        let cands: Vec<_> = s.media[0]
            .get_attributes()
            .iter()
            .filter_map(|a| match a {
                SdpAttribute::Candidate(c) => Some(c),
                _ => None,
            })
            .collect();
        let addrs: Vec<SocketAddr> = cands
            .iter()
            .map(|c| match c.address {
                Address::Ip(ip) => SocketAddr::new(ip, u16::try_from(c.port).unwrap()),
                Address::Fqdn(_) => panic!("fqdn candidate"),
            })
            .collect();
        assert_eq!(
            addrs,
            [V4.parse().unwrap(), V6.parse::<SocketAddr>().unwrap()]
        );
        assert_eq!(cands[0].foundation, "1");
        assert_eq!(cands[1].foundation, "2");
        assert!(cands[0].priority > cands[1].priority);
        assert!(cands.iter().all(|c| c.component == 1));
        // Under BUNDLE the candidates go in the first section only.
        assert!(
            !s.media[1]
                .get_attributes()
                .iter()
                .any(|a| matches!(a, SdpAttribute::Candidate(_)))
        );
    }

    #[test]
    fn answer_round_trips_credentials_and_fingerprint() {
        let s = parsed(&answer_for(GOOD_OFFER, &[V4]));
        let (ufrag, pwd) = relay_credentials();
        for m in &s.media {
            let mut seen = 0;
            for a in m.get_attributes() {
                match a {
                    SdpAttribute::IceUfrag(u) => assert_eq!(u, ufrag.as_str()),
                    SdpAttribute::IcePwd(p) => assert_eq!(p, pwd.as_str()),
                    SdpAttribute::Fingerprint(f) => {
                        assert_eq!(f.fingerprint, relay_fingerprint().0)
                    }
                    _ => continue,
                }
                seen += 1;
            }
            assert_eq!(seen, 3);
        }
    }

    #[test]
    fn answer_uses_crlf_line_ends_only() {
        let answer = answer_for(GOOD_OFFER, &[V4]);
        assert!(answer.ends_with("\r\n"));
        assert_eq!(answer.matches('\n').count(), answer.matches("\r\n").count());
        assert_eq!(answer.matches('\r').count(), answer.matches("\r\n").count());
    }

    #[test]
    fn answer_is_ice_lite_passive_and_bundled() {
        let answer = answer_for(GOOD_OFFER, &[V4]);
        assert!(has_line(&answer, "a=ice-lite"));
        assert!(has_line(&answer, "a=group:BUNDLE 0 1"));
        assert_eq!(answer.matches("a=setup:passive\r\n").count(), 2);
        assert_eq!(answer.matches("a=rtcp-mux\r\n").count(), 2);
        assert!(answer.starts_with("v=0\r\no=- 42 42 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"));
    }

    /// RFC 5506: the answer says reduced-size RTCP in the sections whose offer did.
    #[test]
    fn rtcp_rsize_is_echoed_where_offered() {
        let answer = answer_for(GOOD_OFFER, &[V4]);
        let video = answer.split("m=video").nth(1).unwrap();
        assert_eq!(answer.matches("a=rtcp-rsize\r\n").count(), 1);
        assert!(video.contains("a=rtcp-mux\r\na=rtcp-rsize\r\n"));
        let without = GOOD_OFFER.replace("a=rtcp-rsize\n", "");
        assert!(!answer_for(&without, &[V4]).contains("rtcp-rsize"));
    }

    #[test]
    fn answer_follows_offer_order() {
        let (head, rest) = GOOD_OFFER.split_once("m=audio").unwrap();
        let (audio_sec, video_sec) = rest.split_once("m=video").unwrap();
        let swapped = format!("{head}m=video{video_sec}m=audio{audio_sec}")
            .replace("BUNDLE 0 1", "BUNDLE 1 0");
        let answer = answer_for(&swapped, &[V4]);
        assert!(has_line(&answer, "a=group:BUNDLE 1 0"));
        let m_lines: Vec<&str> = answer
            .split("\r\n")
            .filter(|l| l.starts_with("m="))
            .collect();
        assert_eq!(
            m_lines,
            [
                "m=video 10000 UDP/TLS/RTP/SAVPF 96",
                "m=audio 10000 UDP/TLS/RTP/SAVPF 111"
            ]
        );
        // Candidates follow the first section, which is now video.
        let video_part = answer.split("m=audio").next().unwrap();
        assert!(video_part.contains("a=candidate:1 1 udp "));
    }

    #[test]
    fn answer_mirrors_direction() {
        let sdp = GOOD_OFFER.replacen("a=sendrecv", "a=sendonly", 1).replacen(
            "a=sendrecv",
            "a=recvonly",
            1,
        );
        let answer = answer_for(&sdp, &[V4]);
        let dirs: Vec<&str> = answer
            .split("\r\n")
            .filter(|l| ["a=sendrecv", "a=sendonly", "a=recvonly"].contains(l))
            .collect();
        assert_eq!(dirs, ["a=recvonly", "a=sendonly"]);
    }

    #[test]
    fn answer_echoes_codec_lines_as_offered() {
        let answer = answer_for(GOOD_OFFER, &[V4]);
        for l in [
            "a=rtpmap:111 opus/48000/2",
            "a=fmtp:111 minptime=10;useinbandfec=1",
            "a=rtcp-fb:111 transport-cc",
            "a=rtpmap:96 VP8/90000",
            "a=rtcp-fb:96 goog-remb",
            "a=rtcp-fb:96 ccm fir",
            "a=rtcp-fb:96 nack",
            "a=rtcp-fb:96 nack pli",
        ] {
            assert!(has_line(&answer, l), "{l} missing:\n{answer}");
        }
    }

    #[test]
    fn answer_echoes_fmtp_text_webrtc_sdp_would_rewrite() {
        // webrtc-sdp re-renders fmtp (reorders, joins unknown parameters with ','); the
        // answer must carry the offered text.
        let fmtp = "111 useinbandfec=1;minptime=10;x-google-start-bitrate=800;x-foo=1";
        let answer = answer_for(
            &edit(
                "a=fmtp:111 minptime=10;useinbandfec=1",
                &format!("a=fmtp:{fmtp}"),
            ),
            &[V4],
        );
        assert!(has_line(&answer, &format!("a=fmtp:{fmtp}")), "{answer}");
    }

    #[test]
    fn answer_echoes_extmaps_with_mirrored_direction() {
        let answer = answer_for(
            &edit(
                "a=extmap:5 urn:ietf:params:rtp-hdrext:framemarking",
                "a=extmap:5/sendonly urn:ietf:params:rtp-hdrext:framemarking x y",
            ),
            &[V4],
        );
        assert!(has_line(
            &answer,
            "a=extmap:5/recvonly urn:ietf:params:rtp-hdrext:framemarking x y"
        ));
        assert!(has_line(
            &answer,
            "a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid"
        ));
        assert_eq!(answer.matches("a=extmap:").count(), 8);
    }

    #[test]
    fn answer_echoes_extmap_allow_mixed() {
        let sdp = GOOD_OFFER.replace("a=group:BUNDLE", "a=extmap-allow-mixed\na=group:BUNDLE");
        let answer = answer_for(&sdp, &[V4]);
        assert!(has_line(&answer, "a=extmap-allow-mixed"));
        assert!(!has_line(
            &answer_for(GOOD_OFFER, &[V4]),
            "a=extmap-allow-mixed"
        ));
    }

    #[test]
    fn ipv6_first_candidate_gives_ip6_connection_lines() {
        let answer = answer_for(GOOD_OFFER, &[V6, V4]);
        assert_eq!(answer.matches("c=IN IP6 2001:db8::7\r\n").count(), 2);
        assert!(has_line(
            &answer,
            "a=candidate:1 1 udp 2130706431 2001:db8::7 10000 typ host"
        ));
        let s = parsed(&answer);
        let c = s.media[0].get_connection().as_ref().unwrap();
        assert!(
            matches!(c.address, ExplicitlyTypedAddress::Ip(ip) if ip == "2001:db8::7".parse::<IpAddr>().unwrap())
        );
    }

    #[test]
    fn no_candidates_gives_the_discard_address() {
        let answer = answer_for(GOOD_OFFER, &[]);
        assert!(has_line(&answer, "m=audio 9 UDP/TLS/RTP/SAVPF 111"));
        assert!(has_line(&answer, "c=IN IP4 0.0.0.0"));
        assert!(!answer.contains("a=candidate"));
        parsed(&answer);
    }

    #[test]
    fn candidate_priorities_descend_from_the_host_maximum() {
        assert_eq!(candidate_priority(0), 2_130_706_431);
        assert!((0..100).all(|i| candidate_priority(i) > candidate_priority(i + 1)));
        assert_eq!(candidate_priority(usize::MAX), (126 << 24) | 255);
    }

    /// xorshift64*, enough to make distinct buffers.
    fn test_rng(seed: u64) -> impl FnMut(&mut [u8]) {
        let mut x = seed;
        move |buf: &mut [u8]| {
            for b in buf {
                x ^= x >> 12;
                x ^= x << 25;
                x ^= x >> 27;
                *b = (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8;
            }
        }
    }

    #[test]
    fn fresh_credentials_are_valid_and_distinct() {
        let mut rng = test_rng(0x9e37_79b9_7f4a_7c15);
        let mut ufrags = HashSet::new();
        let mut pwds = HashSet::new();
        for _ in 0..1000 {
            let (u, p) = fresh_credentials(&mut rng);
            assert_eq!(u.as_str().len(), 8);
            assert_eq!(p.as_str().len(), 24);
            assert!(IceUfrag::new(u.as_str()).is_ok() && IcePwd::new(p.as_str()).is_ok());
            ufrags.insert(u);
            pwds.insert(p);
        }
        assert_eq!((ufrags.len(), pwds.len()), (1000, 1000));
    }

    #[test]
    fn fresh_credentials_map_bytes_onto_all_64_ice_chars() {
        let mut next = 0u8;
        let mut counting = |buf: &mut [u8]| {
            for b in buf {
                *b = next;
                next = next.wrapping_add(1);
            }
        };
        let mut seen = String::new();
        for _ in 0..2 {
            let (u, p) = fresh_credentials(&mut counting);
            seen.push_str(u.as_str());
            seen.push_str(p.as_str());
        }
        // Bytes 0..64 in order give the ice-chars in order.
        assert_eq!(seen.as_bytes(), ICE_CHARS);
    }
}
