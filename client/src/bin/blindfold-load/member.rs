//! One participant: its session, its socket, its sources and receivers.

use super::*;

pub(crate) struct Member {
    pub(crate) conf: usize,
    pub(crate) session: SessionId,
    pub(crate) endpoint: Endpoint,
    pub(crate) key: Vec<u8>,
    /// Audio, thumbnail, full.
    pub(crate) sends: [bool; 3],
    pub(crate) full_subscriber: bool,
    pub(crate) driver: Option<Driver>,
    pub(crate) rx: Receiver,
    pub(crate) media_in: u64,
    /// Fixed-rate mode: RTP is counted here, not decrypted.
    pub(crate) count_rtp: bool,
    /// RTP datagrams counted (fixed-rate mode).
    pub(crate) rtp_in: u64,
    /// Fixed-rate mode: one-way latency of the counted datagrams, from the sender's
    /// abs-send-time to the return of the `recvmmsg` that read them.
    pub(crate) rtp_latency: LatencyHistogram,
    /// Datagrams that were not RTP and found no participant (a bare forwarder's probes).
    pub(crate) other_in: u64,
}

/// A member's socket, with its participant unless against a bare forwarder.
// Every member of a run has the same variant, and the participant stays inline in the
// member as it always was: boxing it would only add a pointer chase per datagram.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Endpoint {
    Participant(UdpParticipant),
    /// `--bare-target`: no ICE, DTLS or SRTCP there.
    Bare(UdpLink),
}

impl Endpoint {
    pub(crate) fn link(&self) -> &UdpLink {
        match self {
            Endpoint::Participant(u) => u.link(),
            Endpoint::Bare(l) => l,
        }
    }

    pub(crate) fn link_mut(&mut self) -> &mut UdpLink {
        match self {
            Endpoint::Participant(u) => u.link_mut(),
            Endpoint::Bare(l) => l,
        }
    }
}

impl Member {
    pub(crate) fn p(&self) -> Option<&Participant> {
        match &self.endpoint {
            Endpoint::Participant(u) => Some(u.participant()),
            Endpoint::Bare(_) => None,
        }
    }

    pub(crate) fn p_mut(&mut self) -> Option<&mut Participant> {
        match &mut self.endpoint {
            Endpoint::Participant(u) => Some(u.participant_mut()),
            Endpoint::Bare(_) => None,
        }
    }

    pub(crate) fn link(&self) -> &UdpLink {
        self.endpoint.link()
    }

    pub(crate) fn link_mut(&mut self) -> &mut UdpLink {
        self.endpoint.link_mut()
    }

    /// Sends everything queued; returns how many datagrams the kernel took.
    pub(crate) fn flush(&mut self) -> u64 {
        match &mut self.endpoint {
            Endpoint::Participant(u) => u.flush(),
            Endpoint::Bare(_) => 0,
        }
    }

    pub(crate) fn events(&mut self, now: Instant) {
        let Endpoint::Participant(u) = &mut self.endpoint else {
            return;
        };
        for ev in u.poll_events() {
            if self.rx.handle_event(now, &ev) {
                self.media_in += 1;
            } else if let Some(d) = &mut self.driver {
                d.handle_event(&ev);
            }
        }
    }

    /// Reads the socket until it would block.
    pub(crate) fn readable(&mut self, io_buf: &mut IoBufs, now: Instant) {
        if self.count_rtp {
            self.read_batches(&mut io_buf.batch, io_buf.epoch, now);
        } else {
            self.read_each(&mut io_buf.buf, now);
        }
        self.events(now);
        let _ = self.flush();
    }

    /// Hands every datagram to the participant, one `recv_from` each.
    pub(crate) fn read_each(&mut self, buf: &mut [u8], now: Instant) {
        match &mut self.endpoint {
            Endpoint::Participant(u) => {
                // The moment of the read, which the kernel's arrival stamps are put
                // against (`now` was read before the other members'). Not before `now`,
                // which the participant may have seen already.
                u.read(Instant::now().max(now), buf);
            }
            Endpoint::Bare(l) => while l.recv(buf).is_some() {},
        }
    }

    /// Fixed-rate mode: `recvmmsg` batches; RTP is counted and its abs-send-time read
    /// (no decryption), everything else (STUN, DTLS, SRTCP) goes to the participant.
    pub(crate) fn read_batches(&mut self, batch: &mut RecvBatch, epoch: Instant, now: Instant) {
        loop {
            let n = self.link_mut().recv_batch(batch);
            if n == 0 {
                break;
            }
            // A short batch emptied the queue; the next arrival re-arms the poll, so
            // the extra `recvmmsg` that would only say EAGAIN is skipped.
            let drained = n < batch.capacity();
            let arrived =
                AbsSendTime::from_duration(Instant::now().saturating_duration_since(epoch));
            for (from, d) in batch.iter_mut() {
                let rtp = if classify(d) == Kind::Rtp {
                    RtpHeader::parse(d).ok()
                } else {
                    None
                };
                let Some(h) = rtp else {
                    match self.p_mut() {
                        Some(p) => {
                            let _ = p.handle_datagram(now, from, d);
                        }
                        None => self.other_in += 1,
                    }
                    continue;
                };
                self.rtp_in += 1;
                if let Some(sent) = LOAD_EXTMAP
                    .abs_send_time
                    .and_then(|id| h.extension(id))
                    .and_then(|e| abs_send_time(e).ok())
                {
                    // Both ends read one clock; the 24-bit value wraps every 64 s.
                    let ticks = arrived.0.wrapping_sub(sent.0) & AbsSendTime::MAX;
                    // Both ends round to 2^-18 s: a "negative" latency is one tick of
                    // rounding, not 64 s.
                    let ticks = if ticks > AbsSendTime::MAX / 2 {
                        0
                    } else {
                        ticks
                    };
                    self.rtp_latency.record(AbsSendTime(ticks).as_nanos());
                }
            }
            if drained {
                break;
            }
        }
    }

    /// Runs due timers (and the sources if `driving`); returns the next deadline.
    pub(crate) fn timers(&mut self, now: Instant, driving: bool) -> Option<Instant> {
        let Endpoint::Participant(u) = &mut self.endpoint else {
            return None;
        };
        u.timeout(now);
        if driving
            && let Some(d) = &mut self.driver
            && d.poll_timeout(u.participant()).is_some_and(|t| t <= now)
        {
            let _ = d.drive(u.participant_mut(), now);
        }
        self.events(now);
        let _ = self.flush();
        self.deadline(driving)
    }

    pub(crate) fn deadline(&self, driving: bool) -> Option<Instant> {
        let d = self
            .driver
            .as_ref()
            .filter(|_| driving)
            .zip(self.p())
            .and_then(|(d, p)| d.poll_timeout(p));
        match (self.p().and_then(Participant::poll_timeout), d) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}
