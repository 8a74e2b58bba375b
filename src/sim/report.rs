//! What a seed did ([`SimReport`]), or the checker's failure it found
//! ([`Violation`]), with the command that replays it.

use std::collections::BTreeMap;
use std::fmt;

use super::world::Sim;

/// What one seed did.
#[derive(Debug, Clone, Default)]
pub struct SimReport {
    pub seed: u64,
    pub replicas: usize,
    pub sim_ms: u64,
    pub ops_acked: usize,
    pub reads_checked: usize,
    pub entries: u64,
    pub crashes: u64,
    pub partitions: u64,
    pub transfers: u64,
    pub membership_changes: u64,
    /// Removals of the node that led when the operator asked.
    pub leader_removals: u64,
    /// Leaders that applied their own removal and stepped down.
    pub removed_step_downs: u64,
    /// Leader clocks set a day fast or a day slow.
    pub clock_jumps: u64,
    /// Leaders that stepped down because their clock was not within the
    /// bound of a majority's.
    pub clock_step_downs: u64,
    /// Peer messages refused before raft-rs, by reason.
    pub refused: BTreeMap<&'static str, u64>,
    pub elections: u64,
    pub messages: u64,
    pub dropped: u64,
    pub duplicated: u64,
    pub workload: String,
    /// The seed ran with persistence off the thread (appends synced later).
    pub persist_async: bool,
    /// Crashes that struck a node with a sync asked for and not yet landed:
    /// writes the crash lost while their sync was in flight.
    pub crashes_before_sync: u64,
}

/// A checker failed: the seed reproduces it.
#[derive(Debug, Clone)]
pub struct Violation {
    pub seed: u64,
    pub at_ms: u64,
    pub message: String,
    /// Whether the seed ran with deliberate leader removals (the flag its
    /// replay needs otherwise).
    pub leader_removals: bool,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.leader_removals {
            return write!(
                f,
                "seed {} failed at {} ms: {}\nreplay: stockraft-sim --seed {} --no-leader-removals",
                self.seed, self.at_ms, self.message, self.seed
            );
        }
        write!(
            f,
            "seed {} failed at {} ms: {}\nreplay: STOCKRAFT_SIM_SEED={} cargo test --release --lib simulation -- --nocapture (or: stockraft-sim --seed {})",
            self.seed, self.at_ms, self.message, self.seed, self.seed
        )
    }
}

impl Sim {
    /// The report so far: what the run counted as it went, plus what the
    /// network, the checker and the nodes counted.
    pub(super) fn report(&self) -> SimReport {
        let mut report = self.report.clone();
        report.sim_ms = self.now_ms;
        report.messages = self.network.sent;
        report.dropped = self.network.dropped;
        report.duplicated = self.network.duplicated;
        report.ops_acked = self.checker.acked_writes();
        report.reads_checked = self.checker.reads_checked;
        report.entries = self.checker.max_committed();
        report.elections = self.checker.elections();
        report.persist_async = self.faults.persist_async;
        report.removed_step_downs += self
            .nodes
            .iter()
            .map(|n| n.removed_step_downs())
            .sum::<u64>();
        report.clock_step_downs = self.nodes.iter().map(|n| n.clock_step_downs()).sum();
        report
    }
}
