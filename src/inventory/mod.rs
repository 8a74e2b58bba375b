//! The inventory state machine: stock counters, reservations, and the rules
//! that change them.
//!
//! This module is pure and deterministic. It never reads a clock, a disk or
//! the network: time arrives as the leader's stamp on each [`Batch`], and the
//! same batches applied in the same order give the same state on every
//! replica, bit for bit (checked by [`Inventory::digest`]).
//!
//! Applying a batch, step by step:
//! 1. Time moves to the batch's stamp (never backwards).
//! 2. Holds whose deadline has come are expired, returning their stock.
//! 3. Finished reservations and transaction ids older than the retention
//!    window (or beyond the retained maximum) are forgotten.
//! 4. Each command is applied in order and answers an [`Applied`].
//!
//! The invariants (reserved never negative, a reserve never drives available
//! below zero, reserved equals the open lines) are asserted as they are
//! touched; the full cross-check [`Inventory::check_invariants`] runs after
//! every batch in debug builds and tests. A broken invariant panics: the node
//! stops rather than serve state it cannot trust.

pub mod answer;
pub mod codec;
pub mod command;
pub mod cow_table;
pub mod reservation;
pub mod retained;
pub mod snapshot;
pub mod stock;

#[cfg(test)]
pub(crate) mod tests;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

pub use answer::{
    Applied, CapacityError, ConsumeError, ExtendAnswer, ExtendError, Outcome, ReleaseError,
    ReserveAnswer, ReserveError, Shortage, StockAnswer, StockChangeError,
};
pub use command::{AdjustReason, Batch, Command, InvalidInput, Line};
pub use cow_table::CowTable;
pub use reservation::{HeldLine, HeldLines, Reservation, ReservationState, TimedId};
pub use stock::{SkuAvailability, StockLevel, StockTable};

use crate::limits::{COUNTER_MAX, ID_RETAINED_MAX, RESERVATIONS_OPEN_MAX};

/// The hasher of the state machine's maps: foldhash, seeded at random per
/// process. Several times faster than the standard SipHash on the short
/// keys looked up for every command (SKU names, node names, hashed txn
/// ids), and its random seed still keeps a client from choosing ids that
/// all land in one bucket. Only lookups use it; nothing iterates a map in
/// hash order where replicas must agree.
pub(crate) type FastHash = foldhash::fast::RandomState;

/// What readers share with the apply thread: the counters, the reservations,
/// and how far the log has been applied. Readers never take a lock that the
/// apply thread holds for longer than one counter update.
#[derive(Debug, Default)]
pub struct Shared {
    pub stock: StockTable,
    /// Open and finished reservations, in buckets that a snapshot freezes
    /// in constant time (see [`cow_table`]).
    pub reservations: CowTable<Reservation>,
    applied_index: AtomicU64,
    now_ms: AtomicU64,
}

impl Shared {
    /// The last log index whose effects are visible to readers.
    pub fn applied_index(&self) -> u64 {
        self.applied_index.load(Ordering::Acquire)
    }

    /// The leader's time as of the last applied entry.
    pub fn now_ms(&self) -> u64 {
        self.now_ms.load(Ordering::Acquire)
    }
}

/// A transaction id as remembered: its 128-bit XXH3 hash instead of its
/// text. Up to twenty million ids are kept for a day (POS sales and ERP
/// syncs each carry one), and the text with its allocation would cost more
/// than the record itself. Two distinct ids of a retention window sharing a
/// hash has a probability near 1e-24 at twenty million ids; the command's
/// fingerprint is still compared, so even then only a retry of byte-identical
/// content could be mistaken for the other id.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, PartialOrd, Ord)]
pub struct TxnKey(pub [u64; 2]);

impl TxnKey {
    pub fn of(txn_id: &str) -> TxnKey {
        let hash = xxhash_rust::xxh3::xxh3_128(txn_id.as_bytes());
        TxnKey([(hash >> 64) as u64, hash as u64])
    }
}

