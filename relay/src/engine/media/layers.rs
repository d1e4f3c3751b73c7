//! Layer choice for one receiver and one sender's simulcast video: whether the receiver
//! gets the sender's full-resolution layer on top of its thumbnail.
//!
//! Every receiver gets every sender's audio and thumbnail, always: the thumbnail never
//! stops, so switching *down* (no more full layer) is immediate and seamless — the
//! receiver shows the thumbnail it kept decoding. Switching *up* must start the full
//! layer where it can be decoded: the machine asks the sender for a keyframe and starts
//! forwarding full at the first packet of the next keyframe (frame marking's S and I
//! bits, RFC 9626; `FrameMarking::starts_keyframe`), never mid-frame, so the receiver's
//! timeline has no gap and no undecodable frame. Until then the thumbnail is what it
//! shows. While an upswitch waits, it re-asks at most once per keyframe interval
//! (default 300 ms, the keyframe throttle's; the throttle collapses what several
//! receivers' machines ask) — but only while the layer arrives: a layer whose rate reads
//! 0 (a camera turned off, a sender not resumed yet) is asked once, when the upswitch
//! starts, and again at the first interval after its rate reads above 0 (rates are
//! announced about twice a second, so up to about 0.8 s after it starts to flow; a
//! sender that resumes starts with a keyframe anyway).
//!
//! # When
//!
//! `available` is the part of the receiver's downlink estimate (`estimate.rs`) the
//! engine gives this sender's video (the estimate less audio and the other senders'
//! layers). The full layer costs `thumbnail + full` there, since the thumbnail goes on.
//!
//! - **Up** when the receiver subscribes to the full layer, is not demoted by rate
//!   clamping (`clamp.rs`), and `available ≥ 1.2 × (thumbnail + full)` has held for
//!   2 s: 20% headroom so a layer that fits only just is not tried, 2 s so a momentary
//!   high estimate does not start a keyframe and a switch that would not last.
//! - **Down** at once when the subscription ends, clamping demotes it, or
//!   `available < 0.9 × (thumbnail + full)` with the estimate bounded by a real signal
//!   (loss or REMB), not by what the relay sent (`app_limited`). The gap between 0.9
//!   and 1.2 is the hysteresis that keeps layers from flapping: an estimate wandering
//!   ±10% around the full layer's rate never switches either way.
//! - **Probing.** An estimate is never above 1.5× what the relay sent the receiver, so
//!   a receiver that gets only thumbnails cannot show room for a full layer. When its
//!   link has signalled no congestion (no loss, no falling REMB) for 1 s
//!   (`probe_hold`), the machine tries the full layer anyway. During the trial's first
//!   5 s (`probe_window`) it goes back down only if the estimate falls more than 30%
//!   below where it was when the trial began while the receiver signals congestion
//!   (not app-limited: a bound of what was sent that falls is no verdict), or if the
//!   receiver is losing packets (`Judged::lossy`) — not because the estimate has not
//!   yet caught up with the new rate; after that the normal rule applies. A trial that
//!   fails within its window doubles the wait before the next one (4 s, then 8 s, …
//!   up to 32 s); one that holds resets it. One that loss ends while it waits for its
//!   keyframe sent nothing of its layer: the next waits the first wait (4 s), and the
//!   doubling goes on from where it was — unless the trial before ended so too: then
//!   it waits as after a failed trial, and the waits double from there (each trial
//!   asks the sender for a keyframe, and loss that keeps coming back is the link's).
//!   `probe_backoff: None` turns trials off.
//! - **Probe first** (`probe_first`). A trial blind would cost a receiver whose link
//!   cannot carry the layer a keyframe's worth of queue, and with a small buffer its
//!   audio. So a trial (a started subscription's too) first asks the engine for a
//!   probe ([`LayerChoice::probing`]): a short cluster of padding at the rate the
//!   switch needs with headroom ([`LayerChoice::probe_bps`], `probe.rs`). If the link
//!   carried it, or the receiver does not answer probes, the trial goes on as above;
//!   if it did not, the trial failed without a byte of the layer sent
//!   ([`LayerChoice::handle_probe`]), and the next waits the first wait (4 s) again,
//!   not doubled: a probe costs the link little, and a link that recovers is found
//!   within that wait, not the longest. A probe that does not come within 3 s (the
//!   engine holds probes back while another of the receiver's layers is tried on a
//!   measure of its link, below) fails the trial as a failed trial does, doubling
//!   the wait: on a link known to be short, another layer is unlikely to fit.
//!
//! - **Clamped.** The rate clamp (`clamp.rs`) brings the sender's full layer down to
//!   what its slowest viewer can take, so for a viewer the clamp follows the layer
//!   costs no more than that ([`Judged::clamped_bps`], worked out by the engine). A
//!   subscriber that does not view the layer yet is not followed, so the layer as it is
//!   may not fit its link at all — a viewer that came late, or the only one of a call
//!   of two. Its trial's probe then comes back short, but one that arrived whole, only
//!   slower than sent, measured the link: what it leaves this sender's video
//!   ([`LayerChoice::handle_probe`]; the engine gives it the measure of a probe sized
//!   for another sender's trial when that sender's thumbnail does not flow, its camera
//!   off). For the wait before the next trial and 6 s into
//!   it (10 s with the defaults), the receiver is a prospect
//!   ([`LayerChoice::prospect_bps`]: that room less the up rule's headroom and the
//!   thumbnail). If the clamp would follow it, the engine tells the clamp, and once
//!   the layer has come down to that (or while it is paused) gives it as the layer's
//!   cost ([`Judged::clamped_bps`]): the next trial is weighed at what the layer costs
//!   it then, and goes without another probe — the last one measured the link, and
//!   one at what the link was measured to carry, on top of its media, would only queue
//!   it. A trial that ends, failed or held, ends the prospect. The engine makes a
//!   receiver a prospect for one layer at a time: a measure taken while another of
//!   its layers is on its way ([`LayerChoice::coming`]) left that layer out of what
//!   else the receiver gets.
//!
//! When the sender's full layer has no measured rate (paused, not started), the last
//! rate seen stands in for it, or 1 Mbit/s before any: a new subscriber is judged
//! against what the layer will cost when it resumes.
//!
//! All state is plain values; nothing is allocated after construction.

use std::time::{Duration, Instant};

use super::ProbeOutcome;

/// The sender's video layers (the thumbnail flows always).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Layer {
    /// The thumbnail only.
    Thumbnail,
    /// The full-resolution layer as well.
    Full,
}

/// Settings of layer choice.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct LayerConfig {
    /// Up when `available ≥ up_factor × need` …
    pub up_factor: f64,
    /// … has held this long.
    pub up_hold: Duration,
    /// Down when `available < down_factor × need` (and not app-limited).
    pub down_factor: f64,
    /// A pending upswitch re-asks for a keyframe at most this often.
    pub keyframe_interval: Duration,
    /// A trial needs the estimate app-limited (no congestion signalled) this long.
    pub probe_hold: Duration,
    /// The first wait before a trial after a failed one; `None`: no trials.
    pub probe_backoff: Option<Duration>,
    /// The wait doubles up to this.
    pub probe_backoff_max: Duration,
    /// A trial is judged over this long after it starts forwarding.
    pub probe_window: Duration,
    /// The full layer's rate before any was measured.
    pub assumed_full_bps: u64,
    /// A trial waits for a probe of the link first.
    pub probe_first: bool,
}

impl Default for LayerConfig {
    fn default() -> Self {
        LayerConfig {
            up_factor: 1.2,
            up_hold: Duration::from_secs(2),
            probe_hold: Duration::from_secs(1),
            down_factor: 0.9,
            keyframe_interval: Duration::from_millis(300),
            probe_backoff: Some(Duration::from_secs(4)),
            probe_backoff_max: Duration::from_secs(32),
            probe_window: Duration::from_secs(5),
            assumed_full_bps: 1_000_000,
            probe_first: true,
        }
    }
}

