//! The simulator's oracle: the inventory rules written again, plainly and
//! separately from `crate::inventory` (ordered maps, no sharing, no
//! indexes), applied to the committed log. What the clients were told is
//! checked against it, and so is every replica's final state.

use std::collections::BTreeMap;

use crate::inventory::command::{Command, Extend, Reserve};
use crate::inventory::{
    Applied, ConsumeError, ExtendAnswer, ExtendError, Outcome, ReleaseError, ReserveAnswer,
    ReserveError, Shortage, StockAnswer, StockChangeError, StockLevel,
};
use crate::limits::COUNTER_MAX;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Open,
    Consumed,
    Released,
    Expired,
}

#[derive(Debug, Clone)]
pub struct Hold {
    pub reserve: Reserve,
    pub state: State,
    pub expires_at_ms: u64,
    pub finished_at_ms: u64,
}

type Counter = (String, String);

#[derive(Debug, Clone, Default)]
pub struct Model {
    pub now_ms: u64,
    pub counters: BTreeMap<Counter, StockLevel>,
    pub holds: BTreeMap<String, Hold>,
    /// Transaction id -> (the command, the level it answered).
    pub txns: BTreeMap<String, (Command, StockLevel, u64)>,
    /// Every change of a counter: (log index, level after), for reads.
    pub history: BTreeMap<Counter, Vec<(u64, StockLevel)>>,
    pub applied_index: u64,
}

fn level_of(levels: &BTreeMap<Counter, StockLevel>, sku: &str, node: &str) -> StockLevel {
    levels
        .get(&(sku.to_string(), node.to_string()))
        .copied()
        .unwrap_or_default()
}

fn outcome(state: State) -> Outcome {
    match state {
        State::Open => Outcome::Reserved,
        State::Consumed => Outcome::Consumed,
        State::Released => Outcome::Released,
        State::Expired => Outcome::Expired,
    }
}

impl Model {
    fn set(&mut self, index: u64, sku: &str, node: &str, level: StockLevel) {
        let key = (sku.to_string(), node.to_string());
        self.counters.insert(key.clone(), level);
        self.history.entry(key).or_default().push((index, level));
    }

    /// A counter's level as of log index `index`.
    pub fn level_at(&self, sku: &str, node: &str, index: u64) -> StockLevel {
        let Some(changes) = self.history.get(&(sku.to_string(), node.to_string())) else {
            return StockLevel::default();
        };
        let mut level = StockLevel::default();
        for (i, l) in changes {
            if *i > index {
                break;
            }
            level = *l;
        }
        level
    }

    /// Ends an open hold, as commit, release or expiry.
    fn finish(&mut self, index: u64, id: &str, end: State) {
        let Some(hold) = self.holds.get(id).cloned() else {
            return;
        };
        for line in &hold.reserve.lines {
            let mut level = level_of(&self.counters, &line.sku, &line.node);
            level.reserved -= line.qty;
            if end == State::Consumed {
                level.on_hand -= line.qty;
            }
            self.set(index, &line.sku, &line.node, level);
        }
        if let Some(h) = self.holds.get_mut(id) {
            h.state = end;
            h.finished_at_ms = self.now_ms;
        }
    }

    /// Applies one entry's batch and returns what each command answers.
    pub fn apply(
        &mut self,
        index: u64,
        stamp_ms: u64,
        retention_ms: u64,
        commands: &[Command],
    ) -> Vec<Applied> {
        self.applied_index = index;
        self.now_ms = self.now_ms.max(stamp_ms);
        // Expire due holds, earliest deadline first (ties by id).
        let mut due: Vec<(u64, String)> = self
            .holds
            .iter()
            .filter(|(_, h)| h.state == State::Open && h.expires_at_ms <= self.now_ms)
            .map(|(id, h)| (h.expires_at_ms, id.clone()))
            .collect();
        due.sort();
        for (_, id) in due {
            self.finish(index, &id, State::Expired);
        }
        // Forget finished ids past retention.
        let now = self.now_ms;
        self.holds.retain(|_, h| {
            h.state == State::Open || h.finished_at_ms.saturating_add(retention_ms) > now
        });
        self.txns
            .retain(|_, (_, _, at)| at.saturating_add(retention_ms) > now);
        commands.iter().map(|c| self.command(index, c)).collect()
    }

    /// What one command answers, applied at log index `index`.
    fn command(&mut self, index: u64, command: &Command) -> Applied {
        match command {
            Command::Reserve(r) => Applied::Reserve(self.reserve(index, r)),
            Command::Consume { reservation_id } => {
                Applied::Consume(self.consume(index, reservation_id))
            }
            Command::Release { reservation_id } => {
                Applied::Release(self.release(index, reservation_id))
            }
            Command::Extend(e) => Applied::Extend(self.extend(e)),
            Command::Sell(c) => {
                Applied::StockChange(self.txn(index, &c.txn_id, command, &c.sku, &c.node, |l| {
                    let value = i128::from(l.on_hand) - i128::from(c.qty);
                    set_checked(l, value, &c.sku, &c.node)
                }))
            }
            Command::Adjust(c) => {
                Applied::StockChange(self.txn(index, &c.txn_id, command, &c.sku, &c.node, |l| {
                    let value = i128::from(l.on_hand) + i128::from(c.delta);
                    set_checked(l, value, &c.sku, &c.node)
                }))
            }
            Command::SetOnHand(c) => {
                Applied::StockChange(self.txn(index, &c.txn_id, command, &c.sku, &c.node, |l| {
                    if let Some(expected) = c.expected_on_hand {
                        if expected != l.on_hand {
                            return Err(StockChangeError::Stale {
                                sku: c.sku.clone(),
                                node: c.node.clone(),
                                expected,
                                actual: l.on_hand,
                            });
                        }
                    }
                    l.on_hand = c.on_hand;
                    Ok(())
                }))
            }
            Command::SetSafetyStock(c) => {
                let mut level = level_of(&self.counters, &c.sku, &c.node);
                level.safety_stock = c.safety_stock;
                self.set(index, &c.sku, &c.node, level);
                Applied::SetSafetyStock(Ok(StockAnswer { level }))
            }
        }
    }

