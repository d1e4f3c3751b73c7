//! Blindfold's control plane: the SFU's Matrix user.
//!
//! Being built. It will answer `m.call.invite`s, admit only members of a live conference
//! room, and push forwarding rules to the relay over its Unix control socket. See
//! `DESIGN.md` and the README's "Status" section. Done so far:
//!
//! - [`sdp`]: a participant's SDP offer checked and turned into the relay's session
//!   spec, and the relay's SDP answer written (`docs/protocol.md`, "SDP").
#![warn(missing_docs, unreachable_pub)]

pub mod sdp;

#[cfg(feature = "fuzz")]
#[doc(hidden)]
pub mod __fuzz;
