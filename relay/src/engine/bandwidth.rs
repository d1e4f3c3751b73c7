//! Bandwidth: what each receiver's downlink can take, which layers it gets, and how
//! fast each sender's full layer may be — from the receivers' RTCP and what the relay
//! forwards, never from a media byte.
//!
//! Where each part runs (the shard that owns its data):
//!
//! - **Stream rates** are measured where a sender's media arrives (the forwarding path
//!   adds each packet's size to its stream's [`media::RateMeter`]) and announced to
//!   every shard at most once per [`RATE_EVERY`] ([`PeerMsg::StreamRate`]). A rate not
//!   renewed for [`RATE_STALE`] counts as 0: the stream stopped or was paused.
//! - **A receiver's downlink** ([`Downlink`], on its home shard, where its SRTCP is
//!   decrypted): its [`media::DownlinkEstimate`] is fed the blocks of its receiver
//!   reports about streams it gets, its REMB, and what the relay sends it — the sum of
//!   the rates of the streams it gets (not a count of every copy: the copies leave
//!   from whichever shard the sender's media arrives at). One [`media::LayerChoice`] per full layer it
//!   subscribes to decides thumbnail or full from the part of the estimate left for
//!   that sender's video (the estimate less everything else it gets). A trial of a
//!   full layer first probes the link ([`media::Prober`], one cluster at a time per
//!   receiver, and none from when a layer is brought down to a measure of the link
//!   until that layer's trial ends or the measure expires): padding in
//!   the receiver's SRTCP at what it gets besides that video (and the full layers it
//!   awaits at their keyframes) plus 1.2× the video with the full layer; the
//!   receiver's report is the verdict.
//! - **Layer states** are announced by the receiver's home to every shard
//!   ([`PeerMsg::LayerState`]); each shard keeps its fan-out lists by them. A receiver
//!   switching up waits in the layer's `pending` list on the shard where the sender's
//!   media arrives, and joins `receivers` at the first packet of the layer's next
//!   keyframe (frame marking's S and I bits); that shard tells the receiver's home
//!   ([`PeerMsg::KeyframeForwarded`]). Switching down is immediate. The thumbnail
//!   flows throughout, so the receiver never has a gap.
//! - **The rate clamp** of a full layer ([`Clamp`], on its sender's home): each viewer's
//!   home reports what the viewer can take ([`PeerMsg::ViewerRate`], once per receiver
//!   report); the clamp sends the sender a REMB for that layer at the lowest of them,
//!   leaving out a viewer far below the median, which every shard learns
//!   ([`PeerMsg::Demote`]) and whose layer choice moves it to the thumbnail. A
//!   subscriber whose trial's probe came back short but measured its link reports too,
//!   what that measure leaves the layer ([`media::LayerChoice::prospect_bps`]), if the
//!   sender's thumbnail flows and that is not under the floor (the demotion bound, the
//!   thumbnail's rate): the layer comes down before its next trial. (A probe sized for
//!   the trial of a sender whose thumbnail does not flow gives its measure to another
//!   trial that failed with it: `probe_verdict`.)
//! - **A sender's uplink** is estimated where its media arrives
//!   ([`media::UplinkEstimate`], fed on the forwarding path): from the loss in its
//!   sequence numbers and, if it stamps abs-send-time, by the same delay-based
//!   estimator a participant runs on its downlink ([`bwe::Bwe`]). While the uplink
//!   loses packets (and 10 s after), its value less the rates of the sender's other
//!   streams is what the full layer may take, sent to the sender's home (once a
//!   second, and at once when it falls: [`PeerMsg::Uplink`]): the REMB (or TMMBR) the
//!   sender gets is the lower of that and what the clamp's viewers can take. A sender
//!   whose uplink is full would otherwise lose its audio and thumbnail behind its own
//!   full layer, for every viewer — and its viewers would take that loss for their
//!   own downlinks'.
//!
//! All of this runs on RTCP arrivals, announcements and timers; the forwarding path
//! only adds to a rate meter (and, for a stream with receivers switching up, reads one
//! header extension).

use super::*;

/// A receiver's layer choices run on its feedback at most once per this long (later
/// feedback within it is taken in by the estimate at once and acted on when it ends):
/// each run costs work that grows with the conference, and a receiver reports about
/// once a second, plus a REMB at once when its estimate falls.
const REPORT_GAP: Duration = Duration::from_millis(50);

/// A rate not renewed for this long counts as 0 (the stream stopped or was paused).
pub(super) const RATE_STALE: Duration = Duration::from_millis(1500);

/// Report blocks about a full layer count once the receiver has had it this long (two
/// report intervals): the first blocks after a switch up count the packets sent while
/// it was on the thumbnail as lost.
const SETTLED_FULL: Duration = Duration::from_secs(2);

/// A viewer can be demoted by the rate clamp once it has had the full layer this long
/// (it reports to the clamp from [`SETTLED_FULL`] on): before, its estimate is still
/// catching up with the layer it was just given (the trial window of `LayerChoice`).
const SETTLED_VIEWER: Duration = Duration::from_secs(5);

/// The per-packet overhead a TMMBR names (RFC 5104 §4.2.1.2): RTP header with a few
/// extensions and the SRTP tag, about 40 bytes.
const TMMBR_OVERHEAD: u16 = 40;

/// A viewer's reported rate is dropped from a clamp after this long without renewal.
const VIEWER_STALE: Duration = Duration::from_millis(2500);

/// What a sender is asked for when nothing limits its full layer: more than any layer
/// takes (the sender keeps to its own rate).
const UNLIMITED: u64 = 100_000_000;

/// The same value is not asked of a sender twice within this long.
const ASK_REPEAT: Duration = Duration::from_secs(1);

/// An uplink figure not renewed for this long is dropped (the estimator sends one a
/// second while the sender sends).
const UPLINK_STALE: Duration = Duration::from_millis(2500);

/// A receiver's downlink: its estimate and its layer choices (on its home shard).
pub(super) struct Downlink {
    estimate: media::DownlinkEstimate,
    /// The SRs sent to the receiver, which its report blocks answer.
    round_trip: media::RoundTrip,
    /// One per full layer of another member it subscribes to.
    choices: Vec<Choice>,
    /// Probes of the link before trials of full layers.
    prober: media::Prober,
    /// The probe out, and the trial it is for.
    probe_for: Option<ProbeFor>,
    /// When its layer choices last ran on its feedback.
    reported_at: Option<Instant>,
    /// Feedback that came within [`REPORT_GAP`] of that run waits until then.
    report_due: Option<Instant>,
}

