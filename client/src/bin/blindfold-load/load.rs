//! Every participant in one poll loop: plain load, and fixed-rate mode's paced sender.

use super::*;

/// Every participant and the poll over their sockets.
pub(crate) struct Load {
    pub(crate) members: Vec<Member>,
    pub(crate) poll: Poll,
    pub(crate) events: Events,
    pub(crate) bufs: IoBufs,
    pub(crate) next_timers: Instant,
    pub(crate) driving: bool,
    /// Fixed-rate mode's senders, paced while `driving`.
    pub(crate) fixed: Option<Fixed>,
}

/// Receive buffers, shared by every member (one thread reads them in turn).
pub(crate) struct IoBufs {
    /// One datagram, for `recv_from`.
    pub(crate) buf: Vec<u8>,
    /// A `recvmmsg` batch, for fixed-rate mode's counting receivers.
    pub(crate) batch: RecvBatch,
    /// The origin of abs-send-time stamps (senders and receivers share the clock).
    pub(crate) epoch: Instant,
}

/// The header extension ids every participant negotiates (sources write audio level,
/// frame marking and abs-send-time; fixed-rate mode stamps abs-send-time).
pub(crate) const LOAD_EXTMAP: ExtmapIds = ExtmapIds {
    audio_level: Some(ExtId(1)),
    frame_marking: Some(ExtId(2)),
    abs_send_time: Some(ExtId(3)),
    transport_cc: None,
};

/// The poll token of fixed-rate mode's [`Ticker`] (members use their index).
pub(crate) const TICK: Token = Token(usize::MAX);

/// A periodic `timerfd` in the poll: wakes it every period with microsecond precision,
/// where epoll's own timeout rounds up to whole milliseconds.
pub(crate) struct Ticker {
    pub(crate) fd: OwnedFd,
}

impl Ticker {
    /// Starts ticking every `period` and registers with `poll` under [`TICK`].
    pub(crate) fn start(poll: &Poll, period: Duration) -> Result<Self, String> {
        // SAFETY: timerfd_create takes two flags and returns a new descriptor or -1.
        let raw = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if raw < 0 {
            return Err(format!(
                "timerfd_create: {}",
                std::io::Error::last_os_error()
            ));
        }
        // SAFETY: `raw` is a descriptor we were just given and nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let period = period.max(Duration::from_micros(1));
        let ts = libc::timespec {
            tv_sec: period.as_secs() as libc::time_t,
            tv_nsec: period.subsec_nanos() as libc::c_long,
        };
        let spec = libc::itimerspec {
            it_interval: ts,
            it_value: ts,
        };
        // SAFETY: `fd` is a timerfd, `spec` a valid itimerspec; the old value may be null.
        if unsafe { libc::timerfd_settime(fd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) } < 0 {
            return Err(format!(
                "timerfd_settime: {}",
                std::io::Error::last_os_error()
            ));
        }
        poll.registry()
            .register(&mut SourceFd(&fd.as_raw_fd()), TICK, Interest::READABLE)
            .map_err(|e| format!("register timerfd: {e}"))?;
        Ok(Self { fd })
    }

    /// Consumes the expirations so far (the poll is edge-triggered).
    pub(crate) fn clear(&self) {
        let mut n = [0u8; 8];
        // SAFETY: reads at most 8 bytes into `n`, which has 8; a non-blocking timerfd
        // with nothing expired returns EAGAIN, which is fine to ignore.
        let _ = unsafe { libc::read(self.fd.as_raw_fd(), n.as_mut_ptr().cast(), n.len()) };
    }
}
/// Packets later than this are skipped (the generator was the limit), not sent late.
pub(crate) const FIXED_LATE: Duration = Duration::from_millis(20);

