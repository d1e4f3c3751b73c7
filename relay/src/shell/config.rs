//! The relay's configuration: an optional TOML file (`--config PATH`) whose keys the
//! command-line flags override, then defaults.
//!
//! | TOML key | flag | default |
//! |---|---|---|
//! | `listen` | `--listen` | `0.0.0.0:10000` |
//! | `public` (list) | `--public` (repeat) | `[listen]` if its IP is specified, else an error |
//! | `workers` | `--workers` | the number of CPUs (`available_parallelism`) |
//! | `control_socket` | `--control-socket` | `/run/blindfold/relay.sock` |
//! | `cert`, `key` | `--cert`, `--key` | none: a self-signed certificate is made at start |
//! | `metrics` | `--metrics` | `127.0.0.1:9464`; `""` disables |
//! | `recv_buffer`, `send_buffer` | `--recv-buffer`, `--send-buffer` | 4 MiB each (bytes) |
//! | `log_level` | `--log-level` | `info` |
//! | `rng_seed` | `--rng-seed` | none: OS randomness (a seed is for tests only) |
//! | `consent_timeout` | `--consent-timeout` | 30 (seconds of silence that end a session) |
//! | `retransmit_full_bytes` | `--retransmit-full-bytes` | 393216 (per full-resolution or single-layer video stream; 0: no cache) |
//! | `retransmit_thumbnail_bytes` | `--retransmit-thumbnail-bytes` | 65536 (per thumbnail) |
//! | `retransmit_ms` | `--retransmit-ms` | 1000 (how long a packet can be resent) |
//! | `nack_max_per_second` | `--nack-max-per-second` | 250 (sequence numbers one receiver may NACK per second, a second's worth at once; the rest are ignored; 0: no cap) |
//! | `rtcp_max_per_second` | `--rtcp-max-per-second` | 500 (RTCP packets one participant may send per second, a second's worth at once; the rest are dropped; 0: no cap) |
//! | `max_audio_pps` | `--max-audio-pps` | 500 (packets per second one audio stream may carry, counted per half second; the rest are dropped; 0: no cap) |
//! | `max_video_pps` | `--max-video-pps` | 5000 (the same for each video stream) |
//! | `keyframe_interval_ms` | `--keyframe-interval-ms` | 300 (one keyframe request per stream per interval) |
//! | `keyframe_max_per_second` | `--keyframe-max-per-second` | 2 (and at most this many in any second; 1 to 8) |
//! | `speaker_hold_ms` | `--speaker-hold-ms` | 1000 (no active-speaker switch within this long of the last) |
//! | `layer_choice` | `--layer-choice` | `true` (full layers only while a receiver's downlink allows; REMB to senders) |
//! | `layer_probe_ms` | `--layer-probe-ms` | 4000 (wait after a probe found the link short of a full layer, and after a failed trial of it; doubles per failed trial) |
//! | `layer_probe_max_ms` | `--layer-probe-max-ms` | 32000 (the longest wait after failed trials) |
//! | `layer_probe_padding` | `--layer-probe-padding` | `true` (a trial first sends the receiver a 20 ms probe of padding at the layer's rate, and is dropped if its link did not carry it) |
//! | `clamp_demote_below_percent` | `--clamp-demote-below-percent` | 50 (a viewer below this % of the median viewer gets the thumbnail instead of clamping the layer; 0 to 100) |
//! | `uplink_estimation` | `--uplink-estimation` | `true` (estimate the uplink of each sender without transport-cc, from its sequence numbers and abs-send-time, and keep its full layer under it) |
//! | `downlink_queue_ms` | `--downlink-queue-ms` | 100 (a receiver's round trip this far above its lowest is a queue on its downlink: its estimate comes down; 0: off) |
//!
//! Why UDP port 10000: it is below Linux's ephemeral range (32768–60999), so an outgoing
//! connection on the host never takes it, above the privileged ports, and it is the port
//! operators already open for single-port SFUs (Jitsi Videobridge uses it). The relay is
//! not a STUN/TURN server, so 3478 would mislead firewalls and operators.
//!
//! The socket buffers are capped by `net.core.rmem_max`/`wmem_max`; raise those sysctls
//! for the defaults to take effect.
//!
//! ```toml
//! listen = "0.0.0.0:10000"
//! public = ["203.0.113.7:10000"]
//! workers = 8
//! metrics = "127.0.0.1:9464"
//! log_level = "info"
//! ```

