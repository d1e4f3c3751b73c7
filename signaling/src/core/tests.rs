//! The call logic, one behaviour per test, driven with hand-made sync batches.

use std::net::SocketAddr;

use blindfold_relay::control::{
    EndReason, FullSet, NotificationBody, RelayInfo, RequestBody, SessionId,
};
use blindfold_relay::id::Ssrc;
use serde_json::{Value, json};

use super::*;

const SFU: &str = "@sfu:hs";
const ALICE: &str = "@alice:hs";
const BOB: &str = "@bob:hs";
const ROOM: &str = "!conf:hs";
const DM: &str = "!dm:hs";
const BOB_DM: &str = "!dm-bob:hs";

/// The caller's DM with the SFU.
fn dm_of(user: &str) -> &'static str {
    if user == BOB { BOB_DM } else { DM }
}
const T0: u64 = 1_800_000_000_000;

/// An offer declaring audio `base`, thumbnail `base + 1`, full `base + 2`.
fn offer(base: u32) -> String {
    let (a, t, f) = (base, base + 1, base + 2);
    [
        "v=0",
        "o=- 1 2 IN IP4 127.0.0.1",
        "s=-",
        "t=0 0",
        "a=group:BUNDLE 0 1",
        "a=ice-ufrag:abcd",
        "a=ice-pwd:abcdefghijklmnopqrstuvwx",
        "a=fingerprint:sha-256 9C:95:0D:C0:08:80:17:C6:92:00:57:92:6F:1A:0F:23:37:75:EA:84:08:3E:92:92:AB:20:B6:EB:77:3A:69:85",
        "a=setup:actpass",
        "m=audio 9 UDP/TLS/RTP/SAVPF 111",
        "c=IN IP4 0.0.0.0",
        "a=mid:0",
        "a=rtcp-mux",
        "a=sendrecv",
        "a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level",
        "a=rtpmap:111 opus/48000/2",
        &format!("a=ssrc:{a} cname:x"),
        "m=video 9 UDP/TLS/RTP/SAVPF 96",
        "c=IN IP4 0.0.0.0",
        "a=mid:1",
        "a=rtcp-mux",
        "a=sendrecv",
        "a=extmap:2 urn:ietf:params:rtp-hdrext:framemarking",
        "a=rtpmap:96 VP8/90000",
        &format!("a=ssrc-group:SIM {t} {f}"),
        &format!("a=ssrc:{t} cname:x"),
        &format!("a=ssrc:{f} cname:x"),
        "",
    ]
    .join("\r\n")
}

fn relay_info() -> RelayInfo {
    RelayInfo {
        dtls_fingerprint: "AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89"
            .parse()
            .unwrap(),
        candidates: vec!["203.0.113.7:10000".parse::<SocketAddr>().unwrap()],
    }
}

fn member(user: &str, membership: &str) -> Value {
    json!({"type": "m.room.member", "sender": user, "state_key": user, "content": {"membership": membership}})
}

fn conference(conf_id: &str, content: Value) -> Value {
    json!({"type": CONFERENCE_TYPE, "sender": ALICE, "state_key": conf_id, "content": content})
}

const CONFERENCE_TYPE: &str = crate::events::CONFERENCE;

fn invite(from: &str, call_id: &str, conf_id: &str, sdp: &str, ts: u64) -> Value {
    json!({"type": "m.call.invite", "sender": from, "origin_server_ts": ts, "content": {
        "call_id": call_id, "party_id": format!("{from}-dev"), "version": "1", "lifetime": 60000,
        "offer": {"type": "offer", "sdp": sdp},
        "org.matrix.msc2359.conference": {"room_id": ROOM, "conf_id": conf_id}
    }})
}

fn batch(rooms: Value) -> SyncResponse {
    serde_json::from_value(json!({"next_batch": "n", "rooms": {"join": rooms}})).unwrap()
}

/// A core with the relay connected, a conference room with a live conference `conf`
/// served by us and `members` joined, and a DM per member.
fn setup(members: &[&str]) -> Core {
    let mut core = Core::new(
        CoreConfig::new(SFU, "SFUDEV"),
        Box::new(|b: &mut [u8]| b.fill(0x5a)),
    );
    let mut n = 0u8;
    core.rng = Box::new(move |b: &mut [u8]| {
        n = n.wrapping_add(1);
        b.fill(n)
    });
    core.set_relay_info(relay_info(), T0);
    let mut state: Vec<Value> = members.iter().map(|m| member(m, "join")).collect();
    state.push(member(SFU, "join"));
    state.push(conference("conf", json!({"sfu": SFU})));
    // Each caller has its own DM with the SFU, whether or not it is in the conference.
    let dm_state =
        |user: &str| json!({"state": {"events": [member(user, "join"), member(SFU, "join")]}});
    core.handle_sync(
        &batch(
            json!({ROOM: {"state": {"events": state}}, DM: dm_state(ALICE), BOB_DM: dm_state(BOB)}),
        ),
        T0,
        true,
    );
    drain(&mut core);
    core
}

fn drain(core: &mut Core) -> Vec<Action> {
    std::iter::from_fn(|| core.poll_action()).collect()
}

fn timeline(core: &mut Core, room: &str, events: Vec<Value>, now: u64) -> Vec<Action> {
    core.handle_sync(
        &batch(json!({room: {"timeline": {"events": events}}})),
        now,
        false,
    );
    drain(core)
}

/// The `org.matrix.msc2359.reason` codes of the hangups among `actions`.
fn hangups(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send {
                event_type,
                content,
                ..
            } if event_type == "m.call.hangup" => Some(
                content["org.matrix.msc2359.reason"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            ),
            _ => None,
        })
        .collect()
}

fn admitted(actions: &[Action]) -> Vec<&Call> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Admit { call, .. } => Some(&**call),
            _ => None,
        })
        .collect()
}

fn relay_requests(actions: &[Action]) -> Vec<&RequestBody> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Relay(r) => Some(r),
            _ => None,
        })
        .collect()
}

/// `who` invites the SFU to call `call_id` of conference "conf" (sent at `T0`, an
/// [`offer`] numbered from `base`) in its DM; what the core does by `now`.
fn invite_in(core: &mut Core, who: &str, call_id: &str, base: u32, now: u64) -> Vec<Action> {
    timeline(
        core,
        dm_of(who),
        vec![invite(who, call_id, "conf", &offer(base), T0)],
        now,
    )
}

fn call_in(core: &mut Core, who: &str, call_id: &str, base: u32) -> SessionId {
    let actions = invite_in(core, who, call_id, base, T0 + 10);
    let calls = admitted(&actions);
    assert_eq!(calls.len(), 1, "{actions:?}");
    calls[0].spec.session_id.clone()
}

#[test]
fn a_member_is_answered_with_the_relays_transport() {
    let mut core = setup(&[ALICE]);
    let actions = invite_in(&mut core, ALICE, "c1", 100, T0 + 10);
    assert!(hangups(&actions).is_empty(), "{actions:?}");
    let Some(Action::Admit { call, answer, .. }) = actions.first() else {
        panic!("{actions:?}")
    };
    assert_eq!(call.caller, ALICE);
    assert_eq!(call.dm_room, DM);
    assert_eq!(call.spec.remote_ufrag.as_str(), "abcd");
    let ssrcs: Vec<u32> = call.spec.streams.iter().map(|s| s.ssrc.0).collect();
    assert_eq!(ssrcs, [100, 101, 102]);
    assert_eq!(call.spec.conf_id, relay_conf_id(ROOM, "conf"));
    assert_eq!(answer["call_id"], "c1");
    assert_eq!(answer["party_id"], "SFUDEV");
    assert_eq!(answer["version"], "1");
    let sdp = answer["answer"]["sdp"].as_str().unwrap();
    assert!(sdp.contains("a=ice-lite"), "{sdp}");
    assert!(
        sdp.contains(&format!("a=ice-ufrag:{}", call.spec.ice_ufrag.as_str())),
        "{sdp}"
    );
    assert!(sdp.contains("203.0.113.7 10000 typ host"), "{sdp}");
    assert!(sdp.contains("a=setup:passive"), "{sdp}");
}

