//! The participant CLI, `blindfold-client`, as real processes against the shared
//! harness (Synapse, relay, signaling): three participants in an encrypted conference
//! room for a few seconds, the first sending a real Ogg Opus file
//! (`client/testdata/sine-1s.opus`, looped). Judged from outside the clients: their
//! exit status, their JSON reports ([`check_reports`]: everyone decrypted everyone's
//! audio, thumbnail and full stream, no decrypt failure), and the recordings on disk —
//! the Opus packets the others recorded are the clip's packets byte for byte, and
//! `opusdec` decodes each recording to the duration of those packets within 5%. Also:
//! a room that is not encrypted is refused with a one-line error and a non-zero exit;
//! and Ctrl-C (SIGINT) in the middle of a call ends the process with status 0 within
//! 5 s, its report says what it decrypted, and the call is hung up as the others see
//! it: the `m.call.hangup` on the homeserver, the relay session gone, signaling's
//! hang-up counter, the other member told (it rekeys). And a relay killed and started
//! again mid-call: each client connects to it again by itself.

// Real processes and deadlines: the test reads the clock.
#![allow(clippy::disallowed_methods)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use blindfold_client::ogg::{OggOpusReader, OpusPacket};
use blindfold_client::report::{Report, check_recordings, check_reports};
use blindfold_client::table::StreamKind;
use blindfold_relay::dtls::DtlsCert;
use blindfold_tests::matrix::{MatrixUser, escape};
use blindfold_tests::process::{Relay, binary};
use blindfold_tests::signaling::{CONF, conference_room, sfu, sfu_on, wait_joined};
use blindfold_tests::synapse::{PASSWORD, Synapse, unique_localpart};
use serde_json::{Value, json};

/// How long each participant stays in the call.
const DURATION_S: u64 = 8;
/// Beyond that: login, key upload, the call set-up, the hang-up.
const ALLOWANCE: Duration = Duration::from_secs(60);

fn clip() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../client/testdata/sine-1s.opus")
}

/// One `blindfold-client` process and its files; killed if still running when dropped.
struct Client {
    name: &'static str,
    dir: PathBuf,
    child: Option<Child>,
}

impl Client {
    fn start(name: &'static str, user: &MatrixUser, room: &str, audio: Option<&Path>) -> Client {
        Client::start_for(name, user, room, audio, Some(DURATION_S))
    }

