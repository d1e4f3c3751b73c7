//! Benchmarks for Blindfold. The criterion benches live in `benches/benches/`; run
//! them with `cargo bench -p blindfold-benches`. Results and the commands that
//! produced them are in `docs/benchmarks.md`.
