//! `blindfold-demo`: a whole Blindfold conference on this machine, judged by what the
//! participants say they decrypted. `scripts/demo` installs what it needs, builds the
//! release binaries and runs it; `blindfold-demo --help` lists its options, and
//! `blindfold_tests::demo` says what it does step by step.
//!
//! Every process it starts is stopped when it ends — normally, on an error, on a panic
//! (the guards are dropped while unwinding) and on SIGINT/SIGTERM (caught, then the
//! same way out). A second signal exits at once; the children die with it
//! (PR_SET_PDEATHSIG). Exit status: 0 passed, 1 failed, 2 bad usage, 130 when
//! interrupted (128 + the signal when interrupted twice).

// A shell around real processes: it reads the clock.
#![allow(clippy::disallowed_methods)]

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ExitCode, Stdio};
use std::time::{Duration, Instant};

use blindfold_client::ogg::OggOpusReader;
use blindfold_client::report::Report;
use blindfold_relay::dtls::DtlsCert;
use blindfold_tests::demo::{
    Args, CONF_ID, Command, NAMES, Outcome, ParticipantSpec, USAGE, catch_signals,
    create_conference, describe, interrupted, judge, parse_args, relay_summary, wait_joined,
};
use blindfold_tests::matrix::MatrixUser;
use blindfold_tests::process::{
    Relay, die_with_parent, metric_total, tie_children_to_spawning_thread,
};
use blindfold_tests::signaling::Signaling;
use blindfold_tests::synapse::Synapse;

