//! Benchmarks for Blindfold. The criterion benches live in `benches/benches/`; run
//! them with `cargo bench -p blindfold-benches`. Results and the commands that
//! produced them are in `docs/benchmarks.md`.
//!
//! The physical-limit baseline for the relay lives here too (Linux only):
//!
//! - [`forward`]: the bare forwarder — every datagram received on a port is sent
//!   unchanged to a fixed list of destinations, through the relay's own batched UDP
//!   path (`bind_reuseport`, `RecvBatch`, `SendBatch::push_fanout`), so a comparison
//!   with the relay isolates the relay's per-packet work. Binary: `bare-forwarder`.
//! - [`blast`]: the raw load side — counting sinks and a paced `sendmmsg` blaster.
//!   Binary: `udp-blast`.
//! - [`svg`]: hand-written delivered-vs-offered charts. Binary `relay-vs-bare` runs the
//!   ladder and draws them.

#[cfg(target_os = "linux")]
pub mod blast;
#[cfg(target_os = "linux")]
pub mod forward;
pub mod svg;

/// User and system CPU seconds this process has used so far (all threads).
#[cfg(target_os = "linux")]
pub use blindfold_client::procfs::cpu_seconds;
