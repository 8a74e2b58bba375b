//! Faults: the mix a seed draws for itself, and the crashes, restarts,
//! partitions, leadership transfers and clock jumps injected every tick
//! until most client operations are done; then [`Sim::end_faults`] heals
//! everything for the liveness checks.

use rand::rngs::StdRng;
use rand::Rng;

use super::disk::SimDisk;
use super::network::NetworkFaults;
use super::node::{open, CLOCK_JUMP_HOURS_MAX, HOUR_MS};
use super::report::ViolationKind;
use super::world::Sim;
use super::Bug;
use crate::replica::clock::PeerClocks;
use crate::replica::LogStore;
use crate::storage::MemStore;

/// The fault mix a seed picks for itself.
#[derive(Debug, Clone)]
pub(super) struct Faults {
    pub(super) crash_per_mille: u32,
    pub(super) partition_per_mille: u32,
    pub(super) transfer_per_mille: u32,
    pub(super) membership_per_mille: u32,
    pub(super) network: NetworkFaults,
    pub(super) max_clock_skew_ms: i64,
    /// Whether members' clocks are set hours fast or slow now and then.
    pub(super) clock_jumps: bool,
    /// Replicas write appends unsynced and sync them later, as the server
    /// does, each sync landing 0 to this many ms after it started; a crash
    /// meanwhile loses the writes not yet synced.
    pub(super) sync_delay_ms_max: u64,
    /// How often a member is paused (as by SIGSTOP) for up to
    /// `PAUSE_MS_MAX`, per tick.
    pub(super) pause_per_mille: u32,
    /// How often a member loses its whole data dir, per tick.
    pub(super) dir_loss_per_mille: u32,
    /// How often a member's disk starts failing, per tick.
    pub(super) disk_failure_per_mille: u32,
    /// How often a chunk of a member's stored snapshot is damaged at rest,
    /// per tick.
    pub(super) snapshot_damage_per_mille: u32,
    /// How often a sync stalls for seconds, per sync.
    pub(super) sync_stall_per_mille: u32,
}

impl Faults {
    /// Draws a seed's fault mix. The order of the draws is part of what a
    /// seed means: changing it changes every seed's run.
    pub(super) fn draw(rng: &mut StdRng) -> Faults {
        Faults {
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
            sync_delay_ms_max: rng.random_range(0..=5),
            pause_per_mille: rng.random_range(0..=10),
            dir_loss_per_mille: rng.random_range(0..=5),
            disk_failure_per_mille: rng.random_range(0..=5),
            sync_stall_per_mille: rng.random_range(0..=20),
            snapshot_damage_per_mille: rng.random_range(0..=5),
        }
    }
}

impl Sim {
    /// One tick's faults, each drawn in turn (the order is part of what a
    /// seed means).
    pub(super) fn inject_faults(&mut self, rng: &mut StdRng) {
        if self.faults_over {
            return;
        }
        self.change_membership(rng);
        self.jump_clocks(rng);
        let down = self.nodes.len() - self.up().len();
        self.crash_a_node(down, rng);
        self.restart_a_node(down, rng);
        self.cut_or_heal_links(rng);
        self.transfer_leadership(rng);
        self.pause_a_node(rng);
        self.lose_a_data_dir(rng);
        self.fail_a_disk(rng);
        self.damage_a_snapshot(rng);
    }

    /// Crashes an up node now and then, while fewer than half of them
    /// (`down`, counted before this tick's faults) are down.
    fn crash_a_node(&mut self, down: usize, rng: &mut StdRng) {
        let n = self.nodes.len();
        if rng.random_range(0..1_000) < self.faults.crash_per_mille && down < n / 2 {
            let up = self.up();
            let victim = up[rng.random_range(0..up.len())];
            self.crash(victim);
        }
    }

    /// Restarts a down node now and then, when one was down before this
    /// tick's faults (`down`); it may be the one just crashed.
    fn restart_a_node(&mut self, down: usize, rng: &mut StdRng) {
        if down > 0 && rng.random_range(0..1_000) < 150 {
            let downs: Vec<usize> = (0..self.nodes.len())
                .filter(|i| self.nodes[*i].driver.is_none())
                .collect();
            let back = downs[rng.random_range(0..downs.len())];
            self.restart(back);
        }
    }

    /// Splits the nodes in two at random (one way or both ways) now and
    /// then, else heals a partition now and then.
    fn cut_or_heal_links(&mut self, rng: &mut StdRng) {
        if rng.random_range(0..1_000) < self.faults.partition_per_mille {
            let ids: Vec<u64> = self.nodes.iter().map(|n| n.id).collect();
            let cut = rng.random_range(1..self.nodes.len());
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
    }

    /// Asks the leader now and then to hand leadership to a node drawn at
    /// random (itself, or a node that is down, included).
    fn transfer_leadership(&mut self, rng: &mut StdRng) {
        if rng.random_range(0..1_000) < self.faults.transfer_per_mille {
            if let Some(l) = self.leader() {
                let target = self.nodes[rng.random_range(0..self.nodes.len())].id;
                if let Some(driver) = self.nodes[l].driver.as_mut() {
                    driver.transfer_leader(target);
                    self.report.transfers += 1;
                }
            }
        }
    }

    /// Sets a member's clock 1 to 24 hours fast or slow now and then (the
    /// leader's half the time), and puts it right again later: the
    /// checker's stamp bound shows that no hold expired, and no retained
    /// id was forgotten, early meanwhile. One member at a time, so a
    /// majority's clocks stay honest: the bound is kept by theirs.
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
        let Some(target) = self.pick_up_node(rng) else {
            return;
        };
        let leader = self.leader();
        let jump_ms = rng.random_range(1..=CLOCK_JUMP_HOURS_MAX) * HOUR_MS;
        self.nodes[target].clock_jump_ms = if rng.random_bool(0.5) {
            jump_ms
        } else {
            -jump_ms
        };
        self.report.clock_jumps += 1;
        if leader == Some(target) {
            self.report.leader_clock_jumps += 1;
        }
    }

