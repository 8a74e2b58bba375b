//! Deterministic simulation of a stockraft cluster, in the spirit of
//! FoundationDB's simulator and TigerBeetle's VOPR.
//!
//! One seeded random generator drives everything: 3 or 5 replicas running
//! the real replication core ([`crate::replica::Replica`]) and the real
//! state machine over simulated disks ([`disk::SimDisk`], which lose
//! unsynced writes on a crash), a simulated network ([`network::Network`])
//! that delays, drops, duplicates and reorders messages and makes
//! partitions, drifting clocks, crashes and restarts, leadership transfers,
//! and clients that issue the whole API and retry with the same ids after a
//! timeout, as real clients do. Time is simulated, so a run is exact: the
//! same seed gives the same run, bit for bit.
//!
//! What is checked ([`checker`]):
//! - safety: at most one leader per term; a committed entry never changes;
//!   replicas at the same applied index have the same state digest;
//! - inventory: the real state machine asserts its invariants after every
//!   entry (reserved = open lines, never negative, no reserve below zero);
//!   an independent model ([`model::Model`]) replays the committed log, and
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

pub mod checker;
mod client;
pub mod disk;
pub mod model;
pub mod network;
mod operator;

use std::collections::HashMap;
use std::fmt;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::inventory::Applied;
use crate::replica::clock::PeerClocks;
use crate::replica::{Output, ProposeError, ReadError, Replica, ReplicaConfig, Token};
use crate::storage::MemStore;
use checker::Checker;
use client::{Client, OpKind};
use disk::SimDisk;
use network::{Network, NetworkFaults};

/// A bug the simulator can inject, to show the checkers catch it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bug {
    /// The disk's fsync returns without making anything durable: the node
    /// acknowledges (and votes) on writes a crash then loses.
    FsyncLies,
    /// Linearizable reads skip the ReadIndex round and are served from
    /// whatever node was asked, as a server that "optimised" them would.
    SkipReadIndex,
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
    pub refused: std::collections::BTreeMap<&'static str, u64>,
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

/// The fault mix a seed picks for itself.
#[derive(Debug, Clone)]
struct Faults {
    crash_per_mille: u32,
    partition_per_mille: u32,
    transfer_per_mille: u32,
    membership_per_mille: u32,
    network: NetworkFaults,
    max_clock_skew_ms: i64,
    /// Whether the leader's clock is set a day fast or slow now and then.
    clock_jumps: bool,
    /// Replicas write appends unsynced and sync them later
    /// (`ReplicaConfig::persist_async`, as the server does), each sync
    /// landing 0 to `sync_delay_ms_max` ms after it was asked for; a crash
    /// meanwhile loses the writes not yet synced.
    persist_async: bool,
    sync_delay_ms_max: u64,
}

struct SimNode {
    id: u64,
    /// This replica's (fixed) election timeout, in ticks.
    election_ticks: usize,
    replica: Option<Replica<SimDisk>>,
    /// The disk while the node is down.
    down_disk: Option<SimDisk>,
    /// When the sync the replica asked for lands (`persist_async`).
    sync_due_ms: Option<u64>,
    clock_offset_ms: i64,
    clock_drift_ppm: i64,
    /// A day fast or slow while a clock fault lasts, else 0.
    clock_jump_ms: i64,
    /// Fellow members' clocks as this node measured them (memory: lost
    /// in a crash).
    clocks: PeerClocks,
    next_tick_ms: u64,
    commands: Vec<(Token, crate::inventory::Command)>,
    reads: Vec<Token>,
    /// Removed-leader step-downs of the node's earlier lives (before a
    /// crash), for the report.
    step_downs_before: u64,
    /// Clock step-downs of its earlier lives.
    clock_step_downs_before: u64,
}

