//! STUN: connectivity checks, answered by whichever shard receives them (see the
//! module docs of the engine), and the claim of a session by its home shard.

use super::*;

/// The most addresses of one session a shard routes from: the checked-but-not-nominated
/// ones an ICE agent remembers ([`crate::ice::VALIDATED_CAP`]), the nominated one, and
/// the media address while a move to the nominated one is pending.
pub(super) const MAX_INDEXED: usize = crate::ice::VALIDATED_CAP + 2;

/// A connected session's media address moves at most once per this long.
pub(super) const MOVE_GAP: Duration = Duration::from_secs(1);

impl Engine {
    pub(super) fn handle_stun(
        &mut self,
        now: Instant,
        from: SocketAddr,
        buf: &[u8],
    ) -> Result<(), DropReason> {
        self.stats.stun_in += 1;
        let msg = StunMessage::parse(buf).map_err(|_| DropReason::StunMalformed)?;
        let ufrag = ice::local_ufrag_of(&msg).ok_or(DropReason::StunMalformed)?;
        let &h = self
            .by_ufrag
            .get(ufrag)
            .ok_or(DropReason::StunUnknownUfrag)?;
        if self.tx.is_full() {
            // Not even looked at: a check we cannot answer must not change state.
            return Err(DropReason::TxQueueFull);
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
            // at most once per ALIVE_EVERY: each is a message that must arrive, and the
            // channel to the home carries other sessions' too.
            let s = self
                .sessions
                .get_mut(h)
                .ok_or(DropReason::StunUnknownUfrag)?;
            let last = s.checked_sent.iter().position(|&(addr, _)| addr == from);
            let repeat = last
                .is_some_and(|i| now.saturating_duration_since(s.checked_sent[i].1) < ALIVE_EVERY);
            if nominated || !repeat {
                match last {
                    Some(i) => s.checked_sent[i].1 = now,
                    None => {
                        if s.checked_sent.len() >= MAX_INDEXED {
                            s.checked_sent.remove(0);
                        }
                        s.checked_sent.push((from, now));
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
            rtcp_sent: None,
            checked_on: Vec::new(),
            rehandshake: None,
        }));
        let msg = PeerMsg::Claimed {
            session: s.spec.id.clone(),
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
            // new session): the old one no longer routes from it.
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

    /// After a valid check of session `h` homed here (answered here or elsewhere).
    pub(super) fn after_check(&mut self, now: Instant, h: SessionHandle) {
        self.move_media(now, h);
        self.maybe_connected(h);
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
        let Some(sel) = s
            .ice
            .selected()
            .filter(|&sel| s.addr.is_some_and(|a| a != sel))
        else {
            return;
        };
        let Some(local) = s.local().filter(|l| l.keyed()) else {
            return;
        };
        if local
            .moved_at
            .is_some_and(|t| now.saturating_duration_since(t) < MOVE_GAP)
        {
            self.schedule(h);
            return;
        }
        local.moved_at = Some(now);
        self.stats.media_moves += 1;
        self.set_connected(h, Some(sel));
    }

    /// When a connected session homed here may next move its media, if a nomination
    /// is waiting for it.
    pub(super) fn move_due(s: &Session) -> Option<Instant> {
        let Home::Here(local) = &s.home else {
            return None;
        };
        if s.addr.is_none() || s.ice.selected() == s.addr || !local.keyed() {
            return None;
        }
        local.moved_at.map(|t| t + MOVE_GAP)
    }
}
