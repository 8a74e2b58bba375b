//! A run from start to end: the configuration checked, the connections
//! opened, stock seeded, the clients driven until the run ends, the
//! verification, and the [`Outcome`] the report is made from.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::stream::{FuturesUnordered, StreamExt};
use rand::SeedableRng;
use tokio::task::JoinHandle;

use super::conn::Conn;
use super::connect::{connect, warm_up, Connected};
use super::counters::{counters, read_levels, Key};
use super::drive::{drive_stream, Run, Worker};
use super::flow::{Client, Tally};
use super::leader::LeaderRoute;
use super::ledger::Ledger;
use super::progress::spawn_progress;
use super::seed::seed;
use super::stats::Stats;
use super::verify::verify;
use super::workload::Chooser;
use super::{LoadConfig, LoadError, Outcome};

/// The least time given to resolving unknown outcomes after the run; it is
/// at least three call timeouts.
const RESOLVE_BUDGET_MIN: Duration = Duration::from_secs(10);

/// Each client's calls as one driver carries them: when it stopped sending,
/// and how many unknown calls an answer resolved.
type Driven = JoinHandle<Vec<(Instant, usize)>>;

/// What a run sets up before its clock starts.
struct Prepared {
    chooser: Chooser,
    conns: Vec<Arc<Conn>>,
    route: Option<Arc<LeaderRoute>>,
    keys: Vec<Key>,
    /// Each counter's (on_hand, reserved) at the start, in the order of
    /// `keys`.
    base: Vec<(i64, i64)>,
}

/// Runs the harness. `interrupt` completes on Ctrl-C.
pub async fn run(
    config: LoadConfig,
    interrupt: impl Future<Output = ()> + Send + 'static,
) -> Result<Outcome, LoadError> {
    let Prepared {
        chooser,
        conns,
        route,
        keys,
        base,
    } = prepare(&config).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let interrupted = on_interrupt(interrupt, stop.clone());
    let tally = Arc::new(Tally::default());
    let clients_total = config.clients * config.in_flight;
    // Everything the clients need is built before the clock starts: with a
    // hundred thousand counters the ledger alone takes tens of
    // milliseconds, which an open-loop run would count as latency.
    let ledger = Arc::new(Ledger::new(
        &keys,
        chooser.skus,
        chooser.nodes,
        chooser.hot_skus,
    ));
    let all_stats = stats_per_conn(&config, conns.len());
    let by_conn = clients_by_conn(&config, &chooser, &ledger, conns.len(), clients_total);
    let run = start_clock(&config, stop.clone(), tally.clone(), clients_total);
    let started = run.started;
    let tasks = spawn_drivers(&config, by_conn, &conns, &all_stats, route.as_ref(), &run);
    let progress = config
        .progress
        .then(|| spawn_progress(tally, stop.clone(), all_stats.clone(), started));
    let (run_end, resolved_by_retry) = wait_for(tasks, started).await;
    let elapsed = run_end.duration_since(started);
    stop.store(true, Ordering::Relaxed);
    if let Some(progress) = progress {
        let _ = progress.await;
    }
    let stats = Stats::merged(&all_stats);
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

/// Checks the configuration, connects, seeds (unless `--no-seed`), warms
/// the connections up and reads where every counter starts.
async fn prepare(config: &LoadConfig) -> Result<Prepared, LoadError> {
    check(config)?;
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
    } = connect(config).await?;
    let keys = counters(config);
    if config.seed {
        if config.progress {
            eprintln!("seeding {} counters...", keys.len());
        }
        seed(config, &targets, &keys).await?;
    }
    warm_up(&conns, &keys).await;
    let base = read_base(&conns[0], &keys).await?;
    Ok(Prepared {
        chooser,
        conns,
        route,
        keys,
        base,
    })
}

/// Refuses a configuration no run can carry out.
fn check(config: &LoadConfig) -> Result<(), LoadError> {
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
    Ok(())
}