/// Fixed-rate mode: one sender per conference, fixed payload, paced to a total rate.
pub(crate) struct Fixed {
    /// Index in `members` of each conference's sender.
    pub(crate) senders: Vec<usize>,
    /// Packets/s of each sender.
    pub(crate) pps: f64,
    pub(crate) payload: Vec<u8>,
    /// Pacing origin and end of sending.
    pub(crate) start: Instant,
    pub(crate) end: Instant,
    /// Per sender: packets whose turn has come (sent, or skipped as too late).
    pub(crate) scheduled: Vec<u64>,
    /// Packets skipped because the generator fell more than [`FIXED_LATE`] behind.
    pub(crate) skipped: u64,
    /// Per sender: datagrams the kernel took.
    pub(crate) sent: Vec<u64>,
    pub(crate) send_errors: u64,
    /// When the next burst is due.
    pub(crate) next: Instant,
    /// The pacing quantum.
    pub(crate) tick: Duration,
    /// Wakes the poll every `tick`.
    pub(crate) ticker: Ticker,
    /// Against a bare forwarder, the one sender's packet builder (senders have no
    /// participant there).
    pub(crate) bare: Option<BareSender>,
}

/// Fixed-rate mode's payload type (the audio SSRC's, Opus-like).
pub(crate) const PT: Pt = Pt(111);

/// Fixed-rate mode's sender against a bare forwarder: the packets a participant sends to
/// the relay (the same header writer with abs-send-time, end-to-end SRTP with a one-byte
/// MKI, the same sizes), sent straight from the member's socket to the forwarder.
pub(crate) struct BareSender {
    pub(crate) target: SocketAddr,
    pub(crate) ssrc: Ssrc,
    pub(crate) seq: u16,
    pub(crate) srtp: SrtpContext,
    pub(crate) buf: Vec<u8>,
}

impl BareSender {
    pub(crate) fn new(
        target: SocketAddr,
        ssrc: Ssrc,
        profile: SrtpProfile,
        key: &[u8],
    ) -> Result<Self, String> {
        Ok(Self {
            target,
            ssrc,
            seq: 0,
            srtp: SrtpContext::new(profile, key, Some(KeyIndex(0)))
                .map_err(|e| format!("srtp: {e}"))?,
            buf: vec![0; 2048],
        })
    }

    /// Builds, protects and sends one packet from `link`; whether the kernel took it.
    /// `Err` if it could not be built.
    pub(crate) fn send(
        &mut self,
        link: &mut UdpLink,
        ts: RtpTime,
        ext: &[(ExtId, &[u8])],
        payload: &[u8],
    ) -> Result<bool, ()> {
        let fields = RtpFields {
            padding: false,
            marker: false,
            payload_type: PT,
            seq: WireSeq(self.seq),
            timestamp: ts,
            ssrc: self.ssrc,
            csrcs: &[],
        };
        let hlen = write_header(&mut self.buf, &fields, ext).map_err(|_| ())?;
        let len = hlen + payload.len();
        self.buf
            .get_mut(hlen..len)
            .ok_or(())?
            .copy_from_slice(payload);
        let n = self.srtp.protect_rtp(&mut self.buf, len).map_err(|_| ())?;
        self.seq = self.seq.wrapping_add(1);
        Ok(link.send(self.buf.get(..n).ok_or(())?, self.target))
    }
}

impl Fixed {
    /// Sends every packet due by `now` (at most `duration × pps` per sender), each
    /// stamped with its abs-send-time since `epoch` just before it is protected and sent.
    pub(crate) fn pace(&mut self, members: &mut [Member], epoch: Instant, now: Instant) {
        let upto = now.min(self.end).saturating_duration_since(self.start);
        let due = (upto.as_secs_f64() * self.pps) as u64;
        let late = (FIXED_LATE.as_secs_f64() * self.pps) as u64;
        for (k, &g) in self.senders.iter().enumerate() {
            let Some(m) = members.get_mut(g) else {
                continue;
            };
            let (Some(scheduled), Some(sent)) = (self.scheduled.get_mut(k), self.sent.get_mut(k))
            else {
                continue;
            };
            if due.saturating_sub(*scheduled) > late {
                self.skipped += due - late - *scheduled;
                *scheduled = due - late;
            }
            while *scheduled < due {
                let ts = RtpTime((*scheduled as u32).wrapping_mul(960));
                let stamp =
                    AbsSendTime::from_duration(Instant::now().saturating_duration_since(epoch))
                        .to_bytes();
                let ext = LOAD_EXTMAP.abs_send_time.map(|id| (id, &stamp[..]));
                match (&mut self.bare, &mut m.endpoint) {
                    (Some(bare), e) => {
                        match bare.send(e.link_mut(), ts, ext.as_slice(), &self.payload) {
                            Ok(true) => *sent += 1,
                            Ok(false) => {}
                            Err(()) => self.send_errors += 1,
                        }
                    }
                    (None, Endpoint::Participant(u)) => {
                        let p = u.participant_mut();
                        let ssrc = p.ssrcs().audio;
                        if p.send_rtp(now, ssrc, PT, false, ts, ext.as_slice(), &self.payload)
                            .is_err()
                        {
                            self.send_errors += 1;
                        }
                        *sent += u.flush();
                    }
                    (None, Endpoint::Bare(_)) => self.send_errors += 1,
                }
                *scheduled += 1;
            }
        }
        self.next = (self.next + self.tick).max(now);
    }

