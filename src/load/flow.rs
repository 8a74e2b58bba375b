//! One client of the harness as a state machine with no I/O: it begins a
//! business operation of the mix (a checkout, a sale, a count...), says
//! which call to send, and is handed each answer back to learn the next
//! call, until the operation is done. What it was told goes into the
//! [`Ledger`] (for the verification) and [`Stats`] (for the report); a call
//! whose outcome it could not learn is kept as [`Unknown`], to be retried
//! with its id after the run.
//!
//! Two drivers carry the calls (`drive.rs`): one awaits each unary call in
//! turn; the other keeps many clients' calls in flight on one `Stream` call
//! and hands each answer to its client by id, all in one task, with no
//! future, channel or lock per call. Both follow the same rules here, so a
//! unary run and a streamed run of the same mix do the same thing.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use smallvec::SmallVec;
use tonic::{Code, Status};

use super::ledger::{AccountCell, Ledger, Place};
use super::stats::Stats;
use super::workload::{hot_sku_name, node_name, sku_name, Chooser, Workload, HOT_NODE};
use super::{code_name, outcome_name};
use crate::proto::v1 as pb;
use pb::stream_request::Op;
use pb::stream_response::Result as R;

/// A call's answer as the `Stream` call carries it; a unary response is
/// wrapped the same way (see `conn::Conn::call`).
pub type Answer = Result<R, Status>;

/// A counter the workloads choose, by number: its name is written only
/// into the request (and into an [`Unknown`], on the rare failure).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    /// SKU number `sku` of the spread at node number `node`.
    Spread { sku: usize, node: usize },
    /// Flash-sale SKU number `hot`, at [`HOT_NODE`].
    Hot(usize),
}

impl Counter {
    fn line(self, qty: i64) -> pb::Line {
        match self {
            Counter::Spread { sku, node } => pb::Line {
                sku: sku_name(sku),
                node: node_name(node),
                qty,
            },
            Counter::Hot(hot) => pb::Line {
                sku: hot_sku_name(hot),
                node: HOT_NODE.into(),
                qty,
            },
        }
    }

    fn place(self, ledger: &Ledger) -> Place {
        match self {
            Counter::Spread { sku, node } => ledger.spread_account(sku, node),
            Counter::Hot(hot) => ledger.hot_account(hot),
        }
    }
}

/// A reservation's lines as the client keeps them: counter and quantity
/// (a checkout has at most 5).
pub type Held = SmallVec<[(Counter, i64); 5]>;

fn lines_of(held: &Held) -> Vec<pb::Line> {
    held.iter().map(|(c, qty)| c.line(*qty)).collect()
}

/// What a reserved hold becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Then {
    Consume,
    Release,
    /// Left open until it expires.
    Abandon,
}

/// A call whose outcome is not known yet (a timeout, an election, a closed
/// stream): retried with the same id after the run.
#[derive(Debug, Clone)]
pub enum Unknown {
    Reserve(pb::ReserveRequest),
    Commit(String, Vec<pb::Line>),
    Release(String, Vec<pb::Line>),
    Sell(pb::SellRequest),
    Adjust(pb::AdjustRequest),
}

/// The call a client waits on, and what it needs to take the answer.
#[derive(Debug)]
pub enum Flow {
    Reserve {
        id: String,
        held: Held,
        then: Then,
    },
    Consume {
        id: String,
        held: Held,
    },
    Release {
        id: String,
        held: Held,
    },
    Sell {
        request: pb::SellRequest,
        place: Place,
    },
    Browse {
        local: bool,
    },
    Adjust {
        request: pb::AdjustRequest,
    },
    /// A cycle count's read of the current level, before its set.
    CountRead {
        sku: String,
        node: String,
    },
    CountSet,
}

impl Flow {
    /// The name the call's latency and outcomes are recorded under.
    fn call(&self) -> &'static str {
        match self {
            Flow::Reserve { .. } => "reserve",
            Flow::Consume { .. } => "commit",
            Flow::Release { .. } => "release",
            Flow::Sell { .. } => "sell",
            Flow::Browse { local: true } => "availability_local",
            Flow::Browse { local: false } | Flow::CountRead { .. } => "availability_linearizable",
            Flow::Adjust { .. } => "adjust",
            Flow::CountSet => "set_on_hand",
        }
    }
}

