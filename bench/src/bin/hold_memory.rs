//! What an open hold costs the state machine, in one process (no gRPC, no
//! disk): resident bytes per reservation and apply time per reserve, with
//! holds that stay open (a checkout peak, before carts are paid for or
//! expire). The server holds each one on every replica, so this is the
//! memory a peak of open carts takes on each node, before the log and
//! RocksDB's share.
//!
//! Run: `cargo run --release -p stockraft-bench --bin hold_memory -- [HOLDS] [LINES]`
//! (default 2,000,000 holds of 1 line each, over 100,000 SKUs). Figures are
//! process RSS read from /proc/self/status, so they include the allocator's
//! own overhead.

use std::time::Instant;

/// The server's allocator, so the figures are the server's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use stockraft::inventory::command::{Line, Reserve, SetOnHand};
use stockraft::inventory::{Applied, Batch, Command, Inventory};

const SKUS: usize = 100_000;

/// Commands per applied batch, about what group commit makes under a
/// streaming load (16 clients x 16 in flight).
const BATCH_COMMANDS: usize = 256;

fn apply(inventory: &mut Inventory, index: &mut u64, commands: Vec<Command>) -> Vec<Applied> {
    *index += 1;
    // A millisecond a batch, about a busy server's pace: deadlines rise
    // as they do under load, so the expiry index grows at its end.
    let batch = Batch {
        stamp_ms: 1_000 + *index,
        id_retention_ms: 24 * 3_600 * 1_000,
        id_retained_max: 20_000_000,
        commands,
    };
    inventory.apply_batch(*index, &batch)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let holds: usize = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(2_000_000);
    let lines: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1);
    let mut inventory = Inventory::new();
    let mut index = 0;
    let mut seed = Vec::with_capacity(SKUS);
    for i in 0..SKUS {
        let set = SetOnHand::new(
            format!("seed-{i}"),
            format!("SKU-{i:06}"),
            "dc-1".into(),
            1_000_000_000,
            None,
        )
        .expect("a valid seed");
        seed.push(Command::SetOnHand(set));
    }
    for chunk in seed.chunks(4_096) {
        apply(&mut inventory, &mut index, chunk.to_vec());
    }
    drop(seed);
    let before_kib = stockraft_bench::rss_kib();
    let mut apply_ns = 0u128;
    let mut made = 0usize;
    while made < holds {
        let mut commands = Vec::with_capacity(BATCH_COMMANDS);
        while commands.len() < BATCH_COMMANDS && made < holds {
            // Ids shaped like the load harness's; SKUs spread as a
            // multiplicative hash spreads them, distinct within a hold.
            let mut held = Vec::with_capacity(lines);
            for l in 0..lines {
                let sku = (made * 7_919 + l * 104_729) % SKUS;
                held.push(Line {
                    sku: format!("SKU-{sku:06}"),
                    node: "dc-1".into(),
                    qty: 1,
                });
            }
            let reserve =
                Reserve::new(format!("load-1-{made:010}"), held, 600_000).expect("a valid reserve");
            commands.push(Command::Reserve(reserve));
            made += 1;
        }
        let started = Instant::now();
        let answers = apply(&mut inventory, &mut index, commands);
        apply_ns += started.elapsed().as_nanos();
        for answer in answers {
            assert!(
                matches!(answer, Applied::Reserve(Ok(_))),
                "a reserve failed: {answer:?}"
            );
        }
    }
    let after_kib = stockraft_bench::rss_kib();
    assert_eq!(inventory.open_count(), holds, "every hold is open");
    let bytes_per_hold = (after_kib.saturating_sub(before_kib) * 1024) as f64 / holds as f64;
    println!(
        "{holds} open holds of {lines} line(s): RSS {} -> {} MiB, {bytes_per_hold:.0} bytes a hold; \
         apply {:.0} ns a reserve",
        before_kib / 1024,
        after_kib / 1024,
        apply_ns as f64 / holds as f64
    );
}