/// What a receiver's downlink estimate says of one sender's video
/// ([`LayerChoice::handle_figures`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Judged {
    /// The part of the estimate this sender's video may use.
    pub available_bps: u64,
    /// The estimate is bounded by what the relay sent, not by a signal from the link
    /// (`DownlinkEstimate::app_limited`).
    pub app_limited: bool,
    /// Rate clamping moved the receiver to the thumbnail.
    pub demoted: bool,
    /// The receiver is losing packets now (a burst of NACKs, or a report with heavy
    /// loss), more than the clamp can cure: a trial under way fails.
    pub lossy: bool,
    /// The rate clamp follows the receiver (a viewer, or a prospect it would follow,
    /// once the layer is at most 10% above this): the sender's full layer comes down to
    /// this for it, so this is what it costs.
    pub clamped_bps: Option<u64>,
}

/// What the engine should do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LayerEvent {
    /// Ask the sender for a keyframe of its full layer (through its throttle).
    RequestKeyframe,
    /// The receiver now gets this layer at most (for metrics; forwarding follows
    /// [`LayerChoice::handle_full_packet`]).
    Switched(Layer),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    Thumbnail,
    /// A trial waiting for the engine's probe of the link.
    Probing {
        since: Instant,
        /// The estimate when the trial began.
        trial_from: u64,
        /// Whether the layer will wait for a keyframe (the sender marks frames).
        keyframes: bool,
    },
    /// Waiting for the full layer's next keyframe.
    PendingUp {
        asked_at: Instant,
        /// A trial: the estimate when it began.
        probe: Option<u64>,
    },
    Full {
        since: Instant,
        /// A trial still being judged: the estimate when it began.
        probe: Option<u64>,
    },
}

/// Where a layer choice stands, for the relay's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// The thumbnail, not subscribed (or demoted).
    Unwanted,
    /// The thumbnail, free to try the full layer when its rules allow.
    Thumbnail,
    /// The thumbnail, after a failed trial, probe or switch up: no trial before the
    /// wait ends.
    Waiting,
    /// A trial waiting for its probe.
    Probing,
    /// An upswitch waiting for the full layer's keyframe.
    PendingUp,
    /// The full layer, on trial.
    Trial,
    /// The full layer.
    Full,
}

const EVENTS: usize = 4;

/// A trial fails when the estimate falls below this fraction of where it began.
const TRIAL_FALL: f64 = 0.7;

/// A probe whose verdict has not come within this long fails the trial: the engine
/// gives one within about a second of sending it, but holds probes back while another
/// of the receiver's layers is tried on a measure of its link (up to 10 s).
const PROBE_GIVE_UP: Duration = Duration::from_secs(3);

/// A short probe's measure of the link makes the receiver a prospect for the wait
/// before the next trial (`probe_backoff`, 4 s by default) and this long into that
/// trial: the layer coming down, its keyframe, and the two seconds on the layer before
/// the engine reports the receiver's own estimate.
const MEASURED_INTO_TRIAL: Duration = Duration::from_secs(6);

/// A prospect's trial weighs the layer at the prospect's rate once the layer's own
/// rate is at most this fraction above it (the clamp's filter and the sender's encoder
/// settle near, not at, what was asked).
pub(crate) const PROSPECT_LAYER_SLACK: f64 = 0.1;

/// One receiver's choice of one sender's layers (on the receiver's home shard).
#[derive(Debug)]
pub(crate) struct LayerChoice {
    cfg: LayerConfig,
    state: State,
    subscribed: bool,
    demoted: bool,
    /// The receiver is losing packets now.
    lossy: bool,
    available: Option<u64>,
    app_limited: bool,
    thumb_bps: u64,
    full_bps: u64,
    last_full_bps: u64,
    /// What the clamp brings the full layer to for this receiver, if it follows it.
    clamped: Option<u64>,
    /// What the last short probe measured the link leaves this sender's video, and
    /// when: the receiver is a prospect for a while after ([`Self::prospect_bps`]).
    measured: Option<(u64, Instant)>,
    /// The up condition has held since.
    good_since: Option<Instant>,
    /// The estimate has been bounded only by what was sent since.
    limited_since: Option<Instant>,
    backoff: Duration,
    /// The last trial to fail was ended by loss before its keyframe.
    early_before: bool,
    /// No trial before this long after this instant.
    probe_wait: Option<(Instant, Duration)>,
    /// `start` held its trial back (the receiver was losing packets): it comes as soon
    /// as the loss stops.
    held_back: bool,
    /// The sender marks frames, so a switch up waits for a keyframe; without, the full
    /// layer flows at once (nothing to align to, and no keyframe would ever be seen).
    keyframes: bool,
    /// A FIFO: `events[head]` the oldest of `queued`.
    events: [Option<LayerEvent>; EVENTS],
    head: usize,
    queued: usize,
}

impl LayerChoice {
    /// Thumbnail only, not subscribed, no estimate yet.
    pub(crate) fn new(cfg: LayerConfig) -> Self {
        LayerChoice {
            state: State::Thumbnail,
            keyframes: true,
            subscribed: false,
            demoted: false,
            lossy: false,
            available: None,
            app_limited: false,
            thumb_bps: 0,
            full_bps: 0,
            last_full_bps: 0,
            clamped: None,
            measured: None,
            good_since: None,
            limited_since: None,
            backoff: cfg.probe_backoff.unwrap_or_default(),
            early_before: false,
            probe_wait: None,
            held_back: false,
            events: [None; EVENTS],
            head: 0,
            queued: 0,
            cfg,
        }
    }

    /// The layer the receiver gets at most now.
    pub(crate) fn layer(&self) -> Layer {
        match self.state {
            State::Full { .. } => Layer::Full,
            _ => Layer::Thumbnail,
        }
    }

    /// Since when the receiver gets the full layer, if it does.
    pub(crate) fn full_since(&self) -> Option<Instant> {
        match self.state {
            State::Full { since, .. } => Some(since),
            _ => None,
        }
    }

    /// Whether the receiver is losing packets now (a burst of NACKs, or a report with
    /// heavy loss): a trial under way fails.
    #[cfg(test)]
    pub(crate) fn set_lossy(&mut self, now: Instant, lossy: bool) {
        self.lossy = lossy;
        self.evaluate(now);
    }

    /// The last `available` it was given, if any.
    pub(crate) fn available(&self) -> Option<u64> {
        self.available
    }

    /// Where it stands at `now`.
    pub(crate) fn phase(&self, now: Instant) -> Phase {
        match self.state {
            State::Thumbnail if !self.wanted() => Phase::Unwanted,
            State::Thumbnail => match self.probe_wait {
                Some((from, wait)) if now.saturating_duration_since(from) < wait => Phase::Waiting,
                _ => Phase::Thumbnail,
            },
            State::Probing { .. } => Phase::Probing,
            State::PendingUp { .. } => Phase::PendingUp,
            State::Full { probe: Some(_), .. } => Phase::Trial,
            State::Full { probe: None, .. } => Phase::Full,
        }
    }

    /// Whether an upswitch is waiting for a keyframe.
    pub(crate) fn pending_up(&self) -> bool {
        matches!(self.state, State::PendingUp { .. })
    }

    /// Whether the layer is on its way to the receiver, so that a measure of its link
    /// now cannot be sized for another layer: a prospect (its layer comes down and
    /// then up to it), an upswitch waiting for its keyframe, or a trial still being
    /// judged (it may yet fail and leave the link). A layer that never flowed (a camera
    /// off, a thumbnail-only sender) is not on its way however long it is waited for.
    pub(crate) fn coming(&self, now: Instant) -> bool {
        let switching = matches!(
            self.state,
            State::PendingUp { .. } | State::Full { probe: Some(_), .. }
        );
        (switching && self.flowed()) || self.prospect_bps(now).is_some()
    }

    /// What the receiver will get of the full layer at its next keyframe, if it waits
    /// for one: the layer at what it costs it (a paused one, resumed by the wait, at
    /// its last rate or the clamp's); 0 otherwise, or for a layer that never flowed.
    pub(crate) fn awaited_bps(&self) -> u64 {
        match self.pending_up() && self.flowed() {
            true => self.need().saturating_sub(self.thumb_bps),
            false => 0,
        }
    }

    /// Whether the sender's thumbnail flows: only then can a measure of the link make
    /// the receiver a prospect the clamp follows (see the engine's `drive_choices`).
    pub(crate) fn thumbnail_flows(&self) -> bool {
        self.thumb_bps > 0
    }

