//! DTLS 1.2 (RFC 6347) with DTLS-SRTP key export (RFC 5764) on the sans-IO [`dimpl`]
//! state machine: the relay's server side of each participant session, and the same
//! [`DtlsSession`] in the client role for the participant library, so both ends pin the
//! peer's certificate fingerprint the same way.
//!
//! The keying material it exports keys the hop-by-hop SRTCP between the participant and
//! the relay (see docs/design.md, "The keying model"); end-to-end media keys never pass here.
//!
//! # Driving it
//!
//! Build a [`DtlsConfig`] and load or generate the relay's [`DtlsCert`] once per process
//! (building a config runs the crypto provider's self-tests), then hold one
//! [`DtlsSession`] per session, created when signaling hands over the participant's SDP
//! fingerprint:
//!
//! ```
//! use std::time::{Duration, Instant};
//! use blindfold_relay::dtls::{DtlsCert, DtlsConfig, DtlsEvent, DtlsSession, Fingerprint};
//!
//! let config = DtlsConfig::new(Default::default()).unwrap();
//! let cert = DtlsCert::generate().unwrap();
//! // From the caller's `a=fingerprint:sha-256 …` line.
//! let expected: Fingerprint = "AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:\
//!                              AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89".parse().unwrap();
//! let mut now = Instant::now();
//! let mut server = DtlsSession::server(&config, &cert, expected, now);
//!
//! # let datagram: &[u8] = &[];
//! // A datagram the RFC 7983 demux classed as DTLS, from the session's ICE-validated address:
//! if let Err(reason) = server.handle_datagram(now, datagram) {
//!     // Count `reason`; if `reason.is_fatal()` a `Failed` event follows.
//! }
//! // After every handle_* call, drain in this order:
//! while let Some(packet) = server.poll_transmit() {
//!     // send `packet` to the participant
//! }
//! while let Some(event) = server.poll_event() {
//!     match event {
//!         DtlsEvent::Connected(keys) => { /* install keys.client_master for inbound SRTCP,
//!                                            keys.server_master for outbound */ }
//!         DtlsEvent::Failed(reason) => { /* end the session */ }
//!         _ => {}
//!     }
//! }
//! // Wake at poll_timeout() and call handle_timeout.
//! if let Some(at) = server.poll_timeout() {
//!     now = at;
//!     server.handle_timeout(now);
//! }
//! ```
//!
//! # What the server enforces
//!
//! - DTLS 1.2 only ([`dimpl::Dtls::new_12`]), ECDHE-ECDSA AEAD suites only (dimpl has
//!   no others), extended master secret (RFC 7627) required by dimpl.
//! - Cookie exchange on: the first answer to a ClientHello is a HelloVerifyRequest.
//!   The cookie is an HMAC of the client random under a per-session secret; it is not
//!   bound to the address, because the engine only feeds this server datagrams from the
//!   session's ICE-validated address.
//! - The client must send a certificate, and the SHA-256 of its leaf (DER) must equal
//!   the fingerprint from the SDP. dimpl may build the server's ChangeCipherSpec/
//!   Finished flight and the exported keys in the same call that receives the client's
//!   flight, but it reports the certificate before it hands out any of them; the check
//!   runs then, and on a mismatch the dimpl state is dropped on the spot, so that
//!   flight and the keys are never released. In their place goes one plaintext fatal
//!   `bad_certificate` alert (epoch 0, as the handshake still is), so the peer learns
//!   at once instead of waiting for its own handshake timeout. It authenticates
//!   nothing and reveals only that the certificate was refused.
//! - use_srtp must be negotiated: the server picks, in order, SRTP_AEAD_AES_256_GCM,
//!   SRTP_AEAD_AES_128_GCM, SRTP_AES128_CM_SHA1_80 among what the client offers (that
//!   preference is built into dimpl's server). A handshake that completes without
//!   use_srtp fails with [`DtlsError::NoSrtpProfile`].
//!
//! # Junk and floods
//!
//! Datagrams that do not frame as DTLS 1.2 records are dropped with a non-fatal error.
//! dimpl itself drops records that frame but do not parse or authenticate, yet it keeps
//! records it cannot use *yet* in a 30-entry receive queue whose overflow is fatal. So
//! until the server has sent its ServerHello, when only a ClientHello is useful, this
//! wrapper drops anything but ClientHellos ([`DtlsError::NotClientHello`]). A
//! ClientHello too large for one datagram (a browser's, with a post-quantum key share)
//! comes in fragments, which the wrapper puts together itself and hands dimpl whole
//! (see `hello.rs`). During
//! the rest of the handshake (about one round trip) a flood of junk records from the
//! session's address can still end it; after it, dimpl discards such records.
//!
//! # Application data
//!
//! Application data (a future WebRTC data channel) is not surfaced yet: records that
//! decrypt are dropped and counted ([`DtlsSession::app_data_dropped`]).
//!
//! # Time and randomness
//!
//! No clock reads: time comes in as `now`, and time that goes backwards is treated as
//! the latest time seen. Randomness is dimpl's own: ECDHE keys and signatures always
//! use aws-lc's system RNG; the client-visible random, cookie secret and retransmit
//! jitter come from a per-session RNG that is seeded from the system unless
//! [`DtlsSettings::insecure_rng_seed`] is set (tests only).
//!
//! # Allocation
//!
//! This is the handshake path, not the packet path: dimpl allocates, and so does the
//! transmit queue here (its buffers are recycled).

