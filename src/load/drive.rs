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

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::client::Authed;
use futures_util::stream::{FuturesUnordered, StreamExt};
use tonic::{Code, Status};

use super::conn::{answer, sweeps_to_expire, Conn, SWEEP_INTERVAL};
use super::flow::{is_unavailable, Answer, Client, Flow, Tally, Unknown};
use super::leader::LeaderRoute;
use super::stats::Stats;
use crate::chunked::{chunked, ready_now, ChunkSender};
use crate::proto::v1 as pb;
use crate::proto::v1::inventory_client::InventoryClient;
use pb::stream_request::Op;

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

/// One client of a stream driver.
struct Slot {
    client: Client,
    /// The client's number in the run (the open loop staggers by it).
    index: usize,
    /// Operations begun.
    k: u32,
    /// The call in flight: its flow, id, when it was due or sent, and the
    /// sweep that was last when it was sent.
    flow: Option<Flow>,
    call: u64,
    sent: Instant,
    sent_sweep: u64,
    /// Waiting to begin its next operation: at this time (open loop), or
    /// once the stream is open again.
    waiting: Option<Instant>,
    /// When the run ended for this client: it begins nothing more, and
    /// has no call in flight.
    ended: Option<Instant>,
}

/// A `Stream` call of the driver's own. Its calls go a burst at a time
/// (see [`crate::chunked`]); they are bounded by the clients' one call
/// each in flight.
struct Open {
    tx: ChunkSender<pb::StreamRequest>,
    inbound: tonic::Streaming<pb::StreamResponse>,
}

async fn open_stream(channel: Authed) -> Result<Open, Status> {
    let (tx, rx) = chunked(None);
    let inbound = InventoryClient::new(channel).stream(rx).await?.into_inner();
    Ok(Open { tx, inbound })
}

/// The driver's state: its clients, its stream, and its connection.
struct Driver {
    slots: Vec<Slot>,
    run: Arc<Run>,
    stats: Arc<Mutex<Stats>>,
    conn: Arc<Conn>,
    slot: usize,
    epoch: u64,
    route: Option<Arc<LeaderRoute>>,
    stream: Option<Open>,
    /// Calls made since the last burst was handed to the stream.
    outbox: Vec<pb::StreamRequest>,
    /// Calls sent (ids are `sequence * clients + client`).
    sequence: u64,
    sweeps: u64,
    /// An answer said the server may be gone: look for the leader again.
    unavailable: bool,
}

impl Driver {
    fn finished(&self) -> bool {
        self.slots.iter().all(|s| s.ended.is_some())
    }

    /// Client `i` begins its next operation if the run has not ended: now,
    /// or once due (open loop), or once the stream is open again.
    fn next_operation(&mut self, i: usize, now: Instant, stats: &mut Stats) {
        let slot = &mut self.slots[i];
        let intended = self.run.intended(slot.index, slot.k, now);
        slot.k += 1;
        if !self.run.may_begin(intended.max(now)) {
            slot.ended = Some(now);
            return;
        }
        if intended > now || self.stream.is_none() {
            slot.waiting = Some(intended);
            return;
        }
        let (flow, op) = slot.client.begin();
        self.send(i, flow, op, intended, now, stats);
    }

    /// Starts the waiting clients whose time has come (all of them once
    /// the stream is open again).
    fn start_due(&mut self, now: Instant, stats: &mut Stats) {
        if self.stream.is_none() {
            return;
        }
        for i in 0..self.slots.len() {
            let slot = &mut self.slots[i];
            let Some(due) = slot.waiting else {
                continue;
            };
            if due > now {
                continue;
            }
            slot.waiting = None;
            let (flow, op) = slot.client.begin();
            self.send(i, flow, op, due, now, stats);
        }
    }

    /// Makes client `i`'s call, due at `due`; it goes with the rest of
    /// the burst ([`Driver::flush`]). Without a stream it is answered at
    /// once as closed.
    fn send(
        &mut self,
        i: usize,
        flow: Flow,
        op: Op,
        due: Instant,
        now: Instant,
        stats: &mut Stats,
    ) {
        self.sequence += 1;
        let id = self.sequence * self.slots.len() as u64 + i as u64;
        let slot = &mut self.slots[i];
        slot.flow = Some(flow);
        slot.call = id;
        slot.sent = due;
        slot.sent_sweep = self.sweeps;
        if self.stream.is_none() {
            self.answer(i, id, Err(closed()), now, stats);
            return;
        }
        self.outbox.push(pb::StreamRequest { id, op: Some(op) });
    }

