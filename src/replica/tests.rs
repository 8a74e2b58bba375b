//! The replication core over in-memory stores: one node, restarts,
//! snapshots, and a three-replica group with messages routed by hand.

use std::collections::{BTreeMap, VecDeque};

use raft::eraftpb::Message;

use super::*;
use crate::inventory::command::{Line, Reserve, SetOnHand};
use crate::inventory::snapshot;
use crate::inventory::{Applied, Command, Outcome, ReserveAnswer};
use crate::storage::MemStore;

pub(super) fn logger() -> slog::Logger {
    slog::Logger::root(slog::Discard, slog::o!())
}

pub(super) fn set(txn: &str, on_hand: i64) -> Command {
    Command::SetOnHand(SetOnHand::new(txn.into(), "S".into(), "N".into(), on_hand, None).unwrap())
}

fn reserve(id: &str, qty: i64) -> Command {
    Command::Reserve(
        Reserve::new(
            id.into(),
            vec![Line {
                sku: "S".into(),
                node: "N".into(),
                qty,
            }],
            60_000,
        )
        .unwrap(),
    )
}

fn single(store: MemStore) -> Replica<MemStore> {
    let mut replica = Replica::new(ReplicaConfig::new(1), store, &logger()).unwrap();
    replica.campaign(&mut Output::default()).unwrap();
    let mut out = Output::default();
    replica.advance(&mut out).unwrap();
    assert!(replica.is_leader());
    replica
}

#[test]
fn a_single_voter_answers_after_the_entry_is_durable_and_applied() {
    let mut replica = single(MemStore::new(&[1]));
    let mut out = Output::default();
    replica.propose(
        1_000,
        vec![(1, set("t", 5)), (2, reserve("o", 3)), (3, reserve("p", 3))],
        &mut out,
    );
    assert!(
        out.answers.is_empty(),
        "answered before the entry was persisted"
    );
    replica.advance(&mut out).unwrap();
    assert_eq!(out.answers.len(), 3);
    let by_token: BTreeMap<Token, _> = out.answers.into_iter().collect();
    assert!(matches!(by_token[&1], Ok(Applied::StockChange(Ok(_)))));
    assert!(matches!(
        &by_token[&2],
        Ok(Applied::Reserve(Ok(ReserveAnswer {
            outcome: Outcome::Reserved,
            ..
        })))
    ));
    assert!(matches!(
        &by_token[&3],
        Ok(Applied::Reserve(Ok(ReserveAnswer {
            outcome: Outcome::InsufficientStock,
            ..
        })))
    ));
    // Every command of the batch went into one log entry.
    let status = replica.status();
    assert_eq!(status.applied_index, status.commit_index);
    assert_eq!(
        status.last_index, 3,
        "bootstrap entry, election entry, one batch"
    );
}

#[test]
fn a_restart_replays_the_log_to_the_same_state() {
    let mut replica = single(MemStore::new(&[1]));
    let mut out = Output::default();
    for i in 0..20u64 {
        replica.propose(
            1_000 + i,
            vec![(i, set(&format!("t{i}"), i as i64))],
            &mut out,
        );
        replica.advance(&mut out).unwrap();
    }
    let digest = replica.inventory().digest();
    let restarted =
        Replica::new(ReplicaConfig::new(1), replica.store().clone(), &logger()).unwrap();
    let mut restarted = restarted;
    restarted.advance(&mut out).unwrap();
    assert_eq!(
        restarted.inventory().applied_index(),
        replica.inventory().applied_index()
    );
    assert_eq!(restarted.inventory().digest(), digest);
}

/// A replica that snapshots every 10 entries whatever the log's size and
/// keeps 2 entries behind each snapshot: compaction within a few entries.
fn small_snapshots(id: u64) -> ReplicaConfig {
    let mut config = ReplicaConfig::new(id);
    config.snapshot_entries = 10;
    config.snapshot_log_floor_bytes = 0;
    config.log_keep_entries = 2;
    config
}

