//! Fan-out tables: for every stream, the nominated addresses of the connected sessions
//! that receive it — the list the forwarding path hands to `sendmmsg`.
//!
//! A shard keeps the lists of the senders whose media it routes
//! (`Session::routed_here`: it validated one of their addresses, so their datagrams land
//! here) and no others. The lists change in place; no change walks more than one
//! conference's members once:
//! - a receiver connects, moves or disconnects: its address is added to or removed from
//!   the lists of the streams it receives, of every sender routed here;
//! - a receiver changes its subscription, or layer choice moves it on a full layer
//!   (`bandwidth`): only the full-resolution entries that differ;
//! - a sender becomes routed here, or changes its streams: its own lists are built from
//!   the conference's connected members;
//! - a sender is no longer routed here: its lists are dropped.
//!
//! A full layer has two lists: `receivers`, and `pending` — receivers switching up,
//! which join `receivers` at the layer's next keyframe (the forwarding path moves them,
//! into capacity reserved here). Where a receiver is follows from its subscription and
//! its layer state (`Session::slot`).
//!
//! A receiver that starts a stream also gets the stream's last sender report, from the
//! sender's home shard (`media::LastSenderReport`).
//!
//! The same transitions allocate and drop the sender's retransmission caches, which live
//! where its media arrives.
//!
//! This is the control path: allocation is fine. The forwarding path only reads the
//! lists (and copies each video packet into its stream's preallocated cache).

use super::*;

/// A stream's fan-out lists: receivers, and receivers waiting for its keyframe.
type Lists = (Vec<SocketAddr>, Vec<(SocketAddr, SessionHandle)>);

impl Engine {
    /// Receiver `r` of conference `conf` connected at `addr`: it joins the lists of
    /// every sender routed here, as its subscription and layer states say.
    pub(super) fn fanout_add(&mut self, conf: ConfHandle, r: SessionHandle, addr: SocketAddr) {
        let speaker = self.speaker_of(conf);
        let Some(new) = self.sessions.get(r).map(|s| s.receives(speaker)) else {
            return;
        };
        self.fanout_edit(conf, r, addr, None, Some(&new));
    }

    /// Receiver `r` (receiving what `old` says) no longer receives at `addr`.
    pub(super) fn fanout_remove(
        &mut self,
        conf: ConfHandle,
        r: SessionHandle,
        addr: SocketAddr,
        old: &Receives,
    ) {
        self.fanout_edit(conf, r, addr, Some(old), None);
    }

    /// Sets which full-resolution layers session `r` receives, editing only the entries
    /// that change. Layer states of layers it no longer subscribes to are forgotten
    /// (a new subscription starts from the default), and its layer choices follow.
    pub(super) fn set_subscription(&mut self, r: SessionHandle, full: FullSet) {
        let Some(s) = self.sessions.get_mut(r) else {
            return;
        };
        if s.full == full {
            return;
        }
        let speaker = self.conferences.get(s.conf).and_then(|c| c.speaking);
        let old = s.receives(speaker);
        s.layers.retain(|&(ssrc, _)| match &full {
            FullSet::All | FullSet::Speaker => true,
            FullSet::Ssrcs(v) => v.contains(&ssrc),
        });
        s.full = full;
        let new = s.receives(speaker);
        let (conf, addr) = (s.conf, s.addr);
        if let Some(addr) = addr {
            self.fanout_edit(conf, r, addr, Some(&old), Some(&new));
        }
        if let Some(now) = self.last_now {
            self.sync_choices(now, r);
        }
    }

