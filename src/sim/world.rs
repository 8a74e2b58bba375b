//! The simulated world: the nodes, the network between them, the clients
//! and the checker, all on one simulated clock, and the loop that advances
//! it a millisecond at a time.

use rand::rngs::StdRng;
use rand::Rng;

use super::checker::Checker;
use super::client::Client;
use super::disk::SimDisk;
use super::fault::Faults;
use super::network::Network;
use super::node::{SimNode, MAX_CLOCK_OFFSET_MS, TICK_MS};
use super::operator::PendingChange;
use super::report::{Checked, Failure, ViolationKind};
use super::{Bug, SimConfig, SimReport};
use crate::replica::Replica;
use crate::storage::MemStore;

/// Faults stop once this share of the client operations is done; the rest
/// must complete on a healed cluster.
const FAULTS_END_FRACTION: f64 = 0.8;
/// How long after the faults stop every pending request must complete.
const LIVENESS_MS: u64 = 30_000;
/// No run lasts longer, whatever happens.
const SIM_MS_MAX: u64 = 600_000;
/// How long the replicas get to catch up once the clients are done.
const SETTLE_MS: u64 = 10_000;

/// One seed's world.
pub(super) struct Sim {
    pub(super) config: SimConfig,
    pub(super) now_ms: u64,
    pub(super) nodes: Vec<SimNode>,
    pub(super) network: Network,
    pub(super) clients: Vec<Client>,
    pub(super) faults: Faults,
    pub(super) checker: Checker,
    /// What the run counts as it goes; [`Sim::report`] adds the rest.
    pub(super) report: SimReport,
    pub(super) faults_over: bool,
    pub(super) faults_over_at_ms: u64,
    /// A membership change under way.
    pub(super) membership_pending: Option<PendingChange>,
    pub(super) next_node_id: u64,
}

/// The clients and what they do, as the report describes it.
struct Workload {
    clients: Vec<Client>,
    description: String,
}

impl Sim {
    pub(super) fn new(
        config: &SimConfig,
        replicas: usize,
        faults: Faults,
        rng: &mut StdRng,
    ) -> Sim {
        // Skew, the offset bound, and half a round trip of slack.
        let stamp_ahead_ms_base = faults.max_clock_skew_ms as u64 + MAX_CLOCK_OFFSET_MS + 100;
        let voters: Vec<u64> = (1..=replicas as u64).collect();
        let fsync_lies = config.bug == Some(Bug::FsyncLies);
        let mut nodes = Vec::new();
        for id in 1..=replicas as u64 {
            let disk = SimDisk::new(MemStore::new(&voters), fsync_lies);
            nodes.push(SimNode::start(id, disk, &faults, config.bug, 0, rng));
        }
        let workload = draw_workload(config.ops, rng);
        let report = SimReport {
            seed: config.seed,
            replicas,
            workload: workload.description,
            ..Default::default()
        };
        Sim {
            config: config.clone(),
            now_ms: 0,
            nodes,
            network: Network::new(faults.network),
            clients: workload.clients,
            faults,
            checker: Checker::with_stamp_bound(stamp_ahead_ms_base),
            report,
            faults_over: false,
            faults_over_at_ms: 0,
            membership_pending: None,
            next_node_id: replicas as u64 + 1,
        }
    }

    /// The wall clock of the node at `i` now.
    pub(super) fn node_clock(&self, i: usize) -> u64 {
        self.nodes[i].wall_clock(self.now_ms)
    }

    /// An up node for a fault to strike: the leader half the time when
    /// there is one, else any up node; None when none is up.
    pub(super) fn pick_up_node(&self, rng: &mut StdRng) -> Option<usize> {
        let up = self.up();
        if up.is_empty() {
            return None;
        }
        Some(match self.leader() {
            Some(l) if rng.random_bool(0.5) => l,
            _ => up[rng.random_range(0..up.len())],
        })
    }

