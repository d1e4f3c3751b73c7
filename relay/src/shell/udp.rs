//! The relay's UDP socket and its batched syscalls (Linux only).
//!
//! - [`claim_port`] checks, before the workers bind, that nothing else holds the port.
//! - [`bind_reuseport`] opens one of the per-worker sockets that share the public port.
//! - [`RecvBatch`] receives up to N datagrams with one `recvmmsg(2)` into storage it
//!   allocated once.
//! - [`stamp_arrivals`] and [`recv_stamped`] read one datagram with the time the
//!   kernel received it, for a caller that measures arrival times (a participant's
//!   delay-based estimate) and may read late.
//! - [`SendQueue`] / [`SendBatch`] send queued datagrams with `sendmmsg(2)`. A fan-out
//!   queues one message per destination, each pointing at the *same* bytes — usually
//!   the receive buffer the packet arrived in — so forwarding copies nothing.
//!
//! # Why the fan-out is sound: the lifetime `'a`
//!
//! A queued fan-out entry holds a raw pointer to the caller's bytes until the flush.
//! [`SendBatch<'q, 'a>`] is the only way to queue and flush, and it carries the lifetime
//! `'a` of the bytes it points at ([`SendBatch::push_fanout`] takes `&'a [u8]`), so the
//! borrow checker keeps those bytes borrowed — and the [`RecvBatch`] that owns them
//! un-receivable — for as long as the batch lives. Dropping the batch flushes what is
//! still queued (best effort; the counts go to [`SendQueue::take_stats`]), and
//! [`SendQueue::batch`] forgets anything a leaked batch left behind, so a pointer never
//! outlives its borrow. The loop of a worker reads:
//!
//! ```no_run
//! # #[cfg(target_os = "linux")] {
//! use std::os::fd::AsFd;
//! use blindfold_relay::shell::udp::{bind_reuseport, RecvBatch, SendQueue};
//!
//! let socket = bind_reuseport("127.0.0.1:0".parse().unwrap(), 1 << 20, 1 << 20).unwrap();
//! let mut rx = RecvBatch::new(32);
//! let mut tx = SendQueue::new(256, 32);
//! # let subscribers: Vec<std::net::SocketAddr> = Vec::new();
//! loop {
//!     if rx.recv(&socket).unwrap() == 0 {
//!         break; // would block: back to mio's poll
//!     }
//!     let mut batch = tx.batch(socket.as_fd());
//!     for (from, buf) in rx.iter_mut() {
//!         // The engine may rewrite the datagram in place (`&mut [u8]`) …
//!         let _ = (from, &mut *buf);
//!         // … then its bytes are shared by every destination until the flush.
//!         let buf: &[u8] = buf;
//!         batch.push_fanout(buf, &subscribers);
//!     }
//!     let stats = batch.flush().unwrap();
//!     let _ = stats.dropped_full; // add to the worker's counters
//! } // `batch` is gone here, so `rx` may receive into its buffers again
//! # }
//! ```
//!
//! Receiving again while a batch still points into the receive buffers does not compile:
//!
//! ```compile_fail
//! # use std::os::fd::AsFd;
//! # use blindfold_relay::shell::udp::{bind_reuseport, RecvBatch, SendQueue};
//! # let socket = bind_reuseport("127.0.0.1:0".parse().unwrap(), 0, 0).unwrap();
//! # let (mut rx, mut tx) = (RecvBatch::new(32), SendQueue::new(256, 32));
//! # let dests: Vec<std::net::SocketAddr> = Vec::new();
//! rx.recv(&socket).unwrap();
//! let mut batch = tx.batch(socket.as_fd());
//! if let Some((_, buf)) = rx.get_mut(0) {
//!     batch.push_fanout(buf, &dests);
//! }
//! rx.recv(&socket).unwrap(); // error: `rx` is still borrowed by `batch`
//! batch.flush().unwrap();
//! ```
//!
//! # Full socket buffers drop, they do not queue
//!
//! When `sendmmsg` says `EAGAIN`/`ENOBUFS`, the rest of the batch is dropped and counted
//! in [`FlushStats::dropped_full`], not kept for later: holding it would pin the receive
//! buffers (and stall receiving), and media that is late is worth less than media that is
//! lost — the endpoints' NACK and congestion control handle loss, and a socket that is
//! full now will still be full a microsecond later. A per-destination error (`ECONNREFUSED`,
//! `EHOSTUNREACH`, `EAFNOSUPPORT` for a v6 address on a v4 socket, `EMSGSIZE`, …) skips
//! that one message and is counted in [`FlushStats::dropped_error`]; the rest go out.

