//! Active (dominant) speaker of one conference, from the RFC 6464 client-to-mixer audio
//! levels its members' audio packets carry in the clear.
//!
//! # The scheme
//!
//! In the spirit of Volfin & Cohen, "Dominant speaker identification for multipoint
//! videoconferencing" (the detector Jitsi's `DominantSpeakerIdentification` follows),
//! speech is judged at three time scales, but each with one plain rule instead of
//! likelihood ratios, so every default can be argued for and tested:
//!
//! - **immediate** (one bucket, 50 ms: two or three audio packets): a bucket is
//!   *speech* for a member when any of its packets in it is speech. A packet is speech
//!   when it is louder than -`max_speech_level` dBov (default 70: quieter is a distant
//!   voice or the room, even if the sender's VAD says otherwise) and either the sender's
//!   voice-activity bit (RFC 6464's V) is set, or it is louder than -`loud_level` dBov
//!   (default 35, for senders that do not run a VAD). The sender's VAD sees the audio;
//!   the relay sees one byte per packet, so it defers to it.
//! - **medium** (the window, 1 s = 20 buckets): a member's *score* is how many of the
//!   window's buckets were speech. A talker who speaks clearly fills most of them (a
//!   VAD bridges the gaps between words); a cough or a "yes" fills a few.
//! - **long** (the hold, 1 s): after a switch, no other switch for a while, so two
//!   people talking over each other do not make the view flap.
//!
//! A member takes over as dominant speaker when its score reaches `activate` buckets
//! (default 12 of 20: at least 600 ms of speech in the last second), exceeds the
//! current speaker's by at least `margin` buckets (default 6: hysteresis, so an
//! interrupter must clearly out-talk a speaker who goes on talking), and the hold since
//! the last switch has passed. Nothing else switches: a cough (under ~300 ms: at most
//! 7 buckets) never reaches 12, and silence — all scores zero — keeps the last speaker.
//! A new talker who speaks for about a second while the previous one is quiet takes
//! over 0.6–0.7 s into speaking. Among several qualifying challengers the highest score
//! wins, then the loudest.
//!
//! Packets missing (a sender using discontinuous transmission stops sending in
//! silence) count as silence, so nothing depends on the packet rate.
//!
//! # Driving it
//!
//! `handle_level` only records (O(1), on the audio packet path). Decisions are made
//! at bucket boundaries in `handle_timeout`; `poll_timeout` asks for those only while
//! someone's window holds speech, so a quiet conference costs no timer. Members are
//! small dense indexes (`0..capacity`, the engine's slot of the member in the
//! conference), so a level is one array access; the table is allocated at construction.

use std::time::{Duration, Instant};

/// Settings of the detector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SpeakerConfig {
    /// The immediate time scale: levels are judged per bucket.
    pub bucket: Duration,
    /// Buckets in the window (the medium time scale), 1 to 63.
    pub window_buckets: u32,
    /// Speech buckets in the window that make a member a candidate.
    pub activate: u32,
    /// Speech buckets by which a candidate must out-talk the current speaker.
    pub margin: u32,
    /// No switch within this long of the last one (the long time scale).
    pub hold: Duration,
    /// A packet quieter than this (in -dBov) is never speech.
    pub max_speech_level: u8,
    /// A packet at least this loud (in -dBov) is speech even without the V bit.
    pub loud_level: u8,
    /// Members are `0..capacity`.
    pub capacity: u32,
}

impl Default for SpeakerConfig {
    fn default() -> Self {
        SpeakerConfig {
            bucket: Duration::from_millis(50),
            window_buckets: 20,
            activate: 12,
            margin: 6,
            hold: Duration::from_secs(1),
            max_speech_level: 70,
            loud_level: 35,
            capacity: 256,
        }
    }
}

