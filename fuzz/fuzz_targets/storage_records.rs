//! See `stockraft_fuzz::storage_records` (fuzz/harness.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| stockraft_fuzz::storage_records(data));
