//! See `stockraft_fuzz::public_request` (fuzz/harness.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| stockraft_fuzz::public_request(data));
