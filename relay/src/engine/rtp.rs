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
            cfg,
            ..
        } = self;
        let me = cfg.shard;
        let mut speech = None;
        let routed = by_addr
            .get(&from)
            .and_then(|&h| Some((h, sessions.get_mut(h)?)))
            .ok_or(DropReason::Unvalidated)
            .and_then(|(h, s)| {
                let speech = &mut speech;
                route(now, me, h, s, from, buf, events, speaker_cfg, speech)
            });
        match routed {
            Ok(receivers) => {
                if let Some(n) = speech {
                    speaker::note(n, now, me, speaker_cfg, conferences, timers, events);
                }
                let n = receivers.len() as u64;
                stats.rtp_in += 1;
                stats.rtp_bytes_in += buf.len() as u64;
                stats.rtp_out += n;
                stats.rtp_bytes_out += n * buf.len() as u64;
                Handled::Forward(receivers)
            }
            Err(reason) => {
                stats.drops[reason.index()] += 1;
                Handled::Dropped(reason)
            }
        }
    }

    /// The session that may send RTP/RTCP from `from`: it passed ICE there, `from` is
    /// its nominated address, and it is connected (DTLS done).
    pub(super) fn media_session(&self, from: SocketAddr) -> Result<SessionHandle, DropReason> {
        let &h = self.by_addr.get(&from).ok_or(DropReason::Unvalidated)?;
        let s = self.sessions.get(h).ok_or(DropReason::Unvalidated)?;
        media_from(s, from)?;
        Ok(h)
    }
}

/// Whether session `s` may send media from `from`.
fn media_from(s: &Session, from: SocketAddr) -> Result<(), DropReason> {
    match s.addr {
        Some(addr) if addr == from => Ok(()),
        Some(_) => Err(DropReason::NotNominated),
        None => Err(DropReason::BeforeDtls),
    }
}

/// Routes a media packet of session `s` (`h` on shard `me`) from `from`: the receivers
/// of its stream; the speech in it to pass on (audio with an RFC 6464 level) goes to
/// `speech`.
#[allow(clippy::too_many_arguments)] // the engine's tables, borrowed apart
#[inline]
fn route<'s>(
    now: Instant,
    me: ShardId,
    h: SessionHandle,
    s: &'s mut Session,
    from: SocketAddr,
    buf: &[u8],
    events: &mut VecDeque<Event>,
    speaker_cfg: &media::SpeakerConfig,
    speech: &mut Option<speaker::Note>,
) -> Result<&'s [SocketAddr], DropReason> {
    media_from(s, from)?;
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
    let st = s.streams.get_mut(k).ok_or(DropReason::UndeclaredSsrc)?;
    // One comparison for video and for audio without levels.
    if st.spec.kind == MediaKind::Audio
        && let Some(ext) = s.spec.extensions.audio_level
        && let Some(level) = speaker::speech(speaker_cfg, now, st, ext, &header)
    {
        *speech = Some(speaker::Note {
            conf: s.conf,
            speaker_shard: s.speaker_shard,
            home: match s.home {
                Home::Elsewhere(shard, key) => (shard, key),
                Home::Here(_) | Home::Unclaimed { .. } => (me, h),
            },
            member: h,
            level,
        });
    }
    if let Some(cache) = &mut st.retransmit {
        // A copy into preallocated memory; what it cannot keep (a late or oversized
        // packet) is simply not resendable.
        let _ = cache.insert(now, header.seq(), buf);
    }
    Ok(st.receivers.as_slice())
}