/// A probe of a receiver's link, sent for a trial of full layer `ssrc`.
#[derive(Clone, Copy)]
struct ProbeFor {
    ssrc: Ssrc,
    /// The rate it probes besides the full layers the receiver awaits: what the other
    /// trials' `Choice::probe_bps` compare with.
    least: u64,
    /// Everything else the receiver gets and awaits: a short probe's measure less
    /// that is what the link leaves the layer's sender's video.
    besides: u64,
    /// Of that, the full layers it awaits.
    awaited: u64,
}

struct Choice {
    /// The full layer.
    ssrc: Ssrc,
    /// Its sender.
    owner: SessionHandle,
    layer: media::LayerChoice,
    /// While its trial waits for a probe: the rate its probe would be sent at (all the
    /// receiver gets besides, and this sender's video with the full layer), as
    /// [`Engine::drive_choices`] last worked it out.
    probe_bps: u64,
    /// Its last run had a figure for the layer's clamp (so its end is told too).
    told: bool,
    /// Where its last run left it (the log shows where each run moved it).
    phase: media::Phase,
}

impl Downlink {
    /// With `queue`: a round trip this far above the lowest is a queue (`None`: no
    /// queue check).
    pub(super) fn new(queue: Option<Duration>) -> Self {
        // A stream's first block after a relay restart covers the outage.
        let cfg = media::EstimateConfig {
            queue_high: queue,
            first_report_loss: false,
            ..media::EstimateConfig::default()
        };
        Downlink {
            estimate: media::DownlinkEstimate::new(cfg),
            round_trip: media::RoundTrip::new(),
            choices: Vec::new(),
            prober: media::Prober::new(),
            probe_for: None,
            reported_at: None,
            report_due: None,
        }
    }

    /// The relay sent the receiver `sr`, a sender report about `ssrc`, at `now`.
    pub(super) fn handle_sr_sent(&mut self, now: Instant, ssrc: Ssrc, sr: &[u8]) {
        self.round_trip.handle_sr_sent(now, ssrc, sr);
    }

    /// The soonest deadline of its layer choices and its probe.
    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        self.choices
            .iter()
            .filter_map(|c| c.layer.poll_timeout())
            .chain(self.prober.poll_timeout())
            .chain(self.report_due)
            .min()
    }

    /// Feedback arrived at `now`: whether the layer choices may run on it now (else it
    /// waits for [`Self::poll_timeout`]).
    fn report_now(&mut self, now: Instant) -> bool {
        match self.reported_at {
            Some(at) if now.saturating_duration_since(at) < REPORT_GAP => {
                self.report_due.get_or_insert(at + REPORT_GAP);
                false
            }
            _ => {
                self.reported_at = Some(now);
                self.report_due = None;
                true
            }
        }
    }

    /// At a timeout: whether feedback that waited is due now (the layer choices then
    /// run on it).
    pub(super) fn take_report_due(&mut self, now: Instant) -> bool {
        if self.report_due.is_some_and(|t| t <= now) {
            self.reported_at = Some(now);
            self.report_due = None;
            return true;
        }
        false
    }
}

/// A full layer's rate clamp, what its viewers reported and what the sender's uplink
/// leaves it (on the sender's home).
pub(super) struct Clamp {
    clamp: media::RateClamp,
    /// Viewers by their home shard and handle there: what each can take, and when it
    /// said so.
    viewers: Vec<(ShardId, SessionHandle, u64, Instant)>,
    /// What the sender's uplink estimate leaves the layer, and when it came.
    uplink: Option<(u64, Instant)>,
    /// The value last asked of the sender, and when.
    asked: Option<(u64, Instant)>,
}

impl Clamp {
    fn new(demote_below: f64) -> Box<Self> {
        Box::new(Clamp {
            clamp: media::RateClamp::new(media::ClampConfig {
                demote_below,
                ..media::ClampConfig::default()
            }),
            viewers: Vec::new(),
            uplink: None,
            asked: None,
        })
    }

    /// Whether to ask the sender for `bps` now: not if the same value went within the
    /// last second (the clamp and the uplink each renew it once a second).
    fn ask(&mut self, now: Instant, bps: u64) -> bool {
        let repeat = self
            .asked
            .is_some_and(|(v, at)| v == bps && now.saturating_duration_since(at) < ASK_REPEAT);
        if !repeat {
            self.asked = Some((bps, now));
        }
        !repeat
    }

    /// The uplink's figure unless it is stale (the estimate stopped: the sender
    /// stopped or lost abs-send-time).
    fn uplink(&self, now: Instant) -> Option<u64> {
        self.uplink
            .filter(|&(_, at)| now.saturating_duration_since(at) < UPLINK_STALE)
            .map(|(bps, _)| bps)
    }
}

/// What a receiver report or REMB from a receiver says, for its estimate.
pub(super) enum Feedback<'a> {
    /// Report blocks (of an RR or SR).
    Blocks(rtcp::ReportBlocks<'a>),
    /// A REMB's bitrate.
    Remb(u64),
    /// A NACK: the receiver lost this many packets just now.
    Loss(usize),
}

/// One subscribed layer's figures for its layer choice.
struct Inputs {
    thumbnail_bps: u64,
    full_bps: u64,
    /// What the receiver gets of this sender's video now.
    receiving_bps: u64,
    demote_below: u64,
}

impl Engine {
    /// Whether receivers of `sender`'s full layers wait for a keyframe (it marks frames
    /// and layer choice is on).
    pub(super) fn marked(&self, sender: &Session) -> bool {
        self.cfg.layer_choice && sender.spec.extensions.frame_marking.is_some()
    }

    /// What receivers' places in the lists of session `h`'s streams depend on.
    pub(super) fn sender(&self, h: SessionHandle, s: &Session) -> Sender {
        Sender {
            marked: self.marked(s),
            speaking: self.speaker_of(s.conf) == Some(h),
        }
    }

    /// The active speaker of conference `conf`, as announced.
    pub(super) fn speaker_of(&self, conf: ConfHandle) -> Option<SessionHandle> {
        self.conferences.get(conf)?.speaking
    }

    /// A stream's rate now: as last measured or announced, 0 if stale.
    fn rate_of(st: &Stream, now: Instant) -> u64 {
        match st.rate {
            Some((bps, at)) if now.saturating_duration_since(at) < RATE_STALE => bps,
            _ => 0,
        }
    }

    // ----- stream rates --------------------------------------------------------------

    /// Another shard measured a stream's rate.
    pub(super) fn handle_stream_rate(
        &mut self,
        now: Instant,
        home: ShardId,
        sender: SessionHandle,
        ssrc: Ssrc,
        bps: u64,
        resumed: bool,
    ) {
        if let Some(st) = self.stream_by_home(home, sender, ssrc) {
            st.set_rate(now, bps, resumed);
        }
    }

    // ----- layer states --------------------------------------------------------------

