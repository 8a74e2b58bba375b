//! See `stockraft_fuzz::peer_batch` (fuzz/harness.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| stockraft_fuzz::peer_batch(data));
