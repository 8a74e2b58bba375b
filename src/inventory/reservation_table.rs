//! The reservation table: every reservation the state machine keeps, open
//! and finished, by id, shared between the apply thread (the only writer)
//! and readers (LOCAL `GetReservation`), and frozen for snapshots in time
//! that does not grow with the number of reservations.
//!
//! Up to ten million open holds plus the finished ones remembered for
//! retries can be kept. A snapshot must see them all as of one applied
//! index, while the apply thread goes on. Taking a reference to each
//! reservation (what this table replaced, over a `DashMap`) held the
//! replication thread for 173 ms at two million reservations, and every
//! write waited that long. Here the reservations live in
//! [`BUCKETS`] small maps, each behind its own `Arc` (in one map while the
//! table holds at most [`SMALL_MAX`]):
//!
//! - **Freezing** clones the [`BUCKETS`] `Arc`s: about 1.5 ms whatever
//!   the count.
//! - **The first write to a bucket after a freeze** copies that bucket (its
//!   keys and `Arc` pointers, not the reservations) while the frozen image
//!   keeps the old one: `Arc::make_mut`. The copying adds up to what the
//!   old freeze did at once, but it is spread over the writes that follow,
//!   a bucket (a few hundred pointers at ten million reservations) at a
//!   time. A reservation changed while frozen is itself copied on write,
//!   as before (`Arc<Reservation>`).
//! - **Growing** rehashes one small bucket at a time, never one big table.
//! - **Keys** are the ids' 128-bit XXH3 hashes, not their text: a copied
//!   bucket copies plain numbers, and only the reservation's `Arc` count is
//!   touched (one cache miss per entry instead of two). The reservation
//!   keeps its id, and a lookup checks it. Two ids kept at once sharing a
//!   hash has a probability near 1e-22 at thirty million ids; should it
//!   happen, the second id's insert finds the first's entry and the node
//!   stops (an assertion) rather than confuse the two.
//!
//! Buckets are chosen by a hash with its own random seed, independent of
//! the hash inside each bucket's map (so a bucket's entries do not all share
//! the tag bits its map probes with), and random per process, so a client
//! cannot choose ids that pile into one bucket. Nothing depends on the
//! buckets' order: snapshots sort by id.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, PoisonError, RwLock, RwLockReadGuard};

use super::reservation::Reservation;
use super::FastHash;

/// Buckets of a large table: a power of two. At two million reservations a
/// bucket holds about 120; copying one after a freeze costs a few
/// microseconds, and freezing clones this many `Arc`s (about 1.5 ms).
pub const BUCKETS: usize = 16_384;
const BUCKET_BITS: u32 = BUCKETS.trailing_zeros();

/// Reservations kept in one map before the table spreads them over
/// [`BUCKETS`] (once, moving at most this many). A small table costs one
/// map: the state machine's tests and simulator build thousands.
pub const SMALL_MAX: usize = 4_096;

/// One bucket: reservations by the hash of their id ([`key_of`]).
pub type Bucket = HashMap<u128, Arc<Reservation>, FastHash>;

type Lock = RwLock<Arc<Bucket>>;

/// The key a reservation id is kept under: its 128-bit XXH3 hash.
fn key_of(id: &str) -> u128 {
    xxhash_rust::xxh3::xxh3_128(id.as_bytes())
}

/// Reservations by id, in buckets shared copy-on-write with frozen images.
#[derive(Debug)]
pub struct ReservationTable {
    /// Every reservation while there are at most [`SMALL_MAX`]; empty once
    /// `big` is set.
    small: Lock,
    /// The buckets, once the table outgrew `small`. Set once, never unset.
    big: OnceLock<Box<[Lock]>>,
    /// Chooses the bucket. Seeded apart from the buckets' own hasher.
    spread: FastHash,
    /// Every bucket map's hasher (a copied bucket keeps it: `Clone`).
    hasher: FastHash,
    len: AtomicUsize,
}