use std::io;
use std::marker::PhantomData;
use std::mem;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::ptr;
use std::time::{Duration, SystemTime};

use socket2::{Domain, Protocol, Socket, Type};

/// The largest datagram a [`RecvBatch`] slot or an owned [`SendBatch`] slot holds.
/// Larger datagrams are truncated by the kernel; [`RecvBatch`] drops and counts them.
pub const DATAGRAM_CAP: usize = 2048;

/// The kernel clamps `recvmmsg`/`sendmmsg` vectors to `UIO_MAXIOV` messages.
const MAX_BATCH: usize = 1024;

/// Opens a UDP socket for one relay worker: `SO_REUSEPORT` (so every worker binds the
/// same public port and the kernel spreads flows across them by 4-tuple hash; only
/// sockets of the same user that set it too may share it), non-blocking, `IPV6_V6ONLY` for an IPv6 address (a v4 listener is a
/// separate socket), and the given buffer sizes.
///
/// The kernel silently caps the buffer sizes at `net.core.rmem_max` / `wmem_max` (and
/// reports double the value it grants); compare with `socket.recv_buffer_size()` via
/// socket2 if the effective size matters. A size of 0 leaves the default.
///
/// Wrap the result with `mio::net::UdpSocket::from_std`.
///
/// # Errors
/// Any failing socket call: e.g. `EADDRINUSE` if the port is held by a socket without
/// `SO_REUSEPORT` or by another user, `EADDRNOTAVAIL` for an address not on this host.
pub fn bind_reuseport(addr: SocketAddr, recv_buf: usize, send_buf: usize) -> io::Result<UdpSocket> {
    let socket = udp_socket(addr)?;
    // SO_REUSEPORT alone: the kernel shares the port only among sockets of the same
    // user that all set it. (SO_REUSEADDR on both sides would let any user's socket
    // bind the port too, and take its unicast traffic.)
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    if recv_buf > 0 {
        socket.set_recv_buffer_size(recv_buf)?;
    }
    if send_buf > 0 {
        socket.set_send_buffer_size(send_buf)?;
    }
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// Checks that no socket holds `addr`'s port, and picks a free one for port 0: binds a
/// probe socket there *without* `SO_REUSEPORT`, reads its address and closes it. Returns
/// the address the workers' [`bind_reuseport`] sockets then bind.
///
/// `SO_REUSEPORT` lets every socket of the same user that sets it share a port: a second
/// relay started on the port by mistake would bind it too and silently take a share of
/// the flows (and a port 0 bind may be given a port such sockets already share). The
/// probe fails on any holder. A socket that binds the port between the probe and the
/// workers' binds is not seen.
///
/// # Errors
/// `EADDRINUSE` if any socket holds the port; as [`bind_reuseport`] otherwise.
pub fn claim_port(addr: SocketAddr) -> io::Result<SocketAddr> {
    let socket = udp_socket(addr)?;
    socket.bind(&addr.into())?;
    socket
        .local_addr()?
        .as_socket()
        .ok_or_else(|| io::Error::other("the probe socket has no IP address"))
}

/// Asks the kernel to stamp every datagram `socket` receives with the time it arrived
/// (`SO_TIMESTAMPNS`, on the wall clock), which [`recv_stamped`] reads.
///
/// # Errors
/// If `setsockopt` fails (not a socket).
pub fn stamp_arrivals(socket: &impl AsFd) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: `on` is a live `c_int` and the length given is its size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_fd().as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            ptr::from_ref(&on).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// One datagram read by [`recv_stamped`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamped {
    /// Its length (cut at the buffer's, as `recv_from` cuts it).
    pub len: usize,
    /// Its source.
    pub from: SocketAddr,
    /// When the kernel received it, on the wall clock; `None` if the socket does not
    /// stamp arrivals ([`stamp_arrivals`]).
    pub arrived: Option<SystemTime>,
}

