//! RTCP: SRTCP in on the home shard, and the relay's RTCP duties — sender reports
//! forwarded per receiver, keyframe requests throttled per stream, re-protection per
//! hop (on the destination's home shard).

use super::*;

impl Engine {
    pub(super) fn handle_rtcp(
        &mut self,
        now: Instant,
        from: SocketAddr,
        buf: &mut [u8],
    ) -> Result<(), DropReason> {
        let i = self.media_session(from)?;
        self.rtcp_for(now, i, from, buf)
    }

    /// SRTCP of session `i` from its nominated address: handled if the session is homed
    /// here, else handed to its home.
    pub(super) fn rtcp_for(
        &mut self,
        now: Instant,
        i: usize,
        from: SocketAddr,
        buf: &mut [u8],
    ) -> Result<(), DropReason> {
        let s = self.sessions[i].as_mut().expect("indexed session exists");
        if let Home::Elsewhere(home, key) = s.home {
            self.hand_home(home, key, from, buf);
            return Ok(());
        }
        let srtcp = s
            .local()
            .and_then(|l| l.srtcp_in.as_mut())
            .ok_or(DropReason::BeforeDtls)?;
        let len = srtcp
            .unprotect_rtcp(buf)
            .map_err(|_| DropReason::SrtcpRejected)?;
        s.ice.touch(now);
        self.stats.rtcp_in += 1;
        let plain = &buf[..len];
        let compound = RtcpCompound::parse(plain).map_err(|_| DropReason::RtcpMalformed)?;
        let sender = rtcp::first_ssrc(plain).map_err(|_| DropReason::RtcpMalformed)?;
        if !s.streams.iter().any(|st| st.spec.ssrc == sender) {
            return Err(DropReason::RtcpUndeclaredSsrc);
        }
        for raw in compound.raw_packets() {
            match raw.typed() {
                Ok(RtcpPacket::SenderReport(sr)) => self.forward_sr(i, sr.ssrc(), raw.bytes()),
                Ok(RtcpPacket::Pli(pli)) => self.keyframe_request(now, i, pli.media_ssrc()),
                Ok(RtcpPacket::Fir(fir)) => {
                    for e in fir.entries() {
                        self.keyframe_request(now, i, e.ssrc);
                    }
                }
                Ok(_) => self.stats.rtcp_ignored += 1,
                Err(_) => self.stats.rtcp_drops[RtcpDrop::Malformed.index()] += 1,
            }
        }
        Ok(())
    }

    // ----- RTCP duties -----------------------------------------------------------------

    /// Forwards a sender's SR to every receiver of the stream it describes, re-protected
    /// per receiver.
    ///
    /// Receivers homed here get it at once; each other shard that homes receivers gets
    /// one [`PeerMsg::SenderReport`], whatever their number, and serves its own.
    pub(super) fn forward_sr(&mut self, sender: usize, ssrc: Ssrc, packet: &[u8]) {
        let s = self.sessions[sender].as_ref().expect("sender exists");
        if !s.streams.iter().any(|st| st.spec.ssrc == ssrc) {
            self.stats.rtcp_drops[RtcpDrop::UndeclaredSsrc.index()] += 1;
            return;
        }
        let mut shards = std::mem::take(&mut self.sr_shards);
        shards.clear();
        self.forward_sr_here(sender, ssrc, packet, Some(&mut shards));
        if !shards.is_empty()
            && let Some(bytes) = RtcpBytes::new(packet)
        {
            let s = self.sessions[sender].as_ref().expect("sender exists");
            for &shard in &shards {
                let msg = PeerMsg::SenderReport {
                    sender: s.spec.id.clone(),
                    ssrc,
                    packet: bytes.clone(),
                };
                self.events
                    .push_back(Event::Peer(PeerDest::Shard(shard), msg));
            }
        }
        self.sr_shards = shards;
    }

    /// Sends a sender's SR about `ssrc` to the connected receivers of that stream homed
    /// here; with `elsewhere`, collects the shards that home the others.
    pub(super) fn forward_sr_here(
        &mut self,
        sender: usize,
        ssrc: Ssrc,
        packet: &[u8],
        mut elsewhere: Option<&mut Vec<ShardId>>,
    ) {
        let s = self.sessions[sender].as_ref().expect("sender exists");
        let Some(spec) = s
            .streams
            .iter()
            .find(|st| st.spec.ssrc == ssrc)
            .map(|st| st.spec)
        else {
            return;
        };
        let conf = s.conf;
        let members = self.conferences[conf]
            .as_ref()
            .map(|c| c.members.len())
            .unwrap_or(0);
        for m in 0..members {
            let r = self.conferences[conf]
                .as_ref()
                .expect("conference exists")
                .members[m];
            if r == sender {
                continue;
            }
            let rs = self.sessions[r].as_ref().expect("member exists");
            if !rs.is_connected() || !rs.wants(&spec) {
                continue;
            }
            match rs.home {
                Home::Here(_) => {
                    self.stats.sr_forwarded += 1;
                    self.send_rtcp_to(r, packet);
                }
                Home::Elsewhere(shard, _) => {
                    if let Some(list) = elsewhere.as_deref_mut()
                        && !list.contains(&shard)
                    {
                        list.push(shard);
                    }
                }
                Home::Unclaimed => {}
            }
        }
    }