impl SimNode {
    /// A node starting at `now_ms` on `disk`, with its own election timeout
    /// and clock error drawn from `rng`.
    fn start(id: u64, disk: SimDisk, faults: &Faults, now_ms: u64, rng: &mut StdRng) -> SimNode {
        let election_ticks = rng.random_range(10..20);
        let replica = Replica::new(
            replica_config(id, election_ticks, faults.persist_async),
            disk,
            &logger(),
        )
        .ok();
        SimNode {
            id,
            election_ticks,
            replica,
            down_disk: None,
            sync_due_ms: None,
            clock_offset_ms: rng.random_range(-faults.max_clock_skew_ms..=faults.max_clock_skew_ms),
            clock_drift_ppm: rng.random_range(-CLOCK_DRIFT_PPM_MAX..=CLOCK_DRIFT_PPM_MAX),
            clock_jump_ms: 0,
            clocks: PeerClocks::default(),
            next_tick_ms: now_ms + rng.random_range(0..TICK_MS),
            commands: Vec::new(),
            reads: Vec::new(),
            step_downs_before: 0,
            clock_step_downs_before: 0,
        }
    }

    fn clock_step_downs(&self) -> u64 {
        let now = self.replica.as_ref().map_or(0, |r| r.clock_step_downs());
        self.clock_step_downs_before + now
    }

    /// Gives the replica the verdict on its clock at `clock` (the server
    /// does it at every tick; the simulator also before every proposal).
    fn check_clock(&mut self, clock: u64) {
        if let Some(replica) = self.replica.as_mut() {
            replica.check_clock(&self.clocks, clock, MAX_CLOCK_OFFSET_MS);
        }
    }

    fn removed_step_downs(&self) -> u64 {
        let now = self.replica.as_ref().map_or(0, |r| r.removed_step_downs());
        self.step_downs_before + now
    }
}

/// Where a token's answer goes.
#[derive(Debug, Clone, Copy)]
struct Ticket {
    client: usize,
    op: u64,
    /// Position of the command in its batch.
    position: usize,
}

const TICK_MS: u64 = 100;
const FAULTS_END_FRACTION: f64 = 0.8;
const LIVENESS_MS: u64 = 30_000;
const SIM_MS_MAX: u64 = 600_000;
/// Clocks drift up to 0.1% (NTP keeps real ones far closer): over the
/// longest run, 600 ms.
const CLOCK_DRIFT_PPM_MAX: i64 = 1_000;
/// The replicas' `--max-clock-offset`: above what drift and skew make of
/// honest clocks here (at most 2 x (200 + 600) ms apart), far below a day.
const MAX_CLOCK_OFFSET_MS: u64 = 2_000;
const DAY_MS: i64 = 86_400_000;
/// The true time at the start of every run, in ms since the Unix epoch.
pub(crate) const TRUE_CLOCK_BASE_MS: u64 = 1_700_000_000_000;

fn replica_config(id: u64, election_ticks: usize, persist_async: bool) -> ReplicaConfig {
    let mut config = ReplicaConfig::new(id);
    config.persist_async = persist_async;
    config.fixed_election_ticks = Some(election_ticks);
    config.snapshot_entries = 40;
    config.snapshot_log_floor_bytes = 0;
    config.log_keep_entries = 20;
    // Long retention: within a run every retry must find its id.
    config.id_retention_ms = 24 * 3_600 * 1_000;
    config
}

fn logger() -> slog::Logger {
    slog::Logger::root(slog::Discard, slog::o!())
}

