//! Entry points for the cargo-fuzz targets in `fuzz/`: what other people and the
//! network hand the participant library. A panic or failed assertion inside is a
//! finding. Hidden: not part of the crate's API.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use blindfold_relay::dtls::{
    DtlsCert, DtlsConfig, DtlsEvent, DtlsSession, DtlsSettings, Fingerprint,
};
use blindfold_relay::id::{ExtId, KeyIndex, Pt, RtpTime, Ssrc};
use blindfold_relay::srtp::{MasterKey, SrtpContext, SrtpProfile};
use blindfold_relay::wire::stun::{
    AttrType, Class, Method, StunMessage, StunWriter, TransactionId,
};

use crate::conference::keys::{Accepted, KeyEvent, Roster};
use crate::conference::member_ended;
use crate::ogg::OggOpusReader;
use crate::sdp::Answer;
use crate::{
    Event, IceCredentials, MediaKind, OwnSsrcs, Participant, ParticipantConfig, RemoteStream,
    SenderId,
};

/// Our own SSRCs in [`key_events`]: a declaration naming one collides.
const OWN: OwnSsrcs = OwnSsrcs {
    audio: Ssrc(1),
    thumbnail: Ssrc(2),
    full: Ssrc(3),
};

/// The SFU in [`key_events`], and our call there.
const SFU: &str = "@sfu:fuzz";
const OUR_CALL: &str = "1733094000123-alice";

/// Key events from other members (`org.matrix.msc2359.keys` content, written by whoever
/// is in the room), one per line: the line's first byte picks the sender among four
/// users, the rest is the content's JSON. Each is read ([`KeyEvent::from_content`]);
/// one that reads writes back to the same event, and goes to a [`Roster`], whose
/// members must then never share an SSRC or use one of ours. A first byte with its
/// high bit set makes the line a whole event in our DM instead (written by the SFU, or
/// by whoever else is there): an `org.matrix.msc2359.call.member_ended` from [`SFU`]
/// for [`OUR_CALL`] ends the named member's call if it is its current one, and the
/// roster must then no longer hold it. Returns how many key events the roster accepted
/// plus how many calls the SFU's news ended.
pub fn key_events(data: &[u8]) -> usize {
    let mut roster = Roster::default();
    let mut accepted = 0;
    for line in data.split(|&b| b == b'\n') {
        let Some((&who, json)) = line.split_first() else {
            continue;
        };
        let Ok(content) = serde_json::from_slice::<serde_json::Value>(json) else {
            continue;
        };
        if who & 0x80 != 0 {
            if let Some((member, call)) = member_ended(&content, SFU, OUR_CALL)
                && let Some(s) = roster.end_call(&member.user_id, &member.device_id, &call)
            {
                assert!(roster.member(s).is_none(), "{member:?} is still a member");
                accepted += 1;
            }
            continue;
        }
        let Ok(ev) = KeyEvent::from_content(&content) else {
            continue;
        };
        assert_eq!(KeyEvent::from_content(&ev.to_content()).as_ref(), Ok(&ev));
        let remote = ev.remote_streams();
        assert_eq!(remote.len(), ev.streams.len());
        let user = format!("@u{}:fuzz", who % 4);
        let verdict = roster.accept(&user, &ev, OWN);
        accepted += usize::from(verdict.is_ok());
        if let Ok(Accepted::New(s) | Accepted::Update(s) | Accepted::Replaced { new: s, .. }) =
            verdict
        {
            let m = roster.member(s).expect("an accepted sender is a member");
            assert_eq!(
                (m.user_id.as_str(), &m.streams),
                (user.as_str(), &ev.streams)
            );
        }
        let mut seen = vec![OWN.audio, OWN.thumbnail, OWN.full];
        for m in roster.members() {
            for s in &m.streams {
                assert!(!seen.contains(&s.ssrc), "{:?} declared twice", s.ssrc);
                seen.push(s.ssrc);
            }
        }
    }
    accepted
}