/// Time the participants get beyond `--duration`: login, key upload, sync, the call.
const START_ALLOWANCE: Duration = Duration::from_secs(60);
/// How long a participant asked to hang up (SIGINT) gets before SIGKILL.
const HANGUP_GRACE: Duration = Duration::from_secs(5);
/// How long the SFU account gets to join the conference room.
const JOIN_LIMIT: Duration = Duration::from_secs(30);

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(Command::Run(args)) => args,
        Ok(Command::Help) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("blindfold-demo: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = catch_signals() {
        eprintln!("blindfold-demo: cannot catch SIGINT/SIGTERM: {e}");
        return ExitCode::FAILURE;
    }
    // Relay and signaling die with this (main) thread even if the demo is killed.
    tie_children_to_spawning_thread();
    // `run` has dropped (stopped) everything it started by the time it returns.
    match run(&args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("\nblindfold-demo: {e}");
            if interrupted() {
                ExitCode::from(130)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn step(what: &str) {
    println!("==> {what}");
}

/// `Err` once a signal asked us to stop.
fn not_interrupted() -> Result<(), String> {
    if interrupted() {
        Err("interrupted (SIGINT or SIGTERM); stopped everything".into())
    } else {
        Ok(())
    }
}

fn run(args: &Args) -> Result<ExitCode, String> {
    let client = args.client.clone().unwrap_or_else(beside_this_binary);
    // Before starting anything: a demo without its participants cannot pass.
    if !args.dry_run {
        check_executable(&client)?;
    }
    let out = output_dir(args.out.as_deref())?;
    println!("output directory: {}", out.display());

    step("starting Synapse (127.0.0.1, SQLite)");
    let synapse = Synapse::start();
    not_interrupted()?;
    step("starting blindfold-relay");
    // Its certificate from files, as in production: a restarted relay proves the
    // fingerprint the answers carry.
    let cert = DtlsCert::generate().map_err(|e| format!("a relay certificate: {e}"))?;
    let mut relay = Relay::start_with_cert(1, &cert);
    not_interrupted()?;
    step("registering the SFU account and starting blindfold-signaling");
    let sfu_password = random_password();
    let sfu = synapse
        .try_register("sfu", &sfu_password, false)
        .map_err(|e| format!("registering the SFU account: {e}"))?;
    let mut signaling = Signaling::start(&synapse, &relay.control, &sfu.user_id, &sfu_password, "");
    signaling.wait_ready();
    not_interrupted()?;
    // From here on, however `run` ends, the servers' logs are copied to `out` (dropped
    // before the guards it borrows, which remove them).
    let _logs = Logs {
        out: &out,
        synapse: &synapse,
        relay_log: relay.dir.join("relay.log"),
        signaling: &signaling,
    };

    step(&format!("registering {}", NAMES.join(", ")));
    let mut users = Vec::new();
    for name in NAMES {
        let dir = out.join(name);
        std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let password = random_password();
        write_secret(&dir.join("password"), &password)?;
        let reg = synapse
            .try_register(name, &password, false)
            .map_err(|e| format!("registering {name}: {e}"))?;
        users.push(MatrixUser::new(
            synapse.base_url(),
            &reg.user_id,
            &reg.device_id,
            &reg.access_token,
        ));
    }

    step("creating the encrypted conference room; the SFU and the users join");
    let room = create_conference(&users[0], &[&users[1], &users[2]], &sfu.user_id)
        .map_err(|e| format!("setting up the conference room: {e}"))?;
    wait_joined(&users[0], &room, &sfu.user_id, JOIN_LIMIT, interrupted)?;
    not_interrupted()?;
    let encryption = users[0]
        .get_state(&room, "m.room.encryption", "")
        .map_err(|e| format!("reading the room's encryption: {e}"))?;
    let algorithm = encryption.as_ref().and_then(|e| e["algorithm"].as_str());
    if algorithm != Some("m.megolm.v1.aes-sha2") {
        return Err(format!("the room is not megolm-encrypted: {encryption:?}"));
    }

    step("making the Opus clip");
    let clip = match &args.clip {
        Some(clip) => clip.clone(),
        None => make_clip(&out)?,
    };
    let (packets, seconds) = inspect_clip(&clip)?;
    not_interrupted()?;

    let specs: Vec<ParticipantSpec> = NAMES
        .iter()
        .zip(&users)
        .enumerate()
        .map(|(i, (name, user))| {
            ParticipantSpec::new(
                name,
                &out.join(name),
                synapse.base_url(),
                user.user_id(),
                &room,
                args.duration,
                (i == 0).then(|| clip.clone()),
            )
        })
        .collect();
    println!();
    println!("homeserver  {}", synapse.base_url());
    println!(
        "relay       {} (media), control socket {}",
        relay.udp,
        relay.control.display()
    );
    println!("SFU account {}", sfu.user_id);
    println!("room        {room} (m.megolm.v1.aes-sha2), conference \"{CONF_ID}\"");
    for u in &users {
        println!("member      {}", u.user_id());
    }
    println!(
        "clip        {} ({packets} Opus packets, {seconds:.2} s)",
        clip.display()
    );
    println!();

    if args.dry_run {
        println!("dry run: stopping before the participants, who would run as:");
        for s in &specs {
            println!("  {}", s.command_line(&client));
        }
        return Ok(ExitCode::SUCCESS);
    }

    step(&format!(
        "running {} participants for {} s ({} sends the clip; all send video)",
        specs.len(),
        args.duration.as_secs(),
        specs[0].name
    ));
    let mut participants = Participants::spawn(&client, &specs)?;
    let started = Instant::now();
    if let Some(after) = args.restart_relay {
        restart_relay_when_connected(&mut relay, specs.len(), after, args.new_cert)?;
    }
    let exits =
        participants.wait((args.duration + START_ALLOWANCE).saturating_sub(started.elapsed()));
    drop(participants);
    let exits = exits?;

    let outcomes: Vec<Outcome> = specs
        .iter()
        .zip(exits)
        .map(|(s, exit)| Outcome {
            name: s.name.clone(),
            exit,
            report: Report::read(&s.report).map_err(|e| e.to_string()),
        })
        .collect();
    println!();
    for o in &outcomes {
        match &o.report {
            Ok(r) => describe(&o.name, r).iter().for_each(|l| println!("{l}")),
            Err(e) => println!("{}: no report ({e})", o.name),
        }
        if o.exit.is_err() {
            let log = out.join(&o.name).join("client.log");
            println!("  last lines of {}:", log.display());
            for l in tail(&log, 20) {
                println!("    {l}");
            }
        }
        println!();
    }
    if args.restart_relay.is_some() {
        println!("(the relay's counts are its second run's, from the restart on)");
    }
    match relay.try_scrape() {
        Ok(metrics) => relay_summary(&metrics).iter().for_each(|l| println!("{l}")),
        Err(e) => println!("relay: /metrics not read ({e})"),
    }
    println!();
    let problems = judge(&outcomes, args.relay_restart());
    println!("reports, recordings and logs: {}", out.display());
    if problems.is_empty() {
        println!(
            "PASS: every participant decrypted every other's audio, thumbnail and full stream, with no decrypt failure"
        );
        Ok(ExitCode::SUCCESS)
    } else {
        println!("FAIL:");
        for p in &problems {
            println!("  - {p}");
        }
        Ok(ExitCode::FAILURE)
    }
}

/// `blindfold-client` in this binary's directory (`target/release/`).
fn beside_this_binary() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.join("blindfold-client")))
        .unwrap_or_else(|| PathBuf::from("blindfold-client"))
}