#[test]
fn snapshots_compact_the_log_and_restarts_load_them() {
    let config = small_snapshots(1);
    let mut replica = Replica::new(config.clone(), MemStore::new(&[1]), &logger()).unwrap();
    replica.campaign(&mut Output::default()).unwrap();
    let mut out = Output::default();
    for i in 0..35u64 {
        replica.propose(
            1_000 + i,
            vec![(i, set(&format!("t{i}"), i as i64))],
            &mut out,
        );
        replica.advance(&mut out).unwrap();
    }
    let status = replica.status();
    assert!(status.snapshot_index >= 30, "{status:?}");
    let first = raft::Storage::first_index(replica.store()).unwrap();
    assert_eq!(
        first,
        status.snapshot_index - 2 + 1,
        "log not compacted behind the snapshot"
    );
    let digest = replica.inventory().digest();
    let mut restarted = Replica::new(config, replica.store().clone(), &logger()).unwrap();
    restarted.advance(&mut out).unwrap();
    assert_eq!(restarted.inventory().digest(), digest);
    assert_eq!(restarted.inventory().applied_index(), status.applied_index);
}

/// The server's way: the replica freezes a snapshot and hands it out;
/// entries go on being applied (and no second snapshot starts) until the
/// caller hands it back written; the image holds the state as frozen, and
/// a restart from it replays the rest.
#[test]
fn a_snapshot_handed_to_the_caller_is_recorded_when_handed_back() {
    let mut config = small_snapshots(1);
    config.snapshot_by_caller = true;
    let mut replica = Replica::new(config.clone(), MemStore::new(&[1]), &logger()).unwrap();
    replica.campaign(&mut Output::default()).unwrap();
    let mut out = Output::default();
    let mut task = None;
    let mut frozen_on_hand = 0;
    for i in 0..40u64 {
        replica.propose(
            1_000 + i,
            vec![(i, set(&format!("t{i}"), i as i64))],
            &mut out,
        );
        replica.advance(&mut out).unwrap();
        if let Some(handed) = out.snapshot.take() {
            assert!(task.is_none(), "a second snapshot while one is pending");
            frozen_on_hand = replica.inventory().stock().level("S", "N").unwrap().on_hand;
            task = Some(handed);
        }
    }
    let task = task.expect("no snapshot handed out");
    let index = task.index();
    assert_eq!(
        replica.status().snapshot_index,
        0,
        "recorded before handed back"
    );
    assert!(replica.inventory().applied_index() > index + 20);
    let written = task.run(&mut *replica.store().chunk_writer()).unwrap();
    replica.snapshot_written(written).unwrap();
    assert_eq!(replica.status().snapshot_index, index);
    assert_eq!(
        raft::Storage::first_index(replica.store()).unwrap(),
        index - 2 + 1
    );
    let saved = replica.store().load_snapshot().unwrap().unwrap();
    let image = snapshot::read(&saved.image, index).unwrap();
    assert_eq!(
        image.stock().level("S", "N").unwrap().on_hand,
        frozen_on_hand
    );
    assert_ne!(frozen_on_hand, 39);
    let digest = replica.inventory().digest();
    let mut restarted = Replica::new(config, replica.store().clone(), &logger()).unwrap();
    restarted.advance(&mut out).unwrap();
    assert_eq!(restarted.inventory().digest(), digest);
    // The next one is handed out once due again.
    for i in 40..80u64 {
        replica.propose(
            1_000 + i,
            vec![(i, set(&format!("t{i}"), i as i64))],
            &mut out,
        );
        replica.advance(&mut out).unwrap();
    }
    assert!(out.snapshot.is_some());
}

