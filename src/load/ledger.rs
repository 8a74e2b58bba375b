//! What the clients were told, per counter of the run: the [`Ledger`] the
//! verification checks the server's counters against.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

use super::counters::Key;
use super::workload::{hot_sku_name, node_name, sku_name, HOT_NODE};
use super::FastMap;
use crate::proto::v1 as pb;

/// What the clients were told about one counter, summed over all workers.
#[derive(Debug, Clone, Default)]
pub(super) struct Account {
    pub(super) committed: i64,
    pub(super) sold: i64,
    pub(super) received: i64,
    /// Units in holds the clients know are open.
    pub(super) held: i64,
    /// A set-on-hand made on_hand absolute: only `reserved` is checkable.
    pub(super) absolute: bool,
    /// A call on it never got a definite answer.
    pub(super) uncertain: bool,
}

/// One counter's [`Account`], updated by every worker at once.
#[derive(Debug, Default)]
pub(super) struct AccountCell {
    pub(super) committed: AtomicI64,
    pub(super) sold: AtomicI64,
    pub(super) received: AtomicI64,
    pub(super) held: AtomicI64,
    pub(super) absolute: AtomicBool,
    pub(super) uncertain: AtomicBool,
}

impl AccountCell {
    pub(super) fn read(&self) -> Account {
        Account {
            committed: self.committed.load(Ordering::Relaxed),
            sold: self.sold.load(Ordering::Relaxed),
            received: self.received.load(Ordering::Relaxed),
            held: self.held.load(Ordering::Relaxed),
            absolute: self.absolute.load(Ordering::Relaxed),
            uncertain: self.uncertain.load(Ordering::Relaxed),
        }
    }
}

/// What the clients were told, per counter of the run: one table shared by
/// every worker, so memory stays one account per counter however many
/// workers run, and a call costs a lookup and an atomic add.
#[derive(Debug)]
pub(super) struct Ledger {
    /// A counter's place in `accounts`, by SKU then node (read-only once
    /// built; looked up by the names a call carries, without allocating).
    index: FastMap<String, FastMap<String, usize>>,
    /// The same places by position, for the workers' hot path (an array
    /// read instead of two string-keyed lookups in tables of a hundred
    /// thousand entries): `spread[sku * nodes + node]` for the spread
    /// counters, `hot[i]` for the flash-sale ones, [`NO_ACCOUNT`] where
    /// the run has no such counter. Built from `index` by name, so both
    /// agree whatever order [`counters`](super::counters::counters) lists the counters in.
    spread: Vec<u32>,
    nodes: usize,
    hot: Vec<u32>,
    /// In the order of the run's counters (see [`counters`](super::counters::counters)).
    pub(super) accounts: Vec<AccountCell>,
    /// Calls on counters outside the table: a harness bug if ever
    /// non-zero, and the verification fails when there are any.
    pub(super) untracked: AtomicU64,
}

/// A place in [`Ledger::spread`] or [`Ledger::hot`] with no counter.
const NO_ACCOUNT: u32 = u32::MAX;

/// A counter's place in the ledger's accounts, as a worker carries it
/// beside the line it sent; None for a counter the run does not have.
pub(super) type Place = Option<usize>;

impl Ledger {
    /// `skus`, `nodes` and `hot_skus` say which positions the workers
    /// will ask for (see [`Ledger::spread_account`], [`Ledger::hot_account`]).
    /// `keys` is bounded by [`crate::limits::COUNTERS_MAX`] (checked when
    /// the run starts), far below [`NO_ACCOUNT`].
    pub(super) fn new(keys: &[Key], skus: usize, nodes: usize, hot_skus: usize) -> Ledger {
        assert!(
            keys.len() < NO_ACCOUNT as usize,
            "more counters than the ledger places"
        );
        let mut index: FastMap<String, FastMap<String, usize>> = FastMap::default();
        for (i, (sku, node)) in keys.iter().enumerate() {
            index
                .entry(sku.clone())
                .or_default()
                .insert(node.clone(), i);
        }
        let place = |sku: &str, node: &str| -> u32 {
            let found = index.get(sku).and_then(|by_node| by_node.get(node));
            // Below NO_ACCOUNT: checked against keys.len() above.
            found.map_or(NO_ACCOUNT, |i| *i as u32)
        };
        let mut spread = Vec::new();
        if index.contains_key(&sku_name(0)) {
            spread.reserve(skus.saturating_mul(nodes));
            for s in 0..skus {
                let sku = sku_name(s);
                for n in 0..nodes {
                    spread.push(place(&sku, &node_name(n)));
                }
            }
        }
        let mut hot = Vec::with_capacity(hot_skus);
        for h in 0..hot_skus {
            hot.push(place(&hot_sku_name(h), HOT_NODE));
        }
        let mut accounts = Vec::with_capacity(keys.len());
        accounts.resize_with(keys.len(), AccountCell::default);
        Ledger {
            index,
            spread,
            nodes,
            hot,
            accounts,
            untracked: AtomicU64::new(0),
        }
    }

