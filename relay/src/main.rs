//! `blindfold-relay`: the relay process — sockets and threads around one sans-IO
//! [`Engine`] per core and the sans-IO control server.
//!
//! ```text
//! main ─ Config::load → logging → control socket (0600) → Shutdown::install
//!      → DTLS certificate (loaded or generated; its fingerprint goes in the hello)
//!      → Metrics + MetricsServer (GET /metrics)
//!      → N worker threads (shell::worker) ─┐
//!      → the control loop on the main thread (shell::control around ControlServer)
//! ```
//!
//! Channels are bounded crossbeam channels. A worker never blocks: a full peer or
//! report channel is a counted drop. The control thread never blocks either: rules wait
//! in the control server's own queues, and it answers `overloaded` when they are full.
//! A request is answered once every worker applied it.
//!
//! SIGTERM/SIGINT: every loop is woken, the control socket says `goodbye` (`shutdown`)
//! to signaling, workers leave their loops, sockets close, the process exits 0. A
//! worker that panics stops the process too, which then exits non-zero.

// The binary is the IO shell: it reads the clock (the engines never do).
#![allow(clippy::disallowed_methods)]

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::thread::JoinHandle;

use blindfold_relay::control::server::{ControlServer, Limits};
use blindfold_relay::control::{Hello, MAX_CANDIDATES};
use blindfold_relay::dtls::{DtlsCert, DtlsConfig, DtlsSettings};
use blindfold_relay::engine::{Engine, EngineConfig, ShardId};
use blindfold_relay::shell::config::{Config, ConfigError};
use blindfold_relay::shell::control::{ControlCounters, ControlLoop};
use blindfold_relay::shell::metrics::MetricsServer;
use blindfold_relay::shell::signals::Shutdown;
use blindfold_relay::shell::udp::{bind_reuseport, claim_port};
use blindfold_relay::shell::worker::{
    COMMAND_CHANNEL, EngineCounters, Link, RelayMetrics, SESSIONS, WAKER, Worker, WorkerParts,
    drop_labels,
};
use mio::{Poll, Waker};

/// Capacity of the report channel to the control thread.
const NOTIFY_CHANNEL: usize = 64 * 1024;