    /// Consuming a hold: an open one is committed; retrying a consumed or
    /// expired one answers how it ended.
    fn consume(&mut self, index: u64, id: &str) -> Result<Outcome, ConsumeError> {
        match self.holds.get(id).map(|h| h.state) {
            None => Ok(Outcome::NotFound),
            Some(State::Open) => {
                self.finish(index, id, State::Consumed);
                Ok(Outcome::Consumed)
            }
            Some(State::Consumed) => Ok(Outcome::Consumed),
            Some(State::Expired) => Ok(Outcome::Expired),
            Some(State::Released) => Err(ConsumeError::Released { id: id.to_string() }),
        }
    }

    /// Releasing a hold: an open one gives its stock back; retrying a
    /// released or expired one answers how it ended.
    fn release(&mut self, index: u64, id: &str) -> Result<Outcome, ReleaseError> {
        match self.holds.get(id).map(|h| h.state) {
            None => Ok(Outcome::NotFound),
            Some(State::Open) => {
                self.finish(index, id, State::Released);
                Ok(Outcome::Released)
            }
            Some(State::Released) => Ok(Outcome::Released),
            Some(State::Expired) => Ok(Outcome::Expired),
            Some(State::Consumed) => Err(ReleaseError::Consumed { id: id.to_string() }),
        }
    }

    /// Extending a hold: an open one gets a new deadline from now.
    fn extend(&mut self, e: &Extend) -> Result<ExtendAnswer, ExtendError> {
        let now = self.now_ms;
        let Some(h) = self.holds.get_mut(&e.reservation_id) else {
            return Ok(ExtendAnswer {
                outcome: Outcome::NotFound,
                expires_at_ms: 0,
            });
        };
        match h.state {
            State::Open => {
                h.expires_at_ms = now + e.ttl_ms;
                Ok(ExtendAnswer {
                    outcome: Outcome::Reserved,
                    expires_at_ms: h.expires_at_ms,
                })
            }
            State::Expired => Ok(ExtendAnswer {
                outcome: Outcome::Expired,
                expires_at_ms: h.expires_at_ms,
            }),
            State::Consumed => Err(ExtendError::Consumed {
                id: e.reservation_id.clone(),
            }),
            State::Released => Err(ExtendError::Released {
                id: e.reservation_id.clone(),
            }),
        }
    }

    fn reserve(&mut self, index: u64, r: &Reserve) -> Result<ReserveAnswer, ReserveError> {
        if let Some(h) = self.holds.get(&r.reservation_id) {
            if h.reserve.lines != r.lines || h.reserve.ttl_ms != r.ttl_ms {
                return Err(ReserveError::IdReused {
                    id: r.reservation_id.clone(),
                });
            }
            return Ok(ReserveAnswer {
                outcome: outcome(h.state),
                expires_at_ms: h.expires_at_ms,
                shortages: Vec::new(),
            });
        }
        let mut shortages = Vec::new();
        for line in &r.lines {
            let level = level_of(&self.counters, &line.sku, &line.node);
            let available = level.on_hand - level.reserved - level.safety_stock;
            if available < line.qty {
                shortages.push(Shortage {
                    sku: line.sku.clone(),
                    node: line.node.clone(),
                    requested: line.qty,
                    available,
                });
            }
        }
        if !shortages.is_empty() {
            return Ok(ReserveAnswer {
                outcome: Outcome::InsufficientStock,
                expires_at_ms: 0,
                shortages,
            });
        }
        for line in &r.lines {
            let mut level = level_of(&self.counters, &line.sku, &line.node);
            level.reserved += line.qty;
            self.set(index, &line.sku, &line.node, level);
        }
        let expires_at_ms = self.now_ms + r.ttl_ms;
        self.holds.insert(
            r.reservation_id.clone(),
            Hold {
                reserve: r.clone(),
                state: State::Open,
                expires_at_ms,
                finished_at_ms: 0,
            },
        );
        Ok(ReserveAnswer {
            outcome: Outcome::Reserved,
            expires_at_ms,
            shortages: Vec::new(),
        })
    }

    fn txn(
        &mut self,
        index: u64,
        id: &str,
        command: &Command,
        sku: &str,
        node: &str,
        change: impl FnOnce(&mut StockLevel) -> Result<(), StockChangeError>,
    ) -> Result<StockAnswer, StockChangeError> {
        if let Some((first, level, _)) = self.txns.get(id) {
            if first != command {
                return Err(StockChangeError::IdReused { id: id.to_string() });
            }
            return Ok(StockAnswer { level: *level });
        }
        let mut level = level_of(&self.counters, sku, node);
        change(&mut level)?;
        self.set(index, sku, node, level);
        self.txns
            .insert(id.to_string(), (command.clone(), level, self.now_ms));
        Ok(StockAnswer { level })
    }
}

fn set_checked(
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
    level.on_hand = value as i64;
    Ok(())
}