    /// Hands the burst of calls made to the stream, in one chunk. A stream
    /// whose reader is gone fails every call in flight.
    fn flush(&mut self, stats: &mut Stats) {
        if self.outbox.is_empty() {
            return;
        }
        let burst = std::mem::take(&mut self.outbox);
        let sent = match &self.stream {
            Some(open) => open.tx.try_send(burst).is_ok(),
            None => false,
        };
        if !sent {
            self.fail_in_flight(Instant::now(), stats);
        }
    }

    /// Hands client `i` the answer to its call `id` (ignored when that
    /// call was already answered: a late answer after its timeout).
    fn answer(&mut self, i: usize, id: u64, answer: Answer, now: Instant, stats: &mut Stats) {
        let Some(slot) = self.slots.get_mut(i) else {
            return;
        };
        if slot.call != id {
            return;
        }
        let Some(flow) = slot.flow.take() else {
            return;
        };
        if is_unavailable(&answer) {
            self.unavailable = true;
        }
        let latency = now.saturating_duration_since(slot.sent);
        let next = slot.client.answered(
            flow,
            answer,
            latency,
            self.run.second(now),
            stats,
            &self.run.tally,
        );
        match next {
            Some((flow, op)) => self.send(i, flow, op, now, now, stats),
            None => self.next_operation(i, now, stats),
        }
    }

    /// Every answer the stream has received, without waiting for more.
    fn take_received(&mut self, first: pb::StreamResponse) -> Vec<pb::StreamResponse> {
        let mut received = vec![first];
        let Some(open) = self.stream.as_mut() else {
            return received;
        };
        while received.len() < self.slots.len() {
            match ready_now(open.inbound.message()) {
                Some(Ok(Some(response))) => received.push(response),
                _ => break,
            }
        }
        received
    }

    /// One sweep: fails the calls sent more than the call timeout ago.
    fn sweep(&mut self, now: Instant, stats: &mut Stats) {
        self.sweeps += 1;
        let age_max = sweeps_to_expire(self.run.call_timeout);
        for i in 0..self.slots.len() {
            let slot = &self.slots[i];
            if slot.flow.is_some() && self.sweeps.saturating_sub(slot.sent_sweep) >= age_max {
                let id = slot.call;
                let late = Status::deadline_exceeded("no answer on the stream in time");
                self.answer(i, id, Err(late), now, stats);
            }
        }
    }

    /// The stream ended: every call in flight on it is answered as closed.
    fn fail_in_flight(&mut self, now: Instant, stats: &mut Stats) {
        self.stream = None;
        self.outbox.clear();
        for i in 0..self.slots.len() {
            if self.slots[i].flow.is_some() {
                let id = self.slots[i].call;
                self.answer(i, id, Err(closed()), now, stats);
            }
        }
    }

    /// After an answer said the server may be gone: on the leader route,
    /// moves to the leader as it is now (waiting out an election; calls in
    /// flight on the stream being left are as unknown as a timeout's, and
    /// go to the retries after the run). Then opens the stream again if it
    /// closed.
    async fn follow(&mut self) {
        self.unavailable = false;
        if let Some(route) = self.route.clone() {
            let (epoch, conn) = route.after_failure(self.slot, self.epoch).await;
            self.epoch = epoch;
            if let Some(conn) = conn {
                if !Arc::ptr_eq(&conn, &self.conn) {
                    self.locked(|d, stats| d.fail_in_flight(Instant::now(), stats));
                    self.conn = conn;
                }
            }
        }
        if self.stream.is_none() {
            if let Some(channel) = self.conn.stream_channel() {
                self.stream = open_stream(channel).await.ok();
            }
        }
        self.locked(|d, stats| {
            d.start_due(Instant::now(), stats);
            d.flush(stats);
        });
    }

    /// Runs `f` with the connection's statistics locked (never across an
    /// await: the progress line reads them).
    fn locked<T>(&mut self, f: impl FnOnce(&mut Driver, &mut Stats) -> T) -> T {
        let handle = self.stats.clone();
        let mut stats = handle.lock().unwrap_or_else(PoisonError::into_inner);
        f(self, &mut stats)
    }

