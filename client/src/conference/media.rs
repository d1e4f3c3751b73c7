//! The conference's media loop: moves the participant's datagrams over its UDP socket,
//! runs its timers, our key schedule and the synthetic sources, and turns what the
//! participant decrypts into [`ConferenceEvent`]s.
//!
//! It runs on a thread of its own ([`start`]), on a current-thread runtime, not
//! on the application's: a datagram read late carries a late arrival time, and the
//! delay-based estimate (REMB) and the relay's probes are measured by arrival times.
//! On a shared runtime, the Matrix crypto of a member joining (Olm sessions, room keys)
//! kept the loop waiting long enough for the relay to see congestion and take
//! everyone's full layers away. Each datagram's arrival time is also the kernel's
//! (`SO_TIMESTAMPNS`), not the loop's: each turn reads everything waiting, each
//! datagram at its stamp, before the timers run.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use aws_lc_rs::digest;
use blindfold_relay::id::KeyIndex;
use blindfold_relay::shell::udp::{recv_stamped, stamp_arrivals};
use blindfold_relay::wire::rtp::RtpHeader;
use blindfold_relay::wire::{Datagram, demux};
use tokio::io::Interest;
use tokio::net::UdpSocket;

use super::{ConferenceEvent, Inner, MemberId};
use crate::media::mki_from_end;
use crate::udp::arrival;
use crate::{DropReason, Event};

/// Longest sleep when nothing is scheduled (the participant always has a timer once
/// started; this is a backstop).
const IDLE: Duration = Duration::from_millis(200);

/// Datagrams read in one turn at most, before the timers and the sources run again
/// (a stall of seconds at a conference's packet rates).
const READ_PER_TURN: usize = 1024;

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let d = digest::digest(&digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Starts the media loop on `sock` (non-blocking) on a thread of its own. Must be
/// called within a tokio runtime, the application's: what the loop spawns (a rekey's
/// publishing) runs on it, and the loop runs as long as the task returned does — until
/// it is aborted, or the runtime shuts down (a conference without its runtime is one
/// whose application is gone) — and until the conference stops (`Inner::stopped`).
pub(super) async fn start(
    inner: Arc<Inner>,
    sock: std::net::UdpSocket,
) -> io::Result<tokio::task::JoinHandle<()>> {
    let app = tokio::runtime::Handle::current();
    let (alive, gone) = tokio::sync::oneshot::channel::<()>();
    let (ready, started) = tokio::sync::oneshot::channel::<io::Result<()>>();
    // The runtime is built, and dropped, on the thread: a runtime dropped in an async
    // context (ours, on an error) panics.
    std::thread::Builder::new()
        .name("blindfold-media".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            let rt = match rt {
                Ok(rt) => rt,
                Err(e) => return drop(ready.send(Err(e))),
            };
            // Where the kernel cannot stamp arrivals, they are the loop's reads.
            let _ = stamp_arrivals(&sock);
            let sock = {
                let _in = rt.enter();
                UdpSocket::from_std(sock)
            };
            let sock = match sock {
                Ok(sock) => sock,
                Err(e) => return drop(ready.send(Err(e))),
            };
            let _ = ready.send(Ok(()));
            rt.block_on(async move {
                tokio::select! {
                    () = run(inner, sock, app) => {}
                    _ = gone => {}
                }
            });
        })?;
    started
        .await
        .unwrap_or_else(|_| Err(io::Error::other("the media thread ended")))?;
    Ok(tokio::spawn(async move {
        let _alive = alive;
        std::future::pending::<()>().await;
    }))
}