    /// Records where receiver `r` is on full layer `ssrc` and edits the lists of the
    /// senders routed here to match.
    pub(super) fn set_layer_state(&mut self, r: SessionHandle, ssrc: Ssrc, state: LayerState) {
        let Some(s) = self.sessions.get_mut(r) else {
            return;
        };
        let speaker = self.conferences.get(s.conf).and_then(|c| c.speaking);
        let old = s.receives(speaker);
        match s.layers.iter_mut().find(|(l, _)| *l == ssrc) {
            Some(entry) => entry.1 = state,
            None => s.layers.push((ssrc, state)),
        }
        let new = s.receives(speaker);
        let (conf, addr) = (s.conf, s.addr);
        if let Some(addr) = addr {
            self.fanout_edit(conf, r, addr, Some(&old), Some(&new));
        }
    }

    /// Layer choice on `r`'s home (here) moved it on `ssrc`: recorded here and
    /// announced to every other shard.
    fn announce_layer(&mut self, r: SessionHandle, ssrc: Ssrc, state: LayerState) {
        self.set_layer_state(r, ssrc, state);
        let msg = PeerMsg::LayerState {
            home: self.cfg.shard,
            receiver: r,
            ssrc,
            state,
        };
        self.events.push_back(Event::Peer(PeerDest::All, msg));
    }

    /// Another shard announced a receiver's layer state.
    pub(super) fn handle_layer_state(
        &mut self,
        home: ShardId,
        receiver: SessionHandle,
        ssrc: Ssrc,
        state: LayerState,
    ) {
        if let Some(r) = self.by_home_key(home, receiver) {
            self.set_layer_state(r, ssrc, state);
        }
    }

    /// The forwarding path moved these receivers from a layer's `pending` list to its
    /// `receivers` at a keyframe: their state here is `Full` (the lists already say
    /// so), and their homes learn it.
    pub(super) fn after_keyframes(&mut self, now: Instant) {
        let mut switched = std::mem::take(&mut self.switched);
        for &(r, ssrc) in &switched {
            let Some(s) = self.sessions.get_mut(r) else {
                continue;
            };
            match s.layers.iter_mut().find(|(l, _)| *l == ssrc) {
                Some(entry) => entry.1 = LayerState::Full,
                None => s.layers.push((ssrc, LayerState::Full)),
            }
            match s.home {
                Home::Here(_) => self.keyframe_forwarded(now, r, ssrc),
                Home::Elsewhere(shard, key) => {
                    let msg = PeerMsg::KeyframeForwarded {
                        receiver: key,
                        ssrc,
                    };
                    self.events
                        .push_back(Event::Peer(PeerDest::Shard(shard), msg));
                }
                Home::Unclaimed { .. } => {}
            }
        }
        switched.clear();
        self.switched = switched;
    }

    /// Receiver `r` (homed here) got the first keyframe of full layer `ssrc` it was
    /// switching up to: its layer choice completes the switch, and every shard learns
    /// where it is now.
    pub(super) fn keyframe_forwarded(&mut self, now: Instant, r: SessionHandle, ssrc: Ssrc) {
        let Some(local) = self.sessions.get_mut(r).and_then(|s| s.local()) else {
            return;
        };
        let (state, up) = match local.downlink.choices.iter_mut().find(|c| c.ssrc == ssrc) {
            Some(c) => {
                c.layer.handle_full_packet(now, true);
                let up = drain_events(&mut self.stats, &mut c.layer)
                    .switched
                    .is_some();
                (desired(&c.layer), up)
            }
            // No choice (layer choice off, or the subscription ended meanwhile).
            None if self.cfg.layer_choice => (LayerState::Thumbnail, false),
            None => (LayerState::Full, false),
        };
        if up && let Some(s) = self.sessions.get(r) {
            tracing::debug!(receiver = %s.spec.id, ssrc = ssrc.0, "layer switch up at a keyframe");
        }
        self.announce_layer(r, ssrc, state);
    }

    // ----- the receiver's home: estimate and layer choice -----------------------------

    /// Brings receiver `r`'s layer choices (if it is homed and connected here) in line
    /// with the full layers it subscribes to: new ones start (see
    /// `LayerChoice::start`), ended ones are dropped.
    pub(super) fn sync_choices(&mut self, now: Instant, r: SessionHandle) {
        if !self.cfg.layer_choice {
            return;
        }
        let Some(rs) = self.sessions.get(r) else {
            return;
        };
        if !rs.is_connected() || !matches!(rs.home, Home::Here(_)) {
            return;
        }
        let Some(c) = self.conferences.get(rs.conf) else {
            return;
        };
        // The full layers it subscribes to, their senders, whether they mark frames.
        let mut wanted = Vec::new();
        for &m in c.members.iter().filter(|&&m| m != r) {
            let Some(ms) = self.sessions.get(m) else {
                continue;
            };
            let from = self.sender(m, ms);
            for st in ms.streams.iter().filter(|st| st.spec.layer == Layer::Full) {
                if rs.wants(&st.spec, from) {
                    wanted.push((st.spec.ssrc, m, from.marked));
                }
            }
        }
        let layer_cfg = media::LayerConfig {
            keyframe_interval: self.cfg.keyframe_interval,
            probe_backoff: Some(self.cfg.layer_probe_backoff),
            probe_backoff_max: self.cfg.layer_probe_backoff_max,
            probe_first: self.cfg.layer_probe_padding,
            ..media::LayerConfig::default()
        };
        let Some(local) = self.sessions.get_mut(r).and_then(|s| s.local()) else {
            return;
        };
        let d = &mut local.downlink;
        let wants = |c: &Choice| wanted.iter().any(|&(s, m, _)| s == c.ssrc && m == c.owner);
        let ended: Vec<Choice> = d.choices.extract_if(.., |c| !wants(c)).collect();
        let mut started = Vec::new();
        for (ssrc, owner, marked) in wanted {
            if d.choices.iter().all(|c| c.ssrc != ssrc) {
                d.choices.push(Choice {
                    ssrc,
                    owner,
                    layer: media::LayerChoice::new(layer_cfg),
                    probe_bps: 0,
                    told: false,
                    phase: media::Phase::Unwanted,
                });
                started.push((ssrc, marked));
            }
        }
        self.withdraw_figures(now, r, &ended);
        if started.is_empty() {
            return;
        }
        // Their figures first, so that a link known to be short is not tried.
        self.drive_choices(now, r, None);
        let initial = media::EstimateConfig::default().initial_bps;
        let Some(local) = self.sessions.get_mut(r).and_then(|s| s.local()) else {
            return;
        };
        let d = &mut local.downlink;
        let known = d.estimate.has_reports();
        for (ssrc, marked) in started {
            if let Some(c) = d.choices.iter_mut().find(|c| c.ssrc == ssrc) {
                let from = match known {
                    true => c.layer.available().unwrap_or(initial),
                    false => initial,
                };
                c.layer.start(now, marked, from);
            }
        }
        self.drive_choices(now, r, None);
    }