use std::collections::VecDeque;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_lc_rs::digest;

mod cert;
mod hello;
mod keys;

use hello::{HelloAssembly, has_server_hello, hello_record};

pub use cert::*;
pub use keys::*;

/// Largest DTLS record body accepted (RFC 6347 §4.1: 2^14 + 2048 for ciphertext).
const MAX_RECORD_BODY: usize = (1 << 14) + 2048;
/// DTLS record header length (RFC 6347 §4.1).
const RECORD_HEADER_LEN: usize = 13;
/// Bound on what dimpl may ask our poll buffer to grow to.
const MAX_POLL_BUF: usize = 1 << 16;
/// Spare transmit buffers kept for reuse.
const MAX_FREE_BUFS: usize = 8;

/// Why a datagram was dropped, a certificate or fingerprint was rejected, or a
/// session failed.
///
/// [`DtlsError::is_fatal`] tells the two kinds apart: a non-fatal error means only the
/// datagram was dropped; a fatal one means the session is dead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DtlsError {
    /// The datagram was empty.
    #[error("empty datagram")]
    Empty,
    /// Fewer than 13 bytes left for a record header.
    #[error("DTLS record header truncated")]
    TruncatedHeader,
    /// A record's length field runs past the end of the datagram.
    #[error("DTLS record body truncated")]
    TruncatedRecord,
    /// A record's length exceeds 2^14 + 2048.
    #[error("DTLS record too long")]
    RecordTooLong,
    /// Content type other than change_cipher_spec, alert, handshake, application_data
    /// (this includes DTLS 1.3 unified headers).
    #[error("unexpected DTLS content type {0}")]
    BadContentType(u8),
    /// Record version other than DTLS 1.0 (0xfeff, used in ClientHello records) or
    /// DTLS 1.2 (0xfefd).
    #[error("unexpected DTLS record version {0:#06x}")]
    BadRecordVersion(u16),
    /// Before the server has sent its ServerHello, a datagram that is not only
    /// ClientHellos, or fragments of one, with message_seq 0 or 1 in epoch 0 (at most
    /// 16 KiB). Nothing else can be used yet, and dimpl keeps unusable records
    /// (change_cipher_spec, handshake messages out of turn) in a 30-entry receive queue
    /// whose overflow is fatal, so they are dropped here. Fragments of a ClientHello
    /// are put together here, not in that queue.
    #[error("only a ClientHello is acceptable before ServerHello")]
    NotClientHello,
    /// The session already failed or closed; the datagram was ignored.
    #[error("DTLS session is no longer active")]
    Inactive,
    /// Fatal: the client's certificate does not hash to the SDP fingerprint.
    #[error("client certificate fingerprint does not match the SDP")]
    FingerprintMismatch,
    /// Fatal: the handshake completed without a client certificate.
    #[error("no client certificate")]
    NoClientCertificate,
    /// Fatal: the handshake completed without a use_srtp profile.
    #[error("no SRTP profile negotiated")]
    NoSrtpProfile,
    /// Fatal: the exported keying material did not have the profile's length.
    #[error("exported keying material has the wrong length")]
    KeyingMaterialLength,
    /// Fatal: the peer sent close_notify.
    #[error("peer closed the DTLS association")]
    PeerClosed,
    /// Fatal: the handshake failed inside dimpl.
    #[error("DTLS handshake failed: {0}")]
    Handshake(HandshakeFailure),
    /// A certificate or private key could not be decoded or used (loading only).
    #[error("bad certificate or key: {0}")]
    BadCertificate(CertFailure),
    /// An SDP fingerprint that is not 32 colon-separated hex pairs.
    #[error(
        "malformed SHA-256 fingerprint: expected 32 hex pairs separated by colons (\"AB:CD:...\")"
    )]
    FingerprintSyntax,
    /// An SDP fingerprint attribute whose hash function is not sha-256.
    #[error("fingerprint hash function is not sha-256")]
    FingerprintHashFunction,
    /// The DTLS configuration was rejected (only from [`DtlsConfig::new`]).
    #[error("invalid DTLS configuration")]
    Config,
}

