//! The state machine's rules, one test each, and a property test that runs
//! random operation sequences against the simulator's independent model
//! ([`crate::sim::model::Model`]) and checks every invariant.

use proptest::prelude::*;

use super::command::{Extend, Reserve, Sell, SetOnHand, SetSafetyStock};
use super::*;
use crate::limits::COUNTER_MAX;

/// An inventory of `counters` counters, "t{n}" of SKU "s{n}" at "dc" with
/// n units each, set in one batch: with a few thousand, its image has
/// several chunks. Shared by the storage and replication tests.
pub(crate) fn inventory_of(counters: usize) -> Inventory {
    let mut commands = Vec::new();
    for n in 0..counters {
        let set = SetOnHand::new(
            format!("t{n}"),
            format!("s{n}"),
            "dc".into(),
            n as i64,
            None,
        );
        commands.push(Command::SetOnHand(set.unwrap()));
    }
    let mut inventory = Inventory::new();
    inventory.apply_batch(
        1,
        &Batch {
            stamp_ms: 1_000,
            id_retention_ms: 3_600_000,
            id_retained_max: 1_000_000,
            commands,
        },
    );
    inventory
}

const HOUR_MS: u64 = 3_600_000;

/// Applies batches with increasing indexes and a settable clock.
struct Machine {
    inventory: Inventory,
    index: u64,
    retention_ms: u64,
    retained_max: u64,
}

impl Machine {
    fn new() -> Machine {
        Machine {
            inventory: Inventory::new(),
            index: 0,
            retention_ms: HOUR_MS,
            retained_max: 1_000_000,
        }
    }

    fn at(&mut self, stamp_ms: u64, commands: Vec<Command>) -> Vec<Applied> {
        self.index += 1;
        let answers = self.inventory.apply_batch(
            self.index,
            &Batch {
                stamp_ms,
                id_retention_ms: self.retention_ms,
                id_retained_max: self.retained_max,
                commands,
            },
        );
        self.inventory.check_invariants().unwrap();
        answers
    }

    fn one(&mut self, stamp_ms: u64, command: Command) -> Applied {
        self.at(stamp_ms, vec![command]).remove(0)
    }

    fn level(&self, sku: &str, node: &str) -> StockLevel {
        self.inventory.stock().level(sku, node).unwrap_or_default()
    }
}

fn set(txn: &str, sku: &str, node: &str, on_hand: i64) -> Command {
    Command::SetOnHand(SetOnHand::new(txn.into(), sku.into(), node.into(), on_hand, None).unwrap())
}

fn cas(txn: &str, sku: &str, node: &str, on_hand: i64, expected: i64) -> Command {
    Command::SetOnHand(
        SetOnHand::new(txn.into(), sku.into(), node.into(), on_hand, Some(expected)).unwrap(),
    )
}

fn reserve(id: &str, lines: &[(&str, &str, i64)], ttl_ms: u64) -> Command {
    let lines = lines
        .iter()
        .map(|(s, n, q)| Line {
            sku: (*s).into(),
            node: (*n).into(),
            qty: *q,
        })
        .collect();
    Command::Reserve(Reserve::new(id.into(), lines, ttl_ms).unwrap())
}

fn consume(id: &str) -> Command {
    Command::Consume {
        reservation_id: id.into(),
    }
}

fn release(id: &str) -> Command {
    Command::Release {
        reservation_id: id.into(),
    }
}

fn extend(id: &str, ttl_ms: u64) -> Command {
    Command::Extend(Extend::new(id.into(), ttl_ms).unwrap())
}

fn sell(txn: &str, sku: &str, node: &str, qty: i64) -> Command {
    Command::Sell(Sell::new(txn.into(), sku.into(), node.into(), qty).unwrap())
}

fn adjust(txn: &str, sku: &str, node: &str, delta: i64, reason: AdjustReason) -> Command {
    Command::Adjust(
        command::Adjust::new(txn.into(), sku.into(), node.into(), delta, reason).unwrap(),
    )
}

fn reserved(answer: &Applied) -> &ReserveAnswer {
    match answer {
        Applied::Reserve(Ok(a)) => a,
        other => panic!("not a reserve answer: {other:?}"),
    }
}

fn stock_level(answer: &Applied) -> StockLevel {
    match answer {
        Applied::StockChange(Ok(a)) | Applied::SetSafetyStock(Ok(a)) => a.level,
        other => panic!("not a stock answer: {other:?}"),
    }
}

