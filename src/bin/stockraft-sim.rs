//! `stockraft-sim`: runs the deterministic simulator over many seeds, for
//! long bug hunts, and reports seeds per second. A failing seed prints
//! itself and replays exactly with `--seed N`.
//!
//!   stockraft-sim --seeds 100000 [--first 0] [--ops 2000] [--threads 2]
//!   stockraft-sim --seed 1234 [--bug fsync-lies|skip-read-index]
//!   stockraft-sim --seed 60538492796 --no-leader-removals   (a seed whose
//!   run has no leader removal drawn on purpose, replayed as it was made)

// Functions of at most 70 code lines (clippy.toml).
#![warn(clippy::too_many_lines)]

use std::time::Instant;

use anyhow::{anyhow, Result};
use clap::Parser;
use stockraft::sim::{run, run_seeds, Bug, SimConfig};

#[derive(Debug, Parser)]
#[command(
    name = "stockraft-sim",
    about = "Deterministic simulation of a stockraft cluster under faults"
)]
struct Args {
    /// Run this one seed and print its report.
    #[arg(long, conflicts_with = "seeds")]
    seed: Option<u64>,
    /// How many seeds to run.
    #[arg(long, default_value_t = 1_000)]
    seeds: u64,
    /// The first seed.
    #[arg(long, default_value_t = 0)]
    first: u64,
    /// Client operations per seed.
    #[arg(long, default_value_t = 2_000)]
    ops: usize,
    /// Threads running seeds.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Inject a known bug (to see the checkers catch it).
    #[arg(long, value_parser = ["fsync-lies", "skip-read-index"])]
    bug: Option<String>,
    /// The fault mix before membership changes removed the leader on
    /// purpose: replays seeds found then exactly as they ran.
    #[arg(long)]
    no_leader_removals: bool,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let bug = match args.bug.as_deref() {
        Some("fsync-lies") => Some(Bug::FsyncLies),
        Some("skip-read-index") => Some(Bug::SkipReadIndex),
        _ => None,
    };
    let template = SimConfig {
        leader_removals: !args.no_leader_removals,
        ..SimConfig::new(args.first, args.ops, bug)
    };
    if let Some(seed) = args.seed {
        return match run(&SimConfig { seed, ..template }) {
            Ok(report) => {
                println!("{report:#?}");
                Ok(())
            }
            Err(violation) => Err(anyhow!("{violation}")),
        };
    }
    let started = Instant::now();
    let mut done = 0u64;
    let mut first = args.first;
    let end = args.first + args.seeds;
    let mut acked = 0usize;
    let mut crashes = 0u64;
    let mut partitions = 0u64;
    let mut leader_removals = 0u64;
    let mut step_downs = 0u64;
    let mut clock_jumps = 0u64;
    let mut clock_step_downs = 0u64;
    let mut refused = std::collections::BTreeMap::<&str, u64>::new();
    // In chunks, so progress shows on long hunts.
    while first < end {
        let count = (end - first).min(200);
        let reports =
            run_seeds(first, count, &template, args.threads).map_err(|v| anyhow!("{v}"))?;
        done += reports.len() as u64;
        acked += reports.iter().map(|r| r.ops_acked).sum::<usize>();
        crashes += reports.iter().map(|r| r.crashes).sum::<u64>();
        partitions += reports.iter().map(|r| r.partitions).sum::<u64>();
        leader_removals += reports.iter().map(|r| r.leader_removals).sum::<u64>();
        step_downs += reports.iter().map(|r| r.removed_step_downs).sum::<u64>();
        clock_jumps += reports.iter().map(|r| r.clock_jumps).sum::<u64>();
        clock_step_downs += reports.iter().map(|r| r.clock_step_downs).sum::<u64>();
        for report in &reports {
            for (reason, count) in &report.refused {
                *refused.entry(reason).or_default() += count;
            }
        }
        first += count;
        let elapsed = started.elapsed().as_secs_f64();
        eprintln!(
            "{done} seeds passed in {elapsed:.1} s ({:.2} seeds/s): {acked} acknowledged writes, {crashes} crashes, {partitions} partitions, {leader_removals} leader removals, {step_downs} removed leaders stepped down, {clock_jumps} leader clocks a day off ({clock_step_downs} clock step-downs); peer messages refused: {refused:?}",
            done as f64 / elapsed
        );
    }
    Ok(())
}
