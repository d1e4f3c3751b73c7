//! The participant's DTLS 1.2 client (RFC 6347, use_srtp RFC 5764) on dimpl, mirroring
//! how `blindfold_relay::dtls` drives dimpl as a server.
//!
//! It starts once ICE has selected the pair, presents the participant's own ECDSA
//! certificate, and checks that the relay's certificate hashes to the fingerprint from
//! the SDP answer. dimpl reports the peer certificate before it releases anything that
//! follows it (our Finished flight, the keys); on a mismatch the dimpl state is dropped
//! on the spot, so no keys ever come out. The exported keying material keys SRTCP only.

use std::sync::Arc;
use std::time::Instant;

use blindfold_relay::dtls::{
    DtlsCert, DtlsError, DtlsSettings, DtlsSrtpProfile, Fingerprint, HandshakeFailure,
    SrtpKeyMaterial, check_framing,
};

/// Bound on what dimpl may ask our poll buffer to grow to.
const MAX_POLL_BUF: usize = 1 << 16;

/// A built dimpl client configuration, shared by participants (cheap to clone). Build it
/// once: building runs the crypto provider's self-tests.
#[derive(Clone)]
pub struct DtlsClientConfig {
    inner: Arc<dimpl::Config>,
}

impl std::fmt::Debug for DtlsClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DtlsClientConfig").finish_non_exhaustive()
    }
}