/// Reads one datagram into `buf` without blocking (`MSG_DONTWAIT`), with the time the
/// kernel received it if the socket stamps arrivals ([`stamp_arrivals`]).
///
/// # Errors
/// As `recv_from`: `WouldBlock` when nothing is waiting, `ConnectionRefused` for an
/// ICMP error left by an earlier send, `Interrupted`; an error of kind `Other` for a
/// source of another family than IPv4 or IPv6 (the datagram is consumed).
pub fn recv_stamped(socket: &impl AsFd, buf: &mut [u8]) -> io::Result<Stamped> {
    let mut addr = zeroed_storage();
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // Room for one `SCM_TIMESTAMPNS` message (a header and a `timespec`), aligned as
    // a `cmsghdr` must be.
    let mut control = [0u64; 8];
    // SAFETY: all-zero bytes are a valid `msghdr`: null pointers and zero lengths.
    let mut hdr: libc::msghdr = unsafe { mem::zeroed() };
    hdr.msg_name = ptr::from_mut(&mut addr).cast();
    hdr.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    hdr.msg_iov = ptr::from_mut(&mut iov);
    hdr.msg_iovlen = 1;
    hdr.msg_control = control.as_mut_ptr().cast();
    hdr.msg_controllen = mem::size_of_val(&control) as _;
    // SAFETY: `hdr` points at `addr`, `iov` (over `buf`) and `control`, all alive and
    // exclusively borrowed for the call, with their lengths; the kernel writes at most
    // those lengths.
    let rc = unsafe { libc::recvmsg(socket.as_fd().as_raw_fd(), &mut hdr, libc::MSG_DONTWAIT) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    let from = decode_addr(&addr, hdr.msg_namelen)
        .ok_or_else(|| io::Error::other("a datagram from an address that is not IP"))?;
    let mut arrived = None;
    // SAFETY: `hdr` is as `recvmsg` left it: its control pointer and length describe
    // the messages the kernel wrote into `control`, which the CMSG macros walk within
    // bounds; a `timespec` is read unaligned from a message of its type and length.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&hdr);
        while !c.is_null() {
            let m = &*c;
            let want = libc::CMSG_LEN(mem::size_of::<libc::timespec>() as u32) as usize;
            if m.cmsg_level == libc::SOL_SOCKET
                && m.cmsg_type == libc::SCM_TIMESTAMPNS
                && m.cmsg_len as usize >= want
            {
                let ts = ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::timespec>());
                arrived = wall_time(ts);
            }
            c = libc::CMSG_NXTHDR(&hdr, c);
        }
    }
    Ok(Stamped {
        len: (rc as usize).min(buf.len()),
        from,
        arrived,
    })
}

/// A kernel time stamp as a wall-clock time (`None` before the epoch or malformed).
fn wall_time(ts: libc::timespec) -> Option<SystemTime> {
    let secs = u64::try_from(ts.tv_sec).ok()?;
    let nanos = u32::try_from(ts.tv_nsec)
        .ok()
        .filter(|&n| n < 1_000_000_000)?;
    SystemTime::UNIX_EPOCH.checked_add(Duration::new(secs, nanos))
}

/// A close-on-exec UDP socket of `addr`'s family; `IPV6_V6ONLY` for IPv6 (a v4 listener
/// is a separate socket).
fn udp_socket(addr: SocketAddr) -> io::Result<Socket> {
    let socket = Socket::new(
        Domain::for_address(addr),
        Type::DGRAM.cloexec(),
        Some(Protocol::UDP),
    )?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    Ok(socket)
}