    /// Whether the full layer flows or has flowed.
    fn flowed(&self) -> bool {
        self.full_bps > 0 || self.last_full_bps > 0
    }

    /// The receiver starts a subscription to the sender's full layer (it subscribed,
    /// connected, or the sender appeared): it is tried on it at once — a viewer who
    /// asks for a picture should not wait for hysteresis — unless it is losing packets
    /// now with an estimate under half of what the layer needs; then its first trial
    /// comes as soon as it stops losing them (and the ordinary rules apply meanwhile).
    ///
    /// Only loss holds it back, not a falling REMB: a receiver already getting one full
    /// layer has an estimate bounded by 1.5× that, which is about half of what a second
    /// one needs, and on a busy host its delay-based REMB dips from CPU contention
    /// alone — together they kept a late joiner's full layer from a viewer for good.
    ///
    /// The attempt is a trial judged from `trial_from` (the estimate now, or the
    /// estimate's initial value for a receiver that has reported nothing yet): it goes
    /// back down within the trial window only if the estimate falls below that. With
    /// `keyframes` (the sender marks frames) it waits for the next keyframe like any
    /// upswitch; without, the layer flows at once (nothing to align to).
    pub(crate) fn start(&mut self, now: Instant, keyframes: bool, trial_from: u64) {
        self.subscribed = true;
        self.keyframes = keyframes;
        if !self.wanted() || !matches!(self.state, State::Thumbnail) {
            return self.evaluate(now);
        }
        // A subscription is what the viewer asked for: it is tried unless the link is
        // losing packets and the estimate under half of what the layer needs.
        let short = self
            .available
            .is_some_and(|a| self.lossy && (a as f64) < 0.5 * self.need() as f64);
        if short {
            self.held_back = true;
            return self.evaluate(now);
        }
        self.try_full(now, keyframes, trial_from);
    }

    /// Whether a trial waits for a probe of the link: the engine sends one at
    /// [`Self::probe_bps`] more than the receiver gets besides this sender's video
    /// (and the full layers it awaits at their keyframes), and gives the verdict to
    /// [`Self::handle_probe`].
    pub(crate) fn probing(&self) -> bool {
        matches!(self.state, State::Probing { .. })
    }

    /// What this sender's video needs of the link with the full layer, with the up
    /// rule's headroom.
    pub(crate) fn probe_bps(&self) -> u64 {
        (self.cfg.up_factor * self.need() as f64) as u64
    }

    /// The verdict on the probe a trial waited for: carried (or unanswered: the
    /// receiver does not answer probes), the trial goes on; short, it failed. A short
    /// one that measured the link's rate makes the receiver a prospect
    /// ([`Self::prospect_bps`]) on what that rate leaves this sender's video: the rate
    /// less `others_bps`, everything else the receiver got while it was probed.
    pub(crate) fn handle_probe(&mut self, now: Instant, outcome: ProbeOutcome, others_bps: u64) {
        let State::Probing {
            trial_from,
            keyframes,
            ..
        } = self.state
        else {
            return;
        };
        match outcome {
            ProbeOutcome::Carried | ProbeOutcome::Unanswered => {
                self.state = State::Thumbnail;
                self.enter_trial(now, keyframes, trial_from);
            }
            ProbeOutcome::Short(measured) => {
                self.fail(now, Failure::Probe);
                self.measured = measured.map(|m| (m.saturating_sub(others_bps), now));
            }
        }
    }

    /// What the receiver could take of the full layer as its link was last measured
    /// (a short probe, [`Self::handle_probe`]), while it wants the layer, for the wait
    /// before the next trial and [`MEASURED_INTO_TRIAL`] more (10 s with the
    /// defaults): the room less the up rule's headroom — the layer at this rate passes
    /// its trial's probe — and less the thumbnail. The engine tells the clamp if the
    /// clamp would follow it (see the module docs).
    pub(crate) fn prospect_bps(&self, now: Instant) -> Option<u64> {
        let (room, at) = self.measured?;
        let wait = self.cfg.probe_backoff.unwrap_or_default();
        let lasts = wait.saturating_add(MEASURED_INTO_TRIAL);
        if !self.wanted() || now.saturating_duration_since(at) >= lasts {
            return None;
        }
        let video = (room as f64 / self.cfg.up_factor) as u64;
        Some(video.saturating_sub(self.thumb_bps))
    }

    /// The receiver subscribed to the sender's full layer, or stopped.
    // The engine drops a choice when its subscription ends.
    #[cfg(test)]
    pub(crate) fn set_subscribed(&mut self, now: Instant, subscribed: bool) {
        self.subscribed = subscribed;
        self.evaluate(now);
    }

    /// Rate clamping moved the receiver to the thumbnail (or let it back).
    #[cfg(test)]
    pub(crate) fn set_demoted(&mut self, now: Instant, demoted: bool) {
        self.demoted = demoted;
        self.evaluate(now);
    }

    /// The receiver's downlink estimate available to this sender's video, and whether
    /// what the relay sent is what bounds it (`DownlinkEstimate::app_limited`).
    #[cfg(test)]
    pub(crate) fn handle_estimate(&mut self, now: Instant, available_bps: u64, app_limited: bool) {
        self.record_estimate(now, available_bps, app_limited);
        self.evaluate(now);
    }

    /// The sender's layers' current rates (0: not flowing or not measured).
    #[cfg(test)]
    pub(crate) fn handle_rates(&mut self, now: Instant, thumbnail_bps: u64, full_bps: u64) {
        self.record_rates(thumbnail_bps, full_bps);
        self.evaluate(now);
    }

    /// One moment's figures, judged together: the sender's layers' rates (as
    /// `handle_rates`, its tests' entry: 0 only for a layer that is not flowing or not
    /// measured, which is not asked for keyframes) and, once the receiver's link has reported,
    /// what its estimate says ([`Judged`]). Given one at a time, a rate that follows the
    /// estimate (the clamp brings the layer to what the viewer can take) would be
    /// weighed against the estimate before it: a rising estimate would look like
    /// congestion.
    pub(crate) fn handle_figures(
        &mut self,
        now: Instant,
        thumbnail_bps: u64,
        full_bps: u64,
        judged: Option<Judged>,
    ) {
        self.clamped = judged.and_then(|j| j.clamped_bps);
        self.record_rates(thumbnail_bps, full_bps);
        if let Some(j) = judged {
            self.demoted = j.demoted;
            self.lossy = j.lossy;
            self.record_estimate(now, j.available_bps, j.app_limited);
        }
        self.evaluate(now);
    }

    fn record_estimate(&mut self, now: Instant, available_bps: u64, app_limited: bool) {
        self.available = Some(available_bps);
        self.app_limited = app_limited;
        let good = available_bps as f64 >= self.cfg.up_factor * self.need() as f64;
        self.good_since = if good {
            Some(self.good_since.unwrap_or(now))
        } else {
            None
        };
        self.limited_since = if app_limited {
            Some(self.limited_since.unwrap_or(now))
        } else {
            None
        };
    }

    fn record_rates(&mut self, thumbnail_bps: u64, full_bps: u64) {
        self.thumb_bps = thumbnail_bps;
        self.full_bps = full_bps;
        if full_bps > 0 {
            self.last_full_bps = full_bps;
        }
        if let Some(a) = self.available
            && (a as f64) < self.cfg.up_factor * self.need() as f64
        {
            self.good_since = None;
        }
    }

    /// A packet of the sender's full layer: whether to forward it to this receiver.
    /// `starts_keyframe`: its frame marking has S and I set.
    pub(crate) fn handle_full_packet(&mut self, now: Instant, starts_keyframe: bool) -> bool {
        match self.state {
            State::Full { .. } => true,
            State::PendingUp { probe, .. } if starts_keyframe => {
                self.state = State::Full { since: now, probe };
                self.push(LayerEvent::Switched(Layer::Full));
                true
            }
            _ => false,
        }
    }

