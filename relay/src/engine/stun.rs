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
        let &i = self
            .by_ufrag
            .get(ufrag)
            .ok_or(DropReason::StunUnknownUfrag)?;
        if self.tx.is_full() {
            // Not even looked at: a check we cannot answer must not change state.
            return Err(DropReason::TxQueueFull);
        }
        let s = self.sessions[i].as_mut().expect("indexed session exists");
        if s.local().is_some_and(|l| l.failed) {
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
        self.index_addr(i, from);
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
        // A valid check: this shard takes the session if nobody has.
        let s = self.sessions[i].as_mut().expect("indexed session exists");
        if let Home::Unclaimed = s.home {
            let dtls = DtlsSession::server(&self.cfg.dtls, &self.cfg.cert, s.spec.fingerprint, now);
            s.home = Home::Here(Box::new(Local {
                dtls,
                srtcp_in: None,
                srtcp_out: None,
                failed: false,
                dtls_from: None,
            }));
            let msg = PeerMsg::Claimed {
                session: s.spec.id.clone(),
                shard: self.cfg.shard,
                key: SessionKey {
                    slot: i as u32,
                    incarnation: s.incarnation,
                },
            };
            self.events.push_back(Event::Peer(PeerDest::All, msg));
            self.schedule(i);
        }
        self.after_check(i);
        Ok(())
    }

    /// Lets this shard find session `i` by `from` (DTLS, SRTCP and media from it).
    pub(super) fn index_addr(&mut self, i: usize, from: SocketAddr) {
        let s = self.sessions[i].as_mut().expect("indexed session exists");
        if !s.indexed.contains(&from) {
            s.indexed.push(from);
            self.by_addr.insert(from, i);
        }
    }

    /// After a valid check of session `i` homed here (answered here or elsewhere).
    pub(super) fn after_check(&mut self, i: usize) {
        let s = self.sessions[i].as_mut().expect("indexed session exists");
        // A (re-)nomination of a connected session moves its media address.
        if let (Some(sel), Some(addr)) = (s.ice.selected(), s.addr)
            && sel != addr
            && s.local().is_some_and(|l| l.srtcp_out.is_some())
        {
            self.set_connected(i, Some(sel));
        }
        self.maybe_connected(i);
    }
}