/// Writes `addr` into `out` as a `sockaddr_in`/`sockaddr_in6` and returns its length.
fn encode_addr(addr: &SocketAddr, out: &mut libc::sockaddr_storage) -> libc::socklen_t {
    match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: `sockaddr_storage` is larger than and at least as aligned as
            // `sockaddr_in` (that is its purpose), and `out` is a valid exclusive reference.
            unsafe { ptr::write(ptr::from_mut(out).cast::<libc::sockaddr_in>(), sin) };
            mem::size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(a) => {
            // SAFETY: all-zero bytes are a valid `sockaddr_in6` (plain integers and arrays).
            let mut sin6: libc::sockaddr_in6 = unsafe { mem::zeroed() };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_flowinfo = a.flowinfo();
            sin6.sin6_addr = libc::in6_addr {
                s6_addr: a.ip().octets(),
            };
            sin6.sin6_scope_id = a.scope_id();
            // SAFETY: as above, for `sockaddr_in6`.
            unsafe { ptr::write(ptr::from_mut(out).cast::<libc::sockaddr_in6>(), sin6) };
            mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

/// Reads the address the kernel wrote into `st` (`len` bytes of it). `None` for a family
/// other than IPv4/IPv6 or a length too short for its family.
fn decode_addr(st: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    let len = len as usize;
    match i32::from(st.ss_family) {
        libc::AF_INET if len >= mem::size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family says the kernel wrote a `sockaddr_in`, `len` says all of
            // it; `sockaddr_storage` is large and aligned enough for one, and every bit
            // pattern is a valid `sockaddr_in`.
            let sin = unsafe { &*ptr::from_ref(st).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes());
            Some(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 if len >= mem::size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above, for `sockaddr_in6`.
            let sin6 = unsafe { &*ptr::from_ref(st).cast::<libc::sockaddr_in6>() };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Some(SocketAddr::V6(SocketAddrV6::new(
                ip,
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

fn zeroed_storage() -> libc::sockaddr_storage {
    // SAFETY: all-zero bytes are a valid `sockaddr_storage` (integers and padding).
    unsafe { mem::zeroed() }
}

fn zeroed_mmsghdr() -> libc::mmsghdr {
    // SAFETY: all-zero bytes are a valid `mmsghdr`: null pointers and zero lengths.
    unsafe { mem::zeroed() }
}

fn empty_iovec() -> libc::iovec {
    libc::iovec {
        iov_base: ptr::null_mut(),
        iov_len: 0,
    }
}

/// What one [`RecvBatch`] slot holds after a receive.
#[derive(Debug, Clone, Copy)]
struct Slot {
    from: Option<SocketAddr>,
    len: usize,
    truncated: bool,
}

const EMPTY_SLOT: Slot = Slot {
    from: None,
    len: 0,
    truncated: false,
};

/// Storage for receiving up to N datagrams of up to [`DATAGRAM_CAP`] bytes with one
/// `recvmmsg(2)`, allocated once by [`RecvBatch::new`]; receiving allocates nothing.
///
/// After [`recv`](Self::recv), [`iter_mut`](Self::iter_mut) yields each received datagram
/// as its source address and a mutable view of its bytes (the engine may rewrite in
/// place, then share the view with a [`SendBatch`] for a zero-copy fan-out).
pub struct RecvBatch {
    bufs: Box<[u8]>,
    iovs: Box<[libc::iovec]>,
    addrs: Box<[libc::sockaddr_storage]>,
    msgs: Box<[libc::mmsghdr]>,
    slots: Box<[Slot]>,
    received: usize,
    truncated: usize,
}

// SAFETY: the raw pointers inside `iovs`/`msgs` point into this struct's own heap storage
// and are rewritten before and used only during the `recvmmsg` call in `recv`, which
// holds `&mut self`; nothing is shared with another thread.
unsafe impl Send for RecvBatch {}

impl std::fmt::Debug for RecvBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvBatch")
            .field("capacity", &self.capacity())
            .field("received", &self.received)
            .field("truncated", &self.truncated)
            .finish()
    }
}

impl RecvBatch {
    /// Allocates storage for `capacity` datagrams (clamped to 1..=1024, the kernel's
    /// `UIO_MAXIOV`). 32–64 is a good size: larger batches save little once a syscall's
    /// fixed cost is spread over 32 packets.
    pub fn new(capacity: usize) -> Self {
        let n = capacity.clamp(1, MAX_BATCH);
        Self {
            bufs: vec![0u8; n * DATAGRAM_CAP].into_boxed_slice(),
            iovs: (0..n).map(|_| empty_iovec()).collect(),
            addrs: (0..n).map(|_| zeroed_storage()).collect(),
            msgs: (0..n).map(|_| zeroed_mmsghdr()).collect(),
            slots: vec![EMPTY_SLOT; n].into_boxed_slice(),
            received: 0,
            truncated: 0,
        }
    }

    /// How many datagrams one [`recv`](Self::recv) can take.
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Receives whatever is waiting on `socket`, up to the capacity, without blocking
    /// (`MSG_DONTWAIT`), replacing the previous batch. Returns how many datagrams the
    /// kernel delivered; 0 means the socket would block (re-arm with mio and poll).
    ///
    /// Datagrams longer than [`DATAGRAM_CAP`] (truncated by the kernel) and ones from an
    /// address family other than IPv4/IPv6 are counted in
    /// [`dropped`](Self::dropped) and skipped by the accessors.
    ///
    /// # Errors
    /// `EINTR` is retried; a pending ICMP error on the socket (`ECONNREFUSED`,
    /// `EHOSTUNREACH`, `ENETUNREACH`) is consumed and retried a few times, then reported
    /// as 0. Anything else (e.g. `EBADF`, `ENOTSOCK`) is returned.
    pub fn recv(&mut self, socket: &impl AsFd) -> io::Result<usize> {
        self.received = 0;
        self.truncated = 0;
        let fd = socket.as_fd().as_raw_fd();
        let bufs = self.bufs.as_mut_ptr();
        for i in 0..self.msgs.len() {
            self.iovs[i] = libc::iovec {
                // SAFETY: `i * DATAGRAM_CAP` stays inside `bufs`, which has
                // `capacity * DATAGRAM_CAP` bytes.
                iov_base: unsafe { bufs.add(i * DATAGRAM_CAP) }.cast(),
                iov_len: DATAGRAM_CAP,
            };
            let hdr = &mut self.msgs[i].msg_hdr;
            hdr.msg_name = ptr::from_mut(&mut self.addrs[i]).cast();
            hdr.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            hdr.msg_iov = ptr::from_mut(&mut self.iovs[i]);
            hdr.msg_iovlen = 1;
            hdr.msg_control = ptr::null_mut();
            hdr.msg_controllen = 0;
            hdr.msg_flags = 0;
            self.msgs[i].msg_len = 0;
        }
        let mut transient = 0;
        let n = loop {
            // SAFETY: `msgs` holds `msgs.len()` initialised headers whose name and iovec
            // pointers point into `addrs`, `iovs` and `bufs`, all owned by `self`, alive
            // and exclusively borrowed for the call, with the lengths given; the kernel
            // writes at most those lengths. A null timeout is allowed.
            let rc = unsafe {
                libc::recvmmsg(
                    fd,
                    self.msgs.as_mut_ptr(),
                    self.msgs.len() as libc::c_uint,
                    libc::MSG_DONTWAIT as _,
                    ptr::null_mut(),
                )
            };
            if rc >= 0 {
                break rc as usize;
            }
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EAGAIN) => return Ok(0),
                Some(libc::EINTR) => continue,
                Some(libc::ECONNREFUSED | libc::EHOSTUNREACH | libc::ENETUNREACH)
                    if transient < 4 =>
                {
                    transient += 1;
                    continue;
                }
                Some(libc::ECONNREFUSED | libc::EHOSTUNREACH | libc::ENETUNREACH) => return Ok(0),
                _ => return Err(err),
            }
        };
        let n = n.min(self.msgs.len());
        for i in 0..n {
            let hdr = &self.msgs[i].msg_hdr;
            let truncated = hdr.msg_flags & libc::MSG_TRUNC != 0;
            let from = decode_addr(&self.addrs[i], hdr.msg_namelen);
            let slot = Slot {
                from,
                len: (self.msgs[i].msg_len as usize).min(DATAGRAM_CAP),
                truncated,
            };
            if slot.truncated || slot.from.is_none() {
                self.truncated += 1;
            }
            self.slots[i] = slot;
        }
        self.received = n;
        Ok(n)
    }

    /// How many datagrams the last [`recv`](Self::recv) delivered (including dropped ones).
    pub fn len(&self) -> usize {
        self.received
    }

    /// Whether the last [`recv`](Self::recv) delivered nothing.
    pub fn is_empty(&self) -> bool {
        self.received == 0
    }

    /// How many of the last batch's datagrams are skipped: truncated (longer than
    /// [`DATAGRAM_CAP`]) or from an unknown address family. Count them as drops.
    pub fn dropped(&self) -> usize {
        self.truncated
    }

    /// The `i`th datagram of the last batch: its source and bytes. `None` past the end or
    /// for a dropped one.
    pub fn get_mut(&mut self, i: usize) -> Option<(SocketAddr, &mut [u8])> {
        if i >= self.received {
            return None;
        }
        let slot = *self.slots.get(i)?;
        let from = slot.from.filter(|_| !slot.truncated)?;
        let start = i.checked_mul(DATAGRAM_CAP)?;
        let buf = self.bufs.get_mut(start..start.checked_add(slot.len)?)?;
        Some((from, buf))
    }

    /// Each usable datagram of the last batch, in arrival order, as its source address
    /// and a mutable view of its bytes. The views borrow the batch: it cannot receive
    /// again while any of them (or a [`SendBatch`] holding them) is alive.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (SocketAddr, &mut [u8])> + '_ {
        let n = self.received;
        self.bufs
            .chunks_exact_mut(DATAGRAM_CAP)
            .zip(self.slots.iter())
            .take(n)
            .filter_map(|(buf, slot)| {
                let from = slot.from.filter(|_| !slot.truncated)?;
                Some((from, buf.get_mut(..slot.len)?))
            })
    }
}

/// What a flush did; add these to the worker's counters. Accumulates over every flush
/// (explicit, automatic when the queue fills, or on drop) since the last
/// [`SendBatch::flush`] or [`SendQueue::take_stats`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct FlushStats {
    /// Datagrams the kernel accepted.
    pub sent: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Datagrams dropped because the socket (or the device queue) was full:
    /// `EAGAIN`, `ENOBUFS`, `ENOMEM`.
    pub dropped_full: u64,
    /// Datagrams dropped by a per-destination error (`ECONNREFUSED`, `EHOSTUNREACH`,
    /// `EAFNOSUPPORT`, `EMSGSIZE`, `EPERM` from a firewall, …) or a fatal socket error.
    pub dropped_error: u64,
    /// `sendmmsg` calls made.
    pub syscalls: u64,
    /// The last errno seen, for a log line (not a count).
    pub last_errno: Option<i32>,
}

impl FlushStats {
    fn add(&mut self, other: &FlushStats) {
        self.sent += other.sent;
        self.bytes += other.bytes;
        self.dropped_full += other.dropped_full;
        self.dropped_error += other.dropped_error;
        self.syscalls += other.syscalls;
        if other.last_errno.is_some() {
            self.last_errno = other.last_errno;
        }
    }
}

/// [`SendBatch::push_owned`] was given more than [`DATAGRAM_CAP`] bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The datagram does not fit an owned slot.
    #[error("datagram of {len} bytes exceeds the {DATAGRAM_CAP}-byte owned slot")]
    TooLarge {
        /// Its length.
        len: usize,
    },
}

#[derive(Debug, Clone, Copy)]
enum Payload {
    /// The caller's bytes, borrowed for the batch's `'a`.
    Borrowed(*const u8),
    /// Byte offset of a copy in the queue's owned slots.
    Owned(usize),
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    payload: Payload,
    len: usize,
    addr_len: libc::socklen_t,
}

const EMPTY_ENTRY: Entry = Entry {
    payload: Payload::Owned(0),
    len: 0,
    addr_len: 0,
};

/// The storage of a send queue: message headers, iovecs, destination addresses and
/// owned slots for small datagrams, allocated once by [`SendQueue::new`]. Queue and
/// flush through the [`SendBatch`] that [`batch`](Self::batch) returns (see the module
/// docs for why the split).
pub struct SendQueue {
    entries: Box<[Entry]>,
    addrs: Box<[libc::sockaddr_storage]>,
    iovs: Box<[libc::iovec]>,
    msgs: Box<[libc::mmsghdr]>,
    owned: Box<[u8]>,
    owned_used: usize,
    len: usize,
    stats: FlushStats,
    fatal: Option<i32>,
}

// SAFETY: the raw pointers in `entries` (borrowed payloads) and in `iovs`/`msgs` are only
// dereferenced (by the kernel) inside a flush, which needs a `SendBatch`; a `SendBatch`
// borrows the queue mutably and the payloads for `'a`, so neither can cross to another
// thread while such pointers are live. `batch()` discards stale entries before reuse.
unsafe impl Send for SendQueue {}

impl std::fmt::Debug for SendQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendQueue")
            .field("capacity", &self.entries.len())
            .field("owned_slots", &(self.owned.len() / DATAGRAM_CAP))
            .field("stats", &self.stats)
            .finish()
    }
}

