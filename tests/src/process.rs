//! Workspace binaries as real processes: building them for the running test's profile,
//! and the [`Relay`] guard that starts `blindfold-relay` on free loopback ports and kills
//! it when dropped.
//!
//! # Where the binaries come from
//!
//! Cargo only gives `CARGO_BIN_EXE_*` to tests of the binary's own package, and the
//! binaries live in `blindfold-relay` and `blindfold-client`. So [`binary`] runs `cargo
//! build -p <package> --bin <name>` once per test process, for the profile and target
//! directory the test itself was built in (both read from the test executable's path,
//! `target/<profile>/deps/<test>-…`, or `target/<profile>/<bin>` for this crate's own
//! binaries), and returns `target/<profile>/<name>`. Cargo
//! releases its build lock before running tests, and the build is a no-op when the
//! binary is fresh, so this costs a fraction of a second and never runs a stale binary.
//! (Artifact dependencies, `-Z bindeps`, would say this in Cargo.toml, but they are
//! unstable.) A binary of this crate (`blindfold-demo`, in `target/<profile>/`) finds
//! them the same way.
//!
//! # Children that outlive their parent
//!
//! A test that dies (panic, abort, kill) drops its guards or not; [`die_with_parent`]
//! makes a child get SIGKILL when the thread that started it ends. The [`Relay`] and
//! [`Signaling`](crate::signaling::Signaling) guards use it only after
//! [`tie_children_to_spawning_thread`], which the demo calls: its main thread lives as
//! long as the process, whereas a test thread may end while a guard it started lives
//! on elsewhere.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use blindfold_relay::dtls::DtlsCert;

/// Builds (if needed, once per process) and returns binary `bin` of `package` for the
/// profile this test was built in.
///
/// With `BLINDFOLD_BIN_DIR` set (scripts/demo sets it after building the release
/// binaries), the binary is taken from that directory without running cargo, which
/// would wait for the build lock whenever another build holds it.
pub fn binary(package: &str, bin: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os("BLINDFOLD_BIN_DIR") {
        let path = PathBuf::from(dir).join(bin);
        assert!(
            path.is_file(),
            "no {bin} in BLINDFOLD_BIN_DIR ({}): build it first",
            path.display()
        );
        return path;
    }
    static BUILT: Mutex<Option<HashMap<String, PathBuf>>> = Mutex::new(None);
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    let built = built.get_or_insert_with(HashMap::new);
    if let Some(p) = built.get(bin) {
        return p.clone();
    }
    let exe = std::env::current_exe().expect("test executable path");
    // A test: target/<profile>/deps/<test>-<hash>; a binary of this crate (the
    // signaling bench): target/<profile>/<bin>.
    let exe_dir = exe.parent().expect("the executable's directory");
    let profile_dir = if exe_dir.file_name().is_some_and(|n| n == "deps") {
        exe_dir.parent().expect("target/<profile>/deps")
    } else {
        exe_dir
    };
    let target_dir = profile_dir.parent().expect("target dir");
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => "dev",
        Some(p) => p,
        None => panic!("unexpected target layout: {}", exe.display()),
    };
    let status = Command::new(env!("CARGO"))
        .args([
            "build",
            "--quiet",
            "-p",
            package,
            "--bin",
            bin,
            "--profile",
            profile,
            "--target-dir",
        ])
        .arg(target_dir)
        // The workspace, wherever the caller runs (the demo runs from any directory).
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("running cargo build");
    assert!(status.success(), "cargo build of {bin} failed");
    let path = profile_dir.join(bin);
    assert!(path.exists(), "no binary at {}", path.display());
    built.insert(bin.to_owned(), path.clone());
    path
}

/// Whether the guards' children die with the thread that started them.
static TIED: AtomicBool = AtomicBool::new(false);

/// From now on, the [`Relay`] and [`Signaling`](crate::signaling::Signaling) guards
/// start their processes with [`die_with_parent`]. Call it from a thread that lives as
/// long as the process and start them from that thread (the demo's main thread).
pub fn tie_children_to_spawning_thread() {
    TIED.store(true, Ordering::Relaxed);
}

