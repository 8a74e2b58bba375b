//! Storage faults: a member's disk failing (EIO on sync or on write,
//! ENOSPC), and a member's whole data dir lost (a disk replaced, a volume
//! wiped) or damaged past reading, and its rebuild from the peers. (Syncs
//! that stall for seconds are drawn where syncs are scheduled,
//! `replicas.rs`.)
//!
//! A failing disk: the rule is that any storage error stops the node (the
//! server aborts; `stop_on_fatal` crashes it here), so nothing it
//! acknowledges rests on a write that failed. The machine is restarted a
//! few seconds later if the node has not stopped by then, and the failure
//! ends with the restart.
//!
//! The member stops as in a crash, and its disk is replaced by what
//! `server::rebuild` writes when it starts on a lost or damaged dir: no
//! log, a hard state of the highest term any other member has seen plus
//! one (voted for itself; the server waits for every member to answer,
//! the simulator reads them all), the current members and the cluster's
//! id, and the mark that it is rebuilding (`replica::rebuild`), so it
//! withholds its vote until it has caught up. One member at a time: the
//! promise kept is that nothing acknowledged is lost while a majority's
//! disks are healthy.

use raft::eraftpb::HardState;
use rand::rngs::StdRng;
use rand::Rng;

use super::disk::{DiskFailure, SimDisk};
use super::world::Sim;
use super::Bug;
use crate::replica::LogStore;
use crate::storage::MemStore;

/// A machine whose disk fails is restarted after this long at least, in ms.
const REBOOT_MS_MIN: u64 = 1_000;
/// And at most.
const REBOOT_MS_MAX: u64 = 3_000;

impl Sim {
    /// Makes an up member's disk fail now and then, one at a time, and
    /// restarts the machines whose reboot is due.
    pub(super) fn fail_a_disk(&mut self, rng: &mut StdRng) {
        for i in 0..self.nodes.len() {
            if self.nodes[i]
                .reboot_at_ms
                .is_some_and(|at| at <= self.now_ms)
            {
                self.crash(i);
            }
        }
        if rng.random_range(0..1_000) >= self.faults.disk_failure_per_mille {
            return;
        }
        if self.nodes.iter().any(|n| n.reboot_at_ms.is_some()) {
            return;
        }
        let up = self.up();
        if up.is_empty() {
            return;
        }
        let failing = up[rng.random_range(0..up.len())];
        let failure = match rng.random_range(0..3) {
            0 => DiskFailure::SyncEio,
            1 => DiskFailure::WriteEio,
            _ => DiskFailure::NoSpace,
        };
        if let Some(replica) = self.nodes[failing].replica() {
            replica.store().fail(Some(failure));
            let reboot_ms = rng.random_range(REBOOT_MS_MIN..=REBOOT_MS_MAX);
            self.nodes[failing].reboot_at_ms = Some(self.now_ms + reboot_ms);
            self.report.disk_failures += 1;
        }
    }

    /// Loses an up member's data dir now and then, while no other member
    /// is rebuilding.
    pub(super) fn lose_a_data_dir(&mut self, rng: &mut StdRng) {
        if rng.random_range(0..1_000) >= self.faults.dir_loss_per_mille {
            return;
        }
        if self.nodes.iter().any(|n| n.rebuilding()) {
            return;
        }
        let up = self.up();
        if up.len() < 2 {
            return;
        }
        let lost = up[rng.random_range(0..up.len())];
        let Some(rebuilt) = self.rebuilt_disk(lost) else {
            return;
        };
        let id = self.nodes[lost].id;
        self.crash(lost);
        self.nodes[lost].down_disk = Some(rebuilt);
        self.checker.promises.forget_log(id);
        self.report.dir_losses += 1;
    }

    /// The disk the rebuild of the member at `lost` writes, learning the
    /// members and the cluster's id from another up member (the leader if
    /// there is one) and the terms from all of them.
    fn rebuilt_disk(&self, lost: usize) -> Option<SimDisk> {
        let source = self
            .leader()
            .filter(|l| *l != lost)
            .or_else(|| self.up().into_iter().find(|i| *i != lost))?;
        let peer = self.nodes[source].replica()?;
        let mut members = peer.members().clone();
        let id = self.nodes[lost].id;
        if !members.contains_key(&id) {
            return None;
        }
        members.insert(
            id,
            crate::replica::membership::Member::at(&format!("node-{id}")),
        );
        let highest = (0..self.nodes.len())
            .filter(|i| *i != lost)
            .map(|i| self.nodes[i].term())
            .max()
            .unwrap_or(0);
        let hard_state = HardState {
            term: highest + 1,
            vote: id,
            commit: 0,
            ..Default::default()
        };
        let mut store = MemStore::rebuilt(&members, peer.cluster_id(), hard_state);
        if self.config.bug == Some(Bug::RebuildVotes) {
            // The injected bug: the rebuilt member votes with its empty log.
            let _ = store.clear_rebuilt();
        }
        Some(SimDisk::new(store, self.config.bug == Some(Bug::FsyncLies)))
    }
}
