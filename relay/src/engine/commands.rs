//! Rules from the control side: conferences and sessions created, updated, removed.

use super::*;

impl Engine {
    // ----- rules -----------------------------------------------------------------------

    pub(super) fn conference(&mut self, id: &ConfName) -> usize {
        if let Some(&c) = self.conf_by_id.get(id) {
            return c;
        }
        let conf = Conference {
            id: id.clone(),
            members: Vec::new(),
        };
        let c = match self.conferences.iter().position(Option::is_none) {
            Some(c) => {
                self.conferences[c] = Some(conf);
                c
            }
            None => {
                self.conferences.push(Some(conf));
                self.conferences.len() - 1
            }
        };
        self.conf_by_id.insert(id.clone(), c);
        c
    }

    pub(super) fn remove_conference(&mut self, id: &ConfName) {
        let Some(&c) = self.conf_by_id.get(id) else {
            return;
        };
        let members = self.conferences[c]
            .as_ref()
            .map(|c| c.members.clone())
            .unwrap_or_default();
        for m in members {
            self.remove_session(m, Some(EndReason::Removed));
        }
        let conf = self.conferences[c]
            .take()
            .expect("indexed conference exists");
        self.conf_by_id.remove(&conf.id);
    }

    pub(super) fn upsert_session(&mut self, now: Instant, spec: SessionRule) {
        if let Some(&i) = self.by_id.get(&spec.id) {
            let s = self.sessions[i].as_mut().expect("indexed session exists");
            if s.spec == spec {
                return;
            }
            if s.spec.same_identity(&spec) {
                // Streams changed: update in place, keep the connection.
                s.streams = streams_of(&spec);
                s.spec = spec;
                let conf = s.conf;
                self.rebuild_fanout(conf);
                return;
            }
            self.remove_session(i, Some(EndReason::Replaced));
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
                    session: spec.id,
                    reason: EndReason::Other,
                    detail: e.to_string(),
                });
                return;
            }
        };
        let conf = self.conference(&spec.conf);
        let session = Session {
            ice,
            conf,
            full: FullSet::Ssrcs(Vec::new()),
            home: Home::Unclaimed,
            addr: None,
            indexed: Vec::new(),
            streams: streams_of(&spec),
            created: now,
            reported: false,
            alive_sent: None,
            incarnation: self.next_incarnation,
            timer_at: None,
            spec,
        };
        self.next_incarnation = self.next_incarnation.wrapping_add(1);
        let id = session.spec.id.clone();
        let ufrag = session.spec.ice_ufrag.as_str().to_owned();
        let i = match self.free.pop() {
            Some(i) => {
                self.sessions[i] = Some(session);
                i
            }
            None => {
                self.sessions.push(Some(session));
                self.sessions.len() - 1
            }
        };
        self.by_id.insert(id, i);
        self.by_ufrag.insert(ufrag, i);
        self.schedule(i);
        self.conferences[conf]
            .as_mut()
            .expect("conference exists")
            .members
            .push(i);
        self.rebuild_fanout(conf);
    }

    /// Removes a session at once: it neither sends nor receives from this call on.
    pub(super) fn remove_session(&mut self, i: usize, reason: Option<EndReason>) {
        let Some(s) = self.sessions[i].take() else {
            return;
        };
        self.drop_stale_timers();
        self.by_id.remove(&s.spec.id);
        self.by_ufrag.remove(s.spec.ice_ufrag.as_str());
        for a in &s.indexed {
            self.by_addr.remove(a);
        }
        self.free.push(i);
        if let Some(c) = self.conferences[s.conf].as_mut() {
            c.members.retain(|&m| m != i);
        }
        self.rebuild_fanout(s.conf);
        if let (Home::Here(_), Some(reason), true) = (&s.home, reason, s.is_connected()) {
            self.notify(SessionEvent::Closed {
                session: s.spec.id,
                reason,
            });
        }
    }
}

/// A session's streams as a rule declares them, with empty fan-out lists (filled by
/// `rebuild_fanout`) and fresh throttles.
fn streams_of(rule: &SessionRule) -> Vec<Stream> {
    rule.streams
        .iter()
        .map(|&st| Stream {
            spec: st,
            receivers: Vec::new(),
            keyframe: media::KeyframeThrottle::default(),
        })
        .collect()
}
