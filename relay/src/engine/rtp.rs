//! RTP: the forwarding path. One hash lookup (address → session), one scan of the
//! session's few streams, and the stream's precomputed receiver list back to the shell;
//! no allocation, no lock, no copy.

use super::*;

impl Engine {
    /// The forwarding path: no allocation, no lock, one hash lookup.
    pub(super) fn handle_rtp(&mut self, now: Instant, from: SocketAddr, buf: &[u8]) -> Handled<'_> {
        match self.route_rtp(now, from, buf) {
            Ok((i, k)) => {
                let s = self.sessions[i].as_ref().expect("indexed session exists");
                let receivers = &s.streams[k].receivers;
                let n = receivers.len() as u64;
                self.stats.rtp_in += 1;
                self.stats.rtp_bytes_in += buf.len() as u64;
                self.stats.rtp_out += n;
                self.stats.rtp_bytes_out += n * buf.len() as u64;
                Handled::Forward(receivers)
            }
            Err(reason) => self.dropped(reason),
        }
    }

    /// Finds the session and stream of a media packet: (session index, stream index).
    pub(super) fn route_rtp(
        &mut self,
        now: Instant,
        from: SocketAddr,
        buf: &[u8],
    ) -> Result<(usize, usize), DropReason> {
        let i = self.media_session(from)?;
        let s = self.sessions[i].as_mut().expect("indexed session exists");
        let ssrc = RtpHeader::parse(buf)
            .map_err(|_| DropReason::RtpMalformed)?
            .ssrc();
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
                    self.events
                        .push_back(Event::Peer(PeerDest::Shard(home), msg));
                }
            }
            _ => s.ice.touch(now),
        }
        Ok((i, k))
    }

    /// The session that may send RTP/RTCP from `from`: it passed ICE there, `from` is
    /// its nominated address, and it is connected (DTLS done).
    pub(super) fn media_session(&self, from: SocketAddr) -> Result<usize, DropReason> {
        let &i = self.by_addr.get(&from).ok_or(DropReason::Unvalidated)?;
        let s = self.sessions[i].as_ref().expect("indexed session exists");
        match s.addr {
            Some(addr) if addr == from => Ok(i),
            Some(_) => Err(DropReason::NotNominated),
            None => Err(DropReason::BeforeDtls),
        }
    }
}