/// The outcome of a stock-change transaction, kept so a retry with the same
/// txn_id answers exactly as the first call did. When it finished is kept
/// once, beside it in [`retained::RetainedTxns`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxnRecord {
    pub fingerprint: u64,
    pub level: StockLevel,
}

/// The state machine. Owned by the replication loop; readers use
/// [`Inventory::shared`].
#[derive(Debug)]
pub struct Inventory {
    shared: Arc<Shared>,
    /// Interned node names (few nodes, many SKUs per node).
    node_names: HashSet<Arc<str>, FastHash>,
    /// Open reservations by deadline (see [`TimedId`]).
    expiry: BTreeSet<TimedId>,
    /// Finished reservations by finish time (see [`TimedId`]).
    finished: BTreeSet<TimedId>,
    /// Transaction outcomes in finish order.
    txns: retained::RetainedTxns,
    open_count: usize,
    now_ms: u64,
    applied_index: u64,
}

impl Default for Inventory {
    fn default() -> Self {
        Inventory::new()
    }
}

impl Inventory {
    pub fn new() -> Inventory {
        Inventory {
            shared: Arc::new(Shared::default()),
            node_names: HashSet::default(),
            expiry: BTreeSet::new(),
            finished: BTreeSet::new(),
            txns: retained::RetainedTxns::default(),
            open_count: 0,
            now_ms: 0,
            applied_index: 0,
        }
    }

    /// An inventory in which every SKU name shares one key and every
    /// reservation id another (see [`cow_table::Keys::colliding`]): it must
    /// behave exactly as any other, names being the keys.
    #[cfg(test)]
    pub(crate) fn with_colliding_keys() -> Inventory {
        let shared = Shared {
            stock: StockTable::with_keys(cow_table::Keys::colliding()),
            reservations: CowTable::with_keys(cow_table::Keys::colliding()),
            ..Shared::default()
        };
        Inventory {
            shared: Arc::new(shared),
            ..Inventory::new()
        }
    }

    /// The read side, for gRPC handlers.
    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    pub fn stock(&self) -> &StockTable {
        &self.shared.stock
    }

    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    pub fn applied_index(&self) -> u64 {
        self.applied_index
    }

    pub fn open_count(&self) -> usize {
        self.open_count
    }

    /// How many finished reservations and transaction ids are remembered.
    pub fn retained_count(&self) -> usize {
        self.finished.len() + self.txns.len()
    }

    /// The earliest deadline of an open reservation, so the leader knows when
    /// to propose a tick that expires it.
    pub fn next_expiry_ms(&self) -> Option<u64> {
        self.expiry.first().map(|t| t.at_ms)
    }

    pub fn reservation(&self, id: &str) -> Option<Reservation> {
        self.shared
            .reservations
            .get(id)
            .map(|r| Reservation::clone(&r))
    }

    /// Records that log entry `index` carried no batch (a leader's empty
    /// entry or a membership change) so the applied index stays exact.
    pub fn apply_empty(&mut self, index: u64) {
        assert!(index > self.applied_index, "applied index went backwards");
        self.set_applied(index);
    }

    /// Applies one log entry's batch and answers each command in order.
    pub fn apply_batch(&mut self, index: u64, batch: &Batch) -> Vec<Applied> {
        let mut answers = Vec::with_capacity(batch.commands.len());
        self.apply_batch_into(index, batch, |applied| answers.push(applied));
        answers
    }

    /// Applies one log entry's batch that no caller here waits for (on a
    /// follower, every entry): the same changes as [`Inventory::apply_batch`],
    /// without gathering answers nobody reads. Gathering them was 4.2% of a
    /// follower's CPU in stop 16's profile (BENCHMARKS.md).
    pub fn apply_batch_unanswered(&mut self, index: u64, batch: &Batch) {
        self.apply_batch_into(index, batch, drop);
    }

