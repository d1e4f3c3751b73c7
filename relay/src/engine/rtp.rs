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
        let routed = by_addr
            .get(&from)
            .copied()
            .ok_or(DropReason::Unvalidated)
            .and_then(|h| {
                let s = sessions.get_mut(h).ok_or(DropReason::Unvalidated)?;
                route(now, me, h, s, from, buf, events, speaker_cfg).map(|r| (h, r))
            });
        match routed {
            Ok((h, (receivers, speech))) => {
                if let Some(n) = speech {
                    speaker::note(n, now, me, h, speaker_cfg, conferences, timers, events);
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
/// of its stream, and the speech in it to pass on (audio with an RFC 6464 level).
#[allow(clippy::too_many_arguments)] // the engine's tables, borrowed apart
fn route<'s>(
    now: Instant,
    me: ShardId,
    h: SessionHandle,
    s: &'s mut Session,
    from: SocketAddr,
    buf: &[u8],
    events: &mut VecDeque<Event>,
    speaker_cfg: &media::SpeakerConfig,
) -> Result<(&'s [SocketAddr], Option<speaker::Note>), DropReason> {
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
    let ext = s.spec.extensions.audio_level;
    let (conf, speaker_shard, home) = (s.conf, s.speaker_shard, s.home_key(me, h));
    let st = s.streams.get_mut(k).ok_or(DropReason::UndeclaredSsrc)?;
    let speech = speaker::speech(speaker_cfg, now, st, ext, &header).map(|level| speaker::Note {
        conf,
        speaker_shard,
        home,
        level,
    });
    if let Some(cache) = &mut st.retransmit {
        // A copy into preallocated memory; what it cannot keep (a late or oversized
        // packet) is simply not resendable.
        let _ = cache.insert(now, header.seq(), buf);
    }
    Ok((st.receivers.as_slice(), speech))
}
