//! The relay's IO shell: the pieces the `blindfold-relay` binary composes around the
//! sans-IO engine. This is the only part of the library that touches sockets, threads,
//! signals and the environment.
//!
//! - [`udp`] (Linux): [`bind_reuseport`](udp::bind_reuseport) for the per-worker sockets
//!   sharing one port; [`RecvBatch`](udp::RecvBatch) (`recvmmsg`) and
//!   [`SendQueue`](udp::SendQueue)/[`SendBatch`](udp::SendBatch) (`sendmmsg`, zero-copy
//!   fan-out from the receive buffer). Nothing allocates per packet.
//! - [`metrics`]: lock-free per-worker counters, a Prometheus text renderer and a tiny
//!   blocking HTTP server for `GET /metrics`.
//! - [`config`]: the relay's configuration, a TOML file overridden by command-line flags.
//! - [`signals`] (Linux): SIGTERM/SIGINT set a flag and wake every worker's `mio::Waker`.
//! - [`worker`] (Linux): one worker thread — its socket, its engine and the mio loop
//!   between them; the session and drop metrics (the engine's counters are named in
//!   `EngineStats::exported`).
//! - [`control`] (Linux): the control thread's IO around the sans-IO
//!   [`ControlServer`](crate::control::server::ControlServer).
//!
//! # How the binary puts them together
//!
//! ```text
//! main: Config::load(args) → Metrics::new(workers, ..) → MetricsServer::spawn(addr, ..)
//!       → Shutdown::install() → per core: thread {
//!             socket = bind_reuseport(listen, bufs) → mio::net::UdpSocket::from_std
//!             poll, waker (registered with Shutdown and the control thread)
//!             loop { poll; if shutdown.is_set() break;
//!                    while rx.recv(&socket)? > 0 {
//!                        let mut batch = tx.batch(socket.as_fd());
//!                        for (from, buf) in rx.iter_mut() { engine.handle_datagram(now, from, buf);
//!                                                          drain poll_transmit into batch }
//!                        stats = batch.flush()?; count stats }
//!                    engine.handle_timeout(now) … } }
//! ```

// The shell is the IO layer: the one place that may read the clock.
#![allow(clippy::disallowed_methods)]

pub mod config;
#[cfg(target_os = "linux")]
pub mod control;
pub mod metrics;
#[cfg(target_os = "linux")]
pub mod signals;
#[cfg(target_os = "linux")]
pub mod udp;
#[cfg(target_os = "linux")]
pub mod worker;

/// Drives the shell's parsers (the TOML config and the metrics server's request reader)
/// on arbitrary bytes; a panic is a finding.
#[cfg(feature = "fuzz")]
#[doc(hidden)]
pub fn fuzz_one(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = config::Config::from_toml_str(text);
    }
    let _ = metrics::parse_request(data);
}
