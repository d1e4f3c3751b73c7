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
//! `--report-format udp-blast` the report is `udp-blast`'s JSON line.
//!
//! All IO is one thread: a mio `Poll` over every participant's socket, with the
//! participants' and sources' timers as the poll timeout. A progress line goes to
//! stderr once a second; the JSON report (see [`Report`]) to `--json` or stdout.
//!
//! ```text
//! blindfold-load --control /run/blindfold/control.sock --conferences 5 --participants 10 \
//!     --duration 10 --relay-pid $(pidof blindfold-relay) --json report.json
//! ```

// The load generator is an IO shell, not a sans-IO engine: it reads the clock.
#![allow(clippy::disallowed_methods)]

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant, SystemTime};

use blindfold_client::control::ControlClient;
use blindfold_client::measure::{LatencyHistogram, udp_socket_drops};
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
use mio::net::UdpSocket;
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

// ----- one participant ------------------------------------------------------------------

struct Member {
    conf: usize,
    session: SessionId,
    /// None against a bare forwarder (`--bare-target`): no ICE, DTLS or SRTCP there.
    p: Option<Participant>,
    sock: UdpSocket,
    key: Vec<u8>,
    /// Audio, thumbnail, full.
    sends: [bool; 3],
    full_subscriber: bool,
    driver: Option<Driver>,
    rx: Receiver,
    media_in: u64,
    /// Fixed-rate mode: RTP is counted here, not decrypted.
    count_rtp: bool,
    /// RTP datagrams counted (fixed-rate mode).
    rtp_in: u64,
    /// Fixed-rate mode: one-way latency of the counted datagrams, from the sender's
    /// abs-send-time to the return of the `recvmmsg` that read them.
    rtp_latency: LatencyHistogram,
    /// Datagrams that were not RTP and found no participant (a bare forwarder's probes).
    other_in: u64,
}

#[derive(Debug, Default)]
struct IoCounters {
    datagrams_out: u64,
    datagrams_in: u64,
    /// Sends refused because the socket buffer was full (the datagram is lost).
    send_would_block: u64,
    send_errors: u64,
    recv_errors: u64,
}

