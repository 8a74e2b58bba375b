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
//! - **Keys** are the names' 128-bit hashes, not their text: a copied
//!   bucket copies plain numbers, and only the entry's `Arc` count is
//!   touched (one cache miss per entry instead of two). Each entry keeps
//!   its name ([`Named`]), and every lookup compares it: the key only
//!   finds where to look. The hash is SipHash-1-3 under a key drawn at
//!   random per table ([`Keys`]): names are chosen by clients, and with an
//!   unkeyed hash they could choose names that share a key. Two names
//!   that do share one anyway (a chance near 1e-22 at thirty million
//!   names) are both kept: the second goes to a small spill map beside the
//!   buckets, which every lookup that meets a key held by another name
//!   searches. Nothing on the replicas' shared path depends on the keys,
//!   which differ from replica to replica: snapshots and digests go by
//!   name.
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

/// One bucket: entries by the hash of their name ([`Keys`]).
pub type Bucket<V> = HashMap<Key, Arc<V>, FastHash>;

type Lock<V> = RwLock<Arc<Bucket<V>>>;

/// The key a name is kept under: its 128-bit hash ([`Keys`]), as two
/// words.
///
/// Not a `u128`: that is aligned to 16 bytes, so a bucket's slot (key and
/// `Arc` pointer) would take 32 bytes where these take 24, in every bucket
/// of both tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key([u64; 2]);

impl std::hash::Hash for Key {
    /// Both words, without the length an array's hash writes first.
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(self.0[0]);
        state.write_u64(self.0[1]);
    }
}

/// How a table turns names into keys: SipHash-1-3 with a 128-bit output
/// under a random key of its own, so no client can find names that share
/// a key without first learning it.
#[derive(Debug, Clone)]
pub struct Keys {
    sip: siphasher::sip128::SipHasher13,
    /// Test builds only: every name gets the same key, so every lookup
    /// goes through the spill map.
    #[cfg(test)]
    colliding: bool,
}

impl Keys {
    /// A random key.
    pub fn random() -> Keys {
        let key: [u8; 16] = rand::random();
        Keys {
            sip: siphasher::sip128::SipHasher13::new_with_key(&key),
            #[cfg(test)]
            colliding: false,
        }
    }

    /// Every name shares one key: tests that names, not hashes, are keys.
    #[cfg(test)]
    pub(crate) fn colliding() -> Keys {
        Keys {
            colliding: true,
            ..Keys::random()
        }
    }

    fn of(&self, name: &str) -> Key {
        #[cfg(test)]
        if self.colliding {
            return Key([7, 7]);
        }
        let hash = self.sip.hash(name.as_bytes());
        Key([hash.h1, hash.h2])
    }
}

/// Entries whose key another name's entry holds in its bucket, by key:
/// almost always empty (see the module's doc).
type Spill<V> = HashMap<Key, Vec<Arc<V>>, FastHash>;

