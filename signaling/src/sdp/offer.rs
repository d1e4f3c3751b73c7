//! [`parse_offer`]: bytes checks, `webrtc-sdp`, then the contract's rules in order.
//!
//! `webrtc-sdp`'s `parse_sdp` checks the grammar and the document's structure (line
//! order, attribute levels, `c=` and `t=`), but it keeps no line text and silently drops
//! lines it does not support (unknown attributes such as `a=crypto`, unknown fingerprint
//! hashes or ssrc-group semantics, unknown protocols on m-lines). So the text is then
//! walked again line by line with its `parse_sdp_line`, which keeps each attribute's
//! offered text (echoed in the answer) and lets the dropped lines be refused.

use std::collections::HashMap;

use blindfold_relay::control::{
    ExtmapIds, Fingerprint, IcePwd, IceUfrag, Layer, StreamKind, StreamSpec,
};
use blindfold_relay::id::{ExtId, Ssrc};
use webrtc_sdp::attribute_type::{
    SdpAttribute, SdpAttributeDirection, SdpAttributeFingerprintHashType,
    SdpAttributeGroupSemantic, SdpAttributePayloadType, SdpAttributeSetup,
};
use webrtc_sdp::error::SdpParserError;
use webrtc_sdp::media_type::{SdpFormatList, SdpMediaLine, SdpMediaValue, SdpProtocolValue};
use webrtc_sdp::{SdpType, parse_sdp, parse_sdp_line};

use super::{Codec, Direction, Extmap, Offer, OfferError, OfferLimits, Section};

/// The four header extensions the relay reads.
const AUDIO_LEVEL: &str = "urn:ietf:params:rtp-hdrext:ssrc-audio-level";
const FRAME_MARKING: &str = "urn:ietf:params:rtp-hdrext:framemarking";
const ABS_SEND_TIME: &str = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time";
const TRANSPORT_CC: &str =
    "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01";

/// Largest extmap id for one-byte headers (15 is reserved, RFC 8285 §4.2), and with
/// `a=extmap-allow-mixed` (two-byte headers, §4.3).
const MAX_ONE_BYTE_ID: u16 = 14;
const MAX_TWO_BYTE_ID: u16 = 255;

/// Longest `a=mid`. RFC 8843 puts mids in an RTP header extension; short keeps it cheap.
const MAX_MID_LEN: usize = 32;

/// Longest piece of offer text quoted in an error message (they are logged).
const MAX_QUOTE: usize = 200;

/// Parses and checks a participant's offer (see `docs/protocol.md`, "SDP").
///
/// Refuses anything longer than `limits.max_bytes` before parsing it.
pub fn parse_offer(sdp: &str, limits: &OfferLimits) -> Result<Offer, OfferError> {
    if sdp.len() > limits.max_bytes {
        return Err(OfferError::TooLarge {
            len: sdp.len(),
            max: limits.max_bytes,
        });
    }
    if sdp.trim().is_empty() {
        return Err(OfferError::Empty);
    }
    check_bytes(sdp)?;
    let text = without_candidates(sdp);
    // The line walk first: an m-line parse_sdp drops would glue its attributes to the
    // previous section, and parse_sdp would then report a misleading error.
    let doc = read_lines(&text)?;
    parse_sdp(&text, false).map_err(|e| OfferError::Syntax(describe(&e)))?;
    check_offer(&doc)
}

/// Printable ASCII, space, tab, LF, and CR only before LF: no byte that another SDP
/// parser could take as a line end (a lone CR, Unicode separators) survives into text
/// the answer echoes.
fn check_bytes(sdp: &str) -> Result<(), OfferError> {
    let b = sdp.as_bytes();
    for (offset, &byte) in b.iter().enumerate() {
        let ok = matches!(byte, 0x20..=0x7e | b'\t' | b'\n')
            || (byte == b'\r' && b.get(offset + 1) == Some(&b'\n'));
        if !ok {
            return Err(OfferError::Byte { byte, offset });
        }
    }
    Ok(())
}

