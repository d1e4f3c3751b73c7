//! The shell's packet path allocates nothing: `RecvBatch::recv`, iterating the batch,
//! `SendBatch::push_fanout`/`push_owned`, `flush`, and metric increments run under a
//! counting global allocator (per thread, so the harness's threads do not disturb it).
#![cfg(target_os = "linux")]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use blindfold_relay::shell::metrics::{Labels, Metrics};
use blindfold_relay::shell::udp::{RecvBatch, SendQueue, bind_reuseport};

struct Counting;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocs() -> u64 {
    ALLOCS.with(Cell::get)
}

static DROPS: Labels<1> = Labels {
    metric: "d_total",
    help: "d",
    label: "reason",
    values: ["x"],
};
static SESSIONS: Labels<1> = Labels {
    metric: "s",
    help: "s",
    label: "state",
    values: ["x"],
};

#[test]
fn recv_fanout_flush_and_counters_do_not_allocate() {
    assert!(
        {
            let before = allocs();
            drop(std::hint::black_box(vec![1u8; 64]));
            allocs() - before
        } >= 1,
        "the counter sees allocations"
    );

    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let relay = bind_reuseport(any, 1 << 20, 1 << 20).unwrap();
    let sender = UdpSocket::bind(any).unwrap();
    let sinks: Vec<UdpSocket> = (0..8).map(|_| UdpSocket::bind(any).unwrap()).collect();
    let dests: Vec<SocketAddr> = sinks.iter().map(|s| s.local_addr().unwrap()).collect();
    let metrics = Metrics::new(1, &DROPS, &SESSIONS);
    let w = metrics.worker(0).unwrap();
    let mut rx = RecvBatch::new(32);
    let mut tx = SendQueue::new(256, 8);
    for i in 0..64u8 {
        sender
            .send_to(&[i; 1000], relay.local_addr().unwrap())
            .unwrap();
    }

    let before = allocs();
    let mut forwarded = 0u64;
    let mut sent = 0u64;
    let deadline = Instant::now() + Duration::from_secs(5);
    while forwarded < 64 && Instant::now() < deadline {
        if rx.recv(&relay).unwrap() == 0 {
            std::thread::yield_now();
            continue;
        }
        let mut batch = tx.batch(relay.as_fd());
        for (from, buf) in rx.iter_mut() {
            w.packets_in.inc();
            w.bytes_in.add(buf.len() as u64);
            let buf: &[u8] = buf;
            batch.push_fanout(buf, &dests);
            batch.push_owned(&buf[..20], from).unwrap();
            forwarded += 1;
        }
        let st = batch.flush().unwrap();
        w.packets_out.add(st.sent);
        w.drops.add(0, st.dropped_full + st.dropped_error);
        w.sessions.set(0, 1);
        sent += st.sent;
    }
    let n = allocs() - before;
    assert_eq!(forwarded, 64);
    assert_eq!(sent, 64 * 9);
    assert_eq!(n, 0, "allocations on the packet path");
}
