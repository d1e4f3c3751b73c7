//! `blindfold-signaling` end to end: a real Synapse on 127.0.0.1, the real relay and
//! signaling binaries, and test users calling over the client-server API. Each test
//! asserts on what a user or the relay sees: the answer's transport and a real ICE +
//! DTLS connection to the relay, hangups with their `org.matrix.msc2359.reason`, the
//! relay's session count, media that keeps flowing across a signaling crash, calls that
//! come back after a relay crash.

// Real processes, sockets and deadlines: the test reads the clock.
#![allow(clippy::disallowed_methods)]

use std::path::Path;
use std::time::{Duration, Instant};

use blindfold_client::DropReason;
use blindfold_client::Event as PEvent;
use blindfold_relay::dtls::DtlsCert;
use blindfold_relay::id::{Pt, RtpTime, Ssrc};
use blindfold_tests::browser::{self, Browser, BrowserKind, Report};
use blindfold_tests::hs_proxy::HomeserverProxy;
use blindfold_tests::matrix::MatrixUser;
use blindfold_tests::process::Relay;
use blindfold_tests::signaling::{
    Answer, CONF, CallPeer, Caller, Sfu, Signaling, conference_room, dm, drive, invite_content,
    sfu, sfu_behind, sfu_on, sfu_reply, sfu_with,
};
use blindfold_tests::synapse::{PASSWORD, Synapse, unique_localpart};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(20);

/// Sends `content` as an `m.call.invite` in `dm` and waits for the SFU's answer or
/// hangup for that call: `(event type, content)`.
fn call(user: &mut MatrixUser, dm: &str, content: &Value) -> (String, Value) {
    let call_id = content["call_id"].as_str().expect("call_id");
    user.send_event(dm, "m.call.invite", content)
        .expect("send invite");
    reply_to(user, dm, call_id)
}

/// Waits for the SFU's answer or hangup for `user`'s call `call_id` in `dm`:
/// `(event type, content)`.
fn reply_to(user: &mut MatrixUser, dm: &str, call_id: &str) -> (String, Value) {
    let me = user.user_id().to_owned();
    user.wait_for(&format!("the SFU's reply to {call_id}"), WAIT, |sync| {
        sfu_reply(sync, dm, &me, call_id)
    })
}

fn answered(reply: &(String, Value)) -> Answer {
    assert_eq!(reply.0, "m.call.answer", "{reply:?}");
    Answer::parse(reply.1["answer"]["sdp"].as_str().expect("answer sdp"))
        .expect("the answer parses")
}

fn hangup_code(reply: &(String, Value)) -> String {
    assert_eq!(reply.0, "m.call.hangup", "{reply:?}");
    reply.1["org.matrix.msc2359.reason"]
        .as_str()
        .expect("reason code")
        .to_owned()
}

/// The relay's configured sessions, as its gauge last showed them. Its workers publish
/// the gauge every 100 ms: a session added or removed just now may not show yet.
fn relay_sessions(relay: &Relay) -> u64 {
    relay.metric("blindfold_sessions{state=\"configured\"}")
}

/// [`relay_sessions`] once the gauge has caught up with whatever happened before the
/// call (more than one publishing interval later): for checks that nothing changed.
fn settled_sessions(relay: &Relay) -> u64 {
    std::thread::sleep(Duration::from_millis(250));
    relay_sessions(relay)
}

/// Bob hangs up call `b`; the signaling that owns it removes his relay session, leaving
/// Alice's.
fn hang_up_bob(bob: &MatrixUser, bob_dm: &str, relay: &Relay) {
    bob.send_event(
        bob_dm,
        "m.call.hangup",
        &json!({"call_id": "b", "party_id": "TESTDEV", "version": "1", "reason": "user_hangup"}),
    )
    .unwrap();
    wait_sessions(relay, 1, Duration::from_secs(5));
}

fn wait_sessions(relay: &Relay, n: u64, limit: Duration) {
    relay.wait_until(limit, &format!("{n} relay sessions"), || {
        relay_sessions(relay) == n
    });
}

