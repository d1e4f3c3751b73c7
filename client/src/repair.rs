//! Repair of lost video beyond the first NACK, for one participant's downlink.
//!
//! The relay answers a NACK from its cache, but on a lossy link a resent packet is lost
//! as often as any other, and the frames after it cannot be decoded until a keyframe
//! comes — from a browser, which sends none unasked, never. So, per remote video
//! stream ([`StreamRepair`]):
//!
//! - A packet still missing [`NACK_AGAIN_AFTER`] after its NACK (or 1.5 times what
//!   resends take, [`RepairPace`]) is NACKed once more, and one still missing
//!   [`NACK_GIVE_UP_AFTER`] after that is given up on: a keyframe is wanted instead.
//! - Nothing of the kind for what a keyframe follows (the keyframe starts over), nor
//!   for a stream that stopped (a switch down, a pause: the relay drops feedback about
//!   a stream it no longer sends us): the second NACK goes only if a packet came since
//!   the first, the keyframe request with the stream's next packet, and a keyframe
//!   arriving cancels it.
//! - Under congestion ([`Congestion`]) the loss is the queue's, and more bytes deepen
//!   it: the second NACK is left out, and the keyframe request waits until the link has
//!   been quiet for [`CONGESTION_QUIET`], at most [`MAX_KEYFRAME_WAIT`].
//!
//! The participant (`participant.rs`) feeds each stream's packets in and sends what
//! [`StreamRepair::poll`] says. Sans-IO: time comes in as `now`; the list of packets
//! awaited is bounded by [`MAX_MISSING`].

use std::collections::VecDeque;
use std::ops::Range;
use std::time::{Duration, Instant};

use blindfold_relay::id::WireSeq;

/// A video packet NACKed and still missing this long after (or 1.5 times the time
/// resent packets take to come, if longer) is NACKed once more (unless our link is
/// congested, [`CONGESTION_QUIET`]) …
pub const NACK_AGAIN_AFTER: Duration = Duration::from_millis(120);
/// … and one still missing this long after that (or again 1.5 times the time resent
/// packets take) is given up on, and a keyframe asked for instead: the frames that
/// need it cannot be decoded until one comes, and a sender may send none of its own
/// for seconds (browsers only on request). Paced by what resending takes, a resend
/// still on its way is not asked for twice. Both are short enough that a packet
/// resent the second time, or the keyframe, comes while a jitter buffer of a few
/// hundred milliseconds still waits for it.
pub const NACK_GIVE_UP_AFTER: Duration = Duration::from_millis(120);
/// A second NACK, and a keyframe asked for because repair gave up, wait until our
/// delay-based estimator has signalled no congestion (over-use, or a decrease) for
/// this long (the second NACK is then left out): on a link whose queue overflows, the
/// loss is congestion, which resends and a keyframe (several times a frame's size)
/// would only deepen; the rate the estimate brings down is the cure. Without an
/// estimator (`ParticipantConfig::bwe`), the link is never taken for congested.
pub const CONGESTION_QUIET: Duration = Duration::from_secs(1);
/// … but a keyframe waits for that at most this long: a sender that sends none unasked
/// (a browser) would leave the picture frozen for as long as the congestion lasts.
pub const MAX_KEYFRAME_WAIT: Duration = Duration::from_secs(2);
/// The most NACKed video packets one stream waits for; past that it wants a keyframe.
pub(crate) const MAX_MISSING: usize = 64;

/// How long the packets we NACK take to come (a smoothed mean of those that came after
/// one NACK), which paces NACKing them again and giving up on them.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct RepairPace {
    resend: Option<Duration>,
}

impl RepairPace {
    /// A packet NACKed once came `took` after the NACK.
    pub(crate) fn sample(&mut self, took: Duration) {
        self.resend = Some(match self.resend {
            Some(mean) => (mean * 7 + took) / 8,
            None => took,
        });
    }

    /// After the first NACK, when to NACK again.
    fn again(&self) -> Duration {
        NACK_AGAIN_AFTER.max(self.resend.unwrap_or_default() * 3 / 2)
    }

    /// After the first NACK, when to give up and want a keyframe.
    fn give_up(&self) -> Duration {
        self.again() + NACK_GIVE_UP_AFTER.max(self.resend.unwrap_or_default() * 3 / 2)
    }
}

/// Whether our link is congested, by our delay-based estimator's signals (over-use, or
/// a decrease of its estimate).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Congestion {
    /// When it last signalled.
    at: Option<Instant>,
    /// Its count of signals then.
    signals: u64,
}

