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
//!    (`flow.rs`: what to send, what the answer means); `drive.rs` carries
//!    their calls, unary or over one `Stream` call per connection. A
//!    progress line shows elapsed time, ops/s, errors and p99. Ctrl-C stops
//!    early and still reports.
//! 4. Resolve every call whose outcome is unknown (a timeout, an election)
//!    by retrying it with the same id: ids make that safe, and afterwards
//!    every operation's fate is known.
//! 5. Verify: read every touched counter and check that the server agrees
//!    with what the clients were told, and that nothing was oversold.
//! 6. Report: text, `--json FILE`, `--report FILE.html` (charts).

pub mod conn;
mod drive;
mod flow;
pub mod report;
pub mod stats;
pub mod workload;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::stream::{FuturesUnordered, StreamExt};
use rand::SeedableRng;
use thiserror::Error;
use tonic::Status;

use crate::proto::v1 as pb;
use crate::proto::v1::cluster_client::ClusterClient;
use conn::{Conn, StreamConn};
use drive::{drive_stream, Run, Worker};
use flow::{Client, Tally};
use stats::Stats;
use workload::{hot_sku_name, node_name, sku_name, Chooser, Workload, HOT_NODE};

/// Where the clients connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Every client to the cluster's leader, found through the Cluster
    /// service of the servers given, as a leader-aware client library
    /// does: every write is carried out where it arrives. When the leader
    /// stops answering, the clients move to the new one ([`LeaderRoute`]).
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
    #[error("cannot write {path}: {error}")]
    Write { path: String, error: std::io::Error },
}

/// What the clients were told about one counter, summed over all workers.
#[derive(Debug, Clone, Default)]
struct Account {
    committed: i64,
    sold: i64,
    received: i64,
    /// Units in holds the clients know are open.
    held: i64,
    /// A set-on-hand made on_hand absolute: only `reserved` is checkable.
    absolute: bool,
    /// A call on it never got a definite answer.
    uncertain: bool,
}

/// One counter's [`Account`], updated by every worker at once.
#[derive(Debug, Default)]
struct AccountCell {
    committed: AtomicI64,
    sold: AtomicI64,
    received: AtomicI64,
    held: AtomicI64,
    absolute: AtomicBool,
    uncertain: AtomicBool,
}

impl AccountCell {
    fn read(&self) -> Account {
        Account {
            committed: self.committed.load(Ordering::Relaxed),
            sold: self.sold.load(Ordering::Relaxed),
            received: self.received.load(Ordering::Relaxed),
            held: self.held.load(Ordering::Relaxed),
            absolute: self.absolute.load(Ordering::Relaxed),
            uncertain: self.uncertain.load(Ordering::Relaxed),
        }
    }
}

/// The harness's maps, hashed fast: a worker looks one up per line.
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// What the clients were told, per counter of the run: one table shared by
/// every worker, so memory stays one account per counter however many
/// workers run, and a call costs a lookup and an atomic add.
#[derive(Debug)]
struct Ledger {
    /// A counter's place in `accounts`, by SKU then node (read-only once
    /// built; looked up by the names a call carries, without allocating).
    index: FastMap<String, FastMap<String, usize>>,
    /// The same places by position, for the workers' hot path (an array
    /// read instead of two string-keyed lookups in tables of a hundred
    /// thousand entries): `spread[sku * nodes + node]` for the spread
    /// counters, `hot[i]` for the flash-sale ones, [`NO_ACCOUNT`] where
    /// the run has no such counter. Built from `index` by name, so both
    /// agree whatever order [`counters`] lists the counters in.
    spread: Vec<u32>,
    nodes: usize,
    hot: Vec<u32>,
    /// In the order of the run's counters (see [`counters`]).
    accounts: Vec<AccountCell>,
    /// Calls on counters outside the table: a harness bug if ever
    /// non-zero, and the verification fails when there are any.
    untracked: AtomicU64,
}

/// A place in [`Ledger::spread`] or [`Ledger::hot`] with no counter.
const NO_ACCOUNT: u32 = u32::MAX;

/// A counter's place in the ledger's accounts, as a worker carries it
/// beside the line it sent; None for a counter the run does not have.
type Place = Option<usize>;

