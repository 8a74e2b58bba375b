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
    /// Members' clocks set hours fast or slow.
    pub clock_jumps: u64,
    /// Of those, the leader's.
    pub leader_clock_jumps: u64,
    /// Members paused for seconds (as by SIGSTOP), then resumed.
    pub pauses: u64,
    /// Members whose whole data dir was lost, then rebuilt from the peers.
    pub dir_losses: u64,
    /// Disks made to fail (EIO on sync or write, ENOSPC).
    pub disk_failures: u64,
    /// Members that stopped on a storage error, as the rule says.
    pub disk_failure_stops: u64,
    /// Syncs that stalled for seconds.
    pub sync_stalls: u64,
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
    /// Stored snapshots damaged at rest.
    pub snapshot_damages: u64,
    /// Members stopped on reading a damaged snapshot to send it.
    pub damage_stops: u64,
    /// Members rebuilt because their store refused to open (damaged).
    pub damage_rebuilds: u64,
    /// Snapshots frozen by a driver, then encoded and written for it over
    /// seeded time, as the server's snapshot threads do.
    pub snapshots_by_caller: u64,
    /// Of those, the ones a snapshot from the leader made stale while
    /// they were written: handed back, and dropped.
    pub snapshots_stale: u64,
    /// Crashes that struck a node with a sync asked for and not yet landed:
    /// writes the crash lost while their sync was in flight.
    pub crashes_before_sync: u64,
}

/// What many seeds did, summed: the CI test's closing line and
/// `stockraft-sim`'s progress lines.
#[derive(Debug, Clone, Default)]
pub struct Totals {
    pub seeds: u64,
    /// Seeds that started with 5 replicas.
    pub five_replicas: u64,
    /// Every counter of the seeds' reports, summed (`seed`, `replicas`,
    /// `sim_ms` and `workload` are not).
    pub sum: SimReport,
}

impl Totals {
    pub fn add(&mut self, r: &SimReport) {
        self.seeds += 1;
        self.five_replicas += u64::from(r.replicas == 5);
        let s = &mut self.sum;
        s.ops_acked += r.ops_acked;
        s.reads_checked += r.reads_checked;
        s.entries += r.entries;
        s.crashes += r.crashes;
        s.crashes_before_sync += r.crashes_before_sync;
        s.snapshots_by_caller += r.snapshots_by_caller;
        s.snapshots_stale += r.snapshots_stale;
        s.snapshot_damages += r.snapshot_damages;
        s.damage_stops += r.damage_stops;
        s.damage_rebuilds += r.damage_rebuilds;
        s.partitions += r.partitions;
        s.transfers += r.transfers;
        s.membership_changes += r.membership_changes;
        s.leader_removals += r.leader_removals;
        s.removed_step_downs += r.removed_step_downs;
        s.clock_jumps += r.clock_jumps;
        s.leader_clock_jumps += r.leader_clock_jumps;
        s.clock_step_downs += r.clock_step_downs;
        s.pauses += r.pauses;
        s.dir_losses += r.dir_losses;
        s.disk_failures += r.disk_failures;
        s.disk_failure_stops += r.disk_failure_stops;
        s.sync_stalls += r.sync_stalls;
        s.elections += r.elections;
        s.messages += r.messages;
        s.dropped += r.dropped;
        s.duplicated += r.duplicated;
        for (reason, count) in &r.refused {
            *s.refused.entry(reason).or_default() += count;
        }
    }
}