impl Congestion {
    /// The estimator's count of signals so far, after a packet at `now`.
    pub(crate) fn observe(&mut self, now: Instant, signals: u64) {
        if signals != self.signals {
            self.signals = signals;
            self.at = Some(now);
        }
    }

    /// When the link will have been quiet for [`CONGESTION_QUIET`]: `None` if it never
    /// signalled.
    pub(crate) fn quiet_at(&self) -> Option<Instant> {
        self.at.map(|t| t + CONGESTION_QUIET)
    }

    /// Whether it has been quiet long enough at `now`.
    pub(crate) fn quiet(&self, now: Instant) -> bool {
        self.quiet_at().is_none_or(|t| now >= t)
    }
}

/// What [`StreamRepair::poll`] asks for.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Repair {
    /// NACK these again.
    pub nack: Vec<WireSeq>,
    /// Ask for a keyframe.
    pub keyframe: bool,
}

/// The repair of one remote video stream.
#[derive(Debug, Clone)]
pub(crate) struct StreamRepair {
    /// Packets we NACKed that have not come yet, oldest first: each extended sequence
    /// number, when it was first NACKed, and whether it was NACKed again.
    missing: VecDeque<(u64, Instant, bool)>,
    /// Since when a keyframe is wanted for packets we gave up on.
    keyframe_wanted: Option<Instant>,
    /// When the stream's newest packet came.
    last_at: Instant,
}

impl StreamRepair {
    /// A stream whose first packet came at `now`.
    pub(crate) fn new(now: Instant) -> Self {
        StreamRepair {
            missing: VecDeque::new(),
            keyframe_wanted: None,
            last_at: now,
        }
    }

    /// The stream's newest packet came at `now` (`keyframe_start`: the first packet of
    /// a keyframe), after the packets `nacked` that we just NACKed (empty if none, or
    /// if the gap is not ours to repair).
    pub(crate) fn newest(&mut self, now: Instant, keyframe_start: bool, nacked: Range<u64>) {
        self.last_at = now;
        if keyframe_start {
            // A keyframe starts over: what its predecessors missed no longer matters.
            self.forget();
            return;
        }
        self.missing.extend(nacked.map(|seq| (seq, now, false)));
        if self.missing.len() > MAX_MISSING {
            self.missing.clear();
            self.keyframe_wanted.get_or_insert(now);
        }
    }

    /// An older packet, `seq`, came at `now` (resent, or late): if it was awaited and
    /// NACKed only once, how long after that NACK, for [`RepairPace::sample`].
    pub(crate) fn older(&mut self, now: Instant, seq: u64) -> Option<Duration> {
        let k = self.missing.iter().position(|&(s, ..)| s == seq)?;
        let (_, at, again) = self.missing.remove(k)?;
        (!again).then(|| now.saturating_duration_since(at))
    }

    /// Nothing awaited, nothing wanted: a gap too long to NACK (its keyframe is asked
    /// for at once), or a new path to the relay (which resumes each layer at a
    /// keyframe).
    pub(crate) fn forget(&mut self) {
        self.missing.clear();
        self.keyframe_wanted = None;
    }

    /// When [`Self::poll`] has something to do.
    pub(crate) fn poll_timeout(
        &self,
        pace: &RepairPace,
        congestion: &Congestion,
    ) -> Option<Instant> {
        let nack = self
            .missing
            .iter()
            .map(|&(_, at, again)| at + if again { pace.give_up() } else { pace.again() })
            .min();
        nack.into_iter().chain(self.keyframe_due(congestion)).min()
    }

    /// What to send at `now`: packets to NACK again, and whether to ask for a keyframe.
    pub(crate) fn poll(
        &mut self,
        now: Instant,
        pace: &RepairPace,
        congestion: &Congestion,
    ) -> Repair {
        let mut out = Repair::default();
        let quiet = congestion.quiet(now);
        let give_up = self
            .missing
            .iter()
            .any(|&(_, at, again)| again && now >= at + pace.give_up());
        if give_up {
            self.missing.clear();
            self.keyframe_wanted.get_or_insert(now);
        }
        for m in self.missing.iter_mut() {
            if !m.2 && now >= m.1 + pace.again() {
                m.2 = true;
                // Only for a stream that flows, and not onto a congested link (the
                // first resend may still be queued there).
                if self.last_at > m.1 && quiet {
                    out.nack.push(WireSeq(m.0 as u16));
                }
            }
        }
        if self.keyframe_due(congestion).is_some_and(|due| now >= due) {
            self.keyframe_wanted = None;
            out.keyframe = true;
        }
        out
    }