impl DtlsError {
    /// Whether the session is dead after this error (as opposed to one datagram
    /// dropped, or a load/parse error outside any session).
    pub fn is_fatal(self) -> bool {
        matches!(
            self,
            Self::FingerprintMismatch
                | Self::NoClientCertificate
                | Self::NoSrtpProfile
                | Self::KeyingMaterialLength
                | Self::PeerClosed
                | Self::Handshake(_)
        )
    }
}

/// The class of a dimpl handshake error (coarse, so it is `Copy` and countable).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeFailure {
    /// A message arrived that the handshake state does not allow.
    #[error("unexpected message")]
    UnexpectedMessage,
    /// A cryptographic check failed (bad Finished, bad signature, bad key share).
    #[error("cryptographic failure")]
    Crypto,
    /// The peer's certificate was missing or unusable.
    #[error("certificate error")]
    Certificate,
    /// A security policy was violated (e.g. no extended master secret).
    #[error("security policy violation")]
    Security,
    /// The handshake or a flight's retransmissions timed out.
    #[error("timed out")]
    Timeout,
    /// dimpl's bounded receive or transmit queue overflowed.
    #[error("queue full")]
    QueueFull,
    /// The peer tried to renegotiate.
    #[error("renegotiation attempt")]
    Renegotiation,
    /// The connection was already closed.
    #[error("connection closed")]
    Closed,
    /// dimpl wanted an output buffer larger than 64 KiB.
    #[error("oversized output")]
    OversizedOutput,
    /// Any other dimpl error.
    #[error("other")]
    Other,
}

impl From<&dimpl::Error> for HandshakeFailure {
    fn from(e: &dimpl::Error) -> Self {
        use dimpl::Error as E;
        match e {
            E::UnexpectedMessage(_) | E::IncompleteServerHello | E::InvalidState(_) => {
                Self::UnexpectedMessage
            }
            E::CryptoError(_) => Self::Crypto,
            E::CertificateError(_) => Self::Certificate,
            E::SecurityError(_) => Self::Security,
            E::Timeout(_) => Self::Timeout,
            E::ReceiveQueueFull | E::TransmitQueueFull | E::TransmitHistoryFull => Self::QueueFull,
            E::TooManyClientHelloFragments => Self::QueueFull,
            E::RenegotiationAttempt => Self::Renegotiation,
            E::ConnectionClosed => Self::Closed,
            _ => Self::Other,
        }
    }
}

/// Why a certificate or key was rejected when loading a [`DtlsCert`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CertFailure {
    /// No PEM block with the expected label, or bad base64.
    #[error("PEM decoding failed")]
    Pem,
    /// The private key is not a PKCS#8 or SEC1 ECDSA key.
    #[error("private key not usable")]
    Key,
    /// The key is ECDSA but not P-256.
    #[error("private key is not ECDSA P-256")]
    NotP256,
    /// The certificate does not parse, or its public key is not the private key's.
    #[error("certificate does not match the private key")]
    Mismatch,
    /// Generating a certificate failed.
    #[error("certificate generation failed")]
    Generate,
}