#[test]
fn available_is_on_hand_minus_reserved_minus_safety_stock() {
    let mut m = Machine::new();
    m.one(1, set("t1", "s", "n", 10));
    m.one(2, reserve("o", &[("s", "n", 3)], 1_000));
    let level = stock_level(&m.one(
        3,
        Command::SetSafetyStock(SetSafetyStock::new("s".into(), "n".into(), 2).unwrap()),
    ));
    assert_eq!(
        level,
        StockLevel {
            on_hand: 10,
            reserved: 3,
            safety_stock: 2
        }
    );
    assert_eq!(level.available(), 5);
    // Safety stock is kept back from reservations.
    let answer = m.one(4, reserve("p", &[("s", "n", 6)], 1_000));
    assert_eq!(reserved(&answer).outcome, Outcome::InsufficientStock);
    assert_eq!(reserved(&answer).shortages[0].available, 5);
}

#[test]
fn a_reserve_is_all_or_nothing_and_lists_every_shortage() {
    let mut m = Machine::new();
    m.at(1, vec![set("t1", "a", "n", 5), set("t2", "b", "n", 1)]);
    let before = m.inventory.digest();
    // Same stamp, so the clock does not move: the digest must not either.
    let answer = m.one(
        1,
        reserve("o", &[("a", "n", 2), ("b", "n", 2), ("c", "n", 1)], 1_000),
    );
    let a = reserved(&answer);
    assert_eq!(a.outcome, Outcome::InsufficientStock);
    assert_eq!(a.expires_at_ms, 0);
    let short: Vec<(&str, i64, i64)> = a
        .shortages
        .iter()
        .map(|s| (s.sku.as_str(), s.requested, s.available))
        .collect();
    assert_eq!(short, vec![("b", 2, 1), ("c", 1, 0)]);
    // Nothing changed, not even a record of the id or an empty counter.
    assert_eq!(m.level("a", "n").reserved, 0);
    assert!(m.inventory.reservation("o").is_none());
    assert!(m.inventory.stock().level("c", "n").is_none());
    assert_eq!(m.inventory.digest(), before);
}

#[test]
fn a_refused_reserve_can_be_retried_with_the_same_id_after_a_restock() {
    let mut m = Machine::new();
    m.one(1, set("t1", "s", "n", 1));
    assert_eq!(
        reserved(&m.one(2, reserve("o", &[("s", "n", 2)], 1_000))).outcome,
        Outcome::InsufficientStock
    );
    m.one(3, adjust("t2", "s", "n", 5, AdjustReason::Receive));
    assert_eq!(
        reserved(&m.one(4, reserve("o", &[("s", "n", 2)], 1_000))).outcome,
        Outcome::Reserved
    );
    assert_eq!(m.level("s", "n").reserved, 2);
}

#[test]
fn bundle_lines_are_summed_before_the_check() {
    let mut m = Machine::new();
    m.one(1, set("t1", "s", "n", 3));
    // 2 + 2 > 3 even though each line alone fits.
    let answer = m.one(2, reserve("o", &[("s", "n", 2), ("s", "n", 2)], 1_000));
    assert_eq!(reserved(&answer).outcome, Outcome::InsufficientStock);
    assert_eq!(reserved(&answer).shortages[0].requested, 4);
    let answer = m.one(3, reserve("p", &[("s", "n", 1), ("s", "n", 2)], 1_000));
    assert_eq!(reserved(&answer).outcome, Outcome::Reserved);
    assert_eq!(m.level("s", "n").available(), 0);
}

#[test]
fn holds_expire_at_their_deadline_and_not_before() {
    let mut m = Machine::new();
    m.one(1_000, set("t1", "s", "n", 1));
    let a = m.one(1_000, reserve("o", &[("s", "n", 1)], 500));
    assert_eq!(reserved(&a).expires_at_ms, 1_500);
    assert_eq!(m.inventory.next_expiry_ms(), Some(1_500));
    m.at(1_499, vec![]);
    assert_eq!(
        m.inventory.reservation("o").unwrap().state,
        ReservationState::Open
    );
    assert_eq!(m.level("s", "n").reserved, 1);
    m.at(1_500, vec![]);
    let r = m.inventory.reservation("o").unwrap();
    assert_eq!(r.state, ReservationState::Expired);
    assert_eq!(r.finished_at_ms, 1_500);
    assert_eq!(m.level("s", "n").reserved, 0);
    assert_eq!(m.inventory.next_expiry_ms(), None);
    // Too late to commit; release says so too.
    assert_eq!(
        m.one(1_600, consume("o")),
        Applied::Consume(Ok(Outcome::Expired))
    );
    assert_eq!(
        m.one(1_600, release("o")),
        Applied::Release(Ok(Outcome::Expired))
    );
}

