//! The progress line: once a second, the time elapsed, calls per second,
//! errors and p99 latency over every connection.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use super::flow::Tally;
use super::stats::Stats;

/// Prints the progress line each second until `stop` is set, then ends
/// the line.
pub(super) fn spawn_progress(
    tally: Arc<Tally>,
    stop: Arc<AtomicBool>,
    all_stats: Vec<Arc<Mutex<Stats>>>,
    started: Instant,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut last = 0u64;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.tick().await;
        while !stop.load(Ordering::Relaxed) {
            tick.tick().await;
            let now = tally.calls.load(Ordering::Relaxed);
            let merged = Stats::merged(&all_stats);
            let p99 = merged.all.value_at_quantile(0.99) as f64 / 1_000.0;
            eprint!(
                "\r[{:>5.0}s] {:>9} calls/s  total {:>10}  errors {:>6}  p99 {:>7.2} ms   ",
                started.elapsed().as_secs_f64(),
                now - last,
                now,
                tally.errors.load(Ordering::Relaxed),
                p99
            );
            last = now;
        }
        eprintln!();
    })
}