/// Blanks out `a=candidate` lines: the relay is ICE-lite and learns addresses from
/// connectivity checks, and `webrtc-sdp` fails the whole parse on candidate forms it does
/// not know (new candidate types, extension names without values). Lines are blanked,
/// not removed, so error messages keep the offer's line numbers.
fn without_candidates(sdp: &str) -> String {
    sdp.split('\n')
        .map(|line| {
            if attribute_name(line).is_some_and(|n| n.eq_ignore_ascii_case("candidate")) {
                ""
            } else {
                line
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The name of an `a=` line's attribute, split the way `webrtc-sdp` splits it.
fn attribute_name(line: &str) -> Option<&str> {
    let (kind, value) = line.split_once('=')?;
    if !kind.trim().eq_ignore_ascii_case("a") {
        return None;
    }
    Some(value.trim().split(':').next().unwrap_or_default().trim())
}

/// The value of an `a=name:value` line as offered (trimmed), as `webrtc-sdp` parsed it.
fn attribute_value(line: &str) -> &str {
    line.split_once('=')
        .and_then(|(_, v)| v.trim().split_once(':'))
        .map_or("", |(_, v)| v.trim())
}

/// `webrtc-sdp`'s error as a one-line message with a 1-based line number, clipped.
fn describe(e: &SdpParserError) -> String {
    let s = match e {
        SdpParserError::Line {
            error, line_number, ..
        }
        | SdpParserError::Unsupported {
            error, line_number, ..
        } => format!("line {}: {error}", line_number + 1),
        SdpParserError::Sequence {
            message,
            line_number: 0,
        } => message.clone(),
        SdpParserError::Sequence {
            message,
            line_number,
        } => format!("line {}: {message}", line_number + 1),
    };
    clip(&s)
}

/// At most [`MAX_QUOTE`] bytes of (ASCII) text.
fn clip(s: &str) -> String {
    match s.get(..MAX_QUOTE) {
        Some(head) if head.len() < s.len() => format!("{head}..."),
        _ => s.to_owned(),
    }
}

/// One attribute as `webrtc-sdp` read it, with its value text as offered.
struct Attr {
    attr: SdpAttribute,
    value: String,
}

/// One m-line and the attributes under it.
struct RawSection {
    line: SdpMediaLine,
    attrs: Vec<Attr>,
}

/// The offer read line by line.
struct Doc {
    session: Vec<Attr>,
    sections: Vec<RawSection>,
}

/// Walks the text line by line, keeping attribute text and refusing the lines
/// `parse_sdp` would drop that matter: keying, fingerprints, ssrc-groups, m-lines.
/// Lines in error are skipped here; `parse_sdp`, run next, refuses them.
fn read_lines(text: &str) -> Result<Doc, OfferError> {
    let mut doc = Doc {
        session: Vec::new(),
        sections: Vec::new(),
    };
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match parse_sdp_line(line, n) {
            Ok(parsed) => match parsed.sdp_type {
                SdpType::Media(m) => doc.sections.push(RawSection {
                    line: m,
                    attrs: Vec::new(),
                }),
                SdpType::Attribute(attr) => {
                    let a = Attr {
                        attr,
                        value: attribute_value(line).to_owned(),
                    };
                    match doc.sections.last_mut() {
                        Some(s) => s.attrs.push(a),
                        None => doc.session.push(a),
                    }
                }
                _ => {}
            },
            Err(SdpParserError::Unsupported { .. }) => refuse_unsupported(line, n)?,
            Err(_) => {}
        }
    }
    Ok(doc)
}

/// Refuses an unsupported line that `parse_sdp` would have dropped if ignoring it
/// could change what the offer means; other unknown attributes are ignored.
fn refuse_unsupported(line: &str, n: usize) -> Result<(), OfferError> {
    if line
        .split_once('=')
        .is_some_and(|(k, _)| k.trim().eq_ignore_ascii_case("m"))
    {
        return Err(OfferError::MediaLine { line: n + 1 });
    }
    let first_token = || {
        clip(
            attribute_value(line)
                .split_whitespace()
                .next()
                .unwrap_or_default(),
        )
    };
    match attribute_name(line).map(str::to_ascii_lowercase).as_deref() {
        Some("crypto") => Err(OfferError::Crypto),
        Some("key-mgmt") => Err(OfferError::KeyMgmt),
        Some("fingerprint") => Err(OfferError::FingerprintHash(first_token())),
        Some("ssrc-group") => Err(OfferError::UnknownSsrcGroup(first_token())),
        _ => Ok(()),
    }
}

/// Everything after the line walk.
fn check_offer(doc: &Doc) -> Result<Offer, OfferError> {
    let kinds = section_kinds(doc)?;
    if doc
        .session
        .iter()
        .any(|a| matches!(a.attr, SdpAttribute::IceLite))
    {
        return Err(OfferError::IceLite);
    }
    let session_direction = direction(&doc.session, None)?;
    let mut sections = Vec::with_capacity(2);
    for (raw, &kind) in doc.sections.iter().zip(&kinds) {
        sections.push(check_section(raw, kind, session_direction)?);
    }
    if sections[0].mid == sections[1].mid {
        return Err(OfferError::SameMid(sections[0].mid.clone()));
    }
    check_bundle(doc, &sections)?;

    let everywhere = || {
        doc.session
            .iter()
            .chain(doc.sections.iter().flat_map(|s| &s.attrs))
            .map(|a| &a.attr)
    };
    let ice_ufrag = one_value(
        "ice-ufrag",
        everywhere().filter_map(|a| match a {
            SdpAttribute::IceUfrag(v) => Some(v.as_str()),
            _ => None,
        }),
    )?;
    let ice_ufrag = IceUfrag::new(ice_ufrag).map_err(|e| OfferError::BadUfrag(e.to_string()))?;
    let ice_pwd = one_value(
        "ice-pwd",
        everywhere().filter_map(|a| match a {
            SdpAttribute::IcePwd(v) => Some(v.as_str()),
            _ => None,
        }),
    )?;
    // IcePwd's errors give length and offending byte, never the password.
    let ice_pwd = IcePwd::new(ice_pwd).map_err(|e| OfferError::BadPwd(e.to_string()))?;
    let fingerprint = fingerprint(everywhere())?;
    check_setup(everywhere())?;

    let streams = streams(doc, &kinds)?;
    let extmap_allow_mixed = everywhere().any(|a| matches!(a, SdpAttribute::ExtmapAllowMixed));
    let extmap = extmaps(doc, &kinds, extmap_allow_mixed, &mut sections)?;

    Ok(Offer {
        ice_ufrag,
        ice_pwd,
        fingerprint,
        streams,
        extmap,
        sections,
        extmap_allow_mixed,
    })
}

/// Exactly one audio and one video section, in either order.
fn section_kinds(doc: &Doc) -> Result<Vec<StreamKind>, OfferError> {
    let (mut audio, mut video, mut other) = (0, 0, 0);
    let mut kinds = Vec::with_capacity(2);
    for s in &doc.sections {
        match s.line.media {
            SdpMediaValue::Audio => {
                audio += 1;
                kinds.push(StreamKind::Audio);
            }
            SdpMediaValue::Video => {
                video += 1;
                kinds.push(StreamKind::Video);
            }
            _ => other += 1,
        }
    }
    if (audio, video, other) != (1, 1, 0) {
        return Err(OfferError::Sections {
            audio,
            video,
            other,
        });
    }
    Ok(kinds)
}

/// A section's own checks: protocol, port, formats, mid, rtcp-mux, direction, codecs.
/// Extmaps are filled in later, once all sections are known.
fn check_section(
    raw: &RawSection,
    kind: StreamKind,
    session_direction: Option<Direction>,
) -> Result<Section, OfferError> {
    let has = |f: fn(&SdpAttribute) -> bool| raw.attrs.iter().any(|a| f(&a.attr));
    if raw.line.proto != SdpProtocolValue::UdpTlsRtpSavpf {
        return Err(OfferError::Protocol {
            kind,
            proto: raw.line.proto.to_string(),
        });
    }
    if raw.line.port == 0 && !has(|a| matches!(a, SdpAttribute::BundleOnly)) {
        return Err(OfferError::PortZero { kind });
    }
    let mids: Vec<&str> = raw
        .attrs
        .iter()
        .filter_map(|a| match &a.attr {
            SdpAttribute::Mid(m) => Some(m.as_str()),
            _ => None,
        })
        .collect();
    let mid = match mids[..] {
        [] => Err(OfferError::MissingSectionAttribute { kind, attr: "mid" }),
        [m] => Ok(m),
        _ => Err(OfferError::RepeatedSectionAttribute { kind, attr: "mid" }),
    }?;
    if mid.is_empty() || mid.len() > MAX_MID_LEN || !mid.bytes().all(is_token_char) {
        return Err(OfferError::BadMid { kind });
    }
    if !has(|a| matches!(a, SdpAttribute::RtcpMux)) {
        return Err(OfferError::MissingSectionAttribute {
            kind,
            attr: "rtcp-mux",
        });
    }
    let direction = direction(&raw.attrs, Some(kind))?
        .or(session_direction)
        .unwrap_or(Direction::SendRecv);
    let (codecs, rtcp_fb_all) = codecs(raw, kind)?;
    Ok(Section {
        kind,
        mid: mid.to_owned(),
        direction,
        codecs,
        rtcp_fb_all,
        extmaps: Vec::new(),
        rtcp_rsize: has(|a| matches!(a, SdpAttribute::RtcpRsize)),
    })
}

/// RFC 4566 `token-char`.
fn is_token_char(b: u8) -> bool {
    matches!(b, 0x21 | 0x23..=0x27 | 0x2a..=0x2b | 0x2d..=0x2e | 0x30..=0x39 | 0x41..=0x5a | 0x5e..=0x7e)
}

/// The direction attribute among `attrs` (`None` if absent), refusing `inactive` and
/// more than one. `kind` is the section, `None` for the session level.
fn direction(attrs: &[Attr], kind: Option<StreamKind>) -> Result<Option<Direction>, OfferError> {
    let mut found = None;
    for a in attrs {
        let d = match a.attr {
            SdpAttribute::Sendrecv => Some(Direction::SendRecv),
            SdpAttribute::Sendonly => Some(Direction::SendOnly),
            SdpAttribute::Recvonly => Some(Direction::RecvOnly),
            SdpAttribute::Inactive => None,
            _ => continue,
        };
        if found.is_some() {
            return Err(match kind {
                Some(kind) => OfferError::RepeatedSectionAttribute {
                    kind,
                    attr: "direction",
                },
                None => OfferError::Repeated("direction"),
            });
        }
        found = Some(d);
    }
    match found {
        // A session-level inactive would make every section without its own direction
        // inactive; it is refused outright, as a section's is.
        Some(None) => Err(match kind {
            Some(kind) => OfferError::Inactive { kind },
            None => OfferError::SessionInactive,
        }),
        Some(Some(d)) => Ok(Some(d)),
        None => Ok(None),
    }
}

/// The section's formats with their rtpmap/fmtp/rtcp-fb text, in m-line order, and the
/// wildcard rtcp-fb values. Attribute lines for unlisted payload types are dropped, and
/// so are RTX payload types.
fn codecs(raw: &RawSection, kind: StreamKind) -> Result<(Vec<Codec>, Vec<String>), OfferError> {
    let formats = match &raw.line.formats {
        SdpFormatList::Integers(v) => v.as_slice(),
        // Audio and video m-lines always parse to integers.
        _ => &[],
    };
    if formats.is_empty() {
        return Err(OfferError::NoFormats { kind });
    }
    let mut codecs: Vec<Codec> = Vec::with_capacity(formats.len());
    for &f in formats {
        let pt = u8::try_from(f)
            .ok()
            .filter(|pt| *pt <= 127)
            .ok_or(OfferError::PayloadType { kind, pt: f })?;
        if codecs.iter().any(|c| c.pt == pt) {
            return Err(OfferError::RepeatedPayloadType {
                kind,
                pt,
                what: "listed",
            });
        }
        codecs.push(Codec {
            pt,
            rtpmap: None,
            fmtp: Vec::new(),
            rtcp_fb: Vec::new(),
        });
    }
    let mut all = Vec::new();
    let mut rtx: Vec<u8> = Vec::new();
    for a in &raw.attrs {
        let (pt, value) = match &a.attr {
            SdpAttribute::Rtpmap(r) => (r.payload_type, &a.value),
            SdpAttribute::Fmtp(f) => (f.payload_type, &a.value),
            SdpAttribute::Rtcpfb(fb) => match fb.payload_type {
                SdpAttributePayloadType::PayloadType(pt) => (pt, &a.value),
                SdpAttributePayloadType::Wildcard => {
                    all.push(a.value.clone());
                    continue;
                }
            },
            _ => continue,
        };
        let Some(c) = codecs.iter_mut().find(|c| c.pt == pt) else {
            continue;
        };
        match a.attr {
            SdpAttribute::Rtpmap(_) if c.rtpmap.is_some() => {
                return Err(OfferError::RepeatedPayloadType {
                    kind,
                    pt,
                    what: "mapped",
                });
            }
            SdpAttribute::Rtpmap(ref r) => {
                if r.codec_name.eq_ignore_ascii_case("rtx") {
                    rtx.push(pt);
                }
                c.rtpmap = Some(value.clone());
            }
            SdpAttribute::Fmtp(_) => c.fmtp.push(value.clone()),
            _ => c.rtcp_fb.push(value.clone()),
        }
    }
    // RTX is left out of the answer: the relay answers NACKs with the original
    // packets, and a participant that sent RTX would send it on an SSRC that is not
    // one of its streams. (Browsers offer it by default.)
    codecs.retain(|c| !rtx.contains(&c.pt));
    if codecs.is_empty() {
        return Err(OfferError::NoFormats { kind });
    }
    Ok((codecs, all))
}

/// One session-level `a=group:BUNDLE` naming exactly the two mids.
fn check_bundle(doc: &Doc, sections: &[Section]) -> Result<(), OfferError> {
    let bundles: Vec<&[String]> = doc
        .session
        .iter()
        .filter_map(|a| match &a.attr {
            SdpAttribute::Group(g) if matches!(g.semantics, SdpAttributeGroupSemantic::Bundle) => {
                Some(g.tags.as_slice())
            }
            _ => None,
        })
        .collect();
    let [tags] = bundles[..] else {
        return Err(OfferError::BundleCount(bundles.len()));
    };
    let names = |mid: &str| tags.iter().any(|t| t == mid);
    if tags.len() != 2 || !sections.iter().all(|s| names(&s.mid)) {
        return Err(OfferError::BundleMids);
    }
    Ok(())
}

/// The one value of a transport attribute that may appear at session and media level.
fn one_value<'a>(
    name: &'static str,
    mut values: impl Iterator<Item = &'a str>,
) -> Result<&'a str, OfferError> {
    let first = values.next().ok_or(OfferError::Missing(name))?;
    if values.any(|v| v != first) {
        return Err(OfferError::Conflicting(name));
    }
    Ok(first)
}

/// The one SHA-256 fingerprint; any other hash function is refused.
fn fingerprint<'a>(
    attrs: impl Iterator<Item = &'a SdpAttribute>,
) -> Result<Fingerprint, OfferError> {
    let mut found: Option<&[u8]> = None;
    for a in attrs {
        let SdpAttribute::Fingerprint(f) = a else {
            continue;
        };
        if f.hash_algorithm != SdpAttributeFingerprintHashType::Sha256 {
            return Err(OfferError::FingerprintHash(f.hash_algorithm.to_string()));
        }
        match found {
            Some(prev) if prev != f.fingerprint.as_slice() => {
                return Err(OfferError::Conflicting("fingerprint"));
            }
            _ => found = Some(&f.fingerprint),
        }
    }
    let bytes = found.ok_or(OfferError::Missing("fingerprint"))?;
    // webrtc-sdp checked a sha-256 fingerprint has 32 octets.
    let bytes = <[u8; 32]>::try_from(bytes)
        .map_err(|_| OfferError::FingerprintHash("sha-256 (wrong length)".to_owned()))?;
    Ok(Fingerprint(bytes))
}

