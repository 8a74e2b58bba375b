//! The simulator's checkers. See the module docs of [`crate::sim`].

use std::collections::{BTreeMap, HashMap};

use raft::eraftpb::{Entry, EntryType};

use super::client::Client;
use super::disk::SimDisk;
use super::durability::Promises;
use super::model::{Model, State};
use super::node::{CLOCK_DRIFT_PPM_MAX, TRUE_CLOCK_BASE_MS};
use crate::inventory::codec::decode_batch;
use crate::inventory::{Applied, Command, ReservationState, StockLevel};
use crate::replica::Replica;

use super::report::{Checked, Failure, ViolationKind};
use ViolationKind::*;

/// A failure of `kind`, as a check's result.
fn fail<T>(kind: ViolationKind, message: String) -> Checked<T> {
    Err(Failure::new(kind, message))
}

#[derive(Debug, Clone)]
struct WriteRecord {
    client: usize,
    command: Command,
    invoked_ms: u64,
    acked_ms: u64,
    answer: Applied,
    at: (u64, usize),
}

#[derive(Debug, Clone)]
struct ReadRecord {
    invoked_ms: u64,
    acked_ms: u64,
    applied_index: u64,
    values: Vec<(String, String, StockLevel)>,
    linearizable: bool,
}

type Nodes<'a> = [(u64, Option<&'a Replica<SimDisk>>)];

/// The model's answer for each command of the log, by (index, position).
type Answers = HashMap<(u64, usize), (Command, Applied)>;

#[derive(Default)]
pub struct Checker {
    leaders: BTreeMap<u64, u64>,
    committed: BTreeMap<u64, Entry>,
    captured: HashMap<u64, u64>,
    digests: BTreeMap<u64, (u64, u64)>,
    writes: Vec<WriteRecord>,
    reads: Vec<ReadRecord>,
    failures: Vec<Failure>,
    pub reads_checked: usize,
    /// What members promised was durable (see `durability.rs`).
    pub promises: Promises,
    /// How far ahead of true time a stamp may be: honest clocks' skew
    /// (drift comes on top, by the time elapsed) and `--max-clock-offset`.
    stamp_ahead_ms_base: u64,
}

impl Checker {
    pub fn with_stamp_bound(stamp_ahead_ms_base: u64) -> Checker {
        Checker {
            stamp_ahead_ms_base,
            ..Checker::default()
        }
    }

    pub fn acked_writes(&self) -> usize {
        self.writes.len()
    }

    /// Terms that had a leader.
    pub fn elections(&self) -> u64 {
        self.leaders.len() as u64
    }

    pub fn max_committed(&self) -> u64 {
        self.committed.keys().next_back().copied().unwrap_or(0)
    }

    pub fn note_failure(&mut self, kind: ViolationKind, message: String) {
        self.failures.push(Failure::new(kind, message));
    }

    /// Records a failure found outside the checker's own steps.
    pub fn note(&mut self, failure: Failure) {
        self.failures.push(failure);
    }

    pub fn record_write(
        &mut self,
        client: usize,
        command: Command,
        invoked_ms: u64,
        acked_ms: u64,
        answer: Applied,
        at: (u64, usize),
    ) {
        self.writes.push(WriteRecord {
            client,
            command,
            invoked_ms,
            acked_ms,
            answer,
            at,
        });
    }

    pub fn record_read(
        &mut self,
        invoked_ms: u64,
        acked_ms: u64,
        applied_index: u64,
        values: Vec<(String, String, StockLevel)>,
        linearizable: bool,
    ) {
        self.reads.push(ReadRecord {
            invoked_ms,
            acked_ms,
            applied_index,
            values,
            linearizable,
        });
    }