#[test]
fn the_leader_expires_due_holds_without_traffic() {
    let mut replica = single(MemStore::new(&[1]));
    let mut out = Output::default();
    let short = Command::Reserve(
        Reserve::new(
            "cart".into(),
            vec![Line {
                sku: "S".into(),
                node: "N".into(),
                qty: 1,
            }],
            500,
        )
        .unwrap(),
    );
    replica.propose(1_000, vec![(1, set("t", 1)), (2, short)], &mut out);
    replica.advance(&mut out).unwrap();
    assert_eq!(replica.inventory().open_count(), 1);
    // Before the deadline a tick proposes nothing.
    replica.tick(1_499, &mut out);
    replica.advance(&mut out).unwrap();
    assert_eq!(replica.inventory().open_count(), 1);
    // At the deadline the tick's entry expires it.
    replica.tick(1_500, &mut out);
    replica.advance(&mut out).unwrap();
    assert_eq!(replica.inventory().open_count(), 0);
    let held = replica.inventory().reservation("cart").unwrap();
    assert_eq!(held.state, crate::inventory::ReservationState::Expired);
    assert!(held.finished_at_ms >= held.expires_at_ms);
}

#[test]
fn a_follower_refuses_proposals_and_reads_with_a_reason() {
    let mut replica =
        Replica::new(ReplicaConfig::new(1), MemStore::new(&[1, 2, 3]), &logger()).unwrap();
    let mut out = Output::default();
    replica.propose(1, vec![(7, set("t", 1))], &mut out);
    replica.read(vec![8], &mut out);
    let refused = Unanswered::with(ProposeError::NoLeader, set("t", 1));
    assert_eq!(out.answers, vec![(7, Err(refused))]);
    assert_eq!(out.reads, vec![(8, Err(ReadError::NoLeader))]);
}

/// Three replicas in memory; messages delivered by hand, in order.
pub(super) struct Group {
    pub(super) replicas: Vec<Replica<MemStore>>,
    pub(super) queue: VecDeque<Message>,
    pub(super) answers: Vec<(Token, Result<Applied, Unanswered>)>,
    reads: Vec<(Token, Result<u64, ReadError>)>,
    /// Snapshots handed out (by replica id), for the test to run.
    tasks: Vec<(u64, SnapshotTask)>,
    /// A replica whose messages, to and from, are dropped.
    pub(super) cut: Option<u64>,
}

impl Group {
    pub(super) fn new() -> Group {
        Group::with_configs((1..=3).map(ReplicaConfig::new).collect())
    }

    pub(super) fn with_configs(configs: Vec<ReplicaConfig>) -> Group {
        let replicas = configs
            .into_iter()
            .map(|config| Replica::new(config, MemStore::new(&[1, 2, 3]), &logger()).unwrap())
            .collect();
        Group {
            replicas,
            queue: VecDeque::new(),
            answers: Vec::new(),
            reads: Vec::new(),
            tasks: Vec::new(),
            cut: None,
        }
    }

    pub(super) fn settle(&mut self) {
        for _ in 0..1_000 {
            for replica in self.replicas.iter_mut() {
                let mut out = Output::default();
                replica.advance(&mut out).unwrap();
                // With `persist_async`, every sync asked for lands at once.
                while out.sync.take().is_some() {
                    let number = replica.sync_store().unwrap();
                    replica.persisted(number, &mut out).unwrap();
                }
                self.queue.extend(out.messages);
                self.answers.extend(out.answers);
                self.reads.extend(out.reads);
                if let Some(task) = out.snapshot {
                    self.tasks.push((replica.status().id, task));
                }
            }
            let Some(message) = self.queue.pop_front() else {
                return;
            };
            if self.cut == Some(message.to) || self.cut == Some(message.from) {
                continue;
            }
            let to = message.to as usize - 1;
            // A node not started yet misses its messages, as over a network.
            if let Some(replica) = self.replicas.get_mut(to) {
                let _ = replica.step(message);
            }
        }
        panic!("group did not settle");
    }

    /// Replica 1 campaigns and wins, as every test here begins.
    pub(super) fn elect_first(&mut self) {
        let mut out = Output::default();
        self.replicas[0].campaign(&mut out).unwrap();
        self.queue.extend(out.messages);
        self.settle();
        assert_eq!(self.leader(), 0);
    }