/// Where every counter starts, by its position in `keys`: seeded stock, or
/// what is there, including holds left by earlier runs.
async fn read_base(conn: &Conn, keys: &[Key]) -> Result<Vec<(i64, i64)>, LoadError> {
    let levels = read_levels(conn, keys)
        .await
        .map_err(|s| LoadError::NoLeader(s.message().to_string()))?;
    let base = keys
        .iter()
        .map(|k| {
            let level = levels.get(k);
            (
                level.map(|l| l.on_hand).unwrap_or(0),
                level.map(|l| l.reserved).unwrap_or(0),
            )
        })
        .collect();
    Ok(base)
}

/// Stops the run when `interrupt` completes; the flag returned says
/// whether it did.
fn on_interrupt(
    interrupt: impl Future<Output = ()> + Send + 'static,
    stop: Arc<AtomicBool>,
) -> Arc<AtomicBool> {
    let interrupted = Arc::new(AtomicBool::new(false));
    let flag = interrupted.clone();
    tokio::spawn(async move {
        interrupt.await;
        flag.store(true, Ordering::Relaxed);
        stop.store(true, Ordering::Relaxed);
    });
    interrupted
}

/// One Stats per connection, shared by its clients: a histogram is a few
/// hundred kilobytes, and the progress line merges every Stats each
/// second, so one per client would make merging a large part of the
/// harness's own CPU.
fn stats_per_conn(config: &LoadConfig, conns: usize) -> Vec<Arc<Mutex<Stats>>> {
    let mut all_stats = Vec::new();
    for _ in 0..conns.max(1) {
        all_stats.push(Arc::new(Mutex::new(Stats::for_calls(&config.mix))));
    }
    all_stats
}

/// The run's `clients_total` clients (each with its number in the run),
/// grouped by connection: client `c` uses connection `c % conns`.
fn clients_by_conn(
    config: &LoadConfig,
    chooser: &Chooser,
    ledger: &Arc<Ledger>,
    conns: usize,
    clients_total: usize,
) -> Vec<Vec<(usize, Client)>> {
    let mut by_conn: Vec<Vec<(usize, Client)>> = (0..conns.max(1)).map(|_| Vec::new()).collect();
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
    by_conn
}

/// Starts the run's clock: what every driver shares, from now on.
fn start_clock(
    config: &LoadConfig,
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
    clients_total: usize,
) -> Arc<Run> {
    let interval = config
        .rate
        .map(|rate| Duration::from_secs_f64(clients_total as f64 / rate.max(1e-6)));
    let started = Instant::now();
    Arc::new(Run {
        stop,
        deadline: config.duration.map(|d| started + d),
        ops_limit: config.ops,
        business_ops: AtomicU64::new(0),
        started,
        interval,
        clients_total,
        tally,
        call_timeout: config.call_timeout,
        // Every client resolves within the same budget after the run,
        // which does not count in the run's elapsed time.
        resolve_budget: RESOLVE_BUDGET_MIN.max(config.call_timeout * 3),
    })
}

/// One task per connection drives its clients: over one `Stream` call
/// ([`drive_stream`]), or each client awaiting its unary calls in turn.
fn spawn_drivers(
    config: &LoadConfig,
    by_conn: Vec<Vec<(usize, Client)>>,
    conns: &[Arc<Conn>],
    all_stats: &[Arc<Mutex<Stats>>],
    route: Option<&Arc<LeaderRoute>>,
    run: &Arc<Run>,
) -> Vec<Driven> {
    let mut tasks = Vec::new();
    for (slot, clients) in by_conn.into_iter().enumerate() {
        let conn = conns[slot].clone();
        let stats = all_stats[slot].clone();
        let route = route.cloned();
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
    tasks
}

/// Waits for every driver: returns when the last client stopped sending
/// (`started` if none did) and how many unknown calls were resolved.
async fn wait_for(tasks: Vec<Driven>, started: Instant) -> (Instant, usize) {
    let mut resolved_by_retry = 0;
    let mut run_end = started;
    for task in tasks {
        for (end, resolved) in task.await.unwrap_or_default() {
            resolved_by_retry += resolved;
            run_end = run_end.max(end);
        }
    }
    (run_end, resolved_by_retry)
}