impl Member {
    /// Sends everything queued; returns how many datagrams the kernel took.
    fn flush(&mut self, io: &mut IoCounters) -> u64 {
        let mut sent = 0;
        let Some(p) = self.p.as_mut() else {
            return 0;
        };
        while let Some(t) = p.poll_transmit() {
            match self.sock.send_to(&t.bytes, t.dest) {
                Ok(_) => {
                    io.datagrams_out += 1;
                    sent += 1;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => io.send_would_block += 1,
                Err(_) => io.send_errors += 1,
            }
        }
        sent
    }

    fn events(&mut self, now: Instant) {
        let Some(p) = self.p.as_mut() else {
            return;
        };
        while let Some(ev) = p.poll_event() {
            if self.rx.handle_event(now, &ev) {
                self.media_in += 1;
            } else if let Some(d) = &mut self.driver {
                d.handle_event(&ev);
            }
        }
    }

    /// Reads the socket until it would block.
    fn readable(&mut self, io_buf: &mut IoBufs, now: Instant, io: &mut IoCounters) {
        if self.count_rtp {
            self.read_batches(&mut io_buf.batch, io_buf.epoch, now, io);
        } else {
            self.read_each(&mut io_buf.buf, now, io);
        }
        self.events(now);
        let _ = self.flush(io);
    }

    /// Hands every datagram to the participant, one `recv_from` each.
    fn read_each(&mut self, buf: &mut [u8], now: Instant, io: &mut IoCounters) {
        loop {
            match self.sock.recv_from(buf) {
                Ok((n, from)) => {
                    io.datagrams_in += 1;
                    if let (Some(d), Some(p)) = (buf.get_mut(..n), self.p.as_mut()) {
                        let _ = p.handle_datagram(now, from, d);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                // An ICMP error from an earlier send: nothing to receive.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => {
                    io.recv_errors += 1;
                    break;
                }
            }
        }
    }

    /// Fixed-rate mode: `recvmmsg` batches; RTP is counted and its abs-send-time read
    /// (no decryption), everything else (STUN, DTLS, SRTCP) goes to the participant.
    fn read_batches(
        &mut self,
        batch: &mut RecvBatch,
        epoch: Instant,
        now: Instant,
        io: &mut IoCounters,
    ) {
        loop {
            let n = match batch.recv(&self.sock) {
                Ok(0) => break,
                Ok(n) => n,
                Err(_) => {
                    io.recv_errors += 1;
                    break;
                }
            };
            // A short batch emptied the queue; the next arrival re-arms the poll, so
            // the extra `recvmmsg` that would only say EAGAIN is skipped.
            let drained = n < batch.capacity();
            io.datagrams_in += n as u64;
            let arrived =
                AbsSendTime::from_duration(Instant::now().saturating_duration_since(epoch));
            for (from, d) in batch.iter_mut() {
                let rtp = if classify(d) == Kind::Rtp {
                    RtpHeader::parse(d).ok()
                } else {
                    None
                };
                let Some(h) = rtp else {
                    match self.p.as_mut() {
                        Some(p) => {
                            let _ = p.handle_datagram(now, from, d);
                        }
                        None => self.other_in += 1,
                    }
                    continue;
                };
                self.rtp_in += 1;
                if let Some(sent) = LOAD_EXTMAP
                    .abs_send_time
                    .and_then(|id| h.extension(id))
                    .and_then(|e| abs_send_time(e).ok())
                {
                    // Both ends read one clock; the 24-bit value wraps every 64 s.
                    let ticks = arrived.0.wrapping_sub(sent.0) & AbsSendTime::MAX;
                    // Both ends round to 2^-18 s: a "negative" latency is one tick of
                    // rounding, not 64 s.
                    let ticks = if ticks > AbsSendTime::MAX / 2 {
                        0
                    } else {
                        ticks
                    };
                    self.rtp_latency.record(AbsSendTime(ticks).as_nanos());
                }
            }
            if drained {
                break;
            }
        }
    }

    /// Runs due timers (and the sources if `driving`); returns the next deadline.
    fn timers(&mut self, now: Instant, driving: bool, io: &mut IoCounters) -> Option<Instant> {
        let p = self.p.as_mut()?;
        if p.poll_timeout().is_some_and(|t| t <= now) {
            p.handle_timeout(now);
        }
        if driving
            && let Some(d) = &mut self.driver
            && d.poll_timeout().is_some_and(|t| t <= now)
        {
            let _ = d.drive(p, now);
        }
        self.events(now);
        let _ = self.flush(io);
        self.deadline(driving)
    }

    fn deadline(&self, driving: bool) -> Option<Instant> {
        let d = self
            .driver
            .as_ref()
            .filter(|_| driving)
            .and_then(Driver::poll_timeout);
        match (self.p.as_ref().and_then(Participant::poll_timeout), d) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// Every participant and the poll over their sockets.
struct Load {
    members: Vec<Member>,
    poll: Poll,
    events: Events,
    bufs: IoBufs,
    io: IoCounters,
    next_timers: Instant,
    driving: bool,
    /// Fixed-rate mode's senders, paced while `driving`.
    fixed: Option<Fixed>,
}

/// Receive buffers, shared by every member (one thread reads them in turn).
struct IoBufs {
    /// One datagram, for `recv_from`.
    buf: Vec<u8>,
    /// A `recvmmsg` batch, for fixed-rate mode's counting receivers.
    batch: RecvBatch,
    /// The origin of abs-send-time stamps (senders and receivers share the clock).
    epoch: Instant,
}

/// The header extension ids every participant negotiates (sources write audio level,
/// frame marking and abs-send-time; fixed-rate mode stamps abs-send-time).
const LOAD_EXTMAP: ExtmapIds = ExtmapIds {
    audio_level: Some(ExtId(1)),
    frame_marking: Some(ExtId(2)),
    abs_send_time: Some(ExtId(3)),
    transport_cc: None,
};

/// The poll token of fixed-rate mode's [`Ticker`] (members use their index).
const TICK: Token = Token(usize::MAX);

/// A periodic `timerfd` in the poll: wakes it every period with microsecond precision,
/// where epoll's own timeout rounds up to whole milliseconds.
struct Ticker {
    fd: OwnedFd,
}

impl Ticker {
    /// Starts ticking every `period` and registers with `poll` under [`TICK`].
    fn start(poll: &Poll, period: Duration) -> Result<Self, String> {
        // SAFETY: timerfd_create takes two flags and returns a new descriptor or -1.
        let raw = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if raw < 0 {
            return Err(format!(
                "timerfd_create: {}",
                std::io::Error::last_os_error()
            ));
        }
        // SAFETY: `raw` is a descriptor we were just given and nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let period = period.max(Duration::from_micros(1));
        let ts = libc::timespec {
            tv_sec: period.as_secs() as libc::time_t,
            tv_nsec: period.subsec_nanos() as libc::c_long,
        };
        let spec = libc::itimerspec {
            it_interval: ts,
            it_value: ts,
        };
        // SAFETY: `fd` is a timerfd, `spec` a valid itimerspec; the old value may be null.
        if unsafe { libc::timerfd_settime(fd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) } < 0 {
            return Err(format!(
                "timerfd_settime: {}",
                std::io::Error::last_os_error()
            ));
        }
        poll.registry()
            .register(&mut SourceFd(&fd.as_raw_fd()), TICK, Interest::READABLE)
            .map_err(|e| format!("register timerfd: {e}"))?;
        Ok(Self { fd })
    }

    /// Consumes the expirations so far (the poll is edge-triggered).
    fn clear(&self) {
        let mut n = [0u8; 8];
        // SAFETY: reads at most 8 bytes into `n`, which has 8; a non-blocking timerfd
        // with nothing expired returns EAGAIN, which is fine to ignore.
        let _ = unsafe { libc::read(self.fd.as_raw_fd(), n.as_mut_ptr().cast(), n.len()) };
    }
}
/// Packets later than this are skipped (the generator was the limit), not sent late.
const FIXED_LATE: Duration = Duration::from_millis(20);

/// Fixed-rate mode: one sender per conference, fixed payload, paced to a total rate.
struct Fixed {
    /// Index in `members` of each conference's sender.
    senders: Vec<usize>,
    /// Packets/s of each sender.
    pps: f64,
    payload: Vec<u8>,
    /// Pacing origin and end of sending.
    start: Instant,
    end: Instant,
    /// Per sender: packets whose turn has come (sent, or skipped as too late).
    scheduled: Vec<u64>,
    /// Packets skipped because the generator fell more than [`FIXED_LATE`] behind.
    skipped: u64,
    /// Per sender: datagrams the kernel took.
    sent: Vec<u64>,
    send_errors: u64,
    /// When the next burst is due.
    next: Instant,
    /// The pacing quantum.
    tick: Duration,
    /// Wakes the poll every `tick`.
    ticker: Ticker,
    /// Against a bare forwarder, the one sender's packet builder (senders have no
    /// participant there).
    bare: Option<BareSender>,
}

/// Fixed-rate mode's payload type (the audio SSRC's, Opus-like).
const PT: Pt = Pt(111);

/// Fixed-rate mode's sender against a bare forwarder: the packets a participant sends to
/// the relay (the same header writer with abs-send-time, end-to-end SRTP with a one-byte
/// MKI, the same sizes), sent straight from the member's socket to the forwarder.
struct BareSender {
    target: SocketAddr,
    ssrc: Ssrc,
    seq: u16,
    srtp: SrtpContext,
    buf: Vec<u8>,
}

impl BareSender {
    fn new(
        target: SocketAddr,
        ssrc: Ssrc,
        profile: SrtpProfile,
        key: &[u8],
    ) -> Result<Self, String> {
        Ok(Self {
            target,
            ssrc,
            seq: 0,
            srtp: SrtpContext::new(profile, key, Some(KeyIndex(0)))
                .map_err(|e| format!("srtp: {e}"))?,
            buf: vec![0; 2048],
        })
    }

    /// Builds, protects and sends one packet; whether the kernel took it. `Err` if it
    /// could not be built.
    fn send(
        &mut self,
        sock: &UdpSocket,
        ts: RtpTime,
        ext: &[(ExtId, &[u8])],
        payload: &[u8],
        io: &mut IoCounters,
    ) -> Result<bool, ()> {
        let fields = RtpFields {
            padding: false,
            marker: false,
            payload_type: PT,
            seq: WireSeq(self.seq),
            timestamp: ts,
            ssrc: self.ssrc,
            csrcs: &[],
        };
        let hlen = write_header(&mut self.buf, &fields, ext).map_err(|_| ())?;
        let len = hlen + payload.len();
        self.buf
            .get_mut(hlen..len)
            .ok_or(())?
            .copy_from_slice(payload);
        let n = self.srtp.protect_rtp(&mut self.buf, len).map_err(|_| ())?;
        self.seq = self.seq.wrapping_add(1);
        match sock.send_to(self.buf.get(..n).ok_or(())?, self.target) {
            Ok(_) => {
                io.datagrams_out += 1;
                Ok(true)
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                io.send_would_block += 1;
                Ok(false)
            }
            Err(_) => {
                io.send_errors += 1;
                Ok(false)
            }
        }
    }
}

impl Fixed {
    /// Sends every packet due by `now` (at most `duration × pps` per sender), each
    /// stamped with its abs-send-time since `epoch` just before it is protected and sent.
    fn pace(&mut self, members: &mut [Member], epoch: Instant, now: Instant, io: &mut IoCounters) {
        let upto = now.min(self.end).saturating_duration_since(self.start);
        let due = (upto.as_secs_f64() * self.pps) as u64;
        let late = (FIXED_LATE.as_secs_f64() * self.pps) as u64;
        for (k, &g) in self.senders.iter().enumerate() {
            let Some(m) = members.get_mut(g) else {
                continue;
            };
            let (Some(scheduled), Some(sent)) = (self.scheduled.get_mut(k), self.sent.get_mut(k))
            else {
                continue;
            };
            if due.saturating_sub(*scheduled) > late {
                self.skipped += due - late - *scheduled;
                *scheduled = due - late;
            }
            while *scheduled < due {
                let ts = RtpTime((*scheduled as u32).wrapping_mul(960));
                let stamp =
                    AbsSendTime::from_duration(Instant::now().saturating_duration_since(epoch))
                        .to_bytes();
                let ext = LOAD_EXTMAP.abs_send_time.map(|id| (id, &stamp[..]));
                match (&mut self.bare, m.p.as_mut()) {
                    (Some(bare), _) => {
                        match bare.send(&m.sock, ts, ext.as_slice(), &self.payload, io) {
                            Ok(true) => *sent += 1,
                            Ok(false) => {}
                            Err(()) => self.send_errors += 1,
                        }
                    }
                    (None, Some(p)) => {
                        let ssrc = p.ssrcs().audio;
                        if p.send_rtp(now, ssrc, PT, false, ts, ext.as_slice(), &self.payload)
                            .is_err()
                        {
                            self.send_errors += 1;
                        }
                        *sent += m.flush(io);
                    }
                    (None, None) => self.send_errors += 1,
                }
                *scheduled += 1;
            }
        }
        self.next = (self.next + self.tick).max(now);
    }

    /// Packets the schedule holds, every sender.
    fn offered(&self) -> f64 {
        let secs = self.end.saturating_duration_since(self.start).as_secs_f64();
        (secs * self.pps).floor() * self.senders.len() as f64
    }
}

impl Load {
    fn new(members: Vec<Member>, poll: Poll, epoch: Instant) -> Self {
        Load {
            members,
            poll,
            events: Events::with_capacity(1024),
            bufs: IoBufs {
                buf: vec![0; 2048],
                batch: RecvBatch::new(64),
                epoch,
            },
            io: IoCounters::default(),
            next_timers: Instant::now(),
            driving: false,
            fixed: None,
        }
    }

    /// One turn: due timers, then wait for readable sockets until the next timer or
    /// `limit`, then read them.
    fn turn(&mut self, limit: Instant) -> Result<(), String> {
        let now = Instant::now();
        let mut wake = limit;
        if self.driving
            && let Some(f) = &mut self.fixed
        {
            if now >= f.next {
                f.pace(&mut self.members, self.bufs.epoch, now, &mut self.io);
            }
            wake = wake.min(f.next);
        }
        if now >= self.next_timers {
            let mut next = now + Duration::from_secs(1);
            for m in &mut self.members {
                if let Some(t) = m.timers(now, self.driving, &mut self.io) {
                    next = next.min(t);
                }
            }
            self.next_timers = next;
        }
        let wait = self
            .next_timers
            .min(wake)
            .saturating_duration_since(Instant::now());
        match self.poll.poll(&mut self.events, Some(wait)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("poll: {e}")),
        }
        let now = Instant::now();
        for ev in self.events.iter() {
            if ev.token() == TICK {
                if let Some(f) = &self.fixed {
                    f.ticker.clear();
                }
            } else if let Some(m) = self.members.get_mut(ev.token().0) {
                m.readable(&mut self.bufs, now, &mut self.io);
                if let Some(t) = m.deadline(self.driving) {
                    self.next_timers = self.next_timers.min(t);
                }
            }
        }
        Ok(())
    }

    /// Turns until `limit`.
    fn run_until(&mut self, limit: Instant) -> Result<(), String> {
        while Instant::now() < limit {
            self.turn(limit)?;
        }
        Ok(())
    }

    fn sent(&self) -> u64 {
        if let Some(f) = &self.fixed {
            return f.sent.iter().sum();
        }
        self.members
            .iter()
            .filter_map(|m| m.driver.as_ref())
            .map(|d| d.stats().sent)
            .sum()
    }

    fn media_in(&self) -> u64 {
        self.members.iter().map(|m| m.media_in + m.rtp_in).sum()
    }

    /// Lost / (received + lost) over every stream every receiver has seen.
    fn loss_so_far(&self) -> f64 {
        let (mut rx, mut lost) = (0u64, 0u64);
        for m in &self.members {
            for s in m.rx.streams() {
                rx += s.received;
                lost += s.lost();
            }
        }
        ratio(lost, rx + lost)
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

// ----- setup ----------------------------------------------------------------------------

/// Generations: microseconds since the epoch, always moving forward (as signaling does).
struct Generations(u64);

impl Generations {
    fn next(&mut self) -> Generation {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        self.0 = now.max(self.0 + 1);
        Generation(self.0)
    }
}

fn stream(ssrc: Ssrc, kind: StreamKind, layer: Layer) -> StreamSpec {
    StreamSpec { ssrc, kind, layer }
}

fn run(args: &Args) -> Result<Report, String> {
    if args.conferences == 0 || args.participants == 0 {
        return Err("--conferences and --participants must be at least 1".into());
    }
    if !(args.duration > 0.0 && args.duration.is_finite()) {
        return Err("--duration must be positive".into());
    }
    let fixed = args.fixed_size.zip(args.fixed_pps);
    if let Some((_, pps)) = fixed
        && !(pps > 0.0 && pps.is_finite())
    {
        return Err("--fixed-pps must be positive".into());
    }
    if fixed.is_some() && args.participants < 2 {
        return Err("fixed-rate mode needs --participants of at least 2".into());
    }
    if fixed.is_none() && args.report_format == ReportFormat::UdpBlast {
        return Err("--report-format udp-blast needs --fixed-size and --fixed-pps".into());
    }
    let epoch = Instant::now();
    let poll = Poll::new().map_err(|e| format!("poll: {e}"))?;
    match (args.bare_target, fixed) {
        (Some(target), Some(_)) => run_bare(args, target, epoch, poll),
        (Some(_), None) => Err("--bare-target needs --fixed-size and --fixed-pps".into()),
        (None, _) => run_relay(args, fixed, epoch, poll),
    }
}

/// The load against a relay: conferences and sessions over the control socket, real
/// participants connecting, keys shared, then [`measure`], then the conferences removed.
fn run_relay(
    args: &Args,
    fixed: Option<(usize, f64)>,
    epoch: Instant,
    poll: Poll,
) -> Result<Report, String> {
    let control_path = args
        .control
        .as_ref()
        .ok_or("--control is required (or --bare-target)")?;
    let (mut control, info) = ControlClient::connect(control_path, Duration::from_secs(10))
        .map_err(|e| format!("control socket {}: {e}", control_path.display()))?;
    let relay_addr = match args.relay.or_else(|| info.candidates.first().copied()) {
        Some(a) => a,
        None => return Err("the relay announced no candidate; give --relay".into()),
    };
    let mut generations = Generations(0);
    let tag = std::process::id();
    let cert = DtlsCert::generate().map_err(|e| format!("certificate: {e}"))?;
    let dtls =
        DtlsConfig::new(DtlsSettings::default()).map_err(|e| format!("dtls config: {e:?}"))?;
    let profile = SrtpProfile::AeadAes128Gcm;
    let want = |s: StreamArg| args.streams.contains(&s);
    let mut request = |body: RequestBody, what: &str| {
        control
            .request(body)
            .map(|_| ())
            .map_err(|e| format!("{what}: {:?} {}", e.code, e.message))
    };

    let mut members = Vec::new();
    let mut conf_ids = Vec::new();
    for c in 0..args.conferences {
        let conf_id = ConfId::new(format!("!load{tag}-{c}:blindfold"))
            .map_err(|e| format!("conf id: {e}"))?;
        request(
            RequestBody::UpsertConference {
                generation: generations.next(),
                conference: ConferenceSpec {
                    conf_id: conf_id.clone(),
                },
            },
            "upsert_conference",
        )?;
        conf_ids.push(conf_id.clone());
        for i in 0..args.participants {
            let g = members.len();
            let ssrcs = OwnSsrcs::numbered(g);
            let name = format!("{tag}c{c}p{i}");
            let relay_ice = IceCredentials {
                ufrag: format!("r{name}"),
                pwd: format!("relaypwd{name}0123456789abcdef"),
            };
            let local_ice = IceCredentials {
                ufrag: format!("l{name}"),
                pwd: format!("peerpwd{name}0123456789abcdef"),
            };
            let session = SessionId::new(format!("@load{name}:blindfold|DEV"))
                .map_err(|e| format!("session id: {e}"))?;
            let bad = |e: blindfold_relay::control::ControlError| format!("session spec: {e}");
            let spec = SessionSpec {
                session_id: session.clone(),
                conf_id: conf_id.clone(),
                ice_ufrag: IceUfrag::new(relay_ice.ufrag.clone()).map_err(bad)?,
                ice_pwd: IcePwd::new(relay_ice.pwd.clone()).map_err(bad)?,
                remote_ufrag: IceUfrag::new(local_ice.ufrag.clone()).map_err(bad)?,
                dtls_fingerprint: cert.fingerprint().into(),
                streams: vec![
                    stream(ssrcs.audio, StreamKind::Audio, Layer::None),
                    stream(ssrcs.thumbnail, StreamKind::Video, Layer::Thumbnail),
                    stream(ssrcs.full, StreamKind::Video, Layer::Full),
                ],
                extmap: LOAD_EXTMAP,
            };
            request(
                RequestBody::UpsertSession {
                    generation: generations.next(),
                    session: spec,
                },
                "upsert_session",
            )?;
            let full_subscriber = i >= args.participants.saturating_sub(args.full_subscribers);
            if full_subscriber {
                request(
                    RequestBody::SetSubscription {
                        generation: generations.next(),
                        subscription: SubscriptionSpec {
                            session_id: session.clone(),
                            full: FullSet::All,
                        },
                    },
                    "set_subscription",
                )?;
            }
            let key: Vec<u8> = (0..profile.master_len())
                .map(|k| (k as u8).wrapping_mul(31) ^ (g as u8) ^ ((g >> 8) as u8).rotate_left(3))
                .collect();
            let mut cfg = ParticipantConfig::new(
                local_ice,
                relay_ice,
                relay_addr,
                cert.clone(),
                info.dtls_fingerprint.into(),
                dtls.clone(),
                ssrcs,
                MasterKey::new(profile, &key).map_err(|e| format!("master key: {e:?}"))?,
                g as u64 + 1,
            );
            cfg.auto_feedback = false;
            let p =
                Participant::new(cfg, Instant::now()).map_err(|e| format!("participant: {e}"))?;
            let sock = member_socket(&poll, g, fixed.is_some())?;
            members.push(Member {
                conf: c,
                session,
                p: Some(p),
                sock,
                key,
                sends: [
                    want(StreamArg::Audio),
                    want(StreamArg::Thumbnail),
                    want(StreamArg::Full) && i < args.speakers,
                ],
                full_subscriber,
                driver: None,
                rx: Receiver::new(epoch),
                media_in: 0,
                count_rtp: fixed.is_some(),
                rtp_in: 0,
                rtp_latency: LatencyHistogram::default(),
                other_in: 0,
            });
        }
    }
    let mut load = Load::new(members, poll, epoch);

    // ----- connect -----
    let total = load.members.len();
    let connect_started = Instant::now();
    let deadline = connect_started + Duration::from_secs_f64(args.connect_timeout.max(0.1));
    let ours: HashSet<SessionId> = load.members.iter().map(|m| m.session.clone()).collect();
    let mut announced = HashSet::new();
    loop {
        let now = Instant::now();
        if let Some(m) = load
            .members
            .iter()
            .find(|m| m.p.as_ref().is_some_and(Participant::is_failed))
        {
            return Err(format!("participant {} failed to connect", m.session));
        }
        let connected = load
            .members
            .iter()
            .filter(|m| m.p.as_ref().is_some_and(Participant::is_connected))
            .count();
        if connected == total {
            for n in control.poll_notifications(Duration::from_millis(2)) {
                match n {
                    NotificationBody::SessionConnected { session_id, .. }
                        if ours.contains(&session_id) =>
                    {
                        announced.insert(session_id);
                    }
                    NotificationBody::SessionFailed { session_id, .. }
                        if ours.contains(&session_id) =>
                    {
                        return Err(format!("the relay reports {session_id} failed"));
                    }
                    _ => {}
                }
            }
            if announced.len() == total {
                break;
            }
        }
        if now >= deadline {
            return Err(format!(
                "{connected} of {total} participants connected, {} announced by the relay, \
                 within {} s",
                announced.len(),
                args.connect_timeout
            ));
        }
        load.turn(now + Duration::from_millis(10))?;
    }
    let connect_secs = connect_started.elapsed().as_secs_f64();
    load.run_until(Instant::now() + SETTLE)?;
    share_keys(&mut load.members, profile)?;
    let report = measure(
        args,
        &mut load,
        epoch,
        connect_secs,
        relay_addr,
        args.relay_pid,
        None,
    );
    // Leave the relay as we found it, whatever the measurement did.
    for conf_id in conf_ids {
        let _ = control.request(RequestBody::RemoveConference {
            generation: generations.next(),
            conf_id,
        });
    }
    report
}

/// The load against a bare forwarder (`--bare-target`, fixed-rate mode, one
/// conference): the same sockets and receive path as [`run_relay`]'s members but no
/// participants; the forwarder command is spawned with `--dest` per receiver, probes wait
/// until each receiver hears through it, then [`measure`] with a [`BareSender`], then
/// SIGTERM.
fn run_bare(args: &Args, target: SocketAddr, epoch: Instant, poll: Poll) -> Result<Report, String> {
    if args.conferences != 1 {
        return Err("--bare-target runs one conference".into());
    }
    let Some((prog, rest)) = args.spawn.split_first() else {
        return Err("--bare-target needs the forwarder's command after --".into());
    };
    let mut members = Vec::new();
    for g in 0..args.participants {
        let sock = member_socket(&poll, g, true)?;
        members.push(Member {
            conf: 0,
            session: SessionId::new(format!("@bare{g}:blindfold|DEV"))
                .map_err(|e| format!("session id: {e}"))?,
            p: None,
            sock,
            key: Vec::new(),
            sends: [false; 3],
            full_subscriber: false,
            driver: None,
            rx: Receiver::new(epoch),
            media_in: 0,
            count_rtp: true,
            rtp_in: 0,
            rtp_latency: LatencyHistogram::default(),
            other_in: 0,
        });
    }
    let mut cmd = std::process::Command::new(prog);
    cmd.args(rest);
    for m in members.iter().skip(1) {
        let addr = m
            .sock
            .local_addr()
            .map_err(|e| format!("local addr: {e}"))?;
        cmd.arg("--dest").arg(addr.to_string());
    }
    cmd.stdin(Stdio::null()).stdout(Stdio::null());
    let child = Forwarder(cmd.spawn().map_err(|e| format!("spawning {prog}: {e}"))?);
    let mut load = Load::new(members, poll, epoch);

    // Probes (not RTP, so not counted as media) until every receiver hears one.
    let started = Instant::now();
    let size = args.fixed_size.unwrap_or(0);
    let probe = vec![0u8; size.max(1)];
    let deadline = Instant::now() + Duration::from_secs_f64(args.connect_timeout.max(0.1));
    loop {
        if load.members.iter().skip(1).all(|m| m.other_in > 0) {
            break;
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "no probe reached every receiver through {target} within {} s",
                args.connect_timeout
            ));
        }
        if let Some(m) = load.members.first() {
            // Refused while nothing listens yet: the next probe tries again.
            let _ = m.sock.send_to(&probe, target);
        }
        load.run_until(Instant::now() + Duration::from_millis(10))?;
    }
    load.run_until(Instant::now() + SETTLE)?;

    let profile = SrtpProfile::AeadAes128Gcm;
    let key: Vec<u8> = (0..profile.master_len()).map(|k| k as u8).collect();
    let bare = BareSender::new(target, Ssrc(0x1001), profile, &key)?;
    let connect_secs = started.elapsed().as_secs_f64();
    let report = measure(
        args,
        &mut load,
        epoch,
        connect_secs,
        target,
        Some(child.0.id()),
        Some(bare),
    );
    drop(child);
    report
}

/// A 30-column bar for `done` (0.0..=1.0) of the run: `[=========>                    ]`.
fn progress_bar(done: f64) -> String {
    const WIDTH: usize = 30;
    let filled = ((done.clamp(0.0, 1.0) * WIDTH as f64).round() as usize).min(WIDTH);
    let mut bar = String::with_capacity(WIDTH + 2);
    bar.push('[');
    bar.extend(std::iter::repeat_n('=', filled.saturating_sub(1)));
    if filled > 0 {
        bar.push(if filled == WIDTH { '=' } else { '>' });
    }
    bar.extend(std::iter::repeat_n(' ', WIDTH - filled));
    bar.push(']');
    bar
}

/// Member `g`'s socket: non-blocking on 127.0.0.1, registered with `poll` as `Token(g)`;
/// with `fixed_rate`, a 4 MiB receive buffer (one thread reads every receiver between
/// bursts: their queues need room).
fn member_socket(poll: &Poll, g: usize, fixed_rate: bool) -> Result<UdpSocket, String> {
    let std_sock = std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.set_nonblocking(true).map(|()| s))
        .map_err(|e| format!("udp socket: {e}"))?;
    if fixed_rate {
        set_rcvbuf(&std_sock, 4 << 20);
    }
    let mut sock = UdpSocket::from_std(std_sock);
    poll.registry()
        .register(&mut sock, Token(g), Interest::READABLE)
        .map_err(|e| format!("register: {e}"))?;
    Ok(sock)
}

/// A spawned bare forwarder: SIGTERM and reaped when dropped, on every path.
struct Forwarder(std::process::Child);

impl Drop for Forwarder {
    fn drop(&mut self) {
        // SAFETY: `kill` takes a pid and a signal; the pid is our unreaped child (we hold
        // its `Child`), so it names no other process.
        unsafe { libc::kill(self.0.id() as libc::pid_t, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

/// Where the load went, for the report: the control socket or the bare forwarder.
fn target_name(args: &Args) -> String {
    match (&args.control, args.bare_target) {
        (Some(c), _) => c.display().to_string(),
        (None, Some(t)) => t.to_string(),
        (None, None) => String::new(),
    }
}

/// The media phase, the same against a relay and a bare forwarder (at `forwarder`,
/// process `pid`): sources or fixed-rate senders for `--duration`, then the drain, and
/// the report. `bare` is the fixed-rate sender's packet builder against a bare
/// forwarder.
fn measure(
    args: &Args,
    load: &mut Load,
    epoch: Instant,
    connect_secs: f64,
    forwarder: SocketAddr,
    pid: Option<u32>,
    bare: Option<BareSender>,
) -> Result<Report, String> {
    let fixed = args.fixed_size.zip(args.fixed_pps);
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(args.duration);
    if let Some((size, pps)) = fixed {
        let senders: Vec<usize> = (0..args.conferences)
            .map(|c| c * args.participants)
            .collect();
        let n = senders.len();
        let tick = Duration::from_micros(args.fixed_tick_us.clamp(10, 1_000_000));
        load.fixed = Some(Fixed {
            senders,
            pps: pps / n as f64,
            payload: vec![0x5a; size],
            start,
            end,
            scheduled: vec![0; n],
            skipped: 0,
            sent: vec![0; n],
            send_errors: 0,
            next: start,
            tick,
            ticker: Ticker::start(&load.poll, tick)?,
            bare,
        });
    } else {
        for (g, m) in load.members.iter_mut().enumerate() {
            m.driver = Some(driver(m, g, epoch, args.rate, start)?);
        }
    }
    load.driving = true;
    load.next_timers = start;
    let relay_before = pid.map(proc_cpu_ticks).transpose()?;
    let relay_before_split = pid.map(proc_cpu_split).transpose()?;
    let own_before = own_cpu_secs();
    let own_before_split = own_cpu_split();
    let udp_before = udp_buffer_errors();
    let receiver_ports: Vec<u16> = load
        .members
        .iter()
        .filter_map(|m| m.sock.local_addr().ok().map(|a| a.port()))
        .collect();
    let drops_before = (
        udp_socket_drops(&[forwarder.port()]),
        udp_socket_drops(&receiver_ports),
    );
    let mut tick = start + Duration::from_secs(1);
    let tty = std::io::stderr().is_terminal();
    let (mut last_sent, mut last_in, mut last_at) = (0u64, 0u64, start);
    while Instant::now() < end {
        load.turn(tick.min(end))?;
        let now = Instant::now();
        if now >= tick {
            if !args.no_progress {
                let (sent, got) = (load.sent(), load.media_in());
                let dt = now.duration_since(last_at).as_secs_f64();
                let elapsed = now.duration_since(start).as_secs_f64();
                let line = format!(
                    "{} {elapsed:5.1}/{:.1} s  sent {:9.0} pps  received {:9.0} pps  loss {:.3}%",
                    progress_bar(elapsed / args.duration),
                    args.duration,
                    (sent - last_sent) as f64 / dt,
                    (got - last_in) as f64 / dt,
                    100.0 * load.loss_so_far()
                );
                // On a terminal the bar redraws in place; in a log it is one line a second.
                if tty {
                    eprint!("\r{line}");
                } else {
                    eprintln!("{line}");
                }
                (last_sent, last_in, last_at) = (sent, got, now);
            }
            tick += Duration::from_secs(1);
        }
    }
    if tty && !args.no_progress {
        eprintln!();
    }
    if let Some(f) = &mut load.fixed {
        // The last burst, so every scheduled packet is sent (late, if need be).
        f.pace(
            &mut load.members,
            load.bufs.epoch,
            Instant::now(),
            &mut load.io,
        );
    }
    let run_secs = start.elapsed().as_secs_f64();
    let relay_cpu = match (pid, relay_before) {
        (Some(pid), Some(before)) => {
            let after = proc_cpu_ticks(pid)?;
            // SAFETY: sysconf has no preconditions.
            let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
            Some((after.saturating_sub(before) as f64 / hz, proc_rss_kib(pid)?))
        }
        _ => None,
    };
    let own_cpu = own_cpu_secs() - own_before;
    let own_split = {
        let (u, s) = own_cpu_split();
        (u - own_before_split.0, s - own_before_split.1)
    };
    let relay_split = match (pid, relay_before_split) {
        (Some(pid), Some((u0, s0))) => {
            let (u1, s1) = proc_cpu_split(pid)?;
            // SAFETY: sysconf has no preconditions.
            let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
            Some((
                u1.saturating_sub(u0) as f64 / hz,
                s1.saturating_sub(s0) as f64 / hz,
            ))
        }
        _ => None,
    };
    load.driving = false;
    load.run_until(Instant::now() + DRAIN)?;
    let since = |before: Option<u64>, after: Option<u64>| Some(after?.saturating_sub(before?));
    let drops = (
        since(drops_before.0, udp_socket_drops(&[forwarder.port()])),
        since(drops_before.1, udp_socket_drops(&receiver_ports)),
    );
    let udp_errors = match (udp_before, udp_buffer_errors()) {
        (Some((r0, s0)), Some((r1, s1))) => Some((r1.saturating_sub(r0), s1.saturating_sub(s0))),
        _ => None,
    };

    let mut report = Report::new(load, run_secs, connect_secs, relay_cpu, own_cpu, udp_errors);
    report.blast = load.fixed.as_ref().map(|f| {
        let fanout = (args.participants - 1) as f64;
        let offered = f.offered();
        let sent: u64 = f.sent.iter().sum();
        let per_sink: Vec<f64> = load
            .members
            .iter()
            .enumerate()
            .filter(|(g, _)| !f.senders.contains(g))
            .map(|(_, m)| m.rtp_in as f64 / run_secs.max(1e-9))
            .collect();
        let received: u64 = load.members.iter().map(|m| m.rtp_in).sum();
        let loss_vs = |base: f64| {
            if base > 0.0 {
                1.0 - received as f64 / (base * fanout)
            } else {
                0.0
            }
        };
        BlastFields {
            offered_pps: offered / run_secs.max(1e-9),
            sent_pps: sent as f64 / run_secs.max(1e-9),
            shortfall_pps: (offered - sent as f64).max(0.0) / run_secs.max(1e-9),
            received_pps_per_sink: per_sink,
            loss: loss_vs(offered),
            loss_after_send: loss_vs(sent as f64),
            own_split,
            relay_split,
            send_errors: f.send_errors,
            drops,
        }
    });
    Ok(report)
}

/// Every member installs every other conference member's keys, as their key events in
/// the encrypted room would have them do.
fn share_keys(members: &mut [Member], profile: SrtpProfile) -> Result<(), String> {
    let keys: Vec<(usize, OwnSsrcs, Vec<u8>)> = members
        .iter()
        .filter_map(|m| Some((m.conf, m.p.as_ref()?.ssrcs(), m.key.clone())))
        .collect();
    for (i, m) in members.iter_mut().enumerate() {
        for (j, (conf, ssrcs, key)) in keys.iter().enumerate() {
            if i == j || *conf != m.conf {
                continue;
            }
            let streams = ssrcs.as_remote_streams();
            let Some(p) = m.p.as_mut() else {
                continue;
            };
            p.install_remote_keys(
                SenderId(j as u64),
                &streams,
                profile,
                &[(KeyIndex(0), key.as_slice())],
            )
            .map_err(|e| format!("install keys: {e}"))?;
        }
    }
    Ok(())
}

/// The member's driver: the streams it does not send start in a year.
fn driver(m: &Member, g: usize, epoch: Instant, rate: f64, now: Instant) -> Result<Driver, String> {
    let s = m.p.as_ref().ok_or("a driver needs a participant")?.ssrcs();
    let sender = SenderId(g as u64);
    let ext = LOAD_EXTMAP;
    let seed = g as u64 + 1;
    let mut cfgs = [
        SourceConfig::audio(sender, s.audio, ext, epoch, seed),
        SourceConfig::video(VideoLayer::Thumbnail, sender, s.thumbnail, ext, epoch, seed),
        SourceConfig::video(VideoLayer::Full, sender, s.full, ext, epoch, seed),
    ];
    for c in &mut cfgs {
        c.rate = rate;
    }
    let [a, t, f] = cfgs;
    let start = |on: bool| if on { now } else { now + NEVER };
    Driver::new(
        s,
        MediaSource::new(a, start(m.sends[0])),
        MediaSource::new(t, start(m.sends[1])),
        MediaSource::new(f, start(m.sends[2])),
        None,
    )
    .map_err(|e| format!("driver: {e}"))
}

// ----- CPU and memory -------------------------------------------------------------------

/// utime + stime of `pid`, in clock ticks, from /proc/PID/stat.
fn proc_cpu_ticks(pid: u32) -> Result<u64, String> {
    proc_cpu_split(pid).map(|(u, s)| u + s)
}

/// (utime, stime) of `pid`, in clock ticks, from /proc/PID/stat.
fn proc_cpu_split(pid: u32) -> Result<(u64, u64), String> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let rest = text
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| format!("{path}: no ')'"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Field 3 (state) is fields[0]; utime is field 14, stime field 15.
    let num = |i: usize| -> Result<u64, String> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| format!("{path}: field {}", i + 3))
    };
    Ok((num(11)?, num(12)?))
}

/// Asks for a receive buffer of `bytes` (the kernel caps it at `rmem_max`); best effort.
fn set_rcvbuf(sock: &std::net::UdpSocket, bytes: libc::c_int) {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid socket fd and a pointer to a c_int with its size.
    let _ = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&raw const bytes).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
}

/// The host's UDP `RcvbufErrors` and `SndbufErrors` from /proc/net/snmp (datagrams the
/// kernel dropped for full socket buffers, every process's); `None` if unreadable.
fn udp_buffer_errors() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/net/snmp").ok()?;
    let mut rows = text.lines().filter(|l| l.starts_with("Udp:"));
    let names: Vec<&str> = rows.next()?.split_whitespace().collect();
    let values: Vec<&str> = rows.next()?.split_whitespace().collect();
    let get = |name: &str| -> Option<u64> {
        let i = names.iter().position(|n| *n == name)?;
        values.get(i)?.parse().ok()
    };
    Some((get("RcvbufErrors")?, get("SndbufErrors")?))
}

/// VmRSS of `pid`, KiB.
fn proc_rss_kib(pid: u32) -> Result<u64, String> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| format!("{path}: no VmRSS"))
}