    /// Checks run after every simulated millisecond.
    pub fn step(&mut self, now_ms: u64, nodes: &Nodes) -> Checked {
        if let Some(failure) = self.failures.first() {
            return Err(failure.clone());
        }
        for (id, replica) in nodes {
            let Some(replica) = replica else {
                continue;
            };
            let status = replica.status();
            // At most one leader per term.
            if status.is_leader {
                if let Some(other) = self.leaders.insert(status.term, *id) {
                    if other != *id {
                        return fail(
                            TwoLeaders,
                            format!(
                                "two leaders in term {}: nodes {other} and {id}",
                                status.term
                            ),
                        );
                    }
                }
            }
            // Committed entries never change. Capture what this node has
            // applied since the last look.
            let applied = replica.inventory().applied_index();
            let from = self.captured.get(id).copied().unwrap_or(0) + 1;
            if applied >= from {
                let store = replica.store();
                let snapshot_index = replica.status().snapshot_index;
                for index in from..=applied {
                    let Some(entry) = store.journal(index) else {
                        if index <= snapshot_index {
                            // Installed from a snapshot: not in this node's log.
                            continue;
                        }
                        return fail(
                            LogDiverged,
                            format!("node {id} applied entry {index} that it never appended"),
                        );
                    };
                    match self.committed.get(&index) {
                        Some(seen) if seen.term != entry.term || seen.data != entry.data => {
                            return fail(LogDiverged, format!(
                                "at {now_ms} ms node {id} applied entry {index} (term {}) but entry {index} was committed with term {}",
                                entry.term, seen.term
                            ));
                        }
                        Some(_) => {}
                        None => {
                            self.check_stamp(now_ms, index, entry)?;
                            self.committed.insert(index, entry.clone());
                        }
                    }
                }
                self.captured.insert(*id, applied);
            }
        }
        Ok(())
    }

    /// No batch is stamped further ahead of true time than honest clocks
    /// and the offset bound allow: a leader with a clock a day fast never
    /// stamps, so no hold expires early and no retained id is forgotten
    /// early (both go by stamps).
    fn check_stamp(&self, now_ms: u64, index: u64, entry: &Entry) -> Checked {
        if entry.get_entry_type() != EntryType::EntryNormal || entry.data.is_empty() {
            return Ok(());
        }
        let batch = decode_batch(&entry.data)
            .map_err(|e| Failure::new(Harness, format!("entry {index}: {e}")))?;
        let drift_ms = now_ms * CLOCK_DRIFT_PPM_MAX as u64 / 1_000_000;
        let bound_ms = TRUE_CLOCK_BASE_MS + now_ms + self.stamp_ahead_ms_base + drift_ms;
        if batch.stamp_ms > bound_ms {
            return fail(
                StampAhead,
                format!(
                    "entry {index} is stamped {} ms ahead of true time (at most {} allowed)",
                    batch.stamp_ms - (TRUE_CLOCK_BASE_MS + now_ms),
                    self.stamp_ahead_ms_base + drift_ms
                ),
            );
        }
        Ok(())
    }

    /// Replicas at the same applied index have the same state.
    pub fn compare_digests(&mut self, nodes: &Nodes) -> Checked {
        for (id, replica) in nodes {
            let Some(replica) = replica else {
                continue;
            };
            let inventory = replica.inventory();
            let index = inventory.applied_index();
            let digest = inventory.digest();
            match self.digests.get(&index) {
                Some((other, seen)) if *seen != digest => {
                    return fail(
                        StatesDiverged,
                        format!(
                            "nodes {other} and {id} applied index {index} but their states differ"
                        ),
                    );
                }
                Some(_) => {}
                None => {
                    self.digests.insert(index, (*id, digest));
                }
            }
        }
        Ok(())
    }

    /// Every replica ends with the cluster id of the first identity entry
    /// committed (the model's rule: the first one wins), and there is one.
    fn check_cluster_id(&self, nodes: &Nodes, max: u64) -> Checked {
        let first = (1..=max).find_map(|index| {
            let entry = self.committed.get(&index)?;
            let normal = entry.get_entry_type() == EntryType::EntryNormal;
            if !normal || !entry.data.is_empty() {
                return None;
            }
            crate::replica::membership::decode_cluster_identity(&entry.context)
        });
        let Some(first) = first else {
            return fail(ClusterId, "no entry ever gave the cluster an id".into());
        };
        for (id, replica) in nodes {
            let held = replica.and_then(|r| r.cluster_id());
            if held != Some(first) {
                return fail(
                    ClusterId,
                    format!("node {id} holds cluster id {held:?}, the log gave {first:?}"),
                );
            }
        }
        Ok(())
    }

