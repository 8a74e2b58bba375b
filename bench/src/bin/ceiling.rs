//! The transport's ceiling on this machine, for bench/compare.sh: a
//! trivial tonic service (increment a map entry, answer) and a tonic client
//! driving it, unary or over bidirectional streams.
//!
//!   ceiling serve ADDR
//!   ceiling serve-durable ADDR DIR
//!   ceiling unary ADDR CLIENTS SECONDS
//!   ceiling stream ADDR CLIENTS IN_FLIGHT SECONDS
//!   ceiling rate ADDR CLIENTS CALLS_PER_S SECONDS
//!   ceiling probe SECONDS
//!
//! Prints one line: `calls_per_second N`; `rate` (open loop, each client
//! sending at a fixed pace, latency counted from the intended send time as
//! `stockraft load --rate` counts it) adds `p50_ms`, `p99_ms`, `max_ms` and
//! `failed` (calls that failed, left out of the latencies; the command then
//! exits with an error).
//! `serve-durable` serves the same calls durably: every bump is appended to
//! a log file in DIR and answered only after an `fdatasync` that covers it,
//! group-committed by one thread (take every bump waiting, write them, sync
//! once, answer them all: what Redis does with `appendfsync always`). It is
//! the floor any server that syncs before it answers meets on this machine
//! with this transport, with nothing else of stockraft's (no Raft, no
//! RocksDB, no state machine), so compare.sh can tell what durability
//! itself costs here from what stockraft adds to it.
//! `probe` measures how steady this machine's CPU is with nothing else
//! running: one thread repeats a fixed slice of arithmetic and prints the
//! slices' p1, p50, p99 and max in ms. On a machine of its own the four
//! are close; on a shared host whose other tenants take the CPU away in
//! bursts they spread, and a latency percentile of any server run here
//! inherits those bursts.

use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use stockraft_bench::proto::ceiling_client::CeilingClient;
use stockraft_bench::proto::ceiling_server::{Ceiling, CeilingServer};
use stockraft_bench::proto::{BumpReply, BumpRequest};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

#[derive(Default)]
struct Counter {
    map: Mutex<HashMap<String, u64>>,
}

impl Counter {
    fn bump(&self, key: &str) -> u64 {
        let Ok(mut map) = self.map.lock() else {
            return 0;
        };
        let value = map.entry(key.to_string()).or_default();
        *value += 1;
        *value
    }
}

#[derive(Clone, Default)]
struct Service(Arc<Counter>);

#[tonic::async_trait]
impl Ceiling for Service {
    async fn bump(&self, request: Request<BumpRequest>) -> Result<Response<BumpReply>, Status> {
        let r = request.into_inner();
        Ok(Response::new(BumpReply {
            id: r.id,
            value: self.0.bump(&r.key),
        }))
    }

    type BumpStreamStream = ReceiverStream<Result<BumpReply, Status>>;

