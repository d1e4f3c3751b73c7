use super::*;
use std::collections::VecDeque;
use std::net::UdpSocket;
use std::time::{Duration, Instant};

const BUF: usize = 1 << 20;

fn lo4() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn lo6() -> SocketAddr {
    "[::1]:0".parse().unwrap()
}

/// Whether the host has IPv6 loopback (some containers do not).
fn has_v6() -> bool {
    UdpSocket::bind(lo6()).is_ok()
}

/// Receives into `rx` until `want` datagrams arrived or 5 s passed; returns them.
fn recv_all(rx: &mut RecvBatch, sock: &UdpSocket, want: usize) -> Vec<(SocketAddr, Vec<u8>)> {
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while got.len() < want && Instant::now() < deadline {
        if rx.recv(sock).unwrap() == 0 {
            std::thread::sleep(Duration::from_millis(2));
            continue;
        }
        got.extend(rx.iter_mut().map(|(a, b)| (a, b.to_vec())));
    }
    got
}

/// Receives whatever arrives on a plain std socket within `wait`.
fn drain(sock: &UdpSocket, wait: Duration) -> Vec<Vec<u8>> {
    sock.set_read_timeout(Some(wait)).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = sock.recv(&mut buf) {
        out.push(buf[..n].to_vec());
    }
    out
}

#[test]
fn claim_port_refuses_a_port_any_socket_holds_and_picks_a_free_one() {
    for any in [lo4(), lo6()] {
        if any.is_ipv6() && !has_v6() {
            continue;
        }
        // Port 0: a port nothing holds, which the workers' sockets then share.
        let picked = claim_port(any).unwrap();
        assert_ne!(picked.port(), 0);
        let a = bind_reuseport(picked, BUF, BUF).unwrap();
        let b = bind_reuseport(picked, BUF, BUF).unwrap();
        assert_eq!(b.local_addr().unwrap(), picked);
        // Held by those (as by another relay's workers): refused, though another
        // SO_REUSEPORT socket of this user could still join them.
        let err = claim_port(picked).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse, "{err}");
        assert!(bind_reuseport(picked, BUF, BUF).is_ok());
        drop((a, b));
        // Held by a plain socket: refused too.
        let plain = UdpSocket::bind(any).unwrap();
        let err = claim_port(plain.local_addr().unwrap()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse, "{err}");
    }
}

#[test]
fn two_sockets_share_a_port_with_reuseport() {
    for any in [lo4(), lo6()] {
        if any.is_ipv6() && !has_v6() {
            continue;
        }
        let a = bind_reuseport(any, BUF, BUF).unwrap();
        let port = a.local_addr().unwrap().port();
        let b = bind_reuseport(SocketAddr::new(any.ip(), port), BUF, BUF).unwrap();
        assert_eq!(b.local_addr().unwrap().port(), port);
        // A socket without SO_REUSEPORT cannot join them, not even with SO_REUSEADDR
        // (which, set on both sides, would let any user's socket take the port's
        // unicast traffic).
        assert!(UdpSocket::bind(SocketAddr::new(any.ip(), port)).is_err());
        let other = Socket::new(Domain::for_address(any), Type::DGRAM, None).unwrap();
        if any.is_ipv6() {
            other.set_only_v6(true).unwrap();
        }
        other.set_reuse_address(true).unwrap();
        let taken = other.bind(&SocketAddr::new(any.ip(), port).into());
        assert!(
            taken.is_err(),
            "a SO_REUSEADDR socket bound the relay's port"
        );
    }
}

fn burst_from_several_senders(any: SocketAddr) {
    let sock = bind_reuseport(any, BUF, BUF).unwrap();
    let dest = sock.local_addr().unwrap();
    let senders: Vec<UdpSocket> = (0..4).map(|_| UdpSocket::bind(any).unwrap()).collect();
    for seq in 0..25u8 {
        for (s, sender) in senders.iter().enumerate() {
            let len = 1 + usize::from(seq) * 40; // up to 961 bytes
            let mut msg = vec![seq; len];
            msg[0] = s as u8;
            sender.send_to(&msg, dest).unwrap();
        }
    }
    let mut rx = RecvBatch::new(32);
    let got = recv_all(&mut rx, &sock, 100);
    assert_eq!(got.len(), 100);
    let mut next = [0u8; 4];
    for (from, bytes) in got {
        let s = usize::from(bytes[0]);
        assert_eq!(from, senders[s].local_addr().unwrap(), "source address");
        let seq = next[s];
        assert_eq!(bytes.len(), 1 + usize::from(seq) * 40);
        assert!(bytes[1..].iter().all(|&b| b == seq), "contents");
        next[s] += 1; // per-sender order holds on loopback
    }
    assert_eq!(next, [25; 4]);
    assert_eq!(rx.dropped(), 0);
}