impl Default for ReservationTable {
    fn default() -> Self {
        ReservationTable::new()
    }
}

impl ReservationTable {
    pub fn new() -> ReservationTable {
        let hasher = FastHash::default();
        ReservationTable {
            small: RwLock::new(Arc::new(Bucket::with_hasher(hasher.clone()))),
            big: OnceLock::new(),
            spread: FastHash::default(),
            hasher,
            len: AtomicUsize::new(0),
        }
    }

    fn at(&self, key: u128) -> usize {
        let hash = self.spread.hash_one(key);
        (hash >> (u64::BITS - BUCKET_BITS)) as usize
    }

    /// Reservations kept, open and finished.
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The reservation with this id, if kept. The `Arc` is the table's own:
    /// a later change copies it first, so the caller's copy never changes.
    pub fn get(&self, id: &str) -> Option<Arc<Reservation>> {
        let key = key_of(id);
        let found = |bucket: &Bucket| bucket.get(&key).filter(|r| *r.id == *id).cloned();
        if let Some(big) = self.big.get() {
            return found(&read(&big[self.at(key)]));
        }
        let small = read(&self.small);
        // The table may have spread while this reader waited for the lock:
        // `grow` sets `big` before it lets go of `small`'s write lock.
        if let Some(big) = self.big.get() {
            drop(small);
            return found(&read(&big[self.at(key)]));
        }
        found(&small)
    }

    /// The lock of `key`'s bucket, for the writer (the only thread that
    /// sets `big`, so it cannot change under it).
    fn lock_of(&self, key: u128) -> &Lock {
        match self.big.get() {
            Some(big) => &big[self.at(key)],
            None => &self.small,
        }
    }

    /// Runs `change` on the bucket of `key`, copying the bucket first if a
    /// frozen image shares it. The copy is made under the read lock, so
    /// readers of the bucket wait only for the swap. Only the apply thread
    /// writes (`&mut self` on [`super::Inventory`] guarantees one writer),
    /// so the bucket cannot change between the copy and the swap.
    fn write<T>(&self, key: u128, change: impl FnOnce(&mut Bucket) -> T) -> T {
        let lock = self.lock_of(key);
        let copy = {
            let shared = read(lock);
            (Arc::strong_count(&shared) > 1).then(|| Bucket::clone(&shared))
        };
        let mut bucket = lock.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(copy) = copy {
            *bucket = Arc::new(copy);
        }
        change(Arc::make_mut(&mut bucket))
    }

    /// Adds a reservation under its id. Returns the one it replaced, if any
    /// (callers treat that as a broken invariant or a damaged snapshot).
    pub fn insert(&self, reservation: Arc<Reservation>) -> Option<Arc<Reservation>> {
        let key = key_of(&reservation.id);
        let replaced = self.write(key, |bucket| bucket.insert(key, reservation));
        if replaced.is_none() {
            let len = self.len.fetch_add(1, Ordering::Relaxed) + 1;
            if len > SMALL_MAX && self.big.get().is_none() {
                self.grow();
            }
        }
        replaced
    }

    /// Spreads the small table over [`BUCKETS`]: once, on the writer.
    fn grow(&self) {
        let mut small = self.small.write().unwrap_or_else(PoisonError::into_inner);
        let mut buckets = Vec::with_capacity(BUCKETS);
        for _ in 0..BUCKETS {
            buckets.push(Bucket::with_hasher(self.hasher.clone()));
        }
        for (key, r) in small.iter() {
            buckets[self.at(*key)].insert(*key, r.clone());
        }
        let mut locks = Vec::with_capacity(BUCKETS);
        for bucket in buckets {
            locks.push(RwLock::new(Arc::new(bucket)));
        }
        let set = self.big.set(locks.into_boxed_slice());
        assert!(set.is_ok(), "reservation table spread twice");
        // A frozen image may still share the old map: replace, not clear.
        *small = Arc::new(Bucket::with_hasher(self.hasher.clone()));
    }