/// Calls and errors over all clients, for the progress line.
#[derive(Debug, Default)]
pub struct Tally {
    pub calls: AtomicU64,
    pub errors: AtomicU64,
}

/// Most calls with an unknown outcome one client keeps for resolving.
pub const UNKNOWN_MAX: usize = 4_096;

/// One client: its random choices, the ids it makes, and the calls whose
/// outcome it does not know yet.
pub struct Client {
    chooser: Chooser,
    rng: rand::rngs::StdRng,
    ledger: Arc<Ledger>,
    ttl_ms: u64,
    /// Every id this client makes starts with this.
    name: String,
    next: u64,
    /// Calls whose outcome is not known yet, retried after the run.
    pub unknown: Vec<Unknown>,
}

impl Client {
    pub fn new(
        chooser: Chooser,
        rng: rand::rngs::StdRng,
        ledger: Arc<Ledger>,
        ttl_ms: u64,
        name: String,
    ) -> Client {
        Client {
            chooser,
            rng,
            ledger,
            ttl_ms,
            name,
            next: 0,
            unknown: Vec::new(),
        }
    }

    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    fn id(&mut self, kind: &str) -> String {
        self.next += 1;
        let mut id = String::with_capacity(self.name.len() + kind.len() + 20);
        id.push_str(&self.name);
        id.push_str(kind);
        let _ = write!(id, "{}", self.next);
        id
    }

    fn spread(&mut self) -> Counter {
        Counter::Spread {
            sku: self.chooser.sku(&mut self.rng),
            node: self.chooser.node(&mut self.rng),
        }
    }

    /// Begins the next business operation of the mix: its first call.
    pub fn begin(&mut self) -> (Flow, Op) {
        match self.chooser.workload(&mut self.rng) {
            Workload::Checkout => self.checkout(),
            Workload::Reserve => {
                let counter = self.spread();
                self.reserve(SmallVec::from_elem((counter, 1), 1), Then::Abandon)
            }
            Workload::FlashSale => self.flash_sale(),
            Workload::Pos => self.pos_sale(),
            Workload::Browse => self.browse(),
            Workload::Restock => self.restock(),
        }
    }

    /// A cart of one to five lines reserved, then mostly committed,
    /// sometimes released, sometimes left to expire.
    fn checkout(&mut self) -> (Flow, Op) {
        let count = self.rng.random_range(1..=5);
        let mut held = Held::new();
        for _ in 0..count {
            let counter = self.spread();
            held.push((counter, self.rng.random_range(1..=2)));
        }
        let roll = self.rng.random_range(0..100);
        let then = if roll < 70 {
            Then::Consume
        } else if roll < 85 {
            Then::Release
        } else {
            Then::Abandon
        };
        self.reserve(held, then)
    }

    /// One unit of a flash-sale SKU reserved, then mostly committed.
    fn flash_sale(&mut self) -> (Flow, Op) {
        let hot = self.rng.random_range(0..self.chooser.hot_skus);
        let roll = self.rng.random_range(0..100);
        let then = if roll < 80 {
            Then::Consume
        } else if roll < 90 {
            Then::Release
        } else {
            Then::Abandon
        };
        self.reserve(SmallVec::from_elem((Counter::Hot(hot), 1), 1), then)
    }

    /// A sale at a store's till: stock taken at once, no hold.
    fn pos_sale(&mut self) -> (Flow, Op) {
        let sku = self.chooser.sku(&mut self.rng);
        let node = self.chooser.node(&mut self.rng);
        let request = pb::SellRequest {
            txn_id: self.id("s"),
            sku: sku_name(sku),
            node: node_name(node),
            qty: self.rng.random_range(1..=2),
        };
        let place = self.ledger.spread_account(sku, node);
        (
            Flow::Sell {
                request: request.clone(),
                place,
            },
            Op::Sell(request),
        )
    }

    /// A shopper's availability read of one to three SKUs, mostly local.
    fn browse(&mut self) -> (Flow, Op) {
        let count = self.rng.random_range(1..=3);
        let skus = (0..count)
            .map(|_| sku_name(self.chooser.sku(&mut self.rng)))
            .collect();
        let local = self.rng.random_range(0..100) < 80;
        let consistency = if local {
            pb::Consistency::Local
        } else {
            pb::Consistency::Linearizable
        };
        (
            Flow::Browse { local },
            Op::GetAvailability(pb::GetAvailabilityRequest {
                skus,
                nodes: vec![],
                consistency: consistency as i32,
            }),
        )
    }