    /// The checks at the end of a seed.
    pub fn finish(&mut self, nodes: &Nodes, clients: &[Client]) -> Checked {
        if let Some(failure) = self.failures.first() {
            return Err(failure.clone());
        }
        if let Some(c) = clients.iter().find(|c| !c.done()) {
            return fail(
                Liveness,
                format!("liveness: client {} never finished", c.index),
            );
        }
        let max = self.check_caught_up(nodes)?;
        self.compare_digests(nodes)?;
        self.check_cluster_id(nodes, max)?;
        let (model, answers) = self.replay(max)?;
        self.check_answers(&answers)?;
        self.check_real_time_order()?;
        self.check_reads(&model)?;
        for (id, replica) in nodes {
            let Some(replica) = replica else {
                continue;
            };
            check_final_state(*id, replica, &model)?;
        }
        Ok(())
    }

    /// Every replica is up and caught up: the index they all applied.
    fn check_caught_up(&self, nodes: &Nodes) -> Checked<u64> {
        let mut applied = Vec::new();
        for (id, replica) in nodes {
            let Some(replica) = replica else {
                return fail(
                    Liveness,
                    format!("liveness: node {id} is still down at the end"),
                );
            };
            applied.push((*id, replica.inventory().applied_index()));
        }
        let max = applied.iter().map(|(_, a)| *a).max().unwrap_or(0);
        if let Some((id, a)) = applied.iter().find(|(_, a)| *a != max) {
            return fail(
                Liveness,
                format!("liveness: node {id} applied {a} of {max} after faults stopped"),
            );
        }
        Ok(max)
    }

    /// Replays the committed log through the model: the model after
    /// entry `max`, and its answer for each command by (index, position).
    fn replay(&self, max: u64) -> Checked<(Model, Answers)> {
        let mut model = Model::default();
        let mut answers: Answers = HashMap::new();
        for index in 1..=max {
            let Some(entry) = self.committed.get(&index) else {
                return fail(
                    Harness,
                    format!("the checker never saw committed entry {index}"),
                );
            };
            if entry.get_entry_type() != EntryType::EntryNormal || entry.data.is_empty() {
                model.applied_index = index;
                continue;
            }
            let batch = decode_batch(&entry.data)
                .map_err(|e| Failure::new(Harness, format!("entry {index}: {e}")))?;
            let results = model.apply(
                index,
                batch.stamp_ms,
                batch.id_retention_ms,
                &batch.commands,
            );
            for (position, (command, result)) in batch.commands.into_iter().zip(results).enumerate()
            {
                answers.insert((index, position), (command, result));
            }
        }
        Ok((model, answers))
    }

    /// Every acknowledged answer is the log's answer for that entry.
    fn check_answers(&self, answers: &Answers) -> Checked {
        for w in &self.writes {
            let Some((command, answer)) = answers.get(&w.at) else {
                return fail(
                    LostWrite,
                    format!(
                        "client {} was answered from entry {:?}, which holds no such command: {:?}",
                        w.client, w.at, w.command
                    ),
                );
            };
            if *command != w.command {
                return fail(
                    LostWrite,
                    format!(
                        "client {} was answered for {:?} from entry {:?}, which holds {:?}",
                        w.client, w.command, w.at, command
                    ),
                );
            }
            if *answer != w.answer {
                return fail(
                    WrongAnswer,
                    format!(
                        "client {} was told {:?} for {:?}, but the log's sequential answer is {:?}",
                        w.client, w.answer, w.command, answer
                    ),
                );
            }
        }
        Ok(())
    }

    /// Real time: an operation acknowledged before another began sits
    /// earlier in the log.
    fn check_real_time_order(&self) -> Checked {
        let mut events: Vec<(u64, u8, usize)> = Vec::new();
        for (i, w) in self.writes.iter().enumerate() {
            events.push((w.acked_ms, 0, i));
            events.push((w.invoked_ms, 1, i));
        }
        // At equal times, invocations first: "acknowledged before began"
        // needs a strictly earlier acknowledgement.
        events.sort_by_key(|(t, kind, i)| (*t, 1 - *kind, *i));
        let mut latest: Option<(u64, usize)> = None;
        let mut bound: HashMap<usize, (u64, usize)> = HashMap::new();
        for (_, kind, i) in &events {
            if *kind == 1 {
                if let Some(l) = latest {
                    bound.insert(*i, l);
                }
            } else {
                let at = self.writes[*i].at;
                latest = Some(latest.map_or(at, |l| l.max(at)));
            }
        }
        for (i, w) in self.writes.iter().enumerate() {
            if let Some(before) = bound.get(&i) {
                if w.at <= *before {
                    return fail(NotLinearizable, format!(
                        "not linearizable: {:?} (invoked at {} ms) was applied at {:?}, not after {:?}, which was acknowledged before it began",
                        w.command, w.invoked_ms, w.at, before
                    ));
                }
            }
        }
        Ok(())
    }