// ---------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------

/// Tunables for [`DtlsConfig::new`]. `Default` gives dimpl's defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct DtlsSettings {
    /// Largest datagram the server sends (default 1150).
    pub mtu: usize,
    /// First retransmission timeout; doubles per retry with ±25 % jitter (default 1 s).
    pub flight_start_rto: Duration,
    /// Retransmissions per flight (default 4).
    pub flight_retries: usize,
    /// Bound on the whole handshake from the first ClientHello (default 40 s).
    pub handshake_timeout: Duration,
    /// Seed for dimpl's non-cryptographic RNG (randoms, cookie secret, jitter), for
    /// repeatable tests. **Never set this in production**: every session would share
    /// its server random and cookie secret. ECDHE and signatures use the system RNG
    /// regardless.
    pub insecure_rng_seed: Option<u64>,
}

impl Default for DtlsSettings {
    fn default() -> Self {
        DtlsSettings {
            mtu: 1150,
            flight_start_rto: Duration::from_secs(1),
            flight_retries: 4,
            handshake_timeout: Duration::from_secs(40),
            insecure_rng_seed: None,
        }
    }
}

/// A built DTLS configuration shared by all sessions (cheap to clone).
#[derive(Clone)]
pub struct DtlsConfig {
    inner: Arc<dimpl::Config>,
}

impl fmt::Debug for DtlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DtlsConfig").finish_non_exhaustive()
    }
}

impl DtlsConfig {
    /// Builds the configuration: server cookie on, client certificate required, the
    /// aws-lc-rs provider. Runs the provider's self-tests, so build it once.
    ///
    /// Rejects an MTU below 64 or zero/absurd timeouts with [`DtlsError::Config`].
    pub fn new(settings: DtlsSettings) -> Result<Self, DtlsError> {
        let mut b = dimpl::Config::builder()
            .with_crypto_provider(dimpl::crypto::aws_lc_rs::default_provider())
            .use_server_cookie(true)
            .require_client_certificate(true)
            .mtu(settings.mtu)
            .flight_start_rto(settings.flight_start_rto)
            .flight_retries(settings.flight_retries)
            .handshake_timeout(settings.handshake_timeout);
        if let Some(seed) = settings.insecure_rng_seed {
            b = b.dangerously_set_rng_seed(seed);
        }
        let cfg = b.build().map_err(|_| DtlsError::Config)?;
        Ok(DtlsConfig {
            inner: Arc::new(cfg),
        })
    }
}

// ---------------------------------------------------------------------------------------
// Server
// ---------------------------------------------------------------------------------------

/// What a [`DtlsSession`] reports, from [`DtlsSession::poll_event`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DtlsEvent {
    /// The handshake completed, the client's certificate matched the SDP fingerprint and
    /// use_srtp was negotiated. Reported once.
    Connected(SrtpKeyMaterial),
    /// The session failed (fingerprint mismatch, handshake error or timeout, no SRTP
    /// profile) or the peer closed it ([`DtlsError::PeerClosed`]). Reported once; nothing
    /// follows it. No keys are ever released after or instead of it.
    Failed(DtlsError),
}

/// Which side of the DTLS handshake a [`DtlsSession`] plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DtlsRole {
    /// The relay: answers ClientHellos, with the cookie exchange.
    Server,
    /// A participant: sends the ClientHello.
    Client,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Handshaking,
    Connected,
    Failed,
}

