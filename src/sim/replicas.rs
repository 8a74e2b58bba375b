//! Each millisecond's work for the replicas, as the server's threads do it,
//! on the server's own loop ([`crate::replica::Driver`]): messages
//! delivered, syncs and snapshots landing at seeded times, then each
//! node's turn (its queued requests taken, a tick when due, proposals,
//! reads, the next Ready); and its driver's effects acted on (a sync or a
//! snapshot to schedule, messages to send, answers for the clients).

use raft::eraftpb::{Message, MessageType};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::node::MAX_CLOCK_OFFSET_MS;
use super::report::{Checked, Failure, ViolationKind};
use super::world::Sim;
use super::Bug;
use crate::replica::clock::ClockReading;
use crate::replica::{ClockCheck, Fatal, LogStore, Now, StepError};

/// A stalled sync lands after this long at least, in ms.
const SYNC_STALL_MS_MIN: u64 = 1_000;
/// And at most.
const SYNC_STALL_MS_MAX: u64 = 5_000;
/// A snapshot's encoding and writing takes up to this long, in ms (the
/// server's snapshot threads run beside the loop; here they take seeded
/// time, so entries are applied and snapshots installed meanwhile).
const SNAPSHOT_MS_MAX: u64 = 300;
/// Now and then, per mille, a snapshot takes seconds (a large state at
/// idle priority on a busy machine).
const SNAPSHOT_SLOW_PER_MILLE: u64 = 100;
/// How long such a slow snapshot takes at most, in ms.
const SNAPSHOT_SLOW_MS_MAX: u64 = 4_000;

impl Sim {
    /// Hands each message due now to its receiver, after telling the
    /// sender of a lost or delivered snapshot how its stream ended.
    pub(super) fn deliver_messages(&mut self) -> Checked {
        let (due, lost) = self.network.due(self.now_ms);
        for message in lost {
            self.report_snapshot(message.from, message.to, false)?;
        }
        for (message, reading) in due {
            if let Some(i) = self.nodes.iter().position(|n| n.id == message.to) {
                if self.nodes[i].is_paused() {
                    // It waits in the socket until the process runs again;
                    // a snapshot's stream has ended (a crash meanwhile
                    // loses it, and the leader, told it was sent, probes
                    // again).
                    if message.get_msg_type() == MessageType::MsgSnapshot {
                        self.report_snapshot(message.from, message.to, true)?;
                    }
                    self.nodes[i].inbox.push((message, reading));
                    continue;
                }
            }
            if message.get_msg_type() == MessageType::MsgSnapshot {
                let (from, to) = (message.from, message.to);
                let receiver_up = self.nodes.iter().any(|n| n.id == to && n.driver.is_some());
                self.report_snapshot(from, to, receiver_up)?;
            }
            self.deliver(message, reading)?;
        }
        Ok(())
    }

    /// Hands `message` to its receiver, which reads the sender's clock off
    /// it first.
    pub(super) fn deliver(&mut self, message: Message, reading: ClockReading) -> Checked {
        if let Some(i) = self.nodes.iter().position(|n| n.id == message.to) {
            if self.nodes[i].driver.is_some() {
                let clock = self.node_clock(i);
                self.nodes[i].clocks.observe(message.from, &reading, clock);
            }
        }
        self.step_receiver(message)
    }

    /// Steps the receiver's replica with `message`, if it is up. A message
    /// a replica refuses is dropped, as the server does, and counted.
    fn step_receiver(&mut self, message: Message) -> Checked {
        let Some(i) = self.nodes.iter().position(|n| n.id == message.to) else {
            return Ok(());
        };
        let id = self.nodes[i].id;
        let Some(driver) = self.nodes[i].driver.as_mut() else {
            return Ok(());
        };
        let shown = show_refused().then(|| format!("{message:?}"));
        let stepped = guard(id, || driver.step(message))?;
        if let Err(StepError::Refused(refusal)) = stepped {
            *self.report.refused.entry(refusal.label()).or_default() += 1;
            if let Some(shown) = shown {
                eprintln!("node {id} refused ({}): {shown}", refusal.label());
            }
        }
        Ok(())
    }

    /// Tells a snapshot's sender how its stream ended, as the transport does.
    fn report_snapshot(&mut self, from: u64, to: u64, delivered: bool) -> Checked {
        let Some(i) = self.nodes.iter().position(|n| n.id == from) else {
            return Ok(());
        };
        if let Some(driver) = self.nodes[i].driver.as_mut() {
            guard(from, || driver.report_snapshot(to, delivered))?;
        }
        Ok(())
    }

