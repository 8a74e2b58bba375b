//! See `stockraft_fuzz::log_batch` (fuzz/harness.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| stockraft_fuzz::log_batch(data));
