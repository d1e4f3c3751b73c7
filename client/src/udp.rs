//! A [`Participant`] on a real UDP socket: the one socket driver that the process tests,
//! the signaling tests and `blindfold-load` share.
//!
//! [`Participant`] does no IO. [`UdpParticipant`] moves its datagrams over its own
//! non-blocking [`std::net::UdpSocket`] and counts what the socket did ([`IoStats`]).
//! `now` comes in, and the caller chooses how to wait — a short sleep in a test, epoll
//! (mio) on [`UdpLink::socket`] in a load generator — until the socket is readable or
//! [`UdpParticipant::poll_timeout`] passes.
//!
//! A datagram's arrival time is the kernel's: it stamps each datagram as it receives it
//! (`SO_TIMESTAMPNS`, on the wall clock), [`UdpLink::recv_stamped`] reads the stamp,
//! and [`arrival`] puts it on the caller's clock, against the wall clock read once per
//! [`UdpParticipant::read`] beside the caller's `now`. The participant's delay-based
//! estimate (its REMB) and its reports of the relay's probes are measured by arrival
//! times: datagrams that waited in the socket while the caller was busy (a loaded
//! host) keep their spacing, and do not make the link look slower than it is.
//!
//! [`UdpLink`] is the socket half alone, for callers with no participant on a socket
//! (`blindfold-load` against a bare forwarder) or with their own receive path (its
//! `recvmmsg` batches, [`UdpLink::recv_batch`]).
//!
//! # Driving it
//!
//! ```no_run
//! use std::time::{Duration, Instant};
//! use blindfold_client::udp::{UdpLink, UdpParticipant};
//! use blindfold_client::{Event, Participant, ParticipantConfig};
//! # #[allow(clippy::disallowed_methods)]
//! # fn run(config: ParticipantConfig) -> Result<(), Box<dyn std::error::Error>> {
//! let p = Participant::new(config, Instant::now())?;
//! let mut udp = UdpParticipant::new(p, UdpLink::bind("127.0.0.1:0")?);
//! loop {
//!     // Reads until the socket would block, runs due timers, sends what is queued.
//!     for ev in udp.step(Instant::now()) {
//!         if let Event::Failed(reason) = ev {
//!             return Err(reason.into());
//!         }
//!     }
//!     std::thread::sleep(Duration::from_millis(2));
//! }
//! # }
//! ```
//!
//! # What counts as what
//!
//! Receiving goes on until the socket would block. An ICMP error left on the socket by
//! an earlier send (`ConnectionRefused`: nothing listened there) says nothing about
//! what is waiting to be read, so it is skipped and counted in [`IoStats::refused`];
//! `Interrupted` is retried; any other error ends the read and counts in
//! [`IoStats::recv_errors`]. A send refused because the socket buffer is full
//! (`WouldBlock`) loses that datagram, as a full network queue would, and counts in
//! [`IoStats::send_would_block`]; other send errors count in [`IoStats::send_errors`].
//! Nothing here panics or returns an error for what the network did: the counters
//! say it.

use std::io::{self, ErrorKind};
use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::ops::AddAssign;
use std::time::{Duration, Instant, SystemTime};

use blindfold_relay::shell::udp::{RecvBatch, recv_stamped, stamp_arrivals};

use crate::{Event, Participant};

/// The largest datagram [`UdpParticipant::step`] reads whole (longer ones are cut by
/// the kernel); the participant's own datagrams are at most [`crate::MAX_DATAGRAM`].
pub const RECV_BUF: usize = 2048;

/// The farthest back [`arrival`] moves a datagram from `now`: a stamp older is taken
/// for a step of the wall clock between it and the read, and not believed.
pub const MAX_WAITED: Duration = Duration::from_secs(1);

/// The farthest ahead of `now` [`arrival`] puts a datagram stamped after the wall
/// clock was read (it came during the read turn): farther is a step of the wall clock,
/// and would put the participant's clock ahead of time.
pub const MAX_AHEAD: Duration = Duration::from_millis(100);