/// The SFU's SDP answer (it arrives over Matrix, in the DM): read, then, as
/// [`crate::conference::Conference::join`] does, a participant set up from it (the
/// relay's ICE credentials and fingerprint, its first candidate) starts its ICE checks,
/// whatever the credentials hold. Returns how many datagrams it sent the relay.
pub fn sdp_answer(data: &[u8]) -> usize {
    let sdp = String::from_utf8_lossy(data);
    let Ok(answer) = Answer::parse(&sdp) else {
        return 0;
    };
    let Some(&relay) = answer.candidates.first() else {
        return 0;
    };
    let now = shared().2;
    let Ok(mut p) = Participant::new(calling(answer.ice, relay, answer.fingerprint), now) else {
        return 0;
    };
    let mut sent = 0;
    for at in [now, now + Duration::from_secs(1)] {
        p.handle_timeout(at);
        while let Some(t) = p.poll_transmit() {
            assert_eq!(t.dest, relay);
            sent += 1;
        }
    }
    sent
}

/// Where the participant in [`participant`] calls the relay.
const RELAY: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 5000);
/// The relay's ICE password there, which its STUN answers are signed with.
const RELAY_PWD: &str = "relay-password-0123456789";

/// Datagrams from the network to a participant calling the relay, as records of an
/// operation byte and a length byte, then that many bytes (the last record takes what
/// is left). The operation's low two bits:
///
/// - 0: the bytes, as a datagram from the relay's address;
/// - 1: the bytes, from another address (what anyone can send to its port);
/// - 2: a Binding answer from the relay to the participant's last request, signed with
///   the relay's password (so that it passes the integrity check): an error response if
///   bit 2 is set, else a success; its attributes are the bytes, read as type (2
///   bytes), length (1) and value;
/// - 3: time passes, the length byte × 10 ms.
///
/// Whatever it is handed, the participant sends only to the relay. Returns how many
/// datagrams it took (not dropped).
pub fn participant(data: &[u8]) -> usize {
    let mut now = shared().2;
    let relay_ice = IceCredentials {
        ufrag: "relayufrg".into(),
        pwd: RELAY_PWD.into(),
    };
    let cfg = calling(relay_ice, RELAY, shared().0.fingerprint());
    let mut p = Participant::new(cfg, now).expect("a participant");
    let mut last_request = None;
    let drain = |p: &mut Participant, last: &mut Option<TransactionId>| {
        while let Some(t) = p.poll_transmit() {
            assert_eq!(t.dest, RELAY, "the participant sent elsewhere");
            if let Ok(m) = StunMessage::parse(&t.bytes)
                && m.class() == Class::Request
            {
                *last = Some(m.transaction_id());
            }
        }
        while p.poll_event().is_some() {}
    };
    drain(&mut p, &mut last_request);
    let mut taken = 0;
    let mut rest = data;
    while let [op, len, tail @ ..] = rest {
        let (body, next) = tail.split_at(usize::from(*len).min(tail.len()));
        rest = next;
        let delivered = match op & 3 {
            0 => Some((RELAY, body.to_vec())),
            1 => Some((
                SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 5000),
                body.to_vec(),
            )),
            2 => last_request.map(|tid| (RELAY, stun_answer(tid, op & 4 != 0, body))),
            _ => {
                now += Duration::from_millis(10 * u64::from(*len));
                p.handle_timeout(now);
                None
            }
        };
        if let Some((from, mut datagram)) = delivered {
            taken += usize::from(p.handle_datagram(now, from, &mut datagram).is_ok());
        }
        drain(&mut p, &mut last_request);
    }
    taken
}

/// The transport-wide sequence number's and frame marking's ids in [`connected`].
const TCC: ExtId = ExtId(5);
const FRAME_MARKING: ExtId = ExtId(2);
/// The other member in [`connected`] (whose keys the participant holds) and its SSRCs.
const SENDER: SenderId = SenderId(9);
const SENDER_SSRCS: [Ssrc; 3] = [Ssrc(11), Ssrc(12), Ssrc(13)];
/// Its master key, and the profile of every end-to-end key here.
const SENDER_KEY: [u8; 28] = [9; 28];
const E2E: SrtpProfile = SrtpProfile::AeadAes128Gcm;