/// Runs one seed to the end. Err when a checker failed.
pub fn run(config: &SimConfig) -> Result<SimReport, Violation> {
    let mut rng = StdRng::seed_from_u64(config.seed);
    let replicas = if rng.random_bool(0.5) { 3 } else { 5 };
    let faults = Faults {
        crash_per_mille: rng.random_range(0..=30),
        partition_per_mille: rng.random_range(0..=30),
        transfer_per_mille: rng.random_range(0..=15),
        membership_per_mille: rng.random_range(0..=20),
        network: NetworkFaults {
            drop_per_mille: rng.random_range(0..=100),
            duplicate_per_mille: rng.random_range(0..=50),
            delay_ms_min: 1,
            delay_ms_max: rng.random_range(2..=30),
        },
        max_clock_skew_ms: rng.random_range(0..=200),
        clock_jumps: rng.random_bool(0.5),
        persist_async: rng.random_bool(0.5),
        sync_delay_ms_max: rng.random_range(0..=5),
    };
    let mut sim = Sim::new(config, replicas, faults, &mut rng);
    let outcome = sim.run(&mut rng);
    match outcome {
        Ok(()) => Ok(sim.report()),
        Err(message) => Err(Violation {
            seed: config.seed,
            at_ms: sim.now_ms,
            message,
            leader_removals: config.leader_removals,
        }),
    }
}

struct Sim {
    config: SimConfig,
    now_ms: u64,
    nodes: Vec<SimNode>,
    network: Network,
    clients: Vec<Client>,
    tickets: HashMap<(u64, Token), Ticket>,
    next_token: Token,
    faults: Faults,
    checker: Checker,
    report: SimReport,
    faults_over: bool,
    faults_over_at_ms: u64,
    /// A membership change under way.
    membership_pending: Option<operator::PendingChange>,
    next_node_id: u64,
}

impl Sim {
    fn new(config: &SimConfig, replicas: usize, faults: Faults, rng: &mut StdRng) -> Sim {
        // Skew, the offset bound, and half a round trip of slack.
        let stamp_ahead_ms_base = faults.max_clock_skew_ms as u64 + MAX_CLOCK_OFFSET_MS + 100;
        let voters: Vec<u64> = (1..=replicas as u64).collect();
        let fsync_lies = config.bug == Some(Bug::FsyncLies);
        let mut nodes = Vec::new();
        for id in 1..=replicas as u64 {
            let disk = SimDisk::new(MemStore::new(&voters), fsync_lies);
            nodes.push(SimNode::start(id, disk, &faults, 0, rng));
        }
        // One hot SKU, a Zipf-skewed few, or a uniform few.
        let mode = rng.random_range(0..3);
        let (skus, locations, zipf) = match mode {
            0 => (1, 2, None),
            1 => (8, 2, Some(1.2)),
            _ => (4, 3, None),
        };
        let clients_count = rng.random_range(3..=8);
        let per_client = config.ops.div_ceil(clients_count);
        let clients = (0..clients_count)
            .map(|i| Client::new(i, per_client, skus, locations, zipf, rng.random()))
            .collect();
        let report = SimReport {
            seed: config.seed,
            replicas,
            workload: format!(
                "{} clients, {} SKU x {} nodes{}",
                clients_count,
                skus,
                locations,
                match mode {
                    0 => " (one hot SKU)",
                    1 => " (Zipf 1.2)",
                    _ => " (uniform)",
                }
            ),
            ..Default::default()
        };
        Sim {
            config: config.clone(),
            now_ms: 0,
            nodes,
            network: Network::new(faults.network),
            clients,
            tickets: HashMap::new(),
            next_token: 1,
            faults,
            checker: Checker::with_stamp_bound(stamp_ahead_ms_base),
            report,
            faults_over: false,
            faults_over_at_ms: 0,
            membership_pending: None,
            next_node_id: replicas as u64 + 1,
        }
    }

    fn report(&self) -> SimReport {
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

    /// A node's wall clock: off by a fixed offset, drifting at its own
    /// rate, and a day off while a clock fault lasts.
    fn node_clock(&self, i: usize) -> u64 {
        let node = &self.nodes[i];
        let drift = self.now_ms as i64 * node.clock_drift_ppm / 1_000_000;
        let error = node.clock_offset_ms + drift + node.clock_jump_ms;
        (TRUE_CLOCK_BASE_MS as i64 + self.now_ms as i64 + error).max(0) as u64
    }

    fn up(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|i| self.nodes[*i].replica.is_some())
            .collect()
    }