#[test]
fn a_member_is_answered_and_connects_to_the_relay() {
    let s = sfu();
    let synapse = Synapse::shared();
    let mut alice = synapse.new_user("alice");
    let room = conference_room(&alice, &[], &s.user_id, CONF);
    let dm = dm(&alice, &s.user_id);
    let caller = Caller::new(1);
    let started = Instant::now();
    let reply = call(
        &mut alice,
        &dm,
        &invite_content("call-1", &room, CONF, &caller.offer()),
    );
    let answer = answered(&reply);
    eprintln!("invite to answer: {:?}", started.elapsed());
    assert_eq!(reply.1["version"], "1");
    assert!(answer.ice_lite, "answer is not ice-lite");
    assert_eq!(answer.setup, "passive");
    assert!(answer.end_of_candidates);
    assert_eq!(answer.candidates, [s.relay.udp], "the relay's candidate");
    wait_sessions(&s.relay, 1, WAIT);

    let mut peer = caller.connect(&answer);
    drive(
        &mut [&mut peer],
        WAIT,
        "ICE and DTLS with the answered credentials",
        |p| p[0].connected(),
    );
    s.relay.wait_until(WAIT, "the session connected", || {
        s.relay.metric("blindfold_sessions{state=\"connected\"}") == 1
    });
    // The relay's fingerprint in the answer is the one DTLS proved (the participant
    // refuses any other), and signaling saw the session connect.
    let deadline = Instant::now() + WAIT;
    while s
        .signaling
        .metric("blindfold_signaling_calls{state=\"connected\"}")
        != Some(1.0)
    {
        assert!(
            Instant::now() < deadline,
            "signaling never saw the call connect"
        );
        peer.step();
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The media SSRC of the `m=video` section of `sdp`: its FID group's first, or else the
/// first it declares.
fn video_ssrc(sdp: &str) -> Ssrc {
    let video = sdp.split("m=video").nth(1).expect("a video section");
    let fid = video
        .lines()
        .find_map(|l| l.strip_prefix("a=ssrc-group:FID "));
    let line = fid.or_else(|| video.lines().find_map(|l| l.strip_prefix("a=ssrc:")));
    Ssrc(
        line.and_then(|l| l.split(' ').next()?.parse().ok())
            .expect("a video SSRC"),
    )
}

/// A browser's WebRTC stack places the call (headless: `browser.rs`), and another
/// member, Bob, connects with the participant library. A browser is no Blindfold
/// participant (it keys SRTP from DTLS, so the relay would hold its media keys), but
/// its transport must work with the relay's: the SFU accepts its offer as it comes
/// (VP8 with RTX, so an FID group; RTX left out of the answer), the browser accepts
/// the answer, does ICE with the ICE-lite relay (answering
/// the relay's own check of the address it nominated) and DTLS, and the relay reads its
/// RTP and SRTCP, dropping none, forwards its media to Bob and sends it a keyframe
/// request Bob asked for. Returns the browser's report once `ready` (and the common
/// conditions) held, with the relay's session guard for more checks.
fn browser_calls(
    kind: BrowserKind,
    program: &Path,
    relay: Relay,
    ready: impl Fn(&Report) -> bool,
) -> (Report, Sfu) {
    let s = sfu_on(Synapse::shared(), relay, "");
    let synapse = Synapse::shared();
    let mut alice = synapse.new_user("alice");
    let mut bob = synapse.new_user("bob");
    let room = conference_room(&alice, &[&bob], &s.user_id, CONF);
    let (alice_dm, bob_dm) = (dm(&alice, &s.user_id), dm(&bob, &s.user_id));

    let browser = Browser::start(kind, program);
    let offer = browser.offer(WAIT);
    let reply = call(
        &mut alice,
        &alice_dm,
        &invite_content("browser", &room, CONF, &offer),
    );
    assert_eq!(
        reply.0, "m.call.answer",
        "{kind:?}'s offer:\n{offer}\nreply: {reply:?}"
    );
    assert!(
        offer.contains("a=ssrc-group:FID "),
        "{kind:?}'s offer:\n{offer}"
    );
    let answer = reply.1["answer"]["sdp"].as_str().expect("answer sdp");
    assert!(!answer.to_ascii_lowercase().contains(" rtx/"), "{answer}");
    browser.answer(answer);

    let cb = Caller::new(40);
    let ab = answered(&call(
        &mut bob,
        &bob_dm,
        &invite_content("b", &room, CONF, &cb.offer()),
    ));
    let mut pb = cb.connect(&ab);
    let browser_video = video_ssrc(&offer);
    let mut asked: Option<Instant> = None;
    let deadline = Instant::now() + WAIT;
    let report = loop {
        pb.step();
        // Bob asks for a keyframe of the browser's video once he is connected, and again
        // every half second until one reached the browser (one asked before the browser
        // connected goes nowhere), as a receiver waiting for a picture does.
        let got_pli = |r: &Report| {
            r.stat("outbound-rtp", |s| s["kind"] == "video")
                .is_some_and(|v| v["pliCount"].as_u64() >= Some(1))
        };
        if pb.connected()
            && asked.is_none_or(|t| t.elapsed() >= Duration::from_millis(500))
            && !browser.report().is_some_and(|r| got_pli(&r))
        {
            pb.p_mut()
                .request_keyframe(Instant::now(), browser_video)
                .expect("request_keyframe");
            asked = Some(Instant::now());
        }
        let report = browser.report().filter(|r| {
            r.connection_state() == "connected"
                && r.packets_sent("audio") >= 100
                && r.packets_sent("video") >= 100
                && got_pli(r)
                && ready(r)
        });
        if let Some(r) = report {
            break r;
        }
        if Instant::now() >= deadline {
            let scrape = s.relay.scrape();
            let counters: Vec<&str> = scrape
                .lines()
                .filter(|l| l.starts_with("blindfold_") && !l.ends_with(" 0"))
                .collect();
            panic!(
                "{kind:?} never connected, sent 100 audio and video packets, got a PLI and \
                 passed its own check (Bob connected: {}); the relay's counters:\n{}\n\
                 the browser's last report: {:#?}",
                pb.connected(),
                counters.join("\n"),
                browser.report()
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    };

    // The relay: both sessions connected; the browser's RTP and SRTCP accepted and
    // nothing of it dropped. Bob sends no media, and his SRTCP is read off his own
    // counter after the relay's (he does not step in between), so what remains is the
    // browser's.
    assert_eq!(s.relay.metric("blindfold_sessions{state=\"connected\"}"), 2);
    let accepted = s.relay.metric("blindfold_rtp_accepted_total");
    let srtcp = s.relay.metric("blindfold_srtcp_received_total");
    let bob_stats = pb.p().stats();
    assert_eq!(bob_stats.media_out, 0);
    assert!(
        accepted >= 150,
        "{kind:?}'s RTP the relay accepted: {accepted}"
    );
    assert!(
        srtcp > bob_stats.rtcp_out,
        "{kind:?}'s SRTCP the relay accepted: {srtcp} in all, Bob sent {}",
        bob_stats.rtcp_out
    );
    for reason in [
        "before_dtls",
        "rtp_malformed",
        "undeclared_ssrc",
        "srtcp_rejected",
        "rtcp_undeclared_ssrc",
    ] {
        let selector = format!("blindfold_drops_total{{reason=\"{reason}\"}}");
        assert_eq!(s.relay.metric(&selector), 0, "{reason}");
    }
    // Forwarded unchanged to Bob, who has no key for it.
    assert!(s.relay.metric("blindfold_rtp_forwarded_total") >= 150);
    drive(&mut [&mut pb], WAIT, "Bob got 150 of its packets", |p| {
        p[0].p().stats().dropped(DropReason::UnknownSsrc) >= 150
    });
    (report, s)
}

/// Chromium (Debian's): see [`browser_calls`], on a relay with two workers. Its stats
/// also show the DTLS and SRTP it negotiated, that it answered the relay's check of the
/// pair it nominated, and that its send-side estimate runs on the relay's transport-cc
/// feedback.
#[test]
fn chromium_calls_the_sfu_and_connects_to_the_relay() {
    // Chromium starts its send-side estimate at 300 kbit/s and probes 900 kbit/s and
    // 1.8 Mbit/s as it connects; above this, its probes were reported on, so it read
    // the relay's transport-cc feedback (its own media, a tone and a plain drawing,
    // needs far less: without probes the estimate stays near its start).
    const PROBED: f64 = 500_000.0;
    let Some(program) = browser::find(BrowserKind::Chromium) else {
        return;
    };
    let (report, s) = browser_calls(BrowserKind::Chromium, &program, Relay::start(2), |r| {
        r.selected_pair()
            .is_some_and(|p| p["availableOutgoingBitrate"].as_f64() > Some(PROBED))
    });
    let transport = report.stat("transport", |_| true).expect("transport stats");
    let pair = report.selected_pair().expect("a selected candidate pair");
    eprintln!(
        "Chromium: DTLS {} {}, SRTP {}; selected pair: {} checks answered, {} sent, \
         available outgoing bitrate {}",
        transport["tlsVersion"],
        transport["dtlsCipher"],
        transport["srtpCipher"],
        pair["responsesSent"],
        pair["requestsSent"],
        pair["availableOutgoingBitrate"]
    );
    assert_eq!(transport["dtlsState"], "connected");
    assert_eq!(
        transport["dtlsRole"], "client",
        "the relay is the DTLS server"
    );
    assert!(
        transport["srtpCipher"]
            .as_str()
            .is_some_and(|c| !c.is_empty())
    );
    // The relay checks the address Chromium nominated before media goes there, and
    // Chromium answered (docs/protocol.md, "ICE").
    assert_eq!(pair["nominated"], true);
    assert!(pair["requestsReceived"].as_u64() >= Some(1), "{pair:#}");
    assert!(pair["responsesSent"].as_u64() >= Some(1), "{pair:#}");
    assert!(s.relay.metric("blindfold_transport_cc_sent_total") >= 1);
}

/// Firefox (Debian's ESR): see [`browser_calls`]. (Its offer declares an RTX SSRC in an
/// FID group even without an RTX codec.)
#[test]
fn firefox_calls_the_sfu_and_connects_to_the_relay() {
    let Some(program) = browser::find(BrowserKind::Firefox) else {
        return;
    };
    // Firefox pairs no candidate with a loopback one.
    let Some(lan) = browser::lan_address() else {
        let why = "no non-loopback IPv4 address for a relay Firefox can reach";
        assert!(browser::required().is_none(), "{why}");
        eprintln!("SKIPPED: {why}");
        return;
    };
    let relay = Relay::start_on(1, lan);
    let (report, _s) = browser_calls(BrowserKind::Firefox, &program, relay, |_| true);
    let pair = report
        .stat("candidate-pair", |p| {
            p["nominated"] == true && p["state"] == "succeeded"
        })
        .expect("a nominated candidate pair");
    eprintln!("Firefox: nominated pair {pair:#}");
}

#[test]
fn refusals_carry_their_reason_and_create_no_relay_session() {
    let s = sfu_with("allow_users = []\n");
    let synapse = Synapse::shared();
    let mut alice = synapse.new_user("alice");
    let mut bob = synapse.new_user("bob");
    let room = conference_room(&alice, &[], &s.user_id, CONF);
    // A second room: a terminated conference, and one naming another SFU.
    alice
        .send_state(
            &room,
            "org.matrix.msc2359.conference",
            "old",
            &json!({"sfu": s.user_id, "terminated": true}),
        )
        .unwrap();
    alice
        .send_state(
            &room,
            "org.matrix.msc2359.conference",
            "theirs",
            &json!({"sfu": "@other-sfu:localhost"}),
        )
        .unwrap();
    let alice_dm = dm(&alice, &s.user_id);
    let bob_dm = dm(&bob, &s.user_id);
    let offer = Caller::new(2).offer();

    let mut expired = invite_content("expired", &room, CONF, &offer);
    expired["lifetime"] = json!(0);
    let mut wrong_types = invite_content("types", &room, CONF, &offer);
    wrong_types["lifetime"] = json!("soon");
    let mut v0 = invite_content("v0", &room, CONF, &offer);
    v0["version"] = json!(0);
    let mut no_sdp = invite_content("nosdp", &room, CONF, &offer);
    no_sdp["offer"] = json!({"type": "offer"});
    let crypto = offer.replace("a=mid:0\r\n", "a=mid:0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz\r\n");
    let huge = format!(
        "{offer}{}",
        "a=x-padding:0123456789abcdef0123456789abcdef\r\n".repeat(1200)
    );

    let cases: Vec<(&str, bool, Value, &str)> = vec![
        (
            "non-member",
            true,
            invite_content("nm", &room, CONF, &offer),
            "not_a_member",
        ),
        (
            "no such conference",
            false,
            invite_content("nc", &room, "nope", &offer),
            "no_such_conference",
        ),
        (
            "terminated",
            false,
            invite_content("t", &room, "old", &offer),
            "conference_terminated",
        ),
        (
            "another SFU",
            false,
            invite_content("w", &room, "theirs", &offer),
            "wrong_sfu",
        ),
        ("expired invite", false, expired, "invite_expired"),
        ("wrong JSON types", false, wrong_types, "bad_offer"),
        ("version 0", false, v0, "bad_offer"),
        ("no SDP", false, no_sdp, "bad_offer"),
        (
            "garbage SDP",
            false,
            invite_content("g", &room, CONF, "v=0\r\nthis is not sdp"),
            "bad_offer",
        ),
        (
            "a=crypto",
            false,
            invite_content("cr", &room, CONF, &crypto),
            "bad_offer",
        ),
        (
            "oversized SDP",
            false,
            invite_content("big", &room, CONF, &huge),
            "bad_offer",
        ),
    ];
    for (what, by_bob, content, code) in cases {
        let reply = if by_bob {
            call(&mut bob, &bob_dm, &content)
        } else {
            call(&mut alice, &alice_dm, &content)
        };
        assert_eq!(hangup_code(&reply), code, "{what}");
    }
    assert_eq!(
        settled_sessions(&s.relay),
        0,
        "a refusal created relay state"
    );
    // And the bot still answers a good call.
    let reply = call(
        &mut alice,
        &alice_dm,
        &invite_content("good", &room, CONF, &offer),
    );
    answered(&reply);
    wait_sessions(&s.relay, 1, WAIT);
}

#[test]
fn over_capacity_and_outsiders_are_refused() {
    let synapse = Synapse::shared();
    let mut alice = synapse.new_user("alice");
    let mut bob = synapse.new_user("bob");
    let s = sfu_with(&format!(
        "max_calls_per_conference = 1\nallow_users = [\"{}\", \"{}\"]\n",
        alice.user_id(),
        bob.user_id()
    ));
    let carol = synapse.new_user("carol");
    let room = conference_room(&alice, &[&bob, &carol], &s.user_id, CONF);
    let (alice_dm, bob_dm) = (dm(&alice, &s.user_id), dm(&bob, &s.user_id));
    answered(&call(
        &mut alice,
        &alice_dm,
        &invite_content("a", &room, CONF, &Caller::new(3).offer()),
    ));
    let reply = call(
        &mut bob,
        &bob_dm,
        &invite_content("b", &room, CONF, &Caller::new(4).offer()),
    );
    assert_eq!(hangup_code(&reply), "over_capacity");

    // Carol is not on the allow-list: the SFU does not join her DM at all.
    let carol_dm = carol
        .create_room(
            &json!({"preset": "trusted_private_chat", "is_direct": true, "invite": [s.user_id]}),
        )
        .unwrap();
    // Wait for the SFU to have handled the invite (declined it), not for a fixed time.
    let deadline = Instant::now() + WAIT;
    while s
        .signaling
        .metric("blindfold_signaling_room_invites_total{outcome=\"declined\"}")
        != Some(1.0)
    {
        assert!(
            Instant::now() < deadline,
            "the SFU never declined the outsider's invite"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let members = carol.joined_members(&carol_dm).unwrap();
    assert!(
        !members.contains(&s.user_id),
        "the SFU joined an outsider's DM"
    );
    assert_eq!(settled_sessions(&s.relay), 1);
}

#[test]
fn leaving_the_room_or_ending_the_conference_hangs_up() {
    let s = sfu();
    let synapse = Synapse::shared();
    let mut alice = synapse.new_user("alice");
    let mut bob = synapse.new_user("bob");
    let room = conference_room(&alice, &[&bob], &s.user_id, CONF);
    let (alice_dm, bob_dm) = (dm(&alice, &s.user_id), dm(&bob, &s.user_id));
    answered(&call(
        &mut alice,
        &alice_dm,
        &invite_content("a", &room, CONF, &Caller::new(5).offer()),
    ));
    answered(&call(
        &mut bob,
        &bob_dm,
        &invite_content("b", &room, CONF, &Caller::new(6).offer()),
    ));
    wait_sessions(&s.relay, 2, WAIT);

    let left = Instant::now();
    bob.leave(&room).unwrap();
    let reply = wait_reply_type(&mut bob, &bob_dm, "b", "m.call.hangup");
    assert_eq!(reply["org.matrix.msc2359.reason"], "left_conference");
    wait_sessions(&s.relay, 1, Duration::from_secs(2));
    eprintln!("leave to relay session gone: {:?}", left.elapsed());

    alice
        .send_state(
            &room,
            "org.matrix.msc2359.conference",
            CONF,
            &json!({"sfu": s.user_id, "terminated": true}),
        )
        .unwrap();
    let reply = wait_reply_type(&mut alice, &alice_dm, "a", "m.call.hangup");
    assert_eq!(reply["org.matrix.msc2359.reason"], "conference_terminated");
    wait_sessions(&s.relay, 0, Duration::from_secs(2));

    // Everyone leaves: the SFU leaves each room once nobody else is in it, and forgets
    // it once its sync shows it left.
    let rooms = || s.signaling.metric("blindfold_signaling_rooms");
    assert_eq!(rooms(), Some(3.0));
    let admin = synapse.new_admin("admin");
    let joined = |room: &str| admin.joined_members_as_admin(room).expect("room members");
    for (user, room) in [(&alice, &room), (&alice, &alice_dm), (&bob, &bob_dm)] {
        assert!(joined(room).contains(&s.user_id));
        user.leave(room).unwrap();
    }
    let deadline = Instant::now() + WAIT;
    for room in [&room, &alice_dm, &bob_dm] {
        while !joined(room).is_empty() {
            assert!(Instant::now() < deadline, "the SFU stayed in {room}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    assert_eq!(
        s.signaling.metric("blindfold_signaling_rooms_left_total"),
        Some(3.0)
    );
    while rooms() != Some(0.0) {
        assert!(
            Instant::now() < deadline,
            "signaling still counts {:?} rooms",
            rooms()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wait_reply_type(user: &mut MatrixUser, dm: &str, call_id: &str, kind: &str) -> Value {
    let me = user.user_id().to_owned();
    user.wait_for_room_event(
        dm,
        kind,
        |e| e["content"]["call_id"] == call_id && e["sender"].as_str() != Some(me.as_str()),
        WAIT,
    )["content"]
        .clone()
}

fn send_audio(p: &mut CallPeer, n: u8) {
    let ssrc = p.p().ssrcs().audio;
    p.p_mut()
        .send_rtp(
            Instant::now(),
            ssrc,
            Pt(111),
            false,
            RtpTime(u32::from(n) * 960),
            &[],
            &[n; 40],
        )
        .expect("send_rtp");
}

fn received_from(p: &CallPeer, n: u8) -> bool {
    p.events
        .iter()
        .any(|e| matches!(e, PEvent::Media(m) if m.payload() == [n; 40]))
}

/// Sends audio packet `n` from `from` and steps both peers until `to` has decrypted it;
/// panics after [`WAIT`] naming `what`.
fn media_flows(from: &mut CallPeer, to: &mut CallPeer, n: u8, what: &str) {
    send_audio(from, n);
    drive(&mut [from, to], WAIT, what, |p| received_from(p[1], n));
}

/// Connects each caller's participant with its answer and shares their media keys.
fn connect_both(calls: [(&Caller, &Answer); 2], what: &str) -> (CallPeer, CallPeer) {
    let [(ca, aa), (cb, ab)] = calls;
    let (mut pa, mut pb) = (ca.connect(aa), cb.connect(ab));
    drive(&mut [&mut pa, &mut pb], WAIT, what, |p| {
        p.iter().all(|p| p.connected())
    });
    let (ka, kb) = (pa.key.clone(), pb.key.clone());
    blindfold_tests::share_keys_among(&mut [(pa.p_mut(), &ka), (pb.p_mut(), &kb)]);
    (pa, pb)
}

/// Alice and Bob, members of a conference on `s`, in answered calls "a" and "b" with
/// connected participants, Alice's first packet received by Bob.
struct TwoCalls {
    bob: MatrixUser,
    bob_dm: String,
    /// Alice's and Bob's callers and answers.
    calls: [(Caller, Answer); 2],
    pa: CallPeer,
    pb: CallPeer,
}

/// [`TwoCalls`] with callers numbered `first` and `first + 1`.
fn two_calls_with_media(s: &Sfu, first: usize) -> TwoCalls {
    let synapse = Synapse::shared();
    let mut alice = synapse.new_user("alice");
    let mut bob = synapse.new_user("bob");
    let room = conference_room(&alice, &[&bob], &s.user_id, CONF);
    let (alice_dm, bob_dm) = (dm(&alice, &s.user_id), dm(&bob, &s.user_id));
    let (ca, cb) = (Caller::new(first), Caller::new(first + 1));
    let aa = answered(&call(
        &mut alice,
        &alice_dm,
        &invite_content("a", &room, CONF, &ca.offer()),
    ));
    let ab = answered(&call(
        &mut bob,
        &bob_dm,
        &invite_content("b", &room, CONF, &cb.offer()),
    ));
    let (mut pa, mut pb) = connect_both([(&ca, &aa), (&cb, &ab)], "both connected");
    media_flows(&mut pa, &mut pb, 1, "media before the crash");
    TwoCalls {
        bob,
        bob_dm,
        calls: [(ca, aa), (cb, ab)],
        pa,
        pb,
    }
}

#[test]
fn a_signaling_crash_does_not_cut_media_and_the_restart_owns_the_calls() {
    let mut s = sfu();
    let TwoCalls {
        bob,
        bob_dm,
        mut pa,
        mut pb,
        ..
    } = two_calls_with_media(&s, 7);

    s.signaling.kill9();
    // While signaling is dead, and while it restarts, media keeps flowing.
    s.signaling.restart();
    for n in 2..=4 {
        media_flows(&mut pa, &mut pb, n, "media across the restart");
    }
    s.signaling.wait_ready();
    media_flows(&mut pb, &mut pa, 9, "media after the restart");
    assert_eq!(
        settled_sessions(&s.relay),
        2,
        "the restart re-created or dropped sessions"
    );
    assert!(
        s.signaling
            .run_log()
            .contains("restored live calls calls=2"),
        "{}",
        s.signaling.run_log()
    );

    // The restarted signaling owns Bob's call: his hangup removes his relay session.
    hang_up_bob(&bob, &bob_dm, &s.relay);
}

/// A relay, and a signaling process for a new SFU account whose homeserver is the
/// shared one behind a [`HomeserverProxy`], ready.
struct Proxied {
    proxy: HomeserverProxy,
    /// The relay, signaling and SFU account, signaling reaching the homeserver through
    /// `proxy`.
    sfu: Sfu,
}

impl Proxied {
    fn start() -> Proxied {
        let synapse = Synapse::shared();
        let proxy = HomeserverProxy::start(synapse.base_url());
        let sfu = sfu_behind(synapse, &proxy.base_url(), Relay::start(1), "");
        Proxied { proxy, sfu }
    }
}

/// A signaling process behind a [`HomeserverProxy`] that refuses its sends, and alice,
/// whose call it admitted (the relay has the session) but could not answer yet.
struct UnsentAnswer {
    proxy: HomeserverProxy,
    relay: Relay,
    signaling: Signaling,
    alice: MatrixUser,
    dm: String,
    caller: Caller,
}

impl UnsentAnswer {
    /// The proxy refuses signaling's sends with a 401 `M_UNKNOWN_TOKEN` if
    /// `lapsed_token`, else with a 502.
    fn new(lapsed_token: bool) -> UnsentAnswer {
        let synapse = Synapse::shared();
        let Proxied {
            proxy,
            sfu:
                Sfu {
                    relay,
                    signaling,
                    user_id,
                },
        } = Proxied::start();
        let alice = synapse.new_user("alice");
        let room = conference_room(&alice, &[], &user_id, CONF);
        let dm = dm(&alice, &user_id);
        match lapsed_token {
            true => proxy.refuse_sends_unauthorized(),
            false => proxy.refuse_sends(true),
        }
        let caller = Caller::new(1);
        let invite = invite_content("call-1", &room, CONF, &caller.offer());
        alice
            .send_event(&dm, "m.call.invite", &invite)
            .expect("send invite");
        wait_sessions(&relay, 1, WAIT);
        relay.wait_until(WAIT, "signaling to try sending the answer", || {
            proxy.refused_sends() > 0
        });
        UnsentAnswer {
            proxy,
            relay,
            signaling,
            alice,
            dm,
            caller,
        }
    }

    /// Lets the sends through and starts signaling again: alice gets the answer the
    /// last run left unsent, and connects with it.
    fn restart_and_connect(mut self) {
        self.proxy.refuse_sends(false);
        self.signaling.restart();
        self.signaling.wait_ready();
        let answer = answered(&reply_to(&mut self.alice, &self.dm, "call-1"));
        let log = self.signaling.run_log();
        assert!(
            log.contains("sending the events the last run left unsent events=1"),
            "{log}"
        );
        self.connect(&answer);
    }

    /// Alice's caller does ICE and DTLS with `answer` and connects.
    fn connect(&self, answer: &Answer) {
        let mut peer = self.caller.connect(answer);
        drive(
            &mut [&mut peer],
            WAIT,
            "ICE and DTLS with the answer",
            |p| p[0].connected(),
        );
    }
}

/// An answer the homeserver fails (502) for longer than the retries of a speaker
/// change last (7 tries, about 16 s) is tried until it takes it, not dropped: once the
/// sends go through, alice gets it without a restart and connects.
#[test]
fn an_answer_the_homeserver_fails_for_long_goes_out_when_it_is_back() {
    let mut t = UnsentAnswer::new(false);
    t.relay.wait_until(
        Duration::from_secs(60),
        "signaling to try the answer more than 7 times",
        || t.proxy.refused_sends() > 7,
    );
    t.proxy.refuse_sends(false);
    let answer = answered(&reply_to(&mut t.alice, &t.dm, "call-1"));
    t.connect(&answer);
    assert!(!t.signaling.run_log().contains("could not send"));
}

/// An answer signaling could not send yet when it was killed (its homeserver failing
/// the sends, the invite's sync batch already marked handled) is sent by the next
/// start, and the call it answers connects.
#[test]
fn an_answer_unsent_when_signaling_is_killed_goes_out_at_the_next_start() {
    let mut t = UnsentAnswer::new(false);
    t.signaling.kill9();
    t.restart_and_connect();
}

/// The state of a full-state sync is not always the room's state: Synapse gives the
/// state after the room's latest event, which lacks what a concurrent branch of the
/// room's event graph set (the SFU joining while the owner announces the conference is
/// enough). Here the proxy takes the conference out of the restart's syncs, as
/// Synapse's full state does then: the restart reads each room's state itself, so the
/// call it restored lives on and a new one is answered.
#[test]
fn a_restart_whose_full_state_sync_lacks_the_conference_keeps_its_calls() {
    let synapse = Synapse::shared();
    let Proxied {
        proxy,
        sfu: Sfu {
            relay,
            mut signaling,
            user_id,
        },
    } = Proxied::start();
    let mut alice = synapse.new_user("alice");
    let mut bob = synapse.new_user("bob");
    let room = conference_room(&alice, &[&bob], &user_id, CONF);
    let (alice_dm, bob_dm) = (dm(&alice, &user_id), dm(&bob, &user_id));
    let (ca, cb) = (Caller::new(1), Caller::new(2));
    answered(&call(
        &mut alice,
        &alice_dm,
        &invite_content("a", &room, CONF, &ca.offer()),
    ));
    wait_sessions(&relay, 1, WAIT);

    proxy.hide_from_syncs("org.matrix.msc2359.conference");
    signaling.restart();
    signaling.wait_ready();
    // Bob is answered: the restart knows the conference is live.
    answered(&call(
        &mut bob,
        &bob_dm,
        &invite_content("b", &room, CONF, &cb.offer()),
    ));
    assert!(
        proxy.hidden_from_syncs() > 0,
        "the restart's sync had no conference to lose"
    );
    // And Alice's call was not hung up.
    assert_eq!(settled_sessions(&relay), 2);
    let log = signaling.run_log();
    assert!(!log.contains("call ended"), "{log}");
}

/// A room the SFU joins while signaling runs has its state read too. Here the proxy
/// keeps the conference's announcement out of every sync (as out of a full state
/// Synapse computes over two branches of the room's graph): only the room's state
/// read from the homeserver tells signaling of the conference, and a member's call is
/// answered.
#[test]
fn a_conference_room_joined_later_has_its_state_read() {
    let synapse = Synapse::shared();
    let Proxied {
        proxy,
        sfu:
            Sfu {
                relay: _relay,
                signaling: _signaling,
                user_id,
            },
    } = Proxied::start();
    proxy.hide_from_syncs("org.matrix.msc2359.conference");
    let mut alice = synapse.new_user("alice");
    let room = conference_room(&alice, &[], &user_id, CONF);
    let dm = dm(&alice, &user_id);
    let caller = Caller::new(1);
    answered(&call(
        &mut alice,
        &dm,
        &invite_content("call-1", &room, CONF, &caller.offer()),
    ));
    assert!(
        proxy.hidden_from_syncs() > 0,
        "no sync had the conference to lose"
    );
}

/// More call events than the sync's timeline limit came while signaling was away: the
/// homeserver cuts the timeline short, and the invite is in the gap. Signaling reads
/// the gap back with `/messages` and answers it. (The proxy lowers the limit from 500
/// to 2, so that four events make the gap.)
#[test]
fn an_invite_in_a_timeline_gap_is_read_back_and_answered() {
    let synapse = Synapse::shared();
    let Proxied {
        proxy,
        sfu:
            Sfu {
                relay: _relay,
                mut signaling,
                user_id,
            },
    } = Proxied::start();
    let mut alice = synapse.new_user("alice");
    let room = conference_room(&alice, &[], &user_id, CONF);
    let dm = dm(&alice, &user_id);

    signaling.kill9();
    let caller = Caller::new(1);
    alice
        .send_event(
            &dm,
            "m.call.invite",
            &invite_content("call-1", &room, CONF, &caller.offer()),
        )
        .expect("send invite");
    for _ in 0..3 {
        let candidates = json!({"call_id": "call-1", "party_id": "TESTDEV", "version": "1",
            "candidates": [{"candidate": "", "sdpMid": "0", "sdpMLineIndex": 0}]});
        alice
            .send_event(&dm, "m.call.candidates", &candidates)
            .expect("send candidates");
    }
    proxy.cut_timelines(2);
    signaling.restart();
    signaling.wait_ready();

    answered(&reply_to(&mut alice, &dm, "call-1"));
    let read = signaling
        .metric("blindfold_signaling_gap_events_total")
        .unwrap_or(0.0);
    assert!(read >= 2.0, "events read back: {read}");
    assert_eq!(
        signaling.metric("blindfold_signaling_limited_timelines_total"),
        Some(0.0),
        "a gap was left unfilled"
    );
}

/// An answer the homeserver refuses because it no longer takes signaling's access
/// token stays queued for the next start, rather than count as sent, and signaling
/// stops for a new login. (A lapsed token fails the sync too; here the send meets it
/// first, the order that used to lose the answer.)
#[test]
fn an_answer_refused_for_a_lapsed_token_goes_out_at_the_next_start() {
    let mut t = UnsentAnswer::new(true);
    // It stops for a new login, as when its sync meets the lapsed token.
    let status = t
        .signaling
        .wait_exit(WAIT)
        .unwrap_or_else(|| panic!("signaling runs on:\n{}", t.signaling.run_log()));
    assert!(!status.success(), "{status}");
    assert!(
        t.signaling
            .run_log()
            .contains("the event waits for the next start"),
        "{}",
        t.signaling.run_log()
    );
    t.restart_and_connect();
}

#[test]
fn a_relay_crash_is_repaired_by_signaling_and_participants_reconnect() {
    // The relay's certificate comes from files, as in production, so the restarted
    // relay proves the same fingerprint the answers carry.
    let relay_cert = DtlsCert::generate().expect("relay certificate");
    let mut s = sfu_on(
        Synapse::shared(),
        Relay::start_with_cert(1, &relay_cert),
        "",
    );
    let TwoCalls {
        bob,
        bob_dm,
        calls: [(ca, aa), (cb, ab)],
        pa,
        pb,
    } = two_calls_with_media(&s, 11);
    assert_eq!(aa.fingerprint, relay_cert.fingerprint());

    s.relay.kill9();
    let restarted = Instant::now();
    s.relay.restart();
    // Signaling notices, reconnects and re-pushes both sessions within 2 s of the new
    // relay's start.
    s.relay.wait_until(
        Duration::from_secs(2).saturating_sub(restarted.elapsed()),
        "signaling to re-push both sessions within 2 s",
        || relay_sessions(&s.relay) == 2,
    );
    eprintln!(
        "relay start to sessions re-pushed: {:?}",
        restarted.elapsed()
    );

    // The participants' DTLS sessions died with the relay, and their consent checks keep
    // succeeding against the new relay (same ICE credentials). These participants
    // stamp no transport-wide sequence numbers, so nothing tells them (the conference
    // test has the library notice and reconnect): a new participant from the SAME
    // answer (credentials, candidate, fingerprint).
    drop((pa, pb));
    let (mut pa, mut pb) = connect_both(
        [(&ca, &aa), (&cb, &ab)],
        "ICE and DTLS again with the same answers",
    );
    s.relay
        .wait_until(WAIT, "both sessions connected again", || {
            s.relay.metric("blindfold_sessions{state=\"connected\"}") == 2
        });
    media_flows(
        &mut pa,
        &mut pb,
        2,
        "media from Alice to Bob after the restart",
    );
    media_flows(
        &mut pb,
        &mut pa,
        3,
        "media from Bob to Alice after the restart",
    );
    assert_eq!(
        s.signaling
            .metric("blindfold_signaling_relay_connects_total"),
        Some(2.0),
        "signaling should have connected to the relay twice"
    );
    // The calls are still signaling's: a hangup removes the relay session.
    hang_up_bob(&bob, &bob_dm, &s.relay);
}

#[test]
fn a_relay_back_with_another_certificate_hangs_up_every_call() {
    // No cert/key: the relay generates a certificate at each start, so the restarted one
    // proves another fingerprint than the answers carry, and nobody could finish DTLS.
    let mut s = sfu();
    let TwoCalls {
        mut bob, bob_dm, ..
    } = two_calls_with_media(&s, 13);
    s.relay.restart();
    let restarted = Instant::now();
    let hangup = wait_reply_type(&mut bob, &bob_dm, "b", "m.call.hangup");
    eprintln!(
        "bob's hangup {:?} after the relay's restart",
        restarted.elapsed()
    );
    assert_eq!(
        hangup["org.matrix.msc2359.reason"], "relay_unavailable",
        "{hangup}"
    );
    assert_eq!(hangup["reason"], "unknown_error", "{hangup}");
    // Neither call is given back to the new relay.
    s.relay
        .wait_until(WAIT, "no sessions", || relay_sessions(&s.relay) == 0);
    assert_eq!(
        s.signaling
            .metric("blindfold_signaling_calls_ended_total{reason=\"relay_unavailable\"}"),
        Some(2.0)
    );
}

#[test]
fn an_sfu_account_with_encryption_keys_refuses_to_start() {
    let synapse = Synapse::shared();
    let local = unique_localpart("sfu");
    let reg = synapse.register(&local, PASSWORD, false);
    // Someone used the account with an encrypting client.
    let other = MatrixUser::new(
        synapse.base_url(),
        &reg.user_id,
        &reg.device_id,
        &reg.access_token,
    );
    other.upload_device_keys().expect("upload keys");
    let relay = Relay::start(1);
    let mut sig = Signaling::start(synapse, &relay.control, &reg.user_id, PASSWORD, "");
    let status = sig.wait_exit(WAIT).expect("signaling should exit");
    assert!(!status.success());
    let log = sig.run_log();
    assert!(
        log.contains("end-to-end encryption keys") && log.contains(&reg.device_id),
        "{log}"
    );
}