fn main() -> ExitCode {
    let config = match Config::load(std::env::args_os()) {
        Ok(c) => c,
        Err(ConfigError::Args(e)) => e.exit(),
        Err(e) => {
            eprintln!("blindfold-relay: {e}");
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::from(config.log_level))
        .with_writer(io::stderr)
        .init();
    match run(&config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// A start-up or fatal error, with what was being done.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {source}")]
struct Fatal {
    what: String,
    source: Box<dyn std::error::Error + Send + Sync>,
}

fn fatal<E: Into<Box<dyn std::error::Error + Send + Sync>>>(
    what: impl Into<String>,
) -> impl FnOnce(E) -> Fatal {
    let what = what.into();
    move |e| Fatal {
        what,
        source: e.into(),
    }
}

/// The kernel silently caps socket buffers at `net.core.rmem_max`/`wmem_max` (212992
/// bytes on a stock kernel) and reports double what it grants: say so when it gave less
/// than the configuration asks for, since bursts then overflow the receive buffer.
fn warn_if_buffers_capped(socket: &std::net::UdpSocket, recv: usize, send: usize) {
    let s = socket2::SockRef::from(socket);
    let granted = [s.recv_buffer_size(), s.send_buffer_size()];
    for ((what, sysctl, want), got) in [
        ("recv_buffer", "net.core.rmem_max", recv),
        ("send_buffer", "net.core.wmem_max", send),
    ]
    .into_iter()
    .zip(granted)
    {
        if let Ok(got) = got
            && got / 2 < want
        {
            tracing::warn!(
                wanted = want,
                granted = got / 2,
                "{what}: the kernel capped the socket buffer; raise {sysctl} to at least {want}"
            );
        }
    }
}

fn run(config: &Config) -> Result<(), Fatal> {
    // The control socket first: before any other thread exists (the umask is per
    // process) and so a second relay on the same path fails before binding UDP.
    let listener = bind_control_socket(&config.control_socket)?;
    let shutdown = Shutdown::install().map_err(fatal("installing signal handlers"))?;

    let cert = match &config.tls {
        Some(files) => {
            let cert = std::fs::read_to_string(&files.cert)
                .map_err(fatal(format!("reading {}", files.cert.display())))?;
            let key = std::fs::read_to_string(&files.key)
                .map_err(fatal(format!("reading {}", files.key.display())))?;
            DtlsCert::from_pem(&cert, &key).map_err(fatal("loading the DTLS certificate"))?
        }
        None => DtlsCert::generate().map_err(fatal("generating a DTLS certificate"))?,
    };
    let fingerprint = cert.fingerprint();
    tracing::info!(%fingerprint, generated = config.tls.is_none(), "DTLS certificate");
    let mut settings = DtlsSettings::default();
    if let Some(seed) = config.rng_seed {
        tracing::warn!(
            seed,
            "rng_seed is set: DTLS randoms and hashing are predictable (tests only)"
        );
        settings.insecure_rng_seed = Some(seed);
    }
    let dtls = Arc::new(DtlsConfig::new(settings).map_err(fatal("building the DTLS config"))?);
    let cert = Arc::new(cert);
    let hash_seed = config
        .rng_seed
        .unwrap_or_else(|| RandomState::new().hash_one(0x5eed_u64));

    let workers = config.workers.get();
    let metrics = RelayMetrics::new(workers, drop_labels(), &SESSIONS);
    let counters = Arc::new(ControlCounters::default());
    let engine_counters = EngineCounters::new(workers);
    let metrics_server = match config.metrics {
        Some(addr) => {
            let (m, c) = (Arc::clone(&metrics), Arc::clone(&counters));
            let e = Arc::clone(&engine_counters);
            let server = MetricsServer::spawn(addr, move |out| {
                m.render(out, true);
                e.render(out);
                c.render(out);
            })
            .map_err(fatal(format!("serving metrics on {addr}")))?;
            tracing::info!(addr = %server.local_addr(), "metrics on GET /metrics");
            Some(server)
        }
        None => None,
    };

    // Bind every worker's socket before starting any, so a bad address fails start-up,
    // and first check that nothing holds the port (another relay's SO_REUSEPORT sockets
    // would share it); with port 0, that check picks the port.
    let listen = claim_port(config.listen).map_err(|e| {
        let why = if e.kind() == std::io::ErrorKind::AddrInUse {
            format!(
                "UDP {} is in use (another relay on this port?)",
                config.listen
            )
        } else {
            format!("binding UDP {}", config.listen)
        };
        fatal(why)(e)
    })?;
    let mut sockets = Vec::with_capacity(workers);
    for _ in 0..workers {
        let s = bind_reuseport(listen, config.recv_buffer, config.send_buffer)
            .map_err(fatal(format!("binding UDP {listen}")))?;
        sockets.push(s);
    }
    warn_if_buffers_capped(&sockets[0], config.recv_buffer, config.send_buffer);
    // A public address given as a port-0 listen address is that address as bound.
    let public: Vec<SocketAddr> = config
        .public
        .iter()
        .map(|&p| if p == config.listen { listen } else { p })
        .collect();
    tracing::info!(%listen, workers, ?public, "media socket");

    let (notify_tx, notify_rx) = crossbeam_channel::bounded(NOTIFY_CHANNEL);
    let control_poll = Poll::new().map_err(fatal("creating the control poll"))?;
    let control_waker = Arc::new(
        Waker::new(control_poll.registry(), WAKER).map_err(fatal("creating the control waker"))?,
    );
    shutdown.add_waker(Arc::clone(&control_waker));

    let mut polls = Vec::with_capacity(workers);
    let mut links = Vec::with_capacity(workers);
    let mut inboxes = Vec::with_capacity(workers);
    for _ in 0..workers {
        let poll = Poll::new().map_err(fatal("creating a worker poll"))?;
        let waker =
            Arc::new(Waker::new(poll.registry(), WAKER).map_err(fatal("creating a worker waker"))?);
        shutdown.add_waker(Arc::clone(&waker));
        let (tx, rx) = crossbeam_channel::bounded(COMMAND_CHANNEL);
        polls.push(poll);
        links.push(Link {
            tx,
            waker,
            applied: Arc::new(AtomicU64::new(0)),
        });
        inboxes.push(rx);
    }

    let mut threads: Vec<JoinHandle<()>> = Vec::with_capacity(workers);
    for (i, ((socket, poll), inbox)) in sockets.into_iter().zip(polls).zip(inboxes).enumerate() {
        let mut engine_cfg = EngineConfig::new(ShardId(i as u16), cert.clone(), dtls.clone());
        engine_cfg.hash_seed = hash_seed;
        engine_cfg.silence_timeout = config.consent_timeout;
        engine_cfg.retransmit_full_bytes = config.retransmit_full_bytes;
        engine_cfg.retransmit_thumbnail_bytes = config.retransmit_thumbnail_bytes;
        engine_cfg.retransmit_age = config.retransmit_age;
        engine_cfg.nack_max_per_second = config.nack_max_per_second;
        engine_cfg.rtcp_max_per_second = config.rtcp_max_per_second;
        engine_cfg.max_audio_pps = config.max_audio_pps;
        engine_cfg.max_video_pps = config.max_video_pps;
        engine_cfg.keyframe_interval = config.keyframe_interval;
        engine_cfg.keyframe_max_per_second = config.keyframe_max_per_second;
        engine_cfg.shards = workers as u16;
        engine_cfg.speaker_hold = config.speaker_hold;
        engine_cfg.layer_choice = config.layer_choice;
        engine_cfg.layer_probe_backoff = config.layer_probe;
        engine_cfg.layer_probe_backoff_max = config.layer_probe_max;
        engine_cfg.layer_probe_padding = config.layer_probe_padding;
        engine_cfg.clamp_demote_below = f64::from(config.clamp_demote_below_percent) / 100.0;
        engine_cfg.uplink_estimation = config.uplink_estimation;
        engine_cfg.downlink_queue = config.downlink_queue;
        let worker = Worker::new(WorkerParts {
            index: i,
            engine: Engine::new(engine_cfg),
            socket,
            poll,
            inbox,
            peers: links.clone(),
            notify: notify_tx.clone(),
            control_waker: Arc::clone(&control_waker),
            metrics: Arc::clone(&metrics),
            engine_counters: Arc::clone(&engine_counters),
            shutdown: shutdown.clone(),
        });
        let thread = std::thread::Builder::new()
            .name(format!("worker-{i}"))
            .spawn(move || worker.run())
            .map_err(fatal("spawning a worker"))?;
        threads.push(thread);
    }
    drop(notify_tx);

    let mut candidates = public;
    if candidates.len() > MAX_CANDIDATES {
        tracing::warn!(
            "{} public addresses; the hello carries the first {MAX_CANDIDATES}",
            candidates.len()
        );
        candidates.truncate(MAX_CANDIDATES);
    }
    let hello = Hello::relay(
        format!("blindfold-relay/{}", env!("CARGO_PKG_VERSION")),
        fingerprint.into(),
        candidates,
    );
    let server = ControlServer::new(hello, workers, Limits::default());
    let control = ControlLoop::new(
        control_poll,
        listener,
        server,
        links,
        notify_rx,
        Arc::clone(&metrics),
        shutdown.clone(),
        counters,
    );
    let result = control.run().map_err(fatal("running the control loop"));
    // Whatever ended the control loop ends the workers too.
    shutdown.trigger();
    let _ = std::fs::remove_file(&config.control_socket);
    let mut worker_failed = false;
    for t in threads {
        worker_failed |= t.join().is_err();
    }
    drop(metrics_server);
    result?;
    if worker_failed {
        return Err(Fatal {
            what: "a worker".into(),
            source: "panicked".into(),
        });
    }
    tracing::info!("stopped");
    Ok(())
}

/// Binds the control socket at `path` with mode 0600, replacing a stale socket file a
/// previous relay left behind (but not a live one, nor a file that is not a socket).
fn bind_control_socket(path: &Path) -> Result<mio::net::UnixListener, Fatal> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(Fatal {
                    what: format!("control socket {}", path.display()),
                    source: "another process is listening on it".into(),
                });
            }
            std::fs::remove_file(path)
                .map_err(fatal(format!("removing stale {}", path.display())))?;
        }
        Ok(_) => {
            return Err(Fatal {
                what: format!("control socket {}", path.display()),
                source: "the path exists and is not a socket".into(),
            });
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(fatal(format!("inspecting {}", path.display()))(e)),
    }
    // SAFETY: `umask` only swaps the process's file-mode mask; no other thread creates
    // files yet. The socket is created 0600 rather than chmod-ed after the fact, so
    // there is no window in which another user could connect.
    let old = unsafe { libc::umask(0o177) };
    let bound = std::os::unix::net::UnixListener::bind(path);
    // SAFETY: as above; restores the previous mask.
    unsafe { libc::umask(old) };
    let listener = bound.map_err(fatal(format!("binding {}", path.display())))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(fatal(format!("chmod 0600 {}", path.display())))?;
    listener
        .set_nonblocking(true)
        .map_err(fatal("making the control socket non-blocking"))?;
    tracing::info!(path = %path.display(), "control socket");
    Ok(mio::net::UnixListener::from_std(listener))
}