#[test]
fn refusals_name_their_reason_and_create_nothing() {
    type Make = Box<dyn Fn(&mut Core) -> Value>;
    let cases: Vec<(&str, Make, &str)> = vec![
        (
            "non-member",
            Box::new(|_| invite(BOB, "c", "conf", &offer(1), T0)),
            "not_a_member",
        ),
        (
            "no conference",
            Box::new(|_| invite(ALICE, "c", "other", &offer(1), T0)),
            "no_such_conference",
        ),
        (
            "a room shared with someone else",
            Box::new(|core| {
                timeline(core, DM, vec![member(BOB, "join")], T0);
                invite(ALICE, "c", "conf", &offer(1), T0)
            }),
            "not_a_dm",
        ),
        (
            "a room someone else is invited into",
            Box::new(|core| {
                timeline(core, DM, vec![member(BOB, "invite")], T0);
                invite(ALICE, "c", "conf", &offer(1), T0)
            }),
            "not_a_dm",
        ),
        (
            "expired",
            Box::new(|_| invite(ALICE, "c", "conf", &offer(1), T0 - 61_000)),
            "invite_expired",
        ),
        (
            "outsider",
            Box::new(|_| invite("@eve:elsewhere", "c", "conf", &offer(1), T0)),
            "not_allowed",
        ),
        (
            "garbage SDP",
            Box::new(|_| invite(ALICE, "c", "conf", "hello", T0)),
            "bad_offer",
        ),
        (
            "a=crypto",
            Box::new(|_| {
                let sdp = offer(1).replace(
                    "a=mid:0\r\n",
                    "a=mid:0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:AAAA\r\n",
                );
                invite(ALICE, "c", "conf", &sdp, T0)
            }),
            "bad_offer",
        ),
        (
            "wrong types",
            Box::new(|_| {
                let mut e = invite(ALICE, "c", "conf", &offer(1), T0);
                e["content"]["lifetime"] = json!("long");
                e
            }),
            "bad_offer",
        ),
        (
            "version 0",
            Box::new(|_| {
                let mut e = invite(ALICE, "c", "conf", &offer(1), T0);
                e["content"]["version"] = json!(0);
                e
            }),
            "bad_offer",
        ),
    ];
    for (what, make, code) in cases {
        let mut core = setup(&[ALICE]);
        let ev = make(&mut core);
        let dm = dm_of(ev["sender"].as_str().unwrap());
        let actions = timeline(&mut core, dm, vec![ev], T0 + 10);
        assert_eq!(hangups(&actions), [code], "{what}: {actions:?}");
        assert!(
            admitted(&actions).is_empty() && relay_requests(&actions).is_empty(),
            "{what}"
        );
        assert_eq!(core.stats().refusals.get(code), Some(&1), "{what}");
        let hangup = actions.iter().find_map(|a| match a {
            Action::Send { content, room, .. } => Some((room.clone(), content.clone())),
            _ => None,
        });
        let (room, content) = hangup.unwrap();
        assert_eq!(room, dm);
        let reason = if code == "invite_expired" {
            "invite_timeout"
        } else {
            "unknown_error"
        };
        assert_eq!(content["reason"], reason, "{what}");
    }
}

#[test]
fn terminated_and_foreign_conferences_are_refused() {
    for (content, code) in [
        (
            json!({"sfu": SFU, "terminated": true}),
            "conference_terminated",
        ),
        (json!({}), "conference_terminated"),
        (json!({"sfu": "@other-sfu:hs"}), "wrong_sfu"),
    ] {
        let mut core = setup(&[ALICE]);
        timeline(&mut core, ROOM, vec![conference("conf", content)], T0);
        let actions = invite_in(&mut core, ALICE, "c", 1, T0 + 10);
        assert_eq!(hangups(&actions), [code]);
        assert!(admitted(&actions).is_empty());
    }
}

/// Redacting the announcement empties its content: the conference has ended. A
/// redaction of an older announcement, or of another event, changes nothing.
#[test]
fn a_redacted_announcement_ends_the_conference() {
    // Room versions up to 10 put `redacts` at the top level, 11 in the content.
    for v11 in [false, true] {
        for (redacts, ended) in [("$new", true), ("$old", false), ("$other", false)] {
            let mut core = setup(&[ALICE]);
            let mut old = conference("conf", json!({"sfu": SFU}));
            old["event_id"] = json!("$old");
            let mut new = conference("conf", json!({"sfu": SFU, "name": "renamed"}));
            new["event_id"] = json!("$new");
            timeline(&mut core, ROOM, vec![old, new], T0);
            call_in(&mut core, ALICE, "a", 100);
            let mut redaction = json!({"type": "m.room.redaction", "sender": ALICE, "content": {}});
            if v11 {
                redaction["content"]["redacts"] = json!(redacts);
            } else {
                redaction["redacts"] = json!(redacts);
            }
            let actions = timeline(&mut core, ROOM, vec![redaction], T0 + 20);
            let expect: &[&str] = if ended {
                &["conference_terminated"]
            } else {
                &[]
            };
            assert_eq!(hangups(&actions), expect, "{redacts} v11 {v11}");
            assert_eq!(core.calls().count(), usize::from(!ended), "{redacts}");
        }
    }
}

/// Only the announcement's sender or a member whose power level reaches `redact` ends
/// the conference by redacting it: a homeserver may pass on a redaction it did not
/// apply.
#[test]
fn a_redaction_ends_the_conference_only_from_its_sender_or_a_moderator() {
    let power = |bob: i64| {
        json!({"type": "m.room.power_levels", "sender": ALICE, "state_key": "",
               "content": {"users": {ALICE: 100, BOB: bob}, "users_default": 0, "redact": 50}})
    };
    for (bob_level, ended) in [(None, false), (Some(0), false), (Some(50), true)] {
        let mut core = setup(&[ALICE, BOB]);
        let mut announce = conference("conf", json!({"sfu": SFU}));
        announce["event_id"] = json!("$a");
        let mut events = vec![announce];
        events.extend(bob_level.map(power));
        timeline(&mut core, ROOM, events, T0);
        call_in(&mut core, ALICE, "a", 100);
        let redaction =
            json!({"type": "m.room.redaction", "sender": BOB, "redacts": "$a", "content": {}});
        let actions = timeline(&mut core, ROOM, vec![redaction], T0 + 20);
        assert_eq!(
            core.calls().count(),
            usize::from(!ended),
            "bob at {bob_level:?}: {actions:?}"
        );
    }
    // The room's creator may redact it whatever the levels say (from room version 12
    // its power has no bound), and so may an additional creator.
    for creator in [ALICE, BOB] {
        let mut core = setup(&[ALICE, BOB]);
        let mut announce = conference("conf", json!({"sfu": SFU}));
        announce["event_id"] = json!("$a");
        announce["sender"] = json!("@carol:hs");
        let create = json!({"type": "m.room.create", "sender": ALICE, "state_key": "",
            "content": {"room_version": "12", "additional_creators": [BOB]}});
        let levels = json!({"type": "m.room.power_levels", "sender": ALICE, "state_key": "",
            "content": {"users": {"@carol:hs": 50}, "redact": 50}});
        core.handle_sync(
            &batch(json!({ROOM: {"state": {"events": [create, levels]}}})),
            T0,
            false,
        );
        timeline(&mut core, ROOM, vec![announce], T0);
        call_in(&mut core, ALICE, "a", 100);
        let redaction =
            json!({"type": "m.room.redaction", "sender": creator, "redacts": "$a", "content": {}});
        timeline(&mut core, ROOM, vec![redaction], T0 + 20);
        assert_eq!(core.calls().count(), 0, "{creator}");
    }
    // Levels written as strings, as in old rooms, count too.
    let mut core = setup(&[ALICE, BOB]);
    let mut announce = conference("conf", json!({"sfu": SFU}));
    announce["event_id"] = json!("$a");
    let levels = json!({"type": "m.room.power_levels", "sender": ALICE, "state_key": "",
        "content": {"users": {BOB: "75"}, "redact": "50"}});
    timeline(&mut core, ROOM, vec![announce, levels], T0);
    call_in(&mut core, ALICE, "a", 100);
    let redaction =
        json!({"type": "m.room.redaction", "sender": BOB, "redacts": "$a", "content": {}});
    timeline(&mut core, ROOM, vec![redaction], T0 + 20);
    assert_eq!(core.calls().count(), 0);
}

