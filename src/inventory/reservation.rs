//! Reservations: holds on stock taken at checkout.

use std::sync::Arc;

use smallvec::SmallVec;

use super::cow_table::Named;

/// The life of a reservation. Open until exactly one of the three endings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReservationState {
    /// Holds its stock (counted in `reserved`).
    Open,
    /// Its stock left on_hand (the API's COMMITTED).
    Consumed,
    /// Its stock was returned by the client.
    Released,
    /// Its stock was returned because its deadline passed.
    Expired,
}

impl ReservationState {
    /// The code used in snapshots (matches `stockraft.v1.ReservationState`).
    pub fn code(self) -> i32 {
        match self {
            ReservationState::Open => 1,
            ReservationState::Consumed => 2,
            ReservationState::Released => 3,
            ReservationState::Expired => 4,
        }
    }

    pub(crate) fn from_code(code: i32) -> Option<ReservationState> {
        match code {
            1 => Some(ReservationState::Open),
            2 => Some(ReservationState::Consumed),
            3 => Some(ReservationState::Released),
            4 => Some(ReservationState::Expired),
            _ => None,
        }
    }
}

/// One held (sku, node) of a reservation. Names are shared with the stock
/// table, so a reservation costs a pointer per name, not a copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldLine {
    pub sku: Arc<str>,
    pub node: Arc<str>,
    pub qty: i64,
}

/// A reservation's lines. A hold of one line (a one-item cart, a flash
/// sale's unit) keeps it inside the reservation: one allocation a hold
/// fewer, and no pointer to follow to check a retry or to return the
/// stock. Longer ones go to the heap as a `Vec`'s would, and then the
/// unused inline room costs them a little. The one-line case is the flash
/// sale's, the peak this memory is sized for (`bench/src/bin/hold_memory.rs`
/// measures a hold's size).
pub type HeldLines = SmallVec<[HeldLine; 1]>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    pub id: Arc<str>,
    /// One line per (sku, node), sorted.
    pub lines: HeldLines,
    /// The TTL it was made with, kept to recognise a retried request.
    pub ttl_ms: u64,
    pub state: ReservationState,
    pub created_at_ms: u64,
    pub expires_at_ms: u64,
    /// When it left Open (0 while open).
    pub finished_at_ms: u64,
}

impl Named for Reservation {
    fn name(&self) -> &str {
        &self.id
    }
}

impl Reservation {
    /// True when `lines` and `ttl_ms` are the payload this reservation was
    /// made with: the test for a harmless retry versus a reused id.
    pub(crate) fn same_payload(&self, lines: &[super::command::Line], ttl_ms: u64) -> bool {
        if self.ttl_ms != ttl_ms || self.lines.len() != lines.len() {
            return false;
        }
        for (held, asked) in self.lines.iter().zip(lines) {
            if *held.sku != *asked.sku || *held.node != *asked.node || held.qty != asked.qty {
                return false;
            }
        }
        true
    }
}

/// A reservation's place in a time-ordered index (open holds by deadline,
/// finished reservations by finish time): by time, then by a hash of the
/// id, then by the id itself.
///
/// The holds of one batch share one deadline, so an index ordered by
/// (time, id) compares the ids' text on nearly every step of an insert,
/// each comparison a pointer chase to the text. The hash settles nearly
/// every such tie from the key itself. It is xxh3 without a seed, the same
/// on every replica, so the order (which decides the reservations
/// forgotten first when too many are retained) is the same everywhere.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct TimedId {
    pub at_ms: u64,
    id_hash: u64,
    pub id: Arc<str>,
}

impl TimedId {
    pub fn new(at_ms: u64, id: Arc<str>) -> TimedId {
        TimedId {
            at_ms,
            id_hash: xxhash_rust::xxh3::xxh3_64(id.as_bytes()),
            id,
        }
    }
}
