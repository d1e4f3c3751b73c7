//! `blindfold-client`: one participant of a Blindfold conference, from the command line.
//!
//! ```text
//! blindfold-client --homeserver http://127.0.0.1:8008 --user @alice:localhost \
//!     --password-file alice.pw --room '!abc:localhost' --conference demo \
//!     --store alice-store --duration 20 --report alice.json --record-dir alice-rec \
//!     [--audio-file clip.opus] [--subscribe all|speaker|SSRC,SSRC|none] [--no-table] \
//!     [--access-token-file FILE] [--config alice.toml]
//! ```
//!
//! It joins the conference with [`Conference::join`] (docs/protocol.md: the encrypted
//! room, the call to the SFU in the DM, megolm-encrypted key events), then for
//! `--duration` seconds from the SFU's answer, or until SIGINT/SIGTERM:
//!
//! - sends the synthetic thumbnail and full-resolution video of [`blindfold_client::source`],
//!   and synthetic audio or, with `--audio-file`, a real Ogg Opus file per RFC 7587
//!   (`audio.rs`: one Opus packet per RTP payload, 20 ms pacing, looped);
//! - shows a table of what it decrypts from whom, redrawn every second (per sender and
//!   stream: kbit/s over the last second, packets, loss from sequence gaps, latency
//!   from the synthetic probes — `-` for real Opus, which carries no send time — the MKI
//!   key index of the last packet, decrypt failures); `--no-table` prints only the
//!   final table;
//! - records each received audio stream to `--record-dir/<user>-<device>-<ssrc>.opus`
//!   (Ogg Opus, playable by opusdec and ffmpeg);
//! - estimates its downlink from the other members' abs-send-time and sends it to the
//!   relay in REMBs, and sends the synthetic full-resolution layer at the rate the
//!   relay's REMB or TMMBR asks for ([`Conference`]'s participant does both; real Opus
//!   audio from `--audio-file` carries no abs-send-time, so only the synthetic streams
//!   feed other members' estimates);
//!
//! When the SFU refuses or ends the call asking for another (`relay_unavailable`: the
//! relay could not take it, or came back from a restart unable to serve the answer), it
//! calls again, up to [`MAX_CALLS_AGAIN`] times, and goes on.
//!
//! It then writes the `--report` JSON ([`blindfold_client::report::Report`]; the final
//! rates there are averages over each stream's life) and hangs up (a key event without
//! keys to the members, `m.call.hangup` to the SFU), both within a few seconds of the
//! end or the signal. A second SIGINT exits at once.
//!
//! Exit status: 0 after a normal end (the duration ran out, or a signal asked it to
//! stop); 1 when joining failed (the SFU's refusal with its `org.matrix.msc2359.reason`,
//! an unencrypted room, an SFU account with E2EE devices, …), the call ended early
//! (the SFU hung up, the conference ended), the report could not be written, or the
//! hang-up failed or took over 3 s; 2 for bad flags or configuration; 130 on a second
//! signal (the report may not have been written). Errors are one line on stderr. Logs and warnings go to
//! stderr, the table and the summary to stdout.
//!
//! Configuration keys and the TOML file: `config.rs`.

// An IO shell around the conference: it reads the clock.
#![allow(clippy::disallowed_methods)]

mod audio;
mod config;
mod tally;

use std::io::Write as _;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use blindfold_client::DropReason;
use blindfold_client::conference::{
    CALL_AGAIN, Conference, ConferenceConfig, ConferenceError, ConferenceEvent, Login, MediaMode,
    Subscription,
};
use blindfold_client::report::{FullSubscription, Report, SentStream};
use blindfold_client::table::{LiveTable, StreamKind, render};
use clap::Parser as _;
use tokio::signal::unix::{Signal, SignalKind, signal};

use audio::ClipSender;
use config::{Args, Config, Credentials};
use tally::{Tally, latency_epoch};

/// How often the table is redrawn (and the rate window).
const FRAME: Duration = Duration::from_secs(1);
/// The hang-up's budget: the demo gives a participant 5 s from SIGINT to exit, and the
/// report is written before it.
const HANGUP_LIMIT: Duration = Duration::from_secs(3);
/// How many times in a row a refused join, and how many times in all an ended call,
/// are called again when the SFU asks for it (`relay_unavailable`) before we give up.
const MAX_CALLS_AGAIN: u64 = 3;
/// The pause before calling again (the SFU has just seen the relay come back).
const CALL_AGAIN_PAUSE: Duration = Duration::from_millis(500);

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            // clap's message is a paragraph; its first line says what is wrong.
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("bad arguments");
            eprintln!(
                "blindfold-client: {} (see --help)",
                first.trim_start_matches("error: ")
            );
            return ExitCode::from(2);
        }
    };
    let config = match Config::load(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("blindfold-client: {e}");
            return ExitCode::from(2);
        }
    };
    // Two threads: the conference's media and sync tasks, and this loop, on two cores
    // where there are two.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("blindfold-client: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(run(config));
    // The conference's tasks were aborted on hang-up; what is left (a sync request in
    // flight) must not hold the exit.
    runtime.shutdown_timeout(Duration::from_millis(200));
    code
}

