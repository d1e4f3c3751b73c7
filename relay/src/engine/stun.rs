//! STUN: connectivity checks, answered by whichever shard receives them (see the
//! module docs of the engine), and the claim of a session by its home shard.

use super::*;
use crate::wire::stun::{Class, IntegrityKey, Method, StunError, StunWriter, TransactionId};

/// How often a shard hands a session's home a nomination from one address: a flood of
/// them costs the home's channel ten messages a second per address at most.
const NOMINATION_EVERY: Duration = Duration::from_millis(100);

/// How many checks a shard hands one session's home per second, a second's worth at
/// once, whatever the addresses: ICE agents check each pair every few hundred
/// milliseconds at most, and the per-address limits above keep a steady agent far
/// below this; a participant cycling through source ports gets its checks answered,
/// not all of them passed on (nor counted as drops: they were answered).
pub(super) const CHECKS_HANDED_PER_SECOND: u32 = 50;

/// The most addresses of one session a shard routes from: the checked-but-not-nominated
/// ones an ICE agent remembers ([`crate::ice::VALIDATED_CAP`]), the nominated one, and
/// the media address while a move to the nominated one is pending.
pub(super) const MAX_INDEXED: usize = crate::ice::VALIDATED_CAP + 2;

/// A connected session's media address moves at most once per this long.
pub(super) const MOVE_GAP: Duration = Duration::from_secs(1);

/// How long the relay waits for the answer to its first check of a nominated address
/// before it sends it again; each later wait is twice the one before.
pub(super) const PATH_CHECK_RETRY: Duration = Duration::from_millis(250);

/// How many times the relay sends its check of one nomination (at 0, 0.25, 0.75, 1.75
/// and 3.75 s) before it gives up until the participant nominates that address again:
/// a forged nomination gets its victim this many small datagrams, no more.
pub(super) const PATH_CHECK_SENDS: u8 = 5;

/// The relay's own connectivity check of the address a participant nominated (RFC
/// 7675's consent, asked of that path), before any media goes there: the
/// participant's checks prove only that it knows its credentials, and a check with a
/// forged source address would otherwise point the conference's media at anyone. The
/// check goes to the nominated address keyed with the participant's password, and
/// media goes there once the answer comes back from there, carrying the check's random
/// transaction id — which only a receiver at that address has seen.
pub(super) struct PathCheck {
    addr: SocketAddr,
    tid: TransactionId,
    /// When it was last sent, and how many times.
    sent: Instant,
    sends: u8,
    answered: bool,
}

impl PathCheck {
    /// When it may next be sent (to `addr` again, or a new one to another address).
    fn next(&self) -> Instant {
        self.sent + PATH_CHECK_RETRY * (1u32 << self.sends.saturating_sub(1).min(4))
    }
}

/// A fresh random transaction id: it is the proof a path check's answer carries, so
/// it must not be guessable.
fn random_tid() -> TransactionId {
    let mut tid = [0u8; 12];
    // aws-lc's RNG does not fail once initialised; if it did, a fixed id only makes
    // the move wait for an answer nobody could forge better than before.
    let _ = aws_lc_rs::rand::fill(&mut tid);
    TransactionId(tid)
}

/// Writes the relay's check of a participant's address into `out`: Binding request,
/// USERNAME `remote_ufrag:ice_ufrag` (the participant's ufrag first: it is the one
/// asked), PRIORITY, ICE-CONTROLLED (the lite side), MESSAGE-INTEGRITY keyed with the
/// participant's password, FINGERPRINT.
fn write_path_check(
    out: &mut [u8],
    tid: TransactionId,
    spec: &SessionRule,
    pwd: &str,
) -> Result<usize, StunError> {
    let mut w = StunWriter::new(out, Class::Request, Method::Binding, tid)?;
    let mut user = String::with_capacity(spec.remote_ufrag.len() + 1 + spec.ice_ufrag.len());
    user.push_str(&spec.remote_ufrag);
    user.push(':');
    user.push_str(&spec.ice_ufrag);
    w.add_username(&user)?;
    // A host candidate's priority (RFC 8445 §5.1.2.1, type preference 126).
    w.add_priority((126 << 24) | (65535 << 8) | 255)?;
    w.add_ice_controlled(u64::from_be_bytes([
        tid.0[0], tid.0[1], tid.0[2], tid.0[3], 0, 0, 0, 1,
    ]))?;
    w.add_message_integrity(&IntegrityKey::new(pwd.as_bytes()))?;
    w.finish_with_fingerprint()
}

