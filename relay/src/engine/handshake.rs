//! DTLS and connection state: the handshake on the home shard (datagrams from other
//! shards' addresses reach it whole), and when a session counts as connected,
//! disconnected or ended.

use super::*;

impl Engine {
    pub(super) fn handle_dtls(
        &mut self,
        now: Instant,
        from: SocketAddr,
        buf: &[u8],
    ) -> Result<(), DropReason> {
        self.stats.dtls_in += 1;
        let &h = self.by_addr.get(&from).ok_or(DropReason::Unvalidated)?;
        self.dtls_for(now, h, from, buf)
    }

    /// A DTLS datagram of session `h` from one of its validated addresses: handled if
    /// the session is homed here, else handed to its home.
    pub(super) fn dtls_for(
        &mut self,
        now: Instant,
        h: SessionHandle,
        from: SocketAddr,
        buf: &[u8],
    ) -> Result<(), DropReason> {
        let s = self.sessions.get_mut(h).ok_or(DropReason::Unvalidated)?;
        let local = match &mut s.home {
            Home::Here(local) => local,
            Home::Elsewhere(home, key) => {
                let (home, key) = (*home, *key);
                return self.hand_home(now, h, (home, key), from, buf);
            }
            Home::Unclaimed { .. } => return Err(DropReason::Unvalidated),
        };
        if local.ended() {
            return Err(DropReason::DtlsRejected);
        }
        local.dtls_from = Some(from);
        // A ClientHello on a keyed link starts a new handshake beside the association
        // (the participant connected again), which takes what follows but alerts (a
        // close_notify is the association's).
        let new_handshake = match &local.rehandshake {
            Some(_) => buf.first() != Some(&ALERT),
            None => local.keyed() && dtls::is_client_hello(buf),
        };
        let r = if new_handshake {
            let (cfg, cert) = (&self.cfg.dtls, &self.cfg.cert);
            let new = local.rehandshake.get_or_insert_with(|| {
                Box::new(Rehandshake {
                    dtls: DtlsSession::server(cfg, cert, s.spec.fingerprint, now),
                    cookie_by: now + REHANDSHAKE_COOKIE_WAIT,
                })
            });
            new.dtls.handle_datagram(now, buf)
        } else {
            local.dtls.handle_datagram(now, buf)
        };
        if r.is_ok() {
            s.ice.touch(now);
        }
        self.drain_dtls(h);
        match r {
            // The participant's goodbye, taken: its session ended (`EndReason::Closed`).
            Ok(()) | Err(DtlsError::PeerClosed) => Ok(()),
            Err(_) => Err(DropReason::DtlsRejected),
        }
    }

    /// Hands a datagram of session `h` (`key` on its home shard `home`) to its home,
    /// within the session's budget of handoffs (else `over_rate`).
    pub(super) fn hand_home(
        &mut self,
        now: Instant,
        h: SessionHandle,
        (home, key): (ShardId, SessionHandle),
        from: SocketAddr,
        buf: &[u8],
    ) -> Result<(), DropReason> {
        // Each is a copy and a message the home's channel carries beside every other
        // session's: at most the session's RTCP budget of them a second.
        let s = self.sessions.get_mut(h).ok_or(DropReason::Unvalidated)?;
        if !s.handoffs.try_take(now, 1) {
            return Err(DropReason::OverRate);
        }
        let msg = PeerMsg::Datagram {
            session: key,
            from,
            data: buf.into(),
        };
        self.events
            .push_back(Event::Peer(PeerDest::Shard(home), msg));
        Ok(())
    }

    // ----- DTLS and connection state ---------------------------------------------------

    /// Sends the session's pending DTLS datagrams, acts on its DTLS events, and
    /// schedules its next deadline (a retransmission timer may have been set).
    pub(super) fn drain_dtls(&mut self, h: SessionHandle) {
        self.drain_dtls_output(h);
        self.schedule(h);
    }