/// This process's user + system CPU seconds.
fn own_cpu_secs() -> f64 {
    let (u, s) = own_cpu_split();
    u + s
}

/// This process's (user, system) CPU seconds.
fn own_cpu_split() -> (f64, f64) {
    // SAFETY: getrusage writes into the struct we pass; all-zero bytes are a valid rusage.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_SELF and a valid pointer to an rusage.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return (0.0, 0.0);
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (tv(ru.ru_utime), tv(ru.ru_stime))
}

// ----- the report -----------------------------------------------------------------------

/// What a run measured. Latency percentiles come from one histogram merging every
/// (receiver, stream)'s, so they are percentiles over all packets delivered.
struct Report {
    run_secs: f64,
    connect_secs: f64,
    sessions: usize,
    sent: u64,
    send_errors: u64,
    skipped: u64,
    expected: u64,
    delivered: u64,
    receiver_lost: u64,
    duplicates: u64,
    too_old: u64,
    integrity_failures: u64,
    drops: BTreeMap<String, u64>,
    latency: LatencyHistogram,
    io: IoCounters,
    relay_cpu: Option<(f64, u64)>,
    own_cpu: f64,
    /// Host-wide UDP RcvbufErrors and SndbufErrors during the run and drain.
    udp_errors: Option<(u64, u64)>,
    /// Fixed-rate mode's figures, for the udp-blast format.
    blast: Option<BlastFields>,
}

