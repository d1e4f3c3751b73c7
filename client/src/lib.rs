//! Blindfold's participant side.
//!
//! Not built yet: the participant library (ICE controlling side, DTLS client, SRTCP
//! hop by hop, end-to-end SRTP with per-sender keys), the participant CLI and the
//! `blindfold-load` generator. It reuses the relay crate's wire formats and SRTP.
#![warn(missing_docs, unreachable_pub)]
