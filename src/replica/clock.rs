//! How far this member's clock is from its fellow members', and whether a
//! leader may stamp time.
//!
//! The leader's clock is the cluster's time: it stamps every batch, and
//! holds expire and retained ids are forgotten by those stamps. A leader
//! whose clock is a day fast would expire every hold at once; one a day
//! slow would keep them all a day. So, as CockroachDB does, members
//! compare clocks on the peer transport and a leader stamps only while its
//! clock is known to be within `--max-clock-offset` of a majority's.
//!
//! Each batch a member sends carries a [`ClockReading`]: its clock at
//! sending, and an echo of the latest reading it received from the
//! addressee with how long it held that echo. When the echo comes back,
//! the round trip bounds the error: the peer's clock is its reading
//! against the midpoint of the round trip, give or take half of it (NTP's
//! method). A sample is *far* only when it is beyond the bound even after
//! giving it all that uncertainty, so a slow network never makes a good
//! clock look bad.
//!
//! The verdict (see [`PeerClocks::verdict`]):
//! - **Far**: the samples of a majority of voters are certainly beyond the
//!   bound. The leader steps down (`Replica::check_clock`).
//! - **Confirmed**: a majority of voters (this member included) have fresh
//!   samples not certainly beyond it. The leader may stamp.
//! - **Unconfirmed**: neither: samples missing or stale, or this member's
//!   own clock jumped (every sample then looks stale, taken "in the
//!   future" or long ago). The leader stamps nothing and, if that lasts
//!   an election timeout, steps down.
//!
//! Sans-IO like the rest of the replica: the server feeds it from the
//! peer transport, the simulator from its network.

use std::collections::BTreeMap;

/// What a member says of its clock with each batch (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ClockReading {
    /// The sender's clock when it sent, in ms since the Unix epoch.
    pub clock_ms: u64,
    /// The latest `clock_ms` the sender received from the addressee; 0
    /// when it has received none.
    pub echo_ms: u64,
    /// How long the sender held that echo before sending, by its clock.
    pub held_ms: u64,
}

/// Whether a leader may stamp time (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClockVerdict {
    #[default]
    Confirmed,
    Unconfirmed,
    Far,
}

/// The latest reading received from a peer, to echo back.
#[derive(Debug, Clone, Copy)]
struct Echo {
    their_clock_ms: u64,
    received_at_ms: u64,
}

/// One measurement of a peer's clock against this member's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockSample {
    /// The peer's clock minus this member's (positive: the peer is ahead).
    pub offset_ms: i64,
    /// Half the round trip: the offset is right within this much.
    pub uncertainty_ms: u64,
    /// This member's clock when it measured.
    pub at_ms: u64,
}

/// A round trip longer than this gives no sample: it says next to nothing.
const ROUND_TRIP_MS_MAX: u64 = 10_000;

/// Clock readings of fellow members, by member id.
#[derive(Debug, Clone, Default)]
pub struct PeerClocks {
    echoes: BTreeMap<u64, Echo>,
    samples: BTreeMap<u64, ClockSample>,
}

impl PeerClocks {
    /// The reading to send to `peer` at `now_ms` (this member's clock).
    pub(crate) fn reading_for(&self, peer: u64, now_ms: u64) -> ClockReading {
        match self.echoes.get(&peer) {
            Some(echo) => ClockReading {
                clock_ms: now_ms,
                echo_ms: echo.their_clock_ms,
                held_ms: now_ms.saturating_sub(echo.received_at_ms),
            },
            None => ClockReading {
                clock_ms: now_ms,
                ..ClockReading::default()
            },
        }
    }

    /// Takes in a reading `from` a peer, received at `now_ms`.
    pub(crate) fn observe(&mut self, from: u64, reading: &ClockReading, now_ms: u64) {
        self.echoes.insert(
            from,
            Echo {
                their_clock_ms: reading.clock_ms,
                received_at_ms: now_ms,
            },
        );
        if let Some(sample) = sample_of(reading, now_ms) {
            self.samples.insert(from, sample);
        }
    }

    /// The latest sample of `peer`'s clock, if any.
    pub fn sample(&self, peer: u64) -> Option<ClockSample> {
        self.samples.get(&peer).copied()
    }

    /// Forgets a member removed from the group.
    pub(crate) fn forget(&mut self, peer: u64) {
        self.echoes.remove(&peer);
        self.samples.remove(&peer);
    }

    /// Whether member `self_id`, leading `voters`, may stamp time at
    /// `now_ms`: samples older than `fresh_ms` (or from this member's
    /// future: its clock went back) count for nothing.
    pub(crate) fn verdict(
        &self,
        self_id: u64,
        voters: &[u64],
        now_ms: u64,
        max_offset_ms: u64,
        fresh_ms: u64,
    ) -> ClockVerdict {
        let quorum = voters.len() / 2 + 1;
        let mut near = usize::from(voters.contains(&self_id));
        let mut far = 0usize;
        for voter in voters.iter().filter(|v| **v != self_id) {
            let Some(sample) = self.samples.get(voter) else {
                continue;
            };
            if sample.at_ms > now_ms || now_ms - sample.at_ms > fresh_ms {
                continue;
            }
            let least_ms = sample
                .offset_ms
                .unsigned_abs()
                .saturating_sub(sample.uncertainty_ms);
            if least_ms > max_offset_ms {
                far += 1;
            } else {
                near += 1;
            }
        }
        if far >= quorum {
            return ClockVerdict::Far;
        }
        if near >= quorum {
            return ClockVerdict::Confirmed;
        }
        ClockVerdict::Unconfirmed
    }
}

