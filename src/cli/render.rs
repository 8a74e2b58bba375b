//! What a client command's answer looks like: with `--json`, the response
//! in the proto3 JSON mapping (see `json.rs`); without, short lines of
//! text. Each answer also says how the process exits (see `exit.rs`).
//!
//! Every command builds an [`Answer`] and goes through [`print`], so the
//! choice between JSON and text is made once. Scripts parse both forms: a
//! change of wording or spacing in the text is a change of interface.

use serde_json::{json, Value};

use stockraft::proto::v1 as pb;
use tonic_health::pb::health_check_response::ServingStatus;

use super::exit::Exit;
use super::json;

/// An answer ready to print, and the exit status it implies.
pub(super) struct Answer {
    json: Value,
    text: Vec<String>,
    exit: Exit,
}

impl Answer {
    /// The answer of a call: `response` in JSON, `text` without.
    pub fn of<M: prost::Message + prost::Name>(response: &M, text: Vec<String>) -> Answer {
        Answer {
            json: json::message(response),
            text,
            exit: Exit::Ok,
        }
    }

    /// An answer whose JSON is assembled from several responses.
    pub fn assembled(json: Value, text: Vec<String>) -> Answer {
        Answer {
            json,
            text,
            exit: Exit::Ok,
        }
    }

    pub fn exiting(mut self, exit: Exit) -> Answer {
        self.exit = exit;
        self
    }

    pub fn exit(&self) -> Exit {
        self.exit
    }
}

/// Prints `answer` to stdout, as JSON when `json` is set.
pub(super) fn print(answer: &Answer, json: bool) {
    if json {
        println!("{}", answer.json);
        return;
    }
    for line in &answer.text {
        println!("{line}");
    }
}

/// `reserve`: the outcome, its deadline, and what was short.
pub(super) fn reserved(id: &str, r: &pb::ReserveResponse) -> Answer {
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
    Answer::of(r, lines).exiting(Exit::of_outcome(r.outcome, pb::Outcome::Reserved, &[]))
}

/// `commit`, `release`: the outcome alone.
pub(super) fn finished<M: prost::Message + prost::Name>(
    id: &str,
    response: &M,
    outcome: i32,
    exit: Exit,
) -> Answer {
    Answer::of(response, vec![format!("{id}: {}", outcome_name(outcome))]).exiting(exit)
}

/// `extend`: the outcome and the new deadline.
pub(super) fn extended(id: &str, r: &pb::ExtendResponse) -> Answer {
    let line = format!(
        "{id}: {} (expires {})",
        outcome_name(r.outcome),
        format_ms(r.expires_at_ms)
    );
    Answer::of(r, vec![line]).exiting(Exit::of_outcome(r.outcome, pb::Outcome::Reserved, &[]))
}

/// `get`: a reservation's state, times and lines.
pub(super) fn reservation(id: &str, r: &pb::GetReservationResponse) -> Answer {
    if r.outcome == pb::Outcome::NotFound as i32 {
        return Answer::of(r, vec![format!("{id}: NOT_FOUND")]).exiting(Exit::NotFound);
    }
    let state = pb::ReservationState::try_from(r.state)
        .map(|s| s.as_str_name().trim_start_matches("RESERVATION_STATE_"))
        .unwrap_or("UNKNOWN");
    let mut lines = vec![format!(
        "{id}: {state} (created {}, expires {}, finished {})",
        format_ms(r.created_at_ms),
        format_ms(r.expires_at_ms),
        format_ms(r.finished_at_ms)
    )];
    for l in &r.lines {
        lines.push(format!("  {}@{}: {}", l.sku, l.node, l.qty));
    }
    Answer::of(r, lines)
}

/// The answer of a stock change: its outcome and the counter's level.
pub(super) trait StockChange: prost::Message + prost::Name {
    fn outcome(&self) -> i32;
    fn level(&self) -> &Option<pb::StockLevel>;
    fn short(&self) -> bool;
}

macro_rules! stock_change {
    ($($response:ty),*) => {$(
        impl StockChange for $response {
            fn outcome(&self) -> i32 {
                self.outcome
            }
            fn level(&self) -> &Option<pb::StockLevel> {
                &self.level
            }
            fn short(&self) -> bool {
                self.short
            }
        }
    )*};
}

stock_change!(
    pb::SellResponse,
    pb::AdjustResponse,
    pb::SetOnHandResponse,
    pb::SetSafetyStockResponse
);

/// `sell`, `adjust`, `set` and `safety`: the level of `sku`@`node` after
/// the change, and the txn id that makes retrying it safe.
pub(super) fn counter_change(
    response: &impl StockChange,
    txn_id: Option<&str>,
    sku: &str,
    node: &str,
) -> Answer {
    let txn = match txn_id {
        Some(id) => format!("  (txn {id})"),
        None => String::new(),
    };
    let line = format!(
        "{sku}@{node}: {} {}{txn}",
        outcome_name(response.outcome()),
        level_text(response.level(), response.short())
    );
    Answer::of(response, vec![line])
}