    /// Packets the schedule holds, every sender.
    pub(crate) fn offered(&self) -> f64 {
        let secs = self.end.saturating_duration_since(self.start).as_secs_f64();
        (secs * self.pps).floor() * self.senders.len() as f64
    }
}

impl Load {
    pub(crate) fn new(members: Vec<Member>, poll: Poll, epoch: Instant) -> Self {
        Load {
            members,
            poll,
            events: Events::with_capacity(1024),
            bufs: IoBufs {
                buf: vec![0; 2048],
                batch: RecvBatch::new(64),
                epoch,
            },
            next_timers: Instant::now(),
            driving: false,
            fixed: None,
        }
    }

    /// One turn: due timers, then wait for readable sockets until the next timer or
    /// `limit`, then read them.
    pub(crate) fn turn(&mut self, limit: Instant) -> Result<(), String> {
        let now = Instant::now();
        let mut wake = limit;
        if self.driving
            && let Some(f) = &mut self.fixed
        {
            if now >= f.next {
                f.pace(&mut self.members, self.bufs.epoch, now);
            }
            wake = wake.min(f.next);
        }
        if now >= self.next_timers {
            let mut next = now + Duration::from_secs(1);
            for m in &mut self.members {
                if let Some(t) = m.timers(now, self.driving) {
                    next = next.min(t);
                }
            }
            self.next_timers = next;
        }
        let wait = self
            .next_timers
            .min(wake)
            .saturating_duration_since(Instant::now());
        match self.poll.poll(&mut self.events, Some(wait)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("poll: {e}")),
        }
        let now = Instant::now();
        for ev in self.events.iter() {
            if ev.token() == TICK {
                if let Some(f) = &self.fixed {
                    f.ticker.clear();
                }
            } else if let Some(m) = self.members.get_mut(ev.token().0) {
                m.readable(&mut self.bufs, now);
                if let Some(t) = m.deadline(self.driving) {
                    self.next_timers = self.next_timers.min(t);
                }
            }
        }
        Ok(())
    }

    /// Turns until `limit`.
    pub(crate) fn run_until(&mut self, limit: Instant) -> Result<(), String> {
        while Instant::now() < limit {
            self.turn(limit)?;
        }
        Ok(())
    }

    pub(crate) fn sent(&self) -> u64 {
        if let Some(f) = &self.fixed {
            return f.sent.iter().sum();
        }
        self.members
            .iter()
            .filter_map(|m| m.driver.as_ref())
            .map(|d| d.stats().sent)
            .sum()
    }

    /// What every member's socket did.
    pub(crate) fn io(&self) -> IoStats {
        let mut io = IoStats::default();
        for m in &self.members {
            io += m.link().stats();
        }
        io
    }

    pub(crate) fn media_in(&self) -> u64 {
        self.members.iter().map(|m| m.media_in + m.rtp_in).sum()
    }

    /// Lost / (received + lost) over every stream every receiver has seen.
    pub(crate) fn loss_so_far(&self) -> f64 {
        let (mut rx, mut lost) = (0u64, 0u64);
        for m in &self.members {
            for s in m.rx.streams() {
                rx += s.received;
                lost += s.lost();
            }
        }
        ratio(lost, rx + lost)
    }
}

pub(crate) fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}