#[test]
fn recv_batch_burst_v4() {
    burst_from_several_senders(lo4());
}

#[test]
fn recv_batch_burst_v6() {
    if has_v6() {
        burst_from_several_senders(lo6());
    }
}

#[test]
fn recv_on_an_idle_socket_is_zero_and_accessors_are_empty() {
    let sock = bind_reuseport(lo4(), 0, 0).unwrap();
    let mut rx = RecvBatch::new(0); // clamped to 1
    assert_eq!(rx.capacity(), 1);
    assert_eq!(rx.recv(&sock).unwrap(), 0);
    assert!(rx.is_empty());
    assert!(rx.get_mut(0).is_none());
    assert_eq!(rx.iter_mut().count(), 0);
}

#[test]
fn oversized_datagrams_are_dropped_and_counted() {
    let sock = bind_reuseport(lo4(), BUF, BUF).unwrap();
    let dest = sock.local_addr().unwrap();
    let sender = UdpSocket::bind(lo4()).unwrap();
    sender.send_to(&[1u8; DATAGRAM_CAP + 100], dest).unwrap();
    sender.send_to(&[2u8; DATAGRAM_CAP], dest).unwrap();
    sender.send_to(&[], dest).unwrap();
    let mut rx = RecvBatch::new(8);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut total = 0;
    let mut dropped = 0;
    let mut ok = Vec::new();
    while total < 3 && Instant::now() < deadline {
        total += rx.recv(&sock).unwrap();
        dropped += rx.dropped();
        ok.extend(rx.iter_mut().map(|(_, b)| b.len()));
    }
    assert_eq!((total, dropped), (3, 1));
    assert_eq!(ok, vec![DATAGRAM_CAP, 0]);
}

#[test]
fn get_mut_matches_iter_and_allows_rewriting_in_place() {
    let sock = bind_reuseport(lo4(), BUF, BUF).unwrap();
    let sender = UdpSocket::bind(lo4()).unwrap();
    sender
        .send_to(b"hello", sock.local_addr().unwrap())
        .unwrap();
    let mut rx = RecvBatch::new(4);
    let deadline = Instant::now() + Duration::from_secs(5);
    while rx.recv(&sock).unwrap() == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    let (from, buf) = rx.get_mut(0).unwrap();
    assert_eq!(from, sender.local_addr().unwrap());
    buf[0] = b'j';
    assert_eq!(rx.iter_mut().next().unwrap().1, b"jello");
    assert!(rx.get_mut(1).is_none());
}

#[test]
fn fanout_of_one_buffer_reaches_ten_receivers_identically() {
    let sock = bind_reuseport(lo4(), BUF, BUF).unwrap();
    let receivers: Vec<UdpSocket> = (0..10).map(|_| UdpSocket::bind(lo4()).unwrap()).collect();
    let dests: Vec<SocketAddr> = receivers.iter().map(|r| r.local_addr().unwrap()).collect();
    let payload: Vec<u8> = (0..1200u32).map(|i| (i * 7) as u8).collect();
    let mut tx = SendQueue::new(64, 4);
    let mut batch = tx.batch(sock.as_fd());
    batch.push_fanout(&payload, &dests);
    assert_eq!(batch.len(), 10);
    let st = batch.flush().unwrap();
    assert_eq!(
        (st.sent, st.bytes, st.dropped_full, st.dropped_error),
        (10, 12000, 0, 0)
    );
    assert_eq!(st.syscalls, 1);
    for r in &receivers {
        assert_eq!(drain(r, Duration::from_millis(500)), vec![payload.clone()]);
    }
}

