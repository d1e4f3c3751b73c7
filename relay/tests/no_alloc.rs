//! The packet path allocates nothing: every parser, builder and SRTP/SRTCP
//! protect/unprotect here runs under a counting global allocator and must leave the
//! count at zero once contexts are set up.
//!
//! Counting is per thread, so the test harness's own threads do not disturb it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use blindfold_relay::wire::{self, rtp::RtpHeader};

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