    fn leader(&self) -> usize {
        self.replicas
            .iter()
            .position(|r| r.is_leader())
            .expect("a leader")
    }
}

#[test]
fn three_replicas_agree_and_answer_only_committed_entries() {
    let mut group = Group::new();
    group.elect_first();
    let leader = group.leader();
    let mut out = Output::default();
    group.replicas[leader].propose(
        5_000,
        vec![(1, set("t", 4)), (2, reserve("o", 3))],
        &mut out,
    );
    group.queue.extend(out.messages);
    group.settle();
    assert_eq!(group.answers.len(), 2, "{:?}", group.answers);
    group.replicas[leader].read(vec![9], &mut Output::default());
    group.settle();
    assert_eq!(group.reads.len(), 1);
    assert!(group.reads[0].1.is_ok());
    // Followers learn the commit index with the next heartbeat or append.
    let mut out = Output::default();
    group.replicas[leader].propose(5_001, vec![(3, set("t2", 4))], &mut out);
    group.queue.extend(out.messages);
    group.settle();
    let digests: Vec<u64> = group
        .replicas
        .iter()
        .map(|r| r.inventory().digest())
        .collect();
    let applied: Vec<u64> = group
        .replicas
        .iter()
        .map(|r| r.inventory().applied_index())
        .collect();
    assert!(applied.iter().all(|a| *a == applied[0]), "{applied:?}");
    assert!(
        digests.iter().all(|d| *d == digests[0]),
        "replicas diverged"
    );
}

/// Regression: a node that joins with an empty log must rebuild the whole
/// membership by replaying the log, not just the change that added it
/// (which once left it believing it was the only voter, and able to lead
/// alone: two leaders in one term).
/// A leader cut off from the others proposes; the others elect a new
/// leader and the old one, on hearing of it, steps down. Its proposals
/// were never committed, so their outcome is unknown, and each comes back
/// with its own command for the caller to retry.
#[test]
fn a_deposed_leader_hands_back_the_commands_it_could_not_answer() {
    let mut group = Group::new();
    group.elect_first();
    group.cut = Some(1);
    let mut out = Output::default();
    group.replicas[0].propose(
        5_000,
        vec![(1, set("t", 4)), (2, reserve("o", 3))],
        &mut out,
    );
    group.queue.extend(out.messages);
    group.settle();
    assert!(group.answers.is_empty(), "{:?}", group.answers);
    // The other two stop hearing from the leader, time out and elect one
    // of themselves.
    let mut elected = None;
    for tick in 0..1_000 {
        for i in 1..3 {
            let mut out = Output::default();
            group.replicas[i].tick(5_000 + tick * 100, &mut out);
            group.queue.extend(out.messages);
        }
        group.settle();
        elected = (1..3).find(|i| group.replicas[*i].is_leader());
        if elected.is_some() {
            break;
        }
    }
    let new_leader = elected.expect("a new leader among the two");
    // The old leader hears of the new term (a heartbeat) and steps down.
    group.cut = None;
    let mut out = Output::default();
    group.replicas[new_leader].propose(200_000, vec![(3, set("u", 1))], &mut out);
    for tick in 0..10 {
        group.replicas[new_leader].tick(200_000 + tick * 100, &mut out);
    }
    group.queue.extend(out.messages);
    group.settle();
    assert!(!group.replicas[0].is_leader());
    let mut failed: Vec<(Token, Unanswered)> = Vec::new();
    for (token, answer) in group.answers.drain(..) {
        if let Err(unanswered) = answer {
            failed.push((token, unanswered));
        }
    }
    assert_eq!(
        failed,
        vec![
            (1, Unanswered::with(ProposeError::Unknown, set("t", 4))),
            (2, Unanswered::with(ProposeError::Unknown, reserve("o", 3))),
        ]
    );
}