/// When a datagram the kernel stamped `stamp` arrived, on the caller's clock: `now`
/// and `wall` are one moment on that clock and on the wall clock. Without a stamp, or
/// with one more than [`MAX_WAITED`] before `wall` or [`MAX_AHEAD`] after it, `now`.
pub fn arrival(now: Instant, wall: SystemTime, stamp: Option<SystemTime>) -> Instant {
    let Some(stamp) = stamp else {
        return now;
    };
    match wall.duration_since(stamp) {
        Ok(waited) if waited <= MAX_WAITED => now.checked_sub(waited).unwrap_or(now),
        // Stamped after `wall` was read (it came during the read).
        Err(e) if e.duration() <= MAX_AHEAD => now.checked_add(e.duration()).unwrap_or(now),
        _ => now,
    }
}

/// What a socket did. Add them up over many sockets with `+=`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct IoStats {
    /// Datagrams the kernel took.
    pub datagrams_out: u64,
    /// Datagrams read.
    pub datagrams_in: u64,
    /// Sends refused because the socket buffer was full (the datagram is lost).
    pub send_would_block: u64,
    /// Sends that failed otherwise (the datagram is lost).
    pub send_errors: u64,
    /// Reads that failed (the read stopped there).
    pub recv_errors: u64,
    /// ICMP errors from earlier sends, skipped while reading.
    pub refused: u64,
}

impl AddAssign for IoStats {
    fn add_assign(&mut self, o: IoStats) {
        self.datagrams_out += o.datagrams_out;
        self.datagrams_in += o.datagrams_in;
        self.send_would_block += o.send_would_block;
        self.send_errors += o.send_errors;
        self.recv_errors += o.recv_errors;
        self.refused += o.refused;
    }
}

/// A non-blocking UDP socket and its [`IoStats`].
#[derive(Debug)]
pub struct UdpLink {
    socket: UdpSocket,
    stats: IoStats,
}

impl UdpLink {
    /// Makes `socket` non-blocking, asks the kernel to stamp arrivals on it (where it
    /// cannot, a datagram's wait reads as none), and counts what it does from now on.
    ///
    /// # Errors
    /// If the socket cannot be made non-blocking.
    pub fn new(socket: UdpSocket) -> io::Result<Self> {
        socket.set_nonblocking(true)?;
        let _ = stamp_arrivals(&socket);
        Ok(UdpLink {
            socket,
            stats: IoStats::default(),
        })
    }

    /// A new non-blocking socket bound to `addr` (`"127.0.0.1:0"`: any free loopback
    /// port).
    ///
    /// # Errors
    /// If binding fails.
    pub fn bind(addr: impl ToSocketAddrs) -> io::Result<Self> {
        Self::new(UdpSocket::bind(addr)?)
    }

    /// The socket: to register with a poller, set options, or send what should not be
    /// counted.
    pub fn socket(&self) -> &UdpSocket {
        &self.socket
    }

    /// The socket's own address.
    ///
    /// # Errors
    /// As [`UdpSocket::local_addr`].
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Everything counted so far.
    pub fn stats(&self) -> IoStats {
        self.stats
    }

    /// Puts `socket` (made non-blocking) in place of the current one, as after a network
    /// change; the counters go on. Returns the old socket.
    ///
    /// # Errors
    /// If `socket` cannot be made non-blocking (the current one stays).
    pub fn replace_socket(&mut self, socket: UdpSocket) -> io::Result<UdpSocket> {
        socket.set_nonblocking(true)?;
        Ok(std::mem::replace(&mut self.socket, socket))
    }

    /// Sends one datagram; whether the kernel took it (see the [module docs](self)
    /// for what a refusal counts as).
    pub fn send(&mut self, bytes: &[u8], dest: SocketAddr) -> bool {
        match self.socket.send_to(bytes, dest) {
            Ok(_) => {
                self.stats.datagrams_out += 1;
                true
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                self.stats.send_would_block += 1;
                false
            }
            Err(_) => {
                self.stats.send_errors += 1;
                false
            }
        }
    }