#[test]
fn forwarding_from_the_receive_buffer_is_zero_copy_and_borrow_checked() {
    let sock = bind_reuseport(lo4(), BUF, BUF).unwrap();
    let me = sock.local_addr().unwrap();
    let sender = UdpSocket::bind(lo4()).unwrap();
    let receivers: Vec<UdpSocket> = (0..3).map(|_| UdpSocket::bind(lo4()).unwrap()).collect();
    let dests: Vec<SocketAddr> = receivers.iter().map(|r| r.local_addr().unwrap()).collect();
    for i in 0..5u8 {
        sender.send_to(&[i; 100], me).unwrap();
    }
    let mut rx = RecvBatch::new(8);
    let mut tx = SendQueue::new(8, 2); // smaller than 5 × 3: flushes while queueing
    let mut forwarded = 0;
    let deadline = Instant::now() + Duration::from_secs(5);
    while forwarded < 5 && Instant::now() < deadline {
        if rx.recv(&sock).unwrap() == 0 {
            std::thread::sleep(Duration::from_millis(1));
            continue;
        }
        let mut batch = tx.batch(sock.as_fd());
        for (_, buf) in rx.iter_mut() {
            buf[1] = 0xee; // the engine may rewrite in place
            let buf: &[u8] = buf;
            batch.push_fanout(buf, &dests);
            forwarded += 1;
        }
        let st = batch.flush().unwrap();
        assert_eq!(st.dropped_full + st.dropped_error, 0);
    }
    for r in &receivers {
        let got = drain(r, Duration::from_millis(500));
        assert_eq!(got.len(), 5);
        for (i, d) in got.iter().enumerate() {
            assert_eq!((d[0], d[1], d.len()), (i as u8, 0xee, 100));
        }
    }
}

#[test]
fn per_destination_error_skips_only_that_destination() {
    let sock = bind_reuseport(lo4(), BUF, BUF).unwrap();
    let a = UdpSocket::bind(lo4()).unwrap();
    let b = UdpSocket::bind(lo4()).unwrap();
    // A v6 destination on a v4 socket fails with EAFNOSUPPORT for that message only.
    let dests = [
        a.local_addr().unwrap(),
        "[::1]:9".parse().unwrap(),
        b.local_addr().unwrap(),
    ];
    let mut tx = SendQueue::new(16, 1);
    let mut batch = tx.batch(sock.as_fd());
    batch.push_fanout(b"media", &dests);
    let st = batch.flush().unwrap();
    assert_eq!((st.sent, st.dropped_error), (2, 1));
    assert!(st.last_errno.is_some());
    assert_eq!(
        drain(&a, Duration::from_millis(300)),
        vec![b"media".to_vec()]
    );
    assert_eq!(
        drain(&b, Duration::from_millis(300)),
        vec![b"media".to_vec()]
    );
}

#[test]
fn owned_datagrams_are_copied_and_slots_recycle() {
    let sock = bind_reuseport(lo4(), BUF, BUF).unwrap();
    let r = UdpSocket::bind(lo4()).unwrap();
    let dest = r.local_addr().unwrap();
    let mut tx = SendQueue::new(4, 2); // 2 owned slots: the third push flushes first
    let mut batch = tx.batch(sock.as_fd());
    for i in 0..5u8 {
        let answer = [i; 60]; // a temporary: copied, so it may die at once
        batch.push_owned(&answer, dest).unwrap();
    }
    assert!(batch.push_owned_with(dest, |slot| {
        slot[..3].copy_from_slice(b"abc");
        Some(3)
    }));
    assert!(!batch.push_owned_with(dest, |_| None));
    assert!(!batch.push_owned_with(dest, |_| Some(DATAGRAM_CAP + 1)));
    assert_eq!(
        batch.push_owned(&[0; DATAGRAM_CAP + 1], dest),
        Err(SendError::TooLarge {
            len: DATAGRAM_CAP + 1
        })
    );
    let st = batch.flush().unwrap();
    assert_eq!(st.sent, 6);
    assert!(st.syscalls >= 3);
    let got = drain(&r, Duration::from_millis(300));
    assert_eq!(got.len(), 6);
    for (i, d) in got.iter().take(5).enumerate() {
        assert_eq!(d, &vec![i as u8; 60]);
    }
    assert_eq!(got[5], b"abc");
}

#[test]
fn dropping_a_batch_flushes_and_a_leaked_one_sends_nothing() {
    let sock = bind_reuseport(lo4(), BUF, BUF).unwrap();
    let r = UdpSocket::bind(lo4()).unwrap();
    let dest = r.local_addr().unwrap();
    let mut tx = SendQueue::new(8, 2);
    {
        let mut batch = tx.batch(sock.as_fd());
        batch.push(b"on drop", dest);
    }
    assert_eq!(tx.take_stats().sent, 1);
    assert_eq!(
        drain(&r, Duration::from_millis(300)),
        vec![b"on drop".to_vec()]
    );

    let mut batch = tx.batch(sock.as_fd());
    batch.push_owned(b"leaked", dest).unwrap();
    std::mem::forget(batch);
    let mut batch = tx.batch(sock.as_fd());
    assert!(batch.is_empty(), "a leaked batch's entries are discarded");
    batch.push(b"fresh", dest);
    assert_eq!(batch.flush().unwrap().sent, 1);
    assert_eq!(
        drain(&r, Duration::from_millis(300)),
        vec![b"fresh".to_vec()]
    );
}

