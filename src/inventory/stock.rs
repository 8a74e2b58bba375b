//! The stock table: one counter per (sku, node).
//!
//! Storefronts read availability far more often than stock changes, and
//! those reads must never wait behind the replication loop. So the table is a
//! concurrent map ([`CowTable`]) shared by reference: the apply thread is its
//! only writer, and any number of gRPC handlers read it at once; a snapshot
//! freezes it in constant time. A read sees each
//! counter atomically; a read over several counters may see a reserve that
//! touched them half applied, which is why a multi-SKU availability answer is
//! per-counter consistent rather than a cut across counters.
//!
//! Per SKU the nodes are a short sorted vector, so "all nodes of this SKU" (the
//! common storefront question) is one map lookup.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::answer::CapacityError;
use super::cow_table::{self, CowTable, Named};
use crate::limits::{COUNTERS_MAX, NODES_PER_SKU_MAX};

/// The stock of one (sku, node).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StockLevel {
    /// Units physically at the node (negative after sales of stock that the
    /// counter did not know about).
    pub on_hand: i64,
    /// Units held by open reservations; never negative.
    pub reserved: i64,
    /// Units kept back from sale.
    pub safety_stock: i64,
}

impl StockLevel {
    /// What a new reservation may take: on_hand - reserved - safety_stock.
    /// Each term is bounded by [`crate::limits::COUNTER_MAX`] (reserved by
    /// twice that at most), so this cannot overflow.
    pub fn available(&self) -> i64 {
        self.on_hand - self.reserved - self.safety_stock
    }

    /// True when the node has promised or kept back more than it holds.
    pub(crate) fn is_short(&self) -> bool {
        self.available() < 0
    }
}

#[derive(Debug, Clone)]
pub struct NodeStock {
    pub node: Arc<str>,
    pub level: StockLevel,
}

/// One SKU's counters. Shared copy-on-write (each is an `Arc` in the
/// table): the first write to a SKU while a snapshot is being encoded
/// elsewhere copies that SKU's list alone. A boxed slice, not a vector: no
/// spare room is ever kept, and adding a node (rare: a new counter)
/// rebuilds the list.
#[derive(Debug, Clone)]
pub struct SkuStock {
    /// The SKU's name, shared with the reservations that hold its stock.
    pub sku: Arc<str>,
    /// Sorted by node name.
    pub nodes: Box<[NodeStock]>,
}

impl Named for SkuStock {
    fn name(&self) -> &str {
        &self.sku
    }
}

impl SkuStock {
    fn position(&self, node: &str) -> Result<usize, usize> {
        self.nodes.binary_search_by(|n| (*n.node).cmp(node))
    }

    pub fn level(&self, node: &str) -> Option<StockLevel> {
        self.position(node).ok().map(|i| self.nodes[i].level)
    }
}

/// One SKU's availability over some nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkuAvailability {
    pub sku: String,
    /// Sum of each listed node's available, counting short nodes as 0: what
    /// can be promised to a new order over those nodes.
    pub total_available: i64,
    pub nodes: Vec<(String, StockLevel)>,
}

/// The counters, shared between the apply thread (writer) and readers.
#[derive(Debug, Default)]
pub struct StockTable {
    skus: CowTable<SkuStock>,
    counters: AtomicUsize,
}

impl StockTable {
    pub fn new() -> StockTable {
        StockTable::default()
    }

    /// A table whose SKUs are keyed by `keys` (tests force collisions).
    #[cfg(test)]
    pub(crate) fn with_keys(keys: cow_table::Keys) -> StockTable {
        StockTable {
            skus: CowTable::with_keys(keys),
            counters: AtomicUsize::new(0),
        }
    }

    /// Number of (sku, node) counters.
    pub fn counter_count(&self) -> usize {
        self.counters.load(Ordering::Relaxed)
    }

    pub fn level(&self, sku: &str, node: &str) -> Option<StockLevel> {
        self.skus.read(sku, |s| s.level(node)).flatten()
    }

