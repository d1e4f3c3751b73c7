//! RTP: the forwarding path. One hash lookup (address → session), one scan of the
//! session's few streams, and the stream's precomputed receiver list back to the shell;
//! no allocation, no lock, no copy.

use super::*;

impl Engine {
    /// The forwarding path: one hash lookup, no allocation, no lock.
    pub(super) fn handle_rtp(&mut self, now: Instant, from: SocketAddr, buf: &[u8]) -> Handled<'_> {
        // Borrow the tables apart: the answer borrows one stream's list while the
        // counters, the event queue and the speaker detectors are written.
        let Engine {
            sessions,
            by_addr,
            events,
            stats,
            conferences,
            timers,
            speaker_cfg,
            switched,
            cfg,
            ..
        } = self;
        let me = cfg.shard;
        let routed = by_addr
            .get(&from)
            .and_then(|&h| Some((h, sessions.get_mut(h)?)))
            .ok_or(DropReason::Unvalidated)
            .and_then(|(h, s)| {
                route(now, cfg, h, s, from, buf, events, speaker_cfg, switched).map(|r| (h, r))
            });
        let (h, r) = match routed {
            Ok(at) => at,
            Err(reason) => {
                stats.drops[reason.index()] += 1;
                return Handled::Dropped(reason);
            }
        };
        if let Some(n) = r.speech {
            speaker::note(n, now, me, speaker_cfg, conferences, timers, events);
        }
        if !switched.is_empty() {
            // Receivers switched up at this keyframe: their state changes before the
            // list is handed out.
            self.after_keyframes(now);
        }
        if let Some(limit) = r.uplink {
            self.uplink_estimated(now, h, limit);
        }
        if r.feedback {
            self.send_transport_cc(now, h);
        }
        let receivers = match self.sessions.get(h).and_then(|s| s.streams.get(r.stream)) {
            Some(st) => st.receivers.as_slice(),
            None => &[],
        };
        let n = receivers.len() as u64;
        let stats = &mut self.stats;
        stats.rtp_in += 1;
        stats.rtp_bytes_in += buf.len() as u64;
        stats.rtp_out += n;
        stats.rtp_bytes_out += n * buf.len() as u64;
        Handled::Forward(receivers)
    }

    /// The session that may send RTP/RTCP from `from` at `now`: it passed ICE there,
    /// and `from` is where its media goes, or it has none yet and its DTLS is just done
    /// (see [`media_from`]).
    pub(super) fn media_session(
        &self,
        now: Instant,
        from: SocketAddr,
    ) -> Result<SessionHandle, DropReason> {
        let &h = self.by_addr.get(&from).ok_or(DropReason::Unvalidated)?;
        let s = self.sessions.get(h).ok_or(DropReason::Unvalidated)?;
        media_from(now, s, from)?;
        Ok(h)
    }
}

/// How long after its DTLS handshake a session that has not connected yet may send
/// media (see [`media_from`]): the relay's check of the address it nominates is sent
/// again up to 3.75 s after the first, and a participant that has not connected by
/// then is not just slow to nominate.
pub(super) const UNCONNECTED_MEDIA: Duration = Duration::from_secs(5);

/// Whether session `s` may send media from `from` at `now`, an address that passed its
/// ICE checks. Once it is connected, only from where its media goes. Before that, from
/// any such address for [`UNCONNECTED_MEDIA`] after its DTLS handshake (on the shard
/// that runs it): an agent that nominates after DTLS (regular nomination, as browsers
/// do) sends media as soon as DTLS is done, while the relay still waits for its
/// nomination and its answer to the relay's check; Chromium sends its first bandwidth
/// probes then. Receiving them is safe: what may come from an address needs only the
/// ICE credentials, like a nomination; where media *goes* waits for the check. Later,
/// a session that still has not connected sends nothing (`not_nominated`).
fn media_from(now: Instant, s: &Session, from: SocketAddr) -> Result<(), DropReason> {
    match s.addr {
        Some(addr) if addr == from => Ok(()),
        Some(_) => Err(DropReason::NotNominated),
        None => match &s.home {
            Home::Here(local) if local.keyed_within(now, UNCONNECTED_MEDIA) => Ok(()),
            Home::Here(local) if local.keyed() => Err(DropReason::NotNominated),
            _ => Err(DropReason::BeforeDtls),
        },
    }
}

