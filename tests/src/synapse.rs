//! A real Synapse homeserver for end-to-end tests: [`Synapse::start`] runs one on
//! `127.0.0.1` (SQLite, a fresh temporary directory, rate limits off) and kills it
//! when dropped; [`Synapse::shared`] is one per test binary for many tests, which keep
//! apart by registering [`unique_localpart`]s.
//!
//! # Where Synapse comes from
//!
//! `scripts/test` installs it (`scripts/install-synapse`: a virtualenv with the pinned
//! `matrix-synapse` from PyPI under `${BLINDFOLD_CACHE:-$HOME/.cache/blindfold}`) and
//! exports the virtualenv's python as `BLINDFOLD_SYNAPSE`. Without that variable the
//! harness runs `scripts/install-synapse` itself, so a plain `cargo test` works too
//! (the first time it takes about half a minute).
//!
//! # Lifetime
//!
//! The homeserver is started from a thread that lives as long as the test process,
//! with `PR_SET_PDEATHSIG` = `SIGKILL`, so it dies with the test process however that
//! ends (panic, abort, timeout kill), never with the test thread that asked for it.
//! It runs in its own process group; dropping a [`Synapse`] kills the group and
//! removes the directory. The shared instance is never dropped: an `atexit` handler
//! does the same for it, and each start removes directories that dead test processes
//! left behind.
//!
//! ```no_run
//! use blindfold_tests::synapse::Synapse;
//!
//! let hs = Synapse::shared();
//! let alice = hs.new_user("alice");
//! assert_eq!(alice.whoami().unwrap()["user_id"], alice.user_id());
//! ```
#![warn(missing_docs)]

use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, Once, OnceLock, mpsc};
use std::time::{Duration, Instant};

use aws_lc_rs::hmac;
use serde_json::{Value, json};

use crate::matrix::{MatrixError, MatrixUser, request, string_field, unpadded_base64};
use crate::process::free_tcp_port;

/// How long [`Synapse::start`] waits for the homeserver to answer.
const START_LIMIT: Duration = Duration::from_secs(60);
/// The password [`Synapse::new_user`] gives its accounts.
pub const PASSWORD: &str = "blindfold-test-password";

/// An account made by [`Synapse::register`], logged in on one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registered {
    /// `@localpart:server`.
    pub user_id: String,
    /// The access token of the registration's device.
    pub access_token: String,
    /// That device's id.
    pub device_id: String,
}

/// A running Synapse; killed (with its process group) and its directory removed when
/// dropped, its log printed first if the thread is panicking.
pub struct Synapse {
    /// `None` once stopped.
    child: Mutex<Option<Child>>,
    dir: PathBuf,
    base_url: String,
    server_name: String,
    shared_secret: String,
}

impl Synapse {
    /// Starts a homeserver with the default test configuration (see
    /// [`Synapse::start_with`]).
    pub fn start() -> Synapse {
        Synapse::start_with(&json!({}))
    }