    /// When the wanted keyframe is asked for: once a packet came since it was wanted,
    /// and the link has been quiet for [`CONGESTION_QUIET`] or it has waited
    /// [`MAX_KEYFRAME_WAIT`]. `None`: none wanted, or the stream does not flow.
    fn keyframe_due(&self, congestion: &Congestion) -> Option<Instant> {
        let since = self.keyframe_wanted?;
        if self.last_at < since {
            return None;
        }
        let quiet = congestion.quiet_at().unwrap_or(since);
        Some(quiet.min(since + MAX_KEYFRAME_WAIT))
    }
}

#[cfg(test)]
mod tests {
    // One arbitrary base instant; everything after it is simulated.
    #![allow(clippy::disallowed_methods)]

    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// The stream flows (a packet every 30 ms, when `flowing`) from `from` to `to`,
    /// polled at each packet and whenever `poll_timeout` says: what it asked for, and
    /// when. Asserts that each poll leaves nothing due (no busy loop on a deadline
    /// `poll` does not clear).
    fn run(
        r: &mut StreamRepair,
        pace: &RepairPace,
        congestion: &Congestion,
        from: Instant,
        to: Instant,
        flowing: bool,
    ) -> Vec<(Duration, Repair)> {
        let mut out = Vec::new();
        let mut seq = 1000;
        let mut next_packet = from + 30 * MS;
        loop {
            let due = r.poll_timeout(pace, congestion);
            let now = match due {
                Some(d) if !flowing || d <= next_packet => d,
                _ if flowing => next_packet,
                _ => break,
            };
            if now >= to {
                break;
            }
            if flowing && now == next_packet {
                seq += 1;
                r.newest(now, false, seq..seq);
                next_packet += 30 * MS;
            }
            let got = r.poll(now, pace, congestion);
            let next = r.poll_timeout(pace, congestion);
            assert!(
                next.is_none_or(|d| d > now),
                "still due at {:?}",
                now - from
            );
            if got != Repair::default() {
                out.push((now - from, got));
            }
        }
        out
    }

    fn nack(seqs: &[u16]) -> Repair {
        Repair {
            nack: seqs.iter().map(|&s| WireSeq(s)).collect(),
            keyframe: false,
        }
    }

    const KEYFRAME: Repair = Repair {
        nack: Vec::new(),
        keyframe: true,
    };

    #[test]
    fn the_pace_follows_what_resends_take() {
        let mut p = RepairPace::default();
        assert_eq!((p.again(), p.give_up()), (120 * MS, 240 * MS));
        p.sample(200 * MS);
        assert_eq!((p.again(), p.give_up()), (300 * MS, 600 * MS));
        // A smoothed mean: one fast resend moves it an eighth of the way.
        p.sample(40 * MS);
        assert_eq!(p.resend, Some(180 * MS));
    }

    #[test]
    fn a_missing_packet_is_nacked_again_then_given_up_for_a_keyframe() {
        let t0 = Instant::now();
        let quiet = Congestion::default();
        let mut r = StreamRepair::new(t0);
        r.newest(t0, false, 10..12);
        // 11 comes after its first NACK: it is waited for no more.
        assert_eq!(r.older(t0 + 20 * MS, 11), Some(20 * MS));
        let pace = RepairPace::default();
        let got = run(&mut r, &pace, &quiet, t0, t0 + 1000 * MS, true);
        assert_eq!(got, [(120 * MS, nack(&[10])), (240 * MS, KEYFRAME)]);
        // Paced by a measured resend time of 200 ms: again at 300 ms, given up at 600.
        let mut pace = RepairPace::default();
        pace.sample(200 * MS);
        let mut r = StreamRepair::new(t0);
        r.newest(t0, false, 10..11);
        let got = run(&mut r, &pace, &quiet, t0, t0 + 1000 * MS, true);
        assert_eq!(got, [(300 * MS, nack(&[10])), (600 * MS, KEYFRAME)]);
        // Late, after its second NACK: no sample (which NACK brought it?), and no
        // keyframe.
        let mut r = StreamRepair::new(t0);
        r.newest(t0, false, 10..11);
        let pace = RepairPace::default();
        assert_eq!(run(&mut r, &pace, &quiet, t0, t0 + 150 * MS, true).len(), 1);
        assert_eq!(r.older(t0 + 160 * MS, 10), None);
        assert!(run(&mut r, &pace, &quiet, t0 + 160 * MS, t0 + 1000 * MS, true).is_empty());
    }

