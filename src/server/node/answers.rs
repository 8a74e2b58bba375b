//! How the callers the driver finished get their answers: a turn's
//! commands and groups go to one task on the runtime that completes them.

use tokio::sync::mpsc::UnboundedReceiver;
use tokio::sync::oneshot;

use super::run::Loop;
use super::{GroupAnswer, GroupReply, Transport};
use crate::inventory::Applied;
use crate::replica::{Answer, LogStore, MembershipAnswer, ProposeError, ReadError, Unanswered};

/// Where one caller's answer goes: the driver hands it back with the
/// answer (see [`crate::replica::Finished`]).
pub(super) enum Reply {
    Command(oneshot::Sender<Result<Applied, Unanswered>>),
    Group(GroupReply),
    Read(oneshot::Sender<Result<u64, ReadError>>),
    Membership(oneshot::Sender<Result<MembershipAnswer, ProposeError>>),
}

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

impl<S: LogStore, T: Transport> Loop<S, T> {
    /// Answers the callers the driver finished: commands and groups in one
    /// message to the relay task (or from here when there is none), reads
    /// and membership changes at once.
    pub(super) fn answer(&mut self) {
        let mut relayed: Vec<Relayed> = Vec::new();
        for finished in self.driver.effects().finished.drain(..) {
            let answered = match (finished.reply, finished.answer) {
                (Reply::Command(reply), Answer::Command(answer)) => Relayed::One(reply, answer),
                (Reply::Group(reply), Answer::Group(answers)) => Relayed::Group(reply, answers),
                (Reply::Read(reply), Answer::Read(answer)) => {
                    let _ = reply.send(answer);
                    continue;
                }
                (Reply::Membership(reply), Answer::Membership(answer)) => {
                    let _ = reply.send(answer);
                    continue;
                }
                // The driver answers each caller as it asked.
                _ => continue,
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
}
