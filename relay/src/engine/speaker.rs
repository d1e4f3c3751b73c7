//! Active speaker: which member of a conference is talking, from the RFC 6464 audio
//! levels its members' audio carries in the clear, reported as
//! [`SessionEvent::ActiveSpeaker`] (the control socket's `active_speaker`).
//!
//! # Where the detector runs
//!
//! A conference's audio arrives on many shards: the kernel hashes each member's
//! address to a worker, so every member's packets may land on a different one. The
//! dominant-speaker decision needs all of them in one place, so each conference has
//! one *speaker shard* that runs its [`media::SpeakerDetector`]: the FNV-1a hash of
//! its id modulo the number of shards ([`speaker_shard`]). Every shard computes the
//! same answer from what it already has, so nothing is negotiated and nothing moves
//! when members come and go; conferences spread over the shards like their members.
//!
//! The forwarding path ([`note`], from `rtp.rs`) reads the level of each audio packet
//! of a session that negotiated the extension (one extension lookup, no allocation)
//! and judges it with the detector's own rule ([`media::SpeakerConfig::is_speech`]).
//! Silence costs nothing more. Speech is passed on at most once per stream per *half*
//! bucket (25 ms by default): with packets every 20 ms that is about one note per
//! 40 ms of talking, so every 50 ms bucket of the detector sees at least one whatever
//! the phase between the shards' and the detector's buckets, and a talker costs the
//! speaker shard some 25 small messages a second ([`PeerMsg::Speech`], inline, no
//! allocation), or a direct call when the packet landed on the speaker shard itself.
//! The note carries the first speech packet's level: the detector only uses loudness to
//! break ties between equal scores, and smooths it anyway. The detector marks the bucket
//! a note arrives in; a missing note is silence, exactly as a missing packet is.
//!
//! The alternatives: every audio packet's level to the speaker shard (twice the
//! messages for no better decision), or a per-shard summary per bucket (the loudest
//! level per member, sent at the bucket's end) — which needs a timer per shard and
//! conference and delays every note by up to a bucket, for the same bits.
//!
//! The speaker shard schedules its detector's decisions through the engine's timers
//! ([`Due::Speaker`]): only while someone's window holds speech, at the detector's
//! bucket boundaries, never a walk over conferences.

use super::*;
use crate::wire::rtp::audio_level;

/// The shard that runs `conf`'s speaker detector, out of `shards`: FNV-1a of its id,
/// so every shard agrees without a message.
pub(super) fn speaker_shard(conf: &ConfName, shards: u16) -> ShardId {
    let mut h: u32 = 0x811c_9dc5;
    for &b in conf.as_str().as_bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    ShardId((h % u32::from(shards.max(1))) as u16)
}

/// A conference's speaker detector on its speaker shard, and which member each of its
/// slots is.
pub(super) struct ConfSpeaker {
    detector: media::SpeakerDetector,
    /// Slot `i` of the detector is this member (a session on this shard); a slot is
    /// taken at a member's first speech and freed when it leaves.
    slots: Vec<Option<SessionHandle>>,
    capacity: usize,
    /// The deadline it is scheduled at in `timers`, if any.
    timer_at: Option<Instant>,
}

impl ConfSpeaker {
    fn new(cfg: media::SpeakerConfig) -> Self {
        ConfSpeaker {
            detector: media::SpeakerDetector::new(cfg),
            slots: Vec::new(),
            capacity: cfg.capacity as usize,
            timer_at: None,
        }
    }

    /// `h`'s slot, taken now if it has none (`None`: every slot is taken).
    fn slot_of(&mut self, h: SessionHandle) -> Option<u32> {
        if let Some(i) = self.slots.iter().position(|&m| m == Some(h)) {
            return Some(i as u32);
        }
        if let Some(i) = self.slots.iter().position(Option::is_none) {
            self.slots[i] = Some(h);
            return Some(i as u32);
        }
        if self.slots.len() < self.capacity {
            self.slots.push(Some(h));
            return Some(self.slots.len() as u32 - 1);
        }
        None
    }

    /// Member `h` left: its history goes with it.
    pub(super) fn leave(&mut self, h: SessionHandle) {
        if let Some(i) = self.slots.iter().position(|&m| m == Some(h)) {
            self.detector.remove(i as u32);
            self.slots[i] = None;
        }
    }
}