impl SpeakerConfig {
    /// Whether one packet with this RFC 6464 level (higher bits ignored) and V bit is
    /// speech (see the module docs).
    pub(crate) fn is_speech(&self, level: u8, voice_activity: bool) -> bool {
        let level = level & 0x7f;
        level <= self.max_speech_level && (voice_activity || level <= self.loud_level)
    }
}

/// The dominant speaker changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SpeakerChanged {
    /// The new dominant speaker.
    pub member: u32,
}

#[derive(Debug, Clone, Copy, Default)]
struct Member {
    /// Bit `i`: bucket `last - i` was speech.
    hist: u64,
    /// The bucket bit 0 of `hist` stands for.
    last: u64,
    /// Smoothed loudness of its speech packets (127 - level, ×16).
    loudness: u32,
}

impl Member {
    /// Moves `hist` on to bucket `b` (never back).
    fn align(&mut self, b: u64) {
        if b > self.last {
            let shift = b - self.last;
            self.hist = if shift >= 64 { 0 } else { self.hist << shift };
            self.last = b;
        }
    }

    /// Speech buckets among the `w` complete buckets before bucket `b`.
    fn score(&self, b: u64, w: u32) -> u32 {
        let mask = (1u64 << w) - 1;
        let bits = if b >= self.last {
            let shift = b - self.last;
            if shift >= 64 { 0 } else { self.hist << shift }
        } else {
            // Its history is ahead of `b` (cannot happen: buckets never go back).
            self.hist
        };
        ((bits >> 1) & mask).count_ones()
    }
}

/// One conference's dominant-speaker detector.
#[derive(Debug)]
pub(crate) struct SpeakerDetector {
    cfg: SpeakerConfig,
    members: Box<[Member]>,
    /// The instant bucket 0 starts: the first time it was given.
    epoch: Option<Instant>,
    /// The latest bucket seen (time never goes back here).
    bucket: u64,
    /// The bucket evaluated last.
    evaluated: u64,
    /// Some window holds speech until this bucket.
    busy_until: u64,
    dominant: Option<u32>,
    last_switch: Option<Instant>,
    event: Option<SpeakerChanged>,
}

impl SpeakerDetector {
    /// A detector for members `0..cfg.capacity`, allocated now.
    pub(crate) fn new(cfg: SpeakerConfig) -> Self {
        let cfg = SpeakerConfig {
            bucket: cfg.bucket.max(Duration::from_millis(1)),
            window_buckets: cfg.window_buckets.clamp(1, 63),
            ..cfg
        };
        SpeakerDetector {
            members: vec![Member::default(); cfg.capacity as usize].into_boxed_slice(),
            cfg,
            epoch: None,
            bucket: 0,
            evaluated: 0,
            busy_until: 0,
            dominant: None,
            last_switch: None,
            event: None,
        }
    }

    /// An audio packet of `member` carried this RFC 6464 level (0 loudest, 127
    /// silence; higher bits ignored) and voice-activity bit. A member outside
    /// `0..capacity` is ignored.
    pub(crate) fn handle_level(
        &mut self,
        now: Instant,
        member: u32,
        level: u8,
        voice_activity: bool,
    ) {
        let b = self.advance(now);
        let level = level & 0x7f;
        let speech = self.cfg.is_speech(level, voice_activity);
        let w = u64::from(self.cfg.window_buckets);
        let Some(m) = self.members.get_mut(member as usize) else {
            return;
        };
        m.align(b);
        if speech {
            m.hist |= 1;
            let loud = u32::from(127 - level) * 16;
            m.loudness = m.loudness - m.loudness / 8 + loud / 8;
            self.busy_until = self.busy_until.max(b + w + 1);
        }
    }