async fn run(inner: Arc<Inner>, sock: UdpSocket, app: tokio::runtime::Handle) {
    let mut buf = vec![0u8; 2048];
    let mut out = Vec::new();
    loop {
        if inner.stopped.load(Ordering::Acquire) {
            return;
        }
        let deadline = {
            let st = inner.lock();
            [
                st.participant.poll_timeout(),
                st.driver
                    .as_ref()
                    .filter(|_| !inner.is_withheld())
                    .and_then(|d| d.poll_timeout(&st.participant)),
                st.keys.next_deadline(),
            ]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or_else(|| Instant::now() + IDLE)
        };
        tokio::select! {
            // Datagrams first: the timers below would otherwise run at a later `now`
            // than their arrivals.
            biased;
            r = sock.readable() => match r {
                // Everything waiting, each at its arrival: before the turn below runs
                // the timers at a later `now`, which the participant would then take
                // for the arrivals' too (it takes no time back).
                Ok(()) => {
                    let (now, wall) = (Instant::now(), SystemTime::now());
                    for _ in 0..READ_PER_TURN {
                        match sock.try_io(Interest::READABLE, || recv_stamped(&sock, &mut buf)) {
                            Ok(got) => {
                                let arrived = arrival(now, wall, got.arrived);
                                take(&inner, arrived, got.from, &mut buf[..got.len]);
                            }
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                            // ICMP port unreachable and the like: the next datagram may be
                            // fine.
                            Err(e)
                                if matches!(
                                    e.kind(),
                                    io::ErrorKind::ConnectionRefused | io::ErrorKind::Interrupted
                                ) => {}
                            Err(_) => {
                                tokio::time::sleep(Duration::from_millis(1)).await;
                                break;
                            }
                        }
                    }
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(1)).await,
            },
            _ = tokio::time::sleep_until(deadline.into()) => {}
            _ = inner.wake.notified() => {}
        }
        {
            let now = Instant::now();
            let mut st = inner.lock();
            if st.participant.poll_timeout().is_some_and(|t| t <= now) {
                st.participant.handle_timeout(now);
            }
            let actions = st.keys.poll(now);
            if !actions.is_empty() {
                inner.apply(&mut st, actions);
            }
            if st.keys.take_owed() {
                // Leaves came faster than keys could be switched to: the one that
                // waited is in use now, and the rekey owed since follows.
                let inner = inner.clone();
                app.spawn(async move { inner.publish_or_withhold(true).await });
            }
            let st = &mut *st;
            if let Some(d) = st.driver.as_mut().filter(|_| !inner.is_withheld()) {
                // A refused packet is lost (the driver counts it); the rest go next time.
                let _ = d.drive(&mut st.participant, now);
            }
            drain(&inner, st, None);
            while let Some(t) = st.participant.poll_transmit() {
                out.push(t);
            }
        }
        for t in out.drain(..) {
            if inner.report_sent
                && let Datagram::Rtp(p) = demux(&t.bytes)
                && let Ok(h) = RtpHeader::parse(p)
            {
                let profile = inner.lock().profile;
                let key = t
                    .bytes
                    .len()
                    .checked_sub(mki_from_end(profile))
                    .and_then(|i| t.bytes.get(i))
                    .map_or(KeyIndex(0), |b| KeyIndex(*b));
                inner.emit(ConferenceEvent::Sent {
                    ssrc: h.ssrc(),
                    seq: h.seq().0,
                    key,
                    sha256: sha256(&t.bytes),
                });
            }
            if inner.stopped.load(Ordering::Acquire) {
                // Nothing after the close_notify `Conference::stop` sent.
                return;
            }
            // A lost datagram is like a lost packet on the network.
            let _ = sock.send_to(&t.bytes, t.dest).await;
        }
    }
}

/// Hands the participant one datagram that arrived at `arrived`.
fn take(inner: &Inner, arrived: Instant, from: SocketAddr, datagram: &mut [u8]) {
    // The SSRC is read before decryption, which works in place.
    let rtp_ssrc = match demux(datagram) {
        Datagram::Rtp(p) => RtpHeader::parse(p).ok().map(|h| h.ssrc()),
        _ => None,
    };
    let hash = rtp_ssrc.map(|_| sha256(datagram));
    let mut st = inner.lock();
    // Bad datagrams are the participant's to count (Stats::drops); media that does not
    // decrypt is also the application's business.
    let r = st.participant.handle_datagram(arrived, from, datagram);
    if let (Err(reason @ (DropReason::Srtp(_) | DropReason::UnknownSsrc)), Some(ssrc)) =
        (r, rtp_ssrc)
    {
        let from = st
            .roster
            .members()
            .find(|m| m.streams.iter().any(|s| s.ssrc == ssrc))
            .map(MemberId::from);
        inner.emit(ConferenceEvent::Undecryptable { ssrc, from, reason });
    }
    drain(inner, &mut st, hash);
}

/// Hands the participant's events on; `hash` is the datagram that produced them.
fn drain(inner: &Inner, st: &mut super::State, hash: Option<[u8; 32]>) {
    while let Some(ev) = st.participant.poll_event() {
        if let Some(d) = st.driver.as_mut() {
            d.handle_event(&ev);
        }
        match ev {
            Event::Media(packet) => {
                let from = st.roster.member(packet.sender).map(MemberId::from);
                inner.emit(ConferenceEvent::Media {
                    packet,
                    from,
                    wire_sha256: hash.unwrap_or([0; 32]),
                });
            }
            Event::Connected { .. } => {
                inner.emit(ConferenceEvent::Connected { at: Instant::now() })
            }
            Event::Reconnecting => inner.emit(ConferenceEvent::Reconnecting { at: Instant::now() }),
            Event::AddressChanged(address) => {
                inner.emit(ConferenceEvent::AddressChanged { address })
            }
            Event::Failed(reason) => inner.emit(ConferenceEvent::ended(format!("media: {reason}"))),
            _ => {}
        }
    }
}
