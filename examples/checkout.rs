//! A checkout against stockraft with the Rust client: stock arrives at a
//! store, a cart holds two units at checkout, the payment goes through and
//! the hold is consumed. Each call is retried safely with the same id.
//!
//! Run a server (`make run`), then:
//!
//!   cargo run --example checkout -- [ADDR]        (default 127.0.0.1:50051)
//!
//! With a secured server, set `STOCKRAFT_TOKEN` to a token of the `write`
//! role (the stock receipt needs `admin`; see the README's Security).
//!
//! Why retries are safe: every mutation carries an id the client chooses
//! (the reservation id, a transaction id). The server remembers the outcome
//! of each id for the retention window (`--id-retention`, 24 h), so a call
//! sent again after a timeout or a leader change returns the first outcome
//! instead of holding or consuming the stock twice. A retry must send the
//! same id with the same payload; a different payload under a used id is
//! refused with ALREADY_EXISTS.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use stockraft::client::{Authed, Bearer};
use stockraft::proto::v1::inventory_client::InventoryClient;
use stockraft::proto::v1::{
    AdjustReason, AdjustRequest, CommitRequest, Consistency, GetAvailabilityRequest, Line, Outcome,
    ReserveRequest,
};
use tonic::{Code, Status};

/// How many times a call is sent before giving up, and the first pause
/// between two tries (doubled each time: 50, 100, 200, 400 ms).
const TRIES_MAX: u32 = 5;
const BACKOFF_FIRST_MS: u64 = 50;

/// What the checkout saw, for the caller to print (and the test to check).
#[derive(Debug)]
pub struct Checkout {
    pub reservation_id: String,
    pub available_before: i64,
    pub reserve_outcome: Outcome,
    pub available_held: i64,
    pub commit_outcome: Outcome,
    pub commit_again_outcome: Outcome,
    pub available_after: i64,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:50051".to_string());
    let token = std::env::var("STOCKRAFT_TOKEN").ok();
    let checkout = run(&addr, token.as_deref(), "SKU-EXAMPLE", "store-12").await?;
    println!("{checkout:#?}");
    Ok(())
}

/// Connects to `addr` and runs one checkout of 2 units of `sku` at `node`.
pub async fn run(
    addr: &str,
    token: Option<&str>,
    sku: &str,
    node: &str,
) -> Result<Checkout, Box<dyn std::error::Error>> {
    let mut client = connect(addr, token).await?;
    // Ids unique to this run; a real OMS uses its order and cart ids.
    let run_id = unique_suffix();
    let receipt_id = format!("receipt-{run_id}");
    let reservation_id = format!("cart-{run_id}");

    // Stock arrives: 5 units received at the store.
    let receive = AdjustRequest {
        txn_id: receipt_id,
        sku: sku.to_string(),
        node: node.to_string(),
        delta: 5,
        reason: AdjustReason::Receive as i32,
    };
    with_retries(|| {
        let mut c = client.clone();
        let r = receive.clone();
        async move { c.adjust(r).await }
    })
    .await?;
    let available_before = available(&mut client, sku, node).await?;

    // Checkout: hold 2 units for 15 minutes while the customer pays.
    let reserve = ReserveRequest {
        reservation_id: reservation_id.clone(),
        lines: vec![Line {
            sku: sku.to_string(),
            node: node.to_string(),
            qty: 2,
        }],
        ttl_ms: 15 * 60 * 1000,
    };
    let reserved = with_retries(|| {
        let mut c = client.clone();
        let r = reserve.clone();
        async move { c.reserve(r).await }
    })
    .await?;
    let reserve_outcome = reserved.outcome();
    if reserve_outcome == Outcome::InsufficientStock {
        // Nothing was held; `shortages` says which line lacked how much.
        println!("out of stock: {:?}", reserved.shortages);
    }
    let available_held = available(&mut client, sku, node).await?;

    // Paid: consume the hold. Sent twice, as a client whose answer was
    // lost would: the second answer is the first one's outcome.
    let commit = CommitRequest {
        reservation_id: reservation_id.clone(),
    };
    let mut commit_outcomes = Vec::new();
    for _ in 0..2 {
        let answer = with_retries(|| {
            let mut c = client.clone();
            let r = commit.clone();
            async move { c.commit(r).await }
        })
        .await?;
        commit_outcomes.push(answer.outcome());
    }
    let available_after = available(&mut client, sku, node).await?;
    Ok(Checkout {
        reservation_id,
        available_before,
        reserve_outcome,
        available_held,
        commit_outcome: commit_outcomes[0],
        commit_again_outcome: commit_outcomes[1],
        available_after,
    })
}

/// A client whose calls carry `token` when one is given.
async fn connect(
    addr: &str,
    token: Option<&str>,
) -> Result<InventoryClient<Authed>, Box<dyn std::error::Error>> {
    let channel = stockraft::client::channel(addr, Duration::from_secs(5)).await?;
    let bearer = Bearer::new(token)?;
    Ok(InventoryClient::with_interceptor(channel, bearer))
}

/// What can be sold of `sku` at `node` now, read linearizably (it reflects
/// every write acknowledged before the read).
async fn available(
    client: &mut InventoryClient<Authed>,
    sku: &str,
    node: &str,
) -> Result<i64, Status> {
    let answer = client
        .get_availability(GetAvailabilityRequest {
            skus: vec![sku.to_string()],
            nodes: vec![node.to_string()],
            consistency: Consistency::Linearizable as i32,
        })
        .await?
        .into_inner();
    let total = answer.skus.first().map_or(0, |s| s.total_available);
    Ok(total)
}

/// Sends a call until it gets an answer that a retry cannot change.
///
/// UNAVAILABLE (no leader yet, or leadership moved before the outcome was
/// known), DEADLINE_EXCEEDED and RESOURCE_EXHAUSTED (the queue is full) are
/// worth sending again, after a pause that doubles each time; every other
/// status is final (bad input, a role too low, a reused id).
async fn with_retries<T, F, Fut>(mut call: F) -> Result<T, Status>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<T>, Status>>,
{
    let mut pause_ms = BACKOFF_FIRST_MS;
    let mut tries = 1;
    loop {
        let status = match call().await {
            Ok(answer) => return Ok(answer.into_inner()),
            Err(status) => status,
        };
        let retryable = matches!(
            status.code(),
            Code::Unavailable | Code::DeadlineExceeded | Code::ResourceExhausted
        );
        if !retryable || tries == TRIES_MAX {
            return Err(status);
        }
        tokio::time::sleep(Duration::from_millis(pause_ms)).await;
        pause_ms *= 2;
        tries += 1;
    }
}

/// A suffix that no other run shares: the wall clock in nanoseconds and
/// this process's id.
fn unique_suffix() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{nanos:x}-{}", std::process::id())
}
