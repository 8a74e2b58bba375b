//! stockraft: a Raft-replicated inventory reservation server.
//!
//! Retailers keep one real-time count of stock per SKU per fulfilment node
//! and take holds on it at checkout. stockraft keeps those counters in
//! memory, replicates every change through a Raft log stored in RocksDB, and
//! answers only once a change is durable, so no acknowledged reservation is
//! lost and no SKU is oversold while machines fail.
//!
//! # Map of the crate
//!
//! Each module is one concept; the arrows show who calls whom.
//!
//! ```text
//!  cli, load ──► client ──gRPC──► server ──► replica ──► inventory
//!                                    │  │        │
//!                                    │  │        └──► storage (RocksDB)
//!                                    │  └──► inventory (reads, no lock held by apply)
//!                                    └──► client (reaching other members)
//! ```
//!
//! - [`inventory`]: the state machine. Counters, reservations, expiry and
//!   exactly-once rules. Pure and deterministic: no clock, no I/O.
//! - [`replica`]: the replication core. Drives raft-rs: batches proposals
//!   into log entries, persists through the [`replica::LogStore`] trait,
//!   applies committed entries and matches answers to waiting callers.
//!   Sans-IO: time and messages come in as arguments, messages go out as
//!   return values.
//! - [`storage`]: the RocksDB implementation of `LogStore` (and an in-memory
//!   one for tests); the write and fsync order they keep is described once,
//!   in ARCHITECTURE.md.
//! - [`server`]: the process around the core: the replication thread, the
//!   tonic services (a thin adapter from protobuf to commands and from typed
//!   errors to status codes), health, reflection, metrics and shutdown.
//! - [`client`]: connections to a server: endpoints, TLS, channels with
//!   deadlines, bearer tokens; used by the CLI, the load harness, the server
//!   (to reach other members) and tests.
//! - `cli` (in the binary, src/cli/): the `stockraft` command line.
//! - [`load`]: `stockraft load`, the peak-planning load harness.
//! - [`sim`]: the deterministic simulator and its checkers (replicas, disks,
//!   network, clocks and clients in one process, driven by one seed).
//! - [`limits`]: every bound, in one place.
//! - [`chunked`]: a streaming call's messages handed over a group at a time
//!   (the server's `Stream` answers, the harness's calls).
//! - [`proto`]: generated protobuf code (the public API, the internal log,
//!   snapshot and peer formats, raft-rs's wire format).
//!
//! Not in this crate: the benchmark tools (bench/, a crate of their own, so
//! the server never links them) and the fuzz targets (fuzz/).
//! - [`tls`]: TLS settings from files, and members named in certificates.
//! - [`certs`]: `stockraft certs`, a CA and a cluster's certificates.

#![cfg_attr(not(test), deny(clippy::unwrap_used))]
// Functions of at most 70 code lines (clippy.toml), tests excepted.
#![cfg_attr(not(test), warn(clippy::too_many_lines))]

pub mod certs;
pub mod chunked;
pub mod client;
pub mod inventory;
pub mod limits;
pub mod load;
pub mod proto;
pub mod replica;
pub mod server;
pub mod sim;
pub mod storage;
pub mod tls;