/// One DTLS 1.2 session: the relay's server side of a participant's call
/// ([`DtlsSession::server`]), or a participant's client side ([`DtlsSession::client`]).
/// Either way the peer's certificate must hash to the fingerprint from the SDP before
/// anything that follows it — our next flight, the keys — comes out. See the
/// [module docs](self) for how to drive it.
///
/// Methods: `handle_datagram` / `handle_timeout` feed it; then drain `poll_transmit`,
/// `poll_event`, and read `poll_timeout`.
pub struct DtlsSession {
    /// `None` once the session failed: dropping dimpl's state is what guarantees that
    /// nothing more (no Finished, no keys) comes out of it.
    dtls: Option<dimpl::Dtls>,
    expected: Fingerprint,
    state: State,
    peer_verified: bool,
    dimpl_connected: bool,
    /// Server role, until our ServerHello is queued: only a ClientHello is useful then,
    /// and anything else is dropped before it can fill dimpl's receive queue.
    only_client_hello: bool,
    /// A ClientHello coming in fragments, while `only_client_hello` (see [`hello`]).
    hello: Option<Box<HelloAssembly>>,
    role: DtlsRole,
    keys: Option<SrtpKeyMaterial>,
    last_now: Instant,
    timeout: Option<Instant>,
    poll_buf: Vec<u8>,
    transmit: VecDeque<Vec<u8>>,
    current: Option<Vec<u8>>,
    free: Vec<Vec<u8>>,
    events: VecDeque<DtlsEvent>,
    app_data_dropped: u64,
}

/// A fatal `bad_certificate` (42) alert in a plaintext DTLS 1.2 record (RFC 6347 §4.1:
/// content type 21, version 254.253, epoch 0). Its sequence number is far above any our
/// handshake used, so a peer's replay window takes it.
const BAD_CERTIFICATE_ALERT: [u8; 15] = [
    21, 0xfe, 0xfd, // alert, DTLS 1.2
    0, 0, // epoch 0
    0, 0, 0xff, 0xff, 0xff, 0xff, // sequence number
    0, 2, // length
    2, 42, // fatal, bad_certificate
];