    /// Stops the node at `i` as a power cut would: what its disk had not
    /// synced is lost, and so is everything it held in memory.
    pub(super) fn crash(&mut self, i: usize) {
        let Some(driver) = self.nodes[i].driver.take() else {
            return;
        };
        let replica = driver.replica();
        self.checker.promises.note_crash(self.nodes[i].id, replica);
        self.nodes[i].step_downs_before += replica.removed_step_downs();
        self.nodes[i].clock_step_downs_before += replica.clock_step_downs();
        self.nodes[i].clocks = PeerClocks::default();
        let mut disk = replica.store().clone();
        disk.crash();
        self.nodes[i].down_disk = Some(disk);
        if self.nodes[i].sync_running.take().is_some() {
            self.report.crashes_before_sync += 1;
        }
        self.nodes[i].sync_asked = 0;
        self.nodes[i].snapshot_job = None;
        self.nodes[i].requests.clear();
        self.nodes[i].paused_until_ms = None;
        self.nodes[i].inbox.clear();
        self.nodes[i].reboot_at_ms = None;
        // Callers waiting on this node never hear back (they went with its
        // driver); they time out.
        self.report.crashes += 1;
    }

    /// Starts a down node again from what its disk kept. A damaged store
    /// refuses to open, and the member is rebuilt from its peers first
    /// (unless the injected bug opens it as if nothing was lost).
    fn restart(&mut self, i: usize) {
        if self.nodes[i].damaged() && self.nodes[i].down_disk.is_some() {
            if self.config.bug == Some(Bug::DamageIgnored) {
                self.open_damaged_blank(i);
            } else if !self.rebuild_damaged(i) {
                return;
            }
        }
        let Some(disk) = self.nodes[i].down_disk.take() else {
            return;
        };
        let node = &self.nodes[i];
        let opened = open(
            node.id,
            node.election_ticks,
            self.config.bug,
            self.now_ms,
            disk,
        );
        match opened {
            Ok(driver) => {
                let id = self.nodes[i].id;
                if let Err(failure) = self.checker.promises.check_restart(id, driver.replica()) {
                    self.checker.note(failure);
                }
                self.nodes[i].driver = Some(driver);
            }
            Err(e) => {
                // Recorded for the checker: a node that cannot restart from
                // its own durable state is a bug.
                self.checker.note_failure(
                    ViolationKind::Fatal,
                    format!("node {} cannot restart: {e}", self.nodes[i].id),
                );
            }
        }
    }

    /// The injected bug: a store that finds its snapshot damaged opens
    /// anyway, with nothing but its members, as RocksDB's point-in-time
    /// recovery would drop everything after a damaged record in silence.
    fn open_damaged_blank(&mut self, i: usize) {
        let Some(disk) = self.nodes[i].down_disk.as_ref() else {
            return;
        };
        let members = disk.members();
        let fsync_lies = self.config.bug == Some(Bug::FsyncLies);
        let blank = SimDisk::new(MemStore::joining(&members), fsync_lies);
        self.nodes[i].down_disk = Some(blank);
    }

    /// Stops every fault for good: links heal, clocks come right, paused
    /// members run, disks work and syncs land without stalling, no message
    /// is lost or duplicated any more, and every down node restarts.
    pub(super) fn end_faults(&mut self) {
        if !self.faults_over {
            self.faults_over = true;
            self.faults_over_at_ms = self.now_ms;
        }
        self.network.heal();
        self.faults.sync_stall_per_mille = 0;
        for node in &mut self.nodes {
            node.clock_jump_ms = 0;
            if node.paused_until_ms.is_some() {
                node.paused_until_ms = Some(self.now_ms);
            }
            // Disks work again, and a stalled sync lands now.
            node.reboot_at_ms = None;
            if let Some(replica) = node.replica() {
                replica.store().fail(None);
            }
            if let Some((due_ms, number)) = node.sync_running {
                node.sync_running = Some((due_ms.min(self.now_ms), number));
            }
        }
        self.network.faults.drop_per_mille = 0;
        self.network.faults.duplicate_per_mille = 0;
        // Twice: a damaged member is rebuilt from a peer, which may be
        // restarted after it in the first pass.
        for _ in 0..2 {
            for i in 0..self.nodes.len() {
                if self.nodes[i].driver.is_none() {
                    self.restart(i);
                }
            }
        }
    }
}