/// [`die_with_parent`] if [`tie_children_to_spawning_thread`] was called.
pub(crate) fn tie_if_asked(cmd: &mut Command) {
    if TIED.load(Ordering::Relaxed) {
        die_with_parent(cmd);
    }
}

/// Makes the process `cmd` starts get SIGKILL when the thread that starts it ends
/// (`PR_SET_PDEATHSIG`), so it cannot outlive a parent killed without cleaning up.
pub fn die_with_parent(cmd: &mut Command) {
    let parent = std::process::id();
    // SAFETY: the closure runs between fork and exec and only makes async-signal-safe
    // system calls (prctl, getppid), allocating nothing.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died before the signal was armed.
            if libc::getppid() as u32 != parent {
                return Err(std::io::Error::other("the parent process is gone"));
            }
            Ok(())
        })
    };
}

/// The address a process logged: the value after `key` (e.g. `addr=`) on the first
/// line of `log` that contains `line` and parses.
pub(crate) fn logged_addr(log: &str, line: &str, key: &str) -> Option<SocketAddr> {
    log.lines()
        .filter(|l| l.contains(line))
        .find_map(|l| l.split(key).nth(1)?.split_whitespace().next()?.parse().ok())
}

/// A TCP port nobody listens on right now (bound and released at once).
pub fn free_tcp_port() -> u16 {
    let s = TcpListener::bind("127.0.0.1:0").expect("bind tcp");
    s.local_addr().expect("addr").port()
}

/// Where test relays listen unless told otherwise.
const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// A running `blindfold-relay`; killed (if still running) and its directory removed
/// when dropped (its log is printed first if the thread is panicking).
pub struct Relay {
    child: Child,
    /// Its command line, for [`restart`](Self::restart).
    args: Vec<OsString>,
    /// Where the current run's log starts in `relay.log` (restarts append to it).
    log_offset: u64,
    /// Its temporary directory (control socket, log).
    pub dir: PathBuf,
    /// Its control socket.
    pub control: PathBuf,
    /// Its UDP media address.
    pub udp: SocketAddr,
    /// Its `/metrics` address.
    pub metrics: SocketAddr,
}

impl Relay {
    /// Starts the relay with `workers` workers on free loopback ports and waits (up to
    /// 10 s) for its control socket.
    pub fn start(workers: usize) -> Relay {
        Self::start_with(workers, &[])
    }

    /// [`start`](Self::start) with more command-line flags (e.g. `--consent-timeout`).
    pub fn start_with(workers: usize, extra: &[&str]) -> Relay {
        Self::start_in(workers, LOOPBACK, extra, |_| Vec::new())
    }

    /// [`start`](Self::start) with its media socket on `ip` rather than 127.0.0.1 (its
    /// control socket and metrics stay local).
    pub fn start_on(workers: usize, ip: IpAddr) -> Relay {
        Self::start_in(workers, ip, &[], |_| Vec::new())
    }

    /// [`start`](Self::start) with a DTLS certificate of its own, loaded from PEM files
    /// (`--cert`, `--key`) rather than generated at start, so that a
    /// [`restart`](Self::restart) keeps the fingerprint signaling put in its answers.
    pub fn start_with_cert(workers: usize, cert: &DtlsCert) -> Relay {
        Self::start_in(workers, LOOPBACK, &[], |dir| {
            let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
            std::fs::write(&cert_path, cert.certificate_pem()).expect("writing cert.pem");
            std::fs::write(&key_path, cert.private_key_pem()).expect("writing key.pem");
            vec![
                "--cert".into(),
                cert_path.into(),
                "--key".into(),
                key_path.into(),
            ]
        })
    }

