//! One simulated node: its replica, driven by the server's own loop (a
//! [`Driver`]), while it is up; its disk while it is down; its clock (off
//! by a fixed offset, drifting, hours off while a clock fault lasts); the
//! requests queued for its next turn, and the sync and snapshot it runs
//! for its driver.

use raft::eraftpb::Message;
use rand::rngs::StdRng;
use rand::Rng;

use super::disk::SimDisk;
use super::fault::Faults;
use super::requests::Caller;
use super::Bug;
use crate::replica::clock::{ClockReading, PeerClocks};
use crate::replica::{Driver, Fatal, LogStore, Replica, ReplicaConfig, Request, SnapshotTask};

/// A node's tick, as the server's.
pub(super) const TICK_MS: u64 = 100;
/// Clocks drift up to 0.1% (NTP keeps real ones far closer): over the
/// longest run, 600 ms.
pub(super) const CLOCK_DRIFT_PPM_MAX: i64 = 1_000;
/// The replicas' `--max-clock-offset`: above what drift and skew make of
/// honest clocks here (at most 2 x (200 + 600) ms apart), far below an hour.
pub(super) const MAX_CLOCK_OFFSET_MS: u64 = 2_000;
/// Clock faults set a member's clock off by whole hours, either way.
pub(super) const HOUR_MS: i64 = 3_600_000;
/// The most hours a clock fault sets a clock off.
pub(super) const CLOCK_JUMP_HOURS_MAX: i64 = 24;
/// The true time at the start of every run, in ms since the Unix epoch.
pub(crate) const TRUE_CLOCK_BASE_MS: u64 = 1_700_000_000_000;

/// A node of the simulated cluster, up or down.
pub(super) struct SimNode {
    pub(super) id: u64,
    /// This replica's (fixed) election timeout, in ticks.
    pub(super) election_ticks: usize,
    /// The replica and its loop, while the node is up.
    pub(super) driver: Option<Driver<SimDisk, Caller>>,
    /// The disk while the node is down.
    pub(super) down_disk: Option<SimDisk>,
    /// The highest Ready number the driver asked to sync.
    pub(super) sync_asked: u64,
    /// The sync under way, as the server's sync thread runs it: when it
    /// lands, and the Ready number it covers (the highest asked when it
    /// started).
    pub(super) sync_running: Option<(u64, u64)>,
    /// The snapshot being encoded and written, as the server's snapshot
    /// threads do it: when it is done, and the frozen task.
    pub(super) snapshot_job: Option<(u64, SnapshotTask)>,
    /// Its monotonic clock's offset from true time (ticks fall due by it).
    monotonic_offset_ms: u64,
    /// Its clock's fixed error and drift, drawn at its start.
    clock_offset_ms: i64,
    clock_drift_ppm: i64,
    /// Hours fast or slow while a clock fault lasts, else 0.
    pub(super) clock_jump_ms: i64,
    /// Fellow members' clocks as this node measured them (memory: lost
    /// in a crash).
    pub(super) clocks: PeerClocks,
    /// While the process is stopped (as by SIGSTOP), when it runs again.
    pub(super) paused_until_ms: Option<u64>,
    /// Messages that reached it while it was paused, in arrival order.
    pub(super) inbox: Vec<(Message, ClockReading)>,
    /// When a machine whose disk fails is restarted, if it has not
    /// stopped on its own by then.
    pub(super) reboot_at_ms: Option<u64>,
    /// Requests handed to the node and not yet taken by its driver, in
    /// order (the server's client queue).
    pub(super) requests: std::collections::VecDeque<(Request, Caller)>,
    /// Removed-leader step-downs of the node's earlier lives (before a
    /// crash), for the report.
    pub(super) step_downs_before: u64,
    /// Clock step-downs of its earlier lives.
    pub(super) clock_step_downs_before: u64,
}

impl SimNode {
    /// A node starting at `now_ms` on `disk`, with its own election timeout
    /// and clock error drawn from `rng`.
    pub(super) fn start(
        id: u64,
        disk: SimDisk,
        faults: &Faults,
        bug: Option<Bug>,
        now_ms: u64,
        rng: &mut StdRng,
    ) -> SimNode {
        let election_ticks = rng.random_range(10..20);
        let driver = open(id, election_ticks, bug, now_ms, disk).ok();
        SimNode {
            id,
            election_ticks,
            driver,
            down_disk: None,
            sync_asked: 0,
            sync_running: None,
            snapshot_job: None,
            monotonic_offset_ms: rng.random_range(0..TICK_MS),
            clock_offset_ms: rng.random_range(-faults.max_clock_skew_ms..=faults.max_clock_skew_ms),
            clock_drift_ppm: rng.random_range(-CLOCK_DRIFT_PPM_MAX..=CLOCK_DRIFT_PPM_MAX),
            clock_jump_ms: 0,
            clocks: PeerClocks::default(),
            paused_until_ms: None,
            inbox: Vec::new(),
            reboot_at_ms: None,
            requests: std::collections::VecDeque::new(),
            step_downs_before: 0,
            clock_step_downs_before: 0,
        }
    }