impl Ledger {
    /// `skus`, `nodes` and `hot_skus` say which positions the workers
    /// will ask for (see [`Ledger::spread_account`], [`Ledger::hot_account`]).
    /// `keys` is bounded by [`crate::limits::COUNTERS_MAX`] (checked when
    /// the run starts), far below [`NO_ACCOUNT`].
    fn new(keys: &[Key], skus: usize, nodes: usize, hot_skus: usize) -> Ledger {
        assert!(
            keys.len() < NO_ACCOUNT as usize,
            "more counters than the ledger places"
        );
        let mut index: FastMap<String, FastMap<String, usize>> = FastMap::default();
        for (i, (sku, node)) in keys.iter().enumerate() {
            index
                .entry(sku.clone())
                .or_default()
                .insert(node.clone(), i);
        }
        let place = |sku: &str, node: &str| -> u32 {
            let found = index.get(sku).and_then(|by_node| by_node.get(node));
            // Below NO_ACCOUNT: checked against keys.len() above.
            found.map_or(NO_ACCOUNT, |i| *i as u32)
        };
        let mut spread = Vec::new();
        if index.contains_key(&sku_name(0)) {
            spread.reserve(skus.saturating_mul(nodes));
            for s in 0..skus {
                let sku = sku_name(s);
                for n in 0..nodes {
                    spread.push(place(&sku, &node_name(n)));
                }
            }
        }
        let mut hot = Vec::with_capacity(hot_skus);
        for h in 0..hot_skus {
            hot.push(place(&hot_sku_name(h), HOT_NODE));
        }
        let mut accounts = Vec::with_capacity(keys.len());
        accounts.resize_with(keys.len(), AccountCell::default);
        Ledger {
            index,
            spread,
            nodes,
            hot,
            accounts,
            untracked: AtomicU64::new(0),
        }
    }

    /// The place of SKU number `sku` at node number `node` (the numbers
    /// [`Chooser`] picks), as [`Ledger::place`] would find it by name.
    fn spread_account(&self, sku: usize, node: usize) -> Place {
        let at = sku.checked_mul(self.nodes)?.checked_add(node)?;
        let place = *self.spread.get(at)?;
        (place != NO_ACCOUNT).then_some(place as usize)
    }

    /// The place of flash-sale SKU number `i` at [`HOT_NODE`].
    fn hot_account(&self, i: usize) -> Place {
        let place = *self.hot.get(i)?;
        (place != NO_ACCOUNT).then_some(place as usize)
    }

    /// The place of a counter of the run, by name. Every line the workers
    /// send names one; any other would be a harness bug, and is reported
    /// by the verification as a counter it could not check.
    fn place(&self, sku: &str, node: &str) -> Place {
        self.index.get(sku)?.get(node).copied()
    }

    fn add_at(&self, place: Place, field: impl Fn(&AccountCell) -> &AtomicI64, qty: i64) {
        match place.and_then(|i| self.accounts.get(i)) {
            Some(a) => {
                field(a).fetch_add(qty, Ordering::Relaxed);
            }
            None => self.untracked(),
        }
    }

    fn add(&self, sku: &str, node: &str, field: impl Fn(&AccountCell) -> &AtomicI64, qty: i64) {
        self.add_at(self.place(sku, node), field, qty);
    }

    fn flag(&self, sku: &str, node: &str, field: impl Fn(&AccountCell) -> &AtomicBool) {
        match self.place(sku, node).and_then(|i| self.accounts.get(i)) {
            Some(a) => field(a).store(true, Ordering::Relaxed),
            None => self.untracked(),
        }
    }

    fn untracked(&self) {
        self.untracked.fetch_add(1, Ordering::Relaxed);
    }

    fn consumed(&self, lines: &[pb::Line]) {
        for l in lines {
            self.add(&l.sku, &l.node, |a| &a.committed, l.qty);
        }
    }

    fn held(&self, lines: &[pb::Line]) {
        for l in lines {
            self.add(&l.sku, &l.node, |a| &a.held, l.qty);
        }
    }
}

type Key = (String, String);

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

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Verification {
    pub counters_checked: usize,
    pub reserved_checked: usize,
    pub on_hand_checked: usize,
    pub oversell_checked: usize,
    pub uncertain: usize,
    pub resolved_by_retry: usize,
    pub mismatches: Vec<String>,
    pub oversold: Vec<String>,
    /// Why the counters could not be read back at all (no server given
    /// answered); nothing was checked then.
    pub unreadable: Option<String>,
}

impl Verification {
    /// Read back, nothing disagreeing, and something proven: a run whose
    /// every counter was left uncertain checked nothing, and does not pass.
    pub fn passed(&self) -> bool {
        self.unreadable.is_none()
            && !self.inconclusive()
            && self.mismatches.is_empty()
            && self.oversold.is_empty()
    }

    /// Every counter read back was touched by a call whose outcome stayed
    /// unknown, so none could be checked.
    pub fn inconclusive(&self) -> bool {
        self.counters_checked > 0 && self.uncertain == self.counters_checked
    }
}

fn outcome_name(code: i32) -> &'static str {
    pb::Outcome::try_from(code)
        .map(|o| o.as_str_name())
        .unwrap_or("UNKNOWN_OUTCOME")
}

fn code_name(status: &Status) -> &'static str {
    crate::server::status::code_label(status.code())
}

/// The clients' connections, where they go, and with `--route leader`
/// what moves them to a new leader after a failover.
struct Connected {
    conns: Vec<Arc<Conn>>,
    /// The addresses the clients' connections were opened to (the leader
    /// alone on the leader route): the seed goes there too.
    targets: Vec<String>,
    route: Option<Arc<LeaderRoute>>,
}

