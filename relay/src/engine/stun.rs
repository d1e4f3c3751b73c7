//! STUN: connectivity checks, answered by whichever shard receives them (see the
//! module docs of the engine), and the claim of a session by its home shard.

use super::*;

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
            let msg = PeerMsg::Checked {
                session: key,
                from,
                nominated,
            };
            self.events
                .push_back(Event::Peer(PeerDest::Shard(home), msg));
            return Ok(());
        }
        self.claim(now, h);
        self.after_check(h);
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
    pub(super) fn index_addr(&mut self, h: SessionHandle, from: SocketAddr) {
        let Some(s) = self.sessions.get_mut(h) else {
            return;
        };
        if s.indexed.contains(&from) {
            return;
        }
        let first = s.indexed.is_empty();
        s.indexed.push(from);
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
    pub(super) fn after_check(&mut self, h: SessionHandle) {
        let Some(s) = self.sessions.get_mut(h) else {
            return;
        };
        // A (re-)nomination of a connected session moves its media address.
        if let (Some(sel), Some(addr)) = (s.ice.selected(), s.addr)
            && sel != addr
            && s.local().is_some_and(|l| l.keyed())
        {
            self.set_connected(h, Some(sel));
        }
        self.maybe_connected(h);
    }
}