    /// Lands the syncs that are due, as the server's sync thread does:
    /// the disk syncs everything written until now, and the driver learns
    /// of the Ready number the sync was started for. A sync still asked
    /// for starts next.
    pub(super) fn sync_disks(&mut self) -> Checked {
        for i in 0..self.nodes.len() {
            let Some((due_ms, number)) = self.nodes[i].sync_running else {
                continue;
            };
            // A paused process learns of its sync when it runs again.
            if due_ms > self.now_ms || self.nodes[i].is_paused() {
                continue;
            }
            self.nodes[i].sync_running = None;
            let id = self.nodes[i].id;
            let Some(driver) = self.nodes[i].driver.as_mut() else {
                continue;
            };
            let ignore_failed_sync = self.config.bug == Some(Bug::IgnoreFailedSync);
            let synced = guard(id, || {
                match driver.sync_store() {
                    Ok(_) => {}
                    // The injected bug: a failed sync taken for done.
                    Err(_) if ignore_failed_sync => {}
                    Err(fatal) => return Err(fatal),
                }
                driver.synced(number)
            })?;
            if let Err(fatal) = synced {
                self.stop_on_fatal(i, &fatal)?;
                continue;
            }
            self.act(i);
        }
        Ok(())
    }

    /// Hands each snapshot whose encoding and writing is done back to its
    /// driver, as the server's loop does when its snapshot thread ends.
    pub(super) fn finish_snapshots(&mut self) -> Checked {
        for i in 0..self.nodes.len() {
            let due = self.nodes[i]
                .snapshot_job
                .as_ref()
                .is_some_and(|(due_ms, _)| *due_ms <= self.now_ms);
            if !due || self.nodes[i].is_paused() {
                continue;
            }
            let Some((_, task)) = self.nodes[i].snapshot_job.take() else {
                continue;
            };
            let id = self.nodes[i].id;
            let Some(driver) = self.nodes[i].driver.as_mut() else {
                continue;
            };
            let finished = guard(id, || {
                let mut writer = driver.replica().store().chunk_writer();
                let written = task.run(&mut *writer).map_err(Fatal::from)?;
                let stale = written.index() <= driver.replica().status().snapshot_index;
                driver.snapshot_written(written).map(|()| stale)
            })?;
            let stale = match finished {
                Ok(stale) => stale,
                Err(fatal) => {
                    self.stop_on_fatal(i, &fatal)?;
                    continue;
                }
            };
            self.report.snapshots_by_caller += 1;
            self.report.snapshots_stale += u64::from(stale);
            self.act(i);
        }
        Ok(())
    }

    /// Each up node's turn, as the server's loop takes it: the requests
    /// queued for it (while its driver wants commands), then the driver's
    /// turn at the node's clocks: a tick when due, after the verdict on
    /// its clock; the batch, the reads, the next Ready.
    pub(super) fn node_turns(&mut self) -> Checked {
        for i in 0..self.nodes.len() {
            if self.nodes[i].is_paused() {
                continue;
            }
            let id = self.nodes[i].id;
            let now = Now {
                monotonic_ms: self.nodes[i].monotonic_clock(self.now_ms),
                wall_ms: self.node_clock(i),
            };
            let node = &mut self.nodes[i];
            let Some(driver) = node.driver.as_mut() else {
                continue;
            };
            let requests = &mut node.requests;
            let clocks = ClockCheck {
                peers: &node.clocks,
                max_offset_ms: MAX_CLOCK_OFFSET_MS,
            };
            let turned = guard(id, || {
                while driver.wants_commands() {
                    let Some((request, caller)) = requests.pop_front() else {
                        break;
                    };
                    driver.submit(request, caller);
                }
                driver.turn(now, Some(clocks))
            })?;
            if let Err(fatal) = turned {
                self.stop_on_fatal(i, &fatal)?;
                continue;
            }
            self.act(i);
        }
        Ok(())
    }

    /// The replica at `i` returned `fatal`: the server aborts, so the node
    /// crashes here, and what it put out is never sent. Expected when its
    /// disk was made to fail, or its snapshot damaged (the rule: any
    /// storage error stops the node); a violation otherwise.
    fn stop_on_fatal(&mut self, i: usize, fatal: &Fatal) -> Checked {
        let id = self.nodes[i].id;
        let failing = self.nodes[i].replica().and_then(|r| r.store().failure());
        let damaged = self.nodes[i].damaged();
        if failing.is_none() && !damaged {
            return Err(Failure::new(
                ViolationKind::Fatal,
                format!("node {id} hit a fatal error: {fatal}"),
            ));
        }
        self.crash(i);
        if damaged {
            self.report.damage_stops += 1;
        } else {
            self.report.disk_failure_stops += 1;
        }
        Ok(())
    }

