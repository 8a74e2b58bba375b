//! What a client command's answer looks like: one JSON object with
//! `--json`, short lines of text without.
//!
//! Every answer implements [`Render`] and goes through [`print`], so the
//! choice between JSON and text is made once. Scripts and tests parse both
//! forms: a change of wording or spacing here is a change of interface.

use serde_json::{json, Value};

use stockraft::proto::v1 as pb;
use tonic_health::pb::health_check_response::ServingStatus;

/// An answer that prints as JSON or as text.
pub(super) trait Render {
    /// The one JSON object `--json` prints.
    fn json(&self) -> Value;
    /// The lines printed without `--json` (none is a valid answer).
    fn text(&self) -> Vec<String>;
}

/// Prints `answer` to stdout, as JSON when `json` is set.
pub(super) fn print(answer: &dyn Render, json: bool) {
    if json {
        println!("{}", answer.json());
        return;
    }
    for line in answer.text() {
        println!("{line}");
    }
}

/// `reserve`: the outcome, its deadline, and what was short.
pub(super) struct Reserved {
    pub id: String,
    pub answer: pb::ReserveResponse,
}

impl Render for Reserved {
    fn json(&self) -> Value {
        let shortages: Vec<Value> = self
            .answer
            .shortages
            .iter()
            .map(|s| json!({"sku": s.sku, "node": s.node, "requested": s.requested, "available": s.available}))
            .collect();
        json!({"reservation_id": self.id, "outcome": outcome_name(self.answer.outcome), "expires_at_ms": self.answer.expires_at_ms, "shortages": shortages})
    }

    fn text(&self) -> Vec<String> {
        let (id, r) = (&self.id, &self.answer);
        let mut lines = vec![if r.expires_at_ms == 0 {
            format!("{id}: {}", outcome_name(r.outcome))
        } else {
            format!(
                "{id}: {} (expires {})",
                outcome_name(r.outcome),
                format_ms(r.expires_at_ms)
            )
        }];
        for s in &r.shortages {
            lines.push(format!(
                "  short: {}@{} requested {} available {}",
                s.sku, s.node, s.requested, s.available
            ));
        }
        lines
    }
}

/// `commit` and `release`: the outcome alone.
pub(super) struct Finished {
    pub id: String,
    pub outcome: i32,
}

impl Render for Finished {
    fn json(&self) -> Value {
        json!({"reservation_id": self.id, "outcome": outcome_name(self.outcome)})
    }

    fn text(&self) -> Vec<String> {
        vec![format!("{}: {}", self.id, outcome_name(self.outcome))]
    }
}

/// `extend`: the outcome and the new deadline.
pub(super) struct Extended {
    pub id: String,
    pub answer: pb::ExtendResponse,
}

impl Render for Extended {
    fn json(&self) -> Value {
        json!({"reservation_id": self.id, "outcome": outcome_name(self.answer.outcome), "expires_at_ms": self.answer.expires_at_ms})
    }

    fn text(&self) -> Vec<String> {
        vec![format!(
            "{}: {} (expires {})",
            self.id,
            outcome_name(self.answer.outcome),
            format_ms(self.answer.expires_at_ms)
        )]
    }
}

/// `get`: a reservation's state, times and lines.
pub(super) struct Reservation {
    pub id: String,
    pub answer: pb::GetReservationResponse,
}

impl Reservation {
    fn state(&self) -> &'static str {
        pb::ReservationState::try_from(self.answer.state)
            .map(|s| s.as_str_name().trim_start_matches("RESERVATION_STATE_"))
            .unwrap_or("UNKNOWN")
    }
}

impl Render for Reservation {
    fn json(&self) -> Value {
        let (id, r) = (&self.id, &self.answer);
        let lines: Vec<Value> = r
            .lines
            .iter()
            .map(|l| json!({"sku": l.sku, "node": l.node, "qty": l.qty}))
            .collect();
        json!({"reservation_id": id, "outcome": outcome_name(r.outcome), "state": self.state(), "lines": lines,
            "created_at_ms": r.created_at_ms, "expires_at_ms": r.expires_at_ms, "finished_at_ms": r.finished_at_ms})
    }

