//! A simulated network between replicas: it delays, drops, duplicates and
//! reorders messages, and cuts links (partitions, one-way or both ways).

use std::collections::{BTreeMap, BTreeSet};

use raft::eraftpb::Message;

use crate::replica::clock::ClockReading;
use rand::rngs::StdRng;
use rand::Rng;

/// How unreliable the network is, per message.
#[derive(Debug, Clone, Copy)]
pub struct NetworkFaults {
    pub drop_per_mille: u32,
    pub duplicate_per_mille: u32,
    pub delay_ms_min: u64,
    pub delay_ms_max: u64,
}

#[derive(Debug)]
pub struct Network {
    /// In flight, by (delivery time, sequence): deterministic order.
    queue: BTreeMap<(u64, u64), (Message, ClockReading)>,
    sequence: u64,
    /// Directed links that deliver nothing: (from, to).
    cut: BTreeSet<(u64, u64)>,
    pub faults: NetworkFaults,
    pub sent: u64,
    pub dropped: u64,
    pub duplicated: u64,
}

impl Network {
    pub fn new(faults: NetworkFaults) -> Network {
        Network {
            queue: BTreeMap::new(),
            sequence: 0,
            cut: BTreeSet::new(),
            faults,
            sent: 0,
            dropped: 0,
            duplicated: 0,
        }
    }

    fn enqueue(&mut self, now_ms: u64, sent: (Message, ClockReading), rng: &mut StdRng) {
        let delay = rng.random_range(self.faults.delay_ms_min..=self.faults.delay_ms_max);
        self.sequence += 1;
        self.queue.insert((now_ms + delay, self.sequence), sent);
    }

    /// Sends a message; false when the network dropped it at once.
    /// Sends `message` with the sender's clock `reading` (as the server's
    /// batches carry one).
    pub fn send(
        &mut self,
        now_ms: u64,
        message: Message,
        reading: ClockReading,
        rng: &mut StdRng,
    ) -> bool {
        self.sent += 1;
        if self.cut.contains(&(message.from, message.to)) {
            self.dropped += 1;
            return false;
        }
        if rng.random_range(0..1_000) < self.faults.drop_per_mille {
            self.dropped += 1;
            return false;
        }
        if rng.random_range(0..1_000) < self.faults.duplicate_per_mille {
            self.duplicated += 1;
            self.enqueue(now_ms, (message.clone(), reading), rng);
        }
        self.enqueue(now_ms, (message, reading), rng);
        true
    }

    /// Messages due by `now_ms`, in delivery order, and snapshot messages
    /// lost on a link cut after they were sent (their sender must hear of
    /// it, as the real transport reports a failed snapshot stream).
    pub fn due(&mut self, now_ms: u64) -> (Vec<(Message, ClockReading)>, Vec<Message>) {
        let mut out = Vec::new();
        let mut lost = Vec::new();
        while let Some(entry) = self.queue.first_entry() {
            if entry.key().0 > now_ms {
                break;
            }
            let (message, reading) = entry.remove();
            if self.cut.contains(&(message.from, message.to)) {
                self.dropped += 1;
                if message.get_msg_type() == raft::eraftpb::MessageType::MsgSnapshot {
                    lost.push(message);
                }
                continue;
            }
            out.push((message, reading));
        }
        (out, lost)
    }

    /// Cuts every link between the two sides, or only `a` -> `b` links when
    /// `one_way`.
    pub fn partition(&mut self, a: &[u64], b: &[u64], one_way: bool) {
        for x in a {
            for y in b {
                self.cut.insert((*x, *y));
                if !one_way {
                    self.cut.insert((*y, *x));
                }
            }
        }
    }

    pub fn heal(&mut self) {
        self.cut.clear();
    }

    /// Nothing in flight.
    pub fn is_idle(&self) -> bool {
        self.queue.is_empty()
    }

    pub fn is_partitioned(&self) -> bool {
        !self.cut.is_empty()
    }
}