    /// When it next needs its figures ([`Self::handle_figures`]): a keyframe re-ask, the end of an
    /// up hold or a trial's wait, or the end of a trial's window.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Probing { since, .. } => since.checked_add(PROBE_GIVE_UP),
            State::PendingUp { asked_at, .. } => asked_at.checked_add(self.cfg.keyframe_interval),
            State::Full {
                since,
                probe: Some(_),
            } => since.checked_add(self.cfg.probe_window),
            State::Full { probe: None, .. } => None,
            State::Thumbnail if !self.wanted() => None,
            State::Thumbnail => {
                let confident = self
                    .good_since
                    .and_then(|t| t.checked_add(self.cfg.up_hold));
                let probe = self
                    .cfg
                    .probe_backoff
                    .and(self.limited_since)
                    .and_then(|t| {
                        let t = t.checked_add(self.cfg.probe_hold)?;
                        match self.probe_wait {
                            Some((from, wait)) => Some(from.checked_add(wait)?.max(t)),
                            None => Some(t),
                        }
                    });
                match (confident, probe) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
            }
        }
    }

    /// Time passed. (The engine gives its figures at each timeout instead,
    /// [`Self::handle_figures`], which judges them at `now`.)
    #[cfg(test)]
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        self.evaluate(now);
    }

    /// The next thing to do, in order.
    pub(crate) fn poll_event(&mut self) -> Option<LayerEvent> {
        if self.queued == 0 {
            return None;
        }
        let e = self.events[self.head].take();
        self.head = (self.head + 1) % EVENTS;
        self.queued -= 1;
        e
    }

    /// Queues an event; with the queue full, the oldest gives way.
    fn push(&mut self, e: LayerEvent) {
        if self.queued == EVENTS {
            self.head = (self.head + 1) % EVENTS;
            self.queued -= 1;
        }
        self.events[(self.head + self.queued) % EVENTS] = Some(e);
        self.queued += 1;
    }

    fn wanted(&self) -> bool {
        self.subscribed && !self.demoted
    }

    /// What the receiver gets with the full layer: the thumbnail and the full layer,
    /// at no more than the clamp brings it to.
    fn need(&self) -> u64 {
        let full = match (self.full_bps, self.last_full_bps) {
            (0, 0) => self.cfg.assumed_full_bps,
            (0, last) => last,
            (now, _) => now,
        };
        let full = full.min(self.clamped.unwrap_or(u64::MAX));
        self.thumb_bps.saturating_add(full)
    }

    fn held(since: Option<Instant>, hold: Duration, now: Instant) -> bool {
        since.is_some_and(|t| now.saturating_duration_since(t) >= hold)
    }

    fn evaluate(&mut self, now: Instant) {
        match self.state {
            State::Thumbnail => {
                if !self.wanted() {
                    return;
                }
                if Self::held(self.good_since, self.cfg.up_hold, now) {
                    self.go_up(now);
                } else if self.cfg.probe_backoff.is_some()
                    && ((self.held_back && !self.lossy)
                        || Self::held(self.limited_since, self.cfg.probe_hold, now))
                    && self
                        .probe_wait
                        .is_none_or(|(from, wait)| now.saturating_duration_since(from) >= wait)
                {
                    self.try_full(now, self.keyframes, self.available.unwrap_or(0));
                }
            }
            State::Probing { since, .. } => {
                if !self.wanted() {
                    self.state = State::Thumbnail;
                } else if now.saturating_duration_since(since) >= PROBE_GIVE_UP {
                    self.fail(now, Failure::Trial);
                }
            }
            State::PendingUp { asked_at, probe } => {
                // A trial waiting for its keyframe has sent nothing yet: the estimate
                // moving says nothing of it (on a busy host a REMB dips on its own), so
                // only loss already under way ends it.
                let failed = match probe {
                    Some(_) => self.lossy.then_some(Failure::Early),
                    None => self.congested(None).then_some(Failure::Up),
                };
                if !self.wanted() {
                    self.state = State::Thumbnail;
                } else if let Some(failure) = failed {
                    self.fail(now, failure);
                } else if now.saturating_duration_since(asked_at) >= self.cfg.keyframe_interval {
                    self.state = State::PendingUp {
                        asked_at: now,
                        probe,
                    };
                    // A layer that sends nothing cannot answer, and its sender would
                    // get the request every interval for as long as its camera is off.
                    if self.full_bps > 0 {
                        self.push(LayerEvent::RequestKeyframe);
                    }
                }
            }
            State::Full { since, probe } => {
                let judging =
                    probe.is_some() && now.saturating_duration_since(since) < self.cfg.probe_window;
                if !self.wanted() {
                    self.down();
                } else if self.congested(if judging { probe } else { None }) {
                    self.down();
                    self.fail(now, Failure::of(probe));
                } else if probe.is_some() && !judging {
                    // The trial held: the link carries the full layer (and its own
                    // estimate, not a probe's measure, is what the clamp hears).
                    self.state = State::Full { since, probe: None };
                    self.backoff = self.cfg.probe_backoff.unwrap_or_default();
                    self.early_before = false;
                    self.measured = None;
                }
            }
        }
    }

    /// A trial from `trial_from`: after a probe (`probe_first`), else at once.
    fn try_full(&mut self, now: Instant, keyframes: bool, trial_from: u64) {
        self.held_back = false;
        // A prospect's link was measured by the probe that made it one (its own trial's,
        // or one of another sender whose thumbnail does not flow), and the clamp
        // has brought the layer down to fit that measure: a probe again would test the
        // link at what it was measured to carry, on top of its media, and its queue
        // would dip the receiver's delay-based estimate under the trial.
        let measured = self.clamped.is_some() && self.prospect_bps(now).is_some();
        if self.cfg.probe_first && !measured {
            self.state = State::Probing {
                since: now,
                trial_from,
                keyframes,
            };
        } else {
            self.enter_trial(now, keyframes, trial_from);
        }
    }

    /// The trial proper: with `keyframes`, it waits for the next keyframe like any
    /// upswitch; without, the layer flows at once (nothing to align to).
    fn enter_trial(&mut self, now: Instant, keyframes: bool, trial_from: u64) {
        if keyframes {
            self.start_up(now, Some(trial_from));
        } else {
            self.state = State::Full {
                since: now,
                probe: Some(trial_from),
            };
            self.push(LayerEvent::Switched(Layer::Full));
        }
    }

    /// Up by the up rule (the estimate held room for the layer long enough): at the
    /// next keyframe, or at once for a sender that marks none.
    fn go_up(&mut self, now: Instant) {
        if self.keyframes {
            return self.start_up(now, None);
        }
        self.held_back = false;
        self.state = State::Full {
            since: now,
            probe: None,
        };
        self.push(LayerEvent::Switched(Layer::Full));
    }

    fn start_up(&mut self, now: Instant, probe: Option<u64>) {
        self.held_back = false;
        self.state = State::PendingUp {
            asked_at: now,
            probe,
        };
        self.push(LayerEvent::RequestKeyframe);
    }

    fn down(&mut self) {
        // The clamp follows it no longer (its next figures say if it does).
        self.clamped = None;
        if matches!(self.state, State::Full { .. }) {
            self.push(LayerEvent::Switched(Layer::Thumbnail));
        }
        self.state = State::Thumbnail;
    }

    /// The estimate says the full layer does not fit: during a trial, only if it fell
    /// below where the trial began; otherwise by the down rule.
    fn congested(&self, trial_from: Option<u64>) -> bool {
        let Some(a) = self.available else {
            return false;
        };
        if let Some(start) = trial_from {
            // 30% below: an estimate's noise (a delay-based REMB dips on a busy host
            // too) is not a verdict; nor is a fall while the receiver signals no
            // congestion, which is the bound of what was sent falling (a member that
            // just connected, a sender that slowed down). And a link that is losing
            // packets with the layer on has failed the trial, wherever the estimate
            // began (the estimate is still catching up, so a delay signal alone is not
            // enough).
            return (!self.app_limited && (a as f64) < TRIAL_FALL * start as f64) || self.lossy;
        }
        !self.app_limited && (a as f64) < self.cfg.down_factor * self.need() as f64
    }

    /// Back to the thumbnail because the link did not carry the layer. The next trial
    /// waits: after a failed trial twice as long as after the one before, since each
    /// cost the link a keyframe of the layer; after a short probe the first wait
    /// again, since a probe costs it only 20 ms of padding, and a link that recovers
    /// is then found within that wait rather than the longest. Loss that ends a trial
    /// before its keyframe did not come from its layer (a member reconnecting after an
    /// outage may report loss for seconds): the first wait, unless the trial before
    /// ended so too; then the wait of a failed trial, since each trial asks the sender
    /// for a keyframe.
    fn fail(&mut self, now: Instant, failure: Failure) {
        self.state = State::Thumbnail;
        self.clamped = None;
        self.good_since = None;
        self.limited_since = None;
        // A probe's measure of the link is no longer a prospect once the layer did not
        // fit it (a short probe measures again, `handle_probe`).
        self.measured = None;
        let Some(initial) = self.cfg.probe_backoff else {
            return;
        };
        let early = failure == Failure::Early;
        let wait = match failure {
            Failure::Probe => initial,
            Failure::Early if !self.early_before => initial,
            Failure::Trial | Failure::Early => {
                let wait = self.backoff;
                self.backoff = self
                    .backoff
                    .saturating_mul(2)
                    .min(self.cfg.probe_backoff_max.max(initial));
                wait
            }
            Failure::Up => {
                self.backoff = initial;
                initial
            }
        };
        if failure != Failure::Probe {
            self.early_before = early;
        }
        self.probe_wait = Some((now, wait));
    }
}