#[test]
fn time_never_runs_backwards() {
    let mut m = Machine::new();
    m.one(5_000, set("t1", "s", "n", 1));
    m.one(4_000, reserve("o", &[("s", "n", 1)], 100));
    assert_eq!(m.inventory.now_ms(), 5_000);
    assert_eq!(m.inventory.reservation("o").unwrap().expires_at_ms, 5_100);
    m.at(3_000, vec![]);
    assert_eq!(
        m.inventory.reservation("o").unwrap().state,
        ReservationState::Open
    );
}

#[test]
fn extend_moves_the_deadline_of_an_open_hold_only() {
    let mut m = Machine::new();
    m.one(0, set("t1", "s", "n", 3));
    m.one(0, reserve("o", &[("s", "n", 1)], 100));
    match m.one(50, extend("o", 1_000)) {
        Applied::Extend(Ok(a)) => {
            assert_eq!((a.outcome, a.expires_at_ms), (Outcome::Reserved, 1_050))
        }
        other => panic!("{other:?}"),
    }
    m.at(200, vec![]);
    assert_eq!(
        m.inventory.reservation("o").unwrap().state,
        ReservationState::Open
    );
    match m.one(0, extend("nope", 10)) {
        Applied::Extend(Ok(a)) => assert_eq!(a.outcome, Outcome::NotFound),
        other => panic!("{other:?}"),
    }
    m.one(300, consume("o"));
    assert!(matches!(
        m.one(300, extend("o", 10)),
        Applied::Extend(Err(ExtendError::Consumed { .. }))
    ));
    m.one(300, reserve("p", &[("s", "n", 1)], 10));
    m.one(300, release("p"));
    assert!(matches!(
        m.one(300, extend("p", 10)),
        Applied::Extend(Err(ExtendError::Released { .. }))
    ));
    m.one(300, reserve("q", &[("s", "n", 1)], 10));
    m.at(400, vec![]);
    match m.one(400, extend("q", 10)) {
        Applied::Extend(Ok(a)) => assert_eq!(a.outcome, Outcome::Expired),
        other => panic!("{other:?}"),
    }
}

#[test]
fn commit_consumes_stock_and_repeats_harmlessly() {
    let mut m = Machine::new();
    m.one(0, set("t1", "s", "n", 5));
    m.one(0, reserve("o", &[("s", "n", 2)], 1_000));
    assert_eq!(
        m.one(1, consume("o")),
        Applied::Consume(Ok(Outcome::Consumed))
    );
    assert_eq!(
        m.level("s", "n"),
        StockLevel {
            on_hand: 3,
            reserved: 0,
            safety_stock: 0
        }
    );
    assert_eq!(
        m.one(2, consume("o")),
        Applied::Consume(Ok(Outcome::Consumed))
    );
    assert_eq!(m.level("s", "n").on_hand, 3);
    assert_eq!(
        m.one(2, consume("nope")),
        Applied::Consume(Ok(Outcome::NotFound))
    );
    assert!(matches!(
        m.one(2, release("o")),
        Applied::Release(Err(ReleaseError::Consumed { .. }))
    ));
}

#[test]
fn release_returns_stock_and_repeats_harmlessly() {
    let mut m = Machine::new();
    m.one(0, set("t1", "s", "n", 5));
    m.one(0, reserve("o", &[("s", "n", 2)], 1_000));
    assert_eq!(
        m.one(1, release("o")),
        Applied::Release(Ok(Outcome::Released))
    );
    assert_eq!(
        m.level("s", "n"),
        StockLevel {
            on_hand: 5,
            reserved: 0,
            safety_stock: 0
        }
    );
    assert_eq!(
        m.one(2, release("o")),
        Applied::Release(Ok(Outcome::Released))
    );
    assert_eq!(
        m.one(2, release("nope")),
        Applied::Release(Ok(Outcome::NotFound))
    );
    assert!(matches!(
        m.one(2, consume("o")),
        Applied::Consume(Err(ConsumeError::Released { .. }))
    ));
}

