//! Why commands fail, why datagrams are dropped, and why a participant failed.

use blindfold_relay::dtls::DtlsError;
use blindfold_relay::id::{KeyIndex, Ssrc};
use blindfold_relay::srtp::SrtpError;
use blindfold_relay::wire::rtcp::RtcpError;
use blindfold_relay::wire::rtp::RtpError;
use blindfold_relay::wire::stun::StunError;

/// Why a command of [`crate::Participant`] was refused. Nothing was queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParticipantError {
    /// An ICE ufrag or password that is empty, longer than 256 bytes, or (ufrag) holds
    /// a colon.
    #[error("bad ICE credentials")]
    BadIceCredentials,
    /// Media and RTCP wait for the `Connected` event (ICE selected, DTLS done).
    #[error("not connected yet")]
    NotConnected,
    /// The participant failed or was closed.
    #[error("participant failed or closed")]
    Failed,
    /// `send_rtp` for an SSRC that is not one of ours.
    #[error("SSRC {0} is not one of ours")]
    NotOwnSsrc(Ssrc),
    /// The RTP header could not be written.
    #[error("RTP header: {0}")]
    Rtp(RtpError),
    /// The RTCP packet could not be built or does not parse.
    #[error("RTCP: {0}")]
    Rtcp(RtcpError),
    /// SRTP/SRTCP refused (bad key length, unknown key index, index exhausted, …).
    #[error("SRTP: {0}")]
    Srtp(SrtpError),
    /// The protected packet would exceed the largest datagram we send (1500 bytes).
    #[error("packet too large")]
    PacketTooLarge,
    /// A key's profile is not the participant's own SRTP profile.
    #[error("key profile does not match the SRTP profile in use")]
    ProfileMismatch,
    /// A key event with no keys.
    #[error("no keys given")]
    NoKeys,
    /// A key event with more than the two keys a receiver holds.
    #[error("more than two keys given")]
    TooManyKeys,
    /// The same key index twice in one key event.
    #[error("key index {0} given twice")]
    DuplicateKeyIndex(KeyIndex),
    /// A key event with no streams.
    #[error("no streams given")]
    NoStreams,
    /// An SSRC already belongs to another sender, to us, or appears twice.
    #[error("SSRC {0} collides with another stream")]
    SsrcCollision(Ssrc),
    /// A known sender's key event declares other streams than before.
    #[error("sender's streams differ from what it declared")]
    StreamsChanged,
}

/// Why a participant failed (reported once by [`crate::Event::Failed`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FailReason {
    /// The connectivity check got no verified answer after every retransmission.
    #[error("ICE connectivity check timed out")]
    IceTimeout,
    /// The relay answered the check with a verified error response (code).
    #[error("ICE check answered with error {0}")]
    IceErrorResponse(u16),
    /// No verified consent response for 30 s (RFC 7675).
    #[error("ICE consent lost")]
    ConsentLost,
    /// The DTLS handshake failed: a wrong relay certificate
    /// ([`DtlsError::FingerprintMismatch`]), a handshake error or timeout, no SRTP
    /// profile, or the relay closed the association.
    #[error("DTLS: {0}")]
    Dtls(DtlsError),
    /// The relay fell silent ([`Event::Reconnecting`](crate::Event::Reconnecting)), we
    /// connected again, and it fell silent again before it said anything.
    #[error("the relay sent no SRTCP, and again after we reconnected")]
    RelaySilent,
}

/// Why an incoming datagram was dropped. Each is counted in [`crate::Stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DropReason {
    /// From an address other than the relay's candidate.
    #[error("datagram from an unknown address")]
    UnknownSource,
    /// Not STUN, DTLS, RTP or RTCP by RFC 7983, or too short to classify.
    #[error("unclassifiable datagram")]
    Unclassified,
    /// The participant failed or was closed.
    #[error("participant failed or closed")]
    Failed,
    /// STUN that does not parse or does not authenticate.
    #[error("STUN: {0}")]
    Stun(StunError),
    /// A STUN message that is not a Binding, or a request with unknown required
    /// attributes.
    #[error("unexpected STUN message")]
    StunUnexpected,
    /// A STUN response to no transaction of ours.
    #[error("STUN response to an unknown transaction")]
    StunUnknownTransaction,
    /// A Binding request without our credentials.
    #[error("STUN request with wrong credentials")]
    StunUnauthorized,
    /// DTLS before ICE selected the pair.
    #[error("DTLS before ICE completed")]
    DtlsNotStarted,
    /// DTLS that does not frame, or arrives after the association ended.
    #[error("DTLS: {0}")]
    Dtls(DtlsError),
    /// Media or RTCP before the `Connected` event.
    #[error("media before connection")]
    NotConnected,
    /// SRTP media from an SSRC no installed sender declared.
    #[error("SRTP from an unknown SSRC")]
    UnknownSsrc,
    /// SRTP media that does not unprotect (unknown MKI, bad tag, replay, …).
    #[error("SRTP: {0}")]
    Srtp(SrtpError),
    /// SRTCP that does not unprotect.
    #[error("SRTCP: {0}")]
    Srtcp(SrtpError),
    /// A decrypted RTCP compound (or one packet in it) that does not parse.
    #[error("RTCP: {0}")]
    Rtcp(RtcpError),
}
