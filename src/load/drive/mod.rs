//! The drivers that carry the clients' calls (see `flow.rs`) to a server,
//! and the retries of calls whose outcome stayed unknown.
//!
//! - **Unary** ([`Worker::run_unary`]): each client awaits its calls in
//!   turn; a connection's clients are polled by one task.
//! - **Stream** ([`drive_stream`]): one task per connection drives every
//!   client of that connection over one `Stream` call of its own. A call's
//!   id names its client (`id % clients`); an answer goes straight to that
//!   client, whose next call is sent at once. No future, channel, lock or
//!   timer per call: the harness's own cost per operation is what a load
//!   generator must keep small, as it shares the machine with the server
//!   it measures. Calls time out by sweeps, as [`super::conn::StreamConn`]'s
//!   do.
//!
//! Both end when the run does (Ctrl-C, `--duration` or `--ops`), once the
//! operations begun are done; then each client retries its unknown calls.
//!
//! Files: this one holds what both share ([`Run`]) and the unary driver
//! with the retries ([`Worker`]); `stream.rs` the stream driver.

mod stream;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tonic::{Code, Status};

use super::conn::Conn;
use super::flow::{is_unavailable, Client, Tally, Unknown};
use super::leader::LeaderRoute;
use super::stats::Stats;
use crate::proto::v1 as pb;

pub use stream::drive_stream;

/// Most retries of one call with an unknown outcome.
const RESOLVE_ATTEMPTS_MAX: u32 = 20;

/// What every driver of a run shares: when to stop, and the open loop's
/// pace.
pub struct Run {
    pub stop: Arc<AtomicBool>,
    pub deadline: Option<Instant>,
    /// `--ops`: business operations begun over all clients, at most.
    pub ops_limit: Option<u64>,
    pub business_ops: AtomicU64,
    pub started: Instant,
    /// Open loop: the time between one client's operations.
    pub interval: Option<Duration>,
    pub clients_total: usize,
    pub tally: Arc<Tally>,
    pub call_timeout: Duration,
    /// Time given to retrying unknown calls after the run.
    pub resolve_budget: Duration,
}

impl Run {
    /// When client `index`'s operation number `k` is due: now in a closed
    /// loop; in an open loop at a fixed pace, staggered across clients.
    fn intended(&self, index: usize, k: u32, now: Instant) -> Instant {
        let Some(interval) = self.interval else {
            return now;
        };
        let offset = interval.mul_f64(index as f64 / self.clients_total.max(1) as f64);
        self.started + offset + interval * k
    }

    /// Whether an operation due at `at` may begin; counts it against
    /// `--ops` when it may.
    fn may_begin(&self, at: Instant) -> bool {
        if self.stop.load(Ordering::Relaxed) || self.deadline.is_some_and(|d| at >= d) {
            return false;
        }
        match self.ops_limit {
            Some(limit) => self.business_ops.fetch_add(1, Ordering::Relaxed) < limit,
            None => true,
        }
    }

    /// Whole seconds since the run started, for the per-second series.
    fn second(&self, now: Instant) -> usize {
        now.saturating_duration_since(self.started).as_secs() as usize
    }
}

/// A client with its connection: what the unary driver runs, and what
/// retries a client's unknown calls after either driver.
pub struct Worker {
    pub client: Client,
    pub conn: Arc<Conn>,
    /// Which client connection this is, and from which of the leader
    /// route's moves (see [`LeaderRoute`]); no route when spread.
    pub slot: usize,
    pub epoch: u64,
    pub route: Option<Arc<LeaderRoute>>,
    pub stats: Arc<Mutex<Stats>>,
}

impl Worker {
    /// After a call failed UNAVAILABLE, on the leader route: takes the
    /// connection to the leader as it is now.
    async fn follow_leader(&mut self) {
        let Some(route) = self.route.clone() else {
            return;
        };
        let (epoch, conn) = route.after_failure(self.slot, self.epoch).await;
        self.epoch = epoch;
        if let Some(conn) = conn {
            self.conn = conn;
        }
    }

