//! The stream driver: one task per connection carries every client of that
//! connection over one `Stream` call of its own (see the module doc of
//! [`super`]).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use futures_util::stream::{FuturesUnordered, StreamExt};
use tonic::Status;

use super::{Run, Worker};
use crate::chunked::{chunked, ready_now, ChunkSender};
use crate::client::operation::answer;
use crate::client::Authed;
use crate::load::conn::{sweeps_to_expire, Conn, SWEEP_INTERVAL};
use crate::load::flow::{is_unavailable, Answer, Client, Flow};
use crate::load::leader::LeaderRoute;
use crate::load::stats::Stats;
use crate::proto::v1 as pb;
use crate::proto::v1::inventory_client::InventoryClient;
use pb::stream_request::Op;

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
            .map(|(index, client)| Slot::new(index, client, now))
            .collect(),
        run,
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
    driver.drive().await;
    driver.resolve_unknown().await
}

impl Slot {
    /// Client number `index` of the run, before its first operation.
    fn new(index: usize, client: Client, now: Instant) -> Slot {
        Slot {
            client,
            index,
            k: 0,
            flow: None,
            call: 0,
            sent: now,
            sent_sweep: 0,
            waiting: None,
            ended: None,
        }
    }
}

impl Driver {
    /// Carries the clients' calls until every client's run has ended:
    /// answers as they come, a sweep for timeouts every
    /// [`SWEEP_INTERVAL`], waiting clients started when due, and the
    /// leader followed whenever an answer says the server may be gone.
    async fn drive(&mut self) {
        let mut sweep = tokio::time::interval(SWEEP_INTERVAL);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while !self.finished() {
            let due = self.slots.iter().filter_map(|s| s.waiting).min();
            let open = self.stream.is_some();
            tokio::select! {
                message = async {
                    match self.stream.as_mut() {
                        Some(open) => open.inbound.message().await,
                        None => std::future::pending().await,
                    }
                }, if open => self.received(message),
                _ = sweep.tick() => self.swept(),
                // The instant stands in when no client waits; the branch is off.
                _ = tokio::time::sleep_until(due.unwrap_or(self.run.started).into()), if due.is_some() && open => {
                    self.locked(|d, stats| {
                        d.start_due(Instant::now(), stats);
                        d.flush(stats);
                    });
                }
            }
            if self.unavailable {
                self.follow().await;
            }
        }
    }

    /// Takes what the stream said: answers (with every other answer
    /// already received), handed to their clients; or its end, which
    /// fails every call in flight and looks for the server again.
    fn received(&mut self, message: Result<Option<pb::StreamResponse>, Status>) {
        let now = Instant::now();
        match message {
            Ok(Some(first)) => {
                let received = self.take_received(first);
                self.locked(|d, stats| {
                    let clients = d.slots.len().max(1) as u64;
                    for response in received {
                        let id = response.id;
                        d.answer((id % clients) as usize, id, answer(response), now, stats);
                    }
                    d.flush(stats);
                });
            }
            Ok(None) | Err(_) => {
                self.locked(|d, stats| d.fail_in_flight(now, stats));
                self.unavailable = true;
            }
        }
    }

    /// One tick of the sweep: calls past their timeout fail, and clients
    /// whose run ended while waiting stop.
    fn swept(&mut self) {
        let now = Instant::now();
        self.locked(|d, stats| {
            d.sweep(now, stats);
            d.flush(stats);
        });
        self.retire_waiting(now);
        // A stream that could not be opened again is tried again.
        if self.stream.is_none() && !self.finished() {
            self.unavailable = true;
        }
    }

    /// Closes the stream and retries each client's unknown calls over the
    /// connection as it is now, all at once (one client's retries waiting
    /// out a dead server must not use up the others' budget).
    async fn resolve_unknown(mut self) -> Vec<(Instant, usize)> {
        drop(self.stream.take());
        let deadline = Instant::now() + self.run.resolve_budget;
        let retries: FuturesUnordered<_> = self
            .slots
            .into_iter()
            .map(|slot| {
                let mut worker = Worker {
                    client: slot.client,
                    conn: self.conn.clone(),
                    slot: self.slot,
                    epoch: self.epoch,
                    route: self.route.clone(),
                    stats: self.stats.clone(),
                };
                let ended = slot.ended.unwrap_or_else(Instant::now);
                async move { (ended, worker.resolve(deadline).await) }
            })
            .collect();
        retries.collect().await
    }
}