impl fmt::Debug for DtlsSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DtlsSession")
            .field("expected", &self.expected)
            .field("state", &self.state)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl DtlsSession {
    /// The relay's side of a session, waiting for the client's ClientHello. The
    /// client's certificate must hash to `expected_client_fingerprint` (from the SDP).
    pub fn server(
        config: &DtlsConfig,
        cert: &DtlsCert,
        expected_client_fingerprint: Fingerprint,
        now: Instant,
    ) -> Self {
        Self::start(
            config,
            cert,
            expected_client_fingerprint,
            DtlsRole::Server,
            now,
        )
    }

    /// A participant's side: sends its ClientHello at once (drain
    /// [`poll_transmit`](Self::poll_transmit)). The relay's certificate must hash to
    /// `expected_server_fingerprint` (from the SDP answer).
    pub fn client(
        config: &DtlsConfig,
        cert: &DtlsCert,
        expected_server_fingerprint: Fingerprint,
        now: Instant,
    ) -> Self {
        Self::start(
            config,
            cert,
            expected_server_fingerprint,
            DtlsRole::Client,
            now,
        )
    }

    fn start(
        config: &DtlsConfig,
        cert: &DtlsCert,
        expected: Fingerprint,
        role: DtlsRole,
        now: Instant,
    ) -> Self {
        // Cannot panic on the key: DtlsCert loaded it with the same provider.
        let mut dtls = dimpl::Dtls::new_12(config.inner.clone(), cert.inner.clone(), now);
        if role == DtlsRole::Client {
            dtls.set_active(true);
        }
        let mut s = DtlsSession {
            dtls: Some(dtls),
            expected,
            state: State::Handshaking,
            peer_verified: false,
            dimpl_connected: false,
            only_client_hello: role == DtlsRole::Server,
            hello: None,
            role,
            keys: None,
            last_now: now,
            timeout: None,
            poll_buf: vec![0; 2048],
            transmit: VecDeque::new(),
            current: None,
            free: Vec::new(),
            events: VecDeque::new(),
            app_data_dropped: 0,
        };
        s.handle_timeout(now);
        s
    }

    /// Which side of the handshake this is.
    pub fn role(&self) -> DtlsRole {
        self.role
    }

    /// Feeds one datagram that the RFC 7983 demux classed as DTLS.
    ///
    /// Checks the record framing first and drops, with a non-fatal error, an empty
    /// datagram, a truncated record header or body, a record longer than 2^14 + 2048,
    /// an unknown content type (including DTLS 1.3 headers) or a record version other
    /// than 0xfeff/0xfefd; returns [`DtlsError::Inactive`] once the session has failed.
    /// Records that frame correctly but do not authenticate or parse are dropped by
    /// dimpl silently (`Ok`). Before the ServerHello, anything but ClientHellos and their
    /// fragments is dropped ([`DtlsError::NotClientHello`]); fragments are kept until
    /// their ClientHello is whole (`Ok`), and one beyond what is kept (16 disjoint
    /// pieces of a message) is dropped silently. A fatal error (see
    /// [`DtlsError::is_fatal`]) ends the session and also queues [`DtlsEvent::Failed`].
    pub fn handle_datagram(&mut self, now: Instant, datagram: &[u8]) -> Result<(), DtlsError> {
        if self.state == State::Failed {
            return Err(DtlsError::Inactive);
        }
        check_framing(datagram)?;
        if self.only_client_hello {
            let hellos = || hello::records(datagram).map(hello_record);
            if !hellos().all(|r| r.is_some()) {
                return Err(DtlsError::NotClientHello);
            }
            if !hellos().flatten().all(|r| r.is_whole()) {
                return self.handle_fragments(now, datagram);
            }
        }
        self.feed(now, datagram)
    }

    /// A datagram of ClientHello records, some of them fragments: whole ones go to dimpl
    /// as they are, fragments into the reassembly, and a ClientHello they complete to
    /// dimpl in one record. Once one of them got the ServerHello, the rest are dropped:
    /// only the handshake's next flight is of use.
    fn handle_fragments(&mut self, now: Instant, datagram: &[u8]) -> Result<(), DtlsError> {
        for hello in hello::records(datagram).filter_map(hello_record) {
            if !self.only_client_hello {
                break;
            }
            if hello.is_whole() {
                self.feed(now, hello.record)?;
            } else if let Some(whole) = self.hello.get_or_insert_default().add(&hello) {
                self.feed(now, &whole)?;
            }
        }
        Ok(())
    }

    /// Hands dimpl a datagram (or a record) that got past the checks.
    fn feed(&mut self, now: Instant, datagram: &[u8]) -> Result<(), DtlsError> {
        let now = self.advance(now);
        let Some(dtls) = self.dtls.as_mut() else {
            return Err(DtlsError::Inactive);
        };
        // dimpl reads the time of a packet from its last handle_timeout.
        let r = dtls
            .handle_timeout(now)
            .and_then(|()| dtls.handle_packet(datagram));
        if let Err(e) = r {
            let reason = DtlsError::Handshake(HandshakeFailure::from(&e));
            self.fail(reason);
            return Err(reason);
        }
        self.drain();
        match self.events.back() {
            Some(DtlsEvent::Failed(reason)) if self.state == State::Failed => Err(*reason),
            _ => Ok(()),
        }
    }

    /// Advances time: retransmits a flight whose timer expired, or fails the session
    /// (an event) when retransmissions or the handshake deadline run out. Time earlier
    /// than already seen counts as the latest time seen.
    pub fn handle_timeout(&mut self, now: Instant) {
        let now = self.advance(now);
        let Some(dtls) = self.dtls.as_mut() else {
            return;
        };
        if let Err(e) = dtls.handle_timeout(now) {
            self.fail(DtlsError::Handshake(HandshakeFailure::from(&e)));
            return;
        }
        self.drain();
    }

    /// The next datagram to send to the participant, if any. The slice is valid until
    /// the next call on this server.
    pub fn poll_transmit(&mut self) -> Option<&[u8]> {
        if let Some(old) = self.current.take()
            && self.free.len() < MAX_FREE_BUFS
        {
            self.free.push(old);
        }
        self.current = self.transmit.pop_front();
        self.current.as_deref()
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<DtlsEvent> {
        self.events.pop_front()
    }

    /// When to call [`handle_timeout`](Self::handle_timeout) next; `None` once the
    /// session has failed.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Failed => None,
            _ => self.timeout,
        }
    }

    /// Whether the session is connected (the `Connected` event was queued).
    pub fn is_connected(&self) -> bool {
        self.state == State::Connected
    }

    /// Whether the session is over: it failed (a `Failed` event was queued) or
    /// [`close`](Self::close) was called.
    pub fn is_failed(&self) -> bool {
        self.state == State::Failed
    }

    /// Whether a server still waits for a ClientHello that passes the cookie exchange
    /// (it has not sent its ServerHello, and has not failed). One that only ever got
    /// ClientHellos without the cookie may have been sent them by someone who cannot
    /// receive at the address they came from.
    pub fn awaiting_client_hello(&self) -> bool {
        self.only_client_hello && self.state != State::Failed
    }

    /// The SDP fingerprint the client's certificate must match.
    pub fn expected_fingerprint(&self) -> Fingerprint {
        self.expected
    }

    /// Decrypted application-data records dropped because no data channel exists yet.
    pub fn app_data_dropped(&self) -> u64 {
        self.app_data_dropped
    }

    /// Closes the session from our side: queues a close_notify if connected, then drops
    /// the DTLS state. Queues no event (the caller chose to close).
    pub fn close(&mut self) {
        if let Some(dtls) = self.dtls.as_mut()
            && self.state == State::Connected
            && dtls.close().is_ok()
        {
            self.drain();
        }
        self.dtls = None;
        self.keys = None;
        self.state = State::Failed;
        self.timeout = None;
    }

    fn advance(&mut self, now: Instant) -> Instant {
        if now > self.last_now {
            self.last_now = now;
        }
        self.last_now
    }

    /// Kills the session: drops dimpl's state and anything queued for the wire, and
    /// reports `reason` once.
    fn fail(&mut self, reason: DtlsError) {
        if self.state == State::Failed {
            return;
        }
        self.state = State::Failed;
        self.dtls = None;
        self.keys = None;
        self.timeout = None;
        self.transmit.clear();
        self.events.push_back(DtlsEvent::Failed(reason));
    }

    /// Pulls everything dimpl has to say until its `Timeout`, checking the peer
    /// certificate before anything that follows it can leave.
    fn drain(&mut self) {
        loop {
            let Some(dtls) = self.dtls.as_mut() else {
                return;
            };
            match dtls.poll_output(&mut self.poll_buf) {
                dimpl::Output::Packet(p) => {
                    if self.only_client_hello && has_server_hello(p) {
                        self.only_client_hello = false;
                        self.hello = None;
                    }
                    let mut buf = self.free.pop().unwrap_or_default();
                    buf.clear();
                    buf.extend_from_slice(p);
                    self.transmit.push_back(buf);
                }
                dimpl::Output::BufferTooSmall { needed } => {
                    if needed > MAX_POLL_BUF || needed <= self.poll_buf.len() {
                        self.fail(DtlsError::Handshake(HandshakeFailure::OversizedOutput));
                        return;
                    }
                    self.poll_buf.resize(needed, 0);
                }
                dimpl::Output::Timeout(t) => {
                    self.timeout = Some(t);
                    break;
                }
                dimpl::Output::PeerCert(der) => {
                    if Fingerprint::of_der(der) != self.expected {
                        self.fail(DtlsError::FingerprintMismatch);
                        self.transmit.push_back(BAD_CERTIFICATE_ALERT.to_vec());
                        return;
                    }
                    self.peer_verified = true;
                }
                dimpl::Output::Connected => self.dimpl_connected = true,
                dimpl::Output::KeyingMaterial(km, profile) => {
                    if !self.peer_verified {
                        self.fail(match self.role {
                            DtlsRole::Server => DtlsError::NoClientCertificate,
                            DtlsRole::Client => DtlsError::Handshake(HandshakeFailure::Certificate),
                        });
                        return;
                    }
                    let Some(profile) = DtlsSrtpProfile::from_dimpl(profile) else {
                        self.fail(DtlsError::NoSrtpProfile);
                        return;
                    };
                    match SrtpKeyMaterial::from_exported(profile, &km) {
                        Ok(keys) => self.keys = Some(keys),
                        Err(e) => {
                            self.fail(e);
                            return;
                        }
                    }
                }
                dimpl::Output::ApplicationData(_) => {
                    self.app_data_dropped = self.app_data_dropped.saturating_add(1);
                }
                dimpl::Output::CloseNotify => {
                    self.fail(DtlsError::PeerClosed);
                    return;
                }
                _ => {}
            }
        }
        if self.dimpl_connected && self.state == State::Handshaking {
            if !self.peer_verified {
                self.fail(DtlsError::NoClientCertificate);
            } else if let Some(keys) = self.keys.take() {
                self.state = State::Connected;
                self.events.push_back(DtlsEvent::Connected(keys));
            } else {
                self.fail(DtlsError::NoSrtpProfile);
            }
        }
    }
}