    fn leader(&self) -> Option<usize> {
        self.nodes
            .iter()
            .position(|n| n.replica.as_ref().is_some_and(|r| r.is_leader()))
    }

    fn run(&mut self, rng: &mut StdRng) -> Result<(), String> {
        let total: usize = self.clients.iter().map(|c| c.budget).sum();
        loop {
            self.now_ms += 1;
            if self.now_ms > SIM_MS_MAX {
                return Err(format!(
                    "the run did not finish within {SIM_MS_MAX} simulated ms"
                ));
            }
            self.deliver_messages()?;
            self.sync_disks()?;
            self.tick_nodes()?;
            self.drive_clients(rng);
            self.node_turns(rng)?;
            self.checker.step(self.now_ms, &view(&self.nodes))?;
            if self.now_ms % TICK_MS == 0 {
                self.inject_faults(rng);
                self.checker.compare_digests(&view(&self.nodes))?;
            }
            let finished: usize = self.clients.iter().map(|c| c.finished).sum();
            if !self.faults_over && finished as f64 >= total as f64 * FAULTS_END_FRACTION {
                self.end_faults();
            }
            if self.clients.iter().all(|c| c.done()) {
                break;
            }
            if self.faults_over && self.now_ms > self.faults_over_at_ms + LIVENESS_MS {
                let pending: Vec<String> = self
                    .clients
                    .iter()
                    .filter_map(|c| c.describe_pending())
                    .collect();
                return Err(format!(
                    "liveness: {LIVENESS_MS} ms after faults stopped, requests are still pending ({}); leader: {:?}",
                    pending.join("; "),
                    self.leader().map(|i| self.nodes[i].id)
                ));
            }
        }
        // Let every replica catch up (no client traffic now), then check
        // everything.
        self.end_faults();
        let settle_until = self.now_ms + 10_000;
        loop {
            self.now_ms += 1;
            self.deliver_messages()?;
            self.sync_disks()?;
            self.tick_nodes()?;
            self.node_turns(rng)?;
            self.checker.step(self.now_ms, &view(&self.nodes))?;
            let applied: Vec<u64> = self
                .nodes
                .iter()
                .filter_map(|n| n.replica.as_ref().map(|r| r.inventory().applied_index()))
                .collect();
            let even =
                applied.len() == self.nodes.len() && applied.iter().all(|a| *a == applied[0]);
            if (even && self.network.is_idle() && self.now_ms % TICK_MS == 50)
                || self.now_ms >= settle_until
            {
                break;
            }
        }
        // A node whose removal landed after its change was given up on is
        // stopped now, as an operator would.
        if let Some(l) = self.leader() {
            let voters = self.nodes[l]
                .replica
                .as_ref()
                .map(|r| r.conf_state().voters)
                .unwrap_or_default();
            let removed: Vec<u64> = self
                .nodes
                .iter()
                .map(|n| n.id)
                .filter(|id| !voters.contains(id))
                .collect();
            for id in removed {
                self.stop_node(id);
            }
        }
        self.checker.finish(&view(&self.nodes), &self.clients)
    }

    fn end_faults(&mut self) {
        if !self.faults_over {
            self.faults_over = true;
            self.faults_over_at_ms = self.now_ms;
        }
        self.network.heal();
        for node in &mut self.nodes {
            node.clock_jump_ms = 0;
        }
        self.network.faults.drop_per_mille = 0;
        self.network.faults.duplicate_per_mille = 0;
        for i in 0..self.nodes.len() {
            if self.nodes[i].replica.is_none() {
                self.restart(i);
            }
        }
    }

    /// Tells a snapshot's sender how its stream ended, as the transport does.
    fn report_snapshot(&mut self, from: u64, to: u64, delivered: bool) -> Result<(), String> {
        let Some(i) = self.nodes.iter().position(|n| n.id == from) else {
            return Ok(());
        };
        if let Some(replica) = self.nodes[i].replica.as_mut() {
            guard(from, || replica.report_snapshot(to, delivered))?;
        }
        Ok(())
    }

