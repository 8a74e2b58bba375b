//! The callers a [`Driver`](super::Driver) answers, by token: what each
//! waits for, where its answer goes, and a group's answers gathered until
//! its last.

use std::collections::HashMap;

use super::error::{ProposeError, ReadError, Unanswered};
use super::output::MembershipAnswer;
use super::Token;
use crate::inventory::Applied;

/// What a caller is answered: one of these per token.
#[derive(Debug)]
pub enum Answer {
    /// One command, applied or not.
    Command(Result<Applied, Unanswered>),
    /// A group's commands, in the order given.
    Group(Vec<Result<Applied, Unanswered>>),
    /// A linearizable read: the applied index it may be served at.
    Read(Result<u64, ReadError>),
    /// A membership change, applied or refused.
    Membership(Result<MembershipAnswer, ProposeError>),
}

/// One caller answered: its token, where the answer goes (`R`, the
/// caller's own: a oneshot in the server, a client's ticket in the
/// simulator), and the answer.
#[derive(Debug)]
pub struct Finished<R> {
    pub token: Token,
    pub reply: R,
    pub answer: Answer,
}

/// What a caller waits for.
enum Wait {
    Command,
    /// A group's commands all carry one token; raft answers a token's
    /// commands in the order they were proposed (entry by entry, each in
    /// order), so the answers gather here in the group's order.
    Group {
        answers: Vec<Result<Applied, Unanswered>>,
        expected: usize,
    },
    Read,
    Membership,
}

struct Caller<R> {
    reply: R,
    wait: Wait,
}

/// The callers waiting, by token. Hashed fast: one lookup per answered
/// command.
pub(super) struct Callers<R> {
    waiting: HashMap<Token, Caller<R>, foldhash::fast::RandomState>,
    next_token: Token,
}

impl<R> Callers<R> {
    pub(super) fn new() -> Callers<R> {
        Callers {
            waiting: HashMap::default(),
            next_token: 1,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.waiting.len()
    }

    fn add(&mut self, reply: R, wait: Wait) -> Token {
        let token = self.next_token;
        self.next_token += 1;
        self.waiting.insert(token, Caller { reply, wait });
        token
    }

    pub(super) fn add_command(&mut self, reply: R) -> Token {
        self.add(reply, Wait::Command)
    }

    pub(super) fn add_group(&mut self, reply: R, expected: usize) -> Token {
        let answers = Vec::with_capacity(expected);
        self.add(reply, Wait::Group { answers, expected })
    }

    pub(super) fn add_read(&mut self, reply: R) -> Token {
        self.add(reply, Wait::Read)
    }

    pub(super) fn add_membership(&mut self, reply: R) -> Token {
        self.add(reply, Wait::Membership)
    }

    /// Records a command's answer for the caller behind `token`. Returns
    /// the caller finished by it: a command, or a group's last answer;
    /// None while a group still gathers, or when nobody waits.
    pub(super) fn command(
        &mut self,
        token: Token,
        answer: Result<Applied, Unanswered>,
    ) -> Option<Finished<R>> {
        match self.waiting.get_mut(&token) {
            Some(Caller {
                wait: Wait::Group { answers, expected },
                ..
            }) => {
                answers.push(answer);
                if answers.len() < *expected {
                    return None;
                }
                let caller = self.waiting.remove(&token)?;
                let Wait::Group { answers, .. } = caller.wait else {
                    return None;
                };
                Some(Finished {
                    token,
                    reply: caller.reply,
                    answer: Answer::Group(answers),
                })
            }
            Some(Caller {
                wait: Wait::Command,
                ..
            }) => {
                let caller = self.waiting.remove(&token)?;
                Some(Finished {
                    token,
                    reply: caller.reply,
                    answer: Answer::Command(answer),
                })
            }
            _ => None,
        }
    }

    /// Finishes the read behind `token`, if one waits there.
    pub(super) fn read(
        &mut self,
        token: Token,
        answer: Result<u64, ReadError>,
    ) -> Option<Finished<R>> {
        self.finish_if(
            token,
            |wait| matches!(wait, Wait::Read),
            Answer::Read(answer),
        )
    }

    /// Finishes the membership change behind `token`, if one waits there.
    pub(super) fn membership(
        &mut self,
        token: Token,
        answer: Result<MembershipAnswer, ProposeError>,
    ) -> Option<Finished<R>> {
        let answer = Answer::Membership(answer);
        self.finish_if(token, |wait| matches!(wait, Wait::Membership), answer)
    }

    /// Finishes a group of no commands at once.
    pub(super) fn finish_empty_group(&mut self, token: Token) -> Option<Finished<R>> {
        let is_empty_group = |wait: &Wait| matches!(wait, Wait::Group { expected: 0, .. });
        self.finish_if(token, is_empty_group, Answer::Group(Vec::new()))
    }

    fn finish_if(
        &mut self,
        token: Token,
        is_kind: impl Fn(&Wait) -> bool,
        answer: Answer,
    ) -> Option<Finished<R>> {
        if !self.waiting.get(&token).is_some_and(|c| is_kind(&c.wait)) {
            return None;
        }
        let caller = self.waiting.remove(&token)?;
        Some(Finished {
            token,
            reply: caller.reply,
            answer,
        })
    }

    /// The tokens of every read still waiting, in token order.
    pub(super) fn read_tokens(&self) -> Vec<Token> {
        let mut reads: Vec<Token> = self
            .waiting
            .iter()
            .filter(|(_, caller)| matches!(caller.wait, Wait::Read))
            .map(|(token, _)| *token)
            .collect();
        reads.sort_unstable();
        reads
    }

    /// Every caller still waiting, finished with an error (a group's
    /// missing answers too), in token order: at shutdown nobody hangs. A
    /// command was not applied here and is safe to retry by its id; a
    /// membership change may still land, so its outcome is unknown.
    pub(super) fn fail_all(&mut self) -> Vec<Finished<R>> {
        let mut tokens: Vec<Token> = self.waiting.keys().copied().collect();
        tokens.sort_unstable();
        let mut finished = Vec::with_capacity(tokens.len());
        for token in tokens {
            let Some(caller) = self.waiting.remove(&token) else {
                continue;
            };
            let failed = || Err(Unanswered::without(ProposeError::ShuttingDown));
            let answer = match caller.wait {
                Wait::Command => Answer::Command(failed()),
                Wait::Group {
                    mut answers,
                    expected,
                } => {
                    answers.resize_with(expected, failed);
                    Answer::Group(answers)
                }
                Wait::Read => Answer::Read(Err(ReadError::NoLeader)),
                Wait::Membership => Answer::Membership(Err(ProposeError::Unknown)),
            };
            finished.push(Finished {
                token,
                reply: caller.reply,
                answer,
            });
        }
        finished
    }
}
