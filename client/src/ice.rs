//! The controlling side of ICE (RFC 8445) against the relay's ICE-lite agent: one
//! candidate pair (our host address → the relay's candidate from the SDP answer),
//! aggressive nomination, then consent freshness (RFC 7675).
//!
//! # Connectivity check and its retransmissions
//!
//! One Binding request with USERNAME `relay_ufrag:local_ufrag`, PRIORITY (a
//! peer-reflexive priority, RFC 8445 §7.1.1), ICE-CONTROLLING with our tie-breaker,
//! USE-CANDIDATE (the relay is ICE-lite, so we nominate at once), MESSAGE-INTEGRITY
//! keyed with the relay's password and FINGERPRINT. It is retransmitted on RFC 5389
//! §7.2.1's schedule, here with RTO = 500 ms (a known, low-latency path to a server, the
//! RFC's own example value): requests at 0, 500, 1500, 3500, 7500, 15500 and 31500 ms
//! (Rc = 7), then a final wait of Rm × RTO = 16 × 500 ms, so the check fails at
//! 39500 ms. All retransmissions reuse the transaction id, so a response to any of them
//! counts.
//!
//! The check succeeds on a Binding success response from the relay's address whose
//! transaction id is ours, whose FINGERPRINT (when present) is right and whose
//! MESSAGE-INTEGRITY verifies with the relay's password; the pair is then selected.
//! Anything else is dropped with a reason. A verified error response fails ICE.
//!
//! # Consent
//!
//! Once selected, a fresh Binding request (new transaction id, no USE-CANDIDATE, not
//! retransmitted: the next one follows soon) goes out every 4–6 s, uniformly random
//! (RFC 7675 §5.1: 5 s ± 20 %). Consent is lost, and ICE fails, when no verified
//! response has arrived for 30 s. The participant may ask for a check sooner
//! ([`IceAgent::check_now`]).
//!
//! # A new address
//!
//! Each verified answer's XOR-MAPPED-ADDRESS says where the relay sees us. When it
//! differs from the previous answer's, our NAT gave us a new address (a rebinding; RFC
//! 8445 §7.2.5.3.1 calls it a peer-reflexive candidate): we nominate it at once. The
//! next check carries USE-CANDIDATE and goes out now; until one such check is answered
//! without another change, checks nominate and follow every RTO (500 ms), and the next
//! one after that answer goes out 4 s later. The relay moves a connected session's
//! media to the address it last nominated once we answer its check of that address
//! (below), so media follows without a new DTLS handshake.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use blindfold_relay::wire::stun::{
    Class, Method, StunError, StunMessage, StunWriter, TransactionId,
};

use crate::rng::Rng;
use crate::{DropReason, FailReason};

/// ICE short-term credentials of one side (RFC 8445 §5.3, `a=ice-ufrag` / `a=ice-pwd`).
#[derive(Clone, PartialEq, Eq)]
pub struct IceCredentials {
    /// The username fragment.
    pub ufrag: String,
    /// The password (keys MESSAGE-INTEGRITY).
    pub pwd: String,
}

impl std::fmt::Debug for IceCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IceCredentials")
            .field("ufrag", &self.ufrag)
            .finish_non_exhaustive()
    }
}

/// ICE timers.
///
/// `Default`: the connectivity check (with USE-CANDIDATE) goes out at 0 ms and is
/// retransmitted with RFC 5389 §7.2.1's doubling from RTO = 500 ms, 7 requests in all
/// (0, 500, 1500, 3500, 7500, 15500, 31500 ms), then a final wait of 16 × RTO: with no
/// verified answer the participant fails at 39500 ms. Once selected, a consent check
/// every 4–6 s (uniformly random, RFC 7675); no verified answer for 30 s fails it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IceSettings {
    /// Initial retransmission timeout of the connectivity check (500 ms).
    pub rto: Duration,
    /// Requests sent in all, Rc (7).
    pub max_requests: u32,
    /// Final wait after the last request, in RTOs, Rm (16).
    pub final_wait_rtos: u32,
    /// Shortest gap between consent checks (4 s).
    pub consent_min: Duration,
    /// Longest gap between consent checks (6 s).
    pub consent_max: Duration,
    /// Consent is lost after this long without a verified response (30 s).
    pub consent_timeout: Duration,
}

