//! One participant: its session, its socket, its sources and receivers.

use super::*;

pub(crate) struct Member {
    pub(crate) conf: usize,
    pub(crate) session: SessionId,
    /// None against a bare forwarder (`--bare-target`): no ICE, DTLS or SRTCP there.
    pub(crate) p: Option<Participant>,
    pub(crate) sock: UdpSocket,
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

#[derive(Debug, Default)]
pub(crate) struct IoCounters {
    pub(crate) datagrams_out: u64,
    pub(crate) datagrams_in: u64,
    /// Sends refused because the socket buffer was full (the datagram is lost).
    pub(crate) send_would_block: u64,
    pub(crate) send_errors: u64,
    pub(crate) recv_errors: u64,
}

impl Member {
    /// Sends everything queued; returns how many datagrams the kernel took.
    pub(crate) fn flush(&mut self, io: &mut IoCounters) -> u64 {
        let mut sent = 0;
        let Some(p) = self.p.as_mut() else {
            return 0;
        };
        while let Some(t) = p.poll_transmit() {
            match self.sock.send_to(&t.bytes, t.dest) {
                Ok(_) => {
                    io.datagrams_out += 1;
                    sent += 1;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => io.send_would_block += 1,
                Err(_) => io.send_errors += 1,
            }
        }
        sent
    }

    pub(crate) fn events(&mut self, now: Instant) {
        let Some(p) = self.p.as_mut() else {
            return;
        };
        while let Some(ev) = p.poll_event() {
            if self.rx.handle_event(now, &ev) {
                self.media_in += 1;
            } else if let Some(d) = &mut self.driver {
                d.handle_event(&ev);
            }
        }
    }

    /// Reads the socket until it would block.
    pub(crate) fn readable(&mut self, io_buf: &mut IoBufs, now: Instant, io: &mut IoCounters) {
        if self.count_rtp {
            self.read_batches(&mut io_buf.batch, io_buf.epoch, now, io);
        } else {
            self.read_each(&mut io_buf.buf, now, io);
        }
        self.events(now);
        let _ = self.flush(io);
    }

    /// Hands every datagram to the participant, one `recv_from` each.
    pub(crate) fn read_each(&mut self, buf: &mut [u8], now: Instant, io: &mut IoCounters) {
        loop {
            match self.sock.recv_from(buf) {
                Ok((n, from)) => {
                    io.datagrams_in += 1;
                    if let (Some(d), Some(p)) = (buf.get_mut(..n), self.p.as_mut()) {
                        let _ = p.handle_datagram(now, from, d);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                // An ICMP error from an earlier send: nothing to receive.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => {
                    io.recv_errors += 1;
                    break;
                }
            }
        }
    }

    /// Fixed-rate mode: `recvmmsg` batches; RTP is counted and its abs-send-time read
    /// (no decryption), everything else (STUN, DTLS, SRTCP) goes to the participant.
    pub(crate) fn read_batches(
        &mut self,
        batch: &mut RecvBatch,
        epoch: Instant,
        now: Instant,
        io: &mut IoCounters,
    ) {
        loop {
            let n = match batch.recv(&self.sock) {
                Ok(0) => break,
                Ok(n) => n,
                Err(_) => {
                    io.recv_errors += 1;
                    break;
                }
            };
            // A short batch emptied the queue; the next arrival re-arms the poll, so
            // the extra `recvmmsg` that would only say EAGAIN is skipped.
            let drained = n < batch.capacity();
            io.datagrams_in += n as u64;
            let arrived =
                AbsSendTime::from_duration(Instant::now().saturating_duration_since(epoch));
            for (from, d) in batch.iter_mut() {
                let rtp = if classify(d) == Kind::Rtp {
                    RtpHeader::parse(d).ok()
                } else {
                    None
                };
                let Some(h) = rtp else {
                    match self.p.as_mut() {
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
    pub(crate) fn timers(
        &mut self,
        now: Instant,
        driving: bool,
        io: &mut IoCounters,
    ) -> Option<Instant> {
        let p = self.p.as_mut()?;
        if p.poll_timeout().is_some_and(|t| t <= now) {
            p.handle_timeout(now);
        }
        if driving
            && let Some(d) = &mut self.driver
            && d.poll_timeout().is_some_and(|t| t <= now)
        {
            let _ = d.drive(p, now);
        }
        self.events(now);
        let _ = self.flush(io);
        self.deadline(driving)
    }

    pub(crate) fn deadline(&self, driving: bool) -> Option<Instant> {
        let d = self
            .driver
            .as_ref()
            .filter(|_| driving)
            .and_then(Driver::poll_timeout);
        match (self.p.as_ref().and_then(Participant::poll_timeout), d) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}