    fn drain_dtls_output(&mut self, h: SessionHandle) {
        let Some(s) = self.sessions.get_mut(h) else {
            return;
        };
        let Home::Here(local) = &mut s.home else {
            return;
        };
        // Where its media goes (an address that answered), else where its DTLS comes
        // from: not merely where it nominated, which a forged check can name.
        let dest = s
            .addr
            .or(local.dtls_from)
            .or_else(|| s.ice.selected())
            .or_else(|| s.indexed.last().copied());
        let new = local.rehandshake.as_deref_mut().map(|r| &mut r.dtls);
        let sessions = [Some(&mut local.dtls), new];
        for d in sessions.into_iter().flatten() {
            while let Some(d) = d.poll_transmit() {
                if let Some(dest) = dest
                    && !self.tx.push_copy(dest, d)
                {
                    self.stats.drops[DropReason::TxQueueFull.index()] += 1;
                }
            }
        }
        match local.end_rehandshake(self.last_now) {
            Some(true) => self.stats.rehandshakes_ok += 1,
            Some(false) => self.stats.rehandshakes_failed += 1,
            None => {}
        }
        let mut failed = None;
        while let Some(ev) = local.dtls.poll_event() {
            match ev {
                DtlsEvent::Connected(km) => match srtcp_contexts(&km) {
                    Some((srtcp_in, srtcp_out)) => {
                        local.link = Link::Keyed {
                            srtcp_in,
                            srtcp_out,
                        };
                        local.rtcp_sent = self.last_now;
                        local.keyed_at = self.last_now;
                        self.stats.dtls_handshakes_ok += 1;
                    }
                    None => failed = Some(DtlsError::NoSrtpProfile),
                },
                DtlsEvent::Failed(e) => failed = Some(e),
            }
        }
        match failed {
            Some(e) => {
                let reason = match e {
                    DtlsError::FingerprintMismatch => EndReason::FingerprintMismatch,
                    DtlsError::NoSrtpProfile => EndReason::NoSrtpProfile,
                    // An orderly goodbye, not a failure: the participant is leaving.
                    DtlsError::PeerClosed => EndReason::Closed,
                    _ => EndReason::DtlsFailed,
                };
                if reason != EndReason::Closed {
                    self.stats.dtls_handshakes_failed += 1;
                }
                self.finish(h, reason, e.to_string(), false);
            }
            None => {
                if let Some(now) = self.last_now {
                    self.maybe_connected(now, h);
                }
            }
        }
    }

    /// Marks a session homed here connected once ICE nominated an address and DTLS gave
    /// keys.
    /// Its media goes to that address only once the participant answered the relay's
    /// check of it from there ([`stun::PathCheck`]), as on a move.
    pub(super) fn maybe_connected(&mut self, now: Instant, h: SessionHandle) {
        let Some(s) = self.sessions.get_mut(h) else {
            return;
        };
        if s.is_connected() {
            return;
        }
        let Some(sel) = s.ice.selected() else { return };
        if !s.local().is_some_and(|l| l.keyed()) {
            return;
        }
        if !self.path_proven(now, h, sel) {
            self.schedule(h);
            return;
        }
        let Some(s) = self.sessions.get_mut(h) else {
            return;
        };
        if let Some(local) = s.local() {
            local.path_check = None;
        }
        let (session, identity) = (s.spec.id.clone(), s.identity);
        self.set_connected(h, Some(sel));
        self.notify(SessionEvent::Connected {
            session,
            identity,
            addr: sel,
        });
        // Its full-resolution layer may have no viewer from the start.
        self.check_unwatched(h);
    }

    /// Sets where a session receives media (None: nowhere), moves its entries in the
    /// fan-out lists and, for a session homed here, tells the other shards.
    pub(super) fn set_connected(&mut self, h: SessionHandle, addr: Option<SocketAddr>) {
        let shard = self.cfg.shard;
        let Some(s) = self.sessions.get_mut(h) else {
            return;
        };
        if s.addr == addr {
            return;
        }
        let old = std::mem::replace(&mut s.addr, addr);
        let conf = s.conf;
        if let Home::Here(_) = s.home {
            let (session, identity) = (s.spec.id.clone(), s.identity);
            let msg = match addr {
                Some(addr) => PeerMsg::Connected {
                    session,
                    identity,
                    shard,
                    key: h,
                    addr,
                },
                None => PeerMsg::Disconnected { session, identity },
            };
            self.events.push_back(Event::Peer(PeerDest::All, msg));
        }
        if let Some(old) = old {
            let receives = s.receives(self.conferences.get(conf).and_then(|c| c.speaking));
            self.fanout_remove(conf, h, old, &receives);
        }
        if let Some(addr) = addr {
            self.fanout_add(conf, h, addr);
        }
        // A receiver homed here that connects starts its layer choices (the others
        // have theirs for its layers since it joined).
        if let Some(now) = self.last_now {
            self.sync_choices(now, h);
        }
    }