    /// Reads: the model's state at the index read; linearizable reads
    /// no older than any write acknowledged before they began.
    fn check_reads(&mut self, model: &Model) -> Checked {
        for r in &self.reads {
            for (sku, node, level) in &r.values {
                let expected = model.level_at(sku, node, r.applied_index);
                if expected != *level {
                    return fail(WrongRead, format!(
                        "a read at index {} saw {sku}@{node} = {level:?}, but the log says {expected:?}",
                        r.applied_index
                    ));
                }
            }
            if r.linearizable {
                let newest = self
                    .writes
                    .iter()
                    .filter(|w| w.acked_ms < r.invoked_ms)
                    .map(|w| w.at.0)
                    .max()
                    .unwrap_or(0);
                if r.applied_index < newest {
                    return fail(StaleRead, format!(
                        "stale linearizable read: read at index {} (invoked {} ms, answered {} ms) after a write acknowledged at index {newest}",
                        r.applied_index, r.invoked_ms, r.acked_ms
                    ));
                }
            }
            self.reads_checked += 1;
        }
        Ok(())
    }
}

/// The final state of replica `id` is the model's: the same counters, the
/// same holds, and the state machine's own invariants hold.
fn check_final_state(id: u64, replica: &Replica<SimDisk>, model: &Model) -> Checked {
    check_counters(id, replica, model)?;
    check_holds(id, replica, model)?;
    if let Err(broken) = replica.inventory().check_invariants() {
        return fail(Invariant, format!("node {id}: {broken}"));
    }
    Ok(())
}

/// Every counter is at the model's level, and no other counter is set.
fn check_counters(id: u64, replica: &Replica<SimDisk>, model: &Model) -> Checked {
    let mut real = BTreeMap::new();
    replica.inventory().stock().for_each(|s, n, l| {
        real.insert((s.to_string(), n.to_string()), *l);
    });
    for (key, level) in &model.counters {
        let got = real.remove(key).unwrap_or_default();
        if got != *level {
            return fail(
                StateMismatch,
                format!(
                    "node {id}: {}@{} is {got:?}, the model says {level:?}",
                    key.0, key.1
                ),
            );
        }
    }
    if let Some((key, level)) = real.iter().find(|(_, l)| **l != StockLevel::default()) {
        return fail(
            StateMismatch,
            format!(
                "node {id}: {}@{} is {level:?}, unknown to the model",
                key.0, key.1
            ),
        );
    }
    Ok(())
}

/// Every hold the model keeps is in the same state with the same deadline,
/// and none expired before its deadline.
fn check_holds(id: u64, replica: &Replica<SimDisk>, model: &Model) -> Checked {
    let inventory = replica.inventory();
    for (rid, hold) in &model.holds {
        let Some(r) = inventory.reservation(rid) else {
            return fail(
                StateMismatch,
                format!("node {id}: reservation {rid} is missing"),
            );
        };
        let state = match r.state {
            ReservationState::Open => State::Open,
            ReservationState::Consumed => State::Consumed,
            ReservationState::Released => State::Released,
            ReservationState::Expired => State::Expired,
        };
        if state != hold.state || r.expires_at_ms != hold.expires_at_ms {
            return fail(
                StateMismatch,
                format!(
                    "node {id}: reservation {rid} is {:?} until {}, the model says {:?} until {}",
                    state, r.expires_at_ms, hold.state, hold.expires_at_ms
                ),
            );
        }
        if state == State::Expired && r.finished_at_ms < r.expires_at_ms {
            return fail(
                HoldExpiredEarly,
                format!("node {id}: reservation {rid} expired before its deadline"),
            );
        }
    }
    Ok(())
}