/// A plaintext invite in the conference room (or any encrypted room) gets no answer,
/// not even a refusal, which would be a plaintext event every member sees and keeps.
#[test]
fn an_invite_in_the_conference_room_is_not_answered() {
    let mut core = setup(&[ALICE]);
    let actions = timeline(
        &mut core,
        ROOM,
        vec![invite(ALICE, "c", "conf", &offer(1), T0)],
        T0 + 10,
    );
    assert!(actions.is_empty(), "{actions:?}");
    assert_eq!(
        core.stats().dropped.get("invite_in_encrypted_room"),
        Some(&1)
    );
    // The same in a DM is answered.
    let actions = timeline(
        &mut core,
        DM,
        vec![invite(ALICE, "c", "conf", &offer(1), T0)],
        T0 + 10,
    );
    assert_eq!(admitted(&actions).len(), 1, "{actions:?}");
}

#[test]
fn an_invite_without_ids_is_dropped_and_one_for_someone_else_ignored() {
    let mut core = setup(&[ALICE]);
    let mut e = invite(ALICE, "c", "conf", &offer(1), T0);
    e["content"]["call_id"] = json!(17);
    let mut other = invite(ALICE, "c2", "conf", &offer(1), T0);
    other["content"]["invitee"] = json!("@someone:hs");
    // Someone else's call is ignored even when the SFU could not read it (an ordinary
    // call in a shared room must not be hung up by the SFU).
    let mut other_unreadable = other.clone();
    other_unreadable["content"]["call_id"] = json!("c3");
    other_unreadable["content"]["version"] = json!(0);
    other_unreadable["content"]
        .as_object_mut()
        .unwrap()
        .remove("org.matrix.msc2359.conference");
    let actions = timeline(
        &mut core,
        DM,
        vec![e, json!({"type": 3}), other, other_unreadable],
        T0 + 10,
    );
    assert!(actions.is_empty(), "{actions:?}");
    assert_eq!(core.stats().dropped.get("invite_without_ids"), Some(&1));
    assert_eq!(
        core.stats().dropped.get("invite_for_someone_else"),
        Some(&2)
    );
    assert_eq!(core.stats().dropped.get("unreadable_event"), Some(&1));
}

#[test]
fn a_duplicate_invite_is_answered_once() {
    let mut core = setup(&[ALICE]);
    call_in(&mut core, ALICE, "c1", 100);
    let again = invite_in(&mut core, ALICE, "c1", 100, T0 + 20);
    assert!(again.is_empty(), "{again:?}");
    let refused = invite_in(&mut core, BOB, "c9", 1, T0 + 20);
    let refused_again = invite_in(&mut core, BOB, "c9", 1, T0 + 30);
    assert_eq!(hangups(&refused), ["not_a_member"]);
    assert!(refused_again.is_empty());
}

#[test]
fn capacity_limits_refuse_with_over_capacity() {
    let mut core = setup(&[ALICE, BOB]);
    core.cfg.limits.max_calls_per_conference = 1;
    call_in(&mut core, ALICE, "a", 100);
    let actions = invite_in(&mut core, BOB, "b", 200, T0 + 10);
    assert_eq!(hangups(&actions), ["over_capacity"]);

    let mut core = setup(&[ALICE]);
    core.cfg.limits.max_calls_per_user = 1;
    call_in(&mut core, ALICE, "a", 100);
    let mut second_device = invite(ALICE, "b", "conf", &offer(200), T0);
    second_device["content"]["party_id"] = json!("OTHERDEV");
    let actions = timeline(&mut core, DM, vec![second_device], T0 + 10);
    assert_eq!(hangups(&actions), ["over_capacity"]);
}

#[test]
fn a_flood_of_invites_gets_one_refusal_a_minute_past_the_rate_then_silence() {
    let mut core = setup(&[ALICE]);
    core.cfg.limits.invites_per_user_per_minute = 3;
    // Every invite counts, whatever it would be refused for: a malformed one, one
    // from a caller who is not allowed, one for a missing conference.
    let mut malformed = invite(ALICE, "m", "conf", &offer(1), T0);
    malformed["content"]["version"] = json!(0);
    let mut flood = vec![malformed];
    flood.extend((0..1000).map(|i| invite(ALICE, &format!("c{i}"), "nope", &offer(1), T0)));
    let actions = timeline(&mut core, DM, flood, T0 + 10);
    assert_eq!(
        hangups(&actions),
        [
            "bad_offer",
            "no_such_conference",
            "no_such_conference",
            "rate_limited"
        ]
    );
    assert_eq!(core.stats().dropped.get("invite_over_rate"), Some(&997));
    let outsider = "@mallory:elsewhere.example";
    let outsiders: Vec<Value> = (0..10)
        .map(|i| invite(outsider, &format!("o{i}"), "conf", &offer(1), T0))
        .collect();
    let actions = timeline(&mut core, DM, outsiders, T0 + 20);
    assert_eq!(
        hangups(&actions),
        ["not_allowed", "not_allowed", "not_allowed", "rate_limited"]
    );
    // A minute later the window has moved on.
    let later = timeline(
        &mut core,
        DM,
        vec![invite(ALICE, "later", "conf", &offer(1), T0 + 61_000)],
        T0 + 61_000,
    );
    assert_eq!(admitted(&later).len(), 1, "{later:?}");
    // A flood that goes on gets one refusal a minute, the rest silence (each minute
    // the window has room again for a few).
    for minute in 1..=3u64 {
        let at = T0 + 61_000 + minute * 60_000;
        let more: Vec<Value> = (0..1000)
            .map(|i| invite(ALICE, &format!("m{minute}-{i}"), "nope", &offer(1), at))
            .collect();
        let hung = hangups(&timeline(&mut core, DM, more, at));
        assert_eq!(
            hung,
            [
                "no_such_conference",
                "no_such_conference",
                "no_such_conference",
                "rate_limited"
            ],
            "minute {minute}"
        );
    }
}

#[test]
fn repeats_do_not_use_up_the_rate_and_an_ignored_invite_may_come_again() {
    let mut core = setup(&[ALICE]);
    core.cfg.limits.invites_per_user_per_minute = 2;
    let first = invite(ALICE, "c1", "nope", &offer(1), T0);
    // The same invite five times (a replayed sync): answered once, counted once.
    let actions = timeline(&mut core, DM, vec![first; 5], T0 + 10);
    assert_eq!(hangups(&actions), ["no_such_conference"]);
    assert_eq!(core.stats().dropped.get("duplicate_invite"), Some(&4));
    // One more fits the rate; past it, a refusal, then silence for c4 ...
    let more: Vec<Value> = ["c2", "c3", "c4"]
        .iter()
        .map(|c| invite(ALICE, c, "conf", &offer(1), T0))
        .collect();
    let actions = timeline(&mut core, DM, more, T0 + 20);
    assert_eq!(admitted(&actions).len(), 1);
    assert_eq!(hangups(&actions), ["rate_limited"]);
    // ... which was not remembered: sent again a minute later, it is answered.
    let again = invite(ALICE, "c4", "conf", &offer(200), T0 + 61_000);
    let actions = timeline(&mut core, DM, vec![again], T0 + 61_000);
    let admitted = admitted(&actions);
    assert!(
        matches!(&admitted[..], [call] if call.call_id == "c4"),
        "{actions:?}"
    );
}

#[test]
fn colliding_ssrcs_are_refused_but_the_same_device_replaces_its_call() {
    let mut core = setup(&[ALICE, BOB]);
    let first = call_in(&mut core, ALICE, "a1", 100);
    let clash = invite_in(&mut core, BOB, "b1", 101, T0 + 10);
    assert_eq!(hangups(&clash), ["bad_offer"]);
    // Alice's client restarted: same device, new call, same SSRCs.
    let actions = invite_in(&mut core, ALICE, "a2", 100, T0 + 20);
    assert_eq!(hangups(&actions), ["replaced"]);
    assert!(relay_requests(&actions).iter().any(
        |r| matches!(r, RequestBody::RemoveSession { session_id, .. } if *session_id == first)
    ));
    assert_eq!(admitted(&actions).len(), 1);
    assert_eq!(core.calls().count(), 1);
}

