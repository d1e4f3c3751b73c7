//! The pieces of `blindfold-demo` (`src/bin/blindfold-demo.rs`, run by `scripts/demo`):
//! its command line, an encrypted conference room set up over the client-server API,
//! the participants' command line, Ctrl-C handling, and the verdict from the
//! participants' reports. Kept here, in the library, so they are unit-tested and the
//! end-to-end tests can set up the same conference.
//!
//! What the demo does, in order: start Synapse, the relay and signaling (the harness
//! guards: each is killed when dropped, and dies with the demo's main thread if the
//! demo is killed outright, see [`crate::process::tie_children_to_spawning_thread`]);
//! register the SFU account and three users; create an encrypted room, announce
//! conference [`CONF_ID`] in it, invite the SFU and the users (who join); make the
//! spoken Opus clip; run three `blindfold-client` participants with
//! [`ParticipantSpec::args`] (the first sends the clip); read their `--report` files,
//! print them ([`describe`]) and what the relay counted ([`relay_summary`]), and
//! [`judge`] them.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use blindfold_client::ogg::OggOpusReader;
use blindfold_client::report::{Report, check_recordings, check_reports};
use blindfold_client::table::render;
use blindfold_relay::shell::signals::Shutdown;
use serde_json::json;

use crate::matrix::{MatrixError, MatrixUser};
use crate::process::metric_total;

/// The conference id (the `org.matrix.msc2359.conference` state key).
pub const CONF_ID: &str = "demo";
/// The participants, in order; the first sends the Opus clip.
pub const NAMES: [&str; 3] = ["alice", "bob", "carol"];
/// How long participants run unless `--duration` says otherwise.
pub const DEFAULT_DURATION: Duration = Duration::from_secs(20);
/// What `--restart-relay` must leave of `--duration`: the participants notice the
/// restart about 5 s after it, and then media flows again.
pub const RECONNECT_ALLOWANCE: Duration = Duration::from_secs(10);

/// `blindfold-demo --help`.
pub const USAGE: &str = "\
usage: blindfold-demo [--dry-run] [--duration SECS] [--client PATH] [--out DIR] [--clip FILE]
                      [--restart-relay SECS [--new-cert]]

Runs a local Blindfold conference: Synapse, relay, signaling, three participants
(blindfold-client) in an end-to-end encrypted room, one of them sending a spoken Opus
clip. Exits 0 only if every participant decrypted every other's audio, thumbnail and
full-resolution stream with no decrypt failure.

  --dry-run        set everything up, print the participants' command lines, stop
  --duration SECS  how long each participant runs (default 20)
  --client PATH    the participant CLI (default: blindfold-client beside this binary)
  --out DIR        where reports, recordings and logs go (default: a new directory
                   under the temporary directory); kept after the demo
  --clip FILE      the Ogg Opus clip to send (default: made with scripts/make-demo-audio)
  --restart-relay SECS
                   SECS after all three are connected, kill the relay (kill -9) and
                   start it again; then each must also connect to it again by itself
                   (SECS must leave 10 s of --duration after it)
  --new-cert       with --restart-relay: start it again without its certificate
                   files, so with a new certificate no answer names; then the SFU hangs
                   up every call (relay_unavailable), and each must call again
";

/// The demo's options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Args {
    /// Stop before running the participants.
    pub dry_run: bool,
    /// How long each participant runs.
    pub duration: Duration,
    /// The participant CLI; `None`: beside the demo's own binary.
    pub client: Option<PathBuf>,
    /// The output directory; `None`: a fresh one.
    pub out: Option<PathBuf>,
    /// The clip to send; `None`: made by `scripts/make-demo-audio`.
    pub clip: Option<PathBuf>,
    /// Kill the relay and start it again this long after all participants connected.
    pub restart_relay: Option<Duration>,
    /// Start it again with a new certificate (`--new-cert`).
    pub new_cert: bool,
}

/// How the relay came back, for [`judge`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayRestart {
    /// With its certificate: each participant must have connected to it again.
    SameCert,
    /// With a new certificate: each must have called again.
    NewCert,
}