/// Speech the forwarding path found in one audio packet, to pass on.
#[derive(Debug, Clone, Copy)]
pub(super) struct Note {
    /// The member's conference (on this shard).
    pub(super) conf: ConfHandle,
    /// Where its detector runs.
    pub(super) speaker_shard: ShardId,
    /// The member's home shard and its handle there (how another shard names it).
    pub(super) home: (ShardId, SessionHandle),
    /// The member on this shard.
    pub(super) member: SessionHandle,
    /// The first speech packet's level.
    pub(super) level: u8,
}

/// Whether a packet of audio stream `st` whose RFC 6464 level element is `level`
/// carries speech to pass on now (its level): a packet the detector's rule calls
/// speech, and nothing passed on for this stream in the last half bucket. No
/// allocation.
#[inline(always)]
pub(super) fn speech(
    cfg: &media::SpeakerConfig,
    now: Instant,
    st: &mut Stream,
    level: &[u8],
) -> Option<u8> {
    let level = audio_level(level).ok()?;
    if !cfg.is_speech(level.level, level.voice_activity) {
        return None;
    }
    if st.speech_quiet_until.is_some_and(|until| now < until) {
        return None;
    }
    st.speech_quiet_until = now.checked_add(cfg.bucket / 2);
    Some(level.level)
}

/// Passes `n` on (found on shard `me`): to the detector here if this is the
/// conference's speaker shard, else as one [`PeerMsg::Speech`] to it.
#[cold] // about once per 40 ms per talker, against 50 packets a second per member
pub(super) fn note(
    n: Note,
    now: Instant,
    me: ShardId,
    cfg: &media::SpeakerConfig,
    conferences: &mut Slab<ConfHandle, Conference>,
    timers: &mut Timers,
    events: &mut VecDeque<Event>,
) {
    if n.speaker_shard == me {
        feed(cfg, conferences, timers, now, n.conf, n.member, n.level);
    } else {
        let (home, session) = n.home;
        let msg = PeerMsg::Speech {
            home,
            session,
            level: n.level,
        };
        events.push_back(Event::Peer(PeerDest::Shard(n.speaker_shard), msg));
    }
}

/// Member `h` of conference `c` spoke at `level`: into the detector (created at the
/// conference's first speech), and its decision scheduled if that is now sooner.
fn feed(
    cfg: &media::SpeakerConfig,
    conferences: &mut Slab<ConfHandle, Conference>,
    timers: &mut Timers,
    now: Instant,
    c: ConfHandle,
    h: SessionHandle,
    level: u8,
) {
    let Some(conf) = conferences.get_mut(c) else {
        return;
    };
    let sp = conf
        .speaker
        .get_or_insert_with(|| Box::new(ConfSpeaker::new(*cfg)));
    let Some(slot) = sp.slot_of(h) else {
        return;
    };
    // Judged speech where it arrived already.
    sp.detector.handle_level(now, slot, level, true);
    if let Some(due) = sp.detector.poll_timeout()
        && sp.timer_at.is_none_or(|t| due < t)
    {
        sp.timer_at = Some(due);
        timers.push(due, Due::Speaker(c));
    }
}

impl Engine {
    /// A [`PeerMsg::Speech`]: member `session` (its handle on its home shard `home`)
    /// spoke. Ignored unless this shard runs its conference's detector.
    pub(super) fn handle_speech(
        &mut self,
        now: Instant,
        home: ShardId,
        session: SessionHandle,
        level: u8,
    ) {
        let me = self.cfg.shard;
        let Some((h, s)) = self
            .by_home_key(home, session)
            .and_then(|h| Some((h, self.sessions.get(h)?)))
        else {
            return; // gone meanwhile, or never known here
        };
        if s.speaker_shard != me || !self.speaker_cfg.is_speech(level, true) {
            return;
        }
        let c = s.conf;
        feed(
            &self.speaker_cfg,
            &mut self.conferences,
            &mut self.timers,
            now,
            c,
            h,
            level,
        );
    }

    /// The deadline conference `c`'s detector is scheduled at.
    pub(super) fn speaker_due(&self, c: ConfHandle) -> Option<Instant> {
        self.conferences.get(c)?.speaker.as_ref()?.timer_at
    }

