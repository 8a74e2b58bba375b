//! A table shared between the apply thread (its only writer) and readers,
//! that a snapshot freezes in time that does not grow with its size: the
//! state machine's reservations (open and finished, up to tens of
//! millions) and its SKUs (a million or more, each with its nodes'
//! counters), by name.
//!
//! A snapshot must see a table as of one applied index while the apply
//! thread goes on. Taking a reference to each entry (what this replaced,
//! over a `DashMap`) held the replication thread for 173 ms at two million
//! reservations, and every write waited that long. Here the entries live
//! in [`BUCKETS`] small maps, each behind its own `Arc` (in one map while
//! the table holds at most [`SMALL_MAX`]):
//!
//! - **Freezing** clones the [`BUCKETS`] `Arc`s: about 1.5 ms whatever
//!   the size.
//! - **The first write to a bucket after a freeze** copies that bucket (its
//!   keys and `Arc` pointers, not the entries) while the frozen image
//!   keeps the old one: `Arc::make_mut`. The copying adds up to what the
//!   old freeze did at once, but it is spread over the writes that follow,
//!   a bucket (a few hundred pointers at ten million entries) at a time.
//!   An entry changed while frozen is itself copied on write (each entry is
//!   an `Arc` of its own).
//! - **Growing** rehashes one small bucket at a time, never one big table.
//! - **Keys** are the names' 128-bit XXH3 hashes, not their text: a copied
//!   bucket copies plain numbers, and only the entry's `Arc` count is
//!   touched (one cache miss per entry instead of two). Each entry keeps
//!   its name ([`Named`]), and a lookup checks it. Two names kept at once
//!   sharing a hash has a probability near 1e-22 at thirty million; should
//!   it happen, the second name's insert finds the first's entry and the
//!   node stops (the callers assert) rather than confuse the two.
//!
//! Buckets are chosen by a hash with its own random seed, independent of
//! the hash inside each bucket's map (so a bucket's entries do not all share
//! the tag bits its map probes with), and random per process, so a client
//! cannot choose names that pile into one bucket. Nothing depends on the
//! buckets' order: snapshots sort by name.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, PoisonError, RwLock, RwLockReadGuard};

use super::FastHash;

/// Buckets of a large table: a power of two. At two million entries a
/// bucket holds about 120; copying one after a freeze costs a few
/// microseconds, and freezing clones this many `Arc`s (about 1.5 ms).
pub const BUCKETS: usize = 16_384;
const BUCKET_BITS: u32 = BUCKETS.trailing_zeros();

/// Entries kept in one map before the table spreads them over
/// [`BUCKETS`] (once, moving at most this many). A small table costs one
/// map: the state machine's tests and simulator build thousands.
pub const SMALL_MAX: usize = 4_096;

/// What a table keeps: an entry that knows its own name.
pub trait Named: Clone {
    fn name(&self) -> &str;
}

/// One bucket: entries by the hash of their name ([`key_of`]).
pub type Bucket<V> = HashMap<Key, Arc<V>, FastHash>;

type Lock<V> = RwLock<Arc<Bucket<V>>>;

/// The key a name is kept under: its 128-bit XXH3 hash, as two words.
///
/// Not a `u128`: that is aligned to 16 bytes, so a bucket's slot (key and
/// `Arc` pointer) would take 32 bytes where these take 24. Measured with
/// `examples/hold_memory.rs`: 353-354 to 322-323 bytes a one-line hold at
/// two million, 426 to 392 a three-line hold at a million.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key([u64; 2]);

impl std::hash::Hash for Key {
    /// Both words, without the length an array's hash writes first.
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(self.0[0]);
        state.write_u64(self.0[1]);
    }
}

fn key_of(name: &str) -> Key {
    let hash = xxhash_rust::xxh3::xxh3_128(name.as_bytes());
    Key([(hash >> 64) as u64, hash as u64])
}

