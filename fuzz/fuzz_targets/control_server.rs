#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| blindfold_relay::__fuzz::control_server(data));
