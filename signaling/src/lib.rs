//! Blindfold's control plane: the SFU's Matrix user.
//!
//! `blindfold-signaling` logs in as the SFU's Matrix account, joins the conference rooms
//! and direct chats it is invited to (by users its allow-list admits), and answers each
//! VoIP v1 `m.call.invite` that names a live conference of a room the caller is joined
//! to: it creates the caller's session on the relay over the relay's control socket and
//! sends `m.call.answer` with the relay's ICE-lite credentials, DTLS fingerprint and
//! candidates. Everything else becomes an `m.call.hangup` whose
//! `org.matrix.msc2359.reason` says why. `docs/protocol.md` is the contract.
//!
//! The SFU account never has end-to-end-encryption keys (so no participant ever shares
//! a media key with it): this crate has no code that could create or upload one, and
//! the service checks the account's devices on the homeserver at start-up, after each
//! login and every five minutes, and stops if any has keys.
//!
//! # Parts
//!
//! - [`core`]: the call logic, sans-IO — sync batches and relay notifications in,
//!   actions out; deterministic, unit-tested without a homeserver.
//! - [`sdp`]: offers checked and turned into relay session specs; answers written.
//! - [`events`]: the Matrix event contents read and written.
//! - [`sync`]: the `/sync` response, kept raw per event so one bad event is skipped.
//! - [`matrix`]: the client-server API calls the account makes.
//! - [`relay_link`]: the relay's control socket, with reconnect and snapshot.
//! - [`store`]: SQLite: the Matrix session, the sync token, the live calls.
//! - [`service`]: the IO shell tying them together; [`config`], [`metrics`].
//!
//! # Driving the core
//!
//! The service does this for real; a test or another shell does the same:
//!
//! ```
//! use blindfold_signaling::core::{Action, Core, CoreConfig};
//! use blindfold_signaling::sync::SyncResponse;
//!
//! /// Feeds each `(batch, wall-clock ms)` from the homeserver and carries out the actions.
//! fn drive(batches: impl IntoIterator<Item = (SyncResponse, u64)>) {
//!     let rng = Box::new(|b: &mut [u8]| aws_lc_rs::rand::fill(b).expect("OS randomness"));
//!     let mut core = Core::new(CoreConfig::new("@sfu:example.org", "SFUDEVICE"), rng);
//!     for (batch, now_ms) in batches {
//!         core.handle_sync(&batch, now_ms, false);
//!         while let Some(action) = core.poll_action() {
//!             match action {
//!                 Action::Admit { call, answer, .. } => { /* relay upsert, then send answer */ }
//!                 other => { /* join, send, relay request, persist … */ let _ = other; }
//!             }
//!         }
//!     }
//! }
//! # drive(Vec::new());
//! ```
#![warn(missing_docs, unreachable_pub)]

pub mod config;
pub mod core;
pub mod events;
pub mod matrix;
pub mod metrics;
pub mod relay_link;
pub mod sdp;
pub mod service;
pub mod store;
pub mod sync;

#[cfg(feature = "fuzz")]
#[doc(hidden)]
pub mod __fuzz;