/// Whether `msg` is an answer keyed with session `s`'s participant's password (with a
/// valid FINGERPRINT): one to a check of the relay's.
fn verify_answer(s: &Session, msg: &StunMessage<'_>) -> Result<(), DropReason> {
    let pwd = s
        .spec
        .remote_pwd
        .as_deref()
        .ok_or(DropReason::StunRejected)?;
    msg.verify_fingerprint()
        .map_err(|_| DropReason::StunRejected)?;
    msg.verify_integrity(pwd.as_bytes())
        .map_err(|_| DropReason::StunRejected)
}

impl Engine {
    pub(super) fn handle_stun(
        &mut self,
        now: Instant,
        from: SocketAddr,
        buf: &[u8],
    ) -> Result<(), DropReason> {
        self.stats.stun_in += 1;
        let msg = StunMessage::parse(buf).map_err(|_| DropReason::StunMalformed)?;
        if msg.class() != Class::Request {
            return self.handle_stun_response(now, from, &msg, buf);
        }
        let ufrag = ice::local_ufrag_of(&msg).ok_or(DropReason::StunMalformed)?;
        let &h = self
            .by_ufrag
            .get(ufrag)
            .ok_or(DropReason::StunUnknownUfrag)?;
        if self.tx.is_full() {
            // Not even looked at: a check we cannot answer must not change state.
            return Err(DropReason::TxQueueFull);
        }
        // An address another live session receives its media at stays that session's:
        // a check from it for this one is a forgery (a spoofed source, which would take
        // the address and the victim's uplink over), or a socket reused while its old
        // session lives on (that one ends within the consent timeout, or when
        // signaling removes it). Not answered.
        if let Some(&o) = self.by_addr.get(&from)
            && o != h
            && self
                .sessions
                .get(o)
                .is_some_and(|o| o.addr == Some(from) && !o.ended_here())
        {
            return Err(DropReason::AddressInUse);
        }
        let s = self
            .sessions
            .get_mut(h)
            .ok_or(DropReason::StunUnknownUfrag)?;
        if s.ended_here() {
            return Err(DropReason::DtlsRejected);
        }
        let home = match s.home {
            Home::Elsewhere(home, key) => Some((home, key)),
            _ => None,
        };
        let mut answer = None;
        self.tx.push(from, |out| {
            let outcome = match home {
                // Answered here, recorded by the home (see the module docs).
                Some(_) => s.ice.answer(from, &msg, out),
                None => s.ice.handle_binding(now, from, &msg, out),
            };
            answer = Some(outcome);
            outcome.response_len().ok_or(())
        });
        let nominated = match answer.ok_or(DropReason::StunMalformed)? {
            IceOutcome::Success { nominated, .. } => nominated,
            IceOutcome::ErrorResponse { .. } => return Err(DropReason::StunRejected),
            IceOutcome::Dropped(_) => return Err(DropReason::StunMalformed),
        };
        self.index_addr(h, from);
        if let Some((home, key)) = home {
            // A participant's checks from each address, flooded or not, reach its home
            // at most once per ALIVE_EVERY, and its nominations from it at most once per
            // NOMINATION_EVERY (often enough for one that nominates this address again
            // after another, a NAT flapping, to be heard): each is a message that must
            // arrive, and the channel to the home carries other sessions' too.
            let s = self
                .sessions
                .get_mut(h)
                .ok_or(DropReason::StunUnknownUfrag)?;
            let last = s.checked_sent.iter().position(|&(addr, ..)| addr == from);
            let repeat = last.is_some_and(|i| {
                let (_, at, was_nominated) = s.checked_sent[i];
                let since = now.saturating_duration_since(at);
                match nominated {
                    true => was_nominated && since < NOMINATION_EVERY,
                    false => since < ALIVE_EVERY,
                }
            });
            if !repeat && s.checks_handed.try_take(now, 1) {
                match last {
                    Some(i) => s.checked_sent[i] = (from, now, nominated),
                    None => {
                        if s.checked_sent.len() >= MAX_INDEXED {
                            s.checked_sent.remove(0);
                        }
                        s.checked_sent.push((from, now, nominated));
                    }
                }
                let msg = PeerMsg::Checked {
                    session: key,
                    shard: self.cfg.shard,
                    from,
                    nominated,
                };
                self.events
                    .push_back(Event::Peer(PeerDest::Shard(home), msg));
            }
            return Ok(());
        }
        self.claim(now, h);
        if nominated {
            self.renominated(h, from);
        }
        self.after_check(now, h);
        Ok(())
    }

