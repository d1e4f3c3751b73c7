//! Real sockets on loopback: the bare forwarder delivers every datagram, unchanged, to
//! every destination; the blaster and sinks count what they should.
#![cfg(target_os = "linux")]

use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use blindfold_benches::blast::{BlastConfig, Sinks, blast, wait_ready};
use blindfold_benches::forward::{Forwarder, ForwarderConfig};
use blindfold_relay::shell::signals::Shutdown;

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

#[test]
fn every_sink_gets_all_100_datagrams_unchanged() {
    let sinks: Vec<UdpSocket> = (0..3)
        .map(|_| UdpSocket::bind(loopback()).unwrap())
        .collect();
    for s in &sinks {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    }
    let config = ForwarderConfig {
        listen: loopback(),
        workers: 2,
        dests: sinks.iter().map(|s| s.local_addr().unwrap()).collect(),
        recv_buffer: 1 << 20,
        send_buffer: 1 << 20,
    };
    let fwd = Forwarder::start(&config, Shutdown::new()).unwrap();
    let target = fwd.local_addr();
    assert_ne!(target.port(), 0);

    let client = UdpSocket::bind(loopback()).unwrap();
    let sent: Vec<Vec<u8>> = (0..100u32)
        .map(|i| {
            // Distinct contents and lengths, so a mix-up or truncation shows.
            let mut d = i.to_be_bytes().to_vec();
            d.extend((0..(i * 7 % 300)).map(|k| (k as u8) ^ (i as u8)));
            d
        })
        .collect();
    for d in &sent {
        client.send_to(d, target).unwrap();
    }

    let mut expected: BTreeMap<Vec<u8>, usize> = BTreeMap::new();
    for d in &sent {
        *expected.entry(d.clone()).or_default() += 1;
    }
    let mut buf = [0u8; 2048];
    for (k, sink) in sinks.iter().enumerate() {
        let mut got: BTreeMap<Vec<u8>, usize> = BTreeMap::new();
        for n in 0..100 {
            let (len, from) = sink
                .recv_from(&mut buf)
                .unwrap_or_else(|e| panic!("sink {k} got only {n} datagrams: {e}"));
            assert_eq!(from, target, "sent from the forwarder's port");
            *got.entry(buf[..len].to_vec()).or_default() += 1;
        }
        assert_eq!(got, expected, "sink {k} got exactly the datagrams sent");
    }

    let totals = fwd.stop().unwrap();
    assert_eq!(totals.received, 100);
    assert_eq!(totals.sent, 300);
    assert_eq!(totals.dropped(), 0);
}

#[test]
fn stop_returns_promptly_when_idle() {
    let sink = UdpSocket::bind(loopback()).unwrap();
    let config = ForwarderConfig {
        listen: loopback(),
        workers: 3,
        dests: vec![sink.local_addr().unwrap()],
        recv_buffer: 0,
        send_buffer: 0,
    };
    let shutdown = Shutdown::new();
    let fwd = Forwarder::start(&config, shutdown.clone()).unwrap();
    shutdown.trigger();
    assert!(fwd.is_stopping());
    assert_eq!(fwd.join().unwrap().received, 0);
}

#[test]
fn blaster_through_forwarder_into_sinks_counts_everything() {
    let sinks = Sinks::bind("127.0.0.1".parse().unwrap(), &[0, 0]).unwrap();
    let config = ForwarderConfig {
        listen: loopback(),
        workers: 1,
        dests: sinks.addrs().to_vec(),
        recv_buffer: 1 << 20,
        send_buffer: 1 << 20,
    };
    let fwd = Forwarder::start(&config, Shutdown::new()).unwrap();
    let target = fwd.local_addr();
    assert!(wait_ready(target, &sinks, 100, Duration::from_secs(5)).unwrap());
    std::thread::sleep(Duration::from_millis(50));
    let before = sinks.counts();
    let stats = blast(&BlastConfig {
        target,
        senders: 2,
        size: 100,
        rate: 2000.0,
        duration: Duration::from_millis(250),
        burst: Duration::from_millis(1),
    })
    .unwrap();
    assert_eq!(stats.offered, 500);
    assert_eq!(stats.sent + stats.shortfall, 500);
    std::thread::sleep(Duration::from_millis(200));
    let after = sinks.stop().unwrap();
    fwd.stop().unwrap();
    for (a, b) in after.counts.iter().zip(&before) {
        assert_eq!(a - b, stats.sent, "each sink counts every datagram sent");
    }
    // Every blasted datagram carries its send time; the probes carry none.
    assert_eq!(
        after.latency.count(),
        2 * stats.sent,
        "every datagram timed once"
    );
    assert!(after.latency.min().is_some_and(|ns| ns > 0));
}