    /// Starts the relay in a fresh directory, with the flags `files` returns after
    /// writing whatever files they name into that directory.
    fn start_in(
        workers: usize,
        media_ip: IpAddr,
        extra: &[&str],
        files: impl FnOnce(&Path) -> Vec<OsString>,
    ) -> Relay {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "bf-relay-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let control = dir.join("control.sock");
        // Port 0 for both: the relay binds what the kernel gives it and logs the
        // addresses, read below (no window in which another socket takes a port
        // picked for it).
        let any: SocketAddr = ([127, 0, 0, 1], 0).into();
        let mut args: Vec<OsString> = vec![
            "--listen".into(),
            SocketAddr::new(media_ip, 0).to_string().into(),
            "--workers".into(),
            workers.to_string().into(),
            "--control-socket".into(),
            control.clone().into(),
            "--metrics".into(),
            any.to_string().into(),
        ];
        args.extend(
            [
                "--log-level",
                "debug",
                "--recv-buffer",
                "0",
                "--send-buffer",
                "0",
            ]
            .map(OsString::from),
        );
        args.extend(extra.iter().map(OsString::from));
        args.extend(files(&dir));
        let (child, log_offset) = Self::spawn(&dir, &args);
        let mut relay = Relay {
            child,
            args,
            log_offset,
            dir,
            control,
            udp: any,
            metrics: any,
        };
        relay.wait_listening("the relay");
        relay.udp = relay.logged_addr("media socket", "listen=");
        relay.metrics = relay.logged_addr("metrics on", "addr=");
        // A restart binds the same ports again, as an operator's fixed config would.
        for (flag, addr) in [("--listen", relay.udp), ("--metrics", relay.metrics)] {
            let at = relay.args.iter().position(|a| a == flag).expect("flag") + 1;
            relay.args[at] = addr.to_string().into();
        }
        relay
    }

    /// Waits (up to 10 s) until the current run has bound its media socket and its
    /// control socket. Not a probe connection to the control socket: the relay serves
    /// one client at a time.
    fn wait_listening(&self, what: &str) {
        self.wait_until(Duration::from_secs(10), what, || {
            self.run_log().contains("media socket") && self.control.exists()
        });
    }

    /// The current run's log.
    fn run_log(&self) -> String {
        let log = self.log();
        log.get(self.log_offset as usize..).unwrap_or("").to_owned()
    }

    /// The address after `key` on the current run's log line containing `line`.
    fn logged_addr(&self, line: &str, key: &str) -> SocketAddr {
        let log = self.run_log();
        logged_addr(&log, line, key)
            .unwrap_or_else(|| panic!("the relay logged no {line} address:\n{log}"))
    }