    /// Clients whose run ended while they waited to begin stop waiting.
    fn retire_waiting(&mut self, now: Instant) {
        let ended =
            self.run.stop.load(Ordering::Relaxed) || self.run.deadline.is_some_and(|d| now >= d);
        if !ended {
            return;
        }
        for slot in &mut self.slots {
            if slot.waiting.take().is_some() {
                slot.ended = Some(now);
            }
        }
    }
}

fn closed() -> Status {
    Status::unavailable("the stream to the server closed")
}

/// Drives `clients` (each with its number in the run) over one `Stream`
/// call of their own on `conn`, until the run ends and every operation
/// begun is done; then retries each client's unknown calls. Returns, per
/// client, when it stopped sending and how many unknown calls an answer
/// resolved.
pub async fn drive_stream(
    clients: Vec<(usize, Client)>,
    conn: Arc<Conn>,
    slot: usize,
    route: Option<Arc<LeaderRoute>>,
    stats: Arc<Mutex<Stats>>,
    run: Arc<Run>,
) -> Vec<(Instant, usize)> {
    let now = Instant::now();
    let stream = match conn.stream_channel() {
        Some(channel) => open_stream(channel).await.ok(),
        None => None,
    };
    let mut driver = Driver {
        slots: clients
            .into_iter()
            .map(|(index, client)| Slot {
                client,
                index,
                k: 0,
                flow: None,
                call: 0,
                sent: now,
                sent_sweep: 0,
                waiting: None,
                ended: None,
            })
            .collect(),
        run: run.clone(),
        stats,
        conn,
        slot,
        epoch: 0,
        route,
        stream,
        outbox: Vec::new(),
        sequence: 0,
        sweeps: 0,
        unavailable: false,
    };
    driver.locked(|d, stats| {
        for i in 0..d.slots.len() {
            d.next_operation(i, now, stats);
        }
        d.flush(stats);
    });
    let mut sweep = tokio::time::interval(SWEEP_INTERVAL);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !driver.finished() {
        let due = driver.slots.iter().filter_map(|s| s.waiting).min();
        let open = driver.stream.is_some();
        tokio::select! {
            message = async {
                match driver.stream.as_mut() {
                    Some(open) => open.inbound.message().await,
                    None => std::future::pending().await,
                }
            }, if open => {
                let now = Instant::now();
                match message {
                    Ok(Some(first)) => {
                        let received = driver.take_received(first);
                        driver.locked(|d, stats| {
                            let clients = d.slots.len().max(1) as u64;
                            for response in received {
                                let id = response.id;
                                d.answer((id % clients) as usize, id, answer(response), now, stats);
                            }
                            d.flush(stats);
                        });
                    }
                    Ok(None) | Err(_) => {
                        driver.locked(|d, stats| d.fail_in_flight(now, stats));
                        driver.unavailable = true;
                    }
                }
            }
            _ = sweep.tick() => {
                let now = Instant::now();
                driver.locked(|d, stats| {
                    d.sweep(now, stats);
                    d.flush(stats);
                });
                driver.retire_waiting(now);
                // A stream that could not be opened again is tried again.
                if driver.stream.is_none() && !driver.finished() {
                    driver.unavailable = true;
                }
            }
            _ = tokio::time::sleep_until(due.unwrap_or(now).into()), if due.is_some() && open => {
                driver.locked(|d, stats| {
                    d.start_due(Instant::now(), stats);
                    d.flush(stats);
                });
            }
        }
        if driver.unavailable {
            driver.follow().await;
        }
    }
    // The stream closes; each client's unknown calls are retried over the
    // connection as it is now, all at once (one client's retries waiting
    // out a dead server must not use up the others' budget).
    drop(driver.stream.take());
    let deadline = Instant::now() + run.resolve_budget;
    let retries: FuturesUnordered<_> = driver
        .slots
        .into_iter()
        .map(|slot| {
            let mut worker = Worker {
                client: slot.client,
                conn: driver.conn.clone(),
                slot: driver.slot,
                epoch: driver.epoch,
                route: driver.route.clone(),
                stats: driver.stats.clone(),
            };
            let ended = slot.ended.unwrap_or_else(Instant::now);
            async move { (ended, worker.resolve(deadline).await) }
        })
        .collect();
    retries.collect().await
}
