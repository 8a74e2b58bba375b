//! See `stockraft_fuzz::snapshot_image` (fuzz/harness.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| stockraft_fuzz::snapshot_image(data));