use std::ffi::OsString;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::{NonZeroU64, NonZeroUsize};
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// The default listen address (see the module docs for the port).
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 10000);
/// The default metrics address: loopback only, Prometheus' registered exporter range.
pub const DEFAULT_METRICS: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9464);
/// The default retransmission cache per full-resolution video stream: about 1 s of a
/// 3 Mbit/s layer.
pub const DEFAULT_RETRANSMIT_FULL_BYTES: usize = 384 * 1024;
/// The default retransmission cache per thumbnail: about 1 s of 500 kbit/s.
pub const DEFAULT_RETRANSMIT_THUMBNAIL_BYTES: usize = 64 * 1024;
/// The default time a cached packet may be resent: a NACK comes one round trip after the
/// loss, and after a second the receiver's jitter buffer has given up on the packet.
pub const DEFAULT_RETRANSMIT_MS: u64 = 1000;
/// The default cap on the sequence numbers one receiver may NACK per second: 5% loss of
/// 5000 packets a second, far above what a conference sends one receiver; without a cap
/// a NACK of a few bytes could have the relay resend its whole cache, again and again.
pub const DEFAULT_NACK_MAX_PER_SECOND: u32 = 250;
/// The default cap on the RTCP packets one participant may send per second: a receiver
/// of a hundred streams reports on them, NACKs and asks for keyframes in far fewer,
/// and every packet is work the relay does on its behalf (an SR goes to each receiver).
pub const DEFAULT_RTCP_MAX_PER_SECOND: u32 = 500;
/// The default cap of one audio stream's packets per second: Opus at its shortest
/// frame (2.5 ms) sends 400; at the usual 20 ms, 50.
pub const DEFAULT_MAX_AUDIO_PPS: u32 = 500;
/// The default cap of one video stream's packets per second: about 40 Mbit/s of
/// 1000-byte packets, above any camera or screen share at its keyframes and probes.
pub const DEFAULT_MAX_VIDEO_PPS: u32 = 5000;
/// The default interval of keyframe requests per stream: receivers' requests within it
/// are collapsed into one (a crowd joining must not become a keyframe storm).
pub const DEFAULT_KEYFRAME_INTERVAL_MS: u64 = 300;
/// The default cap on keyframe requests per stream in any second.
pub const DEFAULT_KEYFRAME_MAX_PER_SECOND: u32 = 2;
/// Default milliseconds after an active-speaker switch before the next may happen.
pub const DEFAULT_SPEAKER_HOLD_MS: u64 = 1000;
/// Default first wait after a failed trial of a full layer, milliseconds.
pub const DEFAULT_LAYER_PROBE_MS: u64 = 4000;
/// Default longest wait between trials, milliseconds.
pub const DEFAULT_LAYER_PROBE_MAX_MS: u64 = 32_000;
/// Default demotion bound of the rate clamp, percent of the median viewer.
pub const DEFAULT_CLAMP_DEMOTE_BELOW_PERCENT: u8 = 50;
/// The default round trip above a receiver's lowest that is a queue on its downlink.
pub const DEFAULT_DOWNLINK_QUEUE_MS: u64 = 100;
/// The default control socket path.
pub const DEFAULT_CONTROL_SOCKET: &str = "/run/blindfold/relay.sock";
/// The default silence, in seconds, that ends a session (RFC 7675's consent timeout).
pub const DEFAULT_CONSENT_TIMEOUT_SECS: u64 = 30;
/// The default socket buffer size, each way.
pub const DEFAULT_SOCKET_BUFFER: usize = 4 << 20;

/// How much to log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Errors only.
    Error,
    /// And warnings.
    Warn,
    /// And lifecycle events (the default).
    #[default]
    Info,
    /// And per-session detail.
    Debug,
    /// Everything.
    Trace,
}

impl From<LogLevel> for tracing::Level {
    fn from(l: LogLevel) -> Self {
        match l {
            LogLevel::Error => tracing::Level::ERROR,
            LogLevel::Warn => tracing::Level::WARN,
            LogLevel::Info => tracing::Level::INFO,
            LogLevel::Debug => tracing::Level::DEBUG,
            LogLevel::Trace => tracing::Level::TRACE,
        }
    }
}