    /// Receiver `r` (homed here) reported on its downlink: its estimate takes it in.
    /// Returns whether its layer choices should run on it (once per compound, by the
    /// caller: [`Engine::feedback_taken`]).
    pub(super) fn downlink_feedback(
        &mut self,
        now: Instant,
        r: SessionHandle,
        fb: Feedback<'_>,
    ) -> bool {
        if !self.cfg.layer_choice {
            return false;
        }
        match fb {
            Feedback::Loss(lost) => {
                // It matters while a layer is on trial: the loss is most likely the
                // trial's, and ending it a report interval sooner spares the link. A
                // settled viewer's losses are its receiver report's to weigh (the clamp
                // follows its REMB meanwhile).
                let Some(local) = self.sessions.get_mut(r).and_then(|s| s.local()) else {
                    return false;
                };
                let d = &mut local.downlink;
                let on_trial = d.choices.iter().any(|c| {
                    c.layer.pending_up()
                        || c.layer
                            .full_since()
                            .is_some_and(|t| now.saturating_duration_since(t) < SETTLED_VIEWER)
                });
                if !on_trial {
                    return false;
                }
                d.estimate.handle_loss_signal(now, lost);
            }
            Feedback::Remb(bps) => {
                self.stats.remb_received += 1;
                self.feed_sent(now, r);
                if let Some(local) = self.sessions.get_mut(r).and_then(|s| s.local()) {
                    local.downlink.estimate.handle_remb(now, bps);
                }
            }
            Feedback::Blocks(blocks) => {
                let Some(rs) = self.sessions.get(r) else {
                    return false;
                };
                let conf = rs.conf;
                // Only blocks about streams it gets count (a report about its own
                // streams, or a stranger's, says nothing of its downlink).
                let mut reports = Vec::new();
                let mut rtt: Option<Duration> = None;
                // The report crossed the receiver's uplink: what its own media shows
                // queued there is not its downlink's.
                let uplink_queue = rs
                    .uplink_queue
                    .as_deref()
                    .map_or(Duration::ZERO, |q| q.queue());
                for b in blocks {
                    let Some(owner) = self.stream_owner(conf, b.ssrc) else {
                        continue;
                    };
                    let Some((spec, resumed_at, from)) = self.sessions.get(owner).and_then(|o| {
                        let st = o.stream(b.ssrc)?;
                        Some((st.spec, st.resumed_at, self.sender(owner, o)))
                    }) else {
                        continue;
                    };
                    if owner == r || !rs.wants(&spec, from) {
                        continue;
                    }
                    if let Home::Here(local) = &rs.home
                        && let Some(t) = local
                            .downlink
                            .round_trip
                            .handle_block(now, b.ssrc, b.lsr, b.dlsr)
                    {
                        let t = t.saturating_sub(uplink_queue);
                        rtt = Some(rtt.map_or(t, |r| r.min(t)));
                    }
                    // A full layer the receiver does not get, or started getting
                    // within the last two report intervals: its block counts the
                    // packets it was never sent (while on the thumbnail) as lost. It
                    // only sets the count the next one is weighed from.
                    let full = spec.layer == Layer::Full;
                    let judged = !full || Self::full_for(rs, b.ssrc, now, SETTLED_FULL);
                    let clock = match spec.kind {
                        MediaKind::Audio => 48_000,
                        MediaKind::Video => 90_000,
                    };
                    reports.push(media::LossReport {
                        ssrc: b.ssrc,
                        fraction_lost: b.fraction_lost,
                        highest_seq: b.highest_seq,
                        jitter: Duration::from_micros(u64::from(b.jitter) * 1_000_000 / clock),
                        resumed_at,
                        judged,
                    });
                }
                if reports.is_empty() {
                    return false;
                }
                self.stats.report_blocks += reports.len() as u64;
                self.feed_sent(now, r);
                if let Some(local) = self.sessions.get_mut(r).and_then(|s| s.local()) {
                    if let Some(rtt) = rtt {
                        self.stats.round_trips += 1;
                        local.downlink.estimate.handle_round_trip(now, rtt);
                    }
                    local.downlink.estimate.handle_receiver_report(now, reports);
                }
            }
        }
        true
    }

    /// Receiver `r`'s feedback (one compound's) was taken in: its layer choices run on
    /// it now, or [`REPORT_GAP`] after they last did.
    pub(super) fn feedback_taken(&mut self, now: Instant, r: SessionHandle) {
        let Some(local) = self.sessions.get_mut(r).and_then(|s| s.local()) else {
            return;
        };
        if local.downlink.report_now(now) {
            self.drive_choices(now, r, Some(now));
        } else {
            self.schedule(r);
        }
    }

    /// Whether receiver `rs` (homed here) has had full layer `ssrc` for `at_least`.
    fn full_for(rs: &Session, ssrc: Ssrc, now: Instant, at_least: Duration) -> bool {
        let Home::Here(local) = &rs.home else {
            return false;
        };
        local
            .downlink
            .choices
            .iter()
            .find(|c| c.ssrc == ssrc)
            .and_then(|c| c.layer.full_since())
            .is_some_and(|t| now.saturating_duration_since(t) >= at_least)
    }

    /// What the relay sends receiver `r` now: the sum of the rates of the streams it
    /// gets, and per layer choice the figures of that sender's video.
    fn receiving(&self, now: Instant, r: SessionHandle) -> Option<(u64, Vec<Inputs>)> {
        let rs = self.sessions.get(r)?;
        let Home::Here(local) = &rs.home else {
            return None;
        };
        let c = self.conferences.get(rs.conf)?;
        let mut total = 0u64;
        for &m in c.members.iter().filter(|&&m| m != r) {
            let Some(ms) = self.sessions.get(m) else {
                continue;
            };
            let from = self.sender(m, ms);
            for st in &ms.streams {
                if rs.slot(&st.spec, from) == Some(Slot::Receivers) {
                    total = total.saturating_add(Self::rate_of(st, now));
                }
            }
        }
        let inputs = local
            .downlink
            .choices
            .iter()
            .map(|ch| {
                let owner = self.sessions.get(ch.owner);
                let rate = |layer: Layer| {
                    owner
                        .and_then(|o| o.streams.iter().find(|st| st.spec.layer == layer))
                        .map_or(0, |st| Self::rate_of(st, now))
                };
                let (thumbnail_bps, full_bps) = (rate(Layer::Thumbnail), rate(Layer::Full));
                let full_st = owner.and_then(|o| o.stream(ch.ssrc));
                let gets_full = full_st.zip(owner).is_some_and(|(st, o)| {
                    rs.slot(&st.spec, self.sender(ch.owner, o)) == Some(Slot::Receivers)
                });
                Inputs {
                    thumbnail_bps,
                    full_bps,
                    receiving_bps: thumbnail_bps + if gets_full { full_bps } else { 0 },
                    demote_below: full_st.map_or(0, |st| st.demote_below),
                }
            })
            .collect();
        Some((total, inputs))
    }