    fn deliver_messages(&mut self) -> Result<(), String> {
        let (due, lost) = self.network.due(self.now_ms);
        for message in lost {
            self.report_snapshot(message.from, message.to, false)?;
        }
        for (message, reading) in due {
            if let Some(i) = self.nodes.iter().position(|n| n.id == message.to) {
                if self.nodes[i].replica.is_some() {
                    let clock = self.node_clock(i);
                    self.nodes[i].clocks.observe(message.from, &reading, clock);
                }
            }
            let is_snapshot = message.get_msg_type() == raft::eraftpb::MessageType::MsgSnapshot;
            let (from, to) = (message.from, message.to);
            let receiver_up = self.nodes.iter().any(|n| n.id == to && n.replica.is_some());
            if is_snapshot {
                self.report_snapshot(from, to, receiver_up)?;
            }
            let Some(i) = self.nodes.iter().position(|n| n.id == message.to) else {
                continue;
            };
            let id = self.nodes[i].id;
            if let Some(replica) = self.nodes[i].replica.as_mut() {
                // A message a replica refuses is dropped, as the server does.
                let shown = show_refused().then(|| format!("{message:?}"));
                let stepped = guard(id, || replica.step(message))?;
                if let Err(crate::replica::StepError::Refused(refusal)) = stepped {
                    *self.report.refused.entry(refusal.label()).or_default() += 1;
                    if let Some(shown) = shown {
                        eprintln!("node {id} refused ({}): {shown}", refusal.label());
                    }
                }
            }
        }
        Ok(())
    }

    /// Lands the syncs that are due (`persist_async`): everything the
    /// replica wrote until now becomes durable, then it learns so.
    fn sync_disks(&mut self) -> Result<(), String> {
        for i in 0..self.nodes.len() {
            let Some(due_ms) = self.nodes[i].sync_due_ms else {
                continue;
            };
            if due_ms > self.now_ms {
                continue;
            }
            self.nodes[i].sync_due_ms = None;
            let id = self.nodes[i].id;
            let mut out = Output::default();
            let Some(replica) = self.nodes[i].replica.as_mut() else {
                continue;
            };
            guard(id, || {
                let number = replica.sync_store()?;
                replica.persisted(number, &mut out)
            })?
            .map_err(|fatal| format!("node {id} hit a fatal error: {fatal}"))?;
            self.handle_output(i, out);
        }
        Ok(())
    }

    fn tick_nodes(&mut self) -> Result<(), String> {
        for i in 0..self.nodes.len() {
            if self.nodes[i].next_tick_ms > self.now_ms {
                continue;
            }
            self.nodes[i].next_tick_ms = self.now_ms + TICK_MS;
            let clock = self.node_clock(i);
            let id = self.nodes[i].id;
            let mut out = Output::default();
            self.nodes[i].check_clock(clock);
            if let Some(replica) = self.nodes[i].replica.as_mut() {
                guard(id, || replica.tick(clock, &mut out))?;
            }
            self.handle_output(i, out);
        }
        Ok(())
    }

