//! A storefront's availability read: what a product page or a search
//! result shows for a few SKUs, across every fulfilment node that stocks
//! them.
//!
//! Run a server (`make run`), then:
//!
//!   cargo run --example storefront -- [ADDR] [SKU...]
//!
//! (default 127.0.0.1:50051 and SKU-EXAMPLE; set `STOCKRAFT_TOKEN` to a
//! token of the `read` role when the server checks tokens).
//!
//! Which consistency to ask for: a page view reads LOCAL, the state this
//! member has applied, with no round trip to the other members; any member
//! answers, so reads spread over the cluster, and the figure may trail the
//! leader by a few milliseconds. A decision that must see every write
//! already acknowledged (the last check before promising a delivery date)
//! reads LINEARIZABLE instead. Neither holds anything: only a reservation
//! keeps the units for the customer.

use std::time::Duration;

use stockraft::client::{Authed, Bearer};
use stockraft::proto::v1::inventory_client::InventoryClient;
use stockraft::proto::v1::{Consistency, GetAvailabilityRequest, GetAvailabilityResponse};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:50051".to_string());
    let mut skus: Vec<String> = args.collect();
    if skus.is_empty() {
        skus.push("SKU-EXAMPLE".to_string());
    }
    let token = std::env::var("STOCKRAFT_TOKEN").ok();
    let page = read(&addr, token.as_deref(), skus).await?;
    print!("{}", render(&page));
    Ok(())
}

/// Reads the availability of `skus` at every node that has a counter for
/// them, as this member has applied it (LOCAL).
pub async fn read(
    addr: &str,
    token: Option<&str>,
    skus: Vec<String>,
) -> Result<GetAvailabilityResponse, Box<dyn std::error::Error>> {
    let channel = stockraft::client::channel(addr, Duration::from_secs(5)).await?;
    let mut client: InventoryClient<Authed> =
        InventoryClient::with_interceptor(channel, Bearer::new(token)?);
    let answer = client
        .get_availability(GetAvailabilityRequest {
            skus,
            // No nodes named: every node that stocks the SKU.
            nodes: Vec::new(),
            consistency: Consistency::Local as i32,
        })
        .await?
        .into_inner();
    Ok(answer)
}

/// One line per SKU with what can be promised, then one per node: the
/// figures a product page shows ("3 left at store-12").
pub fn render(page: &GetAvailabilityResponse) -> String {
    let mut text = format!("as of log index {}\n", page.applied_index);
    for sku in &page.skus {
        text.push_str(&format!("{}: {} available\n", sku.sku, sku.total_available));
        for node in &sku.nodes {
            text.push_str(&format!(
                "  {}: {} available ({} on hand, {} held, {} kept back)\n",
                node.node, node.available, node.on_hand, node.reserved, node.safety_stock
            ));
        }
    }
    text
}