    /// When the next decision is due: the next bucket boundary while anyone's window
    /// holds speech, else `None` (nobody can take over in silence).
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        let epoch = self.epoch?;
        if self.bucket >= self.busy_until {
            return None;
        }
        epoch.checked_add(self.bucket_start(self.evaluated.max(self.bucket) + 1))
    }

    /// Decides at `now`: whether someone takes over (then [`Self::poll_event`] says so).
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        let b = self.advance(now);
        if b <= self.evaluated {
            return;
        }
        self.evaluated = b;
        let w = self.cfg.window_buckets;
        let dominant_score = self
            .dominant
            .and_then(|d| self.members.get(d as usize))
            .map_or(0, |m| m.score(b, w));
        let mut best: Option<(u32, u32, u32)> = None; // (score, loudness, member)
        for (i, m) in self.members.iter().enumerate() {
            let i = i as u32;
            if Some(i) == self.dominant {
                continue;
            }
            let s = m.score(b, w);
            if s == 0 {
                continue;
            }
            if best.is_none_or(|(bs, bl, _)| (s, m.loudness) > (bs, bl)) {
                best = Some((s, m.loudness, i));
            }
        }
        let Some((score, _, member)) = best else {
            return;
        };
        let held = self
            .last_switch
            .is_none_or(|t| now.saturating_duration_since(t) >= self.cfg.hold);
        if score >= self.cfg.activate && score >= dominant_score + self.cfg.margin && held {
            self.dominant = Some(member);
            self.last_switch = Some(now);
            self.event = Some(SpeakerChanged { member });
        }
    }

    /// The change decided last, once (a later change replaces one not yet polled).
    pub(crate) fn poll_event(&mut self) -> Option<SpeakerChanged> {
        self.event.take()
    }

    /// The current dominant speaker.
    pub(crate) fn dominant(&self) -> Option<u32> {
        self.dominant
    }

    /// `member` left: its history is cleared, and if it was the speaker there is none
    /// until someone qualifies (no event: the engine knows who left).
    pub(crate) fn remove(&mut self, member: u32) {
        if let Some(m) = self.members.get_mut(member as usize) {
            *m = Member::default();
        }
        if self.dominant == Some(member) {
            self.dominant = None;
            if self.event.is_some_and(|e| e.member == member) {
                self.event = None;
            }
        }
    }

    fn bucket_start(&self, b: u64) -> Duration {
        let nanos = u128::from(b) * self.cfg.bucket.as_nanos();
        Duration::from_nanos(nanos.min(u128::from(u64::MAX)) as u64)
    }

    /// The bucket of `now` (never earlier than one seen before).
    fn advance(&mut self, now: Instant) -> u64 {
        let epoch = *self.epoch.get_or_insert(now);
        let b = (now.saturating_duration_since(epoch).as_nanos() / self.cfg.bucket.as_nanos())
            .min(u128::from(u64::MAX / 2)) as u64;
        self.bucket = self.bucket.max(b);
        self.bucket
    }
}

#[cfg(test)]
mod tests {
    // One arbitrary base instant; everything after it is simulated.
    #![allow(clippy::disallowed_methods)]

    use super::*;

    const MS: Duration = Duration::from_millis(1);
    const A: u32 = 0;
    const B: u32 = 1;
    const C: u32 = 2;

    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    /// What one member does over one span of the script.
    #[derive(Clone, Copy, PartialEq)]
    enum Act {
        /// Speech: levels 20–45 -dBov, V set on 90% of packets.
        Talk,
        /// Silence packets: levels 90–127, V clear.
        Quiet,
        /// Discontinuous transmission: no packets at all.
        Dtx,
    }