impl SendQueue {
    /// Allocates room for `capacity` queued datagrams (clamped to 1..=1024, the kernel's
    /// `UIO_MAXIOV`) of which up to `owned_slots` (at least 1) may be copies made by
    /// [`SendBatch::push_owned`]. When either runs out the batch flushes first.
    pub fn new(capacity: usize, owned_slots: usize) -> Self {
        let n = capacity.clamp(1, MAX_BATCH);
        let owned_slots = owned_slots.clamp(1, n);
        Self {
            entries: vec![EMPTY_ENTRY; n].into_boxed_slice(),
            addrs: (0..n).map(|_| zeroed_storage()).collect(),
            iovs: (0..n).map(|_| empty_iovec()).collect(),
            msgs: (0..n).map(|_| zeroed_mmsghdr()).collect(),
            owned: vec![0u8; owned_slots * DATAGRAM_CAP].into_boxed_slice(),
            owned_used: 0,
            len: 0,
            stats: FlushStats::default(),
            fatal: None,
        }
    }

    /// How many datagrams fit before a flush.
    pub fn capacity(&self) -> usize {
        self.entries.len()
    }

    /// Opens a batch that queues datagrams for `socket` and borrows queued payloads for
    /// `'a`. Entries left by a leaked batch (`mem::forget`) are discarded, never sent.
    pub fn batch<'q, 'a>(&'q mut self, socket: BorrowedFd<'q>) -> SendBatch<'q, 'a> {
        self.len = 0;
        self.owned_used = 0;
        SendBatch {
            queue: self,
            fd: socket,
            _payloads: PhantomData,
        }
    }