fn check_executable(path: &Path) -> Result<(), String> {
    let executable = std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false);
    if executable {
        Ok(())
    } else {
        Err(format!(
            "the participant CLI is not at {}: build it with `cargo build --release -p \
             blindfold-client --bin blindfold-client` (scripts/demo does), or pass --client \
             PATH; --dry-run sets up everything but the participants",
            path.display()
        ))
    }
}

/// `dir`, which must be new or empty (old reports would pass for this run's), or a new
/// directory under the temporary directory.
fn output_dir(dir: Option<&Path>) -> Result<PathBuf, String> {
    let dir = match dir {
        Some(d) => d.to_path_buf(),
        None => {
            let stamp = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            std::env::temp_dir().join(format!("blindfold-demo-{stamp}-{}", std::process::id()))
        }
    };
    if std::fs::read_dir(&dir).is_ok_and(|mut entries| entries.next().is_some()) {
        return Err(format!(
            "{} is not empty: give --out a new or empty directory (reports left there \
             would be read as this run's)",
            dir.display()
        ));
    }
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    // Absolute, since the participants get these paths.
    std::fs::canonicalize(&dir).map_err(|e| format!("{}: {e}", dir.display()))
}

fn random_password() -> String {
    let mut bytes = [0u8; 16];
    aws_lc_rs::rand::fill(&mut bytes).expect("random bytes");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes a password file readable by its owner only.
fn write_secret(path: &Path, secret: &str) -> Result<(), String> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(secret.as_bytes()))
        .map_err(|e| format!("writing {}: {e}", path.display()))
}

/// Runs `scripts/make-demo-audio` into `out/clip.opus`.
fn make_clip(out: &Path) -> Result<PathBuf, String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/make-demo-audio");
    let clip = out.join("clip.opus");
    let status = std::process::Command::new(&script)
        .arg(&clip)
        .stdin(Stdio::null())
        .status()
        .map_err(|e| format!("running {}: {e}", script.display()))?;
    if !status.success() {
        return Err(format!("{} failed ({status})", script.display()));
    }
    Ok(clip)
}

/// The clip's packet count and playback length; every packet must be real Opus.
fn inspect_clip(clip: &Path) -> Result<(u64, f64), String> {
    let summary = OggOpusReader::open(clip)
        .and_then(OggOpusReader::summarize)
        .map_err(|e| format!("the clip {}: {e}", clip.display()))?;
    if summary.packets == 0 || summary.bad_toc > 0 {
        return Err(format!(
            "the clip {} holds {} packets, {} of them not Opus",
            clip.display(),
            summary.packets,
            summary.bad_toc
        ));
    }
    let seconds = summary.playback().unwrap_or_default().as_secs_f64();
    Ok((summary.packets, seconds))
}

/// The last `n` lines of a file (nothing if unreadable).
fn tail(path: &Path, n: usize) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| l.to_string())
        .collect()
}