    /// Stock received (mostly), or a cycle count: a read of the level,
    /// then a set of what was counted.
    fn restock(&mut self) -> (Flow, Op) {
        let sku = sku_name(self.chooser.sku(&mut self.rng));
        let node = node_name(self.chooser.node(&mut self.rng));
        if self.rng.random_range(0..100) < 90 {
            let request = pb::AdjustRequest {
                txn_id: self.id("a"),
                sku,
                node,
                delta: self.rng.random_range(1..=20),
                reason: pb::AdjustReason::Receive as i32,
            };
            return (
                Flow::Adjust {
                    request: request.clone(),
                },
                Op::Adjust(request),
            );
        }
        let read = pb::GetAvailabilityRequest {
            skus: vec![sku.clone()],
            nodes: vec![node.clone()],
            consistency: pb::Consistency::Linearizable as i32,
        };
        (Flow::CountRead { sku, node }, Op::GetAvailability(read))
    }

    fn reserve(&mut self, held: Held, then: Then) -> (Flow, Op) {
        let id = self.id("r");
        let request = pb::ReserveRequest {
            reservation_id: id.clone(),
            lines: lines_of(&held),
            ttl_ms: self.ttl_ms,
        };
        (Flow::Reserve { id, held, then }, Op::Reserve(request))
    }

    /// Takes the answer to `flow`'s call, `latency` after it was due (its
    /// intended send time for a business operation's first call, its send
    /// time for the next ones), `second` seconds into the run. Records it
    /// in `stats`, `tally` and the ledger; returns the operation's next
    /// call, or None when the operation is done.
    pub fn answered(
        &mut self,
        flow: Flow,
        answer: Answer,
        latency: Duration,
        second: usize,
        stats: &mut Stats,
        tally: &Tally,
    ) -> Option<(Flow, Op)> {
        let call = flow.call();
        tally.calls.fetch_add(1, Ordering::Relaxed);
        let response = match answer {
            Ok(response) => response,
            Err(status) => {
                tally.errors.fetch_add(1, Ordering::Relaxed);
                stats.record(call, latency, Err(code_name(&status)), second);
                self.failed(flow);
                return None;
            }
        };
        let record = |stats: &mut Stats, outcome: i32| {
            stats.record(call, latency, Ok(outcome_name(outcome)), second)
        };
        match (flow, response) {
            (Flow::Reserve { id, held, then }, R::Reserve(r)) => {
                record(stats, r.outcome);
                self.after_reserve(r.outcome, id, held, then)
            }
            (Flow::Consume { id: _, held }, R::Commit(r)) => {
                record(stats, r.outcome);
                if r.outcome == pb::Outcome::Committed as i32 {
                    self.add_held(&held, |a| &a.committed);
                }
                None
            }
            (Flow::Release { .. }, R::Release(r)) => {
                record(stats, r.outcome);
                None
            }
            (Flow::Sell { request, place }, R::Sell(r)) => {
                record(stats, r.outcome);
                self.ledger.add_at(place, |a| &a.sold, request.qty);
                None
            }
            (Flow::Browse { .. }, R::GetAvailability(_)) => {
                stats.record(call, latency, Ok("OK"), second);
                None
            }
            (Flow::Adjust { request }, R::Adjust(r)) => {
                record(stats, r.outcome);
                self.ledger
                    .add(&request.sku, &request.node, |a| &a.received, request.delta);
                None
            }
            (Flow::CountRead { sku, node }, R::GetAvailability(r)) => {
                stats.record(call, latency, Ok("OK"), second);
                self.count_set(sku, node, &r)
            }
            (Flow::CountSet, R::SetOnHand(r)) => {
                record(stats, r.outcome);
                None
            }
            (flow, _) => {
                // Another operation's answer: a server bug. Its outcome is
                // as unknown as a timeout's.
                tally.errors.fetch_add(1, Ordering::Relaxed);
                let status = Status::internal("the server answered a different operation");
                stats.record(call, latency, Err(code_name(&status)), second);
                self.failed(flow);
                None
            }
        }
    }

