//! The driver over one in-memory voter: the group commit's gate and
//! bounds, groups answered whole and in order, a sync and a snapshot asked
//! for once, ticks on time, and every caller answered at shutdown.

use super::tests::{logger, set};
use super::*;
use crate::inventory::Applied;
use crate::limits::BATCH_COMMANDS_MAX;
use crate::storage::MemStore;

/// Each caller's answer goes to a number the test chose.
type TestDriver = Driver<MemStore, u32>;

const TICK_MS: u64 = 100;

fn server_config(id: u64) -> ReplicaConfig {
    let mut config = ReplicaConfig::new(id);
    config.persist_async = true;
    config.snapshot_by_caller = true;
    config
}

/// A single voter that elected itself, in a driver.
fn leader(config: ReplicaConfig) -> TestDriver {
    let mut replica = Replica::new(config, MemStore::new(&[1]), &logger()).unwrap();
    replica.campaign(&mut Output::default()).unwrap();
    let mut driver = Driver::new(replica, TICK_MS).unwrap();
    turn(&mut driver, 0);
    land_syncs(&mut driver);
    assert!(driver.replica().status().is_leader);
    driver.effects().finished.clear();
    driver
}

fn turn(driver: &mut TestDriver, at_ms: u64) {
    let now = Now {
        monotonic_ms: at_ms,
        wall_ms: 1_700_000_000_000 + at_ms,
    };
    driver.turn(now, None).unwrap();
}

/// Lands every sync the driver asks for, as the server's sync thread
/// would, until it asks for none.
fn land_syncs(driver: &mut TestDriver) {
    while let Some(number) = driver.effects().sync.take() {
        driver.sync_store().unwrap();
        driver.synced(number).unwrap();
    }
}

/// The callers finished so far, by the number each was given.
fn finished(driver: &mut TestDriver) -> Vec<(u32, Answer)> {
    driver
        .effects()
        .finished
        .drain(..)
        .map(|f| (f.reply, f.answer))
        .collect()
}

fn on_hand(applied: &Applied) -> i64 {
    match applied {
        Applied::StockChange(Ok(answer)) => answer.level.on_hand,
        other => panic!("not a stock change: {other:?}"),
    }
}

#[test]
fn a_group_is_answered_once_whole_and_in_order() {
    let mut driver = leader(server_config(1));
    let group = vec![set("g1", 1), set("g2", 2), set("g3", 3)];
    driver.submit(Request::Group(group), 7);
    driver.submit(Request::Command(set("c", 4)), 8);
    turn(&mut driver, 1);
    land_syncs(&mut driver);
    let answers = finished(&mut driver);
    assert_eq!(answers.len(), 2, "{answers:?}");
    let (reply, Answer::Group(group)) = &answers[0] else {
        panic!("the group was not answered first as a group: {answers:?}");
    };
    assert_eq!(*reply, 7);
    let levels: Vec<i64> = group.iter().map(|a| on_hand(a.as_ref().unwrap())).collect();
    assert_eq!(levels, vec![1, 2, 3]);
    let (reply, Answer::Command(Ok(applied))) = &answers[1] else {
        panic!("the command was not answered: {answers:?}");
    };
    assert_eq!((*reply, on_hand(applied)), (8, 4));
}

#[test]
fn an_empty_group_is_answered_at_once() {
    let mut driver = leader(server_config(1));
    driver.submit(Request::Group(Vec::new()), 3);
    let answers = finished(&mut driver);
    assert!(matches!(&answers[..], [(3, Answer::Group(g))] if g.is_empty()));
}

