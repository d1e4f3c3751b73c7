//! The core under arbitrary Matrix input: a sync batch from arbitrary bytes, handled by a
//! core that already serves a conference, must never panic and must leave a state the
//! relay accepts. Driven by the cargo-fuzz target `sync_batch` and, on every `cargo
//! test`, by a stable mutation loop over a realistic batch.

use blindfold_relay::control::{EndReason, NotificationBody, RelayInfo};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Action, Core, CoreConfig};
use crate::sync::SyncResponse;

// The ids of docs/protocol.md's examples, which the committed seeds are made of.
const SFU: &str = "@sfu:example.org";
const ALICE: &str = "@alice:example.org";
const BOB: &str = "@bob:example.org";
const ROOM: &str = "!conf:example.org";
const DM: &str = "!dm:example.org";
const T0: u64 = 1_800_000_000_000;

/// A valid offer (audio 100, simulcast 101/102).
const OFFER: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\n\
a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n\
a=fingerprint:sha-256 9C:95:0D:C0:08:80:17:C6:92:00:57:92:6F:1A:0F:23:37:75:EA:84:08:3E:92:92:AB:20:B6:EB:77:3A:69:85\r\n\
a=setup:actpass\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=rtcp-mux\r\n\
a=rtpmap:111 opus/48000/2\r\na=ssrc:100 cname:x\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\n\
a=mid:1\r\na=rtcp-mux\r\na=rtpmap:96 VP8/90000\r\na=ssrc-group:SIM 101 102\r\na=ssrc:101 cname:x\r\n\
a=ssrc:102 cname:x\r\n";

fn member(user: &str, membership: &str) -> Value {
    json!({"type": "m.room.member", "sender": user, "state_key": user, "content": {"membership": membership}})
}

/// A core with the relay connected, a live conference in `ROOM` with Alice and Bob
/// joined, their DM, and one call of Alice's already admitted.
fn serving_core() -> Core {
    let mut n = 0u8;
    let rng = Box::new(move |b: &mut [u8]| {
        n = n.wrapping_add(1);
        b.fill(n)
    });
    let mut core = Core::new(CoreConfig::new(SFU, "SFUDEV"), rng);
    core.set_relay_info(
        RelayInfo {
            dtls_fingerprint: blindfold_relay::control::Fingerprint([7; 32]),
            candidates: vec![std::net::SocketAddr::from(([127, 0, 0, 1], 10_000))],
        },
        T0,
    );
    let setup: SyncResponse = serde_json::from_value(seed_batch()).expect("seed batch reads");
    core.handle_sync(&setup, T0, false);
    while core.poll_action().is_some() {}
    core
}

/// A realistic batch: membership, conference state, an invite, a subscribe, a hangup
/// of an unknown call, candidates, an encrypted event, a room invite.
pub(crate) fn seed_batch() -> Value {
    json!({"next_batch": "s2", "rooms": {
        "join": {
            ROOM: {"state": {"events": [member(ALICE, "join"), member(BOB, "join"), member(SFU, "join"),
                {"type": crate::events::CONFERENCE, "sender": ALICE, "state_key": "weekly", "content": {"sfu": SFU}}]},
                   "timeline": {"events": [member("@carol:example.org", "join")], "limited": true,
                                "prev_batch": "t1"},
                   // What the service reads besides the sync (see `complete_from`).
                   "current_state": [member(ALICE, "join"), member(BOB, "join"), member(SFU, "join"),
                       member("@carol:example.org", "join"),
                       {"type": crate::events::CONFERENCE, "sender": ALICE, "state_key": "weekly", "content": {"sfu": SFU}}],
                   "gap": [member("@dave:example.org", "leave")], "gap_whole": true},
            DM: {"state": {"events": [member(ALICE, "join"), member(SFU, "join")]},
                 "timeline": {"events": [
                {"type": "m.call.invite", "sender": ALICE, "origin_server_ts": T0, "content": {
                    "call_id": "c1", "party_id": "DEV", "version": "1", "lifetime": 60000,
                    "offer": {"type": "offer", "sdp": OFFER},
                    "org.matrix.msc2359.conference": {"room_id": ROOM, "conf_id": "weekly"}}},
                {"type": crate::events::SUBSCRIBE, "sender": ALICE, "content": {
                    "call_id": "c1", "party_id": "DEV", "version": "1", "full": [102]}},
                {"type": "m.call.candidates", "sender": ALICE, "content": {"call_id": "c1", "party_id": "DEV", "version": "1", "candidates": []}},
                {"type": "m.call.hangup", "sender": BOB, "content": {"call_id": "zz", "party_id": "B", "version": "1"}},
                {"type": "m.room.encrypted", "sender": BOB, "content": {"algorithm": "m.megolm.v1.aes-sha2"}}
            ]}}
        },
        "invite": {"!new:example.org": {"invite_state": {"events": [
            {"type": "m.room.member", "sender": ALICE, "state_key": SFU, "content": {"membership": "invite"}}]}}},
        "leave": {}
    }})
}