/// `e` on one line, with control characters (a terminal's escapes among them, in
/// text that came from other users) shown as escapes.
fn one_line(e: impl std::fmt::Display) -> String {
    e.to_string()
        .chars()
        .map(|c| match c {
            '\n' => " ".to_owned(),
            c if c.is_control() => c.escape_default().to_string(),
            c => c.to_string(),
        })
        .collect()
}

fn fail(what: impl std::fmt::Display) -> ExitCode {
    eprintln!("blindfold-client: {}", one_line(what));
    ExitCode::FAILURE
}

/// A token's device id, from `/whoami` (matrix-sdk restores a session only with it).
async fn token_login(config: &Config, token: &str) -> Result<Login, String> {
    use blindfold_client::conference::matrix_sdk::authentication::matrix::MatrixSession;
    use blindfold_client::conference::matrix_sdk::ruma::UserId;
    use blindfold_client::conference::matrix_sdk::{Client, SessionMeta, SessionTokens};
    let user_id = UserId::parse(config.user.as_str()).map_err(|e| {
        format!(
            "user: {:?} must be a full user id with a token: {e}",
            config.user
        )
    })?;
    // A throwaway client (memory store): it only asks the homeserver who the token is.
    let probe = Client::builder()
        .homeserver_url(&config.homeserver)
        .build()
        .await
        .map_err(one_line)?;
    probe
        .restore_session(MatrixSession {
            meta: SessionMeta {
                user_id: user_id.clone(),
                device_id: "WHOAMI".into(),
            },
            tokens: SessionTokens {
                access_token: token.to_owned(),
                refresh_token: None,
            },
        })
        .await
        .map_err(one_line)?;
    let me = probe
        .whoami()
        .await
        .map_err(|e| format!("the access token: {}", one_line(e)))?;
    if me.user_id != user_id {
        return Err(format!(
            "the access token belongs to {}, not {user_id}",
            me.user_id
        ));
    }
    let device_id = me
        .device_id
        .ok_or("the access token has no device (an appservice token?)")?;
    Ok(Login::Token {
        user_id: user_id.to_string(),
        device_id: device_id.to_string(),
        access_token: token.to_owned(),
    })
}