impl Args {
    /// How the relay is restarted, if it is.
    pub fn relay_restart(&self) -> Option<RelayRestart> {
        self.restart_relay.map(|_| match self.new_cert {
            true => RelayRestart::NewCert,
            false => RelayRestart::SameCert,
        })
    }
}

/// What the command line asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Run the demo.
    Run(Args),
    /// Print [`USAGE`].
    Help,
}

/// Reads the command line (without the program name).
pub fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Command, String> {
    let mut out = Args {
        dry_run: false,
        duration: DEFAULT_DURATION,
        client: None,
        out: None,
        clip: None,
        restart_relay: None,
        new_cert: false,
    };
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let mut value = |flag: &str| {
            args.next()
                .filter(|v| !v.is_empty())
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match arg.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "--dry-run" => out.dry_run = true,
            "--duration" => {
                let v = value("--duration")?;
                let secs: u64 = v
                    .parse()
                    .ok()
                    .filter(|s| (1..=3600).contains(s))
                    .ok_or_else(|| {
                        format!("--duration {v}: a whole number of seconds, 1 to 3600")
                    })?;
                out.duration = Duration::from_secs(secs);
            }
            "--client" => out.client = Some(value("--client")?.into()),
            "--out" => out.out = Some(value("--out")?.into()),
            "--clip" => out.clip = Some(value("--clip")?.into()),
            "--restart-relay" => {
                let v = value("--restart-relay")?;
                let secs: u64 = v
                    .parse()
                    .ok()
                    .ok_or_else(|| format!("--restart-relay {v}: a whole number of seconds"))?;
                out.restart_relay = Some(Duration::from_secs(secs));
            }
            "--new-cert" => out.new_cert = true,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if out.new_cert && out.restart_relay.is_none() {
        return Err("--new-cert: only with --restart-relay".into());
    }
    // The participants need time after the restart to notice (about 5 s) and to show
    // media again.
    if let Some(at) = out.restart_relay
        && at + RECONNECT_ALLOWANCE > out.duration
    {
        return Err(format!(
            "--restart-relay {}: must leave {} s of the {} s --duration after it",
            at.as_secs(),
            RECONNECT_ALLOWANCE.as_secs(),
            out.duration.as_secs()
        ));
    }
    Ok(Command::Run(out))
}

/// One participant process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParticipantSpec {
    /// Short name (also its localpart).
    pub name: String,
    /// The homeserver's base URL.
    pub homeserver: String,
    /// Its Matrix user id.
    pub user_id: String,
    /// A file holding its password.
    pub password_file: PathBuf,
    /// The conference room id.
    pub room: String,
    /// The conference id.
    pub conference: String,
    /// Its matrix-sdk store (crypto keys).
    pub store: PathBuf,
    /// How long it runs.
    pub duration: Duration,
    /// Where it writes its report at exit.
    pub report: PathBuf,
    /// Where it records each received audio stream.
    pub record_dir: PathBuf,
    /// The Ogg Opus file it sends, instead of synthetic audio.
    pub audio_file: Option<PathBuf>,
}