    /// Reads one datagram into `buf`: its length, its source, and when the kernel
    /// received it, on the wall clock (`None` where the socket does not stamp arrivals;
    /// [`arrival`] puts it on the caller's clock). `None` once the socket would block,
    /// or after an error (counted).
    pub fn recv_stamped(
        &mut self,
        buf: &mut [u8],
    ) -> Option<(usize, SocketAddr, Option<SystemTime>)> {
        loop {
            match recv_stamped(&self.socket, buf) {
                Ok(got) => {
                    self.stats.datagrams_in += 1;
                    return Some((got.len, got.from, got.arrived));
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return None,
                Err(e) if e.kind() == ErrorKind::ConnectionRefused => self.stats.refused += 1,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    self.stats.recv_errors += 1;
                    return None;
                }
            }
        }
    }

    /// Reads one datagram into `buf`: its length and source. `None` once the socket
    /// would block, or after an error (counted).
    pub fn recv(&mut self, buf: &mut [u8]) -> Option<(usize, SocketAddr)> {
        self.recv_stamped(buf).map(|(n, from, _)| (n, from))
    }

    /// Reads one `recvmmsg` batch; how many datagrams it holds. 0 once the socket would
    /// block, or after an error (counted); [`RecvBatch::recv`] itself skips ICMP errors
    /// and retries `EINTR`.
    pub fn recv_batch(&mut self, batch: &mut RecvBatch) -> usize {
        match batch.recv(&self.socket) {
            Ok(n) => {
                self.stats.datagrams_in += n as u64;
                n
            }
            Err(_) => {
                self.stats.recv_errors += 1;
                0
            }
        }
    }
}

/// A [`Participant`] on its own [`UdpLink`].
///
/// [`step`](Self::step) does one whole turn; its parts, in the order `step` runs them,
/// are [`read`](Self::read), [`timeout`](Self::timeout), [`flush`](Self::flush) and
/// [`poll_events`](Self::poll_events), for callers that interleave their own work (a
/// media source sending between the timers and the flush).
pub struct UdpParticipant {
    p: Participant,
    link: UdpLink,
}

impl std::fmt::Debug for UdpParticipant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UdpParticipant")
            .field("connected", &self.p.is_connected())
            .field("failed", &self.p.is_failed())
            .field("link", &self.link)
            .finish()
    }
}

impl UdpParticipant {
    /// Drives `p` over `link`.
    pub fn new(p: Participant, link: UdpLink) -> Self {
        UdpParticipant { p, link }
    }

    /// The participant.
    pub fn participant(&self) -> &Participant {
        &self.p
    }

    /// The participant, to send media, install keys or request keyframes (the next
    /// [`flush`](Self::flush) sends what that queued).
    pub fn participant_mut(&mut self) -> &mut Participant {
        &mut self.p
    }

    /// The socket and its counters.
    pub fn link(&self) -> &UdpLink {
        &self.link
    }

    /// The socket and its counters, mutably (to replace the socket).
    pub fn link_mut(&mut self) -> &mut UdpLink {
        &mut self.link
    }

    /// What the socket did so far.
    pub fn stats(&self) -> IoStats {
        self.link.stats
    }

    /// Hands every waiting datagram to the participant, reading each into `buf`, until
    /// the socket would block; returns how many were handed. Each is handed at its
    /// [`arrival`], `now` being the moment this is called. A datagram the participant
    /// drops is counted in its own [`Stats`](crate::Stats).
    #[allow(clippy::disallowed_methods)] // the kernel's stamps are on the wall clock
    pub fn read(&mut self, now: Instant, buf: &mut [u8]) -> usize {
        let wall = SystemTime::now();
        let mut n = 0;
        while let Some((len, from, stamp)) = self.link.recv_stamped(buf) {
            if let Some(d) = buf.get_mut(..len) {
                // When it arrived (the participant takes no time back from before its
                // last input: `Participant::handle_datagram`).
                let _ = self.p.handle_datagram(arrival(now, wall, stamp), from, d);
                n += 1;
            }
        }
        n
    }

