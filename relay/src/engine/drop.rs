//! Why the engine dropped a datagram. Each reason is a counter (the shell exports them
//! as `blindfold_drops_total{reason="…"}`); a drop is not an error.

/// Why a datagram was dropped. `name()` is the metrics label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DropReason {
    /// Not STUN, DTLS, RTP or RTCP (RFC 7983), or too short to tell.
    NotOurs,
    /// STUN that does not parse, fails its FINGERPRINT, or is not a Binding request.
    StunMalformed,
    /// A Binding request for a relay ufrag no session has.
    StunUnknownUfrag,
    /// A Binding request with bad credentials (answered 400/401/420).
    StunRejected,
    /// DTLS, RTP or RTCP from an address that never passed an ICE check.
    Unvalidated,
    /// A DTLS record the session's DTLS server rejected.
    DtlsRejected,
    /// RTP or RTCP from a session whose DTLS handshake has not completed.
    BeforeDtls,
    /// RTP or RTCP from a validated address that is not the nominated one.
    NotNominated,
    /// An RTP header that does not parse.
    RtpMalformed,
    /// RTP on an SSRC the session did not declare.
    UndeclaredSsrc,
    /// SRTCP that fails authentication, replay or index checks.
    SrtcpRejected,
    /// A decrypted RTCP compound that does not parse.
    RtcpMalformed,
    /// RTCP whose sender SSRC the session did not declare.
    RtcpUndeclaredSsrc,
    /// The transmit queue was full.
    TxQueueFull,
    /// A connectivity check from an address another live session receives its media at
    /// (not answered): a forged source, or a socket reused while its old session lives.
    AddressInUse,
    /// Past a rate the relay allows one participant: media past its stream's packet
    /// cap (`max_audio_pps`, `max_video_pps`), or datagrams another shard would hand
    /// its home past its budget (`rtcp_max_per_second`).
    OverRate,
}

impl DropReason {
    /// Every reason, in counter order.
    pub const ALL: [DropReason; 16] = [
        DropReason::NotOurs,
        DropReason::StunMalformed,
        DropReason::StunUnknownUfrag,
        DropReason::StunRejected,
        DropReason::Unvalidated,
        DropReason::DtlsRejected,
        DropReason::BeforeDtls,
        DropReason::NotNominated,
        DropReason::RtpMalformed,
        DropReason::UndeclaredSsrc,
        DropReason::SrtcpRejected,
        DropReason::RtcpMalformed,
        DropReason::RtcpUndeclaredSsrc,
        DropReason::TxQueueFull,
        DropReason::AddressInUse,
        DropReason::OverRate,
    ];

    /// Number of reasons.
    pub const COUNT: usize = Self::ALL.len();

    /// Index into a counter array.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The metrics label.
    pub fn name(self) -> &'static str {
        match self {
            DropReason::NotOurs => "not_ours",
            DropReason::StunMalformed => "stun_malformed",
            DropReason::StunUnknownUfrag => "stun_unknown_ufrag",
            DropReason::StunRejected => "stun_rejected",
            DropReason::Unvalidated => "unvalidated",
            DropReason::DtlsRejected => "dtls_rejected",
            DropReason::BeforeDtls => "before_dtls",
            DropReason::NotNominated => "not_nominated",
            DropReason::RtpMalformed => "rtp_malformed",
            DropReason::UndeclaredSsrc => "undeclared_ssrc",
            DropReason::SrtcpRejected => "srtcp_rejected",
            DropReason::RtcpMalformed => "rtcp_malformed",
            DropReason::RtcpUndeclaredSsrc => "rtcp_undeclared_ssrc",
            DropReason::TxQueueFull => "tx_queue_full",
            DropReason::AddressInUse => "address_in_use",
            DropReason::OverRate => "over_rate",
        }
    }
}

/// Why one RTCP packet inside an accepted SRTCP compound was not acted on. Counted
/// apart from [`DropReason`], whose unit is a datagram: one compound may hold several
/// packets, each dropped or used on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RtcpDrop {
    /// A packet of a known type whose body does not parse.
    Malformed,
    /// A sender report about an SSRC its sender did not declare.
    UndeclaredSsrc,
    /// Feedback (PLI, FIR) about a stream the sender does not receive.
    NotReceiver,
    /// Beyond the participant's budget of RTCP packets (`rtcp_max_per_second`): not
    /// looked at.
    OverBudget,
}

impl RtcpDrop {
    /// Every reason, in counter order.
    pub const ALL: [RtcpDrop; 4] = [
        RtcpDrop::Malformed,
        RtcpDrop::UndeclaredSsrc,
        RtcpDrop::NotReceiver,
        RtcpDrop::OverBudget,
    ];
    /// Number of reasons.
    pub const COUNT: usize = Self::ALL.len();

    /// Index into a counter array.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The metrics label.
    pub fn name(self) -> &'static str {
        match self {
            RtcpDrop::Malformed => "malformed",
            RtcpDrop::UndeclaredSsrc => "undeclared_ssrc",
            RtcpDrop::NotReceiver => "not_receiver",
            RtcpDrop::OverBudget => "over_budget",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_match_the_table() {
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
        let mut names: Vec<_> = DropReason::ALL.iter().map(|r| r.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), DropReason::COUNT);
        for (i, r) in RtcpDrop::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
    }
}
