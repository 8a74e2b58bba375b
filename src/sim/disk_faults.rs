//! Storage faults: a member's disk failing (EIO on sync or on write,
//! ENOSPC), a chunk of its stored snapshot damaged at rest, and a member's
//! whole data dir lost (a disk replaced, a volume wiped) or damaged past
//! reading, and its rebuild from the peers. (Syncs
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

    /// Damages a chunk of an up member's stored snapshot now and then
    /// (bit rot at rest), while no other member is rebuilding or damaged.
    /// Found when the member reads it back, to send it to a follower (it
    /// stops: a storage error) or at its next start (its store refuses to
    /// open, and it is rebuilt, [`Sim::rebuild_damaged`]); lost unseen when
    /// a newer snapshot replaces it first.
    pub(super) fn damage_a_snapshot(&mut self, rng: &mut StdRng) {
        let per_mille = self.faults.snapshot_damage_per_mille;
        let Some(target) = self.pick_for_data_fault(per_mille, rng) else {
            return;
        };
        let damaged = self.nodes[target]
            .replica()
            .is_some_and(|r| r.store().damage_snapshot());
        if damaged {
            self.report.snapshot_damages += 1;
        }
    }

    /// An up member to lose data, drawn `per_mille` of the time: one at a
    /// time (none rebuilding or holding a damaged snapshot), with another
    /// up to rebuild it from.
    fn pick_for_data_fault(&self, per_mille: u32, rng: &mut StdRng) -> Option<usize> {
        if rng.random_range(0..1_000) >= per_mille {
            return None;
        }
        if self.nodes.iter().any(|n| n.rebuilding() || n.damaged()) {
            return None;
        }
        let up = self.up();
        if up.len() < 2 {
            return None;
        }
        Some(up[rng.random_range(0..up.len())])
    }

    /// A down member whose store refuses to open (a damaged snapshot) is
    /// rebuilt from its peers, as `server::rebuild` does for a damaged
    /// data dir; it stays down while no peer is up to rebuild from. True
    /// when it was rebuilt.
    pub(super) fn rebuild_damaged(&mut self, i: usize) -> bool {
        let Some(rebuilt) = self.rebuilt_disk(i) else {
            return false;
        };
        let id = self.nodes[i].id;
        self.nodes[i].down_disk = Some(rebuilt);
        self.checker.promises.forget_log(id);
        self.report.damage_rebuilds += 1;
        true
    }

    /// Loses an up member's data dir now and then, while no other member
    /// is rebuilding or holds a damaged snapshot (one at a time).
    pub(super) fn lose_a_data_dir(&mut self, rng: &mut StdRng) {
        let per_mille = self.faults.dir_loss_per_mille;
        let Some(lost) = self.pick_for_data_fault(per_mille, rng) else {
            return;
        };
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
