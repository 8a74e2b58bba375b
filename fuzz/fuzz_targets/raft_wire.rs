//! See `stockraft_fuzz::raft_wire` (fuzz/harness.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| stockraft_fuzz::raft_wire(data));