    /// Runs the participant's timers if they are due at `now`.
    pub fn timeout(&mut self, now: Instant) {
        if self.p.poll_timeout().is_some_and(|t| t <= now) {
            self.p.handle_timeout(now);
        }
    }

    /// Sends everything the participant queued; returns how many datagrams the kernel
    /// took (the rest are counted as lost).
    pub fn flush(&mut self) -> u64 {
        let mut sent = 0;
        while let Some(t) = self.p.poll_transmit() {
            sent += u64::from(self.link.send(&t.bytes, t.dest));
        }
        sent
    }

    /// Takes the participant's events, oldest first.
    pub fn poll_events(&mut self) -> impl Iterator<Item = Event> + '_ {
        std::iter::from_fn(|| self.p.poll_event())
    }

    /// When the participant next needs [`timeout`](Self::timeout) (or `step`), if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.p.poll_timeout()
    }

    /// One turn: [`read`](Self::read) what arrived, run due [`timeout`](Self::timeout)s,
    /// [`flush`](Self::flush) what that queued; then the events. Events left in the
    /// iterator stay queued for the next call.
    pub fn step(&mut self, now: Instant) -> impl Iterator<Item = Event> + '_ {
        let mut buf = [0u8; RECV_BUF];
        self.read(now, &mut buf);
        self.timeout(now);
        self.flush();
        self.poll_events()
    }
}

#[cfg(test)]
mod tests {
    // Real sockets: a wait for the kernel is bounded by the clock.
    #![allow(clippy::disallowed_methods)]

    use super::*;

    fn loopback() -> UdpLink {
        UdpLink::bind("127.0.0.1:0").unwrap()
    }