    /// Runs a script of `(from_ms, to_ms, member, act)` spans (members quiet outside
    /// them) with an audio packet per member every 20 ms and the timer honoured as the
    /// engine would. Returns the changes with their times, in ms from the start.
    fn run(script: &[(u64, u64, u32, Act)], until_ms: u64, seed: u64) -> Vec<(u64, u32)> {
        let t0 = Instant::now();
        let mut d = SpeakerDetector::new(SpeakerConfig::default());
        let mut rng = XorShift(seed);
        let mut changes = Vec::new();
        for ms in (0..until_ms).step_by(5) {
            let now = t0 + MS * ms as u32;
            if d.poll_timeout().is_some_and(|t| t <= now) {
                d.handle_timeout(now);
                if let Some(e) = d.poll_event() {
                    changes.push((ms, e.member));
                }
            }
            // Members send at different phases within the 20 ms packet interval.
            for m in [A, B, C] {
                if ms % 20 != u64::from(m) * 5 {
                    continue;
                }
                let act = script
                    .iter()
                    .find(|&&(from, to, who, _)| who == m && (from..to).contains(&ms))
                    .map_or(Act::Quiet, |s| s.3);
                let r = rng.next();
                match act {
                    Act::Talk => d.handle_level(now, m, 20 + (r % 26) as u8, !r.is_multiple_of(10)),
                    Act::Quiet => d.handle_level(now, m, 90 + (r % 38) as u8, false),
                    Act::Dtx => {}
                }
            }
        }
        changes
    }

    #[test]
    fn defaults() {
        let d = SpeakerConfig::default();
        assert_eq!(d.bucket, 50 * MS);
        assert_eq!(d.window_buckets, 20);
        assert_eq!((d.activate, d.margin), (12, 6));
        assert_eq!(d.hold, Duration::from_secs(1));
        assert_eq!((d.max_speech_level, d.loud_level), (70, 35));
    }

    /// A talks, B coughs, B talks, both quiet, C interjects, A talks with B talking
    /// over her, C talks: one switch per talk turn, none on the cough, the
    /// interjection, the silence or the cross-talk.
    #[test]
    fn follows_a_scripted_talk_sequence() {
        use Act::*;
        let script = [
            (0, 3000, A, Talk),
            (3000, 3250, B, Talk), // a cough
            (4300, 7000, B, Talk),
            (7000, 9000, A, Dtx),  // both quiet; A's client stops sending
            (9000, 9400, C, Talk), // "yes, go on"
            (10_000, 13_000, A, Talk),
            (10_500, 12_000, B, Talk), // talks over A
            (13_500, 15_500, C, Talk),
        ];
        for seed in 1..=10 {
            let changes = run(&script, 17_500, seed * 7919);
            let who: Vec<u32> = changes.iter().map(|c| c.1).collect();
            assert_eq!(who, [A, B, A, C], "seed {seed}: {changes:?}");
            // Each switch comes 0.6–1 s into the talk turn.
            for (&(at, _), start) in changes.iter().zip([0, 4300, 10_000, 13_500]) {
                assert!((start + 550..=start + 1000).contains(&at), "{changes:?}");
            }
        }
    }

    #[test]
    fn coughs_never_switch() {
        use Act::*;
        // A speaks once; then B coughs every 1.5 s for 15 s (300 ms bursts).
        let mut script = vec![(0, 2000, A, Talk)];
        for i in 0..10 {
            script.push((3000 + i * 1500, 3300 + i * 1500, B, Talk));
        }
        let changes = run(&script, 19_000, 3);
        assert_eq!(changes.iter().map(|c| c.1).collect::<Vec<_>>(), [A]);
    }

    #[test]
    fn silence_keeps_the_last_speaker() {
        let t0 = Instant::now();
        let mut d = SpeakerDetector::new(SpeakerConfig::default());
        for i in 0..100u32 {
            let now = t0 + 20 * MS * i;
            d.handle_level(now, 5, 30, true);
            d.handle_timeout(now);
        }
        assert_eq!(d.poll_event(), Some(SpeakerChanged { member: 5 }));
        assert_eq!(d.dominant(), Some(5));
        // Everyone silent (or sending nothing) for a minute: no timer, no change.
        for i in 0..3000u32 {
            let now = t0 + Duration::from_secs(2) + 20 * MS * i;
            d.handle_level(now, 6, 127, false);
            d.handle_level(now, 5, 110, false);
            d.handle_timeout(now);
        }
        assert_eq!(d.dominant(), Some(5));
        assert_eq!(d.poll_event(), None);
        assert_eq!(d.poll_timeout(), None, "a quiet conference needs no timer");
    }