/// Completes `batch` as the service does with what the homeserver answers besides the
/// sync, taken here from each joined room's `"current_state"` (the
/// `GET /rooms/{roomId}/state` answer) and, for a `limited` timeline as the service
/// reads back only those, `"gap"` (the events `/messages` read back, oldest first;
/// `"gap_whole"`: all of them) in the input.
fn complete_from(raw: &mut Value, batch: &mut SyncResponse) {
    for (room_id, joined) in &mut batch.rooms.join {
        let extra = &mut raw["rooms"]["join"][room_id.as_str()];
        if let Some(Value::Array(state)) = extra.get_mut("current_state").map(Value::take) {
            joined.use_current_state(state);
        }
        let whole = extra["gap_whole"] == true;
        if joined.timeline.limited
            && let Some(Value::Array(gap)) = extra.get_mut("gap").map(Value::take)
        {
            joined.timeline.fill_gap(gap, whole);
        }
    }
}

/// Feeds one batch to a serving core (as a live batch, then to a fresh core as the
/// first batch of a restart), and checks what must always hold. Returns the number of
/// calls admitted by the batch.
pub(crate) fn fuzz_one(data: &[u8]) -> usize {
    let Ok(mut raw) = serde_json::from_slice::<Value>(data) else {
        return 0;
    };
    let Ok(mut batch) = SyncResponse::deserialize(&raw) else {
        return 0;
    };
    complete_from(&mut raw, &mut batch);
    let mut admitted = 0;
    for initial in [false, true] {
        let mut core = serving_core();
        core.handle_sync(&batch, T0 + 1000, initial);
        while let Some(a) = core.poll_action() {
            if let Action::Admit { call, answer, .. } = &a {
                admitted += 1;
                assert_eq!(answer["call_id"].as_str(), Some(call.call_id.as_str()));
            }
        }
        // The relay must accept the state the core wants, whatever came in.
        core.snapshot(T0 + 2000)
            .validate()
            .expect("the snapshot is always valid");
        // Every call can still be ended by the relay without panicking.
        let ids: Vec<_> = core.calls().map(|c| c.spec.session_id.clone()).collect();
        for session_id in ids {
            core.handle_relay(
                &NotificationBody::SessionClosed {
                    session_id,
                    reason: EndReason::ConsentExpired,
                },
                T0 + 3000,
            );
        }
        while core.poll_action().is_some() {}
        assert_eq!(core.calls().count(), 0);
    }
    admitted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seed_batch_admits_alices_call() {
        // On a serving core the seed's invite is a duplicate; on a fresh one it is new.
        let mut core = Core::new(
            CoreConfig::new(SFU, "SFUDEV"),
            Box::new(|b: &mut [u8]| b.fill(3)),
        );
        core.set_relay_info(
            RelayInfo {
                dtls_fingerprint: blindfold_relay::control::Fingerprint([7; 32]),
                candidates: vec![std::net::SocketAddr::from(([127, 0, 0, 1], 10_000))],
            },
            T0,
        );
        let batch: SyncResponse = serde_json::from_value(seed_batch()).unwrap();
        core.handle_sync(&batch, T0, false);
        assert_eq!(core.calls().count(), 1);
        assert_eq!(
            fuzz_one(serde_json::to_string(&seed_batch()).unwrap().as_bytes()),
            0
        );
    }

    #[test]
    fn the_committed_seeds_reach_admission() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/corpus/sync_batch");
        let admitted: usize = std::fs::read_dir(dir)
            .expect("fuzz/corpus/sync_batch")
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with("seed-"))
            .map(|e| fuzz_one(&std::fs::read(e.path()).unwrap()))
            .sum();
        // Each admitting seed counts twice: as a live batch and as a restart's first.
        assert!(admitted >= 1, "no committed seed reaches an answer");
    }

    /// Replaces random values of the seed batch with values of other types and shapes.
    #[test]
    fn mutated_sync_batches_never_panic() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut rand = move |n: usize| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % n.max(1) as u64) as usize
        };
        let replacements = [
            json!(null),
            json!(7),
            json!(-1),
            json!(1.5),
            json!(""),
            json!("x"),
            json!([]),
            json!({}),
            json!(true),
            json!(u64::MAX),
            json!("\u{0}"),
            json!([1, 2]),
            json!({"sfu": SFU}),
            json!(ROOM),
            json!(ALICE),
            json!("1"),
            json!(OFFER),
            json!({"room_id": ROOM, "conf_id": "weekly"}),
        ];
        let mut parsed = 0;
        for round in 0..3000 {
            let mut batch = seed_batch();
            // Vary the call id so the invite is not a duplicate of the setup's.
            batch["rooms"]["join"][DM]["timeline"]["events"][0]["content"]["call_id"] =
                json!(format!("r{round}"));
            for _ in 0..1 + rand(3) {
                mutate(&mut batch, &mut rand, &replacements);
            }
            let bytes = serde_json::to_vec(&batch).unwrap();
            if serde_json::from_slice::<SyncResponse>(&bytes).is_ok() {
                parsed += 1;
            }
            fuzz_one(&bytes);
        }
        assert!(
            parsed > 1000,
            "most mutations must reach the core, {parsed} did"
        );
    }

    /// Walks to a random node and replaces it.
    fn mutate(v: &mut Value, rand: &mut impl FnMut(usize) -> usize, with: &[Value]) {
        match v {
            Value::Object(m) if !m.is_empty() && rand(4) != 0 => {
                let k = m.keys().nth(rand(m.len())).cloned().unwrap();
                mutate(m.get_mut(&k).unwrap(), rand, with);
            }
            Value::Array(a) if !a.is_empty() && rand(4) != 0 => {
                let i = rand(a.len());
                mutate(&mut a[i], rand, with);
            }
            _ => *v = with[rand(with.len())].clone(),
        }
    }
}