    /// Tells receiver `r`'s estimate what it is sent now.
    fn feed_sent(&mut self, now: Instant, r: SessionHandle) {
        let Some((total, _)) = self.receiving(now, r) else {
            return;
        };
        if let Some(local) = self.sessions.get_mut(r).and_then(|s| s.local()) {
            local.downlink.estimate.set_sent_rate(total);
        }
    }

    /// Runs receiver `r`'s layer choices on its current figures; announces the states
    /// that changed, asks for keyframes, and — with `report` (after feedback) — tells
    /// the clamps of the layers it views, or is a prospect for (its link measured by a
    /// short probe), what it can take.
    pub(super) fn drive_choices(
        &mut self,
        now: Instant,
        r: SessionHandle,
        report: Option<Instant>,
    ) {
        let Some((total, inputs)) = self.receiving(now, r) else {
            return;
        };
        if let Some(local) = self.sessions.get_mut(r).and_then(|s| s.local()) {
            local.downlink.estimate.set_sent_rate(total);
        }
        let Some(local) = self.sessions.get_mut(r).and_then(|s| s.local()) else {
            return;
        };
        let d = &mut local.downlink;
        let known = d.estimate.has_reports();
        let estimate = d.estimate.estimate(now);
        let breakdown = d.estimate.breakdown(now);
        let limited = d.estimate.app_limited(now);
        let lossy = d.estimate.lossy(now);
        let mut asks = Vec::new();
        let mut states = Vec::new();
        let mut views = Vec::new();
        let mut switches = Vec::new();
        let mut phases = Vec::new();
        // The trial waiting for a probe at the lowest rate (a link short of it is short
        // of the others' too, `probe_verdict`): its layer, and the rate to probe besides
        // the full layers the receiver awaits (added once every choice has run); sent
        // unless a layer is tried on a measure of the link meanwhile (`measured_trial`).
        let mut probe = None;
        // Whether a layer is tried on a link known to be short (see below).
        let mut measured_trial = false;
        // A prospect the clamp would follow (see below).
        let prospect = |c: &Choice, i: &Inputs, floor: u64| {
            c.layer
                .prospect_bps(now)
                .filter(|&p| i.thumbnail_bps > 0 && p >= floor)
        };
        for (c, i) in d.choices.iter_mut().zip(&inputs) {
            // The estimate less everything else it gets.
            let others = total.saturating_sub(i.receiving_bps);
            let available = estimate.saturating_sub(others);
            // A viewer (or one switching up) that the clamp does not demote is one the
            // clamp follows: the sender's layer comes down to what it can take, so that
            // is what the layer costs it — down to a floor: the demotion bound, and at
            // least a thumbnail's rate (a full layer smaller than that is no picture).
            let settled = c
                .layer
                .full_since()
                .is_some_and(|t| now.saturating_duration_since(t) >= SETTLED_VIEWER);
            let can_take = available.saturating_sub(i.thumbnail_bps);
            let viewing = c.layer.full_since().is_some() || c.layer.pending_up();
            let floor = i.demote_below.max(i.thumbnail_bps);
            // A subscriber whose link a short probe measured (a prospect) is one too, at
            // what that measure takes, if that is not under the floor; only of a sender
            // whose video flows (its thumbnail does), since otherwise there is no layer
            // to bring down. It tells the clamp below, so the layer comes down.
            //
            // Its trial weighs the layer at that only once the layer has come down to
            // it (or while the layer is paused, to resume at it): a sender that does not
            // obey would overrun the link the trial was sized to.
            let measured = prospect(c, i, floor);
            let clamped = known
                .then(|| match viewing {
                    true => Some(can_take.max(floor)),
                    false => measured.filter(|&p| {
                        i.full_bps as f64 <= p as f64 * (1.0 + media::PROSPECT_LAYER_SLACK)
                    }),
                })
                .flatten();
            let judged = known.then(|| {
                // Demotion judges what a viewer can take; a receiver on the thumbnail
                // whose link reports no trouble has an estimate nothing has tested yet
                // (bounded by what it is sent), which its trials will test instead.
                // Nor is a viewer in its first seconds, whose estimate is still
                // catching up with the layer it was just given, nor a prospect, which
                // is judged by its measure (it is one only above the floor): a probe's
                // queue dips its REMB, and its thumbnail-bounded estimate would then
                // demote it and end it at every probe.
                let judging =
                    settled || (!limited && measured.is_none() && c.layer.full_since().is_none());
                media::Judged {
                    available_bps: available,
                    app_limited: limited,
                    demoted: judging && i.demote_below > 0 && available < i.demote_below,
                    // Losses the clamp can cure (the viewer can take the layer at a rate
                    // the clamp would bring it to) do not end a trial; a link that cannot
                    // take even that floor does.
                    lossy: lossy && can_take < floor,
                    clamped_bps: clamped,
                }
            });
            let demoted = judged.as_ref().is_some_and(|j| j.demoted);
            c.layer
                .handle_figures(now, i.thumbnail_bps, i.full_bps, judged);
            // Keyframe requests are sent after the loop: the throttle needs `self`.
            let drained = drain_events(&mut self.stats, &mut c.layer);
            if drained.keyframe {
                asks.push((c.owner, c.ssrc));
            }
            let phase = c.layer.phase(now);
            if phase != c.phase {
                phases.push((c.ssrc, c.phase, phase, available));
                c.phase = phase;
            }
            if let Some(to) = drained.switched {
                switches.push(Switch {
                    ssrc: c.ssrc,
                    to,
                    available_bps: available,
                    others_bps: others,
                    full_bps: i.full_bps.min(clamped.unwrap_or(u64::MAX)),
                    lossy,
                    demoted,
                });
            }
            // Everything else it gets, and this sender's video with the full layer (0
            // while it waits for no probe: no verdict on another's probe applies).
            c.probe_bps = match c.layer.probing() {
                true => others.saturating_add(c.layer.probe_bps()),
                false => 0,
            };
            if c.probe_bps > 0 && probe.is_none_or(|(_, least, _)| c.probe_bps < least) {
                probe = Some((c.ssrc, c.probe_bps, others));
            }
            // What the clamp would follow of its measure now that the choice has run (a
            // trial that failed just now ended it).
            let measured_now = prospect(c, i, floor);
            // A layer the clamp brings down to a measure of the link is tried on a link
            // known to be short, from then until its trial ends (held, failed, or the
            // measure aged out): no probe, above the link's rate, dips the estimate that
            // trial is judged by.
            measured_trial |= measured_now.is_some();
            let state = desired(&c.layer);
            states.push((c.ssrc, state));
            // It tells the clamp the budget left for this sender's video, less the
            // thumbnail, once its estimate had time to follow the layer; a prospect
            // until then, what its measured link takes.
            let reporting = c
                .layer
                .full_since()
                .is_some_and(|t| now.saturating_duration_since(t) >= SETTLED_FULL);
            let told = match reporting {
                true => Some(can_take),
                false => measured_now,
            };
            if let Some(bps) = told.filter(|_| known && report.is_some()) {
                views.push((c.owner, c.ssrc, bps));
            } else if told.is_none() && c.told {
                // It no longer tells the clamp (a prospect that ended, a viewer that
                // went down): 0 takes it out at once, on whichever shard the clamp runs.
                views.push((c.owner, c.ssrc, 0));
            }
            c.told = told.is_some();
        }
        // Trials waiting for a probe meanwhile fail when it has not come within 3 s, as
        // after a failed trial (their next waits twice as long): on a link known to be
        // short, another full layer is not likely to fit besides. So does the measured
        // layer's own, if its layer had not come down to the measure when it began.
        if measured_trial {
            probe = None;
        }
        // The full layers it will get at their next keyframes (as this run left them)
        // count as sent: a probe that left them out would pass for a trial the link
        // cannot carry with them.
        let awaited: u64 = d.choices.iter().map(|c| c.layer.awaited_bps()).sum();
        if let Some((ssrc, least, others)) = probe
            && d.prober.start(now, least.saturating_add(awaited))
        {
            d.probe_for = Some(ProbeFor {
                ssrc,
                least,
                besides: others.saturating_add(awaited),
                awaited,
            });
        }
        if let Some(s) = self.sessions.get(r) {
            for &(ssrc, from, to, available_bps) in &phases {
                tracing::debug!(
                    receiver = %s.spec.id,
                    ssrc = ssrc.0,
                    ?from,
                    ?to,
                    available_bps,
                    "layer choice",
                );
            }
            for w in &switches {
                tracing::debug!(
                    receiver = %s.spec.id,
                    ssrc = w.ssrc.0,
                    to = ?w.to,
                    available_bps = w.available_bps,
                    others_bps = w.others_bps,
                    estimate = ?breakdown,
                    limited,
                    full_bps = w.full_bps,
                    lossy = w.lossy,
                    demoted = w.demoted,
                    "layer switch",
                );
            }
        }
        for (ssrc, state) in states {
            let now_at = self.sessions.get(r).and_then(|s| {
                let owner = self.stream_owner(s.conf, ssrc)?;
                let marked = self.marked(self.sessions.get(owner)?);
                Some(layer_state(&s.layers, ssrc, marked))
            });
            if now_at.is_some_and(|st| st != state) {
                self.announce_layer(r, ssrc, state);
            }
        }
        for (owner, ssrc) in asks {
            self.request_keyframe_from(now, owner, ssrc, KeyframeKind::Pli);
        }
        for (owner, ssrc, bps) in views {
            self.tell_clamp(now, r, owner, ssrc, bps);
        }
        self.send_probes(now, r);
        self.schedule(r);
    }

