//! Callers waiting for the replication thread, by token, and how their
//! answers reach them: a group's answers gather until its last, and a
//! turn's answers go to one task on the runtime that completes them.

use std::collections::HashMap;

use tokio::sync::mpsc::UnboundedReceiver;
use tokio::sync::oneshot;

use super::run::Loop;
use super::{GroupAnswer, GroupReply, Transport};
use crate::inventory::Applied;
use crate::replica::{LogStore, MembershipAnswer, ProposeError, ReadError, Token, Unanswered};

/// One caller waiting for an answer from the replica.
pub(super) enum Waiter {
    Command(oneshot::Sender<Result<Applied, Unanswered>>),
    /// A group's commands all carry one token; raft answers a token's
    /// commands in the order they were proposed (entry by entry, each in
    /// order), so the answers gather here in the group's order.
    Group {
        reply: GroupReply,
        answers: Vec<Result<Applied, Unanswered>>,
        expected: usize,
    },
    Read(oneshot::Sender<Result<u64, ReadError>>),
    Membership(oneshot::Sender<Result<MembershipAnswer, ProposeError>>),
}

impl Waiter {
    /// A group of `expected` commands, answered together through `reply`.
    pub(super) fn group(reply: GroupReply, expected: usize) -> Waiter {
        Waiter::Group {
            reply,
            answers: Vec::with_capacity(expected),
            expected,
        }
    }
}

/// The callers waiting, by token. Hashed fast: one lookup per answered
/// command.
pub(super) type Waiters = HashMap<Token, Waiter, foldhash::fast::RandomState>;

/// An answer relayed by a task on the runtime: one caller's, or a group's.
///
/// Completing a oneshot (or sending a group's answers) from this thread
/// wakes its caller's task from outside the runtime: the task goes on the
/// runtime's shared queue, often with a futex or eventfd wake-up of a
/// parked worker, once per caller (a turn answers many unary calls, or one
/// group from each of many streams). Handing the turn's answers to one
/// task costs one such wake-up; that task completes them from inside the
/// runtime, where a wake-up is a push on the worker's own queue.
pub(super) enum Relayed {
    One(
        oneshot::Sender<Result<Applied, Unanswered>>,
        Result<Applied, Unanswered>,
    ),
    Group(GroupReply, Vec<Result<Applied, Unanswered>>),
}

impl Relayed {
    /// Hands the answer to its caller. The caller may have given up
    /// (deadline, a closed stream); that is fine.
    fn complete(self) {
        match self {
            Relayed::One(reply, answer) => {
                let _ = reply.send(answer);
            }
            Relayed::Group(reply, answers) => {
                let _ = reply.tx.send(GroupAnswer {
                    id: reply.id,
                    answers,
                });
            }
        }
    }
}

/// The relay task: completes every answer it is handed, in order. Ends
/// when the replication thread drops its sender.
pub(super) async fn relay_answers(mut batches: UnboundedReceiver<Vec<Relayed>>) {
    while let Some(batch) = batches.recv().await {
        for relayed in batch {
            relayed.complete();
        }
    }
}

/// Records `answer` for the caller behind `token`. Returns what to hand
/// that caller once it is complete (a command, or a group's last answer);
/// None while a group still gathers, or when nobody waits.
fn complete_waiter(
    waiters: &mut Waiters,
    token: Token,
    answer: Result<Applied, Unanswered>,
) -> Option<Relayed> {
    let complete = match waiters.get_mut(&token) {
        Some(Waiter::Group {
            answers, expected, ..
        }) => {
            answers.push(answer);
            if answers.len() < *expected {
                return None;
            }
            // Complete: the answers travel in the waiter itself.
            None
        }
        Some(Waiter::Command(_)) => Some(answer),
        _ => return None,
    };
    match (waiters.remove(&token), complete) {
        (Some(Waiter::Command(reply)), Some(answer)) => Some(Relayed::One(reply, answer)),
        (Some(Waiter::Group { reply, answers, .. }), None) => Some(Relayed::Group(reply, answers)),
        _ => None,
    }
}

impl<S: LogStore, T: Transport> Loop<S, T> {
    /// Registers a caller and returns the token its answer will carry.
    pub(super) fn token(&mut self, waiter: Waiter) -> Token {
        let token = self.next_token;
        self.next_token += 1;
        self.waiters.insert(token, waiter);
        token
    }

    /// Answers the commands the replica applied (or failed) this turn: in
    /// one message to the relay task, or from here when there is none.
    pub(super) fn answer_commands(&mut self) {
        let mut relayed: Vec<Relayed> = Vec::new();
        for (token, answer) in self.out.answers.drain(..) {
            let Some(answered) = complete_waiter(&mut self.waiters, token, answer) else {
                continue;
            };
            if self.relay.is_some() {
                relayed.push(answered);
            } else {
                answered.complete();
            }
        }
        if relayed.is_empty() {
            return;
        }
        let Some(relay) = &self.relay else {
            return;
        };
        // The runtime is gone (shutdown): answer from here.
        if let Err(returned) = relay.send(relayed) {
            for answered in returned.0 {
                answered.complete();
            }
        }
    }

    /// Releases the reads whose read index is confirmed and applied; on a
    /// node removed from the cluster, fails the rest.
    pub(super) fn answer_reads(&mut self) {
        for (token, answer) in self.out.reads.drain(..) {
            if let Some(Waiter::Read(reply)) = self.waiters.remove(&token) {
                let _ = reply.send(answer);
            }
        }
        if self.replica.is_removed() {
            self.fail_reads_removed();
        }
    }

    /// A removed node gets no more entries: a read waiting for its read
    /// index to be confirmed or applied here would only time out, so it is
    /// failed now and its caller moves to another member.
    fn fail_reads_removed(&mut self) {
        let reads: Vec<u64> = self
            .waiters
            .iter()
            .filter(|(_, waiter)| matches!(waiter, Waiter::Read(_)))
            .map(|(token, _)| *token)
            .collect();
        for token in reads {
            if let Some(Waiter::Read(reply)) = self.waiters.remove(&token) {
                let _ = reply.send(Err(ReadError::Removed));
            }
        }
    }

    /// Answers the membership changes applied (or refused) this turn.
    pub(super) fn answer_membership(&mut self) {
        for (token, answer) in self.out.membership.drain(..) {
            if let Some(Waiter::Membership(reply)) = self.waiters.remove(&token) {
                let _ = reply.send(answer);
            }
        }
    }

    /// Callers still waiting at shutdown get an error, never a hang.
    pub(super) fn fail_all(&mut self) {
        for (_, waiter) in self.waiters.drain() {
            match waiter {
                Waiter::Command(reply) => {
                    let _ = reply.send(Err(Unanswered::without(ProposeError::ShuttingDown)));
                }
                Waiter::Group {
                    reply,
                    mut answers,
                    expected,
                } => {
                    answers.resize_with(expected, || {
                        Err(Unanswered::without(ProposeError::ShuttingDown))
                    });
                    let _ = reply.tx.send(GroupAnswer {
                        id: reply.id,
                        answers,
                    });
                }
                Waiter::Read(reply) => {
                    let _ = reply.send(Err(ReadError::NoLeader));
                }
                Waiter::Membership(reply) => {
                    let _ = reply.send(Err(ProposeError::Unknown));
                }
            }
        }
    }
}
