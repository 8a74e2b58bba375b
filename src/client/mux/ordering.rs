//! Operations on one reservation, one at a time, in the order called.
//!
//! The server runs the operations of a stream concurrently and answers them
//! in completion order, so a commit sent right behind its reserve could be
//! applied first (and find nothing). A unary caller never meets this: it
//! awaits the reserve before it commits. The multiplexer keeps that
//! promise for callers sharing streams: an operation on reservation X is
//! sent only once the one before it on X is settled (answered, or its
//! stream gone), even when that one's caller gave up waiting.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::OwnedMutexGuard;

/// The turn of one operation on a reservation: held until it is settled.
pub struct Turn {
    id: String,
    guard: Option<OwnedMutexGuard<()>>,
    gates: Arc<Gates>,
}

/// A gate per reservation id with an operation in flight or waiting.
#[derive(Default)]
pub struct Gates {
    gates: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Gates {
    /// Waits for the turn of an operation on reservation `id`. Turns are
    /// given in the order asked (tokio's mutex is fair).
    pub async fn turn(self: &Arc<Gates>, id: &str) -> Turn {
        let gate = {
            let mut gates = self.gates.lock().unwrap_or_else(|e| e.into_inner());
            gates.entry(id.to_string()).or_default().clone()
        };
        let guard = gate.lock_owned().await;
        Turn {
            id: id.to_string(),
            guard: Some(guard),
            gates: self.clone(),
        }
    }

    /// Whether no reservation has an operation in flight or waiting.
    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.gates
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
    }
}

impl Drop for Turn {
    /// Gives the turn to the next operation on the reservation, and forgets
    /// the gate when none waits (so the map holds only live ids).
    fn drop(&mut self) {
        let mut gates = self.gates.gates.lock().unwrap_or_else(|e| e.into_inner());
        drop(self.guard.take());
        let idle = gates
            .get(&self.id)
            .is_some_and(|gate| Arc::strong_count(gate) == 1);
        if idle {
            gates.remove(&self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn turns_on_one_id_wait_and_other_ids_do_not() {
        let gates = Arc::new(Gates::default());
        let first = gates.turn("r1").await;
        let other = tokio::time::timeout(Duration::from_millis(50), gates.turn("r2")).await;
        assert!(other.is_ok(), "another id waits for nothing");
        let waiting = tokio::spawn({
            let gates = gates.clone();
            async move { gates.turn("r1").await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished(), "the second turn on r1 waits");
        drop(first);
        let second = tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .expect("the turn passes on")
            .unwrap();
        drop(other);
        drop(second);
        assert!(gates.is_empty(), "idle gates are forgotten");
    }
}