/// What fixed-rate mode measured, in `udp-blast`'s terms (rates over the sending phase;
/// receptions include the drain, as udp-blast's sinks do).
struct BlastFields {
    offered_pps: f64,
    sent_pps: f64,
    shortfall_pps: f64,
    received_pps_per_sink: Vec<f64>,
    /// `1 - received / (offered × fan-out)`.
    loss: f64,
    /// `1 - received / (sent × fan-out)`.
    loss_after_send: f64,
    /// This process's (user, system) CPU seconds over the sending phase.
    own_split: (f64, f64),
    /// The relay's, if `--relay-pid` was given.
    relay_split: Option<(f64, f64)>,
    send_errors: u64,
    /// Datagrams the kernel dropped at the relay's socket and at the participants'
    /// sockets during sending and draining (`/proc/net/udp`), if readable.
    drops: (Option<u64>, Option<u64>),
}

impl Report {
    fn new(
        load: &Load,
        run_secs: f64,
        connect_secs: f64,
        relay_cpu: Option<(f64, u64)>,
        own_cpu: f64,
        udp_errors: Option<(u64, u64)>,
    ) -> Self {
        let ms = &load.members;
        let mut r = Report {
            run_secs,
            connect_secs,
            sessions: ms.len(),
            sent: 0,
            send_errors: 0,
            skipped: 0,
            expected: 0,
            delivered: 0,
            receiver_lost: 0,
            duplicates: 0,
            too_old: 0,
            integrity_failures: 0,
            drops: BTreeMap::new(),
            latency: LatencyHistogram::default(),
            io: IoCounters {
                datagrams_out: load.io.datagrams_out,
                datagrams_in: load.io.datagrams_in,
                send_would_block: load.io.send_would_block,
                send_errors: load.io.send_errors,
                recv_errors: load.io.recv_errors,
            },
            relay_cpu,
            own_cpu,
            udp_errors,
            blast: None,
        };
        for (i, m) in ms.iter().enumerate() {
            if let Some(d) = &m.driver {
                r.sent += d.stats().sent;
                r.send_errors += d.stats().send_errors;
                for (k, src) in d.sources().iter().enumerate() {
                    r.skipped += src.stats().skipped;
                    // Who should get this stream: the rest of the conference; the full
                    // layer only its full subscribers.
                    let receivers = ms
                        .iter()
                        .enumerate()
                        .filter(|(j, o)| {
                            *j != i && o.conf == m.conf && (k != 2 || o.full_subscriber)
                        })
                        .count() as u64;
                    r.expected += src.stats().packets * receivers;
                }
            }
            for s in m.rx.streams() {
                r.delivered += s.received;
                r.receiver_lost += s.lost();
                r.duplicates += s.duplicates;
                r.too_old += s.too_old;
                r.integrity_failures += s.integrity_failures;
                r.latency.merge(&s.latency);
            }
            r.latency.merge(&m.rtp_latency);
            for (reason, n) in m.p.iter().flat_map(|p| &p.stats().drops) {
                *r.drops.entry(format!("{reason:?}")).or_default() += n;
            }
        }
        r
    }

