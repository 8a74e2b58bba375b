//! The life of a reservation: reserving stock, consuming or releasing it,
//! extending its deadline, and expiring it when that deadline passes.
//!
//! A reservation's id makes every command on it idempotent: a retry of a
//! reserve with the same payload answers as the first did, and a command on
//! a finished reservation answers from the state it ended in.

use std::sync::Arc;

use super::answer::{
    ConsumeError, ExtendAnswer, ExtendError, Outcome, ReleaseError, ReserveAnswer, ReserveError,
    Shortage,
};
use super::command::{self, Line};
use super::reservation::{HeldLine, HeldLines, Reservation, ReservationState, TimedId};
use super::Inventory;
use crate::limits::RESERVATIONS_OPEN_MAX;

impl Inventory {
    pub(super) fn reserve(&mut self, c: &command::Reserve) -> Result<ReserveAnswer, ReserveError> {
        if let Some(answer) = self.answer_retried_reserve(c) {
            return answer;
        }
        if self.open_count >= RESERVATIONS_OPEN_MAX {
            return Err(ReserveError::TooManyOpen {
                open: self.open_count,
            });
        }
        // Check every line first: all or nothing.
        let shortages = self.shortages(&c.lines);
        if !shortages.is_empty() {
            return Ok(ReserveAnswer {
                outcome: Outcome::InsufficientStock,
                expires_at_ms: 0,
                shortages,
            });
        }
        let held = self.hold_lines(&c.lines);
        let id: Arc<str> = Arc::from(c.reservation_id.as_str());
        let expires_at_ms = self.now_ms.saturating_add(c.ttl_ms);
        self.expiry.insert(TimedId::new(expires_at_ms, id.clone()));
        let replaced = self.shared.reservations.insert(Arc::new(Reservation {
            id,
            lines: held,
            ttl_ms: c.ttl_ms,
            state: ReservationState::Open,
            created_at_ms: self.now_ms,
            expires_at_ms,
            finished_at_ms: 0,
        }));
        assert!(replaced.is_none(), "a new reservation replaced a kept one");
        self.open_count += 1;
        Ok(ReserveAnswer {
            outcome: Outcome::Reserved,
            expires_at_ms,
            shortages: Vec::new(),
        })
    }

    /// The answer to a reserve whose id is already kept: the first call's
    /// outcome when the payload is the same, `IdReused` when it is not.
    /// None for a new id.
    fn answer_retried_reserve(
        &self,
        c: &command::Reserve,
    ) -> Option<Result<ReserveAnswer, ReserveError>> {
        // Looked at in place: no reference taken, so nothing to count.
        let (same, state, expires_at_ms) =
            self.shared.reservations.read(&c.reservation_id, |r| {
                (r.same_payload(&c.lines, c.ttl_ms), r.state, r.expires_at_ms)
            })?;
        if !same {
            return Some(Err(ReserveError::IdReused {
                id: c.reservation_id.clone(),
            }));
        }
        Some(Ok(ReserveAnswer {
            outcome: outcome_of(state),
            expires_at_ms,
            shortages: Vec::new(),
        }))
    }

    /// The lines whose counter has less available than they ask for.
    fn shortages(&self, lines: &[Line]) -> Vec<Shortage> {
        let mut shortages = Vec::new();
        for line in lines {
            let level = self
                .shared
                .stock
                .level(&line.sku, &line.node)
                .unwrap_or_default();
            if level.available() < line.qty {
                shortages.push(Shortage {
                    sku: line.sku.clone(),
                    node: line.node.clone(),
                    requested: line.qty,
                    available: level.available(),
                });
            }
        }
        shortages
    }

    /// Adds each line to its counter's reserved, once [`Self::shortages`]
    /// found none short: every counter exists (available >= qty >= 1) and
    /// has room.
    fn hold_lines(&mut self, lines: &[Line]) -> HeldLines {
        let mut held = HeldLines::with_capacity(lines.len());
        for line in lines {
            let Some((sku, node)) = self.shared.stock.hold(&line.sku, &line.node, line.qty) else {
                panic!("checked counter vanished");
            };
            held.push(HeldLine {
                sku,
                node,
                qty: line.qty,
            });
        }
        held
    }