    async fn bump_stream(
        &self,
        request: Request<Streaming<BumpRequest>>,
    ) -> Result<Response<Self::BumpStreamStream>, Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(1_024);
        let counter = self.0.clone();
        tokio::spawn(async move {
            while let Ok(Some(r)) = inbound.message().await {
                let reply = BumpReply {
                    id: r.id,
                    value: counter.bump(&r.key),
                };
                if tx.send(Ok(reply)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// Where a durable bump's answer goes once its sync returned.
enum Answer {
    Unary(tokio::sync::oneshot::Sender<u64>),
    Stream(
        u64,
        tokio::sync::mpsc::UnboundedSender<Result<BumpReply, Status>>,
    ),
}

/// A bump waiting for the log thread.
struct Pending {
    key: String,
    answer: Answer,
}

/// The trivial service made durable (see `serve-durable` above): handlers
/// hand each bump to the log thread and wait for its answer.
#[derive(Clone)]
struct Durable(crossbeam_channel::Sender<Pending>);

/// Bumps written and synced at most at once, as stockraft's batches are
/// bounded.
const DURABLE_BATCH_MAX: usize = 4_096;

/// The log thread: takes every bump waiting, appends them to the log in one
/// write, syncs once, then applies and answers them all.
fn log_thread(
    mut file: std::fs::File,
    requests: crossbeam_channel::Receiver<Pending>,
) -> Result<()> {
    let mut map: HashMap<String, u64> = HashMap::new();
    let mut batch: Vec<Pending> = Vec::with_capacity(DURABLE_BATCH_MAX);
    let mut record: Vec<u8> = Vec::new();
    while let Ok(first) = requests.recv() {
        batch.push(first);
        while batch.len() < DURABLE_BATCH_MAX {
            let Ok(next) = requests.try_recv() else {
                break;
            };
            batch.push(next);
        }
        record.clear();
        for pending in &batch {
            record.extend_from_slice(&(pending.key.len() as u32).to_le_bytes());
            record.extend_from_slice(pending.key.as_bytes());
        }
        file.write_all(&record).context("writing the log")?;
        file.sync_data().context("syncing the log")?;
        for pending in batch.drain(..) {
            let value = map.entry(pending.key).or_default();
            *value += 1;
            match pending.answer {
                Answer::Unary(reply) => {
                    let _ = reply.send(*value);
                }
                Answer::Stream(id, replies) => {
                    let _ = replies.send(Ok(BumpReply { id, value: *value }));
                }
            }
        }
    }
    Ok(())
}

#[tonic::async_trait]
impl Ceiling for Durable {
    async fn bump(&self, request: Request<BumpRequest>) -> Result<Response<BumpReply>, Status> {
        let r = request.into_inner();
        let (reply, answer) = tokio::sync::oneshot::channel();
        let pending = Pending {
            key: r.key,
            answer: Answer::Unary(reply),
        };
        if self.0.send(pending).is_err() {
            return Err(Status::unavailable("the log thread stopped"));
        }
        let value = answer
            .await
            .map_err(|_| Status::unavailable("the log thread stopped"))?;
        Ok(Response::new(BumpReply { id: r.id, value }))
    }

    type BumpStreamStream =
        tokio_stream::wrappers::UnboundedReceiverStream<Result<BumpReply, Status>>;

    async fn bump_stream(
        &self,
        request: Request<Streaming<BumpRequest>>,
    ) -> Result<Response<Self::BumpStreamStream>, Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let log = self.0.clone();
        tokio::spawn(async move {
            while let Ok(Some(r)) = inbound.message().await {
                let pending = Pending {
                    key: r.key,
                    answer: Answer::Stream(r.id, tx.clone()),
                };
                if log.send(pending).is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(
            tokio_stream::wrappers::UnboundedReceiverStream::new(rx),
        ))
    }
}

/// Serves `service` on `addr` with Nagle off, as stockraft's server does
/// (the builder's flag is ignored for a listener handed in).
async fn serve<S: Ceiling>(addr: &str, service: S) -> Result<()> {
    // tokio's listener sets SO_REUSEADDR: a rerun binds at once.
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .context("binding")?;
    tonic::transport::Server::builder()
        .add_service(CeilingServer::new(service))
        .serve_with_incoming(
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
        )
        .await?;
    Ok(())
}

/// The map key client `c` bumps with its `n`th call: spread over 100,000
/// keys, as stockraft's spread runs are over 100,000 SKUs.
fn key(c: usize, n: u64) -> String {
    format!("k{}", (c as u64 * 7_919 + n) % 100_000)
}

fn arg<T: std::str::FromStr>(args: &[String], i: usize, what: &str) -> Result<T> {
    args.get(i)
        .ok_or_else(|| anyhow!("missing {what}"))?
        .parse()
        .map_err(|_| anyhow!("{what} is not a number"))
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(1).map(String::as_str).unwrap_or("");
    let addr = args
        .get(2)
        .cloned()
        .unwrap_or_else(|| "127.0.0.1:50099".into());
    match mode {
        "serve" => serve(&addr, Service::default()).await,
        "serve-durable" => serve_durable(&args, &addr).await,
        "unary" => unary(&args, &addr).await,
        "stream" => stream(&args, &addr).await,
        "rate" => rate(&args, &addr).await,
        "probe" => probe(&args).await,
        _ => Err(anyhow!(
            "usage: ceiling serve ADDR | serve-durable ADDR DIR | unary ADDR CLIENTS SECONDS | stream ADDR CLIENTS IN_FLIGHT SECONDS | rate ADDR CLIENTS CALLS_PER_S SECONDS | probe SECONDS"
        )),
    }
}

/// Serves bumps durably: each answered after an fdatasync that covers it.
async fn serve_durable(args: &[String], addr: &str) -> Result<()> {
    let dir = std::path::PathBuf::from(args.get(3).ok_or_else(|| anyhow!("missing DIR"))?);
    std::fs::create_dir_all(&dir).context("creating DIR")?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("ceiling.log"))
        .context("opening the log")?;
    let (tx, rx) = crossbeam_channel::unbounded();
    let log = std::thread::Builder::new()
        .name("log".into())
        .spawn(move || log_thread(file, rx))?;
    tokio::select! {
        served = serve(addr, Durable(tx)) => served,
        stopped = tokio::task::spawn_blocking(move || log.join()) => match stopped {
            Ok(Ok(result)) => result,
            _ => Err(anyhow!("the log thread panicked")),
        },
    }
}

/// Unary clients calling as fast as they are answered; prints calls per second.
async fn unary(args: &[String], addr: &str) -> Result<()> {
    let clients: usize = arg(args, 3, "clients")?;
    let seconds: u64 = arg(args, 4, "seconds")?;
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for c in 0..clients {
        let channel = stockraft::client::channel(addr, Duration::from_secs(5)).await?;
        let mut client = CeilingClient::new(channel);
        let done = done.clone();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                if client
                    .bump(BumpRequest {
                        id: n,
                        key: key(c, n),
                    })
                    .await
                    .is_ok()
                {
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let calls = done.load(Ordering::Relaxed);
    for task in tasks {
        let _ = task.await;
    }
    println!(
        "calls_per_second {:.0}",
        calls as f64 / started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Stream clients keeping `in_flight` bumps outstanding each; prints calls per second.
async fn stream(args: &[String], addr: &str) -> Result<()> {
    let clients: usize = arg(args, 3, "clients")?;
    let in_flight: usize = arg(args, 4, "in_flight")?;
    let seconds: u64 = arg(args, 5, "seconds")?;
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for c in 0..clients {
        let channel = stockraft::client::channel(addr, Duration::from_secs(5)).await?;
        let mut client = CeilingClient::new(channel);
        let (tx, rx) = tokio::sync::mpsc::channel::<BumpRequest>(in_flight * 2);
        let mut replies = client
            .bump_stream(ReceiverStream::new(rx))
            .await?
            .into_inner();
        let done = done.clone();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            // Keep `in_flight` requests outstanding: one new per reply.
            let mut n = 0u64;
            for _ in 0..in_flight {
                n += 1;
                if tx
                    .send(BumpRequest {
                        id: n,
                        key: key(c, n),
                    })
                    .await
                    .is_err()
                {
                    return;
                }
            }
            while let Ok(Some(_)) = replies.message().await {
                done.fetch_add(1, Ordering::Relaxed);
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                n += 1;
                if tx
                    .send(BumpRequest {
                        id: n,
                        key: key(c, n),
                    })
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }));
    }
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let calls = done.load(Ordering::Relaxed);
    println!(
        "calls_per_second {:.0}",
        calls as f64 / started.elapsed().as_secs_f64()
    );
    for task in tasks {
        task.abort();
    }
    Ok(())
}

/// Open loop: clients sending at a fixed pace, latency from the intended send time.
async fn rate(args: &[String], addr: &str) -> Result<()> {
    let clients: usize = arg(args, 3, "clients")?;
    let rate: f64 = arg(args, 4, "calls_per_s")?;
    let seconds: u64 = arg(args, 5, "seconds")?;
    let interval = Duration::from_secs_f64(clients as f64 / rate.max(1e-6));
    let mut tasks = Vec::new();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    for c in 0..clients {
        let channel = stockraft::client::channel(addr, Duration::from_secs(5)).await?;
        let mut client = CeilingClient::new(channel);
        let offset = interval.mul_f64(c as f64 / clients as f64);
        tasks.push(tokio::spawn(async move {
            let mut latency_us = hdrhistogram::Histogram::<u64>::new(3)?;
            let mut failed = 0u64;
            let mut n = 0u64;
            loop {
                let due = started + offset + interval * (n as u32);
                if due >= deadline {
                    return Ok::<_, anyhow::Error>((latency_us, failed));
                }
                if due > Instant::now() {
                    tokio::time::sleep_until(due.into()).await;
                }
                n += 1;
                match client
                    .bump(BumpRequest {
                        id: n,
                        key: key(c, n),
                    })
                    .await
                {
                    Ok(_) => latency_us.record(due.elapsed().as_micros() as u64)?,
                    Err(_) => failed += 1,
                }
            }
        }));
    }
    let mut all = hdrhistogram::Histogram::<u64>::new(3)?;
    let mut failed = 0u64;
    for task in tasks {
        let (latency_us, task_failed) = task.await??;
        all.add(latency_us)?;
        failed += task_failed;
    }
    let ms = |q: f64| all.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "calls_per_second {:.0} p50_ms {:.2} p99_ms {:.2} max_ms {:.2} failed {failed}",
        all.len() as f64 / seconds as f64,
        ms(0.5),
        ms(0.99),
        all.max() as f64 / 1000.0
    );
    // A failed call has no latency: a p99 without it would flatter.
    if failed > 0 {
        return Err(anyhow!(
            "{failed} calls failed; the figures above leave them out"
        ));
    }
    Ok(())
}

/// How steady this machine's CPU is: slices of fixed arithmetic, timed.
async fn probe(args: &[String]) -> Result<()> {
    let seconds: u64 = arg(args, 2, "seconds")?;
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut slices = Vec::new();
    let mut x = 0u64;
    while Instant::now() < deadline {
        let started = Instant::now();
        for i in 0..200_000u64 {
            x = std::hint::black_box(x.wrapping_add(i.wrapping_mul(i)));
        }
        slices.push(started.elapsed());
    }
    slices.sort();
    let Some(max) = slices.last().copied() else {
        return Err(anyhow!("the probe ran no slice"));
    };
    let at = |q: f64| slices[((slices.len() - 1) as f64 * q) as usize];
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "slice_ms p1 {:.3} p50 {:.3} p99 {:.3} max {:.3}",
        ms(at(0.01)),
        ms(at(0.5)),
        ms(at(0.99)),
        ms(max)
    );
    Ok(())
}
