//! SRTP protect and unprotect of a 1200-byte RTP packet in each profile, with the
//! one-byte MKI every end-to-end packet carries.
//!
//! `cargo bench -p blindfold-benches --bench srtp`

// A benchmark times real work with the real clock.
#![allow(clippy::disallowed_methods)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use blindfold_relay::id::KeyIndex;
use blindfold_relay::srtp::{SrtpContext, SrtpProfile};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const PACKET: usize = 1200;
const CHUNK: usize = 1024;

fn context(profile: SrtpProfile) -> SrtpContext {
    let master: Vec<u8> = (0..profile.master_len() as u8).collect();
    SrtpContext::new(profile, &master, Some(KeyIndex(0))).unwrap()
}

fn plain_packet(seq: u16) -> [u8; 1500] {
    let mut buf = [0x5a; 1500];
    buf[..12].copy_from_slice(&[0x80, 96, 0, 0, 0, 0, 0x10, 0, 0x12, 0x34, 0x56, 0x78]);
    buf[2..4].copy_from_slice(&seq.to_be_bytes());
    buf
}

fn srtp(c: &mut Criterion) {
    let mut g = c.benchmark_group("srtp_1200B");
    g.throughput(Throughput::Bytes(PACKET as u64));
    for profile in SrtpProfile::ALL {
        let name = format!("{profile:?}");

        let mut tx = context(profile);
        let mut buf = plain_packet(0);
        let mut seq = 0u16;
        g.bench_function(format!("protect/{name}"), |b| {
            b.iter(|| {
                // A new sequence number each time: SRTP never protects an index twice.
                seq = seq.wrapping_add(1);
                buf[2..4].copy_from_slice(&seq.to_be_bytes());
                tx.protect_rtp(black_box(&mut buf), PACKET).unwrap()
            })
        });

        // Pre-protected packets with rising indexes; a fresh receiver per chunk, because
        // its replay window rightly rejects a packet it has already accepted.
        let mut tx = context(profile);
        let protected: Vec<([u8; 1500], usize)> = (0..CHUNK as u16)
            .map(|s| {
                let mut p = plain_packet(s);
                let n = tx.protect_rtp(&mut p, PACKET).unwrap();
                (p, n)
            })
            .collect();
        g.bench_function(format!("unprotect/{name}"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                let mut left = iters as usize;
                while left > 0 {
                    let n = left.min(CHUNK);
                    let mut rx = context(profile);
                    let mut work = protected[..n].to_vec();
                    let start = Instant::now();
                    for (p, len) in &mut work {
                        black_box(rx.unprotect_rtp(&mut p[..*len]).unwrap());
                    }
                    total += start.elapsed();
                    left -= n;
                }
                total
            })
        });
    }
    g.finish();
}

criterion_group!(benches, srtp);
criterion_main!(benches);
