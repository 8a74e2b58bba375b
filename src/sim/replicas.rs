//! Each millisecond's work for the replicas, as the server's threads do it:
//! messages delivered, syncs landing, ticks, then each node's turn
//! (proposals, reads, the next Ready); and what a replica puts out (syncs
//! to schedule, messages to send, answers for the clients).

use raft::eraftpb::{Message, MessageType};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::node::TICK_MS;
use super::report::{Checked, Failure, ViolationKind};
use super::world::Sim;
use super::Bug;
use crate::replica::clock::ClockReading;
use crate::replica::{Fatal, Output, StepError};

/// A stalled sync lands after this long at least, in ms.
const SYNC_STALL_MS_MIN: u64 = 1_000;
/// And at most.
const SYNC_STALL_MS_MAX: u64 = 5_000;

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
                let receiver_up = self.nodes.iter().any(|n| n.id == to && n.replica.is_some());
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
            if self.nodes[i].replica.is_some() {
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
        let Some(replica) = self.nodes[i].replica.as_mut() else {
            return Ok(());
        };
        let shown = show_refused().then(|| format!("{message:?}"));
        let stepped = guard(id, || replica.step(message))?;
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
        if let Some(replica) = self.nodes[i].replica.as_mut() {
            guard(from, || replica.report_snapshot(to, delivered))?;
        }
        Ok(())
    }

    /// Lands the syncs that are due (`persist_async`): everything the
    /// replica wrote until now becomes durable, then it learns so.
    pub(super) fn sync_disks(&mut self) -> Checked {
        for i in 0..self.nodes.len() {
            let Some(due_ms) = self.nodes[i].sync_due_ms else {
                continue;
            };
            // A paused process learns of its sync when it runs again.
            if due_ms > self.now_ms || self.nodes[i].is_paused() {
                continue;
            }
            self.nodes[i].sync_due_ms = None;
            let id = self.nodes[i].id;
            let mut out = Output::default();
            let Some(replica) = self.nodes[i].replica.as_mut() else {
                continue;
            };
            let ignore_failed_sync = self.config.bug == Some(Bug::IgnoreFailedSync);
            let synced = guard(id, || {
                let number = match replica.sync_store() {
                    Ok(number) => number,
                    // The injected bug: a failed sync taken for done.
                    Err(_) if ignore_failed_sync => replica.written_number(),
                    Err(fatal) => return Err(fatal),
                };
                replica.persisted(number, &mut out)
            })?;
            if let Err(fatal) = synced {
                self.stop_on_fatal(i, &fatal)?;
                continue;
            }
            self.handle_output(i, out);
        }
        Ok(())
    }

    /// Ticks every node whose tick is due, after the verdict on its clock.
    pub(super) fn tick_nodes(&mut self) -> Checked {
        for i in 0..self.nodes.len() {
            // A paused process ticks once as it runs again (the server's
            // ticker skips the ticks it missed).
            if self.nodes[i].next_tick_ms > self.now_ms || self.nodes[i].is_paused() {
                continue;
            }
            self.nodes[i].next_tick_ms = self.now_ms + TICK_MS;
            let clock = self.node_clock(i);
            let id = self.nodes[i].id;
            let mut out = Output::default();
            self.nodes[i].check_clock(clock);
            if let Some(replica) = self.nodes[i].replica.as_mut() {
                guard(id, || replica.tick(clock, &mut out))?;
            }
            self.handle_output(i, out);
        }
        Ok(())
    }

    /// Each up node's turn: it proposes the commands handed to it, starts
    /// the reads, and handles its next Ready.
    pub(super) fn node_turns(&mut self) -> Checked {
        for i in 0..self.nodes.len() {
            let clock = self.node_clock(i);
            let id = self.nodes[i].id;
            if self.nodes[i].is_paused() {
                continue;
            }
            let commands = std::mem::take(&mut self.nodes[i].commands);
            let reads = std::mem::take(&mut self.nodes[i].reads);
            let mut out = Output::default();
            if !commands.is_empty() {
                self.nodes[i].check_clock(clock);
            }
            let Some(replica) = self.nodes[i].replica.as_mut() else {
                continue;
            };
            let advanced = guard(id, || {
                if !commands.is_empty() {
                    replica.propose(clock, commands, &mut out);
                }
                replica.read(reads, &mut out);
                replica.advance(&mut out)
            })?;
            if let Err(fatal) = advanced {
                self.stop_on_fatal(i, &fatal)?;
                continue;
            }
            self.handle_output(i, out);
        }
        Ok(())
    }

    /// The replica at `i` returned `fatal`: the server aborts, so the node
    /// crashes here, and what it put out is never sent. Expected when its
    /// disk was made to fail (the rule: any storage error stops the node);
    /// a violation otherwise.
    fn stop_on_fatal(&mut self, i: usize, fatal: &Fatal) -> Checked {
        let id = self.nodes[i].id;
        let failing = self.nodes[i]
            .replica
            .as_ref()
            .and_then(|r| r.store().failure());
        if failing.is_none() {
            return Err(Failure::new(
                ViolationKind::Fatal,
                format!("node {id} hit a fatal error: {fatal}"),
            ));
        }
        self.crash(i);
        self.report.disk_failure_stops += 1;
        Ok(())
    }

    /// Acts on what the replica at `i` put out: schedules the sync it asked
    /// for, sends its messages, and routes its answers to the clients.
    pub(super) fn handle_output(&mut self, i: usize, out: Output) {
        let node_id = self.nodes[i].id;
        let mut rng = StdRng::seed_from_u64(self.now_ms ^ (node_id << 32) ^ self.config.seed);
        if out.sync.is_some() && self.nodes[i].sync_due_ms.is_none() {
            let mut delay_ms = rng.random_range(0..=self.faults.sync_delay_ms_max);
            if rng.random_range(0..1_000) < self.faults.sync_stall_per_mille {
                // A sync that stalls for seconds (a device resetting, a
                // saturated volume): appends wait behind it.
                delay_ms = rng.random_range(SYNC_STALL_MS_MIN..=SYNC_STALL_MS_MAX);
                self.report.sync_stalls += 1;
            }
            self.nodes[i].sync_due_ms = Some(self.now_ms + delay_ms);
        }
        self.send_messages(i, out.messages, &mut rng);
        self.answer_writes(i, out.answers, out.answered_at);
        self.answer_reads(i, out.reads);
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
            if let Some(replica) = self.nodes[i].replica.as_mut() {
                // Reported at once: the stream to `to` failed.
                let _ = guard(node_id, || replica.report_snapshot(to, false));
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