#[test]
fn a_sale_is_never_refused_and_reports_the_shortfall() {
    let mut m = Machine::new();
    m.one(0, set("t1", "s", "n", 2));
    m.one(0, reserve("o", &[("s", "n", 2)], 1_000));
    let level = stock_level(&m.one(1, sell("pos1", "s", "n", 3)));
    assert_eq!(level.on_hand, -1);
    assert!(level.is_short());
    // A sale at a counter never seen before creates it.
    let level = stock_level(&m.one(1, sell("pos2", "x", "store", 1)));
    assert_eq!(level.on_hand, -1);
    // The open hold is still there, and can still be committed.
    assert_eq!(
        m.one(2, consume("o")),
        Applied::Consume(Ok(Outcome::Consumed))
    );
    assert_eq!(m.level("s", "n").on_hand, -3);
}

#[test]
fn adjust_and_set_on_hand_change_on_hand() {
    let mut m = Machine::new();
    assert_eq!(
        stock_level(&m.one(0, adjust("a1", "s", "n", 10, AdjustReason::Receive))).on_hand,
        10
    );
    assert_eq!(
        stock_level(&m.one(0, adjust("a2", "s", "n", -4, AdjustReason::Damage))).on_hand,
        6
    );
    assert_eq!(stock_level(&m.one(0, cas("c1", "s", "n", 9, 6))).on_hand, 9);
    // A stale compare-and-set says what the value is, and changes nothing.
    match m.one(0, cas("c2", "s", "n", 1, 6)) {
        Applied::StockChange(Err(StockChangeError::Stale {
            expected, actual, ..
        })) => assert_eq!((expected, actual), (6, 9)),
        other => panic!("{other:?}"),
    }
    assert_eq!(m.level("s", "n").on_hand, 9);
    // Not remembered: the same id with the right value works.
    assert_eq!(stock_level(&m.one(0, cas("c2", "s", "n", 1, 9))).on_hand, 1);
}

#[test]
fn counters_never_leave_their_range() {
    let mut m = Machine::new();
    m.one(0, set("t1", "s", "n", COUNTER_MAX));
    assert!(matches!(
        m.one(0, adjust("a1", "s", "n", 1, AdjustReason::Receive)),
        Applied::StockChange(Err(StockChangeError::OutOfRange { .. }))
    ));
    assert_eq!(m.level("s", "n").on_hand, COUNTER_MAX);
    m.one(0, set("t2", "s", "m", 0));
    for i in 0..1_000 {
        let _ = m.one(0, sell(&format!("p{i}"), "s", "m", crate::limits::QTY_MAX));
    }
    assert_eq!(m.level("s", "m").on_hand, -COUNTER_MAX);
    assert!(matches!(
        m.one(0, sell("last", "s", "m", 1)),
        Applied::StockChange(Err(StockChangeError::OutOfRange { .. }))
    ));
    assert_eq!(m.level("s", "m").on_hand, -COUNTER_MAX);
}

#[test]
fn a_repeated_reserve_reports_the_current_state() {
    let mut m = Machine::new();
    m.one(0, set("t1", "s", "n", 5));
    let first = m.one(0, reserve("o", &[("s", "n", 2)], 100));
    let again = m.one(10, reserve("o", &[("s", "n", 2)], 100));
    assert_eq!(first, again);
    assert_eq!(m.level("s", "n").reserved, 2);
    m.one(20, consume("o"));
    assert_eq!(
        reserved(&m.one(30, reserve("o", &[("s", "n", 2)], 100))).outcome,
        Outcome::Consumed
    );
    m.one(30, reserve("p", &[("s", "n", 1)], 100));
    m.one(30, release("p"));
    assert_eq!(
        reserved(&m.one(30, reserve("p", &[("s", "n", 1)], 100))).outcome,
        Outcome::Released
    );
    m.one(30, reserve("q", &[("s", "n", 1)], 10));
    m.at(50, vec![]);
    assert_eq!(
        reserved(&m.one(60, reserve("q", &[("s", "n", 1)], 10))).outcome,
        Outcome::Expired
    );
    assert_eq!(
        m.level("s", "n"),
        StockLevel {
            on_hand: 3,
            reserved: 0,
            safety_stock: 0
        }
    );
}