impl DtlsClientConfig {
    /// Builds the client configuration with the aws-lc-rs provider from the relay's
    /// [`DtlsSettings`] (MTU, flight timers, handshake deadline, and — tests only — a
    /// fixed seed for dimpl's non-cryptographic RNG).
    ///
    /// Rejects what dimpl's builder rejects (MTU below 64, absurd timeouts) with
    /// [`DtlsError::Config`].
    pub fn new(settings: DtlsSettings) -> Result<Self, DtlsError> {
        let mut b = dimpl::Config::builder()
            .with_crypto_provider(dimpl::crypto::aws_lc_rs::default_provider())
            .mtu(settings.mtu)
            .flight_start_rto(settings.flight_start_rto)
            .flight_retries(settings.flight_retries)
            .handshake_timeout(settings.handshake_timeout);
        if let Some(seed) = settings.insecure_rng_seed {
            b = b.dangerously_set_rng_seed(seed);
        }
        let cfg = b.build().map_err(|_| DtlsError::Config)?;
        Ok(DtlsClientConfig {
            inner: Arc::new(cfg),
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Handshaking,
    Connected,
    Failed,
}

/// What the client reports to the participant.
#[derive(Debug)]
pub(crate) enum DtlsOutcome {
    Connected(SrtpKeyMaterial),
    Failed(DtlsError),
}

pub(crate) struct DtlsClient {
    /// `None` once failed: dropping dimpl's state guarantees nothing more comes out.
    dtls: Option<dimpl::Dtls>,
    expected: Fingerprint,
    state: State,
    peer_verified: bool,
    dimpl_connected: bool,
    keys: Option<SrtpKeyMaterial>,
    timeout: Option<Instant>,
    poll_buf: Vec<u8>,
    outcome: Option<DtlsOutcome>,
    last_now: Instant,
}

impl std::fmt::Debug for DtlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DtlsClient")
            .field("state", &self.state)
            .field("expected", &self.expected)
            .finish_non_exhaustive()
    }
}

impl DtlsClient {
    /// A client that sends its ClientHello into `out` at once.
    pub(crate) fn new(
        config: &DtlsClientConfig,
        cert: &DtlsCert,
        expected: Fingerprint,
        now: Instant,
        out: &mut Vec<Vec<u8>>,
    ) -> Self {
        let identity = dimpl::DtlsCertificate {
            certificate: cert.certificate_der().to_vec(),
            private_key: cert.private_key_der().to_vec(),
        };
        let mut dtls = dimpl::Dtls::new_12(config.inner.clone(), identity, now);
        dtls.set_active(true);
        let mut c = DtlsClient {
            dtls: Some(dtls),
            expected,
            state: State::Handshaking,
            peer_verified: false,
            dimpl_connected: false,
            keys: None,
            timeout: None,
            poll_buf: vec![0; 2048],
            outcome: None,
            last_now: now,
        };
        c.handle_timeout(now, out);
        c
    }

    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Failed => None,
            _ => self.timeout,
        }
    }

    pub(crate) fn take_outcome(&mut self) -> Option<DtlsOutcome> {
        self.outcome.take()
    }

    /// Feeds a datagram classed as DTLS. Bad framing is a non-fatal drop; a dimpl error
    /// is fatal (an outcome follows), as on the relay.
    pub(crate) fn handle_datagram(
        &mut self,
        now: Instant,
        datagram: &[u8],
        out: &mut Vec<Vec<u8>>,
    ) -> Result<(), DtlsError> {
        if self.state == State::Failed {
            return Err(DtlsError::Inactive);
        }
        check_framing(datagram)?;
        let now = self.advance(now);
        let Some(dtls) = self.dtls.as_mut() else {
            return Err(DtlsError::Inactive);
        };
        let r = dtls
            .handle_timeout(now)
            .and_then(|()| dtls.handle_packet(datagram));
        if let Err(e) = r {
            let reason = DtlsError::Handshake(HandshakeFailure::from(&e));
            self.fail(reason);
            return Err(reason);
        }
        self.drain(out);
        Ok(())
    }

    pub(crate) fn handle_timeout(&mut self, now: Instant, out: &mut Vec<Vec<u8>>) {
        let now = self.advance(now);
        let Some(dtls) = self.dtls.as_mut() else {
            return;
        };
        if let Err(e) = dtls.handle_timeout(now) {
            self.fail(DtlsError::Handshake(HandshakeFailure::from(&e)));
            return;
        }
        self.drain(out);
    }

    /// Stops: queues close_notify if connected, then drops the state. No outcome.
    pub(crate) fn close(&mut self, out: &mut Vec<Vec<u8>>) {
        if let Some(dtls) = self.dtls.as_mut()
            && self.state == State::Connected
            && dtls.close().is_ok()
        {
            self.drain(out);
        }
        self.dtls = None;
        self.keys = None;
        self.state = State::Failed;
        self.timeout = None;
    }

    fn advance(&mut self, now: Instant) -> Instant {
        self.last_now = self.last_now.max(now);
        self.last_now
    }

    fn fail(&mut self, reason: DtlsError) {
        if self.state == State::Failed {
            return;
        }
        self.state = State::Failed;
        self.dtls = None;
        self.keys = None;
        self.timeout = None;
        self.outcome = Some(DtlsOutcome::Failed(reason));
    }

    /// Pulls everything dimpl has to say. Datagrams are committed to `out` only if the
    /// drain does not fail, so nothing built after a bad peer certificate leaves.
    fn drain(&mut self, out: &mut Vec<Vec<u8>>) {
        let mut pending: Vec<Vec<u8>> = Vec::new();
        loop {
            let Some(dtls) = self.dtls.as_mut() else {
                return;
            };
            match dtls.poll_output(&mut self.poll_buf) {
                dimpl::Output::Packet(p) => pending.push(p.to_vec()),
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
                        return;
                    }
                    self.peer_verified = true;
                }
                dimpl::Output::Connected => self.dimpl_connected = true,
                dimpl::Output::KeyingMaterial(km, profile) => {
                    if !self.peer_verified {
                        self.fail(DtlsError::Handshake(HandshakeFailure::Certificate));
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
                // No data channel yet: application data is ignored.
                dimpl::Output::ApplicationData(_) => {}
                dimpl::Output::CloseNotify => {
                    self.fail(DtlsError::PeerClosed);
                    return;
                }
                _ => {}
            }
        }
        out.append(&mut pending);
        if self.dimpl_connected && self.state == State::Handshaking {
            if !self.peer_verified {
                self.fail(DtlsError::Handshake(HandshakeFailure::Certificate));
            } else if let Some(keys) = self.keys.take() {
                self.state = State::Connected;
                self.outcome = Some(DtlsOutcome::Connected(keys));
            } else {
                self.fail(DtlsError::NoSrtpProfile);
            }
        }
    }
}
