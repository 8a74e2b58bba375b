//! Durable storage of a replica's Raft log, hard state and snapshots.
//!
//! [`RocksStore`] is what the server runs on; its module lists its keys
//! (the write and fsync order and the fault model: ARCHITECTURE.md, "Every
//! write and fsync, in order"). [`MemStore`] keeps the same state in memory
//! for tests. Both keep the uncompacted log tail in memory
//! ([`log_cache`]) so raft-rs never waits on a disk read.

pub mod log_cache;
pub mod memory;
pub mod rocks;

pub use memory::MemStore;
pub use rocks::RocksStore;
