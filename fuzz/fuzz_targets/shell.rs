//! The relay's TOML config and its /metrics request reader on arbitrary bytes.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| blindfold_relay::__fuzz::shell(data));