    /// Starts a homeserver on a free loopback port with the test configuration, its
    /// top-level keys replaced by those of `overrides` (a JSON object, e.g.
    /// `{"experimental_features": {…}}`), and waits until it answers
    /// `GET /_matrix/client/versions`. Panics with its log if it does not within 60 s.
    pub fn start_with(overrides: &Value) -> Synapse {
        static N: AtomicUsize = AtomicUsize::new(0);
        static SWEEP: Once = Once::new();
        SWEEP.call_once(remove_dead_dirs);
        let dir = std::env::temp_dir().join(format!(
            "{DIR_PREFIX}{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        let base_url = format!("http://127.0.0.1:{}", free_tcp_port());
        let shared_secret = random_secret();
        let config = config(&dir, &base_url, &shared_secret, overrides);
        let server_name = config["server_name"]
            .as_str()
            .expect("server_name is a string")
            .to_owned();
        write(&dir.join("log.yaml"), &log_config(&dir));
        write(&dir.join("homeserver.yaml"), &config);
        // What Synapse's --generate-keys writes, without a second Python start-up.
        let mut seed = [0u8; 32];
        aws_lc_rs::rand::fill(&mut seed).expect("random signing key");
        std::fs::write(
            dir.join("signing.key"),
            format!("ed25519 a_bf {}\n", unpadded_base64(&seed)),
        )
        .expect("writing the signing key");

        let synapse = Synapse {
            child: Mutex::new(None),
            dir,
            base_url,
            server_name,
            shared_secret,
        };
        synapse.spawn_and_wait();
        synapse
    }

    /// Starts the process on the configuration in [`Synapse::dir`] and waits until it
    /// answers; panics with its log if it does not.
    fn spawn_and_wait(&self) {
        let output = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("stderr.log"))
            .expect("stderr file");
        let mut cmd = Command::new(python());
        cmd.args(["-m", "synapse.app.homeserver", "-c"])
            .arg(self.dir.join("homeserver.yaml"))
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(output.try_clone().expect("stderr file"))
            .stderr(output)
            .process_group(0);
        crate::process::die_with_parent(&mut cmd);
        let child = spawn_from_lasting_thread(cmd)
            .unwrap_or_else(|e| panic!("starting Synapse with {}: {e}", python().display()));
        *self.child.lock().unwrap_or_else(|e| e.into_inner()) = Some(child);
        if let Err(why) = self.wait_until_up() {
            let log = self.log_tail(60);
            self.stop();
            panic!("{why}; its log:\n{log}");
        }
    }

    /// Kills the homeserver's process group with SIGKILL, as a crash would, and reaps
    /// it; its directory (database, configuration) stays for [`Synapse::restart`].
    pub fn kill9(&self) {
        let child = self.child.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(mut child) = child {
            if let Ok(pgid) = libc::pid_t::try_from(child.id()) {
                // SAFETY: kill(2) on the process group we created; no memory involved.
                unsafe { libc::kill(-pgid, libc::SIGKILL) };
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the homeserver again after [`Synapse::kill9`], on the same port, database
    /// and signing key, and waits until it answers.
    pub fn restart(&self) {
        assert!(self.pid().is_none(), "restart: Synapse is still running");
        self.spawn_and_wait();
    }

    /// The homeserver of this test binary, started on first use and shared by all its
    /// tests (register [`unique_localpart`]s); killed when the test process exits.
    pub fn shared() -> &'static Synapse {
        static SHARED: OnceLock<Synapse> = OnceLock::new();
        extern "C" fn stop_shared() {
            if let Some(s) = SHARED.get() {
                s.stop();
            }
        }
        SHARED.get_or_init(|| {
            let synapse = Synapse::start();
            // SAFETY: registers a plain function that touches only a static.
            unsafe { libc::atexit(stop_shared) };
            synapse
        })
    }

    /// Polls `GET /_matrix/client/versions` until it answers; why not, if the process
    /// exits or [`START_LIMIT`] passes first.
    fn wait_until_up(&self) -> Result<(), String> {
        let deadline = Instant::now() + START_LIMIT;
        loop {
            let up = request(
                &self.base_url,
                "GET",
                "/_matrix/client/versions",
                None,
                None,
                Duration::from_secs(2),
            );
            let Err(last) = up else {
                return Ok(());
            };
            let exited = self
                .child
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                return Err(format!("Synapse exited ({status}) before answering"));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "Synapse did not answer GET /_matrix/client/versions at {} within \
                     {START_LIMIT:?} (last: {last})",
                    self.base_url
                ));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// `http://127.0.0.1:port`.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The homeserver's name, the part after the colon in its user ids.
    pub fn server_name(&self) -> &str {
        &self.server_name
    }

    /// Its temporary directory (configuration, database, logs).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        let child = self.child.lock().unwrap_or_else(|e| e.into_inner());
        child.as_ref().map(Child::id)
    }

    /// The last `lines` lines of its log (warnings and errors), then whatever it wrote to
    /// stdout/stderr (a traceback before its logging was set up).
    pub fn log_tail(&self, lines: usize) -> String {
        let read = |name: &str| std::fs::read_to_string(self.dir.join(name)).unwrap_or_default();
        let log = read("homeserver.log");
        let tail: Vec<&str> = log.lines().rev().take(lines).collect();
        let mut text: String = tail.into_iter().rev().map(|l| format!("{l}\n")).collect();
        let stderr = read("stderr.log");
        if !stderr.trim().is_empty() {
            text.push_str("--- stdout/stderr:\n");
            text.push_str(&stderr);
        }
        text
    }

    /// Registers `localpart` through the shared-secret admin API
    /// (`/_synapse/admin/v1/register`); panics with the refusal and the log.
    pub fn register(&self, localpart: &str, password: &str, admin: bool) -> Registered {
        self.try_register(localpart, password, admin)
            .unwrap_or_else(|e| {
                panic!(
                    "registering {localpart}: {e}; Synapse log:\n{}",
                    self.log_tail(30)
                )
            })
    }

    /// Like [`Synapse::register`], but returns the refusal (e.g. `M_USER_IN_USE`).
    pub fn try_register(
        &self,
        localpart: &str,
        password: &str,
        admin: bool,
    ) -> Result<Registered, MatrixError> {
        let path = "/_synapse/admin/v1/register";
        let nonce = request(
            &self.base_url,
            "GET",
            path,
            None,
            None,
            Duration::from_secs(10),
        )?;
        let nonce = string_field(&nonce, "nonce", &format!("GET {path}"))?;
        let key = hmac::Key::new(
            hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
            self.shared_secret.as_bytes(),
        );
        let role = if admin { "admin" } else { "notadmin" };
        let message = format!("{nonce}\0{localpart}\0{password}\0{role}");
        let mac: String = hmac::sign(&key, message.as_bytes())
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let body = json!({
            "nonce": nonce,
            "username": localpart,
            "password": password,
            "admin": admin,
            "mac": mac,
        });
        let answer = request(
            &self.base_url,
            "POST",
            path,
            None,
            Some(&body),
            Duration::from_secs(10),
        )?;
        let what = format!("POST {path}");
        Ok(Registered {
            user_id: string_field(&answer, "user_id", &what)?,
            access_token: string_field(&answer, "access_token", &what)?,
            device_id: string_field(&answer, "device_id", &what)?,
        })
    }

    /// Registers a fresh non-admin account, [`unique_localpart`]`(name)` with password
    /// [`PASSWORD`], and returns it logged in on its registration device.
    pub fn new_user(&self, name: &str) -> MatrixUser {
        let r = self.register(&unique_localpart(name), PASSWORD, false);
        MatrixUser::new(&self.base_url, &r.user_id, &r.device_id, &r.access_token)
    }

    /// [`Synapse::new_user`], as a homeserver admin: for the homeserver's own view of
    /// rooms ([`MatrixUser::joined_members_as_admin`]).
    pub fn new_admin(&self, name: &str) -> MatrixUser {
        let r = self.register(&unique_localpart(name), PASSWORD, true);
        MatrixUser::new(&self.base_url, &r.user_id, &r.device_id, &r.access_token)
    }

    /// Kills the homeserver's process group, reaps it and removes its directory.
    fn stop(&self) {
        self.kill9();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for Synapse {
    fn drop(&mut self) {
        if std::thread::panicking() && self.pid().is_some() {
            eprintln!("Synapse log ({}):\n{}", self.base_url, self.log_tail(60));
        }
        self.stop();
    }
}

/// A Matrix localpart no other test (in this or any concurrent test process) uses:
/// `name` (lower-cased), the process id and a process-wide counter.
pub fn unique_localpart(name: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{}-{}-{}",
        name.to_lowercase(),
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// The Python of the Synapse virtualenv: `$BLINDFOLD_SYNAPSE`, else what
/// `scripts/install-synapse` installs and prints (once per process).
pub fn python() -> PathBuf {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON
        .get_or_init(|| {
            let python = match std::env::var_os("BLINDFOLD_SYNAPSE") {
                Some(p) => PathBuf::from(p),
                None => {
                    let script =
                        Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/install-synapse");
                    let out = Command::new(&script)
                        .stderr(Stdio::inherit())
                        .output()
                        .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
                    assert!(
                        out.status.success(),
                        "{} failed ({})",
                        script.display(),
                        out.status
                    );
                    let stdout = String::from_utf8_lossy(&out.stdout);
                    PathBuf::from(stdout.lines().last().unwrap_or_default().trim())
                }
            };
            assert!(
                python.is_file(),
                "no Synapse python at {:?} (BLINDFOLD_SYNAPSE or scripts/install-synapse)",
                python
            );
            python
        })
        .clone()
}

/// The prefix of the homeserver directories: `<prefix><pid>-<n>`.
const DIR_PREFIX: &str = "bf-synapse-";

/// Removes homeserver directories whose test process is gone (it was killed before its
/// `atexit` handler could run).
fn remove_dead_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(DIR_PREFIX))
            .and_then(|rest| rest.split('-').next())
        else {
            continue;
        };
        if !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Starts `cmd` from a thread that lives as long as the process: `PR_SET_PDEATHSIG`
/// fires when the *thread* that forked the child ends, and test threads end early.
fn spawn_from_lasting_thread(cmd: Command) -> io::Result<Child> {
    type Job = (Command, mpsc::Sender<io::Result<Child>>);
    static SPAWNER: OnceLock<mpsc::Sender<Job>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("synapse-spawner".into())
            // The sender lives in a static, so this loop ends only with the process.
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("spawning the synapse-spawner thread");
        tx
    });
    let (reply, answer) = mpsc::channel();
    spawner
        .send((cmd, reply))
        .expect("the synapse-spawner thread is alive");
    answer.recv().expect("the synapse-spawner thread answers")
}

fn random_secret() -> String {
    let mut bytes = [0u8; 24];
    aws_lc_rs::rand::fill(&mut bytes).expect("random secret");
    unpadded_base64(&bytes)
}

/// Writes `value` as YAML (JSON is YAML, and needs no quoting rules of its own).
fn write(path: &Path, value: &Value) {
    let text = serde_json::to_string_pretty(value).expect("JSON");
    std::fs::write(path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

/// Python logging configuration: warnings and errors to `homeserver.log`.
fn log_config(dir: &Path) -> Value {
    json!({
        "version": 1,
        "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
        "handlers": {"file": {
            "class": "logging.FileHandler",
            "formatter": "plain",
            "filename": dir.join("homeserver.log"),
        }},
        "root": {"level": "WARNING", "handlers": ["file"]},
        "disable_existing_loggers": false,
    })
}

/// The homeserver configuration: one plain-HTTP client listener, SQLite, no
/// federation, no registration but the shared-secret admin API, no rate limits, cheap
/// password hashing; then `overrides`' top-level keys.
fn config(dir: &Path, base_url: &str, shared_secret: &str, overrides: &Value) -> Value {
    let port: u16 = base_url
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port in the base URL");
    let unlimited = json!({"per_second": 1_000_000, "burst_count": 1_000_000});
    let mut config = json!({
        "server_name": "localhost",
        "public_baseurl": format!("{base_url}/"),
        "listeners": [{
            "port": port,
            "bind_addresses": ["127.0.0.1"],
            "type": "http",
            "tls": false,
            "x_forwarded": false,
            "resources": [{"names": ["client"], "compress": false}],
        }],
        "database": {"name": "sqlite3", "args": {"database": dir.join("homeserver.db")}},
        "log_config": dir.join("log.yaml"),
        "media_store_path": dir.join("media"),
        "signing_key_path": dir.join("signing.key"),
        "macaroon_secret_key": random_secret(),
        "form_secret": random_secret(),
        "registration_shared_secret": shared_secret,
        "enable_registration": false,
        "report_stats": false,
        "enable_metrics": false,
        "suppress_key_server_warning": true,
        "trusted_key_servers": [],
        // Every registration and login hashes the password: the minimum bcrypt cost.
        "bcrypt_rounds": 4,
        // Every rate limiter Synapse 1.163 reads (synapse/config/ratelimiting.py).
        "rc_message": unlimited,
        "rc_registration": unlimited,
        "rc_registration_token_validity": unlimited,
        "rc_login": {
            "address": unlimited,
            "account": unlimited,
            "failed_attempts": unlimited,
        },
        "rc_admin_redaction": unlimited,
        "rc_joins": {"local": unlimited, "remote": unlimited},
        "rc_joins_per_room": unlimited,
        "rc_key_requests": unlimited,
        "rc_3pid_validation": unlimited,
        "rc_invites": {
            "per_room": unlimited,
            "per_user": unlimited,
            "per_issuer": unlimited,
        },
        "rc_third_party_invite": unlimited,
        "rc_media_create": unlimited,
        "rc_presence": {"per_user": unlimited},
        "rc_delayed_event_mgmt": unlimited,
        "rc_room_creation": unlimited,
        "rc_reports": unlimited,
        "rc_user_directory": unlimited,
        "rc_profile": unlimited,
    });
    let overrides = overrides
        .as_object()
        .expect("Synapse config overrides are a JSON object");
    for (key, value) in overrides {
        config[key] = value.clone();
    }
    config
}