/// What failed ([`LayerChoice::fail`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// A probe of the link came back short: nothing of the layer was sent.
    Probe,
    /// The receiver lost packets while a trial waited for its keyframe: nothing of the
    /// layer was sent, but the sender was asked for a keyframe.
    Early,
    /// A trial of the layer (or its probe went unjudged).
    Trial,
    /// A switch up by the up rule, not a trial.
    Up,
}

impl Failure {
    /// A trial's (`Some(estimate when it began)`) or an ordinary switch's.
    fn of(trial: Option<u64>) -> Self {
        if trial.is_some() {
            Failure::Trial
        } else {
            Failure::Up
        }
    }
}

#[cfg(test)]
mod tests {
    // One arbitrary base instant; everything after it is simulated.
    #![allow(clippy::disallowed_methods)]

    use super::*;

    const MS: Duration = Duration::from_millis(1);
    const S: Duration = Duration::from_secs(1);
    const THUMB: u64 = 200_000;
    const FULL: u64 = 1_500_000;

    fn events(l: &mut LayerChoice) -> Vec<LayerEvent> {
        std::iter::from_fn(|| l.poll_event()).collect()
    }

    /// Trials without a probe first (probing has tests of its own below).
    fn blind() -> LayerConfig {
        LayerConfig {
            probe_first: false,
            ..LayerConfig::default()
        }
    }

    fn subscribed(t0: Instant) -> LayerChoice {
        let mut l = LayerChoice::new(blind());
        l.handle_rates(t0, THUMB, FULL);
        l.set_subscribed(t0, true);
        l
    }

    /// The full layer's cost follows the estimate (the clamp brings the layer to what
    /// the viewer can take): a rising estimate, given with the cost it allows, is no
    /// congestion — weighed against the estimate before it, it would be.
    #[test]
    fn a_rising_estimate_judged_with_the_cost_it_allows_is_no_congestion() {
        let t0 = Instant::now();
        let mut l = subscribed(t0);
        let judged = |available_bps, clamped_bps| Judged {
            available_bps,
            app_limited: false,
            demoted: false,
            lossy: false,
            clamped_bps,
        };
        // Up and on the full layer at 3 Mbit/s available.
        l.handle_figures(t0, THUMB, FULL, Some(judged(3_000_000, None)));
        l.handle_figures(t0 + 2 * S, THUMB, FULL, Some(judged(3_000_000, None)));
        assert!(l.handle_full_packet(t0 + 2 * S, true));
        // The clamp holds the layer to what the viewer takes: 1 Mbit/s available, the
        // layer's cost 800 kbit/s (the sender still at its 1.5 Mbit/s). Then the
        // estimate rises to 1.3 Mbit/s, and the cost with it.
        l.handle_figures(
            t0 + 3 * S,
            THUMB,
            FULL,
            Some(judged(1_000_000, Some(800_000))),
        );
        l.handle_figures(
            t0 + 4 * S,
            THUMB,
            FULL,
            Some(judged(1_300_000, Some(1_100_000))),
        );
        assert!(
            l.full_since().is_some(),
            "switched down: {:?}",
            events(&mut l)
        );
        // Given one at a time, the new cost meets the old estimate: 1 Mbit/s is under
        // 0.9 × 1.3 Mbit/s.
        l.handle_rates(t0 + 5 * S, THUMB, 1_100_000);
        l.handle_rates(t0 + 5 * S, THUMB, 800_000);
        l.handle_estimate(t0 + 5 * S, 1_000_000, false);
        l.handle_rates(t0 + 6 * S, THUMB, 1_100_000);
        assert!(l.full_since().is_none());
    }

    #[test]
    fn defaults() {
        let d = LayerConfig::default();
        assert_eq!((d.up_factor, d.down_factor), (1.2, 0.9));
        assert_eq!(d.up_hold, 2 * S);
        assert_eq!(d.keyframe_interval, 300 * MS);
        assert_eq!(d.probe_backoff, Some(4 * S));
        assert_eq!(d.probe_backoff_max, 32 * S);
        assert_eq!(d.probe_window, 5 * S);
    }

    #[test]
    fn up_waits_two_seconds_then_for_a_keyframe_and_the_thumbnail_flows_meanwhile() {
        let t0 = Instant::now();
        let mut l = subscribed(t0);
        let need = THUMB + FULL;
        // Just enough: 1.2 × need, for 1.9 s: nothing yet.
        for i in 0..20u32 {
            l.handle_estimate(t0 + 100 * MS * i, need * 121 / 100, false);
        }
        assert_eq!(l.layer(), Layer::Thumbnail);
        assert!(events(&mut l).is_empty());
        assert_eq!(l.poll_timeout(), Some(t0 + 2 * S));
        l.handle_timeout(t0 + 2 * S);
        assert_eq!(events(&mut l), [LayerEvent::RequestKeyframe]);
        assert!(l.pending_up());
        // Full-layer packets mid-GOP are not forwarded; the thumbnail still is.
        assert!(!l.handle_full_packet(t0 + 2010 * MS, false));
        assert_eq!(l.layer(), Layer::Thumbnail);
        // Re-asks at most every keyframe interval.
        assert_eq!(l.poll_timeout(), Some(t0 + 2300 * MS));
        l.handle_timeout(t0 + 2200 * MS);
        assert!(events(&mut l).is_empty());
        l.handle_timeout(t0 + 2300 * MS);
        assert_eq!(events(&mut l), [LayerEvent::RequestKeyframe]);
        // The keyframe's first packet starts the full layer.
        assert!(l.handle_full_packet(t0 + 2400 * MS, true));
        assert_eq!(events(&mut l), [LayerEvent::Switched(Layer::Full)]);
        assert_eq!(l.layer(), Layer::Full);
        assert!(l.handle_full_packet(t0 + 2410 * MS, false));
        assert_eq!(l.poll_timeout(), None);
    }

    /// A sender that marks no frames: no keyframe would ever be seen, so after a
    /// switch down the up rule brings the full layer back at once, with no keyframe
    /// request (each would go on every 300 ms, forever, with the receiver stuck).
    #[test]
    fn an_unmarked_senders_layer_comes_back_at_once_without_keyframe_requests() {
        let t0 = Instant::now();
        let mut l = LayerChoice::new(blind());
        l.handle_rates(t0, THUMB, FULL);
        let need = THUMB + FULL;
        l.start(t0, false, need * 2);
        assert_eq!(l.layer(), Layer::Full, "a trial flows at once");
        assert_eq!(
            events(&mut l),
            [LayerEvent::Switched(Layer::Full)],
            "and counts"
        );
        // The link falls short: down at once.
        l.handle_estimate(t0 + 100 * MS, need / 3, false);
        l.handle_estimate(t0 + 3 * S, need / 3, false);
        assert_eq!(l.layer(), Layer::Thumbnail);
        events(&mut l);
        // It recovers, and holds for the up hold: the full layer again, at once.
        for i in 0..=20u32 {
            l.handle_estimate(t0 + 10 * S + 100 * MS * i, need * 2, false);
            l.handle_timeout(t0 + 10 * S + 100 * MS * i);
        }
        assert_eq!(l.layer(), Layer::Full);
        assert!(!l.pending_up());
        assert_eq!(events(&mut l), [LayerEvent::Switched(Layer::Full)]);
        assert!(l.handle_full_packet(t0 + 13 * S, false));
    }