/// At least one `a=setup`, each `actpass` or `active`: the relay is the DTLS server.
fn check_setup<'a>(attrs: impl Iterator<Item = &'a SdpAttribute>) -> Result<(), OfferError> {
    let mut any = false;
    for a in attrs {
        match a {
            SdpAttribute::Setup(SdpAttributeSetup::Actpass | SdpAttributeSetup::Active) => {
                any = true
            }
            SdpAttribute::Setup(SdpAttributeSetup::Passive) => {
                return Err(OfferError::Setup("passive"));
            }
            SdpAttribute::Setup(SdpAttributeSetup::Holdconn) => {
                return Err(OfferError::Setup("holdconn"));
            }
            _ => {}
        }
    }
    if any {
        Ok(())
    } else {
        Err(OfferError::Missing("setup"))
    }
}

/// The streams the participant sends: audio 0 or 1 SSRC; video 0, 1, or a SIM pair.
fn streams(doc: &Doc, kinds: &[StreamKind]) -> Result<Vec<StreamSpec>, OfferError> {
    let mut streams: Vec<StreamSpec> = Vec::with_capacity(3);
    let mut rtx: Vec<Ssrc> = Vec::new();
    for (raw, &kind) in doc.sections.iter().zip(kinds) {
        let mut declared: Vec<Ssrc> = Vec::new();
        let mut sim: Option<Vec<Ssrc>> = None;
        let mut fid: Vec<Vec<Ssrc>> = Vec::new();
        for a in &raw.attrs {
            match &a.attr {
                SdpAttribute::Ssrc(s) if !declared.contains(&Ssrc(s.id)) => {
                    declared.push(Ssrc(s.id))
                }
                SdpAttribute::SsrcGroup(semantics, members) => {
                    let semantics = semantics.to_string();
                    let group = members.iter().map(|m| Ssrc(m.id)).collect();
                    match (kind, semantics.as_str()) {
                        (StreamKind::Video, "SIM") if sim.is_some() => {
                            return Err(OfferError::SimRepeated);
                        }
                        (StreamKind::Video, "SIM") => sim = Some(group),
                        (StreamKind::Video, "FID") => fid.push(group),
                        _ => return Err(OfferError::SsrcGroup { kind, semantics }),
                    }
                }
                _ => {}
            }
        }
        // RTX is never negotiated (`codecs` leaves it out of the answer), so an RTX
        // SSRC is never sent on: it is not a stream, and does not count.
        for repair in rtx_ssrcs(&fid, &declared)? {
            if repair == Ssrc::RELAY {
                return Err(OfferError::RelaySsrc(repair));
            }
            declared.retain(|&s| s != repair);
            rtx.push(repair);
        }
        let max = if kind == StreamKind::Video { 2 } else { 1 };
        if declared.len() > max {
            return Err(OfferError::TooManySsrcs {
                kind,
                count: declared.len(),
                max,
            });
        }
        let stream = |ssrc, layer| StreamSpec { ssrc, kind, layer };
        let mine: Vec<StreamSpec> = match (sim, &declared[..]) {
            (Some(group), _) => {
                let [thumbnail, full] = group[..] else {
                    return Err(OfferError::SimSize);
                };
                if thumbnail == full {
                    return Err(OfferError::SimSize);
                }
                if let Some(&s) = group.iter().find(|s| !declared.contains(s)) {
                    return Err(OfferError::SimUndeclared(s));
                }
                vec![
                    stream(thumbnail, Layer::Thumbnail),
                    stream(full, Layer::Full),
                ]
            }
            (None, [one]) => vec![stream(*one, Layer::None)],
            (None, []) => Vec::new(),
            (None, _) => return Err(OfferError::SimMissing),
        };
        for s in mine {
            if s.ssrc == Ssrc::RELAY {
                return Err(OfferError::RelaySsrc(s.ssrc));
            }
            if streams.iter().any(|t| t.ssrc == s.ssrc) {
                return Err(OfferError::SsrcInBothSections(s.ssrc));
            }
            streams.push(s);
        }
    }
    // An RTX SSRC is one SSRC of the participant's too: not another section's stream.
    if let Some(s) = streams.iter().find(|s| rtx.contains(&s.ssrc)) {
        return Err(OfferError::SsrcInBothSections(s.ssrc));
    }
    Ok(streams)
}

/// The RTX SSRCs of a video section's `a=ssrc-group:FID <media> <rtx>` groups (RFC 5576
/// §4.1, as browsers write them): each group two distinct declared SSRCs, no SSRC in
/// two groups.
fn rtx_ssrcs(fid: &[Vec<Ssrc>], declared: &[Ssrc]) -> Result<Vec<Ssrc>, OfferError> {
    let mut paired: Vec<Ssrc> = Vec::with_capacity(2 * fid.len());
    let mut rtx = Vec::with_capacity(fid.len());
    for group in fid {
        let names = || {
            let n: Vec<String> = group.iter().map(|s| s.0.to_string()).collect();
            clip(&n.join(" "))
        };
        let &[media, repair] = &group[..] else {
            return Err(OfferError::FidGroup(names()));
        };
        let known = declared.contains(&media) && declared.contains(&repair);
        if media == repair || !known || paired.contains(&media) || paired.contains(&repair) {
            return Err(OfferError::FidGroup(names()));
        }
        paired.extend([media, repair]);
        rtx.push(repair);
    }
    Ok(rtx)
}