impl ParticipantSpec {
    /// The participant's directory layout under `dir`: `store/`, `recordings/`,
    /// `report.json`, `password`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        name: &str,
        dir: &Path,
        homeserver: &str,
        user_id: &str,
        room: &str,
        duration: Duration,
        audio_file: Option<PathBuf>,
    ) -> ParticipantSpec {
        ParticipantSpec {
            name: name.to_owned(),
            homeserver: homeserver.to_owned(),
            user_id: user_id.to_owned(),
            password_file: dir.join("password"),
            room: room.to_owned(),
            conference: CONF_ID.to_owned(),
            store: dir.join("store"),
            duration,
            report: dir.join("report.json"),
            record_dir: dir.join("recordings"),
            audio_file,
        }
    }

    /// The whole command line with `client`, as a shell would show it (for people).
    pub fn command_line(&self, client: &Path) -> String {
        let mut line = client.display().to_string();
        for a in self.args() {
            line.push(' ');
            line.push_str(&a.to_string_lossy());
        }
        line
    }

    /// `blindfold-client`'s arguments: subscribed to every full-resolution stream, no
    /// live table (three processes share the demo's terminal; their logs go to files).
    pub fn args(&self) -> Vec<OsString> {
        let mut a: Vec<OsString> = Vec::new();
        let mut pair = |flag: &str, value: OsString| {
            a.push(flag.into());
            a.push(value);
        };
        pair("--homeserver", self.homeserver.clone().into());
        pair("--user", self.user_id.clone().into());
        pair("--password-file", self.password_file.clone().into());
        pair("--room", self.room.clone().into());
        pair("--conference", self.conference.clone().into());
        pair("--store", self.store.clone().into());
        pair("--duration", self.duration.as_secs().to_string().into());
        pair("--report", self.report.clone().into());
        pair("--record-dir", self.record_dir.clone().into());
        if let Some(clip) = &self.audio_file {
            pair("--audio-file", clip.clone().into());
        }
        pair("--subscribe", "all".into());
        a.push("--no-table".into());
        a
    }
}

/// Creates the conference room as `owner`: end-to-end encrypted (megolm), `members`
/// and the SFU account invited, conference [`CONF_ID`] announced naming `sfu_user`
/// (docs/protocol.md, "Conference announcement"); then the members join. The room id.
pub fn create_conference(
    owner: &MatrixUser,
    members: &[&MatrixUser],
    sfu_user: &str,
) -> Result<String, MatrixError> {
    let mut invite: Vec<&str> = members.iter().map(|m| m.user_id()).collect();
    invite.push(sfu_user);
    let room = owner.create_room(&json!({
        "preset": "private_chat",
        "name": "Blindfold demo",
        "invite": invite,
        "initial_state": [{"type": "m.room.encryption", "state_key": "",
                           "content": {"algorithm": "m.megolm.v1.aes-sha2"}}]
    }))?;
    owner.send_state(
        &room,
        "org.matrix.msc2359.conference",
        CONF_ID,
        &json!({"sfu": sfu_user, "name": "Blindfold demo"}),
    )?;
    for m in members {
        m.join(&room)?;
    }
    Ok(room)
}