/// `after` once `n` participants are connected to `relay`, kills it (kill -9) and
/// starts it again: signaling gives it the calls back, and each participant must
/// notice and connect again by itself.
fn restart_relay_when_connected(
    relay: &mut Relay,
    n: usize,
    after: Duration,
    new_cert: bool,
) -> Result<(), String> {
    let deadline = Instant::now() + START_ALLOWANCE;
    let selector = "blindfold_sessions{state=\"connected\"}";
    loop {
        not_interrupted()?;
        let connected = relay
            .try_scrape()
            .ok()
            .and_then(|m| metric_total(&m, selector))
            .unwrap_or(0);
        if connected >= n as u64 {
            break;
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "only {connected} of {n} participants connected to the relay"
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let at = Instant::now() + after;
    while Instant::now() < at {
        not_interrupted()?;
        std::thread::sleep(Duration::from_millis(100));
    }
    if new_cert {
        step("killing the relay (kill -9) and starting it again, with a new certificate");
        relay.restart_with_new_cert();
    } else {
        step("killing the relay (kill -9) and starting it again");
        relay.restart();
    }
    Ok(())
}

/// Copies the servers' logs into the output directory before their guards remove them.
struct Logs<'a> {
    out: &'a Path,
    synapse: &'a Synapse,
    /// The relay's, which a restart appends to.
    relay_log: PathBuf,
    signaling: &'a Signaling,
}

impl Drop for Logs<'_> {
    fn drop(&mut self) {
        let relay = std::fs::read_to_string(&self.relay_log).unwrap_or_default();
        for (name, text) in [
            ("synapse.log", self.synapse.log_tail(1000)),
            ("relay.log", relay),
            ("signaling.log", self.signaling.log()),
        ] {
            let _ = std::fs::write(self.out.join(name), text);
        }
    }
}

/// The participant processes; asked to hang up (SIGINT), then killed, when dropped.
struct Participants {
    running: Vec<(String, Child)>,
}

impl Participants {
    /// Starts one `client` per spec, output to `<its dir>/client.log`.
    fn spawn(client: &Path, specs: &[ParticipantSpec]) -> Result<Participants, String> {
        let mut all = Participants {
            running: Vec::new(),
        };
        for s in specs {
            let log_path = s
                .report
                .parent()
                .map_or_else(|| PathBuf::from("client.log"), |d| d.join("client.log"));
            let log = std::fs::File::create(&log_path)
                .map_err(|e| format!("creating {}: {e}", log_path.display()))?;
            let err = log
                .try_clone()
                .map_err(|e| format!("{}: {e}", log_path.display()))?;
            let mut cmd = std::process::Command::new(client);
            cmd.args(s.args())
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(err);
            die_with_parent(&mut cmd);
            // On error, `all` is dropped: the ones already started are stopped.
            let child = cmd
                .spawn()
                .map_err(|e| format!("starting {}: {e}", client.display()))?;
            all.running.push((s.name.clone(), child));
        }
        Ok(all)
    }

    /// Waits for every participant to exit, up to `limit`: how each ended. Stops the
    /// rest on a signal (`Err`) or at the limit.
    fn wait(&mut self, limit: Duration) -> Result<Vec<Result<(), String>>, String> {
        let deadline = Instant::now() + limit;
        let mut ended: Vec<Option<Result<(), String>>> = vec![None; self.running.len()];
        while ended.iter().any(Option::is_none) {
            for (i, (_, child)) in self.running.iter_mut().enumerate() {
                if ended[i].is_some() {
                    continue;
                }
                match child.try_wait() {
                    Ok(Some(st)) if st.success() => ended[i] = Some(Ok(())),
                    Ok(Some(st)) => ended[i] = Some(Err(format!("exited with {st}"))),
                    Ok(None) => {}
                    Err(e) => ended[i] = Some(Err(format!("could not be waited for: {e}"))),
                }
            }
            if let Err(e) = not_interrupted() {
                self.stop();
                return Err(e);
            }
            if Instant::now() >= deadline {
                self.stop();
                for e in ended.iter_mut().filter(|e| e.is_none()) {
                    *e = Some(Err(format!(
                        "was still running {} s after it started, and was stopped",
                        limit.as_secs()
                    )));
                }
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(ended.into_iter().map(|e| e.expect("all ended")).collect())
    }

    /// SIGINT to those still running (they hang up and write their report), SIGKILL to
    /// those still running [`HANGUP_GRACE`] later.
    fn stop(&mut self) {
        for (_, child) in &mut self.running {
            if matches!(child.try_wait(), Ok(None)) {
                // SAFETY: kill(2) on our own child's pid, which it keeps until reaped.
                unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
            }
        }
        let deadline = Instant::now() + HANGUP_GRACE;
        for (name, child) in &mut self.running {
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            if matches!(child.try_wait(), Ok(None)) {
                eprintln!("{name} did not hang up within {HANGUP_GRACE:?}: killing it");
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

impl Drop for Participants {
    fn drop(&mut self) {
        self.stop();
    }
}