/// Walks the DTLS records in a datagram (RFC 6347 §4.1) and rejects bad framing: an
/// empty datagram, a truncated record header or body, a record longer than 2^14 + 2048,
/// an unknown content type or a record version other than 0xfeff/0xfefd (all non-fatal
/// [`DtlsError`]s).
pub(crate) fn check_framing(datagram: &[u8]) -> Result<(), DtlsError> {
    if datagram.is_empty() {
        return Err(DtlsError::Empty);
    }
    let mut rest = datagram;
    while !rest.is_empty() {
        let Some((hdr, body)) = rest.split_first_chunk::<RECORD_HEADER_LEN>() else {
            return Err(DtlsError::TruncatedHeader);
        };
        let ctype = hdr[0];
        if !(20..=23).contains(&ctype) {
            return Err(DtlsError::BadContentType(ctype));
        }
        let version = u16::from_be_bytes([hdr[1], hdr[2]]);
        if version != 0xfeff && version != 0xfefd {
            return Err(DtlsError::BadRecordVersion(version));
        }
        let len = usize::from(u16::from_be_bytes([hdr[11], hdr[12]]));
        if len > MAX_RECORD_BODY {
            return Err(DtlsError::RecordTooLong);
        }
        rest = body.get(len..).ok_or(DtlsError::TruncatedRecord)?;
    }
    Ok(())
}