    #[test]
    fn a_dip_resets_the_up_hold() {
        let t0 = Instant::now();
        let mut l = subscribed(t0);
        let need = THUMB + FULL;
        l.handle_estimate(t0, need * 2, false);
        l.handle_estimate(t0 + 1500 * MS, need, false); // under 1.2 ×
        l.handle_estimate(t0 + 1600 * MS, need * 2, false);
        l.handle_timeout(t0 + 2 * S);
        assert!(!l.pending_up());
        l.handle_timeout(t0 + 3600 * MS);
        assert!(l.pending_up());
    }

    #[test]
    fn down_is_immediate_and_hysteresis_stops_flapping() {
        let t0 = Instant::now();
        let mut l = subscribed(t0);
        let need = THUMB + FULL;
        l.handle_estimate(t0, need * 2, false);
        l.handle_timeout(t0 + 2 * S);
        l.handle_full_packet(t0 + 2 * S, true);
        events(&mut l);
        // An estimate wandering between 0.91 and 1.19 × need never switches.
        for i in 0..100u32 {
            let wobble = need * u64::from(91 + (i * 37) % 29) / 100;
            l.handle_estimate(t0 + 3 * S + 100 * MS * i, wobble, false);
            assert_eq!(l.layer(), Layer::Full, "{wobble}");
        }
        // Under 0.9 ×: down at once, no keyframe needed (the thumbnail kept flowing).
        l.handle_estimate(t0 + 14 * S, need * 89 / 100, false);
        assert_eq!(l.layer(), Layer::Thumbnail);
        assert_eq!(events(&mut l), [LayerEvent::Switched(Layer::Thumbnail)]);
        assert!(!l.handle_full_packet(t0 + 14 * S, true));
        // And wandering 0.91–1.19 × does not bring it back up.
        for i in 0..100u32 {
            let wobble = need * u64::from(91 + (i * 37) % 29) / 100;
            l.handle_estimate(t0 + 15 * S + 100 * MS * i, wobble, false);
            l.handle_timeout(t0 + 15 * S + 100 * MS * i);
        }
        assert!(events(&mut l).is_empty());
    }

    #[test]
    fn unsubscribing_or_demotion_goes_down_at_once() {
        let t0 = Instant::now();
        let mut l = subscribed(t0);
        l.handle_estimate(t0, 10_000_000, false);
        l.handle_timeout(t0 + 2 * S);
        l.handle_full_packet(t0 + 2 * S, true);
        events(&mut l);
        l.set_demoted(t0 + 3 * S, true);
        assert_eq!(l.layer(), Layer::Thumbnail);
        assert_eq!(events(&mut l), [LayerEvent::Switched(Layer::Thumbnail)]);
        // Demoted, it stays down however good the estimate.
        l.handle_estimate(t0 + 4 * S, 10_000_000, false);
        l.handle_timeout(t0 + 10 * S);
        assert_eq!(l.layer(), Layer::Thumbnail);
        assert_eq!(l.poll_timeout(), None);
        l.set_demoted(t0 + 11 * S, false);
        assert_eq!(
            events(&mut l),
            [LayerEvent::RequestKeyframe],
            "the link was good all along"
        );
        l.set_subscribed(t0 + 11 * S, false);
        assert!(!l.pending_up(), "a pending upswitch is dropped");
        assert!(!l.handle_full_packet(t0 + 12 * S, true));
    }

    #[test]
    fn a_started_subscription_is_a_trial_at_once_unless_the_link_is_known_short() {
        let t0 = Instant::now();
        // Nothing known: asked at once, judged from the initial estimate.
        let mut l = LayerChoice::new(blind());
        l.start(t0, true, 1_000_000);
        assert_eq!(events(&mut l), [LayerEvent::RequestKeyframe]);
        assert!(l.handle_full_packet(t0 + 100 * MS, true));
        // Still catching up (app-limited, below the need): it stays.
        l.handle_estimate(t0 + S, 1_200_000, true);
        assert_eq!(l.layer(), Layer::Full);
        // The receiver's REMB falls below where the trial began: down at once.
        l.handle_estimate(t0 + 2 * S, 255_000, false);
        assert_eq!(l.layer(), Layer::Thumbnail);
        // Without frame marking the layer flows at once.
        let mut l = LayerChoice::new(blind());
        l.start(t0, false, 1_000_000);
        assert_eq!(l.layer(), Layer::Full);
        // A link losing packets with an estimate under half the need is not tried…
        let mut l = LayerChoice::new(blind());
        l.handle_rates(t0, THUMB, FULL);
        l.handle_estimate(t0, 300_000, false);
        l.set_lossy(t0, true);
        l.start(t0, true, 300_000);
        assert!(events(&mut l).is_empty());
        assert!(!l.pending_up());
        // …until it stops losing them.
        l.set_lossy(t0 + S, false);
        assert_eq!(events(&mut l), [LayerEvent::RequestKeyframe]);
        // A falling REMB alone (not app-limited) does not hold a first trial back.
        let mut l = LayerChoice::new(blind());
        l.handle_rates(t0, THUMB, FULL);
        l.handle_estimate(t0, 800_000, false);
        l.start(t0, true, 800_000);
        assert_eq!(events(&mut l), [LayerEvent::RequestKeyframe]);
    }

    #[test]
    fn a_new_subscriber_on_a_good_link_asks_at_once() {
        let t0 = Instant::now();
        let mut l = LayerChoice::new(blind());
        // The full layer is paused (nobody watched it): last seen at 1.5 Mbit/s.
        l.handle_rates(t0, THUMB, FULL);
        l.handle_rates(t0 + S, THUMB, 0);
        for i in 0..30u32 {
            l.handle_estimate(t0 + 100 * MS * i, 4_000_000, false);
        }
        l.set_subscribed(t0 + 3 * S, true);
        assert_eq!(events(&mut l), [LayerEvent::RequestKeyframe]);
        // …but a link too slow for the paused layer's last rate is not tried.
        let mut l = LayerChoice::new(LayerConfig {
            probe_backoff: None,
            ..blind()
        });
        l.handle_rates(t0, THUMB, FULL);
        l.handle_rates(t0 + S, THUMB, 0);
        l.handle_estimate(t0, 1_000_000, false);
        l.set_subscribed(t0 + 3 * S, true);
        l.handle_timeout(t0 + 10 * S);
        assert!(events(&mut l).is_empty());
    }

    /// A layer that sends nothing (its camera is off) is asked for a keyframe once, when
    /// the upswitch starts, and not again every keyframe interval while it stays
    /// silent; once it flows, it is asked again.
    #[test]
    fn an_upswitch_to_a_silent_layer_asks_once_until_the_layer_flows() {
        let t0 = Instant::now();
        let mut l = LayerChoice::new(blind());
        l.handle_rates(t0, THUMB, 0);
        for i in 0..30u32 {
            l.handle_estimate(t0 + 100 * MS * i, 4_000_000, false);
        }
        l.set_subscribed(t0 + 3 * S, true);
        assert_eq!(events(&mut l), [LayerEvent::RequestKeyframe]);
        for i in 1..=100u32 {
            let now = t0 + 3 * S + 100 * MS * i;
            l.handle_rates(now, THUMB, 0);
            l.handle_timeout(now);
        }
        assert!(events(&mut l).is_empty(), "asked again while silent");
        assert!(l.pending_up(), "still waiting, on the thumbnail");
        // The camera comes on, its first packets not a keyframe's: asked at once (the
        // interval since the last evaluation is over), then every interval again.
        l.handle_rates(t0 + 14 * S, THUMB, FULL);
        assert_eq!(events(&mut l), [LayerEvent::RequestKeyframe]);
        assert_eq!(l.poll_timeout(), Some(t0 + 14 * S + 300 * MS));
        l.handle_timeout(t0 + 14 * S + 300 * MS);
        assert_eq!(events(&mut l), [LayerEvent::RequestKeyframe]);
        assert!(l.handle_full_packet(t0 + 14 * S + 400 * MS, true));
        assert_eq!(events(&mut l), [LayerEvent::Switched(Layer::Full)]);
    }