/// The leader (replica 1) adds member 4, which starts from an empty data
/// dir as `--join` makes it, and hears from the leader.
fn join_fourth(group: &mut Group) {
    let mut out = Output::default();
    let member = membership::Member::at("node-4");
    let change = MembershipChange::Add { node_id: 4, member };
    group.replicas[0].propose_membership(77, change, &mut out);
    group.queue.extend(out.messages);
    group.settle();
    let members = group.replicas[0].members().clone();
    let store = MemStore::joining(&members);
    let joining = Replica::new(ReplicaConfig::new(4), store, &logger()).unwrap();
    // Having acknowledged nothing, it forgot nothing: it may vote at once
    // (only a rebuilt member withholds its vote, `rebuild.rs`).
    assert!(!joining.is_rebuilding());
    group.replicas.push(joining);
    // The leader's next heartbeats reach the new node.
    for _ in 0..5 {
        let mut out = Output::default();
        group.replicas[0].tick(0, &mut out);
        group.queue.extend(out.messages);
        group.settle();
    }
}

#[test]
fn a_joining_replica_learns_the_full_membership() {
    let mut group = Group::new();
    group.elect_first();
    join_fourth(&mut group);
    let mut voters = group.replicas[3].conf_state().voters;
    voters.sort();
    assert_eq!(voters, vec![1, 2, 3, 4]);
    assert_eq!(group.replicas[3].members().len(), 4);
    assert_eq!(
        group.replicas[3].inventory().applied_index(),
        group.replicas[0].inventory().applied_index()
    );
}

/// A member added after the leader's last snapshot, behind a compacted
/// log, with one old member down so that its vote is needed for a quorum:
/// the leader takes a snapshot that names it, so it catches up and entries
/// commit again. (Before, the leader sent its older snapshot, which raft-rs
/// refuses to restore on a member it does not name, and nothing committed
/// that could have led to a newer one.)
#[test]
fn a_member_added_behind_a_compacted_log_catches_up_from_a_new_snapshot() {
    let configs = (1..=3).map(small_snapshots).collect();
    let mut group = Group::with_configs(configs);
    group.elect_first();
    for next in 1..=12u64 {
        let mut out = Output::default();
        let command = set(&format!("t{next}"), next as i64);
        group.replicas[0].propose(1_000 + next, vec![(next, command)], &mut out);
        group.queue.extend(out.messages);
        group.settle();
    }
    let snapshot_before = group.replicas[0].status().snapshot_index;
    assert!(snapshot_before > 0, "the log was never compacted");
    group.cut = Some(3);
    join_fourth(&mut group);
    let mut out = Output::default();
    group.replicas[0].propose(2_000, vec![(99, set("after", 9))], &mut out);
    group.queue.extend(out.messages);
    group.settle();
    let leader = group.replicas[0].status();
    assert!(leader.snapshot_index > snapshot_before);
    assert_eq!(
        group.replicas[3].inventory().applied_index(),
        leader.applied_index
    );
    assert!(
        group
            .answers
            .iter()
            .any(|(token, answer)| *token == 99 && answer.is_ok()),
        "the entry after the change did not commit with the new member's vote"
    );
}

