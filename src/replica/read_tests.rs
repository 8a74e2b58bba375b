//! Linearizable reads across a member's restart.

use raft::eraftpb::{Message, MessageType};

use super::tests::{logger, Group};
use super::*;

/// The answer to a ReadIndex that a member asked before it restarted can
/// still be on its way (queued at the leader for it). Each life asks with
/// contexts of its own (`ReplicaConfig::read_ctx_first`), so that answer,
/// with its older index, answers no read of the new life; with the same
/// contexts it would (the stale read a fresh simulator seed found).
#[test]
fn a_read_index_answer_from_an_earlier_life_answers_no_read() {
    for (first_life, second_life, answered) in [(100, 200, false), (100, 100, true)] {
        let configs = (1..=3)
            .map(|id| {
                let mut config = ReplicaConfig::new(id);
                config.read_ctx_first = first_life;
                config
            })
            .collect();
        let mut group = Group::with_configs(configs);
        group.elect_first();
        let mut out = Output::default();
        group.replicas[1].read(vec![7], &mut out);
        let store = group.replicas[1].store().clone();
        let term = group.replicas[0].status().term;

        let mut config = ReplicaConfig::new(2);
        config.read_ctx_first = second_life;
        let mut restarted = Replica::new(config, store, &logger()).unwrap();
        let mut heartbeat = Message::default();
        heartbeat.set_msg_type(MessageType::MsgHeartbeat);
        heartbeat.from = 1;
        heartbeat.to = 2;
        heartbeat.term = term;
        restarted.step(heartbeat).unwrap();
        let mut out = Output::default();
        restarted.read(vec![8], &mut out);
        // The leader's answer to the first life's read, index 1.
        let mut answer = Message::default();
        answer.set_msg_type(MessageType::MsgReadIndexResp);
        answer.from = 1;
        answer.to = 2;
        answer.term = term;
        answer.index = 1;
        answer.entries = vec![raft::eraftpb::Entry {
            data: first_life.to_be_bytes().to_vec().into(),
            ..Default::default()
        }]
        .into();
        restarted.step(answer).unwrap();
        let mut out = Output::default();
        restarted.advance(&mut out).unwrap();
        let read_answered = out.reads.iter().any(|(token, _)| *token == 8);
        assert_eq!(read_answered, answered, "{:?}", out.reads);
    }
}