#[test]
fn an_id_reused_with_another_payload_is_refused() {
    let mut m = Machine::new();
    m.one(0, set("t1", "s", "n", 5));
    m.one(0, reserve("o", &[("s", "n", 2)], 100));
    assert!(matches!(
        m.one(0, reserve("o", &[("s", "n", 3)], 100)),
        Applied::Reserve(Err(ReserveError::IdReused { .. }))
    ));
    assert!(matches!(
        m.one(0, reserve("o", &[("s", "n", 2)], 200)),
        Applied::Reserve(Err(ReserveError::IdReused { .. }))
    ));
    let first = m.one(0, sell("t2", "s", "n", 1));
    m.one(0, adjust("t3", "s", "n", 4, AdjustReason::Receive));
    // The same sale again answers the first level, and sells nothing.
    assert_eq!(m.one(0, sell("t2", "s", "n", 1)), first);
    assert_eq!(m.level("s", "n").on_hand, 8);
    assert!(matches!(
        m.one(0, sell("t2", "s", "n", 2)),
        Applied::StockChange(Err(StockChangeError::IdReused { .. }))
    ));
    // Ids are one namespace across sell, adjust and set.
    assert!(matches!(
        m.one(0, adjust("t2", "s", "n", 1, AdjustReason::Receive)),
        Applied::StockChange(Err(StockChangeError::IdReused { .. }))
    ));
}

#[test]
fn ids_are_forgotten_after_the_retention_window() {
    let mut m = Machine::new();
    m.retention_ms = 1_000;
    m.one(0, set("t1", "s", "n", 5));
    m.one(0, reserve("o", &[("s", "n", 1)], 100));
    m.one(10, consume("o"));
    m.at(1_009, vec![]);
    assert!(m.inventory.reservation("o").is_some());
    m.at(1_010, vec![]);
    assert!(m.inventory.reservation("o").is_none());
    // The id now makes a new reservation.
    assert_eq!(
        reserved(&m.one(1_020, reserve("o", &[("s", "n", 1)], 100))).outcome,
        Outcome::Reserved
    );
    // A forgotten transaction id applies again.
    assert_eq!(
        stock_level(&m.one(2_000, sell("t1x", "s", "n", 1))).on_hand,
        3
    );
    m.at(4_000, vec![]);
    assert_eq!(
        stock_level(&m.one(4_000, sell("t1x", "s", "n", 1))).on_hand,
        2
    );
}

#[test]
fn the_oldest_ids_are_forgotten_beyond_the_retained_maximum() {
    let mut m = Machine::new();
    m.retained_max = 3;
    for i in 0..5 {
        m.one(i, sell(&format!("t{i}"), "s", "n", 1));
    }
    m.at(10, vec![]);
    assert_eq!(m.inventory.retained_count(), 3);
    // t0 and t1 are forgotten (applied again); t4 is remembered.
    assert_eq!(stock_level(&m.one(11, sell("t4", "s", "n", 1))).on_hand, -5);
    assert_eq!(stock_level(&m.one(12, sell("t0", "s", "n", 1))).on_hand, -6);
}

#[test]
fn snapshots_round_trip_and_refuse_damage() {
    let mut m = Machine::new();
    m.one(0, set("t1", "s", "n", 5));
    m.one(0, reserve("o", &[("s", "n", 2)], 1_000));
    m.one(1, reserve("p", &[("s", "n", 1)], 1_000));
    m.one(2, consume("p"));
    m.one(3, sell("t2", "s", "m", 4));
    let image = snapshot::write(&m.inventory);
    let mut copy = snapshot::read(&image, m.index).unwrap();
    assert_eq!(copy.digest(), m.inventory.digest());
    assert_eq!(copy.applied_index(), m.index);
    // The copy behaves the same afterwards.
    let next = Batch {
        stamp_ms: 2_000,
        id_retention_ms: HOUR_MS,
        id_retained_max: 1_000_000,
        commands: vec![
            sell("t2", "s", "m", 4),
            reserve("o", &[("s", "n", 2)], 1_000),
        ],
    };
    let index = m.index + 1;
    assert_eq!(
        copy.apply_batch(index, &next),
        m.inventory.apply_batch(index, &next)
    );
    assert_eq!(copy.digest(), m.inventory.digest());
    // Joined into one buffer and split again, the chunks are the same;
    // a flipped byte is caught.
    let mut bytes = Vec::new();
    snapshot::put_header(&image.header, &mut bytes);
    for chunk in &image.chunks {
        snapshot::put_chunk(chunk, &mut bytes);
    }
    let (header, chunks) = snapshot::split_bytes(&bytes).unwrap();
    assert_eq!(header, image.header);
    assert_eq!(chunks, image.chunks);
    let mut damaged = image.clone();
    let last = damaged.chunks[0].len() - 1;
    damaged.chunks[0][last] ^= 1;
    assert!(snapshot::read(&damaged, 1).is_err());
}