    fn text(&self) -> Vec<String> {
        let (id, r) = (&self.id, &self.answer);
        if r.outcome == pb::Outcome::NotFound as i32 {
            return vec![format!("{id}: NOT_FOUND")];
        }
        let mut lines = vec![format!(
            "{id}: {} (created {}, expires {}, finished {})",
            self.state(),
            format_ms(r.created_at_ms),
            format_ms(r.expires_at_ms),
            format_ms(r.finished_at_ms)
        )];
        for l in &r.lines {
            lines.push(format!("  {}@{}: {}", l.sku, l.node, l.qty));
        }
        lines
    }
}

/// `sell`, `adjust`, `set` and `safety`: a counter's level after the change.
pub(super) struct CounterChange {
    /// The transaction id, `-` for a change that has none.
    pub txn_id: String,
    pub sku: String,
    pub node: String,
    pub outcome: i32,
    pub level: Option<pb::StockLevel>,
    /// The node is short: available is below 0 after the change.
    pub short: bool,
}

impl Render for CounterChange {
    fn json(&self) -> Value {
        json!({"txn_id": self.txn_id, "sku": self.sku, "node": self.node, "outcome": outcome_name(self.outcome),
            "level": level_json(&self.level), "short": self.short})
    }

    fn text(&self) -> Vec<String> {
        vec![format!(
            "{}@{}: {} {}",
            self.sku,
            self.node,
            outcome_name(self.outcome),
            level_text(&self.level, self.short)
        )]
    }
}

/// `avail`: each SKU's total and its nodes' counters.
pub(super) struct Availability(pub pb::GetAvailabilityResponse);

impl Render for Availability {
    fn json(&self) -> Value {
        let skus: Vec<Value> = self
            .0
            .skus
            .iter()
            .map(|s| {
                let nodes: Vec<Value> = s
                    .nodes
                    .iter()
                    .map(|n| {
                        json!({"node": n.node, "on_hand": n.on_hand, "reserved": n.reserved,
                        "safety_stock": n.safety_stock, "available": n.available})
                    })
                    .collect();
                json!({"sku": s.sku, "total_available": s.total_available, "nodes": nodes})
            })
            .collect();
        json!({"skus": skus, "applied_index": self.0.applied_index})
    }

    fn text(&self) -> Vec<String> {
        let mut lines = Vec::new();
        for s in &self.0.skus {
            lines.push(format!("{}: total_available={}", s.sku, s.total_available));
            for n in &s.nodes {
                lines.push(format!(
                    "  {:<20} on_hand={:<6} reserved={:<6} safety_stock={:<6} available={}",
                    n.node, n.on_hand, n.reserved, n.safety_stock, n.available
                ));
            }
        }
        lines
    }
}

/// `health`: the gRPC health service's status of the server.
pub(super) struct Health {
    pub status: i32,
}

impl Health {
    pub fn name(&self) -> &'static str {
        ServingStatus::try_from(self.status)
            .map(|s| s.as_str_name())
            .unwrap_or("UNKNOWN")
    }

    pub fn serving(&self) -> bool {
        self.status == ServingStatus::Serving as i32
    }
}

impl Render for Health {
    fn json(&self) -> Value {
        json!({"status": self.name()})
    }

    fn text(&self) -> Vec<String> {
        vec![self.name().to_string()]
    }
}

/// What one member said when asked for its own view, or why it could not.
pub(super) type MemberView = Result<pb::ClusterStatusResponse, String>;

/// `cluster status`: the leader as the server called sees it, then a row
/// per member from that member's own answer.
pub(super) struct ClusterStatus {
    pub first: pb::ClusterStatusResponse,
    pub rows: Vec<(pb::Member, MemberView)>,
    /// Whether the state digests were asked for (a column of their own).
    pub digest: bool,
}

impl Render for ClusterStatus {
    fn json(&self) -> Value {
        let nodes: Vec<Value> = self
            .rows
            .iter()
            .map(|(m, row)| match row {
                Ok(s) => json!({"node_id": m.node_id, "address": m.address, "member_role": m.role,
                    "reachable": true, "role": s.role, "leader_id": s.leader_id, "term": s.term,
                    "commit_index": s.commit_index, "applied_index": s.applied_index,
                    "last_index": s.last_index, "snapshot_index": s.snapshot_index, "ready": s.ready,
                    "state_digest": s.state_digest, "open_reservations": s.open_reservations,
                    "rebuilding": s.rebuilding}),
                Err(e) => json!({"node_id": m.node_id, "address": m.address, "member_role": m.role,
                    "reachable": false, "error": e}),
            })
            .collect();
        json!({"leader_id": self.first.leader_id, "term": self.first.term, "nodes": nodes})
    }

