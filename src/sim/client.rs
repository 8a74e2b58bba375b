//! Simulated clients: they issue the whole API one operation at a time, and
//! retry an operation with the same id (on another node) after a timeout or
//! a refusal, as real OMS and POS clients do.

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Zipf};

use super::checker::Checker;
use crate::inventory::command::{
    Adjust, AdjustReason, Extend, Line, Reserve, Sell, SetOnHand, SetSafetyStock,
};
use crate::inventory::{Applied, Command, Outcome, Shared, StockLevel};

/// How long a client waits for one attempt before retrying elsewhere.
const ATTEMPT_TIMEOUT_MS: u64 = 400;
const RETRY_BACKOFF_MS: u64 = 20;

#[derive(Debug, Clone)]
pub enum OpKind {
    Write(Command),
    Read {
        counters: Vec<(String, String)>,
        linearizable: bool,
    },
}

#[derive(Debug, Clone)]
struct Op {
    id: u64,
    kind: OpKind,
    invoked_ms: u64,
    in_flight: bool,
    deadline_ms: u64,
    next_attempt_ms: u64,
    hint: Option<u64>,
    attempts: u32,
}

pub struct Client {
    pub index: usize,
    pub budget: usize,
    pub finished: usize,
    rng: StdRng,
    skus: usize,
    locations: usize,
    current: Option<Op>,
    next_id: u64,
    /// Reservations this client made and believes open.
    open: Vec<String>,
    /// The last on_hand this client read per counter, for compare-and-set.
    seen: BTreeMap<(String, String), i64>,
    seeded: bool,
    /// SKU popularity, when skewed.
    zipf: Option<Zipf<f64>>,
}

fn sku(i: usize) -> String {
    format!("S{i}")
}

fn location(i: usize) -> String {
    format!("N{i}")
}

impl Client {
    pub fn new(
        index: usize,
        budget: usize,
        skus: usize,
        locations: usize,
        zipf: Option<f64>,
        seed: u64,
    ) -> Client {
        Client {
            index,
            budget,
            finished: 0,
            rng: StdRng::seed_from_u64(seed),
            skus,
            locations,
            current: None,
            next_id: 0,
            open: Vec::new(),
            seen: BTreeMap::new(),
            // Client 0 stocks every counter first.
            seeded: index != 0,
            zipf: zipf.and_then(|s| Zipf::new(skus as f64, s).ok()),
        }
    }

    pub fn done(&self) -> bool {
        self.current.is_none() && self.finished >= self.budget
    }

    pub fn describe_pending(&self) -> Option<String> {
        let op = self.current.as_ref()?;
        Some(format!(
            "client {} op {} ({:?}) invoked at {} ms, {} attempts",
            self.index, op.id, op.kind, op.invoked_ms, op.attempts
        ))
    }

    fn counter(&mut self) -> (String, String) {
        let index = match &self.zipf {
            Some(zipf) => (zipf.sample(&mut self.rng) as usize).clamp(1, self.skus) - 1,
            None => self.rng.random_range(0..self.skus),
        };
        (
            sku(index),
            location(self.rng.random_range(0..self.locations)),
        )
    }

    /// Draws the client's next operation. Client 0 first stocks every
    /// counter, one SetOnHand each; then each operation is drawn by weight.
    fn new_op(&mut self) -> OpKind {
        self.next_id += 1;
        let n = self.next_id;
        if !self.seeded {
            return self.stock_next_counter(n);
        }
        let roll = self.rng.random_range(0..100);
        if (35..60).contains(&roll) && !self.open.is_empty() {
            return self.finish_or_extend_hold(roll);
        }
        match roll {
            0..=59 => self.reserve(n),
            60..=69 => self.sell(n),
            70..=77 => self.receive(n),
            78..=82 => self.set_on_hand(n),
            83..=84 => self.set_safety_stock(),
            _ => self.read(),
        }
    }

    /// Op `n` of the first pass: sets the next counter's on_hand.
    fn stock_next_counter(&mut self, n: u64) -> OpKind {
        let k = (n - 1) as usize;
        if k + 1 >= self.skus * self.locations {
            self.seeded = true;
        }
        let (s, l) = (sku(k / self.locations), location(k % self.locations));
        let on_hand = self.rng.random_range(3..=20);
        OpKind::Write(Command::SetOnHand(
            SetOnHand::new(format!("c{}-t{n}", self.index), s, l, on_hand, None)
                .expect("a valid generated command"),
        ))
    }

    /// Consumes, releases or extends one of the holds this client believes
    /// open, by `roll` (35 to 59).
    fn finish_or_extend_hold(&mut self, roll: i32) -> OpKind {
        let id = self.open[self.rng.random_range(0..self.open.len())].clone();
        OpKind::Write(match roll {
            35..=49 => Command::Consume { reservation_id: id },
            50..=56 => Command::Release { reservation_id: id },
            _ => Command::Extend(
                Extend::new(id, self.rng.random_range(100..=3_000))
                    .expect("a valid generated command"),
            ),
        })
    }

    /// A hold of 1 to 3 lines.
    fn reserve(&mut self, n: u64) -> OpKind {
        let count = self.rng.random_range(1..=3);
        let mut lines = Vec::new();
        for _ in 0..count {
            let (s, l) = self.counter();
            lines.push(Line {
                sku: s,
                node: l,
                qty: self.rng.random_range(1..=3),
            });
        }
        let ttl = self.rng.random_range(100..=5_000);
        OpKind::Write(Command::Reserve(
            Reserve::new(format!("c{}-r{n}", self.index), lines, ttl)
                .expect("a valid generated command"),
        ))
    }