    /// Conference `c`'s detector decides (its deadline `at` came): a change becomes
    /// an event; the next decision is scheduled while anyone's window holds speech.
    pub(super) fn speaker_timeout(&mut self, now: Instant, c: ConfHandle, at: Instant) {
        let Some(conf) = self.conferences.get_mut(c) else {
            return;
        };
        let Some(sp) = conf.speaker.as_mut() else {
            return;
        };
        if sp.timer_at != Some(at) {
            return; // stale: rescheduled since
        }
        sp.detector.handle_timeout(now);
        let changed = sp.detector.poll_event().and_then(|e| {
            let slot = usize::try_from(e.member).ok()?;
            sp.slots.get(slot).copied().flatten()
        });
        sp.timer_at = sp.detector.poll_timeout();
        if let Some(due) = sp.timer_at {
            self.timers.push(due, Due::Speaker(c));
        }
        // Names are cloned (allocated) for a change only, never per decision.
        if let Some((h, session)) = changed.and_then(|h| Some((h, self.sessions.get(h)?))) {
            self.stats.speaker_changes += 1;
            let (conf_id, id) = (conf.id.clone(), session.spec.id.clone());
            let msg = PeerMsg::ActiveSpeaker {
                conf: conf_id.clone(),
                session: id.clone(),
            };
            self.events.push_back(Event::Peer(PeerDest::All, msg));
            self.notify(SessionEvent::ActiveSpeaker {
                conf: conf_id,
                session: id,
            });
            self.speaker_changed(now, c, h);
        }
    }

    /// Conference `c`'s active speaker is now `h` (decided here, or announced by its
    /// speaker shard): the members that follow the speaker (`FullSet::Speaker`) move
    /// from the old speaker's full layers to the new one's — in the fan-out lists here,
    /// and in the layer choices of those homed here (the new layer starts at a keyframe,
    /// as any switch up).
    pub(super) fn speaker_changed(&mut self, now: Instant, c: ConfHandle, h: SessionHandle) {
        let Some(conf) = self.conferences.get_mut(c) else {
            return;
        };
        let old = conf.speaking.replace(h);
        if old == Some(h) {
            return;
        }
        let old_layers: Vec<Ssrc> = old
            .and_then(|o| self.sessions.get(o))
            .map(|o| {
                o.streams
                    .iter()
                    .filter(|st| st.spec.layer == Layer::Full)
                    .map(|st| st.spec.ssrc)
                    .collect()
            })
            .unwrap_or_default();
        let followers: Vec<SessionHandle> = self
            .conferences
            .get(c)
            .map(|conf| conf.members.clone())
            .unwrap_or_default()
            .into_iter()
            .filter(|&m| {
                self.sessions
                    .get(m)
                    .is_some_and(|s| s.full == FullSet::Speaker)
            })
            .collect();
        for r in followers {
            let Some(s) = self.sessions.get_mut(r) else {
                continue;
            };
            let before = s.receives(old);
            // A later return of the old speaker starts from the default again.
            s.layers.retain(|(ssrc, _)| !old_layers.contains(ssrc));
            let after = s.receives(Some(h));
            if let Some(addr) = s.addr {
                self.fanout_edit(c, r, addr, Some(&before), Some(&after));
            }
            self.sync_choices(now, r);
        }
    }

    /// The active speaker of conference `conf`, on its speaker shard (elsewhere and
    /// before anyone spoke, `None`).
    pub fn active_speaker(&self, conf: &ConfName) -> Option<&SessionName> {
        let &c = self.conf_by_id.get(conf)?;
        let sp = self.conferences.get(c)?.speaker.as_ref()?;
        let slot = usize::try_from(sp.detector.dominant()?).ok()?;
        let h = sp.slots.get(slot).copied().flatten()?;
        Some(&self.sessions.get(h)?.spec.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shard_agrees_on_the_speaker_shard_and_conferences_spread() {
        let confs: Vec<ConfName> = (0..400)
            .map(|i| ConfName::new(&format!("!room{i}:example.org")))
            .collect();
        let mut per_shard = [0u32; 4];
        for c in &confs {
            let s = speaker_shard(c, 4);
            assert_eq!(s, speaker_shard(&c.clone(), 4));
            per_shard[usize::from(s.0)] += 1;
        }
        assert!(per_shard.iter().all(|&n| n > 60), "{per_shard:?}");
        assert_eq!(speaker_shard(&confs[0], 1), ShardId(0));
        assert_eq!(
            speaker_shard(&confs[0], 0),
            ShardId(0),
            "no shard count: one"
        );
    }
}