/// Entries by name, in buckets shared copy-on-write with frozen images.
#[derive(Debug)]
pub struct CowTable<V> {
    /// Every entry while there are at most [`SMALL_MAX`]; empty once `big`
    /// is set.
    small: Lock<V>,
    /// The buckets, once the table outgrew `small`. Set once, never unset.
    big: OnceLock<Box<[Lock<V>]>>,
    /// Names sharing a key with a name kept in a bucket, shared
    /// copy-on-write with frozen images like a bucket.
    spill: RwLock<Arc<Spill<V>>>,
    keys: Keys,
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
        CowTable::with_keys(Keys::random())
    }

    pub(crate) fn with_keys(keys: Keys) -> CowTable<V> {
        let hasher = FastHash::default();
        CowTable {
            small: RwLock::new(Arc::new(Bucket::with_hasher(hasher.clone()))),
            big: OnceLock::new(),
            spill: RwLock::new(Arc::new(Spill::with_hasher(FastHash::default()))),
            keys,
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

    /// Runs `look` on the entry named `name`, under its bucket's read lock
    /// (or the spill map's, for a name whose key another name holds).
    pub fn read<T>(&self, name: &str, look: impl FnOnce(&Arc<V>) -> T) -> Option<T> {
        let key = self.keys.of(name);
        let in_bucket = match self.big.get() {
            Some(big) => look_in(&read(&big[self.at(key)]), key, name, look),
            None => {
                let small = read(&self.small);
                // The table may have spread while this reader waited for the
                // lock: `grow` sets `big` before it lets go of `small`'s
                // write lock.
                match self.big.get() {
                    Some(big) => {
                        drop(small);
                        look_in(&read(&big[self.at(key)]), key, name, look)
                    }
                    None => look_in(&small, key, name, look),
                }
            }
        };
        match in_bucket {
            Ok(answer) => answer,
            Err(look) => {
                let spill = read_spill(&self.spill);
                let v = spill.get(&key)?.iter().find(|v| v.name() == name)?;
                Some(look(v))
            }
        }
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

    /// Runs `change` on the spill map, copying it first if a frozen image
    /// shares it (as [`Self::write`] does a bucket).
    fn write_spill<T>(&self, change: impl FnOnce(&mut Spill<V>) -> T) -> T {
        let mut spill = self.spill.write().unwrap_or_else(PoisonError::into_inner);
        change(Arc::make_mut(&mut spill))
    }

    /// Adds an entry under its name. Returns the one it replaced, if any
    /// (the same name: callers treat that as a broken invariant or a
    /// damaged snapshot). A name whose key another name holds goes to the
    /// spill map.
    pub fn insert(&self, entry: Arc<V>) -> Option<Arc<V>> {
        let key = self.keys.of(entry.name());
        let placed = self.write(key, |bucket| match bucket.get_mut(&key) {
            Some(v) if v.name() == entry.name() => Ok(Some(std::mem::replace(v, entry))),
            Some(_) => Err(entry),
            None => {
                bucket.insert(key, entry);
                Ok(None)
            }
        });
        let replaced = match placed {
            Ok(replaced) => replaced,
            Err(entry) => self.write_spill(|spill| {
                let names = spill.entry(key).or_default();
                match names.iter_mut().find(|v| v.name() == entry.name()) {
                    Some(v) => Some(std::mem::replace(v, entry)),
                    None => {
                        names.push(entry);
                        None
                    }
                }
            }),
        };
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
        let key = self.keys.of(name);
        // Ok(answer) when found in its bucket; Err(change) to look in the
        // spill map, when another name holds the key.
        let in_bucket = self.write(key, |bucket| match bucket.get_mut(&key) {
            Some(v) if v.name() == name => Ok(Some(change(Arc::make_mut(v)))),
            Some(_) => Err(change),
            None => Ok(None),
        });
        match in_bucket {
            Ok(answer) => answer,
            Err(change) => self.write_spill(|spill| {
                let v = spill.get_mut(&key)?.iter_mut().find(|v| v.name() == name)?;
                Some(change(Arc::make_mut(v)))
            }),
        }
    }

    /// Forgets the entry named `name`. When it held its key in a bucket
    /// and other names with that key wait in the spill map, one of them
    /// takes its place.
    pub fn remove(&self, name: &str) -> Option<Arc<V>> {
        let key = self.keys.of(name);
        // Ok(removed) from the bucket; Err(()) when another name holds the
        // key there, so `name` can only be in the spill map.
        let in_bucket = self.write(key, |bucket| match bucket.get(&key) {
            Some(v) if v.name() == name => Ok(bucket.remove(&key)),
            Some(_) => Err(()),
            None => Ok(None),
        });
        let removed = match in_bucket {
            Ok(Some(removed)) => {
                self.refill(key);
                Some(removed)
            }
            Ok(None) => None,
            Err(()) => self.write_spill(|spill| {
                let names = spill.get_mut(&key)?;
                let at = names.iter().position(|v| v.name() == name)?;
                let removed = names.swap_remove(at);
                if names.is_empty() {
                    spill.remove(&key);
                }
                Some(removed)
            }),
        };
        if removed.is_some() {
            self.len.fetch_sub(1, Ordering::Relaxed);
        }
        removed
    }

    /// Moves a spilled entry of `key`, if any, into the bucket slot just
    /// freed: a lookup searches the spill map only when it meets another
    /// name in the bucket.
    fn refill(&self, key: Key) {
        let moved = self.write_spill(|spill| {
            let names = spill.get_mut(&key)?;
            let moved = names.pop();
            if names.is_empty() {
                spill.remove(&key);
            }
            moved
        });
        if let Some(entry) = moved {
            self.write(key, |bucket| bucket.insert(key, entry));
        }
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
    pub(crate) fn for_each(&self, mut visit: impl FnMut(&Arc<V>)) {
        for lock in self.locks() {
            for v in read(lock).values() {
                visit(v);
            }
        }
        for names in read_spill(&self.spill).values() {
            names.iter().for_each(&mut visit);
        }
    }

    /// The table as it is now, for a snapshot: a reference to each bucket
    /// and to the spill map.
    pub fn freeze(&self) -> FrozenTable<V> {
        let locks = self.locks();
        let mut buckets = Vec::with_capacity(locks.len());
        let mut count = 0;
        for lock in locks {
            let bucket = read(lock);
            count += bucket.len();
            buckets.push(Arc::clone(&bucket));
        }
        let spill = Arc::clone(&read_spill(&self.spill));
        count += spill.values().map(Vec::len).sum::<usize>();
        assert_eq!(count, self.len(), "table count out of step");
        FrozenTable {
            buckets,
            spill,
            count,
        }
    }
}

/// Runs `look` on the entry named `name` if `bucket` holds it under `key`.
/// Err(look) when another name holds `key` there: `name` can then only be
/// in the spill map.
fn look_in<V: Named, T, F: FnOnce(&Arc<V>) -> T>(
    bucket: &Bucket<V>,
    key: Key,
    name: &str,
    look: F,
) -> Result<Option<T>, F> {
    match bucket.get(&key) {
        Some(v) if v.name() == name => Ok(Some(look(v))),
        Some(_) => Err(look),
        None => Ok(None),
    }
}

/// The spill map's read lock, taken as [`read`] takes a bucket's.
fn read_spill<V>(lock: &RwLock<Arc<Spill<V>>>) -> RwLockReadGuard<'_, Arc<Spill<V>>> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
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
    spill: Arc<Spill<V>>,
    count: usize,
}

impl<V> Default for FrozenTable<V> {
    fn default() -> Self {
        FrozenTable {
            buckets: Vec::new(),
            spill: Arc::new(Spill::with_hasher(FastHash::default())),
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
        let spilled = self.spill.values().flatten();
        self.buckets.iter().flat_map(|b| b.values()).chain(spilled)
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

    /// Every name sharing one key (a forced collision of hashes): each is
    /// still kept, found, changed, frozen and forgotten by its own name, in
    /// a small table and a spread one.
    #[test]
    fn names_sharing_a_key_are_kept_apart() {
        for count in [5, SMALL_MAX + 10] {
            let table = CowTable::with_keys(Keys::colliding());
            let plain = CowTable::new();
            for i in 0..count {
                assert!(table.insert(entry(&format!("n{i}"), i as u64)).is_none());
                plain.insert(entry(&format!("n{i}"), i as u64));
            }
            assert_eq!(table.len(), count);
            assert_eq!(value(&table, "n3"), Some(3));
            assert_eq!(value(&table, "missing"), None);
            // The same name again replaces, wherever it was kept.
            assert_eq!(table.insert(entry("n4", 40)).map(|e| e.value), Some(4));
            assert_eq!(table.update("n2", |e| e.value = 20), Some(()));
            assert_eq!(table.update("missing", |e| e.value = 1), None);
            let frozen = table.freeze();
            // Forget the one holding the key in its bucket, and others.
            let holder = table.read("n0", |e| e.value).map(|_| "n0");
            assert!(holder.is_some());
            for name in ["n0", "n1", "n4"] {
                assert!(table.remove(name).is_some(), "{name} not removed");
                assert!(table.get(name).is_none(), "{name} still found");
            }
            assert!(table.remove("n0").is_none());
            assert_eq!(table.len(), count - 3);
            for i in 5..count {
                assert_eq!(value(&table, &format!("n{i}")), Some(i as u64), "n{i} lost");
            }
            assert_eq!(value(&table, "n2"), Some(20));
            let mut visited = 0;
            table.for_each(|_| visited += 1);
            assert_eq!(visited, count - 3);
            // The image taken before the removals still has them all.
            assert_eq!(frozen.len(), count);
            let image = names(&frozen);
            assert_eq!(image.len(), count);
            assert!(image.contains(&("n4".to_string(), 40)));
            assert!(image.contains(&("n0".to_string(), 0)));
            assert_eq!(plain.len(), count);
        }
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
