//! Blindfold's participant side: the transport of one conference participant.
//!
//! [`Participant`] is a sans-IO engine (no sockets, no clock reads, a seeded RNG) that
//! speaks to the relay the way docs/design.md's keying model says:
//!
//! - **ICE**, controlling side, against the relay's ICE-lite agent: one candidate pair,
//!   a Binding request with USE-CANDIDATE retransmitted on RFC 5389's timers, then
//!   consent checks (RFC 7675), and a nomination of our new address when the relay's
//!   answer names one (a NAT rebinding, [`Event::AddressChanged`]). [`IceSettings`]
//!   gives the exact schedule. A relay that lost our session (it restarted) is
//!   connected to again ([`RELAY_SILENCE`]); one that holds it sends SRTCP at least
//!   once a second.
//! - **DTLS 1.2 client** (dimpl) with the participant's own ECDSA certificate, checking
//!   the relay's certificate against the SDP fingerprint. The exported keys key
//!   **SRTCP only**, hop by hop: we write with `client_write`, read with
//!   `server_write`, no MKI.
//! - **End-to-end SRTP**: our media is protected with our own master keys, every packet
//!   carrying a one-byte MKI; other senders' media is unprotected with the keys their
//!   key events installed ([`Participant::install_remote_keys`]), current and previous.
//! - **RTCP**: what a receiver and sender owe — periodic SR/RR; REMB, with a fixed value
//!   or with the estimate of [`bwe`] (GCC's receive-side delay-based estimator, fed
//!   with every incoming packet's abs-send-time: once a second, and at once when it
//!   drops by more than 3%); PLI on a new video stream or a long gap (not one that
//!   ends at a keyframe, with [`ParticipantConfig::frame_marking`]), NACK for short
//!   gaps — and events for what arrives (PLI/FIR, REMB, TMMBR, NACK, SR, report
//!   blocks).
//!
//! For tests, demos and load runs, [`source`] generates synthetic audio, thumbnail and
//! full-resolution streams (realistic sizes, timing, audio levels, frame marking and
//! keyframes) whose payloads carry a [`Probe`] inside the encryption, [`Driver`] sends
//! them through a [`Participant`], and [`measure`]'s [`Receiver`] counts loss,
//! duplicates, integrity failures and one-way latency from what another participant
//! decrypted. [`udp`] runs a [`Participant`] on a real UDP socket (the process tests and
//! `blindfold-load` drive theirs with it).
//!
//! For the participant CLI: [`ogg`] reads Ogg Opus clips to send (packets with their
//! durations, for 20 ms pacing) and writes received audio to files opusdec plays;
//! [`table`] renders the live table of what is decrypted from whom; [`report`] is the
//! JSON written at exit and the checks that judge a conference from those reports.
//!
//! Around the transport: [`conference`] is the participant's Matrix side (log in with
//! matrix-sdk, join the encrypted conference room, call the SFU and connect to the relay
//! from its answer, exchange media keys with the other members); [`sdp`] writes the
//! offer and reads the SFU's answer; [`control`] is a blocking client of the relay's
//! control socket, speaking as signaling does (for tests, demos and `blindfold-load`);
//! [`timeline`] models what a receiver's decoder could show from what it received;
//! [`procfs`] reads the CPU and memory of processes for the load tools and benchmarks.
//!
//! It reuses the relay crate's wire formats (`blindfold_relay::wire`), SRTP
//! (`blindfold_relay::srtp`) and DTLS types (`blindfold_relay::dtls`).
//!
//! # Driving it
//!
//! ```no_run
//! use std::time::Instant;
//! use blindfold_client::{Event, Participant, ParticipantConfig};
//! # fn recv() -> Option<(std::net::SocketAddr, Vec<u8>)> { None }
//! # fn send(_: std::net::SocketAddr, _: &[u8]) {}
//! # #[allow(clippy::disallowed_methods)]
//! # fn run(config: ParticipantConfig) -> Result<(), Box<dyn std::error::Error>> {
//! let mut p = Participant::new(config, Instant::now())?;
//! loop {
//!     while let Some(t) = p.poll_transmit() {
//!         send(t.dest, &t.bytes);
//!     }
//!     while let Some(ev) = p.poll_event() {
//!         match ev {
//!             Event::Connected { .. } => { /* start sending with p.send_rtp(..) */ }
//!             Event::Media(m) => { /* decode m.payload() */ }
//!             Event::Failed(reason) => return Err(reason.into()),
//!             _ => {}
//!         }
//!     }
//!     // Wait for a datagram or until p.poll_timeout(), then:
//!     let now = Instant::now();
//!     match recv() {
//!         Some((from, mut buf)) => { let _ = p.handle_datagram(now, from, &mut buf); }
//!         None => p.handle_timeout(now),
//!     }
//! }
//! # }
//! ```
#![warn(missing_docs, unreachable_pub)]

/// The receive-side bandwidth estimator, shared with the relay (which runs it on each
/// sender's uplink): [`blindfold_relay::engine::bwe`].
pub use blindfold_relay::engine::bwe;
#[cfg(any(test, feature = "fuzz"))]
#[doc(hidden)]
pub mod __fuzz;
pub mod conference;
pub mod control;
mod error;
mod ice;
pub mod measure;
mod media;
pub mod ogg;
mod participant;
pub mod procfs;
mod repair;
pub mod report;
mod rng;
pub mod sdp;
pub mod source;
pub mod table;
pub mod timeline;
pub mod udp;

pub use bwe::{Bwe, BweConfig};
pub use error::{DropReason, FailReason, ParticipantError};
pub use ice::{IceCredentials, IceSettings};
pub use measure::{Receiver, Summary};
pub use media::{MediaKind, RemoteStream, SenderId};
pub use participant::{
    Event, MAX_DATAGRAM, MAX_DROP_REASONS, MAX_NACK_EVENT, MAX_NACK_GAP, MediaPacket, OwnSsrcs,
    PROBE_MIN, Participant, ParticipantConfig, RELAY_PROBE, RELAY_SILENCE, Stats, Transmit,
    srtp_profile,
};
pub use repair::{CONGESTION_QUIET, MAX_KEYFRAME_WAIT, NACK_AGAIN_AFTER, NACK_GIVE_UP_AFTER};
pub use source::{Driver, MediaSource, Outgoing, Probe, SourceConfig, SourceKind, VideoLayer};

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_media;
#[cfg(test)]
mod tests_ogg;
