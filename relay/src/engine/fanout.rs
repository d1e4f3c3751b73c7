//! Fan-out tables: for every stream, the nominated addresses of the connected sessions
//! that receive it — the list the forwarding path hands to `sendmmsg`.
//!
//! A shard keeps the lists of the senders whose media it routes
//! (`Session::routed_here`: it validated one of their addresses, so their datagrams land
//! here) and no others. The lists change in place; no change walks more than one
//! conference's members once:
//! - a receiver connects, moves or disconnects: its address is added to or removed from
//!   the lists of the streams it receives, of every sender routed here;
//! - a receiver changes its subscription: only the full-resolution entries that differ;
//! - a sender becomes routed here, or changes its streams: its own lists are built from
//!   the conference's connected members;
//! - a sender is no longer routed here: its lists are dropped.
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

/// What to do with one receiver's entry in one stream's list.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Edit {
    Add,
    Remove,
    Keep,
}

impl Engine {
    /// Receiver `r` of conference `conf` connected at `addr` (it receives what `full`
    /// selects): it joins the lists of every sender routed here.
    pub(super) fn fanout_add(&mut self, conf: ConfHandle, r: SessionHandle, addr: SocketAddr) {
        let Some(full) = self.sessions.get(r).map(|s| s.full.clone()) else {
            return;
        };
        self.fanout_edit(conf, r, addr, |st| match full.wants(st) {
            true => Edit::Add,
            false => Edit::Keep,
        });
    }

    /// Receiver `r` (receiving what `full` selects) no longer receives at `addr`.
    pub(super) fn fanout_remove(
        &mut self,
        conf: ConfHandle,
        r: SessionHandle,
        addr: SocketAddr,
        full: &FullSet,
    ) {
        self.fanout_edit(conf, r, addr, |st| match full.wants(st) {
            true => Edit::Remove,
            false => Edit::Keep,
        });
    }

    /// Sets which full-resolution layers session `r` receives, editing only the entries
    /// that change.
    pub(super) fn set_subscription(&mut self, r: SessionHandle, full: FullSet) {
        let Some(s) = self.sessions.get_mut(r) else {
            return;
        };
        if s.full == full {
            return;
        }
        let old = std::mem::replace(&mut s.full, full.clone());
        let (conf, addr) = (s.conf, s.addr);
        if let Some(addr) = addr {
            self.fanout_edit(conf, r, addr, |st| match (old.wants(st), full.wants(st)) {
                (false, true) => Edit::Add,
                (true, false) => Edit::Remove,
                _ => Edit::Keep,
            });
        }
    }

    /// Applies `edit` to receiver `r`'s entry (`addr`) in every stream list of the other
    /// members of `conf` routed here.
    fn fanout_edit(
        &mut self,
        conf: ConfHandle,
        r: SessionHandle,
        addr: SocketAddr,
        edit: impl Fn(&StreamRule) -> Edit,
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
            let homed_here = matches!(sender.home, Home::Here(_));
            for st in &mut sender.streams {
                let edited = edit(&st.spec);
                if edited != Edit::Keep && homed_here && st.spec.layer == Layer::Full {
                    full_changed.push(m);
                }
                match edited {
                    Edit::Add => {
                        st.receivers.push(addr);
                        if let Some(sr) = now.and_then(|now| st.last_sr.for_new_receiver(now)) {
                            replay.extend(RtcpBytes::new(sr));
                        }
                    }
                    Edit::Remove => {
                        // One entry: two sessions at one address would each have one.
                        if let Some(k) = st.receivers.iter().position(|&a| a == addr) {
                            st.receivers.swap_remove(k);
                        }
                    }
                    Edit::Keep => {}
                }
            }
        }
        for sr in replay {
            self.stats.sr_replayed += 1;
            self.send_rtcp_to(r, sr.as_bytes());
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
        let lists: Vec<Vec<SocketAddr>> = match self.conferences.get(s.conf) {
            Some(c) if s.routed_here() => s
                .streams
                .iter()
                .map(|st| {
                    c.members
                        .iter()
                        .filter(|&&m| m != h)
                        .filter_map(|&m| self.sessions.get(m))
                        .filter(|r| r.wants(&st.spec))
                        .filter_map(|r| r.addr)
                        .collect()
                })
                .collect(),
            _ => Vec::new(),
        };
        let cfg = &self.cfg;
        let Some(s) = self.sessions.get_mut(h) else {
            return;
        };
        let routed = s.routed_here();
        let mut lists = lists.into_iter();
        for st in &mut s.streams {
            st.receivers = lists.next().unwrap_or_default();
            // The retransmission cache lives where the media arrives.
            let bytes = match (st.spec.kind, st.spec.layer) {
                (MediaKind::Audio, _) => 0,
                (MediaKind::Video, Layer::Thumbnail) => cfg.retransmit_thumbnail_bytes,
                (MediaKind::Video, Layer::Full | Layer::Single) => cfg.retransmit_full_bytes,
            };
            match (routed && bytes > 0, &st.retransmit) {
                (true, None) => {
                    st.retransmit = Some(media::RetransmitCache::new(media::RetransmitConfig {
                        max_age: cfg.retransmit_age,
                        max_bytes: bytes,
                        ..media::RetransmitConfig::default()
                    }))
                }
                (false, Some(_)) => st.retransmit = None,
                _ => {}
            }
        }
        self.check_unwatched(h);
    }

    /// Checks every fan-out list against one computed from scratch: the lists of
    /// senders routed here hold exactly the addresses of the connected members that
    /// receive the stream, and no other sender has a list. For tests and fuzzing:
    /// O(members² × streams).
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
                let mut want: Vec<SocketAddr> = match s.routed_here() {
                    true => members
                        .iter()
                        .filter(|&&m| m != h)
                        .filter_map(|&m| self.sessions.get(m))
                        .filter(|r| r.wants(&st.spec))
                        .filter_map(|r| r.addr)
                        .collect(),
                    false => Vec::new(),
                };
                let mut have = st.receivers.clone();
                want.sort();
                have.sort();
                if want != have {
                    return Err(format!(
                        "shard {:?}: {:?} stream {:?}: fan-out {have:?}, should be {want:?}",
                        self.cfg.shard, s.spec.id, st.spec.ssrc
                    ));
                }
            }
        }
        Ok(())
    }
}