    /// A valid check of a session nobody runs: this shard takes it and tells the others.
    fn claim(&mut self, now: Instant, h: SessionHandle) {
        let Some(s) = self.sessions.get_mut(h) else {
            return;
        };
        if !matches!(s.home, Home::Unclaimed { .. }) {
            return;
        }
        let dtls = DtlsSession::server(&self.cfg.dtls, &self.cfg.cert, s.spec.fingerprint, now);
        s.home = Home::Here(Box::new(Local {
            dtls,
            link: Link::Handshaking,
            dtls_from: None,
            downlink: bandwidth::Downlink::new(self.cfg.downlink_queue),
            nack_budget: media::Budget::new(self.cfg.nack_max_per_second),
            rtcp_budget: media::Budget::new(self.cfg.rtcp_max_per_second),
            moved_at: None,
            path_check: None,
            rtcp_sent: None,
            keyed_at: None,
            checked_on: Vec::new(),
            rehandshake: None,
        }));
        let msg = PeerMsg::Claimed {
            session: s.spec.id.clone(),
            identity: s.identity,
            shard: self.cfg.shard,
            key: h,
        };
        self.events.push_back(Event::Peer(PeerDest::All, msg));
        self.schedule(h);
    }

    /// Lets this shard find session `h` by `from` (DTLS, SRTCP and media from it). The
    /// first such address makes this shard route the session's media: it builds the
    /// session's fan-out lists.
    ///
    /// A session keeps at most [`MAX_INDEXED`] addresses here, most recently checked
    /// last: a participant checking from one new port after another (its own ICE
    /// password, any number of source addresses) would otherwise grow the shard's
    /// address map without end. Past the cap the least recently checked address that
    /// is neither the media address nor (on the home, which records nominations) the
    /// nominated one is forgotten; if it checks again, it is indexed again.
    pub(super) fn index_addr(&mut self, h: SessionHandle, from: SocketAddr) {
        let Some(s) = self.sessions.get_mut(h) else {
            return;
        };
        if let Some(i) = s.indexed.iter().position(|&a| a == from) {
            s.indexed[i..].rotate_left(1);
            return;
        }
        let first = s.indexed.is_empty();
        let keep = [s.ice.selected(), s.addr];
        let evicted = (s.indexed.len() >= MAX_INDEXED)
            .then(|| s.indexed.iter().position(|a| !keep.contains(&Some(*a))))
            .flatten()
            .map(|i| s.indexed.remove(i));
        s.indexed.push(from);
        if let Some(old) = evicted
            && self.by_addr.get(&old) == Some(&h)
        {
            self.by_addr.remove(&old);
        }
        if let Some(other) = self.by_addr.insert(from, h)
            && other != h
        {
            // The address moved to this session (a participant's socket reused for a
            // new session): the old one no longer routes from it. Never one another
            // live session receives its media at: `handle_stun` refuses those checks
            // (`address_in_use`) before they get here.
            self.unindex_addr(other, from);
        }
        if first {
            self.fanout_build(h);
        }
    }

    /// Session `h` no longer routes from `addr` (another session took it over).
    fn unindex_addr(&mut self, h: SessionHandle, addr: SocketAddr) {
        let Some(s) = self.sessions.get_mut(h) else {
            return;
        };
        s.indexed.retain(|&a| a != addr);
        if s.indexed.is_empty() {
            self.fanout_build(h);
        }
    }

    /// After a valid check of session `h` homed here (answered here or elsewhere), or
    /// the answer to the relay's own.
    pub(super) fn after_check(&mut self, now: Instant, h: SessionHandle) {
        self.move_media(now, h);
        self.maybe_connected(now, h);
    }

    /// A (re-)nomination of connected session `h` moves its media address — at most
    /// once per [`MOVE_GAP`]: each move tells every shard, rebuilds the session's
    /// fan-out entries and replays the recent SRs to it, and a participant nominating
    /// two of its ports in turn would have the relay do that on every check. A
    /// nomination sooner after the last move waits for the session's timer, which
    /// moves it to whatever ICE has nominated by then.
    pub(super) fn move_media(&mut self, now: Instant, h: SessionHandle) {
        let Some(s) = self.sessions.get_mut(h) else {
            return;
        };
        let (addr, selected) = (s.addr, s.ice.selected());
        let Some(local) = s.local().filter(|l| l.keyed()) else {
            return;
        };
        let Some(sel) = selected.filter(|&sel| addr.is_some_and(|a| a != sel)) else {
            // Nominated back where its media goes: a check of elsewhere is moot.
            if selected.is_some() && selected == addr {
                local.path_check = None;
            }
            return;
        };
        if local
            .moved_at
            .is_some_and(|t| now.saturating_duration_since(t) < MOVE_GAP)
        {
            self.schedule(h);
            return;
        }
        if !self.path_proven(now, h, sel) {
            self.schedule(h);
            return;
        }
        if let Some(local) = self.sessions.get_mut(h).and_then(|s| s.local()) {
            local.path_check = None;
            local.moved_at = Some(now);
        }
        self.stats.media_moves += 1;
        self.set_connected(h, Some(sel));
    }