    /// A sale at the counter, without a hold.
    fn sell(&mut self, n: u64) -> OpKind {
        let (s, l) = self.counter();
        let qty = self.rng.random_range(1..=2);
        OpKind::Write(Command::Sell(
            Sell::new(format!("c{}-t{n}", self.index), s, l, qty)
                .expect("a valid generated command"),
        ))
    }

    /// Goods received.
    fn receive(&mut self, n: u64) -> OpKind {
        let (s, l) = self.counter();
        let delta = self.rng.random_range(1..=10);
        OpKind::Write(Command::Adjust(
            Adjust::new(
                format!("c{}-t{n}", self.index),
                s,
                l,
                delta,
                AdjustReason::Receive,
            )
            .expect("a valid generated command"),
        ))
    }

    /// A stock count; half the time a compare-and-set against the last
    /// on_hand this client read.
    fn set_on_hand(&mut self, n: u64) -> OpKind {
        let (s, l) = self.counter();
        let expected = if self.rng.random_bool(0.5) {
            self.seen.get(&(s.clone(), l.clone())).copied()
        } else {
            None
        };
        let on_hand = self.rng.random_range(0..=20);
        OpKind::Write(Command::SetOnHand(
            SetOnHand::new(format!("c{}-t{n}", self.index), s, l, on_hand, expected)
                .expect("a valid generated command"),
        ))
    }

    fn set_safety_stock(&mut self) -> OpKind {
        let (s, l) = self.counter();
        let safety = self.rng.random_range(0..=3);
        OpKind::Write(Command::SetSafetyStock(
            SetSafetyStock::new(s, l, safety).expect("a valid generated command"),
        ))
    }

    /// A read of 1 to 3 counters, linearizable 60% of the time.
    fn read(&mut self) -> OpKind {
        let mut counters = Vec::new();
        for _ in 0..self.rng.random_range(1..=3) {
            counters.push(self.counter());
        }
        OpKind::Read {
            counters,
            linearizable: self.rng.random_bool(0.6),
        }
    }

    /// The next attempt to send, if one is due: (op id, what, where).
    pub fn next_attempt(&mut self, now_ms: u64) -> Option<(u64, OpKind, Option<u64>)> {
        if self.current.is_none() {
            if self.finished >= self.budget {
                return None;
            }
            let kind = self.new_op();
            self.current = Some(Op {
                id: self.next_id,
                kind,
                invoked_ms: now_ms,
                in_flight: false,
                deadline_ms: 0,
                next_attempt_ms: now_ms,
                hint: None,
                attempts: 0,
            });
        }
        let op = self.current.as_mut()?;
        if op.in_flight && now_ms < op.deadline_ms {
            return None;
        }
        if !op.in_flight && now_ms < op.next_attempt_ms {
            return None;
        }
        op.in_flight = true;
        op.deadline_ms = now_ms + ATTEMPT_TIMEOUT_MS;
        op.attempts += 1;
        let hint = op.hint.take();
        Some((op.id, op.kind.clone(), hint))
    }

    /// The command of write `op`, while it is this client's current one.
    pub fn write_command(&self, op: u64) -> Option<&Command> {
        let current = self.current.as_ref()?;
        if current.id != op {
            return None;
        }
        match &current.kind {
            OpKind::Write(command) => Some(command),
            OpKind::Read { .. } => None,
        }
    }

    pub fn attempt_failed(&mut self, op: u64, now_ms: u64, hint: Option<u64>) {
        let Some(current) = self.current.as_mut() else {
            return;
        };
        if current.id != op {
            return;
        }
        current.in_flight = false;
        current.hint = hint;
        current.next_attempt_ms = now_ms + if hint.is_some() { 1 } else { RETRY_BACKOFF_MS };
    }

    pub fn write_answered(
        &mut self,
        op: u64,
        now_ms: u64,
        answer: Applied,
        at: (u64, usize),
        checker: &mut Checker,
    ) {
        let Some(current) = self.current.as_ref() else {
            return;
        };
        if current.id != op {
            return;
        }
        let OpKind::Write(command) = current.kind.clone() else {
            return;
        };
        match (&command, &answer) {
            (Command::Reserve(r), Applied::Reserve(Ok(a)))
                if a.outcome == Outcome::Reserved && !self.open.contains(&r.reservation_id) =>
            {
                self.open.push(r.reservation_id.clone());
            }
            (Command::Consume { reservation_id }, _) | (Command::Release { reservation_id }, _) => {
                self.open.retain(|id| id != reservation_id);
            }
            (Command::Extend(e), Applied::Extend(Ok(a))) if a.outcome != Outcome::Reserved => {
                self.open.retain(|id| *id != e.reservation_id);
            }
            (_, Applied::StockChange(Ok(s))) => {
                if let Command::Sell(c) = &command {
                    self.seen
                        .insert((c.sku.clone(), c.node.clone()), s.level.on_hand);
                }
            }
            _ => {}
        }
        checker.record_write(self.index, command, current.invoked_ms, now_ms, answer, at);
        self.current = None;
        self.finished += 1;
    }

    pub fn read_answered(&mut self, op: u64, now_ms: u64, shared: &Shared, checker: &mut Checker) {
        let Some(current) = self.current.as_ref() else {
            return;
        };
        if current.id != op {
            return;
        }
        let OpKind::Read {
            counters,
            linearizable,
        } = current.kind.clone()
        else {
            return;
        };
        let applied_index = shared.applied_index();
        let mut values: Vec<(String, String, StockLevel)> = Vec::new();
        for (s, l) in counters {
            let level = shared.stock.level(&s, &l).unwrap_or_default();
            self.seen.insert((s.clone(), l.clone()), level.on_hand);
            values.push((s, l, level));
        }
        checker.record_read(
            current.invoked_ms,
            now_ms,
            applied_index,
            values,
            linearizable,
        );
        self.current = None;
        self.finished += 1;
    }
}