/// The sample a reading gives, if it echoes one of this member's own
/// readings (sent at `echo_ms` by this member's clock) over a usable
/// round trip.
fn sample_of(reading: &ClockReading, now_ms: u64) -> Option<ClockSample> {
    if reading.echo_ms == 0 || reading.echo_ms > now_ms {
        return None;
    }
    let elapsed_ms = now_ms - reading.echo_ms;
    // Held longer than the whole round trip: a clock jumped on one side.
    let round_trip_ms = elapsed_ms.checked_sub(reading.held_ms)?;
    if round_trip_ms > ROUND_TRIP_MS_MAX {
        return None;
    }
    // By this member's clock, the peer sent at about the echo's time,
    // plus half the round trip, plus what it held.
    let sent_at_ms = reading.echo_ms + reading.held_ms + round_trip_ms / 2;
    let offset = i128::from(reading.clock_ms) - i128::from(sent_at_ms);
    // Within i64 whatever a peer sends: beyond it, far is far.
    let offset_ms = offset.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64;
    Some(ClockSample {
        offset_ms,
        uncertainty_ms: round_trip_ms / 2 + 1,
        at_ms: now_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY_MS: u64 = 86_400_000;
    const BASE: u64 = 1_700_000_000_000;

    /// A round trip between member 1 (clock `mine`) and member 2 (clock
    /// `theirs` = mine + offset), 10 ms each way, 5 ms held.
    fn exchange(clocks: &mut PeerClocks, at: u64, offset: i64) {
        let theirs = |mine: u64| (mine as i64 + offset) as u64;
        let mut peer = PeerClocks::default();
        let out = clocks.reading_for(2, at);
        peer.observe(1, &out, theirs(at + 10));
        let back = peer.reading_for(1, theirs(at + 15));
        clocks.observe(2, &back, at + 25);
    }

    #[test]
    fn a_round_trip_measures_the_offset_within_its_uncertainty() {
        for offset in [0i64, 300, -300, DAY_MS as i64, -(DAY_MS as i64)] {
            let mut clocks = PeerClocks::default();
            exchange(&mut clocks, BASE, 0);
            exchange(&mut clocks, BASE + 100, offset);
            let sample = clocks.sample(2).unwrap();
            assert!(
                (sample.offset_ms - offset).unsigned_abs() <= sample.uncertainty_ms,
                "{offset}: {sample:?}"
            );
            assert!(sample.uncertainty_ms <= 11, "{sample:?}");
        }
    }

    #[test]
    fn a_leader_far_from_a_majority_is_far_and_one_near_is_confirmed() {
        let voters = [1, 2, 3];
        let mut clocks = PeerClocks::default();
        let now = BASE + 1_000;
        // No samples yet: a leader of three cannot stamp.
        assert_eq!(
            clocks.verdict(1, &voters, now, 500, 2_000),
            ClockVerdict::Unconfirmed
        );
        // Alone: always confirmed.
        assert_eq!(
            clocks.verdict(1, &[1], now, 500, 2_000),
            ClockVerdict::Confirmed
        );
        exchange(&mut clocks, now, 100);
        assert_eq!(
            clocks.verdict(1, &voters, now + 25, 500, 2_000),
            ClockVerdict::Confirmed
        );
        // This member a day fast: both others a day behind it.
        let mut fast = PeerClocks::default();
        for (peer, at) in [(2u64, now), (3, now + 1)] {
            let mut other = PeerClocks::default();
            let out = fast.reading_for(peer, at);
            other.observe(1, &out, at - DAY_MS);
            let back = other.reading_for(1, at - DAY_MS + 1);
            fast.observe(peer, &back, at + 2);
        }
        assert_eq!(
            fast.verdict(1, &voters, now + 5, 500, 2_000),
            ClockVerdict::Far
        );
    }

    #[test]
    fn a_clock_that_jumps_makes_every_sample_stale() {
        let voters = [1, 2, 3];
        let mut clocks = PeerClocks::default();
        let now = BASE;
        exchange(&mut clocks, now, 0);
        assert_eq!(
            clocks.verdict(1, &voters, now + 25, 500, 2_000),
            ClockVerdict::Confirmed
        );
        for jumped in [now + DAY_MS, now - DAY_MS, now + 10_000] {
            assert_eq!(
                clocks.verdict(1, &voters, jumped, 500, 2_000),
                ClockVerdict::Unconfirmed,
                "{jumped}"
            );
        }
    }

    #[test]
    fn readings_that_make_no_sense_give_no_sample() {
        let mut clocks = PeerClocks::default();
        let now = BASE;
        let nonsense = [
            ClockReading {
                clock_ms: u64::MAX,
                echo_ms: now + 1,
                held_ms: 0,
            },
            ClockReading {
                clock_ms: now,
                echo_ms: now - 10,
                held_ms: 50,
            },
            ClockReading {
                clock_ms: now,
                echo_ms: 1,
                held_ms: 0,
            },
            ClockReading {
                clock_ms: 0,
                echo_ms: 0,
                held_ms: u64::MAX,
            },
        ];
        for reading in nonsense {
            clocks.observe(2, &reading, now);
            assert_eq!(clocks.sample(2), None, "{reading:?}");
        }
        // A huge reading over a real round trip is a (far) sample, not a
        // wrap-around.
        let huge = ClockReading {
            clock_ms: u64::MAX,
            echo_ms: now - 10,
            held_ms: 0,
        };
        clocks.observe(2, &huge, now);
        let sample = clocks.sample(2).unwrap();
        assert!(sample.offset_ms > 0, "{sample:?}");
    }
}
