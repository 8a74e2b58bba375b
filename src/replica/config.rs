//! A replica's settings.

use super::membership::ClusterId;

/// Settings of a replica. Every replica of a group must use the same
/// `election_tick` and `heartbeat_tick`; the leader's `id_retention_ms` and
/// `id_retained_max` travel in each entry, so followers need not agree.
#[derive(Debug, Clone)]
pub struct ReplicaConfig {
    pub id: u64,
    /// Ticks without a leader's message before a follower campaigns
    /// (randomised by raft-rs between this and twice this).
    pub election_tick: usize,
    /// Ticks between a leader's heartbeats.
    pub heartbeat_tick: usize,
    /// Applied entries between snapshots, at least. A snapshot also waits
    /// until the log held in memory is as large as the last image, or
    /// [`Self::snapshot_log_floor_bytes`] when the image is larger, and at
    /// least a quarter of the image whatever its size. Writing a snapshot
    /// costs time in proportion to the whole state, so it is taken when
    /// the log has grown in proportion to the state (each logged byte then
    /// costs at most one to four bytes of snapshot), while the log a
    /// restart replays after the snapshot stays within the floor or a
    /// quarter of the image.
    pub snapshot_entries: u64,
    /// See [`Self::snapshot_entries`]. 0 snapshots after a quarter of the
    /// image's size of log (tests, the simulator: snapshots often).
    pub snapshot_log_floor_bytes: u64,
    /// Bytes of log held in memory that force a snapshot whatever the
    /// above: the bound on the log's memory and on replay time at restart.
    pub snapshot_log_bytes: u64,
    /// Entries kept behind a snapshot, so a briefly lagging follower catches
    /// up from the log instead of a snapshot.
    pub log_keep_entries: u64,
    pub id_retention_ms: u64,
    pub id_retained_max: u64,
    /// Ticks a linearizable read may wait for its ReadIndex to be confirmed.
    pub read_timeout_ticks: u64,
    /// Milliseconds between expiry proposals for the same due hold when the
    /// previous one did not land.
    pub expiry_retry_ms: u64,
    /// A fixed randomized election timeout, in ticks. raft-rs draws the
    /// timeout from a thread-local random generator the simulator cannot
    /// seed; the simulator gives each replica its own fixed value instead so
    /// that a seed replays exactly. None (the server) keeps raft-rs's
    /// randomization between `election_tick` and twice that.
    pub fixed_election_ticks: Option<usize>,
    /// The caller encodes and stores snapshots ([`Output::snapshot`](super::Output::snapshot), then
    /// [`Replica::snapshot_written`](super::Replica::snapshot_written)), off the thread that applies entries
    /// (the server). When false the replica does all of it inside
    /// [`Replica::advance`](super::Replica::advance) (tests and the simulator, which must stay
    /// deterministic).
    pub snapshot_by_caller: bool,
    /// Appends are written unsynced and made durable later by the caller
    /// ([`Output::sync`](super::Output::sync), then [`Replica::persisted`](super::Replica::persisted)), so the replication
    /// thread proposes, applies and answers while a sync is in flight
    /// (raft-rs's asynchronous Ready). When false each Ready's write is
    /// synced before [`Replica::advance`](super::Replica::advance) returns.
    pub persist_async: bool,
    /// The context of this replica's first ReadIndex request; each next one
    /// adds one. It must differ from every earlier life's: an answer to a
    /// read asked before a restart can still be on its way (queued at the
    /// leader for this member), and matched to a new read by its context it
    /// would serve that read at an index older than writes acknowledged
    /// before it began. Random by default; the simulator derives it from
    /// the simulated time of the start.
    pub read_ctx_first: u64,
    /// The id this replica gives the cluster if it leads it first (see
    /// [`ClusterId`]): random in the server, drawn from the
    /// seed in the simulator.
    pub cluster_id_candidate: ClusterId,
    /// Injected bug (simulator tests only): a leader stamps with its own
    /// clock whatever the verdict on it, as a server that took its stamps
    /// from a clock other than the one its peers checked would.
    #[cfg(test)]
    pub bug_stamp_unchecked: bool,
}

impl ReplicaConfig {
    pub fn new(id: u64) -> ReplicaConfig {
        ReplicaConfig {
            id,
            election_tick: 10,
            heartbeat_tick: 2,
            snapshot_entries: 20_000,
            snapshot_log_floor_bytes: 64 * 1024 * 1024,
            snapshot_log_bytes: 256 * 1024 * 1024,
            log_keep_entries: 1_000,
            id_retention_ms: crate::limits::ID_RETENTION_MS_DEFAULT,
            id_retained_max: crate::limits::ID_RETAINED_MAX_DEFAULT,
            read_timeout_ticks: 30,
            expiry_retry_ms: 1_000,
            fixed_election_ticks: None,
            snapshot_by_caller: false,
            persist_async: false,
            read_ctx_first: rand::random(),
            cluster_id_candidate: candidate_of(id),
            #[cfg(test)]
            bug_stamp_unchecked: false,
        }
    }

    /// raft-rs's settings for this replica, which has applied up to
    /// `applied` (the snapshot it starts from).
    pub(super) fn raft_config(&self, applied: u64) -> raft::Config {
        let (min_election_tick, max_election_tick) = match self.fixed_election_ticks {
            // raft-rs draws from [min, max): a range of one is one value.
            Some(ticks) => (ticks, ticks + 1),
            None => (0, 0),
        };
        raft::Config {
            id: self.id,
            min_election_tick,
            max_election_tick,
            election_tick: self.election_tick,
            heartbeat_tick: self.heartbeat_tick,
            applied,
            max_size_per_msg: 1024 * 1024,
            max_inflight_msgs: 256,
            check_quorum: true,
            pre_vote: true,
            max_committed_size_per_ready: 16 * 1024 * 1024,
            ..Default::default()
        }
    }
}

/// A fixed candidate id for tests: the server and the simulator set their
/// own.
fn candidate_of(id: u64) -> ClusterId {
    let mut candidate = [0u8; 16];
    candidate[..8].copy_from_slice(&id.to_be_bytes());
    candidate
}
