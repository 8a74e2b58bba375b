//! Retained transaction outcomes, kept in the order they finished.
//!
//! Every stock change carries a txn id, and its outcome is kept for a day
//! (up to twenty million of them) so a retry answers as the first call did.
//! Two needs shape the structure:
//!
//! - Memory. An outcome is 56 bytes; a B-tree of (time, key) beside a hash
//!   map of key to outcome would cost nearly three times that per id. Here
//!   the outcomes sit in blocks in finish order (time only moves forward, so
//!   appending keeps the order and the oldest is always at the front), and
//!   the index holds one 8-byte word per id (see [`RetainedTxns::index`]):
//!   about 80 bytes per id in all, counting the allocator's and the index's
//!   spare room.
//! - Snapshots. The blocks are shared copy-on-write: a snapshot takes a
//!   reference to each ([`RetainedTxns::freeze`]), a few thousand pointers
//!   for ten million ids, and only the last, partly filled block is copied
//!   when the next outcome is appended while that snapshot is encoded.
//!
//! Outcomes that finished in the same millisecond stay in the order they
//! were applied; a snapshot keeps that order, so every replica, restarted
//! or not, forgets the same ids in the same order.

use std::collections::VecDeque;
use std::hash::BuildHasher;
use std::sync::Arc;

use super::{FastHash, TxnKey, TxnRecord};

/// Outcomes per block: 4,096 x 56 bytes, about 224 KiB, the most a write
/// copies when a snapshot shares the last block.
const BLOCK_LEN: usize = 4_096;

/// One retained outcome and when it finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetainedTxn {
    pub at_ms: u64,
    pub key: TxnKey,
    pub record: TxnRecord,
}

/// The retained outcomes: a queue in finish order with an index by key.
#[derive(Default)]
pub struct RetainedTxns {
    /// Every block but the last holds exactly [`BLOCK_LEN`] outcomes.
    blocks: VecDeque<Arc<Vec<RetainedTxn>>>,
    /// Outcomes of the first block already forgotten.
    head: usize,
    /// Sequence number of the first block's first slot.
    base_seq: u64,
    /// Where each key's outcome is. An entry packs a 32-bit hash of the key
    /// (high half) with the low 32 bits of the outcome's sequence number
    /// (low half): the outcome is at `seq - base_seq`, counted modulo 2^32,
    /// which is exact because fewer than 2^32 are ever retained
    /// ([`crate::limits::ID_RETAINED_MAX`]). Eight bytes an entry instead of the 24 of a
    /// (key, sequence) pair: 270 MB less for ten million ids. Growing the
    /// table rehashes from the entries alone; a lookup compares the key
    /// kept in the block.
    index: hashbrown::HashTable<u64>,
    /// Seeded per process, so clients cannot choose ids that pile up.
    hasher: FastHash,
}

impl std::fmt::Debug for RetainedTxns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetainedTxns")
            .field("len", &self.index.len())
            .field("base_seq", &self.base_seq)
            .finish()
    }
}