    fn apply_batch_into(&mut self, index: u64, batch: &Batch, mut answer: impl FnMut(Applied)) {
        assert!(
            index > self.applied_index,
            "entry {index} applied after {}",
            self.applied_index
        );
        // Time never runs backwards, even if a new leader's clock is behind.
        self.now_ms = self.now_ms.max(batch.stamp_ms);
        self.expire_due();
        self.forget_old(batch.id_retention_ms, batch.id_retained_max);
        for command in &batch.commands {
            answer(self.apply(command));
        }
        self.set_applied(index);
        #[cfg(debug_assertions)]
        if self.shared.stock.counter_count() + self.shared.reservations.len() <= 20_000 {
            if let Err(broken) = self.check_invariants() {
                panic!("invariant broken after entry {index}: {broken}");
            }
        }
    }

    fn set_applied(&mut self, index: u64) {
        self.applied_index = index;
        self.shared.now_ms.store(self.now_ms, Ordering::Release);
        self.shared.applied_index.store(index, Ordering::Release);
    }

    fn apply(&mut self, command: &Command) -> Applied {
        match command {
            Command::Reserve(c) => Applied::Reserve(self.reserve(c)),
            Command::Consume { reservation_id } => Applied::Consume(self.consume(reservation_id)),
            Command::Release { reservation_id } => Applied::Release(self.release(reservation_id)),
            Command::Extend(c) => Applied::Extend(self.extend(c)),
            Command::Sell(c) => {
                let fingerprint = codec::fingerprint(command);
                Applied::StockChange(self.stock_change(
                    &c.txn_id,
                    fingerprint,
                    &c.sku,
                    &c.node,
                    |level| {
                        let on_hand = i128::from(level.on_hand) - i128::from(c.qty);
                        set_on_hand_checked(level, on_hand, &c.sku, &c.node)
                    },
                ))
            }
            Command::Adjust(c) => {
                let fingerprint = codec::fingerprint(command);
                Applied::StockChange(self.stock_change(
                    &c.txn_id,
                    fingerprint,
                    &c.sku,
                    &c.node,
                    |level| {
                        let on_hand = i128::from(level.on_hand) + i128::from(c.delta);
                        set_on_hand_checked(level, on_hand, &c.sku, &c.node)
                    },
                ))
            }
            Command::SetOnHand(c) => {
                let fingerprint = codec::fingerprint(command);
                Applied::StockChange(self.stock_change(
                    &c.txn_id,
                    fingerprint,
                    &c.sku,
                    &c.node,
                    |level| {
                        if let Some(expected) = c.expected_on_hand {
                            if expected != level.on_hand {
                                return Err(StockChangeError::Stale {
                                    sku: c.sku.clone(),
                                    node: c.node.clone(),
                                    expected,
                                    actual: level.on_hand,
                                });
                            }
                        }
                        level.on_hand = c.on_hand;
                        Ok(())
                    },
                ))
            }
            Command::SetSafetyStock(c) => {
                let result = self.shared.stock.update_or_create(
                    &c.sku,
                    &c.node,
                    &mut self.node_names,
                    |level| {
                        level.safety_stock = c.safety_stock;
                        *level
                    },
                );
                Applied::SetSafetyStock(result.map(|level| StockAnswer { level }))
            }
        }
    }

