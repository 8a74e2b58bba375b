//! Seeding: every counter of the run set to its starting stock before the
//! clock starts (skipped with `--no-seed`, which reads what is there).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tonic::Status;

use super::code_name;
use super::conn::Conn;
use super::connect::open_conns;
use super::counters::Key;
use super::workload::HOT_NODE;
use super::{LoadConfig, LoadError};
use crate::proto::v1 as pb;

/// Streams the seed goes over, and calls in flight on each. Seeding is one
/// SetOnHand per counter; it runs over `Stream` calls whatever the run
/// itself uses, since over unary calls (one in flight per client
/// connection) seeding a hundred thousand counters takes several times
/// longer than a short run itself.
const SEED_STREAMS: usize = 16;
const SEED_IN_FLIGHT: usize = 16;

/// Most retries of one counter's set while the cluster has no leader.
const SEED_RETRIES_MAX: u32 = 3;

/// Sets every counter's stock, over [`SEED_STREAMS`] streams of its own to
/// the run's targets, [`SEED_IN_FLIGHT`] calls in flight on each. The
/// streams close when the seed is done.
pub(super) async fn seed(
    config: &LoadConfig,
    targets: &[String],
    keys: &[Key],
) -> Result<(), LoadError> {
    if keys.is_empty() || targets.is_empty() {
        return Ok(());
    }
    let streams = open_conns(
        &LoadConfig {
            clients: SEED_STREAMS,
            stream: true,
            mux: None,
            ..config.clone()
        },
        targets,
    )
    .await?;
    let next = Arc::new(AtomicU64::new(0));
    let keys = Arc::new(keys.to_vec());
    let mut tasks = Vec::new();
    for i in 0..SEED_STREAMS * SEED_IN_FLIGHT {
        let conn = streams[i % streams.len()].clone();
        tasks.push(tokio::spawn(seed_counters(
            conn,
            keys.clone(),
            next.clone(),
            config.clone(),
        )));
    }
    for task in tasks {
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(status)) => return Err(seed_failure(&status)),
            Err(e) => return Err(LoadError::Seed(e.to_string())),
        }
    }
    Ok(())
}

/// One of the seed's calls in flight: sets the next counter no other has
/// taken (`next` is shared), until every counter of `keys` is set.
async fn seed_counters(
    conn: Arc<Conn>,
    keys: Arc<Vec<Key>>,
    next: Arc<AtomicU64>,
    config: LoadConfig,
) -> Result<(), Status> {
    loop {
        let k = next.fetch_add(1, Ordering::Relaxed) as usize;
        let Some((sku, node)) = keys.get(k) else {
            return Ok(());
        };
        let on_hand = if node == HOT_NODE {
            config.hot_stock
        } else {
            config.stock
        };
        let request = pb::SetOnHandRequest {
            txn_id: format!("{}-seed-{k}", config.run_id),
            sku: sku.clone(),
            node: node.clone(),
            on_hand,
            expected_on_hand: None,
        };
        set_stock(&conn, request).await?;
    }
}

/// One counter's SetOnHand, retried while the cluster elects a leader (the
/// same id each time, so a retry cannot set it twice).
async fn set_stock(conn: &Conn, request: pb::SetOnHandRequest) -> Result<(), Status> {
    let mut attempts = 0;
    loop {
        match conn.set_on_hand(request.clone()).await {
            Ok(_) => return Ok(()),
            Err(status)
                if status.code() == tonic::Code::Unavailable && attempts < SEED_RETRIES_MAX =>
            {
                attempts += 1;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(status) => return Err(status),
        }
    }
}

/// The error a failed seed call stops the run with: no leader when the
/// cluster stayed unavailable, else the server's refusal.
fn seed_failure(status: &Status) -> LoadError {
    if status.code() == tonic::Code::Unavailable {
        return LoadError::NoLeader(status.message().to_string());
    }
    LoadError::Seed(format!("{}: {}", code_name(status), status.message()))
}