    /// The positions of the nodes that are up.
    pub(super) fn up(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|i| self.nodes[*i].driver.is_some())
            .collect()
    }

    /// The position of the first node that believes it leads.
    pub(super) fn leader(&self) -> Option<usize> {
        self.nodes
            .iter()
            .position(|n| n.replica().is_some_and(|r| r.is_leader()))
    }

    /// Runs the clients to the end under faults, lets the replicas settle,
    /// then runs the final checks.
    pub(super) fn run(&mut self, rng: &mut StdRng) -> Checked {
        self.run_clients(rng)?;
        // Let every replica catch up (no client traffic now), then check
        // everything.
        self.end_faults();
        self.settle()?;
        self.stop_removed_nodes();
        self.checker.finish(&view(&self.nodes), &self.clients)
    }

    /// Advances the world a millisecond at a time until every client is
    /// done; faults stop once most operations are.
    fn run_clients(&mut self, rng: &mut StdRng) -> Checked {
        let total: usize = self.clients.iter().map(|c| c.budget).sum();
        loop {
            self.now_ms += 1;
            if self.now_ms > SIM_MS_MAX {
                return Err(Failure::new(
                    ViolationKind::Liveness,
                    format!("the run did not finish within {SIM_MS_MAX} simulated ms"),
                ));
            }
            self.resume_paused()?;
            self.deliver_messages()?;
            self.sync_disks()?;
            self.finish_snapshots()?;
            self.drive_clients(rng);
            self.node_turns()?;
            self.checker.step(self.now_ms, &view(&self.nodes))?;
            if self.now_ms.is_multiple_of(TICK_MS) {
                self.inject_faults(rng);
                self.checker.compare_digests(&view(&self.nodes))?;
            }
            let finished: usize = self.clients.iter().map(|c| c.finished).sum();
            if !self.faults_over && finished as f64 >= total as f64 * FAULTS_END_FRACTION {
                self.end_faults();
            }
            if self.clients.iter().all(|c| c.done()) {
                return Ok(());
            }
            if self.faults_over && self.now_ms > self.faults_over_at_ms + LIVENESS_MS {
                return Err(self.pending_requests());
            }
        }
    }

    /// The liveness failure: the requests still pending long after the
    /// faults stopped.
    fn pending_requests(&self) -> Failure {
        let pending: Vec<String> = self
            .clients
            .iter()
            .filter_map(|c| c.describe_pending())
            .collect();
        Failure::new(
            ViolationKind::Liveness,
            format!(
                "liveness: {LIVENESS_MS} ms after faults stopped, requests are still pending ({}); leader: {:?}",
                pending.join("; "),
                self.leader().map(|i| self.nodes[i].id)
            ),
        )
    }

    /// Advances the world without client traffic until every node has
    /// applied the same index and the network is quiet, or for
    /// `SETTLE_MS` at most.
    fn settle(&mut self) -> Checked {
        let settle_until = self.now_ms + SETTLE_MS;
        loop {
            self.now_ms += 1;
            self.resume_paused()?;
            self.deliver_messages()?;
            self.sync_disks()?;
            self.finish_snapshots()?;
            self.node_turns()?;
            self.checker.step(self.now_ms, &view(&self.nodes))?;
            let applied: Vec<u64> = self
                .nodes
                .iter()
                .filter_map(|n| n.replica().map(|r| r.inventory().applied_index()))
                .collect();
            let even =
                applied.len() == self.nodes.len() && applied.iter().all(|a| *a == applied[0]);
            if (even && self.network.is_idle() && self.now_ms % TICK_MS == 50)
                || self.now_ms >= settle_until
            {
                return Ok(());
            }
        }
    }

    /// A node whose removal landed after its change was given up on is
    /// stopped now, as an operator would.
    fn stop_removed_nodes(&mut self) {
        let Some(l) = self.leader() else {
            return;
        };
        let voters = self.nodes[l]
            .replica()
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
}

/// Draws the clients: one hot SKU, a Zipf-skewed few, or a uniform few,
/// shared by 3 to 8 clients that split `ops` between them.
fn draw_workload(ops: usize, rng: &mut StdRng) -> Workload {
    let mode = rng.random_range(0..3);
    let (skus, locations, zipf) = match mode {
        0 => (1, 2, None),
        1 => (8, 2, Some(1.2)),
        _ => (4, 3, None),
    };
    let clients_count = rng.random_range(3..=8);
    let per_client = ops.div_ceil(clients_count);
    let clients = (0..clients_count)
        .map(|i| Client::new(i, per_client, skus, locations, zipf, rng.random()))
        .collect();
    let description = format!(
        "{} clients, {} SKU x {} nodes{}",
        clients_count,
        skus,
        locations,
        match mode {
            0 => " (one hot SKU)",
            1 => " (Zipf 1.2)",
            _ => " (uniform)",
        }
    );
    Workload {
        clients,
        description,
    }
}

/// The nodes as the checker sees them: id, and the replica when up.
pub(super) fn view(nodes: &[SimNode]) -> Vec<(u64, Option<&Replica<SimDisk>>)> {
    nodes.iter().map(|n| (n.id, n.replica())).collect()
}
