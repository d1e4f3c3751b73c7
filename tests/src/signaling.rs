//! `blindfold-signaling` as a real process, and Matrix callers that place real calls to
//! it: the [`Signaling`] guard (config file, log, kill -9, restart on the same database)
//! and a [`Caller`] that writes its SDP offer per docs/protocol.md, reads the answer with
//! its own small reader (not signaling's code), and then connects a real
//! [`Participant`] over UDP to the relay the answer names.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub use blindfold_client::sdp::Answer;
use blindfold_client::sdp::Offer;
use blindfold_client::udp::{UdpLink, UdpParticipant};
use blindfold_client::{Event, IceCredentials, OwnSsrcs, Participant, ParticipantConfig};
use blindfold_relay::dtls::{DtlsCert, DtlsConfig, DtlsSettings};
use blindfold_relay::srtp::{MasterKey, SrtpProfile};

use serde_json::{Value, json};

use crate::matrix::{MatrixUser, pointer_token};
use crate::process::{Relay, binary};
use crate::synapse::{PASSWORD, Synapse, unique_localpart};

/// The conference id the end-to-end tests announce.
pub const CONF: &str = "weekly";

/// A running `blindfold-signaling`, killed when dropped.
pub struct Signaling {
    child: Option<Child>,
    /// Its directory: config, database, log.
    pub dir: PathBuf,
    /// Its `/metrics` address: port 0 until [`wait_ready`](Self::wait_ready) reads
    /// the one it bound from its log (a port picked here and bound there could be
    /// taken in between by another test).
    pub metrics: SocketAddr,
    log_offset: u64,
}

impl Signaling {
    /// Writes a config for the SFU account `user` (password `password`) on `synapse`,
    /// driving the relay at `relay_control`, plus `extra` TOML lines, and starts it.
    /// Does not wait: see [`wait_ready`](Self::wait_ready).
    pub fn start(
        synapse: &Synapse,
        relay_control: &Path,
        user: &str,
        password: &str,
        extra: &str,
    ) -> Signaling {
        Self::start_at(synapse.base_url(), relay_control, user, password, extra)
    }