    /// A receiver asked for a keyframe of `ssrc`: pass it to the sender, throttled.
    pub(super) fn keyframe_request(&mut self, now: Instant, requester: usize, ssrc: Ssrc) {
        let conf = self.sessions[requester]
            .as_ref()
            .expect("requester exists")
            .conf;
        let Some(owner) = self.stream_owner(conf, ssrc) else {
            self.stats.rtcp_drops[RtcpDrop::NotReceiver.index()] += 1;
            return;
        };
        let o = self.sessions[owner].as_ref().expect("owner exists");
        let spec = o
            .streams
            .iter()
            .find(|st| st.spec.ssrc == ssrc)
            .map(|st| st.spec);
        let r = self.sessions[requester].as_ref().expect("requester exists");
        if owner == requester || !spec.is_some_and(|sp| r.wants(&sp)) {
            self.stats.rtcp_drops[RtcpDrop::NotReceiver.index()] += 1;
            return;
        }
        self.request_keyframe_from(now, owner, ssrc);
    }

    /// Sends (or forwards to the owner's shard) a throttled PLI for `ssrc`.
    pub(super) fn request_keyframe_from(&mut self, now: Instant, owner: usize, ssrc: Ssrc) {
        let interval = self.cfg.keyframe_interval;
        let o = self.sessions[owner].as_mut().expect("owner exists");
        match o.home {
            Home::Elsewhere(shard, key) => {
                let msg = PeerMsg::KeyframeRequest { owner: key, ssrc };
                self.events
                    .push_back(Event::Peer(PeerDest::Shard(shard), msg));
            }
            Home::Unclaimed => {}
            Home::Here(_) => {
                let Some(st) = o.streams.iter_mut().find(|st| st.spec.ssrc == ssrc) else {
                    return;
                };
                if !st.keyframe.handle_request(now, interval) {
                    self.stats.keyframe_requests_throttled += 1;
                    return;
                }
                let mut pli = [0u8; 12];
                if rtcp::write_pli(&mut pli, self.cfg.relay_ssrc, ssrc).is_ok() {
                    self.stats.keyframe_requests_sent += 1;
                    self.send_rtcp_to(owner, &pli);
                }
            }
        }
    }

    /// Protects `packet` with session `to`'s outbound SRTCP context and queues it, or
    /// passes it to `to`'s home shard.
    pub(super) fn send_rtcp_to(&mut self, to: usize, packet: &[u8]) {
        let s = self.sessions[to].as_mut().expect("session exists");
        let Some(addr) = s.addr else { return };
        match &mut s.home {
            Home::Here(local) => {
                let Some(ctx) = local.srtcp_out.as_mut() else {
                    return;
                };
                let queued = self.tx.push(addr, |slot| {
                    let dst = slot.get_mut(..packet.len()).ok_or(())?;
                    dst.copy_from_slice(packet);
                    ctx.protect_rtcp(slot, packet.len()).map_err(|_| ())
                });
                if queued {
                    self.stats.rtcp_out += 1;
                } else {
                    self.stats.drops[DropReason::TxQueueFull.index()] += 1;
                }
            }
            Home::Elsewhere(shard, key) => {
                if let Some(packet) = RtcpBytes::new(packet) {
                    let msg = PeerMsg::Rtcp { to: *key, packet };
                    let shard = *shard;
                    self.events
                        .push_back(Event::Peer(PeerDest::Shard(shard), msg));
                }
            }
            Home::Unclaimed => {}
        }
    }

    pub(super) fn stream_owner(&self, conf: usize, ssrc: Ssrc) -> Option<usize> {
        let c = self.conferences[conf].as_ref()?;
        c.members.iter().copied().find(|&m| {
            self.sessions[m]
                .as_ref()
                .is_some_and(|s| s.streams.iter().any(|st| st.spec.ssrc == ssrc))
        })
    }
}