impl fmt::Display for Totals {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.sum;
        write!(
            f,
            "{} seeds ({} starting with 5 replicas): {} acknowledged writes, \
             {} crashes ({} with a sync in flight), {} snapshots written beside the loop \
             ({} made stale meanwhile), {} partitions, {} leadership transfers, \
             {} membership changes ({} of the leader; {} leaders applied their own removal), \
             {} clocks set hours off ({} of the leader; {} clock step-downs), {} members paused, \
             {} data dirs lost and rebuilt, {} disks failing ({} stops on a storage error), \
             {} snapshots damaged at rest ({} stops reading one, {} rebuilds), \
             {} syncs stalled for seconds; peer messages refused: {:?}",
            self.seeds,
            self.five_replicas,
            s.ops_acked,
            s.crashes,
            s.crashes_before_sync,
            s.snapshots_by_caller,
            s.snapshots_stale,
            s.partitions,
            s.transfers,
            s.membership_changes,
            s.leader_removals,
            s.removed_step_downs,
            s.clock_jumps,
            s.leader_clock_jumps,
            s.clock_step_downs,
            s.pauses,
            s.dir_losses,
            s.disk_failures,
            s.disk_failure_stops,
            s.snapshot_damages,
            s.damage_stops,
            s.damage_rebuilds,
            s.sync_stalls,
            s.refused
        )
    }
}

/// Which rule a run broke: each checker reports its own kind, so a test
/// of an injected bug names the checker that must catch it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ViolationKind {
    /// Two members led the same term.
    TwoLeaders,
    /// A member applied an entry other than the one committed at that
    /// index, or one it never appended.
    LogDiverged,
    /// An entry's stamp is further ahead of true time than honest clocks
    /// and the offset bound allow (holds would expire early by it).
    StampAhead,
    /// Members at the same applied index hold different states.
    StatesDiverged,
    /// The cluster never got an id, or a member holds another one.
    ClusterId,
    /// A client was answered from an entry that holds another command, or
    /// none: an acknowledged write is not in the committed log.
    LostWrite,
    /// A client was told an answer other than the log's sequential one.
    WrongAnswer,
    /// The log order does not respect real time: a write acknowledged
    /// before another began sits after it.
    NotLinearizable,
    /// A linearizable read missed a write acknowledged before it began.
    StaleRead,
    /// A read returned a value other than the log's at the index it read.
    WrongRead,
    /// A member's final counters or holds are not the model's.
    StateMismatch,
    /// A member restarted without an entry or a vote it had made durable
    /// and acted on (an append it acknowledged, a vote it granted).
    DurableLost,
    /// A hold expired before its deadline.
    HoldExpiredEarly,
    /// The state machine's own invariants do not hold.
    Invariant,
    /// Replica code panicked (a broken assertion, in raft-rs or here).
    Panicked,
    /// A member stopped on a fatal error, or could not restart from its
    /// own durable state.
    Fatal,
    /// A member answered against its contract (a refusal or a hand-back
    /// that names the wrong thing).
    Misbehaved,
    /// Requests stayed unanswered, or members stayed behind, after the
    /// faults stopped.
    Liveness,
    /// The checker itself could not follow the run (an entry it never saw,
    /// one it cannot decode): a bug in the simulator or the log.
    Harness,
}

/// A broken rule, as a checker found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub kind: ViolationKind,
    pub message: String,
}

impl Failure {
    pub fn new(kind: ViolationKind, message: impl Into<String>) -> Failure {
        Failure {
            kind,
            message: message.into(),
        }
    }
}

/// What the simulator's checks return.
pub type Checked<T = ()> = Result<T, Failure>;

/// A checker failed: the seed reproduces it.
#[derive(Debug, Clone)]
pub struct Violation {
    pub seed: u64,
    pub at_ms: u64,
    pub kind: ViolationKind,
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
                "seed {} failed at {} ms ({:?}): {}\nreplay: stockraft-sim --seed {} --no-leader-removals",
                self.seed, self.at_ms, self.kind, self.message, self.seed
            );
        }
        write!(
            f,
            "seed {} failed at {} ms ({:?}): {}\nreplay: STOCKRAFT_SIM_SEED={} cargo test --release --lib simulation -- --nocapture (or: stockraft-sim --seed {})",
            self.seed, self.at_ms, self.kind, self.message, self.seed, self.seed
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
        report.removed_step_downs += self
            .nodes
            .iter()
            .map(|n| n.removed_step_downs())
            .sum::<u64>();
        report.clock_step_downs = self.nodes.iter().map(|n| n.clock_step_downs()).sum();
        report
    }
}