    fn reserve(&mut self, c: &command::Reserve) -> Result<ReserveAnswer, ReserveError> {
        // Looked at in place: no reference taken, so nothing to count.
        let existing = self.shared.reservations.read(&c.reservation_id, |r| {
            (r.same_payload(&c.lines, c.ttl_ms), r.state, r.expires_at_ms)
        });
        if let Some((same, state, expires_at_ms)) = existing {
            if !same {
                return Err(ReserveError::IdReused {
                    id: c.reservation_id.clone(),
                });
            }
            return Ok(ReserveAnswer {
                outcome: outcome_of(state),
                expires_at_ms,
                shortages: Vec::new(),
            });
        }
        if self.open_count >= RESERVATIONS_OPEN_MAX {
            return Err(ReserveError::TooManyOpen {
                open: self.open_count,
            });
        }
        // Check every line first: all or nothing.
        let mut shortages = Vec::new();
        for line in &c.lines {
            let level = self
                .shared
                .stock
                .level(&line.sku, &line.node)
                .unwrap_or_default();
            if level.available() < line.qty {
                shortages.push(Shortage {
                    sku: line.sku.clone(),
                    node: line.node.clone(),
                    requested: line.qty,
                    available: level.available(),
                });
            }
        }
        if !shortages.is_empty() {
            return Ok(ReserveAnswer {
                outcome: Outcome::InsufficientStock,
                expires_at_ms: 0,
                shortages,
            });
        }
        // Every counter exists (available >= qty >= 1) and has room.
        let mut held = HeldLines::with_capacity(c.lines.len());
        for line in &c.lines {
            let Some((sku, node)) = self.shared.stock.hold(&line.sku, &line.node, line.qty) else {
                panic!("checked counter vanished");
            };
            held.push(HeldLine {
                sku,
                node,
                qty: line.qty,
            });
        }
        let id: Arc<str> = Arc::from(c.reservation_id.as_str());
        let expires_at_ms = self.now_ms.saturating_add(c.ttl_ms);
        self.expiry.insert(TimedId::new(expires_at_ms, id.clone()));
        let replaced = self.shared.reservations.insert(Arc::new(Reservation {
            id,
            lines: held,
            ttl_ms: c.ttl_ms,
            state: ReservationState::Open,
            created_at_ms: self.now_ms,
            expires_at_ms,
            finished_at_ms: 0,
        }));
        assert!(replaced.is_none(), "a new reservation replaced a kept one");
        self.open_count += 1;
        Ok(ReserveAnswer {
            outcome: Outcome::Reserved,
            expires_at_ms,
            shortages: Vec::new(),
        })
    }

    fn consume(&mut self, id: &str) -> Result<Outcome, ConsumeError> {
        let Some(state) = self.shared.reservations.read(id, |r| r.state) else {
            return Ok(Outcome::NotFound);
        };
        match state {
            ReservationState::Open => {
                self.finish(id, ReservationState::Consumed);
                Ok(Outcome::Consumed)
            }
            ReservationState::Consumed => Ok(Outcome::Consumed),
            ReservationState::Expired => Ok(Outcome::Expired),
            ReservationState::Released => Err(ConsumeError::Released { id: id.to_string() }),
        }
    }

    fn release(&mut self, id: &str) -> Result<Outcome, ReleaseError> {
        let Some(state) = self.shared.reservations.read(id, |r| r.state) else {
            return Ok(Outcome::NotFound);
        };
        match state {
            ReservationState::Open => {
                self.finish(id, ReservationState::Released);
                Ok(Outcome::Released)
            }
            ReservationState::Released => Ok(Outcome::Released),
            ReservationState::Expired => Ok(Outcome::Expired),
            ReservationState::Consumed => Err(ReleaseError::Consumed { id: id.to_string() }),
        }
    }

    fn extend(&mut self, c: &command::Extend) -> Result<ExtendAnswer, ExtendError> {
        let Some(found) = self.shared.reservations.get(c.reservation_id.as_str()) else {
            return Ok(ExtendAnswer {
                outcome: Outcome::NotFound,
                expires_at_ms: 0,
            });
        };
        match found.state {
            ReservationState::Open => {
                drop(found);
                let expiry = &mut self.expiry;
                let expires_at_ms = self.now_ms.saturating_add(c.ttl_ms);
                let changed = self.shared.reservations.update(&c.reservation_id, |r| {
                    let was_present = expiry.remove(&TimedId::new(r.expires_at_ms, r.id.clone()));
                    assert!(
                        was_present,
                        "open reservation missing from the expiry index"
                    );
                    r.expires_at_ms = expires_at_ms;
                    expiry.insert(TimedId::new(r.expires_at_ms, r.id.clone()));
                });
                assert!(changed.is_some(), "a found reservation vanished");
                Ok(ExtendAnswer {
                    outcome: Outcome::Reserved,
                    expires_at_ms,
                })
            }
            ReservationState::Expired => Ok(ExtendAnswer {
                outcome: Outcome::Expired,
                expires_at_ms: found.expires_at_ms,
            }),
            ReservationState::Consumed => Err(ExtendError::Consumed {
                id: c.reservation_id.clone(),
            }),
            ReservationState::Released => Err(ExtendError::Released {
                id: c.reservation_id.clone(),
            }),
        }
    }