/// What reaches a participant once it is connected (ICE and DTLS done with a relay
/// that shares its certificate), from a relay that may send anything in its SRTCP and
/// another member who may send anything under the keys it published, as records of an
/// operation byte and a length byte, then that many bytes (the last record takes what
/// is left). The operation's low three bits:
///
/// - 0: the bytes, as an RTCP compound in the relay's SRTCP (so that it authenticates);
/// - 1: the bytes, as an RTP packet the other member protected with its key, on the
///   SSRC that the operation's bits 3–4 pick among its three and one nobody declared
///   (packets of 12 bytes or more);
/// - 2: the bytes, as a datagram from the relay's address;
/// - 3: time passes, the length byte × 10 ms;
/// - 4: the participant sends the bytes as audio, with a transport-wide number;
/// - 5: the participant sends the bytes as full-resolution video, frame-marked with
///   the operation's high bits;
/// - 6: with bit 3 clear, the participant connects again ([`Participant::reconnect`]),
///   and the relay takes its new handshake (the bytes are skipped); with bit 3 set,
///   the relay answers the last check the participant sent (a success, or with bit 4
///   an error), with the bytes as its attributes (type, length, value records, as
///   [`stun_answer`] takes them: a new XOR-MAPPED-ADDRESS, say), signed;
/// - 7: time passes, the length byte in ms.
///
/// Whatever it is handed, the participant sends only to the relay, and hands the
/// application media only on the SSRCs whose keys it holds. Returns how many datagrams
/// it took (not dropped).
pub fn connected(data: &[u8]) -> usize {
    let mut now = shared().2;
    let (mut p, mut relay_srtcp) = connect(now);
    let mut sender =
        SrtpContext::new(E2E, &SENDER_KEY, Some(KeyIndex(0))).expect("the sender's context");
    let mut taken = 0;
    let mut tcc_seq = 0u16;
    let mut last_check = None;
    let mut rest = data;
    while let [op, len, tail @ ..] = rest {
        let (body, next) = tail.split_at(usize::from(*len).min(tail.len()));
        rest = next;
        let delivered = match op & 7 {
            0 => protected(&mut relay_srtcp, true, body),
            1 if body.len() >= 12 => {
                let mut packet = body.to_vec();
                let ssrc = SENDER_SSRCS
                    .get(usize::from(op >> 3 & 3))
                    .map_or(99, |s| s.0);
                packet[8..12].copy_from_slice(&ssrc.to_be_bytes());
                protected(&mut sender, false, &packet)
            }
            2 => Some(body.to_vec()),
            4 => {
                tcc_seq = tcc_seq.wrapping_add(1);
                let seq = tcc_seq.to_be_bytes();
                let exts = [(TCC, &seq[..])];
                let ts = RtpTime(u32::from(tcc_seq) * 960);
                let _ = p.send_rtp(now, OWN.audio, Pt(111), false, ts, &exts, body);
                None
            }
            5 => {
                let marking = [op & 0xe0];
                let exts = [(FRAME_MARKING, &marking[..])];
                let _ = p.send_rtp(now, OWN.full, Pt(96), true, RtpTime(0), &exts, body);
                None
            }
            6 if op & 8 != 0 => last_check.map(|tid| stun_answer(tid, op & 0x10 != 0, body)),
            6 => {
                if p.reconnect(now).is_ok()
                    && let Some(out) = handshake(&mut p, now)
                {
                    relay_srtcp = out;
                }
                None
            }
            op => {
                let unit = if op == 3 { 10 } else { 1 };
                now += Duration::from_millis(unit * u64::from(*len));
                p.handle_timeout(now);
                None
            }
        };
        if let Some(mut datagram) = delivered {
            taken += usize::from(p.handle_datagram(now, RELAY, &mut datagram).is_ok());
        }
        drain_connected(&mut p, &mut last_check);
    }
    taken
}

/// `body` protected with `ctx`, as SRTCP or SRTP (none if it cannot be).
fn protected(ctx: &mut SrtpContext, rtcp: bool, body: &[u8]) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; body.len() + 64];
    buf[..body.len()].copy_from_slice(body);
    let n = match rtcp {
        true => ctx.protect_rtcp(&mut buf, body.len()),
        false => ctx.protect_rtp(&mut buf, body.len()),
    };
    buf.truncate(n.ok()?);
    Some(buf)
}

/// What the participant in [`connected`] sends and tells, checked; `last_check` is
/// the transaction of the last Binding request it sent.
fn drain_connected(p: &mut Participant, last_check: &mut Option<TransactionId>) {
    while let Some(t) = p.poll_transmit() {
        assert_eq!(t.dest, RELAY, "the participant sent elsewhere");
        if let Ok(m) = StunMessage::parse(&t.bytes)
            && m.class() == Class::Request
        {
            *last_check = Some(m.transaction_id());
        }
    }
    while let Some(e) = p.poll_event() {
        if let Event::Media(m) = e {
            assert!(
                m.sender == SENDER && SENDER_SSRCS.contains(&m.ssrc),
                "media on {:?} from {:?}",
                m.ssrc,
                m.sender
            );
        }
    }
}