    fn to_json(&self, args: &Args) -> String {
        let mut o = String::new();
        let streams: Vec<String> = args
            .streams
            .iter()
            .map(|s| format!("\"{}\"", format!("{s:?}").to_lowercase()))
            .collect();
        let opt = |v: Option<String>| v.unwrap_or_else(|| "null".into());
        let secs = self.run_secs.max(1e-9);
        let l = &self.latency;
        let drops: Vec<String> = self
            .drops
            .iter()
            .map(|(k, v)| format!("\"{k}\":{v}"))
            .collect();
        let decrypt_failures: u64 = self.drops.values().sum();
        // Writing to a String cannot fail.
        let _ = write!(
            o,
            "{{\"config\":{{\"control\":{},\"relay\":{},\"conferences\":{},\"participants\":{},\
             \"streams\":[{}],\"full_subscribers\":{},\"speakers\":{},\"rate\":{},\
             \"duration_s\":{},\"relay_pid\":{}}},\
             \"sessions\":{},\"connect_s\":{:.3},\"run_s\":{:.3},\
             \"sent_packets\":{},\"offered_pps\":{:.1},\"expected_deliveries\":{},\
             \"delivered_packets\":{},\"delivered_pps\":{:.1},\"loss_ratio\":{:.6},\
             \"receiver_counted_lost\":{},\"duplicates\":{},\"too_old\":{},\
             \"integrity_failures\":{},\"decrypt_failures\":{},\"drops\":{{{}}},\
             \"source_skipped\":{},\"send_rtp_errors\":{},\
             \"udp\":{{\"datagrams_out\":{},\"datagrams_in\":{},\"send_would_block\":{},\
             \"send_errors\":{},\"recv_errors\":{},\"host_rcvbuf_errors\":{},\
             \"host_sndbuf_errors\":{}}},\
             \"latency_ns\":{{\"method\":{},\
             \"count\":{},\"min\":{},\"p50\":{},\"p99\":{},\"max\":{},\"mean\":{}}},\
             \"relay_cpu_s\":{},\"relay_cpu_util\":{},\"relay_rss_kib\":{},\
             \"load_cpu_s\":{:.3},\"load_cpu_util\":{:.3}}}",
            json_str(&target_name(args)),
            opt(args.relay.map(|a| json_str(&a.to_string()))),
            args.conferences,
            args.participants,
            streams.join(","),
            args.full_subscribers,
            args.speakers,
            num(args.rate),
            num(args.duration),
            opt(args.relay_pid.map(|p| p.to_string())),
            self.sessions,
            self.connect_secs,
            self.run_secs,
            self.sent,
            self.sent as f64 / secs,
            self.expected,
            self.delivered,
            self.delivered as f64 / secs,
            1.0 - ratio(self.delivered, self.expected).min(1.0),
            self.receiver_lost,
            self.duplicates,
            self.too_old,
            self.integrity_failures,
            decrypt_failures,
            drops.join(","),
            self.skipped,
            self.send_errors,
            self.io.datagrams_out,
            self.io.datagrams_in,
            self.io.send_would_block,
            self.io.send_errors,
            self.io.recv_errors,
            opt(self.udp_errors.map(|(r, _)| r.to_string())),
            opt(self.udp_errors.map(|(_, s)| s.to_string())),
            json_str(if self.blast.is_some() {
                "abs-send-time to recvmmsg return, every counted RTP datagram"
            } else {
                "send time inside the encryption to decryption, every receiver's streams"
            }),
            l.count(),
            l.min().unwrap_or(0),
            l.quantile(0.5).unwrap_or(0),
            l.quantile(0.99).unwrap_or(0),
            l.max().unwrap_or(0),
            l.mean().unwrap_or(0),
            opt(self.relay_cpu.map(|(s, _)| format!("{s:.3}"))),
            opt(self.relay_cpu.map(|(s, _)| format!("{:.3}", s / secs))),
            opt(self.relay_cpu.map(|(_, rss)| rss.to_string())),
            self.own_cpu,
            self.own_cpu / secs,
        );
        o
    }
}

