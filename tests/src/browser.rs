//! A browser's WebRTC stack as a caller's media side, driven headless: a [`Browser`]
//! guard serves a page (`browser_caller.html`) from a small HTTP server on loopback,
//! takes the SDP offer the page's `RTCPeerConnection` made, gives it the answer, and
//! keeps the page's latest report (its connection state and `getStats()`). Chromium
//! and Firefox ([`BrowserKind`]).
//!
//! A browser cannot be a Blindfold participant: WebRTC keys SRTP from DTLS, so the hop's
//! keys would be the media keys (docs/design.md). What it can show is that the relay's
//! transport and the SFU's SDP work with the most widely deployed WebRTC stacks: the
//! answer parses, ICE (the relay's own check of the nominated address included), DTLS
//! and SRTCP complete, and the relay reads its RTP and RTCP.
//!
//! A browser is found as `$BLINDFOLD_CHROMIUM` / `$BLINDFOLD_FIREFOX` or by its Debian
//! program name on the `PATH`. A test that needs one skips with a notice when it is
//! missing, unless `BLINDFOLD_REQUIRE_BROWSERS` is set (scripts/test sets it after
//! installing them on Debian, so CI never skips); so does the Firefox test on a machine
//! without a non-loopback IPv4 address ([`lan_address`]).

// Real processes and deadlines: the harness reads the clock.
#![allow(clippy::disallowed_methods)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::http::{self, Request, Response};
use crate::process::die_with_parent;

/// The page the browser runs.
const PAGE: &str = include_str!("browser_caller.html");

/// Firefox's preferences for the test profile: WebAudio plays without a gesture, no
/// first-run chores.
const FIREFOX_PREFS: &str = r#"user_pref("media.autoplay.default", 0);
user_pref("media.autoplay.block-webaudio", false);
user_pref("browser.shell.checkDefaultBrowser", false);
user_pref("datareporting.policy.dataSubmissionEnabled", false);
user_pref("toolkit.telemetry.reportingpolicy.firstRun", false);
"#;

/// Which browser.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BrowserKind {
    /// Debian's `chromium`.
    Chromium,
    /// Debian's `firefox-esr`.
    Firefox,
}

impl BrowserKind {
    /// The Debian package and program name.
    pub fn program(self) -> &'static str {
        match self {
            BrowserKind::Chromium => "chromium",
            BrowserKind::Firefox => "firefox-esr",
        }
    }

    fn env(self) -> &'static str {
        match self {
            BrowserKind::Chromium => "BLINDFOLD_CHROMIUM",
            BrowserKind::Firefox => "BLINDFOLD_FIREFOX",
        }
    }

    /// The command line that opens `url` headless, with its profile in `profile`.
    fn args(self, profile: &Path, url: &str) -> Vec<String> {
        match self {
            BrowserKind::Chromium => vec![
                "--headless".into(),
                // Tests run as root, where Chromium's sandbox cannot start.
                "--no-sandbox".into(),
                "--disable-gpu".into(),
                "--no-first-run".into(),
                "--no-default-browser-check".into(),
                // The relay listens on 127.0.0.1: ICE may use loopback.
                "--allow-loopback-in-peer-connection".into(),
                // The tone plays without a user gesture.
                "--autoplay-policy=no-user-gesture-required".into(),
                format!("--user-data-dir={}", profile.display()),
                url.into(),
            ],
            BrowserKind::Firefox => vec![
                "--headless".into(),
                "--no-remote".into(),
                "--profile".into(),
                profile.display().to_string(),
                url.into(),
            ],
        }
    }
}

/// The browser's path, or `None` with a notice (a panic if
/// `BLINDFOLD_REQUIRE_BROWSERS` is set).
pub fn find(kind: BrowserKind) -> Option<PathBuf> {
    let found = match std::env::var_os(kind.env()) {
        Some(path) => Some(PathBuf::from(path)),
        None => std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join(kind.program()))
                .find(|p| p.is_file())
        }),
    };
    let name = kind.program();
    if found.is_none() {
        assert!(
            required().is_none(),
            "{name} is not installed (apt-get install {name})"
        );
        eprintln!("SKIPPED: {name} is not installed (apt-get install {name})");
    }
    found
}

/// `BLINDFOLD_REQUIRE_BROWSERS`, if set: the browser tests may not skip.
pub fn required() -> Option<std::ffi::OsString> {
    std::env::var_os("BLINDFOLD_REQUIRE_BROWSERS")
}

/// A non-loopback IPv4 address of this machine (the first `hostname -I` lists), where
/// a relay Firefox can reach may listen: Firefox does not pair its candidates with a
/// loopback one, whatever its `media.peerconnection.ice.loopback` says.
pub fn lan_address() -> Option<IpAddr> {
    let out = Command::new("hostname").arg("-I").output().ok()?;
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|a| a.parse::<Ipv4Addr>().ok())
        .find(|a| !a.is_loopback())
        .map(IpAddr::V4)
}

/// What the page and the test exchange through the HTTP server.
#[derive(Default)]
struct Exchange {
    offer: Option<String>,
    answer: Option<String>,
    report: Option<Value>,
    error: Option<String>,
}

/// A headless browser running the caller page; killed (its whole process group) and
/// its profile directory removed when dropped (its log is printed first if the thread
/// is panicking).
pub struct Browser {
    child: Child,
    dir: PathBuf,
    exchange: Arc<Mutex<Exchange>>,
}