    #[test]
    fn loud_packets_count_without_the_vad_bit_and_faint_ones_never() {
        let t0 = Instant::now();
        let mut d = SpeakerDetector::new(SpeakerConfig::default());
        // Member 1's VAD says voice, but at -80 dBov: the room, not a talker.
        // Member 2 sets no V bit but is at -30 dBov.
        for i in 0..100u32 {
            let now = t0 + 20 * MS * i;
            d.handle_level(now, 1, 80, true);
            d.handle_level(now, 2, 30, false);
            d.handle_timeout(now);
        }
        assert_eq!(d.dominant(), Some(2));
    }

    #[test]
    fn the_timer_runs_only_while_someone_speaks() {
        let t0 = Instant::now();
        let mut d = SpeakerDetector::new(SpeakerConfig::default());
        assert_eq!(d.poll_timeout(), None);
        d.handle_level(t0, 0, 110, false);
        assert_eq!(d.poll_timeout(), None, "silence arms nothing");
        d.handle_level(t0 + 10 * MS, 0, 30, true);
        assert_eq!(
            d.poll_timeout(),
            Some(t0 + 50 * MS),
            "the next bucket boundary"
        );
        d.handle_timeout(t0 + 50 * MS);
        assert_eq!(d.poll_timeout(), Some(t0 + 100 * MS));
        // The window forgets the speech a second later; then the timer stops.
        let mut now = t0 + 50 * MS;
        while let Some(t) = d.poll_timeout() {
            assert!(t > now);
            now = t;
            d.handle_timeout(now);
        }
        assert!(now <= t0 + 1100 * MS, "{:?}", now - t0);
        assert_eq!(d.dominant(), None, "50 ms of speech is no talker");
    }

    #[test]
    fn hostile_input_never_panics() {
        let t0 = Instant::now() + Duration::from_secs(100);
        let mut d = SpeakerDetector::new(SpeakerConfig {
            bucket: Duration::ZERO,
            window_buckets: 1000,
            capacity: 4,
            ..SpeakerConfig::default()
        });
        d.handle_level(t0, u32::MAX, 0, true);
        d.handle_level(t0, 4, 0, true);
        d.handle_level(t0, 3, 255, true);
        // Time going backwards is no time passed.
        d.handle_level(t0 - Duration::from_secs(50), 3, 0, true);
        d.handle_timeout(t0 - Duration::from_secs(99));
        d.handle_level(t0 + Duration::from_secs(1_000_000), 3, 0, true);
        d.handle_timeout(t0 + Duration::from_secs(1_000_001));
        d.remove(99);
        d.remove(3);
        let _ = (d.poll_timeout(), d.poll_event());
        let mut empty = SpeakerDetector::new(SpeakerConfig {
            capacity: 0,
            ..SpeakerConfig::default()
        });
        empty.handle_level(t0, 0, 0, true);
        empty.handle_timeout(t0 + Duration::from_secs(5));
        assert_eq!(empty.poll_event(), None);
    }

    #[test]
    fn a_speaker_who_leaves_is_replaced_by_the_next_talker() {
        let t0 = Instant::now();
        let mut d = SpeakerDetector::new(SpeakerConfig::default());
        for i in 0..100u32 {
            let now = t0 + 20 * MS * i;
            d.handle_level(now, 0, 30, true);
            d.handle_timeout(now);
        }
        assert_eq!(d.dominant(), Some(0));
        d.remove(0);
        assert_eq!(d.dominant(), None);
        d.poll_event();
        let mut first = None;
        for i in 100..200u32 {
            let now = t0 + 20 * MS * i;
            d.handle_level(now, 1, 40, true);
            d.handle_timeout(now);
            if let Some(e) = d.poll_event() {
                first.get_or_insert((i, e.member));
            }
        }
        assert_eq!(first.map(|f| f.1), Some(1));
    }
}
