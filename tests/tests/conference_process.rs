//! A whole conference end to end over real processes: Synapse, the relay and
//! `blindfold-signaling`, and participants on the client library's [`Conference`]
//! (matrix-sdk with E2EE, a SQLite store each, real UDP to the relay). What is checked
//! is what the members and the SFU account see, outside the relay: SHA-256 of every
//! datagram a receiver decrypted against the sender's own log, the key events as the
//! SFU account syncs them, the MKI switch after a member leaves, and what the leaver's
//! own Matrix client can and cannot decrypt, and a key event read once its megolm key
//! came late. And an outsider who knows the relay's
//! address, and what the path shows of a call (the ICE ufrags, the SSRCs), sending
//! checks, spoofed RTP, garbage and a flood: what it gets back (STUN errors only), what
//! the members keep decrypting, what the relay counted.

// Real processes, sockets and deadlines: the test reads the clock.
#![allow(clippy::disallowed_methods)]

use std::collections::{HashMap, HashSet};
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use blindfold_client::DropReason;
use blindfold_client::conference::keys::{KEYS_EVENT, KeyEventError};
use blindfold_client::conference::matrix_sdk::ruma::events::room::encrypted::OriginalSyncRoomEncryptedEvent;
use blindfold_client::conference::matrix_sdk::ruma::serde::Raw;
use blindfold_client::conference::{
    Conference, ConferenceConfig, ConferenceError, ConferenceEvent, Login, MEMBER_ENDED_EVENT,
    MediaMode, MemberId,
};
use blindfold_relay::dtls::DtlsCert;
use blindfold_relay::id::{KeyIndex, Ssrc};
use blindfold_tests::hs_proxy::HomeserverProxy;
use blindfold_tests::matrix::MatrixUser;
use blindfold_tests::process::Relay;
use blindfold_tests::signaling::{CONF, Sfu, announced_room, conference_room, sfu, sfu_on};
use blindfold_tests::synapse::{PASSWORD, Synapse};
use serde_json::Value;

/// One received packet.
#[derive(Debug, Clone)]
struct Rx {
    at: Instant,
    from: String,
    ssrc: Ssrc,
    seq: u16,
    key: KeyIndex,
    sha: [u8; 32],
}

/// A participant and everything it reported.
struct Peer {
    name: &'static str,
    user_id: String,
    conf: Conference,
    /// Sent datagrams: (ssrc, seq) → (key, sha, when).
    sent: HashMap<(Ssrc, u16), (KeyIndex, [u8; 32], Instant)>,
    rx: Vec<Rx>,
    events: Vec<(Instant, ConferenceEvent)>,
}

impl Peer {
    /// Takes every waiting event.
    fn drain(&mut self) {
        while let Some(ev) = self.conf.try_next_event() {
            let now = Instant::now();
            match ev {
                ConferenceEvent::Sent {
                    ssrc,
                    seq,
                    key,
                    sha256,
                } => {
                    self.sent.insert((ssrc, seq), (key, sha256, now));
                }
                ConferenceEvent::Media {
                    packet,
                    from,
                    wire_sha256,
                } => self.rx.push(Rx {
                    at: now,
                    from: from.map(|m| m.user_id).unwrap_or_default(),
                    ssrc: packet.ssrc,
                    seq: packet.seq.0 as u16,
                    key: packet.key,
                    sha: wire_sha256,
                }),
                other => self.events.push((now, other)),
            }
        }
    }

    /// When our key set with `key` in it was first published: the client's own stamp
    /// (the homeserver took the event), not when we drained the event, which may be
    /// later while the `Sent` events it is compared with are stamped late too.
    fn published(&self, key: KeyIndex) -> Option<Instant> {
        self.events.iter().find_map(|(_, e)| match e {
            ConferenceEvent::KeysPublished { indexes, at } if indexes.contains(&key) => Some(*at),
            _ => None,
        })
    }

    /// Whether we decrypted something `from` sent under `key`.
    fn decrypted_under(&self, from: &Peer, key: KeyIndex) -> bool {
        self.rx
            .iter()
            .any(|r| r.from == from.user_id && r.key == key)
    }

    /// When each datagram under `key` was sent.
    fn sent_under(&self, key: KeyIndex) -> impl Iterator<Item = Instant> + '_ {
        self.sent
            .values()
            .filter(move |(k, _, _)| *k == key)
            .map(|(_, _, t)| *t)
    }

    fn received_on(&self, ssrc: Ssrc) -> usize {
        self.rx.iter().filter(|r| r.ssrc == ssrc).count()
    }

    /// The active speakers the SFU named, in order.
    fn speakers(&self) -> Vec<&MemberId> {
        self.events
            .iter()
            .filter_map(|(_, e)| match e {
                ConferenceEvent::ActiveSpeaker { member } => Some(member),
                _ => None,
            })
            .collect()
    }

    fn rejected(&self) -> Vec<KeyEventError> {
        self.events
            .iter()
            .filter_map(|(_, e)| match e {
                ConferenceEvent::KeysRejected { reason, .. } => Some(reason.clone()),
                _ => None,
            })
            .collect()
    }
}

fn store_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "bf-conference-{}-{name}-{}",
        std::process::id(),
        blindfold_tests::synapse::unique_localpart("s")
    ));
    let _ = std::fs::remove_dir_all(&d);
    d
}

async fn join(name: &'static str, user: &MatrixUser, room: &str, epoch: Instant) -> Peer {
    // A seed per name (alice and carol have names of one length): each member talks
    // in its own pattern, so the active speaker moves between them.
    let seed = name.bytes().map(u64::from).sum();
    join_with(name, user, room, MediaMode::Synthetic { epoch, seed }).await
}

/// [`join`], sending `media` (`MediaMode::None`: a listener).
async fn join_with(name: &'static str, user: &MatrixUser, room: &str, media: MediaMode) -> Peer {
    join_at(name, user, user.base_url(), room, media).await
}

/// [`join_with`], through `homeserver` (a URL in front of the user's homeserver).
async fn join_at(
    name: &'static str,
    user: &MatrixUser,
    homeserver: &str,
    room: &str,
    media: MediaMode,
) -> Peer {
    let mut cfg = ConferenceConfig::new(
        homeserver,
        Login::Password {
            user: user.user_id().to_owned(),
            password: PASSWORD.to_owned(),
        },
        store_dir(name),
        room,
        CONF,
    );
    cfg.media = media;
    cfg.report_sent = true;
    cfg.timeout = Duration::from_secs(20);
    let conf = Conference::join(cfg)
        .await
        .unwrap_or_else(|e| panic!("{name} joins: {e}"));
    Peer {
        name,
        user_id: user.user_id().to_owned(),
        conf,
        sent: HashMap::new(),
        rx: Vec::new(),
        events: Vec::new(),
    }
}