    /// How far apart the trials of a subscribed receiver on a 300 kbit/s link start
    /// (whole seconds), over `steps` of 100 ms: on thumbnails its estimate is
    /// app-limited at 1.5 × sent; with the full layer on, a second later, loss halves
    /// it. The keyframe comes 100 ms after the ask, unless `lossy_before_keyframe(n)`
    /// for the `n`th trial (from 1): then the receiver is losing packets meanwhile.
    fn trial_gaps(steps: usize, lossy_before_keyframe: impl Fn(usize) -> bool) -> Vec<u64> {
        let t0 = Instant::now();
        let mut l = subscribed(t0);
        let mut now = t0;
        let mut starts: Vec<Instant> = Vec::new();
        for _ in 0..steps {
            now += 100 * MS;
            l.lossy = false;
            if l.pending_up() {
                // Re-asks within one trial are 300 ms apart.
                let trial = starts.windows(2).filter(|w| w[1] - w[0] >= S).count() + 1;
                if lossy_before_keyframe(trial) {
                    l.set_lossy(now, true);
                } else {
                    l.handle_full_packet(now, true);
                }
            }
            let (est, limited) = match l.state {
                State::Full { since, .. } if now - since >= S => (150_000, false),
                _ => (300_000, true),
            };
            l.handle_estimate(now, est, limited);
            l.handle_timeout(now);
            for e in events(&mut l) {
                if e == LayerEvent::RequestKeyframe && starts.last() != Some(&now) {
                    starts.push(now);
                }
            }
        }
        let gaps = starts.windows(2).map(|w| (w[1] - w[0]).as_secs());
        gaps.filter(|&g| g >= 1).collect()
    }

    /// A receiver that only gets thumbnails cannot show room for more: after 2 s of an
    /// app-limited estimate it is tried on the full layer; a link that then loses
    /// packets sends it back, and the trials space out.
    #[test]
    fn trials_back_off_when_the_link_cannot_carry_the_layer() {
        let trials = trial_gaps(1500, |_| false);
        // Trials 2 s + 1 s + backoff apart.
        assert_eq!(trials[..4], [4 + 1, 8 + 1, 16 + 1, 32 + 1], "{trials:?}");
        assert!(trials[4..].iter().all(|&g| g == 33));
    }

    /// A trial whose receiver starts losing packets while it waits for its keyframe
    /// fails, but nothing of its layer was sent: the next trial waits the first wait
    /// (4 s), not twice the last, and the doubling goes on from where it was.
    #[test]
    fn a_trial_that_meets_loss_before_its_keyframe_waits_the_first_wait() {
        // The second trial's receiver loses packets (a reconnection's gap) before the
        // keyframe comes.
        let trials = trial_gaps(300, |n| n == 2);
        // 4 s + the first trial's second; 4 s after the loss; 8 s + a second.
        assert_eq!(trials[..3], [4 + 1, 4, 8 + 1], "{trials:?}");
    }

    /// Loss that ends trial after trial before its keyframe is the link's: from the
    /// second such trial in a row the waits double, as after failed trials, since each
    /// trial asked the sender for a keyframe.
    #[test]
    fn trials_that_meet_loss_before_their_keyframes_in_a_row_back_off() {
        let trials = trial_gaps(1500, |_| true);
        // The first wait after the first; then 4 s doubling up to 32 s.
        assert_eq!(trials[..5], [4, 4, 8, 16, 32], "{trials:?}");
        assert!(trials[5..].iter().all(|&g| g == 32), "{trials:?}");
    }

    /// An estimate bounded only by what was sent (app-limited: no loss, jitter, queue
    /// or falling REMB) falls when less is sent — a member that just connected, a
    /// sender that slowed down — and that is no verdict on a trial; the same fall with
    /// the receiver signalling congestion fails it.
    #[test]
    fn a_trial_is_failed_by_congestion_not_by_less_sent() {
        let t0 = Instant::now();
        let mut l = subscribed(t0);
        let mut now = t0;
        while !matches!(l.state, State::Full { .. }) {
            now += 100 * MS;
            if l.pending_up() {
                l.handle_full_packet(now, true);
            }
            l.handle_estimate(now, 300_000, true);
            l.handle_timeout(now);
            assert!(now - t0 < 10 * S, "no trial");
        }
        // Less sent: the bound falls far below where the trial began.
        now += 500 * MS;
        l.handle_estimate(now, 50_000, true);
        assert_eq!(l.layer(), Layer::Full, "failed on what was sent");
        now += 500 * MS;
        l.handle_estimate(now, 50_000, false);
        assert_eq!(l.layer(), Layer::Thumbnail, "congestion fails it");
    }

    #[test]
    fn a_trial_that_holds_stays_up() {
        let t0 = Instant::now();
        let mut l = subscribed(t0);
        let need = THUMB + FULL;
        let mut now = t0;
        for _ in 0..200 {
            now += 100 * MS;
            if l.pending_up() {
                l.handle_full_packet(now, true);
            }
            // A fast link: app-limited on thumbnails; once the full layer flows, the
            // estimate climbs over a few seconds, never falling below its start.
            let est = match l.state {
                State::Full { since, .. } => {
                    300_000 + (now - since).as_millis() as u64 * 400 // 400 kbit/s per s
                }
                _ => 300_000,
            };
            l.handle_estimate(now, est.min(need * 2), est < need * 2);
            l.handle_timeout(now);
        }
        assert_eq!(l.layer(), Layer::Full);
        assert_eq!(
            l.state,
            State::Full {
                since: l.state_since(),
                probe: None
            },
            "judged a success"
        );
    }

    #[test]
    fn hostile_input_never_panics() {
        let t0 = Instant::now() + 100 * S;
        let mut l = LayerChoice::new(LayerConfig {
            up_factor: f64::NAN,
            down_factor: f64::INFINITY,
            up_hold: Duration::ZERO,
            probe_hold: Duration::ZERO,
            keyframe_interval: Duration::MAX,
            probe_backoff: Some(Duration::MAX),
            probe_backoff_max: Duration::ZERO,
            probe_window: Duration::MAX,
            assumed_full_bps: u64::MAX,
            probe_first: true,
        });
        l.handle_rates(t0, u64::MAX, u64::MAX);
        l.set_subscribed(t0, true);
        l.handle_estimate(t0, 0, true);
        l.handle_estimate(t0 - 50 * S, u64::MAX, false);
        l.handle_timeout(t0 - 99 * S);
        let _ = l.probe_bps();
        l.handle_probe(t0 - 98 * S, ProbeOutcome::Carried, 0);
        l.handle_full_packet(t0, true);
        l.handle_timeout(t0 + 1000 * S);
        let _ = (l.poll_timeout(), l.poll_event(), l.layer());
        let mut l = LayerChoice::new(blind());
        l.handle_rates(t0, 0, 0);
        l.handle_estimate(t0, 0, false);
        l.set_subscribed(t0, true);
        l.handle_timeout(t0 + 10 * S);
        assert_eq!(l.layer(), Layer::Thumbnail);
        // The event queue keeps the newest when nobody drains it.
        let mut l = subscribed(t0);
        l.handle_estimate(t0, 10_000_000, false);
        for i in 0..40u32 {
            l.handle_timeout(t0 + 2 * S + 300 * MS * i);
        }
        assert_eq!(events(&mut l).len(), EVENTS);
    }

    impl LayerChoice {
        fn state_since(&self) -> Instant {
            match self.state {
                State::Full { since, .. } => since,
                State::PendingUp { asked_at, .. } => asked_at,
                State::Probing { since, .. } => since,
                State::Thumbnail => panic!("no since"),
            }
        }
    }