    /// The place of SKU number `sku` at node number `node` (the numbers
    /// [`Chooser`] picks), as [`Ledger::place`] would find it by name.
    pub(super) fn spread_account(&self, sku: usize, node: usize) -> Place {
        let at = sku.checked_mul(self.nodes)?.checked_add(node)?;
        let place = *self.spread.get(at)?;
        (place != NO_ACCOUNT).then_some(place as usize)
    }

    /// The place of flash-sale SKU number `i` at [`HOT_NODE`].
    pub(super) fn hot_account(&self, i: usize) -> Place {
        let place = *self.hot.get(i)?;
        (place != NO_ACCOUNT).then_some(place as usize)
    }

    /// The place of a counter of the run, by name. Every line the workers
    /// send names one; any other would be a harness bug, and is reported
    /// by the verification as a counter it could not check.
    pub(super) fn place(&self, sku: &str, node: &str) -> Place {
        self.index.get(sku)?.get(node).copied()
    }

    pub(super) fn add_at(
        &self,
        place: Place,
        field: impl Fn(&AccountCell) -> &AtomicI64,
        qty: i64,
    ) {
        match place.and_then(|i| self.accounts.get(i)) {
            Some(a) => {
                field(a).fetch_add(qty, Ordering::Relaxed);
            }
            None => self.untracked(),
        }
    }

    pub(super) fn add(
        &self,
        sku: &str,
        node: &str,
        field: impl Fn(&AccountCell) -> &AtomicI64,
        qty: i64,
    ) {
        self.add_at(self.place(sku, node), field, qty);
    }

    pub(super) fn flag(&self, sku: &str, node: &str, field: impl Fn(&AccountCell) -> &AtomicBool) {
        match self.place(sku, node).and_then(|i| self.accounts.get(i)) {
            Some(a) => field(a).store(true, Ordering::Relaxed),
            None => self.untracked(),
        }
    }

    fn untracked(&self) {
        self.untracked.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn consumed(&self, lines: &[pb::Line]) {
        for l in lines {
            self.add(&l.sku, &l.node, |a| &a.committed, l.qty);
        }
    }

    pub(super) fn held(&self, lines: &[pb::Line]) {
        for l in lines {
            self.add(&l.sku, &l.node, |a| &a.held, l.qty);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::load::counters::counters;
    use crate::load::workload::Workload;
    use crate::load::{LoadConfig, Route};

    fn keys_of(mix: &[(Workload, u32)], skus: usize, nodes: usize, hot_skus: usize) -> Vec<Key> {
        counters(&LoadConfig {
            servers: vec![],
            route: Route::Leader,
            clients: 1,
            in_flight: 1,
            duration: None,
            ops: Some(1),
            mix: mix.to_vec(),
            rate: None,
            skus,
            nodes,
            stock: 1,
            hot_skus,
            hot_stock: 1,
            zipf: 1.0,
            seed: true,
            ttl_ms: 1,
            stream: false,
            mux: None,
            call_timeout: Duration::from_secs(1),
            json: None,
            report: None,
            verify: true,
            run_id: String::new(),
            progress: false,
            tls: None,
            bearer: crate::client::Bearer::default(),
        })
    }

    #[test]
    fn a_counter_found_by_position_is_the_one_found_by_name() {
        let mix = [(Workload::Checkout, 1), (Workload::FlashSale, 1)];
        let keys = keys_of(&mix, 7, 3, 2);
        let ledger = Ledger::new(&keys, 7, 3, 2);
        for s in 0..7 {
            for n in 0..3 {
                let by_name = ledger.place(&sku_name(s), &node_name(n));
                assert!(by_name.is_some());
                assert_eq!(ledger.spread_account(s, n), by_name, "SKU {s} node {n}");
            }
        }
        for h in 0..2 {
            let by_name = ledger.place(&hot_sku_name(h), HOT_NODE);
            assert!(by_name.is_some());
            assert_eq!(ledger.hot_account(h), by_name);
        }
        // Positions past the run's counters have no place, and a call on
        // them is counted as untracked, as a call on an unknown name is.
        assert_eq!(ledger.spread_account(7, 0), None);
        assert_eq!(ledger.spread_account(0, 3), ledger.spread_account(1, 0));
        assert_eq!(ledger.spread_account(usize::MAX, 2), None);
        assert_eq!(ledger.hot_account(2), None);
        ledger.add_at(None, |a| &a.held, 1);
        assert_eq!(ledger.untracked.load(Ordering::Relaxed), 1);
        ledger.add_at(ledger.spread_account(2, 1), |a| &a.held, 3);
        let i = ledger.place(&sku_name(2), &node_name(1)).unwrap();
        assert_eq!(ledger.accounts[i].read().held, 3);
    }

    #[test]
    fn a_run_without_spread_counters_places_none_of_them() {
        let keys = keys_of(&[(Workload::FlashSale, 1)], 5, 2, 1);
        let ledger = Ledger::new(&keys, 5, 2, 1);
        assert_eq!(ledger.spread_account(0, 0), None);
        assert_eq!(
            ledger.hot_account(0),
            ledger.place(&hot_sku_name(0), HOT_NODE)
        );
        assert!(ledger.hot_account(0).is_some());
    }
}