    /// Receiver `r`, just removed (`s`), counts in no clamp it told a figure: they forget
    /// it now rather than once its figures age out, so a slow viewer who hangs up holds
    /// nobody's layer down.
    pub(super) fn withdraw_removed(&mut self, now: Instant, r: SessionHandle, s: &mut Session) {
        if let Some(local) = s.local() {
            self.withdraw_figures(now, r, &local.downlink.choices);
        }
    }

    /// Receiver `r`'s `choices` end (a subscription dropped, the session removed): those
    /// that told a clamp what they can take tell it they no longer count.
    fn withdraw_figures(&mut self, now: Instant, r: SessionHandle, choices: &[Choice]) {
        for c in choices.iter().filter(|c| c.told) {
            self.tell_clamp(now, r, c.owner, c.ssrc, 0);
        }
    }

    /// Tells the clamp of `owner`'s full layer `ssrc`, on the sender's home, that
    /// receiver `r` (homed here) can take `bps` of it (0: it no longer counts).
    fn tell_clamp(
        &mut self,
        now: Instant,
        r: SessionHandle,
        owner: SessionHandle,
        ssrc: Ssrc,
        bps: u64,
    ) {
        let me = self.cfg.shard;
        match self.sessions.get(owner).map(|o| &o.home) {
            Some(Home::Here(_)) => self.viewer_rate(now, owner, ssrc, me, r, bps),
            Some(&Home::Elsewhere(shard, key)) => {
                let msg = PeerMsg::ViewerRate {
                    owner: key,
                    ssrc,
                    home: me,
                    viewer: r,
                    bps,
                };
                self.events
                    .push_back(Event::Peer(PeerDest::Shard(shard), msg));
            }
            _ => {}
        }
    }

    // ----- the receiver's home: probes before trials -----------------------------------

    /// Sends receiver `r` the packets of its probe cluster that are due, in its SRTCP.
    fn send_probes(&mut self, now: Instant, r: SessionHandle) {
        let mut buf = [0u8; media::MAX_PROBE_PACKET];
        loop {
            let Some(local) = self.sessions.get_mut(r).and_then(|s| s.local()) else {
                return;
            };
            let Some(p) = local.downlink.prober.poll_packet(now) else {
                return;
            };
            if let Ok(n) = rtcp::write_probe(&mut buf, self.cfg.relay_ssrc, p.probe, p.len) {
                self.stats.probe_packets_sent += 1;
                self.send_rtcp_to(r, &buf[..n]);
            }
        }
    }

    /// Receiver `r`'s probe at `now`: packets due go out, and a report overdue is a
    /// verdict.
    pub(super) fn probe_timeout(&mut self, now: Instant, r: SessionHandle) {
        self.send_probes(now, r);
        let Some(local) = self.sessions.get_mut(r).and_then(|s| s.local()) else {
            return;
        };
        if let Some(outcome) = local.downlink.prober.handle_timeout(now) {
            self.probe_verdict(now, r, outcome);
        }
    }

    /// Receiver `r` (homed here) reported on a probe cluster.
    pub(super) fn probe_report(&mut self, now: Instant, r: SessionHandle, report: &ProbeReport) {
        let Some(local) = self.sessions.get_mut(r).and_then(|s| s.local()) else {
            return;
        };
        let Some(outcome) = local.downlink.prober.handle_report(report) else {
            self.stats.rtcp_ignored += 1;
            return;
        };
        self.probe_verdict(now, r, outcome);
        self.drive_choices(now, r, None);
    }

