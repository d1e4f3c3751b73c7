//! Blindfold's media plane.
//!
//! This crate holds the relay: everything but [`shell`] does no IO (no sockets, threads,
//! signals or clock reads), so it is tested with plain values and simulated time.
//!
//! - [`wire`]: zero-copy views over datagrams — the RFC 7983 demultiplexer, STUN for
//!   ICE, RTP headers and their extensions, RTCP compound packets. Parsing never
//!   allocates or copies; a view borrows the caller's buffer and rejects malformed input
//!   with a typed reason.
//! - [`srtp`]: SRTP and SRTCP (RFC 3711, RFC 7714) applied in place on the caller's
//!   buffer, with the key derivation function, rollover-counter estimation, replay
//!   protection and an optional one-byte MKI selecting among master keys.
//! - [`control`]: the relay's Unix control socket: the codec (the `blindfold-control`
//!   crate, re-exported; see `docs/control-protocol.md`), the rule registry and the
//!   sans-IO control server.
//! - [`dtls`]: a DTLS 1.2 session (on dimpl), the server side of each participant session
//!   in the relay and the client side in the participant library: it authenticates the
//!   peer by its certificate fingerprint and exports the hop-by-hop SRTCP keys.
//! - [`ice`]: the ICE-lite responder (one per session).
//! - [`engine`]: the sans-IO relay engine of one worker: sessions, ICE, DTLS, fan-out,
//!   RTCP duties. The `blindfold-relay` binary drives one per core; how to drive it (what
//!   to feed it, in which order, what to drain) is in the module docs of [`engine`].
//! - [`id`]: typed identifiers (`Ssrc`, `SeqNo`, …) so a raw integer never stands for two
//!   things.
//! - [`shell`]: the IO shell the `blindfold-relay` binary runs: the `SO_REUSEPORT` sockets
//!   and batched syscalls, the worker threads, the control thread's socket, signals, the
//!   configuration and `GET /metrics`.
//!
//! # Driving the wire formats
//!
//! ```
//! use blindfold_relay::wire::{demux, Datagram};
//!
//! let stun_binding = [0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42,
//!                     1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];
//! assert!(matches!(demux(&stun_binding), Datagram::Stun(_)));
//! ```
#![warn(missing_docs, unreachable_pub)]
#![forbid(unsafe_op_in_unsafe_fn)]

pub mod control;
pub mod dtls;
pub mod engine;
pub mod ice;
pub mod id;
pub mod shell;
pub mod srtp;
pub mod wire;

#[cfg(feature = "fuzz")]
#[doc(hidden)]
pub mod __fuzz;