async fn connect(config: &LoadConfig) -> Result<Connected, LoadError> {
    // Every server named must answer before the run starts: a typo in
    // --server is a clear error, not a run with fewer endpoints.
    for addr in &config.servers {
        config
            .dial(addr, config.call_timeout)
            .await
            .map_err(|e| LoadError::Unreachable {
                addr: addr.clone(),
                reason: match e {
                    crate::client::ClientError::Connect { error, .. } => error.to_string(),
                    other => other.to_string(),
                },
            })?;
    }
    match config.route {
        Route::Spread => Ok(Connected {
            conns: open_conns(config, &config.servers).await?,
            targets: config.servers.clone(),
            route: None,
        }),
        Route::Leader => {
            let found = find_leader(config, &config.servers, config.call_timeout).await?;
            let targets = vec![found.leader.clone()];
            let conns = open_conns(config, &targets).await?;
            let mut known = config.servers.clone();
            for addr in found.members.iter().cloned() {
                if !known.contains(&addr) {
                    known.push(addr);
                }
            }
            let route = LeaderRoute {
                config: config.clone(),
                known,
                current: tokio::sync::Mutex::new(Placement {
                    epoch: 0,
                    conns: conns.clone(),
                    leader: found.leader,
                    opened: Instant::now(),
                }),
                moves: AtomicU64::new(0),
            };
            Ok(Connected {
                conns,
                targets,
                route: Some(Arc::new(route)),
            })
        }
    }
}

/// One connection per client, client `i` to `targets[i % targets.len()]`.
async fn open_conns(config: &LoadConfig, targets: &[String]) -> Result<Vec<Arc<Conn>>, LoadError> {
    let mut conns = Vec::with_capacity(config.clients);
    for i in 0..config.clients {
        let addr = &targets[i % targets.len()];
        // One connection per client, as each client of a real fleet has.
        let channel =
            config
                .dial(addr, config.call_timeout)
                .await
                .map_err(|e| LoadError::Unreachable {
                    addr: addr.clone(),
                    reason: e.to_string(),
                })?;
        let conn = if config.stream {
            Conn::Stream(
                StreamConn::open(channel, config.call_timeout)
                    .await
                    .map_err(|s| LoadError::Unreachable {
                        addr: addr.clone(),
                        reason: s.message().to_string(),
                    })?,
            )
        } else {
            Conn::Unary(crate::proto::v1::inventory_client::InventoryClient::new(
                channel,
            ))
        };
        conns.push(Arc::new(conn));
    }
    Ok(conns)
}

/// Where `--route leader` clients send their calls, kept current through
/// a failover, as a leader-aware client library would: when a call fails
/// UNAVAILABLE (the leader's process is gone, or its connection broke),
/// the first worker to see it asks the members it knows for the leader and
/// opens every client's connection anew there; the other workers take the
/// new connections when they next fail. (A follower forwards writes, so a
/// live server that merely stopped leading needs no move.)
struct LeaderRoute {
    config: LoadConfig,
    /// Member addresses: those of `--server`, then those the cluster's
    /// status listed when the run started.
    known: Vec<String>,
    current: tokio::sync::Mutex<Placement>,
    /// Moves made, for the report.
    moves: AtomicU64,
}

/// The connections of one leader, and which move made them.
struct Placement {
    /// Bumped by each attempt to move: a worker whose connection is of an
    /// older epoch takes the current one instead of moving again.
    epoch: u64,
    conns: Vec<Arc<Conn>>,
    leader: String,
    /// When `conns` were opened.
    opened: Instant,
}

/// A leader just moved to may answer UNAVAILABLE for a moment while it
/// takes over; its connections are not opened anew within this time.
const LEADER_REOPEN_INTERVAL_MIN: Duration = Duration::from_secs(1);

impl LeaderRoute {
    /// Client `slot`'s connection after one of `epoch` failed: a new one,
    /// at the leader found now if no other worker moved since `epoch`.
    /// While the cluster elects (up to the call timeout) the worker waits
    /// here, as calls to a cluster without a leader would. Should no
    /// leader be found, the connections stay as they were and the next
    /// failure tries again.
    async fn after_failure(&self, slot: usize, epoch: u64) -> (u64, Option<Arc<Conn>>) {
        let mut current = self.current.lock().await;
        if current.epoch == epoch {
            current.epoch += 1;
            match find_leader(&self.config, &self.known, self.config.call_timeout).await {
                Ok(found)
                    if found.leader == current.leader
                        && current.opened.elapsed() < LEADER_REOPEN_INTERVAL_MIN => {}
                Ok(found) => {
                    match open_conns(&self.config, std::slice::from_ref(&found.leader)).await {
                        Ok(conns) => {
                            self.moves.fetch_add(1, Ordering::Relaxed);
                            if self.config.progress {
                                eprintln!("leader unreachable: clients moved to {}", found.leader);
                            }
                            current.conns = conns;
                            current.leader = found.leader;
                            current.opened = Instant::now();
                        }
                        Err(e) => {
                            if self.config.progress {
                                eprintln!("leader unreachable, and the new one not yet: {e}");
                            }
                        }
                    }
                }
                Err(e) => {
                    if self.config.progress {
                        eprintln!("leader unreachable, and no new one found yet: {e}");
                    }
                }
            }
        }
        let conn = current
            .conns
            .get(slot % current.conns.len().max(1))
            .cloned();
        (current.epoch, conn)
    }
}

