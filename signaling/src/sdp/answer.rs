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
