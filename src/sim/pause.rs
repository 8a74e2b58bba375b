//! Process faults: a member stopped for seconds, as by SIGSTOP, a long
//! garbage-collection pause or a VM migration, then resumed.
//!
//! A paused member keeps its memory and its disk but does nothing: no
//! message is read (they wait in its socket), no tick fires, no sync is
//! learned of, no proposal or read is taken. When it runs again it reads
//! what waited, in order, and ticks once; meanwhile its peers may have
//! elected another leader, and it may still believe it leads. What the
//! checkers hold it to is unchanged: a leader back from a pause serves no
//! stale read and stamps no time its peers have not confirmed.

use rand::rngs::StdRng;
use rand::Rng;

use super::report::Checked;
use super::world::Sim;

/// The shortest pause, in ms.
const PAUSE_MS_MIN: u64 = 500;
/// The longest pause: several election timeouts (1 to 2 s here).
const PAUSE_MS_MAX: u64 = 5_000;

impl Sim {
    /// Pauses an up member now and then (the leader half the time), one
    /// at a time.
    pub(super) fn pause_a_node(&mut self, rng: &mut StdRng) {
        if rng.random_range(0..1_000) >= self.faults.pause_per_mille {
            return;
        }
        if self.nodes.iter().any(|n| n.is_paused()) {
            return;
        }
        let Some(target) = self.pick_up_node(rng) else {
            return;
        };
        let pause_ms = rng.random_range(PAUSE_MS_MIN..=PAUSE_MS_MAX);
        self.nodes[target].paused_until_ms = Some(self.now_ms + pause_ms);
        self.report.pauses += 1;
    }

    /// Runs again every member whose pause is over: it reads the messages
    /// that waited for it before anything else.
    pub(super) fn resume_paused(&mut self) -> Checked {
        for i in 0..self.nodes.len() {
            let Some(until_ms) = self.nodes[i].paused_until_ms else {
                continue;
            };
            if until_ms > self.now_ms {
                continue;
            }
            self.nodes[i].paused_until_ms = None;
            let waiting = std::mem::take(&mut self.nodes[i].inbox);
            for (message, reading) in waiting {
                self.deliver(message, reading)?;
            }
        }
        Ok(())
    }
}