/// A call the server will not take from this caller, however often asked.
fn is_refused(status: &Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::PermissionDenied | tonic::Code::Unauthenticated
    )
}

/// A leader as a member of the cluster names it.
struct FoundLeader {
    leader: String,
    /// Every member's address, as that member listed them.
    members: Vec<String>,
}

/// The leader's address, as the first of `addrs` that answers knows it,
/// waiting for an election up to `timeout`.
async fn find_leader(
    config: &LoadConfig,
    addrs: &[String],
    timeout: Duration,
) -> Result<FoundLeader, LoadError> {
    let deadline = Instant::now() + timeout;
    let mut last = String::from("no server answered the cluster status");
    loop {
        for addr in addrs {
            let channel = match config.dial(addr, timeout).await {
                Ok(channel) => channel,
                Err(e) => {
                    last = e.to_string();
                    continue;
                }
            };
            let mut client = ClusterClient::new(channel);
            let status = match client
                .status(pb::ClusterStatusRequest { with_digest: false })
                .await
            {
                Ok(status) => status.into_inner(),
                Err(e) if is_refused(&e) => {
                    return Err(LoadError::NoLeader(format!(
                        "{addr} refused the cluster status ({}): following the leader needs an \
                         admin token; pass one, or --route spread",
                        e.message()
                    )))
                }
                Err(e) => {
                    last = format!("{addr}: {}", e.message());
                    continue;
                }
            };
            if status.leader_id == 0 {
                last = format!("{addr} knows no leader");
                continue;
            }
            match status
                .members
                .iter()
                .find(|m| m.node_id == status.leader_id)
            {
                // Just after the leader died its followers still name it,
                // until their election timeout: keep asking until the one
                // named answers.
                Some(leader) => match config.dial(&leader.address, timeout).await {
                    Ok(_) => {
                        return Ok(FoundLeader {
                            leader: leader.address.clone(),
                            members: status.members.iter().map(|m| m.address.clone()).collect(),
                        })
                    }
                    Err(e) => last = format!("{addr} names {} as leader: {e}", leader.address),
                },
                None => {
                    last = format!(
                        "{addr} names node {} as leader but not its address",
                        status.leader_id
                    )
                }
            }
        }
        if Instant::now() >= deadline {
            return Err(LoadError::NoLeader(last));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn counters(config: &LoadConfig) -> Vec<Key> {
    let mut keys = Vec::new();
    let uses = |w: Workload| config.mix.iter().any(|(m, _)| *m == w);
    if uses(Workload::Checkout)
        || uses(Workload::Reserve)
        || uses(Workload::Pos)
        || uses(Workload::Restock)
        || uses(Workload::Browse)
    {
        for s in 0..config.skus {
            for n in 0..config.nodes {
                keys.push((sku_name(s), node_name(n)));
            }
        }
    }
    if uses(Workload::FlashSale) {
        for h in 0..config.hot_skus {
            keys.push((hot_sku_name(h), HOT_NODE.to_string()));
        }
    }
    keys
}

/// Streams the seed goes over, and calls in flight on each. Seeding is one
/// SetOnHand per counter; it runs over `Stream` calls whatever the run
/// itself uses: over unary calls (one in flight per client connection, as
/// it did) a 64-client unary run of 1 s over 100,000 counters took 12-15 s
/// in all on this project's machine, and 2.7-3.0 s seeding this way
/// (stop 24's measurements in BENCHMARKS.md's history).
const SEED_STREAMS: usize = 16;
const SEED_IN_FLIGHT: usize = 16;

/// The least time given to resolving unknown outcomes after the run; it is
/// at least three call timeouts.
const RESOLVE_BUDGET_MIN: Duration = Duration::from_secs(10);

/// Sets every counter's stock, over [`SEED_STREAMS`] streams of its own to
/// the run's targets, [`SEED_IN_FLIGHT`] calls in flight on each. The
/// streams close when the seed is done.
async fn seed(config: &LoadConfig, targets: &[String], keys: &[Key]) -> Result<(), LoadError> {
    if keys.is_empty() || targets.is_empty() {
        return Ok(());
    }
    let streams = open_conns(
        &LoadConfig {
            clients: SEED_STREAMS,
            stream: true,
            ..config.clone()
        },
        targets,
    )
    .await?;
    let next = Arc::new(AtomicU64::new(0));
    let keys = Arc::new(keys.to_vec());
    let mut tasks = Vec::new();
    for i in 0..SEED_STREAMS * SEED_IN_FLIGHT {
        let conn = streams[i % streams.len()].clone();
        let keys = keys.clone();
        let next = next.clone();
        let config = config.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let k = next.fetch_add(1, Ordering::Relaxed) as usize;
                let Some((sku, node)) = keys.get(k) else {
                    return Ok::<(), Status>(());
                };
                let on_hand = if node == HOT_NODE {
                    config.hot_stock
                } else {
                    config.stock
                };
                let request = pb::SetOnHandRequest {
                    txn_id: format!("{}-seed-{k}", config.run_id),
                    sku: sku.clone(),
                    node: node.clone(),
                    on_hand,
                    expected_on_hand: None,
                };
                let mut attempts = 0;
                loop {
                    match conn.set_on_hand(request.clone()).await {
                        Ok(_) => break,
                        Err(status)
                            if status.code() == tonic::Code::Unavailable && attempts < 3 =>
                        {
                            attempts += 1;
                            tokio::time::sleep(Duration::from_millis(500)).await;
                        }
                        Err(status) => return Err(status),
                    }
                }
            }
        }));
    }
    for task in tasks {
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(status)) if status.code() == tonic::Code::Unavailable => {
                return Err(LoadError::NoLeader(status.message().to_string()))
            }
            Ok(Err(status)) => {
                return Err(LoadError::Seed(format!(
                    "{}: {}",
                    code_name(&status),
                    status.message()
                )))
            }
            Err(e) => return Err(LoadError::Seed(e.to_string())),
        }
    }
    Ok(())
}

