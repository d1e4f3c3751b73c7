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
        let &i = self.by_addr.get(&from).ok_or(DropReason::Unvalidated)?;
        self.dtls_for(now, i, from, buf)
    }

    /// A DTLS datagram of session `i` from one of its validated addresses: handled if
    /// the session is homed here, else handed to its home.
    pub(super) fn dtls_for(
        &mut self,
        now: Instant,
        i: usize,
        from: SocketAddr,
        buf: &[u8],
    ) -> Result<(), DropReason> {
        let s = self.sessions[i].as_mut().expect("indexed session exists");
        let local = match &mut s.home {
            Home::Here(local) => local,
            Home::Elsewhere(home, key) => {
                let (home, key) = (*home, *key);
                self.hand_home(home, key, from, buf);
                return Ok(());
            }
            Home::Unclaimed => return Err(DropReason::Unvalidated),
        };
        if local.failed {
            return Err(DropReason::DtlsRejected);
        }
        local.dtls_from = Some(from);
        let r = local.dtls.handle_datagram(now, buf);
        if r.is_ok() {
            s.ice.touch(now);
        }
        self.drain_dtls(now, i);
        r.map_err(|_| DropReason::DtlsRejected)
    }

    /// Hands a datagram of the session `key` names to its home shard.
    pub(super) fn hand_home(
        &mut self,
        home: ShardId,
        key: SessionKey,
        from: SocketAddr,
        buf: &[u8],
    ) {
        let msg = PeerMsg::Datagram {
            session: key,
            from,
            data: buf.into(),
        };
        self.events
            .push_back(Event::Peer(PeerDest::Shard(home), msg));
    }

    // ----- DTLS and connection state ---------------------------------------------------

    /// Sends the session's pending DTLS datagrams, acts on its DTLS events, and
    /// schedules its next deadline (a retransmission timer may have been set).
    pub(super) fn drain_dtls(&mut self, now: Instant, i: usize) {
        self.drain_dtls_output(now, i);
        self.schedule(i);
    }

    pub(super) fn drain_dtls_output(&mut self, _now: Instant, i: usize) {
        let s = self.sessions[i].as_mut().expect("session exists");
        let Home::Here(local) = &mut s.home else {
            return;
        };
        let dest = s
            .ice
            .selected()
            .or(local.dtls_from)
            .or_else(|| s.indexed.last().copied());
        while let Some(d) = local.dtls.poll_transmit() {
            if let Some(dest) = dest
                && !self.tx.push_copy(dest, d)
            {
                self.stats.drops[DropReason::TxQueueFull.index()] += 1;
            }
        }
        let mut failed = None;
        while let Some(ev) = local.dtls.poll_event() {
            match ev {
                DtlsEvent::Connected(km) => {
                    let profile = SrtpProfile::from_dtls_id(km.profile.iana_id());
                    let ctxs = profile.and_then(|p| {
                        let inbound =
                            SrtpContext::new(p, km.client_master.key_salt(), None).ok()?;
                        let outbound =
                            SrtpContext::new(p, km.server_master.key_salt(), None).ok()?;
                        Some((inbound, outbound))
                    });
                    match ctxs {
                        Some((inbound, outbound)) => {
                            local.srtcp_in = Some(inbound);
                            local.srtcp_out = Some(outbound);
                            self.stats.dtls_handshakes_ok += 1;
                        }
                        None => failed = Some(DtlsError::NoSrtpProfile),
                    }
                }
                DtlsEvent::Failed(e) => failed = Some(e),
            }
        }
        if let Some(e) = failed {
            self.stats.dtls_handshakes_failed += 1;
            local.failed = true;
            local.srtcp_in = None;
            local.srtcp_out = None;
            let reason = match e {
                DtlsError::FingerprintMismatch => EndReason::FingerprintMismatch,
                DtlsError::NoSrtpProfile => EndReason::NoSrtpProfile,
                _ => EndReason::DtlsFailed,
            };
            let was_connected = s.is_connected();
            self.set_connected(i, None);
            let s = self.sessions[i].as_mut().expect("session exists");
            s.reported = true;
            if was_connected {
                self.closed_by_relay(i, reason);
            } else {
                let session_id = s.spec.id.clone();
                self.notify(SessionEvent::Failed {
                    session: session_id,
                    reason,
                    detail: e.to_string(),
                });
            }
            return;
        }
        self.maybe_connected(i);
    }

    /// Marks a session homed here connected once ICE nominated an address and DTLS gave
    /// keys.
    pub(super) fn maybe_connected(&mut self, i: usize) {
        let s = self.sessions[i].as_mut().expect("session exists");
        if s.is_connected() {
            return;
        }
        let Some(sel) = s.ice.selected() else { return };
        if !s
            .local()
            .is_some_and(|l| l.srtcp_out.is_some() && !l.failed)
        {
            return;
        }
        self.set_connected(i, Some(sel));
        let s = self.sessions[i].as_ref().expect("session exists");
        self.notify(SessionEvent::Connected {
            session: s.spec.id.clone(),
            addr: sel,
        });
    }

    /// Sets where a session receives media (None: nowhere), updates the conference's
    /// fan-out lists and, for a session homed here, tells the other shards.
    pub(super) fn set_connected(&mut self, i: usize, addr: Option<SocketAddr>) {
        let shard = self.cfg.shard;
        let s = self.sessions[i].as_mut().expect("session exists");
        if s.addr == addr {
            return;
        }
        s.addr = addr;
        if let Home::Here(_) = s.home {
            let session = s.spec.id.clone();
            let key = SessionKey {
                slot: i as u32,
                incarnation: s.incarnation,
            };
            let msg = match addr {
                Some(addr) => PeerMsg::Connected {
                    session,
                    shard,
                    key,
                    addr,
                },
                None => PeerMsg::Disconnected { session },
            };
            self.events.push_back(Event::Peer(PeerDest::All, msg));
        }
        let conf = s.conf;
        self.rebuild_fanout(conf);
    }

    /// Ends a session homed here: reports why and stops its media. A session that never
    /// connected keeps its config (the participant may retry; signaling removes it); a
    /// connected one is closed, which removes it relay-wide ([`Event::Ended`]). Either
    /// way its addresses are forgotten, so a late packet cannot revive it.
    pub(super) fn end_session(&mut self, i: usize, reason: EndReason) {
        let s = self.sessions[i].as_mut().expect("session exists");
        if s.reported {
            return;
        }
        s.reported = true;
        let was_connected = s.is_connected();
        if let Some(local) = s.local() {
            local.failed = true;
            local.srtcp_in = None;
            local.srtcp_out = None;
        }
        let session_id = s.spec.id.clone();
        for a in std::mem::take(&mut s.indexed) {
            self.by_addr.remove(&a);
        }
        self.set_connected(i, None);
        if was_connected {
            self.closed_by_relay(i, reason);
        } else {
            self.notify(SessionEvent::Failed {
                session: session_id,
                reason,
                detail: String::new(),
            });
        }
    }

    /// Reports that the relay closed connected session `i` on its own: the notification,
    /// and [`Event::Ended`] so that the control side removes it from every shard.
    pub(super) fn closed_by_relay(&mut self, i: usize, reason: EndReason) {
        let s = self.sessions[i].as_ref().expect("session exists");
        let spec = s.spec.clone();
        self.notify(SessionEvent::Closed {
            session: spec.id.clone(),
            reason,
        });
        self.events.push_back(Event::Ended(spec));
    }
}