/// The command-line flags; each overrides the TOML key of the same name (with `_`).
#[derive(Debug, Clone, Default, clap::Parser)]
#[command(
    name = "blindfold-relay",
    version,
    about = "Blindfold's media relay (the SFU's media plane)"
)]
pub struct Args {
    /// A TOML config file; flags override its keys.
    #[arg(long, short = 'c', value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// UDP address to bind (every worker binds it with SO_REUSEPORT).
    #[arg(long, value_name = "IP:PORT")]
    pub listen: Option<SocketAddr>,
    /// An address clients reach the relay at, put in ICE candidates (repeat for several).
    #[arg(long = "public", value_name = "IP:PORT")]
    pub public: Vec<SocketAddr>,
    /// Worker threads (one per core is right).
    #[arg(long)]
    pub workers: Option<NonZeroUsize>,
    /// Path of the control socket the signaling service connects to.
    #[arg(long, value_name = "PATH")]
    pub control_socket: Option<PathBuf>,
    /// PEM certificate for DTLS (with --key); without both, one is generated at start.
    #[arg(long, value_name = "PATH")]
    pub cert: Option<PathBuf>,
    /// PEM private key for DTLS (with --cert).
    #[arg(long, value_name = "PATH")]
    pub key: Option<PathBuf>,
    /// TCP address for Prometheus `GET /metrics`; "" disables.
    #[arg(long, value_name = "IP:PORT")]
    pub metrics: Option<String>,
    /// SO_RCVBUF of each worker's socket, bytes.
    #[arg(long, value_name = "BYTES")]
    pub recv_buffer: Option<usize>,
    /// SO_SNDBUF of each worker's socket, bytes.
    #[arg(long, value_name = "BYTES")]
    pub send_buffer: Option<usize>,
    /// Log level.
    #[arg(long, value_enum)]
    pub log_level: Option<LogLevel>,
    /// Seed for DTLS's randoms (cookies included) and the engine's hash tables — tests
    /// only: it makes them predictable.
    #[arg(long)]
    pub rng_seed: Option<u64>,
    /// Seconds without a valid packet after which a session ends (also the time a new
    /// session has for its first valid ICE check).
    #[arg(long, value_name = "SECS")]
    pub consent_timeout: Option<NonZeroU64>,
    /// Bytes of recent packets kept per full-resolution or single-layer video stream to
    /// answer NACKs (0: none; every NACK goes to the sender).
    #[arg(long, value_name = "BYTES")]
    pub retransmit_full_bytes: Option<usize>,
    /// The same per simulcast thumbnail.
    #[arg(long, value_name = "BYTES")]
    pub retransmit_thumbnail_bytes: Option<usize>,
    /// Milliseconds a kept packet may be resent.
    #[arg(long, value_name = "MS")]
    pub retransmit_ms: Option<NonZeroU64>,
    /// Sequence numbers one receiver may NACK per second over all the streams it gets
    /// (a second's worth at once); the rest are neither resent nor asked of the sender
    /// (0: no cap).
    #[arg(long, value_name = "N")]
    pub nack_max_per_second: Option<u32>,
    /// RTCP packets (inside its compounds) one participant may send per second, a
    /// second's worth at once; the rest are dropped (0: no cap).
    #[arg(long, value_name = "N")]
    pub rtcp_max_per_second: Option<u32>,
    /// Packets per second one audio stream may carry, counted per half second; the rest
    /// are dropped before anything reads them (0: no cap).
    #[arg(long, value_name = "N")]
    pub max_audio_pps: Option<u32>,
    /// The same for each video stream.
    #[arg(long, value_name = "N")]
    pub max_video_pps: Option<u32>,
    /// However many receivers ask, one keyframe request per stream reaches its sender
    /// per this many milliseconds.
    #[arg(long, value_name = "MS")]
    pub keyframe_interval_ms: Option<NonZeroU64>,
    /// And at most this many per stream in any second (1 to 8).
    #[arg(long, value_name = "N")]
    pub keyframe_max_per_second: Option<u32>,
    /// Milliseconds after an active-speaker switch before the next may happen (0: any
    /// time a challenger qualifies).
    #[arg(long, value_name = "MS")]
    pub speaker_hold_ms: Option<u64>,
    /// Layer choice and rate clamping: a receiver gets a full layer it subscribes to
    /// only while its downlink allows, and senders get REMB (false: every subscriber
    /// gets every subscribed layer).
    #[arg(long, value_name = "BOOL")]
    pub layer_choice: Option<bool>,
    /// Uplink estimation: each sender's uplink is estimated from abs-send-time and its
    /// full layer asked to fit under it (false: only its viewers limit it).
    #[arg(long, value_name = "BOOL")]
    pub uplink_estimation: Option<bool>,
    /// A receiver's round trip this many milliseconds above its lowest is a queue on
    /// its downlink, which brings its estimate down (0: no queue check).
    #[arg(long, value_name = "MS")]
    pub downlink_queue_ms: Option<u64>,
    /// Milliseconds to wait before the next trial of a full layer after a probe found
    /// the link short of it, and after a failed trial (that wait doubles per failed
    /// trial).
    #[arg(long, value_name = "MS")]
    pub layer_probe_ms: Option<NonZeroU64>,
    /// The longest wait after failed trials, milliseconds.
    #[arg(long, value_name = "MS")]
    pub layer_probe_max_ms: Option<NonZeroU64>,
    /// A trial of a full layer first probes the receiver's link with padding at the
    /// layer's rate, and is dropped if the link did not carry it (false: blind trials).
    #[arg(long, value_name = "BOOL")]
    pub layer_probe_padding: Option<bool>,
    /// A viewer whose downlink is below this percentage of the median viewer's gets
    /// the thumbnail instead of clamping the sender's full layer to it (0 to 100).
    #[arg(long, value_name = "PERCENT")]
    pub clamp_demote_below_percent: Option<u8>,
}

/// The TOML file: every key optional, unknown keys rejected.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<SocketAddr>,
    public: Option<Vec<SocketAddr>>,
    workers: Option<NonZeroUsize>,
    control_socket: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    metrics: Option<String>,
    recv_buffer: Option<usize>,
    send_buffer: Option<usize>,
    log_level: Option<LogLevel>,
    rng_seed: Option<u64>,
    consent_timeout: Option<NonZeroU64>,
    retransmit_full_bytes: Option<usize>,
    retransmit_thumbnail_bytes: Option<usize>,
    retransmit_ms: Option<NonZeroU64>,
    nack_max_per_second: Option<u32>,
    rtcp_max_per_second: Option<u32>,
    max_audio_pps: Option<u32>,
    max_video_pps: Option<u32>,
    keyframe_interval_ms: Option<NonZeroU64>,
    keyframe_max_per_second: Option<u32>,
    speaker_hold_ms: Option<u64>,
    layer_choice: Option<bool>,
    layer_probe_ms: Option<NonZeroU64>,
    layer_probe_max_ms: Option<NonZeroU64>,
    layer_probe_padding: Option<bool>,
    clamp_demote_below_percent: Option<u8>,
    uplink_estimation: Option<bool>,
    downlink_queue_ms: Option<u64>,
}