    /// Availability of one SKU over `nodes`, or over every node that stocks
    /// it when `nodes` is empty. A node that never stocked the SKU answers
    /// zeros, so the caller sees every node it asked about.
    pub fn availability(&self, sku: &str, nodes: &[String]) -> SkuAvailability {
        let mut answer = SkuAvailability {
            sku: sku.to_string(),
            total_available: 0,
            nodes: Vec::new(),
        };
        let listed = &mut answer.nodes;
        let found = self.skus.read(sku, |stock| {
            if nodes.is_empty() {
                for n in stock.nodes.iter() {
                    listed.push((n.node.to_string(), n.level));
                }
                return;
            }
            for node in nodes {
                listed.push((node.clone(), stock.level(node).unwrap_or_default()));
            }
        });
        if found.is_none() {
            for node in nodes {
                answer.nodes.push((node.clone(), StockLevel::default()));
            }
        }
        // At most NODES_PER_SKU_MAX (or NODES_PER_READ_MAX) terms of at most
        // COUNTER_MAX each: far inside i64.
        for (_, level) in &answer.nodes {
            answer.total_available += level.available().max(0);
        }
        answer
    }

    /// Applies `change` to an existing counter; None when it does not exist.
    pub(crate) fn update_existing<R>(
        &self,
        sku: &str,
        node: &str,
        change: impl FnOnce(&mut StockLevel) -> R,
    ) -> Option<R> {
        self.skus
            .update(sku, |stock| {
                let i = stock.position(node).ok()?;
                Some(change(&mut stock.nodes[i].level))
            })
            .flatten()
    }

    /// Adds `qty` to an existing counter's reserved and returns the shared
    /// names of its SKU and node, for the reservation to keep: one lookup
    /// where a reserve would otherwise take three. None when the counter
    /// does not exist.
    pub(crate) fn hold(&self, sku: &str, node: &str, qty: i64) -> Option<(Arc<str>, Arc<str>)> {
        self.skus
            .update(sku, |stock| {
                let i = stock.position(node).ok()?;
                let counter = &mut stock.nodes[i];
                counter.level.reserved += qty;
                assert!(
                    counter.level.available() >= 0,
                    "reserve drove available below zero"
                );
                Some((stock.sku.clone(), counter.node.clone()))
            })
            .flatten()
    }

    /// Applies `change` to a counter, creating it at zero first when missing.
    /// `nodes` interns node names so that a node stocking a million SKUs
    /// keeps one copy of its name.
    pub(crate) fn update_or_create<R>(
        &self,
        sku: &str,
        node: &str,
        nodes: &mut HashSet<Arc<str>, super::FastHash>,
        change: impl FnOnce(&mut StockLevel) -> R,
    ) -> Result<R, CapacityError> {
        // `change` runs once: on the counter if it exists, or on the new
        // one. Two steps (look, then create) are safe: this is the only
        // writer.
        let mut change = Some(change);
        let found = self.skus.update(sku, |stock| {
            let i = match stock.position(node) {
                Ok(i) => {
                    let change = change.take()?;
                    return Some(Ok(change(&mut stock.nodes[i].level)));
                }
                Err(i) => i,
            };
            if let Err(full) = self.check_room(sku, stock.nodes.len()) {
                return Some(Err(full));
            }
            let change = change.take()?;
            let mut level = StockLevel::default();
            let result = change(&mut level);
            // O(nodes of this SKU), at most NODES_PER_SKU_MAX, once per new
            // counter.
            let mut grown = Vec::with_capacity(stock.nodes.len() + 1);
            grown.extend_from_slice(&stock.nodes[..i]);
            grown.push(NodeStock {
                node: intern(nodes, node),
                level,
            });
            grown.extend_from_slice(&stock.nodes[i..]);
            stock.nodes = grown.into_boxed_slice();
            self.counters.fetch_add(1, Ordering::Relaxed);
            Some(Ok(result))
        });
        if let Some(done) = found.flatten() {
            return done;
        }
        let Some(change) = change.take() else {
            panic!("a counter change was taken but not applied");
        };
        self.check_room(sku, 0)?;
        let mut level = StockLevel::default();
        let result = change(&mut level);
        let stock = SkuStock {
            sku: Arc::from(sku),
            nodes: Box::new([NodeStock {
                node: intern(nodes, node),
                level,
            }]),
        };
        let replaced = self.skus.insert(Arc::new(stock));
        assert!(replaced.is_none(), "a new SKU replaced a kept one");
        self.counters.fetch_add(1, Ordering::Relaxed);
        Ok(result)
    }

