//! `blindfold-load`: a load generator for a running `blindfold-relay`.
//!
//! It plays signaling and every participant at once: over the relay's control socket it
//! creates `--conferences` conferences of `--participants` sessions each (unique ICE
//! credentials, the participants' DTLS fingerprint, their SSRCs; the last
//! `--full-subscribers` of each conference subscribe to `all` full layers), then runs one
//! [`Participant`] per session on its own UDP socket on 127.0.0.1: ICE and DTLS against
//! the relay, every other member's end-to-end keys installed, synthetic media from a
//! [`Driver`] (audio, thumbnail and — for the first `--speakers` of each conference —
//! full resolution, as `--streams` allows), and [`Receiver`]s measuring what arrives.
//!
//! With `--fixed-size` and `--fixed-pps` it measures the relay's forwarding capacity
//! instead (the relay side of `relay-vs-bare`): the synthetic sources stay off, the first
//! participant of each conference sends packets of a fixed payload size on its audio SSRC,
//! paced in bursts every `--fixed-tick-us` (a timerfd wakes the loop) to a total ingress
//! rate, each packet stamped with abs-send-time, and the others only count the RTP
//! datagrams that reach them (header read, no decryption, so the generator is not the
//! bottleneck); STUN, DTLS and SRTCP still go through the participant. With
//! `--report-format udp-blast` the report is `udp-blast`'s JSON line. The relay caps
//! an audio stream at `max_audio_pps` (500 by default): run it with
//! `--max-audio-pps 0` for rates above that.
//!
//! All IO is one thread: a mio `Poll` over every participant's socket, with the
//! participants' and sources' timers as the poll timeout. A progress line goes to
//! stderr once a second; the JSON report (see [`Report`]) to `--json` or stdout.
//!
//! ```text
//! blindfold-load --control /run/blindfold/relay.sock --conferences 5 --participants 10 \
//!     --duration 10 --relay-pid $(pidof blindfold-relay) --json report.json
//! ```

// The load generator is an IO shell, not a sans-IO engine: it reads the clock.
#![allow(clippy::disallowed_methods)]

use std::collections::{BTreeMap, HashSet};
use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant, SystemTime};

use blindfold_client::control::ControlClient;
use blindfold_client::measure::{LatencyHistogram, udp_socket_drops};
use blindfold_client::procfs::{
    cpu_seconds, proc_cpu_split, proc_cpu_ticks, proc_rss_kib, udp_buffer_errors,
};
use blindfold_client::report::BlastReport;
use blindfold_client::udp::{IoStats, UdpLink, UdpParticipant};
use blindfold_client::{
    Driver, IceCredentials, MediaSource, OwnSsrcs, Participant, ParticipantConfig, Receiver,
    SenderId, SourceConfig, VideoLayer,
};
use blindfold_relay::control::{
    ConfId, ConferenceSpec, ExtmapIds, FullSet, Generation, IcePwd, IceUfrag, Layer,
    NotificationBody, RequestBody, SessionId, SessionSpec, StreamKind, StreamSpec,
    SubscriptionSpec,
};
use blindfold_relay::dtls::{DtlsCert, DtlsConfig, DtlsSettings};
use blindfold_relay::id::{ExtId, KeyIndex, Pt, RtpTime, Ssrc, WireSeq};
use blindfold_relay::shell::udp::RecvBatch;
use blindfold_relay::srtp::{MasterKey, SrtpContext, SrtpProfile};
use blindfold_relay::wire::rtp::{AbsSendTime, RtpFields, RtpHeader, abs_send_time, write_header};
use blindfold_relay::wire::{Kind, classify};
use clap::{Parser, ValueEnum};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

/// A stream a participant may send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum StreamArg {
    /// Opus-like audio, 50 packets/s.
    Audio,
    /// The low simulcast layer, 15 fps.
    Thumbnail,
    /// Full resolution, 30 fps (only the first `--speakers` of a conference).
    Full,
    /// Nothing: with `--streams none` the members are idle (consent checks out, the
    /// relay's once-a-second SRTCP in), for the cost of sessions that carry no media.
    None,
}