/// `avail`: each SKU's total and its nodes' counters.
pub(super) fn availability(r: &pb::GetAvailabilityResponse) -> Answer {
    let mut lines = Vec::new();
    for s in &r.skus {
        lines.push(format!("{}: total_available={}", s.sku, s.total_available));
        for n in &s.nodes {
            lines.push(format!(
                "  {:<20} on_hand={:<6} reserved={:<6} safety_stock={:<6} available={}",
                n.node, n.on_hand, n.reserved, n.safety_stock, n.available
            ));
        }
    }
    Answer::of(r, lines)
}

/// `health`: the gRPC health service's status of the server; exits 5
/// when it is not SERVING.
pub(super) fn health(r: &tonic_health::pb::HealthCheckResponse) -> Answer {
    let name = ServingStatus::try_from(r.status)
        .map(|s| s.as_str_name())
        .unwrap_or("UNKNOWN");
    let json = json::to_json(r, "grpc.health.v1.HealthCheckResponse");
    let exit = if r.status == ServingStatus::Serving as i32 {
        Exit::Ok
    } else {
        Exit::Unavailable
    };
    Answer::assembled(json, vec![name.to_string()]).exiting(exit)
}

/// What one member said when asked for its own view, or why it could not.
pub(super) type MemberView = Result<pb::ClusterStatusResponse, String>;

/// `cluster status`: the answer of the member called, then each member's
/// own answer (or why it could not be reached).
pub(super) fn cluster_status(
    first: &pb::ClusterStatusResponse,
    rows: &[(pb::Member, MemberView)],
    digest: bool,
) -> Answer {
    let members: Vec<Value> = rows
        .iter()
        .map(|(m, row)| match row {
            Ok(s) => json!({"member": json::message(m), "status": json::message(s)}),
            Err(e) => json!({"member": json::message(m), "error": e}),
        })
        .collect();
    let json = json!({"status": json::message(first), "members": members});
    Answer::assembled(json, cluster_status_text(first, rows, digest))
}

fn cluster_status_text(
    first: &pb::ClusterStatusResponse,
    rows: &[(pb::Member, MemberView)],
    digest: bool,
) -> Vec<String> {
    let mut lines = vec![
        format!("leader: member {}  term: {}", first.leader_id, first.term),
        format!(
            "{:<6} {:<22} {:<8} {:<13} {:>6} {:>10} {:>10} {:>10} {}",
            "member",
            "address",
            "votes",
            "role",
            "term",
            "commit",
            "applied",
            "snapshot",
            if digest { "digest" } else { "" }
        ),
    ];
    for (m, row) in rows {
        let role = member_role(m.role);
        lines.push(match row {
            Ok(s) => format!(
                "{:<6} {:<22} {:<8} {:<13} {:>6} {:>10} {:>10} {:>10} {}",
                m.member_id,
                m.address,
                role,
                raft_role(s.role),
                s.term,
                s.commit_index,
                s.applied_index,
                s.snapshot_index,
                match (digest, s.rebuilding) {
                    (true, true) => format!("{:016x} rebuilding", s.state_digest),
                    (true, false) => format!("{:016x}", s.state_digest),
                    (false, true) => "rebuilding".to_string(),
                    (false, false) => String::new(),
                }
            ),
            Err(e) => format!(
                "{:<6} {:<22} {:<8} unreachable: {e}",
                m.member_id, m.address, role
            ),
        });
    }
    lines
}

/// `cluster add` and `cluster remove`: the members after the change.
pub(super) fn membership<M: prost::Message + prost::Name>(
    response: &M,
    members: &[pb::Member],
    leadership_moved_to: u64,
) -> Answer {
    let mut lines = Vec::new();
    if leadership_moved_to != 0 {
        lines.push(format!(
            "the member removed was leading: it handed leadership to member {leadership_moved_to} first, which removed it"
        ));
    }
    for m in members {
        lines.push(format!(
            "member {:<4} {:<24} {}",
            m.member_id,
            m.address,
            member_role(m.role)
        ));
    }
    Answer::of(response, lines)
}

/// `cluster transfer-leader`: the leader after the transfer.
pub(super) fn leader(r: &pb::TransferLeaderResponse) -> Answer {
    let line = format!("leader: member {} (term {})", r.leader_id, r.term);
    Answer::of(r, vec![line])
}

fn member_role(role: i32) -> &'static str {
    pb::MemberRole::try_from(role)
        .map(|r| r.as_str_name().trim_start_matches("MEMBER_ROLE_"))
        .unwrap_or("UNKNOWN")
}

fn raft_role(role: i32) -> &'static str {
    pb::RaftRole::try_from(role)
        .map(|r| r.as_str_name().trim_start_matches("RAFT_ROLE_"))
        .unwrap_or("UNKNOWN")
}

/// An outcome as text prints it: without the enum's prefix.
fn outcome_name(outcome: i32) -> &'static str {
    pb::Outcome::try_from(outcome)
        .map(|o| o.short_name())
        .unwrap_or("UNKNOWN_OUTCOME")
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