/// An image of many chunks (SKUs cut across chunk boundaries, thousands of
/// ids finished at the same instant) restores every counter, and the
/// restored copy forgets exactly the same ids as the original afterwards.
#[test]
fn a_snapshot_of_many_chunks_restores_counters_and_retention_order() {
    let mut original = Inventory::new();
    let mut commands = Vec::new();
    for s in 0..3_001 {
        for n in ["n1", "n2", "n3"] {
            commands.push(set(&format!("t-{s}-{n}"), &format!("s{s}"), n, s as i64));
        }
    }
    let seed = Batch {
        stamp_ms: 1_000,
        id_retention_ms: HOUR_MS,
        id_retained_max: 1_000_000,
        commands,
    };
    original.apply_batch(1, &seed);
    let image = snapshot::write(&original);
    assert!(image.chunks.len() >= 3, "want several chunks");
    // Written on one thread or two, read on one or two: the same.
    assert_eq!(
        snapshot::write_threads(&snapshot::freeze(&original), true),
        image
    );
    let threaded = snapshot::read_threads(&image, 1, true).unwrap();
    assert_eq!(snapshot::write(&threaded), image);
    let mut copy = snapshot::read(&image, 1).unwrap();
    assert_eq!(copy.stock().counter_count(), 9_003);
    assert_eq!(copy.stock().level("s2999", "n2").unwrap().on_hand, 2_999);
    assert_eq!(copy.digest(), original.digest());
    // Keep only 100 ids: which ones go depends on the retention order.
    let squeeze = Batch {
        stamp_ms: 2_000,
        id_retention_ms: HOUR_MS,
        id_retained_max: 100,
        commands: vec![],
    };
    copy.apply_batch(2, &squeeze);
    original.apply_batch(2, &squeeze);
    assert_eq!(copy.retained_count(), 100);
    assert_eq!(copy.digest(), original.digest());
    // A SKU repeated in an image is refused.
    let mut twice = image.clone();
    twice.chunks.push(twice.chunks[0].clone());
    twice.header.digest = digest_of(&twice);
    assert!(snapshot::read(&twice, 1).is_err());
    // The same, found by the rebuild thread: at the last chunk, and in the
    // middle of the image with chunks still to come (they are only hashed,
    // and the rebuild thread's error is the one reported).
    let mut middle = image.clone();
    middle.chunks.insert(1, middle.chunks[0].clone());
    middle.header.digest = digest_of(&middle);
    for repeated in [&twice, &middle] {
        let refused = snapshot::read_threads(repeated, 1, true)
            .map(|_| ())
            .unwrap_err();
        assert!(
            matches!(refused, snapshot::SnapshotError::Invalid(_)),
            "unexpected error: {refused}"
        );
    }
    // A chunk damaged so that it no longer decodes is reported as damage
    // the digest caught, on either path, not as what its bytes decoded to.
    let mut garbled = image.clone();
    garbled.chunks[1] = vec![0xff; 64];
    for two in [false, true] {
        let refused = snapshot::read_threads(&garbled, 1, two)
            .map(|_| ())
            .unwrap_err();
        assert!(
            matches!(refused, snapshot::SnapshotError::Digest { .. }),
            "unexpected error: {refused}"
        );
    }
}

/// The digest a writer would give `image`'s chunks: for damaged images
/// whose digest agrees, as a faulty writer would make them.
fn digest_of(image: &snapshot::Image) -> u64 {
    let mut digest = xxhash_rust::xxh3::Xxh3::new();
    digest.update(&image.header.now_ms.to_le_bytes());
    for chunk in &image.chunks {
        digest.update(chunk);
    }
    digest.digest()
}

/// A format-1 image (transaction ids as text) still loads, and its ids
/// still guard against a second application.
/// A snapshot is encoded from a frozen view while later entries are
/// applied: every kind of change made after freezing (counters changed and
/// added, SKUs added, reservations made, extended, consumed, released,
/// expired and forgotten, ids forgotten) must leave the frozen view as it
/// was, or an image would mix two applied indexes.
#[test]
fn changes_after_freezing_do_not_reach_the_frozen_image() {
    let mut m = Machine::new();
    m.one(0, set("t1", "s1", "n1", 10));
    m.one(0, set("t2", "s1", "n2", 10));
    m.one(0, reserve("keep", &[("s1", "n1", 1)], 60_000));
    m.one(0, reserve("extend", &[("s1", "n1", 1)], 60_000));
    m.one(0, reserve("consume", &[("s1", "n2", 2)], 60_000));
    m.one(0, reserve("release", &[("s1", "n2", 1)], 60_000));
    m.one(0, reserve("expire", &[("s1", "n1", 1)], 1_000));
    let before = snapshot::write(&m.inventory);
    let frozen = snapshot::freeze(&m.inventory);
    m.retained_max = 2;
    m.at(
        500,
        vec![
            set("t3", "s1", "n1", 20),
            set("t4", "s1", "n3", 5),
            set("t5", "s2", "n1", 7),
            sell("t6", "s1", "n2", 1),
            extend("extend", 90_000),
            consume("consume"),
            release("release"),
            reserve("new", &[("s2", "n1", 1)], 60_000),
        ],
    );
    m.at(2_000, vec![]);
    assert_eq!(m.inventory.stock().level("s1", "n1").unwrap().on_hand, 20);
    assert_eq!(
        m.inventory.reservation("expire").unwrap().state,
        ReservationState::Expired
    );
    assert_ne!(snapshot::write(&m.inventory), before);
    assert_eq!(snapshot::write_frozen(&frozen), before);
    assert_eq!(snapshot::write_threads(&frozen, true), before);
}