    fn drive_clients(&mut self, rng: &mut StdRng) {
        let leader = self.leader();
        for c in 0..self.clients.len() {
            let Some((op, kind, target_hint)) = self.clients[c].next_attempt(self.now_ms, rng)
            else {
                continue;
            };
            let up = self.up();
            let is_read = matches!(kind, OpKind::Read { .. });
            let target = match target_hint.and_then(|id| self.nodes.iter().position(|n| n.id == id))
            {
                Some(i) => i,
                None => match leader {
                    // Reads go anywhere, as storefronts behind a load
                    // balancer do; writes mostly find the leader.
                    Some(l) if !is_read && rng.random_bool(0.7) => l,
                    _ => rng.random_range(0..self.nodes.len()),
                },
            };
            if !up.contains(&target) {
                // Connection refused: the client tries elsewhere shortly.
                self.clients[c].attempt_failed(op, self.now_ms, None);
                continue;
            }
            let token = self.next_token;
            self.next_token += 1;
            match kind {
                OpKind::Write(command) => {
                    let position = self.nodes[target].commands.len();
                    self.nodes[target].commands.push((token, command));
                    self.tickets.insert(
                        (self.nodes[target].id, token),
                        Ticket {
                            client: c,
                            op,
                            position,
                        },
                    );
                }
                OpKind::Read { linearizable, .. }
                    if !linearizable || self.config.bug == Some(Bug::SkipReadIndex) =>
                {
                    // Served at once from the node's applied state (for a
                    // linearizable read, only under the injected bug).
                    if let Some(replica) = self.nodes[target].replica.as_ref() {
                        let shared = replica.shared().load_full();
                        let now = self.now_ms;
                        self.clients[c].read_answered(op, now, &shared, &mut self.checker);
                    }
                }
                OpKind::Read { .. } => {
                    self.nodes[target].reads.push(token);
                    self.tickets.insert(
                        (self.nodes[target].id, token),
                        Ticket {
                            client: c,
                            op,
                            position: 0,
                        },
                    );
                }
            }
        }
    }

    fn node_turns(&mut self, _rng: &mut StdRng) -> Result<(), String> {
        for i in 0..self.nodes.len() {
            let clock = self.node_clock(i);
            let id = self.nodes[i].id;
            let commands = std::mem::take(&mut self.nodes[i].commands);
            let reads = std::mem::take(&mut self.nodes[i].reads);
            let mut out = Output::default();
            if !commands.is_empty() {
                self.nodes[i].check_clock(clock);
            }
            let Some(replica) = self.nodes[i].replica.as_mut() else {
                continue;
            };
            guard(id, || {
                if !commands.is_empty() {
                    replica.propose(clock, commands, &mut out);
                }
                replica.read(reads, &mut out);
                replica.advance(&mut out)
            })?
            .map_err(|fatal| format!("node {id} hit a fatal error: {fatal}"))?;
            self.handle_output(i, out);
        }
        Ok(())
    }

    fn handle_output(&mut self, i: usize, out: Output) {
        let node_id = self.nodes[i].id;
        let mut rng = StdRng::seed_from_u64(self.now_ms ^ (node_id << 32) ^ self.config.seed);
        if out.sync.is_some() && self.nodes[i].sync_due_ms.is_none() {
            let delay_ms = rng.random_range(0..=self.faults.sync_delay_ms_max);
            self.nodes[i].sync_due_ms = Some(self.now_ms + delay_ms);
        }
        let mut lost_snapshots = Vec::new();
        let clock = self.node_clock(i);
        for message in out.messages {
            let is_snapshot = message.get_msg_type() == raft::eraftpb::MessageType::MsgSnapshot;
            let to = message.to;
            let reading = self.nodes[i].clocks.reading_for(to, clock);
            if !self.network.send(self.now_ms, message, reading, &mut rng) && is_snapshot {
                lost_snapshots.push(to);
            }
        }
        for to in lost_snapshots {
            if let Some(replica) = self.nodes[i].replica.as_mut() {
                // Reported at once: the stream to `to` failed.
                let _ = guard(node_id, || replica.report_snapshot(to, false));
            }
        }
        let answered_at: HashMap<Token, u64> = out.answered_at.into_iter().collect();
        for (token, answer) in out.answers {
            let Some(ticket) = self.tickets.remove(&(node_id, token)) else {
                continue;
            };
            match answer {
                Ok(applied) => {
                    let index = answered_at.get(&token).copied().unwrap_or(0);
                    self.clients[ticket.client].write_answered(
                        ticket.op,
                        self.now_ms,
                        applied,
                        (index, ticket.position),
                        &mut self.checker,
                    );
                }
                Err(unanswered) => {
                    // A command handed back must be the one proposed: the
                    // server retries what it gets back, not what was sent.
                    let sent = self.clients[ticket.client].write_command(ticket.op);
                    if let (Some(sent), Some(returned)) = (sent, &unanswered.command) {
                        if sent != returned {
                            self.checker.note_failure(format!(
                                "node {node_id} handed back {returned:?} for a proposal of {sent:?}"
                            ));
                        }
                    }
                    let hint = match unanswered.error {
                        ProposeError::NotLeader { leader } => Some(leader),
                        _ => None,
                    };
                    self.clients[ticket.client].attempt_failed(ticket.op, self.now_ms, hint);
                }
            }
        }
        for (token, answer) in out.reads {
            let Some(ticket) = self.tickets.remove(&(node_id, token)) else {
                continue;
            };
            match answer {
                Ok(_) => {
                    if let Some(replica) = self.nodes[i].replica.as_ref() {
                        let shared = replica.shared().load_full();
                        self.clients[ticket.client].read_answered(
                            ticket.op,
                            self.now_ms,
                            &shared,
                            &mut self.checker,
                        );
                    }
                }
                Err(error) => {
                    let hint = match error {
                        ReadError::NotLeader { leader } => Some(leader),
                        _ => None,
                    };
                    self.clients[ticket.client].attempt_failed(ticket.op, self.now_ms, hint);
                }
            }
        }
    }

