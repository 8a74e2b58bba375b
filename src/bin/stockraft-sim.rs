//! `stockraft-sim`: runs the deterministic simulator over many seeds, for
//! long bug hunts, and reports seeds per second. A failing seed prints
//! itself, the kind of rule it broke, and how to replay it exactly.
//!
//!   stockraft-sim --seeds 100000 [--first 0] [--ops 2000] [--threads 2]
//!   stockraft-sim --hunt [--first N] [--seconds 3600]   (fresh seeds from a
//!   random first one, or from N, until the first failure or the time is up)
//!   stockraft-sim --seed 1234 [--bug fsync-lies|skip-read-index|rebuild-votes|damage-ignored|
//!   ignore-failed-sync]
//!   stockraft-sim --seed 60538492796 --no-leader-removals   (a seed whose
//!   run has no leader removal drawn on purpose, replayed as it was made)

// Functions of at most 70 code lines (clippy.toml).
#![warn(clippy::too_many_lines)]

use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use clap::Parser;
use stockraft::sim::{run, run_seeds, Bug, SimConfig, Totals};

/// Seeds run between two progress lines.
const CHUNK_SEEDS: u64 = 200;

/// Fresh hunts start below this, so `first + seeds` never wraps and a
/// seed stays short enough to type.
const HUNT_FIRST_MAX: u64 = 1 << 40;

#[derive(Debug, Parser)]
#[command(
    name = "stockraft-sim",
    about = "Deterministic simulation of a stockraft cluster under faults"
)]
struct Args {
    /// Run this one seed and print its report.
    #[arg(long, conflicts_with_all = ["seeds", "hunt"])]
    seed: Option<u64>,
    /// How many seeds to run.
    #[arg(long, default_value_t = 1_000)]
    seeds: u64,
    /// The first seed (a hunt draws one at random unless given).
    #[arg(long)]
    first: Option<u64>,
    /// Run fresh seeds until the first failure (or `--seconds`).
    #[arg(long)]
    hunt: bool,
    /// Stop a hunt after this long, passing.
    #[arg(long)]
    seconds: Option<u64>,
    /// Client operations per seed.
    #[arg(long, default_value_t = 2_000)]
    ops: usize,
    /// Threads running seeds.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Inject a known bug (to see the checkers catch it).
    #[arg(long, value_parser = ["fsync-lies", "skip-read-index", "rebuild-votes", "ignore-failed-sync", "damage-ignored"])]
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
        Some("rebuild-votes") => Some(Bug::RebuildVotes),
        Some("ignore-failed-sync") => Some(Bug::IgnoreFailedSync),
        Some("damage-ignored") => Some(Bug::DamageIgnored),
        _ => None,
    };
    let first = match (args.first, args.hunt) {
        (Some(first), _) => first,
        (None, true) => rand::random::<u64>() % HUNT_FIRST_MAX,
        (None, false) => 0,
    };
    let template = SimConfig {
        leader_removals: !args.no_leader_removals,
        ..SimConfig::new(first, args.ops, bug)
    };
    if let Some(seed) = args.seed {
        let report = run(&SimConfig { seed, ..template }).map_err(|v| anyhow!("{v}"))?;
        println!("{report:#?}");
        return Ok(());
    }
    let (count, deadline) = if args.hunt {
        eprintln!("hunting from seed {first}");
        let limit = args.seconds.map(Duration::from_secs);
        (u64::MAX - first, limit)
    } else {
        (args.seeds, None)
    };
    run_range(&template, first, count, deadline, args.threads)
}

/// Runs seeds `first..first + count` in chunks, printing progress after
/// each, until one fails or `deadline` passes.
fn run_range(
    template: &SimConfig,
    first: u64,
    count: u64,
    deadline: Option<Duration>,
    threads: usize,
) -> Result<()> {
    let started = Instant::now();
    let mut totals = Totals::default();
    let mut next = first;
    let end = first.saturating_add(count);
    while next < end {
        if deadline.is_some_and(|limit| started.elapsed() >= limit) {
            break;
        }
        let chunk = (end - next).min(CHUNK_SEEDS);
        let reports = match run_seeds(next, chunk, template, threads) {
            Ok(reports) => reports,
            Err(violation) => {
                progress(&totals, first, started.elapsed());
                return Err(anyhow!("{violation}"));
            }
        };
        for report in &reports {
            totals.add(report);
        }
        next += chunk;
        progress(&totals, first, started.elapsed());
    }
    Ok(())
}

/// One progress line: what passed so far, and how fast.
fn progress(totals: &Totals, first: u64, elapsed: Duration) {
    let seconds = elapsed.as_secs_f64();
    eprintln!(
        "from seed {first}, passed in {seconds:.1} s ({:.2} seeds/s): {totals}",
        totals.seeds as f64 / seconds
    );
}