/// Alice's client restarted and made a new DM: one sync brings her old invite (in the
/// DM whose id sorts later, read second) and her new one. The newer invite's call
/// stays, whatever order the rooms are read in; the older is refused as replaced.
#[test]
fn of_two_invites_from_one_device_in_one_sync_the_newer_stays() {
    const DM2: &str = "!dmz:hs";
    let mut core = setup(&[ALICE]);
    let dm_state = json!({"state": {"events": [member(ALICE, "join"), member(SFU, "join")]}});
    core.handle_sync(&batch(json!({DM2: dm_state})), T0, false);
    drain(&mut core);
    let old = invite(ALICE, "old", "conf", &offer(100), T0 + 10);
    let new = invite(ALICE, "new", "conf", &offer(100), T0 + 20);
    core.handle_sync(
        &batch(json!({
            DM: {"timeline": {"events": [new]}},
            DM2: {"timeline": {"events": [old]}},
        })),
        T0 + 30,
        false,
    );
    let actions = drain(&mut core);
    let admitted = admitted(&actions);
    assert!(
        matches!(&admitted[..], [call] if call.call_id == "new"),
        "{actions:?}"
    );
    assert_eq!(hangups(&actions), ["replaced"]);
    let calls: Vec<_> = core.calls().map(|c| c.call_id.clone()).collect();
    assert_eq!(calls, ["new"]);
}

/// Alice's client restarts twice in one sync: the middle call, never answered, is
/// withdrawn, and her first call ends as replaced by the last one, told by its key
/// event, or as `member_ended` if the relay does not take the last one after all.
#[test]
fn a_call_replaced_in_its_invites_batch_hands_on_what_it_replaced() {
    let mut core = setup(&[ALICE, BOB]);
    call_in(&mut core, BOB, "b", 200);
    call_in(&mut core, ALICE, "a1", 100);
    let actions = timeline(
        &mut core,
        DM,
        vec![
            invite(ALICE, "a2", "conf", &offer(100), T0),
            invite(ALICE, "a3", "conf", &offer(100), T0),
        ],
        T0 + 10,
    );
    let calls = admitted(&actions);
    assert_eq!(calls.len(), 1, "{actions:?}");
    assert_eq!(calls[0].call_id, "a3");
    assert!(member_ended(&actions).is_empty(), "{actions:?}");
    let last = calls[0].spec.session_id.clone();
    core.admission_failed(&last, T0 + 20);
    let told = member_ended(&drain(&mut core));
    assert_eq!(told.len(), 1, "{told:?}");
    assert_eq!(told[0].1["member"]["call_id"], "a1");
    assert_eq!(told[0].1["reason"], "replaced");
}

#[test]
fn leaving_the_conference_room_or_sharing_the_dm_ends_the_call() {
    for (room, event, code) in [
        (ROOM, member(ALICE, "leave"), "left_conference"),
        // Alice invites Bob into her DM with the SFU: the DM's history (her offer, the
        // answer) is his to read once he joins, and with it her session's ICE
        // credentials.
        (DM, member(BOB, "invite"), "not_a_dm"),
        // Or makes its history readable to anyone, or lets anyone join.
        (
            DM,
            json!({"type": "m.room.history_visibility", "sender": ALICE, "state_key": "",
                   "content": {"history_visibility": "world_readable"}}),
            "not_a_dm",
        ),
        (
            DM,
            json!({"type": "m.room.join_rules", "sender": ALICE, "state_key": "",
                   "content": {"join_rule": "public"}}),
            "not_a_dm",
        ),
        // Or lets the members of a space join.
        (
            DM,
            json!({"type": "m.room.join_rules", "sender": ALICE, "state_key": "",
                   "content": {"join_rule": "restricted", "allow": [
                       {"type": "m.room_membership", "room_id": "!space:hs-dev"}]}}),
            "not_a_dm",
        ),
        (
            DM,
            json!({"type": "m.room.join_rules", "sender": ALICE, "state_key": "",
                   "content": {"join_rule": "knock_restricted"}}),
            "not_a_dm",
        ),
    ] {
        let mut core = setup(&[ALICE, BOB]);
        let alice = call_in(&mut core, ALICE, "a", 100);
        let bob = call_in(&mut core, BOB, "b", 200);
        let actions = timeline(&mut core, room, vec![event], T0 + 100);
        assert_eq!(hangups(&actions), [code]);
        let removed: Vec<_> = relay_requests(&actions).into_iter().cloned().collect();
        assert!(
            matches!(&removed[..], [RequestBody::RemoveSession { session_id, .. }] if *session_id == alice),
            "{code}: {removed:?}"
        );
        assert!(actions.contains(&Action::Forget {
            session_id: alice,
            why: code
        }));
        assert_eq!(
            core.calls()
                .map(|c| c.spec.session_id.clone())
                .collect::<Vec<_>>(),
            [bob]
        );
    }
}

#[test]
fn a_room_every_other_member_left_is_left_once_after_its_calls_end() {
    let mut core = setup(&[ALICE, BOB]);
    call_in(&mut core, ALICE, "a", 100);
    // Alice leaves her DM: the call ends, its hangup is queued, then the SFU leaves.
    let actions = timeline(&mut core, DM, vec![member(ALICE, "leave")], T0 + 100);
    assert_eq!(hangups(&actions), ["left_conference"]);
    assert_eq!(actions.last(), Some(&Action::LeaveRoom(DM.into())));
    // More of the room before the homeserver reports the SFU gone: no second leave.
    let actions = timeline(&mut core, DM, vec![member(ALICE, "leave")], T0 + 200);
    assert!(
        !actions.contains(&Action::LeaveRoom(DM.into())),
        "{actions:?}"
    );

    // The conference room stays while anyone is joined to it.
    let actions = timeline(&mut core, ROOM, vec![member(BOB, "leave")], T0 + 300);
    assert!(
        !actions.contains(&Action::LeaveRoom(ROOM.into())),
        "{actions:?}"
    );
    let actions = timeline(&mut core, ROOM, vec![member(ALICE, "leave")], T0 + 400);
    assert_eq!(actions, [Action::LeaveRoom(ROOM.into())]);
    // Someone back before the leave went through: the SFU is on its way out, calls
    // there are refused until it is invited back.
    timeline(&mut core, ROOM, vec![member(BOB, "join")], T0 + 410);
    let invite = invite(BOB, "b", "conf", &offer(200), T0 + 420);
    let actions = timeline(&mut core, BOB_DM, vec![invite], T0 + 420);
    assert_eq!(hangups(&actions), ["no_such_conference"]);

    // A room the SFU is invited back to and joins is a new room, whether sync reported
    // it left in between (the DM) or went straight to the invite (the conference room).
    let left: SyncResponse =
        serde_json::from_value(json!({"next_batch": "l", "rooms": {"leave": {DM: {}}}})).unwrap();
    core.handle_sync(&left, T0 + 500, false);
    for room in [DM, ROOM] {
        let invited: SyncResponse = serde_json::from_value(json!({"next_batch": "i",
            "rooms": {"invite": {room: {"invite_state": {"events": [{"type": "m.room.member",
                "sender": ALICE, "state_key": SFU, "content": {"membership": "invite"}}]}}}}}))
        .unwrap();
        core.handle_sync(&invited, T0 + 600, false);
        assert_eq!(drain(&mut core), [Action::JoinRoom(room.into())]);
        let back =
            json!({room: {"state": {"events": [member(ALICE, "join"), member(SFU, "join")]}}});
        core.handle_sync(&batch(back), T0 + 700, false);
        assert_eq!(drain(&mut core), []);
        let actions = timeline(&mut core, room, vec![member(ALICE, "leave")], T0 + 800);
        assert_eq!(actions, [Action::LeaveRoom(room.into())]);
    }
    assert_eq!(core.stats().rooms_left, 4);
}

#[test]
fn a_terminated_conference_ends_every_call_and_the_relay_conference() {
    let mut core = setup(&[ALICE, BOB]);
    call_in(&mut core, ALICE, "a", 100);
    call_in(&mut core, BOB, "b", 200);
    let actions = timeline(
        &mut core,
        ROOM,
        vec![conference("conf", json!({"sfu": SFU, "terminated": true}))],
        T0,
    );
    assert_eq!(
        hangups(&actions),
        ["conference_terminated", "conference_terminated"]
    );
    let reqs = relay_requests(&actions);
    assert!(
        matches!(reqs.last(), Some(RequestBody::RemoveConference { .. })),
        "{reqs:?}"
    );
    assert_eq!(core.calls().count(), 0);
}