    /// Runs the relay with `args`, its stderr appended to `dir/relay.log`: the child and
    /// where its output starts in that log.
    fn spawn(dir: &Path, args: &[OsString]) -> (Child, u64) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("relay.log"))
            .expect("log file");
        let offset = log.metadata().map(|m| m.len()).unwrap_or(0);
        let mut cmd = Command::new(binary("blindfold-relay", "blindfold-relay"));
        tie_if_asked(&mut cmd);
        let child = cmd
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting blindfold-relay");
        (child, offset)
    }

    /// SIGKILL, as a crash would: no goodbye, the control socket file left behind.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Kills the relay (if it still runs) and starts it again with the same command
    /// line: the same UDP port, control socket path, metrics port and (with
    /// [`start_with_cert`](Self::start_with_cert)) DTLS certificate, none of its
    /// sessions. Returns once the new run has bound its media socket and control socket
    /// (up to 10 s).
    pub fn restart(&mut self) {
        self.kill9();
        let (child, offset) = Self::spawn(&self.dir, &self.args);
        self.child = child;
        self.log_offset = offset;
        // The dead run's socket file is still there until the new run replaces it, so
        // wait for the new run to say it is listening.
        self.wait_listening("the restarted relay");
    }

    /// [`restart`](Self::restart) without the certificate files it was given, so with
    /// a certificate generated at start (another one): no answer given out before
    /// names it.
    pub fn restart_with_new_cert(&mut self) {
        let mut args = Vec::new();
        let mut given = std::mem::take(&mut self.args).into_iter();
        while let Some(a) = given.next() {
            match a.to_str() {
                Some("--cert" | "--key") => {
                    given.next();
                }
                _ => args.push(a),
            }
        }
        self.args = args;
        self.restart();
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its log (stderr) so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("relay.log")).unwrap_or_default()
    }

    /// Polls `cond` every 20 ms; panics with the log after `limit`.
    pub fn wait_until(&self, limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + limit;
        while !cond() {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; relay log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `GET /metrics`, as text; panics if the relay does not answer it.
    pub fn scrape(&self) -> String {
        self.try_scrape().expect("GET /metrics")
    }

    /// `GET /metrics`, as text, or why it could not be read.
    pub fn try_scrape(&self) -> std::io::Result<String> {
        let mut s = TcpStream::connect_timeout(&self.metrics, Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: relay\r\n\r\n")?;
        let mut text = String::new();
        s.read_to_string(&mut text)?;
        match text.starts_with("HTTP/1.1 200") {
            true => Ok(text),
            false => Err(std::io::Error::other(format!(
                "not a 200: {}",
                text.lines().next().unwrap_or_default()
            ))),
        }
    }

    /// A metric summed over its series (the relay labels them by worker). The selector
    /// may name one label to match: `blindfold_sessions{state="connected"}`.
    pub fn metric(&self, selector: &str) -> u64 {
        let text = self.scrape();
        metric_total(&text, selector).unwrap_or_else(|| panic!("no {selector} in:\n{text}"))
    }

    /// One sample of a metric per worker, by worker index (the relay labels each
    /// series `worker="i"`); `label` selects one more label, e.g. `reason="not_ours"`.
    pub fn per_worker(&self, name: &str, label: Option<&str>) -> Vec<u64> {
        let text = self.scrape();
        let mut out = Vec::new();
        for l in text.lines() {
            let Some(rest) = l
                .strip_prefix(name)
                .and_then(|r| r.strip_prefix("{worker=\""))
            else {
                continue;
            };
            if label.is_some_and(|label| !rest.contains(label)) {
                continue;
            }
            let Some((worker, _)) = rest.split_once('"') else {
                continue;
            };
            let (Ok(worker), Some(Ok(value))) = (
                worker.parse::<usize>(),
                l.rsplit(' ').next().map(str::parse::<u64>),
            ) else {
                continue;
            };
            if out.len() <= worker {
                out.resize(worker + 1, 0);
            }
            out[worker] += value;
        }
        out
    }

    /// Which worker the kernel hands datagrams from `sock` to: sends it a datagram the
    /// relay does not speak and watches which worker counts it (`not_ours`).
    pub fn worker_of(&self, sock: &UdpSocket) -> usize {
        let name = "blindfold_drops_total";
        let label = Some("reason=\"not_ours\"");
        let before = self.per_worker(name, label);
        sock.send_to(&[0xff; 8], self.udp).expect("send a probe");
        let mut found = None;
        self.wait_until(Duration::from_secs(5), "the probe to be counted", || {
            let now = self.per_worker(name, label);
            found = now
                .iter()
                .enumerate()
                .find(|(i, n)| **n > before.get(*i).copied().unwrap_or(0))
                .map(|(i, _)| i);
            found.is_some()
        });
        found.expect("waited for it")
    }

    /// Waits up to `limit` for the process to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                return Some(st);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("relay log:\n{}", self.log());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// In Prometheus text `metrics`, the sum of a metric's samples over its series; the
/// selector may name one label to match: `blindfold_sessions{state="connected"}`.
/// `None` if no series matches.
pub fn metric_total(metrics: &str, selector: &str) -> Option<u64> {
    let (name, label) = match selector.split_once('{') {
        Some((name, label)) => (name, Some(label.trim_end_matches('}'))),
        None => (selector, None),
    };
    let mut values = metrics
        .lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with([' ', '{']))
                && label.is_none_or(|label| l.contains(label))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .peekable();
    values.peek()?;
    Some(values.sum())
}