impl Default for IceSettings {
    fn default() -> Self {
        IceSettings {
            rto: Duration::from_millis(500),
            max_requests: 7,
            final_wait_rtos: 16,
            consent_min: Duration::from_secs(4),
            consent_max: Duration::from_secs(6),
            consent_timeout: Duration::from_secs(30),
        }
    }
}

/// PRIORITY of a peer-reflexive candidate for component 1 (RFC 8445 §5.1.2.1):
/// type preference 110, local preference 65535.
pub(crate) const PRFLX_PRIORITY: u32 = (110 << 24) | (65535 << 8) | (256 - 1);

/// Consent transactions remembered (30 s / 4 s, rounded up).
const CONSENT_TIDS: usize = 8;

/// Longest ufrag or password accepted (RFC 8445 §5.3 allows up to 256 characters).
pub(crate) const MAX_CREDENTIAL_LEN: usize = 256;

/// Largest STUN message we build: USERNAME of two ufrags, plus the fixed attributes.
const STUN_BUF: usize = 2 * MAX_CREDENTIAL_LEN + 128;

#[derive(Debug)]
enum State {
    Checking {
        tid: TransactionId,
        sent: u32,
        next: Instant,
    },
    Selected {
        last_consent: Instant,
        next_check: Instant,
        /// Our open checks, oldest first, and whether each nominated.
        tids: VecDeque<(TransactionId, bool)>,
        /// Where the relay sees us: the XOR-MAPPED-ADDRESS of its latest answer.
        mapped: Option<SocketAddr>,
        /// We saw a new address and no nominating check was answered since.
        nominating: bool,
    },
    Failed,
}

/// What the agent reports to the participant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IceEvent {
    Selected,
    /// The relay sees us at a new address; we nominate it.
    AddressChanged(SocketAddr),
    Failed(FailReason),
}

#[derive(Debug)]
pub(crate) struct IceAgent {
    local: IceCredentials,
    remote: IceCredentials,
    remote_addr: SocketAddr,
    tie_breaker: u64,
    settings: IceSettings,
    state: State,
    /// When the last check went out.
    last_check: Option<Instant>,
    transmit: VecDeque<Vec<u8>>,
    events: VecDeque<IceEvent>,
}

impl IceAgent {
    /// Starts checking: the first request is queued at once.
    pub(crate) fn new(
        local: IceCredentials,
        remote: IceCredentials,
        remote_addr: SocketAddr,
        settings: IceSettings,
        rng: &mut Rng,
        now: Instant,
    ) -> Self {
        let tie_breaker = rng.next_u64();
        let mut tid = TransactionId([0; 12]);
        rng.fill(&mut tid.0);
        let mut agent = IceAgent {
            local,
            remote,
            remote_addr,
            tie_breaker,
            settings,
            state: State::Checking {
                tid,
                sent: 0,
                next: now,
            },
            last_check: None,
            transmit: VecDeque::new(),
            events: VecDeque::new(),
        };
        agent.handle_timeout(now, rng);
        agent
    }

    pub(crate) fn tie_breaker(&self) -> u64 {
        self.tie_breaker
    }