async fn run(config: Config) -> ExitCode {
    // The store holds the account's access token and its E2EE keys, unencrypted:
    // readable by this user only (the library would make it so, but only if it is
    // missing when it logs in).
    for (dir, what, mode) in [
        (Some(&config.store), "--store", 0o700),
        (config.record_dir.as_ref(), "--record-dir", 0o777),
    ] {
        use std::os::unix::fs::DirBuilderExt;
        if let Some(dir) = dir
            && let Err(e) = std::fs::DirBuilder::new()
                .recursive(true)
                .mode(mode)
                .create(dir)
        {
            return fail(format!("{what} {}: {e}", dir.display()));
        }
    }
    let epoch = latency_epoch();
    let mut clip = match &config.audio_file {
        // The first timestamp is random (RFC 3550 §5.1).
        Some(path) => match ClipSender::open(path, rand_u32()) {
            Ok(c) => Some(c),
            Err(e) => return fail(e),
        },
        None => None,
    };
    let login = match &config.credentials {
        Credentials::Password(_) => config.password_login(),
        Credentials::AccessToken(t) => match token_login(&config, t).await {
            Ok(l) => Some(l),
            Err(e) => return fail(e),
        },
    };
    let Some(login) = login else {
        return fail("no credentials");
    };
    let mut cc = ConferenceConfig::new(
        config.homeserver.clone(),
        login,
        config.store.clone(),
        config.room.clone(),
        config.conference.clone(),
    );
    cc.subscription = config.subscribe.clone();
    // Without a shared epoch the probes still go out; receivers just show no latency.
    let epoch_or_now = epoch.unwrap_or_else(Instant::now);
    let seed = u64::from(rand_u32());
    cc.media = if clip.is_some() {
        MediaMode::SyntheticVideo {
            epoch: epoch_or_now,
            seed,
        }
    } else {
        MediaMode::Synthetic {
            epoch: epoch_or_now,
            seed,
        }
    };

    let mut sigint = match signal(SignalKind::interrupt()) {
        Ok(s) => s,
        Err(e) => return fail(format!("catching SIGINT: {e}")),
    };
    let mut sigterm = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => return fail(format!("catching SIGTERM: {e}")),
    };

    eprintln!(
        "blindfold-client: joining conference {} in {} as {}",
        config.conference, config.room, config.user
    );
    let mut conf = match call(&cc, &mut sigint, &mut sigterm).await {
        Ok(c) => c,
        Err(Stop::Failed(e)) => {
            return fail(format!(
                "joining conference {} in {}: {e}",
                config.conference, config.room
            ));
        }
        Err(Stop::Signal(s)) => return fail(format!("{s} while joining")),
    };
    let answered = conf.answered_at();
    let me = conf
        .client()
        .user_id()
        .map_or_else(|| config.user.clone(), |u| u.to_string());
    eprintln!(
        "blindfold-client: in the call as {me} (device {}), relay {}, sending {} audio",
        conf.device_id(),
        conf.relay(),
        if clip.is_some() {
            "Opus file"
        } else {
            "synthetic"
        }
    );

    let mut tally = Tally::new(Instant::now(), epoch, config.record_dir.clone());
    let mut table = config.table.then(LiveTable::stdout);
    let end = config.duration.map(|d| answered + d);
    let mut frame = tokio::time::interval(FRAME);
    frame.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut warned = 0;
    let mut ended_early: Option<String> = None;
    let mut stop_reason = "the duration ran out";
    // The streams of the calls before this one, and whether the SFU asked for another.
    let mut sent_before = Vec::new();
    let mut call_again = None;
    let far = Instant::now() + Duration::from_secs(86_400 * 365);
    loop {
        if let Some(reason) = call_again.take() {
            take_waiting(&mut conf, &mut tally);
            eprintln!("blindfold-client: {}; calling again", one_line(reason));
            let again = async {
                tokio::time::sleep(CALL_AGAIN_PAUSE).await;
                call(&cc, &mut sigint, &mut sigterm).await
            };
            let r = tokio::select! {
                r = again => r,
                // The run's time is up before the new call is: as at any end.
                _ = tokio::time::sleep_until(end.unwrap_or(far).into()), if end.is_some() => break,
            };
            match r {
                Ok(c) => {
                    sent_before.extend(sent_streams(&conf));
                    tally.calls_again += 1;
                    // The ended call's tasks stop as it is dropped.
                    conf = c;
                }
                Err(Stop::Failed(e)) => {
                    ended_early = Some(format!("calling again: {e}"));
                    break;
                }
                Err(Stop::Signal(s)) => {
                    stop_reason = s;
                    break;
                }
            }
            eprintln!(
                "blindfold-client: in the call again, relay {}",
                conf.relay()
            );
        }
        let clip_due = clip.as_ref().map_or(far, ClipSender::next_due);
        tokio::select! {
            ev = conf.next_event() => match ev {
                Some(ev) => match handle(&conf, &mut tally, ev) {
                    Some(End { reason, call_again: true }) if tally.calls_again < MAX_CALLS_AGAIN => {
                        call_again = Some(reason);
                    }
                    Some(End { reason, .. }) => {
                        ended_early = Some(reason);
                        break;
                    }
                    None => {}
                },
                None => {
                    ended_early = Some("the conference's tasks stopped".into());
                    break;
                }
            },
            _ = tokio::time::sleep_until(clip_due.into()), if clip.is_some() => {
                if let Some(c) = clip.as_mut()
                    && let Err(e) = c.send_due(&conf, Instant::now())
                {
                    ended_early = Some(format!("sending audio: {e}"));
                    break;
                }
            }
            _ = frame.tick() => {
                let now = Instant::now();
                tally.tick(now);
                for w in &tally.warnings[warned..] {
                    eprintln!("blindfold-client: {w}");
                    if let Some(t) = table.as_mut() {
                        t.forget();
                    }
                }
                warned = tally.warnings.len();
                if let Some(t) = table.as_mut() {
                    let elapsed = now.duration_since(answered);
                    let speaker = tally.speaker.as_ref().map(|m| m.user_id.as_str());
                    let title = title(&conf, &me, &config.conference, elapsed, speaker);
                    // A closed stdout (a pager quit) is no reason to leave the call.
                    let _ = t.draw(&mut std::io::stdout(), &title, &tally.rows());
                }
            }
            _ = tokio::time::sleep_until(end.unwrap_or(far).into()), if end.is_some() => break,
            _ = sigint.recv() => { stop_reason = "SIGINT"; break; }
            _ = sigterm.recv() => { stop_reason = "SIGTERM"; break; }
        }
    }
    // A second signal while hanging up: leave at once (the report may be missing).
    tokio::spawn(async move {
        tokio::select! {
            _ = sigint.recv() => {}
            _ = sigterm.recv() => {}
        }
        eprintln!("blindfold-client: second signal: exiting without finishing");
        std::process::exit(130);
    });
    take_waiting(&mut conf, &mut tally);
    let in_call = answered.elapsed();
    let recordings = tally.finish_recordings();
    let report = Report {
        user: me.clone(),
        device: conf.device_id().to_owned(),
        room: config.room.clone(),
        conference: config.conference.clone(),
        duration_s: in_call.as_secs_f64(),
        subscribed_full: match &config.subscribe {
            Subscription::All => FullSubscription::All,
            Subscription::Speaker => FullSubscription::Speaker,
            Subscription::Ssrcs(s) => FullSubscription::Ssrcs(s.iter().map(|x| x.0).collect()),
        },
        sent: sent_before.into_iter().chain(sent_streams(&conf)).collect(),
        senders: tally.final_rows(),
        recordings,
        speakers: tally.speakers.clone(),
        last_speaker: tally.speaker.as_ref().map(|m| m.user_id.clone()),
        reconnects: tally.reconnects,
        calls_again: tally.calls_again,
    };
    let mut code = ExitCode::SUCCESS;
    if let Some(path) = &config.report
        && let Err(e) = report.write(path)
    {
        eprintln!("blindfold-client: {}", one_line(e));
        code = ExitCode::FAILURE;
    }
    let hangup = tokio::time::timeout(HANGUP_LIMIT, conf.hangup()).await;

    summary(
        &report,
        &tally,
        clip.as_ref(),
        config.report.as_deref(),
        stop_reason,
    );
    match hangup {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            eprintln!("blindfold-client: hanging up: {}", one_line(e));
            code = ExitCode::FAILURE;
        }
        Err(_) => {
            eprintln!("blindfold-client: hanging up took over {HANGUP_LIMIT:?}; left anyway");
            code = ExitCode::FAILURE;
        }
    }
    if let Some(reason) = ended_early {
        eprintln!(
            "blindfold-client: the call ended early: {}",
            one_line(reason)
        );
        code = ExitCode::FAILURE;
    }
    code
}

