//! Running seeds: one to its end ([`run`]), or many on threads
//! ([`run_seeds`]), each from nothing but its seed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::fault::Faults;
use super::world::Sim;
use super::{SimConfig, SimReport, Violation};

/// Runs one seed to the end. Err when a checker failed.
pub fn run(config: &SimConfig) -> Result<SimReport, Violation> {
    let mut rng = StdRng::seed_from_u64(config.seed);
    let replicas = if rng.random_bool(0.5) { 3 } else { 5 };
    let faults = Faults::draw(&mut rng);
    let mut sim = Sim::new(config, replicas, faults, &mut rng);
    let outcome = sim.run(&mut rng);
    match outcome {
        Ok(()) => Ok(sim.report()),
        Err(failure) => Err(Violation {
            seed: config.seed,
            at_ms: sim.now_ms,
            kind: failure.kind,
            message: failure.message,
            leader_removals: config.leader_removals,
        }),
    }
}

/// Runs seeds `first..first + count` on `threads` threads, each as
/// `template` says but for its seed; returns the violation of the lowest
/// failing seed, if any.
pub fn run_seeds(
    first: u64,
    count: u64,
    template: &SimConfig,
    threads: usize,
) -> Result<Vec<SimReport>, Violation> {
    let next = AtomicU64::new(first);
    let results = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            scope.spawn(|| loop {
                let seed = next.fetch_add(1, Ordering::Relaxed);
                if seed >= first + count {
                    return;
                }
                let result = run(&SimConfig {
                    seed,
                    ..template.clone()
                });
                let failed = result.is_err();
                if let Ok(mut results) = results.lock() {
                    results.push(result);
                }
                if failed {
                    // Stop handing out seeds; the others finish theirs.
                    next.store(first + count, Ordering::Relaxed);
                    return;
                }
            });
        }
    });
    let mut reports = Vec::new();
    let mut violations = Vec::new();
    for result in results.into_inner().unwrap_or_default() {
        match result {
            Ok(report) => reports.push(report),
            Err(violation) => violations.push(violation),
        }
    }
    if let Some(violation) = violations.into_iter().min_by_key(|v| v.seed) {
        return Err(violation);
    }
    reports.sort_by_key(|r| r.seed);
    Ok(reports)
}