#[test]
fn the_callers_hangup_ends_the_session_silently() {
    let mut core = setup(&[ALICE]);
    let id = call_in(&mut core, ALICE, "a", 100);
    let hangup = json!({"type": "m.call.hangup", "sender": ALICE, "content": {"call_id": "a", "party_id": "@alice:hs-dev", "version": "1"}});
    // Someone else cannot hang up Alice's call.
    let mut forged = hangup.clone();
    forged["sender"] = json!(BOB);
    assert!(timeline(&mut core, DM, vec![forged], T0).is_empty());
    let actions = timeline(&mut core, DM, vec![hangup], T0);
    assert!(hangups(&actions).is_empty());
    assert!(
        matches!(relay_requests(&actions)[0], RequestBody::RemoveSession { session_id, .. } if *session_id == id)
    );
    assert_eq!(core.calls().count(), 0);
}

/// A call that ends in the very batch that brought its invite (the caller hung up, or
/// left the DM) is withdrawn: no answer after the caller's own hangup, no session on the
/// relay, and no word to the other members, who never heard of it.
#[test]
fn a_call_that_ends_in_its_invites_batch_is_never_answered() {
    let bob_hangup = json!({"type": "m.call.hangup", "sender": BOB, "content": {"call_id": "b", "party_id": "@bob:hs-dev", "version": "1"}});
    let bob_leaves = member(BOB, "leave");
    for end in [bob_hangup, bob_leaves] {
        let mut core = setup(&[ALICE, BOB]);
        call_in(&mut core, ALICE, "a", 100);
        let actions = timeline(
            &mut core,
            dm_of(BOB),
            vec![invite(BOB, "b", "conf", &offer(200), T0), end.clone()],
            T0 + 10,
        );
        assert!(admitted(&actions).is_empty(), "{end}: {actions:?}");
        assert!(member_ended(&actions).is_empty(), "{end}: {actions:?}");
        assert!(relay_requests(&actions).is_empty(), "{end}: {actions:?}");
        assert!(
            !actions.iter().any(|a| matches!(a, Action::Persist(_))),
            "{end}: {actions:?}"
        );
        assert_eq!(core.calls().count(), 1, "{end}: alice's alone");
    }
}

