//! The packet path allocates nothing: every parser, builder and SRTP/SRTCP
//! protect/unprotect here runs under a counting global allocator and must leave the
//! count at zero once contexts are set up.
//!
//! Counting is per thread, so the test harness's own threads do not disturb it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use std::net::SocketAddr;

use blindfold_relay::id::{ExtId, Pt, RtpTime, Ssrc, WireSeq};
use blindfold_relay::wire::stun::{
    Class, IntegrityKey, Method, StunMessage, StunWriter, TransactionId,
};
use blindfold_relay::wire::{self, rtp, rtp::RtpHeader};

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

/// Runs `f` and returns how many allocations it made on this thread.
fn allocations(f: impl FnOnce()) -> u64 {
    let before = ALLOCS.with(Cell::get);
    f();
    ALLOCS.with(Cell::get) - before
}

#[test]
fn the_counter_sees_allocations() {
    // Guards the guard: if counting were broken every other test here would pass.
    assert!(allocations(|| drop(std::hint::black_box(vec![1u8; 64]))) >= 1);
}

#[test]
fn demux_and_rtp_header_do_not_allocate() {
    let mut pkt = [0u8; 200];
    pkt[..12].copy_from_slice(&[0x80, 96, 0, 1, 0, 0, 0, 1, 0, 0, 0, 7]);
    let n = allocations(|| {
        for _ in 0..100 {
            let d = std::hint::black_box(&pkt[..]);
            assert_eq!(wire::classify(d), wire::Kind::Rtp);
            let h = RtpHeader::parse(d).unwrap();
            std::hint::black_box((h.ssrc(), h.seq(), h.payload().len()));
        }
    });
    assert_eq!(n, 0);
}

#[test]
fn rtp_extensions_and_writer_do_not_allocate() {
    let level = [0x80 | 30];
    let marking = [0xa0];
    let tcc = [0x12, 0x34];
    let exts = [
        (ExtId(1), &level[..]),
        (ExtId(4), &marking[..]),
        (ExtId(5), &tcc[..]),
    ];
    let fields = rtp::RtpFields {
        padding: false,
        marker: true,
        payload_type: Pt(96),
        seq: WireSeq(7),
        timestamp: RtpTime(90_000),
        ssrc: Ssrc(0x1234_5678),
        csrcs: &[],
    };
    let mut buf = [0u8; 1500];
    let n = allocations(|| {
        for _ in 0..100 {
            let len = rtp::write_header(&mut buf, &fields, &exts).unwrap();
            let h = RtpHeader::parse(std::hint::black_box(&buf[..len + 100])).unwrap();
            for e in h.extensions() {
                std::hint::black_box(e.unwrap());
            }
            let a = rtp::audio_level(h.extension(ExtId(1)).unwrap()).unwrap();
            let f = rtp::frame_marking(h.extension(ExtId(4)).unwrap()).unwrap();
            let t = rtp::transport_cc_seq(h.extension(ExtId(5)).unwrap()).unwrap();
            std::hint::black_box((a, f, t));
        }
    });
    assert_eq!(n, 0);
}

#[test]
fn stun_check_and_answer_do_not_allocate() {
    // What the ICE-lite agent does per connectivity check: parse, verify integrity and
    // fingerprint with the session's prepared key, write the success response.
    let key = IntegrityKey::new(b"relaypassword-relaypassword");
    let mut req = [0u8; 200];
    let tid = TransactionId([7; 12]);
    let len = {
        let mut w = StunWriter::new(&mut req, Class::Request, Method::Binding, tid).unwrap();
        w.add_username("relayufrag:clientufrag").unwrap();
        w.add_priority(0x6e00_1eff).unwrap();
        w.add_use_candidate().unwrap();
        w.add_ice_controlling(42).unwrap();
        w.add_message_integrity(&key).unwrap();
        w.finish_with_fingerprint().unwrap()
    };
    let from: SocketAddr = "192.0.2.7:40000".parse().unwrap();
    let mut resp = [0u8; 200];
    let n = allocations(|| {
        for _ in 0..100 {
            let m = StunMessage::parse(std::hint::black_box(&req[..len])).unwrap();
            m.verify_fingerprint().unwrap();
            m.verify_integrity_with(&key).unwrap();
            assert_eq!(m.username().unwrap(), Some("relayufrag:clientufrag"));
            assert!(m.use_candidate().unwrap());
            assert!(m.first_unknown_required().is_none());
            let mut w = StunWriter::new(
                &mut resp,
                Class::SuccessResponse,
                Method::Binding,
                m.transaction_id(),
            )
            .unwrap();
            w.add_xor_mapped_address(from).unwrap();
            w.add_message_integrity(&key).unwrap();
            std::hint::black_box(w.finish_with_fingerprint().unwrap());
        }
    });
    assert_eq!(n, 0);
}