/// Makes one call on every connection before the clock starts. The first
/// call on a new HTTP/2 connection takes tens of milliseconds more than
/// the next ones (measured: about 50 ms here); in an open-loop run that
/// stall would put every client behind its schedule from the first
/// instant, and the catching up would be counted as the server's latency.
/// A LOCAL availability read changes nothing; its answer is not needed.
async fn warm_up(conns: &[Arc<Conn>], keys: &[Key]) {
    let Some((sku, _)) = keys.first() else {
        return;
    };
    let mut calls = Vec::with_capacity(conns.len());
    for conn in conns {
        let conn = conn.clone();
        let request = pb::GetAvailabilityRequest {
            skus: vec![sku.clone()],
            nodes: vec![],
            consistency: pb::Consistency::Local as i32,
        };
        calls.push(tokio::spawn(async move {
            let _ = conn.get_availability(request).await;
        }));
    }
    for call in calls {
        let _ = call.await;
    }
}

/// The counters, read through the first client's connection or, when that
/// fails (its server died during the run), through each server given in
/// turn. Err says why no server answered.
async fn read_levels_anywhere(
    config: &LoadConfig,
    conn: &Conn,
    keys: &[Key],
) -> Result<Levels, String> {
    let mut reasons = Vec::new();
    match read_levels(conn, keys).await {
        Ok(levels) => return Ok(levels),
        Err(status) => reasons.push(format!("the first client's server: {}", status.message())),
    }
    for addr in &config.servers {
        let channel = match config.dial(addr, config.call_timeout).await {
            Ok(channel) => channel,
            Err(e) => {
                reasons.push(format!("{addr}: {e}"));
                continue;
            }
        };
        let fresh = Conn::Unary(crate::proto::v1::inventory_client::InventoryClient::new(
            channel,
        ));
        match read_levels(&fresh, keys).await {
            Ok(levels) => return Ok(levels),
            Err(status) => reasons.push(format!("{addr}: {}", status.message())),
        }
    }
    Err(reasons.join("; "))
}

/// Counters' levels as read from the server, by (sku, node). Hashed fast:
/// a run over a million counters reads them twice (before and after),
/// and with the standard library's SipHash the hashing alone was the
/// largest part of the harness's start (stop 24's measurements in BENCHMARKS.md's history).
type Levels = FastMap<Key, pb::NodeAvailability>;

