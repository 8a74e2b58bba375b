//! What the load harness measured: latency histograms per call, outcomes,
//! errors by status code, and throughput per second.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Latency range recorded: 1 µs to 60 s, 3 significant digits.
const LATENCY_US_MAX: u64 = 60_000_000;

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_US_MAX, 3).expect("constant histogram bounds are valid")
}

/// One worker's measurements; merged at the end.
#[derive(Clone)]
pub struct Stats {
    pub latency: BTreeMap<&'static str, Histogram<u64>>,
    pub all: Histogram<u64>,
    pub outcomes: BTreeMap<(&'static str, &'static str), u64>,
    pub errors: BTreeMap<&'static str, u64>,
    /// Calls completed per second since the start.
    pub per_second: Vec<u64>,
    pub errors_per_second: Vec<u64>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            latency: BTreeMap::new(),
            all: histogram(),
            outcomes: BTreeMap::new(),
            errors: BTreeMap::new(),
            per_second: Vec::new(),
            errors_per_second: Vec::new(),
        }
    }
}

impl Stats {
    /// Stats with a histogram ready for every call of `mix`: a histogram
    /// is a few hundred kilobytes to allocate and clear, better done before
    /// a run's clock starts than at a worker's first call.
    pub fn for_calls(mix: &[(super::workload::Workload, u32)]) -> Stats {
        let mut stats = Stats::default();
        for (workload, _) in mix {
            for call in workload.calls() {
                stats.latency.entry(call).or_insert_with(histogram);
            }
        }
        stats
    }
}

fn bump(series: &mut Vec<u64>, second: usize) {
    if series.len() <= second {
        series.resize(second + 1, 0);
    }
    series[second] += 1;
}

impl Stats {
    /// Records one call: its kind, latency, and outcome or error code.
    pub fn record(
        &mut self,
        call: &'static str,
        latency: Duration,
        outcome: Result<&'static str, &'static str>,
        second: usize,
    ) {
        let us = (latency.as_micros() as u64).clamp(1, LATENCY_US_MAX);
        let _ = self
            .latency
            .entry(call)
            .or_insert_with(histogram)
            .record(us);
        let _ = self.all.record(us);
        bump(&mut self.per_second, second);
        match outcome {
            Ok(outcome) => *self.outcomes.entry((call, outcome)).or_default() += 1,
            Err(code) => {
                *self.errors.entry(code).or_default() += 1;
                bump(&mut self.errors_per_second, second);
            }
        }
    }

    pub fn merge(&mut self, other: &Stats) {
        for (call, h) in &other.latency {
            let _ = self.latency.entry(call).or_insert_with(histogram).add(h);
        }
        let _ = self.all.add(&other.all);
        for (k, v) in &other.outcomes {
            *self.outcomes.entry(*k).or_default() += v;
        }
        for (k, v) in &other.errors {
            *self.errors.entry(*k).or_default() += v;
        }
        for (i, v) in other.per_second.iter().enumerate() {
            if self.per_second.len() <= i {
                self.per_second.resize(i + 1, 0);
            }
            self.per_second[i] += v;
        }
        for (i, v) in other.errors_per_second.iter().enumerate() {
            if self.errors_per_second.len() <= i {
                self.errors_per_second.resize(i + 1, 0);
            }
            self.errors_per_second[i] += v;
        }
    }

    pub fn calls(&self) -> u64 {
        self.all.len()
    }

    /// Every connection's Stats merged into one (a Stats whose lock a
    /// panicking worker poisoned is left out).
    pub(crate) fn merged(all: &[Arc<Mutex<Stats>>]) -> Stats {
        let mut merged = Stats::default();
        for s in all {
            if let Ok(s) = s.lock() {
                merged.merge(&s);
            }
        }
        merged
    }
}

/// Latency percentiles of one kind of call, in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub per_second: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

pub fn percentiles(h: &Histogram<u64>, elapsed: Duration) -> Percentiles {
    let ms = |us: u64| us as f64 / 1_000.0;
    Percentiles {
        count: h.len(),
        per_second: h.len() as f64 / elapsed.as_secs_f64().max(1e-9),
        p50_ms: ms(h.value_at_quantile(0.50)),
        p90_ms: ms(h.value_at_quantile(0.90)),
        p99_ms: ms(h.value_at_quantile(0.99)),
        p999_ms: ms(h.value_at_quantile(0.999)),
        max_ms: ms(h.max()),
    }
}
