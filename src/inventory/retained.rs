//! Retained transaction outcomes, kept in the order they finished.
//!
//! Every stock change carries a txn id, and its outcome is kept for a day
//! (up to twenty million of them) so a retry answers as the first call did.
//! Two needs shape the structure:
//!
//! - Memory. An outcome is 56 bytes; a B-tree of (time, key) beside a hash
//!   map of key to outcome cost 148 bytes per id. Here the outcomes sit in
//!   blocks in finish order (time only moves forward, so appending keeps the
//!   order and the oldest is always at the front), and the hash map holds
//!   only a sequence number: about 100 bytes per id in all.
//! - Snapshots. The blocks are shared copy-on-write: a snapshot takes a
//!   reference to each ([`RetainedTxns::freeze`]), a few thousand pointers
//!   for ten million ids, and only the last, partly filled block is copied
//!   when the next outcome is appended while that snapshot is encoded.
//!
//! Outcomes that finished in the same millisecond stay in the order they
//! were applied; a snapshot keeps that order, so every replica, restarted
//! or not, forgets the same ids in the same order.

use std::collections::{HashMap, VecDeque};
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
#[derive(Debug, Default)]
pub struct RetainedTxns {
    /// Every block but the last holds exactly [`BLOCK_LEN`] outcomes.
    blocks: VecDeque<Arc<Vec<RetainedTxn>>>,
    /// Outcomes of the first block already forgotten.
    head: usize,
    /// Sequence number of the first block's first slot.
    base_seq: u64,
    /// Sequence number by key; a key's outcome is at `seq - base_seq`.
    index: HashMap<TxnKey, u64, FastHash>,
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
        self.index.reserve(additional);
    }

    pub fn get(&self, key: &TxnKey) -> Option<&RetainedTxn> {
        let seq = self.index.get(key)?;
        let position = (seq - self.base_seq) as usize;
        let block = self.blocks.get(position / BLOCK_LEN)?;
        block.get(position % BLOCK_LEN)
    }

    /// When the oldest outcome finished.
    pub fn oldest_at_ms(&self) -> Option<u64> {
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
        let full = match self.blocks.back() {
            Some(block) => block.len() >= BLOCK_LEN,
            None => true,
        };
        let blocks_after = self.blocks.len() + usize::from(full);
        let last_len = if full { 0 } else { self.last_len() };
        let seq = self.base_seq + ((blocks_after - 1) * BLOCK_LEN + last_len) as u64;
        let std::collections::hash_map::Entry::Vacant(slot) = self.index.entry(key) else {
            return false;
        };
        slot.insert(seq);
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
        true
    }

    fn last_len(&self) -> usize {
        self.blocks.back().map(|b| b.len()).unwrap_or(0)
    }

    /// Forgets the oldest outcome.
    pub fn pop_oldest(&mut self) -> Option<RetainedTxn> {
        let block = self.blocks.front()?;
        let oldest = *block.get(self.head)?;
        let block_len = block.len();
        let removed = self.index.remove(&oldest.key);
        assert!(removed.is_some(), "retained outcome missing from the index");
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