    /// Ends a session homed here: reports why and stops its media. A session that never
    /// connected keeps its config but never connects (signaling removes it, or upserts
    /// new credentials for a retry); a
    /// connected one is closed, which removes it relay-wide ([`Event::Ended`]). Either
    /// way its addresses are forgotten, so a late packet cannot revive it.
    pub(super) fn end_session(&mut self, h: SessionHandle, reason: EndReason) {
        self.finish(h, reason, String::new(), true);
    }

    /// Moves a session homed here to [`Link::Ended`] once, and reports it: closed if it
    /// was connected, failed if not. `forget` drops its validated addresses (and so its
    /// fan-out lists here).
    fn finish(&mut self, h: SessionHandle, reason: EndReason, detail: String, forget: bool) {
        let Some(s) = self.sessions.get_mut(h) else {
            return;
        };
        let Some(local) = s.local() else {
            return;
        };
        if local.ended() {
            return;
        }
        local.link = Link::Ended;
        local.rehandshake = None;
        let was_connected = s.is_connected();
        if forget {
            for a in std::mem::take(&mut s.indexed) {
                self.by_addr.remove(&a);
            }
            self.fanout_build(h);
        }
        self.set_connected(h, None);
        let Some(s) = self.sessions.get(h) else {
            return;
        };
        if was_connected {
            let (spec, identity) = (s.spec.clone(), s.identity);
            self.notify(SessionEvent::Closed {
                session: spec.id.clone(),
                identity,
                reason,
            });
            // The control side removes it from every shard.
            self.events.push_back(Event::Ended(spec, reason));
        } else {
            let (session, identity) = (s.spec.id.clone(), s.identity);
            self.notify(SessionEvent::Failed {
                session,
                identity,
                reason,
                detail,
            });
        }
    }
}

impl Local {
    /// Acts on the new handshake's outcome, if it has one (`Some(true)`: it completed,
    /// and is the association now; `Some(false)`: it failed, or no ClientHello passed
    /// its cookie exchange in time, and is dropped).
    fn end_rehandshake(&mut self, now: Option<Instant>) -> Option<bool> {
        let new = self.rehandshake.as_mut()?;
        let mut outcome = None;
        while let Some(ev) = new.dtls.poll_event() {
            outcome = match ev {
                DtlsEvent::Connected(km) => Some(srtcp_contexts(&km)),
                DtlsEvent::Failed(_) => Some(None),
            };
        }
        if outcome.is_none() && now.is_some_and(|now| new.cookie_overdue(now)) {
            outcome = Some(None);
        }
        let new = self.rehandshake.take_if(|_| outcome.is_some())?;
        let Some((srtcp_in, srtcp_out)) = outcome.flatten() else {
            return Some(false);
        };
        // The participant's new association: its keys from now on.
        self.dtls = new.dtls;
        self.link = Link::Keyed {
            srtcp_in,
            srtcp_out,
        };
        self.rtcp_sent = now;
        self.keyed_at = now;
        Some(true)
    }
}

/// A DTLS record's content type for alerts (RFC 6347 §4.1).
const ALERT: u8 = 21;

/// How many SSRCs the relay's SRTCP to one participant may be sent under: its own and
/// those of the sender reports it forwards, one per stream of every other member of
/// the conference (a member's streams are forgotten when it leaves). Past it, RTCP
/// under a new SSRC is not sent (`rtcp_out_refused`).
pub(crate) const OUTBOUND_RTCP_SSRCS: usize = 1024;

/// The hop's SRTCP contexts from a completed handshake's keys: reading what the
/// participant sends (under the SSRCs it declared, at most the default 32), and
/// protecting what goes to it (none for a profile we do not run).
fn srtcp_contexts(km: &SrtpKeyMaterial) -> Option<(SrtpContext, SrtpContext)> {
    let p = SrtpProfile::from_dtls_id(km.profile.iana_id())?;
    let inbound = SrtpContext::new(p, km.client_master.key_salt(), None).ok()?;
    let outbound = SrtpContext::new(p, km.server_master.key_salt(), None)
        .ok()?
        .with_max_streams(OUTBOUND_RTCP_SSRCS);
    Some((inbound, outbound))
}
