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
//!
//! Files:
//! - `mod.rs`: the [`Inventory`] and what readers share with it
//!   ([`Shared`]); applying a batch, forgetting what is past retention.
//! - `command.rs`: validated commands and the [`Batch`] of a log entry.
//! - `answer.rs`: what each command answers, and its typed errors.
//! - `holds.rs`: a reservation's life: reserve, consume, release, extend,
//!   expire.
//! - `stock_changes.rs`: sales, adjustments and counts under a transaction
//!   id; safety stock.
//! - `invariants.rs`: the full cross-check of the invariants.
//! - `stock.rs`, `reservation.rs`, `cow_table.rs`: the counter table, the
//!   reservation record, and the copy-on-write buckets both live in.
//! - `retained.rs`: transaction outcomes kept for retries, in finish order.
//! - `codec.rs`: the log entry's encoding; `snapshot.rs`: freezing the
//!   state, its canonical image and digest.

pub mod answer;
pub mod codec;
pub mod command;
pub mod cow_table;
mod holds;
mod invariants;
pub mod reservation;
pub mod retained;
pub mod snapshot;
pub mod stock;
mod stock_changes;

#[cfg(test)]
pub(crate) mod tests;

use std::collections::{BTreeSet, HashSet};
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

use crate::limits::ID_RETAINED_MAX;

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
    pub(crate) fn retained_count(&self) -> usize {
        self.finished.len() + self.txns.len()
    }

    /// The earliest deadline of an open reservation, so the leader knows when
    /// to propose a tick that expires it.
    pub(crate) fn next_expiry_ms(&self) -> Option<u64> {
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
    pub(crate) fn apply_empty(&mut self, index: u64) {
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
    /// without gathering answers nobody reads (gathering them is a
    /// noticeable share of a follower's CPU).
    pub(crate) fn apply_batch_unanswered(&mut self, index: u64, batch: &Batch) {
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
            Command::Sell(c) => Applied::StockChange(self.sell(c, codec::fingerprint(command))),
            Command::Adjust(c) => Applied::StockChange(self.adjust(c, codec::fingerprint(command))),
            Command::SetOnHand(c) => {
                Applied::StockChange(self.set_on_hand(c, codec::fingerprint(command)))
            }
            Command::SetSafetyStock(c) => Applied::SetSafetyStock(self.set_safety_stock(c)),
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

    /// A digest of the whole state in canonical order: replicas that applied
    /// the same entries have the same digest.
    pub fn digest(&self) -> u64 {
        snapshot::write(self).digest
    }
}