/// A participant connected to a relay at [`RELAY`] (its Binding answered, the DTLS
/// handshake done with the shared certificate on both sides), holding [`SENDER`]'s key;
/// and the relay's outbound SRTCP context for it.
fn connect(now: Instant) -> (Participant, SrtpContext) {
    let cert = &shared().0;
    let relay_ice = IceCredentials {
        ufrag: "relayufrg".into(),
        pwd: RELAY_PWD.into(),
    };
    let mut cfg = calling(relay_ice, RELAY, cert.fingerprint());
    cfg.transport_cc = Some(TCC);
    cfg.frame_marking = Some(FRAME_MARKING);
    let mut p = Participant::new(cfg, now).expect("a participant");
    let streams = SENDER_SSRCS.map(|ssrc| RemoteStream {
        ssrc,
        kind: match ssrc == SENDER_SSRCS[0] {
            true => MediaKind::Audio,
            false => MediaKind::Video,
        },
    });
    p.install_remote_keys(SENDER, &streams, E2E, &[(KeyIndex(0), &SENDER_KEY)])
        .expect("the sender's keys");
    let relay_out = handshake(&mut p, now).expect("the participant connects");
    (p, relay_out)
}

/// Answers `p`'s ICE checks and runs the relay's side of its DTLS handshake (a new
/// server, with the shared certificate) until it is connected; the relay's outbound
/// SRTCP context for it, or none if it did not connect.
fn handshake(p: &mut Participant, now: Instant) -> Option<SrtpContext> {
    let (cert, dtls, _) = shared();
    let mut server = DtlsSession::server(dtls, cert, cert.fingerprint(), now);
    let mut keys = None;
    for _ in 0..20 {
        while let Some(t) = p.poll_transmit() {
            let mut back = Vec::new();
            match StunMessage::parse(&t.bytes) {
                Ok(m) => back.push(stun_answer(m.transaction_id(), false, &MAPPED)),
                Err(_) => {
                    let _ = server.handle_datagram(now, &t.bytes);
                    while let Some(d) = server.poll_transmit() {
                        back.push(d.to_vec());
                    }
                }
            }
            for mut d in back {
                let _ = p.handle_datagram(now, RELAY, &mut d);
            }
        }
        while let Some(e) = server.poll_event() {
            if let DtlsEvent::Connected(k) = e {
                keys = Some(k);
            }
        }
        while p.poll_event().is_some() {}
        if p.is_connected()
            && let Some(k) = &keys
        {
            let profile = crate::srtp_profile(k.profile).expect("an SRTP profile");
            let relay_out = SrtpContext::new(profile, k.server_master.key_salt(), None)
                .expect("the relay's SRTCP context");
            return Some(relay_out);
        }
    }
    None
}

/// The participant's address as the relay's Binding answer gives it
/// (XOR-MAPPED-ADDRESS of 127.0.0.1:5000, as [`stun_answer`]'s records).
const MAPPED: [u8; 11] = [
    0x00, 0x20, 8, 0x00, 0x01, 0x32, 0x9a, 0x5e, 0x12, 0xa4, 0x43,
];

/// A Binding response to `tid` with `attrs` (type, length, value records; a short last
/// one is cut), signed with [`RELAY_PWD`] and fingerprinted.
fn stun_answer(tid: TransactionId, error: bool, mut attrs: &[u8]) -> Vec<u8> {
    let class = match error {
        true => Class::ErrorResponse,
        false => Class::SuccessResponse,
    };
    let mut buf = vec![0u8; 1200];
    let Ok(mut w) = StunWriter::new(&mut buf, class, Method::Binding, tid) else {
        return Vec::new();
    };
    while let [t0, t1, len, tail @ ..] = attrs {
        let (value, next) = tail.split_at(usize::from(*len).min(tail.len()));
        attrs = next;
        if w.add_raw(AttrType(u16::from_be_bytes([*t0, *t1])), value)
            .is_err()
        {
            break;
        }
    }
    match w.finish_with_integrity_and_fingerprint(RELAY_PWD.as_bytes()) {
        Ok(n) => buf[..n].to_vec(),
        Err(_) => Vec::new(),
    }
}