/// The member-ended events among `actions`: (room, content).
fn member_ended(actions: &[Action]) -> Vec<(String, Value)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send {
                room,
                event_type,
                content,
            } if event_type == crate::events::MEMBER_ENDED => Some((room.clone(), content.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn a_call_that_ends_is_told_to_the_conferences_other_calls() {
    let bob_call = |call: &str, reason: &str| {
        json!({"call_id": "a", "party_id": "SFUDEV", "version": "1",
               "member": {"user_id": BOB, "party_id": "@bob:hs-dev", "call_id": call},
               "reason": reason})
    };
    // Bob's link dies: alice hears why, in her DM; bob gets his hangup and no notice.
    let mut core = setup(&[ALICE, BOB]);
    call_in(&mut core, ALICE, "a", 100);
    let bob = call_in(&mut core, BOB, "b", 200);
    core.handle_relay(
        &NotificationBody::SessionClosed {
            session_id: bob,
            reason: EndReason::ConsentExpired,
        },
        T0,
    );
    let actions = drain(&mut core);
    assert_eq!(hangups(&actions), ["consent_expired"]);
    assert_eq!(
        member_ended(&actions),
        [(DM.to_owned(), bob_call("b", "consent_expired"))]
    );
    assert_eq!(core.stats().member_ended_events, 1);

    // Bob hangs up, or closes his DTLS association (crashed clients do neither).
    let bob = call_in(&mut core, BOB, "b2", 300);
    core.handle_relay(
        &NotificationBody::SessionClosed {
            session_id: bob,
            reason: EndReason::Closed,
        },
        T0,
    );
    let ended = member_ended(&drain(&mut core));
    assert_eq!(ended.len(), 1);
    assert_eq!(
        (
            ended[0].1["member"]["call_id"].as_str(),
            ended[0].1["reason"].as_str()
        ),
        (Some("b2"), Some("hangup"))
    );
    call_in(&mut core, BOB, "b3", 400);
    let hangup = json!({"type": "m.call.hangup", "sender": BOB, "content": {"call_id": "b3", "party_id": "@bob:hs-dev", "version": "1"}});
    let actions = timeline(&mut core, BOB_DM, vec![hangup], T0);
    assert_eq!(
        member_ended(&actions),
        [(DM.to_owned(), bob_call("b3", "hangup"))]
    );

    // Bob calls again, but the relay does not take the new call: the members hear
    // that his old one ended, replaced.
    call_in(&mut core, BOB, "b3r", 420);
    let actions = invite_in(&mut core, BOB, "b3r2", 430, T0 + 10);
    assert_eq!(hangups(&actions), ["replaced"]);
    assert!(member_ended(&actions).is_empty(), "{actions:?}");
    let new = admitted(&actions)[0].spec.session_id.clone();
    core.admission_failed(&new, T0 + 20);
    let actions = drain(&mut core);
    assert_eq!(hangups(&actions), ["relay_unavailable"]);
    assert_eq!(
        member_ended(&actions),
        [(DM.to_owned(), bob_call("b3r", "replaced"))]
    );

    // Bob takes another party's answer to his call: as a hangup.
    call_in(&mut core, BOB, "b3s", 450);
    let ours = json!({"type": "m.call.select_answer", "sender": BOB, "content": {"call_id": "b3s", "party_id": "@bob:hs-dev", "version": "1", "selected_party_id": "SFUDEV"}});
    assert!(member_ended(&timeline(&mut core, BOB_DM, vec![ours], T0)).is_empty());
    let other = json!({"type": "m.call.select_answer", "sender": BOB, "content": {"call_id": "b3s", "party_id": "@bob:hs-dev", "version": "1", "selected_party_id": "ELSEWHERE"}});
    let actions = timeline(&mut core, BOB_DM, vec![other], T0);
    assert_eq!(
        member_ended(&actions),
        [(DM.to_owned(), bob_call("b3s", "hangup"))]
    );
    assert_eq!(core.calls().count(), 1, "alice's call only");

    // A replaced call: bob's new call's key event tells the members. The conference
    // ending: every call gets its hangup, and nobody a notice.
    call_in(&mut core, BOB, "b4", 500);
    let actions = invite_in(&mut core, BOB, "b5", 500, T0 + 10);
    assert_eq!(hangups(&actions), ["replaced"]);
    assert!(member_ended(&actions).is_empty(), "{actions:?}");
    let actions = timeline(
        &mut core,
        ROOM,
        vec![conference("conf", json!({"sfu": SFU, "terminated": true}))],
        T0,
    );
    assert_eq!(hangups(&actions).len(), 2);
    assert!(member_ended(&actions).is_empty(), "{actions:?}");
    assert_eq!(core.stats().member_ended_events, 5);
}

#[test]
fn relay_failures_become_hangups_with_the_specs_reason() {
    for (reason, spec_reason, code) in [
        (EndReason::ConsentExpired, "ice_failed", "consent_expired"),
        (EndReason::IceTimeout, "ice_timeout", "ice_timeout"),
        (
            EndReason::FingerprintMismatch,
            "ice_failed",
            "fingerprint_mismatch",
        ),
        // The relay could not run it, or a reason a newer relay gives: the call is
        // dead, and its caller hears so.
        (EndReason::Other, "unknown_error", "relay_unavailable"),
    ] {
        let mut core = setup(&[ALICE]);
        let id = call_in(&mut core, ALICE, "a", 100);
        core.handle_relay(
            &NotificationBody::SessionClosed {
                session_id: id,
                reason,
            },
            T0,
        );
        let actions = drain(&mut core);
        assert_eq!(hangups(&actions), [code]);
        let Some(Action::Send { content, .. }) = actions.first() else {
            panic!()
        };
        assert_eq!(content["reason"], spec_reason);
        assert_eq!(core.calls().count(), 0);
    }
    // The relay's own restart is not the caller's problem: the snapshot restores it.
    let mut core = setup(&[ALICE]);
    let id = call_in(&mut core, ALICE, "a", 100);
    core.handle_relay(
        &NotificationBody::SessionClosed {
            session_id: id,
            reason: EndReason::Shutdown,
        },
        T0,
    );
    assert!(drain(&mut core).is_empty());
    assert_eq!(core.calls().count(), 1);
}

#[test]
fn a_participant_closing_its_dtls_association_hung_up_whichever_news_comes_first() {
    // Its client closes the media after sending m.call.hangup, and the relay's
    // notification often arrives before the homeserver's event: either way one
    // hang-up, counted once, and no hangup sent back to the caller.
    for closed_first in [true, false] {
        let mut core = setup(&[ALICE]);
        let id = call_in(&mut core, ALICE, "a", 100);
        let closed = NotificationBody::SessionClosed {
            session_id: id.clone(),
            reason: EndReason::Closed,
        };
        let hangup = json!({"type": "m.call.hangup", "sender": ALICE, "content": {
            "call_id": "a", "party_id": "@alice:hs-dev", "version": "1"}});
        let mut actions = Vec::new();
        if closed_first {
            core.handle_relay(&closed, T0);
            actions.extend(drain(&mut core));
            // The relay's news alone ends the call.
            assert_eq!(core.calls().count(), 0);
            assert_eq!(core.stats().ended.get("hangup"), Some(&1));
            actions.extend(timeline(&mut core, DM, vec![hangup], T0));
        } else {
            actions.extend(timeline(&mut core, DM, vec![hangup], T0));
            core.handle_relay(&closed, T0);
            actions.extend(drain(&mut core));
        }
        assert!(hangups(&actions).is_empty(), "{actions:?}");
        assert_eq!(core.stats().ended.get("hangup"), Some(&1), "{closed_first}");
        assert_eq!(core.calls().count(), 0);
        assert!(actions.contains(&Action::Forget {
            session_id: id,
            why: "hangup"
        }));
    }
    // A participant that closes before it ever connected (session_failed) hung up too.
    let mut core = setup(&[ALICE]);
    let id = call_in(&mut core, ALICE, "a", 100);
    core.handle_relay(
        &NotificationBody::SessionFailed {
            session_id: id,
            reason: EndReason::Closed,
            detail: String::new(),
        },
        T0,
    );
    assert!(hangups(&drain(&mut core)).is_empty());
    assert_eq!(core.calls().count(), 0);
    assert_eq!(core.stats().ended.get("hangup"), Some(&1));
}

/// An invite and its subscription in one batch, and the relay does not take the
/// session: the subscription queued behind the admission is withdrawn (the relay would
/// answer `not_found`, which signaling takes for state it must resync).
#[test]
fn a_refused_admission_withdraws_what_the_batch_queued_for_the_call() {
    let mut core = setup(&[ALICE]);
    let sub = json!({"type": crate::events::SUBSCRIBE, "sender": ALICE,
        "content": {"call_id": "a", "party_id": "@alice:hs-dev", "version": "1", "full": "all"}});
    let events = vec![invite(ALICE, "a", "conf", &offer(100), T0), sub];
    core.handle_sync(
        &batch(json!({DM: {"timeline": {"events": events}}})),
        T0 + 10,
        false,
    );
    let Some(Action::Admit { call, .. }) = core.poll_action() else {
        panic!("the admission first");
    };
    core.admission_failed(&call.spec.session_id, T0 + 10);
    let rest = drain(&mut core);
    assert_eq!(hangups(&rest), ["relay_unavailable"]);
    assert!(
        !rest.iter().any(|a| matches!(
            a,
            Action::Relay(RequestBody::SetSubscription { .. }) | Action::Persist(_)
        )),
        "{rest:?}"
    );
    assert!(rest.contains(&Action::Forget {
        session_id: call.spec.session_id.clone(),
        why: "relay_unavailable"
    }));
}

#[test]
fn a_subscription_goes_to_the_relay_and_the_store() {
    let mut core = setup(&[ALICE]);
    let id = call_in(&mut core, ALICE, "a", 100);
    let sub = |full: Value| {
        json!({"type": crate::events::SUBSCRIBE, "sender": ALICE,
        "content": {"call_id": "a", "party_id": "@alice:hs-dev", "version": "1", "full": full}})
    };
    let actions = timeline(&mut core, DM, vec![sub(json!([202, 302]))], T0);
    match &actions[..] {
        [
            Action::Relay(RequestBody::SetSubscription { subscription, .. }),
            Action::Persist(call),
        ] => {
            assert_eq!(subscription.session_id, id);
            assert_eq!(
                subscription.full,
                FullSet::Ssrcs(vec![Ssrc(202), Ssrc(302)])
            );
            assert_eq!(call.full, subscription.full);
        }
        other => panic!("{other:?}"),
    }
    let actions = timeline(&mut core, DM, vec![sub(json!("all"))], T0);
    assert!(
        matches!(&actions[0], Action::Relay(RequestBody::SetSubscription { subscription, .. }) if subscription.full == FullSet::All)
    );
    // Repeats of the subscription in force cost no relay request and no write.
    let repeats = vec![sub(json!("all")); 50];
    assert!(timeline(&mut core, DM, repeats, T0).is_empty());
    assert_eq!(core.stats().dropped.get("subscribe_unchanged"), Some(&50));
}

/// A call stored before the relay refused its own SSRC in a session would have the
/// relay refuse every snapshot: it is hung up and forgotten instead of restored.
#[test]
fn a_stored_call_on_the_relays_ssrc_is_hung_up_not_restored() {
    let mut core = setup(&[ALICE, BOB]);
    call_in(&mut core, ALICE, "a", 100);
    call_in(&mut core, BOB, "b", 200);
    let mut stored: Vec<Call> = core.calls().cloned().collect();
    let bob = stored.iter_mut().find(|c| c.caller == BOB).unwrap();
    bob.spec.streams[0].ssrc = Ssrc::RELAY;
    let mut restarted = Core::new(
        CoreConfig::new(SFU, "SFUDEV"),
        Box::new(|b: &mut [u8]| b.fill(1)),
    );
    restarted.restore(stored);
    let actions = drain(&mut restarted);
    assert_eq!(hangups(&actions), ["bad_offer"], "{actions:?}");
    assert!(actions.iter().any(|a| matches!(
        a,
        Action::Forget {
            why: "bad_offer",
            ..
        }
    )));
    let snap = restarted.snapshot(T0);
    assert_eq!(snap.sessions.len(), 1);
    assert!(
        snap.sessions[0]
            .streams
            .iter()
            .all(|s| s.ssrc != Ssrc::RELAY)
    );
}

/// The first (full-state) sync after a restart: the conference with alice, the SFU and
/// bob (`bob`: his membership), and both callers' DMs.
fn first_sync_after_restart(core: &mut Core, bob: &str, now: u64) {
    let state = vec![
        member(ALICE, "join"),
        member(BOB, bob),
        member(SFU, "join"),
        conference("conf", json!({"sfu": SFU})),
    ];
    let dm = |user: &str| json!({"state": {"events": [member(user, "join"), member(SFU, "join")]}});
    core.handle_sync(
        &batch(json!({ROOM: {"state": {"events": state}}, DM: dm(ALICE), BOB_DM: dm(BOB)})),
        now,
        false,
    );
}

/// The party ids of the calls' hangups and SFU notices among `actions`.
fn sfu_parties(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send { content, .. } => Some(content["party_id"].as_str()?.to_owned()),
            _ => None,
        })
        .collect()
}

