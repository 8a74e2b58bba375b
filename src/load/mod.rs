//! `stockraft load`: the peak-planning load harness.
//!
//! A run, in order:
//! 1. Connect to every `--server` (an unreachable one is an error, named).
//! 2. Seed stock (`--skus` x `--nodes` counters with `--stock` units, plus
//!    the flash-sale SKUs; over `Stream` calls of its own, whatever the run
//!    uses), or read what is there with `--no-seed`.
//! 3. Drive the workload mix with `--clients` connections (to the leader,
//!    followed through a failover, or spread: see [`Route`]), each with
//!    `--in-flight` operations at once, closed loop (as fast as answers
//!    come) or open loop at `--rate` (latency counted from the intended send
//!    time, so a stall is not hidden by the clients slowing down), for
//!    `--duration` or `--ops`. Each operation in flight is a client
//!    (`flow.rs`: what to send, what the answer means); `drive/` carries
//!    their calls, unary or over one `Stream` call per connection. A
//!    progress line shows elapsed time, ops/s, errors and p99. Ctrl-C stops
//!    early and still reports.
//! 4. Resolve every call whose outcome is unknown (a timeout, an election)
//!    by retrying it with the same id: ids make that safe, and afterwards
//!    every operation's fate is known.
//! 5. Verify: read every touched counter and check that the server agrees
//!    with what the clients were told, and that nothing was oversold.
//! 6. Report: text, `--json FILE`, `--report FILE.html` (charts).
//!
//! This file holds what `stockraft load` is told ([`LoadConfig`], [`Route`])
//! and what a run gives back ([`Outcome`], [`LoadError`]). The others, in
//! the order of a run:
//! - `run.rs`: the run from start to end.
//! - `connect.rs`: the clients' connections, to the leader or spread.
//! - `leader.rs`: finding the leader, and following it through a failover.
//! - `conn.rs`: one connection, unary or one `Stream` call.
//! - `counters.rs`: which counters the run touches; their levels read back.
//! - `seed.rs`: every counter set to its starting stock.
//! - `workload.rs`: the mix, and the SKUs and nodes chosen.
//! - `flow.rs`: each client a state machine with no I/O.
//! - `drive/`: the drivers that carry the clients' calls (unary, or one
//!   `Stream` call per connection), and the retries of calls whose outcome
//!   stayed unknown.
//! - `ledger.rs`: what the clients were told, per counter.
//! - `stats.rs`: latency histograms, outcomes and errors.
//! - `progress.rs`: the progress line.
//! - `verify.rs`: the server's counters checked against the ledger.
//! - `report.rs`: text, JSON and HTML.

mod conn;
mod connect;
mod counters;
mod drive;
mod flow;
mod leader;
mod ledger;
mod progress;
pub mod report;
mod run;
mod seed;
pub mod stats;
mod verify;
pub mod workload;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use thiserror::Error;
use tonic::Status;

use crate::proto::v1 as pb;
use stats::Stats;
use workload::Workload;

pub use run::run;
pub use verify::Verification;

/// Where the clients connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Every client to the cluster's leader, found through the Cluster
    /// service of the servers given, as a leader-aware client library
    /// does: every write is carried out where it arrives. When the leader
    /// stops answering, the clients move to the new one
    /// ([`leader::LeaderRoute`]).
    Leader,
    /// Clients spread over the servers given, in turn; a follower forwards
    /// writes to the leader (one more hop for them).
    Spread,
}

impl Route {
    /// The name `--route` takes and the JSON report writes.
    pub fn name(self) -> &'static str {
        match self {
            Route::Leader => "leader",
            Route::Spread => "spread",
        }
    }
}

impl std::str::FromStr for Route {
    type Err = String;

    fn from_str(s: &str) -> Result<Route, String> {
        for route in [Route::Leader, Route::Spread] {
            if s == route.name() {
                return Ok(route);
            }
        }
        Err(format!("--route {s:?}: choose leader or spread"))
    }
}

/// Everything `stockraft load` can be told.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    pub servers: Vec<String>,
    pub route: Route,
    pub clients: usize,
    pub in_flight: usize,
    pub duration: Option<Duration>,
    pub ops: Option<u64>,
    pub mix: Vec<(Workload, u32)>,
    /// Business operations per second over all clients (open loop).
    pub rate: Option<f64>,
    pub skus: usize,
    pub nodes: usize,
    pub stock: i64,
    pub hot_skus: usize,
    pub hot_stock: i64,
    pub zipf: f64,
    pub seed: bool,
    pub ttl_ms: u64,
    pub stream: bool,
    /// Some(streams): every client calls one operation at a time through
    /// one shared `client::mux::Multiplexed` over that many streams, as an
    /// application written one call at a time would with the Rust client.
    pub mux: Option<usize>,
    pub call_timeout: Duration,
    pub json: Option<PathBuf>,
    pub report: Option<PathBuf>,
    pub verify: bool,
    /// Prefix of every id this run makes, so runs never collide.
    pub run_id: String,
    pub progress: bool,
    /// TLS to the servers, when they serve it.
    pub tls: Option<tonic::transport::ClientTlsConfig>,
    /// The token every call carries, for servers that ask for one.
    pub bearer: crate::client::Bearer,
}

impl LoadConfig {
    /// A connection to `addr` as this run calls: its TLS, its token.
    async fn dial(
        &self,
        addr: &str,
        timeout: Duration,
    ) -> Result<crate::client::Authed, crate::client::ClientError> {
        let channel = crate::client::channel_with(addr, timeout, self.tls.clone()).await?;
        Ok(tonic::service::interceptor::InterceptedService::new(
            channel,
            self.bearer.clone(),
        ))
    }
}

/// Why a run could not be made.
#[derive(Debug, Error)]
pub enum LoadError {
    #[error("cannot connect to {addr}: {reason}; is a stockraft server running there?")]
    Unreachable { addr: String, reason: String },
    #[error("the cluster has no leader ({0}); start a majority of its nodes and retry")]
    NoLeader(String),
    #[error("seeding stock failed: {0}")]
    Seed(String),
    #[error("{0}")]
    Config(String),
}

/// The outcome of a run.
pub struct Outcome {
    pub stats: Stats,
    pub elapsed: Duration,
    pub verification: Option<Verification>,
    pub interrupted: bool,
    /// Times the clients moved to a new leader (`--route leader`).
    pub leader_moves: u64,
    pub config: LoadConfig,
}

/// The harness's maps, hashed fast: a worker looks one up per line.
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// An outcome's name, as the report lists it.
fn outcome_name(code: i32) -> &'static str {
    pb::Outcome::try_from(code)
        .map(|o| o.short_name())
        .unwrap_or("UNKNOWN_OUTCOME")
}

/// A status code's name, as the report lists it.
fn code_name(status: &Status) -> &'static str {
    crate::server::status::code_label(status.code())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_route_parses_from_the_name_it_reports() {
        for route in [Route::Leader, Route::Spread] {
            assert_eq!(route.name().parse::<Route>(), Ok(route));
        }
        let error = "nearest".parse::<Route>().unwrap_err();
        assert!(error.contains("leader or spread"), "{error}");
    }
}