    /// Gives the verdict on receiver `r`'s probe to the trial it was for (its events
    /// are drained by the next [`Self::drive_choices`]). A link that did not carry the
    /// probe's rate carries no more: the other trials waiting for a probe at that rate
    /// or above fail with it, so a receiver subscribed to many senders on a link that
    /// takes none of their full layers gets one probe per wait, not one per sender. A
    /// measure of the link goes to one trial: the one the probe was for, or if that
    /// sender's thumbnail does not flow, the lowest of those failing with it whose
    /// sender's does.
    fn probe_verdict(&mut self, now: Instant, r: SessionHandle, outcome: media::ProbeOutcome) {
        match outcome {
            media::ProbeOutcome::Carried => self.stats.probes_carried += 1,
            media::ProbeOutcome::Short(_) => self.stats.probes_short += 1,
            media::ProbeOutcome::Unanswered => self.stats.probes_unanswered += 1,
        }
        let Some(local) = self.sessions.get_mut(r).and_then(|s| s.local()) else {
            return;
        };
        let d = &mut local.downlink;
        let Some(ProbeFor {
            ssrc: probed,
            least,
            besides,
            awaited,
        }) = d.probe_for.take()
        else {
            return;
        };
        let measured = outcome;
        let short = matches!(outcome, media::ProbeOutcome::Short(_));
        let short_too =
            |c: &Choice| short && c.layer.probing() && c.probe_bps > 0 && c.probe_bps >= least;
        // The measure is the link's, whichever trial the probe was sized for. One of a
        // sender whose thumbnail does not flow (its camera off) can make no prospect
        // (see `drive_choices`): it goes instead to the lowest of the trials that fail
        // along whose sender's thumbnail flows, with what else the receiver got
        // besides that sender's video; with none, to no trial.
        let (ssrc, besides) = match d.choices.iter().find(|c| c.ssrc == probed) {
            Some(c) if short && !c.layer.thumbnail_flows() => d
                .choices
                .iter()
                .filter(|c| short_too(c) && c.layer.thumbnail_flows())
                .min_by_key(|c| c.probe_bps)
                .map_or((None, 0), |c| {
                    let others = c.probe_bps.saturating_sub(c.layer.probe_bps());
                    (Some(c.ssrc), others.saturating_add(awaited))
                }),
            _ => (Some(probed), besides),
        };
        // One prospect at a time: a measure taken while another of its layers is on
        // its way (a prospect, or switching up, or on trial) left that layer's coming
        // rate out of what else the receiver gets, and both would be sized to the
        // same room.
        let other_coming = d
            .choices
            .iter()
            .any(|c| Some(c.ssrc) != ssrc && c.layer.coming(now));
        let outcome = match outcome {
            media::ProbeOutcome::Short(Some(_)) if other_coming => media::ProbeOutcome::Short(None),
            outcome => outcome,
        };
        for c in &mut d.choices {
            if Some(c.ssrc) == ssrc {
                c.layer.handle_probe(now, outcome, besides);
            } else if short_too(c) || c.ssrc == probed {
                // Its trial fails with it, but the measure is one trial's: were both
                // sized to the whole link, both layers would come down and both trials
                // then pass their probes, one sized without the other.
                c.layer
                    .handle_probe(now, media::ProbeOutcome::Short(None), 0);
            }
        }
        if let Some(s) = self.sessions.get(r) {
            tracing::debug!(
                receiver = %s.spec.id,
                ssrc = probed.0,
                bps = least.saturating_add(awaited),
                ?measured,
                taken = ?outcome,
                for_ssrc = ssrc.map(|s| s.0),
                "probe verdict",
            );
        }
    }

    // ----- the sender's home: rate clamp ----------------------------------------------

    /// A viewer of `owner`'s full layer `ssrc` (homed here), or a prospect for it (see
    /// [`Self::drive_choices`]), can take `bps`: the clamp
    /// updates, sends the sender a REMB when due, and announces a changed demotion
    /// bound.
    pub(super) fn viewer_rate(
        &mut self,
        now: Instant,
        owner: SessionHandle,
        ssrc: Ssrc,
        home: ShardId,
        viewer: SessionHandle,
        bps: u64,
    ) {
        let demote_below = self.cfg.clamp_demote_below;
        let Some(o) = self.sessions.get_mut(owner) else {
            return;
        };
        let tmmbr = o.spec.tmmbr;
        let Some(st) = o.full_layer_here(ssrc) else {
            return;
        };
        // Viewers count in the median at no more than the layer's rate (see
        // `RateClamp::update_capped`).
        let rate = match Self::rate_of(st, now) {
            0 => u64::MAX,
            r => r,
        };
        let c = st.clamp.get_or_insert_with(|| Clamp::new(demote_below));
        c.viewers
            .retain(|v| now.saturating_duration_since(v.3) < VIEWER_STALE);
        // 0: it no longer counts (see `drive_choices`).
        match c.viewers.iter_mut().find(|v| (v.0, v.1) == (home, viewer)) {
            _ if bps == 0 => c.viewers.retain(|v| (v.0, v.1) != (home, viewer)),
            Some(v) => (v.2, v.3) = (bps, now),
            None => c.viewers.push((home, viewer, bps, now)),
        }
        let out = c
            .clamp
            .update_capped(now, c.viewers.iter().map(|v| v.2), rate);
        let uplink = c.uplink(now);
        let old = st.demote_below;
        let changed = (old == 0) != (out.demote_below_bps == 0)
            || out.demote_below_bps.abs_diff(old) * 10 > old;
        if changed {
            st.demote_below = out.demote_below_bps;
            let msg = PeerMsg::Demote {
                home: self.cfg.shard,
                sender: owner,
                ssrc,
                below_bps: out.demote_below_bps,
            };
            self.events.push_back(Event::Peer(PeerDest::All, msg));
        }
        if let Some(bps) = out.send_bps {
            let limited = uplink.is_some_and(|u| u < bps);
            let bps = bps.min(uplink.unwrap_or(u64::MAX));
            if c.ask(now, bps) {
                self.ask_sender(owner, ssrc, bps, limited, tmmbr);
            }
        }
    }

    /// Sends `owner` (homed here) a REMB — a TMMBR if it negotiated that (`tmmbr`) —
    /// asking it to send its full layer `ssrc` at `bps`; `by_uplink`: its uplink set
    /// the value.
    fn ask_sender(
        &mut self,
        owner: SessionHandle,
        ssrc: Ssrc,
        bps: u64,
        by_uplink: bool,
        tmmbr: bool,
    ) {
        let mut out = [0u8; 24];
        let written = match tmmbr {
            // RFC 5104 §4.2.1; the overhead is the relay's guess of the stream's
            // per-packet header bytes (RTP 12 + extensions + SRTP tag).
            true => {
                let entry = rtcp::TmmbEntry {
                    ssrc,
                    bitrate_bps: bps,
                    overhead: TMMBR_OVERHEAD,
                };
                rtcp::write_tmmbr(&mut out, self.cfg.relay_ssrc, &[entry])
            }
            false => rtcp::write_remb(&mut out, self.cfg.relay_ssrc, bps, &[ssrc]),
        };
        if let Ok(n) = written {
            match tmmbr {
                true => self.stats.tmmbr_sent += 1,
                false => self.stats.remb_sent += 1,
            }
            self.stats.uplink_limited += u64::from(by_uplink);
            self.send_rtcp_to(owner, out.get(..n).unwrap_or_default());
        }
    }