/// A receiver with a tiny SO_RCVBUF and a burst far beyond it: nothing panics, every
/// datagram is accounted for as sent or dropped (loopback drops at the receiver, which
/// the kernel counts, not us), and the receiver gets fewer than were sent.
#[test]
fn burst_into_a_tiny_receive_buffer_is_counted_not_panicking() {
    let sock = bind_reuseport(lo4(), 0, 4096).unwrap();
    let r = bind_reuseport(lo4(), 2048, 0).unwrap();
    let dest = r.local_addr().unwrap();
    let payload = [0x5au8; 1200];
    let mut tx = SendQueue::new(1024, 1);
    let mut batch = tx.batch(sock.as_fd());
    for _ in 0..2000 {
        batch.push(&payload, dest);
    }
    let st = batch.flush().unwrap();
    assert_eq!(st.sent + st.dropped_full + st.dropped_error, 2000);
    let mut rx = RecvBatch::new(64);
    let mut got = 0;
    loop {
        let n = rx.recv(&r).unwrap();
        if n == 0 {
            break;
        }
        got += n;
    }
    assert!(
        got < 2000,
        "a 2 KiB receive buffer cannot hold 2.4 MB ({got})"
    );
}

/// Queues `n` owned datagrams of lengths 1..=n on a batch and runs `flush_with` with a
/// scripted `sendmmsg` double; returns the stats and the offsets of each call.
fn scripted(n: usize, script: &[Result<usize, i32>]) -> (FlushStats, Vec<(u8, usize)>) {
    let sock = bind_reuseport(lo4(), 0, 0).unwrap();
    let dest: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let mut tx = SendQueue::new(64, 64);
    let mut batch = tx.batch(sock.as_fd());
    for i in 0..n {
        batch.push_owned(&vec![i as u8; i + 1], dest).unwrap();
    }
    let mut script: VecDeque<_> = script.iter().copied().collect();
    let mut calls = Vec::new();
    batch.queue.flush_with(|msgs| {
        // SAFETY: the headers point at the queue's owned slots, alive here.
        let first = unsafe { *(*msgs[0].msg_hdr.msg_iov).iov_base.cast::<u8>() };
        calls.push((first, msgs.len()));
        script.pop_front().unwrap_or(Ok(msgs.len()))
    });
    assert!(batch.is_empty());
    let fatal = batch.queue.fatal.take();
    let mut st = batch.queue.take_stats();
    if fatal.is_some() {
        st.last_errno = fatal;
    }
    (st, calls)
}

#[test]
fn partial_sends_resume_at_the_first_unsent_message() {
    let (st, calls) = scripted(10, &[Ok(3), Ok(4), Ok(3)]);
    assert_eq!(calls, vec![(0, 10), (3, 7), (7, 3)]);
    assert_eq!((st.sent, st.bytes, st.syscalls), (10, 55, 3));
}

#[test]
fn full_socket_drops_the_rest_and_counts() {
    let (st, calls) = scripted(10, &[Ok(4), Err(libc::EAGAIN)]);
    assert_eq!(calls, vec![(0, 10), (4, 6)]);
    assert_eq!((st.sent, st.dropped_full, st.dropped_error), (4, 6, 0));
    assert_eq!(st.last_errno, Some(libc::EAGAIN));
    let (st, _) = scripted(3, &[Err(libc::ENOBUFS)]);
    assert_eq!((st.sent, st.dropped_full), (0, 3));
}

#[test]
fn per_destination_errors_skip_one_and_eintr_retries() {
    let (st, calls) = scripted(
        6,
        &[
            Ok(1),
            Err(libc::ECONNREFUSED),
            Err(libc::EINTR),
            Ok(2),
            Err(libc::EHOSTUNREACH),
            Ok(1),
        ],
    );
    assert_eq!(calls, vec![(0, 6), (1, 5), (2, 4), (2, 4), (4, 2), (5, 1)]);
    assert_eq!((st.sent, st.dropped_error, st.dropped_full), (4, 2, 0));
}