/// Waits until `user` sees `who` joined to `room`, up to `limit`; gives up early if
/// `stop` says so.
pub fn wait_joined(
    user: &MatrixUser,
    room: &str,
    who: &str,
    limit: Duration,
    stop: impl Fn() -> bool,
) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    loop {
        let members = user
            .joined_members(room)
            .map_err(|e| format!("reading the members of {room}: {e}"))?;
        if members.iter().any(|m| m == who) {
            return Ok(());
        }
        if stop() {
            return Err("interrupted".into());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "{who} did not join {room} within {limit:?} (members: {members:?})"
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Set once SIGINT or SIGTERM arrived (the relay's own handler: a self-pipe and a flag,
/// a second signal exits at once with 128 + signal).
static SHUTDOWN: OnceLock<Shutdown> = OnceLock::new();

/// Makes SIGINT and SIGTERM ask the demo to stop ([`interrupted`]) instead of killing
/// it, so that it stops its processes on the way out; a second signal exits at once
/// (its children die with it: PR_SET_PDEATHSIG).
pub fn catch_signals() -> std::io::Result<()> {
    let shutdown = Shutdown::install()?;
    let _ = SHUTDOWN.set(shutdown);
    Ok(())
}

/// Whether a signal asked the demo to stop.
pub fn interrupted() -> bool {
    SHUTDOWN.get().is_some_and(Shutdown::is_set)
}

/// How one participant ended.
#[derive(Debug)]
pub struct Outcome {
    /// Its short name.
    pub name: String,
    /// `Err` with how, if the process did not exit successfully.
    pub exit: Result<(), String>,
    /// Its report, or why it could not be read.
    pub report: Result<Report, String>,
}

/// Every problem of the run, in words; none means it passed: each participant exited
/// successfully and wrote a report, the reports pass [`check_reports`] (everyone
/// decrypted everyone's audio, thumbnail and subscribed full stream, no decrypt
/// failures, audio recorded), and the recordings pass [`check_recordings`].
/// After a relay restart, each must also have connected to it again, or called again.
pub fn judge(outcomes: &[Outcome], restart: Option<RelayRestart>) -> Vec<String> {
    let mut problems = Vec::new();
    let mut reports = Vec::new();
    for o in outcomes {
        if let Err(how) = &o.exit {
            problems.push(format!("{} {how}", o.name));
        }
        match &o.report {
            Ok(r) => reports.push(r.clone()),
            Err(why) => problems.push(format!("{} wrote no report: {why}", o.name)),
        }
    }
    if reports.len() < 2 {
        problems.push(format!(
            "only {} report(s): nothing to judge a conference by",
            reports.len()
        ));
    }
    problems.extend(check_reports(&reports));
    for r in &reports {
        match restart {
            Some(RelayRestart::SameCert) if r.reconnects == 0 => {
                problems.push(format!("{} never connected to the restarted relay", r.user));
            }
            Some(RelayRestart::NewCert) if r.calls_again == 0 => {
                problems.push(format!("{} never called the restarted relay again", r.user));
            }
            _ => {}
        }
        problems.extend(check_recordings(r));
    }
    problems
}

/// What a participant's report says, for people: who it is, what it sent, its final
/// table of what it decrypted from whom, and its recordings with their length.
pub fn describe(name: &str, report: &Report) -> Vec<String> {
    let mut lines = vec![
        format!(
            "{name}: {} (device {}), {:.1} s in the call",
            report.user, report.device, report.duration_s
        ),
        format!("  sent: {}", report.sent_line()),
        format!("  active speaker: {}", report.speakers_line()),
    ];
    if report.reconnects > 0 {
        lines.push(format!(
            "  the relay lost its session {} time(s); it connected again",
            report.reconnects
        ));
    }
    if report.calls_again > 0 {
        lines.push(format!(
            "  the SFU asked it to call again {} time(s) (the relay came back unable to \
             serve its answer); it did",
            report.calls_again
        ));
    }
    let title = "  decrypted:";
    lines.extend(
        render(title, &report.senders)
            .into_iter()
            .enumerate()
            .map(|(i, l)| if i == 0 { l } else { format!("    {l}") }),
    );
    if report.recordings.is_empty() {
        lines.push("  recordings: none".to_owned());
    } else {
        lines.push("  recordings:".to_owned());
    }
    for rec in &report.recordings {
        lines.push(format!(
            "    {} audio (ssrc {}): {} ({} packets, {})",
            rec.user,
            rec.ssrc,
            rec.path.display(),
            rec.packets,
            playback(&rec.path)
        ));
    }
    lines
}

/// What the relay did during the call, for people, from its `/metrics` text: RTP
/// packets in and copies out, datagrams dropped by reason, and its media features'
/// work (layer switches, which the participants' tables show as resumes; keyframe
/// requests; NACKed packets; active-speaker changes). Each figure is summed over the
/// relay's workers.
pub fn relay_summary(metrics: &str) -> Vec<String> {
    let total = |selector: &str| metric_total(metrics, selector).unwrap_or(0);
    let mut drops: Vec<(String, u64)> = Vec::new();
    for l in metrics.lines() {
        let Some(reason) = l
            .strip_prefix("blindfold_drops_total{")
            .and_then(|rest| rest.split("reason=\"").nth(1)?.split('"').next())
        else {
            continue;
        };
        let n: u64 = l
            .rsplit(' ')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        match drops.iter_mut().find(|(r, _)| r == reason) {
            Some((_, sum)) => *sum += n,
            None => drops.push((reason.to_owned(), n)),
        }
    }
    drops.retain(|&(_, n)| n > 0);
    let dropped = match &drops[..] {
        [] => "none".to_owned(),
        d => d
            .iter()
            .map(|(reason, n)| format!("{n} {reason}"))
            .collect::<Vec<_>>()
            .join(", "),
    };
    vec![
        format!(
            "relay: {} RTP packets in, {} copies out; datagrams dropped: {dropped}",
            total("blindfold_rtp_accepted_total"),
            total("blindfold_rtp_forwarded_total"),
        ),
        format!(
            "  layer switches {} down, {} up; keyframe requests {} sent, {} absorbed; \
             NACKed packets {} resent from its cache, {} asked of the sender; \
             {} active-speaker changes",
            total("blindfold_layer_switches_total{direction=\"down\"}"),
            total("blindfold_layer_switches_total{direction=\"up\"}"),
            total("blindfold_keyframe_requests_sent_total"),
            total("blindfold_keyframe_requests_throttled_total"),
            total("blindfold_nacked_packets_total{outcome=\"resent\"}"),
            total("blindfold_nacked_packets_total{outcome=\"forwarded\"}"),
            total("blindfold_active_speaker_changes_total"),
        ),
    ]
}

/// How long an Ogg Opus file plays, from its last granule position, or why unknown.
fn playback(path: &Path) -> String {
    match OggOpusReader::open(path).and_then(OggOpusReader::summarize) {
        Ok(summary) => summary.playback().map_or_else(
            || "no audio".to_owned(),
            |d| format!("{:.2} s", d.as_secs_f64()),
        ),
        Err(e) => format!("unreadable: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use blindfold_client::report::{FullSubscription, Recording, SentStream};
    use blindfold_client::table::{SenderRow, StreamKind, StreamRow};

    use super::*;

    fn args(list: &[&str]) -> Result<Command, String> {
        parse_args(list.iter().map(|s| s.to_string()))
    }

    #[test]
    fn the_command_line() {
        let Ok(Command::Run(a)) = args(&[]) else {
            panic!("defaults")
        };
        assert_eq!((a.dry_run, a.duration), (false, Duration::from_secs(20)));
        let Ok(Command::Run(a)) = args(&[
            "--dry-run",
            "--duration",
            "5",
            "--client",
            "/x/c",
            "--out",
            "o",
            "--clip",
            "k.opus",
        ]) else {
            panic!("all flags")
        };
        assert_eq!(
            a,
            Args {
                dry_run: true,
                duration: Duration::from_secs(5),
                client: Some("/x/c".into()),
                out: Some("o".into()),
                clip: Some("k.opus".into()),
                restart_relay: None,
                new_cert: false,
            }
        );
        let Ok(Command::Run(a)) = args(&["--restart-relay", "6"]) else {
            panic!("--restart-relay")
        };
        assert_eq!(a.restart_relay, Some(Duration::from_secs(6)));
        assert_eq!(a.relay_restart(), Some(RelayRestart::SameCert));
        let Ok(Command::Run(a)) = args(&["--restart-relay", "6", "--new-cert"]) else {
            panic!("--new-cert")
        };
        assert_eq!(a.relay_restart(), Some(RelayRestart::NewCert));
        assert_eq!(args(&["--help"]), Ok(Command::Help));
        for (bad, why) in [
            (&["--duration"][..], "--duration needs a value"),
            (&["--duration", "0"], "1 to 3600"),
            (&["--duration", "2s"], "1 to 3600"),
            (&["--client", ""], "--client needs a value"),
            (&["--frobnicate"], "unknown argument \"--frobnicate\""),
            (&["--restart-relay", "x"], "a whole number of seconds"),
            (&["--restart-relay", "11"], "must leave 10 s of the 20 s"),
            (&["--new-cert"], "only with --restart-relay"),
            (
                &["--duration", "30", "--restart-relay", "21"],
                "of the 30 s",
            ),
        ] {
            let e = args(bad).unwrap_err();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }

    #[test]
    fn the_participant_command_line_is_the_agreed_one() {
        let p = ParticipantSpec::new(
            "alice",
            Path::new("/d/alice"),
            "http://127.0.0.1:8008",
            "@alice:localhost",
            "!r:localhost",
            Duration::from_secs(20),
            Some("/d/clip.opus".into()),
        );
        assert_eq!(
            p.command_line(Path::new("blindfold-client")),
            "blindfold-client --homeserver http://127.0.0.1:8008 --user @alice:localhost --password-file \
             /d/alice/password --room !r:localhost --conference demo --store /d/alice/store \
             --duration 20 --report /d/alice/report.json --record-dir /d/alice/recordings \
             --audio-file /d/clip.opus --subscribe all --no-table"
        );
        let bob = ParticipantSpec {
            audio_file: None,
            ..p
        };
        assert!(!bob.args().iter().any(|a| a == "--audio-file"));
    }

    /// A report of `user` that got every stream of `others` (and sent its own).
    fn report(n: u32, user: &str, others: &[(u32, &str)]) -> Report {
        let kinds = [StreamKind::Audio, StreamKind::Thumbnail, StreamKind::Full];
        let ssrc = |n: u32, k: usize| n * 10 + k as u32;
        Report {
            user: user.into(),
            device: format!("D{n}"),
            room: "!r:l".into(),
            conference: CONF_ID.into(),
            duration_s: 20.0,
            subscribed_full: FullSubscription::All,
            sent: kinds
                .iter()
                .enumerate()
                .map(|(k, &kind)| SentStream {
                    ssrc: ssrc(n, k),
                    kind,
                    packets: 100,
                    bytes: 1000,
                })
                .collect(),
            senders: others
                .iter()
                .map(|&(o, u)| SenderRow {
                    user: u.into(),
                    device: format!("D{o}"),
                    streams: kinds
                        .iter()
                        .enumerate()
                        .map(|(k, &kind)| StreamRow {
                            ssrc: ssrc(o, k),
                            kind,
                            packets: 90,
                            bytes: 900,
                            lost: 0,
                            resumes: 0,
                            skipped: 0,
                            decrypt_failures: 0,
                            key_index: Some(0),
                            kbps: 1.0,
                            latency_ms: None,
                        })
                        .collect(),
                })
                .collect(),
            recordings: Vec::new(),
            speakers: Vec::new(),
            last_speaker: None,
            reconnects: 0,
            calls_again: 0,
        }
    }

    #[test]
    fn the_relay_summary_sums_workers_and_names_drops() {
        let metrics = "\
# HELP blindfold_drops_total Datagrams dropped, by reason.
blindfold_drops_total{worker=\"0\",reason=\"not_ours\"} 2
blindfold_drops_total{worker=\"0\",reason=\"unvalidated\"} 0
blindfold_drops_total{worker=\"1\",reason=\"not_ours\"} 1
blindfold_drops_total{worker=\"1\",reason=\"send_error\"} 4
blindfold_rtp_accepted_total{worker=\"0\"} 100
blindfold_rtp_accepted_total{worker=\"1\"} 50
blindfold_rtp_accepted_bytes_total{worker=\"0\"} 99999
blindfold_rtp_forwarded_total{worker=\"0\"} 300
blindfold_layer_switches_total{worker=\"0\",direction=\"up\"} 2
blindfold_layer_switches_total{worker=\"0\",direction=\"down\"} 1
blindfold_layer_switches_total{worker=\"1\",direction=\"down\"} 1
blindfold_keyframe_requests_sent_total{worker=\"0\"} 5
blindfold_keyframe_requests_throttled_total{worker=\"0\"} 7
blindfold_nacked_packets_total{worker=\"0\",outcome=\"resent\"} 9
blindfold_nacked_packets_total{worker=\"0\",outcome=\"forwarded\"} 3
blindfold_active_speaker_changes_total{worker=\"1\"} 6
";
        assert_eq!(
            relay_summary(metrics),
            [
                "relay: 150 RTP packets in, 300 copies out; datagrams dropped: 3 not_ours, \
                 4 send_error",
                "  layer switches 2 down, 2 up; keyframe requests 5 sent, 7 absorbed; NACKed \
                 packets 9 resent from its cache, 3 asked of the sender; 6 active-speaker \
                 changes",
            ]
        );
        let quiet = relay_summary("blindfold_drops_total{worker=\"0\",reason=\"not_ours\"} 0\n");
        assert!(quiet[0].ends_with("datagrams dropped: none"), "{quiet:?}");
    }

    #[test]
    fn judging_a_run() {
        let (a, b) = ((1, "@a:l"), (2, "@b:l"));
        let ok = |name: &str, r: Report| Outcome {
            name: name.into(),
            exit: Ok(()),
            report: Ok(r),
        };
        // Audio decrypted must be recorded; these reports record nothing.
        let problems = judge(
            &[
                ok("a", report(1, "@a:l", &[b])),
                ok("b", report(2, "@b:l", &[a])),
            ],
            None,
        );
        assert_eq!(
            problems,
            [
                "@a:l decrypted @b:l's audio (ssrc 20) but recorded no file of it",
                "@b:l decrypted @a:l's audio (ssrc 10) but recorded no file of it",
            ]
        );

        // With recordings on disk, the run passes.
        let dir = std::env::temp_dir().join(format!("bf-demo-judge-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut outcomes = Vec::new();
        for (me, other) in [(a, b), (b, a)] {
            let mut r = report(me.0, me.1, &[other]);
            let path = dir.join(format!("{}.opus", me.0));
            let head = blindfold_client::ogg::OpusHead::new(1, 312, 48_000);
            let mut w = blindfold_client::ogg::OggOpusWriter::create(&path, &head).unwrap();
            for _ in 0..50 {
                w.write_packet(&[0xf8, 0]).unwrap();
            }
            w.finish().unwrap();
            r.recordings.push(Recording {
                user: other.1.into(),
                device: format!("D{}", other.0),
                ssrc: other.0 * 10,
                path: path.clone(),
                packets: 50,
            });
            let text = describe("x", &r).join("\n");
            assert!(
                text.contains(&format!("{} (50 packets, 0.99 s)", path.display())),
                "{text}"
            );
            assert!(text.contains("sent: audio 100 packets"), "{text}");
            outcomes.push(ok("x", r));
        }
        let same = Some(RelayRestart::SameCert);
        assert_eq!(judge(&outcomes, None), Vec::<String>::new());
        // After a relay restart, each must have connected again.
        assert_eq!(
            judge(&outcomes, same),
            [
                "@a:l never connected to the restarted relay",
                "@b:l never connected to the restarted relay",
            ]
        );
        if let Ok(r) = &mut outcomes[0].report {
            r.reconnects = 1;
            let text = describe("x", r).join("\n");
            assert!(
                text.contains("the relay lost its session 1 time(s)"),
                "{text}"
            );
        }
        assert_eq!(
            judge(&outcomes, same),
            ["@b:l never connected to the restarted relay"]
        );
        if let Ok(r) = &mut outcomes[1].report {
            r.reconnects = 1;
        }
        assert_eq!(judge(&outcomes, same), Vec::<String>::new());
        // With a new certificate, each must have called again.
        let new = Some(RelayRestart::NewCert);
        if let Ok(r) = &mut outcomes[1].report {
            r.calls_again = 1;
            let text = describe("x", r).join("\n");
            assert!(text.contains("asked it to call again 1 time(s)"), "{text}");
        }
        assert_eq!(
            judge(&outcomes, new),
            ["@a:l never called the restarted relay again"]
        );

        // A participant that failed and wrote nothing fails the run, loudly.
        outcomes.push(Outcome {
            name: "carol".into(),
            exit: Err("exited with exit status: 2".into()),
            report: Err("reading /x/report.json: No such file or directory".into()),
        });
        assert_eq!(
            judge(&outcomes, None),
            [
                "carol exited with exit status: 2",
                "carol wrote no report: reading /x/report.json: No such file or directory",
            ]
        );
        assert_eq!(
            judge(&outcomes[2..], None).last().unwrap(),
            "only 0 report(s): nothing to judge a conference by"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