/// Whether `datagram` is a well-framed ClientHello, or fragments of one: every record an
/// epoch-0 handshake record holding one ClientHello or one fragment of it (RFC 6347
/// §4.2.2), message_seq 0 or 1.
pub fn is_client_hello(datagram: &[u8]) -> bool {
    check_framing(datagram).is_ok() && hello::records(datagram).all(|r| hello_record(r).is_some())
}

/// Feeds arbitrary datagrams into a fresh server: the input is split into chunks, each
/// prefixed by a length byte; a zero length byte instead advances time by one second
/// and calls `handle_timeout`. Asserts that garbage never yields `Connected`.
#[cfg(feature = "fuzz")]
#[doc(hidden)]
#[allow(clippy::disallowed_methods)] // a base instant; the run itself is simulated
pub fn fuzz_one(data: &[u8]) {
    use std::sync::OnceLock;
    static SETUP: OnceLock<(DtlsConfig, DtlsCert, Instant)> = OnceLock::new();
    let (config, cert, t0) = SETUP.get_or_init(|| {
        let settings = DtlsSettings {
            insecure_rng_seed: Some(1),
            ..DtlsSettings::default()
        };
        (
            DtlsConfig::new(settings).expect("default dtls config"),
            DtlsCert::generate().expect("generate cert"),
            Instant::now(),
        )
    });
    let mut now = *t0;
    let mut server = DtlsSession::server(config, cert, Fingerprint([0x5a; 32]), now);
    let mut rest = data;
    while let Some((&n, tail)) = rest.split_first() {
        if n == 0 {
            now += Duration::from_secs(1);
            server.handle_timeout(now);
            rest = tail;
        } else {
            let n = usize::from(n).min(tail.len());
            let (chunk, tail) = tail.split_at(n);
            let r = server.handle_datagram(now, chunk);
            if let Err(e) = r {
                assert!(!e.is_fatal() || server.is_failed());
            }
            rest = tail;
        }
        while server.poll_transmit().is_some() {}
        while let Some(ev) = server.poll_event() {
            assert!(
                matches!(ev, DtlsEvent::Failed(_)),
                "garbage connected: {ev:?}"
            );
        }
        let _ = server.poll_timeout();
    }
    // The framing check, on the whole input as one datagram.
    let _ = check_framing(data);
}

#[cfg(test)]
mod tests;
