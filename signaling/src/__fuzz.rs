//! Entry points for the cargo-fuzz targets in `fuzz/`. A panic or failed assertion
//! inside is a finding. Hidden: not part of the crate's API.

/// An SDP offer from arbitrary bytes, and the answer to it if accepted
/// (see `sdp::fuzz_one`).
pub fn sdp_offer(data: &[u8]) {
    crate::sdp::fuzz_one(data);
}

/// A `/sync` response from arbitrary bytes, handled by a core that serves a
/// conference (see `core::fuzz`): no panic, and the relay snapshot stays valid.
pub fn sync_batch(data: &[u8]) {
    crate::core::fuzz::fuzz_one(data);
}