/// The DTLS certificate and key files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// The resolved configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Config {
    /// UDP address every worker binds.
    pub listen: SocketAddr,
    /// Addresses for the ICE candidates (at least one, none unspecified; port 0 only as
    /// `listen` itself, which stands for the port `listen` is bound to).
    pub public: Vec<SocketAddr>,
    /// Worker threads.
    pub workers: NonZeroUsize,
    /// Control socket path.
    pub control_socket: PathBuf,
    /// Certificate and key, or `None` to generate a self-signed pair at start.
    pub tls: Option<TlsFiles>,
    /// Metrics HTTP address, or `None` when disabled.
    pub metrics: Option<SocketAddr>,
    /// SO_RCVBUF per socket, bytes (0 keeps the OS default).
    pub recv_buffer: usize,
    /// SO_SNDBUF per socket, bytes (0 keeps the OS default).
    pub send_buffer: usize,
    /// Log level.
    pub log_level: LogLevel,
    /// Deterministic RNG seed (tests only).
    pub rng_seed: Option<u64>,
    /// Silence that ends a session.
    pub consent_timeout: Duration,
    /// Retransmission cache per full-resolution or single-layer video stream, bytes.
    pub retransmit_full_bytes: usize,
    /// Retransmission cache per thumbnail, bytes.
    pub retransmit_thumbnail_bytes: usize,
    /// How long a cached packet may be resent.
    pub retransmit_age: Duration,
    /// Sequence numbers one receiver may NACK per second (0: no cap).
    pub nack_max_per_second: u32,
    /// RTCP packets one participant may send per second (0: no cap).
    pub rtcp_max_per_second: u32,
    /// Packets per second one audio stream may carry (0: no cap).
    pub max_audio_pps: u32,
    /// Packets per second one video stream may carry (0: no cap).
    pub max_video_pps: u32,
    /// One keyframe request per stream per this interval.
    pub keyframe_interval: Duration,
    /// At most this many keyframe requests per stream in any second.
    pub keyframe_max_per_second: u32,
    /// No active-speaker switch within this long of the last one.
    pub speaker_hold: Duration,
    /// Layer choice and rate clamping on.
    pub layer_choice: bool,
    /// First wait after a failed trial of a full layer.
    pub layer_probe: Duration,
    /// Longest wait between trials.
    pub layer_probe_max: Duration,
    /// Trials probe the link with padding first.
    pub layer_probe_padding: bool,
    /// Demotion bound of the rate clamp, percent of the median viewer (0 to 100).
    pub clamp_demote_below_percent: u8,
    /// Uplink estimation on.
    pub uplink_estimation: bool,
    /// The round trip above a receiver's lowest that is a queue (`None`: no check).
    pub downlink_queue: Option<Duration>,
}

/// Why the configuration was rejected. Each names the key at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// Bad command line, or `--help`/`--version` (call `.exit()` on it to print and exit).
    #[error(transparent)]
    Args(#[from] clap::Error),
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The config file is not valid TOML, has an unknown key, or a key of the wrong type;
    /// the message names the key and line.
    #[error("config file {path}: {message}")]
    Parse {
        /// The file (`<string>` when parsed from text).
        path: PathBuf,
        /// The TOML parser's message.
        message: String,
    },
    /// No `public` address and `listen` is unspecified (0.0.0.0 or ::).
    #[error(
        "`listen` is {listen}, which clients cannot reach: set `public` (TOML) or --public to the \
         address(es) clients reach this relay at"
    )]
    NoPublicAddress {
        /// The listen address.
        listen: SocketAddr,
    },
    /// A `public` address is unspecified or has port 0.
    #[error("`public` address {addr} is not usable: it needs a specific IP and a non-zero port")]
    BadPublicAddress {
        /// The address.
        addr: SocketAddr,
    },
    /// `metrics` is neither an `ip:port` nor empty.
    #[error("`metrics` value {value:?} is not an ip:port (use \"\" to disable)")]
    BadMetricsAddress {
        /// The value given.
        value: String,
    },
    /// `clamp_demote_below_percent` is above 100.
    #[error("`clamp_demote_below_percent` is {value}; it must be 0 to 100")]
    BadDemotePercent {
        /// The value given.
        value: u8,
    },
    /// `keyframe_max_per_second` is outside 1..=8.
    #[error("`keyframe_max_per_second` is {value}; it must be 1 to 8")]
    BadKeyframeCap {
        /// The value given.
        value: u32,
    },
    /// A value past what the relay can use (an `Instant` sum that would overflow, a
    /// cache no host has memory for, a socket buffer the kernel takes as a C int).
    #[error("`{key}` is {value}; it must be at most {max}")]
    TooLarge {
        /// The key.
        key: &'static str,
        /// The value given.
        value: u64,
        /// The largest accepted.
        max: u64,
    },
    /// A `public` address of the other IP family than `listen`: the relay binds only
    /// `listen`'s family (IPv6 sockets are IPv6-only), so nothing would answer there.
    #[error(
        "`public` address {addr} is not of the family of `listen` ({listen}), which is the only one the relay binds"
    )]
    PublicFamily {
        /// The address.
        addr: SocketAddr,
        /// The listen address.
        listen: SocketAddr,
    },
    /// `listen` or a `public` address is an IPv4-mapped IPv6 address.
    #[error(
        "`{key}` address {addr} is IPv4-mapped IPv6: write it as IPv4 (the relay's IPv6 sockets take no IPv4 traffic)"
    )]
    MappedAddress {
        /// `listen` or `public`.
        key: &'static str,
        /// The address.
        addr: SocketAddr,
    },
    /// Only one of `cert` and `key` was given.
    #[error(
        "`{given}` is set but `{missing}` is not: give both, or neither to generate a certificate"
    )]
    IncompleteTls {
        /// The key that was set.
        given: &'static str,
        /// The key that is missing.
        missing: &'static str,
    },
}

