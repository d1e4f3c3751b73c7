//! Rules from the control side: conferences and sessions created, updated, removed.

use super::*;

impl Engine {
    // ----- rules -----------------------------------------------------------------------

    /// The conference called `id`, created if it does not exist.
    pub(super) fn conference(&mut self, id: &ConfName) -> ConfHandle {
        if let Some(&c) = self.conf_by_id.get(id) {
            return c;
        }
        let c = self.conferences.insert(Conference {
            id: id.clone(),
            members: Vec::new(),
            speaking: None,
            speaker: None,
        });
        self.conf_by_id.insert(id.clone(), c);
        c
    }

    pub(super) fn remove_conference(&mut self, id: &ConfName) {
        let Some(&c) = self.conf_by_id.get(id) else {
            return;
        };
        let members = self
            .conferences
            .get(c)
            .map(|c| c.members.clone())
            .unwrap_or_default();
        for m in members {
            self.remove_session(m, Some(EndReason::Removed));
        }
        if let Some(conf) = self.conferences.remove(c) {
            self.conf_by_id.remove(&conf.id);
        }
    }

    pub(super) fn upsert_session(&mut self, now: Instant, spec: SessionRule) {
        if let Some(&h) = self.by_id.get(&spec.id)
            && let Some(s) = self.sessions.get_mut(h)
        {
            if s.spec == spec {
                return;
            }
            if s.spec.same_identity(&spec) {
                // Streams changed: update in place, keep the connection and what each
                // unchanged stream learned (a pause, its cache, its last report, its
                // clamp); the others forget the streams it no longer declares.
                let mut old: Vec<Option<Stream>> = std::mem::take(&mut s.streams)
                    .into_iter()
                    .map(Some)
                    .collect();
                let layout_changed = s.spec.extensions != spec.extensions;
                s.streams = spec
                    .streams
                    .iter()
                    .map(|st| {
                        let kept = old
                            .iter_mut()
                            .find(|o| o.as_ref().is_some_and(|o| o.spec == *st))
                            .and_then(Option::take);
                        match kept {
                            Some(mut kept) => {
                                if layout_changed {
                                    kept.layout = super::rtp::ext_layout(&spec.extensions);
                                }
                                kept
                            }
                            None => new_stream(*st, &spec),
                        }
                    })
                    .collect();
                s.spec = spec;
                let conf = s.conf;
                let dropped: Vec<Ssrc> = old.into_iter().flatten().map(|o| o.spec.ssrc).collect();
                self.forget_streams(conf, &dropped);
                self.fanout_build(h);
                self.sync_conference_choices(now, conf);
                return;
            }
            self.remove_session(h, Some(EndReason::Replaced));
        }
        let mut ice_cfg = IceLiteConfig::new(
            spec.ice_ufrag.as_str(),
            spec.ice_pwd.as_str(),
            spec.remote_ufrag.as_str(),
        );
        ice_cfg.initial_timeout = self.cfg.silence_timeout;
        ice_cfg.consent_timeout = self.cfg.silence_timeout;
        let ice = match IceLite::new(now, ice_cfg) {
            Ok(ice) => ice,
            Err(e) => {
                // The control codec already checks ice-chars; this is the last line.
                self.notify(SessionEvent::Failed {
                    identity: spec.identity(),
                    session: spec.id,
                    reason: EndReason::Other,
                    detail: e.to_string(),
                });
                return;
            }
        };
        let conf = self.conference(&spec.conf);
        let id = spec.id.clone();
        let identity = spec.identity();
        let ufrag = spec.ice_ufrag.clone();
        // A new session is neither connected nor routed anywhere yet: no fan-out list
        // changes until it is.
        let h = self.sessions.insert(Session {
            identity,
            ice,
            conf,
            full: FullSet::Ssrcs(Vec::new()),
            home: Home::Unclaimed { timed_out: false },
            addr: None,
            indexed: Vec::new(),
            streams: streams_of(&spec),
            created: now,
            alive_sent: None,
            checked_sent: Vec::new(),
            checks_handed: media::Budget::new(super::stun::CHECKS_HANDED_PER_SECOND),
            handoffs: media::Budget::new(self.cfg.rtcp_max_per_second),
            timer_at: None,
            speaker_shard: speaker::speaker_shard(&spec.conf, self.cfg.shards),
            layers: Vec::new(),
            uplink: None,
            uplink_queue: None,
            twcc: None,
            spec,
        });
        // Another shard may have claimed it already (its participant holds the
        // credentials and checks on): ask.
        if self.cfg.shards > 1 {
            let msg = PeerMsg::WhereIs {
                session: id.clone(),
                identity,
                from: self.cfg.shard,
            };
            self.events.push_back(Event::Peer(PeerDest::All, msg));
        }
        self.by_id.insert(id, h);
        self.by_ufrag.insert(ufrag, h);
        if let Some(c) = self.conferences.get_mut(conf) {
            c.members.push(h);
        }
        self.schedule(h);
        self.sync_conference_choices(now, conf);
    }

