//! The relay's side of the control socket.
//!
//! The codec — framing, hello, requests, responses, notifications, their checked types
//! and limits — is the `blindfold-control` crate, re-exported here under the same
//! names (so `blindfold_relay::control::SessionSpec` and
//! `blindfold_control::SessionSpec` are one type). What needs the relay's state lives
//! here:
//!
//! - [`registry`]: the rule state with generations, tombstones and snapshot
//!   reconciliation; it turns requests into the engines' commands.
//! - [`server`]: the control-socket server as a sans-IO state machine around the
//!   registry (hello, one client, responses held until every worker applied them,
//!   overload, backlog, goodbye).

pub use blindfold_control::*;

pub mod registry;
pub mod rules;
pub mod server;
