//! The seed budget that `make test` runs, and the proof that the checkers
//! catch a real bug.
//!
//! Replay one seed: `STOCKRAFT_SIM_SEED=N cargo test --lib simulation -- --nocapture`.
//! A range: `STOCKRAFT_SIM_FIRST_SEED=N STOCKRAFT_SIM_SEEDS=5000 cargo test
//! --release --lib simulation`; long hunts: `stockraft-sim --hunt`.

use std::io::Write;

use super::*;

/// Client operations per seed.
const OPS: usize = 2_000;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// Seeds every run of `make test` replays, the same each time.
const FIXED_SEEDS: u64 = 250;

/// Seeds drawn fresh at each run of `make test`, from a random first one
/// (printed): fixed seeds alone never met the failure that fresh ones
/// found. Replay a range with `STOCKRAFT_SIM_FIRST_SEED=N
/// STOCKRAFT_SIM_SEEDS=250`, one seed with `STOCKRAFT_SIM_SEED`.
const FRESH_SEEDS: u64 = 250;

/// Fresh ranges start below this, so a seed stays short enough to type.
const FRESH_FIRST_MAX: u64 = 1 << 40;

#[test]
fn simulation() {
    if let Some(seed) = env_u64("STOCKRAFT_SIM_SEED") {
        match run(&SimConfig::new(seed, OPS, None)) {
            Ok(report) => eprintln!("{report:?}"),
            Err(violation) => panic!("{violation}"),
        }
        return;
    }
    let mut ranges = vec![
        (0, FIXED_SEEDS),
        (rand::random::<u64>() % FRESH_FIRST_MAX, FRESH_SEEDS),
    ];
    if let Some(first) = env_u64("STOCKRAFT_SIM_FIRST_SEED") {
        ranges = vec![(first, env_u64("STOCKRAFT_SIM_SEEDS").unwrap_or(FRESH_SEEDS))];
    }
    let started = std::time::Instant::now();
    let mut reports = Vec::new();
    for (first, count) in ranges {
        // Straight to stderr, past the test harness's capture: the fresh
        // range shows in every log, passing or not.
        let _ = writeln!(
            std::io::stderr(),
            "simulation: seeds {first}..{}",
            first + count
        );
        match run_seeds(first, count, &SimConfig::new(first, OPS, None), 2) {
            Ok(done) => reports.extend(done),
            Err(violation) => panic!("{violation}"),
        }
    }
    let mut totals = Totals::default();
    for report in &reports {
        totals.add(report);
    }
    let _ = writeln!(
        std::io::stderr(),
        "simulation: {totals} in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(reports.iter().all(|r| r.ops_acked > 0));
    check_coverage(&totals);
}

/// The seeds met every fault the simulator injects: a budget that never
/// crashed a node with a sync in flight, say, proves nothing about it.
fn check_coverage(totals: &Totals) {
    let s = &totals.sum;
    assert!(
        s.snapshot_damages > 0 && s.damage_stops > 0 && s.damage_rebuilds > 0,
        "the seeds never damaged a snapshot, or never stopped a member reading one, or never \
         rebuilt a member whose store refused to open"
    );
    assert!(
        s.crashes_before_sync > 0 && s.snapshots_by_caller > 0 && s.snapshots_stale > 0,
        "the seeds never crashed a node with a sync in flight, never wrote a snapshot beside \
         the loop, or never had one made stale by an install while it was written"
    );
    assert!(
        s.crashes > 0 && s.partitions > 0 && s.transfers > 0 && s.membership_changes > 0,
        "the seeds did not exercise every kind of fault"
    );
    assert!(
        s.leader_removals > 0 && s.removed_step_downs > 0,
        "the seeds never removed the leader, or never had a leader apply its own removal"
    );
    assert!(
        s.leader_clock_jumps > 0 && s.clock_step_downs > 0,
        "the seeds never set a leader's clock hours off, or no leader stepped down for it"
    );
    assert!(
        s.clock_jumps > s.leader_clock_jumps && s.pauses > 0,
        "the seeds never set a follower's clock off, or never paused a member"
    );
    assert!(
        s.dir_losses > 0 && s.disk_failure_stops > 0 && s.sync_stalls > 0,
        "the seeds never lost a data dir, never stopped a member on a failing disk, or never \
         stalled a sync"
    );
}

/// Seed 60538492796 (issue 27: a removal committed under the node it
/// removed, and raft-rs aborted in `Raft::maybe_commit`) must pass in
/// both fault mixes. A seed's run follows the code, so it need not take
/// that path today: the path itself is held by the replica test that
/// commits a leader's own removal with responses in flight, and by the CI
/// seeds (`simulation`), whose operator moves leadership onto nodes being
/// removed and which must see removed leaders step down.
#[test]
fn seed_60538492796_passes() {
    for leader_removals in [false, true] {
        let config = SimConfig {
            leader_removals,
            ..SimConfig::new(60538492796, OPS, None)
        };
        if let Err(violation) = run(&config) {
            panic!("{violation}");
        }
    }
}

/// Seed 540084898197 (a fresh seed of a long run): its first leader's
/// proposal of the cluster's id was dropped by raft-rs during a
/// leadership transfer that did not complete, and the leader kept its term
/// with the cluster unnamed; the id proposal is now retried at each tick.
#[test]
fn seed_540084898197_names_the_cluster() {
    if let Err(violation) = run(&SimConfig::new(540084898197, OPS, None)) {
        panic!("{violation}");
    }
}

/// Runs seeds 0..500 with `bug` (on two threads, stopping at the first
/// failure) and checks that the lowest failing seed was caught by the
/// checker meant for the bug (not any other, and not a panic).
fn caught_by(bug: Bug, kind: ViolationKind) {
    match run_seeds(0, 500, &SimConfig::new(0, OPS, Some(bug)), 2) {
        Err(violation) => {
            eprintln!("caught: {violation}");
            assert_eq!(violation.kind, kind, "{violation}");
        }
        Ok(_) => panic!("500 seeds with {bug:?} and no checker noticed"),
    }
}

/// With a disk whose fsync lies (so a node acknowledges writes a crash
/// then loses), the durability checker sees a restarted member without
/// an entry it had persisted, or a vote it had granted.
#[test]
fn the_checkers_catch_an_fsync_that_lies() {
    caught_by(Bug::FsyncLies, ViolationKind::DurableLost);
}

/// A server that serves "linearizable" reads without the ReadIndex round
/// returns stale data from lagging or cut-off replicas: the history checker
/// (not a panic) must notice.
#[test]
fn the_checkers_catch_reads_that_skip_read_index() {
    caught_by(Bug::SkipReadIndex, ViolationKind::StaleRead);
}

/// A member rebuilt after losing its data dir that votes with its empty
/// log helps elect a leader without entries committed on a bare majority
/// that included it: a committed entry is overwritten.
#[test]
fn the_checkers_catch_a_rebuild_that_votes_with_an_empty_log() {
    caught_by(Bug::RebuildVotes, ViolationKind::LogDiverged);
}

/// A loop that takes a failed sync (EIO) for done tells raft-rs entries
/// are durable that a crash then loses: the durability checker sees the
/// member restart without them.
#[test]
fn the_checkers_catch_a_failed_sync_taken_for_done() {
    caught_by(Bug::IgnoreFailedSync, ViolationKind::DurableLost);
}

/// A store that opens over a damaged snapshot, as if nothing was lost,
/// restarts a member without the entries it had persisted: the durability
/// checker sees it.
#[test]
fn the_checkers_catch_a_damaged_store_opened_anyway() {
    caught_by(Bug::DamageIgnored, ViolationKind::DurableLost);
}

/// A leader that stamps with its own clock whatever its peers say of it
/// stamps hours ahead once a clock fault strikes it: the stamp bound (by
/// which no hold expires, and no retained id is forgotten, early) sees it.
#[test]
fn the_checkers_catch_stamps_from_an_unchecked_clock() {
    caught_by(Bug::StampUnchecked, ViolationKind::StampAhead);
}