impl Report {
    /// The report as `udp-blast`'s JSON line (the fields `relay-vs-bare` reads). The
    /// relay's CPU, when known, is in `forwarder` (`cpu_user_s`, `cpu_sys_s`); its own
    /// sent count is unknown (metrics off), so `forwarder` has no `sent`.
    fn to_blast_json(&self, args: &Args) -> String {
        let Some(b) = &self.blast else {
            return "{}".into();
        };
        let secs = self.run_secs.max(1e-9);
        let per_sink: Vec<String> = b.received_pps_per_sink.iter().map(|&v| num(v)).collect();
        let total: f64 = b.received_pps_per_sink.iter().sum();
        let (u, s) = b.own_split;
        let forwarder = b.relay_split.map_or("null".into(), |(ru, rs)| {
            format!(
                "{{\"cpu_user_s\":{},\"cpu_sys_s\":{},\"relay_rss_kib\":{}}}",
                num(ru),
                num(rs),
                opt_num(self.relay_cpu.map(|(_, rss)| rss as f64))
            )
        });
        let sinks: Vec<String> = b
            .received_pps_per_sink
            .iter()
            .enumerate()
            .map(|(i, _)| json_str(&format!("participant {}", i + 1)))
            .collect();
        format!(
            "{{\"target\":{},\"size\":{},\"senders\":{},\"sinks\":[{}],\"duration_s\":{},\
             \"rate_pps\":{},\"offered_pps\":{},\"sent_pps\":{},\"shortfall_pps\":{},\
             \"received_pps_per_sink\":[{}],\"received_pps_total\":{},\"loss\":{},\
             \"loss_after_send\":{},\"cpu_user_s\":{},\"cpu_sys_s\":{},\"cpu_util\":{},\
             \"forwarder\":{},\"send_rtp_errors\":{},\"generator\":\"blindfold-load\",\
             \"latency_samples\":{},\"latency_p50_us\":{},\"latency_p99_us\":{},\
             \"latency_max_us\":{},\"drops_forwarder\":{},\"drops_sinks\":{}}}",
            json_str(&target_name(args)),
            args.fixed_size.unwrap_or(0),
            args.conferences,
            sinks.join(","),
            num(args.duration),
            num(args.fixed_pps.unwrap_or(0.0)),
            num(b.offered_pps),
            num(b.sent_pps),
            num(b.shortfall_pps),
            per_sink.join(","),
            num(total),
            num(b.loss),
            num(b.loss_after_send),
            num(u),
            num(s),
            num((u + s) / secs),
            forwarder,
            b.send_errors,
            self.latency.count(),
            us(self.latency.quantile(0.5)),
            us(self.latency.quantile(0.99)),
            us(self.latency.max()),
            opt_num(b.drops.0.map(|d| d as f64)),
            opt_num(b.drops.1.map(|d| d as f64)),
        )
    }
}