    /// A reserve answered with `outcome`: once reserved, the hold is
    /// committed or released by the next call, or left open to expire (and
    /// counted as held).
    fn after_reserve(
        &mut self,
        outcome: i32,
        id: String,
        held: Held,
        then: Then,
    ) -> Option<(Flow, Op)> {
        if outcome != pb::Outcome::Reserved as i32 {
            return None;
        }
        match then {
            Then::Consume => {
                let request = pb::CommitRequest {
                    reservation_id: id.clone(),
                };
                Some((Flow::Consume { id, held }, Op::Commit(request)))
            }
            Then::Release => {
                let request = pb::ReleaseRequest {
                    reservation_id: id.clone(),
                };
                Some((Flow::Release { id, held }, Op::Release(request)))
            }
            Then::Abandon => {
                self.add_held(&held, |a| &a.held);
                None
            }
        }
    }

    /// Adds a reservation's quantities to the `field` of each counter.
    fn add_held(&self, held: &Held, field: impl Fn(&AccountCell) -> &AtomicI64) {
        for (counter, qty) in held {
            self.ledger
                .add_at(counter.place(&self.ledger), &field, *qty);
        }
    }

    /// A cycle count's set after its read `r` of `sku` at `node`: the
    /// level counted is what was there plus a few units found. None when
    /// the read named no level.
    fn count_set(
        &mut self,
        sku: String,
        node: String,
        r: &pb::GetAvailabilityResponse,
    ) -> Option<(Flow, Op)> {
        let current = r
            .skus
            .first()
            .and_then(|s| s.nodes.first())
            .map(|n| n.on_hand)?;
        let request = pb::SetOnHandRequest {
            txn_id: self.id("c"),
            on_hand: current.max(0) + self.rng.random_range(0..=5),
            expected_on_hand: Some(current),
            sku,
            node,
        };
        // Set before the call: should its outcome stay unknown, on_hand is
        // still not checked against the ledger.
        self.ledger
            .flag(&request.sku, &request.node, |a| &a.absolute);
        Some((Flow::CountSet, Op::SetOnHand(request)))
    }

    /// A call of `flow` got no answer it could use: unless it was a read,
    /// whether it took effect is unknown, and it is kept for a retry.
    fn failed(&mut self, flow: Flow) {
        let item = match flow {
            Flow::Reserve { id, held, then: _ } => Unknown::Reserve(pb::ReserveRequest {
                reservation_id: id,
                lines: lines_of(&held),
                ttl_ms: self.ttl_ms,
            }),
            Flow::Consume { id, held } => Unknown::Commit(id, lines_of(&held)),
            Flow::Release { id, held } => Unknown::Release(id, lines_of(&held)),
            Flow::Sell { request, .. } => Unknown::Sell(request),
            Flow::Adjust { request } => Unknown::Adjust(request),
            // Reads change nothing; a count's set flagged its counter
            // absolute before it was sent.
            Flow::Browse { .. } | Flow::CountRead { .. } | Flow::CountSet => return,
        };
        self.remember(item);
    }

    /// Keeps a call whose outcome is unknown, up to [`UNKNOWN_MAX`] of
    /// them: beyond that (a dead server fails every call at once) its
    /// counters are marked uncertain straight away, so memory and the time
    /// spent resolving stay bounded.
    fn remember(&mut self, item: Unknown) {
        if self.unknown.len() >= UNKNOWN_MAX {
            self.flag_uncertain(&item);
            return;
        }
        self.unknown.push(item);
    }

    /// Marks the counters a call touched as uncertain: the verification
    /// cannot know whether it took effect.
    pub fn flag_uncertain(&self, item: &Unknown) {
        let flag = |sku: &str, node: &str| self.ledger.flag(sku, node, |a| &a.uncertain);
        match item {
            Unknown::Reserve(r) => r.lines.iter().for_each(|l| flag(&l.sku, &l.node)),
            Unknown::Commit(_, lines) | Unknown::Release(_, lines) => {
                lines.iter().for_each(|l| flag(&l.sku, &l.node))
            }
            Unknown::Sell(r) => flag(&r.sku, &r.node),
            Unknown::Adjust(r) => flag(&r.sku, &r.node),
        }
    }
}

