//! Deterministic simulation of a stockraft cluster, in the spirit of
//! FoundationDB's simulator and TigerBeetle's VOPR.
//!
//! One seeded random generator drives everything: 3 or 5 replicas running
//! the real replication core ([`crate::replica::Replica`]) inside the
//! server's own loop ([`crate::replica::Driver`]: group commit, the gate
//! on unsynced writes, ticks, groups of answers, shutdown), whose syncs and
//! snapshots land at seeded times as the server's threads would finish
//! them, and the real state machine over simulated disks (`disk::SimDisk`, which lose
//! unsynced writes on a crash), a simulated network (`network::Network`)
//! that delays, drops, duplicates and reorders messages and makes
//! partitions, drifting clocks and clocks set hours off, crashes and
//! restarts, members paused for seconds, disks that fail (EIO, ENOSPC) or
//! stall, snapshot chunks damaged at rest, data dirs lost and rebuilt,
//! leadership transfers,
//! and clients that issue the whole API and retry with the same ids after a
//! timeout, as real clients do. Time is simulated, so a run is exact: the
//! same seed gives the same run, bit for bit.
//!
//! What is checked (`checker.rs`, `durability.rs`); each failure names
//! its kind ([`ViolationKind`]), so a test of an injected [`Bug`] names the
//! checker that must catch it:
//! - safety: at most one leader per term; a committed entry never changes;
//!   replicas at the same applied index have the same state digest;
//! - durability: a member restarts with every entry it had persisted and
//!   every vote it had granted (unless its data dir was lost);
//! - inventory: the real state machine asserts its invariants after every
//!   entry (reserved = open lines, never negative, no reserve below zero);
//!   an independent model (`model::Model`) replays the committed log, and
//!   every acknowledged answer must be the model's answer for that entry,
//!   the replicas' final counters and holds must be the model's (so every
//!   acknowledged operation took effect exactly once, no hold expired
//!   early, stock changed only by commits, sales, adjustments and sets);
//! - client history: the log order is a linearization: an operation
//!   acknowledged before another began sits earlier in the log, and every
//!   read returns the model's state at the index it read at (a
//!   linearizable read at an index no older than any write acknowledged
//!   before it started);
//! - liveness: once faults stop, a leader is elected and every pending
//!   request completes within a bounded simulated time.
//!
//! The files, one concept each:
//! - `world.rs`: the simulated world (nodes, network, clients) and its
//!   millisecond loop, then the settling and the final checks;
//! - `node.rs`: one simulated node: its driver, its disk while it is down,
//!   its drifting clock, the sync and snapshot it runs for its driver;
//! - `replicas.rs`: each millisecond's work for the drivers (messages in,
//!   syncs and snapshots landing, turns) and their effects acted on;
//! - `requests.rs`: clients' attempts handed to a node, and the answers
//!   routed back to them;
//! - `fault.rs`: the fault mix a seed draws, and the crashes, restarts,
//!   partitions, transfers and clock jumps it injects;
//! - `disk_faults.rs`: a member's data dir lost, and its rebuild from the
//!   peers;
//! - `pause.rs`: members stopped for seconds and resumed (process faults);
//! - `operator.rs`: membership changes, as the Cluster service makes them;
//! - `client.rs`, `model.rs`, `checker.rs`, `disk.rs`, `network.rs`: the
//!   clients, the oracle, the checkers, the disk and the network;
//! - `durability.rs`: the checker of what members promised was durable
//!   (persisted entries, granted votes), held to it at each restart;
//! - `seeds.rs`: running one seed, or many on threads;
//! - `report.rs`: what a seed did, or the violation it found.

pub(crate) mod checker;
mod client;
pub(crate) mod disk;
mod disk_faults;
mod durability;
mod fault;
pub(crate) mod model;
pub(crate) mod network;
mod node;
mod operator;
mod pause;
mod replicas;
mod report;
mod requests;
mod seeds;
mod world;

pub use report::{SimReport, Totals, Violation, ViolationKind};
pub use seeds::{run, run_seeds};

/// A bug the simulator can inject, to show the checkers catch it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bug {
    /// The disk's fsync returns without making anything durable: the node
    /// acknowledges (and votes) on writes a crash then loses.
    FsyncLies,
    /// Linearizable reads skip the ReadIndex round and are served from
    /// whatever node was asked, as a server that "optimised" them would.
    SkipReadIndex,
    /// A leader stamps batches with its own clock whatever the verdict of
    /// its peers on it (`ReplicaConfig::bug_stamp_unchecked`): only a clock
    /// fault makes that clock wrong. Test builds only.
    #[cfg(test)]
    StampUnchecked,
    /// A member rebuilt after losing its data dir votes with its empty
    /// log at once (no rebuilding mark): only a lost dir exposes it.
    RebuildVotes,
    /// The loop takes a sync that failed (EIO) for done and tells raft-rs
    /// the entries are durable: only a failing disk exposes it.
    IgnoreFailedSync,
    /// A store whose snapshot is damaged opens anyway, with nothing but its
    /// members (as RocksDB's point-in-time recovery drops every record
    /// after a damaged one), instead of refusing so that the member is
    /// rebuilt: only a damaged snapshot exposes it.
    DamageIgnored,
}

#[derive(Debug, Clone)]
pub struct SimConfig {
    pub seed: u64,
    /// Client operations to complete (acknowledged or given up).
    pub ops: usize,
    pub bug: Option<Bug>,
    /// Membership changes remove the leader on purpose (half of the
    /// removals, through a hand-over as the Cluster service does) and
    /// sometimes move leadership to a node whose removal is on its way.
    /// False replays the fault mix of seeds found before these were drawn
    /// (60538492796 among them).
    pub leader_removals: bool,
}

impl SimConfig {
    /// The fault mix every new seed runs.
    pub fn new(seed: u64, ops: usize, bug: Option<Bug>) -> SimConfig {
        SimConfig {
            seed,
            ops,
            bug,
            leader_removals: true,
        }
    }
}

#[cfg(test)]
mod tests;