    /// With `probe_first`, a trial sends nothing of the layer until a probe says the
    /// link carries it: a short probe fails the trial (and the next waits 4 s, however
    /// many came short before), a carried or unanswered one lets it go on.
    #[test]
    fn a_trial_waits_for_its_probe() {
        let t0 = Instant::now();
        let mut l = LayerChoice::new(LayerConfig::default());
        l.handle_rates(t0, THUMB, FULL);
        l.set_subscribed(t0, true);
        assert_eq!(l.probe_bps(), (1.2 * (THUMB + FULL) as f64) as u64);
        // On thumbnails, nothing signalled for 1 s: a trial, waiting for its probe.
        l.handle_estimate(t0, 300_000, true);
        l.handle_timeout(t0 + S);
        assert!(l.probing());
        assert!(events(&mut l).is_empty(), "no keyframe asked yet");
        assert!(!l.handle_full_packet(t0 + S, true));
        // The link did not carry it: failed, the next trial 4 s later.
        l.handle_probe(t0 + 1100 * MS, ProbeOutcome::Short(None), 0);
        assert!(!l.probing() && !l.pending_up());
        assert!(events(&mut l).is_empty());
        l.handle_estimate(t0 + 1200 * MS, 300_000, true);
        assert_eq!(l.poll_timeout(), Some(t0 + 5100 * MS));
        l.handle_timeout(t0 + 5100 * MS);
        assert!(l.probing());
        // Short again: 4 s again, not 8 (nothing of the layer was sent).
        l.handle_probe(t0 + 5200 * MS, ProbeOutcome::Short(None), 0);
        l.handle_estimate(t0 + 5300 * MS, 300_000, true);
        assert_eq!(l.poll_timeout(), Some(t0 + 9200 * MS));
        l.handle_timeout(t0 + 9200 * MS);
        assert!(l.probing());
        // Carried: the trial proper, from the keyframe on.
        l.handle_probe(t0 + 9300 * MS, ProbeOutcome::Carried, 0);
        assert_eq!(events(&mut l), [LayerEvent::RequestKeyframe]);
        assert!(l.handle_full_packet(t0 + 9400 * MS, true));
        assert_eq!(l.full_since(), Some(t0 + 9400 * MS));
        // A verdict out of turn changes nothing.
        l.handle_probe(t0 + 9500 * MS, ProbeOutcome::Short(None), 0);
        assert_eq!(l.layer(), Layer::Full);

        // A started subscription probes too; a receiver that does not answer probes is
        // tried as without them; an unmarked sender's layer then flows at once.
        let mut l = LayerChoice::new(LayerConfig::default());
        l.start(t0, false, 1_000_000);
        assert!(l.probing());
        l.handle_probe(t0 + S, ProbeOutcome::Unanswered, 0);
        assert_eq!(l.full_since(), Some(t0 + S));

        // No verdict within 3 s (the engine gives one sooner, unless it holds the
        // probe back): failed.
        let mut l = LayerChoice::new(LayerConfig::default());
        l.start(t0, true, 1_000_000);
        assert_eq!(l.poll_timeout(), Some(t0 + 3 * S));
        l.handle_timeout(t0 + 3 * S);
        assert!(!l.probing() && !l.pending_up());
        // Unsubscribing while probing: back to the thumbnail, nothing to judge.
        let mut l = LayerChoice::new(LayerConfig::default());
        l.start(t0, true, 1_000_000);
        l.set_subscribed(t0 + S, false);
        assert!(!l.probing());
        assert_eq!(l.poll_timeout(), None);
    }

    /// A short probe that measured the link makes the receiver a prospect: for 10 s
    /// (the defaults' 4 s wait and 6 s), while it wants the layer, what it could take of
    /// it is the measured rate less what else it got, the up rule's headroom and the
    /// thumbnail. Judged at what the clamp then brings the layer to, its next trial
    /// needs what it measured, not the layer as it was, and goes without another
    /// probe; the trial's end, failed or held, ends the prospect.
    #[test]
    fn a_short_probe_that_measured_the_link_makes_a_prospect_until_its_trial_ends() {
        const OTHERS: u64 = 80_000;
        let t0 = Instant::now();
        let judged = |clamped_bps| Judged {
            available_bps: 300_000,
            app_limited: true,
            demoted: false,
            lossy: false,
            clamped_bps,
        };
        let mut l = LayerChoice::new(LayerConfig::default());
        l.handle_figures(t0, THUMB, FULL, Some(judged(None)));
        l.set_subscribed(t0, true);
        l.handle_timeout(t0 + S);
        assert!(l.probing());
        // Short, with nothing measured: no prospect.
        l.handle_probe(t0 + 1100 * MS, ProbeOutcome::Short(None), 0);
        assert_eq!(l.prospect_bps(t0 + 1100 * MS), None);
        l.handle_figures(t0 + 1200 * MS, THUMB, FULL, Some(judged(None)));
        // Short, the link measured at 1.4 Mbit/s: 1.32 Mbit/s left for this sender's
        // video.
        l.handle_figures(t0 + 5200 * MS, THUMB, FULL, Some(judged(None)));
        assert!(l.probing());
        let room = 1_320_000;
        l.handle_probe(
            t0 + 5300 * MS,
            ProbeOutcome::Short(Some(room + OTHERS)),
            OTHERS,
        );
        let take = 1_100_000 - THUMB;
        assert_eq!(l.prospect_bps(t0 + 5300 * MS), Some(take));
        assert_eq!(l.prospect_bps(t0 + 15_299 * MS), Some(take));
        assert_eq!(l.prospect_bps(t0 + 15_300 * MS), None, "10 s on");
        l.handle_figures(t0 + 5400 * MS, THUMB, FULL, Some(judged(None)));
        l.set_subscribed(t0 + 6 * S, false);
        assert_eq!(l.prospect_bps(t0 + 6 * S), None, "not wanted");
        l.set_subscribed(t0 + 6 * S, true);
        // The clamp follows it and the layer has come down to it: the next trial weighs
        // the layer at that, and goes without another probe (the last one measured
        // the link).
        l.handle_figures(t0 + 9400 * MS, THUMB, take, Some(judged(Some(take))));
        assert!(l.pending_up(), "no second probe");
        assert!(
            l.probe_bps().abs_diff(room) <= 1,
            "1.2 × (thumbnail + {take})"
        );
        assert_eq!(events(&mut l), [LayerEvent::RequestKeyframe]);
        // The trial goes on, the prospect with it, until the trial fails.
        assert!(l.handle_full_packet(t0 + 9600 * MS, true));
        assert_eq!(l.prospect_bps(t0 + 9600 * MS), Some(take));
        l.set_lossy(t0 + 10 * S, true);
        assert_eq!(l.layer(), Layer::Thumbnail);
        assert_eq!(l.prospect_bps(t0 + 10 * S), None);
        l.set_lossy(t0 + 10 * S, false);
        l.handle_probe(
            t0 + 10 * S,
            ProbeOutcome::Short(Some(room + OTHERS)),
            OTHERS,
        );
        assert_eq!(l.prospect_bps(t0 + 10 * S), None, "no trial waited for it");
        // A trial that holds ends it too.
        l.handle_figures(t0 + 10_100 * MS, THUMB, FULL, Some(judged(None)));
        l.handle_figures(t0 + 14_100 * MS, THUMB, FULL, Some(judged(None)));
        assert!(l.probing());
        l.handle_probe(
            t0 + 14_200 * MS,
            ProbeOutcome::Short(Some(room + OTHERS)),
            OTHERS,
        );
        l.handle_figures(t0 + 14_300 * MS, THUMB, FULL, Some(judged(Some(take))));
        l.handle_figures(t0 + 18_300 * MS, THUMB, FULL, Some(judged(Some(take))));
        assert!(l.handle_full_packet(t0 + 18_400 * MS, true));
        assert_eq!(l.prospect_bps(t0 + 23 * S), Some(take), "still judged");
        l.handle_figures(t0 + 23_500 * MS, THUMB, FULL, Some(judged(Some(take))));
        assert_eq!(l.layer(), Layer::Full);
        assert_eq!(l.prospect_bps(t0 + 23_500 * MS), None, "held");
    }
}