/// A snapshot frozen on a follower and still being written when the leader
/// sends it a newer snapshot (it fell behind the leader's compacted log):
/// the one handed back later is stale and must be dropped, never recorded
/// over the installed one.
#[test]
fn a_snapshot_handed_back_after_an_install_from_the_leader_is_dropped() {
    let configs = (1..=3)
        .map(|id| {
            let mut config = small_snapshots(id);
            config.snapshot_by_caller = id == 3;
            config
        })
        .collect();
    let mut group = Group::with_configs(configs);
    group.elect_first();
    let mut next = 0u64;
    let mut propose = |group: &mut Group| {
        let mut out = Output::default();
        next += 1;
        group.replicas[0].propose(
            1_000 + next,
            vec![(next, set(&format!("t{next}"), next as i64))],
            &mut out,
        );
        group.queue.extend(out.messages);
        group.settle();
    };
    while group.tasks.is_empty() {
        propose(&mut group);
    }
    let (holder, task) = group.tasks.remove(0);
    assert_eq!(holder, 3);
    let frozen_at = task.index();
    // Replica 3 is cut off while the leader moves on and compacts its log.
    group.cut = Some(3);
    for _ in 0..40 {
        propose(&mut group);
    }
    let leader_snapshot = group.replicas[0].status().snapshot_index;
    assert!(leader_snapshot > frozen_at + 10);
    // Healed: the leader's heartbeats find replica 3 behind its log and
    // send a snapshot, which replica 3 installs with its own still pending.
    group.cut = None;
    for _ in 0..5 {
        let mut out = Output::default();
        group.replicas[0].tick(0, &mut out);
        group.queue.extend(out.messages);
        group.settle();
    }
    let installed = group.replicas[2].status().snapshot_index;
    assert!(installed > frozen_at, "no snapshot installed: {installed}");
    assert!(
        group.tasks.is_empty(),
        "a second snapshot while one is pending"
    );
    let written = task
        .run(&mut *group.replicas[2].store().chunk_writer())
        .unwrap();
    group.replicas[2].snapshot_written(written).unwrap();
    assert_eq!(group.replicas[2].status().snapshot_index, installed);
    let stored = group.replicas[2].store().load_snapshot().unwrap().unwrap();
    assert_eq!(stored.meta.index, installed);
    assert_eq!(
        group.replicas[2].inventory().digest(),
        group.replicas[0].inventory().digest()
    );
}

#[test]
fn a_snapshot_waits_for_a_log_in_proportion_to_the_state() {
    const MIB: u64 = 1024 * 1024;
    // Small states: as much log as the image.
    assert_eq!(super::snapshots::snapshot_log_due(10_000, 64 * MIB), 10_000);
    assert_eq!(
        super::snapshots::snapshot_log_due(60 * MIB, 64 * MIB),
        60 * MIB
    );
    // Past the floor, the floor, until a quarter of the image is more.
    assert_eq!(
        super::snapshots::snapshot_log_due(100 * MIB, 64 * MIB),
        64 * MIB
    );
    assert_eq!(
        super::snapshots::snapshot_log_due(1024 * MIB, 64 * MIB),
        256 * MIB
    );
    // No floor: a quarter of the image (tests, the simulator).
    assert_eq!(super::snapshots::snapshot_log_due(10_000, 0), 2_500);
    assert_eq!(super::snapshots::snapshot_log_due(0, 64 * MIB), 0);
}

fn async_config(id: u64) -> ReplicaConfig {
    let mut config = ReplicaConfig::new(id);
    config.persist_async = true;
    config
}

/// Advances and lands every sync asked for, as the server's sync thread
/// would, until nothing more is asked.
fn advance_synced<S: LogStore>(replica: &mut Replica<S>, out: &mut Output) {
    replica.advance(out).unwrap();
    while out.sync.take().is_some() {
        let number = replica.sync_store().unwrap();
        replica.persisted(number, out).unwrap();
    }
}

