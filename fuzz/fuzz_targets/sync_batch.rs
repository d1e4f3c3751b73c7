#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| blindfold_signaling::__fuzz::sync_batch(data));