/// Checks every section's extmaps (session-level ones count as each section's), fills
/// them into `sections`, and returns the ids the relay reads. Under BUNDLE an id names
/// one URI and a URI has one id across all sections (RFC 8843 §9.2).
fn extmaps(
    doc: &Doc,
    kinds: &[StreamKind],
    allow_mixed: bool,
    sections: &mut [Section],
) -> Result<ExtmapIds, OfferError> {
    let max = if allow_mixed {
        MAX_TWO_BYTE_ID
    } else {
        MAX_ONE_BYTE_ID
    };
    let mut by_id: HashMap<u16, &str> = HashMap::new();
    let mut by_uri: HashMap<&str, u16> = HashMap::new();
    for ((raw, &kind), section) in doc.sections.iter().zip(kinds).zip(sections.iter_mut()) {
        for a in doc.session.iter().chain(&raw.attrs) {
            let SdpAttribute::Extmap(e) = &a.attr else {
                continue;
            };
            if e.id == 0 || e.id > max {
                return Err(OfferError::ExtmapIdRange { id: e.id, max });
            }
            if *by_id.entry(e.id).or_insert(&e.url) != e.url {
                return Err(OfferError::ExtmapIdClash(e.id));
            }
            if *by_uri.entry(&e.url).or_insert(e.id) != e.id {
                return Err(OfferError::ExtmapUriClash(clip(&e.url)));
            }
            let id =
                ExtId(u8::try_from(e.id).map_err(|_| OfferError::ExtmapIdRange { id: e.id, max })?);
            if section.extmaps.iter().any(|x| x.id == id) {
                return Err(OfferError::ExtmapRepeated { kind, id: e.id });
            }
            section.extmaps.push(Extmap {
                id,
                direction: e.direction.as_ref().map(|d| match d {
                    SdpAttributeDirection::Sendrecv => Direction::SendRecv,
                    SdpAttributeDirection::Sendonly => Direction::SendOnly,
                    SdpAttributeDirection::Recvonly => Direction::RecvOnly,
                }),
                uri: e.url.clone(),
                attributes: e.extension_attributes.clone(),
            });
        }
    }
    let id_of = |uri: &str| {
        by_uri
            .get(uri)
            .and_then(|&id| u8::try_from(id).ok())
            .map(ExtId)
    };
    let ids = ExtmapIds {
        audio_level: id_of(AUDIO_LEVEL),
        frame_marking: id_of(FRAME_MARKING),
        abs_send_time: id_of(ABS_SEND_TIME),
        transport_cc: id_of(TRANSPORT_CC),
    };
    ids.validate()
        .map_err(|e| OfferError::ExtmapIds(e.to_string()))?;
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use blindfold_relay::control::{ExtmapIds, Layer, StreamKind, StreamSpec};
    use blindfold_relay::id::{ExtId, Ssrc};

    use super::super::testdata::{
        GOOD_OFFER, OFFER_FINGERPRINT, answer_with, crlf, edit, edited, offer_of, refusal,
    };
    use super::*;

    const FP_LINE: &str = "a=fingerprint:sha-256 9C:95:0D:C0:08:80:17:C6:92:00:57:92:6F:1A:0F:23:37:75:EA:84:08:3E:92:92:AB:20:B6:EB:77:3A:69:85\n";
    const TCC: &str = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01";

    fn video(ssrc: u32, layer: Layer) -> StreamSpec {
        StreamSpec {
            ssrc: Ssrc(ssrc),
            kind: StreamKind::Video,
            layer,
        }
    }

    fn audio(ssrc: u32) -> StreamSpec {
        StreamSpec {
            ssrc: Ssrc(ssrc),
            kind: StreamKind::Audio,
            layer: Layer::None,
        }
    }

    // ---- accepted offers -------------------------------------------------------------

    /// The streams [`GOOD_OFFER`] declares: audio, and a simulcast pair.
    fn good_streams() -> Vec<StreamSpec> {
        vec![
            audio(1001),
            video(2001, Layer::Thumbnail),
            video(2002, Layer::Full),
        ]
    }

    #[test]
    fn good_offer_gives_streams() {
        assert_eq!(offer_of(GOOD_OFFER).streams, good_streams());
    }

    /// What Chromium 156 and Firefox 153 ESR offered for tests/src/browser_caller.html
    /// (a tone and a canvas, VP8 and its RTX), taken as they are: each declares its RTX
    /// SSRC in an FID group, which is no stream, and RTX is left out of the answer.
    #[test]
    fn browsers_offers() {
        let chromium = include_str!("../../testdata/chromium-offer.sdp");
        assert!(chromium.contains("a=ssrc-group:FID 1787458263 2011417500"));
        let o = parse_offer(chromium, &OfferLimits::default()).expect("Chromium's offer");
        assert_eq!(
            o.streams,
            vec![audio(1_371_128_173), video(1_787_458_263, Layer::None)]
        );
        assert_eq!(o.extmap.audio_level, Some(ExtId(1)));
        assert_eq!(o.extmap.abs_send_time, Some(ExtId(2)));
        assert_eq!(o.extmap.transport_cc, Some(ExtId(3)));
        assert!(o.extmap_allow_mixed);

        let firefox = include_str!("../../testdata/firefox-offer.sdp");
        assert!(firefox.contains("a=ssrc-group:FID 3790960804 4163021442"));
        let f = parse_offer(firefox, &OfferLimits::default()).expect("Firefox's offer");
        assert_eq!(
            f.streams,
            vec![audio(1_654_240_827), video(3_790_960_804, Layer::None)]
        );
        assert_eq!(f.extmap.transport_cc, Some(ExtId(7)));
        for (offer, o) in [(chromium, &o), (firefox, &f)] {
            assert!(offer.contains(" rtx/90000"));
            let answer = answer_with(o, &["192.0.2.1:3478"], 1);
            assert!(!answer.contains("rtx"), "{answer}");
            assert!(!answer.contains("apt="), "{answer}");
        }
    }

    #[test]
    fn tmmbr_is_negotiated_only_when_offered_for_video() {
        assert!(
            !offer_of(GOOD_OFFER).tmmbr(),
            "the example offers REMB only"
        );
        let with = edited(
            "a=rtcp-fb:96 ccm fir\n",
            "a=rtcp-fb:96 ccm fir\na=rtcp-fb:96 ccm tmmbr\n",
            1,
        );
        assert!(offer_of(&with).tmmbr());
    }

    #[test]
    fn good_offer_gives_the_four_extmap_ids() {
        let o = offer_of(GOOD_OFFER);
        assert_eq!(
            o.extmap,
            ExtmapIds {
                audio_level: Some(ExtId(1)),
                abs_send_time: Some(ExtId(2)),
                transport_cc: Some(ExtId(3)),
                frame_marking: Some(ExtId(5)),
            }
        );
    }

    #[test]
    fn good_offer_gives_credentials_and_fingerprint() {
        let o = offer_of(GOOD_OFFER);
        assert_eq!(o.ice_ufrag.as_str(), "pZ9q");
        assert_eq!(o.ice_pwd.as_str(), "Jc2v/NdhQ8uGkR3xw+Tm5bYe");
        assert_eq!(o.fingerprint.to_string(), OFFER_FINGERPRINT);
    }

    #[test]
    fn good_offer_keeps_sections_for_the_answer() {
        let o = offer_of(GOOD_OFFER);
        let [a, v] = &o.sections[..] else {
            panic!("two sections")
        };
        assert_eq!((a.kind, a.mid.as_str()), (StreamKind::Audio, "0"));
        assert_eq!((v.kind, v.mid.as_str()), (StreamKind::Video, "1"));
        assert_eq!(a.direction, Direction::SendRecv);
        assert_eq!(a.codecs.len(), 1);
        assert_eq!(a.codecs[0].pt, 111);
        assert_eq!(a.codecs[0].rtpmap.as_deref(), Some("111 opus/48000/2"));
        assert_eq!(a.codecs[0].fmtp, ["111 minptime=10;useinbandfec=1"]);
        assert_eq!(a.codecs[0].rtcp_fb, ["111 transport-cc"]);
        assert_eq!(
            v.codecs[0].rtcp_fb,
            [
                "96 goog-remb",
                "96 transport-cc",
                "96 ccm fir",
                "96 nack",
                "96 nack pli"
            ]
        );
        let ids: Vec<u8> = v.extmaps.iter().map(|e| e.id.0).collect();
        assert_eq!(ids, [2, 3, 4, 5]);
        assert_eq!(v.extmaps[1].uri, TCC);
        assert!(!o.extmap_allow_mixed);
    }

    #[test]
    fn lf_and_crlf_offers_are_the_same() {
        let lf = parse_offer(GOOD_OFFER, &OfferLimits::default()).unwrap();
        assert_eq!(lf, offer_of(GOOD_OFFER));
    }

    #[test]
    fn video_section_first_is_accepted() {
        let (head, rest) = GOOD_OFFER.split_once("m=audio").unwrap();
        let (audio_sec, video_sec) = rest.split_once("m=video").unwrap();
        let swapped = format!("{head}m=video{video_sec}m=audio{audio_sec}");
        let o = offer_of(&swapped);
        assert_eq!(o.sections[0].kind, StreamKind::Video);
        assert_eq!(o.streams[0], video(2001, Layer::Thumbnail));
        assert_eq!(o.streams[2], audio(1001));
    }

    #[test]
    fn transport_attributes_at_session_level_are_accepted() {
        let media_level = [
            "a=ice-ufrag:pZ9q\n",
            "a=ice-pwd:Jc2v/NdhQ8uGkR3xw+Tm5bYe\n",
            FP_LINE,
            "a=setup:actpass\n",
        ];
        let mut sdp = GOOD_OFFER.to_owned();
        for l in media_level {
            sdp = sdp.replace(l, "");
        }
        let session = media_level.concat();
        let sdp = sdp.replacen("a=group:BUNDLE", &format!("{session}a=group:BUNDLE"), 1);
        let o = offer_of(&sdp);
        assert_eq!(o.ice_ufrag.as_str(), "pZ9q");
        assert_eq!(o.fingerprint.to_string(), OFFER_FINGERPRINT);
    }

    #[test]
    fn setup_active_is_accepted() {
        offer_of(&edited("a=setup:actpass", "a=setup:active", 2));
    }

    #[test]
    fn sendonly_and_recvonly_sections_are_accepted() {
        let sdp = GOOD_OFFER.replacen("a=sendrecv", "a=sendonly", 1).replacen(
            "a=sendrecv",
            "a=recvonly",
            1,
        );
        let o = offer_of(&sdp);
        assert_eq!(o.sections[0].direction, Direction::SendOnly);
        assert_eq!(o.sections[1].direction, Direction::RecvOnly);
    }

    #[test]
    fn no_direction_means_sendrecv() {
        let o = offer_of(&edited("a=sendrecv\n", "", 2));
        assert!(
            o.sections
                .iter()
                .all(|s| s.direction == Direction::SendRecv)
        );
    }

    #[test]
    fn session_level_direction_applies_to_sections_without_one() {
        let sdp =
            edited("a=sendrecv\n", "", 2).replace("a=group:BUNDLE", "a=recvonly\na=group:BUNDLE");
        let o = offer_of(&sdp);
        assert!(
            o.sections
                .iter()
                .all(|s| s.direction == Direction::RecvOnly)
        );
    }

    #[test]
    fn offer_without_ssrcs_is_receive_only() {
        let sdp: String = GOOD_OFFER
            .lines()
            .filter(|l| !l.starts_with("a=ssrc"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert!(offer_of(&sdp).streams.is_empty());
    }

    #[test]
    fn one_video_ssrc_is_single_layer() {
        let sdp: String = GOOD_OFFER
            .lines()
            .filter(|l| !l.starts_with("a=ssrc-group") && !l.starts_with("a=ssrc:2002"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(
            offer_of(&sdp).streams,
            vec![audio(1001), video(2001, Layer::None)]
        );
    }

    #[test]
    fn sim_group_order_decides_layers() {
        let o = offer_of(&edit("SIM 2001 2002", "SIM 2002 2001"));
        assert_eq!(o.streams[1], video(2002, Layer::Thumbnail));
        assert_eq!(o.streams[2], video(2001, Layer::Full));
    }

    #[test]
    fn unknown_attributes_are_ignored() {
        let o = offer_of(&edit(
            "a=rtcp-rsize\n",
            "a=rtcp-rsize\na=x-google-flag:conference\na=framerate:30\n",
        ));
        assert_eq!(o.streams.len(), 3);
    }

    #[test]
    fn odd_candidates_do_not_fail_the_offer() {
        let odd = "a=candidate:1 1 udp 2122260223 4c2c7c3e-8f.local 54321 typ host\n\
                   a=candidate:2 1 tcp 1518280447 192.0.2.10 9 typ host tcptype active\n\
                   a=candidate:3 1 udp 100 192.0.2.10 3478 typ futuretype\n\
                   a=candidate:4 1 udp 100 192.0.2.10 3478 typ host lonely-extension\n\
                   a=candidate:garbage\n\
                   a=end-of-candidates\n";
        let o = offer_of(&edit("a=rtcp-rsize\n", &format!("a=rtcp-rsize\n{odd}")));
        assert_eq!(o.streams.len(), 3);
    }

    #[test]
    fn extmap_allow_mixed_allows_ids_up_to_255() {
        let sdp = edit("a=extmap:5 urn", "a=extmap:200 urn")
            .replace("a=group:BUNDLE", "a=extmap-allow-mixed\na=group:BUNDLE");
        let o = offer_of(&sdp);
        assert!(o.extmap_allow_mixed);
        assert_eq!(o.extmap.frame_marking, Some(ExtId(200)));
    }

    #[test]
    fn unknown_extmap_uri_is_kept_but_not_given_to_the_relay() {
        let o = offer_of(GOOD_OFFER);
        let sdes = "urn:ietf:params:rtp-hdrext:sdes:mid";
        assert!(
            o.sections
                .iter()
                .all(|s| s.extmaps.iter().any(|e| e.uri == sdes))
        );
        assert_eq!(o.extmap.validate(), Ok(()));
        assert!(
            ![
                o.extmap.audio_level,
                o.extmap.abs_send_time,
                o.extmap.transport_cc,
                o.extmap.frame_marking
            ]
            .contains(&Some(ExtId(4)))
        );
    }

    #[test]
    fn extmap_direction_and_attributes_are_kept() {
        let o = offer_of(&edit(
            "a=extmap:5 urn:ietf:params:rtp-hdrext:framemarking",
            "a=extmap:5/sendonly urn:ietf:params:rtp-hdrext:framemarking some attrs",
        ));
        let e = &o.sections[1].extmaps[3];
        assert_eq!(e.direction, Some(Direction::SendOnly));
        assert_eq!(e.attributes.as_deref(), Some("some attrs"));
    }

    #[test]
    fn session_level_extmaps_apply_to_both_sections() {
        let sdp: String = GOOD_OFFER
            .lines()
            .filter(|l| !l.starts_with("a=extmap"))
            .map(|l| format!("{l}\n"))
            .collect();
        let sdp = sdp.replace(
            "a=group:BUNDLE",
            &format!("a=extmap:3 {TCC}\na=group:BUNDLE"),
        );
        let o = offer_of(&sdp);
        assert_eq!(o.extmap.transport_cc, Some(ExtId(3)));
        assert!(o.sections.iter().all(|s| s.extmaps.len() == 1));
    }

    #[test]
    fn wildcard_rtcp_fb_is_kept() {
        let o = offer_of(&edit(
            "a=rtcp-fb:96 nack pli\n",
            "a=rtcp-fb:96 nack pli\na=rtcp-fb:* ccm fir\n",
        ));
        assert_eq!(o.sections[1].rtcp_fb_all, ["* ccm fir"]);
    }

    #[test]
    fn attributes_of_unlisted_payload_types_are_dropped() {
        let o = offer_of(&edit(
            "a=rtpmap:96 VP8/90000\n",
            "a=rtpmap:96 VP8/90000\na=rtpmap:97 rtx/90000\na=fmtp:97 apt=96\n",
        ));
        assert_eq!(o.sections[1].codecs.len(), 1);
        assert_eq!(o.sections[1].codecs[0].fmtp, Vec::<String>::new());
    }

    #[test]
    fn several_codecs_keep_m_line_order() {
        let o = offer_of(
            &edit(
                "m=audio 9 UDP/TLS/RTP/SAVPF 111\n",
                "m=audio 9 UDP/TLS/RTP/SAVPF 111 0 126\n",
            )
            .replace(
                "a=rtpmap:111 opus/48000/2\n",
                "a=rtpmap:126 telephone-event/8000\na=rtpmap:111 opus/48000/2\n",
            ),
        );
        let pts: Vec<u8> = o.sections[0].codecs.iter().map(|c| c.pt).collect();
        assert_eq!(pts, [111, 0, 126]);
        assert_eq!(o.sections[0].codecs[1].rtpmap, None);
        assert_eq!(
            o.sections[0].codecs[2].rtpmap.as_deref(),
            Some("126 telephone-event/8000")
        );
    }

    #[test]
    fn port_zero_with_bundle_only_is_accepted() {
        let sdp = edit("m=video 9 ", "m=video 0 ").replace("a=mid:1\n", "a=mid:1\na=bundle-only\n");
        offer_of(&sdp);
    }

    #[test]
    fn lowercase_fingerprint_hex_is_accepted() {
        let sdp = GOOD_OFFER.replace(OFFER_FINGERPRINT, &OFFER_FINGERPRINT.to_lowercase());
        assert_eq!(offer_of(&sdp).fingerprint.to_string(), OFFER_FINGERPRINT);
    }

    #[test]
    fn offer_of_exactly_max_bytes_is_accepted() {
        let sdp = crlf(GOOD_OFFER);
        let limits = OfferLimits {
            max_bytes: sdp.len(),
        };
        assert!(parse_offer(&sdp, &limits).is_ok());
    }

    // ---- refusals: size, bytes, syntax -----------------------------------------------

    #[test]
    fn one_byte_over_max_bytes_is_refused_unparsed() {
        let sdp = crlf(GOOD_OFFER);
        let limits = OfferLimits {
            max_bytes: sdp.len() - 1,
        };
        assert_eq!(
            parse_offer(&sdp, &limits),
            Err(OfferError::TooLarge {
                len: sdp.len(),
                max: sdp.len() - 1
            })
        );
    }

    #[test]
    fn one_megabyte_is_refused() {
        let huge = "a".repeat(1 << 20);
        assert!(matches!(
            parse_offer(&huge, &OfferLimits::default()),
            Err(OfferError::TooLarge {
                len: 1_048_576,
                max: 16_384
            })
        ));
    }

    #[test]
    fn empty_string_is_refused() {
        assert_eq!(
            parse_offer("", &OfferLimits::default()),
            Err(OfferError::Empty)
        );
    }

    #[test]
    fn whitespace_only_is_refused() {
        assert_eq!(
            parse_offer(" \r\n\n\t", &OfferLimits::default()),
            Err(OfferError::Empty)
        );
    }

    #[test]
    fn text_that_is_not_sdp_is_refused() {
        let e = refusal("this is a perfectly friendly sentence and not an SDP offer at all");
        assert!(matches!(e, OfferError::Syntax(_)), "{e}");
    }

    #[test]
    fn garbage_lines_are_refused() {
        let e = refusal("v=0\n@@@@\nzzz=====\nm=\n\u{7f}");
        assert!(matches!(e, OfferError::Byte { byte: 0x7f, .. }), "{e}");
        let e = refusal(&format!("{GOOD_OFFER}garbage line\n"));
        assert!(matches!(e, OfferError::Syntax(_)), "{e}");
    }

    #[test]
    fn non_ascii_is_refused() {
        let e = refusal(&edit("s=-", "s=caf\u{e9}"));
        assert!(matches!(e, OfferError::Byte { byte: 0xc3, .. }), "{e}");
    }

    #[test]
    fn lone_carriage_return_is_refused() {
        let sdp = crlf(GOOD_OFFER).replace("minptime=10;", "minptime=10;\ra=crypto:1;");
        let e = parse_offer(&sdp, &OfferLimits::default()).unwrap_err();
        assert!(matches!(e, OfferError::Byte { byte: b'\r', .. }), "{e}");
    }

    #[test]
    fn k_line_is_refused() {
        let e = refusal(&edit("t=0 0\n", "t=0 0\nk=clear:secret\n"));
        assert!(matches!(e, OfferError::Syntax(_)), "{e}");
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let e = refusal(&edit(
            "a=mid:1\n",
            "a=mid:1\na=rtpmap:notanumber VP8/90000\n",
        ));
        let line = GOOD_OFFER.lines().position(|l| l == "a=mid:1").unwrap() + 2;
        let want = format!("offer is not valid SDP: line {line}: Integer parsing error: ");
        assert!(e.to_string().starts_with(&want), "{e}");
    }

    // ---- refusals: keying, fingerprint, setup, ICE ----------------------------------

    #[test]
    fn crypto_in_a_section_is_refused() {
        let e = refusal(&edit(
            "a=mid:0\n",
            "a=mid:0\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz\n",
        ));
        assert_eq!(e, OfferError::Crypto);
        assert_eq!(
            e.to_string(),
            "offer has a=crypto: SDES keying is not allowed"
        );
    }

    #[test]
    fn crypto_at_session_level_is_refused() {
        let e = refusal(&edit(
            "t=0 0\n",
            "t=0 0\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:x\n",
        ));
        assert_eq!(e, OfferError::Crypto);
    }

    #[test]
    fn key_mgmt_is_refused() {
        let e = refusal(&edit(
            "a=mid:0\n",
            "a=mid:0\na=key-mgmt:mikey AQAFgM0XflABAAAAAAAAAAAAAAsAyO\n",
        ));
        assert_eq!(e, OfferError::KeyMgmt);
    }

    #[test]
    fn missing_fingerprint_is_refused() {
        assert_eq!(
            refusal(&edited(FP_LINE, "", 2)),
            OfferError::Missing("fingerprint")
        );
    }

    #[test]
    fn sha1_fingerprint_is_refused() {
        let sha1 =
            "a=fingerprint:sha-1 4A:AD:B9:B1:3F:82:18:3B:54:02:12:DF:3E:5D:49:6B:19:E5:7C:AB\n";
        let e = refusal(&edited(FP_LINE, sha1, 2));
        assert_eq!(e, OfferError::FingerprintHash("sha-1".into()));
        assert_eq!(
            e.to_string(),
            "offer has a=fingerprint with hash function sha-1; only sha-256 is accepted"
        );
    }

    #[test]
    fn sha1_beside_sha256_is_refused() {
        let sha1 =
            "a=fingerprint:sha-1 4A:AD:B9:B1:3F:82:18:3B:54:02:12:DF:3E:5D:49:6B:19:E5:7C:AB\n";
        let e = refusal(&edit("a=mid:1\n", &format!("a=mid:1\n{sha1}")));
        assert_eq!(e, OfferError::FingerprintHash("sha-1".into()));
    }

    #[test]
    fn unknown_hash_function_is_refused_not_ignored() {
        // webrtc-sdp drops an md5 fingerprint as unsupported; it must not vanish.
        let md5 = "a=fingerprint:md5 4A:AD:B9:B1:3F:82:18:3B:54:02:12:DF:3E:5D:49:6B\n";
        let e = refusal(&edit("a=mid:1\n", &format!("a=mid:1\n{md5}")));
        assert_eq!(e, OfferError::FingerprintHash("md5".into()));
    }

    #[test]
    fn different_fingerprints_are_refused() {
        let other = GOOD_OFFER.replacen(
            OFFER_FINGERPRINT,
            &OFFER_FINGERPRINT.replace("9C:95", "9C:96"),
            1,
        );
        assert_eq!(refusal(&other), OfferError::Conflicting("fingerprint"));
    }

    #[test]
    fn short_fingerprint_is_refused() {
        let e = refusal(&GOOD_OFFER.replace(":69:85\n", ":69\n"));
        assert!(matches!(e, OfferError::Syntax(_)), "{e}");
    }

    #[test]
    fn setup_passive_is_refused() {
        assert_eq!(
            refusal(&edit(
                "a=setup:actpass\na=mid:1",
                "a=setup:passive\na=mid:1"
            )),
            OfferError::Setup("passive")
        );
    }

    #[test]
    fn setup_holdconn_is_refused() {
        assert_eq!(
            refusal(&edited("a=setup:actpass", "a=setup:holdconn", 2)),
            OfferError::Setup("holdconn")
        );
    }

    #[test]
    fn missing_setup_is_refused() {
        assert_eq!(
            refusal(&edited("a=setup:actpass\n", "", 2)),
            OfferError::Missing("setup")
        );
    }

    #[test]
    fn ice_lite_offer_is_refused() {
        assert_eq!(
            refusal(&edit("t=0 0\n", "t=0 0\na=ice-lite\n")),
            OfferError::IceLite
        );
    }

    #[test]
    fn missing_ufrag_is_refused() {
        assert_eq!(
            refusal(&edited("a=ice-ufrag:pZ9q\n", "", 2)),
            OfferError::Missing("ice-ufrag")
        );
    }

    #[test]
    fn missing_pwd_is_refused() {
        assert_eq!(
            refusal(&edited("a=ice-pwd:Jc2v/NdhQ8uGkR3xw+Tm5bYe\n", "", 2)),
            OfferError::Missing("ice-pwd")
        );
    }

    #[test]
    fn different_ufrags_are_refused() {
        let sdp = GOOD_OFFER.replacen("a=ice-ufrag:pZ9q", "a=ice-ufrag:pZ9r", 1);
        assert_eq!(refusal(&sdp), OfferError::Conflicting("ice-ufrag"));
    }

    #[test]
    fn ufrag_with_bad_chars_is_refused() {
        let e = refusal(&edited("a=ice-ufrag:pZ9q", "a=ice-ufrag:pZ9-q", 2));
        assert!(matches!(e, OfferError::BadUfrag(_)), "{e}");
        assert!(e.to_string().contains("0x2d"), "{e}");
    }

    #[test]
    fn short_ufrag_is_refused() {
        let e = refusal(&edited("a=ice-ufrag:pZ9q", "a=ice-ufrag:pZ9", 2));
        assert!(matches!(e, OfferError::BadUfrag(_)), "{e}");
    }

    #[test]
    fn short_pwd_is_refused_without_quoting_it() {
        let e = refusal(&edited("Jc2v/NdhQ8uGkR3xw+Tm5bYe", "Jc2v/NdhQ8uGkR3x", 2));
        assert!(matches!(e, OfferError::BadPwd(_)), "{e}");
        assert!(!e.to_string().contains("Jc2v"), "{e}");
    }

    // ---- refusals: sections, BUNDLE, mids, directions, formats ----------------------

    #[test]
    fn missing_bundle_is_refused() {
        assert_eq!(
            refusal(&edit("a=group:BUNDLE 0 1\n", "")),
            OfferError::BundleCount(0)
        );
    }

    #[test]
    fn two_bundle_groups_are_refused() {
        let e = refusal(&edit(
            "a=group:BUNDLE 0 1\n",
            "a=group:BUNDLE 0\na=group:BUNDLE 1\n",
        ));
        assert_eq!(e, OfferError::BundleCount(2));
    }

    #[test]
    fn bundle_without_both_mids_is_refused() {
        assert_eq!(
            refusal(&edit("a=group:BUNDLE 0 1", "a=group:BUNDLE 0")),
            OfferError::BundleMids
        );
        assert_eq!(
            refusal(&edit("a=group:BUNDLE 0 1", "a=group:BUNDLE 0 1 2")),
            OfferError::BundleMids
        );
        assert_eq!(
            refusal(&edit("a=group:BUNDLE 0 1", "a=group:BUNDLE 0 0")),
            OfferError::BundleMids
        );
    }

    #[test]
    fn lip_sync_group_is_ignored() {
        offer_of(&edit(
            "a=group:BUNDLE 0 1\n",
            "a=group:BUNDLE 0 1\na=group:LS 0 1\n",
        ));
    }

    #[test]
    fn three_m_lines_are_refused() {
        let data = "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\nc=IN IP4 0.0.0.0\na=mid:2\na=sctp-port:5000\n";
        let e = refusal(&format!("{GOOD_OFFER}{data}"));
        assert_eq!(
            e,
            OfferError::Sections {
                audio: 1,
                video: 1,
                other: 1
            }
        );
        assert_eq!(
            e.to_string(),
            "offer has 1 m=audio, 1 m=video and 1 other m-lines; exactly one m=audio and one m=video are required"
        );
    }

    #[test]
    fn audio_only_is_refused() {
        let (head, _) = GOOD_OFFER.split_once("m=video").unwrap();
        let e = refusal(&head.replace("BUNDLE 0 1", "BUNDLE 0"));
        assert_eq!(
            e,
            OfferError::Sections {
                audio: 1,
                video: 0,
                other: 0
            }
        );
    }

    #[test]
    fn two_audio_sections_are_refused() {
        let e = refusal(&edit("m=video", "m=audio"));
        assert_eq!(
            e,
            OfferError::Sections {
                audio: 2,
                video: 0,
                other: 0
            }
        );
    }

    #[test]
    fn plain_rtp_protocol_is_refused() {
        let e = refusal(&edit("m=video 9 UDP/TLS/RTP/SAVPF", "m=video 9 RTP/AVP"));
        assert_eq!(
            e,
            OfferError::Protocol {
                kind: StreamKind::Video,
                proto: "RTP/AVP".into()
            }
        );
    }

    #[test]
    fn unknown_protocol_is_refused_not_dropped() {
        // webrtc-sdp drops such an m-line, which would glue its attributes to audio.
        let e = refusal(&edit("m=video 9 UDP/TLS/RTP/SAVPF", "m=video 9 UDP/FOO"));
        let line = GOOD_OFFER
            .lines()
            .position(|l| l.starts_with("m=video"))
            .unwrap()
            + 1;
        assert_eq!(e, OfferError::MediaLine { line });
    }

    #[test]
    fn port_zero_without_bundle_only_is_refused() {
        assert_eq!(
            refusal(&edit("m=video 9 ", "m=video 0 ")),
            OfferError::PortZero {
                kind: StreamKind::Video
            }
        );
    }

    #[test]
    fn missing_mid_is_refused() {
        let e = refusal(&edit("a=mid:1\n", ""));
        assert_eq!(
            e,
            OfferError::MissingSectionAttribute {
                kind: StreamKind::Video,
                attr: "mid"
            }
        );
    }

    #[test]
    fn two_mids_in_a_section_are_refused() {
        let e = refusal(&edit("a=mid:1\n", "a=mid:1\na=mid:2\n"));
        assert_eq!(
            e,
            OfferError::RepeatedSectionAttribute {
                kind: StreamKind::Video,
                attr: "mid"
            }
        );
    }

    #[test]
    fn same_mid_twice_is_refused() {
        let e = refusal(&edit("a=mid:1\n", "a=mid:0\n").replace("BUNDLE 0 1", "BUNDLE 0 0"));
        assert_eq!(e, OfferError::SameMid("0".into()));
    }

    #[test]
    fn bad_mid_is_refused() {
        let long = "m".repeat(33);
        let e = refusal(
            &edit("a=mid:1\n", &format!("a=mid:{long}\n"))
                .replace("BUNDLE 0 1", &format!("BUNDLE 0 {long}")),
        );
        assert_eq!(
            e,
            OfferError::BadMid {
                kind: StreamKind::Video
            }
        );
        let e = refusal(&edit("a=mid:1\n", "a=mid:a(b\n").replace("BUNDLE 0 1", "BUNDLE 0 a(b"));
        assert_eq!(
            e,
            OfferError::BadMid {
                kind: StreamKind::Video
            }
        );
    }

    #[test]
    fn missing_rtcp_mux_is_refused() {
        let e = refusal(&edit("a=rtcp-mux\na=rtpmap:111", "a=rtpmap:111"));
        assert_eq!(
            e,
            OfferError::MissingSectionAttribute {
                kind: StreamKind::Audio,
                attr: "rtcp-mux"
            }
        );
    }

    #[test]
    fn inactive_section_is_refused() {
        let e = refusal(&GOOD_OFFER.replacen("a=sendrecv", "a=inactive", 1));
        assert_eq!(
            e,
            OfferError::Inactive {
                kind: StreamKind::Audio
            }
        );
    }

    #[test]
    fn session_level_inactive_is_refused() {
        let e = refusal(&edit("t=0 0\n", "t=0 0\na=inactive\n"));
        assert_eq!(e, OfferError::SessionInactive);
    }

    #[test]
    fn two_directions_in_a_section_are_refused() {
        let e = refusal(&GOOD_OFFER.replacen("a=sendrecv", "a=sendrecv\na=recvonly", 1));
        assert_eq!(
            e,
            OfferError::RepeatedSectionAttribute {
                kind: StreamKind::Audio,
                attr: "direction"
            }
        );
    }

    #[test]
    fn m_line_without_formats_is_refused() {
        let e = refusal(&edit(
            "m=video 9 UDP/TLS/RTP/SAVPF 96",
            "m=video 9 UDP/TLS/RTP/SAVPF",
        ));
        assert!(matches!(e, OfferError::Syntax(_)), "{e}");
    }

    #[test]
    fn payload_type_above_127_is_refused() {
        let e = refusal(&edit("UDP/TLS/RTP/SAVPF 96", "UDP/TLS/RTP/SAVPF 96 300"));
        assert_eq!(
            e,
            OfferError::PayloadType {
                kind: StreamKind::Video,
                pt: 300
            }
        );
    }

    #[test]
    fn payload_type_listed_twice_is_refused() {
        let e = refusal(&edit("UDP/TLS/RTP/SAVPF 96", "UDP/TLS/RTP/SAVPF 96 96"));
        assert_eq!(
            e,
            OfferError::RepeatedPayloadType {
                kind: StreamKind::Video,
                pt: 96,
                what: "listed"
            }
        );
    }

    #[test]
    fn payload_type_mapped_twice_is_refused() {
        let e = refusal(&edit(
            "a=rtpmap:96 VP8/90000\n",
            "a=rtpmap:96 VP8/90000\na=rtpmap:96 VP9/90000\n",
        ));
        assert_eq!(
            e,
            OfferError::RepeatedPayloadType {
                kind: StreamKind::Video,
                pt: 96,
                what: "mapped"
            }
        );
    }

    // ---- refusals: SSRCs --------------------------------------------------------------

    /// Simulcast with RTX as browsers declare it: each layer's RTX SSRC in an FID group.
    /// The RTX SSRCs are no streams (RTX is not answered), and do not count.
    #[test]
    fn fid_groups_name_rtx_ssrcs_that_are_no_streams() {
        let rtx = "a=ssrc-group:SIM 2001 2002\n\
                   a=ssrc-group:FID 2001 2011\na=ssrc:2011 cname:f2Lq8dWm\n\
                   a=ssrc-group:FID 2002 2012\na=ssrc:2012 cname:f2Lq8dWm";
        let o = offer_of(&edit("a=ssrc-group:SIM 2001 2002", rtx));
        assert_eq!(o.streams, good_streams());
    }

    #[test]
    fn fid_groups_that_pair_no_media_ssrc_are_refused() {
        let with = |groups: &str| {
            refusal(&edit(
                "a=ssrc-group:SIM 2001 2002",
                &format!("a=ssrc-group:SIM 2001 2002\na=ssrc:2011 cname:x\n{groups}"),
            ))
        };
        let fid = |s: &str| OfferError::FidGroup(s.into());
        // Not two SSRCs; one SSRC twice; an SSRC no a=ssrc line declares.
        assert_eq!(with("a=ssrc-group:FID 2001"), fid("2001"));
        assert_eq!(
            with("a=ssrc-group:FID 2001 2011 2002"),
            fid("2001 2011 2002")
        );
        assert_eq!(with("a=ssrc-group:FID 2001 2001"), fid("2001 2001"));
        assert_eq!(with("a=ssrc-group:FID 2001 2099"), fid("2001 2099"));
        // An SSRC in two groups: two RTX SSRCs for one, or a chain.
        let twice = "a=ssrc-group:FID 2001 2011\na=ssrc-group:FID 2001 2002";
        assert_eq!(with(twice), fid("2001 2002"));
        let chain = "a=ssrc-group:FID 2001 2011\na=ssrc-group:FID 2011 2002";
        assert_eq!(with(chain), fid("2011 2002"));
        // A simulcast layer named as another's RTX is then no layer.
        assert_eq!(
            with("a=ssrc-group:FID 2011 2002"),
            OfferError::SimUndeclared(Ssrc(2002))
        );
        // An RTX SSRC is checked as any: not the relay's, not the audio stream's.
        let relay = format!(
            "a=ssrc:{0} cname:x\na=ssrc-group:FID 2001 {0}",
            Ssrc::RELAY.0
        );
        assert_eq!(with(&relay), OfferError::RelaySsrc(Ssrc::RELAY));
        let audio = "a=ssrc:1001 cname:x\na=ssrc-group:FID 2001 1001\na=ssrc-group:FID 2002 2011";
        assert_eq!(with(audio), OfferError::SsrcInBothSections(Ssrc(1001)));
        // Audio has no RTX.
        let e = refusal(&edit(
            "a=ssrc:1001 cname:f2Lq8dWm\n",
            "a=ssrc:1001 cname:f2Lq8dWm\na=ssrc:1002 cname:x\na=ssrc-group:FID 1001 1002\n",
        ));
        assert_eq!(
            e,
            OfferError::SsrcGroup {
                kind: StreamKind::Audio,
                semantics: "FID".into()
            }
        );
    }

    /// RTX is left out of the answer, its rtpmap, fmtp and rtcp-fb with it; an m-line
    /// of RTX alone has nothing left to answer.
    #[test]
    fn rtx_is_not_answered() {
        let o = offer_of(&edit(
            "m=video 9 UDP/TLS/RTP/SAVPF 96\n",
            "m=video 9 UDP/TLS/RTP/SAVPF 96 97\n",
        ).replace(
            "a=rtpmap:96 VP8/90000\n",
            "a=rtpmap:96 VP8/90000\na=rtpmap:97 RTX/90000\na=fmtp:97 apt=96\na=rtcp-fb:97 nack\n",
        ));
        let pts: Vec<u8> = o.sections[1].codecs.iter().map(|c| c.pt).collect();
        assert_eq!(pts, [96]);
        let answer = answer_with(&o, &["192.0.2.1:3478"], 1);
        assert!(
            answer.contains("m=video 3478 UDP/TLS/RTP/SAVPF 96\r\n"),
            "{answer}"
        );
        assert!(!answer.contains(":97 "), "{answer}");

        let e = refusal(
            &edit(
                "m=video 9 UDP/TLS/RTP/SAVPF 96\n",
                "m=video 9 UDP/TLS/RTP/SAVPF 97\n",
            )
            .replace("a=rtpmap:96 VP8/90000\n", "a=rtpmap:97 rtx/90000\n"),
        );
        assert_eq!(
            e,
            OfferError::NoFormats {
                kind: StreamKind::Video
            }
        );
    }

    #[test]
    fn unknown_ssrc_group_semantics_is_refused_not_ignored() {
        let e = refusal(&edit(
            "a=ssrc-group:SIM 2001 2002",
            "a=ssrc-group:SIM 2001 2002\na=ssrc-group:XRTX 2001 2002",
        ));
        assert_eq!(e, OfferError::UnknownSsrcGroup("XRTX".into()));
    }

    #[test]
    fn sim_group_in_audio_is_refused() {
        let e = refusal(&edit(
            "a=ssrc:1001 cname:f2Lq8dWm\n",
            "a=ssrc:1001 cname:f2Lq8dWm\na=ssrc-group:SIM 1001 1002\n",
        ));
        assert_eq!(
            e,
            OfferError::SsrcGroup {
                kind: StreamKind::Audio,
                semantics: "SIM".into()
            }
        );
    }

    #[test]
    fn sim_with_undeclared_ssrc_is_refused() {
        let e = refusal(&edit("SIM 2001 2002", "SIM 2001 2003"));
        assert_eq!(e, OfferError::SimUndeclared(Ssrc(2003)));
    }

    #[test]
    fn sim_with_three_ssrcs_is_refused() {
        let e = refusal(&edit("SIM 2001 2002", "SIM 2001 2002 2003"));
        assert_eq!(e, OfferError::SimSize);
        assert_eq!(
            e.to_string(),
            "video m-line: a=ssrc-group:SIM needs exactly two SSRCs (thumbnail, full)"
        );
    }

    #[test]
    fn sim_naming_one_ssrc_twice_is_refused() {
        assert_eq!(
            refusal(&edit("SIM 2001 2002", "SIM 2001 2001")),
            OfferError::SimSize
        );
    }

    #[test]
    fn two_sim_groups_are_refused() {
        let e = refusal(&edit(
            "a=ssrc-group:SIM 2001 2002\n",
            "a=ssrc-group:SIM 2001 2002\na=ssrc-group:SIM 2001 2002\n",
        ));
        assert_eq!(e, OfferError::SimRepeated);
    }

    #[test]
    fn two_video_ssrcs_without_sim_are_refused() {
        assert_eq!(
            refusal(&edit("a=ssrc-group:SIM 2001 2002\n", "")),
            OfferError::SimMissing
        );
    }

    #[test]
    fn three_video_ssrcs_are_refused() {
        let e = refusal(&edit(
            "a=ssrc:2002 cname:f2Lq8dWm\n",
            "a=ssrc:2002 cname:f2Lq8dWm\na=ssrc:2003 cname:f2Lq8dWm\n",
        ));
        assert_eq!(
            e,
            OfferError::TooManySsrcs {
                kind: StreamKind::Video,
                count: 3,
                max: 2
            }
        );
    }

    #[test]
    fn two_audio_ssrcs_are_refused() {
        let e = refusal(&edit(
            "a=ssrc:1001 cname:f2Lq8dWm\n",
            "a=ssrc:1001 cname:f2Lq8dWm\na=ssrc:1002 cname:f2Lq8dWm\n",
        ));
        assert_eq!(
            e,
            OfferError::TooManySsrcs {
                kind: StreamKind::Audio,
                count: 2,
                max: 1
            }
        );
    }

    #[test]
    fn ssrc_in_both_sections_is_refused() {
        let e = refusal(&edited("1001", "2001", 2));
        assert_eq!(e, OfferError::SsrcInBothSections(Ssrc(2001)));
    }

    #[test]
    fn the_relays_own_ssrc_is_refused() {
        let e = refusal(&edited("2001", "185720784", 3));
        assert_eq!(e, OfferError::RelaySsrc(Ssrc::RELAY));
    }

    // ---- refusals: extmaps -------------------------------------------------------------

    #[test]
    fn one_id_for_two_uris_is_refused() {
        let e = refusal(&edit("a=extmap:5 urn", "a=extmap:1 urn"));
        assert_eq!(e, OfferError::ExtmapIdClash(1));
    }

    #[test]
    fn one_uri_under_two_ids_is_refused() {
        // Video's transport-cc under id 7 while audio's is under 3.
        let i = GOOD_OFFER.rfind("a=extmap:3 http").unwrap();
        let sdp = format!("{}a=extmap:7{}", &GOOD_OFFER[..i], &GOOD_OFFER[i + 10..]);
        assert_eq!(refusal(&sdp), OfferError::ExtmapUriClash(TCC.into()));
    }

    #[test]
    fn extmap_id_15_needs_allow_mixed() {
        let e = refusal(&edit("a=extmap:5 urn", "a=extmap:15 urn"));
        assert_eq!(e, OfferError::ExtmapIdRange { id: 15, max: 14 });
        assert_eq!(
            e.to_string(),
            "a=extmap id 15 is outside 1..=14 (ids above 14 need a=extmap-allow-mixed)"
        );
    }

    #[test]
    fn extmap_id_0_is_refused() {
        assert_eq!(
            refusal(&edit("a=extmap:5 urn", "a=extmap:0 urn")),
            OfferError::ExtmapIdRange { id: 0, max: 14 }
        );
    }

    #[test]
    fn extmap_id_256_is_refused_even_mixed() {
        let sdp = edit("a=extmap:5 urn", "a=extmap:256 urn")
            .replace("a=group:BUNDLE", "a=extmap-allow-mixed\na=group:BUNDLE");
        assert_eq!(
            refusal(&sdp),
            OfferError::ExtmapIdRange { id: 256, max: 255 }
        );
    }

    #[test]
    fn extmap_repeated_in_a_section_is_refused() {
        let e = refusal(&edit(
            "a=extmap:5 urn:ietf:params:rtp-hdrext:framemarking\n",
            "a=extmap:5 urn:ietf:params:rtp-hdrext:framemarking\na=extmap:5 urn:ietf:params:rtp-hdrext:framemarking\n",
        ));
        assert_eq!(
            e,
            OfferError::ExtmapRepeated {
                kind: StreamKind::Video,
                id: 5
            }
        );
    }
}
