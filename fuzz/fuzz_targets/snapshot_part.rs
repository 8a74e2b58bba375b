//! See `stockraft_fuzz::snapshot_part` (fuzz/harness.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| stockraft_fuzz::snapshot_part(data));