    fn check_room(&self, sku: &str, nodes_of_sku: usize) -> Result<(), CapacityError> {
        if self.counter_count() >= COUNTERS_MAX {
            return Err(CapacityError::TooManyCounters { max: COUNTERS_MAX });
        }
        if nodes_of_sku >= NODES_PER_SKU_MAX {
            return Err(CapacityError::TooManyNodes {
                sku: sku.to_string(),
                max: NODES_PER_SKU_MAX,
            });
        }
        Ok(())
    }

    /// Adds a whole SKU read from a snapshot, its nodes sorted by name. One
    /// map insert per SKU instead of one lookup and insert per counter: this
    /// is most of a restart's work with ten million counters.
    pub(crate) fn load_sku(&self, sku: Arc<str>, nodes: Vec<NodeStock>) -> Result<(), String> {
        if nodes.is_empty() {
            return Err(format!("SKU {sku:?} has no nodes"));
        }
        if nodes.len() > NODES_PER_SKU_MAX {
            return Err(format!(
                "SKU {sku:?} has more than {NODES_PER_SKU_MAX} nodes"
            ));
        }
        for pair in nodes.windows(2) {
            if pair[0].node >= pair[1].node {
                return Err(format!("SKU {sku:?}: nodes not sorted or repeated"));
            }
        }
        let count = nodes.len();
        if self.counter_count() + count > COUNTERS_MAX {
            return Err(format!("more than {COUNTERS_MAX} counters"));
        }
        // Copied into a block of exactly its length: gathered by pushes, the
        // vector has up to twice the room it needs.
        let stock = SkuStock {
            sku: sku.clone(),
            nodes: nodes.into_boxed_slice(),
        };
        if self.skus.insert(Arc::new(stock)).is_some() {
            return Err(format!("SKU {sku:?} appears twice"));
        }
        self.counters.fetch_add(count, Ordering::Relaxed);
        Ok(())
    }

    /// Every SKU as it is now, in no particular order: what a snapshot
    /// encodes, taken in constant time ([`CowTable::freeze`]). Later
    /// writes copy what they change (see [`SkuStock`]).
    pub(crate) fn freeze(&self) -> cow_table::FrozenTable<SkuStock> {
        self.skus.freeze()
    }

    /// The shared name of a SKU that exists, to store in reservations.
    pub(crate) fn sku_key(&self, sku: &str) -> Option<Arc<str>> {
        self.skus.read(sku, |s| s.sku.clone())
    }

    /// Calls `visit` for every counter, in no particular order.
    pub(crate) fn for_each(&self, mut visit: impl FnMut(&str, &str, &StockLevel)) {
        self.skus.for_each(|stock| {
            for n in stock.nodes.iter() {
                visit(&stock.sku, &n.node, &n.level);
            }
        });
    }
}

/// Returns the shared copy of `name`, adding it when new.
pub(crate) fn intern(names: &mut HashSet<Arc<str>, super::FastHash>, name: &str) -> Arc<str> {
    if let Some(existing) = names.get(name) {
        return existing.clone();
    }
    let shared: Arc<str> = Arc::from(name);
    names.insert(shared.clone());
    shared
}