/// What routing one media packet found, for the engine to act on once its tables are
/// whole again.
struct Routed {
    /// Which of the session's streams it is (the caller reads its receivers).
    stream: usize,
    /// The speech in it to pass on (audio with an RFC 6464 level).
    speech: Option<speaker::Note>,
    /// A limit of the sender's uplink (or its lifting), due to go to its home.
    uplink: Option<media::Limit>,
    /// The sender's transport-cc feedback is due.
    feedback: bool,
}

/// Routes a media packet of session `s` (`h` on this shard) from `from`; receivers
/// switched up at a keyframe go to `switched`.
#[allow(clippy::too_many_arguments)] // the engine's tables, borrowed apart
#[inline]
fn route(
    now: Instant,
    cfg: &EngineConfig,
    h: SessionHandle,
    s: &mut Session,
    from: SocketAddr,
    buf: &[u8],
    events: &mut VecDeque<Event>,
    speaker_cfg: &media::SpeakerConfig,
    switched: &mut Vec<(SessionHandle, Ssrc)>,
) -> Result<Routed, DropReason> {
    let me = cfg.shard;
    media_from(now, s, from)?;
    let header = RtpHeader::parse(buf).map_err(|_| DropReason::RtpMalformed)?;
    let ssrc = header.ssrc();
    let k = s
        .streams
        .iter()
        .position(|st| st.spec.ssrc == ssrc)
        .ok_or(DropReason::UndeclaredSsrc)?;
    match s.home {
        Home::Elsewhere(home, key) => {
            // The home times the session: feed it, rarely (one comparison a packet).
            if s.alive_sent
                .is_none_or(|t| now.saturating_duration_since(t) >= ALIVE_EVERY)
            {
                s.alive_sent = Some(now);
                let msg = PeerMsg::Alive { session: key };
                events.push_back(Event::Peer(PeerDest::Shard(home), msg));
            }
        }
        _ => s.ice.touch(now),
    }
    let mut r = Routed {
        stream: k,
        speech: None,
        uplink: None,
        feedback: false,
    };
    let st = s.streams.get_mut(k).ok_or(DropReason::UndeclaredSsrc)?;
    // Twice a second: the stream's rate goes to every shard, and its allowance is
    // refilled. Past the allowance a packet is dropped before anything reads it.
    if st.rate_due.is_none_or(|due| now >= due) {
        st.allowance = allowance(cfg, st.spec.kind);
        let (home, key) = home_of(&s.home, me, h);
        rate_announce(now, home, key, st, events);
    }
    st.allowance = st.allowance.checked_sub(1).ok_or(DropReason::OverRate)?;
    // The header extensions the engine reads, found where the stream's last packet had
    // them (a check of the block, not a walk: `ExtLayout`).
    let exts = match st.layout.as_deref_mut() {
        Some(layout) => layout.find(&header),
        None => wire::rtp::ExtFound::NONE,
    };
    let ext = |i: usize| exts.get(i);
    // One comparison for video and for audio without levels.
    if st.spec.kind == MediaKind::Audio
        && let Some(level) = ext(EXT_LEVEL)
        && let Some(level) = speaker::speech(speaker_cfg, now, st, level)
    {
        r.speech = Some(speaker::Note {
            conf: s.conf,
            speaker_shard: s.speaker_shard,
            home: home_of(&s.home, me, h),
            member: h,
            level,
        });
    }
    if let Some(cache) = &mut st.retransmit {
        // A copy into preallocated memory; what it cannot keep (a late or oversized
        // packet) is simply not resendable.
        let _ = cache.insert(now, header.seq(), buf);
    }
    st.meter.add(now, buf.len() as u64);
    if s.uplink.is_some() || s.uplink_queue.is_some() {
        let sent = ext(EXT_ABS_SEND_TIME)
            .and_then(|d| wire::rtp::abs_send_time(d).ok())
            .map(|t| t.0);
        if let (Some(queue), Some(sent)) = (s.uplink_queue.as_deref_mut(), sent) {
            queue.on_packet(now, sent);
        }
        if let Some(estimate) = s.uplink.as_deref_mut() {
            estimate.on_packet(now, k, ssrc, header.seq(), sent, buf.len());
            // Once a second, and at once when it falls.
            r.uplink = estimate.poll(now);
        }
    }
    if let Some(twcc) = s.twcc.as_deref_mut()
        && let Some(seq) = ext(EXT_TRANSPORT_CC).and_then(|d| wire::rtp::transport_cc_seq(d).ok())
    {
        twcc.on_packet(now, seq);
        r.feedback = twcc.due(now);
    }
    if !st.pending.is_empty()
        && newest(&mut st.pending_newest, header.seq())
        && ext(EXT_FRAME_MARKING)
            .and_then(|d| wire::rtp::frame_marking(d).ok())
            .is_some_and(|fm| fm.starts_keyframe())
    {
        // Capacity for them was reserved when they were listed.
        for &(addr, r) in &st.pending {
            st.receivers.push(addr);
            switched.push((r, ssrc));
        }
        st.pending.clear();
    }
    Ok(r)
}

