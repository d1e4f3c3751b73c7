//! The RTP identifiers the control protocol names. They are the relay's own typed ids
//! (`blindfold_relay::id` re-exports them), defined here so the codec needs nothing of
//! the relay's.

use std::fmt;

/// RTP synchronization source identifier (RFC 3550 §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ssrc(pub u32);

impl Ssrc {
    /// The SSRC the relay's own RTCP comes from (receiver reports, feedback, PAUSE and
    /// RESUME, probes). No session may declare it: a relay refuses a session spec that
    /// does (`bad_request`).
    pub const RELAY: Ssrc = Ssrc(0x0b11_dfd0);
}

/// The RTP header extension id negotiated with `a=extmap` (RFC 8285), 1..=255.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ExtId(pub u8);

impl fmt::Display for Ssrc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Display for ExtId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}
