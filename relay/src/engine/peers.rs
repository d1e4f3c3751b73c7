//! Messages between shards.

use super::*;

impl PeerDest {
    /// The shards, as indices in `0..shards`, that a message from shard `from` goes to.
    ///
    /// The one rule the relay's workers and the test emulator both follow: a shard
    /// never sends to itself, and a shard that does not exist gets nothing.
    pub fn targets(self, from: usize, shards: usize) -> impl Iterator<Item = usize> {
        let only = match self {
            PeerDest::All => None,
            PeerDest::Shard(ShardId(s)) => Some(usize::from(s)),
        };
        (0..shards).filter(move |&j| j != from && only.is_none_or(|s| s == j))
    }

    /// Hands `msg` to `deliver` once per [`target`](Self::targets), cloning it for all
    /// but the last (a message to one shard is moved, not copied).
    pub fn route<M: Clone>(
        self,
        from: usize,
        shards: usize,
        msg: M,
        mut deliver: impl FnMut(usize, M),
    ) {
        let mut targets = self.targets(from, shards);
        let Some(mut last) = targets.next() else {
            return;
        };
        for next in targets {
            deliver(last, msg.clone());
            last = next;
        }
        deliver(last, msg);
    }
}

impl Engine {
    // ----- peers -----------------------------------------------------------------------

    /// The session `key` names, if it is still that session and homed here.
    pub(super) fn homed_here(&self, key: SessionHandle) -> Option<SessionHandle> {
        let s = self.sessions.get(key)?;
        matches!(s.home, Home::Here(_)).then_some(key)
    }

    /// The session named by its home shard and its handle there.
    pub(super) fn by_home_key(&self, home: ShardId, key: SessionHandle) -> Option<SessionHandle> {
        match home == self.cfg.shard {
            true => self.homed_here(key),
            false => self.by_home.get(&(home, key)).copied(),
        }
    }

    /// A session's home shard and its handle there.
    pub(super) fn home_key(&self, h: SessionHandle) -> Option<(ShardId, SessionHandle)> {
        match self.sessions.get(h)?.home {
            Home::Elsewhere(shard, key) => Some((shard, key)),
            Home::Here(_) => Some((self.cfg.shard, h)),
            Home::Unclaimed { .. } => None,
        }
    }

    /// Stream `ssrc` of the session named by its home shard and its handle there.
    pub(super) fn stream_by_home(
        &mut self,
        home: ShardId,
        key: SessionHandle,
        ssrc: Ssrc,
    ) -> Option<&mut Stream> {
        let h = self.by_home_key(home, key)?;
        self.sessions.get_mut(h)?.stream_mut(ssrc)
    }

    /// Session `session` if what this shard holds of it is incarnation `identity`.
    fn incarnation(&self, session: &SessionName, identity: Incarnation) -> Option<SessionHandle> {
        let h = *self.by_id.get(session)?;
        let s = self.sessions.get(h)?;
        (s.identity == identity).then_some(h)
    }

