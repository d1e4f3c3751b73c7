//! The relay engine alone: ns per forwarded media packet at fan-out 1, 10 and 50 —
//! demux, address lookup, header view, SSRC check, fan-out list — with no syscalls.
//! The call is real: participants went through ICE and DTLS in the simulator first.
//!
//! `cargo bench -p blindfold-benches --bench engine`

use std::hint::black_box;

use blindfold_relay::engine::Handled;
use blindfold_tests::Sim;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

fn forward(c: &mut Criterion) {
    let mut g = c.benchmark_group("engine_forward");
    g.throughput(Throughput::Elements(1));
    for fanout in [1usize, 10, 50] {
        let mut sim = Sim::new(1);
        let sender = sim.join("sender", "conf");
        for i in 0..fanout {
            sim.join(&format!("r{i}"), "conf");
        }
        sim.run_until_connected();
        sim.send_audio(sender, &[0x55; 160]);
        let mut packet = sim.member(sender).sent.last().unwrap().clone();
        let from = sim.member(sender).addr;
        let now = sim.now;
        let engine = &mut sim.shards[0];
        g.bench_with_input(
            BenchmarkId::from_parameter(fanout),
            &fanout,
            |b, &fanout| {
                b.iter(
                    || match engine.handle_datagram(now, from, black_box(&mut packet)) {
                        Handled::Forward(dests) => {
                            assert_eq!(dests.len(), fanout);
                            black_box(dests.as_ptr())
                        }
                        other => panic!("{other:?}"),
                    },
                )
            },
        );
    }
    g.finish();
}

criterion_group!(benches, forward);
criterion_main!(benches);