    /// Moves receiver `r`'s entry (`addr`) in every stream list of the other members
    /// of `conf` routed here from where `old` puts it to where `new` does (`None`: on
    /// no list).
    pub(super) fn fanout_edit(
        &mut self,
        conf: ConfHandle,
        r: SessionHandle,
        addr: SocketAddr,
        old: Option<&Receives>,
        new: Option<&Receives>,
    ) {
        let Some(c) = self.conferences.get(conf) else {
            return;
        };
        let now = self.last_now;
        // Streams `r` starts whose last SR it should get (see `media::LastSenderReport`).
        let mut replay = Vec::new();
        // Senders homed here whose full-resolution viewers changed (`media::UnwatchedLayer`).
        let mut full_changed = Vec::new();
        for &m in &c.members {
            let Some(sender) = self.sessions.get_mut(m) else {
                continue;
            };
            if m == r || !sender.routed_here() {
                continue;
            }
            let marked = self.cfg.layer_choice && sender.spec.extensions.frame_marking.is_some();
            let homed_here = matches!(sender.home, Home::Here(_));
            for st in &mut sender.streams {
                let from = old.and_then(|o| o.slot(&st.spec, m, marked));
                let to = new.and_then(|n| n.slot(&st.spec, m, marked));
                if from == to {
                    continue;
                }
                if homed_here && st.spec.layer == Layer::Full {
                    full_changed.push(m);
                }
                // One entry: two sessions at one address would each have one.
                match from {
                    Some(Slot::Receivers) => {
                        if let Some(k) = st.receivers.iter().position(|&a| a == addr) {
                            st.receivers.swap_remove(k);
                        }
                    }
                    Some(Slot::Pending) => {
                        if let Some(k) = st.pending.iter().position(|&p| p == (addr, r)) {
                            st.pending.swap_remove(k);
                        }
                    }
                    None => {}
                }
                match to {
                    Some(Slot::Receivers) => st.receivers.push(addr),
                    Some(Slot::Pending) => {
                        if st.pending.is_empty() {
                            // The newest so far, where the cache knows it: a stale
                            // keyframe start as the next packet starts nothing either.
                            st.pending_newest = st.retransmit.as_ref().and_then(|c| c.last_seq());
                        }
                        st.pending.push((addr, r));
                        // The keyframe moves them over without allocating.
                        st.receivers.reserve(st.pending.len());
                    }
                    None => {}
                }
                if from.is_none()
                    && let Some(sr) = now.and_then(|now| st.last_sr.for_new_receiver(now))
                {
                    replay.extend(RtcpBytes::new(sr).map(|sr| (st.spec.ssrc, sr)));
                }
            }
        }
        for (ssrc, sr) in replay {
            self.stats.sr_replayed += 1;
            match now {
                Some(now) => self.send_sr_to(now, r, ssrc, sr.as_bytes()),
                None => self.send_rtcp_to(r, sr.as_bytes()),
            }
        }
        for m in full_changed {
            self.check_unwatched(m);
        }
    }

