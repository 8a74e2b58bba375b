//! What the benchmark tools in `src/bin/` share: the ceiling service's
//! generated code and a reading of the process's resident memory.
//!
//! - `ceiling`: the transport's ceiling (a trivial tonic service and its
//!   client) and the durable floor (`serve-durable`), for compare.sh.
//! - `big_state`: ten million counters: memory, snapshot and restart.
//! - `hold_memory`: what an open hold costs the state machine.
//! - `freeze_holds`: how long freezing a snapshot of many holds takes.
//!
//! `compare.sh` runs them beside stockraft, Redis and PostgreSQL and prints
//! the table BENCHMARKS.md holds.

/// The transport-ceiling service, package `stockraft.bench.v1`.
pub mod proto {
    #![allow(clippy::all, clippy::too_many_lines, missing_docs)]
    tonic::include_proto!("stockraft.bench.v1");
}

/// The process's resident set size in KiB, from /proc/self/status (so it
/// includes the allocator's own overhead); 0 where that file is missing.
pub fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    for line in status.lines() {
        if let Some(rest) = line.strip_prefix("VmRSS:") {
            return rest
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .unwrap_or(0);
        }
    }
    0
}