#[test]
fn fatal_socket_error_drops_everything_and_is_reported() {
    let (st, calls) = scripted(5, &[Err(libc::EBADF)]);
    assert_eq!(calls.len(), 1);
    assert_eq!(
        (st.sent, st.dropped_error, st.last_errno),
        (0, 5, Some(libc::EBADF))
    );
    // Through the real path: a flush on a closed descriptor number returns the error.
    let sock = bind_reuseport(lo4(), 0, 0).unwrap();
    let mut tx = SendQueue::new(4, 1);
    let dest: SocketAddr = "127.0.0.1:9".parse().unwrap();
    {
        let mut batch = tx.batch(sock.as_fd());
        batch.push(b"x", dest);
        batch.queue.fatal = Some(libc::EBADF); // as an automatic flush would record it
        assert_eq!(batch.flush().unwrap_err().raw_os_error(), Some(libc::EBADF));
    }
}

#[test]
fn a_zero_return_cannot_loop_forever() {
    let (st, calls) = scripted(4, &[Ok(0)]);
    assert_eq!(calls.len(), 1);
    assert_eq!(st.dropped_full, 4);
}

#[test]
fn sockaddr_round_trip() {
    let addrs: [SocketAddr; 4] = [
        "192.0.2.1:5004".parse().unwrap(),
        "0.0.0.0:0".parse().unwrap(),
        SocketAddr::V6(SocketAddrV6::new(
            "fe80::1".parse().unwrap(),
            443,
            0x12345,
            3,
        )),
        "[::ffff:192.0.2.1]:65535".parse().unwrap(),
    ];
    for a in addrs {
        let mut st = zeroed_storage();
        let len = encode_addr(&a, &mut st);
        assert_eq!(decode_addr(&st, len), Some(a));
        assert_eq!(decode_addr(&st, len - 1), None, "short length");
    }
    let mut st = zeroed_storage();
    st.ss_family = libc::AF_UNIX as libc::sa_family_t;
    assert_eq!(decode_addr(&st, 110), None);
}

/// A datagram read late carries the time it arrived, not the time it was read; a
/// socket that does not stamp arrivals gives none.
#[test]
#[allow(clippy::disallowed_methods)] // the kernel's stamps are on the wall clock
fn a_datagram_read_late_carries_the_time_it_arrived() {
    let rx = UdpSocket::bind(lo4()).unwrap();
    stamp_arrivals(&rx).unwrap();
    let tx = UdpSocket::bind(lo4()).unwrap();
    let mut buf = [0u8; 64];
    assert_eq!(
        recv_stamped(&rx, &mut buf).unwrap_err().kind(),
        io::ErrorKind::WouldBlock
    );
    // The kernel turns receive stamping on a moment after the first socket asks.
    std::thread::sleep(Duration::from_millis(50));
    let sent = SystemTime::now();
    tx.send_to(b"late", rx.local_addr().unwrap()).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let got = recv_stamped(&rx, &mut buf).unwrap();
    let read = SystemTime::now();
    assert_eq!((got.len, got.from), (4, tx.local_addr().unwrap()));
    assert_eq!(&buf[..4], b"late");
    let arrived = got.arrived.expect("stamped");
    assert!(
        arrived >= sent - Duration::from_millis(5),
        "{arrived:?} {sent:?}"
    );
    let waited = read.duration_since(arrived).unwrap();
    assert!(waited >= Duration::from_millis(95), "{waited:?}");
    // Cut at the buffer, as `recv_from` cuts it.
    tx.send_to(&[7u8; 100], rx.local_addr().unwrap()).unwrap();
    let got = recv_soon(|| recv_stamped(&rx, &mut buf));
    assert_eq!(got.len, 64);
    // Without `stamp_arrivals`, no stamp.
    let plain = UdpSocket::bind(lo4()).unwrap();
    tx.send_to(b"now", plain.local_addr().unwrap()).unwrap();
    let got = recv_soon(|| recv_stamped(&plain, &mut buf));
    assert_eq!((got.len, got.arrived), (3, None));
}

/// Retries `recv` until it gives a datagram, for up to 5 s.
fn recv_soon(mut recv: impl FnMut() -> io::Result<Stamped>) -> Stamped {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match recv() {
            Ok(got) => return got,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => panic!("{e}"),
        }
    }
}