/// After a login on another device, the restored calls (as stored: through JSON) keep
/// the `party_id` their answer carried, since a caller ignores events from a party it
/// did not select: their notices and hangups carry it, and a select_answer naming it
/// keeps the call. So does one stored without it, by the device of the stored
/// session it was restored with. A new call is answered as the new device.
#[test]
fn restored_calls_keep_the_party_id_of_their_answer() {
    let mut core = setup(&[ALICE, BOB]);
    call_in(&mut core, ALICE, "a", 100);
    call_in(&mut core, BOB, "b", 200);
    // Alice's call as a version that did not keep the party stored it.
    let stored: Vec<Call> = core
        .calls()
        .map(|c| {
            let mut json = serde_json::to_value(c).unwrap();
            if c.caller == ALICE {
                json.as_object_mut().unwrap().remove("answered_party");
            }
            serde_json::from_value(json).unwrap()
        })
        .collect();
    let mut restarted = Core::new(
        CoreConfig::new(SFU, "SFUDEV"),
        Box::new(|b: &mut [u8]| b.fill(1)),
    );
    restarted.set_relay_info(relay_info(), T0);
    restarted.restore(stored);
    // Restored as the stored session's device, and stored so again.
    let persisted: Vec<_> = drain(&mut restarted)
        .into_iter()
        .filter_map(|a| match a {
            Action::Persist(c) => Some((c.caller.clone(), c.answered_party.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(persisted, [(ALICE.to_owned(), "SFUDEV".to_owned())]);
    restarted.set_identity(SFU, "NEWDEV");
    // The first sync after the restart: everyone still there.
    first_sync_after_restart(&mut restarted, "join", T0);
    assert!(hangups(&drain(&mut restarted)).is_empty());
    let selected = json!({"type": "m.call.select_answer", "sender": ALICE, "content": {"call_id": "a", "party_id": "@alice:hs-dev", "version": "1", "selected_party_id": "SFUDEV"}});
    let actions = timeline(&mut restarted, DM, vec![selected], T0);
    assert!(actions.is_empty(), "{actions:?}");
    assert_eq!(restarted.calls().count(), 2);
    // Bob hangs up: alice hears it from the party she selected.
    let hangup = json!({"type": "m.call.hangup", "sender": BOB, "content": {"call_id": "b", "party_id": "@bob:hs-dev", "version": "1"}});
    let actions = timeline(&mut restarted, BOB_DM, vec![hangup], T0 + 1);
    assert_eq!(member_ended(&actions).len(), 1, "{actions:?}");
    assert_eq!(sfu_parties(&actions), ["SFUDEV"]);
    // Bob calls again: answered as the new device; the conference ends, and each call
    // is hung up as the party that answered it.
    let actions = invite_in(&mut restarted, BOB, "b2", 300, T0 + 2);
    let answered = actions.iter().find_map(|a| match a {
        Action::Admit { answer, .. } => answer["party_id"].as_str(),
        _ => None,
    });
    assert_eq!(answered, Some("NEWDEV"));
    let ended = conference("conf", json!({"sfu": SFU, "terminated": true}));
    let actions = timeline(&mut restarted, ROOM, vec![ended], T0 + 3);
    assert_eq!(hangups(&actions).len(), 2, "{actions:?}");
    let mut parties = sfu_parties(&actions);
    parties.sort();
    assert_eq!(parties, ["NEWDEV", "SFUDEV"]);
}

#[test]
fn restored_calls_are_in_the_snapshot_and_reconciled_after_the_first_sync() {
    let mut core = setup(&[ALICE, BOB]);
    call_in(&mut core, ALICE, "a", 100);
    call_in(&mut core, BOB, "b", 200);
    let stored: Vec<Call> = core.calls().cloned().collect();

    let mut restarted = Core::new(
        CoreConfig::new(SFU, "SFUDEV"),
        Box::new(|b: &mut [u8]| b.fill(1)),
    );
    restarted.restore(stored);
    let snap = restarted.snapshot(T0);
    assert_eq!(snap.sessions.len(), 2);
    assert_eq!(snap.conferences.len(), 1);
    assert_eq!(snap.subscriptions.len(), 2);
    snap.validate().unwrap();

    // The first (full-state) sync after the restart: Bob left while we were down.
    first_sync_after_restart(&mut restarted, "leave", T0 + 5);
    let actions = drain(&mut restarted);
    assert_eq!(hangups(&actions), ["left_conference"]);
    assert_eq!(
        restarted
            .calls()
            .map(|c| c.caller.as_str())
            .collect::<Vec<_>>(),
        [ALICE]
    );
    // A replayed invite of a restored call is still a duplicate.
    assert!(invite_in(&mut restarted, ALICE, "a", 100, T0 + 10).is_empty());
}

#[test]
fn without_the_relay_calls_are_refused_as_relay_unavailable() {
    let mut core = setup(&[ALICE]);
    core.relay = None;
    let actions = invite_in(&mut core, ALICE, "a", 100, T0);
    assert_eq!(hangups(&actions), ["relay_unavailable"]);
    // And a relay that refuses the session after the fact, or did not answer in time
    // (it may have taken the session after all): the relay is told to remove the
    // session and the conference, which has no other call.
    let mut core = setup(&[ALICE]);
    let id = call_in(&mut core, ALICE, "a", 100);
    core.admission_failed(&id, T0);
    let actions = drain(&mut core);
    assert_eq!(hangups(&actions), ["relay_unavailable"]);
    assert_eq!(core.calls().count(), 0);
    let removed: Vec<_> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Relay(RequestBody::RemoveSession { session_id, .. }) => {
                Some(format!("session {session_id}"))
            }
            Action::Relay(RequestBody::RemoveConference { .. }) => Some("its conference".into()),
            _ => None,
        })
        .collect();
    assert_eq!(removed, [format!("session {id}"), "its conference".into()]);
    // With another call in the conference, only the session goes.
    let mut core = setup(&[ALICE, BOB]);
    call_in(&mut core, BOB, "b", 200);
    let id = call_in(&mut core, ALICE, "a", 100);
    core.admission_failed(&id, T0);
    let actions = drain(&mut core);
    assert!(actions.iter().any(|a| matches!(a,
        Action::Relay(RequestBody::RemoveSession { session_id, .. }) if *session_id == id)));
    assert!(
        !actions
            .iter()
            .any(|a| matches!(a, Action::Relay(RequestBody::RemoveConference { .. })))
    );
}

#[test]
fn room_invites_are_joined_only_from_allowed_users() {
    let mut core = setup(&[]);
    let invite_from = |who: &str| {
        json!({"invite_state": {"events": [{"type": "m.room.member", "sender": who, "state_key": SFU,
            "content": {"membership": "invite", "is_direct": true}}]}})
    };
    // A remote server's invite whose stripped state (which it writes) names alice as
    // the inviter first; the homeserver appends the real invite event last.
    let mut forged = invite_from(ALICE);
    forged["invite_state"]["events"]
        .as_array_mut()
        .unwrap()
        .push(invite_from("@eve:evil.example")["invite_state"]["events"][0].clone());
    let sync: SyncResponse = serde_json::from_value(json!({"next_batch": "x", "rooms": {"invite": {
        "!a:hs": invite_from(ALICE), "!b:hs": invite_from("@eve:evil.example"), "!c:hs": {"invite_state": {"events": [7]}},
        "!d:hs": forged
    }}}))
    .unwrap();
    core.handle_sync(&sync, T0, false);
    let actions = drain(&mut core);
    assert_eq!(
        actions,
        [
            Action::JoinRoom("!a:hs".into()),
            Action::DeclineInvite("!b:hs".into()),
            Action::DeclineInvite("!c:hs".into()),
            Action::DeclineInvite("!d:hs".into())
        ]
    );
    // An allowed user's room invites count against its invite rate (20 a minute).
    let rooms: serde_json::Map<String, Value> = (0..25)
        .map(|i| (format!("!r{i:02}:hs"), invite_from(BOB)))
        .collect();
    let sync: SyncResponse = serde_json::from_value(
        json!({"next_batch": "y", "rooms": {"invite": Value::Object(rooms)}}),
    )
    .unwrap();
    core.handle_sync(&sync, T0, false);
    let actions = drain(&mut core);
    let joined = actions
        .iter()
        .filter(|a| matches!(a, Action::JoinRoom(_)))
        .count();
    assert_eq!((joined, actions.len()), (20, 25));
    assert_eq!(core.stats().dropped.get("room_invite_over_rate"), Some(&5));
    // Declined room invites do not use up the minute's one refusal of a call invite.
    let call = invite(BOB, "b", "conf", &offer(200), T0);
    assert_eq!(
        hangups(&timeline(&mut core, BOB_DM, vec![call], T0)),
        ["rate_limited"]
    );
    // A minute later there is room again.
    let sync: SyncResponse =
        serde_json::from_value(json!({"next_batch": "z", "rooms": {"invite": {
            "!late:hs": invite_from(BOB)
        }}}))
        .unwrap();
    core.handle_sync(&sync, T0 + 60_000, false);
    assert_eq!(drain(&mut core), [Action::JoinRoom("!late:hs".into())]);
}

/// Past `max_rooms` rooms (those joined and those being joined), an allowed user's
/// invite is declined and counted; a room left makes room again.
#[test]
fn room_invites_past_max_rooms_are_declined() {
    // In ROOM, DM and BOB_DM already.
    let mut core = setup(&[ALICE]);
    core.cfg.limits.max_rooms = 5;
    let invite_from = |who: &str| {
        json!({"invite_state": {"events": [{"type": "m.room.member", "sender": who, "state_key": SFU,
            "content": {"membership": "invite"}}]}})
    };
    let invites = |rooms: &[&str]| -> SyncResponse {
        let rooms: serde_json::Map<String, Value> = rooms
            .iter()
            .map(|r| (r.to_string(), invite_from(ALICE)))
            .collect();
        serde_json::from_value(
            json!({"next_batch": "x", "rooms": {"invite": Value::Object(rooms)}}),
        )
        .unwrap()
    };
    core.handle_sync(&invites(&["!a:hs", "!b:hs", "!c:hs"]), T0, false);
    assert_eq!(
        drain(&mut core),
        [
            Action::JoinRoom("!a:hs".into()),
            Action::JoinRoom("!b:hs".into()),
            Action::DeclineInvite("!c:hs".into())
        ]
    );
    assert_eq!(
        core.stats().dropped.get("room_invite_over_max_rooms"),
        Some(&1)
    );
    assert_eq!(core.stats().rooms_declined, 1);
    // Joined now; a later invite is declined too.
    core.handle_sync(
        &batch(json!({"!a:hs": {"state": {"events": [member(ALICE, "join"), member(SFU, "join")]}},
                      "!b:hs": {"state": {"events": [member(ALICE, "join"), member(SFU, "join")]}}})),
        T0,
        false,
    );
    drain(&mut core);
    core.handle_sync(&invites(&["!d:hs"]), T0, false);
    assert_eq!(drain(&mut core), [Action::DeclineInvite("!d:hs".into())]);
    // Once sync shows a room left, there is room for one more.
    let left: SyncResponse =
        serde_json::from_value(json!({"next_batch": "y", "rooms": {"leave": {"!a:hs": {}}}}))
            .unwrap();
    core.handle_sync(&left, T0, false);
    core.handle_sync(&invites(&["!e:hs"]), T0, false);
    assert_eq!(drain(&mut core), [Action::JoinRoom("!e:hs".into())]);
}

#[test]
fn an_encrypted_dm_gets_one_notice() {
    let mut core = setup(&[ALICE]);
    let enc = json!({"type": "m.room.encrypted", "sender": ALICE, "content": {"algorithm": "m.megolm.v1.aes-sha2"}});
    let actions = timeline(&mut core, DM, vec![enc.clone(), enc.clone()], T0);
    assert!(
        matches!(&actions[..], [Action::Send { event_type, content, .. }]
        if event_type == "m.room.message" && content["msgtype"] == "m.notice"),
        "{actions:?}"
    );
    // The conference room itself is encrypted by design: no notice there.
    assert!(timeline(&mut core, ROOM, vec![enc.clone()], T0).is_empty());
    // Nor in a room of more members without a conference (yet): everyone would see it.
    let group = vec![
        member(ALICE, "join"),
        member(BOB, "join"),
        member(SFU, "join"),
        enc,
    ];
    assert!(timeline(&mut core, "!group:hs", group, T0).is_empty());
}

#[test]
fn generations_only_grow() {
    let mut core = setup(&[]);
    let a = core.next_generation(T0);
    let b = core.next_generation(T0);
    let c = core.next_generation(T0 - 5_000);
    assert!(a < b && b < c);
    // After a restart whose clock went back an hour, above what the last run used.
    let mut restarted = setup(&[]);
    restarted.generations_above(c.0 + 1_000);
    let d = restarted.next_generation(T0 - 3_600_000);
    assert!(d.0 > c.0 + 1_000);
}

#[test]
fn a_relay_reconnect_forgets_who_was_connected_until_the_relay_says_again() {
    let mut core = setup(&[ALICE]);
    let id = call_in(&mut core, ALICE, "a", 100);
    let addr: SocketAddr = "198.51.100.2:5000".parse().unwrap();
    core.handle_relay(
        &NotificationBody::SessionConnected {
            session_id: id.clone(),
            addr,
        },
        T0,
    );
    assert!(core.calls().all(|c| c.connected));
    core.set_relay_info(relay_info(), T0);
    assert!(core.calls().all(|c| !c.connected));
    core.handle_relay(
        &NotificationBody::SessionConnected {
            session_id: id,
            addr,
        },
        T0,
    );
    assert!(core.calls().all(|c| c.connected));
}

#[test]
fn a_relay_back_with_another_certificate_or_address_ends_every_call() {
    let mut core = setup(&[ALICE, BOB]);
    call_in(&mut core, ALICE, "a", 100);
    call_in(&mut core, BOB, "b", 200);
    // The same relay again (a restart with its cert and key): the calls stay, for the
    // snapshot to give back.
    core.set_relay_info(relay_info(), T0);
    assert!(drain(&mut core).is_empty());
    assert_eq!(core.calls().count(), 2);
    // Another certificate: nobody can finish DTLS with the answers they hold.
    let mut other = relay_info();
    other.dtls_fingerprint = "01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF"
        .parse()
        .unwrap();
    core.set_relay_info(other.clone(), T0);
    let actions = drain(&mut core);
    assert_eq!(
        hangups(&actions),
        ["relay_unavailable", "relay_unavailable"]
    );
    assert!(member_ended(&actions).is_empty(), "{actions:?}");
    assert_eq!(core.calls().count(), 0);
    assert!(core.snapshot(T0).sessions.is_empty());
    // Another address: the same.
    call_in(&mut core, ALICE, "a2", 300);
    let stored: Vec<Call> = core.calls().cloned().collect();
    other.candidates = vec!["203.0.113.8:10000".parse().unwrap()];
    core.set_relay_info(other.clone(), T0);
    assert_eq!(hangups(&drain(&mut core)), ["relay_unavailable"]);
    assert_eq!(core.calls().count(), 0);
    // Calls a restarted signaling restores carry the relay their answer named; those
    // stored by older versions, which did not keep it, are left to the relay's ICE
    // timeout.
    // (The store keeps each call as JSON; one written before the field existed.)
    let mut json = serde_json::to_value(&stored[0]).unwrap();
    assert!(json["answered_relay"]["candidates"].is_array(), "{json}");
    json.as_object_mut().unwrap().remove("answered_relay");
    let mut older: Call = serde_json::from_value(json).unwrap();
    assert_eq!(older.answered_relay, None);
    older.spec.session_id = SessionId::new("s-older").unwrap();
    older.call_id = "older".into();
    let mut restarted = Core::new(
        CoreConfig::new(SFU, "SFUDEV"),
        Box::new(|b: &mut [u8]| b.fill(9)),
    );
    restarted.restore(stored.into_iter().chain([older]));
    restarted.set_relay_info(other, T0);
    assert_eq!(hangups(&drain(&mut restarted)), ["relay_unavailable"]);
    let left: Vec<&str> = restarted.calls().map(|c| c.call_id.as_str()).collect();
    assert_eq!(left, ["older"]);
}

#[test]
fn an_active_speaker_change_reaches_every_call_of_the_conference_in_its_dm() {
    let mut core = setup(&[ALICE, BOB]);
    let alice = call_in(&mut core, ALICE, "a", 100);
    let bob = call_in(&mut core, BOB, "b", 200);
    let conf_id = core
        .calls()
        .find(|c| c.spec.session_id == bob)
        .unwrap()
        .spec
        .conf_id
        .clone();
    core.handle_relay(
        &NotificationBody::ActiveSpeaker {
            conf_id: conf_id.clone(),
            session_id: bob.clone(),
        },
        T0,
    );
    let actions = drain(&mut core);
    let mut got: Vec<(String, Value)> = actions
        .iter()
        .map(|a| match a {
            Action::Send {
                room,
                event_type,
                content,
            } if event_type == crate::events::ACTIVE_SPEAKER => (room.clone(), content.clone()),
            other => panic!("{other:?}"),
        })
        .collect();
    got.sort_by(|x, y| x.1["call_id"].as_str().cmp(&y.1["call_id"].as_str()));
    let speaker = json!({"user_id": BOB, "party_id": "@bob:hs-dev"});
    assert_eq!(
        got,
        [
            (
                DM.to_owned(),
                json!({"call_id": "a", "party_id": "SFUDEV", "version": "1", "speaker": speaker})
            ),
            (
                BOB_DM.to_owned(),
                json!({"call_id": "b", "party_id": "SFUDEV", "version": "1", "speaker": speaker})
            ),
        ]
    );
    assert_eq!(core.stats().speaker_events, 2);
    // A speaker the SFU does not know (ended meanwhile), or named under another
    // conference, is no news.
    core.handle_relay(
        &NotificationBody::ActiveSpeaker {
            conf_id: conf_id.clone(),
            session_id: SessionId::new("s-gone").unwrap(),
        },
        T0,
    );
    core.handle_relay(
        &NotificationBody::ActiveSpeaker {
            conf_id: crate::core::relay_conf_id(ROOM, "other"),
            session_id: alice,
        },
        T0,
    );
    assert!(drain(&mut core).is_empty());
}