    /// Ends an open reservation: its stock is consumed (on_hand and reserved
    /// drop) or returned (reserved drops).
    fn finish(&mut self, id: &str, end: ReservationState) {
        let stock = &self.shared.stock;
        let expiry = &mut self.expiry;
        let finished = &mut self.finished;
        let now_ms = self.now_ms;
        let changed = self.shared.reservations.update(id, |r| {
            assert_eq!(
                r.state,
                ReservationState::Open,
                "finishing a closed reservation"
            );
            for line in &r.lines {
                let changed = stock.update_existing(&line.sku, &line.node, |level| {
                    level.reserved -= line.qty;
                    assert!(level.reserved >= 0, "reserved went negative");
                    if end == ReservationState::Consumed {
                        level.on_hand -= line.qty;
                    }
                });
                assert!(changed.is_some(), "reservation holds a missing counter");
            }
            let was_present = expiry.remove(&TimedId::new(r.expires_at_ms, r.id.clone()));
            assert!(
                was_present,
                "open reservation missing from the expiry index"
            );
            r.state = end;
            r.finished_at_ms = now_ms;
            finished.insert(TimedId::new(now_ms, r.id.clone()));
        });
        assert!(changed.is_some(), "finishing unknown reservation {id:?}");
        assert!(self.open_count > 0, "open count underflow");
        self.open_count -= 1;
    }

    fn expire_due(&mut self) {
        loop {
            let id = match self.expiry.first() {
                Some(t) if t.at_ms <= self.now_ms => t.id.clone(),
                _ => return,
            };
            self.finish(&id, ReservationState::Expired);
        }
    }

    /// Forgets finished reservations and transaction outcomes, oldest
    /// first (a reservation before an outcome of the same millisecond),
    /// while the oldest is past the retention window or more are kept than
    /// `retained_max`.
    fn forget_old(&mut self, retention_ms: u64, retained_max_asked: u64) {
        // Whatever an entry asks for, never past the hard limit.
        let retained_max = retained_max_asked.min(ID_RETAINED_MAX);
        loop {
            let reservation_ms = self.finished.first().map(|t| t.at_ms);
            let txn_ms = self.txns.oldest_at_ms();
            let (at, is_reservation) = match (reservation_ms, txn_ms) {
                (None, None) => return,
                (Some(r), None) => (r, true),
                (None, Some(t)) => (t, false),
                (Some(r), Some(t)) => (r.min(t), r <= t),
            };
            let too_old = at.saturating_add(retention_ms) <= self.now_ms;
            let too_many = self.retained_count() as u64 > retained_max;
            if !too_old && !too_many {
                return;
            }
            if !is_reservation {
                self.txns.pop_oldest();
                continue;
            }
            if let Some(t) = self.finished.pop_first() {
                self.shared.reservations.remove(&t.id);
            }
        }
    }

    /// Applies a stock change under a transaction id: at most once per id,
    /// and a refused change (stale, out of range) leaves nothing behind, not
    /// even an empty counter, so the same id may be retried.
    fn stock_change(
        &mut self,
        txn_id: &str,
        fingerprint: u64,
        sku: &str,
        node: &str,
        change: impl FnOnce(&mut StockLevel) -> Result<(), StockChangeError>,
    ) -> Result<StockAnswer, StockChangeError> {
        let key = TxnKey::of(txn_id);
        if let Some(retained) = self.txns.get(&key) {
            let record = retained.record;
            if record.fingerprint != fingerprint {
                return Err(StockChangeError::IdReused {
                    id: txn_id.to_string(),
                });
            }
            return Ok(StockAnswer {
                level: record.level,
            });
        }
        let mut next = self.shared.stock.level(sku, node).unwrap_or_default();
        change(&mut next)?;
        self.shared
            .stock
            .update_or_create(sku, node, &mut self.node_names, |level| *level = next)?;
        let record = TxnRecord {
            fingerprint,
            level: next,
        };
        let added = self.txns.push(self.now_ms, key, record);
        assert!(added, "a new transaction could not be retained");
        Ok(StockAnswer { level: next })
    }