#[test]
fn a_format_one_snapshot_still_loads() {
    use crate::proto::internal as pb;
    use prost::Message;
    let chunk = pb::SnapshotChunk {
        counters: vec![pb::CounterRecord {
            sku: "s".into(),
            node: "n".into(),
            on_hand: 5,
            reserved: 0,
            safety_stock: 0,
        }],
        reservations: vec![],
        txns: vec![pb::TxnRecord {
            txn_id: "t1".into(),
            fingerprint: codec::fingerprint(&set("t1", "s", "n", 5)),
            at_ms: 1_000,
            level: Some(pb::StockLevelRecord {
                on_hand: 5,
                reserved: 0,
                safety_stock: 0,
            }),
            key_high: 0,
            key_low: 0,
        }],
    };
    let bytes = chunk.encode_to_vec();
    let mut digest = xxhash_rust::xxh3::Xxh3::new();
    digest.update(&1_000u64.to_le_bytes());
    digest.update(&bytes);
    let digest = digest.digest();
    let image = snapshot::Image {
        header: pb::SnapshotHeader {
            format_version: 1,
            now_ms: 1_000,
            counters: 1,
            reservations: 0,
            txns: 1,
            digest,
        },
        chunks: vec![bytes],
        digest,
    };
    let mut m = Machine::new();
    m.inventory = snapshot::read(&image, 7).unwrap();
    m.index = 7;
    assert_eq!(m.inventory.retained_count(), 1);
    // The retry of t1 answers as before and applies nothing.
    assert_eq!(
        stock_level(&m.one(1_001, set("t1", "s", "n", 5))).on_hand,
        5
    );
    assert_eq!(
        stock_level(&m.one(1_002, sell("t2", "s", "n", 1))).on_hand,
        4
    );
    assert_eq!(
        stock_level(&m.one(1_003, set("t1", "s", "n", 5))).on_hand,
        5
    );
    assert_eq!(m.inventory.stock().level("s", "n").unwrap().on_hand, 4);
}

#[test]
fn a_snapshot_naming_a_reservation_twice_is_refused() {
    use crate::proto::internal as pb;
    use prost::Message;
    let mut m = Machine::new();
    m.one(0, set("t1", "s", "n", 5));
    m.one(1, reserve("r1", &[("s", "n", 1)], 60_000));
    let image = snapshot::write(&m.inventory);
    // Whole, it loads.
    assert!(snapshot::read(&image, m.index).is_ok());
    // The same image with the reservation's record repeated (and a digest
    // and header that agree, as a faulty writer would make them) does not.
    let mut chunks = Vec::new();
    let mut digest = xxhash_rust::xxh3::Xxh3::new();
    digest.update(&image.header.now_ms.to_le_bytes());
    for bytes in &image.chunks {
        let mut chunk = pb::SnapshotChunk::decode(bytes.as_slice()).unwrap();
        if let Some(first) = chunk.reservations.first().cloned() {
            chunk.reservations.push(first);
        }
        let bytes = chunk.encode_to_vec();
        digest.update(&bytes);
        chunks.push(bytes);
    }
    let digest = digest.digest();
    let mut header = image.header;
    header.reservations += 1;
    header.digest = digest;
    let damaged = snapshot::Image {
        header,
        chunks,
        digest,
    };
    let refused = snapshot::read(&damaged, m.index).map(|_| ()).unwrap_err();
    assert!(
        refused.to_string().contains("appears twice"),
        "unexpected error: {refused}"
    );
}

// --- The property test -----------------------------------------------------

use crate::sim::model::Model;