    /// Removes a session at once: it neither sends nor receives from this call on.
    pub(super) fn remove_session(&mut self, h: SessionHandle, reason: Option<EndReason>) {
        let Some(mut s) = self.sessions.remove(h) else {
            return;
        };
        if let Some(now) = self.last_now {
            self.withdraw_removed(now, h, &mut s);
        }
        self.drop_stale_timers();
        self.by_id.remove(&s.spec.id);
        // A snapshot may have handed its ufrag to a session upserted before this one.
        if self.by_ufrag.get(s.spec.ice_ufrag.as_str()) == Some(&h) {
            self.by_ufrag.remove(s.spec.ice_ufrag.as_str());
        }
        for a in &s.indexed {
            self.by_addr.remove(a);
        }
        if let Home::Elsewhere(shard, key) = s.home {
            self.by_home.remove(&(shard, key));
        }
        if let Some(addr) = s.addr {
            let speaker = self.speaker_of(s.conf);
            self.fanout_remove(s.conf, h, addr, &s.receives(speaker));
        }
        if let Some(c) = self.conferences.get_mut(s.conf) {
            c.members.retain(|&m| m != h);
            if c.speaking == Some(h) {
                c.speaking = None;
            }
            if let Some(sp) = &mut c.speaker {
                sp.leave(h);
            }
        }
        let gone: Vec<Ssrc> = s.spec.streams.iter().map(|st| st.ssrc).collect();
        self.forget_streams(s.conf, &gone);
        if let (Home::Here(_), Some(reason), true) = (&s.home, reason, s.is_connected()) {
            self.notify(SessionEvent::Closed {
                identity: s.identity,
                session: s.spec.id,
                reason,
            });
        }
        if let Some(now) = self.last_now {
            self.sync_conference_choices(now, s.conf);
        }
    }

    /// The members of `conf` forget streams `gone` (of a member who left, or that a
    /// member no longer declares): the layer each was on, and (homed here) the SRTCP
    /// state of their sender reports, so a member's outbound context holds the SSRCs of
    /// the conference as it is, not of everyone who was ever in it.
    fn forget_streams(&mut self, conf: ConfHandle, gone: &[Ssrc]) {
        if gone.is_empty() {
            return;
        }
        let Some(c) = self.conferences.get(conf) else {
            return;
        };
        for &m in &c.members {
            let Some(member) = self.sessions.get_mut(m) else {
                continue;
            };
            member.layers.retain(|(ssrc, _)| !gone.contains(ssrc));
            if let Some(Link::Keyed { srtcp_out, .. }) = member.local().map(|l| &mut l.link) {
                for &ssrc in gone {
                    srtcp_out.remove_stream(ssrc);
                }
            }
        }
    }

    /// Brings the layer choices of `conf`'s members homed here in line with who is in
    /// the conference now.
    pub(super) fn sync_conference_choices(&mut self, now: Instant, conf: ConfHandle) {
        if !self.cfg.layer_choice {
            return;
        }
        let members = self
            .conferences
            .get(conf)
            .map(|c| c.members.clone())
            .unwrap_or_default();
        for m in members {
            self.sync_choices(now, m);
        }
    }
}

/// A session's streams as a rule declares them, with empty fan-out lists (filled by
/// `fanout_build` where they are read) and fresh throttles.
fn streams_of(rule: &SessionRule) -> Vec<Stream> {
    rule.streams
        .iter()
        .map(|&st| new_stream(st, rule))
        .collect()
}

/// Stream `st` of `rule`'s session, knowing nothing yet.
fn new_stream(st: StreamRule, rule: &SessionRule) -> Stream {
    Stream {
        spec: st,
        layout: super::rtp::ext_layout(&rule.extensions),
        receivers: Vec::new(),
        keyframe: media::KeyframeThrottle::default(),
        last_sr: media::LastSenderReport::default(),
        retransmit: None,
        unwatched: media::UnwatchedLayer::default(),
        speech_quiet_until: None,
        pending: Vec::new(),
        pending_newest: None,
        meter: media::RateMeter::new(Duration::from_secs(1)),
        rate: None,
        resumed_at: None,
        rate_due: None,
        allowance: 0,
        clamp: None,
        demote_below: 0,
    }
}
