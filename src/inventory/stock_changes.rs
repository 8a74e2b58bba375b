//! Changes to a counter's stock levels: sales, adjustments, counts set
//! outright (each under a transaction id), and safety stock.
//!
//! A transaction id makes a change happen at most once: its outcome is
//! retained ([`super::retained`]) and a retry is answered from it.

use super::answer::{CapacityError, StockAnswer, StockChangeError};
use super::command;
use super::stock::StockLevel;
use super::{Inventory, TxnKey, TxnRecord};
use crate::limits::COUNTER_MAX;

impl Inventory {
    pub(super) fn sell(
        &mut self,
        c: &command::Sell,
        fingerprint: u64,
    ) -> Result<StockAnswer, StockChangeError> {
        self.stock_change(&c.txn_id, fingerprint, &c.sku, &c.node, |level| {
            let on_hand = i128::from(level.on_hand) - i128::from(c.qty);
            set_on_hand_checked(level, on_hand, &c.sku, &c.node)
        })
    }

    pub(super) fn adjust(
        &mut self,
        c: &command::Adjust,
        fingerprint: u64,
    ) -> Result<StockAnswer, StockChangeError> {
        self.stock_change(&c.txn_id, fingerprint, &c.sku, &c.node, |level| {
            let on_hand = i128::from(level.on_hand) + i128::from(c.delta);
            set_on_hand_checked(level, on_hand, &c.sku, &c.node)
        })
    }

    /// Sets on_hand outright; with `expected_on_hand`, only if the counter
    /// still holds that (a count taken against a stale level is refused).
    pub(super) fn set_on_hand(
        &mut self,
        c: &command::SetOnHand,
        fingerprint: u64,
    ) -> Result<StockAnswer, StockChangeError> {
        self.stock_change(&c.txn_id, fingerprint, &c.sku, &c.node, |level| {
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
        })
    }

    /// Sets a counter's safety stock (creating the counter if needed): no
    /// transaction id, setting the same value twice is the same state.
    pub(super) fn set_safety_stock(
        &mut self,
        c: &command::SetSafetyStock,
    ) -> Result<StockAnswer, CapacityError> {
        let result =
            self.shared
                .stock
                .update_or_create(&c.sku, &c.node, &mut self.node_names, |level| {
                    level.safety_stock = c.safety_stock;
                    *level
                });
        result.map(|level| StockAnswer { level })
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