/// Takes the events waiting when a call ends into the tally: what it had decrypted
/// still counts.
fn take_waiting(conf: &mut Conference, tally: &mut Tally) {
    while let Some(ev) = conf.try_next_event() {
        let _ = handle(conf, tally, ev);
    }
}

/// Why the call ended, and whether the SFU asked us to call again.
struct End {
    reason: String,
    call_again: bool,
}

/// Takes one conference event into the tally; `Some` if the call is over.
fn handle(conf: &Conference, tally: &mut Tally, ev: ConferenceEvent) -> Option<End> {
    match ev {
        ConferenceEvent::Media { packet, from, .. } => {
            tally.media(Instant::now(), &packet, from.as_ref());
        }
        ConferenceEvent::KeysAccepted { member, .. } => {
            for (m, streams) in conf.member_streams() {
                if m == member {
                    tally.declare(&m, &streams);
                }
            }
        }
        ConferenceEvent::Undecryptable { ssrc, from, reason } => match reason {
            DropReason::UnknownSsrc => tally.failure(ssrc, None),
            _ => tally.failure(ssrc, from.as_ref()),
        },
        ConferenceEvent::KeysRejected { user_id, reason } => {
            eprintln!(
                "blindfold-client: refused a key event of {}: {}",
                one_line(user_id),
                one_line(reason)
            );
        }
        ConferenceEvent::Reconnecting { .. } => {
            tally.reconnects += 1;
            eprintln!(
                "blindfold-client: the relay lost our session (restarted?); connecting again"
            );
        }
        ConferenceEvent::AddressChanged { address } => {
            eprintln!(
                "blindfold-client: the relay sees us at {address} now (a NAT rebinding?); \
                 our media moves there"
            );
        }
        ConferenceEvent::MemberLeft { member } => {
            eprintln!(
                "blindfold-client: {} ({}) left; rekeying",
                member.user_id, member.device_id
            );
        }
        ConferenceEvent::ActiveSpeaker { member } => tally.speaker(member),
        ConferenceEvent::Ended { reason, call_again } => return Some(End { reason, call_again }),
        _ => {}
    }
    None
}

