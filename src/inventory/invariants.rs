//! The full cross-check of the state machine's invariants, run after every
//! batch in debug builds and tests (apply asserts each invariant as it
//! touches it; this scan also catches what no single change would).

use std::collections::HashMap;
use std::sync::Arc;

use super::reservation::{Reservation, ReservationState, TimedId};
use super::Inventory;
use crate::limits::COUNTER_MAX;

/// Held quantity by SKU, then node, borrowed from the reservations
/// scanned: looking a counter up allocates nothing (ten million counters
/// are checked after every snapshot load).
type HeldByCounter<'a> = HashMap<&'a str, Vec<(&'a str, i64)>>;

impl Inventory {
    /// Cross-checks the whole state: every counter's reserved equals the sum
    /// of its open reservation lines; nothing is negative that must not be;
    /// the expiry index holds exactly the open reservations. Costs a full
    /// scan, so it runs in debug builds and tests.
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut all = Vec::with_capacity(self.shared.reservations.len());
        self.shared.reservations.for_each(|r| all.push(r.clone()));
        let held = self.check_open_reservations(&all)?;
        self.check_counters(held)?;
        self.txns.check()?;
        Ok(())
    }

    /// Checks that the open reservations among `all` are exactly those of
    /// the expiry index and the open count, and sums the quantity their
    /// lines hold on each counter.
    fn check_open_reservations<'a>(
        &self,
        all: &'a [Arc<Reservation>],
    ) -> Result<HeldByCounter<'a>, String> {
        let mut open = 0usize;
        let mut held: HeldByCounter<'a> = HashMap::new();
        for r in all {
            if r.state != ReservationState::Open {
                continue;
            }
            open += 1;
            if !self
                .expiry
                .contains(&TimedId::new(r.expires_at_ms, r.id.clone()))
            {
                return Err(format!(
                    "open reservation {:?} is not in the expiry index",
                    r.id
                ));
            }
            for line in &r.lines {
                let nodes = held.entry(&*line.sku).or_default();
                match nodes.iter_mut().find(|(node, _)| *node == &*line.node) {
                    Some((_, qty)) => *qty += line.qty,
                    None => nodes.push((&*line.node, line.qty)),
                }
            }
        }
        if open != self.open_count || open != self.expiry.len() {
            return Err(format!(
                "{open} open reservations, open count {}, expiry index {}",
                self.open_count,
                self.expiry.len()
            ));
        }
        Ok(held)
    }

    /// Checks every counter against what open lines hold on it (`held`),
    /// its bounds, and the counter count; and that no open line holds a
    /// counter that does not exist.
    fn check_counters(&self, mut held: HeldByCounter<'_>) -> Result<(), String> {
        let mut broken = None;
        let mut counters = 0usize;
        self.shared.stock.for_each(|sku, node, level| {
            counters += 1;
            let mut expect = 0;
            if let Some(nodes) = held.get_mut(sku) {
                if let Some(at) = nodes.iter().position(|(n, _)| *n == node) {
                    expect = nodes.swap_remove(at).1;
                }
                if nodes.is_empty() {
                    held.remove(sku);
                }
            }
            if broken.is_none()
                && (level.reserved != expect
                    || level.reserved < 0
                    || level.safety_stock < 0
                    || level.on_hand.abs() > 2 * COUNTER_MAX)
            {
                broken = Some(format!(
                    "counter {sku}@{node} {level:?}: open lines hold {expect}"
                ));
            }
        });
        if let Some(message) = broken {
            return Err(message);
        }
        for (sku, nodes) in held {
            if let Some((node, qty)) = nodes.first() {
                return Err(format!(
                    "open lines hold {qty} of missing counter {sku}@{node}"
                ));
            }
        }
        if counters != self.shared.stock.counter_count() {
            return Err(format!(
                "counter count {} but {counters} counters",
                self.shared.stock.counter_count()
            ));
        }
        Ok(())
    }
}
