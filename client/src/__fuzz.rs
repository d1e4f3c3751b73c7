//! Entry points for the cargo-fuzz targets in `fuzz/`: what other people hand the
//! participant library. A panic or failed assertion inside is a finding. Hidden: not
//! part of the crate's API.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use blindfold_relay::dtls::{DtlsCert, DtlsConfig, DtlsSettings};
use blindfold_relay::id::Ssrc;
use blindfold_relay::srtp::{MasterKey, SrtpProfile};

use crate::conference::keys::{Accepted, KeyEvent, Roster};
use crate::ogg::OggOpusReader;
use crate::sdp::Answer;
use crate::{IceCredentials, OwnSsrcs, Participant, ParticipantConfig};

/// Our own SSRCs in [`key_events`]: a declaration naming one collides.
const OWN: OwnSsrcs = OwnSsrcs {
    audio: Ssrc(1),
    thumbnail: Ssrc(2),
    full: Ssrc(3),
};

/// Key events from other members (`org.matrix.msc2359.keys` content, written by whoever
/// is in the room), one per line: the line's first byte picks the sender among four
/// users, the rest is the content's JSON. Each is read ([`KeyEvent::from_content`]);
/// one that reads writes back to the same event, and goes to a [`Roster`], whose
/// members must then never share an SSRC or use one of ours. Returns how many the
/// roster accepted.
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
    let local = IceCredentials {
        ufrag: "fuzzufrg".into(),
        pwd: "fuzz-password-0123456789".into(),
    };
    let (cert, dtls, now) = shared();
    let now = *now;
    let master = MasterKey::new(SrtpProfile::AeadAes128Gcm, &[7; 28]).expect("a GCM key");
    let cfg = ParticipantConfig::new(
        local,
        answer.ice,
        relay,
        cert.clone(),
        answer.fingerprint,
        dtls.clone(),
        OWN,
        master,
        1,
    );
    let Ok(mut p) = Participant::new(cfg, now) else {
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
        // Three key-event seeds: one event; one, refused from another member, then its
        // hangup; one, its new call, and a hangup of a call nobody knows.
        assert_eq!(seeds("key_events", key_events), [1, 2, 3]);
        // The answer (CRLF and LF): a participant that sends its ICE checks.
        assert!(seeds("sdp_answer", sdp_answer).iter().all(|&n| n >= 2));
        // The sine: all of it, and the half that reads.
        let ogg = seeds("ogg", ogg);
        assert!(ogg.len() == 2 && ogg[0] > 0 && ogg[0] < ogg[1], "{ogg:?}");
    }
}