    /// Builds sender `h`'s lists from its conference's connected members if this shard
    /// routes its media, or drops them if not.
    pub(super) fn fanout_build(&mut self, h: SessionHandle) {
        let Some(s) = self.sessions.get(h) else {
            return;
        };
        let lists: Vec<Lists> = match s.routed_here() {
            true => s
                .streams
                .iter()
                .map(|st| {
                    let (mut receivers, pending) = self.lists_of(h, s, &st.spec);
                    receivers.reserve(pending.len());
                    (receivers, pending)
                })
                .collect(),
            false => Vec::new(),
        };
        let cfg = &self.cfg;
        let Some(s) = self.sessions.get_mut(h) else {
            return;
        };
        let routed = s.routed_here();
        let full = s.streams.iter().any(|st| st.spec.layer == Layer::Full);
        let ext = s.spec.extensions;
        // So does the uplink estimate: one controller per uplink, and a sender that
        // stamps transport-wide sequence numbers runs its own over the feedback.
        let estimated = routed && full && cfg.uplink_estimation && ext.transport_cc.is_none();
        match (estimated, &s.uplink) {
            (true, None) => s.uplink = Some(Box::new(media::UplinkEstimate::new())),
            (false, Some(_)) => s.uplink = None,
            _ => {}
        }
        // And the queue on its uplink, for the round-trip check of its downlink
        // (whatever it sends with abs-send-time shows it).
        let queued = routed && cfg.downlink_queue.is_some() && ext.abs_send_time.is_some();
        match (queued, &s.uplink_queue) {
            (true, None) => s.uplink_queue = Some(Box::default()),
            (false, Some(_)) => s.uplink_queue = None,
            _ => {}
        }
        // And transport-cc feedback, for a sender that stamps the numbers.
        let recorded = routed && ext.transport_cc.is_some();
        match (recorded, &s.twcc) {
            (true, None) => s.twcc = Some(Box::new(media::TwccRecorder::new())),
            (false, Some(_)) => s.twcc = None,
            _ => {}
        }
        let mut lists = lists.into_iter();
        for st in &mut s.streams {
            (st.receivers, st.pending) = lists.next().unwrap_or_default();
            // The retransmission cache lives where the media arrives.
            let bytes = match (st.spec.kind, st.spec.layer) {
                (MediaKind::Audio, _) => 0,
                (MediaKind::Video, Layer::Thumbnail) => cfg.retransmit_thumbnail_bytes,
                (MediaKind::Video, Layer::Full | Layer::Single) => cfg.retransmit_full_bytes,
            };
            match (routed && bytes > 0, &st.retransmit) {
                (true, None) => {
                    st.retransmit = Some(media::RetransmitCache::new(
                        media::RetransmitConfig::for_bytes(bytes, cfg.retransmit_age),
                    ))
                }
                (false, Some(_)) => st.retransmit = None,
                _ => {}
            }
            st.pending_newest = st.retransmit.as_ref().and_then(|c| c.last_seq());
        }
        self.check_unwatched(h);
    }

    /// Sender `h`'s (`s`) stream `stream`'s lists computed from scratch: the addresses
    /// of the connected members of its conference that receive it, and of those that
    /// wait for its keyframe.
    fn lists_of(&self, h: SessionHandle, s: &Session, stream: &StreamRule) -> Lists {
        let from = self.sender(h, s);
        let (mut receivers, mut pending) = (Vec::new(), Vec::new());
        let members = self.conferences.get(s.conf).map(|c| c.members.as_slice());
        for &m in members.unwrap_or_default().iter().filter(|&&m| m != h) {
            let Some(r) = self.sessions.get(m) else {
                continue;
            };
            match (r.addr, r.slot(stream, from)) {
                (Some(a), Some(Slot::Receivers)) => receivers.push(a),
                (Some(a), Some(Slot::Pending)) => pending.push((a, m)),
                _ => {}
            }
        }
        (receivers, pending)
    }

    /// Checks every fan-out list against one computed from scratch: the lists of
    /// senders routed here hold exactly the addresses of the connected members that
    /// receive the stream (or wait for its keyframe), and no other sender has a list.
    /// For tests and fuzzing: O(members² × streams).
    #[doc(hidden)]
    pub fn check_fanout(&self) -> Result<(), String> {
        for (h, s) in self.sessions.iter() {
            let members = self
                .conferences
                .get(s.conf)
                .map(|c| c.members.as_slice())
                .unwrap_or_default();
            if !members.contains(&h) {
                return Err(format!("{:?} is not a member of its conference", s.spec.id));
            }
            for st in &s.streams {
                let (mut want, mut want_pending) = match s.routed_here() {
                    true => self.lists_of(h, s, &st.spec),
                    false => Default::default(),
                };
                let mut have = st.receivers.clone();
                let mut have_pending = st.pending.clone();
                want.sort();
                have.sort();
                want_pending.sort();
                have_pending.sort();
                if want != have || want_pending != have_pending {
                    return Err(format!(
                        "shard {:?}: {:?} stream {:?}: fan-out {have:?} pending \
                         {have_pending:?}, should be {want:?} pending {want_pending:?}",
                        self.cfg.shard, s.spec.id, st.spec.ssrc
                    ));
                }
            }
        }
        Ok(())
    }
}