/// The index's hash of an entry's 32-bit key hash, spread over 64 bits
/// (the table takes its bucket from the low bits and a tag from the high).
fn spread(hash32: u64) -> u64 {
    hash32.wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// The 32-bit key hash an index entry keeps.
fn entry_hash(entry: u64) -> u64 {
    spread(entry >> 32)
}

/// Most outcomes the index can point at: sequence numbers are kept modulo
/// 2^32. [`crate::limits::ID_RETAINED_MAX`] keeps the count far below it.
const INDEX_LEN_MAX: usize = u32::MAX as usize;

/// The outcome an index entry points at.
fn outcome_at(
    blocks: &VecDeque<Arc<Vec<RetainedTxn>>>,
    base_seq: u64,
    entry: u64,
) -> Option<&RetainedTxn> {
    let position = (entry as u32).wrapping_sub(base_seq as u32) as usize;
    let block = blocks.get(position / BLOCK_LEN)?;
    block.get(position % BLOCK_LEN)
}

/// True when an index entry with the key's hash points at the key.
fn entry_matches(
    blocks: &VecDeque<Arc<Vec<RetainedTxn>>>,
    base_seq: u64,
    entry: u64,
    hash32: u64,
    key: &TxnKey,
) -> bool {
    entry >> 32 == hash32 && outcome_at(blocks, base_seq, entry).is_some_and(|t| t.key == *key)
}

/// A snapshot's view of the retained outcomes (see [`RetainedTxns::freeze`]).
#[derive(Debug, Clone, Default)]
pub struct FrozenTxns {
    blocks: Vec<Arc<Vec<RetainedTxn>>>,
    head: usize,
}

impl FrozenTxns {
    /// The outcomes, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &RetainedTxn> {
        let mut skip = self.head;
        self.blocks.iter().flat_map(move |block| {
            let from = skip.min(block.len());
            skip = 0;
            block[from..].iter()
        })
    }

    pub fn len(&self) -> usize {
        let mut total = 0;
        for block in &self.blocks {
            total += block.len();
        }
        total - self.head
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl RetainedTxns {
    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Room for `additional` more ids in the index (a snapshot load).
    pub fn reserve(&mut self, additional: usize) {
        self.index.reserve(additional, |&entry| entry_hash(entry));
    }

    pub fn get(&self, key: &TxnKey) -> Option<&RetainedTxn> {
        let hash32 = self.key_hash(key);
        let entry = self
            .index
            .find(spread(hash32), |&entry| self.matches(entry, hash32, key))?;
        self.at(*entry)
    }

    /// 32 bits of the key's seeded hash.
    fn key_hash(&self, key: &TxnKey) -> u64 {
        self.hasher.hash_one(key) >> 32
    }

    fn at(&self, entry: u64) -> Option<&RetainedTxn> {
        outcome_at(&self.blocks, self.base_seq, entry)
    }

    fn matches(&self, entry: u64, hash32: u64, key: &TxnKey) -> bool {
        entry_matches(&self.blocks, self.base_seq, entry, hash32, key)
    }

    /// When the oldest outcome finished.
    pub(crate) fn oldest_at_ms(&self) -> Option<u64> {
        let block = self.blocks.front()?;
        block.get(self.head).map(|t| t.at_ms)
    }

    /// Appends an outcome that finished at `at_ms`, no earlier than the
    /// newest. False (and nothing changed) when the key is already retained
    /// or time would run backwards: a damaged snapshot, for the caller to
    /// refuse.
    pub fn push(&mut self, at_ms: u64, key: TxnKey, record: TxnRecord) -> bool {
        if let Some(newest) = self.blocks.back().and_then(|b| b.last()) {
            if at_ms < newest.at_ms {
                return false;
            }
        }
        if self.index.len() >= INDEX_LEN_MAX {
            return false;
        }
        let hash32 = self.key_hash(&key);
        if self
            .index
            .find(spread(hash32), |&entry| self.matches(entry, hash32, &key))
            .is_some()
        {
            return false;
        }
        let full = match self.blocks.back() {
            Some(block) => block.len() >= BLOCK_LEN,
            None => true,
        };
        let blocks_after = self.blocks.len() + usize::from(full);
        let last_len = if full { 0 } else { self.last_len() };
        let seq = self.base_seq + ((blocks_after - 1) * BLOCK_LEN + last_len) as u64;
        if full {
            self.blocks
                .push_back(Arc::new(Vec::with_capacity(BLOCK_LEN)));
        }
        if let Some(last) = self.blocks.back_mut() {
            // Copies the block only if a snapshot still shares it; a copy
            // is cut to length, so room for the whole block is made again.
            let block = Arc::make_mut(last);
            block.reserve_exact(BLOCK_LEN - block.len());
            block.push(RetainedTxn { at_ms, key, record });
        }
        let entry = (hash32 << 32) | (seq & u64::from(u32::MAX));
        self.index
            .insert_unique(spread(hash32), entry, |&e| entry_hash(e));
        true
    }

    fn last_len(&self) -> usize {
        self.blocks.back().map(|b| b.len()).unwrap_or(0)
    }

    /// Forgets the oldest outcome.
    pub(crate) fn pop_oldest(&mut self) -> Option<RetainedTxn> {
        let block = self.blocks.front()?;
        let oldest = *block.get(self.head)?;
        let block_len = block.len();
        let hash32 = self.key_hash(&oldest.key);
        let (blocks, base_seq) = (&self.blocks, self.base_seq);
        let found = self.index.find_entry(spread(hash32), |&entry| {
            entry_matches(blocks, base_seq, entry, hash32, &oldest.key)
        });
        let Ok(slot) = found else {
            panic!("retained outcome missing from the index");
        };
        slot.remove();
        self.head += 1;
        if self.head == block_len && block_len == BLOCK_LEN {
            self.blocks.pop_front();
            self.head = 0;
            self.base_seq += BLOCK_LEN as u64;
        }
        Some(oldest)
    }

    /// A reference to every block: what a snapshot encodes, taken without
    /// copying an outcome.
    pub fn freeze(&self) -> FrozenTxns {
        FrozenTxns {
            blocks: self.blocks.iter().cloned().collect(),
            head: self.head,
        }
    }

    /// Checks that the index and the queue agree in size and the queue is
    /// in time order; debug builds and tests also look every outcome up by
    /// its key (ten million random lookups would add seconds to a restart,
    /// and [`RetainedTxns::push`] keeps the two in step by construction).
    pub fn check(&self) -> Result<(), String> {
        let frozen = self.freeze();
        if frozen.len() != self.index.len() {
            return Err(format!(
                "{} retained outcomes but {} in the index",
                frozen.len(),
                self.index.len()
            ));
        }
        let mut previous_ms = 0;
        for t in frozen.iter() {
            if t.at_ms < previous_ms {
                return Err("retained outcomes out of time order".into());
            }
            previous_ms = t.at_ms;
            #[cfg(debug_assertions)]
            match self.get(&t.key) {
                Some(found) if found == t => {}
                _ => return Err(format!("retained outcome {:?} not found by key", t.key)),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::StockLevel;

    /// Outcomes kept across the point where sequence numbers wrap modulo
    /// 2^32 in the index are still found, and forgotten, by key.
    #[test]
    fn outcomes_are_found_across_the_wrap_of_sequence_numbers() {
        let mut retained = RetainedTxns {
            base_seq: u64::from(u32::MAX) - 3 * BLOCK_LEN as u64 / 2,
            ..RetainedTxns::default()
        };
        let count = (BLOCK_LEN * 3) as u64;
        for n in 0..count {
            assert!(retained.push(n, TxnKey([n, 7]), record(n)));
        }
        for n in 0..count {
            assert_eq!(retained.get(&TxnKey([n, 7])).unwrap().record, record(n));
        }
        assert!(!retained.push(count, TxnKey([5, 7]), record(0)), "a repeat");
        retained.check().unwrap();
        for n in 0..(BLOCK_LEN as u64 * 2) {
            assert_eq!(retained.pop_oldest().unwrap().record, record(n));
            assert!(retained.get(&TxnKey([n, 7])).is_none());
        }
        for n in (BLOCK_LEN as u64 * 2)..count {
            assert_eq!(retained.get(&TxnKey([n, 7])).unwrap().record, record(n));
        }
        retained.check().unwrap();
    }

    fn record(n: u64) -> TxnRecord {
        TxnRecord {
            fingerprint: n,
            level: StockLevel::default(),
        }
    }

    #[test]
    fn outcomes_are_found_by_key_and_forgotten_oldest_first_across_blocks() {
        let mut retained = RetainedTxns::default();
        let count = (BLOCK_LEN * 2 + 10) as u64;
        for n in 0..count {
            assert!(retained.push(n / 7, TxnKey([n, 1]), record(n)));
        }
        assert!(!retained.push(count, TxnKey([3, 1]), record(0)), "a repeat");
        assert!(
            !retained.push(0, TxnKey([0, 2]), record(0)),
            "time backwards"
        );
        retained.check().unwrap();
        let frozen = retained.freeze();
        for n in 0..(BLOCK_LEN as u64 + 5) {
            assert_eq!(retained.pop_oldest().unwrap().record, record(n));
        }
        assert_eq!(retained.len(), BLOCK_LEN - 5 + 10);
        assert!(retained.get(&TxnKey([2, 1])).is_none());
        assert_eq!(
            retained.get(&TxnKey([count - 1, 1])).unwrap().record,
            record(count - 1)
        );
        retained.check().unwrap();
        // Appending after freezing copies the shared last block; the frozen
        // view still holds exactly what it held.
        assert!(retained.push(count, TxnKey([count, 1]), record(count)));
        assert_eq!(frozen.len(), count as usize);
        let seen: Vec<u64> = frozen.iter().map(|t| t.record.fingerprint).collect();
        assert_eq!(seen, (0..count).collect::<Vec<_>>());
        while retained.pop_oldest().is_some() {}
        assert!(retained.is_empty());
        assert!(retained.push(count + 1, TxnKey([9, 9]), record(1)));
        retained.check().unwrap();
    }
}