    /// The node's wall clock at true time `now_ms`: off by a fixed offset,
    /// drifting at its own rate, and hours off while a clock fault lasts.
    pub(super) fn wall_clock(&self, now_ms: u64) -> u64 {
        let drift = now_ms as i64 * self.clock_drift_ppm / 1_000_000;
        let error = self.clock_offset_ms + drift + self.clock_jump_ms;
        (TRUE_CLOCK_BASE_MS as i64 + now_ms as i64 + error).max(0) as u64
    }

    /// The replica, while the node is up.
    pub(super) fn replica(&self) -> Option<&Replica<SimDisk>> {
        self.driver.as_ref().map(|d| d.replica())
    }

    /// The node's monotonic clock at true time `now_ms`.
    pub(super) fn monotonic_clock(&self, now_ms: u64) -> u64 {
        now_ms + self.monotonic_offset_ms
    }

    /// Whether the process is up and stopped: it takes no message, tick,
    /// sync or turn until it runs again.
    pub(super) fn is_paused(&self) -> bool {
        self.driver.is_some() && self.paused_until_ms.is_some()
    }

    /// Whether the member is rebuilding from its peers (up or down).
    pub(super) fn rebuilding(&self) -> bool {
        match (self.replica(), &self.down_disk) {
            (Some(replica), _) => replica.is_rebuilding(),
            (None, Some(disk)) => disk.rebuilt_term().is_some(),
            (None, None) => false,
        }
    }

    /// Whether its stored snapshot is damaged (up or down).
    pub(super) fn damaged(&self) -> bool {
        match (self.replica(), &self.down_disk) {
            (Some(replica), _) => replica.store().is_damaged(),
            (None, Some(disk)) => disk.is_damaged(),
            (None, None) => false,
        }
    }

    /// The member's current term: its replica's, or its disk's while down.
    pub(super) fn term(&self) -> u64 {
        match (self.replica(), &self.down_disk) {
            (Some(replica), _) => replica.status().term,
            (None, Some(disk)) => raft::Storage::initial_state(disk)
                .map(|state| state.hard_state.term)
                .unwrap_or(0),
            (None, None) => 0,
        }
    }

    /// Clock step-downs over all the node's lives.
    pub(super) fn clock_step_downs(&self) -> u64 {
        let now = self.replica().map_or(0, |r| r.clock_step_downs());
        self.clock_step_downs_before + now
    }

    /// Removed-leader step-downs over all the node's lives.
    pub(super) fn removed_step_downs(&self) -> u64 {
        let now = self.replica().map_or(0, |r| r.removed_step_downs());
        self.step_downs_before + now
    }
}

/// Opens the replica of node `id` on `disk` at `now_ms`, in the driver
/// the server runs it in.
pub(super) fn open(
    id: u64,
    election_ticks: usize,
    bug: Option<Bug>,
    now_ms: u64,
    disk: SimDisk,
) -> Result<Driver<SimDisk, Caller>, Fatal> {
    let config = replica_config(id, election_ticks, bug, now_ms);
    let replica = Replica::new(config, disk, &logger())?;
    Driver::new(replica, TICK_MS)
}

/// The replica settings of every simulated node: the server's mode, with
/// small snapshots and a short log, so snapshots and their transfers
/// happen often.
fn replica_config(
    id: u64,
    election_ticks: usize,
    bug: Option<Bug>,
    started_ms: u64,
) -> ReplicaConfig {
    let mut config = ReplicaConfig::new(id);
    // Each life of a replica asks reads with contexts of its own (see
    // `ReplicaConfig::read_ctx_first`); a life asks at most one per ms.
    config.read_ctx_first = started_ms << 32;
    #[cfg(test)]
    {
        config.bug_stamp_unchecked = bug == Some(Bug::StampUnchecked);
    }
    #[cfg(not(test))]
    let _ = bug;
    config.persist_async = true;
    config.snapshot_by_caller = true;
    config.fixed_election_ticks = Some(election_ticks);
    config.snapshot_entries = 40;
    config.snapshot_log_floor_bytes = 0;
    config.log_keep_entries = 20;
    // Long retention: within a run every retry must find its id.
    config.id_retention_ms = 24 * 3_600 * 1_000;
    config
}

/// The replicas log nowhere: a seed's output is its report.
pub(super) fn logger() -> slog::Logger {
    slog::Logger::root(slog::Discard, slog::o!())
}