    /// Changes the reservation with this id in place (copying it first if
    /// a frozen image or a reader shares it). None if it is not kept.
    pub fn update<T>(&self, id: &str, change: impl FnOnce(&mut Reservation) -> T) -> Option<T> {
        let key = key_of(id);
        self.write(key, |bucket| {
            let r = bucket.get_mut(&key).filter(|r| *r.id == *id)?;
            Some(change(Arc::make_mut(r)))
        })
    }

    /// Forgets the reservation with this id.
    pub fn remove(&self, id: &str) -> Option<Arc<Reservation>> {
        let key = key_of(id);
        let removed = self.write(key, |bucket| {
            let found = bucket.get(&key).is_some_and(|r| *r.id == *id);
            if !found {
                return None;
            }
            bucket.remove(&key)
        });
        if removed.is_some() {
            self.len.fetch_sub(1, Ordering::Relaxed);
        }
        removed
    }

    /// The locks holding reservations now: the buckets, or the small map.
    fn locks(&self) -> &[Lock] {
        match self.big.get() {
            Some(big) => big,
            None => std::slice::from_ref(&self.small),
        }
    }

    /// Calls `visit` on every reservation, a bucket at a time, in no
    /// particular order. For checks and tests: it holds each bucket's read
    /// lock while visiting it.
    pub fn for_each(&self, mut visit: impl FnMut(&Arc<Reservation>)) {
        for lock in self.locks() {
            for r in read(lock).values() {
                visit(r);
            }
        }
    }

    /// The table as it is now, for a snapshot: a reference to each bucket.
    pub fn freeze(&self) -> FrozenReservations {
        let locks = self.locks();
        let mut buckets = Vec::with_capacity(locks.len());
        let mut count = 0;
        for lock in locks {
            let bucket = read(lock);
            count += bucket.len();
            buckets.push(Arc::clone(&bucket));
        }
        assert_eq!(count, self.len(), "reservation count out of step");
        FrozenReservations { buckets, count }
    }
}

/// A bucket's read lock. A poisoned lock is taken as it is: a panic while
/// holding one aborts the process (the binary's panic hook) before any
/// reader could see it.
fn read(lock: &Lock) -> RwLockReadGuard<'_, Arc<Bucket>> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

/// The reservations as of one freeze: shared buckets that later writes no
/// longer change (they copy first).
#[derive(Debug, Clone, Default)]
pub struct FrozenReservations {
    buckets: Vec<Arc<Bucket>>,
    count: usize,
}