    fn crash(&mut self, i: usize) {
        let Some(replica) = self.nodes[i].replica.take() else {
            return;
        };
        self.nodes[i].step_downs_before += replica.removed_step_downs();
        self.nodes[i].clock_step_downs_before += replica.clock_step_downs();
        self.nodes[i].clocks = PeerClocks::default();
        let mut disk = replica.store().clone();
        disk.crash();
        self.nodes[i].down_disk = Some(disk);
        if self.nodes[i].sync_due_ms.take().is_some() {
            self.report.crashes_before_sync += 1;
        }
        self.nodes[i].commands.clear();
        self.nodes[i].reads.clear();
        let id = self.nodes[i].id;
        // Callers waiting on this node never hear back; they time out.
        self.tickets.retain(|(node, _), _| *node != id);
        self.report.crashes += 1;
    }

    fn restart(&mut self, i: usize) {
        let Some(disk) = self.nodes[i].down_disk.take() else {
            return;
        };
        match Replica::new(
            replica_config(
                self.nodes[i].id,
                self.nodes[i].election_ticks,
                self.faults.persist_async,
            ),
            disk,
            &logger(),
        ) {
            Ok(replica) => self.nodes[i].replica = Some(replica),
            Err(e) => {
                // Recorded for the checker: a node that cannot restart from
                // its own durable state is a bug.
                self.checker
                    .note_failure(format!("node {} cannot restart: {e}", self.nodes[i].id));
            }
        }
    }

    fn inject_faults(&mut self, rng: &mut StdRng) {
        if self.faults_over {
            return;
        }
        self.change_membership(rng);
        self.jump_clocks(rng);
        let n = self.nodes.len();
        let down = n - self.up().len();
        if rng.random_range(0..1_000) < self.faults.crash_per_mille && down < n / 2 {
            let up = self.up();
            let victim = up[rng.random_range(0..up.len())];
            self.crash(victim);
        }
        if down > 0 && rng.random_range(0..1_000) < 150 {
            let downs: Vec<usize> = (0..n)
                .filter(|i| self.nodes[*i].replica.is_none())
                .collect();
            let back = downs[rng.random_range(0..downs.len())];
            self.restart(back);
        }
        if rng.random_range(0..1_000) < self.faults.partition_per_mille {
            let ids: Vec<u64> = self.nodes.iter().map(|n| n.id).collect();
            let cut = rng.random_range(1..n);
            let mut shuffled = ids.clone();
            for k in (1..shuffled.len()).rev() {
                let j = rng.random_range(0..=k);
                shuffled.swap(k, j);
            }
            let (a, b) = shuffled.split_at(cut);
            let one_way = rng.random_bool(0.3);
            self.network.partition(a, b, one_way);
            self.report.partitions += 1;
        } else if self.network.is_partitioned() && rng.random_range(0..1_000) < 100 {
            self.network.heal();
        }
        if rng.random_range(0..1_000) < self.faults.transfer_per_mille {
            if let Some(l) = self.leader() {
                let target = self.nodes[rng.random_range(0..n)].id;
                if let Some(replica) = self.nodes[l].replica.as_mut() {
                    replica.transfer_leader(target);
                    self.report.transfers += 1;
                }
            }
        }
    }
}