    pub(crate) fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.transmit.pop_front()
    }

    pub(crate) fn poll_event(&mut self) -> Option<IceEvent> {
        self.events.pop_front()
    }

    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        match &self.state {
            State::Checking { next, .. } => Some(*next),
            State::Selected {
                last_consent,
                next_check,
                ..
            } => Some((*next_check).min(*last_consent + self.settings.consent_timeout)),
            State::Failed => None,
        }
    }

    /// When the relay last answered a check of ours (verified), once selected.
    pub(crate) fn last_consent(&self) -> Option<Instant> {
        match &self.state {
            State::Selected { last_consent, .. } => Some(*last_consent),
            _ => None,
        }
    }

    /// When we last sent a check (selected or not): `None` before the first.
    pub(crate) fn last_check(&self) -> Option<Instant> {
        self.last_check
    }

    /// Sends a consent check now instead of at its time (once selected): its answer
    /// says where the relay sees us.
    pub(crate) fn check_now(&mut self, now: Instant) {
        if let State::Selected { next_check, .. } = &mut self.state {
            *next_check = (*next_check).min(now);
        }
    }

    /// Stops everything (the participant failed for another reason).
    pub(crate) fn close(&mut self) {
        self.state = State::Failed;
        self.transmit.clear();
    }

    fn fail(&mut self, reason: FailReason) {
        self.state = State::Failed;
        self.transmit.clear();
        self.events.push_back(IceEvent::Failed(reason));
    }

    pub(crate) fn handle_timeout(&mut self, now: Instant, rng: &mut Rng) {
        match &mut self.state {
            State::Checking { tid, sent, next } => {
                if now < *next {
                    return;
                }
                let s = self.settings;
                if *sent >= s.max_requests {
                    self.fail(FailReason::IceTimeout);
                    return;
                }
                // The wait after request n (1-based) is RTO·2^(n-1); after the last,
                // Rm·RTO.
                *sent += 1;
                *next = if *sent >= s.max_requests {
                    now + s.rto * s.final_wait_rtos
                } else {
                    now + s.rto * (1u32 << (*sent - 1).min(16))
                };
                let tid = *tid;
                self.queue_request(tid, true);
            }
            State::Selected {
                last_consent,
                next_check,
                tids,
                nominating,
                ..
            } => {
                if now >= *last_consent + self.settings.consent_timeout {
                    self.fail(FailReason::ConsentLost);
                    return;
                }
                if now < *next_check {
                    return;
                }
                let nominate = *nominating;
                *next_check = now
                    + if nominate {
                        self.settings.rto
                    } else {
                        rng.between(self.settings.consent_min, self.settings.consent_max)
                    };
                let mut tid = TransactionId([0; 12]);
                rng.fill(&mut tid.0);
                if tids.len() >= CONSENT_TIDS {
                    tids.pop_front();
                }
                tids.push_back((tid, nominate));
                self.queue_request(tid, nominate);
            }
            State::Failed => return,
        }
        self.last_check = Some(now);
    }

    fn queue_request(&mut self, tid: TransactionId, nominate: bool) {
        let mut buf = [0u8; STUN_BUF];
        // Cannot fail: Participant::new checked the credentials' lengths.
        if let Ok(n) = self.build_request(&mut buf, tid, nominate) {
            self.transmit.push_back(buf[..n].to_vec());
        }
    }

    fn build_request(
        &self,
        buf: &mut [u8],
        tid: TransactionId,
        nominate: bool,
    ) -> Result<usize, StunError> {
        let mut w = StunWriter::new(buf, Class::Request, Method::Binding, tid)?;
        // RFC 8445 §7.2.2: "RFRAG:LFRAG", the responder's fragment first.
        let mut user = [0u8; 2 * MAX_CREDENTIAL_LEN + 1];
        let username = join_username(&mut user, &self.remote.ufrag, &self.local.ufrag)
            .ok_or(StunError::UsernameTooLong)?;
        w.add_username(username)?;
        w.add_priority(PRFLX_PRIORITY)?;
        w.add_ice_controlling(self.tie_breaker)?;
        if nominate {
            w.add_use_candidate()?;
        }
        w.finish_with_integrity_and_fingerprint(self.remote.pwd.as_bytes())
    }

    /// Handles a STUN datagram from the relay's address.
    pub(crate) fn handle_stun(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &[u8],
    ) -> Result<(), DropReason> {
        let msg = StunMessage::parse(datagram).map_err(DropReason::Stun)?;
        if msg.method() != Method::Binding {
            return Err(DropReason::StunUnexpected);
        }
        match msg.class() {
            Class::Request => self.answer_request(&msg, from),
            Class::Indication => Ok(()), // keepalives; nothing to do
            Class::SuccessResponse | Class::ErrorResponse => self.handle_response(now, &msg),
        }
    }

    fn handle_response(&mut self, now: Instant, msg: &StunMessage<'_>) -> Result<(), DropReason> {
        let tid = msg.transaction_id();
        let ours = match &self.state {
            State::Checking { tid: t, .. } => *t == tid,
            State::Selected { tids, .. } => tids.iter().any(|(t, _)| *t == tid),
            State::Failed => return Err(DropReason::Failed),
        };
        if !ours {
            return Err(DropReason::StunUnknownTransaction);
        }
        if msg.has_fingerprint() {
            msg.verify_fingerprint().map_err(DropReason::Stun)?;
        }
        msg.verify_integrity(self.remote.pwd.as_bytes())
            .map_err(DropReason::Stun)?;
        if msg.class() == Class::ErrorResponse {
            let code = msg.error_code().ok().flatten().map_or(0, |e| e.code);
            self.fail(FailReason::IceErrorResponse(code));
            return Ok(());
        }
        // An answer without the attribute (or with one we cannot read) says nothing
        // about where the relay sees us.
        let seen = msg.xor_mapped_address().ok().flatten();
        match &mut self.state {
            State::Checking { .. } => {
                // Late answers to the check's retransmissions are still ours.
                self.state = State::Selected {
                    last_consent: now,
                    next_check: now + self.settings.consent_min,
                    tids: VecDeque::from([(tid, true)]),
                    mapped: seen,
                    nominating: false,
                };
                self.events.push_back(IceEvent::Selected);
            }
            State::Selected {
                last_consent,
                next_check,
                tids,
                mapped,
                nominating,
            } => {
                *last_consent = (*last_consent).max(now);
                let nominated = tids.iter().any(|&(t, n)| t == tid && n);
                tids.retain(|(t, _)| *t != tid);
                match seen {
                    Some(addr) if mapped.is_some_and(|m| m != addr) => {
                        *mapped = Some(addr);
                        *nominating = true;
                        *next_check = now;
                        self.events.push_back(IceEvent::AddressChanged(addr));
                    }
                    Some(addr) if mapped.is_none() => *mapped = Some(addr),
                    // The relay has the new address: back to consent's pace.
                    _ if nominated && *nominating => {
                        *nominating = false;
                        *next_check = now + self.settings.consent_min;
                    }
                    _ => {}
                }
            }
            State::Failed => {}
        }
        Ok(())
    }

    /// A full agent answers checks too: the relay, ICE-lite, sends one to an address we
    /// nominate before its media goes there (docs/protocol.md, "ICE"), and media goes
    /// there on our answer. USERNAME `local:remote`, integrity with our pwd.
    fn answer_request(
        &mut self,
        msg: &StunMessage<'_>,
        from: SocketAddr,
    ) -> Result<(), DropReason> {
        if matches!(self.state, State::Failed) {
            return Err(DropReason::Failed);
        }
        msg.verify_fingerprint().map_err(DropReason::Stun)?;
        let mut user = [0u8; 2 * MAX_CREDENTIAL_LEN + 1];
        let expected = join_username(&mut user, &self.local.ufrag, &self.remote.ufrag)
            .ok_or(DropReason::StunUnauthorized)?;
        if msg.username().map_err(DropReason::Stun)? != Some(expected) {
            return Err(DropReason::StunUnauthorized);
        }
        msg.verify_integrity(self.local.pwd.as_bytes())
            .map_err(DropReason::Stun)?;
        if msg.first_unknown_required().is_some() {
            return Err(DropReason::StunUnexpected);
        }
        let mut buf = [0u8; STUN_BUF];
        let n = (|| {
            let mut w = StunWriter::new(
                &mut buf,
                Class::SuccessResponse,
                Method::Binding,
                msg.transaction_id(),
            )?;
            w.add_xor_mapped_address(from)?;
            w.finish_with_integrity_and_fingerprint(self.local.pwd.as_bytes())
        })()
        .map_err(DropReason::Stun)?;
        self.transmit.push_back(buf[..n].to_vec());
        Ok(())
    }

    pub(crate) fn remote_addr(&self) -> SocketAddr {
        self.remote_addr
    }
}

/// Writes `a:b` into `buf`; `None` if it does not fit or is not a valid USERNAME.
fn join_username<'b>(buf: &'b mut [u8], a: &str, b: &str) -> Option<&'b str> {
    let n = a.len().checked_add(b.len())?.checked_add(1)?;
    let out = buf.get_mut(..n)?;
    out[..a.len()].copy_from_slice(a.as_bytes());
    out[a.len()] = b':';
    out[a.len() + 1..].copy_from_slice(b.as_bytes());
    std::str::from_utf8(out).ok()
}
