//! Durable storage of a replica's Raft log, hard state and snapshots.
//!
//! [`RocksStore`] is what the server runs on; its module documents every
//! write and fsync in order, and the fault model. [`MemStore`] keeps the same
//! state in memory for tests. Both keep the uncompacted log tail in memory
//! ([`log_cache`]) so raft-rs never waits on a disk read.

pub mod log_cache;
pub mod memory;
pub mod rocks;

pub use memory::MemStore;
pub use rocks::RocksStore;
