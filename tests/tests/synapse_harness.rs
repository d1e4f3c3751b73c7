//! The real-homeserver harness end to end: a real Synapse started by the test, two
//! accounts talking to it through the client-server API over plain HTTP.
#![allow(clippy::disallowed_methods)] // timing the homeserver's start-up

use std::time::{Duration, Instant};

use blindfold_tests::matrix::MatrixUser;
use blindfold_tests::synapse::{PASSWORD, Synapse, unique_localpart};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(10);

#[test]
fn two_users_meet_in_a_room_on_a_real_synapse() {
    let t0 = Instant::now();
    let hs = Synapse::shared();
    eprintln!("Synapse up after {:?} at {}", t0.elapsed(), hs.base_url());

    // Registration through the shared-secret admin API, then a password login.
    let alice = hs.new_user("alice");
    let bob_name = unique_localpart("bob");
    let registered = hs.register(&bob_name, PASSWORD, false);
    assert_eq!(
        registered.user_id,
        format!("@{bob_name}:{}", hs.server_name())
    );
    let mut bob = MatrixUser::login(hs.base_url(), &bob_name, PASSWORD).expect("bob logs in");
    assert_eq!(bob.user_id(), registered.user_id);
    assert_ne!(
        bob.device_id(),
        registered.device_id,
        "a login is a new device"
    );
    assert_eq!(bob.whoami().expect("whoami")["device_id"], bob.device_id());

    // A wrong password is refused with M_FORBIDDEN, as an error value.
    let refused = MatrixUser::login(hs.base_url(), &bob_name, "not the password")
        .expect_err("a wrong password is refused");
    assert_eq!(refused.errcode(), Some("M_FORBIDDEN"), "{refused}");
    assert_eq!(refused.status(), Some(403), "{refused}");

    // Alice makes a room and invites Bob; Bob sees the invite through sync and joins.
    let room = alice
        .create_room(&json!({"preset": "private_chat", "name": "harness"}))
        .expect("create room");
    alice.invite(&room, bob.user_id()).expect("invite");
    assert_eq!(bob.wait_for_invite(WAIT), room);
    assert_eq!(bob.join(&room).expect("join"), room);
    let mut members = vec![alice.user_id().to_owned(), bob.user_id().to_owned()];
    members.sort();
    assert_eq!(alice.joined_members(&room).expect("members"), members);

    // A custom event reaches Bob with its content.
    let content = json!({"hello": "bob", "n": 7});
    let sent = alice
        .send_event(&room, "org.matrix.msc2359.test", &content)
        .expect("send event");
    let got = bob.wait_for_room_event(&room, "org.matrix.msc2359.test", |_| true, WAIT);
    assert_eq!(got["event_id"], sent.as_str());
    assert_eq!(got["sender"], alice.user_id());
    assert_eq!(got["content"], content);

    // State set by Alice (the room's creator: Bob's power level is too low for custom
    // state, and Synapse says so) round-trips; missing state is None, not an error.
    let state = json!({"focus": "blindfold", "members": [bob.user_id()]});
    let refused = bob
        .send_state(&room, "org.matrix.msc2359.state", bob.user_id(), &state)
        .expect_err("power levels apply");
    assert_eq!(refused.errcode(), Some("M_FORBIDDEN"), "{refused}");
    alice
        .send_state(&room, "org.matrix.msc2359.state", alice.user_id(), &state)
        .expect("send state");
    let read = bob
        .get_state(&room, "org.matrix.msc2359.state", alice.user_id())
        .expect("get state");
    assert_eq!(read, Some(state));
    let missing = bob.get_state(&room, "org.matrix.msc2359.state", "nobody");
    assert_eq!(missing, Ok(None));

    // Device keys uploaded by Alice are visible to Bob.
    let keys = alice.upload_device_keys().expect("upload device keys");
    let devices = bob.query_keys(alice.user_id()).expect("query keys");
    let device = &devices[alice.device_id()];
    assert_eq!(device["keys"], keys["keys"], "{devices}");
    assert_eq!(device["signatures"], keys["signatures"], "{devices}");

    // Account data round-trips.
    alice
        .set_account_data("org.matrix.msc2359.prefs", &json!({"x": 1}))
        .expect("set account data");
    assert_eq!(
        alice.get_account_data("org.matrix.msc2359.prefs"),
        Ok(Some(json!({"x": 1})))
    );
    assert_eq!(alice.get_account_data("org.matrix.msc2359.none"), Ok(None));

    // Leaving works, and a refusal carries its errcode: Bob may no longer send.
    bob.leave(&room).expect("leave");
    let refused = bob
        .send_event(&room, "org.matrix.msc2359.test", &json!({}))
        .expect_err("a non-member cannot send");
    assert_eq!(refused.errcode(), Some("M_FORBIDDEN"), "{refused}");
    eprintln!("whole test {:?}", t0.elapsed());
}

#[test]
#[should_panic(expected = "waited 1.5s for an invite in vain")]
fn waiting_in_vain_panics_saying_for_what() {
    let mut carol = Synapse::shared().new_user("carol");
    carol.wait_for_invite(Duration::from_millis(1500));
}

#[test]
fn a_dropped_synapse_is_killed_and_its_directory_removed() {
    let hs = Synapse::start();
    let pid = hs.pid().expect("running");
    let dir = hs.dir().to_owned();
    let proc = std::path::PathBuf::from(format!("/proc/{pid}"));
    assert!(proc.exists() && dir.join("homeserver.yaml").exists());
    drop(hs);
    assert!(!proc.exists(), "Synapse {pid} outlived its guard");
    assert!(!dir.exists(), "{} outlived its guard", dir.display());
}