    /// Reads `link` until something arrives (loopback delivers at once; the bound is
    /// for a loaded machine).
    fn recv_soon(link: &mut UdpLink, buf: &mut [u8]) -> Option<(usize, SocketAddr)> {
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            if let Some(got) = link.recv(buf) {
                return Some(got);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Two datagrams read late, 100 ms after the first arrived, keep their arrival
    /// times and the 30 ms between them.
    #[test]
    fn datagrams_read_late_keep_their_arrival_times() {
        let (mut a, mut b) = (loopback(), loopback());
        // The kernel turns receive stamping on a moment after the first socket asks.
        std::thread::sleep(Duration::from_millis(50));
        let to_b = b.local_addr().unwrap();
        let sent = Instant::now();
        assert!(a.send(b"one", to_b));
        std::thread::sleep(Duration::from_millis(30));
        assert!(a.send(b"two", to_b));
        std::thread::sleep(Duration::from_millis(70));
        let (now, wall) = (Instant::now(), SystemTime::now());
        let mut buf = [0u8; RECV_BUF];
        let mut at = Vec::new();
        while let Some((n, from, stamp)) = b.recv_stamped(&mut buf) {
            assert_eq!(from, a.local_addr().unwrap());
            at.push((buf[..n].to_vec(), arrival(now, wall, stamp)));
        }
        assert_eq!(at.len(), 2);
        assert_eq!((&at[0].0[..], &at[1].0[..]), (&b"one"[..], &b"two"[..]));
        let (first, second) = (at[0].1 - sent, at[1].1 - sent);
        assert!(first < Duration::from_millis(10), "{first:?}");
        let apart = second - first;
        let ms = Duration::from_millis;
        assert!(apart >= ms(29) && apart < ms(100), "{apart:?}");
        assert_eq!(b.stats().datagrams_in, 2);
        // A stamp far off the wall clock (a step of it) is not believed.
        let far = wall - Duration::from_secs(5);
        assert_eq!(arrival(now, wall, Some(far)), now);
        assert_eq!(arrival(now, wall, None), now);
        assert_eq!(arrival(now, wall, Some(wall + ms(3))), now + ms(3));
        assert_eq!(arrival(now, wall, Some(wall + ms(500))), now, "a step back");
    }

    #[test]
    fn sends_and_reads_are_counted() {
        let (mut a, mut b) = (loopback(), loopback());
        let to_b = b.local_addr().unwrap();
        assert!(a.send(b"one", to_b));
        assert!(a.send(b"two", to_b));
        let mut buf = [0u8; RECV_BUF];
        let (n, from) = recv_soon(&mut b, &mut buf).unwrap();
        assert_eq!((&buf[..n], from), (&b"one"[..], a.local_addr().unwrap()));
        let (n, _) = recv_soon(&mut b, &mut buf).unwrap();
        assert_eq!(&buf[..n], b"two");
        assert_eq!(b.recv(&mut buf), None, "nothing more: would block");
        assert_eq!(a.stats().datagrams_out, 2);
        assert_eq!(
            b.stats(),
            IoStats {
                datagrams_in: 2,
                ..IoStats::default()
            }
        );
    }

    #[test]
    fn an_icmp_error_from_an_earlier_send_is_skipped_not_an_error() {
        let mut a = loopback();
        let gone = loopback().local_addr().unwrap();
        // Linux reports ICMP port-unreachable only on a connected UDP socket.
        a.socket().connect(gone).unwrap();
        assert!(a.send(b"anyone?", gone));
        let mut buf = [0u8; RECV_BUF];
        let deadline = Instant::now() + Duration::from_secs(2);
        while a.stats().refused == 0 && Instant::now() < deadline {
            assert_eq!(a.recv(&mut buf), None);
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(a.stats().refused, 1);
        assert_eq!(a.stats().recv_errors, 0);
    }

    #[test]
    fn a_failed_send_is_counted_and_loses_the_datagram() {
        let mut a = loopback();
        // An IPv6 destination from an IPv4 socket: refused by the kernel at once.
        let v6: SocketAddr = "[::1]:9".parse().unwrap();
        assert!(!a.send(b"lost", v6));
        assert_eq!(
            a.stats(),
            IoStats {
                send_errors: 1,
                ..IoStats::default()
            }
        );
    }

    #[test]
    fn a_batch_read_counts_every_datagram() {
        let (mut a, mut b) = (loopback(), loopback());
        let to_b = b.local_addr().unwrap();
        for k in 0..3u8 {
            assert!(a.send(&[k; 10], to_b));
        }
        let mut batch = RecvBatch::new(8);
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut got = 0;
        while got < 3 && Instant::now() < deadline {
            got += b.recv_batch(&mut batch);
        }
        assert_eq!(got, 3);
        assert_eq!(b.stats().datagrams_in, 3);
        assert_eq!(b.recv_batch(&mut batch), 0, "drained");
        assert_eq!(b.stats().recv_errors, 0);
    }

    #[test]
    fn a_replaced_socket_sends_from_its_new_address_and_keeps_the_counts() {
        let (mut a, mut b) = (loopback(), loopback());
        let to_b = b.local_addr().unwrap();
        assert!(a.send(b"before", to_b));
        let new = UdpSocket::bind("127.0.0.1:0").unwrap();
        let new_addr = new.local_addr().unwrap();
        let old = a.replace_socket(new).unwrap();
        assert_ne!(old.local_addr().unwrap(), new_addr);
        assert!(a.send(b"after", to_b));
        let mut buf = [0u8; RECV_BUF];
        let _ = recv_soon(&mut b, &mut buf).unwrap();
        let (_, from) = recv_soon(&mut b, &mut buf).unwrap();
        assert_eq!(from, new_addr);
        assert_eq!(a.stats().datagrams_out, 2);
        // Non-blocking like the first: an empty read returns at once.
        assert_eq!(a.recv(&mut buf), None);
    }
}