    /// Takes the stats accumulated since the last flush or take (e.g. from a batch that
    /// flushed on drop).
    pub fn take_stats(&mut self) -> FlushStats {
        mem::take(&mut self.stats)
    }

    fn clear(&mut self) {
        self.len = 0;
        self.owned_used = 0;
    }

    /// Sends the queued entries with `sys` (the real `sendmmsg` or a test double that
    /// returns a count or an errno), applying the drop policy of the module docs.
    fn flush_with(&mut self, mut sys: impl FnMut(&mut [libc::mmsghdr]) -> Result<usize, i32>) {
        let n = self.len;
        if n == 0 {
            return;
        }
        let owned_base = self.owned.as_mut_ptr();
        for i in 0..n {
            let e = self.entries[i];
            let base: *mut u8 = match e.payload {
                Payload::Borrowed(p) => p.cast_mut(),
                // SAFETY: owned offsets are `slot * DATAGRAM_CAP` for a slot below
                // `owned.len() / DATAGRAM_CAP`, so inside the allocation.
                Payload::Owned(off) => unsafe { owned_base.add(off) },
            };
            self.iovs[i] = libc::iovec {
                iov_base: base.cast(),
                iov_len: e.len,
            };
            let hdr = &mut self.msgs[i].msg_hdr;
            hdr.msg_name = ptr::from_mut(&mut self.addrs[i]).cast();
            hdr.msg_namelen = e.addr_len;
            hdr.msg_iov = ptr::from_mut(&mut self.iovs[i]);
            hdr.msg_iovlen = 1;
            hdr.msg_control = ptr::null_mut();
            hdr.msg_controllen = 0;
            hdr.msg_flags = 0;
            self.msgs[i].msg_len = 0;
        }
        let mut st = FlushStats::default();
        let mut off = 0;
        while off < n {
            st.syscalls += 1;
            match sys(&mut self.msgs[off..n]) {
                Ok(k) => {
                    let k = k.min(n - off);
                    for e in &self.entries[off..off + k] {
                        st.sent += 1;
                        st.bytes += e.len as u64;
                    }
                    // `k == 0` cannot happen for a non-empty vector; treat it as full.
                    if k == 0 {
                        st.dropped_full += (n - off) as u64;
                        break;
                    }
                    off += k;
                }
                Err(libc::EINTR) => {}
                Err(e @ (libc::EAGAIN | libc::ENOBUFS | libc::ENOMEM)) => {
                    st.last_errno = Some(e);
                    st.dropped_full += (n - off) as u64;
                    break;
                }
                Err(e @ (libc::EBADF | libc::ENOTSOCK | libc::EFAULT)) => {
                    // The socket itself is unusable: no message can go.
                    st.last_errno = Some(e);
                    st.dropped_error += (n - off) as u64;
                    self.fatal = Some(e);
                    break;
                }
                Err(e) => {
                    // The first remaining message failed on its own account.
                    st.last_errno = Some(e);
                    st.dropped_error += 1;
                    off += 1;
                }
            }
        }
        self.stats.add(&st);
        self.clear();
    }
}

