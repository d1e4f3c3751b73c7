//! RTCP: SRTCP in on the home shard, and the relay's RTCP duties — sender reports
//! forwarded per receiver, keyframe requests throttled per stream, re-protection per
//! hop (on the destination's home shard), and an empty receiver report to a session
//! sent no other SRTCP for [`RTCP_EVERY`] (its sign that the relay holds it).

use super::*;

impl Engine {
    pub(super) fn handle_rtcp(
        &mut self,
        now: Instant,
        from: SocketAddr,
        buf: &mut [u8],
    ) -> Result<(), DropReason> {
        let h = self.media_session(now, from)?;
        self.rtcp_for(now, h, from, buf)
    }

    /// SRTCP of session `h` from its nominated address: handled if the session is homed
    /// here, else handed to its home.
    pub(super) fn rtcp_for(
        &mut self,
        now: Instant,
        h: SessionHandle,
        from: SocketAddr,
        buf: &mut [u8],
    ) -> Result<(), DropReason> {
        let s = self.sessions.get_mut(h).ok_or(DropReason::Unvalidated)?;
        let srtcp = match &mut s.home {
            Home::Elsewhere(home, key) => {
                let (home, key) = (*home, *key);
                return self.hand_home(now, h, (home, key), from, buf);
            }
            Home::Here(local) => match &mut local.link {
                Link::Keyed { srtcp_in, .. } => srtcp_in,
                Link::Handshaking | Link::Ended => return Err(DropReason::BeforeDtls),
            },
            Home::Unclaimed { .. } => return Err(DropReason::BeforeDtls),
        };
        let len = srtcp
            .unprotect_rtcp(buf)
            .map_err(|_| DropReason::SrtcpRejected)?;
        s.ice.touch(now);
        self.stats.rtcp_in += 1;
        let plain = buf.get(..len).ok_or(DropReason::RtcpMalformed)?;
        let compound = RtcpCompound::parse(plain).map_err(|_| DropReason::RtcpMalformed)?;
        let sender = rtcp::first_ssrc(plain).map_err(|_| DropReason::RtcpMalformed)?;
        if s.stream(sender).is_none() {
            return Err(DropReason::RtcpUndeclaredSsrc);
        }
        // However its RTCP is packed, a participant gets a bounded rate of work: so many
        // packets a second (a FIR counting once per stream it names), and its layer
        // choices run on its feedback once per compound at most, and at most once per
        // `REPORT_GAP`.
        let mut fed = false;
        for raw in compound.raw_packets() {
            let typed = raw.typed();
            // A FIR is a keyframe request (perhaps to another shard) per stream it names.
            let cost = match &typed {
                Ok(RtcpPacket::Fir(fir)) => fir.entries().count().max(1),
                _ => 1,
            };
            let within = self
                .sessions
                .get_mut(h)
                .and_then(|s| s.local())
                .is_some_and(|l| l.rtcp_budget.try_take(now, cost));
            if !within {
                self.stats.rtcp_drops[RtcpDrop::OverBudget.index()] += 1;
                continue;
            }
            match typed {
                Ok(RtcpPacket::SenderReport(sr)) => {
                    self.sender_report(now, h, sr.ssrc(), raw.bytes());
                    let blocks = bandwidth::Feedback::Blocks(sr.reports());
                    fed |= self.downlink_feedback(now, h, blocks);
                }
                Ok(RtcpPacket::ReceiverReport(rr)) => {
                    let blocks = bandwidth::Feedback::Blocks(rr.reports());
                    fed |= self.downlink_feedback(now, h, blocks);
                }
                Ok(RtcpPacket::Remb(remb)) => {
                    let remb = bandwidth::Feedback::Remb(remb.bitrate_bps());
                    fed |= self.downlink_feedback(now, h, remb);
                }
                Ok(RtcpPacket::Pli(pli)) => {
                    self.keyframe_request(now, h, pli.media_ssrc(), KeyframeKind::Pli)
                }
                Ok(RtcpPacket::Nack(nack)) => {
                    if let Some(lost) = self.nack(now, h, nack, raw.bytes()) {
                        // A receiver that lost packets says so at once with a NACK, a
                        // report interval before its receiver report would: its
                        // downlink estimate hears it too.
                        let loss = bandwidth::Feedback::Loss(lost);
                        fed |= self.downlink_feedback(now, h, loss);
                    }
                }
                Ok(RtcpPacket::Fir(fir)) => {
                    for e in fir.entries() {
                        self.keyframe_request(now, h, e.ssrc, KeyframeKind::Fir);
                    }
                }
                Ok(RtcpPacket::App(app)) => match app.probe_message() {
                    Some(Ok(ProbeMessage::Report(report))) => self.probe_report(now, h, &report),
                    Some(Err(_)) => self.stats.rtcp_drops[RtcpDrop::Malformed.index()] += 1,
                    Some(Ok(ProbeMessage::Probe(_))) | None => self.stats.rtcp_ignored += 1,
                },
                Ok(_) => self.stats.rtcp_ignored += 1,
                Err(_) => self.stats.rtcp_drops[RtcpDrop::Malformed.index()] += 1,
            }
        }
        if fed {
            self.feedback_taken(now, h);
        }
        Ok(())
    }

