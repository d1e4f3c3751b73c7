//! `blindfold-signaling` as a real process, and Matrix callers that place real calls to
//! it: the [`Signaling`] guard (config file, log, kill -9, restart on the same database)
//! and a [`Caller`] that writes its SDP offer per docs/protocol.md, reads the answer with
//! its own small reader (not signaling's code), and then connects a real
//! [`Participant`] over UDP to the relay the answer names.

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use blindfold_client::{Event, IceCredentials, OwnSsrcs, Participant, ParticipantConfig};
use blindfold_relay::dtls::{DtlsCert, DtlsConfig, DtlsSettings, Fingerprint};
use blindfold_relay::srtp::{MasterKey, SrtpProfile};

use crate::process::{binary, free_tcp_port};
use crate::synapse::Synapse;

/// A running `blindfold-signaling`, killed when dropped.
pub struct Signaling {
    child: Option<Child>,
    /// Its directory: config, database, log.
    pub dir: PathBuf,
    /// Its `/metrics` address.
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
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "bf-signaling-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let metrics: SocketAddr = ([127, 0, 0, 1], free_tcp_port()).into();
        std::fs::write(dir.join("password"), password).expect("password file");
        let config = format!(
            "homeserver = \"{}\"\nuser = \"{user}\"\npassword_file = \"{}\"\nrelay_socket = \"{}\"\n\
             database = \"{}\"\nmetrics = \"{metrics}\"\nlog_level = \"info\"\n{extra}\n",
            synapse.base_url(),
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

/// What an SDP answer gave the caller, read line by line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The relay's ICE credentials.
    pub ice: IceCredentials,
    /// `a=candidate` addresses, in order.
    pub candidates: Vec<SocketAddr>,
    /// `a=fingerprint:sha-256`.
    pub fingerprint: Fingerprint,
    /// `a=ice-lite` present at session level.
    pub ice_lite: bool,
    /// `a=setup:` value.
    pub setup: String,
    /// `a=end-of-candidates` present.
    pub end_of_candidates: bool,
}

impl Answer {
    /// Reads an answer's transport; panics naming what is missing.
    pub fn parse(sdp: &str) -> Answer {
        let attr = |name: &str| {
            sdp.lines().find_map(|l| {
                l.trim_end()
                    .strip_prefix(&format!("a={name}:"))
                    .map(str::to_owned)
            })
        };
        let ice = IceCredentials {
            ufrag: attr("ice-ufrag").expect("a=ice-ufrag in the answer"),
            pwd: attr("ice-pwd").expect("a=ice-pwd in the answer"),
        };
        let fingerprint = Fingerprint::from_sdp_attribute(
            &attr("fingerprint").expect("a=fingerprint in the answer"),
        )
        .expect("sha-256 fingerprint");
        let candidates = sdp
            .lines()
            .filter_map(|l| l.trim_end().strip_prefix("a=candidate:"))
            .map(|c| {
                let f: Vec<&str> = c.split_whitespace().collect();
                assert!(f.len() >= 8 && f[6] == "typ", "candidate {c}");
                let ip: std::net::IpAddr = f[4].parse().expect("candidate ip");
                SocketAddr::new(ip, f[5].parse().expect("candidate port"))
            })
            .collect();
        let session_part = sdp.split("\nm=").next().unwrap_or("");
        Answer {
            ice,
            candidates,
            fingerprint,
            ice_lite: session_part.lines().any(|l| l.trim_end() == "a=ice-lite"),
            setup: attr("setup").unwrap_or_default(),
            end_of_candidates: sdp.lines().any(|l| l.trim_end() == "a=end-of-candidates"),
        }
    }
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

    /// The SDP offer of docs/protocol.md: BUNDLE, Opus and VP8, audio level, frame
    /// marking and abs-send-time, audio + simulcast thumbnail/full SSRCs.
    pub fn offer(&self) -> String {
        let s = &self.ssrcs;
        let fp = self.cert.fingerprint();
        let lines = [
            "v=0".to_owned(),
            format!("o=- {} 1 IN IP4 127.0.0.1", 1000 + self.idx),
            "s=-".into(),
            "t=0 0".into(),
            "a=group:BUNDLE 0 1".into(),
            format!("a=ice-ufrag:{}", self.ice.ufrag),
            format!("a=ice-pwd:{}", self.ice.pwd),
            format!("a=fingerprint:sha-256 {fp}"),
            "a=setup:actpass".into(),
            "m=audio 9 UDP/TLS/RTP/SAVPF 111".into(),
            "c=IN IP4 0.0.0.0".into(),
            "a=mid:0".into(),
            "a=sendrecv".into(),
            "a=rtcp-mux".into(),
            "a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level".into(),
            "a=extmap:3 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time".into(),
            "a=rtpmap:111 opus/48000/2".into(),
            format!("a=ssrc:{} cname:caller{}", s.audio.0, self.idx),
            "m=video 9 UDP/TLS/RTP/SAVPF 96".into(),
            "c=IN IP4 0.0.0.0".into(),
            "a=mid:1".into(),
            "a=sendrecv".into(),
            "a=rtcp-mux".into(),
            "a=extmap:2 urn:ietf:params:rtp-hdrext:framemarking".into(),
            "a=extmap:3 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time".into(),
            "a=rtpmap:96 VP8/90000".into(),
            "a=rtcp-fb:96 nack pli".into(),
            format!("a=ssrc-group:SIM {} {}", s.thumbnail.0, s.full.0),
            format!("a=ssrc:{} cname:caller{}", s.thumbnail.0, self.idx),
            format!("a=ssrc:{} cname:caller{}", s.full.0, self.idx),
        ];
        lines.join("\r\n") + "\r\n"
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
        let sock = UdpSocket::bind("127.0.0.1:0").expect("participant socket");
        sock.set_nonblocking(true).expect("nonblocking");
        CallPeer {
            p,
            sock,
            key,
            events: Vec::new(),
        }
    }
}

/// A connected (or connecting) participant on its own UDP socket.
pub struct CallPeer {
    /// The participant library instance.
    pub p: Participant,
    sock: UdpSocket,
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

    /// Moves its datagrams and runs its timers once.
    pub fn step(&mut self) {
        let now = Instant::now();
        let mut buf = [0u8; 2048];
        loop {
            match self.sock.recv_from(&mut buf) {
                Ok((n, from)) => {
                    let _ = self.p.handle_datagram(now, from, &mut buf[..n]);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
                Err(e) => panic!("participant recv: {e}"),
            }
        }
        if self.p.poll_timeout().is_some_and(|t| t <= now) {
            self.p.handle_timeout(now);
        }
        while let Some(t) = self.p.poll_transmit() {
            let _ = self.sock.send_to(&t.bytes, t.dest);
        }
        while let Some(e) = self.p.poll_event() {
            self.events.push(e);
        }
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