impl Engine {
    /// Sends sender `h` the transport-cc feedback that is due (through its home if it
    /// is homed elsewhere).
    #[cold] // every 100 ms per sender
    fn send_transport_cc(&mut self, now: Instant, h: SessionHandle) {
        let mut buf = [0u8; TCC_FEEDBACK_BUF];
        loop {
            // Not before the session has an address to send it to: what arrived
            // meanwhile is kept for the first feedback (a browser's first bandwidth
            // probes come before it nominates).
            let Some(s) = self.sessions.get_mut(h).filter(|s| s.addr.is_some()) else {
                return;
            };
            let media = s.spec.streams.first().map_or(Ssrc(0), |st| st.ssrc);
            let Some(twcc) = s.twcc.as_deref_mut() else {
                return;
            };
            let Some(fb) = twcc.poll_feedback(now) else {
                return;
            };
            let written = rtcp::write_transport_cc(
                &mut buf,
                self.cfg.relay_ssrc,
                media,
                fb.base_seq,
                fb.reference_time,
                fb.fb_pkt_count,
                twcc.arrivals(&fb),
            );
            if let Ok(n) = written {
                self.stats.transport_cc_sent += 1;
                self.send_rtcp_to(h, &buf[..n]);
            }
        }
    }
}

/// Room for one transport-cc feedback: its fixed part, a chunk per seven packets and
/// two bytes of delta per packet at most.
const TCC_FEEDBACK_BUF: usize =
    20 + media::TWCC_MAX_PER_FEEDBACK * 2 + media::TWCC_MAX_PER_FEEDBACK.div_ceil(7) * 2 + 4;

/// A stream that carried nothing for this long begins again with its next packet (the
/// stream meter's window: its rate then reads 0).
const RESUMED_AFTER: Duration = Duration::from_secs(1);

/// How far behind the newest a sequence number is a resend or a reordering of the
/// stream's; farther, a restart of its numbering (or the newest was a spoofed one).
const STALE_BEHIND: u16 = 2048;

/// Whether `seq` is not a stale one: not up to [`STALE_BEHIND`] behind `newest`, the
/// newest before it (which it then becomes). A keyframe's start that is stale (the
/// sender's resend of one for a NACK the relay passed on, or one reordered on the way)
/// would start the switching receivers on a frame whose rest has gone by.
fn newest(newest: &mut Option<WireSeq>, seq: WireSeq) -> bool {
    let behind = newest.map_or(STALE_BEHIND + 1, |n| n.0.wrapping_sub(seq.0));
    let fresh = behind > STALE_BEHIND;
    if fresh {
        *newest = Some(seq);
    }
    fresh
}

