//! Entry points for the cargo-fuzz targets in `fuzz/`. Each drives one parser (and its
//! builder, where there is one) on arbitrary bytes; a panic or failed assertion inside is
//! a finding. Hidden: not part of the crate's API.

use crate::wire::{self, Datagram};

/// The RFC 7983 demultiplexer, then whichever parser the datagram is routed to — the
/// exact path a datagram from the network takes.
pub fn demux(data: &[u8]) {
    let kind = wire::classify(data);
    match wire::demux(data) {
        Datagram::Stun(d) => {
            assert_eq!(kind, wire::Kind::Stun);
            wire::stun::fuzz_one(d)
        }
        Datagram::Rtp(d) => {
            assert_eq!(kind, wire::Kind::Rtp);
            wire::rtp::fuzz_one(d);
            crate::srtp::fuzz_one(d)
        }
        Datagram::Rtcp(d) => {
            assert_eq!(kind, wire::Kind::Rtcp);
            wire::rtcp::fuzz_one(d);
            crate::srtp::fuzz_one(d)
        }
        Datagram::Dtls(d) => {
            assert_eq!(kind, wire::Kind::Dtls);
            crate::dtls::fuzz_one(d)
        }
        Datagram::Unknown(_) => assert_eq!(kind, wire::Kind::Unknown),
    }
}

/// STUN parse, getters, integrity and fingerprint checks, rebuild.
pub fn stun(data: &[u8]) {
    wire::stun::fuzz_one(data)
}

/// RTP header, extensions and their readers, rebuild.
pub fn rtp(data: &[u8]) {
    wire::rtp::fuzz_one(data)
}

/// RTCP compound walk, every packet view, rebuild.
pub fn rtcp(data: &[u8]) {
    wire::rtcp::fuzz_one(data)
}

/// SRTP and SRTCP unprotect in every profile, with and without MKI, and round trips.
pub fn srtp_unprotect(data: &[u8]) {
    crate::srtp::fuzz_one(data)
}

/// A fresh DTLS server fed a sequence of datagrams (split by a length byte).
pub fn dtls(data: &[u8]) {
    crate::dtls::fuzz_one(data)
}

/// The control-socket decoder on arbitrarily chunked bytes; every decoded message
/// re-encodes to itself.
pub fn control(data: &[u8]) {
    crate::control::fuzz_one(data)
}

/// The control server and its registry, fed requests, raw bytes, workers' reports,
/// connects, hang-ups and time.
pub fn control_server(data: &[u8]) {
    crate::control::server::fuzz::fuzz_one(data)
}

/// The shell's parsers: the TOML config and the metrics server's request reader.
pub fn shell(data: &[u8]) {
    crate::shell::fuzz_one(data)
}

/// An ICE-lite agent answering arbitrary STUN, as received and re-signed.
pub fn ice(data: &[u8]) {
    crate::ice::fuzz_one(data)
}

/// One engine fed datagrams (some of them valid ICE checks), commands and time steps.
pub fn engine(data: &[u8]) {
    crate::engine::fuzz_one(data)
}