    /// Whether media of session `h` (homed here) may go to `sel`, the address it
    /// nominated: always if signaling gave no participant password; else once the
    /// participant answered the relay's [`PathCheck`] from there. Sends the check
    /// (again) when it is due.
    pub(super) fn path_proven(&mut self, now: Instant, h: SessionHandle, sel: SocketAddr) -> bool {
        let Some(s) = self.sessions.get_mut(h) else {
            return false;
        };
        let Some(pwd) = s.spec.remote_pwd.as_deref() else {
            return true;
        };
        let Home::Here(local) = &mut s.home else {
            return false;
        };
        let tid = match &local.path_check {
            Some(c) if c.addr == sel && c.answered => return true,
            // Given up until the address is nominated again, or not due yet (a check
            // of another address included: one new check per wait, however often the
            // nomination flips).
            Some(c) if c.addr == sel && c.sends >= PATH_CHECK_SENDS => return false,
            Some(c) if now < c.next() => return false,
            // The same id again: an answer to an earlier send still counts.
            Some(c) if c.addr == sel => c.tid,
            _ => random_tid(),
        };
        let sends = match &local.path_check {
            Some(c) if c.addr == sel => c.sends,
            _ => 0,
        };
        local.path_check = Some(PathCheck {
            addr: sel,
            tid,
            sent: now,
            sends: sends + 1,
            answered: false,
        });
        let spec = &s.spec;
        if self
            .tx
            .push(sel, |out| write_path_check(out, tid, spec, pwd))
        {
            self.stats.path_checks += 1;
        }
        false
    }

    /// A nominating check of session `h` (homed here) from `from`: a path check of that
    /// address that gave up is sent again.
    pub(super) fn renominated(&mut self, h: SessionHandle, from: SocketAddr) {
        let check = self
            .sessions
            .get_mut(h)
            .and_then(|s| s.local())
            .and_then(|l| l.path_check.as_mut())
            .filter(|c| c.addr == from && !c.answered && c.sends >= PATH_CHECK_SENDS);
        if let Some(c) = check {
            c.sends = 0;
        }
    }

    /// A Binding success response from `from`: the answer to a path check of the
    /// session whose address `from` is, if its transaction id is the check's. Another
    /// shard hands it to the session's home (every shard may receive it: the kernel
    /// spreads addresses over the workers).
    pub(super) fn handle_stun_response(
        &mut self,
        now: Instant,
        from: SocketAddr,
        msg: &StunMessage<'_>,
        buf: &[u8],
    ) -> Result<(), DropReason> {
        if msg.class() != Class::SuccessResponse || msg.method() != Method::Binding {
            return Err(DropReason::StunMalformed);
        }
        let &h = self
            .by_addr
            .get(&from)
            .ok_or(DropReason::StunUnknownUfrag)?;
        let s = self.sessions.get(h).ok_or(DropReason::StunUnknownUfrag)?;
        match s.home {
            Home::Here(_) => self.confirm_path(now, h, from, msg),
            Home::Elsewhere(home, key) => {
                // Checked here (every shard holds the password): a forged answer, which
                // needs only the address, costs the home nothing.
                verify_answer(s, msg)?;
                self.hand_home(now, h, (home, key), from, buf)
            }
            Home::Unclaimed { .. } => Err(DropReason::StunRejected),
        }
    }

    /// The answer `msg`, from `from`, to session `h`'s (homed here) path check: if it
    /// is keyed with the participant's password and carries the check's transaction
    /// id, from the address checked, media moves there.
    pub(super) fn confirm_path(
        &mut self,
        now: Instant,
        h: SessionHandle,
        from: SocketAddr,
        msg: &StunMessage<'_>,
    ) -> Result<(), DropReason> {
        let s = self
            .sessions
            .get_mut(h)
            .ok_or(DropReason::StunUnknownUfrag)?;
        verify_answer(s, msg)?;
        let selected = s.ice.selected();
        let check = s
            .local()
            .and_then(|l| l.path_check.as_mut())
            .filter(|c| c.addr == from && c.tid == msg.transaction_id() && !c.answered)
            .filter(|c| Some(c.addr) == selected)
            .ok_or(DropReason::StunRejected)?;
        check.answered = true;
        self.after_check(now, h);
        Ok(())
    }

    /// When a session homed here may next move its media, or connect, or check the
    /// address it would go to again, if a nomination is waiting for it.
    pub(super) fn move_due(s: &Session) -> Option<Instant> {
        let Home::Here(local) = &s.home else {
            return None;
        };
        let sel = s.ice.selected()?;
        if Some(sel) == s.addr || !local.keyed() {
            return None;
        }
        let gap = s.addr.and(local.moved_at).map(|t| t + MOVE_GAP);
        let check = match &local.path_check {
            Some(c) if c.addr == sel && (c.answered || c.sends >= PATH_CHECK_SENDS) => None,
            Some(c) => Some(c.next()),
            None => None,
        };
        gap.into_iter().chain(check).max()
    }
}