impl Config {
    /// Parses the command line (`args`, program name first), reads the `--config` file if
    /// any, and resolves flags over file over defaults.
    ///
    /// # Errors
    /// Any [`ConfigError`]: bad flags (and `--help`), an unreadable or invalid file (an
    /// unknown key is an error), or values that cannot work together.
    pub fn load<I, T>(args: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let args = <Args as clap::Parser>::try_parse_from(args)?;
        Self::from_args(args)
    }

    /// Resolves already parsed flags, reading the `--config` file if named.
    ///
    /// # Errors
    /// As [`load`](Self::load), without the command-line errors.
    pub fn from_args(args: Args) -> Result<Self, ConfigError> {
        let file = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                parse_file(&text, path.clone())?
            }
            None => FileConfig::default(),
        };
        resolve(args, file)
    }

    /// Resolves a TOML document with no flags (tests, fuzzing).
    ///
    /// # Errors
    /// As [`from_args`](Self::from_args).
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        resolve(
            Args::default(),
            parse_file(text, PathBuf::from("<string>"))?,
        )
    }
}

fn parse_file(text: &str, path: PathBuf) -> Result<FileConfig, ConfigError> {
    toml::from_str(text).map_err(|e: toml::de::Error| ConfigError::Parse {
        path,
        message: e.to_string(),
    })
}

fn resolve(args: Args, file: FileConfig) -> Result<Config, ConfigError> {
    let listen = args.listen.or(file.listen).unwrap_or(DEFAULT_LISTEN);
    let public = if !args.public.is_empty() {
        args.public
    } else if let Some(p) = file.public.filter(|p| !p.is_empty()) {
        p
    } else if listen.ip().is_unspecified() {
        return Err(ConfigError::NoPublicAddress { listen });
    } else {
        // The listen address as bound: with port 0, the relay fills in the port the
        // kernel gave it.
        vec![listen]
    };
    if let Some(&addr) = public
        .iter()
        .find(|&&a| a.ip().is_unspecified() || (a.port() == 0 && a != listen))
    {
        return Err(ConfigError::BadPublicAddress { addr });
    }
    let mapped = |a: &SocketAddr| match a.ip() {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().is_some(),
        IpAddr::V4(_) => false,
    };
    if mapped(&listen) {
        let (key, addr) = ("listen", listen);
        return Err(ConfigError::MappedAddress { key, addr });
    }
    if let Some(&addr) = public.iter().find(|a| mapped(a)) {
        let key = "public";
        return Err(ConfigError::MappedAddress { key, addr });
    }
    if let Some(&addr) = public.iter().find(|a| a.is_ipv4() != listen.is_ipv4()) {
        return Err(ConfigError::PublicFamily { addr, listen });
    }
    let workers = args
        .workers
        .or(file.workers)
        .unwrap_or_else(|| std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN));
    let tls = match (args.cert.or(file.cert), args.key.or(file.key)) {
        (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
        (None, None) => None,
        (Some(_), None) => {
            return Err(ConfigError::IncompleteTls {
                given: "cert",
                missing: "key",
            });
        }
        (None, Some(_)) => {
            return Err(ConfigError::IncompleteTls {
                given: "key",
                missing: "cert",
            });
        }
    };
    let metrics = match args.metrics.or(file.metrics) {
        None => Some(DEFAULT_METRICS),
        Some(s) if s.trim().is_empty() => None,
        Some(s) => Some(
            s.trim()
                .parse()
                .map_err(|_| ConfigError::BadMetricsAddress { value: s })?,
        ),
    };
    let keyframe_max_per_second = args
        .keyframe_max_per_second
        .or(file.keyframe_max_per_second)
        .unwrap_or(DEFAULT_KEYFRAME_MAX_PER_SECOND);
    if !(1..=8).contains(&keyframe_max_per_second) {
        return Err(ConfigError::BadKeyframeCap {
            value: keyframe_max_per_second,
        });
    }
    let clamp_demote_below_percent = args
        .clamp_demote_below_percent
        .or(file.clamp_demote_below_percent)
        .unwrap_or(DEFAULT_CLAMP_DEMOTE_BELOW_PERCENT);
    if clamp_demote_below_percent > 100 {
        return Err(ConfigError::BadDemotePercent {
            value: clamp_demote_below_percent,
        });
    }
    let cfg = Config {
        listen,
        public,
        workers,
        control_socket: args
            .control_socket
            .or(file.control_socket)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CONTROL_SOCKET)),
        tls,
        metrics,
        recv_buffer: args
            .recv_buffer
            .or(file.recv_buffer)
            .unwrap_or(DEFAULT_SOCKET_BUFFER),
        send_buffer: args
            .send_buffer
            .or(file.send_buffer)
            .unwrap_or(DEFAULT_SOCKET_BUFFER),
        log_level: args.log_level.or(file.log_level).unwrap_or_default(),
        rng_seed: args.rng_seed.or(file.rng_seed),
        consent_timeout: Duration::from_secs(
            args.consent_timeout
                .or(file.consent_timeout)
                .map_or(DEFAULT_CONSENT_TIMEOUT_SECS, NonZeroU64::get),
        ),
        retransmit_full_bytes: args
            .retransmit_full_bytes
            .or(file.retransmit_full_bytes)
            .unwrap_or(DEFAULT_RETRANSMIT_FULL_BYTES),
        retransmit_thumbnail_bytes: args
            .retransmit_thumbnail_bytes
            .or(file.retransmit_thumbnail_bytes)
            .unwrap_or(DEFAULT_RETRANSMIT_THUMBNAIL_BYTES),
        retransmit_age: Duration::from_millis(
            args.retransmit_ms
                .or(file.retransmit_ms)
                .map_or(DEFAULT_RETRANSMIT_MS, NonZeroU64::get),
        ),
        nack_max_per_second: args
            .nack_max_per_second
            .or(file.nack_max_per_second)
            .unwrap_or(DEFAULT_NACK_MAX_PER_SECOND),
        rtcp_max_per_second: args
            .rtcp_max_per_second
            .or(file.rtcp_max_per_second)
            .unwrap_or(DEFAULT_RTCP_MAX_PER_SECOND),
        max_audio_pps: args
            .max_audio_pps
            .or(file.max_audio_pps)
            .unwrap_or(DEFAULT_MAX_AUDIO_PPS),
        max_video_pps: args
            .max_video_pps
            .or(file.max_video_pps)
            .unwrap_or(DEFAULT_MAX_VIDEO_PPS),
        keyframe_interval: Duration::from_millis(
            args.keyframe_interval_ms
                .or(file.keyframe_interval_ms)
                .map_or(DEFAULT_KEYFRAME_INTERVAL_MS, NonZeroU64::get),
        ),
        keyframe_max_per_second,
        speaker_hold: Duration::from_millis(
            args.speaker_hold_ms
                .or(file.speaker_hold_ms)
                .unwrap_or(DEFAULT_SPEAKER_HOLD_MS),
        ),
        layer_choice: args.layer_choice.or(file.layer_choice).unwrap_or(true),
        layer_probe: Duration::from_millis(
            args.layer_probe_ms
                .or(file.layer_probe_ms)
                .map_or(DEFAULT_LAYER_PROBE_MS, NonZeroU64::get),
        ),
        layer_probe_max: Duration::from_millis(
            args.layer_probe_max_ms
                .or(file.layer_probe_max_ms)
                .map_or(DEFAULT_LAYER_PROBE_MAX_MS, NonZeroU64::get),
        ),
        layer_probe_padding: args
            .layer_probe_padding
            .or(file.layer_probe_padding)
            .unwrap_or(true),
        clamp_demote_below_percent,
        uplink_estimation: args
            .uplink_estimation
            .or(file.uplink_estimation)
            .unwrap_or(true),
        downlink_queue: match args.downlink_queue_ms.or(file.downlink_queue_ms) {
            Some(0) => None,
            ms => Some(Duration::from_millis(
                ms.unwrap_or(DEFAULT_DOWNLINK_QUEUE_MS),
            )),
        },
    };
    check_sizes(&cfg)?;
    Ok(cfg)
}