/// Where each extension the engine reads is in a stream's [`wire::rtp::ExtLayout`].
const EXT_LEVEL: usize = 0;
const EXT_ABS_SEND_TIME: usize = 1;
const EXT_TRANSPORT_CC: usize = 2;
const EXT_FRAME_MARKING: usize = 3;

/// The layout a stream of a sender that negotiated `ids` keeps (none if it
/// negotiated none the engine reads).
pub(super) fn ext_layout(ids: &ExtensionIds) -> Option<Box<wire::rtp::ExtLayout>> {
    let mut wanted = [None; wire::rtp::LAYOUT_IDS];
    wanted[EXT_LEVEL] = ids.audio_level;
    wanted[EXT_ABS_SEND_TIME] = ids.abs_send_time;
    wanted[EXT_TRANSPORT_CC] = ids.transport_cc;
    wanted[EXT_FRAME_MARKING] = ids.frame_marking;
    wanted
        .iter()
        .any(Option::is_some)
        .then(|| Box::new(wire::rtp::ExtLayout::new(wanted)))
}

/// Where session `h` of shard `me`, at `home`, is homed, and its handle there.
fn home_of(home: &Home, me: ShardId, h: SessionHandle) -> (ShardId, SessionHandle) {
    match *home {
        Home::Elsewhere(shard, key) => (shard, key),
        Home::Here(_) | Home::Unclaimed { .. } => (me, h),
    }
}

/// The packets a stream of `kind` may carry in one [`RATE_EVERY`].
fn allowance(cfg: &EngineConfig, kind: MediaKind) -> u32 {
    let per_second = match kind {
        MediaKind::Audio => cfg.max_audio_pps,
        MediaKind::Video => cfg.max_video_pps,
    };
    match per_second {
        0 => u32::MAX,
        n => (u64::from(n) * RATE_EVERY.as_millis() as u64 / 1000).max(1) as u32,
    }
}

/// Measures stream `st` of the session `key` on shard `home` and tells every shard.
#[cold] // twice a second per stream
fn rate_announce(
    now: Instant,
    home: ShardId,
    key: SessionHandle,
    st: &mut Stream,
    events: &mut VecDeque<Event>,
) {
    // Measured before this packet is counted: nothing here for a second, and nothing
    // measured for a second anywhere (a sender whose media moved here from another
    // shard had it measured there), so this packet begins the stream again.
    let bps = st.meter.rate_bps(now) as u64;
    let resumed = bps == 0
        && st
            .rate
            .is_none_or(|(_, at)| now.saturating_duration_since(at) >= RESUMED_AFTER);
    st.set_rate(now, bps, resumed);
    st.rate_due = now.checked_add(RATE_EVERY);
    let msg = PeerMsg::StreamRate {
        home,
        sender: key,
        ssrc: st.spec.ssrc,
        bps,
        resumed,
    };
    events.push_back(Event::Peer(PeerDest::All, msg));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Newer numbers (across the wrap) are fresh; a repeat, a resend or a reordering
    /// up to 2048 behind is stale; farther behind is a restart (or the newest was
    /// spoofed), fresh again, so one forged number holds no switch up for long.
    #[test]
    fn a_number_is_stale_only_a_little_behind_the_newest() {
        let mut n = None;
        assert!(newest(&mut n, WireSeq(65_534)));
        assert!(newest(&mut n, WireSeq(3)), "across the wrap");
        assert!(!newest(&mut n, WireSeq(3)), "a repeat");
        assert!(
            !newest(&mut n, WireSeq(65_000)),
            "a resend from before the wrap"
        );
        assert_eq!(n, Some(WireSeq(3)));
        assert!(newest(&mut n, WireSeq(30_000)), "a jump ahead");
        assert!(newest(&mut n, WireSeq(4)), "far behind it: a restart");
        assert!(newest(&mut n, WireSeq(5)));
    }
}