    /// Acts on the effects of the driver at `i`: schedules the sync and
    /// the snapshot it asks for, sends its messages, and routes its
    /// answers to the clients.
    pub(super) fn act(&mut self, i: usize) {
        let node_id = self.nodes[i].id;
        let mut rng = StdRng::seed_from_u64(self.now_ms ^ (node_id << 32) ^ self.config.seed);
        let Some(driver) = self.nodes[i].driver.as_mut() else {
            return;
        };
        let effects = driver.effects();
        let sync = effects.sync.take();
        let snapshot = effects.snapshot.take();
        let messages = std::mem::take(&mut effects.messages);
        let finished = std::mem::take(&mut effects.finished);
        let answered_at = std::mem::take(&mut effects.answered_at);
        // The transport routes by id: it needs nothing of members or ids.
        effects.members_changed = false;
        effects.cluster = None;
        if let Some(number) = sync {
            self.nodes[i].sync_asked = self.nodes[i].sync_asked.max(number);
        }
        self.start_sync(i, &mut rng);
        if let Some(task) = snapshot {
            let mut took_ms = rng.random_range(0..=SNAPSHOT_MS_MAX);
            if rng.random_range(0..1_000) < SNAPSHOT_SLOW_PER_MILLE {
                took_ms = rng.random_range(SNAPSHOT_MS_MAX..=SNAPSHOT_SLOW_MS_MAX);
            }
            self.nodes[i].snapshot_job = Some((self.now_ms + took_ms, task));
        }
        self.send_messages(i, messages, &mut rng);
        self.answer_callers(i, finished, answered_at);
    }

    /// Starts a sync of everything asked for when none runs, as the
    /// server's sync thread takes every request waiting: it lands after a
    /// seeded delay, now and then after seconds.
    fn start_sync(&mut self, i: usize, rng: &mut StdRng) {
        let node = &self.nodes[i];
        let outstanding = node.driver.as_ref().is_some_and(|d| d.syncs_outstanding());
        if node.sync_running.is_some() || !outstanding {
            return;
        }
        let mut delay_ms = rng.random_range(0..=self.faults.sync_delay_ms_max);
        if rng.random_range(0..1_000) < self.faults.sync_stall_per_mille {
            // A sync that stalls for seconds (a device resetting, a
            // saturated volume): appends wait behind it.
            delay_ms = rng.random_range(SYNC_STALL_MS_MIN..=SYNC_STALL_MS_MAX);
            self.report.sync_stalls += 1;
        }
        self.nodes[i].sync_running = Some((self.now_ms + delay_ms, self.nodes[i].sync_asked));
    }

    /// Sends the messages of the node at `i`; a snapshot the network loses
    /// is reported to the sender at once, as a failed stream.
    fn send_messages(&mut self, i: usize, messages: Vec<Message>, rng: &mut StdRng) {
        let node_id = self.nodes[i].id;
        let mut lost_snapshots = Vec::new();
        let clock = self.node_clock(i);
        for message in messages {
            let is_snapshot = message.get_msg_type() == MessageType::MsgSnapshot;
            let to = message.to;
            let reading = self.nodes[i].clocks.reading_for(to, clock);
            self.checker.promises.note_sent(node_id, &message);
            if !self.network.send(self.now_ms, message, reading, rng) && is_snapshot {
                lost_snapshots.push(to);
            }
        }
        for to in lost_snapshots {
            if let Some(driver) = self.nodes[i].driver.as_mut() {
                // Reported at once: the stream to `to` failed.
                let _ = guard(node_id, || driver.report_snapshot(to, false));
            }
        }
    }
}

/// Whether to print every peer message a replica refuses
/// (`STOCKRAFT_SIM_SHOW_REFUSED=1`), to look into a seed.
fn show_refused() -> bool {
    static SHOW: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SHOW.get_or_init(|| std::env::var_os("STOCKRAFT_SIM_SHOW_REFUSED").is_some())
}

/// Runs replica code; a panic (a broken invariant, in raft-rs or in
/// stockraft) would stop a real node, so here it is a violation.
pub(super) fn guard<T>(node: u64, work: impl FnOnce() -> T) -> Checked<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)).map_err(|panic| {
        let message = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "a panic".into());
        Failure::new(
            ViolationKind::Panicked,
            format!("node {node} stopped on a broken invariant: {message}"),
        )
    })
}