/// Optional nanoseconds as JSON microseconds.
fn us(ns: Option<u64>) -> String {
    opt_num(ns.map(|n| n as f64 / 1000.0))
}

/// An optional finite number as JSON.
fn opt_num(x: Option<f64>) -> String {
    x.map_or("null".into(), num)
}

/// A finite number as JSON (`null` otherwise).
fn num(x: f64) -> String {
    if x.is_finite() {
        format!("{x}")
    } else {
        "null".into()
    }
}

/// A JSON string literal.
fn json_str(s: &str) -> String {
    let mut o = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(o, "\\u{:04x}", c as u32);
            }
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

#[cfg(test)]
mod tests {
    use super::progress_bar;

    #[test]
    fn progress_bar_fills_with_the_run() {
        assert_eq!(progress_bar(0.0), format!("[{}]", " ".repeat(30)));
        assert_eq!(
            progress_bar(0.5),
            format!("[{}>{}]", "=".repeat(14), " ".repeat(15))
        );
        assert_eq!(progress_bar(1.0), format!("[{}]", "=".repeat(30)));
        // Past the end (the last tick can be late) or nonsense stays a full bar.
        assert_eq!(progress_bar(1.7), progress_bar(1.0));
        assert_eq!(progress_bar(-1.0), progress_bar(0.0));
    }
}
