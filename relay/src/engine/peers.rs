//! Messages between shards.

use super::*;

impl Engine {
    // ----- peers -----------------------------------------------------------------------

    /// The slot of the session `key` names, if it is still that session and homed here.
    pub(super) fn homed_here(&self, key: SessionKey) -> Option<usize> {
        let i = key.slot as usize;
        let s = self.sessions.get(i)?.as_ref()?;
        (s.incarnation == key.incarnation && matches!(s.home, Home::Here(_))).then_some(i)
    }

    pub(super) fn handle_peer(&mut self, now: Instant, msg: PeerMsg) {
        match msg {
            PeerMsg::Claimed {
                session,
                shard,
                key,
            } => {
                let Some(&i) = self.by_id.get(&session) else {
                    return;
                };
                let s = self.sessions[i].as_mut().expect("indexed session exists");
                match s.home {
                    Home::Unclaimed | Home::Elsewhere(..) => s.home = Home::Elsewhere(shard, key),
                    // Two shards answered first checks at once: the lower id keeps it.
                    Home::Here(_) if shard < self.cfg.shard => {
                        s.home = Home::Elsewhere(shard, key);
                        // The addresses checked here stay indexed (their datagrams go
                        // to the new home), and the new home learns them.
                        let selected = s.ice.selected();
                        for &from in &s.indexed {
                            let msg = PeerMsg::Checked {
                                session: key,
                                from,
                                nominated: selected == Some(from),
                            };
                            self.events
                                .push_back(Event::Peer(PeerDest::Shard(shard), msg));
                        }
                        if s.addr.is_some() {
                            self.set_connected(i, None);
                        }
                    }
                    Home::Here(_) => {}
                }
            }
            PeerMsg::Connected {
                session,
                shard,
                key,
                addr,
            } => {
                let Some(&i) = self.by_id.get(&session) else {
                    return;
                };
                let s = self.sessions[i].as_mut().expect("indexed session exists");
                if !matches!(s.home, Home::Here(_)) {
                    s.home = Home::Elsewhere(shard, key);
                    self.set_connected(i, Some(addr));
                }
            }
            PeerMsg::Disconnected { session } => {
                let Some(&i) = self.by_id.get(&session) else {
                    return;
                };
                let s = self.sessions[i].as_ref().expect("indexed session exists");
                if !matches!(s.home, Home::Here(_)) {
                    self.set_connected(i, None);
                }
            }
            PeerMsg::Rtcp { to, packet } => {
                if let Some(i) = self.homed_here(to) {
                    self.send_rtcp_to(i, packet.as_bytes());
                }
            }
            PeerMsg::KeyframeRequest { owner, ssrc } => {
                if let Some(i) = self.homed_here(owner) {
                    self.request_keyframe_from(now, i, ssrc);
                }
            }
            PeerMsg::Checked {
                session,
                from,
                nominated,
            } => {
                let Some(i) = self.homed_here(session) else {
                    return;
                };
                let s = self.sessions[i].as_mut().expect("homed session exists");
                if s.local().is_some_and(|l| l.failed) {
                    return;
                }
                if s.ice.record_check(now, from, nominated).is_some() {
                    self.after_check(i);
                }
            }
            PeerMsg::Datagram {
                session,
                from,
                mut data,
            } => {
                let Some(i) = self.homed_here(session) else {
                    return;
                };
                let s = self.sessions[i].as_ref().expect("homed session exists");
                let r = match wire::classify(&data) {
                    // The sending shard saw a valid check from `from`; the `Checked`
                    // it sent first reached this agent already (one queue, in order).
                    Kind::Dtls if s.ice.is_validated(from) => self.dtls_for(now, i, from, &data),
                    Kind::Rtcp if s.addr == Some(from) => self.rtcp_for(now, i, from, &mut data),
                    _ => Err(DropReason::Unvalidated),
                };
                if let Err(reason) = r {
                    self.stats.drops[reason.index()] += 1;
                }
            }
            PeerMsg::SenderReport {
                sender,
                ssrc,
                packet,
            } => {
                if let Some(&i) = self.by_id.get(&sender) {
                    self.forward_sr_here(i, ssrc, packet.as_bytes(), None);
                }
            }
            PeerMsg::Alive { session } => {
                if let Some(i) = self.homed_here(session) {
                    let s = self.sessions[i].as_mut().expect("homed session exists");
                    s.ice.touch(now);
                }
            }
        }
    }
}