    pub(super) fn handle_peer(&mut self, now: Instant, msg: PeerMsg) {
        match msg {
            PeerMsg::Claimed {
                session,
                identity,
                shard,
                key,
            } => {
                let Some(h) = self.incarnation(&session, identity) else {
                    return;
                };
                self.claimed_elsewhere(h, shard, key);
            }
            PeerMsg::Connected {
                session,
                identity,
                shard,
                key,
                addr,
            } => {
                let Some(h) = self.incarnation(&session, identity) else {
                    return;
                };
                if self
                    .sessions
                    .get(h)
                    .is_some_and(|s| !matches!(s.home, Home::Here(_)))
                {
                    self.homed_elsewhere(h, shard, key);
                    self.set_connected(h, Some(addr));
                }
            }
            PeerMsg::WhereIs {
                session,
                identity,
                from,
            } => {
                let me = self.cfg.shard;
                let Some(h) = self.incarnation(&session, identity) else {
                    return;
                };
                let Some(s) = self.sessions.get(h) else {
                    return;
                };
                let Home::Here(local) = &s.home else {
                    return;
                };
                if local.ended() {
                    return;
                }
                let to = PeerDest::Shard(from);
                let claimed = PeerMsg::Claimed {
                    session: session.clone(),
                    identity,
                    shard: me,
                    key: h,
                };
                self.events.push_back(Event::Peer(to, claimed));
                if let (true, Some(addr)) = (s.is_connected(), s.addr) {
                    let connected = PeerMsg::Connected {
                        session,
                        identity,
                        shard: me,
                        key: h,
                        addr,
                    };
                    self.events.push_back(Event::Peer(to, connected));
                }
            }
            PeerMsg::Disconnected { session, identity } => {
                let Some(h) = self.incarnation(&session, identity) else {
                    return;
                };
                if self
                    .sessions
                    .get(h)
                    .is_some_and(|s| !matches!(s.home, Home::Here(_)))
                {
                    self.set_connected(h, None);
                }
            }
            PeerMsg::Rtcp { to, packet } => {
                if let Some(h) = self.homed_here(to) {
                    self.send_rtcp_to(h, packet.as_bytes());
                }
            }
            msg @ PeerMsg::Nack { .. } => self.handle_passed_nack(now, msg),
            PeerMsg::KeyframeRequest { owner, ssrc, kind } => {
                if let Some(h) = self.homed_here(owner) {
                    self.request_keyframe_from(now, h, ssrc, kind);
                }
            }
            PeerMsg::Checked {
                session,
                shard,
                from,
                nominated,
            } => {
                let Some(s) = self
                    .homed_here(session)
                    .and_then(|h| self.sessions.get_mut(h))
                else {
                    return;
                };
                if s.ended_here() {
                    return;
                }
                if let Some(local) = s.local() {
                    local.note_checked(from, shard);
                }
                if s.ice.record_check(now, from, nominated).is_some() {
                    if nominated {
                        self.renominated(session, from);
                    }
                    self.after_check(now, session);
                }
            }
            PeerMsg::Datagram {
                session,
                from,
                mut data,
            } => {
                let Some(s) = self.homed_here(session).and_then(|h| self.sessions.get(h)) else {
                    return;
                };
                let r = match wire::classify(&data) {
                    // The sending shard saw a valid check from `from`; the `Checked`
                    // it sent first reached this agent already (one queue, in order).
                    Kind::Dtls if s.ice.is_validated(from) => {
                        self.dtls_for(now, session, from, &data)
                    }
                    Kind::Rtcp if s.addr == Some(from) => {
                        self.rtcp_for(now, session, from, &mut data)
                    }
                    // The answer to its path check, received by the sending shard.
                    Kind::Stun => match StunMessage::parse(&data) {
                        Ok(msg) => self.confirm_path(now, session, from, &msg),
                        Err(_) => Err(DropReason::StunMalformed),
                    },
                    _ => Err(DropReason::Unvalidated),
                };
                if let Err(reason) = r {
                    self.stats.drops[reason.index()] += 1;
                }
            }
            PeerMsg::SenderReport {
                home,
                sender,
                ssrc,
                packet,
            } => {
                if let Some(h) = self.by_home_key(home, sender) {
                    self.forward_sr_here(now, h, ssrc, packet.as_bytes(), None);
                }
            }
            PeerMsg::Speech {
                home,
                session,
                level,
            } => self.handle_speech(now, home, session, level),
            PeerMsg::ActiveSpeaker { conf, session } => {
                if let (Some(&c), Some(&h)) = (self.conf_by_id.get(&conf), self.by_id.get(&session))
                {
                    self.speaker_changed(now, c, h);
                }
            }
            PeerMsg::StreamRate {
                home,
                sender,
                ssrc,
                bps,
                resumed,
            } => self.handle_stream_rate(now, home, sender, ssrc, bps, resumed),
            PeerMsg::LayerState {
                home,
                receiver,
                ssrc,
                state,
            } => self.handle_layer_state(home, receiver, ssrc, state),
            PeerMsg::KeyframeForwarded { receiver, ssrc } => {
                if let Some(r) = self.homed_here(receiver) {
                    self.keyframe_forwarded(now, r, ssrc);
                }
            }
            PeerMsg::Uplink { owner, ssrc, bps } => {
                if let Some(o) = self.homed_here(owner) {
                    self.uplink_budget(now, o, ssrc, bps);
                }
            }
            PeerMsg::ViewerRate {
                owner,
                ssrc,
                home,
                viewer,
                bps,
            } => {
                if let Some(o) = self.homed_here(owner) {
                    self.viewer_rate(now, o, ssrc, home, viewer, bps);
                }
            }
            PeerMsg::Demote {
                home,
                sender,
                ssrc,
                below_bps,
            } => self.handle_demote(home, sender, ssrc, below_bps),
            PeerMsg::Alive { session } => {
                if let Some(s) = self
                    .homed_here(session)
                    .and_then(|h| self.sessions.get_mut(h))
                {
                    s.ice.touch(now);
                }
            }
        }
    }