/// Entries by name, in buckets shared copy-on-write with frozen images.
#[derive(Debug)]
pub struct CowTable<V> {
    /// Every entry while there are at most [`SMALL_MAX`]; empty once `big`
    /// is set.
    small: Lock<V>,
    /// The buckets, once the table outgrew `small`. Set once, never unset.
    big: OnceLock<Box<[Lock<V>]>>,
    /// Chooses the bucket. Seeded apart from the buckets' own hasher.
    spread: FastHash,
    /// Every bucket map's hasher (a copied bucket keeps it: `Clone`).
    hasher: FastHash,
    len: AtomicUsize,
}

impl<V: Named> Default for CowTable<V> {
    fn default() -> Self {
        CowTable::new()
    }
}

impl<V: Named> CowTable<V> {
    pub fn new() -> CowTable<V> {
        let hasher = FastHash::default();
        CowTable {
            small: RwLock::new(Arc::new(Bucket::with_hasher(hasher.clone()))),
            big: OnceLock::new(),
            spread: FastHash::default(),
            hasher,
            len: AtomicUsize::new(0),
        }
    }

    fn at(&self, key: Key) -> usize {
        let hash = self.spread.hash_one(key);
        (hash >> (u64::BITS - BUCKET_BITS)) as usize
    }

    /// Entries kept.
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Runs `look` on the entry named `name`, under its bucket's read lock.
    pub fn read<T>(&self, name: &str, look: impl FnOnce(&Arc<V>) -> T) -> Option<T> {
        let key = key_of(name);
        let found = |bucket: &Bucket<V>| bucket.get(&key).filter(|v| v.name() == name).map(look);
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

    /// The entry named `name`, if kept. The `Arc` is the table's own: a
    /// later change copies the entry first, so the caller's never changes.
    pub fn get(&self, name: &str) -> Option<Arc<V>> {
        self.read(name, Arc::clone)
    }

    /// The lock of `key`'s bucket, for the writer (the only thread that
    /// sets `big`, so it cannot change under it).
    fn lock_of(&self, key: Key) -> &Lock<V> {
        match self.big.get() {
            Some(big) => &big[self.at(key)],
            None => &self.small,
        }
    }

    /// Runs `change` on the bucket of `key`, copying the bucket first if a
    /// frozen image shares it. Usually no image does, and this takes the
    /// write lock once. Otherwise the copy is made under the read lock, so
    /// readers of the bucket wait only for the swap. Only the apply thread
    /// writes (`&mut self` on [`super::Inventory`] guarantees one writer),
    /// and only it freezes, so the bucket cannot change, nor be shared
    /// anew, between the copy and the swap.
    fn write<T>(&self, key: Key, change: impl FnOnce(&mut Bucket<V>) -> T) -> T {
        let lock = self.lock_of(key);
        let mut bucket = lock.write().unwrap_or_else(PoisonError::into_inner);
        if Arc::strong_count(&bucket) > 1 {
            drop(bucket);
            let copy = Bucket::clone(&read(lock));
            bucket = lock.write().unwrap_or_else(PoisonError::into_inner);
            *bucket = Arc::new(copy);
        }
        change(Arc::make_mut(&mut bucket))
    }

    /// Adds an entry under its name. Returns the one it replaced, if any
    /// (callers treat that as a broken invariant or a damaged snapshot).
    pub fn insert(&self, entry: Arc<V>) -> Option<Arc<V>> {
        let key = key_of(entry.name());
        let replaced = self.write(key, |bucket| bucket.insert(key, entry));
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
        for (key, v) in small.iter() {
            buckets[self.at(*key)].insert(*key, v.clone());
        }
        let mut locks = Vec::with_capacity(BUCKETS);
        for bucket in buckets {
            locks.push(RwLock::new(Arc::new(bucket)));
        }
        let set = self.big.set(locks.into_boxed_slice());
        assert!(set.is_ok(), "table spread twice");
        // A frozen image may still share the old map: replace, not clear.
        *small = Arc::new(Bucket::with_hasher(self.hasher.clone()));
    }

    /// Changes the entry named `name` in place (copying it first if a
    /// frozen image or a reader shares it). None if it is not kept.
    pub fn update<T>(&self, name: &str, change: impl FnOnce(&mut V) -> T) -> Option<T> {
        let key = key_of(name);
        self.write(key, |bucket| {
            let v = bucket.get_mut(&key).filter(|v| v.name() == name)?;
            Some(change(Arc::make_mut(v)))
        })
    }

    /// Forgets the entry named `name`.
    pub fn remove(&self, name: &str) -> Option<Arc<V>> {
        let key = key_of(name);
        let removed = self.write(key, |bucket| {
            let found = bucket.get(&key).is_some_and(|v| v.name() == name);
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

    /// The locks holding entries now: the buckets, or the small map.
    fn locks(&self) -> &[Lock<V>] {
        match self.big.get() {
            Some(big) => big,
            None => std::slice::from_ref(&self.small),
        }
    }

    /// Calls `visit` on every entry, a bucket at a time, in no particular
    /// order. It holds each bucket's read lock while visiting it.
    pub fn for_each(&self, mut visit: impl FnMut(&Arc<V>)) {
        for lock in self.locks() {
            for v in read(lock).values() {
                visit(v);
            }
        }
    }

    /// The table as it is now, for a snapshot: a reference to each bucket.
    pub fn freeze(&self) -> FrozenTable<V> {
        let locks = self.locks();
        let mut buckets = Vec::with_capacity(locks.len());
        let mut count = 0;
        for lock in locks {
            let bucket = read(lock);
            count += bucket.len();
            buckets.push(Arc::clone(&bucket));
        }
        assert_eq!(count, self.len(), "table count out of step");
        FrozenTable { buckets, count }
    }
}

/// A bucket's read lock. A poisoned lock is taken as it is: a panic while
/// holding one aborts the process (the binary's panic hook) before any
/// reader could see it.
fn read<V>(lock: &Lock<V>) -> RwLockReadGuard<'_, Arc<Bucket<V>>> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

/// A table as of one freeze: shared buckets that later writes no longer
/// change (they copy first).
#[derive(Debug)]
pub struct FrozenTable<V> {
    buckets: Vec<Arc<Bucket<V>>>,
    count: usize,
}

impl<V> Default for FrozenTable<V> {
    fn default() -> Self {
        FrozenTable {
            buckets: Vec::new(),
            count: 0,
        }
    }
}

impl<V> FrozenTable<V> {
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Every frozen entry, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<V>> {
        self.buckets.iter().flat_map(|b| b.values())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in entry: a name and a value to change.
    #[derive(Debug, Clone)]
    struct Entry {
        name: String,
        value: u64,
    }

    impl Named for Entry {
        fn name(&self) -> &str {
            &self.name
        }
    }

    fn entry(name: &str, value: u64) -> Arc<Entry> {
        Arc::new(Entry {
            name: name.to_string(),
            value,
        })
    }

    fn names(frozen: &FrozenTable<Entry>) -> Vec<(String, u64)> {
        let mut all: Vec<(String, u64)> =
            frozen.iter().map(|e| (e.name.clone(), e.value)).collect();
        all.sort();
        all
    }

    fn value(table: &CowTable<Entry>, name: &str) -> Option<u64> {
        table.get(name).map(|e| e.value)
    }

    #[test]
    fn a_frozen_image_keeps_what_it_saw_while_the_table_changes() {
        // Past SMALL_MAX, so the buckets are exercised as well.
        let table = CowTable::new();
        let count = SMALL_MAX + 1_000;
        for i in 0..count {
            assert!(table.insert(entry(&format!("r{i}"), 1)).is_none());
        }
        let frozen = table.freeze();
        let before = names(&frozen);
        // Change, add and remove after the freeze: the image must not move.
        for i in 0..500 {
            assert_eq!(table.update(&format!("r{i}"), |e| e.value = 2), Some(()));
        }
        for i in 500..700 {
            assert!(table.remove(&format!("r{i}")).is_some());
        }
        for i in count..count + 300 {
            assert!(table.insert(entry(&format!("r{i}"), 3)).is_none());
        }
        assert_eq!(frozen.len(), count);
        assert_eq!(names(&frozen), before);
        assert!(before.iter().all(|(_, v)| *v == 1));
        // The live table has every change.
        assert_eq!(table.len(), count + 100);
        assert_eq!(value(&table, "r10"), Some(2));
        assert_eq!(value(&table, "r600"), None);
        assert_eq!(value(&table, &format!("r{}", count + 200)), Some(3));
        assert_eq!(value(&table, "r900"), Some(1));
        let now = table.freeze();
        assert_eq!(now.len(), count + 100);
        assert_eq!(now.iter().count(), count + 100);
    }

    #[test]
    fn a_reader_copy_never_changes_under_the_reader() {
        let table = CowTable::new();
        table.insert(entry("r", 1));
        let seen = table.get("r");
        table.update("r", |e| e.value = 9);
        assert_eq!(seen.map(|e| e.value), Some(1));
        assert_eq!(value(&table, "r"), Some(9));
        assert_eq!(table.read("r", |e| e.value * 2), Some(18));
    }

    #[test]
    fn counts_follow_inserts_replacements_and_removals() {
        let table = CowTable::new();
        assert!(table.is_empty());
        assert!(table.insert(entry("a", 1)).is_none());
        // A second insert under the same name replaces, and says so.
        assert_eq!(table.insert(entry("a", 2)).map(|e| e.value), Some(1));
        assert_eq!(table.len(), 1);
        assert!(table.remove("missing").is_none());
        assert_eq!(table.update("missing", |e| e.value = 3), None);
        assert_eq!(table.read("missing", |e| e.value), None);
        assert_eq!(table.remove("a").map(|e| e.value), Some(2));
        assert!(table.is_empty());
        let mut visited = 0;
        table.for_each(|_| visited += 1);
        assert_eq!(visited, 0);
    }

    #[test]
    fn spreading_over_the_buckets_keeps_every_entry_and_frozen_image() {
        let table = CowTable::new();
        for i in 0..SMALL_MAX {
            table.insert(entry(&format!("r{i}"), 1));
        }
        assert!(table.big.get().is_none());
        let small_image = table.freeze();
        // One more spreads the table; then change one entry.
        table.insert(entry("last", 1));
        assert!(table.big.get().is_some());
        table.update("r0", |e| e.value = 5);
        assert_eq!(table.len(), SMALL_MAX + 1);
        assert_eq!(small_image.len(), SMALL_MAX);
        assert!(small_image.iter().all(|e| e.value == 1));
        for i in 1..SMALL_MAX {
            assert!(table.get(&format!("r{i}")).is_some(), "r{i} lost");
        }
        assert_eq!(value(&table, "r0"), Some(5));
        let big_image = table.freeze();
        assert_eq!(big_image.len(), SMALL_MAX + 1);
        assert_eq!(big_image.iter().count(), SMALL_MAX + 1);
        let mut visited = 0;
        table.for_each(|_| visited += 1);
        assert_eq!(visited, SMALL_MAX + 1);
    }

    #[test]
    fn a_reader_finds_every_kept_entry_while_the_table_spreads() {
        let table = Arc::new(CowTable::new());
        table.insert(entry("first", 1));
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
                table.insert(entry(&format!("x{round}-{i}"), 1));
            }
        }
        stop.store(true, Ordering::Relaxed);
        let (misses, reads) = reader.join().expect("reader thread");
        assert!(table.big.get().is_some());
        assert!(reads > 0);
        assert_eq!(misses, 0, "a reader missed a kept entry");
    }
}