const SKUS: [&str; 3] = ["a", "b", "c"];
const NODES: [&str; 2] = ["x", "y"];

fn arb_command() -> impl Strategy<Value = Command> {
    let id = 0u8..6;
    let sku = 0usize..SKUS.len();
    let node = 0usize..NODES.len();
    prop_oneof![
        4 => (id.clone(), prop::collection::vec((sku.clone(), node.clone(), 1i64..4), 1..4), 1u64..3_000)
            .prop_map(|(i, lines, ttl)| {
                let lines: Vec<(&str, &str, i64)> = lines.iter().map(|(s, n, q)| (SKUS[*s], NODES[*n], *q)).collect();
                reserve(&format!("r{i}"), &lines, ttl)
            }),
        2 => id.clone().prop_map(|i| consume(&format!("r{i}"))),
        1 => id.clone().prop_map(|i| release(&format!("r{i}"))),
        1 => (id.clone(), 1u64..3_000).prop_map(|(i, ttl)| extend(&format!("r{i}"), ttl)),
        2 => (id.clone(), sku.clone(), node.clone(), 1i64..4)
            .prop_map(|(i, s, n, q)| sell(&format!("t{i}"), SKUS[s], NODES[n], q)),
        2 => (id.clone(), sku.clone(), node.clone(), 1i64..8)
            .prop_map(|(i, s, n, d)| adjust(&format!("t{i}"), SKUS[s], NODES[n], d, AdjustReason::Receive)),
        1 => (id.clone(), sku.clone(), node.clone(), 0i64..10, prop::option::of(-3i64..10))
            .prop_map(|(i, s, n, v, e)| Command::SetOnHand(
                SetOnHand::new(format!("t{i}"), SKUS[s].into(), NODES[n].into(), v, e).unwrap())),
        1 => (sku, node, 0i64..3).prop_map(|(s, n, v)| Command::SetSafetyStock(
                SetSafetyStock::new(SKUS[s].into(), NODES[n].into(), v).unwrap())),
    ]
}

fn arb_batches() -> impl Strategy<Value = Vec<(u64, Vec<Command>)>> {
    prop::collection::vec(
        (0u64..1_500, prop::collection::vec(arb_command(), 0..4)),
        1..60,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Random batches: every answer equals the model's, every counter and
    /// hold matches it, the invariants hold after every batch, no reserve
    /// ever took available below zero, and a replica applying the same
    /// batches without gathering answers (a follower) is in the same state.
    /// The leader's tables give every SKU one key and every reservation
    /// another (forced hash collisions): names, not hashes, are the keys.
    #[test]
    fn the_state_machine_agrees_with_the_model(batches in arb_batches()) {
        let mut inventory = Inventory::with_colliding_keys();
        let mut follower = Inventory::new();
        let mut model = Model::default();
        let mut stamp = 0u64;
        for (index, (step, commands)) in (1u64..).zip(batches) {
            stamp += step;
            let batch = Batch {
                stamp_ms: stamp,
                id_retention_ms: 2_000,
                id_retained_max: 1_000_000,
                commands: commands.clone(),
            };
            let real = inventory.apply_batch(index, &batch);
            let expected = model.apply(index, stamp, 2_000, &commands);
            prop_assert_eq!(&real, &expected);
            follower.apply_batch_unanswered(index, &batch);
            prop_assert_eq!(follower.digest(), inventory.digest());
            prop_assert_eq!(inventory.check_invariants(), Ok(()));
            for (command, answer) in commands.iter().zip(&real) {
                if let (Command::Reserve(r), Applied::Reserve(Ok(a))) = (command, answer) {
                    if a.outcome == Outcome::Reserved {
                        for line in &r.lines {
                            let level = inventory.stock().level(&line.sku, &line.node).unwrap_or_default();
                            prop_assert!(level.reserved >= 0);
                        }
                    }
                }
            }
            for ((sku, node), level) in &model.counters {
                prop_assert_eq!(inventory.stock().level(sku, node).unwrap_or_default(), *level);
            }
            for (id, hold) in &model.holds {
                let r = inventory.reservation(id);
                prop_assert!(r.is_some(), "hold {} missing", id);
                let r = r.unwrap();
                prop_assert_eq!(r.expires_at_ms, hold.expires_at_ms);
            }
            // A snapshot taken anywhere restores the same state.
            if index % 17 == 0 {
                let copy = snapshot::read(&snapshot::write(&inventory), index).unwrap();
                prop_assert_eq!(copy.digest(), inventory.digest());
            }
        }
    }
}
