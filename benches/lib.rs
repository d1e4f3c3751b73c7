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

/// User and system CPU seconds this process has used so far (all threads), from
/// `getrusage(RUSAGE_SELF)`.
#[cfg(target_os = "linux")]
pub fn cpu_seconds() -> (f64, f64) {
    // SAFETY: all-zero bytes are a valid `rusage` (integers and `timeval`s).
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, exclusively borrowed `rusage` for the kernel to fill.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    if rc != 0 {
        return (0.0, 0.0);
    }
    let secs = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 * 1e-6;
    (secs(ru.ru_utime), secs(ru.ru_stime))
}