    // ----- RTCP duties -----------------------------------------------------------------

    /// A sender's SR about `ssrc`: kept for receivers that start the stream later
    /// ([`media::LastSenderReport`]) and forwarded to every current receiver,
    /// re-protected per receiver.
    ///
    /// Receivers homed here get it at once; each other shard that homes receivers gets
    /// one [`PeerMsg::SenderReport`], whatever their number, and serves its own.
    fn sender_report(&mut self, now: Instant, sender: SessionHandle, ssrc: Ssrc, packet: &[u8]) {
        let Some(st) = self
            .sessions
            .get_mut(sender)
            .and_then(|s| s.stream_mut(ssrc))
        else {
            self.stats.rtcp_drops[RtcpDrop::UndeclaredSsrc.index()] += 1;
            return;
        };
        if !st.last_sr.handle_report(now, packet) {
            self.stats.sr_held_back += 1;
            return;
        }
        let mut shards = std::mem::take(&mut self.sr_shards);
        shards.clear();
        self.forward_sr_here(now, sender, ssrc, packet, Some(&mut shards));
        if let Some(bytes) = RtcpBytes::new(packet) {
            for &shard in &shards {
                let msg = PeerMsg::SenderReport {
                    home: self.cfg.shard,
                    sender,
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
    /// here, each noting when (their report blocks answering it time the round trip);
    /// with `elsewhere`, collects the shards that home the others.
    pub(super) fn forward_sr_here(
        &mut self,
        now: Instant,
        sender: SessionHandle,
        ssrc: Ssrc,
        packet: &[u8],
        mut elsewhere: Option<&mut Vec<ShardId>>,
    ) {
        let Some(s) = self.sessions.get(sender) else {
            return;
        };
        let Some(spec) = s.stream(ssrc).map(|st| st.spec) else {
            return;
        };
        let conf = s.conf;
        let from = self.sender(sender, s);
        // By position: sending needs `self` mutably, so the member list is not held.
        for m in 0.. {
            let Some(r) = self
                .conferences
                .get(conf)
                .and_then(|c| c.members.get(m).copied())
            else {
                break;
            };
            let Some(rs) = self.sessions.get(r) else {
                continue;
            };
            if r == sender || !rs.is_connected() || rs.slot(&spec, from).is_none() {
                continue;
            }
            match rs.home {
                Home::Here(_) => {
                    self.stats.sr_forwarded += 1;
                    self.send_sr_to(now, r, ssrc, packet);
                }
                Home::Elsewhere(shard, _) => {
                    if let Some(list) = elsewhere.as_deref_mut()
                        && !list.contains(&shard)
                    {
                        list.push(shard);
                    }
                }
                Home::Unclaimed { .. } => {}
            }
        }
    }

    /// A receiver NACKed packets of a stream: they are resent from the retransmission
    /// cache where the sender's media arrives (this shard, or the sender's home), and
    /// what is not cached is asked of the sender — once per interval for all receivers.
    /// Only as many as the receiver's budget allows are answered (the first ones); the
    /// rest are counted over budget. NACKs for audio (never cached) are counted as
    /// ignored. Returns how many packets the receiver says it lost, if it receives
    /// that stream.
    fn nack(
        &mut self,
        now: Instant,
        requester: SessionHandle,
        nack: rtcp::Nack<'_>,
        packet: &[u8],
    ) -> Option<usize> {
        let ssrc = nack.media_ssrc();
        let Some((owner, to)) = self.receiver_of(requester, ssrc, false) else {
            self.stats.rtcp_drops[RtcpDrop::NotReceiver.index()] += 1;
            return None;
        };
        let lost = nack.lost().count();
        let o = self.sessions.get(owner)?;
        let st = o.stream(ssrc)?;
        if st.spec.kind == MediaKind::Audio {
            self.stats.rtcp_ignored += 1;
            return Some(lost);
        }
        // The cache that holds the packets is where the sender's media arrives.
        let cache_elsewhere = self
            .nack_shard(owner)
            .zip(self.home_key(owner))
            .map(|(shard, (home, key))| (shard, home, key));
        // Spent here even if the NACK then goes to another shard and is lost in a
        // backlog there (`PeerMsg::must_arrive`): the receiver asks again.
        let allowed = self
            .sessions
            .get_mut(requester)
            .and_then(|s| s.local())
            .map_or(0, |l| l.nack_budget.take(now, lost));
        self.stats.nack_over_budget += (lost - allowed) as u64;
        if allowed == 0 {
            return Some(lost);
        }
        match cache_elsewhere {
            Some((shard, home, key)) => {
                if let Some(packet) = RtcpBytes::new(packet) {
                    let msg = PeerMsg::Nack {
                        home,
                        owner: key,
                        ssrc,
                        to,
                        packet,
                        allowed,
                    };
                    self.events
                        .push_back(Event::Peer(PeerDest::Shard(shard), msg));
                }
            }
            None => self.answer_nack(now, owner, ssrc, to, nack.lost().take(allowed)),
        }
        Some(lost)
    }

    /// A NACK another shard passed on ([`PeerMsg::Nack`]). The sender's home passes it
    /// on once more, unchanged, to where the sender's media arrives; any other shard
    /// answers it (from its cache, or upstream).
    pub(super) fn handle_passed_nack(&mut self, now: Instant, msg: PeerMsg) {
        let PeerMsg::Nack {
            home,
            owner,
            ssrc,
            to,
            allowed,
            ..
        } = msg
        else {
            return;
        };
        let Some(h) = self.by_home_key(home, owner) else {
            return;
        };
        if home == self.cfg.shard
            && let Some(shard) = self.nack_shard(h)
        {
            self.events
                .push_back(Event::Peer(PeerDest::Shard(shard), msg));
            return;
        }
        let PeerMsg::Nack { packet, .. } = msg else {
            return;
        };
        if let Ok(compound) = RtcpCompound::parse(packet.as_bytes()) {
            for raw in compound.raw_packets() {
                if let Ok(RtcpPacket::Nack(nack)) = raw.typed() {
                    self.answer_nack(now, h, ssrc, to, nack.lost().take(allowed));
                }
            }
        }
    }

    /// Where a NACK of `owner`'s media is answered: `None` here (its media arrives
    /// here: its nominated address was validated on this shard, or this shard knows
    /// no better), or the shard to pass it to: the sender's home if that is another,
    /// and the home knows which shard validated the nominated address.
    pub(super) fn nack_shard(&self, owner: SessionHandle) -> Option<ShardId> {
        let o = self.sessions.get(owner)?;
        let addr = o.addr?;
        if o.indexed.contains(&addr) {
            return None;
        }
        match &o.home {
            Home::Elsewhere(shard, _) => Some(*shard),
            Home::Here(local) => local
                .checked_on
                .iter()
                .find(|&&(a, _)| a == addr)
                .map(|&(_, shard)| shard)
                .filter(|&shard| shard != self.cfg.shard),
            Home::Unclaimed { .. } => None,
        }
    }

    /// Answers NACKed sequence numbers of `owner`'s stream `ssrc` for the receiver at
    /// `to`: each cached packet is resent to it as it was received; the others go to the
    /// sender in one NACK from the relay (those asked within the interval are not asked
    /// again).
    pub(super) fn answer_nack(
        &mut self,
        now: Instant,
        owner: SessionHandle,
        ssrc: Ssrc,
        to: SocketAddr,
        lost: impl Iterator<Item = WireSeq>,
    ) {
        /// At most this many sequence numbers go upstream per NACK (a receiver's NACK
        /// covers a few dozen at most; the rest of an absurd one is counted suppressed).
        const UPSTREAM: usize = 256;
        let mut upstream = [WireSeq(0); UPSTREAM];
        let mut n = 0;
        let Engine {
            sessions,
            tx,
            stats,
            ..
        } = self;
        let Some(st) = sessions.get_mut(owner).and_then(|s| s.stream_mut(ssrc)) else {
            return;
        };
        for seq in lost {
            let reply = match &mut st.retransmit {
                Some(cache) => cache.handle_nack(now, seq),
                None => media::NackReply::Forward,
            };
            match reply {
                media::NackReply::Resend(bytes) => {
                    if tx.push_copy(to, bytes) {
                        stats.nack_resent += 1;
                    } else {
                        stats.drops[DropReason::TxQueueFull.index()] += 1;
                        stats.nack_suppressed += 1;
                    }
                }
                media::NackReply::Forward if n < UPSTREAM => {
                    upstream[n] = seq;
                    n += 1;
                    stats.nack_forwarded += 1;
                }
                media::NackReply::Forward | media::NackReply::Suppressed => {
                    stats.nack_suppressed += 1
                }
            }
        }
        let mut out = [0u8; RtcpBytes::MAX];
        if let Some(lost) = upstream.get(..n)
            && !lost.is_empty()
            && let Ok(len) = rtcp::write_nack(&mut out, self.cfg.relay_ssrc, ssrc, lost)
        {
            self.send_rtcp_to(owner, out.get(..len).unwrap_or_default());
        }
    }

    /// The owner of stream `ssrc` in `requester`'s conference and `requester`'s address,
    /// if `requester` is connected and is sent that stream — by its layer state, not
    /// only its subscription: a viewer held on the thumbnail asks nothing of the full
    /// layer. With `pending`, a viewer waiting for the layer's next keyframe counts too.
    fn receiver_of(
        &self,
        requester: SessionHandle,
        ssrc: Ssrc,
        pending: bool,
    ) -> Option<(SessionHandle, SocketAddr)> {
        let r = self.sessions.get(requester)?;
        let to = r.addr?;
        let owner = self.stream_owner(r.conf, ssrc)?;
        let o = self.sessions.get(owner)?;
        let spec = o.stream(ssrc)?.spec;
        let sent = match r.slot(&spec, self.sender(owner, o)) {
            Some(Slot::Receivers) => true,
            Some(Slot::Pending) => pending,
            None => false,
        };
        (owner != requester && sent).then_some((owner, to))
    }

    /// A receiver asked for a keyframe of `ssrc`: pass it to the sender, throttled.
    fn keyframe_request(
        &mut self,
        now: Instant,
        requester: SessionHandle,
        ssrc: Ssrc,
        kind: KeyframeKind,
    ) {
        match self.receiver_of(requester, ssrc, true) {
            Some((owner, _)) => self.request_keyframe_from(now, owner, ssrc, kind),
            None => self.stats.rtcp_drops[RtcpDrop::NotReceiver.index()] += 1,
        }
    }

    /// Sends (or forwards to the owner's shard) a throttled PLI or FIR for `ssrc`:
    /// however many receivers ask, one request per stream per interval and a few per
    /// second reach the sender ([`media::KeyframeThrottle`]).
    pub(super) fn request_keyframe_from(
        &mut self,
        now: Instant,
        owner: SessionHandle,
        ssrc: Ssrc,
        kind: KeyframeKind,
    ) {
        let throttle = media::KeyframeConfig {
            interval: self.cfg.keyframe_interval,
            max_per_second: self.cfg.keyframe_max_per_second,
        };
        let Some(o) = self.sessions.get_mut(owner) else {
            return;
        };
        match o.home {
            Home::Elsewhere(shard, key) => {
                let msg = PeerMsg::KeyframeRequest {
                    owner: key,
                    ssrc,
                    kind,
                };
                self.events
                    .push_back(Event::Peer(PeerDest::Shard(shard), msg));
            }
            Home::Unclaimed { .. } => {}
            Home::Here(_) => {
                let Some(st) = o.stream_mut(ssrc) else {
                    return;
                };
                let Some(request) = st.keyframe.request(now, &throttle) else {
                    self.stats.keyframe_requests_throttled += 1;
                    return;
                };
                let mut out = [0u8; 20];
                let written = match kind {
                    KeyframeKind::Pli => rtcp::write_pli(&mut out, self.cfg.relay_ssrc, ssrc),
                    KeyframeKind::Fir => {
                        let entry = rtcp::FirEntry {
                            ssrc,
                            seq_nr: request.fir_seq,
                        };
                        rtcp::write_fir(&mut out, self.cfg.relay_ssrc, &[entry])
                    }
                };
                if let Ok(n) = written {
                    self.stats.keyframe_requests_sent += 1;
                    self.send_rtcp_to(owner, out.get(..n).unwrap_or_default());
                }
            }
        }
    }

    /// Session `h`'s full-resolution layers' viewers may have changed: a layer with
    /// viewers again is resumed (and a keyframe asked for), one without starts waiting to
    /// be paused ([`media::UnwatchedLayer`]). Only on the sender's home shard, once it is
    /// connected: the requests go over its SRTCP.
    pub(super) fn check_unwatched(&mut self, h: SessionHandle) {
        let Some(now) = self.last_now else {
            return;
        };
        let Some(s) = self.sessions.get_mut(h) else {
            return;
        };
        if !s.is_connected() || !matches!(&s.home, Home::Here(l) if l.keyed()) {
            return;
        }
        let mut actions = Vec::new();
        for st in s
            .streams
            .iter_mut()
            .filter(|st| st.spec.layer == Layer::Full)
        {
            let viewers = st.receivers.len() + st.pending.len();
            if let Some(action) = st.unwatched.handle_viewers(now, viewers) {
                let again = false;
                actions.push((st.spec.ssrc, media::PauseAsk { action, again }));
            }
        }
        for (ssrc, ask) in actions {
            self.ask_pause(now, h, ssrc, ask);
        }
        self.schedule(h);
    }

    /// Sends a PAUSE or RESUME (RFC 7728) for `owner`'s layer `ssrc`; a RESUME is
    /// followed by a keyframe request, so the layer restarts decodable.
    pub(super) fn ask_pause(
        &mut self,
        now: Instant,
        owner: SessionHandle,
        ssrc: Ssrc,
        ask: media::PauseAsk,
    ) {
        let action = ask.action;
        let (kind, pause_id) = match action {
            media::PauseAction::Pause(id) => (rtcp::PauseKind::Pause, id),
            media::PauseAction::Resume(id) => (rtcp::PauseKind::Resume, id),
        };
        let entry = rtcp::PauseEntry {
            target: ssrc,
            kind,
            pause_id,
            type_specific: &[],
        };
        let mut out = [0u8; 24];
        if let Ok(n) = rtcp::write_pause_resume(&mut out, self.cfg.relay_ssrc, &[entry]) {
            match action {
                _ if ask.again => self.stats.pause_requests_repeated += 1,
                media::PauseAction::Pause(_) => self.stats.layers_paused += 1,
                media::PauseAction::Resume(_) => self.stats.layers_resumed += 1,
            }
            self.send_rtcp_to(owner, out.get(..n).unwrap_or_default());
        }
        if let media::PauseAction::Resume(_) = action {
            self.request_keyframe_from(now, owner, ssrc, KeyframeKind::Pli);
        }
    }

    /// Sends receiver `to` an SR about `ssrc` (see [`Self::send_rtcp_to`]), noting when
    /// if it is homed here.
    pub(super) fn send_sr_to(&mut self, now: Instant, to: SessionHandle, ssrc: Ssrc, sr: &[u8]) {
        if let Some(local) = self.sessions.get_mut(to).and_then(|s| s.local()) {
            local.downlink.handle_sr_sent(now, ssrc, sr);
        }
        self.send_rtcp_to(to, sr);
    }

    /// When session `s` is due the empty receiver report that tells it the relay still
    /// holds its session: [`RTCP_EVERY`] after the last SRTCP it was sent, once it is
    /// connected and keyed here.
    pub(super) fn rtcp_due(s: &Session) -> Option<Instant> {
        let Home::Here(local) = &s.home else {
            return None;
        };
        if !s.is_connected() || !local.keyed() {
            return None;
        }
        local.rtcp_sent.map(|t| t + RTCP_EVERY)
    }

    /// Sends session `h` an empty receiver report (RFC 3550 §6.4.2) if it is due one.
    pub(super) fn send_rtcp_if_quiet(&mut self, now: Instant, h: SessionHandle) {
        let due = self.sessions.get(h).and_then(Engine::rtcp_due);
        if due.is_none_or(|t| t > now) {
            return;
        }
        let mut out = [0u8; 8];
        if let Ok(n) = rtcp::write_rr(&mut out, self.cfg.relay_ssrc, &[]) {
            self.stats.rtcp_keepalives += 1;
            self.send_rtcp_to(h, out.get(..n).unwrap_or_default());
        }
    }

    /// Protects `packet` with session `to`'s outbound SRTCP context and queues it, or
    /// passes it to `to`'s home shard.
    pub(super) fn send_rtcp_to(&mut self, to: SessionHandle, packet: &[u8]) {
        let Some(s) = self.sessions.get_mut(to) else {
            return;
        };
        let Some(addr) = s.addr else { return };
        match &mut s.home {
            Home::Here(local) => {
                let Link::Keyed { srtcp_out, .. } = &mut local.link else {
                    return;
                };
                let mut refused = false;
                let queued = self.tx.push(addr, |slot| {
                    let dst = slot.get_mut(..packet.len()).ok_or(())?;
                    dst.copy_from_slice(packet);
                    srtcp_out
                        .protect_rtcp(slot, packet.len())
                        .map_err(|e| refused = e == crate::srtp::SrtpError::TooManyStreams)
                });
                if queued {
                    local.rtcp_sent = self.last_now;
                    self.stats.rtcp_out += 1;
                } else if refused {
                    self.stats.rtcp_out_refused += 1;
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
            Home::Unclaimed { .. } => {}
        }
    }

    /// The member of `conf` that declared `ssrc`.
    pub(super) fn stream_owner(&self, conf: ConfHandle, ssrc: Ssrc) -> Option<SessionHandle> {
        let c = self.conferences.get(conf)?;
        c.members.iter().copied().find(|&m| {
            self.sessions
                .get(m)
                .is_some_and(|s| s.stream(ssrc).is_some())
        })
    }
}