    // ----- the sender's uplink --------------------------------------------------------

    /// The limit of session `h`'s uplink, where its media arrives (here), is due to go
    /// out: what it leaves the full layer after the session's other streams, as
    /// measured here, goes to the session's home — or that it was lifted.
    #[cold] // once a second per congested sender, and on a fall
    pub(super) fn uplink_estimated(&mut self, now: Instant, h: SessionHandle, limit: media::Limit) {
        let Some(s) = self.sessions.get(h) else {
            return;
        };
        let Some(full) = s.streams.iter().find(|st| st.spec.layer == Layer::Full) else {
            return;
        };
        let others: u64 = s
            .streams
            .iter()
            .filter(|st| st.spec.layer != Layer::Full)
            .map(|st| Self::rate_of(st, now))
            .sum();
        let budget = match limit {
            media::Limit::Bps(bps) => Some(bps.saturating_sub(others)),
            media::Limit::Lifted => None,
        };
        let ssrc = full.spec.ssrc;
        match s.home {
            Home::Here(_) => self.uplink_budget(now, h, ssrc, budget),
            Home::Elsewhere(shard, key) => {
                let msg = PeerMsg::Uplink {
                    owner: key,
                    ssrc,
                    bps: budget,
                };
                self.events
                    .push_back(Event::Peer(PeerDest::Shard(shard), msg));
            }
            Home::Unclaimed { .. } => {}
        }
    }

    /// `owner`'s (homed here) uplink leaves its full layer `ssrc` `bps` (`None`: no
    /// longer congested): the sender is asked for the lower of that and what the
    /// layer's viewers can take — unless the layer is paused (nobody views it: the
    /// uplink carries none of it, and a subscriber's figure sets the rate it resumes
    /// at, `viewer_rate`).
    pub(super) fn uplink_budget(
        &mut self,
        now: Instant,
        owner: SessionHandle,
        ssrc: Ssrc,
        bps: Option<u64>,
    ) {
        let demote_below = self.cfg.clamp_demote_below;
        let Some(o) = self.sessions.get_mut(owner) else {
            return;
        };
        let tmmbr = o.spec.tmmbr;
        let Some(st) = o.full_layer_here(ssrc) else {
            return;
        };
        let c = st.clamp.get_or_insert_with(|| Clamp::new(demote_below));
        c.uplink = bps.map(|b| (b, now));
        if st.unwatched.is_paused() {
            return;
        }
        let viewers = c.clamp.target();
        let limited = bps.is_some_and(|b| viewers.is_none_or(|v| b < v));
        // Lifted with no viewer figure: as much as the layer will ever take.
        let bps = bps.unwrap_or(u64::MAX).min(viewers.unwrap_or(UNLIMITED));
        if c.ask(now, bps) {
            self.ask_sender(owner, ssrc, bps, limited, tmmbr);
        }
    }

    /// The sender's home announced a new demotion bound for its full layer `ssrc`.
    pub(super) fn handle_demote(
        &mut self,
        home: ShardId,
        sender: SessionHandle,
        ssrc: Ssrc,
        below_bps: u64,
    ) {
        if let Some(st) = self.stream_by_home(home, sender, ssrc) {
            st.demote_below = below_bps;
        }
    }
}

/// The layer state a layer choice wants.
fn desired(layer: &media::LayerChoice) -> LayerState {
    match (layer.layer(), layer.pending_up()) {
        (media::Layer::Full, _) => LayerState::Full,
        (_, true) => LayerState::AwaitKeyframe,
        _ => LayerState::Thumbnail,
    }
}

/// What a layer choice's events came to.
#[derive(Debug, Default)]
struct Drained {
    /// It asked for a keyframe.
    keyframe: bool,
    /// It switched, to this layer (the last switch, if several).
    switched: Option<media::Layer>,
}

/// Takes a layer choice's events and counts its switches.
fn drain_events(stats: &mut EngineStats, layer: &mut media::LayerChoice) -> Drained {
    let mut out = Drained::default();
    while let Some(e) = layer.poll_event() {
        match e {
            media::LayerEvent::RequestKeyframe => out.keyframe = true,
            media::LayerEvent::Switched(to) => {
                match to {
                    media::Layer::Full => stats.layer_switches_up += 1,
                    media::Layer::Thumbnail => stats.layer_switches_down += 1,
                }
                out.switched = Some(to);
            }
        }
    }
    out
}

/// A switch of one receiver's layer choice and the figures it was made on, for the log.
#[derive(Debug)]
struct Switch {
    ssrc: Ssrc,
    to: media::Layer,
    /// What the estimate leaves this sender's video …
    available_bps: u64,
    /// … besides everything else the receiver gets.
    others_bps: u64,
    full_bps: u64,
    lossy: bool,
    demoted: bool,
}

/// The state of full layer `ssrc` in `layers`, or its default (see `slot`).
pub(super) fn layer_state(layers: &[(Ssrc, LayerState)], ssrc: Ssrc, marked: bool) -> LayerState {
    layers
        .iter()
        .find(|(s, _)| *s == ssrc)
        .map(|&(_, st)| st)
        .unwrap_or(match marked {
            true => LayerState::AwaitKeyframe,
            false => LayerState::Full,
        })
}

#[cfg(test)]
mod tests {
    // One arbitrary base instant; everything after it is simulated.
    #![allow(clippy::disallowed_methods)]

    use super::*;

    #[test]
    fn feedback_runs_the_layer_choices_at_most_once_per_gap() {
        let t0 = Instant::now();
        let ms = Duration::from_millis(1);
        let mut d = Downlink::new(None);
        assert_eq!(d.poll_timeout(), None);
        assert!(d.report_now(t0), "the first runs at once");
        // A hundred more within 10 ms: none runs them; one run waits for the gap's end.
        assert!((1..=100).all(|i| !d.report_now(t0 + Duration::from_micros(100 * i))));
        assert_eq!(d.poll_timeout(), Some(t0 + REPORT_GAP));
        assert!(!d.take_report_due(t0 + REPORT_GAP - ms));
        assert!(d.take_report_due(t0 + REPORT_GAP));
        assert_eq!(d.poll_timeout(), None, "nothing waits any more");
        // Feedback a second later runs at once; time that went backwards waits.
        assert!(d.report_now(t0 + 1000 * ms));
        assert!(!d.report_now(t0));
        assert_eq!(d.poll_timeout(), Some(t0 + 1000 * ms + REPORT_GAP));
    }
}