    /// Client number `index` of the run, over unary calls: each business
    /// operation's calls in turn, until the run ends; then its unknown
    /// calls are retried. Returns when it stopped sending and how many
    /// unknown calls an answer resolved.
    pub async fn run_unary(mut self, run: Arc<Run>, index: usize) -> (Instant, usize) {
        let mut k = 0u32;
        loop {
            // One clock read for the deadline and a closed loop's send time
            // (a read is not free in a VM).
            let now = Instant::now();
            let intended = run.intended(index, k, now);
            k += 1;
            if !run.may_begin(intended.max(now)) {
                break;
            }
            if intended > now {
                tokio::time::sleep_until(intended.into()).await;
            }
            let (mut flow, mut op) = self.client.begin();
            let mut sent = intended;
            loop {
                let answer = self.conn.call(op).await;
                let now = Instant::now();
                let unavailable = is_unavailable(&answer);
                let next = {
                    let mut stats = self.stats.lock().unwrap_or_else(PoisonError::into_inner);
                    self.client.answered(
                        flow,
                        answer,
                        now.saturating_duration_since(sent),
                        run.second(now),
                        &mut stats,
                        &run.tally,
                    )
                };
                if unavailable {
                    self.follow_leader().await;
                }
                let Some((next_flow, next_op)) = next else {
                    break;
                };
                flow = next_flow;
                op = next_op;
                sent = now;
            }
        }
        let run_end = Instant::now();
        let resolved = self.resolve(run_end + run.resolve_budget).await;
        (run_end, resolved)
    }

    /// Retries every call with an unknown outcome (same id) until it
    /// answers, so the ledger knows every operation's fate; a call still
    /// unanswered after [`RESOLVE_ATTEMPTS_MAX`] tries, or once `deadline`
    /// has passed, leaves its counters uncertain. Returns how many calls
    /// were resolved by an answer.
    pub async fn resolve(&mut self, deadline: Instant) -> usize {
        let unknown = std::mem::take(&mut self.client.unknown);
        let mut resolved = 0;
        for item in unknown {
            let mut attempts = 0;
            loop {
                if Instant::now() >= deadline || attempts >= RESOLVE_ATTEMPTS_MAX {
                    self.client.flag_uncertain(&item);
                    break;
                }
                attempts += 1;
                let failed = match self.retry(&item).await {
                    Ok(()) => {
                        resolved += 1;
                        break;
                    }
                    Err(status) => status,
                };
                if failed.code() == Code::Unavailable {
                    self.follow_leader().await;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        resolved
    }

    /// One retry of a call with an unknown outcome; Ok once it answered
    /// (the ledger then records what it did), else why it did not.
    async fn retry(&self, item: &Unknown) -> Result<(), Status> {
        let ledger = self.client.ledger();
        match item {
            Unknown::Reserve(request) => match self.conn.reserve(request.clone()).await {
                Ok(r) => {
                    if r.outcome == pb::Outcome::Reserved as i32 {
                        ledger.held(&request.lines);
                    }
                    Ok(())
                }
                Err(status) => Err(status),
            },
            Unknown::Commit(id, lines) => match self
                .conn
                .commit(pb::CommitRequest {
                    reservation_id: id.clone(),
                })
                .await
            {
                Ok(r) => {
                    if r.outcome == pb::Outcome::Committed as i32 {
                        ledger.consumed(lines);
                    }
                    Ok(())
                }
                Err(status) => Err(status),
            },
            Unknown::Release(id, _) => self
                .conn
                .release(pb::ReleaseRequest {
                    reservation_id: id.clone(),
                })
                .await
                .map(|_| ()),
            Unknown::Sell(request) => match self.conn.sell(request.clone()).await {
                Ok(_) => {
                    ledger.add(&request.sku, &request.node, |a| &a.sold, request.qty);
                    Ok(())
                }
                Err(status) => Err(status),
            },
            Unknown::Adjust(request) => match self.conn.adjust(request.clone()).await {
                Ok(_) => {
                    ledger.add(&request.sku, &request.node, |a| &a.received, request.delta);
                    Ok(())
                }
                Err(status) => Err(status),
            },
        }
    }
}