    /// [`Client::start`] for `duration` seconds, or until a signal with `None`.
    fn start_for(
        name: &'static str,
        user: &MatrixUser,
        room: &str,
        audio: Option<&Path>,
        duration: Option<u64>,
    ) -> Client {
        let dir = std::env::temp_dir().join(format!(
            "bf-client-{}-{}",
            std::process::id(),
            unique_localpart(name)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("password"), PASSWORD).unwrap();
        let mut cmd = Command::new(binary("blindfold-client", "blindfold-client"));
        cmd.arg("--homeserver")
            .arg(Synapse::shared().base_url())
            .args([
                "--user",
                user.user_id(),
                "--room",
                room,
                "--conference",
                CONF,
            ])
            .arg("--password-file")
            .arg(dir.join("password"))
            .arg("--store")
            .arg(dir.join("store"))
            .arg("--report")
            .arg(dir.join("report.json"))
            .arg("--record-dir")
            .arg(dir.join("recordings"))
            .args(["--subscribe", "all", "--no-table"]);
        if let Some(a) = audio {
            cmd.arg("--audio-file").arg(a);
        }
        if let Some(d) = duration {
            cmd.args(["--duration", &d.to_string()]);
        }
        let log = std::fs::File::create(dir.join("client.log")).unwrap();
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        let child = cmd.spawn().expect("starting blindfold-client");
        Client {
            name,
            dir,
            child: Some(child),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("client.log")).unwrap_or_default()
    }

    /// Its exit status, waiting up to `deadline`.
    fn wait(&mut self, deadline: Instant) -> ExitStatus {
        let child = self.child.as_mut().expect("running");
        loop {
            if let Some(st) = child.try_wait().expect("try_wait") {
                self.child = None;
                return st;
            }
            assert!(
                Instant::now() < deadline,
                "{} still running; its log:\n{}",
                self.name,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Sends the running process signal `sig`.
    fn signal(&self, sig: libc::c_int) {
        let pid = self.child.as_ref().expect("running").id();
        let pid = libc::pid_t::try_from(pid).expect("a pid");
        // SAFETY: kill(2) on our own child, which has not been reaped (we hold it).
        let r = unsafe { libc::kill(pid, sig) };
        assert_eq!(r, 0, "kill {pid}: {}", std::io::Error::last_os_error());
    }

    /// Panics with its log if it has exited.
    fn assert_running(&mut self) {
        let child = self.child.as_mut().expect("running");
        if let Some(st) = child.try_wait().expect("try_wait") {
            panic!(
                "{} exited early ({st}); its log:\n{}",
                self.name,
                self.log()
            );
        }
    }

    /// Bytes recorded so far of `user`'s audio (the CLI names each file
    /// `<user>-<device>-<ssrc>.opus`, the user id's `@` dropped and `:` made `_`).
    fn recorded_bytes(&self, user: &str) -> u64 {
        let prefix = format!("{}-", user.trim_start_matches('@').replace(':', "_"));
        std::fs::read_dir(self.dir.join("recordings"))
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
            .filter_map(|e| e.metadata().ok())
            .map(|m| m.len())
            .sum()
    }

    fn report(&self) -> Report {
        Report::read(&self.dir.join("report.json"))
            .unwrap_or_else(|e| panic!("{}'s report: {e}; its log:\n{}", self.name, self.log()))
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Waits (up to `duration_s` plus [`ALLOWANCE`]) for every client to exit 0, and
/// returns their reports, which must pass [`check_reports`].
fn finish_all(clients: &mut [Client], duration_s: u64) -> Vec<Report> {
    let deadline = Instant::now() + Duration::from_secs(duration_s) + ALLOWANCE;
    for c in clients.iter_mut() {
        let st = c.wait(deadline);
        assert!(
            st.success(),
            "{} exited with {st}; its log:\n{}",
            c.name,
            c.log()
        );
    }
    let reports: Vec<Report> = clients.iter().map(Client::report).collect();
    let problems = check_reports(&reports);
    assert!(problems.is_empty(), "{problems:#?}");
    reports
}

fn packets(path: &Path) -> Vec<OpusPacket> {
    OggOpusReader::open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Seconds of audio `opusdec` decodes from `path` (48 kHz 16-bit WAV it writes).
fn decoded_seconds(path: &Path) -> f64 {
    let wav = path.with_extension("wav");
    let out = Command::new("opusdec")
        .arg("--quiet")
        .args(["--rate", "48000"])
        .arg(path)
        .arg(&wav)
        .output()
        .expect("running opusdec (opus-tools; scripts/test installs it)");
    assert!(
        out.status.success(),
        "opusdec {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let bytes = std::fs::read(&wav).unwrap();
    let channels = u16::from_le_bytes([bytes[22], bytes[23]]);
    let data = bytes
        .windows(4)
        .position(|w| w == b"data")
        .expect("a WAV data chunk");
    (bytes.len() - data - 8) as f64 / (48_000.0 * 2.0 * f64::from(channels))
}

#[test]
fn three_clients_decrypt_each_other_and_record_the_opus_file() {
    let synapse = Synapse::shared();
    let sfu = sfu();
    let users: Vec<MatrixUser> = ["alice", "bob", "carol"]
        .iter()
        .map(|n| synapse.new_user(n))
        .collect();
    let room = conference_room(&users[0], &[&users[1], &users[2]], &sfu.user_id, CONF);
    let clip = clip();
    let mut clients: Vec<Client> = ["alice", "bob", "carol"]
        .iter()
        .zip(&users)
        .enumerate()
        .map(|(i, (name, u))| Client::start(name, u, &room, (i == 0).then_some(clip.as_path())))
        .collect();
    let reports = finish_all(&mut clients, DURATION_S);
    for r in &reports {
        let problems = check_recordings(r);
        assert!(problems.is_empty(), "{problems:#?}");
        assert!(
            (DURATION_S as f64..DURATION_S as f64 + 2.0).contains(&r.duration_s),
            "{} was in the call {} s",
            r.user,
            r.duration_s
        );
    }

    // The SFU's active-speaker events reach the CLI's reports, each naming a member;
    // alice's file is a steady tone, whose decoded level her packets carry: she speaks
    // throughout, and is named.
    let members: Vec<&str> = users.iter().map(MatrixUser::user_id).collect();
    assert!(
        reports
            .iter()
            .any(|r| r.speakers.iter().any(|s| s.user == members[0])),
        "nobody heard alice named the active speaker: {:?}",
        reports
            .iter()
            .map(Report::speakers_line)
            .collect::<Vec<_>>()
    );
    for r in &reports {
        for s in &r.speakers {
            assert!(members.contains(&s.user.as_str()), "{}: {s:?}", r.user);
        }
    }

    // What alice read from the clip is what the others recorded, packet for packet:
    // a stretch of the looped clip, from wherever they started hearing it.
    let clip_packets: Vec<Vec<u8>> = packets(&clip).into_iter().map(|p| p.data).collect();
    let alice = &reports[0];
    let alice_audio = alice.sent_stream(StreamKind::Audio).expect("alice's audio");
    // Real time: 50 packets a second for the whole call, give or take the start (the
    // clip starts when media flows: ICE and DTLS after the answer, which on a loaded
    // two-core machine running three tests' clients and Synapse has taken over 1 s).
    assert!(
        alice_audio.packets as f64 >= 50.0 * (DURATION_S as f64 - 2.0),
        "alice sent {} Opus packets in {DURATION_S} s",
        alice_audio.packets
    );
    for r in &reports[1..] {
        let rec = r
            .recordings
            .iter()
            .find(|rec| rec.ssrc == alice_audio.ssrc)
            .unwrap_or_else(|| panic!("{} recorded no file of alice's audio", r.user));
        let got = packets(&rec.path);
        // Several seconds of the clip: the call was not a blip.
        assert!(
            got.len() >= 150,
            "{} recorded {} packets of alice",
            r.user,
            got.len()
        );
        assert!(got.len() as u64 <= alice_audio.packets);
        let n = clip_packets.len();
        let aligned = (0..n).any(|k| {
            got.iter()
                .enumerate()
                .all(|(i, p)| p.data == clip_packets[(k + i) % n])
        });
        assert!(
            aligned,
            "{}'s recording of alice is not the clip's packets in order",
            r.user
        );
        // The packets last 20 ms each; the decoder drops the 312-sample pre-skip.
        let sent_s: f64 = got.iter().map(|p| f64::from(p.samples)).sum::<f64>() / 48_000.0;
        let decoded = decoded_seconds(&rec.path);
        assert!(
            (decoded - sent_s).abs() <= 0.05 * sent_s,
            "{}'s recording decodes to {decoded:.3} s; its packets last {sent_s:.3} s",
            r.user
        );
        eprintln!(
            "{} recorded {} Opus packets of alice ({sent_s:.2} s), opusdec: {decoded:.3} s",
            r.user,
            got.len()
        );
    }
}

#[test]
fn an_unencrypted_room_is_refused_in_one_line() {
    let synapse = Synapse::shared();
    let sfu = sfu();
    let owner = synapse.new_user("owner");
    let room = owner
        .create_room(&json!({"preset": "private_chat", "invite": [sfu.user_id]}))
        .expect("create room");
    owner
        .send_state(
            &room,
            "org.matrix.msc2359.conference",
            CONF,
            &json!({"sfu": sfu.user_id, "name": "plain"}),
        )
        .expect("announce");
    wait_joined(&owner, &room, &sfu.user_id);
    // The owner's own account, logged in by the client with the password.
    let mut c = Client::start("owner", &owner, &room, None);
    let st = c.wait(Instant::now() + ALLOWANCE);
    assert_eq!(st.code(), Some(1), "{}", c.log());
    let log = c.log();
    let last = log.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("blindfold-client: joining conference")
            && last.contains("is not end-to-end encrypted"),
        "{log}"
    );
    assert!(!c.dir.join("report.json").exists(), "no call, so no report");
    // Its store (the account's token and E2EE keys) is this user's alone.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(c.dir.join("store"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700, "{mode:o}");
}

/// The `m.call.*` events in `user`'s rooms other than `conference_room` (its DM with the
/// SFU), as the homeserver has them, oldest first.
fn call_events(user: &MatrixUser, conference_room: &str) -> Vec<Value> {
    let sync = user.sync_once(None, 0).expect("sync");
    let rooms: Vec<String> = sync["rooms"]["join"]
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    let mut events = Vec::new();
    for room in rooms.iter().filter(|r| *r != conference_room) {
        let page = user
            .call(
                "GET",
                &format!(
                    "/_matrix/client/v3/rooms/{}/messages?dir=f&limit=1000",
                    escape(room)
                ),
                None,
            )
            .expect("messages");
        events.extend(
            page["chunk"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|e| e["type"].as_str().is_some_and(|t| t.starts_with("m.call.")))
                .cloned(),
        );
    }
    events
}

#[test]
fn ctrl_c_writes_the_report_and_hangs_up_within_the_documented_bound() {
    let synapse = Synapse::shared();
    let sfu = sfu();
    let alice = synapse.new_user("alice");
    let bob = synapse.new_user("bob");
    let room = conference_room(&alice, &[&bob], &sfu.user_id, CONF);
    // No --duration: both stay until a signal. The clock starts once both run: the
    // first start may build the client binary, which takes minutes on a cold machine.
    let mut a = Client::start_for("alice", &alice, &room, None, None);
    let mut b = Client::start_for("bob", &bob, &room, None, None);
    let started = Instant::now();
    // Both decrypt each other's audio for a while (their recordings of each other
    // grow), and the relay has moved each up to the other's full layer (the report
    // must show all three streams): alice is in a live call, media flowing both ways,
    // when the signal comes.
    let deadline = started + ALLOWANCE;
    let both_up = || {
        sfu.relay
            .metric("blindfold_layer_switches_total{direction=\"up\"}")
            >= 2
    };
    while a.recorded_bytes(bob.user_id()) < 4096
        || b.recorded_bytes(alice.user_id()) < 4096
        || !both_up()
    {
        a.assert_running();
        b.assert_running();
        assert!(
            Instant::now() < deadline,
            "alice and bob never recorded each other; alice's log:\n{}\nbob's log:\n{}",
            a.log(),
            b.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let sessions = || sfu.relay.metric("blindfold_sessions{state=\"configured\"}");
    assert_eq!(sessions(), 2);
    assert_eq!(
        sfu.relay.metric("blindfold_sessions{state=\"connected\"}"),
        2
    );
    let hangups = || {
        sfu.signaling
            .metric("blindfold_signaling_calls_ended_total{reason=\"hangup\"}")
            .expect("signaling's calls_ended_total")
    };
    assert_eq!(hangups(), 0.0);

    let sent = Instant::now();
    a.signal(libc::SIGINT);
    // The CLI's bound: the report, then the hang-up within 3 s; the demo allows 5 s.
    let st = a.wait(sent + Duration::from_secs(5));
    let took = sent.elapsed();
    eprintln!("alice exited {took:?} after SIGINT");
    assert_eq!(st.code(), Some(0), "alice's log:\n{}", a.log());
    let log = a.log();
    assert!(log.contains("stopped by SIGINT"), "{log}");
    assert!(!log.contains("hanging up"), "{log}");

    // Her report: what she decrypted from bob, every stream, no failure, and the
    // recording of his audio.
    let ra = a.report();
    assert!(
        ra.duration_s > 0.5 && ra.duration_s <= (sent - started).as_secs_f64(),
        "alice's report says {} s in the call",
        ra.duration_s
    );
    let from_bob: Vec<_> = ra
        .senders
        .iter()
        .filter(|s| s.user == bob.user_id())
        .flat_map(|s| &s.streams)
        .collect();
    for kind in [StreamKind::Audio, StreamKind::Thumbnail, StreamKind::Full] {
        let s = from_bob
            .iter()
            .find(|s| s.kind == kind)
            .unwrap_or_else(|| panic!("alice's report has no {} from bob: {ra:#?}", kind.as_str()));
        assert!(s.packets > 0, "{s:?}");
        assert_eq!(s.decrypt_failures, 0, "{s:?}");
    }
    let rec = ra
        .recordings
        .iter()
        .find(|r| r.user == bob.user_id())
        .expect("alice's recording of bob");
    assert!(rec.packets >= 25, "{rec:?}");
    let problems = check_recordings(&ra);
    assert!(problems.is_empty(), "{problems:#?}");

    // The hang-up, as the others saw it. The relay dropped her session (signaling
    // removed it on her m.call.hangup), bob's session stays.
    sfu.relay.wait_until(
        Duration::from_secs(5),
        "alice's relay session to go",
        || sessions() == 1,
    );
    assert_eq!(
        sfu.relay.metric("blindfold_sessions{state=\"connected\"}"),
        1
    );
    // Signaling publishes its counters once it has carried out all it does for the
    // hang-up (the relay's removal first, then its store): wait for them too.
    sfu.relay.wait_until(
        Duration::from_secs(5),
        "signaling to count the hang-up",
        || hangups() >= 1.0,
    );
    assert_eq!(
        hangups(),
        1.0,
        "signaling counted another number of hang-ups"
    );
    // The homeserver has her m.call.hangup for the call the SFU answered.
    let calls = call_events(&alice, &room);
    let of = |kind: &str, sender: &str| -> Vec<&Value> {
        calls
            .iter()
            .filter(|e| e["type"] == kind && e["sender"] == sender)
            .collect()
    };
    let invites = of("m.call.invite", alice.user_id());
    assert_eq!(invites.len(), 1, "{calls:#?}");
    let call_id = &invites[0]["content"]["call_id"];
    assert!(
        of("m.call.answer", &sfu.user_id)
            .iter()
            .any(|e| e["content"]["call_id"] == *call_id),
        "{calls:#?}"
    );
    let hangup = of("m.call.hangup", alice.user_id());
    assert_eq!(hangup.len(), 1, "{calls:#?}");
    assert_eq!(hangup[0]["content"]["call_id"], *call_id);
    assert_eq!(hangup[0]["content"]["reason"], "user_hangup");
    // Bob's client read her key event without keys: she left, he rekeys.
    let left = format!("{} (", alice.user_id());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !b
        .log()
        .lines()
        .any(|l| l.contains(&left) && l.ends_with("left; rekeying"))
    {
        b.assert_running();
        assert!(
            Instant::now() < deadline,
            "bob never saw alice leave; his log:\n{}",
            b.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // Bob ends the same way; both reports agree on who decrypted what.
    b.signal(libc::SIGTERM);
    let st = b.wait(Instant::now() + Duration::from_secs(5));
    assert_eq!(st.code(), Some(0), "bob's log:\n{}", b.log());
    assert!(b.log().contains("stopped by SIGTERM"), "{}", b.log());
    let problems = check_reports(&[ra, b.report()]);
    assert!(problems.is_empty(), "{problems:#?}");
    sfu.relay
        .wait_until(Duration::from_secs(5), "bob's relay session to go", || {
            sessions() == 0
        });
}

/// Alice and bob, in a 20 s call through `relay`, each a client process; 2 s after
/// both connected, the relay is killed and started again. Each client's log must say
/// `says` (what it did about the restart); returns their reports.
fn two_clients_through_a_relay_restart(relay: Relay, says: &str) -> Vec<Report> {
    let synapse = Synapse::shared();
    let mut sfu = sfu_on(synapse, relay, "");
    let users: Vec<MatrixUser> = ["alice", "bob"]
        .iter()
        .map(|n| synapse.new_user(n))
        .collect();
    let room = conference_room(&users[0], &[&users[1]], &sfu.user_id, CONF);
    let duration = 20;
    let mut clients: Vec<Client> = ["alice", "bob"]
        .iter()
        .zip(&users)
        .map(|(name, u)| Client::start_for(name, u, &room, None, Some(duration)))
        .collect();
    sfu.relay
        .wait_until(ALLOWANCE, "both clients connected", || {
            sfu.relay.metric("blindfold_sessions{state=\"connected\"}") == 2
        });
    std::thread::sleep(Duration::from_secs(2));
    sfu.relay.restart();
    let reports = finish_all(&mut clients, duration);
    for c in &clients {
        assert!(c.log().contains(says), "{}'s log:\n{}", c.name, c.log());
    }
    reports
}

/// The relay is killed and started again mid-call (its certificate from files, as in
/// production): each client notices that the relay sends it no SRTCP any more,
/// connects again by itself, says so, counts it in its report, and goes on decrypting
/// the other.
#[test]
fn each_client_connects_again_to_a_restarted_relay() {
    let cert = DtlsCert::generate().expect("relay certificate");
    let reports =
        two_clients_through_a_relay_restart(Relay::start_with_cert(1, &cert), "connecting again");
    for (rx, tx) in [(&reports[0], &reports[1]), (&reports[1], &reports[0])] {
        assert_eq!(rx.reconnects, 1, "{}", rx.user);
        // Its audio before the restart and after the reconnect: without the reconnect,
        // only the 2 s before the restart's of the 20.
        let sent = tx
            .sent
            .iter()
            .find(|s| s.kind == StreamKind::Audio)
            .expect("audio sent");
        let got: u64 = rx
            .senders
            .iter()
            .filter(|s| s.user == tx.user)
            .flat_map(|s| &s.streams)
            .filter(|s| s.kind == StreamKind::Audio)
            .map(|s| s.packets)
            .sum();
        eprintln!(
            "{} decrypted {got} of {}'s {} audio packets",
            rx.user, tx.user, sent.packets
        );
        assert!(
            got * 10 >= sent.packets * 4,
            "{} decrypted {got} of {}",
            rx.user,
            sent.packets
        );
    }
}

/// The relay is killed and started again mid-call without certificate files, so with
/// another certificate that no answer names: the SFU hangs up every call with
/// `relay_unavailable`, and each client calls again by itself, says so, counts it in
/// its report, and decrypts the other's audio of the new call.
#[test]
fn each_client_calls_again_when_the_relay_comes_back_with_another_certificate() {
    let reports = two_clients_through_a_relay_restart(Relay::start(1), "calling again");
    for (rx, tx) in [(&reports[0], &reports[1]), (&reports[1], &reports[0])] {
        assert_eq!(rx.calls_again, 1, "{}", rx.user);
        // The audio of its second call (each call's streams are listed, in order).
        let audio: Vec<_> = tx
            .sent
            .iter()
            .filter(|s| s.kind == StreamKind::Audio)
            .collect();
        assert_eq!(audio.len(), 2, "{}: {:?}", tx.user, tx.sent);
        let sent = audio[1];
        let got: u64 = rx
            .senders
            .iter()
            .flat_map(|s| &s.streams)
            .filter(|s| s.ssrc == sent.ssrc)
            .map(|s| s.packets)
            .sum();
        eprintln!(
            "{} decrypted {got} of the {} audio packets of {}'s second call",
            rx.user, sent.packets, tx.user
        );
        assert!(
            got * 10 >= sent.packets * 7,
            "{} decrypted {got} of {}",
            rx.user,
            sent.packets
        );
    }
}