/// A batch of datagrams queued on a [`SendQueue`] for one socket, whose borrowed payloads
/// live for `'a`. Made by [`SendQueue::batch`]; flushes with `sendmmsg(2)` when full, on
/// [`flush`](Self::flush), and (best effort) when dropped.
pub struct SendBatch<'q, 'a> {
    queue: &'q mut SendQueue,
    fd: BorrowedFd<'q>,
    /// Queued entries point at `'a` bytes without holding a reference.
    _payloads: PhantomData<&'a [u8]>,
}

impl std::fmt::Debug for SendBatch<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendBatch")
            .field("queued", &self.queue.len)
            .finish()
    }
}

impl<'a> SendBatch<'_, 'a> {
    /// How many datagrams are queued.
    pub fn len(&self) -> usize {
        self.queue.len
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.queue.len == 0
    }

    fn make_room(&mut self, owned: bool) {
        let owned_full = owned && self.queue.owned_used >= self.queue.owned.len() / DATAGRAM_CAP;
        if self.queue.len >= self.queue.entries.len() || owned_full {
            self.flush_inner();
        }
    }

    fn flush_inner(&mut self) {
        let fd = self.fd.as_raw_fd();
        self.queue.flush_with(|msgs| {
            // SAFETY: `msgs` are headers built by `flush_with` from live entries: names and
            // iovecs point into the queue's own storage, payloads into the queue's owned
            // slots or into caller bytes borrowed for `'a`, which outlives this batch.
            // The kernel only reads them (and writes `msg_len`).
            let rc =
                unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr(), msgs.len() as libc::c_uint, 0) };
            if rc < 0 {
                Err(io::Error::last_os_error()
                    .raw_os_error()
                    .unwrap_or(libc::EIO))
            } else {
                Ok(rc as usize)
            }
        });
    }

    fn push_entry(&mut self, payload: Payload, len: usize, dest: &SocketAddr) {
        let i = self.queue.len;
        let addr_len = encode_addr(dest, &mut self.queue.addrs[i]);
        self.queue.entries[i] = Entry {
            payload,
            len,
            addr_len,
        };
        self.queue.len += 1;
    }

    /// Queues `buf` once per destination: one message each, every one pointing at the same
    /// bytes (no copy). `buf` stays borrowed until this batch is gone. Flushes first
    /// whenever the queue is full, so any number of destinations is fine.
    pub fn push_fanout(&mut self, buf: &'a [u8], dests: &[SocketAddr]) {
        for dest in dests {
            self.make_room(false);
            self.push_entry(Payload::Borrowed(buf.as_ptr()), buf.len(), dest);
        }
    }

    /// Queues `buf` for one destination without copying (a fan-out of one).
    pub fn push(&mut self, buf: &'a [u8], dest: SocketAddr) {
        self.push_fanout(buf, &[dest]);
    }

    /// Copies a small datagram (a STUN answer, a DTLS flight, an RTCP report) into an
    /// owned slot and queues it; the caller's buffer is free at once.
    ///
    /// # Errors
    /// [`SendError::TooLarge`] for more than [`DATAGRAM_CAP`] bytes (nothing is queued).
    pub fn push_owned(&mut self, data: &[u8], dest: SocketAddr) -> Result<(), SendError> {
        if data.len() > DATAGRAM_CAP {
            return Err(SendError::TooLarge { len: data.len() });
        }
        self.push_owned_with(dest, |slot| {
            slot.get_mut(..data.len())?.copy_from_slice(data);
            Some(data.len())
        });
        Ok(())
    }

    /// Lets `build` write a datagram straight into an owned slot of [`DATAGRAM_CAP`]
    /// bytes (a builder that returns the length it wrote) and queues it for `dest`.
    /// If `build` returns `None` or a length beyond the slot, nothing is queued and
    /// `false` is returned.
    pub fn push_owned_with(
        &mut self,
        dest: SocketAddr,
        build: impl FnOnce(&mut [u8]) -> Option<usize>,
    ) -> bool {
        self.make_room(true);
        let off = self.queue.owned_used * DATAGRAM_CAP;
        let Some(slot) = self.queue.owned.get_mut(off..off + DATAGRAM_CAP) else {
            return false;
        };
        match build(slot) {
            Some(len) if len <= DATAGRAM_CAP => {
                self.queue.owned_used += 1;
                self.push_entry(Payload::Owned(off), len, &dest);
                true
            }
            _ => false,
        }
    }

    /// Sends everything queued and returns the stats of every flush since the last
    /// [`flush`](Self::flush) (including automatic ones when the queue filled).
    ///
    /// Full socket buffers and per-destination errors drop and count (see the module
    /// docs); they are not errors.
    ///
    /// # Errors
    /// A fatal socket error (`EBADF`, `ENOTSOCK`, `EFAULT`) seen by this or an earlier
    /// automatic flush; the datagrams concerned are dropped and counted.
    pub fn flush(&mut self) -> io::Result<FlushStats> {
        self.flush_inner();
        if let Some(errno) = self.queue.fatal.take() {
            return Err(io::Error::from_raw_os_error(errno));
        }
        Ok(self.queue.take_stats())
    }
}

impl Drop for SendBatch<'_, '_> {
    fn drop(&mut self) {
        // Best effort: the payloads are still borrowed here, so sending is sound; the
        // counts stay in the queue for `take_stats`.
        self.flush_inner();
    }
}

#[cfg(test)]
mod tests;
