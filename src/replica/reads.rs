//! Linearizable reads: every read waiting in a turn shares one ReadIndex;
//! each is answered once the leader confirmed its leadership and the index
//! it gave is applied here, or fails after `read_timeout_ticks`.

use raft::ReadState;

use super::error::ReadError;
use super::output::Output;
use super::{LogStore, Replica, Token};

/// Reads waiting for the leader to confirm the ReadIndex asked with `ctx`.
#[derive(Debug)]
pub(super) struct PendingRead {
    pub(super) ctx: u64,
    pub(super) tokens: Vec<Token>,
    pub(super) ticks: u64,
}

impl<S: LogStore> Replica<S> {
    /// Asks the leader to confirm it still leads (ReadIndex) for all these
    /// reads at once. Each token is answered in [`Output::reads`] once the
    /// state it may read is applied.
    pub fn read(&mut self, tokens: Vec<Token>, out: &mut Output) {
        if tokens.is_empty() {
            return;
        }
        // A follower asks the leader for the read index (raft-rs forwards
        // it), then serves the read from its own applied state.
        if self.raw.raft.leader_id == 0 {
            for token in tokens {
                out.reads.push((token, Err(ReadError::NoLeader)));
            }
            return;
        }
        let ctx = self.next_read_ctx;
        self.next_read_ctx = self.next_read_ctx.wrapping_add(1);
        self.raw.read_index(ctx.to_be_bytes().to_vec());
        self.reads_unconfirmed.push_back(PendingRead {
            ctx,
            tokens,
            ticks: 0,
        });
    }

    /// Counts a tick against every unconfirmed read and fails those that
    /// waited longer than `read_timeout_ticks`.
    pub(super) fn time_out_reads(&mut self, out: &mut Output) {
        let mut timed_out = Vec::new();
        for read in self.reads_unconfirmed.iter_mut() {
            read.ticks += 1;
        }
        while let Some(front) = self.reads_unconfirmed.front() {
            if front.ticks <= self.config.read_timeout_ticks {
                break;
            }
            if let Some(read) = self.reads_unconfirmed.pop_front() {
                timed_out.extend(read.tokens);
            }
        }
        for token in timed_out {
            out.reads.push((token, Err(ReadError::TimedOut)));
        }
    }

    pub(super) fn confirm_read(&mut self, state: ReadState) {
        let Ok(bytes) = <[u8; 8]>::try_from(state.request_ctx.as_slice()) else {
            return;
        };
        let ctx = u64::from_be_bytes(bytes);
        let Some(position) = self.reads_unconfirmed.iter().position(|r| r.ctx == ctx) else {
            return;
        };
        if let Some(read) = self.reads_unconfirmed.remove(position) {
            self.reads_confirmed
                .entry(state.index)
                .or_default()
                .extend(read.tokens);
        }
    }

    pub(super) fn finish_reads(&mut self, out: &mut Output) {
        let applied = self.inventory.applied_index();
        while let Some(entry) = self.reads_confirmed.first_entry() {
            if *entry.key() > applied {
                return;
            }
            let (index, tokens) = entry.remove_entry();
            for token in tokens {
                out.reads.push((token, Ok(index)));
            }
        }
    }
}
