//! The seed budget that `make test` runs, and the proof that the checkers
//! catch a real bug.
//!
//! Replay one seed: `STOCKRAFT_SIM_SEED=N cargo test --lib simulation -- --nocapture`.
//! More seeds: `STOCKRAFT_SIM_SEEDS=5000 cargo test --release --lib simulation`,
//! or the `stockraft-sim` command.

use super::*;

/// Client operations per seed.
const OPS: usize = 2_000;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

#[test]
fn simulation() {
    if let Some(seed) = env_u64("STOCKRAFT_SIM_SEED") {
        match run(&SimConfig::new(seed, OPS, None)) {
            Ok(report) => eprintln!("{report:?}"),
            Err(violation) => panic!("{violation}"),
        }
        return;
    }
    let seeds = env_u64("STOCKRAFT_SIM_SEEDS").unwrap_or(500);
    let first = env_u64("STOCKRAFT_SIM_FIRST_SEED").unwrap_or(0);
    let started = std::time::Instant::now();
    let reports = match run_seeds(first, seeds, &SimConfig::new(first, OPS, None), 2) {
        Ok(reports) => reports,
        Err(violation) => panic!("{violation}"),
    };
    let crashes: u64 = reports.iter().map(|r| r.crashes).sum();
    let partitions: u64 = reports.iter().map(|r| r.partitions).sum();
    let acked: usize = reports.iter().map(|r| r.ops_acked).sum();
    let changes: u64 = reports.iter().map(|r| r.membership_changes).sum();
    let transfers: u64 = reports.iter().map(|r| r.transfers).sum();
    let leader_removals: u64 = reports.iter().map(|r| r.leader_removals).sum();
    let step_downs: u64 = reports.iter().map(|r| r.removed_step_downs).sum();
    let clock_jumps: u64 = reports.iter().map(|r| r.clock_jumps).sum();
    let clock_step_downs: u64 = reports.iter().map(|r| r.clock_step_downs).sum();
    let five = reports.iter().filter(|r| r.replicas == 5).count();
    let deferred = reports.iter().filter(|r| r.persist_async).count();
    let before_sync: u64 = reports.iter().map(|r| r.crashes_before_sync).sum();
    eprintln!(
        "{} seeds ({five} starting with 5 replicas, {deferred} syncing later) in {:.1} s: \
         {acked} acknowledged writes, {crashes} crashes ({before_sync} with a sync in flight), \
         {partitions} partitions, {transfers} leadership transfers, {changes} membership changes \
         ({leader_removals} of the leader; {step_downs} leaders applied their own removal), \
         {clock_jumps} leader clocks set a day off ({clock_step_downs} clock step-downs)",
        reports.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        deferred > 0 && deferred < reports.len() && before_sync > 0,
        "the seeds did not exercise both ways of syncing, and crashes while a sync is in flight"
    );
    assert!(reports.iter().all(|r| r.ops_acked > 0));
    assert!(
        crashes > 0 && partitions > 0 && transfers > 0 && changes > 0,
        "the seeds did not exercise every kind of fault"
    );
    assert!(
        leader_removals > 0 && step_downs > 0,
        "the seeds never removed the leader, or never had a leader apply its own removal"
    );
    assert!(
        clock_jumps > 0 && clock_step_downs > 0,
        "the seeds never set a leader's clock a day off, or no leader stepped down for it"
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

/// With a disk whose fsync lies (so a node acknowledges writes a crash
/// then loses), the checkers find a violation within the seed budget.
#[test]
fn the_checkers_catch_an_fsync_that_lies() {
    for seed in 0..500 {
        if let Err(violation) = run(&SimConfig::new(seed, OPS, Some(Bug::FsyncLies))) {
            eprintln!("caught: {violation}");
            return;
        }
    }
    panic!("500 seeds with a lying fsync and no checker noticed");
}

/// A server that serves "linearizable" reads without the ReadIndex round
/// returns stale data from lagging or cut-off replicas: the history checker
/// (not a panic) must notice.
#[test]
fn the_checkers_catch_reads_that_skip_read_index() {
    for seed in 0..500 {
        if let Err(violation) = run(&SimConfig::new(seed, OPS, Some(Bug::SkipReadIndex))) {
            eprintln!("caught: {violation}");
            assert!(
                violation.message.contains("stale linearizable read"),
                "{violation}"
            );
            return;
        }
    }
    panic!("500 seeds with reads skipping ReadIndex and no checker noticed");
}