/// The largest values the relay takes for settings with no natural bound.
const MAX_WORKERS: u64 = 1024;
const MAX_SOCKET_BUFFER: u64 = i32::MAX as u64;
const MAX_RETRANSMIT_BYTES: u64 = 64 << 20;
/// An hour, for every duration setting: far past any useful value, far from overflowing
/// an `Instant`.
const MAX_DURATION: Duration = Duration::from_secs(3600);

/// Refuses values past what the relay can use ([`ConfigError::TooLarge`]).
fn check_sizes(c: &Config) -> Result<(), ConfigError> {
    let durations = [
        ("consent_timeout", c.consent_timeout),
        ("retransmit_ms", c.retransmit_age),
        ("keyframe_interval_ms", c.keyframe_interval),
        ("speaker_hold_ms", c.speaker_hold),
        ("layer_probe_ms", c.layer_probe),
        ("layer_probe_max_ms", c.layer_probe_max),
        ("downlink_queue_ms", c.downlink_queue.unwrap_or_default()),
    ];
    for (key, d) in durations {
        if d > MAX_DURATION {
            let (value, max) = match key {
                "consent_timeout" => (d.as_secs(), MAX_DURATION.as_secs()),
                _ => (d.as_millis() as u64, MAX_DURATION.as_millis() as u64),
            };
            return Err(ConfigError::TooLarge { key, value, max });
        }
    }
    let sizes = [
        ("workers", c.workers.get() as u64, MAX_WORKERS),
        ("recv_buffer", c.recv_buffer as u64, MAX_SOCKET_BUFFER),
        ("send_buffer", c.send_buffer as u64, MAX_SOCKET_BUFFER),
        (
            "retransmit_full_bytes",
            c.retransmit_full_bytes as u64,
            MAX_RETRANSMIT_BYTES,
        ),
        (
            "retransmit_thumbnail_bytes",
            c.retransmit_thumbnail_bytes as u64,
            MAX_RETRANSMIT_BYTES,
        ),
    ];
    for (key, value, max) in sizes {
        if value > max {
            return Err(ConfigError::TooLarge { key, value, max });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(args: &[&str]) -> Result<Config, ConfigError> {
        Config::load(std::iter::once("blindfold-relay").chain(args.iter().copied()))
    }

    #[test]
    fn defaults_with_a_public_address() {
        let c = load(&["--public", "203.0.113.7:10000"]).unwrap();
        assert_eq!(c.listen, DEFAULT_LISTEN);
        assert_eq!(c.public, vec!["203.0.113.7:10000".parse().unwrap()]);
        assert_eq!(c.workers, std::thread::available_parallelism().unwrap());
        assert_eq!(c.control_socket, PathBuf::from("/run/blindfold/relay.sock"));
        assert_eq!(c.tls, None);
        assert_eq!(c.metrics, Some(DEFAULT_METRICS));
        assert_eq!((c.recv_buffer, c.send_buffer), (4 << 20, 4 << 20));
        assert_eq!(c.log_level, LogLevel::Info);
        assert_eq!(c.rng_seed, None);
        assert_eq!(c.consent_timeout, Duration::from_secs(30));
        assert_eq!(c.retransmit_full_bytes, 384 * 1024);
        assert_eq!(c.retransmit_thumbnail_bytes, 64 * 1024);
        assert_eq!(c.retransmit_age, Duration::from_secs(1));
        assert_eq!(c.nack_max_per_second, 250);
        assert_eq!(c.rtcp_max_per_second, 500);
        assert_eq!((c.max_audio_pps, c.max_video_pps), (500, 5000));
        assert_eq!(c.keyframe_interval, Duration::from_millis(300));
        assert_eq!(c.keyframe_max_per_second, 2);
        assert_eq!(c.speaker_hold, Duration::from_secs(1));
        assert!(c.layer_choice);
        assert_eq!(c.layer_probe, Duration::from_secs(4));
        assert_eq!(c.layer_probe_max, Duration::from_secs(32));
        assert!(c.layer_probe_padding);
        assert_eq!(c.clamp_demote_below_percent, 50);
        assert_eq!(c.downlink_queue, Some(Duration::from_millis(100)));
        assert!(c.uplink_estimation);
        let e = load(&[
            "--public",
            "203.0.113.7:1",
            "--clamp-demote-below-percent",
            "101",
        ]);
        assert!(matches!(
            e,
            Err(ConfigError::BadDemotePercent { value: 101 })
        ));
        let c = load(&["--public", "203.0.113.7:1", "--layer-choice", "false"]).unwrap();
        assert!(!c.layer_choice);
        let c = load(&["--public", "203.0.113.7:1", "--uplink-estimation", "false"]).unwrap();
        assert!(!c.uplink_estimation);
        let c = load(&[
            "--public",
            "203.0.113.7:1",
            "--layer-probe-padding",
            "false",
        ])
        .unwrap();
        assert!(!c.layer_probe_padding);
    }

    #[test]
    fn specific_listen_address_is_the_default_public_address() {
        let c = load(&["--listen", "192.0.2.1:5000"]).unwrap();
        assert_eq!(c.public, vec!["192.0.2.1:5000".parse().unwrap()]);
        // Port 0: the port the kernel gives (filled in when the relay binds), but a
        // port-0 public address of its own is still an error.
        let c = load(&["--listen", "127.0.0.1:0"]).unwrap();
        assert_eq!(c.public, vec![c.listen]);
        let e = load(&["--listen", "127.0.0.1:0", "--public", "192.0.2.1:0"]).unwrap_err();
        assert!(matches!(e, ConfigError::BadPublicAddress { .. }), "{e}");
    }

    /// An IPv4-mapped address would bind an IPv6-only socket no IPv4 datagram reaches,
    /// or announce a candidate nothing answers at.
    #[test]
    fn ipv4_mapped_addresses_are_refused() {
        let e = load(&[
            "--listen",
            "[::]:5000",
            "--public",
            "[::ffff:203.0.113.7]:5000",
        ])
        .unwrap_err();
        assert!(
            matches!(e, ConfigError::MappedAddress { key: "public", .. }),
            "{e}"
        );
        assert!(e.to_string().contains("write it as IPv4"), "{e}");
        let e = load(&["--listen", "[::ffff:127.0.0.1]:5000"]).unwrap_err();
        assert!(
            matches!(e, ConfigError::MappedAddress { key: "listen", .. }),
            "{e}"
        );
        assert!(load(&["--listen", "[::]:5000", "--public", "[2001:db8::7]:5000"]).is_ok());
    }

    #[test]
    fn missing_public_address_is_an_error_that_says_what_to_set() {
        let e = load(&[]).unwrap_err();
        assert!(matches!(e, ConfigError::NoPublicAddress { .. }), "{e}");
        assert!(e.to_string().contains("--public"), "{e}");
        let e = load(&["--listen", "[::]:10000"]).unwrap_err();
        assert!(matches!(e, ConfigError::NoPublicAddress { .. }), "{e}");
        let e = load(&["--public", "0.0.0.0:10000"]).unwrap_err();
        assert!(matches!(e, ConfigError::BadPublicAddress { .. }), "{e}");
        let e = load(&["--public", "192.0.2.1:0"]).unwrap_err();
        assert!(matches!(e, ConfigError::BadPublicAddress { .. }), "{e}");
    }

    #[test]
    fn toml_file_then_flags_override() {
        let dir = std::env::temp_dir().join(format!("blindfold-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("relay.toml");
        std::fs::write(
            &path,
            r#"
listen = "0.0.0.0:4000"
public = ["198.51.100.1:4000", "198.51.100.2:4000"]
workers = 3
control_socket = "/tmp/relay.sock"
cert = "/etc/relay/cert.pem"
key = "/etc/relay/key.pem"
metrics = ""
recv_buffer = 1048576
send_buffer = 2097152
log_level = "debug"
rng_seed = 7
"#,
        )
        .unwrap();
        let p = path.to_str().unwrap();
        let c = load(&["-c", p]).unwrap();
        assert_eq!(c.listen, "0.0.0.0:4000".parse().unwrap());
        assert_eq!(c.public.len(), 2);
        assert_eq!(c.workers.get(), 3);
        assert_eq!(c.control_socket, PathBuf::from("/tmp/relay.sock"));
        assert_eq!(
            c.tls,
            Some(TlsFiles {
                cert: "/etc/relay/cert.pem".into(),
                key: "/etc/relay/key.pem".into()
            })
        );
        assert_eq!(c.metrics, None);
        assert_eq!((c.recv_buffer, c.send_buffer), (1 << 20, 2 << 20));
        assert_eq!(c.log_level, LogLevel::Debug);
        assert_eq!(c.rng_seed, Some(7));

        let c = load(&[
            "--config",
            p,
            "--workers",
            "5",
            "--public",
            "203.0.113.9:4000",
            "--metrics",
            "127.0.0.1:9999",
            "--log-level",
            "warn",
            "--recv-buffer",
            "65536",
        ])
        .unwrap();
        assert_eq!(c.workers.get(), 5);
        assert_eq!(c.public, vec!["203.0.113.9:4000".parse().unwrap()]);
        assert_eq!(c.metrics, Some("127.0.0.1:9999".parse().unwrap()));
        assert_eq!(c.log_level, LogLevel::Warn);
        assert_eq!(c.recv_buffer, 65536);
        assert_eq!(c.send_buffer, 2 << 20, "not overridden");
        assert_eq!(c.listen, "0.0.0.0:4000".parse().unwrap(), "not overridden");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn unknown_key_is_named() {
        let e =
            Config::from_toml_str("listen = \"127.0.0.1:1\"\nlisten_adress = \"x\"\n").unwrap_err();
        assert!(matches!(e, ConfigError::Parse { .. }));
        assert!(e.to_string().contains("listen_adress"), "{e}");
    }

    #[test]
    fn bad_values_are_named() {
        let e = Config::from_toml_str("listen = \"not an address\"").unwrap_err();
        assert!(e.to_string().contains("listen"), "{e}");
        let e = Config::from_toml_str("listen = \"127.0.0.1:1\"\nworkers = 0").unwrap_err();
        assert!(e.to_string().contains("workers"), "{e}");
        let e =
            Config::from_toml_str("listen = \"127.0.0.1:1\"\nlog_level = \"loud\"").unwrap_err();
        assert!(e.to_string().contains("log_level"), "{e}");
        let e = Config::from_toml_str("listen = \"127.0.0.1:1\"\nmetrics = \"nope\"").unwrap_err();
        assert!(matches!(e, ConfigError::BadMetricsAddress { .. }), "{e}");
        let e = Config::from_toml_str("listen = \"127.0.0.1:1\"\nkeyframe_max_per_second = 9")
            .unwrap_err();
        assert!(e.to_string().contains("keyframe_max_per_second"), "{e}");
        let e = Config::from_toml_str("listen = \"127.0.0.1:1\"\ncert = \"c.pem\"").unwrap_err();
        assert!(
            matches!(
                e,
                ConfigError::IncompleteTls {
                    given: "cert",
                    missing: "key"
                }
            ),
            "{e}"
        );
        // Values past what the relay can use, each named.
        for (line, key) in [
            ("consent_timeout = 9223372036854775807", "consent_timeout"),
            (
                "retransmit_full_bytes = 4294967295",
                "retransmit_full_bytes",
            ),
            ("recv_buffer = 4294967296", "recv_buffer"),
            ("workers = 65537", "workers"),
            ("speaker_hold_ms = 18446744073709551615", "speaker_hold_ms"),
        ] {
            let e =
                Config::from_toml_str(&format!("listen = \"127.0.0.1:1\"\n{line}")).unwrap_err();
            assert!(
                matches!(e, ConfigError::TooLarge { key: k, .. } if k == key),
                "{line}: {e}"
            );
        }
        let e = Config::from_toml_str(
            "listen = \"0.0.0.0:10000\"\npublic = [\"203.0.113.7:10000\", \"[2001:db8::7]:10000\"]",
        )
        .unwrap_err();
        assert!(matches!(e, ConfigError::PublicFamily { .. }), "{e}");
        let e = load(&["--config", "/nonexistent/relay.toml"]).unwrap_err();
        assert!(matches!(e, ConfigError::Read { .. }), "{e}");
        let e = load(&["--bogus"]).unwrap_err();
        assert!(matches!(e, ConfigError::Args(_)), "{e}");
    }
}