    fn text(&self) -> Vec<String> {
        let mut lines = vec![
            format!(
                "leader: node {}  term: {}",
                self.first.leader_id, self.first.term
            ),
            format!(
                "{:<6} {:<22} {:<8} {:<10} {:>6} {:>10} {:>10} {:>10} {}",
                "node",
                "address",
                "member",
                "role",
                "term",
                "commit",
                "applied",
                "snapshot",
                if self.digest { "digest" } else { "" }
            ),
        ];
        for (m, row) in &self.rows {
            lines.push(match row {
                Ok(s) => format!(
                    "{:<6} {:<22} {:<8} {:<10} {:>6} {:>10} {:>10} {:>10} {}",
                    m.node_id,
                    m.address,
                    m.role,
                    s.role,
                    s.term,
                    s.commit_index,
                    s.applied_index,
                    s.snapshot_index,
                    match (self.digest, s.rebuilding) {
                        (true, true) => format!("{:016x} rebuilding", s.state_digest),
                        (true, false) => format!("{:016x}", s.state_digest),
                        (false, true) => "rebuilding".to_string(),
                        (false, false) => String::new(),
                    }
                ),
                Err(e) => format!(
                    "{:<6} {:<22} {:<8} unreachable: {e}",
                    m.node_id, m.address, m.role
                ),
            });
        }
        lines
    }
}

/// `cluster add` and `cluster remove`: the members after the change.
pub(super) struct Membership(pub pb::MembershipResponse);

impl Render for Membership {
    fn json(&self) -> Value {
        let r = &self.0;
        let members: Vec<Value> = r
            .members
            .iter()
            .map(|m| json!({"node_id": m.node_id, "address": m.address, "role": m.role}))
            .collect();
        let mut out = json!({"members": members, "index": r.index});
        if r.leadership_moved_to != 0 {
            out["leadership_moved_to"] = json!(r.leadership_moved_to);
        }
        out
    }

    fn text(&self) -> Vec<String> {
        let r = &self.0;
        let mut lines = Vec::new();
        if r.leadership_moved_to != 0 {
            lines.push(format!(
                "the node removed was leading: it handed leadership to node {} first, which removed it",
                r.leadership_moved_to
            ));
        }
        for m in &r.members {
            lines.push(format!(
                "node {:<4} {:<24} {}",
                m.node_id, m.address, m.role
            ));
        }
        lines
    }
}

/// `cluster transfer-leader`: the leader after the transfer.
pub(super) struct Leader(pub pb::TransferLeaderResponse);

impl Render for Leader {
    fn json(&self) -> Value {
        json!({"leader_id": self.0.leader_id, "term": self.0.term})
    }

    fn text(&self) -> Vec<String> {
        vec![format!(
            "leader: node {} (term {})",
            self.0.leader_id, self.0.term
        )]
    }
}

fn outcome_name(outcome: i32) -> &'static str {
    pb::Outcome::try_from(outcome)
        .map(|o| o.as_str_name())
        .unwrap_or("UNKNOWN_OUTCOME")
}

fn level_json(level: &Option<pb::StockLevel>) -> Value {
    match level {
        Some(l) => json!({
            "on_hand": l.on_hand, "reserved": l.reserved,
            "safety_stock": l.safety_stock, "available": l.available,
        }),
        None => Value::Null,
    }
}

fn level_text(level: &Option<pb::StockLevel>, short: bool) -> String {
    match level {
        Some(l) => format!(
            "on_hand={} reserved={} safety_stock={} available={}{}",
            l.on_hand,
            l.reserved,
            l.safety_stock,
            l.available,
            if short {
                "  (SHORT: more promised than held)"
            } else {
                ""
            }
        ),
        None => String::new(),
    }
}

/// A time in ms since the epoch as RFC 3339, `-` for none (0).
fn format_ms(ms: u64) -> String {
    if ms == 0 {
        return "-".into();
    }
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_millis(time).to_string()
}