impl Browser {
    /// Starts the browser `kind` (at `program`) on the caller page, in a fresh profile.
    pub fn start(kind: BrowserKind, program: &Path) -> Browser {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "bf-browser-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let profile = dir.join("profile");
        std::fs::create_dir_all(&profile).expect("profile dir");
        if kind == BrowserKind::Firefox {
            std::fs::write(profile.join("user.js"), FIREFOX_PREFS).expect("user.js");
        }
        let exchange = Arc::new(Mutex::new(Exchange::default()));
        let url = format!("http://{}/", serve(exchange.clone()));
        let log = std::fs::File::create(dir.join("browser.log")).expect("browser.log");
        let mut cmd = Command::new(program);
        cmd.args(kind.args(&profile, &url))
            .env("MOZ_HEADLESS", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            // Its own group, so that its helper processes go with it.
            .process_group(0);
        die_with_parent(&mut cmd);
        let child = cmd.spawn().expect("starting the browser");
        Browser {
            child,
            dir,
            exchange,
        }
    }

    /// The page's SDP offer, once it made one (panics after `limit`).
    pub fn offer(&self, limit: Duration) -> String {
        self.wait(limit, "the browser's offer", |x| x.offer.clone())
    }

    /// Gives the page the answer to its offer.
    pub fn answer(&self, sdp: &str) {
        self.exchange.lock().unwrap().answer = Some(sdp.to_owned());
    }

    /// The page's latest report, if it sent one yet (panics if the page reported an
    /// error).
    pub fn report(&self) -> Option<Report> {
        self.try_wait(Duration::ZERO, |x| x.report.clone().map(Report))
    }

    fn wait<T>(&self, limit: Duration, what: &str, get: impl FnMut(&Exchange) -> Option<T>) -> T {
        self.try_wait(limit, get)
            .unwrap_or_else(|| panic!("timed out: {what}"))
    }

    /// Polls the exchange until `get` returns something or `limit` passes; panics at
    /// once if the page reported an error.
    fn try_wait<T>(
        &self,
        limit: Duration,
        mut get: impl FnMut(&Exchange) -> Option<T>,
    ) -> Option<T> {
        let deadline = Instant::now() + limit;
        loop {
            {
                let x = self.exchange.lock().unwrap();
                if let Some(e) = &x.error {
                    panic!("the browser's page failed: {e}");
                }
                if let Some(t) = get(&x) {
                    return Some(t);
                }
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the group this guard's child leads; no memory involved.
        unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.dir.join("browser.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("--- browser.log (last lines) ---");
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A report of the page's: its `RTCPeerConnection`'s states and `getStats()`.
#[derive(Clone, Debug)]
pub struct Report(pub Value);

impl Report {
    /// `connectionState` (`"connected"` once ICE and DTLS both are).
    pub fn connection_state(&self) -> &str {
        self.0["connectionState"].as_str().unwrap_or("")
    }

    /// The first stats object of `kind` (`"transport"`, `"outbound-rtp"`, …) whose
    /// fields `matches` accepts.
    pub fn stat(&self, kind: &str, matches: impl Fn(&Value) -> bool) -> Option<&Value> {
        self.0["stats"]
            .as_array()?
            .iter()
            .find(|s| s["type"] == kind && matches(s))
    }

    /// The stats object with `id`.
    pub fn by_id(&self, id: &Value) -> Option<&Value> {
        self.0["stats"].as_array()?.iter().find(|s| &s["id"] == id)
    }

    /// The transport's selected candidate pair.
    pub fn selected_pair(&self) -> Option<&Value> {
        let transport = self.stat("transport", |_| true)?;
        self.by_id(&transport["selectedCandidatePairId"])
    }

    /// `packetsSent` of the outbound RTP stream of `kind` (`"audio"`, `"video"`).
    pub fn packets_sent(&self, kind: &str) -> u64 {
        self.stat("outbound-rtp", |s| s["kind"] == kind)
            .and_then(|s| s["packetsSent"].as_u64())
            .unwrap_or(0)
    }
}

/// Serves the page and the exchange on a free loopback port, one thread per
/// connection; returns the address.
fn serve(exchange: Arc<Mutex<Exchange>>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("http listener");
    let addr = listener.local_addr().expect("http addr");
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let exchange = exchange.clone();
            std::thread::spawn(move || http::serve(conn, |req| answer(&exchange, req)));
        }
    });
    addr
}

/// The page's request `req`, answered from and recorded in `exchange`.
fn answer(exchange: &Mutex<Exchange>, req: Request) -> Response {
    let ok = |content_type: &str, body: String| (200, content_type.to_owned(), body.into_bytes());
    let body = String::from_utf8_lossy(&req.body).into_owned();
    let mut x = exchange.lock().unwrap();
    match (req.method.as_str(), req.target.as_str()) {
        ("GET", "/") => ok("text/html; charset=utf-8", PAGE.to_owned()),
        ("GET", "/answer") => ok("text/plain", x.answer.clone().unwrap_or_default()),
        ("POST", "/offer") => {
            x.offer = Some(body);
            ok("text/plain", String::new())
        }
        ("POST", "/report") => {
            // A report that does not parse leaves the last good one.
            if let Ok(report) = serde_json::from_str(&body) {
                x.report = Some(report);
            }
            ok("text/plain", String::new())
        }
        ("POST", "/error") => {
            x.error = Some(body);
            ok("text/plain", String::new())
        }
        _ => (404, "text/plain".to_owned(), Vec::new()),
    }
}