    #[test]
    fn a_keyframe_ends_the_repair_and_what_it_follows_needs_none() {
        let t0 = Instant::now();
        let (pace, quiet) = (RepairPace::default(), Congestion::default());
        let mut r = StreamRepair::new(t0);
        r.newest(t0, false, 10..12);
        r.newest(t0 + 30 * MS, true, 13..14);
        assert_eq!(r.poll_timeout(&pace, &quiet), None);
        assert!(run(&mut r, &pace, &quiet, t0, t0 + 1000 * MS, true).is_empty());
    }

    #[test]
    fn more_than_64_awaited_want_a_keyframe_at_once() {
        let t0 = Instant::now();
        let (pace, quiet) = (RepairPace::default(), Congestion::default());
        let mut r = StreamRepair::new(t0);
        r.newest(t0, false, 0..40);
        r.newest(t0 + 10 * MS, false, 40..MAX_MISSING as u64);
        assert_eq!(r.poll(t0 + 10 * MS, &pace, &quiet), Repair::default(), "64");
        r.newest(t0 + 20 * MS, false, 100..101);
        assert_eq!(r.poll(t0 + 20 * MS, &pace, &quiet), KEYFRAME, "65");
        // Nothing awaited after it.
        assert_eq!(r.poll_timeout(&pace, &quiet), None);
    }

    /// A gap too long to NACK, or a new path to the relay: nothing awaited, and no
    /// keyframe wanted any more (a long gap's keyframe is asked for at once instead).
    #[test]
    fn forget_drops_what_was_awaited_and_wanted() {
        let t0 = Instant::now();
        let (pace, quiet) = (RepairPace::default(), Congestion::default());
        let mut r = StreamRepair::new(t0);
        r.newest(t0, false, 0..MAX_MISSING as u64 + 1);
        r.newest(t0 + 10 * MS, false, 200..201);
        r.forget();
        assert_eq!(r.poll_timeout(&pace, &quiet), None);
        assert!(run(&mut r, &pace, &quiet, t0, t0 + 1000 * MS, true).is_empty());
    }

    #[test]
    fn a_stream_that_stopped_is_not_repaired_until_it_flows() {
        let t0 = Instant::now();
        let (pace, quiet) = (RepairPace::default(), Congestion::default());
        let mut r = StreamRepair::new(t0);
        r.newest(t0, false, 10..11);
        // Neither the second NACK nor the keyframe, and nothing left due.
        assert!(run(&mut r, &pace, &quiet, t0, t0 + 1000 * MS, false).is_empty());
        assert_eq!(r.poll_timeout(&pace, &quiet), None);
        // Its next packet: the keyframe its loss wants, at once.
        r.newest(t0 + 1000 * MS, false, 0..0);
        assert_eq!(r.poll_timeout(&pace, &quiet), Some(t0 + 240 * MS));
        assert_eq!(r.poll(t0 + 1000 * MS, &pace, &quiet), KEYFRAME);
        // Resumed at a keyframe instead: nothing.
        let mut r = StreamRepair::new(t0);
        r.newest(t0, false, 10..11);
        assert!(run(&mut r, &pace, &quiet, t0, t0 + 1000 * MS, false).is_empty());
        r.newest(t0 + 1000 * MS, true, 0..0);
        assert_eq!(r.poll_timeout(&pace, &quiet), None);
    }

    #[test]
    fn congestion_holds_the_second_nack_and_the_keyframe_for_at_most_two_seconds() {
        let t0 = Instant::now();
        let pace = RepairPace::default();
        // Signalled just now: quiet from 1 s on. No second NACK; the keyframe then.
        let mut c = Congestion::default();
        c.observe(t0, 1);
        let mut r = StreamRepair::new(t0);
        r.newest(t0, false, 10..11);
        let got = run(&mut r, &pace, &c, t0, t0 + 2000 * MS, true);
        assert_eq!(got, [(1000 * MS, KEYFRAME)]);
        // Signalling on and on: the keyframe goes after MAX_KEYFRAME_WAIT all the same.
        let mut r = StreamRepair::new(t0);
        r.newest(t0, false, 10..11);
        let mut asked = None;
        let mut now = t0;
        while asked.is_none() && now < t0 + 5000 * MS {
            now += 10 * MS;
            c.observe(now, 2 + (now - t0).as_millis() as u64);
            r.newest(now, false, 0..0);
            let got = r.poll(now, &pace, &c);
            assert!(got.nack.is_empty());
            if got.keyframe {
                asked = Some(now - t0);
            }
        }
        // Given up at 240 ms, asked 2 s later.
        assert_eq!(asked, Some(240 * MS + MAX_KEYFRAME_WAIT));
    }
}