/// Drains every peer for `d`.
async fn run_for(peers: &mut [&mut Peer], d: Duration) {
    let end = Instant::now() + d;
    while Instant::now() < end {
        for p in peers.iter_mut() {
            p.drain();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Drains until `done` holds; panics after `limit`.
async fn run_until(
    peers: &mut [&mut Peer],
    relay: &Relay,
    limit: Duration,
    what: &str,
    mut done: impl FnMut(&[&mut Peer]) -> bool,
) {
    let end = Instant::now() + limit;
    loop {
        for p in peers.iter_mut() {
            p.drain();
        }
        if done(peers) {
            return;
        }
        if Instant::now() >= end {
            // What each got from each, for the failure's diagnosis.
            for rx in peers.iter() {
                for s in peers.iter().filter(|s| s.name != rx.name) {
                    let o = s.conf.ssrcs();
                    eprintln!(
                        "{} got from {}: audio {}, thumbnail {}, full {}",
                        rx.name,
                        s.name,
                        rx.received_on(o.audio),
                        rx.received_on(o.thumbnail),
                        rx.received_on(o.full)
                    );
                }
            }
            print_bandwidth_decisions(relay);
        }
        assert!(Instant::now() < end, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Prints what the relay decided about bandwidth (layer switches, REMB, uplink limits,
/// keyframe requests), for a failure's diagnosis.
fn print_bandwidth_decisions(relay: &Relay) {
    for line in relay.scrape().lines().filter(|l| {
        [
            "blindfold_layer_switches",
            "blindfold_remb_",
            "blindfold_uplink_",
            "blindfold_keyframe",
            "blindfold_layers_",
        ]
        .iter()
        .any(|m| l.starts_with(m))
    }) {
        eprintln!("relay: {line}");
    }
}

/// Every packet `rx` decrypted from `sender` is bit-identical to what `sender` logged
/// sending; returns how many were compared.
fn bit_identical(rx: &Peer, sender: &Peer) -> usize {
    let mut n = 0;
    for r in rx.rx.iter().filter(|r| r.from == sender.user_id) {
        let (_, sha, _) = sender.sent.get(&(r.ssrc, r.seq)).unwrap_or_else(|| {
            panic!(
                "{} got {:?} {} that {} never sent",
                rx.name, r.ssrc, r.seq, sender.name
            )
        });
        assert_eq!(
            *sha, r.sha,
            "{} got a datagram from {} that differs from what was sent",
            rx.name, sender.name
        );
        n += 1;
    }
    n
}

/// `room`'s timeline as `user` syncs it from the start.
fn timeline(user: &MatrixUser, room: &str) -> Vec<Value> {
    let sync = user.sync_once(None, 0).expect("sfu sync");
    let ptr = format!(
        "/rooms/join/{}/timeline/events",
        room.replace('~', "~0").replace('/', "~1")
    );
    let mut events: Vec<Value> = sync
        .pointer(&ptr)
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    // A long timeline is cut: page back with /messages for the whole history.
    let msgs = user
        .call(
            "GET",
            &format!(
                "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=1000",
                blindfold_tests::matrix::escape(room)
            ),
            None,
        )
        .expect("messages");
    if let Some(chunk) = msgs["chunk"].as_array() {
        events.extend(chunk.iter().cloned());
    }
    events
}

struct Setup {
    /// Held for the whole test: these tests assert the protocol's timings (2 s join,
    /// 2 s switch), and two conferences of four Matrix clients each on two cores would
    /// measure the machine instead.
    _one_at_a_time: std::sync::MutexGuard<'static, ()>,
    sfu: Sfu,
    room: String,
    users: Vec<MatrixUser>,
}

/// Held by each test for its whole run (see [`Setup`]).
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    ONE.lock().unwrap_or_else(|e| e.into_inner())
}

fn setup(n: usize) -> Setup {
    let guard = one_at_a_time();
    let s = sfu();
    let synapse = Synapse::shared();
    let users: Vec<MatrixUser> = (0..n).map(|i| synapse.new_user(&format!("m{i}"))).collect();
    let others: Vec<&MatrixUser> = users[1..].iter().collect();
    let room = conference_room(&users[0], &others, &s.user_id, CONF);
    Setup {
        _one_at_a_time: guard,
        sfu: s,
        room,
        users,
    }
}

impl Setup {
    /// Alice, bob and carol (its first three users) join the call, and run until each
    /// decrypts 20 packets of each of the others' three streams (audio, thumbnail, and
    /// full resolution: they subscribe to `"all"`).
    async fn three_in_the_call(&self) -> (Peer, Peer, Peer) {
        let epoch = Instant::now();
        let (mut a, mut b, mut c) = tokio::join!(
            join("alice", &self.users[0], &self.room, epoch),
            join("bob", &self.users[1], &self.room, epoch),
            join("carol", &self.users[2], &self.room, epoch),
        );
        run_until(
            &mut [&mut a, &mut b, &mut c],
            &self.sfu.relay,
            Duration::from_secs(20),
            "everyone decrypts everyone's three streams",
            |p| everyone_has_all_streams(p, 20),
        )
        .await;
        (a, b, c)
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

#[test]
fn three_members_decrypt_each_other_and_a_leaver_is_rekeyed_out() {
    // Four members of R; the fourth, dave, never joins the call.
    let st = setup(4);
    let room = st.room.clone();
    rt().block_on(async {
        // Every member decrypts every other's audio, thumbnail and (subscribed "all")
        // full-resolution stream.
        let (mut a, mut b, mut c) = st.three_in_the_call().await;
        run_for(&mut [&mut a, &mut b, &mut c], Duration::from_millis(500)).await;
        for (rx, senders) in [(&a, [&b, &c]), (&b, [&a, &c]), (&c, [&a, &b])] {
            for s in senders {
                let n = bit_identical(rx, s);
                assert!(n >= 60, "{} compared only {n} packets from {}", rx.name, s.name);
            }
            assert!(rx.rejected().is_empty(), "{}: {:?}", rx.name, rx.rejected());
        }
        // The synthetic audio talks and pauses: the relay's active speaker reaches every
        // member through signaling and its DM, and names a member of the call.
        run_until(
            &mut [&mut a, &mut b, &mut c],
            &st.sfu.relay,
            // A change reaches only the calls that exist then: the last member to be
            // admitted waits for the next one (talkspurts last 1–4 s).
            Duration::from_secs(15),
            "every member hears of an active speaker",
            |p| p.iter().all(|m| !m.speakers().is_empty()),
        )
        .await;
        // Named by the device in the call, not only the user (signaling maps the relay's
        // session to the caller's party_id).
        let members: Vec<(&str, &str)> = [&a, &b, &c]
            .iter()
            .map(|p| (p.user_id.as_str(), p.conf.device_id()))
            .collect();
        for m in [&a, &b, &c] {
            for s in m.speakers() {
                let named = (s.user_id.as_str(), s.device_id.as_str());
                assert!(members.contains(&named), "{} heard of {s:?}", m.name);
            }
        }
        // The members' offers declare the transport-wide sequence number and their
        // media stamps it: signaling passed the id on, and the relay answers each
        // member with transport-cc feedback (one per 100 ms of its media).
        let feedback = st.sfu.relay.metric("blindfold_transport_cc_sent_total");
        assert!(feedback >= 3 * 5, "{feedback} transport-cc feedback packets");

        // The SFU account sees the key events only as m.room.encrypted, and no room
        // key ever reaches it (it has no device to encrypt one to).
        let sfu_user = MatrixUser::login(Synapse::shared().base_url(), &st.sfu.user_id, PASSWORD)
            .expect("sfu login");
        let before_leave = timeline(&sfu_user, &room);
        assert!(
            !before_leave.iter().any(|e| e["type"] == KEYS_EVENT),
            "the SFU account read a key event in the clear"
        );
        let encrypted: Vec<&Value> = before_leave
            .iter()
            .filter(|e| e["type"] == "m.room.encrypted")
            .collect();
        assert!(encrypted.len() >= 3, "{} encrypted events", encrypted.len());
        let sfu_sync = sfu_user.sync_once(None, 0).expect("sfu sync");
        assert!(
            sfu_sync["to_device"]["events"]
                .as_array()
                .is_none_or(Vec::is_empty),
            "to-device events reached the SFU account: {}",
            sfu_sync["to_device"]
        );
        // An encrypted event carol could read before she leaves (the control for the
        // check after: her client does decrypt R's events while she is a member):
        // alice's newest, which went to carol's device (her first ones may predate
        // it, the three having joined at once).
        let old_from_alice = encrypted
            .iter()
            .filter(|e| e["sender"] == a.user_id.as_str())
            .max_by_key(|e| e["origin_server_ts"].as_u64())
            .map(|e| (*e).clone())
            .expect("an encrypted event from alice");
        let raw: Raw<OriginalSyncRoomEncryptedEvent> =
            serde_json::from_value(old_from_alice).expect("raw event");
        let d = c.conf.room().decrypt_event(&raw, None).await.expect("decrypt");
        assert!(!d.kind.is_utd(), "carol cannot decrypt alice's key event while a member");

        // Carol leaves R (her client keeps running).
        let left_at = Instant::now();
        c.conf.room().leave().await.expect("carol leaves");
        run_until(
            &mut [&mut a, &mut b, &mut c],
            &st.sfu.relay,
            Duration::from_secs(10),
            "alice and bob switch to key 1",
            |p| p[0].decrypted_under(p[1], KeyIndex(1)) && p[1].decrypted_under(p[0], KeyIndex(1)),
        )
        .await;
        run_for(&mut [&mut a, &mut b, &mut c], Duration::from_secs(1)).await;
        for (s, rx) in [(&a, &b), (&b, &a)] {
            // Published at once, switched no sooner than 2 s after.
            let published = s.published(KeyIndex(1)).expect("key 1 published");
            let first_new = s.sent_under(KeyIndex(1)).min().expect("sent under key 1");
            let last_old = s.sent_under(KeyIndex(0)).max().expect("sent under key 0");
            eprintln!(
                "{}: key 1 published {:?} after the leave, used {:?} after publishing",
                s.name,
                published - left_at,
                first_new - published
            );
            assert!(
                first_new - published >= Duration::from_millis(1990),
                "{} switched before 2 s",
                s.name
            );
            assert!(
                first_new - left_at <= Duration::from_secs(5),
                "{} took {:?} to switch",
                s.name,
                first_new - left_at
            );
            assert!(last_old <= first_new + Duration::from_millis(50), "{} went back to key 0", s.name);
            assert!(bit_identical(rx, s) > 0);
            // Carol decrypted nothing sent under the new key, and holds no such key.
            assert!(
                !c.rx.iter().any(|r| r.from == s.user_id && r.key != KeyIndex(0)),
                "carol decrypted {}'s new key",
                s.name
            );
            assert!(
                !c.rx.iter().any(|r| r.from == s.user_id && r.at > first_new),
                "carol decrypted {}'s media after the switch",
                s.name
            );
            let ids: Vec<_> = c.conf.members().into_iter().map(|(_, id)| id).collect();
            let held: Vec<Vec<KeyIndex>> = c
                .conf
                .with_participant(|p| ids.iter().filter_map(|id| p.remote_keys(*id)).collect());
            assert!(
                held.iter().flatten().all(|k| *k == KeyIndex(0)),
                "carol holds {held:?}"
            );
        }
        // matrix-sdk rotated R's megolm session: carol's client cannot decrypt the key
        // events alice and bob published after she left.
        let after = timeline(&sfu_user, &room);
        let old_ids: HashSet<&str> = before_leave.iter().filter_map(|e| e["event_id"].as_str()).collect();
        let mut tried = 0;
        for e in after.iter().filter(|e| {
            e["type"] == "m.room.encrypted"
                && e["event_id"].as_str().is_some_and(|id| !old_ids.contains(id))
                && (e["sender"] == a.user_id.as_str() || e["sender"] == b.user_id.as_str())
        }) {
            let raw: Raw<OriginalSyncRoomEncryptedEvent> =
                serde_json::from_value(e.clone()).expect("raw event");
            let d = c.conf.room().decrypt_event(&raw, None).await.expect("decrypt call");
            assert!(d.kind.is_utd(), "carol decrypted a key event sent after she left: {e}");
            // ... while bob, still a member, can.
            let d = b.conf.room().decrypt_event(&raw, None).await.expect("decrypt call");
            assert!(!d.kind.is_utd() || e["sender"] == b.user_id.as_str());
            tried += 1;
        }
        assert!(tried >= 2, "only {tried} key events after the leave");
        let left: Vec<_> = a
            .events
            .iter()
            .filter(|(_, e)| matches!(e, ConferenceEvent::MemberLeft { member } if member.user_id == c.user_id))
            .collect();
        assert_eq!(left.len(), 1, "alice saw carol leave once");

        // Dave, in R but never in the call, leaves too: he held R's keys, so he could
        // read alice's and bob's key events; they rekey again.
        let dave_left = Instant::now();
        st.users[3]
            .call(
                "POST",
                &format!(
                    "/_matrix/client/v3/rooms/{}/leave",
                    blindfold_tests::matrix::escape(&room)
                ),
                Some(&serde_json::json!({})),
            )
            .expect("dave leaves");
        run_until(
            &mut [&mut a, &mut b, &mut c],
            &st.sfu.relay,
            Duration::from_secs(10),
            "alice and bob switch to key 2",
            |p| p[0].decrypted_under(p[1], KeyIndex(2)) && p[1].decrypted_under(p[0], KeyIndex(2)),
        )
        .await;
        for s in [&a, &b] {
            // Key 2 is dave's doing: published after he left, first used after that.
            let published = s.published(KeyIndex(2)).expect("key 2 published");
            assert!(published > dave_left, "{} published key 2 before dave left", s.name);
            let first = s.sent_under(KeyIndex(2)).min().expect("sent under key 2");
            let took = first
                .checked_duration_since(dave_left)
                .expect("key 2 used only after dave left");
            eprintln!("{}: key 2 in use {took:?} after dave left", s.name);
            assert!(took <= Duration::from_secs(5), "{} took {took:?}", s.name);
        }
    });
}

/// A member whose client dies without a word (no hangup, no key event, no DTLS
/// close_notify) and who stays in `R`: the relay ends its session after its consent
/// timeout (3 s here), the SFU tells the other calls, and the others forget it and
/// rekey (docs/protocol.md, "A member's call ended").
/// Carol leaves R, so alice and bob must rekey her out; but someone has since used the
/// SFU account with an encrypting client, so neither may publish a key there (that
/// device could read it). Each tries again for 3.5 s, then stops its media rather than
/// go on under the key carol holds, and says so.
#[test]
fn a_member_that_cannot_publish_its_rekey_stops_its_media() {
    let st = setup(3);
    rt().block_on(async {
        let (mut a, mut b, mut c) = st.three_in_the_call().await;
        let sfu_user = MatrixUser::login(Synapse::shared().base_url(), &st.sfu.user_id, PASSWORD)
            .expect("log in as the SFU");
        sfu_user.upload_device_keys().expect("upload keys");
        c.conf.room().leave().await.expect("carol leaves");
        let left = Instant::now();
        let stopped = until_media_stopped(&mut [&mut a, &mut b, &mut c], 2, &st.sfu.relay).await;
        run_for(&mut [&mut a, &mut b], Duration::from_secs(2)).await;
        for m in [&a, &b] {
            assert_media_withheld(m, "carol left", left, stopped);
        }
    });
}

/// Runs `members` until the first `n` of them report their media stopped for a key they
/// could not publish; returns when.
async fn until_media_stopped(members: &mut [&mut Peer], n: usize, relay: &Relay) -> Instant {
    run_until(
        members,
        relay,
        Duration::from_secs(30),
        "the members stop their media",
        |p| {
            p[..n].iter().all(|m| {
                m.events.iter().any(|(_, e)| {
                    matches!(e, ConferenceEvent::Ended { reason, .. } if reason.contains("media has stopped"))
                })
            })
        },
    )
    .await;
    Instant::now()
}

/// `m`, told at `since` to rekey (by `what`), published no key 1, tried for 3.5 s, sent
/// nothing after `stopped` (when it said it stopped) and refuses to send more.
fn assert_media_withheld(m: &Peer, what: &str, since: Instant, stopped: Instant) {
    assert_eq!(
        m.published(KeyIndex(1)),
        None,
        "{}: no key 1 went out",
        m.name
    );
    let last = m.sent_under(KeyIndex(0)).max().expect("sent");
    eprintln!(
        "{}: media stopped {:?} after {what}",
        m.name,
        last.saturating_duration_since(since)
    );
    assert!(last <= stopped, "{} sent after it stopped", m.name);
    assert!(
        last.saturating_duration_since(since) >= Duration::from_millis(3500),
        "{}: it tried for 3.5 s first",
        m.name
    );
    assert_eq!(m.sent_under(KeyIndex(1)).count(), 0);
    assert!(matches!(
        m.conf.send_audio(false, 0, b"more", None),
        Err(ConferenceError::MediaWithheld)
    ));
}

/// A join that fails after the SFU answered (here: `R` lets only its admins send
/// encrypted events, so no key event can go out) leaves no call behind: the participant tells the relay it left, and the
/// relay and the SFU drop the session at once rather than keep it while the abandoned
/// media task answers consent.
#[test]
fn a_join_that_cannot_publish_its_keys_leaves_no_call_behind() {
    let st = setup(2);
    let admin = &st.users[0];
    let mut levels = admin
        .get_state(&st.room, "m.room.power_levels", "")
        .expect("power levels")
        .expect("the room has power levels");
    // Key events go out megolm-encrypted: their type on the wire is m.room.encrypted.
    levels["events"]["m.room.encrypted"] = serde_json::json!(100);
    admin
        .send_state(&st.room, "m.room.power_levels", "", &levels)
        .expect("raise the key event's level");
    rt().block_on(async {
        let mut cfg = ConferenceConfig::new(
            st.users[1].base_url(),
            Login::Password {
                user: st.users[1].user_id().to_owned(),
                password: PASSWORD.to_owned(),
            },
            store_dir("bob"),
            &st.room,
            CONF,
        );
        cfg.timeout = Duration::from_secs(20);
        match Conference::join(cfg).await {
            Ok(_) => panic!("bob joined without publishing his keys"),
            Err(e) => eprintln!("bob's join: {e}"),
        }
    });
    let relay = &st.sfu.relay;
    let deadline = Instant::now() + Duration::from_secs(5);
    while relay.metric("blindfold_sessions") > 0 {
        assert!(
            Instant::now() < deadline,
            "the relay still holds bob's session 5 s after his join failed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A call whose member bob can die alone: the relay's consent timeout is 3 s, and bob's
/// client runs on a runtime of its own (`bob_rt`); alice's and carol's join (and are
/// dropped) inside `main`, in [`alice_and_carol_join`].
struct BobApart {
    _one_at_a_time: std::sync::MutexGuard<'static, ()>,
    hs: &'static Synapse,
    sfu: Sfu,
    users: Vec<MatrixUser>,
    room: String,
    main: tokio::runtime::Runtime,
    bob_rt: tokio::runtime::Runtime,
    bob: Peer,
    epoch: Instant,
}

impl BobApart {
    fn new() -> BobApart {
        let guard = one_at_a_time();
        let hs = Synapse::shared();
        let sfu = sfu_on(hs, Relay::start_with(1, &["--consent-timeout", "3"]), "");
        let users: Vec<MatrixUser> = ["m0", "m1", "m2"].iter().map(|n| hs.new_user(n)).collect();
        let room = conference_room(&users[0], &[&users[1], &users[2]], &sfu.user_id, CONF);
        let (main, bob_rt) = (rt(), rt());
        let epoch = Instant::now();
        let bob = bob_rt.block_on(join("bob", &users[1], &room, epoch));
        BobApart {
            _one_at_a_time: guard,
            hs,
            sfu,
            users,
            room,
            main,
            bob_rt,
            bob,
            epoch,
        }
    }
}

/// Alice and carol join `room` and run with `bob` until everyone decrypts everyone.
async fn alice_and_carol_join(
    users: &[MatrixUser],
    room: &str,
    epoch: Instant,
    bob: &mut Peer,
    relay: &Relay,
) -> (Peer, Peer) {
    let (mut a, mut c) = tokio::join!(
        join("alice", &users[0], room, epoch),
        join("carol", &users[2], room, epoch),
    );
    run_until(
        &mut [&mut a, bob, &mut c],
        relay,
        Duration::from_secs(20),
        "everyone decrypts everyone",
        |p| everyone_has_all_streams(p, 20),
    )
    .await;
    (a, c)
}

#[test]
fn a_member_whose_client_dies_is_forgotten_and_rekeyed_out_by_the_others() {
    let BobApart {
        _one_at_a_time,
        sfu: s,
        users,
        room,
        main,
        bob_rt,
        bob: mut b,
        epoch,
        ..
    } = BobApart::new();
    main.block_on(async move {
        let (mut a, mut c) = alice_and_carol_join(&users, &room, epoch, &mut b, &s.relay).await;
        let bob = MemberId {
            user_id: b.user_id.clone(),
            device_id: b.conf.device_id().to_owned(),
        };
        // Its tasks stop where they are, and nothing runs the Conference's drop.
        std::mem::forget(b.conf);
        bob_rt.shutdown_background();
        let died = Instant::now();

        run_until(
            &mut [&mut a, &mut c],
            &s.relay,
            Duration::from_secs(20),
            "alice and carol forget bob and switch to key 1",
            |p| {
                p.iter().all(|m| {
                    m.events.iter().any(
                    |(_, e)| matches!(e, ConferenceEvent::MemberLeft { member } if *member == bob),
                )
                }) && p[0].decrypted_under(p[1], KeyIndex(1))
                    && p[1].decrypted_under(p[0], KeyIndex(1))
            },
        )
        .await;
        for (m, other) in [(&a, &c), (&c, &a)] {
            let forgot = m
                .events
                .iter()
                .find_map(|(t, e)| {
                    matches!(e, ConferenceEvent::MemberLeft { member } if *member == bob)
                        .then_some(*t)
                })
                .expect("bob left");
            let published = m.published(KeyIndex(1)).expect("key 1 published");
            eprintln!(
                "{}: bob forgotten {:?} after his client died, key 1 published {:?} after that",
                m.name,
                forgot - died,
                published.saturating_duration_since(forgot)
            );
            assert!(
                forgot - died <= Duration::from_secs(15),
                "{} took {:?}",
                m.name,
                forgot - died
            );
            assert!(
                published >= forgot,
                "{} published key 1 before forgetting bob",
                m.name
            );
            assert_eq!(
                m.conf.members().len(),
                1,
                "{}: {:?}",
                m.name,
                m.conf.members()
            );
            assert!(bit_identical(m, other) > 0);
        }
        // Bob never left R: the SFU's word did it.
        let joined = users[0].joined_members(&room).expect("room members");
        assert!(joined.contains(&bob.user_id), "{joined:?}");
        assert!(
            s.signaling
                .metric("blindfold_signaling_member_ended_events_total")
                .unwrap_or(0.0)
                >= 2.0
        );
    });
}

/// As above, bob's client dies, but someone has since used the SFU account with an
/// encrypting client: the SFU's `member_ended` asks alice and carol to rekey bob out
/// and neither may publish a key there, so each stops its media rather than go on
/// under the key bob holds.
#[test]
fn a_member_that_cannot_publish_the_rekey_a_call_end_asks_for_stops_its_media() {
    let BobApart {
        _one_at_a_time,
        hs,
        sfu: s,
        users,
        room,
        main,
        bob_rt,
        bob: mut b,
        epoch,
    } = BobApart::new();
    main.block_on(async move {
        let (mut a, mut c) = alice_and_carol_join(&users, &room, epoch, &mut b, &s.relay).await;
        let sfu_user =
            MatrixUser::login(hs.base_url(), &s.user_id, PASSWORD).expect("log in as the SFU");
        sfu_user.upload_device_keys().expect("upload keys");
        std::mem::forget(b.conf);
        bob_rt.shutdown_background();
        let died = Instant::now();
        let stopped = until_media_stopped(&mut [&mut a, &mut c], 2, &s.relay).await;
        run_for(&mut [&mut a, &mut c], Duration::from_secs(2)).await;
        for m in [&a, &c] {
            assert_media_withheld(m, "bob's client died", died, stopped);
        }
        assert!(
            s.signaling
                .metric("blindfold_signaling_member_ended_events_total")
                .unwrap_or(0.0)
                >= 2.0
        );
    });
}

/// The relay crashes and restarts, with its certificate from files as in production.
/// Signaling gives the new relay every call back, so the members' consent checks keep
/// succeeding, but their DTLS sessions died with the old relay. Each member's client
/// notices that the relay answers its checks but sends no SRTCP (a relay that holds a
/// session sends some at least once a second) for 5 s, does ICE and DTLS again with
/// the answer it has, and media flows again, under the same keys: nobody called again.
/// Carol only listens: she notices the same way.
#[test]
fn after_a_relay_restart_the_members_connect_again_by_themselves() {
    let _one_at_a_time = one_at_a_time();
    let hs = Synapse::shared();
    let cert = DtlsCert::generate().expect("relay certificate");
    let mut s = sfu_on(hs, Relay::start_with_cert(1, &cert), "");
    let users: Vec<MatrixUser> = ["m0", "m1", "m2"].iter().map(|n| hs.new_user(n)).collect();
    let room = conference_room(&users[0], &[&users[1], &users[2]], &s.user_id, CONF);
    rt().block_on(async {
        let epoch = Instant::now();
        let (mut a, mut b, mut c) = tokio::join!(
            join("alice", &users[0], &room, epoch),
            join("bob", &users[1], &room, epoch),
            join_with("carol", &users[2], &room, MediaMode::None),
        );
        let got_since = |rx: &Peer, tx: &Peer, t: Instant| {
            let o = tx.conf.ssrcs();
            [o.audio, o.thumbnail, o.full].iter().all(|&ssrc| {
                rx.rx.iter().filter(|r| r.ssrc == ssrc && r.at >= t).count() >= 20
            })
        };
        let all_got_since = |p: &[&mut Peer], t: Instant| {
            let (a, b, c) = (&*p[0], &*p[1], &*p[2]);
            [(a, b), (b, a), (c, a), (c, b)]
                .iter()
                .all(|(rx, tx)| got_since(rx, tx, t))
        };
        run_until(
            &mut [&mut a, &mut b, &mut c],
            &s.relay,
            Duration::from_secs(20),
            "alice and bob decrypt each other, carol both",
            |p| all_got_since(p, epoch),
        )
        .await;

        s.relay.restart();
        let restarted = Instant::now();
        let since = |p: &Peer, what: fn(&ConferenceEvent) -> bool| {
            p.events
                .iter()
                .find_map(|(t, e)| (*t >= restarted && what(e)).then_some(*t))
        };
        let reconnecting = |e: &ConferenceEvent| matches!(e, ConferenceEvent::Reconnecting { .. });
        let connected = |e: &ConferenceEvent| matches!(e, ConferenceEvent::Connected { .. });
        run_until(
            &mut [&mut a, &mut b, &mut c],
            &s.relay,
            Duration::from_secs(20),
            "alice and bob connect again and decrypt each other, carol both",
            |p| all_got_since(p, restarted),
        )
        .await;
        for (m, other) in [(&a, &b), (&b, &a), (&c, &a)] {
            let noticed = since(m, reconnecting).expect("reconnecting") - restarted;
            let again = since(m, connected).expect("connected again") - restarted;
            eprintln!(
                "{}: reconnecting {noticed:?} after the relay's restart, connected {again:?} after it",
                m.name
            );
            assert!(noticed <= Duration::from_secs(10), "{} took {noticed:?}", m.name);
            assert!(again >= noticed, "{}", m.name);
            // The same call, the same keys: no new key, nobody ended.
            assert!(
                !m.events.iter().any(|(_, e)| matches!(e, ConferenceEvent::Ended { .. })),
                "{}: {:?}",
                m.name,
                m.events
            );
            assert!(m.rx.iter().all(|r| r.key == KeyIndex(0)), "{} saw a new key", m.name);
            assert!(bit_identical(m, other) > 0);
        }
    });
}

/// `rx` decrypted at least `n` packets of each of the three streams of each of
/// `senders`.
fn has_all_streams(rx: &Peer, senders: &[&Peer], n: usize) -> bool {
    senders.iter().all(|s| {
        let o = s.conf.ssrcs();
        [o.audio, o.thumbnail, o.full]
            .iter()
            .all(|&ssrc| rx.received_on(ssrc) >= n)
    })
}

/// Every one of `peers` decrypted at least `n` packets of each stream of every other.
fn everyone_has_all_streams(peers: &[&mut Peer], n: usize) -> bool {
    peers.iter().all(|rx| {
        let senders: Vec<&Peer> = peers
            .iter()
            .filter(|s| s.name != rx.name)
            .map(|s| &**s)
            .collect();
        has_all_streams(rx, &senders, n)
    })
}

/// Bob, on `bob`'s account, joins the call alice is in through `proxy`, which holds
/// back his to-device messages, and both run until alice decrypts him and he holds her
/// two key events. His first key event makes her re-send hers, with her megolm session
/// now shared with his new device: the event reaches him, its key does not. Her first
/// key event, from before his device existed, he never gets the key of.
async fn bob_holds_alices_key_events(
    a: &mut Peer,
    bob: &MatrixUser,
    proxy: &HomeserverProxy,
    room: &str,
    relay: &Relay,
    epoch: Instant,
) -> Peer {
    let media = MediaMode::Synthetic { epoch, seed: 7 };
    let mut b = join_at("bob", bob, &proxy.base_url(), room, media).await;
    run_until(
        &mut [a, &mut b],
        relay,
        Duration::from_secs(20),
        "alice decrypts bob, and bob holds her two key events",
        |p| has_all_streams(p[0], &[&*p[1]], 20) && p[1].conf.undecryptable() >= 2,
    )
    .await;
    b
}

/// Over federation a key event can come before the megolm key it is encrypted with
/// (the key's to-device message and the room event travel apart): the member holds
/// the event, reads it when the key comes, and decrypts its sender from then on.
#[test]
fn a_key_event_that_comes_before_its_megolm_key_is_read_when_the_key_comes() {
    let st = setup(2);
    let room = st.room.clone();
    // Bob's homeserver, as he sees it, holds back his to-device messages.
    let proxy = HomeserverProxy::start(Synapse::shared().base_url());
    proxy.hold_to_device();
    rt().block_on(async {
        let epoch = Instant::now();
        let mut a = join("alice", &st.users[0], &room, epoch).await;
        let mut b =
            bob_holds_alices_key_events(&mut a, &st.users[1], &proxy, &room, &st.sfu.relay, epoch)
                .await;
        assert!(
            proxy.held_to_device() > 0,
            "no to-device message was held back"
        );
        assert_eq!(b.conf.read_late(), 0);
        assert!(
            !b.rx.iter().any(|r| r.from == a.user_id),
            "bob decrypted alice without her key"
        );

        let released = Instant::now();
        proxy.release_to_device(&st.users[1]);
        run_until(
            &mut [&mut a, &mut b],
            &st.sfu.relay,
            Duration::from_secs(10),
            "bob decrypts alice once her megolm key came",
            |p| has_all_streams(p[1], &[&*p[0]], 20),
        )
        .await;
        let first =
            b.rx.iter()
                .filter(|r| r.from == a.user_id)
                .map(|r| r.at)
                .min();
        eprintln!(
            "bob: {} events undecryptable when they came, {} read late; alice's first \
             packet decrypted {:?} after the release",
            b.conf.undecryptable(),
            b.conf.read_late(),
            first.map(|t| t - released)
        );
        assert!(b.conf.read_late() > 0);
        assert!(bit_identical(&b, &a) > 0);
        assert!(b.rejected().is_empty(), "{:?}", b.rejected());
    });
}

/// A key event read late for a call that ended meanwhile is not applied: a member whose
/// client died is not brought back when its megolm key finally comes.
#[test]
fn a_late_key_event_of_a_call_that_ended_meanwhile_is_not_applied() {
    let _one_at_a_time = one_at_a_time();
    let hs = Synapse::shared();
    let s = sfu_on(hs, Relay::start_with(1, &["--consent-timeout", "3"]), "");
    let users = [hs.new_user("m0"), hs.new_user("m1")];
    let room = conference_room(&users[0], &[&users[1]], &s.user_id, CONF);
    let proxy = HomeserverProxy::start(hs.base_url());
    proxy.hold_to_device();
    let (main, alice_rt) = (rt(), rt());
    let epoch = Instant::now();
    let mut a = alice_rt.block_on(join("alice", &users[0], &room, epoch));
    main.block_on(async move {
        let mut b =
            bob_holds_alices_key_events(&mut a, &users[1], &proxy, &room, &s.relay, epoch).await;
        // Alice's client dies (no hangup event, no m.call.hangup): the relay's consent
        // timeout ends her call, and the SFU tells bob before her key comes.
        let alice = MemberId {
            user_id: a.user_id.clone(),
            device_id: a.conf.device_id().to_owned(),
        };
        std::mem::forget(a.conf);
        alice_rt.shutdown_background();
        run_until(
            &mut [&mut b],
            &s.relay,
            Duration::from_secs(20),
            "the SFU's member_ended reaches bob",
            |_| proxy.passed_event(MEMBER_ENDED_EVENT),
        )
        .await;

        proxy.release_to_device(&users[1]);
        run_until(
            &mut [&mut b],
            &s.relay,
            Duration::from_secs(10),
            "bob reads alice's re-sent key event late",
            |p| p[0].conf.read_late() > 0,
        )
        .await;
        run_for(&mut [&mut b], Duration::from_millis(500)).await;
        assert!(b.conf.members().is_empty(), "{:?}", b.conf.members());
        assert!(
            !b.events.iter().any(
                |(_, e)| matches!(e, ConferenceEvent::KeysAccepted { member, .. } if *member == alice)
            ),
            "bob took the keys of alice's ended call"
        );
    });
}

#[test]
fn a_late_joiner_decrypts_everyone_within_2s_and_forged_key_events_are_ignored() {
    let st = setup(3);
    let room = st.room.clone();
    rt().block_on(async {
        let epoch = Instant::now();
        let (mut a, mut b) = tokio::join!(
            join("alice", &st.users[0], &room, epoch),
            join("bob", &st.users[1], &room, epoch),
        );
        run_until(
            &mut [&mut a, &mut b],
            &st.sfu.relay,
            Duration::from_secs(20),
            "alice and bob decrypt each other",
            |p| everyone_has_all_streams(p, 1),
        )
        .await;

        // Dave logs in (a new device) and calls while alice and bob are talking: their
        // earlier key events were never shared with his device, so he depends on their
        // re-sends when his first key event appears.
        let mut d = join("dave", &st.users[2], &room, epoch).await;
        let answered = d.conf.answered_at();
        run_until(
            &mut [&mut a, &mut b, &mut d],
            &st.sfu.relay,
            Duration::from_secs(10),
            "dave and the others decrypt each other",
            |p| everyone_has_all_streams(p, 1),
        )
        .await;
        for s in [&a, &b] {
            let first = d
                .rx
                .iter()
                .filter(|r| r.from == s.user_id)
                .map(|r| r.at)
                .min()
                .expect("dave decrypted");
            eprintln!("dave decrypts {} {:?} after his answer", s.name, first - answered);
            assert!(
                first - answered <= Duration::from_secs(2),
                "dave needed {:?} to decrypt {}",
                first - answered,
                s.name
            );
        }

        // Dave (a member, with a real megolm session) forges: a key event claiming
        // alice's device, and one of his own with alice's audio SSRC.
        let key = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGw";
        let forged = |call: &str, device: &str, ssrc: u32| {
            serde_json::json!({
                "conf_id": CONF, "call_id": call, "device_id": device,
                "streams": [{"ssrc": ssrc, "kind": "audio"}],
                "keys": [{"index": 0, "profile": "SRTP_AEAD_AES_128_GCM", "key": key}]})
        };
        let alice_dev = a.conf.device_id().to_owned();
        let alice_audio = a.conf.ssrcs().audio.0;
        for content in [
            forged("forged-1", &alice_dev, 900_001),
            forged("forged-2", d.conf.device_id(), alice_audio),
        ] {
            d.conf
                .room()
                .send_raw(KEYS_EVENT, content)
                .await
                .expect("send forged key event");
        }
        run_until(
            &mut [&mut a, &mut b, &mut d],
            &st.sfu.relay,
            Duration::from_secs(10),
            "both forgeries refused by alice and bob",
            |p| p[0].rejected().len() >= 2 && p[1].rejected().len() >= 2,
        )
        .await;
        let before = (b.rx.len(), a.rx.len());
        run_for(&mut [&mut a, &mut b, &mut d], Duration::from_secs(1)).await;
        for (rx, n) in [(&a, before.1), (&b, before.0)] {
            let r = rx.rejected();
            assert!(
                r.iter().any(|e| matches!(e, KeyEventError::WrongDevice { claimed, .. } if *claimed == alice_dev)),
                "{}: {r:?}",
                rx.name
            );
            assert!(
                r.contains(&KeyEventError::SsrcCollision(alice_audio)),
                "{}: {r:?}",
                rx.name
            );
            // Nothing changed: dave's real streams still decrypt, under his real key.
            let dave_audio = d.conf.ssrcs().audio;
            assert!(
                rx.rx[n..].iter().any(|p| p.ssrc == dave_audio && p.from == d.user_id),
                "{} stopped decrypting dave",
                rx.name
            );
            assert_eq!(rx.conf.members().len(), 2, "{}: {:?}", rx.name, rx.conf.members());
        }
        // Alice's own audio is still hers at bob's.
        assert!(b.rx.iter().rev().take(200).any(|p| p.ssrc == Ssrc(alice_audio) && p.from == a.user_id));
        for rx in [&b, &d] {
            assert!(bit_identical(rx, &a) > 0);
        }
    });
}

/// A small deterministic generator for the outsider's guesses and garbage.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }

    fn word(&mut self, n: usize) -> String {
        (0..n)
            .map(|_| char::from(b'a' + (self.next() % 26) as u8))
            .collect()
    }
}

/// A Binding request as a participant sends it, with `username`, signed with
/// `password` (`None`: no MESSAGE-INTEGRITY, only FINGERPRINT).
fn stun_check(tid: [u8; 12], username: &str, password: Option<&[u8]>) -> Vec<u8> {
    use blindfold_relay::wire::stun::{Class, Method, StunWriter, TransactionId};
    let mut buf = vec![0u8; 256];
    let mut w = StunWriter::new(
        &mut buf,
        Class::Request,
        Method::Binding,
        TransactionId(tid),
    )
    .expect("writer");
    w.add_username(username).expect("username");
    w.add_priority(0x6e00_01ff).expect("priority");
    w.add_ice_controlling(7).expect("controlling");
    w.add_use_candidate().expect("use-candidate");
    let n = match password {
        Some(p) => w.finish_with_integrity_and_fingerprint(p),
        None => w.finish_with_fingerprint(),
    }
    .expect("finish");
    buf.truncate(n);
    buf
}

/// An RTP datagram on `ssrc` that looks like SRTP (a payload, a one-byte MKI, a
/// 16-byte tag) but was made up by someone without any key.
fn spoofed_rtp(rng: &mut XorShift, ssrc: u32) -> Vec<u8> {
    let mut p = vec![0x80, 111];
    p.extend_from_slice(&(rng.next() as u16).to_be_bytes());
    p.extend_from_slice(&(rng.next() as u32).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    let len = 100 + (rng.next() % 100) as usize;
    p.extend(rng.bytes(len));
    p
}

/// The value of `a=ice-ufrag` in an SDP.
fn ice_ufrag(sdp: &str) -> String {
    sdp.lines()
        .find_map(|l| l.trim().strip_prefix("a=ice-ufrag:"))
        .expect("an a=ice-ufrag line")
        .to_owned()
}

/// `(relay ufrag, participant ufrag)` of `user`'s call `call_id`: what anyone on the
/// path reads in the clear in each connectivity check's USERNAME. Read here from the
/// offer and answer in `user`'s DM with the SFU.
fn call_ufrags(user: &MatrixUser, call_id: &str) -> (String, String) {
    let sync = user.sync_once(None, 0).expect("sync");
    let rooms: Vec<String> = sync["rooms"]["join"]
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    let (mut offer, mut answer) = (None, None);
    for room in &rooms {
        let page = user
            .call(
                "GET",
                &format!(
                    "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=1000",
                    blindfold_tests::matrix::escape(room)
                ),
                None,
            )
            .expect("messages");
        for e in page["chunk"].as_array().into_iter().flatten() {
            if e["content"]["call_id"] != call_id {
                continue;
            }
            match e["type"].as_str() {
                Some("m.call.invite") => {
                    offer = e["content"]["offer"]["sdp"].as_str().map(ice_ufrag)
                }
                Some("m.call.answer") => {
                    answer = e["content"]["answer"]["sdp"].as_str().map(ice_ufrag)
                }
                _ => {}
            }
        }
    }
    (
        answer.expect("the SFU's answer in the DM"),
        offer.expect("the invite in the DM"),
    )
}

/// Datagrams the kernel dropped at the socket bound to `port` on 127.0.0.1
/// (`/proc/net/udp`, last column): a full receive buffer.
fn kernel_drops(port: u16) -> u64 {
    let table = std::fs::read_to_string("/proc/net/udp").expect("/proc/net/udp");
    let local = format!("0100007F:{port:04X}");
    table
        .lines()
        .filter(|l| l.split_whitespace().nth(1) == Some(local.as_str()))
        .filter_map(|l| l.split_whitespace().last()?.parse::<u64>().ok())
        .sum()
}

/// Every drop counter of the relay, by reason.
fn relay_drops(relay: &blindfold_tests::process::Relay) -> HashMap<&'static str, u64> {
    blindfold_relay::engine::DropReason::ALL
        .iter()
        .map(|r| r.name())
        .chain([
            "recv_truncated",
            "send_buffer_full",
            "send_error",
            "peer_queue_full",
            "notify_queue_full",
        ])
        .map(|name| {
            (
                name,
                relay.metric(&format!("blindfold_drops_total{{reason=\"{name}\"}}")),
            )
        })
        .collect()
}

/// How many datagrams of each kind the outsider sent, and what it got back.
#[derive(Debug, Default)]
struct Attack {
    guessed: u64,
    forged: Vec<[u8; 12]>,
    spoofed: u64,
    random: u64,
    flood: u64,
    flood_start: Option<Instant>,
    flood_end: Option<Instant>,
    received: Vec<Vec<u8>>,
}

impl Attack {
    fn sent(&self) -> u64 {
        self.guessed + self.forged.len() as u64 + self.spoofed + self.random + self.flood
    }
}

/// Datagrams of the flood.
const FLOOD: u64 = 30_000;
/// Its rate: about 20 times what the three members send the relay, and well within
/// what even a debug build of the relay drops without falling behind. Faster than the
/// relay can read, the kernel drops datagrams at its socket before anyone can tell
/// outsider from member, and members lose packets in proportion: a capacity limit of
/// any UDP service, not a question of what the relay forwards.
const FLOOD_PPS: u64 = 10_000;
/// Forged checks: half signed with a wrong password, half unsigned.
const FORGED: usize = 40;

/// The outsider: from its own socket, to the relay's media port, knowing what an
/// observer of the path knows (the relay's address, `ufrags` of a live call, the
/// members' SSRCs) and nothing else.
fn attack(sock: &UdpSocket, relay: SocketAddr, ufrags: &(String, String), ssrcs: &[u32]) -> Attack {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let mut a = Attack::default();
    let mut buf = vec![0u8; 2048];
    // Every datagram but the forged checks goes out at FLOOD_PPS, in bursts every
    // millisecond (pacing, not waiting for anything).
    let mut paced = 0u64;
    let mut paced_from = Instant::now();
    let mut pace = |restart: bool| {
        if restart {
            (paced, paced_from) = (0, Instant::now());
        }
        let per_ms = FLOOD_PPS / 1000;
        if paced.is_multiple_of(per_ms) {
            let due = paced_from + Duration::from_millis(paced / per_ms);
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
        }
        paced += 1;
    };
    let mut send = |a: &mut Attack, d: &[u8]| {
        loop {
            match sock.send_to(d, relay) {
                Ok(_) => break,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(e) => panic!("outsider send: {e}"),
            }
        }
        while let Ok((n, _)) = sock.recv_from(&mut buf) {
            a.received.push(buf[..n].to_vec());
        }
    };
    // Guessed ufrags, well-formed checks otherwise.
    for _ in 0..200 {
        let user = format!("{}:{}", rng.word(8), rng.word(8));
        let check = stun_check(
            rng.bytes(12).try_into().unwrap(),
            &user,
            Some(&rng.bytes(22)),
        );
        pace(false);
        send(&mut a, &check);
        a.guessed += 1;
    }
    // The real USERNAME of alice's call, which the path shows, without the password.
    let user = format!("{}:{}", ufrags.0, ufrags.1);
    for i in 0..FORGED {
        let tid: [u8; 12] = rng.bytes(12).try_into().unwrap();
        let wrong = rng.bytes(22);
        let check = stun_check(tid, &user, (i % 2 == 0).then_some(wrong.as_slice()));
        send(&mut a, &check);
        a.forged.push(tid);
    }
    // Their answers (STUN errors) before the rest, so that they are counted apart.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut answer = [0u8; 2048];
    while a.received.len() < FORGED && Instant::now() < deadline {
        match sock.recv_from(&mut answer) {
            Ok((n, _)) => a.received.push(answer[..n].to_vec()),
            Err(_) => std::thread::yield_now(),
        }
    }
    // RTP on the members' SSRCs, from an address that never passed a check.
    for i in 0..300 {
        let d = spoofed_rtp(&mut rng, ssrcs[i % ssrcs.len()]);
        pace(i == 0);
        send(&mut a, &d);
        a.spoofed += 1;
    }
    // Random bytes of random lengths.
    for _ in 0..1000 {
        let len = 1 + (rng.next() % 1200) as usize;
        let d = rng.bytes(len);
        pace(false);
        send(&mut a, &d);
        a.random += 1;
    }
    // The flood: all of it again, many times over.
    a.flood_start = Some(Instant::now());
    for i in 0..FLOOD {
        pace(false);
        let d = match i % 4 {
            0 | 1 => spoofed_rtp(&mut rng, ssrcs[(i as usize / 4) % ssrcs.len()]),
            2 => {
                let user = format!("{}:{}", rng.word(8), ufrags.1);
                stun_check(
                    rng.bytes(12).try_into().unwrap(),
                    &user,
                    Some(&rng.bytes(22)),
                )
            }
            _ => {
                let len = 1 + (rng.next() % 1200) as usize;
                rng.bytes(len)
            }
        };
        send(&mut a, &d);
        a.flood += 1;
    }
    a.flood_end = Some(Instant::now());
    a
}

/// An announcement that names an SFU not joined to the room (its announcer never
/// invited it, or it left): a member's client invites the SFU and the call goes
/// through. When the member leaves, nobody else is in the room, and the SFU leaves too.
#[test]
fn a_member_invites_the_sfu_the_announcer_did_not_and_it_leaves_with_the_last_member() {
    let _one_at_a_time = one_at_a_time();
    let s = sfu();
    let synapse = Synapse::shared();
    let alice = synapse.new_user("m0");
    // Announced, but the SFU never invited.
    let room = announced_room(&alice, &[], &s.user_id, CONF);
    rt().block_on(async {
        let mut a = join("alice", &alice, &room, Instant::now()).await;
        run_until(
            &mut [&mut a],
            &s.relay,
            Duration::from_secs(10),
            "alice connects",
            |p| {
                p[0].events
                    .iter()
                    .any(|(_, e)| matches!(e, ConferenceEvent::Connected { .. }))
            },
        )
        .await;
        a.conf.hangup().await.expect("hang up");
    });
    let admin = synapse.new_admin("admin");
    let joined = || admin.joined_members_as_admin(&room).expect("room members");
    assert!(joined().contains(&s.user_id), "the SFU joined the room");
    alice.leave(&room).expect("alice leaves");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !joined().is_empty() {
        assert!(Instant::now() < deadline, "the SFU stayed in the room");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The homeserver crashes mid-call and comes back. Media never passes through it, so
/// the members keep decrypting each other while it is down; once it is back, signaling
/// and the members' clients resume their syncs, and a member who calls afterwards is
/// answered and decrypts everyone, and everyone her (the others' key re-sends reach her
/// new device).
#[test]
fn a_homeserver_crash_cuts_no_media_and_a_member_calls_in_after_its_restart() {
    let _one_at_a_time = one_at_a_time();
    let hs = Synapse::start();
    let s = sfu_on(&hs, Relay::start(1), "");
    let users: Vec<MatrixUser> = ["m0", "m1", "m2"].iter().map(|n| hs.new_user(n)).collect();
    let room = conference_room(&users[0], &[&users[1], &users[2]], &s.user_id, CONF);
    rt().block_on(async {
        let epoch = Instant::now();
        let (mut a, mut b) = tokio::join!(
            join("alice", &users[0], &room, epoch),
            join("bob", &users[1], &room, epoch),
        );
        run_until(
            &mut [&mut a, &mut b],
            &s.relay,
            Duration::from_secs(20),
            "alice and bob decrypt each other",
            |p| everyone_has_all_streams(p, 20),
        )
        .await;

        // Down long enough for signaling's sync retries to reach their longest wait.
        hs.kill9();
        let down = Instant::now();
        run_for(&mut [&mut a, &mut b], Duration::from_secs(16)).await;
        let up = Instant::now();
        for (rx, tx) in [(&a, &b), (&b, &a)] {
            let o = tx.conf.ssrcs();
            for (what, ssrc, share) in [("audio", o.audio, 0.95), ("thumbnail", o.thumbnail, 0.9)] {
                let sent = tx
                    .sent
                    .iter()
                    .filter(|((s, _), (_, _, t))| *s == ssrc && *t >= down && *t < up)
                    .count();
                let got = rx.rx.iter().filter(|r| r.ssrc == ssrc && r.at >= down).count();
                eprintln!("homeserver down: {} decrypted {got} of {sent} {what} packets from {}", rx.name, tx.name);
                assert!(sent >= 300, "{} sent only {sent} {what} packets", tx.name);
                assert!(
                    got as f64 >= share * sent as f64,
                    "{} decrypted {got} of the {sent} {what} packets {} sent while the homeserver was down",
                    rx.name,
                    tx.name
                );
            }
        }

        hs.restart();
        let restarted = Instant::now();
        let mut c = join("carol", &users[2], &room, epoch).await;
        // Signaling retries its sync at least every 4 s: the answer does not wait for
        // a retry scheduled while the homeserver was down (with a 30 s cap it came
        // 14.9 s after the restart; her own join takes 1–3 s of the 12 allowed).
        let answered = c.conf.answered_at() - restarted;
        eprintln!("carol answered {answered:?} after the homeserver's restart");
        assert!(answered <= Duration::from_secs(12), "carol answered {answered:?} after the restart");
        assert!(s.signaling.metric("blindfold_signaling_sync_errors_total").unwrap_or(0.0) >= 3.0);
        run_until(
            &mut [&mut a, &mut b, &mut c],
            &s.relay,
            Duration::from_secs(20),
            "carol and the others decrypt each other",
            |p| everyone_has_all_streams(p, 20),
        )
        .await;
        for (rx, senders) in [(&a, [&b, &c]), (&b, [&a, &c]), (&c, [&a, &b])] {
            for tx in senders {
                assert!(bit_identical(rx, tx) > 0);
            }
            let failed: Vec<&ConferenceEvent> = rx
                .events
                .iter()
                .filter_map(|(_, e)| match e {
                    ConferenceEvent::Undecryptable {
                        reason: DropReason::Srtp(_),
                        ..
                    } => Some(e),
                    _ => None,
                })
                .collect();
            assert!(failed.is_empty(), "{} failed to decrypt: {failed:?}", rx.name);
        }
    });
}

#[test]
fn an_outsider_who_knows_the_relay_gets_nothing_and_disturbs_nobody() {
    use blindfold_relay::wire::stun::{Class, StunMessage};
    use blindfold_relay::wire::{Kind, classify};

    let st = setup(3);
    let relay = &st.sfu.relay;
    rt().block_on(async {
        let (mut a, mut b, mut c) = st.three_in_the_call().await;
        assert_eq!(a.conf.relay(), relay.udp);
        let ufrags = call_ufrags(&st.users[0], a.conf.call_id());
        let ssrcs: Vec<u32> = [&a, &b, &c]
            .iter()
            .flat_map(|p| {
                let o = p.conf.ssrcs();
                [o.audio.0, o.thumbnail.0, o.full.0]
            })
            .collect();
        let drops_before = relay_drops(relay);
        let kernel_before = kernel_drops(relay.udp.port());
        let switched_down = || relay.metric("blindfold_layer_switches_total{direction=\"down\"}");
        let switched_down_before = switched_down();
        let attack_start = Instant::now();

        let sock = UdpSocket::bind("127.0.0.1:0").expect("outsider socket");
        sock.set_nonblocking(true).expect("nonblocking");
        let outsider = {
            let sock = sock.try_clone().expect("socket clone");
            let target = relay.udp;
            let ufrags = ufrags.clone();
            let ssrcs = ssrcs.clone();
            std::thread::spawn(move || attack(&sock, target, &ufrags, &ssrcs))
        };
        run_until(
            &mut [&mut a, &mut b, &mut c],
            &st.sfu.relay,
            Duration::from_secs(60),
            "the outsider's flood",
            |_| outsider.is_finished(),
        )
        .await;
        let mut attack = outsider.join().expect("the outsider thread panicked");
        let (flood_start, flood_end) = (attack.flood_start.unwrap(), attack.flood_end.unwrap());
        eprintln!(
            "outsider: {} datagrams ({} flood in {:?}), got {} back",
            attack.sent(),
            attack.flood,
            flood_end - flood_start,
            attack.received.len()
        );

        // Media kept flowing: every member decrypts every other's stream sent after the
        // flood (so whatever was sent during it has arrived or is lost).
        let after = flood_end + Duration::from_millis(200);
        run_until(
            &mut [&mut a, &mut b, &mut c],
            &st.sfu.relay,
            Duration::from_secs(10),
            "everyone decrypts media sent after the flood",
            |p| {
                p.iter().all(|rx| {
                    p.iter().filter(|s| s.name != rx.name).all(|s| {
                        let o = s.conf.ssrcs();
                        [o.audio, o.thumbnail, o.full].iter().all(|&ssrc| {
                            rx.rx.iter().any(|r| {
                                r.ssrc == ssrc
                                    && s.sent.get(&(r.ssrc, r.seq)).is_some_and(|x| x.2 > after)
                            })
                        })
                    })
                })
            },
        )
        .await;
        // Whatever the relay may have sent the outsider since.
        let mut buf = vec![0u8; 2048];
        while let Ok((n, _)) = sock.recv_from(&mut buf) {
            attack.received.push(buf[..n].to_vec());
        }

        // The outsider got exactly one STUN error per forged check — 401 for a wrong
        // password, 400 for none (relay::ice; RFC 8489) — and nothing else: no media,
        // no DTLS, no answer to a guess.
        let mut answered = HashSet::new();
        for d in &attack.received {
            assert_eq!(
                classify(d),
                Kind::Stun,
                "the outsider got a non-STUN datagram: {d:02x?}"
            );
            let m = StunMessage::parse(d).expect("a STUN message");
            assert_eq!(m.class(), Class::ErrorResponse, "{m:?}");
            let tid = m.transaction_id().0;
            let i = attack
                .forged
                .iter()
                .position(|t| *t == tid)
                .unwrap_or_else(|| {
                    panic!("an answer to a check the outsider did not forge: {m:?}")
                });
            let code = m
                .error_code()
                .expect("error code")
                .expect("an ERROR-CODE")
                .code;
            assert_eq!(code, if i % 2 == 0 { 401 } else { 400 });
            assert!(
                !m.has_integrity(),
                "an unauthenticated error carries no integrity"
            );
            assert!(answered.insert(tid), "two answers to one check");
        }
        assert_eq!(
            answered.len(),
            FORGED,
            "not every forged check was answered"
        );

        // Nobody was disturbed: no decrypt failure, nothing undecryptable, no call
        // ended, everyone still connected, and every packet decrypted is the sender's.
        for p in [&a, &b, &c] {
            let bad: Vec<_> = p
                .events
                .iter()
                .filter(|(t, e)| {
                    *t >= attack_start
                        && matches!(
                            e,
                            ConferenceEvent::Undecryptable { .. } | ConferenceEvent::Ended { .. }
                        )
                })
                .collect();
            assert!(bad.is_empty(), "{}: {bad:?}", p.name);
        }
        for (rx, senders) in [(&a, [&b, &c]), (&b, [&a, &c]), (&c, [&a, &b])] {
            for s in senders {
                assert!(bit_identical(rx, s) > 0);
            }
        }
        assert_eq!(relay.metric("blindfold_sessions{state=\"configured\"}"), 3);
        assert_eq!(relay.metric("blindfold_sessions{state=\"connected\"}"), 3);
        // Loss during the attack: of what the members sent between the outsider's first
        // datagram and its last, what did the others not decrypt? Counted per receiver,
        // sender and stream, which a failure prints. Audio and thumbnails are owed to
        // everyone. A full layer is owed only while its viewer keeps it: if the flood's
        // load on this host made layer choice move a viewer down to the thumbnail, the
        // full-layer packets it then did not forward were never owed, so full layers
        // are counted only when nobody was switched down.
        let switches_down = switched_down() - switched_down_before;
        let mut per_stream: HashMap<(&str, &str, &str), (u64, u64)> = HashMap::new();
        for rx in [&a, &b, &c] {
            let got: HashSet<(Ssrc, u16)> = rx.rx.iter().map(|r| (r.ssrc, r.seq)).collect();
            for s in [&a, &b, &c].into_iter().filter(|s| s.name != rx.name) {
                let o = s.conf.ssrcs();
                for (key, (_, _, t)) in &s.sent {
                    if (attack_start..=flood_end).contains(t) {
                        let stream = match key.0 {
                            k if k == o.audio => "audio",
                            k if k == o.thumbnail => "thumbnail",
                            k if k == o.full => "full",
                            _ => "other",
                        };
                        let n = per_stream.entry((rx.name, s.name, stream)).or_default();
                        n.0 += 1;
                        n.1 += u64::from(!got.contains(key));
                    }
                }
            }
        }
        let (sent, lost) = per_stream
            .iter()
            .filter(|((_, _, stream), _)| switches_down == 0 || *stream != "full")
            .fold((0, 0), |(s, l), (_, n)| (s + n.0, l + n.1));
        let kernel = kernel_drops(relay.udp.port()) - kernel_before;
        eprintln!(
            "during the attack the members sent {sent} packets to each other, {lost} lost; \
             the kernel dropped {kernel} datagrams at the relay's socket; \
             {switches_down} viewers switched down (then full layers are not counted)"
        );
        assert!(
            sent >= 10,
            "the flood was too short to judge: {sent} packets in it"
        );
        if lost * 100 > sent * MAX_LOSS_PERCENT {
            // Which streams lost them, and whether layer choice moved anyone.
            for ((rx, sender, stream), (sent, lost)) in &per_stream {
                eprintln!("{rx} missed {lost} of {sender}'s {sent} {stream} packets");
            }
            print_bandwidth_decisions(relay);
        }
        assert!(
            lost * 100 <= sent * MAX_LOSS_PERCENT,
            "{lost} of {sent} packets lost during the flood"
        );

        // The relay counted what it dropped, by reason.
        let drops_after = relay_drops(relay);
        let rose = |r: &str| drops_after[r] - drops_before[r];
        let all: u64 = drops_after.keys().map(|r| rose(r)).sum();
        eprintln!(
            "relay drops: {:?}",
            drops_after
                .keys()
                .filter(|r| rose(r) > 0)
                .map(|r| (*r, rose(r)))
                .collect::<Vec<_>>()
        );
        assert_eq!(rose("stun_rejected"), FORGED as u64);
        assert!(rose("stun_unknown_ufrag") >= attack.guessed);
        assert!(rose("unvalidated") >= attack.spoofed);
        assert!(rose("not_ours") > 0);
        // Every outsider datagram the kernel handed over was counted as a drop.
        assert!(
            all + kernel >= attack.sent(),
            "{} sent, {all} counted, {kernel} dropped by the kernel",
            attack.sent()
        );
    });
}

/// Loss the members may see during the attack, in percent of what they sent meanwhile.
const MAX_LOSS_PERCENT: u64 = 2;

/// The SFU's answer and what it sends right after it come in one sync: the join reads
/// both. Here what comes after is the SFU's hangup (someone else was invited into the
/// DM, which makes its answer readable to them): the call ends with the SFU's reason
/// rather than live on against a relay session that is gone. A proxy holds the
/// member's syncs from its invite until the homeserver has both.
#[test]
fn what_the_sfu_sends_right_after_its_answer_is_not_lost() {
    let s = setup(2);
    let proxy = HomeserverProxy::start(Synapse::shared().base_url());
    proxy.hold_syncs_after_invite();
    let (alice, carol) = (&s.users[0], &s.users[1]);
    let relay = &s.sfu.relay;
    let sessions = || relay.metric("blindfold_sessions{state=\"configured\"}");
    let main = rt();
    let media = MediaMode::Synthetic {
        epoch: Instant::now(),
        seed: 1,
    };
    let mut a = std::thread::scope(|scope| {
        scope.spawn(|| {
            let _release = ReleaseSyncs(&proxy);
            relay.wait_until(Duration::from_secs(20), "alice's relay session", || {
                sessions() == 1
            });
            let dm = proxy.invite_room().expect("the invite's room");
            alice.invite(&dm, carol.user_id()).expect("carol invited");
            relay.wait_until(Duration::from_secs(10), "alice's session ended", || {
                sessions() == 0
            });
            relay.wait_until(Duration::from_secs(10), "the SFU's hangup", || {
                timeline(alice, &dm).iter().any(|e| {
                    e["type"] == "m.call.hangup" && e["sender"].as_str() == Some(&s.sfu.user_id)
                })
            });
        });
        main.block_on(join_at("alice", alice, &proxy.base_url(), &s.room, media))
    });
    assert!(
        proxy.passed_together(&["m.call.answer", "m.call.hangup"]),
        "the answer and the hangup did not come in one sync"
    );
    // Alice's client is dropped in the runtime: its store closes there.
    main.block_on(async move {
        run_until(
            &mut [&mut a],
            relay,
            Duration::from_secs(10),
            "alice's call ends with the SFU's reason",
            |p| {
                p[0].events.iter().any(|(_, e)| {
                    matches!(e, ConferenceEvent::Ended { reason, .. } if reason.contains("not_a_dm"))
                })
            },
        )
        .await;
    });
}

/// Lets a [`HomeserverProxy`]'s held syncs go when dropped, a panic included, so that
/// a client waiting on them is not left waiting out its own timeout.
struct ReleaseSyncs<'a>(&'a HomeserverProxy);

impl Drop for ReleaseSyncs<'_> {
    fn drop(&mut self) {
        self.0.release_syncs();
    }
}