impl FrozenReservations {
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Every frozen reservation, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Reservation>> {
        self.buckets.iter().flat_map(|b| b.values())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::reservation::ReservationState;

    fn reservation(id: &str, ttl_ms: u64) -> Arc<Reservation> {
        Arc::new(Reservation {
            id: Arc::from(id),
            lines: Vec::new(),
            ttl_ms,
            state: ReservationState::Open,
            created_at_ms: 0,
            expires_at_ms: ttl_ms,
            finished_at_ms: 0,
        })
    }

    fn ids(frozen: &FrozenReservations) -> Vec<(String, u64)> {
        let mut all: Vec<(String, u64)> = frozen
            .iter()
            .map(|r| (r.id.to_string(), r.ttl_ms))
            .collect();
        all.sort();
        all
    }

    #[test]
    fn a_frozen_image_keeps_what_it_saw_while_the_table_changes() {
        let table = ReservationTable::new();
        for i in 0..1_000 {
            assert!(table.insert(reservation(&format!("r{i}"), 1)).is_none());
        }
        let frozen = table.freeze();
        let before = ids(&frozen);
        // Change, add and remove after the freeze: the image must not move.
        for i in 0..500 {
            let id = format!("r{i}");
            let changed = table.update(&id, |r| r.ttl_ms = 2);
            assert_eq!(changed, Some(()));
        }
        for i in 500..700 {
            assert!(table.remove(&format!("r{i}")).is_some());
        }
        for i in 1_000..1_300 {
            assert!(table.insert(reservation(&format!("r{i}"), 3)).is_none());
        }
        assert_eq!(frozen.len(), 1_000);
        assert_eq!(ids(&frozen), before);
        assert!(before.iter().all(|(_, ttl)| *ttl == 1));
        // The live table has every change.
        assert_eq!(table.len(), 1_100);
        assert_eq!(table.get("r10").map(|r| r.ttl_ms), Some(2));
        assert!(table.get("r600").is_none());
        assert_eq!(table.get("r1200").map(|r| r.ttl_ms), Some(3));
        assert_eq!(table.get("r900").map(|r| r.ttl_ms), Some(1));
        let now = table.freeze();
        assert_eq!(now.len(), 1_100);
        assert_eq!(now.iter().count(), 1_100);
    }

    #[test]
    fn a_reader_copy_never_changes_under_the_reader() {
        let table = ReservationTable::new();
        table.insert(reservation("r", 1));
        let seen = table.get("r");
        table.update("r", |r| r.ttl_ms = 9);
        assert_eq!(seen.map(|r| r.ttl_ms), Some(1));
        assert_eq!(table.get("r").map(|r| r.ttl_ms), Some(9));
    }

    #[test]
    fn counts_follow_inserts_replacements_and_removals() {
        let table = ReservationTable::new();
        assert!(table.is_empty());
        assert!(table.insert(reservation("a", 1)).is_none());
        // A second insert under the same id replaces, and says so.
        assert_eq!(table.insert(reservation("a", 2)).map(|r| r.ttl_ms), Some(1));
        assert_eq!(table.len(), 1);
        assert!(table.remove("missing").is_none());
        assert_eq!(table.update("missing", |r| r.ttl_ms = 3), None);
        assert_eq!(table.remove("a").map(|r| r.ttl_ms), Some(2));
        assert!(table.is_empty());
        let mut visited = 0;
        table.for_each(|_| visited += 1);
        assert_eq!(visited, 0);
    }

    #[test]
    fn spreading_over_the_buckets_keeps_every_reservation_and_frozen_image() {
        let table = ReservationTable::new();
        for i in 0..SMALL_MAX {
            table.insert(reservation(&format!("r{i}"), 1));
        }
        assert!(table.big.get().is_none());
        let small_image = table.freeze();
        // One more spreads the table; then change one reservation.
        table.insert(reservation("last", 1));
        assert!(table.big.get().is_some());
        table.update("r0", |r| r.ttl_ms = 5);
        assert_eq!(table.len(), SMALL_MAX + 1);
        assert_eq!(small_image.len(), SMALL_MAX);
        assert!(small_image.iter().all(|r| r.ttl_ms == 1));
        for i in 1..SMALL_MAX {
            assert!(table.get(&format!("r{i}")).is_some(), "r{i} lost");
        }
        assert_eq!(table.get("r0").map(|r| r.ttl_ms), Some(5));
        let big_image = table.freeze();
        assert_eq!(big_image.len(), SMALL_MAX + 1);
        assert_eq!(big_image.iter().count(), SMALL_MAX + 1);
        let mut visited = 0;
        table.for_each(|_| visited += 1);
        assert_eq!(visited, SMALL_MAX + 1);
    }

    #[test]
    fn a_reader_finds_every_kept_reservation_while_the_table_spreads() {
        let table = Arc::new(ReservationTable::new());
        table.insert(reservation("first", 1));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reader = {
            let table = table.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut misses = 0u64;
                let mut reads = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    if table.get("first").is_none() {
                        misses += 1;
                    }
                    reads += 1;
                }
                (misses, reads)
            })
        };
        for round in 0..4 {
            for i in 0..SMALL_MAX {
                table.insert(reservation(&format!("x{round}-{i}"), 1));
            }
        }
        stop.store(true, Ordering::Relaxed);
        let (misses, reads) = reader.join().expect("reader thread");
        assert!(table.big.get().is_some());
        assert!(reads > 0);
        assert_eq!(misses, 0, "a reader missed a kept reservation");
    }
}
