//! Blindfold's control plane: the SFU's Matrix user.
//!
//! Not built yet. It will answer `m.call.invite`s, admit only members of a live
//! conference room, and push forwarding rules to the relay over its Unix control
//! socket. See `docs/design.md` and the README's "Status" section.
#![warn(missing_docs, unreachable_pub)]