/// While two writes wait for their sync the leader proposes nothing; what
/// queued meanwhile goes into one entry once a sync lands.
#[test]
fn the_gate_holds_proposals_while_two_writes_await_their_sync() {
    let mut driver = leader(server_config(1));
    driver.submit(Request::Command(set("a", 1)), 1);
    turn(&mut driver, 1);
    driver.submit(Request::Command(set("b", 2)), 2);
    turn(&mut driver, 2);
    let first_sync = driver.effects().sync.take().expect("a sync asked for");
    for n in 3..=10u32 {
        driver.submit(Request::Command(set(&format!("q{n}"), n as i64)), n);
    }
    turn(&mut driver, 3);
    assert!(
        !driver.has_work(),
        "the gate is open with two writes unsynced"
    );
    assert!(driver.effects().sync.is_none(), "a sync asked for twice");
    let written_before = driver.replica().status().last_index;
    driver.sync_store().unwrap();
    driver.synced(first_sync).unwrap();
    assert!(driver.has_work(), "the gate stayed shut after the sync");
    turn(&mut driver, 4);
    assert_eq!(driver.replica().status().last_index, written_before + 1);
    land_syncs(&mut driver);
    let answered_at = std::mem::take(&mut driver.effects().answered_at);
    let mut queued: Vec<(u64, usize)> = answered_at
        .iter()
        .filter(|(token, _, _)| *token >= 3)
        .map(|(_, index, position)| (*index, *position))
        .collect();
    queued.sort_unstable();
    let expected: Vec<(u64, usize)> = (0..8).map(|p| (written_before + 1, p)).collect();
    assert_eq!(
        queued, expected,
        "the queued commands did not share one entry"
    );
    assert_eq!(finished(&mut driver).len(), 10);
}

/// At most a batch's worth of commands waits in the driver; the rest stay
/// in the caller's queue, and one entry carries at most a batch.
#[test]
fn a_batch_is_bounded_and_the_driver_stops_wanting_commands() {
    let mut driver = leader(server_config(1));
    let mut submitted = 0u32;
    while driver.wants_commands() {
        driver.submit(
            Request::Command(set(&format!("t{submitted}"), 1)),
            submitted,
        );
        submitted += 1;
    }
    assert_eq!(submitted as usize, BATCH_COMMANDS_MAX);
    driver.submit(Request::Command(set("over", 1)), submitted);
    let before = driver.replica().status().last_index;
    turn(&mut driver, 1);
    assert_eq!(driver.replica().status().last_index, before + 1);
    assert!(
        driver.has_work(),
        "the command beyond the batch was dropped"
    );
    land_syncs(&mut driver);
    turn(&mut driver, 2);
    land_syncs(&mut driver);
    assert_eq!(driver.replica().status().last_index, before + 2);
    assert_eq!(finished(&mut driver).len(), BATCH_COMMANDS_MAX + 1);
}

#[test]
fn ticks_fall_due_a_period_apart_and_missed_ones_are_not_made_up() {
    let mut replica = Replica::new(server_config(1), MemStore::new(&[1]), &logger()).unwrap();
    replica.campaign(&mut Output::default()).unwrap();
    let mut driver: TestDriver = Driver::new(replica, TICK_MS).unwrap();
    assert_eq!(driver.next_tick_ms(), None);
    turn(&mut driver, 1_000);
    assert_eq!(driver.next_tick_ms(), Some(1_100));
    turn(&mut driver, 1_099);
    assert_eq!(driver.next_tick_ms(), Some(1_100));
    turn(&mut driver, 1_150);
    assert_eq!(driver.next_tick_ms(), Some(1_200));
    // Busy for a second: one tick, and the next a period away.
    turn(&mut driver, 2_230);
    assert_eq!(driver.next_tick_ms(), Some(2_330));
}