/// Persistence off the replication thread, one node: an entry written but
/// not yet synced is neither applied nor answered, a crash then loses it
/// (and nothing acknowledged), and once synced it is answered and survives
/// a crash.
#[test]
fn with_async_persistence_only_synced_entries_are_answered_and_survive() {
    use crate::sim::disk::SimDisk;
    let disk = SimDisk::new(MemStore::new(&[1]), false);
    let mut replica = Replica::new(async_config(1), disk, &logger()).unwrap();
    let mut out = Output::default();
    replica.campaign(&mut out).unwrap();
    advance_synced(&mut replica, &mut out);
    assert!(replica.is_leader());
    let applied_before = replica.inventory().applied_index();
    let mut out = Output::default();
    replica.propose(
        1_000,
        vec![(1, set("t", 5)), (2, reserve("o", 3))],
        &mut out,
    );
    replica.advance(&mut out).unwrap();
    let number = out.sync.expect("a sync asked for the written entry");
    assert!(out.answers.is_empty(), "answered before the sync");
    assert_eq!(replica.inventory().applied_index(), applied_before);
    assert_eq!(replica.unsynced_count(), 1);
    // The machine stops now: the write was in the page cache only.
    let mut crashed = replica.store().clone();
    crashed.crash();
    let restarted = Replica::new(async_config(1), crashed, &logger()).unwrap();
    assert_eq!(restarted.status().last_index, applied_before);
    // The sync lands: answered, applied, and durable.
    let synced = replica.sync_store().unwrap();
    assert_eq!(synced, number);
    replica.persisted(synced, &mut out).unwrap();
    assert_eq!(out.answers.len(), 2, "{:?}", out.answers);
    assert_eq!(replica.unsynced_count(), 0);
    assert_eq!(replica.inventory().applied_index(), applied_before + 1);
    let mut crashed = replica.store().clone();
    crashed.crash();
    let mut restarted = Replica::new(async_config(1), crashed, &logger()).unwrap();
    assert_eq!(restarted.status().last_index, applied_before + 1);
    // The commit index was written unsynced and lost: the entry is applied
    // once the restarted node leads and commits an entry of its own.
    let mut out = Output::default();
    restarted.campaign(&mut out).unwrap();
    advance_synced(&mut restarted, &mut out);
    assert_eq!(restarted.inventory().applied_index(), applied_before + 2);
    assert_eq!(restarted.inventory().open_count(), 1);
    assert!(restarted.inventory().reservation("o").is_some());
}

/// Persistence off the replication thread, three nodes: a follower's
/// append response waits for its sync, and the leader answers only after
/// its own sync, even once a follower's response made the entry committed.
#[test]
fn with_async_persistence_responses_and_answers_wait_for_the_sync() {
    use raft::eraftpb::MessageType;
    let mut group = Group::with_configs((1..=3).map(async_config).collect());
    group.elect_first();
    let mut out = Output::default();
    group.replicas[0].propose(5_000, vec![(1, set("t", 4))], &mut out);
    group.replicas[0].advance(&mut out).unwrap();
    let leader_sync = out
        .sync
        .take()
        .expect("the leader's own write waits for a sync");
    // The leader replicates before its own sync.
    let append = out
        .messages
        .iter()
        .find(|m| m.get_msg_type() == MessageType::MsgAppend && m.to == 2)
        .cloned()
        .expect("an append to node 2");
    group.replicas[1].step(append).unwrap();
    let mut follower_out = Output::default();
    group.replicas[1].advance(&mut follower_out).unwrap();
    let follower_sync = follower_out
        .sync
        .take()
        .expect("the follower asks for a sync");
    assert!(
        follower_out.messages.is_empty(),
        "a response went out before its sync: {:?}",
        follower_out.messages
    );
    assert_eq!(group.replicas[1].sync_store().unwrap(), follower_sync);
    group.replicas[1]
        .persisted(follower_sync, &mut follower_out)
        .unwrap();
    let response = follower_out
        .messages
        .iter()
        .find(|m| m.get_msg_type() == MessageType::MsgAppendResponse)
        .cloned()
        .expect("the append response once synced");
    // Node 2's response makes the entry committed (2 of 3): the leader
    // still may not apply what it has not made durable itself.
    group.replicas[0].step(response).unwrap();
    let mut out = Output::default();
    group.replicas[0].advance(&mut out).unwrap();
    assert!(out.answers.is_empty(), "answered before the leader's sync");
    assert!(group.replicas[0].sync_store().unwrap() >= leader_sync);
    group.replicas[0].persisted(leader_sync, &mut out).unwrap();
    assert_eq!(out.answers.len(), 1, "{:?}", out.answers);
    assert!(matches!(
        out.answers[0],
        (1, Ok(Applied::StockChange(Ok(_))))
    ));
}