/// A participant's configuration for calling the relay at `relay` with these ICE
/// credentials and certificate fingerprint (ours: fixed, and [`OWN`] SSRCs).
fn calling(
    relay_ice: IceCredentials,
    relay: SocketAddr,
    fingerprint: Fingerprint,
) -> ParticipantConfig {
    let (cert, dtls, _) = shared();
    let local = IceCredentials {
        ufrag: "fuzzufrg".into(),
        pwd: "fuzz-password-0123456789".into(),
    };
    let master = MasterKey::new(SrtpProfile::AeadAes128Gcm, &[7; 28]).expect("a GCM key");
    ParticipantConfig::new(
        local,
        relay_ice,
        relay,
        cert.clone(),
        fingerprint,
        dtls.clone(),
        OWN,
        master,
        1,
    )
}

/// One certificate and DTLS configuration for every input (generating them is most of
/// a run otherwise), and one start time, so that every run of an input is the same.
fn shared() -> &'static (DtlsCert, DtlsConfig, Instant) {
    static SHARED: OnceLock<(DtlsCert, DtlsConfig, Instant)> = OnceLock::new();
    SHARED.get_or_init(|| {
        (
            DtlsCert::generate().expect("a certificate"),
            DtlsConfig::new(DtlsSettings::default()).expect("a DTLS configuration"),
            // The participant reads no clock; this harness is its shell.
            #[allow(clippy::disallowed_methods)]
            Instant::now(),
        )
    })
}

/// An Ogg Opus file to send (`audio_file`): its headers, then every packet and the
/// summary, whatever the bytes. Returns how many packets (or packet errors) it read.
pub fn ogg(data: &[u8]) -> usize {
    let Ok(reader) = OggOpusReader::from_bytes(data.to_vec()) else {
        return 0;
    };
    let channels = reader.head().channels;
    assert!(channels > 0, "a head with no channel");
    let again = OggOpusReader::from_bytes(data.to_vec()).expect("read once, read again");
    let packets = again.count();
    if let Ok(summary) = reader.summarize() {
        assert_eq!(summary.packets, packets as u64);
    }
    packets
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What each of `target`'s committed seeds (`fuzz/corpus/<target>/seed-*`) gives.
    fn seeds(target: &str, run: fn(&[u8]) -> usize) -> Vec<usize> {
        let dir = format!("{}/../fuzz/corpus/{target}", env!("CARGO_MANIFEST_DIR"));
        let mut out: Vec<usize> = std::fs::read_dir(&dir)
            .expect("the committed seeds")
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with("seed-"))
            .map(|e| run(&std::fs::read(e.path()).unwrap()))
            .collect();
        out.sort_unstable();
        out
    }

    #[test]
    fn the_committed_seeds_reach_what_each_target_checks() {
        // Four key-event seeds: one event; one, refused from another member, then its
        // hangup; one, its new call, and a hangup of a call nobody knows; one, and the
        // SFU's news that its call ended.
        assert_eq!(seeds("key_events", key_events), [1, 2, 2, 3]);
        // The answer (CRLF and LF): a participant that sends its ICE checks.
        assert!(seeds("sdp_answer", sdp_answer).iter().all(|&n| n >= 2));
        // Garbage from anywhere, then the relay's signed answer to the participant's
        // check, which it takes, and time for its DTLS to retransmit.
        assert!(seeds("participant", participant).iter().all(|&n| n >= 1));
        // Connected: the other member's audio, which decrypts, and the relay's reports
        // (libsrtp's; transport-cc feedback on what we sent and a REMB) in its SRTCP,
        // also after connecting again; and a NAT rebinding: the relay's answers, naming
        // a new address, to the check we send after 2 s of its silence and to our
        // nomination that follows at once.
        assert!(
            seeds("participant_connected", connected)
                .iter()
                .all(|&n| n >= 2)
        );
        // The sine: all of it, and the half that reads.
        let ogg = seeds("ogg", ogg);
        assert!(ogg.len() == 2 && ogg[0] > 0 && ogg[0] < ogg[1], "{ogg:?}");
    }
}