/// A snapshot is handed out once; no other is frozen until it comes back
/// written, and then it is recorded.
#[test]
fn a_snapshot_is_handed_out_once_and_recorded_when_written() {
    let mut config = server_config(1);
    config.snapshot_entries = 5;
    config.snapshot_log_floor_bytes = 0;
    config.log_keep_entries = 1;
    let mut driver = leader(config);
    let mut task = None;
    for i in 0..30u32 {
        driver.submit(Request::Command(set(&format!("s{i}"), i as i64)), i);
        turn(&mut driver, u64::from(i) + 1);
        land_syncs(&mut driver);
        if let Some(handed) = driver.effects().snapshot.take() {
            assert!(task.is_none(), "a second snapshot while one was out");
            task = Some(handed);
        }
    }
    let task = task.expect("no snapshot handed out");
    assert!(driver.snapshot_out());
    let index = task.index();
    let written = task
        .run(&mut *driver.replica().store().chunk_writer())
        .unwrap();
    driver.snapshot_written(written).unwrap();
    assert!(!driver.snapshot_out());
    assert_eq!(driver.replica().status().snapshot_index, index);
    assert_eq!(finished(&mut driver).len(), 30);
}

/// At shutdown nobody hangs: pending commands, a half-answered group, and
/// reads are all finished with an error.
#[test]
fn shutting_down_answers_every_caller_left() {
    let mut driver = leader(server_config(1));
    driver.submit(Request::Command(set("a", 1)), 1);
    driver.submit(Request::Group(vec![set("b", 2), set("c", 3)]), 2);
    driver.submit(Request::Read, 3);
    assert_eq!(driver.callers_waiting(), 3);
    driver.shut_down();
    let answers = finished(&mut driver);
    assert_eq!(driver.callers_waiting(), 0);
    assert_eq!(answers.len(), 3);
    let shutting_down = |a: &Result<Applied, Unanswered>| matches!(a, Err(u) if u.error == ProposeError::ShuttingDown);
    for (reply, answer) in &answers {
        match (reply, answer) {
            (1, Answer::Command(a)) => assert!(shutting_down(a)),
            (2, Answer::Group(g)) => assert!(g.len() == 2 && g.iter().all(shutting_down)),
            (3, Answer::Read(r)) => assert_eq!(*r, Err(ReadError::NoLeader)),
            other => panic!("unexpected answer {other:?}"),
        }
    }
}

/// A read shares the next turn's ReadIndex and is answered with an index
/// at or past every write answered before it.
#[test]
fn a_read_is_answered_at_an_index_past_the_writes_before_it() {
    let mut driver = leader(server_config(1));
    driver.submit(Request::Command(set("w", 5)), 1);
    turn(&mut driver, 1);
    land_syncs(&mut driver);
    let written_at = driver.effects().answered_at[0].1;
    driver.submit(Request::Read, 2);
    turn(&mut driver, 2);
    land_syncs(&mut driver);
    turn(&mut driver, 3);
    let answers = finished(&mut driver);
    let read = answers.iter().find(|(reply, _)| *reply == 2);
    let Some((_, Answer::Read(Ok(index)))) = read else {
        panic!("the read was not answered: {answers:?}");
    };
    assert!(*index >= written_at);
}

/// The first turn takes the verdict on the member's clock, before any
/// tick: a member restarted with a wrong clock and made leader by a
/// transfer before its first tick must not stamp unchecked (seed 1463).
#[test]
fn the_first_turn_takes_the_verdict_on_the_clock() {
    let replica = Replica::new(server_config(1), MemStore::new(&[1, 2, 3]), &logger()).unwrap();
    let mut driver: TestDriver = Driver::new(replica, TICK_MS).unwrap();
    assert_eq!(driver.replica().clock_checked_at_ms, None);
    let now = Now {
        monotonic_ms: 5,
        wall_ms: 1_700_000_000_000,
    };
    assert!(driver.clock_due(now));
    let peers = clock::PeerClocks::default();
    let check = ClockCheck {
        peers: &peers,
        max_offset_ms: 500,
    };
    driver.turn(now, Some(check)).unwrap();
    // No fellow member measured yet: not confirmed, so nothing is stamped.
    assert_eq!(driver.replica().clock_checked_at_ms, Some(now.wall_ms));
    assert_eq!(driver.replica().clock, clock::ClockVerdict::Unconfirmed);
    assert!(!driver.replica().may_stamp(now.wall_ms));
    assert!(!driver.clock_due(Now {
        monotonic_ms: 6,
        ..now
    }));
}