    /// Shard `shard` runs session `h` now (its handle there is `key`).
    fn claimed_elsewhere(&mut self, h: SessionHandle, shard: ShardId, key: SessionHandle) {
        let Some(s) = self.sessions.get_mut(h) else {
            return;
        };
        match s.home {
            Home::Unclaimed { .. } | Home::Elsewhere(..) => self.homed_elsewhere(h, shard, key),
            // Two shards answered first checks at once: the lower id keeps it.
            Home::Here(_) if shard < self.cfg.shard => {
                // The addresses checked here stay indexed (their datagrams go to the new
                // home), and the new home learns them.
                let selected = s.ice.selected();
                for &from in &s.indexed {
                    let msg = PeerMsg::Checked {
                        session: key,
                        shard: self.cfg.shard,
                        from,
                        nominated: selected == Some(from),
                    };
                    self.events
                        .push_back(Event::Peer(PeerDest::Shard(shard), msg));
                }
                let connected = s.addr.is_some();
                self.homed_elsewhere(h, shard, key);
                if connected {
                    self.set_connected(h, None);
                }
            }
            Home::Here(_) => {}
        }
    }

    /// Records that session `h` runs on `shard` as `key` there, so that messages from
    /// that shard about `key` find it.
    pub(super) fn homed_elsewhere(&mut self, h: SessionHandle, shard: ShardId, key: SessionHandle) {
        let Some(s) = self.sessions.get_mut(h) else {
            return;
        };
        if let Home::Elsewhere(old_shard, old_key) = s.home {
            self.by_home.remove(&(old_shard, old_key));
        }
        s.home = Home::Elsewhere(shard, key);
        self.by_home.insert((shard, key), h);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn targets(dest: PeerDest, from: usize, shards: usize) -> Vec<usize> {
        dest.targets(from, shards).collect()
    }

    #[test]
    fn all_is_every_other_shard() {
        assert_eq!(targets(PeerDest::All, 1, 4), [0, 2, 3]);
        assert_eq!(targets(PeerDest::All, 0, 1), [0usize; 0]);
    }

    #[test]
    fn one_shard_is_that_shard_unless_it_is_the_sender_or_missing() {
        assert_eq!(targets(PeerDest::Shard(ShardId(2)), 0, 4), [2]);
        assert_eq!(targets(PeerDest::Shard(ShardId(2)), 2, 4), [0usize; 0]);
        assert_eq!(targets(PeerDest::Shard(ShardId(4)), 0, 4), [0usize; 0]);
    }

    #[test]
    fn route_delivers_one_copy_to_each_target() {
        let mut got = Vec::new();
        PeerDest::All.route(2, 4, "claimed", |j, m| got.push((j, m)));
        assert_eq!(got, [(0, "claimed"), (1, "claimed"), (3, "claimed")]);
        got.clear();
        PeerDest::Shard(ShardId(2)).route(2, 4, "to self", |j, m| got.push((j, m)));
        assert!(got.is_empty());
    }
}