    pub(super) fn consume(&mut self, id: &str) -> Result<Outcome, ConsumeError> {
        let Some(state) = self.shared.reservations.read(id, |r| r.state) else {
            return Ok(Outcome::NotFound);
        };
        match state {
            ReservationState::Open => {
                self.finish(id, ReservationState::Consumed);
                Ok(Outcome::Consumed)
            }
            ReservationState::Consumed => Ok(Outcome::Consumed),
            ReservationState::Expired => Ok(Outcome::Expired),
            ReservationState::Released => Err(ConsumeError::Released { id: id.to_string() }),
        }
    }

    pub(super) fn release(&mut self, id: &str) -> Result<Outcome, ReleaseError> {
        let Some(state) = self.shared.reservations.read(id, |r| r.state) else {
            return Ok(Outcome::NotFound);
        };
        match state {
            ReservationState::Open => {
                self.finish(id, ReservationState::Released);
                Ok(Outcome::Released)
            }
            ReservationState::Released => Ok(Outcome::Released),
            ReservationState::Expired => Ok(Outcome::Expired),
            ReservationState::Consumed => Err(ReleaseError::Consumed { id: id.to_string() }),
        }
    }

    pub(super) fn extend(&mut self, c: &command::Extend) -> Result<ExtendAnswer, ExtendError> {
        let Some(found) = self.shared.reservations.get(c.reservation_id.as_str()) else {
            return Ok(ExtendAnswer {
                outcome: Outcome::NotFound,
                expires_at_ms: 0,
            });
        };
        match found.state {
            ReservationState::Open => {
                drop(found);
                let expiry = &mut self.expiry;
                let expires_at_ms = self.now_ms.saturating_add(c.ttl_ms);
                let changed = self.shared.reservations.update(&c.reservation_id, |r| {
                    let was_present = expiry.remove(&TimedId::new(r.expires_at_ms, r.id.clone()));
                    assert!(
                        was_present,
                        "open reservation missing from the expiry index"
                    );
                    r.expires_at_ms = expires_at_ms;
                    expiry.insert(TimedId::new(r.expires_at_ms, r.id.clone()));
                });
                assert!(changed.is_some(), "a found reservation vanished");
                Ok(ExtendAnswer {
                    outcome: Outcome::Reserved,
                    expires_at_ms,
                })
            }
            ReservationState::Expired => Ok(ExtendAnswer {
                outcome: Outcome::Expired,
                expires_at_ms: found.expires_at_ms,
            }),
            ReservationState::Consumed => Err(ExtendError::Consumed {
                id: c.reservation_id.clone(),
            }),
            ReservationState::Released => Err(ExtendError::Released {
                id: c.reservation_id.clone(),
            }),
        }
    }

    /// Ends an open reservation: its stock is consumed (on_hand and reserved
    /// drop) or returned (reserved drops).
    fn finish(&mut self, id: &str, end: ReservationState) {
        let stock = &self.shared.stock;
        let expiry = &mut self.expiry;
        let finished = &mut self.finished;
        let now_ms = self.now_ms;
        let changed = self.shared.reservations.update(id, |r| {
            assert_eq!(
                r.state,
                ReservationState::Open,
                "finishing a closed reservation"
            );
            for line in &r.lines {
                let changed = stock.update_existing(&line.sku, &line.node, |level| {
                    level.reserved -= line.qty;
                    assert!(level.reserved >= 0, "reserved went negative");
                    if end == ReservationState::Consumed {
                        level.on_hand -= line.qty;
                    }
                });
                assert!(changed.is_some(), "reservation holds a missing counter");
            }
            let was_present = expiry.remove(&TimedId::new(r.expires_at_ms, r.id.clone()));
            assert!(
                was_present,
                "open reservation missing from the expiry index"
            );
            r.state = end;
            r.finished_at_ms = now_ms;
            finished.insert(TimedId::new(now_ms, r.id.clone()));
        });
        assert!(changed.is_some(), "finishing unknown reservation {id:?}");
        assert!(self.open_count > 0, "open count underflow");
        self.open_count -= 1;
    }

    pub(super) fn expire_due(&mut self) {
        loop {
            let id = match self.expiry.first() {
                Some(t) if t.at_ms <= self.now_ms => t.id.clone(),
                _ => return,
            };
            self.finish(&id, ReservationState::Expired);
        }
    }
}

fn outcome_of(state: ReservationState) -> Outcome {
    match state {
        ReservationState::Open => Outcome::Reserved,
        ReservationState::Consumed => Outcome::Consumed,
        ReservationState::Released => Outcome::Released,
        ReservationState::Expired => Outcome::Expired,
    }
}