/// Reads the current levels of counters (linearizable), by SKU.
async fn read_levels(conn: &Conn, keys: &[Key]) -> Result<Levels, Status> {
    // Each SKU once, in the order the keys name them.
    let mut seen: std::collections::HashSet<&str, foldhash::fast::RandomState> =
        std::collections::HashSet::default();
    let mut skus: Vec<&str> = Vec::new();
    for (sku, _) in keys {
        if seen.insert(sku.as_str()) {
            skus.push(sku.as_str());
        }
    }
    let mut out = Levels::default();
    out.reserve(keys.len());
    for chunk in skus.chunks(crate::limits::SKUS_PER_READ_MAX) {
        let mut attempts = 0;
        let response = loop {
            match conn
                .get_availability(pb::GetAvailabilityRequest {
                    skus: chunk.iter().map(|sku| sku.to_string()).collect(),
                    nodes: vec![],
                    consistency: pb::Consistency::Linearizable as i32,
                })
                .await
            {
                Ok(r) => break r,
                Err(_) if attempts < 10 => {
                    attempts += 1;
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                Err(e) => return Err(e),
            }
        };
        for s in response.skus {
            for n in s.nodes {
                out.insert((s.sku.clone(), n.node.clone()), n);
            }
        }
    }
    Ok(out)
}

/// Runs the harness. `interrupt` completes on Ctrl-C.
pub async fn run(
    config: LoadConfig,
    interrupt: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<Outcome, LoadError> {
    if config.clients == 0 || config.in_flight == 0 {
        return Err(LoadError::Config(
            "--clients and --in-flight must be at least 1".into(),
        ));
    }
    if config.duration.is_none() && config.ops.is_none() {
        return Err(LoadError::Config("give --duration or --ops".into()));
    }
    // As many counters as one server holds, at most: more could never be
    // seeded, and the harness would first spend its memory listing them.
    let counters_asked = config
        .skus
        .checked_mul(config.nodes)
        .and_then(|spread| spread.checked_add(config.hot_skus));
    if counters_asked.is_none_or(|n| n > crate::limits::COUNTERS_MAX) {
        return Err(LoadError::Config(format!(
            "--skus {} x --nodes {} (+ --hot-skus {}) is more than the {} counters a server holds; use fewer",
            config.skus,
            config.nodes,
            config.hot_skus,
            crate::limits::COUNTERS_MAX
        )));
    }
    let chooser = Chooser::new(
        config.mix.clone(),
        config.skus.max(1),
        config.nodes.max(1),
        config.hot_skus.max(1),
        config.zipf,
    )
    .map_err(LoadError::Config)?;
    let Connected {
        conns,
        targets,
        route,
    } = connect(&config).await?;
    let keys = counters(&config);
    if config.seed {
        if config.progress {
            eprintln!("seeding {} counters...", keys.len());
        }
        seed(&config, &targets, &keys).await?;
    }
    warm_up(&conns, &keys).await;
    // Where every counter starts: seeded stock, or what is there, including
    // holds left by earlier runs.
    let levels = read_levels(&conns[0], &keys)
        .await
        .map_err(|s| LoadError::NoLeader(s.message().to_string()))?;
    // On hand and reserved at the start, by the key's position in `keys`.
    let base: Vec<(i64, i64)> = keys
        .iter()
        .map(|k| {
            let level = levels.get(k);
            (
                level.map(|l| l.on_hand).unwrap_or(0),
                level.map(|l| l.reserved).unwrap_or(0),
            )
        })
        .collect();
    drop(levels);

    let stop = Arc::new(AtomicBool::new(false));
    let interrupted = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        let interrupted = interrupted.clone();
        tokio::spawn(async move {
            interrupt.await;
            interrupted.store(true, Ordering::Relaxed);
            stop.store(true, Ordering::Relaxed);
        });
    }
    let tally = Arc::new(Tally::default());
    let clients_total = config.clients * config.in_flight;
    let interval = config
        .rate
        .map(|rate| Duration::from_secs_f64(clients_total as f64 / rate.max(1e-6)));
    let mut all_stats = Vec::new();
    let mut tasks = Vec::new();
    // Everything the clients need is built before the clock starts: with a
    // hundred thousand counters the ledger alone takes tens of
    // milliseconds, which an open-loop run would count as latency.
    let ledger = Arc::new(Ledger::new(
        &keys,
        chooser.skus,
        chooser.nodes,
        chooser.hot_skus,
    ));
    // One Stats per connection, shared by its clients: a histogram is a
    // few hundred kilobytes, and the progress line merges every Stats each
    // second, so one per client (1,024 of them at 64 streams x 16 in
    // flight) cost the harness a tenth of its CPU in merging alone.
    for _ in 0..conns.len().max(1) {
        all_stats.push(Arc::new(Mutex::new(Stats::for_calls(&config.mix))));
    }
    // Client `c` uses connection `c % conns`.
    let mut by_conn: Vec<Vec<(usize, Client)>> =
        (0..conns.len().max(1)).map(|_| Vec::new()).collect();
    let conns_len = by_conn.len();
    for c in 0..clients_total {
        by_conn[c % conns_len].push((
            c,
            Client::new(
                chooser.clone(),
                rand::rngs::StdRng::seed_from_u64(c as u64 ^ 0x5eed),
                ledger.clone(),
                config.ttl_ms,
                // Every id this client makes starts with this.
                format!("{}-w{c}-", config.run_id),
            ),
        ));
    }
    let started = Instant::now();
    let run = Arc::new(Run {
        stop: stop.clone(),
        deadline: config.duration.map(|d| started + d),
        ops_limit: config.ops,
        business_ops: AtomicU64::new(0),
        started,
        interval,
        clients_total,
        tally: tally.clone(),
        call_timeout: config.call_timeout,
        // Every client resolves within the same budget after the run,
        // which does not count in the run's elapsed time.
        resolve_budget: RESOLVE_BUDGET_MIN.max(config.call_timeout * 3),
    });
    for (slot, clients) in by_conn.into_iter().enumerate() {
        let conn = conns[slot].clone();
        let stats = all_stats[slot].clone();
        let route = route.clone();
        let run = run.clone();
        if config.stream {
            tasks.push(tokio::spawn(drive_stream(
                clients, conn, slot, route, stats, run,
            )));
            continue;
        }
        // Unary: each client waits for its call in turn; one task polls
        // the clients of a connection.
        let group: FuturesUnordered<_> = clients
            .into_iter()
            .map(|(c, client)| {
                let worker = Worker {
                    client,
                    conn: conn.clone(),
                    slot,
                    epoch: 0,
                    route: route.clone(),
                    stats: stats.clone(),
                };
                worker.run_unary(run.clone(), c)
            })
            .collect();
        tasks.push(tokio::spawn(group.collect::<Vec<_>>()));
    }

    // Progress, once a second.
    let progress = if config.progress {
        let tally = tally.clone();
        let stop = stop.clone();
        let all_stats = all_stats.clone();
        Some(tokio::spawn(async move {
            let mut last = 0u64;
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let now = tally.calls.load(Ordering::Relaxed);
                let mut merged = Stats::default();
                for s in &all_stats {
                    if let Ok(s) = s.lock() {
                        merged.merge(&s);
                    }
                }
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
        }))
    } else {
        None
    };

    let mut resolved_by_retry = 0;
    let mut run_end = started;
    for task in tasks {
        for (end, resolved) in task.await.unwrap_or_default() {
            resolved_by_retry += resolved;
            run_end = run_end.max(end);
        }
    }
    let elapsed = run_end.duration_since(started);
    stop.store(true, Ordering::Relaxed);
    if let Some(progress) = progress {
        let _ = progress.await;
    }
    let mut stats = Stats::default();
    for s in &all_stats {
        if let Ok(s) = s.lock() {
            stats.merge(&s);
        }
    }

    let verification = if config.verify {
        Some(
            verify(
                &config,
                &conns[0],
                &keys,
                &base,
                &ledger,
                resolved_by_retry,
                // Holds live from the start until this read, resolving
                // included.
                started.elapsed(),
            )
            .await,
        )
    } else {
        None
    };
    Ok(Outcome {
        stats,
        elapsed,
        verification,
        interrupted: interrupted.load(Ordering::Relaxed),
        leader_moves: route.map_or(0, |r| r.moves.load(Ordering::Relaxed)),
        config,
    })
}

async fn verify(
    config: &LoadConfig,
    conn: &Conn,
    keys: &[Key],
    base: &[(i64, i64)],
    ledger: &Ledger,
    resolved_by_retry: usize,
    elapsed: Duration,
) -> Verification {
    let mut result = Verification {
        resolved_by_retry,
        ..Default::default()
    };
    let untracked = ledger.untracked.load(Ordering::Relaxed);
    if untracked > 0 {
        result.mismatches.push(format!(
            "{untracked} calls named counters the harness did not seed or read (a harness bug)"
        ));
    }
    // All three are by the key's position: built from `keys` in one order.
    assert!(
        base.len() == keys.len() && ledger.accounts.len() == keys.len(),
        "the verification's counters are out of step"
    );
    let levels = match read_levels_anywhere(config, conn, keys).await {
        Ok(levels) => levels,
        Err(reason) => {
            result.unreadable = Some(reason);
            return result;
        }
    };
    // Holds could have expired if the run outlived their TTL.
    let holds_checkable = elapsed.as_millis() < u128::from(config.ttl_ms);
    for ((key, cell), start) in keys.iter().zip(&ledger.accounts).zip(base) {
        let a = cell.read();
        let Some(level) = levels.get(key) else {
            continue;
        };
        result.counters_checked += 1;
        if a.uncertain {
            result.uncertain += 1;
            continue;
        }
        let held = a.held;
        let (base_on_hand, base_reserved) = *start;
        if holds_checkable {
            result.reserved_checked += 1;
            // Holds left by earlier runs may expire during this one.
            let ok = if base_reserved == 0 {
                level.reserved == held
            } else {
                level.reserved >= held && level.reserved <= held + base_reserved
            };
            if !ok {
                result.mismatches.push(format!(
                    "{}@{}: server reserved {}, clients hold {} (plus {} held before the run)",
                    key.0, key.1, level.reserved, held, base_reserved
                ));
            }
        }
        if !a.absolute {
            result.on_hand_checked += 1;
            let expected = base_on_hand + a.received - a.sold - a.committed;
            if level.on_hand != expected {
                result.mismatches.push(format!(
                    "{}@{}: server on_hand {}, clients expect {} (base {} + received {} - sold {} - committed {})",
                    key.0, key.1, level.on_hand, expected, base_on_hand, a.received, a.sold, a.committed
                ));
            }
            if a.sold == 0 {
                // Without sales (which may go short on purpose), holds plus
                // committed stock never exceed what was there. Holds left by
                // earlier runs may exceed a stock the seed set anew; this
                // run's reserves can never add to that excess (a reserve
                // needs its units available, a commit takes as much from
                // on_hand as from reserved), so it may only shrink.
                result.oversell_checked += 1;
                let stock = base_on_hand + a.received;
                let excess_before = (base_reserved - base_on_hand).max(0);
                if level.reserved + a.committed > stock + excess_before {
                    result.oversold.push(format!(
                        "{}@{}: {} held + {} committed > {} stock (available {})",
                        key.0, key.1, level.reserved, a.committed, stock, level.available
                    ));
                }
            }
        }
    }
    result.mismatches.truncate(50);
    result.oversold.truncate(50);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_verification_that_checked_nothing_does_not_pass() {
        let all_uncertain = Verification {
            counters_checked: 20,
            uncertain: 20,
            ..Default::default()
        };
        assert!(all_uncertain.inconclusive());
        assert!(!all_uncertain.passed());
        let some_checked = Verification {
            counters_checked: 20,
            uncertain: 19,
            reserved_checked: 1,
            on_hand_checked: 1,
            ..Default::default()
        };
        assert!(!some_checked.inconclusive());
        assert!(some_checked.passed());
        let mismatch = Verification {
            mismatches: vec!["x".into()],
            ..some_checked
        };
        assert!(!mismatch.passed());
    }

    #[test]
    fn a_route_parses_from_the_name_it_reports() {
        for route in [Route::Leader, Route::Spread] {
            assert_eq!(route.name().parse::<Route>(), Ok(route));
        }
        let error = "nearest".parse::<Route>().unwrap_err();
        assert!(error.contains("leader or spread"), "{error}");
    }

    fn keys_of(mix: &[(Workload, u32)], skus: usize, nodes: usize, hot_skus: usize) -> Vec<Key> {
        counters(&LoadConfig {
            servers: vec![],
            route: Route::Leader,
            clients: 1,
            in_flight: 1,
            duration: None,
            ops: Some(1),
            mix: mix.to_vec(),
            rate: None,
            skus,
            nodes,
            stock: 1,
            hot_skus,
            hot_stock: 1,
            zipf: 1.0,
            seed: true,
            ttl_ms: 1,
            stream: false,
            call_timeout: Duration::from_secs(1),
            json: None,
            report: None,
            verify: true,
            run_id: String::new(),
            progress: false,
            tls: None,
            bearer: crate::client::Bearer::default(),
        })
    }

    #[test]
    fn a_counter_found_by_position_is_the_one_found_by_name() {
        let mix = [(Workload::Checkout, 1), (Workload::FlashSale, 1)];
        let keys = keys_of(&mix, 7, 3, 2);
        let ledger = Ledger::new(&keys, 7, 3, 2);
        for s in 0..7 {
            for n in 0..3 {
                let by_name = ledger.place(&sku_name(s), &node_name(n));
                assert!(by_name.is_some());
                assert_eq!(ledger.spread_account(s, n), by_name, "SKU {s} node {n}");
            }
        }
        for h in 0..2 {
            let by_name = ledger.place(&hot_sku_name(h), HOT_NODE);
            assert!(by_name.is_some());
            assert_eq!(ledger.hot_account(h), by_name);
        }
        // Positions past the run's counters have no place, and a call on
        // them is counted as untracked, as a call on an unknown name is.
        assert_eq!(ledger.spread_account(7, 0), None);
        assert_eq!(ledger.spread_account(0, 3), ledger.spread_account(1, 0));
        assert_eq!(ledger.spread_account(usize::MAX, 2), None);
        assert_eq!(ledger.hot_account(2), None);
        ledger.add_at(None, |a| &a.held, 1);
        assert_eq!(ledger.untracked.load(Ordering::Relaxed), 1);
        ledger.add_at(ledger.spread_account(2, 1), |a| &a.held, 3);
        let i = ledger.place(&sku_name(2), &node_name(1)).unwrap();
        assert_eq!(ledger.accounts[i].read().held, 3);
    }

    #[test]
    fn a_run_without_spread_counters_places_none_of_them() {
        let keys = keys_of(&[(Workload::FlashSale, 1)], 5, 2, 1);
        let ledger = Ledger::new(&keys, 5, 2, 1);
        assert_eq!(ledger.spread_account(0, 0), None);
        assert_eq!(
            ledger.hot_account(0),
            ledger.place(&hot_sku_name(0), HOT_NODE)
        );
        assert!(ledger.hot_account(0).is_some());
    }
}