/// Why [`call`] did not get a call going.
enum Stop {
    /// Joining failed.
    Failed(String),
    /// A signal came first ("SIGINT", "SIGTERM").
    Signal(&'static str),
}

/// Joins the conference: calls the SFU, until it answers. A refusal that asks us to
/// call again (`relay_unavailable`: the relay could not take the call) is tried again
/// after [`CALL_AGAIN_PAUSE`], up to [`MAX_CALLS_AGAIN`] times.
async fn call(
    cc: &ConferenceConfig,
    sigint: &mut Signal,
    sigterm: &mut Signal,
) -> Result<Conference, Stop> {
    let mut refused = 0;
    loop {
        let r = tokio::select! {
            r = Conference::join(cc.clone()) => r,
            _ = sigint.recv() => return Err(Stop::Signal("SIGINT")),
            _ = sigterm.recv() => return Err(Stop::Signal("SIGTERM")),
        };
        match r {
            Err(ConferenceError::Hangup { code, .. })
                if code == CALL_AGAIN && refused < MAX_CALLS_AGAIN =>
            {
                refused += 1;
                eprintln!("blindfold-client: the SFU refused with {code}; calling again");
                tokio::time::sleep(CALL_AGAIN_PAUSE).await;
            }
            r => return r.map_err(|e| Stop::Failed(e.to_string())),
        }
    }
}

/// The table's title: who, where, how long, what we send and under which key, and who
/// the SFU last named the active speaker.
fn title(
    conf: &Conference,
    me: &str,
    conf_id: &str,
    elapsed: Duration,
    speaker: Option<&str>,
) -> String {
    let sent: Vec<String> = sent_streams(conf)
        .iter()
        .map(|s| format!("{} {}", s.kind.as_str(), s.packets))
        .collect();
    format!(
        "{me} in {conf_id}, {} s; sent packets: {}; our key {}; speaker {}",
        elapsed.as_secs(),
        sent.join(", "),
        conf.active_key().0,
        speaker.unwrap_or("-")
    )
}

/// What we sent on each of our streams.
fn sent_streams(conf: &Conference) -> Vec<SentStream> {
    let s = conf.ssrcs();
    [
        (s.audio, StreamKind::Audio),
        (s.thumbnail, StreamKind::Thumbnail),
        (s.full, StreamKind::Full),
    ]
    .into_iter()
    .map(|(ssrc, kind)| {
        let (packets, bytes) = conf
            .with_participant(|p| p.sent_totals(ssrc))
            .unwrap_or((0, 0));
        SentStream {
            ssrc: ssrc.0,
            kind,
            packets,
            bytes,
        }
    })
    .collect()
}

/// The final summary on stdout.
fn summary(
    report: &Report,
    tally: &Tally,
    clip: Option<&ClipSender>,
    report_path: Option<&std::path::Path>,
    stop_reason: &str,
) {
    let mut out = std::io::stdout().lock();
    let mut lines = vec![String::new()];
    lines.extend(render(
        &format!(
            "{} (device {}): {:.1} s in the call, stopped by {stop_reason}; decrypted:",
            report.user, report.device, report.duration_s
        ),
        &report.senders,
    ));
    lines.push(format!("sent: {}", report.sent_line()));
    lines.push(format!("active speaker: {}", report.speakers_line()));
    if let Some(c) = clip {
        lines.push(format!(
            "audio file: {} Opus packets sent ({} of the clip, {} full loops)",
            c.sent,
            c.packets().len(),
            c.loops
        ));
    }
    if tally.unknown_ssrc > 0 || tally.unattributed > 0 {
        lines.push(format!(
            "not in the table: {} datagrams on streams no accepted key event declared \
             (before a member's keys arrived), {} decrypted packets whose sender had left",
            tally.unknown_ssrc, tally.unattributed
        ));
    }
    for r in &report.recordings {
        lines.push(format!(
            "recorded {}'s audio (ssrc {}): {} ({} packets)",
            r.user,
            r.ssrc,
            r.path.display(),
            r.packets
        ));
    }
    if let Some(p) = report_path {
        lines.push(format!("report: {}", p.display()));
    }
    for l in lines {
        let _ = writeln!(out, "{l}");
    }
    let _ = out.flush();
}

/// Random bits from the OS (RTP timestamps' start, the synthetic sources' seed).
fn rand_u32() -> u32 {
    let mut b = [0u8; 4];
    // No OS randomness is not worth failing a call over: these need not be secret.
    let _ = aws_lc_rs::rand::fill(&mut b);
    u32::from_le_bytes(b)
}