/// True for an answer that says the server may be gone: the client then
/// looks for the leader again (see `drive.rs`).
pub fn is_unavailable(answer: &Answer) -> bool {
    matches!(answer, Err(status) if status.code() == Code::Unavailable)
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;
    use crate::load::workload::{node_name, sku_name};

    /// A client of `mix` over 10 SKUs at 2 nodes (and 2 flash-sale SKUs),
    /// every counter in its ledger.
    fn client(mix: Vec<(Workload, u32)>) -> Client {
        let mut keys = Vec::new();
        for s in 0..10 {
            for n in 0..2 {
                keys.push((sku_name(s), node_name(n)));
            }
        }
        for h in 0..2 {
            keys.push((hot_sku_name(h), HOT_NODE.to_string()));
        }
        let ledger = Arc::new(Ledger::new(&keys, 10, 2, 2));
        let chooser = Chooser::new(mix, 10, 2, 2, 1.0).expect("a valid mix");
        Client::new(
            chooser,
            rand::rngs::StdRng::seed_from_u64(7),
            ledger,
            60_000,
            "t-w0-".into(),
        )
    }

    fn held(client: &Client, line: &pb::Line) -> i64 {
        let place = client
            .ledger
            .place(&line.sku, &line.node)
            .expect("a counter of the run");
        client.ledger.accounts[place].read().held
    }

    fn committed(client: &Client, line: &pb::Line) -> i64 {
        let place = client
            .ledger
            .place(&line.sku, &line.node)
            .expect("a counter of the run");
        client.ledger.accounts[place].read().committed
    }

    fn answer_of(client: &mut Client, flow: Flow, answer: Answer) -> Option<(Flow, Op)> {
        let mut stats = Stats::default();
        let tally = Tally::default();
        let next = client.answered(
            flow,
            answer,
            Duration::from_millis(1),
            0,
            &mut stats,
            &tally,
        );
        assert_eq!(tally.calls.load(Ordering::Relaxed), 1);
        assert_eq!(stats.calls(), 1);
        next
    }

    fn reserved() -> Answer {
        Ok(R::Reserve(pb::ReserveResponse {
            outcome: pb::Outcome::Reserved as i32,
            ..Default::default()
        }))
    }

    #[test]
    fn a_checkout_commits_releases_or_abandons_what_it_reserved() {
        let mut c = client(vec![(Workload::Checkout, 1)]);
        let (mut commits, mut releases, mut abandons) = (0, 0, 0);
        for _ in 0..200 {
            let (flow, op) = c.begin();
            let Op::Reserve(request) = op else {
                panic!("a checkout begins with a reserve: {op:?}");
            };
            assert!((1..=5).contains(&request.lines.len()));
            assert_eq!(request.ttl_ms, 60_000);
            let before: Vec<(i64, i64)> = request
                .lines
                .iter()
                .map(|l| (held(&c, l), committed(&c, l)))
                .collect();
            match answer_of(&mut c, flow, reserved()) {
                Some((flow, Op::Commit(commit))) => {
                    commits += 1;
                    assert_eq!(commit.reservation_id, request.reservation_id);
                    let done = Ok(R::Commit(pb::CommitResponse {
                        outcome: pb::Outcome::Committed as i32,
                    }));
                    assert!(answer_of(&mut c, flow, done).is_none());
                    // Each counter's committed grows by its lines' units
                    // (two lines may name the same counter); held does not.
                    let mut units: std::collections::HashMap<(&str, &str), (i64, i64)> =
                        std::collections::HashMap::new();
                    for (line, (_, was)) in request.lines.iter().zip(&before) {
                        let entry = units
                            .entry((line.sku.as_str(), line.node.as_str()))
                            .or_insert((*was, 0));
                        entry.1 += line.qty;
                    }
                    for (line, (h, _)) in request.lines.iter().zip(&before) {
                        assert_eq!(held(&c, line), *h);
                        let (was, qty) = units[&(line.sku.as_str(), line.node.as_str())];
                        assert_eq!(committed(&c, line), was + qty);
                    }
                }
                Some((flow, Op::Release(release))) => {
                    releases += 1;
                    assert_eq!(release.reservation_id, request.reservation_id);
                    let done = Ok(R::Release(pb::ReleaseResponse {
                        outcome: pb::Outcome::Released as i32,
                    }));
                    assert!(answer_of(&mut c, flow, done).is_none());
                    for (line, (h, k)) in request.lines.iter().zip(&before) {
                        assert_eq!((held(&c, line), committed(&c, line)), (*h, *k));
                    }
                }
                None => {
                    abandons += 1;
                    // The hold stays: the ledger counts it as held.
                    let grew = request
                        .lines
                        .iter()
                        .zip(&before)
                        .all(|(l, (h, _))| held(&c, l) > *h);
                    assert!(grew, "an abandoned hold is counted as held");
                }
                Some((_, op)) => panic!("a reserve is followed by a commit or a release: {op:?}"),
            }
        }
        assert!(
            commits > 100 && releases > 10 && abandons > 10,
            "{commits} {releases} {abandons}"
        );
        assert!(c.unknown.is_empty());
    }

    #[test]
    fn a_refused_reserve_changes_nothing_and_ends_the_checkout() {
        let mut c = client(vec![(Workload::Reserve, 1)]);
        let (flow, op) = c.begin();
        let Op::Reserve(request) = op else {
            panic!("{op:?}");
        };
        let line = &request.lines[0];
        let short = Ok(R::Reserve(pb::ReserveResponse {
            outcome: pb::Outcome::InsufficientStock as i32,
            ..Default::default()
        }));
        assert!(answer_of(&mut c, flow, short).is_none());
        assert_eq!((held(&c, line), committed(&c, line)), (0, 0));
        assert!(c.unknown.is_empty());
    }

    #[test]
    fn a_call_without_an_answer_is_kept_for_its_retry_as_it_was_sent() {
        let mut c = client(vec![(Workload::Checkout, 1)]);
        let (flow, op) = c.begin();
        let Op::Reserve(sent) = op else {
            panic!("{op:?}");
        };
        let timeout = Err(Status::deadline_exceeded("no answer"));
        assert!(answer_of(&mut c, flow, timeout).is_none());
        let [Unknown::Reserve(kept)] = c.unknown.as_slice() else {
            panic!("{:?}", c.unknown);
        };
        assert_eq!(*kept, sent);
        // Nothing counted as held until the retry learns the outcome.
        for line in &sent.lines {
            assert_eq!(held(&c, line), 0);
        }
    }

    #[test]
    fn an_answer_of_another_kind_is_an_error_with_an_unknown_outcome() {
        let mut c = client(vec![(Workload::Pos, 1)]);
        let (flow, op) = c.begin();
        let Op::Sell(sent) = op else {
            panic!("{op:?}");
        };
        let mut stats = Stats::default();
        let tally = Tally::default();
        let next = c.answered(
            flow,
            reserved(),
            Duration::from_millis(1),
            0,
            &mut stats,
            &tally,
        );
        assert!(next.is_none());
        assert_eq!(tally.errors.load(Ordering::Relaxed), 1);
        assert_eq!(stats.errors.get("INTERNAL"), Some(&1));
        let [Unknown::Sell(kept)] = c.unknown.as_slice() else {
            panic!("{:?}", c.unknown);
        };
        assert_eq!(*kept, sent);
    }

    #[test]
    fn a_count_sets_on_hand_against_the_level_it_read() {
        let mut c = client(vec![(Workload::Restock, 1)]);
        // Restock reads first one time in ten; draw until it does.
        let (flow, read) = loop {
            let (flow, op) = c.begin();
            if let Op::GetAvailability(read) = op {
                break (flow, read);
            }
        };
        assert_eq!(read.consistency, pb::Consistency::Linearizable as i32);
        let (sku, node) = (read.skus[0].clone(), read.nodes[0].clone());
        let level = Ok(R::GetAvailability(pb::GetAvailabilityResponse {
            skus: vec![pb::SkuAvailability {
                sku: sku.clone(),
                total_available: 40,
                nodes: vec![pb::NodeAvailability {
                    node: node.clone(),
                    on_hand: 40,
                    ..Default::default()
                }],
            }],
            applied_index: 1,
        }));
        let Some((flow, Op::SetOnHand(set))) = answer_of(&mut c, flow, level) else {
            panic!("a count sets on hand after reading it");
        };
        assert_eq!(
            (set.sku.as_str(), set.node.as_str()),
            (sku.as_str(), node.as_str())
        );
        assert_eq!(set.expected_on_hand, Some(40));
        assert!((40..=45).contains(&set.on_hand));
        let place = c.ledger.place(&sku, &node).expect("a counter of the run");
        assert!(
            c.ledger.accounts[place].read().absolute,
            "flagged before it is sent"
        );
        let applied = Ok(R::SetOnHand(pb::SetOnHandResponse {
            outcome: pb::Outcome::Applied as i32,
            ..Default::default()
        }));
        assert!(answer_of(&mut c, flow, applied).is_none());
    }
}