    /// Cross-checks the whole state: every counter's reserved equals the sum
    /// of its open reservation lines; nothing is negative that must not be;
    /// the expiry index holds exactly the open reservations. Costs a full
    /// scan, so it runs in debug builds and tests.
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut open = 0usize;
        let mut all = Vec::with_capacity(self.shared.reservations.len());
        self.shared.reservations.for_each(|r| all.push(r.clone()));
        // Held quantity by SKU, then node, borrowed from `all`: looking a
        // counter up allocates nothing (ten million counters are checked
        // after every snapshot load).
        let mut held: HashMap<&str, Vec<(&str, i64)>> = HashMap::new();
        for r in &all {
            if r.state != ReservationState::Open {
                continue;
            }
            open += 1;
            if !self
                .expiry
                .contains(&TimedId::new(r.expires_at_ms, r.id.clone()))
            {
                return Err(format!(
                    "open reservation {:?} is not in the expiry index",
                    r.id
                ));
            }
            for line in &r.lines {
                let nodes = held.entry(&*line.sku).or_default();
                match nodes.iter_mut().find(|(node, _)| *node == &*line.node) {
                    Some((_, qty)) => *qty += line.qty,
                    None => nodes.push((&*line.node, line.qty)),
                }
            }
        }
        if open != self.open_count || open != self.expiry.len() {
            return Err(format!(
                "{open} open reservations, open count {}, expiry index {}",
                self.open_count,
                self.expiry.len()
            ));
        }
        let mut broken = None;
        let mut counters = 0usize;
        self.shared.stock.for_each(|sku, node, level| {
            counters += 1;
            let mut expect = 0;
            if let Some(nodes) = held.get_mut(sku) {
                if let Some(at) = nodes.iter().position(|(n, _)| *n == node) {
                    expect = nodes.swap_remove(at).1;
                }
                if nodes.is_empty() {
                    held.remove(sku);
                }
            }
            if broken.is_none()
                && (level.reserved != expect
                    || level.reserved < 0
                    || level.safety_stock < 0
                    || level.on_hand.abs() > 2 * COUNTER_MAX)
            {
                broken = Some(format!(
                    "counter {sku}@{node} {level:?}: open lines hold {expect}"
                ));
            }
        });
        if let Some(message) = broken {
            return Err(message);
        }
        for (sku, nodes) in held {
            if let Some((node, qty)) = nodes.first() {
                return Err(format!(
                    "open lines hold {qty} of missing counter {sku}@{node}"
                ));
            }
        }
        if counters != self.shared.stock.counter_count() {
            return Err(format!(
                "counter count {} but {counters} counters",
                self.shared.stock.counter_count()
            ));
        }
        self.txns.check()?;
        Ok(())
    }

    /// A digest of the whole state in canonical order: replicas that applied
    /// the same entries have the same digest.
    pub fn digest(&self) -> u64 {
        snapshot::write(self).digest
    }
}

/// Sets on_hand to `value` if it stays within the counter range.
fn set_on_hand_checked(
    level: &mut StockLevel,
    value: i128,
    sku: &str,
    node: &str,
) -> Result<(), StockChangeError> {
    let max = i128::from(COUNTER_MAX);
    if value < -max || value > max {
        return Err(StockChangeError::OutOfRange {
            sku: sku.to_string(),
            node: node.to_string(),
            value,
            max: COUNTER_MAX,
        });
    }
    // In range, so the conversion is exact.
    level.on_hand = value as i64;
    Ok(())
}

fn outcome_of(state: ReservationState) -> Outcome {
    match state {
        ReservationState::Open => Outcome::Reserved,
        ReservationState::Consumed => Outcome::Consumed,
        ReservationState::Released => Outcome::Released,
        ReservationState::Expired => Outcome::Expired,
    }
}
