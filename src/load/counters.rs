//! The run's counters: which they are, and their levels read back from a
//! server (before the run, as its base; after it, for the verification).

use std::time::Duration;

use tonic::Status;

use super::conn::Conn;
use super::workload::{hot_sku_name, node_name, sku_name, Workload, HOT_NODE};
use super::{FastMap, LoadConfig};
use crate::proto::v1 as pb;

/// A counter, by (SKU, node).
pub(super) type Key = (String, String);

/// The counters the run's mix touches: every SKU of the spread at every
/// node, then the flash-sale SKUs at [`HOT_NODE`].
pub(super) fn counters(config: &LoadConfig) -> Vec<Key> {
    let mut keys = Vec::new();
    let uses = |w: Workload| config.mix.iter().any(|(m, _)| *m == w);
    if uses(Workload::Checkout)
        || uses(Workload::Reserve)
        || uses(Workload::Pos)
        || uses(Workload::Restock)
        || uses(Workload::Browse)
    {
        for s in 0..config.skus {
            for n in 0..config.nodes {
                keys.push((sku_name(s), node_name(n)));
            }
        }
    }
    if uses(Workload::FlashSale) {
        for h in 0..config.hot_skus {
            keys.push((hot_sku_name(h), HOT_NODE.to_string()));
        }
    }
    keys
}

/// The counters, read through the first client's connection or, when that
/// fails (its server died during the run), through each server given in
/// turn. Err says why no server answered.
pub(super) async fn read_levels_anywhere(
    config: &LoadConfig,
    conn: &Conn,
    keys: &[Key],
) -> Result<Levels, String> {
    let mut reasons = Vec::new();
    match read_levels(conn, keys).await {
        Ok(levels) => return Ok(levels),
        Err(status) => reasons.push(format!("the first client's server: {}", status.message())),
    }
    for addr in &config.servers {
        let channel = match config.dial(addr, config.call_timeout).await {
            Ok(channel) => channel,
            Err(e) => {
                reasons.push(format!("{addr}: {e}"));
                continue;
            }
        };
        let fresh = Conn::Unary(crate::proto::v1::inventory_client::InventoryClient::new(
            channel,
        ));
        match read_levels(&fresh, keys).await {
            Ok(levels) => return Ok(levels),
            Err(status) => reasons.push(format!("{addr}: {}", status.message())),
        }
    }
    Err(reasons.join("; "))
}

/// Counters' levels as read from the server, by (sku, node). Hashed fast:
/// a run over a million counters reads them twice (before and after), and
/// SipHash would make hashing the largest part of the harness's start.
pub(super) type Levels = FastMap<Key, pb::NodeAvailability>;

/// Reads the current levels of counters (linearizable), by SKU.
pub(super) async fn read_levels(conn: &Conn, keys: &[Key]) -> Result<Levels, Status> {
    // Each SKU once, in the order the keys name them.
    let mut seen: std::collections::HashSet<&str, foldhash::fast::RandomState> =
        std::collections::HashSet::default();
    let mut skus: Vec<&str> = Vec::new();
    for (sku, _) in keys {
        if seen.insert(sku.as_str()) {
            skus.push(sku.as_str());
        }
    }
    let mut out = Levels::default();
    out.reserve(keys.len());
    for chunk in skus.chunks(crate::limits::SKUS_PER_READ_MAX) {
        let mut attempts = 0;
        let response = loop {
            match conn
                .get_availability(pb::GetAvailabilityRequest {
                    skus: chunk.iter().map(|sku| sku.to_string()).collect(),
                    nodes: vec![],
                    consistency: pb::Consistency::Linearizable as i32,
                })
                .await
            {
                Ok(r) => break r,
                Err(_) if attempts < 10 => {
                    attempts += 1;
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                Err(e) => return Err(e),
            }
        };
        for s in response.skus {
            for n in s.nodes {
                out.insert((s.sku.clone(), n.node.clone()), n);
            }
        }
    }
    Ok(out)
}