    /// [`start`](Self::start), with the homeserver at `homeserver` (a URL in front of
    /// the test homeserver, such as [`crate::hs_proxy`]'s).
    pub fn start_at(
        homeserver: &str,
        relay_control: &Path,
        user: &str,
        password: &str,
        extra: &str,
    ) -> Signaling {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "bf-signaling-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let metrics: SocketAddr = ([127, 0, 0, 1], 0).into();
        std::fs::write(dir.join("password"), password).expect("password file");
        let config = format!(
            "homeserver = \"{}\"\nuser = \"{user}\"\npassword_file = \"{}\"\nrelay_socket = \"{}\"\n\
             database = \"{}\"\nmetrics = \"{metrics}\"\nlog_level = \"info\"\n{extra}\n",
            homeserver,
            dir.join("password").display(),
            relay_control.display(),
            dir.join("signaling.sqlite3").display(),
        );
        std::fs::write(dir.join("signaling.toml"), config).expect("config file");
        let mut s = Signaling {
            child: None,
            dir,
            metrics,
            log_offset: 0,
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("signaling.log"))
            .expect("log file");
        self.log_offset = log.metadata().map(|m| m.len()).unwrap_or(0);
        let mut cmd = Command::new(binary("blindfold-signaling", "blindfold-signaling"));
        crate::process::tie_if_asked(&mut cmd);
        let child = cmd
            .arg("--config")
            .arg(self.dir.join("signaling.toml"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting blindfold-signaling");
        self.child = Some(child);
    }

    /// Its whole log (all runs).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("signaling.log")).unwrap_or_default()
    }

    /// The log of the current run.
    pub fn run_log(&self) -> String {
        let all = self.log();
        all.get(self.log_offset as usize..).unwrap_or("").to_owned()
    }

    /// Waits (up to 30 s) until the current run says it is running; panics with the log
    /// if it exits first.
    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.run_log().contains("signaling running") {
            if let Some(st) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().expect("try_wait"))
            {
                panic!("blindfold-signaling exited with {st}:\n{}", self.run_log());
            }
            assert!(
                Instant::now() < deadline,
                "blindfold-signaling not ready:\n{}",
                self.run_log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let log = self.run_log();
        self.metrics = crate::process::logged_addr(&log, "metrics listening", "addr=")
            .unwrap_or_else(|| panic!("blindfold-signaling logged no metrics address:\n{log}"));
    }

    /// Waits for the current run to exit, up to `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(st) = self.child.as_mut()?.try_wait().expect("try_wait") {
                return Some(st);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The process id of the current run, if it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL, as a crash would.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same config and database.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// `GET /metrics`: the value of the first series starting with `selector`.
    pub fn metric(&self, selector: &str) -> Option<f64> {
        use std::io::{Read, Write};
        let mut s =
            std::net::TcpStream::connect_timeout(&self.metrics, Duration::from_secs(2)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: s\r\n\r\n")
            .ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).ok()?;
        text.lines()
            .find(|l| {
                l.starts_with(selector) && l[selector.len()..].starts_with([' ', '{'])
                    || l.starts_with(&format!("{selector} "))
            })
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
    }
}

impl Drop for Signaling {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("signaling log:\n{}", self.log());
        }
        self.kill9();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// How long the room helpers wait for the SFU to join a room.
const JOIN_WAIT: Duration = Duration::from_secs(20);

/// Waits (up to 20 s) until `user` sees `who` joined to `room`.
pub fn wait_joined(user: &MatrixUser, room: &str, who: &str) {
    let deadline = Instant::now() + JOIN_WAIT;
    while !user
        .joined_members(room)
        .expect("joined_members")
        .iter()
        .any(|m| m == who)
    {
        assert!(Instant::now() < deadline, "{who} never joined {room}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// An encrypted room created by `owner` with `invite` invited and a live conference
/// `conf_id` naming `sfu_user` announced in it; nobody waited for.
pub fn announced_room(
    owner: &MatrixUser,
    invite: &[&str],
    sfu_user: &str,
    conf_id: &str,
) -> String {
    let room = owner
        .create_room(&json!({
            "preset": "private_chat",
            "invite": invite,
            "initial_state": [{"type": "m.room.encryption", "state_key": "",
                               "content": {"algorithm": "m.megolm.v1.aes-sha2"}}]
        }))
        .expect("create conference room");
    owner
        .send_state(
            &room,
            "org.matrix.msc2359.conference",
            conf_id,
            &json!({"sfu": sfu_user, "name": "Weekly"}),
        )
        .expect("announce conference");
    room
}

/// An encrypted conference room owned by `owner` with `members` joined, the SFU
/// invited and joined, and a live conference `conf_id` naming `sfu_user`.
pub fn conference_room(
    owner: &MatrixUser,
    members: &[&MatrixUser],
    sfu_user: &str,
    conf_id: &str,
) -> String {
    let mut invite: Vec<&str> = members.iter().map(|m| m.user_id()).collect();
    invite.push(sfu_user);
    let room = announced_room(owner, &invite, sfu_user, conf_id);
    for m in members {
        m.join(&room).expect("member joins");
    }
    wait_joined(owner, &room, sfu_user);
    room
}

/// Creates an unencrypted DM between `user` and the SFU, inviting it; does not wait for
/// it to join (see [`dm`]).
pub fn create_dm(user: &MatrixUser, sfu_user: &str) -> String {
    user.create_room(
        &json!({"preset": "trusted_private_chat", "is_direct": true, "invite": [sfu_user]}),
    )
    .expect("create DM")
}

/// An unencrypted DM between `user` and the SFU, the SFU joined.
pub fn dm(user: &MatrixUser, sfu_user: &str) -> String {
    let room = create_dm(user, sfu_user);
    wait_joined(user, &room, sfu_user);
    room
}

/// The content of an `m.call.invite` for conference `conf_id` of `room`, offering `sdp`
/// (docs/protocol.md).
pub fn invite_content(call_id: &str, room: &str, conf_id: &str, sdp: &str) -> Value {
    json!({
        "call_id": call_id, "party_id": "TESTDEV", "version": "1", "lifetime": 60000,
        "offer": {"type": "offer", "sdp": sdp},
        "org.matrix.msc2359.conference": {"room_id": room, "conf_id": conf_id}
    })
}

/// In a sync response of user `me`: the SFU's `m.call.answer` or `m.call.hangup` for
/// `call_id` in room `dm`, as `(event type, content)`.
pub fn sfu_reply(sync: &Value, dm: &str, me: &str, call_id: &str) -> Option<(String, Value)> {
    let pointer = format!("/rooms/join/{}/timeline/events", pointer_token(dm));
    sync.pointer(&pointer)?.as_array()?.iter().find_map(|e| {
        let kind = e["type"].as_str()?;
        let ours = e["sender"].as_str() != Some(me) && e["content"]["call_id"] == call_id;
        (ours && (kind == "m.call.answer" || kind == "m.call.hangup"))
            .then(|| (kind.to_owned(), e["content"].clone()))
    })
}

fn dtls() -> &'static DtlsConfig {
    static D: OnceLock<DtlsConfig> = OnceLock::new();
    D.get_or_init(|| DtlsConfig::new(DtlsSettings::default()).expect("client dtls"))
}

/// A participant-to-be: its SSRCs, ICE credentials and DTLS certificate.
pub struct Caller {
    idx: usize,
    /// Its streams.
    pub ssrcs: OwnSsrcs,
    /// Its ICE credentials (in the offer).
    pub ice: IceCredentials,
    /// Its DTLS certificate (fingerprint in the offer).
    pub cert: DtlsCert,
}

impl Caller {
    /// Caller number `idx` (distinct SSRCs per index).
    pub fn new(idx: usize) -> Caller {
        Caller {
            idx,
            ssrcs: OwnSsrcs::numbered(idx),
            ice: IceCredentials {
                ufrag: format!("c{idx}uf"),
                pwd: format!("caller{idx}password0123456789"),
            },
            cert: DtlsCert::generate().expect("caller cert"),
        }
    }

    /// The SDP offer of docs/protocol.md (the client library's [`Offer`]): BUNDLE, Opus
    /// and VP8, audio level, frame marking and abs-send-time, audio + simulcast
    /// thumbnail/full SSRCs.
    pub fn offer(&self) -> String {
        Offer {
            session_id: 1000 + self.idx as u64,
            ssrcs: self.ssrcs,
            ice: self.ice.clone(),
            fingerprint: self.cert.fingerprint(),
            cname: format!("caller{}", self.idx),
        }
        .to_sdp()
    }

    /// The participant that connects with `answer`'s transport, on a fresh UDP socket,
    /// sending end-to-end SRTP with key `key_seed`-derived bytes.
    pub fn connect(&self, answer: &Answer) -> CallPeer {
        let profile = SrtpProfile::AeadAes128Gcm;
        let key: Vec<u8> = (0..profile.master_len())
            .map(|i| (i as u8).wrapping_mul(29) ^ self.idx as u8)
            .collect();
        let cfg = ParticipantConfig::new(
            self.ice.clone(),
            answer.ice.clone(),
            answer.candidates[0],
            self.cert.clone(),
            answer.fingerprint,
            dtls().clone(),
            self.ssrcs,
            MasterKey::new(profile, &key).expect("key"),
            self.idx as u64 + 1,
        );
        let p = Participant::new(cfg, Instant::now()).expect("participant");
        let link = UdpLink::bind("127.0.0.1:0").expect("participant socket");
        CallPeer {
            udp: UdpParticipant::new(p, link),
            key,
            events: Vec::new(),
        }
    }
}

/// A connected (or connecting) participant on its own UDP socket.
pub struct CallPeer {
    udp: UdpParticipant,
    /// Its end-to-end master key (key ‖ salt).
    pub key: Vec<u8>,
    /// Everything it reported.
    pub events: Vec<Event>,
}

impl CallPeer {
    /// True once DTLS completed.
    pub fn connected(&self) -> bool {
        self.events
            .iter()
            .any(|e| matches!(e, Event::Connected { .. }))
    }

    /// The participant library instance.
    pub fn p(&self) -> &Participant {
        self.udp.participant()
    }

    /// The participant library instance, to send or install keys.
    pub fn p_mut(&mut self) -> &mut Participant {
        self.udp.participant_mut()
    }

    /// Moves its datagrams and runs its timers once. Panics if the socket failed to
    /// read.
    pub fn step(&mut self) {
        self.events.extend(self.udp.step(Instant::now()));
        assert_eq!(self.udp.stats().recv_errors, 0, "participant recv failed");
    }
}

/// Steps every peer until `done` holds; panics after `limit` naming `what`.
pub fn drive(
    peers: &mut [&mut CallPeer],
    limit: Duration,
    what: &str,
    mut done: impl FnMut(&[&mut CallPeer]) -> bool,
) {
    let deadline = Instant::now() + limit;
    loop {
        for p in peers.iter_mut() {
            p.step();
        }
        if done(peers) {
            return;
        }
        assert!(Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// A relay, a signaling process (started with `extra` config lines) and its SFU
/// account.
pub struct Sfu {
    /// The relay.
    pub relay: Relay,
    /// Its signaling process.
    pub signaling: Signaling,
    /// The SFU account.
    pub user_id: String,
}

/// Registers an SFU account and starts a relay and a signaling process (with `extra`
/// config lines) for it, on the shared homeserver.
pub fn sfu_with(extra: &str) -> Sfu {
    sfu_on(Synapse::shared(), Relay::start(1), extra)
}

/// Registers an SFU account on `synapse` and starts a signaling process (with `extra`
/// config lines) for it, driving `relay`.
pub fn sfu_on(synapse: &Synapse, relay: Relay, extra: &str) -> Sfu {
    sfu_behind(synapse, synapse.base_url(), relay, extra)
}

/// [`sfu_on`], signaling reaching the homeserver at `homeserver` (a URL in front of
/// `synapse`, such as [`crate::hs_proxy`]'s).
pub fn sfu_behind(synapse: &Synapse, homeserver: &str, relay: Relay, extra: &str) -> Sfu {
    let local = unique_localpart("sfu");
    let reg = synapse.register(&local, PASSWORD, false);
    let mut signaling =
        Signaling::start_at(homeserver, &relay.control, &reg.user_id, PASSWORD, extra);
    signaling.wait_ready();
    Sfu {
        relay,
        signaling,
        user_id: reg.user_id,
    }
}

/// [`sfu_with`] without extra config.
pub fn sfu() -> Sfu {
    sfu_with("")
}
