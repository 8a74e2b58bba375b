//! The verification after a run: every counter the run touched read back,
//! and checked against what the clients were told (the [`Ledger`]) and
//! against overselling.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::conn::Conn;
use super::counters::{read_levels_anywhere, Key};
use super::ledger::{Account, Ledger};
use super::LoadConfig;
use crate::proto::v1 as pb;

/// Most mismatches, and most oversold counters, a verification lists.
const LISTED_MAX: usize = 50;

/// What the verification checked, and what it found wrong.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Verification {
    pub counters_checked: usize,
    pub reserved_checked: usize,
    pub on_hand_checked: usize,
    pub oversell_checked: usize,
    pub uncertain: usize,
    pub resolved_by_retry: usize,
    pub mismatches: Vec<String>,
    pub oversold: Vec<String>,
    /// Why the counters could not be read back at all (no server given
    /// answered); nothing was checked then.
    pub unreadable: Option<String>,
}

impl Verification {
    /// Read back, nothing disagreeing, and something proven: a run whose
    /// every counter was left uncertain checked nothing, and does not pass.
    pub fn passed(&self) -> bool {
        self.unreadable.is_none()
            && !self.inconclusive()
            && self.mismatches.is_empty()
            && self.oversold.is_empty()
    }

    /// Every counter read back was touched by a call whose outcome stayed
    /// unknown, so none could be checked.
    pub fn inconclusive(&self) -> bool {
        self.counters_checked > 0 && self.uncertain == self.counters_checked
    }

    /// Checks the holds on `key`: the server's reserved units are the
    /// clients' open holds, plus at most the `base_reserved` units held
    /// before the run (those may expire during it).
    fn check_reserved(
        &mut self,
        key: &Key,
        level: &pb::NodeAvailability,
        held: i64,
        base_reserved: i64,
    ) {
        self.reserved_checked += 1;
        let ok = if base_reserved == 0 {
            level.reserved == held
        } else {
            level.reserved >= held && level.reserved <= held + base_reserved
        };
        if !ok {
            self.mismatches.push(format!(
                "{}@{}: server reserved {}, clients hold {} (plus {} held before the run)",
                key.0, key.1, level.reserved, held, base_reserved
            ));
        }
    }

    /// Checks `key`'s on_hand: where it started, plus what the clients
    /// received, minus what they sold and committed.
    fn check_on_hand(
        &mut self,
        key: &Key,
        level: &pb::NodeAvailability,
        a: &Account,
        base_on_hand: i64,
    ) {
        self.on_hand_checked += 1;
        let expected = base_on_hand + a.received - a.sold - a.committed;
        if level.on_hand != expected {
            self.mismatches.push(format!(
                "{}@{}: server on_hand {}, clients expect {} (base {} + received {} - sold {} - committed {})",
                key.0, key.1, level.on_hand, expected, base_on_hand, a.received, a.sold, a.committed
            ));
        }
    }

    /// Checks that `key` was not oversold: without sales (which may go
    /// short on purpose), holds plus committed stock never exceed what was
    /// there. Holds left by earlier runs may exceed a stock the seed set
    /// anew; this run's reserves can never add to that excess (a reserve
    /// needs its units available, a commit takes as much from on_hand as
    /// from reserved), so it may only shrink.
    fn check_oversell(
        &mut self,
        key: &Key,
        level: &pb::NodeAvailability,
        a: &Account,
        (base_on_hand, base_reserved): (i64, i64),
    ) {
        self.oversell_checked += 1;
        let stock = base_on_hand + a.received;
        let excess_before = (base_reserved - base_on_hand).max(0);
        if level.reserved + a.committed > stock + excess_before {
            self.oversold.push(format!(
                "{}@{}: {} held + {} committed > {} stock (available {})",
                key.0, key.1, level.reserved, a.committed, stock, level.available
            ));
        }
    }
}

/// Reads back every counter of `keys` and checks it against the ledger:
/// `base` is each counter's (on_hand, reserved) before the run, in the
/// order of `keys`; `elapsed` is how long holds have lived by now.
pub(super) async fn verify(
    config: &LoadConfig,
    conn: &Conn,
    keys: &[Key],
    base: &[(i64, i64)],
    ledger: &Ledger,
    resolved_by_retry: usize,
    elapsed: Duration,
) -> Verification {
    let mut result = Verification {
        resolved_by_retry,
        ..Default::default()
    };
    let untracked = ledger.untracked.load(Ordering::Relaxed);
    if untracked > 0 {
        result.mismatches.push(format!(
            "{untracked} calls named counters the harness did not seed or read (a harness bug)"
        ));
    }
    // All three are by the key's position: built from `keys` in one order.
    assert!(
        base.len() == keys.len() && ledger.accounts.len() == keys.len(),
        "the verification's counters are out of step"
    );
    let levels = match read_levels_anywhere(config, conn, keys).await {
        Ok(levels) => levels,
        Err(reason) => {
            result.unreadable = Some(reason);
            return result;
        }
    };
    // Holds could have expired if the run outlived their TTL.
    let holds_checkable = elapsed.as_millis() < u128::from(config.ttl_ms);
    for ((key, cell), start) in keys.iter().zip(&ledger.accounts).zip(base) {
        let a = cell.read();
        let Some(level) = levels.get(key) else {
            continue;
        };
        result.counters_checked += 1;
        if a.uncertain {
            result.uncertain += 1;
            continue;
        }
        let (base_on_hand, base_reserved) = *start;
        if holds_checkable {
            result.check_reserved(key, level, a.held, base_reserved);
        }
        if a.absolute {
            continue;
        }
        result.check_on_hand(key, level, &a, base_on_hand);
        if a.sold == 0 {
            result.check_oversell(key, level, &a, *start);
        }
    }
    result.mismatches.truncate(LISTED_MAX);
    result.oversold.truncate(LISTED_MAX);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_verification_that_checked_nothing_does_not_pass() {
        let all_uncertain = Verification {
            counters_checked: 20,
            uncertain: 20,
            ..Default::default()
        };
        assert!(all_uncertain.inconclusive());
        assert!(!all_uncertain.passed());
        let some_checked = Verification {
            counters_checked: 20,
            uncertain: 19,
            reserved_checked: 1,
            on_hand_checked: 1,
            ..Default::default()
        };
        assert!(!some_checked.inconclusive());
        assert!(some_checked.passed());
        let mismatch = Verification {
            mismatches: vec!["x".into()],
            ..some_checked
        };
        assert!(!mismatch.passed());
    }
}