impl Sim {
    /// Sets the leader's clock a day fast or a day slow now and then (one
    /// node at a time), and puts it right again later: the checker's
    /// stamp bound shows no hold expired early meanwhile.
    fn jump_clocks(&mut self, rng: &mut StdRng) {
        if !self.faults.clock_jumps {
            return;
        }
        if let Some(jumped) = self.nodes.iter().position(|n| n.clock_jump_ms != 0) {
            if rng.random_range(0..1_000) < 50 {
                self.nodes[jumped].clock_jump_ms = 0;
            }
            return;
        }
        if rng.random_range(0..1_000) >= 20 {
            return;
        }
        let Some(leader) = self.leader() else {
            return;
        };
        self.nodes[leader].clock_jump_ms = if rng.random_bool(0.5) {
            DAY_MS
        } else {
            -DAY_MS
        };
        self.report.clock_jumps += 1;
    }
}

/// Whether to print every peer message a replica refuses
/// (`STOCKRAFT_SIM_SHOW_REFUSED=1`), to look into a seed.
fn show_refused() -> bool {
    static SHOW: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SHOW.get_or_init(|| std::env::var_os("STOCKRAFT_SIM_SHOW_REFUSED").is_some())
}

/// Runs replica code; a panic (a broken invariant, in raft-rs or in
/// stockraft) would stop a real node, so here it is a violation.
fn guard<T>(node: u64, work: impl FnOnce() -> T) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)).map_err(|panic| {
        let message = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "a panic".into());
        format!("node {node} stopped on a broken invariant: {message}")
    })
}

fn view(nodes: &[SimNode]) -> Vec<(u64, Option<&Replica<SimDisk>>)> {
    nodes.iter().map(|n| (n.id, n.replica.as_ref())).collect()
}

#[cfg(test)]
mod tests;

/// Runs seeds `first..first + count` on `threads` threads, each as
/// `template` says but for its seed; returns the violation of the lowest
/// failing seed, if any.
pub fn run_seeds(
    first: u64,
    count: u64,
    template: &SimConfig,
    threads: usize,
) -> Result<Vec<SimReport>, Violation> {
    let next = std::sync::atomic::AtomicU64::new(first);
    let results = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            scope.spawn(|| loop {
                let seed = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if seed >= first + count {
                    return;
                }
                let result = run(&SimConfig {
                    seed,
                    ..template.clone()
                });
                let failed = result.is_err();
                if let Ok(mut results) = results.lock() {
                    results.push(result);
                }
                if failed {
                    // Stop handing out seeds; the others finish theirs.
                    next.store(first + count, std::sync::atomic::Ordering::Relaxed);
                    return;
                }
            });
        }
    });
    let mut reports = Vec::new();
    let mut violations = Vec::new();
    for result in results.into_inner().unwrap_or_default() {
        match result {
            Ok(report) => reports.push(report),
            Err(violation) => violations.push(violation),
        }
    }
    if let Some(violation) = violations.into_iter().min_by_key(|v| v.seed) {
        return Err(violation);
    }
    reports.sort_by_key(|r| r.seed);
    Ok(reports)
}

/// The answer a client got, for the checker.
pub type Answer = Applied;