/// Load generator for blindfold-relay: many real participants on loopback UDP.
#[derive(Debug, Parser)]
#[command(name = "blindfold-load", version)]
struct Args {
    /// The relay's control socket.
    #[arg(long, required_unless_present = "bare_target")]
    control: Option<PathBuf>,
    /// The relay's media address (default: the first candidate in its hello).
    #[arg(long)]
    relay: Option<SocketAddr>,
    /// Conferences.
    #[arg(long, default_value_t = 1)]
    conferences: usize,
    /// Participants per conference.
    #[arg(long, default_value_t = 3)]
    participants: usize,
    /// What each participant sends (comma-separated).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "audio,thumbnail,full"
    )]
    streams: Vec<StreamArg>,
    /// Participants per conference (the last ones) subscribed to `all` full layers.
    #[arg(long, default_value_t = 0)]
    full_subscribers: usize,
    /// Participants per conference (the first ones) sending full resolution.
    #[arg(long, default_value_t = 1)]
    speakers: usize,
    /// Bitrate multiplier (scales payload sizes, not packet rates).
    #[arg(long, default_value_t = 1.0)]
    rate: f64,
    /// Seconds of media.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds allowed for every participant to connect (ICE and DTLS).
    #[arg(long, default_value_t = 30.0)]
    connect_timeout: f64,
    /// The relay's pid, for its CPU time and RSS from /proc.
    #[arg(long)]
    relay_pid: Option<u32>,
    /// Where to write the JSON report (default: stdout).
    #[arg(long)]
    json: Option<PathBuf>,
    /// No progress line on stderr.
    #[arg(long)]
    no_progress: bool,
    /// Fixed-rate mode: payload bytes of every packet (with `--fixed-pps`).
    #[arg(long, requires = "fixed_pps")]
    fixed_size: Option<usize>,
    /// Fixed-rate mode: total ingress packets/s over every conference's one sender
    /// (with `--fixed-size`); fan-out is `--participants` − 1.
    #[arg(long, requires = "fixed_size")]
    fixed_pps: Option<f64>,
    /// Fixed-rate mode's pacing quantum in microseconds: each sender's packets go out in
    /// bursts this far apart (a timerfd wakes the loop; `udp-blast --burst-us` alike).
    #[arg(long, default_value_t = 100)]
    fixed_tick_us: u64,
    /// The report's format.
    #[arg(long, value_enum, default_value = "load")]
    report_format: ReportFormat,
    /// Fixed-rate mode against a bare forwarder at this address instead of a relay (the
    /// baseline of `relay-vs-bare`, with this same generator): the command after `--` is
    /// spawned with `--dest RECEIVER` appended per receiver, and stopped with SIGTERM.
    #[arg(long, requires_all = ["fixed_size", "spawn"], conflicts_with = "control")]
    bare_target: Option<SocketAddr>,
    /// The bare forwarder's command line (with `--bare-target`).
    #[arg(last = true)]
    spawn: Vec<String>,
}

/// How the report is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ReportFormat {
    /// This generator's own report (see [`Report`]); in fixed-rate mode its media
    /// figures (sources, receivers) stay empty: use `udp-blast` there.
    Load,
    /// `udp-blast`'s JSON line (fixed-rate mode only), as `relay-vs-bare` reads it.
    UdpBlast,
}

/// How long after the last send we keep receiving, so packets in flight arrive.
const DRAIN: Duration = Duration::from_millis(500);
/// After everyone is connected, before keys and media: lets the relay's workers apply
/// the fan-out changes the connections made.
const SETTLE: Duration = Duration::from_millis(200);
/// A start far enough away that a disabled source never sends during a run.
const NEVER: Duration = Duration::from_secs(365 * 24 * 3600);

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(report) => {
            let json = match args.report_format {
                ReportFormat::Load => report.to_json(&args),
                ReportFormat::UdpBlast => report.to_blast_json(&args),
            };
            let written = match &args.json {
                Some(path) => std::fs::write(path, json + "\n")
                    .map_err(|e| format!("writing {}: {e}", path.display())),
                None => {
                    println!("{json}");
                    Ok(())
                }
            };
            match written {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("blindfold-load: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Err(e) => {
            eprintln!("blindfold-load: {e}");
            ExitCode::FAILURE
        }
    }
}

mod load;
mod member;
mod report;
mod setup;

use load::*;
use member::*;
use report::*;
use setup::*;
