//! Client requests in flight: each attempt a client makes is handed to a
//! node (the one it was pointed at, mostly the leader for writes, any node
//! for reads) with a [`Ticket`], and the answers its driver finishes are
//! routed back to the client by that ticket.

use std::collections::HashMap;

use rand::rngs::StdRng;
use rand::Rng;

use super::client::OpKind;
use super::report::ViolationKind;
use super::world::Sim;
use super::Bug;
use crate::replica::{Answer, Finished, ProposeError, ReadError, Request, Token, Unanswered};

/// Where a client's answer goes.
#[derive(Debug, Clone, Copy)]
pub(super) struct Ticket {
    client: usize,
    op: u64,
}

/// Who waits for a driver's answer: a client, or the operator (whose
/// membership changes are followed by watching the members).
#[derive(Debug, Clone, Copy)]
pub(super) enum Caller {
    Client(Ticket),
    Operator,
}

impl Sim {
    /// Hands every client's due attempt to a node; a node that is down
    /// refuses the connection and the client tries again shortly.
    pub(super) fn drive_clients(&mut self, rng: &mut StdRng) {
        let leader = self.leader();
        for c in 0..self.clients.len() {
            let Some((op, kind, target_hint)) = self.clients[c].next_attempt(self.now_ms) else {
                continue;
            };
            let up = self.up();
            let is_read = matches!(kind, OpKind::Read { .. });
            let target = self.pick_node(target_hint, leader, is_read, rng);
            if !up.contains(&target) {
                // Connection refused: the client tries elsewhere shortly.
                self.clients[c].attempt_failed(op, self.now_ms, None);
                continue;
            }
            self.hand_to_node(target, c, op, kind);
        }
    }

    /// The node an attempt goes to: the one a refusal pointed at, else
    /// the leader for most writes, else any node.
    fn pick_node(
        &self,
        target_hint: Option<u64>,
        leader: Option<usize>,
        is_read: bool,
        rng: &mut StdRng,
    ) -> usize {
        if let Some(i) = target_hint.and_then(|id| self.nodes.iter().position(|n| n.id == id)) {
            return i;
        }
        match leader {
            // Reads go anywhere, as storefronts behind a load balancer do;
            // writes mostly find the leader.
            Some(l) if !is_read && rng.random_bool(0.7) => l,
            _ => rng.random_range(0..self.nodes.len()),
        }
    }

    /// Queues client `c`'s attempt at op `op` for the node at `target`'s
    /// next turn, or answers a read that needs no ReadIndex round at once.
    fn hand_to_node(&mut self, target: usize, c: usize, op: u64, kind: OpKind) {
        let ticket = Caller::Client(Ticket { client: c, op });
        match kind {
            OpKind::Write(command) => {
                let request = (Request::Command(command), ticket);
                self.nodes[target].requests.push_back(request);
            }
            OpKind::Read { linearizable, .. }
                if !linearizable || self.config.bug == Some(Bug::SkipReadIndex) =>
            {
                // Served at once from the node's applied state (for a
                // linearizable read, only under the injected bug).
                if let Some(replica) = self.nodes[target].replica() {
                    let shared = replica.shared().load_full();
                    let now = self.now_ms;
                    self.clients[c].read_answered(op, now, &shared, &mut self.checker);
                }
            }
            OpKind::Read { .. } => {
                self.nodes[target]
                    .requests
                    .push_back((Request::Read, ticket));
            }
        }
    }

    /// Routes the answers the driver of the node at `i` finished back to
    /// their clients, each write with the log position it came from.
    pub(super) fn answer_callers(
        &mut self,
        i: usize,
        finished: Vec<Finished<Caller>>,
        answered_at: Vec<(Token, u64, usize)>,
    ) {
        let node_id = self.nodes[i].id;
        let answered_at: HashMap<Token, (u64, usize)> = answered_at
            .into_iter()
            .map(|(token, index, position)| (token, (index, position)))
            .collect();
        for done in finished {
            let Caller::Client(ticket) = done.reply else {
                continue;
            };
            match done.answer {
                Answer::Command(Ok(applied)) => {
                    let at = answered_at.get(&done.token).copied().unwrap_or((0, 0));
                    self.clients[ticket.client].write_answered(
                        ticket.op,
                        self.now_ms,
                        applied,
                        at,
                        &mut self.checker,
                    );
                }
                Answer::Command(Err(unanswered)) => self.write_failed(node_id, ticket, unanswered),
                Answer::Read(answer) => self.answer_read(i, ticket, answer),
                Answer::Group(_) | Answer::Membership(_) => {}
            }
        }
    }

    /// A write the node could not answer: the client tries again, where
    /// the refusal points if it names a leader.
    fn write_failed(&mut self, node_id: u64, ticket: Ticket, unanswered: Unanswered) {
        // A command handed back must be the one proposed: the server
        // retries what it gets back, not what was sent.
        let sent = self.clients[ticket.client].write_command(ticket.op);
        if let (Some(sent), Some(returned)) = (sent, &unanswered.command) {
            if sent != returned {
                self.checker.note_failure(
                    ViolationKind::Misbehaved,
                    format!("node {node_id} handed back {returned:?} for a proposal of {sent:?}"),
                );
            }
        }
        let hint = match unanswered.error {
            ProposeError::NotLeader { leader } => Some(leader),
            _ => None,
        };
        self.clients[ticket.client].attempt_failed(ticket.op, self.now_ms, hint);
    }

    /// Answers a linearizable read the node at `i` may now serve from its
    /// applied state; a refused one tries again.
    fn answer_read(&mut self, i: usize, ticket: Ticket, answer: Result<u64, ReadError>) {
        match answer {
            Ok(_) => {
                if let Some(replica) = self.nodes[i].replica() {
                    let shared = replica.shared().load_full();
                    self.clients[ticket.client].read_answered(
                        ticket.op,
                        self.now_ms,
                        &shared,
                        &mut self.checker,
                    );
                }
            }
            Err(error) => {
                let hint = match error {
                    ReadError::NotLeader { leader } => Some(leader),
                    _ => None,
                };
                self.clients[ticket.client].attempt_failed(ticket.op, self.now_ms, hint);
            }
        }
    }
}
