//! A whole conference end to end over real processes: Synapse, the relay and
//! `blindfold-signaling`, and participants on the client library's [`Conference`]
//! (matrix-sdk with E2EE, a SQLite store each, real UDP to the relay). What is checked
//! is what the members and the SFU account see, outside the relay: SHA-256 of every
//! datagram a receiver decrypted against the sender's own log, the key events as the
//! SFU account syncs them, the MKI switch after a member leaves, and what the leaver's
//! own Matrix client can and cannot decrypt.

// Real processes, sockets and deadlines: the test reads the clock.
#![allow(clippy::disallowed_methods)]

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use blindfold_client::conference::keys::{KEYS_EVENT, KeyEventError};
use blindfold_client::conference::matrix_sdk::ruma::events::room::encrypted::OriginalSyncRoomEncryptedEvent;
use blindfold_client::conference::matrix_sdk::ruma::serde::Raw;
use blindfold_client::conference::{
    Conference, ConferenceConfig, ConferenceEvent, Login, MediaMode,
};
use blindfold_relay::id::{KeyIndex, Ssrc};
use blindfold_tests::matrix::MatrixUser;
use blindfold_tests::signaling::{CONF, Sfu, conference_room, sfu};
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
    let mut cfg = ConferenceConfig::new(
        Synapse::shared().base_url(),
        Login::Password {
            user: user.user_id().to_owned(),
            password: PASSWORD.to_owned(),
        },
        store_dir(name),
        room,
        CONF,
    );
    cfg.media = MediaMode::Synthetic {
        epoch,
        seed: name.len() as u64,
    };
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
        assert!(Instant::now() < end, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
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

/// `R`'s timeline as `user` (the SFU account) syncs it from the start.
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

fn setup(n: usize) -> Setup {
    static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let guard = ONE.lock().unwrap_or_else(|e| e.into_inner());
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

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

#[test]
fn three_members_decrypt_each_other_and_a_leaver_is_rekeyed_out() {
    let st = setup(3);
    let room = st.room.clone();
    rt().block_on(async {
        let epoch = Instant::now();
        let (a, b, c) = tokio::join!(
            join("alice", &st.users[0], &room, epoch),
            join("bob", &st.users[1], &room, epoch),
            join("carol", &st.users[2], &room, epoch),
        );
        let (mut a, mut b, mut c) = (a, b, c);
        // Every member decrypts every other's audio, thumbnail and (subscribed "all")
        // full-resolution stream.
        run_until(
            &mut [&mut a, &mut b, &mut c],
            Duration::from_secs(20),
            "everyone decrypts everyone's three streams",
            |p| {
                p.iter().all(|rx| {
                    let senders: Vec<&Peer> = p.iter().filter(|s| s.name != rx.name).map(|s| &**s).collect();
                    has_all_streams(rx, &senders, 20)
                })
            },
        )
        .await;
        run_for(&mut [&mut a, &mut b, &mut c], Duration::from_millis(500)).await;
        for (rx, senders) in [(&a, [&b, &c]), (&b, [&a, &c]), (&c, [&a, &b])] {
            for s in senders {
                let n = bit_identical(rx, s);
                assert!(n >= 60, "{} compared only {n} packets from {}", rx.name, s.name);
            }
            assert!(rx.rejected().is_empty(), "{}: {:?}", rx.name, rx.rejected());
        }

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
        // check after: her client does decrypt R's events while she is a member).
        let old_from_alice = encrypted
            .iter()
            .find(|e| e["sender"] == a.user_id.as_str())
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
            Duration::from_secs(10),
            "alice and bob switch to key 1",
            |p| {
                let (a, b) = (&p[0], &p[1]);
                a.rx.iter().any(|r| r.from == b.user_id && r.key == KeyIndex(1))
                    && b.rx.iter().any(|r| r.from == a.user_id && r.key == KeyIndex(1))
            },
        )
        .await;
        run_for(&mut [&mut a, &mut b, &mut c], Duration::from_secs(1)).await;
        for (s, rx) in [(&a, &b), (&b, &a)] {
            // Published at once, switched no sooner than 2 s after.
            let published = s
                .events
                .iter()
                .find_map(|(t, e)| match e {
                    ConferenceEvent::KeysPublished { indexes, .. } if indexes.contains(&KeyIndex(1)) => {
                        Some(*t)
                    }
                    _ => None,
                })
                .expect("key 1 published");
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
            Duration::from_secs(20),
            "alice and bob decrypt each other",
            |p| has_all_streams(p[0], &[p[1]], 1) && has_all_streams(p[1], &[p[0]], 1),
        )
        .await;

        // Dave logs in (a new device) and calls while alice and bob are talking: their
        // earlier key events were never shared with his device, so he depends on their
        // re-sends when his first key event appears.
        let mut d = join("dave", &st.users[2], &room, epoch).await;
        let answered = d.conf.answered_at();
        run_until(
            &mut [&mut a, &mut b, &mut d],
            Duration::from_secs(10),
            "dave and the others decrypt each other",
            |p| {
                has_all_streams(p[2], &[p[0], p[1]], 1)
                    && has_all_streams(p[0], &[p[2]], 1)
                    && has_all_streams(p[1], &[p[2]], 1)
            },
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
