//! Allocation checks for `blindfold_relay::srtp`, in their own test binary so the
//! counting global allocator does not leak into other tests.
//!
//! - `no_allocation_per_packet` counts Rust-side allocations with a counting global
//!   allocator. aws-lc allocates with libc `malloc`, which that allocator does not see,
//!   so C-side allocations are checked with valgrind instead:
//! - `valgrind_loop` (ignored) protects and unprotects `SRTP_LOOP_N` packets per
//!   profile; run it under valgrind with two values of N and compare "total heap usage":
//!
//! ```text
//! cargo test -p blindfold-relay --test vectors --no-run
//! SRTP_LOOP_N=1000 valgrind target/debug/deps/vectors-* --ignored valgrind_loop --test-threads=1
//! SRTP_LOOP_N=2000 valgrind target/debug/deps/vectors-* --ignored valgrind_loop --test-threads=1
//! ```

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use blindfold_relay::id::KeyIndex;
use blindfold_relay::srtp::{SrtpContext, SrtpProfile};

struct Counting;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: delegates every call unchanged to the system allocator; the counter is a
// const-initialised thread-local Cell, which never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocs() -> u64 {
    ALLOCS.with(|c| c.get())
}

fn master(profile: SrtpProfile, seed: u8) -> Vec<u8> {
    (0..profile.master_len() as u8)
        .map(|i| i.wrapping_mul(13) ^ seed)
        .collect()
}

/// One sender and one receiver per profile and MKI mode, with their SSRCs already seen.
struct Fixture {
    tx: SrtpContext,
    rx: SrtpContext,
    seq: u16,
}

const SSRCS: [u32; 3] = [0x1111, 0x2222, 0x3333];

impl Fixture {
    fn all() -> Vec<Fixture> {
        let mut out = Vec::new();
        for profile in SrtpProfile::ALL {
            for mki in [None, Some(KeyIndex(1))] {
                let make = || {
                    let mut c = SrtpContext::new(profile, &master(profile, 1), mki).unwrap();
                    if mki.is_some() {
                        c.add_key(KeyIndex(2), &master(profile, 2)).unwrap();
                    }
                    c
                };
                let mut f = Fixture {
                    tx: make(),
                    rx: make(),
                    seq: 65000,
                };
                // First sight of each SSRC may allocate; do it before counting.
                f.round(100);
                out.push(f);
            }
        }
        out
    }

    /// Protects and unprotects one SRTP and one SRTCP packet per SSRC, on the stack.
    fn round(&mut self, payload: usize) {
        let mut buf = [0u8; 1500];
        self.seq = self.seq.wrapping_add(1);
        // Alternate the key, so MKI lookup of both keys is exercised.
        if self.tx.has_mki() {
            let k = if self.seq.is_multiple_of(2) { 1 } else { 2 };
            self.tx.set_active_key(KeyIndex(k)).unwrap();
        }
        for ssrc in SSRCS {
            let len = 12 + payload;
            buf[..12].copy_from_slice(&[0x80, 96, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0]);
            buf[2..4].copy_from_slice(&self.seq.to_be_bytes());
            buf[8..12].copy_from_slice(&ssrc.to_be_bytes());
            let n = self.tx.protect_rtp(&mut buf, len).unwrap();
            let m = self.rx.unprotect_rtp(&mut buf[..n]).unwrap();
            assert_eq!(m, len);

            let len = 8 + payload;
            buf[..8].copy_from_slice(&[0x81, 201, 0, 1, 0, 0, 0, 0]);
            buf[4..8].copy_from_slice(&ssrc.to_be_bytes());
            let n = self.tx.protect_rtcp(&mut buf, len).unwrap();
            let m = self.rx.unprotect_rtcp(&mut buf[..n]).unwrap();
            assert_eq!(m, len);
        }
    }
}

#[test]
fn no_allocation_per_packet() {
    let mut fixtures = Fixture::all();
    let before = allocs();
    for i in 0..200 {
        for f in &mut fixtures {
            f.round(1 + (i * 37) % 1200);
        }
    }
    let after = allocs();
    assert_eq!(after - before, 0, "protect/unprotect allocated");
    // Sanity: the counter does see allocations, e.g. setting up a context.
    let profile = SrtpProfile::AeadAes128Gcm;
    let before = allocs();
    let ctx = SrtpContext::new(profile, &master(profile, 1), None).unwrap();
    assert!(allocs() > before);
    drop(ctx);
}

#[test]
#[ignore = "run under valgrind with SRTP_LOOP_N set; see the module docs"]
fn valgrind_loop() {
    let n: usize = std::env::var("SRTP_LOOP_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let mut fixtures = Fixture::all();
    for i in 0..n {
        for f in &mut fixtures {
            f.round(1 + (i * 37) % 1200);
        }
    }
}
